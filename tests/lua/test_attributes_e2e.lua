-- Attribute mapping in the config (sync[].attributes): which Okta field,
-- or template of fields, becomes each target account's username, display
-- name and e-mail, without a policy file. End to end: the real binary
-- against the simulators, asserting the accounts the targets hold.
local test = require "tap"
local world = require "support.world"

local MAPPED = { attributes = { name = "profile.employeeId",
                                display_name = "{profile.lastName}, {profile.firstName} ({profile.department})",
                                email = "profile.workEmail" } }

local function org(opts)
  local w = world.new(opts)
  w:okta_user("00u1", "ann.lee@example.com", { profile = { employeeId = "E1001", workEmail = "ann@corp.example",
    department = "R&D", firstName = "Ann", lastName = "Lee" } })
  -- no department, no workEmail: the template closes up, the e-mail falls back to profile.email
  w:okta_user("00u2", "bob.stone@example.com", { profile = { employeeId = "E1002", firstName = "Bob", lastName = "Stone" } })
  -- no employeeId: no account name, so the user is left out
  w:okta_user("00u3", "carol.king@example.com", { profile = { firstName = "Carol" } })
  w:load()
  return w
end

test("sync creates accounts named and described by the attribute mapping", function(t)
  local w <close> = org { sync = MAPPED, products = { "jira", "confluence" } }
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  local jira = w:accounts("jira")
  t:ok(jira["e1001"], "Ann's Jira account is named by profile.employeeId")
  t:eq(jira["e1001"] and jira["e1001"].name, "E1001")
  t:eq(jira["e1001"] and jira["e1001"].displayName, "Lee, Ann (R&D)")
  t:eq(jira["e1001"] and jira["e1001"].emailAddress, "ann@corp.example")
  t:eq(jira["e1002"] and jira["e1002"].displayName, "Stone, Bob ()", "literal text stays, the empty field is empty")
  t:eq(jira["e1002"] and jira["e1002"].emailAddress, "bob.stone@example.com", "an empty e-mail mapping falls back to profile.email")
  t:eq(jira["carol.king@example.com"], nil, "a user without the name field gets no account")
  t:eq(jira["carol"], nil)
  -- Confluence keeps its username rules on a mapped name (lowercase)
  local conf = w:accounts("confluence")
  t:ok(conf["e1001"] and conf["e1001"].username == "e1001", "Confluence username lowercased")
  t:contains(r.stdout, "carol.king@example.com (ACTIVE)", "the plan notes the user left out")
  -- a profile change of a mapped field is an update, and a second sync writes nothing else
  w:find_user("00u1").profile.department = "Platform"
  w:load()
  w:clear_requests()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:eq(w:accounts("jira")["e1001"].displayName, "Lee, Ann (Platform)")
  t:eq(#w:writes("jira"), 1, "one update in Jira")
end)

test("without attributes the default policy's mapping is unchanged", function(t)
  local w <close> = org { products = { "jira" } }
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  local jira = w:accounts("jira")
  t:ok(jira["ann.lee@example.com"], "named by the login")
  t:eq(jira["ann.lee@example.com"].displayName, "Ann Lee")
  t:eq(jira["ann.lee@example.com"].emailAddress, "ann.lee@example.com")
  t:ok(jira["carol.king@example.com"], "Carol has a login, so an account")
end)

test("a bad mapping is a config error naming the key path (exit 2, nothing read)", function(t)
  local w <close> = org { products = { "jira" }, sync = { attributes = { name = "login", title = "profile.title",
    display_name = "{profile.firstName" } } }
  w:clear_requests()
  local r = w:usersync("sync")
  t:eq(r.code, 2, r.stderr)
  t:contains(r.stderr, 'sync[1].attributes.name: expected an Okta user field ("profile.login", "id") or a template of them')
  t:contains(r.stderr, 'got "login"')
  t:contains(r.stderr, "sync[1].attributes.title: unknown key (known: display_name, email, name)")
  t:contains(r.stderr, "sync[1].attributes.display_name: unclosed '{' at character 1 of \"{profile.firstName\"")
  t:eq(#w.okta:requests(), 0, "nothing was read")
  r = w:usersync("check", "--config-only")
  t:eq(r.code, 2)
end)

test("a policy's user hook still overrides one field over the mapping", function(t)
  local w <close> = org { products = { "jira" } }
  local pol = w.dir .. "/policy.lua"
  local f = assert(io.open(pol, "w"))
  f:write('return { user = function(u, ctx) return { display_name = "Hooked " .. u.profile.firstName } end }\n')
  f:close()
  w.sync = { attributes = MAPPED.attributes, policy = pol }
  w:write_config()
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  local a = w:accounts("jira")["e1001"]
  t:eq(a and a.displayName, "Hooked Ann", "the hook's field wins")
  t:eq(a and a.emailAddress, "ann@corp.example", "the fields it leaves out keep the mapping")
end)

test("a mapped Okta field that is a list or a boolean is a policy error naming it; the account is kept", function(t)
  local w <close> = world.new{ products = { "jira" }, sync = { attributes = { name = "profile.employeeId",
    display_name = "{profile.firstName} {profile.lastName}{profile.suffix}" } } }
  w:okta_user("00u1", "ann.lee@example.com", { profile = { employeeId = "E1001", firstName = "Ann", lastName = "Lee" } })
  w:okta_user("00u2", "bob.stone@example.com", { profile = { employeeId = "E1002", firstName = "Bob", lastName = "Stone" } })
  w:okta_user("00u3", "carol.king@example.com", { profile = { employeeId = "E1003", firstName = "Carol", suffix = { "Jr", "PhD" } } })
  w:okta_user("00u4", "dave.moss@example.com", { profile = { employeeId = 1004, firstName = "Dávid", lastName = "Móss ☃" } })
  w:okta_user("00u5", "erin.lake@example.com", { profile = { employeeId = true, firstName = "Erin" } })
  w:load()
  local r = w:usersync("sync")
  t:eq(r.code, 1, "policy errors: exit 1")
  local out = r.stdout .. r.stderr
  t:contains(out, 'attributes: profile.suffix is a list, not text or a number (in "{profile.firstName} {profile.lastName}{profile.suffix}")')
  t:contains(out, 'attributes: profile.employeeId is a boolean, not text or a number (in "profile.employeeId")')
  local jira = w:accounts("jira")
  t:eq(jira["e1001"] and jira["e1001"].displayName, "Ann Lee")
  t:eq(jira["1004"] and jira["1004"].displayName, "Dávid Móss ☃", "a number as written, unicode kept")
  t:ok(jira["e1002"], "Bob's account")
  t:eq(jira["e1003"], nil, "Carol: no account while her display name cannot be made")
  t:eq(jira["true"], nil, "Erin: no account named true")
  -- Okta's schema changes: Bob's employeeId becomes a list. His account stays active.
  w:find_user("00u2").profile.employeeId = { "E1002", "E2002" }
  w:load()
  w:clear_requests()
  r = w:usersync("sync")
  t:eq(r.code, 1)
  t:contains(r.stdout .. r.stderr, 'attributes: profile.employeeId is a list, not text or a number (in "profile.employeeId")')
  t:eq(w:accounts("jira")["e1002"].active, true, "not deactivated")
end)

return test.done()
