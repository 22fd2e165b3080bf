-- test_cli_output.lua: what a user sees on stderr and stdout from the real
-- `usersync` binary against the simulators: timestamped phase lines off a
-- terminal, --quiet, --verbose (also before the command), errors with one
-- line first and the detail indented, and (when util-linux `script` can give
-- the process a pseudo terminal) bars, colour, NO_COLOR and TERM=dumb.
local test = require "tap"
local world = require "support.world"
local proc = require "support.proc"

local USERSYNC = os.getenv("USERSYNC")
local TS = "%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ"
local UNSET = { "USERSYNC_LOG_LEVEL", "USERSYNC_LOG_FORMAT", "NO_COLOR" }

local function base_world()
  local w = world.new{ products = { "jira", "bitbucket" },
    sync = { groups = { mode = "manual", map = { Engineering = { "developers" } } } } }
  w:okta_group("00gEng", "Engineering")
  w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gEng" } })
  w:okta_user("00u2", "bob.stone@example.com", { groups = { "00gEng" } })
  w:load()
  return w
end

-- Runs usersync with argv (the config added) and the test tokens; extra env.
local function run(w, argv, env)
  local full = { USERSYNC }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  full[#full + 1] = "-c"; full[#full + 1] = w.config
  local e = { US_TEST_OKTA_TOKEN = "test-token", US_TEST_ATL_TOKEN = "test-token" }
  for k, v in pairs(env or {}) do e[k] = v end
  return proc.run(full, { env = e, unset = UNSET })
end

local function lines(s)
  local out = {}
  for l in s:gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

test("sync off a terminal: plain timestamped phase lines, no bars, no escape codes", function(t)
  local w <close> = base_world()
  local r = run(w, { "sync" })
  t:eq(r.code, 0, r.stderr)
  local err = lines(r.stderr)
  t:ok(#err >= 10, r.stderr)
  for _, l in ipairs(err) do t:match(l, "^" .. TS .. " INFO ", "every stderr line is a timestamped line") end
  t:match(r.stderr, TS .. " INFO reading okta %(app 0oaUsersyncApp%)\n")
  t:match(r.stderr, TS .. " INFO reading okta: done in [%d.]+s: 2 users, 1 group, 1 member list\n")
  t:match(r.stderr, TS .. " INFO reading jira\n")
  t:match(r.stderr, TS .. " INFO reading jira: done in [%d.]+s: 1 account,")
  t:match(r.stderr, TS .. " INFO reading bitbucket: done in")
  t:match(r.stderr, TS .. " INFO applying %d+ changes to jira\n")
  t:match(r.stderr, TS .. " INFO applying to jira: done in [%d.]+s: %d+ changes\n")
  -- in the order the phases ran
  local a = r.stderr:find("reading okta", 1, true)
  local b = r.stderr:find("reading jira", 1, true)
  local c = r.stderr:find("applying to jira", 1, true)
  t:ok(a < b and b < c, "okta, then targets, then apply")
  local all = r.stdout .. r.stderr
  t:ok(not all:find("\27", 1, true), "no escape codes")
  t:ok(not all:find("\r", 1, true), "no carriage returns")
  t:ok(not r.stderr:find("{\"ts\"", 1, true), "not JSON lines")
  t:match(r.stdout, "\n    %+ create user +ann%.lee@example%.com")
  t:match(r.stdout, "applied %d+ changes, 0 failed")
end)

test("--quiet: no progress, no plan text, only the result; also before the command", function(t)
  local w <close> = base_world()
  local r = run(w, { "sync", "--quiet" })
  t:eq(r.code, 0, r.stderr)
  t:eq(r.stderr, "", "nothing on stderr")
  t:match(r.stdout, "^applied %d+ changes, 0 failed; run 1 %(usersync show RUN for details%)\n$")
  r = run(w, { "-q", "sync" })
  t:eq(r.code, 0, r.stderr)
  t:eq(r.stderr, "")
  t:match(r.stdout, "^applied 0 changes, 0 failed; run 2 ")
  -- plan's result is the plan: still printed, without progress
  r = run(w, { "-q", "plan" })
  t:eq(r.code, 0)
  t:eq(r.stderr, "")
  t:contains(r.stdout, "summary: 0 changes")
  -- check: only the servers that are not ready
  r = run(w, { "check", "-q" })
  t:eq(r.code, 0, r.stderr)
  t:ok(not r.stdout:find("reachable", 1, true), r.stdout)
  t:match(r.stdout, "^config .*: ok")
end)

test("USERSYNC_LOG_FORMAT=json: the progress lines are JSON lines too", function(t)
  local w <close> = base_world()
  local r = run(w, { "plan" }, { USERSYNC_LOG_FORMAT = "json" })
  t:eq(r.code, 0, r.stderr)
  local json = require "usersync.json"
  local msgs = {}
  for _, l in ipairs(lines(r.stderr)) do
    local rec = json.decode(l)
    t:ok(rec, "a JSON line: " .. l)
    if rec then t:eq(rec.level, "info"); msgs[#msgs + 1] = rec.msg end
  end
  t:eq(msgs[1], "reading okta (app 0oaUsersyncApp)")
  t:match(msgs[2], "^reading okta: done in ")
end)

test("--verbose: a line per operation, request counts, http totals", function(t)
  local w <close> = base_world()
  local r = run(w, { "--verbose", "sync" })
  t:eq(r.code, 0, r.stderr)
  t:match(r.stderr, TS .. " DEBUG jira create_user ann%.lee@example%.com: ok\n")
  t:match(r.stderr, TS .. " DEBUG bitbucket add_member bob%.stone@example%.com in developers: ok\n")
  t:match(r.stderr, TS .. " DEBUG reading okta: %d+ requests\n")
  t:match(r.stderr, TS .. " DEBUG reading jira: %d+ requests\n")
  t:match(r.stderr, TS .. " DEBUG http: %d+ requests, %d+ attempts, 0 retries")
  -- after the command too, and without it no per-operation lines
  r = run(w, { "plan", "-v" })
  t:eq(r.code, 0)
  t:match(r.stderr, "DEBUG reading okta: %d+ requests")
  r = run(w, { "sync" })
  t:ok(not r.stderr:find("DEBUG", 1, true), r.stderr)
end)

test("errors: one line that says what failed, the detail indented below; exit 1", function(t)
  local w <close> = base_world()
  local r = run(w, { "sync" }, { US_TEST_ATL_TOKEN = "wrong-atl-token-77" })
  t:eq(r.code, 1, r.stderr)
  local err = lines(r.stderr)
  local at
  for i, l in ipairs(err) do if l:find("^usersync sync: reading jira failed") then at = i end end
  t:ok(at, r.stderr)
  t:match(err[at], "^usersync sync: reading jira failed: HTTP 401: credentials refused %(EAUTH%)$")
  t:match(err[at + 1], "^  list %a+: HTTP 401")
  t:match(err[at + 2], "^  nothing was planned or applied for jira; the other targets were not affected$")
  t:match(r.stderr, TS .. " ERROR reading jira: failed after")
  t:ok(not r.stderr:find("wrong-atl-token-77", 1, true), "token leaked")
  -- Okta: the status and Okta's own words first, then what that means
  r = run(w, { "sync" }, { US_TEST_OKTA_TOKEN = "wrong-okta-token-88" })
  t:eq(r.code, 1, r.stderr)
  err = lines(r.stderr)
  at = nil
  for i, l in ipairs(err) do if l:find("^usersync sync: reading okta failed") then at = i end end
  t:ok(at, r.stderr)
  t:match(err[at], "^usersync sync: reading okta failed: HTTP 401: E0000011 Invalid token provided %(EAUTH%)$")
  t:match(err[at + 1], "^  GET /api/v1/groups: HTTP 401 E0000011 Invalid token provided")
  t:match(err[at + 2], "^  the Okta read failed: nothing is planned or applied")
  t:ok(not r.stderr:find("safety limit", 1, true), "a failed read, not a safety stop")
  t:ok(not r.stderr:find("wrong-okta-token-88", 1, true), "token leaked")
  -- --quiet keeps the errors
  r = run(w, { "-q", "sync" }, { US_TEST_ATL_TOKEN = "wrong-atl-token-77" })
  t:eq(r.code, 1)
  t:match(r.stderr, "^usersync sync: reading jira failed: HTTP 401")
  t:ok(not r.stderr:find("INFO", 1, true), "no progress with --quiet")
  -- a usage error: one line, exit 2
  r = proc.run({ USERSYNC, "-q" }, { unset = UNSET })
  t:eq(r.code, 2)
  t:contains(r.stdout, "usage: usersync")
  t:contains(r.stdout, "-q/--quiet")
end)

-- Under a pseudo terminal: util-linux `script` runs the command with its
-- stdout and stderr on a pty and copies what it wrote to our stdout.
local HAVE_SCRIPT = os.execute("command -v script >/dev/null 2>&1")

local function run_tty(w, args, env)
  local cmd = { USERSYNC }
  for _, a in ipairs(args) do cmd[#cmd + 1] = proc.quote(a) end
  cmd[#cmd + 1] = "-c " .. proc.quote(w.config)
  local e = { US_TEST_OKTA_TOKEN = "test-token", US_TEST_ATL_TOKEN = "test-token", TERM = "xterm", COLUMNS = "100" }
  for k, v in pairs(env or {}) do e[k] = v end
  return proc.run({ "script", "-qec", table.concat(cmd, " "), "/dev/null" }, { env = e, unset = UNSET })
end

test("on a terminal: bars redrawn in place, final lines, colour; NO_COLOR and TERM=dumb", function(t)
  if not HAVE_SCRIPT then t:ok(true, "skipped: no `script` to make a pseudo terminal"); return end
  local w <close> = base_world()
  local r = run_tty(w, { "sync" })
  t:eq(r.code, 0, r.stdout)
  local s = r.stdout
  t:match(s, "\rreading okta +%[", "a bar drawn with a carriage return")
  t:match(s, "reading okta +\27%[32mOK  \27%[0m  2 users, 1 group, 1 member list  in [%d.]+s")
  t:match(s, "applying to jira +\27%[32mOK  \27%[0m  %d+ changes")
  t:contains(s, "\27[32m+\27[0m create user")
  t:ok(not s:find(TS .. " INFO reading"), "no timestamped progress lines on a terminal")
  -- NO_COLOR: the same bars, no escape codes at all
  r = run_tty(w, { "plan" }, { NO_COLOR = "1" })
  t:eq(r.code, 0, r.stdout)
  t:match(r.stdout, "\rreading okta +%[")
  t:match(r.stdout, "reading okta +OK  ")
  t:ok(not r.stdout:find("\27", 1, true), "NO_COLOR: no escape codes")
  -- TERM=dumb: no colour either
  r = run_tty(w, { "plan" }, { TERM = "dumb" })
  t:eq(r.code, 0, r.stdout)
  t:ok(not r.stdout:find("\27", 1, true), "TERM=dumb: no escape codes")
  t:match(r.stdout, "reading jira +OK  ")
  -- an error headline is red on a colour terminal
  r = run_tty(w, { "sync" }, { US_TEST_ATL_TOKEN = "wrong" })
  t:eq(r.code, 1)
  t:contains(r.stdout, "\27[31musersync sync: reading jira failed: HTTP 401: credentials refused (EAUTH)\27[0m")
  -- (the read lists accounts and groups at once: whichever refusal comes back
  -- first is the one reported)
  t:match(r.stdout, "reading jira +\27%[1;31mFAIL\27%[0m  \27%[31mjira: list %a+: HTTP 401[^\r\n]*\27%[0m\r?\n")
  for l in r.stdout:gmatch("[^\r\n]*reading %a+ +[^\r\n]*FAIL[^\r\n]*") do
    t:ok(#l:gsub("\27%[[%d;]*m", "") <= 99, "a FAIL line fits the terminal: " .. l)
  end
end)

return test.done()
