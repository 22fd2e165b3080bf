/*
** bind_http.c: `require "usersync.http"`, the Lua face of the HTTP engine
** (include/usersync/http.h). The only file of the HTTP module that calls lua_*.
**
** Lua API (times in seconds, sizes in bytes)
**
**   local http = require "usersync.http"
**
**   http.client{ timeout=30, connect_timeout=10, max_size=32<<20, retries=3,
**                per_host=8, backoff=0.5, backoff_max=30, max_wait=120,
**                jitter="full"|"decorrelated", ca_file=nil, verify=true,
**                user_agent="usersync/<version>", headers={...} }  -> Client
**     Every field is optional; unknown fields raise. `headers` are sent with
**     every request (a request header of the same name wins). Proxies come
**     from the environment (http_proxy, https_proxy, no_proxy).
**
**   client:request(req)          -> response | nil, message, code
**   client:request_many{r1, r2}  -> { result1, result2, ... } in order; all in
**                                   flight at once (per-host limit applies).
**                                   A result is a response or
**                                   { nil, message, code, error=message, code=code }
**   client:start(req)            -> Request handle (runs when the client is driven)
**   client:wait(handle)          -> response | nil, message, code (drives all)
**   client:run([timeout])        -> number of unfinished requests; drives the
**                                   loop once, waiting at most `timeout` s (0)
**   client:stats()               -> { totals = {requests, attempts, retries,
**                                   errors, gave_up, governed, active, queued},
**                                   hosts = { ["https://host:443"] = {...,
**                                   status = { [200]=n, [0]=transport errors }}}}
**   client:close()               idempotent; also __gc and __close. Requests
**                                   still running end with ECANCELED.
**   handle:done() -> boolean;  handle:result() -> like wait (raises if not done)
**   handle:cancel();  handle:close() (also __gc/__close; cancels if running)
**
**   http.request(req) / http.request_many(list)   same, on a default client
**   http.header_values(resp, name) -> { every value of header `name` }
**   http.link(resp, rel)           -> URL of the Link with that rel, or nil
**   http.codes                     -> the list of stable error codes
**
**   req = { url=(required), method="GET", headers={ Name="value" or {"v1","v2"} },
**           body=string, timeout=s, max_size=bytes, retries=n, max_wait=s,
**           follow_redirects=false, retry_unsafe=false, retry_headers="okta" }
**   response = { status=200, headers={ ["content-type"]=last value, ... },
**                header_list={ {"link","<..>; rel=\"self\""}, ... }, body=string,
**                time=seconds (waits included), retries=n, gave_up=boolean, url=final URL }
**
** HTTP statuses are not failures: a 404 is a response. Retries (connection
** errors, 429/500/502/503/504; a POST or PATCH only on 429 and a refused
** connection, see http.h) honour Retry-After
** and Okta's X-Rate-Limit-Reset; when they run out on 429/5xx the last
** response comes back with gave_up=true. `retry_headers="okta"` sends
** X-Okta-Retry-For / X-Okta-Retry-Count on retries. Failures return
** nil, message, code with code one of:
**   ECONNREFUSED ECONNRESET ETIMEDOUT ETLS EDNS EPROXY ETOOBIG EPROTO
**   EREDIRECT EURL ECANCELED ENOMEM EIO
** Misuse (wrong types, unknown fields, a closed client, a header value with
** CR/LF) raises. Messages never contain header values or URL queries.
**
** Example (tests/lua/test_http.lua runs it, with `base` set to a test server):
**   local http = require "usersync.http"
**   local c <close> = http.client{ timeout = 10, per_host = 4,
**                                  headers = { Accept = "application/json" } }
**   local r, err, code = c:request{ url = base .. "/links" }
**   if not r then error(err .. " (" .. code .. ")") end
**   local next_url = http.link(r, "next")          -- or http.header_values(r, "link")
**   local results = c:request_many{ { url = next_url }, { url = base .. "/status/404" },
**                                   { url = "http://127.0.0.1:1/", retries = 0 } }
**   for i, res in ipairs(results) do print(i, res.status or res.code) end
**   --> 1 200   2 404   3 ECONNREFUSED
**   -- coroutine-friendly: start, drive, poll
**   local h = c:start{ method = "POST", url = base .. "/echo", body = "{}",
**                      headers = { ["Content-Type"] = "application/json" } }
**   while not h:done() do c:run(0.1) --[[ or yield to a scheduler ]] end
**   print(h:result().status)                        --> 200
**
** Ownership: a Client userdata owns its engine (us_http); a Request userdata
** owns its us_http_req and keeps its Client alive (user value 1). Scratch C
** arrays built while reading arguments are Lua userdata, so a raised error
** leaks nothing.
*/
#include <string.h>
#include <strings.h>

#include <lauxlib.h>
#include <lua.h>

#include "usersync/http.h"
#include "usersync/modules.h"

#define CLIENT_MT "usersync.http.Client"
#define REQUEST_MT "usersync.http.Request"
#define DEFAULT_CLIENT_KEY "usersync.http.default"

struct lclient {
  us_http *e; /* NULL once closed */
};

struct lrequest {
  us_http_req *h; /* NULL once closed */
};

static const char *const codes[] = {US_HTTP_ECONNREFUSED, US_HTTP_ECONNRESET,
                                    US_HTTP_ETIMEDOUT,    US_HTTP_ETLS,
                                    US_HTTP_EDNS,         US_HTTP_EPROXY,
                                    US_HTTP_ETOOBIG,      US_HTTP_EPROTO,
                                    US_HTTP_EREDIRECT,    US_HTTP_EURL,
                                    US_HTTP_ECANCELED,    US_HTTP_ENOMEM,
                                    US_HTTP_EIO,          NULL};

/* ---------- argument helpers ---------- */

/* Raises unless every key of the table at idx is in `allowed`. */
static void check_fields(lua_State *L, int idx, const char *what, const char *const *allowed) {
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    int ok = 0;
    if (lua_type(L, -1) == LUA_TSTRING)
      for (const char *const *a = allowed; *a && !ok; a++)
        ok = strcmp(*a, lua_tostring(L, -1)) == 0;
    if (!ok) {
      if (lua_type(L, -1) == LUA_TSTRING)
        luaL_error(L, "%s: unknown field '%s'", what, lua_tostring(L, -1));
      luaL_error(L, "%s: unexpected %s key", what, luaL_typename(L, -1));
    }
  }
}

/* Field `k` of table t as seconds -> ms; `def` when absent. Raises on a bad value. */
static long field_ms(lua_State *L, int t, const char *k, long def) {
  long v = def;
  if (lua_getfield(L, t, k) != LUA_TNIL) {
    int isnum;
    lua_Number n = lua_tonumberx(L, -1, &isnum);
    if (!isnum || !(n > 0) || n > 86400.0 * 7)
      luaL_error(L, "field '%s': expected a positive number of seconds", k);
    v = (long)(n * 1000.0 + 0.5);
    if (v < 1)
      v = 1;
  }
  lua_pop(L, 1);
  return v;
}

static lua_Integer field_int(lua_State *L, int t, const char *k, lua_Integer def, lua_Integer min) {
  lua_Integer v = def;
  if (lua_getfield(L, t, k) != LUA_TNIL) {
    int isnum;
    v = lua_tointegerx(L, -1, &isnum);
    if (!isnum || v < min)
      luaL_error(L, "field '%s': expected an integer >= %d", k, (int)min);
  }
  lua_pop(L, 1);
  return v;
}

static int field_bool(lua_State *L, int t, const char *k, int def) {
  int v = def, ty = lua_getfield(L, t, k);
  if (ty == LUA_TBOOLEAN)
    v = lua_toboolean(L, -1);
  else if (ty != LUA_TNIL)
    luaL_error(L, "field '%s': expected a boolean", k);
  lua_pop(L, 1);
  return v;
}

/* String field or NULL; the string stays referenced by table t. */
static const char *field_str(lua_State *L, int t, const char *k) {
  const char *s = NULL;
  int ty = lua_getfield(L, t, k);
  if (ty == LUA_TSTRING)
    s = lua_tostring(L, -1);
  else if (ty != LUA_TNIL)
    luaL_error(L, "field '%s': expected a string", k);
  lua_pop(L, 1);
  return s;
}

/* ---------- headers ---------- */

struct hbuf {
  struct us_http_header *v; /* points into a scratch userdata */
  size_t n, cap;
};

/* Appends (name, value); both must stay referenced by Lua values on the
** stack or by the anchor table. Grows into a new scratch userdata left at
** the stack slot `slot` (replaced). */
static void hbuf_add(lua_State *L, struct hbuf *b, int slot, const char *n, const char *v) {
  if (b->n == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 16;
    struct us_http_header *nv = lua_newuserdatauv(L, cap * sizeof *nv, 0);
    if (b->n)
      memcpy(nv, b->v, b->n * sizeof *nv);
    lua_replace(L, slot);
    b->v = nv;
    b->cap = cap;
  }
  b->v[b->n].name = n;
  b->v[b->n].value = v;
  b->n++;
}

static int hbuf_has(const struct hbuf *b, const char *name) {
  for (size_t i = 0; i < b->n; i++)
    if (strcasecmp(b->v[i].name, name) == 0)
      return 1;
  return 0;
}

/* A header value at the stack top as a string anchored in table `anchor`
** (numbers are converted). Pops it. Raises naming the header, never its value. */
static const char *header_value(lua_State *L, int anchor, const char *name) {
  if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
    luaL_error(L, "header '%s': expected a string value, got %s", name, luaL_typename(L, -1));
  const char *s = lua_tostring(L, -1); /* converts the stack copy only */
  if (strchr(s, '\r') || strchr(s, '\n'))
    luaL_error(L, "header '%s': value contains CR or LF", name);
  lua_rawseti(L, anchor, (lua_Integer)lua_rawlen(L, anchor) + 1);
  return s;
}

/* Adds the headers of table t (name -> string | {strings}) to b, skipping
** names already present when `skip_present`. */
static void add_headers(lua_State *L, int t, struct hbuf *b, int slot, int anchor,
                        int skip_present) {
  lua_pushnil(L);
  while (lua_next(L, t)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_error(L, "headers: names must be strings");
    const char *name = lua_tostring(L, -2);
    if (skip_present && hbuf_has(b, name)) {
      lua_pop(L, 1);
      continue;
    }
    if (lua_type(L, -1) == LUA_TTABLE) {
      lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
      for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        hbuf_add(L, b, slot, name, header_value(L, anchor, name));
      }
      lua_pop(L, 1);
    } else {
      hbuf_add(L, b, slot, name, header_value(L, anchor, name));
    }
  }
}

/* ---------- userdata ---------- */

static struct lclient *check_client(lua_State *L, int idx) {
  struct lclient *c = luaL_checkudata(L, idx, CLIENT_MT);
  if (!c->e)
    luaL_error(L, "attempt to use a closed HTTP client");
  return c;
}

static struct lrequest *check_request(lua_State *L, int idx) {
  struct lrequest *r = luaL_checkudata(L, idx, REQUEST_MT);
  if (!r->h)
    luaL_error(L, "attempt to use a closed HTTP request");
  return r;
}

/* Cross-binding accessor (modules.h): the engine of the open
** usersync.http.Client at idx; raises if it is not one or is closed. The
** engine stays owned by the Client: keep the Client alive while using it. */
us_http *us_http_checkengine(lua_State *L, int idx) { return check_client(L, idx)->e; }

static const char *const client_fields[] = {
    "timeout",  "connect_timeout", "max_size", "retries", "per_host",   "backoff", "backoff_max",
    "max_wait", "jitter",          "ca_file",  "verify",  "user_agent", "headers", NULL};

/* http.client([opts]) -> Client. [-0, +1] */
static int http_client(lua_State *L) {
  struct us_http_options o;
  us_http_options_init(&o);
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    check_fields(L, 1, "http.client", client_fields);
    o.timeout_ms = field_ms(L, 1, "timeout", o.timeout_ms);
    o.connect_timeout_ms = field_ms(L, 1, "connect_timeout", o.connect_timeout_ms);
    o.max_size = (size_t)field_int(L, 1, "max_size", (lua_Integer)o.max_size, 1);
    o.max_retries = (int)field_int(L, 1, "retries", o.max_retries, 0);
    o.per_host = (int)field_int(L, 1, "per_host", o.per_host, 1);
    o.backoff_base_ms = field_ms(L, 1, "backoff", o.backoff_base_ms);
    o.backoff_max_ms = field_ms(L, 1, "backoff_max", o.backoff_max_ms);
    o.max_wait_ms = field_ms(L, 1, "max_wait", o.max_wait_ms);
    o.verify = field_bool(L, 1, "verify", 1);
    o.ca_file = field_str(L, 1, "ca_file");
    o.user_agent = field_str(L, 1, "user_agent");
    const char *j = field_str(L, 1, "jitter");
    if (j && strcmp(j, "full") != 0 && strcmp(j, "decorrelated") != 0)
      luaL_error(L, "field 'jitter': expected \"full\" or \"decorrelated\"");
    o.jitter = j && !strcmp(j, "decorrelated") ? US_HTTP_JITTER_DECORRELATED : US_HTTP_JITTER_FULL;
    if (lua_getfield(L, 1, "headers") != LUA_TNIL && !lua_istable(L, -1))
      luaL_error(L, "field 'headers': expected a table");
    lua_pop(L, 1);
  }
  struct lclient *c = lua_newuserdatauv(L, sizeof *c, 1);
  c->e = NULL; /* closed until the engine exists */
  luaL_setmetatable(L, CLIENT_MT);
  /* user value: a copy of the default headers, read at each request */
  lua_newtable(L);
  if (!lua_isnoneornil(L, 1)) {
    if (lua_getfield(L, 1, "headers") == LUA_TTABLE) {
      int src = lua_gettop(L), dst = src - 1;
      lua_pushnil(L);
      while (lua_next(L, src)) { /* [key, value] */
        int vt = lua_type(L, -1);
        if (lua_type(L, -2) != LUA_TSTRING ||
            (vt != LUA_TSTRING && vt != LUA_TNUMBER && vt != LUA_TTABLE))
          luaL_error(L, "field 'headers': expected name = string pairs");
        lua_pushvalue(L, -2);
        lua_insert(L, -2);    /* [key, key, value] */
        lua_settable(L, dst); /* [key] */
      }
    }
    lua_pop(L, 1);
  }
  lua_setiuservalue(L, -2, 1);
  const char *err = NULL;
  c->e = us_http_new(&o, &err);
  if (!c->e)
    return luaL_error(L, "http.client: %s", err ? err : "cannot create the engine");
  return 1;
}

static int client_close(lua_State *L) {
  struct lclient *c = luaL_checkudata(L, 1, CLIENT_MT);
  us_http_free(c->e);
  c->e = NULL;
  return 0;
}

static int client_tostring(lua_State *L) {
  struct lclient *c = luaL_checkudata(L, 1, CLIENT_MT);
  if (c->e)
    lua_pushfstring(L, "usersync.http.Client (%p)", (void *)c);
  else
    lua_pushliteral(L, "usersync.http.Client (closed)");
  return 1;
}

static const char *const request_fields[] = {
    "url",     "method",           "headers",      "body",          "timeout",  "max_size",
    "retries", "follow_redirects", "retry_unsafe", "retry_headers", "max_wait", NULL};

/* Reads request table `t` and submits it on client c (at index ci). Pushes
** the Request userdata. Raises on misuse. [-0, +1] */
static void push_started(lua_State *L, int ci, int t) {
  struct lclient *c = check_client(L, ci);
  luaL_checktype(L, t, LUA_TTABLE);
  check_fields(L, t, "http request", request_fields);
  struct us_http_request r;
  memset(&r, 0, sizeof r);
  r.url = field_str(L, t, "url");
  if (!r.url)
    luaL_error(L, "http request: field 'url' is required");
  r.method = field_str(L, t, "method");
  size_t blen = 0;
  int bt = lua_getfield(L, t, "body");
  if (bt == LUA_TSTRING)
    r.body = lua_tolstring(L, -1, &blen); /* still referenced by t */
  else if (bt != LUA_TNIL)
    luaL_error(L, "field 'body': expected a string");
  lua_pop(L, 1);
  r.body_len = blen;
  r.timeout_ms = field_ms(L, t, "timeout", 0);
  r.max_size = (size_t)field_int(L, t, "max_size", 0, 1);
  r.max_retries = (int)field_int(L, t, "retries", -1, 0);
  r.max_wait_ms = field_ms(L, t, "max_wait", 0);
  r.follow_redirects = field_bool(L, t, "follow_redirects", 0);
  r.retry_unsafe = field_bool(L, t, "retry_unsafe", 0);
  const char *rh = field_str(L, t, "retry_headers");
  if (rh && strcmp(rh, "okta") != 0)
    luaL_error(L, "field 'retry_headers': expected \"okta\"");
  r.retry_headers = rh ? US_HTTP_RETRY_HEADERS_OKTA : US_HTTP_RETRY_HEADERS_NONE;

  /* headers: the request's, then the client's defaults not overridden */
  struct hbuf b = {NULL, 0, 0};
  lua_pushnil(L); /* slot for the scratch array */
  int slot = lua_gettop(L);
  lua_newtable(L); /* anchor for converted values */
  int anchor = lua_gettop(L);
  int ht = lua_getfield(L, t, "headers");
  if (ht == LUA_TTABLE)
    add_headers(L, lua_gettop(L), &b, slot, anchor, 0);
  else if (ht != LUA_TNIL)
    luaL_error(L, "field 'headers': expected a table");
  lua_getiuservalue(L, ci, 1);
  add_headers(L, lua_gettop(L), &b, slot, anchor, 1);
  r.headers = b.v;
  r.nheaders = b.n;

  struct lrequest *lr = lua_newuserdatauv(L, sizeof *lr, 1);
  lr->h = NULL;
  luaL_setmetatable(L, REQUEST_MT);
  lua_pushvalue(L, ci);
  lua_setiuservalue(L, -2, 1); /* keeps the client alive */
  const char *err = NULL;
  lr->h = us_http_submit(c->e, &r, &err);
  if (!lr->h)
    luaL_error(L, "http request: %s", err ? err : "cannot submit");
  lua_replace(L, slot); /* the Request replaces the scratch slot */
  lua_settop(L, slot);
}

/* Pushes a response table, or nil, message, code. Returns the count. */
static int push_result(lua_State *L, const struct us_http_response *r) {
  if (r->code) {
    lua_pushnil(L);
    lua_pushstring(L, r->message);
    lua_pushstring(L, r->code);
    return 3;
  }
  lua_createtable(L, 0, 9);
  lua_pushinteger(L, r->status);
  lua_setfield(L, -2, "status");
  lua_createtable(L, 0, (int)r->nheaders);
  lua_createtable(L, (int)r->nheaders, 0);
  for (size_t i = 0; i < r->nheaders; i++) {
    lua_pushstring(L, r->headers[i].value);
    lua_setfield(L, -3, r->headers[i].name); /* later ones win */
    lua_createtable(L, 2, 0);
    lua_pushstring(L, r->headers[i].name);
    lua_rawseti(L, -2, 1);
    lua_pushstring(L, r->headers[i].value);
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -3, "header_list");
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, r->body, r->body_len);
  lua_setfield(L, -2, "body");
  lua_pushnumber(L, r->time);
  lua_setfield(L, -2, "time");
  lua_pushinteger(L, r->retries);
  lua_setfield(L, -2, "retries");
  lua_pushboolean(L, r->gave_up);
  lua_setfield(L, -2, "gave_up");
  lua_pushstring(L, r->url ? r->url : "");
  lua_setfield(L, -2, "url");
  return 1;
}

/* client:start(req) -> Request */
static int client_start(lua_State *L) {
  push_started(L, 1, 2);
  return 1;
}

/* Drives c until lr is done, then pushes its result. */
static int wait_push(lua_State *L, struct lclient *c, struct lrequest *lr) {
  us_http_req *h = lr->h;
  us_http_wait(c->e, &h, 1, -1);
  const struct us_http_response *r = us_http_result(h);
  if (!r)
    return luaL_error(L, "HTTP request belongs to another client");
  return push_result(L, r);
}

/* client:wait(request) -> response | nil, message, code */
static int client_wait(lua_State *L) {
  struct lclient *c = check_client(L, 1);
  struct lrequest *lr = check_request(L, 2);
  lua_getiuservalue(L, 2, 1);
  luaL_argcheck(L, lua_rawequal(L, 1, -1), 2, "request of another client");
  lua_pop(L, 1);
  return wait_push(L, c, lr);
}

/* client:request(req) -> response | nil, message, code */
static int client_request(lua_State *L) {
  struct lclient *c = check_client(L, 1);
  push_started(L, 1, 2);
  struct lrequest *lr = lua_touserdata(L, -1);
  int n = wait_push(L, c, lr);
  /* release now rather than at the next GC cycle */
  us_http_release(lr->h);
  lr->h = NULL;
  return n;
}

/* client:request_many{ req, ... } -> { result, ... } */
static int client_request_many(lua_State *L) {
  struct lclient *c = check_client(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
  lua_settop(L, 2);
  lua_createtable(L, (int)n, 0); /* 3: the Request userdata, in order */
  us_http_req **hs = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *hs, 0); /* 4 */
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_rawgeti(L, 2, i) != LUA_TTABLE)
      luaL_error(L, "http.request_many: item %d is not a request table", (int)i);
    push_started(L, 1, 5);
    hs[i - 1] = ((struct lrequest *)lua_touserdata(L, -1))->h;
    lua_rawseti(L, 3, i);
    lua_pop(L, 1);
  }
  us_http_wait(c->e, hs, (size_t)n, -1);
  lua_createtable(L, (int)n, 0); /* 5: results */
  for (lua_Integer i = 1; i <= n; i++) {
    const struct us_http_response *r = us_http_result(hs[i - 1]);
    if (r && !r->code) {
      push_result(L, r);
    } else {
      lua_createtable(L, 3, 2);
      lua_pushstring(L, r ? r->message : "not finished");
      lua_pushvalue(L, -1);
      lua_rawseti(L, -3, 2);
      lua_setfield(L, -2, "error");
      lua_pushstring(L, r ? r->code : US_HTTP_ECANCELED);
      lua_pushvalue(L, -1);
      lua_rawseti(L, -3, 3);
      lua_setfield(L, -2, "code");
    }
    lua_rawseti(L, 5, i);
  }
  for (lua_Integer i = 1; i <= n; i++) { /* free now; the userdata become closed */
    lua_rawgeti(L, 3, i);
    struct lrequest *lr = lua_touserdata(L, -1);
    us_http_release(lr->h);
    lr->h = NULL;
    lua_pop(L, 1);
  }
  return 1;
}

/* client:run([timeout_s]) -> unfinished count */
static int client_run(lua_State *L) {
  struct lclient *c = check_client(L, 1);
  lua_Number t = luaL_optnumber(L, 2, 0);
  luaL_argcheck(L, t >= 0 && t <= 86400, 2, "expected seconds >= 0");
  lua_pushinteger(L, us_http_run_once(c->e, (long)(t * 1000.0)));
  return 1;
}

static void push_stats(lua_State *L, const struct us_http_host_stats *s) {
  lua_createtable(L, 0, 9);
#define F(name)                                                                                    \
  lua_pushinteger(L, (lua_Integer)s->name);                                                        \
  lua_setfield(L, -2, #name)
  F(requests);
  F(attempts);
  F(retries);
  F(errors);
  F(gave_up);
  F(governed);
  F(active);
  F(queued);
#undef F
  if (s->by_status) {
    lua_createtable(L, 0, (int)s->nstatus);
    for (size_t i = 0; i < s->nstatus; i++) {
      lua_pushinteger(L, (lua_Integer)s->by_status[i].count);
      lua_rawseti(L, -2, s->by_status[i].status);
    }
    lua_setfield(L, -2, "status");
  }
}

/* client:stats() -> { totals=, hosts= } */
static int client_stats(lua_State *L) {
  struct lclient *c = check_client(L, 1);
  lua_createtable(L, 0, 2);
  struct us_http_host_stats t = us_http_totals(c->e);
  push_stats(L, &t);
  lua_setfield(L, -2, "totals");
  lua_newtable(L);
  for (size_t i = 0; i < us_http_host_count(c->e); i++) {
    const struct us_http_host_stats *s = us_http_host_stats(c->e, i);
    push_stats(L, s);
    lua_setfield(L, -2, s->host);
  }
  lua_setfield(L, -2, "hosts");
  return 1;
}

/* ---------- Request handles ---------- */

static int request_close(lua_State *L) {
  struct lrequest *r = luaL_checkudata(L, 1, REQUEST_MT);
  us_http_release(r->h);
  r->h = NULL;
  return 0;
}

static int request_done(lua_State *L) {
  struct lrequest *r = check_request(L, 1);
  lua_pushboolean(L, us_http_result(r->h) != NULL);
  return 1;
}

static int request_result(lua_State *L) {
  struct lrequest *r = check_request(L, 1);
  const struct us_http_response *res = us_http_result(r->h);
  if (!res)
    return luaL_error(L, "HTTP request still running (drive the client with :run or :wait)");
  return push_result(L, res);
}

static int request_cancel(lua_State *L) {
  us_http_cancel(check_request(L, 1)->h);
  return 0;
}

static int request_tostring(lua_State *L) {
  struct lrequest *r = luaL_checkudata(L, 1, REQUEST_MT);
  lua_pushfstring(L, "usersync.http.Request (%s)",
                  !r->h                  ? "closed"
                  : us_http_result(r->h) ? "done"
                                         : "running");
  return 1;
}

/* ---------- module functions ---------- */

/* Pushes the default client, creating it on first use (kept in the registry). */
static void push_default_client(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, DEFAULT_CLIENT_KEY) == LUA_TUSERDATA)
    return;
  lua_pop(L, 1);
  lua_pushcfunction(L, http_client);
  lua_call(L, 0, 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, DEFAULT_CLIENT_KEY);
}

static int with_default(lua_State *L, lua_CFunction f) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  push_default_client(L);
  lua_insert(L, 1);
  return f(L);
}

static int http_request(lua_State *L) { return with_default(L, client_request); }
static int http_request_many(lua_State *L) { return with_default(L, client_request_many); }

/* Reads resp.header_list into a C view; the strings stay referenced by it. */
static struct us_http_response *view_response(lua_State *L, int idx) {
  luaL_checktype(L, idx, LUA_TTABLE);
  if (lua_getfield(L, idx, "header_list") != LUA_TTABLE)
    luaL_argerror(L, idx, "expected a response (with header_list)");
  int list = lua_gettop(L);
  size_t n = lua_rawlen(L, list);
  struct us_http_response *r =
      lua_newuserdatauv(L, sizeof *r + n * sizeof(struct us_http_header), 0);
  memset(r, 0, sizeof *r);
  struct us_http_header *hs = (struct us_http_header *)(r + 1);
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, list, (lua_Integer)i + 1);
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    if (!lua_isstring(L, -1) || !lua_isstring(L, -2))
      luaL_argerror(L, idx, "header_list entries must be {name, value}");
    hs[i].name = lua_tostring(L, -2);
    hs[i].value = lua_tostring(L, -1);
    lua_pop(L, 3); /* strings stay referenced by the list */
  }
  r->headers = hs;
  r->nheaders = n;
  lua_getfield(L, idx, "status");
  r->status = (long)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return r;
}

/* http.header_values(resp, name) -> { values in order } */
static int http_header_values(lua_State *L) {
  const char *name = luaL_checkstring(L, 2);
  struct us_http_response *r = view_response(L, 1);
  lua_newtable(L);
  lua_Integer k = 0;
  for (size_t i = us_http_header_next(r, name, 0); i < r->nheaders;
       i = us_http_header_next(r, name, i + 1)) {
    lua_pushstring(L, r->headers[i].value);
    lua_rawseti(L, -2, ++k);
  }
  return 1;
}

/* http.link(resp, rel) -> url | nil */
static int http_link(lua_State *L) {
  const char *rel = luaL_checkstring(L, 2);
  struct us_http_response *r = view_response(L, 1);
  size_t n = 0;
  const char *u = us_http_link_find(r, rel, &n); /* points into a Lua string */
  if (u)
    lua_pushlstring(L, u, n);
  else
    lua_pushnil(L);
  return 1;
}

static const luaL_Reg client_methods[] = {
    {"request", client_request}, {"request_many", client_request_many},
    {"start", client_start},     {"wait", client_wait},
    {"run", client_run},         {"stats", client_stats},
    {"close", client_close},     {NULL, NULL}};

static const luaL_Reg client_meta[] = {{"__gc", client_close},
                                       {"__close", client_close},
                                       {"__tostring", client_tostring},
                                       {"__index", NULL},
                                       {NULL, NULL}};

static const luaL_Reg request_methods[] = {{"done", request_done},
                                           {"result", request_result},
                                           {"cancel", request_cancel},
                                           {"close", request_close},
                                           {NULL, NULL}};

static const luaL_Reg request_meta[] = {{"__gc", request_close},
                                        {"__close", request_close},
                                        {"__tostring", request_tostring},
                                        {"__index", NULL},
                                        {NULL, NULL}};

static const luaL_Reg http_funcs[] = {{"client", http_client},
                                      {"request", http_request},
                                      {"request_many", http_request_many},
                                      {"header_values", http_header_values},
                                      {"link", http_link},
                                      {NULL, NULL}};

int luaopen_usersync_http(lua_State *L) {
  us_lua_class(L, CLIENT_MT, client_meta, client_methods);
  us_lua_class(L, REQUEST_MT, request_meta, request_methods);
  luaL_newlib(L, http_funcs);
  lua_newtable(L);
  for (int i = 0; codes[i]; i++) {
    lua_pushstring(L, codes[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "codes");
  return 1;
}
