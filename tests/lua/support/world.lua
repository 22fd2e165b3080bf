-- support/world.lua: an Okta org and Jira, Confluence and Bitbucket servers
-- (the simulators) plus a config and a store, for end-to-end scenarios that
-- run the real `usersync` binary.
--
--   local world = require "support.world"
--   local w <close> = world.new{ users = {...}, groups = {...}, sync = {...} }
--   w:okta_user("00u1", "ann@example.com", { groups = { "00g1" } })   -- builders
--   w:load()                                 -- pushes the Okta org to the simulator
--   local r = w:usersync("sync")             -- { code, stdout, stderr }
--   w.jira:state().users                     -- the target after the sync
--   w:writes("jira")                         -- write requests the run made
local json = require "usersync.json"
local proc = require "support.proc"
local sim = require "support.fakes"

local M = {}
local World = {}
World.__index = World

M.APP = "0oaUsersyncApp"

-- SCIM targets a world can have (products "scim" and "atlassian"): both are
-- `fake.py scim` (the second with --flavour atlassian) behind type "scim".
M.SCIM = {
  scim = { base = "/scim/v2" },
  atlassian = { base = "/scim/directory/test-directory", flavour = "atlassian",
                args = { "--flavour", "atlassian" } },
}

local function clone(t)
  if type(t) ~= "table" then return t end
  local c = {}
  for k, v in pairs(t) do c[k] = clone(v) end
  return c
end
M.clone = clone

-- The keys of t, sorted (the names of w:accounts(product), to compare with a list).
function M.sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- opts: { products = {"jira", "confluence", "bitbucket"}, jira = state, confluence = state,
--         bitbucket = state, sync = { sync entry fields }, extra = { sources = {...},
--         raw = "config text inserted as is, e.g. a serve section" } }
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({ users = {}, groups = {}, members = {}, app_users = {}, app_groups = {},
                              sims = {} }, World)
  self.dir = os.tmpname(); os.remove(self.dir)
  os.execute("mkdir -p " .. self.dir)
  self.okta = sim.start("okta")
  self.sims[#self.sims + 1] = self.okta
  self.products = opts.products or { "jira", "confluence", "bitbucket" }
  for _, p in ipairs(self.products) do
    local scim = M.SCIM[p]
    self[p] = sim.start(scim and "scim" or p, { state = M.arrays(opts[p]), args = scim and scim.args })
    self.sims[#self.sims + 1] = self[p]
  end
  self.sync = opts.sync or {}
  self.extra = opts.extra or {}
  self:write_config()
  return self
end

function World:write_config(sync_override)
  local targets, names = {}, {}
  for _, p in ipairs(self.products) do
    local url, scim = self[p].url, M.SCIM[p]
    if scim then
      targets[#targets + 1] = ("    %s = { type = \"scim\", url = %q, token = env \"US_TEST_ATL_TOKEN\"%s },")
        :format(p, url .. scim.base, scim.flavour and (", flavour = %q"):format(scim.flavour) or "")
    elseif p == "crowd" then -- an application's name and password, under Crowd's /crowd context
      targets[#targets + 1] = ("    %s = { type = %q, url = %q, application = \"admin\", password = env \"US_TEST_CROWD_PW\" },")
        :format(p, p, url .. "/crowd")
    else
      targets[#targets + 1] = ("    %s = { type = %q, url = %q, token = env \"US_TEST_ATL_TOKEN\" },")
        :format(p, p, url)
    end
    names[#names + 1] = ("%q"):format(p)
  end
  local sync = sync_override or self.sync
  local entries = sync[1] and sync or { sync }
  local parts = {}
  for i, e in ipairs(entries) do
    local fields = { ("name = %q"):format(e.name or ("main" .. (i > 1 and i or ""))),
                     ("source = %q"):format(e.source or "okta"),
                     "targets = { " .. table.concat(e.targets and (function()
                        local q = {} for j, t in ipairs(e.targets) do q[j] = ("%q"):format(t) end return q end)() or names, ", ") .. " }" }
    for k, v in pairs(e) do
      if k ~= "name" and k ~= "source" and k ~= "targets" then
        fields[#fields + 1] = k .. " = " .. M.lua(v)
      end
    end
    parts[#parts + 1] = "    { " .. table.concat(fields, ", ") .. " },"
  end
  local sources = { ("    okta = { type = \"okta\", url = %q, token = env \"US_TEST_OKTA_TOKEN\", app_id = %q },")
    :format(self.okta.url, M.APP) }
  for name, src in pairs(self.extra.sources or {}) do
    sources[#sources + 1] = ("    %s = %s,"):format(name, M.lua(src))
  end
  local text = table.concat({
    "return {",
    ("  state = %q,"):format(self.dir .. "/usersync.db"),
    "  sources = {", table.concat(sources, "\n"), "  },",
    "  targets = {", table.concat(targets, "\n"), "  },",
    "  sync = {", table.concat(parts, "\n"), "  },",
    self.extra.raw or "",
    "}",
  }, "\n")
  self.config = self.dir .. "/usersync.conf.lua"
  local f = assert(io.open(self.config, "w"))
  f:write(text)
  f:close()
end

-- Marks the list fields of an Atlassian state as JSON arrays, so an empty
-- one is sent as [] (the simulators refuse {} where a list belongs).
local LISTS = { users = true, groups = true, projects = true, components = true }
function M.arrays(st)
  if not st then return nil end
  st = clone(st)
  for k in pairs(LISTS) do if st[k] then st[k] = json.array(st[k]) end end
  for g, list in pairs(st.members or {}) do st.members[g] = json.array(list) end
  for _, g in ipairs(st.groups or {}) do
    if type(g) == "table" then g.members = json.array(g.members or {}) end
  end
  return st
end

-- Accounts of a target other than the simulator's built-in admin.
M.BUILTIN = { admin = true }

-- A Lua literal for plain data (strings, numbers, booleans, tables).
function M.lua(v)
  local t = type(v)
  if t == "string" then return ("%q"):format(v) end
  if t ~= "table" then return tostring(v) end
  local parts = {}
  if #v > 0 then
    for _, x in ipairs(v) do parts[#parts + 1] = M.lua(x) end
  else
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
      local key = (type(k) == "string" and k:match("^[%a_][%w_]*$")) and k or ("[" .. M.lua(k) .. "]")
      parts[#parts + 1] = key .. " = " .. M.lua(v[k])
    end
  end
  return "{ " .. table.concat(parts, ", ") .. " }"
end

-- Okta builders. opts: { status, groups = {gid...}, app = "direct"|false,
-- profile = {...} }. Users are assigned to the app directly unless app=false.
function World:okta_user(id, login, opts)
  opts = opts or {}
  local first, last = login:match("^([%w]+)[._]?([%w]*)")
  local u = { id = id, status = opts.status or "ACTIVE", created = "2025-01-01T00:00:00.000Z",
    lastUpdated = "2025-01-01T00:00:00.000Z",
    profile = { login = login, email = opts.email or login:lower(), firstName = first or login,
                lastName = (last and last ~= "") and last or "Tester" } }
  for k, v in pairs(opts.profile or {}) do u.profile[k] = v end
  self.users[#self.users + 1] = u
  for _, g in ipairs(opts.groups or {}) do
    self.members[g] = self.members[g] or {}
    table.insert(self.members[g], id)
  end
  if opts.app ~= false then self.app_users[#self.app_users + 1] = id end
  return u
end

function World:okta_group(id, name, opts)
  opts = opts or {}
  local g = { id = id, type = opts.type or "OKTA_GROUP", created = "2025-01-01T00:00:00.000Z",
    lastUpdated = "2025-01-01T00:00:00.000Z", lastMembershipUpdated = "2025-01-01T00:00:00.000Z",
    profile = { name = name, description = opts.description or name } }
  self.groups[#self.groups + 1] = g
  self.members[id] = self.members[id] or {}
  if opts.app then self.app_groups[#self.app_groups + 1] = id end
  return g
end

function World:find_user(id)
  for _, u in ipairs(self.users) do if u.id == id then return u end end
end

function World:okta_state()
  local gm = {}
  for gid, list in pairs(self.members) do gm[gid] = json.array(clone(list)) end
  return { users = json.array(clone(self.users)), groups = json.array(clone(self.groups)),
           group_members = gm,
           apps = { [M.APP] = { users = json.array(clone(self.app_users)), groups = json.array(clone(self.app_groups)) } } }
end

-- Pushes the Okta org to the simulator (diffed: events and timestamps move).
function World:load()
  self.okta:put_state(self:okta_state())
end

-- Runs the real binary: w:usersync("sync", "--user", "x") -> { code, stdout, stderr }.
function World:usersync(...)
  local argv = { os.getenv("USERSYNC"), ... }
  local has_c = false
  for _, a in ipairs(argv) do if a == "-c" then has_c = true end end
  if not has_c then argv[#argv + 1] = "-c"; argv[#argv + 1] = self.config end
  return proc.run(argv, { env = { US_TEST_OKTA_TOKEN = "test-token", US_TEST_ATL_TOKEN = "test-token", US_TEST_CROWD_PW = "admin",
                                  US_TEST_HOOK_SECRET = "hook-secret-value",
                                  USERSYNC_LOG_LEVEL = "warn", NO_COLOR = "1" } })
end

-- Write requests (POST/PUT/DELETE) a target served since the last clear.
function World:writes(product)
  local out = {}
  for _, r in ipairs(self[product]:requests()) do
    if r.method ~= "GET" then out[#out + 1] = r end
  end
  return out
end

function World:clear_requests()
  for _, s in ipairs(self.sims) do s:clear_requests() end
end

-- Target state helpers: users by lowercase name, members of a group.
function World:accounts(product)
  local st = self[product]:state()
  local out = {}
  for _, u in ipairs(st.users) do
    local n = (u.userName or u.name or u.username):lower()
    if not M.BUILTIN[n] then out[n] = u end
  end
  return out, st
end

function World:members_of(product, group)
  local st = self[product]:state()
  local list = {}
  if M.SCIM[product] then -- SCIM: groups hold their members' ids
    local by_id = {}
    for _, u in ipairs(st.users) do by_id[u.id] = u.userName end
    for _, g in ipairs(st.groups) do
      if g.displayName:lower() == group:lower() then
        for _, m in ipairs(g.members) do list[#list + 1] = by_id[m.value]:lower() end
      end
    end
    table.sort(list)
    return list
  end
  for g, names in pairs(st.members or {}) do
    if g:lower() == group:lower() then
      for _, n in ipairs(names) do list[#list + 1] = n:lower() end
    end
  end
  table.sort(list)
  return list
end

function World:close()
  for _, s in ipairs(self.sims) do pcall(s.stop, s) end
  self.sims = {}
  if self.dir then os.execute("rm -rf " .. self.dir); self.dir = nil end
end
World.__close = World.close
World.__gc = World.close

-- The small org most scenarios start from, loaded into the simulators:
-- Engineering (ann, bob) and Ops (carol), all assigned to the app.
function M.small(opts)
  local w = M.new(opts or {})
  w:okta_group("00gEng", "Engineering")
  w:okta_group("00gOps", "Ops")
  w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gEng" } })
  w:okta_user("00u2", "bob.stone@example.com", { groups = { "00gEng" } })
  w:okta_user("00u3", "carol.king@example.com", { groups = { "00gOps" } })
  w:load()
  return w
end

return M
