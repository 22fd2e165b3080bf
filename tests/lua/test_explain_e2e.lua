-- `usersync explain USER`: one Okta user's way through the policy, end to
-- end against the simulators: before the first sync (no store, none
-- created), after it (the link and "nothing to change"), with a policy
-- file's hooks, for a user who left scope, and the usage errors.
local test = require "tap"
local world = require "support.world"
local json = require "usersync.json"

local SYNC = { groups = { mode = "manual", map = { Engineering = { "developers" }, ["eng-test"] = { "testers" } },
                          exclude = { "-test$" } },
               defaults = { new_users = { "new-hires" }, all_users = { "okta-synced" } },
               attributes = { display_name = "{profile.lastName}, {profile.firstName}" } }

local function org(opts)
  local w = world.new(opts)
  w:okta_group("00gEng", "Engineering")
  w:okta_group("00gTst", "eng-test")
  w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gEng", "00gTst" }, profile = { firstName = "Ann", lastName = "Lee" } })
  w:okta_user("00u2", "bob.stone@example.com", { groups = { "00gEng" } })
  w:load()
  return w
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

test("before the first sync: the whole way, and no store is created", function(t)
  local w <close> = org { products = { "jira" }, sync = SYNC }
  local r = w:usersync("explain", "ann.lee@example.com")
  t:eq(r.code, 0, r.stderr)
  local o = r.stdout
  t:contains(o, "Okta user ann.lee@example.com (00u1), status ACTIVE")
  t:contains(o, 'profile.firstName      "Ann"')
  t:contains(o, "does not exist yet (before the first sync)")
  t:contains(o, "scope: in scope, assigned to app 0oaUsersyncApp (directly)")
  t:contains(o, "status: Okta ACTIVE -> active account")
  t:match(o, 'display_name  "Lee, Ann" +from attributes%.display_name = "{profile%.lastName}, {profile%.firstName}"')
  t:match(o, 'name +"ann%.lee@example%.com" +from default: profile%.login')
  t:match(o, "counts +Engineering +matches no groups%.exclude pattern")
  t:match(o, 'ignored +eng%-test +matches groups%.exclude%[1%] "%-test%$"')
  t:match(o, 'developers +Okta group "Engineering" via groups%.map%["Engineering"%]')
  t:match(o, "okta%-synced +defaults%.all_users")
  t:match(o, "new%-hires +defaults%.new_users %(given when usersync creates the account%)")
  t:contains(o, '+ create user    ann.lee@example.com "Lee, Ann" <ann.lee@example.com>  (ann.lee@example.com is in scope and has no account)')
  t:contains(o, "+ add member     ann.lee@example.com in developers  (group rules put ann.lee@example.com in developers)")
  t:eq(o:find("testers", 1, true), nil, "the excluded group maps to nothing")
  t:ok(not exists(w.dir .. "/usersync.db"), "no store file was created")
  t:eq(#w:writes("jira"), 0, "nothing written to Jira")
  t:eq(#w.jira:requests() > 0, true, "Jira was read")
end)

test("after a sync: the link, when it was made, and nothing to change", function(t)
  local w <close> = org { products = { "jira", "confluence" }, sync = SYNC }
  t:eq(w:usersync("sync").code, 0)
  w:clear_requests()
  local r = w:usersync("explain", "00u1", "--target", "confluence")
  t:eq(r.code, 0, r.stderr)
  t:match(r.stdout, "linked: account ann%.lee@example%.com since %d%d%d%d%-%d%d%-%d%dT[%d:.]+Z %(created by usersync%)")
  t:contains(r.stdout, "target confluence (confluence)")
  t:eq(r.stdout:find("target jira", 1, true), nil, "--target shows only that target")
  t:contains(r.stdout, "(Confluence: lowercase")
  t:match(r.stdout, "plan:\n +nothing to change\n")
  t:eq(#w:writes("jira") + #w:writes("confluence"), 0)
  -- the JSON document
  r = w:usersync("explain", "ann.lee@example.com", "--json")
  t:eq(r.code, 0, r.stderr)
  local doc = json.decode(r.stdout)
  t:eq(doc and doc.schema, "usersync.explain/1")
  t:contains(r.stdout, '"ops":[]', "an empty list is a JSON array")
  t:eq(doc.user.id, "00u1")
  t:eq(doc.store.exists, true)
  t:eq(#doc.syncs[1].targets, 2)
  local jt = doc.syncs[1].targets[1]
  t:eq(jt.target, "jira")
  t:eq(jt.linked.account, "ann.lee@example.com")
  t:eq(jt.user_hook.result.display_name, "Lee, Ann")
  t:eq(#jt.plan.ops, 0)
  t:eq(jt.okta_groups[2].counts, false)
  t:eq(jt.okta_groups[2].rule, 'matches groups.exclude[1] "-test$"')
end)

test("a policy file's hooks are named as what decided; a hook error exits 1", function(t)
  local w <close> = org { products = { "jira" } }
  local pol = w.dir .. "/policy.lua"
  local f = assert(io.open(pol, "w"))
  f:write([[
return {
  include_group = function(g, ctx) return g.profile.name ~= "eng-test" end,
  groups = function(u, groups, ctx)
    if u.profile.login:find("^bob") then error("no groups for bob") end
    return { "from-hook" }
  end,
}
]])
  f:close()
  w.sync = { policy = pol }
  w:write_config()
  local r = w:usersync("explain", "ann.lee@example.com")
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "Okta groups (include_group: include_group hook of " .. pol .. ")")
  t:match(r.stdout, "ignored +eng%-test +include_group hook of ")
  t:match(r.stdout, "from%-hook +groups hook of ")
  r = w:usersync("explain", "bob.stone@example.com")
  t:eq(r.code, 1, "a policy error in the plan of this user")
  t:contains(r.stdout, "groups hook (groups hook of " .. pol .. "): ERROR ")
  t:contains(r.stdout, "no groups for bob")
  t:contains(r.stdout, "! policy error:")
end)

test("a linked user who left scope: the deprovision hook and the deactivation", function(t)
  local w <close> = org { products = { "jira" }, sync = SYNC }
  t:eq(w:usersync("sync").code, 0)
  w.app_users = { "00u1" }
  w:load()
  local r = w:usersync("explain", "bob.stone@example.com")
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "scope: NOT in scope, not assigned to app 0oaUsersyncApp (directly or through a group)")
  t:contains(r.stdout, "deprovision hook (default policy): deactivate")
  t:contains(r.stdout, "- deactivate     bob.stone@example.com  (no longer in scope)")
end)

test("usage errors: no such user, no such target, no user given (exit 2)", function(t)
  local w <close> = org { products = { "jira" }, sync = SYNC }
  local r = w:usersync("explain", "nobody@example.com")
  t:eq(r.code, 2)
  t:contains(r.stderr, "usersync explain: no Okta user 'nobody@example.com' (by login or id) in source okta")
  r = w:usersync("explain", "ann.lee@example.com", "--target", "jria")
  t:eq(r.code, 2)
  t:contains(r.stderr, "usersync explain: no target 'jria' (known: jira); did you mean jira?")
  r = w:usersync("explain")
  t:eq(r.code, 2)
  t:contains(r.stderr, "which user?")
  r = w:usersync("explain", "--help")
  t:eq(r.code, 0)
  t:match(r.stdout, "^usage: usersync explain")
end)

test("sync entries of two Okta orgs: each knows the user by its own record", function(t)
  local sim = require "support.fakes"
  -- the second org has Ann under another id, and no Bob
  local second = sim.start("okta", { state = {
    users = json.array{ { id = "00u9ann", status = "SUSPENDED", created = "2025-01-01T00:00:00.000Z",
      lastUpdated = "2025-01-01T00:00:00.000Z", profile = { login = "ann.lee@example.com", email = "ann.lee@example.com",
      firstName = "Ann", lastName = "Lee" } } },
    groups = json.array{}, group_members = json.object(),
    apps = { [world.APP] = { users = json.array{ "00u9ann" }, groups = json.array{} } } } })
  local w <close> = org { products = { "jira" }, sync = { { name = "main" }, { name = "second", source = "okta2" } },
    extra = { sources = { okta2 = { type = "okta", url = second.url, token = "test-token", app_id = world.APP } } } }
  local r = w:usersync("explain", "ann.lee@example.com")
  t:eq(r.code, 0, r.stderr)
  t:match(r.stdout, 'sync "main" %(source okta, policy default policy%)\n  scope: in scope,')
  t:match(r.stdout, 'sync "second" %(source okta2, policy default policy%)\n  scope: in scope, assigned to app')
  t:match(r.stdout, "status: Okta ACTIVE %-> active account")
  t:match(r.stdout, "status: Okta SUSPENDED %-> inactive account", "the second org's record")
  r = w:usersync("explain", "bob.stone@example.com")
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "scope: NOT in scope, source okta2 has no user bob.stone@example.com")
  second:stop()
end)

test("one group excluded by a pattern, one mapped to two groups; a list attribute shown and named", function(t)
  local w <close> = world.new{ products = { "jira" }, sync = { attributes = { name = "profile.employeeId" },
    groups = { mode = "manual", map = { Engineering = { "developers", "jira-users" } }, exclude = { "-test$" } } } }
  w:okta_group("00gEng", "Engineering")
  w:okta_group("00gTst", "eng-test")
  w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gEng", "00gTst" }, profile = { employeeId = "E1" } })
  w:okta_user("00u2", "bob.stone@example.com", { groups = { "00gEng" }, profile = { employeeId = { "E2", "E3" } } })
  w:load()
  local r = w:usersync("explain", "ann.lee@example.com")
  t:eq(r.code, 0, r.stderr)
  -- hand-written: exactly these rules, in this order
  t:contains(r.stdout, table.concat({
    "    Okta groups (include_group: default policy):",
    "      counts   Engineering              matches no groups.exclude pattern",
    '      ignored  eng-test                 matches groups.exclude[1] "-test$"',
    "    target groups (groups: default policy; default_groups: default policy):",
    '      developers               Okta group "Engineering" via groups.map["Engineering"]',
    '      jira-users               Okta group "Engineering" via groups.map["Engineering"]',
    "    plan:",
    '      + create user    E1 "ann lee" <ann.lee@example.com>  (ann.lee@example.com is in scope and has no account)',
    "      + add member     E1 in developers  (group rules put ann.lee@example.com in developers)",
    "      + add member     E1 in jira-users  (group rules put ann.lee@example.com in jira-users)\n" }, "\n"))
  r = w:usersync("explain", "bob.stone@example.com")
  t:eq(r.code, 1, "a policy error")
  t:contains(r.stdout, '  profile.employeeId     ["E2","E3"]\n', "the list as it is, not (not set)")
  t:contains(r.stdout, 'user hook (default policy): ERROR attributes: profile.employeeId is a list, not text or a number (in "profile.employeeId")')
end)

return test.done()
