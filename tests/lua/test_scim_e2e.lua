-- SCIM sources end to end (issue 18): the real `usersync serve` with SCIM
-- endpoints, identity providers' pushes over HTTP, the store, and the runs
-- they trigger against the Jira simulator — creation, profile update,
-- deactivation, group push, deletion, two identity providers side by side —
-- and `plan`, `sync`, `history` on a SCIM source from the command line.
local test = require "tap"
local world = require "support.world"
local serve = require "support.serve"
local json = require "usersync.json"

local ENTRA = "entra-scim-token-0123456789abcdef"
local OKTA = "okta-scim-token-fedcba9876543210"
local USER = "urn:ietf:params:scim:schemas:core:2.0:User"
local GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
local PATCHOP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

local SERVE = [[
  serve = { listen = "127.0.0.1:0" },]]

-- A world with Jira and the scim sources entra (and oktascim), sync entries
-- given (default: entra -> jira, Engineering -> developers).
local function scim_world(sync)
  sync = sync or { { name = "entra", source = "entra", targets = { "jira" },
    groups = { mode = "manual", map = { Engineering = { "developers" } } },
    defaults = { all_users = { "scim-synced" } } } }
  return world.new{ products = { "jira" }, sync = sync, extra = {
    sources = { entra = { type = "scim", token = ENTRA }, oktascim = { type = "scim", token = OKTA } },
    raw = SERVE } }
end

-- A push: method, path under /scim/v2/<source>, body (table), token.
local function push(d, source, token, method, path, body)
  local r = d:request(method, "/scim/v2/" .. source .. path, body and json.encode(body) or nil,
    { Authorization = "Bearer " .. token, ["Content-Type"] = "application/scim+json" })
  return r.status, (r.body and r.body ~= "") and json.decode(r.body) or nil, r
end

local function new_user(login, given, family)
  return { schemas = { USER }, userName = login, name = { givenName = given, familyName = family },
           displayName = given .. " " .. family, active = true,
           emails = { { value = login, type = "work", primary = true } } }
end

test("push -> store -> run -> Jira: create, group push, update, deactivation, deletion", function(t)
  local w <close> = scim_world()
  local d <close> = serve.start(w)
  local s, ann = push(d, "entra", ENTRA, "POST", "/Users", new_user("ann.lee@example.com", "Ann", "Lee"))
  t:eq(s, 201)
  local _, bob = push(d, "entra", ENTRA, "POST", "/Users", new_user("bob.stone@example.com", "Bob", "Stone"))
  local sg, g = push(d, "entra", ENTRA, "POST", "/Groups", { schemas = { GROUP }, displayName = "Engineering",
    members = { { value = ann.id } } })
  t:eq(sg, 201)
  local got = serve.wait_for(function()
    local a = w:accounts("jira")
    return a["ann.lee@example.com"] and a["bob.stone@example.com"] and #w:members_of("jira", "developers") == 1
      and #w:members_of("jira", "scim-synced") == 2 and a
  end, 60)
  t:ok(got, "both pushed users reached Jira")
  if not got then return end
  t:eq(got["ann.lee@example.com"].displayName, "Ann Lee")
  t:eq(got["ann.lee@example.com"].emailAddress, "ann.lee@example.com")
  t:same(w:members_of("jira", "developers"), { "ann.lee@example.com" })
  t:same(w:members_of("jira", "scim-synced"), { "ann.lee@example.com", "bob.stone@example.com" })
  t:ok(d:find_log("SCIM: pushed users are waiting to be synced"), "the pushes were batched into the waiting list")

  -- group push: bob joins by PATCH of members
  w:clear_requests()
  t:eq((push(d, "entra", ENTRA, "PATCH", "/Groups/" .. g.id, { schemas = { PATCHOP }, Operations = {
    { op = "add", path = "members", value = { { value = bob.id } } } } })), 204)
  t:ok(serve.wait_for(function() return #w:members_of("jira", "developers") == 2 end, 60), "bob joined developers")

  -- profile update by PUT
  local upd = new_user("bob.stone@example.com", "Robert", "Stone")
  t:eq((push(d, "entra", ENTRA, "PUT", "/Users/" .. bob.id, upd)), 200)
  t:ok(serve.wait_for(function()
    return w:accounts("jira")["bob.stone@example.com"].displayName == "Robert Stone"
  end, 60), "the new display name reached Jira")

  -- deactivation: PATCH active false deactivates the account through the engine
  t:eq((push(d, "entra", ENTRA, "PATCH", "/Users/" .. ann.id, { schemas = { PATCHOP }, Operations = {
    { op = "replace", value = { active = false } } } })), 200)
  t:ok(serve.wait_for(function() return w:accounts("jira")["ann.lee@example.com"].active == false end, 60),
    "ann is deactivated in Jira")

  -- deletion: the account leaves scope (deactivate is the sync's deprovisioning)
  t:eq((push(d, "entra", ENTRA, "DELETE", "/Users/" .. bob.id)), 204)
  t:ok(serve.wait_for(function() return w:accounts("jira")["bob.stone@example.com"].active == false end, 60),
    "bob is deactivated in Jira after his deletion")
  t:eq(d:stop(), 0)

  -- the store is the source's truth for the command line too
  local r = w:usersync("plan")
  t:eq(r.code, 0, r.stderr)
  t:match(r.stdout, "[Nn]o changes")
  r = w:usersync("history")
  t:eq(r.code, 0)
  t:match(r.stdout, "event")
end)

test("plan and sync --user on a SCIM source from the command line; the store holds the truth", function(t)
  local w <close> = scim_world()
  local d <close> = serve.start(w)
  push(d, "entra", ENTRA, "POST", "/Users", new_user("cara.diaz@example.com", "Cara", "Diaz"))
  t:ok(serve.wait_for(function() return w:accounts("jira")["cara.diaz@example.com"] end, 60))
  t:eq(d:stop(), 0)
  -- Jira loses cara's display name by hand; a sync from the store puts it back
  local st = w.jira:state()
  for _, u in ipairs(st.users) do if u.name == "cara.diaz@example.com" then u.displayName = "Someone Else" end end
  w.jira:put_state(world.arrays(st))
  local r = w:usersync("plan", "--user", "cara.diaz@example.com")
  t:eq(r.code, 0, r.stderr)
  t:match(r.stdout, "Cara Diaz")
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:eq(w:accounts("jira")["cara.diaz@example.com"].displayName, "Cara Diaz")
  r = w:usersync("check")
  t:match(r.stdout, "source entra %(scim, pushed to /scim/v2/entra/%): ok")
  t:match(r.stdout, "1 users and 0 groups pushed so far")
end)

test("two identity providers side by side feed two sync entries into one Jira", function(t)
  local w <close> = scim_world{
    { name = "entra", source = "entra", targets = { "jira" },
      groups = { mode = "manual", map = { Engineering = { "developers" } } } },
    { name = "okta-scim", source = "oktascim", targets = { "jira" },
      groups = { mode = "manual", map = { Contractors = { "contractors" } } } },
  }
  local d <close> = serve.start(w)
  local _, a = push(d, "entra", ENTRA, "POST", "/Users", new_user("dana@example.com", "Dana", "Ek"))
  local _, b = push(d, "oktascim", OKTA, "POST", "/Users", new_user("eli@example.com", "Eli", "Fox"))
  push(d, "entra", ENTRA, "POST", "/Groups", { schemas = { GROUP }, displayName = "Engineering", members = { { value = a.id } } })
  push(d, "oktascim", OKTA, "POST", "/Groups", { schemas = { GROUP }, displayName = "Contractors", members = { { value = b.id } } })
  -- a token is good for its own source only
  t:eq((push(d, "oktascim", ENTRA, "GET", "/Users")), 401)
  local ok = serve.wait_for(function()
    return #w:members_of("jira", "developers") == 1 and #w:members_of("jira", "contractors") == 1
  end, 60)
  t:ok(ok, "both identity providers' users and groups reached Jira")
  t:same(w:members_of("jira", "developers"), { "dana@example.com" })
  t:same(w:members_of("jira", "contractors"), { "eli@example.com" })
  -- each source sees only its own users
  local _, l = push(d, "entra", ENTRA, "GET", "/Users")
  t:eq(l.totalResults, 1)
  t:eq(d:stop(), 0)
end)

test("deactivation through SCIM is held by the sync's safety limit like any deprovisioning", function(t)
  local w <close> = scim_world{ { name = "entra", source = "entra", targets = { "jira" },
    limits = { max_deprovision = 0 } } }
  local d <close> = serve.start(w)
  local ids = {}
  for i, n in ipairs{ "gus", "hal", "ivy" } do
    local _, u = push(d, "entra", ENTRA, "POST", "/Users", new_user(n .. "@example.com", n, "Test"))
    ids[i] = u.id
  end
  t:ok(serve.wait_for(function()
    local a = w:accounts("jira")
    return a["gus@example.com"] and a["hal@example.com"] and a["ivy@example.com"]
  end, 60), "three users provisioned")
  for _, id in ipairs(ids) do
    t:eq((push(d, "entra", ENTRA, "PATCH", "/Users/" .. id, { schemas = { PATCHOP }, Operations = {
      { op = "Replace", path = "active", value = "False" } } })), 200)
  end
  local rec = serve.wait_for(function()
    for _, r in ipairs(d:log()) do
      if r.msg == "run finished" and r.exit == 3 then return r end
    end
  end, 60)
  t:ok(rec, "the run that would deactivate them stopped at the limit (exit 3)")
  local a = w:accounts("jira")
  for _, n in ipairs{ "gus", "hal", "ivy" } do
    t:eq(a[n .. "@example.com"].active, true, n .. " is still active")
  end
  t:eq(d:stop(), 0)
  -- the admin reviews and forces it
  local r = w:usersync("sync", "--force")
  t:eq(r.code, 0, r.stderr)
  a = w:accounts("jira")
  for _, n in ipairs{ "gus", "hal", "ivy" } do t:eq(a[n .. "@example.com"].active, false, n .. " deactivated") end
end)

test("an identity provider that deletes every user is a safety stop, not everyone leaving", function(t)
  local w <close> = scim_world{ { name = "entra", source = "entra", targets = { "jira" } } }
  local d <close> = serve.start(w)
  local ids = {}
  for i, n in ipairs{ "lea", "max" } do
    local _, u = push(d, "entra", ENTRA, "POST", "/Users", new_user(n .. "@example.com", n, "Test"))
    ids[i] = u.id
  end
  t:ok(serve.wait_for(function()
    local a = w:accounts("jira")
    return a["lea@example.com"] and a["max@example.com"]
  end, 60), "provisioned")
  t:eq(d:stop(), 0)
  -- the first full run records how many users were in scope
  t:eq(w:usersync("sync").code, 0)
  -- the deletions as the endpoint stores them (no serve: no event run of the two)
  local db = assert(require("usersync.state").open(w.dir .. "/usersync.db"))
  local sp = require("usersync.scim").new(db, "entra")
  for _, id in ipairs(ids) do t:eq((sp:handle{ method = "DELETE", path = "/Users/" .. id }), 204) end
  db:close()
  local r = w:usersync("sync")
  t:eq(r.code, 3, "a safety stop")
  t:match(r.stdout .. r.stderr, "no users were pushed to entra %(all deleted%); the last run had 2")
  local a = w:accounts("jira")
  t:eq(a["lea@example.com"].active, true); t:eq(a["max@example.com"].active, true)
end)

test("an acknowledged push survives a crash: after a restart its users are synced", function(t)
  local w <close> = scim_world()
  local d = serve.start(w)
  local s = push(d, "entra", ENTRA, "POST", "/Users", new_user("kim@example.com", "Kim", "Lo"))
  t:eq(s, 201)
  -- killed within the quiet period, before any run
  d:signal("KILL")
  d.stopped = serve.wait_for(function() return d:exit_code() end, 120) or -1 -- (d2 reuses the exit file)
  d.client:close()
  t:eq(w:accounts("jira")["kim@example.com"], nil, "no run happened before the kill")
  local d2 <close> = serve.start(w)
  t:ok(serve.wait_for(function() return w:accounts("jira")["kim@example.com"] end, 60),
    "the push stored before the crash was synced after the restart")
  local _, l = push(d2, "entra", ENTRA, "GET", "/Users?filter=" .. 'userName%20eq%20%22kim%40example.com%22')
  t:eq(l.totalResults, 1)
  t:eq(d2:stop(), 0)
end)

return test.done()
