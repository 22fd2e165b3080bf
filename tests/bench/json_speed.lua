-- json_speed.lua: decode/encode throughput of usersync.json on a generated
-- ~10 MB payload shaped like Okta /api/v1/users pages.
--   usersync run tests/bench/json_speed.lua [MB] [rounds]
-- Prints MB/s (payload bytes / best CPU time of `rounds` runs).
local json = require "usersync.json"

local target_mb = tonumber(arg and arg[1]) or 10
local rounds = tonumber(arg and arg[2]) or 3

local function user(i)
  return {
    id = ("00u%017d"):format(i),
    status = i % 7 == 0 and "SUSPENDED" or "ACTIVE",
    created = "2025-03-13T23:26:50.000Z",
    lastLogin = i % 3 == 0 and json.null or "2025-11-02T08:01:12.345Z",
    profile = {
      login = ("user%d@example.com"):format(i),
      email = ("user%d@example.com"):format(i),
      firstName = "Zoë", lastName = ("Müller-%d"):format(i),
      displayName = ("Zoë \"Z\" Müller %d"):format(i),
      department = "Engineering", employeeNumber = i, costCenter = 4711.5,
    },
    groupIds = json.array { "00g1", "00g2", ("00g%d"):format(i % 50) },
    credentials = { provider = { type = "OKTA", name = "OKTA" } },
    _links = { self = { href = ("https://example.okta.com/api/v1/users/00u%017d"):format(i) } },
  }
end

local users, size = json.array {}, 0
while size < target_mb * 1e6 do
  local u = user(#users + 1)
  users[#users + 1] = u
  size = size + #json.encode(u) + 1
end
local payload = assert(json.encode(users))
local mb = #payload / 1e6

local function best(fn)
  local b = math.huge
  for _ = 1, rounds do
    collectgarbage()
    local t0 = os.clock()
    fn()
    b = math.min(b, os.clock() - t0)
  end
  return b
end

local ours_v = assert(json.decode(payload))
assert(#ours_v == #users)
assert(json.encode(ours_v, { sort_keys = true }) == json.encode(users, { sort_keys = true }), "round trip is exact")

local rows = {
  { "usersync.json decode", best(function() json.decode(payload) end) },
  { "usersync.json encode", best(function() json.encode(ours_v) end) },
  { "usersync.json encode sort_keys", best(function() json.encode(ours_v, { sort_keys = true }) end) },
}
print(("payload: %.1f MB, %d users, best of %d"):format(mb, #users, rounds))
for _, r in ipairs(rows) do
  print(("%-31s %7.1f MB/s  (%.3f s)"):format(r[1], mb / r[2], r[2]))
end
