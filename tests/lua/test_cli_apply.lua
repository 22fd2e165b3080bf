-- test_cli_apply.lua: `usersync apply --force PLAN` completes the part of a
-- reviewed plan a safety stop withheld, after usersync itself applied the
-- rest (a sync, or apply without --force); a plan whose base really changed
-- is still refused.
local test = require "tap"
local world = require "support.world"

local MANUAL = { groups = { mode = "manual", map = { Engineering = { "developers" } } },
                 limits = { max_deprovision = "10%" } }

-- Ten users in Engineering, all synced into Jira.
local function synced_world()
  local w = world.new{ products = { "jira" }, sync = MANUAL }
  w:okta_group("00gEng", "Engineering")
  for i = 1, 10 do
    w:okta_user(("00u%02d"):format(i), ("user%02d@example.com"):format(i), { groups = { "00gEng" } })
  end
  w:load()
  return w
end

-- Three users leave the app (over the 10% limit) and user01's login changes
-- (a rename, which the safety stop does not withhold).
local function change(w)
  w.app_users = {}
  for i = 1, 7 do w.app_users[#w.app_users + 1] = ("00u%02d"):format(i) end
  w:find_user("00u01").profile.login = "renamed01@example.com"
  w:load()
end

for _, first in ipairs({ "apply", "sync" }) do
  test(("after a safety stop and %s: apply --force PLAN applies the withheld part"):format(first), function(t)
    local w <close> = synced_world()
    t:eq(w:usersync("sync").code, 0)
    change(w)
    local out = w.dir .. "/reviewed.json"
    local r = w:usersync("plan", "--out", out)
    t:eq(r.code, 3, r.stderr)
    t:contains(r.stdout, "renamed01@example.com")
    r = first == "apply" and w:usersync("apply", out) or w:usersync("sync")
    t:eq(r.code, 3, r.stdout .. r.stderr)
    t:ok(w:accounts("jira")["renamed01@example.com"], "the rename was applied")
    t:eq(w:accounts("jira")["user08@example.com"].active, true, "the deactivations were withheld")
    r = w:usersync("apply", "--force", out)
    t:eq(r.code, 0, r.stdout .. r.stderr)
    t:ok(not r.stderr:find("no longer planned", 1, true), r.stderr)
    for i = 8, 10 do
      t:eq(w:accounts("jira")[("user%02d@example.com"):format(i)].active, false, ("user%02d deactivated"):format(i))
    end
    t:contains(r.stdout, "already applied by usersync")
  end)
end

test("a plan whose base changed otherwise is still refused (exit 2)", function(t)
  local w <close> = synced_world()
  t:eq(w:usersync("sync").code, 0)
  change(w)
  local out = w.dir .. "/reviewed.json"
  t:eq(w:usersync("plan", "--out", out).code, 3)
  -- user08 comes back to the app: its deactivation is no longer planned,
  -- and nothing usersync did explains it
  w.app_users[#w.app_users + 1] = "00u08"
  w:load()
  local r = w:usersync("apply", "--force", out)
  t:eq(r.code, 2, r.stdout .. r.stderr)
  t:contains(r.stderr, "deactivate_user user08@example.com in jira is no longer planned")
  t:eq(w:accounts("jira")["user09@example.com"].active, true, "nothing applied")
end)

return test.done()
