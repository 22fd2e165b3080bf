-- test_cli_exit.lua: the exit statuses of the real `usersync` binary
-- against the simulators, one meaning each on every command (0 done, 1 a
-- failure, 2 usage or config, 3 safety stop, 4 plan --detailed-exitcode
-- with changes, 130 SIGINT), selectors that name nothing, a store that
-- cannot be written, and a SIGINT in the middle of an apply.
local test = require "tap"
local world = require "support.world"
local proc = require "support.proc"

local USERSYNC = os.getenv("USERSYNC")

local MANUAL = { groups = { mode = "manual", map = { Engineering = { "developers" } } } }

local function base_world(opts)
  opts = opts or {}
  local w = world.new{ products = opts.products or { "jira" }, sync = opts.sync or MANUAL }
  w:okta_group("00gEng", "Engineering")
  w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gEng" } })
  w:okta_user("00u2", "bob.stone@example.com", { groups = { "00gEng" } })
  w:load()
  return w
end

-- Runs usersync with argv (the config added unless given) and extra env.
local function run(w, argv, env)
  local full = { USERSYNC }
  local has_c = false
  for _, a in ipairs(argv) do
    full[#full + 1] = a
    has_c = has_c or a == "-c" or a:find("^%-%-config") ~= nil
  end
  if not has_c then full[#full + 1] = "-c"; full[#full + 1] = w.config end
  local e = { US_TEST_OKTA_TOKEN = "test-token", US_TEST_ATL_TOKEN = "test-token", USERSYNC_LOG_LEVEL = "warn",
              NO_COLOR = "1" }
  for k, v in pairs(env or {}) do e[k] = v end
  return proc.run(full, { env = e })
end

local function okta_requests(w)
  return #w.okta:requests()
end

test("a wrong Okta token is a failure (exit 1 with the headline) on plan and sync, not a safety stop", function(t)
  local w <close> = base_world()
  t:eq(run(w, { "sync" }).code, 0)
  w:clear_requests()
  for _, cmd in ipairs({ "plan", "sync" }) do
    local r = run(w, { cmd }, { US_TEST_OKTA_TOKEN = "not-the-okta-token" })
    t:eq(r.code, 1, cmd .. ": " .. r.stderr)
    t:match(r.stderr, "usersync " .. cmd .. ": reading okta failed: HTTP 401: E0000011 Invalid token provided %(EAUTH%)\n")
    t:ok(not r.stderr:find("safety limit", 1, true), cmd .. ": not a safety stop: " .. r.stderr)
    t:ok(not r.stderr:find("not-the-okta-token", 1, true), "token not leaked")
  end
  t:eq(#w:writes("jira"), 0, "nothing written")
end)

test("a failed read is named in the summary line, as the exit status says (text and --json)", function(t)
  local w <close> = base_world{ products = { "jira", "confluence" } }
  local r = run(w, { "sync" }, { US_TEST_OKTA_TOKEN = "not-the-okta-token" })
  t:eq(r.code, 1, r.stderr)
  t:match(r.stdout, "\napplied 0 changes, 0 failed, 1 source not read %(okta%); run 1 %(usersync show RUN for details%)\n$")
  r = run(w, { "sync", "--json" }, { US_TEST_OKTA_TOKEN = "not-the-okta-token" })
  t:eq(r.code, 1, r.stderr)
  local doc = require("usersync.json").decode(r.stdout) or {}
  t:eq(doc.schema, "usersync.summary/1")
  t:eq(doc.exit, 1)
  t:same(doc.not_read and doc.not_read.sources, { "okta" })
  t:same(doc.not_read and doc.not_read.targets, {})
  local h = require("usersync.json").decode(run(w, { "history", "--json" }).stdout).runs
  t:eq(h[1].outcome, "failed", "the run failed, it was not a safety stop")
  -- a target that cannot be read: its name, not "1 failed" (no operation failed)
  w.confluence:stop()
  r = run(w, { "sync" })
  t:eq(r.code, 1, r.stderr)
  t:match(r.stdout, "\napplied 5 changes, 0 failed, 1 target not read %(confluence%); run 3 ")
  r = run(w, { "sync", "--json" })
  t:eq(r.code, 1, r.stderr)
  doc = require("usersync.json").decode(r.stdout) or {}
  t:eq(doc.failed, 0)
  t:same(doc.not_read and doc.not_read.targets, { "confluence" })
  t:same(doc.not_read and doc.not_read.sources, {})
end)

test("an unknown app id is a failure (exit 1), for the whole org and for --user", function(t)
  local w <close> = base_world()
  t:eq(run(w, { "sync" }).code, 0)
  local st = w:okta_state()
  st.apps = {}
  w.okta:put_state(st)
  w:clear_requests()
  local r = run(w, { "sync" })
  t:eq(r.code, 1, r.stdout .. r.stderr)
  t:contains(r.stderr, "usersync sync: reading okta failed")
  t:ok(not r.stderr:find("safety limit", 1, true), r.stderr)
  r = run(w, { "plan", "--user", "bob.stone@example.com" })
  t:eq(r.code, 1, r.stdout .. r.stderr)
  t:contains(r.stderr, "usersync plan: reading okta failed: the Okta app " .. world.APP .. " does not exist")
  t:eq(#w:writes("jira"), 0)
  t:eq(w:accounts("jira")["bob.stone@example.com"].active, true, "bob kept")
end)

test("an incomplete read is still a safety stop (exit 3): a malformed Okta record", function(t)
  local w <close> = base_world()
  t:eq(run(w, { "sync" }).code, 0)
  w.okta:faults{ okta_raw_records = { { path = "^/api/v1/groups$", records = { { id = "00gX", type = "OKTA_GROUP", profile = {} } } } } }
  for _, cmd in ipairs({ "plan", "sync" }) do
    local r = run(w, { cmd })
    t:eq(r.code, 3, cmd .. ": " .. r.stderr)
    t:contains(r.stderr, "stopped by a safety limit")
  end
end)

test("policy errors and an unreachable target: exit 1 on plan as on sync", function(t)
  local w <close> = base_world()
  local pol = w.dir .. "/broken-policy.lua"
  local f = assert(io.open(pol, "w"))
  f:write('return { user = function(u) error("no account for " .. u.profile.login) end }\n')
  f:close()
  w:write_config({ policy = pol, groups = MANUAL.groups })
  for _, cmd in ipairs({ "plan", "sync" }) do
    local r = run(w, { cmd })
    t:eq(r.code, 1, cmd .. ": " .. r.stdout .. r.stderr)
    t:match(r.stdout, "summary: 0 changes, 0 conflicts, 2 policy errors")
  end
  w:write_config(MANUAL)
  w.jira:stop()
  for _, cmd in ipairs({ "plan", "sync" }) do
    local r = run(w, { cmd })
    t:eq(r.code, 1, cmd .. ": " .. r.stdout .. r.stderr)
    t:contains(r.stderr, "usersync " .. cmd .. ": reading jira failed")
  end
end)

test("a selector that names nothing is a usage error (exit 2) and reads nothing", function(t)
  local w <close> = base_world()
  t:eq(run(w, { "sync" }).code, 0)
  w:clear_requests()
  for _, cmd in ipairs({ "sync", "plan" }) do
    local r = run(w, { cmd, "--sync", "nosuch" })
    t:eq(r.code, 2, r.stderr)
    t:eq(r.stderr, "usersync " .. cmd .. ": no sync entry 'nosuch' (known: main)\n")
    t:eq(r.stdout, "")
  end
  t:eq(okta_requests(w), 0, "Okta not read")
  local r = run(w, { "sync", "--sync", "mian" })
  t:eq(r.stderr, "usersync sync: no sync entry 'mian' (known: main); did you mean main?\n")
  r = run(w, { "history", "--sync", "nosuch" })
  t:eq(r.code, 2)
  t:eq(r.stderr, "usersync history: no sync entry 'nosuch' (known: main)\n")
  for _, cmd in ipairs({ "plan", "sync" }) do
    r = run(w, { cmd, "--user", "nobody@example.com" })
    t:eq(r.code, 2, r.stdout .. r.stderr)
    t:eq(r.stderr, "usersync " .. cmd .. ": no Okta user 'nobody@example.com' (by login or id), and no account linked to it\n")
    t:eq(r.stdout, "")
  end
  -- a user Okta no longer has but who has a linked account is a real selector
  w.users = { w.users[1] }
  w.app_users = { "00u1" }
  w.members["00gEng"] = { "00u1" }
  w:load()
  r = run(w, { "plan", "--user", "bob.stone@example.com" })
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "deactivate")
  -- history of an entry removed from the config still lists its runs
  w:write_config({ name = "other", groups = MANUAL.groups })
  r = run(w, { "history", "--sync", "main" })
  t:eq(r.code, 0, r.stderr)
  t:match(r.stdout, "\n1 +%S+ +main ")
end)

test("a store that cannot be written: exit 1 naming the file, before anything is read", function(t)
  local w <close> = base_world()
  t:eq(run(w, { "sync" }).code, 0)
  w:okta_user("00u3", "carol.king@example.com", { groups = { "00gEng" } })
  w:load()
  w:clear_requests()
  local db = w.dir .. "/usersync.db"
  -- The store and its directory read-only for the user running usersync
  -- (root writes anything: run as nobody then).
  os.execute("chmod 0555 " .. proc.quote(w.dir) .. "; chmod 0444 " .. proc.quote(db))
  local root = proc.run({ "id", "-u" }).stdout == "0\n"
  local argv = { USERSYNC, "sync", "-c", w.config }
  if root then
    os.execute("chmod 0755 " .. proc.quote(w.dir))
    table.insert(argv, 1, "--clear-groups"); table.insert(argv, 1, "--regid=65534"); table.insert(argv, 1, "--reuid=65534")
    table.insert(argv, 1, "setpriv")
  end
  local r = proc.run(argv, { env = { US_TEST_OKTA_TOKEN = "test-token", US_TEST_ATL_TOKEN = "test-token",
                                     USERSYNC_LOG_LEVEL = "warn", NO_COLOR = "1" } })
  os.execute("chmod 0755 " .. proc.quote(w.dir) .. "; chmod 0644 " .. proc.quote(db))
  t:eq(r.code, 1, r.stdout .. r.stderr)
  t:contains(r.stderr, "the store " .. db)
  t:eq(okta_requests(w), 0, "nothing read from Okta")
  t:eq(#w:writes("jira"), 0)
  t:ok(not r.stdout:find("run  (", 1, true), "no empty run id: " .. r.stdout)
end)

test("plan --detailed-exitcode: 4 with changes pending, 0 without, failures keep their code", function(t)
  local w <close> = base_world()
  local r = run(w, { "plan", "--detailed-exitcode" })
  t:eq(r.code, 4, r.stderr)
  t:eq(run(w, { "plan" }).code, 0, "without the option: 0")
  t:eq(run(w, { "sync" }).code, 0)
  r = run(w, { "plan", "--detailed-exitcode" })
  t:eq(r.code, 0, r.stderr)
  w:okta_user("00u3", "carol.king@example.com", { groups = { "00gEng" } })
  w:load()
  r = run(w, { "plan", "--detailed-exitcode" }, { US_TEST_OKTA_TOKEN = "not-the-okta-token" })
  t:eq(r.code, 1, "a failure is 1, not 4")
end)

test("options: GNU forms, global options before or after the command, did you mean", function(t)
  local w <close> = base_world()
  local out = w.dir .. "/plan.json"
  local r = run(w, { "plan", "--out=" .. out, "--config=" .. w.config })
  t:eq(r.code, 0, r.stderr)
  t:ok(proc.slurp(out):find('"create_user"', 1, true), "--out=FILE wrote the plan")
  r = run(w, { "-c", w.config, "-q", "plan", "--json" })
  t:eq(r.code, 0, r.stderr)
  t:match(r.stdout, "^{")
  r = run(w, { "plan", "-c" .. w.config, "--user=ann.lee@example.com" })
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "1 user in scope")
  r = run(w, { "snyc" })
  t:eq(r.code, 2)
  t:eq(r.stderr, "usersync: unknown command 'snyc' (did you mean sync?) (see usersync --help)\n")
  r = run(w, { "plan", "--jsno" })
  t:eq(r.code, 2)
  t:eq(r.stderr, "usersync plan: unknown option --jsno (did you mean --json?)\n")
  r = run(w, { "plan", "--json=yes" })
  t:eq(r.stderr, "usersync plan: --json takes no value\n")
  r = run(w, { "--force", "sync" })
  t:eq(r.code, 2)
  t:eq(r.stderr, "usersync: option --force goes after the command (usersync COMMAND --force) (see usersync --help)\n")
  r = run(w, { "-h", "plan" })
  t:eq(r.code, 0)
  t:match(r.stdout, "^usage: usersync plan ")
end)

test("docs and behaviour agree: man page options and exit table, USERSYNC_LOG_FORMAT=auto, plan's advice", function(t)
  local w <close> = base_world{ sync = { groups = MANUAL.groups, limits = { max_deprovision = 0 } } }
  local page = w.dir .. "/usersync.1"
  local r = proc.run({ USERSYNC, "run", os.getenv("SOURCE_DIR") .. "/cmake/manpage.lua", page })
  t:eq(r.code, 0, r.stderr)
  local text = proc.slurp(page)
  t:ok(not text:find("Taken by: serve; see the command", 1, true), "-q/-v are documented as global options")
  t:contains(text, "Quiet: only errors and the result")
  t:contains(text, "Quiet: only errors and the result (no progress, no plan text for sync).\nTaken by: every command, before or after its name.")
  t:contains(text, "only: the plan has changes (without changes: 0).")
  t:match(text, "\\fB130\\fR\nInterrupted by SIGINT")
  -- auto: JSON lines off a terminal, for plan as the man page says
  r = run(w, { "plan" }, { USERSYNC_LOG_FORMAT = "auto", USERSYNC_LOG_LEVEL = "info" })
  t:eq(r.code, 0, r.stderr)
  t:match(r.stderr, '^{"')
  r = run(w, { "plan" }, { USERSYNC_LOG_LEVEL = "info" })
  t:match(r.stderr, "^%d%d%d%d%-", "unset: text for plan")
  -- a safety stop of plan points at what accepts --force
  t:eq(run(w, { "sync" }).code, 0)
  w.app_users = { "00u1" }
  w:load()
  r = run(w, { "plan" })
  t:eq(r.code, 3, r.stderr)
  t:contains(r.stderr, "usersync sync --force (or apply --force on a plan saved with --out) applies it anyway")
  t:ok(not r.stderr:find("run again with --force", 1, true), "plan refuses --force: not advised")
  r = run(w, { "plan", "--force" })
  t:eq(r.code, 2, "plan does refuse --force")
end)

-- Starts `usersync sync` in the background, SIGINT at its default (a
-- background job of sh starts with it ignored); a shell waits for it and
-- writes its exit status to bg.rc. Returns its pid.
local function spawn(w, cmd)
  local d = w.dir
  os.remove(d .. "/bg.pid"); os.remove(d .. "/bg.rc")
  local inner = ("US_TEST_OKTA_TOKEN=test-token US_TEST_ATL_TOKEN=test-token USERSYNC_LOG_LEVEL=warn NO_COLOR=1 "
    .. "env --default-signal=INT %s %s -c %s >%s 2>%s </dev/null & echo $! >%s; wait $!; echo $? >%s")
    :format(proc.quote(USERSYNC), cmd or "sync", proc.quote(w.config), proc.quote(d .. "/bg.out"), proc.quote(d .. "/bg.err"),
      proc.quote(d .. "/bg.pid"), proc.quote(d .. "/bg.rc"))
  os.execute("sh -c " .. proc.quote(inner) .. " >/dev/null 2>&1 &")
  for _ = 1, 2400 do
    local pid = proc.slurp(d .. "/bg.pid"):match("%d+")
    if pid then return pid end
    os.execute("sleep 0.05")
  end
end

local function wait_rc(w)
  for _ = 1, 2400 do
    local rc = proc.slurp(w.dir .. "/bg.rc"):match("%d+")
    if rc then return math.tointeger(tonumber(rc)) end
    os.execute("sleep 0.05")
  end
end

test("SIGINT mid-apply: stops between operations, exit 130, the run recorded interrupted with its counts; the next sync converges", function(t)
  local w <close> = world.new{ products = { "jira" }, sync = MANUAL }
  w:okta_group("00gEng", "Engineering")
  for i = 1, 300 do w:okta_user(("00u%04d"):format(i), ("user%03d@example.com"):format(i), { groups = { "00gEng" } }) end
  w:load()
  -- (slow enough that the apply is far from its end when the signal comes,
  -- however late a loaded machine sends it)
  w.jira:faults{ latency_ms = 100 }
  local pid = spawn(w)
  t:ok(pid, "started")
  local creates = 0
  for _ = 1, 2400 do
    creates = w.jira:count{ path = "^/rest/api/2/user$", method = "POST" }
    if creates >= 5 then break end
    os.execute("sleep 0.02")
  end
  t:ok(creates >= 5, "applying when interrupted")
  os.execute("kill -INT " .. pid)
  local rc = wait_rc(w)
  local err = proc.slurp(w.dir .. "/bg.err")
  t:eq(rc, 130, err)
  t:match(err, "usersync sync: interrupted %(SIGINT%); stopped between operations: %d+ applied, 0 failed; run 1 is recorded as interrupted")
  local served = w.jira:count{ path = "^/rest/api/2/user$", method = "POST" }
  t:ok(served < 300, ("stopped before the end (%d of 300 accounts)"):format(served))
  local h = run(w, { "history", "--json" })
  local runs = require("usersync.json").decode(h.stdout).runs
  t:eq(runs[1].outcome, "interrupted", h.stdout)
  t:eq(runs[1].counts.create_user, served, "its counts are what was applied")
  w.jira:faults{}
  local r = run(w, { "sync" })
  t:eq(r.code, 0, r.stderr)
  local n = 0
  for _ in pairs(w:accounts("jira")) do n = n + 1 end
  t:eq(n, 300, "every account once")
  w:clear_requests()
  r = run(w, { "sync" })
  t:eq(r.code, 0)
  t:eq(#w:writes("jira"), 0, "converged")
end)

test("a second SIGINT ends the run at once; the next sync marks it interrupted and converges", function(t)
  local w <close> = world.new{ products = { "jira" }, sync = MANUAL }
  w:okta_group("00gEng", "Engineering")
  for i = 1, 300 do w:okta_user(("00u%04d"):format(i), ("user%03d@example.com"):format(i), { groups = { "00gEng" } }) end
  w:load()
  -- slow enough that the chunk in flight outlasts the pause between the
  -- two signals (two at once could merge into one) by far, however late a
  -- loaded machine runs the second kill
  w.jira:faults{ latency_ms = 1500 }
  local pid = spawn(w)
  for _ = 1, 2400 do
    if w.jira:count{ path = "^/rest/api/2/user$", method = "POST" } >= 5 then break end
    os.execute("sleep 0.02")
  end
  os.execute("kill -INT " .. pid .. "; sleep 0.2; kill -INT " .. pid)
  t:eq(wait_rc(w), 130)
  local err = proc.slurp(w.dir .. "/bg.err")
  t:ok(not err:find("stopped between operations", 1, true), "no orderly stop: " .. err)
  local h = require("usersync.json").decode(run(w, { "history", "--json" }).stdout).runs
  t:eq(h[1].outcome, "running", "left as it was")
  -- what it did before it died is counted from its journal, not "no changes"
  local created = w.jira:count{ path = "^/rest/api/2/user$", method = "POST" }
  t:ok(created > 0, "it had created accounts")
  -- (what it sent without recording the answer is shown as unknown)
  local done = h[1].counts.create_user or 0
  t:ok(done + h[1].unknown >= created and h[1].unknown > 0,
    ("history counts what the killed run did (%d done, %d unknown, %d served)"):format(done, h[1].unknown, created))
  t:match(run(w, { "history" }).stdout, "\n1 +%S+ +%S+ +manual +full +%S+ +running +[^\n]*%(" .. h[1].unknown
    .. " sent, outcome unknown%)\n")
  w.jira:faults{}
  t:eq(run(w, { "sync" }).code, 0)
  h = require("usersync.json").decode(run(w, { "history", "--json" }).stdout).runs
  t:eq(h[2].outcome, "interrupted", "marked by the next run")
  local n = 0
  for _ in pairs(w:accounts("jira")) do n = n + 1 end
  t:eq(n, 300)
end)

test("SIGINT while reading: exit 130, nothing planned or applied", function(t)
  local w <close> = base_world()
  for i = 3, 400 do w:okta_user(("00u%04d"):format(i), ("user%03d@example.com"):format(i), { groups = { "00gEng" } }) end
  w:load()
  w.okta:faults{ latency_ms = 100 }
  local pid = spawn(w, "sync")
  for _ = 1, 2400 do
    if #w.okta:requests() >= 1 then break end
    os.execute("sleep 0.02")
  end
  os.execute("kill -INT " .. pid)
  t:eq(wait_rc(w), 130)
  t:contains(proc.slurp(w.dir .. "/bg.err"), "usersync sync: interrupted (SIGINT); nothing was applied")
  t:eq(#w:writes("jira"), 0)
end)

return test.done()
