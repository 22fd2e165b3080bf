-- usersync.targets: the registry of target facts, one table each, read by
-- everything else (the planner, config validation, target:apply).
--
--   local targets = require "usersync.targets"
--   targets.TYPES   -- { "jira", "confluence", "bitbucket", "scim" }: the products
--   targets.CAPS    -- type -> { deactivate=, reactivate=, rename=, leads=, bulk_add= }
--   targets.FLAVOURS -- type -> { [flavour] = caps } (scim: atlassian)
--   targets.caps(type, flavour) -- the capabilities of a configured target
--   targets.ORDER   -- the kinds of operation, in plan order
--   targets.RANK    -- kind -> its position in ORDER
--
-- The products and their capabilities come from the C product list
-- (usersync.target_raw's products(), each product's vtable): a new kind of
-- target is its product file, its line in that list, its simulator and its
-- docs; nothing here changes.
local products = require("usersync.target_raw").products()

local M = {}

M.TYPES, M.CAPS, M.FLAVOURS = {}, {}, {}
for _, p in ipairs(products) do
  M.TYPES[#M.TYPES + 1] = p.type
  M.CAPS[p.type] = p.caps
  M.FLAVOURS[p.type] = p.flavours or {}
end

function M.caps(type, flavour)
  return flavour and (M.FLAVOURS[type] or {})[flavour] or M.CAPS[type]
end

-- Plan order: groups exist before members are added; accounts are created,
-- adopted (link: no request), updated and renamed before memberships change;
-- leads are handed over before an account is deactivated or deleted.
M.ORDER = { "create_group", "create_user", "link", "update_user", "rename_user", "reactivate_user",
            "add_member", "remove_member", "handover_lead", "deactivate_user", "delete_user" }

M.RANK = {}
for i, k in ipairs(M.ORDER) do M.RANK[k] = i end

return M
