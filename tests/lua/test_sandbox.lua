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
  fn = assert(sandbox.load("return type(require 'cjson')", "@p.lua"))
  local ok2, ty = sandbox.call(fn)
  t:eq(ok2, true); t:eq(ty, "table")
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
  t:eq(type(require "cjson"), "table", "cjson is preloaded from the static archive")
end)

test("nested sandbox calls keep the tighter outer budget", function(t)
  local inner = assert(sandbox.load("local x = 0 while true do x = x + 1 end", "@inner.lua"))
  local outer = function() return sandbox.call({ instructions = 10 ^ 9 // 1 }, inner) end
  local ok, iok, ierr = sandbox.call({ instructions = 100000 }, outer)
  t:eq(ok, true)
  t:eq(iok, false)
  t:match(ierr, "budget of 100000 exceeded")
end)

return test.done()
