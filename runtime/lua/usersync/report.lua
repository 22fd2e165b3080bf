-- usersync.report: the human form of a plan (`usersync plan`) and the
-- safety checks that stop destructive changes.
--
--   local report = require "usersync.report"
--   io.write(report.plan_text(run_plan))                 -- or plan_text(run_plan, { color = true })
--   report.write_plan_text(run_plan, io.write)           -- the same, line by line (large plans)
--   local stop, hard = report.safety(run_plan, { force = false })
--   -- nil, or the list of reasons; hard when a source read failed outright
--   -- (nothing planned for that sync; --force does not override it)
--
-- run_plan = { syncs = { { name, source, users_in_scope, read = { complete, problems },
--                          targets = { <usersync.plan result>, ... } } } }
local M = {}

local LABEL = {
  create_group = { "+", "create group" }, create_user = { "+", "create user" },
  link = { "=", "adopt" }, update_user = { "~", "update" }, rename_user = { "~", "rename" },
  reactivate_user = { "+", "reactivate" }, add_member = { "+", "add member" },
  remove_member = { "-", "remove member" }, handover_lead = { ">", "hand over leads" },
  deactivate_user = { "-", "deactivate" }, delete_user = { "-", "delete" },
}
M.LABEL = LABEL

local function describe(o)
  if o.kind == "rename_user" then return o.from .. " -> " .. o.to end
  if o.kind == "add_member" or o.kind == "remove_member" then return o.name .. " in " .. o.group end
  if o.kind == "update_user" then
    local parts = {}
    for _, f in ipairs({ "display_name", "email" }) do
      local c = o.changes and o.changes[f]
      if c then parts[#parts + 1] = ("%s %s: %s -> %s"):format(o.name, f, tostring(c.from or ""), tostring(c.to)) end
    end
    return table.concat(parts, "; ")
  end
  if o.kind == "handover_lead" then
    local parts = {}
    if #o.projects > 0 then parts[#parts + 1] = ("projects %s to %s"):format(table.concat(o.projects, ","), o.to_project_lead) end
    if #o.components > 0 then parts[#parts + 1] = ("components %s to %s"):format(table.concat(o.components, ","), o.to_component_lead) end
    return o.name .. ": " .. table.concat(parts, "; ")
  end
  return o.subject
end
M.describe = describe

-- A plan line's object: describe(o), and for a new account what it is
-- created with (display name and email), which a reviewer approves too.
local function plan_object(o)
  local what = describe(o)
  if o.kind == "create_user" then
    if o.display_name then what = what .. (" %q"):format(o.display_name) end
    if o.email then what = what .. " <" .. o.email .. ">" end
  end
  return what
end

-- Changes that take something away (withheld by a safety stop).
M.DESTRUCTIVE = { remove_member = true, handover_lead = true, deactivate_user = true, delete_user = true }

local function plural(n, word)
  return ("%d %s%s"):format(n, word, n == 1 and "" or "s")
end

-- "3 create user, 1 deactivate" in plan order.
local function count_line(counts)
  local parts = {}
  for _, kind in ipairs(require("usersync.plan").ORDER) do
    if counts[kind] then parts[#parts + 1] = ("%d %s"):format(counts[kind], LABEL[kind][2]) end
  end
  return #parts > 0 and table.concat(parts, ", ") or "no changes"
end
M.count_line = count_line

-- Colours of the change signs (plan_text with color = true).
local SIGN_COLOR = { ["+"] = "\27[32m", ["-"] = "\27[31m", ["~"] = "\27[33m", [">"] = "\27[33m",
                     ["!"] = "\27[31m" }
local RESET = "\27[0m"

-- The readable plan, grouped by sync entry and target, streamed: write(s)
-- is called once per line, s ending in "\n" (a 100,000-user first sync is
-- over a million lines: never held whole). opts.color: colour the signs
-- (+ green, - red, ~ and > yellow, ! red); only for a terminal.
-- The plan is data, written as it is; its free texts are scrubbed first:
--   report.write_plan_text(planfile.scrub(run_plan), io.write)
function M.write_plan_text(run_plan, write, opts)
  local _ <close> = require("usersync.memory").for_writing(run_plan)
  local function w(fmt, ...) write((select("#", ...) > 0 and fmt:format(...) or fmt) .. "\n") end

  local total_ops, total_conf, total_err, unread = 0, 0, 0, 0
  for _, s in ipairs(run_plan.syncs) do
    w("sync %q: source %s, %s in scope%s", s.name, s.source, plural(s.users_in_scope or 0, "user"),
      s.read and s.read.complete == false and " (READ INCOMPLETE)" or "")
    for _, tp in ipairs(s.targets) do
      local spooled = tp.spooled and tp.spooled.text
      if spooled then spooled:copy(write) else M.write_target_text(tp, write, opts) end
      if tp.read_error then unread = unread + 1 end
      total_ops = total_ops + M.op_count(tp)
      total_conf = total_conf + #tp.conflicts
      total_err = total_err + #tp.errors
    end
    w("")
  end

  w("summary: %s, %s, %s%s", plural(total_ops, "change"), plural(total_conf, "conflict"), plural(total_err, "policy error"),
    unread > 0 and (", " .. plural(unread, "target") .. " not read") or "")
end

-- The lines of one target's plan in write_plan_text (from the blank line
-- before its heading to its last note), written with write(s) line by line.
-- usersync.spool writes them as soon as the target is planned.
-- (Its three parts, write_target_head, write_op per op and
-- write_target_tail, are what usersync.spool writes of a plan streamed.)
function M.write_target_text(tp, write, opts)
  M.write_target_head(tp, write)
  for _, o in ipairs(tp.ops) do M.write_op(o, write, opts) end
  M.write_target_tail(tp, write, opts)
end

-- A sign, coloured with opts.color (an adoption's "=" has no colour).
local function colored(s, opts)
  local c = opts and opts.color and SIGN_COLOR[s]
  return c and (c .. s .. RESET) or s
end

local function sign_of(opts)
  return function(s) return colored(s, opts) end
end

-- The blank line and the heading of a target (its counts).
function M.write_target_head(tp, write)
  write("\n")
  write(("  %s (%s): %s\n"):format(tp.target, tp.target_type, count_line(tp.counts)))
end

-- The line of one operation.
function M.write_op(o, write, opts)
  local l = LABEL[o.kind]
  write(("    %s %-16s %s  (%s)\n"):format(colored(l[1], opts), l[2], plan_object(o), o.reason or ""))
end

-- Its conflicts, read error, policy errors and notes.
function M.write_target_tail(tp, write, opts)
  local sign = sign_of(opts)
  local function w(fmt, ...) write((select("#", ...) > 0 and fmt:format(...) or fmt) .. "\n") end
  for _, c in ipairs(tp.conflicts) do w("    %s conflict         %s", sign("!"), c.message) end
  if tp.read_error then w("    %s read failed      %s", sign("!"), tp.read_error) end
  for _, e in ipairs(tp.errors) do w("    %s error            %s: %s", sign("!"), e.subject or "?", e.message) end
  for _, n in ipairs(tp.notes) do w("    . note             %s", n) end
end

-- How many operations target plan tp holds (a plan already written out by
-- usersync.spool keeps only its destructive ones, for the safety checks).
function M.op_count(tp)
  return tp.spooled and tp.spooled.n or #tp.ops
end

-- The same text as one string (what write_plan_text writes), gathered in
-- chunks of 1,000 lines: never a million small strings alive at once.
function M.plan_text(run_plan, opts)
  local chunks, lines = {}, {}
  M.write_plan_text(run_plan, function(s)
    lines[#lines + 1] = s
    if #lines == 1000 then chunks[#chunks + 1] = table.concat(lines); lines = {} end
  end, opts)
  chunks[#chunks + 1] = table.concat(lines)
  return table.concat(chunks)
end

-- Resolves limits.max_deprovision (max_membership_removals) against the
-- number of managed accounts (memberships).
local function allowed(limit, managed)
  local share = require("usersync.config").parse_share(limit)
  if not share then return math.huge end
  if share.count then return share.count end
  return math.floor(managed * share.percent / 100)
end

-- Reasons to stop before anything destructive, or nil when it is safe.
-- A sync whose source read did not complete, whose deprovisions exceed
-- limits.max_deprovision or whose membership removals exceed
-- limits.max_membership_removals, stops the destructive part of the run
-- (removals included); `force` overrides (after review), never a failed read.
function M.safety(run_plan, opts)
  opts = opts or {}
  local reasons, hard = {}, {}
  for _, s in ipairs(run_plan.syncs) do
    -- After an incomplete read every change that takes something away is
    -- withheld: removals of memberships as well as deprovisions.
    local destructive = 0
    for _, tp in ipairs(s.targets) do
      for _, o in ipairs(tp.ops) do
        if M.DESTRUCTIVE[o.kind] then destructive = destructive + 1 end
      end
    end

    if s.read and s.read.failed then
      -- Nothing was read, so nothing was planned: --force cannot help.
      hard[#hard + 1] = ("sync %q: reading %s failed (%s); nothing was planned for it")
        :format(s.name, tostring(s.source), table.concat(s.read.problems or {}, "; "))
    elseif s.read and s.read.complete == false then
      reasons[#reasons + 1] = ("sync %q: the read did not complete (%s); %s withheld")
        :format(s.name, table.concat(s.read.problems or {}, "; "), plural(destructive, "destructive change"))
    end

    local limit = s.limits and s.limits.max_deprovision
    local rlimit = s.limits and s.limits.max_membership_removals
    for _, tp in ipairs(s.targets) do
      local n = tp.deprovisions or 0
      local managed = tp.linked_accounts or tp.managed_users or 0
      local max = allowed(limit, managed)
      if limit and n > max then
        reasons[#reasons + 1] = ("sync %q, target %s: %s planned, limits.max_deprovision = %s allows %d of %d managed accounts")
          :format(s.name, tp.target, plural(n, "deprovision"), tostring(limit), max, managed)
      end

      -- Membership removals outside deprovisioning (those count above).
      local removals = 0
      for _, o in ipairs(tp.ops) do
        if o.kind == "remove_member" and not o.deprovision then removals = removals + 1 end
      end
      local mm = tp.managed_memberships or 0
      local rmax = allowed(rlimit, mm)
      if rlimit and removals > rmax then
        reasons[#reasons + 1] = ("sync %q, target %s: %s planned, limits.max_membership_removals = %s allows %d of %d managed memberships")
          :format(s.name, tp.target, plural(removals, "membership removal"), tostring(rlimit), rmax, mm)
      end
    end
  end

  if opts.force then reasons = {} end
  for _, r in ipairs(hard) do reasons[#reasons + 1] = r end
  if #reasons == 0 then return nil end
  return reasons, #hard > 0
end

-- Error codes of a source read that failed outright: the credentials were
-- refused, the app or user does not exist, the server cannot be reached.
-- Such a read is a failure (exit 1), not a safety stop (exit 3); a read cut
-- short or holding an invalid record (a server error past its retries, a
-- malformed page) withholds the destructive changes and is a safety stop.
-- (ERESPONSE, an answer that is not what the API returns, is not among them:
-- it also names an invalid record, which withholds like a failed page.)
M.OUTRIGHT = { EAUTH = true, EFORBIDDEN = true, ENOTFOUND = true, ECONFIG = true,
               ECONNREFUSED = true, EDNS = true, ETLS = true, EPROXY = true, EURL = true,
               ETIMEDOUT = true }

-- The sync entries of a plan whose source read failed outright (OUTRIGHT).
function M.failed_reads(run_plan)
  local out = {}
  for _, s in ipairs(run_plan.syncs) do
    if s.read and s.read.code and M.OUTRIGHT[s.read.code] then out[#out + 1] = s end
  end
  return out
end

-- Whether a plan holds something that failed: an outright read failure, a
-- target that could not be read, a conflict or a policy error.
function M.has_failures(run_plan)
  if #M.failed_reads(run_plan) > 0 then return true end
  for _, s in ipairs(run_plan.syncs) do
    for _, tp in ipairs(s.targets) do
      if tp.read_error or #tp.conflicts > 0 or #tp.errors > 0 then return true end
    end
  end
  return false
end

-- Whether a plan changes anything (plan --detailed-exitcode).
function M.has_changes(run_plan)
  for _, s in ipairs(run_plan.syncs) do
    for _, tp in ipairs(s.targets) do
      if M.op_count(tp) > 0 then return true end
    end
  end
  return false
end

-- The exit status of a plan, a sync or an apply (one table for every
-- command): 1 when something failed, else 3 when a safety stop withheld
-- destructive changes, else 0. failed: the apply's own failures (operations,
-- the store).
function M.exit_code(run_plan, stop, failed)
  if failed or M.has_failures(run_plan) then return 1 end
  if stop then return 3 end
  return 0
end

return M
