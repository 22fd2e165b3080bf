-- A sync reads and applies to its targets at once (issue 16): each
-- target's apply in its own plan order and chunks, a failing target not
-- stopping the others; the targets' reads at once and while Okta is read.
-- Shown by behaviour, not by time: the simulators' request logs say when
-- each request was served, and a target's requests start while an
-- earlier one's are still going on.
local test = require "tap"
local world = require "support.world"

local N = 230 -- three chunks of create_user per target (apply.lua CHUNK = 100)

local function big_world()
  local w = world.new {
    sync = { groups = { mode = "manual", map = { Engineering = { "developers" } } } } }
  w:okta_group("00gEng", "Engineering")
  for i = 1, N do
    w:okta_user(("00u%04d"):format(i), ("user%04d@example.com"):format(i), { groups = { "00gEng" } })
  end
  w:load()
  return w
end

-- The write requests of a product, in the order served.
local function writes(w, p)
  local out = w:writes(p)
  table.sort(out, function(a, b) return a.at < b.at end)
  return out
end

local function count(list, method, pattern)
  local n = 0
  for _, r in ipairs(list) do
    if r.method == method and r.path:match(pattern) then n = n + 1 end
  end
  return n
end

test("targets are applied concurrently; a target whose writes fail does not stop the others",
  function(t)
  local w <close> = big_world()
  -- Jira (first in the config) is slow, so its writes take a while;
  -- Confluence refuses every account and group creation.
  w.jira:faults{ latency_ms = 60 }
  w.confluence:faults{ fail_rate = 1.0, fail_status = 403, fail_path = "/admin/" }
  local r = w:usersync("sync")
  t:eq(r.code, 1, "exit 1: Confluence's writes failed\n" .. r.stderr)

  -- Every target got its whole plan tried, Jira and Bitbucket all of it done.
  local jira, bb, conf = writes(w, "jira"), writes(w, "bitbucket"), writes(w, "confluence")
  t:eq(count(jira, "POST", "/rest/api/2/user$"), N, "jira: one create per user")
  t:eq(#w:members_of("jira", "developers"), N, "jira: developers")
  t:eq(#w:members_of("bitbucket", "developers"), N, "bitbucket: developers")
  local bb_accounts = 0
  for _ in pairs(w:accounts("bitbucket")) do bb_accounts = bb_accounts + 1 end
  t:eq(bb_accounts, N, "bitbucket: every account created")
  t:eq(count(conf, "POST", "/admin/user$"), N, "confluence: every create tried (and refused)")
  t:eq(next((w:accounts("confluence"))), nil, "confluence: nothing created")
  t:contains(r.stderr, "confluence create_user")

  -- Concurrent, not one after the other: Bitbucket's and Confluence's
  -- writes began before Jira's last write was served (one after the other,
  -- they would start only once Jira's last answer had come back).
  local jira_last = jira[#jira].at
  t:ok(bb[1].at < jira_last, ("bitbucket's first write (%.3f) before jira's last (%.3f)")
    :format(bb[1].at, jira_last))
  t:ok(conf[1].at < jira_last, "confluence's first write before jira's last")
  -- ... and Jira's plan order held: every account created before any member added.
  local last_create, first_add = 0, math.huge
  for i, q in ipairs(jira) do
    if q.method == "POST" and q.path:match("/rest/api/2/user$") then last_create = i end
    if q.path:match("/group/user") and first_add == math.huge then first_add = i end
  end
  t:ok(last_create < first_add, "jira: users created before members were added")

  -- The journal recorded every outcome: a second sync redoes only Confluence.
  w.confluence:faults{}
  w:clear_requests()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:eq(#w:writes("jira"), 0, "jira: nothing left to do")
  t:eq(#w:writes("bitbucket"), 0, "bitbucket: nothing left to do")
  t:eq(#w:members_of("confluence", "developers"), N, "confluence: done on the second sync")
end)

-- The requests of a product matching method, in the order served.
local function served(w, p, method)
  local out = {}
  for _, q in ipairs(w[p]:requests()) do
    if q.method == method then out[#out + 1] = q end
  end
  table.sort(out, function(a, b) return a.at < b.at end)
  return out
end

test("targets are read concurrently, and while Okta is read", function(t)
  local w <close> = big_world()
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  -- A re-sync: every target is read whole. Okta and Jira are slow.
  w:clear_requests()
  w.okta:faults{ latency_ms = 60 }
  w.jira:faults{ latency_ms = 60 }
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "applied 0 changes")
  local okta, jira = served(w, "okta", "GET"), served(w, "jira", "GET")
  local conf, bb = served(w, "confluence", "GET"), served(w, "bitbucket", "GET")
  t:ok(#okta > 1 and #jira > 1 and #conf > 0 and #bb > 0, "every server was read")
  -- One after the other, each read would start once the one before had
  -- its last answer.
  t:ok(jira[1].at < okta[#okta].at, "jira's read began before okta's last request")
  t:ok(conf[1].at < jira[#jira].at, "confluence's read began before jira's last request")
  t:ok(bb[1].at < jira[#jira].at, "bitbucket's read began before jira's last request")
  for _, p in ipairs({ "jira", "confluence", "bitbucket" }) do
    t:eq(#w:writes(p), 0, p .. ": nothing to write")
  end
end)

test("targets on http engines of their own are applied concurrently too", function(t)
  local w <close> = big_world()
  -- A timeout of its own gives Jira its own http client (and engine).
  local f = assert(io.open(w.config)); local text = f:read("a"); f:close()
  text = text:gsub('(jira = { type = "jira", url = "[^"]+",)', '%1 timeout = "29s",')
  t:contains(text, 'timeout = "29s"')
  f = assert(io.open(w.config, "w")); f:write(text); f:close()
  w.jira:faults{ latency_ms = 60 }
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stderr)
  local jira, bb = writes(w, "jira"), writes(w, "bitbucket")
  t:eq(#w:members_of("jira", "developers"), N, "jira: developers")
  t:eq(#w:members_of("bitbucket", "developers"), N, "bitbucket: developers")
  t:ok(bb[1].at < jira[#jira].at, "bitbucket's first write before jira's last")
  t:ok(bb[#bb].at < jira[#jira].at, "bitbucket (fast) was done before jira (slow)")
end)

return test.done()
