/* bind_json.c: placeholder until the json module lands; returns an empty table. */
#include <lauxlib.h>
#include <lua.h>

#include "usersync/modules.h"

int luaopen_usersync_json(lua_State *L) {
  lua_newtable(L);
  return 1;
}
