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

-- The ids services gave linked accounts (SCIM): { [okta_id] = account_id }.
function M.link_ids(db, sync, target)
  local out = {}
  for row in db:rows([[SELECT okta_id, account_id FROM links
      WHERE sync = ? AND target = ? AND account_id IS NOT NULL]], sync, target) do
    out[row.okta_id] = row.account_id
  end
  return out
end

-- Links learn the id the service gave their account from a read of the
-- target (`accounts` with `id`, SCIM), where they have none yet. Returns
-- how many links learnt one. Nothing to do for targets without ids.
function M.remember_ids(db, target, accounts)
  local ids = {}
  if type(accounts) == "userdata" then -- an account set: looked up by name
    if not accounts:has_ids() then return 0 end
    ids = setmetatable({}, { __index = function(_, k) return accounts:get(k, "id") end })
  else
    for _, a in ipairs(accounts or {}) do if a.id then ids[lower(a.name)] = a.id end end
    if next(ids) == nil then return 0 end
  end
  local todo = {}
  for row in db:rows("SELECT sync, okta_id, account_name FROM links WHERE target = ? AND account_id IS NULL",
      target) do
    local id = ids[lower(row.account_name)]
    if id then todo[#todo + 1] = { row.sync, row.okta_id, id } end
  end
  if #todo == 0 then return 0 end
  assert(db:transaction(function()
    for _, r in ipairs(todo) do
      assert(db:exec("UPDATE links SET account_id = ? WHERE sync = ? AND target = ? AND okta_id = ?",
        r[3], r[1], target, r[2]))
    end
  end))
  return #todo
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
-- (Two statements over the ids as a JSON array, not two per account.)
function M.mark_onboarded(db, sync, target, okta_ids)
  if #okta_ids == 0 then return true end
  local ids = assert(json.encode(json.array(okta_ids)))
  return db:transaction(function()
    assert(db:exec([[UPDATE links SET onboarded = 1 WHERE sync = ? AND target = ?
        AND okta_id IN (SELECT value FROM json_each(?))]], sync, target, ids))
    assert(db:exec([[DELETE FROM returning_groups WHERE sync = ? AND target = ?
        AND okta_id IN (SELECT value FROM json_each(?))]], sync, target, ids))
    return true
  end)
end

-- Groups to give back to returning accounts (deprovisioned by group
-- removal): { [okta_id] = { group, ... } }.
function M.returning_groups(db, sync, target)
  local out = {}
  for row in db:rows("SELECT okta_id, group_name FROM returning_groups WHERE sync = ? AND target = ? ORDER BY group_name",
      sync, target) do
    out[row.okta_id] = out[row.okta_id] or {}
    table.insert(out[row.okta_id], row.group_name)
  end
  return out
end

-- The intent journal: marks operations as started ('running') in one
-- transaction before they go to a target (engine: one chunk at a time), so
-- a write is never sent unless its intent is durable. A run that ends
-- before recording an outcome leaves the row 'running'; the next plan
-- settles it from the target's state (reconcile).
-- The journal rows of ops marked 'running' (their intents), one
-- statement for the lot: the seqs go in as a JSON array.
local function seq_list(ops)
  local seqs = {}
  for i, op in ipairs(ops) do seqs[i] = math.tointeger(op.run_seq) or error("op without run_seq") end
  return "[" .. table.concat(seqs, ",") .. "]"
end

local function started(db, run_id, ops)
  if #ops == 0 then return end
  assert(db:exec([[UPDATE operations SET status = 'running', started = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
      WHERE run_id = ? AND seq IN (SELECT value FROM json_each(?))]], run_id, seq_list(ops)))
end

function M.ops_started(db, run_id, ops)
  return db:transaction(function()
    started(db, run_id, ops)
    return true
  end)
end

-- Failure codes after which the write certainly did not happen (the
-- target refused it, or no connection was made). Any other failure (a 5xx,
-- a timeout, a dropped connection, an unreadable answer) may have been
-- applied: the row is marked unsure and settled by the next plan.
M.DEFINITE = { EINVALID = true, EAUTH = true, ESEATS = true, EFORBIDDEN = true, ENOTFOUND = true,
  ECONFLICT = true, ERATELIMIT = true, EINHERITED = true, ELEAD = true, EUNSUPPORTED = true,
  ETASK_FAILED = true, ECONNREFUSED = true, EDNS = true, ETLS = true, EURL = true, EPROXY = true,
  WITHHELD = true }

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

-- Memberships this sync entry added: { [lower group] = { [lower account] = why } },
-- why = "mapping", "default" or "new_user" (true for a row from before usersync
-- kept why). The names are lowered by SQLite (ASCII, as string.lower in the
-- C locale), rows come grouped by group, and each row is read as values,
-- not as a table (a 10,000-user org has some 50,000 rows per target).
function M.owned_memberships(db, sync, target)
  local out = {}
  local last, set
  for _, g, a, why in db:each([[SELECT lower(m.group_name), lower(l.account_name), m.why FROM owned_memberships m
      JOIN links l ON l.sync = m.sync AND l.target = m.target AND l.okta_id = m.okta_id
      WHERE m.sync = ? AND m.target = ? ORDER BY m.sync, m.target, lower(m.group_name)]], sync, target) do
    if g ~= last then
      set = out[g]
      if not set then set = {}; out[g] = set end
      last = g
    end
    set[a] = why or true
  end
  return out
end

-- The links of one sync entry and target with the memberships it added,
-- compactly: a usersync.linkset (what a whole-target plan takes for
-- links, link_ids and owned_memberships; 100,000 links and their ~500,000
-- memberships as the tables above took ~20 MB). Memberships keyed as
-- owned_memberships keys them: lowercase group, the link's account.
-- turn: called every 512 rows, if given (the engine's reads still
-- running go on while a large set is loaded).
function M.linkset(db, sync, target, turn)
  local set = require("usersync.linkset").new()
  local n = 0
  for _, id, name, account_id in db:each([[SELECT okta_id, account_name, account_id FROM links
      WHERE sync = ? AND target = ?]], sync, target) do
    set:add(id, name, account_id)
    n = n + 1
    if turn and n % 512 == 0 then turn() end
  end
  local own = set.own
  for _, g, id, why in db:each([[SELECT lower(group_name), okta_id, why FROM owned_memberships
      WHERE sync = ? AND target = ?]], sync, target) do
    own(set, g, id, why) -- why: as the store's CHECK allows, or NULL
    n = n + 1
    if turn and n % 512 == 0 then turn() end
  end
  -- the pages read (100,000 links and their memberships: the cache's
  -- 8 MB) are not read again while the target is planned
  db:release_cache()
  return set
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
-- targets: the targets the run is limited to (--target), comma-separated.
function M.begin_run(db, sync, trigger, command, scope, targets)
  local row = assert(db:first([[INSERT INTO runs (sync, trigger, command, scope, pid, host, targets)
      VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id]], sync, trigger, command, scope, pid(), hostname(), targets))
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
          error = 'the run ended before recording its outcome (killed, or the store could not be written)'
          WHERE id = ?]], row.id)
      db:exec("UPDATE operations SET status = 'skipped', error = 'run interrupted' WHERE run_id = ? AND status = 'pending'", row.id)
      M.recount_run(db, row.id)
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

-- Records what plan p of a run could not do (usersync show): its policy
-- errors, conflicts, a read failure, and, when `stop` (the safety stop's
-- reasons) withholds destructive changes, each of those with the reason.
-- `base_seq` numbers the rows within the run; returns the next base.
function M.record_findings(db, run_id, p, stop, destructive, base_seq)
  local rows = {}
  local function add(kind, subject, okta_id, message, op)
    rows[#rows + 1] = { kind, subject, okta_id, secrets.mask(tostring(message or "")), op }
  end

  if p.read_error then add("unread", nil, nil, p.read_error) end
  for _, e in ipairs(p.errors or {}) do add("policy_error", e.subject, e.okta_id, e.message) end
  for _, c in ipairs(p.conflicts or {}) do add("conflict", c.name, c.okta_id, c.message) end

  if stop then
    local why = table.concat(stop, "; ")
    for _, o in ipairs(p.ops) do
      if destructive[o.kind] then
        add("withheld", o.group and (o.subject .. " in " .. o.group) or o.subject, o.okta_id, why, o.kind)
      end
    end
  end
  return M.add_findings(db, run_id, p.target, rows, base_seq)
end

-- Records findings of a run on target: rows = { { kind, subject, okta_id,
-- message (masked), op }, ... }, numbered from base_seq + 1. Returns the
-- next base.
function M.add_findings(db, run_id, target, rows, base_seq)
  base_seq = base_seq or 0
  if #rows == 0 then return base_seq end
  return db:transaction(function()
    for i, r in ipairs(rows) do
      assert(db:exec([[INSERT INTO findings (run_id, seq, target, kind, subject, okta_id, message, op)
          VALUES (?, ?, ?, ?, ?, ?, ?, ?)]], run_id, base_seq + i, target, r[1], r[2], r[3], r[4], r[5]))
    end
    return base_seq + #rows
  end)
end

-- Records every operation of a plan as pending (one transaction), a few
-- hundred rows per statement (a JSON array of them: per-row statements
-- were a good share of a first sync's CPU).
M.PLAN_ROWS = 500
function M.record_plan(db, run_id, ops, base_seq)
  base_seq = base_seq or 0
  local null = json.null
  return db:transaction(function()
    for first = 1, #ops, M.PLAN_ROWS do
      local rows = {}
      for i = first, math.min(first + M.PLAN_ROWS - 1, #ops) do
        local op = ops[i]
        op.run_seq = base_seq + i
        local d = assert(detail(op))
        local target, kind, subject, okta_id = op.target, op.kind, op.subject, op.okta_id
        rows[#rows + 1] = { op.run_seq, target == nil and null or target, kind == nil and null or kind,
                            subject == nil and null or subject, okta_id == nil and null or okta_id, d }
      end
      assert(db:exec([[INSERT INTO operations (run_id, seq, target, kind, subject, okta_id, detail)
          SELECT ?1, json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'), json_extract(j.value, '$[2]'),
            json_extract(j.value, '$[3]'), json_extract(j.value, '$[4]'), json_extract(j.value, '$[5]')
          FROM json_each(?2) AS j]], run_id, assert(json.encode(rows))))
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
    -- account_id: the service's id of the account where it has one (SCIM;
    -- a created account's is learnt from the next read, remember_ids)
    assert(db:exec([[INSERT INTO links (sync, target, okta_id, account_name, created_by_us, onboarded, account_id)
        VALUES (?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (sync, target, okta_id) DO UPDATE SET account_name = excluded.account_name,
        account_id = excluded.account_id,
        last_seen = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')]],
      sync, t, op.okta_id, op.name, created and 1 or 0, created and 0 or 1, op.id))
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
      assert(db:exec([[INSERT INTO owned_memberships (sync, target, group_name, okta_id, why) VALUES (?, ?, ?, ?, ?)
          ON CONFLICT DO NOTHING]], sync, t, op.group, op.okta_id, op.why))
    end
  elseif k == "remove_member" then
    if op.okta_id then
      assert(db:exec("DELETE FROM owned_memberships WHERE sync = ? AND target = ? AND lower(group_name) = lower(?) AND okta_id = ?",
        sync, t, op.group, op.okta_id))
      if op.deprovision then
        -- Deprovisioned by removing its groups (Bitbucket cannot
        -- deactivate): if it returns it is provisioned like a new account,
        -- and gets back the groups no rule manages (its licence).
        assert(db:exec("UPDATE links SET onboarded = 0 WHERE sync = ? AND target = ? AND okta_id = ?", sync, t, op.okta_id))
        if op.restore then
          assert(db:exec([[INSERT INTO returning_groups (sync, target, okta_id, group_name) VALUES (?, ?, ?, ?)
              ON CONFLICT DO NOTHING]], sync, t, op.okta_id, op.group))
        end
      end
    end
  end
end
M.record_effect = record_effect

-- Records the outcome of one operation, and its effect when it succeeded,
-- in one transaction. result: { ok = true, note = "..." } or
-- { ok = false, error = "...", code = "..." }.
local function linked(db, sync, target, okta_id)
  return db:first("SELECT 1 AS x FROM links WHERE sync = ? AND target = ? AND okta_id = ?", sync, target, okta_id) ~= nil
end

-- Records one outcome. With `done` (a list), a plain success (no note,
-- nothing unsure) is appended to it instead of updating its row: the
-- caller marks the list 'done' in one statement (done_rows).
local function finished(db, run_id, sync, op, result, done)
  local unsure = not result.ok and not result.skipped and not M.DEFINITE[result.code or ""]
  if result.ok then
    -- "already a member/exists" for a repeat of an unconfirmed intent of
    -- usersync's own (op.ours): the earlier request landed late; it is ours.
    local note = result.note
    if op.ours and (op.kind == "add_member" or op.kind == "create_user") then note = nil end
    if op.kind == "add_member" and op.okta_id and not note and not linked(db, sync, op.target, op.okta_id) then
      -- Added to an account whose creation's answer was lost (not linked
      -- yet): owned once the next plan links it (reconcile).
      unsure = true
    else
      record_effect(db, sync, op, note)
    end
  end

  if done and result.ok and not unsure and result.note == nil and result.code == nil then
    done[#done + 1] = op
    return
  end

  assert(db:exec([[UPDATE operations SET status = ?, error = ?, code = ?, unsure = ?,
      ended = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE run_id = ? AND seq = ?]],
    result.ok and "done" or (result.skipped and "skipped" or "failed"),
    secrets.mask(result.ok and result.note or result.error), result.code, unsure and 1 or 0, run_id, op.run_seq))
end

function M.op_finished(db, run_id, sync, op, result)
  return db:transaction(function()
    finished(db, run_id, sync, op, result)
    return true
  end)
end

-- The outcomes of a chunk in one transaction: list = { { op, result }, ... }.
local function done_rows(db, run_id, ops)
  if #ops == 0 then return end
  assert(db:exec([[UPDATE operations SET status = 'done', error = NULL, code = NULL, unsure = 0,
      ended = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE run_id = ? AND seq IN (SELECT value FROM json_each(?))]],
    run_id, seq_list(ops)))
end

-- Plain successes (no note, no code) of the two kinds a first sync sends
-- most, recorded a run of them at a time with one statement each over a
-- JSON array instead of a few statements per operation: what finished()
-- does for each, in the same order. An add_member of a linked account
-- owns the membership and its row is 'done'; of an account not linked yet
-- (its creation's answer was lost) the row is 'done' and unsure, as
-- finished() marks it. A create_user links the account (its row joins
-- `done`).
local function plain(op, result)
  if not (result.ok and result.note == nil and result.code == nil and op.okta_id) then return nil end
  if op.kind == "add_member" then return "add" end
  if op.kind == "create_user" then return "create" end
end

-- One statement for a run of plain add_member outcomes (ops) on target:
-- owned where the account is linked, the rows 'done' (unsure where not).
-- (Names JSON cannot carry never get here: record_plan's detail refused them.)
local function flush_adds(db, run_id, sync, target, ops)
  local rows, seqs = {}, {}
  for i, op in ipairs(ops) do
    rows[i] = { op.group, op.okta_id, op.why }
    seqs[i] = math.tointeger(op.run_seq) or error("op without run_seq")
  end
  local arr = assert(json.encode(rows))
  assert(db:exec([[INSERT INTO owned_memberships (sync, target, group_name, okta_id, why)
      SELECT ?1, ?2, json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'), json_extract(j.value, '$[2]')
      FROM json_each(?3) AS j
      WHERE EXISTS (SELECT 1 FROM links AS l WHERE l.sync = ?1 AND l.target = ?2
                    AND l.okta_id = json_extract(j.value, '$[1]'))
      ON CONFLICT DO NOTHING]], sync, target, arr))
  assert(db:exec([[UPDATE operations SET status = 'done', error = NULL, code = NULL,
      unsure = NOT EXISTS (SELECT 1 FROM links AS l WHERE l.sync = ?2 AND l.target = operations.target
                           AND l.okta_id = operations.okta_id),
      ended = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
      WHERE run_id = ?1 AND seq IN (SELECT value FROM json_each(?3))]], run_id, sync,
    "[" .. table.concat(seqs, ",") .. "]"))
end

-- Likewise for plain create_user outcomes: links them (their rows join done).
local function flush_creates(db, sync, target, ops, done)
  local rows = {}
  for i, op in ipairs(ops) do rows[i] = { op.okta_id, op.name, op.id } end
  local arr = assert(json.encode(rows))
  assert(db:exec([[INSERT INTO links (sync, target, okta_id, account_name, created_by_us, onboarded, account_id)
      SELECT ?1, ?2, json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'), 1, 0, json_extract(j.value, '$[2]')
      FROM json_each(?3) AS j WHERE true
      ON CONFLICT (sync, target, okta_id) DO UPDATE SET account_name = excluded.account_name,
      account_id = excluded.account_id,
      last_seen = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')]], sync, target, arr))
  table.move(ops, 1, #ops, #done + 1, done)
end

local function outcomes(db, run_id, sync, list)
  local done = {}
  local kind, target, batch = nil, nil, {}
  local function flush()
    if #batch == 0 then return end
    if kind == "add" then
      flush_adds(db, run_id, sync, target, batch)
    else
      flush_creates(db, sync, target, batch, done)
    end
    batch = {}
  end
  for _, x in ipairs(list) do
    local op, result = x[1], x[2]
    local k = plain(op, result)
    if k then
      if k ~= kind or op.target ~= target then flush(); kind, target = k, op.target end
      batch[#batch + 1] = op
    else
      flush()
      finished(db, run_id, sync, op, result, done)
    end
  end
  flush()
  done_rows(db, run_id, done)
end

function M.ops_finished(db, run_id, sync, list)
  return db:transaction(function()
    outcomes(db, run_id, sync, list)
    return true
  end)
end

-- Group commit of an apply: the outcomes of the chunks sent so far (list,
-- as ops_finished) and the intents of the next chunk (ops, as
-- ops_started) in one transaction. The intents are durable before the
-- chunk is sent; an outcome waits for the next chunk's commit (a run
-- killed in between leaves it 'running', settled by the next plan as
-- any unknown outcome).
function M.ops_progress(db, run_id, sync, list, ops)
  return db:transaction(function()
    outcomes(db, run_id, sync, list)
    started(db, run_id, ops)
    return true
  end)
end

-- Sets a run's counts of applied changes from its journal (the rows
-- 'done'), keeping its other counts (users_in_scope, conflicts): what a
-- run that could not record its end, or whose outcomes were settled later,
-- really did.
function M.recount_run(db, run_id)
  return db:exec([[UPDATE runs SET counts = json_patch(coalesce(counts, '{}'),
      coalesce((SELECT json_group_object(kind, n) FROM
        (SELECT kind, count(*) AS n FROM operations WHERE run_id = ?1 AND status = 'done' GROUP BY kind)), '{}'))
      WHERE id = ?1]], run_id)
end

-- Whether the intent op (of kind k) took effect, by the target's read
-- (account(name) -> its entry, known; groups: the group names read): true,
-- false, or nil (unknown yet). What a confirmed one means for ownership is
-- recorded.
local function confirm(db, sync, target, op, k, account, groups, partial)
  local applied
  if k == "create_user" then
    local a, known = account(op.name)
    if a then applied = true elseif known then applied = false end
    if applied and op.okta_id then
      -- linked already (by a later run), or the name taken by another link: nothing to record
      local taken = db:first([[SELECT 1 AS x FROM links WHERE sync = ? AND target = ?
          AND (okta_id = ? OR lower(account_name) = lower(?))]], sync, target, op.okta_id, a.account.name)
      if not taken then
        assert(db:exec([[INSERT INTO links (sync, target, okta_id, account_name, created_by_us, onboarded)
            VALUES (?, ?, ?, ?, 1, 0)]], sync, target, op.okta_id, a.account.name))
      end
    end
  elseif k == "add_member" or k == "remove_member" then
    local a, known = account(op.name)
    if a then
      local member = a.groups[lower(op.group or "")] or false
      if k == "add_member" then applied = member else applied = not member end
    elseif known then
      applied = k == "remove_member"
    end
    if applied and op.okta_id and linked(db, sync, target, op.okta_id) then
      record_effect(db, sync, op, nil)
    end
  elseif k == "rename_user" then
    local a = account(op.to)
    local old, known = account(op.from)
    if a and (not old or old == a) then applied = true elseif old and known then applied = false end
    if applied then record_effect(db, sync, op, nil) end
  elseif k == "delete_user" then
    local a, known = account(op.name)
    if a then applied = false elseif known then applied = true end
    if applied then record_effect(db, sync, op, nil) end
  elseif k == "create_group" then
    if groups[lower(op.group or "")] then applied = true elseif not partial then applied = false end
    if applied then record_effect(db, sync, op, nil) end
  elseif k == "deactivate_user" or k == "reactivate_user" then
    local a, known = account(op.name)
    if a then
      local active = a.account.active ~= false
      if k == "deactivate_user" then applied = not active else applied = active end
    elseif known then
      applied = false
    end
  else
    applied = false -- update, hand-over, link: nothing to own; the plan repeats what is still needed
  end
  return applied
end

-- Settles the journal rows of sync/target whose outcome is unknown (left
-- 'running' by a run that ended without recording it, or failed with an
-- unsure code) from the target's state just read (snap: accounts with
-- their groups, group names). An intended create whose account exists is
-- a creation (linked, created by usersync, still to onboard: it gets its
-- new-user groups); an intended add whose membership exists is owned; a
-- rename, removal or deletion that shows is recorded as done. One that
-- does not show is recorded as not applied (the plan sends it again if it
-- is still needed). With `partial` (a read of a few accounts) an account
-- absent from snap is unknown, not absent: its rows wait.
-- Returns the number of rows settled and the set of creates and adds not
-- confirmed ({ [intent_key] = true }): a request of a killed process may
-- still land after this read, so the plan marks the repeated op `ours`,
-- and its "already exists"/"already a member" answer still counts as
-- usersync's creation or membership.
function M.reconcile(db, sync, target, snap, partial)
  local rows = db:query([[SELECT o.run_id, o.seq, o.kind, o.subject, o.okta_id, o.detail, o.status
      FROM operations o JOIN runs r ON r.id = o.run_id
      WHERE (o.status = 'running' OR o.unsure = 1) AND o.target = ? AND r.sync = ? AND r.outcome <> 'running'
      ORDER BY o.run_id, o.seq]], target, sync)

  if #rows == 0 then return 0, {} end

  local accounts, groups = {}, {}
  local set = type(snap.accounts) == "userdata" and snap.accounts -- a whole read's account set
  local function entry(a)
    local gs = {}
    for _, g in ipairs(a.groups or {}) do gs[lower(g)] = true end
    return { account = a, groups = gs }
  end
  if not set then
    for _, a in ipairs(snap.accounts or {}) do accounts[lower(a.name)] = entry(a) end
  end
  for _, g in ipairs(snap.groups or {}) do groups[lower(type(g) == "table" and g.name or g)] = true end

  local function account(name)
    local a = name and accounts[lower(name)]
    if not a and name and set then -- looked up in the set, once per name
      a = set:get(name)
      if a then a = entry(a); accounts[lower(name)] = a end
    end
    if a then return a, true end
    return nil, not partial -- known absent only after a full read
  end

  local settled, runs = 0, {}
  local unconfirmed = {}
  local ok, err = db:transaction(function()
    for _, row in ipairs(rows) do
      local d = row.detail and json.decode(row.detail) or {}
      local op = { kind = row.kind, target = target, subject = row.subject, okta_id = row.okta_id }
      for k, v in pairs(d) do if op[k] == nil then op[k] = v end end

      local k = row.kind
      local applied = confirm(db, sync, target, op, k, account, groups, partial)

      if row.status == "done" then
        -- done, its ownership waited for the link: settled either way
        assert(db:exec("UPDATE operations SET unsure = 0 WHERE run_id = ? AND seq = ?", row.run_id, row.seq))
      elseif applied ~= nil then
        if not applied and op.okta_id and (k == "create_user" or k == "add_member") then
          unconfirmed[M.intent_key(k, op.okta_id, op.group)] = true
        end
        assert(db:exec([[UPDATE operations SET status = ?, unsure = 0, code = coalesce(code, ?), error = ?,
            ended = coalesce(ended, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) WHERE run_id = ? AND seq = ?]],
          applied and "done" or "failed", applied and "CONFIRMED" or "UNCONFIRMED",
          applied and "the answer was lost; a later read shows it applied"
                   or "the answer was lost; a later read shows it not applied",
          row.run_id, row.seq))
        settled = settled + 1
        runs[row.run_id] = true
      end
    end

    for id in pairs(runs) do assert(M.recount_run(db, id)) end
    return true
  end)

  if not ok then return nil, err end
  return settled, unconfirmed
end

-- The key of an intended create or add in reconcile's `unconfirmed` set.
function M.intent_key(kind, okta_id, group)
  return kind .. "\31" .. okta_id .. "\31" .. lower(group or "")
end

-- The last completed run's number of users in scope (to spot an empty
-- read), or nil.
function M.last_in_scope(db, sync)
  local row = db:first([[SELECT counts FROM runs WHERE sync = ? AND outcome IN ('ok', 'partial')
      AND command IN ('sync', 'apply') AND scope IS NULL ORDER BY id DESC LIMIT 1]], sync)
  local counts = row and row.counts and json.decode(row.counts)
  return counts and counts.users_in_scope
end

-- Marks the operations of run_id not sent yet as skipped, for `reason`.
function M.skip_pending(db, run_id, reason)
  return db:exec([[UPDATE operations SET status = 'skipped', error = ?
      WHERE run_id = ? AND status = 'pending']], reason, run_id)
end

-- Closes the runs process `run_pid` left running (a run that raised after it
-- began): failed, with message err.
function M.fail_running(db, run_pid, err)
  return db:exec([[UPDATE runs SET outcome = 'failed', error = ?,
      ended = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE outcome = 'running' AND pid = ?]],
    secrets.mask(err), run_pid)
end

-- When the last full run of a sync entry ended (any outcome), or the last
-- run with outcome 'ok' (ok = true): the timestamp text, or nil. A run of
-- some of its targets (--target) is not a full run.
function M.last_ended(db, sync, ok)
  local row
  if ok then
    -- Single-user and event runs (a scope) read a few users: they say
    -- nothing about whether the whole org is in sync.
    row = db:first([[SELECT ended FROM runs WHERE sync = ? AND outcome = 'ok' AND scope IS NULL
        AND targets IS NULL AND ended IS NOT NULL ORDER BY id DESC LIMIT 1]], sync)
  else
    row = db:first([[SELECT ended FROM runs WHERE sync = ? AND scope IS NULL
        AND targets IS NULL AND ended IS NOT NULL ORDER BY id DESC LIMIT 1]], sync)
  end
  return row and row.ended
end

-- The accounts the store links, per target: { [target] = count }.
function M.linked_accounts(db)
  local out = {}
  for row in db:rows([[SELECT target, count(DISTINCT lower(account_name)) AS n FROM links
      GROUP BY target]]) do
    out[row.target] = row.n
  end
  return out
end

-- A run's sync entry and outcome ({ sync, outcome }), or nil.
function M.run_outcome(db, run_id)
  return db:first("SELECT sync, outcome FROM runs WHERE id = ?", run_id)
end

-- The operations of a run by target, kind and status: an iterator over
-- { target, kind, status, n }.
function M.op_totals(db, run_id)
  return db:rows([[SELECT target, kind, status, count(*) AS n FROM operations WHERE run_id = ?
      GROUP BY target, kind, status]], run_id)
end

-- The store's cursors: serve's resume points (System Log cursors and
-- watermarks, the waiting users, the jobs' last runs), text by name.
function M.cursor(db, name)
  local row = db:first("SELECT value FROM cursors WHERE name = ?", name)
  return row and row.value
end

function M.set_cursor(db, name, value)
  return db:exec([[INSERT INTO cursors (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET
      value = excluded.value, updated = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')]], name, value)
end

function M.drop_cursor(db, name)
  return db:exec("DELETE FROM cursors WHERE name = ?", name)
end

function M.end_run(db, run_id, outcome, counts, err)
  return db:exec([[UPDATE runs SET outcome = ?, counts = ?, error = ?,
      ended = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?]],
    outcome, json.encode(counts or json.object()), err and secrets.mask(err), run_id)
end

-- Every link to an account of target `target` (`usersync accounts`):
-- a list of { sync, okta_id, account_name, created_by_us
-- (boolean), first_seen (when linked), last_seen }, by account name.
function M.target_links(db, target)
  local out = {}
  for row in db:rows([[SELECT sync, okta_id, account_name, created_by_us, first_seen, last_seen FROM links
      WHERE target = ? ORDER BY lower(account_name), sync]], target) do
    row.created_by_us = row.created_by_us == 1
    out[#out + 1] = row
  end
  return out
end

-- The link of Okta user okta_id made by entry sync on target (a row as
-- target_links'), or nil. One indexed read, not the target's every link.
function M.link(db, sync, target, okta_id)
  local row, err = db:first([[SELECT sync, okta_id, account_name, created_by_us, first_seen, last_seen FROM links
      WHERE sync = ? AND target = ? AND okta_id = ?]], sync, target, okta_id)
  if err then error(err, 0) end -- as target_links: a store that fails raises
  if row then row.created_by_us = row.created_by_us == 1 end
  return row
end

return M
