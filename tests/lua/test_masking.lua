-- Secret masking never alters data (issue 12): with the password "admin" a
-- saved plan keeps the group "site-admins" and applies in full, `check
-- --json` keeps its keys; secrets are masked in log, error and print lines
-- as whole values; credentials a server echoes in an error body never reach
-- the store, `show`, `history` or a plan file.
local test = require "tap"
local world = require "support.world"
local proc = require "support.proc"
local json = require "usersync.json"
local store = require "usersync.store"

local BASIC = "YWRtaW46YWRtaW4=" -- base64("admin:admin"), what the target receives

-- The world's Jira with Basic auth: user "admin", password from US_TEST_ATL_PW.
local function basic_world(opts)
  local w = world.new(opts)
  local text = proc.slurp(w.config):gsub('token = env "US_TEST_ATL_TOKEN"', 'user = "admin", password = env "US_TEST_ATL_PW"')
  local f = assert(io.open(w.config, "w")); f:write(text); f:close()
  return w
end

-- Runs usersync with the world's config; env.US_TEST_ATL_PW defaults to "admin".
local function run(w, env, ...)
  local e = { US_TEST_OKTA_TOKEN = "test-token", US_TEST_ATL_PW = "admin", USERSYNC_LOG_LEVEL = "warn", NO_COLOR = "1" }
  for k, v in pairs(env or {}) do e[k] = v end
  local argv = { os.getenv("USERSYNC"), ... }
  argv[#argv + 1] = "-c"; argv[#argv + 1] = w.config
  if argv[2] == "run" then -- `run -c FILE SCRIPT`: options before the script
    argv = { os.getenv("USERSYNC"), "run", "-c", w.config, select(2, ...) }
  end
  return proc.run(argv, { env = e })
end

local function count_ops(doc)
  local n = 0
  for _, s in ipairs(doc.syncs) do
    for _, tp in ipairs(s.targets) do n = n + #tp.ops end
  end
  return n
end

test("password \"admin\": the saved plan keeps group site-admins and apply applies every change", function(t)
  local w <close> = basic_world { products = { "jira" },
    sync = { groups = { mode = "manual", map = { ["site-admins"] = "site-admins" } } } }
  w:okta_group("00gAdm", "site-admins")
  w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gAdm" } })
  w:okta_user("00u2", "bob.stone@example.com", { groups = { "00gAdm" } })
  w:okta_user("00u3", "carol.king@example.com", { groups = { "00gAdm" } })
  w:load()
  local out = w.dir .. "/plan.json"
  local r = run(w, nil, "plan", "--out", out)
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stderr, "targets.jira.password: the secret is 5 characters long", "warned at run start")
  t:contains(r.stdout, "site-admins", "the plan text keeps the name")
  local text = proc.slurp(out)
  t:ok(not text:find("********", 1, true), "nothing masked in the plan file")
  t:contains(text, '"group": "site-admins"')
  local doc = assert(json.decode(text))
  local planned = count_ops(doc)
  t:eq(planned, 7, "3 creates, 1 group, 3 memberships")
  r = run(w, nil, "apply", out)
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:contains(r.stdout, ("applied %d changes, 0 failed"):format(planned))
  t:ok(not r.stdout:find("no longer needed", 1, true), r.stdout)
  t:same(w:members_of("jira", "site-admins"), { "ann.lee@example.com", "bob.stone@example.com", "carol.king@example.com" })
end)

test("password \"admin\": check --json keeps its keys and data; check warns about the short secret", function(t)
  local w <close> = basic_world { products = { "jira" } }
  w:load()
  local r = run(w, nil, "check", "--json")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:ok(not r.stdout:find("********", 1, true), r.stdout)
  local doc = assert(json.decode(r.stdout))
  t:eq(doc.servers.targets.jira.admin, true, "the key `admin` is intact")
  t:eq(doc.servers.targets.jira.user, "admin", "the account name is data")
  t:eq(#doc.warnings, 1)
  t:contains(doc.warnings[1], "targets.jira.password: the secret is 5 characters long")
  r = run(w, nil, "check")
  t:contains(r.stdout, "  warning: " .. w.config .. ": targets.jira.password: the secret is 5 characters long")
  t:contains(r.stdout, "  authenticated as: admin")
end)

test("usersync run: print, io.write and the standard streams mask secrets as whole values; files keep data", function(t)
  local w <close> = basic_world { products = { "jira" } }
  local data = w.dir .. "/out.txt"
  local script = proc.tempfile(([[
    local cfg = usersync.config()
    local log = require "usersync.log"
    print("password:", cfg.targets.jira.password, "group site-admins")
    io.write("io.write ", cfg.sources.okta.token, "\n")
    io.stdout:write("stdout ", cfg.sources.okta.token, "\n")
    io.stderr:write("stderr ", cfg.sources.okta.token, "\n")
    log.warn("log line: login admin refused for site-admins")
    local f = assert(io.open(%q, "w"))
    f:write("admin site-admins ", cfg.sources.okta.token, "\n")
    f:close()
    assert(io.type(io.stdout) == "file")
    io.stdout:flush()
  ]]):format(data), ".lua")
  local r = run(w, { US_TEST_OKTA_TOKEN = "okta-token-0123456789" }, "run", script)
  t:eq(r.code, 0, r.stderr)
  t:eq(r.stdout, "password:\t********\tgroup site-admins\nio.write ********\nstdout ********\n")
  t:contains(r.stderr, "stderr ********\n")
  t:contains(r.stderr, "log line: login ******** refused for site-admins")
  t:ok(not (r.stdout .. r.stderr):find("okta-token-0123456789", 1, true), "token leaked")
  t:eq(proc.slurp(data), "admin site-admins okta-token-0123456789\n", "a file the script writes is its data")
  os.remove(script)
end)

test("an error body that echoes the Authorization header: the store, show and history hold no credential", function(t)
  local w <close> = basic_world { products = { "jira" },
    sync = { groups = { mode = "manual", map = { Engineering = "developers" } } } }
  w:okta_group("00gEng", "Engineering")
  w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gEng" } })
  w:load()
  -- adding members fails with a proxy page that quotes the request
  w.jira:faults { fail_rate = 1.0, fail_status = 400, fail_path = "^/rest/api/2/group/user$", echo_credentials = true }
  local r = run(w, nil, "sync")
  t:eq(r.code, 1, r.stdout .. r.stderr)
  t:contains(r.stderr, "Authorization: Basic ********")
  t:ok(not r.stderr:find(BASIC, 1, true), "credential in stderr: " .. r.stderr)
  -- the store itself, read directly
  local db = assert(store.open(w.dir .. "/usersync.db"))
  local errors = {}
  for row in db:rows("SELECT error FROM operations WHERE error IS NOT NULL") do errors[#errors + 1] = row.error end
  for row in db:rows("SELECT error FROM runs WHERE error IS NOT NULL") do errors[#errors + 1] = row.error end
  db:close()
  t:ok(#errors >= 1, "the failure is recorded")
  local all = table.concat(errors, "\n")
  t:contains(all, "Authorization: Basic ********")
  t:ok(not all:find(BASIC, 1, true), "credential in the store: " .. all)
  -- after a password rotation, show and history
  local rotated = { US_TEST_ATL_PW = "rotated-password-0123" }
  r = run(w, rotated, "show", "1", "--json")
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "Authorization: Basic ********")
  t:ok(not r.stdout:find(BASIC, 1, true) and not r.stdout:find("admin:admin", 1, true), r.stdout)
  r = run(w, rotated, "history", "--json")
  t:eq(r.code, 0, r.stderr)
  t:ok(not r.stdout:find(BASIC, 1, true), r.stdout)
  r = run(w, rotated, "show", "1")
  t:ok(not r.stdout:find(BASIC, 1, true), r.stdout)
end)

test("a target read fails with an echoed Authorization header: the plan file holds no credential", function(t)
  local w <close> = basic_world { products = { "jira" } }
  w:okta_user("00u1", "ann.lee@example.com")
  w:load()
  w.jira:faults { fail_rate = 1.0, fail_status = 400, fail_path = "^/rest/api/2/user/list$", echo_credentials = true }
  local out = w.dir .. "/plan.json"
  local r = run(w, nil, "plan", "--out", out)
  local text = proc.slurp(out)
  t:contains(text, "reading jira failed, nothing planned for it", r.stderr)
  t:contains(text, "Authorization: Basic ********")
  t:ok(not text:find(BASIC, 1, true), "credential in the plan file: " .. text)
  t:ok(not (r.stdout .. r.stderr):find(BASIC, 1, true), r.stdout .. r.stderr)
end)

return test.done()
