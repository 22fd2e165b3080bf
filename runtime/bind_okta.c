/*
** bind_okta.c: `require "usersync.okta"`, the Lua face of the Okta client
** (include/usersync/okta.h). The only file of the Okta client that calls lua_*.
**
** Lua API (times in seconds)
**
**   local okta = require "usersync.okta"
**   okta.client(http_client, source) -> Client
**     http_client: a usersync.http.Client; its engine carries every request
**     (it is kept alive by the Okta client; closing it first makes calls fail
**     with ECANCELED). source: the config's source table:
**       url (required), token = SSWS API token, or
**       oauth = { client_id, private_key (PEM), key_id, scopes = {..} or "a b",
**                 dpop = true },
**       app_id, filter, search (scope without app_id), budget_share = 0.5
**       (number in (0,1] or "50%": the share of every rate-limit bucket we
**       use; the rest is left for the org's other integrations),
**       concurrency = 8 (requests in flight), timeout (per attempt; seconds or
**       "30s"; default: the http client's), retries (default: the http
**       client's), max_wait (all retry waits of one request), type/status_map/
**       ca_file (accepted, not used here: ca_file belongs to the http client).
**     Unknown keys and wrong types raise.
**
**   Listings stream: fn(items, info) is called once per page with the page
**   decoded (usersync.json rules) and info = { page = n, count = n }; an
**   error in fn stops the listing (nil, message, "ECALLBACK"). Without
**   fn the items of every page are collected into one array. Returns
**   { pages = n, items = n } (with fn) or the array (without), or
**   nil, message, code, err on failure, where err = { code, status,
**   error_code (Okta errorCode), summary, request_id }. A failed page fails
**   the whole listing: there is never a silently short list.
**
**   c:users([{ filter=, search= }], [fn])   GET /api/v1/users?limit=200
**   c:user(id_or_login)                     -> user | nil, msg, code, err
**   c:app_user(app_id, user_id [, {expand="user"}])  GET /api/v1/apps/{id}/users/{uid}: the
**       AppUser when the app assigns the user | nil, msg, "ENOTFOUND", err
**   c:app(app_id)                           GET /api/v1/apps/{id}: the app | nil, msg, "ENOTFOUND"
**   c:user_groups(user_id, [fn])            GET /api/v1/users/{id}/groups?limit=200
**   c:groups([{ filter=, search= }], [fn])  GET /api/v1/groups?limit=200
**   c:group(group_id)                       -> group | nil, ...
**   c:group_members(group_id, [fn])         GET /api/v1/groups/{id}/users?limit=200
**   c:app_users([app_id], [fn])             GET /api/v1/apps/{id}/users?limit=500&expand=user
**   c:app_groups([app_id], [fn])            GET /api/v1/apps/{id}/groups?limit=200
**   c:logs{ cursor= | since=, filter=, limit=1000 } [, fn]
**       System Log polling query: pages until an empty page; returns
**       { cursor = next URL to poll from, pages, items, events = {...} (no fn) }
**
**   c:scope{ app_id=, include = function(group) -> bool | group_ids = {..} }
**       "users in scope, each with their groups": the snapshot plan.lua reads
**       as `source`: { users = { User + groups = {group ids} + app_assignment },
**       (each User without _links, credentials and type, which no policy
**       hook needs: the memory of a 100,000-user scope; the AppUser without
**       _links),
**       groups = { [id] = Group (counted groups only) }, complete = true,
**       problems = {}, requests = n }.
**       First the groups are listed and `include` (called once per group;
**       default: every group counts) or `group_ids` picks those that count.
**       Then, all concurrently: the users in scope - with app_id (default:
**       the source's) the app's users with expand=user (every effective
**       assignee, direct or through a group; DEPROVISIONED users have no
**       assignments), without an app the users matching source.filter or
**       source.search (with neither: filter lastUpdated gt 1970, so
**       DEPROVISIONED users are seen) - and the members of every counted
**       group (member ids read without decoding the pages); each user gets
**       the sorted ids of its counted groups. Members are listed once per
**       group, never groups once per user.
**       Failure: nil, message, code, partial where partial.complete == false
**       and partial.problems = { { code=, message= } }: never deprovision on it.
**       Optional progress = function(done, total, what), progress_interval =
**       0.1 (seconds between calls): called from the page loop at most once
**       per interval while the listings run, and once at the end of each
**       part with done == total: what = "groups" (groups listed; total nil
**       until the end: Okta gives no count), "users" (users in scope listed;
**       total nil until the end), "member lists" (counted groups whose
**       members are all read; total = the number of counted groups). An
**       error in it fails the read with ECALLBACK.
**   c:changes{ cursor = url | since = iso8601 (System Log from that time)
**              [, users = true, groups = true, max_pages = n] }
**       (max_pages, also for c:logs: at most n pages per poll; the cursor
**       then points after the last page read)
**       System Log polling from the stored cursor (an empty page ends it and
**       keeps the cursor); the users named in the events (targets of type
**       User) are re-read by id with their groups, concurrently
**       -> { cursor (store it), events = n, event_list = {LogEvent...},
**            users = { User + groups } (slimmed as in scope), deleted = { ids answered 404 },
**            user_ids = { ids }, group_ids = { ids }, requests = n }
**   c:changes{ watermark = iso8601 [, groups = true] }
**       users with filter lastUpdated gt watermark (DEPROVISIONED included),
**       with their groups -> { users = {...}, watermark = newest lastUpdated
**       seen (move it back a little before the next run: timestamps have
**       whole seconds), requests = n }. Hard-deleted users never show here:
**       use the System Log or a full scope read for them.
**   c:check() -> report for `usersync check` (never raises for remote failures):
**       { ok = bool, reachable = bool,
**         auth = { status, method = "ssws"|"oauth", scope (oauth), message, code },
**         app = {...} (only with app_id: "not_found" when the app is unknown),
**         users = {..}, groups = {..}, apps = {..} ("skipped" without app_id),
**         logs = {..} }
**       each { status = "ok" | "denied" (401/403/OAuth refusal) | "not_found" |
**       "error", message, code }.
**   c:budget() -> { ["/api/v1/users"] = { limit, remaining, reset (epoch),
**       reset_in (s), inflight, requests, waits, rate_limited }, ... } for the
**       buckets seen so far (for metrics)
**   c:requests() -> number of requests made (attempts with a response or a
**       transport failure, token requests included)
**   c:close()  idempotent; also __gc and __close
**
** Request costs (A users assigned to the app, U users matching the filter,
** G groups, m_g members of counted group g, E System Log events, T users
** touched by them, W users changed since a watermark). Page sizes: users
** 200 (max), groups 200, members 200 (not the default 1000), app users 500
** (max), logs 1000 (max):
**   scope, app     ceil(A/500) + ceil(G/200) + sum over counted g of max(1, ceil(m_g/200))
**   scope, no app  ceil(U/200) + ceil(G/200) + the same member pages
**                  (genorg 10,000 users / 500 groups, 498 counted: 3 + 3 + 574
**                  with the app, 50 + 3 + 574 for every user; see tests/bench/okta_read.lua)
**   changes{cursor|since}  ceil(E/1000) + 1 (the empty page that ends a poll)
**                  + 2 T (each touched user and its groups; 1 T with groups=false,
**                  0 with users=false); a quiet org costs 1 request
**   changes{watermark}  max(1, ceil(W/200)) + W (each user's groups; 0 with groups=false)
**   user, group    1;  user_groups, group_members, app_*: pages as above
**   check          3 one-item probes (users, groups, logs) + 1 with app_id
**   OAuth adds one token request per hour (two when the DPoP nonce is new),
**   with DPoP one metadata request per client (the proof algorithms), and
**   one more call when the API asks for its own nonce or refuses a token.
** Everything a call needs is requested once; independent listings run
** concurrently, at most `concurrency` in flight, each bucket used up to
** budget_share (the governor waits for the window's reset, computed from
** the response Date, instead of running into 429).
**
** Error codes: the target clients' (usersync.target), see
** include/usersync/okta.h: EAUTH, EFORBIDDEN, ENOTFOUND, EINVALID,
** ERATELIMIT, EHTTP, ERESPONSE, EBADLINK, ECALLBACK and the transport codes
** of usersync.http. The err table has source = "okta".
**
** Example (tests/lua/test_okta.lua runs it against the simulator; `url` is its address):
**   local http, okta = require "usersync.http", require "usersync.okta"
**   local hc <close> = http.client{ timeout = 30 }
**   local c <close> = okta.client(hc, { url = url, token = "test-token", app_id = "0oaApp" })
**   local snap, err, code = c:scope{ include = function(g) return g.type ~= "BUILT_IN" end }
**   if not snap then error(err .. " (" .. code .. ")") end
**   for _, u in ipairs(snap.users) do print(u.profile.login, #u.groups) end
**   local n = 0
**   assert(c:users({ search = 'status eq "DEPROVISIONED"' }, function(page) n = n + #page end))
**
** Ownership: a Client userdata owns its us_okta; user value 1 is the http
** Client (kept alive). Calls re-read the engine from it, so a closed http
** client is noticed. The C core never raises; every Lua callback runs
** under lua_pcall from the core's loop, so no C allocation is lost to a
** longjmp.
*/
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>

#include "usersync/jsonscan.h"
#include "usersync/modules.h"
#include "usersync/okta.h"
#include "usersync/timeutil.h"

#define CLIENT_MT "usersync.okta.Client"

struct lokta {
  us_okta *c; /* NULL once closed */
  char *app_id, *filter, *search;
  int busy; /* inside a call: close is refused */
};

/* ---------------------------------------------------------------- helpers */

static struct lokta *check_client(lua_State *L, int idx) {
  struct lokta *o = luaL_checkudata(L, idx, CLIENT_MT);
  if (!o->c)
    luaL_error(L, "attempt to use a closed Okta client");
  lua_getiuservalue(L, idx, 1);
  us_okta_set_engine(o->c, us_http_checkengine(L, -1)); /* raises if the http client is closed */
  lua_pop(L, 1);
  return o;
}

static char *xstrdup(lua_State *L, const char *s) {
  if (!s)
    return NULL;
  char *p = strdup(s);
  if (!p)
    luaL_error(L, "out of memory");
  return p;
}

/* Pushes nil, message, code, err-table; returns 4. */
static int push_error(lua_State *L, const struct us_okta_error *e) {
  lua_pushnil(L);
  lua_pushstring(L, e->message[0] ? e->message : "okta: failed");
  lua_pushstring(L, e->code[0] ? e->code : "EHTTP");
  lua_createtable(L, 0, 5);
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
  return 4;
}

/* A table of query parts: appends "&name=value" (value URL-encoded) to b. */
static void add_param(lua_State *L, luaL_Buffer *b, const char *name, const char *value) {
  if (!value)
    return;
  char *enc = us_okta_urlencode(value);
  if (!enc)
    luaL_error(L, "out of memory");
  luaL_addchar(b, '&');
  luaL_addstring(b, name);
  luaL_addchar(b, '=');
  luaL_addstring(b, enc);
  free(enc);
}

/* Optional string field k of table t (nil when t is not a table). */
static const char *opt_field(lua_State *L, int t, const char *k) {
  if (lua_type(L, t) != LUA_TTABLE)
    return NULL;
  const char *s = NULL;
  int ty = lua_getfield(L, t, k);
  if (ty == LUA_TSTRING)
    s = lua_tostring(L, -1); /* anchored by t */
  else if (ty != LUA_TNIL)
    luaL_error(L, "field '%s': expected a string", k);
  lua_pop(L, 1);
  return s;
}

/* ---------------------------------------------------------------- page sinks */

/* What the page callback does with a listing's pages. The worker receives
** (ctx, page, a3, a4, a5, a6) where a3..a6 are the stack slots below of the
** calling binding function (0: nil):
**   SINK_FN       a3 = fn(items, info)
**   SINK_COLLECT  a4 = array the items are appended to (a get: the object)
**   SINK_EVENTS   a4 = events array, a5 = touched user ids, a6 = touched group ids
**   SINK_USERS    a4 = users array, a5 = by_id (each user gets groups = {};
**                 _links, credentials and type are dropped: slim_user)
**   SINK_APPUSERS a4 = users array, a5 = by_id (User from _embedded.user,
**                 slimmed, the AppUser without _links as user.app_assignment)
**   SINK_GROUPS   a4 = {id -> group} of counted groups, a5 = include (fn or
**                 id set, nil: all), a6 = counted ids array
**   SINK_UGROUPS  a4 = {user id -> group ids}, a6 = key list (user ids)
**   SINK_MEMBERSHIPS a4 = {member id -> group ids}, a6 = key list: the group
**                 id of listing i is a6[i+1]; member ids are read with
**                 jsonscan (pages of full User objects are not decoded)
*/
/* c:scope{ progress = fn }: counters and the throttle. The function is
** read from the options table (stack slot `opts`) when it is called. */
struct scope_progress {
  int opts;        /* stack index of c:scope's options table */
  double interval; /* seconds between two calls while listing */
  double last;     /* monotonic time of the last call (0: none yet) */
  size_t groups, users, lists_done, lists;
};

enum sink {
  SINK_FN,
  SINK_COLLECT,
  SINK_EVENTS,
  SINK_USERS,
  SINK_APPUSERS,
  SINK_GROUPS,
  SINK_UGROUPS,
  SINK_MEMBERSHIPS
};

struct pagectx {
  lua_State *L;
  const enum sink *kinds; /* per listing, or NULL: `kind` */
  enum sink kind;
  const int *slots; /* per listing 4 slots, or NULL: `slot` */
  int slot[4];
  int single;
  int http; /* the http Client, re-checked after every callback */
  int stopped_engine;
  struct scope_progress *prog; /* c:scope's progress counters, or NULL */
};

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg)
    msg = luaL_tolstring(L, 1, NULL);
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Pushes the decoded page or raises with the decoder's message. */
static void push_page(lua_State *L, const struct us_okta_page *p) {
  if (!us_json_push_decoded(L, p->body, p->len)) {
    lua_getfield(L, LUA_REGISTRYINDEX, "usersync.json.error");
    lua_error(L);
  }
}

/* Appends the value at the top to array t unless present. Pops it. */
static void append_unique(lua_State *L, int t) {
  lua_Integer n = (lua_Integer)lua_rawlen(L, t);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, t, i);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);
    if (same) {
      lua_pop(L, 1);
      return;
    }
  }
  lua_rawseti(L, t, n + 1);
}

/* Pushes a new empty table marked as a JSON array. */
static void new_array(lua_State *L) {
  lua_newtable(L);
  if (lua_getfield(L, LUA_REGISTRYINDEX, "usersync.json.array") == LUA_TTABLE)
    lua_setmetatable(L, -2);
  else
    lua_pop(L, 1);
}

/* Ids of the elements of a page, read with jsonscan; each pushed as a string
** then `each(L, arg)` runs with it at the top (it must pop it). */
static void each_id(lua_State *L, const struct us_okta_page *p, void (*each)(lua_State *, int),
                    int arg) {
  struct us_jval root, el, id;
  size_t pos = 0;
  if (!us_json_parse(p->body, p->len, &root))
    return;
  while (us_json_next_elem(&root, &pos, &el)) {
    if (!us_json_get(&el, "id", &id) || id.type != US_J_STRING)
      continue;
    size_t n;
    char *s = us_json_strdup(&id, &n);
    if (!s)
      luaL_error(L, "out of memory");
    lua_pushlstring(L, s, n); /* may raise: s is freed first */
    free(s);
    each(L, arg);
  }
}

/* SINK_MEMBERSHIPS: member id at top; arg = stack index of the group id;
** memberships {id -> group ids} at 4. */
static void membership_each(lua_State *L, int gid) {
  lua_pushvalue(L, -1);
  if (lua_rawget(L, 4) != LUA_TTABLE) {
    lua_pop(L, 1);
    new_array(L);
    lua_pushvalue(L, -2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 4);
  }
  lua_pushvalue(L, gid);
  append_unique(L, lua_gettop(L) - 1);
  lua_pop(L, 2);
}

/* SINK_UGROUPS: group id at top; arg = the user's list. */
static void ugroup_each(lua_State *L, int list) { append_unique(L, list); }

static void sink_events(lua_State *L, int ev) {
  if (lua_getfield(L, ev, "target") == LUA_TTABLE) {
    lua_Integer nt = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer j = 1; j <= nt; j++) {
      if (lua_rawgeti(L, -1, j) == LUA_TTABLE) {
        lua_getfield(L, -1, "type");
        lua_getfield(L, -2, "id");
        const char *ty = lua_tostring(L, -2);
        int dest = !ty || lua_type(L, -1) != LUA_TSTRING ? 0
                   : !strcmp(ty, "User")                 ? 5
                   : !strcmp(ty, "UserGroup")            ? 6
                                                         : 0;
        if (dest && lua_istable(L, dest)) {
          lua_pushvalue(L, -1);
          append_unique(L, dest);
        }
        lua_pop(L, 2);
      }
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
}

/* A field of an Okta User that no policy hook needs (hooks
** see profile, id, status, the timestamps and groups): links, credentials
** and the user type. The key is at k (any type; not converted). */
static int dropped_user_field(lua_State *L, int k) {
  if (lua_type(L, k) != LUA_TSTRING)
    return 0;
  const char *s = lua_tostring(L, k);
  return strcmp(s, "_links") == 0 || strcmp(s, "credentials") == 0 || strcmp(s, "type") == 0;
}

/* Replaces the User at stack index item by a copy without the dropped
** fields (same metatable), its table sized for the fields kept plus
** `groups`: a 100,000-user scope holds every User at once, and the
** decoded _links and credentials were about half of each. Stack unchanged. */
static void slim_user(lua_State *L, int item) {
  int n = 1;
  lua_pushnil(L);
  while (lua_next(L, item)) {
    lua_pop(L, 1);
    if (!dropped_user_field(L, -1))
      n++;
  }
  lua_createtable(L, 0, n);
  if (lua_getmetatable(L, item))
    lua_setmetatable(L, -2);
  lua_pushnil(L);
  while (lua_next(L, item)) {
    if (dropped_user_field(L, -2)) {
      lua_pop(L, 1);
      continue;
    }
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
  lua_replace(L, item);
}

/* Protected worker: (ctx, page, a3, a4, a5, a6) -> nothing. */
static int page_worker(lua_State *L) {
  struct pagectx *ctx = lua_touserdata(L, 1);
  const struct us_okta_page *p = lua_touserdata(L, 2);
  enum sink kind = ctx->kinds ? ctx->kinds[p->list] : ctx->kind;
  luaL_checkstack(L, 16, "okta page");
  if (kind == SINK_UGROUPS || kind == SINK_MEMBERSHIPS) {
    lua_rawgeti(L, 6, (lua_Integer)p->list + 1); /* 7: group id / user id */
    if (kind == SINK_MEMBERSHIPS) {
      each_id(L, p, membership_each, 7);
    } else {
      lua_pushvalue(L, 7);
      if (lua_rawget(L, 4) != LUA_TTABLE) {
        lua_pop(L, 1);
        new_array(L);
        lua_pushvalue(L, 7);
        lua_pushvalue(L, -2);
        lua_rawset(L, 4);
      }
      each_id(L, p, ugroup_each, 8);
    }
    return 0;
  }
  push_page(L, p);
  int page = lua_gettop(L);
  if (kind == SINK_FN) {
    lua_pushvalue(L, 3);
    lua_pushvalue(L, page);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)p->page);
    lua_setfield(L, -2, "page");
    lua_pushinteger(L, (lua_Integer)p->count);
    lua_setfield(L, -2, "count");
    lua_pushinteger(L, (lua_Integer)p->list + 1);
    lua_setfield(L, -2, "list");
    lua_call(L, 2, 0);
    return 0;
  }
  if (ctx->single) {
    lua_rawseti(L, 4, (lua_Integer)lua_rawlen(L, 4) + 1);
    return 0;
  }
  lua_Integer n = (lua_Integer)lua_rawlen(L, 4);
  lua_Integer k = (lua_Integer)lua_rawlen(L, page);
  for (lua_Integer i = 1; i <= k; i++) {
    lua_rawgeti(L, page, i);
    int item = lua_gettop(L);
    switch (kind) {
    case SINK_EVENTS:
      if (lua_istable(L, item))
        sink_events(L, item);
      /* fallthrough */
    case SINK_COLLECT:
      lua_pushvalue(L, item);
      lua_rawseti(L, 4, ++n);
      break;
    case SINK_APPUSERS:
      if (lua_getfield(L, item, "_embedded") != LUA_TTABLE ||
          lua_getfield(L, -1, "user") != LUA_TTABLE)
        luaL_error(L, "app user without _embedded.user (expand=user not honoured)");
      lua_pushnil(L);
      lua_setfield(L, item, "_embedded");
      lua_pushnil(L);
      lua_setfield(L, item, "_links");
      lua_pushvalue(L, item);
      lua_setfield(L, -2, "app_assignment");
      lua_replace(L, item); /* the User takes the AppUser's place */
      /* fallthrough */
    case SINK_USERS:
      slim_user(L, item);
      new_array(L);
      lua_setfield(L, item, "groups");
      lua_getfield(L, item, "id");
      lua_pushvalue(L, item);
      lua_rawset(L, 5);
      lua_pushvalue(L, item);
      lua_rawseti(L, 4, ++n);
      break;
    case SINK_GROUPS: {
      lua_getfield(L, item, "id");
      int counted = 1;
      if (lua_type(L, 5) == LUA_TFUNCTION) {
        lua_pushvalue(L, 5);
        lua_pushvalue(L, item);
        lua_call(L, 1, 1);
        counted = lua_toboolean(L, -1);
        lua_pop(L, 1);
      } else if (lua_type(L, 5) == LUA_TTABLE) {
        lua_pushvalue(L, -1);
        counted = lua_rawget(L, 5) != LUA_TNIL;
        lua_pop(L, 1);
      }
      if (counted && lua_type(L, -1) == LUA_TSTRING) {
        lua_pushvalue(L, -1);
        lua_pushvalue(L, item);
        lua_rawset(L, 4);
        lua_rawseti(L, 6, (lua_Integer)lua_rawlen(L, 6) + 1);
      }
      break;
    }
    default:
      break;
    }
    lua_settop(L, page);
  }
  return 0;
}

/* Protected: raises if the http client (arg 1) was closed. */
static int engine_check(lua_State *L) {
  us_http_checkengine(L, 1);
  return 0;
}

static double mono_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Protected: (opts, done, total|nil, what as light C string) -> calls
** opts.progress(done, total, what). */
static int progress_worker(lua_State *L) {
  lua_getfield(L, 1, "progress");
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_pushstring(L, (const char *)lua_touserdata(L, 4));
  lua_call(L, 3, 0);
  return 0;
}

/* Calls the progress function with done, total (< 0: nil), what under
** lua_pcall; on an error fills err and returns nonzero. Stack unchanged. */
static int progress_call(lua_State *L, struct scope_progress *sp, size_t done, long long total,
                         const char *what, struct us_okta_error *err) {
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 8)) {
    snprintf(err->code, sizeof err->code, "ENOMEM");
    snprintf(err->message, sizeof err->message, "okta: progress: out of memory");
    return 1;
  }
  lua_pushcfunction(L, traceback);
  lua_pushcfunction(L, progress_worker);
  lua_pushvalue(L, sp->opts);
  lua_pushinteger(L, (lua_Integer)done);
  if (total < 0)
    lua_pushnil(L);
  else
    lua_pushinteger(L, (lua_Integer)total);
  lua_pushlightuserdata(L, (void *)what);
  int rc = lua_pcall(L, 4, 0, top + 1);
  if (rc != LUA_OK) {
    const char *m = lua_tostring(L, -1);
    snprintf(err->code, sizeof err->code, "ECALLBACK");
    snprintf(err->message, sizeof err->message, "okta: progress callback failed: %s",
             m ? m : "(error object is not a string)");
  }
  lua_settop(L, top);
  sp->last = mono_now();
  return rc != LUA_OK;
}

/* Counts page p for c:scope's progress and calls the function when the
** interval has passed. Nonzero (err filled) when the function raised. */
static int progress_page(lua_State *L, struct pagectx *ctx, const struct us_okta_page *p,
                         struct us_okta_error *err) {
  struct scope_progress *sp = ctx->prog;
  enum sink kind = ctx->kinds ? ctx->kinds[p->list] : ctx->kind;
  const char *what;
  size_t done;
  long long total = -1;
  if (kind == SINK_GROUPS) {
    done = sp->groups += p->count;
    what = "groups";
  } else if (kind == SINK_MEMBERSHIPS) {
    if (!p->next)
      sp->lists_done++;
    done = sp->lists_done;
    total = (long long)sp->lists;
    what = "member lists";
  } else {
    done = sp->users += p->count;
    what = "users";
  }
  if (sp->last > 0 && mono_now() - sp->last < sp->interval)
    return 0;
  return progress_call(L, sp, done, total, what, err);
}

/* The core's page callback: page_worker under lua_pcall with a traceback.
** Pushes only light values before the call, so nothing here can raise. */
static int on_page(void *ud, const struct us_okta_page *p, struct us_okta_error *err) {
  struct pagectx *ctx = ud;
  lua_State *L = ctx->L;
  int top = lua_gettop(L);
  lua_pushcfunction(L, traceback);
  lua_pushcfunction(L, page_worker);
  lua_pushlightuserdata(L, ctx);
  lua_pushlightuserdata(L, (void *)p);
  const int *slots = ctx->slots ? ctx->slots + 4 * p->list : ctx->slot;
  for (int i = 0; i < 4; i++) {
    if (slots[i])
      lua_pushvalue(L, slots[i]);
    else
      lua_pushnil(L);
  }
  int rc = lua_pcall(L, 6, 0, top + 1);
  if (rc != LUA_OK) {
    const char *m = lua_tostring(L, -1);
    snprintf(err->code, sizeof err->code, "ECALLBACK");
    snprintf(err->message, sizeof err->message, "okta: page callback failed: %s",
             m ? m : "(error object is not a string)");
  } else if (ctx->prog && progress_page(L, ctx, p, err)) {
    rc = LUA_ERRRUN;
  }
  lua_settop(L, top + 1);
  lua_pushcfunction(L, engine_check);
  lua_pushvalue(L, ctx->http);
  if (lua_pcall(L, 1, 0, top + 1) != LUA_OK) {
    ctx->stopped_engine = 1;
    snprintf(err->code, sizeof err->code, "ECANCELED");
    snprintf(err->message, sizeof err->message,
             "okta: the HTTP client was closed during the listing");
    err->transport = 1;
    rc = 1;
  }
  lua_settop(L, top);
  return rc != LUA_OK;
}

/* Runs the listings with ctx; the client is busy meanwhile (close refused).
** ctx->http must be set. 0, or -1 with err. */
static int run_lists(lua_State *L, struct lokta *o, struct us_okta_listing *ls, size_t n,
                     struct pagectx *ctx, struct us_okta_error *err) {
  luaL_checkstack(L, 24, "okta");
  ctx->L = L;
  o->busy++;
  int rc = us_okta_list(o->c, ls, n, on_page, ctx, err);
  o->busy--;
  if (ctx->stopped_engine)
    us_okta_set_engine(o->c, NULL);
  return rc;
}

/* ---------------------------------------------------------------- client */

static void parse_share(lua_State *L, int t, double *out) {
  int ty = lua_getfield(L, t, "budget_share");
  if (ty == LUA_TNUMBER) {
    *out = lua_tonumber(L, -1);
  } else if (ty == LUA_TSTRING) {
    const char *s = lua_tostring(L, -1);
    char *end;
    double v = strtod(s, &end);
    if (end == s || (*end && strcmp(end, "%") != 0))
      *out = -1;
    else
      *out = *end == '%' ? v / 100.0 : v;
  } else if (ty != LUA_TNIL) {
    *out = -1;
  }
  lua_pop(L, 1);
  if (!(*out > 0 && *out <= 1))
    luaL_error(L, "field 'budget_share': expected a number in (0,1] or \"N%%\"");
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

/* Field k of t as seconds: a number, or a duration string ("30s", "2m") as
** the config schema keeps it. def when absent; raises on a bad value. */
static double secs_field(lua_State *L, int t, const char *k, double def) {
  double v = def;
  int ty = lua_getfield(L, t, k);
  if (ty == LUA_TSTRING) {
    char err[US_TIME_ERRLEN];
    if (us_time_parse_duration(lua_tostring(L, -1), (size_t)-1, &v, err, sizeof err) != 0)
      luaL_error(L, "field '%s': %s", k, err);
  } else if (ty != LUA_TNIL) {
    int isnum;
    v = lua_tonumberx(L, -1, &isnum);
    if (!isnum || v < 0)
      luaL_error(L, "field '%s': expected seconds or a duration like \"30s\"", k);
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

/* okta.client(http_client, source) -> Client */
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
  const char *app = opt_field(L, 2, "app_id"), *flt = opt_field(L, 2, "filter"),
             *srch = opt_field(L, 2, "search");

  struct lokta *lo = lua_newuserdatauv(L, sizeof *lo, 1);
  memset(lo, 0, sizeof *lo);
  luaL_setmetatable(L, CLIENT_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  lo->app_id = xstrdup(L, app); /* owned by the userdata from here (close frees) */
  lo->filter = xstrdup(L, flt);
  lo->search = xstrdup(L, srch);
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
  free(o->app_id);
  free(o->filter);
  free(o->search);
  o->app_id = o->filter = o->search = NULL;
  return 0;
}

static int client_gc(lua_State *L) {
  struct lokta *o = luaL_checkudata(L, 1, CLIENT_MT);
  o->busy = 0;
  return client_close(L);
}

static int client_tostring(lua_State *L) {
  struct lokta *o = luaL_checkudata(L, 1, CLIENT_MT);
  lua_pushfstring(L, "usersync.okta.Client (%s)", o->c ? "open" : "closed");
  return 1;
}

/* ---------------------------------------------------------------- listings */

/* Lists the URL at the stack top with fn at fn_idx (0/nil: collect).
** Pushes the result (array, summary or object) or the error values. */
static int list_one(lua_State *L, struct lokta *o, int fn_idx, int single) {
  const char *url = lua_tostring(L, -1);
  int has_fn = fn_idx && !lua_isnoneornil(L, fn_idx);
  if (has_fn)
    luaL_checktype(L, fn_idx, LUA_TFUNCTION);
  new_array(L);
  int out = lua_gettop(L);
  lua_getiuservalue(L, 1, 1);
  struct pagectx ctx = {0};
  ctx.kind = has_fn ? SINK_FN : SINK_COLLECT;
  ctx.slot[0] = has_fn ? fn_idx : 0;
  ctx.slot[1] = out;
  ctx.single = single;
  ctx.http = lua_gettop(L);
  struct us_okta_listing l = {0};
  l.url = url;
  l.single = single;
  struct us_okta_error err;
  int rc = run_lists(L, o, &l, 1, &ctx, &err);
  us_okta_listing_clear(&l, 1);
  if (rc != 0)
    return push_error(L, &err);
  if (single) {
    lua_rawgeti(L, out, 1);
  } else if (has_fn) {
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)l.pages);
    lua_setfield(L, -2, "pages");
    lua_pushinteger(L, (lua_Integer)l.items);
    lua_setfield(L, -2, "items");
  } else {
    lua_pushvalue(L, out);
  }
  return 1;
}

/* Pushes "/api/v1/<what>/<encoded id><suffix>". */
static void push_id_path(lua_State *L, const char *what, const char *id, const char *suffix) {
  char *enc = us_okta_urlencode(id);
  if (!enc)
    luaL_error(L, "out of memory");
  lua_pushfstring(L, "/api/v1/%s/%s%s", what, enc, suffix);
  free(enc);
}

/* c:m([opts], [fn]): sets *opts (0: none) and returns the fn index. */
static int opts_and_fn(lua_State *L, int *opts) {
  if (lua_type(L, 2) == LUA_TFUNCTION) {
    *opts = 0;
    return 2;
  }
  if (!lua_isnoneornil(L, 2))
    luaL_checktype(L, 2, LUA_TTABLE);
  *opts = lua_istable(L, 2) ? 2 : 0;
  return 3;
}

static void push_query_path(lua_State *L, const char *path, int limit, int opts) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lua_pushfstring(L, "%s?limit=%d", path, limit);
  luaL_addvalue(&b);
  if (opts) {
    add_param(L, &b, "filter", opt_field(L, opts, "filter"));
    add_param(L, &b, "search", opt_field(L, opts, "search"));
  }
  luaL_pushresult(&b);
}

static int c_users(lua_State *L) {
  struct lokta *o = check_client(L, 1);
  int opts, fn = opts_and_fn(L, &opts);
  lua_settop(L, 3);
  push_query_path(L, "/api/v1/users", 200, opts);
  return list_one(L, o, fn, 0);
}

static int c_groups(lua_State *L) {
  struct lokta *o = check_client(L, 1);
  int opts, fn = opts_and_fn(L, &opts);
  lua_settop(L, 3);
  push_query_path(L, "/api/v1/groups", 200, opts);
  return list_one(L, o, fn, 0);
}

static int c_user(lua_State *L) {
  struct lokta *o = check_client(L, 1);
  lua_settop(L, 3);
  push_id_path(L, "users", luaL_checkstring(L, 2), "");
  return list_one(L, o, 0, 1);
}

static int c_group(lua_State *L) {
  struct lokta *o = check_client(L, 1);
  lua_settop(L, 3);
  push_id_path(L, "groups", luaL_checkstring(L, 2), "");
  return list_one(L, o, 0, 1);
}

/* c:app_user(app_id, user_id [, { expand = "user" }]) -> AppUser | nil,
** msg, "ENOTFOUND" when the app does not assign that user (directly or
** through a group) or there is no such user. With expand = "user" the
** AppUser carries the User in _embedded.user: one request tells both
** whether the user is in scope and what it looks like. */
static int c_app_user(lua_State *L) {
  struct lokta *o = check_client(L, 1);
  const char *app = luaL_checkstring(L, 2);
  luaL_checkstring(L, 3);
  int expand_user = 0;
  if (!lua_isnoneornil(L, 4)) {
    luaL_checktype(L, 4, LUA_TTABLE);
    lua_getfield(L, 4, "expand");
    const char *ex = lua_tostring(L, -1);
    if (ex && strcmp(ex, "user"))
      return luaL_argerror(L, 4, "expand must be \"user\"");
    expand_user = ex != NULL;
  }
  lua_settop(L, 3);
  push_id_path(L, "apps", app, "/users/");
  char *uid = us_okta_urlencode(lua_tostring(L, 3));
  if (!uid)
    return luaL_error(L, "out of memory");
  lua_pushstring(L, uid);
  free(uid);
  if (expand_user)
    lua_pushliteral(L, "?expand=user");
  lua_concat(L, expand_user ? 3 : 2);
  return list_one(L, o, 0, 1);
}

/* c:app(app_id) -> Application | nil, msg, "ENOTFOUND": whether the
** app exists (a 404 from app_user alone cannot tell "not assigned" from
** "no such app"). */
static int c_app(lua_State *L) {
  struct lokta *o = check_client(L, 1);
  luaL_checkstring(L, 2);
  lua_settop(L, 2);
  push_id_path(L, "apps", lua_tostring(L, 2), "");
  return list_one(L, o, 0, 1);
}

static int c_user_groups(lua_State *L) {
  struct lokta *o = check_client(L, 1);
  lua_settop(L, 3);
  push_id_path(L, "users", luaL_checkstring(L, 2), "/groups?limit=200");
  return list_one(L, o, 3, 0);
}

static int c_group_members(lua_State *L) {
  struct lokta *o = check_client(L, 1);
  lua_settop(L, 3);
  push_id_path(L, "groups", luaL_checkstring(L, 2), "/users?limit=200");
  return list_one(L, o, 3, 0);
}

/* The app id argument (string at 2) or the source's; *fn gets the fn index. */
static const char *app_arg(lua_State *L, struct lokta *o, int *fn) {
  if (lua_type(L, 2) == LUA_TSTRING) {
    *fn = 3;
    return lua_tostring(L, 2);
  }
  *fn = 2;
  if (!lua_isnoneornil(L, 2) && lua_type(L, 2) != LUA_TFUNCTION)
    luaL_argerror(L, 2, "expected an app id or a function");
  if (!o->app_id)
    luaL_error(L, "no app id given and the source has no app_id");
  return o->app_id;
}

static int c_app_users(lua_State *L) {
  struct lokta *o = check_client(L, 1);
  int fn;
  const char *app = app_arg(L, o, &fn);
  lua_settop(L, 3);
  push_id_path(L, "apps", app, "/users?limit=500&expand=user");
  return list_one(L, o, fn, 0);
}

static int c_app_groups(lua_State *L) {
  struct lokta *o = check_client(L, 1);
  int fn;
  const char *app = app_arg(L, o, &fn);
  lua_settop(L, 3);
  push_id_path(L, "apps", app, "/groups?limit=200");
  return list_one(L, o, fn, 0);
}

/* Pushes the URL of a System Log polling query from the options at opts. */
static void push_logs_url(lua_State *L, int opts) {
  const char *cursor = opt_field(L, opts, "cursor");
  if (cursor) {
    lua_pushstring(L, cursor);
    return;
  }
  lua_Integer limit = 1000;
  if (lua_istable(L, opts)) {
    if (lua_getfield(L, opts, "limit") != LUA_TNIL)
      limit = luaL_checkinteger(L, -1);
    lua_pop(L, 1);
  }
  if (limit < 1 || limit > 1000)
    luaL_error(L, "field 'limit': expected 1 to 1000");
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lua_pushfstring(L, "/api/v1/logs?limit=%d", (int)limit);
  luaL_addvalue(&b);
  add_param(L, &b, "since", opt_field(L, opts, "since"));
  add_param(L, &b, "filter", opt_field(L, opts, "filter"));
  luaL_pushresult(&b);
}

/* Polls the System Log from the options at 2 (fn at 3 or nil). Leaves
** events, user ids, group ids at 5, 6, 7 and pushes nothing; returns 0 and
** *cursor (malloc'd, caller frees), or pushes the error values and returns
** their count. */
static int poll_logs(lua_State *L, struct lokta *o, int has_fn, char **cursor, size_t *pages,
                     size_t *items) {
  push_logs_url(L, 2);        /* 4 */
  new_array(L);               /* 5 events */
  new_array(L);               /* 6 user ids */
  new_array(L);               /* 7 group ids */
  lua_getiuservalue(L, 1, 1); /* 8 */
  struct pagectx ctx = {0};
  ctx.kind = has_fn ? SINK_FN : SINK_EVENTS;
  ctx.slot[0] = has_fn ? 3 : 0;
  ctx.slot[1] = 5;
  ctx.slot[2] = 6;
  ctx.slot[3] = 7;
  ctx.http = 8;
  struct us_okta_listing l = {0};
  l.url = lua_tostring(L, 4);
  l.stop_on_empty = 1;
  if (lua_type(L, 2) == LUA_TTABLE) {
    /* max_pages: at most that many pages per poll; the cursor goes on after
    ** the last one read (bounds the memory of a long backlog) */
    lua_getfield(L, 2, "max_pages");
    lua_Integer mp = lua_isnil(L, -1) ? 0 : luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    if (mp < 0)
      luaL_error(L, "max_pages must be positive");
    l.max_pages = (size_t)mp;
  }
  struct us_okta_error err;
  int rc = run_lists(L, o, &l, 1, &ctx, &err);
  *cursor = l.cursor;
  l.cursor = NULL;
  *pages = l.pages;
  *items = l.items;
  lua_settop(L, 7);
  if (rc != 0) {
    free(*cursor);
    *cursor = NULL;
    return push_error(L, &err);
  }
  return 0;
}

/* c:logs{cursor=|since=, filter=, limit=} [, fn] */
static int c_logs(lua_State *L) {
  struct lokta *o = check_client(L, 1);
  if (!lua_isnoneornil(L, 2))
    luaL_checktype(L, 2, LUA_TTABLE);
  int has_fn = !lua_isnoneornil(L, 3);
  if (has_fn)
    luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_settop(L, 3);
  char *cursor = NULL;
  size_t pages, items;
  int nret = poll_logs(L, o, has_fn, &cursor, &pages, &items);
  if (nret)
    return nret;
  lua_createtable(L, 0, 6);
  lua_pushstring(L, cursor); /* may raise: free first */
  free(cursor);
  lua_setfield(L, -2, "cursor");
  lua_pushinteger(L, (lua_Integer)pages);
  lua_setfield(L, -2, "pages");
  lua_pushinteger(L, (lua_Integer)items);
  lua_setfield(L, -2, "items");
  if (!has_fn) {
    lua_pushvalue(L, 5);
    lua_setfield(L, -2, "events");
    lua_pushvalue(L, 6);
    lua_setfield(L, -2, "user_ids");
    lua_pushvalue(L, 7);
    lua_setfield(L, -2, "group_ids");
  }
  return 1;
}

/* ---------------------------------------------------------------- scope */

/* Sorts the string array at t in place (insertion sort; lists are short). */
static void sort_strings(lua_State *L, int t) {
  lua_Integer n = (lua_Integer)lua_rawlen(L, t);
  for (lua_Integer i = 2; i <= n; i++) {
    lua_rawgeti(L, t, i);
    lua_Integer j = i - 1;
    while (j >= 1) {
      lua_rawgeti(L, t, j);
      if (!lua_compare(L, -2, -1, LUA_OPLT)) {
        lua_pop(L, 1);
        break;
      }
      lua_rawseti(L, t, j + 1);
      j--;
    }
    lua_rawseti(L, t, j + 1);
  }
}

/* Marks the snapshot at snap incomplete with err as a problem; pushes
** nil, message, code, snapshot (returns 4). */
static int scope_failed(lua_State *L, int snap, const struct us_okta_error *err) {
  lua_pushboolean(L, 0);
  lua_setfield(L, snap, "complete");
  lua_getfield(L, snap, "problems");
  lua_createtable(L, 0, 4);
  lua_pushstring(L, err->code);
  lua_setfield(L, -2, "code");
  lua_pushstring(L, err->message);
  lua_setfield(L, -2, "message");
  lua_pushinteger(L, err->status);
  lua_setfield(L, -2, "status");
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_pushstring(L, err->message);
  lua_pushstring(L, err->code);
  lua_pushvalue(L, snap);
  return 4;
}

/* c:scope{ app_id=, include=fn | group_ids={...} } */
static int c_scope(lua_State *L) {
  struct lokta *o = check_client(L, 1);
  if (!lua_isnoneornil(L, 2))
    luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  if (lua_isnil(L, 2)) {
    lua_newtable(L);
    lua_replace(L, 2);
  }
  const char *app = opt_field(L, 2, "app_id");
  if (!app)
    app = o->app_id;
  /* 3: include function, id set, or nil (every group counts) */
  if (lua_getfield(L, 2, "include") != LUA_TNIL) {
    if (!lua_isfunction(L, -1))
      luaL_error(L, "field 'include': expected a function");
  } else {
    lua_pop(L, 1);
    if (lua_getfield(L, 2, "group_ids") == LUA_TTABLE) {
      lua_newtable(L);
      lua_Integer n = (lua_Integer)lua_rawlen(L, -2);
      for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, -2, i) != LUA_TSTRING)
          luaL_error(L, "field 'group_ids': expected a list of group ids");
        lua_pushboolean(L, 1);
        lua_rawset(L, -3);
      }
      lua_replace(L, -2);
    } else if (!lua_isnil(L, -1)) {
      luaL_error(L, "field 'group_ids': expected a list of group ids");
    }
  }
  struct scope_progress prog = {0}, *sp = NULL;
  int pty = lua_getfield(L, 2, "progress");
  lua_pop(L, 1);
  if (pty != LUA_TNIL) {
    if (pty != LUA_TFUNCTION)
      luaL_error(L, "field 'progress': expected a function");
    sp = &prog;
    sp->opts = 2;
    sp->interval = 0.1;
    int ity = lua_getfield(L, 2, "progress_interval");
    if (ity == LUA_TNUMBER && lua_tonumber(L, -1) >= 0)
      sp->interval = lua_tonumber(L, -1);
    else if (ity != LUA_TNIL)
      luaL_error(L, "field 'progress_interval': expected seconds >= 0");
    lua_pop(L, 1);
  }
  lua_newtable(L); /* 4 snapshot */
  new_array(L);    /* 5 users */
  lua_pushvalue(L, 5);
  lua_setfield(L, 4, "users");
  lua_newtable(L); /* 6 groups {id -> g} */
  lua_pushvalue(L, 6);
  lua_setfield(L, 4, "groups");
  new_array(L);
  lua_setfield(L, 4, "problems");
  lua_pushboolean(L, 1);
  lua_setfield(L, 4, "complete");
  lua_newtable(L);            /* 7 by_id */
  new_array(L);               /* 8 counted group ids */
  lua_getiuservalue(L, 1, 1); /* 9 http */
  unsigned long before = us_okta_requests(o->c);

  luaL_Buffer b; /* 10: the users listing */
  luaL_buffinit(L, &b);
  if (app) {
    char *enc = us_okta_urlencode(app);
    if (!enc)
      luaL_error(L, "out of memory");
    lua_pushfstring(L, "/api/v1/apps/%s/users?limit=500&expand=user", enc);
    free(enc);
    luaL_addvalue(&b);
  } else {
    luaL_addstring(&b, "/api/v1/users?limit=200");
    if (o->search)
      add_param(L, &b, "search", o->search);
    else /* a filter shows DEPROVISIONED users; a plain list hides them */
      add_param(L, &b, "filter",
                o->filter ? o->filter : "lastUpdated gt \"1970-01-01T00:00:00.000Z\"");
  }
  luaL_pushresult(&b);

  /* phase 1: the groups, and which of them count */
  struct us_okta_error err;
  struct pagectx gctx = {0};
  gctx.kind = SINK_GROUPS;
  gctx.slot[1] = 6;
  gctx.slot[2] = 3;
  gctx.slot[3] = 8;
  gctx.http = 9;
  gctx.prog = sp;
  struct us_okta_listing gl = {0};
  gl.url = "/api/v1/groups?limit=200";
  int rc = run_lists(L, o, &gl, 1, &gctx, &err);
  us_okta_listing_clear(&gl, 1);
  if (rc == 0 && sp)
    rc = progress_call(L, sp, sp->groups, (long long)sp->groups, "groups", &err);
  if (rc == 0) {
    /* phase 2, concurrently: the users in scope (listing 0) and the members
    ** of every counted group; memberships are kept by user id (11) and
    ** attached at the end, so neither waits for the other */
    size_t n = 1 + lua_rawlen(L, 8);
    lua_newtable(L);                                                      /* 11 memberships */
    lua_createtable(L, (int)n, 0);                                        /* 12 key list */
    lua_createtable(L, (int)n, 0);                                        /* 13 urls */
    struct us_okta_listing *ls = lua_newuserdatauv(L, n * sizeof *ls, 0); /* 14 */
    memset(ls, 0, n * sizeof *ls);
    enum sink *kinds = lua_newuserdatauv(L, n * sizeof *kinds, 0); /* 15 */
    int *slots = lua_newuserdatauv(L, 4 * n * sizeof *slots, 0);   /* 16 */
    memset(slots, 0, 4 * n * sizeof *slots);
    ls[0].url = lua_tostring(L, 10);
    kinds[0] = app ? SINK_APPUSERS : SINK_USERS;
    slots[1] = 5;
    slots[2] = 7;
    lua_pushboolean(L, 0);
    lua_rawseti(L, 12, 1);
    for (size_t i = 1; i < n; i++) {
      lua_rawgeti(L, 8, (lua_Integer)i);
      lua_pushvalue(L, -1);
      lua_rawseti(L, 12, (lua_Integer)i + 1);
      push_id_path(L, "groups", lua_tostring(L, -1), "/users?limit=200");
      ls[i].url = lua_tostring(L, -1);
      lua_rawseti(L, 13, (lua_Integer)i + 1);
      lua_pop(L, 1);
      kinds[i] = SINK_MEMBERSHIPS;
      slots[4 * i + 1] = 11;
      slots[4 * i + 3] = 12;
    }
    struct pagectx ctx = {0};
    ctx.kinds = kinds;
    ctx.slots = slots;
    ctx.http = 9;
    ctx.prog = sp;
    if (sp)
      sp->lists = n - 1;
    rc = run_lists(L, o, ls, n, &ctx, &err);
    us_okta_listing_clear(ls, n);
    if (rc == 0 && sp)
      rc = progress_call(L, sp, sp->users, (long long)sp->users, "users", &err);
    if (rc == 0 && sp)
      rc = progress_call(L, sp, sp->lists, (long long)sp->lists, "member lists", &err);
    if (rc == 0) { /* attach: users[i].groups = memberships[id] (sorted) */
      lua_Integer nu = (lua_Integer)lua_rawlen(L, 5);
      for (lua_Integer i = 1; i <= nu; i++) {
        lua_rawgeti(L, 5, i);
        lua_getfield(L, -1, "id");
        if (lua_rawget(L, 11) == LUA_TTABLE) {
          sort_strings(L, lua_gettop(L));
          lua_setfield(L, -2, "groups");
        } else {
          lua_pop(L, 1);
        }
        lua_pop(L, 1);
      }
    }
  }
  lua_pushinteger(L, (lua_Integer)(us_okta_requests(o->c) - before));
  lua_setfield(L, 4, "requests");
  if (rc != 0)
    return scope_failed(L, 4, &err);
  lua_pushvalue(L, 4);
  return 1;
}

/* ---------------------------------------------------------------- changes */

/* Reads the users of the id list at `ids`, concurrently. mode 0: each
** user (GET /users/{id}) into the array at `users`, ids answered 404 into
** the array at `deleted`; mode 1: the same plus each user's groups; mode 2:
** only the groups, for the users already in `users`. Every user in `users`
** ends with groups = sorted group ids (mode 0: empty). 0 or -1 with err. */
static int read_users(lua_State *L, struct lokta *o, int ids, int users, int deleted, int http,
                      int mode, struct us_okta_error *err) {
  size_t t = lua_rawlen(L, ids);
  size_t gets = mode != 2 ? t : 0, n = gets + (mode != 0 ? t : 0);
  int base = lua_gettop(L);
  lua_createtable(L, (int)n, 0); /* base+1: urls */
  lua_createtable(L, (int)n, 0); /* base+2: key list (user id per listing) */
  lua_newtable(L);               /* base+3: unused */
  lua_newtable(L);               /* base+4: user id -> group ids */
  size_t cap = n ? n : 1;
  struct us_okta_listing *ls = lua_newuserdatauv(L, cap * sizeof *ls, 0);
  memset(ls, 0, cap * sizeof *ls);
  struct us_okta_error *errs = lua_newuserdatauv(L, cap * sizeof *errs, 0);
  memset(errs, 0, cap * sizeof *errs);
  enum sink *kinds = lua_newuserdatauv(L, cap * sizeof *kinds, 0);
  int *slots = lua_newuserdatauv(L, 4 * cap * sizeof *slots, 0);
  for (size_t i = 0; i < n; i++) {
    int groups = i >= gets;
    lua_rawgeti(L, ids, (lua_Integer)(groups ? i - gets : i) + 1);
    const char *id = lua_tostring(L, -1);
    push_id_path(L, "users", id ? id : "", groups ? "/groups?limit=200" : "");
    ls[i].url = lua_tostring(L, -1);
    ls[i].single = !groups;
    ls[i].error = &errs[i];
    lua_rawseti(L, base + 1, (lua_Integer)i + 1);
    lua_rawseti(L, base + 2, (lua_Integer)i + 1);
    kinds[i] = groups ? SINK_UGROUPS : SINK_COLLECT;
    int *s = slots + 4 * i;
    s[0] = 0;
    s[1] = groups ? base + 4 : users;
    s[2] = 0;
    s[3] = base + 2;
  }
  struct pagectx ctx = {0};
  ctx.kinds = kinds;
  ctx.slots = slots;
  ctx.http = http;
  ctx.single = 1; /* SINK_COLLECT: a get appends its object */
  int rc = n ? run_lists(L, o, ls, n, &ctx, err) : 0;
  us_okta_listing_clear(ls, n);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    if (!ls[i].failed)
      continue;
    if (strcmp(errs[i].code, "ENOTFOUND") != 0) {
      *err = errs[i];
      rc = -1;
    } else if (i < gets) {
      lua_rawgeti(L, ids, (lua_Integer)i + 1);
      lua_rawseti(L, deleted, (lua_Integer)lua_rawlen(L, deleted) + 1);
    }
  }
  if (rc == 0) { /* attach the groups */
    lua_Integer nu = (lua_Integer)lua_rawlen(L, users);
    for (lua_Integer i = 1; i <= nu; i++) {
      lua_rawgeti(L, users, i);
      lua_getfield(L, -1, "id");
      if (lua_rawget(L, base + 4) != LUA_TTABLE) {
        lua_pop(L, 1);
        new_array(L);
      }
      sort_strings(L, lua_gettop(L));
      lua_setfield(L, -2, "groups");
      lua_pop(L, 1);
    }
  }
  lua_settop(L, base);
  return rc;
}

/* Pushes the newest `lastUpdated` of the users array at t, or fallback. */
static void push_watermark(lua_State *L, int t, const char *fallback) {
  lua_pushstring(L, fallback);
  int best = lua_gettop(L);
  lua_Integer n = (lua_Integer)lua_rawlen(L, t);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, t, i);
    if (lua_getfield(L, -1, "lastUpdated") == LUA_TSTRING && lua_compare(L, best, -1, LUA_OPLT))
      lua_replace(L, best);
    else
      lua_pop(L, 1);
    lua_pop(L, 1);
  }
}

/* c:changes{ cursor= | since= | watermark=, users=true, groups=true } */
static int c_changes(lua_State *L) {
  struct lokta *o = check_client(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_pushnil(L); /* 3: no fn */
  unsigned long before = us_okta_requests(o->c);
  const char *wm = opt_field(L, 2, "watermark");
  int with_groups = 1, with_users = 1;
  if (lua_getfield(L, 2, "groups") == LUA_TBOOLEAN)
    with_groups = lua_toboolean(L, -1);
  if (lua_getfield(L, 2, "users") == LUA_TBOOLEAN)
    with_users = lua_toboolean(L, -1);
  lua_pop(L, 2);
  struct us_okta_error err;
  if (wm) {
    /* users changed since the watermark; a filter shows DEPROVISIONED ones */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "/api/v1/users?limit=200");
    lua_pushfstring(L, "lastUpdated gt \"%s\"", wm);
    add_param(L, &b, "filter", lua_tostring(L, -1));
    lua_pop(L, 1);
    luaL_pushresult(&b);        /* 4 */
    new_array(L);               /* 5 users */
    lua_newtable(L);            /* 6 by_id */
    lua_getiuservalue(L, 1, 1); /* 7 */
    struct pagectx ctx = {0};
    ctx.kind = SINK_USERS;
    ctx.slot[1] = 5;
    ctx.slot[2] = 6;
    ctx.http = 7;
    struct us_okta_listing l = {0};
    l.url = lua_tostring(L, 4);
    int rc = run_lists(L, o, &l, 1, &ctx, &err);
    us_okta_listing_clear(&l, 1);
    if (rc != 0)
      return push_error(L, &err);
    if (with_groups) {
      /* 8: ids, then each user's groups */
      new_array(L);
      lua_Integer n = (lua_Integer)lua_rawlen(L, 5);
      for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 5, i);
        lua_getfield(L, -1, "id");
        lua_rawseti(L, 8, i);
        lua_pop(L, 1);
      }
      new_array(L); /* 9 deleted (unused in mode 2) */
      if (read_users(L, o, 8, 5, 9, 7, 2, &err) != 0)
        return push_error(L, &err);
      lua_settop(L, 7);
    }
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, 5);
    lua_setfield(L, -2, "users");
    push_watermark(L, 5, wm);
    lua_setfield(L, -2, "watermark");
    lua_pushinteger(L, (lua_Integer)(us_okta_requests(o->c) - before));
    lua_setfield(L, -2, "requests");
    return 1;
  }
  /* System Log from a cursor (or a start time) */
  if (!opt_field(L, 2, "cursor") && !opt_field(L, 2, "since"))
    luaL_error(L, "changes: give cursor, since or watermark");
  char *cursor = NULL;
  size_t pages, items;
  int nret = poll_logs(L, o, 0, &cursor, &pages, &items); /* 5 events, 6 uids, 7 gids */
  if (nret)
    return nret;
  lua_pushstring(L, cursor); /* 8 */
  free(cursor);
  new_array(L);               /* 9 users */
  new_array(L);               /* 10 deleted */
  lua_getiuservalue(L, 1, 1); /* 11 http */
  if (with_users && read_users(L, o, 6, 9, 10, 11, with_groups ? 1 : 0, &err) != 0)
    return push_error(L, &err);
  lua_createtable(L, 0, 8);
  lua_pushvalue(L, 8);
  lua_setfield(L, -2, "cursor");
  lua_pushinteger(L, (lua_Integer)items);
  lua_setfield(L, -2, "events");
  lua_pushvalue(L, 5);
  lua_setfield(L, -2, "event_list");
  lua_pushvalue(L, 9);
  lua_setfield(L, -2, "users");
  lua_pushvalue(L, 10);
  lua_setfield(L, -2, "deleted");
  lua_pushvalue(L, 6);
  lua_setfield(L, -2, "user_ids");
  lua_pushvalue(L, 7);
  lua_setfield(L, -2, "group_ids");
  lua_pushinteger(L, (lua_Integer)(us_okta_requests(o->c) - before));
  lua_setfield(L, -2, "requests");
  return 1;
}

/* ---------------------------------------------------------------- check */

/* Pushes { status = "ok"|"denied"|"not_found"|"error", message=, code= }. */
static void push_probe(lua_State *L, const struct us_okta_listing *l,
                       const struct us_okta_error *e) {
  lua_createtable(L, 0, 3);
  const char *st = "ok";
  if (l->failed) {
    st = !strcmp(e->code, "EAUTH") || !strcmp(e->code, "EFORBIDDEN") ? "denied"
         : !strcmp(e->code, "ENOTFOUND") ? "not_found"
                                              : "error";
    lua_pushstring(L, e->message);
    lua_setfield(L, -2, "message");
    lua_pushstring(L, e->code);
    lua_setfield(L, -2, "code");
  }
  lua_pushstring(L, st);
  lua_setfield(L, -2, "status");
}

/* c:check() -> report */
static int c_check(lua_State *L) {
  struct lokta *o = check_client(L, 1);
  lua_settop(L, 1);
  lua_getiuservalue(L, 1, 1); /* 2 */
  lua_createtable(L, 0, 8);   /* 3 report */
  struct us_okta_error aerr;
  memset(&aerr, 0, sizeof aerr);
  int auth_ok = 1;
  if (us_okta_is_oauth(o->c)) {
    o->busy++;
    auth_ok = us_okta_authenticate(o->c, &aerr) == 0;
    o->busy--;
  }
  if (!auth_ok) {
    int reach = !aerr.transport;
    lua_pushboolean(L, reach);
    lua_setfield(L, 3, "reachable");
    lua_createtable(L, 0, 3);
    lua_pushstring(L, reach ? "denied" : "error");
    lua_setfield(L, -2, "status");
    lua_pushstring(L, aerr.message);
    lua_setfield(L, -2, "message");
    lua_pushstring(L, aerr.code);
    lua_setfield(L, -2, "code");
    lua_setfield(L, 3, "auth");
    lua_pushboolean(L, 0);
    lua_setfield(L, 3, "ok");
    return 1;
  }
  /* probes: users, groups, logs (since an hour ago), the app's users */
  char since[US_TIME_BUFLEN];
  us_time_format_iso8601(us_time_now() - 3600, since, sizeof since);
  char *enc = us_okta_urlencode(since);
  if (!enc)
    luaL_error(L, "out of memory");
  lua_pushfstring(L, "/api/v1/logs?limit=1&since=%s", enc); /* 4 */
  free(enc);
  const char *names[4] = {"users", "groups", "logs", "app"};
  struct us_okta_listing ls[4];
  struct us_okta_error errs[4];
  memset(ls, 0, sizeof ls);
  memset(errs, 0, sizeof errs);
  ls[0].url = "/api/v1/users?limit=1";
  ls[1].url = "/api/v1/groups?limit=1";
  ls[2].url = lua_tostring(L, 4);
  size_t n = 3;
  if (o->app_id) {
    push_id_path(L, "apps", o->app_id, "/users?limit=1"); /* 5 */
    ls[3].url = lua_tostring(L, 5);
    n = 4;
  }
  for (size_t i = 0; i < n; i++) {
    ls[i].error = &errs[i];
    ls[i].max_pages = 1;
  }
  struct us_okta_error err; /* no page callback: pages are only validated */
  o->busy++;
  int rc = us_okta_list(o->c, ls, n, NULL, NULL, &err);
  o->busy--;
  us_okta_listing_clear(ls, n);
  if (rc != 0) { /* only a submit failure gets here */
    for (size_t i = 0; i < n; i++) {
      ls[i].failed = 1;
      errs[i] = err;
    }
  }
  int reachable = 0, authed = 0, all_ok = 1;
  for (size_t i = 0; i < n; i++) {
    if (!ls[i].failed || !errs[i].transport)
      reachable = 1;
    if (!ls[i].failed || strcmp(errs[i].code, "EAUTH") != 0)
      authed = 1;
    if (ls[i].failed)
      all_ok = 0;
  }
  lua_pushboolean(L, reachable);
  lua_setfield(L, 3, "reachable");
  lua_createtable(L, 0, 3);
  if (!reachable) {
    lua_pushliteral(L, "error");
  } else if (!authed) {
    lua_pushliteral(L, "denied");
  } else {
    lua_pushliteral(L, "ok");
  }
  lua_setfield(L, -2, "status");
  if (!authed || !reachable) {
    lua_pushstring(L, errs[0].message);
    lua_setfield(L, -2, "message");
    lua_pushstring(L, errs[0].code);
    lua_setfield(L, -2, "code");
  }
  lua_pushstring(L, us_okta_is_oauth(o->c) ? "oauth" : "ssws");
  lua_setfield(L, -2, "method");
  if (us_okta_is_oauth(o->c)) {
    lua_pushstring(L, us_okta_token_scope(o->c));
    lua_setfield(L, -2, "scope");
  }
  lua_setfield(L, 3, "auth");
  for (size_t i = 0; i < n; i++) {
    push_probe(L, &ls[i], &errs[i]);
    lua_setfield(L, 3, names[i]);
  }
  if (o->app_id) { /* the app probe answers both "app found" and "apps readable" */
    lua_getfield(L, 3, "app");
    lua_setfield(L, 3, "apps");
  } else {
    lua_createtable(L, 0, 2);
    lua_pushliteral(L, "skipped");
    lua_setfield(L, -2, "status");
    lua_pushliteral(L, "no app_id configured");
    lua_setfield(L, -2, "message");
    lua_setfield(L, 3, "apps");
  }
  lua_pushboolean(L, all_ok);
  lua_setfield(L, 3, "ok");
  lua_settop(L, 3);
  return 1;
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

static const luaL_Reg client_methods[] = {{"users", c_users},
                                          {"user", c_user},
                                          {"app_user", c_app_user},
                                          {"app", c_app},
                                          {"user_groups", c_user_groups},
                                          {"groups", c_groups},
                                          {"group", c_group},
                                          {"group_members", c_group_members},
                                          {"app_users", c_app_users},
                                          {"app_groups", c_app_groups},
                                          {"logs", c_logs},
                                          {"scope", c_scope},
                                          {"changes", c_changes},
                                          {"check", c_check},
                                          {"budget", c_budget},
                                          {"requests", c_requests},
                                          {"close", client_close},
                                          {NULL, NULL}};

static const luaL_Reg client_meta[] = {{"__gc", client_gc},
                                       {"__close", client_close},
                                       {"__tostring", client_tostring},
                                       {"__index", NULL},
                                       {NULL, NULL}};

static const luaL_Reg okta_funcs[] = {{"client", okta_client}, {NULL, NULL}};

int luaopen_usersync_okta(lua_State *L) {
  luaL_newmetatable(L, CLIENT_MT);
  luaL_setfuncs(L, client_meta, 0);
  lua_newtable(L);
  luaL_setfuncs(L, client_methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, okta_funcs);
  return 1;
}
