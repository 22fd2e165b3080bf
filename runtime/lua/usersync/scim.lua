-- usersync.scim: the SCIM 2.0 service provider (RFC 7643, RFC 7644) of a
-- `scim` source: what an identity provider pushes to `usersync serve` at
-- /scim/v2/<source>/ lands in the store (scim_users, scim_groups,
-- scim_members) and is that source's truth (usersync.scim_source reads it
-- for plan and sync).
--
--   local scim = require "usersync.scim"
--   local sp = scim.new(db, "entra")             -- db: a usersync.store handle
--   local status, body, headers = sp:handle{
--     method = "GET", path = "/Users", args = { filter = 'userName eq "ann"' },
--     body = nil, if_match = nil, base = "https://sync.example.com/scim/v2/entra" }
--
-- Resources: /Users, /Groups (create, get, list with filter, paging and
-- attributes/excludedAttributes, PUT, PATCH, DELETE), /ServiceProviderConfig,
-- /ResourceTypes, /Schemas. Every write runs in one transaction that also
-- records the users it touched in scim_changes (what serve syncs next).
-- Authentication is the HTTP server's (runtime/scim_server.c): a request
-- reaches this module only with the source's Bearer token.
--
-- Identity providers' habits accepted: op names in any case ("Replace"),
-- booleans as strings ("False"), paths in a PATCH value object's keys
-- ("name.givenName", URN-qualified), `emails[type eq "work"].value` on a
-- user without a work email (adds one), removal of members by value list or
-- by value filter, readOnly attributes (id, meta, groups) in a request
-- (ignored). A password is never stored.
local json = require "usersync.json"
local sf = require "usersync.scim_filter"
local time = require "usersync.time"
local crypto = require "usersync.crypto"

local M = {}

M.USER = "urn:ietf:params:scim:schemas:core:2.0:User"
M.GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
M.ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
M.LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
M.ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
M.PATCHOP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
M.CTYPE = "application/scim+json"

M.MAX_RESULTS = 1000   -- largest page (ServiceProviderConfig filter.maxResults)
M.MAX_OPERATIONS = 1000 -- PATCH operations per request

local null = json.null

-- Canonical spelling of the attributes usersync knows (case-insensitive on input).
local CANON = {}
for _, a in ipairs{ "userName", "name", "displayName", "nickName", "profileUrl", "title", "userType",
  "preferredLanguage", "locale", "timezone", "active", "password", "emails", "phoneNumbers", "ims",
  "photos", "addresses", "groups", "entitlements", "roles", "x509Certificates", "externalId", "id",
  "meta", "schemas", "members", "employeeNumber", "costCenter", "organization", "division",
  "department", "manager", "givenName", "familyName", "formatted", "middleName", "honorificPrefix",
  "honorificSuffix", "value", "display", "type", "primary", "streetAddress", "locality", "region",
  "postalCode", "country" } do
  CANON[a:lower()] = a
end
local MULTI = { emails = true, phonenumbers = true, ims = true, photos = true, addresses = true,
                entitlements = true, roles = true, x509certificates = true, members = true, groups = true }
local READONLY = { id = true, meta = true, groups = true }

---------------------------------------------------------------- errors

local function fail(status, scim_type, detail)
  error({ scim = true, status = status, scimType = scim_type, detail = detail }, 0)
end
M.fail = fail

local function error_body(status, scim_type, detail)
  return json.encode{ schemas = json.array{ M.ERROR }, status = tostring(status),
                      scimType = scim_type, detail = detail }
end
M.error_body = error_body

---------------------------------------------------------------- helpers

local function is_list(v) return type(v) == "table" and (json.is_array(v) or v[1] ~= nil) end

local key_of = sf.key_ci

local function canon(name) return CANON[name] or name end

local function deep_equal(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then
    if type(a) == "string" and type(b) == "string" then return a:lower() == b:lower() end
    return false
  end
  for k, v in pairs(a) do if not deep_equal(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

local function same_item(a, b)
  if type(a) == "table" and type(b) == "table" then
    local va, vb = sf.get_ci(a, "value"), sf.get_ci(b, "value")
    if va ~= nil and vb ~= nil then
      local ta, tb = sf.get_ci(a, "type"), sf.get_ci(b, "type")
      return tostring(va):lower() == tostring(vb):lower() and (ta == nil or tb == nil or ta == tb)
    end
  end
  return deep_equal(a, b)
end

-- "True"/"False" (Entra ID) -> booleans, for the attributes that are booleans.
local function to_bool(v)
  if type(v) == "string" then
    local l = v:lower()
    if l == "true" then return true end
    if l == "false" then return false end
  end
  return v
end

local function copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = copy(x) end
  local mt = getmetatable(v)
  if mt == json.array_mt or mt == json.object_mt then setmetatable(c, mt) end
  return c
end

-- The booleans of a User, normalised (active; primary of multi-valued items).
local function normalise_user(r)
  local k = key_of(r, "active")
  if k then
    local v = to_bool(r[k])
    r[k] = nil
    if v == null then v = nil end
    if v ~= nil and type(v) ~= "boolean" then fail(400, "invalidValue", "active must be a boolean") end
    r.active = v
  end
  for key, v in pairs(r) do
    if type(key) == "string" and MULTI[key:lower()] and is_list(v) then
      for _, item in ipairs(v) do
        if type(item) == "table" then
          local pk = key_of(item, "primary")
          if pk then item[pk] = to_bool(item[pk]) end
        end
      end
    end
  end
end

local function new_id() return crypto.random_hex(16) end

local function etag(version) return ('W/"%d"'):format(version) end

local function now() return time.format(time.now()) end

---------------------------------------------------------------- the provider

local SP = {}
SP.__index = SP

-- The store's calls, raising on failure (inside a write: rolls it back).
local DB = {}
DB.__index = DB
local function check(v, err, code, ...)
  if v == nil and err ~= nil then error({ code = code, message = err }, 0) end
  return v, err, code, ...
end
function DB:exec(...) return (check(self.h:exec(...))) end
function DB:first(...) return (check(self.h:first(...))) end
function DB:query(...) return (check(self.h:query(...))) end
function DB:rows(...) return self.h:rows(...) end
function DB:transaction(fn) return check(self.h:transaction(fn)) end

function M.new(db, source)
  return setmetatable({ db = setmetatable({ h = db }, DB), source = source }, SP)
end

-- Records that the users ids were touched by this push (same transaction).
function SP:touch(ids)
  for _, id in ipairs(ids) do
    self.db:exec("INSERT INTO scim_changes (source, user_id) VALUES (?, ?)", self.source, id)
  end
end

---------------------------------------------------------------- users

function SP:user_row(id)
  return self.db:first("SELECT id, user_name, external_id, active, resource, created, modified, version "
    .. "FROM scim_users WHERE source = ? AND id = ?", self.source, id)
end

function SP:user_groups(id, base)
  local out = json.array{}
  for row in self.db:rows("SELECT g.id, g.display_name FROM scim_members m JOIN scim_groups g "
      .. "ON g.source = m.source AND g.id = m.group_id WHERE m.source = ? AND m.user_id = ? ORDER BY g.display_name",
      self.source, id) do
    out[#out + 1] = { value = row.id, display = row.display_name, ["$ref"] = base .. "/Groups/" .. row.id,
                      type = "direct" }
  end
  return out
end

-- A stored row as the User resource.
function SP:user_resource(row, base, want_groups)
  local r = json.decode(row.resource)
  r.id = row.id
  r.meta = { resourceType = "User", created = row.created, lastModified = row.modified,
             location = base .. "/Users/" .. row.id, version = etag(row.version) }
  if want_groups then
    local g = self:user_groups(row.id, base)
    if #g > 0 then r.groups = g end
  end
  return r
end

-- A User from a request body: checked, cleaned, normalised.
local function user_from(body)
  if type(body) ~= "table" or is_list(body) then fail(400, "invalidSyntax", "the body must be a JSON object") end
  local r = {}
  for k, v in pairs(body) do
    local l = type(k) == "string" and k:lower()
    if l and not READONLY[l] and l ~= "password" and v ~= null then r[CANON[l] or k] = v end
  end
  normalise_user(r)
  local name = r.userName
  if type(name) ~= "string" or name:match("^%s*$") then
    fail(400, "invalidValue", "userName is required (a non-empty string)")
  end
  if r.externalId ~= nil and type(r.externalId) ~= "string" then fail(400, "invalidValue", "externalId must be a string") end
  if r.active == nil then r.active = true end
  if type(r.schemas) ~= "table" then
    r.schemas = json.array{ M.USER }
    if r[M.ENTERPRISE] then r.schemas[2] = M.ENTERPRISE end
  end
  return r
end

function SP:check_unique_user(name, id)
  local row = self.db:first("SELECT id FROM scim_users WHERE source = ? AND user_name_lc = ?",
    self.source, name:lower())
  if row and row.id ~= id then
    fail(409, "uniqueness", ("userName %q is already taken"):format(name))
  end
end

function SP:store_user(id, r, created, version, insert)
  local ts = now()
  local text = json.encode(r)
  local ext = r.externalId
  if insert then
    self.db:exec("INSERT INTO scim_users (source, id, user_name, user_name_lc, external_id, active, resource, "
      .. "created, modified, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
      self.source, id, r.userName, r.userName:lower(), ext, r.active ~= false, text, ts, ts)
  else
    self.db:exec("UPDATE scim_users SET user_name = ?, user_name_lc = ?, external_id = ?, active = ?, "
      .. "resource = ?, modified = ?, version = version + 1 WHERE source = ? AND id = ?",
      r.userName, r.userName:lower(), ext, r.active ~= false, text, ts, self.source, id)
  end
  self:touch{ id }
end

local function check_etag(req, version)
  local want = req.if_match
  if want and want ~= "*" then
    local ok = false
    for tag in want:gmatch("[^,]+") do
      tag = tag:match("^%s*(.-)%s*$")
      if tag == etag(version) or tag == ('"%d"'):format(version) then ok = true end
    end
    if not ok then fail(412, nil, "the resource was changed since the version given in If-Match") end
  end
end

function SP:create_user(req, body)
  local r = user_from(body)
  local id = new_id()
  self:check_unique_user(r.userName, nil)
  self:store_user(id, r, nil, 1, true)
  return 201, self:user_resource(self:user_row(id), req.base, true)
end

function SP:replace_user(req, id, body)
  local row = self:user_row(id) or fail(404, nil, "no user " .. id)
  check_etag(req, row.version)
  local r = user_from(body)
  self:check_unique_user(r.userName, id)
  self:store_user(id, r, row.created, row.version, false)
  return 200, self:user_resource(self:user_row(id), req.base, true)
end

function SP:delete_user(req, id)
  local row = self:user_row(id) or fail(404, nil, "no user " .. id)
  check_etag(req, row.version)
  self.db:exec("DELETE FROM scim_members WHERE source = ? AND user_id = ?", self.source, id)
  self.db:exec("DELETE FROM scim_users WHERE source = ? AND id = ?", self.source, id)
  self:touch{ id }
  return 204
end

---------------------------------------------------------------- PATCH

local function patch_ops(body)
  if type(body) ~= "table" then fail(400, "invalidSyntax", "the body must be a PatchOp object") end
  local ops = body.Operations or body.operations
  if not is_list(ops) then fail(400, "invalidSyntax", "Operations must be a list") end
  if #ops > M.MAX_OPERATIONS then fail(400, "tooMany", "too many operations") end
  return ops
end

-- The object attributes of `urn` live in (the resource, or its extension,
-- created when `create`).
local function container(r, urn, create)
  if not urn or urn:match("^urn:ietf:params:scim:schemas:core:") then return r end
  local k = key_of(r, urn)
  if k then return r[k] end
  if not create then return nil end
  local name = urn == M.ENTERPRISE:lower() and M.ENTERPRISE or urn
  r[name] = {}
  if type(r.schemas) == "table" then
    local has = false
    for _, s in ipairs(r.schemas) do if type(s) == "string" and s:lower() == urn then has = true end end
    if not has then r.schemas[#r.schemas + 1] = name end
  end
  return r[name]
end

-- A new item for a value path that matched nothing: the eq terms of its
-- filter (emails[type eq "work"] -> { type = "work" }).
local function item_from_filter(f, out)
  out = out or {}
  if f.op == "eq" and not f.sub and not f.urn then out[canon(f.attr)] = f.value
  elseif f.op == "and" then item_from_filter(f[1], out); item_from_filter(f[2], out) end
  return out
end

local apply_op -- forward

-- One operation on resource r (kind "User"/"Group"; members are the
-- caller's for groups).
function apply_op(r, op, path_text, value)
  if path_text == nil then
    if op == "remove" then fail(400, "noTarget", "remove needs a path") end
    if type(value) ~= "table" or is_list(value) then fail(400, "invalidValue", "an operation without a path needs an object value") end
    for k, v in pairs(value) do
      if type(k) == "string" then
        local l = k:lower()
        local p = l:match("^urn:") and sf.path(k)
        if p and p.attr == nil and type(v) == "table" and not is_list(v) then
          -- an extension object: each of its attributes
          for k2, v2 in pairs(v) do apply_op(r, op, k .. ":" .. k2, v2) end
        else
          apply_op(r, op, k, v)
        end
      end
    end
    return
  end
  local p, perr = sf.path(path_text)
  if not p then fail(400, "invalidPath", perr) end
  if p.attr == nil then
    -- the extension as a whole
    if op == "remove" then
      local k = key_of(r, p.urn)
      if k then r[k] = nil end
    else
      local c = container(r, p.urn, true)
      if type(value) == "table" then for k2, v2 in pairs(value) do c[k2] = v2 end end
    end
    return
  end
  if READONLY[p.attr] then return end -- id, meta, groups: ignored
  if p.attr == "password" then return end
  local c = container(r, p.urn, op ~= "remove")
  if not c then return end
  local key = key_of(c, p.attr) or canon(p.attr)
  local cur = c[key]
  if value == null then
    if op == "replace" or op == "add" then op, value = "remove", nil end
  end

  if p.filter then
    if cur ~= nil and not is_list(cur) then fail(400, "invalidPath", p.attr .. " is not multi-valued") end
    local list = cur or json.array{}
    local hits = {}
    for i, item in ipairs(list) do
      if type(item) == "table" and sf.match(p.filter, item) then hits[#hits + 1] = i end
    end
    if op == "remove" then
      for i = #hits, 1, -1 do
        if p.sub then
          local item = list[hits[i]]
          local sk = key_of(item, p.sub)
          if sk then item[sk] = nil end
        else
          table.remove(list, hits[i])
        end
      end
      if #list == 0 then c[key] = nil end
      return
    end
    if #hits == 0 then
      -- nothing matched: a new item from the filter's terms (Entra ID's
      -- emails[type eq "work"].value on a user without a work email)
      local item = item_from_filter(p.filter)
      if p.sub then item[canon(p.sub)] = value
      elseif type(value) == "table" and not is_list(value) then for k2, v2 in pairs(value) do item[k2] = v2 end
      else fail(400, "invalidValue", "a value filter path needs an object value") end
      list[#list + 1] = item
      c[key] = setmetatable(list, json.array_mt)
      return
    end
    for _, i in ipairs(hits) do
      if p.sub then
        local item = list[i]
        item[key_of(item, p.sub) or canon(p.sub)] = value
      elseif type(value) == "table" and not is_list(value) then
        if op == "replace" then list[i] = copy(value) else for k2, v2 in pairs(value) do list[i][k2] = v2 end end
      else
        fail(400, "invalidValue", "a value filter path needs an object value")
      end
    end
    return
  end

  if p.sub then
    if op == "remove" then
      if type(cur) == "table" then
        if is_list(cur) then
          for _, item in ipairs(cur) do local sk = key_of(item, p.sub); if sk then item[sk] = nil end end
        else
          local sk = key_of(cur, p.sub)
          if sk then cur[sk] = nil end
          if next(cur) == nil then c[key] = nil end
        end
      end
      return
    end
    if type(cur) ~= "table" then cur = {}; c[key] = cur end
    if is_list(cur) then
      for _, item in ipairs(cur) do item[key_of(item, p.sub) or canon(p.sub)] = value end
    else
      cur[key_of(cur, p.sub) or canon(p.sub)] = value
    end
    return
  end

  if op == "remove" then
    if value ~= nil and is_list(cur) then
      -- Entra ID removes members (and values) by listing them
      local drop = is_list(value) and value or { value }
      for i = #cur, 1, -1 do
        for _, d in ipairs(drop) do
          if same_item(cur[i], d) then table.remove(cur, i); break end
        end
      end
      if #cur == 0 then c[key] = nil end
    else
      c[key] = nil
    end
    return
  end
  local multi = MULTI[p.attr] or is_list(cur) or is_list(value)
  if multi then
    local add = is_list(value) and value or { value }
    if op == "replace" or not is_list(cur) then cur = json.array{} end
    for _, v in ipairs(add) do
      local dup = false
      for i, have in ipairs(cur) do
        if same_item(have, v) then cur[i] = copy(v); dup = true; break end
      end
      if not dup then cur[#cur + 1] = copy(v) end
    end
    c[key] = setmetatable(cur, json.array_mt)
    return
  end
  if type(value) == "table" and type(cur) == "table" and not is_list(value) then
    -- a complex attribute: the sub-attributes given replace theirs
    for k2, v2 in pairs(value) do cur[k2] = v2 end
    return
  end
  c[key] = copy(value)
end

local function each_op(body, fn)
  for _, o in ipairs(patch_ops(body)) do
    if type(o) ~= "table" then fail(400, "invalidSyntax", "an operation must be an object") end
    local op = type(o.op) == "string" and o.op:lower() or nil
    if op ~= "add" and op ~= "replace" and op ~= "remove" then
      fail(400, "invalidSyntax", ("unknown op %s"):format(tostring(o.op)))
    end
    if o.path ~= nil and type(o.path) ~= "string" then fail(400, "invalidPath", "path must be a string") end
    if op ~= "remove" and o.value == nil then fail(400, "invalidValue", op .. " needs a value") end
    fn(op, o.path, o.value)
  end
end

function SP:patch_user(req, id, body)
  local row = self:user_row(id) or fail(404, nil, "no user " .. id)
  check_etag(req, row.version)
  local r = json.decode(row.resource)
  each_op(body, function(op, path, value) apply_op(r, op, path, copy(value)) end)
  normalise_user(r)
  if type(r.userName) ~= "string" or r.userName == "" then fail(400, "mutability", "userName cannot be removed") end
  if r.active == nil then r.active = true end
  if r.userName:lower() ~= row.user_name:lower() then self:check_unique_user(r.userName, id) end
  self:store_user(id, r, row.created, row.version, false)
  return 200, self:user_resource(self:user_row(id), req.base, true)
end

---------------------------------------------------------------- groups

function SP:group_row(id)
  return self.db:first("SELECT id, display_name, external_id, resource, created, modified, version "
    .. "FROM scim_groups WHERE source = ? AND id = ?", self.source, id)
end

function SP:member_ids(gid)
  local out = {}
  for row in self.db:rows("SELECT user_id FROM scim_members WHERE source = ? AND group_id = ?", self.source, gid) do
    out[#out + 1] = row.user_id
  end
  return out
end

function SP:group_resource(row, base, members)
  local r = json.decode(row.resource)
  r.id = row.id
  r.meta = { resourceType = "Group", created = row.created, lastModified = row.modified,
             location = base .. "/Groups/" .. row.id, version = etag(row.version) }
  if members then
    local list = json.array{}
    for m in self.db:rows("SELECT m.user_id, u.user_name FROM scim_members m LEFT JOIN scim_users u "
        .. "ON u.source = m.source AND u.id = m.user_id WHERE m.source = ? AND m.group_id = ? ORDER BY m.user_id",
        self.source, row.id) do
      list[#list + 1] = { value = m.user_id, display = m.user_name, type = "User",
                          ["$ref"] = base .. "/Users/" .. m.user_id }
    end
    r.members = list
  end
  return r
end

-- The member ids of a members value (a list of { value = id }); ids the
-- source does not have are left out.
function SP:member_values(v)
  local out = {}
  if v == nil or v == null then return out end
  if not is_list(v) then v = { v } end
  for _, m in ipairs(v) do
    local id = type(m) == "table" and sf.get_ci(m, "value") or m
    if type(id) ~= "string" then fail(400, "invalidValue", "a member needs a string value (the user's id)") end
    if self.db:first("SELECT 1 AS x FROM scim_users WHERE source = ? AND id = ?", self.source, id) then
      out[#out + 1] = id
    end
  end
  return out
end

function SP:add_members(gid, ids)
  local added = {}
  for _, id in ipairs(ids) do
    local n = self.db:exec("INSERT OR IGNORE INTO scim_members (source, group_id, user_id) VALUES (?, ?, ?)",
      self.source, gid, id)
    if n > 0 then added[#added + 1] = id end
  end
  return added
end

function SP:remove_members(gid, ids)
  local gone = {}
  for _, id in ipairs(ids) do
    local n = self.db:exec("DELETE FROM scim_members WHERE source = ? AND group_id = ? AND user_id = ?",
      self.source, gid, id)
    if n > 0 then gone[#gone + 1] = id end
  end
  return gone
end

local function group_from(body)
  if type(body) ~= "table" or is_list(body) then fail(400, "invalidSyntax", "the body must be a JSON object") end
  local r, members = {}, nil
  for k, v in pairs(body) do
    local l = type(k) == "string" and k:lower()
    if l == "members" then members = v
    elseif l and not READONLY[l] and v ~= null then r[CANON[l] or k] = v end
  end
  if type(r.displayName) ~= "string" or r.displayName:match("^%s*$") then
    fail(400, "invalidValue", "displayName is required (a non-empty string)")
  end
  if r.externalId ~= nil and type(r.externalId) ~= "string" then fail(400, "invalidValue", "externalId must be a string") end
  if type(r.schemas) ~= "table" then r.schemas = json.array{ M.GROUP } end
  return r, members
end

function SP:store_group(id, r, insert)
  local ts = now()
  if insert then
    self.db:exec("INSERT INTO scim_groups (source, id, display_name, display_name_lc, external_id, resource, "
      .. "created, modified, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
      self.source, id, r.displayName, r.displayName:lower(), r.externalId, json.encode(r), ts, ts)
  else
    self.db:exec("UPDATE scim_groups SET display_name = ?, display_name_lc = ?, external_id = ?, resource = ?, "
      .. "modified = ?, version = version + 1 WHERE source = ? AND id = ?",
      r.displayName, r.displayName:lower(), r.externalId, json.encode(r), ts, self.source, id)
  end
end

-- What a group write answers: the group (members unless excluded), or 204
-- for a PATCH that asked for no attributes (Okta and Entra ID both take it,
-- and a large group is not sent back for every member added).
function SP:group_answer(req, id, status)
  return status, self:group_resource(self:group_row(id), req.base, true)
end

function SP:create_group(req, body)
  local r, members = group_from(body)
  local id = new_id()
  self:store_group(id, r, true)
  self:touch(self:add_members(id, self:member_values(members)))
  return self:group_answer(req, id, 201)
end

function SP:replace_group(req, id, body)
  local row = self:group_row(id) or fail(404, nil, "no group " .. id)
  check_etag(req, row.version)
  local r, members = group_from(body)
  self:store_group(id, r, false)
  local touched = {}
  if r.displayName ~= row.display_name then touched = self:member_ids(id) end
  if members ~= nil then
    local want, keep = self:member_values(members), {}
    for _, m in ipairs(want) do keep[m] = true end
    local drop = {}
    for _, m in ipairs(self:member_ids(id)) do if not keep[m] then drop[#drop + 1] = m end end
    for _, m in ipairs(self:remove_members(id, drop)) do touched[#touched + 1] = m end
    for _, m in ipairs(self:add_members(id, want)) do touched[#touched + 1] = m end
  end
  self:touch(touched)
  return self:group_answer(req, id, 200)
end

function SP:delete_group(req, id)
  local row = self:group_row(id) or fail(404, nil, "no group " .. id)
  check_etag(req, row.version)
  local members = self:member_ids(id)
  self.db:exec("DELETE FROM scim_members WHERE source = ? AND group_id = ?", self.source, id)
  self.db:exec("DELETE FROM scim_groups WHERE source = ? AND id = ?", self.source, id)
  self:touch(members)
  return 204
end

-- A PATCH on a group: operations on members go straight to scim_members
-- (one row each, never the whole list); the others change the resource.
function SP:patch_group(req, id, body)
  local row = self:group_row(id) or fail(404, nil, "no group " .. id)
  check_etag(req, row.version)
  local r = json.decode(row.resource)
  local touched = {}
  local function note(list) for _, m in ipairs(list) do touched[#touched + 1] = m end end
  local function members_op(op, p, value)
    if op == "add" then
      note(self:add_members(id, self:member_values(value)))
    elseif op == "replace" then
      local want = self:member_values(value)
      local keep = {}
      for _, m in ipairs(want) do keep[m] = true end
      local drop = {}
      for _, m in ipairs(self:member_ids(id)) do if not keep[m] then drop[#drop + 1] = m end end
      note(self:remove_members(id, drop))
      note(self:add_members(id, want))
    elseif p and p.filter then
      local drop = {}
      for _, m in ipairs(self:member_ids(id)) do
        if sf.match(p.filter, { value = m, type = "User" }) then drop[#drop + 1] = m end
      end
      note(self:remove_members(id, drop))
    elseif value ~= nil and value ~= null then
      local drop = {}
      for _, m in ipairs(is_list(value) and value or { value }) do
        local v = type(m) == "table" and sf.get_ci(m, "value") or m
        if type(v) == "string" then drop[#drop + 1] = v end
      end
      note(self:remove_members(id, drop))
    else
      note(self:remove_members(id, self:member_ids(id)))
    end
  end
  each_op(body, function(op, path, value)
    if path == nil and type(value) == "table" and not is_list(value) then
      local rest = {}
      for k, v in pairs(value) do
        if type(k) == "string" and k:lower() == "members" then members_op(op, nil, v) else rest[k] = v end
      end
      if next(rest) then apply_op(r, op, nil, copy(rest)) end
      return
    end
    local p = path and sf.path(path)
    if p and p.attr == "members" and not p.urn then
      if p.sub then fail(400, "invalidPath", "members sub-attributes cannot be changed") end
      if p.filter and op ~= "remove" then fail(400, "invalidPath", "a members value filter is for remove only") end
      return members_op(op, p, value)
    end
    apply_op(r, op, path, copy(value))
  end)
  if type(r.displayName) ~= "string" or r.displayName == "" then fail(400, "mutability", "displayName cannot be removed") end
  if r.displayName ~= row.display_name then
    -- a rename moves every member to another target group
    note(self:member_ids(id))
  end
  self:store_group(id, r, false)
  self:touch(touched)
  local wants = req.args.attributes or req.args.excludedAttributes
  if not wants then return 204 end
  return self:group_answer(req, id, 200)
end

---------------------------------------------------------------- listing

local function arg_int(args, name, default)
  local v = args[name]
  if v == nil or v == "" then return default end
  local n = tonumber(v)
  if not n or n ~= math.floor(n) then fail(400, "invalidValue", name .. " must be an integer") end
  return math.tointeger(n)
end

-- The attribute names of attributes= / excludedAttributes= (lowercase;
-- URN-qualified names keep their URN).
local function attr_list(text)
  if not text or text == "" then return nil end
  local out = {}
  for a in text:gmatch("[^,%s]+") do
    local p = sf.path(a)
    if p then out[#out + 1] = p end
  end
  return out
end

-- The resource r cut down to what the request asks for.
local function project(r, req)
  local only = attr_list(req.args.attributes)
  local excluded = attr_list(req.args.excludedAttributes)
  if only then
    local out = { id = r.id, schemas = r.schemas, meta = r.meta }
    for _, p in ipairs(only) do
      local src = sf.container(r, p.urn)
      local dst = out
      if src ~= r and p.urn then
        local k = key_of(r, p.urn)
        if k then out[k] = out[k] or {}; dst = out[k] end
      end
      if p.attr and src then
        local k = key_of(src, p.attr)
        if k then
          if p.sub and type(src[k]) == "table" and not is_list(src[k]) then
            dst[k] = dst[k] or {}
            local sk = key_of(src[k], p.sub)
            if sk then dst[k][sk] = src[k][sk] end
          else
            dst[k] = src[k]
          end
        end
      elseif not p.attr and p.urn then
        local k = key_of(r, p.urn)
        if k then out[k] = r[k] end
      end
    end
    return out
  end
  if excluded then
    for _, p in ipairs(excluded) do
      local c = sf.container(r, p.urn)
      if c and p.attr and p.attr ~= "id" and p.attr ~= "schemas" then
        local k = key_of(c, p.attr)
        if k then
          if p.sub and type(c[k]) == "table" then
            local sk = key_of(c[k], p.sub)
            if sk then c[k][sk] = nil end
          else
            c[k] = nil
          end
        end
      end
    end
  end
  return r
end

local function wants_members(req)
  local ex = attr_list(req.args.excludedAttributes)
  for _, p in ipairs(ex or {}) do if p.attr == "members" and not p.sub then return false end end
  local only = attr_list(req.args.attributes)
  if only then
    for _, p in ipairs(only) do if p.attr == "members" then return true end end
    return false
  end
  return true
end

local function wants_groups(req)
  local ex = attr_list(req.args.excludedAttributes)
  for _, p in ipairs(ex or {}) do if p.attr == "groups" then return false end end
  local only = attr_list(req.args.attributes)
  if only then
    for _, p in ipairs(only) do if p.attr == "groups" then return true end end
    return false
  end
  return true
end

-- The candidates' rows for a filter: an index look-up when the filter has
-- one (hint), else every row of the source (in creation order).
local USER_COLS = "id, user_name, external_id, active, resource, created, modified, version"
local GROUP_COLS = "id, display_name, external_id, resource, created, modified, version"

function SP:candidates(kind, hint, limit, offset)
  local src = self.source
  local sql, args
  if kind == "User" then
    sql = "SELECT " .. USER_COLS .. " FROM scim_users WHERE source = ?"
    if hint and hint.attr == "username" then sql = sql .. " AND user_name_lc = ?"; args = { hint.value:lower() }
    elseif hint and hint.attr == "externalid" then sql = sql .. " AND external_id = ?"; args = { hint.value }
    elseif hint and hint.attr == "id" then sql = sql .. " AND id = ?"; args = { hint.value } end
  else
    sql = "SELECT " .. GROUP_COLS .. " FROM scim_groups WHERE source = ?"
    if hint and hint.attr == "displayname" then sql = sql .. " AND display_name_lc = ?"; args = { hint.value:lower() }
    elseif hint and hint.attr == "externalid" then sql = sql .. " AND external_id = ?"; args = { hint.value }
    elseif hint and hint.attr == "id" then sql = sql .. " AND id = ?"; args = { hint.value }
    elseif hint and hint.attr == "member" then
      sql = sql .. " AND id IN (SELECT group_id FROM scim_members WHERE source = ? AND user_id = ?)"
      args = { src, hint.value }
    end
  end
  sql = sql .. " ORDER BY rowid"
  if limit then sql = sql .. (" LIMIT %d OFFSET %d"):format(limit, offset) end
  return self.db:query(sql, src, table.unpack(args or {}))
end

function SP:count(kind)
  local t = kind == "User" and "scim_users" or "scim_groups"
  return self.db:first("SELECT count(*) AS n FROM " .. t .. " WHERE source = ?", self.source).n
end

function SP:list(req, kind)
  local args = req.args
  local start = math.max(1, arg_int(args, "startIndex", 1))
  local count = arg_int(args, "count", M.MAX_RESULTS)
  if count < 0 then count = 0 end
  count = math.min(count, M.MAX_RESULTS)
  local f
  if args.filter and args.filter ~= "" then
    local ferr
    f, ferr = sf.parse(args.filter)
    if not f then fail(400, "invalidFilter", ferr) end
  end
  local hint = sf.hint(f, kind)
  local exact = hint and f.op ~= "and" and f.op ~= "vp" -- the index answers the whole filter
  local members = kind == "Group" and wants_members(req)
  local groups = kind == "User" and wants_groups(req)
  local function resource(row)
    if kind == "User" then return self:user_resource(row, req.base, groups) end
    return self:group_resource(row, req.base, members or (f ~= nil and not exact))
  end
  local page, total = json.array{}, 0
  if not f then
    total = self:count(kind)
    if count > 0 then
      for _, row in ipairs(self:candidates(kind, nil, count, start - 1)) do
        page[#page + 1] = project(resource(row), req)
      end
    end
  else
    for _, row in ipairs(self:candidates(kind, hint)) do
      local r = resource(row)
      if exact or sf.match(f, r) then
        total = total + 1
        if total >= start and #page < count then
          if kind == "Group" and not members then r.members = nil end
          page[#page + 1] = project(r, req)
        end
      end
    end
  end
  return 200, { schemas = json.array{ M.LIST }, totalResults = total, startIndex = start,
                itemsPerPage = #page, Resources = page }
end

---------------------------------------------------------------- discovery

function SP:service_provider_config(req)
  return 200, {
    schemas = json.array{ "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig" },
    documentationUri = "https://github.com/usersync/usersync#scim",
    patch = { supported = true }, bulk = { supported = false, maxOperations = 0, maxPayloadSize = 0 },
    filter = { supported = true, maxResults = M.MAX_RESULTS },
    changePassword = { supported = false }, sort = { supported = false }, etag = { supported = true },
    authenticationSchemes = json.array{ { type = "oauthbearertoken", name = "OAuth Bearer Token",
      description = "The source's token in an Authorization: Bearer header", primary = true } },
    meta = { resourceType = "ServiceProviderConfig", location = req.base .. "/ServiceProviderConfig" },
  }
end

local function resource_types(base)
  return {
    { schemas = json.array{ "urn:ietf:params:scim:schemas:core:2.0:ResourceType" }, id = "User", name = "User",
      endpoint = "/Users", description = "User Account", schema = M.USER,
      schemaExtensions = json.array{ { schema = M.ENTERPRISE, required = false } },
      meta = { resourceType = "ResourceType", location = base .. "/ResourceTypes/User" } },
    { schemas = json.array{ "urn:ietf:params:scim:schemas:core:2.0:ResourceType" }, id = "Group", name = "Group",
      endpoint = "/Groups", description = "Group", schema = M.GROUP, schemaExtensions = json.array{},
      meta = { resourceType = "ResourceType", location = base .. "/ResourceTypes/Group" } },
  }
end

local function attr(name, t, o)
  o = o or {}
  local a = { name = name, type = t, multiValued = o.multi or false, description = o.desc or name,
              required = o.required or false, caseExact = o.exact or false,
              mutability = o.mutability or "readWrite", returned = o.returned or "default",
              uniqueness = o.unique or "none" }
  if o.sub then a.subAttributes = json.array(o.sub) end
  return a
end

local function multi_sub()
  return { attr("value", "string"), attr("display", "string"), attr("type", "string"), attr("primary", "boolean") }
end

local function schemas(base)
  local user = { id = M.USER, name = "User", description = "User Account", attributes = json.array{
    attr("userName", "string", { required = true, unique = "server" }),
    attr("name", "complex", { sub = { attr("formatted", "string"), attr("familyName", "string"),
      attr("givenName", "string"), attr("middleName", "string"), attr("honorificPrefix", "string"),
      attr("honorificSuffix", "string") } }),
    attr("displayName", "string"), attr("nickName", "string"), attr("title", "string"),
    attr("userType", "string"), attr("preferredLanguage", "string"), attr("locale", "string"),
    attr("timezone", "string"), attr("active", "boolean"),
    attr("password", "string", { mutability = "writeOnly", returned = "never" }),
    attr("emails", "complex", { multi = true, sub = multi_sub() }),
    attr("phoneNumbers", "complex", { multi = true, sub = multi_sub() }),
    attr("addresses", "complex", { multi = true, sub = { attr("formatted", "string"),
      attr("streetAddress", "string"), attr("locality", "string"), attr("region", "string"),
      attr("postalCode", "string"), attr("country", "string"), attr("type", "string"), attr("primary", "boolean") } }),
    attr("groups", "complex", { multi = true, mutability = "readOnly", sub = { attr("value", "string", { mutability = "readOnly" }),
      attr("$ref", "reference", { mutability = "readOnly" }), attr("display", "string", { mutability = "readOnly" }),
      attr("type", "string", { mutability = "readOnly" }) } }),
    attr("roles", "complex", { multi = true, sub = multi_sub() }),
    attr("entitlements", "complex", { multi = true, sub = multi_sub() }),
  } }
  local group = { id = M.GROUP, name = "Group", description = "Group", attributes = json.array{
    attr("displayName", "string", { required = true }),
    attr("members", "complex", { multi = true, sub = { attr("value", "string", { exact = true, mutability = "immutable" }),
      attr("$ref", "reference", { mutability = "immutable" }), attr("display", "string", { mutability = "readOnly" }),
      attr("type", "string", { mutability = "immutable" }) } }),
  } }
  local ent = { id = M.ENTERPRISE, name = "EnterpriseUser", description = "Enterprise User", attributes = json.array{
    attr("employeeNumber", "string"), attr("costCenter", "string"), attr("organization", "string"),
    attr("division", "string"), attr("department", "string"),
    attr("manager", "complex", { sub = { attr("value", "string"), attr("$ref", "reference"),
      attr("displayName", "string", { mutability = "readOnly" }) } }),
  } }
  for _, s in ipairs{ user, group, ent } do
    s.schemas = json.array{ "urn:ietf:params:scim:schemas:core:2.0:Schema" }
    s.meta = { resourceType = "Schema", location = base .. "/Schemas/" .. s.id }
  end
  return { user, group, ent }
end

local function list_of(items)
  return 200, { schemas = json.array{ M.LIST }, totalResults = #items, startIndex = 1,
                itemsPerPage = #items, Resources = json.array(items) }
end

---------------------------------------------------------------- dispatch

local function decode_body(req)
  if not req.body or req.body == "" then fail(400, "invalidSyntax", "a JSON body is required") end
  local v, err = json.decode(req.body)
  if v == nil then fail(400, "invalidSyntax", "the body is not JSON: " .. tostring(err)) end
  return v
end

-- Runs fn in a write transaction; SCIM errors raised inside roll it back.
function SP:write(fn, ...)
  local args = table.pack(...)
  local out
  local ok, err = pcall(self.db.transaction, self.db, function()
    out = table.pack(fn(table.unpack(args, 1, args.n)))
    return true
  end)
  if not ok then error(err, 0) end
  return table.unpack(out, 1, out.n)
end

function SP:route(req)
  local m = req.method
  local path = req.path:gsub("/+$", "")
  local kind, id = path:match("^/(%a+)/?([^/]*)$")
  if path == "" then fail(404, nil, "no such resource") end
  local lk = kind and kind:lower()
  if lk == "serviceproviderconfig" or lk == "serviceproviderconfigs" then
    if m ~= "GET" then fail(405, nil, "method not allowed") end
    return self:service_provider_config(req)
  elseif lk == "resourcetypes" then
    if m ~= "GET" then fail(405, nil, "method not allowed") end
    local all = resource_types(req.base)
    if id ~= "" then
      for _, t in ipairs(all) do if t.id == id then return 200, t end end
      fail(404, nil, "no resource type " .. id)
    end
    return list_of(all)
  elseif lk == "schemas" then
    if m ~= "GET" then fail(405, nil, "method not allowed") end
    local all = schemas(req.base)
    if id ~= "" then
      for _, s in ipairs(all) do if s.id == id then return 200, s end end
      fail(404, nil, "no schema " .. id)
    end
    return list_of(all)
  elseif lk == "users" then
    if id == "" then
      if m == "GET" then return self:list(req, "User") end
      if m == "POST" then return self:write(self.create_user, self, req, decode_body(req)) end
      fail(405, nil, "method not allowed")
    end
    if id == ".search" then fail(501, nil, "searching by POST is not supported") end
    if m == "GET" then
      local row = self:user_row(id) or fail(404, nil, "no user " .. id)
      return 200, project(self:user_resource(row, req.base, wants_groups(req)), req), row.version
    elseif m == "PUT" then return self:write(self.replace_user, self, req, id, decode_body(req))
    elseif m == "PATCH" then return self:write(self.patch_user, self, req, id, decode_body(req))
    elseif m == "DELETE" then return self:write(self.delete_user, self, req, id) end
    fail(405, nil, "method not allowed")
  elseif lk == "groups" then
    if id == "" then
      if m == "GET" then return self:list(req, "Group") end
      if m == "POST" then return self:write(self.create_group, self, req, decode_body(req)) end
      fail(405, nil, "method not allowed")
    end
    if m == "GET" then
      local row = self:group_row(id) or fail(404, nil, "no group " .. id)
      return 200, project(self:group_resource(row, req.base, wants_members(req)), req), row.version
    elseif m == "PUT" then return self:write(self.replace_group, self, req, id, decode_body(req))
    elseif m == "PATCH" then return self:write(self.patch_group, self, req, id, decode_body(req))
    elseif m == "DELETE" then return self:write(self.delete_group, self, req, id) end
    fail(405, nil, "method not allowed")
  end
  fail(404, nil, "no such resource")
end

-- Answers one request: status, body text ("" for 204), headers.
-- req: { method, path, args = {}, body, if_match, if_none_match, base }.
-- A write that raises leaves nothing behind (its transaction is rolled back).
function SP:handle(req)
  req.args = req.args or {}
  req.base = req.base or ""
  local ok, status, res = pcall(self.route, self, req)
  local headers = { ["Content-Type"] = M.CTYPE }
  if not ok then
    local e = status
    if type(e) == "table" and e.scim then
      return e.status, error_body(e.status, e.scimType, e.detail), headers
    end
    if type(e) == "table" and e.code == "ECONSTRAINT" then
      return 409, error_body(409, "uniqueness", "the resource conflicts with one that exists"), headers
    end
    if type(e) == "table" and e.code == "EBUSY" then
      -- the store stayed locked past its busy timeout: the IdP retries
      return 503, error_body(503, nil, "the store is busy; try again"), headers, tostring(e.message)
    end
    return 500, error_body(500, nil, "internal error"), headers,
      type(e) == "table" and tostring(e.message or e.detail) or tostring(e)
  end
  if status == 204 then return 204, "", headers end
  local meta = type(res) == "table" and res.meta
  if meta and meta.version then
    headers.ETag = meta.version
    if status == 201 then headers.Location = meta.location end
    if req.method == "GET" and req.if_none_match and req.if_none_match == meta.version then
      return 304, "", headers
    end
  end
  return status, json.encode(res), headers
end

return M
