-- test_okta_changes.lua: "what changed since a cursor or watermark" against
-- the simulator: System Log polling (a change made through PUT /__fake/state
-- is seen, an empty page keeps the cursor, the request cost), the
-- lastUpdated watermark with DEPROVISIONED users, deleted users.
local test = require "tap"
local json = require "usersync.json"
local fakes = require "support.fakes"
local S = require "support.oktasim"

local function org()
  return S.org{ users = 6, groups = 2, members = { [1] = { 1, 2 }, [2] = { 3 } }, app = { users = 6 } }
end

local sim <close> = fakes.start("okta", { state = org() })
local function ago(s) return os.date("!%Y-%m-%dT%H:%M:%S.000Z", os.time() - s) end

test("System Log cursor: a change is seen once; an empty page keeps the cursor", function(t)
  local c <close> = S.client(sim)
  -- start: nothing happened in the last minute
  local r = assert(c:changes{ since = ago(60) })
  t:eq(r.events, 0)
  t:same(r.users, {})
  t:match(r.cursor, "^" .. sim.url:gsub("%p", "%%%0") .. "/api/v1/logs%?")
  local cursor = r.cursor
  -- polling again with nothing new: one request, same cursor
  sim:clear_requests()
  r = assert(c:changes{ cursor = cursor })
  t:eq(r.cursor, cursor, "an empty page keeps the cursor")
  t:eq(#sim:requests(), 1)
  -- deactivate user 2, move user 3 into group 1
  local st = org()
  st.users[2].status = "DEPROVISIONED"
  st.group_members[S.gid(1)] = json.array{ S.uid(1), S.uid(2), S.uid(3) }
  sim:put_state(st)
  sim:clear_requests()
  r = assert(c:changes{ cursor = cursor })
  t:ok(r.events >= 2, "events: " .. r.events)
  t:ok(r.cursor ~= cursor, "the cursor moved")
  local got = {}
  for _, u in ipairs(r.users) do got[u.id] = u end
  t:eq(got[S.uid(2)].status, "DEPROVISIONED", "DEPROVISIONED users are read back")
  t:same(got[S.uid(3)].groups, { S.gid(1), S.gid(2) }, "with their groups")
  t:same(r.deleted, {})
  -- cost: log pages (one with events, one empty) + 2 per touched user
  local by = sim:by_path()
  t:eq(by["GET /api/v1/logs"], 2)
  t:eq(by["GET /api/v1/users/{id}"], #r.user_ids)
  t:eq(by["GET /api/v1/users/{id}/groups"], #r.user_ids)
  t:eq(#sim:requests(), 2 + 2 * #r.user_ids, "the simulator served nothing else")
  t:ok(r.requests >= 2 + 2 * #r.user_ids, "the client counts every attempt: " .. r.requests)
  -- nothing new again
  local cursor2 = r.cursor
  r = assert(c:changes{ cursor = cursor2 })
  t:eq(r.events, 0)
  t:eq(r.cursor, cursor2)
end)

test("System Log: a deleted user is reported as deleted, not as an error", function(t)
  local c <close> = S.client(sim)
  sim:put_state(org())
  local r0 = assert(c:changes{ since = ago(5) })
  local st = org()
  table.remove(st.users, 6)
  table.remove(st.apps[S.APP].users, 6)
  sim:put_state(st)
  local r = assert(c:changes{ cursor = r0.cursor })
  t:same(r.deleted, { S.uid(6) })
  local types = {}
  for _, e in ipairs(r.event_list) do types[e.eventType] = true end
  t:ok(types["user.lifecycle.delete.initiated"], "delete events")
end)

test("logs(): streamed pages; polling stops on the empty page", function(t)
  local c <close> = S.client(sim)
  sim:put_state(org())
  local r0 = assert(c:logs{ since = ago(5), limit = 2 }) -- the cursor carries limit=2
  local st = org()
  for i = 1, 6 do st.users[i].profile.title = "t" .. i end
  sim:put_state(st)
  sim:clear_requests()
  local pages = {}
  local r = assert(c:logs({ cursor = r0.cursor }, function(events) pages[#pages + 1] = #events end))
  t:same(pages, { 2, 2, 2, 0 }, "6 events, 2 per page, then the empty page")
  t:eq(r.items, 6)
  t:eq(sim:count{ path = "^/api/v1/logs$" }, 4)
  -- the next poll starts after the last event
  sim:clear_requests()
  r = assert(c:logs{ cursor = r.cursor })
  t:eq(#r.events, 0)
  t:eq(sim:count{ path = "^/api/v1/logs$" }, 1)
end)

test("logs/changes with max_pages: a long backlog is read a few pages per poll, none skipped or repeated", function(t)
  local c <close> = S.client(sim)
  sim:put_state(org())
  local r0 = assert(c:logs{ since = ago(5), limit = 2 })
  local st = org()
  for i = 1, 6 do st.users[i].profile.title = "cap" .. i end
  sim:put_state(st)
  local seen, cursor, polls = {}, r0.cursor, 0
  repeat
    local r = assert(c:changes{ cursor = cursor, users = false, max_pages = 2 })
    polls = polls + 1
    for _, ev in ipairs(r.event_list) do seen[#seen + 1] = ev.uuid end
    cursor = r.cursor
  until r.events == 0 or polls > 10
  t:eq(#seen, 6, "every event once")
  local uniq = {}
  for _, u in ipairs(seen) do uniq[u] = true end
  local n = 0
  for _ in pairs(uniq) do n = n + 1 end
  t:eq(n, 6, "no event twice")
  t:eq(polls, 3, "2 pages of 2 per poll, then the empty poll")
  t:raises(function() c:changes{ cursor = cursor, max_pages = -1 } end, "max_pages")
end)

test("watermark: users with lastUpdated gt W, DEPROVISIONED included, with groups", function(t)
  local c <close> = S.client(sim)
  local st = org()
  st.users[1].lastUpdated = "2025-01-01T00:00:00.000Z"
  st.users[4].status = "DEPROVISIONED"
  st.users[4].lastUpdated = "2025-02-01T00:00:00.000Z"
  st._baseline = true
  sim:put_state(st)
  sim:clear_requests()
  local r = assert(c:changes{ watermark = "2024-06-01T00:00:00.000Z" })
  local ids = {}
  for _, u in ipairs(r.users) do ids[#ids + 1] = u.id end
  t:same(ids, { S.uid(1), S.uid(4) })
  t:same(r.users[1].groups, { S.gid(1) })
  t:eq(r.users[2].status, "DEPROVISIONED")
  t:eq(r.watermark, "2025-02-01T00:00:00.000Z")
  local _, reqs = sim:count{ path = "^/api/v1/users$" }
  t:match(reqs[1].query, "filter=lastUpdated%%20gt%%20%%222024")
  local by = sim:by_path()
  t:eq(by["GET /api/v1/users"], 1, "one page")
  t:eq(by["GET /api/v1/users/{id}/groups"], 2, "the groups of 2 users")
  t:eq(#sim:requests(), 1 + 2, "the simulator served nothing else")
  t:ok(r.requests >= 1 + 2, "the client counts every attempt: " .. r.requests)
  -- without groups: one request
  sim:clear_requests()
  r = assert(c:changes{ watermark = "2025-01-15T00:00:00.000Z", groups = false })
  t:eq(#r.users, 1)
  t:eq(#sim:requests(), 1)
end)

test("changes: misuse raises", function(t)
  local c <close> = S.client(sim)
  t:raises(function() c:changes{} end, "cursor, since or watermark")
  t:raises(function() c:logs{ limit = 5000 } end, "1 to 1000")
end)

return test.done()
