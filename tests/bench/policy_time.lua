-- policy_time.lua: per-user time of the default policy's hooks (-- under 5 µs per user), called through usersync.policy exactly as plan.lua
-- calls them, for a genorg org.
--
--   SOURCE_DIR=$PWD PYTHON3=/usr/bin/python3 build/usersync run tests/bench/policy_time.lua [users=10000] [groups=500] [rounds=5]
--
-- For each target type (jira, confluence, bitbucket: Confluence lowercases
-- and cleans usernames) and each group mode (manual map, on-the-fly with an
-- exclude pattern and a rename rule), one round calls, per user:
-- pol:user(u, ctx), and for an active account pol:groups(u, its counted
-- groups, ctx) and pol:default_groups(account, true, ctx); include_group runs
-- once per group (not per user) and is timed separately. The best of
-- `rounds` rounds is reported, in µs per user (hooks only: the org is
-- decoded and each user's group list built before the clock starts).
package.path = (os.getenv("SOURCE_DIR") or ".") .. "/tests/lua/?.lua;" .. package.path
local fakes = require "support.fakes"
local json = require "usersync.json"
local policy = require "usersync.policy"
local clock = require("usersync.time").monotonic

local NU = tonumber(arg and arg[1]) or 10000
local NG = tonumber(arg and arg[2]) or 500
local ROUNDS = tonumber(arg and arg[3]) or 5

local py = os.getenv("PYTHON3") or "/usr/bin/python3"
local org = os.tmpname()
local ok = os.execute(("timeout 300 %s %s/tests/fakes/genorg.py --users %d --groups %d --seed 42 --app-id 0oaBenchApp000000001 --out %s")
  :format(py, fakes.source_dir, NU, NG, org))
local f = io.open(org, "rb")
local text = f and f:read("a")
if f then f:close() end
os.remove(org)
assert(ok and text, "genorg failed")
local st = assert(json.decode(text))
text = nil

-- Each user's Okta group ids (as the Okta scope read gives them).
local groups_by_id, user_groups = {}, {}
for _, g in ipairs(st.groups) do groups_by_id[g.id] = g end
for gid, members in pairs(st.group_members) do
  for _, uid in ipairs(members) do
    user_groups[uid] = user_groups[uid] or {}
    table.insert(user_groups[uid], gid)
  end
end
local users = st.users
for _, u in ipairs(users) do u.groups = user_groups[u.id] or {} end

-- A manual map of every other group (half the groups mapped).
local map = {}
for i, g in ipairs(st.groups) do
  if i % 2 == 0 then map[g.profile.name] = { "jira-" .. g.profile.name:lower() } end
end
local MODES = {
  manual = { mode = "manual", map = map, create_missing = true, keep_existing = true },
  on_the_fly = { mode = "on_the_fly", create_missing = true, keep_existing = true,
                 exclude = { "-(contractors|alumni|interns)( \\d+)?$" }, rename = { { "^(.+)-emea$", "emea-$1" } } },
}

local pol = assert(policy.load(nil))
print(("org: %d users, %d groups; best of %d rounds; default policy via usersync.policy"):format(#users, #st.groups, ROUNDS))
local worst = 0
for _, mode in ipairs({ "manual", "on_the_fly" }) do
  for _, ttype in ipairs({ "jira", "confluence", "bitbucket" }) do
    local sync = { name = "main", users = { create = true }, groups = MODES[mode],
                   defaults = { new_users = { "new-hires" }, all_users = { "okta-synced" } } }
    local ctx = { sync = "main", target = ttype, target_type = ttype, settings = sync,
      is_active = function(status)
        local v = require("usersync.source").STATUS[status]
        if v == "active" then return true elseif v == "inactive" then return false end
        return nil
      end,
      kv = { get = function() return nil end } }
    -- include_group: once per group.
    local counted, ig_best = {}, math.huge
    for _ = 1, ROUNDS do
      local t0 = clock()
      for _, g in ipairs(st.groups) do
        if pol:include_group(g, ctx) then counted[g.id] = g end
      end
      ig_best = math.min(ig_best, clock() - t0)
    end
    -- Per-user group lists (counted only, sorted by name as plan.lua does): untimed.
    local ugroups = {}
    for i, u in ipairs(users) do
      local list = {}
      for _, gid in ipairs(u.groups) do if counted[gid] then list[#list + 1] = counted[gid] end end
      table.sort(list, function(a, b) return a.profile.name < b.profile.name end)
      ugroups[i] = list
    end
    local best, mapped, errors, names = math.huge, 0, 0, 0
    for _ = 1, ROUNDS do
      mapped, errors, names = 0, 0, 0
      collectgarbage()
      local t0 = clock()
      for i, u in ipairs(users) do
        local acct, err = pol:user(u, ctx)
        if err then errors = errors + 1 end
        if acct then
          mapped = mapped + 1
          if acct.active then
            local gl = pol:groups(u, ugroups[i], ctx)
            local dl = pol:default_groups(acct, true, ctx)
            names = names + #gl + #dl
          end
        end
      end
      best = math.min(best, clock() - t0)
    end
    local us = best * 1e6 / #users
    if us > worst then worst = us end
    print(("%-10s %-10s %6.2f us/user  (%d mapped, %d errors, %d group names; include_group %.2f us/group)")
      :format(mode, ttype, us, mapped, errors, names, ig_best * 1e6 / #st.groups))
    assert(errors == 0, "policy errors")
  end
end
print(("worst: %.2f us/user (budget 5 us/user): %s"):format(worst, worst < 5 and "within budget" or "OVER BUDGET"))
