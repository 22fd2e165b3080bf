/*
** test_linkset.c: the compact links and owned memberships
** (include/usersync/linkset.h): lookup by Okta id and by account name in
** any case, a link taken twice refused, owned memberships recorded in any
** order and before or after a lookup, and 100,000 links with 500,000
** memberships in a few MB.
*/
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "usersync/linkset.h"

static void test_links(void) {
  us_linkset *s = us_linkset_new();
  CHECK(s != NULL);
  CHECK_EQ_LONG(us_linkset_add(s, "00u1", "Alice", NULL), 0);
  CHECK_EQ_LONG(us_linkset_add(s, "00u2", "bob", "2819c223"), 1);
  CHECK_EQ_LONG(us_linkset_count(s), 2);

  CHECK_EQ_LONG(us_linkset_find(s, "00u1", 4), 0);
  CHECK_EQ_LONG(us_linkset_find(s, "00U1", 4), -1); /* ids compare exactly */
  CHECK_EQ_LONG(us_linkset_find(s, "00u", 3), -1);
  CHECK_EQ_LONG(us_linkset_find(s, "00u1\0x", 6), -1); /* a NUL inside: not the id */
  CHECK_EQ_LONG(us_linkset_find_name(s, "ALICE", 5), 0);
  CHECK_EQ_LONG(us_linkset_find_name(s, "Bob", 3), 1);
  CHECK_EQ_LONG(us_linkset_find_name(s, "bobx", 4), -1);

  const char *id, *name, *aid;
  us_linkset_get(s, 1, &id, &name, &aid);
  CHECK_STR(id, "00u2");
  CHECK_STR(name, "bob");
  CHECK_STR(aid, "2819c223");
  us_linkset_get(s, 0, &id, &name, &aid);
  CHECK_STR(name, "Alice");
  CHECK(aid == NULL);

  /* the store keeps an Okta id and an account name (any case) to one link */
  CHECK_EQ_LONG(us_linkset_add(s, "00u1", "carol", NULL), -2);
  CHECK_EQ_LONG(us_linkset_add(s, "00u3", "ALICE", NULL), -2);
  CHECK_EQ_LONG(us_linkset_count(s), 2);
  us_linkset_free(s);
}

static void test_owned(void) {
  us_linkset *s = us_linkset_new();
  us_linkset_add(s, "00u1", "alice", NULL);
  us_linkset_add(s, "00u2", "bob", NULL);
  us_linkset_add(s, "00u3", "carol", NULL);
  CHECK_EQ_LONG(us_linkset_owned(s, 0, "devs", 4), -1); /* none yet */

  /* recorded by group, as the store gives them */
  CHECK_EQ_LONG(us_linkset_own(s, 1, "devs", US_WHY_MAPPING), 0);
  CHECK_EQ_LONG(us_linkset_own(s, 0, "devs", US_WHY_ANY), 0);
  CHECK_EQ_LONG(us_linkset_own(s, 1, "okta-synced", US_WHY_DEFAULT), 0);
  CHECK_EQ_LONG(us_linkset_own(s, 0, "okta-synced", US_WHY_DEFAULT), 0);
  CHECK_EQ_LONG(us_linkset_own(s, 1, "new-hires", US_WHY_NEW_USER), 0);
  CHECK_EQ_LONG(us_linkset_owned(s, 0, "devs", 4), US_WHY_ANY);
  CHECK_EQ_LONG(us_linkset_owned(s, 1, "devs", 4), US_WHY_MAPPING);
  CHECK_EQ_LONG(us_linkset_owned(s, 1, "okta-synced", 11), US_WHY_DEFAULT);
  CHECK_EQ_LONG(us_linkset_owned(s, 1, "new-hires", 9), US_WHY_NEW_USER);
  CHECK_EQ_LONG(us_linkset_owned(s, 0, "new-hires", 9), -1);
  CHECK_EQ_LONG(us_linkset_owned(s, 2, "devs", 4), -1);
  CHECK_EQ_LONG(us_linkset_owned(s, 1, "DEVS", 4), -1); /* groups compare exactly */
  CHECK_EQ_LONG(us_linkset_owned(s, 1, "nope", 4), -1);

  /* more after a lookup, and a link added since: sorted in; the same
  ** group again replaces its why */
  us_linkset_add(s, "00u4", "dave", NULL);
  CHECK_EQ_LONG(us_linkset_own(s, 3, "devs", US_WHY_MAPPING), 0);
  CHECK_EQ_LONG(us_linkset_own(s, 0, "devs", US_WHY_NEW_USER), 0);
  CHECK_EQ_LONG(us_linkset_own(s, 2, "ops", US_WHY_MAPPING), 0);
  CHECK_EQ_LONG(us_linkset_owned(s, 3, "devs", 4), US_WHY_MAPPING);
  CHECK_EQ_LONG(us_linkset_owned(s, 0, "devs", 4), US_WHY_NEW_USER);
  CHECK_EQ_LONG(us_linkset_owned(s, 0, "okta-synced", 11), US_WHY_DEFAULT);
  CHECK_EQ_LONG(us_linkset_owned(s, 2, "ops", 3), US_WHY_MAPPING);
  CHECK_EQ_LONG(us_linkset_owned(s, 1, "ops", 3), -1);

  CHECK_EQ_LONG(us_linkset_ngroups(s), 4);
  CHECK_STR(us_linkset_group(s, 0), "devs");
  CHECK_STR(us_linkset_group(s, 3), "ops");
  us_linkset_free(s);
}

static void test_many(void) {
  enum { N = 100000 };
  us_linkset *s = us_linkset_new();
  char id[32], name[32], upper[32], g[16];
  size_t text = 0;
  for (int i = 0; i < N; i++) {
    snprintf(id, sizeof id, "00u%017d", i);
    snprintf(name, sizeof name, "user%06d@example.com", i);
    long k = us_linkset_add(s, id, name, NULL);
    if (k != i) {
      CHECK_EQ_LONG(k, i);
      break;
    }
    text += strlen(id) + strlen(name) + 2;
  }
  /* by group, as the store gives them: 5 groups per link */
  for (int j = 0; j < 50; j++) {
    snprintf(g, sizeof g, "group-%02d", j);
    for (int i = j % 10; i < N; i += 10)
      us_linkset_own(s, (size_t)i, g, 1 + (i + j) % 3);
  }
  int bad = 0;
  for (int i = 0; i < N; i++) {
    snprintf(id, sizeof id, "00u%017d", i);
    snprintf(upper, sizeof upper, "USER%06d@EXAMPLE.COM", i);
    long k = us_linkset_find_name(s, upper, strlen(upper));
    bad += k != i || us_linkset_find(s, id, strlen(id)) != i;
    for (int j = i % 10; j < 50; j += 10) {
      snprintf(g, sizeof g, "group-%02d", j);
      bad += us_linkset_owned(s, (size_t)i, g, strlen(g)) != 1 + (i + j) % 3;
    }
    snprintf(g, sizeof g, "group-%02d", (i + 1) % 10);
    bad += us_linkset_owned(s, (size_t)i, g, strlen(g)) != -1;
  }
  CHECK_EQ_LONG(bad, 0);
  size_t bytes = us_linkset_bytes(s);
  fprintf(stderr, "# 100,000 links, 500,000 owned memberships: %zu bytes (%zu of text)\n", bytes, text);
  CHECK(bytes < text * 2 + (size_t)N * 40);
  us_linkset_free(s);
}

int main(void) {
  test_links();
  test_owned();
  test_many();
  printf("%d checks, %d failures\n", checks, failures);
  return failures > 0;
}
