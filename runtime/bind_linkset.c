/*
** bind_linkset.c: `require "usersync.linkset"`, the compact links of one
** sync entry and target and the memberships usersync added for them
** (include/usersync/linkset.h): what a whole-target plan looks up per
** account, held in C instead of a Lua table per link and group (a
** 100,000-user target's ~500,000 owned memberships took ~15 MB as tables).
**
** Lua API
**
**   local linkset = require "usersync.linkset"
**   local set = linkset.new()
**   set:add(okta_id, name [, account_id]) -> index (1-based); an Okta id or
**       an account name (any case) linked already raises (the store keeps
**       both unique per sync entry and target)
**   set:own(group, okta_id [, why]) -> true, or false when okta_id has no
**       link (nothing recorded); group as the store names it (compared
**       exactly: the store gives it lowercase), why "mapping", "default",
**       "new_user" or nil (a row from before usersync kept why)
**   #set                  -> the number of links
**   set:at(i)             -> okta_id, name of link i (1..#set), or nil
**   set:name(okta_id)     -> the linked account's name, or nil
**   set:id(okta_id)       -> the service's id of it (SCIM), or nil
**   set:owner(name)       -> the Okta id linked to account name (any case), or nil
**   set:why(group, name)  -> why usersync added account name (any case) to
**       group (exactly): "mapping", "default", "new_user", true (a row
**       without why), or nil when it did not
**   set:groups()          -> { the groups of owned memberships }
**   set:bytes()           -> memory the set holds, in bytes (approximately)
**   pairs(set)            -> group, true for each group of owned memberships
**       (as pairs() over the store's owned memberships as a table
**       { [group] = { [account] = why } } lists its groups)
**   Misuse raises; out of memory raises "linkset: out of memory".
*/
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "usersync/linkset.h"
#include "usersync/modules.h"

#define SET_MT "usersync.linkset.LinkSet"

struct lset {
  us_linkset *s;
};

static us_linkset *check(lua_State *L) {
  us_linkset *s = ((struct lset *)luaL_checkudata(L, 1, SET_MT))->s;
  if (!s)
    luaL_error(L, "linkset: used after it was collected");
  return s;
}

static int set_new(lua_State *L) {
  struct lset *ls = lua_newuserdatauv(L, sizeof *ls, 0);
  ls->s = NULL;
  luaL_setmetatable(L, SET_MT);
  ls->s = us_linkset_new();
  if (!ls->s)
    return luaL_error(L, "linkset: out of memory");
  return 1;
}

static int set_gc(lua_State *L) {
  struct lset *ls = luaL_checkudata(L, 1, SET_MT);
  us_linkset_free(ls->s);
  ls->s = NULL;
  return 0;
}

/* A string argument the set stores as C text: one with a NUL byte would
** be kept cut short and never found again, so it is refused. */
static const char *text_arg(lua_State *L, int arg) {
  size_t len;
  const char *s = luaL_checklstring(L, arg, &len);
  if (strlen(s) != len)
    luaL_argerror(L, arg, "contains a NUL byte");
  return s;
}

static int set_add(lua_State *L) {
  us_linkset *s = check(L);
  const char *id = text_arg(L, 2);
  const char *name = text_arg(L, 3);
  const char *account_id = lua_isnoneornil(L, 4) ? NULL : text_arg(L, 4);
  long i = us_linkset_add(s, id, name, account_id);
  if (i == -2)
    return luaL_error(L, "linkset: Okta id %s or account %s is linked already", id, name);
  if (i < 0)
    return luaL_error(L, "linkset: out of memory");
  lua_pushinteger(L, (lua_Integer)i + 1);
  return 1;
}

static const char *const WHY[] = {"mapping", "default", "new_user", NULL};

static int set_own(lua_State *L) {
  us_linkset *s = check(L);
  const char *group = text_arg(L, 2);
  size_t len;
  const char *id = luaL_checklstring(L, 3, &len);
  int why = lua_isnoneornil(L, 4) ? US_WHY_ANY : luaL_checkoption(L, 4, NULL, WHY) + 1;
  long i = us_linkset_find(s, id, len);
  if (i < 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (us_linkset_own(s, (size_t)i, group, why))
    return luaL_error(L, "linkset: out of memory");
  lua_pushboolean(L, 1);
  return 1;
}

static int set_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)us_linkset_count(check(L)));
  return 1;
}

static int set_at(lua_State *L) {
  us_linkset *s = check(L);
  lua_Integer i = luaL_checkinteger(L, 2);
  if (i < 1 || (size_t)i > us_linkset_count(s))
    return 0;
  const char *id, *name, *account_id;
  us_linkset_get(s, (size_t)i - 1, &id, &name, &account_id);
  lua_pushstring(L, id);
  lua_pushstring(L, name);
  return 2;
}

/* Field `which` (0 name, 1 account id) of the link of the Okta id at 2. */
static int link_field(lua_State *L, int which) {
  us_linkset *s = check(L);
  size_t len;
  const char *key = luaL_checklstring(L, 2, &len);
  long i = us_linkset_find(s, key, len);
  if (i < 0)
    return 0;
  const char *id, *name, *account_id;
  us_linkset_get(s, (size_t)i, &id, &name, &account_id);
  const char *v = which ? account_id : name;
  if (!v)
    return 0;
  lua_pushstring(L, v);
  return 1;
}

static int set_name(lua_State *L) { return link_field(L, 0); }
static int set_id(lua_State *L) { return link_field(L, 1); }

static int set_owner(lua_State *L) {
  us_linkset *s = check(L);
  size_t len;
  const char *name = luaL_checklstring(L, 2, &len);
  long i = us_linkset_find_name(s, name, len);
  if (i < 0)
    return 0;
  const char *id, *n, *account_id;
  us_linkset_get(s, (size_t)i, &id, &n, &account_id);
  lua_pushstring(L, id);
  return 1;
}

static int set_why(lua_State *L) {
  us_linkset *s = check(L);
  size_t glen, len;
  const char *group = luaL_checklstring(L, 2, &glen);
  const char *name = luaL_checklstring(L, 3, &len);
  long i = us_linkset_find_name(s, name, len);
  if (i < 0)
    return 0;
  int why = us_linkset_owned(s, (size_t)i, group, glen);
  if (why == -2)
    return luaL_error(L, "linkset: out of memory");
  if (why < 0)
    return 0;
  if (why == US_WHY_ANY)
    lua_pushboolean(L, 1);
  else
    lua_pushstring(L, WHY[why - 1]);
  return 1;
}

static int set_groups(lua_State *L) {
  us_linkset *s = check(L);
  size_t n = us_linkset_ngroups(s);
  lua_createtable(L, (int)n, 0);
  for (size_t k = 0; k < n; k++) {
    lua_pushstring(L, us_linkset_group(s, k));
    lua_rawseti(L, -2, (lua_Integer)k + 1);
  }
  return 1;
}

static int set_bytes(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)us_linkset_bytes(check(L)));
  return 1;
}

/* pairs(set): the groups of owned memberships, each with true. The
** control variable is the group's index, kept as an upvalue. */
static int groups_next(lua_State *L) {
  us_linkset *s = ((struct lset *)luaL_checkudata(L, lua_upvalueindex(1), SET_MT))->s;
  lua_Integer k = lua_tointeger(L, lua_upvalueindex(2));
  if (!s || (size_t)k >= us_linkset_ngroups(s))
    return 0;
  lua_pushinteger(L, k + 1);
  lua_replace(L, lua_upvalueindex(2));
  lua_pushstring(L, us_linkset_group(s, (size_t)k));
  lua_pushboolean(L, 1);
  return 2;
}

static int set_pairs(lua_State *L) {
  check(L);
  lua_pushvalue(L, 1);
  lua_pushinteger(L, 0);
  lua_pushcclosure(L, groups_next, 2);
  lua_pushnil(L);
  lua_pushnil(L);
  return 3;
}

static int set_tostring(lua_State *L) {
  lua_pushfstring(L, "usersync.linkset (%d links)", (int)us_linkset_count(check(L)));
  return 1;
}

static const luaL_Reg set_methods[] = {
    {"add", set_add},     {"own", set_own},       {"at", set_at},         {"name", set_name},
    {"id", set_id},       {"owner", set_owner},   {"why", set_why},       {"groups", set_groups},
    {"bytes", set_bytes}, {NULL, NULL}};

static const luaL_Reg set_meta[] = {{"__gc", set_gc},       {"__len", set_len},
                                    {"__pairs", set_pairs}, {"__tostring", set_tostring},
                                    {NULL, NULL}};

static const luaL_Reg set_funcs[] = {{"new", set_new}, {NULL, NULL}};

int luaopen_usersync_linkset(lua_State *L) {
  us_lua_class(L, SET_MT, set_meta, set_methods);
  luaL_newlib(L, set_funcs);
  return 1;
}
