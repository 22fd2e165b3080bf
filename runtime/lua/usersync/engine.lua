-- usersync.engine: read -> map -> plan -> (safety) -> apply -> record, for
-- `usersync plan`, `apply` and `sync`. The mechanics (HTTP, paging, rate
-- limits, concurrency) live in the C clients; this file opens them and the
-- store, takes the run locks and plans each sync entry target by target.
-- Its parts: usersync.source (Okta reads), usersync.snapshot (target
-- reads), usersync.plan (the planner), usersync.merge (entries sharing a
-- target), usersync.apply (applying and the journal), usersync.state (the
-- store's statements), usersync.memory (the collector while planning).
--
--   local engine = require "usersync.engine"
--   local e = assert(engine.open(cfg, { trigger = "manual" }))
--   local run_plan = assert(e:plan{ user = "alice@example.com" })   -- reads, writes nothing
--   -- or e:plan{ users = { "00u1", "bob@example.com" } }: just those Okta users
--   local summary = e:apply(run_plan, { force = false })              -- exit code in summary.exit
--   e:close()
local http = require "usersync.http"
local target = require "usersync.target"
local plan = require "usersync.plan"
local source = require "usersync.source"
local memory = require "usersync.memory"
local snapshot = require "usersync.snapshot"
local merge = require "usersync.merge"
local policy = require "usersync.policy"
local apply = require "usersync.apply"
local state = require "usersync.state"

local M = {}
local Engine = {}
Engine.__index = Engine

M.EXIT_OK, M.EXIT_FAILED, M.EXIT_SAFETY = apply.EXIT_OK, apply.EXIT_FAILED, apply.EXIT_SAFETY
M.EXIT_USAGE = 2

-- opts: { trigger = "manual"|"schedule"|"event"|"incremental", progress = fn(ev),
--         should_stop = fn() -> true to stop applying (serve's SIGTERM),
--         no_store = true: clients only, the store is not opened (check) }
-- `e.trigger` may be changed between runs (serve reuses one engine).
-- progress events (usersync.progress renders them): { phase = "okta"|"target"|"apply",
--   name, state = "start"|"update"|"done"|"failed", message (start), expected (start: users
--   in scope at the last run, an estimate for the bar), done, total, what,
--   error, code (failed), requests (done), op, ok, info (apply updates) }
function M.open(cfg, opts)
  opts = opts or {}
  local db, err, code
  if not opts.no_store then
    db, err, code = state.open(cfg.state)
    if not db then return nil, ("cannot open the store %s: %s"):format(cfg.state, err), code end
  end
  local self = setmetatable({ cfg = cfg, db = db, trigger = opts.trigger or "manual",
    sources = {}, targets = {}, policies = {}, http = {},
    progress = opts.progress or function() end, should_stop = opts.should_stop }, Engine)
  return self
end

function Engine:close()
  for _, t in pairs(self.targets) do t:close() end
  for _, s in pairs(self.sources) do s:close() end
  for _, h in pairs(self.http) do h:close() end
  self.targets, self.sources, self.http = {}, {}, {}
  if self.db then self.db:close(); self.db = nil end
end

-- One http client per CA file (TLS options belong to the http client),
-- all driven by one libcurl multi handle each.
function Engine:http_client(ca_file, timeout)
  local key = (ca_file or "") .. "|" .. tostring(timeout or "")
  local c = self.http[key]
  if not c then
    c = http.client{ ca_file = ca_file, timeout = timeout or 30,
                     per_host = 16, retries = 4 }
    self.http[key] = c
  end
  return c
end

function Engine:source(name)
  local s = self.sources[name]
  if not s and self.cfg.sources[name].type == "scim" then
    -- pushed to serve's SCIM endpoint: read from the store
    s = require("usersync.scim_source").new(self.db, name, self.cfg.sources[name], self.cfg.state)
    self.sources[name] = s
  elseif not s then
    local scfg = self.cfg.sources[name]
    local opts = {}
    for k, v in pairs(scfg) do opts[k] = v end
    opts.status_map = nil
    s = require("usersync.okta").client(self:http_client(scfg.ca_file, scfg.timeout), opts)
    self.sources[name] = s
  end
  return s
end

function Engine:target(name)
  local t = self.targets[name]
  if not t then
    local tcfg = self.cfg.targets[name]
    t = target.new(self:http_client(tcfg.ca_file, tcfg.timeout), {
      type = tcfg.type, flavour = tcfg.flavour, url = tcfg.url, token = tcfg.token,
      user = tcfg.user or tcfg.application, password = tcfg.password,
      concurrency = tcfg.concurrency, timeout = tcfg.timeout,
      add_to_default_group = tcfg.add_to_default_group, page_size = tcfg.page_size,
      task_wait = tcfg.task_wait,
    })
    self.targets[name] = t
  end
  return t
end

function Engine:policy(s)
  local run = s.limits and s.limits.policy_instructions
  local key = (s.policy or "") .. "\0" .. tostring(run)
  local p = self.policies[key]
  if not p then
    local err
    p, err = policy.load(s.policy, { run_instructions = run })
    if not p then return nil, err end
    self.policies[key] = p
  end
  return p
end

-- The run locks (`sync:NAME`) of the entries, taken before a plan reads
-- anything and held until apply ends (Engine:unlock_entries, or close).
-- Returns true, or nil, a message naming the holder and the store's code
-- ("ELOCKED": another run holds one).
M.LOCK_TTL = apply.LOCK_TTL
function Engine:lock_entries(entries)
  self.held = self.held or {}
  for _, s in ipairs(entries) do
    local ok, err, code = self.db:lock("sync:" .. s.name, { ttl = M.LOCK_TTL })
    if not ok then
      self:unlock_entries()
      if code ~= "ELOCKED" then
        return nil, ("cannot take the lock of sync %q in the store %s: %s; "
          .. "nothing was read or applied")
          :format(s.name, self.db:path(), (tostring(err):gsub("^store: ", ""))), code
      end
      return nil, ("another run of sync %q is in progress (%s); nothing was read or applied")
        :format(s.name, (tostring(err):gsub("^store: ", ""))), code
    end
    self.held[s.name] = true
  end
  self.lock_renewed = os.time()
  return true
end

-- Renews the held locks' leases, at most once a minute (a long read or
-- apply must not let them expire). A renewal that fails is not fatal here:
-- the journal's next write fails the same way and stops the apply.
function Engine:renew_locks(now)
  if not self.held then return end
  now = now or os.time()
  if self.lock_renewed and now - self.lock_renewed < 60 then return end
  self.lock_renewed = now
  for name in pairs(self.held) do
    pcall(self.db.lock, self.db, "sync:" .. name, { ttl = M.LOCK_TTL })
  end
end

function Engine:unlock_entries()
  for name in pairs(self.held or {}) do pcall(self.db.unlock, self.db, "sync:" .. name) end
  self.held = nil
end

-- Plans every sync entry (or the one named). Writes nothing anywhere.
-- opts: { user = login | users = { login or id, ... } [, by_id = true when
-- users are all Okta ids], sync = name, targets = { name, ... } (--target:
-- only these targets of the entries) }.
-- opts.lock (sync, apply): lock the entries first (lock_entries); apply
-- releases them. A lock held by another run: nil, message, exit 1, "ELOCKED".
-- opts.on_target(p) (a plan of one entry): called with each target's plan
-- once planned; opts.sink() then gives the next target's op sink (see
-- plan.build's input.sink; usersync.spool).
-- With user(s) only those Okta users are read and planned, and each target
-- is read only for their accounts (snapshot.read_for).
-- Returns run_plan = { syncs = { ... } } | nil, message, exit code.
function Engine:plan(opts)
  local run_plan, err, code, ecode = self:plan_locked(opts or {})
  snapshot.cancel(self) -- reads started and not taken (the plan stopped early)
  if not run_plan then self:unlock_entries() end
  return run_plan, err, code, ecode
end

-- What a plan of a few users shows as its scope.
local function scope_of(opts, users)
  if opts.user or not users then return opts.user end
  if #users <= 3 then return table.concat(users, ",") end
  return ("%s,%s,... (%d users)"):format(users[1], users[2], #users)
end

-- Entry s limited to the targets in the set `only` (--target): a copy
-- with just those (s.limited = true), or nil when it has none of them.
function M.limit_targets(s, only)
  if not only then return s end
  local targets = {}
  for _, t in ipairs(s.targets) do
    if only[t] then targets[#targets + 1] = t end
  end
  if #targets == 0 then return nil end
  if #targets == #s.targets then return s end
  local copy = {}
  for k, v in pairs(s) do copy[k] = v end
  copy.targets, copy.limited = targets, true
  return copy
end

-- A plan for one entry also plans the entries that share a target with it
-- (and drops their operations at the end: merge.keep_asked). Returns the
-- entries to plan and how many of them plan each target. only: a set of
-- target names (--target): just those targets are planned, entries
-- without any of them not at all.
function Engine:selected_entries(asked, only)
  local wanted = merge.related_entries(self.cfg, asked)
  local selected, uses = {}, {}
  for _, s in ipairs(self.cfg.sync) do
    s = wanted[s.name] and M.limit_targets(s, only) or nil
    if s then
      selected[#selected + 1] = s
      for _, tname in ipairs(s.targets) do uses[tname] = (uses[tname] or 0) + 1 end
    end
  end
  return selected, uses
end

function Engine:plan_locked(opts)
  -- Memory: a shorter GC pause while planning, restored on any exit; full
  -- collections between the phases (memory.settle) so each phase starts
  -- from what is live, not from the garbage of the one before.
  local _ <close> = memory.pause(memory.PLAN_PAUSE)
  local users = opts.users or (opts.user and { opts.user }) or nil
  local only
  for _, t in ipairs(opts.targets or {}) do only = only or {}; only[t] = true end
  local run_plan = { syncs = {}, scope = scope_of(opts, users), targets = opts.targets }

  -- Every plan reads the targets afresh (serve reuses the engine).
  snapshot.cancel(self)
  self.snapshots, self.group_names, self.apps_seen = {}, {}, {}

  -- Memory (100,000 users): a target's snapshot is dropped once the last
  -- sync entry that plans it is done with it (uses), and the data only
  -- other sync entries need (claims, wanted memberships) is kept only when
  -- more than one entry is planned (single).
  local selected, uses = self:selected_entries(opts.sync, only)
  local run = { opts = opts, users = users, uses = uses, single = #selected == 1,
                claimed = {} } -- claimed: target -> lower account -> first sync that maps it

  -- sync and apply (opts.lock): every entry this plan reads is locked before
  -- anything is read, so a second run cannot plan from a view the first
  -- one is changing; a run kept out fails at once and reads nothing.
  if opts.lock then
    local ok, lerr, lcode = self:lock_entries(selected)
    if not ok then return nil, lerr, M.EXIT_FAILED, lcode end
  end

  -- Each run has the policies' whole-run instruction budget afresh; a
  -- policy that spends it (or whose finalizer fails) fails the run.
  for _, p in pairs(self.policies) do p:new_run() end

  -- The whole targets are read at once, and while the source is read
  -- (snapshot.start): one target's read does not wait for another's.
  if not users then
    local names, seen = {}, {}
    for _, s in ipairs(selected) do
      for _, tname in ipairs(s.targets) do
        if not seen[tname] then seen[tname] = true; names[#names + 1] = tname end
      end
    end
    snapshot.start(self, names)
  end

  for _, s in ipairs(selected) do
    local entry, err, code = self:plan_entry(run, s)
    if not entry then return nil, err, code end
    run_plan.syncs[#run_plan.syncs + 1] = entry
  end
  self.snapshots = {}

  merge.plans(run_plan, opts.sync)
  if opts.sync then merge.keep_asked(run_plan, opts.sync) end
  return run_plan
end

function Engine:stopping()
  return self.should_stop and self.should_stop()
end

-- This entry is done with target tname: the last entry to plan it drops
-- its snapshot (then only the entry's `snap` refers to it).
function Engine:release_target(run, tname)
  run.uses[tname] = run.uses[tname] - 1
  if run.uses[tname] == 0 then self.snapshots[tname] = nil end
end

-- Reads the source of sync entry s and plans each of its targets. Returns
-- the entry's plan, or nil, message, exit code.
function Engine:plan_entry(run, s)
  if self:stopping() then return nil, "stop requested", M.EXIT_FAILED end
  local pol, perr = self:policy(s)
  if not pol then return nil, perr, M.EXIT_USAGE end
  if pol:failure() then return nil, pol:failure(), M.EXIT_FAILED end

  -- A run of this sync whose process died is marked interrupted first:
  -- the accounts it was creating are recognised as ours (new_accounts).
  state.mark_interrupted(self.db, s.name)
  memory.settle(run.users, snapshot.turner(self))
  local src = source.read(self, s, pol, run.users, run.opts.by_id)
  memory.settle(run.users, snapshot.turner(self))
  if pol:failure() then return nil, pol:failure(), M.EXIT_FAILED end
  if self:stopping() then return nil, "stop requested", M.EXIT_FAILED end

  local entry = { name = s.name, source = s.source, limits = s.limits, targets = {},
                  only_targets = s.limited and s.targets or nil,
                  users_in_scope = #src.users, unknown_users = src.unknown,
                  read = { complete = src.complete, problems = src.problems,
                           code = src.error and (src.code or "EREAD") } }
  local problems = entry.read.problems

  if not run.users and src.error then
    -- The read failed outright: there is nothing to plan from (an empty
    -- list would deprovision everyone). Nothing is planned for this entry
    -- and --force cannot change that (report.safety).
    entry.read.complete, entry.read.failed = false, true
    for _, tname in ipairs(s.targets) do self:release_target(run, tname) end
    return entry
  end

  -- An empty answer where the last run had users is suspicious.
  local last = not run.users and state.last_in_scope(self.db, s.name)
  if src.complete and #src.users == 0 and last and last > 0 then
    entry.read.complete = false
    problems[#problems + 1] = (self.cfg.sources[s.source].type == "scim"
      and ("no users were pushed to %s (all deleted); the last run had %d"):format(s.source, last)
      or ("Okta returned no users in scope; the last run had %d"):format(last))
  end

  -- Whole targets are planned in the order their reads end (one planned
  -- while the others are still read: snapshot.next_ready); the entry
  -- keeps them, and their problems, in the configured order.
  local todo, planned, notes = {}, {}, {}
  for i = 1, #s.targets do todo[i] = i end
  while #todo > 0 do
    if self:stopping() then return nil, "stop requested", M.EXIT_FAILED end
    local k = 1
    if not run.users then
      -- the last target's links are loaded while its read goes on (one
      -- set held at a time, as when it is loaded as it is planned)
      if #todo == 1 then self:preload_links(run, s, s.targets[todo[1]]) end
      local names = {}
      for j, i in ipairs(todo) do names[j] = s.targets[i] end
      k = snapshot.next_ready(self, names)
      if not k then return nil, "stop requested", M.EXIT_FAILED end
    end
    local i = table.remove(todo, k)
    local tname = s.targets[i]
    local p, err, code = self:plan_target(run, s, pol, src, tname)
    if not p then return nil, err, code end
    local mine = {}
    if p.leads_error then
      mine[#mine + 1] = ("reading project leads in %s failed: %s"):format(tname, p.leads_error)
      p.leads_error = nil
    end
    if p.incomplete then
      mine[#mine + 1] = ("policy errors in include_group for %s"):format(tname)
    end
    planned[i], notes[i] = p, mine
    -- `usersync plan` of one entry writes each target out as it is planned
    -- (usersync.spool, which copies them out in the entry's order):
    -- nothing merges its ops with another entry's.
    if run.opts.on_target and run.single then run.opts.on_target(p) end
    snapshot.turn(self)
  end
  for i = 1, #s.targets do
    for _, msg in ipairs(notes[i]) do
      entry.read.complete = false
      problems[#problems + 1] = msg
    end
    entry.targets[i] = planned[i]
  end
  pol:planned(s) -- the policy's answers kept for this entry's targets
  return entry
end

-- The plan of a target that could not be read: nothing planned (exit 1),
-- an error of that target, not an incomplete source read.
local function unread_plan(tname, ttype, snap)
  return {
    target = tname, target_type = ttype, ops = {}, conflicts = {}, notes = {}, counts = {},
    deprovisions = 0, mapped_keys = {}, new_ids = {}, wanted = {}, active_keys = {}, errors = {},
    read_error = ("reading %s failed, nothing planned for it: %s")
      :format(tname, tostring(snap.error)),
  }
end

-- The target's snapshot for a plan of s: the whole target, or with
-- run.users the accounts these users map to and those linked to them.
function Engine:target_snapshot(run, s, pol, src, tname, links)
  if not run.users then
    memory.settle(nil, snapshot.turner(self))
    local snap = snapshot.read(self, tname)
    memory.settle(nil, snapshot.turner(self))
    self:release_target(run, tname)
    return snap
  end

  local scfg = self.cfg.sources[s.source]
  local names = plan.account_names{
    sync = s, target = { name = tname, type = self.cfg.targets[tname].type,
                flavour = self.cfg.targets[tname].flavour }, policy = pol,
    status_map = source.status_map(scfg), source = { users = src.users, groups = src.groups },
  }
  local ids = {}
  for id in pairs(src.only) do
    local name = links:name(id)
    if name then names[#names + 1] = name; ids[name] = links:id(id) end
  end
  return snapshot.read_for(self, tname, names, ids) -- a linked account by its id (SCIM)
end

-- The planner's input for entry s on target tname (see plan.build).
-- links: a table, or a state.linkset (it holds the link ids and owned
-- memberships too).
function Engine:plan_input(run, s, pol, src, tname, snap, links)
  local db = self.db
  local set = type(links) == "userdata"
  run.claimed[tname] = run.claimed[tname] or {}
  return {
    sync = s, target = { name = tname, type = self.cfg.targets[tname].type,
                flavour = self.cfg.targets[tname].flavour }, policy = pol,
    status_map = source.status_map(self.cfg.sources[s.source]),
    source = { users = src.users, groups = src.groups },
    accounts = snap.accounts, groups = snap.groups,
    links = links, link_ids = not set and state.link_ids(db, s.name, tname) or nil,
    owned_memberships = set and links or state.owned_memberships(db, s.name, tname),
    owned_groups = state.owned_groups(db, tname),
    claimed = run.claimed[tname], only = run.users and src.only or nil,
    new_accounts = state.new_accounts(db, s.name, tname),
    returning = state.returning_groups(db, s.name, tname),
    single = run.single or nil,
    kv = { get = function(ns, key) return db:kv(ns):get(key) end },
  }
end

-- Jira: leaders among the accounts to deprovision need a hand-over; their
-- leads are read once, after the plan. A failed read leaves p.leads_error.
function Engine:hand_over(p, s, tname)
  if not p.leavers then return end
  local names = {}
  for i, l in ipairs(p.leavers) do names[i] = l.account.name end
  local leads, err = self:target(tname):leads(names)
  if not leads then p.leads_error = tostring(err) end
  plan.hand_over(p, leads or {}, s)
end

-- Repeats of creates and adds whose earlier request was not confirmed (it
-- may still land): an "already" answer is then usersync's own.
local function mark_one(o, unconfirmed)
  if (o.kind == "create_user" or o.kind == "add_member") and o.okta_id
      and unconfirmed[state.intent_key(o.kind, o.okta_id, o.group)] then
    rawset(o, "ours", true)
  end
end

local function mark_ours(p, unconfirmed)
  if not (unconfirmed and next(unconfirmed)) then return end
  for _, o in ipairs(p.ops) do mark_one(o, unconfirmed) end
end

-- `usersync plan` of one entry streams a target's ops to its spool as they
-- are planned (run.opts.sink, plan.build's input.sink), marked first.
local function sink_of(run, unconfirmed)
  local sink = run.single and run.opts.on_target and run.opts.sink and run.opts.sink()
  if not sink or not (unconfirmed and next(unconfirmed)) then return sink end
  return function(o) mark_one(o, unconfirmed); sink(o) end
end

-- The links of entry s on target tname (state.linkset), loaded with
-- engine turns while reads still run; preload_links keeps them in run for
-- take_links.
function Engine:preload_links(run, s, tname)
  run.links = run.links or {}
  local key = s.name .. "\0" .. tname
  run.links[key] = run.links[key] or state.linkset(self.db, s.name, tname, snapshot.turner(self))
end

function Engine:take_links(run, s, tname)
  local key = s.name .. "\0" .. tname
  local links = run.links and run.links[key]
  if links then run.links[key] = nil; return links end
  return state.linkset(self.db, s.name, tname, snapshot.turner(self))
end

-- Reads target tname and plans entry s on it. Returns the plan, or nil,
-- message, exit code.
function Engine:plan_target(run, s, pol, src, tname)
  local ttype = self.cfg.targets[tname].type
  local links = self:take_links(run, s, tname) -- compact: 100,000 links
  local snap = self:target_snapshot(run, s, pol, src, tname, links)
  snapshot.turn(self) -- (the other reads still running go on between the steps)

  -- Journal rows of earlier runs whose outcome is unknown (a lost answer,
  -- a kill, a store that could not be written) are settled from what the
  -- target shows now, before ownership is read.
  local unconfirmed
  if snap.complete then
    local ok, settled, more = pcall(state.reconcile, self.db, s.name, tname, snap, run.users ~= nil)
    if not ok or not settled then
      local err = tostring(ok and more or settled)
      return nil, ("cannot record in the store %s: %s"):format(self.db:path(), err), M.EXIT_FAILED
    end
    if settled > 0 then links = state.linkset(self.db, s.name, tname) end
    unconfirmed = more
  end
  if state.remember_ids(self.db, tname, snap.accounts) > 0 then -- SCIM: links learn their account's id
    links = state.linkset(self.db, s.name, tname)
  end

  snapshot.turn(self)
  local input = self:plan_input(run, s, pol, src, tname, snap, links)
  snapshot.turn(self)
  -- Without the target's state nothing can be planned safely.
  snap = snapshot.complete(self, tname, snap, input)
  if not snap.complete then return unread_plan(tname, ttype, snap) end

  input.sink = sink_of(run, unconfirmed)
  local p
  do -- streamed, the plan holds little but the garbage of its ops: a shorter GC pause
    local _ <close> = input.sink and memory.pause(memory.STREAM_PAUSE) or nil
    -- the other targets' reads still running go on while this one is planned
    if not run.users then input.policy = snapshot.pumping(self, pol) end
    p = plan.build(input)
  end
  self:hand_over(p, s, tname)
  if pol:failure() then return nil, pol:failure(), M.EXIT_FAILED end

  p.linked_accounts = #input.links
  mark_ours(p, unconfirmed)
  for _, key in ipairs(p.mapped_keys or {}) do
    if not run.claimed[tname][key] then run.claimed[tname][key] = s.name end
  end
  return p
end

-- Applies a run plan (usersync.apply). opts: { force, command = "sync"|"apply" }.
-- Returns summary = { exit, runs = {id...}, ok, failed, withheld, stop = {reasons} }.
function Engine:apply(run_plan, opts)
  return apply.run(self, run_plan, opts)
end

return M
