-- Tests of `usersync history` and `usersync show` on a store written the
-- way the engine writes it, and of retention pruning.
local test = require "tap"
local proc = require "support.proc"
local state = require "usersync.state"
local history = require "usersync.history"
local json = require "usersync.json"

local BIN = os.getenv("USERSYNC")
local dir = os.tmpname(); os.remove(dir); os.execute("mkdir -p " .. dir)
local db_path = dir .. "/usersync.db"
local conf = proc.tempfile(([[
return {
  state = %q,
  sources = { okta = { type = "okta", url = "https://x.okta.com", token = "tok-123456" } },
  targets = { jira = { type = "jira", url = "https://jira.example.com", token = "pat-abcdef" } },
  sync = { { name = "main", source = "okta", targets = { "jira" } } },
}]]):format(db_path), ".conf.lua")

local db = assert(state.open(db_path))
local run1 = state.begin_run(db, "main", "manual", "sync")
local ops = {
  { kind = "create_user", target = "jira", subject = "ann", name = "ann", okta_id = "00u1", reason = "ann is in scope and has no account" },
  { kind = "add_member", target = "jira", subject = "ann", name = "ann", group = "devs", okta_id = "00u1", reason = "group rules" },
  { kind = "create_user", target = "jira", subject = "bob", name = "bob", okta_id = "00u2", reason = "bob is in scope" },
}
state.record_plan(db, run1, ops)
state.op_finished(db, run1, "main", ops[1], { ok = true })
state.op_finished(db, run1, "main", ops[2], { ok = true, note = "already a member" })
state.op_finished(db, run1, "main", ops[3], { ok = false, error = "HTTP 400: username invalid", code = "EHTTP" })
state.end_run(db, run1, "partial", { create_user = 2, add_member = 1 })
local run2 = state.begin_run(db, "main", "schedule", "sync")
state.end_run(db, run2, "ok", {})
db:close()

test("usersync history lists runs newest first with counts, failures and outcome", function(t)
  local r = proc.run({ BIN, "history", "-c", conf })
  t:eq(r.code, 0, r.stderr)
  local lines = {}
  for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
  t:match(lines[1], "^RUN +STARTED +SYNC +TRIGGER +COVERS +SECONDS +OUTCOME +CHANGES")
  t:match(lines[2], "^" .. run2 .. " +%S+ +main +schedule +full +[%d.]+ +ok +no changes$")
  -- the changes are what the journal shows done (bob's create failed),
  -- not the counts the run wrote
  t:match(lines[3], "^" .. run1 .. " +%S+ +main +manual +full +[%d.]+ +partial +create_user 1, add_member 1 %(1 failed%)$")
  local j = proc.run({ BIN, "history", "--json", "-c", conf, "--limit", "1" })
  local doc = assert(json.decode(j.stdout))
  t:eq(doc.schema, "usersync.history/1")
  t:eq(#doc.runs, 1); t:eq(doc.runs[1].id, run2); t:eq(doc.runs[1].trigger, "schedule")
end)

test("usersync show lists every operation with result and error", function(t)
  local r = proc.run({ BIN, "show", tostring(run1), "-c", conf })
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "run " .. run1 .. ": sync main, sync (manual)")
  t:match(r.stdout, "1 done +jira +create_user +ann +ann is in scope and has no account")
  t:match(r.stdout, "2 done +jira +add_member +ann in devs +already a member")
  t:match(r.stdout, "3 failed +jira +create_user +bob +HTTP 400: username invalid %[EHTTP%]")
  local j = proc.run({ BIN, "show", "--json", tostring(run1), "-c", conf })
  local doc = assert(json.decode(j.stdout))
  t:eq(#doc.operations, 3); t:eq(doc.operations[3].code, "EHTTP"); t:eq(doc.outcome, "partial")
  r = proc.run({ BIN, "show", "999", "-c", conf })
  t:eq(r.code, 2); t:contains(r.stderr, "no run 999 in the store")
  r = proc.run({ BIN, "show", "-c", conf })
  t:eq(r.code, 2); t:contains(r.stderr, "which run?")
end)

test("retention prunes old runs and their operations", function(t)
  local db2 = assert(state.open(db_path))
  db2:exec("UPDATE runs SET ended = '2020-01-01T00:00:00.000Z' WHERE id = ?", run1)
  t:eq(history.prune(db2, 90 * 86400), 1)
  t:eq(db2:first("SELECT count(*) AS n FROM operations").n, 0)
  t:eq(#history.runs(db2), 1)
  db2:close()
end)

local out = test.done()
os.execute("rm -rf " .. dir)
return out
