-- Okta reads that look valid but are not, and transient Okta failures (issue 12):
-- the real `usersync` binary against the Okta simulator (faults okta_raw_records,
-- okta_fail_first) and the Jira, Confluence and Bitbucket simulators; then the
-- Okta client alone for every kind of record (users, groups, app assignments,
-- System Log events, single gets).
local test = require "tap"
local world = require "support.world"
local json = require "usersync.json"
local fakes = require "support.fakes"
local S = require "support.oktasim"

-- Engineering (ann, bob), Ops (carol); all assigned to the app.
local base_world = world.small

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
    t:contains(r.stderr, "ERESPONSE")
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
  local n = tonumber(r.stderr:match("gave up after (%d+) retries"))
  t:ok(n and n >= 3, "retried with the budget of 429s: " .. r.stderr)
  t:eq(w.okta:count{ path = "^/api/v1/groups/00gEng/users$", status = 500 }, (n or 0) + 1, "1 attempt + the retries")
  t:eq(#w:writes("jira"), 0)
end)

-- The Okta client alone: every read checks every record it lists.
local sim <close> = fakes.start("okta", { state = S.org{ users = 3, groups = 2, members = { [1] = { 1, 2 } },
                                                        app = { users = 3, groups = { 1 } } } })
local function ago(s) return os.date("!%Y-%m-%dT%H:%M:%S.000Z", os.time() - s) end

local function bad(path, records, replace)
  sim:faults{ okta_raw_records = { { path = path, records = records, replace = replace or false } } }
end

test("client: each kind of record is checked, in listings and single gets", function(t)
  local c <close> = S.client(sim, { app_id = S.APP })
  local cases = {
    { "^/api/v1/users$", { { id = "00u9", status = "ACTIVE", profile = json.object{} } },
      function() return c:users() end, "GET /api/v1/users: record 4 of page 1 is not a valid User: profile.login is missing" },
    { "^/api/v1/users/[^/]+$", { json.object{} },
      function() return c:user(S.uid(1)) end, "GET /api/v1/users/" .. S.uid(1) .. ": the answer is not a valid User: id is missing" },
    { "^/api/v1/users/[^/]+/groups$", { { id = "00g9", type = 7, profile = { name = "x" } } },
      function() return c:user_groups(S.uid(1)) end, "is not a valid Group: type is a number, not a non-empty string" },
    { "^/api/v1/groups/[^/]+$", { { id = "00g1", type = "OKTA_GROUP", profile = { name = "" } } },
      function() return c:group(S.gid(1)) end, "the answer is not a valid Group: profile.name is \"\", not a non-empty string" },
    { "^/api/v1/apps/[^/]+/groups$", { { priority = 0 } },
      function() return c:app_groups() end, "record 2 of page 1 is not a valid ApplicationGroupAssignment: id is missing" },
    { "^/api/v1/apps/[^/]+/users$", { { id = "00u7", scope = "USER", status = "ACTIVE",
                                        _embedded = { user = { id = "00u8", status = "ACTIVE", profile = { login = "a@b" } } } } },
      function() return c:app_users() end, "is not a valid AppUser: _embedded.user.id differs from the AppUser id" },
    { "^/api/v1/apps/[^/]+/users$", { { id = "00u7", scope = "USER", status = "ACTIVE", _embedded = { user = "x" } } },
      function() return c:scope{} end, "is not a valid AppUser: _embedded.user: the record is \"x\", not an object" },
    { "^/api/v1/logs$", { { uuid = "u1", published = "2026-01-01T00:00:00.000Z", eventType = "user.lifecycle.create",
                            target = { { type = "User", id = json.null } } } },
      function() return c:changes{ since = ago(60) } end,
      "GET /api/v1/logs: record 1 of page 1 is not a valid LogEvent: target[0].id is null, not an Okta id" },
    { "^/api/v1/logs$", { { uuid = "u2", eventType = "x" } },
      function() return c:logs{ since = ago(60) } end, "is not a valid LogEvent: published is missing" },
  }
  for _, k in ipairs(cases) do
    bad(k[1], k[2])
    local v, err, code, e = k[3]()
    t:eq(v, nil, k[4])
    t:eq(code, "ERESPONSE", err)
    t:contains(tostring(err), k[4])
    if e and e.code then t:eq(e.status, 200) end -- (c:scope returns the partial snapshot)
  end
  -- valid records of real shapes pass: the plain org reads
  sim:faults{}
  t:eq(#assert(c:users()), 3)
  t:eq(#assert(c:scope{}).users, 3)
  assert(c:changes{ since = ago(60) })
  assert(c:changes{ watermark = "2000-01-01T00:00:00.000Z" })
  t:eq(assert(c:check()).ok, true)
end)

test("client: a malformed record in a watermark read fails it; nothing partial comes back", function(t)
  local c <close> = S.client(sim, { app_id = S.APP })
  bad("^/api/v1/users$", { json.null })
  local v, err, code = c:changes{ watermark = "2000-01-01T00:00:00.000Z" }
  sim:faults{}
  t:eq(v, nil)
  t:eq(code, "ERESPONSE")
  t:contains(err, "record 4 of page 1 is not a valid User: the record is null, not an object")
end)
