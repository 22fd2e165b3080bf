/*
** bind_metrics.c: `usersync.metrics`, the process-wide Prometheus registry
** (runtime/metrics.c) for Lua.
**
**   local metrics = require "usersync.metrics"
**   metrics.describe("usersync_runs_total", "counter", "Sync runs by sync and outcome")
**   metrics.add("usersync_runs_total", { sync = "jira", outcome = "ok" })      -- n defaults to 1
**   metrics.set("usersync_last_success_timestamp_seconds", { sync = "jira" }, os.time())
**   metrics.observe("usersync_run_duration_seconds", { sync = "jira" }, 12.5)
**   io.write(metrics.render())
**   metrics.reset()                                                          -- tests only
**
** Every call raises on misuse: a name not matching ^usersync_[a-z0-9_]+$, a
** bad label name, a negative counter increment, a type clash with an
** existing family. Label values may be strings or numbers. A series beyond
** the per-family limit is silently dropped (and counted in
** usersync_metrics_dropped_total): add/set/observe then return false,
** otherwise true.
*/
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "usersync/metrics.h"
#include "usersync/modules.h"

#define MAX_LABEL_PAIRS 32

static int check_rc(lua_State *L, int rc, const char *name) {
  if (rc < 0)
    return luaL_error(L, "metrics: %s: %s", name, us_metrics_strerror(rc));
  lua_pushboolean(L, rc == US_METRICS_OK);
  return 1;
}

/* Collects the label table at idx into kv (key, value, ..., NULL). The
** strings stay anchored on the stack (pushed above the arguments), so kv is
** valid until the caller returns. Raises on non-string keys, bad values or
** too many labels. */
static void collect_labels(lua_State *L, int idx, const char *kv[2 * MAX_LABEL_PAIRS + 1]) {
  size_t n = 0;
  kv[0] = NULL;
  if (lua_isnoneornil(L, idx))
    return;
  luaL_checktype(L, idx, LUA_TTABLE);
  luaL_checkstack(L, 2 * MAX_LABEL_PAIRS + 4, "too many labels");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_error(L, "metrics: label names must be strings");
    int t = lua_type(L, -1);
    if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN)
      luaL_error(L, "metrics: label %s: value must be a string or number",
                 lua_tostring(L, -2));
    if (n / 2 == MAX_LABEL_PAIRS)
      luaL_error(L, "metrics: more than %d labels", MAX_LABEL_PAIRS);
    /* Leave key copy and value string on the stack; keep the key for lua_next. */
    lua_pushvalue(L, -2);                 /* key, value, keycopy */
    luaL_tolstring(L, -2, NULL);          /* key, value, keycopy, valuestr */
    lua_remove(L, -3);                    /* key, keycopy, valuestr */
    kv[n++] = lua_tostring(L, -2);
    kv[n++] = lua_tostring(L, -1);
    lua_pushvalue(L, -3);                 /* key, keycopy, valuestr, key */
    lua_remove(L, -4);                    /* keycopy, valuestr, key */
  }
  kv[n] = NULL;
}

static enum us_metric_type check_type(lua_State *L, int idx) {
  static const char *const names[] = {"counter", "gauge", "histogram", NULL};
  static const enum us_metric_type types[] = {US_METRIC_COUNTER, US_METRIC_GAUGE,
                                              US_METRIC_HISTOGRAM};
  return types[luaL_checkoption(L, idx, NULL, names)];
}

static int metrics_describe(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  enum us_metric_type type = check_type(L, 2);
  const char *help = luaL_optstring(L, 3, "");
  return check_rc(L, us_metrics_describe(name, type, help), name);
}

static int metrics_add(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_Number n = luaL_optnumber(L, 3, 1);
  lua_settop(L, 3);
  const char *kv[2 * MAX_LABEL_PAIRS + 1];
  collect_labels(L, 2, kv);
  return check_rc(L, us_metrics_add(name, kv, n), name);
}

static int metrics_set(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_Number v = luaL_checknumber(L, 3);
  lua_settop(L, 3);
  const char *kv[2 * MAX_LABEL_PAIRS + 1];
  collect_labels(L, 2, kv);
  return check_rc(L, us_metrics_set(name, kv, v), name);
}

static int metrics_observe(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_Number v = luaL_checknumber(L, 3);
  lua_settop(L, 3);
  const char *kv[2 * MAX_LABEL_PAIRS + 1];
  collect_labels(L, 2, kv);
  return check_rc(L, us_metrics_observe(name, kv, v), name);
}

/* A userdata owning a malloc'd buffer until it is pushed as a string, so a
** memory error in lua_pushlstring cannot leak it. */
struct owned_buf {
  char *p;
};
static int owned_buf_gc(lua_State *L) {
  struct owned_buf *b = lua_touserdata(L, 1);
  free(b->p);
  b->p = NULL;
  return 0;
}

static int metrics_render(lua_State *L) {
  struct owned_buf *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->p = NULL;
  lua_newtable(L);
  lua_pushcfunction(L, owned_buf_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  size_t len = 0;
  b->p = us_metrics_render(&len);
  if (!b->p)
    return luaL_error(L, "metrics: out of memory");
  lua_pushlstring(L, b->p, len);
  free(b->p);
  b->p = NULL;
  return 1;
}

static int metrics_reset(lua_State *L) {
  us_metrics_reset();
  return 0;
}

/* metrics.series_limit(n) -> previous limit (tests). */
static int metrics_series_limit(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0, 1, "must be >= 0");
  lua_pushinteger(L, (lua_Integer)us_metrics_series_limit((size_t)n));
  return 1;
}

static const luaL_Reg metrics_funcs[] = {
    {"describe", metrics_describe},
    {"add", metrics_add},
    {"set", metrics_set},
    {"observe", metrics_observe},
    {"render", metrics_render},
    {"reset", metrics_reset},
    {"series_limit", metrics_series_limit},
    {NULL, NULL},
};

int luaopen_usersync_metrics(lua_State *L) {
  luaL_newlib(L, metrics_funcs);
  return 1;
}
