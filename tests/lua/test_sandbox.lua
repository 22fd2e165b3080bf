-- Tests of the Lua host's sandbox: allow-listed globals, strict globals,
-- instruction budget, memory cap, module path.
local test = require "tap"
local sandbox = require "usersync.sandbox"

test("allow-listed globals only", function(t)
  for _, name in ipairs({ "os.execute", "os.exit", "os.getenv", "os.remove", "string.dump" }) do
    local fn = assert(sandbox.load("return " .. name, "@policy.lua"))
    local ok, v = sandbox.call(fn)
    t:eq(ok, true); t:eq(v, nil, name .. " must not be reachable")
  end
  for _, name in ipairs({ "io", "debug", "package", "dofile", "loadfile", "load", "collectgarbage", "getmetatable", "require_any" }) do
    local fn = assert(sandbox.load("return " .. name, "@policy.lua"))
    local ok, err = sandbox.call(fn)
    t:eq(ok, false, name .. " must not be reachable")
    t:match(tostring(err), "undefined global", name)
  end
  local fn = assert(sandbox.load("return string.upper('a'), math.max(1, 2), table.concat({'x','y'}), os.time() > 0", "@p.lua"))
  local ok, a, b, c, d = sandbox.call(fn)
  t:eq(ok, true); t:eq(a, "A"); t:eq(b, 2); t:eq(c, "xy"); t:eq(d, true)
end)

test("strict globals: read and write of undeclared names raise with script and line", function(t)
  local fn = assert(sandbox.load("local a = 1\nreturn missing_name", "@policy.lua"))
  local ok, err = sandbox.call(fn)
  t:eq(ok, false)
  t:match(err, "^policy%.lua:2: undefined global 'missing_name'")
  fn = assert(sandbox.load("\n\ncounter = 1", "@policy.lua"))
  ok, err = sandbox.call(fn)
  t:eq(ok, false)
  t:match(err, "^policy%.lua:3: assignment to undeclared global 'counter'")
end)

test("library tables are copies: a script cannot change what others see", function(t)
  local fn = assert(sandbox.load("string.upper = nil; return string.upper", "@p.lua"))
  t:eq(sandbox.call(fn), true)
  t:eq(string.upper("a"), "A")
end)

test("instruction budget ends a runaway loop naming script and line", function(t)
  local fn = assert(sandbox.load("local n = 0\nwhile true do\n  n = n + 1\nend", "@scripts/policy.lua"))
  local ok, err = sandbox.call({ instructions = 200000 }, fn)
  t:eq(ok, false)
  t:match(err, "^scripts/policy%.lua:[34]: instruction budget of 200000 exceeded")
  -- the budget is per call: the host is usable afterwards, no hook left behind
  local n = 0
  for i = 1, 1000000 do n = n + i end
  t:eq(n, 500000500000)
end)

test("a script cannot escape the budget by catching its error with pcall", function(t)
  local fn = assert(sandbox.load([[
local caught = 0
while true do
  local ok = pcall(function() while true do end end)
  caught = caught + 1
end]], "@pcall.lua"))
  local ok, err = sandbox.call({ instructions = 200000 }, fn)
  t:eq(ok, false)
  t:match(err, "instruction budget of 200000 exceeded")
end)

test("modules a script requires are its own copies: the host's are unchanged", function(t)
  local fn = assert(sandbox.load("local json = require 'usersync.json'\njson.encode = function() return 'PWNED' end\nlocal re = require 'usersync.re'\nre.compile = nil", "@mut.lua"))
  t:eq(sandbox.call(fn), true)
  t:eq(require("usersync.json").encode({ 1 }), "[1]")
  t:eq(type(require("usersync.re").compile), "function")
end)

test("budget also covers coroutines created inside the sandbox", function(t)
  local fn = assert(sandbox.load("local co = coroutine.wrap(function() while true do end end)\nco()", "@co.lua"))
  local ok, err = sandbox.call({ instructions = 100000 }, fn)
  t:eq(ok, false)
  t:match(err, "instruction budget")
end)

test("memory cap stops a script that allocates without bound", function(t)
  local fn = assert(sandbox.load("local t = {}\nfor i = 1, 1e9 do t[i] = ('x'):rep(64) .. i end", "@hog.lua"))
  local ok, err = sandbox.call({ memory = 8 * 1024 * 1024 }, fn)
  t:eq(ok, false)
  t:match(err, "memory cap of 8388608 bytes exceeded")
  collectgarbage()
  local used, limit = require("usersync.core").memory()
  t:ok(used < limit, "limit restored")
  t:ok(#("y"):rep(32 * 1024 * 1024) == 32 * 1024 * 1024, "large allocations work again outside the sandbox")
end)

test("sandbox require is limited to allow-listed modules", function(t)
  local fn = assert(sandbox.load("return require 'usersync.store'", "@p.lua"))
  local ok, err = sandbox.call(fn)
  t:eq(ok, false)
  t:match(err, "not available in the sandbox")
  fn = assert(sandbox.load("return type(require 'usersync.json')", "@p.lua"))
  local ok2, ty = sandbox.call(fn)
  t:eq(ok2, true); t:eq(ty, "table")
  fn = assert(sandbox.load("return require 'cjson'", "@p.lua"))
  t:eq((sandbox.call(fn)), false, "lua-cjson is not there")
end)

test("time.sleep is not available in the sandbox (it would stall a run)", function(t)
  local fn = assert(sandbox.load("local time = require 'usersync.time'\nreturn time.sleep, type(time.now())", "@p.lua"))
  local ok, sleep, now = sandbox.call(fn)
  t:eq(ok, true); t:eq(sleep, nil); t:eq(now, "number")
  t:eq(type(require("usersync.time").sleep), "function", "the real module is unchanged")
end)

test("binary chunks are refused", function(t)
  local bin = string.dump(function() return 1 end)
  local fn, err = sandbox.load(bin, "@bin.lua")
  t:eq(fn, nil)
  t:match(err, "binary")
end)

test("module path has no current directory and cpath is empty", function(t)
  t:eq(package.cpath, "")
  for entry in package.path:gmatch("[^;]+") do
    t:ok(entry:sub(1, 2) ~= "./", "cwd entry " .. entry)
  end
  t:eq(pcall(require, "cjson"), false, "no lua-cjson, and nothing loaded from the file system")
end)

test("nested sandbox calls keep the tighter outer budget and spend from it", function(t)
  local inner = assert(sandbox.load("local x = 0 while true do x = x + 1 end", "@inner.lua"))
  local outer = function() return sandbox.call({ instructions = 10 ^ 9 // 1 }, inner) end
  local ok, err = sandbox.call({ instructions = 100000 }, outer)
  t:eq(ok, false, "the inner call spent the outer budget: the outer call ends too")
  t:match(err, "budget of 100000 exceeded")
  -- calling in again does not refill the outer budget: each inner call
  -- spends ~5,000 instructions of the outer's 100,000
  local small = assert(sandbox.load("local x = 0 for i = 1, 2000 do x = x + i end return x", "@small.lua"))
  local calls = 0
  local looping = function()
    while true do
      calls = calls + 1
      sandbox.call({ instructions = 10 ^ 9 // 1 }, small)
    end
  end
  ok, err = sandbox.call({ instructions = 100000 }, looping)
  t:eq(ok, false)
  t:match(err, "budget of 100000 exceeded")
  t:ok(calls < 100, "the outer budget ended the loop after " .. calls .. " inner calls")
end)

-- A script returning a table whose metamethod never ends; the runtime then
-- uses the value (as a log line, a sort, a lookup would).
local LOOP = "function() local n = 0 while true do n = n + 1 end end"

local function returned(src, acct)
  acct = acct or sandbox.account{ name = "meta.lua", instructions = 200000 }
  local fn = assert(sandbox.load(src, "@meta.lua", nil, acct))
  local ok, v = sandbox.call(acct, fn)
  assert(ok, v)
  return v, acct
end

test("metamethods runtime code calls on sandboxed values run under the budget", function(t)
  local cases = {
    { "__tostring", function(v) return tostring(v) end },
    { "__index", function(v) return v.missing end },
    { "__newindex", function(v) v.missing = 1 end },
    { "__len", function(v) return #v end },
    { "__concat", function(v) return "x" .. v end },
    { "__call", function(v) return v() end },
    { "__eq", function(v) return v == setmetatable({}, getmetatable(v)) end },
    { "__lt", function(v) local l = { v, v, v }; table.sort(l); return l end },
    { "__add", function(v) return v + 1 end },
  }
  for _, c in ipairs(cases) do
    local v, acct = returned(("return setmetatable({}, { %s = %s })"):format(c[1], LOOP))
    local ok, err = pcall(c[2], v)
    t:eq(ok, false, c[1])
    t:match(tostring(err), "^meta%.lua:1: instruction budget of 200000 exceeded", c[1])
    t:match(tostring(acct.failure), "instruction budget of 200000 exceeded", c[1] .. " fails the account")
  end
  -- __pairs, and the iterator it hands to the runtime's for loop
  local v = returned("return setmetatable({}, { __pairs = function(t) return " .. LOOP .. ", t, nil end })")
  local ok, err = pcall(function() for _ in pairs(v) do end end)
  t:eq(ok, false)
  t:match(tostring(err), "instruction budget of 200000 exceeded", "__pairs iterator")
  -- callable tables as metamethods (and as a __gc)
  local callable = "setmetatable({}, { __call = " .. LOOP .. " })"
  v = returned("return setmetatable({}, { __tostring = " .. callable .. " })")
  ok, err = pcall(tostring, v)
  t:eq(ok, false)
  t:match(tostring(err), "instruction budget of 200000 exceeded", "a callable table as __tostring")
  v, acct = returned("setmetatable({}, { __gc = " .. callable .. " })")
  collectgarbage(); collectgarbage()
  sandbox.drain()
  t:match(tostring(acct.failure), "a __gc metamethod failed: .*instruction budget of 200000 exceeded",
    "a callable table as __gc")
  -- an error object with a looping __tostring
  local acct = sandbox.account{ name = "err.lua", instructions = 200000 }
  local fn = assert(sandbox.load("error(setmetatable({}, { __tostring = " .. LOOP .. " }))", "@err.lua", nil, acct))
  local ok2, msg = sandbox.call(acct, fn)
  t:eq(ok2, false)
  t:eq(type(msg), "string")
end)

test("metamethods still work inside the sandbox (classes, operators, __close, protection)", function(t)
  local fn = assert(sandbox.load([[
local V = {}
V.__index = V
V.__add = function(a, b) return setmetatable({ n = a.n + b.n }, V) end
V.__eq = function(a, b) return a.n == b.n end
V.__lt = function(a, b) return a.n < b.n end
V.__tostring = function(a) return "V(" .. a.n .. ")" end
V.__len = function(a) return a.n end
V.__call = function(a, x) return a.n * x end
function V.new(n) return setmetatable({ n = n }, V) end
function V:double() return V.new(self.n * 2) end
local l = { V.new(3), V.new(1), V.new(2) }
table.sort(l)
local closed = false
do local c <close> = setmetatable({}, { __close = function() closed = true end }) end
local p = setmetatable({}, { __metatable = "locked" })
local changed = pcall(setmetatable, p, {})
local weak = setmetatable({}, { __mode = "k" })
return tostring(V.new(1) + V.new(2)), V.new(2) == V.new(2), #V.new(5), V.new(4)(3),
  tostring(l[1]) .. tostring(l[3]), tostring(V.new(2):double()), closed, changed,
  setmetatable({}, nil) ~= nil
]], "@classes.lua"))
  local ok, a, b, c, d, e, f, g, h, i = sandbox.call(fn)
  t:eq(ok, true, a)
  t:eq(a, "V(3)"); t:eq(b, true); t:eq(c, 5); t:eq(d, 12); t:eq(e, "V(1)V(3)"); t:eq(f, "V(4)")
  t:eq(g, true, "__close ran"); t:eq(h, false, "a protected metatable stays"); t:eq(i, true)
end)

test("the collector never runs a sandboxed __gc: it runs after the next call, budgeted", function(t)
  local acct = sandbox.account{ name = "gc.lua", instructions = 200000 }
  local fn = assert(sandbox.load([[
local ran = { n = 0 }
local function make() setmetatable({}, { __gc = function() ran.n = ran.n + 1 end }) end
return ran, make]], "@gc.lua", nil, acct))
  local _, ran, make = sandbox.call(acct, fn)
  sandbox.call(acct, make)
  collectgarbage(); collectgarbage()
  t:eq(ran.n, 0, "queued by the collector, not run")
  sandbox.drain()
  t:eq(ran.n, 1, "run by drain")
  sandbox.call(acct, make)
  collectgarbage()
  sandbox.call(acct, function() end)
  t:eq(ran.n, 2, "run after the next sandboxed call")
  t:eq(acct.failure, nil)
end)

test("a looping __gc ends at the budget and fails its account", function(t)
  local acct = sandbox.account{ name = "gc.lua", instructions = 200000 }
  local fn = assert(sandbox.load("setmetatable({}, { __gc = " .. LOOP .. " })", "@gc.lua", nil, acct))
  t:eq(sandbox.call(acct, fn), true)
  collectgarbage(); collectgarbage()
  sandbox.drain()
  t:match(tostring(acct.failure), "^gc%.lua: a __gc metamethod failed: gc%.lua:1: instruction budget of 200000 exceeded")
  local ok, err = sandbox.call(acct, function() return 1 end)
  t:eq(ok, false, "a failed account fails every later call")
  t:eq(err, acct.failure)
end)

test("a __gc that allocates without bound hits the memory cap", function(t)
  local acct = sandbox.account{ name = "gc.lua", memory = 16 * 1024 * 1024 }
  local fn = assert(sandbox.load([[
setmetatable({}, { __gc = function()
  local t = {}
  for i = 1, 1e9 do t[i] = ("x"):rep(64) .. i end
end })]], "@gc.lua", nil, acct))
  t:eq(sandbox.call(acct, fn), true)
  collectgarbage(); collectgarbage()
  sandbox.drain()
  t:match(tostring(acct.failure), "^gc%.lua: a __gc metamethod failed: memory cap of 16777216 bytes exceeded")
  collectgarbage(); collectgarbage()
  local used = require("usersync.core").memory()
  t:ok(used < 64 * 1024 * 1024, ("the state holds %d bytes after it"):format(used))
end)

test("an account's run budget covers all its calls together", function(t)
  local acct = sandbox.account{ name = "policy p.lua", instructions = 10 ^ 8 // 1, run_instructions = 1000000 }
  local fn = assert(sandbox.load("local x = 0 for i = 1, 30000 do x = x + i end return x", "@p.lua", nil, acct))
  local calls, ok, err = 0, true, nil
  while ok and calls < 1000 do
    calls = calls + 1
    ok, err = sandbox.call(acct, fn)
  end
  t:eq(ok, false)
  t:ok(calls > 3 and calls < 100, calls .. " calls of ~120,000 instructions fit into 1,000,000")
  t:eq(err, "policy p.lua: instruction budget of 1000000 for the whole run exceeded (all its calls together; runaway policy?)")
  t:eq(acct.failure, err)
  acct:new_run()
  t:eq(sandbox.call(acct, fn), true, "a new run starts with the full budget")
end)

return test.done()
