-- test_plan_memory.lua: what the memory work for a 100,000-user org
-- must not change. The Okta users of a scope read lose only
-- _links, credentials and type (a policy hook sees everything else, the
-- profile whole); a plan's ops answer every field by name (some come from
-- a shared metatable), pairs() and plan.plain list them all; the streamed plan text
-- and plan file are byte for byte what plan_text / json.encode give.
local test = require "tap"
local json = require "usersync.json"
local plan = require "usersync.plan"
local policy = require "usersync.policy"
local config = require "usersync.config"
local report = require "usersync.report"
local planfile = require "usersync.planfile"
local fakes = require "support.fakes"
local S = require "support.oktasim"

-- Okta users as the simulator returns them: with links, credentials, a
-- type, null profile values and a custom attribute.
local function org()
  local st = S.org{ users = { "ACTIVE", "SUSPENDED", "ACTIVE" }, groups = 2, members = { [1] = { 1, 2 }, [2] = { 3 } },
                    app = { users = { 1, 2 }, groups = { 2 } } }
  for i, u in ipairs(st.users) do
    u.type = { id = "oty1" }
    u.lastLogin = i == 1 and "2024-03-01T00:00:00.000Z" or json.null
    u.credentials = { provider = { type = "OKTA", name = "OKTA" } }
    u.profile.costCenter = "CC-" .. i
    u.profile.title = json.null
  end
  return st
end

local sim <close> = fakes.start("okta", { state = org() })

-- The fields of v other than those named in drop, deeply compared as JSON text.
local function without(v, drop)
  local c = {}
  for k, x in pairs(v) do if not drop[k] then c[k] = x end end
  return assert(json.encode(c, { sort_keys = true }))
end

local DROPPED = { _links = true, credentials = true, type = true, groups = true, app_assignment = true }

test("scope users keep every field but _links, credentials and type; the profile whole", function(t)
  for _, app in ipairs({ false, true }) do
    local c <close> = S.client(sim, { app_id = app and S.APP or nil })
    local snap = assert(c:scope{})
    t:ok(#snap.users >= 2, "users read")
    for _, u in ipairs(snap.users) do
      local full = assert(c:user(u.id))
      t:ok(full._links ~= nil and full.type ~= nil, "the simulator sends links and a type")
      t:eq(u._links, nil); t:eq(u.credentials, nil); t:eq(u.type, nil)
      t:eq(without(u, DROPPED), without(full, DROPPED), "every other field as Okta sent it")
      t:eq(u.profile.costCenter, full.profile.costCenter, "custom attribute")
      t:eq(u.profile.title, json.null, "a null profile value stays json.null")
      t:ok(u.created and u.lastUpdated and u.status, "timestamps and status kept")
      t:eq(getmetatable(u), getmetatable(full), "still a JSON object")
      if app then
        t:ok(u.app_assignment and u.app_assignment.scope, "the app assignment is kept")
        t:eq(u.app_assignment._links, nil, "without its links")
      end
    end
  end
end)

test("scope{fields}: each user keeps id, status, groups and the fields named, nothing else", function(t)
  for _, app in ipairs({ false, true }) do
    local c <close> = S.client(sim, { app_id = app and S.APP or nil })
    local whole = assert(c:scope{})
    local snap = assert(c:scope{ fields = { "profile.login", "profile.title", "profile.nosuch", "lastLogin" } })
    t:eq(#snap.users, #whole.users)
    for i, u in ipairs(snap.users) do
      local full = whole.users[i]
      local keys = {}
      for k in pairs(u) do keys[#keys + 1] = k end
      table.sort(keys)
      t:same(keys, full.lastLogin == nil and { "groups", "id", "profile", "status" }
        or { "groups", "id", "lastLogin", "profile", "status" })
      t:eq(u.id, full.id); t:eq(u.status, full.status); t:eq(u.lastLogin, full.lastLogin)
      t:same(u.groups, full.groups)
      t:eq(without(u.profile, {}), without({ login = full.profile.login, title = full.profile.title }, {}))
      t:eq(u.profile.title, json.null, "a null value named stays json.null")
      t:eq(getmetatable(u), getmetatable(full), "still a JSON object")
    end
  end
end)

test("changes{watermark} users are slimmed the same way", function(t)
  local c <close> = S.client(sim)
  local ch = assert(c:changes{ watermark = "2000-01-01T00:00:00.000Z" })
  t:ok(#ch.users > 0)
  for _, u in ipairs(ch.users) do
    t:eq(u._links, nil); t:eq(u.credentials, nil); t:eq(u.type, nil)
    t:ok(u.profile.costCenter, "custom attribute kept")
  end
end)

local function sync_entry(over)
  local s = { name = "main", source = "okta", targets = { "jira" },
              groups = { mode = "manual", map = { Eng = { "devs", "eng" } } },
              defaults = { new_users = { "new-hires" }, all_users = { "okta-synced" } } }
  for k, v in pairs(over or {}) do s[k] = v end
  local cfg, errors = config.validate({
    sources = { okta = { type = "okta", url = "https://x.okta.com", token = "t0ken-value" } },
    targets = { jira = { type = "jira", url = "https://jira", token = "pat-value" } },
    sync = { s },
  })
  assert(#errors == 0, table.concat(errors, "\n"))
  return cfg.sync[1]
end

local function user(id, login, groups, status)
  return { id = id, status = status or "ACTIVE", groups = groups or {},
           profile = { login = login, email = login, displayName = login:match("^[^@]+") } }
end

-- A plan with every common kind: creates, adds, an update, a removal, a
-- deactivation with a lead hand-over, a conflict and a note.
local function sample()
  local s = sync_entry { users = { create = true, update = true, deactivate = true, reactivate = true,
                                   project_lead = "svc", component_lead = "svc" } }
  local input = {
    sync = s, target = { name = "jira", type = "jira" }, policy = assert(policy.load(nil)),
    source = { users = { user("00u1", "ann@example.com", { "00gE" }), user("00u2", "Bob@example.com"),
                         user("00u3", "carl@example.com", {}, "SUSPENDED"),
                         user("00u4", "dup@example.com"), user("00u5", "DUP@example.com") },
               groups = { ["00gE"] = { id = "00gE", type = "OKTA_GROUP", profile = { name = "Eng" } } } },
    accounts = { { name = "bob@example.com", display_name = "old", email = "Bob@example.com", active = true,
                   groups = { "okta-synced", "old-group" } },
                 { name = "carl@example.com", display_name = "carl", email = "carl@example.com", active = true,
                   groups = { "devs" } } },
    groups = { "okta-synced" },
    links = { ["00u2"] = "bob@example.com", ["00u3"] = "carl@example.com" },
    owned_memberships = { ["old-group"] = { ["bob@example.com"] = true } },
    leads = { ["carl@example.com"] = { projects = { "ABC" }, components = {} } },
  }
  return plan.build(input)
end

test("ops answer kind, subject, target and reason by name; pairs and plan.plain list every field", function(t)
  local p = sample()
  local by = {}
  for _, o in ipairs(p.ops) do by[o.kind] = by[o.kind] or o end
  local add = by.add_member
  t:eq(add.kind, "add_member"); t:eq(add.subject, add.name); t:eq(add.target, "jira")
  t:match(add.reason, "^group rules put %S+ in %S+$")
  t:eq(by.create_user.reason, "ann@example.com is in scope and has no account")
  t:eq(by.create_user.target, "jira")
  t:eq(by.update_user.reason, "profile changed in Okta")
  t:eq(by.remove_member.group, "old-group")
  t:ok(by.handover_lead and by.deactivate_user, "hand-over and deactivation planned")
  for _, o in ipairs(p.ops) do
    local c = plan.plain(o)
    t:eq(getmetatable(c), nil, "a plain table")
    for _, k in ipairs({ "kind", "target", "subject", "reason", "seq" }) do
      t:ok(c[k] ~= nil, o.kind .. " has " .. k)
      t:eq(c[k], o[k])
    end
    for k, v in pairs(o) do t:eq(c[k], v) end
    local listed = {}
    for k in pairs(o) do
      t:eq(listed[k], nil, o.kind .. ": pairs lists " .. tostring(k) .. " once")
      listed[k] = true
    end
    for _, k in ipairs({ "kind", "target", "subject", "reason" }) do
      t:ok(listed[k], o.kind .. ": pairs lists " .. k)
    end
    if o.kind == "add_member" then t:ok(listed.why, "pairs lists why") end
  end
  t:eq(#p.conflicts, 1, "dup and DUP map to one name")
end)

-- The plan file as json.encode of the whole document with plain ops (what
-- planfile.encode produced before it streamed).
local function reference_json(run_plan, meta)
  local A = json.array
  local doc = { usersync_plan = planfile.VERSION, config = meta.config, created = meta.created, scope = run_plan.scope,
                syncs = A{} }
  for _, s in ipairs(run_plan.syncs) do
    local out = { name = s.name, source = s.source, users_in_scope = s.users_in_scope, read = s.read, targets = A{} }
    for _, tp in ipairs(s.targets) do
      local ops = {}
      for i, o in ipairs(tp.ops) do
        local c = plan.plain(o)
        if c.projects then c.projects = A(c.projects) end
        if c.components then c.components = A(c.components) end
        ops[i] = c
      end
      out.targets[#out.targets + 1] = { target = tp.target, target_type = tp.target_type, counts = tp.counts,
        deprovisions = tp.deprovisions, ops = A(ops), conflicts = A(tp.conflicts), errors = A(tp.errors),
        notes = A(tp.notes) }
    end
    doc.syncs[#doc.syncs + 1] = out
  end
  return assert(json.encode(doc, { indent = 2, sort_keys = true }))
end

test("streamed plan file and plan text: byte-identical to the whole-document forms", function(t)
  local p = sample()
  local empty = { target = "wiki", target_type = "confluence", ops = {}, conflicts = {}, errors = {},
                  notes = { "nothing to do" }, counts = {}, deprovisions = 0 }
  local run_plan = { scope = nil, syncs = {
    { name = "main", source = "okta", users_in_scope = 5, read = { complete = true, problems = {} }, targets = { p, empty } },
    { name = "second", source = "okta", users_in_scope = 0, read = { complete = false, problems = { "x" } }, targets = { empty } },
  } }
  local meta = { config = "usersync.conf.lua", created = "2026-01-01T00:00:00Z" }
  local pieces = {}
  planfile.write(run_plan, meta, function(s) pieces[#pieces + 1] = s end)
  t:ok(#pieces >= 5, "the ops of each target are pieces of their own")
  local text = table.concat(pieces)
  t:eq(text, reference_json(run_plan, meta))
  t:eq(planfile.encode(run_plan, meta), text)
  -- and it reads back: the reasons and kinds the metatable gave are in the file
  local saved = assert(planfile.decode(text))
  local ops = saved.syncs[1].targets[1].ops
  t:eq(#ops, #p.ops)
  for i, o in ipairs(p.ops) do
    t:eq(ops[i].kind, o.kind); t:eq(ops[i].reason, o.reason); t:eq(ops[i].target, "jira"); t:eq(ops[i].subject, o.subject)
  end
  t:same(saved.syncs[1].targets[2].ops, {})
  t:eq(#planfile.compare(saved, run_plan).apply, #p.ops, "a fresh identical plan applies every saved op")

  local lines = {}
  report.write_plan_text(run_plan, function(s) lines[#lines + 1] = s end)
  for _, l in ipairs(lines) do t:match(l, "^[^\n]*\n$", "one line per call") end
  t:eq(table.concat(lines), report.plan_text(run_plan))
  t:contains(report.plan_text(run_plan), "+ add member       ann@example.com in devs  (group rules put ann@example.com in devs)")
  local colored = {}
  report.write_plan_text(run_plan, function(s) colored[#colored + 1] = s end, { color = true })
  t:eq(table.concat(colored), report.plan_text(run_plan, { color = true }))
end)

test("spooled targets: plan text, plan file and safety as from the ops; only destructive ops kept", function(t)
  local spool = require "usersync.spool"
  local function run_plan()
    local empty = { target = "wiki", target_type = "confluence", ops = {}, conflicts = {}, errors = {},
                    notes = { "nothing to do" }, counts = {}, deprovisions = 0 }
    return { scope = nil, syncs = { { name = "main", source = "okta", users_in_scope = 5,
      read = { complete = false, problems = { "x" } }, targets = { sample(), empty } } } }
  end
  local meta = { config = "usersync.conf.lua", created = "2026-01-01T00:00:00Z" }
  for _, color in ipairs({ false, true }) do
    local whole, spooled = run_plan(), run_plan()
    local sp <close> = spool.new{ text = true, json = true, color = color }
    for _, tp in ipairs(spooled.syncs[1].targets) do sp:take(tp) end
    local p = spooled.syncs[1].targets[1]
    t:eq(p.spooled.n, #whole.syncs[1].targets[1].ops)
    t:ok(#p.ops > 0 and #p.ops < p.spooled.n, "some ops kept: " .. #p.ops)
    for _, o in ipairs(p.ops) do t:ok(report.DESTRUCTIVE[o.kind], o.kind .. " kept") end
    t:eq(report.plan_text(spooled, { color = color }), report.plan_text(whole, { color = color }))
    t:eq(planfile.encode(spooled, meta), planfile.encode(whole, meta))
    t:eq(planfile.encode(spooled, meta), planfile.encode(whole, meta), "the spool is read again")
    t:same({ report.safety(spooled) }, { report.safety(whole) })
    t:eq(report.has_changes(spooled), true)
  end
end)

-- A plan input of n users with every kind of op: new accounts (creates,
-- new-user groups), adopted ones, renames, updates, reactivations,
-- memberships added and removed, leavers deactivated (some leading Jira
-- projects: a hand-over, or a conflict), a failing user and conflicts.
-- leads = false: p.leavers is left for plan.hand_over, as the engine reads them.
local function big_input(n, leads)
  local s = sync_entry { users = { create = true, update = true, deactivate = true, reactivate = true,
                                   rename = true, project_lead = "svc" },
                         groups = { mode = "manual", create_missing = true,
                                    map = { Eng = { "devs", "eng" }, Ops = "ops", Sales = "sales" } } }
  local ids = { "00gE", "00gO", "00gS" }
  local groups = { ["00gE"] = { id = "00gE", type = "OKTA_GROUP", profile = { name = "Eng" } },
                   ["00gO"] = { id = "00gO", type = "OKTA_GROUP", profile = { name = "Ops" } },
                   ["00gS"] = { id = "00gS", type = "OKTA_GROUP", profile = { name = "Sales" } } }
  local users, accounts, links, owned, leadmap = {}, {}, {}, { ["old-group"] = {}, devs = {} }, {}
  for i = 1, n do
    local id, login = ("00u%d"):format(i), ("user%d@example.com"):format(i)
    local ug = { ids[i % 3 + 1] }
    if i % 5 == 0 then ug[2] = ids[(i + 1) % 3 + 1] end
    local status = i % 97 == 0 and "SUSPENDED" or "ACTIVE"
    if i % 1000 == 500 then login = ("user%d@example.com"):format(i - 1) end -- a duplicate: a conflict
    users[#users + 1] = user(id, login, ug, status)
    local kind = i % 10
    if kind == 1 then -- linked, in sync but for a group it left
      accounts[#accounts + 1] = { name = login, display_name = login:match("^[^@]+"), email = login, active = true,
                                  groups = { "okta-synced", "old-group" } }
      links[id] = login
      owned["old-group"][login] = "mapping"
    elseif kind == 2 then -- linked under its old login: renamed
      local old = ("old%d@example.com"):format(i)
      accounts[#accounts + 1] = { name = old, display_name = "x", email = old, active = i % 4 ~= 0, groups = {} }
      links[id] = old
    elseif kind == 3 then -- an existing account of its name: adopted (some inactive: reactivated)
      accounts[#accounts + 1] = { name = login, display_name = "old name", email = login, active = i % 6 ~= 3,
                                  groups = { "devs" } }
    end
  end
  for i = 1, n // 20 do -- leavers: linked accounts whose user left Okta
    local name = ("gone%d@example.com"):format(i)
    accounts[#accounts + 1] = { name = name, display_name = name, email = name, active = true, groups = { "devs" } }
    links[("00ux%d"):format(i)] = name
    owned.devs[name] = "mapping"
    if i % 7 == 0 then leadmap[name] = { projects = { "P" .. i }, components = {} } end
    if i % 49 == 0 then leadmap[name] = { projects = {}, components = { tostring(i) } } end -- no component lead: a conflict
  end
  -- a groups hook that fails for some users (new ones and adopted ones):
  -- nothing is planned for them
  local base = assert(policy.load(nil))
  local pol = setmetatable({ groups = function(_, u, ...)
    local i = tonumber(u.id:match("%d+$"))
    if i % 250 == 7 or i % 250 == 13 then return nil, "groups hook failed for " .. u.id end
    return base:groups(u, ...)
  end }, { __index = base })
  return {
    sync = s, target = { name = "jira", type = "jira" }, policy = pol,
    source = { users = users, groups = groups }, accounts = accounts, groups = { "okta-synced", "devs", "old-group" },
    links = links, owned_memberships = owned, owned_groups = { devs = true }, single = true,
    leads = leads ~= false and leadmap or nil,
  }, leadmap, s
end

-- Builds the plan of big_input(n, leads) whole, and streamed into a spool
-- (as `usersync plan` does): returns the run plans and the spool.
local function whole_and_spooled(n, leads, opts)
  local spool = require "usersync.spool"
  local function run_plan(p)
    return { syncs = { { name = "main", source = "okta", users_in_scope = n,
                         read = { complete = true, problems = {} }, targets = { p } } } }
  end
  local input, leadmap, s = big_input(n, leads)
  local whole = plan.build(input)
  if whole.leavers then plan.hand_over(whole, leadmap, s) end
  local sp = spool.new(opts)
  input = big_input(n, leads)
  local sunk = 0
  input.sink = (function(sink) return function(o) sunk = sunk + 1; sink(o) end end)(sp:sink())
  local p = plan.build(input)
  if p.leavers then plan.hand_over(p, leadmap, s) end
  return run_plan(whole), run_plan(p), sp, sunk
end

test("a plan streamed into the spool: plan text, plan file, counts and safety as the whole plan's", function(t)
  local meta = { config = "usersync.conf.lua", created = "2026-01-01T00:00:00Z" }
  for _, case in ipairs({ { leads = true, color = false }, { leads = false, color = true } }) do
    local leads, color = case.leads, case.color
    do
      local whole, spooled, sp, sunk = whole_and_spooled(3000, leads, { text = true, json = true, color = color })
      local wp, p = whole.syncs[1].targets[1], spooled.syncs[1].targets[1]
      t:ok(p.streamed and p.streamed.n == sunk and sunk > 3000, "ops streamed: " .. sunk)
      t:eq(sunk + #p.ops, #wp.ops, "every op, once")
      t:same(p.counts, wp.counts); t:eq(p.deprovisions, wp.deprovisions)
      for _, k in ipairs({ "create_group", "create_user", "link", "update_user", "rename_user", "reactivate_user",
                           "add_member", "remove_member", "handover_lead", "deactivate_user" }) do
        t:ok((wp.counts[k] or 0) > 0, "the plan has " .. k)
      end
      t:ok(#wp.conflicts >= 2 and #wp.errors >= 20 and #wp.notes > 0, "conflicts, policy errors and notes")
      for _, o in ipairs(wp.ops) do
        local i = tonumber((o.okta_id or "00u0"):match("%d+$"))
        t:ok(not (o.okta_id and o.okta_id:match("^00u%d") and (i % 250 == 7 or i % 250 == 13)),
          "nothing planned for a user whose hook failed")
      end
      for i, o in ipairs(p.ops) do
        t:eq(o.seq, sunk + i, "the ops kept are numbered after those streamed")
        t:eq(o.kind, wp.ops[sunk + i].kind)
      end
      sp:take(p)
      t:eq(p.spooled.n, #wp.ops)
      t:eq(report.plan_text(spooled, { color = color }), report.plan_text(whole, { color = color }))
      t:eq(planfile.encode(spooled, meta), planfile.encode(whole, meta))
      t:same({ report.safety(spooled) }, { report.safety(whole) })
      spooled.syncs[1].limits = { max_deprovision = 1, max_membership_removals = 1 }
      whole.syncs[1].limits = spooled.syncs[1].limits
      t:same({ report.safety(spooled) }, { report.safety(whole) }, "limits: stopped alike")
      sp:close()
    end
  end
  -- the plan file alone (--out without the text), and the text alone
  for _, opts in ipairs({ { json = true }, { text = true } }) do
    local whole, spooled, sp = whole_and_spooled(500, true, opts)
    sp:take(spooled.syncs[1].targets[1])
    if opts.json then t:eq(planfile.encode(spooled, meta), planfile.encode(whole, meta)) end
    if opts.text then t:eq(report.plan_text(spooled), report.plan_text(whole)) end
    sp:close()
  end
end)

test("a streamed plan never holds its ops: the live Lua heap while planning", function(t)
  -- The live heap (after a full collection), in KB above what the input
  -- holds: while a streamed plan adds its members (the sink, at each
  -- 2,000th op), and each plan once built (the whole one holds every op).
  local n = 10000
  local function measure(streamed)
    local input, leadmap, s = big_input(n, true)
    input.leads = nil -- the plan keeps its leavers (plan.hand_over below)
    collectgarbage(); collectgarbage()
    local base, samples, calls = collectgarbage("count"), {}, 0
    if streamed then
      input.sink = function(o)
        calls = calls + 1
        if calls % 2000 == 0 and o.kind == "add_member" then
          collectgarbage()
          samples[#samples + 1] = collectgarbage("count") - base
        end
      end
    end
    local p = plan.build(input)
    plan.hand_over(p, leadmap, s)
    collectgarbage()
    return collectgarbage("count") - base, p, samples
  end
  local whole_kb, whole = measure(false)
  local streamed_kb, p, samples = measure(true)
  local whole_n = #whole.ops
  t:eq(p.streamed.n + #p.ops, whole_n)
  t:ok(whole_n > 4 * n, "a large plan: " .. whole_n .. " ops")
  t:ok(#p.ops < whole_n / 10, "the streamed plan kept " .. #p.ops .. " ops")
  t:ok(#samples >= 10, #samples .. " samples while adding members")
  io.write(("# %d ops; live heap streaming the members %.0f KB first, %.0f KB last; built: streamed %.0f KB, whole %.0f KB\n")
    :format(whole_n, samples[1], samples[#samples], streamed_kb, whole_kb))
  -- adding members holds no more as it goes (each account's wanted groups
  -- and mapped account are dropped; the ops are not kept): a plan that
  -- kept them would grow
  -- by the whole plan's ops
  t:ok(samples[#samples] <= samples[1],
    ("live heap while streaming the members: %.0f KB first, %.0f KB last"):format(samples[1], samples[#samples]))
  t:ok(streamed_kb < whole_kb / 4, ("built: streamed %.0f KB, whole %.0f KB"):format(streamed_kb, whole_kb))
end)

test("usersync plan (streamed): an add or create repeated after a lost answer is marked ours in the plan file", function(t)
  local world = require "support.world"
  local MANUAL = { groups = { mode = "manual", map = { Engineering = { "developers" }, Ops = { "operations" } } },
                   defaults = { new_users = { "new-hires" }, all_users = { "okta-synced" } } }
  local w <close> = world.small { sync = MANUAL, products = { "jira" } }
  w.jira:faults{ fail_rate = 1, fail_status = 502, fail_path = "^/rest/api/2/group/user$" }
  t:eq(w:usersync("sync").code, 1, "the adds failed")
  w.jira:faults{}
  local r = w:usersync("plan", "--json")
  t:eq(r.code, 0, r.stderr)
  local doc = assert(json.decode(r.stdout))
  local ours, adds = 0, 0
  for _, o in ipairs(doc.syncs[1].targets[1].ops) do
    if o.kind == "add_member" then
      adds = adds + 1
      if o.ours == true then ours = ours + 1 end
    end
  end
  t:ok(adds > 0 and ours == adds, ("%d of %d adds marked ours"):format(ours, adds))
end)

test("Policy:user_fields: the default policy's fields and the mapped ones; a custom user or groups hook needs its fields declared", function(t)
  local dir = os.tmpname(); os.remove(dir); assert(os.execute("mkdir -p " .. dir))
  local function pol(src)
    local f = assert(io.open(dir .. "/p.lua", "w")); f:write(src); f:close()
    return policy.load(dir .. "/p.lua")
  end
  local base = assert(policy.load(nil))
  t:same(base:user_fields(sync_entry()), policy.DEFAULT_FIELDS)
  local s = sync_entry { attributes = { name = "profile.employeeNumber", display_name = "{profile.nick} {id}" } }
  local mapped = policy.DEFAULT_FIELDS
  local want = {}
  for i, f in ipairs(mapped) do want[i] = f end
  want[#want + 1] = "profile.employeeNumber"; want[#want + 1] = "profile.nick"
  t:same(base:user_fields(s), want)
  t:same(assert(pol("return { include_group = function() return true end }")):user_fields(sync_entry()),
    policy.DEFAULT_FIELDS, "a custom include_group sees no user")
  t:eq(assert(pol("return { user = function(u) return default.user(u) end }")):user_fields(sync_entry()), nil,
    "a custom user hook without fields: every field")
  t:eq(assert(pol("return { groups = function() return {} end }")):user_fields(sync_entry()), nil)
  local declared = assert(pol("return { fields = { 'profile.costCenter', 'lastLogin' }, user = function(u) return nil end }"))
  local got = declared:user_fields(sync_entry())
  t:eq(got[#got - 1], "profile.costCenter"); t:eq(got[#got], "lastLogin")
  local bad, why = pol("return { fields = { 'profile.a.b' } }")
  t:eq(bad, nil); t:match(why, "'fields' must be a list of Okta user fields")
  t:eq((pol("return { fields = 'profile.x' }")), nil)
  os.execute("rm -rf " .. dir)
end)

test("memory.pause sets the GC pause and restores it on exit, also after an error", function(t)
  local orig = collectgarbage("setpause", 200)
  do
    local _ <close> = require("usersync.memory").pause(150)
    local inside = collectgarbage("setpause", 150)
    t:ok(math.abs(inside - 150) <= 4, "set inside (Lua stores the pause in steps of 4): " .. inside)
  end
  t:eq(collectgarbage("setpause", 200), 200, "restored")
  t:raises(function()
    local _ <close> = require("usersync.memory").pause(130)
    error("boom")
  end, "boom")
  t:eq(collectgarbage("setpause", orig), 200, "restored after an error")
end)

test("a compact source's users as matched: no policy account table per user held (live heap per user)", function(t)
  -- 10,000 users in a usersync.userset, each linked to its account in a
  -- usersync.accountset (a re-plan): the live heap at the first
  -- default_groups call (all users mapped, the matching begun) and at the
  -- last (all matched), per user above the input's.
  local userset = require "usersync.userset"
  local accountset = require "usersync.accountset"
  local linkset = require "usersync.linkset"
  local n = 10000
  local users = userset.new{ top = { "id", "status" }, profile = { "login", "email", "displayName" } }
  local accounts, links = accountset.new(), linkset.new()
  for i = 1, n do
    local id, login = ("00u%06d"):format(i), ("user%06d@example.com"):format(i)
    users:add(user(id, login))
    accounts:add{ name = login, display_name = login:match("^[^@]+"), email = login, active = true }
    accounts:add_member(login, "okta-synced")
    links:add(id, login)
  end
  users:finish()
  local base_pol = assert(policy.load(nil))
  local samples, calls = {}, 0
  local pol = setmetatable({ default_groups = function(self, ...)
    calls = calls + 1
    if calls == 1 or calls == n then
      collectgarbage()
      samples[#samples + 1] = collectgarbage("count")
    end
    return base_pol.default_groups(self, ...)
  end }, { __index = base_pol })
  local input = { sync = sync_entry(), target = { name = "jira", type = "jira" }, policy = pol,
                  source = { users = users, groups = {} }, accounts = accounts, groups = { "okta-synced" },
                  links = links, owned_memberships = links, owned_groups = {}, single = true }
  collectgarbage(); collectgarbage()
  local base = collectgarbage("count")
  local p = plan.build(input)
  t:eq(#p.ops, 0, "nothing to do")
  t:eq(calls, n, "default_groups once per user")
  local first, last = (samples[1] - base) * 1024 / n, (samples[2] - base) * 1024 / n
  io.write(("# live heap per user: %.0f bytes mapped, %.0f matched\n"):format(first, last))
  -- each user's policy answer (a table of four fields and its strings,
  -- ~200 bytes) is not held from the mapping to the matching, nor after,
  -- and the user's stub is its m (a table of its own: ~80 bytes): held,
  -- they made it ~580 and ~700 bytes; now ~300 and ~420
  t:ok(first < 360, ("mapped users hold %.0f bytes each"):format(first))
  t:ok(last < 480, ("matched users hold %.0f bytes each"):format(last))
end)

return test.done()
