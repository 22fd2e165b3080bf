-- journal_cost.lua: the store's share of an apply's CPU per operation, without
-- HTTP: a run's plan recorded (state.record_plan), then its ops journaled as
-- apply.lua does (intents of a chunk with the outcomes of the chunk before in
-- one commit, chunks of apply.CHUNK creates and apply.ADD_CHUNK adds, the
-- last outcomes, the new accounts marked onboarded), in a fresh store.
--
--   build/usersync run tests/bench/journal_cost.lua [users=2000] [adds=7200]
--
-- Printed: CPU seconds and microseconds per op of each part, then the same
-- again in a store that skips CHECK constraints (PRAGMA
-- ignore_check_constraints): what the schema's CHECKs cost the journal
-- (SQLite 3.40 builds a temporary table for a CHECK's `IN (...)` list of
-- three values or more on every row written; schema version 7 wrote
-- operations.status and owned_memberships.why as comparisons, so the two
-- lines now differ by the json_valid and 0/1 checks). CPU from
-- os.clock; on a loaded machine run it a few times, or under
-- `valgrind --tool=callgrind` for instruction counts.
local state = require "usersync.state"
local apply = require "usersync.apply"

local NU = tonumber(arg and arg[1]) or 2000
local NA = tonumber(arg and arg[2]) or 7200
local NG = 80

local function ops_for()
  local creates, adds = {}, {}
  for i = 1, NU do
    creates[i] = { target = "jira", kind = "create_user", subject = "user" .. i, name = "user" .. i,
                   okta_id = ("00u%06d"):format(i), email = ("user%d@example.com"):format(i) }
  end
  for i = 1, NA do
    local u = (i % NU) + 1
    adds[i] = { target = "jira", kind = "add_member", subject = "user" .. u, name = "user" .. u,
                group = "group" .. (i % NG), okta_id = ("00u%06d"):format(u), why = "mapping" }
  end
  return creates, adds
end

local function run(nocheck)
  local path = os.tmpname()
  os.remove(path)
  local db = assert(state.open(path))
  if nocheck then assert(db:exec("PRAGMA ignore_check_constraints = 1")) end
  local run_id = assert(state.begin_run(db, "main", "manual", "sync"))
  local creates, adds = ops_for()
  local all = table.move(adds, 1, #adds, #creates + 1, table.move(creates, 1, #creates, 1, {}))
  local c0 = os.clock()
  assert(state.record_plan(db, run_id, all))
  local c1 = os.clock()
  local prev = {}
  local function chunks(list, size)
    for i = 1, #list, size do
      local chunk = table.move(list, i, math.min(i + size - 1, #list), 1, {})
      assert(state.ops_progress(db, run_id, "main", prev, chunk))
      prev = {}
      for j, o in ipairs(chunk) do prev[j] = { o, { ok = true } } end
    end
  end
  chunks(creates, apply.CHUNK)
  chunks(adds, apply.ADD_CHUNK)
  assert(state.ops_finished(db, run_id, "main", prev))
  local ids = {}
  for i, o in ipairs(creates) do ids[i] = o.okta_id end
  assert(state.mark_onboarded(db, "main", "jira", ids))
  local c2 = os.clock()
  local left = db:first("SELECT count(*) AS n FROM operations WHERE status <> 'done'").n
  assert(left == 0, left .. " ops not done")
  db:close()
  for _, s in ipairs({ "", "-wal", "-shm" }) do os.remove(path .. s) end
  local n = #all
  print(("%-24s %d ops: record_plan %.3f s (%.1f us/op); intents + outcomes + onboarded %.3f s (%.1f us/op); "
    .. "total %.1f us/op"):format(nocheck and "CHECKs skipped:" or "journal:", n, c1 - c0, (c1 - c0) * 1e6 / n,
    c2 - c1, (c2 - c1) * 1e6 / n, (c2 - c0) * 1e6 / n))
end

print(("journal cost: %d creates, %d adds (chunks of %d and %d); figures from a shared machine vary"):format(
  NU, NA, apply.CHUNK, apply.ADD_CHUNK))
run(false)
run(true)
