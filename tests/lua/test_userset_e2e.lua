-- The Okta users of a whole scope read are held in C (usersync.userset)
-- and made as Lua tables when the planner reads them; with the default
-- hooks one table is written over for each user. End to end with the real
-- binary: a custom policy that declares its fields and keeps the user
-- tables it is given sees each user whole and still itself when a later
-- hook looks again (custom hooks get a fresh table each time), and every
-- target gets the accounts and memberships it names.
local test = require "tap"
local world = require "support.world"

local function policy_file(w)
  local path = w.dir .. "/policy.lua"
  local f = assert(io.open(path, "w"))
  f:write([[
local kept = {} -- every user table the user hook was given, with what it said then
return {
  fields = { "profile.costCenter" },
  user = function(u, ctx)
    kept[#kept + 1] = { u = u, id = u.id, login = u.profile.login, groups = #u.groups }
    return { display_name = u.profile.firstName .. " [" .. tostring(u.profile.costCenter) .. "]" }
  end,
  groups = function(u, groups, ctx)
    for _, k in ipairs(kept) do
      if k.u.id ~= k.id or k.u.profile.login ~= k.login or #k.u.groups ~= k.groups then
        error("the user table of " .. k.id .. " now says " .. tostring(k.u.id))
      end
    end
    local out = {}
    for _, g in ipairs(groups) do out[#out + 1] = g.profile.name == "Engineering" and "developers" or "operations" end
    return out
  end,
}
]])
  f:close()
  return path
end

test("custom hooks that keep the user tables they get: each stays its user's; all targets synced", function(t)
  local w <close> = world.new{ sync = { defaults = { all_users = { "okta-synced" } } } }
  w:okta_group("00gEng", "Engineering")
  w:okta_group("00gOps", "Ops")
  w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gEng" }, profile = { costCenter = "CC-1" } })
  w:okta_user("00u2", "bob.stone@example.com", { groups = { "00gEng", "00gOps" }, profile = { costCenter = "CC-2" } })
  w:okta_user("00u3", "carol.king@example.com", { groups = { "00gOps" } })
  w:load()
  w:write_config{ policy = policy_file(w), defaults = { all_users = { "okta-synced" } } }

  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:ok(not r.stderr:find("now says", 1, true), r.stderr)
  for _, p in ipairs({ "jira", "confluence", "bitbucket" }) do
    t:same(w:members_of(p, "developers"), { "ann.lee@example.com", "bob.stone@example.com" }, p .. " developers")
    t:same(w:members_of(p, "operations"), { "bob.stone@example.com", "carol.king@example.com" }, p .. " operations")
    t:same(w:members_of(p, "okta-synced"), { "ann.lee@example.com", "bob.stone@example.com", "carol.king@example.com" },
      p .. " okta-synced")
  end
  local jira = w:accounts("jira")
  t:eq(jira["ann.lee@example.com"].displayName, "ann [CC-1]", "a declared custom field reaches the hook")
  t:eq(jira["bob.stone@example.com"].displayName, "bob [CC-2]")
  t:eq(jira["carol.king@example.com"].displayName, "carol [nil]")
end)

return test.done()
