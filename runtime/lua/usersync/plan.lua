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
--                                              -- or a usersync.accountset of them
--                                              -- id= too where the service assigns ids (SCIM):
--                                              -- ops on the account then carry it (op.id)
--     groups = { "jira-users", ... },          -- target groups
--     leads = { ["alice"] = { projects = {"ABC"}, components = {"10001"} } },
--     links = { ["00u1"] = "alice" },          -- okta id -> account name (this target)
--     link_ids = { ["00u1"] = "2819c223" },    -- okta id -> the account's service id (SCIM):
--                                              -- a linked account renamed in the service
--                                              -- is still found by it
--     owned_memberships = { ["jira-users"] = { ["alice"] = true } },  -- lowercase keys
--                                              -- links may be a usersync.linkset instead
--                                              -- (a whole target's, state.linkset): then
--                                              -- link_ids come from it, and it may be given
--                                              -- as owned_memberships too
--     owned_groups = { ["jira-users"] = true },
--     only = { ["00u1"] = true },              -- optional: plan for these users only
--     claimed = { ["alice"] = "other-sync" },  -- accounts an earlier sync entry set
--     new_accounts = { ["bob"] = "00u2" },     -- accounts still to onboard (ours, or returning)
--     returning = { ["00u2"] = { "stash-users" } },  -- groups to give back to a returning account
--     single = true,                           -- optional: the run's only sync entry (see below)
--     sink = function(op) ... end,             -- optional: streams the ops (see below)
--   }
--   -- p.ops: ordered operations; p.conflicts, p.errors, p.notes; p.counts;
--   -- p.mapped_keys: lowercase account names the sync's users map to;
--   -- p.wanted: lowercase account -> { lowercase group -> name } it should be in;
--   -- p.active_keys: lowercase accounts mapped as active. These three are for
--   -- the other sync entries of a run and are empty with input.single.
--
-- With input.sink the plan never holds a target's ops at once (a
-- 100,000-user first plan has half a million): sink(op) is called with
-- each op in plan order, seq set, up to the last add_member; p.ops holds
-- the rest (the kinds after add_member), numbered on, and p.streamed =
-- { n = ops given to the sink, counts = theirs by kind }; p.counts counts
-- them all. Such a plan is the run's only entry's (merge cannot rewrite
-- it): usersync.spool writes the sunk ops out as they come.
--
-- Source users carry `groups`, a list of Okta group ids. Account and group
-- names compare case-insensitively, as the Atlassian products do.
--
-- Operation: { kind, target, subject, reason, okta_id?, ... } (target, the
-- reason, kind and subject of create_user and add_member
-- come from the op's metatable, for memory; pairs() lists them all the
-- same, and plan.plain(op) copies every field) where kind is one of (in
-- plan order):
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
  add_member = function(o, login, why)
    if why == "default" then return "default group for all users" end
    if why == "new_user" then return "default group for new users" end
    return "group rules put " .. login .. " in " .. o.group
  end,
}

-- A deep copy: hooks get their own settings, so a hook that changes them
-- cannot change what the planner (or the safety check) decides.
function M.copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = M.copy(x) end
  return c
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

local function set_of(list)
  local s = {}
  for _, v in ipairs(list or {}) do s[lower(v)] = v end
  return s
end

-- The context hooks get: which sync and target, the settings
-- (a copy), is_active(status) by the status map, and kv reads.
function M.context(input)
  local status_map = input.status_map or require("usersync.source").STATUS
  local ctx = {
    sync = input.sync.name, target = input.target.name, target_type = input.target.type,
    settings = M.copy(input.sync),
    is_active = function(status)
      local v = status_map[status]
      if v == "active" then return true elseif v == "inactive" then return false end
      return nil
    end,
    kv = input.kv or { get = function() return nil end },
  }
  -- the default hooks' answers are kept per sync entry (policy.lua memo_of)
  require("usersync.policy").CONTEXT_SETTINGS[ctx] = input.sync
  return ctx
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

-- Operations ----------------------------------------------------------------
--
-- A 100,000-user first sync plans over a million ops, and each field beyond
-- 4 doubles a table: every op reads `target`, and the reason of the bulk
-- kinds (LAZY_REASON), from a metatable; an add_member op also its kind,
-- subject (= name) and why, so it holds 4 fields (group, name, okta_id,
-- seq), and a create_user op its kind and subject (= name), so it holds 4
-- until it is numbered (name, display_name, email, okta_id). The
-- metatables' __pairs lists those fields too, after the op's own.

-- A __pairs that walks o's own fields, then the fields named in `given`
-- that the metatable answers (and o does not hold itself).
local function pairs_with(given)
  return function(o)
    local own, i = true, 0
    local function step(_, k)
      if own then
        local nk, v = next(o, k)
        if nk ~= nil then return nk, v end
        own = false
      end
      while i < #given do
        i = i + 1
        local name = given[i]
        local v = o[name]
        if v ~= nil and rawget(o, name) == nil then return name, v end
      end
    end
    return step, o, nil
  end
end

-- The metatable of the ops of one kind that hold only their own fields
-- (create_user, and add_member for one `why`): kind, subject (= name),
-- target, why (add_member) and the reason come from it.
local function kind_mt(target_name, login_of, kind, why)
  return {
    __index = function(o, k)
      if k == "kind" then return kind end
      if k == "subject" then return rawget(o, "name") end
      if k == "target" then return target_name end
      if k == "why" then return why end
      if k == "reason" then return LAZY_REASON[kind](o, login_of[rawget(o, "okta_id")], why) end
    end,
    __pairs = pairs_with(why and { "kind", "subject", "target", "why", "reason" }
                              or { "kind", "subject", "target", "reason" }),
  }
end

-- The metatables of one target's ops: op_mt for every kind but the added
-- memberships and the creates, create_mt, and one per reason a membership
-- is added (op.why):
-- "mapping" (a group rule), "default" (defaults.all_users) or "new_user"
-- (defaults.new_users given to a new account: it stays once given).
-- login_of: okta id -> login, for the reasons built on demand.
local function op_metatables(target_name, login_of)
  local op_mt = {
    __index = function(o, k)
      if k == "target" then return target_name end
      if k == "reason" then
        local why = LAZY_REASON[o.kind]
        if why then return why(o, login_of[o.okta_id]) end
      end
    end,
    __pairs = pairs_with({ "target", "reason" }),
  }

  local add_mts = {}
  for _, why in ipairs({ "mapping", "default", "new_user" }) do
    add_mts[why] = kind_mt(target_name, login_of, "add_member", why)
  end
  local create_mt = kind_mt(target_name, login_of, "create_user")

  return op_mt, add_mts, create_mt
end

-- Lowercase group names, each computed once per plan (a table lookup
-- costs a tenth of string.lower, and a 10,000-user plan lowers the same
-- few hundred group names over a hundred thousand times).
local LOWER_MT = { __index = function(t, k)
  local l = lower(k)
  t[k] = l
  return l
end }

-- The planner's state: the input, read into lookups once, and what the
-- phases produce. Each phase below reads and extends it.
local function new_state(input)
  local st = {
    glower = setmetatable({}, LOWER_MT), -- group name -> its lowercase
    input = input, sync = input.sync, target = input.target, pol = input.policy,
    caps = targets.caps(input.target.type, input.target.flavour) or {},
    users_cfg = input.sync.users or {}, groups_cfg = input.sync.groups or {},
    ctx = M.context(input),

    -- target state, by lowercase name
    accounts = {}, tgroups = set_of(input.groups),
    links = input.links or {}, linked_by_account = {}, link_ids = input.link_ids or {},
    by_id = {},
    owned_m = input.owned_memberships or {}, owned_g = input.owned_groups or {},
    new_accounts = input.new_accounts or {}, claimed = input.claimed or {},

    -- the result
    ops = {}, conflicts = {}, errors = {}, notes = {}, login_of = {},
    deprovisions = 0, managed_memberships = 0, new_ids = {}, leavers = {},

    -- between phases
    counted = {},          -- Okta group id -> group, for the groups that count
    mapped = {},           -- one m = { user, login, account, key } per mapped user
    by_name = {},          -- lowercase account -> m, or a list of m for a duplicate
    seen = {},             -- okta id -> "read", or "kept" when mapped
    failed_ids = {},       -- okta ids whose user hook failed
    desired = {},          -- lowercase account -> m, matched (see desire_groups)
    managed_groups = {},   -- lowercase group -> name (groups this sync manages)
    wanted_groups = {},    -- lowercase group -> name (must exist)
    missing = {},          -- lowercase group -> true (wanted, absent, not created)
  }

  local accts = input.accounts
  if type(accts) == "userdata" then
    -- a whole target's account set: each lookup makes a new table, used and
    -- dropped (100,000 accounts held as tables took over 100 MB)
    local get, get_id = accts.get, accts.by_id
    st.accounts = setmetatable({}, { __index = function(_, k) return get(accts, k) end })
    st.by_id = setmetatable({}, { __index = function(_, id) return get_id(accts, id) end })
    st.has_ids = accts:has_ids() or nil
    -- a matched account kept for the later phases: its name (m.existing),
    -- the rest looked up again when read (100,000 held tables took ~40 MB,
    -- a table per name still 8 MB)
    local held = { __index = function(h, k) return get(accts, rawget(h, "name"), k) end }
    st.hold = function(a) return a.name end
    st.held = function(name) return setmetatable({ name = name }, held) end
    st.held_groups = function(name) return get(accts, name, "groups") end
  else
    for _, a in ipairs(accts or {}) do
      st.accounts[lower(a.name)] = a
      if a.id then
        st.has_ids = true
        st.by_id[a.id] = a
      end
    end
  end
  if type(st.links) == "userdata" then
    -- a whole target's links (state.linkset): looked up one at a time
    local set = st.links
    local name_of, id_of, owner = set.name, set.id, set.owner
    st.links = setmetatable({}, {
      __index = function(_, id) return name_of(set, id) end,
      __pairs = function()
        local i, at = 0, set.at
        return function() i = i + 1; return at(set, i) end
      end,
    })
    st.linked_by_account = setmetatable({}, { __index = function(_, k) return owner(set, k) end })
    if not input.link_ids then
      st.link_ids = setmetatable({}, { __index = function(_, id) return id_of(set, id) end })
    end
  else
    for okta_id, name in pairs(st.links) do st.linked_by_account[lower(name)] = okta_id end
  end
  if type(st.owned_m) == "userdata" then st.owned_why = st.owned_m.why end
  for g in pairs(st.owned_g) do st.managed_groups[lower(g)] = g end
  st.op_mt, st.add_mts, st.create_mt = op_metatables(input.target.name, st.login_of)
  return st
end

-- Op o with its metatable (op_mt unless given) and, for an account the
-- service knows by an id (SCIM), that id.
local function make_op(st, o, mt)
  local a = st.has_ids and o.id == nil and st.accounts[lower(o.name or o.from or "")]
  if a and a.id then o.id = a.id end
  return setmetatable(o, mt or st.op_mt)
end

-- The create_user op of account acct for Okta user okta_id (its kind,
-- subject and reason: create_mt).
local function create_op(st, acct, okta_id)
  return make_op(st, { name = acct.name, display_name = acct.display_name, email = acct.email,
                       okta_id = okta_id }, st.create_mt)
end

-- Streaming (input.sink, a function): the ops of the phases before the
-- memberships (they rank before add_member) go to the sink in plan order
-- when that phase starts (stream_start), each add_member as it is planned
-- (`streams`), and the rest, which rank after, stay in st.ops. st.sent:
-- how many went, st.sent_counts their counts by kind. Until then the
-- accounts to create are held as their m in st.creates, not as ops.
local function add_op(st, o, mt, streams)
  make_op(st, o, mt)
  if streams and st.sent then
    local n = st.sent + 1
    st.sent, o.seq = n, n
    local k = o.kind
    st.sent_counts[k] = (st.sent_counts[k] or 0) + 1
    st.input.sink(o)
    return o
  end
  st.ops[#st.ops + 1] = o
  return o
end

local function note(st, fmt, ...)
  st.notes[#st.notes + 1] = fmt:format(...)
end

local function conflict(st, name, okta_id, message)
  st.conflicts[#st.conflicts + 1] = { name = name, okta_id = okta_id, message = message }
end

local function policy_error(st, okta_id, subject, message)
  st.errors[#st.errors + 1] = { okta_id = okta_id, subject = subject, message = message }
end

-- An account addressed by another name than the one the policy gave.
local function named(acct, name)
  return setmetatable({ name = name }, { __index = acct })
end

-- Phase 0: the Okta groups that count, once per group. A group whose hook
-- failed makes the plan incomplete: its memberships cannot be judged.
local function count_groups(st)
  for id, g in pairs(st.input.source.groups or {}) do
    local ok, err = st.pol:include_group(g, st.ctx)
    if ok == nil then
      policy_error(st, nil, "group " .. tostring(g.profile and g.profile.name or id), err)
      st.group_errors = true
    elseif ok then
      st.counted[id] = g
    end
  end
end

-- A mapped user m = { user, account, key } (and existing, deactivate,
-- conflict when they come): its login is read from the user (M_MT), not
-- held (with a fifth field 100,000 m's took ~10 MB more).
local M_MT = { __index = function(m, k)
  if k == "login" then
    local u = rawget(m, "user") or m -- (a compact source's m is its own stub)
    return u.profile and u.profile.login or u.id
  elseif k == "account" then -- held as its name only (desire_groups)
    local name = rawget(m, "name")
    return name and { name = name }
  end
end }

-- A mapped user of a compact source (a usersync.userset, made afresh on
-- each access) is held as a stub { id = } whose other fields are read
-- from the set (st.stub_mt): 100,000 users kept as tables until their
-- memberships are planned cost ~65 MB. The stub is m itself (m.user is
-- m; a table of its own per user cost ~8 MB more): m's own fields
-- (M_FIELDS) are never looked up in the set. user_of(st, m) gives the whole
-- user again; with the default hooks (which keep nothing of a user)
-- written into one table (st.scratch): no garbage per user.
local M_FIELDS = { login = true, account = true, key = true, name = true, existing = true,
                   conflict = true, deactivate = true }

local function stub_mt_of(users)
  local m_index = M_MT.__index
  return { __index = function(m, k)
    if k == "user" then return m end
    if M_FIELDS[k] then return m_index(m, k) end
    local u = users:get(rawget(m, "id"))
    return u and u[k]
  end }
end

local function user_of(st, m)
  local u = m.user
  if not (st.stub_mt and getmetatable(u) == st.stub_mt) then return u end
  local users = st.input.source.users
  if st.scratch then return users:fill(users:index(rawget(u, "id")), st.scratch) end
  return users:get(rawget(u, "id"))
end

-- The users of a compact set one by one, each written into scratch.
local function each_filled(scratch)
  return function(set)
    local n = #set
    return function(_, i)
      if i < n then return i + 1, set:fill(i + 1, scratch) end
    end, set, 0
  end
end

-- Phase 1: map every source user (the policy's user hook); users that
-- map to one name are conflicts, and none of them is applied.
local function map_users(st)
  local by_name = st.by_name
  local left_out, n_left = {}, 0
  local users = st.input.source.users or {}
  local compact = type(users) == "userdata"
  local stub_mt = compact and stub_mt_of(users)
  st.stub_mt = stub_mt
  st.scratch = compact and st.pol:keeps_no_user() and {} or nil
  -- seen, for a compact source: "read" is being in the set, "kept" a mark
  -- by the user's index (100,000 ids as keys held ~8 MB)
  local kept = compact and {}
  if compact then
    local index = users.index
    st.seen = setmetatable({}, { __index = function(_, id)
      local i = index(users, id)
      if i then return kept[i] and "kept" or "read" end
    end })
  end
  for i, u in (st.scratch and each_filled(st.scratch) or ipairs)(users) do
    if not compact then st.seen[u.id] = "read" end
    local login = u.profile and u.profile.login or u.id
    local acct, err = st.pol:user(u, st.ctx)

    if err then
      policy_error(st, u.id, login, err)
      st.failed_ids[u.id] = true
    elseif acct then
      local key = lower(acct.name)
      if compact then kept[i] = true else st.seen[u.id] = "kept" end -- its linked account stays in scope
      -- with the default hooks and a compact source the policy's answer is
      -- asked again when the user is matched (match_user): until then its
      -- name is held, not its table (~28 MB at 100,000 users)
      -- (each m made with room for its fields: a table that grows is rehashed)
      local m
      if st.scratch then m = setmetatable({ id = u.id, key = key, name = acct.name, existing = nil }, stub_mt)
      elseif compact then m = setmetatable({ id = u.id, key = key, account = acct, existing = nil }, stub_mt)
      else m = setmetatable({ user = u, key = key, account = acct, existing = nil }, M_MT) end
      st.mapped[#st.mapped + 1] = m

      -- one m per name, a list only for a duplicate (100,000 lists cost MBs)
      local prev = by_name[key]
      if prev == nil then
        by_name[key] = m
      elseif prev.user then
        by_name[key] = { prev, m }
      else
        prev[#prev + 1] = m
      end
    else -- the policy leaves it out (STAGED, SUSPENDED, or its user hook said nil)
      n_left = n_left + 1
      if n_left <= 20 then left_out[n_left] = ("%s (%s)"):format(login, tostring(u.status or "?")) end
    end
  end
  if n_left > 0 then
    note(st, "%d user%s in scope left out by the policy, not provisioned: %s%s", n_left, n_left == 1 and "" or "s",
      table.concat(left_out, ", "), n_left > #left_out and (", and %d more"):format(n_left - #left_out) or "")
  end

  for _, list in pairs(by_name) do
    if not list.user then
      local logins = {}
      for _, m in ipairs(list) do logins[#logins + 1] = m.login; m.conflict = true end
      table.sort(logins)
      local name = list[1].account.name
      conflict(st, name, nil, ("Okta users %s all map to the username %q; neither is applied")
        :format(table.concat(logins, ", "), name))
    end
  end
  st.by_name = nil -- read by no later phase
end

-- The account a link names: by the service's id where the link has one
-- (SCIM: the account may have been renamed there; an account of the linked
-- name with another id is not the linked one), else by name.
local function linked_account(st, okta_id, linked_name)
  local existing, lid = st.accounts[lower(linked_name)], st.link_ids[okta_id]
  if lid and st.has_ids and not (existing and existing.id == lid) then existing = st.by_id[lid] end
  return existing
end

-- Phase 2a: a mapped user's link. Returns the account as it is to be
-- addressed, its lowercase key, the linked account (nil when none, or
-- gone) and whether it is still being onboarded; or nil (a conflict).
local function follow_link(st, m, acct)
  local u, key = m.user, m.key
  local linked_name = st.links[u.id]
  if not linked_name then return acct, key, nil, false end

  local existing = linked_account(st, u.id, linked_name)
  if existing and lower(existing.name) ~= lower(linked_name) then
    note(st, "%s: linked account %q is named %q in %s now (found by its id)", m.login, linked_name,
      existing.name, st.target.name)
    linked_name = existing.name
  end
  if not existing then
    note(st, "%s: linked account %q no longer exists in %s; it will be created again",
      m.login, linked_name, st.target.name)
    return acct, key, nil, false
  end

  -- Created by usersync but its new-user groups not all given yet.
  local is_new = st.new_accounts[lower(linked_name)] == u.id
  if lower(linked_name) == key then return acct, key, existing, is_new end

  -- Login changed in Okta: rename the linked account (never delete + create).
  local taken = st.accounts[key]
  if taken and lower(taken.name) ~= lower(existing.name) then -- another account (not the same table)
    conflict(st, acct.name, u.id, ("%s: cannot rename %q to %q: that username is taken by "
      .. "another account"):format(m.login, linked_name, acct.name))
    return nil
  end

  if not st.caps.rename or not st.users_cfg.rename then
    if not st.caps.rename then
      note(st, "%s: %s cannot rename accounts; %q keeps its name (Okta login now maps to %q)",
        m.login, st.target.type, linked_name, acct.name)
    else
      note(st, "%s: rename %q -> %q not applied (users.rename = false)",
        m.login, linked_name, acct.name)
    end
    return named(acct, existing.name), lower(existing.name), existing, is_new
  end

  add_op(st, { kind = "rename_user", subject = linked_name, from = existing.name, to = acct.name,
               okta_id = u.id, reason = ("Okta login of %s changed"):format(m.login) })
  return acct, key, existing, is_new
end

-- Phase 2b: a user with no linked account adopts the account of its name
-- or gets one created. Returns false (nothing to do for it), or true, the
-- account (nil when created) and whether it is new.
local function adopt_or_create(st, m, acct, key)
  local u = m.user
  local candidate = st.accounts[key]

  if candidate then
    local owner = st.linked_by_account[key]
    if owner and owner ~= u.id then
      conflict(st, acct.name, u.id, ("%s: username %q is already linked to Okta user %s")
        :format(m.login, acct.name, owner))
      return false
    end
    local o = add_op(st, { kind = "link", subject = candidate.name, name = candidate.name,
                           okta_id = u.id })
    if st.new_accounts[key] == u.id then
      -- A run that died while creating this account made it: it is ours.
      o.created = true
      o.reason = ("record the account created for %s by an interrupted run"):format(m.login)
      return true, candidate, true
    end
    o.reason = ("adopt the existing account of %s"):format(m.login)
    return true, candidate, false
  end

  if not acct.active then -- inactive in Okta and no account: nothing to do, said so
    note(st, "%s is %s in Okta and has no account: not created", m.login, tostring(u.status or "inactive"))
    return false
  end
  if not st.users_cfg.create then
    note(st, "%s: no account %q in %s and users.create = false", m.login, acct.name, st.target.name)
    return false
  end
  st.login_of[u.id] = m.login
  if st.input.sink then -- streamed: made from m.account (= acct) when sent
    st.creates = st.creates or {}
    st.creates[#st.creates + 1] = m
  else
    st.ops[#st.ops + 1] = create_op(st, acct, u.id)
  end
  return true, nil, true
end

-- Phase 2c: an existing account's attributes (the first sync entry that
-- claims an account sets them) and its active state.
local function plan_attributes(st, m, acct, key, existing)
  local u = m.user
  local claim = st.claimed[key]
  local first_claim = not (claim and claim ~= st.sync.name)

  local changes = {}
  if acct.display_name and acct.display_name ~= existing.display_name then
    changes.display_name = { from = existing.display_name, to = acct.display_name }
  end
  -- A product that hides e-mail addresses (Confluence) reports none:
  -- unknown is not different, so no update is planned for it.
  if acct.email and acct.email ~= "" and existing.email ~= nil
      and lower(acct.email) ~= lower(existing.email) then
    changes.email = { from = existing.email, to = acct.email }
  end

  if next(changes) and first_claim then
    if st.users_cfg.update then
      -- Addressed by the account's current name: a rename, if any, comes after.
      add_op(st, { kind = "update_user", subject = existing.name, name = existing.name,
                   changes = changes, okta_id = u.id, reason = "profile changed in Okta" })
    else
      note(st, "%s: profile differs but users.update = false", m.login)
    end
  end

  if acct.active and existing.active == false then
    if st.users_cfg.reactivate then
      add_op(st, { kind = "reactivate_user", subject = acct.name, name = acct.name, okta_id = u.id,
                   reason = ("%s is %s in Okta"):format(m.login, tostring(u.status)) })
    else
      note(st, "%s: account inactive but users.reactivate = false", m.login)
    end
  elseif not acct.active and existing.active ~= false then
    m.deactivate = true
  end
end

-- A failing hook applies nothing for its user: its error is recorded and
-- the operations planned for it so far are dropped.
local function fail_user(st, m, message)
  policy_error(st, m.user.id, m.login, message)
  local ops, id = st.ops, m.user.id
  for i = #ops, 1, -1 do if ops[i].okta_id == id then table.remove(ops, i) end end
  local creates = st.creates
  if creates and creates[#creates] == m then creates[#creates] = nil end
end

-- An account's wanted groups, held until its memberships are planned (two
-- small tables per account cost a 100,000-user plan ~35 MB, a list of names
-- ~20 MB): one string of 4 bytes per group, the group name's number in
-- st.gnames (3 bytes, big-endian) and why it is wanted (WHY_CODE).
-- unpack_wants gives back want (lowercase group -> name) and why
-- (lowercase group -> "mapping", "default" or "new_user").
local WHY_CODE = { mapping = 109, default = 100, new_user = 110 } -- m, d, n
local WHY_OF = { [109] = "mapping", [100] = "default", [110] = "new_user" }
local char, byte = string.char, string.byte

local function pack_wants(st, want, why)
  local bytes, n, gnum, gnames = {}, 0, st.gnum, st.gnames
  for gk, gname in pairs(want) do
    local g = gnum[gname]
    if not g then
      g = #gnames + 1
      assert(g < 1 << 24, "plan: over 16 million group names")
      gnames[g], gnum[gname] = gname, g
    end
    bytes[n + 1], bytes[n + 2], bytes[n + 3], bytes[n + 4] = g >> 16, (g >> 8) & 255, g & 255, WHY_CODE[why[gk]]
    n = n + 4
  end
  return char(table.unpack(bytes, 1, n))
end

-- The name of the i-th group (1-based) of packed wants, and why.
local function wanted_at(st, packed, i)
  local a, b, c, w = byte(packed, i * 4 - 3, i * 4)
  return st.gnames[a << 16 | b << 8 | c], WHY_OF[w]
end

local function unpack_wants(st, packed)
  local want, why, gl = {}, {}, st.glower
  for i = 1, #packed // 4 do
    local gname, w = wanted_at(st, packed, i)
    local gk = gl[gname]
    want[gk], why[gk] = gname, w
  end
  return want, why
end

-- Why lowercase group gk is in packed wants, or nil when it is not.
local function wanted_why(st, packed, gk)
  local gl = st.glower
  for i = 1, #packed // 4 do
    local gname, w = wanted_at(st, packed, i)
    if gl[gname] == gk then return w end
  end
end

-- Phase 2d: the groups an active user should be in (group rules, then the
-- defaults), each with why it is wanted. Sets m.account, m.existing,
-- st.desired[key] = m and st.wants[key] (pack_wants).
local function desire_groups(st, m, acct, key, existing, is_new)
  local u, pol, ctx = m.user, st.pol, st.ctx
  -- a compact source's user is made afresh each time: the answer is kept
  -- by id, and the user made only when there is none
  local stub = st.stub_mt and getmetatable(u) == st.stub_mt
  local names, err = stub and pol:kept_groups(u.id, ctx)
  if not names then
    u = user_of(st, m)
    local ugroups = {}
    for _, gid in ipairs(u.groups or {}) do
      local g = st.counted[gid]
      if g then ugroups[#ugroups + 1] = g end
    end
    table.sort(ugroups, by_group_name)
    names, err = pol:groups(u, ugroups, ctx, stub and u.id or nil)
  end
  local defaults, err2
  if names then defaults, err2 = pol:default_groups(acct, is_new, ctx) end
  if not names or not defaults then return fail_user(st, m, err or err2) end

  -- Why each group is wanted: a new account's new-user defaults (those
  -- it would not get as an existing account) are "new_user".
  local as_old = defaults
  if is_new then
    as_old, err2 = pol:default_groups(acct, false, ctx)
    if not as_old then return fail_user(st, m, err2) end
  end
  local old_set = {}
  local gl = st.glower
  for _, g in ipairs(as_old) do old_set[gl[g]] = true end

  local want, why = {}, {}
  local managed, wanted = st.managed_groups, st.wanted_groups
  -- A returning account (deprovisioned by group removal) is provisioned
  -- like a new one: it also gets back the groups no rule manages that the
  -- deprovisioning took (its licence group).
  local back = is_new and st.input.returning and st.input.returning[u.id]
  for _, gname in ipairs(back or {}) do
    local gk = gl[gname]
    want[gk], why[gk] = gname, "new_user"
    wanted[gk] = wanted[gk] or gname
  end

  for _, gname in ipairs(names) do
    local gk = gl[gname]
    want[gk], why[gk] = gname, "mapping"
    managed[gk], wanted[gk] = managed[gk] or gname, wanted[gk] or gname
  end
  for _, gname in ipairs(defaults) do
    local gk = gl[gname]
    want[gk] = gname
    why[gk] = (is_new and not old_set[gk]) and "new_user" or why[gk] or "default"
    managed[gk], wanted[gk] = managed[gk] or gname, wanted[gk] or gname
  end

  -- An existing account's policy answer is read again only for its name
  -- when the default_groups hook keeps nothing of it: held as the name
  -- (M_MT; the answer's table and strings cost ~20 MB at 100,000 users).
  if existing and st.slim_accounts and rawget(m, "name") then m.name = acct.name else m.account = acct end
  m.existing = existing
  st.desired[key], st.wants[key] = m, pack_wants(st, want, why)
  if is_new then st.new_ids[#st.new_ids + 1] = u.id end
end

-- Phase 2: match each mapped user to an account (link, adoption or
-- creation), plan its attributes and the groups it should be in.
local function match_one(st, m, answer)
  local acct, key, existing, is_new = follow_link(st, m, answer)
  if not acct then return end

  if not existing then
    local go
    go, existing, is_new = adopt_or_create(st, m, acct, key)
    if not go then return end
  end

  -- An existing account (adopted or linked) is addressed by its own
  -- spelling, not the Okta login's: a server may look names up
  -- case-sensitively. (A rename planned above addresses it by the new name.)
  if existing and existing.name ~= acct.name and lower(existing.name) == lower(acct.name) then
    acct = named(acct, existing.name)
  end

  if existing then plan_attributes(st, m, acct, key, existing) end
  if existing and st.hold then existing = st.hold(existing) end

  if acct.active then
    desire_groups(st, m, acct, key, existing, is_new)
  elseif m.deactivate then
    m.account, m.existing = acct, existing -- m.deactivate is set
    st.desired[key], st.wants[key] = m, nil
  end
end

local function match_user(st, m)
  -- held as its name (map_users): the whole answer again
  local acct = rawget(m, "account") or st.pol:user(user_of(st, m), st.ctx)
  match_one(st, m, acct)
end

local function match_accounts(st)
  local only = st.input.only
  st.wants = {} -- lowercase account -> its wanted groups (pack_wants)
  st.slim_accounts = st.pol.keeps_no_account and st.pol:keeps_no_account() or nil
  st.gnum, st.gnames = {}, {} -- group name <-> its number in wants
  for _, m in ipairs(st.mapped) do
    if not m.conflict and not (only and not only[m.user.id]) then match_user(st, m) end
  end

  -- Groups mapped in the config count as managed even with no member yet.
  if st.groups_cfg.mode ~= "on_the_fly" then
    for _, v in pairs(st.groups_cfg.map or {}) do
      for _, gname in ipairs(type(v) == "table" and v or { v }) do
        local gk = lower(gname)
        st.managed_groups[gk] = st.managed_groups[gk] or gname
      end
    end
  end
end

-- Phase 3: wanted groups the target does not have are created, or their
-- memberships skipped.
local function missing_groups(st)
  for _, gk in ipairs(sorted_keys(st.wanted_groups)) do
    local gname = st.wanted_groups[gk]
    if not st.tgroups[gk] then
      if st.groups_cfg.create_missing then
        add_op(st, { kind = "create_group", subject = gname, group = gname,
                     reason = "mapped group does not exist" })
      else
        st.missing[gk] = true
        note(st, "group %q does not exist in %s and groups.create_missing = false; "
          .. "its memberships are skipped", gname, st.target.name)
      end
    end
  end
end

-- Why this entry added account key to group gk (both lowercase): "mapping",
-- "default", "new_user", true (no why kept), or nil when it did not.
local function owned(st, gk, key)
  local om = st.owned_m
  if st.owned_why then return st.owned_why(om, gk, key) end
  return om[gk] and om[gk][key]
end

-- Of the groups an account is to leave, those it keeps: groups given
-- only to new accounts (defaults.new_users) stay once given as such.
local function not_kept(st, d, key, removes)
  local as_new, e1 = st.pol:default_groups(d.account, true, st.ctx)
  local as_old, e2 = st.pol:default_groups(d.account, false, st.ctx)
  if not as_new or not as_old then
    policy_error(st, d.user.id, d.login, e1 or e2)
    return {} -- cannot tell which groups are kept: remove nothing
  end

  local only_new, gl = {}, st.glower
  for _, g in ipairs(as_new) do only_new[gl[g]] = true end
  for _, g in ipairs(as_old) do only_new[gl[g]] = nil end

  -- ... when given as such: a membership usersync added for a group rule
  -- (or as an all-users default) goes when the rule no longer applies,
  -- even if the group is also a new-user default.
  local out = {}
  for _, g in ipairs(removes) do
    local gk = gl[g]
    local why = owned(st, gk, key)
    local stays = why == "new_user" or (only_new[gk] and why ~= "mapping" and why ~= "default")
    if not stays then out[#out + 1] = g end
  end
  return out
end

-- Phase 4, one account: the memberships it gains and loses.
local function account_memberships(st, key, d)
  local managed, gl = st.managed_groups, st.glower
  local packed = st.wants[key] -- read in place: no tables per account but the adds
  local n = #packed // 4
  local name = d.account.name

  local current
  local existing = d.existing
  local groups
  if type(existing) == "string" then groups = st.held_groups(existing) -- held by name (st.hold)
  else groups = existing and existing.groups end
  if groups and groups[1] then
    current = {}
    for _, g in ipairs(groups) do
      local gk = gl[g]
      current[gk] = g
      if managed[gk] or owned(st, gk, key) then
        st.managed_memberships = st.managed_memberships + 1
      end
    end
  end

  local adds = {}
  for i = 1, n do
    local gname = wanted_at(st, packed, i)
    local gk = gl[gname]
    if current and current[gk] then
      current[gk] = nil -- wanted and held: not one to leave (left: those unwanted)
    elseif not st.missing[gk] then
      adds[#adds + 1] = st.tgroups[gk] or gname
    end
  end
  table.sort(adds)
  if #adds > 0 then st.login_of[d.user.id] = d.login end
  for _, g in ipairs(adds) do
    -- kind, subject, reason, why: add_mts
    local mt = st.add_mts[wanted_why(st, packed, gl[g]) or "mapping"]
    add_op(st, { group = g, name = name, okta_id = d.user.id }, mt, true)
  end
  if not current then return end

  local removes = {}
  for gk, gname in pairs(current) do -- the groups it is in that it is not wanted in
    if owned(st, gk, key) or (st.groups_cfg.keep_existing == false and managed[gk]) then
      removes[#removes + 1] = gname
    end
  end
  if #removes > 0 then removes = not_kept(st, d, key, removes) end
  table.sort(removes)
  for _, g in ipairs(removes) do
    add_op(st, { kind = "remove_member", subject = name, group = g, name = name,
                 okta_id = d.user.id,
                 reason = ("%s is no longer in a group that maps to %s"):format(d.login, g) })
  end
end

-- Phase 4: memberships of the matched accounts. Also counts the
-- memberships this entry manages in the target now (of its mapped
-- accounts, in groups it manages or memberships it added): the base of
-- limits.max_membership_removals as a percentage.
local order
local function stream_start(st)
  local sink = st.input.sink
  if not sink then return end
  local add = RANK.add_member
  -- plan order as order() has it, each op numbered only as it goes (a
  -- number makes a 4-field op twice the size) and let go once sent
  local buckets = {}
  for _, o in ipairs(st.ops) do
    local r = RANK[o.kind]
    assert(r < add and o.kind ~= "create_user", "plan: an op out of place before the memberships")
    local b = buckets[r]
    if not b then b = {}; buckets[r] = b end
    b[#b + 1] = o
  end
  st.ops = {}
  local creating = RANK.create_user
  buckets[creating], st.creates = st.creates, nil
  local n, counts = 0, {}
  for r = 1, add - 1 do
    local b = buckets[r]
    for i = 1, b and #b or 0 do
      local o = b[i]
      b[i] = false
      if r == creating then o = create_op(st, o.account, o.user.id) end
      n = n + 1
      o.seq = n
      counts[o.kind] = (counts[o.kind] or 0) + 1
      sink(o)
    end
  end
  st.sent, st.sent_counts = n, counts
end

local function memberships(st)
  stream_start(st)
  st.keys = sorted_keys(st.desired)
  -- The run's only entry shares no wanted groups (result): each account's
  -- are dropped once its ops are planned, and so is the policy's account
  -- of a user who stays (no later phase reads it; ~20 MB at 100,000).
  local single = st.input.single
  for _, key in ipairs(st.keys) do
    local d = st.desired[key]
    if not d.deactivate then account_memberships(st, key, d) end
    if single then
      st.wants[key] = nil
      if not d.deactivate then d.account = nil end
    end
  end
end

-- Phase 5a: the accounts to deprovision: only linked accounts whose Okta
-- user left scope, was left out by the policy, or is inactive in Okta.
-- Users whose hooks failed are never deprovisioned.
local function find_leavers(st)
  local only, leavers = st.input.only, {}
  for okta_id, name in pairs(st.links) do
    local gone = st.seen[okta_id] ~= "kept" and not st.failed_ids[okta_id]
    if gone and (not only or only[okta_id]) then
      local a = linked_account(st, okta_id, name)
      if a then
        leavers[#leavers + 1] = { okta_id = okta_id, account = a,
          reason = st.seen[okta_id] and "left out by the policy" or "no longer in scope" }
      end
    end
  end

  for _, key in ipairs(st.keys) do
    local d = st.desired[key]
    local existing = d.existing
    if d.deactivate and existing then
      if type(existing) == "string" then existing = st.held(existing) end -- held by name (st.hold)
      leavers[#leavers + 1] = { okta_id = d.user.id, account = existing, inactive = true,
        reason = ("%s is inactive in Okta"):format(d.login) }
    end
  end

  table.sort(leavers, function(a, b) return lower(a.account.name) < lower(b.account.name) end)
  return leavers
end

-- Phase 5b: what becomes of leaver l: "deactivate", "delete",
-- "remove_groups" or "keep" (the policy asks, the config and the product
-- decide); nil after a policy error.
local function deprovision_action(st, l)
  local a, caps, users_cfg = l.account, st.caps, st.users_cfg
  local action = "deactivate"
  if not l.inactive then
    local err
    action, err = st.pol:deprovision(a, l.reason, st.ctx)
    if not action then return policy_error(st, l.okta_id, a.name, err) end
  end

  if action == "deactivate" and not caps.deactivate then
    action = "remove_groups"
    note(st, "%s: %s cannot deactivate accounts; removing it from every group instead",
      a.name, st.target.type)
  end
  if action == "delete" and not users_cfg.delete then
    note(st, "%s: policy asks to delete, but users.delete = false; deactivating instead", a.name)
    action = caps.deactivate and "deactivate" or "remove_groups"
  end
  if action == "deactivate" and not users_cfg.deactivate then
    note(st, "%s: %s but users.deactivate = false; kept", a.name, l.reason)
    action = "keep"
  end
  if action == "deactivate" and a.active == false then action = "keep" end
  -- nothing left to take
  if action == "remove_groups" and #(a.groups or {}) == 0 then action = "keep" end
  return action
end

-- Phase 5c: the ops that deprovision leaver l. A deactivation or deletion
-- on a product with leads is recorded in st.leavers (hand_over).
local function deprovision_one(st, l, action)
  local a = l.account
  local key = lower(a.name)
  st.deprovisions = st.deprovisions + 1

  if action == "remove_groups" then
    for _, g in ipairs(a.groups) do
      -- restore: a group no rule manages (a licence group), given back if
      -- the account returns (input.returning)
      local gk = lower(g)
      local ours = st.managed_groups[gk] or owned(st, gk, key)
      add_op(st, { kind = "remove_member", subject = a.name, group = g, name = a.name,
                   okta_id = l.okta_id, deprovision = true, reason = l.reason,
                   restore = not ours or nil })
    end
    return
  end

  if action == "delete" and st.target.flavour == "atlassian" then
    note(st, "%s: Atlassian deactivates the managed account on delete; this cannot be undone "
      .. "through the API (reactivation is in Atlassian Administration)", a.name)
  end
  local o = add_op(st, { kind = action .. "_user", subject = a.name, name = a.name,
                         okta_id = l.okta_id, deprovision = true, reason = l.reason })
  if st.caps.leads then
    st.leavers[#st.leavers + 1] = { account = a, key = key, okta_id = l.okta_id, action = action,
                                    reason = l.reason, op = o }
  end
end

local function deprovision(st)
  for _, l in ipairs(find_leavers(st)) do
    local key = lower(l.account.name)
    local claim = st.claimed[key]
    if not (claim and claim ~= st.sync.name) then
      local action = deprovision_action(st, l)
      if action and action ~= "keep" then deprovision_one(st, l, action) end
    end
  end
end

-- Phase 5d: leavers who lead Jira projects or components (leads: lowercase
-- account -> { projects, components }) first hand them over to the
-- configured leads; without one configured the leaver is a conflict and
-- not deprovisioned. `t` is the planner's state or a built plan (ops,
-- conflicts, leavers, deprovisions). Returns the dropped deprovision ops.
local function hand_over(t, leads, users_cfg)
  local to_p, to_c = users_cfg.project_lead, users_cfg.component_lead
  local dropped = {}
  for _, l in ipairs(t.leavers) do
    local led = leads[l.key]
    local projects, components = led and led.projects or {}, led and led.components or {}
    if #projects > 0 and not to_p or #components > 0 and not to_c then
      local a = l.account
      t.conflicts[#t.conflicts + 1] = { name = a.name, okta_id = l.okta_id,
        message = ("%s leads projects or components and no users.project_lead/component_lead "
          .. "is configured; not deprovisioned"):format(a.name) }
      t.deprovisions = t.deprovisions - 1
      dropped[l.op] = true
    elseif #projects > 0 or #components > 0 then
      local o = { kind = "handover_lead", subject = l.account.name, name = l.account.name,
                  deprovision = true, projects = projects, components = components,
                  to_project_lead = to_p, to_component_lead = to_c, okta_id = l.okta_id,
                  reason = "before " .. l.action .. ": " .. l.reason }
      t.ops[#t.ops + 1] = setmetatable(o, getmetatable(l.op))
    end
  end

  if next(dropped) then
    local keep = {}
    for _, o in ipairs(t.ops) do if not dropped[o] then keep[#keep + 1] = o end end
    t.ops = keep
  end
  t.leavers = {}
end

-- Plan order: by the kind's rank, stable within a rank (the place in
-- `ops` so far). A counting sort, one pass: table.sort with a comparator
-- was over a quarter of a 10,000-user first sync's Lua work. Renumbers seq
-- and returns the counts by kind. streamed (a streamed plan's p.streamed:
-- { n, counts }): the ops already given to the sink, which come first.
function order(ops, streamed)
  local buckets, ranks = {}, {}
  for _, o in ipairs(ops) do
    local r = RANK[o.kind] or math.huge
    local b = buckets[r]
    if not b then
      b = {}
      buckets[r] = b
      ranks[#ranks + 1] = r
    end
    b[#b + 1] = o
  end
  table.sort(ranks)

  local counts, base = {}, streamed and streamed.n or 0
  for k, n in pairs(streamed and streamed.counts or {}) do counts[k] = n end
  local i = 0
  for _, r in ipairs(ranks) do
    for _, o in ipairs(buckets[r]) do
      i = i + 1
      ops[i] = o
      o.seq = base + i
      counts[o.kind] = (counts[o.kind] or 0) + 1
    end
  end
  return counts
end

-- Phase 6: the plan, in plan order, with what other sync entries of the
-- run need (engine.lua, multiple sources); input.single (the only entry
-- planned) leaves those empty.
local function result(st)
  local streamed = st.sent and { n = st.sent, counts = st.sent_counts } or nil
  local counts = order(st.ops, streamed)
  local mapped_keys = {}
  local wanted = {}   -- lowercase account -> lowercase group -> group name
  local active_keys = {}
  if not st.input.single then
    for _, m in ipairs(st.mapped) do
      if not m.conflict then mapped_keys[#mapped_keys + 1] = m.key end
    end
    for k, packed in pairs(st.wants) do
      wanted[k] = (unpack_wants(st, packed))
      active_keys[k] = true
    end
  end

  return {
    target = st.target.name, target_type = st.target.type,
    ops = st.ops, conflicts = st.conflicts, errors = st.errors, notes = st.notes,
    counts = counts, deprovisions = st.deprovisions,
    managed_users = #st.mapped, managed_memberships = st.managed_memberships,
    mapped_keys = mapped_keys, new_ids = st.new_ids, wanted = wanted, active_keys = active_keys,
    incomplete = st.group_errors or nil,
    leavers = st.leavers[1] and st.leavers or nil,
    streamed = streamed,
  }
end

-- Builds the plan for one target. See the header for `input`. Where the
-- product has leads (Jira) and input.leads is not given, p.leavers lists
-- the accounts to deactivate or delete ({ account, ... }): read their
-- leads and pass them to plan.hand_over(p, leads, sync).
function M.build(input)
  local st = new_state(input)
  count_groups(st)
  map_users(st)
  match_accounts(st)
  missing_groups(st)
  memberships(st)
  deprovision(st)
  if input.leads then hand_over(st, input.leads, st.users_cfg) end
  return result(st)
end

-- Completes plan p with the hand-over of the leads its leavers hold
-- (leads: lowercase account -> { projects = {keys}, components = {ids} },
-- as a Jira target's leads() reads them); sync is the plan's sync entry.
-- Returns p, in plan order and recounted.
function M.hand_over(p, leads, sync)
  if not p.leavers then return p end
  hand_over(p, leads, sync.users or {})
  p.leavers = nil
  p.counts = order(p.ops, p.streamed)
  return p
end

-- Every field of an operation (also those its metatable gives) in a new
-- plain table: for serialising one (planfile, the store).
function M.plain(o)
  local c = {}
  for k, v in pairs(o) do c[k] = v end
  return c
end

-- Recomputes p.counts and p.deprovisions after ops were dropped.
function M.recount(p)
  assert(not p.streamed, "plan.recount: a streamed plan does not hold all its ops")
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

return M
