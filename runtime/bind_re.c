/* bind_re.c: placeholder until the re module lands; returns an empty table. */
#include <lauxlib.h>
#include <lua.h>

#include "usersync/modules.h"

int luaopen_usersync_re(lua_State *L) {
  lua_newtable(L);
  return 1;
}
