-- The example policies and scripts in scripts/examples/, each doing what its
-- header says: policies through the planner, the migration script with
-- `usersync run` (and --dry-run) against the Jira simulator.
local test = require "tap"
local plan = require "usersync.plan"
local policy = require "usersync.policy"
local config = require "usersync.config"
local proc = require "support.proc"
local sim = require "support.fakes"
local json = require "usersync.json"

local SRC = os.getenv("SOURCE_DIR") or "."
local EX = SRC .. "/scripts/examples/"

local function sync_entry(over)
  local t = { name = "main", source = "okta", targets = { "jira" } }
  for k, v in pairs(over or {}) do t[k] = v end
  local cfg, errors = config.validate({
    sources = { okta = { type = "okta", url = "https://x.okta.com", token = "t0ken-value" } },
    targets = { jira = { type = "jira", url = "https://jira", token = "pat-value" } },
    sync = { t } })
  assert(#errors == 0, table.concat(errors, "\n"))
  return cfg.sync[1]
end

local function user(id, login, profile)
  local p = { login = login, email = login, firstName = "F", lastName = "L" }
  for k, v in pairs(profile or {}) do p[k] = v end
  return { id = id, status = "ACTIVE", profile = p, groups = {} }
end

local function creates(p)
  local out = {}
  for _, o in ipairs(p.ops) do
    if o.kind == "create_user" then out[#out + 1] = o.name
    elseif o.kind == "add_member" then out[#out + 1] = o.name .. " in " .. o.group end
  end
  return out
end

test("policy-email-username: usernames from the e-mail's local part", function(t)
  local pol = assert(policy.load(EX .. "policy-email-username.lua"))
  local p = plan.build { sync = sync_entry(), target = { name = "jira", type = "jira" }, policy = pol,
    source = { users = { user("00u1", "Ann.Lee+x@example.com", { email = "Ann.Lee@example.com" }) }, groups = {} } }
  t:same(creates(p), { "ann.lee" })
  t:eq(p.ops[1].email, "Ann.Lee@example.com")
end)

test("policy-department-groups: a group per department on top of the config's mapping", function(t)
  local pol = assert(policy.load(EX .. "policy-department-groups.lua"))
  local u = user("00u1", "ann@example.com", { department = "Customer Success" })
  u.groups = { "00g1" }
  local p = plan.build { sync = sync_entry { groups = { map = { Eng = "developers" } } },
    target = { name = "jira", type = "jira" }, policy = pol,
    source = { users = { u }, groups = { ["00g1"] = { id = "00g1", type = "OKTA_GROUP", profile = { name = "Eng" } } } } }
  t:same(creates(p), { "ann@example.com", "ann@example.com in dept-customer-success", "ann@example.com in developers" })
end)

test("policy-no-contractors: contractors are left out, and deprovisioned when they become one", function(t)
  local pol = assert(policy.load(EX .. "policy-no-contractors.lua"))
  local p = plan.build { sync = sync_entry(), target = { name = "jira", type = "jira" }, policy = pol,
    source = { users = { user("00u1", "emp@example.com"), user("00u2", "con@example.com", { userType = "CONTRACTOR" }) }, groups = {} },
    accounts = { { name = "old@example.com", active = true, groups = {} } }, links = { ["00u3"] = "old@example.com" } }
  t:same(creates(p), { "emp@example.com" })
  p = plan.build { sync = sync_entry(), target = { name = "jira", type = "jira" }, policy = pol,
    source = { users = { user("00u2", "con@example.com", { userType = "Contractor" }) }, groups = {} },
    accounts = { { name = "con@example.com", active = true, groups = {} } }, links = { ["00u2"] = "con@example.com" } }
  t:eq(p.ops[1].kind, "deactivate_user")
  t:eq(p.ops[1].reason, "left out by the policy")
end)

-- A new directory with a config of one Jira target at url (password in
-- US_TEST_PW) and its store there: dir, config path.
local function jira_config(url)
  local dir = os.tmpname(); os.remove(dir); os.execute("mkdir -p " .. dir)
  local conf = dir .. "/usersync.conf.lua"
  local f = assert(io.open(conf, "w"))
  f:write(([[return {
  state = %q,
  sources = { okta = { type = "okta", url = "https://x.okta.com", token = "tok-123456" } },
  targets = { jira = { type = "jira", url = %q, user = "admin", password = env "US_TEST_PW" } },
  sync = { { name = "main", source = "okta", targets = { "jira" } } },
}]]):format(dir .. "/usersync.db", url))
  f:close()
  return dir, conf
end

test("migrate-rename: --dry-run prints and writes nothing; a real run renames in stages and updates links", function(t)
  local jira <close> = sim.start("jira", { state = {
    users = { { name = "ann@example.com", key = "K1", displayName = "Ann", emailAddress = "ann@example.com", active = true },
              { name = "bob@example.com", key = "K2", displayName = "Bob", emailAddress = "bob@example.com", active = true },
              { name = "carl@example.com", key = "K3", displayName = "Carl", emailAddress = "carl@example.com", active = true },
              { name = "bob", key = "K4", displayName = "Other Bob", emailAddress = "bob@other.org", active = true },
              { name = "svc", key = "K5", displayName = "Service", emailAddress = "svc@example.com", active = true } },
    groups = json.array{}, members = {} } })
  local dir, conf = jira_config(jira.url)
  local db = assert(require("usersync.state").open(dir .. "/usersync.db"))
  assert(db:exec("INSERT INTO links (sync, target, okta_id, account_name) VALUES ('main', 'jira', '00u1', 'ann@example.com')"))
  db:close()
  local env = { env = { US_TEST_PW = "admin" } }
  local args = { os.getenv("USERSYNC"), "run", "-c", conf, "--dry-run", EX .. "migrate-rename.lua", "jira", [[^(.+)@example\.com$]], "$1", "2" }
  local r = proc.run(args, env)
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, 'dry-run: jira rename_user ann@example.com ann')
  t:contains(r.stdout, "skipped bob@example.com -> bob (taken)")
  t:contains(r.stdout, "dry run: 2 renamed, 1 skipped, 0 failed, 3 matching in all")
  local writes = 0
  for _, q in ipairs(jira:requests()) do if q.method ~= "GET" then writes = writes + 1 end end
  t:eq(writes, 0, "dry run sends no write")
  table.remove(args, 5) -- no --dry-run
  r = proc.run(args, env)
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "renamed ann@example.com -> ann")
  t:contains(r.stdout, "renamed carl@example.com -> carl")
  local names = {}
  for _, u in ipairs(jira:state().users) do names[#names + 1] = u.name end
  table.sort(names)
  t:same(names, { "ann", "bob", "bob@example.com", "carl", "svc" })
  db = assert(require("usersync.state").open(dir .. "/usersync.db"))
  t:eq(db:first("SELECT account_name FROM links WHERE okta_id = '00u1'").account_name, "ann")
  db:close()
  os.execute("rm -rf " .. dir)
end)

test("--dry-run: a script cannot send writes around it through t:batch or t:apply_start", function(t)
  local jira <close> = sim.start("jira", { state = {
    users = { { name = "ann", key = "K1", displayName = "Ann", emailAddress = "ann@example.com", active = true } },
    groups = json.array{}, members = {} } })
  local dir, conf = jira_config(jira.url)
  local script = dir .. "/raw.lua"
  local f = assert(io.open(script, "w"))
  f:write([[
local jira = usersync.target "jira"
assert(jira:get("ann"), "reads go through")
local ok, err = pcall(function() jira:batch():submit{ kind = "delete_user", name = "ann" } end)
print("batch", ok, err)
ok, err = pcall(function() jira:apply_start({ { kind = "delete_user", name = "ann" } }) end)
print("apply_start", ok, err)
]])
  f:close()
  local r = proc.run({ os.getenv("USERSYNC"), "run", "-c", conf, "--dry-run", script }, { env = { US_TEST_PW = "admin" } })
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "batch\tfalse\t")
  t:contains(r.stdout, "jira:batch is not available under --dry-run")
  t:contains(r.stdout, "jira:apply_start is not available under --dry-run")
  local writes = 0
  for _, q in ipairs(jira:requests()) do if q.method ~= "GET" then writes = writes + 1 end end
  t:eq(writes, 0, "dry run sends no write")
  t:eq(#jira:state().users, 1, "ann is still there")
  os.execute("rm -rf " .. dir)
end)

return test.done()
