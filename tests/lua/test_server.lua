-- test_server.lua: usersync.server as `usersync serve` uses it, with
-- usersync.http as the client: endpoints, the Okta event hook (verification,
-- Authorization, size caps, malformed bodies, duplicates, order, queue_full),
-- wait/stopping and signals (sent to this process with kill), TLS, start errors.
-- The delivery fixture comes from $DATA_DIR/fixtures/okta (tests/data).
-- A wait that expects events or a signal allows 30 s (it returns as soon as
-- they are there), so a loaded machine or valgrind cannot fail it.
local test = require "tap"
local server = require "usersync.server"
local metrics = require "usersync.metrics"
local http = require "usersync.http"
local json = require "usersync.json"
local time = require "usersync.time"
local httpd = require "support.httpd"

local SECRET = "Bearer lua-hook-secret"
local data = os.getenv("DATA_DIR") or "tests/data"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- A process holding a port, started before any server blocks signals (a
-- child started later would inherit the block and ignore kill's SIGTERM).
local other <close> = httpd.start()

local client = http.client{ retries = 0, timeout = 10 }

local function start(opts)
  opts = opts or {}
  opts.listen = opts.listen or "127.0.0.1:0"
  if opts.hook == nil then
    opts.hook = { path = "/hooks/okta", secret = SECRET, max_body = 4096 }
  elseif opts.hook == false then
    opts.hook = nil
  end
  local srv, err, code = server.start(opts)
  assert(srv, tostring(err) .. " " .. tostring(code))
  return srv, ("http://127.0.0.1:%d"):format(srv:port())
end

local function deliver(base, body, auth)
  return assert(client:request{
    url = base .. "/hooks/okta", method = "POST", body = body,
    headers = { Authorization = auth or SECRET, ["Content-Type"] = "application/json" },
  })
end

local function delivery(...)
  local events = {}
  for i, uuid in ipairs{ ... } do events[i] = { uuid = uuid, eventType = "user.session.start" } end
  return json.encode{ eventType = "com.okta.event_hook", data = { events = events } }
end

local function uuids(list)
  local out = {}
  for i, text in ipairs(list) do out[i] = json.decode(text).uuid end
  return out
end

test("health_listen: a second listener for health, readiness and metrics; limits are checked", function(t)
  local srv <close>, base = start{ health_listen = "127.0.0.1:0", max_connections = 64,
                                   max_connections_per_ip = 8, timeout = 3 }
  local hport = srv:health_port()
  t:ok(math.type(hport) == "integer" and hport ~= srv:port())
  local hbase = ("http://127.0.0.1:%d"):format(hport)
  local r = assert(client:request{ url = hbase .. "/healthz" })
  t:eq(r.status, 200); t:eq(r.body, "ok\n")
  r = assert(client:request{ url = hbase .. "/readyz" })
  t:eq(r.status, 503); t:eq(r.body, "not ready: starting\n")
  t:eq(assert(client:request{ url = hbase .. "/metrics" }).status, 200)
  t:eq(deliver(hbase, delivery("h-1")).status, 404, "no hook on the health listener")
  t:eq(deliver(base, delivery("h-2")).status, 200)
  srv:close()
  local plain <close> = start{}
  t:eq(plain:health_port(), nil, "no health listener unless asked for")
  plain:close()
  local bad, err, code = server.start{ listen = "127.0.0.1:0", max_connections_per_ip = 0 }
  t:eq(bad, nil); t:eq(code, "EINVAL"); t:match(err, "max_connections_per_ip")
  bad, err, code = server.start{ listen = "127.0.0.1:0", health_listen = "nonsense" }
  t:eq(bad, nil); t:eq(code, "EINVAL"); t:match(err, "listen nonsense")
end)

test("health, readiness and metrics endpoints", function(t)
  local srv <close>, base = start()
  t:ok(srv:port() > 0)
  local r = assert(client:request{ url = base .. "/healthz" })
  t:eq(r.status, 200)
  t:eq(r.body, "ok\n")
  r = assert(client:request{ url = base .. "/readyz" })
  t:eq(r.status, 503)
  t:eq(r.body, "not ready: starting\n")
  srv:ready(true)
  r = assert(client:request{ url = base .. "/readyz" })
  t:eq(r.status, 200)
  t:eq(r.body, "ready\n")
  srv:ready(false, "store is not open")
  r = assert(client:request{ url = base .. "/readyz" })
  t:eq(r.status, 503)
  t:eq(r.body, "not ready: store is not open\n")

  metrics.add("usersync_runs_total", { sync = "jira", outcome = "ok" })
  r = assert(client:request{ url = base .. "/metrics" })
  t:eq(r.status, 200)
  t:eq(r.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
  t:contains(r.body, 'usersync_runs_total{outcome="ok",sync="jira"} 1\n')
  -- the client's own requests are counted by host and status
  r = assert(client:request{ url = base .. "/metrics" })
  t:match(r.body, 'usersync_http_requests_total{host="127%.0%.0%.1:%d+",status="200"} %d')

  r = assert(client:request{ url = base .. "/other" })
  t:eq(r.status, 404)
  r = assert(client:request{ url = base .. "/healthz", method = "DELETE" })
  t:eq(r.status, 405)
  t:eq(r.headers["allow"], "GET, HEAD")
end)

test("verification handshake needs the secret", function(t)
  local srv <close>, base = start()
  local r = assert(client:request{ url = base .. "/hooks/okta", headers = {
    Authorization = SECRET, ["x-okta-verification-challenge"] = 'chal"lenge' } })
  t:eq(r.status, 200)
  t:eq(r.headers["content-type"], "application/json")
  t:same(json.decode(r.body), { verification = 'chal"lenge' })
  r = assert(client:request{ url = base .. "/hooks/okta", headers = {
    ["x-okta-verification-challenge"] = "x" } })
  t:eq(r.status, 401)
  t:eq(srv:stats().verifications, 1)
end)

test("deliveries: authorization, size, malformed bodies", function(t)
  local srv <close>, base = start()
  t:eq(deliver(base, delivery("a"), "wrong").status, 401)
  t:eq(deliver(base, delivery("a"), SECRET .. "x").status, 401)
  local r = deliver(base, delivery("a"), "")
  t:eq(r.status, 401)
  t:eq(deliver(base, delivery("a") .. (" "):rep(5000)).status, 413)
  r = deliver(base, "{not json")
  t:eq(r.status, 400)
  t:eq(r.body, "malformed: body is not JSON\n")
  t:eq(deliver(base, '{"data":{}}').status, 400)
  local st = srv:stats()
  t:eq(st.unauthorized, 3)
  t:eq(st.too_large, 1)
  t:eq(st.malformed, 2)
  t:eq(st.deliveries, 6)
  t:eq(st.queued, 0)
  t:eq(srv:wait(0), "timeout")
  local m = assert(client:request{ url = base .. "/metrics" }).body
  t:contains(m, 'usersync_hook_deliveries_total{result="unauthorized"} 3\n')
  t:contains(m, 'usersync_hook_deliveries_total{result="too_large"} 1\n')
end)

test("the Okta fixture delivery is queued once, retries are duplicates", function(t)
  local srv <close>, base = start()
  local fixture = json.decode(read(data .. "/fixtures/okta/docs_event_hook_delivery_user_session_start.json"))
  local body = json.encode(fixture.body)
  local r = deliver(base, body)
  t:eq(r.status, 200)
  t:eq(r.body, "")
  t:eq(deliver(base, body).status, 200)
  local kind, events = srv:wait(30)
  t:eq(kind, "events")
  t:eq(#events, 1)
  -- the fields serve acts on, as received; not the rest (client, context...)
  local got, want = json.decode(events[1]), fixture.body.data.events[1]
  for _, k in ipairs({ "uuid", "eventType", "published", "outcome", "actor", "target" }) do
    t:same(got[k], want[k], k)
  end
  t:eq(got.client, nil)
  t:eq(got.debugContext, nil)
  t:eq(srv:wait(0.05), "timeout")
  local st = srv:stats()
  t:eq(st.events, 1)
  t:eq(st.duplicates, 1)
  t:eq(st.accepted, 2)
end)

test("events come back in arrival order; items without uuid are skipped", function(t)
  local srv <close>, base = start()
  t:eq(deliver(base, delivery("e1", "e2")).status, 200)
  t:eq(deliver(base, delivery("e2", "e3", "e3")).status, 200)
  t:eq(deliver(base, '{"data":{"events":[{"uuid":null},{"x":1},{"uuid":"' .. ("x"):rep(129) .. '"},' ..
    '{"uuid":"e4","actor":null,"target":null}]}}').status, 200)
  local kind, events = srv:wait(30)
  t:eq(kind, "events")
  t:same(uuids(events), { "e1", "e2", "e3", "e4" })
  t:eq(events[4], '{"uuid":"e4","actor":null,"target":null}', "the kept fields, bytes as received")
  t:eq(srv:stats().malformed_events, 3)
end)

test("a full queue answers 503 and keeps nothing of the delivery", function(t)
  local srv <close>, base = start{ queue_max = 2 }
  t:eq(deliver(base, delivery("f1")).status, 200)
  t:eq(deliver(base, delivery("f2", "f3")).status, 503)
  t:eq(srv:stats().queue_full, 1)
  local _, events = srv:wait(30)
  t:same(uuids(events), { "f1" })
  t:eq(deliver(base, delivery("f2", "f3")).status, 200)
  _, events = srv:wait(30)
  t:same(uuids(events), { "f2", "f3" })
end)

test("wait times out, signals wake it, SIGTERM sets stopping", function(t)
  local srv <close> = start{ hook = false }
  local t0 = time.monotonic()
  t:eq(srv:wait(0.2), "timeout")
  local dt = time.monotonic() - t0
  -- it ends at its timeout: not before, and not at some later event (30 s:
  -- far beyond what a loaded machine or valgrind adds to a 0.2 s wait)
  t:ok(dt >= 0.19 and dt < 30, "waited " .. dt .. " s")
  t:eq(srv:wait(0), "timeout")
  -- $PPID of the shell is this process
  t:ok(os.execute("kill -HUP $PPID"))
  local kind, sig = srv:wait(30)
  t:eq(kind, "signal")
  t:eq(sig, "hup")
  t:eq(srv:stopping(), false)
  t:ok(os.execute("kill -TERM $PPID"))
  kind, sig = srv:wait(30)
  t:eq(kind, "signal")
  t:eq(sig, "term")
  t:eq(srv:stopping(), true)
  t:ok(os.execute("kill -INT $PPID"))
  kind, sig = srv:wait(30)
  t:eq(sig, "int")
end)

test("TLS with a self-signed certificate", function(t)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. q(dir)))
  local certp, keyp = dir .. "/cert.pem", dir .. "/key.pem"
  t:ok(os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s -days 1 " ..
    "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1"):format(q(keyp), q(certp))))
  -- (timeout: a handshake under valgrind on a loaded machine can outlast the
  -- default 5 s request deadline, which this test is not about)
  local srv <close> = assert(server.start{ listen = "127.0.0.1:0", timeout = 60,
    tls = { cert = read(certp), key = read(keyp) },
    hook = { path = "/hooks/okta", secret = SECRET } })
  local tls = http.client{ retries = 0, timeout = 60, ca_file = certp }
  local base = ("https://127.0.0.1:%d"):format(srv:port())
  local r, err = tls:request{ url = base .. "/healthz" }
  t:ok(r, err)
  t:eq(r and r.status, 200)
  r = assert(tls:request{ url = base .. "/hooks/okta", method = "POST", body = delivery("t1"),
    headers = { Authorization = SECRET } })
  t:eq(r.status, 200)
  local kind, events = srv:wait(30)
  t:eq(kind, "events")
  t:same(uuids(events or {}), { "t1" })
  tls:close()
  srv:close()
  local bad, msg, code = server.start{ listen = "127.0.0.1:0", tls = { cert = read(certp), key = "nope" } }
  t:eq(bad, nil)
  t:eq(code, "ETLS")
  t:match(msg, "key")
  os.execute("rm -rf " .. q(dir))
end)

test("start errors and misuse", function(t)
  local port = tonumber(other.url:match(":(%d+)$"))
  local srv, msg, code = server.start{ listen = "127.0.0.1:" .. port }
  t:eq(srv, nil)
  t:eq(code, "EADDRINUSE")
  t:match(msg, tostring(port))
  _, _, code = server.start{ listen = "nowhere" }
  t:eq(code, "EINVAL")
  _, _, code = server.start{ listen = "127.0.0.1:0", tls = { cert = "x" } }
  t:eq(code, "EINVAL")
  _, _, code = server.start{ listen = "127.0.0.1:0", hook = { path = "/h" } }
  t:eq(code, "EINVAL")
  _, _, code = server.start{ listen = "127.0.0.1:0", queue_max = 0 }
  t:eq(code, "EINVAL")
  t:raises(function() server.start{} end, "listen")
  t:raises(function() server.start{ listen = 8080 } end, "listen")
  t:raises(function() server.start("127.0.0.1:0") end, "table expected")
  t:raises(function() server.start{ listen = "127.0.0.1:0", hook = "/h" } end, "hook must be a table")

  local a = assert(server.start{ listen = "127.0.0.1:0" })
  local b, _, busy = server.start{ listen = "127.0.0.1:0" }
  t:eq(b, nil)
  t:eq(busy, "EBUSY")
  t:match(tostring(a), "port %d+")
  a:close()
  a:close() -- idempotent
  t:raises(function() a:wait(0) end, "closed server")
  t:raises(function() a:port() end, "closed server")
  -- a new server can start after close
  local c <close> = assert(server.start{ listen = "[::1]:0" } or server.start{ listen = "127.0.0.1:0" })
  t:ok(c:port() > 0)
end)

client:close()
return test.done()
