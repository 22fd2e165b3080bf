-- End-to-end scenarios for the Crowd target: the real `usersync` binary
-- syncing the Okta simulator into the Crowd simulator (fake.py crowd, an
-- application "admin" under /crowd), with the semantics of the other
-- targets: creation with default groups, a re-sync with zero writes,
-- adoption, ownership, keep_existing, deprovisioning by active:false (every
-- other field kept), rename, --user, the safety limit, check and config
-- validation.
local test = require "tap"
local world = require "support.world"
local proc = require "support.proc"

local sorted_keys = world.sorted_keys

local MANUAL = { groups = { mode = "manual", map = { Engineering = { "developers" }, Ops = { "operations" } } },
                 defaults = { new_users = { "new-hires" }, all_users = { "okta-synced" } } }
local ALL = { "ann.lee@example.com", "bob.stone@example.com", "carol.king@example.com" }

local function crowd_world(opts)
  opts = opts or {}
  opts.products = { "crowd" }
  return world.small(opts)
end

test("first sync into an empty Crowd, then a second sync makes zero writes", function(t)
  local w <close> = crowd_world { sync = MANUAL }
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  local accounts = w:accounts("crowd")
  t:same(sorted_keys(accounts), ALL)
  local ann = accounts["ann.lee@example.com"]
  t:eq(ann["display-name"], "ann lee"); t:eq(ann["first-name"], "ann"); t:eq(ann["last-name"], "lee")
  t:eq(ann.email, "ann.lee@example.com"); t:eq(ann.active, true)
  t:same(w:members_of("crowd", "developers"), { "ann.lee@example.com", "bob.stone@example.com" })
  t:same(w:members_of("crowd", "operations"), { "carol.king@example.com" })
  t:same(w:members_of("crowd", "new-hires"), ALL)
  t:same(w:members_of("crowd", "okta-synced"), ALL)
  w:clear_requests()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:eq(#w:writes("crowd"), 0, "a second sync must make no write request")
  t:contains(r.stdout, "applied 0 changes")
  for _, req in ipairs(w.crowd:requests()) do
    t:eq(req.path:sub(1, 29), "/crowd/rest/usermanagement/1/", req.path)
  end
end)

test("plan shows the Crowd changes and writes nothing", function(t)
  local w <close> = crowd_world { sync = MANUAL }
  local r = w:usersync("plan")
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "crowd (crowd): 4 create group, 3 create user, 9 add member")
  t:eq(#w:writes("crowd"), 0)
end)

test("adoption (case-insensitive), no new-hire groups for it; an unmanaged account is never touched", function(t)
  local crowd = {
    users = { { name = "ANN.LEE@example.com", ["first-name"] = "Annie", ["last-name"] = "Lee-Hart",
                ["display-name"] = "ann lee", email = "ann.lee@example.com", active = true,
                attributes = { costcentre = { "42" } } },
              { name = "svc-jenkins", ["first-name"] = "Jenkins", ["last-name"] = "Service",
                ["display-name"] = "Jenkins", email = "ci@example.com", active = true } },
    groups = { "developers", "operations" },
    members = { developers = { "ANN.LEE@example.com" }, operations = { "svc-jenkins" } },
    allow_email_change = true } -- e-mail changes allowed (Crowd 4.4+ refuses them by default)
  local w <close> = crowd_world { sync = MANUAL, crowd = crowd }
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  local accounts = w:accounts("crowd")
  t:eq(#sorted_keys(accounts), 4, "adopted, not duplicated")
  t:eq(accounts["ann.lee@example.com"].name, "ANN.LEE@example.com", "the adopted account keeps its spelling")
  t:same(w:members_of("crowd", "new-hires"), { "bob.stone@example.com", "carol.king@example.com" })
  t:same(w:members_of("crowd", "okta-synced"), ALL)
  -- ann's e-mail changes in Okta: the full PUT keeps what the admin set
  w:find_user("00u1").profile.email = "ann.hart@example.com"
  w:load()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  local ann = w:accounts("crowd")["ann.lee@example.com"]
  t:eq(ann.email, "ann.hart@example.com")
  t:eq(ann["first-name"], "Annie"); t:eq(ann["last-name"], "Lee-Hart"); t:eq(ann["display-name"], "ann lee")
  t:same(ann.attributes, { costcentre = { "42" } })
  -- everyone leaves: only the linked accounts are deactivated, never svc-jenkins
  w.app_users = {}
  w:load()
  r = w:usersync("sync", "--force")
  t:eq(r.code, 0, r.stderr)
  accounts = w:accounts("crowd")
  for _, n in ipairs(ALL) do t:eq(accounts[n].active, false, n) end
  t:eq(accounts["svc-jenkins"].active, true)
  t:same(w:members_of("crowd", "operations"), { "carol.king@example.com", "svc-jenkins" })
end)

test("deprovisioning: deactivated by active:false with every field kept; back in scope: reactivated", function(t)
  local w <close> = crowd_world { sync = MANUAL }
  t:eq(w:usersync("sync").code, 0)
  local before = w:accounts("crowd")["bob.stone@example.com"]
  w:find_user("00u2").status = "SUSPENDED"
  w:load()
  w:clear_requests()
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  local bob = w:accounts("crowd")["bob.stone@example.com"]
  t:eq(bob.active, false)
  for _, f in ipairs({ "first-name", "last-name", "display-name", "email", "key" }) do
    t:eq(bob[f], before[f], f .. " kept")
  end
  local puts, gets = 0, 0
  for _, q in ipairs(w.crowd:requests()) do
    if q.path == "/crowd/rest/usermanagement/1/user" and q.query == "username=bob.stone%40example.com" then
      if q.method == "PUT" then puts = puts + 1 elseif q.method == "GET" then gets = gets + 1 end
    end
  end
  t:eq(puts, 1); t:eq(gets, 1, "GET then full PUT")
  w:find_user("00u2").status = "ACTIVE"
  w:load()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  bob = w:accounts("crowd")["bob.stone@example.com"]
  t:eq(bob.active, true); t:eq(bob["display-name"], before["display-name"])
  t:same(w:members_of("crowd", "developers"), { "ann.lee@example.com", "bob.stone@example.com" })
end)

test("a login rename is a rename (user/rename), never delete + create; memberships kept", function(t)
  local w <close> = crowd_world { sync = MANUAL, crowd = { allow_email_change = true } }
  t:eq(w:usersync("sync").code, 0)
  local key = w:accounts("crowd")["ann.lee@example.com"].key
  local u = w:find_user("00u1")
  u.profile.login = "ann.smith@example.com"
  u.profile.email = "ann.smith@example.com"
  u.profile.lastName = "smith"
  w:load()
  w:clear_requests()
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  local accounts = w:accounts("crowd")
  local ann = accounts["ann.smith@example.com"]
  t:ok(ann, "renamed"); t:eq(accounts["ann.lee@example.com"], nil)
  t:eq(ann.key, key, "the same account")
  t:eq(ann["display-name"], "ann smith"); t:eq(ann["last-name"], "smith"); t:eq(ann.email, "ann.smith@example.com")
  t:same(w:members_of("crowd", "developers"), { "ann.smith@example.com", "bob.stone@example.com" })
  for _, q in ipairs(w:writes("crowd")) do
    t:ok(not (q.method == "DELETE" and q.path:find("/user$")), "no account deleted")
    t:ok(not (q.method == "POST" and q.path:find("/user$")), "no account created")
  end
  t:eq(w.crowd:count{ method = "POST", path = "/user/rename$" }, 1)
end)

test("keep_existing true keeps memberships usersync did not add; false removes them from managed groups", function(t)
  local crowd = { users = { { name = "ann.lee@example.com", ["first-name"] = "ann", ["last-name"] = "lee",
                              ["display-name"] = "ann lee", email = "ann.lee@example.com", active = true } },
                  groups = { "developers", "operations", "hand-made" },
                  members = { operations = { "ann.lee@example.com" }, ["hand-made"] = { "ann.lee@example.com" } } }
  local map = { Engineering = "developers", Ops = "operations" }
  local w <close> = crowd_world { crowd = crowd, sync = { groups = { map = map, keep_existing = true } } }
  t:eq(w:usersync("sync").code, 0)
  t:same(w:members_of("crowd", "operations"), { "ann.lee@example.com", "carol.king@example.com" }, "kept")
  w:write_config({ groups = { map = map, keep_existing = false } })
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:same(w:members_of("crowd", "operations"), { "carol.king@example.com" }, "managed group made exact")
  t:same(w:members_of("crowd", "hand-made"), { "ann.lee@example.com" }, "unmanaged group untouched")
end)

test("--user syncs one user with a few requests, never the whole listing", function(t)
  local w <close> = crowd_world { sync = MANUAL, crowd = { allow_email_change = true } }
  t:eq(w:usersync("sync").code, 0)
  w:find_user("00u1").profile.email = "ann.new@example.com"
  w:find_user("00u2").profile.email = "bob.new@example.com"
  w:load()
  w:clear_requests()
  local r = w:usersync("sync", "--user", "ann.lee@example.com")
  t:eq(r.code, 0, r.stderr)
  local accounts = w:accounts("crowd")
  t:eq(accounts["ann.lee@example.com"].email, "ann.new@example.com")
  t:eq(accounts["bob.stone@example.com"].email, "bob.stone@example.com", "nobody else")
  t:eq(w.crowd:count{ path = "/search$", query = "entity%-type=user" }, 0, "no account listing")
  t:eq(w.crowd:count{ path = "/group/user/direct$", method = "GET" }, 0, "no member listing")
  local n = #w.crowd:requests()
  t:ok(n <= 8, "a few requests: " .. n)
end)

test("deprovision = \"delete\" with users.delete: the linked account is deleted, nobody else", function(t)
  local crowd = { users = { { name = "svc-ci", ["first-name"] = "CI", ["last-name"] = "Bot", ["display-name"] = "CI Bot",
                              email = "ci@example.com", active = true } } }
  local w <close> = crowd_world { crowd = crowd,
    sync = { deprovision = "delete", users = { delete = true }, groups = MANUAL.groups } }
  t:eq(w:usersync("sync").code, 0)
  w.app_users = { "00u1", "00u3" }
  w:load()
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:same(sorted_keys(w:accounts("crowd")), { "ann.lee@example.com", "carol.king@example.com", "svc-ci" })
  t:eq(w.crowd:count{ method = "DELETE", path = "/user$" }, 1)
end)

test("one Okta source into Jira and Crowd at once: both converge, a re-sync writes nothing to either", function(t)
  local w <close> = world.small { products = { "jira", "crowd" }, sync = MANUAL }
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  for _, p in ipairs({ "jira", "crowd" }) do
    t:same(sorted_keys(w:accounts(p)), ALL, p)
    t:same(w:members_of(p, "developers"), { "ann.lee@example.com", "bob.stone@example.com" }, p)
  end
  w:clear_requests()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:eq(#w:writes("jira"), 0); t:eq(#w:writes("crowd"), 0)
end)

test("a mass deprovision over limits.max_deprovision stops with exit 3; --force applies it", function(t)
  local w <close> = crowd_world { sync = { limits = { max_deprovision = "10%" } } }
  t:eq(w:usersync("sync").code, 0)
  w.app_users = { "00u1" }
  w:load()
  w:clear_requests()
  local r = w:usersync("sync")
  t:eq(r.code, 3, r.stderr)
  t:contains(r.stderr, "limits.max_deprovision")
  t:eq(#w:writes("crowd"), 0)
  t:eq(w:accounts("crowd")["bob.stone@example.com"].active, true)
  r = w:usersync("sync", "--force")
  t:eq(r.code, 0, r.stderr)
  t:eq(w:accounts("crowd")["bob.stone@example.com"].active, false)
  t:eq(w:accounts("crowd")["carol.king@example.com"].active, false)
end)

test("a directory that allows no adding of users or groups: failures reported, exit 1, nothing created", function(t)
  local w <close> = crowd_world { sync = MANUAL,
    crowd = { directories = { { id = 7, name = "Corporate LDAP", permissions = { "UPDATE_USER" } } } } }
  local r = w:usersync("sync")
  t:eq(r.code, 1, r.stdout .. r.stderr)
  t:contains(r.stdout .. r.stderr, "EFORBIDDEN")
  t:same(sorted_keys(w:accounts("crowd")), {})
end)

test("check: the Crowd target's report; a wrong application password is a PROBLEM naming the keys", function(t)
  local w <close> = crowd_world { sync = MANUAL }
  t:eq(w:usersync("sync").code, 0)
  local r = w:usersync("check")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:contains(r.stdout, "target crowd (crowd, " .. w.crowd.url .. "/crowd): ok")
  t:contains(r.stdout, "product: Crowd ?")
  t:contains(r.stdout, "authenticated as: admin")
  t:contains(r.stdout, "admin rights: unknown")
  t:contains(r.stdout, "accepted from this host; 3 users read, in directories 32769 (3)")  -- (the name is masked here: it equals the password)
  local bad = proc.run({ os.getenv("USERSYNC"), "check", "-c", w.config },
    { env = { US_TEST_OKTA_TOKEN = "test-token", US_TEST_CROWD_PW = "wrong-pw", NO_COLOR = "1" } })
  t:eq(bad.code, 1, bad.stdout .. bad.stderr)
  t:contains(bad.stdout, "target crowd (crowd, " .. w.crowd.url .. "/crowd): PROBLEM")
  t:contains(bad.stdout, "credentials: refused (HTTP 401): check targets.crowd.application/password")
  t:ok(not (bad.stdout .. bad.stderr):find("wrong-pw", 1, true), "the password never shows")
end)

test("config: a crowd target needs application and password, and takes no token or user", function(t)
  local config = require "usersync.config"
  local function errors(tcfg)
    local _, errs = config.validate({
      sources = { okta = { type = "okta", url = "https://x.okta.com", token = "t0ken-value" } },
      targets = { c = tcfg },
      sync = { { name = "main", source = "okta", targets = { "c" } } },
    })
    return errs
  end
  t:same(errors{ type = "crowd", url = "https://crowd.example.com/crowd", application = "usersync", password = "pw" }, {})
  t:same(errors{ type = "crowd", url = "https://crowd.example.com/crowd", token = "pat" },
         { "targets.c: a crowd target signs in as a Crowd application: use `application` and `password`, not `token` or `user`" })
  t:same(errors{ type = "crowd", url = "https://crowd.example.com/crowd", application = "usersync" },
         { "targets.c: needs `application` and `password` (the Crowd application's name and password)" })
  t:same(errors{ type = "jira", url = "https://jira.example.com", token = "pat", application = "x" },
         { "targets.c.application: only a crowd target authenticates as an application; use `user` or `token`" })
end)

return test.done()
