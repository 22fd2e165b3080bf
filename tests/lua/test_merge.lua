-- Tests of usersync.merge: the plans of several sync entries feeding one
-- target, reconciled (the multiple-sources rules), on plain plans.
local test = require "tap"
local merge = require "usersync.merge"

local function op(kind, name, extra)
  local o = { kind = kind, subject = name, name = name, target = "jira", okta_id = "00u" .. name }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

local function target_plan(ops, active, wanted)
  for i, o in ipairs(ops) do o.seq = i end
  return { target = "jira", ops = ops, notes = {}, conflicts = {}, errors = {}, counts = {},
           deprovisions = 0, active_keys = active or {}, wanted = wanted or {} }
end

local function entry(name, p, complete)
  return { name = name, targets = { p }, read = { complete = complete ~= false, problems = {} } }
end

local function kinds(p)
  local out = {}
  for _, o in ipairs(p.ops) do out[#out + 1] = o.kind .. " " .. o.subject end
  return out
end

test("another entry's account and membership stay; its create is a link", function(t)
  local a = target_plan({ op("create_user", "Ann"), op("remove_member", "bob", { group = "Devs" }),
                          op("deactivate_user", "carl", { deprovision = true }),
                          op("deactivate_user", "dora", { deprovision = true }) })
  local b = target_plan({ op("create_user", "ann"),
                          op("deactivate_user", "dora", { deprovision = true }) },
                        { carl = true, bob = true }, { bob = { devs = "devs" } })
  local run_plan = { syncs = { entry("first", a), entry("second", b) } }
  merge.plans(run_plan)
  t:same(kinds(a), { "create_user Ann", "deactivate_user dora" })
  t:same(kinds(b), { "link ann" })
  t:eq(b.ops[1].reason, 'created by sync "first" in this run')
  t:same(a.notes, { 'remove bob from Devs: sync "second" still puts it there; not applied',
                    'deactivate_user carl: the account is still in scope of sync "second"; '
                      .. 'not applied' })
  t:same(b.notes, { 'deactivate_user dora: deprovisioned by sync "first" in this run' })
  t:eq(a.counts.deactivate_user, 1); t:eq(a.deprovisions, 1); t:eq(b.deprovisions, 0)
end)

test("with --sync the asked entry deprovisions and creates; the others are dropped", function(t)
  local function both()
    return target_plan({ op("create_user", "ann"),
                         op("deactivate_user", "dora", { deprovision = true }) })
  end
  local a, b = both(), both()
  local run_plan = { syncs = { entry("first", a, false), entry("second", b) } }
  merge.plans(run_plan, "second")
  merge.keep_asked(run_plan, "second")
  t:eq(#run_plan.syncs, 1)
  t:eq(run_plan.syncs[1].name, "second")
  t:same(kinds(b), { "create_user ann", "deactivate_user dora" })
  local read = run_plan.syncs[1].read
  t:eq(read.complete, false, "a context entry's incomplete read makes it incomplete")
  t:same(read.problems, { 'sync "first" shares a target and its read did not complete' })
end)

test("related_entries: the named entry and those sharing a target with it", function(t)
  local cfg = { sync = { { name = "a", targets = { "jira" } },
                         { name = "b", targets = { "jira", "wiki" } },
                         { name = "c", targets = { "git" } } } }
  t:same(merge.related_entries(cfg, "a"), { a = true, b = true })
  t:same(merge.related_entries(cfg, "c"), { c = true })
  t:same(merge.related_entries(cfg), { a = true, b = true, c = true })
end)
