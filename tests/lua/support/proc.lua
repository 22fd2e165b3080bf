-- support/proc.lua: run a command and capture its exit code, stdout and stderr.
--
--   local proc = require "support.proc"
--   local r = proc.run({ os.getenv("USERSYNC"), "check", "-c", path }, { env = { X = "1" } })
--   -- r.code, r.stdout, r.stderr
local M = {}

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.quote = quote

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end
M.slurp = slurp -- a file's bytes, "" when it cannot be read

-- argv: list of words (quoted for the shell). opts.env: extra variables;
-- opts.unset: list of variables to remove; opts.stdin: text fed on stdin.
function M.run(argv, opts)
  opts = opts or {}
  local parts = {}
  for _, name in ipairs(opts.unset or {}) do parts[#parts + 1] = "unset " .. name .. ";" end
  for k, v in pairs(opts.env or {}) do parts[#parts + 1] = k .. "=" .. quote(v) end
  for _, a in ipairs(argv) do parts[#parts + 1] = quote(a) end
  local out, err = os.tmpname(), os.tmpname()
  local cmd = table.concat(parts, " ") .. " >" .. out .. " 2>" .. err
  if opts.stdin then
    local inp = os.tmpname()
    local f = assert(io.open(inp, "wb")); f:write(opts.stdin); f:close()
    cmd = cmd .. " <" .. inp
  else
    cmd = cmd .. " </dev/null"
  end
  local ok, how, code = os.execute(cmd)
  local r = { stdout = slurp(out), stderr = slurp(err) }
  os.remove(out); os.remove(err)
  r.code = (how == "exit") and code or 128 + (code or 0)
  r.ok = ok
  return r
end

-- Writes text to a fresh temporary file and returns its path.
function M.tempfile(text, suffix)
  local path = os.tmpname() .. (suffix or "")
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

-- The machine's load average line ("0.52 0.58 0.59 1/467 12345"), "?" when unknown:
-- benchmarks print it with their figures, which a loaded machine slows.
function M.loadavg()
  local f = io.open("/proc/loadavg")
  if not f then return "?" end
  local s = f:read("l")
  f:close()
  return s or "?"
end

-- The number of processors (nproc), as a string; "?" when unknown.
function M.ncpu()
  local p = io.popen("nproc 2>/dev/null")
  local n = p and p:read("l")
  if p then p:close() end
  return n or "?"
end

return M
