-- usersync.progress: what the CLI shows while a phase runs (reading Okta,
-- reading each target, applying to each target).
--
-- On a terminal: one bar line per phase, redrawn in place (carriage return,
-- no cursor movement) at most every `redraw` seconds, ended by a final line
-- that stays:
--   reading okta     [#######...........]  6,210/10,000 users  1,840/s  ETA 2.1s
--   reading okta     OK    10,000 users, 498/498 member lists  in 5.4s (1,850/s)
-- Off a terminal: plain timestamped lines, no escape codes: one when a
-- phase starts, one every `every` seconds while it runs, one when it ends:
--   2026-11-29T04:12:01.000Z INFO reading okta (app 0oa1)
--   2026-11-29T04:12:11.000Z INFO reading okta: 6210 users (1840/s), 120/498 member lists
--   2026-11-29T04:12:13.400Z INFO reading okta: done in 12.4s: 10000 users, 498/498 member lists
--
--   local progress = require "usersync.progress"
--   local r = progress.new{ stream = io.stderr }          -- everything else detected
--   local task = r:start("reading okta", { message = "reading okta (app 0oa1)", unit = "users" })
--   task:update(6210, nil, "users")                       -- done, total|nil, what
--   task:finish(true)                                     -- or task:finish(false, "401 (EAUTH)")
--   r:above("a log line")                                 -- printed above the bar
--   r:event(ev)                                           -- an engine progress event (below)
--
-- progress.new(opts), every field optional:
--   stream   io.stderr (default), a file, a function(text) or a table the
--            written chunks are appended to (tests)
--   tty      is the stream a terminal (default: core.isatty of stderr/stdout;
--            false for anything else)
--   color    force colour on/off; default: progress.color_allowed(tty, env)
--   env      function(name) or table for NO_COLOR / TERM (default os.getenv)
--   width    terminal columns (default: core.termsize, else 80)
--   clock    monotonic seconds (default usersync.time.monotonic)
--   wallclock epoch seconds for the timestamps (default usersync.time.now)
--   redraw   seconds between two bar redraws (0.1)
--   every    seconds between two plain progress lines (10)
--   quiet    true: write nothing at all (--quiet)
--   verbose  true: r:event writes a line per applied operation (--verbose)
--   emit     function(level, text) that writes the off-terminal lines instead
--            (level "INFO", "ERROR", "DEBUG"), e.g. usersync.log for JSON lines
--
-- Engine events (usersync.engine's `progress` option), tables with
--   phase = "okta" | "target" | "apply", name = source or target name,
--   state = "start" | "update" | "done" | "failed",
--   message (start: what is being done), expected (start: an estimate of the
--   unit counter's total, e.g. users in scope at the last run; shown as
--   "/~N" and used for the bar and ETA while the real total is unknown and
--   not yet passed), done, total (nil: unknown), what,
--   error (failed), requests (done), op/ok/info/code (apply updates).
--
-- Every written line goes through usersync.secrets.mask.
local secrets = require "usersync.secrets"

local M = {}

local ESC = {
  reset = "\27[0m", green = "\27[32m", red = "\27[31m", bold_red = "\27[1;31m",
  yellow = "\27[33m", dim = "\27[2m", cyan = "\27[36m",
}
M.ESC = ESC

local LABEL_WIDTH = 16

-- May colour be written to a stream? Only to a terminal, never when
-- NO_COLOR is set to a non-empty value (no-color.org), never for TERM=dumb.
-- env: function(name) or table; default os.getenv.
function M.color_allowed(tty, env)
  if not tty then return false end
  local get = type(env) == "table" and function(k) return env[k] end or env or os.getenv
  local nc = get("NO_COLOR")
  if nc ~= nil and nc ~= "" then return false end
  if get("TERM") == "dumb" then return false end
  return true
end

-- Wraps s in colour c when on (a no-op otherwise).
function M.paint(on, c, s)
  if not on or s == "" then return s end
  return ESC[c] .. s .. ESC.reset
end

-- "6,210" (grouped) or "6210".
function M.count(n, grouped)
  local s = tostring(math.floor(n))
  if not grouped then return s end
  local neg = s:sub(1, 1) == "-"
  if neg then s = s:sub(2) end
  s = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  if s:sub(1, 1) == "," then s = s:sub(2) end
  return (neg and "-" or "") .. s
end

-- "0.4s", "12s", "1m05s", "2h03m".
function M.duration(s)
  if s < 10 then return ("%.1fs"):format(s) end
  s = math.floor(s + 0.5)
  if s < 60 then return s .. "s" end
  if s < 3600 then return ("%dm%02ds"):format(s // 60, s % 60) end
  return ("%dh%02dm"):format(s // 3600, (s % 3600) // 60)
end

-- The log lines' timestamp form (2026-11-29T04:12:01.120Z).
local timestamp = require("usersync.log").timestamp

local function default_tty(stream)
  local ok, core = pcall(require, "usersync.core")
  if not ok or type(core.isatty) ~= "function" then return false end
  if stream == io.stderr then return core.isatty(2) end
  if stream == io.stdout then return core.isatty(1) end
  return false
end

local function default_width(stream)
  local ok, core = pcall(require, "usersync.core")
  if ok and type(core.termsize) == "function" then
    local fd = stream == io.stdout and 1 or 2
    local cols = core.termsize(fd)
    if cols and cols >= 20 then return cols end
  end
  return 80
end

-- ---------------------------------------------------------------- Task

local Task = {}
Task.__index = Task

-- "1 account", "2 accounts", "1/10 users": the unit's plural "s" goes
-- when the number it follows is 1.
local function noun(n, what)
  if n == 1 and what:sub(-1) == "s" then return what:sub(1, -2) end
  return what
end

-- The counter named what, created (in order of appearance) when new.
function Task:counter(what)
  what = what or self.unit or "items"
  local c = self.by_what[what]
  if not c then
    c = { what = what, done = 0 }
    self.by_what[what] = c
    self.counters[#self.counters + 1] = c
  end
  return c
end

-- Records done/total of `what` and redraws when due. Returns self.
function Task:update(done, total, what)
  if self.finished then return self end
  local r = self.r
  local now = r.clock()
  local c = self:counter(what)
  c.done, c.total, c.at = done or c.done, total, now
  self.last_what = c.what
  r.active = self -- of tasks running alongside, the bar shows the one that moved last
  if r.quiet then return self end
  if r.tty then
    if not r.last_draw or now - r.last_draw >= r.redraw then r:draw(self, now) end
  elseif now - self.last_plain >= r.every then
    self.last_plain = now
    r:plain("INFO", ("%s: %s"):format(self.label, self:counts_text(false, now, true)))
  end
  return self
end

-- Counts a failed item (apply): shown on the bar and the final line.
function Task:fail_one()
  self.failed = self.failed + 1
end

-- The total of counter c: its own, or the estimate for the unit counter
-- while it holds; second result true for an estimate.
function Task:total_of(c)
  if c.total then return c.total, false end
  if self.expected and c.what == self.unit and c.done < self.expected and not self.finished then
    return self.expected, true
  end
  return nil
end

-- The unit counter (rate), and the counter the bar and ETA follow.
function Task:main_counters()
  local unit = self.by_what[self.unit] or self.counters[1]
  local bar
  if unit and self:total_of(unit) then
    bar = unit
  else
    local latest
    for _, c in ipairs(self.counters) do
      if c.total and c.done < c.total and (not latest or (c.at or 0) >= (latest.at or 0)) then latest = c end
    end
    bar = latest
  end
  return unit, bar
end

function Task:rate(c, now)
  local elapsed = now - self.t0
  if not c or elapsed < 0.2 then return nil end
  return c.done / elapsed
end

-- "6,210 users (1,840/s), 120/498 member lists", the unit counter first;
-- with_rate adds the unit's rate. A finished task shows plain counts.
function Task:counts_text(grouped, now, with_rate)
  local unit = self:main_counters()
  local parts, order = {}, { unit }
  for _, c in ipairs(self.counters) do if c ~= unit then order[#order + 1] = c end end
  for _, c in ipairs(order) do
    local s = M.count(c.done, grouped)
    local total, estimate = self:total_of(c)
    if total and not (self.finished and total == c.done) then
      s = s .. "/" .. (estimate and "~" or "") .. M.count(total, grouped)
    end
    s = s .. " " .. noun((total and not (self.finished and total == c.done)) and total or c.done, c.what)
    if with_rate and c == unit then
      local rate = self:rate(c, now)
      if rate then s = s .. " (" .. M.count(rate, grouped) .. "/s)" end
    end
    parts[#parts + 1] = s
  end
  if self.failed > 0 then parts[#parts + 1] = M.count(self.failed, grouped) .. " failed" end
  return #parts > 0 and table.concat(parts, ", ") or "nothing to read"
end

-- The bar line (visible text and the coloured text) for width columns.
-- Pieces after the label, most important first: the unit counter, failures,
-- rate, ETA, the other counters. The bar has a fixed width for the terminal
-- (10..30 cells, 18 on 80 columns); when the line does not fit, the least
-- important pieces go first, then the bar.
function Task:bar_line(now, width, color)
  local unit, bar = self:main_counters()
  local label = self.label
  if #label < LABEL_WIDTH then label = label .. (" "):rep(LABEL_WIDTH - #label) end
  local pieces = {} -- { text, colour, rank }
  local function add(rank, text, c) pieces[#pieces + 1] = { text, c, rank } end
  local function counter_text(c)
    local total, estimate = self:total_of(c)
    return M.count(c.done, true) .. (total and ("/" .. (estimate and "~" or "") .. M.count(total, true)) or "")
      .. " " .. noun(total or c.done, c.what)
  end
  if unit then add(1, counter_text(unit)) end
  if self.failed > 0 then add(2, M.count(self.failed, true) .. " failed", "red") end
  local rate = self:rate(unit, now)
  if rate then add(3, M.count(rate, true) .. "/s") end
  local bar_total = bar and self:total_of(bar)
  if bar_total and bar_total > bar.done then
    local elapsed = now - self.t0
    if bar.done > 0 and elapsed >= 0.2 then
      add(4, "ETA " .. M.duration((bar_total - bar.done) * elapsed / bar.done))
    end
  end
  for _, c in ipairs(self.counters) do
    if c ~= unit then add(5, counter_text(c)) end
  end
  local function joined(colored)
    local t = {}
    for _, p in ipairs(pieces) do t[#t + 1] = (colored and p[2]) and M.paint(color, p[2], p[1]) or p[1] end
    return table.concat(t, "  ")
  end
  local cells = math.max(10, math.min(30, width - 62))
  local function room() return width - 1 - #label - 1 - (cells + 2) - 2 - #joined(false) end
  while #pieces > 1 and room() < 0 do
    local worst = 1
    for i, p in ipairs(pieces) do if p[3] >= pieces[worst][3] then worst = i end end
    table.remove(pieces, worst)
  end
  local text, ctext = joined(false), joined(true)
  local vis, col
  if room() >= 0 then
    if bar_total and bar_total > 0 then
      local n = math.min(cells, math.floor(cells * bar.done / bar_total))
      local fill, rest = ("#"):rep(n), ("."):rep(cells - n)
      vis = "[" .. fill .. rest .. "]"
      col = "[" .. M.paint(color, "green", fill) .. M.paint(color, "dim", rest) .. "]"
    else
      -- Unknown total: a marker bouncing across the bar.
      local span = cells - 3
      local step = math.floor((now - self.t0) * 10) % (2 * span)
      local pos = step <= span and step or 2 * span - step
      local bounce = (" "):rep(pos) .. "<=>" .. (" "):rep(span - pos)
      vis = "[" .. bounce .. "]"
      col = "[" .. M.paint(color, "cyan", bounce) .. "]"
    end
    vis, col = label .. " " .. vis .. "  " .. text, label .. " " .. col .. "  " .. ctext
  else
    vis, col = label .. " " .. text, label .. " " .. ctext
  end
  if #vis > width - 1 then
    vis = vis:sub(1, width - 1)
    col = vis -- a cut line loses its colours rather than cut an escape
  end
  return vis, col
end

-- Ends the task: ok true (OK), false (FAIL, detail says why). The final line stays.
function Task:finish(ok, detail)
  if self.finished then return end
  self.finished = true
  local r = self.r
  r.running[self] = nil
  if r.active == self then r.active = next(r.running) end
  if r.quiet then return end
  local now = r.clock()
  local took = now - self.t0
  if r.tty then
    local label = self.label
    if #label < LABEL_WIDTH then label = label .. (" "):rep(LABEL_WIDTH - #label) end
    local word = ok and M.paint(r.color, "green", "OK  ") or M.paint(r.color, "bold_red", "FAIL")
    local body
    if ok then
      body = self:counts_text(true, now, false) .. "  in " .. M.duration(took)
      local unit = self:main_counters()
      local rate = self:rate(unit, now)
      if rate and unit.done > 0 then body = body .. " (" .. M.count(rate, true) .. "/s)" end
    else
      -- The first line of the reason, cut to the terminal (the command
      -- prints the whole error after the run).
      local why = tostring(detail or "failed"):match("^[^\n]*")
      local room = r.width - 1 - #label - 1 - 4 - 2
      if #why > room and room > 4 then why = why:sub(1, room - 3) .. "..." end
      body = M.paint(r.color, "red", why)
    end
    r:clear()
    r:write(secrets.mask(label .. " " .. word .. "  " .. body) .. "\n")
  else
    if ok then
      r:plain("INFO", ("%s: done in %s: %s"):format(self.label, M.duration(took), self:counts_text(false, now, false)))
    else
      r:plain("ERROR", ("%s: failed after %s: %s"):format(self.label, M.duration(took), tostring(detail or "failed")))
    end
  end
end

-- ---------------------------------------------------------------- Reporter

local Reporter = {}
Reporter.__index = Reporter

function M.new(opts)
  opts = opts or {}
  local stream = opts.stream or io.stderr
  local tty = opts.tty
  if tty == nil then tty = default_tty(stream) end
  local color = opts.color
  if color == nil then color = M.color_allowed(tty, opts.env) end
  local time
  local function t() time = time or require "usersync.time"; return time end
  return setmetatable({
    stream = stream, tty = tty and true or false, color = color and true or false,
    width = opts.width or (tty and default_width(stream)) or 80,
    clock = opts.clock or function() return t().monotonic() end,
    wallclock = opts.wallclock or function() return t().now() end,
    redraw = opts.redraw or 0.1, every = opts.every or 10,
    quiet = opts.quiet and true or false, verbose = opts.verbose and true or false,
    emit = opts.emit,
    drawn = 0,      -- visible length of the bar on screen (0: none)
    running = {},   -- tasks started and not finished (set)
    tasks = {},     -- engine events: key -> Task
  }, Reporter)
end

function Reporter:write(s)
  local st = self.stream
  if type(st) == "function" then st(s)
  elseif type(st) == "table" and getmetatable(st) == nil then st[#st + 1] = s
  else st:write(s); st:flush() end
end

-- Removes the bar from the screen (terminal only).
function Reporter:clear()
  if self.tty and self.drawn > 0 then
    self:write("\r" .. (" "):rep(self.drawn) .. "\r")
    self.drawn = 0
  end
end

function Reporter:draw(task, now)
  local vis, col = task:bar_line(now, self.width, self.color)
  local pad = self.drawn > #vis and (" "):rep(self.drawn - #vis) or ""
  self:write("\r" .. secrets.mask(col) .. pad)
  self.drawn = #vis
  self.last_draw = now
end

-- A plain timestamped line: "2026-11-29T04:12:01.000Z INFO text".
function Reporter:plain(level, text)
  if self.emit then return self.emit(level, text) end
  self:write(secrets.mask(timestamp(self.wallclock()) .. " " .. level .. " " .. text) .. "\n")
end

-- Writes a whole line (e.g. a log line) above the bar and redraws the bar.
function Reporter:above(line)
  if self.tty and self.drawn > 0 then
    self:clear()
    self:write(secrets.mask(line) .. "\n")
    if self.active then self:draw(self.active, self.clock()) end
  else
    self:write(secrets.mask(line) .. "\n")
  end
end

-- Starts a phase. opts: { message = start line text, unit = main counter's
-- what, expected = an estimate of the unit counter's total, alongside =
-- true: the phase runs at the same time as the running ones (the applies
-- of several targets), which go on; else a running phase is ended first }.
function Reporter:start(label, opts)
  opts = opts or {}
  if not opts.alongside then
    for task in pairs(self.running) do task:finish(true) end
  end
  local now = self.clock()
  local task = setmetatable({ r = self, label = label, unit = opts.unit, expected = opts.expected,
                              t0 = now, last_plain = now,
                              counters = {}, by_what = {}, failed = 0 }, Task)
  self.active = task
  self.running[task] = true
  if self.quiet then return task end
  if self.tty then
    self.last_draw = nil
    self:draw(task, now)
  else
    self:plain("INFO", opts.message or label)
  end
  return task
end

-- Ends an unfinished bar (the command stops early): it is removed.
function Reporter:close()
  for task in pairs(self.running) do task.finished = true end
  self.running, self.active = {}, nil
  self:clear()
end

-- --verbose: one line per applied operation, above the bar or timestamped.
function Reporter:op_line(ev)
  local op = ev.op
  local report = require "usersync.report"
  local ok, what = pcall(report.describe, op)
  if not ok or what == nil or what == "" then what = tostring(op.subject or op.name or "") end
  local text = ("%s %s %s: "):format(tostring(ev.name), tostring(op.kind), what)
  if ev.ok then
    text = text .. "ok" .. (ev.info and (" (" .. tostring(ev.info) .. ")") or "")
  else
    text = text .. "FAILED " .. tostring(ev.info or "") .. (ev.code and (" (" .. tostring(ev.code) .. ")") or "")
  end
  if self.tty then
    self:above((ev.ok and "  " or M.paint(self.color, "red", "! ")) .. text)
  else
    self:plain("DEBUG", text)
  end
end

local PHASE = {
  okta = { "reading %s", "users" },
  target = { "reading %s", "accounts" },
  apply = { "applying to %s", "changes" },
}

-- Turns an engine progress event into the calls above. Returns the task.
function Reporter:event(ev)
  local p = PHASE[ev.phase] or { "%s", nil }
  local key = tostring(ev.phase) .. "\0" .. tostring(ev.name)
  local task = self.tasks[key]
  if ev.state == "start" or not task then
    task = self:start(p[1]:format(tostring(ev.name)), { message = ev.message, unit = p[2],
                                                       alongside = ev.phase == "apply",
                                                       expected = math.type(ev.expected) and ev.expected > 0 and ev.expected or nil })
    self.tasks[key] = task
    if ev.state == "start" then
      if ev.total then task:update(0, ev.total, ev.what) end
      return task
    end
  end
  if ev.state == "update" then
    if ev.op ~= nil then
      if not ev.ok then task:fail_one() end
      if self.verbose and not self.quiet then self:op_line(ev) end
    end
    task:update(ev.done, ev.total, ev.what)
  elseif ev.state == "done" then
    if ev.done then task:update(ev.done, ev.total, ev.what) end
    task:finish(true)
    self.tasks[key] = nil
  elseif ev.state == "failed" then
    local detail = tostring(ev.error or "failed")
    if ev.code then detail = detail .. " (" .. tostring(ev.code) .. ")" end
    task:finish(false, detail)
    self.tasks[key] = nil
  end
  return task
end

return M
