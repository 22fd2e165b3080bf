-- The identity providers' SCIM habits against the real `usersync serve`
-- (issue 18): each test replays the request sequence an IdP's provisioning
-- engine sends, as its documentation shows it — Okta's SCIM 2.0 app
-- integration and Microsoft Entra ID's provisioning service — and the
-- endpoint's security: Bearer token per source, 401 that says nothing about
-- what exists, size limit, TLS.
local test = require "tap"
local world = require "support.world"
local serve = require "support.serve"
local json = require "usersync.json"
local http = require "usersync.http"

local TOKEN = "idp-scim-token-0123456789abcdef"
local USER = "urn:ietf:params:scim:schemas:core:2.0:User"
local ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
local GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
local PATCHOP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
local LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"

local function scim_world(raw)
  return world.new{ products = { "jira" },
    sync = { name = "idp", source = "idp", targets = { "jira" },
             groups = { mode = "manual", map = { ["Test SCIMv2"] = { "developers" } } } },
    extra = { sources = { idp = { type = "scim", token = TOKEN } },
              raw = raw or '  serve = { listen = "127.0.0.1:0" },' } }
end

local function enc(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- method, path (may hold a query), body table or text; returns status, decoded body, response.
local function scim(d, method, path, body, headers)
  local h = { Authorization = "Bearer " .. TOKEN, ["Content-Type"] = "application/scim+json",
              Accept = "application/scim+json" }
  for k, v in pairs(headers or {}) do h[k] = v end
  local r = d:request(method, "/scim/v2/idp" .. path, type(body) == "table" and json.encode(body) or body, h)
  local decoded = (r.body and r.body ~= "") and json.decode(r.body) or nil
  return r.status, decoded, r
end

test("Okta: the SCIM 2.0 app integration's sequence", function(t)
  local w <close> = scim_world()
  local d <close> = serve.start(w)
  -- "Test Connector Configuration": the first page of users, count=1
  local s, l = scim(d, "GET", "/Users?startIndex=1&count=1")
  t:eq(s, 200); t:eq(l.schemas[1], LIST); t:eq(l.totalResults, 0)
  -- create: a filtered GET by userName first, then POST (with a password and readOnly groups)
  s, l = scim(d, "GET", "/Users?filter=" .. enc('userName eq "test.user@okta.local"') .. "&startIndex=1&count=100")
  t:eq(s, 200); t:eq(l.totalResults, 0); t:ok(json.is_array(l.Resources))
  local s2, u, r = scim(d, "POST", "/Users", { schemas = { USER }, userName = "test.user@okta.local",
    name = { givenName = "Test", familyName = "User" },
    emails = { { primary = true, value = "test.user@okta.local", type = "work" } },
    displayName = "Test User", locale = "en-US", externalId = "00ujl29u0le5T6Aj10h7",
    groups = json.array{}, password = "1mz050nq", active = true })
  t:eq(s2, 201)
  t:eq(r.headers["content-type"], "application/scim+json")
  t:match(r.headers["location"] or "", "^http://127%.0%.0%.1:%d+/scim/v2/idp/Users/" .. u.id .. "$")
  t:eq(u.password, nil)
  -- Okta's retry after a lost answer: the same userName is a 409 uniqueness
  local s3, e = scim(d, "POST", "/Users", { schemas = { USER }, userName = "TEST.USER@okta.local" })
  t:eq(s3, 409); t:eq(e.scimType, "uniqueness")
  -- the filtered GET now finds it
  s, l = scim(d, "GET", "/Users?filter=" .. enc('userName eq "test.user@okta.local"') .. "&startIndex=1&count=100")
  t:eq(l.totalResults, 1); t:eq(l.Resources[1].id, u.id)
  -- profile update: GET, then PUT of the whole user (id and meta included)
  local _, cur = scim(d, "GET", "/Users/" .. u.id)
  cur.name.familyName = "Userson"
  cur.displayName = "Test Userson"
  local s4, put = scim(d, "PUT", "/Users/" .. u.id, cur)
  t:eq(s4, 200); t:eq(put.name.familyName, "Userson"); t:eq(put.meta.version, 'W/"2"')
  -- deactivation and reactivation: PATCH active without a path
  local s5, p = scim(d, "PATCH", "/Users/" .. u.id, { schemas = { PATCHOP },
    Operations = { { op = "replace", value = { active = false } } } })
  t:eq(s5, 200); t:eq(p.active, false)
  s5, p = scim(d, "PATCH", "/Users/" .. u.id, { schemas = { PATCHOP },
    Operations = { { op = "replace", value = { active = true } } } })
  t:eq(p.active, true)
  -- group push: look up by displayName, create empty, rename, add and remove members, delete
  s, l = scim(d, "GET", "/Groups?filter=" .. enc('displayName eq "Test SCIMv2"') .. "&startIndex=1&count=100")
  t:eq(s, 200); t:eq(l.totalResults, 0)
  local sg, g = scim(d, "POST", "/Groups", { schemas = { GROUP }, displayName = "Test SCIMv2", members = json.array{} })
  t:eq(sg, 201); t:eq(#g.members, 0)
  t:eq((scim(d, "PATCH", "/Groups/" .. g.id, { schemas = { PATCHOP }, Operations = {
    { op = "replace", value = { id = g.id, displayName = "Test SCIMv2 renamed" } } } })), 204)
  t:eq((scim(d, "PATCH", "/Groups/" .. g.id, { schemas = { PATCHOP }, Operations = {
    { op = "replace", value = { id = g.id, displayName = "Test SCIMv2" } } } })), 204)
  t:eq((scim(d, "PATCH", "/Groups/" .. g.id, { schemas = { PATCHOP }, Operations = {
    { op = "add", path = "members", value = { { value = u.id, display = "test.user@okta.local" } } } } })), 204)
  local _, gg = scim(d, "GET", "/Groups/" .. g.id)
  t:eq(gg.displayName, "Test SCIMv2"); t:eq(#gg.members, 1); t:eq(gg.members[1].value, u.id)
  t:ok(serve.wait_for(function() return #w:members_of("jira", "developers") == 1 end, 60),
    "the group push reached Jira")
  t:eq((scim(d, "PATCH", "/Groups/" .. g.id, { schemas = { PATCHOP }, Operations = {
    { op = "remove", path = ('members[value eq "%s"]'):format(u.id) } } })), 204)
  _, gg = scim(d, "GET", "/Groups/" .. g.id)
  t:eq(#gg.members, 0)
  t:eq((scim(d, "DELETE", "/Groups/" .. g.id)), 204)
  t:eq((scim(d, "GET", "/Groups/" .. g.id)), 404)
  -- import: users page by page
  s, l = scim(d, "GET", "/Users?startIndex=1&count=100")
  t:eq(l.totalResults, 1); t:eq(l.itemsPerPage, 1)
  t:eq(d:stop(), 0)
end)

test("Microsoft Entra ID: the provisioning service's sequence", function(t)
  local w <close> = scim_world()
  local d <close> = serve.start(w)
  -- "Test Connection": a filter on a random userName, answered with an empty list
  local s, l = scim(d, "GET", "/Users?filter=" .. enc('userName eq "b6d2e3f4-9a8c-4d1e-8f2a-3c4b5d6e7f80"'))
  t:eq(s, 200); t:eq(l.totalResults, 0); t:eq(#l.Resources, 0); t:eq(l.schemas[1], LIST)
  -- create: query by userName, then POST with the enterprise extension
  s, l = scim(d, "GET", "/Users?filter=" .. enc('userName eq "Test_User_ab6490ee@contoso.com"'))
  t:eq(l.totalResults, 0)
  local s1, u = scim(d, "POST", "/Users", { schemas = { USER, ENT }, externalId = "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
    userName = "Test_User_ab6490ee@contoso.com", active = true,
    emails = { { primary = true, type = "work", value = "Test_User_fd0ea19b@contoso.com" } },
    meta = { resourceType = "User" }, name = { formatted = "givenName familyName", familyName = "familyName",
    givenName = "givenName" }, roles = json.array{}, [ENT] = { employeeNumber = "701984", department = "Sales" } })
  t:eq(s1, 201); t:eq(u[ENT].employeeNumber, "701984")
  local _, mgr = scim(d, "POST", "/Users", { schemas = { USER }, userName = "Manager_1@contoso.com", active = true })
  -- matching by externalId
  s, l = scim(d, "GET", "/Users?filter=" .. enc('externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"'))
  t:eq(s, 200); t:eq(l.totalResults, 1); t:eq(l.Resources[1].id, u.id)
  -- updates with capitalised op names, value-filtered paths and the manager as a bare id
  local s2, p = scim(d, "PATCH", "/Users/" .. u.id, { schemas = { PATCHOP }, Operations = {
    { op = "Replace", path = 'emails[type eq "work"].value', value = "updatedEmail@contoso.com" },
    { op = "Replace", path = "name.familyName", value = "updatedFamilyName" },
    { op = "Add", path = 'phoneNumbers[type eq "work"].value', value = "+1 206 555 0100" },
    { op = "Add", path = ENT .. ":manager", value = mgr.id } } })
  t:eq(s2, 200)
  t:eq(p.emails[1].value, "updatedEmail@contoso.com"); t:eq(#p.emails, 1)
  t:eq(p.name.familyName, "updatedFamilyName"); t:eq(p.phoneNumbers[1].type, "work")
  t:eq(p[ENT].manager, mgr.id)
  -- disable and enable with "False" / "True" strings
  s2, p = scim(d, "PATCH", "/Users/" .. u.id, { schemas = { PATCHOP }, Operations = {
    { op = "Replace", path = "active", value = "False" } } })
  t:eq(s2, 200); t:eq(p.active, false)
  local _, one = scim(d, "GET", "/Users/" .. u.id)
  t:eq(one.active, false, "stored as a boolean")
  s2, p = scim(d, "PATCH", "/Users/" .. u.id, { schemas = { PATCHOP }, Operations = {
    { op = "Replace", value = { active = "True" } } } })
  t:eq(p.active, true)
  -- groups: create, reads without members, rename, members added and removed by value list
  local sg, g = scim(d, "POST", "/Groups", { schemas = { GROUP }, externalId = "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
    displayName = "displayName", meta = { resourceType = "Group" } })
  t:eq(sg, 201)
  local _, gr = scim(d, "GET", "/Groups/" .. g.id .. "?excludedAttributes=members")
  t:eq(gr.members, nil); t:eq(gr.displayName, "displayName"); t:eq(gr.externalId, "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159")
  s, l = scim(d, "GET", "/Groups?excludedAttributes=members&filter=" .. enc('displayName eq "displayName"'))
  t:eq(l.totalResults, 1); t:eq(l.Resources[1].members, nil)
  t:eq((scim(d, "PATCH", "/Groups/" .. g.id, { schemas = { PATCHOP }, Operations = {
    { op = "Replace", path = "displayName", value = "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName" } } })), 204)
  t:eq((scim(d, "PATCH", "/Groups/" .. g.id, { schemas = { PATCHOP }, Operations = {
    { op = "Add", path = "members", value = { { ["$ref"] = json.null, value = u.id }, { ["$ref"] = json.null, value = mgr.id } } } } })), 204)
  s, l = scim(d, "GET", "/Groups?filter=" .. enc(('members[value eq "%s"]'):format(u.id)) .. "&excludedAttributes=members")
  t:eq(l.totalResults, 1)
  t:eq((scim(d, "PATCH", "/Groups/" .. g.id, { schemas = { PATCHOP }, Operations = {
    { op = "Remove", path = "members", value = { { ["$ref"] = json.null, value = u.id } } } } })), 204)
  local _, g2 = scim(d, "GET", "/Groups/" .. g.id)
  t:eq(#g2.members, 1); t:eq(g2.members[1].value, mgr.id)
  t:eq(g2.displayName, "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName")
  -- delete: 204, then 404
  t:eq((scim(d, "DELETE", "/Users/" .. u.id)), 204)
  t:eq((scim(d, "GET", "/Users/" .. u.id)), 404)
  t:eq((scim(d, "DELETE", "/Groups/" .. g.id)), 204)
  -- a bad filter is a 400 invalidFilter
  local sb, eb = scim(d, "GET", "/Users?filter=" .. enc('userName equals "x"'))
  t:eq(sb, 400); t:eq(eb.scimType, "invalidFilter")
  t:eq(d:stop(), 0)
end)

test("security: auth first, the same 401 whatever exists; size limit; a token per source", function(t)
  local w <close> = scim_world()
  local d <close> = serve.start(w)
  local _, u = scim(d, "POST", "/Users", { schemas = { USER }, userName = "exists@example.com" })
  local function anon(path, headers)
    local r = d:request("GET", path, nil, headers)
    return r.status, r.body, r.headers["www-authenticate"]
  end
  local s1, b1, a1 = anon("/scim/v2/idp/Users/" .. u.id)
  local s2, b2 = anon("/scim/v2/idp/Users/does-not-exist")
  local s3, b3 = anon("/scim/v2/idp/Users?filter=" .. enc('userName eq "exists@example.com"'),
    { Authorization = "Bearer wrong-token-0123456789abcdef" })
  local s4, b4 = anon("/scim/v2/nosuchsource/Users/" .. u.id, { Authorization = "Bearer " .. TOKEN })
  local s5, b5 = anon("/scim/v2/idp/Users/" .. u.id, { Authorization = TOKEN })
  local s6, b6 = anon("/scim/v2/idp/Users/" .. u.id, { Authorization = "Bearer " .. TOKEN .. "x" })
  for i, s in ipairs{ s1, s2, s3, s4, s5, s6 } do t:eq(s, 401, "case " .. i) end
  for i, b in ipairs{ b2, b3, b4, b5, b6 } do t:eq(b, b1, "the same body, case " .. (i + 1)) end
  t:match(a1 or "", "^Bearer")
  t:eq(json.decode(b1).schemas[1], "urn:ietf:params:scim:api:messages:2.0:Error")
  -- a body over the limit is refused before it is read
  local big = ('{"schemas":["%s"],"userName":"big@example.com","title":"%s"}'):format(USER, ("x"):rep(1100000))
  local sb = scim(d, "POST", "/Users", big)
  t:eq(sb, 413)
  local _, l = scim(d, "GET", "/Users")
  t:eq(l.totalResults, 1, "nothing of the refused body was stored")
  -- the metrics count the refusals
  local m = d:metrics()
  t:ok((m['usersync_scim_requests_total{result="unauthorized"}'] or 0) >= 6)
  t:ok((m['usersync_scim_requests_total{result="too_large"}'] or 0) >= 1)
  t:eq(d:stop(), 0)
end)

test("TLS from serve.tls serves the SCIM endpoints too", function(t)
  local tmp = os.tmpname(); os.remove(tmp); os.execute("mkdir -p " .. tmp)
  local cert, key = tmp .. "/tls.crt", tmp .. "/tls.key"
  t:ok(os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -days 1 -keyout %s -out %s 2>/dev/null")
    :format(key, cert)), "openssl made a certificate")
  local w <close> = scim_world(('  serve = { listen = "127.0.0.1:0", tls = { cert = %q, key = %q } },'):format(cert, key))
  local d <close> = serve.start(w)
  t:eq(d.scheme, "https")
  local s, u = scim(d, "POST", "/Users", { schemas = { USER }, userName = "tls@example.com" })
  t:eq(s, 201)
  t:match(u.meta.location, "^https://")
  local plain = http.client{ retries = 0, timeout = 5 }
  local r = plain:request{ url = ("http://127.0.0.1:%d/scim/v2/idp/Users"):format(d.port),
                           headers = { Authorization = "Bearer " .. TOKEN } }
  t:ok(not r or r.status ~= 200, "plain HTTP is not served")
  t:eq(d:stop(), 0)
  os.execute("rm -rf " .. tmp)
end)

return test.done()
