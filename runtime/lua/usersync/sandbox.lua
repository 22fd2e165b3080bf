-- usersync.sandbox: loads config and policy code into an allow-listed,
-- strict environment and runs it with an instruction budget and a memory cap.
--
--   local sandbox = require "usersync.sandbox"
--   local fn, err = sandbox.load(source, "@policy.lua", { env = envfn })
--   local ok, result = sandbox.call(fn, ...)     -- ok=false, result=message
--
-- The environment holds only safe globals (no io, os.execute, load of
-- binary chunks, debug, package, dofile, require of arbitrary modules), reading
-- an undefined global raises "undefined global 'x'", and assigning one
-- raises too: scripts keep state in locals and in what they return.
local core = require "usersync.core"

local M = {}

-- Defaults, overridable per call: 50M instructions, 64 MiB.
M.instructions = 50 * 1000 * 1000
M.memory = 64 * 1024 * 1024

local SAFE = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber",
  "tostring", "type", "xpcall", "rawequal", "rawget", "rawset", "rawlen",
  "setmetatable", "_VERSION",
}
local SAFE_LIBS = {
  string = { "byte", "char", "find", "format", "gmatch", "gsub", "len", "lower",
             "match", "rep", "reverse", "sub", "upper", "pack", "packsize", "unpack" },
  table = { "concat", "insert", "move", "pack", "remove", "sort", "unpack" },
  math = { "abs", "ceil", "exp", "floor", "fmod", "huge", "log", "max", "maxinteger",
           "min", "mininteger", "modf", "pi", "sqrt", "tointeger", "type", "ult",
           "random" },
  utf8 = { "char", "charpattern", "codepoint", "codes", "len", "offset" },
  os = { "time", "date", "clock", "difftime" },
  coroutine = { "create", "isyieldable", "resume", "running", "status", "wrap", "yield", "close" },
}
-- Built-in modules a sandboxed script may require.
M.modules = {
  ["usersync.re"] = true, ["usersync.json"] = true, ["usersync.time"] = true,
  ["usersync.log"] = true, cjson = true,
}

-- Functions of those modules a sandboxed script does not get: sleeping
-- would stall a run without spending the instruction budget.
-- Nor may it reconfigure logging for the whole run.
M.hidden = { ["usersync.time"] = { sleep = true }, ["usersync.log"] = { configure = true } }

local function strict(env, name)
  return setmetatable(env, {
    __index = function(_, k)
      error(string.format("undefined global '%s'", tostring(k)), 2)
    end,
    __newindex = function(_, k)
      error(string.format("assignment to undeclared global '%s' (use local)", tostring(k)), 2)
    end,
    __metatable = name or "sandbox",
  })
end

-- A fresh environment table; `extra` adds globals (e.g. env, file).
function M.env(extra)
  local env = {}
  local copies = {}
  for _, k in ipairs(SAFE) do env[k] = _G[k] end
  for lib, names in pairs(SAFE_LIBS) do
    local t = {}
    for _, k in ipairs(names) do t[k] = _G[lib][k] end
    env[lib] = t
  end
  env.require = function(name)
    if type(name) ~= "string" or not M.modules[name] then
      error(string.format("module '%s' is not available in the sandbox", tostring(name)), 2)
    end
    -- Each sandbox gets its own copy of a module's table, so a script
    -- cannot change what the host (or another script) calls.
    local copy = copies[name]
    if copy then return copy end
    local mod = require(name)
    local hidden = M.hidden[name] or {}
    copy = {}
    for k, v in pairs(mod) do if not hidden[k] then copy[k] = v end end
    copies[name] = copy
    return copy
  end
  env.print = function(...)
    local parts = table.pack(...)
    for i = 1, parts.n do parts[i] = tostring(parts[i]) end
    io.stderr:write(require("usersync.secrets").mask(table.concat(parts, "\t")), "\n")
  end
  for k, v in pairs(extra or {}) do env[k] = v end
  env._G = env
  return strict(env)
end

-- Compiles text (never bytecode) into a function running in a fresh
-- sandbox environment. Returns fn, env | nil, message.
function M.load(source, chunkname, extra)
  local env = M.env(extra)
  local fn, err = load(source, chunkname, "t", env)
  if not fn then return nil, err end
  return fn, env
end

-- Reads and compiles a file. Returns fn, env | nil, message.
function M.loadfile(path, extra)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local source = f:read("a")
  f:close()
  return M.load(source, "@" .. path, extra)
end

-- Runs fn(...) under the budget. Returns true, results... | false, message.
-- opts: { instructions = N, memory = bytes } (defaults M.instructions, M.memory).
function M.call(opts, fn, ...)
  if type(opts) == "function" then return M.call({}, opts, fn, ...) end
  return core.sandbox_call(opts.instructions or M.instructions, opts.memory or M.memory, fn, ...)
end

return M
