-- tests/bench/target_snapshot.lua: snapshot of 10,000 accounts / 500 groups
-- per product at 20 ms simulated latency; prints requests and wall time.
--
--   SOURCE_DIR=$PWD ./build/usersync run tests/bench/target_snapshot.lua [users] [groups] [latency_ms]
--
-- Memberships: every user is in 1-4 groups chosen with a skew (a few large
-- groups, many small ones), about 2.5 per user. The floor printed is
-- requests x latency / concurrency (8): what the request count and the
-- concurrency allow at best. cpu is this process's processor time for the
-- snapshot (os.clock): the client's own cost (parsing pages, building the
-- snapshot), which the simulators' time does not blur; at latency 0 it is
-- the figure to compare between two builds.
package.path = (os.getenv("SOURCE_DIR") or ".") .. "/tests/lua/?.lua;" .. package.path
local http = require "usersync.http"
local json = require "usersync.json"
local target = require "usersync.target"
local sim = require "support.targetsim"

local args = arg or {}
local NU, NG, LAT = tonumber(args[1]) or 10000, tonumber(args[2]) or 500, tonumber(args[3]) or 20

local function org()
  math.randomseed(42)
  local users, groups, members = {}, {}, {}
  for g = 1, NG do groups[g] = ("group-%03d"):format(g); members[groups[g]] = {} end
  for i = 1, NU do
    local name = ("user%05d"):format(i)
    users[i] = name
    local seen = {}
    for _ = 1, math.random(1, 4) do
      local g = math.floor(NG * math.random() ^ 2) + 1 -- skewed: low numbers are big
      if not seen[g] then
        seen[g] = true
        table.insert(members[groups[g]], name)
      end
    end
  end
  return users, groups, members
end

local function state(product, users, groups, members)
  local us = {}
  if product == "confluence" then
    us[1] = { username = "admin", displayName = "Administrator", email = "admin@example.com" }
    for i, n in ipairs(users) do
      us[i + 1] = { username = n, displayName = "User " .. i, email = n .. "@example.com", disabled = i % 50 == 0 }
    end
  else
    us[1] = { name = "admin", displayName = "Administrator", emailAddress = "admin@example.com" }
    for i, n in ipairs(users) do
      us[i + 1] = { name = n, displayName = "User " .. i, emailAddress = n .. "@example.com" }
      if product == "jira" then us[i + 1].active = i % 50 ~= 0 end
    end
  end
  local st = { users = json.array(us), groups = json.array(groups), members = json.object(members) }
  if product == "confluence" then st.context = "/confluence" end -- served as real Confluence is
  return st
end

local users, groups, members = org()
local nm = 0
for _, l in pairs(members) do nm = nm + #l end
print(("org: %d users, %d groups, %d memberships, latency %d ms, concurrency 8"):format(NU, NG, nm, LAT))
local clock = require("usersync.time").monotonic
for _, product in ipairs{ "jira", "confluence", "bitbucket" } do
  local s <close> = sim.start(product)
  s:put_state(state(product, users, groups, members))
  s:faults{ latency_ms = LAT }
  s:clear()
  local hc <close> = http.client{ per_host = 8, timeout = 120 }
  local url = s.url .. (product == "confluence" and "/confluence" or "")
  local t <close> = target.new(hc, { type = product, url = url, user = "admin", password = "admin" })
  local t0, c0 = clock(), os.clock()
  local snap, err = t:snapshot()
  local wall, cpu = clock() - t0, os.clock() - c0
  assert(snap, err)
  local floor = snap.requests * LAT / 1000 / 8
  print(("%-10s accounts %5d  groups %3d  requests %5d  wall %6.2f s  floor %5.2f s  (%.2fx)  cpu %5.2f s"):format(
    product, #snap.accounts, #snap.groups, snap.requests, wall, floor, wall / floor, cpu))
  assert(#snap.accounts == NU + 1, "every account read")
end
