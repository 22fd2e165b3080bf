-- support.httpd: starts tests/lua/support/httpd.py for a Lua test and stops it.
--
--   local httpd = require "support.httpd"
--   local srv <close> = httpd.start()            -- or httpd.start{ tls = true }
--   srv.url                                       --> "http://127.0.0.1:PORT"
--   srv:stats("key")                              --> { max_active=, attempts=, requests= }
--   srv:reset()                                   -- clears the server's counters
--
-- The server is killed by srv:stop() (also on __close/__gc); it also exits
-- by itself when this process goes away or after its lifetime, so a crashed
-- test leaves nothing running. TLS mode makes a self-signed certificate for
-- 127.0.0.1 with the openssl CLI; srv.ca_file is its path.
local json = require "usersync.json"
local http = require "usersync.http"

local M = {}
local Server = {}
Server.__index = Server

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."

-- Makes a self-signed certificate for 127.0.0.1; returns cert, key, dir.
local function make_cert()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. q(dir)))
  local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
  local ok = os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s -days 1 " ..
    "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1"):format(q(key), q(cert)))
  assert(ok, "openssl could not make a test certificate")
  return cert, key, dir
end

function M.start(opts)
  opts = opts or {}
  local py = os.getenv("PYTHON3") or "python3"
  local cmd = ("exec %s %s --lifetime %d"):format(q(py), q(here .. "/httpd.py"), opts.lifetime or 240)
  local self = setmetatable({}, Server)
  if opts.tls then
    self.ca_file, self.key_file, self.dir = make_cert()
    cmd = cmd .. " --tls " .. q(self.ca_file) .. " " .. q(self.key_file)
  end
  self.proc = assert(io.popen(cmd, "r"))
  local line = self.proc:read("l")
  local url, pid = (line or ""):match("^listening on (%S+) pid (%d+)")
  if not url then
    self.proc:close()
    error("test server did not start: " .. tostring(line))
  end
  self.url, self.pid = url, pid
  self.control = http.client{ retries = 0, timeout = 10, ca_file = self.ca_file }
  return self
end

-- GET a control path and decode its JSON.
function Server:get(path)
  local r, err = self.control:request{ url = self.url .. path }
  assert(r, err)
  assert(r.status == 200, "control request failed: " .. r.status)
  return json.decode(r.body)
end

function Server:stats(key)
  return self:get("/__stats" .. (key and ("?key=" .. key) or ""))
end

function Server:reset()
  self.control:request{ url = self.url .. "/__reset" }
end

function Server:stop()
  if not self.pid then return end
  os.execute("kill " .. self.pid .. " 2>/dev/null")
  self.proc:close()
  self.control:close()
  if self.dir then os.execute("rm -rf " .. q(self.dir)) end
  self.pid = nil
end
Server.__close = Server.stop
Server.__gc = Server.stop

return M
