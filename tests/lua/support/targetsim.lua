-- support/targetsim.lua: an Atlassian simulator (tests/fakes/fake.py) for
-- target tests, started as a subprocess and stopped at the end.
--
--   local sim = require "support.targetsim"
--   local s <close> = sim.start("jira", { state = {...}, latency_ms = 0 })
--   s.url                        --> "http://127.0.0.1:PORT"
--   s:state() / s:put_state(t)   -- GET / PUT /__fake/state
--   s:requests() / s:clear()     -- GET / DELETE /__fake/requests
--   s:faults(t)                  -- PUT /__fake/faults
--   s:count(method, pattern)     -- requests whose path matches the Lua pattern
--   s:stop()                     -- also __close / __gc
--
-- A thin layer over support.fakes (which starts every simulator).
local http = require "usersync.http"

local fakes = require "support.fakes"

local M = {}

-- The fixed-response server of M.static.
local Sim = {}
Sim.__index = Sim
function Sim:stop()
  if not self.pid then return end
  os.execute("kill " .. self.pid .. " 2>/dev/null")
  self.proc:close()
  self.control:close()
  self.pid = nil
end
Sim.__close = Sim.stop
Sim.__gc = Sim.stop

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end


-- Starts a simulator through support.fakes (one way to start them all) and
-- adds the two helpers these tests use: s:clear() and s:count(method, pattern).
function M.start(product, opts)
  opts = opts or {}
  local s = fakes.start(product, { state = opts.state, latency_ms = opts.latency_ms, lifetime = opts.lifetime })
  s.clear = function(self) return self:clear_requests() end
  -- Number of logged requests with this method (nil: any) whose path matches pattern.
  s.count = function(self, method, pattern)
    local n = 0
    for _, r in ipairs(self:requests()) do
      if (not method or r.method == method) and (not pattern or r.path:find(pattern)) then n = n + 1 end
    end
    return n
  end
  -- Distinct requests (method, path and query) the server served, of this method
  -- (nil: any) and path pattern: a GET retried after a dropped connection counts
  -- once, so the figure is what the client asked for, however loaded the machine.
  s.distinct = function(self, method, pattern)
    local seen, n = {}, 0
    for _, r in ipairs(self:requests()) do
      local k = r.method .. " " .. r.path .. "?" .. (r.query or "")
      if r.status ~= 0 and not seen[k] and (not method or r.method == method)
          and (not pattern or r.path:find(pattern)) then
        seen[k] = true
        n = n + 1
      end
    end
    return n
  end
  return s
end

-- Helpers the target tests share.
-- M.client(http_client, type, url [, opts]): a target with basic admin:admin,
-- or Bearer with opts.token; other opts go into the target's config.
function M.client(hc, type, url, opts)
  local cfg = { type = type, url = url, user = "admin", password = "admin" }
  if opts and opts.token then cfg.user, cfg.password = nil, nil end
  for k, v in pairs(opts or {}) do cfg[k] = v end
  return require("usersync.target").new(hc, cfg)
end

-- The first item of list for which pred is true.
function M.find(list, pred)
  for _, v in ipairs(list) do if pred(v) then return v end end
end

-- t sorted in place, returned.
function M.sorted(t) table.sort(t); return t end

-- A server answering every request with one fixed response (HTML error
-- pages, non-JSON bodies): M.static(status, content_type, body [, headers])
-- -> Sim-like object with .url and :stop(); headers = { "Name: value", ... }.
local STATIC = [[
import http.server, sys
status, ctype, body = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
extra = [l.split(": ", 1) for l in sys.argv[4].split("\n") if l] if len(sys.argv) > 4 else []
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n: self.rfile.read(n)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra: self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_PUT = do_DELETE = answer
    def log_message(self, *a): pass
class S(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address): pass  # clients may hang up early
s = S(("127.0.0.1", 0), H)
print("listening on http://127.0.0.1:%d" % s.server_address[1], flush=True)
s.serve_forever()
]]

function M.static(status, ctype, body, headers)
  local py = os.getenv("PYTHON3") or "python3"
  local cmd = ("%s -c %s %d %s %s %s"):format(q(py), q(STATIC), status, q(ctype), q(body),
                                             q(table.concat(headers or {}, "\n")))
  local sh = ("timeout 300 %s & echo pid $!; wait"):format(cmd)
  local self = setmetatable({ product = "static" }, Sim)
  self.proc = assert(io.popen("sh -c " .. q(sh), "r"))
  local pid = (self.proc:read("l") or ""):match("^pid (%d+)")
  local url = (self.proc:read("l") or ""):match("^listening on (%S+)")
  assert(pid and url, "static server did not start")
  self.pid, self.url = pid, url
  self.control = http.client{ retries = 0 }
  return self
end

-- Paging as the specs allow it, not only as the simulators page by default:
-- a server that caps the page size lower than asked, pages that are not the
-- last with fewer items than the page size, an exactly full last page followed
-- by an empty one, no last-page flag (the simulators' paging faults). Every
-- listing must come back whole, each item once.
M.PAGING = {
  {}, { page_cap = 2 }, { page_short = true }, { page_lazy_last = true }, { page_no_flags = true },
  { page_short = true, page_no_flags = true }, { page_lazy_last = true, page_cap = 2 },
  { page_lazy_last = true, page_no_flags = true },
}

-- A label for one PAGING entry ("page_cap=2", "defaults").
function M.fault_name(f)
  local k = {}
  for n, v in pairs(f) do k[#k + 1] = n .. "=" .. tostring(v) end
  table.sort(k)
  return #k > 0 and table.concat(k, ",") or "defaults"
end

-- Runs a listing fn(on_page) and returns ok, msg and the names it gave, sorted.
function M.collect(fn)
  local got = {}
  local ok, msg = fn(function(page) for _, a in ipairs(page) do got[#got + 1] = a.name or a end end)
  return ok, msg, M.sorted(got)
end

return M
