-- Usernames without the e-mail domain: ann.lee@example.com -> ann.lee.
-- The policy half of the migration in migrate-rename.lua: deploy it with the
-- rename (before the next sync runs), or that sync renames every migrated
-- account back to the Okta login, as the default policy names accounts.
--
--   sync = { { name = "main", source = "okta", targets = { "jira" },
--              policy = "scripts/examples/policy-strip-domain.lua" } }
--
-- Logins of another domain keep their whole login.
local DOMAIN = "@example.com"

return {
  user = function(u, ctx)
    local account = default.user(u, ctx)
    if account and account.name:lower():sub(-#DOMAIN) == DOMAIN then
      account.name = account.name:sub(1, -#DOMAIN - 1)
    end
    return account
  end,
}
