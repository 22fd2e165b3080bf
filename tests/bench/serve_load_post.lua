-- serve_load_post.lua: wrk script for tests/bench/serve_load.sh. POSTs Okta
-- event hook deliveries, each with a new event uuid (thread id + counter),
-- from the template file named by the BODY_TEMPLATE environment variable
-- (the fixture delivery with "@UUID@" where the event uuid goes). With
-- ACTORS (comma-separated Okta user ids), "@ACTOR@" cycles over them.
local template, counter = nil, 0
local actors = {}
local threads = {}
tid = 0 -- global: setup() sets it in each thread's own Lua state

function setup(thread)
  thread:set("tid", #threads + 1)
  threads[#threads + 1] = thread
end

function init(args)
  local f = assert(io.open(os.getenv("BODY_TEMPLATE"), "rb"))
  template = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = os.getenv("HOOK_SECRET")
  for id in (os.getenv("ACTORS") or ""):gmatch("[^,]+") do actors[#actors + 1] = id end
end

function request()
  counter = counter + 1
  local uuid = string.format("bench-%d-%010d", tid, counter)
  local body = template:gsub("@UUID@", uuid)
  if #actors > 0 then body = body:gsub("@ACTOR@", actors[counter % #actors + 1]) end
  return wrk.format(nil, nil, nil, body)
end
