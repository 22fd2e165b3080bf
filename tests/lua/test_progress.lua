-- test_progress.lua: usersync.progress, the renderer the CLI shows while it
-- works (bars on a terminal, timestamped lines off it), driven with a forced
-- tty flag, an injected clock and a table sink; and the progress callbacks
-- of the Okta scope read and the target snapshot against the simulators.
local test = require "tap"
local progress = require "usersync.progress"
local secrets = require "usersync.secrets"

-- A reporter writing into a table, with a clock the test moves.
local function rig(opts)
  local sink, clock = {}, { now = 100 }
  local o = { stream = sink, clock = function() return clock.now end,
              wallclock = function() return 1795925521 + (clock.now - 100) end, width = 80 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return progress.new(o), sink, clock
end

local function text(sink) return table.concat(sink) end

-- The bar as last drawn: the text after the last carriage return.
local function last_bar(sink)
  local s = text(sink)
  local tail = s:match("\r([^\r]*)$") or s
  return tail
end

test("terminal: the bar shows counts, rate and ETA, redrawn in place", function(t)
  local r, sink, clock = rig{ tty = true, color = false }
  local task = r:start("reading okta", { unit = "users" })
  clock.now = 103.375
  task:update(6210, 10000, "users")
  local line = last_bar(sink)
  t:match(line, "^reading okta +%[#+%.+%]  6,210/10,000 users  1,840/s  ETA 2%.1s *$")
  local bar = line:match("%[([#.]+)%]")
  local hashes = select(2, bar:gsub("#", ""))
  t:eq(hashes, math.floor(#bar * 0.621), "the bar is 62% full")
  t:ok(#line <= 79, "fits 80 columns")
  t:ok(not text(sink):find("\27", 1, true), "no escape codes without colour")
  t:ok(not text(sink):find("\n", 1, true), "redrawn in place: no newline while running")
  -- unknown total: a bouncing marker, a count and a rate, no ETA
  clock.now = 104
  task:update(7000, nil, "users")
  line = last_bar(sink)
  t:match(line, "^reading okta +%[ *<=> *%]  7,000 users  1,750/s")
  t:ok(not line:find("ETA", 1, true))
  -- the final line stays: OK, counts, time and rate, on its own line
  task:finish(true)
  local s = text(sink)
  t:match(s, "\r +\rreading okta +OK +7,000 users  in 4%.0s %(1,750/s%)\n$", "the bar is cleared first")
end)

test("terminal: the last run's count is an estimate for the bar until it is passed", function(t)
  local r, sink, clock = rig{ tty = true, color = false }
  local ev = { phase = "okta", name = "okta", state = "start", expected = 10000 }
  r:event(ev)
  clock.now = 103.375
  r:event{ phase = "okta", name = "okta", state = "update", done = 6210, what = "users" }
  t:match(last_bar(sink), "^reading okta +%[#+%.+%]  6,210/~10,000 users  1,840/s  ETA 2%.1s *$")
  clock.now = 106
  r:event{ phase = "okta", name = "okta", state = "update", done = 12000, what = "users" }
  t:match(last_bar(sink), "^reading okta +%[ *<=> *%]  12,000 users  2,000/s *$", "estimate passed: unknown total")
  r:event{ phase = "okta", name = "okta", state = "update", done = 12000, total = 12000, what = "users" }
  r:event{ phase = "okta", name = "okta", state = "done" }
  t:match(text(sink), "reading okta +OK +12,000 users  in 6%.0s %(2,000/s%)\n$")
  -- off a terminal the estimate shows in the periodic line
  local r2, sink2, clock2 = rig{ tty = false }
  r2:event(ev)
  clock2.now = 111
  r2:event{ phase = "okta", name = "okta", state = "update", done = 2200, what = "users" }
  t:match(sink2[#sink2], "INFO reading okta: 2200/~10000 users %(200/s%)\n$")
end)

test("terminal: a narrow terminal drops the least important pieces, never wraps", function(t)
  local r, sink, clock = rig{ tty = true, color = false, width = 50 }
  local task = r:start("applying to confluence", { unit = "changes" })
  clock.now = 102
  task:update(120, 400, "changes")
  local line = last_bar(sink)
  t:ok(#line <= 49, "at most width-1 columns: " .. line)
  t:contains(line, "120/400 changes")
  task:update(2, nil, "memberships")
  t:ok(#last_bar(sink) <= 49)
end)

test("terminal: colour only without NO_COLOR and TERM=dumb; never off a terminal", function(t)
  t:eq(progress.color_allowed(true, {}), true)
  t:eq(progress.color_allowed(true, { NO_COLOR = "1" }), false)
  t:eq(progress.color_allowed(true, { NO_COLOR = "" }), true, "an empty NO_COLOR does not disable")
  t:eq(progress.color_allowed(true, { TERM = "dumb" }), false)
  t:eq(progress.color_allowed(true, { TERM = "xterm-256color" }), true)
  t:eq(progress.color_allowed(false, {}), false)
  t:eq(progress.color_allowed(true, function(k) return k == "NO_COLOR" and "yes" or nil end), false)
  for _, case in ipairs{ { env = {}, esc = true }, { env = { NO_COLOR = "1" }, esc = false },
                         { env = { TERM = "dumb" }, esc = false } } do
    local r, sink, clock = rig{ tty = true, env = case.env }
    local task = r:start("reading jira", { unit = "accounts" })
    clock.now = 101
    task:update(5, 10, "accounts")
    task:finish(false, "HTTP 401 (EAUTH)")
    local s = text(sink)
    t:eq(s:find("\27[", 1, true) ~= nil, case.esc, "escapes with env " .. (next(case.env) or "{}"))
    t:match(s, "FAIL")
    if case.esc then
      t:contains(s, "\27[1;31mFAIL\27[0m")
      t:contains(s, "\27[31mHTTP 401 (EAUTH)\27[0m")
      t:contains(s, "[\27[32m")
    end
  end
end)

test("terminal: redrawn at most every 0.1 s (injected clock)", function(t)
  local r, sink, clock = rig{ tty = true, color = false }
  local task = r:start("reading jira", { unit = "accounts" })
  local draws0 = #sink
  for i = 1, 200 do
    clock.now = 100 + i * 0.005 -- 200 updates in one second
    task:update(i, 200, "accounts")
  end
  local draws = #sink - draws0
  t:ok(draws >= 9 and draws <= 11, "about 10 redraws in one second, got " .. draws)
  task:finish(true)
  t:match(text(sink), "reading jira +OK +200 accounts  in 1%.0s %(200/s%)\n$")
end)

test("terminal: a line written above the bar clears it and redraws it", function(t)
  local r, sink, clock = rig{ tty = true, color = false }
  local task = r:start("reading okta", { unit = "users" })
  clock.now = 101
  task:update(10, nil, "users")
  local before = #sink
  r:above("2026-11-29T04:12:01.000Z WARN something")
  local s = table.concat(sink, "", before + 1)
  t:match(s, "^\r +\r2026%-11%-29T04:12:01%.000Z WARN something\n\rreading okta")
  r:close()
  t:match(text(sink), "\r +\r$", "close removes an unfinished bar")
end)

test("not a terminal: timestamped lines at start, every 10 s and at the end; no escapes", function(t)
  local r, sink, clock = rig{ tty = false, env = {} }
  local task = r:start("reading okta", { unit = "users", message = "reading okta (app 0oa1)" })
  for i = 1, 25 do
    clock.now = 100 + i
    task:update(i, 50, "member lists")
    task:update(i * 400, nil, "users")
  end
  task:finish(true)
  local lines = {}
  for l in text(sink):gmatch("[^\n]+") do lines[#lines + 1] = l end
  t:eq(#lines, 4, text(sink))
  local TS = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ "
  for _, l in ipairs(lines) do t:match(l, TS .. "INFO ") end
  t:match(lines[1], TS .. "INFO reading okta %(app 0oa1%)$")
  -- the line shows the counts as they are when 10 s have passed (the member
  -- lists' update comes first in each second)
  t:match(lines[2], "INFO reading okta: 3600 users %(360/s%), 10/50 member lists$")
  t:match(lines[3], "INFO reading okta: 7600 users %(380/s%), 20/50 member lists$")
  t:match(lines[4], "INFO reading okta: done in 25s: 10000 users, 25/50 member lists$")
  t:ok(not text(sink):find("[\27\r]"), "no escape codes, no carriage returns")
  t:eq(lines[1]:sub(1, 24), "2026-11-29T04:12:01.000Z")
  -- a failure is an ERROR line
  local task2 = r:start("reading jira")
  task2:finish(false, "HTTP 401 (EAUTH)")
  t:match(sink[#sink], "ERROR reading jira: failed after 0%.0s: HTTP 401 %(EAUTH%)\n$")
end)

test("quiet: nothing at all, on a terminal or not", function(t)
  for _, tty in ipairs{ true, false } do
    local r, sink, clock = rig{ tty = tty, quiet = true, verbose = true }
    r:event{ phase = "okta", name = "okta", state = "start", message = "reading okta" }
    clock.now = 120
    r:event{ phase = "okta", name = "okta", state = "update", done = 5, what = "users" }
    r:event{ phase = "okta", name = "okta", state = "done" }
    r:event{ phase = "apply", name = "jira", state = "start", total = 1, what = "changes" }
    r:event{ phase = "apply", name = "jira", state = "update", done = 1, total = 1, what = "changes",
             op = { kind = "create_user", subject = "ann" }, ok = true }
    r:event{ phase = "apply", name = "jira", state = "failed", error = "boom" }
    t:eq(#sink, 0, "quiet wrote: " .. text(sink))
  end
end)

test("engine events: labels per phase; verbose adds a line per operation", function(t)
  local function run(verbose)
    local r, sink, clock = rig{ tty = false, verbose = verbose }
    r:event{ phase = "apply", name = "jira", state = "start", total = 2, what = "changes",
             message = "applying 2 changes to jira" }
    clock.now = 101
    r:event{ phase = "apply", name = "jira", state = "update", done = 1, total = 2, what = "changes",
             op = { kind = "create_user", subject = "ann", name = "ann" }, ok = true }
    r:event{ phase = "apply", name = "jira", state = "update", done = 2, total = 2, what = "changes",
             op = { kind = "add_member", subject = "bob", name = "bob", group = "devs" }, ok = false,
             info = "jira: add member: HTTP 404", code = "ENOTFOUND" }
    r:event{ phase = "apply", name = "jira", state = "done" }
    return text(sink)
  end
  local plain = run(false)
  t:match(plain, "INFO applying 2 changes to jira\n")
  t:match(plain, "INFO applying to jira: done in 1%.0s: 2 changes, 1 failed\n$")
  t:ok(not plain:find("DEBUG", 1, true), "no per-operation lines without --verbose")
  local verbose = run(true)
  t:match(verbose, "DEBUG jira create_user ann: ok\n")
  t:match(verbose, "DEBUG jira add_member bob in devs: FAILED jira: add member: HTTP 404 %(ENOTFOUND%)\n")
  -- reading phases
  local r, sink = rig{ tty = false }
  r:event{ phase = "target", name = "confluence", state = "start", message = "reading confluence" }
  r:event{ phase = "target", name = "confluence", state = "failed", error = "HTTP 401", code = "EAUTH" }
  t:match(text(sink), "ERROR reading confluence: failed after 0%.0s: HTTP 401 %(EAUTH%)\n$")
end)

test("every written line is masked", function(t)
  secrets.register("hunter2-progress-secret")
  local r, sink = rig{ tty = false }
  local task = r:start("reading hunter2-progress-secret")
  task:finish(false, "token hunter2-progress-secret refused")
  r:above("hunter2-progress-secret")
  local r2, sink2 = rig{ tty = true, color = true }
  r2:start("reading hunter2-progress-secret"):finish(true)
  local all = text(sink) .. text(sink2)
  t:ok(not all:find("hunter2", 1, true), all)
  t:contains(all, "********")
end)

test("numbers and durations", function(t)
  t:eq(progress.count(0, true), "0")
  t:eq(progress.count(999, true), "999")
  t:eq(progress.count(1000, true), "1,000")
  t:eq(progress.count(1234567, true), "1,234,567")
  t:eq(progress.count(1234567, false), "1234567")
  t:eq(progress.duration(0.42), "0.4s")
  t:eq(progress.duration(12.4), "12s")
  t:eq(progress.duration(65), "1m05s")
  t:eq(progress.duration(7380), "2h03m")
end)

-- ------------------------------------------------------------ C callbacks

local http = require "usersync.http"
local fakes = require "support.fakes"
local S = require "support.oktasim"

test("okta scope: progress per page with interval 0, finals with done == total", function(t)
  local sim <close> = fakes.start("okta", { state = S.org{ users = 450, groups = 3,
    members = { [1] = 250, [2] = { 1, 2 }, [3] = 3 } } })
  local c <close>, hc = S.client(sim)
  local calls = {}
  local snap = assert(c:scope{ progress_interval = 0, progress = function(done, total, what)
    calls[#calls + 1] = { done, total, what }
  end })
  t:eq(#snap.users, 450)
  local by = {}
  for _, call in ipairs(calls) do
    by[call[3]] = by[call[3]] or {}
    table.insert(by[call[3]], call)
  end
  t:same(by.groups, { { 3, nil, "groups" }, { 3, 3, "groups" } })
  -- users: 3 pages of 200 (no total while reading), then the final
  t:same(by.users, { { 200, nil, "users" }, { 400, nil, "users" }, { 450, nil, "users" }, { 450, 450, "users" } })
  -- member lists: group 1 has two pages; a list counts when its last page is in
  local last = by["member lists"][#by["member lists"]]
  t:same(last, { 3, 3, "member lists" })
  t:eq(#by["member lists"], 4 + 1, "one call per member page, plus the final")
  for _, call in ipairs(by["member lists"]) do t:eq(call[2], 3, "the total is the counted groups") end
  local prev = 0
  for _, call in ipairs(by["member lists"]) do t:ok(call[1] >= prev); prev = call[1] end
  -- the groups' phase ends before users and members are read
  t:eq(calls[2][3], "groups")
  t:eq(calls[2][2], 3)
end)

test("okta scope: the default throttle calls once per interval, plus the finals", function(t)
  local sim <close> = fakes.start("okta", { state = S.org{ users = 450, groups = 2, members = { [1] = 3 } } })
  local c <close>, hc = S.client(sim)
  local calls = {}
  assert(c:scope{ progress_interval = 60, progress = function(done, total, what)
    calls[#calls + 1] = { done, total, what }
  end })
  -- the first page is reported, then nothing for 60 s but the three finals
  t:eq(#calls, 4, require("usersync.json").encode(calls))
  t:same(calls[#calls], { 2, 2, "member lists" })
  -- an error in the callback fails the read, it does not raise
  local snap, err, code, partial = c:scope{ progress = function() error("bar broke") end }
  t:eq(snap, nil)
  t:eq(code, "ECALLBACK")
  t:match(err, "progress callback failed: .*bar broke")
  t:eq(partial.complete, false)
  t:raises(function() c:scope{ progress = 5 } end, "progress")
  t:raises(function() c:scope{ progress = function() end, progress_interval = "often" } end, "progress_interval")
end)

test("target snapshot: accounts and memberships progress, finals, callback errors", function(t)
  local sim = require "support.targetsim"
  local json = require "usersync.json"
  local s <close> = sim.start("jira")
  local users = { { name = "admin", displayName = "Admin", emailAddress = "admin@example.com", active = true } }
  for i = 1, 7 do
    users[#users + 1] = { name = "u" .. i, displayName = "U" .. i, emailAddress = "u" .. i .. "@example.com", active = true }
  end
  s:put_state{ users = json.array(users), groups = json.array{ "jira-administrators", "devs" },
               members = json.object{ ["jira-administrators"] = { "admin" }, devs = { "u1", "u2", "u3" } },
               projects = json.array{}, components = json.array{} }
  local hc <close> = http.client{ retries = 1 }
  local tg <close> = sim.client(hc, "jira", s.url, { page_size = 3 })
  local calls = {}
  local snap = assert(tg:snapshot{ progress_interval = 0, progress = function(done, total, what)
    calls[#calls + 1] = { done, total, what }
  end })
  t:eq(#snap.accounts, 8)
  local acc, mem = {}, {}
  for _, c in ipairs(calls) do
    if c[3] == "accounts" then acc[#acc + 1] = c else mem[#mem + 1] = c end
  end
  t:same(acc[#acc], { 8, 8, "accounts" }, "final accounts call")
  t:same(mem[#mem], { 4, 4, "memberships" }, "final memberships call")
  t:ok(#acc >= 3, "one call per page of 3 accounts: " .. #acc)
  for i = 1, #acc - 1 do
    t:eq(acc[i][2], nil, "no total while reading")
    t:ok(acc[i][1] <= (acc[i + 1][1] or 0))
  end
  -- the plain call still works, and an error stops the read without raising
  t:eq(#assert(tg:snapshot()).accounts, 8)
  local r, err, code = tg:snapshot{ progress = function() error("no bar") end }
  t:eq(r, nil)
  t:eq(code, "ECALLBACK")
  t:match(err, "progress callback failed: .*no bar")
  t:raises(function() tg:snapshot{ progress = "yes" } end, "progress")
  -- the target is usable afterwards (not left busy)
  t:eq(#assert(tg:snapshot()).accounts, 8)
end)

test("applies running at once: each target's bar goes on and ends with its own counts", function(t)
  for _, tty in ipairs{ true, false } do
    local r, sink, clock = rig{ tty = tty, color = false }
    local function ev(name, state, done, total)
      r:event{ phase = "apply", name = name, state = state, done = done, total = total,
               what = "changes", message = state == "start" and ("applying to " .. name) or nil }
    end
    ev("jira", "start", nil, 3)
    ev("bitbucket", "start", nil, 2)
    clock.now = 101
    ev("jira", "update", 1, 3)
    ev("bitbucket", "update", 2, 2)
    ev("bitbucket", "done")
    clock.now = 102
    ev("jira", "update", 3, 3)
    ev("jira", "done")
    local out = text(sink)
    local mode = tty and "tty" or "plain"
    -- starting bitbucket's apply did not end jira's: each ends once, with its counts
    local _, njira = out:gsub("applying to jira +OK", "")
    local _, njira_plain = out:gsub("applying to jira: done", "")
    t:eq(njira + njira_plain, 1, mode .. ": jira ended once\n" .. out)
    if tty then
      t:match(out, "applying to jira +OK +3 changes +in 2%.0s", mode)
      t:match(out, "applying to bitbucket +OK +2 changes +in 1%.0s", mode)
    else
      t:match(out, "applying to jira: done in 2%.0s: 3 changes", mode)
      t:match(out, "applying to bitbucket: done in 1%.0s: 2 changes", mode)
    end
  end
end)

return test.done()
