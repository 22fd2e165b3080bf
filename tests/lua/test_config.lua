-- Tests of config loading and schema validation (usersync.config).
local test = require "tap"
local config = require "usersync.config"
local proc = require "support.proc"

local SRC = os.getenv("SOURCE_DIR") or "."

local function write(text) return proc.tempfile(text, ".conf.lua") end

local GOOD = [[
return {
  sources = { okta = { type = "okta", url = "https://example.okta.com/", token = "tok-123456", app_id = "0oa1" } },
  targets = { jira = { type = "jira", url = "https://jira.example.com", token = "pat-abcdef" } },
  sync = { { name = "main", source = "okta", targets = { "jira" } } },
}
]]

test("a valid config loads with defaults filled in", function(t)
  local cfg, errors = config.load(write(GOOD))
  t:ok(cfg, table.concat(errors or {}, "\n"))
  if not cfg then return end
  t:eq(cfg.state, config.dir_of(cfg._path) .. "/usersync.db", "the store sits next to the config")
  t:eq(cfg.sources.okta.url, "https://example.okta.com", "trailing slash removed")
  t:eq(cfg.sync[1].groups.mode, "manual")
  t:eq(cfg.sync[1].groups.keep_existing, true)
  t:eq(cfg.sync[1].users.delete, false)
  t:eq(cfg.targets.jira.concurrency, 8)
end)

test("the example config from scripts/ validates when its secrets are set", function(t)
  local r = proc.run({ os.getenv("USERSYNC"), "check", "--config-only", "-c", SRC .. "/scripts/examples/usersync.conf.lua" },
    { env = { OKTA_API_TOKEN = "okta-secret-1", JIRA_PAT = "jira-secret-2", CONF_PW = "conf-secret-3", BB_TOKEN = "bb-secret-4", OKTA_HOOK_SECRET = "hook-secret-5" } })
  t:eq(r.code, 0, r.stderr)
  t:match(r.stdout, "ok %(1 source, 3 targets, 1 sync entry%)")
end)

test("all errors are reported together with file and key path", function(t)
  local path = write([[
return {
  sources = { okta = { type = "okta", url = "example.okta.com", token = env "USERSYNC_TEST_UNSET_VAR", appid = "x" } },
  targets = { jira = { type = "jira", url = "https://jira.example.com", token = "pat-abcdef", concurrency = 0 } },
  sync = { { name = "a", source = "okt", targets = { "jira", "wiki" }, groups = { mode = "auto" }, every = "5x",
             limits = { max_deprovision = "lots" } } },
}
]])
  local cfg, errors = config.load(path)
  t:eq(cfg, nil)
  local all = table.concat(errors, "\n")
  local want = {
    path .. ': sync[1].groups.mode: expected "manual" or "on_the_fly", got "auto"',
    path .. ": sources.okta.appid: unknown key",
    path .. ": sources.okta.token: environment variable USERSYNC_TEST_UNSET_VAR is not set",
    path .. ': sources.okta.url: expected an http:// or https:// URL, got "example.okta.com"',
    path .. ': sync[1].every: expected a duration like "30s", "15m", "1h" or "7d", got "5x"',
    path .. ': sync[1].source: no source named "okt" in `sources`',
    path .. ': sync[1].targets[2]: no target named "wiki" in `targets`',
    path .. ": targets.jira.concurrency: expected an integer from 1 to 64, got 0",
    path .. ': sync[1].limits.max_deprovision: expected a count (10) or a percentage ("5%"), got "lots"',
  }
  for _, w in ipairs(want) do t:contains(all, w) end
  t:eq(#errors, #want, all)
end)

test("missing required keys and wrong types", function(t)
  local cfg, errors = config.load(write("return { sources = {}, sync = 'x' }"))
  t:eq(cfg, nil)
  local all = table.concat(errors, "\n")
  t:contains(all, "sources: expected at least one entry")
  t:contains(all, "targets: missing (required)")
  t:contains(all, 'sync: expected a list, got "x"')
end)

test("a config that does not return a table, or does not compile, or raises", function(t)
  local p = write("return 42")
  local cfg, errors = config.load(p)
  t:eq(cfg, nil); t:eq(errors[1], p .. ": the config must return a table, got 42")
  p = write("return {")
  cfg, errors = config.load(p)
  t:eq(cfg, nil); t:contains(errors[1], ":1: unexpected symbol near <eof>")
  t:contains(errors[1], p)
  p = write("local x = nil\nreturn x.y")
  cfg, errors = config.load(p)
  t:eq(cfg, nil); t:contains(errors[1], p .. ":2:")
  cfg, errors = config.load("/nonexistent/usersync.conf.lua")
  t:eq(cfg, nil); t:contains(errors[1], "/nonexistent/usersync.conf.lua")
end)

test("config code is sandboxed", function(t)
  local cfg, errors = config.load(write("os.execute('true')\n" .. GOOD))
  t:eq(cfg, nil)
  t:contains(errors[1], ":1: attempt to call a nil value (field 'execute')")
  cfg, errors = config.load(write("while true do end"))
  t:eq(cfg, nil)
  t:contains(errors[1], "instruction budget")
end)

test("file secrets: trailing newline stripped, missing file named, values masked", function(t)
  local secret = proc.tempfile("s3cr3t-value-xyz\n")
  local text = GOOD:gsub('token = "pat%-abcdef"', 'token = file "' .. secret .. '"')
  local cfg, errors = config.load(write(text))
  t:ok(cfg, table.concat(errors or {}, "\n"))
  t:eq(cfg and cfg.targets.jira.token, "s3cr3t-value-xyz")
  t:eq(require("usersync.secrets").mask("Bearer s3cr3t-value-xyz!"), "Bearer ********!")
  text = GOOD:gsub('token = "pat%-abcdef"', 'token = file "/nonexistent/secret"')
  cfg, errors = config.load(write(text))
  t:eq(cfg, nil)
  t:contains(errors[1], "targets.jira.token: cannot read secret file /nonexistent/secret")
end)

test("relative paths are taken from the config file's directory, never the cwd", function(t)
  local dir = os.tmpname(); os.remove(dir)
  os.execute("mkdir -p " .. dir .. "/sub")
  local sf = assert(io.open(dir .. "/sub/token.txt", "w")); sf:write("file-secret-0123456789\n"); sf:close()
  local path = dir .. "/usersync.conf.lua"
  local f = assert(io.open(path, "w"))
  f:write([[
return {
  state = "data/usersync.db",
  sources = { okta = { type = "okta", url = "https://x.okta.com", token = file "sub/token.txt", ca_file = "ca.pem" } },
  targets = { jira = { type = "jira", url = "https://jira", token = "pat-abcdef", ca_file = "/etc/ssl/ca.pem" } },
  sync = { { name = "a", source = "okta", targets = { "jira" }, policy = "policies/p.lua" } },
  serve = { tls = { cert = "tls/c.pem", key = "tls/k.pem" }, jobs = { { script = "jobs/j.lua", every = "1d" } } },
}
]])
  f:close()
  local cfg, errors = config.load(path)
  t:ok(cfg, table.concat(errors or {}, "\n"))
  if cfg then
    t:eq(cfg.state, dir .. "/data/usersync.db")
    t:eq(cfg.sources.okta.token, "file-secret-0123456789", "file secret read from the config's directory")
    t:eq(cfg.sources.okta.ca_file, dir .. "/ca.pem")
    t:eq(cfg.targets.jira.ca_file, "/etc/ssl/ca.pem", "absolute paths stay as they are")
    t:eq(cfg.sync[1].policy, dir .. "/policies/p.lua")
    t:eq(cfg.serve.tls.cert, dir .. "/tls/c.pem")
    t:eq(cfg.serve.tls.key, dir .. "/tls/k.pem")
    t:eq(cfg.serve.jobs[1].script, dir .. "/jobs/j.lua")
  end
  t:eq(config.dir_of("usersync.conf.lua"), ".")
  t:eq(config.dir_of("a/b/usersync.conf.lua"), "a/b")
  t:eq(config.dir_of("/usersync.conf.lua"), "/")
  os.execute("rm -rf " .. dir)
end)

test("a secret shorter than 8 characters is a warning, named by its key", function(t)
  local text = GOOD:gsub('token = "pat%-abcdef"', 'user = "admin", password = "admin"')
  local cfg, errors = config.load(write(text))
  t:ok(cfg, table.concat(errors or {}, "\n"))
  if not cfg then return end
  t:eq(#cfg._warnings, 1)
  t:contains(cfg._warnings[1], "targets.jira.password: the secret is 5 characters long; secrets shorter than 8")
  t:contains(cfg._warnings[1], "masked only where it stands as a whole word")
  t:eq(#select(1, config.load(write(GOOD)))._warnings, 0)
end)

test("usersync check exits 2 and prints every error; secrets never printed", function(t)
  local path = write([[
return {
  sources = { okta = { type = "okta", url = "https://x.okta.com", token = env "US_TEST_TOKEN" } },
  targets = { jira = { type = "jira", url = "ftp://jira", token = env "US_TEST_TOKEN" } },
  sync = { { name = "a", source = "okta", targets = { "jira" }, groups = { mode = env "US_TEST_TOKEN" } } },
}
]])
  local r = proc.run({ os.getenv("USERSYNC"), "check", "-c", path }, { env = { US_TEST_TOKEN = "very-secret-token-42" } })
  t:eq(r.code, 2)
  t:contains(r.stderr, "has 2 errors")
  t:contains(r.stderr, "targets.jira.url: expected an http:// or https:// URL")
  t:contains(r.stderr, "sync[1].groups.mode: expected")
  t:ok(not r.stderr:find("very-secret-token-42", 1, true), "secret leaked: " .. r.stderr)
  local j = proc.run({ os.getenv("USERSYNC"), "check", "--json", "-c", path }, { env = { US_TEST_TOKEN = "very-secret-token-42" } })
  t:eq(j.code, 2)
  local doc = assert(require("usersync.json").decode(j.stdout))
  t:eq(doc.valid, false)
  t:eq(#doc.errors, 2)
  t:ok(not j.stdout:find("very-secret-token-42", 1, true), "secret leaked in JSON")
end)

test("durations and shares", function(t)
  t:eq(config.parse_duration("30m"), 1800)
  t:eq(config.parse_duration("1h30m"), 5400)
  t:eq(config.parse_duration("7d"), 604800)
  t:eq(config.parse_duration(45), 45)
  t:eq(config.parse_duration("5x"), nil)
  t:eq(config.parse_duration("0s"), nil)
  -- one grammar: what the run reads (usersync.time) is what check accepts
  local time = require "usersync.time"
  for _, v in ipairs { "500ms", "1.5h", "90", "1h30m", "3650d" } do
    t:eq(config.parse_duration(v), time.parse_duration(v), v)
  end
  t:eq(config.parse_duration("500ms"), 0.5)
  for _, v in ipairs { "99999999999d", "3651d", "1e9", 1e12 } do
    t:eq(config.parse_duration(v), nil, tostring(v))
  end
  t:eq(time.parse_duration("99999999999d"), nil)
  t:same(config.parse_share("5%"), { percent = 5 })
  t:same(config.parse_share(10), { count = 10 })
  t:eq(config.parse_share("101%"), nil)
end)

test("check refuses a duration past 3650 days with a message naming the key", function(t)
  local path = write(GOOD:gsub('token = "pat%-abcdef" }', 'token = "pat-abcdef", timeout = "99999999999d" }'))
  local r = proc.run({ os.getenv("USERSYNC"), "check", "--config-only", "-c", path })
  t:eq(r.code, 2, r.stderr)
  t:contains(r.stderr, 'targets.jira.timeout: "99999999999d" is longer than 3650 days')
  local ok = write(GOOD:gsub('token = "pat%-abcdef" }', 'token = "pat-abcdef", timeout = "1.5m", task_wait = "500ms" }'))
  r = proc.run({ os.getenv("USERSYNC"), "check", "--config-only", "-c", ok })
  t:eq(r.code, 0, r.stderr)
end)

test("the config is normalised once: durations become seconds, budget_share a fraction", function(t)
  -- what the engine, serve and the clients take as they are, parsing nothing again
  local text = GOOD:gsub('app_id = "0oa1" }', 'app_id = "0oa1", timeout = "1.5m", max_wait = 90, budget_share = "40%%" }')
  text = text:gsub('token = "pat%-abcdef" }', 'token = "pat-abcdef", task_wait = "500ms" }')
  text = text:gsub('targets = { "jira" } }', 'targets = { "jira" }, every = "1h30m" }')
  text = text:gsub("\n}\n$", '\n  history = { keep = "7d" },\n  serve = { request_timeout = "2s", poll_logs = "1m",\n'
    .. '    jobs = { { script = "j.lua", every = "10m" } } },\n}\n')
  local cfg, errors = config.load(write(text))
  t:ok(cfg, table.concat(errors or {}, "\n"))
  if not cfg then return end
  t:eq(cfg.sources.okta.timeout, 90)
  t:eq(cfg.sources.okta.max_wait, 90)
  t:eq(cfg.sources.okta.budget_share, 0.4)
  t:eq(cfg.targets.jira.task_wait, 0.5)
  t:eq(cfg.sync[1].every, 5400)
  t:eq(cfg.history.keep, 7 * 86400)
  t:eq(cfg.serve.request_timeout, 2)
  t:eq(cfg.serve.poll_logs, 60)
  t:eq(cfg.serve.jobs[1].every, 600)
end)

return test.done()
