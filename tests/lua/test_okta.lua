-- test_okta.lua: usersync.okta reads against the Okta simulator: paging across
-- page boundaries, the scope snapshot and its request cost, DEPROVISIONED
-- visibility, every error class, faults failing a listing, secrets never in
-- errors, and the example of the binding's doc comment.
local test = require "tap"
local http = require "usersync.http"
local okta = require "usersync.okta"
local fakes = require "support.fakes"
local S = require "support.oktasim"

local sim <close> = fakes.start("okta", { state = S.org{ users = 1 } })

-- Loads st, clears the request log and faults.
local function load(st)
  sim:put_state(st)
  sim:faults{}
  sim:clear_requests()
end

test("doc example: scope with an include predicate, streamed users", function(t)
  load(S.org{ users = { "ACTIVE", "ACTIVE", "DEPROVISIONED", "SUSPENDED" }, groups = 2,
              members = { [1] = { 1, 2 }, [2] = { 2, 4 } }, app = { users = { 1 }, groups = { 2 } } })
  local url = sim.url
  -- (the binding's example, verbatim but for the app id)
  local hc <close> = http.client{ timeout = 30 }
  local c <close> = okta.client(hc, { url = url, token = "test-token", app_id = S.APP })
  local snap, err, code = c:scope{ include = function(g) return g.type ~= "BUILT_IN" end }
  if not snap then error(err .. " (" .. code .. ")") end
  local seen = {}
  for _, u in ipairs(snap.users) do seen[u.profile.login] = #u.groups end
  local n = 0
  assert(c:users({ search = 'status eq "DEPROVISIONED"' }, function(page) n = n + #page end))
  -- users 1 (direct) and 2, 4 (through group 2) are in scope
  t:same(seen, { ["user1@example.com"] = 1, ["user2@example.com"] = 2, ["user4@example.com"] = 1 })
  t:eq(n, 1, "the DEPROVISIONED user is seen through search")
  t:eq(snap.complete, true)
  t:same(snap.problems, {})
  t:eq(snap.groups[S.gid(1)].profile.name, "group-1")
end)

test("users: exactly one page, then one over (200 / 201)", function(t)
  for _, n in ipairs{ 200, 201 } do
    load(S.org{ users = n })
    local c <close>, hc = S.client(sim)
    local pages = {}
    local r = assert(c:users(nil, function(items, info) pages[#pages + 1] = #items; t:eq(info.page, #pages) end))
    t:eq(r.items, n)
    t:eq(r.pages, n == 200 and 1 or 2)
    local cnt, reqs = sim:count{ path = "^/api/v1/users$" }
    t:eq(cnt, n == 200 and 1 or 2, "requests for " .. n)
    t:match(reqs[1].query, "^limit=200$")
    if n == 201 then
      t:same(pages, { 200, 1 })
      -- the second request is the next link exactly as given
      t:match(reqs[2].query, "^after=0" .. S.uid(200) .. "&limit=200$")
    end
  end
end)

test("app users: 500 per page (500 / 501), expand=user", function(t)
  for _, n in ipairs{ 500, 501 } do
    load(S.org{ users = n, app = { users = n } })
    local c <close>, hc = S.client(sim, { app_id = S.APP })
    local all = assert(c:app_users())
    t:eq(#all, n)
    t:ok(all[1]._embedded and all[1]._embedded.user, "expand=user")
    local cnt, reqs = sim:count{ path = "^/api/v1/apps/[^/]+/users$" }
    t:eq(cnt, n == 500 and 1 or 2)
    t:match(reqs[1].query, "limit=500")
  end
end)

test("one app user with expand=user: the assignment and the user in one request; 404 when not assigned", function(t)
  load(S.org{ users = 3, app = { users = { 1 } } })
  local c <close>, hc = S.client(sim, { app_id = S.APP })
  local au = assert(c:app_user(S.APP, S.uid(1), { expand = "user" }))
  t:eq(au._embedded.user.id, S.uid(1))
  t:eq(au._embedded.user.profile.login, "user1@example.com")
  local plain = assert(c:app_user(S.APP, S.uid(1)))
  t:eq(plain._embedded, nil, "no user without expand")
  local none, _, code = c:app_user(S.APP, S.uid(2), { expand = "user" })
  t:eq(none, nil)
  t:eq(code, "ENOTFOUND")
  local cnt, reqs = sim:count{ path = "^/api/v1/apps/[^/]+/users/" }
  t:eq(cnt, 3)
  t:eq(reqs[1].query, "expand=user")
  t:raises(function() c:app_user(S.APP, S.uid(1), { expand = "groups" }) end, "expand")
end)

test("group members: 200 per page (200 / 201); the default 1000 is never relied on", function(t)
  for _, n in ipairs{ 200, 201 } do
    load(S.org{ users = n, groups = 1, members = { [1] = n } })
    local c <close>, hc = S.client(sim)
    local got = 0
    local r = assert(c:group_members(S.gid(1), function(items) got = got + #items end))
    t:eq(got, n)
    t:eq(r.pages, n == 200 and 1 or 2)
    local cnt, reqs = sim:count{ path = "/users$" }
    t:eq(cnt, n == 200 and 1 or 2)
    t:match(reqs[1].query, "^limit=200$")
  end
end)

test("one user by id or login, a user's groups, groups, one group", function(t)
  load(S.org{ users = 3, groups = 3, members = { [1] = { 2 }, [3] = { 2 } } })
  local c <close>, hc = S.client(sim)
  t:eq(assert(c:user(S.uid(2))).profile.login, "user2@example.com")
  t:eq(assert(c:user("User2@Example.com")).id, S.uid(2), "login, any case")
  local gs = assert(c:user_groups(S.uid(2)))
  t:eq(#gs, 2)
  t:eq(gs[1].id, S.gid(1))
  t:eq(#assert(c:groups()), 3)
  t:eq(#assert(c:groups{ filter = 'id eq "' .. S.gid(3) .. '"' }), 1)
  t:eq(assert(c:group(S.gid(3))).profile.name, "group-3")
  local cnt, reqs = sim:count{ path = "^/api/v1/groups$" }
  t:eq(cnt, 2)
  t:match(reqs[1].query, "^limit=200$", "groups: 200 per page, not the 10000 default")
end)

test("scope: request cost is ceil(A/500) + ceil(G/200) + members pages of counted groups", function(t)
  -- 1001 users in the app, 201 groups: two counted, of 201 and 3 members
  local members = { [1] = 201, [2] = { 1, 2, 3 } }
  load(S.org{ users = 1001, groups = 201, members = members, app = { users = 1001 } })
  local c <close>, hc = S.client(sim, { app_id = S.APP })
  local snap = assert(c:scope{ group_ids = { S.gid(1), S.gid(2) } })
  t:eq(#snap.users, 1001)
  local counted = 0
  for _ in pairs(snap.groups) do counted = counted + 1 end
  t:eq(counted, 2)
  local u1 = snap.users[1]
  t:eq(u1.id, S.uid(1))
  t:same(u1.groups, { S.gid(1), S.gid(2) })
  t:same(snap.users[300].groups, {})
  t:eq(u1.app_assignment.scope, "USER")
  local by = sim:by_path()
  t:eq(by["GET /api/v1/apps/{id}/users"], 3, "ceil(1001/500)")
  t:eq(by["GET /api/v1/groups"], 2, "ceil(201/200)")
  t:eq(by["GET /api/v1/groups/{id}/users"], 2 + 1, "201 members: 2 pages; 3 members: 1")
  t:eq(#sim:requests(), 3 + 2 + 3, "the simulator served nothing else")
  -- the client's own figure counts every attempt it made (a retried page too)
  t:ok(snap.requests >= 3 + 2 + 3, "snap.requests: " .. snap.requests)
end)

test("scope: the users listing's next page goes before the member lists waiting for a slot", function(t)
  -- one request at a time: 801 users (5 pages of 200) and 3 counted groups
  -- (one page each). The users listing is a chain (each page names the
  -- next): its next page is asked for first, the member lists fill in.
  load(S.org{ users = 801, groups = 3, members = { [1] = { 1 }, [2] = { 2 }, [3] = { 3 } } })
  local c <close>, hc = S.client(sim, { concurrency = 1 })
  local snap = assert(c:scope{})
  t:eq(#snap.users, 801)
  t:same(snap.users[2].groups, { S.gid(2) })
  local order = {}
  for _, r in ipairs(sim:requests()) do
    order[#order + 1] = r.path == "/api/v1/users" and "users" or (r.path:match("^/api/v1/groups/") and "members" or r.path)
  end
  t:same(order, { "/api/v1/groups", "users", "users", "users", "users", "users", "members", "members", "members" })
end)

test("users: the next page is requested before the caller takes the current one (prefetch)", function(t)
  -- 601 users: 4 pages. While the callback holds page k, the request of
  -- page k + 1 has already been sent (the http client counts it), so the
  -- caller's work on a page overlaps the next page's round trip.
  load(S.org{ users = 601 })
  local c <close>, hc = S.client(sim, { concurrency = 1 })
  local sent_during = {}
  local r = assert(c:users(nil, function(items, info)
    sent_during[info.page] = hc:stats().totals.requests
  end))
  t:eq(r.pages, 4)
  t:same(sent_during, { 2, 3, 4, 4 }, "requests sent while each page was in the callback")
  -- the pages are asked in order, each the previous one's next link, once
  local cnt, reqs = sim:count{ path = "^/api/v1/users$" }
  t:eq(cnt, 4)
  t:match(reqs[1].query, "^limit=200$")
  for i = 2, 4 do t:match(reqs[i].query, "^after=0" .. S.uid(200 * (i - 1)) .. "&limit=200$") end
end)

test("users: a prefetched page that fails fails the listing after the pages before it", function(t)
  -- 601 users; the seed makes the first page good and the second garbage
  -- (a malformed 200). The second page was requested while the callback
  -- held the first; its failure ends the listing: the caller sees page 1,
  -- then the error, never a short list taken for the whole; page 3 is
  -- never asked for.
  load(S.org{ users = 601 })
  sim:faults{ garbage_rate = 0.5, seed = 15, fail_path = "^/api/v1/users$" }
  local c <close>, hc = S.client(sim, { concurrency = 1 })
  local pages, sent_during = {}, {}
  local r, err, code = c:users(nil, function(items, info)
    pages[#pages + 1] = #items
    sent_during[#sent_during + 1] = hc:stats().totals.requests
  end)
  t:eq(r, nil)
  t:eq(code, "ERESPONSE")
  t:match(err, "/api/v1/users")
  t:same(pages, { 200 }, "page 1 only")
  t:same(sent_during, { 2 }, "page 2 was on its way while page 1 was taken")
  t:eq(sim:count{ path = "^/api/v1/users$" }, 2, "page 3 never asked for")
  -- the same failure under a scope read: no snapshot (nothing to deprovision from)
  sim:clear_requests()
  sim:faults{ garbage_rate = 0.5, seed = 15, fail_path = "^/api/v1/users$" }
  local snap, _, scode, partial = c:scope{}
  t:eq(snap, nil)
  t:eq(scode, "ERESPONSE")
  t:eq(partial.complete, false)
end)

test("scope without an app: every user incl. DEPROVISIONED, through a filter", function(t)
  load(S.org{ users = { "ACTIVE", "DEPROVISIONED", "STAGED" }, groups = 1, members = { [1] = { 2 } } })
  local c <close>, hc = S.client(sim)
  local snap = assert(c:scope{})
  t:eq(#snap.users, 3)
  t:same(snap.users[2].groups, { S.gid(1) })
  t:eq(snap.users[2].status, "DEPROVISIONED")
  local _, reqs = sim:count{ path = "^/api/v1/users$" }
  t:match(reqs[1].query, "filter=lastUpdated")
  -- a plain listing hides them, as Okta does
  t:eq(#assert(c:users()), 2)
end)

test("scope: a failed page fails the read (complete=false, problems, no snapshot)", function(t)
  load(S.org{ users = 5, groups = 3, members = { [1] = 5, [2] = 5, [3] = 5 }, app = { users = 5 } })
  sim:faults{ garbage_rate = 1.0, fail_path = "^/api/v1/groups/" .. S.gid(2) .. "/users$" }
  local c <close>, hc = S.client(sim, { app_id = S.APP })
  local snap, err, code, partial = c:scope{}
  t:eq(snap, nil)
  t:eq(code, "ERESPONSE")
  t:match(err, "/api/v1/groups/" .. S.gid(2) .. "/users")
  t:eq(partial.complete, false)
  t:eq(partial.problems[1].code, "ERESPONSE")
  -- a dropped connection on the app users' listing, after retries
  sim:faults{ reset_rate = 1.0, fail_path = "^/api/v1/apps/" }
  snap, err, code, partial = c:scope{}
  t:eq(snap, nil)
  t:eq(code, "ECONNRESET")
  t:eq(partial.complete, false)
end)

test("random garbage and dropped connections: a full list or an error, never a short list", function(t)
  load(S.org{ users = 1000 })
  local hc <close> = http.client{ timeout = 30, backoff = 0.01, backoff_max = 0.05 }
  local c <close> = okta.client(hc, { url = sim.url, token = "test-token", retries = 1 })
  local errors, full = 0, 0
  for seed = 1, 8 do
    sim:faults{ garbage_rate = 0.15, reset_rate = 0.1, seed = seed, fail_path = "^/api/v1/users$" }
    local got = 0
    local r, err, code = c:users(nil, function(items) got = got + #items end)
    if r then
      t:eq(r.items, 1000, "seed " .. seed)
      t:eq(got, 1000)
      full = full + 1
    else
      t:ok(code == "ERESPONSE" or code == "ECONNRESET", "seed " .. seed .. ": " .. tostring(code))
      errors = errors + 1
    end
  end
  t:ok(errors > 0, "some reads failed: " .. errors .. " of 8")
  sim:faults{}
end)

test("error classes: codes, status, errorCode, request id", function(t)
  load(S.org{ users = 2 })
  do
    local c <close>, hc = S.client(sim, { token = "s3cr3t-wrong-token" })
    local v, err, code, e = c:users()
    t:eq(v, nil)
    t:eq(code, "EAUTH", "the target clients' code for refused credentials")
    t:eq(e.source, "okta")
    t:eq(e.status, 401)
    t:eq(e.error_code, "E0000011")
    t:match(e.request_id, "^%w+$")
    t:contains(err, "E0000011")
    t:contains(err, e.request_id)
    t:ok(not err:find("s3cr3t", 1, true), "the token is not in the message")
  end
  local c <close>, hc = S.client(sim)
  local v, err, code, e = c:user("nobody@example.com")
  t:eq(code, "ENOTFOUND")
  t:eq(e.error_code, "E0000007")
  t:match(err, "Not found")
  v, err, code, e = c:users{ filter = "nonsense" }
  t:eq(code, "EINVALID")
  t:eq(e.error_code, "E0000031")
  sim:faults{ fail_rate = 1.0, fail_status = 403 }
  v, err, code, e = c:groups()
  t:eq(code, "EFORBIDDEN")
  t:eq(e.error_code, "E0000006")
  sim:faults{ fail_rate = 1.0, fail_status = 500 }
  v, err, code, e = c:groups()
  t:eq(code, "EHTTP")
  t:eq(e.status, 500)
  sim:faults{ okta_html = true }
  v, err, code = c:groups()
  t:eq(code, "ERESPONSE")
  t:match(err, "HTML")
  sim:faults{ garbage_rate = 1.0 }
  v, err, code = c:groups()
  t:eq(code, "ERESPONSE")
  t:match(err, "truncated or malformed")
  sim:faults{ reset_rate = 1.0 }
  local hc2 <close> = http.client{ timeout = 30, backoff = 0.01, backoff_max = 0.05 }
  local c2 <close> = okta.client(hc2, { url = sim.url, token = "test-token" })
  v, err, code = c2:groups()
  t:eq(code, "ECONNRESET")
  sim:faults{}
  -- rate limited for too long: the bucket stays empty beyond the wait cap
  sim:faults{ okta_buckets = { ["/api/v1/users"] = 0 } }
  local c3 <close> = okta.client(hc, { url = sim.url, token = "test-token", retries = 2, max_wait = 1 })
  v, err, code, e = c3:users()
  t:eq(code, "ERATELIMIT")
  t:eq(e.error_code, "E0000047")
  t:eq(e.status, 429)
  sim:faults{}
  -- unreachable
  local c4 <close> = okta.client(hc, { url = "http://127.0.0.1:1", token = "test-token", retries = 0 })
  v, err, code = c4:users()
  t:eq(code, "ECONNREFUSED")
end)

test("a cursor on another origin is never requested (credentials stay home)", function(t)
  load(S.org{ users = 1 })
  local c <close>, hc = S.client(sim, { token = "s3cr3t-token" })
  local v, err, code = c:logs{ cursor = "http://evil.example:1/api/v1/logs?after=1_1" }
  t:eq(v, nil)
  t:eq(code, "EBADLINK")
  t:ok(not err:find("s3cr3t", 1, true))
  t:eq(#sim:requests(), 0)
end)

test("a callback error stops the listing and is returned, not raised", function(t)
  load(S.org{ users = 650 })
  local c <close>, hc = S.client(sim)
  local calls = 0
  local v, err, code = c:users(nil, function() calls = calls + 1; if calls == 2 then error("boom") end end)
  t:eq(v, nil)
  t:eq(code, "ECALLBACK")
  t:contains(err, "boom")
  t:eq(calls, 2)
  -- the third page may have been on its way (prefetched while the callback
  -- held the second; cancelled), the fourth is never asked for
  local n = sim:count{ path = "^/api/v1/users$" }
  t:ok(n == 2 or n == 3, "pages asked for: " .. n)
  v, err, code = c:users(nil, function() c:close() end)
  t:eq(code, "ECALLBACK")
  t:contains(err, "inside one of its callbacks")
  -- the client is still usable afterwards
  t:eq(#assert(c:users()), 650)
end)

test("closing the http client first makes calls fail cleanly", function(t)
  load(S.org{ users = 450 })
  local c, hc = S.client(sim)
  local v, err, code = c:users(nil, function() hc:close() end)
  t:eq(v, nil)
  t:eq(code, "ECANCELED")
  t:raises(function() c:users() end, "closed HTTP client")
  c:close()
  c:close() -- idempotent
  t:raises(function() c:users() end, "closed Okta client")
end)

test("misuse raises: bad config", function(t)
  local hc <close> = http.client{}
  t:raises(function() okta.client(hc, { url = sim.url }) end, "needs `token`")
  t:raises(function() okta.client(hc, { url = sim.url, token = "x", bogus = 1 }) end, "unknown field 'bogus'")
  t:raises(function() okta.client(hc, { url = sim.url, token = "x", budget_share = 2 }) end, "budget_share")
  t:raises(function() okta.client(hc, { url = sim.url, token = "x", oauth = { client_id = "a", private_key = "k" } }) end, "not both")
  t:raises(function() okta.client(hc, { url = sim.url, oauth = { client_id = "a", private_key = "nope" } }) end, "private_key")
  t:raises(function() okta.client({}, { url = sim.url, token = "x" }) end, "Client")
  t:raises(function() okta.client(hc, { url = sim.url, token = "x", timeout = "soon" }) end, "timeout")
  local c <close> = okta.client(hc, { url = sim.url, token = "x", budget_share = "40%",
                                      timeout = "30s", max_wait = 60, type = "okta" })
  t:raises(function() c:app_users() end, "no app_id")
end)

test("check(): every probe ok; a wrong token is 'denied'; an unknown app 'not_found'", function(t)
  load(S.org{ users = 2, app = { users = 1 } })
  local c <close>, hc = S.client(sim, { app_id = S.APP })
  local r = c:check()
  t:eq(r.ok, true)
  t:eq(r.reachable, true)
  t:eq(r.auth.status, "ok")
  for _, k in ipairs{ "users", "groups", "apps", "logs", "app" } do t:eq(r[k].status, "ok", k) end
  t:eq(#sim:requests(), 4, "four one-item probes")
  local c2 <close> = okta.client(hc, { url = sim.url, token = "bad", app_id = "0oaMissing" })
  r = c2:check()
  t:eq(r.ok, false)
  t:eq(r.reachable, true)
  t:eq(r.auth.status, "denied")
  t:eq(r.users.status, "denied")
  local c3 <close> = okta.client(hc, { url = sim.url, token = "test-token", app_id = "0oaMissing" })
  r = c3:check()
  t:eq(r.app.status, "not_found")
  t:eq(r.users.status, "ok")
  t:eq(r.app.message, "the app id 0oaMissing does not exist in this org; find it in the Okta admin console "
    .. "under Applications: the app's URL ends in /instance/ID/")
  -- a URL with a path: every read is a 404, so the credentials were never tried
  local c5 <close> = okta.client(hc, { url = sim.url .. "/admin/dashboard", token = "test-token" })
  r = c5:check()
  t:eq(r.ok, false)
  t:eq(r.users.status, "not_found")
  t:eq(r.auth.status, "unknown")
  t:contains(r.auth.message, "/admin/dashboard answered 404 for /api/v1/users: the Okta URL must be the org's base URL")
  local c4 <close> = okta.client(hc, { url = "http://127.0.0.1:1", token = "test-token", retries = 0 })
  r = c4:check()
  t:eq(r.reachable, false)
  t:eq(r.auth.status, "error")
end)

test("raw primitives: a batch streams each job's pages, then one done per job", function(t)
  load(S.org{ users = 250, groups = 1, members = { [1] = 201 } })
  local raw = require "usersync.okta_raw"
  local hc <close> = http.client{ timeout = 30 }
  local rc <close> = raw.client(hc, { url = sim.url, token = "test-token" })
  local b <close> = rc:batch()
  t:eq(b:submit{ ep = "users", shape = "slim" }, 1)
  t:eq(b:submit{ ep = "group_members", id = S.gid(1), shape = "ids" }, 2)
  t:eq(b:submit{ ep = "user", id = "nobody@example.com" }, 3)
  local pages, done, n = { 0, 0, 0 }, {}, { 0, 0, 0 }
  while true do
    local kind, job, a, b2, c2, d2 = b:next()
    if not kind then break end
    t:eq(done[job], nil, "nothing of a job after its done")
    if kind == "page" then
      pages[job] = pages[job] + 1
      n[job] = n[job] + #a
      t:eq(b2, #a); t:eq(c2, pages[job]); t:eq(d2, pages[job] == 2, "both listings have two pages")
      if job == 1 then t:eq(a[1].credentials, nil, "slim"); t:ok(a[1].profile.login) end
      if job == 2 then t:eq(type(a[1]), "string", "ids only") end
    else
      done[job] = a or { code = c2, source = d2 and d2.source }
    end
  end
  t:same(n, { 250, 201, 0 })
  t:eq(done[1].pages, 2); t:eq(done[1].items, 250)
  t:eq(done[2].pages, 2)
  t:same(done[3], { code = "ENOTFOUND", source = "okta" }, "a job fails alone")
  t:raises(function() rc:close() end, "inside one of its callbacks")
  t:raises(function() b:submit{ ep = "nope" } end, "invalid option")
  t:raises(function() b:submit{ ep = "user" } end, "needs an id")
  b:close()
  b:close()
  t:raises(function() b:next() end, "closed Okta batch")
  rc:close()
end)

return test.done()
