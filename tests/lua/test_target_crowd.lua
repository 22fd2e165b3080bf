-- Crowd target client (usersync.target, type "crowd") against the Crowd
-- simulator (rest/usermanagement/1 under the /crowd context): application
-- Basic auth, every operation, start-index/max-results paging without an end
-- marker, 409 "already a member", full-object PUTs that keep every field,
-- deactivation by active:false, rename, nested groups on removal, errors
-- mapped to the shared codes, check, request counts and state after writes.
local test = require "tap"
local http = require "usersync.http"
local json = require "usersync.json"
local target = require "usersync.target"
local sim = require "support.targetsim"

local CTX = "/crowd"
local API = CTX .. "/rest/usermanagement/1"
local s <close> = sim.start("crowd")
local hc <close> = http.client{ retries = 2, backoff = 0.05, backoff_max = 0.2 }

local function user(name, o)
  o = o or {}
  return { name = name, ["first-name"] = o.first or name, ["last-name"] = o.last or "Tester",
           ["display-name"] = o.display or (name .. " Tester"), email = o.email or (name .. "@example.com"),
           active = o.active ~= false, attributes = o.attributes }
end

local function reset(st)
  st = st or {}
  local state = { users = json.array(st.users or {}), groups = json.array(st.groups or {}),
                  members = json.object(st.members or {}) }
  for _, k in ipairs({ "nested", "directories", "application", "group_info", "allow_email_change" }) do
    state[k] = st[k]
  end
  for g, l in pairs(state.members) do state.members[g] = json.array(l) end
  s:put_state(state)
  s:clear()
end

local function new(opts)
  local cfg = { type = "crowd", url = s.url .. CTX, user = "admin", password = "admin" }
  for k, v in pairs(opts or {}) do cfg[k] = v end
  return target.new(hc, cfg)
end
local find, sorted = sim.find, sim.sorted

local function state_user(name)
  return find(s:state().users, function(u) return u.name:lower() == name:lower() end)
end
local function members(g) return sorted(s:state().members[g] or {}) end
local function many(n)
  local us = {}
  for i = 1, n do us[i] = user(("u%03d"):format(i)) end
  return us
end

test("registry: crowd is a product with deactivate, reactivate and rename", function(t)
  local found
  for _, p in ipairs(target.products()) do if p.type == "crowd" then found = p end end
  t:ok(found, "target.products() lists crowd")
  t:same(found.caps, { deactivate = true, reactivate = true, rename = true, leads = false, bulk_add = false })
  t:ok(require("usersync.targets").CAPS.crowd, "usersync.targets reads it")
end)

test("create user: every name field, a password, 201; an existing name is 'already exists'", function(t)
  reset()
  local tg <close> = new()
  t:same({ tg:create_user{ name = "Ann.Lee", display_name = "Ann Mary Lee", email = "ann@example.com" } }, { true })
  local u = state_user("ann.lee")
  t:eq(u.name, "Ann.Lee"); t:eq(u["display-name"], "Ann Mary Lee"); t:eq(u["first-name"], "Ann Mary")
  t:eq(u["last-name"], "Lee"); t:eq(u.email, "ann@example.com"); t:eq(u.active, true)
  t:same({ tg:create_user{ name = "ann.lee", display_name = "x", email = "x@example.com" } }, { true, "already exists" })
  t:eq(s:count("POST", "/user$"), 2); t:eq(s:count("GET", "/user$"), 1, "the 400 is checked by reading the name")
  -- a 400 for another reason stands: the name is not there
  local ok, msg, code = tg:create_user{ name = "bad", display_name = "B", email = "not-an-email" }
  t:eq(ok, nil); t:eq(code, "EINVALID"); t:contains(msg, "crowd: create user bad: HTTP 400")
  t:contains(msg, "Invalid email address")
  t:eq(state_user("bad"), nil)
end)

test("get: account, raw object and direct groups (an unknown user is ENOTFOUND)", function(t)
  reset{ users = { user("cat", { display = "Cat Power" }) }, groups = { "a", "b", "c" },
         members = { a = { "cat" }, c = { "cat" } } }
  local tg <close> = new()
  local a = assert(tg:get("CAT"))
  t:eq(a.name, "cat"); t:eq(a.display_name, "Cat Power"); t:eq(a.email, "cat@example.com"); t:eq(a.active, true)
  t:same(sorted(a.groups), { "a", "c" })
  t:eq(a.raw["first-name"], "cat")
  t:match(a.key, "^32769:")
  local ok, msg, code = tg:get("nobody")
  t:eq(ok, nil); t:eq(code, "ENOTFOUND"); t:contains(msg, "User <nobody> does not exist")
end)

test("update is GET + full PUT: every field kept, first/last follow a derived display name only", function(t)
  reset{ allow_email_change = true, users = { user("dan", { first = "Dan", last = "Brown", display = "Dan Brown",
                                 attributes = { dept = { "R&D" } } }),
                   user("eve", { first = "Evelyn", last = "Smith-Jones", display = "Eve S" }) } }
  local tg <close> = new()
  t:ok(tg:update_user("dan", { email = "dan@new.example.com" }))
  local u = state_user("dan")
  t:eq(u.email, "dan@new.example.com"); t:eq(u["first-name"], "Dan"); t:eq(u["last-name"], "Brown")
  t:eq(u["display-name"], "Dan Brown", "a field not changed is sent back, not dropped")
  t:same(u.attributes, { dept = { "R&D" } })
  t:eq(s:count("GET", "/user$"), 1); t:eq(s:count("PUT", "/user$"), 1)
  t:ok(tg:update_user("dan", { display_name = "Daniel Brown-Green" }))
  u = state_user("dan")
  t:eq(u["display-name"], "Daniel Brown-Green"); t:eq(u["first-name"], "Daniel"); t:eq(u["last-name"], "Brown-Green")
  t:eq(u.email, "dan@new.example.com")
  -- an admin's own first/last names (not the display name's split) stay
  t:ok(tg:update_user("eve", { display_name = "Eve Smith" }))
  u = state_user("eve")
  t:eq(u["display-name"], "Eve Smith"); t:eq(u["first-name"], "Evelyn"); t:eq(u["last-name"], "Smith-Jones")
  t:same({ tg:update_user("eve", {}) }, { true, "nothing to change" })
  local ok, _, code = tg:update_user("ghost", { email = "g@example.com" })
  t:eq(ok, nil); t:eq(code, "ENOTFOUND")
end)

-- Crowd 4.4 and later refuse an application's e-mail change (403
-- APPLICATION_PERMISSION_DENIED) unless their administrator turned the check off.
test("an e-mail change Crowd refuses: EFORBIDDEN saying so; a display name changed with it is still applied", function(t)
  reset{ users = { user("ida", { first = "ida", last = "lee", display = "ida lee" }) } }
  local tg <close> = new()
  s:clear()
  local ok, msg, code = tg:update_user("ida", { display_name = "ida smith", email = "ida@new.example.com" })
  t:eq(ok, nil); t:eq(code, "EFORBIDDEN")
  t:contains(msg, "update user ida: Crowd refused the e-mail change (HTTP 403: External applications are not allowed to change user emails")
  t:contains(msg, "the other changes were applied without it")
  local u = state_user("ida")
  t:eq(u["display-name"], "ida smith"); t:eq(u["first-name"], "ida"); t:eq(u["last-name"], "smith")
  t:eq(u.email, "ida@example.com", "the e-mail is what Crowd kept")
  t:eq(s:count("GET", "/user$"), 1); t:eq(s:count("PUT", "/user$"), 2, "refused, then sent again without the e-mail")
  -- the e-mail alone: one refused PUT, nothing else sent
  s:clear()
  ok, msg, code = tg:update_user("ida", { email = "ida@new.example.com" })
  t:eq(ok, nil); t:eq(code, "EFORBIDDEN")
  t:contains(msg, "Crowd refused the e-mail change")
  t:ok(not msg:find("other changes", 1, true), msg)
  t:eq(s:count("PUT", "/user$"), 1)
  -- an update that keeps the e-mail (a different case is no change to plan) is not refused
  t:ok(tg:update_user("ida", { display_name = "Ida Smith", email = "ida@example.com" }))
  t:eq(state_user("ida")["display-name"], "Ida Smith")
  -- a directory that allows no update at all: its own 403 stands, no second PUT
  reset{ users = { user("jo") }, directories = { { id = 9, name = "LDAP", permissions = { "CREATE_USER" } } } }
  s:clear()
  ok, msg, code = tg:update_user("jo", { display_name = "Jo X", email = "jo@new.example.com" })
  t:eq(ok, nil); t:eq(code, "EFORBIDDEN"); t:contains(msg, "not allowed to update users")
  t:eq(s:count("PUT", "/user$"), 1)
end)

test("deactivate / reactivate: active false / true in a full PUT, names and e-mail kept", function(t)
  reset{ users = { user("fay", { first = "Fay", last = "Wray", display = "Fay W." }) } }
  local tg <close> = new()
  s:clear()
  t:ok(tg:deactivate_user("fay"))
  local u = state_user("fay")
  t:eq(u.active, false); t:eq(u["first-name"], "Fay"); t:eq(u["last-name"], "Wray"); t:eq(u["display-name"], "Fay W.")
  t:eq(u.email, "fay@example.com")
  t:eq(s:count("GET"), 1); t:eq(s:count("PUT"), 1)
  t:ok(tg:reactivate_user("FAY"))
  t:eq(state_user("fay").active, true); t:eq(state_user("fay")["display-name"], "Fay W.")
  local ok, _, code = tg:deactivate_user("nobody")
  t:eq(ok, nil); t:eq(code, "ENOTFOUND")
end)

test("rename through user/rename; memberships follow; a taken name is EINVALID", function(t)
  reset{ users = { user("gus"), user("hal") }, groups = { "g" }, members = { g = { "gus" } } }
  local tg <close> = new()
  t:ok(tg:rename_user("gus", "gus.new"))
  t:ok(state_user("gus.new")); t:eq(state_user("gus"), nil)
  t:same(members("g"), { "gus.new" })
  t:eq(s:count("POST", "/user/rename$"), 1)
  local ok, msg, code = tg:rename_user("hal", "gus.new")
  t:eq(ok, nil); t:eq(code, "EINVALID"); t:contains(msg, "already exists")
end)

test("delete user and groups; create group (already exists), delete unknown is ENOTFOUND", function(t)
  reset{ users = { user("ida") }, groups = { "old" } }
  local tg <close> = new()
  t:ok(tg:delete_user("ida")); t:eq(state_user("ida"), nil)
  t:same({ tg:create_group("devs") }, { true })
  t:same({ tg:create_group("DEVS") }, { true, "already exists" })
  t:same(s:state().group_info.devs, { description = "", active = true, directory = 32769 })
  t:ok(tg:delete_group("old"))
  local ok, _, code = tg:delete_group("old")
  t:eq(ok, nil); t:eq(code, "ENOTFOUND")
  ok, _, code = tg:delete_user("ida")
  t:eq(ok, nil); t:eq(code, "ENOTFOUND")
end)

test("memberships: 201, 409 is 'already a member', unknown user ENOTFOUND; bulk items each", function(t)
  reset{ users = { user("jo"), user("kim") }, groups = { "g", "h" }, members = { g = { "jo" } } }
  local tg <close> = new()
  t:same({ tg:add_member("g", "kim") }, { true })
  t:same({ tg:add_member("g", "kim") }, { true, "already a member" })
  local ok, msg, code = tg:add_member("g", "nobody")
  t:eq(ok, nil); t:eq(code, "ENOTFOUND"); t:contains(msg, "User <nobody> does not exist")
  ok, _, code = tg:add_member("nogroup", "jo")
  t:eq(ok, nil); t:eq(code, "ENOTFOUND")
  local ok2, _, _, res = tg:add_members("h", { "jo", "kim", "nobody" })
  t:eq(ok2, nil)
  t:eq(res.jo.ok, true); t:eq(res.kim.ok, true); t:eq(res.nobody.code, "ENOTFOUND")
  local ok3, res2 = tg:add_to_groups("jo", { "g", "h" })
  t:ok(ok3); t:eq(res2.g.note, "already a member"); t:eq(res2.h.note, "already a member")
  t:same(members("h"), { "jo", "kim" })
  t:ok(tg:remove_member("h", "kim"))
  t:same(members("h"), { "jo" })
  t:same({ tg:remove_member("h", "kim") }, { true, "not a member" })
end)

test("nested groups: reads are direct; removing an inherited-only member is EINHERITED", function(t)
  reset{ users = { user("lea"), user("max") }, groups = { "parent", "child" },
         members = { child = { "lea" }, parent = { "max" } }, nested = { parent = { "child" } } }
  local tg <close> = new()
  local ok, msg, code = tg:remove_member("parent", "lea")
  t:eq(ok, nil); t:eq(code, "EINHERITED")
  t:contains(msg, "lea is a member of parent only through a nested group")
  t:same(members("child"), { "lea" }, "nothing changed")
  local snap = assert(tg:snapshot())
  local by = {}
  for _, a in ipairs(snap.accounts) do by[a.name] = sorted(a.groups) end
  t:same(by.lea, { "child" }, "direct memberships only")
  t:same(by.max, { "parent" })
  t:same(sorted(assert(tg:get("lea")).groups), { "child" })
  -- a direct member of both: the direct one is removed
  t:ok(tg:add_member("parent", "lea"))
  t:ok(tg:remove_member("parent", "lea"))
  t:same(members("parent"), { "max" })
end)

test("paging: start-index/max-results, a full last page is followed by an empty one", function(t)
  reset{ users = many(7), groups = { "g" }, members = { g = { "u001", "u002", "u003", "u004", "u005", "u006" } } }
  local tg <close> = new{ page_size = 3 }
  local ok, _, got = sim.collect(function(cb) return tg:accounts(cb) end)
  t:ok(ok); t:eq(#got, 7)
  local starts = {}
  for _, r in ipairs(s:requests()) do
    t:eq(r.path:sub(1, #API), API, r.path)
    t:match(r.query, "max%-results=3")
    starts[#starts + 1] = r.query:match("start%-index=(%d+)") or "0"
  end
  t:same(starts, { "0", "3", "6" }, "7 users in pages of 3: the short third page ends it")
  s:clear()
  ok, _, got = sim.collect(function(cb) return tg:members("g", cb) end)
  t:ok(ok); t:same(got, { "u001", "u002", "u003", "u004", "u005", "u006" })
  t:eq(s:count("GET", "/group/user/direct$"), 3, "6 members in pages of 3: a third, empty page ends it")
  s:clear()
  ok, _, got = sim.collect(function(cb) return tg:groups(cb) end)
  t:ok(ok); t:same(got, { "g" }); t:eq(#s:requests(), 1)
  -- one page exactly full at the product default (1000): one more, empty request
  reset{ users = many(1000) }
  local big <close> = new()
  ok, _, got = sim.collect(function(cb) return big:accounts(cb) end)
  t:ok(ok); t:eq(#got, 1000); t:eq(s:count("GET", "/search$"), 2)
end)

test("snapshot: accounts with every field, groups, direct members; request count", function(t)
  reset{ users = { user("nia", { active = false }), user("oli") }, groups = { "x", "y", "z" },
         members = { x = { "nia", "oli" }, y = { "oli" } } }
  local tg <close> = new()
  local snap = assert(tg:snapshot())
  t:same(sorted(snap.groups), { "x", "y", "z" })
  local by = {}
  for _, a in ipairs(snap.accounts) do by[a.name] = a end
  t:eq(by.nia.active, false, "inactive accounts included"); t:eq(by.nia.display_name, "nia Tester")
  t:same(sorted(by.oli.groups), { "x", "y" }); t:same(by.nia.groups, { "x" })
  t:eq(snap.requests, 1 + 1 + 3, "users, groups, one member page per group")
end)

test("auth: a wrong application password is EAUTH (401), a Bearer token too", function(t)
  reset()
  local tg <close> = new{ password = "wrong" }
  local ok, msg, code = tg:groups(function() end)
  t:eq(ok, nil); t:eq(code, "EAUTH"); t:contains(msg, "HTTP 401 (credentials refused): Application failed to authenticate")
  t:eq(msg:find("wrong", 1, true), nil, "no secret in the message")
  local tok <close> = target.new(hc, { type = "crowd", url = s.url .. CTX, token = "test-token" })
  ok, msg, code = tok:groups(function() end)
  t:eq(code, "EAUTH")
end)

test("application not allowed from this address: 403 EFORBIDDEN with Crowd's reason", function(t)
  reset{ application = { name = "admin", password = "admin", remote_addresses = { "10.0.0.7" } } }
  local tg <close> = new()
  local ok, msg, code = tg:accounts(function() end)
  t:eq(ok, nil); t:eq(code, "EFORBIDDEN")
  t:contains(msg, 'Client with address "127.0.0.1" is forbidden from making requests to the application, admin.')
  local c = tg:check()
  t:eq(c.reachable, true); t:eq(c.code, "EFORBIDDEN")
  t:contains(c.detail, "Remote addresses must include this host")
end)

test("a directory without write permission: 403 EFORBIDDEN, nothing changed", function(t)
  reset{ users = { user("pat") }, groups = { "g" },
         directories = { { id = 5, name = "LDAP (read only)", permissions = json.array{} } } }
  local tg <close> = new()
  local ok, msg, code = tg:create_user{ name = "quinn", display_name = "Quinn Q", email = "q@example.com" }
  t:eq(ok, nil); t:eq(code, "EFORBIDDEN"); t:contains(msg, "has no directories that allow adding of users")
  ok, _, code = tg:deactivate_user("pat")
  t:eq(code, "EFORBIDDEN"); t:eq(state_user("pat").active, true)
  ok, _, code = tg:add_member("g", "pat")
  t:eq(code, "EFORBIDDEN"); t:same(members("g"), {})
end)

test("errors: wrong context path (HTML 404), 5xx, garbage", function(t)
  reset()
  local wrong <close> = target.new(hc, { type = "crowd", url = s.url, user = "admin", password = "admin" })
  local ok, msg, code = wrong:groups(function() end)
  t:eq(ok, nil); t:eq(code, "ENOTFOUND"); t:contains(msg, "HTML page instead of JSON")
  local tg <close> = new()
  s:faults{ fail_rate = 1.0, fail_status = 500 }
  ok, msg, code = tg:create_group("g")
  t:eq(ok, nil); t:eq(code, "EHTTP"); t:contains(msg, "HTTP 500")
  s:faults{ garbage_rate = 1.0 }
  ok, msg, code = tg:accounts(function() end)
  t:eq(ok, nil); t:eq(code, "ERESPONSE")
  s:faults{}
end)

test("requests carry Accept: application/json (Crowd answers XML otherwise)", function(t)
  reset{ users = { user("ray") } }
  local r = assert(hc:request{ method = "GET", url = s.url .. API .. "/user?username=ray",
                               headers = { Authorization = "Basic YWRtaW46YWRtaW4=" } })
  t:eq(r.status, 200); t:match(r.body, "^<%?xml")
  local tg <close> = new()
  t:eq(assert(tg:get("ray")).name, "ray", "the client gets JSON")
end)

test("check: reachable, application accepted, directories from user keys, write rights unknown", function(t)
  reset{ users = { user("sam"), { name = "tia", directory = 98305, ["display-name"] = "Tia", active = true } },
         groups = { "g" },
         directories = { { id = 32769, name = "Internal" }, { id = 98305, name = "LDAP" } } }
  local tg <close> = new()
  local c = tg:check()
  t:eq(c.reachable, true); t:eq(c.product, "Crowd"); t:eq(c.user, "admin"); t:eq(c.admin, nil)
  t:eq(c.code, nil)
  t:contains(c.detail, "application admin accepted from this host")
  t:contains(c.detail, "2 users read, in directories 32769 (1), 98305 (1)")
  t:contains(c.detail, "write rights: not readable")
  local bad <close> = new{ password = "nope" }
  c = bad:check()
  t:eq(c.reachable, true); t:eq(c.code, "EAUTH")
  t:contains(c.detail, "check the application name and password")
end)

return test.done()
