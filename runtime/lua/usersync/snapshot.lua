-- usersync.snapshot: the engine's target side. Reads what a plan needs of
-- one target: the whole target once per run (shared by every sync entry
-- that plans it), or just the accounts a few users map to; and completes a
-- read that could not tell every group or membership. The mechanics are
-- the target clients'; every read comes in one shape.
--
--   local snapshot = require "usersync.snapshot"
--   snapshot.start(e, { "jira", "bitbucket" })      -- optional: read them concurrently
--   local i = snapshot.next_ready(e, { "jira", "bitbucket" }) -- the first whose read ended
--   local snap = snapshot.read(e, "jira")            -- e: the engine
--   local snap = snapshot.read_for(e, "scim", { "alice" } [, { alice = "2819c223" }])
--   snap = snapshot.complete(e, "jira", snap, input) -- input: plan.build's
--   -- snap = { complete, accounts, groups, error?, code?, groups_partial?,
--   --          memberships_unknown?, requests? }
--   -- accounts: a list of account tables (read_for, unread), or for a
--   -- whole read a usersync.accountset (t:snapshot{ compact = true }): the
--   -- same accounts, looked up by name (accounts:get) without a Lua table
--   -- per account held for the run.
--
-- Uses the engine for its clients (e:target), the run's caches
-- (e.snapshots, e.group_names, reset by each plan), progress events, stop
-- requests and lock renewal.
local plan = require "usersync.plan"
local monotonic = require("usersync.time").monotonic

local M = {}

-- The read of a target that could not be read: nothing can be planned
-- from it.
function M.unread(err, code)
  return { complete = false, error = err, code = code, accounts = {}, groups = {} }
end

-- Starts the whole reads of the named targets (not read yet this run) at
-- once: their requests run while anything drives the shared http engine
-- (the Okta read, another target's read), and M.read takes each one's
-- result. So the targets are read concurrently, not one after the other.
function M.start(e, names)
  e.snapshots, e.started = e.snapshots or {}, e.started or {}
  for _, name in ipairs(names) do
    if not e.snapshots[name] and not e.started[name] then
      e.started[name] = e:target(name):snapshot_start{ compact = true }
    end
  end
end

-- Cancels the reads started and not taken (a plan that stops early).
function M.cancel(e)
  for _, read in pairs(e.started or {}) do read:close() end
  e.started = nil
end

-- Drives the engine's http clients once, up to `wait` seconds (0: only
-- what is ready): the started reads' requests go on.
local function drive(e, wait)
  local clients = {}
  for _, c in pairs(e.http or {}) do clients[#clients + 1] = c end
  if #clients == 1 then clients[1]:run(wait); return end
  for _, c in ipairs(clients) do c:run(wait > 0 and 0.01 or 0) end
end

-- Whether target `name` can be taken (M.read) without waiting for the
-- network: read already, not started (read when taken) or its started
-- read ended, well or not.
function M.ready(e, name)
  if e.snapshots and e.snapshots[name] then return true end
  local started = e.started and e.started[name]
  return not started or started:ended()
end

-- The index in `names` of the first target (in their order) that M.ready
-- says can be taken; while none can, drives the engine (renewing the
-- locks). nil when a stop is requested meanwhile. So the targets are
-- taken in the order their reads end, each planned while the others are
-- still read.
function M.next_ready(e, names)
  while true do
    for i, name in ipairs(names) do
      if M.ready(e, name) then return i end
    end
    if e:stopping() then return nil end
    e:renew_locks()
    drive(e, 0.2)
  end
end

-- Whether a started read not taken yet is still running.
local function reading(e)
  for _, read in pairs(e.started or {}) do
    if not read:ended() then return true end
  end
  return false
end

-- An engine turn (only what is ready, no wait) while a started read is
-- still running: call it between long steps of a target's plan.
function M.turn(e)
  if reading(e) then drive(e, 0) end
end

-- A function giving the engine a turn (M.turn) while a started read is
-- still running, else nil: for memory.settle, which then collects in
-- slices.
function M.turner(e)
  if reading(e) then return function() M.turn(e) end end
end

-- How often a plan gives the engine a turn while reads still run
-- (seconds): 8 requests in flight at 20 ms answer every 2.5 ms.
local TURN_EVERY = 0.002

-- A table whose methods run on `pol` itself (some keep state in it:
-- the default hooks' answers, policy.lua memo_of writes self.memo), not
-- on the wrapper: a wrapper as self would keep them apart from `pol`,
-- so that no later caller of `pol` finds them. Methods set on the table
-- itself come first.
local function bound(pol)
  return setmetatable({}, { __index = function(t, k)
    local v = pol[k]
    if type(v) ~= "function" then return v end
    local f = function(_, ...) return v(pol, ...) end
    rawset(t, k, f)
    return f
  end })
end

-- The policy given back calls `pol`'s hooks, and its hot ones (user,
-- groups, default_groups: once or twice per user) give the engine a turn
-- when the last was TURN_EVERY ago (the clock read every 16 calls), so
-- that the reads still running go on while a target is planned. `pol`
-- itself when no read is running.
function M.pumping(e, pol)
  if not reading(e) then return pol end
  local n, last, live = 0, monotonic(), true
  local function tick()
    n = n + 1
    if n < 16 or not live then return end
    n = 0
    local now = monotonic()
    if now - last >= TURN_EVERY then
      last = now
      live = reading(e)
      if live then drive(e, 0) end
    end
  end
  local p = bound(pol)
  function p.user(_, ...) tick(); return pol:user(...) end
  function p.groups(_, ...) tick(); return pol:groups(...) end
  function p.default_groups(_, ...) tick(); return pol:default_groups(...) end
  return p
end

-- Reads a whole target once per run (e.snapshots); one M.start started is
-- taken where it stands.
function M.read(e, name)
  e.snapshots = e.snapshots or {}
  local snap = e.snapshots[name]
  if snap then return snap end
  local started = e.started and e.started[name]
  if started then e.started[name] = nil end

  e.progress{ phase = "target", name = name, state = "start", message = "reading " .. name }
  local function progress(done, total, what)
    if e:stopping() then error("stop requested", 0) end
    e:renew_locks()
    e.progress{ phase = "target", name = name, state = "update",
      done = done, total = total, what = what }
  end
  local s, err, code = e:target(name):snapshot{ progress = progress, started = started, compact = true }
  e.progress{ phase = "target", name = name, state = s and "done" or "failed",
    error = err, code = code, requests = s and s.requests }

  if s then
    snap = s
    -- a cut-short group list comes without memberships (complete)
    snap.memberships_unknown = s.groups_partial
  else
    snap = M.unread(err, code)
  end
  e.snapshots[name] = snap
  return snap
end

-- A target's group names, listed once per run (e.group_names): the list
-- and whether it is partial, or nil, err, code.
local function group_names(e, t, name)
  e.group_names = e.group_names or {}
  local known = e.group_names[name]
  if known then return known end

  local groups = {}
  local ok, err, code = t:groups(function(page)
    for _, g in ipairs(page) do groups[#groups + 1] = g end
  end)
  -- ETRUNCATED: the server gave part of its groups; the ones needed are
  -- looked up by name (complete)
  if not ok and code ~= "ETRUNCATED" then return nil, err, code end
  known = { groups = groups, partial = not ok or nil }
  e.group_names[name] = known
  return known
end

-- The named accounts of a target (each with its groups) and its group
-- names; ids: { [name] = the service's id } of accounts read by id (SCIM
-- links: found whatever they are named now; the name is read too when the
-- account by that id has another). An account that does not exist is
-- simply absent; any other failure makes the read incomplete.
local function read_accounts(e, name, names, ids)
  local t = e:target(name)
  local known, err, code = group_names(e, t, name)
  if not known then return M.unread(err, code) end

  local accounts, seen, by_id, unknown = {}, {}, {}, nil
  local function take(n, id)
    local a, aerr, acode = t:get(n, id)
    if a then
      if a.id and by_id[a.id] then return true end -- read already (by id)
      if a.id then by_id[a.id] = true end
      seen[a.name:lower()] = true
      accounts[#accounts + 1] = a
      unknown = unknown or a.groups == nil -- the server did not tell its groups
    elseif acode ~= "ENOTFOUND" then
      return nil, aerr, acode
    end
    return true
  end
  for _, n in ipairs(names) do
    local id = ids and ids[n]
    if id and not by_id[id] then
      local ok, aerr, acode = take(n, id)
      if not ok then return M.unread(aerr, acode) end
    end
  end
  for _, n in ipairs(names) do
    local key = n:lower()
    if not seen[key] then
      seen[key] = true
      local ok, aerr, acode = take(n)
      if not ok then return M.unread(aerr, acode) end
    end
  end
  return { complete = true, accounts = accounts, groups = known.groups,
           groups_partial = known.partial, memberships_unknown = unknown }
end

-- Reads just the named accounts of a target: what a plan for a few users
-- needs, 1 request per name plus the group listing. ids: { [name] = id }
-- of the linked accounts whose service id is known (SCIM): read by it.
function M.read_for(e, name, names, ids)
  e.progress{ phase = "target", name = name, state = "start",
    message = ("reading %d account%s in %s"):format(#names, #names == 1 and "" or "s", name) }
  local snap = read_accounts(e, name, names, ids)
  e.progress{ phase = "target", name = name, state = snap.complete and "done" or "failed",
    error = snap.error, code = snap.code }
  return snap
end

-- The target groups a plan of `input` can touch: those the policy gives
-- (found by a first plan with a policy that notes them), the configured
-- map, and the groups and memberships the sync owns.
local function needed_groups(input)
  local out = {}
  local function add(g)
    if type(g) == "string" and not out[g:lower()] then out[g:lower()] = g end
  end

  local pol = input.policy
  local rec = bound(pol)
  function rec:groups(...)
    local r, err = pol:groups(...)
    for _, g in ipairs(r or {}) do add(g) end
    return r, err
  end
  function rec:default_groups(...)
    local r, err = pol:default_groups(...)
    for _, g in ipairs(r or {}) do add(g) end
    return r, err
  end
  plan.build(setmetatable({ policy = rec }, { __index = input }))

  for _, v in pairs((input.sync.groups or {}).map or {}) do
    for _, g in ipairs(type(v) == "table" and v or { v }) do add(g) end
  end
  for g in pairs(input.owned_groups or {}) do add(g) end
  for g in pairs(input.owned_memberships or {}) do add(g) end
  return out
end

-- Adds group g (lowercase k) to the accounts of a member listing page
-- (by: the snapshot's accounts by lowercase name, or its account set).
local function note_members(by, page, g, k)
  for _, m in ipairs(page) do
    if type(by) == "userdata" then
      by:add_member(m.name, g) -- in a group of that name already (any case): unchanged
    else
      local a = by[m.name:lower()]
      if a then
        a.groups = a.groups or {}
        local has = false
        for _, x in ipairs(a.groups) do has = has or x:lower() == k end
        if not has then a.groups[#a.groups + 1] = g end
      end
    end
  end
end

-- Looks the needed groups up one by name. Returns true, or nil, err, code.
local function look_up(t, snap, need)
  local known, by = {}, {}
  for _, g in ipairs(snap.groups) do known[g:lower()] = true end
  if type(snap.accounts) == "userdata" then
    by = snap.accounts
  else
    for _, a in ipairs(snap.accounts) do by[a.name:lower()] = a end
  end

  local keys = {}
  for k in pairs(need) do keys[#keys + 1] = k end
  table.sort(keys)

  for _, k in ipairs(keys) do
    local g = need[k]
    if not snap.looked_up[k] and (snap.memberships_unknown or not known[k]) then
      local exists, err, code
      if snap.memberships_unknown then
        local ok
        ok, err, code = t:members(g, function(page) note_members(by, page, g, k) end)
        exists = ok or (code == "ENOTFOUND" and false) or nil
      else
        exists, err, code = t:group_exists(g)
      end
      if exists == nil then return nil, err, code end

      snap.looked_up[k] = true
      if exists and not known[k] then snap.groups[#snap.groups + 1] = g; known[k] = true end
    end
  end
  return true
end

-- A complete read that could not list every group (snap.groups_partial)
-- or tell every account's groups (snap.memberships_unknown; a Jira that
-- cut its groups picker short or ignores expand=groups) is completed with
-- what the plan of `input` needs: each needed group is read by name, its
-- members when memberships are unknown, else whether it exists. Groups no
-- plan touches are never read. Returns snap, or an unread target when a
-- look-up failed (a read failure of the target, never a policy error).
function M.complete(e, tname, snap, input)
  if not snap.complete or not (snap.groups_partial or snap.memberships_unknown) then return snap end
  snap.looked_up = snap.looked_up or {}
  local ok, err, code = look_up(e:target(tname), snap, needed_groups(input))
  if not ok then return M.unread(err, code) end
  if type(snap.accounts) == "table" then -- an account set's groups are always a list
    for _, a in ipairs(snap.accounts) do a.groups = a.groups or {} end
  end
  return snap
end

return M
