-- usersync.policy: the policy hooks (user, include_group, groups,
-- default_groups, deprovision), merged from an
-- admin's policy file over the default policy (scripts/default-policy.lua,
-- compiled in as usersync.scripts.default_policy).
--
--   local policy = require "usersync.policy"
--   local pol = assert(policy.load("scripts/my-policy.lua"))   -- or policy.load(nil)
--   local account, err = pol:user(okta_user, ctx)    -- err: "my-policy.lua:12: ..."
--
-- A policy file returns a table with any of the hooks; the ones it leaves
-- out keep the default, detected once at load. The file runs in the sandbox
-- and gets one extra global, `default`, the default policy's table, so a hook
-- can start from the default's answer. Each hook call runs under the
-- sandbox's instruction budget and memory cap; an error comes back as
-- nil, message (naming the policy file and line), never as a raise.
local sandbox = require "usersync.sandbox"
local default = require "usersync.scripts.default_policy"

local M = {}

M.HOOKS = { "user", "include_group", "groups", "default_groups", "deprovision" }
local KNOWN = {}
for _, h in ipairs(M.HOOKS) do KNOWN[h] = true end

local Policy = {}
Policy.__index = Policy

-- What one run may spend in the custom hooks together (instructions),
-- unless the sync entry's limits.policy_instructions says otherwise.
M.RUN_INSTRUCTIONS = 2 * 1000 * 1000 * 1000

-- First line of a sandbox error (the traceback stays out of reports).
local function first_line(err)
  err = tostring(err)
  return err:match("^([^\n]*)") or err
end

-- Inside the sandboxed call: the hook, then `post` on its result, so that
-- what runtime code gets back is fresh plain data (a returned table's
-- metamethods run here, under the hook's budget, never later).
local function run_hook(post, self, extra, hook, ...)
  return post(self, extra, (hook(...)))
end

-- Calls a hook (a custom one under the sandbox, a default one under pcall)
-- and post(self, extra, result) on its result. Returns what post returns
-- (value | nil, message), or nil, message when the hook failed.
function Policy:_call(name, post, extra, ...)
  local custom = self.custom[name]
  local ok, r, err
  if custom then
    ok, r, err = sandbox.call(self.account, run_hook, post, self, extra, custom, ...)
  else
    ok, r, err = pcall(run_hook, post, self, extra, default[name], ...)
  end
  if not ok then return nil, first_line(r) end
  return r, err
end

-- nil once the run may go on; the message that must stop it otherwise
-- (the hooks together spent the run's budget, or a finalizer or a
-- metamethod called outside a hook failed).
function Policy:failure()
  return self.account.failure
end

-- A new run: the run's budget is full again, and the default hooks'
-- answers are computed afresh (see Policy:groups).
function Policy:new_run()
  self.account:new_run()
  self.memo = nil
end

-- The default groups and default_groups hooks answer from the sync
-- entry's settings and the user alone, the same for every target, and a
-- run plans each user twice per target (the groups to read, then the
-- plan): without a custom hook for them their answers are kept for the
-- run, per sync entry's settings (the table the contexts of its plans
-- were made from, M.CONTEXT_SETTINGS) and user. A kept default_groups
-- list is shared: callers only read it. Returns the memo table of ctx's settings, or nil
-- when a custom hook may answer differently per target or call.
local WEAK_KEYS = { __mode = "k" }
M.CONTEXT_SETTINGS = setmetatable({}, WEAK_KEYS) -- ctx -> the sync entry it was made from
local function memo_of(self, ctx, hooks)
  for _, h in ipairs(hooks) do
    if self.custom[h] then return nil end
  end
  local key = M.CONTEXT_SETTINGS[ctx]
  if not key then return nil end
  local memo = self.memo
  if not memo then memo = setmetatable({}, WEAK_KEYS); self.memo = memo end
  local m = memo[key]
  if not m then m = { users = setmetatable({}, WEAK_KEYS), num = {}, names = {} }; memo[key] = m end
  return m
end

-- A user's kept groups answer: one string, each name's number in m.names
-- in 3 bytes (as lists, 100,000 answers held ~20 MB for the whole entry);
-- a list of over a thousand names (or past 16 million distinct ones) is
-- kept as it is. unkeep gives a new list back.
local function keep(m, list)
  if #list > 1000 then return list end
  local bytes, num, names = {}, m.num, m.names
  for i, name in ipairs(list) do
    local k = num[name]
    if not k then
      k = #names + 1
      if k >= 1 << 24 then return list end
      names[k], num[name] = name, k
    end
    bytes[3 * i - 2], bytes[3 * i - 1], bytes[3 * i] = k >> 16, (k >> 8) & 255, k & 255
  end
  return string.char(table.unpack(bytes, 1, 3 * #list))
end

local function unkeep(m, kept)
  if type(kept) ~= "string" then return kept end
  local list, names, byte = {}, m.names, string.byte
  for i = 1, #kept // 3 do
    local a, b, c = byte(kept, 3 * i - 2, 3 * i)
    list[i] = names[a << 16 | b << 8 | c]
  end
  return list
end
local GROUP_HOOKS, DEFAULT_HOOKS = { "groups", "include_group" }, { "default_groups" }

-- Sync entry `settings` is planned (every target of it): its kept answers
-- can no longer be hit this run and are dropped (at 100,000 users they
-- are ~13 MB the rest of the run does not need).
function Policy:planned(settings)
  if self.memo then self.memo[settings] = nil end
end

local ACCOUNT_FIELDS = { name = "string", display_name = "string", email = "string", active = "boolean" }

local function post_user(self, base, r)
  if r == nil or r == false then return nil end
  -- The default left this user out (e.g. STAGED) and the hook named no
  -- account of its own: the user stays out.
  if base == nil and type(r) == "table" and r.name == nil then return nil end
  if type(r) ~= "table" then
    return nil, self.path .. ": user() must return a table or nil, got " .. type(r)
  end
  local out = {}
  for k, v in pairs(base or {}) do out[k] = v end
  for k, v in pairs(r) do
    local want = ACCOUNT_FIELDS[k]
    if not want then
      return nil, ("%s: user() returned unknown field '%s' (known: name, display_name, email, active)"):format(self.path, tostring(k))
    end
    if type(v) ~= want then
      return nil, ("%s: user() field '%s' must be a %s, got %s"):format(self.path, k, want, type(v))
    end
    out[k] = v
  end
  if type(out.name) ~= "string" or out.name == "" then
    return nil, self.path .. ": user() gave no account name"
  end
  if out.active == nil then out.active = true end
  return out
end

-- user(u, ctx) -> account table | nil (left out) ; or nil, message on error.
-- A custom hook's fields override the default's one by one.
function Policy:user(u, ctx)
  local ok, base = pcall(default.user, u, ctx)
  if not ok then return nil, first_line(base) end
  if not self.custom.user then return base end
  return self:_call("user", post_user, base, u, ctx)
end

local function post_bool(_, _, r) return r and true or false end

function Policy:include_group(g, ctx)
  return self:_call("include_group", post_bool, nil, g, ctx)
end

-- A fresh list of strings, or nil, message.
local function post_list(self, hook, r)
  local path = self.custom[hook] and self.path or "default policy"
  if r == nil then return {} end
  if type(r) ~= "table" then return nil, ("%s: %s() must return a list of group names"):format(path, hook) end
  local out = {}
  for i, v in ipairs(r) do
    if type(v) ~= "string" or v == "" then
      return nil, ("%s: %s() entry %d is not a group name"):format(path, hook, i)
    end
    out[i] = v
  end
  return out
end

-- key: what the answer is kept by (default: the user table; the planner
-- gives the id of a user it made afresh from a compact set).
function Policy:groups(u, groups, ctx, key)
  local m = type(u) == "table" and memo_of(self, ctx, GROUP_HOOKS)
  key = key or u
  local r = m and m.users[key]
  if r then return unkeep(m, r) end
  local err
  r, err = self:_call("groups", post_list, "groups", u, groups, ctx)
  if m and r then m.users[key] = keep(m, r) end
  return r, err
end

-- Whether the hooks that see an Okta user (user, groups) are the default
-- ones, which keep nothing of the user table they are given: a caller may
-- then hand them one table refilled for each user.
function Policy:keeps_no_user()
  return not (self.custom.user or self.custom.groups)
end

-- Whether the default_groups hook is the default one, which reads nothing
-- of the account it is given: a caller may then give it an account that
-- holds just its name.
function Policy:keeps_no_account()
  return not self.custom.default_groups
end

-- The answer Policy:groups keeps for key under ctx, or nil (none yet, or
-- the hooks are custom): a caller that would make the user only to ask.
function Policy:kept_groups(key, ctx)
  local m = memo_of(self, ctx, GROUP_HOOKS)
  local r = m and m.users[key]
  return r and unkeep(m, r)
end

function Policy:default_groups(account, is_new, ctx)
  local m = memo_of(self, ctx, DEFAULT_HOOKS)
  local key = is_new and "new" or "old"
  local r = m and m[key]
  if r then return r end
  local err
  r, err = self:_call("default_groups", post_list, "default_groups", account, is_new, ctx)
  if m and r then m[key] = r end
  return r, err
end

local ACTIONS = { deactivate = true, delete = true, remove_groups = true, keep = true }

local function post_action(self, _, r)
  if type(r) ~= "string" or not ACTIONS[r] then
    return nil, ("%s: deprovision() must return \"deactivate\", \"delete\", \"remove_groups\" or \"keep\", got %s")
      :format(self.custom.deprovision and self.path or "default policy", tostring(r))
  end
  return r
end

function Policy:deprovision(account, reason, ctx)
  return self:_call("deprovision", post_action, nil, account, reason, ctx)
end

-- The Okta user fields the default policy reads ("profile.x" or a field of
-- the user itself); a scope read keeps only these (and those the sync
-- entry's `attributes` name) when no custom hook sees the Okta user.
M.DEFAULT_FIELDS = { "id", "status", "profile.login", "profile.email", "profile.displayName",
                     "profile.firstName", "profile.lastName" }

-- A declared field: "profile.<attribute>" or a field of the user ("lastLogin").
local FIELD = { "^[%a_][%w_]*$", "^profile%.[%a_][%w_]*$" }

-- `fields` of a policy file: a list of field names, checked; nil, why else.
local function check_fields(v, path)
  local why = ("policy %s: 'fields' must be a list of Okta user fields (\"profile.costCenter\", \"lastLogin\")"):format(path)
  if type(v) ~= "table" then return nil, why end
  local out = {}
  for i, f in ipairs(v) do
    if type(f) ~= "string" or not (f:match(FIELD[1]) or f:match(FIELD[2])) then
      return nil, why .. (", entry %d is %s"):format(i, type(f) == "string" and ("%q"):format(f) or type(f))
    end
    out[i] = f
  end
  return out
end

-- Inside the sandboxed call: the policy file's chunk, and its table of
-- hooks checked and copied (and its declared `fields`, hooks.fields).
local function load_hooks(fn, path)
  local t = fn()
  if type(t) ~= "table" then
    return nil, ("policy %s: must return a table of hooks, got %s"):format(path, type(t))
  end
  local hooks = {}
  for k, v in pairs(t) do
    if k == "fields" then
      local f, why = check_fields(v, path)
      if not f then return nil, why end
      hooks.fields = f
    elseif not KNOWN[k] then
      return nil, ("policy %s: unknown hook '%s' (known: %s)"):format(path, tostring(k), table.concat(M.HOOKS, ", "))
    elseif type(v) ~= "function" then
      return nil, ("policy %s: hook '%s' must be a function, got %s"):format(path, k, type(v))
    else
      hooks[k] = v
    end
  end
  return hooks
end

-- Loads a policy file (nil: the default policy alone). Returns a Policy, or
-- nil, message for a file that does not compile, raises at load, returns
-- something other than a table of known hooks.
-- opts: { instructions = N, memory = bytes } per hook call,
-- run_instructions = N for all hook calls of a run together (default
-- M.RUN_INSTRUCTIONS; Policy:new_run starts a run).
function M.load(path, opts)
  opts = opts or {}
  local account = sandbox.account{ name = "policy " .. tostring(path), instructions = opts.instructions,
    memory = opts.memory, run_instructions = opts.run_instructions or M.RUN_INSTRUCTIONS }
  local self = setmetatable({ custom = {}, path = path or "default policy", account = account }, Policy)
  if not path then return self end
  local copy = {}
  for k, v in pairs(default) do copy[k] = v end
  local fn, err = sandbox.loadfile(path, { default = copy }, account)
  if not fn then return nil, "policy " .. tostring(err) end
  local ok, hooks, herr = sandbox.call(account, load_hooks, fn, path)
  if not ok then return nil, "policy " .. first_line(hooks) end
  if not hooks then return nil, herr end
  self.fields, hooks.fields = hooks.fields, nil
  self.custom = hooks
  return self
end

-- The Okta user fields the hooks of this policy read for sync entry s, as
-- a list of names ("id", "profile.login"), or nil for every field: the
-- default policy's (DEFAULT_FIELDS and the fields s.attributes maps), with
-- a custom `user` or `groups` hook (the hooks that see the Okta user)
-- those and the ones the policy file declares as `fields`, or every field
-- when it declares none. A read of the whole scope keeps only these.
function Policy:user_fields(s)
  if (self.custom.user or self.custom.groups) and not self.fields then return nil end
  local attributes = require "usersync.attributes"
  local out, seen = {}, {}
  local function add(f) if not seen[f] then seen[f] = true; out[#out + 1] = f end end
  for _, f in ipairs(M.DEFAULT_FIELDS) do add(f) end
  for _, f in ipairs(self.fields or {}) do add(f) end
  for _, field in ipairs(attributes.FIELDS) do
    local spec = s and s.attributes and s.attributes[field]
    local parsed = spec and attributes.parse(spec)
    for _, f in ipairs(parsed and parsed.fields or {}) do add(f) end
  end
  return out
end

return M
