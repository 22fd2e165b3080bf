-- End-to-end (issue 13): the real `usersync` binary against Jira servers
-- that read the vendor's spec differently from Jira itself: a groups picker
-- capped below its total, expand=groups ignored, "already a member" in other
-- words. Each scenario asserts the target's state after the run, the exit
-- status, the output and the requests the simulator served.
local test = require "tap"
local world = require "support.world"

local MANUAL = { groups = { mode = "manual", map = { Engineering = { "developers" }, Ops = { "operations" } } },
                 defaults = { new_users = { "new-hires" }, all_users = { "okta-synced" } } }

-- Okta: Engineering (ann, bob), Ops (carol). Jira: ann exists in developers
-- and okta-synced; ten groups sort before every mapped one.
local function jira_world(jira_faults)
  local groups, members = {}, {}
  for i = 1, 10 do groups[#groups + 1] = ("aa-%02d"):format(i) end
  for _, g in ipairs{ "developers", "new-hires", "okta-synced", "operations", "jira-administrators" } do
    groups[#groups + 1] = g
  end
  members["jira-administrators"] = { "admin" }
  members.developers = { "ann.lee@example.com" }
  members["okta-synced"] = { "ann.lee@example.com" }
  members["aa-01"] = { "ann.lee@example.com" }
  local w = world.new{ sync = MANUAL, products = { "jira" }, jira = {
    users = { { name = "admin", key = "admin", displayName = "Admin", emailAddress = "admin@example.com", active = true },
              { name = "ann.lee@example.com", key = "JIRAUSER1", displayName = "ann lee",
                emailAddress = "ann.lee@example.com", active = true } },
    groups = groups, members = members } }
  w:okta_group("00gEng", "Engineering")
  w:okta_group("00gOps", "Ops")
  w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gEng" } })
  w:okta_user("00u2", "bob.stone@example.com", { groups = { "00gEng" } })
  w:okta_user("00u3", "carol.king@example.com", { groups = { "00gOps" } })
  w:load()
  if jira_faults then w.jira:faults(jira_faults) end
  return w
end

local function count(w, method, pattern, query)
  local n = 0
  for _, r in ipairs(w.jira:requests()) do
    if r.method == method and r.path:find(pattern) and (not query or (r.query or ""):find(query)) then n = n + 1 end
  end
  return n
end

local function expected_state(t, w)
  t:same(w:members_of("jira", "developers"), { "ann.lee@example.com", "bob.stone@example.com" })
  t:same(w:members_of("jira", "operations"), { "carol.king@example.com" })
  t:same(w:members_of("jira", "okta-synced"), { "ann.lee@example.com", "bob.stone@example.com", "carol.king@example.com" })
  t:same(w:members_of("jira", "new-hires"), { "bob.stone@example.com", "carol.king@example.com" })
  t:same(w:members_of("jira", "aa-01"), { "ann.lee@example.com" }, "an unmanaged membership stays")
end

test("a groups picker capped below its total: the sync looks its groups up by name", function(t)
  local w <close> = jira_world{ jira_picker_cap = 5 }
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:contains(r.stdout, "0 policy errors")
  t:eq(r.stdout:find("not read", 1, true), nil)
  expected_state(t, w)
  t:eq(count(w, "POST", "/group$"), 0, "no group created: they all exist past the picker's limit")
  t:eq(count(w, "POST", "/group/user$", nil), 6, "2 x developers/okta-synced/new-hires minus ann's, carol x 3")
  -- only the groups the sync maps to are read, never the ten it does not
  t:eq(count(w, "GET", "/group/member$", "groupname=aa%-"), 0)
  t:eq(count(w, "GET", "/group/member$", "groupname=developers"), 1)
  w:clear_requests()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:eq(#w:writes("jira"), 0, "a second sync finds nothing to change")
  -- a plan for one user reads past the cap the same way
  w:clear_requests()
  r = w:usersync("sync", "--user", "ann.lee@example.com")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:eq(#w:writes("jira"), 0)
end)

test("a server that ignores expand=groups: sync --user plans no add for groups the user has", function(t)
  local w <close> = jira_world()
  t:eq(w:usersync("sync").code, 0)
  expected_state(t, w)
  w.jira:faults{ jira_ignore_expand = true }
  w:clear_requests()
  local r = w:usersync("sync", "--user", "ann.lee@example.com")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:eq(#w:writes("jira"), 0, "ann is already in developers and okta-synced")
  t:contains(r.stdout, "applied 0 changes")
  -- a membership that is missing is still added, one that is no longer wanted removed
  local st = w.jira:state()
  st.members["okta-synced"] = { "bob.stone@example.com", "carol.king@example.com" }
  w.jira:put_state(world.arrays(st))
  w:clear_requests()
  r = w:usersync("sync", "--user", "ann.lee@example.com")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:eq(#w:writes("jira"), 1)
  t:same(w:members_of("jira", "okta-synced"), { "ann.lee@example.com", "bob.stone@example.com", "carol.king@example.com" })
end)

test("check: an administrator on a server that ignores expand=groups is an administrator", function(t)
  local w <close> = jira_world{ jira_ignore_expand = true }
  local r = w:usersync("check")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:match(r.stdout, "admin rights: yes")
  t:eq(count(w, "GET", "/mypermissions$"), 1)
end)

test("a target that cannot be read is a read failure, not a policy error", function(t)
  local w <close> = jira_world{ fail_rate = 1.0, fail_status = 500, fail_path = "^/rest/api/2/group/member" }
  local r = w:usersync("plan")
  t:match(r.stdout, "summary: 0 changes, 0 conflicts, 0 policy errors, 1 target not read")
  t:contains(r.stdout, "! read failed      reading jira failed, nothing planned for it")
  r = w:usersync("sync")
  t:eq(r.code, 1, r.stderr)
  t:eq(r.stdout:find("not synced", 1, true), nil, "no user was left out by a policy")
  t:match(r.stdout, "applied 0 changes, 0 failed, 1 target not read %(jira%)")
  t:eq(#w:writes("jira"), 0)
end)

return test.done()
