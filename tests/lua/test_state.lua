-- Tests of usersync.state: links, ownership and run records in the store,
-- as the engine uses them between and during runs.
local test = require "tap"
local state = require "usersync.state"

local function fresh()
  local path = os.tmpname()
  os.remove(path)
  return assert(state.open(path)), path
end

test("a created account is linked and its memberships owned; a rename keeps them", function(t)
  local db = fresh()
  local run = state.begin_run(db, "main", "manual", "sync")
  local ops = {
    { kind = "create_group", target = "jira", subject = "devs", group = "devs" },
    { kind = "create_user", target = "jira", subject = "ann", name = "ann", okta_id = "00u1" },
    { kind = "add_member", target = "jira", subject = "ann", name = "ann", group = "devs", okta_id = "00u1" },
  }
  t:eq(state.record_plan(db, run, ops), 3)
  for _, op in ipairs(ops) do
    state.op_started(db, run, op)
    t:ok(state.op_finished(db, run, "main", op, { ok = true }))
  end
  t:same(state.links(db, "main", "jira"), { ["00u1"] = "ann" })
  t:same(state.owned_memberships(db, "main", "jira"), { devs = { ann = true } })
  t:same(state.owned_groups(db, "jira"), { devs = "devs" })
  local op = { kind = "rename_user", target = "jira", subject = "ann", from = "ann", to = "Ann.Lee", okta_id = "00u1" }
  state.record_plan(db, run, { op }, 3)
  state.op_finished(db, run, "main", op, { ok = true })
  t:same(state.links(db, "main", "jira"), { ["00u1"] = "Ann.Lee" })
  t:same(state.owned_memberships(db, "main", "jira"), { devs = { ["ann.lee"] = true } })
  local rows = db:query("SELECT seq, kind, status FROM operations WHERE run_id = ? ORDER BY seq", run)
  t:eq(#rows, 4); t:eq(rows[2].kind, "create_user"); t:eq(rows[4].status, "done")
  state.end_run(db, run, "ok", { create_user = 1 })
  local r = db:first("SELECT outcome, counts FROM runs WHERE id = ?", run)
  t:eq(r.outcome, "ok"); t:eq(r.counts, '{"create_user":1}')
end)

test("already-existing results are not taken as ours; failures are recorded with code", function(t)
  local db = fresh()
  local run = state.begin_run(db, "main", "manual", "sync")
  local ops = {
    { kind = "create_group", target = "jira", subject = "g", group = "g" },
    { kind = "link", target = "jira", subject = "bob", name = "bob", okta_id = "00u2" },
    { kind = "add_member", target = "jira", subject = "bob", name = "bob", group = "g", okta_id = "00u2" },
    { kind = "create_user", target = "jira", subject = "eve", name = "eve", okta_id = "00u3" },
  }
  state.record_plan(db, run, ops)
  state.op_finished(db, run, "main", ops[1], { ok = true, note = "already exists" })
  state.op_finished(db, run, "main", ops[2], { ok = true })
  state.op_finished(db, run, "main", ops[3], { ok = true, note = "already a member" })
  state.op_finished(db, run, "main", ops[4], { ok = false, error = "no licence seat", code = "ESEATS" })
  t:same(state.owned_groups(db, "jira"), {})
  t:same(state.owned_memberships(db, "main", "jira"), {})
  t:same(state.links(db, "main", "jira"), { ["00u2"] = "bob" })
  local row = db:first("SELECT status, error, code FROM operations WHERE run_id = ? AND seq = 4", run)
  t:eq(row.status, "failed"); t:eq(row.error, "no licence seat"); t:eq(row.code, "ESEATS")
  row = db:first("SELECT status, error FROM operations WHERE run_id = ? AND seq = 3", run)
  t:eq(row.status, "done"); t:eq(row.error, "already a member")
end)

test("two sync entries may link one account; a delete drops every link to it", function(t)
  local db = fresh()
  local run = state.begin_run(db, "a", "manual", "sync")
  local a = { kind = "link", target = "jira", subject = "ann", name = "ann", okta_id = "00uA" }
  local b = { kind = "link", target = "jira", subject = "ANN", name = "ANN", okta_id = "00uB" }
  state.record_plan(db, run, { a, b })
  state.op_finished(db, run, "a", a, { ok = true })
  state.op_finished(db, run, "b", b, { ok = true })
  t:same(state.claims(db, "jira"), { ann = { a = "00uA", b = "00uB" } })
  local d = { kind = "delete_user", target = "jira", subject = "ann", name = "ann", okta_id = "00uA" }
  state.record_plan(db, run, { d }, 2)
  state.op_finished(db, run, "a", d, { ok = true })
  t:same(state.claims(db, "jira"), {})
end)

test("linkset leaves the store's page cache empty: the pages it read are not held while the target is planned", function(t)
  local db = fresh()
  assert(db:transaction(function()
    for i = 1, 5000 do
      local id = ("00u%06d"):format(i)
      assert(db:exec("INSERT INTO links (sync, target, okta_id, account_name) VALUES ('main', 'jira', ?, ?)",
        id, ("user%06d@example.com"):format(i)))
      assert(db:exec("INSERT INTO owned_memberships (sync, target, group_name, okta_id, why) VALUES ('main', 'jira', ?, ?, 'mapping')",
        "group-" .. i % 50, id))
    end
  end))
  db:release_cache()
  local n = 0
  for _ in db:rows("SELECT okta_id, account_name FROM links WHERE sync = 'main'") do n = n + 1 end
  t:eq(n, 5000)
  local held = db:release_cache()
  t:ok(held > 200 * 1024, ("a read of 5,000 links fills the cache: %d bytes"):format(held))
  local set = state.linkset(db, "main", "jira")
  t:eq(#set, 5000)
  local after = db:release_cache()
  t:ok(after < 64 * 1024, ("after state.linkset the cache holds %d bytes"):format(after))
end)

test("linkset holds what links, link_ids and owned_memberships read, for one entry and target", function(t)
  local db = fresh()
  local function link(sync, target, id, name, account_id)
    assert(db:exec("INSERT INTO links (sync, target, okta_id, account_name, account_id) VALUES (?, ?, ?, ?, ?)",
      sync, target, id, name, account_id))
  end
  local function own(sync, target, group, id, why)
    assert(db:exec("INSERT INTO owned_memberships (sync, target, group_name, okta_id, why) VALUES (?, ?, ?, ?, ?)",
      sync, target, group, id, why))
  end
  link("main", "jira", "00u1", "Ann.Lee", nil); link("main", "jira", "00u2", "bob", "id-2")
  link("main", "jira", "00u3", "carol", nil)
  link("main", "wiki", "00u1", "ann.lee", nil); link("other", "jira", "00u9", "zed", nil)
  own("main", "jira", "Devs", "00u1", "mapping"); own("main", "jira", "okta-synced", "00u1", "default")
  own("main", "jira", "okta-synced", "00u2", nil); own("main", "jira", "new-hires", "00u2", "new_user")
  own("main", "wiki", "devs", "00u1", "mapping"); own("other", "jira", "devs", "00u9", "mapping")

  local set = state.linkset(db, "main", "jira")
  local links, ids = state.links(db, "main", "jira"), state.link_ids(db, "main", "jira")
  local owned = state.owned_memberships(db, "main", "jira")
  t:eq(#set, 3)
  local listed = {}
  for i = 1, #set do
    local id, name = set:at(i)
    listed[id] = name
    t:eq(set:id(id), ids[id])
    t:eq(set:owner(name:upper()), id)
  end
  t:same(listed, links)
  t:eq(set:at(4), nil); t:eq(set:name("00u9"), nil); t:eq(set:owner("zed"), nil)
  t:eq(set:name("00u1"), "Ann.Lee"); t:eq(set:id("00u2"), "id-2"); t:eq(set:id("00u1"), nil)
  local groups = {}
  for g, v in pairs(set) do groups[g] = v end
  local want_groups = {}
  for g in pairs(owned) do want_groups[g] = true end
  t:same(groups, want_groups)
  for g, accounts in pairs(owned) do
    for a, why in pairs(accounts) do
      t:eq(set:why(g, a) == true or set:why(g, a), why == true or why, g .. " " .. a)
    end
  end
  t:eq(set:why("devs", "ANN.LEE"), "mapping"); t:eq(set:why("okta-synced", "bob"), true)
  t:eq(set:why("okta-synced", "carol"), nil)
  t:eq(set:why("devs", "bob"), nil); t:eq(set:why("Devs", "ann.lee"), nil) -- groups: lowercase
  t:eq(set:why("devs", "zed"), nil)
  t:eq(select(2, pcall(set.add, set, "00u7", "BOB")), "linkset: Okta id 00u7 or account BOB is linked already")
  t:eq(select(2, pcall(set.own, set, "g", "00u1", "why-not")):match("invalid option") ~= nil, true)
  t:eq(set:own("g", "00u404", "mapping"), false)
  -- a NUL byte would be stored cut short and never found: refused
  t:contains(select(2, pcall(set.add, set, "00u8", "dan\0x")), "bad argument #3 to '?' (contains a NUL byte)")
  t:contains(select(2, pcall(set.add, set, "00u8\0", "dan")), "bad argument #2 to '?' (contains a NUL byte)")
  t:contains(select(2, pcall(set.own, set, "g\0x", "00u1")), "(contains a NUL byte)")
  t:eq(set:name("00u8"), nil)
end)

test("a run left 'running' by a dead process is marked interrupted", function(t)
  local db = fresh()
  assert(db:exec("INSERT INTO runs (sync, trigger, pid, host) VALUES ('main', 'manual', 999999999, ?)",
    (io.open("/proc/sys/kernel/hostname"):read("l"))))
  local live = state.begin_run(db, "main", "manual", "sync")
  t:eq(state.mark_interrupted(db, "main"), 1)
  t:eq(db:first("SELECT outcome FROM runs WHERE id = ?", live).outcome, "running", "our own run stays")
  t:eq(db:first("SELECT count(*) AS n FROM runs WHERE outcome = 'interrupted'").n, 1)
end)

test("a run's and an operation's error are scrubbed of credentials when written; data columns are not", function(t)
  local db = fresh()
  local run = state.begin_run(db, "main", "manual", "sync")
  local op = { kind = "add_member", target = "jira", subject = "site-admins-owner", name = "site-admins-owner",
               group = "site-admins", okta_id = "00u1" }
  state.record_plan(db, run, { op })
  state.op_finished(db, run, "main", op, { ok = false, code = "EHTTP",
    error = "HTTP 502: proxy echo (Authorization: SSWS 00aBcDeF0123456789xyz; Cookie: JSESSIONID=F00BA4)" })
  state.end_run(db, run, "partial", {}, 'read failed: {"Authorization":"Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"}')
  local o = db:first("SELECT subject, detail, error FROM operations WHERE run_id = ?", run)
  t:eq(o.error, "HTTP 502: proxy echo (Authorization: SSWS ********; Cookie: ********")
  t:eq(o.subject, "site-admins-owner")
  t:contains(o.detail, '"group":"site-admins"')
  t:eq(db:first("SELECT error FROM runs WHERE id = ?", run).error, 'read failed: {"Authorization":"Bearer ********"}')
end)

test("mark_onboarded marks the accounts listed and drops their returning groups, no others", function(t)
  local db = fresh()
  for i, id in ipairs({ "00u1", "00u2", "00u3" }) do
    db:exec([[INSERT INTO links (sync, target, okta_id, account_name, created_by_us, onboarded)
        VALUES ('main', 'jira', ?, ?, 1, 0)]], id, "user" .. i)
    db:exec([[INSERT INTO links (sync, target, okta_id, account_name, created_by_us, onboarded)
        VALUES ('main', 'bitbucket', ?, ?, 1, 0)]], id, "user" .. i)
    db:exec([[INSERT INTO returning_groups (sync, target, okta_id, group_name) VALUES ('main', 'jira', ?, 'lic')]], id)
  end
  t:ok(state.mark_onboarded(db, "main", "jira", { "00u1", "00u3" }))
  t:ok(state.mark_onboarded(db, "main", "jira", {}), "nothing to mark")
  local on = {}
  for row in db:rows("SELECT target, okta_id FROM links WHERE onboarded = 1 ORDER BY target, okta_id") do
    on[#on + 1] = row.target .. ":" .. row.okta_id
  end
  t:eq(table.concat(on, ","), "jira:00u1,jira:00u3")
  t:same(state.new_accounts(db, "main", "jira"), { user2 = "00u2" })
  local back = {}
  for row in db:rows("SELECT okta_id FROM returning_groups ORDER BY okta_id") do back[#back + 1] = row.okta_id end
  t:eq(table.concat(back, ","), "00u2")
end)

test("record_plan records each op's row as given, across its statements of PLAN_ROWS rows", function(t)
  local db = fresh()
  local run = state.begin_run(db, "main", "manual", "sync")
  local saved = state.PLAN_ROWS
  state.PLAN_ROWS = 2
  local ops = {
    { kind = "create_group", target = "jira", subject = "devs", group = "devs" },
    { kind = "create_user", target = "jira", subject = "Zo\u{eb} \"q\" \\", name = "Zo\u{eb}", okta_id = "00u1",
      email = "z@example.com" },
    { kind = "add_member", target = "jira", subject = "zoe", name = "zoe", group = "devs", okta_id = "00u1", why = "mapping" },
    { kind = "remove_member", target = "bitbucket", subject = "x in g", name = "x", group = "g" },
    { kind = "update_user", target = "confluence", subject = "", okta_id = "00u2", set = { email = "a@b" } },
  }
  local ok, n = pcall(state.record_plan, db, run, ops, 10)
  state.PLAN_ROWS = saved
  t:ok(ok, tostring(n))
  t:eq(n, 15, "the next base")
  local rows = db:query("SELECT seq, target, kind, subject, okta_id, detail, status FROM operations WHERE run_id = ? ORDER BY seq", run)
  t:eq(#rows, 5)
  for i, op in ipairs(ops) do
    local r = rows[i]
    t:eq(r.seq, 10 + i); t:eq(op.run_seq, 10 + i)
    t:eq(r.target, op.target); t:eq(r.kind, op.kind); t:eq(r.subject, op.subject); t:eq(r.okta_id, op.okta_id)
    t:eq(r.status, "pending")
    local d = require("usersync.json").decode(r.detail)
    t:eq(d.group, op.group); t:eq(d.name, op.name); t:eq(d.why, op.why); t:eq(d.kind, nil)
  end
  t:eq(rows[2].subject, "Zo\u{eb} \"q\" \\", "the exact text")
  t:eq(math.type(rows[1].seq), "integer")
  t:eq(require("usersync.json").decode(rows[5].detail).set.email, "a@b")
end)

return test.done()
