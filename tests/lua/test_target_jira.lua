-- Jira Data Center target client (usersync.target, type "jira") against the
-- Jira simulator: every operation, paging at the boundaries, quirks, errors,
-- request counts and the simulator's state after writes.
local test = require "tap"
local http = require "usersync.http"
local target = require "usersync.target"
local sim = require "support.targetsim"
local json = require "usersync.json"

local s <close> = sim.start("jira")
local hc <close> = http.client{ retries = 2, backoff = 0.05, backoff_max = 0.2 }

local function user(name, extra)
  local u = { name = name, displayName = name:upper(), emailAddress = name .. "@example.com", active = true }
  for k, v in pairs(extra or {}) do u[k] = v end
  return u
end

local ADMIN = user("admin", { displayName = "Administrator", emailAddress = "admin@example.com" })

-- Puts a state (admin always present) and clears the request log.
local function reset(st)
  st = st or {}
  local users = { ADMIN }
  for _, u in ipairs(st.users or {}) do users[#users + 1] = u end
  local groups = st.groups or {}
  local members = st.members or {}
  local hasadm = false
  for _, g in ipairs(groups) do if g == "jira-administrators" then hasadm = true end end
  if not hasadm then
    groups[#groups + 1] = "jira-administrators"
    members["jira-administrators"] = { "admin" }
  end
  local A = json.array
  s:put_state{ users = A(users), groups = A(groups), members = json.object(members),
               projects = A(st.projects or {}), components = A(st.components or {}),
               nested = st.nested and json.object(st.nested) or nil }
  s:clear()
end

local function new(opts) return sim.client(hc, "jira", s.url, opts) end
local find = sim.find

local function state_user(name)
  return find(s:state().users, function(u) return u.name == name end)
end

local sorted = sim.sorted

test("documented example runs", function(t)
  reset()
  local url = s.url
  local tg <close> = target.new(hc, { type = "jira", url = url, user = "admin", password = "admin" })
  t:ok(tg:create_group("devs"))
  t:ok(tg:create_user{ name = "alice", display_name = "Alice", email = "a@x.org" })
  local ok, note = tg:add_member("devs", "alice")
  t:eq(ok, true); t:eq(note, nil)
  ok, note = tg:add_member("devs", "alice")
  t:eq(ok, true); t:eq(note, "already a member")
  local snap = assert(tg:snapshot())
  t:ok(snap.complete)
  local ok2, msg, code = tg:deactivate_user("nobody")
  t:eq(ok2, nil); t:eq(code, "ENOTFOUND"); t:match(msg, "^jira: deactivate user nobody: HTTP 404")
  local seen = {}
  local sum = tg:apply({ { kind = "remove_member", group = "devs", name = "alice" } },
                       function(op, okk, info, c) seen[#seen + 1] = { op.kind, okk, info, c } end)
  t:eq(sum.ok, 1)
  t:same(seen, { { "remove_member", true } })
  t:same(s:state().members.devs, {})
end)

test("capabilities and type", function(t)
  local tg <close> = new()
  t:eq(tg:type(), "jira")
  t:same(tg:capabilities(), { deactivate = true, reactivate = true, rename = true, leads = true,
                              bulk_add = false })
end)

test("create user: one POST, state written, already exists is a note", function(t)
  reset()
  local tg <close> = new()
  t:same({ tg:create_user{ name = "Bob", display_name = "Bob B", email = "bob@example.com" } }, { true })
  local u = state_user("Bob")
  t:ok(u, "user exists"); t:eq(u.displayName, "Bob B"); t:eq(u.emailAddress, "bob@example.com")
  t:eq(s:count("POST", "/rest/api/2/user$"), 1)
  t:same({ tg:create_user{ name = "bob", display_name = "x", email = "x@example.com" } },
         { true, "already exists" })
  t:eq(state_user("Bob").displayName, "Bob B", "existing account untouched")
  local ok, msg, code = tg:create_user{ name = "carl", display_name = "Carl", email = "not-an-email" }
  t:eq(ok, nil); t:eq(code, "EINVALID"); t:contains(msg, "valid email address")
end)

test("update, rename, deactivate, reactivate, delete", function(t)
  reset{ users = { user("dave"), user("erin") } }
  local tg <close> = new()
  t:ok(tg:update_user("dave", { display_name = "Dave D", email = "dd@example.com" }))
  local u = state_user("dave")
  t:eq(u.displayName, "Dave D"); t:eq(u.emailAddress, "dd@example.com")
  t:same({ tg:update_user("dave", {}) }, { true, "nothing to change" })
  t:ok(tg:rename_user("dave", "david"))
  t:ok(state_user("david")); t:eq(state_user("dave"), nil)
  t:ok(tg:deactivate_user("david"))
  t:eq(state_user("david").active, false)
  t:ok(tg:reactivate_user("david"))
  t:eq(state_user("david").active, true)
  t:ok(tg:delete_user("erin"))
  t:eq(state_user("erin"), nil)
  t:eq(#s:requests(), 5, "one request per write, none for an empty update")
  local ok, _, code = tg:delete_user("erin")
  t:eq(ok, nil); t:eq(code, "ENOTFOUND")
end)

test("groups: create (exists note), delete, members add/remove with notes", function(t)
  reset{ users = { user("fay"), user("gus") }, groups = { "g1" }, members = { g1 = { "fay" } } }
  local tg <close> = new()
  t:same({ tg:create_group("g2") }, { true })
  t:same({ tg:create_group("G2") }, { true, "already exists" })
  t:same({ tg:add_member("g1", "fay") }, { true, "already a member" })
  t:same({ tg:add_member("g2", "gus") }, { true })
  t:same({ tg:remove_member("g1", "gus") }, { true, "not a member" })
  t:same({ tg:remove_member("g1", "fay") }, { true })
  local st = s:state()
  t:same(st.members.g1, {}); t:same(st.members.g2, { "gus" })
  t:ok(tg:delete_group("g2"))
  t:eq(find(s:state().groups, function(g) return g == "g2" end), nil)
  local ok, _, code = tg:delete_group("nope")
  t:eq(ok, nil); t:eq(code, "ENOTFOUND")
  ok, _, code = tg:add_member("g1", "nobody")
  t:eq(ok, nil); t:eq(code, "ENOTFOUND")
end)

test("add_members and add_to_groups: one request per item, per-item results", function(t)
  reset{ users = { user("h1"), user("h2") }, groups = { "ga", "gb" }, members = { ga = { "h1" } } }
  local tg <close> = new()
  s:clear()
  local ok, res = tg:add_members("ga", { "h1", "h2" })
  t:eq(ok, true)
  t:eq(res.h1.note, "already a member"); t:eq(res.h2.ok, true)
  t:eq(s:count("POST", "/group/user"), 2)
  local ok2, msg, code, res2 = tg:add_to_groups("h2", { "gb", "missing" })
  t:eq(ok2, nil); t:eq(code, "ENOTFOUND"); t:contains(msg, "missing")
  t:eq(res2.gb.ok, true); t:eq(res2.missing.ok, false)
  t:same(s:state().members.gb, { "h2" })
end)

test("get: account with groups in one request (expand=groups)", function(t)
  reset{ users = { user("ivy", { active = false }) }, groups = { "x", "y" },
         members = { x = { "ivy" }, y = { "ivy" } } }
  local tg <close> = new()
  local a = assert(tg:get("IVY"))
  t:eq(a.name, "ivy"); t:eq(a.active, false); t:eq(a.email, "ivy@example.com")
  t:same(sorted(a.groups), { "x", "y" })
  t:eq(a.raw.key, a.key)
  t:eq(#s:requests(), 1)
  t:match(s:requests()[1].query, "expand=groups")
  local ok, _, code = tg:get("nobody")
  t:eq(ok, nil); t:eq(code, "ENOTFOUND")
end)

-- n users u001..; returns the list
local function many(n, prefix)
  local us = {}
  for i = 1, n do us[i] = user(("%s%03d"):format(prefix or "u", i)) end
  return us
end

test("accounts: cursor pages at the boundary, inactive included", function(t)
  local us = many(2)
  us[2].active = false
  reset{ users = us } -- 3 with admin
  local tg <close> = new{ page_size = 3 }
  local pages, names = 0, {}
  t:ok(tg:accounts(function(page) pages = pages + 1; for _, a in ipairs(page) do names[#names + 1] = a.name end end))
  t:eq(pages, 1); t:eq(#names, 3); t:eq(s:count("GET", "/user/list"), 1, "exactly a page: one request")
  reset{ users = many(3) } -- 4
  pages, names = 0, {}
  t:ok(tg:accounts(function(page) pages = pages + 1; for _, a in ipairs(page) do names[#names + 1] = a.name end end))
  t:eq(pages, 2); t:eq(#names, 4); t:eq(s:count("GET", "/user/list"), 2, "one over: two requests")
  local reqs = s:requests()
  t:match(reqs[2].query, "cursor=")
  -- inactive included
  reset{ users = { user("zed", { active = false }) } }
  local inactive
  tg:accounts(function(page) for _, a in ipairs(page) do if a.name == "zed" then inactive = a end end end)
  t:ok(inactive and inactive.active == false, "inactive account listed with active=false")
end)

test("members: offset pages at the boundary, inactive members asked for", function(t)
  local us = many(4)
  us[1].active = false
  reset{ users = us, groups = { "g" }, members = { g = { "u001", "u002", "u003" } } }
  local tg <close> = new{ page_size = 3 }
  local got = {}
  t:ok(tg:members("g", function(page) for _, a in ipairs(page) do got[#got + 1] = a.name end end))
  t:same(sorted(got), { "u001", "u002", "u003" }, "inactive u001 included")
  t:eq(s:count("GET", "/group/member"), 1)
  t:match(s:requests()[1].query, "includeInactiveUsers=true")
  s:put_state{ users = (function() local l = { ADMIN }; for _, u in ipairs(us) do l[#l + 1] = u end; return l end)(),
               groups = { "g" }, members = { g = { "u001", "u002", "u003", "u004" } } }
  s:clear()
  got = {}
  t:ok(tg:members("g", function(page) for _, a in ipairs(page) do got[#got + 1] = a.name end end))
  t:eq(#got, 4); t:eq(s:count("GET", "/group/member"), 2)
  local ok, _, code = tg:members("nope", function() end)
  t:eq(ok, nil); t:eq(code, "ENOTFOUND")
end)

test("groups: one groups/picker request", function(t)
  reset{ groups = { "a", "b", "c" } }
  local tg <close> = new()
  local got = {}
  t:ok(tg:groups(function(names) for _, g in ipairs(names) do got[#got + 1] = g end end))
  t:same(sorted(got), { "a", "b", "c", "jira-administrators" })
  t:eq(#s:requests(), 1)
end)

test("snapshot: shape, groups per account, request count", function(t)
  local us = many(5)
  us[5].active = false
  reset{ users = us, groups = { "g1", "g2", "empty" },
         members = { g1 = { "u001", "u002", "u003", "u004" }, g2 = { "u005" } } }
  local tg <close> = new{ page_size = 3 }
  local snap = assert(tg:snapshot())
  t:eq(snap.complete, true)
  t:eq(#snap.accounts, 6)
  t:same(sorted(snap.groups), { "empty", "g1", "g2", "jira-administrators" })
  local by = {}
  for _, a in ipairs(snap.accounts) do by[a.name] = a end
  t:same(by.u001.groups, { "g1" }); t:same(by.u005.groups, { "g2" }); t:eq(by.u005.active, false)
  t:same(by.u005, { name = "u005", key = by.u005.key, display_name = "U005",
                    email = "u005@example.com", active = false, groups = { "g2" } })
  -- user/list: 6 accounts / 3 = 2 pages; picker 1; members: g1 4/3 = 2, g2 1, empty 1, admins 1
  -- what the server served, each distinct request once (a GET retried after a
  -- dropped keep-alive connection on a loaded machine is the same request)
  t:eq(s:distinct("GET", "^/rest/api/2/"), 2 + 1 + 2 + 1 + 1 + 1)
  t:ok(snap.requests >= 8, "the client counts every request it made: " .. snap.requests)
end)

test("snapshot: a failed page fails the snapshot", function(t)
  local gs = {}
  for i = 1, 30 do gs[i] = ("g%02d"):format(i) end
  reset{ users = many(4), groups = gs, members = { g01 = { "u001" } } }
  local tg <close> = new{ page_size = 3, concurrency = 2 }
  s:faults{ fail_rate = 1.0, fail_status = 500, fail_path = "group/member" }
  local ok, msg, code = tg:snapshot()
  s:faults{}
  t:eq(ok, nil); t:eq(code, "EHTTP"); t:match(msg, "HTTP 500")
  -- GETs are retried on 5xx (http.h): count the groups asked for, not the attempts
  local groups_asked = {}
  for _, r in ipairs(s:requests()) do
    if r.method == "GET" and r.path:find("group/member") then groups_asked[r.query:match("groupname=([^&]*)") or r.query] = true end
  end
  local n = 0
  for _ in pairs(groups_asked) do n = n + 1 end
  t:ok(n <= 3, "the other groups' requests were dropped, not sent: " .. n)
end)

test("leads: projects and components led by accounts; handover", function(t)
  reset{ users = { user("lead1"), user("lead2"), user("heir") },
         projects = { { key = "ABC", name = "Abc", lead = "lead1" }, { key = "XYZ", name = "Xyz", lead = "admin" } },
         components = { { id = "10001", project = "XYZ", name = "c1", lead = "lead1" },
                        { id = "10002", project = "ABC", name = "c2", lead = "lead2" } } }
  local tg <close> = new()
  local leads = assert(tg:leads{ "LEAD1", "lead2", "heir" })
  t:same(leads.lead1, { projects = { "ABC" }, components = { "10001" } })
  t:same(leads.lead2, { projects = {}, components = { "10002" } })
  t:eq(leads.heir, nil)
  -- counted by path: a request the test before abandoned (its snapshot failed
  -- with requests in flight) may reach a loaded server after the log was cleared
  t:eq(s:distinct("GET", "^/rest/api/2/project"), 1 + 2, "project list + components per project")
  local ok, msg, code = tg:delete_user("lead1")
  t:eq(ok, nil); t:eq(code, "ELEAD"); t:contains(msg, "lead of project(s): ABC")
  ok, msg, code = tg:deactivate_user("lead1")
  t:eq(ok, nil); t:eq(code, "ELEAD")
  s:clear()
  t:ok(tg:handover_lead{ name = "lead1", projects = { "ABC" }, components = { "10001" },
                         to_project_lead = "heir", to_component_lead = "heir" })
  t:eq(#s:requests(), 2)
  local st = s:state()
  t:eq(find(st.projects, function(p) return p.key == "ABC" end).lead, "heir")
  t:eq(find(st.components, function(c) return c.id == "10001" end).lead, "heir")
  t:ok(tg:delete_user("lead1"))
  local ok2, _, code2 = tg:handover_lead{ name = "lead2", components = { "10002" } }
  t:eq(ok2, nil); t:eq(code2, "EINVALID")
end)

test("apply: phases in plan order, results per op, callback under pcall", function(t)
  reset{ users = { user("old"), user("gone") }, groups = {}, members = {} }
  local tg <close> = new()
  local ops = {
    { kind = "delete_user", name = "gone" },
    { kind = "add_member", group = "team", name = "new1" },
    { kind = "create_user", name = "new1", display_name = "N1", email = "n1@example.com" },
    { kind = "create_group", group = "team" },
    { kind = "add_member", group = "team", name = "old" },
    { kind = "update_user", name = "old", changes = { display_name = { from = "OLD", to = "Old One" } } },
    { kind = "link", name = "old" },
    { kind = "deactivate_user", name = "old" },
    { kind = "add_member", group = "team", name = "nobody" },
  }
  local order = {}
  local sum = tg:apply(ops, function(op, ok, info, code)
    order[#order + 1] = op.kind .. ":" .. tostring(ok) .. ":" .. tostring(code)
  end)
  t:eq(sum.ok, 8); t:eq(sum.failed, 1)
  t:eq(order[1], "create_group:true:nil")
  t:eq(order[2], "create_user:true:nil")
  t:eq(order[#order], "delete_user:true:nil")
  local st = s:state()
  t:same(st.members.team, { "new1", "old" })
  t:eq(state_user("old").displayName, "Old One"); t:eq(state_user("old").active, false)
  t:eq(state_user("gone"), nil)
  -- without a callback: results
  local r = tg:apply({ { kind = "create_group", group = "team" }, { kind = "delete_user", name = "nobody" } })
  t:same(r.results[1], { ok = true, note = "already exists" })
  t:eq(r.results[2].ok, false); t:eq(r.results[2].code, "ENOTFOUND")
  -- a failing callback stops the apply
  local ok, msg, code = tg:apply({ { kind = "create_group", group = "zz" } }, function() error("boom") end)
  t:eq(ok, nil); t:eq(code, "ECALLBACK"); t:contains(msg, "boom"); t:contains(msg, "traceback")
  t:raises(function() tg:apply({ { kind = "explode" } }) end, "unknown kind")
end)

test("listing callback error stops the listing: nil, msg, ECALLBACK", function(t)
  reset{ users = many(7) }
  local tg <close> = new{ page_size = 2 }
  local calls = 0
  local ok, msg, code = tg:accounts(function() calls = calls + 1; error("stop here") end)
  t:eq(ok, nil); t:eq(code, "ECALLBACK"); t:contains(msg, "stop here"); t:eq(calls, 1)
  t:ok(#s:requests() <= 2, "no further pages read")
end)

test("auth: bearer PAT works; bad credentials are EAUTH without secrets", function(t)
  reset()
  local tg <close> = new{ token = "test-token" }
  t:ok(tg:create_group("bearer-made"))
  local bad <close> = new{ password = "s3cr3t-pw" }
  s:clear()
  local ok, msg, code = bad:create_group("x")
  -- Jira answers bad credentials with its HTML 401 page (reference 1.3)
  t:eq(ok, nil); t:eq(code, "EAUTH")
  t:eq(msg, "jira: create group x: HTTP 401 (credentials refused): HTML page instead of JSON: Unauthorized (401)")
  t:eq(msg:find("s3cr3t", 1, true), nil, "password not in message")
  t:eq(s:count("POST", "/group$"), 1, "a refused credential is not retried")
  t:same(s:state().groups, { "jira-administrators", "bearer-made" })
  local badtok <close> = new{ token = "wrong-token-xyz" }
  ok, msg, code = badtok:get("admin")
  t:eq(code, "EAUTH"); t:eq(msg:find("wrong-token", 1, true), nil)
  t:contains(msg, "Unauthorized (401)")
  -- listings and snapshots fail the same way, no crash, no ERESPONSE
  ok, msg, code = bad:snapshot()
  t:eq(ok, nil); t:eq(code, "EAUTH"); t:contains(msg, "HTTP 401 (credentials refused)")
  -- the JSON form (fault html_auth_errors = false) reads the same, with Jira's text
  s:faults{ html_auth_errors = false }
  ok, msg, code = bad:create_group("x")
  s:faults{}
  t:eq(code, "EAUTH"); t:contains(msg, "HTTP 401 (credentials refused): You are not authenticated")
  -- Seraph's CAPTCHA challenge after failed logins: an HTML 403 that is really EAUTH
  local good <close> = new()
  s:faults{ jira_captcha = true }
  ok, msg, code = good:get("admin")
  s:faults{}
  t:eq(ok, nil); t:eq(code, "EAUTH")
  t:eq(msg, "jira: get user admin: HTTP 403 (authentication denied: CAPTCHA_CHALLENGE; sign in once "
         .. "in a browser or use a token): HTML page instead of JSON: Forbidden (403)")
  t:raises(function() target.new(hc, { type = "jira", url = s.url, user = "admin" }) end, "credentials")
  t:raises(function() target.new(hc, { type = "jiraa", url = s.url, token = "x" }) end, "type")
  t:raises(function() target.new(hc, { type = "jira", url = "ftp://x", token = "x" }) end, "url")
  t:raises(function() new{ bogus = 1 } end, "unknown key")
end)

test("error classes: 403, 5xx, garbage body, connection refused", function(t)
  reset()
  local tg <close> = new()
  s:faults{ fail_rate = 1.0, fail_status = 403, fail_path = "/group$" }
  local ok, msg, code = tg:create_group("x")
  t:eq(ok, nil); t:eq(code, "EFORBIDDEN"); t:contains(msg, "HTTP 403")
  s:faults{ garbage_rate = 1.0, fail_path = "user/list" }
  ok, msg, code = tg:accounts(function() end)
  t:eq(ok, nil); t:eq(code, "ERESPONSE"); t:contains(msg, "not JSON")
  s:faults{}
  local dead <close> = new{ url = "http://127.0.0.1:1" }
  local hc0 <close> = http.client{ retries = 0 }
  local dead0 <close> = target.new(hc0, { type = "jira", url = "http://127.0.0.1:1", token = "x" })
  ok, msg, code = dead0:get("x")
  t:eq(ok, nil); t:eq(code, "ECONNREFUSED")
  local c = dead0:check()
  t:eq(c.reachable, false); t:eq(c.code, "ECONNREFUSED")
end)

test("HTML and plain-text error pages give a clear error", function(t)
  local html <close> = sim.static(401, "text/html;charset=UTF-8",
    "<html><head><title>Unauthorized (401)</title></head><body>login</body></html>")
  local tg <close> = target.new(hc, { type = "jira", url = html.url, token = "x" })
  local ok, msg, code = tg:get("x")
  t:eq(ok, nil); t:eq(code, "EAUTH"); t:contains(msg, "HTML page instead of JSON: Unauthorized (401)")
  local txt <close> = sim.static(200, "text/plain", "hello")
  local tg2 <close> = target.new(hc, { type = "jira", url = txt.url, token = "x" })
  ok, msg, code = tg2:snapshot()
  t:eq(ok, nil); t:eq(code, "ERESPONSE"); t:contains(msg, "non-JSON body: hello")
end)

test("rate limits: 429 with retry-after honoured, target holds back", function(t)
  reset{ users = many(6) }
  local tg <close> = new{ page_size = 1 }
  s:faults{ rate_limit_per_min = 120, rate_limit_burst = 3 }
  local n = 0
  local ok, msg = tg:accounts(function(p) n = n + #p end)
  s:faults{}
  t:ok(ok, msg); t:eq(n, 7)
  local throttled = 0
  for _, r in ipairs(s:requests()) do if r.status == 429 then throttled = throttled + 1 end end
  t:ok(throttled <= 2, "the governor waits for tokens instead of hammering: " .. throttled .. " 429s")
end)

test("rate limits: an empty bucket (EAP X-RateLimiting-* too) holds the next request", function(t)
  local clock = require("usersync.time").monotonic
  for _, prefix in ipairs{ "X-RateLimit-", "X-RateLimiting-" } do
    local srv <close> = sim.static(200, "application/json", '{"name":"x","key":"x","active":true}', {
      prefix .. "Remaining: 0", prefix .. "FillRate: 2", prefix .. "Interval-Seconds: 1" })
    local tg <close> = target.new(hc, { type = "jira", url = srv.url, token = "x" })
    t:ok(tg:get("x"))
    local t0 = clock()
    t:ok(tg:get("x"))
    local took = clock() - t0
    t:ok(took >= 0.45, ("%s: second request waited %.3f s for a token (1 s / 2)"):format(prefix, took))
  end
  -- tokens left: no hold. A wrong hold here would be Interval / FillRate = 60 s,
  -- so the bound tells the two apart on any machine, valgrind included.
  local srv <close> = sim.static(200, "application/json", '{"name":"x"}', {
    "X-RateLimit-Remaining: 5", "X-RateLimit-FillRate: 1", "X-RateLimit-Interval-Seconds: 60" })
  local tg <close> = target.new(hc, { type = "jira", url = srv.url, token = "x" })
  t:ok(tg:get("x"))
  local t0 = clock()
  t:ok(tg:get("x"))
  t:ok(clock() - t0 < 30, "tokens left: no wait")
end)

test("nested groups: members are the closure; an inherited-only removal is EINHERITED", function(t)
  reset{ users = { user("ann"), user("ben"), user("cy", { active = false }) },
         groups = { "eng", "dev" },
         members = { eng = { "ann" }, dev = { "ben", "cy" } },
         nested = { eng = { "dev" } } }
  local tg <close> = new()
  local got = {}
  t:ok(tg:members("eng", function(p) for _, a in ipairs(p) do got[#got + 1] = a.name end end))
  t:same(sorted(got), { "ann", "ben", "cy" }, "inherited and inactive members included")
  local snap = assert(tg:snapshot())
  local by = {}
  for _, a in ipairs(snap.accounts) do by[a.name] = a end
  t:same(sorted(by.ben.groups), { "dev", "eng" }, "the snapshot sees effective memberships")
  s:clear()
  local ok, msg, code = tg:remove_member("eng", "ben")
  t:eq(ok, nil); t:eq(code, "EINHERITED")
  t:eq(msg, "jira: remove ben from eng: HTTP 404: Cannot remove user 'ben' from group 'eng': the user "
         .. "is not a direct member of the group; the membership comes from the nested group(s) dev.")
  t:eq(#s:requests(), 1); t:eq(s:requests()[1].status, 404)
  t:same(s:state().members.dev, { "ben", "cy" }, "nothing changed")
  -- a plain non-member is still success with a note (Jira 10 answers 404)
  t:same({ tg:remove_member("eng", "admin") }, { true, "not a member" })
  -- adding an inherited member: Jira says "already a member", a success note
  t:same({ tg:add_member("eng", "ben") }, { true, "already a member" })
  t:same(s:state().members.eng, { "ann" })
  -- apply reports the failure per operation
  local sum = tg:apply{ { kind = "remove_member", group = "eng", name = "cy" },
                        { kind = "remove_member", group = "eng", name = "ann" } }
  t:eq(sum.ok, 1); t:eq(sum.failed, 1)
  t:same(s:state().members.eng, {})
end)

test("rate limits: EAP X-RateLimiting-* headers from the simulator hold the target back", function(t)
  reset{ users = many(6) }
  local tg <close> = new{ page_size = 1 }
  s:faults{ rate_limit_per_min = 120, rate_limit_burst = 3, ratelimit_header_prefix = "X-RateLimiting" }
  local n = 0
  local ok, msg = tg:accounts(function(p) n = n + #p end)
  s:faults{}
  t:ok(ok, msg); t:eq(n, 7)
  local throttled = 0
  for _, r in ipairs(s:requests()) do if r.status == 429 then throttled = throttled + 1 end end
  t:ok(throttled <= 2, "EAP names are read too: " .. throttled .. " 429s")
end)

test("injected 429 carries retry-after: the engine waits for it, then ERATELIMIT", function(t)
  reset()
  local clock = require("usersync.time").monotonic
  local hc2 <close> = http.client{ retries = 1, backoff = 0.01, backoff_max = 0.02 }
  local tg <close> = target.new(hc2, { type = "jira", url = s.url, user = "admin", password = "admin" })
  s:faults{ fail_rate = 1.0, fail_status = 429, fail_retry_after = 1 }
  local t0 = clock()
  local ok, msg, code = tg:get("admin")
  local took = clock() - t0
  s:faults{}
  t:eq(ok, nil); t:eq(code, "ERATELIMIT"); t:contains(msg, "HTTP 429 (gave up after retries)")
  t:contains(msg, "Rate limit exceeded")
  t:eq(#s:requests(), 2, "one retry")
  t:ok(took >= 0.9, ("retry-after 1 s honoured (backoff alone is 0.02 s): %.3f s"):format(took))
end)

test("check: reachable, product, version, user, admin", function(t)
  reset()
  local tg <close> = new()
  local c = tg:check()
  t:eq(c.reachable, true); t:eq(c.product, "Jira Server"); t:eq(c.version, "10.3.24")
  t:eq(c.user, "admin"); t:eq(c.admin, true); t:eq(c.type, "jira")
  s:put_state{ users = { ADMIN }, groups = { "other" }, members = { other = { "admin" } } }
  c = tg:check()
  t:eq(c.admin, false); t:eq(c.detail, "no ADMINISTER or SYSTEM_ADMIN global permission")
  local bad <close> = new{ password = "nope" }
  c = bad:check()
  t:eq(c.reachable, true); t:eq(c.code, "EAUTH")
end)

test("get: a server that ignores expand=groups gives unknown groups (nil), never none", function(t)
  reset{ users = { user("ivy") }, groups = { "x" }, members = { x = { "ivy" } } }
  local tg <close> = new()
  s:faults{ jira_ignore_expand = true }
  local a = assert(tg:get("ivy"))
  s:faults{}
  t:eq(a.name, "ivy")
  t:eq(a.groups, nil, "no groups field in the answer: unknown")
  -- Jira's own unexpanded form ("items": [] with the real size) is unknown too
  local srv <close> = sim.static(200, "application/json",
    '{"name":"ivy","key":"k","active":true,"groups":{"size":2,"items":[]}}')
  local tg2 <close> = target.new(hc, { type = "jira", url = srv.url, token = "x" })
  t:eq(assert(tg2:get("ivy")).groups, nil, "size 2 with no items: not expanded")
  local srv2 <close> = sim.static(200, "application/json",
    '{"name":"ivy","key":"k","active":true,"groups":{"size":0,"items":[]}}')
  local tg3 <close> = target.new(hc, { type = "jira", url = srv2.url, token = "x" })
  t:same(assert(tg3:get("ivy")).groups, {}, "size 0: truly no groups")
end)

test("check: admin rights from the global permissions (mypermissions)", function(t)
  reset()
  local tg <close> = new()
  -- a server that ignores expand: the groups say nothing, the permissions do
  s:faults{ jira_ignore_expand = true }
  local c = tg:check()
  t:eq(c.admin, true, "an administrator is an administrator: " .. tostring(c.detail))
  t:eq(c.detail, "global permission ADMINISTER or SYSTEM_ADMIN")
  t:eq(s:distinct("GET", "/mypermissions$"), 1)
  t:match(find(s:requests(), function(r) return r.path:find("mypermissions") end).query,
          "permissions=ADMINISTER,SYSTEM_ADMIN")
  -- admin rights through another group: only the permission tells
  s:put_state{ users = { ADMIN }, groups = { "jira-system-administrators" },
               members = { ["jira-system-administrators"] = { "admin" } } }
  c = tg:check()
  t:eq(c.admin, true)
  s:put_state{ users = { ADMIN }, groups = { "other" }, members = { other = { "admin" } } }
  c = tg:check()
  t:eq(c.admin, false); t:eq(c.detail, "no ADMINISTER or SYSTEM_ADMIN global permission")
  s:faults{}
  -- no readable permissions and no groups: unknown, not NO
  s:faults{ jira_ignore_expand = true, fail_rate = 1.0, fail_status = 404, fail_path = "mypermissions" }
  c = tg:check()
  s:faults{}
  t:eq(c.admin, nil); t:eq(c.reachable, true); t:contains(c.detail, "admin rights unknown")
  -- no readable permissions, groups expanded: the groups decide
  s:faults{ fail_rate = 1.0, fail_status = 404, fail_path = "mypermissions" }
  c = tg:check()
  s:faults{}
  t:eq(c.admin, false); t:contains(c.detail, "not a member of jira-administrators")
end)

test("add member: a 400 is 'already a member' only when the membership says so, in any words", function(t)
  reset{ users = { user("fay"), user("gus"), user("hal") }, groups = { "g1", "kids" },
         members = { g1 = { "fay" }, kids = { "hal" } }, nested = { g1 = { "kids" } } }
  local tg <close> = new()
  s:faults{ jira_reworded = true }
  t:same({ tg:add_member("g1", "fay") }, { true, "already a member" })
  t:eq(s:count("POST", "/group/user$"), 1); t:eq(s:count("GET", "/user$"), 1, "the user's groups read once")
  t:same({ tg:add_member("g1", "hal") }, { true, "already a member" }, "a member through a nested group")
  -- a server that ignores expand: the group's members tell
  s:faults{ jira_reworded = true, jira_ignore_expand = true }
  s:clear()
  t:same({ tg:add_member("g1", "fay") }, { true, "already a member" })
  t:eq(s:distinct("GET", "/group/member$"), 1)
  local ok, res = tg:add_members("g1", { "fay", "gus" })
  t:eq(ok, true); t:eq(res.fay.note, "already a member"); t:eq(res.gus.ok, true)
  s:faults{}
  t:same(s:state().members.g1, { "fay", "gus" })
  -- a 400 for a user who is not a member stands, with the server's words
  s:faults{ fail_rate = 1.0, fail_status = 400, fail_path = "/group/user$" }
  local ok2, msg, code = tg:add_member("kids", "gus")
  s:faults{}
  t:eq(ok2, nil); t:eq(code, "EINVALID"); t:contains(msg, "jira: add gus to kids: HTTP 400: Injected failure")
  t:same(s:state().members.kids, { "hal" })
end)


-- Paging as the spec allows it (support.targetsim's PAGING readings).
local PAGING, fault_name, collect = sim.PAGING, sim.fault_name, sim.collect

test("paging: every spec reading of startAt/maxResults/isLast/total and the cursor", function(t)
  for _, n in ipairs{ 6, 7 } do
    local us, names = many(n - 1), {}  -- n accounts with admin
    for _, u in ipairs(us) do names[#names + 1] = u.name end
    reset{ users = us, groups = { "g" }, members = { g = names } }
    local all = sorted((function() local l = { "admin" }; for _, x in ipairs(names) do l[#l + 1] = x end; return l end)())
    local tg <close> = new{ page_size = 3 }
    for _, f in ipairs(PAGING) do
      local label = ("%d items, %s"):format(n, fault_name(f))
      s:faults(f)
      local ok, msg, got = collect(function(cb) return tg:accounts(cb) end)
      t:ok(ok, label .. ": " .. tostring(msg)); t:same(got, all, "accounts, " .. label)
      ok, msg, got = collect(function(cb) return tg:members("g", cb) end)
      t:ok(ok, label .. ": " .. tostring(msg)); t:same(got, sorted(names), "members, " .. label)
      local snap, err = tg:snapshot()
      t:ok(snap, label .. ": " .. tostring(err))
      local in_g = 0
      for _, a in ipairs(snap and snap.accounts or {}) do
        if a.groups[1] == "g" then in_g = in_g + 1 end
      end
      t:eq(in_g, n - 1, "snapshot memberships, " .. label)
      s:faults{}
    end
  end
end)

test("concurrency limit holds requests of one target", function(t)
  -- Seen from the server: with max_inflight = 3 it refuses (503) a request that
  -- arrives while 3 are being served; 100 ms each keeps them overlapping.
  reset{ groups = { "g" }, users = many(12) }
  local tg <close> = new{ concurrency = 3 }
  s:faults{ latency_ms = 100, max_inflight = 3 }
  local ops = {}
  for i = 1, 12 do ops[i] = { kind = "add_member", group = "g", name = ("u%03d"):format(i) } end
  local clock = require("usersync.time").monotonic
  local t0 = clock()
  local r = tg:apply(ops)
  local took = clock() - t0
  s:faults{}
  t:eq(r.ok, 12)
  t:eq(#s:state().members.g, 12)
  local st = {}
  for _, q in ipairs(s:requests()) do st[q.status] = (st[q.status] or 0) + 1 end
  t:same(st, { [201] = 12 }, "never more than 3 in flight: no 503")
  -- 12 requests, 3 at a time, 100 ms each: at least 4 rounds (a lower bound
  -- holds on any machine)
  t:ok(took >= 0.38, ("12 requests at concurrency 3 took %.3f s"):format(took))
  -- the default (8) does put more than 3 in flight: the same server refuses some
  local tg8 <close> = new()
  s:put_state(s:state()); s:clear()
  for i = 1, 12 do ops[i].kind = "remove_member" end
  s:faults{ latency_ms = 500, max_inflight = 3 } -- a wide window: overlap on any machine
  tg8:apply(ops)
  s:faults{}
  local refused = 0
  for _, q in ipairs(s:requests()) do if q.status == 503 then refused = refused + 1 end end
  t:ok(refused > 0, "default concurrency 8 goes past 3 in flight: " .. refused .. " refused")
end)

return test.done()
