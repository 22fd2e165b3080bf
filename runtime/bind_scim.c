/*
** bind_scim.c: the SCIM worker of `usersync serve` (scim_server.h): a thread
** with a Lua state of its own that runs `require(module).worker(h, arg)`.
** Started from Lua as srv:scim_worker(module, arg) (bind_server.c).
**
** The handle h (userdata "usersync.scim.Worker") is valid only inside the
** worker's call:
**   h:take(timeout_s)  -> request | false (time-out) | nil (stopping)
**       request = { method, path (after /scim/v2/<source>), source, args =
**       { name = value } (query), body (string or nil), if_match,
**       if_none_match, host }
**   h:answer(status, body [, etag [, location]])   answers the last request
**   h:poke()           -- a write was stored: wakes serve's main loop
** Every request taken must be answered (a request left unanswered when
** the worker returns or raises is answered 500 here). When the worker
** raises, the error is printed to stderr and every later request is
** answered 503.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "usersync/host.h"
#include "usersync/modules.h"
#include "usersync/scim_server.h"
#include "usersync/server.h"

#define WORKER_MT "usersync.scim.Worker"

struct worker {
  us_scim *sc;
  char *module, *arg;
};

struct handle {
  us_scim *sc;
  struct us_scim_request *cur; /* taken, not yet answered */
};

static struct handle *check_handle(lua_State *L) {
  struct handle *h = luaL_checkudata(L, 1, WORKER_MT);
  if (!h->sc)
    luaL_error(L, "the SCIM worker handle is no longer valid");
  return h;
}

static void answer_500(struct handle *h) {
  static const char body[] = "{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:Error\"],"
                             "\"status\":\"500\",\"detail\":\"internal error\"}";
  if (h->cur) {
    us_scim_answer(h->sc, h->cur, 500, body, strlen(body), NULL, NULL);
    h->cur = NULL;
  }
}

static void set_str(lua_State *L, const char *k, const char *v) {
  if (v) {
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
  }
}

static int w_take(lua_State *L) {
  struct handle *h = check_handle(L);
  if (h->cur)
    return luaL_error(L, "take: the last request was not answered");
  long ms = us_lua_opt_timeout_ms(L, 2);
  int stopping = 0;
  struct us_scim_request *r = us_scim_take(h->sc, ms, &stopping);
  if (!r) {
    if (stopping)
      lua_pushnil(L);
    else
      lua_pushboolean(L, 0);
    return 1;
  }
  h->cur = r;
  lua_createtable(L, 0, 9);
  set_str(L, "method", r->method);
  set_str(L, "path", r->path);
  set_str(L, "source", r->source);
  set_str(L, "if_match", r->if_match);
  set_str(L, "if_none_match", r->if_none_match);
  set_str(L, "host", r->host);
  if (r->body.s) {
    lua_pushlstring(L, r->body.s, r->body.n);
    lua_setfield(L, -2, "body");
  }
  lua_createtable(L, 0, (int)r->nargs);
  for (size_t i = 0; i < r->nargs; i++) {
    lua_pushstring(L, r->args[i].value);
    lua_setfield(L, -2, r->args[i].key);
  }
  lua_setfield(L, -2, "args");
  return 1;
}

static int w_answer(lua_State *L) {
  struct handle *h = check_handle(L);
  lua_Integer status = luaL_checkinteger(L, 2);
  size_t len = 0;
  const char *body = luaL_optlstring(L, 3, "", &len);
  const char *etag = luaL_optstring(L, 4, NULL);
  const char *location = luaL_optstring(L, 5, NULL);
  luaL_argcheck(L, status >= 100 && status <= 599, 2, "an HTTP status");
  if (!h->cur)
    return luaL_error(L, "answer: no request taken");
  us_scim_answer(h->sc, h->cur, (unsigned)status, body, len, etag, location);
  h->cur = NULL;
  return 0;
}

static int w_poke(lua_State *L) {
  us_scim_poke(check_handle(L)->sc);
  return 0;
}

static const luaL_Reg worker_methods[] = {
    {"take", w_take},
    {"answer", w_answer},
    {"poke", w_poke},
    {NULL, NULL},
};

/* In protected mode: require(module).worker(h, arg). Upvalue-free; the
** worker struct is argument 1 (light userdata). */
static int worker_pmain(lua_State *L) {
  struct worker *w = lua_touserdata(L, 1);
  struct handle *h = lua_touserdata(L, 2);
  if (luaL_newmetatable(L, WORKER_MT)) {
    luaL_newlib(L, worker_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushstring(L, w->module);
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "worker");
  struct handle *u = lua_newuserdatauv(L, sizeof *u, 0);
  *u = *h;
  luaL_setmetatable(L, WORKER_MT);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, "usersync.scim.handle");
  lua_pushstring(L, w->arg);
  lua_call(L, 2, 0);
  return 0;
}

static void *worker_main(void *p) {
  struct worker *w = p;
  lua_State *L = us_host_newstate(US_HOST_MEMORY_LIMIT);
  if (!L) {
    fprintf(stderr, "usersync: the SCIM worker cannot start: out of memory\n");
    us_scim_broken(w->sc);
  } else {
    struct handle h = {w->sc, NULL};
    lua_pushcfunction(L, us_lua_traceback);
    lua_pushcfunction(L, worker_pmain);
    lua_pushlightuserdata(L, w);
    lua_pushlightuserdata(L, &h);
    int rc = lua_pcall(L, 2, 0, 1);
    /* the handle's request, if one was taken and not answered */
    lua_getfield(L, LUA_REGISTRYINDEX, "usersync.scim.handle");
    struct handle *u = luaL_testudata(L, -1, WORKER_MT);
    if (u) {
      answer_500(u);
      u->sc = NULL;
    }
    if (rc != LUA_OK) {
      const char *msg = lua_tostring(L, -2);
      fprintf(stderr, "usersync: the SCIM worker failed: %s\n", msg ? msg : "(no message)");
      us_scim_broken(w->sc);
    }
    us_host_closestate(L);
  }
  free(w->module);
  free(w->arg);
  free(w);
  return NULL;
}

/* The calling thread (serve's main thread: the sync runs) yields the CPU to
** the request threads and the SCIM worker, created before with the old
** priority: nice +US_SCIM_RUN_NICE for this thread only (Linux keeps a nice
** value per thread). An identity provider's request is then not answered
** late because a large run is planning on a busy machine. */
#define US_SCIM_RUN_NICE 5
static void lower_own_priority(void) {
  pid_t tid = (pid_t)syscall(SYS_gettid);
  errno = 0;
  int now = getpriority(PRIO_PROCESS, (id_t)tid);
  if (errno == 0 && now < 19)
    setpriority(PRIO_PROCESS, (id_t)tid, now + US_SCIM_RUN_NICE > 19 ? 19 : now + US_SCIM_RUN_NICE);
}

/* srv:scim_worker(module, arg) (bind_server.c). Returns true, or nil, msg, code. */
int us_bind_scim_worker(lua_State *L, us_server *srv) {
  const char *module = luaL_checkstring(L, 2);
  const char *arg = luaL_checkstring(L, 3);
  us_scim *sc = us_server_scim(srv);
  if (!sc) {
    luaL_pushfail(L);
    lua_pushliteral(L, "the server was started without scim sources");
    lua_pushliteral(L, "EINVAL");
    return 3;
  }
  struct worker *w = calloc(1, sizeof *w);
  if (w) {
    w->sc = sc;
    w->module = strdup(module);
    w->arg = strdup(arg);
  }
  if (!w || !w->module || !w->arg || us_scim_start_worker(sc, worker_main, w) != 0) {
    if (w) {
      free(w->module);
      free(w->arg);
      free(w);
    }
    luaL_pushfail(L);
    lua_pushliteral(L, "cannot start the SCIM worker thread");
    lua_pushliteral(L, "ESTART");
    return 3;
  }
  lower_own_priority();
  lua_pushboolean(L, 1);
  return 1;
}
