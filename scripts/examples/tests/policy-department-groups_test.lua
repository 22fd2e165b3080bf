-- Tests of ../policy-department-groups.lua: run with
--   usersync test scripts/examples/tests/policy-department-groups_test.lua
local p = usersync.policy("../policy-department-groups.lua", {
  groups = { map = { Engineering = { "jira-developers" } } },
  defaults = { all_users = { "okta-synced" } },
})
local eng = usersync.group("Engineering")

test("a department adds its group to those of the group map", function()
  local ann = usersync.user{ login = "ann@example.com", department = "Customer Success" }
  expect(p.groups(ann, { eng })).to_equal({ "jira-developers", "dept-customer-success" })
end)

test("the department's name becomes a slug", function()
  local bob = usersync.user{ login = "bob@example.com", department = "  R&D / Platform " }
  expect(p.groups(bob, {})).to_equal({ "dept-r-d-platform" })
end)

test("no department: only the mapped groups", function()
  local carol = usersync.user{ login = "carol@example.com" }
  expect(p.groups(carol, { eng })).to_equal({ "jira-developers" })
end)

test("the whole way: the account and every group it gets", function()
  local ann = usersync.user{ login = "ann@example.com", firstName = "Ann", lastName = "Lee", department = "Sales" }
  local account = p.account(ann, { eng })
  expect(account.name).to_be("ann@example.com")
  expect(account.display_name).to_be("Ann Lee")
  expect(account.groups).to_equal({ "dept-sales", "jira-developers", "okta-synced" })
end)
