-- okta-inventory.lua: a one-off script run with `usersync run`. It pages
-- through every Okta user and group over the Management API, classifies the
-- users, keeps an inventory in SQLite and prints a report. It shows the
-- runtime's primitives working together: http (paging by Link headers,
-- many requests in flight), json, re, store, time and log.
--
--   OKTA_URL=https://example.okta.com OKTA_TOKEN=... \
--     usersync run scripts/examples/okta-inventory.lua [inventory.db]
--
-- The token is read from the environment and registered as a secret, so it
-- never appears in output. The demo (tests/demo.sh) runs this script against
-- the Okta simulator.
local http = require "usersync.http"
local json = require "usersync.json"
local re = require "usersync.re"
local store = require "usersync.store"
local time = require "usersync.time"
local log = require "usersync.log"
local secrets = require "usersync.secrets"

local base = assert(os.getenv("OKTA_URL"), "set OKTA_URL (e.g. https://example.okta.com)")
local token = secrets.env("OKTA_TOKEN")
if secrets.is_missing(token) then error(token.reason) end
local db_path = arg[1] or "okta-inventory.db"

local client <close> = http.client{
  timeout = 30, per_host = 4, retries = 4,
  headers = { Authorization = "SSWS " .. token, Accept = "application/json" },
}

-- GET every page of a listing, following rel="next" exactly as given.
local function each_page(url, fn)
  local pages = 0
  while url do
    local r, err, code = client:request{ url = url, retry_headers = "okta" }
    if not r then error(("%s: %s (%s)"):format(url, err, code), 0) end
    if r.status ~= 200 then
      local body = json.decode(r.body) or {}
      error(("GET %s: HTTP %d %s"):format(url, r.status, tostring(body.errorCode or "")), 0)
    end
    local items = assert(json.decode(r.body))
    pages = pages + 1
    fn(items)
    url = http.link(r, "next")
  end
  return pages
end

local db = assert(store.open(db_path))
assert(db:exec([[CREATE TABLE IF NOT EXISTS inventory_users (
  id TEXT PRIMARY KEY, login TEXT, status TEXT, domain TEXT, plus_address INTEGER,
  mixed_case INTEGER, last_updated REAL, groups INTEGER DEFAULT 0)]]))
assert(db:exec("DELETE FROM inventory_users"))

-- Logins like "first.last+tag@Example.COM": the domain, the "+tag" and case.
local login_rx = assert(re.compile([[^(?<local>[^@+]+)(?<plus>\+[^@]*)?@(?<domain>.+)$]]))

local started = time.monotonic()
local users = 0
local user_pages = each_page(base .. "/api/v1/users?limit=200&search=" ..
  "status%20lt%20%22STAGED%22%20or%20status%20gt%20%22STAGED%22%20or%20status%20eq%20%22STAGED%22", function(items)
  db:transaction(function()
    for _, u in ipairs(items) do
      local login = u.profile.login
      local m = login_rx:match(login) or {}
      local updated = time.parse(u.lastUpdated)
      assert(db:exec("INSERT INTO inventory_users (id, login, status, domain, plus_address, mixed_case, last_updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
        u.id, login, u.status, m.domain and m.domain:lower() or "?", m.plus and 1 or 0,
        login ~= login:lower() and 1 or 0, updated))
      users = users + 1
    end
  end)
  log.debug("read %d users", users)
end)

-- Groups, then the members of every group at once (many requests in flight).
local groups = {}
each_page(base .. "/api/v1/groups?limit=200", function(items)
  for _, g in ipairs(items) do groups[#groups + 1] = g end
end)
local reqs = {}
for i, g in ipairs(groups) do reqs[i] = { url = base .. "/api/v1/groups/" .. g.id .. "/users?limit=200", retry_headers = "okta" } end
local results = client:request_many(reqs)
local member_requests = #reqs
for i, r in ipairs(results) do
  if not r.status then error(("members of %s: %s"):format(groups[i].profile.name, r.error), 0) end
  local members = assert(json.decode(r.body))
  local next_url = http.link(r, "next")
  if next_url then
    member_requests = member_requests + each_page(next_url, function(more)
      for _, u in ipairs(more) do members[#members + 1] = u end
    end)
  end
  groups[i].members = #members
  db:transaction(function()
    for _, u in ipairs(members) do
      assert(db:exec("UPDATE inventory_users SET groups = groups + 1 WHERE id = ?", u.id))
    end
  end)
end

local function count(sql, ...) return db:first(sql, ...).n end
print(("Okta inventory of %s, %s"):format(base, time.format(time.now())))
print(("  users: %d (%d pages), groups: %d (%d member requests), %.2f s"):format(
  users, user_pages, #groups, member_requests, time.monotonic() - started))
print("  by status:")
for _, row in ipairs(db:query("SELECT status, count(*) AS n FROM inventory_users GROUP BY status ORDER BY n DESC, status")) do
  print(("    %-16s %6d"):format(row.status, row.n))
end
print("  by domain:")
for _, row in ipairs(db:query("SELECT domain, count(*) AS n FROM inventory_users GROUP BY domain ORDER BY n DESC, domain LIMIT 5")) do
  print(("    %-24s %6d"):format(row.domain, row.n))
end
print(("  logins with +tag: %d, with upper case: %d, in no group: %d"):format(
  count("SELECT count(*) AS n FROM inventory_users WHERE plus_address = 1"),
  count("SELECT count(*) AS n FROM inventory_users WHERE mixed_case = 1"),
  count("SELECT count(*) AS n FROM inventory_users WHERE groups = 0")))
table.sort(groups, function(a, b) return a.members > b.members end)
print("  largest groups:")
for i = 1, math.min(5, #groups) do
  print(("    %-32s %6d"):format(groups[i].profile.name, groups[i].members))
end
print(("  inventory saved in %s (table inventory_users)"):format(db_path))
db:close()
