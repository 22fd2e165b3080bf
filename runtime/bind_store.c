/* bind_store.c: placeholder until the store module lands; returns an empty table. */
#include <lauxlib.h>
#include <lua.h>

#include "usersync/modules.h"

int luaopen_usersync_store(lua_State *L) {
  lua_newtable(L);
  return 1;
}
