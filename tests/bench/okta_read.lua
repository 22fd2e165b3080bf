-- okta_read.lua: the Okta read a sync makes, timed against the simulator.
--   usersync run tests/bench/okta_read.lua [users=10000] [groups=500] [latency_ms=20] [concurrency=8]
-- Generates an org with genorg.py (one app assigned partly directly and partly
-- through groups), starts the simulator with that latency, reads "users in
-- scope, each with their groups" (c:scope, every group counts but the
-- BUILT_IN ones) twice: for the app, and for every user of the org (no app:
-- all 10,000 users). Prints the requests by endpoint, the wall time, and
-- the floor = necessary requests x latency / concurrency, plus the longest
-- chain of dependent pages (one listing's pages are sequential), which bounds
-- the time from below as well.
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = here .. "/../lua/?.lua;" .. package.path

local http = require "usersync.http"
local okta = require "usersync.okta"
local time = require "usersync.time"
local fakes = require "support.fakes"

local users = tonumber(arg[1]) or 10000
local groups = tonumber(arg[2]) or 500
local latency = tonumber(arg[3]) or 20
local conc = tonumber(arg[4]) or 8
local APP = "0oaBenchApp000000001"

local py = os.getenv("PYTHON3") or "python3"
local org = os.tmpname()
local cmd = ("%s %s/tests/fakes/genorg.py --users %d --groups %d --seed 7 --app-id %s > %s")
  :format(py, fakes.source_dir, users, groups, APP, org)
assert(os.execute(cmd), "genorg failed")

local sim <close> = fakes.start("okta", { state_file = org, latency_ms = latency })
os.remove(org)
local hc <close> = http.client{ timeout = 60, per_host = conc }
local st = sim:state()

-- Runs one scope read and prints its figures. app: the app's users, or nil
-- for every user of the org (filter, DEPROVISIONED included).
local function run(title, app)
  sim:clear_requests()
  local c <close> = okta.client(hc, { url = sim.url, token = "test-token", app_id = app,
                                      concurrency = conc })
  local t0 = time.monotonic()
  local snap, err, code = c:scope{ include = function(g) return g.type ~= "BUILT_IN" end }
  local wall = time.monotonic() - t0
  if not snap then error(err .. " (" .. code .. ")") end
  local counted, memberships = 0, 0
  for _ in pairs(snap.groups) do counted = counted + 1 end
  for _, u in ipairs(snap.users) do memberships = memberships + #u.groups end
  local by = sim:by_path()
  local total, names = 0, {}
  for k, v in pairs(by) do total = total + v; names[#names + 1] = k end
  table.sort(names)
  print(("== %s: %d users in scope, %d counted groups, %d memberships")
    :format(title, #snap.users, counted, memberships))
  print("requests by endpoint:")
  for _, k in ipairs(names) do print(("  %6d  %s"):format(by[k], k)) end
  -- the longest chain of dependent pages: the users listing or the biggest group
  local biggest = 0
  for id in pairs(snap.groups) do
    local n = #(st.group_members[id] or {})
    if n > biggest then biggest = n end
  end
  local chain = math.max(math.ceil(biggest / 200), app and math.ceil(#snap.users / 500)
                         or math.ceil(#snap.users / 200))
  local floor = total * latency / 1000 / conc
  print(("requests: %d (client counted %d)"):format(total, snap.requests))
  print(("wall time: %.2f s"):format(wall))
  print(("floor: %d requests x %d ms / %d in flight = %.2f s; longest page chain %d x %d ms = %.2f s")
    :format(total, latency, conc, floor, chain, latency, chain * latency / 1000))
  print(("ratio to the larger floor: %.2f"):format(wall / math.max(floor, chain * latency / 1000)))
end

print(("org: %d users, %d groups, %d ms latency, %d requests in flight"):format(users, groups,
  latency, conc))
run("app " .. APP, APP)
run("every user of the org (no app)", nil)
