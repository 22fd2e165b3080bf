-- The default policy: how usersync turns an Okta user into a target account,
-- which Okta groups count, which target groups a user belongs in, the
-- default groups, and what happens to an account that leaves scope.
--
-- It implements the declarative settings of a sync entry (
-- §4): `attributes`, `groups.mode/map/include/exclude/rename`, `defaults`, `users`,
-- `deprovision`. To customise, write a policy file with only the hooks you
-- want to change and name it in the sync entry (`policy = "my-policy.lua"`);
-- the hooks you leave out keep these. Copying this file is a fine start.
--
-- Every hook gets `ctx`:
--   ctx.sync         the sync entry's name
--   ctx.target       the target's name ("jira") and ctx.target_type ("jira",
--                    "confluence" or "bitbucket")
--   ctx.settings     the sync entry, validated, defaults filled in
--   ctx.is_active(status)  true / false / nil (skip) from the status mapping
--   ctx.kv           read access to the store's key-value area: ctx.kv.get(ns, key)
--
-- Hooks run in the sandbox: plain Lua, `require "usersync.re"`, ".json",
-- ".time", ".log"; no files, no network. An error in a hook fails that
-- user (reported with this file's name and line); the run goes on.
local re = require "usersync.re"
local attributes = require "usersync.attributes"

local policy = {}

-- Compiled patterns, by source text.
local patterns = {}
local function rx(p)
  local r = patterns[p]
  if not r then
    r = assert(re.compile(p))
    patterns[p] = r
  end
  return r
end

-- A profile value as a non-empty string, or nil (Okta sends null for unset).
local function text(v)
  if type(v) == "string" and v ~= "" then return v end
  return nil
end

-- Characters Confluence refuses in a username.
local CONFLUENCE_FORBIDDEN = "[%s\\,+<>'\"]"

-- user(okta_user, ctx) -> { name, display_name, email, active } or nil to
-- leave the user out. The username is the Okta login; Confluence needs it
-- lowercase and without \ , + < > ' " or spaces (each becomes "_").
-- The sync entry's `attributes` maps a field to another Okta field or a
-- template of them (usersync.attributes): a mapped name that comes out
-- empty leaves the user out; a mapped display name or e-mail that comes
-- out empty falls back to what is described here.
function policy.user(u, ctx)
  local active = ctx.is_active(u.status)
  if active == nil then return nil end -- e.g. STAGED: not yet a person to provision
  local p = u.profile or {}
  local map = ctx.settings.attributes
  local name
  if map and map.name then name = attributes.value(map.name, u) else name = text(p.login) end
  if not name then return nil end
  if ctx.target_type == "confluence" then
    name = name:lower():gsub(CONFLUENCE_FORBIDDEN, "_")
  end
  local display = map and map.display_name and attributes.value(map.display_name, u) or text(p.displayName)
  if not display then
    local first, last = text(p.firstName), text(p.lastName)
    display = (first and last) and (first .. " " .. last) or first or last or name
  end
  local email = map and map.email and attributes.value(map.email, u) or text(p.email) or ""
  return { name = name, display_name = display, email = email, active = active }
end

-- include_group(okta_group, ctx) -> true when the group counts. With
-- `groups.include`, a group's name must match one of its patterns; it must
-- match none of `groups.exclude`. In on-the-fly mode Okta's built-in groups
-- (Everyone, Okta Administrators) never count.
function policy.include_group(g, ctx)
  local settings = ctx.settings.groups
  local name = g.profile and text(g.profile.name)
  if not name then return false end
  if settings.mode == "on_the_fly" and g.type == "BUILT_IN" then return false end
  local include = settings.include or {}
  if #include > 0 then
    local hit = false
    for _, p in ipairs(include) do
      if rx(p):find(name) then hit = true; break end
    end
    if not hit then return false end
  end
  for _, p in ipairs(settings.exclude or {}) do
    if rx(p):find(name) then return false end
  end
  return true
end

-- On-the-fly names: the first `groups.rename` rule whose pattern matches
-- rewrites the name ({ "^okta-(.+)$", "$1" }); no match keeps it.
local function rename(name, rules)
  for _, rule in ipairs(rules or {}) do
    local r = rx(rule[1])
    if r:find(name) then
      return (r:gsub(name, rule[2], 1))
    end
  end
  return name
end

-- groups(okta_user, okta_groups, ctx) -> list of target group names.
-- okta_groups holds only the groups include_group let through.
-- Manual mode: each Okta group maps through `groups.map` to one or more
-- target groups; unmapped groups add nothing. On-the-fly: a target group
-- named like the Okta group, after the rename rules.
function policy.groups(u, okta_groups, ctx)
  local settings = ctx.settings.groups
  local out = {}
  for _, g in ipairs(okta_groups) do
    local name = g.profile.name
    if settings.mode == "on_the_fly" then
      out[#out + 1] = rename(name, settings.rename)
    else
      local mapped = (settings.map or {})[name]
      if type(mapped) == "string" then
        out[#out + 1] = mapped
      elseif type(mapped) == "table" then
        for _, t in ipairs(mapped) do out[#out + 1] = t end
      end
    end
  end
  return out
end

-- default_groups(account, is_new, ctx) -> extra groups: `defaults.all_users`
-- always, `defaults.new_users` only for accounts usersync creates (not for
-- adopted ones).
function policy.default_groups(account, is_new, ctx)
  local defaults = ctx.settings.defaults or {}
  local out = {}
  for _, g in ipairs(defaults.all_users or {}) do out[#out + 1] = g end
  if is_new then
    for _, g in ipairs(defaults.new_users or {}) do out[#out + 1] = g end
  end
  return out
end

-- deprovision(account, reason, ctx) -> "deactivate", "delete",
-- "remove_groups" or "keep" for a linked account whose Okta user left
-- scope. The sync entry's `deprovision` wins; otherwise `users.delete`
-- means delete and `users.deactivate` means deactivate. (On Bitbucket,
-- which cannot deactivate, the engine turns "deactivate" into
-- "remove_groups".)
function policy.deprovision(account, reason, ctx)
  local s = ctx.settings
  if s.deprovision then return s.deprovision end
  if s.users.delete then return "delete" end
  if s.users.deactivate then return "deactivate" end
  return "keep"
end

return policy
