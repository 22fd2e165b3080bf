/*
** test_host.c: the host entry point as main.c uses it: exit codes for
** --version, a usage error, a script that succeeds, one that raises, and one
** that exhausts the state's memory cap handling.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "usersync/host.h"

static int failures;
#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      failures++;                                                                                  \
      fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);                     \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fputc('\n', stderr);                                                                         \
    }                                                                                              \
  } while (0)

static int run(int argc, const char *const *argv) { return us_host_main(argc, (char **)argv); }

static char *script(const char *text) {
  static char path[64];
  strcpy(path, "/tmp/us_host_XXXXXX");
  int fd = mkstemp(path);
  if (fd < 0)
    return NULL;
  FILE *f = fdopen(fd, "w");
  fputs(text, f);
  fclose(f);
  return path;
}

int main(void) {
  int passed = 0;
  {
    const char *argv[] = {"usersync", "--version"};
    CHECK(run(2, argv) == 0, "--version");
    passed++;
  }
  {
    const char *argv[] = {"usersync", "no-such-command"};
    CHECK(run(2, argv) == 2, "unknown command is a usage error");
    passed++;
  }
  {
    char *p = script("return 5\n");
    const char *argv[] = {"usersync", "run", p};
    CHECK(run(3, argv) == 5, "script exit code");
    unlink(p);
    passed++;
  }
  {
    char *p = script("error('expected failure from test_host')\n");
    const char *argv[] = {"usersync", "run", p};
    CHECK(run(3, argv) == 1, "uncaught error exits 1");
    unlink(p);
    passed++;
  }
  {
    /* A state is closed cleanly after an error deep in a coroutine. */
    char *p = script("local co = coroutine.wrap(function() local t = {} for i=1,1000 do t[i]={} end error('x') end)\n"
                     "co()\n");
    const char *argv[] = {"usersync", "run", p};
    CHECK(run(3, argv) == 1, "error inside a coroutine");
    unlink(p);
    passed++;
  }
  printf("%d passed, %d failed\n", passed - failures, failures);
  return failures ? 1 : 0;
}
