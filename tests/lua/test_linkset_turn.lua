-- state.linkset loads a target's links and owned memberships with a turn
-- every 512 rows when given one: the engine's reads still running go on
-- while a large set is loaded (a 10,000-user set took 80-170 ms at once,
-- every request of the other targets held meanwhile).
local test = require "tap"
local state = require "usersync.state"
local proc = require "support.proc"

test("linkset with a turn: called while the rows load, the same set", function(t)
  local path = proc.tempfile("", ".db")
  os.remove(path)
  local db = assert(state.open(path))
  assert(db:exec("BEGIN"))
  for i = 1, 1500 do
    local id = ("00u%05d"):format(i)
    assert(db:exec("INSERT INTO links (sync, target, okta_id, account_name) VALUES ('main', 'jira', ?, ?)", id, "user" .. i))
    assert(db:exec("INSERT INTO owned_memberships (sync, target, group_name, okta_id, why) VALUES ('main', 'jira', 'Devs', ?, 'mapping')", id))
  end
  assert(db:exec("COMMIT"))
  local turns = 0
  local set = state.linkset(db, "main", "jira", function() turns = turns + 1 end)
  t:eq(turns, 3000 // 512, "a turn every 512 rows")
  local plain = state.linkset(db, "main", "jira")
  t:eq(#set, 1500); t:eq(#plain, 1500)
  for _, id in ipairs({ "00u00001", "00u00777", "00u01500" }) do
    t:eq(set:name(id), plain:name(id), id)
    t:eq(set:why("devs", set:name(id)), "mapping", id .. " owned")
  end
  db:close()
  os.remove(path)
end)

return test.done()
