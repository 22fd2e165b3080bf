-- scim_push.lua: an identity provider's initial SCIM push (issue 18) against
-- a pulled sync of the same org.
--
--   SOURCE_DIR=$PWD PYTHON3=/usr/bin/python3 USERSYNC=$PWD/build/usersync \
--     build/usersync run tests/bench/scim_push.lua [users=10000] [groups=200] [latency_ms=20] [scope=all]
--
-- The org: genorg.py --seed 42 with an app. The scope: every user of the
-- org (scope=all: STAGED are skipped, inactive ones get no account), or the
-- app's users (scope=app). Groups on the fly (Okta's built-ins do not
-- count), every user gets "synced".
--   1. Pulled: the Okta simulator holds the org, `usersync sync` reads the
--      app's scope and fills an empty Jira simulator (latency_ms per request).
--   2. Pushed: `usersync serve` with a scim source and another empty Jira.
--      The same scope is pushed as Okta's SCIM import sends it: per user a
--      filtered GET by userName, then a POST; per group a POST, then its
--      members by PATCH, 100 per request. serve batches the pushes.
-- Printed: the wall time of each, the target requests of each (by kind),
-- whether the two Jiras hold the same accounts, groups and memberships,
-- the floor (the writes a first sync needs: what the pulled run wrote), and
-- what one full sync per push would have cost (pushes x the reads of one
-- full sync of the filled Jira). The machine's load is printed too: the
-- figures are taken on a shared, loaded machine.
package.path = (os.getenv("SOURCE_DIR") or ".") .. "/tests/lua/?.lua;" .. package.path
local fakes = require "support.fakes"
local proc = require "support.proc"
local serve = require "support.serve"
local json = require "usersync.json"
local http = require "usersync.http"
local time = require "usersync.time"

local args = arg or {}
local NUSERS = tonumber(args[1]) or 10000
local NGROUPS = tonumber(args[2]) or 200
local LATENCY = tonumber(args[3]) or 20
local SCOPE = args[4] or "all"
local APP = "0oaBenchApp000000001"
local TOKEN = "bench-scim-token-0123456789abcdef"
local py = os.getenv("PYTHON3") or "python3"
local src = fakes.source_dir

local loadavg = proc.loadavg
print(("%d users, %d groups, scope %s, Jira at %d ms; load average %s (figures taken on a shared, loaded machine)")
  :format(NUSERS, NGROUPS, SCOPE, LATENCY, loadavg()))

local dir = os.tmpname(); os.remove(dir); os.execute("mkdir -p " .. dir)
local orgfile = dir .. "/org.json"
assert(os.execute(("%s %s/tests/fakes/genorg.py --users %d --groups %d --seed 42 --app-id %s --out %s"):format(
  py, src, NUSERS, NGROUPS, APP, orgfile)))

local SYNC = [[
  sync = { { name = "main", source = %q, targets = { "jira" },
             groups = { mode = "on_the_fly" }, defaults = { all_users = { "synced" } } } },
]]

local function write_config(path, source_line, source_name, jira_url, state, extra)
  local f = assert(io.open(path, "w"))
  f:write(("return {\n  state = %q,\n  sources = { %s },\n  targets = { jira = { type = \"jira\", url = %q, token = \"test-token\" } },\n%s%s}\n")
    :format(state, source_line, jira_url, SYNC:format(source_name), extra or ""))
  f:close()
end

local function by_kind(sim)
  local out, total = {}, 0
  for _, r in ipairs(sim:requests()) do
    local k = r.method .. " " .. r.path:gsub("/[%w%-%%._@+]*%d[%w%-%%._@+]*", "/{id}")
    out[k] = (out[k] or 0) + 1
    total = total + 1
  end
  return out, total
end

local function print_kinds(label, kinds, total)
  print(("  %s: %d Jira requests"):format(label, total))
  local keys = {}
  for k in pairs(kinds) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do print(("    %-50s %d"):format(k, kinds[k])) end
end

-- The comparable state of a Jira simulator.
local function jira_view(sim)
  local st = sim:state()
  local users = {}
  for _, u in ipairs(st.users) do
    if u.name ~= "admin" then
      users[u.name:lower()] = ("%s|%s|%s"):format(u.displayName, u.emailAddress, tostring(u.active))
    end
  end
  local members = {}
  for g, list in pairs(st.members or {}) do
    local l = {}
    for _, n in ipairs(list) do if n ~= "admin" then l[#l + 1] = n:lower() end end
    table.sort(l)
    if #l > 0 then members[g:lower()] = table.concat(l, ",") end
  end
  return users, members
end

---------------------------------------------------------------- 1. pulled
local okta = fakes.start("okta", { state_file = orgfile, lifetime = 3600 })
local jira_a = fakes.start("jira", { latency_ms = LATENCY, lifetime = 3600 })
local cfg_a = dir .. "/pulled.conf.lua"
write_config(cfg_a, ("okta = { type = \"okta\", url = %q, token = \"test-token\"%s }"):format(okta.url,
  SCOPE == "app" and (", app_id = %q"):format(APP) or ""), "okta", jira_a.url, dir .. "/pulled.db")
local t0 = time.monotonic()
local r = proc.run({ os.getenv("USERSYNC"), "sync", "-c", cfg_a }, { env = { NO_COLOR = "1", USERSYNC_LOG_LEVEL = "warn" } })
local pulled_wall = time.monotonic() - t0
print(("1. pulled sync: exit %d, %.1f s"):format(r.code, pulled_wall))
if r.code ~= 0 then print(r.stderr) end
local kinds_a, total_a = by_kind(jira_a)
print_kinds("pulled", kinds_a, total_a)
local writes_a = 0
for k, n in pairs(kinds_a) do if not k:match("^GET") then writes_a = writes_a + n end end
-- the reads of one full sync of the filled Jira (a no-op re-sync)
jira_a:clear_requests()
proc.run({ os.getenv("USERSYNC"), "plan", "-c", cfg_a }, { env = { NO_COLOR = "1", USERSYNC_LOG_LEVEL = "warn" } })
local _, reads_full = by_kind(jira_a)

-- The scope the pulled sync read, to push the same.
local hc = http.client{ retries = 0, timeout = 60 }
local okta_c = require("usersync.okta").client(hc, { url = okta.url, token = "test-token",
  app_id = SCOPE == "app" and APP or nil })
local snap = assert(okta_c:scope{ include = function(g) return g.type ~= "BUILT_IN" end })
okta_c:close()

---------------------------------------------------------------- 2. pushed
local jira_b = fakes.start("jira", { latency_ms = LATENCY, lifetime = 3600 })
local cfg_b = dir .. "/pushed.conf.lua"
write_config(cfg_b, ("idp = { type = \"scim\", token = %q }"):format(TOKEN), "idp", jira_b.url, dir .. "/pushed.db",
  '  serve = { listen = "127.0.0.1:0", max_connections_per_ip = 1024 },\n')
local d = serve.start({ dir = dir, config = cfg_b }, { env = { USERSYNC_LOG_LEVEL = "info" }, lifetime = 3600 })
local H = { Authorization = "Bearer " .. TOKEN, ["Content-Type"] = "application/scim+json" }
local function scim(method, path, body)
  local res = assert(hc:request{ method = method, url = d.base .. "/scim/v2/idp" .. path, headers = H,
                                 body = body and json.encode(body) or nil })
  return res.status, res.body ~= "" and json.decode(res.body) or nil
end
local function enc(s) return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end)) end

local ACTIVE = { ACTIVE = true, PASSWORD_EXPIRED = true, LOCKED_OUT = true, RECOVERY = true, PROVISIONED = true }
t0 = time.monotonic()
local pushes, ids = 0, {}
for _, u in ipairs(snap.users) do
  if u.status ~= "STAGED" then
    local p = u.profile
    scim("GET", "/Users?filter=" .. enc(('userName eq "%s"'):format(p.login)) .. "&startIndex=1&count=100")
    local s, res = scim("POST", "/Users", { schemas = { "urn:ietf:params:scim:schemas:core:2.0:User" },
      userName = p.login, name = { givenName = p.firstName, familyName = p.lastName },
      displayName = p.displayName, active = ACTIVE[u.status] == true,
      emails = p.email and { { value = p.email, type = "work", primary = true } } or nil })
    assert(s == 201, "create " .. p.login .. ": " .. s)
    ids[u.id] = res.id
    pushes = pushes + 2
  end
end
local members = {}
for _, u in ipairs(snap.users) do
  for _, gid in ipairs(u.groups or {}) do
    if ids[u.id] then members[gid] = members[gid] or {}; table.insert(members[gid], ids[u.id]) end
  end
end
for gid, g in pairs(snap.groups) do
  local s, res = scim("POST", "/Groups", { schemas = { "urn:ietf:params:scim:schemas:core:2.0:Group" },
    displayName = g.profile.name, members = json.array{} })
  assert(s == 201, "group " .. g.profile.name .. ": " .. s)
  pushes = pushes + 1
  local list = members[gid] or {}
  for i = 1, #list, 100 do
    local chunk = {}
    for j = i, math.min(i + 99, #list) do chunk[#chunk + 1] = { value = list[j] } end
    scim("PATCH", "/Groups/" .. res.id, { schemas = { "urn:ietf:params:scim:api:messages:2.0:PatchOp" },
      Operations = { { op = "add", path = "members", value = chunk } } })
    pushes = pushes + 1
  end
end
local push_wall = time.monotonic() - t0
print(("2. pushed: %d SCIM requests in %.1f s (%.0f/s, one client)"):format(pushes, push_wall, pushes / push_wall))

-- wait until serve's runs are done: the Jira matches, or nothing moves for a while
local want_u, want_m = jira_view(jira_a)
local function same()
  local u, m = jira_view(jira_b)
  for k, v in pairs(want_u) do if u[k] ~= v then return false, "account " .. k end end
  for k in pairs(u) do if not want_u[k] then return false, "extra account " .. k end end
  for k, v in pairs(want_m) do if m[k] ~= v then return false, "members of " .. k end end
  for k in pairs(m) do if not want_m[k] then return false, "extra group members " .. k end end
  return true
end
-- (polled every 2 s: reading a 10,000-account Jira state is not free for the simulator)
local equal
local deadline = time.monotonic() + 3000
repeat
  time.sleep(2)
  equal = same()
until equal or time.monotonic() > deadline
local total_wall = time.monotonic() - t0
local _, why = same()
print(("   Jira equal to the pulled sync's: %s%s; push to last change %.1f s"):format(equal and "yes" or "NO",
  equal and "" or (" (" .. tostring(why) .. ")"), total_wall))
local kinds_b, total_b = by_kind(jira_b)
print_kinds("pushed", kinds_b, total_b)
local runs = 0
for _, rec in ipairs(d:log()) do if rec.msg == "run finished" then runs = runs + 1 end end
print(("   serve runs: %d"):format(runs))
print(("floor (the writes a first sync needs, as the pulled run made them): %d Jira requests"):format(writes_a))
print(("one full sync per push would have cost %d pushes x %d Jira reads = %d Jira requests for the reads alone"):format(pushes, reads_full, pushes * reads_full))
print(("load average after: %s"):format(loadavg()))
d:stop()
okta:stop(); jira_a:stop(); jira_b:stop()
os.execute("rm -rf " .. proc.quote(dir))
return equal and 0 or 1
