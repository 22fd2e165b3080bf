-- One-off migration with `usersync run`: rename accounts of a target in
-- bulk, in stages. Example: drop the e-mail domain from usernames
-- (ann.lee@example.com -> ann.lee) on Jira, 100 accounts at a time.
--
--   usersync run -c usersync.conf.lua --dry-run scripts/examples/migrate-rename.lua \
--       jira '^(.+)@example\.com$' '$1' 100      # prints what it would do
--   usersync run -c usersync.conf.lua scripts/examples/migrate-rename.lua \
--       jira '^(.+)@example\.com$' '$1' 100      # renames the first 100
--
-- Arguments: TARGET PATTERN REPLACEMENT [LIMIT]. PATTERN is a PCRE2 regular
-- expression matched against each username (case-insensitive), REPLACEMENT
-- may use $1 / ${name}. Accounts whose new name is already taken are
-- skipped and listed. Renames of accounts usersync links are recorded in
-- the store (no duplicate account, the link follows the new name).
--
-- It pairs with a policy change. The sync names accounts by its policy (the
-- default: the Okta login), so the next sync would rename every migrated
-- account back. Deploy a policy whose `user` hook gives the new names
-- (scripts/examples/policy-strip-domain.lua for this example) together with
-- the first stage, and keep scheduled syncs from running in between (stop
-- usersync-sync.timer or usersync serve while migrating). With the policy in
-- place, the accounts not yet migrated are renamed by the sync itself; run
-- this script again to continue in stages instead.
local re = require "usersync.re"

local target_name, pattern, replacement, limit = arg[1], arg[2], arg[3], tonumber(arg[4] or "")
if not (target_name and pattern and replacement) then
  io.stderr:write("usage: usersync run migrate-rename.lua TARGET PATTERN REPLACEMENT [LIMIT]\n")
  return 2
end
local rx, err = re.compile(pattern, "i")
if not rx then
  io.stderr:write("bad pattern: ", err, "\n")
  return 2
end

local t = usersync.target(target_name)
if not t:capabilities().rename then
  io.stderr:write(target_name, " cannot rename accounts\n")
  return 2
end
local taken, todo = {}, {}
assert(t:accounts(function(page)
  for _, a in ipairs(page) do
    taken[a.name:lower()] = true
    if rx:find(a.name) then todo[#todo + 1] = a.name end
  end
end))
table.sort(todo)

local db = usersync.store()
local renamed, skipped, failed = 0, {}, 0
for _, old in ipairs(todo) do
  if limit and renamed >= limit then break end
  local new = assert(rx:gsub(old, replacement, 1))
  if new == old then
    skipped[#skipped + 1] = ("%s (the replacement gives the same name)"):format(old)
  elseif taken[new:lower()] and new:lower() ~= old:lower() then
    skipped[#skipped + 1] = ("%s -> %s (taken)"):format(old, new)
  else
    local ok, msg, code = t:rename_user(old, new)
    if ok then
      renamed = renamed + 1
      taken[new:lower()] = true
      if not usersync.dry_run then
        db:exec("UPDATE links SET account_name = ? WHERE target = ? AND lower(account_name) = lower(?)", new, target_name, old)
      end
      if not usersync.dry_run then print(("renamed %s -> %s"):format(old, new)) end
    else
      failed = failed + 1
      io.stderr:write(("failed %s -> %s: %s (%s)\n"):format(old, new, msg, code))
    end
  end
end
for _, s in ipairs(skipped) do print("skipped " .. s) end
print(("%s%d renamed, %d skipped, %d failed, %d matching in all"):format(
  usersync.dry_run and "dry run: " or "", renamed, #skipped, failed, #todo))
return failed > 0 and 1 or 0
