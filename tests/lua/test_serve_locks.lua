-- test_serve_locks.lua: the runs of `usersync serve` take the same locks
-- as `sync` and `apply` (issue 15): the lock of the entry and of every
-- entry sharing a target with it. Two serve processes on one store (one
-- config, two sync entries that write the same Jira) never apply at once:
-- the run kept out is skipped and logged, and tried again later.
local test = require "tap"
local world = require "support.world"
local serve = require "support.serve"
local json = require "usersync.json"

local USERS = 60

local function shared_world()
  local w = world.new{ products = { "jira" }, sync = {
      { name = "eng", targets = { "jira" }, every = "1h",
        groups = { mode = "manual", map = { Engineering = { "eng-devs" } } } },
      { name = "ops", targets = { "jira" }, every = "1h",
        groups = { mode = "manual", map = { Engineering = { "ops-devs" } } } } },
    extra = { raw = '  serve = { listen = "127.0.0.1:0" },' } }
  w:okta_group("00gEng", "Engineering")
  for i = 1, USERS do
    w:okta_user(("00u%04d"):format(i), ("user%03d@example.com"):format(i), { groups = { "00gEng" } })
  end
  w:load()
  return w
end

local function runs(w)
  return (json.decode(w:usersync("history", "--json", "--limit", "100").stdout) or {}).runs or {}
end

test("two entries sharing a target never apply at once from two serves on one store", function(t)
  local w <close> = shared_world()
  -- every write takes a while, so a run of one entry lasts long enough for
  -- the other serve to try the other entry meanwhile
  w.jira:faults{ latency_ms = 40 }
  -- started together (not b once a serves): on a loaded machine a serve
  -- started after the other was up could find both entries already run
  -- the store is made before they start: two processes creating one new
  -- store at the same moment is not what this test is about (on a loaded
  -- machine one of them gave up waiting for the other's schema)
  do local db <close> = require("usersync.store").open(w.dir .. "/usersync.db") end
  local a <close> = serve.start(w, { name = "a", nowait = true })
  local b <close> = serve.start(w, { name = "b", nowait = true })
  a:wait_started()
  b:wait_started()
  -- both entries are due at once in both processes: between them, each
  -- entry runs once and every other attempt is kept out by a lock
  t:ok(serve.wait_for(function()
    local n = {}
    for _, r in ipairs(runs(w)) do
      if r.ended then n[r.sync] = (n[r.sync] or 0) + 1 end
    end
    return n.eng and n.ops
  end, 120), "eng and ops each ran")
  t:ok(serve.wait_for(function() return a:count_log("run skipped") + b:count_log("run skipped") >= 2 end, 120),
    "the attempts kept out were skipped and logged")
  local skipped = a:find_log("run skipped") or b:find_log("run skipped") or {}
  t:contains(tostring(skipped.msg), "another run holds the lock of this sync entry or of one sharing a target")
  t:match(tostring(skipped.detail), "another run of sync \"%w+\" is in progress")
  t:eq(skipped.retry_in, 30, "tried again later")
  t:eq(a:stop(), 0)
  t:eq(b:stop(), 0)

  -- the store: no two runs' applies overlap (history is newest first)
  local list = runs(w)
  for i = 1, #list do
    for j = i + 1, #list do
      local x, y = list[i], list[j]
      t:ok(x.started >= (y.ended or "~") or y.started >= (x.ended or "~"),
        ("run %d (%s, %s..%s) and run %d (%s, %s..%s) do not overlap"):format(x.id, x.sync, x.started,
          tostring(x.ended), y.id, y.sync, y.started, tostring(y.ended)))
    end
  end
  -- Jira's request log: each entry's memberships were added in one
  -- stretch, never interleaved with the other's
  local adds = {}
  for _, r in ipairs(w.jira:requests()) do
    local g = r.method == "POST" and r.path == "/rest/api/2/group/user" and r.query:match("groupname=(%w+%-devs)")
    if g then adds[#adds + 1] = { at = r.at, group = g } end
  end
  table.sort(adds, function(x, y) return x.at < y.at end)
  local switches = 0
  for i = 2, #adds do
    if adds[i].group ~= adds[i - 1].group then switches = switches + 1 end
  end
  t:eq(#adds, 2 * USERS, "every membership added once")
  t:eq(switches, 1, "the two entries' additions did not interleave")
  t:eq(#w:members_of("jira", "eng-devs"), USERS)
  t:eq(#w:members_of("jira", "ops-devs"), USERS)
end)

return test.done()
