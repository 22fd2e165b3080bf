-- support/serve.lua: `usersync serve` as a background process for tests.
--
--   local serve = require "support.serve"
--   local d <close> = serve.start(w)          -- w: a support.world (its config)
--   d:get("/healthz")                         -- { status, body }
--   d:post(path, body, headers)
--   d:signal("HUP"); d:stop() -> exit code    -- SIGTERM, waits for the exit
--   d:log()                                   -- JSON log records so far
--   d:wait_for(function() return ... end, 20) -- polls until true or time out
local http = require "usersync.http"
local json = require "usersync.json"
local time = require "usersync.time"
local proc = require "support.proc"

local M = {}
local D = {}
D.__index = D

local slurp = proc.slurp

-- Polls fn every 0.1 s until it returns a true value (returned) or
-- `seconds` pass (nil).
function M.wait_for(fn, seconds)
  local deadline = time.monotonic() + (seconds or 20)
  repeat
    local v = fn()
    if v then return v end
    time.sleep(0.1)
  until time.monotonic() > deadline
  return nil
end

-- Starts `usersync serve -c w.config` (env: the world's tokens plus
-- opts.env); waits for its "serving" log line. opts.lifetime bounds it;
-- opts.name keeps its log apart from another serve of the same world;
-- opts.nowait returns at once (d:wait_started() then waits): two serves
-- started together.
function M.start(w, opts)
  opts = opts or {}
  local self = setmetatable({ dir = w.dir, world = w }, D)
  -- opts.name: a second serve of the same world running beside the first
  local name = opts.name and ("-" .. opts.name) or ""
  self.logfile = w.dir .. "/serve" .. name .. ".log"
  self.exitfile = w.dir .. "/serve" .. name .. ".exit"
  -- (a second serve of the same world must not find the first one's
  -- "serving" line before its own shell has truncated the log)
  os.remove(self.exitfile)
  os.remove(self.logfile)
  local env = { US_TEST_OKTA_TOKEN = "test-token", US_TEST_ATL_TOKEN = "test-token",
                US_TEST_HOOK_SECRET = "hook-secret-value", USERSYNC_LOG_LEVEL = "debug" }
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local parts = {}
  for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. proc.quote(v) end
  -- (the subshell's own output goes nowhere: a serve that outlives the
  -- test must not hold the test runner's pipe open)
  local cmd = ("(%s timeout %d %s serve -c %s 2>%s </dev/null >/dev/null; echo $? >%s) >/dev/null 2>&1 &"):format(
    table.concat(parts, " "), opts.lifetime or 300, proc.quote(os.getenv("USERSYNC")),
    proc.quote(w.config), proc.quote(self.logfile), proc.quote(self.exitfile))
  os.execute(cmd)
  if opts.nowait then return self end
  return self:wait_started()
end

-- Waits for the "serving" line; fills pid, port, base and the client.
function D:wait_started()
  local rec = M.wait_for(function() return self:find_log("serving") end, 120)
  if not rec then
    error("usersync serve did not start; its log:\n" .. slurp(self.logfile))
  end
  self.pid, self.port = rec.pid, rec.port
  self.scheme = rec.tls and "https" or "http"
  self.base = ("%s://127.0.0.1:%d"):format(self.scheme, rec.port)
  self.client = http.client{ retries = 0, timeout = 60, verify = not rec.tls }
  return self
end

-- Every JSON log record so far (lines that are not JSON are skipped).
function D:log()
  local out = {}
  for line in slurp(self.logfile):gmatch("[^\n]+") do
    local rec = json.decode(line)
    if type(rec) == "table" then out[#out + 1] = rec end
  end
  return out
end

function D:log_text() return slurp(self.logfile) end

-- The first (or n-th) record whose msg contains `text`.
function D:find_log(text, n)
  local seen = 0
  for _, rec in ipairs(self:log()) do
    if type(rec.msg) == "string" and rec.msg:find(text, 1, true) then
      seen = seen + 1
      if seen >= (n or 1) then return rec end
    end
  end
end

function D:count_log(text)
  local n = 0
  for _, rec in ipairs(self:log()) do
    if type(rec.msg) == "string" and rec.msg:find(text, 1, true) then n = n + 1 end
  end
  return n
end

function D:request(method, path, body, headers)
  local r, err, code = self.client:request{ method = method, url = self.base .. path, body = body, headers = headers }
  if not r then return { status = 0, body = "", error = err, code = code } end
  return r
end
function D:get(path, headers) return self:request("GET", path, nil, headers) end
function D:post(path, body, headers) return self:request("POST", path, body, headers) end

-- Prometheus text -> { ['name{a="x",b="y"}'] = value } (labels as written).
function D:metrics()
  local r = self:get("/metrics")
  local out = {}
  for line in r.body:gmatch("[^\n]+") do
    if line:sub(1, 1) ~= "#" then
      local key, v = line:match("^(%S+)%s+(%S+)$")
      if key then out[key] = tonumber(v) end
    end
  end
  return out, r
end

function D:signal(name)
  os.execute(("kill -%s %d"):format(name, self.pid))
end

-- The exit code once the process ended (nil while it runs).
function D:exit_code()
  local s = slurp(self.exitfile)
  return tonumber(s:match("%d+"))
end

-- SIGTERM and wait (up to 120 s) for the exit code. A serve that does not
-- stop is killed, and the end of its log is shown (-1 is returned).
function D:stop()
  if self.stopped then return self.stopped end
  if self.pid then self:signal("TERM") end
  self.stopped = M.wait_for(function() return self:exit_code() end, 120)
  if not self.stopped then
    self.stopped = -1
    local text = self:log_text()
    io.stderr:write("# usersync serve did not stop on SIGTERM within 120 s; the end of its log:\n",
      text:sub(-3000), "\n")
    if self.pid then os.execute(("kill -9 %d 2>/dev/null"):format(self.pid)) end
  end
  if self.client then self.client:close() end
  return self.stopped
end
D.__close = D.stop
D.__gc = D.stop

return M
