-- `usersync test FILE...` (policy tests) and `usersync test --record`:
-- the example policies' tests pass, a failing assertion is a "not ok" line
-- with where and what and exit 1, files that cannot run are failures, and
-- recording real (simulated) Okta users leaves secrets out.
local test = require "tap"
local proc = require "support.proc"
local world = require "support.world"
local json = require "usersync.json"

local SRC = os.getenv("SOURCE_DIR") or "."
local BIN = os.getenv("USERSYNC")

local function usersync(...)
  return proc.run({ BIN, ... }, { env = { NO_COLOR = "1" } })
end

local function ls(pattern)
  local out, p = {}, io.popen("ls " .. pattern .. " 2>/dev/null")
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

local dir = os.tmpname(); os.remove(dir)
os.execute("mkdir -p " .. dir)
local function file(name, text)
  local path = dir .. "/" .. name
  local f = assert(io.open(path, "w")); f:write(text); f:close()
  return path
end

test("every example policy has tests, and they all pass", function(t)
  local policies = ls(SRC .. "/scripts/examples/policy-*.lua")
  t:ok(#policies >= 4, "the example policies")
  local tests = {}
  for _, p in ipairs(policies) do
    local name = p:match("([^/]+)%.lua$")
    local tf = SRC .. "/scripts/examples/tests/" .. name .. "_test.lua"
    t:ok(io.open(tf, "r") ~= nil, name .. " has " .. tf)
    tests[#tests + 1] = tf
  end
  local r = usersync("test", table.unpack(tests))
  t:eq(r.code, 0, r.stdout .. r.stderr)
  local ok_lines = select(2, r.stdout:gsub("\nok %d+ %- ", ""))
  t:ok(ok_lines >= 12, "at least 12 tests ran, got " .. ok_lines)
  t:eq(r.stdout:find("not ok", 1, true), nil)
  t:match(r.stdout, "\n1%.%." .. ok_lines .. "\n" .. ok_lines .. " passed, 0 failed\n$")
end)

test("a failing assertion: not ok, where and what, exit 1; the others still run", function(t)
  local pol = file("policy.lua", [[
return {
  user = function(u, ctx)
    if u.profile.login == "boom@example.com" then error("cannot map boom") end
    return { name = u.profile.login:lower() }
  end,
}
]])
  local tf = file("policy_test.lua", [[
local p = usersync.policy("policy.lua", { groups = { map = { Eng = "devs" } } })
expect(p.user(usersync.user{ login = "A@example.com" }).name).to_be("a@example.com")
test("a passing test", function()
  expect(p.groups(usersync.user{ login = "a@x" }, { usersync.group("Eng") })).to_equal({ "devs" })
end)
test("a failing test", function()
  expect(p.user(usersync.user{ login = "B@example.com" }).name).to_be("B@example.com")
  expect({ 1, 2 }).to_equal({ 1, 3 })
end)
test("a hook error is what to_fail expects", function()
  expect(function() p.user(usersync.user{ login = "boom@example.com" }) end).to_fail("cannot map boom")
end)
test("an error inside a test fails just that test", function()
  local nothing = nil
  return nothing.field
end)
expect(p.default_groups({ name = "a" }, true)).to_equal({})
]])
  local r = usersync("test", tf)
  t:eq(r.code, 1, r.stderr)
  local o = r.stdout
  t:contains(o, "# " .. tf .. "\n")
  t:contains(o, "\nok 1 - " .. tf .. ':2: to_be("a@example.com")\n')
  t:contains(o, "\nok 2 - a passing test\n")
  t:contains(o, "\nnot ok 3 - a failing test\n")
  t:contains(o, "\n#   " .. tf .. ':7: to_be("B@example.com"): expected "B@example.com", got "b@example.com"\n')
  t:contains(o, "\n#   " .. tf .. ":8: to_equal({ 1, 3 }): expected { 1, 3 }, got { 1, 2 }\n")
  t:contains(o, "\nok 4 - a hook error is what to_fail expects\n")
  t:contains(o, "\nnot ok 5 - an error inside a test fails just that test\n#   error: ")
  t:contains(o, "\nok 6 - " .. tf .. ":17: to_equal({  })\n")
  t:contains(o, "\n1..6\n4 passed, 2 failed\n")
end)

test("files that cannot run are failures; no file is a usage error", function(t)
  local syntax = file("syntax_test.lua", "test('x', function() end\n")
  local global = file("global_test.lua", "expect(1).to_be(1)\nlocal x = undefined_thing\n")
  local sandboxed = file("io_test.lua", "io.open('/etc/passwd')\n")
  local settings = file("settings_test.lua", "usersync.policy(nil, { groups = { mode = 'auto' } })\n")
  local r = usersync("test", syntax, global, sandboxed, settings)
  t:eq(r.code, 1)
  t:match(r.stdout, "not ok 1 %- " .. syntax:gsub("%p", "%%%0") .. "\n#   .*syntax_test%.lua:2:")
  t:contains(r.stdout, "ok 2 - " .. global .. ":1: to_be(1)")
  t:contains(r.stdout, "not ok 3 - " .. global .. ": stopped by an error")
  t:contains(r.stdout, "undefined global 'undefined_thing'")
  t:contains(r.stdout, "not ok 4 - " .. sandboxed .. ": stopped by an error")
  t:contains(r.stdout, "not ok 5 - " .. settings .. ": stopped by an error")
  t:contains(r.stdout, 'usersync.policy: bad settings: settings.groups.mode: expected "manual" or "on_the_fly", got "auto"')
  -- a runaway loop ends with the instruction budget, not a hang
  local loop = file("loop_test.lua", "test('loops', function() while true do end end)\n")
  r = usersync("test", loop)
  t:eq(r.code, 1)
  t:contains(r.stdout, "not ok 1 - " .. loop .. ": stopped by an error\n#   " .. loop .. ":1: instruction budget of")
  t:eq(r.stdout:find("stack traceback", 1, true), nil, "no traceback")
  r = usersync("test")
  t:eq(r.code, 2)
  t:contains(r.stderr, "usersync test: which test files?")
end)

test("--record: real Okta users into a fixture, secrets left out, then tested", function(t)
  local w <close> = world.new{ products = { "jira" } }
  w:okta_group("00gEng", "Engineering")
  w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gEng" },
    profile = { firstName = "Ann", lastName = "Lee", apiToken = "tok-123456789", note = "token=test-token" } })
  w:okta_user("00u2", "bob.stone@example.com", { status = "SUSPENDED" })
  w:load()
  w.okta:clear_requests()
  local fixture = dir .. "/recorded.json"
  local r = w:usersync("test", "--record", fixture, "ann.lee@example.com", "00u2")
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "recorded 2 users and 1 group from okta into " .. fixture .. " (left out: profile.apiToken)")
  local text = proc.slurp(fixture)
  t:eq(text:find("test-token", 1, true), nil, "the Okta token never reaches the fixture")
  t:eq(text:find("tok-123456789", 1, true), nil, "a profile attribute named like a secret is left out")
  t:eq(text:find("_links", 1, true), nil, "no links")
  t:eq(text:find("credentials", 1, true), nil, "no credentials object")
  local doc = json.decode(text)
  t:eq(doc.schema, "usersync.fixture/1")
  t:eq(doc.users[1].profile.login, "ann.lee@example.com")
  t:eq(doc.users[1].profile.note, "token=********", "a credential-shaped value is masked")
  t:same(doc.users[1].groups, { "00gEng" })
  t:eq(doc.users[2].status, "SUSPENDED")
  t:eq(doc.groups[1].profile.name, "Engineering")
  t:eq(w.okta:count{ method = "GET", path = "^/api/v1/users/[^/]+$" }, 2, "one read per user")
  t:eq(w.okta:count{ method = "GET", path = "^/api/v1/users/[^/]+/groups$" }, 2, "and one for their groups")
  local tf = file("recorded_test.lua", [[
local p = usersync.policy(nil, { groups = { map = { Engineering = "devs" } } })
local fx = usersync.fixture("recorded.json")
test("recorded users through the default policy", function()
  local ann = fx:user("ann.lee@example.com")
  expect(p.account(ann, fx:groups_of(ann)).groups).to_equal({ "devs" })
  expect(p.user(fx:user("00u2")).active).to_be(false)
end)
]])
  r = usersync("test", tf)
  t:eq(r.code, 0, r.stdout)
  -- usage errors of --record
  r = w:usersync("test", "--record", fixture)
  t:eq(r.code, 2)
  t:contains(r.stderr, "--record needs the Okta users to record")
  r = w:usersync("test", "--record", fixture, "nobody@example.com")
  t:eq(r.code, 2)
  t:contains(r.stderr, "no Okta user 'nobody@example.com'")
end)

test("a test's name cannot forge a TAP line or a directive", function(t)
  local tf = file("names_test.lua", [[
test("two\nok 99 - forged", function() expect(1).to_be(2) end)
test("a failure # TODO not really", function() expect(1).to_be(2) end)
test("passes", function() expect(1).to_be(1) end)
]])
  local r = usersync("test", tf)
  t:eq(r.code, 1, r.stderr)
  -- hand-written: each test one line, the break and the # escaped
  t:contains(r.stdout, "\nnot ok 1 - two\\nok 99 - forged\n")
  t:contains(r.stdout, "\nnot ok 2 - a failure \\# TODO not really\n")
  t:contains(r.stdout, "\nok 3 - passes\n")
  t:eq(r.stdout:find("\nok 99", 1, true), nil, "no forged line")
  t:contains(r.stdout, "\n1..3\n1 passed, 2 failed\n")
end)

os.execute("rm -rf " .. dir)

return test.done()
