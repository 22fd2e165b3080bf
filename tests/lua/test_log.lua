-- test_log.lua: usersync.log — the header example as written, text and
-- JSON lines, levels, structured fields, `with`, capture sinks, auto format
-- off a terminal, and that a registered secret never reaches the output.
local test = require "tap"
local log = require "usersync.log"
local secrets = require "usersync.secrets"
local json = require "usersync.json"

local USERSYNC = assert(os.getenv("USERSYNC"), "USERSYNC not set")
local SOURCE_DIR = assert(os.getenv("SOURCE_DIR"), "SOURCE_DIR not set")
local FIXED = 1795915425.678 -- 2026-11-29T01:23:45.678Z

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end
local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end
local function lines(s)
  local out = {}
  for l in s:gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end
-- Runs a Lua script with the usersync binary; returns exit ok, stdout, stderr.
local function run_script(src, env)
  local script, out, err = os.tmpname(), os.tmpname(), os.tmpname()
  write(script, src)
  local ok = os.execute(string.format("%s %s run %s >%s 2>%s </dev/null", env or "", USERSYNC,
    script, out, err))
  local o, e = read(out), read(err)
  os.remove(script); os.remove(out); os.remove(err)
  return ok, o, e
end
-- Captures what fn logs: configures a table sink (and opts), restores after.
local function capture(opts, fn)
  local sink = {}
  local cfg = { stream = sink, clock = function() return FIXED end }
  for k, v in pairs(opts) do cfg[k] = v end
  local prev = log.configure(cfg)
  local ok, err = pcall(fn)
  log.configure({ level = prev.level, format = prev.format, stream = prev.stream })
  if not ok then error(err, 0) end
  return sink
end

test("the example in log.lua's header runs as written and prints what it shows", function(t)
  local header = read(SOURCE_DIR .. "/runtime/lua/usersync/log.lua")
  local code, expected, section = {}, {}, "code"
  for line in header:gmatch("[^\n]*") do
    if not line:match("^%-%-") then break end
    if line:match("^%-%- writes to stderr:") then section = "text"
    elseif line:match("^%-%- and with format") then section = "json"
    elseif line:match("^%-%- Calls:") then break
    else
      local body = line:match("^%-%-   (.*)$")
      if body and section == "code" then code[#code + 1] = body end
      if body and section == "text" then expected[#expected + 1] = body end
    end
  end
  t:eq(#code, 7)
  t:eq(#expected, 4)
  local ok, out, err = run_script(table.concat(code, "\n"))
  t:ok(ok, "example ran")
  t:eq(out, "")
  local got = lines(err)
  t:eq(#got, #expected)
  for i, want in ipairs(expected) do
    local pattern = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ " ..
      want:sub(#"2026-11-29T01:23:45.678Z " + 1):gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0") .. "$"
    t:match(got[i] or "", pattern, "line " .. i)
  end
end)

test("text lines: timestamp, level, message, sorted fields, quoting", function(t)
  local out = capture({ format = "text", level = "debug" }, function()
    log.info("synced %d users to %s", 3, "jira")
    log.info("100% done")
    log.warn { msg = "rate limit near", remaining = 12, host = "x.okta.com" }
    log.event("error", "request failed", { status = 503, body = 'a "b" c=d', empty = "",
      ok = false, ratio = 0.5, whole = 2.0, list = { 1, 2 }, obj = { k = "v" }, none = json.null })
    log.debug("two\nlines")
  end)
  t:same(out, {
    "2026-11-29T01:23:45.678Z INFO synced 3 users to jira",
    "2026-11-29T01:23:45.678Z INFO 100% done",
    "2026-11-29T01:23:45.678Z WARN rate limit near host=x.okta.com remaining=12",
    '2026-11-29T01:23:45.678Z ERROR request failed body="a \\"b\\" c=d" empty="" list=[1,2] ' ..
      'none=null obj={"k":"v"} ok=false ratio=0.5 status=503 whole=2.0',
    "2026-11-29T01:23:45.678Z DEBUG two\n    lines",
  })
end)

test("JSON lines: one object per line, ts/level/msg first, typed fields", function(t)
  local out = capture({ format = "json" }, function()
    log.info { msg = "user created", user = "alice", target = "jira", n = 3, nested = { a = { 1, 2 } } }
    log.error("boom: %s", "x")
    log.info { msg = "clash", level = "mine", ts = 1 }
  end)
  t:eq(#out, 3)
  t:eq(out[1], '{"ts":"2026-11-29T01:23:45.678Z","level":"info","msg":"user created",' ..
    '"n":3,"nested":{"a":[1,2]},"target":"jira","user":"alice"}')
  local rec = json.decode(out[2])
  t:same(rec, { ts = "2026-11-29T01:23:45.678Z", level = "error", msg = "boom: x" })
  rec = json.decode(out[3])
  t:eq(rec.level, "info")
  t:eq(rec._level, "mine")
  t:eq(rec._ts, 1)
end)

test("levels filter; enabled; off", function(t)
  local out = capture({ format = "text", level = "warn" }, function()
    t:eq(log.level(), "warn")
    t:eq(log.enabled("info"), false)
    t:eq(log.enabled("error"), true)
    log.debug("no")
    log.info("no")
    log.warn("yes 1")
    log.event("warning", "yes 2")
    log.error("yes 3")
  end)
  t:eq(#out, 3)
  t:contains(out[1], "WARN yes 1")
  t:contains(out[2], "WARN yes 2")
  t:contains(out[3], "ERROR yes 3")
  out = capture({ level = "off", format = "text" }, function()
    log.error("nothing")
    t:eq(log.enabled("error"), false)
  end)
  t:same(out, {})
end)

test("a registered secret never appears, in text or JSON, wherever it is", function(t)
  local secret = secrets.register("tok/en\"with\\odd-chars-123456")
  local simple = secrets.register("SSWS00abcdefSECRET")
  for _, format in ipairs({ "text", "json" }) do
    local out = capture({ format = format, level = "debug" }, function()
      log.info("Authorization: SSWS %s", simple)
      log.info("token " .. secret)
      log.warn { msg = "header " .. simple, token = secret, [simple] = "as a key",
        nested = { deeper = { secret, "x " .. simple .. "." } } }
      log.event("error", "failed", { err = setmetatable({}, { __tostring = function() return "E " .. secret end }) })
      log.with({ auth = "Bearer " .. simple }).debug("with %s", secret)
    end)
    t:eq(#out, 5, format)
    for i, line in ipairs(out) do
      t:ok(not line:find(secret, 1, true), format .. " line " .. i .. " leaks the secret: " .. line)
      t:ok(not line:find(simple, 1, true), format .. " line " .. i .. " leaks: " .. line)
      t:ok(not line:find("SSWS00abcdef", 1, true), format .. " line " .. i .. " leaks part: " .. line)
      t:ok(not line:find("tok/en", 1, true) and not line:find("tok\\/en", 1, true),
        format .. " line " .. i .. " leaks an escaped form: " .. line)
      t:contains(line, "********", format .. " line " .. i)
    end
    if format == "json" then
      for _, line in ipairs(out) do t:ok(json.decode(line) ~= nil, "valid JSON: " .. line) end
    end
  end
  -- and on the real stderr of a process, with the secret from the environment
  local ok, _, err = run_script([[
    local secrets = require "usersync.secrets"
    local log = require "usersync.log"
    local tok = secrets.env("TEST_LOG_TOKEN")
    log.info("calling with %s", tok)
    log.info { msg = "fields", token = tok }
  ]], "TEST_LOG_TOKEN='very/secret\"value'")
  t:ok(ok)
  t:ok(not err:find("very/secret", 1, true) and not err:find("very\\/secret", 1, true), err)
  t:eq(#lines(err), 2)
end)

test("a secret is masked as a whole value only: words and names that contain it stay", function(t)
  secrets.register("admin")
  local out = capture({ format = "json" }, function()
    log.info("login as admin failed: password admin refused")
    log.info { msg = "group site-admins", group = "site-admin", host = "admin.example.com", pw = "admin" }
  end)
  local a, b = json.decode(out[1]), json.decode(out[2])
  t:eq(a.msg, "login as ******** failed: password ******** refused")
  t:eq(b.msg, "group site-admins")
  t:eq(b.group, "site-admin")
  t:eq(b.host, "admin.example.com")
  t:eq(b.pw, "********")
  -- credentials by their shape, configured or not
  out = capture({ format = "text" }, function()
    log.warn("HTTP 502: Authorization: Basic dXNlcjpwYXNzd29yZA== was rejected")
    log.warn { msg = "echo", body = '{"Cookie":"JSESSIONID=1A2B3C4D5E","token":"abc"}' }
  end)
  t:contains(out[1], "Authorization: Basic ******** was rejected")
  t:ok(not out[2]:find("1A2B3C4D5E", 1, true), out[2])
end)

test("format auto: JSON lines when stderr is not a terminal, and for sinks", function(t)
  local ok, _, err = run_script([[require("usersync.log").info{ msg = "hello", n = 1 }]])
  t:ok(ok)
  local rec = json.decode(err)
  t:eq(rec.msg, "hello")
  t:eq(rec.level, "info")
  t:eq(rec.n, 1)
  t:match(rec.ts, "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$")
  -- on a terminal (a pty from util-linux `script`, when installed): text
  if os.execute("command -v script >/dev/null 2>&1") then
    local script = os.tmpname()
    write(script, [[require("usersync.log").info("on a tty %d", 1)]])
    local p = io.popen(string.format("script -qec '%s run %s' /dev/null </dev/null", USERSYNC, script))
    local tty = p:read("a")
    p:close()
    os.remove(script)
    t:match(tty, "^%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z INFO on a tty 1\r?\n$")
  end
  local out = capture({ format = "auto" }, function() log.info("x") end)
  t:match(out[1], '^{"ts":')
  -- environment defaults: USERSYNC_LOG_LEVEL and USERSYNC_LOG_FORMAT
  ok, _, err = run_script([[
    local log = require "usersync.log"
    log.debug("shown %d", 1)
  ]], "USERSYNC_LOG_LEVEL=debug USERSYNC_LOG_FORMAT=text")
  t:match(err, "^%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z DEBUG shown 1\n$")
end)

test("sinks: function gets line and masked record; file handle", function(t)
  local got = {}
  local prev = log.configure({ format = "text", clock = function() return FIXED end,
    stream = function(line, record) got[#got + 1] = { line = line, record = record } end })
  log.info { msg = "m", k = "v" }
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  log.configure({ stream = f, format = "json" })
  log.warn("to a file")
  f:close()
  log.configure({ level = prev.level, format = prev.format, stream = prev.stream })
  t:eq(got[1].line, "2026-11-29T01:23:45.678Z INFO m k=v")
  t:same(got[1].record, { ts = "2026-11-29T01:23:45.678Z", level = "info", msg = "m", fields = { k = "v" } })
  t:eq(read(path), '{"ts":"2026-11-29T01:23:45.678Z","level":"warn","msg":"to a file"}\n')
  os.remove(path)
end)

test("with: context fields on every line; a call's own fields win", function(t)
  local out = capture({ format = "text" }, function()
    local runlog = log.with { run = 17, sync = "main" }
    runlog.info("start")
    runlog.with({ target = "jira" }).info { msg = "op", sync = "other" }
    log.info("plain")
  end)
  t:same(out, {
    "2026-11-29T01:23:45.678Z INFO start run=17 sync=main",
    "2026-11-29T01:23:45.678Z INFO op run=17 sync=other target=jira",
    "2026-11-29T01:23:45.678Z INFO plain",
  })
end)

test("misuse raises", function(t)
  t:raises(function() log.configure("debug") end, "expected a table")
  t:raises(function() log.configure { level = "loud" } end, "level must be")
  t:raises(function() log.configure { format = "xml" } end, "format must be")
  t:raises(function() log.configure { stream = 42 } end, "stream must be")
  t:raises(function() log.configure { colour = true } end, "unknown setting 'colour'")
  t:raises(function() log.event("loud", "x") end, "unknown level")
  t:raises(function() log.event("info", "x", "fields") end, "fields must be a table")
  t:raises(function() log.with("x") end, "expected a table")
  capture({ level = "info" }, function()
    t:raises(function() log.info("%d", "not a number") end, "bad argument")
    t:raises(function() log.info(42, 1) end, "expected a format string")
  end)
end)

return test.done()
