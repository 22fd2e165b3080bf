-- incremental_100k.lua: the incremental budget — after 10
-- changes in a 100,000-user org, the incremental sync of `usersync serve`
-- (System Log poll, then a run for just the users the events name) costs
-- under 50 requests.
--
--   SOURCE_DIR=$PWD PYTHON3=/usr/bin/python3 USERSYNC=$PWD/build/usersync \
--     build/usersync run tests/bench/incremental_100k.lua [users=100000] [changes=10]
--
-- Setup, as after a full sync: genorg.py --seed 42 (100,000 users, 500
-- groups, app 0oaBenchApp000000001) in the Okta simulator; a Jira simulator
-- holding an account for every ACTIVE user (the default policy's names) and
-- the store linking them (written directly: a 100,000-user first sync takes
-- the simulators far too long, and its cost is not what is measured here).
-- The sync entry is the app's scope with manual groups (none mapped), so
-- the run compares the accounts' attributes.
--
-- Measured: `usersync serve` with poll_logs = 1s runs; once its cursor is
-- stored the request logs are cleared, CHANGES ACTIVE app users get a new
-- e-mail in Okta (the simulator turns the state diff into
-- user.account.update_profile events), and the benchmark waits until Jira
-- shows every new address. Printed: the requests each server served from
-- the change to the end, split into the quiet polls (GET /api/v1/logs that
-- found nothing, the cost of waiting) and the work for the changes, plus
-- the time from the moment the change is in Okta until Jira answered the
-- last write (by the simulators' request stamps, so the benchmark's own
-- checks are not counted), split into the wait for the poll and the run.
package.path = (os.getenv("SOURCE_DIR") or ".") .. "/tests/lua/?.lua;" .. package.path
local fakes = require "support.fakes"
local proc = require "support.proc"
local serve = require "support.serve"
local json = require "usersync.json"
local store = require "usersync.store"
local clock = require("usersync.time").monotonic
local now = require("usersync.time").now

local args = arg or {}
local NU = tonumber(args[1]) or 100000
local NCHANGE = tonumber(args[2]) or 10
local APP = "0oaBenchApp000000001"
local py = os.getenv("PYTHON3") or "python3"

local dir = os.tmpname(); os.remove(dir); os.execute("mkdir -p " .. dir)
local t0 = clock()
local orgfile = dir .. "/org.json"
assert(os.execute(("%s %s/tests/fakes/genorg.py --users %d --groups 500 --seed 42 --app-id %s --out %s"):format(
  py, fakes.source_dir, NU, APP, orgfile)))
local f = assert(io.open(orgfile)); local org = assert(json.decode(f:read("a"))); f:close()
print(("org: %d users, %d groups (genorg %.1f s)"):format(#org.users, #org.groups, clock() - t0))

-- Jira: an account per ACTIVE user, named as the default policy names it
-- (the Okta login), attributes as the policy maps them.
local jira_users = {}
local by_id = {}
for _, u in ipairs(org.users) do
  by_id[u.id] = u
  if u.status == "ACTIVE" then
    local p = u.profile
    local display = ((p.firstName or "") .. " " .. (p.lastName or "")):gsub("^%s+", ""):gsub("%s+$", "")
    jira_users[#jira_users + 1] = { name = p.login, key = "K" .. u.id, displayName = display,
                                    emailAddress = p.email, active = true }
  end
end
local okta = fakes.start("okta", { state_file = orgfile })
local jira = fakes.start("jira", { state = { users = json.array(jira_users), groups = json.array{},
  members = {}, projects = json.array{}, components = json.array{} } })
print(("jira: %d accounts"):format(#jira_users))

-- The config and the store's links (what a full sync would have left).
local cfg = dir .. "/usersync.conf.lua"
f = assert(io.open(cfg, "w"))
f:write(([[
return {
  state = %q,
  sources = { okta = { type = "okta", url = %q, token = env "US_TEST_OKTA_TOKEN", app_id = %q } },
  targets = { jira = { type = "jira", url = %q, token = env "US_TEST_ATL_TOKEN" } },
  sync = { { name = "main", source = "okta", targets = { "jira" }, groups = { mode = "manual", map = {} } } },
  serve = { listen = "127.0.0.1:0", poll_logs = "1s" },
}
]]):format(dir .. "/usersync.db", okta.url, APP, jira.url))
f:close()
do
  local r = proc.run({ os.getenv("USERSYNC"), "check", "--config-only", "-c", cfg },
    { env = { US_TEST_OKTA_TOKEN = "test-token", US_TEST_ATL_TOKEN = "test-token" } })
  assert(r.code == 0, r.stderr)
  local db <close> = assert(store.open(dir .. "/usersync.db"))
  db:transaction(function()
    for _, u in ipairs(org.users) do
      if u.status == "ACTIVE" then
        db:exec([[INSERT INTO links (sync, target, okta_id, account_name, created_by_us, onboarded)
            VALUES ('main', 'jira', ?, ?, 1, 1)]], u.id, u.profile.login)
      end
    end
  end)
end

-- Users to change: ACTIVE, assigned to the app directly.
local changed = {}
for _, id in ipairs(org.apps[APP].users) do
  local u = by_id[id]
  if u and u.status == "ACTIVE" then changed[#changed + 1] = u end
  if #changed == NCHANGE then break end
end

local w = { dir = dir, config = cfg }
local d <close> = serve.start(w, { env = { USERSYNC_LOG_LEVEL = "info" } })
assert(serve.wait_for(function()
  local db <close> = assert(store.open(dir .. "/usersync.db"))
  return db:first("SELECT value FROM cursors WHERE name = 'okta.syslog.okta'")
end, 60), "serve stored no cursor")
okta:clear_requests(); jira:clear_requests()
local tc = clock()
for i, u in ipairs(changed) do u.profile.email = ("changed%02d.%s"):format(i, u.profile.email) end
okta:put_state(org)
local put_time = clock() - tc
-- The changes exist in Okta from here. The simulators stamp each request
-- with the wall clock ("at"), so the time to the targets is the last
-- answered Jira write's stamp minus this moment: the benchmark's own
-- polling (below) costs the simulator CPU but is not counted.
local t_change = now()
local function jira_writes()
  local out = {}
  for _, q in ipairs(jira:requests()) do
    if q.method == "PUT" and q.status >= 200 and q.status < 300 then out[#out + 1] = q end
  end
  return out
end
serve.wait_for(function() return #jira_writes() >= #changed end, 120)
local st = jira:state()  -- one whole read, to check the end state itself
local emails = {}
for _, a in ipairs(st.users) do emails[a.name:lower()] = a.emailAddress end
local done = true
for _, u in ipairs(changed) do
  done = done and emails[u.profile.login:lower()] == u.profile.email
end
assert(done, "Jira did not get the new e-mails in 120 s; serve log:\n" .. d:log_text())
local last_write, first_okta = 0, math.huge
for _, q in ipairs(jira_writes()) do last_write = math.max(last_write, q.at) end
for _, q in ipairs(okta:requests()) do
  if q.path ~= "/api/v1/logs" then first_okta = math.min(first_okta, q.at) end
end
local elapsed = last_write - t_change
serve.wait_for(function() return false end, 1.5) -- let the run finish recording

local function tally(sim)
  local polls, work, writes = 0, 0, 0
  local kinds = {}
  for _, q in ipairs(sim:requests()) do
    local quiet_poll = q.path == "/api/v1/logs"
    if quiet_poll then polls = polls + 1 else work = work + 1 end
    if q.method ~= "GET" then writes = writes + 1 end
    local k = q.method .. " " .. q.path:gsub("/00u[%w]+", "/{id}")
    kinds[k] = (kinds[k] or 0) + 1
  end
  return polls, work, writes, kinds
end
local op, ow, _, okinds = tally(okta)
local jp, jw, jwrites, jkinds = tally(jira)
print(("changes: %d users' e-mail in a %d-user org (state PUT %.1f s)"):format(#changed, NU, put_time))
print(("until Jira had every new e-mail: %.2f s after the change (the poll that found it: %.2f s; the run from its first Okta read to the last Jira write: %.2f s)")
  :format(elapsed, first_okta - t_change, last_write - first_okta))
print(("okta: %d System Log requests (polls, incl. the one that found the events), %d other requests"):format(op, ow))
for k, n in pairs(okinds) do print(("  %5d  %s"):format(n, k)) end
print(("jira: %d requests, %d writes"):format(jw + jp, jwrites))
for k, n in pairs(jkinds) do print(("  %5d  %s"):format(n, k)) end
local work = ow + jw + jp
print(("requests for the %d changes (everything but the polls): %d  -> budget < 50: %s"):format(
  #changed, work, work < 50 and "met" or "NOT met"))
print(("incremental runs: %d"):format(d:count_log("run finished")))
print(("ROW|incremental, %d changes in a %d-user org, poll -> targets written|%.2f s, %d requests|~1 poll|-|< 2 s, < 50 requests")
  :format(#changed, NU, elapsed, work))
d:stop()
okta:stop(); jira:stop()
os.execute("rm -rf " .. proc.quote(dir))
