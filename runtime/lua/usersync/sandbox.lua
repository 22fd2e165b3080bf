-- usersync.sandbox: loads config and policy code into an allow-listed,
-- strict environment and runs it with an instruction budget and a memory cap.
--
--   local sandbox = require "usersync.sandbox"
--   local acct = sandbox.account{ name = "policy.lua", run_instructions = 2e9 }
--   local fn, err = sandbox.load(source, "@policy.lua", { env = envfn }, acct)
--   local ok, result = sandbox.call(acct, fn, ...)  -- ok=false, result=message
--   acct.failure                                    -- set once the account is spent
--
-- The environment holds only safe globals (no io, os.execute, load of
-- binary chunks, debug, package, dofile, require of arbitrary modules), reading
-- an undefined global raises "undefined global 'x'", and assigning one
-- raises too: scripts keep state in locals and in what they return.
--
-- Budgets reach every piece of sandboxed code, wherever it runs: a script's
-- setmetatable installs its metamethods wrapped, so that __tostring,
-- __index, __eq, __lt, __pairs (and the iterator it returns), __close, ...
-- called by runtime code (a log line, a sort, a config check) run under the
-- account's per-call limits like a hook. A __gc never runs inside the
-- collector (which runs it with the instruction hook switched off): the
-- collector only queues the object, and the queued finalizers run under the
-- budget after the next sandboxed call returns, or at sandbox.drain().
-- An account (sandbox.account) also has a budget for all its calls
-- together (run_instructions); spending it, or a failing finalizer or
-- runtime-called metamethod, sets account.failure, and every later call of
-- the account fails at once with it.
local core = require "usersync.core"

local M = {}

-- Defaults, overridable per call: 50M instructions, 64 MiB.
M.instructions = 50 * 1000 * 1000
M.memory = 64 * 1024 * 1024

local SAFE = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber",
  "tostring", "type", "xpcall", "rawequal", "rawget", "rawset", "rawlen",
  "_VERSION",
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
  ["usersync.log"] = true, ["usersync.attributes"] = true,
}

-- Functions of those modules a sandboxed script does not get: sleeping
-- would stall a run without spending the instruction budget.
-- Nor may it reconfigure logging for the whole run.
M.hidden = { ["usersync.time"] = { sleep = true }, ["usersync.log"] = { configure = true } }

local pack, unpack = table.pack, table.unpack

---------------------------------------------------------------- accounts
local Account = {}
Account.__index = Account

-- An account: the per-call limits of one sandboxed script and, with
-- run_instructions, a budget for all its calls together (a run).
-- opts: { name = "policy.lua", instructions = N, memory = bytes, run_instructions = N }
function M.account(opts)
  opts = opts or {}
  return setmetatable({ name = opts.name or "sandbox", instructions = opts.instructions,
                        memory = opts.memory, run_instructions = opts.run_instructions,
                        spent = 0, failure = nil }, Account)
end

-- Starts a new run: nothing spent, no failure.
function Account:new_run()
  self.spent, self.failure = 0, nil
end

-- Records the account's first failure (one line).
function Account:fail(msg)
  if not self.failure then
    msg = tostring(msg)
    self.failure = msg:match("^([^\n]*)") or msg
  end
  return self.failure
end

local function run_spent(acct)
  return ("%s: instruction budget of %d for the whole run exceeded (all its calls together; runaway policy?)")
    :format(acct.name, acct.run_instructions)
end

-- A sandboxed error object that is not a string, as text (its __tostring
-- runs budgeted: it is wrapped like every sandboxed metamethod).
local function error_text(e)
  if type(e) == "string" then return e end
  local ok, s = pcall(tostring, e)
  if ok and type(s) == "string" then return s end
  return "(error object is a " .. type(e) .. " value)"
end

-- Calls h, which may be a function or a callable table (core.sandbox_call
-- takes functions only).
local function invoke(h, ...) return h(...) end

---------------------------------------------------------------- finalizers
-- Objects whose sandboxed __gc is due: handler, object, account triples.
local queue = { n = 0 }
local draining = false

-- The __gc the collector calls: queues the object (keeping it alive until
-- its finalizer ran), nothing else.
local function deferred_gc(acct, h)
  return function(o)
    local n = queue.n
    queue[n + 1], queue[n + 2], queue[n + 3] = h, o, acct
    queue.n = n + 3
  end
end

-- Runs the queued finalizers, each as a sandboxed call of its account.
-- A failing one fails its account. Finalizers queued meanwhile wait for the
-- next drain. Not while a sandboxed call runs (it would share its budget).
function M.drain()
  if draining or queue.n == 0 or core.sandbox_active() then return end
  draining = true
  local q = queue
  queue = { n = 0 }
  for i = 1, q.n, 3 do
    local h, o, acct = q[i], q[i + 1], q[i + 2]
    q[i], q[i + 1], q[i + 2] = nil, nil, nil
    if not acct.failure then
      local ok, err = M.call(acct, invoke, h, o)
      if not ok then acct:fail(("%s: a __gc metamethod failed: %s"):format(acct.name, err)) end
    end
  end
  draining = false
end

---------------------------------------------------------------- metatables
-- Metamethods: run through a budgeted wrapper. Metafields: copied as they are.
local EVENTS = { "__index", "__newindex", "__call", "__tostring", "__len", "__eq", "__lt", "__le",
                 "__concat", "__unm", "__add", "__sub", "__mul", "__div", "__mod", "__pow", "__idiv",
                 "__band", "__bor", "__bxor", "__shl", "__shr", "__bnot", "__close", "__pairs", "__gc" }
local FIELDS = { "__name", "__mode", "__metatable" }

-- h(...) under the account's limits when no sandboxed call runs (runtime
-- code called it), directly otherwise (the running call's budget applies).
local function budgeted(acct, h)
  return function(...)
    if core.sandbox_active() then return h(...) end
    local r = pack(M.call(acct, invoke, h, ...))
    if not r[1] then error(acct:fail(r[2]), 0) end
    return unpack(r, 2, r.n)
  end
end

-- __pairs returns the iterator runtime code then calls: wrapped too.
local function budgeted_pairs(acct, h)
  local call = budgeted(acct, h)
  return function(t)
    local f, s, c = call(t)
    if type(f) == "function" and not core.sandbox_active() then f = budgeted(acct, f) end
    return f, s, c
  end
end

-- The metatable actually set for a script's metatable mt: its metamethods
-- as they are at setmetatable time (later changes to mt are not seen).
local function shadow(acct, mt)
  local sh = {}
  for _, e in ipairs(EVENTS) do
    local h = rawget(mt, e)
    if h ~= nil then
      if (e == "__index" or e == "__newindex") and type(h) ~= "function" then
        sh[e] = h          -- a table (or other value) is looked up, not called
      elseif e == "__gc" then
        sh[e] = (type(h) == "function" or type(h) == "table") and deferred_gc(acct, h) or h
      elseif e == "__pairs" then
        sh[e] = budgeted_pairs(acct, h)
      else
        sh[e] = budgeted(acct, h)
      end
    end
  end
  for _, f in ipairs(FIELDS) do sh[f] = rawget(mt, f) end
  return sh
end

-- The sandbox's setmetatable: shadows are cached per metatable while it is
-- unchanged (a class metatable shared by many objects costs one shadow).
local function make_setmetatable(acct)
  local cache = setmetatable({}, { __mode = "k" })
  return function(t, mt)
    if type(t) ~= "table" then
      error(("bad argument #1 to 'setmetatable' (table expected, got %s)"):format(type(t)), 2)
    end
    if mt == nil then return setmetatable(t, nil) end
    if type(mt) ~= "table" then
      error("bad argument #2 to 'setmetatable' (nil or table expected)", 2)
    end
    local c = cache[mt]
    if c then
      for _, e in ipairs(EVENTS) do if rawget(mt, e) ~= c.orig[e] then c = nil; break end end
      if c then for _, f in ipairs(FIELDS) do if rawget(mt, f) ~= c.orig[f] then c = nil; break end end end
    end
    if not c then
      local orig = {}
      for _, e in ipairs(EVENTS) do orig[e] = rawget(mt, e) end
      for _, f in ipairs(FIELDS) do orig[f] = rawget(mt, f) end
      c = { orig = orig, shadow = shadow(acct, mt) }
      cache[mt] = c
    end
    return setmetatable(t, c.shadow)
  end
end

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

-- A fresh environment table; `extra` adds globals (e.g. env, file); its
-- setmetatable wraps metamethods for `acct` (default: a fresh account).
function M.env(extra, acct)
  acct = acct or M.account()
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
  env.setmetatable = make_setmetatable(acct)
  for k, v in pairs(extra or {}) do env[k] = v end
  env._G = env
  return strict(env)
end

-- Compiles text (never bytecode) into a function running in a fresh
-- sandbox environment whose metamethods are charged to `acct`.
-- Returns fn, env | nil, message.
function M.load(source, chunkname, extra, acct)
  local env = M.env(extra, acct)
  local fn, err = load(source, chunkname, "t", env)
  if not fn then return nil, err end
  return fn, env
end

-- Reads and compiles a file. Returns fn, env | nil, message.
function M.loadfile(path, extra, acct)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local source = f:read("a")
  f:close()
  return M.load(source, "@" .. path, extra, acct)
end

-- Runs fn(...) under the budget. Returns true, results... | false, message.
-- opts: an account (sandbox.account), or { instructions = N, memory = bytes }
-- (defaults M.instructions, M.memory). An account is charged with what the
-- call spent; a failed account fails the call at once.
function M.call(opts, fn, ...)
  if type(opts) == "function" then return M.call({}, opts, fn, ...) end
  local acct = getmetatable(opts) == Account and opts or nil
  local instructions = opts.instructions or M.instructions
  if acct then
    if acct.failure then return false, acct.failure end
    if acct.run_instructions then
      local left = acct.run_instructions - acct.spent
      if left <= 0 then return false, acct:fail(run_spent(acct)) end
      if left < instructions then instructions = left end
    end
  end
  local before = core.sandbox_charged()
  local r = pack(core.sandbox_call(instructions, opts.memory or M.memory, fn, ...))
  if acct then
    acct.spent = acct.spent + (core.sandbox_charged() - before)
    if acct.run_instructions and acct.spent >= acct.run_instructions then
      acct:fail(run_spent(acct))
      if not r[1] then r[2] = acct.failure end
    end
  end
  if not r[1] then r[2] = error_text(r[2]) end
  M.drain()
  return unpack(r, 1, r.n)
end

return M
