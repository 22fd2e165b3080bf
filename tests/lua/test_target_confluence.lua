-- Confluence Data Center target client (usersync.target, type "confluence")
-- against the Confluence simulator: every operation, _links.next paging,
-- lower-case user names, seat limit (402), 409 "already exists",
-- asynchronous delete followed to completion, no rename, errors, request
-- counts and state after writes. The simulator runs under the /confluence
-- context path (reference section 0), so the configured url includes it.
local test = require "tap"
local http = require "usersync.http"
local json = require "usersync.json"
local target = require "usersync.target"
local sim = require "support.targetsim"

local CTX = "/confluence"
local s <close> = sim.start("confluence", { state = { context = CTX } })
local hc <close> = http.client{ retries = 2, backoff = 0.05, backoff_max = 0.2 }

local function user(name, disabled)
  return { username = name, displayName = name:upper(), email = name .. "@example.com",
           disabled = disabled or false }
end
local ADMIN = { username = "admin", displayName = "Administrator", email = "admin@example.com" }

local function reset(st)
  st = st or {}
  local users = { ADMIN }
  for _, u in ipairs(st.users or {}) do users[#users + 1] = u end
  local groups = st.groups or { "confluence-administrators", "confluence-users" }
  local members = st.members or {}
  members["confluence-administrators"] = members["confluence-administrators"] or { "admin" }
  local state = { users = json.array(users), groups = json.array(groups), members = json.object(members) }
  if st.seats then state.license = { seats = st.seats } end
  state.context = st.context or CTX
  s:put_state(state)
  s:clear()
end

local function new(opts) return sim.client(hc, "confluence", s.url .. CTX, opts) end
local find = sim.find

local function state_user(name)
  return find(s:state().users, function(u) return u.username == name end)
end
local sorted = sim.sorted
local function many(n)
  local us = {}
  for i = 1, n do us[i] = user(("u%03d"):format(i)) end
  return us
end

test("capabilities: no rename", function(t)
  local tg <close> = new()
  t:same(tg:capabilities(), { deactivate = true, reactivate = true, rename = false, leads = false,
                              bulk_add = false })
end)

test("create user: lower-case name, 201, exists note, seat limit 402", function(t)
  reset()
  local tg <close> = new()
  t:same({ tg:create_user{ name = "Ann.Lee", display_name = "Ann Lee", email = "ann@example.com" } }, { true })
  local u = state_user("ann.lee")
  t:ok(u, "stored in lower case"); t:eq(u.displayName, "Ann Lee"); t:eq(u.email, "ann@example.com")
  t:same({ tg:create_user{ name = "ann.lee", display_name = "x", email = "x@example.com" } },
         { true, "already exists" })
  reset{ seats = 1 }
  local ok, msg, code = tg:create_user{ name = "bob", display_name = "Bob", email = "bob@example.com" }
  t:eq(ok, nil); t:eq(code, "ESEATS"); t:contains(msg, "HTTP 402"); t:contains(msg, "licence user limit")
  t:eq(state_user("bob"), nil)
  ok, msg, code = tg:create_user{ name = "bad name", display_name = "B", email = "b@example.com" }
  t:eq(code, "EINVALID"); t:contains(msg, "invalid characters")
end)

test("reactivate past the seat limit is ESEATS (402)", function(t)
  reset{ users = { user("ivy"), user("jon", true) }, seats = 2 }
  local tg <close> = new()
  local ok, msg, code = tg:reactivate_user("jon")
  t:eq(ok, nil); t:eq(code, "ESEATS")
  t:eq(msg, "confluence: reactivate user jon: HTTP 402: Cannot enable user 'jon': the licence user limit (2) has been reached")
  t:eq(state_user("jon").disabled, true)
  t:ok(tg:deactivate_user("ivy"))
  t:ok(tg:reactivate_user("jon")); t:eq(state_user("jon").disabled, false)
  t:eq(s:count("PUT", "/admin/user/"), 3)
end)

test("context path: every request under /confluence, _links.next followed from the base", function(t)
  reset{ users = many(7), groups = { "confluence-administrators", "g" },
         members = { g = { "u001", "u002", "u003", "u004", "u005" } } }
  local tg <close> = new{ page_size = 2 }
  local got = {}
  t:ok(tg:members("g", function(p) for _, a in ipairs(p) do got[#got + 1] = a.name end end))
  t:same(got, { "u001", "u002", "u003", "u004", "u005" })
  local starts = {}
  for _, r in ipairs(s:requests()) do
    t:eq(r.path:sub(1, #CTX + 10), CTX .. "/rest/api/", r.path)
    t:eq(r.status, 200)
    if r.path:find("/group/g/member$") then starts[#starts + 1] = r.query:match("start=(%d+)") or "0" end
  end
  t:same(starts, { "0", "2", "4" }, "three pages, each once")
  local snap = assert(tg:snapshot())
  t:eq(#snap.accounts, 8)
  -- a url without the context path reaches the container's HTML 404: a clear error
  local wrong <close> = target.new(hc, { type = "confluence", url = s.url, user = "admin", password = "admin" })
  local ok, msg, code = wrong:groups(function() end)
  t:eq(ok, nil); t:eq(code, "ENOTFOUND")
  t:contains(msg, "HTTP 404: HTML page instead of JSON: HTTP Status 404 - Not Found")
  -- a trailing slash in the configured url changes nothing
  local slash <close> = new{ url = s.url .. CTX .. "/", page_size = 2 }
  got = {}
  t:ok(slash:members("g", function(p) for _, a in ipairs(p) do got[#got + 1] = a.name end end))
  t:eq(#got, 5)
  -- the root context still works when configured so
  reset{ users = many(3), context = "" }
  local root <close> = new{ url = s.url, page_size = 2 }
  snap = assert(root:snapshot())
  t:eq(#snap.accounts, 4)
end)

test("update, disable/enable (204, idempotent), rename unsupported", function(t)
  reset{ users = { user("cat") } }
  local tg <close> = new()
  t:ok(tg:update_user("cat", { display_name = "Cat C", email = "cc@example.com" }))
  t:eq(state_user("cat").displayName, "Cat C"); t:eq(state_user("cat").email, "cc@example.com")
  t:ok(tg:deactivate_user("cat")); t:eq(state_user("cat").disabled, true)
  t:ok(tg:deactivate_user("cat")); t:eq(state_user("cat").disabled, true)
  t:ok(tg:reactivate_user("cat")); t:eq(state_user("cat").disabled, false)
  t:eq(s:count("PUT", "/admin/user/cat"), 4)
  s:clear()
  local ok, msg, code = tg:rename_user("cat", "kat")
  t:eq(ok, nil); t:eq(code, "EUNSUPPORTED"); t:contains(msg, "cannot rename")
  t:eq(#s:requests(), 0)
  ok, _, code = tg:deactivate_user("ghost")
  t:eq(code, "ENOTFOUND")
end)

test("delete: 202 long task polled to completion", function(t)
  reset{ users = { user("dora") }, groups = { "confluence-administrators", "g" }, members = { g = { "dora" } } }
  local tg <close> = new()
  t:same({ tg:delete_user("dora") }, { true })
  t:eq(state_user("dora"), nil, "gone when the call returns")
  t:same(s:state().members.g, {})
  local polls = s:count("GET", "/rest/api/longtask/")
  t:ok(polls >= 1 and polls <= 4, "polled " .. polls .. " times")
  t:eq(s:count("DELETE", "/admin/user/dora"), 1)
  local ok, _, code = tg:delete_user("dora")
  t:eq(ok, nil); t:eq(code, "ENOTFOUND")
  ok, _, code = tg:delete_user("admin")
  t:eq(code, "EFORBIDDEN")
end)

test("delete: a long task that does not finish in time is ETIMEOUT_TASK", function(t)
  reset{ users = { user("eli") } }
  -- (the budget sits between two polls, 0.35 s from the first: requests as
  -- slow as a loaded machine or valgrind makes them do not change the count)
  local tg <close> = new{ task_wait = 0.55 }
  -- pin the simulated clock so the task cannot finish by time; polls alone finish it
  -- on the third poll, so keep the polling budget below that
  s:call("PUT", "/__fake/clock", { now = 1700000000 })
  local ok, msg, code = tg:delete_user("eli")
  s:call("PUT", "/__fake/clock", { now = json.null })
  -- polls at +0.2 s and +0.6 s: the second answer is past the 0.55 s budget
  t:eq(ok, nil); t:eq(code, "ETIMEOUT_TASK"); t:contains(msg, "did not finish")
  t:eq(s:count("GET", "/longtask/"), 2)
end)

test("delete: a failed long task is ETASK_FAILED with its message; the user stays", function(t)
  reset{ users = { user("fin") } }
  s:faults{ confluence_longtask = "fail" }
  local tg <close> = new()
  local ok, msg, code = tg:delete_user("fin")
  s:faults{}
  t:eq(ok, nil); t:eq(code, "ETASK_FAILED")
  t:eq(msg, "confluence: delete user fin (long task): the long task failed: Failed to delete user fin: "
         .. "the user could not be removed from the user directory.")
  t:ok(state_user("fin"), "still there")
  t:eq(s:count("DELETE", "/admin/user/fin"), 1)
  local polls = s:count("GET", "/longtask/")
  t:ok(polls >= 1 and polls <= 4, "polled " .. polls .. " times")
end)

test("delete: a stalled long task is ETIMEOUT_TASK with its progress", function(t)
  reset{ users = { user("gus") } }
  s:faults{ confluence_longtask = "stall" }
  local tg <close> = new{ task_wait = 1.3 }
  local ok, msg, code = tg:delete_user("gus")
  s:faults{}
  t:eq(ok, nil); t:eq(code, "ETIMEOUT_TASK")
  t:contains(msg, "did not finish within 1.3 s (still at 50 %); it may still complete")
  t:ok(state_user("gus"), "still there")
  -- polls at +0.2, +0.6, +1.4 s (backoff doubling): the third is past the
  -- budget, which leaves 0.7 s for the requests' own time before it
  t:eq(s:count("GET", "/longtask/"), 3)
end)

test("groups: create 200 (exists 409 note), delete 204; membership idempotent", function(t)
  reset{ users = { user("fay") } }
  local tg <close> = new()
  t:same({ tg:create_group("Team") }, { true })
  t:ok(find(s:state().groups, function(g) return g == "team" end), "stored in lower case")
  t:same({ tg:create_group("team") }, { true, "already exists" })
  t:same({ tg:add_member("team", "fay") }, { true })
  t:same({ tg:add_member("team", "fay") }, { true })
  t:same(s:state().members.team, { "fay" })
  t:ok(tg:remove_member("team", "fay")); t:same(s:state().members.team, {})
  t:ok(tg:remove_member("team", "fay"))
  local ok, res = tg:add_members("team", { "fay", "admin" })
  t:eq(ok, true); t:eq(res.fay.ok, true)
  t:same(sorted(s:state().members.team), { "admin", "fay" })
  t:ok(tg:delete_group("team"))
  local ok2, msg, code = tg:delete_group("confluence-administrators")
  t:eq(ok2, nil); t:eq(code, "EINVALID"); t:contains(msg, "last group")
  ok2, _, code = tg:add_member("nogroup", "fay")
  t:eq(code, "ENOTFOUND")
end)

test("get: status and memberof", function(t)
  reset{ users = { user("gil", true) }, groups = { "confluence-administrators", "a", "b" },
         members = { a = { "gil" }, b = { "gil" } } }
  local tg <close> = new()
  local a = assert(tg:get("gil"))
  t:eq(a.name, "gil"); t:eq(a.active, false); t:eq(a.email, nil, "Confluence hides e-mail")
  t:same(sorted(a.groups), { "a", "b" })
  t:eq(s:distinct("GET", "/rest/api/user"), 2, "the user and its memberof page")
  local ok, _, code = tg:get("ghost")
  t:eq(ok, nil); t:eq(code, "ENOTFOUND")
end)

test("paging: _links.next at the boundary, disabled users included", function(t)
  local us = many(2)
  us[1].disabled = true
  reset{ users = us }
  local tg <close> = new{ page_size = 3 }
  local names, pages, inactive = {}, 0, nil
  t:ok(tg:accounts(function(p)
    pages = pages + 1
    for _, a in ipairs(p) do names[#names + 1] = a.name; if a.name == "u001" then inactive = a end end
  end))
  -- counted by path: the test before abandons a memberof request when its
  -- get fails, and a loaded server may log it after this test cleared the log
  t:eq(#names, 3); t:eq(pages, 1); t:eq(s:distinct("GET", "/user/list$"), 1)
  t:eq(inactive.active, false)
  reset{ users = many(3) }
  names, pages = {}, 0
  t:ok(tg:accounts(function(p) pages = pages + 1; for _, a in ipairs(p) do names[#names + 1] = a.name end end))
  t:eq(#names, 4)
  -- accounts read ahead: pages at start 3, 6, 9, 12 were asked once the first was full
  t:eq(s:distinct("GET", "/user/list$"), 5); t:eq(pages, 2, "empty pages past the end are not delivered")
  local starts = {}
  for _, r in ipairs(s:requests()) do
    if r.path:find("/user/list$") then starts[#starts + 1] = r.query:match("start=(%d+)") or "0" end
  end
  t:same(sorted(starts), { "0", "12", "3", "6", "9" })
  reset{ users = many(4), groups = { "confluence-administrators", "g" }, members = { g = { "u001", "u002", "u003", "u004" } } }
  local got = {}
  t:ok(tg:members("g", function(p) for _, a in ipairs(p) do got[#got + 1] = a.name end end))
  t:eq(#got, 4); t:eq(s:distinct("GET", "/group/g/member$"), 2)
  local gs = {}
  t:ok(tg:groups(function(p) for _, g in ipairs(p) do gs[#gs + 1] = g end end))
  t:same(sorted(gs), { "confluence-administrators", "g" })
end)


-- Paging as the spec allows it (support.targetsim's PAGING readings).
local PAGING, fault_name, collect = sim.PAGING, sim.fault_name, sim.collect

test("paging: every spec reading of start/limit/size/_links.next (read-ahead included)", function(t)
  for _, n in ipairs{ 6, 7 } do
    local us, names = many(n - 1), {}
    for _, u in ipairs(us) do names[#names + 1] = u.username end
    reset{ users = us, groups = { "confluence-administrators", "g" }, members = { g = names } }
    local all = { "admin" }
    for _, x in ipairs(names) do all[#all + 1] = x end
    sorted(all)
    local tg <close> = new{ page_size = 3 }
    for _, f in ipairs(PAGING) do
      if not f.page_no_flags then -- Confluence has no last-page flag: _links.next decides
        local label = ("%d items, %s"):format(n, fault_name(f))
        s:faults(f)
        local ok, msg, got = collect(function(cb) return tg:accounts(cb) end)
        t:ok(ok, label .. ": " .. tostring(msg)); t:same(got, all, "accounts, " .. label)
        ok, msg, got = collect(function(cb) return tg:members("g", cb) end)
        t:ok(ok, label .. ": " .. tostring(msg)); t:same(got, sorted(names), "members, " .. label)
        s:faults{}
      end
    end
  end
end)

test("snapshot: request count and shape", function(t)
  reset{ users = many(4), groups = { "confluence-administrators", "g1", "g2" },
         members = { g1 = { "u001", "u002", "u003", "u004" }, g2 = { "u004" } } }
  local tg <close> = new{ page_size = 3 }
  local snap = assert(tg:snapshot())
  t:eq(#snap.accounts, 5); t:eq(#snap.groups, 3)
  local by = {}
  for _, a in ipairs(snap.accounts) do by[a.name] = a end
  t:same(sorted(by.u004.groups), { "g1", "g2" }); t:same(by.admin.groups, { "confluence-administrators" })
  t:eq(by.u001.active, true)
  -- users 5/3 = 2 (+3 read ahead), groups 3/3 = 1, members: g1 2, g2 1, admins 1
  -- what the server served, each distinct request once (a GET retried after a
  -- dropped keep-alive connection on a loaded machine is the same request)
  t:eq(s:distinct("GET", "/rest/api/"), 2 + 3 + 1 + 2 + 1 + 1)
  t:ok(snap.requests >= 10, "the client counts every request it made: " .. snap.requests)
end)

test("errors, auth and check", function(t)
  reset()
  local bad <close> = new{ password = "nope" }
  local ok, msg, code = bad:create_group("x")
  t:eq(ok, nil); t:eq(code, "EAUTH")
  t:eq(msg, "confluence: create group x: HTTP 401 (credentials refused): HTML page instead of JSON: Unauthorized (401)")
  t:eq(msg:find("nope", 1, true), nil)
  s:faults{ html_auth_errors = false }
  ok, msg, code = bad:create_group("x")
  s:faults{}
  t:eq(code, "EAUTH"); t:contains(msg, "Authentication failed")
  local c0 = bad:check()
  t:eq(c0.code, "EAUTH"); t:eq(c0.admin, nil)
  local tok <close> = new{ token = "test-token" }
  t:ok(tok:create_group("tok"))
  s:faults{ fail_rate = 1.0, fail_status = 503, fail_path = "/group$" }
  local tg <close> = new()
  ok, msg, code = tg:groups(function() end)
  s:faults{}
  t:eq(ok, nil); t:eq(code, "EHTTP"); t:contains(msg, "HTTP 503 (gave up after retries)")
  local c = tg:check()
  t:eq(c.reachable, true); t:eq(c.product, "Confluence"); t:eq(c.version, "10.0.3")
  t:eq(c.user, "admin"); t:eq(c.admin, true)
  s:put_state{ users = json.array{ ADMIN }, groups = json.array{ "confluence-users" },
               members = json.object{ ["confluence-users"] = { "admin" } }, context = CTX }
  c = tg:check()
  t:eq(c.admin, false)
  local ok2, _, code2 = tg:leads{ "x" }
  t:eq(ok2, nil); t:eq(code2, "EUNSUPPORTED")
end)

return test.done()
