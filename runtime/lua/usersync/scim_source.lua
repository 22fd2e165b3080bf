-- usersync.scim_source: a `scim` source as the engine reads it. What the
-- identity providers pushed to serve's SCIM endpoint (usersync.scim) is in
-- the store; this module gives it the source interface of the Okta client
-- (usersync.okta), so usersync.source, the planner, the policy hooks and
-- `plan`, `sync`, `history`, `show` work on it unchanged:
--
--   local src = require("usersync.scim_source").new(db, "entra", cfg.sources.entra, cfg.state)
--   src:scope{ include = fn(group) -> bool, progress = fn }   -- { users, groups, complete, problems, requests = 0 }
--   src:user(id_or_userName)    -> user | nil, msg, "ENOTFOUND"
--   src:user_groups(id)         -> { group, ... }
--   src:changes{ since = iso8601 } -> { users = { user + groups }, requests = 0 }
--   src:check()                 -> the report of `usersync check`
--   src:budget() -> {}, src:requests() -> 0, src:close()
--
-- A SCIM User becomes the user shape the policy hooks know from Okta:
--   { id, status = "ACTIVE" | "DEPROVISIONED" (active false), created, lastUpdated,
--     profile = { login = userName, email (the primary email, else the work one,
--       else the first), firstName = name.givenName, lastName = name.familyName,
--       displayName, externalId, title, userType, employeeNumber, department,
--       division, organization, costCenter, manager (the enterprise extension) },
--     scim = the whole SCIM resource, groups = { counted group ids } }
-- and a Group { id, type = "SCIM", profile = { name = displayName,
-- description }, scim = the resource }.
-- The store is the source's whole truth: a read is complete unless the
-- store cannot be read.
local json = require "usersync.json"
local scim = require "usersync.scim"

local M = {}
local Src = {}
Src.__index = Src

function M.new(db, name, scfg, state_path)
  return setmetatable({ db = db, name = name, scfg = scfg, state_path = state_path }, Src)
end

function Src:close()
  if self.own_db then self.own_db:close(); self.own_db = nil end
end
function Src:budget() return {} end
function Src:requests() return 0 end

-- The store (the engine's, or one opened for `check`).
function Src:store()
  if self.db then return self.db end
  if not self.own_db then
    local db, err, code = require("usersync.state").open(self.state_path)
    if not db then return nil, err, code end
    self.own_db = db
  end
  return self.own_db
end

local function text(v) return type(v) == "string" and v ~= "" and v or nil end

local function primary_email(emails)
  if type(emails) ~= "table" then return nil end
  local work, first
  for _, e in ipairs(emails) do
    if type(e) == "table" and text(e.value) then
      if e.primary == true then return e.value end
      if not work and e.type == "work" then work = e.value end
      first = first or e.value
    end
  end
  return work or first
end

-- The Okta-shaped user of a scim_users row.
function M.user_of(row)
  local r = json.decode(row.resource) or {}
  r.id = row.id
  local name = type(r.name) == "table" and r.name or {}
  local ent = type(r[scim.ENTERPRISE]) == "table" and r[scim.ENTERPRISE] or {}
  local manager = ent.manager
  if type(manager) == "table" then manager = text(manager.displayName) or text(manager.value) end
  return {
    id = row.id,
    status = row.active == 1 and "ACTIVE" or "DEPROVISIONED",
    created = row.created, lastUpdated = row.modified,
    profile = {
      login = row.user_name, email = primary_email(r.emails),
      firstName = text(name.givenName), lastName = text(name.familyName),
      displayName = text(r.displayName), externalId = text(r.externalId), title = text(r.title),
      userType = text(r.userType), employeeNumber = text(ent.employeeNumber),
      department = text(ent.department), division = text(ent.division),
      organization = text(ent.organization), costCenter = text(ent.costCenter),
      manager = text(manager),
    },
    scim = r,
  }
end

function M.group_of(row)
  local r = json.decode(row.resource) or {}
  r.id = row.id
  return { id = row.id, type = "SCIM", profile = { name = row.display_name, description = text(r.description) },
           scim = r }
end

local USER_COLS = "id, user_name, active, resource, created, modified"

function Src:scope(opts)
  opts = opts or {}
  local db, err, code = self:store()
  if not db then return nil, err, code, { complete = false, problems = { { code = code, message = err } } } end
  local include = opts.include or function() return true end
  local ok, res = pcall(function()
    local groups, counted = {}, {}
    for row in db:rows("SELECT id, display_name, resource FROM scim_groups WHERE source = ?", self.name) do
      local g = M.group_of(row)
      if include(g) then groups[g.id] = g; counted[g.id] = true end
    end
    if opts.progress then opts.progress(0, nil, "groups") end
    local of = {}
    for row in db:rows("SELECT group_id, user_id FROM scim_members WHERE source = ?", self.name) do
      if counted[row.group_id] then
        local l = of[row.user_id]
        if not l then l = {}; of[row.user_id] = l end
        l[#l + 1] = row.group_id
      end
    end
    local users = json.array{}
    for row in db:rows("SELECT " .. USER_COLS .. " FROM scim_users WHERE source = ? ORDER BY rowid", self.name) do
      local u = M.user_of(row)
      local gl = of[u.id] or {}
      table.sort(gl)
      u.groups = gl
      users[#users + 1] = u
    end
    if opts.progress then opts.progress(#users, #users, "users") end
    return { users = users, groups = groups, complete = true, problems = {}, requests = 0 }
  end)
  if not ok then
    local msg = type(res) == "table" and tostring(res.message or res[1]) or tostring(res)
    if msg == "stop requested" then error(msg, 0) end
    return nil, ("reading the pushed users of %s from the store failed: %s"):format(self.name, msg), "ESTORE",
      { complete = false, problems = { { code = "ESTORE", message = msg } } }
  end
  return res
end

-- One user by id, else by userName (case-insensitive).
function Src:user(key)
  local db, err, code = self:store()
  if not db then return nil, err, code end
  local row = db:first("SELECT " .. USER_COLS .. " FROM scim_users WHERE source = ? AND id = ?", self.name, key)
    or db:first("SELECT " .. USER_COLS .. " FROM scim_users WHERE source = ? AND user_name_lc = ?", self.name,
                tostring(key):lower())
  if not row then return nil, ("no user %s was pushed to %s"):format(key, self.name), "ENOTFOUND" end
  return M.user_of(row)
end

function Src:user_groups(id)
  local db, err, code = self:store()
  if not db then return nil, err, code end
  local out = {}
  for row in db:rows("SELECT g.id, g.display_name, g.resource FROM scim_members m JOIN scim_groups g "
      .. "ON g.source = m.source AND g.id = m.group_id WHERE m.source = ? AND m.user_id = ? ORDER BY g.id",
      self.name, id) do
    out[#out + 1] = M.group_of(row)
  end
  return out
end

-- Users changed since a time (lastModified), with their groups.
function Src:changes(opts)
  local db, err, code = self:store()
  if not db then return nil, err, code end
  local since = opts and (opts.since or opts.watermark) or "0000"
  local users, newest = {}, since
  for row in db:rows("SELECT " .. USER_COLS .. " FROM scim_users WHERE source = ? AND modified > ? ORDER BY modified",
      self.name, since) do
    local u = M.user_of(row)
    local gl = {}
    for _, g in ipairs(self:user_groups(u.id)) do gl[#gl + 1] = g.id end
    u.groups = gl
    users[#users + 1] = u
    if row.modified > newest then newest = row.modified end
  end
  return { users = users, watermark = newest, requests = 0 }
end

function Src:check()
  local db, err = self:store()
  if not db then
    return { ok = false, reachable = false, error = err }
  end
  local ok, n = pcall(function()
    return db:first("SELECT (SELECT count(*) FROM scim_users WHERE source = ?1) AS users, "
      .. "(SELECT count(*) FROM scim_groups WHERE source = ?1) AS groups", self.name)
  end)
  if not ok or not n then
    return { ok = false, reachable = false, error = "the store cannot be read: " .. tostring(n) }
  end
  return { ok = true, reachable = true,
           stored = ("%d users and %d groups pushed so far (to /scim/v2/%s/ of usersync serve)")
             :format(n.users, n.groups, self.name) }
end

return M
