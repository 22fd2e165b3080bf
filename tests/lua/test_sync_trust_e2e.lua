-- End-to-end data-safety scenarios (issue 12): the real `usersync` binary
-- against the simulators, with their fault injection and kill -9, asserting
-- what the targets hold, what the store recorded and what was sent.
local test = require "tap"
local world = require "support.world"
local store = require "usersync.store"
local state = require "usersync.state"
local proc = require "support.proc"

local MANUAL = { groups = { mode = "manual", map = { Engineering = { "developers" }, Ops = { "operations" } } },
                 defaults = { new_users = { "new-hires" }, all_users = { "okta-synced" } } }

local function base_world(opts)
  local w = world.new(opts)
  w:okta_group("00gEng", "Engineering")
  w:okta_group("00gOps", "Ops")
  w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gEng" } })
  w:okta_user("00u2", "bob.stone@example.com", { groups = { "00gEng" } })
  w:okta_user("00u3", "carol.king@example.com", { groups = { "00gOps" } })
  w:load()
  return w
end

local function db_of(w) return assert(store.open(w.dir .. "/usersync.db")) end

local function count(list, fn)
  local n = 0
  for _, x in ipairs(list) do if fn(x) then n = n + 1 end end
  return n
end

test("sync takes the lock before reading: a second run fails at once, names the holder, reads nothing", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "jira" } }
  t:eq(w:usersync("sync").code, 0)
  w:clear_requests()
  local db <close> = db_of(w)
  assert(db:lock("sync:main", { ttl = 600 }))
  local r = w:usersync("sync")
  t:eq(r.code, 1, "refused by the lock: exit 1")
  t:contains(r.stderr, "pid " .. state.pid(), "names the holder's pid")
  t:contains(r.stderr, "another run of sync \"main\" is in progress")
  t:ok(not r.stdout:find("run ", 1, true), "no run id printed: " .. r.stdout)
  t:eq(#w.okta:requests(), 0, "Okta was not read")
  t:eq(#w.jira:requests(), 0, "Jira was not read")
  t:eq(db:first("SELECT count(*) AS n FROM runs").n, 1, "no run recorded for the refused sync")
  db:unlock("sync:main")
  t:eq(w:usersync("sync").code, 0, "free again once released")
end)

return test.done()
