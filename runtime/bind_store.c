/*
** bind_store.c: `usersync.store`, the Lua face of the store (runtime/store.c).
**
**   local store = require "usersync.store"
**   local db = assert(store.open("usersync.db", { busy_timeout_ms = 2000 }))
**   db:exec("INSERT INTO cursors (name, value) VALUES (?, ?)", "okta.syslog", "https://...")
**   for row in db:rows("SELECT name, value FROM cursors WHERE name LIKE ?", "okta.%") do
**     print(row.name, row.value)
**   end
**   local run = db:first("INSERT INTO runs (sync, trigger) VALUES (?, ?) RETURNING id",
**                        "main", "manual")
**   db:transaction(function()
**     db:exec("UPDATE runs SET outcome = 'ok' WHERE id = ?", run.id)
**   end)
**   local kv = db:kv("my-script")
**   kv:set("last", "42"); print(kv:get("last"))          --> 42
**   assert(db:lock("sync:main", { ttl = 600 }))          -- nil, "... held by pid N ...", "ELOCKED"
**   db:unlock("sync:main")
**   db:close()
**
** API (misuse raises; expected failure returns nil, message, code with code
** one of ESQL, ECONSTRAINT, EBUSY, ELOCKED, ESCHEMA, EOPEN, EIO, ENOMEM):
**   store.open(path [, {busy_timeout_ms=}]) -> Store | nil, msg, code
**   store.SCHEMA_VERSION                     -- schema version this build writes
**   db:exec(sql, ...)   -> changes, rowid of the connection's last INSERT.
**                          Without values, sql may hold several statements
**                          (a script; run it in db:transaction to make it
**                          all-or-nothing).
**   db:query(sql, ...)  -> { row, ... }      each row { column = value }
**   db:first(sql, ...)  -> row | nil (no row)
**   db:rows(sql, ...)   -> iterator for a generic for; raises on failure
**                          (an iterator cannot return nil, msg, code); the
**                          statement is released when the loop ends, breaks
**                          or raises (it is the loop's to-be-closed value)
**   db:each(sql, ...)   -> as rows, but each step gives the row number, then
**                          the columns as values (NULL as nil), no table
**   db:transaction(fn)  -> fn's results (true when none). fn(db) runs inside
**                          BEGIN IMMEDIATE (a savepoint when nested): commits
**                          when fn returns, rolls back when it raises (the
**                          error is re-raised) or returns nil, msg[, code]
**                          (returned as is). fn must not yield.
**   db:kv(namespace)    -> KV with :get(key) -> string|nil, :set(key, value)
**                          (value string or number; nil deletes) -> true,
**                          :delete(key) -> existed, :list([prefix]) -> {key=value}
**   db:lock(name [, {ttl=seconds}]) -> true | nil, "store: lock 'NAME' held
**                          by pid N on host H since T (lease until E)", "ELOCKED".
**                          Locking again renews the lease (default 300 s).
**   db:unlock(name)     -> true when this handle held it, else false
**   db:version()        -> schema version (PRAGMA user_version)
**   db:path()           -> path given to open
**   db:release_cache()  -> bytes the page cache held; empties it (its
**                          pages not in use)
**   db:close()          -> true; idempotent; also __gc and __close
**
** Values bound: nil and json.null -> NULL, booleans -> 1/0,
** integers, floats, strings. Anything else raises. With a single table
** argument, named parameters (:name, @name, $name) take its fields (absent
** fields bind NULL). Values read: integers stay integers, REAL -> float,
** TEXT/BLOB -> string, NULL -> the column is absent from the row table.
** Duplicate column names: the last wins (use AS aliases).
**
** Ownership: every prepared statement lives in a Stmt userdata
** ("usersync.store.Stmt") whose __gc/__close releases it, so a Lua error
** raised between prepare and finish leaks nothing; the normal paths release
** it explicitly. A Stmt keeps its Store alive through its user value.
*/
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "usersync/modules.h"
#include "usersync/store.h"

#define STORE_MT "usersync.store.Store"
#define STMT_MT "usersync.store.Stmt"
#define KV_MT "usersync.store.KV"

typedef struct lstore {
  us_store *s; /* NULL: closed */
} lstore;

typedef struct lstmt {
  us_store_stmt st;
  int done; /* rows(): iteration reached the end */
} lstmt;

/* ------------------------------------------------------------------ */
/* Helpers */

static lstore *check_store(lua_State *L, int idx) {
  lstore *ls = luaL_checkudata(L, idx, STORE_MT);
  if (ls->s == NULL)
    luaL_error(L, "store: attempt to use a closed store");
  return ls;
}

/* Pushes nil, message, code for the last failure on s; raises on misuse.
** [-0, +3] */
static int push_failure(lua_State *L, us_store *s) {
  if (us_store_errcode(s) == US_STORE_EMISUSE)
    return luaL_error(L, "%s", us_store_errmsg(s));
  lua_pushnil(L);
  lua_pushstring(L, us_store_errmsg(s));
  lua_pushstring(L, us_store_code_name(us_store_errcode(s)));
  return 3;
}

/* Creates an unprepared Stmt tied to the Store at store_idx. [-0, +1] */
static lstmt *new_stmt(lua_State *L, int store_idx) {
  store_idx = lua_absindex(L, store_idx);
  lstmt *ps = lua_newuserdatauv(L, sizeof *ps, 1);
  ps->st = (us_store_stmt)US_STORE_STMT_INIT;
  ps->done = 0;
  luaL_setmetatable(L, STMT_MT);
  lua_pushvalue(L, store_idx);
  lua_setiuservalue(L, -2, 1);
  return ps;
}

/* Converts the Lua value at idx for binding; 0 when it cannot be bound.
** Strings stay valid while the value is on the stack. */
static int to_value(lua_State *L, int idx, us_store_value *v) {
  *v = US_STORE_NULL_VALUE;
  switch (lua_type(L, idx)) {
  case LUA_TNIL: return 1;
  case LUA_TBOOLEAN:
    v->type = US_STORE_INTEGER;
    v->i = lua_toboolean(L, idx);
    return 1;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      v->type = US_STORE_INTEGER;
      v->i = (long long)lua_tointeger(L, idx);
    } else {
      v->type = US_STORE_FLOAT;
      v->f = (double)lua_tonumber(L, idx);
    }
    return 1;
  case LUA_TSTRING:
    v->type = US_STORE_TEXT;
    v->s = lua_tolstring(L, idx, &v->len);
    return 1;
  case LUA_TLIGHTUSERDATA: /* json.null */
    return lua_touserdata(L, idx) == NULL;
  default: return 0;
  }
}

/* Binds the n Lua values from stack index `first` to ps. Raises on misuse
** (wrong count, unbindable type), releasing the statement first. */
static void bind_args(lua_State *L, lstmt *ps, int first, int n) {
  us_store_stmt *st = &ps->st;
  int count = us_store_param_count(st);
  us_store_value v;
  if (n == 1 && lua_type(L, first) == LUA_TTABLE) {
    for (int i = 1; i <= count; i++) {
      const char *name = us_store_param_name(st, i);
      if (name == NULL) {
        us_store_finish(st);
        luaL_error(L, "store: positional parameter %d with a table of named values", i);
      }
      lua_getfield(L, first, name);
      if (!to_value(L, -1, &v)) {
        us_store_finish(st);
        luaL_error(L, "store: cannot bind field '%s' (a %s); JSON-encode tables", name,
                   luaL_typename(L, -1));
      }
      us_store_bind(st, i, &v); /* copies the bytes */
      lua_pop(L, 1);
    }
    return;
  }
  if (n != count) {
    us_store_finish(st);
    luaL_error(L, "store: statement takes %d parameter%s, %d value%s given", count,
               count == 1 ? "" : "s", n, n == 1 ? "" : "s");
  }
  for (int i = 0; i < n; i++) {
    if (!to_value(L, first + i, &v)) {
      const char *tn = luaL_typename(L, first + i);
      us_store_finish(st);
      luaL_argerror(L, first + i, lua_pushfstring(L, "cannot bind a %s (JSON-encode tables)", tn));
    }
    us_store_bind(st, i + 1, &v);
  }
}

/* Pushes the current row of st as a table. [-0, +1] */
/* Pushes column i of the current row as a Lua value (NULL as nil); returns
** 0 when it was NULL. */
static int push_column(lua_State *L, us_store_stmt *st, int i) {
  us_store_value v;
  us_store_column(st, i, &v);
  switch (v.type) {
  case US_STORE_NULL: lua_pushnil(L); return 0;
  case US_STORE_INTEGER: lua_pushinteger(L, (lua_Integer)v.i); break;
  case US_STORE_FLOAT: lua_pushnumber(L, (lua_Number)v.f); break;
  case US_STORE_TEXT:
  case US_STORE_BLOB: lua_pushlstring(L, v.s, v.len); break;
  }
  return 1;
}

static void push_row(lua_State *L, us_store_stmt *st) {
  int n = us_store_column_count(st);
  lua_createtable(L, 0, n);
  for (int i = 0; i < n; i++) {
    if (push_column(L, st, i))
      lua_setfield(L, -2, us_store_column_name(st, i));
    else
      lua_pop(L, 1);
  }
}

/* Prepares sql (one statement) into a new Stmt (left on the stack) and
** binds the Lua values at [first, top]. Returns the Stmt, or NULL after
** pushing nil, msg, code (the Stmt is then below them). */
static lstmt *prepare_args(lua_State *L, lstore *ls, int first) {
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  int n = lua_gettop(L) - first + 1;
  lstmt *ps = new_stmt(L, 1);
  if (us_store_prepare(ls->s, &ps->st, sql, len, NULL)) {
    push_failure(L, ls->s);
    return NULL;
  }
  bind_args(L, ps, first, n < 0 ? 0 : n);
  return ps;
}

/* ------------------------------------------------------------------ */
/* Module functions */

/* store.open(path [, {busy_timeout_ms=}]) -> Store | nil, msg, code */
static int store_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  us_store_options opt = {US_STORE_DEFAULT_BUSY_MS};
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_getfield(L, 2, "busy_timeout_ms") != LUA_TNIL) {
      int ok = 0;
      lua_Integer ms = lua_tointegerx(L, -1, &ok);
      luaL_argcheck(L, ok && ms >= 0 && ms <= 0x7fffffff, 2,
                    "busy_timeout_ms must be a non-negative integer");
      opt.busy_timeout_ms = (int)ms;
    }
    lua_pop(L, 1);
  }
  lstore *ls = lua_newuserdatauv(L, sizeof *ls, 0); /* closed until opened */
  ls->s = NULL;
  luaL_setmetatable(L, STORE_MT);
  us_store_error err;
  ls->s = us_store_open(path, &opt, &err);
  if (ls->s == NULL) {
    lua_pushnil(L);
    lua_pushstring(L, err.msg);
    lua_pushstring(L, us_store_code_name(err.code));
    return 3;
  }
  return 1;
}

/* ------------------------------------------------------------------ */
/* Store methods */

/* db:exec(sql, ...) -> changes, last_insert_rowid | nil, msg, code */
static int db_exec(lua_State *L) {
  lstore *ls = check_store(L, 1);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  long long changes = 0;
  int row = 0;
  if (lua_gettop(L) > 2) {
    lstmt *ps = prepare_args(L, ls, 3);
    if (ps == NULL)
      return 3;
    do {
      if (us_store_step(&ps->st, &row)) {
        us_store_finish(&ps->st);
        return push_failure(L, ls->s);
      }
    } while (row);
    changes = ps->st.changes;
    us_store_finish(&ps->st);
  } else {
    lstmt *ps = new_stmt(L, 1);
    size_t off = 0, used = 0;
    while (off < len) {
      if (us_store_prepare(ls->s, &ps->st, sql + off, len - off, &used))
        return push_failure(L, ls->s);
      off += used;
      if (ps->st.stmt == NULL)
        break;
      int want = us_store_param_count(&ps->st);
      if (want > 0) {
        us_store_finish(&ps->st);
        return luaL_error(L, "store: statement takes %d parameter%s, 0 values given", want,
                          want == 1 ? "" : "s");
      }
      do {
        if (us_store_step(&ps->st, &row)) {
          us_store_finish(&ps->st);
          return push_failure(L, ls->s);
        }
      } while (row);
      changes = ps->st.changes;
      us_store_finish(&ps->st);
    }
  }
  lua_pushinteger(L, (lua_Integer)changes);
  lua_pushinteger(L, (lua_Integer)us_store_last_rowid(ls->s));
  return 2;
}

/* db:query(sql, ...) -> { row... } | nil, msg, code */
static int db_query(lua_State *L) {
  lstore *ls = check_store(L, 1);
  lstmt *ps = prepare_args(L, ls, 3);
  if (ps == NULL)
    return 3;
  lua_newtable(L);
  lua_Integer n = 0;
  int row = 0;
  for (;;) {
    if (us_store_step(&ps->st, &row)) {
      us_store_finish(&ps->st);
      return push_failure(L, ls->s);
    }
    if (!row)
      break;
    push_row(L, &ps->st);
    lua_rawseti(L, -2, ++n);
  }
  us_store_finish(&ps->st);
  return 1;
}

/* db:first(sql, ...) -> row | nil | nil, msg, code */
static int db_first(lua_State *L) {
  lstore *ls = check_store(L, 1);
  lstmt *ps = prepare_args(L, ls, 3);
  if (ps == NULL)
    return 3;
  int row = 0;
  if (us_store_step(&ps->st, &row)) {
    us_store_finish(&ps->st);
    return push_failure(L, ls->s);
  }
  if (row)
    push_row(L, &ps->st);
  else
    lua_pushnil(L);
  us_store_finish(&ps->st);
  return 1;
}

/* One step of the iterators below (the Stmt is upvalue 1, its uservalue the
** Store): *out is the Stmt; 1 with a row ready, 0 when the rows are done (the
** statement finished). Raises on failure. */
static int iter_step(lua_State *L, lstmt **out) {
  lstmt *ps = *out = luaL_checkudata(L, lua_upvalueindex(1), STMT_MT);
  if (ps->done)
    return 0;
  if (ps->st.store == NULL)
    return luaL_error(L, "store: the store was closed while iterating over rows");
  us_store *s = ps->st.store;
  int row = 0;
  if (us_store_step(&ps->st, &row)) {
    us_store_finish(&ps->st);
    ps->done = 1;
    return luaL_error(L, "%s (%s)", us_store_errmsg(s), us_store_code_name(us_store_errcode(s)));
  }
  if (!row) {
    us_store_finish(&ps->st);
    ps->done = 1;
    return 0;
  }
  return 1;
}

/* Iterator of db:rows. */
static int rows_next(lua_State *L) {
  lstmt *ps;
  if (!iter_step(L, &ps))
    return 0;
  push_row(L, &ps->st);
  return 1;
}

/* db:rows(sql, ...) -> iterator, nil, nil, Stmt (to-be-closed). Raises on failure. */
static int db_rows(lua_State *L) {
  lstore *ls = check_store(L, 1);
  lstmt *ps = prepare_args(L, ls, 3);
  if (ps == NULL)
    return luaL_error(L, "%s (%s)", lua_tostring(L, -2), lua_tostring(L, -1));
  int stmt_idx = lua_gettop(L);
  lua_pushvalue(L, stmt_idx);
  lua_pushcclosure(L, rows_next, 1);
  lua_pushnil(L);
  lua_pushnil(L);
  lua_pushvalue(L, stmt_idx);
  return 4;
}

/* Iterator of db:each: the row's number, then its columns as values (NULL
** as nil). Upvalue 1 is the Stmt, upvalue 2 the row count so far. */
static int each_next(lua_State *L) {
  lstmt *ps;
  if (!iter_step(L, &ps))
    return 0;
  lua_Integer i = lua_tointeger(L, lua_upvalueindex(2)) + 1;
  lua_pushinteger(L, i);
  lua_copy(L, -1, lua_upvalueindex(2));
  int n = us_store_column_count(&ps->st);
  luaL_checkstack(L, n, "too many columns");
  for (int c = 0; c < n; c++)
    push_column(L, &ps->st, c);
  return n + 1;
}

/* db:each(sql, ...) -> iterator, nil, nil, Stmt (to-be-closed): as db:rows,
** but each step gives the row's number (1, 2, ...) and its columns as
** values, no table per row: `for _, a, b in db:each(...)`. Raises on
** failure. */
static int db_each(lua_State *L) {
  lstore *ls = check_store(L, 1);
  lstmt *ps = prepare_args(L, ls, 3);
  if (ps == NULL)
    return luaL_error(L, "%s (%s)", lua_tostring(L, -2), lua_tostring(L, -1));
  int stmt_idx = lua_gettop(L);
  lua_pushvalue(L, stmt_idx);
  lua_pushinteger(L, 0);
  lua_pushcclosure(L, each_next, 2);
  lua_pushnil(L);
  lua_pushnil(L);
  lua_pushvalue(L, stmt_idx);
  return 4;
}

/* db:transaction(fn) -> fn's results | true | nil, msg, code */
static int db_transaction(lua_State *L) {
  lstore *ls = check_store(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  if (us_store_begin(ls->s))
    return push_failure(L, ls->s);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 1);
  int status = lua_pcall(L, 1, LUA_MULTRET, 0);
  if (ls->s == NULL) { /* closed inside fn: the close rolled back */
    if (status != LUA_OK)
      return lua_error(L);
    return luaL_error(L, "store: the store was closed inside its transaction");
  }
  if (status != LUA_OK) {
    us_store_rollback(ls->s);
    return lua_error(L); /* the error value is on top */
  }
  int nres = lua_gettop(L) - 2;
  if (nres >= 2 && lua_isnil(L, 3) && !lua_isnil(L, 4)) {
    us_store_rollback(ls->s);
    return nres;
  }
  if (us_store_commit(ls->s))
    return push_failure(L, ls->s);
  if (nres == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  return nres;
}

/* db:lock(name [, {ttl=seconds}]) -> true | nil, msg, code */
static int db_lock(lua_State *L) {
  lstore *ls = check_store(L, 1);
  const char *name = luaL_checkstring(L, 2);
  long long ttl_ms = 0;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    if (lua_getfield(L, 3, "ttl") != LUA_TNIL) {
      int ok = 0;
      lua_Number ttl = lua_tonumberx(L, -1, &ok);
      luaL_argcheck(L, ok && ttl > 0 && ttl < 1e9, 3, "ttl must be a positive number of seconds");
      ttl_ms = (long long)(ttl * 1000.0 + 0.5);
      if (ttl_ms < 1)
        ttl_ms = 1;
    }
    lua_pop(L, 1);
  }
  if (us_store_lock(ls->s, name, ttl_ms, NULL))
    return push_failure(L, ls->s);
  lua_pushboolean(L, 1);
  return 1;
}

/* db:unlock(name) -> released | nil, msg, code */
static int db_unlock(lua_State *L) {
  lstore *ls = check_store(L, 1);
  const char *name = luaL_checkstring(L, 2);
  int released = 0;
  if (us_store_unlock(ls->s, name, &released))
    return push_failure(L, ls->s);
  lua_pushboolean(L, released);
  return 1;
}

/* db:version() -> integer | nil, msg, code */
static int db_version(lua_State *L) {
  lstore *ls = check_store(L, 1);
  int v = 0;
  if (us_store_version(ls->s, &v))
    return push_failure(L, ls->s);
  lua_pushinteger(L, v);
  return 1;
}

static int db_release_cache(lua_State *L) {
  lstore *ls = check_store(L, 1);
  lua_pushinteger(L, (lua_Integer)us_store_release_cache(ls->s));
  return 1;
}

static int db_path(lua_State *L) {
  lstore *ls = check_store(L, 1);
  lua_pushstring(L, us_store_path(ls->s));
  return 1;
}

/* db:close() -> true. Idempotent; __gc and __close. */
static int db_close(lua_State *L) {
  lstore *ls = luaL_checkudata(L, 1, STORE_MT);
  if (ls->s) {
    us_store *s = ls->s;
    ls->s = NULL;
    us_store_close(s);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int db_tostring(lua_State *L) {
  lstore *ls = luaL_checkudata(L, 1, STORE_MT);
  if (ls->s)
    lua_pushfstring(L, "usersync.store.Store (%s)", us_store_path(ls->s));
  else
    lua_pushliteral(L, "usersync.store.Store (closed)");
  return 1;
}

/* ------------------------------------------------------------------ */
/* KV: user value 1 is the Store, 2 the namespace. */

/* db:kv(namespace) -> KV */
static int db_kv(lua_State *L) {
  check_store(L, 1);
  size_t len;
  luaL_checklstring(L, 2, &len);
  luaL_argcheck(L, len > 0, 2, "namespace must not be empty");
  lua_newuserdatauv(L, 0, 2);
  luaL_setmetatable(L, KV_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 2);
  return 1;
}

/* Checks the KV at 1; pushes its Store (checked open) and namespace:
** the Store is then at top-1, the namespace at top. */
static lstore *check_kv(lua_State *L, const char **ns) {
  luaL_checkudata(L, 1, KV_MT);
  lua_getiuservalue(L, 1, 1);
  lstore *ls = check_store(L, -1);
  lua_getiuservalue(L, 1, 2);
  *ns = lua_tostring(L, -1);
  return ls;
}

/* Runs sql with the values v[0..n) on the Store at store_idx; leaves the
** Stmt on the stack. mode 0: run to the end; 1: stop at the first row
** (*row tells). Returns 0, or pushes nil, msg, code and returns 3. */
static int kv_run(lua_State *L, lstore *ls, int store_idx, const char *sql, us_store_value *v, int n,
                  int *row, lstmt **out) {
  lstmt *ps = new_stmt(L, store_idx);
  *out = ps;
  *row = 0;
  if (us_store_prepare(ls->s, &ps->st, sql, strlen(sql), NULL) ||
      us_store_bind_all(&ps->st, v, n) || us_store_step(&ps->st, row)) {
    us_store_finish(&ps->st);
    return push_failure(L, ls->s);
  }
  return 0;
}

static us_store_value lua_text(lua_State *L, int idx) {
  us_store_value v = US_STORE_NULL_VALUE;
  v.type = US_STORE_TEXT;
  v.s = lua_tolstring(L, idx, &v.len);
  return v;
}

/* kv:get(key) -> value | nil | nil, msg, code */
static int kv_get(lua_State *L) {
  const char *ns;
  luaL_checkstring(L, 2);
  lstore *ls = check_kv(L, &ns);
  us_store_value v[2] = {lua_text(L, -1), lua_text(L, 2)};
  lstmt *ps;
  int row;
  if (kv_run(L, ls, -2, "SELECT value FROM kv WHERE namespace = ? AND key = ?", v, 2, &row, &ps))
    return 3;
  if (row) {
    us_store_value val;
    us_store_column(&ps->st, 0, &val);
    lua_pushlstring(L, val.s ? val.s : "", val.len);
  } else {
    lua_pushnil(L);
  }
  us_store_finish(&ps->st);
  return 1;
}

/* Deletes key (at 2); pushes `existed` (or true when as_set), or nil, msg, code. */
static int kv_remove(lua_State *L, int as_set) {
  const char *ns;
  lstore *ls = check_kv(L, &ns);
  us_store_value v[2] = {lua_text(L, -1), lua_text(L, 2)};
  lstmt *ps;
  int row;
  if (kv_run(L, ls, -2, "DELETE FROM kv WHERE namespace = ? AND key = ?", v, 2, &row, &ps))
    return 3;
  lua_pushboolean(L, as_set || ps->st.changes > 0);
  us_store_finish(&ps->st);
  return 1;
}

/* kv:delete(key) -> existed | nil, msg, code */
static int kv_delete(lua_State *L) {
  luaL_checkstring(L, 2);
  lua_settop(L, 2);
  return kv_remove(L, 0);
}

/* kv:set(key, value) -> true | nil, msg, code. value nil deletes. */
static int kv_set(lua_State *L) {
  luaL_checkstring(L, 2);
  if (lua_isnoneornil(L, 3)) {
    lua_settop(L, 2);
    return kv_remove(L, 1);
  }
  int t = lua_type(L, 3);
  luaL_argexpected(L, t == LUA_TSTRING || t == LUA_TNUMBER, 3, "string (JSON-encode tables)");
  lua_tostring(L, 3); /* numbers become their string */
  lua_settop(L, 3);
  const char *ns;
  lstore *ls = check_kv(L, &ns);
  us_store_value v[3] = {lua_text(L, -1), lua_text(L, 2), lua_text(L, 3)};
  lstmt *ps;
  int row;
  if (kv_run(L, ls, -2,
             "INSERT INTO kv (namespace, key, value) VALUES (?, ?, ?) ON CONFLICT (namespace, key)"
             " DO UPDATE SET value = excluded.value,"
             " updated = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
             v, 3, &row, &ps))
    return 3;
  us_store_finish(&ps->st);
  lua_pushboolean(L, 1);
  return 1;
}

/* kv:list([prefix]) -> { key = value } | nil, msg, code */
static int kv_list(lua_State *L) {
  const char *prefix = luaL_optstring(L, 2, "");
  lua_settop(L, 2);
  lua_pushstring(L, prefix);
  lua_replace(L, 2);
  const char *ns;
  lstore *ls = check_kv(L, &ns);
  us_store_value v[2] = {lua_text(L, -1), lua_text(L, 2)};
  lstmt *ps;
  int row;
  if (kv_run(L, ls, -2,
             "SELECT key, value FROM kv WHERE namespace = ?1"
             " AND substr(key, 1, length(?2)) = ?2 ORDER BY key",
             v, 2, &row, &ps))
    return 3;
  lua_newtable(L);
  while (row) {
    us_store_value k, val;
    us_store_column(&ps->st, 0, &k);
    us_store_column(&ps->st, 1, &val);
    lua_pushlstring(L, k.s ? k.s : "", k.len);
    lua_pushlstring(L, val.s ? val.s : "", val.len);
    lua_rawset(L, -3);
    if (us_store_step(&ps->st, &row)) {
      us_store_finish(&ps->st);
      return push_failure(L, ls->s);
    }
  }
  us_store_finish(&ps->st);
  return 1;
}

/* ------------------------------------------------------------------ */
/* Stmt */

static int stmt_release(lua_State *L) {
  lstmt *ps = luaL_checkudata(L, 1, STMT_MT);
  us_store_finish(&ps->st);
  ps->done = 1;
  return 0;
}

/* ------------------------------------------------------------------ */

static const luaL_Reg store_funcs[] = {
    {"open", store_open},
    {NULL, NULL},
};

static const luaL_Reg store_methods[] = {
    {"exec", db_exec},       {"query", db_query},     {"first", db_first},
    {"rows", db_rows},       {"each", db_each},       {"transaction", db_transaction},
    {"kv", db_kv},           {"lock", db_lock},       {"unlock", db_unlock},
    {"version", db_version}, {"path", db_path}, {"release_cache", db_release_cache},       {"close", db_close},
    {NULL, NULL},
};

static const luaL_Reg store_meta[] = {
    {"__gc", db_close},
    {"__close", db_close},
    {"__tostring", db_tostring},
    {NULL, NULL},
};

static const luaL_Reg kv_methods[] = {
    {"get", kv_get}, {"set", kv_set}, {"delete", kv_delete}, {"list", kv_list}, {NULL, NULL},
};

static const luaL_Reg stmt_meta[] = {
    {"__gc", stmt_release},
    {"__close", stmt_release},
    {NULL, NULL},
};

int luaopen_usersync_store(lua_State *L) {
  us_lua_class(L, STORE_MT, store_meta, store_methods);
  us_lua_class(L, STMT_MT, stmt_meta, NULL);
  us_lua_class(L, KV_MT, NULL, kv_methods);
  luaL_newlib(L, store_funcs);
  lua_pushinteger(L, US_STORE_SCHEMA_VERSION);
  lua_setfield(L, -2, "SCHEMA_VERSION");
  return 1;
}
