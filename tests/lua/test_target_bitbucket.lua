-- Bitbucket Data Center target client (usersync.target, type "bitbucket")
-- against the Bitbucket simulator: every operation, query-parameter
-- creates, bulk adds, reversed context/itemName, no deactivation, paging at
-- the boundaries, errors, request counts and state after writes.
local test = require "tap"
local http = require "usersync.http"
local json = require "usersync.json"
local target = require "usersync.target"
local sim = require "support.targetsim"

local s <close> = sim.start("bitbucket")
local hc <close> = http.client{ retries = 2, backoff = 0.05, backoff_max = 0.2 }

local function user(name)
  return { name = name, displayName = name:upper(), emailAddress = name .. "@example.com" }
end
local ADMIN = { name = "admin", displayName = "Administrator", emailAddress = "admin@example.com" }

local function reset(st)
  st = st or {}
  local users = { ADMIN }
  for _, u in ipairs(st.users or {}) do users[#users + 1] = u end
  local groups = st.groups or { "stash-users" }
  s:put_state{ users = json.array(users), groups = json.array(groups),
               members = json.object(st.members or {}), license = st.license,
               permissions = st.permissions }
  s:clear()
end

local function new(opts) return sim.client(hc, "bitbucket", s.url, opts) end
local find = sim.find

local function state_user(name)
  return find(s:state().users, function(u) return u.name == name end)
end
local sorted = sim.sorted
local function many(n)
  local us = {}
  for i = 1, n do us[i] = user(("u%03d"):format(i)) end
  return us
end

test("capabilities: no deactivation, bulk adds", function(t)
  local tg <close> = new()
  t:same(tg:capabilities(), { deactivate = false, reactivate = false, rename = true, leads = false,
                              bulk_add = true })
end)

test("create user: query parameters, 204, default group, exists note", function(t)
  reset{ groups = { "stash-users" }, members = {} }
  local tg <close> = new()
  t:same({ tg:create_user{ name = "ann", display_name = "Ann A", email = "ann@example.com" } }, { true })
  local req = s:requests()[1]
  t:eq(req.method, "POST"); t:eq(req.path, "/rest/api/1.0/admin/users"); t:eq(req.status, 204)
  t:match(req.query, "name=ann"); t:match(req.query, "displayName=Ann%%20A")
  t:match(req.query, "password=%x+", "a random password when none is given")
  local u = state_user("ann")
  t:eq(u.displayName, "Ann A"); t:eq(u.emailAddress, "ann@example.com")
  t:same(s:state().members["stash-users"], { "ann" }, "added to the default group")
  t:same({ tg:create_user{ name = "ANN", display_name = "x", email = "x@example.com" } },
         { true, "already exists" })
  local nod <close> = new{ add_to_default_group = false }
  t:ok(nod:create_user{ name = "ben", display_name = "Ben", email = "ben@example.com", password = "pw-1" })
  t:same(s:state().members["stash-users"], { "ann" })
  local ok, msg, code = tg:create_user{ name = "cy", display_name = "Cy", email = "bad",
                                       password = "Sup3r-Secret" }
  t:eq(ok, nil); t:eq(code, "EINVALID"); t:contains(msg, "not a valid e-mail")
  t:eq(msg:find("Sup3r", 1, true), nil, "the password (a query parameter here) is not in the message")
end)

test("update, rename, delete (200 with body); deactivation unsupported without a request", function(t)
  reset{ users = { user("dan"), user("eve") } }
  local tg <close> = new()
  t:ok(tg:update_user("dan", { display_name = "Dan D", email = "dd@example.com" }))
  t:eq(state_user("dan").displayName, "Dan D"); t:eq(state_user("dan").emailAddress, "dd@example.com")
  t:ok(tg:rename_user("dan", "daniel"))
  t:ok(state_user("daniel")); t:eq(state_user("dan"), nil)
  local ok, _, code = tg:rename_user("daniel", "eve")
  t:eq(ok, nil); t:eq(code, "ECONFLICT")
  t:ok(tg:delete_user("eve"))
  t:eq(state_user("eve"), nil)
  t:eq(#s:requests(), 4)
  s:clear()
  local ok2, msg, code2 = tg:deactivate_user("daniel")
  t:eq(ok2, nil); t:eq(code2, "EUNSUPPORTED"); t:contains(msg, "no deactivation")
  ok2, _, code2 = tg:reactivate_user("daniel")
  t:eq(code2, "EUNSUPPORTED")
  t:eq(#s:requests(), 0, "unsupported: no request")
  ok2, msg, code2 = tg:delete_user("admin")
  t:eq(ok2, nil); t:eq(code2, "ECONFLICT"); t:contains(msg, "cannot delete yourself")
  ok2, _, code2 = tg:delete_user("ghost")
  t:eq(code2, "ENOTFOUND")
end)

test("groups: create by query (exists note), delete", function(t)
  reset()
  local tg <close> = new()
  t:same({ tg:create_group("devs") }, { true })
  t:match(s:requests()[1].query, "^name=devs")
  t:same({ tg:create_group("devs") }, { true, "already exists" })
  t:ok(tg:delete_group("devs"))
  t:eq(find(s:state().groups, function(g) return g == "devs" end), nil)
  local ok, _, code = tg:delete_group("devs")
  t:eq(ok, nil); t:eq(code, "ENOTFOUND")
end)

test("bulk add: one add-users request; failure falls back to per-user outcomes", function(t)
  reset{ users = many(3), groups = { "stash-users", "g" }, members = { g = { "u001" } } }
  local tg <close> = new()
  local ok, res = tg:add_members("g", { "u001", "u002", "u003" })
  t:eq(ok, true); t:eq(res.u002.ok, true)
  t:eq(#s:requests(), 1); t:eq(s:requests()[1].path, "/rest/api/1.0/admin/groups/add-users")
  t:same(s:state().members.g, { "u001", "u002", "u003" })
  reset{ users = many(2), groups = { "stash-users", "g" } }
  local ok2, msg, code, res2 = tg:add_members("g", { "u001", "ghost", "u002" })
  t:eq(ok2, nil); t:eq(code, "ENOTFOUND"); t:contains(msg, "ghost")
  t:eq(res2.u001.ok, true); t:eq(res2.ghost.ok, false); t:eq(res2.u002.ok, true)
  t:eq(#s:requests(), 4, "1 bulk + 3 single")
  t:same(s:state().members.g, { "u001", "u002" })
  -- one user into many groups
  reset{ users = many(1), groups = { "stash-users", "a", "b" } }
  t:ok(tg:add_to_groups("u001", { "a", "b" }))
  t:eq(s:requests()[1].path, "/rest/api/1.0/admin/users/add-groups")
  t:same(s:state().members.a, { "u001" }); t:same(s:state().members.b, { "u001" })
  t:same({ tg:add_member("a", "u001") }, { true }, "existing member: plain success")
end)

test("licence limit: 403 on create and adds is ESEATS with Bitbucket's message", function(t)
  reset{ users = many(4), groups = { "stash-users", "devs" },
         members = { ["stash-users"] = { "admin", "u001" } }, license = { seats = 3 } }
  local tg <close> = new()
  -- create with the default group: the third seat, then none left
  t:same({ tg:create_user{ name = "ann", display_name = "Ann", email = "ann@example.com", password = "pw-1" } }, { true })
  local ok, msg, code = tg:create_user{ name = "bob", display_name = "Bob", email = "bob@example.com", password = "pw-2" }
  t:eq(ok, nil); t:eq(code, "ESEATS")
  t:eq(msg, "bitbucket: create user bob: HTTP 403: Adding the user to the default group would exceed the server's license limit.")
  t:eq(msg:find("pw-2", 1, true), nil)
  t:eq(state_user("bob"), nil, "not created")
  t:same(s:state().members["stash-users"], { "admin", "ann", "u001" })
  -- a bulk add past the limit: 403, then per-user outcomes, all ESEATS
  s:clear()
  local ok2, msg2, code2, res = tg:add_members("stash-users", { "u002", "u003" })
  t:eq(ok2, nil); t:eq(code2, "ESEATS"); t:contains(msg2, "licensing limit")
  t:eq(res.u002.ok, false); t:eq(res.u002.code, "ESEATS"); t:eq(res.u003.code, "ESEATS")
  t:eq(#s:requests(), 3, "1 bulk + 2 single")
  t:same(s:state().members["stash-users"], { "admin", "ann", "u001" })
  -- one seat freed: of two users only one gets it; each outcome is its own
  t:ok(tg:remove_member("stash-users", "ann"))
  s:clear()
  ok2, msg2, code2, res = tg:add_members("stash-users", { "u002", "u003" })
  t:eq(ok2, nil); t:eq(code2, "ESEATS")
  t:eq((res.u002.ok and 1 or 0) + (res.u003.ok and 1 or 0), 1, "exactly one seat was free")
  t:eq(#s:state().members["stash-users"], 3)
  t:eq(#s:requests(), 3)
  -- add_to_groups into a licence-granting group, and a non-granting group is free
  local u = res.u002.ok and "u003" or "u002"
  ok2, msg2, code2 = tg:add_to_groups(u, { "stash-users" })
  t:eq(ok2, nil); t:eq(code2, "ESEATS"); t:contains(msg2, "HTTP 403")
  t:ok(tg:add_to_groups(u, { "devs" }))
  t:same(s:state().members.devs, { u })
end)

test("remove member: remove-group with context = user, itemName = group", function(t)
  reset{ users = many(1), groups = { "stash-users", "g" }, members = { g = { "u001" } } }
  local tg <close> = new()
  t:ok(tg:remove_member("g", "u001"))
  t:same(s:state().members.g, {})
  t:eq(s:requests()[1].path, "/rest/api/1.0/admin/users/remove-group")
  local ok, _, code = tg:remove_member("nogroup", "u001")
  t:eq(ok, nil); t:eq(code, "ENOTFOUND")
end)

test("get: exact name out of a substring filter, groups from more-members", function(t)
  reset{ users = { user("al"), user("alan"), user("sal") }, groups = { "stash-users", "x" },
         members = { x = { "al" }, ["stash-users"] = { "al", "alan" } } }
  local tg <close> = new()
  local a = assert(tg:get("AL"))
  t:eq(a.name, "al"); t:eq(a.active, true); t:same(sorted(a.groups), { "stash-users", "x" })
  t:eq(#s:requests(), 2)
  local ok, _, code = tg:get("ghost")
  t:eq(ok, nil); t:eq(code, "ENOTFOUND")
end)

test("paging: isLastPage/nextPageStart at the boundary", function(t)
  reset{ users = many(2) } -- 3 with admin
  local tg <close> = new{ page_size = 3 }
  local n, pages = 0, 0
  t:ok(tg:accounts(function(p) pages = pages + 1; n = n + #p end))
  -- counted by path: the test before abandons a more-members request when its
  -- get of a missing user fails, and a loaded server may log it after the clear
  t:eq(n, 3); t:eq(pages, 1); t:eq(s:distinct("GET", "/admin/users$"), 1)
  reset{ users = many(3) }
  n, pages = 0, 0
  t:ok(tg:accounts(function(p) pages = pages + 1; n = n + #p end))
  t:eq(n, 4); t:eq(pages, 2); t:eq(s:distinct("GET", "/admin/users$"), 2)
  local second = {}
  for _, r in ipairs(s:requests()) do if r.path:find("/admin/users$") then second[#second + 1] = r end end
  t:match(second[2].query, "start=3")
  reset{ users = many(4), groups = { "stash-users", "g" }, members = { g = { "u001", "u002", "u003", "u004" } } }
  local got = {}
  t:ok(tg:members("g", function(p) for _, a in ipairs(p) do got[#got + 1] = a.name end end))
  t:eq(#got, 4); t:eq(s:distinct("GET", "/more%-members$"), 2)
end)


-- Paging as the spec allows it (support.targetsim's PAGING readings).
local PAGING, fault_name, collect = sim.PAGING, sim.fault_name, sim.collect

test("paging: every spec reading of start/limit/isLastPage/nextPageStart", function(t)
  for _, n in ipairs{ 6, 7 } do
    local us, names = many(n - 1), {}
    for _, u in ipairs(us) do names[#names + 1] = u.name end
    reset{ users = us, groups = { "stash-users", "g" }, members = { g = names } }
    local all = { "admin" }
    for _, x in ipairs(names) do all[#all + 1] = x end
    sorted(all)
    local tg <close> = new{ page_size = 3 }
    for _, f in ipairs(PAGING) do
      local label = ("%d items, %s"):format(n, fault_name(f))
      s:faults(f)
      local ok, msg, got = collect(function(cb) return tg:accounts(cb) end)
      t:ok(ok, label .. ": " .. tostring(msg)); t:same(got, all, "accounts, " .. label)
      ok, msg, got = collect(function(cb) return tg:members("g", cb) end)
      t:ok(ok, label .. ": " .. tostring(msg)); t:same(got, sorted(names), "members, " .. label)
      local a = tg:get(names[#names])
      t:ok(a and a.name == names[#names], "get through a paged filter, " .. label)
      s:faults{}
    end
  end
end)

test("snapshot: request count and shape", function(t)
  reset{ users = many(4), groups = { "stash-users", "g1", "g2", "g3" },
         members = { g1 = { "u001", "u002", "u003", "u004" }, g2 = { "u004" } } }
  local tg <close> = new{ page_size = 3 }
  local snap = assert(tg:snapshot())
  t:eq(#snap.accounts, 5); t:eq(#snap.groups, 4)
  local by = {}
  for _, a in ipairs(snap.accounts) do by[a.name] = a end
  t:same(sorted(by.u004.groups), { "g1", "g2" }); t:same(by.admin.groups, {})
  -- users 5/3 = 2, groups 4/3 = 2, members: g1 2, g2 1, g3 1, stash-users 1
  -- what Bitbucket served, each distinct request once (a GET retried after a
  -- dropped keep-alive connection on a loaded machine is the same request)
  t:eq(s:distinct("GET", "^/rest/api/1.0/admin/"), 2 + 2 + 2 + 1 + 1 + 1)
  t:ok(snap.requests >= 9, "the client counts every request it made: " .. snap.requests)
end)

test("apply: add_member ops of one group go out as one bulk request", function(t)
  reset{ users = many(3), groups = { "stash-users" } }
  local tg <close> = new()
  local ops = {
    { kind = "create_group", group = "team" },
    { kind = "add_member", group = "team", name = "u001" },
    { kind = "add_member", group = "team", name = "u002" },
    { kind = "add_member", group = "team", name = "u003" },
    { kind = "deactivate_user", name = "u003" },
  }
  local res = {}
  local sum = tg:apply(ops, function(op, ok, info, code) res[#res + 1] = { op.kind, ok, code } end)
  t:eq(sum.ok, 4); t:eq(sum.failed, 1)
  t:eq(s:count("POST", "add%-users"), 1)
  t:same(s:state().members.team, { "u001", "u002", "u003" })
  t:same(res[#res], { "deactivate_user", nil, "EUNSUPPORTED" })
end)

test("auth, rate-limit headers, check", function(t)
  reset()
  local tok <close> = new{ token = "test-token" }
  t:ok(tok:create_group("via-token"))
  local bad <close> = new{ password = "wrong" }
  local ok, msg, code = bad:create_group("x")
  t:eq(ok, nil); t:eq(code, "EAUTH"); t:contains(msg, "Authentication failed")
  reset{ users = many(5) }
  local tg <close> = new{ page_size = 1 }
  s:faults{ rate_limit_per_min = 120, rate_limit_burst = 2 }
  local n = 0
  t:ok(tg:accounts(function(p) n = n + #p end))
  s:faults{}
  t:eq(n, 6)
  local c = tg:check()
  t:eq(c.reachable, true); t:eq(c.product, "Bitbucket"); t:eq(c.version, "9.5.0")
  t:eq(c.user, "admin"); t:eq(c.admin, true); t:eq(c.detail, "global permission SYS_ADMIN")
  t:eq(s:count("GET", "admin/permissions/users$"), 1)
  reset{ users = { user("ann") }, permissions = { admin = "ADMIN", ann = "SYS_ADMIN" } }
  c = tg:check()
  t:eq(c.admin, true); t:eq(c.detail, "global permission ADMIN")
  -- a token names no user: the X-AUSERNAME header of the answers does
  c = tok:check()
  t:eq(c.user, "admin"); t:eq(c.admin, true); t:eq(c.detail, "global permission ADMIN")
  -- signed in but not an administrator: Bitbucket's 401 AuthorisationException is a NO, not
  -- refused credentials; wrong credentials stay EAUTH with admin rights unknown
  reset{ permissions = { admin = "PROJECT_CREATE" } }
  c = tg:check()
  t:eq(c.reachable, true); t:eq(c.user, "admin"); t:eq(c.admin, false)
  t:eq(c.detail, "needs ADMIN or SYS_ADMIN global permission"); t:eq(c.code, nil)
  c = bad:check()
  t:eq(c.admin, nil); t:eq(c.code, "EAUTH")
end)

test("429 after the engine's retries ran out is ERATELIMIT", function(t)
  reset{ groups = { "stash-users", "g" } }
  local hc0 <close> = http.client{ retries = 0 }
  local tg <close> = target.new(hc0, { type = "bitbucket", url = s.url, user = "admin", password = "admin" })
  -- one token a minute: the second request finds the bucket empty however slow the machine
  s:faults{ rate_limit_per_min = 1, rate_limit_burst = 1 }
  local r = tg:apply({ { kind = "create_group", group = "a" }, { kind = "create_group", group = "b" } })
  s:faults{}
  t:eq(r.ok, 1); t:eq(r.failed, 1)
  local bad = r.results[1].ok and r.results[2] or r.results[1]
  t:eq(bad.code, "ERATELIMIT"); t:contains(bad.message, "HTTP 429")
  t:contains(bad.message, "rate limited")
end)

return test.done()
