-- Tests of ../policy-email-username.lua.
local p = usersync.policy("../policy-email-username.lua")

test("the username is the e-mail's local part, lowercase", function()
  local u = usersync.user{ login = "ann@corp.example", email = "Ann.Lee@example.com" }
  expect(p.user(u).name).to_be("ann.lee")
  expect(p.user(u).email).to_be("Ann.Lee@example.com")
end)

test("no e-mail: the user is left out", function()
  local u = usersync.user{ login = "svc@example.com" }
  u.profile.email = nil
  expect(p.user(u)).to_be(nil)
end)

test("the hook needs a profile: a user without one is a policy error", function()
  expect(function() p.user({ id = "00u1", status = "ACTIVE" }) end).to_fail("policy-email-username.lua")
end)
