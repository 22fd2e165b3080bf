-- usersync.merge: a run that plans several sync entries (multiple sources
-- feeding shared targets) reconciles their plans: an account another entry
-- maps as active is not deprovisioned (nor handed over); a membership
-- another entry wants is not removed; an account no entry maps any more is
-- deprovisioned by one entry only; an account an earlier entry creates is
-- linked, not created again.
--
--   local merge = require "usersync.merge"
--   local names = merge.related_entries(cfg, "main")  -- { [entry] = true } to plan
--   merge.plans(run_plan, opts.sync)    -- reconciles run_plan.syncs in place
--   merge.keep_asked(run_plan, "main")  -- drops the entries planned for context
--
-- It reads what plan.build leaves for this (p.active_keys, p.wanted) and
-- rewrites p.ops and p.notes; it reads and writes nothing else.
local plan = require "usersync.plan"

local M = {}

-- The names of the sync entries a plan for entry `name` reads: that entry
-- and every entry sharing a target with it (all entries when name is nil).
-- Only then does the merge see who else still claims an account.
function M.related_entries(cfg, name)
  local out = {}
  if not name then
    for _, s in ipairs(cfg.sync) do out[s.name] = true end
    return out
  end

  local targets = {}
  for _, s in ipairs(cfg.sync) do
    if s.name == name then
      out[name] = true
      for _, t in ipairs(s.targets) do targets[t] = true end
    end
  end
  for _, s in ipairs(cfg.sync) do
    for _, t in ipairs(s.targets) do
      if targets[t] then out[s.name] = true end
    end
  end
  return out
end

-- t[k], a new table there if there was none.
local function sub(t, k)
  local v = t[k]
  if v == nil then v = {}; t[k] = v end
  return v
end

-- A name in `set` other than `me`, or nil.
local function other(set, me)
  for name in pairs(set or {}) do if name ~= me then return name end end
end

-- The lowercase account an op is about.
local function account_of(o)
  return (o.name or o.subject or ""):lower()
end

-- Which entries map each account as active and want each membership:
-- active[target][account] and wants[target][account][group] are sets of
-- entry names (lowercase accounts and groups).
local function claims(run_plan)
  local active, wants = {}, {}
  for _, entry in ipairs(run_plan.syncs) do
    for _, p in ipairs(entry.targets) do
      local act, want = sub(active, p.target), sub(wants, p.target)
      for k in pairs(p.active_keys or {}) do sub(act, k)[entry.name] = true end
      for k, groups in pairs(p.wanted or {}) do
        local of = sub(want, k)
        for gk in pairs(groups) do sub(of, gk)[entry.name] = true end
      end
    end
  end
  return active, wants
end

-- Who deprovisions each account no entry maps any more: one entry (the
-- asked one with --sync, else the first that plans it), not once per
-- entry linked to it. Returns deprov[target][account] = entry name.
local function deprovisioners(run_plan, active, asked)
  local deprov = {}
  for _, entry in ipairs(run_plan.syncs) do
    for _, p in ipairs(entry.targets) do
      local by, act = sub(deprov, p.target), active[p.target] or {}
      for _, o in ipairs(p.ops) do
        local k = account_of(o)
        if o.deprovision and not other(act[k], entry.name)
            and (not by[k] or (asked and entry.name == asked)) then
          by[k] = entry.name
        end
      end
    end
  end
  return deprov
end

local function by_rank(x, y)
  local rx, ry = plan.RANK[x.kind], plan.RANK[y.kind]
  if rx ~= ry then return rx < ry end
  return (x.seq or 0) < (y.seq or 0)
end

-- The ops of plan p (of entry `me`) that stay, with a note for each one
-- dropped. creates[account] names the entry creating it in this run.
local function merge_plan(p, me, seen, creates, asked)
  local active, wants = seen.active[p.target] or {}, seen.wants[p.target] or {}
  local deprov = seen.deprov[p.target]
  local keep = {}
  local function note(fmt, ...) p.notes[#p.notes + 1] = fmt:format(...) end

  for _, o in ipairs(p.ops) do
    local k = account_of(o)
    local owner = o.deprovision and other(active[k], me)
    local wanted_by = o.kind == "remove_member"
      and other(wants[k] and wants[k][(o.group or ""):lower()], me)
    local deprov_owner = o.deprovision and deprov[k]

    if owner then
      note("%s %s: the account is still in scope of sync %q; not applied", o.kind, o.subject, owner)
    elseif deprov_owner and deprov_owner ~= me then
      note("%s %s: deprovisioned by sync %q in this run", o.kind, o.subject, deprov_owner)
    elseif wanted_by then
      note("remove %s from %s: sync %q still puts it there; not applied",
        o.subject, o.group, wanted_by)
    elseif o.kind == "create_user" and creates[k] then
      keep[#keep + 1] = { kind = "link", target = o.target, subject = o.name, name = o.name,
                          okta_id = o.okta_id,
                          reason = ("created by sync %q in this run"):format(creates[k]) }
    else
      -- (an entry planned only for context creates nothing)
      if o.kind == "create_user" and (not asked or asked == me) then creates[k] = me end
      keep[#keep + 1] = o
    end
  end

  table.sort(keep, by_rank)
  p.ops = keep
  plan.recount(p)
end

-- Reconciles the plans of every entry of run_plan (asked: the entry
-- --sync named, or nil), in place.
function M.plans(run_plan, asked)
  if #run_plan.syncs < 2 then return run_plan end
  local active, wants = claims(run_plan)
  local seen = { active = active, wants = wants, deprov = deprovisioners(run_plan, active, asked) }
  local creates = {}
  for _, entry in ipairs(run_plan.syncs) do
    for _, p in ipairs(entry.targets) do
      merge_plan(p, entry.name, seen, sub(creates, p.target), asked)
    end
  end
  return run_plan
end

-- Keeps only the asked entry: the entries planned for context had their
-- claims used by M.plans; an incomplete read of one makes the asked
-- entry's read incomplete too (it could not protect what it claims).
function M.keep_asked(run_plan, asked)
  local keep, problems = {}, {}
  for _, entry in ipairs(run_plan.syncs) do
    if entry.name == asked then
      keep[#keep + 1] = entry
    elseif entry.read.complete == false then
      problems[#problems + 1] = ("sync %q shares a target and its read did not complete")
        :format(entry.name)
    end
  end

  for _, entry in ipairs(keep) do
    if #problems > 0 and not entry.read.failed then
      entry.read.complete = false
      for _, msg in ipairs(problems) do entry.read.problems[#entry.read.problems + 1] = msg end
    end
  end
  run_plan.syncs = keep
  return run_plan
end

return M
