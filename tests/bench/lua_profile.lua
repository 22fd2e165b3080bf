-- lua_profile.lua: runs a usersync command under a sampling profiler of
-- its Lua code (a count hook every 1,000 VM instructions, in every
-- coroutine) and writes the functions and lines most often seen to OUT.
--
--   build/usersync run tests/bench/lua_profile.lua OUT sync -c CONFIG
--
-- sync_10k.lua uses it with BENCH_PROFILE=DIR. Samples count Lua
-- instructions, not time: C functions (JSON, store, HTTP) show as the
-- line that called them.
local out = assert(arg[1], "usage: lua_profile.lua OUT COMMAND [ARGS]")
local args = {}
for i = 2, #arg do args[#args + 1] = arg[i] end

local lines, funcs = {}, {}
local getinfo = debug.getinfo
debug.sethook(function()
  local info = getinfo(2, "Sl")
  if info then
    local k = info.short_src .. ":" .. (info.currentline or 0)
    lines[k] = (lines[k] or 0) + 1
    local f = info.short_src .. ":" .. (info.linedefined or 0)
    funcs[f] = (funcs[f] or 0) + 1
  end
end, "", 1000)

local function dump()
  debug.sethook()
  local f = assert(io.open(out, "w"))
  local function top(t, title)
    local l, total = {}, 0
    for k, v in pairs(t) do l[#l + 1] = { k, v }; total = total + v end
    table.sort(l, function(a, b) return a[2] > b[2] end)
    f:write(("== %s (%d samples)\n"):format(title, total))
    for i = 1, math.min(60, #l) do
      f:write(("%7d %5.1f%%  %s\n"):format(l[i][2], 100 * l[i][2] / total, l[i][1]))
    end
  end
  top(funcs, "functions (by the line they start at)")
  top(lines, "lines")
  f:close()
end

-- `usersync run` gives this script a print and io whose writes mask
-- secrets (script.lua); the command profiled here runs with the real ones,
-- as it does on its own (else the masking of every line it prints is
-- counted as the command's work).
io = package.loaded.io
print = function(...)
  local parts = table.pack(...)
  for i = 1, parts.n do parts[i] = tostring(parts[i]) end
  io.stdout:write(table.concat(parts, "\t", 1, parts.n), "\n")
end

local real_exit = os.exit
os.exit = function(...) dump(); return real_exit(...) end
local code = require("usersync.cli").main(args)
dump()
return code
