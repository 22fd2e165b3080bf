-- usersync.serve: `usersync serve` (§5 triggers). One
-- process that
--   * runs every sync entry with `every` on that interval (plus a small
--     jitter), never two runs of one entry, or of entries sharing a target,
--     at once (the store's locks `sync` takes, which also keep out a
--     `usersync sync` started by hand or another serve), never stacking
--     missed runs: the next run is due `every` after the last one ended;
--   * polls Okta's System Log every `serve.poll_logs` from a cursor kept in
--     the store (a lastUpdated watermark when the token may not read logs)
--     and syncs just the users the new events name (trigger "incremental");
--   * answers Okta event hooks at `serve.okta_hook.path` (the C server does
--     the HTTP side: verification, Authorization, size cap, de-duplication,
--     answering at once) and syncs the users each event names: the user who
--     signed in for user.session.start — sync at login — and the targets of
--     lifecycle, profile, membership and app-assignment events (trigger
--     "event");
--   * serves /healthz, /readyz and /metrics, and with serve.status the
--     status page at / (usersync.status);
--   * on SIGTERM/SIGINT stops between operations, marks the run interrupted
--     and exits 0; on SIGHUP reloads the config (a bad one is reported and
--     the old one kept).
--
-- Everything runs in this one Lua thread, one run at a time; the server's
-- threads only queue deliveries, so hooks are answered within Okta's 3 s
-- even while a long full run is going on.
local server = require "usersync.server"
local metrics = require "usersync.metrics"
local engine_mod = require "usersync.engine"
local config = require "usersync.config"
local log = require "usersync.log"
local json = require "usersync.json"
local time = require "usersync.time"
local state = require "usersync.state"
local status = require "usersync.status"
local scim_serve = require "usersync.scim_serve"

local M = {}

-- Event types whose User targets are synced (hook-eligible
-- ones and their System Log twins). user.session.start is handled apart:
-- its user is the actor.
M.USER_EVENTS = {
  ["user.lifecycle.create"] = true, ["user.lifecycle.activate"] = true,
  ["user.lifecycle.deactivate"] = true, ["user.lifecycle.reactivate"] = true,
  ["user.lifecycle.suspend"] = true, ["user.lifecycle.unsuspend"] = true,
  ["user.lifecycle.delete.initiated"] = true, ["user.lifecycle.delete.completed"] = true,
  ["user.account.update_profile"] = true,
  ["group.user_membership.add"] = true, ["group.user_membership.remove"] = true,
  ["core.user_group_member.user_add"] = true, ["core.user_group_member.user_remove"] = true,
  ["application.user_membership.add"] = true, ["application.user_membership.remove"] = true,
  ["application.user_membership.update"] = true,
}

-- Events that change who is in scope through a group, or a group itself
--: they name no user to sync, so they bring the next full
-- run of the source's entries forward to now.
M.GROUP_EVENTS = {
  ["group.application_assignment.add"] = true, ["group.application_assignment.remove"] = true,
  ["group.application_assignment.update"] = true, ["group.profile.update"] = true,
  ["group.lifecycle.delete"] = true, ["system.import.group.delete"] = true,
}

-- System Log pages (of 1,000 events) one poll reads at most: a backlog
-- after downtime is worked through a bounded piece at a time.
M.POLL_PAGES = 10

-- Most users one event-triggered run syncs; more wait for the next batch.
M.EVENT_BATCH = 50

-- The Okta user ids a LogEvent asks to sync (a list; empty when none).
-- Sign-ins count only with logins = true (the hook: sync at login); the
-- System Log poll looks for changes, and every sign-in of a large org would
-- cost Okta requests without changing anything.
function M.event_users(ev, logins)
  local out = {}
  if type(ev) ~= "table" then return out end
  local etype = ev.eventType
  if etype == "user.session.start" then
    if not logins then return out end
    local outcome = type(ev.outcome) == "table" and ev.outcome.result
    local actor = ev.actor
    if outcome ~= "FAILURE" and type(actor) == "table" and actor.type == "User" and type(actor.id) == "string" then
      out[1] = actor.id
    end
  elseif M.USER_EVENTS[etype] and type(ev.target) == "table" then
    for _, t in ipairs(ev.target) do
      if type(t) == "table" and t.type == "User" and type(t.id) == "string" then out[#out + 1] = t.id end
    end
  end
  return out
end

local function describe_metrics()
  metrics.describe("usersync_runs_total", "counter", "Sync runs by sync entry, trigger and outcome.")
  metrics.describe("usersync_operations_total", "counter", "Applied operations by target, kind and result.")
  metrics.describe("usersync_last_success_timestamp_seconds", "gauge",
    "Unix time of the last full run of a sync entry that ended ok (single-user and event runs do not count).")
  metrics.describe("usersync_build_info", "gauge", "Always 1; the version of usersync as a label.")
  metrics.describe("usersync_managed_accounts", "gauge", "Accounts usersync links to an Okta user, per target.")
  metrics.describe("usersync_next_run_timestamp_seconds", "gauge",
    "Unix time of the next scheduled full run of a sync entry (`every`).")
  metrics.describe("usersync_run_duration_seconds", "histogram", "Duration of sync runs.")
  metrics.describe("usersync_okta_budget_remaining", "gauge",
    "Requests left in the current Okta rate-limit window, per source and bucket.")
  metrics.describe("usersync_okta_budget_limit", "gauge", "Okta rate limit per window, per source and bucket.")
  metrics.describe("usersync_hook_users_total", "counter", "Users named by hook events, by what happened to them.")
  metrics.describe("usersync_config_reloads_total", "counter", "SIGHUP config reloads by result.")
  metrics.describe("usersync_jobs_total", "counter", "Scheduled script runs (serve.jobs) by script and result.")
end

local Serve = {}
Serve.__index = Serve

-- The id of this process (as the store records it in runs.pid), also to
-- run jobs with the very same binary.
local self_pid = state.pid

-- The store's cursors table holds serve's resume points: System Log
-- cursors and watermarks, the waiting users, the jobs' last runs.
local get_cursor, put_cursor = state.cursor, state.set_cursor

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

-- Opens the engine for cfg; the server's stop request ends applying.
function Serve:open_engine(cfg)
  local e, err = engine_mod.open(cfg, {
    trigger = "schedule",
    should_stop = function() return self.srv:stopping() end,
    progress = function(ev)
      if ev.message then log.debug(ev.message) end
      status.progress(self, ev)
    end,
  })
  if not e then return nil, err end
  return e
end

function Serve:set_ready()
  local reasons = {}
  for _, why in pairs(self.failed_full) do reasons[#reasons + 1] = why end
  table.sort(reasons)
  if #reasons > 0 then
    self.srv:ready(false, table.concat(reasons, "; "))
  else
    self.srv:ready(true)
  end
end

-- The last full run of a sync entry that ended ok: Unix time, or nil.
local function last_full_success(db, sync)
  local ended = state.last_ended(db, sync, true)
  return ended and time.parse(ended)
end

-- usersync_managed_accounts{target}: the accounts the store links, per
-- target of the config (0 for a target with none yet).
function Serve:observe_accounts()
  local n = {}
  for name in pairs(self.cfg.targets) do n[name] = 0 end
  for target, count in pairs(state.linked_accounts(self.engine.db)) do
    if n[target] then n[target] = count end
  end
  for name, count in pairs(n) do metrics.set("usersync_managed_accounts", { target = name }, count) end
end

-- Records when sync entry `name`'s next scheduled run is due (metric and
-- a log line).
function Serve:set_next(name, d)
  metrics.set("usersync_next_run_timestamp_seconds", { sync = name }, d.at)
  log.info { msg = "next scheduled run", sync = name, at = time.format(math.floor(d.at)),
             ["in"] = ("%ds"):format(math.max(0, math.floor(d.at - time.now() + 0.5))) }
end

-- When a sync entry's next scheduled run is due: `every` after the end of
-- its last full run (any trigger), plus jitter; at once when it never ran.
function Serve:schedule(cfg, now)
  self.due = {}
  for _, s in ipairs(cfg.sync) do
    if s.every then
      local every = s.every
      local ended = state.last_ended(self.engine.db, s.name)
      local last = ended and time.parse(ended)
      -- Never ran: at once; else `every` after the last one, jittered.
      local at = last and (math.max(last + every, now) + self:jitter(every)) or now
      self.due[s.name] = { at = at, every = every }
      self:set_next(s.name, self.due[s.name])
    end
  end
  -- Jobs: `every` after their last run (kept in the store, so restarts
  -- and reloads do not push a weekly job back forever); a job that never
  -- ran waits one interval.
  self.jobs = {}
  for i, j in ipairs(cfg.serve and cfg.serve.jobs or {}) do
    local every = j.every
    local saved = get_cursor(self.engine.db, "serve.job:" .. j.script)
    local last = saved and time.parse(saved)
    self.jobs[i] = { script = j.script, every = every,
                     at = math.max(last and (last + every) or (now + every), now) + self:jitter(every) }
  end
  local poll = cfg.serve and cfg.serve.poll_logs
  self.poll_every = poll
  self.poll_at = self.poll_every and (now + self.poll_every) or nil
end

-- A small random delay: up to 5% of the interval, at most 30 s, so several
-- instances (or entries) do not hit Okta in the same second.
function Serve:jitter(every)
  local span = math.min(every * 0.05, 30)
  return span > 0 and math.random() * span or 0
end

-- Records metrics for the runs of a summary (or an error).
function Serve:observe_runs(run_ids, trigger, started, full)
  local db = self.engine.db
  for _, id in ipairs(run_ids or {}) do
    local run = state.run_outcome(db, id)
    if run then
      metrics.add("usersync_runs_total", { sync = run.sync, trigger = trigger, outcome = run.outcome }, 1)
      metrics.observe("usersync_run_duration_seconds", { sync = run.sync, trigger = trigger }, time.now() - started)
      if run.outcome == "ok" and full then
        metrics.set("usersync_last_success_timestamp_seconds", { sync = run.sync }, time.now())
      end
      for row in state.op_totals(db, id) do
        metrics.add("usersync_operations_total", { target = row.target, kind = row.kind, result = row.status }, row.n)
      end
    end
  end
  for name, src in pairs(self.engine.sources) do
    for bucket, b in pairs(src:budget()) do
      if b.remaining then metrics.set("usersync_okta_budget_remaining", { source = name, bucket = bucket }, b.remaining) end
      if b.limit then metrics.set("usersync_okta_budget_limit", { source = name, bucket = bucket }, b.limit) end
    end
  end
end

-- One run: plan + apply under the locks `sync` and `apply` take
-- (Engine:lock_entries): the entry's and those of every entry sharing a
-- target with it, taken before anything is read and held until the apply
-- ends, so two entries that write one target never apply at once, whoever
-- runs them (this serve, another serve on the same store, a `usersync
-- sync`). A run kept out is skipped and logged, not waited for: serve has
-- one thread, and waiting on a long run elsewhere would hold up hook
-- deliveries and SIGTERM; the caller tries it again RETRY seconds later
-- (waiting users stay in the store). opts: { sync = name, users = {ids},
-- trigger }. Returns the engine summary, or nil, reason ("locked" when
-- another run holds one of the locks).
function Serve:run(opts)
  local e = self.engine
  e.trigger = opts.trigger
  local started = time.now()
  status.run_started(self, opts)
  local by_id = opts.users ~= nil
  if opts.by_id ~= nil then by_id = opts.by_id end
  local locked
  local ok, summary, perr = pcall(function()
    local run_plan, err, _, code = e:plan{ sync = opts.sync, users = opts.users, by_id = by_id, lock = true }
    if not run_plan then
      locked = code == "ELOCKED"
      return nil, err
    end
    return e:apply(run_plan, { command = "sync" })
  end)
  e:unlock_entries() -- (apply released them; not when the plan or apply raised)
  status.run_ended(self)
  if locked then
    log.warn { msg = "run skipped: another run holds the lock of this sync entry or of one sharing a target "
                 .. "with it; trying again later", sync = opts.sync, trigger = opts.trigger,
               detail = tostring(perr), retry_in = M.RETRY }
    metrics.add("usersync_runs_total", { sync = opts.sync or "*", trigger = opts.trigger, outcome = "skipped" }, 1)
    return nil, "locked"
  end
  local full = opts.users == nil
  if not ok or not summary then
    local why = tostring(ok and perr or summary)
    -- A run that raised after it began stays 'running' in the store:
    -- close it (the pid is this live process, so nothing else would).
    state.fail_running(e.db, self.pid or -1, why)
    if self.srv:stopping() then
      log.warn { msg = "run stopped on request before it applied anything", sync = opts.sync, trigger = opts.trigger }
      return nil, "stopped"
    end
    log.error { msg = "run failed", sync = opts.sync, trigger = opts.trigger, error = why }
    metrics.add("usersync_runs_total", { sync = opts.sync or "*", trigger = opts.trigger, outcome = "error" }, 1)
    if full then self.failed_full[opts.sync or "*"] = "the last run failed: " .. why end
    self:set_ready()
    return nil, why
  end
  self:observe_runs(summary.runs, opts.trigger, started, full)
  self:observe_accounts()
  if summary.interrupted then
    log.warn { msg = "run interrupted on request", sync = opts.sync, trigger = opts.trigger,
               runs = table.concat(summary.runs, ",") }
  else
    local level = summary.exit == 0 and "info" or "warn"
    log.event(level, "run finished", { sync = opts.sync, trigger = opts.trigger, users = opts.users and #opts.users or nil,
      runs = table.concat(summary.runs, ","), applied = summary.ok, failed = summary.failed,
      withheld = summary.withheld, exit = summary.exit,
      stop = summary.stop and table.concat(summary.stop, "; ") or nil })
  end
  -- Readiness follows the full runs of each entry: one whose operations
  -- failed (exit 1) makes /readyz fail until that entry's next full run
  -- goes well. A safety stop does not (the process works; a person has to
  -- review the plan), nor does one user's failure in an event run.
  if full and not summary.interrupted then
    self.failed_full[opts.sync or "*"] = summary.exit == engine_mod.EXIT_FAILED
      and ("the last full run of %s had failures; see usersync show %s"):format(opts.sync or "every sync entry",
        table.concat(summary.runs, ",")) or nil
  end
  self:set_ready()
  return summary
end

-- The sync entries fed by a source.
local function entries_of(cfg, source)
  local out = {}
  for _, s in ipairs(cfg.sync) do
    if s.source == source then out[#out + 1] = s.name end
  end
  return out
end

local function okta_sources(cfg)
  local out = {}
  for name, s in pairs(cfg.sources) do
    if s.type == "okta" then out[name] = true end
  end
  return out
end

-- Users waiting to be synced, named by hook events or the System Log poll:
-- { ids = { id... } (arrival order), by = { [id] = { trigger, source } } }.
-- They leave the list only when every run for them went through; the list
-- is kept in the store, so a restart or a failed run loses nobody.
local PENDING = "serve.pending"

function Serve:load_pending()
  self.pending = { ids = {}, by = {} }
  local text = get_cursor(self.engine.db, PENDING)
  local saved = text and json.decode(text)
  for _, p in ipairs(type(saved) == "table" and saved or {}) do
    if type(p) == "table" and type(p.id) == "string" then self:add_pending(p.id, p.trigger, p.source) end
  end
end

function Serve:save_pending()
  local list = {}
  for _, id in ipairs(self.pending.ids) do
    local p = self.pending.by[id]
    list[#list + 1] = { id = id, trigger = p.trigger, source = p.source }
  end
  if #list == 0 then
    state.drop_cursor(self.engine.db, PENDING)
  else
    put_cursor(self.engine.db, PENDING, json.encode(json.array(list)))
  end
end

-- Adds a user (source nil: every Okta source, as a hook does not say which
-- org sent it). Returns false when the user was already waiting.
function Serve:add_pending(id, trigger, source)
  local p = self.pending.by[id]
  if p then
    if p.source ~= source then p.source = nil end
    return false
  end
  self.pending.by[id] = { trigger = trigger, source = source }
  self.pending.ids[#self.pending.ids + 1] = id
  return true
end

-- Syncs waiting users, EVENT_BATCH per run, in every sync entry of their
-- source. A batch whose runs all went through leaves the list; otherwise
-- it stays, and the next attempt is RETRY seconds later.
M.RETRY = 30
function Serve:flush_pending()
  while #self.pending.ids > 0 and not self.srv:stopping() do
    -- the first waiting user's trigger and source decide the batch
    local head = self.pending.by[self.pending.ids[1]]
    local batch, rest = {}, {}
    for _, id in ipairs(self.pending.ids) do
      local p = self.pending.by[id]
      if #batch < M.EVENT_BATCH and p.trigger == head.trigger and p.source == head.source then
        batch[#batch + 1] = id
      else
        rest[#rest + 1] = id
      end
    end
    local sources = head.source and { [head.source] = true } or okta_sources(self.cfg)
    local all_ok = true
    for src in pairs(sources) do
      for _, name in ipairs(entries_of(self.cfg, src)) do
        if self.srv:stopping() then return end
        local summary = self:run{ sync = name, users = batch, trigger = head.trigger }
        if not summary or summary.interrupted then all_ok = false end
      end
    end
    if not all_ok then
      self.retry_at = time.now() + M.RETRY
      log.warn { msg = "users kept for a retry", users = #batch, retry_in = M.RETRY }
      return
    end
    for _, id in ipairs(batch) do self.pending.by[id] = nil end
    self.pending.ids = rest
    self:save_pending()
  end
  self.retry_at = nil
end

-- Hook deliveries: each LogEvent JSON text -> users waiting to be synced.
function Serve:handle_events(texts)
  local added = 0
  for _, text in ipairs(texts) do
    -- Only four fields of each (2 KB) event matter: picked, not decoded whole.
    local etype, result, actor, target = json.pick(text, "eventType", "outcome.result", "actor", "target")
    local ev = { eventType = etype, outcome = { result = result }, actor = actor, target = target }
    local users = M.event_users(ev, true)
    if M.GROUP_EVENTS[etype] then
      self:request_full(nil, "event", etype)
    elseif #users == 0 then
      metrics.add("usersync_hook_users_total", { result = "ignored_event" }, 1)
      log.debug { msg = "hook event ignored", event_type = type(etype) == "string" and etype or nil }
    end
    for _, id in ipairs(users) do
      if self:add_pending(id, "event", nil) then
        added = added + 1
        metrics.add("usersync_hook_users_total", { result = "queued" }, 1)
      else
        metrics.add("usersync_hook_users_total", { result = "coalesced" }, 1)
      end
    end
  end
  if added > 0 then
    self:save_pending()
    log.info { msg = "hook: users named by events are waiting to be synced", users = added,
               waiting = #self.pending.ids }
  end
end

-- One System Log poll per Okta source used by a sync entry: the users the
-- new events name (the same event types as the hook) join the waiting
-- list, then the cursor moves on — the list is in the store, so nothing is
-- lost between the two. Without the logs scope (403) a lastUpdated
-- watermark is used instead, which sees profile, status and app changes of
-- users but not membership-only changes; the full runs on `every` catch
-- those and hard deletes.
function Serve:poll()
  local db = self.engine.db
  local function put(name, value) put_cursor(db, name, value) end
  for name in pairs(okta_sources(self.cfg)) do
    if #entries_of(self.cfg, name) > 0 and not self.srv:stopping() then
      local src = self.engine:source(name)
      local key = "okta.syslog." .. name
      local wkey = "okta.watermark." .. name
      local cursor = get_cursor(db, key)
      local res, err, code
      if cursor then
        res, err, code = src:changes{ cursor = cursor, users = false, max_pages = M.POLL_PAGES }
        if not res and (code == "EINVALID" or code == "EBADLINK") then
          -- A cursor Okta no longer takes (past the log retention, another
          -- org after a URL change): start again from now; the full runs
          -- cover the gap.
          log.warn { msg = "the stored System Log cursor was refused; polling from now", source = name,
                     error = err, code = code }
          state.drop_cursor(db, key)
          cursor = nil
        end
      end
      if not cursor then
        -- First poll: start at the newest events, do not replay history.
        res, err, code = src:changes{ since = time.format(time.now() - 60), users = false, max_pages = M.POLL_PAGES }
      end
      local ids, mode = {}, "logs"
      if res then
        for _, ev in ipairs(res.event_list or {}) do
          for _, id in ipairs(M.event_users(ev)) do ids[#ids + 1] = id end
          if M.GROUP_EVENTS[ev.eventType] then self:request_full(name, "incremental", ev.eventType) end
        end
      elseif code == "EFORBIDDEN" then
        mode = "watermark"
        res, err, code, ids = self:poll_watermark(src, wkey)
      end
      if not res then
        log.warn { msg = "System Log poll failed; trying again at the next poll", source = name, error = err, code = code }
      else
        local added = 0
        for _, id in ipairs(ids) do
          if self:add_pending(id, "incremental", name) then added = added + 1 end
        end
        if added > 0 then
          self:save_pending()
          log.info { msg = "poll: changed users are waiting to be synced", source = name, mode = mode, users = added,
                     requests = res.requests }
        end
        if mode == "logs" and res.cursor then put(key, res.cursor) end
        -- A capped poll (a backlog after downtime): the next one at once.
        if mode == "logs" and (res.events or 0) >= M.POLL_PAGES * 1000 then self.poll_again = true end
        if mode == "watermark" and res.next_value then put(wkey, res.next_value) end
      end
    end
  end
end

-- The watermark poll: users whose lastUpdated is after the stored mark.
-- Timestamps can repeat within a second, so the mark is read one second
-- early and the users already synced at the mark are skipped by their
-- (id, lastUpdated). Returns res (with next_value), err, code, ids.
function Serve:poll_watermark(src, wkey)
  local text = get_cursor(self.engine.db, wkey)
  local saved = text and json.decode(text)
  if type(saved) ~= "table" or type(saved.w) ~= "string" then
    saved = { w = time.format(time.now() - 60), seen = {} }
  end
  local since = time.format((time.parse(saved.w) or time.now()) - 1)
  local res, err, code = src:changes{ watermark = since, groups = false }
  if not res then return nil, err, code, {} end
  local ids, newest = {}, saved.w
  for _, u in ipairs(res.users or {}) do
    if (saved.seen or {})[u.id] ~= u.lastUpdated then ids[#ids + 1] = u.id end
    if u.lastUpdated and u.lastUpdated > newest then newest = u.lastUpdated end
  end
  local seen = {}
  local floor = (time.parse(newest) or 0) - 1
  for _, u in ipairs(res.users or {}) do
    if u.lastUpdated and (time.parse(u.lastUpdated) or 0) >= floor then seen[u.id] = u.lastUpdated end
  end
  for id, lu in pairs(saved.seen or {}) do
    if not seen[id] and (time.parse(lu) or 0) >= floor then seen[id] = lu end
  end
  res.next_value = json.encode{ w = newest, seen = next(seen) and seen or json.object() }
  return res, nil, nil, ids
end

-- A scheduled script (serve.jobs) runs in its own process (`usersync run`),
-- so a failing or greedy script cannot take the server down.
function Serve:run_job(job)
  local pid = self_pid()
  local exe = pid and ("/proc/" .. pid .. "/exe") or "usersync"
  local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
  local cmd = ("%s run -c %s %s"):format(q(exe), q(self.config_path), q(job.script))
  log.info { msg = "job started", script = job.script }
  local ok, how, code = os.execute(cmd)
  local result = ok and "ok" or ("%s %s"):format(how, tostring(code))
  put_cursor(self.engine.db, "serve.job:" .. job.script, time.format(time.now()))
  metrics.add("usersync_jobs_total", { script = job.script, result = ok and "ok" or "failed" }, 1)
  log.event(ok and "info" or "warn", "job finished", { script = job.script, result = result })
end

-- A group-level event: the full runs of the entries fed by `source` (nil:
-- every Okta source) are due now, once however many such events came.
function Serve:request_full(source, trigger, etype)
  self.full_requested = self.full_requested or {}
  for src in pairs(source and { [source] = true } or okta_sources(self.cfg)) do
    for _, name in ipairs(entries_of(self.cfg, src)) do
      if not self.full_requested[name] then
        self.full_requested[name] = trigger
        log.info { msg = "group change: a full run of this sync entry is due now", sync = name, event_type = etype }
      end
    end
  end
end

-- SIGHUP: load the config again; keep the old one when the new one is bad.
function Serve:reload()
  local cfg, errors = config.load(self.config_path, { serve = true })
  if not cfg then
    metrics.add("usersync_config_reloads_total", { result = "error" }, 1)
    log.error { msg = "config reload failed; keeping the old config", config = self.config_path,
                errors = table.concat(errors, "; ") }
    return false
  end
  local e, err = self:open_engine(cfg)
  if not e then
    metrics.add("usersync_config_reloads_total", { result = "error" }, 1)
    log.error { msg = "config reload failed; keeping the old config", error = err }
    return false
  end
  local old = self.cfg.serve or {}
  local new = cfg.serve or {}
  if old.listen ~= new.listen or old.health_listen ~= new.health_listen
      or json.encode(old.tls or {}) ~= json.encode(new.tls or {})
      or json.encode(old.okta_hook or {}) ~= json.encode(new.okta_hook or {})
      or json.encode(old.status or {}) ~= json.encode(new.status or {}) then
    log.warn "serve.listen, serve.health_listen, serve.tls, serve.okta_hook and serve.status take effect at the next start"
  end
  scim_serve.reloaded(self.cfg, cfg)
  self.engine:close()
  self.engine, self.cfg = e, cfg
  self:schedule(cfg, time.now())
  metrics.add("usersync_config_reloads_total", { result = "ok" }, 1)
  log.info { msg = "config reloaded", config = self.config_path }
  return true
end

-- The next moment something is due (a full run, a poll, a job, a retry
-- of waiting users).
function Serve:next_due()
  local at = math.huge
  if #self.pending.ids > 0 then at = self.retry_at or 0 end
  if next(self.full_requested or {}) then at = math.min(at, self.full_retry_at or 0) end
  for _, d in pairs(self.due) do at = math.min(at, d.at) end
  for _, j in ipairs(self.jobs) do at = math.min(at, j.at) end
  if self.poll_at then at = math.min(at, self.poll_at) end
  return math.min(at, scim_serve.due(self))
end

-- Whatever is due now, in config order: full runs, then the poll, then jobs.
function Serve:run_due()
  local now = time.now()
  for _, s in ipairs(self.cfg.sync) do
    local d = self.due[s.name]
    if d and d.at <= now and not self.srv:stopping() then
      local _, why = self:run{ sync = s.name, trigger = "schedule" }
      -- Not stacked: the next run is `every` after this one ended; a run
      -- the lock kept out is tried again soon, not an interval later.
      if why == "locked" then
        d.at = time.now() + math.min(d.every, M.RETRY)
      elseif why ~= "stopped" then
        d.at = time.now() + d.every + self:jitter(d.every)
      end
      self:set_next(s.name, d)
    end
  end
  -- SCIM pushes after their quiet period: waiting users, or a full run.
  if scim_serve.due(self) <= time.now() then scim_serve.flush(self) end
  -- Full runs a group event asked for (trigger event or incremental).
  for _, s in ipairs(self.cfg.sync) do
    local trigger = (self.full_requested or {})[s.name]
    if trigger and (self.full_retry_at or 0) <= time.now() and not self.srv:stopping() then
      local _, why = self:run{ sync = s.name, trigger = trigger }
      -- kept out by the lock: asked again RETRY seconds later
      self.full_retry_at = why == "locked" and (time.now() + M.RETRY) or nil
      if why ~= "locked" and why ~= "stopped" then
        self.full_requested[s.name] = nil
        local d = self.due[s.name]
        if d then d.at = time.now() + d.every + self:jitter(d.every); self:set_next(s.name, d) end
      end
    end
  end
  if self.poll_at and self.poll_at <= time.now() and not self.srv:stopping() then
    self.poll_again = false
    self:poll()
    self.poll_at = self.poll_again and time.now() or (time.now() + self.poll_every)
  end
  for _, j in ipairs(self.jobs) do
    if j.at <= time.now() and not self.srv:stopping() then
      self:run_job(j)
      j.at = time.now() + j.every + self:jitter(j.every)
    end
  end
  if #self.pending.ids > 0 and (self.retry_at or 0) <= time.now() then self:flush_pending() end
end

-- Starts the server and runs until SIGTERM/SIGINT. Returns the exit code.
-- ctx: { eprint = fn } for errors before logging is set up.
function M.run(cfg, ctx)
  local eprint = ctx.eprint
  -- JSON lines off a terminal (journald, log shippers), text on one.
  local format = os.getenv("USERSYNC_LOG_FORMAT")
  if format ~= "json" and format ~= "text" then format = "auto" end
  log.configure{ format = format, level = ctx.level }
  local scfg = cfg.serve or {}
  local opts = { listen = scfg.listen or "127.0.0.1:8080", health_listen = scfg.health_listen,
                 max_connections = scfg.max_connections, max_connections_per_ip = scfg.max_connections_per_ip,
                 timeout = scfg.request_timeout }
  if scfg.tls then
    local cert, cerr = read_file(scfg.tls.cert)
    if not cert then eprint("usersync serve: cannot read serve.tls.cert: " .. cerr); return 2 end
    local key, kerr = read_file(scfg.tls.key)
    if not key then eprint("usersync serve: cannot read serve.tls.key: " .. kerr); return 2 end
    opts.tls = { cert = cert, key = key }
  end
  if scfg.okta_hook then
    opts.hook = { path = scfg.okta_hook.path or "/hooks/okta", secret = scfg.okta_hook.secret,
                  max_body = scfg.okta_hook.max_body }
  end
  opts.status = status.server_options(cfg)
  opts.scim = scim_serve.server_opts(cfg)
  describe_metrics()
  local srv, err, code = server.start(opts)
  if not srv then
    eprint(("usersync serve: cannot listen on %s: %s"):format(opts.listen, err))
    return (code == "EINVAL" or code == "ETLS") and 2 or 1
  end
  local self = setmetatable({ srv = srv, cfg = cfg, config_path = cfg._path, failed_full = {},
                              pid = self_pid(), status_on = opts.status ~= nil, started_at = time.now() }, Serve)
  local e, eerr = self:open_engine(cfg)
  if not e then
    srv:close()
    eprint("usersync serve: " .. eerr)
    return 1
  end
  self.engine = e
  local sok, serr = scim_serve.start(self, { tls = opts.tls, level = ctx.level })
  if not sok then
    e:close(); srv:close()
    eprint("usersync serve: " .. tostring(serr))
    return 1
  end
  -- The last full success survives a restart in the store; so does its metric.
  for _, sy in ipairs(cfg.sync) do
    local at = last_full_success(e.db, sy.name)
    if at then metrics.set("usersync_last_success_timestamp_seconds", { sync = sy.name }, at) end
  end
  metrics.set("usersync_build_info", { version = require("usersync.core").versions().usersync }, 1)
  self:observe_accounts()
  self:load_pending()
  self:set_ready()
  log.info { msg = "serving", listen = opts.listen, port = srv:port(), tls = opts.tls ~= nil,
             health_listen = opts.health_listen, health_port = srv:health_port(),
             hook = opts.hook and opts.hook.path or nil, pid = self.pid, waiting = #self.pending.ids,
             status = self.status_on or nil }
  self:schedule(cfg, time.now())
  while not srv:stopping() do
    self:run_due()
    if srv:stopping() then break end
    status.publish(self)
    local wait = math.max(0, math.min(self:next_due() - time.now(), 3600))
    local kind, data = srv:wait(wait)
    if kind == "events" then
      self:handle_events(data)
    elseif kind == "actions" then
      status.handle_actions(self, data)
    elseif kind == "scim" then
      scim_serve.pushed(self)
    elseif kind == "signal" and data == "hup" then
      log.info "SIGHUP: reloading the config"
      self:reload()
    end
  end
  -- Hook events still queued in the server were answered 200 already:
  -- their users join the waiting list, which stays in the store for the
  -- next start.
  local kind, data = srv:wait(0)
  while kind == "events" or kind == "signal" do
    if kind == "events" then self:handle_events(data) end
    kind, data = srv:wait(0)
  end
  self:save_pending()
  log.info { msg = "stop requested: shutting down", waiting = #self.pending.ids }
  self.engine:close()
  srv:close()
  return 0
end

return M
