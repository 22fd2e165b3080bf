-- usersync.status: the serving side of the status page (`serve.status`).
--
-- The page itself is rendered by usersync.status_page in a Lua state of its
-- own on the server's request threads (this state is busy running syncs),
-- from the store and from what this module publishes: the live state only
-- `usersync serve` knows — the sync entries and their next scheduled runs,
-- the run in progress and its progress, the Okta rate-limit budget, users
-- waiting to be synced. "Sync now" on the page comes back here as an action
-- (srv:wait() -> "actions") and runs in the serve loop like any other run,
-- under the entry's lock.
--
--   local status = require "usersync.status"
--   opts.status = status.server_options(cfg)      -- nil: no status page
--   status.publish(serve)                         -- after anything changed
--   status.run_started(serve, opts) / status.run_ended(serve)
--   status.progress(serve, ev)                    -- engine progress events
--   status.handle_actions(serve, texts)           -- "sync now"
local json = require "usersync.json"
local time = require "usersync.time"
local log = require "usersync.log"

local M = {}

-- How many past runs the overview lists.
M.RUNS = 20

-- Progress is published at most this often (seconds) while a phase runs.
M.PROGRESS_EVERY = 0.5

-- The server.start option for the page, or nil when serve.status is not set.
function M.server_options(cfg)
  local st = cfg.serve and cfg.serve.status
  if not st then return nil end
  return { user = st.user, password = st.password,
           init = json.encode{ store = cfg.state, runs = M.RUNS,
                               version = require("usersync.core").versions().usersync,
                               log_format = os.getenv("USERSYNC_LOG_FORMAT") } }
end

local function url_of(u)
  -- scheme://host[:port]/path only: never user info
  return type(u) == "string" and (u:gsub("^(%a[%w+.-]*://)[^/@]*@", "%1")) or nil
end

-- The text the page renders serve's live state from.
function M.snapshot(self)
  local cfg = self.cfg
  local entries = {}
  for _, s in ipairs(cfg.sync) do
    local d = self.due and self.due[s.name]
    entries[#entries + 1] = { name = s.name, source = s.source, targets = json.array(s.targets or {}),
                              every = s.every, next_at = d and d.at or nil,
                              requested = (self.full_requested or {})[s.name] ~= nil or nil }
  end
  local sources, targets = {}, {}
  for name, s in pairs(cfg.sources) do sources[name] = { type = s.type, url = url_of(s.url) } end
  for name, t in pairs(cfg.targets) do targets[name] = { type = t.type, url = url_of(t.url) } end
  local budget = {}
  for name, src in pairs(self.engine and self.engine.sources or {}) do
    local ok, b = pcall(src.budget, src)
    for bucket, v in pairs(ok and type(b) == "table" and b or {}) do
      budget[#budget + 1] = { source = name, bucket = bucket, remaining = v.remaining, limit = v.limit,
                              reset = v.reset, rate_limited = v.rate_limited, waits = v.waits }
    end
  end
  table.sort(budget, function(a, b) return a.source .. a.bucket < b.source .. b.bucket end)
  local reasons = {}
  for _, why in pairs(self.failed_full or {}) do reasons[#reasons + 1] = why end
  table.sort(reasons)
  local jobs = {}
  for _, j in ipairs(self.jobs or {}) do jobs[#jobs + 1] = { script = j.script, next_at = j.at } end
  local serve = cfg.serve or {}
  return {
    at = time.now(), pid = self.pid, started = self.started_at,
    ready = #reasons == 0, not_ready = json.array(reasons),
    entries = json.array(entries), sources = sources, targets = targets,
    running = self.live, budget = json.array(budget), jobs = json.array(jobs),
    waiting = self.pending and #self.pending.ids or 0,
    hook = serve.okta_hook and { path = serve.okta_hook.path or "/hooks/okta" } or nil,
    poll = self.poll_every and { every = self.poll_every, next_at = self.poll_at } or nil,
  }
end

function M.publish(self)
  if not self.status_on then return end
  self.published_at = time.monotonic()
  self.srv:publish(json.encode(M.snapshot(self)))
end

-- A run begins (opts as Serve:run's) / ends.
function M.run_started(self, opts)
  self.live = { sync = opts.sync, trigger = opts.trigger, users = opts.users and #opts.users or nil,
                started = time.now(), phases = json.array({}) }
  M.publish(self)
end

function M.run_ended(self)
  self.live = nil
  M.publish(self)
end

-- An engine progress event: the phase's figures, published now and then.
function M.progress(self, ev)
  local live = self.live
  if not self.status_on or not live or type(ev) ~= "table" or not ev.phase then return end
  local key = ev.phase .. ":" .. tostring(ev.name)
  local ph
  for _, p in ipairs(live.phases) do if p.key == key then ph = p end end
  if not ph then
    ph = { key = key, phase = ev.phase, name = ev.name }
    live.phases[#live.phases + 1] = ph
  end
  ph.state = ev.state
  if ev.state == "start" then ph.total = ev.total or ev.expected; ph.done = 0; ph.what = ev.what end
  if ev.done then ph.done = ev.done end
  if ev.total then ph.total = ev.total end
  if ev.state ~= "update" or time.monotonic() - (self.published_at or 0) >= M.PROGRESS_EVERY then
    M.publish(self)
  end
end

-- "Sync now" from the page: { sync = name[, user = login] } each.
function M.handle_actions(self, texts)
  for _, text in ipairs(texts) do
    local a = json.decode(text)
    local known = false
    for _, s in ipairs(self.cfg.sync) do
      if type(a) == "table" and s.name == a.sync then known = true end
    end
    if not known then
      log.warn { msg = "status page: sync now for an unknown sync entry ignored",
                 sync = type(a) == "table" and tostring(a.sync) or nil }
    elseif not self.srv:stopping() then
      local user = type(a.user) == "string" and a.user ~= "" and a.user or nil
      log.info { msg = "status page: sync now", sync = a.sync, user = user }
      local _, why = self:run{ sync = a.sync, trigger = "manual", users = user and { user } or nil, by_id = false }
      if not user and why ~= "locked" and why ~= "stopped" then
        -- a full run now: the next scheduled one is `every` after it
        local d = self.due and self.due[a.sync]
        if d then d.at = time.now() + d.every + self:jitter(d.every); self:set_next(a.sync, d) end
      end
      M.publish(self)
    end
  end
end

return M
