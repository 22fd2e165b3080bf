-- regex_limit.lua: how long the match limit takes to stop catastrophic
-- backtracking (the timing tests/lua/test_re.lua deliberately does not assert).
--   usersync run tests/bench/regex_limit.lua [rounds]
-- Prints the best CPU seconds of `rounds` runs per pattern.
local re = require "usersync.re"

local rounds = tonumber(arg and arg[1]) or 3
local cases = {
  { "^(\\w+\\s?)*$", string.rep("a", 5000) .. "!" },
  { "(a+)+$", string.rep("a", 40) .. "!" },
}
for _, c in ipairs(cases) do
  local best = math.huge
  for _ = 1, rounds do
    local t0 = os.clock()
    local ok, _, code = re.test(c[2], c[1])
    assert(ok == nil and code == "EREGEX_LIMIT", "the limit was not hit")
    best = math.min(best, os.clock() - t0)
  end
  print(("%-16s subject %5d bytes: %.3f s CPU to EREGEX_LIMIT"):format(c[1], #c[2], best))
end
