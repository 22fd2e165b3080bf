-- test_okta_limits.lua: rate limits and concurrency of usersync.okta against
-- the simulator: the budget share held back before a 429 (wait computed from
-- the response Date, not the local clock), 429 storms retried after the
-- reset, the in-flight limit, concurrent listings, and budget() figures.
-- The simulator's clock is pinned and moved (PUT /__fake/clock) so that
-- windows reset within seconds.
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
  -- the window (started at T0) ends in 3 s of the simulator's clock; the local
  -- clock would say ~60 s: only the Date header tells the truth
  sim:clock{ advance = 57 }
  assert(c:user(S.uid(5)))                        -- remaining 5 = the share kept for others
  local b = c:budget()["/api/v1/users/{id}"]
  t:eq(b.limit, 10)
  t:eq(b.remaining, 5)
  t:ok(b.reset_in > 1 and b.reset_in <= 5, "reset in ~4 s by Date, got " .. tostring(b.reset_in))
  local t0 = time.monotonic()
  assert(c:user(S.uid(6)))                        -- held until the window resets
  local held = time.monotonic() - t0
  t:ok(held >= 2.0 and held < 10, "held back " .. held .. " s")
  b = c:budget()["/api/v1/users/{id}"]
  t:eq(b.waits >= 1, true, "the governor held a request")
  t:eq(b.rate_limited, 0)
  t:eq(b.remaining, 9, "a new window")
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
  sim:clock{ advance = 57 }
  sim:clear_requests()
  -- 20 users changed since the watermark -> 20 concurrent group listings:
  -- 13 fit, 7 get 429 and are retried after the reset (~4 s by Date)
  local t0 = time.monotonic()
  local ch = assert(c:changes{ watermark = "2000-01-01T00:00:00.000Z" })
  local took = time.monotonic() - t0
  t:eq(#ch.users, 20)
  local st = statuses("/groups$")
  t:ok((st[429] or 0) >= 1, "the storm happened: " .. tostring(st[429]))
  t:eq(st[200], 20, "every listing completed")
  local b = c:budget()["/api/v1/users*"]
  t:eq(b.rate_limited, st[429])
  t:ok(took >= 2 and took < 20, "waited for the reset: " .. took)
  for _, u in ipairs(ch.users) do t:ok(u.groups, "groups attached") end
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
  local t0 = time.monotonic()
  local v, err, code = c:logs{ cursor = srv.url .. "/ratelimit?key=okta-rl&fails=1" }
  local waited = time.monotonic() - t0
  t:eq(code, "ERESPONSE", "the 200 body is an object, not a page: " .. tostring(err))
  t:eq(v, nil)
  local st = srv:stats("okta-rl")
  t:eq(st.attempts, 2)
  t:eq(st.requests[1]["x-okta-retry-count"], nil)
  t:eq(st.requests[2]["x-okta-retry-count"], "1")
  t:eq(st.requests[2]["x-okta-retry-for"], "req-okta-rl-1")
  t:eq(st.requests[2]["authorization"], "SSWS s3cr3t")
  t:ok(waited >= 1.5 and waited < 5, "waited reset - Date + 1 = 2 s: " .. waited)
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
  sim:faults{ latency_ms = 100 }
  sim:clear_requests()
  local c <close> = S.client(sim, { app_id = S.APP, concurrency = 8 }, { timeout = 30, per_host = 16 })
  local t0 = time.monotonic()
  local snap = assert(c:scope{})
  local took = time.monotonic() - t0
  t:eq(snap.requests, 14)
  -- phase 1 (2 listings) + phase 2 (12 listings, 8 at a time): ~3 rounds, not 14
  t:ok(took < 1.0, "concurrent: " .. took .. " s for 14 requests of 100 ms")
  sim:faults{}
end)

test("budget(): per-bucket state for metrics", function(t)
  local c <close> = S.client(sim, { app_id = S.APP })
  assert(c:scope{})
  local b = c:budget()
  t:ok(b["/api/v1/apps*"] and b["/api/v1/groups*"], "buckets seen")
  local a = b["/api/v1/apps*"]
  t:eq(a.requests, 1)
  t:eq(a.inflight, 0)
  t:ok(a.limit >= a.remaining and a.reset > 0)
  t:eq(c:requests(), 14)
end)

return test.done()
