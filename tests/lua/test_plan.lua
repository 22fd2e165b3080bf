-- Tests of the planner (usersync.plan) with the default policy: the
-- sync semantics on plain snapshots, no servers.
local test = require "tap"
local plan = require "usersync.plan"
local policy = require "usersync.policy"
local config = require "usersync.config"
local proc = require "support.proc"
local accountset = require "usersync.accountset"
local linkset = require "usersync.linkset"
local json = require "usersync.json"

local userset = require "usersync.userset"

local set_plans = 0 -- plans also made from an account set (build)
local link_plans = 0 -- plans also made from a link set (build)
local user_set_plans = 0 -- plans also made from a user set (build)

local function sync_entry(over)
  local t = { name = "main", source = "okta", targets = { "jira" } }
  for k, v in pairs(over or {}) do t[k] = v end
  local cfg, errors = config.validate({
    sources = { okta = { type = "okta", url = "https://x.okta.com", token = "t0ken-value" } },
    targets = { jira = { type = "jira", url = "https://jira", token = "pat-value" },
                wiki = { type = "confluence", url = "https://wiki", token = "pat-value" },
                git = { type = "bitbucket", url = "https://git", token = "pat-value" } },
    sync = { t },
  })
  assert(#errors == 0, table.concat(errors, "\n"))
  return cfg.sync[1]
end

local function user(id, login, over)
  local first, last = login:match("^(%w+)%.?(%w*)")
  local u = { id = id, status = "ACTIVE", groups = {},
    profile = { login = login, email = login, firstName = first, lastName = last ~= "" and last or "X" } }
  for k, v in pairs(over or {}) do u[k] = v end
  return u
end

local function group(id, name, gtype)
  return { id = id, type = gtype or "OKTA_GROUP", profile = { name = name } }
end

local DEFAULT = assert(policy.load(nil))

-- The accounts of a list in a usersync.accountset, as a whole read holds them.
local function as_set(list)
  local set = accountset.new()
  for _, a in ipairs(list) do
    set:add(a)
    for _, g in ipairs(a.groups or {}) do set:add_member(a.name, g) end
  end
  return set
end

-- The links, their ids and owned memberships of a plan's input in a
-- usersync.linkset, as state.linkset reads a whole target's from the store;
-- nil when the tables hold what the store cannot (an owned membership of
-- an account no link names).
local function as_linkset(t)
  local set, ids, okta_of = linkset.new(), {}, {}
  for id in pairs(t.links or {}) do ids[#ids + 1] = id end
  table.sort(ids)
  for _, id in ipairs(ids) do
    set:add(id, t.links[id], (t.link_ids or {})[id])
    okta_of[t.links[id]:lower()] = id
  end
  for g, accounts in pairs(t.owned_memberships or {}) do
    for a, why in pairs(accounts) do
      if not okta_of[a] then return nil end
      set:own(g, okta_of[a], why ~= true and why or nil)
    end
  end
  return set
end

-- The Okta users of a list in a usersync.userset, as a compact scope read
-- holds them (keeping every field the users have); nil when a user has no
-- string id (a set cannot hold it).
local function as_userset(list)
  local top, prof, seen, pseen = { "id", "status" }, {}, { id = true, status = true }, {}
  for _, u in ipairs(list) do
    if type(u.id) ~= "string" then return nil end
    for k in pairs(u) do
      if type(k) == "string" and not seen[k] then seen[k] = true; top[#top + 1] = k end
    end
    for k in pairs(type(u.profile) == "table" and u.profile or {}) do
      if not pseen[k] then pseen[k] = true; prof[#prof + 1] = k end
    end
  end
  local set = userset.new{ top = top, profile = prof }
  for _, u in ipairs(list) do
    set:add(u)
    for _, g in ipairs(u.groups or {}) do set:add_members({ u.id }, g) end
  end
  set:finish()
  return set
end

-- What a plan decided, as text to compare (the leavers by name).
local function decided(p)
  local ops, leavers = {}, {}
  for i, o in ipairs(p.ops) do ops[i] = plan.plain(o) end
  for i, l in ipairs(p.leavers or {}) do leavers[i] = l.account.name end
  return assert(json.encode({ ops = ops, conflicts = p.conflicts, errors = p.errors, notes = p.notes,
    counts = p.counts, deprovisions = p.deprovisions, mapped_keys = p.mapped_keys, wanted = p.wanted,
    active_keys = p.active_keys, new_ids = p.new_ids, leavers = leavers,
    managed_memberships = p.managed_memberships }, { sort_keys = true }))
end

-- Plans t; with accounts, also from the same accounts in an account set
-- (what the engine gives the planner for a whole target), which must plan
-- exactly the same.
local function build(t)
  t.sync = t.sync or sync_entry()
  t.target = t.target or { name = "jira", type = "jira" }
  t.policy = t.policy or DEFAULT
  t.source = t.source or { users = {}, groups = {} }
  local p = plan.build(t)
  if t.accounts then
    local c = {}
    for k, v in pairs(t) do c[k] = v end
    c.accounts = as_set(t.accounts)
    local want, got = decided(p), decided(plan.build(c))
    if got ~= want then
      error(("planned from an account set:\n%s\nfrom the list:\n%s"):format(got, want), 2)
    end
    set_plans = set_plans + 1
  end
  -- and from its links in a link set (with the accounts in a set), as the
  -- engine plans a whole target
  local links = (t.links or t.owned_memberships) and as_linkset(t)
  if links then
    local c = {}
    for k, v in pairs(t) do c[k] = v end
    c.accounts = t.accounts and as_set(t.accounts)
    c.links, c.link_ids, c.owned_memberships = links, nil, links
    local want, got = decided(p), decided(plan.build(c))
    if got ~= want then
      error(("planned from a link set:\n%s\nfrom the tables:\n%s"):format(got, want), 2)
    end
    link_plans = link_plans + 1
  end
  local users = t.source.users and #t.source.users > 0 and as_userset(t.source.users)
  if users then -- the same users as a compact scope read gives them: the same plan
    local c = {}
    for k, v in pairs(t) do c[k] = v end
    c.source = setmetatable({ users = users }, { __index = t.source })
    t.policy:planned(t.sync) -- the answers it keeps by id start afresh
    local want, got = decided(p), decided(plan.build(c))
    if got ~= want then
      error(("planned from a user set:\n%s\nfrom the list:\n%s"):format(got, want), 2)
    end
    user_set_plans = user_set_plans + 1
  end
  return p
end

-- "kind subject [group]" lines, in plan order.
local function lines(p)
  local out = {}
  for _, o in ipairs(p.ops) do
    out[#out + 1] = o.kind .. " " .. (o.group and (o.group .. " ") or "") .. (o.kind == "rename_user" and (o.from .. "->" .. o.to) or o.subject)
  end
  return out
end

test("first sync into an empty target: create groups, users, memberships, in plan order", function(t)
  local s = sync_entry { groups = { map = { Engineering = { "jira-developers", "devs" } } },
                         defaults = { new_users = { "jira-software-users" }, all_users = { "okta-synced" } } }
  local p = build { sync = s, source = {
    users = { user("00u1", "ann.lee@example.com", { groups = { "00g1" } }), user("00u2", "bob@example.com") },
    groups = { ["00g1"] = group("00g1", "Engineering") } } }
  t:same(lines(p), {
    "create_group devs devs", "create_group jira-developers jira-developers",
    "create_group jira-software-users jira-software-users", "create_group okta-synced okta-synced",
    "create_user ann.lee@example.com", "create_user bob@example.com",
    "add_member devs ann.lee@example.com", "add_member jira-developers ann.lee@example.com",
    "add_member jira-software-users ann.lee@example.com", "add_member okta-synced ann.lee@example.com",
    "add_member jira-software-users bob@example.com", "add_member okta-synced bob@example.com",
  })
  t:eq(p.ops[5].display_name, "ann lee")
  t:eq(p.counts.create_user, 2)
  t:eq(p.deprovisions, 0)
end)

test("adoption by username is case-insensitive; new_users defaults not applied to adopted accounts", function(t)
  local s = sync_entry { defaults = { new_users = { "new" }, all_users = { "all" } } }
  local p = build { sync = s, source = { users = { user("00u1", "Ann@Example.com") }, groups = {} },
    accounts = { { name = "ann@example.com", display_name = "Ann X", email = "ann@example.com", active = true, groups = { "all" } } },
    groups = { "all", "new" } }
  t:same(lines(p), { "link ann@example.com" })
  t:eq(p.ops[1].okta_id, "00u1")
end)

test("login change becomes a rename of the linked account, email change an update", function(t)
  local p = build { source = { users = { user("00u1", "ann.smith@example.com", { profile = {
      login = "ann.smith@example.com", email = "ann.smith@example.com", firstName = "Ann", lastName = "Smith" } }) }, groups = {} },
    accounts = { { name = "ann.lee@example.com", display_name = "Ann Lee", email = "ann.lee@example.com", active = true, groups = {} } },
    links = { ["00u1"] = "ann.lee@example.com" } }
  t:same(lines(p), { "update_user ann.lee@example.com", "rename_user ann.lee@example.com->ann.smith@example.com" },
    "the update addresses the account by its current name; the rename follows")
  local upd = p.ops[1]
  t:same(upd.changes, { display_name = { from = "Ann Lee", to = "Ann Smith" },
                        email = { from = "ann.lee@example.com", to = "ann.smith@example.com" } })
  t:eq(p.deprovisions, 0, "a rename is never delete + create")
end)

test("Confluence cannot rename: the account keeps its name, with a note", function(t)
  local p = build { target = { name = "wiki", type = "confluence" },
    source = { users = { user("00u1", "ann.smith@example.com") }, groups = {} },
    accounts = { { name = "ann.lee@example.com", display_name = "ann smith", email = "ann.smith@example.com", active = true, groups = {} } },
    links = { ["00u1"] = "ann.lee@example.com" } }
  t:same(lines(p), {})
  t:contains(p.notes[1], "confluence cannot rename accounts")
end)

test("an account whose product hides e-mail (Confluence) gets no e-mail update", function(t)
  local p = build { target = { name = "wiki", type = "confluence" },
    source = { users = { user("00u1", "ann@example.com") }, groups = {} },
    accounts = { { name = "ann@example.com", display_name = "ann X", active = true, groups = {} } },
    links = { ["00u1"] = "ann@example.com" } }
  t:same(lines(p), {})
end)

test("two Okta users mapping to one username: a conflict, applied to neither", function(t)
  local p = build { source = { users = { user("00u1", "Sam@example.com"), user("00u2", "sam@example.com") }, groups = {} } }
  t:same(lines(p), {})
  t:eq(#p.conflicts, 1)
  t:contains(p.conflicts[1].message, "Sam@example.com, sam@example.com all map to the username")
end)

test("an account linked to another Okta user is not adopted", function(t)
  local p = build { source = { users = { user("00u9", "ann@example.com") }, groups = {} },
    accounts = { { name = "ann@example.com", active = true, groups = {} } },
    links = { ["00u1"] = "ann@example.com" } }
  t:eq(#p.conflicts, 1)
  t:contains(p.conflicts[1].message, "already linked to Okta user 00u1")
end)

test("SCIM: a linked account renamed in the service is found by its id, not by the linked name", function(t)
  local ann = user("00u1", "ann@example.com")
  local p = build { target = { name = "scim", type = "scim" },
    source = { users = { ann, user("00u2", "bob@example.com") }, groups = {} },
    accounts = { { name = "ann.renamed", id = "id-1", display_name = "ann X", email = "ann@example.com",
                   active = true, groups = {} },
                 { name = "bob@example.com", id = "id-9", display_name = "bob X", email = "bob@example.com",
                   active = true, groups = {} } },
    links = { ["00u1"] = "ann@example.com", ["00u2"] = "bob@example.com" },
    link_ids = { ["00u1"] = "id-1", ["00u2"] = "id-2" } }
  -- ann: linked by name, the service's account of its id is named otherwise now
  -- bob: the account of the linked name has another id: not the linked one
  -- (gone), so the account of bob's name is adopted as any unlinked one is
  t:same(lines(p), { "link bob@example.com", "rename_user ann.renamed->ann@example.com" })
  t:eq(p.ops[1].id, "id-9"); t:eq(p.ops[2].id, "id-1")
  t:contains(table.concat(p.notes, "\n"), 'linked account "ann@example.com" is named "ann.renamed"')
  t:contains(table.concat(p.notes, "\n"), 'linked account "bob@example.com" no longer exists')
end)

test("ownership: only linked accounts are deprovisioned; unmanaged ones never touched", function(t)
  local p = build { source = { users = {}, groups = {} },
    accounts = { { name = "gone", active = true, groups = { "g" } }, { name = "local-admin", active = true, groups = { "g" } } },
    links = { ["00u1"] = "gone" } }
  t:same(lines(p), { "deactivate_user gone" })
  t:eq(p.ops[1].reason, "no longer in scope")
  t:eq(p.deprovisions, 1)
end)

test("status mapping: suspended deactivates, unsuspended reactivates, STAGED is skipped", function(t)
  local acct = { name = "ann@example.com", display_name = "ann X", email = "ann@example.com", active = true, groups = {} }
  local p = build { source = { users = { user("00u1", "ann@example.com", { status = "SUSPENDED" }) }, groups = {} },
    accounts = { acct }, links = { ["00u1"] = "ann@example.com" } }
  t:same(lines(p), { "deactivate_user ann@example.com" })
  acct.active = false
  p = build { source = { users = { user("00u1", "ann@example.com", { status = "ACTIVE" }) }, groups = {} },
    accounts = { acct }, links = { ["00u1"] = "ann@example.com" } }
  t:same(lines(p), { "reactivate_user ann@example.com" })
  p = build { source = { users = { user("00u2", "new@example.com", { status = "STAGED" }) }, groups = {} } }
  t:same(lines(p), {})
  p = build { source = { users = { user("00u3", "s@example.com", { status = "SUSPENDED" }) }, groups = {} } }
  t:same(lines(p), {}, "an inactive user without an account is not created")
end)

test("Bitbucket has no deactivation: a leaver is removed from every group", function(t)
  local p = build { target = { name = "git", type = "bitbucket" }, source = { users = {}, groups = {} },
    accounts = { { name = "leaver", active = true, groups = { "stash-users", "devs" } } },
    links = { ["00u1"] = "leaver" } }
  t:same(lines(p), { "remove_member stash-users leaver", "remove_member devs leaver" })
  t:contains(p.notes[1], "bitbucket cannot deactivate")
end)

test("Jira lead hand-over comes before deactivation; without a configured lead the leaver is held", function(t)
  local s = sync_entry { users = { project_lead = "svc-admin", component_lead = "svc-admin" } }
  local p = build { sync = s, source = { users = {}, groups = {} },
    accounts = { { name = "lead", active = true, groups = {} } }, links = { ["00u1"] = "lead" },
    leads = { lead = { projects = { "ABC" }, components = { "10001" } } } }
  t:same(lines(p), { "handover_lead lead", "deactivate_user lead" })
  t:same(p.ops[1].projects, { "ABC" }); t:eq(p.ops[1].to_project_lead, "svc-admin")
  p = build { source = { users = {}, groups = {} },
    accounts = { { name = "lead", active = true, groups = {} } }, links = { ["00u1"] = "lead" },
    leads = { lead = { projects = { "ABC" } } } }
  t:same(lines(p), {})
  t:contains(p.conflicts[1].message, "leads projects or components")
end)

test("leads read after the plan (p.leavers, plan.hand_over) give the plan built with them", function(t)
  local s = sync_entry { users = { project_lead = "svc-admin" } }
  local function input(leads)
    return { sync = s, source = { users = { user("00u3", "carl@example.com") }, groups = {} },
      accounts = { { name = "lead", active = true, groups = {} }, { name = "held", active = true, groups = {} },
                   { name = "plain", active = true, groups = {} } },
      links = { ["00u1"] = "lead", ["00u2"] = "held", ["00u4"] = "plain" }, leads = leads }
  end
  local leads = { lead = { projects = { "ABC" }, components = {} }, held = { projects = {}, components = { "1" } } }
  local with = build(input(leads))
  local p = build(input(nil))
  local names = {}
  for _, l in ipairs(p.leavers) do names[#names + 1] = l.account.name end
  t:same(names, { "held", "lead", "plain" }, "the accounts to deactivate, for one leads read")
  t:eq(with.leavers, nil, "none left to read when leads were given")
  plan.hand_over(p, leads, s)
  t:same(lines(p), lines(with))
  t:same(lines(p), { "create_user carl@example.com",
                     "handover_lead lead", "deactivate_user lead", "deactivate_user plain" })
  t:same(p.counts, with.counts); t:eq(p.deprovisions, with.deprovisions); t:eq(p.deprovisions, 2)
  t:same(p.conflicts, with.conflicts)
  t:contains(p.conflicts[1].message, "held leads projects or components")
  for i, o in ipairs(p.ops) do t:same(plan.plain(o), plan.plain(with.ops[i])) end
  t:eq(p.leavers, nil)
end)

test("delete needs users.delete; otherwise a policy's delete becomes deactivate", function(t)
  local s = sync_entry { users = { delete = true } }
  local p = build { sync = s, source = { users = {}, groups = {} },
    accounts = { { name = "x", active = true, groups = {} } }, links = { ["00u1"] = "x" } }
  t:same(lines(p), { "delete_user x" })
  s = sync_entry { deprovision = "delete" }
  p = build { sync = s, source = { users = {}, groups = {} },
    accounts = { { name = "x", active = true, groups = {} } }, links = { ["00u1"] = "x" } }
  t:same(lines(p), { "deactivate_user x" })
  t:contains(p.notes[1], "users.delete = false")
end)

test("keep_existing: true removes only what usersync added; false makes managed groups exact", function(t)
  local s = sync_entry { groups = { map = { Eng = "devs", Ops = "ops" } } }
  local src = { users = { user("00u1", "ann@example.com", { groups = { "00g1" } }) },
                groups = { ["00g1"] = group("00g1", "Eng"), ["00g2"] = group("00g2", "Ops") } }
  local acct = { name = "ann@example.com", display_name = "ann X", email = "ann@example.com", active = true,
                 groups = { "devs", "ops", "manual-group", "added-by-us" } }
  local p = build { sync = s, source = src, accounts = { acct }, groups = { "devs", "ops", "manual-group", "added-by-us" },
    links = { ["00u1"] = "ann@example.com" }, owned_memberships = { ["added-by-us"] = { ["ann@example.com"] = true } } }
  t:same(lines(p), { "remove_member added-by-us ann@example.com" })
  s = sync_entry { groups = { map = { Eng = "devs", Ops = "ops" }, keep_existing = false } }
  p = build { sync = s, source = src, accounts = { acct }, groups = { "devs", "ops", "manual-group", "added-by-us" },
    links = { ["00u1"] = "ann@example.com" }, owned_memberships = { ["added-by-us"] = { ["ann@example.com"] = true } } }
  t:same(lines(p), { "remove_member added-by-us ann@example.com", "remove_member ops ann@example.com" },
    "ops is managed (mapped); manual-group is not")
end)

test("groups given to new accounts stay on later syncs; all_users groups are kept exact", function(t)
  local s = sync_entry { defaults = { new_users = { "new-hires" }, all_users = { "synced" } } }
  local acct = { name = "ann@example.com", display_name = "ann X", email = "ann@example.com", active = true,
                 groups = { "new-hires", "synced" } }
  local p = build { sync = s, source = { users = { user("00u1", "ann@example.com") }, groups = {} },
    accounts = { acct }, groups = { "new-hires", "synced" }, links = { ["00u1"] = "ann@example.com" },
    owned_memberships = { ["new-hires"] = { ["ann@example.com"] = true }, synced = { ["ann@example.com"] = true } } }
  t:same(lines(p), {}, "new-hires is not taken away because the account is no longer new")
end)

test("create_missing = false reports missing groups and skips their memberships", function(t)
  local s = sync_entry { groups = { map = { Eng = "devs" }, create_missing = false } }
  local p = build { sync = s, source = { users = { user("00u1", "ann@example.com", { groups = { "00g1" } }) },
    groups = { ["00g1"] = group("00g1", "Eng") } } }
  t:same(lines(p), { "create_user ann@example.com" })
  t:contains(p.notes[1], 'group "devs" does not exist')
end)

test("a policy hook that raises fails that user with file and line; the others go on", function(t)
  local path = proc.tempfile([[
return {
  user = function(u, ctx)
    if u.profile.login:find("^bad") then
      error("cannot map " .. u.profile.login)
    end
    return { display_name = u.profile.login:upper() }
  end,
}
]], ".lua")
  local pol = assert(policy.load(path))
  local p = build { policy = pol, source = { users = { user("00u1", "bad@example.com"), user("00u2", "good@example.com") }, groups = {} },
    accounts = { { name = "bad@example.com", active = true, groups = {} } }, links = { ["00u1"] = "bad@example.com" } }
  t:same(lines(p), { "create_user good@example.com" }, "the failing user is neither updated nor deprovisioned")
  t:eq(p.ops[1].display_name, "GOOD@EXAMPLE.COM", "custom field overrides the default")
  t:eq(p.ops[1].email, "good@example.com", "fields left out keep the default")
  t:eq(#p.errors, 1)
  t:contains(p.errors[1].message, path .. ":4: cannot map bad@example.com")
end)

test("policy files: unknown hooks, non-functions and runaway hooks are reported", function(t)
  local pol, err = policy.load(proc.tempfile("return { usr = function() end }", ".lua"))
  t:eq(pol, nil); t:contains(err, "unknown hook 'usr'")
  pol, err = policy.load(proc.tempfile("return { user = 1 }", ".lua"))
  t:eq(pol, nil); t:contains(err, "hook 'user' must be a function")
  local path = proc.tempfile("return { include_group = function() while true do end end }", ".lua")
  pol = assert(policy.load(path, { instructions = 100000 }))
  local p = build { policy = pol, source = { users = {}, groups = { ["00g1"] = group("00g1", "Eng") } } }
  t:contains(p.errors[1].message, path .. ":1: instruction budget")
end)

test("limiting to one user plans nothing for the others, deprovisioning included", function(t)
  local p = build { only = { ["00u2"] = true },
    source = { users = { user("00u1", "a@example.com"), user("00u2", "b@example.com") }, groups = {} },
    accounts = { { name = "c", active = true, groups = {} } }, links = { ["00u3"] = "c" } }
  t:same(lines(p), { "create_user b@example.com" })
end)

test("multiple sources: an account claimed by an earlier sync keeps its attributes and is not deprovisioned", function(t)
  local p = build { claimed = { ["ann@example.com"] = "first" },
    source = { users = {}, groups = {} },
    accounts = { { name = "ann@example.com", active = true, groups = {} } }, links = { ["00u1"] = "ann@example.com" } }
  t:same(lines(p), {})
  p = build { claimed = { ["ann@example.com"] = "first" },
    source = { users = { user("00u1", "ann@example.com") }, groups = {} },
    accounts = { { name = "ann@example.com", display_name = "Other", email = "other@example.com", active = true, groups = {} } },
    links = { ["00u1"] = "ann@example.com" } }
  t:same(lines(p), {}, "no update: the first source sets attributes")
end)

test("on-the-fly groups: include, exclude and rename patterns; built-in groups never count", function(t)
  local s = sync_entry { groups = { mode = "on_the_fly", include = { "^eng-", "^okta-" }, exclude = { "-test$" },
                                    rename = { { "^okta-(?<rest>.+)$", "${rest}" }, { "^eng-(.+)$", "engineering-$1" } } } }
  local groups = { ["g1"] = group("g1", "eng-backend"), ["g2"] = group("g2", "eng-backend-test"),
                   ["g3"] = group("g3", "okta-ops"), ["g4"] = group("g4", "sales"), ["g5"] = group("g5", "Everyone", "BUILT_IN") }
  local p = build { sync = s, source = { users = { user("00u1", "ann@example.com", { groups = { "g1", "g2", "g3", "g4", "g5" } }) },
                                         groups = groups },
    accounts = { { name = "ann@example.com", display_name = "ann X", email = "ann@example.com", active = true, groups = {} } },
    groups = { "ops" }, links = { ["00u1"] = "ann@example.com" } }
  t:same(lines(p), { "create_group engineering-backend engineering-backend",
                     "add_member engineering-backend ann@example.com", "add_member ops ann@example.com" })
end)

test("plan text names every change with its reason, and the safety limit stops mass deprovisioning", function(t)
  local report = require "usersync.report"
  local links, accounts = {}, {}
  for i = 1, 20 do
    links["00u" .. i] = "user" .. i
    accounts[i] = { name = "user" .. i, active = true, groups = {} }
  end
  local s = sync_entry { limits = { max_deprovision = "10%" } }
  local p = build { sync = s, source = { users = {}, groups = {} }, accounts = accounts, links = links }
  p.linked_accounts = 20
  local run = { syncs = { { name = "main", source = "okta", users_in_scope = 0, limits = s.limits, targets = { p } } } }
  local text = report.plan_text(run)
  t:contains(text, "jira (jira): 20 deactivate")
  t:contains(text, "- deactivate       user1  (no longer in scope)")
  t:contains(text, "summary: 20 changes, 0 conflicts, 0 policy errors")
  local stop = report.safety(run)
  t:eq(#stop, 1)
  t:contains(stop[1], "20 deprovisions planned, limits.max_deprovision = 10% allows 2 of 20 managed accounts")
  t:eq(report.safety(run, { force = true }), nil, "--force overrides")
  run.syncs[1].read = { complete = false, problems = { "page 3 of /api/v1/apps/0oa1/users failed: HTTP 503" } }
  run.syncs[1].limits = nil
  stop = report.safety(run)
  t:contains(stop[1], "the read did not complete (page 3 of /api/v1/apps/0oa1/users failed: HTTP 503); 20 destructive changes withheld")
end)

test("plan file: round trip, and apply refuses a plan whose destructive ops are no longer planned", function(t)
  local planfile = require "usersync.planfile"
  local s = sync_entry { groups = { map = { Eng = "devs" } } }
  local accounts = { { name = "gone", active = true, groups = { "devs" } },
                     { name = "ann@example.com", display_name = "ann X", email = "ann@example.com", active = true, groups = {} } }
  local src = { users = { user("00u1", "ann@example.com", { groups = { "00g1" } }) }, groups = { ["00g1"] = group("00g1", "Eng") } }
  local p1 = build { sync = s, source = src, accounts = accounts, groups = { "devs" },
                     links = { ["00u1"] = "ann@example.com", ["00u2"] = "gone" } }
  t:same(lines(p1), { "add_member devs ann@example.com", "deactivate_user gone" })
  local run1 = { syncs = { { name = "main", source = "okta", users_in_scope = 1, targets = { p1 } } } }
  local text = planfile.encode(run1, { config = "x.conf.lua", created = "2026-11-29T00:00:00.000Z" })
  local saved = assert(planfile.decode(text))
  t:eq(saved.config, "x.conf.lua")
  t:eq(#saved.syncs[1].targets[1].ops, 2)
  local v = planfile.compare(saved, run1)
  t:eq(#v.apply, 2); t:eq(#v.unsafe, 0)
  -- meanwhile "gone" came back into scope: its deactivation is no longer planned
  src.users[2] = user("00u2", "gone")
  local p2 = build { sync = s, source = src, accounts = accounts, groups = { "devs" },
                     links = { ["00u1"] = "ann@example.com", ["00u2"] = "gone" } }
  v = planfile.compare(saved, { syncs = { { name = "main", targets = { p2 } } } })
  t:eq(#v.unsafe, 1)
  t:contains(v.unsafe[1], "main deactivate_user gone in jira is no longer planned")
  -- an e-mail changed again after the plan was saved: the saved update is not applied with the new value
  local acct = { name = "ann@example.com", display_name = "ann X", email = "old@example.com", active = true, groups = {} }
  local u1 = user("00u1", "ann@example.com", { profile = { login = "ann@example.com", email = "first@example.com", firstName = "ann", lastName = "X" } })
  local pa = build { source = { users = { u1 }, groups = {} }, accounts = { acct }, links = { ["00u1"] = "ann@example.com" } }
  t:same(lines(pa), { "update_user ann@example.com" })
  local saved_a = assert(planfile.decode(planfile.encode({ syncs = { { name = "main", targets = { pa } } } })))
  u1.profile.email = "second@example.com"
  local pb = build { source = { users = { u1 }, groups = {} }, accounts = { acct }, links = { ["00u1"] = "ann@example.com" } }
  v = planfile.compare(saved_a, { syncs = { { name = "main", targets = { pb } } } })
  t:eq(#v.apply, 0, "the reviewed payload is no longer what would be sent")
  t:eq(#v.obsolete, 1); t:eq(#v.new, 1)
  -- a hand-over with an empty list survives the round trip through a file
  local ho = { kind = "handover_lead", target = "jira", subject = "lead", name = "lead", projects = { "ABC" },
               components = {}, to_project_lead = "svc", deprovision = true, okta_id = "00u7" }
  local saved_h = assert(planfile.decode(planfile.encode({ syncs = { { name = "main", targets = { { target = "jira", ops = { ho },
    counts = {}, conflicts = {}, errors = {}, notes = {} } } } } })))
  t:eq(planfile.key("main", saved_h.syncs[1].targets[1].ops[1]), planfile.key("main", ho))
  t:eq(select(2, planfile.decode("{}")), "not a usersync plan (no usersync_plan version field)")
  t:contains(select(2, planfile.decode("garbage")), "not a usersync plan: json:")
end)

test("every plan above with accounts was also planned from an account set, and with users from a user set, identically", function(t)
  t:ok(set_plans >= 20, ("%d plans compared"):format(set_plans))
  t:ok(user_set_plans >= 20, ("%d plans compared from user sets"):format(user_set_plans))
end)

test("every plan above with links was also planned from a link set, identically", function(t)
  t:ok(link_plans >= 20, ("%d plans compared"):format(link_plans))
end)

return test.done()
