-- The default groups and default_groups hooks answer the same for every
-- target of a sync entry, so a run computes them once per user (issue 16:
-- they were most of a no-op re-sync's Lua work, evaluated for every
-- target, twice). Counted by wrapping the default policy's functions; the
-- plans must be the ones computed without the memo.
local test = require "tap"
local plan = require "usersync.plan"
local policy = require "usersync.policy"
local config = require "usersync.config"
local proc = require "support.proc"
local default = require "usersync.scripts.default_policy"

local function sync_entry()
  local cfg, errors = config.validate({
    sources = { okta = { type = "okta", url = "https://x.okta.com", token = "t0ken-value" } },
    targets = { jira = { type = "jira", url = "https://jira", token = "pat-value" },
                wiki = { type = "confluence", url = "https://wiki", token = "pat-value" },
                git = { type = "bitbucket", url = "https://git", token = "pat-value" } },
    sync = { { name = "main", source = "okta", targets = { "jira", "wiki", "git" },
               groups = { map = { Engineering = { "devs" }, Ops = "ops" } },
               defaults = { new_users = { "new-hires" }, all_users = { "okta-synced" } } } },
  })
  assert(#errors == 0, table.concat(errors, "\n"))
  return cfg.sync[1]
end

local function source(n)
  local users = {}
  for i = 1, n do
    users[i] = { id = ("00u%04d"):format(i), status = "ACTIVE", groups = { i % 2 == 0 and "00g1" or "00g2" },
      profile = { login = ("user%04d@example.com"):format(i), email = ("user%04d@example.com"):format(i),
                  firstName = "U", lastName = tostring(i) } }
  end
  return { users = users, groups = { ["00g1"] = { id = "00g1", type = "OKTA_GROUP", profile = { name = "Engineering" } },
                                     ["00g2"] = { id = "00g2", type = "OKTA_GROUP", profile = { name = "Ops" } } } }
end

local TARGETS = { { name = "jira", type = "jira" }, { name = "wiki", type = "confluence" }, { name = "git", type = "bitbucket" } }

-- Counts the calls of the default policy's hooks while fn runs.
local function counting(fn)
  local calls = { groups = 0, default_groups = 0 }
  local saved = { groups = default.groups, default_groups = default.default_groups }
  for name, f in pairs(saved) do
    default[name] = function(...) calls[name] = calls[name] + 1; return f(...) end
  end
  local ok, err = pcall(fn)
  for name, f in pairs(saved) do default[name] = f end
  assert(ok, err)
  return calls
end

local function lines(p)
  local out = {}
  for _, o in ipairs(p.ops) do out[#out + 1] = o.kind .. " " .. (o.group or "") .. " " .. o.subject end
  return table.concat(out, "\n")
end

test("default group hooks: once per user per run for all targets, the same plans", function(t)
  local sync, src = sync_entry(), source(30)
  local pol = assert(policy.load(nil))
  pol:new_run()
  local memo_plans = {}
  local calls = counting(function()
    for i, tg in ipairs(TARGETS) do
      memo_plans[i] = lines(plan.build { sync = sync, target = tg, policy = pol, source = src })
    end
  end)
  t:eq(calls.groups, 30, "groups(): once per user, not once per user and target")
  t:eq(calls.default_groups, 2, "default_groups(): once for new accounts, once for existing ones")

  -- the same plans as with nothing kept (a fresh policy and run for each)
  for i, tg in ipairs(TARGETS) do
    local fresh = assert(policy.load(nil))
    t:eq(memo_plans[i], lines(plan.build { sync = sync, target = tg, policy = fresh, source = src }), tg.name)
  end
  t:ok(memo_plans[1]:find("add_member devs user0002@example.com", 1, true), "plans hold the memberships")

  -- a new run computes afresh; so does another sync entry's settings
  pol:new_run()
  calls = counting(function() plan.build { sync = sync, target = TARGETS[1], policy = pol, source = src } end)
  t:eq(calls.groups, 30, "a new run asks again")
  calls = counting(function() plan.build { sync = sync_entry(), target = TARGETS[1], policy = pol, source = src } end)
  t:eq(calls.groups, 30, "other settings: asked again")
end)

test("an entry planned drops its kept answers, not another entry's", function(t)
  local a, b, src = sync_entry(), sync_entry(), source(30)
  local pol = assert(policy.load(nil))
  pol:new_run()
  local calls = counting(function()
    plan.build { sync = a, target = TARGETS[1], policy = pol, source = src }
    plan.build { sync = b, target = TARGETS[1], policy = pol, source = src }
  end)
  t:eq(calls.groups, 60, "each entry's settings asked once per user")
  pol:planned(a)
  t:eq(pol.memo[a], nil, "entry a's answers are dropped")
  t:ok(pol.memo[b], "entry b's are kept")
  calls = counting(function()
    plan.build { sync = b, target = TARGETS[2], policy = pol, source = src }
  end)
  t:eq(calls.groups, 0, "entry b still answers from what it kept")
end)

test("a kept groups answer is held as one string and given back as the same list", function(t)
  local sync, src = sync_entry(), source(4)
  local pol = assert(policy.load(nil))
  pol:new_run()
  local ctx = plan.context { sync = sync, target = TARGETS[1], policy = pol }
  local u = src.users[2]
  local g = { src.groups["00g1"] }
  local first = assert(pol:groups(u, g, ctx))
  t:same(first, { "devs" })
  local calls = counting(function()
    local again = assert(pol:groups(u, g, ctx))
    t:same(again, first)
    t:ok(again ~= first, "a new list: the kept one is not a table")
  end)
  t:eq(calls.groups, 0, "answered from what was kept")
  local kept = pol.memo[sync].users[u]
  t:eq(type(kept), "string"); t:eq(#kept, 3, "3 bytes per name")
  -- a long answer is kept as the list itself
  local many = {}
  for i = 1, 1001 do many[i] = "g" .. i end
  local saved = default.groups
  default.groups = function() return many end
  local other = src.users[3]
  local ok, r = pcall(pol.groups, pol, other, g, ctx)
  default.groups = saved
  t:ok(ok, r); t:eq(#r, 1001)
  t:eq(type(pol.memo[sync].users[other]), "table")
  t:same(pol:groups(other, g, ctx), many)
end)

test("a custom groups hook is asked for every target", function(t)
  local path = proc.tempfile([[
local calls = 0
return {
  groups = function(u, groups, ctx)
    return { ctx.target == "jira" and "jira-only" or "elsewhere" }
  end,
}
]], ".lua")
  local pol = assert(policy.load(path))
  pol:new_run()
  local sync, src = sync_entry(), source(4)
  local a = lines(plan.build { sync = sync, target = TARGETS[1], policy = pol, source = src })
  local b = lines(plan.build { sync = sync, target = TARGETS[2], policy = pol, source = src })
  t:ok(a:find("add_member jira-only", 1, true), a)
  t:ok(b:find("add_member elsewhere", 1, true) and not b:find("jira-only", 1, true), b)
  os.remove(path)
end)

test("a partial read's look-up plan of a compact source answers from what other targets kept", function(t)
  -- snapshot.complete plans the target to find the groups to look up;
  -- with a compact source (usersync.userset) the planner asks
  -- pol:kept_groups before it makes a user: answers kept while planning
  -- another target are found, not every user made again (a wrapper
  -- policy as self kept its own memo, always empty)
  local snapshot = require "usersync.snapshot"
  local userset = require "usersync.userset"
  local sync, src = sync_entry(), source(30)
  local set = userset.new { top = { "id", "status", "groups" }, profile = { "login", "email", "firstName", "lastName" } }
  for _, u in ipairs(src.users) do
    set:add(u)
    for _, g in ipairs(u.groups) do set:add_members({ u.id }, g) end
  end
  set:finish()
  local compact = { users = set, groups = src.groups }
  local pol = assert(policy.load(nil))
  pol:new_run()
  plan.build { sync = sync, target = TARGETS[2], policy = pol, source = compact }

  -- the answers pol:kept_groups finds
  local found, kept_groups = 0, pol.kept_groups
  pol.kept_groups = function(self, ...)
    local r = kept_groups(self, ...)
    if r then found = found + 1 end
    return r
  end
  local function kept_found(fn)
    found = 0
    fn()
    return found
  end
  local e = { target = function() return { group_exists = function() return true end } end }
  local input = { sync = sync, target = TARGETS[1], policy = pol, source = compact }
  local in_complete = kept_found(function()
    local snap = { complete = true, groups_partial = true, groups = {}, accounts = {} }
    assert(snapshot.complete(e, "jira", snap, input) == snap)
  end)
  t:eq(in_complete, 30, "the look-up's plan finds every user's kept answer")
  t:eq(kept_found(function() plan.build(input) end), 30, "so does the plan")
end)

test("the groups a partial read looks up are planned with the answers kept for the plan", function(t)
  -- snapshot.complete plans the target once to find the groups to look
  -- up; the plan after it answers from what that kept (not once again
  -- per user: a wrapper policy as self kept its answers apart)
  local snapshot = require "usersync.snapshot"
  local sync, src = sync_entry(), source(30)
  local pol = assert(policy.load(nil))
  pol:new_run()
  local asked = {}
  local e = { target = function() return { group_exists = function(_, g) asked[#asked + 1] = g; return true end } end }
  local input = { sync = sync, target = TARGETS[1], policy = pol, source = src }
  local calls = counting(function()
    local snap = { complete = true, groups_partial = true, groups = {}, accounts = {} }
    local got = snapshot.complete(e, "jira", snap, input)
    t:eq(got, snap, "completed")
    plan.build(input)
  end)
  table.sort(asked)
  t:same(asked, { "devs", "new-hires", "okta-synced", "ops" }, "the groups the plan needs looked up")
  t:eq(calls.groups, 30, "groups(): once per user for the look-up and the plan together")
end)

return test.done()
