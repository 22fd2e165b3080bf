-- `usersync init`: a commented starter config from flags (no terminal) or
-- from answers on a terminal (a pseudo-terminal here), then `check` on it;
-- the config it writes syncs for real against the simulators; it never
-- overwrites a file.
local test = require "tap"
local proc = require "support.proc"
local world = require "support.world"

local BIN = os.getenv("USERSYNC")
local PY = os.getenv("PYTHON3") or "python3"
local SRC = os.getenv("SOURCE_DIR") or "."

local ENV = { US_TEST_OKTA_TOKEN = "test-token", JIRA_TOKEN = "test-token", CONFLUENCE_TOKEN = "test-token",
              NO_COLOR = "1", USERSYNC_LOG_LEVEL = "warn" }

local function run(argv, opts)
  opts = opts or {}
  local env = {}
  for k, v in pairs(ENV) do env[k] = v end
  for k, v in pairs(opts.env or {}) do env[k] = v end
  return proc.run(argv, { env = env, unset = opts.unset })
end

test("from flags: writes the config, checks every server, and it syncs", function(t)
  local w <close> = world.small { products = { "jira", "confluence" } }
  local conf = w.dir .. "/starter.conf.lua"
  local r = run({ BIN, "init", "-c", conf, "--okta-url", w.okta.url, "--token-env", "US_TEST_OKTA_TOKEN",
                  "--app-id", world.APP, "--jira", w.jira.url, "--confluence", w.confluence.url .. "/" })
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:contains(r.stdout, "wrote " .. conf .. "; its secrets come from US_TEST_OKTA_TOKEN, JIRA_TOKEN, CONFLUENCE_TOKEN. Checking it:\n")
  t:contains(r.stdout, "config " .. conf .. ": ok (1 source, 2 targets, 1 sync entry)")
  t:match(r.stdout, "\ntarget jira %(jira, http://127%.0%.0%.1:%d+%): ok\n")
  t:match(r.stdout, "\nsource okta %(okta, http://127%.0%.0%.1:%d+%): ok\n")
  local text = proc.slurp(conf)
  t:contains(text, ('url = "%s",\n             token = env "US_TEST_OKTA_TOKEN"'):format(w.okta.url))
  t:contains(text, ('app_id = "%s"'):format(world.APP))
  t:contains(text, ('confluence = { type = "confluence", url = "%s", token = env "CONFLUENCE_TOKEN" }'):format(w.confluence.url))
  t:contains(text, "-- usersync config, written by `usersync init`.")
  t:eq(text:find("test-token", 1, true), nil, "no secret in the file")
  -- the starter config works: a sync creates the Okta users' accounts
  r = run({ BIN, "sync", "-c", conf })
  t:eq(r.code, 0, r.stderr)
  local jira = w:accounts("jira")
  t:ok(jira["ann.lee@example.com"] and jira["carol.king@example.com"], "accounts created in Jira")
  t:ok(w:accounts("confluence")["bob.stone@example.com"], "and in Confluence")
  local f = io.open(w.dir .. "/usersync.db", "rb")
  t:ok(f ~= nil, "the store sits next to the config")
  if f then f:close() end
end)

test("it never overwrites a file", function(t)
  local w <close> = world.new { products = { "jira" } }
  local conf = w.dir .. "/existing.conf.lua"
  local f = assert(io.open(conf, "w")); f:write("return 'mine'\n"); f:close()
  local r = run({ BIN, "init", "-c", conf, "--okta-url", w.okta.url, "--jira", w.jira.url })
  t:eq(r.code, 2)
  t:contains(r.stderr, "usersync init: " .. conf .. " exists; not overwritten")
  t:eq(proc.slurp(conf), "return 'mine'\n", "the file is as it was")
end)

test("without a terminal the flags must say enough; bad values are usage errors", function(t)
  local w <close> = world.new { products = { "jira" } }
  local conf = w.dir .. "/none.conf.lua"
  local r = run({ BIN, "init", "-c", conf, "--okta-url", w.okta.url })
  t:eq(r.code, 2)
  t:contains(r.stderr, "without a terminal, give --okta-url and at least one of --jira, --confluence, --bitbucket")
  r = run({ BIN, "init", "-c", conf, "--okta-url", "https://acme.okta.com/admin/dashboard", "--jira", w.jira.url })
  t:eq(r.code, 2)
  t:contains(r.stderr, "the Okta URL is the org's base URL (https://acme.okta.com)")
  r = run({ BIN, "init", "-c", conf, "--okta-url", w.okta.url, "--jira", "jira.example.com" })
  t:eq(r.code, 2)
  t:contains(r.stderr, '--jira: "jira.example.com" is not an http:// or https:// URL')
  t:eq(io.open(conf, "rb"), nil, "nothing written")
end)

test("a token variable not set yet: the config is written, check says what to set (exit 2)", function(t)
  local w <close> = world.new { products = { "jira" } }
  local conf = w.dir .. "/unset.conf.lua"
  local r = run({ BIN, "init", "-c", conf, "--okta-url", w.okta.url, "--jira", w.jira.url }, { unset = { "OKTA_API_TOKEN" } })
  t:eq(r.code, 2)
  t:contains(r.stderr, "sources.okta.token: environment variable OKTA_API_TOKEN is not set")
  t:contains(r.stderr, "usersync init: " .. conf .. " is written; fix what check reports (above)")
  t:ok(proc.slurp(conf):find('token = env "OKTA_API_TOKEN"', 1, true), "the default token variable")
end)

test("on a terminal it asks for what the flags leave out", function(t)
  local w <close> = world.small { products = { "jira" } }
  local conf = w.dir .. "/asked.conf.lua"
  local answers = proc.tempfile(table.concat({
    "not-a-url", w.okta.url,          -- asked again after a bad answer
    "US_TEST_OKTA_TOKEN",
    world.APP,
    w.jira.url, "", "",               -- Jira only
  }, "\n") .. "\n")
  local r = run({ PY, SRC .. "/tests/lua/support/answer_prompts.py", answers, BIN, "init", "-c", conf })
  os.remove(answers)
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:contains(r.stdout, "Okta org URL (https://example.okta.com): not-a-url")
  t:contains(r.stdout, '"not-a-url" is not an http:// or https:// URL')
  t:contains(r.stdout, "Okta API token from an environment variable, or file:PATH [OKTA_API_TOKEN]: US_TEST_OKTA_TOKEN")
  t:contains(r.stdout, "Confluence URL (empty: none): ")
  t:match(r.stdout, "\ntarget jira %(jira, http://127%.0%.0%.1:%d+%): ok\n")
  local text = proc.slurp(conf)
  t:contains(text, ('app_id = "%s"'):format(world.APP))
  t:contains(text, 'targets = { "jira" }')
  t:eq(text:find("confluence =", 1, true), nil)

  -- end of input: nothing written, exit 2
  local conf2 = w.dir .. "/eof.conf.lua"
  answers = proc.tempfile("")
  r = run({ PY, SRC .. "/tests/lua/support/answer_prompts.py", answers, BIN, "init", "-c", conf2 })
  os.remove(answers)
  t:eq(r.code, 2, r.stdout)
  t:contains(r.stdout, "usersync init: no Okta URL given")
  t:eq(io.open(conf2, "rb"), nil, "nothing written")
end)

test("a dangling symbolic link at the path is not replaced", function(t)
  local w <close> = world.new { products = { "jira" } }
  local conf = w.dir .. "/linked.conf.lua"
  t:ok(os.execute(("ln -s %q %q"):format(w.dir .. "/mounted-later/usersync.conf.lua", conf)))
  local r = run({ BIN, "init", "-c", conf, "--okta-url", w.okta.url, "--jira", w.jira.url })
  t:eq(r.code, 2, r.stdout .. r.stderr)
  t:contains(r.stderr, "usersync init: " .. conf .. " exists; not overwritten")
  local p = io.popen(("readlink %q"):format(conf))
  t:eq(p:read("a"), w.dir .. "/mounted-later/usersync.conf.lua\n", "still the link")
  p:close()
end)

test("a token passed where a variable name or a URL belongs is refused and never repeated", function(t)
  local w <close> = world.new { products = { "jira" } }
  local TOKEN = "00Abc-SECRET-okta-token-1234567890abcdefgh"
  local conf = w.dir .. "/new.conf.lua"
  local cases = {
    { "--token-env", TOKEN, "--okta-url", w.okta.url, "--jira", w.jira.url },
    { "--okta-url", w.okta.url:gsub("^http://", "http://admin:" .. TOKEN .. "@"), "--jira", w.jira.url },
    { "--okta-url", w.okta.url, "--jira", w.jira.url:gsub("^http://", "http://admin:" .. TOKEN .. "@") },
  }
  for i, c in ipairs(cases) do
    local argv = { BIN, "init", "-c", conf }
    for _, a in ipairs(c) do argv[#argv + 1] = a end
    local r = run(argv)
    t:eq(r.code, 2, "case " .. i)
    t:eq((r.stdout .. r.stderr):find("SECRET", 1, true), nil, "case " .. i .. ": the token is not printed: " .. r.stderr)
    t:eq(io.open(conf, "rb"), nil, "case " .. i .. ": nothing written")
  end
end)

return test.done()
