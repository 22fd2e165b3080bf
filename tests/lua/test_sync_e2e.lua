-- End-to-end scenarios (issue 6): the real `usersync` binary against the
-- Okta, Jira, Confluence and Bitbucket simulators, asserting each target's
-- final state and the requests the run made.
local test = require "tap"
local world = require "support.world"
local json = require "usersync.json"

local function names(list)
  local out = {}
  for _, v in ipairs(list) do out[#out + 1] = type(v) == "table" and (v.name or v.username) or v end
  table.sort(out)
  return out
end

local sorted_keys = world.sorted_keys

-- A small org: Engineering (ann, bob), Ops (carol); all assigned to the app.
local base_world = world.small

local MANUAL = { groups = { mode = "manual", map = { Engineering = { "developers" }, Ops = { "operations" } } },
                 defaults = { new_users = { "new-hires" }, all_users = { "okta-synced" } } }

test("first sync into empty targets, then a second sync makes zero writes", function(t)
  local w <close> = base_world { sync = MANUAL }
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "applied")
  for _, p in ipairs({ "jira", "confluence", "bitbucket" }) do
    local accounts = w:accounts(p)
    t:same(sorted_keys(accounts), { "ann.lee@example.com", "bob.stone@example.com", "carol.king@example.com" }, p .. " accounts")
    t:same(w:members_of(p, "developers"), { "ann.lee@example.com", "bob.stone@example.com" }, p .. " developers")
    t:same(w:members_of(p, "operations"), { "carol.king@example.com" }, p .. " operations")
    t:same(w:members_of(p, "new-hires"), { "ann.lee@example.com", "bob.stone@example.com", "carol.king@example.com" }, p .. " new-hires")
    t:same(w:members_of(p, "okta-synced"), { "ann.lee@example.com", "bob.stone@example.com", "carol.king@example.com" }, p .. " okta-synced")
  end
  local jira = w:accounts("jira")
  t:eq(jira["ann.lee@example.com"].displayName, "ann lee")
  t:eq(jira["ann.lee@example.com"].emailAddress, "ann.lee@example.com")
  w:clear_requests()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  for _, p in ipairs({ "jira", "confluence", "bitbucket" }) do
    t:eq(#w:writes(p), 0, p .. ": a second sync must make no write request")
  end
  t:contains(r.stdout, "applied 0 changes")
end)

test("plan writes nothing and shows every change with its reason", function(t)
  local w <close> = base_world { sync = MANUAL }
  local r = w:usersync("plan")
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "jira (jira): 4 create group, 3 create user, 9 add member")
  -- what a new account is created with, and why each group is given
  t:contains(r.stdout, '+ create user      ann.lee@example.com "ann lee" <ann.lee@example.com>  (ann.lee@example.com is in scope and has no account)')
  t:contains(r.stdout, "+ add member       ann.lee@example.com in developers  (group rules put ann.lee@example.com in developers)")
  t:contains(r.stdout, "+ add member       ann.lee@example.com in new-hires  (default group for new users)")
  t:contains(r.stdout, "+ add member       ann.lee@example.com in okta-synced  (default group for all users)")
  for _, p in ipairs({ "jira", "confluence", "bitbucket" }) do t:eq(#w:writes(p), 0, p) end
  local j = w:usersync("plan", "--json")
  local doc = assert(json.decode(j.stdout))
  t:eq(doc.usersync_plan, 1)
  t:eq(#doc.syncs[1].targets, 3)
end)

test("adoption of existing accounts (case-insensitive), no new-hire groups for them", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "jira" },
    jira = { users = { { name = "ANN.LEE@example.com", key = "JIRAUSER1", displayName = "Ann Lee", emailAddress = "ann.lee@example.com", active = true } },
             groups = { "developers" }, members = { developers = { "ANN.LEE@example.com" } } } }
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  local accounts = w:accounts("jira")
  t:eq(#sorted_keys(accounts), 3, "adopted, not duplicated")
  t:same(w:members_of("jira", "new-hires"), { "bob.stone@example.com", "carol.king@example.com" })
  t:same(w:members_of("jira", "okta-synced"), { "ann.lee@example.com", "bob.stone@example.com", "carol.king@example.com" })
  t:ok(accounts["ann.lee@example.com"].name == "ANN.LEE@example.com", "the adopted account keeps its spelling")
  w:clear_requests()
  t:eq(w:usersync("sync").code, 0)
  t:eq(#w:writes("jira"), 0, "a case-only difference is not a rename: the re-sync writes nothing")
end)

test("login rename and email change become rename and update, never delete + create", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "jira", "bitbucket" } }
  t:eq(w:usersync("sync").code, 0)
  local u = w:find_user("00u1")
  u.profile.login = "ann.smith@example.com"
  u.profile.email = "ann.smith@example.com"
  u.profile.lastName = "smith"
  w:load()
  w:clear_requests()
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  for _, p in ipairs({ "jira", "bitbucket" }) do
    local accounts = w:accounts(p)
    t:ok(accounts["ann.smith@example.com"], p .. ": renamed")
    t:eq(accounts["ann.lee@example.com"], nil, p .. ": old name gone")
    t:same(w:members_of(p, "developers"), { "ann.smith@example.com", "bob.stone@example.com" }, p .. ": memberships kept")
    for _, req in ipairs(w:writes(p)) do
      local user_delete = req.method == "DELETE" and (req.path == "/rest/api/2/user" or req.path:find("/admin/users$"))
      t:ok(not user_delete, p .. ": no account deleted: " .. req.path)
    end
  end
  t:eq(w:accounts("jira")["ann.smith@example.com"].emailAddress, "ann.smith@example.com")
end)

test("a user unassigned from the app is deactivated (Jira, Confluence) and stripped of groups (Bitbucket)", function(t)
  local w <close> = base_world { sync = MANUAL }
  t:eq(w:usersync("sync").code, 0)
  for i, id in ipairs(w.app_users) do if id == "00u2" then table.remove(w.app_users, i) break end end
  w:load()
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:eq(w:accounts("jira")["bob.stone@example.com"].active, false)
  t:eq(w:accounts("confluence")["bob.stone@example.com"].disabled, true)
  t:ok(w:accounts("bitbucket")["bob.stone@example.com"], "bitbucket account kept")
  t:same(w:members_of("bitbucket", "developers"), { "ann.lee@example.com" })
  t:same(w:members_of("bitbucket", "okta-synced"), { "ann.lee@example.com", "carol.king@example.com" })
end)

test("suspended then unsuspended: deactivated, then reactivated", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "jira", "confluence" } }
  t:eq(w:usersync("sync").code, 0)
  w:find_user("00u3").status = "SUSPENDED"
  w:load()
  t:eq(w:usersync("sync").code, 0)
  t:eq(w:accounts("jira")["carol.king@example.com"].active, false)
  t:eq(w:accounts("confluence")["carol.king@example.com"].disabled, true)
  w:find_user("00u3").status = "ACTIVE"
  w:load()
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:eq(w:accounts("jira")["carol.king@example.com"].active, true)
  t:eq(w:accounts("confluence")["carol.king@example.com"].disabled, false)
end)

test("deactivated in Okta (DEPROVISIONED drops the app assignment): account deactivated", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "jira" } }
  t:eq(w:usersync("sync").code, 0)
  w:find_user("00u1").status = "DEPROVISIONED"
  for i, id in ipairs(w.app_users) do if id == "00u1" then table.remove(w.app_users, i) break end end
  w:load()
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:eq(w:accounts("jira")["ann.lee@example.com"].active, false)
end)

test("an Okta group renamed: on-the-fly moves members to the new group, the old one stays", function(t)
  local w <close> = base_world { products = { "jira" }, sync = { groups = { mode = "on_the_fly", keep_existing = true } } }
  t:eq(w:usersync("sync").code, 0)
  t:same(w:members_of("jira", "Engineering"), { "ann.lee@example.com", "bob.stone@example.com" })
  w.groups[1].profile.name = "Platform"
  w:load()
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:same(w:members_of("jira", "Platform"), { "ann.lee@example.com", "bob.stone@example.com" })
  t:same(w:members_of("jira", "Engineering"), {}, "memberships usersync added are removed")
  local _, st = w:accounts("jira")
  local has = false
  for _, g in ipairs(st.groups) do if g == "Engineering" then has = true end end
  t:ok(has, "usersync never deletes groups")
end)

test("manual mapping many-to-many", function(t)
  local w <close> = base_world { products = { "jira" }, sync = { groups = { map = {
    Engineering = { "developers", "staff" }, Ops = { "staff", "operations" } } } } }
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:same(w:members_of("jira", "staff"), { "ann.lee@example.com", "bob.stone@example.com", "carol.king@example.com" })
  t:same(w:members_of("jira", "developers"), { "ann.lee@example.com", "bob.stone@example.com" })
  t:same(w:members_of("jira", "operations"), { "carol.king@example.com" })
end)

test("on-the-fly with include, exclude and rename patterns", function(t)
  local w <close> = world.new { products = { "jira" }, sync = { groups = { mode = "on_the_fly",
    include = { "^okta-", "^eng-" }, exclude = { "-test$" }, rename = { { "^okta-(.+)$", "$1" } } } } }
  w:okta_group("00g1", "okta-devs")
  w:okta_group("00g2", "okta-devs-test")
  w:okta_group("00g3", "eng-core")
  w:okta_group("00g4", "sales")
  w:okta_user("00u1", "ann@example.com", { groups = { "00g1", "00g2", "00g3", "00g4" } })
  w:load()
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  local _, st = w:accounts("jira")
  t:same(names(st.groups), { "devs", "eng-core", "jira-administrators", "jira-software-users" },
    "devs and eng-core created next to Jira's own groups; nothing else")
  t:same(w:members_of("jira", "devs"), { "ann@example.com" })
end)

test("keep_existing true keeps memberships usersync did not add; false removes them from managed groups", function(t)
  local jira = { users = { { name = "ann.lee@example.com", key = "K1", displayName = "ann lee", emailAddress = "ann.lee@example.com", active = true } },
                 groups = { "developers", "operations", "hand-made" },
                 members = { operations = { "ann.lee@example.com" }, ["hand-made"] = { "ann.lee@example.com" } } }
  local w <close> = base_world { products = { "jira" }, jira = jira,
    sync = { groups = { map = { Engineering = "developers", Ops = "operations" }, keep_existing = true } } }
  t:eq(w:usersync("sync").code, 0)
  t:same(w:members_of("jira", "operations"), { "ann.lee@example.com", "carol.king@example.com" }, "kept")
  w:write_config({ groups = { map = { Engineering = "developers", Ops = "operations" }, keep_existing = false } })
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:same(w:members_of("jira", "operations"), { "carol.king@example.com" }, "managed group made exact")
  t:same(w:members_of("jira", "hand-made"), { "ann.lee@example.com" }, "unmanaged group untouched")
end)

test("a username conflict is reported and applied to neither", function(t)
  local src = os.getenv("SOURCE_DIR") or "."
  local w <close> = world.new { products = { "jira" },
    sync = { policy = src .. "/scripts/examples/policy-email-username.lua" } }
  w:okta_user("00u1", "sam@a.example.com", { email = "Sam@a.example.com" })
  w:okta_user("00u2", "sam@b.example.com", { email = "sam@b.example.com" })
  w:okta_user("00u3", "zoe@example.com")
  w:load()
  local r = w:usersync("sync")
  t:eq(r.code, 1, "a conflict is a failure to sync those users")
  t:contains(r.stdout, "conflict")
  t:contains(r.stdout, 'all map to the username "sam"')
  t:same(sorted_keys(w:accounts("jira")), { "zoe" })
end)

test("Okta failing mid-read: nothing deprovisioned, exit 3", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "jira" } }
  t:eq(w:usersync("sync").code, 0)
  w.okta:faults{ fail_rate = 1.0, fail_status = 500, fail_path = "^/api/v1/groups/" }
  w:clear_requests()
  local r = w:usersync("sync")
  t:eq(r.code, 3, r.stderr)
  t:contains(r.stderr, "reading okta failed")
  t:eq(#w:writes("jira"), 0)
  for _, a in pairs(w:accounts("jira")) do t:eq(a.active, true, a.name) end
end)

test("a wrong Okta token: the read fails, nothing is changed, exit 1 with the reason", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "jira" } }
  t:eq(w:usersync("sync").code, 0)
  w:clear_requests()
  local r = require("support.proc").run({ os.getenv("USERSYNC"), "sync", "-c", w.config },
    { env = { US_TEST_OKTA_TOKEN = "not-the-token", US_TEST_ATL_TOKEN = "test-token" } })
  t:eq(r.code, 1, r.stdout .. r.stderr)
  t:contains(r.stderr, "reading okta failed")
  t:contains(r.stderr, "the Okta read failed: nothing is planned or applied")
  t:eq(#w:writes("jira"), 0)
  t:ok(not (r.stdout .. r.stderr):find("not-the-token", 1, true), "token leaked")
  -- --force does not turn a failed read into "everyone left"
  r = require("support.proc").run({ os.getenv("USERSYNC"), "sync", "--force", "-c", w.config },
    { env = { US_TEST_OKTA_TOKEN = "not-the-token", US_TEST_ATL_TOKEN = "test-token" } })
  t:eq(r.code, 1, r.stdout .. r.stderr)
  t:contains(r.stderr, "the Okta read failed: nothing is planned or applied")
  t:ok(not r.stdout:find("deactivate", 1, true), "no deactivation planned: " .. r.stdout)
  t:eq(#w:writes("jira"), 0)
  for name, a in pairs(w:accounts("jira")) do
    if name ~= "admin" then t:eq(a.active, true, name .. " still active") end
  end
end)

test("a mass deprovision over limits.max_deprovision stops with exit 3; --force applies it", function(t)
  local w <close> = base_world { products = { "jira" }, sync = { limits = { max_deprovision = "10%" } } }
  t:eq(w:usersync("sync").code, 0)
  w.app_users = { "00u1" }
  w:load()
  local r = w:usersync("sync")
  t:eq(r.code, 3, r.stderr)
  t:contains(r.stderr, "limits.max_deprovision")
  t:eq(w:accounts("jira")["bob.stone@example.com"].active, true)
  r = w:usersync("sync", "--force")
  t:eq(r.code, 0, r.stderr)
  t:eq(w:accounts("jira")["bob.stone@example.com"].active, false)
end)

local LEADS_TO_SVC = { users = { project_lead = "svc-admin", component_lead = "svc-admin" } }

-- A Jira world after a first sync where bob leads project ABC and its
-- component, then leaves the app's scope.
local function lead_leaving(t)
  local jira = { users = { { name = "svc-admin", key = "K0", displayName = "Service",
                             emailAddress = "svc@example.com", active = true } },
                 groups = {}, members = {}, projects = {}, components = {} }
  local w = base_world { products = { "jira" }, jira = jira, sync = LEADS_TO_SVC }
  t:eq(w:usersync("sync").code, 0)
  local st = w.jira:state()
  st.projects = { { key = "ABC", name = "Alpha", lead = "bob.stone@example.com" } }
  st.components = { { id = "10001", project = "ABC", name = "Core", lead = "bob.stone@example.com" } }
  w.jira:put_state(st)
  w.app_users = { "00u1", "00u3" }
  w:load()
  return w
end

test("a Jira project lead leaving: leads handed over first, then deactivated", function(t)
  local w <close> = lead_leaving(t)
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  local st = w.jira:state()
  t:eq(st.projects[1].lead, "svc-admin")
  t:eq(st.components[1].lead, "svc-admin")
  t:eq(w:accounts("jira")["bob.stone@example.com"].active, false)
end)

test("a Jira lead leaving is planned once: the leads are read after the plan, once", function(t)
  local w <close> = lead_leaving(t)
  -- the policy's deprovision hook says each time it is asked
  local policy = w.dir .. "/policy.lua"
  local f = assert(io.open(policy, "w"))
  f:write([[
return {
  deprovision = function(account, reason, ctx)
    print("deprovision asked for " .. account.name)
    return "deactivate"
  end,
}
]])
  f:close()
  w:write_config({ policy = policy, users = LEADS_TO_SVC.users })
  w.jira:clear_requests()
  local r = w:usersync("plan")
  t:eq(r.code, 0, r.stderr)
  t:match(r.stdout, "hand over leads +bob%.stone@example%.com")
  local _, asked = r.stderr:gsub("deprovision asked for bob%.stone@example%.com", "")
  t:eq(asked, 1, "the plan asks the policy once per leaver")
  t:eq(w.jira:count{ path = "/project/ABC/components$", method = "GET" }, 1, "the leads are read once")
end)

test("Confluence seat limit reached: clear failure for the rest, exit 1, others applied", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "confluence" },
    confluence = { users = { { username = "admin", userKey = "k0", displayName = "Admin", email = "admin@example.com", disabled = false } },
                   groups = { "confluence-administrators" }, members = { ["confluence-administrators"] = { "admin" } },
                   license = { seats = 3 } } }
  local r = w:usersync("sync")
  t:eq(r.code, 1, r.stderr)
  local accounts = w:accounts("confluence")
  t:eq(#sorted_keys(accounts), 2, "two created: the third seat is the admin's")
  local h = w:usersync("show", "1")
  t:match(h.stdout, "failed +confluence +create_user +%S+ +.*ESEATS")
end)

test("two sources feeding one target: the first sets attributes, memberships are the union", function(t)
  local w <close> = base_world { products = { "jira" }, sync = {
    { name = "first", source = "okta", groups = { map = { Engineering = "developers" } } },
    { name = "second", source = "okta", groups = { map = { Ops = "operations", Engineering = "engineers" } } },
  } }
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:same(w:members_of("jira", "developers"), { "ann.lee@example.com", "bob.stone@example.com" })
  t:same(w:members_of("jira", "engineers"), { "ann.lee@example.com", "bob.stone@example.com" })
  t:same(w:members_of("jira", "operations"), { "carol.king@example.com" })
  t:eq(#sorted_keys(w:accounts("jira")), 3)
end)

test("a policy hook that raises fails that user with file and line; the run goes on", function(t)
  local w <close> = base_world { products = { "jira" } }
  local policy = w.dir .. "/policy.lua"
  local f = assert(io.open(policy, "w"))
  f:write([[
return {
  user = function(u, ctx)
    if u.profile.login:find("^bob") then
      error("no mapping for " .. u.profile.login)
    end
    return {}
  end,
}
]])
  f:close()
  w:write_config({ policy = policy })
  local r = w:usersync("sync")
  t:eq(r.code, 1, "the failing user makes the run partial")
  t:contains(r.stdout, policy .. ":4: no mapping for bob.stone@example.com")
  t:same(sorted_keys(w:accounts("jira")), { "ann.lee@example.com", "carol.king@example.com" })
end)

test("--user syncs one Okta user and nobody else", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "jira" } }
  local r = w:usersync("sync", "--user", "bob.stone@example.com")
  t:eq(r.code, 0, r.stderr)
  t:same(sorted_keys(w:accounts("jira")), { "bob.stone@example.com" })
end)

test("--user with a login Okta no longer has: the linked account is checked by its Okta id, not deprovisioned", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "jira" } }
  t:eq(w:usersync("sync").code, 0)
  w:find_user("00u1").profile.login = "ann.new@example.com"
  w:load()
  local r = w:usersync("sync", "--user", "ann.lee@example.com")
  t:eq(r.code, 0, r.stderr)
  t:eq(w:accounts("jira")["ann.lee@example.com"] and w:accounts("jira")["ann.lee@example.com"].active, nil,
    "renamed to the new login instead")
  t:eq(w:accounts("jira")["ann.new@example.com"].active, true, "still active: ann is still assigned in Okta")
end)

test("--user reads only that user's accounts: a few requests per target, never the whole listing", function(t)
  local w <close> = base_world { sync = MANUAL }
  t:eq(w:usersync("sync").code, 0)
  w:find_user("00u2").profile.email = "bob.new@example.com"
  w:find_user("00u2").profile.lastName = "Stoned"
  w:load()
  w:clear_requests()
  local r = w:usersync("sync", "--user", "bob.stone@example.com")
  t:eq(r.code, 0, r.stderr)
  t:eq(w:accounts("jira")["bob.stone@example.com"].emailAddress, "bob.new@example.com")
  t:eq(w:accounts("confluence")["bob.stone@example.com"].displayName, "bob Stoned")
  for _, p in ipairs({ "jira", "confluence", "bitbucket" }) do
    local reads = {}
    for _, q in ipairs(w[p]:requests()) do
      if q.method == "GET" then reads[#reads + 1] = q.path .. (q.query ~= "" and ("?" .. q.query) or "") end
    end
    -- the group names (one page here) and bob's account with its groups
    t:ok(#reads >= 2 and #reads <= 3, p .. ": " .. #reads .. " reads: " .. table.concat(reads, " "))
    for _, q in ipairs(reads) do
      t:ok(not q:find("ann") and not q:find("carol"), p .. " read another user's account: " .. q)
    end
  end
  -- Okta: bob, his app assignment, his groups
  local okta_reads = 0
  for _, q in ipairs(w.okta:requests()) do if q.method == "GET" then okta_reads = okta_reads + 1 end end
  t:eq(okta_reads, 3)
end)

test("--user after the Okta app was deleted: a failed read (exit 1), nobody deprovisioned", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "jira" } }
  t:eq(w:usersync("sync").code, 0)
  local st = w:okta_state()
  st.apps = {}
  w.okta:put_state(st)
  w:clear_requests()
  local r = w:usersync("sync", "--user", "bob.stone@example.com")
  t:eq(r.code, 1, r.stdout .. r.stderr)
  t:contains(r.stderr, "does not exist")
  t:eq(w:accounts("jira")["bob.stone@example.com"].active, true, "bob kept")
  t:eq(#w:writes("jira"), 0)
end)

test("--user with a search-scoped source (no app): a user outside the expression gets no account", function(t)
  local w <close> = world.new{ products = { "jira" }, sync = { source = "eng", groups = { mode = "manual", map = {} } } }
  w:okta_user("00u1", "ann.lee@example.com", { profile = { department = "Engineering" } })
  w:okta_user("00u2", "bob.stone@example.com", { profile = { department = "Sales" } })
  w:load()
  local f = assert(io.open(w.config)); local text = f:read("a"); f:close()
  text = text:gsub("  sources = {", ('  sources = {\n    eng = { type = "okta", url = %q, token = env "US_TEST_OKTA_TOKEN", search = %q },')
    :format(w.okta.url, 'profile.department eq "Engineering"'), 1)
  f = assert(io.open(w.config, "w")); f:write(text); f:close()
  local r = w:usersync("sync", "--user", "bob.stone@example.com")
  t:eq(r.code, 0, r.stderr)
  t:eq(w:accounts("jira")["bob.stone@example.com"], nil, "bob is in Sales: out of scope")
  r = w:usersync("sync", "--user", "ann.lee@example.com")
  t:eq(r.code, 0, r.stderr)
  t:ok(w:accounts("jira")["ann.lee@example.com"], "ann is in Engineering")
  -- a full sync agrees
  w:clear_requests()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:eq(#w:writes("jira"), 0, "the full sync finds nothing to change")
end)

test("a target that cannot be read gets no changes at all: exit 1, the reason shown", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "jira", "bitbucket" } }
  t:eq(w:usersync("sync").code, 0)
  w:okta_user("00u9", "new.person@example.com", { groups = { "00gEng" } })
  w:load()
  w.jira:faults{ fail_rate = 1.0, fail_status = 500, fail_path = "^/rest/api/2/group/member" }
  w:clear_requests()
  local r = w:usersync("sync")
  t:eq(r.code, 1, r.stderr)
  t:contains(r.stdout, "reading jira failed, nothing planned for it")
  t:eq(#w:writes("jira"), 0, "no blind writes to a target whose state is unknown")
  t:ok(w:accounts("bitbucket")["new.person@example.com"], "the other target is synced")
end)

test("an include_group hook that raises: the error is reported and no membership is taken away", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "jira" } }
  t:eq(w:usersync("sync").code, 0)
  local policy = w.dir .. "/groups-policy.lua"
  local f = assert(io.open(policy, "w"))
  f:write('return { include_group = function(g) if g.profile.name == "Ops" then error("cannot decide " .. g.profile.name) end return true end }\n')
  f:close()
  w:write_config({ policy = policy, groups = MANUAL.groups, defaults = MANUAL.defaults })
  local r = w:usersync("sync")
  t:eq(r.code, 1, r.stdout .. r.stderr) -- a policy error is a failure; the safety stop still withheld the removal
  t:contains(r.stdout, policy .. ":1: cannot decide Ops")
  t:same(w:members_of("jira", "operations"), { "carol.king@example.com" }, "membership kept")
end)

test("two sync entries: a user one entry drops but the other keeps is neither handed over nor deactivated", function(t)
  local jira = { users = { { name = "svc-admin", key = "K0", displayName = "Service", emailAddress = "svc@example.com", active = true } },
                 groups = {}, members = {}, projects = {}, components = {} }
  local src = os.getenv("SOURCE_DIR") or "."
  local w <close> = base_world { products = { "jira" }, jira = jira, sync = {
    { name = "first", source = "okta", users = { project_lead = "svc-admin", component_lead = "svc-admin" },
      groups = { map = { Engineering = "developers" }, keep_existing = false } },
    { name = "second", source = "okta", groups = { map = { Engineering = "developers", Ops = "developers" }, keep_existing = false } },
  } }
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  local creates = 0
  for _, q in ipairs(w:writes("jira")) do if q.method == "POST" and q.path == "/rest/api/2/user" then creates = creates + 1 end end
  t:eq(creates, 3, "each account created once, though two entries map it")
  t:same(w:members_of("jira", "developers"), { "ann.lee@example.com", "bob.stone@example.com", "carol.king@example.com" })
  -- bob leads a project; the first entry's policy leaves him out, the second still maps him
  local st = w.jira:state()
  st.projects = { { key = "ABC", name = "Alpha", lead = "bob.stone@example.com" } }
  w.jira:put_state(st)
  local policy = w.dir .. "/no-bob.lua"
  local f = assert(io.open(policy, "w"))
  f:write('return { user = function(u) if u.profile.login:find("^bob") then return nil end return {} end }\n')
  f:close()
  w:write_config({
    { name = "first", source = "okta", policy = policy, users = { project_lead = "svc-admin", component_lead = "svc-admin" },
      groups = { map = { Engineering = "developers" }, keep_existing = false } },
    { name = "second", source = "okta", groups = { map = { Engineering = "developers", Ops = "developers" }, keep_existing = false } },
  })
  w:clear_requests()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:eq(w:accounts("jira")["bob.stone@example.com"].active, true)
  t:eq(w.jira:state().projects[1].lead, "bob.stone@example.com", "no hand-over for an account still in scope")
  t:same(w:members_of("jira", "developers"), { "ann.lee@example.com", "bob.stone@example.com", "carol.king@example.com" },
    "memberships are the union: carol stays though the first entry would remove her")
  w:clear_requests()
  r = w:usersync("sync")
  t:eq(#w:writes("jira"), 0, "stable: the next sync writes nothing")
  -- One entry at a time (sync --sync NAME; serve runs each entry on its own
  -- schedule): the other entry's claims still protect bob.
  w:clear_requests()
  r = w:usersync("sync", "--sync", "first")
  t:eq(r.code, 0, r.stderr)
  t:eq(#w:writes("jira"), 0, "--sync first: bob is still claimed by the second entry")
  t:eq(w:accounts("jira")["bob.stone@example.com"].active, true)
  r = w:usersync("plan", "--sync", "first")
  t:ok(not r.stdout:find("\n%s+[-+~!] +deactivate"), r.stdout)
  t:contains(r.stdout, "still in scope of sync \"second\"; not applied")
  t:ok(not r.stdout:find("sync \"second\": source", 1, true), "only the asked entry is shown")
end)

test("plan --out then apply applies exactly that plan; a changed base is refused", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "jira" } }
  t:eq(w:usersync("sync").code, 0)
  w.app_users = { "00u1", "00u3" }
  w:load()
  local out = w.dir .. "/plan.json"
  local r = w:usersync("plan", "--out", out)
  t:eq(r.code, 0, r.stderr)
  -- bob is back before the plan is applied: its deactivation is no longer planned
  w.app_users = { "00u1", "00u2", "00u3" }
  w:load()
  r = w:usersync("apply", out)
  t:eq(r.code, 2)
  t:contains(r.stderr, "deactivate_user bob.stone@example.com in jira is no longer planned")
  t:eq(w:accounts("jira")["bob.stone@example.com"].active, true)
  w.app_users = { "00u1", "00u3" }
  w:load()
  r = w:usersync("apply", out)
  t:eq(r.code, 0, r.stderr)
  t:eq(w:accounts("jira")["bob.stone@example.com"].active, false)
end)

test("a run killed during apply is safe to repeat: the next sync converges, no duplicates, nothing lost", function(t)
  local w <close> = world.new { products = { "jira" }, sync = MANUAL }
  w:okta_group("00gEng", "Engineering")
  local ids = {}
  for i = 1, 30 do
    local id = ("00u%02d"):format(i)
    ids[#ids + 1] = id
    w:okta_user(id, ("user%02d@example.com"):format(i), { groups = { "00gEng" } })
  end
  w:load()
  w.jira:faults{ latency_ms = 150 }
  -- Start a sync and kill it (SIGKILL) once Jira has served 5 account creations.
  local argv = { os.getenv("USERSYNC"), "sync", "-c", w.config }
  local q = {}
  for i, a in ipairs(argv) do q[i] = "'" .. a:gsub("'", "'\\''") .. "'" end
  local p = io.popen(("US_TEST_OKTA_TOKEN=test-token US_TEST_ATL_TOKEN=test-token %s >/dev/null 2>&1 & echo $!"):format(table.concat(q, " ")))
  local pid = assert(math.tointeger(tonumber(p:read("l"))))
  p:close()
  local creates, deadline = 0, os.time() + 60
  while creates < 5 and os.time() < deadline do
    creates = 0
    for _, req in ipairs(w.jira:requests()) do
      if req.method == "POST" and req.path == "/rest/api/2/user" then creates = creates + 1 end
    end
  end
  os.execute("kill -9 " .. pid .. " 2>/dev/null")
  t:ok(creates >= 5, "the sync reached the account creations")
  -- Requests the killed process had in flight still complete on the server
  -- (as they would on a real one): wait until the request log is quiet.
  local time = require "usersync.time"
  local last, quiet_since = -1, time.monotonic()
  local stop_at = time.monotonic() + 120
  while time.monotonic() < stop_at do
    local n = #w.jira:requests()
    if n ~= last then last, quiet_since = n, time.monotonic()
    elseif time.monotonic() - quiet_since > 3.0 then break end
    time.sleep(0.1)
  end
  local partial = #sorted_keys(w:accounts("jira"))
  t:ok(partial > 0 and partial < 30, ("killed midway (%d of 30 accounts created)"):format(partial))
  w.jira:faults{}
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  local accounts = w:accounts("jira")
  t:eq(#sorted_keys(accounts), 30, "every account exactly once")
  t:eq(#w:members_of("jira", "developers"), 30)
  t:eq(#w:members_of("jira", "new-hires"), 30, "no new-hire group lost for accounts created by the killed run")
  local h = w:usersync("history")
  t:match(h.stdout, "interrupted")
  w:clear_requests()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  local writes = w:writes("jira")
  local seen = {}
  for _, q in ipairs(writes) do seen[#seen + 1] = q.method .. " " .. q.path .. " " .. tostring(q.status) end
  t:eq(#writes, 0, "converged: the next sync writes nothing: " .. table.concat(seen, ", ") .. "\n" .. r.stdout)
end)

return test.done()
