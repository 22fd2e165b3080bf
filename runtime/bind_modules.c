/*
** bind_modules.c: the one table of modules scripts can `require`.
**
** C modules go into package.preload as their luaopen functions; every file of the built-in Lua library
** (runtime/lua, compiled in by runtime/embed.cmake) gets a preload loader
** that compiles it from the binary. package.cpath is emptied, so nothing is
** loaded from shared objects, and the current directory is removed from
** package.path.
*/
#include <math.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "usersync/embedded.h"
#include "usersync/modules.h"

static const luaL_Reg c_modules[] = {
    {"usersync.core", luaopen_usersync_core},
    {"usersync.http", luaopen_usersync_http},
    {"usersync.json", luaopen_usersync_json},
    {"usersync.re", luaopen_usersync_re},
    {"usersync.store", luaopen_usersync_store},
    {"usersync.time", luaopen_usersync_time},
    {"usersync.crypto", luaopen_usersync_crypto},
    {"usersync.target_raw", luaopen_usersync_target_raw},
    {"usersync.okta_raw", luaopen_usersync_okta_raw},
    {"usersync.server", luaopen_usersync_server},
    {"usersync.metrics", luaopen_usersync_metrics},
    {"usersync.accountset", luaopen_usersync_accountset},
    {"usersync.linkset", luaopen_usersync_linkset},
    {"usersync.userset", luaopen_usersync_userset},
    {NULL, NULL},
};

/* Preload loader of an embedded Lua file; upvalue 1 is its index.
** [-0, +1]: returns the module's value (or true). */
static int load_embedded(lua_State *L) {
  const struct us_embedded *e = &us_embedded_lua[lua_tointeger(L, lua_upvalueindex(1))];
  if (luaL_loadbufferx(L, e->code, e->len, e->chunkname, "t") != LUA_OK)
    return lua_error(L);
  lua_pushstring(L, e->module);
  lua_call(L, 1, 1);
  if (lua_isnil(L, -1))
    lua_pushboolean(L, 1);
  return 1;
}

void us_lua_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods) {
  luaL_newmetatable(L, name);
  if (meta)
    luaL_setfuncs(L, meta, 0);
  if (methods) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
}

long us_lua_opt_timeout_ms(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx))
    return -1;
  lua_Number t = luaL_checknumber(L, idx);
  luaL_argcheck(L, t >= 0 && !isnan(t), idx, "timeout must be >= 0 seconds");
  return t > 2e9 ? -1 : (long)ceil(t * 1000.0);
}

void us_modules_preload(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const luaL_Reg *m = c_modules; m->name; m++) {
    lua_pushcfunction(L, m->func);
    lua_setfield(L, -2, m->name);
  }
  for (lua_Integer i = 0; us_embedded_lua[i].module; i++) {
    lua_pushinteger(L, i);
    lua_pushcclosure(L, load_embedded, 1);
    lua_setfield(L, -2, us_embedded_lua[i].module);
  }
  lua_pop(L, 1);

  lua_getglobal(L, "package");
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "cpath");
  /* Drop "./?.lua" and "./?/init.lua"; keep the system directories. */
  lua_getfield(L, -1, "path");
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  const char *p = lua_tostring(L, -1);
  while (p && *p) {
    const char *end = strchr(p, ';');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    if (n > 0 && strncmp(p, "./", 2) != 0) {
      if (luaL_bufflen(&b) > 0)
        luaL_addchar(&b, ';');
      luaL_addlstring(&b, p, n);
    }
    p = end ? end + 1 : NULL;
  }
  luaL_pushresult(&b);
  lua_setfield(L, -3, "path");
  lua_pop(L, 2);
}
