/* bind_time.c: placeholder until the time module lands; returns an empty table. */
#include <lauxlib.h>
#include <lua.h>

#include "usersync/modules.h"

int luaopen_usersync_time(lua_State *L) {
  lua_newtable(L);
  return 1;
}
