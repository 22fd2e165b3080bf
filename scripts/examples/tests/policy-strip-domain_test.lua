-- Tests of ../policy-strip-domain.lua, also on Confluence (lowercase names).
local p = usersync.policy("../policy-strip-domain.lua")

test("@example.com is stripped, other domains stay", function()
  expect(p.user(usersync.user{ login = "ann.lee@example.com" }).name).to_be("ann.lee")
  expect(p.user(usersync.user{ login = "guest@partner.example" }).name).to_be("guest@partner.example")
end)

test("the domain matches in any case; Confluence gets the default's lowercase name", function()
  local u = usersync.user{ login = "Ann.Lee@Example.com" }
  expect(p.user(u).name).to_be("Ann.Lee")
  expect(p.user(u, { target_type = "confluence" }).name).to_be("ann.lee")
end)
