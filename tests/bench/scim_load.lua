-- scim_load.lua: load check of serve's SCIM endpoint (issue 18) with wrk.
--
--   SOURCE_DIR=$PWD PYTHON3=/usr/bin/python3 USERSYNC=$PWD/build/usersync \
--     build/usersync run tests/bench/scim_load.lua [seconds=30] [connections=16] [users=2000] [rate=600]
--
-- Starts the Jira simulator and `usersync serve` with one scim source
-- (sync entry to Jira, so the pushes trigger real runs during the load),
-- creates `users` users through the endpoint, then runs wrk twice for
-- `seconds` with the mix of tests/bench/scim_load_wrk.lua (per connection:
-- 2 filtered GETs by userName, 1 POST, 1 PATCH): first at `rate` requests/s
-- offered (an identity provider's steady pace), then as fast as the
-- connections are answered (the ceiling). Printed: requests/s, latency
-- p50/p90/p99, non-2xx answers, and "nothing lost": the users created and
-- the PATCHes answered 200 against what the store holds afterwards (a
-- request wrk cut off at the end may have been stored without wrk seeing
-- its answer, so the store may hold up to `connections` more, never fewer).
-- Goal: >= 500 requests/s, p99 < 50 ms, nothing lost. The figures depend on
-- the machine's load, which the output reports.
package.path = (os.getenv("SOURCE_DIR") or ".") .. "/tests/lua/?.lua;" .. package.path
local fakes = require "support.fakes"
local proc = require "support.proc"
local serve = require "support.serve"
local json = require "usersync.json"
local http = require "usersync.http"
local store = require "usersync.store"

local args = arg or {}
local SECS = tonumber(args[1]) or 30
local CONNS = tonumber(args[2]) or 16
local NUSERS = tonumber(args[3]) or 2000
local RATE = tonumber(args[4]) or 600
local TOKEN = "bench-scim-token-0123456789abcdef"
local src = fakes.source_dir

assert(os.execute("command -v wrk >/dev/null"), "wrk is not installed (apt-get install wrk)")
local loadavg, ncpu = proc.loadavg, proc.ncpu
print(("machine: %s cores, load average %s (figures taken on a shared, loaded machine)"):format(ncpu(), loadavg()))

local dir = os.tmpname(); os.remove(dir); os.execute("mkdir -p " .. dir)
local jira = fakes.start("jira")
local cfg = dir .. "/usersync.conf.lua"
local f = assert(io.open(cfg, "w"))
f:write(([[
return {
  state = %q,
  sources = { idp = { type = "scim", token = %q } },
  targets = { jira = { type = "jira", url = %q, token = env "US_TEST_ATL_TOKEN" } },
  sync = { { name = "main", source = "idp", targets = { "jira" } } },
  serve = { listen = "127.0.0.1:0", max_connections_per_ip = 1024 },
}
]]):format(dir .. "/usersync.db", TOKEN, jira.url))
f:close()

local d = serve.start({ dir = dir, config = cfg }, { env = { USERSYNC_LOG_LEVEL = "info" } })
local hc = http.client{ retries = 0, timeout = 30 }
local H = { Authorization = "Bearer " .. TOKEN, ["Content-Type"] = "application/scim+json" }

-- the existing users, pushed as an identity provider's import does
local lines = {}
local started = require("usersync.time").monotonic()
for i = 1, NUSERS do
  local name = ("user%05d@example.com"):format(i)
  local r = assert(hc:request{ method = "POST", url = d.base .. "/scim/v2/idp/Users", headers = H, body = json.encode{
    schemas = { "urn:ietf:params:scim:schemas:core:2.0:User" }, userName = name, active = true,
    name = { givenName = "User", familyName = tostring(i) }, emails = { { value = name, type = "work", primary = true } } } })
  assert(r.status == 201, "create failed: " .. r.status .. " " .. r.body)
  lines[#lines + 1] = json.decode(r.body).id .. " " .. name
end
local took = require("usersync.time").monotonic() - started
print(("setup: %d users created one by one in %.1f s (%.0f POST/s, one client)"):format(NUSERS, took, NUSERS / took))
f = assert(io.open(dir .. "/users.txt", "w")); f:write(table.concat(lines, "\n"), "\n"); f:close()

local db = assert(store.open(dir .. "/usersync.db"))
local all_ok = true

local function phase(label, rate)
  local before = db:first("SELECT count(*) AS n, sum(version) AS v FROM scim_users")
  local out = dir .. "/wrk.txt"
  local cmd = ("PHASE=%s TOKEN=%s SOURCE=idp CONNS=%d RATE=%s USERS_FILE=%s wrk -t2 -c%d -d%ds --latency -s %s %s >%s 2>&1"):format(
    rate and "r" or "f", proc.quote(TOKEN), CONNS, rate and tostring(rate) or "", proc.quote(dir .. "/users.txt"), CONNS, SECS,
    proc.quote(src .. "/tests/bench/scim_load_wrk.lua"), proc.quote(d.base .. "/scim/v2/idp/Users"), out)
  os.execute(cmd)
  local ff = assert(io.open(out)); local text = ff:read("a"); ff:close()
  local function pct(p) return text:match("\n%s+" .. p .. "%%%s+(%S+)") or "?" end
  local total = text:match("(%d+) requests in") or "?"
  local rps = text:match("Requests/sec:%s+(%S+)") or "?"
  local non2xx = text:match("Non%-2xx or 3xx responses: (%d+)")
  local sock = text:match("Socket errors: ([^\n]+)")
  local c, p, fo, bad = text:match("COUNTS created=(%d+) patched=(%d+) found=(%d+) bad=(%d+)")
  print(("%s: SCIM mix (2 filtered GET : 1 POST : 1 PATCH), wrk -t2 -c%d -d%ds"):format(label, CONNS, SECS))
  print(("  requests: %s   requests/s: %s"):format(total, rps))
  print(("  latency p50 %s  p90 %s  p99 %s"):format(pct(50), pct(90), pct(99)))
  print(("  non-2xx: %s   socket errors: %s"):format(non2xx or "0", sock or "none"))
  print(("  answers: %s created, %s patched, %s found by filter, %s other"):format(c or "?", p or "?", fo or "?", bad or "?"))
  if not c then print(text) end
  local after = db:first("SELECT count(*) AS n, sum(version) AS v FROM scim_users")
  local new_users = after.n - before.n
  local new_versions = (after.v - before.v) - new_users -- a PATCH adds a version; a create starts at 1
  print(("  store: %d users created (client saw %s), %d PATCHes applied (client saw %s)"):format(
    new_users, c or "?", new_versions, p or "?"))
  local lost = not c or new_users < tonumber(c) or new_versions < tonumber(p)
    or new_users - tonumber(c) > CONNS or new_versions - tonumber(p) > CONNS
  print("  nothing lost: " .. (lost and "NO" or "yes"))
  local p99 = pct(99)
  local n = tonumber(p99:match("^[%d.]+") or "")
  local p99ms = n and ((p99:match("ms$") and n) or (p99:match("us$") and n / 1000) or (p99:match("%ds$") and n * 1000))
  if rate then
    print(("  goal >= 500 requests/s with p99 < 50 ms: %s"):format(
      (tonumber(rps) or 0) >= 500 and p99ms and p99ms < 50 and "met" or "not met"))
  end
  if lost or non2xx or sock then all_ok = false end
end

phase(("at %d requests/s offered"):format(RATE), RATE)
print(("machine load average: %s"):format(loadavg()))
phase("as fast as answered", nil)
print(("machine load average after: %s"):format(loadavg()))
db:close()
local code = d:stop()
print("serve exit status after SIGTERM: " .. tostring(code))
jira:stop()
os.execute("rm -rf " .. proc.quote(dir))
if not all_ok or code ~= 0 then return 1 end
return 0
