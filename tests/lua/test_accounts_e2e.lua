-- `usersync accounts`: every account of a target, managed or not, linked to
-- whom and since when, and why usersync leaves the others alone. End to
-- end against the simulators; the target's accounts are read live.
local test = require "tap"
local world = require "support.world"
local json = require "usersync.json"

-- Jira already holds accounts usersync did not make: a service account,
-- one whose Okta user is STAGED, one two Okta users map to, and one an
-- Okta user arriving after the first sync will adopt.
local JIRA = { users = {
  { name = "svc-build", key = "svc-build", displayName = "Build bot", emailAddress = "build@example.com", active = true },
  { name = "dave.moss@example.com", key = "dave", displayName = "Dave Moss", emailAddress = "dave.moss@example.com", active = true },
  { name = "sam@example.com", key = "sam", displayName = "Sam", emailAddress = "sam@example.com", active = true },
  { name = "erin.lake@example.com", key = "erin", displayName = "Erin", emailAddress = "erin.lake@example.com", active = false },
}, groups = {}, members = {} }

-- usernames are e-mail addresses here
local SYNC = { attributes = { name = "profile.email" } }

local function org()
  local w = world.small { products = { "jira" }, jira = JIRA, sync = SYNC }
  w:okta_user("00u4", "dave.moss@example.com", { status = "STAGED" })
  -- two Okta users with one e-mail address map to one Jira username
  w:okta_user("00u5", "sam@example.com")
  w:okta_user("00u6", "sam.two@example.com", { email = "sam@example.com" })
  w:load()
  return w
end

test("managed, with the Okta user and since when; the others with why", function(t)
  local w <close> = org()
  local r = w:usersync("sync")
  t:eq(r.code, 1, "the sam conflict fails the run: " .. r.stderr)
  w:okta_user("00u7", "erin.lake@example.com")
  w:load()
  w:clear_requests()
  r = w:usersync("accounts", "--target", "jira")
  t:eq(r.code, 0, r.stderr)
  local o = r.stdout
  t:match(o, "^jira %(jira, http://127%.0%.0%.1:%d+%): 7 accounts, 3 managed by usersync, 4 left alone\n")
  t:match(o, "\n  ann%.lee@example%.com +yes +yes +ann%.lee@example%.com %(00u1%) +%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z +created by usersync %(sync main%)\n")
  t:match(o, "\n  svc%-build +no +yes +%- +%- +no Okta user in scope maps to it\n")
  t:match(o, "\n  dave%.moss@example%.com +no +yes +%- +%- +Okta user dave%.moss@example%.com %(00u4, STAGED%) is left out by the policy\n")
  t:match(o, '\n  sam@example%.com +no +yes +%- +%- +conflict: Okta users sam%.two@example%.com, sam@example%.com all map to the username "sam@example%.com"')
  t:match(o, "\n  erin%.lake@example%.com +no +no +%- +%- +not linked yet: the next sync adopts it for Okta user erin%.lake@example%.com %(00u7%)\n")
  t:eq(#w:writes("jira"), 0, "accounts writes nothing")
  t:ok(w.okta:count{ path = "^/api/v1/apps/" } > 0, "Okta's scope was read")

  -- --unmanaged: only the accounts left alone; --csv and --json carry the same rows
  r = w:usersync("accounts", "--unmanaged", "--csv")
  t:eq(r.code, 0, r.stderr)
  local lines = {}
  for line in r.stdout:gmatch("([^\r\n]+)\r\n") do lines[#lines + 1] = line end
  t:eq(lines[1], "target,account,display_name,email,active,managed,sync,okta_id,okta_login,linked_since,created_by_us,why,reason")
  t:eq(#lines, 5, "a header and the four accounts left alone")
  t:match(r.stdout, "\r\njira,svc%-build,Build bot,build@example%.com,true,false,,,,,,no_okta_user,no Okta user in scope maps to it\r\n")
  r = w:usersync("accounts", "--json")
  local doc = json.decode(r.stdout)
  t:eq(doc and doc.schema, "usersync.accounts/1")
  t:eq(doc.targets[1].total, 7)
  t:eq(doc.targets[1].managed, 3)
  local by = {}
  for _, a in ipairs(doc.targets[1].accounts) do by[a.account] = a end
  t:eq(by["bob.stone@example.com"].okta_id, "00u2")
  t:eq(by["bob.stone@example.com"].created_by_us, true)
  t:eq(by["sam@example.com"].why, "conflict")
  t:eq(by["dave.moss@example.com"].why, "excluded")
end)

test("an adopted account, and a linked user who left Okta's scope", function(t)
  local w <close> = org()
  w:okta_user("00u7", "erin.lake@example.com")
  w:load()
  t:eq(w:usersync("sync").code, 1)
  w.app_users = { "00u1", "00u2", "00u7" }  -- carol leaves the app
  w.sync = { attributes = SYNC.attributes, users = { deactivate = false } }
  w:write_config()
  w:load()
  local r = w:usersync("accounts")
  t:eq(r.code, 0, r.stderr)
  t:match(r.stdout, "\n  erin%.lake@example%.com +yes +yes +erin%.lake@example%.com %(00u7%) +%S+ +adopted %(sync main%)\n")
  -- (the first sync reactivated Erin's account: she is active in Okta)
  t:match(r.stdout, "\n  svc%-build +no +yes +%- +%- +no Okta user in scope maps to it\n")
  t:match(r.stdout, "\n  carol%.king@example%.com +yes +yes +%(00u3%) +%S+ +created by usersync; its Okta user is no longer in scope %(sync main%)\n")
end)

test("before the first sync nothing is managed, and no store is created", function(t)
  local w <close> = org()
  local r = w:usersync("accounts")
  t:eq(r.code, 0, r.stderr)
  t:match(r.stdout, "4 accounts, 0 managed by usersync, 4 left alone")
  t:match(r.stdout, "\n  svc%-build +no ")
  t:contains(r.stdout, "does not exist yet (before the first sync): no account is linked")
  local f = io.open(w.dir .. "/usersync.db", "rb")
  t:eq(f, nil, "no store file")
  if f then f:close() end
end)

test("usage errors and a target that cannot be read", function(t)
  local w <close> = org()
  local r = w:usersync("accounts", "--target", "jirra")
  t:eq(r.code, 2)
  t:contains(r.stderr, "usersync accounts: no target 'jirra' (known: jira); did you mean jira?")
  r = w:usersync("accounts", "--json", "--csv")
  t:eq(r.code, 2)
  t:contains(r.stderr, "--json and --csv exclude each other")
  w.jira:faults{ fail_rate = 1.0, fail_status = 503 }
  r = w:usersync("accounts")
  t:eq(r.code, 1)
  t:match(r.stderr, "usersync accounts: reading jira failed: ")
  t:eq(r.stdout, "", "nothing listed from a failed read")
end)

test("hostile names: --csv guards formulas and keeps a long name whole; the table shows control characters escaped", function(t)
  -- hand-computed: the leading quote goes inside the CSV quoting, quotes doubled
  local long = ("x"):rep(10000)
  local w <close> = world.small { products = { "jira" }, sync = SYNC, jira = { users = {
    { name = "svc-formula", key = "svc-formula", displayName = '=HYPERLINK("http://x")', emailAddress = "svc@example.com", active = true },
    { name = "svc-at", key = "svc-at", displayName = "@SUM(1)", emailAddress = "at@example.com", active = true },
    { name = "svc-long", key = "svc-long", displayName = long, emailAddress = "long@example.com", active = true },
    { name = "svc\27[2J\u{202E}x", key = "svc-esc", displayName = "Esc", emailAddress = "esc@example.com", active = true },
  }, groups = {}, members = {} } }
  w:load()
  local r = w:usersync("accounts", "--unmanaged", "--csv")
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, '\r\njira,svc-formula,"\'=HYPERLINK(""http://x"")",svc@example.com,true,false,,,,,,no_okta_user,no Okta user in scope maps to it\r\n')
  t:contains(r.stdout, "\r\njira,svc-at,'@SUM(1),at@example.com,true,false,")
  t:ok(r.stdout:find("\r\njira,svc-long," .. long .. ",long@example.com,true,false,", 1, true), "the 10,000-character name whole")
  -- the text table: an escape sequence in an account name reaches the terminal as \x1b, an override as \u202e
  r = w:usersync("accounts")
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "\n  svc\\x1b[2J\\u202ex  no       yes     -          -             no Okta user in scope maps to it\n")
  t:eq(r.stdout:find("\27", 1, true), nil, "no escape character")
end)

return test.done()
