/*
** bind_target.c: `require "usersync.target"`, the Lua face of the Jira,
** Confluence and Bitbucket Data Center clients (include/usersync/target.h).
** The only target file that calls lua_*.
**
** Lua API (times in seconds)
**
**   local target = require "usersync.target"
**   local t = target.new(http_client, {
**     type = "jira" | "confluence" | "bitbucket" | "scim",  -- required (target.products())
**     flavour = "atlassian",  -- a product's variant (scim: Atlassian Cloud), optional
**     url = "https://jira.example.com",              -- required, context path included
**     user = "svc", password = "...",                -- HTTP Basic, or
**     token = "...",                                 -- Authorization: Bearer (PAT)
**     concurrency = 8,      -- requests of this target in flight at once
**     timeout = 30,         -- per attempt (default: the http client's)
**     page_size = nil,      -- listings: at most this many per page (tests)
**     add_to_default_group = true,  -- Bitbucket create_user
**     task_wait = 120,      -- Confluence: how long to follow a delete task
**     name = "jira-prod",   -- informational
**   })                      -> Target (misuse and bad config raise)
**   ca_file is refused here: TLS (verification on, CA file) is the http
**   client's business, so give it to usersync.http.client.
**   The http client (usersync.http) is shared: every request of every
**   target runs on its engine; TLS verification and CA file are its options.
**
**   t:type() -> "jira" ...;   t:requests() -> requests made so far
**   t:capabilities() -> { deactivate=, reactivate=, rename=, leads=, bulk_add= }
**   target.products() -> { { type = "jira", caps = <as above>,
**                            flavours = { [name] = caps } }, ... }: every
**     product this build knows (usersync.targets, the registry, reads it)
**
**   Every failure is nil, msg, code, err with err = { source = the target's
**   type, code =, status = (0: no HTTP answer), message = }, as the Okta
**   client's (the bulk adds return their results table instead of err;
**   each failed item there carries source and status).
**
**   Listings stream pages to a callback (run under pcall with a traceback;
**   an error in it stops the listing and is returned as nil, msg, "ECALLBACK").
**   A failed page fails the listing: never a silently short list.
**   t:accounts(function(page) end)        -> true | nil, msg, code
**       page = { {name=, key=, id=, display_name=, email=, active=}, ... }
**       (id: the service's id of the account, SCIM only)
**       (inactive accounts included; email nil where the product hides it;
**       active nil when unknown)
**   t:groups(function(names) end)         -> true | nil, msg, code
**       ("ETRUNCATED" when the product answered part of the groups: the
**       callback got them, the rest must be looked up by name)
**   t:members(group, function(page) end)  -> true | nil, msg, code (inactive included)
**   t:get(name) -> { name=, key=, display_name=, email=, active=, groups={...}, raw=decoded }
**                  | nil, msg, code ("ENOTFOUND" when there is no such user)
**       groups is nil when the product's answer did not tell them (a Jira
**       that ignores expand=groups): unknown, not "no groups"; read them
**       with t:members of the groups that matter.
**
**   Writes: -> true [, note] | nil, msg, code. note is "already exists",
**   "already a member", "not a member" or "nothing to change" when the
**   product said so (or nothing needed doing).
**   t:create_user{ name=, display_name=, email=, password=nil, notify=false }
**   t:update_user(name, { display_name=, email= })   -- absent: unchanged
**   t:rename_user(from, to)            t:deactivate_user(name)
**   t:reactivate_user(name)            t:delete_user(name)
**   t:create_group(group)              t:delete_group(group)
**   t:add_member(group, name)          t:remove_member(group, name)
**   t:add_members(group, {names})      -> true, results | nil, msg, code, results
**   t:add_to_groups(name, {groups})    -> same; results[item] = {ok=, note=, message=, code=,
**                                         status=, source=}
**   t:group_exists(group) -> true | false | nil, msg, code   (Jira: one
**       request; EUNSUPPORTED elsewhere, whose group listings are complete)
**   t:leads({names}) -> { [lower(name)] = { projects={keys}, components={ids} } } (Jira)
**   t:handover_lead{ name=, projects={}, components={}, to_project_lead=,
**                    to_component_lead= }                    (Jira)
**
**   t:snapshot() -> { accounts = { {name=, key=, display_name=, email=, active=,
**                     groups={...}} }, groups = { names }, complete = true,
**                     requests = n, time = s }  | nil, msg, code
**     Accounts, groups and every group's members, read concurrently; each
**     account's groups come from the member listings (unordered). Any
**     failed page fails the snapshot. When the product cut its groups
**     listing short (Jira's groups/picker under a server limit) the result
**     has groups_partial = true: `groups` holds what came, no memberships
**     were read (every account's groups is empty), and the caller looks up
**     the groups it needs by name with t:members (ENOTFOUND: no such group). Request costs: see the product files'
**     headers (runtime/target_<type>.c).
**   t:snapshot{ progress = function(done, total, what), progress_interval = 0.1 }
**     the same, calling progress from the read loop at most once per
**     interval (seconds) while pages arrive, what = "accounts" (accounts
**     listed) or "memberships" (member entries read), total nil (the
**     products give no count); at the end once per part with done == total.
**     An error in it stops the read: nil, "progress callback failed: ...",
**     "ECALLBACK".
**
**   t:apply(ops, callback [, { phases = true }]) -> { ok = n, failed = n }
**                                              | nil, msg, "ECALLBACK"
**     ops are the planner's operation tables (plan.lua): create_group{group},
**     create_user{name, display_name, email, password?}, link (no request),
**     update_user{name, changes={display_name={from,to}, email={from,to}}},
**     rename_user{from, to}, reactivate_user{name}, add_member{group, name},
**     remove_member{group, name}, handover_lead{name, projects, components,
**     to_project_lead, to_component_lead}, deactivate_user{name},
**     delete_user{name}. They run concurrently within the target's
**     concurrency; with phases (default) one kind after the other in
**     plan order, so groups exist before members are added. add_member ops
**     of one group go out as one bulk request where the product has one.
**     callback(op, true, note) or callback(op, nil, message, code, err) runs as
**     each completes (under pcall with a traceback; an error stops the
**     apply). Without a callback, the result is also in
**     summary.results[i] = { ok=, note=, message=, code=, status=, source= }.
**
**   t:apply_start(ops) -> Pending: sends ops (as t:apply without phases,
**     so give it ops of one kind, or ops whose order does not matter) and
**     returns at once; the requests run while any target of the same http
**     client drives the engine.
**   pending:poll(callback [, wait]) -> true (more to come) | false (done)
**                                     | nil, msg, "ECALLBACK"
**     reports the results that arrived (callback as t:apply's); when none
**     had and wait (seconds) > 0, drives the shared engine up to wait
**     first. Several targets' Pendings polled in turn run concurrently.
**   pending:close() (also __gc, __close): cancels what is unfinished.
**
**   t:snapshot_start() -> read: starts the snapshot's requests and returns
**     at once; they run while anything drives the shared http engine
**     (another target's read or apply, the Okta read), their results held
**     until t:snapshot{ started = read, progress = ... } takes them (the
**     same result as t:snapshot; a read is taken once). read:close()
**     (also __gc, __close) cancels it.
**
**   t:check() -> { type=, url=, reachable=bool, product=, version=, user=,
**                  admin=true|false|nil (unknown), detail=, code= }
**   t:close()  (also __gc and __close; a target in use raises)
**
**   Error codes: EAUTH EFORBIDDEN ENOTFOUND ECONFLICT ESEATS ELEAD EINHERITED
**   EINVALID ERATELIMIT EUNSUPPORTED ERESPONSE ETIMEOUT_TASK ETASK_FAILED
**   EHTTP, the http codes (ECONNREFUSED, ETIMEDOUT, ETLS, ...) and ECALLBACK
**   (a callback raised); meanings in include/usersync/target.h.
**
** Example (tests/lua/test_target.lua runs it against the Jira simulator,
** with `url` its address):
**   local http, target = require "usersync.http", require "usersync.target"
**   local hc <close> = http.client{ retries = 2 }
**   local t <close> = target.new(hc, { type = "jira", url = url,
**                                      user = "admin", password = "admin" })
**   assert(t:create_group("devs"))
**   assert(t:create_user{ name = "alice", display_name = "Alice", email = "a@x.org" })
**   local ok, note = t:add_member("devs", "alice")      --> true, nil
**   ok, note = t:add_member("devs", "alice")            --> true, "already a member"
**   local snap = assert(t:snapshot())
**   local ok2, msg, code = t:deactivate_user("nobody")  --> nil, "jira: ...", "ENOTFOUND"
**   local s = t:apply({ { kind = "remove_member", group = "devs", name = "alice" } },
**                     function(op, ok, info, code) print(op.kind, ok, info, code) end)
**
** Ownership: a Target userdata owns its us_target and keeps its http
** Client alive (user value 1). Each call runs a batch owned by a Batch
** userdata (user value: the Target), so a Lua error frees everything;
** the event being handled is owned by the Batch too.
*/
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>

#include "usersync/modules.h"
#include "usersync/target.h"
#include "usersync/timeutil.h"

#define TARGET_MT "usersync.target.Target"
#define BATCH_MT "usersync.target.Batch"
#define PENDING_MT "usersync.target.Pending"
#define STARTED_MT "usersync.target.StartedRead"

struct ltarget {
  us_target *t; /* NULL once closed */
  int busy;     /* calls running on it (callbacks may re-enter) */
};

struct lbatch {
  struct ltarget *lt; /* kept alive by the batch's user value */
  us_target_batch *b;
  struct us_target_event *cur; /* event being handled */
  unsigned long before;        /* snapshot_start: the target's requests then */
  double t0;                   /* snapshot_start: when (us_time_monotonic) */
};

static struct ltarget *check_target(lua_State *L, int idx) {
  struct ltarget *lt = luaL_checkudata(L, idx, TARGET_MT);
  if (!lt->t)
    luaL_error(L, "attempt to use a closed target");
  return lt;
}

/* ---------- batches ---------- */

/* Frees the batch (idempotent). A target closed first already freed it. */
static void batch_release(struct lbatch *lb) {
  us_target_event_free(lb->cur);
  lb->cur = NULL;
  if (lb->b && lb->lt && lb->lt->t)
    us_target_batch_free(lb->b);
  lb->b = NULL;
}

static int batch_close(lua_State *L) {
  batch_release(luaL_checkudata(L, 1, BATCH_MT));
  return 0;
}

/* Pushes a new Batch of the target at index 1. [-0, +1] */
static struct lbatch *new_batch(lua_State *L, struct ltarget *lt) {
  struct lbatch *lb = lua_newuserdatauv(L, sizeof *lb, 1);
  memset(lb, 0, sizeof *lb);
  lb->lt = lt;
  luaL_setmetatable(L, BATCH_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  lb->b = us_target_batch_new(lt->t);
  if (!lb->b)
    luaL_error(L, "target: out of memory");
  return lb;
}

/* The next event, driving the engine while none is ready; NULL when the
** batch has nothing left. The event stays owned by the batch. */
static struct us_target_event *next_event(struct ltarget *lt, struct lbatch *lb) {
  us_target_event_free(lb->cur);
  lb->cur = NULL;
  for (;;) {
    if ((lb->cur = us_target_batch_next(lb->b)))
      return lb->cur;
    if (!us_target_batch_pending(lb->b))
      return NULL;
    us_target_drive(lt->t, 200);
  }
}

static void submit(lua_State *L, struct lbatch *lb, const struct us_target_op *op) {
  const char *err = "failed";
  if (us_target_submit(lb->b, op, &err))
    luaL_error(L, "target: %s", err);
}

/* ---------- pushing records ---------- */

static void set_str(lua_State *L, const char *k, const char *v) {
  if (!v)
    return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

/* Sets the account fields on the table at the top. */
static void fill_account(lua_State *L, const struct us_target_account *a) {
  set_str(L, "name", a->name);
  set_str(L, "key", a->key);
  set_str(L, "id", a->id);
  set_str(L, "display_name", a->display_name);
  set_str(L, "email", a->email);
  if (a->active >= 0) {
    lua_pushboolean(L, a->active);
    lua_setfield(L, -2, "active");
  }
}

static void push_account(lua_State *L, const struct us_target_account *a) {
  lua_createtable(L, 0, 6);
  fill_account(L, a);
}

static void push_names(lua_State *L, char *const *names, size_t n) {
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, names[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

/* Pushes the page of ev: accounts or names. */
static void push_page(lua_State *L, const struct us_target_event *ev) {
  if (ev->type == US_TEV_GROUPS) {
    push_names(L, ev->names, ev->nnames);
    return;
  }
  lua_createtable(L, (int)ev->naccounts, 0);
  for (size_t i = 0; i < ev->naccounts; i++) {
    push_account(L, &ev->accounts[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

/* A failure: nil, message, code, err, where err = { source = the target's
** type ("jira", ...), code =, status = (0: no HTTP answer), message = }, the
** table the Okta client's failures also return. Returns 4. */
static int push_error(lua_State *L, const struct ltarget *lt, const char *msg, const char *code,
                      long status) {
  luaL_pushfail(L);
  lua_pushstring(L, msg);
  lua_pushstring(L, code);
  lua_createtable(L, 0, 4);
  lua_pushstring(L, lt->t ? us_target_type(lt->t) : "target");
  lua_setfield(L, -2, "source");
  lua_pushvalue(L, -2); /* [nil, msg, code, err] */
  lua_setfield(L, -2, "code");
  lua_pushinteger(L, status);
  lua_setfield(L, -2, "status");
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "message");
  return 4;
}

static int push_fail(lua_State *L, const struct ltarget *lt, const struct us_target_event *ev) {
  return push_error(L, lt, ev->message ? ev->message : "failed", ev->code ? ev->code : "EHTTP",
                    ev->status);
}

/* Pushes one op's outcome: { ok, note, message, code, status, source }
** (source, status and code only for a failure). */
static void push_result(lua_State *L, const struct ltarget *lt, int ok, const char *note,
                        const char *msg, const char *code, long status) {
  lua_createtable(L, 0, 6);
  lua_pushboolean(L, ok);
  lua_setfield(L, -2, "ok");
  set_str(L, "note", note);
  set_str(L, "message", msg);
  set_str(L, "code", code);
  if (!ok) {
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    lua_pushstring(L, lt->t ? us_target_type(lt->t) : "target");
    lua_setfield(L, -2, "source");
  }
}

/* ---------- protected callbacks ---------- */

/* Calls the function below nargs arguments with a traceback handler.
** Returns 1 ok (results dropped), 0 with the error message on the stack. */
static int pcall_cb(lua_State *L, int nargs) {
  int fn = lua_gettop(L) - nargs;
  lua_pushcfunction(L, us_lua_traceback);
  lua_insert(L, fn);
  int st = lua_pcall(L, nargs, 0, fn);
  lua_remove(L, fn);
  return st == LUA_OK;
}

/* The callback's error (on the stack) as a failure: push_error with ECALLBACK. */
static int callback_failed(lua_State *L, const struct ltarget *lt, const char *what) {
  const char *m = lua_tostring(L, -1); /* a table error stays a table */
  if (!m)
    m = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, -1));
  const char *msg = lua_pushfstring(L, "%s callback failed: %s", what, m);
  return push_error(L, lt, msg, "ECALLBACK", 0);
}

/* ---------- constructor and simple methods ---------- */

static const char *opt_str(lua_State *L, int t, const char *k) {
  const char *v = NULL;
  int ty = lua_getfield(L, t, k);
  if (ty == LUA_TSTRING)
    v = lua_tostring(L, -1);
  else if (ty != LUA_TNIL)
    luaL_error(L, "target config '%s': expected a string", k);
  lua_pop(L, 1); /* the string stays alive in the config table */
  return v;
}

static double opt_num(lua_State *L, int t, const char *k, double def) {
  double v = def;
  int ty = lua_getfield(L, t, k);
  if (ty == LUA_TNUMBER)
    v = lua_tonumber(L, -1);
  else if (ty != LUA_TNIL)
    luaL_error(L, "target config '%s': expected a number", k);
  lua_pop(L, 1);
  return v;
}

static const char *const config_keys[] = {"type",      "url",       "user",
                                          "password",  "token",     "concurrency",
                                          "timeout",   "page_size", "add_to_default_group",
                                          "task_wait", "name",      "ca_file",
                                          "flavour",   NULL};

/* target.new(http_client, config) -> Target */
static int target_new(lua_State *L) {
  us_http *e = us_http_checkengine(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, 2)) {
    lua_pop(L, 1);
    int ok = 0;
    if (lua_type(L, -1) == LUA_TSTRING)
      for (const char *const *k = config_keys; *k && !ok; k++)
        ok = !strcmp(*k, lua_tostring(L, -1));
    if (!ok)
      return luaL_error(L, "target config: unknown key '%s'", luaL_tolstring(L, -1, NULL));
  }
  if (opt_str(L, 2, "ca_file"))
    return luaL_error(L,
                      "target config 'ca_file': set it on the http client "
                      "(usersync.http.client{ ca_file = ... }), which makes the TLS connections");
  struct us_target_config c = {0};
  c.type = opt_str(L, 2, "type");
  c.url = opt_str(L, 2, "url");
  c.user = opt_str(L, 2, "user");
  c.password = opt_str(L, 2, "password");
  c.token = opt_str(L, 2, "token");
  c.flavour = opt_str(L, 2, "flavour");
  c.concurrency = (int)opt_num(L, 2, "concurrency", 8);
  c.timeout_ms = (long)(opt_num(L, 2, "timeout", 0) * 1000);
  c.page_size = (long)opt_num(L, 2, "page_size", 0);
  c.task_wait_ms = (long)(opt_num(L, 2, "task_wait", 120) * 1000);
  lua_getfield(L, 2, "add_to_default_group");
  c.add_to_default_group = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (c.concurrency < 1 || c.concurrency > 64)
    return luaL_error(L, "target config 'concurrency': expected 1..64");
  struct ltarget *lt = lua_newuserdatauv(L, sizeof *lt, 1);
  lt->t = NULL;
  lt->busy = 0;
  luaL_setmetatable(L, TARGET_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1); /* keep the http client alive */
  const char *err = "failed";
  lt->t = us_target_new(e, &c, &err);
  if (!lt->t)
    return luaL_error(L, "%s", err);
  return 1;
}

static int target_gc(lua_State *L) {
  struct ltarget *lt = luaL_checkudata(L, 1, TARGET_MT);
  us_target_free(lt->t);
  lt->t = NULL;
  return 0;
}

/* t:close() and __close: refused from inside a callback of a running call. */
static int target_close(lua_State *L) {
  struct ltarget *lt = luaL_checkudata(L, 1, TARGET_MT);
  if (lt->busy)
    return luaL_error(L, "target: close while a call on it is running");
  return target_gc(L);
}

static int target_tostring(lua_State *L) {
  struct ltarget *lt = luaL_checkudata(L, 1, TARGET_MT);
  if (lt->t)
    lua_pushfstring(L, "usersync.target.Target (%s, %p)", us_target_type(lt->t), (void *)lt);
  else
    lua_pushliteral(L, "usersync.target.Target (closed)");
  return 1;
}

static int target_type(lua_State *L) {
  lua_pushstring(L, us_target_type(check_target(L, 1)->t));
  return 1;
}

static int target_requests(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)us_target_requests(check_target(L, 1)->t));
  return 1;
}

/* Pushes a capabilities table. */
static void push_caps(lua_State *L, struct us_target_caps c) {
  lua_createtable(L, 0, 5);
  lua_pushboolean(L, c.deactivate);
  lua_setfield(L, -2, "deactivate");
  lua_pushboolean(L, c.reactivate);
  lua_setfield(L, -2, "reactivate");
  lua_pushboolean(L, c.rename);
  lua_setfield(L, -2, "rename");
  lua_pushboolean(L, c.leads);
  lua_setfield(L, -2, "leads");
  lua_pushboolean(L, c.bulk_add);
  lua_setfield(L, -2, "bulk_add");
}

static int target_capabilities(lua_State *L) {
  push_caps(L, us_target_caps(check_target(L, 1)->t));
  return 1;
}

/* target.products() -> { { type = "jira", caps = {...} }, ... } in the C
** list's order: the one list of products (usersync.targets reads it). */
static int target_products(lua_State *L) {
  lua_newtable(L);
  struct us_target_caps c;
  const char *type;
  for (size_t i = 0; (type = us_target_product(i, &c)); i++) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, type);
    lua_setfield(L, -2, "type");
    push_caps(L, c);
    lua_setfield(L, -2, "caps");
    lua_newtable(L); /* flavours = { name = caps } */
    const char *fl;
    for (size_t k = 0; (fl = us_target_product_flavour(i, k, &c)); k++) {
      push_caps(L, c);
      lua_setfield(L, -2, fl);
    }
    lua_setfield(L, -2, "flavours");
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* ---------- one operation ---------- */

/* Runs one op to completion; pushes true [, note] or nil, msg, code. */
static int run_one(lua_State *L, struct ltarget *lt, const struct us_target_op *op) {
  struct lbatch *lb = new_batch(L, lt);
  int bi = lua_gettop(L);
  lt->busy++;
  submit(L, lb, op);
  struct us_target_event *ev, *done = NULL;
  while ((ev = next_event(lt, lb))) {
    if (ev->type == US_TEV_DONE) {
      done = ev;
      lb->cur = NULL; /* keep it past the loop: owned here until pushed */
      break;
    }
  }
  lt->busy--;
  lb->cur = done; /* the batch owns it again (freed on close) */
  int n;
  if (!done) {
    n = push_error(L, lt, "target: the operation ended without a result", "EHTTP", 0);
  } else if (!done->ok) {
    n = push_fail(L, lt, done);
  } else {
    lua_pushboolean(L, 1);
    n = 1;
    if (done->note) {
      lua_pushstring(L, done->note);
      n = 2;
    }
  }
  (void)bi;
  batch_release(lb); /* results are on the stack above the batch */
  return n;
}

static const char *arg_name(lua_State *L, int idx) { return luaL_checkstring(L, idx); }

static int simple(lua_State *L, enum us_top kind, const char *name, const char *group,
                  const char *to) {
  struct ltarget *lt = check_target(L, 1);
  struct us_target_op op = {0};
  op.kind = kind;
  op.name = name;
  op.group = group;
  op.to = to;
  return run_one(L, lt, &op);
}

static int target_create_user(lua_State *L) {
  struct ltarget *lt = check_target(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  struct us_target_op op = {0};
  op.kind = US_TOP_CREATE_USER;
  op.name = opt_str(L, 2, "name");
  op.display_name = opt_str(L, 2, "display_name");
  op.email = opt_str(L, 2, "email");
  op.password = opt_str(L, 2, "password");
  lua_getfield(L, 2, "notify");
  op.notify = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (!op.name)
    return luaL_argerror(L, 2, "field 'name' is required");
  return run_one(L, lt, &op);
}

static int target_update_user(lua_State *L) {
  struct ltarget *lt = check_target(L, 1);
  struct us_target_op op = {0};
  op.kind = US_TOP_UPDATE_USER;
  op.name = arg_name(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  op.display_name = opt_str(L, 3, "display_name");
  op.email = opt_str(L, 3, "email");
  return run_one(L, lt, &op);
}

static int target_rename_user(lua_State *L) {
  return simple(L, US_TOP_RENAME_USER, arg_name(L, 2), NULL, arg_name(L, 3));
}
static int target_deactivate_user(lua_State *L) {
  return simple(L, US_TOP_DEACTIVATE_USER, arg_name(L, 2), NULL, NULL);
}
static int target_reactivate_user(lua_State *L) {
  return simple(L, US_TOP_REACTIVATE_USER, arg_name(L, 2), NULL, NULL);
}
static int target_delete_user(lua_State *L) {
  return simple(L, US_TOP_DELETE_USER, arg_name(L, 2), NULL, NULL);
}
static int target_create_group(lua_State *L) {
  return simple(L, US_TOP_CREATE_GROUP, NULL, arg_name(L, 2), NULL);
}
static int target_delete_group(lua_State *L) {
  return simple(L, US_TOP_DELETE_GROUP, NULL, arg_name(L, 2), NULL);
}
/* t:group_exists(name) -> true | false | nil, msg, code (Jira) */
static int target_group_exists(lua_State *L) {
  int n = simple(L, US_TOP_FIND_GROUP, NULL, arg_name(L, 2), NULL);
  if (n == 2 && lua_toboolean(L, -2)) { /* true, note */
    int none = !strcmp(lua_tostring(L, -1), "no such group");
    lua_pop(L, 2);
    lua_pushboolean(L, !none);
    return 1;
  }
  return n;
}

static int target_remove_member(lua_State *L) {
  return simple(L, US_TOP_REMOVE_MEMBER, arg_name(L, 3), arg_name(L, 2), NULL);
}

/* A C array of the strings of the list at idx, in a scratch userdata
** pushed on the stack (freed by the GC). [-0, +1] */
static const char **str_list(lua_State *L, int idx, size_t *n) {
  luaL_checktype(L, idx, LUA_TTABLE);
  *n = (size_t)luaL_len(L, idx);
  const char **v = lua_newuserdatauv(L, (*n ? *n : 1) * sizeof *v, 0);
  for (size_t i = 0; i < *n; i++) {
    lua_rawgeti(L, idx, (lua_Integer)i + 1);
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "bad argument #%d: item %d is not a string", idx - 1, (int)i + 1);
    v[i] = lua_tostring(L, -1);
    lua_pop(L, 1); /* still referenced by the list */
  }
  return v;
}

/* add_members / add_to_groups: per-item results. */
static int bulk(lua_State *L, enum us_top kind) {
  struct ltarget *lt = check_target(L, 1);
  const char *one = arg_name(L, 2);
  size_t n;
  const char **items = str_list(L, 3, &n);
  struct us_target_op op = {0};
  op.kind = kind;
  if (kind == US_TOP_ADD_MEMBERS)
    op.group = one;
  else
    op.name = one;
  op.list = items;
  op.nlist = n;
  lua_newtable(L); /* results */
  int res = lua_gettop(L);
  struct lbatch *lb = new_batch(L, lt);
  lt->busy++;
  submit(L, lb, &op);
  struct us_target_event *ev;
  int failed = 0;
  while ((ev = next_event(lt, lb))) {
    if (ev->type != US_TEV_DONE || !ev->item)
      continue;
    push_result(L, lt, ev->ok, ev->note, ev->message, ev->code, ev->status);
    lua_setfield(L, res, ev->item);
    if (!ev->ok && !failed) {
      failed = 1;
      lua_pushstring(L, ev->message ? ev->message : "failed");
      lua_setfield(L, res, "\1first_message");
      lua_pushstring(L, ev->code ? ev->code : "EHTTP");
      lua_setfield(L, res, "\1first_code");
    }
  }
  lt->busy--;
  batch_release(lb);
  if (!failed) {
    lua_pushboolean(L, 1);
    lua_pushvalue(L, res);
    return 2;
  }
  luaL_pushfail(L);
  lua_getfield(L, res, "\1first_message");
  lua_getfield(L, res, "\1first_code");
  lua_pushnil(L);
  lua_setfield(L, res, "\1first_message");
  lua_pushnil(L);
  lua_setfield(L, res, "\1first_code");
  lua_pushvalue(L, res);
  return 4;
}

static int target_add_members(lua_State *L) { return bulk(L, US_TOP_ADD_MEMBERS); }
static int target_add_to_groups(lua_State *L) { return bulk(L, US_TOP_ADD_TO_GROUPS); }

static int target_add_member(lua_State *L) {
  struct ltarget *lt = check_target(L, 1);
  const char *g = arg_name(L, 2), *u = arg_name(L, 3);
  struct us_target_op op = {0};
  op.kind = US_TOP_ADD_MEMBERS;
  op.group = g;
  op.list = &u;
  op.nlist = 1;
  return run_one(L, lt, &op);
}

/* ---------- listings ---------- */

/* Runs a listing op, calling the function at fidx with each page. */
static int listing(lua_State *L, const struct us_target_op *op, int fidx) {
  struct ltarget *lt = check_target(L, 1);
  luaL_checktype(L, fidx, LUA_TFUNCTION);
  struct lbatch *lb = new_batch(L, lt);
  lt->busy++;
  submit(L, lb, op);
  struct us_target_event *ev;
  int n = 0;
  while ((ev = next_event(lt, lb))) {
    if (ev->type == US_TEV_DONE) {
      if (ev->ok) {
        lua_pushboolean(L, 1);
        n = 1;
      } else {
        n = push_fail(L, lt, ev);
      }
      break;
    }
    lua_pushvalue(L, fidx);
    push_page(L, ev);
    if (!pcall_cb(L, 1)) {
      n = callback_failed(L, lt, "listing");
      break;
    }
  }
  lt->busy--;
  batch_release(lb); /* cancels what is left */
  if (!n) {
    n = push_error(L, lt, "target: the listing ended without a result", "EHTTP", 0);
  }
  return n;
}

static int target_accounts(lua_State *L) {
  struct us_target_op op = {0};
  op.kind = US_TOP_LIST_ACCOUNTS;
  return listing(L, &op, 2);
}

static int target_groups(lua_State *L) {
  struct us_target_op op = {0};
  op.kind = US_TOP_LIST_GROUPS;
  return listing(L, &op, 2);
}

static int target_members(lua_State *L) {
  struct us_target_op op = {0};
  op.kind = US_TOP_LIST_MEMBERS;
  op.group = arg_name(L, 2);
  return listing(L, &op, 3);
}

/* Runs op and returns its DONE event (owned by lb as lb->cur), or NULL. */
static struct us_target_event *run_done(lua_State *L, struct ltarget *lt, struct lbatch *lb,
                                        const struct us_target_op *op) {
  lt->busy++;
  submit(L, lb, op);
  struct us_target_event *ev;
  while ((ev = next_event(lt, lb)) && ev->type != US_TEV_DONE)
    ;
  lt->busy--;
  return ev;
}

static int target_get(lua_State *L) {
  struct ltarget *lt = check_target(L, 1);
  struct us_target_op op = {0};
  op.kind = US_TOP_GET_ACCOUNT;
  op.name = arg_name(L, 2);
  struct lbatch *lb = new_batch(L, lt);
  struct us_target_event *ev = run_done(L, lt, lb, &op);
  int n = 1;
  if (!ev || !ev->ok || !ev->naccounts) {
    if (ev && !ev->ok) {
      n = push_fail(L, lt, ev);
    } else {
      n = push_error(L, lt, "target: get ended without an account", "ERESPONSE", 0);
    }
  } else {
    push_account(L, &ev->accounts[0]);
    if (!ev->partial) { /* unknown groups stay nil: never "no groups" */
      push_names(L, ev->names, ev->nnames);
      lua_setfield(L, -2, "groups");
    }
    if (ev->raw && us_json_push_decoded(L, ev->raw, ev->raw_len))
      lua_setfield(L, -2, "raw");
  }
  batch_release(lb);
  return n;
}

/* ---------- leads ---------- */

static int target_leads(lua_State *L) {
  struct ltarget *lt = check_target(L, 1);
  size_t n;
  const char **names = str_list(L, 2, &n);
  struct us_target_op op = {0};
  op.kind = US_TOP_LEADS;
  op.list = names;
  op.nlist = n;
  lua_newtable(L);
  int res = lua_gettop(L);
  struct lbatch *lb = new_batch(L, lt);
  lt->busy++;
  submit(L, lb, &op);
  struct us_target_event *ev;
  int ret = 0;
  while ((ev = next_event(lt, lb))) {
    if (ev->type == US_TEV_LEAD) {
      lua_getglobal(L, "string"); /* lower-case key like plan.lua */
      lua_getfield(L, -1, "lower");
      lua_remove(L, -2);
      lua_pushstring(L, ev->group);
      lua_call(L, 1, 1);
      if (lua_getfield(L, res, lua_tostring(L, -1)) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 2);
        lua_newtable(L);
        lua_setfield(L, -2, "projects");
        lua_newtable(L);
        lua_setfield(L, -2, "components");
        lua_pushvalue(L, -1);
        lua_setfield(L, res, lua_tostring(L, -3));
      }
      lua_getfield(L, -1, ev->is_component ? "components" : "projects");
      lua_pushstring(L, ev->item);
      lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
      lua_pop(L, 3);
    } else if (ev->type == US_TEV_DONE) {
      ret = ev->ok ? 1 : push_fail(L, lt, ev);
      if (ev->ok)
        lua_pushvalue(L, res);
      break;
    }
  }
  lt->busy--;
  batch_release(lb);
  return ret;
}

static int target_handover_lead(lua_State *L) {
  struct ltarget *lt = check_target(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  struct us_target_op op = {0};
  op.kind = US_TOP_HANDOVER_LEAD;
  op.name = opt_str(L, 2, "name");
  op.to = opt_str(L, 2, "to_project_lead");
  op.to2 = opt_str(L, 2, "to_component_lead");
  if (lua_getfield(L, 2, "projects") == LUA_TTABLE)
    op.list = str_list(L, lua_gettop(L), &op.nlist);
  if (lua_getfield(L, 2, "components") == LUA_TTABLE)
    op.list2 = str_list(L, lua_gettop(L), &op.nlist2);
  return run_one(L, lt, &op);
}

/* ---------- snapshot ---------- */

/* The account table for lower(name) in index table ix, created (and
** appended to accounts list al) when new. Pushes it. [-0, +1] */
static void snap_account(lua_State *L, int ix, int al, const struct us_target_account *a) {
  lua_getglobal(L, "string");
  lua_getfield(L, -1, "lower");
  lua_remove(L, -2);
  lua_pushstring(L, a->name);
  lua_call(L, 1, 1); /* lname */
  if (lua_getfield(L, ix, lua_tostring(L, -1)) == LUA_TTABLE) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1);
  lua_createtable(L, 0, 6);
  lua_newtable(L);
  lua_setfield(L, -2, "groups");
  fill_account(L, a);
  lua_pushvalue(L, -1);
  lua_setfield(L, ix, lua_tostring(L, -3));
  lua_pushvalue(L, -1);
  lua_rawseti(L, al, (lua_Integer)luaL_len(L, al) + 1);
  lua_remove(L, -2);
}


/* Snapshot progress: the options table's progress function, throttled. */
struct snap_progress {
  int opts;        /* stack index of the options table; 0: no progress */
  double interval; /* seconds between two calls while reading */
  double last;     /* monotonic time of the last call (0: none yet) */
  size_t accounts, memberships;
};

/* Calls opts.progress(done, final ? done : nil, what) when final or when the
** interval has passed. 1 ok, 0 with the error message on the stack. */
static int snap_progress_call(lua_State *L, struct snap_progress *sp, size_t done,
                              const char *what, int final) {
  if (!sp->opts || (!final && sp->last > 0 && us_time_monotonic() - sp->last < sp->interval))
    return 1;
  lua_getfield(L, sp->opts, "progress");
  lua_pushinteger(L, (lua_Integer)done);
  if (final)
    lua_pushinteger(L, (lua_Integer)done);
  else
    lua_pushnil(L);
  lua_pushstring(L, what);
  sp->last = us_time_monotonic();
  return pcall_cb(L, 3);
}

/* Reads t:snapshot's optional options table at index 2 into sp. */
static void snap_options(lua_State *L, struct snap_progress *sp) {
  memset(sp, 0, sizeof *sp);
  if (lua_isnoneornil(L, 2))
    return;
  luaL_checktype(L, 2, LUA_TTABLE);
  int ty = lua_getfield(L, 2, "progress");
  lua_pop(L, 1);
  if (ty == LUA_TNIL)
    return;
  if (ty != LUA_TFUNCTION)
    luaL_error(L, "snapshot: field 'progress': expected a function");
  sp->opts = 2;
  sp->interval = 0.1;
  ty = lua_getfield(L, 2, "progress_interval");
  if (ty == LUA_TNUMBER && lua_tonumber(L, -1) >= 0)
    sp->interval = lua_tonumber(L, -1);
  else if (ty != LUA_TNIL)
    luaL_error(L, "snapshot: field 'progress_interval': expected seconds >= 0");
  lua_pop(L, 1);
}

static int target_snapshot(lua_State *L) {
  struct ltarget *lt = check_target(L, 1);
  struct snap_progress prog;
  lua_settop(L, 2);
  snap_options(L, &prog);
  lua_newtable(L);
  int al = lua_gettop(L); /* accounts */
  lua_newtable(L);
  int ix = lua_gettop(L); /* lower(name) -> account */
  lua_newtable(L);
  int gl = lua_gettop(L); /* groups */
  struct us_target_op op = {0};
  op.kind = US_TOP_SNAPSHOT;
  struct lbatch *lb = NULL;
  unsigned long before = us_target_requests(lt->t);
  double t0 = us_time_monotonic();
  if (lua_type(L, 2) == LUA_TTABLE && lua_getfield(L, 2, "started") != LUA_TNIL) {
    lb = luaL_checkudata(L, -1, STARTED_MT); /* t:snapshot_start()'s read */
    if (lb->lt != lt || !lb->b)
      return luaL_error(L, "snapshot: field 'started': not an unused read of this target");
    before = lb->before;
    t0 = lb->t0;
    lt->busy++;
  } else {
    if (lua_type(L, 2) == LUA_TTABLE)
      lua_pop(L, 1);
    lb = new_batch(L, lt);
    lt->busy++;
    submit(L, lb, &op);
  }
  struct us_target_event *ev;
  int ret = 0, cb_ok = 1, partial = 0;
  while (cb_ok && (ev = next_event(lt, lb))) {
    if (ev->type == US_TEV_ACCOUNTS) {
      for (size_t i = 0; i < ev->naccounts; i++) {
        snap_account(L, ix, al, &ev->accounts[i]);
        fill_account(L, &ev->accounts[i]); /* the listing's record wins */
        lua_pop(L, 1);
      }
      prog.accounts += ev->naccounts;
      cb_ok = snap_progress_call(L, &prog, prog.accounts, "accounts", 0);
    } else if (ev->type == US_TEV_MEMBERS) {
      for (size_t i = 0; i < ev->naccounts; i++) {
        snap_account(L, ix, al, &ev->accounts[i]);
        lua_getfield(L, -1, "groups");
        lua_pushstring(L, ev->group);
        lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
        lua_pop(L, 2);
      }
      prog.memberships += ev->naccounts;
      cb_ok = snap_progress_call(L, &prog, prog.memberships, "memberships", 0);
    } else if (ev->type == US_TEV_GROUPS) {
      for (size_t i = 0; i < ev->nnames; i++) {
        lua_pushstring(L, ev->names[i]);
        lua_rawseti(L, gl, (lua_Integer)luaL_len(L, gl) + 1);
      }
    } else if (ev->type == US_TEV_DONE) {
      ret = ev->ok ? 0 : push_fail(L, lt, ev);
      if (ev->ok)
        ret = -1;
      partial = ev->partial;
      break;
    }
  }
  lt->busy--;
  batch_release(lb);
  if (ret > 0)
    return ret;
  if (!cb_ok)
    return callback_failed(L, lt, "progress");
  if (ret < 0 && (!snap_progress_call(L, &prog, prog.accounts, "accounts", 1) ||
                  !snap_progress_call(L, &prog, prog.memberships, "memberships", 1)))
    return callback_failed(L, lt, "progress");
  if (ret == 0) {
    return push_error(L, lt, "target: the snapshot ended without a result", "EHTTP", 0);
  }

  lua_createtable(L, 0, 5);
  lua_pushvalue(L, al);
  lua_setfield(L, -2, "accounts");
  lua_pushvalue(L, gl);
  lua_setfield(L, -2, "groups");
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "complete");
  if (partial) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "groups_partial");
  }
  lua_pushinteger(L, (lua_Integer)(us_target_requests(lt->t) - before));
  lua_setfield(L, -2, "requests");
  lua_pushnumber(L, us_time_monotonic() - t0);
  lua_setfield(L, -2, "time");
  return 1;
}

/* t:snapshot_start() -> a read in flight, for t:snapshot{ started = it }.
** A Batch under its own metatable, so nothing else takes it. */
static int target_snapshot_start(lua_State *L) {
  struct ltarget *lt = check_target(L, 1);
  lua_settop(L, 1);
  struct us_target_op op = {0};
  op.kind = US_TOP_SNAPSHOT;
  struct lbatch *lb = new_batch(L, lt);
  luaL_setmetatable(L, STARTED_MT);
  lb->before = us_target_requests(lt->t);
  lb->t0 = us_time_monotonic();
  submit(L, lb, &op);
  return 1;
}

/* ---------- check ---------- */

static int target_check(lua_State *L) {
  struct ltarget *lt = check_target(L, 1);
  struct us_target_op op = {0};
  op.kind = US_TOP_CHECK;
  struct lbatch *lb = new_batch(L, lt);
  struct us_target_event *ev = run_done(L, lt, lb, &op);
  lua_createtable(L, 0, 8);
  lua_pushstring(L, us_target_type(lt->t));
  lua_setfield(L, -2, "type");
  if (ev) {
    lua_pushboolean(L, ev->reachable);
    lua_setfield(L, -2, "reachable");
    set_str(L, "product", ev->product);
    set_str(L, "version", ev->version);
    set_str(L, "user", ev->whoami);
    if (ev->admin >= 0) {
      lua_pushboolean(L, ev->admin);
      lua_setfield(L, -2, "admin");
    }
    set_str(L, "detail", ev->detail);
    set_str(L, "code", ev->code);
  }
  batch_release(lb);
  return 1;
}

/* ---------- apply ---------- */

/* The request each kind of op makes (0: none, link; add_member goes out in
** bulk). Their order is not here: the plan order is usersync.targets.ORDER,
** which apply reads. */
static const struct {
  const char *kind;
  enum us_top top;
} kinds[] = {
    {"create_group", US_TOP_CREATE_GROUP},
    {"create_user", US_TOP_CREATE_USER},
    {"link", 0},
    {"update_user", US_TOP_UPDATE_USER},
    {"rename_user", US_TOP_RENAME_USER},
    {"reactivate_user", US_TOP_REACTIVATE_USER},
    {"add_member", US_TOP_ADD_MEMBERS},
    {"remove_member", US_TOP_REMOVE_MEMBER},
    {"handover_lead", US_TOP_HANDOVER_LEAD},
    {"deactivate_user", US_TOP_DEACTIVATE_USER},
    {"delete_user", US_TOP_DELETE_USER},
    {NULL, 0},
};

/* Pushes usersync.targets.RANK (kind -> position in plan order). */
static void push_ranks(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "usersync.targets");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "RANK");
  lua_remove(L, -2);
  if (!lua_istable(L, -1))
    luaL_error(L, "apply: usersync.targets.RANK is not a table");
}

/* The op's kind as an index into kinds[]; *rank its plan position (1..)
** from the RANK table at index ranks. An unknown kind raises. */
static int kind_of(lua_State *L, int op, lua_Integer i, int ranks, int *rank) {
  lua_getfield(L, op, "kind");
  const char *k = lua_tostring(L, -1);
  int r = k ? (lua_getfield(L, ranks, k), (int)lua_tointeger(L, -1)) : 0;
  for (int x = 0; k && r > 0 && kinds[x].kind; x++)
    if (!strcmp(k, kinds[x].kind)) {
      lua_pop(L, 2);
      *rank = r;
      return x;
    }
  return luaL_error(L, "apply: op %d has an unknown kind '%s'", (int)i, k ? k : "?");
}

/* Field k of the table at t as a string (the value stays on the stack
** until the caller's settop). */
static const char *field(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  return lua_tostring(L, -1);
}

/* Submits op i (table at index op) as its own job. */
static void submit_op(lua_State *L, struct lbatch *lb, int op, lua_Integer i, int x) {
  int top = lua_gettop(L);
  struct us_target_op o = {0};
  o.tag = (void *)(uintptr_t)i;
  o.kind = kinds[x].top;
  o.id = field(L, op, "id"); /* the account's service id (SCIM), when the plan has it */
  switch (o.kind) {
  case US_TOP_CREATE_GROUP:
    o.group = field(L, op, "group");
    break;
  case US_TOP_CREATE_USER:
    o.name = field(L, op, "name");
    o.display_name = field(L, op, "display_name");
    o.email = field(L, op, "email");
    o.password = field(L, op, "password");
    o.external_id = field(L, op, "okta_id"); /* SCIM: the user's externalId */
    break;
  case US_TOP_UPDATE_USER:
    o.name = field(L, op, "name");
    if (lua_getfield(L, op, "changes") == LUA_TTABLE) {
      int ch = lua_gettop(L);
      if (lua_getfield(L, ch, "display_name") == LUA_TTABLE)
        o.display_name = field(L, lua_gettop(L), "to");
      if (lua_getfield(L, ch, "email") == LUA_TTABLE)
        o.email = field(L, lua_gettop(L), "to");
    }
    break;
  case US_TOP_RENAME_USER:
    o.name = field(L, op, "from");
    o.to = field(L, op, "to");
    break;
  case US_TOP_REMOVE_MEMBER:
    o.name = field(L, op, "name");
    o.group = field(L, op, "group");
    break;
  case US_TOP_HANDOVER_LEAD:
    o.name = field(L, op, "name");
    o.to = field(L, op, "to_project_lead");
    o.to2 = field(L, op, "to_component_lead");
    if (lua_getfield(L, op, "projects") == LUA_TTABLE)
      o.list = str_list(L, lua_gettop(L), &o.nlist);
    if (lua_getfield(L, op, "components") == LUA_TTABLE)
      o.list2 = str_list(L, lua_gettop(L), &o.nlist2);
    break;
  default: /* reactivate_user, deactivate_user, delete_user */
    o.name = field(L, op, "name");
    break;
  }
  submit(L, lb, &o);
  lua_settop(L, top);
}

/* Submits the add_member ops listed in idx (a list of op indexes into ops),
** one bulk job per group. */
static void submit_adds(lua_State *L, struct lbatch *lb, int ops, int idx) {
  int top = lua_gettop(L);
  lua_newtable(L); /* group -> { indexes } */
  int by = lua_gettop(L);
  lua_Integer n = luaL_len(L, idx);
  for (lua_Integer k = 1; k <= n; k++) {
    lua_rawgeti(L, idx, k);
    lua_Integer i = lua_tointeger(L, -1);
    lua_rawgeti(L, ops, i);
    const char *g = field(L, lua_gettop(L), "group");
    if (!g)
      luaL_error(L, "apply: add_member op %d has no group", (int)i);
    if (lua_getfield(L, by, g) != LUA_TTABLE) {
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushvalue(L, -1);
      lua_setfield(L, by, g);
    }
    lua_pushinteger(L, i);
    lua_rawseti(L, -2, luaL_len(L, -2) + 1);
    lua_settop(L, by);
  }
  lua_pushnil(L);
  while (lua_next(L, by)) { /* [group, list] */
    int list = lua_gettop(L);
    size_t m = (size_t)luaL_len(L, list);
    const char **names = lua_newuserdatauv(L, m * sizeof *names, 0);
    void **tags = lua_newuserdatauv(L, m * sizeof *tags, 0);
    for (size_t j = 0; j < m; j++) {
      lua_rawgeti(L, list, (lua_Integer)j + 1);
      lua_Integer i = lua_tointeger(L, -1);
      lua_rawgeti(L, ops, i);
      if (lua_getfield(L, -1, "name") != LUA_TSTRING)
        luaL_error(L, "apply: add_member op %d has no name", (int)i);
      /* The op table (held by `ops`) keeps the string alive until
      ** us_target_submit copies it, so nothing stays on the stack: a group
      ** of any size uses three slots. */
      names[j] = lua_tostring(L, -1);
      tags[j] = (void *)(uintptr_t)i;
      lua_pop(L, 3);
    }
    struct us_target_op o = {0};
    o.kind = US_TOP_ADD_MEMBERS;
    o.group = lua_tostring(L, list - 1);
    o.list = names;
    o.nlist = m;
    o.tags = tags;
    submit(L, lb, &o);
    lua_settop(L, list - 1);
  }
  lua_settop(L, top);
}

/* Reports one result: callback(op, true, note) / (op, nil, msg, code), or
** results[i]. Returns 0 when the callback raised (message on the stack). */
static int report(lua_State *L, const struct ltarget *lt, int ops, int cb, int results,
                  lua_Integer i, int ok, const char *note, const char *msg, const char *code,
                  long status) {
  if (cb) {
    lua_pushvalue(L, cb);
    lua_rawgeti(L, ops, i);
    if (ok) {
      lua_pushboolean(L, 1);
      if (note)
        lua_pushstring(L, note);
      else
        lua_pushnil(L);
      return pcall_cb(L, 3);
    }
    push_error(L, lt, msg ? msg : "failed", code ? code : "EHTTP", status);
    return pcall_cb(L, 5);
  }
  push_result(L, lt, ok, note, msg, code, status);
  lua_rawseti(L, results, i);
  return 1;
}

/* Pushes buckets = { [rank] = { op indexes } } of the ops table at `ops`
** (one bucket without phases), checking every op's kind. Returns the
** highest bucket. */
static int bucket_ops(lua_State *L, int ops, int ranks, int phases) {
  lua_Integer n = luaL_len(L, ops);
  lua_newtable(L);
  int buckets = lua_gettop(L), nb = 1;
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_rawgeti(L, ops, i) != LUA_TTABLE)
      return luaL_error(L, "apply: op %d is not a table", (int)i);
    int r;
    kind_of(L, lua_gettop(L), i, ranks, &r);
    r = phases ? r : 1;
    nb = r > nb ? r : nb;
    lua_pop(L, 1);
    if (lua_rawgeti(L, buckets, r) != LUA_TTABLE) {
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushvalue(L, -1);
      lua_rawseti(L, buckets, r);
    }
    lua_pushinteger(L, i);
    lua_rawseti(L, -2, luaL_len(L, -2) + 1);
    lua_pop(L, 1);
  }
  return nb;
}

/* What one apply call works with: stack indexes and the counts. */
struct apply {
  struct ltarget *lt;
  int ops, cb, results, ranks;
  lua_Integer nok, nfail;
};

/* Sends the ops listed in the table at idx as one batch (links need no
** request; add_member ops go out grouped) and reports each outcome. Returns
** 1, or 0 when a callback raised (its error on the stack top). */
static int apply_bucket(lua_State *L, struct apply *a, int idx) {
  int top = lua_gettop(L);
  struct lbatch *lb = new_batch(L, a->lt);
  a->lt->busy++;
  lua_newtable(L);
  int adds = lua_gettop(L), ok = 1;
  lua_Integer m = luaL_len(L, idx);
  for (lua_Integer k = 1; k <= m && ok; k++) {
    lua_rawgeti(L, idx, k);
    lua_Integer i = lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_rawgeti(L, a->ops, i);
    int r, x = kind_of(L, lua_gettop(L), i, a->ranks, &r);
    if (kinds[x].top == 0) { /* link */
      lua_pop(L, 1);
      ok = report(L, a->lt, a->ops, a->cb, a->results, i, 1, "no request needed", NULL, NULL, 0);
      a->nok += ok;
    } else if (kinds[x].top == US_TOP_ADD_MEMBERS) {
      lua_pop(L, 1);
      lua_pushinteger(L, i);
      lua_rawseti(L, adds, luaL_len(L, adds) + 1);
    } else {
      submit_op(L, lb, lua_gettop(L), i, x);
      lua_pop(L, 1);
    }
  }
  if (ok && luaL_len(L, adds) > 0)
    submit_adds(L, lb, a->ops, adds);
  struct us_target_event *ev;
  while (ok && (ev = next_event(a->lt, lb))) {
    if (ev->type != US_TEV_DONE)
      continue;
    lua_Integer i = (lua_Integer)(uintptr_t)ev->tag;
    *(ev->ok ? &a->nok : &a->nfail) += 1;
    ok = report(L, a->lt, a->ops, a->cb, a->results, i, ev->ok, ev->note, ev->message, ev->code,
                ev->status);
  }
  a->lt->busy--;
  batch_release(lb);
  if (ok)
    lua_settop(L, top);
  return ok;
}

static int target_apply(lua_State *L) {
  struct apply a = {.lt = check_target(L, 1), .ops = 2};
  luaL_checktype(L, 2, LUA_TTABLE);
  a.cb = lua_isnoneornil(L, 3) ? 0 : 3;
  if (a.cb)
    luaL_checktype(L, 3, LUA_TFUNCTION);
  int phases = 1;
  if (lua_type(L, 4) == LUA_TTABLE) {
    lua_getfield(L, 4, "phases");
    phases = lua_isnil(L, -1) || lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  lua_settop(L, 4);
  push_ranks(L);
  a.ranks = lua_gettop(L);
  int nb = bucket_ops(L, a.ops, a.ranks, phases);
  int buckets = lua_gettop(L);
  lua_newtable(L);
  a.results = lua_gettop(L);
  for (int b = 1; b <= nb; b++) {
    if (lua_rawgeti(L, buckets, b) == LUA_TTABLE && !apply_bucket(L, &a, lua_gettop(L)))
      return callback_failed(L, a.lt, "apply");
    lua_pop(L, 1);
  }
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, a.nok);
  lua_setfield(L, -2, "ok");
  lua_pushinteger(L, a.nfail);
  lua_setfield(L, -2, "failed");
  if (!a.cb) {
    lua_pushvalue(L, a.results);
    lua_setfield(L, -2, "results");
  }
  return 1;
}

/* ---------- apply_start: one batch of ops in flight, polled ---------- */

/* A Pending holds a batch whose ops are in flight while the caller does
** other work (polls other targets' batches). User values: 1 the Target,
** 2 the ops table, 3 the indexes of ops done without a request (links),
** reported at the first poll. */
struct lpending {
  struct lbatch lb;
  int started; /* counted in the target's busy */
  int links;   /* links reported already */
};

static struct lpending *check_pending(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, PENDING_MT);
}

static void pending_release(struct lpending *lp) {
  batch_release(&lp->lb);
  if (lp->started && lp->lb.lt)
    lp->lb.lt->busy--;
  lp->started = 0;
}

static int pending_close(lua_State *L) {
  pending_release(check_pending(L, 1));
  return 0;
}

static int target_apply_start(lua_State *L) {
  struct ltarget *lt = check_target(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  push_ranks(L); /* 3 */
  lua_Integer n = luaL_len(L, 2);
  for (lua_Integer i = 1; i <= n; i++) { /* validates before anything is sent */
    if (lua_rawgeti(L, 2, i) != LUA_TTABLE)
      return luaL_error(L, "apply_start: op %d is not a table", (int)i);
    int r;
    kind_of(L, lua_gettop(L), i, 3, &r);
    lua_pop(L, 1);
  }
  lua_remove(L, 3);
  struct lpending *lp = lua_newuserdatauv(L, sizeof *lp, 3); /* 3 */
  memset(lp, 0, sizeof *lp);
  luaL_setmetatable(L, PENDING_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 3, 1);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 3, 2);
  lp->lb.lt = lt;
  lp->lb.b = us_target_batch_new(lt->t);
  if (!lp->lb.b)
    return luaL_error(L, "target: out of memory");
  lt->busy++;
  lp->started = 1;
  lua_newtable(L); /* 4: links */
  lua_pushvalue(L, 4);
  lua_setiuservalue(L, 3, 3);
  lua_newtable(L); /* 5: add_member indexes */
  push_ranks(L);   /* 6 */
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    int r, x = kind_of(L, lua_gettop(L), i, 6, &r);
    if (kinds[x].top == 0) { /* link */
      lua_pushinteger(L, i);
      lua_rawseti(L, 4, luaL_len(L, 4) + 1);
    } else if (kinds[x].top == US_TOP_ADD_MEMBERS) {
      lua_pushinteger(L, i);
      lua_rawseti(L, 5, luaL_len(L, 5) + 1);
    } else {
      submit_op(L, &lp->lb, lua_gettop(L), i, x);
    }
    lua_pop(L, 1);
  }
  if (luaL_len(L, 5) > 0)
    submit_adds(L, &lp->lb, 2, 5);
  lua_settop(L, 3);
  return 1;
}

/* Reports the ready events of the batch; returns 0 when the callback
** raised (message on the stack). Stack: ops at `ops`, callback at `cb`. */
static int pending_deliver(lua_State *L, struct lpending *lp, int ops, int cb, int *n) {
  struct us_target_event *ev;
  for (;;) {
    us_target_event_free(lp->lb.cur);
    lp->lb.cur = NULL;
    if (!(ev = lp->lb.cur = us_target_batch_next(lp->lb.b)))
      return 1;
    if (ev->type != US_TEV_DONE)
      continue;
    (*n)++;
    if (!report(L, lp->lb.lt, ops, cb, 0, (lua_Integer)(uintptr_t)ev->tag, ev->ok, ev->note,
                ev->message, ev->code, ev->status))
      return 0;
  }
}

static int pending_poll(lua_State *L) {
  struct lpending *lp = check_pending(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  double wait = luaL_optnumber(L, 3, 0);
  lua_settop(L, 3);
  if (!lp->lb.b) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_getiuservalue(L, 1, 2); /* 4: ops */
  int delivered = 0;
  if (!lp->links) {
    lp->links = 1;
    lua_getiuservalue(L, 1, 3);
    lua_Integer m = luaL_len(L, -1);
    for (lua_Integer k = 1; k <= m; k++) {
      lua_rawgeti(L, 5, k);
      lua_Integer i = lua_tointeger(L, -1);
      lua_pop(L, 1);
      delivered++;
      if (!report(L, lp->lb.lt, 4, 2, 0, i, 1, "no request needed", NULL, NULL, 0)) {
        struct ltarget *lt = lp->lb.lt;
        pending_release(lp);
        return callback_failed(L, lt, "apply");
      }
    }
    lua_settop(L, 4);
  }
  struct ltarget *lt = lp->lb.lt;
  if (!pending_deliver(L, lp, 4, 2, &delivered)) {
    pending_release(lp);
    return callback_failed(L, lt, "apply");
  }
  if (!delivered && wait > 0 && us_target_batch_pending(lp->lb.b)) {
    us_target_drive(lt->t, (long)(wait * 1000));
    if (!pending_deliver(L, lp, 4, 2, &delivered)) {
      pending_release(lp);
      return callback_failed(L, lt, "apply");
    }
  }
  if (!us_target_batch_pending(lp->lb.b)) {
    pending_release(lp);
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* ---------- module ---------- */

static const luaL_Reg target_methods[] = {
    {"type", target_type},
    {"requests", target_requests},
    {"capabilities", target_capabilities},
    {"accounts", target_accounts},
    {"groups", target_groups},
    {"members", target_members},
    {"get", target_get},
    {"create_user", target_create_user},
    {"update_user", target_update_user},
    {"rename_user", target_rename_user},
    {"deactivate_user", target_deactivate_user},
    {"reactivate_user", target_reactivate_user},
    {"delete_user", target_delete_user},
    {"create_group", target_create_group},
    {"delete_group", target_delete_group},
    {"add_member", target_add_member},
    {"add_members", target_add_members},
    {"add_to_groups", target_add_to_groups},
    {"remove_member", target_remove_member},
    {"group_exists", target_group_exists},
    {"leads", target_leads},
    {"handover_lead", target_handover_lead},
    {"snapshot", target_snapshot},
    {"snapshot_start", target_snapshot_start},
    {"apply", target_apply},
    {"apply_start", target_apply_start},
    {"check", target_check},
    {"close", target_close},
    {NULL, NULL},
};

static const luaL_Reg target_meta[] = {
    {"__gc", target_gc}, {"__close", target_close}, {"__tostring", target_tostring}, {NULL, NULL}};

static const luaL_Reg batch_meta[] = {
    {"__gc", batch_close}, {"__close", batch_close}, {NULL, NULL}};

static int started_close(lua_State *L) {
  batch_release(luaL_checkudata(L, 1, STARTED_MT));
  return 0;
}

static const luaL_Reg started_methods[] = {{"close", started_close}, {NULL, NULL}};
static const luaL_Reg started_meta[] = {
    {"__gc", started_close}, {"__close", started_close}, {NULL, NULL}};

static const luaL_Reg pending_methods[] = {
    {"poll", pending_poll}, {"close", pending_close}, {NULL, NULL}};
static const luaL_Reg pending_meta[] = {
    {"__gc", pending_close}, {"__close", pending_close}, {NULL, NULL}};

static const luaL_Reg target_funcs[] = {
    {"new", target_new}, {"products", target_products}, {NULL, NULL}};

int luaopen_usersync_target(lua_State *L) {
  luaL_newmetatable(L, TARGET_MT);
  luaL_setfuncs(L, target_meta, 0);
  luaL_newlib(L, target_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newmetatable(L, BATCH_MT);
  luaL_setfuncs(L, batch_meta, 0);
  lua_pop(L, 1);
  luaL_newmetatable(L, STARTED_MT);
  luaL_setfuncs(L, started_meta, 0);
  luaL_newlib(L, started_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newmetatable(L, PENDING_MT);
  luaL_setfuncs(L, pending_meta, 0);
  luaL_newlib(L, pending_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, target_funcs);
  return 1;
}
