/* bind_http.c: placeholder until the http module lands; returns an empty table. */
#include <lauxlib.h>
#include <lua.h>

#include "usersync/modules.h"

int luaopen_usersync_http(lua_State *L) {
  lua_newtable(L);
  return 1;
}
