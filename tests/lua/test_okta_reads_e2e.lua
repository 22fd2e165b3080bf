-- Okta reads that look valid but are not, and transient Okta failures (issue 12):
-- the real `usersync` binary against the Okta simulator (faults okta_raw_records,
-- okta_fail_first) and the Jira, Confluence and Bitbucket simulators.
local test = require "tap"
local world = require "support.world"

-- Engineering (ann, bob), Ops (carol); all assigned to the app.
local function base_world(opts)
  local w = world.new(opts)
  w:okta_group("00gEng", "Engineering")
  w:okta_group("00gOps", "Ops")
  w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gEng" } })
  w:okta_user("00u2", "bob.stone@example.com", { groups = { "00gEng" } })
  w:okta_user("00u3", "carol.king@example.com", { groups = { "00gOps" } })
  w:load()
  return w
end

local MANUAL = { groups = { mode = "manual", map = { Engineering = { "developers" }, Ops = { "operations" } } },
                 defaults = { new_users = { "new-hires" }, all_users = { "okta-synced" } } }
local PRODUCTS = { "jira", "confluence", "bitbucket" }
local DEVS = { "ann.lee@example.com", "bob.stone@example.com" }

-- A member list (or user list) entry of each malformed kind, with what the message says.
local function user_like(id)
  return { id = id, status = "ACTIVE", profile = { login = "x@example.com" } }
end
local BAD = {
  { "null", "null", "the record is null, not an object" },
  { "a string", "00u2", 'the record is "00u2", not an object' },
  { "an empty object", {}, "id is missing" },
  { "a null id", user_like(nil), "id is missing" },
  { "a number id", user_like(42), "id is a number, not an Okta id" },
  { "a 70 KB id", user_like(("0"):rep(70 * 1024)), "id is a string of 71680 bytes, not an Okta id" },
  { "an id that is not alphanumeric", user_like("00u1/../x"), 'id is "00u1/../x", not an Okta id' },
  { "a null login", { id = "00u2", status = "ACTIVE", profile = { login = "null" } }, "profile.login is null" },
}

for _, case in ipairs(BAD) do
  local what, rec, why = case[1], case[2], case[3]
  test("a group member list holding " .. what .. ": the read fails, exit 3, no membership removed", function(t)
    local w <close> = base_world { sync = MANUAL }
    local r = w:usersync("sync")
    t:eq(r.code, 0, r.stderr)
    for _, p in ipairs(PRODUCTS) do t:same(w:members_of(p, "developers"), DEVS, p) end
    -- the whole first page of Engineering's members is the malformed record
    -- (json "null" placeholders become JSON null through the sim's JSON)
    local raw = rec == "null" and require("usersync.json").null or rec
    if type(raw) == "table" and raw.profile and raw.profile.login == "null" then
      raw.profile.login = require("usersync.json").null
    end
    w.okta:faults{ okta_raw_records = { { path = "^/api/v1/groups/00gEng/users$", records = { raw }, replace = true } } }
    w:clear_requests()
    r = w:usersync("sync")
    t:eq(r.code, 3, r.stdout .. r.stderr)
    t:contains(r.stderr, "reading okta failed")
    t:contains(r.stderr, "GET /api/v1/groups/00gEng/users: record 1 of page 1 is not a valid User: " .. why)
    t:contains(r.stderr, "OKTA_BAD_RECORD")
    t:eq(w.okta:count{ path = "^/api/v1/groups/00gEng/users$", status = 200 }, 1, "the page was served")
    for _, p in ipairs(PRODUCTS) do
      t:eq(#w:writes(p), 0, p .. ": no write at all")
      t:same(w:members_of(p, "developers"), DEVS, p .. ": developers kept")
      for name, a in pairs(w:accounts(p)) do
        if a.active ~= nil then t:eq(a.active, true, p .. ": " .. name .. " still active") end
      end
    end
  end)
end

test("a malformed record after the good ones on a user listing fails the read too", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "jira" } }
  t:eq(w:usersync("sync").code, 0)
  w.okta:faults{ okta_raw_records = { { path = "^/api/v1/apps/[^/]+/users$", records = { { id = "00u9" } } } } }
  w:clear_requests()
  local r = w:usersync("sync")
  t:eq(r.code, 3, r.stdout .. r.stderr)
  t:contains(r.stderr, "GET /api/v1/apps/" .. world.APP .. "/users: record 4 of page 1 is not a valid AppUser: scope is missing")
  t:eq(#w:writes("jira"), 0)
end)

test("a group listing with a group without a name fails the read", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "jira" } }
  t:eq(w:usersync("sync").code, 0)
  w.okta:faults{ okta_raw_records = { { path = "^/api/v1/groups$", records = { { id = "00gX", type = "OKTA_GROUP", profile = {} } } } } }
  w:clear_requests()
  local r = w:usersync("sync")
  t:eq(r.code, 3, r.stdout .. r.stderr)
  t:contains(r.stderr, "GET /api/v1/groups: record 3 of page 1 is not a valid Group: profile.name is missing")
  t:eq(#w:writes("jira"), 0)
end)

-- HTTP retries (issue 12): an idempotent read that fails with a 5xx is repeated with
-- backoff (the retry budget of 429s); one transient Okta 500 no longer stops the run.
for _, st in ipairs{ 500, 502, 503, 504 } do
  test(("an Okta GET failing once with %d is retried and the run completes"):format(st), function(t)
    local w <close> = base_world { sync = MANUAL, products = { "jira" } }
    w.okta:faults{ okta_fail_first = 1, fail_status = st, fail_path = "^/api/v1/groups/00gEng/users$" }
    w:clear_requests()
    local r = w:usersync("sync")
    t:eq(r.code, 0, r.stdout .. r.stderr)
    local seen = {}
    for _, q in ipairs(w.okta:requests()) do
      if q.path == "/api/v1/groups/00gEng/users" then seen[#seen + 1] = q.status end
    end
    t:same(seen, { st, 200 }, "the simulator saw the failure, then the retry")
    t:same(w:members_of("jira", "developers"), DEVS, "the run applied the memberships")
  end)
end

test("an Okta GET failing with 500 past the retry budget: exit 3, the message says so", function(t)
  local w <close> = base_world { sync = MANUAL, products = { "jira" } }
  t:eq(w:usersync("sync").code, 0)
  w.okta:faults{ okta_fail_first = 100, fail_status = 500, fail_path = "^/api/v1/groups/00gEng/users$" }
  w:clear_requests()
  local r = w:usersync("sync")
  t:eq(r.code, 3, r.stdout .. r.stderr)
  t:contains(r.stderr, "GET /api/v1/groups/00gEng/users: HTTP 500 E0000009")
  t:contains(r.stderr, "gave up after 3 retries")
  t:eq(w.okta:count{ path = "^/api/v1/groups/00gEng/users$", status = 500 }, 4, "1 attempt + 3 retries")
  t:eq(#w:writes("jira"), 0)
end)
