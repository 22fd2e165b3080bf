-- usersync.history: past runs and their operations from the store
-- (`usersync history`, `usersync show RUN`), and retention pruning.
--
--   local history = require "usersync.history"
--   local runs = history.runs(db, { limit = 20, sync = "main" })
--   io.write(history.runs_text(runs))
--   local run, ops, findings = history.show(db, 12)
--   io.write(history.show_csv(run, ops, findings))
--   history.prune(db, 90 * 86400)     -- delete runs that ended over 90 days ago
local json = require "usersync.json"
local time = require "usersync.time"

local M = {}

-- Seconds between two timestamps, rounded to milliseconds.
local function duration(started, ended)
  local a, b = time.parse(started or ""), time.parse(ended or "")
  if not a or not b then return nil end
  return math.floor((b - a) * 1000 + 0.5) / 1000
end

-- What a run covered: "full", "user LOGIN", "users A,B", "event ...",
-- "incremental"; " on jira,wiki" when it was limited to those targets.
function M.covers(r)
  local on = r.targets and (" on " .. r.targets) or ""
  if r.trigger == "incremental" or r.trigger == "event" then
    return r.trigger .. (r.scope and (" " .. r.scope) or "") .. on
  end
  if not r.scope then return "full" .. on end
  return (r.scope:find(",", 1, true) and "users " or "user ") .. r.scope .. on
end

-- A run's counts: what it recorded, with the applied changes counted from
-- its journal (the rows 'done'), so a run that was killed or interrupted
-- before recording its end shows what it did.
local DONE = [[(SELECT json_group_object(kind, n) FROM (SELECT kind, count(*) AS n FROM operations o
      WHERE o.run_id = r.id AND o.status = 'done' GROUP BY kind))]]

local function finish(r)
  local counts = r.counts and json.decode(r.counts) or {}
  local done = r.done and json.decode(r.done) or {}
  local plan = require "usersync.plan"
  if next(done) then
    for _, kind in ipairs(plan.ORDER) do counts[kind] = done[kind] end
  end
  r.done = nil
  r.counts = next(counts) and counts or json.object()
  r.duration = duration(r.started, r.ended)
  r.covers = M.covers(r)
  return r
end

-- Runs, newest first: { id, sync, trigger, command, scope, covers,
-- started, ended, duration, outcome, counts = {kind = n}, failed,
-- unknown (sent, outcome not recorded), findings, error }.
function M.runs(db, opts)
  opts = opts or {}
  local sql = [[SELECT r.id, r.sync, r.trigger, r.command, r.scope, r.targets, r.started, r.ended, r.outcome, r.counts, r.error,
      (SELECT count(*) FROM operations o WHERE o.run_id = r.id AND o.status = 'failed') AS failed,
      (SELECT count(*) FROM operations o WHERE o.run_id = r.id AND o.status = 'running') AS unknown,
      (SELECT count(*) FROM findings f WHERE f.run_id = r.id) AS findings, ]] .. DONE .. [[ AS done
      FROM runs r WHERE (?1 IS NULL OR r.sync = ?1) ORDER BY r.id DESC LIMIT ?2]]
  local rows = assert(db:query(sql, opts.sync, opts.limit or 20))
  for _, r in ipairs(rows) do finish(r) end
  return rows
end

-- One run, its operations in plan order, its findings (what it could
-- not do) and each operation's decoded detail by seq (the status page
-- shows it); nil, message when unknown.
function M.show(db, id)
  local run = db:first([[SELECT r.id, r.sync, r.trigger, r.command, r.scope, r.targets, r.started, r.ended, r.outcome, r.counts,
      r.error, ]] .. DONE .. [[ AS done FROM runs r WHERE r.id = ?]], id)
  if not run then return nil, ("no run %s in the store"):format(tostring(id)) end
  finish(run)
  local ops = assert(db:query([[SELECT seq, target, kind, subject, okta_id, detail, status, error, code, started, ended,
      unsure FROM operations WHERE run_id = ? ORDER BY seq]], id))
  local details = {}
  for _, o in ipairs(ops) do
    o.unsure = o.unsure == 1
    local d = o.detail and json.decode(o.detail)
    details[o.seq] = d
    o.reason = d and d.reason or nil
    o.group = d and d.group or nil
    -- what a new or updated account is set to (an auditor reads it too)
    local changes = d and d.changes or {}
    o.display_name = d and (d.display_name or (changes.display_name and changes.display_name.to)) or nil
    o.email = d and (d.email or (changes.email and changes.email.to)) or nil
    o.detail = nil
  end
  local findings = assert(db:query([[SELECT seq, target, kind, subject, okta_id, op, message
      FROM findings WHERE run_id = ? ORDER BY seq]], id))
  return run, ops, findings, details
end

local function counts_text(counts)
  local parts = {}
  for _, kind in ipairs(require("usersync.plan").ORDER) do
    if counts[kind] then parts[#parts + 1] = ("%s %d"):format(kind, counts[kind]) end
  end
  return #parts > 0 and table.concat(parts, ", ") or "no changes"
end

local FINDING = { policy_error = "policy error", conflict = "conflict", unread = "read failed", withheld = "withheld" }

function M.runs_text(runs)
  if #runs == 0 then return "no runs recorded yet\n" end
  local fmt = "%-5s %-24s %-18s %-11s %-16s %8s  %-11s %s"
  local out = { fmt:format("RUN", "STARTED", "SYNC", "TRIGGER", "COVERS", "SECONDS", "OUTCOME", "CHANGES") }
  for _, r in ipairs(runs) do
    local changes = counts_text(r.counts)
    if r.failed > 0 then changes = changes .. (" (%d failed)"):format(r.failed) end
    if r.unknown > 0 then changes = changes .. (" (%d sent, outcome unknown)"):format(r.unknown) end
    if (r.findings or 0) > 0 then changes = changes .. (" (%d not done, see show)"):format(r.findings) end
    out[#out + 1] = fmt:format(r.id, r.started, r.sync, r.trigger, r.covers,
      r.duration and ("%.1f"):format(r.duration) or "-", r.outcome, changes)
  end
  return table.concat(out, "\n") .. "\n"
end

function M.show_text(run, ops, findings)
  local out = {
    ("run %d: sync %s, %s (%s), covers %s, %s -> %s, outcome %s"):format(run.id, run.sync, run.command or "?",
      run.trigger, run.covers, run.started, run.ended or "(not ended)", run.outcome),
  }
  if run.error then out[#out + 1] = "error: " .. run.error end
  out[#out + 1] = "changes: " .. counts_text(run.counts)
  for _, o in ipairs(ops) do
    local what = o.subject .. (o.group and (" in " .. o.group) or "")
    out[#out + 1] = ("  %4d %-8s %-12s %-16s %-40s %s"):format(o.seq, o.status, o.target, o.kind, what,
      o.error and (o.error .. (o.code and (" [" .. o.code .. "]") or "")) or (o.reason or ""))
  end
  if findings and #findings > 0 then
    out[#out + 1] = ("not done: %d"):format(#findings)
    for _, f in ipairs(findings) do
      local what = (f.op and (f.op .. " ") or "") .. (f.subject or "")
      out[#out + 1] = ("  %4d %-12s %-12s %-40s %s"):format(f.seq, FINDING[f.kind] or f.kind, f.target, what, f.message)
    end
  end
  return table.concat(out, "\n") .. "\n"
end

-- CSV (RFC 4180): a header row, fields quoted when they hold a comma, a
-- quote, CR or LF (quotes doubled), lines ended by CRLF. A field that
-- starts with = + - @, a tab or a CR gets a leading single quote, so a
-- spreadsheet shows it as text instead of running it as a formula (names
-- and messages come from Okta profiles: "=HYPERLINK(...)" is data here).
local function csv_field(v)
  if v == nil or v == json.null then return "" end
  v = tostring(v)
  if v:find("^[=+%-@\t\r]") then v = "'" .. v end
  if v:find('[,"\r\n]') then return '"' .. v:gsub('"', '""') .. '"' end
  return v
end

-- The CSV of rows (tables keyed by column name) under a header of columns;
-- usersync.accounts writes its CSV with it too.
local function csv(columns, rows)
  local out = {}
  local function line(vals)
    local f = {}
    for i = 1, #columns do f[i] = csv_field(vals[i]) end
    out[#out + 1] = table.concat(f, ",") .. "\r\n"
  end
  line(columns)
  for _, r in ipairs(rows) do
    local vals = {}
    for i, c in ipairs(columns) do vals[i] = r[c] end
    line(vals)
  end
  return table.concat(out)
end
M.csv = csv

M.RUN_COLUMNS = { "run", "sync", "trigger", "covers", "started", "ended", "seconds", "outcome", "changes",
                  "failed", "unknown", "not_done", "error" }
M.SHOW_COLUMNS = { "run", "seq", "target", "status", "kind", "subject", "group", "okta_id", "reason", "error",
                   "code", "started", "ended", "display_name", "email" }

-- history as CSV, one row per run (columns M.RUN_COLUMNS).
function M.runs_csv(runs)
  local rows = {}
  for _, r in ipairs(runs) do
    rows[#rows + 1] = { run = r.id, sync = r.sync, trigger = r.trigger, covers = r.covers, started = r.started,
      ended = r.ended, seconds = r.duration and ("%.3f"):format(r.duration), outcome = r.outcome,
      changes = counts_text(r.counts), failed = r.failed, unknown = r.unknown, not_done = r.findings, error = r.error }
  end
  return csv(M.RUN_COLUMNS, rows)
end

-- show as CSV: one row per operation, then one per finding (status
-- "not_done", kind policy_error/conflict/unread/withheld, the message in
-- error, a withheld change's kind in reason); columns M.SHOW_COLUMNS.
function M.show_csv(run, ops, findings)
  local rows = {}
  for _, o in ipairs(ops) do
    rows[#rows + 1] = { run = run.id, seq = o.seq, target = o.target, status = o.status, kind = o.kind,
      subject = o.subject, group = o.group, okta_id = o.okta_id, reason = o.reason, error = o.error, code = o.code,
      started = o.started, ended = o.ended, display_name = o.display_name, email = o.email }
  end
  for _, f in ipairs(findings or {}) do
    rows[#rows + 1] = { run = run.id, seq = "f" .. f.seq, target = f.target, status = "not_done", kind = f.kind,
      subject = f.subject, okta_id = f.okta_id, reason = f.op, error = f.message }
  end
  return csv(M.SHOW_COLUMNS, rows)
end

-- JSON (--json). usersync.history/1: { schema, runs = [ { id, sync,
-- trigger, command, scope?, targets? (--target), covers, started, ended?,
-- duration?, outcome,
-- counts = {kind = n}, failed, unknown, not_done, error? } ] } (unknown:
-- operations sent whose outcome the run did not record).
-- usersync.show/1: the run's fields as in history plus operations = [ {
-- seq, target, kind, subject, okta_id?, group?, reason?, display_name?,
-- email? (what a create or update sets), status, error?, code?, started?,
-- ended?, unsure } ] and findings = [ { seq, target,
-- kind, subject?, okta_id?, op?, message } ]. Lists are always arrays,
-- durations seconds rounded to milliseconds.
local function run_doc(r)
  r.not_done = r.findings
  r.findings = nil
  if r.targets then
    local list = {}
    for t in r.targets:gmatch("[^,]+") do list[#list + 1] = t end
    r.targets = json.array(list)
  end
  return r
end

function M.runs_json(runs)
  local list = {}
  for i, r in ipairs(runs) do list[i] = run_doc(r) end
  return assert(json.encode({ schema = "usersync.history/1", runs = json.array(list) }, { sort_keys = true }))
end

function M.show_json(run, ops, findings)
  local doc = run_doc(run)
  doc.not_done = #findings
  doc.schema = "usersync.show/1"
  doc.operations = json.array(ops)
  doc.findings = json.array(findings)
  return assert(json.encode(doc, { sort_keys = true }))
end

-- Deletes runs (and their operations) that ended more than `keep` seconds
-- ago. Returns how many.
function M.prune(db, keep)
  local cutoff = time.format(time.now() - keep)
  local n = assert(db:exec("DELETE FROM runs WHERE ended IS NOT NULL AND ended < ?", cutoff))
  return n
end

return M
