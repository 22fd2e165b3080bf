-- End-to-end scenarios for the SCIM target (type "scim"): the real
-- `usersync` binary syncs the Okta simulator into the SCIM simulator, generic
-- (/scim/v2) and Atlassian-flavoured (/scim/directory/test-directory),
-- asserting the service's state after each run and the requests it served:
-- first sync and a zero-write re-sync, adoption, ownership and
-- keep_existing, default groups, deprovisioning by active:false (PATCH,
-- or GET + PUT where the provider has no PATCH), delete only where
-- configured, --user, safety limits (deprovisions, membership removals),
-- check, ids kept by the plan and by the links (schema v5), and a serve
-- event (sync at login) into the SCIM target.
local test = require "tap"
local world = require "support.world"
local json = require "usersync.json"

local MANUAL = { groups = { mode = "manual", map = { Engineering = { "developers" }, Ops = { "operations" } } },
                 defaults = { new_users = { "new-hires" }, all_users = { "okta-synced" } } }
local FLAVOURS = { "scim", "atlassian" }
local ALL = { "ann.lee@example.com", "bob.stone@example.com", "carol.king@example.com" }

local sorted_keys = world.sorted_keys

local function group_names(w, p)
  local out = {}
  for _, g in ipairs(w[p]:state().groups) do out[#out + 1] = g.displayName end
  table.sort(out)
  return out
end

-- A SCIM User resource for a simulator state.
local function scim_user(id, name, opts)
  opts = opts or {}
  return { id = id, userName = name, displayName = opts.displayName or name,
           emails = json.array{ { value = opts.email or name:lower(), primary = true, type = "work" } },
           active = opts.active ~= false, externalId = opts.externalId,
           schemas = json.array{ "urn:ietf:params:scim:schemas:core:2.0:User" } }
end

local function scim_group(id, name, member_ids)
  local m = {}
  for i, v in ipairs(member_ids or {}) do m[i] = { value = v, type = "User" } end
  return { id = id, displayName = name, members = json.array(m),
           schemas = json.array{ "urn:ietf:params:scim:schemas:core:2.0:Group" } }
end

for _, p in ipairs(FLAVOURS) do
  test(p .. ": first sync into an empty service, then a re-sync makes zero writes", function(t)
    local w <close> = world.small { sync = MANUAL, products = { p } }
    local r = w:usersync("sync")
    t:eq(r.code, 0, r.stderr)
    t:same(sorted_keys(w:accounts(p)), ALL)
    t:same(w:members_of(p, "developers"), { "ann.lee@example.com", "bob.stone@example.com" })
    t:same(w:members_of(p, "operations"), { "carol.king@example.com" })
    t:same(w:members_of(p, "new-hires"), ALL)
    t:same(w:members_of(p, "okta-synced"), ALL)
    local ann = w:accounts(p)["ann.lee@example.com"]
    t:eq(ann.displayName, "ann lee")
    t:eq(ann.emails[1].value, "ann.lee@example.com")
    t:eq(ann.active, true)
    t:eq(ann.externalId, "00u1", "the Okta user id, as Okta's own SCIM client sets it")
    -- 4 groups, 3 users, and one membership PATCH per group (bulk adds)
    t:eq(w[p]:count{ method = "POST", path = "/Groups$" }, 4)
    t:eq(w[p]:count{ method = "POST", path = "/Users$" }, 3)
    t:eq(w[p]:count{ method = "PATCH", path = "/Groups/" }, 4)
    w:clear_requests()
    r = w:usersync("sync")
    t:eq(r.code, 0, r.stderr)
    t:eq(#w:writes(p), 0, "a second sync must make no write request")
    t:contains(r.stdout, "applied 0 changes")
    -- what the re-sync read: the config, one page of users, one of groups
    t:eq(w[p]:count{ method = "GET", path = "/Users$" }, 1)
    t:eq(w[p]:count{ method = "GET", path = "/Groups$" }, 1)
  end)

  test(p .. ": adoption by userName (case-insensitive) addresses the account by its id", function(t)
    local w <close> = world.small { sync = MANUAL, products = { p }, [p] = {
      users = { scim_user("id-ann", "ANN.LEE@example.com", { displayName = "Old Name" }) },
      groups = { scim_group("id-dev", "developers", { "id-ann" }) } } }
    local r = w:usersync("sync")
    t:eq(r.code, 0, r.stderr)
    local acc = w:accounts(p)
    t:same(sorted_keys(acc), ALL, "adopted, not duplicated")
    t:eq(acc["ann.lee@example.com"].id, "id-ann")
    t:eq(acc["ann.lee@example.com"].userName, "ANN.LEE@example.com", "keeps its spelling")
    t:eq(acc["ann.lee@example.com"].displayName, "ann lee", "updated")
    t:same(w:members_of(p, "new-hires"), { "bob.stone@example.com", "carol.king@example.com" },
      "no new-hire group for an adopted account")
    -- the update went to the id from the snapshot, without a lookup by name
    t:eq(w[p]:count{ method = "GET", path = "/Users$", query = "filter" }, 0, "no lookup")
    t:ok(w[p]:count{ path = "^/scim/.*/Users/id%-ann$" } >= 1, "addressed by id")
  end)

  test(p .. ": deprovisioning deactivates (active:false), the account stays", function(t)
    local w <close> = world.small { sync = MANUAL, products = { p } }
    t:eq(w:usersync("sync").code, 0)
    w.users[3].status = "DEPROVISIONED"
    w:load()
    w:clear_requests()
    local r = w:usersync("sync")
    t:eq(r.code, 0, r.stderr)
    local carol = w:accounts(p)["carol.king@example.com"]
    t:ok(carol, "not deleted")
    t:eq(carol.active, false)
    t:eq(w[p]:count{ method = "DELETE" }, 0)
    t:eq(w[p]:count{ method = "PATCH", path = "/Users/" }, 1, "one PATCH")
    if p == "atlassian" then
      local acc
      for _, a in ipairs(w[p]:state().accounts) do
        if a.email == "carol.king@example.com" then acc = a end
      end
      t:eq(acc.active, true, "PATCH active:false keeps the managed account (only DELETE deactivates it)")
    end
    -- she comes back: reactivated, same account
    w.users[3].status = "ACTIVE"
    w:load()
    r = w:usersync("sync")
    t:eq(r.code, 0, r.stderr)
    t:eq(w:accounts(p)["carol.king@example.com"].active, true)
  end)
end

test("scim: a provider without PATCH gets GET + PUT with every attribute kept", function(t)
  local w <close> = world.small { sync = MANUAL, products = { "scim" } }
  t:eq(w:usersync("sync").code, 0)
  w.scim:faults{ patch_supported = false }
  -- an attribute an admin set in the service survives the PUT
  local st = w.scim:state()
  for _, u in ipairs(st.users) do if u.userName == "carol.king@example.com" then u.title = "Boss" end end
  w.scim:put_state(st)
  w.users[3].status = "SUSPENDED"
  w:load()
  w:clear_requests()
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  local carol = w:accounts("scim")["carol.king@example.com"]
  t:eq(carol.active, false)
  t:eq(carol.title, "Boss", "PUT kept the attribute an admin set")
  t:eq(w.scim:count{ method = "PATCH", path = "/Users/" }, 0)
  t:eq(w.scim:count{ method = "PUT", path = "/Users/" }, 1)
end)

test("atlassian: delete only where users.delete allows it, with the plan saying it cannot be undone", function(t)
  local sync = world.clone(MANUAL)
  sync.deprovision = "delete"
  local w <close> = world.small { sync = sync, products = { "atlassian" } }
  t:eq(w:usersync("sync").code, 0)
  w.users[2].status = "DEPROVISIONED"
  w.app_users = { "00u1", "00u3" } -- bob leaves the app: the policy's deprovision applies
  w:load()
  local r = w:usersync("plan")
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "deactivate")
  t:eq(w.atlassian:count{ method = "DELETE" }, 0)
  sync.users = { delete = true }
  w:write_config(sync)
  r = w:usersync("plan")
  t:contains(r.stdout, "cannot be undone")
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:eq(w:accounts("atlassian")["bob.stone@example.com"], nil, "deleted")
  local bob
  for _, a in ipairs(w.atlassian:state().accounts) do if a.email == "bob.stone@example.com" then bob = a end end
  t:eq(bob.active, false, "Atlassian deactivated the managed account")
end)

test("keep_existing and ownership: a group member usersync did not add stays", function(t)
  local w <close> = world.small { sync = MANUAL, products = { "atlassian" }, atlassian = {
    users = { scim_user("id-zed", "zed@example.com") },
    groups = { scim_group("id-dev", "developers", { "id-zed" }) } } }
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:same(w:members_of("atlassian", "developers"), { "ann.lee@example.com", "bob.stone@example.com", "zed@example.com" })
  -- ann leaves Engineering: the membership usersync gave is taken back
  w.members["00gEng"] = { "00u2" }
  w:load()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:same(w:members_of("atlassian", "developers"), { "bob.stone@example.com", "zed@example.com" })
  t:eq(w:accounts("atlassian")["zed@example.com"].active, true, "not ours: untouched")
end)

test("atlassian: a login change is never a rename (userName is immutable there)", function(t)
  local w <close> = world.small { sync = MANUAL, products = { "atlassian" } }
  t:eq(w:usersync("sync").code, 0)
  w.users[1].profile.login = "ann.new@example.com"
  w:load()
  local r = w:usersync("plan")
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "cannot rename accounts")
  t:ok(not r.stdout:find("rename user"), "no rename planned")
  w:clear_requests()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:eq(w.atlassian:count{ method = "PATCH", path = "/Users/" }, 0)
end)

test("scim: a login change renames the account in place (same id)", function(t)
  local w <close> = world.small { sync = MANUAL, products = { "scim" } }
  t:eq(w:usersync("sync").code, 0)
  local id = w:accounts("scim")["ann.lee@example.com"].id
  w.users[1].profile.login = "ann.new@example.com"
  w:load()
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  local acc = w:accounts("scim")
  t:eq(acc["ann.lee@example.com"], nil)
  t:eq(acc["ann.new@example.com"].id, id)
end)

test("--user syncs one user with lookups by userName filter", function(t)
  local w <close> = world.small { sync = MANUAL, products = { "atlassian" } }
  local r = w:usersync("sync", "--user", "bob.stone@example.com")
  t:eq(r.code, 0, r.stderr)
  t:same(sorted_keys(w:accounts("atlassian")), { "bob.stone@example.com" })
  t:same(w:members_of("atlassian", "developers"), { "bob.stone@example.com" })
  t:ok(w.atlassian:count{ method = "GET", path = "/Users$", query = "filter=userName" } >= 1)
end)

test("safety limit: max_deprovision stops a mass deactivation", function(t)
  local sync = world.clone(MANUAL)
  sync.limits = { max_deprovision = 1 }
  local w <close> = world.small { sync = sync, products = { "scim" } }
  t:eq(w:usersync("sync").code, 0)
  w.app_users = {}
  w:load()
  w:clear_requests()
  local r = w:usersync("sync")
  t:ok(r.code ~= 0, "stopped")
  t:eq(#w:writes("scim"), 0, "nothing deactivated")
  for _, n in ipairs(ALL) do t:eq(w:accounts("scim")[n].active, true) end
end)

test("check: reachable, PATCH support, a wrong directory", function(t)
  local w <close> = world.small { sync = MANUAL, products = { "atlassian" } }
  local r = w:usersync("check")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:contains(r.stdout, "Atlassian Cloud user provisioning")
  local cfg = assert(io.open(w.config)):read("a")
  local bad = cfg:gsub("/scim/directory/test%-directory", "/scim/directory/other")
  local f = assert(io.open(w.config, "w")); f:write(bad); f:close()
  r = w:usersync("check")
  t:ok(r.code ~= 0, "a wrong directory fails the check")
  t:contains(r.stdout, "directory other not found; is url the service's SCIM base URL")
end)

test("config: flavour must be one the type has; scim needs a token", function(t)
  local w <close> = world.small { sync = MANUAL, products = { "scim" } }
  local cfg = assert(io.open(w.config)):read("a")
  local bad = cfg:gsub('type = "scim",', 'type = "scim", flavour = "azure",')
  local f = assert(io.open(w.config, "w")); f:write(bad); f:close()
  local r = w:usersync("check")
  t:ok(r.code ~= 0)
  t:contains(r.stdout .. r.stderr, 'expected one of "atlassian" for type "scim", got "azure"')
end)
test("scim: a linked account renamed in the service is found by its id (never created twice)", function(t)
  local w <close> = world.small { sync = MANUAL, products = { "scim" } }
  t:eq(w:usersync("sync").code, 0)
  -- the links learn the ids from the next read (a create's answer is not kept)
  t:eq(w:usersync("sync").code, 0)
  local st = w.scim:state()
  local carol_id
  for _, u in ipairs(st.users) do
    if u.userName == "carol.king@example.com" then u.userName = "carol.renamed"; carol_id = u.id end
  end
  w.scim:put_state(st)
  local r = w:usersync("plan")
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, 'linked account "carol.king@example.com" is named "carol.renamed" in scim now')
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  local acc = w:accounts("scim")
  t:same(sorted_keys(acc), ALL, "renamed back, not created again")
  t:eq(acc["carol.king@example.com"].id, carol_id)
  -- renamed again, then deprovisioned: the linked account (by id) is deactivated
  st = w.scim:state()
  for _, u in ipairs(st.users) do if u.id == carol_id then u.userName = "carol.other" end end
  w.scim:put_state(st)
  w.users[3].status = "SUSPENDED"
  w:load()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  acc = w:accounts("scim")
  t:same(sorted_keys(acc), ALL, "one account each: " .. table.concat(sorted_keys(acc), " "))
  t:eq(acc["carol.king@example.com"].id, carol_id)
  t:eq(acc["carol.king@example.com"].active, false, "the linked account is deactivated")
end)

test("keep_existing = false: a linked account's managed groups are exactly the rules' (removal by id)", function(t)
  local sync = world.clone(MANUAL)
  sync.groups.keep_existing = false
  local w <close> = world.small { sync = sync, products = { "scim" }, scim = {
    users = { scim_user("id-ann", "ann.lee@example.com"), scim_user("id-zed", "zed@example.com") },
    groups = { scim_group("id-ops", "operations", { "id-ann", "id-zed" }) } } }
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:same(w:members_of("scim", "operations"), { "carol.king@example.com", "zed@example.com" },
    "ann (linked) is not in Ops: removed; zed is not usersync's: kept")
  t:eq(w.scim:count{ method = "PATCH", path = "/Groups/id%-ops$" }, 2, "one add (carol), one remove (ann)")
end)

test("safety limit: max_membership_removals stops mass removals", function(t)
  local sync = world.clone(MANUAL)
  sync.limits = { max_membership_removals = 1 }
  local w <close> = world.small { sync = sync, products = { "atlassian" } }
  t:eq(w:usersync("sync").code, 0)
  w.members["00gEng"] = {}
  w:load()
  w:clear_requests()
  local r = w:usersync("sync")
  t:ok(r.code ~= 0, "stopped")
  t:eq(w.atlassian:count{ method = "PATCH" }, 0, "no membership removed")
  t:same(w:members_of("atlassian", "developers"), { "ann.lee@example.com", "bob.stone@example.com" })
end)

test("serve: a user.session.start event syncs that user into the SCIM target", function(t)
  local serve = require "support.serve"
  local HOOK = "/hooks/okta"
  local raw = ([[
  serve = { listen = "127.0.0.1:0", okta_hook = { path = %q, secret = env "US_TEST_HOOK_SECRET" } },]]):format(HOOK)
  local w <close> = world.new { products = { "atlassian" }, sync = MANUAL, extra = { raw = raw } }
  w:okta_group("00gEng", "Engineering")
  w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gEng" } })
  w:okta_user("00u2", "bob.stone@example.com", { groups = { "00gEng" } })
  w:load()
  local f = assert(io.open(os.getenv("DATA_DIR") .. "/fixtures/okta/docs_event_hook_delivery_user_session_start.json"))
  local body = assert(json.decode(f:read("a"))).body
  f:close()
  local ev = body.data.events[1]
  ev.uuid = "f1d0b993-cc19-11ed-a688-00000000sc01"
  ev.actor = { id = "00u2", type = "User", alternateId = "bob.stone@example.com", displayName = "bob" }
  ev.outcome = { result = "SUCCESS" }
  body.data.events = json.array{ ev }
  local d <close> = serve.start(w)
  local r = d:post(HOOK, assert(json.encode(body)),
    { Authorization = "hook-secret-value", ["Content-Type"] = "application/json" })
  t:eq(r.status, 200)
  local bob = serve.wait_for(function() return w:accounts("atlassian")["bob.stone@example.com"] end, 60)
  t:ok(bob, "bob's account created after his login")
  t:eq(bob and bob.externalId, "00u2")
  t:same(w:members_of("atlassian", "developers"), { "bob.stone@example.com" }, "only bob: ann did not sign in")
  t:eq(d:stop(), 0)
end)

return test.done()
