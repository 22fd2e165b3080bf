-- usersync.scim_serve: the SCIM side of `usersync serve` (usersync.serve
-- calls it). Identity providers push to /scim/v2/<source>/ (the HTTP side
-- is runtime/scim_server.c, the answers usersync.scim in a worker thread);
-- every push records the users it touched in the store (scim_changes) in
-- its own transaction. This module turns those into runs:
--   * a burst of pushes is batched: the run starts once no push came for
--     QUIET seconds, or MAX_WAIT seconds after the first push of the burst
--     (a steady stream still gets synced);
--   * the users touched wait in serve's list of users to sync (kept in the
--     store, synced EVENT_BATCH per run, kept for a retry when a run fails),
--     trigger "event", only for the sync entries of that source;
--   * more than FULL_AT users touched by one burst (an identity provider's
--     initial push) bring a full run of the source's entries forward
--     instead: one read of each target rather than one per batch.
-- The scheduled full runs (`every`) reconcile as for any source.
local json = require "usersync.json"
local time = require "usersync.time"
local log = require "usersync.log"

local M = {}

M.QUIET = 2
M.MAX_WAIT = 30
M.FULL_AT = 500

-- The scim sources of cfg, sorted by name.
function M.sources(cfg)
  local out = {}
  for name, s in pairs(cfg.sources) do
    if s.type == "scim" then out[#out + 1] = name end
  end
  table.sort(out)
  return out
end

-- What server.start needs: { { name, token }, ... } or nil.
function M.server_opts(cfg)
  local list = {}
  for _, name in ipairs(M.sources(cfg)) do
    list[#list + 1] = { name = name, token = cfg.sources[name].token }
  end
  return #list > 0 and list or nil
end

-- Starts the worker thread. Returns true, or nil, message.
function M.start(self, opts)
  local names = M.sources(self.cfg)
  if #names == 0 then return true end
  local ok, err = self.srv:scim_worker("usersync.scim_worker", json.encode{
    state = self.cfg.state, tls = opts.tls ~= nil, sources = json.array(names),
    log_format = os.getenv("USERSYNC_LOG_FORMAT"), log_level = opts.level })
  if not ok then return nil, err end
  -- pushes stored before a restart and not yet turned into runs: due now
  local row = self.engine.db:first("SELECT count(*) AS n FROM scim_changes")
  if row and row.n > 0 then self.scim_first, self.scim_last = time.now() - M.MAX_WAIT, time.now() - M.QUIET end
  return true
end

-- SIGHUP: the SCIM endpoints and their tokens are the server's since the
-- start; a change takes effect at the next start (said in the log).
function M.reloaded(old, new)
  local a, b = M.server_opts(old) or {}, M.server_opts(new) or {}
  local same = #a == #b
  for i = 1, math.min(#a, #b) do
    if a[i].name ~= b[i].name or a[i].token ~= b[i].token then same = false end
  end
  if not same then
    log.warn "the scim sources and their tokens take effect at the next start of usersync serve"
  end
end

-- A push was stored (the server's "scim" wake).
function M.pushed(self)
  local now = time.now()
  self.scim_first = self.scim_first or now
  self.scim_last = now
end

-- When the pushes waiting are due to be synced (math.huge: none).
function M.due(self)
  if not self.scim_first then return math.huge end
  return math.min(self.scim_last + M.QUIET, self.scim_first + M.MAX_WAIT)
end

-- The users the pushes touched -> serve's waiting list (or a full run).
function M.flush(self)
  local db = self.engine.db
  local by, top = {}, 0
  for row in db:rows("SELECT seq, source, user_id FROM scim_changes ORDER BY seq") do
    local s = by[row.source]
    if not s then s = { ids = {}, seen = {} }; by[row.source] = s end
    if not s.seen[row.user_id] then s.seen[row.user_id] = true; s.ids[#s.ids + 1] = row.user_id end
    if row.seq > top then top = row.seq end
  end
  for source, s in pairs(by) do
    if self.cfg.sources[source] and self.cfg.sources[source].type == "scim" then
      if #s.ids > M.FULL_AT then
        self.full_requested = self.full_requested or {}
        for _, sy in ipairs(self.cfg.sync) do
          if sy.source == source and not self.full_requested[sy.name] then
            self.full_requested[sy.name] = "event"
            log.info { msg = "SCIM: many users pushed; a full run of this sync entry is due now", sync = sy.name,
                       source = source, users = #s.ids }
          end
        end
      else
        local added = 0
        for _, id in ipairs(s.ids) do
          if self:add_pending(id, "event", source) then added = added + 1 end
        end
        log.info { msg = "SCIM: pushed users are waiting to be synced", source = source, users = #s.ids,
                   new = added }
      end
    end
  end
  self:save_pending()
  db:exec("DELETE FROM scim_changes WHERE seq <= ?", top)
  self.scim_first, self.scim_last = nil, nil
end

return M
