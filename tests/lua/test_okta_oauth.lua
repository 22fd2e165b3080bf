-- test_okta_oauth.lua: usersync.okta with an OAuth 2.0 service app against
-- the simulator's /oauth2/v1/token: private_key_jwt (RS256) with DPoP, the
-- nonce handshake, DPoP-bound API calls, token reuse and renewal, a wrong
-- key, an expired assertion, scopes not granted, Bearer apps, no secrets in
-- errors. Keys are made with the openssl CLI.
local test = require "tap"
local crypto = require "usersync.crypto"
local json = require "usersync.json"
local time = require "usersync.time"
local fakes = require "support.fakes"
local S = require "support.oktasim"

local function genkey()
  local path = os.tmpname()
  assert(os.execute("openssl genrsa -out " .. path .. " 2048 2>/dev/null"), "openssl genrsa")
  local f = assert(io.open(path))
  local pem = f:read("a")
  f:close()
  os.remove(path)
  return pem
end

local PEM1, PEM2 = genkey(), genkey()
local JWK1 = json.decode(assert(crypto.load_key(PEM1)):jwk())
local ALL = { "okta.users.read", "okta.groups.read", "okta.apps.read", "okta.logs.read" }

local base = S.org{ users = 3, groups = 2, members = { [1] = { 1, 2 } }, app = { users = 3 } }
local sim <close> = fakes.start("okta", { state = base })

-- Loads the org with one OAuth client `cid` (fields merged into the default).
local function load(client)
  local st = S.org{ users = 3, groups = 2, members = { [1] = { 1, 2 } }, app = { users = 3 } }
  local c = { jwks = { JWK1 }, scopes = ALL, dpop = true }
  for k, v in pairs(client or {}) do c[k] = v end
  st.oauth_clients = { ["0oaSvc"] = c }
  sim:put_state(st)
  sim:faults{}
  sim:clear_requests()
end

local function oclient(oauth, extra)
  local o = { client_id = "0oaSvc", private_key = PEM1 }
  for k, v in pairs(oauth or {}) do o[k] = v end
  local src = { token = false, oauth = o, app_id = S.APP }
  for k, v in pairs(extra or {}) do src[k] = v end
  return S.client(sim, src)
end

test("client credentials + DPoP end to end: nonce handshake, bound API calls, token reused", function(t)
  load()
  local c <close> = oclient()
  local snap = assert(c:scope{})
  t:eq(#snap.users, 3)
  t:same(snap.users[1].groups, { S.gid(1) })
  t:eq(sim:count{ path = "^/oauth2/v1/token$", status = 400 }, 1, "use_dpop_nonce once")
  t:eq(sim:count{ path = "^/oauth2/v1/token$", status = 200 }, 1, "then a token")
  assert(c:users())
  t:eq(sim:count{ path = "^/oauth2/v1/token$" }, 2, "the token is reused")
  local r = c:check()
  t:eq(r.ok, true)
  t:eq(r.auth.method, "oauth")
  t:eq(r.auth.scope, table.concat(ALL, " "))
end)

test("the token is renewed before it expires; the cached nonce saves the handshake", function(t)
  load{ token_lifetime = 8 } -- renewed when half of it is left: 4 s after it came (calls between
  -- two renewals must fit in those 4 s, also under valgrind and on a loaded machine)
  local c <close> = oclient()
  assert(c:users())
  t:eq(sim:count{ path = "^/oauth2/v1/token$" }, 2)
  time.sleep(4.2)
  assert(c:users())
  t:eq(sim:count{ path = "^/oauth2/v1/token$" }, 3, "one new token request, no new nonce round")
  t:eq(sim:count{ path = "^/api/v1/", status = 401 }, 0, "never sent an expired token")
end)

test("a wrong key: EAUTH invalid_client, no key material in the message", function(t)
  load()
  local c <close> = oclient{ private_key = PEM2 }
  local v, err, code, e = c:users()
  t:eq(v, nil)
  t:eq(code, "EAUTH")
  t:eq(e.status, 401)
  t:eq(e.error_code, "invalid_client")
  t:contains(err, "signature is invalid")
  t:ok(not err:find("BEGIN", 1, true) and not err:find(PEM2:sub(40, 80), 1, true), "no PEM")
  t:eq(sim:count{ path = "^/api/v1/" }, 0, "no API call without a token")
  local r = c:check()
  t:eq(r.reachable, true)
  t:eq(r.auth.status, "denied")
  t:eq(r.auth.code, "EAUTH")
  t:eq(r.ok, false)
end)

test("an expired assertion (the server's clock is an hour ahead)", function(t)
  load()
  sim:clock{ advance = 3700 }
  local c <close> = oclient()
  local v, err, code, e = c:users()
  sim:clock{ advance = -3700 }
  t:eq(code, "EAUTH")
  t:eq(e.error_code, "invalid_client")
  t:contains(err, "expired")
end)

test("scopes: asking for one not granted fails; a missing scope is EFORBIDDEN", function(t)
  load{ scopes = { "okta.users.read", "okta.groups.read", "okta.apps.read" } }
  local c <close> = oclient()
  local v, err, code, e = c:users()
  t:eq(code, "EAUTH")
  t:eq(e.error_code, "invalid_scope")
  t:contains(err, "okta.logs.read")
  local c2 <close> = oclient{ scopes = { "okta.users.read", "okta.groups.read", "okta.apps.read" } }
  t:eq(#assert(c2:users()), 3)
  v, err, code, e = c2:logs{ since = os.date("!%Y-%m-%dT%H:%M:%S.000Z", os.time() - 60) }
  t:eq(code, "EFORBIDDEN")
  t:eq(e.error_code, "E0000006")
  local r = c2:check()
  t:eq(r.users.status, "ok")
  t:eq(r.logs.status, "denied")
  t:eq(r.ok, false)
end)

test("an app without DPoP gets Bearer tokens; dpop=false sends no proof", function(t)
  load{ dpop = false }
  local c <close> = oclient{ dpop = false, key_id = "k1" }
  t:eq(#assert(c:users()), 3)
  t:eq(sim:count{ path = "^/oauth2/v1/token$" }, 1, "no nonce round without DPoP")
  -- an app that requires DPoP refuses a client that sends no proof
  load()
  local c2 <close> = oclient{ dpop = false }
  local v, err, code, e = c2:users()
  t:eq(code, "EAUTH")
  t:eq(e.error_code, "invalid_dpop_proof")
  t:contains(err, "missing")
end)

-- RFC 9449 8.2: a DPoP-Nonce on a successful token response is the nonce of the next request.
test("a new DPoP-Nonce on a 200 token response is used for the next token request", function(t)
  load{ token_lifetime = 8 } -- renewed when half of it is left: 4 s after it came (calls between
  -- two renewals must fit in those 4 s, also under valgrind and on a loaded machine)
  sim:faults{ okta_nonce_rotate = true }
  local c <close> = oclient()
  assert(c:users())
  time.sleep(4.2)
  assert(c:users())
  time.sleep(4.2)
  assert(c:users())
  t:eq(sim:count{ path = "^/oauth2/v1/token$", status = 200 }, 3, "three tokens")
  t:eq(sim:count{ path = "^/oauth2/v1/token$", status = 400 }, 1,
       "only the first handshake: each renewal used the nonce of the previous answer")
end)

-- RFC 9449 9: the API's nonce is its own; the token endpoint's is never sent to it.
test("the API's DPoP nonce is kept apart from the token endpoint's and asked for once", function(t)
  load{ token_lifetime = 8 } -- (renewed 4 s after it came)
  sim:faults{ okta_rs_nonce = true }
  local c <close> = oclient()
  t:eq(#assert(c:users()), 3)
  t:eq(sim:count{ path = "^/api/v1/users$", status = 401 }, 1, "one use_dpop_nonce from the API")
  t:eq(sim:count{ path = "^/api/v1/users$", status = 200 }, 1, "then the call with its nonce")
  assert(c:groups())
  assert(c:users())
  t:eq(sim:count{ path = "^/api/v1/", status = 401 }, 1, "the API's nonce is kept for later calls")
  time.sleep(4.2) -- a renewal: the token endpoint still gets its own nonce
  assert(c:users())
  t:eq(sim:count{ path = "^/oauth2/v1/token$", status = 400 }, 1, "one token-endpoint handshake only")
  -- at least the first token and the renewal; more where the machine is so
  -- slow (valgrind) that the 8 s token also ran out between the calls above
  t:ok(sim:count{ path = "^/oauth2/v1/token$", status = 200 } >= 2, "the token was renewed")
  t:eq(sim:count{ path = "^/api/v1/", status = 401 }, 1)
  local snap = assert(c:scope{})
  t:eq(#snap.users, 3)
end)

-- RFC 6750 3.1: an invalid_token answer is worth one new token, not a failed run.
test("a revoked token: the client drops it, authenticates again once and goes on", function(t)
  load()
  local c <close> = oclient()
  assert(c:users())
  sim:faults{ okta_revoke_tokens = true }
  sim:faults{}
  sim:clear_requests()
  local snap = assert(c:scope{})
  t:eq(#snap.users, 3)
  t:eq(sim:count{ path = "^/api/v1/", status = 401 }, 1, "the first call with the revoked token")
  t:eq(sim:count{ path = "^/oauth2/v1/token$", status = 200 }, 1, "one new token")
  t:eq(sim:count{ path = "^/oauth2/v1/token$", status = 400 }, 0, "the nonce was still good")
  -- a 401 that a new token does not cure: one more try, then EAUTH
  sim:faults{ okta_fail_first = 5, fail_status = 401, fail_path = "^/api/v1/groups$" }
  sim:clear_requests()
  local v, err, code = c:groups()
  t:eq(v, nil)
  t:eq(code, "EAUTH")
  t:contains(err, "GET /api/v1/groups: HTTP 401 E0000011")
  t:eq(sim:count{ path = "^/api/v1/groups$" }, 2, "asked twice: with the old token and a new one")
  t:eq(sim:count{ path = "^/oauth2/v1/token$" }, 1)
end)

test("an RSA client meets a server that accepts only ES256 proofs: a P-256 DPoP key is made", function(t)
  load()
  sim:faults{ okta_dpop_algs = { "ES256" } }
  local c <close> = oclient()
  local snap = assert(c:scope{})
  t:eq(#snap.users, 3)
  t:eq(sim:count{ path = "^/%.well%-known/oauth%-authorization%-server$", status = 200 }, 1, "metadata read once")
  t:eq(sim:count{ path = "^/oauth2/v1/token$", status = 200 }, 1)
  t:eq(sim:count{ path = "^/api/v1/", status = 401 }, 0, "API proofs by the same EC key")
  -- the server lists nothing we can sign
  sim:faults{ okta_dpop_algs = { "RS256" } }
  local c2 <close> = oclient()
  t:eq(#assert(c2:users()), 3, "RS256 listed: the client key signs")
  t:eq(sim:count{ path = "^/%.well%-known/" }, 2)
end)

test("without the metadata list, or when the list is refused, the message says what signs the proofs", function(t)
  load()
  sim:faults{ okta_dpop_algs = { "ES256" }, okta_fail_first = 100, fail_status = 404,
              fail_path = "^/\\.well-known/" }
  local c <close> = oclient()
  local v, err, code, e = c:users()
  t:eq(code, "EAUTH")
  t:eq(e.error_code, "invalid_dpop_proof")
  t:contains(err, "alg is not supported (supported: ES256)")
  t:contains(err, "(DPoP proofs are signed RS256 with the client key)")
end)

return test.done()
