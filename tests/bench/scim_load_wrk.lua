-- scim_load_wrk.lua: wrk script for tests/bench/scim_load.lua. A realistic
-- mix of an identity provider's SCIM requests to /scim/v2/<SOURCE>/, in a
-- fixed cycle per connection: 2 filtered GETs by userName of existing users
-- (the look-up before a create or an update), 1 POST of a new user, 1 PATCH
-- of an existing user's displayName. Environment: TOKEN, SOURCE, USERS_FILE
-- (existing users, "id userName" per line), RATE (optional: requests/s
-- offered in all, spread over CONNS connections by a delay before each
-- request; without it every connection sends as fast as it is answered).
-- Counted per thread from the answers: created (201), patched (200 with the
-- PATCHed name), found (a ListResponse with one result), bad (anything else).
local users = {}
local counter = 0
local threads = {}
tid = 0
created, patched, found, bad = 0, 0, 0, 0

function setup(thread)
  thread:set("tid", #threads + 1)
  threads[#threads + 1] = thread
end

function init(args)
  for line in io.lines(os.getenv("USERS_FILE")) do
    local id, name = line:match("^(%S+) (%S+)$")
    if id then users[#users + 1] = { id = id, name = name } end
  end
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
  wrk.headers["Content-Type"] = "application/scim+json"
end

local function enc(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

local pause = nil
function delay()
  if pause == nil then
    local rate, conns = tonumber(os.getenv("RATE") or ""), tonumber(os.getenv("CONNS") or "")
    pause = (rate and conns and rate > 0) and (1000 * conns / rate) or 0
  end
  return pause
end

function request()
  counter = counter + 1
  local base = "/scim/v2/" .. os.getenv("SOURCE")
  local u = users[(counter * 7919 + tid * 104729) % #users + 1]
  local step = counter % 4
  if step == 0 or step == 1 then
    return wrk.format("GET", base .. "/Users?filter=" .. enc('userName eq "' .. u.name .. '"') .. "&startIndex=1&count=100")
  elseif step == 2 then
    local name = string.format("load%s-%d-%d@example.com", os.getenv("PHASE") or "", tid, counter)
    return wrk.format("POST", base .. "/Users", nil, string.format(
      '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"%s","name":{"givenName":"Load","familyName":"T%d"},' ..
      '"emails":[{"value":"%s","type":"work","primary":true}],"displayName":"Load %d","active":true}', name, tid, name, counter))
  end
  return wrk.format("PATCH", base .. "/Users/" .. u.id, nil, string.format(
    '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"displayName","value":"patched %d-%d"}]}',
    tid, counter))
end

function response(status, headers, body)
  if status == 201 then created = created + 1
  elseif status == 200 and body:find("ListResponse", 1, true) then
    if body:find('"totalResults":1', 1, true) then found = found + 1 else bad = bad + 1 end
  elseif status == 200 and body:find('"displayName":"patched ', 1, true) then patched = patched + 1
  else bad = bad + 1 end
end

function done(summary, latency, requests)
  local c, p, f, b = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    c = c + t:get("created"); p = p + t:get("patched"); f = f + t:get("found"); b = b + t:get("bad")
  end
  io.write(string.format("COUNTS created=%d patched=%d found=%d bad=%d\n", c, p, f, b))
end
