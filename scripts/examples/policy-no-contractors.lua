-- Example policy: contractors get no Atlassian accounts. A user whose Okta
-- profile says userType = "Contractor" (any case) is left out; one who
-- becomes a contractor later has a linked account, which is then
-- deprovisioned like any user who left scope (reason "left out by the
-- policy").
--
--   sync = { { ..., policy = "scripts/examples/policy-no-contractors.lua" } }
return {
  user = function(u, ctx)
    local kind = u.profile.userType
    if type(kind) == "string" and kind:lower() == "contractor" then
      return nil
    end
    return {} -- everyone else: the default policy's account, unchanged
  end,
}
