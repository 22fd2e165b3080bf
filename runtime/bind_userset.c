/*
** bind_userset.c: `require "usersync.userset"`, the compact Okta user set
** (include/usersync/userset.h) a whole scope read holds its users in: ~20
** MB for 100,000 users where a Lua table, a profile table and a groups
** array per user took ~66 MB. Lua gets a user as a fresh plain table when
** it asks for one (materialise, use, drop): the same fields, metatables
** (usersync.json's object and array) and order of groups as the user the
** plain read builds.
**
** Lua API
**
**   local userset = require "usersync.userset"
**   local set = userset.new(keep)
**       keep = { top = { "id", "status", "lastUpdated" ... },
**                profile = { "login", "email" ... } }: the fields each
**       user keeps (id always; "profile" and "groups" are not fields)
**   set:add(u) -> index   a user as the listing decoded it (a table with
**       a string id; its fields read as keep says, its profile only when
**       a table); a user met again (the same id) is replaced in place
**   set:add_page(users) -> n   set:add of each of a page's users
**   set:add_members(ids, group_id)  group_id joins the groups of each user
**       whose id is in the list (ids without a record yet are kept aside)
**   set:finish()          ends the feeding: ids met only as members are
**       dropped, each user's group ids sorted; the users in the order
**       their records came
**   #set                  -> the number of users (before set:finish, ids
**                            met only as members count too)
**   set[i]                -> user i (1..#set) as a new table, or nil; so
**                            ipairs(set) lists every user
**   set:get(id)           -> the user of that Okta id, or nil
**   set:index(id)         -> its index, or nil
**   set:id(i)             -> user i's id without making a table, or nil
**   set:fill(i, t)        -> t, user i written into table t (one filled
**       before, or empty): its fields overwritten, those user i lacks
**       cleared; nil when there is no user i. For a caller that reads each
**       user once and keeps nothing of it (no garbage per user)
**   set:bytes()           -> memory the set holds, in bytes (approximately;
**                            field values that are tables not counted)
**   A user: { id=, status=, <top fields>, profile = { <profile fields> }
**   (when the record had one), groups = { group ids } }. A field value may
**   be a string, number, boolean or usersync.json.null; a table value (a
**   structured field) is kept as the table itself, shared by every copy.
**   Misuse raises; out of memory raises "userset: out of memory".
*/
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "usersync/modules.h"
#include "usersync/userset.h"

#define SET_MT "usersync.userset.UserSet"
#define ARRAY_MT "usersync.json.array"
#define OBJECT_MT "usersync.json.object"

/* user values: 1 the tables of EXT values (key: seq * nslots + slot + 1),
** 2 Lua strings of the interned texts (key: number + 1), 3 the slots' field
** names (key: slot + 1; a profile field's without "profile.") */
enum { UV_EXT = 1, UV_STRS, UV_NAMES, UV_N = UV_NAMES };

struct lset {
  us_userset *s;
  size_t ntop; /* slots 0..ntop-1 are top fields, the rest profile fields */
};

/* A set's methods; a set a finalizer brought back after its __gc has no
** store left and is refused rather than dereferenced. */
static struct lset *check(lua_State *L, int idx) {
  struct lset *ls = luaL_checkudata(L, idx, SET_MT);
  if (!ls->s)
    luaL_error(L, "userset: the set was already collected");
  return ls;
}

static int oom(lua_State *L) { return luaL_error(L, "userset: out of memory"); }

static int set_gc(lua_State *L) {
  struct lset *ls = luaL_checkudata(L, 1, SET_MT);
  us_userset_free(ls->s);
  ls->s = NULL;
  return 0;
}

/* Appends the strings of list field `k` of the table at 1 to the names
** table at 3 (from position *n + 1), skipping those in `skip`. */
static void add_names(lua_State *L, const char *k, const char *const *skip, int *n) {
  int ty = lua_getfield(L, 1, k);
  if (ty != LUA_TNIL && ty != LUA_TTABLE)
    luaL_error(L, "userset: keep.%s: expected a list of field names", k);
  for (lua_Integer j = 1; ty == LUA_TTABLE; j++) {
    if (lua_geti(L, -1, j) == LUA_TNIL) {
      lua_pop(L, 1);
      break;
    }
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "userset: keep.%s: expected a list of field names", k);
    const char *name = lua_tostring(L, -1);
    int skipped = 0;
    for (const char *const *p = skip; *p; p++)
      skipped |= !strcmp(name, *p);
    if (skipped)
      lua_pop(L, 1);
    else
      lua_rawseti(L, 3, ++*n);
  }
  lua_pop(L, 1);
}

static int set_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  struct lset *ls = lua_newuserdatauv(L, sizeof *ls, UV_N); /* 2 */
  ls->s = NULL;
  luaL_setmetatable(L, SET_MT);
  lua_newtable(L); /* 3: names */
  int n = 0;
  static const char *const top_skip[] = {"id", "profile", "groups", NULL};
  static const char *const prof_skip[] = {NULL};
  add_names(L, "top", top_skip, &n);
  ls->ntop = (size_t)n;
  add_names(L, "profile", prof_skip, &n);

  /* the store's slot names: a profile field's with "profile." (a profile
  ** field named status is not the user's status) */
  luaL_checkstack(L, 2 * n + 4, "userset: too many fields");
  const char **slots = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n ? n : 1), 0); /* 4 */
  for (int k = 0; k < n; k++) {
    lua_rawgeti(L, 3, k + 1);
    if ((size_t)k >= ls->ntop)
      lua_pushfstring(L, "profile.%s", lua_tostring(L, -1));
    slots[k] = lua_tostring(L, -1); /* alive in names or on the stack until the store copied it */
  }
  ls->s = us_userset_new((size_t)n, slots);
  if (!ls->s)
    return oom(L);
  lua_settop(L, 3);
  lua_setiuservalue(L, 2, UV_NAMES);
  lua_newtable(L);
  lua_setiuservalue(L, 2, UV_EXT);
  lua_newtable(L);
  lua_setiuservalue(L, 2, UV_STRS);
  return 1;
}

/* Stores the value at the top of the stack as slot k of user i (popped);
** EXT values go into the table at ext (key). */
static void put_value(lua_State *L, struct lset *ls, size_t i, size_t k, int ext, lua_Integer key) {
  us_userset *s = ls->s;
  int r = 0;
  switch (lua_type(L, -1)) {
  case LUA_TNIL: us_userset_set_kind(s, i, k, US_UV_NIL); break;
  case LUA_TBOOLEAN: us_userset_set_kind(s, i, k, lua_toboolean(L, -1) ? US_UV_TRUE : US_UV_FALSE); break;
  case LUA_TSTRING: {
    size_t len;
    const char *v = lua_tolstring(L, -1, &len);
    r = us_userset_set_str(s, i, k, v, len);
    break;
  }
  case LUA_TNUMBER:
    if (lua_isinteger(L, -1))
      r = us_userset_set_int(s, i, k, (int64_t)lua_tointeger(L, -1));
    else
      r = us_userset_set_num(s, i, k, (double)lua_tonumber(L, -1));
    break;
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, -1) == NULL) { /* json.null */
      us_userset_set_kind(s, i, k, US_UV_NULL);
      break;
    }
    /* fall through */
  default:
    us_userset_set_kind(s, i, k, US_UV_EXT);
    lua_pushvalue(L, -1);
    lua_rawseti(L, ext, key);
    break;
  }
  lua_pop(L, 1);
  if (r)
    oom(L);
}

/* Adds the user table at idx; its index (0-based). The set at 1. */
static size_t add_user(lua_State *L, struct lset *ls, int idx) {
  if (!lua_istable(L, idx))
    luaL_error(L, "userset: a user must be a table");
  if (lua_getfield(L, idx, "id") != LUA_TSTRING)
    luaL_error(L, "userset: a user's id must be a string");
  size_t len;
  const char *id = lua_tolstring(L, -1, &len);
  long i = us_userset_put(ls->s, id, len, NULL);
  lua_pop(L, 1);
  if (i < 0)
    oom(L);
  int top = lua_gettop(L);
  lua_getiuservalue(L, 1, UV_EXT);   /* top + 1 */
  lua_getiuservalue(L, 1, UV_NAMES); /* top + 2 */
  size_t n = us_userset_nslots(ls->s);
  lua_Integer base = (lua_Integer)us_userset_seq(ls->s, (size_t)i) * (lua_Integer)n;
  for (size_t k = 0; k < n; k++) { /* a replaced user's old table values go */
    lua_pushnil(L);
    lua_rawseti(L, top + 1, base + (lua_Integer)k + 1);
  }
  for (size_t k = 0; k < ls->ntop; k++) {
    lua_rawgeti(L, top + 2, (lua_Integer)k + 1);
    lua_gettable(L, idx);
    put_value(L, ls, (size_t)i, k, top + 1, base + (lua_Integer)k + 1);
  }
  int has_profile = lua_getfield(L, idx, "profile") == LUA_TTABLE; /* top + 3 */
  us_userset_set_profile(ls->s, (size_t)i, has_profile);
  if (has_profile) {
    for (size_t k = ls->ntop; k < n; k++) {
      lua_rawgeti(L, top + 2, (lua_Integer)k + 1);
      lua_gettable(L, top + 3);
      put_value(L, ls, (size_t)i, k, top + 1, base + (lua_Integer)k + 1);
    }
  }
  lua_settop(L, top);
  return (size_t)i;
}

static int set_add(lua_State *L) {
  struct lset *ls = check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  size_t i = add_user(L, ls, 2);
  lua_pushinteger(L, (lua_Integer)us_userset_seq(ls->s, i) + 1);
  return 1;
}

static int set_add_page(lua_State *L) {
  struct lset *ls = check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
  for (lua_Integer j = 1; j <= n; j++) {
    lua_rawgeti(L, 2, j); /* 3 */
    add_user(L, ls, 3);
    lua_settop(L, 2);
  }
  lua_pushinteger(L, n);
  return 1;
}

static int set_add_members(lua_State *L) {
  struct lset *ls = check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  size_t glen;
  const char *gid = luaL_checklstring(L, 3, &glen);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
  for (lua_Integer j = 1; j <= n; j++) {
    if (lua_rawgeti(L, 2, j) != LUA_TSTRING)
      return luaL_error(L, "userset: add_members: ids must be strings");
    size_t len;
    const char *id = lua_tolstring(L, -1, &len);
    if (us_userset_add_member(ls->s, id, len, gid, glen) < 0)
      return oom(L);
    lua_pop(L, 1);
  }
  return 0;
}

static int set_finish(lua_State *L) {
  if (us_userset_finish(check(L, 1)->s))
    return oom(L);
  return 0;
}

/* Pushes interned text number t (cached as a Lua string in the table at strs). */
static void push_text(lua_State *L, const us_userset *s, size_t i, size_t k, int strs) {
  lua_Integer t = (lua_Integer)us_userset_group_index(s, i, k) + 1;
  if (lua_rawgeti(L, strs, t) == LUA_TSTRING)
    return;
  lua_pop(L, 1);
  size_t len;
  const char *g = us_userset_group(s, i, k, &len);
  lua_pushlstring(L, g, len);
  lua_pushvalue(L, -1);
  lua_rawseti(L, strs, t);
}

/* Pushes slot k of user i; EXT from the table at ext. */
static void push_value(lua_State *L, const us_userset *s, size_t i, size_t k, int ext) {
  struct us_uval v = us_userset_value(s, i, k);
  switch (v.type) {
  case US_UV_NIL: lua_pushnil(L); break;
  case US_UV_TRUE: lua_pushboolean(L, 1); break;
  case US_UV_FALSE: lua_pushboolean(L, 0); break;
  case US_UV_NULL: lua_pushlightuserdata(L, NULL); break;
  case US_UV_STR: lua_pushlstring(L, v.s, v.len); break;
  case US_UV_INT: lua_pushinteger(L, (lua_Integer)v.i); break;
  case US_UV_NUM: lua_pushnumber(L, (lua_Number)v.n); break;
  case US_UV_EXT:
    lua_rawgeti(L, ext, (lua_Integer)us_userset_seq(s, i) * (lua_Integer)us_userset_nslots(s) + (lua_Integer)k + 1);
    break;
  }
}

/* Fills user i of the set at idx into the table at the top of the stack
** (reuse: a table filled before, whose fields are overwritten and cleared
** where this user has none; else a new empty one). */
static void fill_user(lua_State *L, int idx, struct lset *ls, size_t i, int reuse) {
  us_userset *s = ls->s;
  size_t n = us_userset_nslots(s);
  int t = lua_gettop(L);
  lua_getiuservalue(L, idx, UV_EXT);   /* t + 1 */
  lua_getiuservalue(L, idx, UV_NAMES); /* t + 2 */
  lua_getiuservalue(L, idx, UV_STRS);  /* t + 3 */
  size_t len;
  const char *id = us_userset_id(s, i, &len);
  lua_pushlstring(L, id, len);
  lua_setfield(L, t, "id");
  int has_profile = us_userset_has_profile(s, i), p = 0;
  if (has_profile) {
    if (!reuse || lua_getfield(L, t, "profile") != LUA_TTABLE) {
      if (reuse)
        lua_pop(L, 1);
      lua_createtable(L, 0, (int)(n - ls->ntop));
      luaL_setmetatable(L, OBJECT_MT);
    }
    p = lua_gettop(L); /* t + 4: its profile */
  } else if (reuse) {
    lua_pushnil(L);
    lua_setfield(L, t, "profile");
  }
  for (size_t k = 0; k < n; k++) {
    if (k >= ls->ntop && !has_profile)
      break;
    int into = k < ls->ntop ? t : p;
    lua_rawgeti(L, t + 2, (lua_Integer)k + 1);
    push_value(L, s, i, k, t + 1);
    if (lua_isnil(L, -1) && !reuse)
      lua_pop(L, 2);
    else
      lua_rawset(L, into);
  }
  if (has_profile) {
    lua_pushvalue(L, p);
    lua_setfield(L, t, "profile");
  }
  size_t ng = us_userset_ngroups(s, i), had = 0;
  if (reuse && lua_getfield(L, t, "groups") == LUA_TTABLE) {
    had = lua_rawlen(L, -1);
  } else {
    if (reuse)
      lua_pop(L, 1);
    lua_createtable(L, (int)ng, 0);
    luaL_setmetatable(L, ARRAY_MT);
  }
  for (size_t k = 0; k < ng; k++) {
    push_text(L, s, i, k, t + 3);
    lua_rawseti(L, -2, (lua_Integer)k + 1);
  }
  for (size_t k = ng; k < had; k++) {
    lua_pushnil(L);
    lua_rawseti(L, -2, (lua_Integer)k + 1);
  }
  lua_setfield(L, t, "groups");
  lua_settop(L, t);
}

/* Pushes user i of the set at idx as a new table. */
static void push_user(lua_State *L, int idx, struct lset *ls, size_t i) {
  lua_createtable(L, 0, (int)ls->ntop + 3);
  luaL_setmetatable(L, OBJECT_MT);
  fill_user(L, idx, ls, i, 0);
}

/* set:fill(i, t) -> t: user i written into t, a table set:fill made
** before (or an empty one): its fields overwritten, those user i has
** not cleared; nil when there is no user i. */
static int set_fill(lua_State *L) {
  struct lset *ls = check(L, 1);
  lua_Integer i = luaL_checkinteger(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  if (i < 1 || (size_t)i > us_userset_count(ls->s))
    return 0;
  lua_settop(L, 3);
  if (!lua_getmetatable(L, 3))
    luaL_setmetatable(L, OBJECT_MT);
  else
    lua_pop(L, 1);
  fill_user(L, 1, ls, (size_t)i - 1, 1);
  return 1;
}

static int set_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)us_userset_count(check(L, 1)->s));
  return 1;
}

/* set[i] -> user i; set.method -> the method */
static int set_index(lua_State *L) {
  struct lset *ls = check(L, 1);
  if (lua_type(L, 2) == LUA_TNUMBER) {
    lua_Integer i = lua_tointeger(L, 2);
    if (i < 1 || (size_t)i > us_userset_count(ls->s))
      return 0;
    push_user(L, 1, ls, (size_t)i - 1);
    return 1;
  }
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "methods");
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

static long find(lua_State *L, struct lset *ls) {
  size_t len;
  const char *id = luaL_checklstring(L, 2, &len);
  return us_userset_find(ls->s, id, len);
}

static int set_get(lua_State *L) {
  struct lset *ls = check(L, 1);
  long i = find(L, ls);
  if (i < 0 || !us_userset_is_record(ls->s, (size_t)i))
    return 0;
  push_user(L, 1, ls, (size_t)i);
  return 1;
}

static int set_index_of(lua_State *L) {
  struct lset *ls = check(L, 1);
  long i = find(L, ls);
  if (i < 0 || !us_userset_is_record(ls->s, (size_t)i))
    return 0;
  lua_pushinteger(L, (lua_Integer)i + 1);
  return 1;
}

static int set_id(lua_State *L) {
  struct lset *ls = check(L, 1);
  lua_Integer i = luaL_checkinteger(L, 2);
  if (i < 1 || (size_t)i > us_userset_count(ls->s))
    return 0;
  size_t len;
  const char *id = us_userset_id(ls->s, (size_t)i - 1, &len);
  lua_pushlstring(L, id, len);
  return 1;
}

static int set_bytes(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)us_userset_bytes(check(L, 1)->s));
  return 1;
}

static int set_tostring(lua_State *L) {
  lua_pushfstring(L, "usersync.userset (%d users)", (int)us_userset_count(check(L, 1)->s));
  return 1;
}

static const luaL_Reg set_methods[] = {
    {"add", set_add},       {"add_page", set_add_page}, {"add_members", set_add_members},
    {"finish", set_finish}, {"get", set_get},           {"index", set_index_of},
    {"id", set_id},         {"fill", set_fill},         {"bytes", set_bytes},
    {NULL, NULL}};

static const luaL_Reg set_meta[] = {{"__gc", set_gc},
                                    {"__len", set_len},
                                    {"__index", set_index},
                                    {"__tostring", set_tostring},
                                    {NULL, NULL}};

static const luaL_Reg set_funcs[] = {{"new", set_new}, {NULL, NULL}};

int luaopen_usersync_userset(lua_State *L) {
  /* the metatables of usersync.json */
  luaL_requiref(L, "usersync.json", luaopen_usersync_json, 0);
  lua_pop(L, 1);
  us_lua_class(L, SET_MT, set_meta, NULL);
  luaL_getmetatable(L, SET_MT);
  luaL_newlib(L, set_methods);
  lua_setfield(L, -2, "methods");
  lua_pop(L, 1);
  luaL_newlib(L, set_funcs);
  return 1;
}
