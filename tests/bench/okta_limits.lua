-- okta_limits.lua: the times behind tests/lua/test_okta_limits.lua, which
-- asserts what the simulator saw and leaves the clock to this benchmark.
--   usersync run tests/bench/okta_limits.lua [latency_ms=100]
-- Against the Okta simulator (20 users, 12 groups of 3 members, an app with
-- the 20 users):
--   * scope read (2 listings, then 12 member listings) at concurrency 1, 3
--     and 8, each request held latency_ms by the simulator: wall time, the
--     floor (rounds x latency) and the most requests the simulator served
--     at once;
--   * the budget-share governor: a request held until the window's reset
--     (computed from the response Date), the wait it computed and the time
--     it was held;
--   * a 429 storm: 20 concurrent listings, 13 left in the window, the rest
--     retried after the reset: the wall time and the simulator's statuses.
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = here .. "/../lua/?.lua;" .. package.path

local time = require "usersync.time"
local json = require "usersync.json"
local http = require "usersync.http"
local fakes = require "support.fakes"
local S = require "support.oktasim"

local latency = tonumber(arg[1]) or 100
local members = {}
for g = 1, 12 do members[g] = 3 end
local sim <close> = fakes.start("okta", { state = S.org{ users = 20, groups = 12, members = members,
                                                          app = { users = 20 } } })

print(("== scope read: 14 listings, %d ms each at the simulator"):format(latency))
sim:faults{ latency_ms = latency }
for _, conc in ipairs{ 1, 3, 8 } do
  sim:clear_requests()
  local c <close> = S.client(sim, { app_id = S.APP, concurrency = conc }, { timeout = 60, per_host = 16 })
  local t0 = time.monotonic()
  local snap = assert(c:scope{})
  local wall = time.monotonic() - t0
  -- the 2 first listings, then the 12 member listings, conc at a time
  local rounds = math.ceil(2 / conc) + math.ceil(12 / conc)
  print(("  concurrency %d: %.3f s (floor %.3f s), %d requests, at most %d at once at the simulator")
    :format(conc, wall, rounds * latency / 1000, #sim:requests(), sim:inflight().max))
  assert(#snap.users == 20)
end
sim:faults{}

print("== budget share 0.5: the request that would pass half of a 10-request bucket")
sim:faults{ okta_buckets = { ["/api/v1/users/{id}"] = 10 } }
local T0 = math.floor(time.now())
sim:clock{ now = T0 }
do
  local c <close> = S.client(sim, { budget_share = 0.5 })
  for i = 1, 4 do assert(c:user(S.uid(i))) end
  sim:clock{ now = T0 + 57 }
  assert(c:user(S.uid(5)))
  local wait = c:budget()["/api/v1/users/{id}"].reset_in
  local t0 = time.monotonic()
  assert(c:user(S.uid(6)))
  local held = time.monotonic() - t0
  print(("  wait computed from Date: %.3f s; held %.3f s; remaining after it: %d (a new window)")
    :format(wait, held, c:budget()["/api/v1/users/{id}"].remaining))
end

print("== 429 storm: 20 concurrent listings, 13 left in the window")
sim:faults{ okta_buckets = { ["/api/v1/users*"] = 14 }, okta_token_share = 1 }
T0 = math.floor(time.now())
sim:clock{ now = T0 }
do
  local c <close> = S.client(sim, { budget_share = 1.0, concurrency = 20 }, { timeout = 60, per_host = 20 })
  assert(http.request{ url = sim.url .. "/api/v1/users/" .. S.uid(1) .. "/groups",
                       headers = { Authorization = "SSWS test-token" } })
  sim:clock{ now = T0 + 57 }
  sim:clear_requests()
  local t0 = time.monotonic()
  local ch = assert(c:changes{ watermark = "2000-01-01T00:00:00.000Z" })
  local wall = time.monotonic() - t0
  local seq = {}
  for _, r in ipairs(sim:requests()) do
    if r.path:find("/groups$") then seq[#seq + 1] = r.status end
  end
  print(("  %d users with groups in %.3f s; the simulator served: %s"):format(#ch.users, wall,
    table.concat(seq, " ")))
end
sim:clock{ now = json.null }
sim:faults{}
