-- `usersync check` against the simulators: every source and target reached
-- and reported; bad credentials and an unreachable server are "not ready"
-- (exit 1) with the reason; secrets never printed.
local test = require "tap"
local world = require "support.world"
local json = require "usersync.json"
local proc = require "support.proc"

test("all servers ready: exit 0 and a report per server", function(t)
  local w <close> = world.new {}
  w:okta_user("00u1", "ann@example.com")
  w:load()
  local r = w:usersync("check")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:contains(r.stdout, "config " .. w.config .. ": ok (1 source, 3 targets, 1 sync entry)")
  t:match(r.stdout, "source okta %(okta, http://127%.0%.0%.1:%d+%): ok")
  t:contains(r.stdout, "  app 0oaUsersyncApp: ok")
  t:contains(r.stdout, "  read users: ok")
  t:contains(r.stdout, "  read logs: ok")
  t:match(r.stdout, "target jira %(jira, http://127%.0%.0%.1:%d+%): ok")
  t:match(r.stdout, "  product: [^\n]*Jira[^\n]*\n")
  t:contains(r.stdout, "  authenticated as: admin")
  t:contains(r.stdout, "target confluence (confluence")
  t:contains(r.stdout, "target bitbucket (bitbucket")
  local j = w:usersync("check", "--json")
  t:eq(j.code, 0)
  local doc = assert(json.decode(j.stdout))
  t:eq(doc.valid, true)
  t:eq(doc.servers.sources.okta.ok, true)
  t:eq(doc.servers.targets.jira.reachable, true)
end)

test("wrong credentials and an unreachable server: exit 1 with the reason, no secret printed", function(t)
  local w <close> = world.new { products = { "jira" } }
  w:load()
  local r = proc.run({ os.getenv("USERSYNC"), "check", "-c", w.config },
    { env = { US_TEST_OKTA_TOKEN = "wrong-okta-token-123", US_TEST_ATL_TOKEN = "wrong-password-456" } })
  t:eq(r.code, 1)
  t:contains(r.stdout, "source okta (okta")
  t:contains(r.stdout, "PROBLEM")
  t:contains(r.stderr, "some servers are not ready")
  t:match(r.stdout, "target jira %(jira, [^)]*%): PROBLEM")
  t:contains(r.stdout, "EAUTH")
  t:contains(r.stdout, "  what to do: check sources.okta.token (an SSWS API token of an admin")
  t:contains(r.stdout, "  credentials: refused (HTTP 401): check targets.jira.token")
  t:ok(not (r.stdout .. r.stderr):find("wrong-okta-token-123", 1, true), "okta token leaked")
  t:ok(not (r.stdout .. r.stderr):find("wrong-password-456", 1, true), "password leaked")
  -- a target nobody listens on
  w.jira:stop()
  r = w:usersync("check")
  t:eq(r.code, 1)
  t:match(r.stdout, "target jira [^\n]*PROBLEM\n  reachable: no")
  t:contains(r.stdout, "ECONNREFUSED")
end)

local function write(path, text)
  local f = assert(io.open(path, "w")); f:write(text); f:close()
end

-- Rewrites the world's config: gsub(pattern, replacement) on its text.
local function edit_config(w, pattern, repl)
  local f = assert(io.open(w.config)); local text = f:read("a"); f:close()
  local new, n = text:gsub(pattern, repl)
  assert(n > 0, "config edit matched nothing: " .. pattern)
  write(w.config, new)
end

test("check compiles the policy: a syntax error fails check (exit 2, file and line) as it fails sync", function(t)
  local w <close> = world.new { products = { "jira" }, sync = { policy = "bad-policy.lua" } }
  write(w.dir .. "/bad-policy.lua", "local M = {}\nfunction M.username(u)\n  return u.login +\nend\nreturn M\n")
  w:okta_user("00u1", "ann@example.com")
  w:load()
  local r = w:usersync("check")
  t:eq(r.code, 2, r.stdout .. r.stderr)
  t:match(r.stderr, "bad%-policy%.lua:4:")
  t:contains(r.stderr, "sync[1].policy")
  t:ok(not r.stderr:find("stack traceback", 1, true), "no traceback")
  -- the servers are not contacted for a config that cannot run
  t:eq(#w.jira:requests(), 0)
  local s = w:usersync("sync")
  t:ok(s.code ~= 0, "sync fails too")
  t:match(s.stderr, "bad%-policy%.lua:4:")
  local j = w:usersync("check", "--json")
  t:eq(j.code, 2)
  local doc = assert(json.decode(j.stdout))
  t:eq(doc.valid, false)
  t:match(doc.errors[1], "bad%-policy%.lua:4:")
end)

test("check names every file the config needs that is missing: policy, TLS cert/key, job script (exit 2)", function(t)
  local w <close> = world.new { products = { "jira" }, sync = { policy = "nowhere/policy.lua" },
    extra = { raw = '  serve = { tls = { cert = "missing-cert.pem", key = "missing-key.pem" },\n'
                 .. '            jobs = { { script = "missing-job.lua", every = "1h" } } },' } }
  w:load()
  local r = w:usersync("check")
  t:eq(r.code, 2, r.stdout .. r.stderr)
  t:contains(r.stderr, "sync[1].policy: " .. w.dir .. "/nowhere/policy.lua: no such file")
  t:contains(r.stderr, "serve.tls.cert: " .. w.dir .. "/missing-cert.pem: no such file")
  t:contains(r.stderr, "serve.tls.key: " .. w.dir .. "/missing-key.pem: no such file")
  t:contains(r.stderr, "serve.jobs[1].script: " .. w.dir .. "/missing-job.lua: no such file")
  t:match(r.stderr, "config [^\n]* has 4 errors")
  r = w:usersync("check", "--config-only")
  t:eq(r.code, 2)
end)

test("a store that cannot be written: a headline, the detail and what to do, never a traceback (exit 1)", function(t)
  local w <close> = world.new { products = { "jira" } }
  w:okta_user("00u1", "ann@example.com")
  w:load()
  -- the store's directory is a regular file: it cannot be created, even by root
  write(w.dir .. "/not-a-dir", "")
  edit_config(w, 'state = "[^"]*"', ('state = %q'):format(w.dir .. "/not-a-dir/usersync.db"))
  local r = w:usersync("sync")
  t:eq(r.code, 1, r.stdout .. r.stderr)
  t:ok(not r.stderr:find("stack traceback", 1, true), "no traceback: " .. r.stderr)
  t:ok(not r.stderr:find("%.lua:%d+: "), "no Lua source position: " .. r.stderr)
  t:contains(r.stderr, "not-a-dir/usersync.db")
  t:match(r.stderr, "\n  what to do: check that the store's directory exists")
end)

test("an error that escapes a command (a damaged store): headline, detail, what to do; the trace only with USERSYNC_DEBUG", function(t)
  local w <close> = world.new { products = { "jira" } }
  w:okta_user("00u1", "ann@example.com")
  w:load()
  t:eq(w:usersync("sync").code, 0)
  local db = assert(require("usersync.state").open(w.dir .. "/usersync.db"))
  assert(db:exec("DROP TABLE runs"))
  assert(db:exec("CREATE TABLE runs (x)"))
  db:close()
  for _, cmd in ipairs({ "sync", "history" }) do
    local r = w:usersync(cmd)
    t:eq(r.code, 1, cmd .. ": " .. r.stderr)
    t:ok(not r.stderr:find("stack traceback", 1, true), cmd .. ": no traceback: " .. r.stderr)
    t:ok(not r.stderr:find("%.lua:%d+"), cmd .. ": no Lua source position: " .. r.stderr)
    t:contains(r.stderr, "usersync " .. cmd .. ": the store cannot be used\n  detail: ")
    t:contains(r.stderr, "\n  what to do: check that the store file (`state` in the config) and its directory are writable")
  end
  -- check reads the store and says it cannot
  local c = w:usersync("check", "--config-only")
  t:eq(c.code, 1, c.stdout .. c.stderr)
  t:match(c.stdout, "store [^\n]*: cannot be read: store: no such column: id")
  local r = proc.run({ os.getenv("USERSYNC"), "sync", "-c", w.config },
    { env = { US_TEST_OKTA_TOKEN = "test-token", US_TEST_ATL_TOKEN = "test-token", USERSYNC_DEBUG = "1" } })
  t:eq(r.code, 1)
  t:contains(r.stderr, "the store cannot be used")
  t:contains(r.stderr, "stack traceback")
end)

test("an Okta URL with a path is refused by the config check, with the base URL to use (exit 2)", function(t)
  local w <close> = world.new { products = { "jira" } }
  w:load()
  edit_config(w, '(url = ")(http://127%.0%.0%.1:%d+)(", token = env "US_TEST_OKTA_TOKEN")', "%1%2/admin/dashboard%3")
  local r = w:usersync("check")
  t:eq(r.code, 2, r.stdout .. r.stderr)
  t:match(r.stderr, "sources%.okta%.url: the Okta URL must be the org's base URL %(http://127%.0%.0%.1:%d+%), not [^\n]*/admin/dashboard")
  t:eq(#w.okta:requests(), 0)
end)

test("a wrong app id and a refused Jira password: what is wrong and what to do", function(t)
  local w <close> = world.new { products = { "jira" } }
  w:load()
  edit_config(w, '"0oaUsersyncApp"', '"0oaWrongApp"')
  edit_config(w, 'token = env "US_TEST_ATL_TOKEN"', 'user = "admin", password = env "US_TEST_ATL_TOKEN"')
  local r = proc.run({ os.getenv("USERSYNC"), "check", "-c", w.config },
    { env = { US_TEST_OKTA_TOKEN = "test-token", US_TEST_ATL_TOKEN = "wrong-password-456", NO_COLOR = "1" } })
  t:eq(r.code, 1, r.stdout .. r.stderr)
  t:contains(r.stdout, "  credentials: ok\n")
  t:contains(r.stdout, "  app 0oaWrongApp: not_found (the app id 0oaWrongApp does not exist in this org; "
    .. "find it in the Okta admin console under Applications: the app's URL ends in /instance/ID/)")
  t:match(r.stdout, "target jira [^\n]*PROBLEM\n  reachable: yes\n  credentials: refused %(HTTP 401%): "
    .. "check targets%.jira%.user/password\n")
  t:ok(not (r.stdout .. r.stderr):find("wrong-password-456", 1, true), "password leaked")
end)

return test.done()
