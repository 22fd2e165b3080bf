-- Paths in the config are the config file's, not the current directory's
-- (issue 12): a command run from another directory with -c DIR/usersync.conf.lua
-- uses DIR's store, so the links survive and deprovisioning goes on; `check`
-- reports the store (path, links, last run) and never creates a file.
local test = require "tap"
local world = require "support.world"
local proc = require "support.proc"
local json = require "usersync.json"

local ENV = { US_TEST_OKTA_TOKEN = "test-token", US_TEST_ATL_TOKEN = "test-token",
              USERSYNC_LOG_LEVEL = "warn", NO_COLOR = "1" }

-- Runs usersync with `dir` as the current directory.
local function run_in(dir, ...)
  local words = { "cd", proc.quote(dir), "&&", "exec", proc.quote(os.getenv("USERSYNC")) }
  for _, a in ipairs({ ... }) do words[#words + 1] = proc.quote(a) end
  return proc.run({ "sh", "-c", table.concat(words, " ") }, { env = ENV })
end

local function listing(dir)
  local p = io.popen("ls -A " .. proc.quote(dir))
  local out = p:read("a")
  p:close()
  return out
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- A world whose config (in w.dir, "A") names its store relatively, and an
-- empty sibling directory "B" to run commands from.
local function setup()
  local w = world.new { products = { "jira" } }
  local text = proc.slurp(w.config):gsub('state = "[^"]*"', 'state = "usersync.db"')
  local f = assert(io.open(w.config, "w")); f:write(text); f:close()
  w:okta_user("00u1", "ann.lee@example.com")
  w:okta_user("00u2", "bob.stone@example.com")
  w:okta_user("00u3", "carol.king@example.com")
  w:load()
  local parent = w.dir:match("^(.*)/[^/]+$")
  local a = w.dir:match("([^/]+)$")
  local b = w.dir .. "-elsewhere"
  os.execute("mkdir -p " .. proc.quote(b))
  return w, b, "../" .. a .. "/usersync.conf.lua", parent
end

test("check before the first run: the store does not exist yet, and check does not create it", function(t)
  local w <close>, b, rel = setup()
  local r = run_in(b, "check", "-c", rel)
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:contains(r.stdout, "store ../" .. w.dir:match("([^/]+)$") .. "/usersync.db: does not exist yet (the first sync or apply creates it)")
  local j = run_in(b, "check", "--config-only", "--json", "-c", rel)
  t:eq(j.code, 0, j.stderr)
  local doc = assert(json.decode(j.stdout))
  t:eq(doc.store.exists, false)
  t:eq(doc.store.path, "../" .. w.dir:match("([^/]+)$") .. "/usersync.db")
  t:eq(listing(b), "", "nothing created where check ran")
  t:ok(not exists(w.dir .. "/usersync.db"), "nothing created next to the config")
  os.execute("rm -rf " .. proc.quote(b))
end)

test("a config in A with state = \"usersync.db\", run from B: A's store is used, B stays empty, deprovisioning works", function(t)
  local w <close>, b, rel = setup()
  -- the first sync, from A itself
  local r = run_in(w.dir, "sync", "-c", "usersync.conf.lua")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:ok(exists(w.dir .. "/usersync.db"), "the store is next to the config")
  t:eq(w:accounts("jira")["bob.stone@example.com"].active, true)

  -- check from B: A's store, its links and its last run
  r = run_in(b, "check", "-c", rel)
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:match(r.stdout, "store %.%./[^/]+/usersync%.db: 3 accounts linked, last run 1 %(sync main, [%d%-T:.]+Z, ok%)\n")
  local j = run_in(b, "check", "--json", "-c", rel)
  local doc = assert(json.decode(j.stdout))
  t:eq(doc.store.exists, true)
  t:eq(doc.store.links, 3)
  t:eq(doc.store.last_run.id, 1)
  t:eq(doc.store.last_run.outcome, "ok")

  -- bob leaves the app; a sync from B deactivates him (his link is in A's store)
  w.app_users = { "00u1", "00u3" }
  w:load()
  r = run_in(b, "sync", "-c", rel)
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:match(r.stdout, "%- deactivate +bob%.stone@example%.com")
  t:eq(w:accounts("jira")["bob.stone@example.com"].active, false, "deprovisioned from B")
  t:eq(listing(b), "", "no store (or any file) appeared in B")
  r = run_in(b, "history", "--json", "-c", rel)
  t:eq(#assert(json.decode(r.stdout)).runs, 2, "both runs are in A's store")
  os.execute("rm -rf " .. proc.quote(b))
end)

return test.done()
