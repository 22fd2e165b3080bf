/*
** host.c: the Lua host.
**
** Provides us_host_main(): one Lua state per run, created with an accounting
** allocator (a cap on total memory, tightened during sandboxed calls), the
** standard libraries, every C module and the built-in Lua library preloaded,
** and the command line handed to the built-in `usersync.cli` module under a
** protected call with a traceback.
**
** The host context lives in the state's extra space (LUA_EXTRASPACE), which
** Lua copies into every new thread, so hooks and bindings find it from any
** coroutine without C globals.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "usersync/host.h"
#include "usersync/modules.h"

struct us_host_state *us_host_state(lua_State *L) {
  return *(struct us_host_state **)lua_getextraspace(L);
}

/* lua_Alloc with accounting: refuses growth past hs->limit. */
static void *host_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  struct us_host_state *hs = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    hs->used -= old;
    return NULL;
  }
  if (nsize > old && hs->used - old + nsize > hs->limit)
    return NULL;
  void *p = realloc(ptr, nsize);
  if (p)
    hs->used = hs->used - old + nsize;
  return p;
}

int us_lua_traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (lua_type(L, 1) == LUA_TTABLE)
      return 1;
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static int host_open(lua_State *L) {
  luaL_openlibs(L);
  us_modules_preload(L);
  return 0;
}

lua_State *us_host_newstate(struct us_host_state *hs) {
  *hs = (struct us_host_state){0, US_HOST_MEMORY_LIMIT, -1, 0, 0};
  lua_State *L = lua_newstate(host_alloc, hs);
  if (!L)
    return NULL;
  *(struct us_host_state **)lua_getextraspace(L) = hs;
  lua_pushcfunction(L, host_open);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    lua_close(L);
    return NULL;
  }
  return L;
}

/* Runs in protected mode: argv in upvalues, calls usersync.cli.main(args),
** leaves the integer exit code on the stack. */
static int host_pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  luaL_checkversion(L);
  luaL_openlibs(L);
  us_modules_preload(L);

  lua_getglobal(L, "require");
  lua_pushliteral(L, "usersync.cli");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "main");
  lua_createtable(L, argc, 0);
  for (int i = 1; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_pushstring(L, argv[0]);
  lua_rawseti(L, -2, 0);
  lua_call(L, 1, 1);
  if (!lua_isinteger(L, -1))
    lua_pushinteger(L, 0);
  return 1;
}

int us_host_main(int argc, char **argv) {
  struct us_host_state hs = {0, US_HOST_MEMORY_LIMIT, -1, 0, 0};
  lua_State *L = lua_newstate(host_alloc, &hs);
  if (L == NULL) {
    fprintf(stderr, "usersync: cannot create the Lua state: out of memory\n");
    return 1;
  }
  *(struct us_host_state **)lua_getextraspace(L) = &hs;
  lua_pushcfunction(L, us_lua_traceback);
  lua_pushcfunction(L, host_pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int status = lua_pcall(L, 2, 1, 1);
  int code;
  if (status == LUA_OK) {
    code = (int)lua_tointeger(L, -1);
  } else {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "usersync: %s\n", msg ? msg : "(error object is not a string)");
    code = 1;
  }
  lua_close(L);
  return code;
}
