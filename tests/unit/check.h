/*
** check.h: the check macros of the C unit tests that share them. Each test
** file includes it once; CHECK* count into `checks` and `failures`, print
** file:line and what differed on stderr, and main() exits non-zero when
** failures > 0.
*/
#ifndef USERSYNC_TEST_CHECK_H
#define USERSYNC_TEST_CHECK_H
#include <stdio.h>
#include <string.h>

static int failures, checks;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    checks++;                                                                                      \
    if (!(cond)) {                                                                                 \
      failures++;                                                                                  \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                     \
    }                                                                                              \
  } while (0)
#define CHECK_EQ_LONG(a, b)                                                                        \
  do {                                                                                             \
    long a_ = (long)(a), b_ = (long)(b);                                                           \
    checks++;                                                                                      \
    if (a_ != b_) {                                                                                \
      failures++;                                                                                  \
      fprintf(stderr, "%s:%d: %s == %ld, expected %ld\n", __FILE__, __LINE__, #a, a_, b_);         \
    }                                                                                              \
  } while (0)
#define CHECK_STR(a, b)                                                                            \
  do {                                                                                             \
    const char *a_ = (a), *b_ = (b);                                                               \
    checks++;                                                                                      \
    if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                                       \
      failures++;                                                                                  \
      fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a,            \
              a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                             \
    }                                                                                              \
  } while (0)

#endif
