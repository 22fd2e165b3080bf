/* bind_log.c: placeholder until the log module lands; returns an empty table. */
#include <lauxlib.h>
#include <lua.h>

#include "usersync/modules.h"

int luaopen_usersync_log(lua_State *L) {
  lua_newtable(L);
  return 1;
}
