-- serve_hook.lua: a stand-in for `usersync serve` under load (tests/bench/serve_load.sh):
-- starts usersync.server with an Okta hook and consumes what arrives.
--   usersync run tests/bench/serve_hook.lua [listen=127.0.0.1:0] [secret=bench-secret] [mode=drain]
-- Prints "listening on PORT" once ready, then loops on srv:wait(). mode
-- "drain" only counts the events (the server's own capacity); "decode" also
-- decodes each one (as serve does before deciding whom to sync), so a
-- consumer slower than the load fills the queue and deliveries get 503.
-- SIGTERM/SIGINT end the loop; it prints the counts and the server's stats
-- and exits 0.
local server = require "usersync.server"
local json = require "usersync.json"

local listen = arg[1] or "127.0.0.1:0"
local secret = arg[2] or "bench-secret"
local decode = (arg[3] or "drain") == "decode"

local srv <close> = assert(server.start{
  listen = listen,
  hook = { path = "/hooks/okta", secret = secret },
  -- wrk drives every connection from 127.0.0.1: lift the per-address cap
  -- (32 by default) above the connections the load uses.
  max_connections_per_ip = 1024,
})
srv:ready(true)
io.write("listening on ", srv:port(), "\n")
io.stdout:flush()

local events, batches, users = 0, 0, {}
while not srv:stopping() do
  local kind, data = srv:wait(1)
  if kind == "events" then
    batches = batches + 1
    events = events + #data
    if decode then
      for _, text in ipairs(data) do
        local ev = json.decode(text)
        users[ev.actor and ev.actor.alternateId or "?"] = true
      end
    end
  end
end
local st = srv:stats()
io.write(("consumed %d events in %d batches; stats:"):format(events, batches))
for _, k in ipairs{ "deliveries", "accepted", "unauthorized", "too_large", "malformed",
                    "queue_full", "events", "duplicates", "queued" } do
  io.write(" ", k, "=", st[k])
end
io.write("\n")
return 0
