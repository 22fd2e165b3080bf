-- test_target_selector.lua: `--target` on plan, sync and apply, end to end
-- against the simulators (issue 15): a run limited to some targets of the
-- entries reads and writes only those, is recorded as such, and a target
-- that names nothing is a usage error (exit 2) that reads nothing.
local test = require "tap"
local world = require "support.world"
local json = require "usersync.json"

local MANUAL = { groups = { mode = "manual", map = { Engineering = { "developers" } } } }

local function two_targets(opts)
  opts = opts or {}
  local w = world.new{ products = opts.products or { "jira", "confluence" }, sync = opts.sync or MANUAL }
  w:okta_group("00gEng", "Engineering")
  w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gEng" } })
  w:okta_user("00u2", "bob.stone@example.com", { groups = { "00gEng" } })
  w:load()
  return w
end

local function count(t) local n = 0; for _ in pairs(t) do n = n + 1 end; return n end

test("sync --target jira writes jira only and does not read the other targets", function(t)
  local w <close> = two_targets()
  local r = w:usersync("sync", "--target", "jira")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:eq(count(w:accounts("jira")), 2, "jira synced")
  t:eq(#w.confluence:requests(), 0, "confluence neither read nor written")
  t:ok(not r.stdout:find("confluence", 1, true), "the plan shows jira only: " .. r.stdout)
  local h = json.decode(w:usersync("history", "--json").stdout).runs
  t:eq(h[1].covers, "full on jira")
  t:same(h[1].targets, { "jira" })
  t:match(w:usersync("history").stdout, "\n1 +%S+ +main +manual +full on jira ")
  -- not a full run: the last-success metric and serve's schedule do not count it
  local state = require "usersync.state"
  local db = assert(state.open(w.dir .. "/usersync.db"))
  t:eq(state.last_ended(db, "main", true), nil, "no full success yet")
  t:eq(state.last_ended(db, "main"), nil, "no full run yet")
  db:close()
  -- without it: every target, and a full run again
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:eq(count(w:accounts("confluence")), 2)
  h = json.decode(w:usersync("history", "--json").stdout).runs
  t:eq(h[1].covers, "full")
  t:eq(h[1].targets, nil)
  db = assert(state.open(w.dir .. "/usersync.db"))
  t:eq(state.last_ended(db, "main", true), h[1].ended, "the full run counts")
  db:close()
end)

test("--target repeated or as a comma list; plan reads only those", function(t)
  local w <close> = two_targets{ products = { "jira", "confluence", "bitbucket" } }
  for _, argv in ipairs({ { "--target", "jira", "--target", "confluence" }, { "--target=jira,confluence" },
                          { "--target", "confluence, jira" } }) do
    w:clear_requests()
    local r = w:usersync("plan", table.unpack(argv))
    t:eq(r.code, 0, r.stderr)
    t:contains(r.stdout, "jira (jira):")
    t:contains(r.stdout, "confluence (confluence):")
    t:ok(not r.stdout:find("bitbucket", 1, true), table.concat(argv, " ") .. ": no bitbucket")
    t:eq(#w.bitbucket:requests(), 0, "bitbucket not read")
    t:ok(#w.jira:requests() > 0 and #w.confluence:requests() > 0, "the named ones read")
  end
end)

test("a --target that names nothing: exit 2 with the known targets and a suggestion, nothing read", function(t)
  local w <close> = two_targets()
  for _, cmd in ipairs({ "plan", "sync" }) do
    local r = w:usersync(cmd, "--target", "jria")
    t:eq(r.code, 2, r.stdout .. r.stderr)
    t:eq(r.stderr, "usersync " .. cmd .. ": no target 'jria' in sync entry 'main' (known: jira, confluence); "
      .. "did you mean jira?\n")
    t:eq(r.stdout, "")
    r = w:usersync(cmd, "--target", "jira,bitbucket")
    t:eq(r.code, 2)
    t:eq(r.stderr, "usersync " .. cmd .. ": no target 'bitbucket' in sync entry 'main' (known: jira, confluence)\n")
    r = w:usersync(cmd, "--target", "jira,")
    t:eq(r.code, 2)
    t:eq(r.stderr, "usersync " .. cmd .. ": --target needs a name (--target A,B or repeated)\n")
  end
  local r = w:usersync("sync", "--sync", "main", "--target", "wiki")
  t:eq(r.stderr, "usersync sync: no target 'wiki' in sync entry 'main' (known: jira, confluence)\n")
  t:eq(#w.okta:requests(), 0, "Okta not read")
  t:eq(#w.jira:requests() + #w.confluence:requests(), 0, "no target read")
end)

test("several entries: --target runs only the entries with that target", function(t)
  local w <close> = two_targets{ sync = {
    { name = "jira-only", targets = { "jira" }, groups = MANUAL.groups },
    { name = "wiki-only", targets = { "confluence" }, groups = MANUAL.groups } } }
  local r = w:usersync("sync", "--target", "confluence")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:eq(#w.jira:requests(), 0, "jira not read")
  t:eq(count(w:accounts("confluence")), 2)
  local h = json.decode(w:usersync("history", "--json").stdout).runs
  t:eq(#h, 1, "one run: the entry with that target")
  t:eq(h[1].sync, "wiki-only")
  t:eq(h[1].covers, "full", "every target of that entry: a full run")
  r = w:usersync("plan", "--target", "bitbucket")
  t:eq(r.code, 2)
  t:eq(r.stderr, "usersync plan: no target 'bitbucket' in sync entries 'jira-only', 'wiki-only' "
    .. "(known: jira, confluence)\n")
  r = w:usersync("plan", "--sync", "jira-only", "--target", "confluence")
  t:eq(r.code, 2)
  t:eq(r.stderr, "usersync plan: no target 'confluence' in sync entry 'jira-only' (known: jira)\n")
end)

test("apply keeps to the targets of a plan saved with --target; apply --target applies part of a plan", function(t)
  local w <close> = two_targets()
  local file = w.dir .. "/plan.json"
  local r = w:usersync("plan", "--target", "jira", "--out", file)
  t:eq(r.code, 0, r.stderr)
  local saved = json.decode(io.open(file):read("a"))
  t:same(saved.targets, { "jira" }, "the plan file says which targets")
  w:clear_requests()
  r = w:usersync("apply", file)
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:ok(not r.stdout:find("planned since", 1, true), "confluence is not 'planned since': " .. r.stdout)
  t:eq(count(w:accounts("jira")), 2)
  t:eq(#w.confluence:requests(), 0, "confluence untouched")
  r = w:usersync("apply", "--target", "confluence", file)
  t:eq(r.code, 2)
  t:eq(r.stderr, "usersync apply: no target 'confluence' in the plan " .. file .. " (it covers: jira)\n")
  -- a whole plan, applied one target at a time
  r = w:usersync("plan", "--out", file)
  t:eq(r.code, 0, r.stderr)
  r = w:usersync("apply", "--target", "confluence", file)
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:eq(count(w:accounts("confluence")), 2)
  r = w:usersync("apply", "--target", "confluenec", file)
  t:eq(r.code, 2)
  t:eq(r.stderr, "usersync apply: no target 'confluenec' in sync entry 'main' (known: jira, confluence); "
    .. "did you mean confluence?\n")
end)

return test.done()
