-- usersync.state: what the engine keeps in the store between runs (links,
-- owned groups and memberships) and what it records during one (runs and
-- every operation with its outcome, as it happens).
--
--   local state = require "usersync.state"
--   local db = assert(state.open("usersync.db"))
--   local links = state.links(db, "main", "jira")              -- { [okta_id] = account }
--   local run = state.begin_run(db, "main", "manual", "sync")
--   state.record_plan(db, run, ops)                             -- all 'pending'
--   state.op_started(db, run, op) ; state.op_finished(db, run, op, result)
--   state.end_run(db, run, "ok", counts)
--
-- Account and group names compare case-insensitively (lowercase keys).
local json = require "usersync.json"
local secrets = require "usersync.secrets"
local plan = require "usersync.plan"

local M = {}

local lower = string.lower

function M.open(path)
  return require("usersync.store").open(path)
end

-- Links of one sync entry and target: { [okta_id] = account_name }.
function M.links(db, sync, target)
  local out = {}
  for row in db:rows("SELECT okta_id, account_name FROM links WHERE sync = ? AND target = ?", sync, target) do
    out[row.okta_id] = row.account_name
  end
  return out
end

-- Accounts to treat as new: linked ones not yet onboarded, and accounts a
-- run that died (interrupted) was creating when it stopped.
-- Returns { [lower account] = okta_id }.
function M.new_accounts(db, sync, target)
  local out = {}
  for row in db:rows("SELECT okta_id, account_name FROM links WHERE sync = ? AND target = ? AND onboarded = 0", sync, target) do
    out[lower(row.account_name)] = row.okta_id
  end
  for row in db:rows([[SELECT o.subject, o.okta_id FROM operations o JOIN runs r ON r.id = o.run_id
      WHERE r.sync = ? AND o.target = ? AND o.kind = 'create_user' AND o.status = 'running'
        AND r.outcome = 'interrupted'
        AND r.id > coalesce((SELECT max(id) FROM runs WHERE sync = ?1 AND outcome IN ('ok', 'partial')), 0)]],
      sync, target) do
    out[lower(row.subject)] = row.okta_id
  end
  return out
end

-- Marks accounts onboarded once a run gave them every new-user group.
-- okta_ids: ids whose new-user group additions all succeeded.
function M.mark_onboarded(db, sync, target, okta_ids)
  return db:transaction(function()
    for _, id in ipairs(okta_ids) do
      assert(db:exec("UPDATE links SET onboarded = 1 WHERE sync = ? AND target = ? AND okta_id = ?", sync, target, id))
    end
    return true
  end)
end

-- Marks operations as started (before a batch goes to a target), so a run
-- killed midway shows which ones were in flight.
function M.ops_started(db, run_id, ops)
  return db:transaction(function()
    for _, op in ipairs(ops) do M.op_started(db, run_id, op) end
    return true
  end)
end

-- Every sync entry's links on a target: { [lower account] = { [sync] = okta_id } }.
function M.claims(db, target)
  local out = {}
  for row in db:rows("SELECT sync, okta_id, account_name FROM links WHERE target = ?", target) do
    local k = lower(row.account_name)
    out[k] = out[k] or {}
    out[k][row.sync] = row.okta_id
  end
  return out
end

-- Memberships this sync entry added: { [lower group] = { [lower account] = true } }.
function M.owned_memberships(db, sync, target)
  local out = {}
  for row in db:rows([[SELECT m.group_name, l.account_name FROM owned_memberships m
      JOIN links l ON l.sync = m.sync AND l.target = m.target AND l.okta_id = m.okta_id
      WHERE m.sync = ? AND m.target = ?]], sync, target) do
    local g = lower(row.group_name)
    out[g] = out[g] or {}
    out[g][lower(row.account_name)] = true
  end
  return out
end

-- Groups usersync created on a target: { [lower group] = name }.
function M.owned_groups(db, target)
  local out = {}
  for row in db:rows("SELECT group_name FROM owned_groups WHERE target = ?", target) do
    out[lower(row.group_name)] = row.group_name
  end
  return out
end

local function hostname()
  local f = io.open("/proc/sys/kernel/hostname")
  local h = f and f:read("l")
  if f then f:close() end
  return h or "localhost"
end

local function pid()
  local f = io.open("/proc/self/stat")
  local p = f and f:read("n")
  if f then f:close() end
  return p
end
M.pid = pid

-- Starts a run row. Returns its id.
function M.begin_run(db, sync, trigger, command, scope)
  local row = assert(db:first([[INSERT INTO runs (sync, trigger, command, scope, pid, host)
      VALUES (?, ?, ?, ?, ?, ?) RETURNING id]], sync, trigger, command, scope, pid(), hostname()))
  return row.id
end

-- Marks runs of this sync that are still 'running' but whose process is
-- gone as interrupted (a killed run). Returns how many.
function M.mark_interrupted(db, sync)
  local n = 0
  local me, host = pid(), hostname()
  for _, row in ipairs(db:query("SELECT id, pid, host FROM runs WHERE sync = ? AND outcome = 'running'", sync)) do
    local alive = false
    if row.host == host and row.pid then
      local f = io.open("/proc/" .. row.pid .. "/stat")
      local stat = f and f:read("a") or ""
      if f then f:close() end
      -- gone, or a zombie (killed, not yet reaped): not running any more
      local st = stat:match("%) (%a)")
      alive = row.pid == me or (st ~= nil and st ~= "Z" and st ~= "X")
    end
    if not alive then
      db:exec([[UPDATE runs SET outcome = 'interrupted', ended = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
          error = 'the process ended before the run finished' WHERE id = ?]], row.id)
      db:exec("UPDATE operations SET status = 'skipped', error = 'run interrupted' WHERE run_id = ? AND status = 'pending'", row.id)
      n = n + 1
    end
  end
  return n
end

-- The operation's parameters for the detail column (no okta_id/subject/kind).
local SKIP = { kind = true, target = true, subject = true, okta_id = true, seq = true }
local function detail(op)
  local d = {}
  for k, v in pairs(plan.plain(op)) do if not SKIP[k] then d[k] = v end end
  return json.encode(d)
end

-- Records every operation of a plan as pending (one transaction).
function M.record_plan(db, run_id, ops, base_seq)
  base_seq = base_seq or 0
  return db:transaction(function()
    for i, op in ipairs(ops) do
      op.run_seq = base_seq + i
      assert(db:exec([[INSERT INTO operations (run_id, seq, target, kind, subject, okta_id, detail)
          VALUES (?, ?, ?, ?, ?, ?, ?)]], run_id, op.run_seq, op.target, op.kind, op.subject, op.okta_id, detail(op)))
    end
    return base_seq + #ops
  end)
end

function M.op_started(db, run_id, op)
  return db:exec([[UPDATE operations SET status = 'running', started = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
      WHERE run_id = ? AND seq = ?]], run_id, op.run_seq)
end

-- Applies what a successful operation means for ownership: links for
-- created/adopted/renamed/deleted accounts, owned groups and memberships.
local function record_effect(db, sync, op, note)
  local t = op.target
  local k = op.kind
  if k == "create_user" or k == "link" then
    -- A new account (created now, or by a run that died before recording
    -- it) is onboarded once its new-user groups are all given.
    local created = (k == "create_user" and not note) or (k == "link" and op.created) or false
    assert(db:exec([[INSERT INTO links (sync, target, okta_id, account_name, created_by_us, onboarded)
        VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (sync, target, okta_id) DO UPDATE SET account_name = excluded.account_name,
        last_seen = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')]],
      sync, t, op.okta_id, op.name, created and 1 or 0, created and 0 or 1))
  elseif k == "rename_user" then
    assert(db:exec("UPDATE links SET account_name = ? WHERE sync = ? AND target = ? AND okta_id = ?", op.to, sync, t, op.okta_id))
  elseif k == "delete_user" then
    assert(db:exec("DELETE FROM links WHERE target = ? AND lower(account_name) = lower(?)", t, op.name))
  elseif k == "create_group" then
    if not note then
      assert(db:exec("INSERT INTO owned_groups (sync, target, group_name) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", sync, t, op.group))
    end
  elseif k == "add_member" then
    if op.okta_id and not note then
      assert(db:exec([[INSERT INTO owned_memberships (sync, target, group_name, okta_id) VALUES (?, ?, ?, ?)
          ON CONFLICT DO NOTHING]], sync, t, op.group, op.okta_id))
    end
  elseif k == "remove_member" then
    if op.okta_id then
      assert(db:exec("DELETE FROM owned_memberships WHERE sync = ? AND target = ? AND lower(group_name) = lower(?) AND okta_id = ?",
        sync, t, op.group, op.okta_id))
    end
  end
end
M.record_effect = record_effect

-- Records the outcome of one operation, and its effect when it succeeded,
-- in one transaction. result: { ok = true, note = "..." } or
-- { ok = false, error = "...", code = "..." }.
function M.op_finished(db, run_id, sync, op, result)
  return db:transaction(function()
    if result.ok then
      record_effect(db, sync, op, result.note)
    end
    assert(db:exec([[UPDATE operations SET status = ?, error = ?, code = ?,
        ended = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE run_id = ? AND seq = ?]],
      result.ok and "done" or (result.skipped and "skipped" or "failed"),
      secrets.mask(result.ok and result.note or result.error), result.code, run_id, op.run_seq))
    return true
  end)
end

function M.end_run(db, run_id, outcome, counts, err)
  return db:exec([[UPDATE runs SET outcome = ?, counts = ?, error = ?,
      ended = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?]],
    outcome, json.encode(counts or json.object()), err and secrets.mask(err), run_id)
end

return M
