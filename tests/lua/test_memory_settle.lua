-- memory.settle between two phases of a whole-org plan: a full collection,
-- made in slices with an engine turn after each while reads still run in
-- the http engine (a collection at once held every request in flight for
-- its length).
local test = require "tap"
local memory = require "usersync.memory"

-- Some garbage (MB), left for the collector.
local function garbage(mb)
  local t = {}
  for i = 1, mb * 1024 * 1024 // 64 do t[i] = { i } end
  return #t
end

test("settle with a turn: the garbage is freed as by a full collection, with turns between", function(t)
  collectgarbage()
  local live = collectgarbage("count")
  collectgarbage("stop") -- nothing collected before settle
  garbage(16)
  t:ok(collectgarbage("count") > live + 8 * 1024, "garbage made")
  local turns = 0
  memory.settle(nil, function() turns = turns + 1 end)
  collectgarbage("restart")
  t:ok(collectgarbage("count") < live + 2 * 1024, ("freed: %.0f KB live, %.0f KB after"):format(live, collectgarbage("count")))
  t:ok(turns > 1, ("turns between the slices: %d"):format(turns))
end)

test("settle without a turn collects at once; a plan for a few users not at all", function(t)
  collectgarbage()
  local live = collectgarbage("count")
  collectgarbage("stop")
  garbage(8)
  memory.settle({ "few" })
  t:ok(collectgarbage("count") > live + 4 * 1024, "few: nothing collected")
  memory.settle()
  t:ok(collectgarbage("count") < live + 2 * 1024, "collected")
  collectgarbage("restart")
end)

return test.done()
