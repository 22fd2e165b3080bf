-- usersync.history: past runs and their operations from the store
-- (`usersync history`, `usersync show RUN`), and retention pruning.
--
--   local history = require "usersync.history"
--   local runs = history.runs(db, { limit = 20, sync = "main" })
--   io.write(history.runs_text(runs))
--   local run, ops = history.show(db, 12)
--   history.prune(db, 90 * 86400)     -- delete runs that ended over 90 days ago
local json = require "usersync.json"
local time = require "usersync.time"

local M = {}

local function duration(started, ended)
  local a, b = time.parse(started or ""), time.parse(ended or "")
  if not a or not b then return nil end
  return b - a
end

-- Runs, newest first: { id, sync, trigger, command, scope, started, ended,
-- duration, outcome, counts = {kind = n}, failed, error }.
function M.runs(db, opts)
  opts = opts or {}
  local sql = [[SELECT r.id, r.sync, r.trigger, r.command, r.scope, r.started, r.ended, r.outcome, r.counts, r.error,
      (SELECT count(*) FROM operations o WHERE o.run_id = r.id AND o.status = 'failed') AS failed
      FROM runs r WHERE (?1 IS NULL OR r.sync = ?1) ORDER BY r.id DESC LIMIT ?2]]
  local rows = assert(db:query(sql, opts.sync, opts.limit or 20))
  for _, r in ipairs(rows) do
    r.counts = r.counts and json.decode(r.counts) or json.object()
    r.duration = duration(r.started, r.ended)
  end
  return rows
end

-- One run and its operations in plan order; nil, message when unknown.
function M.show(db, id)
  local run = db:first([[SELECT id, sync, trigger, command, scope, started, ended, outcome, counts, error
      FROM runs WHERE id = ?]], id)
  if not run then return nil, ("no run %s in the store"):format(tostring(id)) end
  run.counts = run.counts and json.decode(run.counts) or json.object()
  run.duration = duration(run.started, run.ended)
  local ops = assert(db:query([[SELECT seq, target, kind, subject, okta_id, detail, status, error, code, started, ended
      FROM operations WHERE run_id = ? ORDER BY seq]], id))
  for _, o in ipairs(ops) do
    local d = o.detail and json.decode(o.detail)
    o.reason = d and d.reason or nil
    o.group = d and d.group or nil
    o.detail = nil
  end
  return run, ops
end

local function counts_text(counts)
  local parts = {}
  for _, kind in ipairs(require("usersync.plan").ORDER) do
    if counts[kind] then parts[#parts + 1] = ("%s %d"):format(kind, counts[kind]) end
  end
  return #parts > 0 and table.concat(parts, ", ") or "no changes"
end

function M.runs_text(runs)
  if #runs == 0 then return "no runs recorded yet\n" end
  local out = { ("%-5s %-24s %-18s %-11s %8s  %-11s %s"):format("RUN", "STARTED", "SYNC", "TRIGGER", "SECONDS", "OUTCOME", "CHANGES") }
  for _, r in ipairs(runs) do
    local changes = counts_text(r.counts)
    if r.failed > 0 then changes = changes .. (" (%d failed)"):format(r.failed) end
    out[#out + 1] = ("%-5d %-24s %-18s %-11s %8s  %-11s %s"):format(r.id, r.started, r.sync, r.trigger,
      r.duration and ("%.1f"):format(r.duration) or "-", r.outcome, changes)
  end
  return table.concat(out, "\n") .. "\n"
end

function M.show_text(run, ops)
  local out = {
    ("run %d: sync %s, %s (%s), %s -> %s, outcome %s"):format(run.id, run.sync, run.command or "?", run.trigger,
      run.started, run.ended or "(not ended)", run.outcome),
  }
  if run.error then out[#out + 1] = "error: " .. run.error end
  out[#out + 1] = "changes: " .. counts_text(run.counts)
  for _, o in ipairs(ops) do
    local what = o.subject .. (o.group and (" in " .. o.group) or "")
    out[#out + 1] = ("  %4d %-8s %-12s %-16s %-40s %s"):format(o.seq, o.status, o.target, o.kind, what,
      o.error and (o.error .. (o.code and (" [" .. o.code .. "]") or "")) or (o.reason or ""))
  end
  return table.concat(out, "\n") .. "\n"
end

-- Deletes runs (and their operations) that ended more than `keep` seconds
-- ago. Returns how many.
function M.prune(db, keep)
  local cutoff = time.format(time.now() - keep)
  local n = assert(db:exec("DELETE FROM runs WHERE ended IS NOT NULL AND ended < ?", cutoff))
  return n
end

return M
