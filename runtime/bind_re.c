/*
** bind_re.c: `require "usersync.re"`, PCRE2 regular expressions for scripts.
** Uses the C core in runtime/re.c (include/usersync/re.h).
**
**   local re = require "usersync.re"
**   local rx = assert(re.compile([[(?<user>[\w.]+)@(?<domain>[\w.]+)]], "i"))
**   local m = rx:match("Mail: Ada.Lovelace@Example.com")
**   -- m[0] == "Ada.Lovelace@Example.com", m[1] == m.user == "Ada.Lovelace",
**   -- m[2] == m.domain == "Example.com"
**   print(rx:gsub("a@b.org, c@d.net", "${user} at $2"))  --> "a at b.org, c at d.net"  2
**   print(re.split("a, b,c", ",\\s*")[2])                 --> "b"
**   print(re.compile("(abc"))  --> nil  missing closing parenthesis at offset 4 in "(abc"  EREGEX
**
** API (s: subject string; init: 1-based start, negative counts from the end):
**   re.compile(pattern [, flags]) -> Regex | nil, msg, "EREGEX"
**       flags: string of i (caseless), m (multiline), s (dotall), x (extended),
**       u (UTF-8 + Unicode properties: always on). Unknown flag: raises.
**   rx:match(s [, init])   -> match | nil          match = { [0]=whole, [1]=group 1, ...,
**                                                    name=group, start=i, ["end"]=j }
**                                                  (an unset group is false)
**   rx:find(s [, init])    -> start, end | nil      (1-based, inclusive, as string.find)
**   rx:test(s [, init])    -> boolean
**   rx:find_all(s [, max]) -> { match, ... }        (every non-overlapping match)
**   rx:gmatch(s)           -> iterator over match tables (for m in rx:gmatch(s))
**   rx:gsub(s, repl [, max]) -> string, count
**       repl: template with $1, ${1}, ${name}, $$ (a bad reference returns
**       nil, msg, "EREGEX"), or a function(match) returning a string/number
**       (replacement) or nil/false (keep the matched text).
**   rx:split(s [, max])    -> { piece, ... }        at most max pieces; an empty match
**                                                  at the very start or end does not split
**   rx:close()             frees the pattern now (also __gc, __close; idempotent)
**   rx.pattern, rx.flags, tostring(rx)
**   re.match(s, pattern [, flags]), re.find, re.test, re.find_all, re.split,
**   re.gsub(s, pattern, repl [, flags]): the same through a cache of compiled
**       patterns keyed by flags and pattern. The cache is two generations of
**       at most RE_CACHE_SIZE entries each: a hit in the old generation moves
**       the entry into the current one, and when the current generation is full
**       it becomes the old one (the previous old one is dropped). So at most
**       2 * RE_CACHE_SIZE patterns are kept, and recently used ones survive.
** Every matching call may also return nil, msg, code with code
**   "EUTF8" (subject is not valid UTF-8) or "EREGEX_LIMIT" (match or depth
**   limit reached: catastrophic backtracking) or "EREGEX" (other failure).
*/
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "usersync/modules.h"
#include "usersync/re.h"

#define RE_MT "usersync.re.Regex"
#define RE_CACHE_SIZE 128

/* The userdata. re == NULL: closed (the state it is created in). */
typedef struct {
  us_re *re;
} lregex;

static lregex *re_check(lua_State *L, int idx) {
  lregex *r = luaL_checkudata(L, idx, RE_MT);
  if (r->re == NULL)
    luaL_error(L, "attempt to use a closed regex");
  return r;
}

/* Pushes nil, msg, code; returns 3. */
static int re_fail(lua_State *L, const char *msg, const char *code) {
  luaL_pushfail(L);
  lua_pushstring(L, msg);
  lua_pushstring(L, code);
  return 3;
}

static int re_fail_rc(lua_State *L, int rc, const char *msg) {
  const char *code = rc == US_RE_EUTF8 ? "EUTF8" : rc == US_RE_ELIMIT ? "EREGEX_LIMIT" : "EREGEX";
  return re_fail(L, msg, code);
}

/* Converts a 1-based (negative: from the end) init to a 0-based offset,
** clamped to [0, len]. */
static size_t re_init(lua_State *L, int idx, size_t len) {
  lua_Integer i = luaL_optinteger(L, idx, 1);
  if (i > 0)
    return (size_t)i - 1 > len ? len + 1 : (size_t)i - 1;
  if (i == 0)
    return 0;
  return (size_t)-i > len ? 0 : len - (size_t)-i;
}

/* re.compile(pattern [, flags]): [-0, +1 or +3]. The userdata is created
** closed, then the pattern compiled into it, so nothing leaks if pushing
** raises. The uservalue keeps pattern and flags strings for rx.pattern. */
static int re_compile_at(lua_State *L, int pidx, int fidx) {
  size_t plen;
  const char *pat = luaL_checklstring(L, pidx, &plen);
  const char *fs = luaL_optstring(L, fidx, "");
  unsigned flags;
  int bad = us_re_parse_flags(fs, &flags);
  if (bad)
    return luaL_argerror(L, fidx, lua_pushfstring(L, "unknown regex flag '%c'", bad));
  lregex *r = lua_newuserdatauv(L, sizeof *r, 2);
  r->re = NULL;
  luaL_setmetatable(L, RE_MT);
  lua_pushvalue(L, pidx);
  lua_setiuservalue(L, -2, 1);
  lua_pushstring(L, fs);
  lua_setiuservalue(L, -2, 2);
  char err[US_RE_ERRLEN];
  r->re = us_re_compile(pat, plen, flags, err, sizeof err);
  if (r->re == NULL)
    return re_fail(L, err, "EREGEX");
  return 1;
}

static int re_compile(lua_State *L) { return re_compile_at(L, 1, 2); }

/* Pushes the match table of the current match of r on s: [-0, +1]. */
static void push_match(lua_State *L, const us_re *re, const char *s) {
  const size_t *ov = us_re_ovector(re);
  int n = us_re_ncaptures(re);
  lua_createtable(L, n, us_re_name_count(re) + 2);
  for (int i = 0; i <= n; i++) {
    if (ov[2 * i] == US_RE_UNSET)
      lua_pushboolean(L, 0);
    else
      lua_pushlstring(L, s + ov[2 * i], ov[2 * i + 1] - ov[2 * i]);
    lua_rawseti(L, -2, i);
  }
  for (int i = 0; i < us_re_name_count(re); i++) {
    int g;
    const char *name = us_re_name_at(re, i, &g);
    lua_rawgeti(L, -1, g);
    lua_setfield(L, -2, name);
  }
  lua_pushinteger(L, (lua_Integer)ov[0] + 1);
  lua_setfield(L, -2, "start");
  lua_pushinteger(L, (lua_Integer)ov[1]);
  lua_setfield(L, -2, "end");
}

/* Runs one search of arg 1 on arg 2 from the init at arg 3. Returns the core's
** result; on error pushes nil, msg, code and sets *nret. */
static int run_once(lua_State *L, us_re **rep, const char **sp, int *nret) {
  lregex *r = re_check(L, 1);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  size_t start = re_init(L, 3, len);
  char err[US_RE_ERRLEN];
  int rc = us_re_exec(r->re, s, len, start, 0, err, sizeof err);
  if (rc < 0)
    *nret = re_fail_rc(L, rc, err);
  *rep = r->re;
  *sp = s;
  return rc;
}

static int re_match(lua_State *L) {
  us_re *re;
  const char *s;
  int nret = 0, rc = run_once(L, &re, &s, &nret);
  if (rc < 0)
    return nret;
  if (rc == US_RE_NOMATCH) {
    luaL_pushfail(L);
    return 1;
  }
  push_match(L, re, s);
  return 1;
}

static int re_find(lua_State *L) {
  us_re *re;
  const char *s;
  int nret = 0, rc = run_once(L, &re, &s, &nret);
  if (rc < 0)
    return nret;
  if (rc == US_RE_NOMATCH) {
    luaL_pushfail(L);
    return 1;
  }
  const size_t *ov = us_re_ovector(re);
  lua_pushinteger(L, (lua_Integer)ov[0] + 1);
  lua_pushinteger(L, (lua_Integer)ov[1]);
  return 2;
}

static int re_test(lua_State *L) {
  us_re *re;
  const char *s;
  int nret = 0, rc = run_once(L, &re, &s, &nret);
  if (rc < 0)
    return nret;
  lua_pushboolean(L, rc == US_RE_MATCH);
  return 1;
}

/* rx:find_all(s [, max]) -> list of match tables. */
static int re_find_all(lua_State *L) {
  lregex *r = re_check(L, 1);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  lua_Integer max = luaL_optinteger(L, 3, -1);
  lua_newtable(L);
  size_t pos = 0;
  unsigned opts = 0;
  char err[US_RE_ERRLEN];
  for (lua_Integer n = 1; max < 0 || n <= max; n++) {
    int rc = us_re_exec(r->re, s, len, pos, opts, err, sizeof err);
    if (rc < 0)
      return re_fail_rc(L, rc, err);
    if (rc == US_RE_NOMATCH)
      break;
    push_match(L, r->re, s);
    lua_rawseti(L, -2, n);
    const size_t *ov = us_re_ovector(r->re);
    pos = us_re_next(ov[0], ov[1], &opts);
    opts |= US_RE_NO_UTF_CHECK;
  }
  return 1;
}

/* Iterator of rx:gmatch. Upvalues: 1 regex, 2 subject, 3 next offset
** (false: done), 4 exec options. Returns a match table, or nil at the end;
** raises on an invalid subject or the backtracking limit (a for loop cannot
** take nil, msg, code). */
static int re_gmatch_step(lua_State *L) {
  if (!lua_toboolean(L, lua_upvalueindex(3)))
    return 0;
  lregex *r = re_check(L, lua_upvalueindex(1));
  size_t len;
  const char *s = lua_tolstring(L, lua_upvalueindex(2), &len);
  size_t pos = (size_t)lua_tointeger(L, lua_upvalueindex(3));
  unsigned opts = (unsigned)lua_tointeger(L, lua_upvalueindex(4));
  char err[US_RE_ERRLEN];
  int rc = us_re_exec(r->re, s, len, pos, opts, err, sizeof err);
  if (rc < 0)
    return luaL_error(L, "%s", err);
  if (rc == US_RE_NOMATCH) {
    lua_pushboolean(L, 0);
    lua_replace(L, lua_upvalueindex(3));
    return 0;
  }
  const size_t *ov = us_re_ovector(r->re);
  pos = us_re_next(ov[0], ov[1], &opts);
  lua_pushinteger(L, (lua_Integer)pos);
  lua_replace(L, lua_upvalueindex(3));
  lua_pushinteger(L, (lua_Integer)(opts | US_RE_NO_UTF_CHECK));
  lua_replace(L, lua_upvalueindex(4));
  push_match(L, r->re, s);
  return 1;
}

static int re_gmatch(lua_State *L) {
  re_check(L, 1);
  luaL_checkstring(L, 2);
  lua_settop(L, 2);
  lua_pushinteger(L, 0);
  lua_pushinteger(L, 0);
  lua_pushcclosure(L, re_gmatch_step, 4);
  return 1;
}

/* luaL_Buffer as a us_re_emit target. luaL_addlstring raises only on memory
** errors, and the core holds no allocation of its own during gsub. */
static int emit_buffer(void *ud, const char *p, size_t n) {
  luaL_addlstring((luaL_Buffer *)ud, p, n);
  return 0;
}

/* gsub with a function replacement: [-0, +2 or +3]. The callback may run any
** Lua code (even this regex), so offsets are copied out before each call. */
static int gsub_function(lua_State *L, lregex *r, const char *s, size_t len, lua_Integer max) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  size_t pos = 0, copied = 0;
  unsigned opts = 0;
  lua_Integer count = 0;
  char err[US_RE_ERRLEN];
  while (max < 0 || count < max) {
    if (r->re == NULL)
      return luaL_error(L, "regex closed during gsub");
    int rc = us_re_exec(r->re, s, len, pos, opts, err, sizeof err);
    if (rc < 0)
      return re_fail_rc(L, rc, err);
    if (rc == US_RE_NOMATCH)
      break;
    const size_t *ov = us_re_ovector(r->re);
    size_t ms = ov[0], me = ov[1];
    luaL_addlstring(&b, s + copied, ms - copied);
    lua_pushvalue(L, 3);
    push_match(L, r->re, s);
    lua_call(L, 1, 1);
    if (!lua_toboolean(L, -1)) {
      lua_pop(L, 1);
      lua_pushlstring(L, s + ms, me - ms);
    } else if (!lua_isstring(L, -1)) {
      return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    }
    luaL_addvalue(&b);
    copied = me;
    count++;
    pos = us_re_next(ms, me, &opts);
    opts |= US_RE_NO_UTF_CHECK;
  }
  luaL_addlstring(&b, s + copied, len - copied);
  luaL_pushresult(&b);
  lua_pushinteger(L, count);
  return 2;
}

/* rx:gsub(s, repl [, max]) -> string, count | nil, msg, code */
static int re_gsub(lua_State *L) {
  lregex *r = re_check(L, 1);
  size_t len, tlen;
  const char *s = luaL_checklstring(L, 2, &len);
  lua_Integer max = luaL_optinteger(L, 4, -1);
  if (lua_type(L, 3) == LUA_TFUNCTION)
    return gsub_function(L, r, s, len, max);
  const char *tmpl = luaL_checklstring(L, 3, &tlen);
  lua_settop(L, 4);
  char err[US_RE_ERRLEN];
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  long n = us_re_gsub(r->re, s, len, tmpl, tlen, (long)max, emit_buffer, &b, err, sizeof err);
  if (n < 0)
    return re_fail_rc(L, (int)n, err);
  luaL_pushresult(&b);
  lua_pushinteger(L, n);
  return 2;
}

/* rx:split(s [, max]) -> list of pieces */
static int re_split(lua_State *L) {
  lregex *r = re_check(L, 1);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  lua_Integer max = luaL_optinteger(L, 3, -1);
  lua_newtable(L);
  lua_Integer n = 0;
  size_t pos = 0, last = 0;
  unsigned opts = 0;
  char err[US_RE_ERRLEN];
  while (max < 0 || n + 1 < max) {
    int rc = us_re_exec(r->re, s, len, pos, opts, err, sizeof err);
    if (rc < 0)
      return re_fail_rc(L, rc, err);
    if (rc == US_RE_NOMATCH)
      break;
    const size_t *ov = us_re_ovector(r->re);
    size_t ms = ov[0], me = ov[1];
    pos = us_re_next(ms, me, &opts);
    opts |= US_RE_NO_UTF_CHECK;
    if (ms == me && (ms == 0 || ms == len))
      continue;
    lua_pushlstring(L, s + last, ms - last);
    lua_rawseti(L, -2, ++n);
    last = me;
  }
  lua_pushlstring(L, s + last, len - last);
  lua_rawseti(L, -2, ++n);
  return 1;
}

/* One idempotent close for close(), __gc and __close. */
static int re_close(lua_State *L) {
  lregex *r = luaL_checkudata(L, 1, RE_MT);
  us_re_free(r->re);
  r->re = NULL;
  return 0;
}

static int re_tostring(lua_State *L) {
  lregex *r = luaL_checkudata(L, 1, RE_MT);
  lua_getiuservalue(L, 1, 1);
  if (r->re == NULL)
    lua_pushfstring(L, "usersync.re.Regex (closed) /%s/", lua_tostring(L, -1));
  else
    lua_pushfstring(L, "usersync.re.Regex /%s/", lua_tostring(L, -1));
  return 1;
}

static const luaL_Reg re_methods[] = {
    {"match", re_match}, {"find", re_find},   {"test", re_test},   {"find_all", re_find_all},
    {"gmatch", re_gmatch}, {"gsub", re_gsub}, {"split", re_split}, {"close", re_close},
    {NULL, NULL},
};

/* __index: methods first, then the fields pattern and flags. */
static int re_index(lua_State *L) {
  luaL_checkudata(L, 1, RE_MT);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "pattern") == 0) {
    lua_getiuservalue(L, 1, 1);
    return 1;
  }
  if (strcmp(k, "flags") == 0) {
    lua_getiuservalue(L, 1, 2);
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  return 1;
}

/* Cache lookup for the shortcuts: pushes the Regex for (pattern at pidx,
** flags at fidx), compiling and caching it on a miss. Returns 1, or 3 with
** nil, msg, code pushed. Upvalue 1 of the caller is the cache table
** { cur = {}, old = {}, n = count in cur }. */
static int cache_get(lua_State *L, int pidx, int fidx) {
  luaL_checkstring(L, pidx);
  const char *fs = luaL_optstring(L, fidx, "");
  int cache = lua_upvalueindex(1);
  lua_pushfstring(L, "%s/%s", fs, lua_tostring(L, pidx)); /* key */
  int key = lua_gettop(L);
  lua_getfield(L, cache, "cur");
  lua_pushvalue(L, key);
  if (lua_rawget(L, -2) == LUA_TUSERDATA) {
    lua_replace(L, key);
    lua_settop(L, key);
    return 1;
  }
  lua_pop(L, 2);
  lua_getfield(L, cache, "old");
  lua_pushvalue(L, key);
  if (lua_rawget(L, -2) != LUA_TUSERDATA) {
    lua_pop(L, 2);
    int n = re_compile_at(L, pidx, fidx);
    if (n != 1)
      return n;
  } else {
    lua_remove(L, -2);
  }
  /* [key, rx]: insert into cur, rotating generations when cur is full */
  lua_getfield(L, cache, "n");
  lua_Integer count = lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (count >= RE_CACHE_SIZE) {
    lua_getfield(L, cache, "cur");
    lua_setfield(L, cache, "old");
    lua_newtable(L);
    lua_setfield(L, cache, "cur");
    count = 0;
  }
  lua_getfield(L, cache, "cur");
  lua_pushvalue(L, key);
  lua_pushvalue(L, -3);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  lua_pushinteger(L, count + 1);
  lua_setfield(L, cache, "n");
  lua_replace(L, key);
  lua_settop(L, key);
  return 1;
}

/* Turns shortcut arguments (s, pattern, extra x nextra, flags) into method
** arguments (rx, s, extra...) and calls fn. */
static int shortcut(lua_State *L, int nextra, lua_CFunction fn) {
  int fidx = 3 + nextra;
  lua_settop(L, fidx); /* cache_get pushes above the flags */
  int n = cache_get(L, 2, fidx);
  if (n != 1)
    return n;
  lua_replace(L, 2);           /* s, rx, extra..., flags */
  lua_settop(L, 2 + nextra);   /* s, rx, extra... */
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_replace(L, 1);
  lua_replace(L, 2);           /* rx, s, extra... */
  return fn(L);
}

static int re_s_match(lua_State *L) { return shortcut(L, 0, re_match); }
static int re_s_find(lua_State *L) { return shortcut(L, 0, re_find); }
static int re_s_test(lua_State *L) { return shortcut(L, 0, re_test); }
static int re_s_find_all(lua_State *L) { return shortcut(L, 0, re_find_all); }
static int re_s_split(lua_State *L) { return shortcut(L, 0, re_split); }
static int re_s_gsub(lua_State *L) {
  luaL_checkany(L, 3);
  return shortcut(L, 1, re_gsub);
}

static const luaL_Reg re_meta[] = {
    {"__gc", re_close}, {"__close", re_close}, {"__tostring", re_tostring}, {NULL, NULL},
};

static const luaL_Reg re_funcs[] = {
    {"match", re_s_match}, {"find", re_s_find},   {"test", re_s_test}, {"find_all", re_s_find_all},
    {"split", re_s_split}, {"gsub", re_s_gsub}, {NULL, NULL},
};

int luaopen_usersync_re(lua_State *L) {
  luaL_newmetatable(L, RE_MT);
  luaL_setfuncs(L, re_meta, 0);
  luaL_newlib(L, re_methods);
  lua_pushcclosure(L, re_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pushliteral(L, RE_MT);
  lua_setfield(L, -2, "__name");
  lua_pop(L, 1);

  luaL_newlibtable(L, re_funcs);
  lua_createtable(L, 0, 3); /* the pattern cache, shared upvalue */
  lua_newtable(L);
  lua_setfield(L, -2, "cur");
  lua_newtable(L);
  lua_setfield(L, -2, "old");
  lua_pushinteger(L, 0);
  lua_setfield(L, -2, "n");
  luaL_setfuncs(L, re_funcs, 1);
  lua_pushcfunction(L, re_compile);
  lua_setfield(L, -2, "compile");
  lua_pushinteger(L, RE_CACHE_SIZE);
  lua_setfield(L, -2, "cache_size");
  return 1;
}
