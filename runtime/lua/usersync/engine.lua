-- usersync.engine: read -> map -> plan -> (safety) -> apply -> record, for
-- `usersync plan`, `apply` and `sync`. The mechanics
-- (HTTP, paging, rate limits, concurrency) live in the C clients; this file
-- only orchestrates them and asks the policy.
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
local policy = require "usersync.policy"
local report = require "usersync.report"
local state = require "usersync.state"
local json = require "usersync.json"
local log = require "usersync.log"
local config = require "usersync.config"

-- A store call that must not raise: returns its result, or nil and the
-- message (disk full, I/O error, ...).
local function journal(fn, ...)
  local ok, a, b = pcall(fn, ...)
  if not ok then return nil, tostring(a) end
  if a == nil then return nil, tostring(b) end
  return a
end

local M = {}
local Engine = {}
Engine.__index = Engine

M.EXIT_OK, M.EXIT_FAILED, M.EXIT_USAGE, M.EXIT_SAFETY = 0, 1, 2, 3

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
    sources = {}, targets = {}, policies = {}, http = {}, progress = opts.progress or function() end,
    should_stop = opts.should_stop }, Engine)
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
    c = http.client{ ca_file = ca_file, timeout = timeout and config.parse_duration(timeout) or 30,
                     per_host = 16, retries = 4 }
    self.http[key] = c
  end
  return c
end

function Engine:source(name)
  local s = self.sources[name]
  if not s then
    local scfg = self.cfg.sources[name]
    local opts = {}
    for k, v in pairs(scfg) do opts[k] = v end
    opts.timeout = scfg.timeout and config.parse_duration(scfg.timeout) or nil
    opts.max_wait = scfg.max_wait and config.parse_duration(scfg.max_wait) or nil
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
      type = tcfg.type, url = tcfg.url, token = tcfg.token, user = tcfg.user, password = tcfg.password,
      concurrency = tcfg.concurrency, timeout = tcfg.timeout and config.parse_duration(tcfg.timeout) or nil,
      add_to_default_group = tcfg.add_to_default_group, page_size = tcfg.page_size,
      task_wait = tcfg.task_wait and config.parse_duration(tcfg.task_wait) or nil,
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

local function status_map(scfg)
  local m = {}
  for k, v in pairs(plan.STATUS) do m[k] = v end
  for k, v in pairs(scfg.status_map or {}) do m[k] = v end
  return m
end

-- Okta ids linked (on any target of sync entry s) to an account named login.
function Engine:linked_ids(s, login)
  local ids, seen = {}, {}
  for _, tname in ipairs(s.targets) do
    for id, acct in pairs(state.links(self.db, s.name, tname)) do
      if acct:lower() == login:lower() and not seen[id] then seen[id] = true; ids[#ids + 1] = id end
    end
  end
  return ids
end

-- Reads the source of one sync entry: users in scope with their groups.
-- With `only_users` (a list of logins or ids), only those users (and only
-- when in scope; `only` is then the set of Okta ids the plan may touch).
-- Returns { users, groups, complete, problems [, only] }.
function Engine:read_source(s, pol, only_users, by_id)
  local src = self:source(s.source)
  local scfg = self.cfg.sources[s.source]
  local ctxs = {}
  for _, tname in ipairs(s.targets) do
    ctxs[#ctxs + 1] = { sync = s.name, target = tname, target_type = self.cfg.targets[tname].type, settings = s,
                        is_active = function() return true end, kv = { get = function() return nil end } }
  end
  -- A group counts for the read when it counts for any target of the sync.
  local group_errors = {}
  local function include(g)
    for _, ctx in ipairs(ctxs) do
      local ok, err = pol:include_group(g, ctx)
      if ok then return true end
      if ok == nil then
        group_errors[#group_errors + 1] = ("include_group(%s): %s"):format(tostring(g.profile and g.profile.name or g.id), err)
        return true -- read its members anyway; the planner reports the error
      end
    end
    return false
  end
  if only_users then
    return self:read_users(src, scfg, include, only_users, s, by_id)
  end
  self.progress{ phase = "okta", name = s.source, state = "start", expected = self:last_in_scope(s.name),
    message = ("reading %s (%s)"):format(s.source, scfg.app_id and ("app " .. scfg.app_id) or "all users") }
  local snap, err, code, partial = src:scope{ include = include, progress = function(done, total, what)
    -- A stop request (serve's SIGTERM) ends a long read early.
    if self.should_stop and self.should_stop() then error("stop requested", 0) end
    self:renew_locks()
    self.progress{ phase = "okta", name = s.source, state = "update", done = done, total = total, what = what }
  end }
  self.progress{ phase = "okta", name = s.source, state = snap and "done" or "failed", error = err, code = code,
    requests = snap and snap.requests }
  if not snap then
    local problems = {}
    for _, p in ipairs(partial and partial.problems or {}) do problems[#problems + 1] = p.message or tostring(p) end
    if #problems == 0 then problems[1] = err end
    return { users = {}, groups = {}, complete = false, problems = problems, error = err, code = code }
  end
  local problems = {}
  for _, p in ipairs(snap.problems or {}) do problems[#problems + 1] = p.message or tostring(p) end
  for _, e in ipairs(group_errors) do problems[#problems + 1] = e end
  return { users = snap.users, groups = snap.groups, complete = snap.complete ~= false and #group_errors == 0,
           problems = problems, requests = snap.requests }
end

-- A few users by login or id (--user, event hooks, the System Log poll):
-- each read as read_one_user does, 3 requests per user (user, app
-- assignment, groups); with by_id (Okta ids, as events name users) and an
-- app, 2 (read_app_user_by_id). `only` holds the Okta ids of the users read and of
-- the accounts linked to a login or id Okta no longer knows (those leave
-- scope).
function Engine:read_users(src, scfg, include, list, s, by_id)
  local out = { users = {}, groups = {}, complete = true, problems = {}, only = {} }
  local seen = {}
  for _, login in ipairs(list) do
    local r
    if by_id and scfg.app_id then
      r = self:read_app_user_by_id(src, scfg, include, login, s)
    else
      r = self:read_one_user(src, scfg, include, login, s)
    end
    for _, u in ipairs(r.users) do
      if not seen[u.id] then seen[u.id] = true; out.users[#out.users + 1] = u end
    end
    for id, g in pairs(r.groups) do out.groups[id] = g end
    if not r.complete then out.complete = false end
    for _, p in ipairs(r.problems) do out.problems[#out.problems + 1] = p end
    if r.error and not out.error then out.error, out.code = r.error, r.code end
    if r.only_id then out.only[r.only_id] = true end
    if r.only_missing then
      -- An id Okta no longer has (hard-deleted) is its own link key; a login
      -- is matched against the linked account names.
      out.only[r.only_missing] = true
      local linked = false
      for _, tname in ipairs(s.targets) do
        for id, acct in pairs(state.links(self.db, s.name, tname)) do
          if id == r.only_missing then linked = true end
          if not by_id and acct:lower() == r.only_missing:lower() then out.only[id] = true; linked = true end
        end
      end
      -- (--user naming nothing: a usage error of the command line)
      if not linked then out.unknown = out.unknown or {}; out.unknown[#out.unknown + 1] = r.only_missing end
    end
  end
  return out
end

-- --user LOGIN: the user by id or login, their groups, and whether the app
-- assigns them. A user not found, or not assigned, reads as out of scope.
function Engine:read_one_user(src, scfg, include, login, s)
  local u, err, code = src:user(login)
  if not u and code == "OKTA_NOT_FOUND" then
    -- Not found by that login: it may be the old login of a linked account
    -- whose Okta user was renamed. Each candidate is read by its Okta id;
    -- only ids Okta no longer has are out of scope.
    for _, id in ipairs(self:linked_ids(s, login)) do
      local by_id, _, c2 = src:user(id)
      if by_id then u = by_id; break end
      if c2 ~= "OKTA_NOT_FOUND" then
        return { users = {}, groups = {}, complete = false, problems = { "reading Okta user " .. id .. " failed" } }
      end
    end
    if not u then
      return { users = {}, groups = {}, complete = true, problems = {}, only_missing = login }
    end
  end
  if not u then
    if code == "OKTA_NOT_FOUND" then
      return { users = {}, groups = {}, complete = true, problems = {}, only_missing = login }
    end
    return { users = {}, groups = {}, complete = false, problems = { err }, error = err, code = code }
  end
  if scfg.app_id then
    local assigned, aerr, acode = src:app_user(scfg.app_id, u.id)
    if not assigned and acode ~= "OKTA_NOT_FOUND" then
      return { users = {}, groups = {}, complete = false, problems = { aerr }, error = aerr, code = acode }
    end
    if not assigned then
      local gone = self:app_missing(src, scfg)
      if gone then return gone end
      return { users = {}, groups = {}, complete = true, problems = {}, only_id = u.id }
    end
  elseif scfg.filter or scfg.search then
    -- The source's scope is an expression: this user is in it when the
    -- same expression, narrowed to its id, finds it (1 request).
    local key = scfg.search and "search" or "filter"
    local found, ferr, fcode = src:users{ [key] = ("(%s) and id eq \"%s\""):format(scfg[key], u.id) }
    if not found then
      return { users = {}, groups = {}, complete = false, problems = { ferr }, error = ferr, code = fcode }
    end
    if #found == 0 then
      return { users = {}, groups = {}, complete = true, problems = {}, only_id = u.id }
    end
  end
  return self:read_user_groups(src, include, u)
end

-- After a 404 for an app assignment: nil when the app exists (the user is
-- simply not assigned), else an incomplete read — a deleted or mistyped
-- app must never read as "everybody left". Asked once per plan and source.
function Engine:app_missing(src, scfg)
  self.apps_seen = self.apps_seen or {}
  local seen = self.apps_seen[scfg.app_id]
  if seen == nil then
    local app, err, code = src:app(scfg.app_id)
    if app then
      seen = false
    elseif code == "OKTA_NOT_FOUND" then
      seen = ("the Okta app %s does not exist (deleted, or a wrong app_id)"):format(scfg.app_id)
    else
      return { users = {}, groups = {}, complete = false, problems = { err }, error = err, code = code }
    end
    self.apps_seen[scfg.app_id] = seen
  end
  if seen then return { users = {}, groups = {}, complete = false, problems = { seen }, error = seen, code = "OKTA_NOT_FOUND" } end
  return nil
end

-- The read of one in-scope user `u`, completed with its counted groups.
function Engine:read_user_groups(src, include, u)
  local groups, gerr, gcode = src:user_groups(u.id)
  if not groups then
    return { users = {}, groups = {}, complete = false, problems = { gerr }, error = gerr, code = gcode }
  end
  local counted, ids = {}, {}
  for _, g in ipairs(groups) do
    if include(g) then counted[g.id] = g; ids[#ids + 1] = g.id end
  end
  u.groups = ids
  return { users = { u }, groups = counted, complete = true, problems = {}, only_id = u.id }
end

-- One user by Okta id in an app's scope: the app assignment with the user
-- embedded (1 request) and its groups (1 more). Not assigned, deactivated
-- (Okta drops a DEPROVISIONED user's assignments) or deleted all read as
-- out of scope.
function Engine:read_app_user_by_id(src, scfg, include, id, s)
  local au, err, code = src:app_user(scfg.app_id, id, { expand = "user" })
  if not au then
    if code == "OKTA_NOT_FOUND" then
      return self:app_missing(src, scfg) or { users = {}, groups = {}, complete = true, problems = {}, only_missing = id }
    end
    return { users = {}, groups = {}, complete = false, problems = { err }, error = err, code = code }
  end
  local u = au._embedded and au._embedded.user
  if type(u) ~= "table" or u.id ~= id then return self:read_one_user(src, scfg, include, id, s) end
  return self:read_user_groups(src, include, u)
end

-- Reads a target once per run (shared by every sync entry that uses it).
function Engine:read_target(name)
  self.snapshots = self.snapshots or {}
  local snap = self.snapshots[name]
  if snap then return snap end
  self.progress{ phase = "target", name = name, state = "start", message = "reading " .. name }
  local t = self:target(name)
  local s, err, code = t:snapshot{ progress = function(done, total, what)
    if self.should_stop and self.should_stop() then error("stop requested", 0) end
    self:renew_locks()
    self.progress{ phase = "target", name = name, state = "update", done = done, total = total, what = what }
  end }
  self.progress{ phase = "target", name = name, state = s and "done" or "failed", error = err, code = code,
    requests = s and s.requests }
  if not s then
    snap = { complete = false, error = err, code = code, accounts = {}, groups = {} }
  else
    snap = s
    -- a cut-short group list comes without memberships (complete_groups)
    snap.memberships_unknown = s.groups_partial
  end
  self.snapshots[name] = snap
  return snap
end

-- Reads just the named accounts of a target (each with its groups) and
-- its group names: what a plan for a few users needs, 1 request per name
-- plus the group listing. An account that does not exist is simply absent;
-- any other failure makes the read incomplete.
function Engine:read_target_for(name, names)
  local t = self:target(name)
  self.group_names = self.group_names or {}
  local groups = self.group_names[name]
  local partial = self.group_names[name .. "\31partial"]
  if not groups then
    groups = {}
    local ok, err, code = t:groups(function(page)
      for _, g in ipairs(page) do groups[#groups + 1] = g end
    end)
    -- ETRUNCATED: the server gave part of its groups; the ones needed are
    -- looked up by name (complete_groups)
    if not ok and code ~= "ETRUNCATED" then return { complete = false, error = err, code = code, accounts = {}, groups = {} } end
    partial = not ok or nil
    self.group_names[name], self.group_names[name .. "\31partial"] = groups, partial
  end
  local accounts, seen, unknown = {}, {}, nil
  for _, n in ipairs(names) do
    local key = n:lower()
    if not seen[key] then
      seen[key] = true
      local a, err, code = t:get(n)
      if a then
        accounts[#accounts + 1] = a
        unknown = unknown or a.groups == nil -- the server did not tell its groups
      elseif code ~= "ENOTFOUND" then
        return { complete = false, error = err, code = code, accounts = {}, groups = {} }
      end
    end
  end
  return { complete = true, accounts = accounts, groups = groups, groups_partial = partial,
           memberships_unknown = unknown }
end

-- The target groups a plan of `input` can touch: those the policy gives
-- (found by a first plan with a policy that notes them), the configured
-- map, and the groups and memberships the sync owns.
local function needed_groups(input)
  local out = {}
  local function add(g) if type(g) == "string" and not out[g:lower()] then out[g:lower()] = g end end
  local pol = input.policy
  local rec = setmetatable({}, { __index = pol })
  function rec:groups(...)
    local r, e = pol:groups(...)
    for _, g in ipairs(r or {}) do add(g) end
    return r, e
  end
  function rec:default_groups(...)
    local r, e = pol:default_groups(...)
    for _, g in ipairs(r or {}) do add(g) end
    return r, e
  end
  plan.build(setmetatable({ policy = rec }, { __index = input }))
  for _, v in pairs((input.sync.groups or {}).map or {}) do
    for _, g in ipairs(type(v) == "table" and v or { v }) do add(g) end
  end
  for g in pairs(input.owned_groups or {}) do add(g) end
  for g in pairs(input.owned_memberships or {}) do add(g) end
  return out
end

-- A target read that could not list every group (snap.groups_partial) or
-- tell every account's groups (snap.memberships_unknown; a Jira that cut
-- its groups picker short or ignores expand=groups) is completed with what
-- the plan needs: each needed group is read by name, its members when
-- memberships are unknown, else whether it exists. Groups no plan touches
-- are never read. Returns true, or nil, err, code (a read failure of the
-- target, never a policy error).
function Engine:complete_groups(tname, snap, input)
  if not (snap.groups_partial or snap.memberships_unknown) then return true end
  local t = self:target(tname)
  snap.looked_up = snap.looked_up or {}
  local known, by = {}, {}
  for _, g in ipairs(snap.groups) do known[g:lower()] = true end
  for _, a in ipairs(snap.accounts) do by[a.name:lower()] = a end
  local need = needed_groups(input)
  local keys = {}
  for k in pairs(need) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local g = need[k]
    if not snap.looked_up[k] and (snap.memberships_unknown or not known[k]) then
      local exists, err, code
      if snap.memberships_unknown then
        local ok
        ok, err, code = t:members(g, function(page)
          for _, m in ipairs(page) do
            local a = by[m.name:lower()]
            if a then
              a.groups = a.groups or {}
              local has = false
              for _, x in ipairs(a.groups) do has = has or x:lower() == k end
              if not has then a.groups[#a.groups + 1] = g end
            end
          end
        end)
        exists = ok or (code == "ENOTFOUND" and false) or nil
      else
        exists, err, code = t:group_exists(g)
      end
      if exists == nil then return nil, err, code end
      snap.looked_up[k] = true
      if exists and not known[k] then snap.groups[#snap.groups + 1] = g; known[k] = true end
    end
  end
  for _, a in ipairs(snap.accounts) do a.groups = a.groups or {} end
  return true
end

-- The GC pause while planning (Lua's default: 200, a heap twice what is
-- live before a cycle): 150 keeps a 100,000-user plan's peak lower at a few
-- per cent more CPU.
M.GC_PAUSE = 150

-- A full collection between two phases of a whole-org plan (a plan for a
-- few users, `few`, has too little garbage to be worth one).
local function settle(few)
  if not few then collectgarbage() end
end

local function count_keys(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- The last completed run's number of users in scope (to spot an empty read).
function Engine:last_in_scope(sync_name)
  local row = self.db:first([[SELECT counts FROM runs WHERE sync = ? AND outcome IN ('ok', 'partial')
      AND command IN ('sync', 'apply') AND scope IS NULL ORDER BY id DESC LIMIT 1]], sync_name)
  local counts = row and row.counts and json.decode(row.counts)
  return counts and counts.users_in_scope
end

-- The run locks (`sync:NAME`) of the entries, taken before a plan reads
-- anything and held until apply ends (Engine:unlock_entries, or close).
-- Returns true, or nil and a message naming the holder.
M.LOCK_TTL = 600
function Engine:lock_entries(entries)
  self.held = self.held or {}
  for _, s in ipairs(entries) do
    local ok, err, code = self.db:lock("sync:" .. s.name, { ttl = M.LOCK_TTL })
    if not ok then
      self:unlock_entries()
      if code ~= "ELOCKED" then
        return nil, ("cannot take the lock of sync %q in the store %s: %s; nothing was read or applied")
          :format(s.name, self.db:path(), (tostring(err):gsub("^store: ", "")))
      end
      return nil, ("another run of sync %q is in progress (%s); nothing was read or applied")
        :format(s.name, (tostring(err):gsub("^store: ", "")))
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
  for name in pairs(self.held) do pcall(self.db.lock, self.db, "sync:" .. name, { ttl = M.LOCK_TTL }) end
end

function Engine:unlock_entries()
  for name in pairs(self.held or {}) do pcall(self.db.unlock, self.db, "sync:" .. name) end
  self.held = nil
end

-- Plans every sync entry (or the one named). Writes nothing anywhere.
-- opts: { user = login | users = { login or id, ... } [, by_id = true when
-- users are all Okta ids], sync = name }.
-- opts.lock (sync, apply): lock the entries first (lock_entries); apply
-- releases them.
-- With user(s) only those Okta users are read and planned, and each target
-- is read only for their accounts (read_target_for).
-- Returns run_plan = { syncs = { ... } } | nil, message, exit code.
function Engine:plan(opts)
  local run_plan, err, code = self:plan_locked(opts or {})
  if not run_plan then self:unlock_entries() end
  return run_plan, err, code
end

function Engine:plan_locked(opts)
  -- Memory: a shorter GC pause while planning, restored on any
  -- exit; full collections between the phases (settle) so each phase starts
  -- from what is live, not from the garbage of the one before.
  local _ <close> = plan.gc_pause(M.GC_PAUSE)
  local users = opts.users or (opts.user and { opts.user }) or nil
  local scope = opts.user
  if not scope and users then
    scope = #users <= 3 and table.concat(users, ",") or ("%s,%s,... (%d users)"):format(users[1], users[2], #users)
  end
  local run_plan = { syncs = {}, scope = scope }
  -- Every plan reads the targets afresh (serve reuses the engine).
  self.snapshots, self.group_names, self.apps_seen = {}, {}, {}
  local claimed = {}      -- target -> lower account -> first sync that maps it
  -- Memory (100,000 users): a target's snapshot is dropped once
  -- the last sync entry that plans it is done with it, and the data only
  -- other sync entries need (claims, wanted memberships) is kept only when
  -- more than one entry is planned.
  -- A plan for one entry also plans the entries that share a target with
  -- it (and drops their operations at the end): only then does the
  -- multiple-sources rule below see who else still claims an account.
  local wanted = M.related_entries(self.cfg, opts.sync)
  local stopping = function() return self.should_stop and self.should_stop() end
  local selected, uses = {}, {}
  for _, s in ipairs(self.cfg.sync) do
    if wanted[s.name] then
      selected[#selected + 1] = s
      for _, tname in ipairs(s.targets) do uses[tname] = (uses[tname] or 0) + 1 end
    end
  end
  local single = #selected == 1
  -- sync and apply (opts.lock): every entry this plan reads is locked before
  -- anything is read, so a second run cannot plan from a view the first
  -- one is changing; a run kept out fails at once and reads nothing.
  if opts.lock then
    local ok, lerr = self:lock_entries(selected)
    if not ok then return nil, lerr, M.EXIT_FAILED end
  end
  -- Each run has the policies' whole-run instruction budget afresh; a
  -- policy that spends it (or whose finalizer fails) fails the run.
  for _, p in pairs(self.policies) do p:new_run() end
  for _, s in ipairs(selected) do
    if stopping() then return nil, "stop requested", M.EXIT_FAILED end
    local pol, perr = self:policy(s)
    if not pol then return nil, perr, M.EXIT_USAGE end
    if pol:failure() then return nil, pol:failure(), M.EXIT_FAILED end
    -- A run of this sync whose process died is marked interrupted first:
    -- the accounts it was creating are recognised as ours (new_accounts).
    state.mark_interrupted(self.db, s.name)
    local scfg = self.cfg.sources[s.source]
    settle(users)
    local src = self:read_source(s, pol, users, opts.by_id)
    settle(users)
    if pol:failure() then return nil, pol:failure(), M.EXIT_FAILED end
    if stopping() then return nil, "stop requested", M.EXIT_FAILED end
    local entry = { name = s.name, source = s.source, limits = s.limits, targets = {},
                    users_in_scope = #src.users, unknown_users = src.unknown,
                    read = { complete = src.complete, problems = src.problems, code = src.error and (src.code or "EREAD") } }
    if not users and src.error then
      -- The read failed outright: there is nothing to plan from (an empty
      -- list would deprovision everyone). Nothing is planned for this entry
      -- and --force cannot change that (report.safety).
      entry.read.complete, entry.read.failed = false, true
      for _, tname in ipairs(s.targets) do
        uses[tname] = uses[tname] - 1
        if uses[tname] == 0 then self.snapshots[tname] = nil end
      end
      run_plan.syncs[#run_plan.syncs + 1] = entry
      goto next_sync
    end
    -- An empty answer where the last run had users is suspicious.
    local last = not users and self:last_in_scope(s.name)
    if src.complete and #src.users == 0 and last and last > 0 then
      entry.read.complete = false
      entry.read.problems[#entry.read.problems + 1] = ("Okta returned no users in scope; the last run had %d"):format(last)
    end
    local only = users and src.only or nil
    for _, tname in ipairs(s.targets) do
      if stopping() then return nil, "stop requested", M.EXIT_FAILED end
      local tcfg = self.cfg.targets[tname]
      local links = state.links(self.db, s.name, tname)
      local snap
      if users then
        -- The accounts these users map to, and those linked to them.
        local names = plan.account_names{ sync = s, target = { name = tname, type = tcfg.type }, policy = pol,
          status_map = status_map(scfg), source = { users = src.users, groups = src.groups } }
        for id in pairs(only) do
          if links[id] then names[#names + 1] = links[id] end
        end
        self.progress{ phase = "target", name = tname, state = "start",
          message = ("reading %d account%s in %s"):format(#names, #names == 1 and "" or "s", tname) }
        snap = self:read_target_for(tname, names)
        self.progress{ phase = "target", name = tname, state = snap.complete and "done" or "failed",
          error = snap.error, code = snap.code }
      else
        settle()
        snap = self:read_target(tname)
        settle()
        -- the last entry to plan this target: `snap` is its only reference now
        uses[tname] = uses[tname] - 1
        if uses[tname] == 0 then self.snapshots[tname] = nil end
      end
      -- Journal rows of earlier runs whose outcome is unknown (a lost
      -- answer, a kill, a store that could not be written) are settled
      -- from what the target shows now, before ownership is read.
      local unconfirmed
      if snap.complete then
        local ok, settled, more = pcall(state.reconcile, self.db, s.name, tname, snap, users ~= nil)
        if not ok or not settled then
          return nil, ("cannot record in the store %s: %s"):format(self.db:path(), tostring(ok and more or settled)), M.EXIT_FAILED
        end
        if settled > 0 then links = state.links(self.db, s.name, tname) end
        unconfirmed = more
      end
      -- A target that cannot be read is an error of that target (exit 1,
      -- nothing planned for it), not an incomplete source read.
      claimed[tname] = claimed[tname] or {}
      local input = {
        sync = s, target = { name = tname, type = tcfg.type }, policy = pol,
        status_map = status_map(scfg),
        source = { users = src.users, groups = src.groups },
        accounts = snap.accounts, groups = snap.groups,
        links = links,
        owned_memberships = state.owned_memberships(self.db, s.name, tname),
        owned_groups = state.owned_groups(self.db, tname),
        claimed = claimed[tname], only = only,
        new_accounts = state.new_accounts(self.db, s.name, tname),
        returning = state.returning_groups(self.db, s.name, tname),
        single = single or nil,
      }
      input.kv = { get = function(ns, key) return self.db:kv(ns):get(key) end }
      if snap.complete then
        local ok, err, code = self:complete_groups(tname, snap, input)
        if not ok then snap = { complete = false, error = err, code = code, accounts = {}, groups = {} } end
      end
      if not snap.complete then
        -- Without the target's state nothing can be planned safely. A read
        -- failure of the target, not a policy error (report, apply).
        local p = { target = tname, target_type = tcfg.type, ops = {}, conflicts = {}, notes = {}, counts = {},
                    deprovisions = 0, mapped_keys = {}, new_ids = {}, wanted = {}, active_keys = {}, errors = {},
                    read_error = ("reading %s failed, nothing planned for it: %s"):format(tname, tostring(snap.error)) }
        entry.targets[#entry.targets + 1] = p
        goto next_target
      end
      local p = plan.build(input)
      -- Jira: leaders among the accounts to deprovision need a hand-over.
      local leavers = {}
      for _, o in ipairs(p.ops) do
        if o.kind == "deactivate_user" or o.kind == "delete_user" then leavers[#leavers + 1] = o.name end
      end
      if #leavers > 0 and plan.CAPS[tcfg.type] and plan.CAPS[tcfg.type].leads then
        local leads, lerr = self:target(tname):leads(leavers)
        if not leads then
          entry.read.complete = false
          entry.read.problems[#entry.read.problems + 1] = ("reading project leads in %s failed: %s"):format(tname, tostring(lerr))
        else
          input.leads = leads
          p = plan.build(input)
        end
      end
      if pol:failure() then return nil, pol:failure(), M.EXIT_FAILED end
      p.linked_accounts = count_keys(input.links)
      -- Repeats of creates and adds whose earlier request was not confirmed
      -- (it may still land): an "already" answer is then usersync's own.
      if unconfirmed and next(unconfirmed) then
        for _, o in ipairs(p.ops) do
          if (o.kind == "create_user" or o.kind == "add_member") and o.okta_id
              and unconfirmed[state.intent_key(o.kind, o.okta_id, o.group)] then
            rawset(o, "ours", true)
          end
        end
      end
      for _, key in ipairs(p.mapped_keys or {}) do
        if not claimed[tname][key] then claimed[tname][key] = s.name end
      end
      if p.incomplete then
        entry.read.complete = false
        entry.read.problems[#entry.read.problems + 1] = ("policy errors in include_group for %s"):format(tname)
      end
      entry.targets[#entry.targets + 1] = p
      ::next_target::
    end
    run_plan.syncs[#run_plan.syncs + 1] = entry
    ::next_sync::
  end
  self.snapshots = {}
  -- Multiple sources: an account another entry maps as active
  -- is not deprovisioned (nor handed over); a membership another entry wants
  -- is not removed; an account an earlier entry creates is linked, not
  -- created again.
  if #run_plan.syncs > 1 then
    local active_by, wants_by, creates = {}, {}, {}
    for _, entry in ipairs(run_plan.syncs) do
      for _, p in ipairs(entry.targets) do
        for k in pairs(p.active_keys or {}) do
          active_by[p.target .. "\31" .. k] = active_by[p.target .. "\31" .. k] or {}
          active_by[p.target .. "\31" .. k][entry.name] = true
        end
        for k, groups in pairs(p.wanted or {}) do
          for gk in pairs(groups) do
            local key = p.target .. "\31" .. k .. "\31" .. gk
            wants_by[key] = wants_by[key] or {}
            wants_by[key][entry.name] = true
          end
        end
      end
    end
    local function other(set, me)
      for name in pairs(set or {}) do if name ~= me then return name end end
    end
    -- An account no entry maps any more is deprovisioned once, by one
    -- entry (the asked one with --sync, else the first that plans it),
    -- not once per entry linked to it.
    local deprov_by = {}
    for _, entry in ipairs(run_plan.syncs) do
      for _, p in ipairs(entry.targets) do
        for _, o in ipairs(p.ops) do
          local k = p.target .. "\31" .. (o.name or o.subject or ""):lower()
          if o.deprovision and not other(active_by[k], entry.name)
              and (not deprov_by[k] or (opts.sync and entry.name == opts.sync)) then
            deprov_by[k] = entry.name
          end
        end
      end
    end
    for _, entry in ipairs(run_plan.syncs) do
      for _, p in ipairs(entry.targets) do
        local keep = {}
        for _, o in ipairs(p.ops) do
          local k = (o.name or o.subject or ""):lower()
          local owner = o.deprovision and other(active_by[p.target .. "\31" .. k], entry.name)
          local wanted_by = o.kind == "remove_member" and other(wants_by[p.target .. "\31" .. k .. "\31" .. (o.group or ""):lower()], entry.name)
          local deprov_owner = o.deprovision and deprov_by[p.target .. "\31" .. k]
          if owner then
            p.notes[#p.notes + 1] = ("%s %s: the account is still in scope of sync %q; not applied"):format(o.kind, o.subject, owner)
          elseif deprov_owner and deprov_owner ~= entry.name then
            p.notes[#p.notes + 1] = ("%s %s: deprovisioned by sync %q in this run"):format(o.kind, o.subject, deprov_owner)
          elseif wanted_by then
            p.notes[#p.notes + 1] = ("remove %s from %s: sync %q still puts it there; not applied"):format(o.subject, o.group, wanted_by)
          elseif o.kind == "create_user" and creates[p.target .. "\31" .. k] then
            keep[#keep + 1] = { kind = "link", target = o.target, subject = o.name, name = o.name, okta_id = o.okta_id,
                                reason = ("created by sync %q in this run"):format(creates[p.target .. "\31" .. k]) }
          else
            -- (an entry planned only for context creates nothing)
            if o.kind == "create_user" and (not opts.sync or opts.sync == entry.name) then
              creates[p.target .. "\31" .. k] = entry.name
            end
            keep[#keep + 1] = o
          end
        end
        table.sort(keep, function(x, y)
          local rx, ry = plan.RANK[x.kind], plan.RANK[y.kind]
          if rx ~= ry then return rx < ry end
          return (x.seq or 0) < (y.seq or 0)
        end)
        p.ops = keep
        plan.recount(p)
      end
    end
  end
  if opts.sync then
    -- The entries planned for context only: their claims were used above;
    -- an incomplete read of one makes the asked entry's read incomplete
    -- too (it could not protect what it claims).
    local keep, context_problems = {}, {}
    for _, entry in ipairs(run_plan.syncs) do
      if entry.name == opts.sync then
        keep[#keep + 1] = entry
      elseif entry.read.complete == false then
        context_problems[#context_problems + 1] = ("sync %q shares a target and its read did not complete"):format(entry.name)
      end
    end
    for _, entry in ipairs(keep) do
      if #context_problems > 0 and not entry.read.failed then
        entry.read.complete = false
        for _, p in ipairs(context_problems) do entry.read.problems[#entry.read.problems + 1] = p end
      end
    end
    run_plan.syncs = keep
  end
  return run_plan
end

-- The names of the sync entries a plan for entry `name` reads: that entry
-- and every entry sharing a target with it (all entries when name is nil).
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

local DESTRUCTIVE = report.DESTRUCTIVE

-- Operations per chunk. A chunk holds operations of one kind (plan order
-- holds across chunks): their intents are recorded in one transaction, the
-- chunk is sent, and their outcomes are recorded in one transaction. So a
-- write is never sent before its intent is durable, a run killed midway
-- leaves at most a chunk of unknown outcomes (settled by the next plan,
-- state.reconcile), and a stop request (serve's SIGTERM) waits for at most
-- one chunk's requests in flight.
-- Adds go in larger chunks, ordered by group within their phase: where a
-- product adds many users to a group in one request (Bitbucket), a chunk
-- costs about one request per group it touches.
M.CHUNK = 100
M.ADD_CHUNK = 1000

-- Orders the add_member ops of a plan-ordered list by group (then plan
-- order), in place; other kinds keep their places.
local function adds_by_group(ops)
  local first, last
  for i, o in ipairs(ops) do
    if o.kind == "add_member" then first = first or i; last = i end
  end
  if not first then return end
  local seg = table.move(ops, first, last, 1, {})
  -- (by seq, the plan position: no field is added to a million ops)
  local lower = setmetatable({}, { __index = function(t, g) local l = g:lower(); t[g] = l; return l end })
  table.sort(seg, function(a, b)
    local ga, gb = lower[a.group], lower[b.group]
    if ga ~= gb then return ga < gb end
    return (a.seq or 0) < (b.seq or 0)
  end)
  table.move(seg, 1, #seg, first, ops)
end

-- Applies ops to target t in chunks. per_chunk(chunk) runs before a chunk
-- is sent and returns the ops to send (or nil, err: the store cannot record
-- them; nothing more is sent); finished(op, ok, info, code) runs for each
-- outcome and done_chunk(list) after each chunk (or nil, err likewise).
-- Returns true, "stopped" when should_stop said so between chunks, nil, err
-- when the target gave up, or false, err when the store failed.
function Engine:apply_ops(t, ops, per_chunk, finished, done_chunk)
  local i = 1
  while i <= #ops do
    if self.should_stop and self.should_stop() then return "stopped" end
    local j, kind = i, ops[i].kind
    local size = kind == "add_member" and M.ADD_CHUNK or M.CHUNK
    while j < #ops and j - i + 1 < size and ops[j + 1].kind == kind do j = j + 1 end
    local chunk, err = per_chunk(table.move(ops, i, j, 1, {}))
    if not chunk then return false, err end
    if #chunk > 0 then
      local res, aerr = t:apply(chunk, finished)
      if not res then return nil, aerr end
    end
    local ok, derr = done_chunk()
    if not ok then return false, derr end
    i = j + 1
  end
  return true
end

-- Applies a run plan. opts: { force, command = "sync"|"apply" }.
-- Returns summary = { exit, runs = {id...}, ok, failed, withheld, stop = {reasons} }
-- (withheld: by the safety limit; withheld_leads: deprovisions held back
-- because a hand-over of the account's leads failed).
function Engine:apply(run_plan, opts)
  opts = opts or {}
  local stop, hard = report.safety(run_plan, { force = opts.force })
  local summary = { ok = 0, failed = 0, withheld = 0, runs = {}, stop = stop, stop_hard = hard, exit = M.EXIT_OK }
  -- The store cannot be written (disk full, I/O error): nothing more is
  -- sent; what was sent and not recorded is settled by the next plan.
  local store_error
  local function store_failed(err)
    store_error = store_error or ("cannot record the run in the store %s: %s; nothing more was sent (the next run settles what was sent and plans the rest again)")
      :format(self.db:path(), (tostring(err):gsub("^.-store: ", "")))
  end
  for _, entry in ipairs(run_plan.syncs) do
    local lock_ok, lerr = self.db:lock("sync:" .. entry.name, { ttl = M.LOCK_TTL })
    if not lock_ok then
      summary.exit = M.EXIT_FAILED
      summary.error = lerr
      break
    end
    local run_id, rerr = journal(state.begin_run, self.db, entry.name, self.trigger, opts.command or "sync", run_plan.scope)
    if not run_id then store_failed(rerr); break end
    summary.runs[#summary.runs + 1] = run_id
    local counts, failed = { users_in_scope = entry.users_in_scope }, 0
    local seq = 0
    local interrupted = false
    for _, p in ipairs(entry.targets) do
      if self.should_stop and self.should_stop() then interrupted = true; break end
      -- Conflicts and policy errors are users this run could not sync.
      local problems = #p.conflicts + #p.errors
      if p.read_error then -- the target could not be read: a failure, not users left unsynced
        failed = failed + 1
        summary.failed = summary.failed + 1
        counts.targets_unread = (counts.targets_unread or 0) + 1
      end
      if problems > 0 then
        failed = failed + problems
        summary.problems = (summary.problems or 0) + problems
        counts.conflicts = (counts.conflicts or 0) + #p.conflicts
        counts.policy_errors = (counts.policy_errors or 0) + #p.errors
      end
      local ops = {}
      for _, o in ipairs(p.ops) do
        if stop and DESTRUCTIVE[o.kind] then
          summary.withheld = summary.withheld + 1
        else
          ops[#ops + 1] = o
        end
      end
      local nseq, jerr = journal(state.record_plan, self.db, run_id, ops, seq)
      if not nseq then store_failed(jerr); break end
      seq = nseq
      if #ops > 0 then
        self.progress{ phase = "apply", name = p.target, state = "start", total = #ops, what = "changes",
          message = ("applying %d changes to %s"):format(#ops, p.target) }
        local applied = 0
        local t = self:target(p.target)
        local failed_ids = {}
        local outcomes = {}
        local handover_failed = {}  -- lower account -> true: a hand-over of its leads failed
        local function finished(op, ok, info, code)
          outcomes[#outcomes + 1] = { op, ok and { ok = true, note = info } or { ok = false, error = info, code = code } }
          if not ok and op.kind == "handover_lead" then handover_failed[op.name:lower()] = true end
          if ok then
            summary.ok = summary.ok + 1
            counts[op.kind] = (counts[op.kind] or 0) + 1
          else
            if op.okta_id then failed_ids[op.okta_id] = true end
            summary.failed = summary.failed + 1
            failed = failed + 1
            log.warn("%s %s %s failed: %s (%s)", p.target, op.kind, op.subject, tostring(info), tostring(code))
          end
          applied = applied + 1
          self.progress{ phase = "apply", name = p.target, state = "update", done = applied, total = #ops,
            what = "changes", op = op, ok = ok and true or false, info = info, code = code }
        end
        local function per_chunk(chunk)
          -- An account is deprovisioned only after every hand-over of its
          -- leads succeeded; otherwise it is withheld (kept active, so the
          -- next run plans the hand-over and the deprovision again).
          if next(handover_failed) and (chunk[1].kind == "deactivate_user" or chunk[1].kind == "delete_user") then
            local send, held = {}, {}
            for _, o in ipairs(chunk) do
              if handover_failed[o.name:lower()] then
                held[#held + 1] = { o, { ok = false, skipped = true, code = "WITHHELD",
                  error = "withheld: a hand-over of its project or component leads failed; the next run tries again" } }
                summary.withheld_leads = (summary.withheld_leads or 0) + 1
                log.warn("%s %s %s withheld: a hand-over of its leads failed; the next run tries again", p.target, o.kind, o.subject)
              else
                send[#send + 1] = o
              end
            end
            if #held > 0 then
              local ok, err = journal(state.ops_finished, self.db, run_id, entry.name, held)
              if not ok then return nil, err end
            end
            chunk = send
          end
          local ok, err = journal(state.ops_started, self.db, run_id, chunk)
          if not ok then return nil, err end
          return chunk
        end
        local function done_chunk()
          local list = outcomes
          outcomes = {}
          self:renew_locks()
          return journal(state.ops_finished, self.db, run_id, entry.name, list)
        end
        adds_by_group(ops)
        local res, err = self:apply_ops(t, ops, per_chunk, finished, done_chunk)
        self.progress{ phase = "apply", name = p.target, state = (res and res ~= "stopped") and "done" or "failed",
          error = res == "stopped" and "stopped on request" or err }
        if res == "stopped" then
          interrupted = true
          break
        end
        if res == false then store_failed(err); break end
        if not res then
          failed = failed + 1
          summary.failed = summary.failed + 1
          log.error("applying to %s stopped: %s", p.target, tostring(err))
        else
          -- New accounts that got every group of this run are onboarded.
          local done = {}
          for _, id in ipairs(p.new_ids or {}) do
            if not failed_ids[id] then done[#done + 1] = id end
          end
          local ok, merr = journal(state.mark_onboarded, self.db, entry.name, p.target, done)
          if not ok then store_failed(merr); break end
        end
      end
    end
    if store_error then
      -- Recorded if the store still takes it; if not, the next run marks
      -- the run interrupted and counts what its journal shows was done.
      summary.failed = summary.failed + 1
      pcall(state.end_run, self.db, run_id, "failed", counts, store_error)
      pcall(self.db.exec, self.db, [[UPDATE operations SET status = 'skipped', error = 'not sent: the store could not be written'
          WHERE run_id = ? AND status = 'pending']], run_id)
      break
    end
    if not interrupted and self.should_stop and self.should_stop() then interrupted = true end
    if interrupted then
      -- Stopped on request (SIGTERM under serve): what was not sent is
      -- skipped; the next run plans it again.
      self.db:exec([[UPDATE operations SET status = 'skipped', error = 'run interrupted (stop requested)'
          WHERE run_id = ? AND status = 'pending']], run_id)
      state.end_run(self.db, run_id, "interrupted", counts, "stopped on request before the run finished")
      self.db:unlock("sync:" .. entry.name)
      summary.interrupted = true
      break
    end
    local outcome = failed > 0 and "partial" or (stop and "stopped" or "ok")
    state.end_run(self.db, run_id, outcome, counts, stop and table.concat(stop, "; ") or nil)
    if self.cfg.history and self.cfg.history.keep then
      require("usersync.history").prune(self.db, config.parse_duration(self.cfg.history.keep))
    end
    self.db:unlock("sync:" .. entry.name)
  end
  self:unlock_entries()
  if store_error then summary.error = store_error end
  summary.exit = report.exit_code(run_plan, stop, summary.exit == M.EXIT_FAILED or summary.failed > 0
    or (summary.problems or 0) > 0 or store_error)
  return summary
end

return M
