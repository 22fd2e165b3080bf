-- sync_10k.lua: the sync benchmark. The real `usersync sync`
-- binary, a genorg Okta org, and empty Jira, Confluence and Bitbucket
-- simulators at a fixed latency: a first sync, then a no-op re-sync.
--
--   SOURCE_DIR=$PWD PYTHON3=/usr/bin/python3 USERSYNC=$PWD/build/usersync \
--     build/usersync run tests/bench/sync_10k.lua [users=10000] [groups=500] [latency_ms=20] [mode=sync]
--
-- mode "sync" (default): first sync + re-sync, every figure below.
-- BENCH_TARGETS (default "jira,confluence,bitbucket"; comma- or
-- space-separated, any of jira confluence bitbucket crowd scim atlassian)
-- picks the targets: "crowd" is an application "admin" under /crowd (modes
-- "sync" and "plan" only), "scim" the SCIM simulator at /scim/v2,
-- "atlassian" the same with --flavour atlassian (type "scim" both).
-- mode "plan": one `usersync plan` only (nothing written), for the peak
-- memory of reading and planning a large org (the 100,000-user budget),
-- where a full first sync would take the simulators far too long.
-- mode "resync": the production case of that budget, a re-sync of an org
-- whose targets already hold the accounts. Each target starts with an
-- account for every user the default policy maps as active (its names,
-- display names, e-mails) in every group the sync puts it in, and the
-- store links them and owns those groups and memberships, as a full first
-- sync would have left them (written directly: a 100,000-user first sync
-- takes the simulators far too long). Then BENCH_CHANGES (default 10)
-- active users get a new e-mail in Okta, and `usersync plan` and
-- `usersync sync` run: a few updates per target, every figure printed.
--
-- The org: genorg.py --seed 42, app 0oaBenchApp000000001; the sync reads
-- every user of the org (no app_id: all 10,000 users are candidates; STAGED
-- are skipped, inactive ones without an account get nothing). Groups:
-- on-the-fly, Okta's built-ins never count, "-contractors", "-alumni" and
-- "-interns" groups are excluded (so a good share, not all, is mapped), and
-- every user gets "okta-synced", new ones also "new-hires". Confluence
-- usernames are the default policy's lowercase mapping.
--
-- Printed for each run: wall time, requests by kind per product (method +
-- path, id-like segments folded to {id}), the floor and wall/floor, the
-- peak RSS of the usersync process (/usr/bin/time -v), its CPU all-in
-- and split by phase (cpu_sample.py samples it every 50 ms: the CPU
-- before the first write reached a simulator, and the apply's CPU per
-- write operation the simulators served; at latency 0 a ROW "CPU per
-- write operation at 0 ms; the apply's share also holds the recording of
-- the plans of the targets that start after the first: apply.lua records a
-- target's plan as it starts it), the writes of
-- the re-sync (the script fails when there is any), and a timeline from the
-- simulators' request logs: when the Okta read ended and when each target's
-- reads and writes began and ended (before the first write: reading,
-- planning, printing the plan and recording it). BENCH_LOGS=DIR keeps each
-- simulator's request log per run (DIR/{run}-{product}.json).
--
-- THE FLOOR. The engine works in two overlapped phases: the reads (the
-- Okta read and every target's snapshot at once: engine.lua plan starts
-- the targets' reads with snapshot.start before it reads Okta, and they
-- share the http engine), then the applies of all targets at once
-- (apply.lua: each target in its own coroutine, their requests in flight
-- together), and inside one target's apply one kind of operation after
-- the other (apply.lua chunks of one kind in plan order). A step takes at
-- least
--     max(ceil(n / c), chain) x latency
-- where n = the step's requests that were needed (answered, not 429 or
-- 5xx or dropped: a retry is waste, not need), c = the allowed concurrency
-- for that server (8: the target's `concurrency` default and the Okta
-- client's; the config sets both explicitly), and chain = the longest run
-- of pages that must be fetched one after the other (cursor paging: Okta
-- /api/v1/users and Jira user/list, each page names the next). A server's
-- read = its GETs (Okta: all its requests); a target's apply chain = one
-- step per distinct write kind (method + folded path), summed. So the
-- floor is the slowest read plus the slowest target's apply chain:
--     max over servers of the read + max over targets of the apply chain
-- The lower bound for ANY engine (reads and writes overlapped too) is the
-- slowest server's max(n/c, chain) x latency, also printed ("overlapped
-- floor").
package.path = (os.getenv("SOURCE_DIR") or ".") .. "/tests/lua/?.lua;" .. package.path
local fakes = require "support.fakes"
local proc = require "support.proc"
local json = require "usersync.json"
local re = require "usersync.re"
local store = require "usersync.store"
local clock = require("usersync.time").monotonic
local wall_now = require("usersync.time").now

local args = arg or {}
local NU = tonumber(args[1]) or 10000
local NG = tonumber(args[2]) or 500
local LAT = tonumber(args[3]) or 20
local MODE = args[4] or "sync"
local CONC = tonumber(os.getenv("BENCH_CONC")) or 8
local APP = "0oaBenchApp000000001"
local RUN_TIMEOUT = tonumber(os.getenv("BENCH_RUN_TIMEOUT")) or 1500 -- seconds per usersync run
local PRODUCTS = {}
for p in (os.getenv("BENCH_TARGETS") or os.getenv("BENCH_PRODUCTS") or "jira,confluence,bitbucket")
    :gmatch("[^,%s]+") do
  PRODUCTS[#PRODUCTS + 1] = p
end
local SCIM = { scim = { base = "/scim/v2" },
               atlassian = { base = "/scim/directory/test-directory", flavour = "atlassian" } }

local usersync = os.getenv("USERSYNC") or (fakes.source_dir .. "/build/usersync")
local py = os.getenv("PYTHON3") or "/usr/bin/python3"
local q = proc.quote

local populate -- mode "resync", below
local dir = os.tmpname(); os.remove(dir)
assert(os.execute("mkdir -p " .. q(dir)))

-- Everything started is stopped here, also when the benchmark fails.
local sims = {}
local function cleanup()
  for _, s in pairs(sims) do pcall(s.stop, s) end
  sims = {}
  if os.getenv("BENCH_KEEP") then print("kept " .. dir) else os.execute("rm -rf " .. q(dir)) end
end

-- mode "resync": the targets' states and the store's links for org file
-- `org` as the default policy and this config map it (see the header), and
-- a copy of the org with BENCH_CHANGES e-mails changed. Returns
-- { org_file, changed = n, jira = state, confluence = { users, groups,
--   members }, bitbucket = state, links = { [product] = { {okta_id, name, groups} } } }.
populate = function(orgfile)
  local f = assert(io.open(orgfile)); local o = assert(json.decode(f:read("a"))); f:close()
  local exclude = assert(re.compile("-(contractors|alumni|interns)( \\d+)?$"))
  local counted = {}
  for _, g in ipairs(o.groups) do
    if g.type ~= "BUILT_IN" and not exclude:find(g.profile.name) then counted[g.id] = g.profile.name end
  end
  local groups_of = {}
  for gid, members in pairs(o.group_members or {}) do
    if counted[gid] then
      for _, uid in ipairs(members) do
        groups_of[uid] = groups_of[uid] or {}
        table.insert(groups_of[uid], counted[gid])
      end
    end
  end
  local ACTIVE = { ACTIVE = true, PASSWORD_EXPIRED = true, LOCKED_OUT = true, RECOVERY = true, PROVISIONED = true }
  local out = { links = {}, changed = 0 }
  local st = {}
  for _, p in ipairs(PRODUCTS) do
    st[p] = { users = {}, members = {}, groups = {} }
    out.links[p] = {}
  end
  local nchange = tonumber(os.getenv("BENCH_CHANGES")) or 10
  local changed = {}
  for _, u in ipairs(o.users) do
    local pr = u.profile
    if ACTIVE[u.status] and type(pr.login) == "string" and pr.login ~= "" then
      local display = type(pr.displayName) == "string" and pr.displayName ~= "" and pr.displayName or nil
      if not display then
        local first = type(pr.firstName) == "string" and pr.firstName ~= "" and pr.firstName or nil
        local last = type(pr.lastName) == "string" and pr.lastName ~= "" and pr.lastName or nil
        display = (first and last) and (first .. " " .. last) or first or last or pr.login
      end
      local email = type(pr.email) == "string" and pr.email or ""
      local groups = { "okta-synced" }
      for _, g in ipairs(groups_of[u.id] or {}) do groups[#groups + 1] = g end
      for _, p in ipairs(PRODUCTS) do
        local name = pr.login
        local s = st[p]
        if p == "confluence" then
          name = name:lower():gsub("[%s\\,+<>'\"]", "_")
          s.users[#s.users + 1] = { username = name, userKey = "k" .. u.id, displayName = display, email = email,
                                    disabled = false }
        elseif p == "jira" then
          s.users[#s.users + 1] = { name = name, key = "K" .. u.id, displayName = display, emailAddress = email,
                                    active = true }
        else
          s.users[#s.users + 1] = { name = name, slug = name:lower(), id = #s.users + 1, displayName = display,
                                    emailAddress = email }
        end
        for _, g in ipairs(groups) do
          if not s.members[g] then s.members[g] = json.array{}; s.groups[#s.groups + 1] = g end
          table.insert(s.members[g], name)
        end
        table.insert(out.links[p], { u.id, name, groups })
      end
      if #changed < nchange then changed[#changed + 1] = u end
    end
  end
  for i, u in ipairs(changed) do u.profile.email = ("changed%02d.%s"):format(i, u.profile.email) end
  out.changed = #changed
  for _, p in ipairs(PRODUCTS) do
    out[p] = { users = json.array(st[p].users), groups = json.array(st[p].groups), members = st[p].members }
  end
  out.jira.projects, out.jira.components = json.array{}, json.array{}
  out.org_file = dir .. "/org-changed.json"
  f = assert(io.open(out.org_file, "w")); f:write(assert(json.encode(o))); f:close()
  return out
end

local function main()
  -- 1. The org.
  local org = dir .. "/org.json"
  local t0 = clock()
  assert(os.execute(("timeout 300 %s %s/tests/fakes/genorg.py --users %d --groups %d --seed 42 --app-id %s --out %s")
    :format(q(py), q(fakes.source_dir), NU, NG, APP, q(org))), "genorg failed")
  print(("org: %d users, %d groups (genorg seed 42, %.1f s); latency %d ms; concurrency %d per server")
    :format(NU, NG, clock() - t0, LAT, CONC))
  local la = io.open("/proc/loadavg")
  print(("targets: %s; machine load average at the start: %s (figures from a shared machine are upper bounds)")
    :format(table.concat(PRODUCTS, ", "), la and la:read("l"):match("^(%S+ %S+ %S+)") or "?"))
  if la then la:close() end

  -- 2. Simulators (bounded lifetime; 127.0.0.1, free ports).
  local life = RUN_TIMEOUT * 2 + 600
  local populated = MODE == "resync" and populate(org) or nil
  if populated then org = populated.org_file end
  sims.okta = fakes.start("okta", { state_file = org, latency_ms = LAT, lifetime = life })
  local function want(p) for _, x in ipairs(PRODUCTS) do if x == p then return true end end end
  assert(not populated or not (want("scim") or want("atlassian") or want("crowd")),
    "mode resync populates jira, confluence and bitbucket only")
  if want("jira") then
    sims.jira = fakes.start("jira", { latency_ms = LAT, lifetime = life, state = populated and populated.jira })
  end
  if want("bitbucket") then
    sims.bitbucket = fakes.start("bitbucket", { latency_ms = LAT, lifetime = life,
      state = populated and populated.bitbucket })
  end
  if want("crowd") then sims.crowd = fakes.start("crowd", { latency_ms = LAT, lifetime = life }) end
  for p, s in pairs(SCIM) do
    if want(p) then
      sims[p] = fakes.start("scim", { latency_ms = LAT, lifetime = life,
        args = s.flavour and { "--flavour", s.flavour } or nil })
    end
  end
  -- Confluence: its default state (built-in admin) with a licence for everyone.
  local conf = {
    users = json.array{ { username = "admin", userKey = "8a7f808a00000000000000000000a000",
                          displayName = "Administrator", email = "admin@example.com", disabled = false } },
    groups = json.array{ "confluence-administrators", "confluence-users" },
    members = { ["confluence-administrators"] = json.array{ "admin" }, ["confluence-users"] = json.array{ "admin" } },
    license = { seats = NU * 2 },
  }
  if populated then
    for _, a in ipairs(populated.confluence.users) do conf.users[#conf.users + 1] = a end
    for _, g in ipairs(populated.confluence.groups) do conf.groups[#conf.groups + 1] = g end
    for g, m in pairs(populated.confluence.members) do conf.members[g] = m end
  end
  if want("confluence") then
    sims.confluence = fakes.start("confluence", { latency_ms = LAT, lifetime = life, state = conf })
  end

  -- 3. Config.
  local cfg = dir .. "/usersync.conf.lua"
  local targets = {}
  local tnames = {}
  for _, p in ipairs(PRODUCTS) do
    tnames[#tnames + 1] = ("%q"):format(p)
    if SCIM[p] then
      targets[#targets + 1] = ("    %s = { type = \"scim\", %surl = %q, token = env \"BENCH_SCIM_TOKEN\", concurrency = %d, timeout = \"120s\" },")
        :format(p, SCIM[p].flavour and ("flavour = %q, "):format(SCIM[p].flavour) or "", sims[p].url .. SCIM[p].base, CONC)
    elseif p == "crowd" then
      targets[#targets + 1] = ("    %s = { type = %q, url = %q, application = \"admin\", password = env \"BENCH_ATL_PW\", concurrency = %d, timeout = \"120s\" },")
        :format(p, p, sims[p].url .. "/crowd", CONC)
    else
      targets[#targets + 1] = ("    %s = { type = %q, url = %q, user = \"admin\", password = env \"BENCH_ATL_PW\", concurrency = %d, timeout = \"120s\" },")
        :format(p, p, sims[p].url, CONC)
    end
  end
  local f = assert(io.open(cfg, "w"))
  f:write(table.concat({
    "return {",
    ("  state = %q,"):format(dir .. "/usersync.db"),
    "  sources = {",
    ("    okta = { type = \"okta\", url = %q, token = env \"BENCH_OKTA_TOKEN\", concurrency = %d, timeout = \"120s\" },")
      :format(sims.okta.url, CONC),
    "  },",
    "  targets = {", table.concat(targets, "\n"), "  },",
    "  sync = {",
    "    { name = \"main\", source = \"okta\", targets = { " .. table.concat(tnames, ", ") .. " },",
    "      groups = { mode = \"on_the_fly\", exclude = { \"-(contractors|alumni|interns)( \\\\d+)?$\" } },",
    "      defaults = { new_users = { \"new-hires\" }, all_users = { \"okta-synced\" } },",
    "      limits = { max_deprovision = 100 } },",
    "  },",
    "}",
  }, "\n"))
  f:close()

  -- Runs usersync under timeout and /usr/bin/time -v; returns r, wall, peak KiB.
  local runs_done = 0
  local started_at -- the wall clock at the last run's start (the timeline)
  local function run_usersync(...)
    local tv = dir .. "/time.txt"
    -- cpu_sample.py samples the usersync process's CPU every 50 ms (the
    -- split by phase in report); outside timeout, so that timeout still
    -- stops usersync, and outside /usr/bin/time, which counts usersync only
    local samples = dir .. "/cpu.txt"
    local argv = { py, fakes.source_dir .. "/tests/bench/cpu_sample.py", samples, "0.05", "--",
                   "timeout", tostring(RUN_TIMEOUT), "/usr/bin/time", "-v", "-o", tv }
    -- BENCH_WRAP: a command put before usersync, e.g. "strace -c -f -o /tmp/s{run}.txt"
    -- or "perf record -g -o /tmp/perf{run}.data" (split at spaces; {run} is the
    -- run's number: 1 the first sync, 2 the re-sync)
    runs_done = runs_done + 1
    for w in (os.getenv("BENCH_WRAP") or ""):gmatch("%S+") do
      argv[#argv + 1] = (w:gsub("{run}", tostring(runs_done)))
    end
    argv[#argv + 1] = usersync
    -- BENCH_PROFILE=DIR: the Lua code's sampling profile, DIR/profile{run}.txt
    if os.getenv("BENCH_PROFILE") then
      argv[#argv + 1] = "run"
      argv[#argv + 1] = fakes.source_dir .. "/tests/bench/lua_profile.lua"
      argv[#argv + 1] = ("%s/profile%d.txt"):format(os.getenv("BENCH_PROFILE"), runs_done)
    end
    for _, a in ipairs({ ... }) do argv[#argv + 1] = a end
    argv[#argv + 1] = "-c"; argv[#argv + 1] = cfg
    local s = clock()
    started_at = wall_now()
    local r = proc.run(argv, { env = { BENCH_OKTA_TOKEN = "test-token", BENCH_ATL_PW = "admin",
                                       BENCH_SCIM_TOKEN = "test-token",
                                       USERSYNC_LOG_LEVEL = "warn", NO_COLOR = "1" } })
    local wall = clock() - s
    local tf = io.open(tv, "r")
    local ttext = tf and tf:read("a") or ""
    if tf then tf:close() end
    local rss = tonumber(ttext:match("Maximum resident set size %(kbytes%): (%d+)"))
    r.cpu = (tonumber(ttext:match("User time %(seconds%): ([%d.]+)")) or 0)
      + (tonumber(ttext:match("System time %(seconds%): ([%d.]+)")) or 0)
    r.samples = {}
    local sf = io.open(samples)
    if sf then
      for l in sf:lines() do
        local t, c = l:match("^(%S+) (%S+)$")
        if t then r.samples[#r.samples + 1] = { tonumber(t), tonumber(c) } end
      end
      sf:close()
    end
    return r, wall, rss
  end

  -- Requests by kind: id-like path segments folded. A segment is folded when
  -- more than 5 different values follow the same (folded) prefix, so user
  -- names, group names and ids become {id} while fixed path words stay.
  local function fold(reqs)
    local segs = {}
    for i, r in ipairs(reqs) do
      local s = {}
      s[1] = r.method -- folding is per method: PUT user/{id}/... must not fold GET user/list
      for part in r.path:gmatch("[^/]+") do s[#s + 1] = part end
      segs[i] = s
    end
    local depth = 0
    for _, s in ipairs(segs) do if #s > depth then depth = #s end end
    for pos = 1, depth do
      local variants = {}
      for _, s in ipairs(segs) do
        if s[pos] then
          local prefix = table.concat(s, "/", 1, pos - 1)
          local v = variants[prefix] or { n = 0, seen = {} }
          variants[prefix] = v
          if not v.seen[s[pos]] then v.seen[s[pos]] = true; v.n = v.n + 1 end
        end
      end
      for _, s in ipairs(segs) do
        if s[pos] and variants[table.concat(s, "/", 1, pos - 1)].n > 5 then s[pos] = "{id}" end
      end
    end
    local kinds, order = {}, {}
    for i, r in ipairs(reqs) do
      local k = r.method .. " /" .. table.concat(segs[i], "/", 2)
      if not kinds[k] then
        kinds[k] = { n = 0, wasted = 0, kind = k, method = r.method, first = i }
        order[#order + 1] = kinds[k]
      end
      local kd = kinds[k]
      kd.n = kd.n + 1
      if r.status == 0 or r.status == 429 or r.status >= 500 then kd.wasted = kd.wasted + 1 end
    end
    return order
  end

  -- The CPU seconds a simulator process has used so far (utime + stime of
  -- the python process under `timeout`), from /proc: what it cost the
  -- simulator to serve a run, so the report can say what it allows.
  local TICK = tonumber((io.popen("getconf CLK_TCK"):read("l"))) or 100
  local function sim_cpu(sim)
    local f = io.open(("/proc/%s/task/%s/children"):format(sim.pid, sim.pid))
    local child = f and f:read("l"); if f then f:close() end
    child = child and child:match("%d+") or sim.pid
    f = io.open("/proc/" .. child .. "/stat")
    local st = f and f:read("l"); if f then f:close() end
    if not st then return 0 end
    local rest = st:match("%) (.*)$") -- fields after the command name
    local fields = {}
    for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
    return ((tonumber(fields[12]) or 0) + (tonumber(fields[13]) or 0)) / TICK -- utime, stime
  end
  local cpu_mark = {}
  local function mark_cpu() for p, s in pairs(sims) do cpu_mark[p] = sim_cpu(s) end end

  -- Cursor-paged listings: their pages are one chain.
  local CHAIN = { ["GET /api/v1/users"] = true, ["GET /rest/api/2/user/list"] = true,
                  ["GET /crowd/rest/usermanagement/1/search"] = true } -- Crowd: offset pages, no total

  local function phase_time(n, chain)
    return math.max(math.ceil(n / CONC), chain or 0) * LAT / 1000
  end

  -- Prints one run's figures; returns writes per product.
  local function report(title, r, wall, rss)
    print(("\n== %s: exit %d, wall %.2f s, usersync CPU (user+sys) %.2f s, peak RSS %s"):format(title, r.code, wall,
      r.cpu or 0, rss and ("%.1f MB"):format(rss / 1024) or "?"))
    -- Only the tail: the plan text of a large org is hundreds of MB.
    local tail = r.stdout:sub(-4000)
    local last = tail:match("\n([^\n]*applied[^\n]*)") or tail:match("([^\n]+)\n*$")
    if last then print("   usersync: " .. last) end
    if r.code ~= 0 then io.stderr:write(r.stderr:sub(1, 4000), "\n") end
    local floor, slowest, total_req, writes = 0, 0, 0, {}
    -- the reads overlap, then the applies overlap: the slowest of each
    local apply_chain, apply_slowest, read_max, read_slowest = 0, "-", 0, "-"
    local lines, sim_total, cpu_now = {}, {}, {}
    for p, sim in pairs(sims) do cpu_now[p] = sim_cpu(sim) end -- before the logs are fetched
    -- The timeline (from the simulators' clocks, seconds after usersync
    -- started): the last Okta request, each target's first and last read
    -- and write. What lies before the first write is the plan phase.
    local timeline = {}
    local first_write -- the first write any target served (the apply phase starts)
    local function at(t) return t and ("%.2f"):format(t - started_at) or "-" end
    for _, p in ipairs({ "okta", table.unpack(PRODUCTS) }) do
      local reqs = sims[p]:requests()
      sims[p]:clear_requests()
      -- BENCH_LOGS=DIR: each simulator's request log of each run as JSON,
      -- DIR/{run}-{product}.json (method, path, status, at), for analysis
      if os.getenv("BENCH_LOGS") then
        local lf = assert(io.open(("%s/%d-%s.json"):format(os.getenv("BENCH_LOGS"), runs_done, p), "w"))
        lf:write(assert(json.encode(reqs))); lf:close()
      end
      local r0, r1, w0, w1
      for _, rq in ipairs(reqs) do
        if rq.at then
          if p == "okta" or rq.method == "GET" then
            r0 = r0 or rq.at; r1 = rq.at
          else
            w0 = w0 or rq.at; w1 = rq.at
          end
        end
      end
      if w0 and (not first_write or w0 < first_write) then first_write = w0 end
      timeline[#timeline + 1] = ("%s reads %s-%s%s"):format(p, at(r0), at(r1),
        w0 and (", writes %s-%s"):format(at(w0), at(w1)) or "")
      local kinds = fold(reqs)
      local read_n, read_chain, pfloor, w, wfloor = 0, 0, 0, 0, 0
      local overlapped_n, overlapped_chain = 0, 0
      lines[#lines + 1] = ("   %-10s %6d requests"):format(p, #reqs)
      for _, k in ipairs(kinds) do
        lines[#lines + 1] = ("      %6d  %s%s"):format(k.n, k.kind, k.wasted > 0 and ("   (%d wasted: 429/5xx/dropped)"):format(k.wasted) or "")
        local need = k.n - k.wasted
        overlapped_n = overlapped_n + need
        local chain = CHAIN[k.kind] and need or 0
        if chain > overlapped_chain then overlapped_chain = chain end
        if p == "okta" or k.method == "GET" then
          read_n = read_n + need
          if chain > read_chain then read_chain = chain end
        else
          w = w + k.n
          wfloor = wfloor + phase_time(need, 0) -- one apply phase per write kind
        end
      end
      pfloor = phase_time(read_n, read_chain)
      writes[p] = w
      if pfloor > read_max then read_max, read_slowest = pfloor, p end
      if wfloor > apply_chain then apply_chain, apply_slowest = wfloor, p end
      total_req = total_req + #reqs
      local ov = phase_time(overlapped_n, overlapped_chain)
      if ov > slowest then slowest = ov end
      lines[#lines + 1] = ("      floor: read %.2f s (reads %d, chain %d), apply %.2f s (writes %d)")
        :format(pfloor, read_n, read_chain, wfloor, w)
      -- What the simulator allows: one Python process serves its requests
      -- one at a time under a lock (the latency sleep is outside it), so
      -- it serves at most 1/cpu-per-request requests a second, and the
      -- latency and concurrency allow CONC/latency. A floor is honest only
      -- while the first is well above the second.
      local cpu = cpu_now[p] - (cpu_mark[p] or 0)
      local per = #reqs > 0 and cpu / #reqs or 0
      local by_cpu = per > 0 and 1 / per or math.huge
      local by_lat = LAT > 0 and CONC * 1000 / LAT or math.huge
      lines[#lines + 1] = ("      simulator: %.2f s CPU for %d requests (%.3f ms each): allows %s req/s by CPU, %s by latency %d ms x %d in flight%s")
        :format(cpu, #reqs, per * 1000, by_cpu == math.huge and "unbounded" or ("%.0f"):format(by_cpu),
          by_lat == math.huge and "unbounded" or ("%.0f"):format(by_lat), LAT, CONC,
          (by_cpu < by_lat * 2) and "   <-- the simulator, not the latency, bounds this server" or "")
      sim_total[p] = cpu
    end
    for _, l in ipairs(lines) do print(l) end
    print("   timeline (s after start): " .. table.concat(timeline, "; ") .. ("; exit %.2f"):format(wall))
    floor = read_max + apply_chain
    print(("   total %d requests; floor %.2f s (the slowest read, %s %.2f s, then the slowest target's apply chain, %s %.2f s) -> wall/floor %.2fx"):format(
      total_req, floor, read_slowest, read_max, apply_slowest, apply_chain, floor > 0 and wall / floor or 0))
    print(("   overlapped floor (slowest server, all phases overlapped) %.2f s -> wall/overlapped %.2fx"):format(
      slowest, slowest > 0 and wall / slowest or 0))
    -- usersync's CPU by phase: its CPU when the first write reached a
    -- simulator (cpu_sample.py's samples, interpolated between the two
    -- around the first write's stamp) is the read, the plan, printing it
    -- and recording it; the rest is the apply (sending, the completion
    -- callbacks, the journal, the summary), per write the simulators served.
    local nwrites = 0
    for _, p in ipairs(PRODUCTS) do nwrites = nwrites + (writes[p] or 0) end
    local cpu_pre, cpu_apply
    if first_write and #r.samples > 0 then
      local sm = r.samples
      cpu_pre = 0
      for i, sa in ipairs(sm) do
        if sa[1] <= first_write then
          local nx = sm[i + 1]
          if nx and nx[1] > first_write then
            cpu_pre = sa[2] + (nx[2] - sa[2]) * (first_write - sa[1]) / (nx[1] - sa[1])
          else
            cpu_pre = sa[2]
          end
        end
      end
      cpu_apply = math.max(0, (r.cpu or 0) - cpu_pre)
    end
    print(("   usersync CPU all-in %.2f s for %d requests (%.3f ms per request)"):format(r.cpu or 0, total_req,
      total_req > 0 and (r.cpu or 0) * 1000 / total_req or 0))
    if cpu_apply and nwrites > 0 then
      print(("   usersync CPU by phase (sampled every 50 ms): before the first write (read, plan, record) %.2f s; "
        .. "apply %.2f s for %d write operations = %.3f ms per write operation"):format(cpu_pre, cpu_apply, nwrites,
        cpu_apply * 1000 / nwrites))
    end
    return writes, { wall = wall, floor = floor, rss = rss, overlapped = slowest, sim = sim_total,
                     cpu_pre = cpu_pre, cpu_apply = cpu_apply, nwrites = nwrites }
  end

  -- One row of the issue's table, for tests/bench/table.sh to collect:
  -- ROW|work|now|floor|ratio|goal (tab-free, one line).
  local function row(work, now, floor, ratio, goal)
    print(("ROW|%s|%s|%s|%s|%s"):format(work, now, floor or "-", ratio or "-", goal))
  end
  local function mb(kib) return kib and ("%.0f MB"):format(kib / 1024) or "?" end

  if populated then
    -- The store as a full first sync leaves it: links, owned groups and memberships.
    local r = proc.run({ usersync, "check", "--config-only", "-c", cfg },
      { env = { BENCH_OKTA_TOKEN = "test-token", BENCH_ATL_PW = "admin" } })
    assert(r.code == 0, r.stderr)
    local db <close> = assert(store.open(dir .. "/usersync.db"))
    db:transaction(function()
      for _, p in ipairs(PRODUCTS) do
        for _, g in ipairs(populated[p].groups) do
          db:exec("INSERT INTO owned_groups (sync, target, group_name) VALUES ('main', ?, ?)", p, g)
        end
        for _, l in ipairs(populated.links[p]) do
          db:exec([[INSERT INTO links (sync, target, okta_id, account_name, created_by_us, onboarded)
              VALUES ('main', ?, ?, ?, 1, 1)]], p, l[1], l[2])
          for _, g in ipairs(l[3]) do
            db:exec("INSERT INTO owned_memberships (sync, target, group_name, okta_id) VALUES ('main', ?, ?, ?)",
              p, g, l[1])
          end
        end
      end
    end)
    print(("targets: %d accounts each (jira, confluence, bitbucket); %d users with a new e-mail in Okta")
      :format(#populated.links.jira, populated.changed))
    for _, cmd in ipairs({ "plan", "sync" }) do
      for _, p in pairs(sims) do p:clear_requests() end
      mark_cpu()
      local r2, wall, rss = run_usersync(cmd)
      local writes, fig = report(("re-%s of a populated org (%d changed users)"):format(cmd, populated.changed), r2, wall, rss)
      if cmd == "plan" then
        row(("%d-user re-plan, peak RSS"):format(NU), mb(fig.rss), "-", "-", "<= 150 MB at 100,000 users")
      end
      assert(r2.code == 0 or r2.code == 1, "usersync " .. cmd .. " failed (exit " .. r2.code .. ")")
      if cmd == "sync" then
        local total = writes.jira + writes.confluence + writes.bitbucket
        print(("   writes: %d (jira %d, confluence %d, bitbucket %d)"):format(total, writes.jira,
          writes.confluence, writes.bitbucket))
      end
    end
    return
  end

  if MODE == "plan" then
    for _, p in pairs(sims) do p:clear_requests() end
    mark_cpu()
    local r, wall, rss = run_usersync("plan")
    if os.getenv("BENCH_KEEP") then -- the plan text, for inspection
      local pf = assert(io.open(dir .. "/plan.txt", "w")); pf:write(r.stdout); pf:close()
    end
    local _, fig = report("plan (nothing written)", r, wall, rss)
    row(("%d-user first plan, peak RSS"):format(NU), mb(fig.rss), "-", "-", "<= 200 MB at 100,000 users")
    assert(r.code == 0 or r.code == 1, "usersync plan failed")
    return
  end

  for _, p in pairs(sims) do p:clear_requests() end
  mark_cpu()
  local r1, w1, m1 = run_usersync("sync")
  local _, f1 = report("first sync", r1, w1, m1)
  row(("first sync into Jira + Confluence + Bitbucket (%d users / %d groups, %d ms)"):format(NU, NG, LAT),
    ("%.1f s, %s"):format(f1.wall, mb(f1.rss)), ("%.1f s"):format(f1.floor),
    f1.floor > 0 and ("%.2fx"):format(f1.wall / f1.floor) or "-", "<= 1.2x")
  if LAT == 0 and f1.cpu_apply and f1.nwrites > 0 then
    row(("CPU per write operation at 0 ms (first sync, %d users; apply %.2f s CPU / %d writes, before the first write %.2f s)")
      :format(NU, f1.cpu_apply, f1.nwrites, f1.cpu_pre),
      ("%.3f ms"):format(f1.cpu_apply * 1000 / f1.nwrites), "-", "-", "<= 0.1 ms")
  end
  assert(r1.code == 0 or r1.code == 1, "first sync failed (exit " .. r1.code .. ")")
  local counts = {}
  for _, p in ipairs(PRODUCTS) do
    local st = sims[p]:state()
    counts[#counts + 1] = ("%s %d accounts / %d groups"):format(p, #st.users, #st.groups)
  end
  print("   targets after: " .. table.concat(counts, ", "))

  mark_cpu()
  local r2, w2, m2 = run_usersync("sync")
  local writes, f2 = report("no-op re-sync", r2, w2, m2)
  row(("no-op re-sync (%d users, %d ms)"):format(NU, LAT), ("%.2f s, CPU %.2f s, %s"):format(f2.wall, r2.cpu or 0, mb(f2.rss)),
    ("%.2f s"):format(f2.floor), f2.floor > 0 and ("%.2fx"):format(f2.wall / f2.floor) or "-", "<= 1.5x")
  local total, each = 0, {}
  for _, p in ipairs(PRODUCTS) do
    total = total + writes[p]
    each[#each + 1] = ("%s %d"):format(p, writes[p])
  end
  print(("   writes in the re-sync: %d (%s)%s"):format(total, table.concat(each, ", "),
    total == 0 and "" or "   <-- MUST BE 0"))
  assert(r2.code == 0 or r2.code == 1, "re-sync failed")
  assert(total == 0, "the no-op re-sync wrote")
end

local ok, err = xpcall(main, debug.traceback)
cleanup()
if not ok then
  io.stderr:write("benchmark failed: ", tostring(err), "\n")
  os.exit(1)
end
