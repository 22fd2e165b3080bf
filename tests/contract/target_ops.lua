-- Every operation of the target clients, for the contract test (tests/contract/test_contract.py),
-- including those a sync never makes (delete_group) or makes only in some shapes (one user
-- into several groups): usersync run -c CONFIG target_ops.lua
-- Works on a throwaway account and group; prints one line per call; raises when a call fails.
local function call(what, ok, err, code)
  if not ok then error(("%s failed: %s (%s)"):format(what, tostring(err), tostring(code)), 2) end
  print("ok " .. what)
  return ok
end

for _, name in ipairs({ "jira", "confluence", "bitbucket" }) do
  local t = usersync.target(name)
  local caps = t:capabilities()
  local user, renamed, g1, g2 = "zed.temp@example.com", "zed.other@example.com", "contract-tmp-1", "contract-tmp-2"
  local function c(what, ...) return call(name .. ": " .. what, ...) end
  c("accounts", t:accounts(function() end))
  c("groups", t:groups(function() end))
  c("members", t:members("okta-synced", function() end))
  c("create group", t:create_group(g1))
  c("create group", t:create_group(g2))
  c("create user", t:create_user{ name = user, display_name = "Zed Temp", email = user })
  c("get", t:get(user))
  c("update user", t:update_user(user, { display_name = "Zed Temporary" }))
  c("add to groups", t:add_to_groups(user, { g1, g2 }))
  c("remove member", t:remove_member(g2, user))
  c("add member", t:add_member(g2, user))
  c("add members", t:add_members(g2, { user, "fay.moss@example.com" }))
  if caps.rename then
    c("rename user", t:rename_user(user, renamed))
    user = renamed
  end
  if caps.leads then c("leads", t:leads({ user })) end
  if caps.deactivate then c("deactivate user", t:deactivate_user(user)) end
  if caps.reactivate then c("reactivate user", t:reactivate_user(user)) end
  c("delete user", t:delete_user(user))
  c("delete group", t:delete_group(g1))
  c("delete group", t:delete_group(g2))
end
