-- The status page of `usersync serve` (serve.status) end to end, without a
-- browser (tests/lua/test_status_browser.lua loads it in Chromium): the
-- real binary after a real sync against the simulators; Basic auth (401
-- with WWW-Authenticate), the figures the store holds, HTML escaping of
-- what comes from Okta, "sync now" for an entry and for one user, and the
-- CSRF defences (token field, SameSite cookie, Origin/Referer) that keep a
-- cross-site form from starting a run.
local test = require "tap"
local world = require "support.world"
local serve = require "support.serve"
local json = require "usersync.json"
local crypto = require "usersync.crypto"

local PASSWORD = "status-page-password-1"
local EVIL = "<script>alert(1)</script>"

local function section(status)
  return ([[
  serve = {
    listen = "127.0.0.1:0",
    okta_hook = { path = "/hooks/okta", secret = env "US_TEST_HOOK_SECRET" },
    %s
  },]]):format(status and 'status = { user = "admin", password = env "USERSYNC_UI_PASSWORD" },' or "")
end

-- ann and bob in Engineering, carol (whose first name is a script tag) in Ops.
local function status_world(status)
  local w = world.new{ products = { "jira" }, extra = { raw = section(status ~= false) },
    sync = { groups = { mode = "manual", map = { Engineering = { "developers" } } },
             defaults = { all_users = { "okta-synced" } } } }
  w:okta_group("00gEng", "Engineering")
  w:okta_group("00gOps", "Ops")
  w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gEng" } })
  w:okta_user("00u2", "bob.stone@example.com", { groups = { "00gEng" } })
  w:okta_user("00u3", "carol.king@example.com", { groups = { "00gOps" }, profile = { firstName = EVIL } })
  w:load()
  return w
end

local function basic(user, password)
  return "Basic " .. crypto.b64url(user .. ":" .. password):gsub("-", "+"):gsub("_", "/") ..
    ("="):rep((3 - #(user .. ":" .. password) % 3) % 3)
end
local AUTH = { Authorization = basic("admin", PASSWORD) }

local function runs(w)
  return (json.decode(w:usersync("history", "--json", "--limit", "100").stdout) or {}).runs or {}
end

local function with(h, extra)
  local out = {}
  for k, v in pairs(h) do out[k] = v end
  for k, v in pairs(extra or {}) do out[k] = v end
  return out
end

local w <close> = status_world()
local first = w:usersync("sync")
assert(first.code == 0, "the first sync failed: " .. first.stderr)
local d <close> = serve.start(w, { env = { USERSYNC_UI_PASSWORD = PASSWORD } })

test("authentication: 401 with WWW-Authenticate without or with wrong credentials", function(t)
  local r = d:get("/")
  t:eq(r.status, 401, "no Authorization")
  t:match(r.headers["www-authenticate"] or "", '^Basic realm="usersync"')
  t:eq(d:get("/", { Authorization = basic("admin", PASSWORD .. "x") }).status, 401, "wrong password")
  t:eq(d:get("/", { Authorization = basic("root", PASSWORD) }).status, 401, "wrong user")
  t:eq(d:get("/", { Authorization = basic("admin", "") }).status, 401, "empty password")
  t:eq(d:get("/status/runs/1", { Authorization = "Bearer " .. PASSWORD }).status, 401, "another scheme")
  t:eq(d:get("/status/style.css").status, 401, "the style sheet too")
  t:eq(d:post("/status/sync", "sync=main", { ["Content-Type"] = "application/x-www-form-urlencoded" }).status, 401,
    "a POST without credentials")
  local ok = d:get("/", { Authorization = AUTH.Authorization:gsub("^Basic", "basic") })
  t:eq(ok.status, 200, "the scheme is case-insensitive")
  t:eq(d:get("/healthz").status, 200, "health needs no credentials")
  t:ok(not d:log_text():find(PASSWORD, 1, true), "the password never reaches the log")
  -- no way around it: other paths to the page, other methods, malformed credentials
  for _, c in ipairs{ { "GET", "/status/../" }, { "GET", "/%73tatus/style.css" }, { "GET", "/status/runs/1?x=/healthz" },
                      { "HEAD", "/" }, { "OPTIONS", "/" }, { "DELETE", "/status/sync" } } do
    t:eq(d:request(c[1], c[2]).status, 401, c[1] .. " " .. c[2] .. " without credentials")
  end
  t:eq(d:get("//").status, 404, "// is not the page")
  local nocolon = "admin" .. PASSWORD
  nocolon = crypto.b64url(nocolon):gsub("-", "+"):gsub("_", "/") .. ("="):rep((3 - #nocolon % 3) % 3)
  for what, v in pairs{ ["no colon"] = "Basic " .. nocolon, ["invalid base64"] = "Basic !!!!",
                        ["only the scheme"] = "Basic ", ["the password alone"] = "Basic " .. PASSWORD } do
    t:eq(d:get("/", { Authorization = v }).status, 401, what)
  end
  t:eq(d:request("OPTIONS", "/", nil, AUTH).status, 405, "OPTIONS with credentials: not allowed")
  t:eq(d:request("HEAD", "/", nil, AUTH).status, 200, "HEAD with credentials")
end)

test("the overview shows what the store holds", function(t)
  local r = d:get("/", AUTH)
  t:eq(r.status, 200)
  t:match(r.headers["content-type"] or "", "^text/html; charset=utf%-8")
  t:match(r.headers["content-security-policy"] or "", "default%-src 'none'")
  t:eq(r.headers["cache-control"], "no-store")
  t:match(r.headers["set-cookie"] or "", "^usersync_csrf=%x+; Path=/; HttpOnly; SameSite=Strict$")
  local body = r.body
  t:contains(body, '<html lang="en">')
  t:contains(body, '<a href="/status/runs/1">run 1</a>', "the first sync's run links to its operations")
  t:contains(body, "<h3 id=\"entry-1\">main</h3>")
  t:contains(body, "jira <span class=\"muted\">(jira)</span>", "the entry's target")
  -- three accounts linked on jira, all created by usersync
  t:match(body, '<a href="/status/targets/jira">jira</a></td><td data%-label="Type">jira</td>' ..
    '<td data%-label="Managed accounts" class="num">3</td><td data%-label="Created by usersync" class="num">3</td>')
  t:contains(body, "create user 3", "the last run's counts")
  t:contains(body, 'name="csrf" value="', "sync now forms carry the token")
  t:ok(not body:find("<script", 1, true), "no script element on the page")
end)

test("everything from Okta is escaped: a display name <script>alert(1)</script>", function(t)
  local r = d:get("/status/runs/1", AUTH)
  t:eq(r.status, 200)
  t:contains(r.body, "&lt;script&gt;alert(1)&lt;/script&gt;", "the display name shown as text")
  t:ok(not r.body:find("<script", 1, true), "never as markup")
  t:contains(r.body, "carol.king@example.com")
  local a = d:get("/status/targets/jira", AUTH)
  t:eq(a.status, 200)
  t:contains(a.body, "<td data-label=\"Account\">ann.lee@example.com</td>")
  t:contains(a.body, "<td data-label=\"Okta user id\">00u1</td>")
  -- a path and a query from the request are escaped too
  local nf = d:get("/status/targets/%3Cscript%3E", AUTH)
  t:eq(nf.status, 404)
  local q = d:get("/?requested=%3Cscript%3Ex&user=%22%3E%3Cb%3E", AUTH)
  t:contains(q.body, "&lt;script&gt;x")
  t:contains(q.body, "&quot;&gt;&lt;b&gt;")
  t:ok(not q.body:find("<script", 1, true))
  t:eq(d:get("/status/runs/999", AUTH).status, 404, "an unknown run")
end)

-- The token and cookie a browser would hold after loading the overview.
local function session()
  local r = d:get("/", AUTH)
  local token = r.body:match('name="csrf" value="(%x+)"')
  local cookie = (r.headers["set-cookie"] or ""):match("^(usersync_csrf=%x+)")
  return token, cookie
end

local FORM = { ["Content-Type"] = "application/x-www-form-urlencoded" }

test("CSRF: a form without the token, cookie or this server's Origin starts nothing", function(t)
  local token, cookie = session()
  t:ok(token and cookie, "the page gives a token and a cookie")
  local good = with(with(AUTH, FORM), { Origin = d.base, Cookie = cookie })
  local cases = {
    { "no token", "sync=main", good },
    { "a wrong token", "sync=main&csrf=" .. ("0"):rep(64), good },
    { "another site's Origin", "sync=main&csrf=" .. token, with(good, { Origin = "https://evil.example" }) },
    { "no Origin, another site's Referer", "sync=main&csrf=" .. token,
      with(good, { Origin = false, Referer = "https://evil.example/page" }) },
    { "neither Origin nor Referer", "sync=main&csrf=" .. token, with(good, { Origin = false }) },
    { "no cookie (a cross-site request: SameSite=Strict)", "sync=main&csrf=" .. token, with(good, { Cookie = false }) },
  }
  for _, c in ipairs(cases) do
    local h = {}
    for k, v in pairs(c[3]) do if v then h[k] = v end end
    local r = d:post("/status/sync", c[2], h)
    t:eq(r.status, 403, c[1])
    t:contains(r.body, "Sync now refused", c[1])
  end
  t:eq(d:get("/status/sync", AUTH).status, 405, "GET on the form's target")
  t:eq(d:post("/status/sync", "sync=nope&csrf=" .. token, good).status, 400, "an unknown sync entry")
end)

test("sync now: the entry, then one user; 303 back to the page; runs recorded as manual", function(t)
  local token, cookie = session()
  local h = with(with(AUTH, FORM), { Origin = d.base, Cookie = cookie })
  local r = d:post("/status/sync", "sync=main&csrf=" .. token, h)
  t:eq(r.status, 303)
  t:eq(r.headers.location, "/?requested=main")
  local done = serve.wait_for(function()
    local list = runs(w)
    return #list >= 2 and list[1].outcome ~= "running" and list
  end, 60)
  t:ok(done, "a second run recorded")
  if not done then return end
  -- exactly one more run: none of the refused forms of the test before started one
  t:eq(#done, 2, "runs in the store")
  t:eq(done[1].trigger, "manual")
  t:eq(done[1].covers, "full")
  t:eq(done[1].outcome, "ok")
  t:ok(d:find_log("status page: sync now"), "logged")
  -- one user, with a Referer instead of an Origin
  h.Origin = nil
  h.Referer = d.base .. "/"
  r = d:post("/status/sync", "sync=main&user=bob.stone%40example.com&csrf=" .. token, h)
  t:eq(r.status, 303)
  t:eq(r.headers.location, "/?requested=main&user=bob.stone%40example.com")
  local user_run = serve.wait_for(function()
    local list = runs(w)
    return #list >= 3 and list[1].outcome ~= "running" and list[1]
  end, 60)
  t:ok(user_run, "a third run")
  if user_run then
    t:eq(user_run.trigger, "manual")
    t:eq(user_run.covers, "user bob.stone@example.com")
  end
  local page = d:get("/?requested=main&user=bob.stone%40example.com", AUTH).body
  t:contains(page, "Sync now asked for <strong>main</strong> (user <strong>bob.stone@example.com</strong>)")
  t:contains(page, '<a href="/status/runs/3">run 3</a>', "the new runs are listed")
end)

test("the page answers while a run goes on, and shows the run and its progress", function(t)
  -- twelve new users and a slow Jira: the run takes seconds
  for i = 1, 12 do
    w:okta_user(("00uN%02d"):format(i), ("new%02d@example.com"):format(i), { groups = { "00gEng" } })
  end
  w:load()
  w.jira:faults{ latency_ms = 500 }
  local token, cookie = session()
  local r = d:post("/status/sync", "sync=main&csrf=" .. token,
    with(with(AUTH, FORM), { Origin = d.base, Cookie = cookie }))
  t:eq(r.status, 303)
  local seen = serve.wait_for(function()
    local p = d:get("/", AUTH)
    return p.status == 200 and p.body:find("Operations applied: ", 1, true) and p.body
  end, 120)
  w.jira:faults{}
  t:ok(seen, "the overview showed the run in progress")
  if seen then
    t:match(seen, '<h3><a href="/status/runs/(%d+)">run %1</a> · main</h3>', "the running run, linked")
    t:match(seen, '<progress id="ops%-%d+" max="(%d+)" value="%d+">', "its operations as a progress bar")
    t:match(seen, "Applying to jira: %a+", "the phase serve reported")
  end
  t:ok(serve.wait_for(function()
    local list = runs(w)
    return list[1] and list[1].outcome ~= "running"
  end, 120), "the run ends")
  -- (the store records the end a moment before serve publishes it to the page)
  t:ok(serve.wait_for(function() return d:get("/", AUTH).body:find("No run in progress.", 1, true) end, 120),
    "the page says no run is in progress")
end)

test("the hook's recent deliveries, accepted and refused", function(t)
  local f = assert(io.open(os.getenv("DATA_DIR") .. "/fixtures/okta/docs_event_hook_delivery_user_session_start.json"))
  local body = assert(json.decode(f:read("a"))).body
  f:close()
  body.data.events[1].uuid = "uuid-status-1"
  body.data.events[1].actor = { id = "00u1", type = "User", alternateId = "ann.lee@example.com", displayName = "Ann" }
  local text = json.encode(body)
  local hook = { ["Content-Type"] = "application/json" }
  t:eq(d:post("/hooks/okta", text, with(hook, { Authorization = "wrong-secret" })).status, 401)
  t:eq(d:post("/hooks/okta", text, with(hook, { Authorization = "hook-secret-value" })).status, 200)
  t:eq(d:post("/hooks/okta", text, with(hook, { Authorization = "hook-secret-value" })).status, 200, "again: a duplicate")
  local page = d:get("/", AUTH).body
  t:contains(page, "3 deliveries since start (2 accepted, 1 refused for their Authorization")
  t:contains(page, "1 events, 1 duplicates")
  -- newest first: the duplicate, the accepted one, the refused one
  local rows = {}
  for result, events, dups in page:gmatch('<span class="badge b%-%w+">(%w+)</span></td><td data%-label="New events" class="num">(%d+)</td><td data%-label="Duplicates" class="num">(%d+)</td>') do
    rows[#rows + 1] = ("%s %s %s"):format(result, events, dups)
  end
  t:same(rows, { "accepted 0 1", "accepted 1 0", "unauthorized 0 0" })
  t:ok(serve.wait_for(function()
    for _, r in ipairs(runs(w)) do if r.trigger == "event" and r.outcome ~= "running" then return true end end
  end, 60), "the event's user was synced")
end)

test("serve.tls: the page over HTTPS, its cookie Secure, the https Origin required", function(t)
  local tmp = os.tmpname(); os.remove(tmp); os.execute("mkdir -p " .. tmp)
  local cert, key = tmp .. "/tls.crt", tmp .. "/tls.key"
  t:ok(os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -days 1 -keyout %s -out %s 2>/dev/null")
    :format(key, cert)), "openssl made a certificate")
  local w3 <close> = world.new{ products = { "jira" }, extra = { raw = ([[
  serve = { listen = "127.0.0.1:0", tls = { cert = %q, key = %q },
            status = { user = "admin", password = env "USERSYNC_UI_PASSWORD" } },]]):format(cert, key) } }
  w3:okta_user("00u1", "ann.lee@example.com")
  w3:load()
  local d3 <close> = serve.start(w3, { env = { USERSYNC_UI_PASSWORD = PASSWORD } })
  t:eq(d3.scheme, "https")
  t:eq(d3:get("/").status, 401)
  local r = d3:get("/", AUTH)
  t:eq(r.status, 200)
  t:match(r.headers["set-cookie"] or "", "; SameSite=Strict; Secure$")
  local token = r.body:match('name="csrf" value="(%x+)"')
  local cookie = (r.headers["set-cookie"] or ""):match("^(usersync_csrf=%x+)")
  local h = with(with(AUTH, FORM), { Cookie = cookie, Origin = d3.base:gsub("^https", "http") })
  t:eq(d3:post("/status/sync", "sync=main&csrf=" .. tostring(token), h).status, 403, "an http:// Origin")
  h.Origin = d3.base
  t:eq(d3:post("/status/sync", "sync=main&csrf=" .. tostring(token), h).status, 303, "the https:// Origin")
  t:eq(d3:stop(), 0)
  os.execute("rm -rf " .. tmp)
end)

test("hostile names: a target named jira+eu/\"x\" is linked and reachable; bidi overrides and control characters never reach the page", function(t)
  local NAME = 'jira+eu/"x"'
  local w4 <close> = world.new{ products = { "jira" }, extra = { raw = section(true) } }
  -- Carol's first name turns the text after it right to left; her last name carries a terminal escape
  w4:okta_user("00u1", "ann.lee@example.com", { profile = { firstName = "Ann\u{202E}exe.txt", lastName = "Lee\27[31m\u{2066}" } })
  w4:load()
  local f = assert(io.open(w4.config))
  local text = f:read("a")
  f:close()
  text = text:gsub("\n    jira = {", "\n    [" .. ("%q"):format(NAME) .. "] = {", 1):gsub('targets = { "jira" }', "targets = { " .. ("%q"):format(NAME) .. " }", 1)
  f = assert(io.open(w4.config, "w"))
  f:write(text)
  f:close()
  local r = w4:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  local d4 <close> = serve.start(w4, { env = { USERSYNC_UI_PASSWORD = PASSWORD } })
  local page = d4:get("/", AUTH).body
  -- hand-written: the name percent-encoded in the href, escaped as the link's text
  local link = '<a href="/status/targets/jira%2Beu%2F%22x%22">jira+eu/&quot;x&quot;</a>'
  t:contains(page, link)
  local tp = d4:get("/status/targets/jira%2Beu%2F%22x%22", AUTH)
  t:eq(tp.status, 200, "the link leads to the target's page")
  t:contains(tp.body, "<h1>Managed accounts on jira+eu/&quot;x&quot;</h1>")
  t:contains(tp.body, '<td data-label="Account">ann.lee@example.com</td>')
  t:eq(d4:get("/status/targets/jira%20eu%2F%22x%22", AUTH).status, 404, "decoded once only: a space is not a plus")
  local run = d4:get("/status/runs/1", AUTH).body
  t:contains(run, "display name “Ann\u{FFFD}exe.txt Lee[31m\u{FFFD}”", "overrides shown as U+FFFD, ESC dropped")
  -- sync now for a login of 120 two-byte characters: 720 bytes percent-encoded, more than a Location keeps
  local token = page:match('name="csrf" value="(%x+)"')
  local r2 = d4:get("/", AUTH)
  local cookie = (r2.headers["set-cookie"] or ""):match("^(usersync_csrf=%x+)")
  local posted = d4:post("/status/sync", "sync=main&user=" .. ("%C3%A9"):rep(120) .. "&csrf=" .. tostring(token),
    with(with(AUTH, FORM), { Origin = d4.base, Cookie = cookie }))
  t:eq(posted.status, 303)
  t:eq(posted.headers.location, "/?requested=main", "the login left out of the notice, not cut mid-escape")
  -- the token and cookie of another serve process (d's) are refused here
  local other_token, other_cookie = session()
  t:ok(other_token ~= token, "each process has its own token")
  t:eq(d4:post("/status/sync", "sync=main&csrf=" .. tostring(other_token),
    with(with(AUTH, FORM), { Origin = d4.base, Cookie = other_cookie })).status, 403, "another process's token")
  for _, body in ipairs{ page, tp.body, run } do
    t:ok(not body:find("\u{202E}", 1, true) and not body:find("\u{2066}", 1, true), "no bidi override on the page")
    t:ok(not body:find("\27", 1, true), "no escape character on the page")
  end
  t:eq(d4:stop(), 0)
end)

test("no secret on any page, even when Okta refuses the token and a run fails", function(t)
  local OKTA, ATL, HOOK = "okta-SECRET-token-0123456789", "atl-SECRET-token-0123456789", "hook-SECRET-0123456789"
  local w5 <close> = world.new{ products = { "jira" }, extra = { raw = section(true) } }
  w5:okta_user("00u1", "ann.lee@example.com")
  w5:load()
  t:eq(w5:usersync("sync").code, 0)
  -- serve holds other credentials than the simulators accept: its reads fail
  local d5 <close> = serve.start(w5, { env = { USERSYNC_UI_PASSWORD = PASSWORD, US_TEST_OKTA_TOKEN = OKTA,
                                             US_TEST_ATL_TOKEN = ATL, US_TEST_HOOK_SECRET = HOOK } })
  local token, cookie
  local pages = {}
  local p = d5:get("/", AUTH)
  token = p.body:match('name="csrf" value="(%x+)"')
  cookie = (p.headers["set-cookie"] or ""):match("^(usersync_csrf=%x+)")
  local posted = d5:post("/status/sync", "sync=main&csrf=" .. tostring(token), with(with(AUTH, FORM), { Origin = d5.base, Cookie = cookie }))
  t:eq(posted.status, 303)
  local ended = serve.wait_for(function()
    local list = runs(w5)
    return #list >= 2 and list[1].outcome ~= "running" and list[1]
  end, 60)
  t:ok(ended and ended.outcome ~= "ok", "the manual run ended, failed: " .. tostring(ended and ended.outcome))
  t:match(d5:get("/status/runs/" .. tostring(ended and ended.id), AUTH).body, "<dt>Error</dt><dd>[^<]*401",
    "its page shows Okta's refusal")
  for _, path in ipairs{ "/", "/status/runs/1", "/status/runs/2", "/status/runs/3", "/status/targets/jira", "/status/nothing" } do
    pages[#pages + 1] = { path, d5:get(path, AUTH) }
  end
  pages[#pages + 1] = { "403", d5:post("/status/sync", "sync=main&csrf=00", with(with(AUTH, FORM), { Origin = d5.base })) }
  pages[#pages + 1] = { "401", d5:get("/") }
  for _, pg in ipairs(pages) do
    local text = pg[2].body .. table.concat((function()
      local h = {} for k, v in pairs(pg[2].headers or {}) do h[#h + 1] = k .. ": " .. v end return h end)(), "\n")
    t:eq(text:find("SECRET", 1, true), nil, pg[1] .. ": no token or secret")
    t:eq(text:find(PASSWORD, 1, true), nil, pg[1] .. ": not the page's password")
  end
  t:eq(d5:log_text():find("SECRET", 1, true), nil, "nor in serve's log")
  t:eq(d5:stop(), 0)
end)

test("without serve.status there is no page at /", function(t)
  local w2 <close> = status_world(false)
  local d2 <close> = serve.start(w2)
  t:eq(d2:get("/", AUTH).status, 404)
  t:eq(d2:get("/status/style.css", AUTH).status, 404)
  t:eq(d2:get("/healthz").status, 200)
  t:eq(d2:stop(), 0)
end)

local stopped = d:stop()
test("serve stops cleanly", function(t) t:eq(stopped, 0) end)

return test.done()
