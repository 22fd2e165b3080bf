-- test_plan_order_e2e.lua: a whole-org run plans each target as soon as
-- its own read (and Okta's) has ended, while the other targets are still
-- being read; the plan it prints stays in the configured order, and a read
-- that fails meanwhile still leaves that target unplanned (nothing
-- deprovisioned there). The real binary runs in the background against
-- the simulators; a read is kept in flight with the simulator's hold_path
-- fault while the test watches what the run does, then let go (or failed).
local test = require "tap"
local world = require "support.world"
local proc = require "support.proc"
local time = require "usersync.time"

-- Confluence's member listings: held to keep Confluence's read running.
local MEMBERS = "^/rest/api/group/[^/]+/member$"
-- A Jira plan with a leaver reads the project leads right after it is
-- built (Engine:hand_over): the sign that Jira has been planned.
local LEADS = "^/rest/api/2/project$"

local MANUAL = { groups = { mode = "manual", map = { Engineering = { "developers" }, Ops = { "operations" } } },
                 defaults = { new_users = { "new-hires" }, all_users = { "okta-synced" } } }

-- Confluence first in the config, then Jira; after a first sync 20 users
-- join (accounts and memberships to create in both) and bob leaves the
-- app's scope, so the plan deprovisions him in both.
local function bob_leaving(t)
  local w = world.small{ products = { "confluence", "jira" }, sync = MANUAL }
  t:eq(w:usersync("sync").code, 0, "first sync")
  for i = 4, 23 do
    w:okta_user(("00u%d"):format(i), ("user%d@example.com"):format(i),
                { groups = { i % 2 == 0 and "00gEng" or "00gOps" } })
  end
  local app = {}
  for _, id in ipairs(w.app_users) do if id ~= "00u2" then app[#app + 1] = id end end
  w.app_users = app
  w:load()
  return w
end

-- Starts `usersync ARGS -c config` in the background; wait(run) then
-- gives { code, stdout, stderr }.
local function start(w, ...)
  local run = { out = os.tmpname(), err = os.tmpname(), rc = os.tmpname() }
  os.remove(run.rc)
  local parts = { "US_TEST_OKTA_TOKEN=test-token", "US_TEST_ATL_TOKEN=test-token",
                  "USERSYNC_LOG_LEVEL=warn", "NO_COLOR=1", proc.quote(os.getenv("USERSYNC")) }
  for _, a in ipairs({ ... }) do parts[#parts + 1] = proc.quote(a) end
  parts[#parts + 1] = "-c " .. proc.quote(w.config)
  os.execute(("(%s >%s 2>%s </dev/null; echo $? >%s.tmp; mv %s.tmp %s) &")
    :format(table.concat(parts, " "), run.out, run.err, run.rc, run.rc, run.rc))
  return run
end

-- Polls cond() until true; false after `guard` seconds (only a failing
-- run waits that long: the guard bounds nothing that passes).
local function eventually(cond, guard)
  for _ = 1, (guard or 60) * 20 do
    if cond() then return true end
    time.sleep(0.05)
  end
  return false
end

local function wait(run)
  local r
  assert(eventually(function()
    local f = io.open(run.rc)
    if not f then return false end
    r = { code = tonumber(f:read("a")), stdout = proc.slurp(run.out), stderr = proc.slurp(run.err) }
    f:close()
    return true
  end, 300), "usersync did not exit")
  os.remove(run.out); os.remove(run.err); os.remove(run.rc)
  return r
end

test("a target is planned while another one is still read; the plan printed is the same, in config order", function(t)
  local w <close> = bob_leaving(t)
  local before = w:usersync("plan")
  t:eq(before.code, 0, before.stderr)
  local before_json = w:usersync("plan", "--json")
  t:eq(before_json.code, 0, before_json.stderr)

  w:clear_requests()
  w.confluence:faults{ hold_path = MEMBERS }
  local run = start(w, "plan")
  local planned = eventually(function() return w.jira:count{ path = LEADS, method = "GET" } > 0 end)
  t:ok(planned, "Jira was planned (its leads read) while Confluence's read was held")
  -- ... and Confluence's read had not ended: a member listing held, none served
  t:ok(w.confluence:inflight().now >= 1, "a Confluence member listing in flight")
  t:eq(w.confluence:count{ path = MEMBERS }, 0, "no Confluence member listing answered yet")
  w.confluence:faults{} -- let it go
  local r = wait(run)
  t:eq(r.code, 0, r.stderr)
  t:eq(r.stdout, before.stdout, "the same plan as when the reads end in any order")
  local c, j = r.stdout:find("confluence", 1, true), r.stdout:find("jira", 1, true)
  t:ok(c and j and c < j, "confluence (first in the config) printed first")
  t:match(r.stdout, "deactivate +bob%.stone@example%.com")
  t:match(r.stdout, "add member +user23@example%.com in operations")

  -- the same with --json
  w.confluence:faults{ hold_path = MEMBERS }
  w:clear_requests()
  run = start(w, "plan", "--json")
  t:ok(eventually(function() return w.jira:count{ path = LEADS, method = "GET" } > 0 end), "Jira planned first")
  w.confluence:faults{}
  r = wait(run)
  t:eq(r.code, 0, r.stderr)
  t:eq(r.stdout:gsub('"created": "[^"]*"', ""), (before_json.stdout:gsub('"created": "[^"]*"', "")),
       "the same --json plan")
end)

test("a read that fails while another target is planned: that target is not planned, nothing deprovisioned in it", function(t)
  local w <close> = bob_leaving(t)
  w:clear_requests()
  w.confluence:faults{ hold_path = MEMBERS }
  local run = start(w, "sync")
  t:ok(eventually(function() return w.jira:count{ path = LEADS, method = "GET" } > 0 end),
       "Jira planned while Confluence's read was held")
  -- the held listing then fails (not retried: a 403)
  w.confluence:faults{ fail_rate = 1.0, fail_status = 403, fail_path = MEMBERS }
  local r = wait(run)
  w.confluence:faults{}
  t:eq(r.code, 1, r.stdout .. r.stderr)
  t:contains(r.stdout .. r.stderr, "reading confluence failed, nothing planned for it")
  t:same(w:writes("confluence"), {}, "nothing written to Confluence")
  t:eq(w:accounts("confluence")["bob.stone@example.com"].disabled, false, "bob still enabled in Confluence")
  t:eq(w:accounts("jira")["bob.stone@example.com"].active, false, "bob deactivated in Jira")
end)

return test.done()
