-- usersync.apply: applies a run plan, entry by entry, to the targets of an
-- entry concurrently (each in its plan order),
-- recording every operation in the store's journal as it goes: the intent
-- before a write is sent, the outcome after. The safety limits withhold
-- the destructive kinds; a store that cannot be written stops the sending.
--
--   local apply = require "usersync.apply"
--   local summary = apply.run(e, run_plan, { force = false, command = "sync" })
--   -- summary = { exit, runs = {id...}, ok, failed, withheld, stop = {reasons}, ... }
--
-- Uses the engine for its target clients (e:target), the store (e.db), the
-- run locks, progress events and stop requests.
local report = require "usersync.report"
local state = require "usersync.state"
local log = require "usersync.log"
local secrets = require "usersync.secrets"

local M = {}

M.EXIT_OK, M.EXIT_FAILED, M.EXIT_SAFETY = 0, 1, 3
M.LOCK_TTL = 600

local DESTRUCTIVE = report.DESTRUCTIVE
local DONE = { ok = true } -- the outcome of a plain success

-- Operations per chunk. A chunk holds operations of one kind (plan order
-- holds across chunks): their intents are recorded in one transaction
-- together with the outcomes of the chunk before (group commit: one
-- commit per chunk), then the chunk is sent; the last chunk's outcomes
-- are recorded when the target's ops are done. So a write is never sent
-- before its intent is durable, a run killed midway leaves at most two
-- chunks of unknown outcomes per target (settled by the next plan,
-- state.reconcile), and a stop request (serve's SIGTERM) waits for at
-- most one chunk's requests in flight per target.
-- Adds go in larger chunks, ordered by group within their phase: where a
-- product adds many users to a group in one request (Bitbucket), a chunk
-- costs about one request per group it touches.
M.CHUNK = 100
M.ADD_CHUNK = 1000

-- A store call that must not raise: returns its result, or nil and the
-- message (disk full, I/O error, ...).
local function journal(fn, ...)
  local ok, a, b = pcall(fn, ...)
  if not ok then return nil, tostring(a) end
  if a == nil then return nil, tostring(b) end
  return a
end

-- Orders the add_member ops of a plan-ordered list by group (then plan
-- order), in place; other kinds keep their places.
local function adds_by_group(ops)
  local first, last
  for i, o in ipairs(ops) do
    if o.kind == "add_member" then first = first or i; last = i end
  end
  if not first then return end

  local seg = table.move(ops, first, last, 1, {})
  -- (by seq, the plan position: no field is added to a million ops)
  local lower = setmetatable({}, { __index = function(t, g)
    local l = g:lower()
    t[g] = l
    return l
  end })
  table.sort(seg, function(a, b)
    local ga, gb = lower[a.group], lower[b.group]
    if ga ~= gb then return ga < gb end
    return (a.seq or 0) < (b.seq or 0)
  end)
  table.move(seg, 1, #seg, first, ops)
end

-- The coroutines of the targets an apply is running (Apply:entry): a chunk
-- sent from one of them is handed to the scheduler, which polls every
-- target's chunk in turn.
local scheduled = setmetatable({}, { __mode = "k" })

-- Sends chunk to target t and waits for its results (finished runs for
-- each). Returns true, or nil, err when the target gave up.
local function send_batch(t, chunk, finished)
  local pending = t:apply_start(chunk)
  if scheduled[coroutine.running()] then return coroutine.yield(pending, finished) end
  while true do
    local more, err = pending:poll(finished, 0.2)
    if more == nil then return nil, err end
    if not more then return true end
  end
end

-- Applies ops to target t in chunks. per_chunk(chunk) runs before a chunk
-- is sent and returns the ops to send (or nil, err: the store cannot record
-- them; nothing more is sent); finished(op, ok, info, code) runs for each
-- outcome and done_chunk() after each chunk (or nil, err likewise).
-- halted() is checked between chunks: "stopped" (a stop request), or an
-- error (another target's store write failed).
-- Returns "stopped" when halted said so between chunks, nil, err
-- when the target gave up, or false, err when the store failed.
local function send_chunks(t, ops, per_chunk, finished, done_chunk, halted)
  local i = 1
  while i <= #ops do
    local halt, herr = halted()
    if halt == "stopped" then return "stopped" end
    if halt then return false, herr end
    local j, kind = i, ops[i].kind
    local size = kind == "add_member" and M.ADD_CHUNK or M.CHUNK
    while j < #ops and j - i + 1 < size and ops[j + 1].kind == kind do j = j + 1 end

    local chunk, err = per_chunk(table.move(ops, i, j, 1, {}))
    if not chunk then return false, err end
    if #chunk > 0 then
      local res, aerr = send_batch(t, chunk, finished)
      if not res then return nil, aerr end
    end
    local ok, derr = done_chunk()
    if not ok then return false, derr end
    i = j + 1
  end
  return true
end

-- One apply of a run plan: the engine, the summary and the first store
-- failure (store_error).
local Apply = {}
Apply.__index = Apply

-- The store cannot be written (disk full, I/O error): nothing more is
-- sent; what was sent and not recorded is settled by the next plan.
function Apply:store_failed(err)
  self.store_error = self.store_error
    or ("cannot record the run in the store %s: %s; nothing more was sent (the next run "
      .. "settles what was sent and plans the rest again)")
      :format(self.e.db:path(), (tostring(err):gsub("^.-store: ", "")))
end

-- A failure of the run (run.failed) and of the apply (summary.failed).
function Apply:failure(run, n)
  run.failed = run.failed + (n or 1)
  self.summary.failed = self.summary.failed + (n or 1)
end

-- Names a source or target ("sources" | "targets") this apply could not
-- read (summary.not_read; the summary line counts and names them).
function Apply:not_read(what, name)
  local list = self.summary.not_read[what]
  for _, n in ipairs(list) do if n == name then return end end
  list[#list + 1] = name
end

-- Counts what plan p could not sync: an unread target, conflicts and
-- policy errors.
function Apply:count_problems(run, p)
  local counts, summary = run.counts, self.summary
  if p.read_error then -- the target could not be read: a failure, not users left unsynced
    run.failed = run.failed + 1
    counts.targets_unread = (counts.targets_unread or 0) + 1
    self:not_read("targets", p.target)
  end
  local problems = #p.conflicts + #p.errors
  if problems > 0 then
    run.failed = run.failed + problems
    summary.problems = (summary.problems or 0) + problems
    counts.conflicts = (counts.conflicts or 0) + #p.conflicts
    counts.policy_errors = (counts.policy_errors or 0) + #p.errors
  end
end

-- The ops of p to send: all but the destructive ones when a safety limit
-- stops the run (those are counted as withheld).
function Apply:sendable(p)
  local ops = {}
  for _, o in ipairs(p.ops) do
    if self.stop and DESTRUCTIVE[o.kind] then
      self.summary.withheld = self.summary.withheld + 1
    else
      ops[#ops + 1] = o
    end
  end
  return ops
end

local WITHHELD = "withheld: a hand-over of its project or component leads failed; "
  .. "the next run tries again"

-- An account is deprovisioned only after every hand-over of its leads
-- succeeded; otherwise it is withheld (kept active, so the next run plans
-- the hand-over and the deprovision again). Returns the ops of chunk to
-- send, or nil, err (the store failed).
function Apply:withhold_leavers(run, p, chunk, handover_failed)
  local kind = chunk[1].kind
  local deprovisions = kind == "deactivate_user" or kind == "delete_user"
  if not next(handover_failed) or not deprovisions then return chunk end

  local send, held, found = {}, {}, {}
  for _, o in ipairs(chunk) do
    local why = handover_failed[o.name:lower()]
    if why then
      held[#held + 1] = { o, { ok = false, skipped = true, code = "WITHHELD", error = WITHHELD } }
      -- kept with the run as what it could not do (usersync show), with
      -- the hand-over's error
      found[#found + 1] = { "withheld", o.subject, o.okta_id, secrets.mask(("a hand-over of its project or "
        .. "component leads failed (%s); kept, the next run tries again"):format(why)), o.kind }
      self.summary.withheld_leads = (self.summary.withheld_leads or 0) + 1
      log.warn("%s %s %s withheld: a hand-over of its leads failed; the next run tries again",
        p.target, o.kind, o.subject)
    else
      send[#send + 1] = o
    end
  end
  if #held > 0 then
    local ok, err = journal(state.ops_finished, self.e.db, run.id, run.entry.name, held)
    if not ok then return nil, err end
    local fseq, ferr = journal(state.add_findings, self.e.db, run.id, p.target, found, run.fseq)
    if not fseq then return nil, ferr end
    run.fseq = fseq
  end
  return send
end

-- Sends ops of plan p, recording each chunk. Returns send_chunks' result
-- and the Okta ids whose ops failed.
function Apply:send(run, p, ops)
  local e, summary, counts = self.e, self.summary, run.counts
  local applied, failed_ids, outcomes = 0, {}, {}
  local handover_failed = {}  -- lower account -> true: a hand-over of its leads failed
  local unrecorded = {}  -- outcomes of the chunks sent, recorded with the next chunk's intents

  local function finished(op, ok, info, code)
    -- (a plain success shares one result table: the journal only reads it)
    local result = ok and (info == nil and DONE or { ok = true, note = info }) or { ok = false, error = info, code = code }
    outcomes[#outcomes + 1] = { op, result }
    if not ok and op.kind == "handover_lead" then
      local why = tostring(info or "failed")
      handover_failed[op.name:lower()] = why .. ((code and not why:find(code, 1, true)) and (" [" .. code .. "]") or "")
    end
    if ok then
      summary.ok = summary.ok + 1
      counts[op.kind] = (counts[op.kind] or 0) + 1
    else
      if op.okta_id then failed_ids[op.okta_id] = true end
      self:failure(run)
      log.warn("%s %s %s failed: %s (%s)", p.target, op.kind, op.subject,
        tostring(info), tostring(code))
    end
    applied = applied + 1
    e.progress{ phase = "apply", name = p.target, state = "update", done = applied, total = #ops,
      what = "changes", op = op, ok = ok and true or false, info = info, code = code }
  end

  local function per_chunk(chunk)
    local send, err = self:withhold_leavers(run, p, chunk, handover_failed)
    if not send then return nil, err end
    local list = unrecorded
    unrecorded = {}
    local ok, serr = journal(state.ops_progress, e.db, run.id, run.entry.name, list, send)
    if not ok then return nil, serr end
    log.debug("journal %s: %d outcomes and %d intents (%s) in one commit", p.target, #list, #send,
      send[1] and send[1].kind or "-")
    return send
  end

  -- A chunk's outcomes wait for the next chunk's intents (one commit per
  -- chunk, not two), or for the end of this target's ops.
  local function done_chunk()
    table.move(outcomes, 1, #outcomes, #unrecorded + 1, unrecorded)
    outcomes = {}
    e:renew_locks()
    return true
  end

  local function halted()
    if e:stopping() then return "stopped" end
    if self.store_error then return true, self.store_error end
  end

  adds_by_group(ops)
  local res, err = send_chunks(e:target(p.target), ops, per_chunk, finished, done_chunk, halted)
  if #unrecorded > 0 then
    local ok, ferr = journal(state.ops_finished, e.db, run.id, run.entry.name, unrecorded)
    if not ok and res ~= false then res, err = false, ferr end
    if ok then log.debug("journal %s: %d outcomes and 0 intents in one commit", p.target, #unrecorded) end
  end
  return res, err, failed_ids
end

-- Applies plan p of the run. Returns false when the run must not go on
-- (stopped, or the store failed), else true.
function Apply:target(run, p)
  local e = self.e
  if e:stopping() then run.interrupted = true; return false end
  if self.store_error then return false end
  self:count_problems(run, p)
  local ops = self:sendable(p)
  local fseq, ferr = journal(state.record_findings, e.db, run.id, p, self.stop, DESTRUCTIVE, run.fseq)
  if not fseq then self:store_failed(ferr); return false end
  run.fseq = fseq
  local nseq, jerr = journal(state.record_plan, e.db, run.id, ops, run.seq)
  if not nseq then self:store_failed(jerr); return false end
  run.seq = nseq
  if #ops == 0 then return true end

  e.progress{ phase = "apply", name = p.target, state = "start", total = #ops, what = "changes",
    message = ("applying %d changes to %s"):format(#ops, p.target) }
  local res, err, failed_ids = self:send(run, p, ops)
  local sent = res and res ~= "stopped"
  e.progress{ phase = "apply", name = p.target, state = sent and "done" or "failed",
    error = res == "stopped" and "stopped on request" or err }

  if res == "stopped" then run.interrupted = true; return false end
  if res == false then self:store_failed(err); return false end
  if not res then
    self:failure(run)
    log.error("applying to %s stopped: %s", p.target, tostring(err))
    return true
  end

  -- New accounts that got every group of this run are onboarded.
  local done = {}
  for _, id in ipairs(p.new_ids or {}) do
    if not failed_ids[id] then done[#done + 1] = id end
  end
  local ok, merr = journal(state.mark_onboarded, e.db, run.entry.name, p.target, done)
  if not ok then self:store_failed(merr); return false end
  return true
end

-- Ends run `run` as its targets left it. Returns false when the apply
-- must not go on (the store failed, or stopped on request).
function Apply:end_run(run)
  local e, db, name = self.e, self.e.db, run.entry.name
  if self.store_error then
    -- Recorded if the store still takes it; if not, the next run marks
    -- the run interrupted and counts what its journal shows was done.
    self.summary.failed = self.summary.failed + 1
    pcall(state.end_run, db, run.id, "failed", run.counts, self.store_error)
    pcall(state.skip_pending, db, run.id, "not sent: the store could not be written")
    return false
  end

  if not run.interrupted and e:stopping() then run.interrupted = true end
  if run.interrupted then
    -- Stopped on request (SIGTERM under serve): what was not sent is
    -- skipped; the next run plans it again.
    state.skip_pending(db, run.id, "run interrupted (stop requested)")
    state.end_run(db, run.id, "interrupted", run.counts,
      "stopped on request before the run finished")
    db:unlock("sync:" .. name)
    self.summary.interrupted = true
    return false
  end

  local stop = self.stop
  local outcome = run.read_failed and "failed" or (run.failed > 0 and "partial" or (stop and "stopped" or "ok"))
  state.end_run(db, run.id, outcome, run.counts, stop and table.concat(stop, "; ") or nil)
  if e.cfg.history and e.cfg.history.keep then
    require("usersync.history").prune(db, e.cfg.history.keep)
  end
  db:unlock("sync:" .. name)
  return true
end

-- Applies the plans of the targets concurrently: each target runs in its
-- own coroutine (its plan order, its chunks one after the other, its own
-- concurrency limit), and a chunk it sends is polled here together with
-- the other targets' chunks, so every target's requests are in flight at
-- once on the shared http engine. A target that fails does not stop the
-- others; a stop request or a store failure stops each between chunks.
function Apply:targets(run, plans)
  local tasks = {}
  local function step(task, ...)
    local ok, a, b = coroutine.resume(task.co, ...)
    if not ok then error(debug.traceback(task.co, a), 0) end
    if coroutine.status(task.co) == "dead" then
      task.pending = nil
    else
      task.pending, task.finished = a, b
    end
  end

  for _, p in ipairs(plans) do
    local task = { co = coroutine.create(function() return self:target(run, p) end) }
    scheduled[task.co] = true
    tasks[#tasks + 1] = task
    step(task)
  end

  -- Polls one task's chunk; resumes the task when the chunk is done.
  local function poll(task, wait)
    local more, err = task.pending:poll(task.finished, wait)
    if more == nil then step(task, nil, err)
    elseif not more then step(task, true) end
  end

  -- Targets with their own CA file or timeout have their own http engine
  -- (Engine:http_client): then each target's poll drives its engine, a
  -- short while so that none waits on another's.
  local clients = {}
  for _, p in ipairs(plans) do
    local tcfg = self.e.cfg.targets[p.target] or {}
    clients[(tcfg.ca_file or "") .. "|" .. tostring(tcfg.timeout or "")] = true
  end
  local each = next(clients, next(clients)) and 0.005 or 0

  while true do
    local first
    for _, task in ipairs(tasks) do
      if task.pending then poll(task, each) end
      first = first or (task.pending and task)
    end
    if not first then break end
    -- nothing ready: wait on the shared engine (every target's requests)
    if each == 0 then poll(first, 0.2) end
  end
end

-- Applies the plan of one sync entry as one run. Returns false when the
-- apply must not go on.
function Apply:entry(entry)
  local db, summary = self.e.db, self.summary
  local lock_ok, lerr = db:lock("sync:" .. entry.name, { ttl = M.LOCK_TTL })
  if not lock_ok then
    summary.exit = M.EXIT_FAILED
    summary.error = lerr
    return false
  end

  local run_id, rerr = journal(state.begin_run, db, entry.name, self.e.trigger, self.command,
    self.scope, entry.only_targets and table.concat(entry.only_targets, ","))
  if not run_id then self:store_failed(rerr); return false end
  summary.runs[#summary.runs + 1] = run_id

  local run = { id = run_id, entry = entry, counts = { users_in_scope = entry.users_in_scope },
                failed = 0, seq = 0, interrupted = false }
  if entry.read and entry.read.failed then
    -- its source could not be read: nothing was planned, the run failed
    run.failed, run.read_failed = 1, true
    self:not_read("sources", entry.source)
  end
  self:targets(run, entry.targets)
  return self:end_run(run)
end

-- Applies run_plan with engine e. opts: { force, command = "sync"|"apply" }.
-- Returns summary = { exit, runs = {id...}, ok, failed, withheld, stop =
-- {reasons}, not_read = { sources = {name...}, targets = {name...} } }
-- (failed: operations that failed; not_read: what could not be read, so
-- nothing was planned for it; withheld: by the safety limit;
-- withheld_leads: deprovisions held back because a hand-over of the
-- account's leads failed).
function M.run(e, run_plan, opts)
  opts = opts or {}
  local stop, hard = report.safety(run_plan, { force = opts.force })
  local summary = { ok = 0, failed = 0, withheld = 0, runs = {}, stop = stop, stop_hard = hard,
                   exit = M.EXIT_OK, not_read = { sources = {}, targets = {} } }
  local self = setmetatable({ e = e, stop = stop, command = opts.command or "sync",
                              scope = run_plan.scope, summary = summary }, Apply)

  for _, entry in ipairs(run_plan.syncs) do
    if not self:entry(entry) then break end
  end
  e:unlock_entries()

  local store_error = self.store_error
  if store_error then summary.error = store_error end
  summary.exit = report.exit_code(run_plan, stop, summary.exit == M.EXIT_FAILED
    or summary.failed > 0 or (summary.problems or 0) > 0 or store_error)
  return summary
end

return M
