-- usersync.scim_worker: the body of serve's SCIM worker thread
-- (runtime/bind_scim.c runs M.worker in a Lua state of its own). It takes
-- the authenticated requests the HTTP server queued, answers each with
-- usersync.scim on a store connection of its own, and pokes serve's main
-- loop after a write, so a long sync run never delays an identity
-- provider's request.
--
-- arg (JSON): { state = store path, tls = bool, sources = { names },
--               log_format, log_level }
local json = require "usersync.json"
local state = require "usersync.state"
local scim = require "usersync.scim"
local log = require "usersync.log"

local M = {}

-- The Host header as a URL authority, or "localhost" when it is anything else.
local function authority(host)
  if type(host) == "string" and #host <= 255 and host:match("^[%w%.%-%[%]:]+$") then return host end
  return "localhost"
end

function M.worker(h, arg)
  local cfg = json.decode(arg)
  log.configure{ format = cfg.log_format or "auto", level = cfg.log_level }
  local db, err = state.open(cfg.state)
  if not db then error("the SCIM worker cannot open the store " .. tostring(cfg.state) .. ": " .. tostring(err), 0) end
  -- Checkpoints (which write and sync the database file) are left to the
  -- main thread's connection: a push is never answered late because its
  -- commit happened to move the WAL into the database.
  db:exec("PRAGMA wal_autocheckpoint = 0")
  local sps = {}
  for _, name in ipairs(cfg.sources) do sps[name] = scim.new(db, name) end
  local scheme = cfg.tls and "https" or "http"
  while true do
    local req = h:take(5)
    if req == nil then break end
    if req then
      local sp = sps[req.source]
      req.base = ("%s://%s/scim/v2/%s"):format(scheme, authority(req.host), req.source)
      local status, body, headers, internal = sp:handle(req)
      h:answer(status, body, headers.ETag, headers.Location)
      if internal then
        log.error { msg = "SCIM request failed", source = req.source, method = req.method, path = req.path,
                    error = internal }
      end
      if status < 300 and req.method ~= "GET" then
        h:poke()
        log.debug { msg = "SCIM push stored", source = req.source, method = req.method, path = req.path,
                    status = status }
      end
    end
  end
  db:close()
end

return M
