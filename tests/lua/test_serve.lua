-- `usersync serve` end to end (issue 8): the real binary as a daemon against
-- the simulators — event hook (verification, Authorization, size, bad
-- bodies, duplicates, sync at login), System Log polling, the scheduler and
-- its lock, SIGHUP reloads, SIGTERM, health and metrics (also on serve.health_listen),
-- half-open connections (tests/lua/support/halfopen.py).
local test = require "tap"
local world = require "support.world"
local serve = require "support.serve"
local proc = require "support.proc"
local json = require "usersync.json"
local store = require "usersync.store"
local http = require "usersync.http"

local HOOK = "/hooks/okta"
local AUTH = { Authorization = "hook-secret-value", ["Content-Type"] = "application/json" }

-- A config section for serve; fields: every (sync entry), poll, max_body.
local function serve_section(o)
  o = o or {}
  return ([[
  serve = {
    listen = "127.0.0.1:0",
    okta_hook = { path = %q, secret = env "US_TEST_HOOK_SECRET"%s },
    %s %s %s
  },]]):format(HOOK, o.max_body and (", max_body = " .. o.max_body) or "",
    o.health and 'health_listen = "127.0.0.1:0", request_timeout = "2s",' or "",
    o.poll and ("poll_logs = %q,"):format(o.poll) or "",
    o.tls and ("tls = { cert = %q, key = %q },"):format(o.tls.cert, o.tls.key) or "")
end

-- ann and bob in Engineering, both assigned to the app; jira only.
local function small_world(o)
  o = o or {}
  local sync = { groups = { mode = "manual", map = { Engineering = { "developers" } } },
                 defaults = { all_users = { "okta-synced" } }, every = o.every }
  local w = world.new{ products = { "jira" }, sync = sync, extra = { raw = serve_section(o) } }
  w:okta_group("00gEng", "Engineering")
  w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gEng" } })
  w:okta_user("00u2", "bob.stone@example.com", { groups = { "00gEng" } })
  for i = 1, (o.extra_users or 0) do
    w:okta_user(("00ux%04d"):format(i), ("user%04d@example.com"):format(i), { groups = { "00gEng" } })
  end
  w:load()
  return w
end

local fixture
local function delivery(events)
  if not fixture then
    local f = assert(io.open(os.getenv("DATA_DIR") .. "/fixtures/okta/docs_event_hook_delivery_user_session_start.json"))
    fixture = assert(json.decode(f:read("a"))).body
    f:close()
  end
  local body = world.clone(fixture)
  body.data.events = json.array(events)
  return assert(json.encode(body))
end

-- The fixture's user.session.start event, for Okta user `id`, event `uuid`.
local function login_event(id, uuid, result)
  local ev = world.clone(fixture.data.events[1])
  ev.uuid = uuid
  ev.actor = { id = id, type = "User", alternateId = id .. "@example.com", displayName = id }
  ev.outcome = { result = result or "SUCCESS" }
  return ev
end
delivery({}) -- loads the fixture

local function runs(w, trigger)
  local out = {}
  local r = w:usersync("history", "--json", "--limit", "1000")
  for _, run in ipairs((json.decode(r.stdout) or {}).runs or {}) do
    if not trigger or run.trigger == trigger then out[#out + 1] = run end
  end
  return out
end

-- The value of the first series of `name` whose labels include all of `want`.
local function series(m, name, want)
  for key, v in pairs(m) do
    local n, labels = key:match("^([%w_]+){(.*)}$")
    if not n then n, labels = key, "" end
    if n == name then
      local ok = true
      for k, val in pairs(want or {}) do
        if not labels:find(('%s="%s"'):format(k, val), 1, true) then ok = false end
      end
      if ok then return v end
    end
  end
end

test("hook: verification handshake, Authorization, size and malformed bodies; health endpoints", function(t)
  local w <close> = small_world{ max_body = 4096 }
  local d <close> = serve.start(w)
  t:eq(d:get("/healthz").status, 200)
  t:eq(d:get("/readyz").status, 200)
  t:eq(d:get("/nope").status, 404)

  local v = d:get(HOOK, { ["x-okta-verification-challenge"] = "challenge-123", Authorization = "hook-secret-value" })
  t:eq(v.status, 200)
  t:same(json.decode(v.body), { verification = "challenge-123" })
  t:eq(d:get(HOOK, { ["x-okta-verification-challenge"] = "c" }).status, 401, "verification without Authorization")

  local body = delivery{ login_event("00u1", "uuid-auth-1") }
  t:eq(d:post(HOOK, body, { ["Content-Type"] = "application/json" }).status, 401, "missing Authorization")
  t:eq(d:post(HOOK, body, { Authorization = "hook-secret-valuX" }).status, 401, "wrong Authorization")
  t:eq(d:post(HOOK, body, { Authorization = "hook-secret-value-and-more" }).status, 401, "longer Authorization")
  t:eq(d:post(HOOK, ("x"):rep(10000), AUTH).status, 413, "body over max_body")
  t:eq(d:post(HOOK, "{not json", AUTH).status, 400, "malformed JSON")
  t:eq(d:post(HOOK, '{"data":{}}', AUTH).status, 400, "no data.events")
  -- none of these reached the engine: no runs, no accounts
  serve.wait_for(function() return false end, 1)
  t:eq(#runs(w), 0)
  t:eq(w:accounts("jira")["ann.lee@example.com"], nil)
  t:ok(not d:log_text():find("hook-secret-value", 1, true), "the secret never reaches the log")
  t:eq(d:stop(), 0)
end)

test("serve.health_listen: health, readiness and metrics on a listener of their own", function(t)
  local w <close> = small_world{ health = true }
  local d <close> = serve.start(w)
  local rec = d:find_log("serving")
  t:ok(math.type(rec.health_port) == "integer" and rec.health_port ~= d.port, "health_port logged")
  local base = ("http://127.0.0.1:%d"):format(rec.health_port)
  local r = assert(d.client:request{ url = base .. "/healthz" })
  t:eq(r.status, 200); t:eq(r.body, "ok\n")
  t:eq(assert(d.client:request{ url = base .. "/readyz" }).status, 200)
  r = assert(d.client:request{ url = base .. "/metrics" })
  t:eq(r.status, 200)
  t:contains(r.body, "usersync_hook_deliveries_total")
  r = assert(d.client:request{ url = base .. HOOK, method = "POST", headers = AUTH,
                               body = delivery{ login_event("00u1", "uuid-health-1") } })
  t:eq(r.status, 404, "the hook is not on the health listener")
  t:eq(d:get("/healthz").status, 200, "the main listener still answers health too")
  t:eq(d:stop(), 0)
end)

test("200 half-open connections: health answers, a delivery syncs its user, the server closes them all", function(t)
  local w <close> = small_world{ health = true }
  local d <close> = serve.start(w)
  local hport = d:find_log("serving").health_port
  local status = w.dir .. "/halfopen.status"
  local script = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") .. "/support/halfopen.py"
  os.execute(("python3 %s %d 200 127.0.0.2 %s >/dev/null 2>&1 &"):format(proc.quote(script), d.port,
    proc.quote(status)))
  t:ok(serve.wait_for(function() return proc.slurp(status):find("^opened 200") end, 120), "200 connections opened")
  local r = assert(d.client:request{ url = ("http://127.0.0.1:%d/healthz"):format(hport) })
  t:eq(r.status, 200, "health on its own listener")
  t:eq(d:get("/healthz").status, 200, "health on the main listener from another address")
  t:eq(d:post(HOOK, delivery{ login_event("00u2", "uuid-halfopen-1") }, AUTH).status, 200)
  t:ok(serve.wait_for(function() return w:accounts("jira")["bob.stone@example.com"] end, 120),
    "the delivered login synced bob")
  local closed = serve.wait_for(function() return proc.slurp(status):match("^closed .-\n") end, 300)
  t:match(tostring(closed), "^closed 200 of 200 after", "every half-open connection closed by the server")
  io.stderr:write("# ", tostring(closed))
  t:eq(d:stop(), 0)
end)

test("a user.session.start delivery syncs that user (sync at login); a duplicate delivery is processed once", function(t)
  local w <close> = small_world()
  local d <close> = serve.start(w)
  local body = delivery{ login_event("00u2", "f1d0b993-cc19-11ed-a688-000000000002") }
  local r = d:post(HOOK, body, AUTH)
  t:eq(r.status, 200)
  t:eq(r.body, "")
  local bob = serve.wait_for(function() return w:accounts("jira")["bob.stone@example.com"] end, 120)
  t:ok(bob, "bob's account created after his login")
  t:same(w:members_of("jira", "developers"), { "bob.stone@example.com" }, "only bob: ann did not sign in")
  t:eq(d:post(HOOK, body, AUTH).status, 200, "a redelivery is accepted (Okta must not retry it)")
  -- a failed login syncs nobody
  t:eq(d:post(HOOK, delivery{ login_event("00u1", "uuid-failed-login", "FAILURE") }, AUTH).status, 200)
  t:ok(serve.wait_for(function()
    local m = d:metrics()
    return series(m, "usersync_hook_events_total", { result = "duplicate" }) == 1
  end, 120), "the duplicate was counted")
  serve.wait_for(function() return false end, 1)
  local ev = runs(w, "event")
  t:eq(#ev, 1, "one run for two deliveries of one event")
  t:eq(ev[1] and ev[1].scope, "00u2")
  t:eq(w:accounts("jira")["ann.lee@example.com"], nil, "the failed login synced nobody")
  t:eq(d:stop(), 0)
end)

test("a group assigned to the app (hook event): a full run brings its members in at once", function(t)
  local w <close> = small_world()
  w:okta_group("00gOps", "Ops")
  w:okta_user("00u3", "carol.king@example.com", { groups = { "00gOps" }, app = false })
  w:load()
  t:eq(w:usersync("sync").code, 0)
  t:eq(w:accounts("jira")["carol.king@example.com"], nil, "carol is not in scope yet")
  local d <close> = serve.start(w)
  w.app_groups[#w.app_groups + 1] = "00gOps"
  w:load()
  local ev = world.clone(fixture.data.events[1])
  ev.uuid, ev.eventType = "uuid-group-assign", "group.application_assignment.add"
  ev.actor = { id = "00uadmin", type = "User" }
  ev.target = { { id = "00gOps", type = "UserGroup" }, { id = world.APP, type = "AppInstance" } }
  t:eq(d:post(HOOK, delivery{ ev }, AUTH).status, 200)
  t:ok(serve.wait_for(function() return w:accounts("jira")["carol.king@example.com"] end, 120), "carol synced")
  local ev_runs = runs(w, "event")
  t:eq(#ev_runs, 1)
  t:eq(ev_runs[1] and ev_runs[1].scope, nil, "a full run, not one for named users")
  t:eq(d:stop(), 0)
end)

test("System Log polling picks up a change made in Okta and syncs just that user", function(t)
  local w <close> = small_world{ poll = "1s" }
  t:eq(w:usersync("sync").code, 0)
  local d <close> = serve.start(w)
  -- the first poll stores a cursor
  t:ok(serve.wait_for(function()
    local db <close> = assert(store.open(w.dir .. "/usersync.db"))
    return db:first("SELECT value FROM cursors WHERE name = 'okta.syslog.okta'")
  end, 120), "cursor stored")
  -- a sign-in in the System Log is not a change: the poll syncs nobody for it
  local st = w.okta:state()
  st.logs[#st.logs + 1] = { uuid = "poll-login-1", published = require("usersync.time").format(w.okta:now()),
    eventType = "user.session.start", displayMessage = "User login to Okta", severity = "INFO", version = "0",
    actor = { id = "00u2", type = "User", alternateId = "bob.stone@example.com", displayName = "bob" },
    outcome = { result = "SUCCESS" }, target = json.array{} }
  w.okta:put_state(st)
  serve.wait_for(function() return false end, 2.5)
  t:eq(#runs(w, "incremental"), 0, "no run for a sign-in")
  w:find_user("00u2").profile.email = "bob.new@example.com"
  w:load()
  local bob = serve.wait_for(function()
    local a = w:accounts("jira")["bob.stone@example.com"]
    return a and a.emailAddress == "bob.new@example.com" and a
  end, 120)
  t:ok(bob, "bob's new e-mail reached Jira")
  local inc = runs(w, "incremental")
  t:ok(#inc >= 1, "an incremental run")
  for _, run in ipairs(inc) do t:eq(run.scope, "00u2", "only bob was synced") end
  t:eq(d:stop(), 0)
end)

test("without the logs scope the poll uses a lastUpdated watermark, and syncs a change once", function(t)
  local w <close> = small_world{ poll = "1s" }
  t:eq(w:usersync("sync").code, 0)
  w.okta:faults{ fail_rate = 1.0, fail_status = 403, fail_path = "^/api/v1/logs" }
  local d <close> = serve.start(w)
  t:ok(serve.wait_for(function()
    local db <close> = assert(store.open(w.dir .. "/usersync.db"))
    return db:first("SELECT value FROM cursors WHERE name = 'okta.watermark.okta'")
  end, 120), "watermark stored")
  w:find_user("00u2").profile.email = "bob.wm@example.com"
  w:load()
  t:ok(serve.wait_for(function()
    local a = w:accounts("jira")["bob.stone@example.com"]
    return a and a.emailAddress == "bob.wm@example.com"
  end, 120), "bob's new e-mail reached Jira")
  serve.wait_for(function() return false end, 3.5) -- three more polls
  local inc = runs(w, "incremental")
  t:eq(#inc, 1, "one incremental run, not one per poll")
  t:eq(d:stop(), 0)
end)

test("users from events wait in the store: a run kept out by the lock is done after a restart", function(t)
  local w <close> = small_world()
  local db <close> = assert(store.open(w.dir .. "/usersync.db"))
  t:ok(db:lock("sync:main", { ttl = 600 }))
  local d = serve.start(w)
  t:eq(d:post(HOOK, delivery{ login_event("00u1", "uuid-wait-1") }, AUTH).status, 200)
  t:ok(serve.wait_for(function() return d:find_log("run skipped") end, 120), "the run was kept out")
  t:eq(d:stop(), 0)
  t:eq(w:accounts("jira")["ann.lee@example.com"], nil, "not synced while locked")
  local row = db:first("SELECT value FROM cursors WHERE name = 'serve.pending'")
  t:contains(row and row.value or "", "00u1", "ann waits in the store")
  db:unlock("sync:main")
  local d2 <close> = serve.start(w)
  t:ok(serve.wait_for(function() return w:accounts("jira")["ann.lee@example.com"] end, 120), "synced after the restart")
  t:ok(serve.wait_for(function() return not db:first("SELECT value FROM cursors WHERE name = 'serve.pending'") end, 120),
    "the waiting list is empty again")
  t:eq(d2:stop(), 0)
end)

test("scheduler: runs on `every`, never overlapping; a run held by another process's lock is skipped", function(t)
  local w <close> = small_world{ every = "1s" }
  local d <close> = serve.start(w)
  t:ok(serve.wait_for(function() return #runs(w, "schedule") >= 2 end, 120), "two scheduled runs")
  t:ok(w:accounts("jira")["ann.lee@example.com"], "the scheduled run synced")
  -- hold the sync's lock as a `usersync sync` started by hand would
  local db <close> = assert(store.open(w.dir .. "/usersync.db"))
  -- (a scheduled run may hold it right now: taken once that run is done)
  t:ok(serve.wait_for(function() return db:lock("sync:main", { ttl = 600 }) end, 120), "the lock taken")
  local before = d:count_log("run skipped")
  t:ok(serve.wait_for(function() return d:count_log("run skipped") > before end, 120), "a run was skipped")
  local held = #runs(w, "schedule")
  serve.wait_for(function() return false end, 1.5)
  t:eq(#runs(w, "schedule"), held, "no run while the lock is held")
  db:unlock("sync:main")
  t:ok(serve.wait_for(function() return #runs(w, "schedule") > held end, 120), "runs again once released")
  -- no two scheduled runs overlap (history is newest first)
  local list = runs(w, "schedule")
  for i = 1, #list - 1 do
    t:ok(list[i].started >= list[i + 1].ended, ("run %s started after run %s ended"):format(list[i].id, list[i + 1].id))
  end
  t:eq(d:stop(), 0)
end)

test("SIGHUP: a bad config is reported and the old one kept; a good one is loaded", function(t)
  local w <close> = small_world()
  local d <close> = serve.start(w)
  local f = assert(io.open(w.config)); local good = f:read("a"); f:close()
  f = assert(io.open(w.config, "w")); f:write("return { this is not lua"); f:close()
  d:signal("HUP")
  local rec = serve.wait_for(function() return d:find_log("config reload failed") end, 120)
  t:ok(rec, "the failed reload is logged")
  t:eq(d:get("/healthz").status, 200, "still serving")
  t:eq(d:post(HOOK, delivery{ login_event("00u1", "uuid-after-bad-reload") }, AUTH).status, 200, "hook still works")
  t:ok(serve.wait_for(function() return w:accounts("jira")["ann.lee@example.com"] end, 120), "the old config still syncs")
  f = assert(io.open(w.config, "w")); f:write(good); f:close()
  d:signal("HUP")
  t:ok(serve.wait_for(function() return d:find_log("config reloaded") end, 120), "the good config is loaded")
  local m = d:metrics()
  t:eq(series(m, "usersync_config_reloads_total", { result = "error" }), 1)
  t:eq(series(m, "usersync_config_reloads_total", { result = "ok" }), 1)
  t:eq(d:stop(), 0)
end)

test("serve.tls: HTTPS with the configured certificate; plain HTTP is refused", function(t)
  local tmp = os.tmpname(); os.remove(tmp); os.execute("mkdir -p " .. tmp)
  local cert, key = tmp .. "/tls.crt", tmp .. "/tls.key"
  t:ok(os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -days 1 -keyout %s -out %s 2>/dev/null")
    :format(key, cert)), "openssl made a certificate")
  local w <close> = small_world{ tls = { cert = cert, key = key } }
  local d <close> = serve.start(w)
  t:eq(d.scheme, "https")
  t:eq(d:get("/healthz").status, 200, "healthz over TLS")
  local ver = d:get(HOOK, { ["x-okta-verification-challenge"] = "tls-challenge", Authorization = "hook-secret-value" })
  t:same(json.decode(ver.body), { verification = "tls-challenge" })
  -- the same port without TLS does not answer as HTTP
  local plain = http.client{ retries = 0, timeout = 5 }
  local r = plain:request{ url = ("http://127.0.0.1:%d/healthz"):format(d.port) }
  t:ok(not r or r.status ~= 200, "plain HTTP is not served")
  plain:close()
  t:eq(d:stop(), 0)
  -- a key that does not exist: a clear error, exit 2
  os.remove(key)
  local bad = w:usersync("serve")
  t:eq(bad.code, 2)
  t:contains(bad.stderr, "cannot read serve.tls.key")
  os.execute("rm -rf " .. tmp)
end)

test("serve's hook secret is needed by serve only: plan runs without it, serve refuses to start", function(t)
  local w <close> = small_world()
  local env = { US_TEST_OKTA_TOKEN = "test-token", US_TEST_ATL_TOKEN = "test-token" }
  local proc = require "support.proc"
  local r = proc.run({ os.getenv("USERSYNC"), "plan", "-c", w.config }, { env = env, unset = { "US_TEST_HOOK_SECRET" } })
  t:eq(r.code, 0, r.stderr)
  r = proc.run({ os.getenv("USERSYNC"), "serve", "-c", w.config }, { env = env, unset = { "US_TEST_HOOK_SECRET" } })
  t:eq(r.code, 2)
  t:contains(r.stderr, "serve.okta_hook.secret")
end)

test("metrics: Prometheus text with runs, operations, durations, Okta budget and HTTP requests", function(t)
  local w <close> = small_world{ every = "1h" }
  local d <close> = serve.start(w)
  -- (history lists a run from its start; its metrics are set once it has
  -- ended, just before the "run finished" line)
  t:ok(serve.wait_for(function() return d:find_log("run finished") end, 120), "the first scheduled run")
  local m, r = d:metrics()
  t:eq(r.status, 200)
  t:match(r.headers["content-type"] or "", "^text/plain; version=0.0.4")
  t:contains(r.body, "# TYPE usersync_runs_total counter")
  t:contains(r.body, "# TYPE usersync_run_duration_seconds histogram")
  t:eq(series(m, "usersync_runs_total", { sync = "main", trigger = "schedule", outcome = "ok" }), 1)
  t:eq(series(m, "usersync_operations_total", { target = "jira", kind = "create_user", result = "done" }), 2)
  t:ok((series(m, "usersync_last_success_timestamp_seconds", { sync = "main" }) or 0) > 1.7e9)
  t:eq(series(m, "usersync_run_duration_seconds_count", { sync = "main" }), 1)
  t:eq(series(m, "usersync_run_duration_seconds_bucket", { sync = "main", le = "+Inf" }), 1)
  t:ok(series(m, "usersync_okta_budget_remaining", { source = "okta" }), "Okta budget per bucket")
  local port = w.okta.url:match(":(%d+)$")
  t:ok((series(m, "usersync_http_requests_total", { status = "200" }) or 0) > 0, "HTTP requests by host and status")
  t:contains(r.body, port, "the Okta simulator's host is a label")
  t:eq(d:stop(), 0)
end)

test("metrics: the last success counts full runs only; build info, managed accounts, next scheduled run", function(t)
  local time = require "usersync.time"
  local w <close> = small_world{ every = "1h" }
  local d = serve.start(w)
  -- the first run's end: its metrics, then the next run is scheduled (the
  -- second "next scheduled run" line; the first is logged at the start)
  t:ok(serve.wait_for(function() return d:find_log("next scheduled run", 2) end, 120), "the first scheduled run")
  local m, r = d:metrics()
  local read_at = time.now()
  local full_ok = series(m, "usersync_last_success_timestamp_seconds", { sync = "main" })
  t:ok((full_ok or 0) > 1.7e9, "set by the full run")
  local version = proc.run({ os.getenv("USERSYNC"), "--version" }).stdout:match("^usersync (%S+)")
  t:contains(r.body, ('usersync_build_info{version="%s"} 1\n'):format(version))
  t:eq(series(m, "usersync_managed_accounts", { target = "jira" }), 2, "ann and bob")
  local next_run = series(m, "usersync_next_run_timestamp_seconds", { sync = "main" })
  -- (due `every` plus jitter after the moment it was scheduled: after the
  -- success was recorded, before the metrics were read, however slow the machine)
  t:ok(next_run and next_run >= full_ok + 3600 and next_run <= read_at + 3600 + 30,
    ("the next run an hour after the first ended (jitter at most 30s): %s vs %s, read at %s")
      :format(next_run, full_ok, read_at))
  local logged = d:find_log("next scheduled run")
  t:ok(logged and logged.sync == "main" and logged["in"], "a log line says when")
  -- a login: an event run for one user, which ends ok
  w:okta_user("00u3", "cy.diaz@example.com", { groups = { "00gEng" } })
  w:load()
  t:eq(d:post(HOOK, delivery{ login_event("00u3", "uuid-metrics-login") }, AUTH).status, 200)
  t:ok(serve.wait_for(function() return #runs(w, "event") >= 1 end, 120), "the event run")
  t:ok(serve.wait_for(function()
    return series(d:metrics(), "usersync_managed_accounts", { target = "jira" }) == 3 end, 120), "cy is managed now")
  t:eq(runs(w, "event")[1].outcome, "ok")
  m = d:metrics()
  t:eq(series(m, "usersync_last_success_timestamp_seconds", { sync = "main" }), full_ok,
    "an event run does not refresh the last full success")
  t:eq(d:stop(), 0)
  -- after a restart, the value comes from the store: the full run's end, not the event run's
  local d2 <close> = serve.start(w)
  local sched = runs(w, "schedule")[1]
  t:eq(series(d2:metrics(), "usersync_last_success_timestamp_seconds", { sync = "main" }), time.parse(sched.ended))
  t:eq(d2:stop(), 0)
end)

test("SIGTERM during a long run: it stops between operations, the run is recorded interrupted, exit 0", function(t)
  local w <close> = small_world{ every = "1h", extra_users = 400 }
  w.jira:faults{ latency_ms = 40 }
  local d <close> = serve.start(w)
  t:ok(serve.wait_for(function() return d:find_log("applying") end, 120), "applying started")
  t:eq(d:stop(), 0, "exit 0")
  local list = runs(w, "schedule")
  t:eq(list[1] and list[1].outcome, "interrupted")
  local created = 0
  for _ in pairs(w:accounts("jira")) do created = created + 1 end
  t:ok(created < 402, ("stopped before the end (%d of 402 accounts)"):format(created))
  -- a later sync finishes the job: nothing lost, no duplicates
  w.jira:faults{}
  t:eq(w:usersync("sync").code, 0)
  local n = 0
  for name in pairs(w:accounts("jira")) do if name ~= "admin" then n = n + 1 end end
  t:eq(n, 402)
end)

return test.done()
