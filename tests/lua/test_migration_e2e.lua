-- test_migration_e2e.lua: scripts/examples/migrate-rename.lua against the
-- simulators, followed by a sync: without the policy change it pairs with,
-- the sync renames the migrated accounts back; with
-- scripts/examples/policy-strip-domain.lua the sync keeps them and writes
-- nothing for them.
local test = require "tap"
local world = require "support.world"
local proc = require "support.proc"

local SRC = os.getenv("SOURCE_DIR") or "."
local EX = SRC .. "/scripts/examples/"
local MANUAL = { groups = { mode = "manual", map = { Engineering = { "developers" } } } }

local function synced_world()
  local w = world.new{ products = { "jira" }, sync = MANUAL }
  w:okta_group("00gEng", "Engineering")
  w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gEng" } })
  w:okta_user("00u2", "bob.stone@example.com", { groups = { "00gEng" } })
  w:load()
  assert(w:usersync("sync").code == 0)
  return w
end

local function migrate(w)
  return proc.run({ os.getenv("USERSYNC"), "run", "-c", w.config, EX .. "migrate-rename.lua", "jira",
    [[^(.+)@example\.com$]], "$1" }, { env = { US_TEST_OKTA_TOKEN = "test-token", US_TEST_ATL_TOKEN = "test-token" } })
end

local function names(w)
  local out = {}
  for n in pairs(w:accounts("jira")) do out[#out + 1] = n end
  table.sort(out)
  return out
end

test("without the policy change, the next sync renames the migrated accounts back", function(t)
  local w <close> = synced_world()
  local r = migrate(w)
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "2 renamed, 0 skipped, 0 failed")
  t:same(names(w), { "ann.lee", "bob.stone" })
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:match(r.stdout, "rename +ann%.lee %-> ann%.lee@example%.com")
  t:same(names(w), { "ann.lee@example.com", "bob.stone@example.com" }, "undone")
end)

test("with policy-strip-domain.lua deployed, the sync keeps the new names and writes nothing", function(t)
  local w <close> = synced_world()
  local r = migrate(w)
  t:eq(r.code, 0, r.stderr)
  w:write_config({ groups = MANUAL.groups, policy = EX .. "policy-strip-domain.lua" })
  w:clear_requests()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:same(names(w), { "ann.lee", "bob.stone" })
  t:eq(#w:writes("jira"), 0, "nothing to do: " .. r.stdout)
  t:same(w:members_of("jira", "developers"), { "ann.lee", "bob.stone" }, "memberships kept")
  -- a user who joins later gets the short name from the start
  w:okta_user("00u3", "cara.diaz@example.com", { groups = { "00gEng" } })
  w:load()
  t:eq(w:usersync("sync").code, 0)
  t:same(names(w), { "ann.lee", "bob.stone", "cara.diaz" })
end)

return test.done()
