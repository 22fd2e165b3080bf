-- Tests of the command line as a user meets it: exit codes, --version,
-- --help, `usersync run` with arguments and errors.
local test = require "tap"
local proc = require "support.proc"

local BIN = os.getenv("USERSYNC")

local function us(args, opts)
  local argv = { BIN }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return proc.run(argv, opts)
end

test("--version names every library with its version", function(t)
  local r = us({ "--version" })
  t:eq(r.code, 0)
  t:match(r.stdout, "^usersync %d+%.%d+%.%d+\n")
  t:match(r.stdout, "Lua 5%.4%.%d+")
  t:match(r.stdout, "libcurl %d+%.%d+%.%d+ %(TLS: OpenSSL/%d")
  t:match(r.stdout, "PCRE2 10%.%d+")
  t:match(r.stdout, "SQLite 3%.%d+%.%d+")
  t:ok(not r.stdout:find("cjson", 1, true), "lua-cjson is not linked")
end)

test("no command is a usage error; --help exits 0", function(t)
  local r = us({})
  t:eq(r.code, 2); t:contains(r.stdout, "usage: usersync")
  r = us({ "--help" })
  t:eq(r.code, 0); t:contains(r.stdout, "commands:")
  r = us({ "frobnicate" })
  t:eq(r.code, 2); t:contains(r.stderr, "unknown command 'frobnicate'")
  for _, cmd in ipairs({ "check", "run" }) do
    r = us({ cmd, "--help" })
    t:eq(r.code, 0, cmd); t:contains(r.stdout, "usage: usersync " .. cmd)
  end
  r = us({ "check", "--bogus" })
  t:eq(r.code, 2); t:contains(r.stderr, "unknown option --bogus")
end)

test("run: arg table, script directory on the path, return code", function(t)
  local dir = os.tmpname(); os.remove(dir)
  os.execute("mkdir -p " .. dir)
  local f = assert(io.open(dir .. "/helper.lua", "w")); f:write("return { twice = function(x) return 2 * x end }"); f:close()
  f = assert(io.open(dir .. "/main.lua", "w"))
  f:write([[
local h = require "helper"
print(arg[0]:match("main%.lua$") and "script ok", #arg, arg[1], arg[2], h.twice(21), ...)
return tonumber(arg[3])
]])
  f:close()
  local r = us({ "run", dir .. "/main.lua", "one", "--two", "7" })
  t:eq(r.code, 7, r.stderr)
  t:eq(r.stdout, "script ok\t3\tone\t--two\t42\tone\t--two\t7\n")
  os.execute("rm -rf " .. dir)
end)

test("run: an uncaught error exits 1 with the traceback on stderr", function(t)
  local p = proc.tempfile("local function inner() error('it broke') end\nlocal function outer() inner() end\nouter()\n", ".lua")
  local r = us({ "run", p })
  t:eq(r.code, 1)
  t:contains(r.stderr, p .. ":1: it broke")
  t:contains(r.stderr, "stack traceback:")
  t:contains(r.stderr, "in local 'outer'")
  -- table errors with __tostring are shown through it
  p = proc.tempfile("error(setmetatable({}, {__tostring = function() return 'custom failure' end}))", ".lua")
  r = us({ "run", p })
  t:eq(r.code, 1); t:contains(r.stderr, "custom failure")
end)

test("run: missing script and syntax errors are usage errors", function(t)
  local r = us({ "run" })
  t:eq(r.code, 2); t:contains(r.stderr, "which script?")
  r = us({ "run", "/nonexistent/x.lua" })
  t:eq(r.code, 2); t:contains(r.stderr, "/nonexistent/x.lua")
  local p = proc.tempfile("local = 1", ".lua")
  r = us({ "run", p })
  t:eq(r.code, 2); t:contains(r.stderr, p .. ":1:")
end)

test("run: cwd is not on the module path", function(t)
  local dir = os.tmpname(); os.remove(dir)
  os.execute("mkdir -p " .. dir .. "/sub")
  local f = assert(io.open(dir .. "/evil.lua", "w")); f:write("return 'loaded from cwd'"); f:close()
  f = assert(io.open(dir .. "/sub/main.lua", "w"))
  f:write("print(pcall(require, 'evil'))")
  f:close()
  local r = proc.run({ "sh", "-c", "cd " .. proc.quote(dir) .. " && " .. proc.quote(BIN) .. " run sub/main.lua" })
  t:eq(r.code, 0, r.stderr)
  t:match(r.stdout, "^false\tmodule 'evil' not found")
  os.execute("rm -rf " .. dir)
end)

test("the runtime's Lua library is inside the binary", function(t)
  local p = proc.tempfile([[
print(package.searchpath("usersync.cli", package.path) == nil, type(require("usersync.cli").main))
]], ".lua")
  local r = us({ "run", p })
  t:eq(r.code, 0, r.stderr)
  t:eq(r.stdout, "true\tfunction\n")
end)

return test.done()
