-- usersync.planfile: the machine form of a plan (`usersync plan --json`,
-- `--out FILE`) and the check `usersync apply FILE` makes before applying
-- it: a saved plan is applied exactly, and refused when the targets or Okta
-- changed in a way that makes it unsafe.
--
--   local planfile = require "usersync.planfile"
--   local text = planfile.encode(run_plan, { config = "usersync.conf.lua" })
--   planfile.write(run_plan, meta, io.write)   -- the same text in pieces (large plans)
--   local saved = assert(planfile.decode(text))
--   local verdict = planfile.compare(saved, fresh_run_plan)
--   -- verdict.apply: saved ops still planned now (apply these, in order)
--   -- verdict.unsafe: reasons to refuse (a destructive op no longer planned)
--   -- verdict.obsolete: harmless saved ops no longer needed (skipped)
--   -- verdict.new: ops planned now but not in the saved plan (not applied)
--   -- verdict.done: saved ops usersync applied since (compare's done predicate)
--   planfile.scrub(run_plan)   -- secrets out of its free texts (write does it too)
--
-- A plan is data: its names, groups and payloads are written exactly as
-- planned, never masked (a group "site-admins" stays "site-admins" whatever
-- the secrets are). Only its free texts, the messages of errors, conflicts,
-- notes, read problems and a target's read error (which can quote a server's error body), are
-- scrubbed of secrets and credentials when the plan is written.
local json = require "usersync.json"
local plan = require "usersync.plan"
local secrets = require "usersync.secrets"

local M = {}

M.VERSION = 1

-- Operations that take something away; if one is no longer in a fresh plan
-- the base has changed in a way that makes the saved plan unsafe.
M.DESTRUCTIVE = { remove_member = true, handover_lead = true, deactivate_user = true,
                  delete_user = true, rename_user = true }

-- What an operation sends besides its subject: part of its identity, so a
-- saved operation whose payload would now differ (an e-mail changed again,
-- another default lead) is not applied with the new payload unreviewed.
local PAYLOAD = { "changes", "display_name", "email", "projects", "components",
                  "to_project_lead", "to_component_lead", "created" }

-- Identity of an operation across two plans.
function M.key(sync, op)
  local payload = {}
  for _, f in ipairs(PAYLOAD) do payload[f] = op[f] end
  -- lists read back from a file are marked arrays; mark fresh ones alike
  for _, f in ipairs({ "projects", "components" }) do
    if type(payload[f]) == "table" then
      local list = {}
      for i, x in ipairs(payload[f]) do list[i] = x end
      payload[f] = json.array(list)
    end
  end
  return table.concat({ sync, op.target, op.kind, (op.subject or ""):lower(), (op.group or ""):lower(),
                        (op.to or ""):lower(), op.okta_id or "",
                        assert(json.encode(payload, { sort_keys = true })) }, "\31")
end

local function array(t) return json.array(t or {}) end

-- Scrubs the free texts of a run plan in place (see the header). Returns it.
function M.scrub(run_plan)
  local mask = secrets.mask
  for _, s in ipairs(run_plan.syncs or {}) do
    local problems = s.read and s.read.problems or {}
    for i, p in ipairs(problems) do problems[i] = mask(p) end
    for _, tp in ipairs(s.targets or {}) do M.scrub_target(tp) end
  end
  return run_plan
end

-- The same for one target's plan tp. Returns it.
function M.scrub_target(tp)
  local mask = secrets.mask
  for _, e in ipairs(tp.errors or {}) do e.message = mask(e.message) end
  for _, c in ipairs(tp.conflicts or {}) do c.message = mask(c.message) end
  for i, n in ipairs(tp.notes or {}) do tp.notes[i] = mask(n) end
  if tp.read_error then tp.read_error = mask(tp.read_error) end
  return tp
end

local ENC = { indent = 2, sort_keys = true }

-- One operation as the plan file holds it: a plain table.
local function op_doc(o)
  local c = plan.plain(o) -- with the fields a plan's op keeps in its metatable
  if c.projects then c.projects = array(c.projects) end
  if c.components then c.components = array(c.components) end
  return c
end

-- The text of ops[i..j] as elements of an array whose elements sit at
-- nesting depth `depth` (each element after ",\n" and its indent, no
-- brackets): the slice is encoded inside depth - 1 wrapping arrays, so
-- the encoder itself indents it as the whole document would.
local function ops_slice(ops, i, j, depth)
  local list = {}
  for k = i, j do list[#list + 1] = op_doc(ops[k]) end
  local wrapped = array(list)
  for _ = 2, depth do wrapped = array({ wrapped }) end
  local text = assert(json.encode(wrapped, ENC))
  local head, tail = {}, {}
  for d = 1, depth - 1 do
    head[#head + 1] = "[\n" .. (" "):rep(ENC.indent * d)
    tail[#tail + 1] = "\n" .. (" "):rep(ENC.indent * (depth - 1 - d)) .. "]"
  end
  head = table.concat(head) .. "["
  tail = "\n" .. (" "):rep(ENC.indent * (depth - 1)) .. "]" .. table.concat(tail)
  assert(text:sub(1, #head) == head and text:sub(-#tail) == tail, "planfile: unexpected JSON layout")
  return text:sub(#head + 1, -#tail - 1) -- "\n<indent>op,\n<indent>op..."
end

-- Operations encoded per call of ops_slice.
local SLICE = 500

-- Serialises a run plan, streamed: write(s) is called with consecutive
-- pieces of the text (500 operations at most each, plus the parts around
-- them), so a plan of a million operations is never held as one string.
-- The text is exactly json.encode(doc, { indent = 2, sort_keys = true }) of
-- the whole document: each target's ops are encoded slice by slice at the
-- depth of the marker string that holds their place in the encoded rest.
-- meta: { config = path, created = iso time }.
function M.write(run_plan, meta, write)
  M.scrub(run_plan)
  local doc = { usersync_plan = M.VERSION, config = meta and meta.config, created = meta and meta.created,
                scope = run_plan.scope, targets = run_plan.targets and array(run_plan.targets),
                syncs = array({}) }
  local lists = {}
  for _, s in ipairs(run_plan.syncs) do
    local out = { name = s.name, source = s.source, users_in_scope = s.users_in_scope,
                  read = s.read, targets = array({}) }
    for _, tp in ipairs(s.targets) do
      lists[#lists + 1] = tp
      out.targets[#out.targets + 1] = {
        target = tp.target, target_type = tp.target_type, counts = tp.counts,
        deprovisions = tp.deprovisions, ops = ("\1usersync-ops-%d\1"):format(#lists), conflicts = array(tp.conflicts),
        errors = array(tp.errors), notes = array(tp.notes), read_error = tp.read_error,
      }
    end
    doc.syncs[#doc.syncs + 1] = out
  end
  local text = assert(json.encode(doc, ENC))
  local pos = 1
  for i, tp in ipairs(lists) do
    local marker = assert(json.encode(("\1usersync-ops-%d\1"):format(i)))
    local a, b = text:find(marker, pos, true)
    write(text:sub(pos, a - 1))
    -- the key's line indent is the closing bracket's
    local key_indent = #text:sub(1, a - 1):match("\n( *)[^\n]*$")
    local spooled = tp.spooled and tp.spooled.json
    if spooled then
      assert(spooled.key_indent == key_indent, "planfile: spooled ops at another depth")
      spooled:copy(write)
    else
      M.write_ops(tp.ops, write, key_indent)
    end
    pos = b + 1
  end
  write(text:sub(pos))
end

-- The ops of a target as the plan file holds them (the value of its "ops"
-- key, whose line is indented by key_indent spaces), written in pieces of
-- SLICE ops. usersync.spool writes them as soon as the target is planned.
M.OPS_INDENT = 10 -- syncs[i].targets[j].ops
function M.write_ops(ops, write, key_indent)
  local w = M.ops_writer(write, key_indent)
  for _, o in ipairs(ops) do w:add(o) end
  w:finish()
end

-- The same, an op at a time: w:add(op) for each op in order, then
-- w:finish(). Holds SLICE ops at most (usersync.spool, a streamed plan).
function M.ops_writer(write, key_indent)
  local depth = key_indent // ENC.indent + 1 -- the elements: one level deeper than the key
  local buf, n, written = {}, 0, false
  local function flush()
    write((written and "," or "[") .. ops_slice(buf, 1, n, depth))
    buf, n, written = {}, 0, true
  end
  return {
    add = function(_, o)
      n = n + 1
      buf[n] = o
      if n == SLICE then flush() end
    end,
    finish = function()
      if n > 0 then flush() end
      write(written and ("\n" .. (" "):rep(key_indent) .. "]") or "[]")
    end,
  }
end

-- The same text as one string (what write writes), gathered in chunks of
-- 1,000 pieces: never a million small strings alive at once.
function M.encode(run_plan, meta)
  local chunks, pieces = {}, {}
  M.write(run_plan, meta, function(s)
    pieces[#pieces + 1] = s
    if #pieces == 1000 then chunks[#chunks + 1] = table.concat(pieces); pieces = {} end
  end)
  chunks[#chunks + 1] = table.concat(pieces)
  return table.concat(chunks)
end

-- Parses a saved plan. Returns the table or nil, message.
function M.decode(text)
  local doc, err = json.decode(text)
  if not doc then return nil, "not a usersync plan: " .. err end
  if type(doc) ~= "table" or doc.usersync_plan == nil then
    return nil, "not a usersync plan (no usersync_plan version field)"
  end
  if doc.usersync_plan ~= M.VERSION then
    return nil, ("plan format %s is not supported by this usersync (expects %d)"):format(tostring(doc.usersync_plan), M.VERSION)
  end
  return doc
end

-- Compares a saved plan with a fresh one computed now. See the header.
-- done(sync, op) (optional): true when usersync itself applied op since the
-- plan was made (a sync, or apply without --force, before a safety stop);
-- such an op is in verdict.done, not a reason to refuse.
function M.compare(saved, fresh, done)
  local now = {}
  for _, s in ipairs(fresh.syncs) do
    for _, tp in ipairs(s.targets) do
      for _, o in ipairs(tp.ops) do now[M.key(s.name, o)] = { sync = s.name, op = o } end
    end
  end
  local verdict = { apply = {}, unsafe = {}, obsolete = {}, new = {}, done = {} }
  local in_saved = {}
  for _, s in ipairs(saved.syncs) do
    for _, tp in ipairs(s.targets) do
      for _, o in ipairs(tp.ops) do
        local k = M.key(s.name, o)
        in_saved[k] = true
        if now[k] then
          verdict.apply[#verdict.apply + 1] = { sync = s.name, op = o }
        elseif done and done(s.name, o) then
          verdict.done[#verdict.done + 1] = { sync = s.name, op = o }
        elseif M.DESTRUCTIVE[o.kind] then
          verdict.unsafe[#verdict.unsafe + 1] = ("%s %s %s in %s is no longer planned: the targets or Okta changed since the plan was made")
            :format(s.name, o.kind, o.subject .. (o.group and (" / " .. o.group) or ""), o.target)
        else
          verdict.obsolete[#verdict.obsolete + 1] = { sync = s.name, op = o }
        end
      end
    end
  end
  for k, v in pairs(now) do
    if not in_saved[k] then verdict.new[#verdict.new + 1] = v end
  end
  return verdict
end

return M
