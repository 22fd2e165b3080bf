-- Tests of ../policy-no-contractors.lua, on hand-written users and on the
-- recorded ones in okta-users.json (usersync test --record).
local p = usersync.policy("../policy-no-contractors.lua")
local recorded = usersync.fixture("okta-users.json")

test("a contractor gets no account, whatever the case", function()
  expect(p.user(usersync.user{ login = "cy@example.com", userType = "Contractor" })).to_be(nil)
  expect(p.user(usersync.user{ login = "cy@example.com", userType = "CONTRACTOR" })).to_be(nil)
end)

test("an employee keeps the default account", function()
  local account = p.user(usersync.user{ login = "Ann@example.com", firstName = "Ann", lastName = "Lee", userType = "Employee" })
  expect(account).to_equal({ name = "Ann@example.com", display_name = "Ann Lee", email = "Ann@example.com", active = true })
end)

test("recorded users: the contractor is left out, the others are not", function()
  expect(p.user(recorded:user("dana.contractor@example.com"))).to_be(nil)
  local ann = p.user(recorded:user("ann.lee@example.com"))
  expect(ann.name).to_be("ann.lee@example.com")
  expect(ann.active).to_be(true)
end)

test("a suspended employee maps to an inactive account; a staged one to none", function()
  expect(p.user(recorded:user("bob.stone@example.com")).active).to_be(false)
  expect(p.user(usersync.user{ login = "new@example.com", status = "STAGED" })).to_be(nil)
end)
