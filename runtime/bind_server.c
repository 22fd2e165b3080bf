/*
** bind_server.c: `usersync.server`, the HTTP server of `usersync serve`
** (runtime/server.c) for Lua.
**
**   local server = require "usersync.server"
**   local srv, err, code = server.start{
**     listen = "127.0.0.1:0",                        -- required; port 0 = a free port
**     tls = { cert = PEM, key = PEM },               -- optional, PEM text
**     hook = { path = "/hooks/okta", secret = S, max_body = 1048576 },  -- optional
**     queue_max = 100000, queue_max_bytes = 64 << 20, dedupe_max = 100000, threads = 2,
**     health_listen = "127.0.0.1:0",                 -- optional: /healthz, /readyz, /metrics only
**     max_connections = 512, max_connections_per_ip = 32, timeout = 5,   -- seconds of silence
**     status = { user = U, password = P, init = JSON },  -- optional: the status page
**     scim = { { name = "entra", token = T }, ... },  -- optional: /scim/v2/<name>/ (scim_server.h)
**   }
**   srv:scim_worker(module, arg)  -> true | nil, msg, code: the SCIM worker thread runs
**                                    require(module).worker(h, arg) (bind_scim.c)
**   srv:port()                    -> integer
**   srv:health_port()             -> integer (nil without health_listen)
**   srv:ready(ok, reason)         -- what /readyz answers
**   srv:wait(timeout_s)           -> "events", { json_text, ... } | "signal", "term"|"int"|"hup"
**                                    | "scim" (a SCIM push was stored)
**                                    | "timeout"   (timeout nil: wait without limit)
**   srv:stopping()                -> boolean (SIGTERM or SIGINT arrived)
**   srv:stats()                   -> { deliveries, accepted, unauthorized, too_large, malformed,
**                                      queue_full, events, duplicates, malformed_events,
**                                      verifications, queued }
**   srv:publish(text)             -- what the status page renders serve's live state from
**   srv:close()                   -- idempotent; also __gc and __close
**
** The status page is rendered in a Lua state of its own (this one is busy
** running syncs), on the server's request threads one at a time: its
** handler is `require("usersync.status_page").handler(init)`, called as
** handler(req, published_text) with req = { method, path, args = {k = v},
** body, host, origin, referer, cookie, tls, stats = srv:stats(), deliveries
** = { { at, result, events, duplicates }, ... } } and returning { status,
** type, body, location, cookie, cacheable, action }. An action (text) is
** queued for this state: srv:wait() -> "actions", { text, ... }.
**
** start returns nil, message, code on an expected failure: "EINVAL" (bad
** value), "EADDRINUSE", "EACCES", "ETLS", "EBUSY" (a server already runs in
** this process), "ESTART". Wrong argument types raise, as does any method
** on a closed server. Call every method from the thread that started it
** (the Lua state's), which holds SIGTERM/SIGINT/SIGHUP blocked until close.
*/
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "usersync/modules.h"
#include "usersync/scim_server.h"
#include "usersync/server.h"

#define SERVER_MT "usersync.server.Server"

/* The status page's renderer: a Lua state of its own, used by one request
** thread at a time (mu), and the text serve last published (snap_mu). */
struct page_ctx {
  pthread_mutex_t mu;
  lua_State *R;
  int handler; /* registry reference in R */
  pthread_mutex_t snap_mu;
  char *snap;
  size_t snap_len;
  char *copy; /* the renderer's copy of snap (under mu), so no Lua error can leave snap_mu held */
  size_t copy_cap;
};

#define PAGE_MEMORY_LIMIT ((size_t)256 << 20)

struct server_ud {
  us_server *srv; /* NULL once closed */
  struct page_ctx *page;
};

static void page_free(struct page_ctx *p) {
  if (!p)
    return;
  us_host_closestate(p->R);
  pthread_mutex_destroy(&p->mu);
  pthread_mutex_destroy(&p->snap_mu);
  free(p->snap);
  free(p->copy);
  free(p);
}

/* In R, protected: the handler from usersync.status_page, referenced. */
static int page_setup(lua_State *R) {
  struct page_ctx *p = lua_touserdata(R, 1);
  size_t len = (size_t)lua_tointeger(R, 3);
  const char *init = lua_touserdata(R, 2);
  lua_getglobal(R, "require");
  lua_pushliteral(R, "usersync.status_page");
  lua_call(R, 1, 1);
  lua_getfield(R, -1, "handler");
  lua_pushlstring(R, init, len);
  lua_call(R, 1, 1);
  luaL_checktype(R, -1, LUA_TFUNCTION);
  p->handler = luaL_ref(R, LUA_REGISTRYINDEX);
  return 0;
}

/* A renderer for init (JSON text), or NULL with a message in err. */
static struct page_ctx *page_new(const char *init, size_t len, char *err, size_t errlen) {
  struct page_ctx *p = calloc(1, sizeof *p);
  if (!p || !(p->R = us_host_newstate(PAGE_MEMORY_LIMIT))) {
    free(p);
    snprintf(err, errlen, "status: out of memory");
    return NULL;
  }
  pthread_mutex_init(&p->mu, NULL);
  pthread_mutex_init(&p->snap_mu, NULL);
  lua_State *R = p->R;
  lua_pushcfunction(R, us_lua_traceback);
  lua_pushcfunction(R, page_setup);
  lua_pushlightuserdata(R, p);
  lua_pushlightuserdata(R, (void *)init);
  lua_pushinteger(R, (lua_Integer)len);
  if (lua_pcall(R, 3, 0, 1) != LUA_OK) {
    const char *m = lua_tostring(R, -1);
    snprintf(err, errlen, "status: %s", m ? m : "cannot start the page renderer");
    page_free(p);
    return NULL;
  }
  lua_settop(R, 0);
  return p;
}

struct page_call {
  struct page_ctx *p;
  us_server *s;
  const struct us_server_page_request *rq;
  struct us_server_page *out;
};

static void set_str(lua_State *R, const char *k, const char *v, size_t len) {
  if (!v)
    return;
  lua_pushlstring(R, v, len);
  lua_setfield(R, -2, k);
}

static void copy_field(lua_State *R, int idx, const char *k, char *dst, size_t size) {
  if (lua_getfield(R, idx, k) == LUA_TSTRING)
    snprintf(dst, size, "%s", lua_tostring(R, -1));
  lua_pop(R, 1);
}

/* In R, protected: calls the handler with the request and fills out. */
static int page_protected(lua_State *R) {
  struct page_call *pc = lua_touserdata(R, 1);
  const struct us_server_page_request *rq = pc->rq;
  struct us_server_page *out = pc->out;
  lua_rawgeti(R, LUA_REGISTRYINDEX, pc->p->handler);
  lua_createtable(R, 0, 12);
  set_str(R, "method", rq->method, strlen(rq->method));
  set_str(R, "path", rq->path, strlen(rq->path));
  set_str(R, "body", rq->body, rq->body_len);
  const char *const hk[] = {"host", "origin", "referer", "cookie"};
  const char *const hv[] = {rq->host, rq->origin, rq->referer, rq->cookie};
  for (int i = 0; i < 4; i++)
    if (hv[i])
      set_str(R, hk[i], hv[i], strlen(hv[i]));
  lua_pushboolean(R, rq->tls);
  lua_setfield(R, -2, "tls");
  lua_newtable(R);
  for (size_t i = 0; rq->args && rq->args[i] && rq->args[i + 1]; i += 2) {
    lua_pushstring(R, rq->args[i + 1]);
    lua_setfield(R, -2, rq->args[i]);
  }
  lua_setfield(R, -2, "args");
  struct us_server_stats st;
  us_server_stats(pc->s, &st);
  lua_createtable(R, 0, 8);
  const struct {
    const char *k;
    uint64_t v;
  } f[] = {{"deliveries", st.deliveries}, {"accepted", st.accepted},
           {"unauthorized", st.unauthorized}, {"too_large", st.too_large},
           {"malformed", st.malformed}, {"queue_full", st.queue_full},
           {"events", st.events}, {"duplicates", st.duplicates},
           {"queued", st.queued}};
  for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
    lua_pushinteger(R, (lua_Integer)f[i].v);
    lua_setfield(R, -2, f[i].k);
  }
  lua_setfield(R, -2, "stats");
  struct us_server_delivery d[US_SERVER_DELIVERIES];
  size_t nd = us_server_deliveries(pc->s, d, US_SERVER_DELIVERIES);
  lua_createtable(R, (int)nd, 0);
  for (size_t i = 0; i < nd; i++) {
    lua_createtable(R, 0, 4);
    lua_pushnumber(R, d[i].at);
    lua_setfield(R, -2, "at");
    lua_pushstring(R, d[i].result);
    lua_setfield(R, -2, "result");
    lua_pushinteger(R, d[i].events);
    lua_setfield(R, -2, "events");
    lua_pushinteger(R, d[i].duplicates);
    lua_setfield(R, -2, "duplicates");
    lua_rawseti(R, -2, (lua_Integer)i + 1);
  }
  lua_setfield(R, -2, "deliveries");
  struct page_ctx *p = pc->p;
  size_t slen = 0;
  int have = 0, oom = 0;
  pthread_mutex_lock(&p->snap_mu);
  if (p->snap) {
    if (p->snap_len + 1 > p->copy_cap) {
      char *c = realloc(p->copy, p->snap_len + 1);
      if (c) {
        p->copy = c;
        p->copy_cap = p->snap_len + 1;
      } else {
        oom = 1;
      }
    }
    if (!oom) {
      memcpy(p->copy, p->snap, p->snap_len);
      slen = p->snap_len;
      have = 1;
    }
  }
  pthread_mutex_unlock(&p->snap_mu);
  if (oom)
    return luaL_error(R, "out of memory");
  if (have)
    lua_pushlstring(R, p->copy, slen);
  else
    lua_pushnil(R);
  lua_call(R, 2, 1);
  luaL_checktype(R, -1, LUA_TTABLE);
  int res = lua_gettop(R);
  lua_getfield(R, res, "status");
  lua_Integer status = lua_tointeger(R, -1);
  lua_pop(R, 1);
  copy_field(R, res, "type", out->ctype, sizeof out->ctype);
  copy_field(R, res, "location", out->location, sizeof out->location);
  copy_field(R, res, "cookie", out->set_cookie, sizeof out->set_cookie);
  lua_getfield(R, res, "cacheable");
  out->cacheable = lua_toboolean(R, -1);
  lua_pop(R, 1);
  size_t len = 0;
  const char *body = NULL;
  if (lua_getfield(R, res, "body") == LUA_TSTRING)
    body = lua_tolstring(R, -1, &len);
  if (body && !(out->body = malloc(len ? len : 1)))
    return luaL_error(R, "out of memory");
  if (body)
    memcpy(out->body, body, len);
  out->len = len;
  lua_pop(R, 1);
  if (lua_getfield(R, res, "action") == LUA_TSTRING) {
    size_t alen;
    const char *a = lua_tolstring(R, -1, &alen);
    if (!us_server_post_action(pc->s, a, alen)) {
      static const char busy[] = "too many requests waiting; try again later\n";
      free(out->body);
      out->body = malloc(sizeof busy);
      out->len = out->body ? sizeof busy - 1 : 0;
      if (out->body)
        memcpy(out->body, busy, sizeof busy);
      snprintf(out->ctype, sizeof out->ctype, "text/plain; charset=utf-8");
      out->location[0] = 0;
      status = 503;
    }
  }
  lua_pop(R, 1);
  out->status = status >= 100 && status <= 599 ? (unsigned)status : 0;
  return 0;
}

/* The server's page handler (us_server_page_fn), on a request thread. */
static void page_cb(void *ud, us_server *s, const struct us_server_page_request *rq,
                    struct us_server_page *out) {
  struct page_ctx *p = ud;
  struct page_call pc = {p, s, rq, out};
  pthread_mutex_lock(&p->mu);
  lua_State *R = p->R;
  lua_settop(R, 0);
  lua_pushcfunction(R, us_lua_traceback);
  lua_pushcfunction(R, page_protected);
  lua_pushlightuserdata(R, &pc);
  if (lua_pcall(R, 1, 0, 1) != LUA_OK) {
    const char *m = lua_tostring(R, -1);
    fprintf(stderr, "usersync serve: the status page failed: %s\n", m ? m : "(no message)");
    free(out->body);
    out->body = NULL;
    out->len = 0;
    out->status = 0;
  }
  lua_settop(R, 0);
  lua_gc(R, LUA_GCSTEP, 0);
  pthread_mutex_unlock(&p->mu);
}

static us_server *check_server(lua_State *L) {
  struct server_ud *u = luaL_checkudata(L, 1, SERVER_MT);
  if (!u->srv)
    luaL_error(L, "attempt to use a closed server");
  return u->srv;
}

/* Optional string field k of the table at idx ([-0, +0]; the string stays
** reachable through the table). Raises when present but not a string. */
static const char *opt_string(lua_State *L, int idx, const char *k, size_t *len) {
  lua_getfield(L, idx, k);
  const char *v = NULL;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "server.start: %s must be a string", k);
    v = lua_tolstring(L, -1, len);
  }
  lua_pop(L, 1);
  return v;
}

/* Optional positive integer field; -1 when absent. Raises on a wrong type. */
static lua_Integer opt_size(lua_State *L, int idx, const char *k) {
  lua_getfield(L, idx, k);
  lua_Integer v = -1;
  if (!lua_isnil(L, -1)) {
    int ok;
    v = lua_tointegerx(L, -1, &ok);
    if (!ok)
      luaL_error(L, "server.start: %s must be an integer", k);
  }
  lua_pop(L, 1);
  return v;
}

/* Returns nil, msg, "EINVAL". */
static int einval(lua_State *L, const char *msg) {
  luaL_pushfail(L);
  lua_pushstring(L, msg);
  lua_pushliteral(L, US_SERVER_EINVAL);
  return 3;
}

/* Reads the option sizes into cfg; a message for a value out of range, or NULL. */
static const char *read_sizes(lua_State *L, struct us_server_config *cfg) {
  static const char *const names[] = {"queue_max", "queue_max_bytes", "dedupe_max", "threads",
                                      "max_connections", "max_connections_per_ip", "timeout"};
  lua_Integer v[7];
  for (int i = 0; i < 7; i++) {
    v[i] = opt_size(L, 1, names[i]);
    if (v[i] == 0 || v[i] < -1 || (i == 3 && v[i] > 64))
      return i == 3 ? "threads must be 1..64"
                    : "queue_max, queue_max_bytes, dedupe_max, max_connections, "
                      "max_connections_per_ip, timeout must be > 0";
    if (i >= 4 && v[i] > 65535)
      return "max_connections, max_connections_per_ip, timeout must be at most 65535";
  }
  cfg->max_connections = v[4] > 0 ? (unsigned)v[4] : 0;
  cfg->max_per_ip = v[5] > 0 ? (unsigned)v[5] : 0;
  cfg->timeout_s = v[6] > 0 ? (unsigned)v[6] : 0;
  cfg->queue_max = v[0] > 0 ? (size_t)v[0] : 0;
  cfg->queue_max_bytes = v[1] > 0 ? (size_t)v[1] : 0;
  cfg->dedupe_max = v[2] > 0 ? (size_t)v[2] : 0;
  cfg->threads = v[3] > 0 ? (unsigned)v[3] : 0;
  return NULL;
}

static int server_start(lua_State *L) {
  struct us_server_config cfg;
  memset(&cfg, 0, sizeof cfg);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  cfg.listen = opt_string(L, 1, "listen", NULL);
  if (!cfg.listen)
    return luaL_argerror(L, 1, "listen (\"host:port\") is required");
  cfg.health_listen = opt_string(L, 1, "health_listen", NULL);
  const char *bad = read_sizes(L, &cfg);
  if (bad)
    return einval(L, bad);
  if (lua_getfield(L, 1, "tls") != LUA_TNIL) { /* stays at index 2 */
    if (!lua_istable(L, 2))
      return luaL_error(L, "server.start: tls must be a table { cert = PEM, key = PEM }");
    cfg.tls_cert = opt_string(L, 2, "cert", &cfg.tls_cert_len);
    cfg.tls_key = opt_string(L, 2, "key", &cfg.tls_key_len);
    if (!cfg.tls_cert || !cfg.tls_key)
      return einval(L, "tls: needs both cert and key");
  }
  if (lua_getfield(L, 1, "hook") != LUA_TNIL) { /* index 3 */
    if (!lua_istable(L, 3))
      return luaL_error(L, "server.start: hook must be a table { path =, secret =, max_body = }");
    cfg.hook_path = opt_string(L, 3, "path", NULL);
    cfg.hook_secret = opt_string(L, 3, "secret", &cfg.hook_secret_len);
    lua_Integer mb = opt_size(L, 3, "max_body");
    if (!cfg.hook_path || !cfg.hook_secret)
      return einval(L, "hook: needs path and secret");
    if (mb == 0 || mb < -1)
      return einval(L, "hook: max_body must be > 0");
    cfg.hook_max_body = mb > 0 ? (size_t)mb : 0;
  }
  if (lua_getfield(L, 1, "scim") != LUA_TNIL) { /* index 4 (3 is hook or nil) */
    if (lua_gettop(L) != 4 || !lua_istable(L, 4))
      return luaL_error(L, "server.start: scim must be a list { { name =, token = }, ... }");
    lua_Integer n = luaL_len(L, 4);
    luaL_argcheck(L, n > 0 && n <= 256, 1, "scim: 1 to 256 sources");
    struct us_scim_source_config *sv = lua_newuserdatauv(L, (size_t)n * sizeof *sv, 0); /* 5 */
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, 4, i);
      if (!lua_istable(L, -1))
        return luaL_error(L, "server.start: scim[%d] must be a table", (int)i);
      int t = lua_gettop(L);
      sv[i - 1].name = opt_string(L, t, "name", NULL);
      sv[i - 1].token = opt_string(L, t, "token", &sv[i - 1].token_len);
      if (!sv[i - 1].name || !sv[i - 1].token || !*sv[i - 1].name ||
          strlen(sv[i - 1].name) > US_SCIM_NAME_MAX || strchr(sv[i - 1].name, '/') ||
          sv[i - 1].token_len == 0) {
        return einval(L, "scim: every source needs a name (no '/') and a non-empty token");
      }
      lua_pop(L, 1);
    }
    cfg.scim = sv;
    cfg.scim_n = (size_t)n;
  }
  char err[512];
  struct page_ctx *page = NULL;
  if (lua_getfield(L, 1, "status") != LUA_TNIL) {
    int st = lua_gettop(L);
    if (!lua_istable(L, st))
      return luaL_error(L, "server.start: status must be a table { user =, password =, init = }");
    cfg.page_user = opt_string(L, st, "user", NULL);
    cfg.page_password = opt_string(L, st, "password", NULL);
    size_t ilen = 0;
    const char *init = opt_string(L, st, "init", &ilen);
    if (!cfg.page_user || !cfg.page_password)
      return einval(L, "status: needs user and password");
    if (!(page = page_new(init ? init : "{}", init ? ilen : 2, err, sizeof err)))
      return einval(L, err);
    cfg.page = page_cb;
    cfg.page_ud = page;
  }
  struct server_ud *u = lua_newuserdatauv(L, sizeof *u, 0); /* closed state first */
  u->srv = NULL;
  u->page = page; /* freed with the userdata from here on */
  luaL_setmetatable(L, SERVER_MT);
  const char *code = NULL;
  u->srv = us_server_start(&cfg, err, sizeof err, &code);
  if (!u->srv) {
    luaL_pushfail(L);
    lua_pushstring(L, err);
    lua_pushstring(L, code);
    return 3;
  }
  return 1;
}

static int server_port(lua_State *L) {
  lua_pushinteger(L, us_server_port(check_server(L)));
  return 1;
}

static int server_health_port(lua_State *L) {
  int port = us_server_health_port(check_server(L));
  if (port > 0)
    lua_pushinteger(L, port);
  else
    lua_pushnil(L);
  return 1;
}

static int server_ready(lua_State *L) {
  us_server *s = check_server(L);
  int ok = lua_toboolean(L, 2);
  const char *reason = luaL_optstring(L, 3, ok ? "" : "unknown");
  us_server_set_ready(s, ok, reason);
  return 0;
}

static const char *signal_name(int sig) {
  switch (sig) {
  case SIGTERM:
    return "term";
  case SIGINT:
    return "int";
  case SIGHUP:
    return "hup";
  default:
    return "unknown";
  }
}

/* [-0, +2|1]: the events stay owned by the server until the next wait, and
** the server userdata is argument 1, so a memory error here leaks nothing. */
static int server_wait(lua_State *L) {
  us_server *s = check_server(L);
  long ms = us_lua_opt_timeout_ms(L, 2);
  int sig = 0;
  const struct us_server_event *ev = NULL;
  enum us_server_wake w = us_server_wait(s, ms, &sig, &ev);
  switch (w) {
  case US_SERVER_SIGNAL:
    lua_pushliteral(L, "signal");
    lua_pushstring(L, signal_name(sig));
    return 2;
  case US_SERVER_EVENTS:
  case US_SERVER_ACTIONS: {
    if (w == US_SERVER_ACTIONS)
      lua_pushliteral(L, "actions");
    else
      lua_pushliteral(L, "events");
    lua_newtable(L);
    lua_Integer i = 1;
    for (; ev; ev = ev->next) {
      lua_pushlstring(L, ev->text, ev->len);
      lua_rawseti(L, -2, i++);
    }
    return 2;
  }
  case US_SERVER_SCIM:
    lua_pushliteral(L, "scim");
    return 1;
  default:
    lua_pushliteral(L, "timeout");
    return 1;
  }
}

static int server_stopping(lua_State *L) {
  lua_pushboolean(L, us_server_stopping(check_server(L)));
  return 1;
}

static int server_stats(lua_State *L) {
  struct us_server_stats st;
  us_server_stats(check_server(L), &st);
  const struct {
    const char *k;
    uint64_t v;
  } f[] = {
      {"deliveries", st.deliveries},
      {"accepted", st.accepted},
      {"unauthorized", st.unauthorized},
      {"too_large", st.too_large},
      {"malformed", st.malformed},
      {"queue_full", st.queue_full},
      {"events", st.events},
      {"duplicates", st.duplicates},
      {"malformed_events", st.malformed_events},
      {"verifications", st.verifications},
      {"queued", st.queued},
  };
  lua_createtable(L, 0, (int)(sizeof f / sizeof f[0]));
  for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
    lua_pushinteger(L, (lua_Integer)f[i].v);
    lua_setfield(L, -2, f[i].k);
  }
  return 1;
}

/* close, __gc and __close: idempotent. */
static int server_close(lua_State *L) {
  struct server_ud *u = luaL_checkudata(L, 1, SERVER_MT);
  us_server *s = u->srv;
  u->srv = NULL;
  us_server_close(s); /* no request thread runs after this */
  page_free(u->page);
  u->page = NULL;
  return 0;
}

/* srv:publish(text): what the status page renders serve's state from. */
static int server_publish(lua_State *L) {
  struct server_ud *u = luaL_checkudata(L, 1, SERVER_MT);
  check_server(L);
  size_t len;
  const char *text = luaL_checklstring(L, 2, &len);
  if (!u->page)
    return 0;
  char *copy = malloc(len + 1);
  if (!copy)
    return luaL_error(L, "out of memory");
  memcpy(copy, text, len);
  copy[len] = 0;
  pthread_mutex_lock(&u->page->snap_mu);
  char *old = u->page->snap;
  u->page->snap = copy;
  u->page->snap_len = len;
  pthread_mutex_unlock(&u->page->snap_mu);
  free(old);
  return 0;
}

static int server_tostring(lua_State *L) {
  struct server_ud *u = luaL_checkudata(L, 1, SERVER_MT);
  if (u->srv)
    lua_pushfstring(L, "usersync.server (port %d)", us_server_port(u->srv));
  else
    lua_pushliteral(L, "usersync.server (closed)");
  return 1;
}

static int server_scim_worker(lua_State *L) { return us_bind_scim_worker(L, check_server(L)); }

static const luaL_Reg server_methods[] = {
    {"scim_worker", server_scim_worker},
    {"port", server_port},
    {"health_port", server_health_port},
    {"ready", server_ready},
    {"wait", server_wait},
    {"stopping", server_stopping},
    {"stats", server_stats},
    {"publish", server_publish},
    {"close", server_close},
    {NULL, NULL},
};

static const luaL_Reg server_meta[] = {
    {"__gc", server_close},
    {"__close", server_close},
    {"__tostring", server_tostring},
    {"__index", NULL},
    {NULL, NULL},
};

static const luaL_Reg server_funcs[] = {
    {"start", server_start},
    {NULL, NULL},
};

int luaopen_usersync_server(lua_State *L) {
  luaL_newmetatable(L, SERVER_MT);
  luaL_setfuncs(L, server_meta, 0);
  luaL_newlib(L, server_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, server_funcs);
  return 1;
}
