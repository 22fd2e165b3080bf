/*
** modules.h: every C module scripts can `require`, installed from one table
** (runtime/bind_modules.c), so the list lives in one place.
*/
#ifndef USERSYNC_MODULES_H
#define USERSYNC_MODULES_H
#include <lauxlib.h>
#include <lua.h>

#include "usersync/http.h"

int luaopen_usersync_core(lua_State *L);
int luaopen_usersync_http(lua_State *L);
int luaopen_usersync_json(lua_State *L);
int luaopen_usersync_re(lua_State *L);
int luaopen_usersync_store(lua_State *L);
int luaopen_usersync_time(lua_State *L);
int luaopen_usersync_crypto(lua_State *L);
int luaopen_usersync_target_raw(lua_State *L);
int luaopen_usersync_okta_raw(lua_State *L);
int luaopen_usersync_server(lua_State *L);
int luaopen_usersync_metrics(lua_State *L);
int luaopen_usersync_accountset(lua_State *L);
int luaopen_usersync_linkset(lua_State *L);
int luaopen_usersync_userset(lua_State *L);

/* Cross-binding helpers. */
/* The engine of the usersync.http.Client at idx; raises if idx is not a
** Client or the Client is closed. The engine stays owned by the Client:
** keep the Client referenced (e.g. as a user value) while using it. */
us_http *us_http_checkengine(lua_State *L, int idx);
/* The account set of the usersync.accountset.AccountSet at idx (raises if
** it is not one); owned by the userdata: keep it referenced while in use.
** us_accountset_push pushes account i of s as a new table (see
** runtime/bind_accountset.c). */
struct us_accountset;
struct us_accountset *us_accountset_check(lua_State *L, int idx);
void us_accountset_push(lua_State *L, const struct us_accountset *s, size_t i);
/* Decodes JSON text s[0..len) as usersync.json.decode does. On success
** pushes the value and returns 1. On malformed input pushes nothing,
** returns 0 and leaves the message ("json: ... at offset N") in the
** registry field "usersync.json.error" (lua_getfield(L, LUA_REGISTRYINDEX,
** "usersync.json.error")). Raises only on memory errors. */
int us_json_push_decoded(lua_State *L, const char *s, size_t len);

/* The one message handler for lua_pcall (runtime/host.c): a string error
** (or a value with __tostring) gets a traceback; a table is left as it is
** (structured errors keep their fields); any other value becomes "(error
** object is a <type> value)" with a traceback. */
int us_lua_traceback(lua_State *L);

/* Creates metatable `name` (luaL_newmetatable) with the metamethods `meta`
** and, when given, an __index table of `methods` (either may be NULL): the
** one recipe of every binding's classes (runtime/bind_modules.c). [-0, +0] */
void us_lua_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods);

/* The optional timeout in seconds at stack index idx as milliseconds for a
** wait: -1 (wait for ever) when absent or above 2e9 s, rounded up otherwise;
** a negative or NaN value raises (runtime/bind_modules.c). [-0, +0, v] */
long us_lua_opt_timeout_ms(lua_State *L, int idx);

/* srv:scim_worker(module, arg) of usersync.server (runtime/bind_scim.c):
** starts serve's SCIM worker thread; [-0, +1|3]. */
struct us_server;
int us_bind_scim_worker(lua_State *L, struct us_server *srv);

/* Puts every C module and the built-in Lua library into package.preload. */
void us_modules_preload(lua_State *L);

/* A second Lua state (runtime/host.c) with the standard libraries and every
** module preloaded, its memory capped at limit bytes; NULL when out of
** memory. For work on another thread (the status page's renderer, serve's
** SCIM worker): use it
** from one thread at a time. Close it with us_host_closestate. */
lua_State *us_host_newstate(size_t limit);
void us_host_closestate(lua_State *L);

/* The host's accounting, reachable from bindings (stored in the state's
** extra space, so every coroutine sees it). */
struct us_host_state {
  size_t used;  /* bytes held by the Lua state */
  size_t limit; /* allocation fails beyond this */
  long long budget; /* instructions left for the sandboxed call; <0: none */
  long long budget_total;
  long long charged; /* instructions charged to sandboxed calls so far (in steps) */
};
struct us_host_state *us_host_state(lua_State *L);

#endif
