-- usersync.source: the engine's source side. Reads the Okta users in
-- scope of one sync entry (the whole scope, or a few users), and holds the
-- Okta facts the planner needs (what a user status means). The mechanics
-- (paging, rate limits, retries) are the Okta client's; this module asks
-- the policy which groups count and shapes every read into one result.
--
--   local source = require "usersync.source"
--   local r = source.read(e, s, pol)             -- e: the engine, s: a sync entry
--   local r = source.read(e, s, pol, { "bob@example.com" })     -- a few users
--   -- r = { users, groups = { [id] = group }, complete, problems = { msg },
--   --       error?, code? (the read failed), requests?, only? }
--   local m = source.status_map(cfg.sources.okta)   -- Okta status -> account state
--
-- Uses the engine for its clients (e:source), the store (e.db), progress
-- events (e.progress), stop requests and lock renewal.
local state = require "usersync.state"

local M = {}

-- Okta status -> account state; `sources.X.status_map` overrides.
M.STATUS = {
  ACTIVE = "active", PASSWORD_EXPIRED = "active", LOCKED_OUT = "active", RECOVERY = "active",
  PROVISIONED = "active", SUSPENDED = "inactive", DEPROVISIONED = "inactive", STAGED = "skip",
}

-- The status map of a source's config: M.STATUS with its overrides.
function M.status_map(scfg)
  local m = {}
  for k, v in pairs(M.STATUS) do m[k] = v end
  for k, v in pairs(scfg.status_map or {}) do m[k] = v end
  return m
end

-- The one shape of a read: r's fields, completed with empty users, groups
-- and problems, and complete unless r says otherwise.
local function result(r)
  r.users, r.groups, r.problems = r.users or {}, r.groups or {}, r.problems or {}
  if r.complete == nil then r.complete = true end
  return r
end

-- A read that failed with message err (and code).
local function failure(err, code)
  return result{ complete = false, problems = { err }, error = err, code = code }
end

-- Okta ids linked (on any target of sync entry s) to an account named login.
local function linked_ids(e, s, login)
  local ids, seen = {}, {}
  for _, tname in ipairs(s.targets) do
    for id, acct in pairs(state.links(e.db, s.name, tname)) do
      if acct:lower() == login:lower() and not seen[id] then
        seen[id] = true
        ids[#ids + 1] = id
      end
    end
  end
  return ids
end

-- After a 404 for an app assignment: nil when the app exists (the user is
-- simply not assigned), else an incomplete read — a deleted or mistyped
-- app must never read as "everybody left". Asked once per plan and source
-- (e.apps_seen, reset by each plan).
local function app_missing(e, src, scfg)
  e.apps_seen = e.apps_seen or {}
  local seen = e.apps_seen[scfg.app_id]
  if seen == nil then
    local app, err, code = src:app(scfg.app_id)
    if app then
      seen = false
    elseif code == "ENOTFOUND" then
      seen = ("the Okta app %s does not exist (deleted, or a wrong app_id)"):format(scfg.app_id)
    else
      return failure(err, code)
    end
    e.apps_seen[scfg.app_id] = seen
  end
  if seen then return failure(seen, "ENOTFOUND") end
  return nil
end

-- The read of one in-scope user `u`, completed with its counted groups.
local function read_user_groups(src, include, u)
  local groups, err, code = src:user_groups(u.id)
  if not groups then return failure(err, code) end

  local counted, ids = {}, {}
  for _, g in ipairs(groups) do
    if include(g) then counted[g.id] = g; ids[#ids + 1] = g.id end
  end
  u.groups = ids
  return result{ users = { u }, groups = counted, only_id = u.id }
end

-- A login that is not found may be the old login of a linked account whose
-- Okta user was renamed: each candidate is read by its Okta id. Returns the
-- user, or nil and the read to return (out of scope, or failed).
local function find_renamed(e, src, s, login)
  for _, id in ipairs(linked_ids(e, s, login)) do
    local u, _, code = src:user(id)
    if u then return u end
    if code ~= "ENOTFOUND" then
      return nil, result{ complete = false, problems = { "reading Okta user " .. id .. " failed" } }
    end
  end
  -- only ids Okta no longer has are out of scope
  return nil, result{ only_missing = login }
end

-- Whether user u is in the source's scope: assigned to its app, or found
-- by its expression narrowed to u's id (1 request). Returns true, or the
-- read to return instead (out of scope, or failed).
local function in_scope(e, src, scfg, u)
  if scfg.app_id then
    local assigned, err, code = src:app_user(scfg.app_id, u.id)
    if assigned then return true end
    if code ~= "ENOTFOUND" then return failure(err, code) end
    return app_missing(e, src, scfg) or result{ only_id = u.id }
  end

  if scfg.filter or scfg.search then
    local key = scfg.search and "search" or "filter"
    local found, err, code = src:users{ [key] = ("(%s) and id eq \"%s\""):format(scfg[key], u.id) }
    if not found then return failure(err, code) end
    if #found == 0 then return result{ only_id = u.id } end
  end
  return true
end

-- --user LOGIN: the user by id or login, their groups, and whether the app
-- assigns them. A user not found, or not assigned, reads as out of scope.
local function read_one_user(e, src, scfg, include, login, s)
  local u, err, code = src:user(login)
  if not u then
    if code ~= "ENOTFOUND" then return failure(err, code) end
    local gone
    u, gone = find_renamed(e, src, s, login)
    if not u then return gone end
  end

  local ok = in_scope(e, src, scfg, u)
  if ok ~= true then return ok end
  return read_user_groups(src, include, u)
end

-- One user by Okta id in an app's scope: the app assignment with the user
-- embedded (1 request) and its groups (1 more). Not assigned, deactivated
-- (Okta drops a DEPROVISIONED user's assignments) or deleted all read as
-- out of scope.
local function read_app_user_by_id(e, src, scfg, include, id, s)
  local au, err, code = src:app_user(scfg.app_id, id, { expand = "user" })
  if not au then
    if code ~= "ENOTFOUND" then return failure(err, code) end
    return app_missing(e, src, scfg) or result{ only_missing = id }
  end

  local u = au._embedded and au._embedded.user
  if type(u) ~= "table" or u.id ~= id then return read_one_user(e, src, scfg, include, id, s) end
  return read_user_groups(src, include, u)
end

-- Adds read r of one user to `out` (seen: the Okta ids already in it).
local function merge_user(e, out, seen, r, s, by_id)
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
      if state.link(e.db, s.name, tname, r.only_missing) then linked = true end
    end
    if not by_id then
      for _, id in ipairs(linked_ids(e, s, r.only_missing)) do out.only[id] = true; linked = true end
    end
    -- --user naming nothing Okta or the store knows: a usage error
    if not linked then
      out.unknown = out.unknown or {}
      out.unknown[#out.unknown + 1] = r.only_missing
    end
  end
end

-- A few users by login or id (--user, event hooks, the System Log poll):
-- each read as read_one_user does, 3 requests per user (user, app
-- assignment, groups); with by_id (Okta ids, as events name users) and an
-- app, 2 (read_app_user_by_id). `only` holds the Okta ids of the users read
-- and of the accounts linked to a login or id Okta no longer knows (those
-- leave scope).
local function read_users(e, src, scfg, include, list, s, by_id)
  local out, seen = result{ only = {} }, {}
  for _, login in ipairs(list) do
    local r
    if by_id and scfg.app_id then
      r = read_app_user_by_id(e, src, scfg, include, login, s)
    else
      r = read_one_user(e, src, scfg, include, login, s)
    end
    merge_user(e, out, seen, r, s, by_id)
  end
  return out
end

-- The messages of a read's problems (strings, or { message }).
local function messages(list, out)
  out = out or {}
  for _, p in ipairs(list or {}) do out[#out + 1] = p.message or tostring(p) end
  return out
end

-- The whole scope of the source, with progress events.
local function read_scope(e, s, src, scfg, include, group_errors, fields)
  local what = scfg.app_id and ("app " .. scfg.app_id) or "all users"
  e.progress{ phase = "okta", name = s.source, state = "start",
    expected = state.last_in_scope(e.db, s.name),
    message = ("reading %s (%s)"):format(s.source, what) }

  local function progress(done, total, unit)
    -- A stop request (serve's SIGTERM) ends a long read early.
    if e:stopping() then error("stop requested", 0) end
    e:renew_locks()
    e.progress{ phase = "okta", name = s.source, state = "update",
      done = done, total = total, what = unit }
  end
  -- only the Okta user fields the policy reads (Policy:user_fields)
  -- (compact: an Okta source's users in a usersync.userset; a SCIM source ignores it)
  local snap, err, code, partial = src:scope{ include = include, progress = progress, fields = fields,
                                              compact = true }

  e.progress{ phase = "okta", name = s.source, state = snap and "done" or "failed",
    error = err, code = code, requests = snap and snap.requests }

  if not snap then
    local problems = messages(partial and partial.problems)
    if #problems == 0 then problems[1] = err end
    return result{ complete = false, problems = problems, error = err, code = code }
  end

  local problems = messages(snap.problems)
  for _, msg in ipairs(group_errors) do problems[#problems + 1] = msg end
  return result{ users = snap.users, groups = snap.groups, problems = problems,
                 requests = snap.requests,
                 complete = snap.complete ~= false and #group_errors == 0 }
end

-- Reads the source of sync entry s: users in scope with their groups.
-- With `only_users` (a list of logins or ids), only those users (and only
-- when in scope; `only` is then the set of Okta ids the plan may touch).
-- A group counts for the read when it counts for any target of the sync.
function M.read(e, s, pol, only_users, by_id)
  local src = e:source(s.source)
  local scfg = e.cfg.sources[s.source]
  local ctxs = {}
  for _, tname in ipairs(s.targets) do
    ctxs[#ctxs + 1] = {
      sync = s.name, target = tname, target_type = e.cfg.targets[tname].type, settings = s,
      is_active = function() return true end, kv = { get = function() return nil end },
    }
  end

  local group_errors = {}
  local function include(g)
    for _, ctx in ipairs(ctxs) do
      local ok, err = pol:include_group(g, ctx)
      if ok then return true end
      if ok == nil then
        group_errors[#group_errors + 1] = ("include_group(%s): %s")
          :format(tostring(g.profile and g.profile.name or g.id), err)
        return true -- read its members anyway; the planner reports the error
      end
    end
    return false
  end

  if only_users then return read_users(e, src, scfg, include, only_users, s, by_id) end
  return read_scope(e, s, src, scfg, include, group_errors, pol.user_fields and pol:user_fields(s))
end

return M
