/*
** bind_core.c: `usersync.core`, what the built-in Lua library needs from the
** host itself: library versions, memory accounting, terminal queries
** (isatty, termsize), sandboxed calls with an instruction budget and a
** memory cap, the command line's SIGINT (catch_interrupts, interrupted),
** and core.traceback: the message handler every protected callback uses
** (xpcall(fn, core.traceback, ...)), the one the host runs commands under.
*/
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>
#include <openssl/crypto.h>
#include <pcre2.h>
#include <sqlite3.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "usersync/modules.h"

/* How many VM instructions pass between two checks of the budget. */
#define BUDGET_STEP 1000
/* Registry key of the message the last spent budget raised. */
#define BUDGET_MSG "usersync.core.budget_message"

/* core.versions() -> { usersync=, lua=, curl=, tls=, pcre2=, sqlite=, openssl= } */
static int core_versions(lua_State *L) {
  const curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);
  char pcre[64] = "";
  pcre2_config(PCRE2_CONFIG_VERSION, pcre);
  lua_newtable(L);
  lua_pushliteral(L, USERSYNC_VERSION);
  lua_setfield(L, -2, "usersync");
  lua_pushliteral(L, LUA_RELEASE);
  lua_setfield(L, -2, "lua");
  lua_pushstring(L, cv->version);
  lua_setfield(L, -2, "curl");
  lua_pushstring(L, cv->ssl_version ? cv->ssl_version : "none");
  lua_setfield(L, -2, "tls");
  lua_pushstring(L, pcre);
  lua_setfield(L, -2, "pcre2");
  lua_pushstring(L, sqlite3_libversion());
  lua_setfield(L, -2, "sqlite");
  lua_pushstring(L, OpenSSL_version(OPENSSL_VERSION));
  lua_setfield(L, -2, "openssl");
  return 1;
}

/* core.memory() -> bytes used, limit */
static int core_memory(lua_State *L) {
  struct us_host_state *hs = us_host_state(L);
  lua_pushinteger(L, (lua_Integer)hs->used);
  lua_pushinteger(L, (lua_Integer)hs->limit);
  return 2;
}

/* Count hook: charges BUDGET_STEP instructions; raises "<chunk>:<line>:
** instruction budget of N exceeded" naming the running script when spent. */
static void budget_hook(lua_State *L, lua_Debug *ar) {
  struct us_host_state *hs = us_host_state(L);
  if (hs->budget < 0)
    return;
  int first = hs->budget > 0;
  hs->budget -= BUDGET_STEP;
  hs->charged += BUDGET_STEP;
  if (hs->budget > 0)
    return;
  /* Spent: raise now and on every instruction after, until sandbox_call
  ** returns and restores the hook, so a script that catches the error
  ** (pcall, coroutine.resume) is stopped by its very next instruction.
  ** Every raise repeats the first message (naming the script and line
  ** that spent the budget), not the runtime code that rethrows it. */
  hs->budget = 0;
  lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
  if (!first && lua_getfield(L, LUA_REGISTRYINDEX, BUDGET_MSG) == LUA_TSTRING)
    lua_error(L);
  lua_Debug info;
  if (lua_getstack(L, 0, &info) && lua_getinfo(L, "Sl", &info) && info.currentline > 0)
    lua_pushfstring(L, "%s:%d: instruction budget of %I exceeded (runaway loop?)", info.short_src,
                    info.currentline, (lua_Integer)hs->budget_total);
  else
    lua_pushfstring(L, "instruction budget of %I exceeded (runaway loop?)",
                    (lua_Integer)hs->budget_total);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, BUDGET_MSG);
  lua_error(L);
}

/* core.sandbox_call(instructions, memory, fn, ...) -> true, results... |
** false, err. Runs fn under a protected call with a traceback, at most
** `instructions` VM instructions (0: no budget) and at most `memory` more
** bytes (0: no cap beyond the state's). Nested calls keep the outer limits
** when they are tighter, and what a nested call spends is spent by the
** outer call too: calling in again does not refill the outer budget. */
static int core_sandbox_call(lua_State *L) {
  lua_Integer instructions = luaL_checkinteger(L, 1);
  lua_Integer memory = luaL_checkinteger(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  struct us_host_state *hs = us_host_state(L);
  long long saved_budget = hs->budget, saved_total = hs->budget_total;
  long long charged_before = hs->charged;
  size_t saved_limit = hs->limit;
  lua_Hook saved_hook = lua_gethook(L);
  int saved_mask = lua_gethookmask(L), saved_count = lua_gethookcount(L);
  int own_budget = 0;

  if (instructions > 0 && (hs->budget < 0 || instructions < hs->budget)) {
    own_budget = 1;
    hs->budget = instructions;
    hs->budget_total = instructions;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, BUDGET_STEP);
  }
  if (memory > 0 && hs->used + (size_t)memory < hs->limit)
    hs->limit = hs->used + (size_t)memory;

  int nargs = lua_gettop(L) - 3;
  lua_pushcfunction(L, us_lua_traceback);
  lua_insert(L, 3);
  int status = lua_pcall(L, nargs, LUA_MULTRET, 3);

  if (own_budget) {
    /* The outer budget (if any) pays for what this call spent; without
    ** one of its own, the call spent straight from hs->budget. */
    long long spent = hs->charged - charged_before;
    if (saved_budget >= 0)
      saved_budget = saved_budget > spent ? saved_budget - spent : 0;
    hs->budget = saved_budget;
    hs->budget_total = saved_total;
  }
  hs->limit = saved_limit;
  lua_sethook(L, saved_hook, saved_mask, saved_count);
  if (hs->budget == 0 && saved_hook == budget_hook)
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1); /* the outer budget is spent too */

  if (status == LUA_ERRMEM) {
    lua_settop(L, 0);
    lua_pushboolean(L, 0);
    if (memory > 0)
      lua_pushfstring(L, "memory cap of %I bytes exceeded", memory);
    else
      lua_pushfstring(L, "not enough memory (state limit %I bytes)", (lua_Integer)hs->limit);
    return 2;
  }
  lua_pushboolean(L, status == LUA_OK);
  lua_replace(L, 3);
  return lua_gettop(L) - 2;
}

/* core.sandbox_charged() -> instructions charged to sandboxed calls so far
** (counted in steps of BUDGET_STEP), for budgets that span many calls. */
static int core_sandbox_charged(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)us_host_state(L)->charged);
  return 1;
}

/* core.sandbox_active() -> true while a sandboxed call's budget is running. */
static int core_sandbox_active(lua_State *L) {
  lua_pushboolean(L, us_host_state(L)->budget >= 0);
  return 1;
}

/* core.isatty(fd) -> boolean (0 stdin, 1 stdout, 2 stderr) */
static int core_isatty(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= 1024, 1, "expected a file descriptor");
  lua_pushboolean(L, isatty((int)fd) == 1);
  return 1;
}

/* core.termsize(fd) -> columns, rows of the terminal on fd | nil when fd
** is not a terminal or its size is unknown (ioctl TIOCGWINSZ). */
static int core_termsize(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= 1024, 1, "expected a file descriptor");
  struct winsize ws;
  if (ioctl((int)fd, TIOCGWINSZ, &ws) != 0 || ws.ws_col == 0) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushinteger(L, ws.ws_col);
  lua_pushinteger(L, ws.ws_row);
  return 2;
}

/* SIGINTs received since core.catch_interrupts(). A signal handler can
** reach nothing else, so this one counter is process-wide (like the signal). */
static volatile sig_atomic_t interrupts = 0;

/* The first SIGINT is counted (the command stops between operations); a
** second one ends the process at once, as SIGINT does by default. */
static void on_interrupt(int sig) {
  if (interrupts > 0) {
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  interrupts = 1;
}

/* core.catch_interrupts() -> true | false when SIGINT was ignored when the
** process started (a background job of a script): it stays ignored. */
static int core_catch_interrupts(lua_State *L) {
  struct sigaction old;
  if (sigaction(SIGINT, NULL, &old) == 0 && old.sa_handler == SIG_IGN) {
    lua_pushboolean(L, 0);
    return 1;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  lua_pushboolean(L, sigaction(SIGINT, &sa, NULL) == 0);
  return 1;
}

/* core.interrupted() -> true once a SIGINT arrived (catch_interrupts). */
static int core_interrupted(lua_State *L) {
  lua_pushboolean(L, interrupts > 0);
  return 1;
}

static const luaL_Reg core_funcs[] = {
    {"catch_interrupts", core_catch_interrupts},
    {"interrupted", core_interrupted},
    {"isatty", core_isatty},
    {"termsize", core_termsize},
    {"versions", core_versions},
    {"memory", core_memory},
    {"sandbox_call", core_sandbox_call},
    {"sandbox_charged", core_sandbox_charged},
    {"sandbox_active", core_sandbox_active},
    {"traceback", us_lua_traceback},
    {NULL, NULL},
};

int luaopen_usersync_core(lua_State *L) {
  luaL_newlib(L, core_funcs);
  return 1;
}
