-- sdk_side_by_side.lua: the same Okta -> Jira first sync done by usersync
-- and by a script on the official Okta Node SDK (okta_sdk_sync.js, pool of
-- 8), against the same simulators and the same org; the end states are
-- compared, and each side's wall time, CPU and peak RSS printed.
--
--   SOURCE_DIR=$PWD PYTHON3=/usr/bin/python3 USERSYNC=$PWD/build/usersync \
--     build/usersync run tests/bench/sdk_side_by_side.lua [users=2000] [groups=100] [latency_ms=20]
--
-- The SDK (npm @okta/okta-sdk-nodejs) is installed into build/bench-node by
-- npm the first time (BENCH_NODE_PREFIX to use another place). One Okta
-- simulator (genorg.py --seed 42) serves both; each side writes its own empty
-- Jira simulator at the same latency. usersync's config: on-the-fly groups
-- with the same exclusions, "okta-synced" for everyone and "new-hires" for
-- new accounts, concurrency 8 (the script's pool). The benchmark fails when
-- the two Jiras differ (accounts, their display names, e-mails and active
-- flags, groups and members).
package.path = (os.getenv("SOURCE_DIR") or ".") .. "/tests/lua/?.lua;" .. package.path
local fakes = require "support.fakes"
local proc = require "support.proc"
local json = require "usersync.json"
local clock = require("usersync.time").monotonic

local args = arg or {}
local NU = tonumber(args[1]) or 2000
local NG = tonumber(args[2]) or 100
local LAT = tonumber(args[3]) or 20
local usersync = os.getenv("USERSYNC") or (fakes.source_dir .. "/build/usersync")
local py = os.getenv("PYTHON3") or "python3"
local prefix = os.getenv("BENCH_NODE_PREFIX") or (fakes.source_dir .. "/build/bench-node")
local q = proc.quote

local dir = os.tmpname(); os.remove(dir)
assert(os.execute("mkdir -p " .. q(dir)))
local sims = {}
local function cleanup()
  for _, s in pairs(sims) do pcall(s.stop, s) end
  if not os.getenv("BENCH_KEEP") then os.execute("rm -rf " .. q(dir)) end
end

-- Runs argv under /usr/bin/time -v; returns r (code, stdout, stderr), wall,
-- CPU seconds, peak RSS in KiB.
local function timed(argv, env)
  local tv = dir .. "/time.txt"
  local full = { "timeout", "1200", "/usr/bin/time", "-v", "-o", tv }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  local s = clock()
  local r = proc.run(full, { env = env })
  local wall = clock() - s
  local t = proc.slurp(tv)
  local cpu = (tonumber(t:match("User time %(seconds%): ([%d.]+)")) or 0)
    + (tonumber(t:match("System time %(seconds%): ([%d.]+)")) or 0)
  return r, wall, cpu, tonumber(t:match("Maximum resident set size %(kbytes%): (%d+)"))
end

-- A Jira state as comparable text: accounts and memberships, sorted.
local function jira_state(sim)
  local st = sim:state()
  local lines = {}
  for _, u in ipairs(st.users) do
    lines[#lines + 1] = ("user %s|%s|%s|%s"):format(u.name:lower(), u.displayName, u.emailAddress, tostring(u.active))
  end
  for g, members in pairs(st.members) do
    local ms = {}
    for _, m in ipairs(members) do ms[#ms + 1] = m:lower() end
    table.sort(ms)
    lines[#lines + 1] = ("group %s: %s"):format(g:lower(), table.concat(ms, ","))
  end
  table.sort(lines)
  return lines, #st.users
end

local function main()
  if not io.open(prefix .. "/node_modules/@okta/okta-sdk-nodejs/package.json") then
    print("installing @okta/okta-sdk-nodejs into " .. prefix)
    assert(os.execute(("mkdir -p %s && npm install --prefix %s --no-audit --no-fund --silent @okta/okta-sdk-nodejs@8")
      :format(q(prefix), q(prefix))), "npm install failed")
  end
  local f = assert(io.open(prefix .. "/node_modules/@okta/okta-sdk-nodejs/package.json"))
  local sdk_version = json.decode(f:read("a")).version
  f:close()

  local org = dir .. "/org.json"
  assert(os.execute(("timeout 300 %s %s/tests/fakes/genorg.py --users %d --groups %d --seed 42 --out %s")
    :format(q(py), q(fakes.source_dir), NU, NG, q(org))), "genorg failed")
  print(("org: %d users, %d groups (genorg seed 42); latency %d ms; 8 in flight per side; Okta SDK %s, node %s")
    :format(NU, NG, LAT, sdk_version, (io.popen("node --version"):read("l") or "?")))
  print("(figures taken on a shared machine that may be loaded: compare CPU and requests, wall times vary)")
  local life = 3000
  sims.okta = fakes.start("okta", { state_file = org, latency_ms = LAT, lifetime = life })
  sims.us = fakes.start("jira", { latency_ms = LAT, lifetime = life })
  sims.sdk = fakes.start("jira", { latency_ms = LAT, lifetime = life })

  local cfg = dir .. "/usersync.conf.lua"
  f = assert(io.open(cfg, "w"))
  f:write(table.concat({
    "return {",
    ("  state = %q,"):format(dir .. "/usersync.db"),
    ("  sources = { okta = { type = \"okta\", url = %q, token = env \"BENCH_OKTA_TOKEN\", concurrency = 8, timeout = \"120s\" } },")
      :format(sims.okta.url),
    ("  targets = { jira = { type = \"jira\", url = %q, user = \"admin\", password = env \"BENCH_ATL_PW\", concurrency = 8, timeout = \"120s\" } },")
      :format(sims.us.url),
    "  sync = {",
    "    { name = \"main\", source = \"okta\", targets = { \"jira\" },",
    "      groups = { mode = \"on_the_fly\", exclude = { \"-(contractors|alumni|interns)( \\\\d+)?$\" } },",
    "      defaults = { new_users = { \"new-hires\" }, all_users = { \"okta-synced\" } },",
    "      limits = { max_deprovision = 100 } },",
    "  },",
    "}",
  }, "\n"))
  f:close()

  local env = { BENCH_OKTA_TOKEN = "test-token", BENCH_ATL_PW = "admin", USERSYNC_LOG_LEVEL = "warn", NO_COLOR = "1" }
  local rows = {}
  local function side(name, argv, sim)
    sims.okta:clear_requests()
    local r, wall, cpu, rss = timed(argv, env)
    if r.code ~= 0 then
      io.stderr:write(r.stdout:sub(-2000), r.stderr:sub(1, 4000), "\n")
      error(name .. " failed (exit " .. r.code .. ")")
    end
    local okta_n, jira_n = #sims.okta:requests(), #sim:requests()
    rows[#rows + 1] = { name = name, wall = wall, cpu = cpu, rss = rss, okta = okta_n, jira = jira_n }
    print(("%-28s wall %7.2f s  CPU %6.2f s  peak RSS %6.1f MB  requests: Okta %d, Jira %d")
      :format(name, wall, cpu, (rss or 0) / 1024, okta_n, jira_n))
  end
  side("usersync sync", { usersync, "sync", "-c", cfg }, sims.us)
  side("Okta Node SDK script", { "node", fakes.source_dir .. "/tests/bench/okta_sdk_sync.js", prefix,
    sims.okta.url, "test-token", sims.sdk.url, "admin", "admin" }, sims.sdk)

  local a, na = jira_state(sims.us)
  local b, nb = jira_state(sims.sdk)
  local diff = {}
  local seen = {}
  for _, l in ipairs(a) do seen[l] = (seen[l] or 0) + 1 end
  for _, l in ipairs(b) do seen[l] = (seen[l] or 0) - 1 end
  for l, n in pairs(seen) do if n ~= 0 then diff[#diff + 1] = (n > 0 and "usersync only: " or "script only:   ") .. l end end
  table.sort(diff)
  print(("end states: %d accounts each side; %s"):format(na, #diff == 0 and "identical (accounts, names, e-mails, active, groups, members)"
    or (#diff .. " lines differ")))
  for i = 1, math.min(#diff, 20) do print("  " .. diff[i]) end
  local u, s = rows[1], rows[2]
  -- Both sides' Jira requests at 8 in flight, one latency each: the floor
  -- neither can beat (the Okta read overlaps or precedes it).
  local floor = math.ceil(math.min(u.jira, s.jira) / 8) * LAT / 1000
  print(("floor (Jira's requests, 8 in flight x %d ms): %.1f s -> usersync %.2fx, script %.2fx")
    :format(LAT, floor, floor > 0 and u.wall / floor or 0, floor > 0 and s.wall / floor or 0))
  print(("usersync / script: wall %.2fx, CPU %.2fx, peak RSS %.2fx"):format(u.wall / s.wall, u.cpu / math.max(s.cpu, 0.01),
    (u.rss or 0) / math.max(s.rss or 1, 1)))
  print(("ROW|side by side, %d-user Okta -> Jira first sync (%d ms, 8 in flight)|usersync %.1f s, CPU %.1f s, %.0f MB|script %.1f s, CPU %.1f s, %.0f MB|%.2fx wall|ahead of the SDK script")
    :format(NU, LAT, u.wall, u.cpu, (u.rss or 0) / 1024, s.wall, s.cpu, (s.rss or 0) / 1024, u.wall / s.wall))
  assert(#diff == 0 and na == nb, "the end states differ")
end

local ok, err = xpcall(main, debug.traceback)
cleanup()
if not ok then
  io.stderr:write("benchmark failed: ", tostring(err), "\n")
  os.exit(1)
end
