-- usersync.userset, the compact Okta user set a whole scope read holds
-- (c:scope{ fields, compact = true }, what the engine reads): users made
-- as fresh tables on access with the fields, metatables and sorted groups
-- of the plain read; lookups by id; memberships before and after a user's
-- record; the same users as a plain read of the simulator's org (with an
-- app and without); and the heap 3,000 users hold, plain against compact.
local test = require "tap"
local json = require "usersync.json"
local userset = require "usersync.userset"
local fakes = require "support.fakes"
local S = require "support.oktasim"

local KEEP = { top = { "id", "status", "lastLogin", "app_assignment" }, profile = { "login", "email", "n", "title" } }

test("add, index, get by id, memberships, finish, list access", function(t)
  local set = userset.new(KEEP)
  t:eq(#set, 0)
  set:add_members({ "00u2", "00u9" }, "00gB") -- members listed before their users
  local assign = { scope = "USER" }
  t:eq(set:add(json.decode('{"id":"00u1","status":"ACTIVE","lastLogin":null,"type":{"id":"x"},'
    .. '"profile":{"login":"a\\u0000b@x","email":"\\"q\\"\\n","n":3,"other":"dropped"}}')), 1)
  t:eq(set:add{ id = "00u2", status = "SUSPENDED", app_assignment = assign, profile = { login = "b@x", n = 1.5 } }, 2)
  t:eq(set:add_page{ { id = "00u3", status = "ACTIVE" }, { id = "00u\0" .. "4", status = "STAGED", profile = {} } }, 2)
  set:add_members({ "00u1", "00u2" }, "00gA")
  set:add_members({ "00u1" }, "00gA") -- listed twice: once in its groups
  t:raises(function() set:add{ status = "ACTIVE" } end, "id must be a string")
  t:raises(function() set:add_members({ 1 }, "00gA") end, "ids must be strings")
  set:finish()
  t:eq(#set, 4, "00u9 was only a member: not a user")
  t:eq(set:get("00u9"), nil); t:eq(set:index("00u9"), nil)

  local u1 = set[1]
  t:eq(json.encode(u1, { sort_keys = true }),
    '{"groups":["00gA"],"id":"00u1","lastLogin":null,"profile":{"email":"\\"q\\"\\n","login":"a\\u0000b@x","n":3},'
    .. '"status":"ACTIVE"}')
  t:eq(math.type(u1.profile.n), "integer")
  t:eq(getmetatable(u1), json.object_mt); t:eq(getmetatable(u1.profile), json.object_mt)
  t:eq(getmetatable(u1.groups), json.array_mt)
  local u2 = set:get("00u2")
  t:same(u2.groups, { "00gA", "00gB" }, "sorted, whichever came first")
  t:eq(u2.profile.n, 1.5); t:eq(math.type(u2.profile.n), "float")
  t:eq(u2.app_assignment, assign, "a table value is kept as it is")
  t:eq(set[3].profile, nil, "no profile in the record: none made")
  t:same(set[4].profile, {}); t:eq(set[4].id, "00u\0" .. "4")
  t:eq(set:get("00u\0" .. "4").status, "STAGED"); t:eq(set:get("00u"), nil)
  t:eq(set:index("00u3"), 3); t:eq(set:id(2), "00u2"); t:eq(set:id(5), nil)
  t:eq(set[0], nil); t:eq(set[5], nil)

  -- a fresh table each time: changing one changes nothing in the set
  u1.status = "changed"; u1.groups[1] = "x"
  t:eq(set[1].status, "ACTIVE"); t:eq(set[1].groups[1], "00gA")

  local ids = {}
  for i, u in ipairs(set) do ids[i] = u.id end
  t:same(ids, { "00u1", "00u2", "00u3", "00u\0" .. "4" }, "the order the records came")

  -- a record met again replaces the first in place
  t:eq(set:add{ id = "00u2", status = "ACTIVE" }, 2)
  set:finish()
  t:eq(#set, 4)
  t:eq(set[2].status, "ACTIVE"); t:eq(set[2].app_assignment, nil); t:eq(set[2].profile, nil)
  t:same(set[2].groups, { "00gA", "00gB" }, "its groups stay")
  t:ok(set:bytes() > 0)

  -- fill: one table written over for each user, what a user lacks cleared
  local scratch = {}
  t:eq(set:fill(1, scratch), scratch)
  t:eq(json.encode(scratch, { sort_keys = true }), json.encode(set[1], { sort_keys = true }))
  t:eq(getmetatable(scratch), json.object_mt)
  local profile = scratch.profile
  set:fill(3, scratch) -- no profile, no groups, no lastLogin
  t:eq(json.encode(scratch, { sort_keys = true }), json.encode(set[3], { sort_keys = true }))
  set:fill(4, scratch)
  t:eq(json.encode(scratch, { sort_keys = true }), json.encode(set[4], { sort_keys = true }))
  set:fill(2, scratch)
  t:eq(json.encode(scratch, { sort_keys = true }), json.encode(set[2], { sort_keys = true }))
  set:fill(1, scratch) -- fewer groups than the table had: the rest cleared
  t:eq(json.encode(scratch, { sort_keys = true }), json.encode(set[1], { sort_keys = true }))
  t:eq(#scratch.groups, 1); t:eq(scratch.lastLogin, json.null); t:eq(scratch.profile.n, 3)
  t:ok(profile ~= nil)
  t:eq(set:fill(9, scratch), nil)
  t:raises(function() userset.new{ top = { 1 } } end, "keep.top")
end)

-- Okta users as the simulator returns them, with a custom attribute and null values.
local function org(n)
  local statuses = {}
  for i = 1, n do statuses[i] = i % 7 == 0 and "SUSPENDED" or "ACTIVE" end
  local members = {}
  for g = 1, 5 do
    members[g] = {}
    for i = g, n, g + 1 do members[g][#members[g] + 1] = i end
  end
  local st = S.org{ users = statuses, groups = 5, members = members, app = { users = { 1, 2, 3 }, groups = { 2, 4 } } }
  for i, u in ipairs(st.users) do
    u.lastLogin = i % 2 == 0 and "2024-03-01T00:00:00.000Z" or json.null
    u.profile.costCenter = "CC-" .. i
    u.profile.title = json.null
  end
  return st
end

local sim <close> = fakes.start("okta", { state = org(450) })

test("a compact scope read holds the same users as a plain one (app and no app)", function(t)
  local fields = { "profile.login", "profile.email", "profile.title", "profile.costCenter", "lastLogin",
                   "app_assignment", "profile.nosuch" }
  for _, app in ipairs({ false, true }) do
    local c <close> = S.client(sim, { app_id = app and S.APP or nil })
    local plain = assert(c:scope{ fields = fields })
    local snap = assert(c:scope{ fields = fields, compact = true })
    t:eq(type(snap.users), "userdata", "compact")
    t:eq(#snap.users, #plain.users)
    t:ok(#plain.users >= (app and 100 or 450), ("%d users read"):format(#plain.users))
    local same, grouped = 0, 0
    for i, u in ipairs(snap.users) do
      local p = plain.users[i]
      if json.encode(u, { sort_keys = true }) == json.encode(p, { sort_keys = true })
          and getmetatable(u) == getmetatable(p) and getmetatable(u.groups) == getmetatable(p.groups) then
        same = same + 1
      end
      if #u.groups > 1 then grouped = grouped + 1 end
    end
    t:eq(same, #plain.users, "every user the same, field for field, in the same order")
    t:ok(grouped > 0, "users in several groups")
    if app then t:ok(snap.users[1].app_assignment.scope, "the app assignment kept") end
    -- without fields there is nothing to keep compactly: the plain list
    t:eq(type(assert(c:scope{ compact = true }).users), "table")
  end
end)

-- The Lua heap (KB) that make() leaves reachable, after full collections.
local function heap_of(make)
  collectgarbage(); collectgarbage()
  local before = collectgarbage("count")
  local keep = make()
  collectgarbage(); collectgarbage()
  local kb = collectgarbage("count") - before
  return kb, keep
end

test("3,000 users: the compact set's heap against plain tables", function(t)
  local N = 3000
  local pages = {}
  for p = 1, N / 200 do
    local page = {}
    for i = 1, 200 do
      local n = (p - 1) * 200 + i
      page[i] = json.decode(('{"id":"00u%017d","status":"ACTIVE","profile":{"login":"user%d@example.com",'
        .. '"email":"user%d@example.com","displayName":"User %d","firstName":"User","lastName":"N%d"}}')
        :format(n, n, n, n, n))
    end
    pages[p] = page
  end
  local keep = { top = { "id", "status" }, profile = { "login", "email", "displayName", "firstName", "lastName" } }
  local plain_kb = heap_of(function()
    local users = {}
    for _, page in ipairs(pages) do
      for _, u in ipairs(page) do
        local c = setmetatable({ id = u.id, status = u.status, groups = setmetatable({ "00g1", "00g2" }, json.array_mt) },
          json.object_mt)
        c.profile = setmetatable({}, json.object_mt)
        for _, k in ipairs(keep.profile) do c.profile[k] = u.profile[k] end
        users[#users + 1] = c
      end
    end
    return users
  end)
  local set
  local compact_kb = heap_of(function()
    set = userset.new(keep)
    for _, page in ipairs(pages) do
      set:add_page(page)
      local ids = {}
      for i, u in ipairs(page) do ids[i] = u.id end
      set:add_members(ids, "00g1"); set:add_members(ids, "00g2")
    end
    set:finish()
    return set
  end)
  local c_kb = set:bytes() / 1024
  print(("# %d users: plain %.0f KB of Lua heap (%.0f bytes a user); compact %.1f KB of heap + %.0f KB in C "
    .. "(%.0f bytes a user)"):format(N, plain_kb, plain_kb * 1024 / N, compact_kb, c_kb, (compact_kb + c_kb) * 1024 / N))
  t:ok(compact_kb < 16, ("the set's Lua heap is small: %.1f KB"):format(compact_kb))
  t:ok(c_kb + compact_kb < plain_kb / 3, ("compact %.0f KB, plain %.0f KB"):format(c_kb + compact_kb, plain_kb))
  t:same(set[N].groups, { "00g1", "00g2" })
  t:eq(set[N].profile.login, ("user%d@example.com"):format(N))
end)

return test.done()
