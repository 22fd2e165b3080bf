-- Example usersync config. Copy it to ./usersync.conf.lua and
-- adjust. Secrets never sit here in clear: `env "NAME"` reads an environment
-- variable, `file "/path"` reads a file (trailing newline stripped).
-- Check it with:  usersync check -c usersync.conf.lua
return {
  state = "usersync.db",                        -- SQLite file: links, runs, audit log
  sources = {
    okta = { type = "okta", url = "https://example.okta.com",
             token = env "OKTA_API_TOKEN",      -- or oauth = { client_id = "...", private_key = file "/etc/usersync/okta.pem" }
             app_id = "0oa1b2c3d4" },           -- scope: users and groups assigned to this Okta app
  },
  targets = {
    jira       = { type = "jira",       url = "https://jira.example.com", token = env "JIRA_PAT" },
    confluence = { type = "confluence", url = "https://wiki.example.com", user = "svc", password = env "CONF_PW" },
    bitbucket  = { type = "bitbucket",  url = "https://git.example.com",  token = env "BB_TOKEN" },
    -- Atlassian Cloud (or, without flavour, any SCIM 2.0 service at its SCIM base URL):
    -- cloud   = { type = "scim", flavour = "atlassian",
    --             url = "https://api.atlassian.com/scim/directory/<directoryId>", token = env "ATL_SCIM_KEY" },
  },
  sync = {
    { name = "okta-to-atlassian", source = "okta", targets = { "jira", "confluence", "bitbucket" },
      every = "30m",
      users = { create = true, update = true, deactivate = true, reactivate = true, delete = false,
                project_lead = "svc-admin", component_lead = "svc-admin" },
      groups = { mode = "manual",
                 map = { ["Engineering"] = { "jira-developers", "bitbucket-devs" } },
                 create_missing = true, keep_existing = true,
                 include = { "^eng-", "^ops-" }, exclude = { "-test$" } },
      defaults = { new_users = { "jira-software-users" }, all_users = { "okta-synced" } },
      limits = { max_deprovision = "5%" },
    },
  },
  serve = {                                     -- `usersync serve` (scripts/systemd/usersync.service)
    listen = "127.0.0.1:8080",                  -- put TLS in front, or: tls = { cert = "/etc/usersync/tls.crt", key = "/etc/usersync/tls.key" }
    okta_hook = { path = "/hooks/okta",         -- the event hook's URL path in Okta
                  secret = env "OKTA_HOOK_SECRET" },  -- the Authorization value the hook sends
    poll_logs = "1m",                           -- System Log poll: sync users changed since the last poll
  },
}
