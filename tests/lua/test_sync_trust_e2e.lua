-- End-to-end data-safety scenarios (issue 12): the real `usersync` binary
-- against the simulators, with their fault injection and kill -9, asserting
-- what the targets hold, what the store recorded and what was sent.
local test = require "tap"
local world = require "support.world"
local store = require "usersync.store"
local state = require "usersync.state"
local proc = require "support.proc"

local MANUAL = { groups = { mode = "manual", map = { Engineering = { "developers" }, Ops = { "operations" } } },
                 defaults = { new_users = { "new-hires" }, all_users = { "okta-synced" } } }

local base_world = world.small

local function db_of(w) return assert(store.open(w.dir .. "/usersync.db")) end

local function count(list, fn)
  local n = 0
  for _, x in ipairs(list) do if fn(x) then n = n + 1 end end
  return n
end

test("sync takes the lock before reading: a second run fails at once, names the holder, reads nothing", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "jira" } }
  t:eq(w:usersync("sync").code, 0)
  w:clear_requests()
  local db <close> = db_of(w)
  assert(db:lock("sync:main", { ttl = 600 }))
  local r = w:usersync("sync")
  t:eq(r.code, 1, "refused by the lock: exit 1")
  t:contains(r.stderr, "pid " .. state.pid(), "names the holder's pid")
  t:contains(r.stderr, "another run of sync \"main\" is in progress")
  t:ok(not r.stdout:find("run ", 1, true), "no run id printed: " .. r.stdout)
  t:eq(#w.okta:requests(), 0, "Okta was not read")
  t:eq(#w.jira:requests(), 0, "Jira was not read")
  t:eq(db:first("SELECT count(*) AS n FROM runs").n, 1, "no run recorded for the refused sync")
  db:unlock("sync:main")
  t:eq(w:usersync("sync").code, 0, "free again once released")
end)

test("add_member answered 502 after the write: owned on the next run, so removed when the user leaves the group", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "jira" } }
  w.jira:faults{ fail_rate = 1, fail_status = 502, fail_path = "^/rest/api/2/group/user$", fail_after = true }
  local r = w:usersync("sync")
  t:eq(r.code, 1, "the lost answers are failures of this run")
  w.jira:faults{}
  t:same(w:members_of("jira", "developers"), { "ann.lee@example.com", "bob.stone@example.com" }, "the adds reached Jira")
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr .. r.stdout)
  local db <close> = db_of(w)
  t:eq(db:first([[SELECT count(*) AS n FROM owned_memberships WHERE lower(group_name) = 'developers']]).n, 2,
    "the intended adds found in Jira are owned")
  t:eq(db:first("SELECT count(*) AS n FROM operations WHERE status = 'running' OR unsure = 1").n, 0, "journal settled")
  -- ann leaves Engineering: the membership usersync added is removed (keep_existing keeps only others)
  w.members["00gEng"] = { "00u2" }
  w:load()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:same(w:members_of("jira", "developers"), { "bob.stone@example.com" }, "ann's membership removed")
end)

test("create_user answered 502 after the write: the next run records a creation and gives the new-user groups", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "jira" } }
  w.jira:faults{ fail_rate = 1, fail_status = 502, fail_path = "^/rest/api/2/user$", fail_after = true }
  local r = w:usersync("sync")
  t:eq(r.code, 1, "the lost answers are failures of this run")
  t:ok(not r.stderr:find("FOREIGN KEY", 1, true) and not r.stderr:find("traceback", 1, true), r.stderr)
  w.jira:faults{}
  t:eq(#world.clone((function() local k = {} for n in pairs(w:accounts("jira")) do k[#k + 1] = n end return k end)()), 3,
    "the accounts were created")
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr .. r.stdout)
  t:same(w:members_of("jira", "new-hires"), { "ann.lee@example.com", "bob.stone@example.com", "carol.king@example.com" },
    "created accounts get defaults.new_users")
  local db <close> = db_of(w)
  t:eq(db:first("SELECT count(*) AS n FROM links WHERE created_by_us = 1").n, 3, "recorded as created by usersync")
  t:eq(db:first("SELECT count(*) AS n FROM owned_memberships").n, 9, "every membership usersync added is owned")
  w:clear_requests()
  t:eq(w:usersync("sync").code, 0)
  t:eq(#w:writes("jira"), 0, "converged")
end)

-- A world of n users in Engineering, Jira only, slowed down so a run can be
-- killed (or run out of disk) in the middle of its writes.
local function big_world(n)
  local w = world.new { sync = MANUAL, products = { "jira" } }
  w:okta_group("00gEng", "Engineering")
  for i = 1, n do w:okta_user(("00u%04d"):format(i), ("user%03d@example.com"):format(i), { groups = { "00gEng" } }) end
  w:load()
  return w
end

-- Starts `usersync sync` in the background; returns its pid. prefix: shell
-- text run first (e.g. a ulimit).
local function spawn(w, prefix)
  local cmd = ("%s US_TEST_OKTA_TOKEN=test-token US_TEST_ATL_TOKEN=test-token USERSYNC_LOG_LEVEL=warn NO_COLOR=1 exec %s sync -c %s >%s 2>%s </dev/null"):format(
    prefix or "", proc.quote(os.getenv("USERSYNC")), proc.quote(w.config), proc.quote(w.dir .. "/bg.out"), proc.quote(w.dir .. "/bg.err"))
  local f = io.popen("sh -c " .. proc.quote(cmd) .. " & echo $!")
  local pid = f:read("l")
  f:close()
  return pid
end

-- Running (a zombie, killed but not yet reaped, is not).
local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local st = (f:read("a") or ""):match("%) (%a)")
  f:close()
  return st ~= nil and st ~= "Z" and st ~= "X"
end

local function wait_gone(pid)
  for _ = 1, 6000 do
    if not alive(pid) then return true end
    os.execute("sleep 0.05")
  end
  return false
end

test("kill -9 mid-apply: the next run owns what was sent, counts the killed run truthfully, duplicates nothing", function(t)
  local w <close> = big_world(40)
  w.jira:faults{ latency_ms = 60 }
  local pid = spawn(w)
  local adds = 0
  for _ = 1, 1200 do
    adds = w.jira:count{ path = "^/rest/api/2/group/user$", method = "POST" }
    if adds >= 15 or not alive(pid) then break end
    os.execute("sleep 0.02")
  end
  t:ok(alive(pid), "still applying when killed")
  os.execute("kill -9 " .. pid)
  t:ok(wait_gone(pid), "killed")
  w.jira:faults{}
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr .. r.stdout)
  local accounts = 0
  for _ in pairs(w:accounts("jira")) do accounts = accounts + 1 end
  t:eq(accounts, 40, "no duplicates, nobody missing")
  local members = #w:members_of("jira", "developers") + #w:members_of("jira", "new-hires") + #w:members_of("jira", "okta-synced")
  t:eq(members, 120)
  local db <close> = db_of(w)
  t:eq(db:first("SELECT count(*) AS n FROM owned_memberships").n, members, "every membership usersync added is owned")
  t:eq(db:first("SELECT count(*) AS n FROM operations WHERE status = 'running' OR unsure = 1").n, 0, "journal settled")
  local first = db:first("SELECT outcome, counts FROM runs ORDER BY id LIMIT 1")
  t:eq(first.outcome, "interrupted")
  local counts = require("usersync.json").decode(first.counts)
  t:eq(counts.create_user, 40, "the killed run's creates are counted: " .. first.counts)
  t:ok((counts.add_member or 0) >= adds, ("its adds too (%d served before the kill): %s"):format(adds, first.counts))
  -- the adds of the killed run are owned: a user leaving Engineering loses developers
  w.members["00gEng"] = { "00u0002" }
  for i = 3, 40 do table.insert(w.members["00gEng"], ("00u%04d"):format(i)) end
  w:load()
  t:eq(w:usersync("sync").code, 0)
  t:eq(#w:members_of("jira", "developers"), 39, "user001 removed from developers")
end)

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n
end

test("a full disk mid-apply: nothing is sent that was not recorded; the message names the store; the run is counted truthfully", function(t)
  -- The store's files may grow a few hundred KB past the store's size
  -- (ulimit -f, 1 KB blocks; SIGXFSZ ignored: a write past it fails with
  -- EFBIG, as on a full disk). The first margin with which the disk fills
  -- up in the middle of the writes is the scenario (~350 KB here).
  local w, creates, adds, err, dbpath
  for _, margin in ipairs({ 300, 350, 400, 250, 500, 200, 650 }) do
    w = big_world(60)
    t:eq(w:usersync("plan").code, 0, "plan creates the store")
    dbpath = w.dir .. "/usersync.db"
    local limit = math.floor(file_size(dbpath) / 1024) + margin
    local pid = spawn(w, ("trap '' XFSZ; ulimit -f %d;"):format(limit))
    t:ok(wait_gone(pid), "the run ended")
    err = proc.slurp(w.dir .. "/bg.err")
    creates = w.jira:count{ path = "^/rest/api/2/user$", method = "POST", status = 201 }
    adds = w.jira:count{ path = "^/rest/api/2/group/user$", method = "POST", status = 201 }
    if creates + adds > 0 and creates + adds < 240 then break end
    w:close()
    w = nil
  end
  if not w then t:fail("no margin made the disk fill up in the middle of the apply"); return end
  local _ <close> = w
  print(("# served before the disk was full: %d creates, %d adds"):format(creates, adds))
  t:contains(err, "cannot record the run in the store " .. dbpath .. ": ", "names the file and why")
  t:ok(not err:find("traceback", 1, true) and not err:find("FOREIGN KEY", 1, true), "no Lua traceback, no FK error: " .. err)
  local db <close> = db_of(w)
  local intents = db:first([[SELECT sum(kind = 'create_user') AS c, sum(kind = 'add_member') AS a FROM operations
      WHERE status IN ('running', 'done', 'failed')]])
  t:ok((intents.c or 0) >= creates and (intents.a or 0) >= adds,
    ("every write sent had its intent recorded first: %d/%d creates, %d/%d adds"):format(intents.c or 0, creates, intents.a or 0, adds))
  db:close()
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr .. r.stdout)
  local n = 0
  for _ in pairs(w:accounts("jira")) do n = n + 1 end
  t:eq(n, 60, "no duplicates")
  t:eq(#w:members_of("jira", "new-hires"), 60, "every account usersync created got its new-user group")
  local db2 <close> = db_of(w)
  local first = db2:first("SELECT outcome, counts, error FROM runs WHERE command = 'sync' ORDER BY id LIMIT 1")
  t:ok(first.outcome == "failed" or first.outcome == "interrupted", first.outcome)
  local counts = require("usersync.json").decode(first.counts or "{}")
  t:eq(counts.create_user or 0, creates, "the full-disk run's creates are counted: " .. tostring(first.counts))
  t:eq(counts.add_member or 0, adds, "and its adds")
end)

local function with(t, extra)
  local c = world.clone(t)
  for k, v in pairs(extra) do c[k] = v end
  return c
end

test("limits.max_membership_removals: exceeded -> withheld, exit 3; --force applies them", function(t)
  local w <close> = base_world { sync = with(MANUAL, { limits = { max_membership_removals = 1 } }), products = { "jira" } }
  t:eq(w:usersync("sync").code, 0)
  w.members["00gEng"] = {}
  w:load()
  local r = w:usersync("sync")
  t:eq(r.code, 3, r.stderr)
  t:contains(r.stderr, 'sync "main", target jira: 2 membership removals planned, limits.max_membership_removals = 1 allows 1 of 9 managed memberships')
  t:same(w:members_of("jira", "developers"), { "ann.lee@example.com", "bob.stone@example.com" }, "nothing removed")
  r = w:usersync("sync", "--force")
  t:eq(r.code, 0, r.stderr)
  t:same(w:members_of("jira", "developers"), {}, "removed after review with --force")
end)

test("limits.max_membership_removals as a percentage of the managed memberships; validated by check", function(t)
  local w <close> = base_world { sync = with(MANUAL, { limits = { max_membership_removals = "20%" } }), products = { "jira" } }
  t:eq(w:usersync("sync").code, 0)
  w.members["00gEng"] = { "00u2" }
  w:load()
  local r = w:usersync("sync")
  t:eq(r.code, 0, "1 removal of 9 managed memberships is within 20%: " .. r.stderr)
  t:same(w:members_of("jira", "developers"), { "bob.stone@example.com" })
  w.members["00gEng"] = {}
  w.members["00gOps"] = {}
  w:load()
  r = w:usersync("sync")
  t:eq(r.code, 3, "2 of 8 is over 20%")
  t:contains(r.stderr, "limits.max_membership_removals = 20% allows 1 of 8 managed memberships")
  w:write_config(with(MANUAL, { limits = { max_membership_removals = "lots" } }))
  r = w:usersync("check")
  t:eq(r.code, 2, r.stderr)
  t:contains(r.stderr, "limits.max_membership_removals")
end)

test("membership removals are withheld when the read is incomplete (a policy error deciding a group)", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "jira" } }
  t:eq(w:usersync("sync").code, 0)
  w.members["00gEng"] = { "00u2" }
  w:load()
  local pol = proc.tempfile([[return { include_group = function(g)
    if g.profile.name == "Ops" then error("cannot decide Ops") end
    return true
  end }]], ".lua")
  w:write_config(with(MANUAL, { policy = pol }))
  local r = w:usersync("sync")
  os.remove(pol)
  t:eq(r.code, 1, r.stderr) -- a policy error is a failure; the safety stop still withholds the removals
  t:contains(r.stderr, "the read did not complete")
  t:same(w:members_of("jira", "developers"), { "ann.lee@example.com", "bob.stone@example.com" }, "nothing removed")
end)

test("Jira: a lead whose hand-over fails is not deactivated; the next run hands over and deactivates", function(t)
  local jira = { users = { { name = "svc-admin", key = "K0", displayName = "Service", emailAddress = "svc@example.com", active = true } },
                 groups = {}, members = {}, projects = {}, components = {} }
  local w <close> = base_world { products = { "jira" }, jira = jira,
    sync = { users = { project_lead = "svc-admin", component_lead = "svc-admin" } } }
  t:eq(w:usersync("sync").code, 0)
  local st = w.jira:state()
  st.projects = { { key = "ABC", name = "Alpha", lead = "bob.stone@example.com" } }
  st.components = { { id = "10001", project = "ABC", name = "Core", lead = "bob.stone@example.com" } }
  w.jira:put_state(st)
  w.app_users = { "00u1", "00u3" }
  w:load()
  w.jira:faults{ fail_rate = 1, fail_status = 500, fail_path = "^/rest/api/2/project/ABC$" }
  local r = w:usersync("sync")
  t:eq(r.code, 1, r.stderr)
  t:contains(r.stdout, "1 deprovision(s) withheld (a hand-over of leads failed)")
  t:eq(w:accounts("jira")["bob.stone@example.com"].active, true, "not deactivated while he still leads ABC")
  t:eq(w.jira:count{ path = "^/rest/api/2/user$", method = "PUT" }, 0, "no deactivation sent")
  -- the withheld deprovision is kept with the run, with the hand-over's error
  r = w:usersync("show", "2")
  t:eq(r.code, 0, r.stderr)
  t:match(r.stdout, "not done: 1\n +1 withheld +jira +deactivate_user bob%.stone@example%.com +a hand%-over of its "
    .. "project or component leads failed %([^\n]*500[^\n]*%); kept, the next run tries again\n")
  local doc = require("usersync.json").decode(w:usersync("show", "--json", "2").stdout)
  t:eq(#doc.findings, 1, "one finding")
  local f = doc.findings[1] or {}
  t:eq(f.kind, "withheld"); t:eq(f.op, "deactivate_user"); t:eq(f.okta_id, "00u2"); t:eq(f.target, "jira")
  t:eq(doc.not_done, 1)
  t:match(w:usersync("history").stdout, "%(1 not done, see show%)")
  w.jira:faults{}
  r = w:usersync("plan")
  t:match(r.stdout, "hand over leads +bob%.stone@example%.com", "the next run plans the hand-over again")
  t:match(r.stdout, "deactivate +bob%.stone@example%.com", "and the deactivation")
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  st = w.jira:state()
  t:eq(st.projects[1].lead, "svc-admin")
  t:eq(st.components[1].lead, "svc-admin")
  t:eq(w:accounts("jira")["bob.stone@example.com"].active, false)
end)

test("two entries sharing targets: an account neither maps any more is deprovisioned once", function(t)
  local w <close> = base_world { products = { "confluence", "bitbucket" }, sync = {
    { name = "first", source = "okta", groups = { map = { Engineering = "developers" } } },
    { name = "second", source = "okta", groups = { map = { Engineering = "developers", Ops = "operations" } } },
  } }
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  w.app_users = { "00u1", "00u3" }
  w:load()
  w:clear_requests()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:eq(w:accounts("confluence")["bob.stone@example.com"].disabled, true)
  t:eq(w.confluence:count{ path = "/disable$", method = "PUT" }, 1, "Confluence disable sent once")
  t:same(w:members_of("bitbucket", "developers"), { "ann.lee@example.com" })
  t:eq(#w:writes("bitbucket"), 2, "one removal per Bitbucket group bob was in (developers, stash-users)")
  t:contains(r.stdout, 'deprovisioned by sync "first" in this run')
  w:clear_requests()
  t:eq(w:usersync("sync").code, 0)
  t:eq(#w:writes("confluence") + #w:writes("bitbucket"), 0, "stable")
end)

test("defaults.new_users stays once given as a default, but goes with the mapping that gave it", function(t)
  local cfg = { groups = { mode = "manual", map = { Engineering = { "developers", "new-hires" } } },
                defaults = { new_users = { "new-hires" } } }
  local w <close> = base_world { sync = cfg, products = { "jira" },
    jira = { users = { { name = "ann.lee@example.com", key = "JIRAUSER1", displayName = "ann lee", emailAddress = "ann.lee@example.com", active = true } },
             groups = {}, members = {} } }
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:same(w:members_of("jira", "new-hires"), { "ann.lee@example.com", "bob.stone@example.com", "carol.king@example.com" },
    "ann (adopted) through the mapping, bob through both, carol as a new user")
  local db <close> = db_of(w)
  local why = {}
  for row in db:rows([[SELECT l.account_name, m.why FROM owned_memberships m JOIN links l USING (sync, target, okta_id)
      WHERE m.group_name = 'new-hires']]) do why[row.account_name] = row.why end
  t:same(why, { ["ann.lee@example.com"] = "mapping", ["bob.stone@example.com"] = "new_user", ["carol.king@example.com"] = "new_user" })
  -- ann and bob leave Engineering
  w.members["00gEng"] = {}
  w:load()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:same(w:members_of("jira", "new-hires"), { "bob.stone@example.com", "carol.king@example.com" },
    "ann loses the group her mapping gave; bob keeps the new-user group he was given as new")
  t:same(w:members_of("jira", "developers"), {})
end)

test("Bitbucket: a returning account is provisioned like a new one (licence group and new-user groups back)", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "bitbucket" } }
  t:eq(w:usersync("sync").code, 0)
  local function groups_of(name)
    local out = {}
    for g, names in pairs(w.bitbucket:state().members or {}) do
      for _, n in ipairs(names) do if n:lower() == name then out[#out + 1] = g end end
    end
    table.sort(out)
    return out
  end
  local bob = "bob.stone@example.com"
  t:same(groups_of(bob), { "developers", "new-hires", "okta-synced", "stash-users" })
  w.app_users = { "00u1", "00u3" }
  w:load()
  t:eq(w:usersync("sync").code, 0)
  t:same(groups_of(bob), {}, "deprovisioned: every group removed, the licence group too")
  w.app_users = { "00u1", "00u2", "00u3" }
  w:load()
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:same(groups_of(bob), { "developers", "new-hires", "okta-synced", "stash-users" },
    "back with the licence group and the new-user group, as a new account")
  w:clear_requests()
  t:eq(w:usersync("sync").code, 0)
  t:eq(#w:writes("bitbucket"), 0, "onboarded again: stable")
end)

test("an adopted account is addressed by its own spelling (a case-sensitive server)", function(t)
  local w <close> = world.new { sync = MANUAL, products = { "jira" },
    jira = { users = { { name = "frank.lillo", key = "JIRAUSER9", displayName = "Frank Lillo", emailAddress = "frank.lillo@example.com", active = false } },
             groups = { "developers" }, members = {}, case_sensitive_names = true } }
  w:okta_group("00gEng", "Engineering")
  w:okta_user("00u9", "Frank.Lillo", { groups = { "00gEng" }, email = "frank.lillo@example.com", profile = { firstName = "Frank", lastName = "Lillo" } })
  w:load()
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr .. r.stdout)
  t:eq(w.jira:count{ status = 404 }, 0, "no lookup by the Okta spelling")
  t:same(w:members_of("jira", "developers"), { "frank.lillo" })
  t:same(w:members_of("jira", "okta-synced"), { "frank.lillo" })
  t:eq(w:accounts("jira")["frank.lillo"].active, true, "reactivated by its own name")
  t:eq(w:accounts("jira")["frank.lillo"].name, "frank.lillo", "keeps its spelling")
  w:clear_requests()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:eq(#w:writes("jira"), 0, "the next run has nothing to do")
end)

test("two syncs at once: the second never plans from the first one's stale view; creates happen and are counted once", function(t)
  local w <close> = big_world(20)
  -- A guard on the race as a whole (the lock test above is the
  -- deterministic one): reading Okta is slow, applying to Jira quick, the
  -- second sync starts while the first applies; whichever way the timing
  -- falls, nothing is sent twice or counted twice.
  w.okta:faults{ latency_ms = 200 }
  w.jira:faults{ latency_ms = 10 }
  local pid = spawn(w)
  for _ = 1, 3000 do
    if w.jira:count{ method = "POST" } > 0 or not alive(pid) then break end
    os.execute("sleep 0.01")
  end
  local r = w:usersync("sync")
  t:ok(wait_gone(pid), "the first one finished")
  t:contains(proc.slurp(w.dir .. "/bg.out"), "applied 83 changes, 0 failed")
  if r.code == 1 then
    t:contains(r.stderr, "held by pid " .. pid, "refused by the first one's lock")
  else
    t:eq(r.code, 0, r.stderr)
    t:contains(r.stdout, "applied 0 changes", "it ran after the first and found nothing to do")
  end
  t:eq(w.jira:count{ path = "^/rest/api/2/user$", method = "POST" }, 20, "each account created once")
  t:eq(w.jira:count{ status = 400 }, 0, "no rejected writes")
  local db <close> = db_of(w)
  local creates = 0
  for row in db:rows("SELECT counts FROM runs") do
    creates = creates + (require("usersync.json").decode(row.counts or "{}").create_user or 0)
  end
  t:eq(creates, 20, "the history counts each create once")
end)

return test.done()
