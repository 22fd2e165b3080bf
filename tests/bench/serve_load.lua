-- serve_load.lua: load check of the real `usersync serve` with wrk (issue 8).
--
--   SOURCE_DIR=$PWD PYTHON3=/usr/bin/python3 USERSYNC=$PWD/build/usersync \
--     build/usersync run tests/bench/serve_load.lua [seconds=30] [connections=32] [threads=2] [actors=20]
-- (the Okta fixture comes from tests/data/fixtures/okta)
--
-- Starts the Okta and Jira simulators with a genorg org (300 users, 30
-- groups, app 0oaBenchApp000000001), a config with a serve section (hook
-- secret from the environment, listen on a free port) and `usersync serve`.
-- Then wrk, for `seconds` each:
--   1. GET /healthz
--   2. POST /hooks/okta with valid deliveries: the Okta fixture delivery
--      (user.session.start), a new event uuid per request, the actor cycling
--      over `actors` users assigned to the app — so every delivery is queued
--      and serve keeps syncing those users (sync at login) under the load.
-- Printed per phase: requests/s, latency p50/p90/p99, non-2xx responses and
-- socket errors (goal: zero), and the serve process's RSS before and after;
-- then the hook and run counters from /metrics and the accounts synced.
-- tests/bench/serve_load.sh measures the bare HTTP server (usersync.server
-- with a draining consumer) the same way.
package.path = (os.getenv("SOURCE_DIR") or ".") .. "/tests/lua/?.lua;" .. package.path
local fakes = require "support.fakes"
local proc = require "support.proc"
local serve = require "support.serve"
local json = require "usersync.json"

local args = arg or {}
local SECS = tonumber(args[1]) or 30
local CONNS = tonumber(args[2]) or 32
local THREADS = tonumber(args[3]) or 2
local NACTORS = tonumber(args[4]) or 20
local APP = "0oaBenchApp000000001"
local py = os.getenv("PYTHON3") or "python3"
local src = fakes.source_dir

assert(os.execute("command -v wrk >/dev/null"), "wrk is not installed (apt-get install wrk)")
local dir = os.tmpname(); os.remove(dir); os.execute("mkdir -p " .. dir)
local orgfile = dir .. "/org.json"
assert(os.execute(("%s %s/tests/fakes/genorg.py --users 300 --groups 30 --seed 7 --app-id %s --out %s"):format(
  py, src, APP, orgfile)))
local f = assert(io.open(orgfile)); local org = assert(json.decode(f:read("a"))); f:close()
local okta = fakes.start("okta", { state_file = orgfile })
local jira = fakes.start("jira")

local by_id = {}
for _, u in ipairs(org.users) do by_id[u.id] = u end
local actors = {}
for _, id in ipairs(org.apps[APP].users) do
  if by_id[id] and by_id[id].status == "ACTIVE" then actors[#actors + 1] = id end
  if #actors == NACTORS then break end
end

local cfg = dir .. "/usersync.conf.lua"
f = assert(io.open(cfg, "w"))
f:write(([[
return {
  state = %q,
  sources = { okta = { type = "okta", url = %q, token = env "US_TEST_OKTA_TOKEN", app_id = %q } },
  targets = { jira = { type = "jira", url = %q, token = env "US_TEST_ATL_TOKEN" } },
  sync = { { name = "main", source = "okta", targets = { "jira" }, groups = { mode = "on_the_fly" } } },
  serve = { listen = "127.0.0.1:0", max_connections_per_ip = 1024, okta_hook = { path = "/hooks/okta", secret = env "US_TEST_HOOK_SECRET" } },
}
]]):format(dir .. "/usersync.db", okta.url, APP, jira.url))
f:close()

-- The fixture delivery with placeholders for the event uuid and the actor.
do
  local data = os.getenv("DATA_DIR") or (src .. "/tests/data")
  local ff = assert(io.open(data .. "/fixtures/okta/docs_event_hook_delivery_user_session_start.json"))
  local body = assert(json.decode(ff:read("a"))).body
  ff:close()
  body.data.events[1].uuid = "@UUID@"
  body.data.events[1].actor.id = "@ACTOR@"
  ff = assert(io.open(dir .. "/body.json", "w"))
  ff:write(assert(json.encode(body)))
  ff:close()
end

local d = serve.start({ dir = dir, config = cfg }, { env = { USERSYNC_LOG_LEVEL = "info" } })

local function rss()
  local sf = io.open("/proc/" .. d.pid .. "/status")
  if not sf then return "?" end
  local s = sf:read("a"); sf:close()
  local kb = s:match("VmRSS:%s*(%d+)")
  return kb and ("%.1f MB"):format(tonumber(kb) / 1024) or "?"
end

local failures = 0
local function wrk(label, url, script, env)
  local out = dir .. "/wrk.txt"
  local parts = {}
  for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. proc.quote(v) end
  local cmd = ("%s wrk -t%d -c%d -d%ds --latency %s %s >%s 2>&1"):format(table.concat(parts, " "),
    THREADS, CONNS, SECS, script and ("-s " .. proc.quote(script)) or "", proc.quote(url), out)
  os.execute(cmd)
  local ff = assert(io.open(out)); local text = ff:read("a"); ff:close()
  local function pct(p) return text:match("\n%s+" .. p .. "%%%s+(%S+)") or "?" end
  local total = text:match("(%d+) requests in") or "?"
  local rps = text:match("Requests/sec:%s+(%S+)") or "?"
  local non2xx = text:match("Non%-2xx or 3xx responses: (%d+)")
  local sock = text:match("Socket errors: ([^\n]+)")
  print(label)
  print(("  requests: %s   requests/s: %s"):format(total, rps))
  print(("  latency p50 %s  p90 %s  p99 %s"):format(pct(50), pct(90), pct(99)))
  print(("  non-2xx: %s   socket errors: %s"):format(non2xx or "0", sock or "none"))
  if non2xx or sock or total == "?" then failures = failures + 1 end
  if total == "?" then print(text) end
end

print(("usersync serve pid %d on port %d; wrk -t%d -c%d -d%ds; %d actors"):format(d.pid, d.port, THREADS, CONNS,
  SECS, #actors))
print("RSS at start: " .. rss())
wrk("GET /healthz", d.base .. "/healthz")
print("RSS after /healthz: " .. rss())
wrk("POST /hooks/okta (valid user.session.start deliveries, a new uuid each)", d.base .. "/hooks/okta",
  src .. "/tests/bench/serve_load_post.lua",
  { BODY_TEMPLATE = dir .. "/body.json", HOOK_SECRET = "hook-secret-value", ACTORS = table.concat(actors, ",") })
print("RSS right after the hook load: " .. rss())
-- Let serve work through what is queued, then read the counters.
local drained = serve.wait_for(function()
  local m = d:metrics()
  for k, v in pairs(m) do
    if k:match("^usersync_hook_queue_events") and v == 0 then return true end
  end
end, 120)
serve.wait_for(function() return false end, 2)
print("RSS after the queue drained: " .. rss() .. (drained and "" or " (queue not drained in 120 s)"))
local m = d:metrics()
local keys = {}
for k in pairs(m) do
  if k:match("^usersync_hook_") or k:match("^usersync_runs_total") then keys[#keys + 1] = k end
end
table.sort(keys)
for _, k in ipairs(keys) do print(("  %s %s"):format(k, tostring(m[k]))) end
local synced = 0
for _, a in ipairs(jira:state().users) do
  for _, id in ipairs(actors) do
    if by_id[id].profile.login:lower() == a.name:lower() then synced = synced + 1 end
  end
end
print(("accounts of the %d actors in Jira: %d"):format(#actors, synced))
local code = d:stop()
print("serve exit status after SIGTERM: " .. tostring(code))
okta:stop(); jira:stop()
os.execute("rm -rf " .. proc.quote(dir))
if failures > 0 or code ~= 0 or synced ~= #actors then return 1 end
return 0
