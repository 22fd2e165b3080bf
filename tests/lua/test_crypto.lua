-- Tests of usersync.crypto as scripts and the Okta client use it: the
-- documented example, RS256 verified by the openssl command, errors.
local test = require "tap"
local crypto = require "usersync.crypto"
local proc = require "support.proc"

local function genkey(args)
  local path = os.tmpname()
  local r = proc.run({ "sh", "-c", "openssl genpkey " .. args .. " -out " .. path .. " 2>/dev/null" })
  assert(r.code == 0, "openssl genpkey failed")
  local f = assert(io.open(path, "rb")); local pem = f:read("a"); f:close()
  return pem, path
end

local RSA_PEM, RSA_PATH = genkey("-algorithm RSA -pkeyopt rsa_keygen_bits:2048")
local EC_PEM = genkey("-algorithm EC -pkeyopt ec_paramgen_curve:P-256")

test("the module's documented example", function(t)
  local pem = RSA_PEM
  local key = assert(crypto.load_key(pem))        -- RSA >= 2048 or EC P-256
  local jwt = key:sign('{"alg":"RS256","typ":"JWT"}', '{"iss":"0oa1","sub":"0oa1"}')
  t:eq(key:alg(), "RS256")
  t:match(key:jwk(), '^{"e":"AQAB","kty":"RSA","n":"[%w_-]+"}$')
  t:eq(#key:thumbprint(), 43)
  t:eq(crypto.b64url(crypto.sha256("abc")), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0")
  t:match(crypto.random_hex(16), "^%x+$")
  t:match(jwt, "^eyJ[%w_-]+%.eyJ[%w_-]+%.[%w_-]+$")
  key:close()
end)

test("an RS256 token verifies with the openssl command", function(t)
  local key = assert(crypto.load_key(RSA_PEM))
  local jwt = assert(key:sign('{"alg":"RS256"}', '{"aud":"https://example.okta.com/oauth2/v1/token"}'))
  local input, sig = jwt:match("^(.*)%.([^.]+)$")
  local inpath = proc.tempfile(input)
  local sigpath = proc.tempfile(assert(crypto.b64url_decode(sig)))
  local r = proc.run({ "sh", "-c", ("openssl pkey -in %s -pubout -out %s.pub && openssl dgst -sha256 -verify %s.pub -signature %s %s")
    :format(RSA_PATH, RSA_PATH, RSA_PATH, sigpath, inpath) })
  t:eq(r.code, 0, r.stderr)
  t:contains(r.stdout, "Verified OK")
  t:eq(crypto.b64url_decode(jwt:match("^[^.]+%.([^.]+)")), '{"aud":"https://example.okta.com/oauth2/v1/token"}')
end)

test("EC P-256 keys sign ES256 with a 64-byte raw signature", function(t)
  local key = assert(crypto.load_key(EC_PEM))
  t:eq(key:alg(), "ES256")
  t:match(key:jwk(), '^{"crv":"P%-256","kty":"EC","x":"[%w_-]+","y":"[%w_-]+"}$')
  local jwt = assert(key:sign('{"alg":"ES256"}', '{}'))
  t:eq(#crypto.b64url_decode(jwt:match("([^.]+)$")), 64)
end)

test("bad keys fail with EKEY and no key material in the message", function(t)
  local key, msg, code = crypto.load_key("-----BEGIN PRIVATE KEY-----\nQUJDREVGR0hJSktMTU5PUA==\n-----END PRIVATE KEY-----\n")
  t:eq(key, nil); t:eq(code, "EKEY")
  t:contains(msg, "cannot load private key")
  t:ok(not msg:find("QUJD", 1, true), "message echoes key material")
  t:eq(select(3, crypto.b64url_decode("***")), "EB64")
end)

test("misuse raises: closed key, wrong types", function(t)
  local key = assert(crypto.load_key(RSA_PEM))
  key:close(); key:close() -- idempotent
  t:raises(function() key:sign("{}", "{}") end, "closed key")
  t:raises(function() crypto.load_key(42 == 42 and {} or nil) end, "string expected")
  t:eq(tostring(key), "crypto key (closed)")
  do
    local k <close> = assert(crypto.load_key(EC_PEM))
    t:eq(k:alg(), "ES256")
  end
end)

return test.done()
