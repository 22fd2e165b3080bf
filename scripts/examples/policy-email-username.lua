-- Example policy: usernames from the local part of the e-mail address
-- (ann.lee@example.com -> ann.lee) instead of the whole Okta login.
--
--   sync = { { ..., policy = "scripts/examples/policy-email-username.lua" } }
--
-- Only `user` is overridden, and only its `name`: display name, e-mail and
-- the active flag keep the default policy's values. Two Okta users whose
-- e-mails share a local part (ann@a.com, ann@b.com) map to one username;
-- usersync reports that as a conflict and applies neither.
return {
  user = function(u, ctx)
    local email = u.profile.email
    if type(email) ~= "string" then return nil end -- no e-mail: leave the user out
    local localpart = email:match("^([^@]+)@") or email
    return { name = localpart:lower() }
  end,
}
