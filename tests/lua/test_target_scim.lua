-- SCIM 2.0 target client (usersync.target, type "scim") against the SCIM
-- simulator, generic and Atlassian-flavoured: every operation, ids from
-- listings, lookups and creates, PATCH or GET + PUT, membership PATCHes,
-- startIndex/count paging at the boundaries and with providers that answer
-- fewer than asked, SCIM errors in usersync's codes, 429 + Retry-After,
-- request counts and the service's state after writes.
local test = require "tap"
local http = require "usersync.http"
local json = require "usersync.json"
local target = require "usersync.target"
local fakes = require "support.fakes"

local generic <close> = fakes.start("scim")
local atl <close> = fakes.start("scim", { args = { "--flavour", "atlassian" } })
local hc <close> = http.client{ retries = 2, backoff = 0.05, backoff_max = 0.2 }
local BASE = { [generic] = "/scim/v2", [atl] = "/scim/directory/test-directory" }

local CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
local CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"

local function user(i, name)
  return { id = "u" .. i, userName = name, displayName = name:upper(), active = true,
           emails = json.array{ { value = name .. "@example.com", primary = true } },
           schemas = json.array{ CORE_USER } }
end

local function group(id, name, members)
  local m = {}
  for i, v in ipairs(members or {}) do m[i] = { value = v } end
  return { id = id, displayName = name, members = json.array(m), schemas = json.array{ CORE_GROUP } }
end

local function many(n)
  local us = {}
  for i = 1, n do us[i] = user(i, ("u%03d"):format(i)) end
  return us
end

local function reset(s, st)
  st = st or {}
  s:put_state{ users = json.array(st.users or {}), groups = json.array(st.groups or {}) }
  s:faults{}
  s:clear_requests()
end

local function new(s, opts)
  local cfg = { type = "scim", url = s.url .. BASE[s], token = "test-token",
                flavour = s == atl and "atlassian" or nil }
  for k, v in pairs(opts or {}) do cfg[k] = v end
  return target.new(hc, cfg)
end

local function count(s, method, pattern)
  return (s:count{ method = method, path = pattern })
end

local function state_user(s, name)
  for _, u in ipairs(s:state().users) do if u.userName:lower() == name:lower() then return u end end
end

local function members(s, gname)
  local st, by_id, out = s:state(), {}, {}
  for _, u in ipairs(st.users) do by_id[u.id] = u.userName end
  for _, g in ipairs(st.groups) do
    if g.displayName == gname then for _, m in ipairs(g.members) do out[#out + 1] = by_id[m.value] end end
  end
  table.sort(out)
  return out
end

test("capabilities: generic renames, Atlassian does not; both deactivate", function(t)
  local g <close> = new(generic)
  local a <close> = new(atl)
  t:same(g:capabilities(), { deactivate = true, reactivate = true, rename = true, leads = false, bulk_add = true })
  t:same(a:capabilities(), { deactivate = true, reactivate = true, rename = false, leads = false, bulk_add = true })
  t:raises(function() new(generic, { flavour = "azure" }) end, "unknown flavour")
end)

for _, s in ipairs({ generic, atl }) do
  local label = s == atl and "atlassian: " or "generic: "

  test(label .. "listings carry ids; paging at a page boundary, one over, and short pages", function(t)
    for _, n in ipairs({ 4, 5 }) do
      reset(s, { users = many(n) })
      local tg <close> = new(s, { page_size = 4 })
      local got = {}
      t:ok(tg:accounts(function(page) for _, a in ipairs(page) do got[#got + 1] = a end end))
      t:eq(#got, n)
      t:eq(got[1].id, "u1"); t:eq(got[1].name, "u001"); t:eq(got[1].email, "u001@example.com")
      t:eq(got[1].display_name, "U001"); t:eq(got[1].active, true)
      t:eq(count(s, "GET", "/Users$"), n == 4 and 1 or 2, n .. " users, 4 a page")
    end
    -- a provider that answers fewer than asked (its cap), and pages short of its own size
    for _, f in ipairs({ { max_count = 3 }, { page_short = true }, { max_count = 3, page_short = true } }) do
      reset(s, { users = many(11) })
      s:faults(f)
      local tg <close> = new(s, { page_size = 5 })
      local names = {}
      t:ok(tg:accounts(function(page) for _, a in ipairs(page) do names[#names + 1] = a.name end end))
      table.sort(names)
      local want = {}
      for i = 1, 11 do want[i] = ("u%03d"):format(i) end
      t:same(names, want, json.encode(f) .. ": every user once")
    end
  end)

  test(label .. "snapshot: users, groups and their members by id, one request each", function(t)
    reset(s, { users = many(3), groups = { group("g1", "devs", { "u1", "u3" }), group("g2", "ops") } })
    local tg <close> = new(s)
    local snap = assert(tg:snapshot())
    t:eq(#snap.accounts, 3)
    local by = {}
    for _, a in ipairs(snap.accounts) do by[a.name] = a end
    t:same(by.u001.groups, { "devs" }); t:same(by.u002.groups, {}); t:eq(by.u003.id, "u3")
    table.sort(snap.groups)
    t:same(snap.groups, { "devs", "ops" })
    t:eq(snap.requests, 3, "ServiceProviderConfig, Users, Groups")
    local _, list = s:count{ method = "GET", path = "/Users$" }
    t:match(list[1].query, "excludedAttributes=groups", "a user's groups are not read twice")
  end)

  test(label .. "create, get, update, (re)activate, delete: ids from the create", function(t)
    reset(s)
    local tg <close> = new(s)
    t:same({ tg:create_user{ name = "Ann", display_name = "Ann A", email = "ann@example.com" } }, { true })
    local ann = state_user(s, "ann")
    t:eq(ann.displayName, "Ann A"); t:eq(ann.emails[1].value, "ann@example.com"); t:eq(ann.active, true)
    t:same({ tg:create_user{ name = "ANN", display_name = "x", email = "x@example.com" } }, { true, "already exists" })
    s:clear_requests()
    t:ok(tg:update_user("ann", { display_name = "Ann B" }))
    t:ok(tg:deactivate_user("Ann"))
    t:eq(state_user(s, "ann").active, false)
    t:ok(tg:reactivate_user("ann"))
    t:eq(state_user(s, "ann").active, true)
    t:eq(state_user(s, "ann").displayName, "Ann B")
    -- the id came from the create: no lookup, one ServiceProviderConfig read, then PATCHes
    t:eq(count(s, "GET", "/Users$"), 0, "no lookup by name")
    t:eq(count(s, "GET", "ServiceProviderConfig$"), 1)
    t:eq(count(s, "PATCH", "/Users/" .. ann.id:gsub("%p", "%%%0") .. "$"), 3)
    local got = assert(tg:get("ANN"))
    t:eq(got.id, ann.id); t:same(got.groups, {}); t:eq(got.raw.userName, "Ann")
    local ok, _, code = tg:get("ghost")
    t:eq(ok, nil); t:eq(code, "ENOTFOUND")
    t:ok(tg:delete_user("ann"))
    t:eq(state_user(s, "ann"), nil)
    ok, _, code = tg:deactivate_user("ann")
    t:eq(ok, nil); t:eq(code, "ENOTFOUND", "gone: the lookup finds nobody")
  end)

  test(label .. "an id given by the caller is used as it is (no lookup)", function(t)
    reset(s, { users = many(2) })
    local tg <close> = new(s)
    local n = 0
    local sum = tg:apply({ { kind = "deactivate_user", name = "u002", id = "u2" } }, function() n = n + 1 end)
    t:eq(sum.ok, 1)
    t:eq(count(s, "GET", "/Users$"), 0)
    t:eq(count(s, "PATCH", "/Users/u2$"), 1)
    t:eq(state_user(s, "u002").active, false)
  end)

  test(label .. "groups and membership PATCHes (bulk, per-item fallback, remove)", function(t)
    reset(s, { users = many(3) })
    local tg <close> = new(s)
    t:same({ tg:create_group("devs") }, { true })
    t:same({ tg:create_group("DEVS") }, { true, "already exists" })
    s:clear_requests()
    local ok, res = tg:add_members("devs", { "u001", "u002" })
    t:eq(ok, true); t:eq(res.u001.ok, true)
    t:same(members(s, "devs"), { "u001", "u002" })
    t:eq(count(s, "PATCH", "/Groups/"), 1, "one PATCH for both")
    t:ok(tg:add_member("devs", "u001"), "adding again is no change")
    local ok2, _, code, res2 = tg:add_members("devs", { "u003", "ghost" })
    t:eq(ok2, nil); t:eq(code, "ENOTFOUND"); t:eq(res2.u003.ok, true); t:eq(res2.ghost.ok, false)
    t:same(members(s, "devs"), { "u001", "u002", "u003" })
    t:ok(tg:remove_member("devs", "u002"))
    t:same(members(s, "devs"), { "u001", "u003" })
    ok, _, code = tg:remove_member("nogroup", "u001")
    t:eq(ok, nil); t:eq(code, "ENOTFOUND")
    t:ok(tg:delete_group("devs"))
    t:eq(#s:state().groups, 0)
  end)

  test(label .. "SCIM errors: 401, 400 with scimType, 429 with Retry-After retried", function(t)
    reset(s, { users = many(1) })
    local bad <close> = new(s, { token = "wrong" })
    local ok, msg, code = bad:create_group("x")
    t:eq(ok, nil); t:eq(code, "EAUTH"); t:contains(msg, "credentials refused")
    t:eq(msg:find("wrong", 1, true), nil, "no token in the message")
    local tg <close> = new(s)
    ok, msg, code = tg:create_user{ name = "x", display_name = "X" } -- no e-mail
    if s == atl then
      t:eq(code, "EINVALID"); t:contains(msg, "primary e-mail"); t:contains(msg, "scimType invalidValue")
    else
      t:eq(ok, true)
    end
    s:faults{ fail_rate = 1, fail_status = 429, fail_path = "/Groups$" }
    s:clear_requests()
    local hc0 <close> = http.client{ retries = 1, backoff = 0.01, backoff_max = 0.05 }
    local t0 <close> = target.new(hc0, { type = "scim", url = s.url .. BASE[s], token = "test-token" })
    ok, msg, code = t0:create_group("y")
    t:eq(ok, nil); t:eq(code, "ERATELIMIT"); t:contains(msg, "HTTP 429")
    t:eq(count(s, "POST", "/Groups$"), 2, "retried once after Retry-After")
  end)

  test(label .. "check: reachable, product, PATCH support, rights", function(t)
    reset(s)
    local tg <close> = new(s)
    local c = tg:check()
    t:eq(c.reachable, true); t:eq(c.admin, true)
    t:contains(c.product, s == atl and "Atlassian Cloud" or "SCIM service provider")
    t:eq(c.version, "2.0")
    t:contains(c.detail, "PATCH supported")
    local bad <close> = new(s, { token = "nope" })
    c = bad:check()
    t:eq(c.reachable, true); t:eq(c.code, "EAUTH")
  end)
end

test("generic: without PATCH, GET + PUT keeps what an admin set; rename by PUT", function(t)
  reset(generic, { users = { user(1, "ann") } })
  local st = generic:state()
  st.users[1].title = "Boss"
  generic:put_state(st)
  generic:faults{ patch_supported = false }
  local tg <close> = new(generic)
  t:ok(tg:deactivate_user("ann"))
  t:ok(tg:rename_user("ann", "anna"))
  local u = state_user(generic, "anna")
  t:eq(u.active, false); t:eq(u.title, "Boss"); t:eq(u.id, "u1")
  t:eq(generic:count{ method = "PATCH" }, 0)
  t:eq(generic:count{ method = "PUT" }, 2)
end)

test("atlassian: rename is refused without a request; remove uses the value form", function(t)
  reset(atl, { users = many(2), groups = { group("g1", "devs", { "u1", "u2" }) } })
  local tg <close> = new(atl)
  local ok, msg, code = tg:rename_user("u001", "x")
  t:eq(ok, nil); t:eq(code, "EUNSUPPORTED"); t:contains(msg, "cannot rename")
  t:eq(#atl:requests(), 0)
  t:ok(tg:remove_member("devs", "u001"))
  t:same(members(atl, "devs"), { "u002" })
  -- only single eq filters went out
  for _, r in ipairs(atl:requests()) do
    local f = r.query:match("filter=([^&]*)")
    if f then t:match(f, "^%a+%%20eq%%20%%22[^%%]*%%22$", "a single eq filter: " .. f) end
  end
end)

return test.done()
