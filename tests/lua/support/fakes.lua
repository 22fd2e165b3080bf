-- support.fakes: start a product simulator (tests/fakes/fake.py) for a Lua
-- test and talk to its control interface (tests/fakes/README.md). Generic
-- for every product: okta, jira, confluence, bitbucket.
--
--   local fakes = require "support.fakes"
--   local sim <close> = fakes.start("okta", { state = {...}, latency_ms = 0 })
--   sim.url                          --> "http://127.0.0.1:PORT"
--   sim:put_state(tbl)  sim:state()  -- PUT/GET /__fake/state
--   sim:faults{ okta_buckets = { ["/api/v1/users"] = 5 } }   -- PUT /__fake/faults
--   sim:requests()  sim:clear_requests()                      -- /__fake/requests
--   sim:inflight()                   --> { now = n, max = n }: requests served at once (/__fake/inflight)
--   sim:count{ path = "^/api/v1/users$", method = "GET", status = 200 }  -- matching requests
--   sim:by_path()                    --> { ["/api/v1/users"] = n, ... } (ids folded to {id})
--   sim:clock{ advance = 61 }        -- PUT /__fake/clock
--   sim:stop()                       -- also __close / __gc
--
-- The simulator runs under `timeout`, so a crashed test leaves nothing
-- running for long. Control requests go through usersync.http; any control
-- failure raises (it is a broken test, not a result).
local http = require "usersync.http"
local json = require "usersync.json"

local M = {}
local Sim = {}
Sim.__index = Sim

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
M.source_dir = os.getenv("SOURCE_DIR") or (here .. "/../../..")

-- Writes a table as JSON to a fresh temporary file; returns its path.
local function json_file(tbl)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(assert(json.encode(tbl)))
  f:close()
  return path
end

-- fakes.start(product, opts) -> Sim. opts.state (table) or opts.state_file
-- (path), opts.latency_ms, opts.lifetime (seconds, default 600), opts.args
-- (more arguments, e.g. { "--flavour", "atlassian" } for scim).
function M.start(product, opts)
  opts = opts or {}
  local py = os.getenv("PYTHON3") or "python3"
  local fake = M.source_dir .. "/tests/fakes/fake.py"
  local self = setmetatable({ product = product }, Sim)
  local args = { "--port", "0" }
  if opts.state then
    self.tmp_state = json_file(opts.state)
    args[#args + 1] = "--state"; args[#args + 1] = q(self.tmp_state)
  elseif opts.state_file then
    args[#args + 1] = "--state"; args[#args + 1] = q(opts.state_file)
  end
  if opts.latency_ms then
    args[#args + 1] = "--latency-ms"; args[#args + 1] = tostring(opts.latency_ms)
  end
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = q(a) end
  -- `timeout` bounds the simulator's life; its pid is printed first.
  local cmd = ("timeout %d %s %s %s %s & echo pid $!"):format(opts.lifetime or 600, q(py), q(fake),
    q(product), table.concat(args, " "))
  self.proc = assert(io.popen(cmd, "r"))
  for _ = 1, 2 do
    local line = self.proc:read("l") or ""
    local pid = line:match("^pid (%d+)")
    local url = line:match("^listening on (%S+)")
    if pid then self.pid = pid end
    if url then self.url = url end
  end
  if not (self.url and self.pid) then
    self:stop()
    error("simulator " .. product .. " did not start")
  end
  self.control = http.client{ retries = 0, timeout = 60 }
  return self
end

-- Control request; returns the decoded body (or true for an empty one).
function Sim:call(method, path, body)
  local r, err = self.control:request{ method = method, url = self.url .. path,
    body = body and assert(json.encode(body)) or nil,
    headers = body and { ["Content-Type"] = "application/json" } or nil }
  assert(r, err)
  if r.status >= 300 then error(("%s %s -> %d %s"):format(method, path, r.status, r.body), 2) end
  if r.body == "" then return true end
  return assert(json.decode(r.body))
end

function Sim:state() return self:call("GET", "/__fake/state") end
function Sim:put_state(st) return self:call("PUT", "/__fake/state", st) end
function Sim:faults(f) return self:call("PUT", "/__fake/faults", f or {}) end
function Sim:requests() return self:call("GET", "/__fake/requests") end
function Sim:clear_requests() return self:call("DELETE", "/__fake/requests") end
function Sim:inflight() return self:call("GET", "/__fake/inflight") end
function Sim:clock(c) return self:call("PUT", "/__fake/clock", c) end
function Sim:now() return self:call("GET", "/__fake/clock").now end

-- Requests matching every given field: path (Lua pattern), method, status,
-- query (Lua pattern). Returns the count and the list.
function Sim:count(m)
  m = m or {}
  local n, list = 0, {}
  for _, r in ipairs(self:requests()) do
    if (not m.path or r.path:find(m.path)) and (not m.method or r.method == m.method)
        and (not m.status or r.status == m.status) and (not m.query or r.query:find(m.query)) then
      n = n + 1
      list[n] = r
    end
  end
  return n, list
end

-- Requests grouped by endpoint: path segments that look like ids (3 letters
-- then 17 characters, Okta style) become {id}.
function Sim:by_path()
  local out = {}
  for _, r in ipairs(self:requests()) do
    local p = r.method .. " " .. r.path:gsub("/%w%w%w[%w]+", function(seg)
      if #seg >= 18 and seg:match("^/0") then return "/{id}" end
    end)
    out[p] = (out[p] or 0) + 1
  end
  return out
end

function Sim:stop()
  if self.pid then os.execute("kill " .. self.pid .. " 2>/dev/null") end
  if self.proc then self.proc:close() end
  if self.control then self.control:close() end
  if self.tmp_state then os.remove(self.tmp_state) end
  self.pid, self.proc, self.control, self.tmp_state = nil, nil, nil, nil
end
Sim.__close = Sim.stop
Sim.__gc = Sim.stop

return M
