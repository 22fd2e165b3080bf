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

-- First line of a sandbox error (the traceback stays out of reports).
local function first_line(err)
  err = tostring(err)
  return err:match("^([^\n]*)") or err
end

-- Calls a custom hook under the sandbox, a default one under pcall.
-- Returns true, result | false, message.
function Policy:_call(name, ...)
  local custom = self.custom[name]
  if custom then
    local ok, r = sandbox.call(self.limits, custom, ...)
    if not ok then return false, first_line(r) end
    return true, r
  end
  local ok, r = pcall(default[name], ...)
  if not ok then return false, first_line(r) end
  return true, r
end

local ACCOUNT_FIELDS = { name = "string", display_name = "string", email = "string", active = "boolean" }

-- user(u, ctx) -> account table | nil (left out) ; or nil, message on error.
-- A custom hook's fields override the default's one by one.
function Policy:user(u, ctx)
  local ok, base = pcall(default.user, u, ctx)
  if not ok then return nil, first_line(base) end
  if not self.custom.user then return base end
  local ok2, r = self:_call("user", u, ctx)
  if not ok2 then return nil, r end
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

function Policy:include_group(g, ctx)
  local ok, r = self:_call("include_group", g, ctx)
  if not ok then return nil, r end
  return r and true or false
end

-- Returns a list of strings, or nil, message.
local function string_list(path, hook, r)
  if r == nil then return {} end
  if type(r) ~= "table" then return nil, ("%s: %s() must return a list of group names"):format(path, hook) end
  for i, v in ipairs(r) do
    if type(v) ~= "string" or v == "" then
      return nil, ("%s: %s() entry %d is not a group name"):format(path, hook, i)
    end
  end
  return r
end

function Policy:groups(u, groups, ctx)
  local ok, r = self:_call("groups", u, groups, ctx)
  if not ok then return nil, r end
  return string_list(self.custom.groups and self.path or "default policy", "groups", r)
end

function Policy:default_groups(account, is_new, ctx)
  local ok, r = self:_call("default_groups", account, is_new, ctx)
  if not ok then return nil, r end
  return string_list(self.custom.default_groups and self.path or "default policy", "default_groups", r)
end

local ACTIONS = { deactivate = true, delete = true, remove_groups = true, keep = true }

function Policy:deprovision(account, reason, ctx)
  local ok, r = self:_call("deprovision", account, reason, ctx)
  if not ok then return nil, r end
  if not ACTIONS[r] then
    return nil, ("%s: deprovision() must return \"deactivate\", \"delete\", \"remove_groups\" or \"keep\", got %s")
      :format(self.custom.deprovision and self.path or "default policy", tostring(r))
  end
  return r
end

-- Loads a policy file (nil: the default policy alone). Returns a Policy, or
-- nil, message for a file that does not compile, raises at load, returns
-- something other than a table of known hooks.
-- opts: { instructions = N, memory = bytes } per hook call.
function M.load(path, opts)
  local self = setmetatable({ custom = {}, path = path or "default policy",
                              limits = opts or {} }, Policy)
  if not path then return self end
  local copy = {}
  for k, v in pairs(default) do copy[k] = v end
  local fn, err = sandbox.loadfile(path, { default = copy })
  if not fn then return nil, "policy " .. tostring(err) end
  local ok, t = sandbox.call(self.limits, fn)
  if not ok then return nil, "policy " .. first_line(t) end
  if type(t) ~= "table" then
    return nil, ("policy %s: must return a table of hooks, got %s"):format(path, type(t))
  end
  for k, v in pairs(t) do
    if not KNOWN[k] then
      return nil, ("policy %s: unknown hook '%s' (known: %s)"):format(path, tostring(k), table.concat(M.HOOKS, ", "))
    end
    if type(v) ~= "function" then
      return nil, ("policy %s: hook '%s' must be a function, got %s"):format(path, k, type(v))
    end
    self.custom[k] = v
  end
  return self
end

return M
