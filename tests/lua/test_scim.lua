-- Tests of the SCIM 2.0 service provider (usersync.scim) and its filter
-- parser (usersync.scim_filter), on a store of their own: resources,
-- filters, paging, projections, PUT, PATCH, DELETE, ETags, errors, and the
-- users each push marks for the next run.
local test = require "tap"
local json = require "usersync.json"
local state = require "usersync.state"
local scim = require "usersync.scim"
local sf = require "usersync.scim_filter"

local BASE = "https://sync.example.com/scim/v2/entra"

local function fresh(source)
  local path = os.tmpname()
  os.remove(path)
  local db = assert(state.open(path))
  return scim.new(db, source or "entra"), db
end

-- A request: method, path, body (table -> JSON), args.
local function call(sp, method, path, body, args, extra)
  local req = { method = method, path = path, args = args or {}, base = BASE,
                body = type(body) == "table" and json.encode(body) or body }
  for k, v in pairs(extra or {}) do req[k] = v end
  local status, text, headers = sp:handle(req)
  local decoded = text ~= "" and json.decode(text) or nil
  return status, decoded, headers
end

local function user(name, extra)
  local u = { schemas = { scim.USER }, userName = name, name = { givenName = name:match("^(%a+)"), familyName = "Doe" },
              emails = { { value = name, type = "work", primary = true } }, active = true }
  for k, v in pairs(extra or {}) do u[k] = v end
  return u
end

local function changes(db, source)
  local out = {}
  for row in db:rows("SELECT user_id FROM scim_changes WHERE source = ? ORDER BY seq", source or "entra") do
    out[#out + 1] = row.user_id
  end
  return out
end

test("filter parser: operators, precedence, value paths, errors", function(t)
  local f = assert(sf.parse('userName eq "Bjensen" and (emails co "example.com" or title pr)'))
  t:eq(f.op, "and")
  t:eq(f[2].op, "or")
  local r = { userName = "bjensen", emails = { { value = "b@example.com", type = "work" } } }
  t:ok(sf.match(f, r), "case-insensitive userName and a multi-valued co")
  t:ok(not sf.match(assert(sf.parse('userName sw "x"')), r))
  t:ok(sf.match(assert(sf.parse('emails[type eq "work" and value ew ".com"]')), r))
  t:ok(sf.match(assert(sf.parse('not (userName eq "x") and USERNAME Eq "BJENSEN"')), r))
  t:ok(sf.match(assert(sf.parse('a eq "1" or b eq "2" and c eq "3"')), { a = "1" }), "and binds tighter than or")
  t:ok(not sf.match(assert(sf.parse('(a eq "1" or b eq "2") and c eq "3"')), { a = "1" }))
  t:ok(sf.match(assert(sf.parse('urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "7"')),
    { [scim.ENTERPRISE] = { employeeNumber = "7" } }))
  t:ok(sf.match(assert(sf.parse('name.familyName eq "Doe"')), { name = { familyName = "doe" } }))
  t:ok(sf.match(assert(sf.parse('active eq true')), { active = true }))
  t:ok(sf.match(assert(sf.parse('externalId eq "A1"')), { externalId = "A1" }))
  t:ok(not sf.match(assert(sf.parse('externalId eq "a1"')), { externalId = "A1" }), "externalId is case-exact")
  for _, bad in ipairs{ 'userName eq', 'userName xx "a"', '(userName eq "a"', 'userName eq "a" and', '"a" eq "b"',
                        'userName eq "unterminated', 'members[value eq "a"', '' } do
    local ok, err = sf.parse(bad)
    t:ok(ok == nil and type(err) == "string", "refused: " .. bad)
  end
  t:same(sf.hint(assert(sf.parse('userName eq "a" and active eq true')), "User"), { attr = "username", value = "a" })
  t:same(sf.hint(assert(sf.parse('members[value eq "u1"]')), "Group"), { attr = "member", value = "u1" })
  t:eq(sf.hint(assert(sf.parse('userName eq "a" or userName eq "b"')), "User"), nil)
  local p = assert(sf.path('emails[type eq "work"].value'))
  t:eq(p.attr, "emails"); t:eq(p.sub, "value"); t:eq(p.filter.op, "eq")
  p = assert(sf.path("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"))
  t:eq(p.urn, scim.ENTERPRISE:lower()); t:eq(p.attr, "manager")
end)

test("create, get, duplicate userName, unknown id, ETag and meta", function(t)
  local sp, db = fresh()
  local s, u, h = call(sp, "POST", "/Users", user("ann@example.com", { password = "hunter2", externalId = "E1" }))
  t:eq(s, 201)
  t:eq(u.userName, "ann@example.com")
  t:eq(u.password, nil, "a password is never stored nor returned")
  t:eq(u.meta.resourceType, "User")
  t:eq(u.meta.version, 'W/"1"')
  t:eq(h.ETag, 'W/"1"')
  t:eq(h.Location, BASE .. "/Users/" .. u.id)
  t:eq(u.meta.location, h.Location)
  t:ok(not db:first("SELECT 1 AS x FROM scim_users WHERE resource LIKE '%hunter2%'"), "not in the store either")
  local s2, e = call(sp, "POST", "/Users", user("ANN@example.com"))
  t:eq(s2, 409)
  t:eq(e.scimType, "uniqueness")
  t:eq(e.status, "409")
  t:eq(e.schemas[1], scim.ERROR)
  local s3, got, h3 = call(sp, "GET", "/Users/" .. u.id)
  t:eq(s3, 200); t:eq(got.id, u.id); t:eq(h3.ETag, 'W/"1"')
  t:eq((call(sp, "GET", "/Users/" .. u.id, nil, nil, { if_none_match = 'W/"1"' })), 304)
  local s4, e4 = call(sp, "GET", "/Users/nope")
  t:eq(s4, 404); t:eq(e4.status, "404")
  t:eq((call(sp, "PATCH", "/Users/nope", { schemas = { scim.PATCHOP }, Operations = { { op = "remove", path = "title" } } })), 404)
  t:eq((call(sp, "DELETE", "/Users/nope")), 404)
  local s5, e5 = call(sp, "POST", "/Users", { schemas = { scim.USER } })
  t:eq(s5, 400); t:eq(e5.scimType, "invalidValue")
  t:eq((call(sp, "POST", "/Users", "{not json")), 400)
  t:same(changes(db), { u.id }, "the create marked the user for the next run")
end)

test("list: filters, paging, attributes and excludedAttributes", function(t)
  local sp = fresh()
  local ids = {}
  for i = 1, 25 do
    local _, u = call(sp, "POST", "/Users", user(("user%02d@example.com"):format(i), { externalId = "X" .. i,
      displayName = "User " .. i }))
    ids[i] = u.id
  end
  local s, l = call(sp, "GET", "/Users", nil, { filter = 'userName eq "USER07@example.com"' })
  t:eq(s, 200); t:eq(l.totalResults, 1); t:eq(l.Resources[1].id, ids[7]); t:eq(l.schemas[1], scim.LIST)
  s, l = call(sp, "GET", "/Users", nil, { filter = 'externalId eq "X9"' })
  t:eq(l.totalResults, 1); t:eq(l.Resources[1].id, ids[9])
  s, l = call(sp, "GET", "/Users", nil, { filter = 'id eq "' .. ids[3] .. '"' })
  t:eq(l.totalResults, 1)
  s, l = call(sp, "GET", "/Users", nil, { filter = 'userName sw "user1"' })
  t:eq(l.totalResults, 10)
  s, l = call(sp, "GET", "/Users", nil, { filter = 'emails co "user2" or displayName eq "User 3"' })
  t:eq(l.totalResults, 7)
  s, l = call(sp, "GET", "/Users", nil, { filter = 'emails[type eq "work" and value ew "05@example.com"]' })
  t:eq(l.totalResults, 1)
  s, l = call(sp, "GET", "/Users", nil, { filter = 'title pr' })
  t:eq(l.totalResults, 0); t:eq(#l.Resources, 0)
  t:ok(json.is_array(l.Resources), "Resources is [] when empty")
  s, l = call(sp, "GET", "/Users", nil, { startIndex = "11", count = "10" })
  t:eq(l.totalResults, 25); t:eq(l.startIndex, 11); t:eq(l.itemsPerPage, 10); t:eq(l.Resources[1].id, ids[11])
  s, l = call(sp, "GET", "/Users", nil, { startIndex = "21", count = "10" })
  t:eq(#l.Resources, 5)
  s, l = call(sp, "GET", "/Users", nil, { filter = 'userName sw "user"', startIndex = "24", count = "10" })
  t:eq(l.totalResults, 25); t:eq(#l.Resources, 2)
  s, l = call(sp, "GET", "/Users", nil, { count = "0" })
  t:eq(l.totalResults, 25); t:eq(#l.Resources, 0)
  s, l = call(sp, "GET", "/Users", nil, { filter = 'userName eq "user01@example.com"', attributes = "userName,name.givenName" })
  local r = l.Resources[1]
  t:eq(r.userName, "user01@example.com"); t:eq(r.id, ids[1]); t:eq(r.emails, nil); t:eq(r.name.givenName, "user")
  t:eq(r.name.familyName, nil)
  s, l = call(sp, "GET", "/Users", nil, { filter = 'userName eq "user01@example.com"', excludedAttributes = "emails,name" })
  r = l.Resources[1]
  t:eq(r.emails, nil); t:eq(r.name, nil); t:eq(r.userName, "user01@example.com")
  local bad, e = call(sp, "GET", "/Users", nil, { filter = 'userName eq' })
  t:eq(bad, 400); t:eq(e.scimType, "invalidFilter")
  bad, e = call(sp, "GET", "/Users", nil, { filter = 'userName zz "x"' })
  t:eq(bad, 400); t:eq(e.scimType, "invalidFilter")
end)

test("PUT replaces, keeps id and created, bumps the version; If-Match", function(t)
  local sp = fresh()
  local _, u = call(sp, "POST", "/Users", user("bob@example.com", { title = "Dev" }))
  local s, p = call(sp, "PUT", "/Users/" .. u.id, user("bob@example.com", { displayName = "Bob D", id = u.id }))
  t:eq(s, 200); t:eq(p.id, u.id); t:eq(p.title, nil, "PUT clears what it leaves out"); t:eq(p.displayName, "Bob D")
  t:eq(p.meta.created, u.meta.created); t:eq(p.meta.version, 'W/"2"')
  local s2 = call(sp, "PUT", "/Users/" .. u.id, user("bob@example.com"), nil, { if_match = 'W/"1"' })
  t:eq(s2, 412)
  t:eq((call(sp, "PUT", "/Users/" .. u.id, user("bob@example.com"), nil, { if_match = 'W/"2"' })), 200)
  call(sp, "POST", "/Users", user("carl@example.com"))
  local s3, e = call(sp, "PUT", "/Users/" .. u.id, user("Carl@example.com"))
  t:eq(s3, 409); t:eq(e.scimType, "uniqueness")
end)

test("PATCH: add, replace, remove with and without path, value filters, extension", function(t)
  local sp = fresh()
  local _, u = call(sp, "POST", "/Users", user("dan@example.com"))
  local function patch(ops)
    return call(sp, "PATCH", "/Users/" .. u.id, { schemas = { scim.PATCHOP }, Operations = ops })
  end
  local s, r = patch{ { op = "replace", value = { active = false, displayName = "Dan", ["name.familyName"] = "Dee" } } }
  t:eq(s, 200); t:eq(r.active, false); t:eq(r.displayName, "Dan"); t:eq(r.name.familyName, "Dee"); t:eq(r.name.givenName, "dan")
  s, r = patch{ { op = "Replace", path = "active", value = "True" } }
  t:eq(r.active, true, '"True" is true')
  s, r = patch{ { op = "add", path = "emails", value = { { value = "dan@home.example", type = "home" } } } }
  t:eq(#r.emails, 2)
  s, r = patch{ { op = "replace", path = 'emails[type eq "home"].value', value = "dan@other.example" } }
  t:eq(r.emails[2].value, "dan@other.example"); t:eq(r.emails[1].value, "dan@example.com")
  s, r = patch{ { op = "add", path = 'phoneNumbers[type eq "mobile"].value', value = "+1 555" } }
  t:eq(r.phoneNumbers[1].type, "mobile"); t:eq(r.phoneNumbers[1].value, "+1 555")
  s, r = patch{ { op = "remove", path = 'emails[type eq "home"]' } }
  t:eq(#r.emails, 1)
  s, r = patch{ { op = "add", path = scim.ENTERPRISE .. ":employeeNumber", value = "42" },
                { op = "add", path = scim.ENTERPRISE .. ":manager", value = { value = "mgr1" } } }
  t:eq(r[scim.ENTERPRISE].employeeNumber, "42"); t:eq(r[scim.ENTERPRISE].manager.value, "mgr1")
  s, r = patch{ { op = "replace", value = { [scim.ENTERPRISE] = { department = "R&D" } } } }
  t:eq(r[scim.ENTERPRISE].department, "R&D"); t:eq(r[scim.ENTERPRISE].employeeNumber, "42")
  s, r = patch{ { op = "remove", path = scim.ENTERPRISE .. ":employeeNumber" }, { op = "remove", path = "name.familyName" } }
  t:eq(r[scim.ENTERPRISE].employeeNumber, nil); t:eq(r.name.familyName, nil)
  s, r = patch{ { op = "replace", path = "userName", value = "daniel@example.com" } }
  t:eq(r.userName, "daniel@example.com")
  local e
  s, e = patch{ { op = "remove" } }
  t:eq(s, 400); t:eq(e.scimType, "noTarget")
  s, e = patch{ { op = "move", path = "title" } }
  t:eq(s, 400); t:eq(e.scimType, "invalidSyntax")
  s, e = patch{ { op = "replace", path = "emails[type eq]", value = "x" } }
  t:eq(s, 400); t:eq(e.scimType, "invalidPath")
  s, e = patch{ { op = "replace", path = "active", value = "maybe" } }
  t:eq(s, 400)
  local _, cur = call(sp, "GET", "/Users/" .. u.id)
  t:eq(cur.active, true, "a refused PATCH changed nothing")
  t:eq(cur.userName, "daniel@example.com")
end)

test("groups: members, value-filtered remove, excludedAttributes, rename and delete touch members", function(t)
  local sp, db = fresh()
  local ids = {}
  for i = 1, 4 do local _, u = call(sp, "POST", "/Users", user("m" .. i .. "@example.com")); ids[i] = u.id end
  db:exec("DELETE FROM scim_changes")
  local s, g = call(sp, "POST", "/Groups", { schemas = { scim.GROUP }, displayName = "Engineering",
    members = { { value = ids[1] }, { value = ids[2] } } })
  t:eq(s, 201); t:eq(#g.members, 2); t:eq(g.members[1].display ~= nil, true)
  t:same(changes(db), { ids[1], ids[2] })
  db:exec("DELETE FROM scim_changes")
  s = call(sp, "PATCH", "/Groups/" .. g.id, { schemas = { scim.PATCHOP }, Operations = {
    { op = "add", path = "members", value = { { value = ids[3] }, { value = ids[1] } } } } })
  t:eq(s, 204)
  t:same(changes(db), { ids[3] }, "only the member that joined")
  db:exec("DELETE FROM scim_changes")
  call(sp, "PATCH", "/Groups/" .. g.id, { schemas = { scim.PATCHOP }, Operations = {
    { op = "remove", path = ('members[value eq "%s"]'):format(ids[1]) } } })
  t:same(changes(db), { ids[1] })
  local _, l = call(sp, "GET", "/Groups", nil, { filter = ('members[value eq "%s"]'):format(ids[2]) })
  t:eq(l.totalResults, 1)
  _, l = call(sp, "GET", "/Groups", nil, { filter = ('members[value eq "%s"]'):format(ids[1]) })
  t:eq(l.totalResults, 0)
  _, l = call(sp, "GET", "/Groups", nil, { filter = 'displayName eq "engineering"', excludedAttributes = "members" })
  t:eq(l.totalResults, 1); t:eq(l.Resources[1].members, nil)
  local _, one = call(sp, "GET", "/Groups/" .. g.id, nil, { excludedAttributes = "members" })
  t:eq(one.members, nil); t:eq(one.displayName, "Engineering")
  _, one = call(sp, "GET", "/Groups/" .. g.id)
  t:eq(#one.members, 2)
  db:exec("DELETE FROM scim_changes")
  call(sp, "PATCH", "/Groups/" .. g.id, { schemas = { scim.PATCHOP }, Operations = {
    { op = "replace", value = { id = g.id, displayName = "Eng" } } } })
  local got = changes(db); table.sort(got)
  local want = { ids[2], ids[3] }; table.sort(want)
  t:same(got, want, "a rename touches every member")
  local _, u2 = call(sp, "GET", "/Users/" .. ids[2])
  t:eq(u2.groups[1].display, "Eng")
  db:exec("DELETE FROM scim_changes")
  t:eq((call(sp, "DELETE", "/Groups/" .. g.id)), 204)
  got = changes(db); table.sort(got)
  t:same(got, want, "a deleted group touches its members")
  t:eq((call(sp, "GET", "/Groups/" .. g.id)), 404)
end)

test("discovery: ServiceProviderConfig, ResourceTypes, Schemas", function(t)
  local sp = fresh()
  local s, c = call(sp, "GET", "/ServiceProviderConfig")
  t:eq(s, 200); t:eq(c.patch.supported, true); t:eq(c.filter.maxResults, 1000); t:eq(c.etag.supported, true)
  local _, rt = call(sp, "GET", "/ResourceTypes")
  t:eq(rt.totalResults, 2); t:eq(rt.Resources[1].schemaExtensions[1].schema, scim.ENTERPRISE)
  local _, sc = call(sp, "GET", "/Schemas")
  t:eq(sc.totalResults, 3)
  local s2, one = call(sp, "GET", "/Schemas/" .. scim.USER)
  t:eq(s2, 200); t:eq(one.attributes[1].name, "userName")
  t:eq((call(sp, "GET", "/Nothing")), 404)
  t:eq((call(sp, "DELETE", "/ServiceProviderConfig")), 405)
end)

test("two sources in one store are apart", function(t)
  local a, db = fresh("okta-scim")
  local b = scim.new(db, "entra")
  call(a, "POST", "/Users", user("same@example.com"))
  t:eq((call(b, "POST", "/Users", user("same@example.com"))), 201, "the same userName in another source")
  local _, l = call(b, "GET", "/Users")
  t:eq(l.totalResults, 1)
end)

test("scim_source: the stored pushes in the Okta shape the engine and policies read", function(t)
  local sp, db = fresh()
  local _, a = call(sp, "POST", "/Users", user("ann@example.com", { displayName = "Ann A",
    emails = { { value = "ann@home.example", type = "home" }, { value = "ann@example.com", type = "work" } },
    [scim.ENTERPRISE] = { department = "R&D", manager = { value = "m1", displayName = "Boss" } } }))
  local _, b = call(sp, "POST", "/Users", user("bob@example.com", { active = false }))
  local _, g = call(sp, "POST", "/Groups", { displayName = "Engineering", members = { { value = a.id } } })
  call(sp, "POST", "/Groups", { displayName = "Ops", members = { { value = a.id }, { value = b.id } } })
  local src = require("usersync.scim_source").new(db, "entra", {}, nil)
  local snap = assert(src:scope{ include = function(gr) return gr.profile.name ~= "Ops" end })
  t:eq(#snap.users, 2); t:eq(snap.complete, true); t:eq(snap.requests, 0)
  local ua = snap.users[1]
  t:eq(ua.id, a.id); t:eq(ua.status, "ACTIVE"); t:eq(ua.profile.login, "ann@example.com")
  t:eq(ua.profile.email, "ann@example.com", "the work email when none is primary")
  t:eq(ua.profile.firstName, "ann"); t:eq(ua.profile.lastName, "Doe"); t:eq(ua.profile.displayName, "Ann A")
  t:eq(ua.profile.department, "R&D"); t:eq(ua.profile.manager, "Boss")
  t:same(ua.groups, { g.id }, "only the counted groups")
  t:eq(snap.users[2].status, "DEPROVISIONED")
  t:eq(snap.groups[g.id].profile.name, "Engineering")
  t:eq(src:user("ANN@example.com").id, a.id, "by userName, case-insensitively")
  t:eq(src:user(b.id).profile.login, "bob@example.com")
  local none, _, code = src:user("nobody@example.com")
  t:eq(none, nil); t:eq(code, "ENOTFOUND")
  t:eq(#src:user_groups(a.id), 2)
  local ch = src:changes{ since = "2000-01-01T00:00:00.000Z" }
  t:eq(#ch.users, 2)
  t:eq(#src:changes{ since = ch.watermark }.users, 0)
  local c = src:check()
  t:eq(c.ok, true); t:match(c.stored, "^2 users and 2 groups")
end)

test("config: a scim source needs its token for serve only; unknown types are named", function(t)
  local config = require "usersync.config"
  local secrets = require "usersync.secrets"
  local base = { sources = { entra = { type = "scim", token = "a-long-enough-token-1234" } },
                 targets = { jira = { type = "jira", url = "https://jira.example.com", token = "tok-0123456789" } },
                 sync = { { name = "s", source = "entra", targets = { "jira" } } } }
  local cfg, errs = config.validate(base)
  t:eq(#errs, 0, table.concat(errs, "; "))
  t:eq(cfg.sources.entra.type, "scim")
  base.sources.entra.url = "https://x.example.com"
  _, errs = config.validate(base)
  t:match(errs[1] or "", "sources%.entra%.url: unknown key")
  base.sources.entra.url = nil
  base.sources.entra.token = secrets.env("USERSYNC_TEST_SURELY_UNSET_VAR")
  _, errs = config.validate(base)
  t:eq(#errs, 0, "plan and sync run without the token")
  _, errs = config.validate(base, { serve = true })
  t:match(errs[1] or "", "^sources%.entra%.token")
  base.sources.entra = { type = "ldap" }
  _, errs = config.validate(base)
  t:match(errs[1] or "", 'sources%.entra%.type: expected "okta" or "scim", got "ldap"')
end)

return test.done()
