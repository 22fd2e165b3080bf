/*
** bind_accountset.c: `require "usersync.accountset"`, the compact account
** set (include/usersync/accountset.h) a whole-target snapshot holds its
** accounts in: a few MB for 100,000 accounts, where a Lua table per account
** took over 100 MB. Lua gets an account as a fresh plain table when it asks
** for one (materialise, use, drop).
**
** Lua API
**
**   local accountset = require "usersync.accountset"
**   local set = accountset.new()
**   set:add{ name=, key=, id=, display_name=, email=, active= } -> index
**       adds an account, or merges into the one of its name (compared
**       case-insensitively): the fields given replace the known ones
**   #set                  -> the number of accounts
**   set[i]                -> account i (1..#set) as a new table, or nil; so
**                            ipairs(set) lists every account
**   set:get(name)         -> the account of that name (any case), or nil
**   set:get(name, field)  -> just that field of it ("groups": a new list),
**                            or nil
**   set:by_id(id)         -> the account with that service id (SCIM), or nil
**   set:contains(name)    -> boolean, without making a table
**   set:has_ids()         -> whether any account has an id
**   set:add_member(name, group) -> true (added), false (already in a group
**       of that name, any case), nil (no such account)
**   set:groups()          -> { group names the accounts' groups use }
**   set:bytes()           -> memory the set holds, in bytes (approximately)
**   An account: { name=, key=, id=, display_name=, email=, active=,
**   groups = { names } } (absent fields nil; active nil when unknown).
**   Misuse raises; out of memory raises "accountset: out of memory".
*/
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "usersync/accountset.h"
#include "usersync/modules.h"

#define SET_MT "usersync.accountset.AccountSet"

struct lset {
  us_accountset *s;
};

us_accountset *us_accountset_check(lua_State *L, int idx) {
  return ((struct lset *)luaL_checkudata(L, idx, SET_MT))->s;
}

static void set_str(lua_State *L, const char *k, const char *v) {
  if (!v)
    return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

void us_accountset_push(lua_State *L, const us_accountset *s, size_t i) {
  struct us_account_fields f;
  us_accountset_get(s, i, &f);
  lua_createtable(L, 0, 7);
  set_str(L, "name", f.name);
  set_str(L, "key", f.key);
  set_str(L, "id", f.id);
  set_str(L, "display_name", f.display_name);
  set_str(L, "email", f.email);
  if (f.active >= 0) {
    lua_pushboolean(L, f.active);
    lua_setfield(L, -2, "active");
  }
  size_t n = us_accountset_ngroups(s, i);
  lua_createtable(L, (int)n, 0);
  for (size_t k = 0; k < n; k++) {
    lua_pushstring(L, us_accountset_group(s, i, k));
    lua_rawseti(L, -2, (lua_Integer)k + 1);
  }
  lua_setfield(L, -2, "groups");
}

static int set_new(lua_State *L) {
  struct lset *ls = lua_newuserdatauv(L, sizeof *ls, 0);
  ls->s = NULL;
  luaL_setmetatable(L, SET_MT);
  ls->s = us_accountset_new();
  if (!ls->s)
    return luaL_error(L, "accountset: out of memory");
  return 1;
}

static int set_gc(lua_State *L) {
  struct lset *ls = luaL_checkudata(L, 1, SET_MT);
  us_accountset_free(ls->s);
  ls->s = NULL;
  return 0;
}

/* Field k of the table at 2: a string or nil. */
static const char *field_str(lua_State *L, const char *k) {
  int ty = lua_getfield(L, 2, k);
  if (ty != LUA_TNIL && ty != LUA_TSTRING)
    luaL_error(L, "accountset: field '%s': expected a string", k);
  const char *v = lua_tostring(L, -1);
  lua_pop(L, 1); /* alive in the table */
  return v;
}

static int set_add(lua_State *L) {
  us_accountset *s = us_accountset_check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  struct us_account_fields f = {0};
  f.name = field_str(L, "name");
  if (!f.name)
    return luaL_error(L, "accountset: field 'name' is required");
  f.key = field_str(L, "key");
  f.id = field_str(L, "id");
  f.display_name = field_str(L, "display_name");
  f.email = field_str(L, "email");
  lua_getfield(L, 2, "active");
  f.active = lua_isnil(L, -1) ? -1 : lua_toboolean(L, -1);
  lua_pop(L, 1);
  long i = us_accountset_put(s, &f, NULL);
  if (i < 0)
    return luaL_error(L, "accountset: out of memory");
  lua_pushinteger(L, (lua_Integer)i + 1);
  return 1;
}

static int set_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)us_accountset_count(us_accountset_check(L, 1)));
  return 1;
}

/* set[i] -> account i; set.method -> the method */
static int set_index(lua_State *L) {
  us_accountset *s = us_accountset_check(L, 1);
  if (lua_type(L, 2) == LUA_TNUMBER) {
    lua_Integer i = lua_tointeger(L, 2);
    if (i < 1 || (size_t)i > us_accountset_count(s))
      return 0;
    us_accountset_push(L, s, (size_t)i - 1);
    return 1;
  }
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "methods");
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

/* Pushes field k of account i (nil when absent). */
static void push_field(lua_State *L, const us_accountset *s, size_t i, const char *k) {
  struct us_account_fields f;
  us_accountset_get(s, i, &f);
  const char *v = NULL;
  if (!strcmp(k, "groups")) {
    size_t n = us_accountset_ngroups(s, i);
    lua_createtable(L, (int)n, 0);
    for (size_t g = 0; g < n; g++) {
      lua_pushstring(L, us_accountset_group(s, i, g));
      lua_rawseti(L, -2, (lua_Integer)g + 1);
    }
    return;
  } else if (!strcmp(k, "active")) {
    if (f.active >= 0)
      lua_pushboolean(L, f.active);
    else
      lua_pushnil(L);
    return;
  } else if (!strcmp(k, "name")) {
    v = f.name;
  } else if (!strcmp(k, "key")) {
    v = f.key;
  } else if (!strcmp(k, "id")) {
    v = f.id;
  } else if (!strcmp(k, "display_name")) {
    v = f.display_name;
  } else if (!strcmp(k, "email")) {
    v = f.email;
  }
  if (v)
    lua_pushstring(L, v);
  else
    lua_pushnil(L);
}

static int set_get(lua_State *L) {
  us_accountset *s = us_accountset_check(L, 1);
  size_t len;
  const char *name = luaL_checklstring(L, 2, &len);
  const char *field = luaL_optstring(L, 3, NULL);
  long i = us_accountset_find(s, name, len);
  if (i < 0)
    return 0;
  if (field)
    push_field(L, s, (size_t)i, field);
  else
    us_accountset_push(L, s, (size_t)i);
  return 1;
}

static int set_by_id(lua_State *L) {
  us_accountset *s = us_accountset_check(L, 1);
  size_t len;
  const char *id = luaL_checklstring(L, 2, &len);
  long i = us_accountset_find_id(s, id, len);
  if (i < 0)
    return 0;
  us_accountset_push(L, s, (size_t)i);
  return 1;
}

static int set_contains(lua_State *L) {
  us_accountset *s = us_accountset_check(L, 1);
  size_t len;
  const char *name = luaL_checklstring(L, 2, &len);
  lua_pushboolean(L, us_accountset_find(s, name, len) >= 0);
  return 1;
}

static int set_has_ids(lua_State *L) {
  lua_pushboolean(L, us_accountset_has_ids(us_accountset_check(L, 1)));
  return 1;
}

static int set_add_member(lua_State *L) {
  us_accountset *s = us_accountset_check(L, 1);
  size_t len;
  const char *name = luaL_checklstring(L, 2, &len);
  const char *group = luaL_checkstring(L, 3);
  long i = us_accountset_find(s, name, len);
  if (i < 0)
    return 0;
  int r = us_accountset_add_group(s, (size_t)i, group, 1);
  if (r < 0)
    return luaL_error(L, "accountset: out of memory");
  lua_pushboolean(L, r);
  return 1;
}

static int set_groups(lua_State *L) {
  us_accountset *s = us_accountset_check(L, 1);
  size_t n = us_accountset_ngroup_names(s);
  lua_createtable(L, (int)n, 0);
  for (size_t k = 0; k < n; k++) {
    lua_pushstring(L, us_accountset_group_name(s, k));
    lua_rawseti(L, -2, (lua_Integer)k + 1);
  }
  return 1;
}

static int set_bytes(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)us_accountset_bytes(us_accountset_check(L, 1)));
  return 1;
}

static int set_tostring(lua_State *L) {
  us_accountset *s = us_accountset_check(L, 1);
  lua_pushfstring(L, "usersync.accountset (%d accounts)", (int)us_accountset_count(s));
  return 1;
}

static const luaL_Reg set_methods[] = {
    {"add", set_add},           {"get", set_get},       {"by_id", set_by_id},
    {"contains", set_contains}, {"has_ids", set_has_ids}, {"add_member", set_add_member},
    {"groups", set_groups},     {"bytes", set_bytes},   {NULL, NULL}};

static const luaL_Reg set_meta[] = {{"__gc", set_gc},
                                    {"__len", set_len},
                                    {"__index", set_index},
                                    {"__tostring", set_tostring},
                                    {NULL, NULL}};

static const luaL_Reg set_funcs[] = {{"new", set_new}, {NULL, NULL}};

int luaopen_usersync_accountset(lua_State *L) {
  us_lua_class(L, SET_MT, set_meta, NULL);
  luaL_getmetatable(L, SET_MT);
  luaL_newlib(L, set_methods);
  lua_setfield(L, -2, "methods");
  lua_pop(L, 1);
  luaL_newlib(L, set_funcs);
  return 1;
}
