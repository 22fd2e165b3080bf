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

-- A chunk's plain successes (add_member, create_user: no note, no code)
-- are recorded a run at a time with one statement over a JSON array
-- (state.lua outcomes): the store must end exactly as recording them one
-- at a time (op_finished) leaves it, in list order, with the unusual ones
-- mixed in: an add for an account not linked (unsure), an add before its
-- account's create in the same list, notes, failures, two targets.
test("batched plain outcomes leave the store as one at a time does", function(t)
  local state = require "usersync.state"
  local function ops()
    local l = {
      { target = "jira", kind = "create_group", subject = "devs", group = "devs" },
      { target = "jira", kind = "create_user", subject = "ann", name = "ann", okta_id = "00u1" },
      { target = "jira", kind = "create_user", subject = "bob", name = "bob", okta_id = "00u2", id = "B-2" },
      { target = "jira", kind = "create_user", subject = "cat", name = "cat", okta_id = "00u3" },
      { target = "jira", kind = "add_member", subject = "ann", name = "ann", group = "devs", okta_id = "00u1", why = "mapping" },
      { target = "jira", kind = "add_member", subject = "bob", name = "bob", group = "devs", okta_id = "00u2" },
      { target = "jira", kind = "add_member", subject = "dan", name = "dan", group = "devs", okta_id = "00u4" },
      { target = "jira", kind = "add_member", subject = "eve", name = "eve", group = "devs", okta_id = "00u5" },
      { target = "jira", kind = "create_user", subject = "eve", name = "eve", okta_id = "00u5" },
      { target = "jira", kind = "add_member", subject = "cat", name = "cat", group = "ops", okta_id = "00u3" },
      { target = "jira", kind = "add_member", subject = "ann", name = "ann", group = "ops", okta_id = "00u1" },
      { target = "jira", kind = "add_member", subject = "bob", name = "bob", group = "ops", okta_id = "00u2" },
      { target = "jira", kind = "add_member", subject = "x", name = "x", group = "devs" },
      { target = "confluence", kind = "create_user", subject = "ann", name = "ann", okta_id = "00u1" },
      { target = "confluence", kind = "add_member", subject = "ann", name = "ann", group = "devs", okta_id = "00u1" },
      { target = "confluence", kind = "add_member", subject = "bob", name = "bob", group = "devs", okta_id = "00u2" },
      { target = "jira", kind = "add_member", subject = "ann", name = "ann", group = "Caf\u{e9}", okta_id = "00u1" },
      { target = "jira", kind = "create_user", subject = "fay", name = "F\u{e4}y \"q\"", okta_id = "00u6" },
    }
    return l
  end
  local results = {}
  for i = 1, 18 do results[i] = { ok = true } end
  results[11] = { ok = true, note = "already a member" }
  results[10] = { ok = false, error = "no such group", code = "ENOTFOUND" }
  results[12] = { ok = false, error = "timed out", code = "ETIMEOUT" }
  results[3] = { ok = true, note = "already exists" }

  local function record(batched)
    local path = os.tmpname()
    os.remove(path)
    local db = assert(state.open(path))
    local run = assert(state.begin_run(db, "main", "manual", "sync"))
    local l = ops()
    assert(state.record_plan(db, run, l))
    assert(state.ops_started(db, run, l))
    if batched then
      local list = {}
      for i, op in ipairs(l) do list[i] = { op, results[i] } end
      t:ok(state.ops_progress(db, run, "main", list, {}), "recorded")
    else
      for i, op in ipairs(l) do assert(state.op_finished(db, run, "main", op, results[i])) end
    end
    local out = {}
    for _, q in ipairs({
      "SELECT seq, status, error, code, unsure, started IS NOT NULL AS s, ended IS NOT NULL AS e FROM operations ORDER BY seq",
      "SELECT sync, target, okta_id, account_name, created_by_us, onboarded, account_id FROM links ORDER BY target, okta_id",
      "SELECT sync, target, group_name, okta_id, why FROM owned_memberships ORDER BY target, group_name, okta_id",
      "SELECT sync, target, group_name FROM owned_groups ORDER BY target, group_name" }) do
      for row in db:rows(q) do
        local keys, line = {}, {}
        for k in pairs(row) do keys[#keys + 1] = k end
        table.sort(keys)
        for _, k in ipairs(keys) do line[#line + 1] = k .. "=" .. tostring(row[k]) end
        out[#out + 1] = table.concat(line, " ")
      end
      out[#out + 1] = "--"
    end
    db:close()
    for _, suf in ipairs({ "", "-wal", "-shm" }) do os.remove(path .. suf) end
    return table.concat(out, "\n")
  end
  local one, batch = record(false), record(true)
  t:eq(batch, one, "the same rows")
  t:ok(one:find("group_name=devs okta_id=00u1 sync=main target=jira why=mapping", 1, true), "a linked account's add owned")
  t:ok(not one:find("okta_id=00u4", 1, true), "an add for an account not linked: not owned")
  print("# " .. one:gsub("\n", "\n# "))
end)

return test.done()
