/*
** bind_crypto.c: `usersync.crypto`, JWS signing for OAuth private_key_jwt
** and DPoP (RFC 9449) on top of runtime/crypto.c.
**
**   local crypto = require "usersync.crypto"
**   local key = assert(crypto.load_key(pem))        -- RSA >= 2048 or EC P-256
**   local jwt = key:sign('{"alg":"RS256","typ":"JWT"}', '{"iss":"0oa1","sub":"0oa1"}')
**   print(key:alg(), key:jwk(), key:thumbprint())
**   print(crypto.b64url(crypto.sha256("abc")), crypto.random_hex(16))
**   key:close()
**
** load_key returns nil, message, "EKEY" for a bad key (the message never
** contains key material); sign returns nil, message, "ESIGN". Misuse (a
** closed key, wrong argument types) raises.
*/
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "usersync/crypto.h"
#include "usersync/modules.h"

#define KEY_MT "usersync.crypto.Key"

struct key_ud {
  struct us_key *key; /* NULL once closed */
};

static struct us_key *check_key(lua_State *L) {
  struct key_ud *k = luaL_checkudata(L, 1, KEY_MT);
  if (!k->key)
    luaL_error(L, "attempt to use a closed key");
  return k->key;
}

/* Pushes a malloc'd string and frees it; raises on NULL (allocation failure). */
static int push_owned(lua_State *L, char *s) {
  if (!s)
    return luaL_error(L, "out of memory");
  lua_pushstring(L, s);
  free(s);
  return 1;
}

static int crypto_load_key(lua_State *L) {
  size_t len;
  const char *pem = luaL_checklstring(L, 1, &len);
  struct key_ud *k = lua_newuserdatauv(L, sizeof *k, 0); /* closed state first */
  k->key = NULL;
  luaL_setmetatable(L, KEY_MT);
  char err[160];
  k->key = us_key_load_pem(pem, len, err, sizeof err);
  if (!k->key) {
    luaL_pushfail(L);
    lua_pushfstring(L, "cannot load private key: %s", err);
    lua_pushliteral(L, "EKEY");
    return 3;
  }
  return 1;
}

static int key_close(lua_State *L) {
  struct key_ud *k = luaL_checkudata(L, 1, KEY_MT);
  us_key_free(k->key);
  k->key = NULL;
  return 0;
}

static int key_alg(lua_State *L) {
  lua_pushstring(L, us_key_alg(check_key(L)));
  return 1;
}

static int key_jwk(lua_State *L) { return push_owned(L, us_key_public_jwk(check_key(L))); }

static int key_thumbprint(lua_State *L) { return push_owned(L, us_key_thumbprint(check_key(L))); }

static int key_sign(lua_State *L) {
  struct us_key *key = check_key(L);
  const char *header = luaL_checkstring(L, 2);
  const char *claims = luaL_checkstring(L, 3);
  char err[160];
  char *jwt = us_jwt_sign(key, header, claims, err, sizeof err);
  if (!jwt) {
    luaL_pushfail(L);
    lua_pushstring(L, err);
    lua_pushliteral(L, "ESIGN");
    return 3;
  }
  return push_owned(L, jwt);
}

static int key_tostring(lua_State *L) {
  struct key_ud *k = luaL_checkudata(L, 1, KEY_MT);
  if (k->key)
    lua_pushfstring(L, "crypto key (%s)", us_key_alg(k->key));
  else
    lua_pushliteral(L, "crypto key (closed)");
  return 1;
}

static int crypto_sha256(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  unsigned char out[32];
  us_sha256(s, len, out);
  lua_pushlstring(L, (const char *)out, sizeof out);
  return 1;
}

static int crypto_b64url(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  return push_owned(L, us_b64url_encode(s, len));
}

static int crypto_b64url_decode(lua_State *L) {
  size_t len, outlen = 0;
  const char *s = luaL_checklstring(L, 1, &len);
  unsigned char *out = us_b64url_decode(s, len, &outlen);
  if (!out) {
    luaL_pushfail(L);
    lua_pushliteral(L, "invalid base64url");
    lua_pushliteral(L, "EB64");
    return 3;
  }
  lua_pushlstring(L, (const char *)out, outlen);
  free(out);
  return 1;
}

static int crypto_random_hex(lua_State *L) {
  lua_Integer n = luaL_optinteger(L, 1, 16);
  luaL_argcheck(L, n > 0 && n <= 1024, 1, "expected 1 to 1024 bytes");
  return push_owned(L, us_random_hex((size_t)n));
}

static const luaL_Reg key_methods[] = {
    {"alg", key_alg},   {"jwk", key_jwk},     {"thumbprint", key_thumbprint},
    {"sign", key_sign}, {"close", key_close}, {NULL, NULL},
};

static const luaL_Reg key_meta[] = {
    {"__gc", key_close}, {"__close", key_close}, {"__tostring", key_tostring}, {"__index", NULL},
    {NULL, NULL},
};

static const luaL_Reg crypto_funcs[] = {
    {"load_key", crypto_load_key},     {"sha256", crypto_sha256},
    {"b64url", crypto_b64url},         {"b64url_decode", crypto_b64url_decode},
    {"random_hex", crypto_random_hex}, {NULL, NULL},
};

int luaopen_usersync_crypto(lua_State *L) {
  luaL_newmetatable(L, KEY_MT);
  luaL_setfuncs(L, key_meta, 0);
  luaL_newlibtable(L, key_methods);
  luaL_setfuncs(L, key_methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, crypto_funcs);
  return 1;
}
