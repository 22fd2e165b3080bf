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
  t:ok(not (r.stdout .. r.stderr):find("wrong-okta-token-123", 1, true), "okta token leaked")
  t:ok(not (r.stdout .. r.stderr):find("wrong-password-456", 1, true), "password leaked")
  -- a target nobody listens on
  w.jira:stop()
  r = w:usersync("check")
  t:eq(r.code, 1)
  t:match(r.stdout, "target jira [^\n]*PROBLEM\n  reachable: no")
  t:contains(r.stdout, "ECONNREFUSED")
end)

return test.done()
