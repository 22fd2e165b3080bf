-- Example policy: target groups from the Okta `department` attribute, on top
-- of the group rules of the config. A user with department "Customer
-- Success" joins "dept-customer-success" (created when missing, if
-- groups.create_missing is on).
--
--   sync = { { ..., policy = "scripts/examples/policy-department-groups.lua" } }
--
-- `default` is the default policy; calling it keeps the mapping of the
-- config (groups.map or on-the-fly) and adds the department group.
-- `fields` names the Okta user fields the hook reads beyond the default
-- policy's, so a whole-org read keeps just those (without it: every field).
local function slug(s)
  return (s:lower():gsub("[^%w]+", "-"):gsub("^%-+", ""):gsub("%-+$", ""))
end

return {
  fields = { "profile.department" },
  groups = function(u, okta_groups, ctx)
    local names = default.groups(u, okta_groups, ctx)
    local dept = u.profile.department
    if type(dept) == "string" and dept ~= "" then
      names[#names + 1] = "dept-" .. slug(dept)
    end
    return names
  end,
}
