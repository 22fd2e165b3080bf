-- usersync.spool: `usersync plan` writes each target's plan out as soon as
-- it is planned, so a whole-org plan never holds every target's operations
-- at once (a 100,000-user first plan has half a million per target). The
-- text lines (report.write_target_text) and the plan file's "ops" array
-- (planfile.write_ops) of a target go to temporary files; the plan then
-- keeps only what the checks after it read (counts, conflicts, errors,
-- notes, and its destructive operations for report.safety), and the
-- writers copy the spooled pieces in place, byte for byte what they would
-- have written from the ops.
--
--   local spool = require "usersync.spool"
--   local sp <close> = spool.new{ text = true, json = true, color = false }
--   e:plan{ ..., on_target = function(tp) sp:take(tp) end }  -- one sync entry
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

-- Appends what fn(write) writes to file f; returns the piece.
local function spool_to(f, fn)
  local from = assert(f:seek("end"))
  local buf, n, len = {}, 0, 0
  local function write(s)
    n = n + 1; buf[n] = s; len = len + #s
    if n == 1000 then assert(f:write(table.concat(buf, "", 1, n))); n = 0 end
  end
  fn(write)
  assert(f:write(table.concat(buf, "", 1, n)))
  return setmetatable({ file = f, from = from, len = len }, Piece)
end

-- Writes target plan tp to the spool and drops its operations (keeping the
-- destructive ones, which report.safety counts).
function Spool:take(tp)
  planfile.scrub_target(tp)
  local sp = { n = #tp.ops }
  if self.text then
    sp.text = spool_to(self.text, function(write) report.write_target_text(tp, write, self.opts) end)
  end
  if self.json then
    sp.json = spool_to(self.json, function(write) planfile.write_ops(tp.ops, write, planfile.OPS_INDENT) end)
    sp.json.key_indent = planfile.OPS_INDENT
  end
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
