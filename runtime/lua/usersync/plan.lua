-- usersync.plan: computes what one sync entry must change in one target.
-- Pure: it reads snapshots and the store's links, asks the
-- policy, and returns operations with reasons; it writes nothing.
--
--   local plan = require "usersync.plan"
--   local p = plan.build{
--     sync = cfg.sync[1],                      -- validated sync entry
--     target = { name = "jira", type = "jira" },
--     policy = pol,                            -- usersync.policy object
--     source = { users = {...}, groups = { [id] = group } },
--     accounts = { { name=, display_name=, email=, active=, groups = {...} } },
--     groups = { "jira-users", ... },          -- target groups
--     leads = { ["alice"] = { projects = {"ABC"}, components = {"10001"} } },
--     links = { ["00u1"] = "alice" },          -- okta id -> account name (this target)
--     owned_memberships = { ["jira-users"] = { ["alice"] = true } },  -- lowercase keys
--     owned_groups = { ["jira-users"] = true },
--     only = { ["00u1"] = true },              -- optional: plan for these users only
--     claimed = { ["alice"] = "other-sync" },  -- accounts an earlier sync entry set
--     new_accounts = { ["bob"] = "00u2" },     -- accounts still to onboard (created by us, or returning)
--     returning = { ["00u2"] = { "stash-users" } },  -- groups to give back to a returning account
--     single = true,                           -- optional: the run's only sync entry (see below)
--   }
--   -- p.ops: ordered operations; p.conflicts, p.errors, p.notes; p.counts;
--   -- p.mapped_keys: lowercase account names the sync's users map to;
--   -- p.wanted: lowercase account -> { lowercase group -> name } it should be in;
--   -- p.active_keys: lowercase accounts mapped as active. These three are for
--   -- the other sync entries of a run and are empty with input.single.
--
-- Source users carry `groups`, a list of Okta group ids. Account and group
-- names compare case-insensitively, as the Atlassian products do.
--
-- Operation: { kind, target, subject, reason, okta_id?, ... } (target, the
-- reason of create_user and add_member, and add_member's kind and subject
-- come from the op's metatable: read them by name; pairs() does not list
-- them, plan.plain(op) gives every field) where kind is
-- one of (in plan order):
--   create_group{group}  create_user{name, display_name, email}
--   link{name} (adopt an existing account: no server write)
--   update_user{name, changes = { display_name = {from,to}, email = {from,to} }}
--   rename_user{from, to}  reactivate_user{name}
--   add_member{group, name}  remove_member{group, name}
--   handover_lead{name, projects, components, to_project_lead, to_component_lead}
--   deactivate_user{name}  delete_user{name}
local M = {}

-- Plan order and what each product can do (Bitbucket has no deactivation,
-- Confluence's REST API no rename): the target registry's tables.
local targets = require "usersync.targets"
M.ORDER = targets.ORDER
local RANK = targets.RANK
M.RANK = RANK
M.CAPS = targets.CAPS

local lower = string.lower

-- The reasons of the kinds a large plan is made of, built when read
-- (op.reason) from the op and its user's login; every other op carries its
-- reason as a field. An op's `pairs` shows neither `reason` nor `target`
-- (planfile and state copy them by name).
local LAZY_REASON = {
  create_user = function(_, login) return ("%s is in scope and has no account"):format(login) end,
  add_member = function(o, login) return "group rules put " .. login .. " in " .. o.group end,
}

-- A deep copy: hooks get their own settings, so a hook that changes them
-- cannot change what the planner (or the safety check) decides.
function M.copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = M.copy(x) end
  return c
end

local function set_of(list)
  local s = {}
  for _, v in ipairs(list or {}) do s[lower(v)] = v end
  return s
end

-- The context hooks get: which sync and target, the settings
-- (a copy), is_active(status) by the status map, and kv reads.
function M.context(input)
  local status_map = input.status_map or M.STATUS
  return {
    sync = input.sync.name, target = input.target.name, target_type = input.target.type,
    settings = M.copy(input.sync),
    is_active = function(status)
      local v = status_map[status]
      if v == "active" then return true elseif v == "inactive" then return false end
      return nil
    end,
    kv = input.kv or { get = function() return nil end },
  }
end

-- The account names the source users of `input` map to in its target (the
-- policy's `user` hook; users it leaves out or fails on give none). A run
-- for a few users reads just these accounts instead of the whole target.
function M.account_names(input)
  local ctx = M.context(input)
  local names = {}
  for _, u in ipairs(input.source.users or {}) do
    local acct = input.policy:user(u, ctx)
    if acct and acct.name then names[#names + 1] = acct.name end
  end
  return names
end

local function by_group_name(a, b) return a.profile.name < b.profile.name end

-- Builds the plan for one target. See the header for `input`.
function M.build(input)
  local sync, target, pol = input.sync, input.target, input.policy
  local caps = M.CAPS[target.type] or {}
  local users_cfg = sync.users or {}
  local groups_cfg = sync.groups or {}
  local ops, conflicts, errors, notes = {}, {}, {}, {}
  -- Every op reads `target`, and the reason of the bulk kinds (LAZY_REASON),
  -- from a metatable; an add_member op also its kind and subject (= name),
  -- so it holds 4 fields (group, name, okta_id, seq): a 100,000-user first
  -- sync plans over a million ops, and each field beyond 4 doubled a table.
  local login_of = {}   -- okta id -> login, for the reasons built on demand
  local op_mt = { __index = function(o, k)
    if k == "target" then return target.name end
    if k == "reason" then
      local why = LAZY_REASON[o.kind]
      if why then return why(o, login_of[o.okta_id]) end
    end
  end }
  -- One metatable per reason a membership is added (op.why): "mapping"
  -- (a group rule), "default" (defaults.all_users) or "new_user"
  -- (defaults.new_users given to a new account: it stays once given).
  local add_mts = {}
  for _, why in ipairs({ "mapping", "default", "new_user" }) do
    add_mts[why] = { __index = function(o, k)
      if k == "kind" then return "add_member" end
      if k == "subject" then return rawget(o, "name") end
      if k == "target" then return target.name end
      if k == "why" then return why end
      if k == "reason" then return LAZY_REASON.add_member(o, login_of[rawget(o, "okta_id")]) end
    end }
  end
  local function op(o, mt)
    setmetatable(o, mt or op_mt)
    ops[#ops + 1] = o
    return o
  end
  local function note(msg) notes[#notes + 1] = msg end

  local ctx = M.context(input)

  -- Target state, by lowercase name.
  local accounts = {}
  for _, a in ipairs(input.accounts or {}) do accounts[lower(a.name)] = a end
  local tgroups = set_of(input.groups)
  local links = input.links or {}
  local linked_by_account = {}
  for okta_id, name in pairs(links) do linked_by_account[lower(name)] = okta_id end
  local owned_m = input.owned_memberships or {}
  local owned_g = input.owned_groups or {}
  local new_accounts = input.new_accounts or {}
  local claimed = input.claimed or {}

  -- Okta groups that count, once per group. A group whose hook failed
  -- makes the plan incomplete: its memberships cannot be judged.
  local counted = {}
  local group_errors = false
  for id, g in pairs(input.source.groups or {}) do
    local ok, err = pol:include_group(g, ctx)
    if ok == nil then
      errors[#errors + 1] = { subject = "group " .. tostring(g.profile and g.profile.name or id), message = err }
      group_errors = true
    elseif ok then
      counted[id] = g
    end
  end

  -- 1. Map every source user; find duplicate usernames.
  local mapped, by_name = {}, {}
  local seen = {}  -- okta id -> "read", or "kept" when mapped (its linked account stays in scope)
  for _, u in ipairs(input.source.users or {}) do
    seen[u.id] = "read"
    local login = u.profile and u.profile.login or u.id
    local acct, err = pol:user(u, ctx)
    if err then
      errors[#errors + 1] = { okta_id = u.id, subject = login, message = err }
    elseif acct then
      local key = lower(acct.name)
      seen[u.id] = "kept"
      -- also the user's desired state (desired_groups_of), once matched
      local m = { user = u, login = login, account = acct, key = key }
      mapped[#mapped + 1] = m
      -- one m per name, a list only for a duplicate (100,000 lists cost MBs)
      local prev = by_name[key]
      if prev == nil then
        by_name[key] = m
      elseif prev.user then
        by_name[key] = { prev, m }
      else
        prev[#prev + 1] = m
      end
    end
  end
  local failed_ids = {}
  for _, e in ipairs(errors) do if e.okta_id then failed_ids[e.okta_id] = true end end

  for _, list in pairs(by_name) do
    if not list.user then
      local logins = {}
      for _, m in ipairs(list) do logins[#logins + 1] = m.login; m.conflict = true end
      table.sort(logins)
      conflicts[#conflicts + 1] = { name = list[1].account.name,
        message = ("Okta users %s all map to the username %q; neither is applied"):format(table.concat(logins, ", "), list[1].account.name) }
    end
  end

  -- 2. Match each mapped user to an account: link, adoption or creation.
  local desired_groups_of = {}   -- lowercase account -> its m, with account (as matched), existing, want
                                 -- (lowercase group -> group name) or deactivate
  local managed_groups = {}      -- lowercase group -> name (groups this sync manages)
  for g in pairs(owned_g) do managed_groups[lower(g)] = g end
  local wanted_groups = {}       -- lowercase group -> name (must exist)
  local new_ids = {}             -- okta ids whose accounts get the new-user groups now

  for _, m in ipairs(mapped) do
    local u, acct, key = m.user, m.account, m.key
    if m.conflict then goto continue end
    if input.only and not input.only[u.id] then goto continue end

    local linked_name = links[u.id]
    local existing, is_new = nil, false
    if linked_name then
      existing = accounts[lower(linked_name)]
      -- Created by usersync but its new-user groups not all given yet.
      if existing and new_accounts[lower(linked_name)] == u.id then is_new = true end
      if not existing then
        note(("%s: linked account %q no longer exists in %s; it will be created again"):format(m.login, linked_name, target.name))
      elseif lower(linked_name) ~= key then
        -- Login changed in Okta: rename the linked account (never delete + create).
        local taken = accounts[key]
        if taken and taken ~= existing then
          conflicts[#conflicts + 1] = { name = acct.name, okta_id = u.id,
            message = ("%s: cannot rename %q to %q: that username is taken by another account"):format(m.login, linked_name, acct.name) }
          goto continue
        elseif not caps.rename then
          note(("%s: %s cannot rename accounts; %q keeps its name (Okta login now maps to %q)"):format(m.login, target.type, linked_name, acct.name))
          acct = setmetatable({ name = existing.name }, { __index = acct })
          key = lower(existing.name)
        elseif not users_cfg.rename then
          note(("%s: rename %q -> %q not applied (users.rename = false)"):format(m.login, linked_name, acct.name))
          acct = setmetatable({ name = existing.name }, { __index = acct })
          key = lower(existing.name)
        else
          op { kind = "rename_user", subject = linked_name, from = existing.name, to = acct.name, okta_id = u.id,
               reason = ("Okta login of %s changed"):format(m.login) }
        end
      end
    end
    if not existing then
      local candidate = accounts[key]
      if candidate then
        local owner = linked_by_account[key]
        if owner and owner ~= u.id then
          conflicts[#conflicts + 1] = { name = acct.name, okta_id = u.id,
            message = ("%s: username %q is already linked to Okta user %s"):format(m.login, acct.name, owner) }
          goto continue
        end
        existing = candidate
        if new_accounts[key] == u.id then
          -- A run that died while creating this account made it: it is ours.
          is_new = true
          op { kind = "link", subject = candidate.name, name = candidate.name, okta_id = u.id, created = true,
               reason = ("record the account created for %s by an interrupted run"):format(m.login) }
        else
          op { kind = "link", subject = candidate.name, name = candidate.name, okta_id = u.id,
               reason = ("adopt the existing account of %s"):format(m.login) }
        end
      elseif acct.active then
        if not users_cfg.create then
          note(("%s: no account %q in %s and users.create = false"):format(m.login, acct.name, target.name))
          goto continue
        end
        login_of[u.id] = m.login
        op { kind = "create_user", subject = acct.name, name = acct.name, display_name = acct.display_name,
             email = acct.email, okta_id = u.id } -- reason: LAZY_REASON
        is_new = true
      else
        goto continue -- inactive in Okta and no account: nothing to do
      end
    end

    -- An existing account (adopted or linked) is addressed by its own
    -- spelling, not the Okta login's: a server may look names up
    -- case-sensitively. (A rename planned above addresses it by the new name.)
    if existing and existing.name ~= acct.name and lower(existing.name) == lower(acct.name) then
      acct = setmetatable({ name = existing.name }, { __index = acct })
    end

    -- Attributes: the first sync entry that claims an account sets them.
    local claim = claimed[key]
    local first_claim = not (claim and claim ~= sync.name)
    if existing then
      local changes = {}
      if acct.display_name and acct.display_name ~= existing.display_name then
        changes.display_name = { from = existing.display_name, to = acct.display_name }
      end
      -- A product that hides e-mail addresses (Confluence) reports none:
      -- unknown is not different, so no update is planned for it.
      if acct.email and acct.email ~= "" and existing.email ~= nil and lower(acct.email) ~= lower(existing.email) then
        changes.email = { from = existing.email, to = acct.email }
      end
      if next(changes) and first_claim then
        if users_cfg.update then
          -- Addressed by the account's current name: a rename, if any, comes after.
          op { kind = "update_user", subject = existing.name, name = existing.name, changes = changes, okta_id = u.id,
               reason = "profile changed in Okta" }
        else
          note(("%s: profile differs but users.update = false"):format(m.login))
        end
      end
      if acct.active and existing.active == false then
        if users_cfg.reactivate then
          op { kind = "reactivate_user", subject = acct.name, name = acct.name, okta_id = u.id,
               reason = ("%s is %s in Okta"):format(m.login, tostring(u.status)) }
        else
          note(("%s: account inactive but users.reactivate = false"):format(m.login))
        end
      elseif not acct.active and existing.active ~= false then
        m.deactivate = true
      end
    end

    -- Groups this user should be in.
    if acct.active then
      local ugroups = {}
      for _, gid in ipairs(u.groups or {}) do
        local g = counted[gid]
        if g then ugroups[#ugroups + 1] = g end
      end
      table.sort(ugroups, by_group_name)
      local names, err = pol:groups(u, ugroups, ctx)
      local defaults, err2
      if names then defaults, err2 = pol:default_groups(acct, is_new, ctx) end
      if not names or not defaults then
        errors[#errors + 1] = { okta_id = u.id, subject = m.login, message = err or err2 }
        -- Drop this user's operations planned above: a failing hook applies nothing for them.
        for i = #ops, 1, -1 do if ops[i].okta_id == u.id then table.remove(ops, i) end end
        goto continue
      end
      -- Why each group is wanted: a new account's new-user defaults (those
      -- it would not get as an existing account) are "new_user".
      local as_old = defaults
      if is_new then
        as_old, err2 = pol:default_groups(acct, false, ctx)
        if not as_old then
          errors[#errors + 1] = { okta_id = u.id, subject = m.login, message = err2 }
          for i = #ops, 1, -1 do if ops[i].okta_id == u.id then table.remove(ops, i) end end
          goto continue
        end
      end
      local old_set = {}
      for _, g in ipairs(as_old) do old_set[lower(g)] = true end
      local want, why = {}, {}
      -- A returning account (deprovisioned by group removal) is
      -- provisioned like a new one: it also gets back the groups no rule
      -- manages that the deprovisioning took (its licence group).
      local back = is_new and input.returning and input.returning[u.id]
      for _, gname in ipairs(back or {}) do
        local gk = lower(gname)
        want[gk], why[gk] = gname, "new_user"
        wanted_groups[gk] = wanted_groups[gk] or gname
      end
      for i = 1, 2 do
        for _, gname in ipairs(i == 1 and names or defaults) do
          local gk = lower(gname)
          want[gk] = gname
          if i == 2 then
            why[gk] = (is_new and not old_set[gk]) and "new_user" or why[gk] or "default"
          else
            why[gk] = "mapping"
          end
          managed_groups[gk] = managed_groups[gk] or gname
          wanted_groups[gk] = wanted_groups[gk] or gname
        end
      end
      m.account, m.existing, m.want, m.why = acct, existing, want, why
      desired_groups_of[key] = m
      if is_new then new_ids[#new_ids + 1] = u.id end
    elseif m.deactivate then
      m.account, m.existing = acct, existing -- m.deactivate is set
      desired_groups_of[key] = m
    end
    ::continue::
  end

  -- Groups mapped in the config count as managed even with no member yet.
  if groups_cfg.mode ~= "on_the_fly" then
    for _, v in pairs(groups_cfg.map or {}) do
      for _, gname in ipairs(type(v) == "table" and v or { v }) do managed_groups[lower(gname)] = managed_groups[lower(gname)] or gname end
    end
  end

  -- 3. Missing target groups.
  local missing = {}
  local gkeys = {}
  for gk in pairs(wanted_groups) do gkeys[#gkeys + 1] = gk end
  table.sort(gkeys)
  for _, gk in ipairs(gkeys) do
    if not tgroups[gk] then
      if groups_cfg.create_missing then
        op { kind = "create_group", subject = wanted_groups[gk], group = wanted_groups[gk],
             reason = "mapped group does not exist" }
      else
        missing[gk] = true
        note(("group %q does not exist in %s and groups.create_missing = false; its memberships are skipped")
          :format(wanted_groups[gk], target.name))
      end
    end
  end

  -- 4. Memberships of managed (linked or adopted) accounts.
  local keys = {}
  for k in pairs(desired_groups_of) do keys[#keys + 1] = k end
  table.sort(keys)
  -- Memberships this entry manages in the target now (of its mapped
  -- accounts, in groups it manages or memberships it added): the base of
  -- limits.max_membership_removals as a percentage.
  local managed_memberships = 0
  for _, key in ipairs(keys) do
    local d = desired_groups_of[key]
    local name = d.account.name
    if d.deactivate then goto next_account end
    local current = {}
    for _, g in ipairs(d.existing and d.existing.groups or {}) do
      local gk = lower(g)
      current[gk] = g
      if managed_groups[gk] or (owned_m[gk] and owned_m[gk][key]) then managed_memberships = managed_memberships + 1 end
    end
    local adds = {}
    for gk, gname in pairs(d.want) do
      if not current[gk] and not missing[gk] then adds[#adds + 1] = tgroups[gk] or gname end
    end
    table.sort(adds)
    if #adds > 0 then login_of[d.user.id] = d.login end
    for _, g in ipairs(adds) do
      -- kind, subject, reason, why: add_mts
      op({ group = g, name = name, okta_id = d.user.id }, add_mts[d.why[lower(g)] or "mapping"])
    end
    local removes = {}
    for gk, gname in pairs(current) do
      if not d.want[gk] then
        local owned = owned_m[gk] and owned_m[gk][key]
        if owned or (groups_cfg.keep_existing == false and managed_groups[gk]) then
          removes[#removes + 1] = gname
        end
      end
    end
    -- Groups given only to new accounts (defaults.new_users) stay once given.
    if #removes > 0 then
      local as_new, e1 = pol:default_groups(d.account, true, ctx)
      local as_old, e2 = pol:default_groups(d.account, false, ctx)
      if not as_new or not as_old then
        errors[#errors + 1] = { okta_id = d.user.id, subject = d.login, message = e1 or e2 }
        as_new, as_old, removes = {}, {}, {} -- cannot tell which groups are kept: remove nothing
      end
      local only_new = {}
      for _, g in ipairs(as_new) do only_new[lower(g)] = true end
      for _, g in ipairs(as_old) do only_new[lower(g)] = nil end
      -- ... when given as such: a membership usersync added for a group
      -- rule (or as an all-users default) goes when the rule no longer
      -- applies, even if the group is also a new-user default.
      local kept = {}
      for _, g in ipairs(removes) do
        local gk = lower(g)
        local why = owned_m[gk] and owned_m[gk][key]
        local stays = why == "new_user" or (only_new[gk] and why ~= "mapping" and why ~= "default")
        if not stays then kept[#kept + 1] = g end
      end
      removes = kept
    end
    table.sort(removes)
    for _, g in ipairs(removes) do
      op { kind = "remove_member", subject = name, group = g, name = name, okta_id = d.user.id,
           reason = ("%s is no longer in a group that maps to %s"):format(d.login, g) }
    end
    ::next_account::
  end

  -- 5. Deprovisioning: only linked accounts whose Okta user left scope, was
  -- left out by the policy, or is inactive in Okta. Users whose hooks failed
  -- are never deprovisioned.
  local leavers = {}
  for okta_id, name in pairs(links) do
    if seen[okta_id] ~= "kept" and not failed_ids[okta_id] and (not input.only or input.only[okta_id]) then
      local a = accounts[lower(name)]
      if a then
        leavers[#leavers + 1] = { okta_id = okta_id, account = a,
          reason = seen[okta_id] and "left out by the policy" or "no longer in scope" }
      end
    end
  end
  for _, key in ipairs(keys) do
    local d = desired_groups_of[key]
    if d.deactivate and d.existing then
      leavers[#leavers + 1] = { okta_id = d.user.id, account = d.existing, inactive = true,
        reason = ("%s is inactive in Okta"):format(d.login) }
    end
  end
  table.sort(leavers, function(a, b) return lower(a.account.name) < lower(b.account.name) end)

  local deprovisions = 0
  for _, l in ipairs(leavers) do
    local a = l.account
    local key = lower(a.name)
    if claimed[key] and claimed[key] ~= sync.name then goto next_leaver end
    local action, err
    if l.inactive then
      action = "deactivate"
    else
      action, err = pol:deprovision(a, l.reason, ctx)
      if not action then
        errors[#errors + 1] = { okta_id = l.okta_id, subject = a.name, message = err }
        goto next_leaver
      end
    end
    if action == "deactivate" and not caps.deactivate then
      action = "remove_groups"
      note(("%s: %s cannot deactivate accounts; removing it from every group instead"):format(a.name, target.type))
    end
    if action == "delete" and not users_cfg.delete then
      note(("%s: policy asks to delete, but users.delete = false; deactivating instead"):format(a.name))
      action = caps.deactivate and "deactivate" or "remove_groups"
    end
    if action == "deactivate" and not users_cfg.deactivate then
      note(("%s: %s but users.deactivate = false; kept"):format(a.name, l.reason))
      action = "keep"
    end
    if action == "deactivate" and a.active == false then action = "keep" end
    if action == "keep" then goto next_leaver end

    if action == "remove_groups" and #(a.groups or {}) == 0 then goto next_leaver end -- nothing left to take
    deprovisions = deprovisions + 1
    if action == "remove_groups" then
      for _, g in ipairs(a.groups or {}) do
        -- restore: a group no rule manages (a licence group), given back
        -- if the account returns (input.returning)
        local gk = lower(g)
        op { kind = "remove_member", subject = a.name, group = g, name = a.name, okta_id = l.okta_id,
             deprovision = true, reason = l.reason,
             restore = not managed_groups[gk] and not (owned_m[gk] and owned_m[gk][key]) or nil }
      end
    else
      local leads = input.leads and input.leads[key]
      if caps.leads and leads and (#(leads.projects or {}) > 0 or #(leads.components or {}) > 0) then
        local to_p, to_c = users_cfg.project_lead, users_cfg.component_lead
        if (#(leads.projects or {}) > 0 and not to_p) or (#(leads.components or {}) > 0 and not to_c) then
          conflicts[#conflicts + 1] = { name = a.name, okta_id = l.okta_id,
            message = ("%s leads projects or components and no users.project_lead/component_lead is configured; not deprovisioned"):format(a.name) }
          deprovisions = deprovisions - 1
          goto next_leaver
        end
        op { kind = "handover_lead", subject = a.name, name = a.name, deprovision = true, projects = leads.projects or {},
             components = leads.components or {}, to_project_lead = to_p, to_component_lead = to_c,
             okta_id = l.okta_id, reason = "before " .. action .. ": " .. l.reason }
      end
      op { kind = action .. "_user", subject = a.name, name = a.name, okta_id = l.okta_id, deprovision = true,
           reason = l.reason }
    end
    ::next_leaver::
  end

  -- Plan order, stable within a kind.
  for i, o in ipairs(ops) do o.seq = i end
  table.sort(ops, function(a, b)
    if RANK[a.kind] ~= RANK[b.kind] then return RANK[a.kind] < RANK[b.kind] end
    return a.seq < b.seq
  end)
  local counts = {}
  for i, o in ipairs(ops) do
    o.seq = i
    counts[o.kind] = (counts[o.kind] or 0) + 1
  end
  -- What other sync entries of the run need (engine.lua, multiple
  -- sources); input.single (the only entry planned) leaves them empty.
  local mapped_keys = {}
  local wanted = {}   -- lowercase account -> lowercase group -> group name (shared, read-only)
  local active_keys = {}
  if not input.single then
    for _, m in ipairs(mapped) do
      if not m.conflict then mapped_keys[#mapped_keys + 1] = m.key end
    end
    for k, d in pairs(desired_groups_of) do
      if d.want then
        wanted[k] = d.want
        active_keys[k] = true
      end
    end
  end
  return { target = target.name, target_type = target.type, ops = ops, conflicts = conflicts,
           errors = errors, notes = notes, counts = counts, deprovisions = deprovisions,
           managed_users = #mapped, managed_memberships = managed_memberships, mapped_keys = mapped_keys, new_ids = new_ids,
           wanted = wanted, active_keys = active_keys, incomplete = group_errors or nil }
end

-- Memory: the GC pause to use while a whole-org plan is
-- built or written out (Lua's default 200 lets the heap reach twice what is
-- live; writing a million-line plan is nearly all garbage). Sets `pause`
-- and returns a to-be-closed value that restores the previous one:
--   local _ <close> = plan.gc_pause(150)
function M.gc_pause(pause)
  local old = collectgarbage("setpause", pause)
  return setmetatable({}, { __close = function() collectgarbage("setpause", old) end })
end

-- For report.write_plan_text: a large plan (over 10,000 ops) is written
-- after a full collection with a pause of 150 (the million short-lived
-- lines of a 100,000-user first sync otherwise grow the heap by half again;
-- the plan file's few large pieces are not worth the extra cycles). Returns
-- gc_pause's to-be-closed value, or nil for a small plan.
function M.gc_for_writing(run_plan)
  local n = 0
  for _, s in ipairs(run_plan.syncs) do
    for _, tp in ipairs(s.targets) do n = n + #tp.ops end
  end
  if n <= 10000 then return nil end
  collectgarbage()
  return M.gc_pause(150)
end

-- Every field of an operation (also those its metatable gives) in a new
-- plain table: for serialising one (planfile, the store).
local META_FIELDS = { "kind", "target", "subject", "reason", "why" }
function M.plain(o)
  local c = {}
  for k, v in pairs(o) do c[k] = v end
  for _, k in ipairs(META_FIELDS) do c[k] = o[k] end
  return c
end

-- Recomputes p.counts and p.deprovisions after ops were dropped.
function M.recount(p)
  local counts, dep = {}, 0
  for i, o in ipairs(p.ops) do
    o.seq = i
    counts[o.kind] = (counts[o.kind] or 0) + 1
    if o.kind == "deactivate_user" or o.kind == "delete_user" then dep = dep + 1 end
  end
  -- a Bitbucket leaver stripped of its groups counts once
  local stripped = {}
  for _, o in ipairs(p.ops) do
    if o.kind == "remove_member" and o.deprovision and not stripped[o.name] then
      stripped[o.name] = true
      dep = dep + 1
    end
  end
  p.counts, p.deprovisions = counts, dep
  return p
end

-- Okta status -> account state; `sources.X.status_map` overrides.
M.STATUS = {
  ACTIVE = "active", PASSWORD_EXPIRED = "active", LOCKED_OUT = "active", RECOVERY = "active",
  PROVISIONED = "active", SUSPENDED = "inactive", DEPROVISIONED = "inactive", STAGED = "skip",
}

return M
