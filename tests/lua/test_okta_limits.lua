-- test_okta_limits.lua: rate limits and concurrency of usersync.okta against
-- the simulator: the budget share held back before a 429 (wait computed from
-- the response Date, not the local clock), 429 storms retried after the
-- reset, the in-flight limit, concurrent listings, and budget() figures.
-- The simulator's clock is pinned and moved (PUT /__fake/clock) so that
-- windows reset within seconds.
-- Every assertion is on behaviour the simulator saw (statuses in the order it
-- served them, the window a request fell in, the most requests it served at
-- once) or on the governor's own decision (the wait it computed), never on how
-- fast this machine is: the file passes loaded and under valgrind. The times
-- are printed by tests/bench/okta_limits.lua.
local test = require "tap"
local time = require "usersync.time"
local json = require "usersync.json"
local fakes = require "support.fakes"
local S = require "support.oktasim"

local sim <close> = fakes.start("okta", { state = S.org{ users = 20, groups = 12,
  members = { [1] = 3, [2] = 3, [3] = 3, [4] = 3, [5] = 3, [6] = 3, [7] = 3, [8] = 3, [9] = 3,
              [10] = 3, [11] = 3, [12] = 3 }, app = { users = 20 } } })

local function statuses(path)
  local out = {}
  for _, r in ipairs(sim:requests()) do
    if not path or r.path:find(path) then out[r.status] = (out[r.status] or 0) + 1 end
  end
  return out
end

test("budget share: at 50% of a bucket it waits for the reset (from Date) instead of a 429", function(t)
  sim:faults{ okta_buckets = { ["/api/v1/users/{id}"] = 10 } }
  local T0 = math.floor(time.now())
  sim:clock{ now = T0 }
  sim:clear_requests()
  local c <close> = S.client(sim, { budget_share = 0.5 })
  for i = 1, 4 do assert(c:user(S.uid(i))) end
  -- the window began with the first request (T0, or later by however long
  -- the client took to start); pinned at T0 + 57 (not advanced: the time the
  -- four requests took must not eat into what is left), it ends in 3 s or a
  -- little more by the simulator's clock. The local clock would say ~60 s:
  -- only the Date header tells the truth.
  local T57 = T0 + 57
  sim:clock{ now = T57 }
  assert(c:user(S.uid(5)))                        -- remaining 5 = the share kept for others
  -- (t0 before budget(): the hold, measured from t0, cannot be shorter than
  -- the reset_in budget() reports a moment later)
  local t0 = time.monotonic()
  local b = c:budget()["/api/v1/users/{id}"]
  t:eq(b.limit, 10)
  t:eq(b.remaining, 5, "the fifth request fell in the first window")
  -- the governor's decision: wait reset - Date + 1, where Date >= T0 + 57
  t:ok(b.reset > T57 and b.reset <= T57 + 60, "the window's reset (simulator's clock): " .. b.reset)
  t:ok(b.reset_in > 0 and b.reset_in <= b.reset - T57 + 1,
       ("the wait comes from Date, not the local clock: %.3f s, at most %d"):format(b.reset_in, b.reset - T57 + 1))
  local wait = b.reset_in
  assert(c:user(S.uid(6)))                        -- held until the window resets
  local held = time.monotonic() - t0
  t:ok(held >= wait, ("held back %.3f s, the wait it computed being %.3f s"):format(held, wait))
  b = c:budget()["/api/v1/users/{id}"]
  t:ok(b.waits >= 1, "the governor held a request")
  t:eq(b.rate_limited, 0)
  t:eq(b.remaining, 9, "the simulator served the sixth as the first request of a new window")
  t:same(statuses("^/api/v1/users/"), { [200] = 6 }, "no 429 was provoked")
  sim:clock{ now = json.null }
  sim:faults{}
end)

test("429 storm: retried after the reset; nothing lost", function(t)
  -- /users/{id}/groups counts against /api/v1/users*: 14 per window
  -- the admin raised this token's share to 100 % (budget_share = 1.0 below says so)
  sim:faults{ okta_buckets = { ["/api/v1/users*"] = 14 }, okta_token_share = 1 }
  local T0 = math.floor(time.now())
  sim:clock{ now = T0 }
  local c <close> = S.client(sim, { budget_share = 1.0, concurrency = 20 },
                             { timeout = 30, per_host = 20 })
  -- another integration opens the window (13 left); this client knows nothing yet
  local http = require "usersync.http"
  local opened = assert(http.request{ url = sim.url .. "/api/v1/users/" .. S.uid(1) .. "/groups",
                                      headers = { Authorization = "SSWS test-token" } })
  t:eq(opened.status, 200)
  -- pinned (not advanced, see above): 3 s or a little more are left
  sim:clock{ now = T0 + 57 }
  sim:clear_requests()
  -- 20 users changed since the watermark -> 20 concurrent group listings:
  -- 13 fit, 7 get 429 and are retried after the reset (~4 s by Date)
  local ch = assert(c:changes{ watermark = "2000-01-01T00:00:00.000Z" })
  t:eq(#ch.users, 20)
  for _, u in ipairs(ch.users) do t:ok(u.groups, "groups attached") end
  -- the listings' statuses in the order the simulator served them
  local seq = {}
  for _, r in ipairs(sim:requests()) do
    if r.path:find("/groups$") then seq[#seq + 1] = r.status end
  end
  local st, first, last = {}, nil, nil
  for i, status in ipairs(seq) do
    st[status] = (st[status] or 0) + 1
    if status == 429 then first, last = first or i, i end
  end
  local n429 = st[429] or 0
  t:ok(n429 >= 1, "the storm happened: " .. table.concat(seq, " "))
  t:eq(st[200], 20, "every listing completed")
  t:eq(#seq, 20 + n429, "nothing but the 20 listings and their retries")
  -- a 429 empties the window: whatever the simulator served after it came in
  -- a new one, so the retries waited for the reset instead of hammering
  t:ok(first and first - 1 <= 13, "at most the 13 left in the window were served before the 429s")
  t:ok(n429 <= 7, "each listing over the budget got one 429, then waited for the reset: " .. n429)
  t:ok(last and #seq - last >= n429, "every 429 was followed by a retry the new window served")
  local b = c:budget()["/api/v1/users*"]
  t:eq(b.rate_limited, n429, "the client saw every 429 the simulator sent")
  sim:clock{ now = json.null }
  sim:faults{}
end)

test("a 429 is retried after X-Rate-Limit-Reset - Date with X-Okta-Retry-For/-Count", function(t)
  local httpd = require "support.httpd"
  local srv <close> = httpd.start()
  local http = require "usersync.http"
  local hc <close> = http.client{ timeout = 10 }
  local okta = require "usersync.okta"
  local c <close> = okta.client(hc, { url = srv.url, token = "s3cr3t" })
  -- the test server answers 429 (reset = Date + 1) once, then an object
  local v, err, code = c:logs{ cursor = srv.url .. "/ratelimit?key=okta-rl&fails=1" }
  t:eq(code, "ERESPONSE", "the 200 body is an object, not a page: " .. tostring(err))
  t:eq(v, nil)
  local st = srv:stats("okta-rl")
  t:eq(st.attempts, 2)
  t:eq(st.requests[1]["x-okta-retry-count"], nil)
  t:eq(st.requests[2]["x-okta-retry-count"], "1")
  t:eq(st.requests[2]["x-okta-retry-for"], "req-okta-rl-1")
  t:eq(st.requests[2]["authorization"], "SSWS s3cr3t")
  -- by the server's clock: the 429 said reset = floor(first arrival) + 1; the
  -- retry came after it, the client having waited reset - Date + 1 = 2 s
  local first, again = st.times[1], st.times[2]
  local reset = math.floor(first) + 1
  t:ok(again >= reset, ("the retry came after the reset: %.3f >= %d"):format(again, reset))
  t:ok(again - first >= 1.9, ("waited reset - Date + 1 = 2 s: %.3f s"):format(again - first))
  t:eq(c:budget()["other"].rate_limited, 1)
end)

test("concurrency limit: in-flight requests stay under it (the org's 429s prove it)", function(t)
  -- the simulator answers 429 (Limit 0, Remaining 0) beyond 3 requests in flight
  sim:faults{ okta_concurrency = 3, latency_ms = 100 }
  sim:clear_requests()
  do
    local c <close> = S.client(sim, { app_id = S.APP, concurrency = 3 }, { timeout = 30, per_host = 16 })
    local t0 = time.monotonic()
    local snap = assert(c:scope{})
    local took = time.monotonic() - t0
    t:eq(#snap.users, 20)
    t:same(statuses(), { [200] = 2 + 12 }, "no concurrency 429")
    -- 14 requests of 100 ms, 3 at a time: at least 5 rounds
    t:ok(took >= 0.45, "took " .. took)
  end
  -- the same read with 8 in flight runs into the org's limit: the test can fail
  sim:clear_requests()
  local c <close> = S.client(sim, { app_id = S.APP, concurrency = 8 }, { timeout = 30, per_host = 16,
                                                                            backoff = 0.05 })
  local snap = assert(c:scope{})
  t:eq(#snap.users, 20, "retried to completion")
  t:ok((statuses()[429] or 0) > 0, "over the limit there are 429s")
  sim:faults{}
end)

test("independent listings run concurrently (members of many groups)", function(t)
  -- each request is held 300 ms by the simulator: listings the client sends
  -- together overlap there, however slowly it sends them
  sim:faults{ latency_ms = 300 }
  sim:clear_requests()
  local c <close> = S.client(sim, { app_id = S.APP, concurrency = 8 }, { timeout = 30, per_host = 16 })
  local snap = assert(c:scope{})
  t:eq(#snap.users, 20)
  -- phase 1 (the app's users, the groups) + phase 2 (12 member listings)
  local paths = {}
  for _, r in ipairs(sim:requests()) do
    t:eq(r.status, 200, r.path)
    paths[r.path] = true
  end
  local n = 0
  for _ in pairs(paths) do n = n + 1 end
  t:eq(n, 2 + 12, "every listing was read")
  t:ok(snap.requests >= 14, "the client counts every attempt: " .. snap.requests)
  -- the simulator's own count of requests it served at once
  local peak = sim:inflight().max
  t:ok(peak >= 2, "listings overlapped at the simulator: at most " .. peak .. " at once")
  t:ok(peak <= 8, "never more than the client's concurrency of 8: " .. peak)
  sim:faults{}
end)

test("budget(): per-bucket state for metrics", function(t)
  sim:clear_requests()
  local c <close> = S.client(sim, { app_id = S.APP })
  assert(c:scope{})
  local b = c:budget()
  t:ok(b["/api/v1/apps*"] and b["/api/v1/groups*"], "buckets seen")
  local a = b["/api/v1/apps*"]
  local served = sim:count{ path = "^/api/v1/apps/" }
  t:eq(served, 1, "one page of the app's users")
  t:eq(a.requests, served, "the bucket counts what the simulator served")
  t:eq(a.inflight, 0)
  t:ok(a.limit >= a.remaining and a.reset > 0)
  t:eq(#sim:requests(), 14)
  t:ok(c:requests() >= 14, "the client counts every attempt: " .. c:requests())
end)

return test.done()
