-- usersync.memory: the garbage collector's settings while a whole-org plan
-- is built or written out (a 100,000-user first sync plans over a million
-- operations). The planner is pure and knows none of this; its callers
-- (the engine while planning, report while writing a plan) set it.
--
--   local memory = require "usersync.memory"
--   local _ <close> = memory.pause(memory.PLAN_PAUSE)   -- restored on any exit
--   memory.settle(few)                                  -- between two phases
--   local _ <close> = memory.for_writing(run_plan)
local M = {}

-- The GC pause while planning (Lua's default: 200, a heap twice what is
-- live before a cycle): 150 keeps a 100,000-user plan's peak lower at a few
-- per cent more CPU.
M.PLAN_PAUSE = 150

-- The GC pause while a target's plan is built streamed (`usersync plan`
-- of one entry: plan.build's input.sink): its ops are garbage as soon as
-- they are written, so the heap is the planner's state and a stream of
-- garbage; 120 keeps a 100,000-user first plan's peak ~40 MB lower than
-- PLAN_PAUSE at about a quarter more CPU.
M.STREAM_PAUSE = 120

-- Sets the GC pause and returns a to-be-closed value that restores the
-- previous one.
function M.pause(pause)
  local old = collectgarbage("setpause", pause)
  return setmetatable({}, { __close = function() collectgarbage("setpause", old) end })
end

-- The work of one step of a collection in slices (as if this many KB
-- were allocated): a fraction of a millisecond for most heaps.
M.SETTLE_STEP = 256

-- A full collection between two phases of a whole-org plan, so each phase
-- starts from what is live, not from the garbage of the one before (a
-- plan for a few users, `few`, has too little garbage to be worth one).
-- With `turn` (a function: reads are still running in the http engine,
-- which only turns when Lua lets it), the collection is made in slices
-- with a turn after each: the cycle under way is finished, then a whole
-- new one, so what was garbage when settle began is freed as by a full
-- collection, and the reads go on meanwhile (a full collection at once
-- held every request in flight for its length).
function M.settle(few, turn)
  if few then return end
  if not turn then collectgarbage(); return end
  for _ = 1, 2 do
    repeat turn() until collectgarbage("step", M.SETTLE_STEP)
  end
end

-- For report.write_plan_text: a large plan (over 10,000 ops) is written
-- after a full collection with a pause of 150 (the million short-lived
-- lines of a 100,000-user first sync otherwise grow the heap by half again;
-- the plan file's few large pieces are not worth the extra cycles). Returns
-- pause's to-be-closed value, or nil for a small plan.
function M.for_writing(run_plan)
  local n = 0
  for _, s in ipairs(run_plan.syncs) do
    for _, tp in ipairs(s.targets) do n = n + #tp.ops end
  end
  if n <= 10000 then return nil end
  collectgarbage()
  return M.pause(150)
end

return M
