-- The sandbox's budgets end to end, running the real binary: a config whose
-- __gc never ends, or allocates without end, is a config error of
-- `usersync check --config-only` (exit 2, the file named) instead of a hang;
-- a config table whose __index never ends too; a policy whose hooks each
-- spend much CPU within the per-call budget fails `plan` once the run's
-- budget is spent (exit 1, the policy file named), with a request count
-- showing it stopped early.
local test = require "tap"
local world = require "support.world"
local proc = require "support.proc"

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- A valid config (the world's) with `prelude` run before it returns.
local function config_with(w, prelude)
  local f = assert(io.open(w.config))
  local text = f:read("a")
  f:close()
  local path = w.dir .. "/gc.conf.lua"
  write(path, prelude .. "\n" .. text)
  return path
end

local function check(path)
  return proc.run({ os.getenv("USERSYNC"), "check", "--config-only", "-c", path },
    { env = { US_TEST_OKTA_TOKEN = "t", US_TEST_ATL_TOKEN = "t", NO_COLOR = "1" } })
end

test("check --config-only: a config with a looping __gc is a config error, not a hang", function(t)
  local w <close> = world.new { products = { "jira" } }
  local ok = check(w.config)
  t:eq(ok.code, 0, "the world's config itself is valid: " .. ok.stderr)
  local path = config_with(w, "setmetatable({}, { __gc = function() local n = 0 while true do n = n + 1 end end })")
  local r = check(path)
  t:eq(r.code, 2, r.stdout .. r.stderr)
  t:contains(r.stderr, "usersync: config " .. path .. " has 1 error")
  t:contains(r.stderr, path .. ": a __gc metamethod failed: " .. path .. ":1: instruction budget of 10000000 exceeded")
  t:eq(r.stdout, "")
end)

test("check --config-only: a __gc that allocates without end hits the memory cap", function(t)
  local w <close> = world.new { products = { "jira" } }
  local path = config_with(w, [[
setmetatable({}, { __gc = function() local t = {} for i = 1, 1e9 do t[i] = ("x"):rep(100) .. i end end })]])
  local r = check(path)
  t:eq(r.code, 2, r.stdout .. r.stderr)
  t:contains(r.stderr, path .. ": a __gc metamethod failed: memory cap of 67108864 bytes exceeded")
end)

test("check --config-only: a config table whose __index never ends is a config error", function(t)
  local w <close> = world.new { products = { "jira" } }
  local f = assert(io.open(w.config))
  local text = f:read("a")
  f:close()
  local path = w.dir .. "/index.conf.lua"
  write(path, (text:gsub("^return {", "return setmetatable({", 1):gsub("}%s*$",
    "}, { __index = function() while true do end end })\n")))
  local r = check(path)
  t:eq(r.code, 2, r.stdout .. r.stderr)
  t:match(r.stderr, "index%.conf%.lua:%d+: instruction budget of 10000000 exceeded")
end)

test("plan: hooks that each spend much CPU fail the run once its budget is spent", function(t)
  local w <close> = world.new { products = { "jira" } }
  for i = 1, 40 do w:okta_user(("00u%02d"):format(i), ("user%02d@example.com"):format(i)) end
  w:load()
  local policy = w.dir .. "/slow-policy.lua"
  -- ~2.4M instructions per call: well within the 50M per-call budget
  write(policy, [[
local function spin() local x = 0 for i = 1, 600000 do x = x + i end return x end
return {
  user = function(u, ctx) spin(); return {} end,
}
]])
  w:write_config({ policy = policy, limits = { policy_instructions = 20000000 } })
  w:clear_requests()
  local r = w:usersync("plan")
  t:eq(r.code, 1, r.stdout .. r.stderr)
  t:contains(r.stderr, "usersync plan: policy " .. policy ..
    ": instruction budget of 20000000 for the whole run exceeded (all its calls together; runaway policy?)")
  t:eq(r.stdout, "", "no plan is printed")
  -- the same policy with the default run budget plans all 40 users
  w:write_config({ policy = policy })
  r = w:usersync("plan")
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "user40@example.com")
end)

return test.done()
