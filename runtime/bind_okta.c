/*
** bind_okta.c: `require "usersync.okta_raw"`, the raw primitives of the
** Okta client (include/usersync/okta.h) for the built-in Lua module
** usersync.okta (runtime/lua/usersync/okta.lua), which builds the listings,
** the scope snapshot, changes and check on them. Argument checks, and
** pushing and pulling values; no URLs, no snapshots. The only file of the
** Okta client that calls lua_*.
**
** Lua API
**
**   local raw = require "usersync.okta_raw"
**   raw.client(http_client, source) -> RawClient
**     http_client: a usersync.http.Client, kept alive by the client (closing
**     it first makes calls fail with ECANCELED). source: the config's
**     source table (usersync.okta documents its keys); unknown keys, wrong
**     types, a bad key or URL raise.
**   rc:batch() -> Batch: jobs that run concurrently; the client cannot be
**     closed while a batch is open (close it, or use `<close>`).
**   b:submit{ ep = "users" | "user" | "user_groups" | "groups" | "group" |
**             "group_members" | "app" | "app_user" | "app_users" |
**             "app_groups" | "logs",
**             id =, user =, filter =, search =, since =, cursor =, limit =,
**             expand_user = bool, max_pages =, shape = "records" | "slim" | "ids" }
**     -> job number (1, 2, ... in submit order). The fields mean what struct
**     us_okta_op says; misuse raises.
**   b:next() -> the next event, driving the requests until one is ready:
**     "page", job, records, count, page, last   records: the page decoded
**         (usersync.json rules; a get's object), or with shape "ids" an
**         array of the records' ids; last: the job asks for no more pages
**     "done", job, { pages =, items =, cursor = }      the job completed
**     "done", job, nil, message, code, err            the job failed
**         err = { code, status, error_code (Okta errorCode), summary,
**         request_id, message, source = "okta", transport (true: no
**         answer from Okta; code is one of usersync.http's) }
**     nil when every job has ended. A closed http client ends the jobs
**     with ECANCELED.
**   b:close()  cancels what is left; idempotent; also __gc and __close
**   rc:authenticate() -> true | nil, message, code, err   (obtains or renews
**       the OAuth access token; SSWS: nothing to do)
**   rc:auth() -> "ssws" | "oauth", granted scope ("" before a token)
**   rc:budget() -> { ["/api/v1/users"] = { limit, remaining, reset (epoch),
**       reset_in (s), inflight, requests, waits, rate_limited }, ... } for the
**       buckets seen so far (for metrics)
**   rc:requests() -> requests made (attempts with a response or a transport
**       failure, token requests included)
**   rc:close()  idempotent; also __gc and __close
**
** Error codes: the target clients' (usersync.target), see
** include/usersync/okta.h: EAUTH, EFORBIDDEN, ENOTFOUND, EINVALID,
** ERATELIMIT, EHTTP, ERESPONSE, EBADLINK and the transport codes of
** usersync.http.
**
** Ownership: a RawClient userdata owns its us_okta; user value 1 is the
** http Client (kept alive). A Batch owns its us_okta_batch and the event
** being pushed; user value 1 is its RawClient. Nothing here calls back into
** Lua, so no C allocation is lost to a longjmp: every malloc'd value is
** owned by a userdata or freed before the next call that can raise.
*/
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "usersync/modules.h"
#include "usersync/okta.h"

#define CLIENT_MT "usersync.okta.RawClient"
#define BATCH_MT "usersync.okta.Batch"

struct lokta {
  us_okta *c; /* NULL once closed */
  int busy;   /* open batches: close is refused */
};

struct lbatch {
  struct lokta *lo;          /* kept alive by the batch's user value */
  us_okta_batch *b;          /* NULL once closed */
  struct us_okta_event *cur; /* the event being pushed */
  lua_Integer jobs;          /* submitted so far */
};

/* ---------------------------------------------------------------- helpers */

/* Protected: raises if the http client (arg 1) was closed. */
static int engine_check(lua_State *L) {
  us_http_checkengine(L, 1);
  return 0;
}

/* The open RawClient at idx with its engine re-read from the http client
** (raises if either is closed). */
static struct lokta *check_client(lua_State *L, int idx) {
  struct lokta *o = luaL_checkudata(L, idx, CLIENT_MT);
  if (!o->c)
    luaL_error(L, "attempt to use a closed Okta client");
  lua_getiuservalue(L, idx, 1);
  us_okta_set_engine(o->c, us_http_checkengine(L, -1));
  lua_pop(L, 1);
  return o;
}

/* Pushes nil, message, code, err-table; returns 4. */
static int push_error(lua_State *L, const struct us_okta_error *e) {
  lua_pushnil(L);
  lua_pushstring(L, e->message[0] ? e->message : "okta: failed");
  lua_pushstring(L, e->code[0] ? e->code : "EHTTP");
  lua_createtable(L, 0, 8);
  lua_pushstring(L, e->code);
  lua_setfield(L, -2, "code");
  lua_pushinteger(L, e->status);
  lua_setfield(L, -2, "status");
  lua_pushstring(L, e->error_code);
  lua_setfield(L, -2, "error_code");
  lua_pushstring(L, e->summary);
  lua_setfield(L, -2, "summary");
  lua_pushstring(L, e->request_id);
  lua_setfield(L, -2, "request_id");
  lua_pushstring(L, e->message);
  lua_setfield(L, -2, "message");
  lua_pushliteral(L, "okta");
  lua_setfield(L, -2, "source");
  lua_pushboolean(L, e->transport);
  lua_setfield(L, -2, "transport");
  return 4;
}

/* Optional string field k of table t. */
static const char *opt_field(lua_State *L, int t, const char *k) {
  const char *s = NULL;
  int ty = lua_getfield(L, t, k);
  if (ty == LUA_TSTRING)
    s = lua_tostring(L, -1); /* anchored by t */
  else if (ty != LUA_TNIL)
    luaL_error(L, "field '%s': expected a string", k);
  lua_pop(L, 1);
  return s;
}

/* ---------------------------------------------------------------- client */

/* budget_share: a fraction in (0,1] ("N%" is turned into one by okta.lua,
** with the config's share parser). */
static void parse_share(lua_State *L, int t, double *out) {
  int ty = lua_getfield(L, t, "budget_share");
  if (ty == LUA_TNUMBER)
    *out = lua_tonumber(L, -1);
  else if (ty != LUA_TNIL)
    *out = -1;
  lua_pop(L, 1);
  if (!(*out > 0 && *out <= 1))
    luaL_error(L, "field 'budget_share': expected a number in (0,1]");
}

static const char *const source_fields[] = {"type",        "url",        "token",   "oauth",
                                            "app_id",      "filter",     "search",  "budget_share",
                                            "concurrency", "status_map", "ca_file", "timeout",
                                            "retries",     "max_wait",   NULL};
static const char *const oauth_fields[] = {"client_id", "private_key", "key_id",
                                           "scopes",    "dpop",        NULL};

static void check_keys(lua_State *L, int t, const char *what, const char *const *allowed) {
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    int ok = 0;
    if (lua_type(L, -1) == LUA_TSTRING)
      for (const char *const *a = allowed; *a && !ok; a++)
        ok = !strcmp(*a, lua_tostring(L, -1));
    if (!ok)
      luaL_error(L, "%s: unknown field '%s'", what,
                 lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?");
  }
}

static double num_field(lua_State *L, int t, const char *k, double def) {
  double v = def;
  if (lua_getfield(L, t, k) != LUA_TNIL) {
    int isnum;
    v = lua_tonumberx(L, -1, &isnum);
    if (!isnum || v < 0)
      luaL_error(L, "field '%s': expected a number >= 0", k);
  }
  lua_pop(L, 1);
  return v;
}

/* Field k of t as seconds (a number >= 0: usersync.okta turns a duration
** like "30s" into one, with the config's parser). def when absent. */
static double secs_field(lua_State *L, int t, const char *k, double def) {
  double v = def;
  if (lua_getfield(L, t, k) != LUA_TNIL) {
    int isnum;
    v = lua_tonumberx(L, -1, &isnum);
    if (!isnum || v < 0)
      luaL_error(L, "field '%s': expected seconds", k);
  }
  lua_pop(L, 1);
  return v;
}

/* Reads the oauth table at t into o; values stay anchored by t (scopes:
** a joined string left on the stack). */
static void read_oauth(lua_State *L, int t, struct us_okta_options *o) {
  check_keys(L, t, "okta.client oauth", oauth_fields);
  o->client_id = opt_field(L, t, "client_id");
  if (!o->client_id)
    luaL_error(L, "okta.client: oauth.client_id is required");
  if (lua_getfield(L, t, "private_key") != LUA_TSTRING)
    luaL_error(L, "okta.client: oauth.private_key (PEM text) is required");
  o->private_key = lua_tolstring(L, -1, &o->private_key_len);
  lua_pop(L, 1);
  o->key_id = opt_field(L, t, "key_id");
  int st = lua_getfield(L, t, "scopes");
  if (st == LUA_TTABLE) {
    int list = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lua_Integer n = (lua_Integer)lua_rawlen(L, list);
    for (lua_Integer i = 1; i <= n; i++) {
      if (lua_rawgeti(L, list, i) != LUA_TSTRING)
        luaL_error(L, "oauth.scopes: expected a list of strings");
      if (i > 1)
        luaL_addchar(&b, ' ');
      luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    o->scopes = lua_tostring(L, -1); /* stays on the stack */
  } else if (st == LUA_TSTRING) {
    o->scopes = lua_tostring(L, -1);
  } else if (st != LUA_TNIL) {
    luaL_error(L, "oauth.scopes: expected a list of strings");
  }
  int dt = lua_getfield(L, t, "dpop");
  if (dt == LUA_TBOOLEAN)
    o->dpop = lua_toboolean(L, -1);
  else if (dt != LUA_TNIL)
    luaL_error(L, "oauth.dpop: expected a boolean");
  lua_pop(L, 1);
}

/* raw.client(http_client, source) -> RawClient */
static int okta_client(lua_State *L) {
  us_http *e = us_http_checkengine(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  check_keys(L, 2, "okta.client", source_fields);
  struct us_okta_options o;
  us_okta_options_init(&o);
  o.url = opt_field(L, 2, "url");
  if (!o.url)
    luaL_error(L, "okta.client: field 'url' is required");
  o.token = opt_field(L, 2, "token");
  parse_share(L, 2, &o.budget_share);
  o.concurrency = (int)num_field(L, 2, "concurrency", 8);
  if (o.concurrency < 1 || o.concurrency > 75)
    luaL_error(L, "field 'concurrency': expected 1 to 75");
  o.timeout_ms = (long)(secs_field(L, 2, "timeout", 0) * 1000.0);
  o.max_retries = (int)num_field(L, 2, "retries", -1);
  o.max_wait_ms = (long)(secs_field(L, 2, "max_wait", 0) * 1000.0);
  int ot = lua_getfield(L, 2, "oauth"); /* 3 */
  if (ot == LUA_TTABLE)
    read_oauth(L, 3, &o);
  else if (ot != LUA_TNIL)
    luaL_error(L, "field 'oauth': expected a table");
  if (o.token && o.client_id)
    luaL_error(L, "okta.client: give `token` or `oauth`, not both");
  if (!o.token && !o.client_id)
    luaL_error(L, "okta.client: needs `token` (SSWS API token) or `oauth`");
  opt_field(L, 2, "app_id");
  opt_field(L, 2, "filter");
  opt_field(L, 2, "search");

  struct lokta *lo = lua_newuserdatauv(L, sizeof *lo, 1);
  memset(lo, 0, sizeof *lo);
  luaL_setmetatable(L, CLIENT_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  struct us_okta_error err;
  lo->c = us_okta_new(e, &o, &err);
  if (!lo->c)
    return luaL_error(L, "%s", err.message); /* a bad key or URL is a config error */
  return 1;
}

static int client_close(lua_State *L) {
  struct lokta *o = luaL_checkudata(L, 1, CLIENT_MT);
  if (o->busy)
    return luaL_error(L, "cannot close the Okta client inside one of its callbacks");
  us_okta_free(o->c);
  o->c = NULL;
  return 0;
}

static int client_gc(lua_State *L) {
  struct lokta *o = luaL_checkudata(L, 1, CLIENT_MT);
  o->busy = 0;
  return client_close(L);
}

static int client_tostring(lua_State *L) {
  struct lokta *o = luaL_checkudata(L, 1, CLIENT_MT);
  lua_pushfstring(L, "usersync.okta.RawClient (%s)", o->c ? "open" : "closed");
  return 1;
}

/* rc:authenticate() -> true | nil, message, code, err */
static int client_authenticate(lua_State *L) {
  struct lokta *o = check_client(L, 1);
  struct us_okta_error err;
  memset(&err, 0, sizeof err);
  if (us_okta_authenticate(o->c, &err) != 0)
    return push_error(L, &err);
  lua_pushboolean(L, 1);
  return 1;
}

/* rc:auth() -> "ssws" | "oauth", granted scope */
static int client_auth(lua_State *L) {
  struct lokta *o = check_client(L, 1);
  lua_pushstring(L, us_okta_is_oauth(o->c) ? "oauth" : "ssws");
  lua_pushstring(L, us_okta_token_scope(o->c));
  return 2;
}

/* ---------------------------------------------------------------- batches */

/* Frees the batch (idempotent); a client closed first freed it already. */
static void batch_release(struct lbatch *lb) {
  us_okta_event_free(lb->cur);
  lb->cur = NULL;
  if (lb->b) {
    if (lb->lo->c)
      us_okta_batch_free(lb->b);
    lb->b = NULL;
    lb->lo->busy--;
  }
}

static int batch_close(lua_State *L) {
  batch_release(luaL_checkudata(L, 1, BATCH_MT));
  return 0;
}

static struct lbatch *check_batch(lua_State *L) {
  struct lbatch *lb = luaL_checkudata(L, 1, BATCH_MT);
  if (!lb->b)
    luaL_error(L, "attempt to use a closed Okta batch");
  return lb;
}

/* rc:batch() -> Batch */
static int client_batch(lua_State *L) {
  struct lokta *o = check_client(L, 1);
  struct lbatch *lb = lua_newuserdatauv(L, sizeof *lb, 1);
  memset(lb, 0, sizeof *lb);
  lb->lo = o;
  luaL_setmetatable(L, BATCH_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  if (!(lb->b = us_okta_batch_new(o->c)))
    return luaL_error(L, "okta: out of memory");
  o->busy++;
  return 1;
}

static const char *const shapes[] = {"records", "slim", "ids", NULL};

/* Optional non-negative integer field k of table t (0 when absent). */
static lua_Integer count_field(lua_State *L, int t, const char *k) {
  lua_Integer v = 0;
  if (lua_getfield(L, t, k) != LUA_TNIL) {
    int isnum;
    v = lua_tointegerx(L, -1, &isnum);
    if (!isnum || v < 0)
      luaL_error(L, "field '%s': expected a whole number >= 0", k);
  }
  lua_pop(L, 1);
  return v;
}

/* b:submit{ ep =, ... } -> job number */
static int batch_submit(lua_State *L) {
  struct lbatch *lb = check_batch(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  struct us_okta_op op;
  memset(&op, 0, sizeof op);
  lua_getfield(L, 2, "ep");
  op.ep = (enum us_okta_ep)(luaL_checkoption(L, -1, NULL, us_okta_ep_names) + 1);
  lua_getfield(L, 2, "shape");
  op.shape = (enum us_okta_shape)luaL_checkoption(L, -1, "records", shapes);
  lua_pop(L, 2);
  op.id = opt_field(L, 2, "id");
  op.user = opt_field(L, 2, "user");
  op.filter = opt_field(L, 2, "filter");
  op.search = opt_field(L, 2, "search");
  op.since = opt_field(L, 2, "since");
  op.cursor = opt_field(L, 2, "cursor");
  lua_Integer limit = count_field(L, 2, "limit");
  luaL_argcheck(L, limit <= 1000, 2, "limit above 1000");
  op.limit = (int)limit;
  op.max_pages = (size_t)count_field(L, 2, "max_pages");
  lua_getfield(L, 2, "expand_user");
  op.expand_user = lua_toboolean(L, -1);
  lua_pop(L, 1);
  struct us_okta_error err;
  if (us_okta_submit(lb->b, &op, &err) != 0)
    return luaL_error(L, "%s", err.message);
  lua_pushinteger(L, ++lb->jobs);
  return 1;
}

/* Pushes the records of a page event: decoded JSON, or the ids. */
static void push_records(lua_State *L, const struct us_okta_event *ev) {
  if (!ev->body) {
    lua_createtable(L, (int)ev->nids, 0);
    for (size_t i = 0; i < ev->nids; i++) {
      lua_pushstring(L, ev->ids[i]);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return;
  }
  if (!us_json_push_decoded(L, ev->body, ev->len)) {
    lua_getfield(L, LUA_REGISTRYINDEX, "usersync.json.error");
    lua_error(L);
  }
}

/* Pushes a DONE event's values after "done", job. */
static int push_done(lua_State *L, const struct us_okta_event *ev) {
  if (!ev->ok)
    return push_error(L, &ev->error);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, (lua_Integer)ev->pages);
  lua_setfield(L, -2, "pages");
  lua_pushinteger(L, (lua_Integer)ev->items);
  lua_setfield(L, -2, "items");
  if (ev->cursor) {
    lua_pushstring(L, ev->cursor);
    lua_setfield(L, -2, "cursor");
  }
  return 1;
}

/* b:next() -> "page", job, records, count, page, last | "done", job, ... | nil */
static int batch_next(lua_State *L) {
  struct lbatch *lb = check_batch(L);
  struct lokta *o = lb->lo;
  if (!o->c)
    return luaL_error(L, "attempt to use a closed Okta client");
  lua_settop(L, 1);
  lua_pushcfunction(L, engine_check); /* a closed http client ends the jobs */
  lua_getiuservalue(L, 1, 1);
  lua_getiuservalue(L, -1, 1);
  lua_remove(L, -2);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK)
    us_okta_set_engine(o->c, NULL);
  lua_settop(L, 1);
  us_okta_event_free(lb->cur);
  lb->cur = us_okta_batch_next(lb->b);
  struct us_okta_event *ev = lb->cur;
  if (!ev)
    return 0;
  lua_pushstring(L, ev->type == US_OKTA_PAGE ? "page" : "done");
  lua_pushinteger(L, (lua_Integer)ev->job + 1);
  if (ev->type == US_OKTA_DONE)
    return 2 + push_done(L, ev);
  push_records(L, ev);
  lua_pushinteger(L, (lua_Integer)ev->count);
  lua_pushinteger(L, (lua_Integer)ev->page);
  lua_pushboolean(L, ev->last);
  return 6;
}

/* ---------------------------------------------------------------- budget */

/* c:budget() -> { [bucket] = {...} } for buckets seen so far */
static int c_budget(lua_State *L) {
  struct lokta *o = luaL_checkudata(L, 1, CLIENT_MT);
  if (!o->c)
    luaL_error(L, "attempt to use a closed Okta client");
  lua_newtable(L);
  for (size_t i = 0; i < US_OKTA_NBUCKETS; i++) {
    struct us_okta_bucket b;
    us_okta_bucket(o->c, i, &b);
    if (!b.known && !b.requests)
      continue;
    lua_createtable(L, 0, 8);
#define F(k, v)                                                                                    \
  lua_pushinteger(L, (lua_Integer)(v));                                                            \
  lua_setfield(L, -2, k)
    if (b.known) {
      F("limit", b.limit);
      F("remaining", b.remaining);
      F("reset", b.reset);
      lua_pushnumber(L, b.reset_in);
      lua_setfield(L, -2, "reset_in");
    }
    F("inflight", b.inflight);
    F("requests", b.requests);
    F("waits", b.waits);
    F("rate_limited", b.rate_limited);
#undef F
    lua_setfield(L, -2, b.name);
  }
  return 1;
}

static int c_requests(lua_State *L) {
  struct lokta *o = luaL_checkudata(L, 1, CLIENT_MT);
  if (!o->c)
    luaL_error(L, "attempt to use a closed Okta client");
  lua_pushinteger(L, (lua_Integer)us_okta_requests(o->c));
  return 1;
}

/* ---------------------------------------------------------------- tables */

static const luaL_Reg client_methods[] = {{"batch", client_batch},
                                          {"authenticate", client_authenticate},
                                          {"auth", client_auth},
                                          {"budget", c_budget},
                                          {"requests", c_requests},
                                          {"close", client_close},
                                          {NULL, NULL}};

static const luaL_Reg client_meta[] = {{"__gc", client_gc},
                                       {"__close", client_close},
                                       {"__tostring", client_tostring},
                                       {"__index", NULL},
                                       {NULL, NULL}};

static const luaL_Reg batch_methods[] = {
    {"submit", batch_submit}, {"next", batch_next}, {"close", batch_close}, {NULL, NULL}};

static const luaL_Reg batch_meta[] = {
    {"__gc", batch_close}, {"__close", batch_close}, {"__index", NULL}, {NULL, NULL}};

static const luaL_Reg okta_funcs[] = {{"client", okta_client}, {NULL, NULL}};

int luaopen_usersync_okta_raw(lua_State *L) {
  us_lua_class(L, CLIENT_MT, client_meta, client_methods);
  us_lua_class(L, BATCH_MT, batch_meta, batch_methods);
  luaL_newlib(L, okta_funcs);
  return 1;
}
