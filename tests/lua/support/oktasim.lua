-- support.oktasim: small Okta states for the Okta client tests, and a
-- client factory on a simulator started with support.fakes.
--
--   local os_ = require "support.oktasim"
--   local st = os_.org{ users = 201, groups = 3, members = { [1] = {1, 2} }, app = { users = {1}, groups = {1} } }
--   local sim <close> = fakes.start("okta", { state = st })
--   local c <close>, hc = os_.client(sim, { app_id = os_.APP })
local http = require "usersync.http"
local okta = require "usersync.okta"
local json = require "usersync.json"
local A = json.array

local M = {}
M.APP = "0oa1testapp000000001"

function M.uid(n) return ("00u%017d"):format(n) end
function M.gid(n) return ("00g%017d"):format(n) end

function M.user(n, status)
  return { id = M.uid(n), status = status or "ACTIVE",
           created = "2024-01-01T00:00:00.000Z", lastUpdated = "2024-01-02T00:00:00.000Z",
           profile = { login = ("user%d@example.com"):format(n), email = ("user%d@example.com"):format(n),
                       firstName = "First" .. n, lastName = "Last" .. n } }
end

function M.group(n, name)
  return { id = M.gid(n), type = "OKTA_GROUP", profile = { name = name or ("group-" .. n) } }
end

-- opts.users: count (or list of statuses); opts.groups: count;
-- opts.members = { [group n] = { user n, ... } | count (users 1..count) };
-- opts.app = { users = {n...} | count, groups = {n...} }
function M.org(opts)
  local st = { users = A{}, groups = A{}, group_members = json.object{}, apps = json.object{}, logs = A{} }
  local nu = type(opts.users) == "table" and #opts.users or (opts.users or 0)
  for i = 1, nu do
    st.users[i] = M.user(i, type(opts.users) == "table" and opts.users[i] or nil)
  end
  for i = 1, opts.groups or 0 do st.groups[i] = M.group(i) end
  for g, m in pairs(opts.members or {}) do
    local ids = A{}
    if type(m) == "number" then
      for i = 1, m do ids[i] = M.uid(i) end
    else
      for i, n in ipairs(m) do ids[i] = M.uid(n) end
    end
    st.group_members[M.gid(g)] = ids
  end
  if opts.app then
    local a = { users = A{}, groups = A{} }
    local au = opts.app.users or {}
    if type(au) == "number" then
      for i = 1, au do a.users[i] = M.uid(i) end
    else
      for i, n in ipairs(au) do a.users[i] = M.uid(n) end
    end
    for i, n in ipairs(opts.app.groups or {}) do a.groups[i] = M.gid(n) end
    st.apps[M.APP] = a
  end
  return st
end

-- An Okta client on sim (opts are source fields) and its fresh http client:
--   local c <close>, hc = S.client(sim, { app_id = S.APP })
-- (the http client is closed by the garbage collector or by the caller).
function M.client(sim, opts, http_opts)
  local src = { url = sim.url, token = "test-token" }
  for k, v in pairs(opts or {}) do src[k] = v end
  if src.token == false then src.token = nil end
  local hc = http.client(http_opts or { timeout = 30 })
  return okta.client(hc, src), hc
end

return M
