/*
** bind_target.c: `require "usersync.target_raw"`, the raw primitives of the
** Jira, Confluence and Bitbucket Data Center clients
** (include/usersync/target.h) for the built-in Lua module usersync.target
** (runtime/lua/usersync/target.lua), which builds every call (writes,
** look-ups, listings, the snapshot, apply) on them. Argument checks, and
** pushing and pulling values. The only target file that calls lua_*.
**
** Lua API (times in seconds)
**
**   local raw = require "usersync.target_raw"
**   raw.new(http_client, config) -> Target (usersync.target documents the
**     config; misuse and bad config raise)
**   raw.products() -> { { type = "jira", caps = <as t:capabilities()> }, ... }:
**     every product this build knows (usersync.targets, the registry, reads it)
**   raw.methods: the Target methods table; usersync.target adds its own
**
**   t:type() -> "jira" ...;   t:requests() -> requests made so far
**   t:capabilities() -> { deactivate=, reactivate=, rename=, leads=, bulk_add= }
**   t:close()  (also __gc and __close; raises while a batch holds it)
**
**   t:batch([slim]) -> Batch: jobs that run concurrently on the shared http
**     engine (also while another batch or client drives it). slim: members
**     pages carry the names only (b:record gives a whole record).
**   b:submit{ kind = "accounts" | "groups" | "members" | "get" | "create_user" |
**             "update_user" | "rename_user" | "deactivate_user" |
**             "reactivate_user" | "delete_user" | "create_group" |
**             "delete_group" | "add_members" | "add_to_groups" |
**             "remove_member" | "leads" | "handover_lead" | "snapshot" |
**             "check" | "find_group",
**             tag = n (integer, in every event of the job), name =, to =,
**             to2 =, group =, display_name =, email =, password =, notify =,
**             list = { strings }, list2 = { strings },
**             tags = { one integer per list item } }
**     The fields mean what struct us_target_op says; misuse raises.
**   b:next([wait]) -> the next event:
**     "accounts", tag, { {name=, key=, id=, display_name=, email=, active=}, ... }
**     "groups", tag, { names }
**     "members", tag, { accounts as above } (slim: { names }), group
**     "lead", tag, name, project key or component id, is_component
**     "done", tag, ok, note (ok) or message, code (nil when ok), status,
**             item (per-item jobs: the name or group), partial, record
**             (get: the account { name=, key=, display_name=, email=,
**             active=, groups = { names } (nil: the product did not tell
**             them), raw = the decoded body }; check: { reachable=,
**             product=, version=, user=, admin= (nil: unknown), detail=,
**             code= }; otherwise nil)
**     or nil. Without wait it drives the engine until an event is ready (nil:
**     nothing left); with wait it drives it at most once for that long (0:
**     not at all), so nil may mean "not yet": b:pending() tells.
**   b:record(i) -> the i-th account of the last event taken, or nil
**   b:feed(set) the accounts of the batch's accounts and members pages go
**     into set (a usersync.accountset) as the pages arrive (also while
**     another batch or client drives the engine: a page waiting to be
**     taken holds no records), and the events b:next gives carry their
**     count instead of a page: "accounts", tag, n and "members", tag, n,
**     group. An accounts record is added, or merged into the account of
**     its name (the listing's fields win); each member is added to group
**     (the member's whole record first when it is not in the set yet). No
**     Lua table is made per account. Once per batch.
**   b:pending() -> jobs not finished plus events not taken
**   b:running() -> jobs not finished (0: every outcome known, events may wait)
**   b:hold()  the target cannot be closed until the batch is (a call that
**     runs callbacks holds it)
**   b:close()  cancels what is left; idempotent; also __gc and __close
**
**   Error codes: EAUTH EFORBIDDEN ENOTFOUND ECONFLICT ESEATS ELEAD EINHERITED
**   EINVALID ERATELIMIT EUNSUPPORTED ERESPONSE ETRUNCATED ETIMEOUT_TASK
**   ETASK_FAILED EHTTP and the http codes (ECONNREFUSED, ETIMEDOUT, ETLS,
**   ...); meanings in include/usersync/target.h.
**
** Ownership: a Target userdata owns its us_target and keeps its http
** Client alive (user value 1). A Batch userdata owns its us_target_batch
** and the event being pushed (user value: the Target), so a Lua error frees
** everything; closing the target frees its batches with it.
*/
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "usersync/accountset.h"
#include "usersync/modules.h"
#include "usersync/target.h"
#include "usersync/timeutil.h"

#define TARGET_MT "usersync.target.Target"
#define BATCH_MT "usersync.target.Batch"

struct ltarget {
  us_target *t; /* NULL once closed */
  int busy;     /* calls running on it (callbacks may re-enter) */
};

struct lbatch {
  struct ltarget *lt; /* kept alive by the batch's user value */
  us_target_batch *b;
  struct us_target_event *cur; /* event being handled */
  int hold;                    /* counted in the target's busy (b:hold()) */
  int slim;                    /* members pages as names (t:batch(true)) */
  us_accountset *set;          /* b:feed's set (a reference of its own), or NULL */
  int set_oom;                 /* the sink ran out of memory */
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
  if (lb->hold)
    lb->lt->busy--;
  lb->hold = 0;
  us_accountset_free(lb->set); /* after the batch: nothing feeds it any more */
  lb->set = NULL;
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

/* ---------- raw batches: jobs submitted, events pulled ---------- */

/* A C array of the strings of the list at idx, in a scratch userdata
** pushed on the stack (freed by the GC). [-0, +1] */
static const char **str_list(lua_State *L, int idx, size_t *n) {
  luaL_checktype(L, idx, LUA_TTABLE);
  *n = (size_t)luaL_len(L, idx);
  const char **v = lua_newuserdatauv(L, (*n ? *n : 1) * sizeof *v, 0);
  for (size_t i = 0; i < *n; i++) {
    lua_rawgeti(L, idx, (lua_Integer)i + 1);
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "list item %d is not a string", (int)i + 1);
    v[i] = lua_tostring(L, -1);
    lua_pop(L, 1); /* still referenced by the list */
  }
  return v;
}



/* Operation names in enum us_top order (US_TOP_LIST_ACCOUNTS is 1). */
static const char *const op_kinds[] = {
    "accounts",     "groups",          "members",         "get",           "create_user",
    "update_user",  "rename_user",     "deactivate_user", "reactivate_user", "delete_user",
    "create_group", "delete_group",    "add_members",     "add_to_groups", "remove_member",
    "leads",        "handover_lead",   "snapshot",        "check",         "find_group",
    NULL};

static struct lbatch *check_batch(lua_State *L) {
  struct lbatch *lb = luaL_checkudata(L, 1, BATCH_MT);
  if (!lb->b || !lb->lt->t)
    luaL_error(L, "attempt to use a closed batch");
  return lb;
}

/* t:batch([slim]) -> Batch */
static int target_batch(lua_State *L) {
  struct ltarget *lt = check_target(L, 1);
  int slim = lua_toboolean(L, 2);
  new_batch(L, lt)->slim = slim;
  return 1;
}

/* b:hold(): the target cannot be closed until the batch is. */
static int batch_hold(lua_State *L) {
  struct lbatch *lb = check_batch(L);
  if (!lb->hold)
    lb->lt->busy++;
  lb->hold = 1;
  return 0;
}

/* Field k of the op table at index 2: a string (or number), or NULL. */
static const char *op_str(lua_State *L, const char *k) {
  int ty = lua_getfield(L, 2, k);
  if (ty != LUA_TNIL && ty != LUA_TSTRING && ty != LUA_TNUMBER)
    luaL_error(L, "op field '%s': expected a string", k);
  const char *v = lua_tostring(L, -1);
  lua_pop(L, 1); /* the string stays alive in the op table */
  return v;
}

/* The list of integers at field "tags" of the op table (n items), in a
** scratch userdata pushed on the stack; NULL (nothing pushed) when absent. */
static void **op_tags(lua_State *L, size_t n) {
  if (lua_getfield(L, 2, "tags") == LUA_TNIL) {
    lua_pop(L, 1);
    return NULL;
  }
  int idx = lua_gettop(L);
  if (!lua_istable(L, idx) || (size_t)luaL_len(L, idx) != n)
    luaL_error(L, "op field 'tags': expected one integer per list item");
  void **v = lua_newuserdatauv(L, (n ? n : 1) * sizeof *v, 0);
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, idx, (lua_Integer)i + 1);
    v[i] = (void *)(uintptr_t)luaL_checkinteger(L, -1);
    lua_pop(L, 1);
  }
  return v;
}

/* b:submit{ kind =, tag =, name =, id =, to =, to2 =, group =, display_name =,
** email =, password =, external_id =, notify =, list =, list2 =, tags = }
** (id: the account's service id, SCIM; external_id: a create's externalId) */
static int batch_submit(lua_State *L) {
  struct lbatch *lb = check_batch(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  struct us_target_op op = {0};
  lua_getfield(L, 2, "kind");
  op.kind = (enum us_top)(luaL_checkoption(L, -1, NULL, op_kinds) + 1);
  lua_getfield(L, 2, "tag");
  op.tag = (void *)(uintptr_t)luaL_optinteger(L, -1, 0);
  lua_getfield(L, 2, "notify");
  op.notify = lua_toboolean(L, -1);
  lua_settop(L, 2);

  op.name = op_str(L, "name");
  op.to = op_str(L, "to");
  op.to2 = op_str(L, "to2");
  op.group = op_str(L, "group");
  op.display_name = op_str(L, "display_name");
  op.email = op_str(L, "email");
  op.password = op_str(L, "password");
  op.id = op_str(L, "id");
  op.external_id = op_str(L, "external_id");
  if (lua_getfield(L, 2, "list") != LUA_TNIL)
    op.list = str_list(L, lua_gettop(L), &op.nlist);
  if (lua_getfield(L, 2, "list2") != LUA_TNIL)
    op.list2 = str_list(L, lua_gettop(L), &op.nlist2);
  op.tags = (void *const *)op_tags(L, op.nlist);
  submit(L, lb, &op); /* copies what it keeps */
  return 0;
}

/* Pushes the record a get or a check ends with: the account (its groups
** unless the product did not tell them: unknown, never "no groups"; raw =
** the decoded body), or the check's fields; nil for any other DONE. */
static void push_record(lua_State *L, const struct us_target_event *ev) {
  if (ev->kind == US_TOP_GET_ACCOUNT && ev->ok && ev->naccounts) {
    push_account(L, &ev->accounts[0]);
    if (!ev->partial) {
      push_names(L, ev->names, ev->nnames);
      lua_setfield(L, -2, "groups");
    }
    if (ev->raw && us_json_push_decoded(L, ev->raw, ev->raw_len))
      lua_setfield(L, -2, "raw");
  } else if (ev->kind == US_TOP_CHECK) {
    lua_createtable(L, 0, 8);
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
  } else {
    lua_pushnil(L);
  }
}

/* Pushes a DONE event's values after "done", tag: ok, note or message,
** code, status, item, partial, record. Returns their count. */
static int push_done(lua_State *L, const struct us_target_event *ev) {
  lua_pushboolean(L, ev->ok);
  if (ev->ok)
    lua_pushstring(L, ev->note);
  else
    lua_pushstring(L, ev->message ? ev->message : "failed");
  if (ev->ok)
    lua_pushnil(L);
  else
    lua_pushstring(L, ev->code ? ev->code : "EHTTP");
  lua_pushinteger(L, ev->status);
  lua_pushstring(L, ev->item);
  lua_pushboolean(L, ev->partial);
  push_record(L, ev);
  return 7;
}

/* Puts the accounts of an accounts or members event into set s (b:feed).
** 0, or -1 when out of memory. */
static int feed(us_accountset *s, const struct us_target_event *ev) {
  for (size_t i = 0; ev->accounts && i < ev->naccounts; i++) {
    const struct us_target_account *a = &ev->accounts[i];
    struct us_account_fields f = {a->name, a->key, a->id, a->display_name, a->email, a->active};
    long k = -1;
    if (ev->type == US_TEV_MEMBERS)
      k = us_accountset_find(s, a->name, strlen(a->name));
    if (k < 0)
      k = us_accountset_put(s, &f, NULL);
    if (k < 0 || (ev->type == US_TEV_MEMBERS && us_accountset_add_group(s, (size_t)k, ev->group, 0) < 0))
      return -1;
  }
  return 0;
}

/* Pushes the event's values: its type, tag and what it carries. */
static int push_event(lua_State *L, const struct us_target_event *ev, int slim, us_accountset *set) {
  static const char *const names[] = {NULL, "accounts", "groups", "members", "lead", "done"};
  lua_pushstring(L, names[ev->type]);
  lua_pushinteger(L, (lua_Integer)(uintptr_t)ev->tag);
  if (set && (ev->type == US_TEV_ACCOUNTS || ev->type == US_TEV_MEMBERS)) {
    if (feed(set, ev))
      return luaL_error(L, "target: out of memory");
    lua_pushinteger(L, (lua_Integer)ev->naccounts);
    if (ev->type == US_TEV_ACCOUNTS)
      return 3;
    lua_pushstring(L, ev->group);
    return 4;
  }
  switch (ev->type) {
  case US_TEV_DONE:
    return 2 + push_done(L, ev);
  case US_TEV_LEAD:
    lua_pushstring(L, ev->group);
    lua_pushstring(L, ev->item);
    lua_pushboolean(L, ev->is_component);
    return 5;
  case US_TEV_MEMBERS:
    if (slim) { /* the names: a page of a large snapshot makes no tables */
      lua_createtable(L, (int)ev->naccounts, 0);
      for (size_t i = 0; i < ev->naccounts; i++) {
        lua_pushstring(L, ev->accounts[i].name);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
      }
    } else {
      push_page(L, ev);
    }
    lua_pushstring(L, ev->group);
    return 4;
  default: /* accounts, groups */
    push_page(L, ev);
    return 3;
  }
}

/* b:next([wait]) -> type, tag, ... | nil. Without wait, drives the engine
** until an event is ready (nil: the batch has nothing left); with wait
** (seconds), drives it at most once for that long (0: not at all), and
** nil may also mean "not yet" (b:pending() tells). */
static int batch_next(lua_State *L) {
  struct lbatch *lb = check_batch(L);
  int has_wait = !lua_isnoneornil(L, 2);
  double wait = luaL_optnumber(L, 2, 0);
  us_target_event_free(lb->cur);
  lb->cur = NULL;
  if (lb->set_oom)
    return luaL_error(L, "target: out of memory");
  for (int driven = 0;; driven = 1) {
    if ((lb->cur = us_target_batch_next(lb->b)))
      return push_event(L, lb->cur, lb->slim, lb->set);
    if (!us_target_batch_pending(lb->b) || (has_wait && (driven || wait <= 0)))
      return 0;
    us_target_drive(lb->lt->t, has_wait ? (long)(wait * 1000) : 200);
  }
}

/* b:record(i) -> the i-th account of the event b:next() returned last
** (a slim members page's full record), or nil */
static int batch_record(lua_State *L) {
  struct lbatch *lb = check_batch(L);
  lua_Integer i = luaL_checkinteger(L, 2);
  if (!lb->cur || !lb->cur->accounts || i < 1 || (size_t)i > lb->cur->naccounts)
    return 0;
  push_account(L, &lb->cur->accounts[i - 1]);
  return 1;
}

/* The batch's sink (us_target_batch_sink): a page's records into the set
** as they arrive, whoever drives the engine; at the done event the set
** gives back the room it kept for growth. */
static void sink(void *ud, const struct us_target_event *ev) {
  struct lbatch *lb = ud;
  if (ev->type == US_TEV_DONE) { /* the read is over: the set is held as it is */
    us_accountset_shrink(lb->set);
    return;
  }
  if (feed(lb->set, ev))
    lb->set_oom = 1; /* raised by the next b:next */
}

/* b:feed(set): accounts and members events go into set (see the header). */
static int batch_feed(lua_State *L) {
  struct lbatch *lb = check_batch(L);
  us_accountset *set = us_accountset_check(L, 2);
  if (lb->set)
    return luaL_error(L, "target: the batch feeds a set already");
  lb->set = us_accountset_retain(set);
  us_target_batch_sink(lb->b, sink, lb);
  return 0;
}

/* b:pending() -> jobs not finished plus events not taken */
static int batch_pending(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)us_target_batch_pending(check_batch(L)->b));
  return 1;
}

/* b:running() -> jobs not finished (what b:pending() counts but the events
** not taken): 0 once every job's outcome is known, its events waiting */
static int batch_running(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)us_target_batch_running(check_batch(L)->b));
  return 1;
}

/* ---------- module ---------- */

static const luaL_Reg target_methods[] = {
    {"type", target_type},   {"requests", target_requests}, {"capabilities", target_capabilities},
    {"batch", target_batch}, {"close", target_close},       {NULL, NULL},
};

static const luaL_Reg target_meta[] = {
    {"__gc", target_gc}, {"__close", target_close}, {"__tostring", target_tostring}, {NULL, NULL}};

static const luaL_Reg batch_methods[] = {{"submit", batch_submit},   {"next", batch_next},
                                         {"pending", batch_pending}, {"running", batch_running},
                                         {"hold", batch_hold},
                                         {"record", batch_record},   {"feed", batch_feed},
                                         {"close", batch_close},     {NULL, NULL}};

static const luaL_Reg batch_meta[] = {
    {"__gc", batch_close}, {"__close", batch_close}, {NULL, NULL}};

static const luaL_Reg target_funcs[] = {
    {"new", target_new}, {"products", target_products}, {NULL, NULL}};

int luaopen_usersync_target_raw(lua_State *L) {
  us_lua_class(L, TARGET_MT, target_meta, target_methods);
  us_lua_class(L, BATCH_MT, batch_meta, batch_methods);
  luaL_newlib(L, target_funcs);
  luaL_getmetatable(L, TARGET_MT);
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "methods"); /* usersync.target adds its methods here */
  lua_pop(L, 1);
  return 1;
}
