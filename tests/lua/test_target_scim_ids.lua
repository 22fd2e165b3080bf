-- The SCIM target addresses accounts by the ids the service gave them, not
-- by userName lookups, where usersync already knows the id: a saved plan's
-- add_member ops carry them (`usersync apply PLANFILE` makes no
-- `filter=userName eq` lookup for those accounts), and `sync --user X`
-- reads a linked account by the id its link keeps (GET /Users/{id}), so an
-- account renamed in the service is still found.
local test = require "tap"
local world = require "support.world"
local json = require "usersync.json"

local MANUAL = { groups = { mode = "manual", map = { Engineering = { "developers" }, Ops = { "operations" } } },
                 defaults = { new_users = { "new-hires" }, all_users = { "okta-synced" } } }
local ALL = { "ann.lee@example.com", "bob.stone@example.com", "carol.king@example.com" }

local sorted_keys = world.sorted_keys

-- Every table in doc whose kind is `kind`.
local function ops_of(doc, kind, out)
  out = out or {}
  if type(doc) == "table" then
    if doc.kind == kind then out[#out + 1] = doc end
    for _, v in pairs(doc) do ops_of(v, kind, out) end
  end
  return out
end

-- t:apply of plan ops on a target that has read nothing yet (a script that
-- applies a saved plan's ops, a new process): the add_member ops' ids go
-- with the names, as every other op's id does.
test("t:apply: add_member ops that carry ids need no lookup; those without one are looked up", function(t)
  local http = require "usersync.http"
  local target = require "usersync.target"
  local fakes = require "support.fakes"
  local s <close> = fakes.start("scim")
  local hc <close> = http.client{ retries = 2, backoff = 0.05, backoff_max = 0.2 }
  local users = {}
  for i = 1, 5 do
    users[i] = { id = "u" .. i, userName = "user" .. i, displayName = "User " .. i, active = true,
                 schemas = json.array{ "urn:ietf:params:scim:schemas:core:2.0:User" } }
  end
  s:put_state{ users = json.array(users), groups = json.array{
    { id = "g1", displayName = "devs", members = json.array{},
      schemas = json.array{ "urn:ietf:params:scim:schemas:core:2.0:Group" } } } }
  s:clear_requests()
  local tg <close> = target.new(hc, { type = "scim", url = s.url .. "/scim/v2", token = "test-token" })
  local ops = {}
  for i = 1, 4 do ops[i] = { kind = "add_member", group = "devs", name = "user" .. i, id = "u" .. i } end
  ops[5] = { kind = "add_member", group = "devs", name = "user5" } -- no id: looked up
  local sum = tg:apply(ops)
  t:eq(sum.ok, 5, json.encode(sum.results))
  t:eq(s:count{ method = "GET", path = "/Users$", query = "filter" }, 1, "one lookup: user5's")
  t:eq(s:count{ method = "PATCH", path = "/Groups/g1$" }, 1, "one bulk add")
  local m = {}
  for _, x in ipairs(s:state().groups[1].members) do m[#m + 1] = x.value end
  table.sort(m)
  t:same(m, { "u1", "u2", "u3", "u4", "u5" })
end)

for _, p in ipairs({ "scim", "atlassian" }) do
  test(p .. ": apply PLANFILE adds known accounts to a group by the plan's ids (no userName lookup)", function(t)
    local w <close> = world.small { sync = MANUAL, products = { p } }
    t:eq(w:usersync("sync").code, 0)
    -- everyone joins Ops: two add_member ops to "operations" (carol is a
    -- member already). A guard on the whole path: apply re-reads the
    -- service first, which teaches the target the ids too, so this held
    -- before the ops' ids went into the bulk add (the t:apply test above
    -- is the one that needed them).
    w.members["00gOps"] = { "00u1", "00u2", "00u3" }
    w:load()
    local out = w.dir .. "/plan.json"
    local r = w:usersync("plan", "--out", out)
    t:eq(r.code, 0, r.stderr)
    local f = assert(io.open(out))
    local adds = ops_of(assert(json.decode(f:read("a"))), "add_member")
    f:close()
    t:eq(#adds, 2, "two add_member ops saved")
    for _, op in ipairs(adds) do t:ok(op.id, "the saved op carries the account's id: " .. tostring(op.name)) end

    w:clear_requests()
    r = w:usersync("apply", out)
    t:eq(r.code, 0, r.stdout .. r.stderr)
    t:same(w:members_of(p, "operations"), ALL)
    t:eq(w[p]:count{ method = "GET", path = "/Users$", query = "filter" }, 0,
      "no userName lookup for accounts the plan has ids for")
    t:eq(w[p]:count{ method = "PATCH", path = "/Groups/" }, 1, "one bulk add")
  end)
end

test("scim: sync --user finds a linked account renamed in the service by its id", function(t)
  local w <close> = world.small { sync = MANUAL, products = { "scim" } }
  t:eq(w:usersync("sync").code, 0)
  t:eq(w:usersync("sync").code, 0) -- the links learn the ids from this read
  local st = w.scim:state()
  local carol_id
  for _, u in ipairs(st.users) do
    if u.userName == "carol.king@example.com" then u.userName = "carol.renamed"; carol_id = u.id end
  end
  w.scim:put_state(st)
  w:clear_requests()
  local r = w:usersync("sync", "--user", "carol.king@example.com")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  local acc = w:accounts("scim")
  t:same(sorted_keys(acc), ALL, "renamed back, not created again: " .. table.concat(sorted_keys(acc), " "))
  t:eq(acc["carol.king@example.com"] and acc["carol.king@example.com"].id, carol_id)
  t:eq(w.scim:count{ method = "POST", path = "/Users$" }, 0, "no create")
  t:eq(w.scim:count{ method = "GET", path = "/Users/" .. carol_id:gsub("%-", "%%-") .. "$" }, 1, "read by its id")

  -- renamed again, then suspended: --user deactivates the linked account
  st = w.scim:state()
  for _, u in ipairs(st.users) do if u.id == carol_id then u.userName = "carol.other" end end
  w.scim:put_state(st)
  w.users[3].status = "SUSPENDED"
  w:load()
  r = w:usersync("sync", "--user", "carol.king@example.com")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  acc = w:accounts("scim")
  t:same(sorted_keys(acc), ALL, "one account each: " .. table.concat(sorted_keys(acc), " "))
  t:eq(acc["carol.king@example.com"] and acc["carol.king@example.com"].active, false,
    "the linked account is deactivated")
end)

test("scim: sync --user of a linked account whose name is unchanged reads it once (by id)", function(t)
  local w <close> = world.small { sync = MANUAL, products = { "scim" } }
  t:eq(w:usersync("sync").code, 0)
  t:eq(w:usersync("sync").code, 0)
  w:clear_requests()
  local r = w:usersync("sync", "--user", "bob.stone@example.com")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:eq(#w:writes("scim"), 0, "nothing to change")
  t:eq(w.scim:count{ method = "GET", path = "/Users/[^/]+$" }
       + w.scim:count{ method = "GET", path = "/Users$", query = "filter" }, 1, "one read of bob's account")
end)

return test.done()
