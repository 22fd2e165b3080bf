-- The journal's group commit (issue 16): an apply records a chunk's
-- intents together with the outcomes of the chunk before, one store
-- commit per chunk instead of two, and the last outcomes when the
-- target's ops are done. Shown by the commits the apply logs (-v) and by
-- the journal they leave: every operation done, every intent and outcome
-- recorded, nothing sent twice.
local test = require "tap"
local world = require "support.world"

local N = 230 -- three chunks of create_user per target (apply.lua CHUNK = 100)

test("one journal commit per chunk: intents with the previous chunk's outcomes", function(t)
  local w <close> = world.new {
    sync = { groups = { mode = "manual", map = { Engineering = { "developers" } } } } }
  w:okta_group("00gEng", "Engineering")
  for i = 1, N do
    w:okta_user(("00u%04d"):format(i), ("user%04d@example.com"):format(i), { groups = { "00gEng" } })
  end
  w:load()
  local r = w:usersync("sync", "-v")
  t:eq(r.code, 0, r.stderr)

  for _, target in ipairs({ "jira", "confluence", "bitbucket" }) do
    local commits, outcomes, intents, chunks = {}, 0, 0, 0
    for o, i, kind in r.stderr:gmatch("journal " .. target .. ": (%d+) outcomes and (%d+) intents ?%(?([%w_-]*)%)? in one commit") do
      commits[#commits + 1] = { tonumber(o), tonumber(i), kind }
      outcomes, intents = outcomes + tonumber(o), intents + tonumber(i)
      if tonumber(i) > 0 then chunks = chunks + 1 end
    end
    print(("# %s: %d commits for %d intents"):format(target, #commits, intents))
    -- creates (3 chunks), the group, the adds: at least 5 chunks
    t:ok(chunks >= 5, ("%s: %d chunks"):format(target, chunks))
    t:eq(#commits, chunks + 1, target .. ": one commit per chunk and one for the last outcomes")
    t:eq(commits[1][1], 0, target .. ": the first chunk's intents come alone")
    for k = 2, #commits do
      t:ok(commits[k][1] > 0, ("%s: commit %d carries the outcomes of the chunk before"):format(target, k))
    end
    t:eq(commits[#commits][2], 0, target .. ": the last commit holds outcomes only")
    t:eq(outcomes, intents, target .. ": every intent's outcome recorded")
  end

  local db <close> = require("usersync.store").open(w.dir .. "/usersync.db")
  t:eq(db:first("SELECT count(*) AS n FROM operations WHERE status <> 'done'").n, 0, "every operation done")
  t:eq(db:first("SELECT count(*) AS n FROM operations WHERE started IS NULL OR ended IS NULL").n, 0,
    "every operation's intent and outcome recorded")
  t:eq(db:first("SELECT count(*) AS n FROM owned_memberships").n, 3 * N, "every membership owned")
  t:eq(#w:members_of("jira", "developers"), N)
  w:clear_requests()
  t:eq(w:usersync("sync").code, 0)
  t:eq(#w:writes("jira") + #w:writes("confluence") + #w:writes("bitbucket"), 0, "nothing left to do")
end)

test("a chunk's outcomes and the next chunk's intents are one transaction", function(t)
  local state = require "usersync.state"
  local path = os.tmpname()
  os.remove(path)
  local db <close> = assert(state.open(path))
  local run = assert(state.begin_run(db, "main", "manual", "sync"))
  local ops = {}
  for i = 1, 4 do
    ops[i] = { target = "jira", kind = "create_group", subject = "g" .. i, group = "g" .. i }
  end
  assert(state.record_plan(db, run, ops))
  assert(state.ops_started(db, run, { ops[1], ops[2] }))
  -- the next chunk's intents cannot be recorded (an op without its plan
  -- position): the outcomes are not recorded either
  local bad = { target = "jira", kind = "create_group", subject = "x", group = "x" }
  local ok = pcall(state.ops_progress, db, run, "main", { { ops[1], { ok = true } }, { ops[2], { ok = true } } },
    { ops[3], bad })
  t:ok(not ok, "refused")
  t:eq(db:first("SELECT count(*) AS n FROM operations WHERE status = 'running'").n, 2, "rolled back whole")
  t:ok(state.ops_progress(db, run, "main", { { ops[1], { ok = true } }, { ops[2], { ok = false, error = "no", code = "EINVALID" } } },
    { ops[3], ops[4] }))
  local st = {}
  for row in db:rows("SELECT seq, status FROM operations WHERE run_id = ? ORDER BY seq", run) do st[#st + 1] = row.status end
  t:eq(table.concat(st, ","), "done,failed,running,running")
  t:eq(db:first("SELECT count(*) AS n FROM owned_groups").n, 1, "the success's effect recorded")
  db:close()
  os.remove(path)
  os.remove(path .. "-wal")
  os.remove(path .. "-shm")
end)

return test.done()
