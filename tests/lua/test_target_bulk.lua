-- Bulk membership adds through t:apply in this process (so the sanitizer
-- and valgrind builds watch the binding): a group with hundreds of new
-- members, on every product, ends with all of them in it.
local test = require "tap"
local http = require "usersync.http"
local target = require "usersync.target"
local fakes = require "support.fakes"
local json = require "usersync.json"

local N = 300

for _, product in ipairs({ "jira", "bitbucket", "confluence" }) do
  test(product .. ": " .. N .. " add_member ops into one group in one apply", function(t)
    local users = {}
    for i = 1, N do
      local name = ("bulk%03d"):format(i)
      if product == "jira" then
        users[i] = { name = name, key = "K" .. i, displayName = name, emailAddress = name .. "@example.com", active = true }
      elseif product == "bitbucket" then
        users[i] = { name = name, slug = name, id = i + 10, displayName = name, emailAddress = name .. "@example.com" }
      else
        users[i] = { username = name, userKey = "k" .. i, displayName = name, email = name .. "@example.com", disabled = false }
      end
    end
    local state = { users = json.array(users), groups = json.array{ "bulk" }, members = {} }
    if product == "confluence" then state.license = { seats = N + 10 } end
    local sim <close> = fakes.start(product, { state = state })
    local hc <close> = http.client{ retries = 1 }
    local tg <close> = target.new(hc, { type = product, url = sim.url, token = "test-token" })
    local ops = {}
    for i = 1, N do ops[i] = { kind = "add_member", target = product, subject = users[i].name or users[i].username,
                               name = users[i].name or users[i].username, group = "bulk" } end
    local ok_count = 0
    local res = assert(tg:apply(ops, function(op, ok) if ok then ok_count = ok_count + 1 end end))
    t:eq(res.failed, 0)
    t:eq(ok_count, N)
    local members = sim:state().members.bulk or {}
    t:eq(#members, N)
  end)
end

return test.done()
