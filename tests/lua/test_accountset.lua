-- usersync.accountset, the compact account set a whole-target snapshot
-- holds (t:snapshot{ compact = true }, what the engine reads): lookups by
-- name in any case and by id, merging, interned groups, list access; the
-- same accounts and groups as a plain snapshot of the same target (Jira,
-- SCIM with ids); and the Lua heap a snapshot of 3,000 accounts holds,
-- plain against compact.
local test = require "tap"
local http = require "usersync.http"
local json = require "usersync.json"
local target = require "usersync.target"
local accountset = require "usersync.accountset"
local sim = require "support.targetsim"
local fakes = require "support.fakes"

test("add, get in any case, by_id, merge, groups, list access", function(t)
  local set = accountset.new()
  t:eq(#set, 0)
  t:eq(set:add{ name = "Alice", key = "alice", display_name = "Alice A", email = "a@x.org", active = true }, 1)
  t:eq(set:add{ name = "bob", id = "2819c223" }, 2)
  t:eq(#set, 2)
  t:same(set:get("ALICE"), { name = "Alice", key = "alice", display_name = "Alice A", email = "a@x.org",
                             active = true, groups = {} })
  t:same(set:get("Bob"), { name = "bob", id = "2819c223", groups = {} }, "active unknown: nil")
  t:eq(set:get("carol"), nil)
  t:eq(set:get("ALICE", "email"), "a@x.org"); t:eq(set:get("alice", "active"), true)
  t:eq(set:get("bob", "active"), nil); t:eq(set:get("bob", "email"), nil)
  t:eq(set:get("bob", "id"), "2819c223"); t:same(set:get("bob", "groups"), {})
  t:eq(set:get("bob", "nosuch"), nil); t:eq(set:get("carol", "email"), nil)
  t:eq(set:get("alic"), nil)
  -- a name with a NUL in it is another name, never a stored one read past its end
  t:eq(set:get("bob\0"), nil); t:eq(set:get("bob\0x"), nil); t:ok(not set:contains("alice\0"))
  t:eq(set:by_id("2819c223\0"), nil)
  t:eq(set:by_id("2819c223").name, "bob")
  t:eq(set:by_id("2819C223"), nil, "ids compare exactly")
  t:ok(set:has_ids())
  t:ok(set:contains("aLiCe")); t:ok(not set:contains("carol"))

  -- a fresh table each time: changing one changes nothing in the set
  local a = set:get("alice")
  t:ok(a ~= set:get("alice"))
  a.email = "changed"
  t:eq(set:get("alice").email, "a@x.org")

  -- the same name again: merged, the fields given win
  t:eq(set:add{ name = "ALICE", active = false }, 1)
  t:eq(#set, 2)
  local m = set:get("alice")
  t:eq(m.name, "ALICE"); t:eq(m.active, false); t:eq(m.email, "a@x.org")

  t:eq(set:add_member("alice", "devs"), true)
  t:eq(set:add_member("Alice", "DEVS"), false, "in a group of that name already")
  t:eq(set:add_member("bob", "devs"), true)
  t:eq(set:add_member("bob", "ops"), true)
  t:eq(set:add_member("carol", "devs"), nil, "no such account")
  t:same(set:get("bob").groups, { "devs", "ops" })
  t:same(set:get("BOB", "groups"), { "devs", "ops" })
  t:same(set:groups(), { "devs", "ops" })

  local names = {}
  for i, acc in ipairs(set) do names[i] = acc.name end
  t:same(names, { "ALICE", "bob" })
  t:eq(set[0], nil); t:eq(set[3], nil)
  t:eq(set[2].name, "bob")
  t:ok(set:bytes() > 0)
  t:contains(tostring(set), "2 accounts")

  t:raises(function() set:add{ email = "x" } end, "field 'name' is required")
  t:raises(function() set:add{ name = "x", active = true, email = 5 } end, "field 'email': expected a string")
  t:raises(function() set:get() end, "bad argument")
end)

test("many accounts: every one found, in any case", function(t)
  local set = accountset.new()
  for i = 1, 20000 do
    set:add{ name = ("User%05d"):format(i), email = ("user%05d@example.com"):format(i), active = i % 3 ~= 0 }
    set:add_member(("user%05d"):format(i), "g" .. (i % 7))
  end
  t:eq(#set, 20000)
  local bad = 0
  for i = 1, 20000 do
    local a = set:get(("USER%05d"):format(i))
    if not a or a.email ~= ("user%05d@example.com"):format(i) or a.groups[1] ~= "g" .. (i % 7)
        or a.active ~= (i % 3 ~= 0) then
      bad = bad + 1
    end
  end
  t:eq(bad, 0)
  t:eq(#set:groups(), 7)
end)

local hc <close> = http.client{ retries = 2, backoff = 0.05, backoff_max = 0.2 }

-- The accounts of a snapshot in name order, each with its groups sorted,
-- as JSON text.
local function canonical(accounts)
  local list = {}
  for _, a in ipairs(accounts) do
    local c = {}
    for k, v in pairs(a) do c[k] = v end
    c.groups = {}
    for i, g in ipairs(a.groups) do c.groups[i] = g end
    table.sort(c.groups)
    list[#list + 1] = c
  end
  table.sort(list, function(x, y) return x.name:lower() < y.name:lower() end)
  return assert(json.encode(list, { sort_keys = true }))
end

-- A Jira of n users (and the admin) in 10 groups, each user in 3.
local function jira_state(n)
  local users, groups, members = { { name = "admin", displayName = "Administrator",
    emailAddress = "admin@example.com", active = true } }, {}, { ["jira-administrators"] = { "admin" } }
  for g = 1, 10 do groups[g] = ("group-%02d"):format(g); members[groups[g]] = {} end
  groups[11] = "jira-administrators"
  for i = 1, n do
    local name = ("user%05d"):format(i)
    users[#users + 1] = { name = name, displayName = ("User Number %d"):format(i),
      emailAddress = name .. "@example.com", active = i % 5 ~= 0 }
    for k = 0, 2 do
      local m = members[groups[(i + k * 3) % 10 + 1]]
      m[#m + 1] = name
    end
  end
  return { users = json.array(users), groups = json.array(groups), members = json.object(members),
           projects = json.array{}, components = json.array{} }
end

local N = 3000
local jira <close> = sim.start("jira", { state = jira_state(N) })

test("a compact snapshot of Jira: the same accounts and groups as a plain one", function(t)
  local tg <close> = sim.client(hc, "jira", jira.url)
  local plain = assert(tg:snapshot())
  local compact = assert(tg:snapshot{ compact = true })
  t:eq(type(compact.accounts), "userdata")
  t:eq(#compact.accounts, #plain.accounts)
  t:eq(#compact.accounts, N + 1)
  t:eq(canonical(compact.accounts), canonical(plain.accounts))
  t:same(compact.groups, plain.groups)
  t:eq(compact.complete, true)
  t:eq(compact.accounts:get("USER00007").email, "user00007@example.com")
  t:eq(#compact.accounts:get("user00007").groups, 3)
end)

test("a compact read fills its set as the pages arrive, before the snapshot takes them", function(t)
  local tg <close> = sim.client(hc, "jira", jira.url)
  local read <close> = tg:snapshot_start{ compact = true }
  -- another call drives the shared engine: the read's pages arrive meanwhile
  local function memberships()
    local n = 0
    for _, a in ipairs(read.set) do n = n + #a.groups end
    return n
  end
  local rounds = 0
  while (#read.set < N + 1 or memberships() < 3 * N + 1) and rounds < 1000 do
    assert(tg:get("admin"))
    rounds = rounds + 1
  end
  t:eq(#read.set, N + 1, "every account in the set before any page was taken")
  t:eq(memberships(), 3 * N + 1, "and every membership")
  t:eq(#read.set:get("user00009").groups, 3)
  -- once the read has ended (its done event), the set gives back the room
  -- it kept for growth: less than the same accounts added to a new set
  while not read:ended() and rounds < 2000 do
    assert(tg:get("admin"))
    rounds = rounds + 1
  end
  t:ok(read:ended(), "the read ended")
  local copy = accountset.new()
  for _, a in ipairs(read.set) do
    copy:add(a)
    for _, g in ipairs(a.groups) do copy:add_member(a.name, g) end
  end
  t:ok(read.set:bytes() < copy:bytes(),
    ("the set after its read: %d bytes, grown: %d"):format(read.set:bytes(), copy:bytes()))
  local snap = assert(tg:snapshot{ started = read })
  t:eq(snap.accounts, read.set)
  t:eq(#snap.accounts, N + 1)
  local plain = assert(tg:snapshot())
  t:eq(canonical(snap.accounts), canonical(plain.accounts))
end)

-- The Lua heap (KB) held by what fn returns, after full collections.
local function held(fn)
  collectgarbage(); collectgarbage()
  local before = collectgarbage("count")
  local v = fn()
  collectgarbage(); collectgarbage()
  local kb = collectgarbage("count") - before
  return kb, v
end

test("a compact snapshot of 3,000 accounts holds a fraction of a plain one's Lua heap", function(t)
  local tg <close> = sim.client(hc, "jira", jira.url)
  local plain_kb, plain = held(function() return assert(tg:snapshot()) end)
  local compact_kb, compact = held(function() return assert(tg:snapshot{ compact = true }) end)
  t:eq(#compact.accounts, #plain.accounts)
  print(("# Lua heap held: plain %.0f KB, compact %.0f KB (the set itself: %.0f KB in C)")
    :format(plain_kb, compact_kb, compact.accounts:bytes() / 1024))
  t:ok(plain_kb > 1000, "a table per account: over 1 MB for 3,000 accounts")
  t:ok(compact_kb < plain_kb / 10, "compact: under a tenth of that")
  t:ok(compact.accounts:bytes() < plain_kb * 1024 / 2, "and the C side under half of it")
end)

test("a compact snapshot of SCIM: ids found by by_id, the same accounts as a plain one", function(t)
  local scim <close> = fakes.start("scim")
  local CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
  local users = {}
  for i = 1, 30 do
    local name = ("u%03d"):format(i)
    users[i] = { id = "id-" .. i, userName = name, displayName = name:upper(), active = i ~= 4,
                 emails = json.array{ { value = name .. "@example.com", primary = true } },
                 schemas = json.array{ CORE_USER } }
  end
  scim:put_state{ users = json.array(users), groups = json.array{
    { id = "g1", displayName = "devs", members = json.array{ { value = "id-1" }, { value = "id-3" } },
      schemas = json.array{ "urn:ietf:params:scim:schemas:core:2.0:Group" } } } }
  local tg <close> = target.new(hc, { type = "scim", url = scim.url .. "/scim/v2", token = "test-token" })
  local plain = assert(tg:snapshot())
  local compact = assert(tg:snapshot{ compact = true })
  t:eq(canonical(compact.accounts), canonical(plain.accounts))
  t:ok(compact.accounts:has_ids())
  t:eq(compact.accounts:by_id("id-3").name, "u003")
  t:same(compact.accounts:by_id("id-3").groups, { "devs" })
  t:eq(compact.accounts:by_id("id-4").active, false)
end)

return test.done()
