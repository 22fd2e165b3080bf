-- Every read the Okta client makes, for the contract test (tests/contract/test_contract.py):
-- usersync run -c CONFIG okta_client.lua APP_ID USER_ID GROUP_ID SINCE
-- Prints one line per call; raises (exit 1) when a call fails.
local json = require "usersync.json"
local app, uid, gid, since = arg[1], arg[2], arg[3], arg[4]
local c = usersync.source "okta"

local function call(what, ...)
  local r, err, code = ...
  if r == nil then error(("%s failed: %s (%s)"):format(what, tostring(err), tostring(code)), 2) end
  print("ok " .. what)
  return r
end

call("users filter", c:users{ filter = 'status eq "ACTIVE"' })
call("users search", c:users{ search = 'profile.lastName sw "s"' })
call("users", c:users())
call("user by id", c:user(uid))
call("user by login", c:user("fay.moss@example.com"))
call("user groups", c:user_groups(uid))
call("groups", c:groups())
call("groups search", c:groups{ search = 'type eq "OKTA_GROUP"' })
call("groups filter", c:groups{ filter = 'lastUpdated gt "2020-01-01T00:00:00.000Z"' })
call("group", c:group(gid))
call("group members", c:group_members(gid))
call("app users", c:app_users(app))
call("app groups", c:app_groups(app))
call("app user", c:app_user(app, uid, { expand = "user" }))
call("app", c:app(app))
local logs = call("logs since", c:logs{ since = since, limit = 1000 })
call("logs cursor", c:logs{ cursor = logs.cursor })
call("logs filter", c:logs{ since = since, filter = 'eventType eq "user.lifecycle.create"' })
local ch = call("changes since", c:changes{ since = since })
call("changes cursor", c:changes{ cursor = ch.cursor })
call("changes watermark", c:changes{ watermark = "2020-01-01T00:00:00.000Z" })
call("scope without app", usersync.source("okta_all"):scope{})
local report = c:check()
print("check " .. json.encode(report.auth or {}))
