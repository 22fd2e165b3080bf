-- tap.lua: a tiny TAP test runner for Lua tests run by `usersync run`.
--
--   local test = require "tap"
--   test("adds", function(t) t:eq(1 + 1, 2) end)
--   return test.done()      -- exit code: 0 when every test passed
--
-- Each test runs in its own protected call; a raised error fails that test
-- and the run goes on. done() prints "N passed, N failed".
local M = {}
local tests, passed, failed = 0, 0, 0

local T = {}
T.__index = T

local function fmt(v)
  if type(v) == "string" then return ("%q"):format(v) end
  return tostring(v)
end

function T:fail(msg)
  self.failures[#self.failures + 1] = msg
end
function T:ok(cond, msg)
  if not cond then self:fail(msg or "expected a true value") end
  return cond
end
function T:eq(got, want, msg)
  if got ~= want then
    self:fail((msg and msg .. ": " or "") .. "expected " .. fmt(want) .. ", got " .. fmt(got))
    return false
  end
  return true
end
function T:match(s, pattern, msg)
  if type(s) ~= "string" or not s:find(pattern) then
    self:fail((msg and msg .. ": " or "") .. "expected " .. fmt(s) .. " to match " .. fmt(pattern))
    return false
  end
  return true
end
function T:contains(s, sub, msg)
  if type(s) ~= "string" or not s:find(sub, 1, true) then
    self:fail((msg and msg .. ": " or "") .. "expected " .. fmt(s) .. " to contain " .. fmt(sub))
    return false
  end
  return true
end
-- Deep equality of plain tables.
local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
M.same = same
function T:same(got, want, msg)
  if not same(got, want) then
    local ok, json = pcall(require, "usersync.json")
    local show = ok and function(v) local s, r = pcall(json.encode, v); return s and r or tostring(v) end or tostring
    self:fail((msg and msg .. ": " or "") .. "expected " .. show(want) .. ", got " .. show(got))
    return false
  end
  return true
end
function T:raises(fn, pattern, msg)
  local ok, err = pcall(fn)
  if ok then self:fail((msg and msg .. ": " or "") .. "expected an error"); return false end
  if pattern then return self:match(tostring(err), pattern, msg) end
  return true
end

setmetatable(M, { __call = function(_, name, fn)
  tests = tests + 1
  local t = setmetatable({ failures = {} }, T)
  local ok, err = xpcall(fn, debug.traceback, t)
  if not ok then t:fail("error: " .. tostring(err)) end
  if #t.failures == 0 then
    passed = passed + 1
    print(("ok %d - %s"):format(tests, name))
  else
    failed = failed + 1
    print(("not ok %d - %s"):format(tests, name))
    for _, f in ipairs(t.failures) do print("#   " .. f:gsub("\n", "\n#   ")) end
  end
end })

function M.done()
  print(("1..%d"):format(tests))
  print(("%d passed, %d failed"):format(passed, failed))
  io.stdout:flush()
  return (failed == 0 and tests > 0) and 0 or 1
end

return M
