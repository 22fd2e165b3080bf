/*
** host.h: the Lua host. One Lua state per run, with memory accounting and a
** cap, every built-in module preloaded, the built-in Lua library served from
** the binary, and an instruction budget for sandboxed code.
**
** C code outside the binding layer never sees the lua_State; main.c only calls
** us_host_main().
*/
#ifndef USERSYNC_HOST_H
#define USERSYNC_HOST_H
#include <stddef.h>

/* Default cap on all memory the Lua state holds (bytes). */
#define US_HOST_MEMORY_LIMIT ((size_t)2 << 30)

/* Runs the command line: builds the state, calls the built-in Lua
** `usersync.cli`.main(argv) under a protected call with a traceback, and
** returns the process exit code (0 done, 1 failures, 2 usage/config error,
** 3 safety stop). Never calls exit(). */
int us_host_main(int argc, char **argv);

#endif
