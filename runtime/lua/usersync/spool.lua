-- usersync.spool: `usersync plan` writes each target's plan out as soon as
-- it is planned, so a whole-org plan never holds every target's operations
-- at once (a 100,000-user first plan has half a million per target). The
-- text lines (report.write_target_text) and the plan file's "ops" array
-- (planfile.write_ops) of a target go to temporary files; the plan then
-- keeps only what the checks after it read (counts, conflicts, errors,
-- notes, and its destructive operations for report.safety), and the
-- writers copy the spooled pieces in place, byte for byte what they would
-- have written from the ops. With Spool:sink a target's plan is streamed
-- into the spool as it is planned (plan.build's input.sink), so not even
-- one target's operations are all held.
--
--   local spool = require "usersync.spool"
--   local sp <close> = spool.new{ text = true, json = true, color = false }
--   e:plan{ ..., on_target = function(tp) sp:take(tp) end,   -- one sync entry
--           sink = function() return sp:sink() end }         -- (optional) streamed
--   report.write_plan_text(run_plan, io.write)   -- copies each spooled target
--   planfile.write(run_plan, meta, io.write)
--
-- Only for a plan of one sync entry that is written and not applied: the
-- merge of several entries rewrites their ops after all are planned, and an
-- apply needs them all.
local planfile = require "usersync.planfile"
local report = require "usersync.report"

local M = {}

local Spool = {}
Spool.__index = Spool

-- A piece of a spool file: bytes [from, from + len).
local Piece = {}
Piece.__index = Piece

local CHUNK = 64 * 1024

-- Writes the piece with write(s), in chunks.
function Piece:copy(write)
  local f = self.file
  assert(f:seek("set", self.from))
  local left = self.len
  while left > 0 do
    local s = assert(f:read(math.min(left, CHUNK)), "spool: the temporary file is short")
    write(s)
    left = left - #s
  end
  assert(f:seek("end"))
end

-- A temporary file (removed when closed or at exit), or raises.
local function tmpfile()
  local f, err = io.tmpfile()
  if not f then error("cannot create a temporary file for the plan: " .. tostring(err), 0) end
  return f
end

-- opts: text = spool the text lines, json = spool the plan file's ops,
-- color = the text's colours (report.write_plan_text's opts.color).
function M.new(opts)
  return setmetatable({ opts = { color = opts.color },
                        text = opts.text and tmpfile() or nil,
                        json = opts.json and tmpfile() or nil }, Spool)
end

-- Pieces written one after the other.
local Pieces = {}
Pieces.__index = Pieces

function Pieces:copy(write)
  for _, piece in ipairs(self) do piece:copy(write) end
end

-- A buffered writer appending to file f: returns write(s), and done()
-- that writes out what is buffered and returns the piece written.
local function appender(f)
  local from = assert(f:seek("end"))
  local buf, n, len = {}, 0, 0
  local function write(s)
    n = n + 1; buf[n] = s; len = len + #s
    if n == 1000 then assert(f:write(table.concat(buf, "", 1, n))); n = 0 end
  end
  local function done()
    assert(f:write(table.concat(buf, "", 1, n)))
    buf, n = nil, 0
    return setmetatable({ file = f, from = from, len = len }, Piece)
  end
  return write, done
end

-- Appends what fn(write) writes to file f; returns the piece.
local function spool_to(f, fn)
  local write, done = appender(f)
  fn(write)
  return done()
end

-- The sink of the next target's plan (plan.build's input.sink): each op
-- it is given goes to the spool files at once, so the plan never holds
-- them all (a 100,000-user first plan has half a million per target).
-- take() then completes that target with the plan it returns.
function Spool:sink()
  assert(not self.stream, "spool: a target's stream is still open")
  local st, opts = { n = 0 }, self.opts
  if self.text then st.text, st.text_done = appender(self.text) end
  if self.json then
    local write
    write, st.json_done = appender(self.json)
    st.ops = planfile.ops_writer(write, planfile.OPS_INDENT)
  end
  self.stream = st
  return function(o)
    st.n = st.n + 1
    if st.text then report.write_op(o, st.text, opts) end
    if st.ops then st.ops:add(o) end
  end
end

-- Writes target plan tp to the spool and drops its operations (keeping the
-- destructive ones, which report.safety counts). A plan streamed into
-- Spool:sink (tp.streamed) adds its ops to those sunk: the text's heading
-- (its counts) is written after them and copied before.
function Spool:take(tp)
  planfile.scrub_target(tp)
  local st = tp.streamed and self.stream
  assert(not tp.streamed or (st and st.n == tp.streamed.n), "spool: a streamed plan not streamed here")
  self.stream = nil
  local sp = { n = (st and st.n or 0) + #tp.ops }
  if self.text and st then
    for _, o in ipairs(tp.ops) do report.write_op(o, st.text, self.opts) end
    local ops = st.text_done()
    sp.text = setmetatable({
      spool_to(self.text, function(write) report.write_target_head(tp, write) end), ops,
      spool_to(self.text, function(write) report.write_target_tail(tp, write, self.opts) end),
    }, Pieces)
  elseif self.text then
    sp.text = spool_to(self.text, function(write) report.write_target_text(tp, write, self.opts) end)
  end
  if self.json and st then
    for _, o in ipairs(tp.ops) do st.ops:add(o) end
    st.ops:finish()
    sp.json = st.json_done()
  elseif self.json then
    sp.json = spool_to(self.json, function(write) planfile.write_ops(tp.ops, write, planfile.OPS_INDENT) end)
  end
  if sp.json then sp.json.key_indent = planfile.OPS_INDENT end
  local keep = {}
  for _, o in ipairs(tp.ops) do
    if report.DESTRUCTIVE[o.kind] then keep[#keep + 1] = o end
  end
  tp.ops, tp.spooled, tp.new_ids = keep, sp, {}
  collectgarbage()
end

function Spool:close()
  if self.text then self.text:close(); self.text = nil end
  if self.json then self.json:close(); self.json = nil end
end
Spool.__close = Spool.close

return M
