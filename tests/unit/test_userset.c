/*
** test_userset.c: the compact Okta user set (include/usersync/userset.h):
** ids and values holding NULs and escapes kept byte for byte, lookups
** that never match a prefix or a longer id, memberships that come before
** or after the user's record, member-only ids dropped by finish, records
** replaced in place, groups sorted, interned statuses, and 100,000 users
** found by id in well under the ~660 bytes a user took as Lua tables.
*/
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "usersync/userset.h"

static const char *const SLOTS[] = {"status", "lastLogin", "profile.login", "profile.n", "profile.status"};
enum { ST, LASTLOGIN, LOGIN, PN, PSTATUS, NSLOTS };

/* Whether slot k of user i is the text v[0..len). */
static int is_text(const us_userset *s, size_t i, size_t k, const char *v, size_t len) {
  struct us_uval x = us_userset_value(s, i, k);
  return x.type == US_UV_STR && x.len == len && memcmp(x.s, v, len) == 0 && x.s[len] == '\0';
}

static void test_values_and_nuls(void) {
  us_userset *s = us_userset_new(NSLOTS, SLOTS);
  CHECK(s != NULL);
  CHECK_EQ_LONG(us_userset_nslots(s), NSLOTS);
  CHECK_STR(us_userset_slot_name(s, LOGIN), "profile.login");

  int added = 0;
  long a = us_userset_put(s, "00u\0a", 5, &added); /* an id with a NUL in it */
  CHECK_EQ_LONG(a, 0);
  CHECK_EQ_LONG(added, 1);
  CHECK_EQ_LONG(us_userset_set_str(s, (size_t)a, ST, "ACTIVE", 6), 0);
  CHECK_EQ_LONG(us_userset_set_str(s, (size_t)a, LOGIN, "ann\0\"\\\n\xe2\x82\xac", 10), 0);
  CHECK_EQ_LONG(us_userset_set_int(s, (size_t)a, PN, -42), 0);
  us_userset_set_kind(s, (size_t)a, LASTLOGIN, US_UV_NULL);
  us_userset_set_profile(s, (size_t)a, 1);
  long b = us_userset_put(s, "00u", 3, &added);
  CHECK_EQ_LONG(b, 1);
  CHECK_EQ_LONG(us_userset_set_str(s, (size_t)b, ST, "ACTIVE", 6), 0);
  CHECK_EQ_LONG(us_userset_set_str(s, (size_t)b, PSTATUS, "ACTIVE", 6), 0);
  CHECK_EQ_LONG(us_userset_set_num(s, (size_t)b, PN, 1.5), 0);
  us_userset_set_kind(s, (size_t)b, LASTLOGIN, US_UV_EXT);
  char big[300]; /* a length that takes two bytes to write */
  memset(big, 'x', sizeof big);
  CHECK_EQ_LONG(us_userset_set_str(s, (size_t)b, LOGIN, big, sizeof big), 0);

  /* exact ids only: not a prefix, not with the NUL's tail cut */
  CHECK_EQ_LONG(us_userset_find(s, "00u\0a", 5), 0);
  CHECK_EQ_LONG(us_userset_find(s, "00u", 3), 1);
  CHECK_EQ_LONG(us_userset_find(s, "00u\0", 4), -1);
  CHECK_EQ_LONG(us_userset_find(s, "00u\0ab", 6), -1);
  CHECK_EQ_LONG(us_userset_find(s, "00U", 3), -1);
  CHECK_EQ_LONG(us_userset_find(s, "", 0), -1);

  size_t len;
  const char *id = us_userset_id(s, 0, &len);
  CHECK(len == 5 && memcmp(id, "00u\0a", 5) == 0);
  CHECK(is_text(s, 0, LOGIN, "ann\0\"\\\n\xe2\x82\xac", 10));
  CHECK(is_text(s, 1, LOGIN, big, sizeof big));
  struct us_uval v = us_userset_value(s, 0, PN);
  CHECK(v.type == US_UV_INT && v.i == -42);
  v = us_userset_value(s, 1, PN);
  CHECK(v.type == US_UV_NUM && v.n == 1.5);
  CHECK(us_userset_value(s, 0, LASTLOGIN).type == US_UV_NULL);
  CHECK(us_userset_value(s, 1, LASTLOGIN).type == US_UV_EXT);
  CHECK(us_userset_value(s, 1, ST).type == US_UV_STR);
  CHECK(us_userset_value(s, 0, PSTATUS).type == US_UV_NIL);
  CHECK(us_userset_has_profile(s, 0) && !us_userset_has_profile(s, 1));
  /* the status is interned (one text for both users); a profile field of
  ** that name is a field like any other */
  CHECK(us_userset_value(s, 0, ST).s == us_userset_value(s, 1, ST).s);
  CHECK(us_userset_value(s, 1, PSTATUS).s != us_userset_value(s, 1, ST).s);
  CHECK_EQ_LONG(us_userset_ntexts(s), 1);

  /* the same id again: replaced in place, its fields cleared first */
  CHECK_EQ_LONG(us_userset_put(s, "00u", 3, &added), 1);
  CHECK_EQ_LONG(added, 0);
  CHECK_EQ_LONG(us_userset_count(s), 2);
  CHECK(us_userset_value(s, 1, LOGIN).type == US_UV_NIL);
  CHECK_EQ_LONG(us_userset_finish(s), 0);
  CHECK_EQ_LONG(us_userset_count(s), 2);
  CHECK_EQ_LONG(us_userset_find(s, "00u", 3), 1);
  us_userset_free(s);
  us_userset_free(NULL);
}

/* Groups: before and after the record, deduplicated, sorted bytewise;
** ids only ever seen as members are gone once finished. */
static void test_members(void) {
  us_userset *s = us_userset_new(0, NULL);
  CHECK(s != NULL);
  CHECK_EQ_LONG(us_userset_add_member(s, "u2", 2, "g-b", 3), 1); /* u2's record comes later */
  CHECK_EQ_LONG(us_userset_add_member(s, "ghost", 5, "g-b", 3), 1);
  CHECK_EQ_LONG(us_userset_put(s, "u1", 2, NULL), 2);
  CHECK_EQ_LONG(us_userset_put(s, "u2", 2, NULL), 0);
  CHECK_EQ_LONG(us_userset_seq(s, 0), 1);
  CHECK_EQ_LONG(us_userset_seq(s, 1), (long)(size_t)UINT32_MAX);
  CHECK_EQ_LONG(us_userset_add_member(s, "u2", 2, "g-a", 3), 1);
  CHECK_EQ_LONG(us_userset_add_member(s, "u2", 2, "g-b", 3), 0);
  const char *gs[] = {"g9", "g10", "g1", "g\0z", "g", "g5"}; /* 6: past the inline two */
  const size_t gl[] = {2, 3, 2, 3, 1, 2};
  for (int k = 0; k < 6; k++)
    CHECK_EQ_LONG(us_userset_add_member(s, "u1", 2, gs[k], gl[k]), 1);
  CHECK_EQ_LONG(us_userset_add_member(s, "u1", 2, "g10", 3), 0);
  CHECK_EQ_LONG(us_userset_count(s), 3);
  CHECK(!us_userset_is_record(s, 1));

  CHECK_EQ_LONG(us_userset_finish(s), 0);
  CHECK_EQ_LONG(us_userset_count(s), 2);
  CHECK_EQ_LONG(us_userset_find(s, "ghost", 5), -1);
  size_t len;
  CHECK(memcmp(us_userset_id(s, 0, &len), "u1", 2) == 0 && len == 2); /* the order the records came */
  CHECK(memcmp(us_userset_id(s, 1, &len), "u2", 2) == 0);
  CHECK_EQ_LONG(us_userset_find(s, "u2", 2), 1);
  CHECK_EQ_LONG(us_userset_ngroups(s, 1), 2);
  CHECK_STR(us_userset_group(s, 1, 0, &len), "g-a");
  CHECK_STR(us_userset_group(s, 1, 1, &len), "g-b");
  const char *want[] = {"g", "g\0z", "g1", "g10", "g5", "g9"};
  const size_t wl[] = {1, 3, 2, 3, 2, 2};
  CHECK_EQ_LONG(us_userset_ngroups(s, 0), 6);
  for (size_t k = 0; k < 6; k++) {
    const char *g = us_userset_group(s, 0, k, &len);
    CHECK(len == wl[k] && memcmp(g, want[k], len) == 0);
  }
  /* more after finishing: another finish takes them */
  CHECK_EQ_LONG(us_userset_put(s, "u3", 2, NULL), 2);
  CHECK_EQ_LONG(us_userset_add_member(s, "u3", 2, "g-b", 3), 1);
  CHECK_EQ_LONG(us_userset_add_member(s, "late", 4, "g-b", 3), 1);
  CHECK_EQ_LONG(us_userset_finish(s), 0);
  CHECK_EQ_LONG(us_userset_count(s), 3);
  CHECK_EQ_LONG(us_userset_find(s, "u3", 2), 2);
  CHECK_EQ_LONG(us_userset_find(s, "late", 4), -1);
  us_userset_free(s);
}

/* 100,000 users of the default policy's fields, each in 3 of 500 groups
** (their members listed before the users): every one found by id, and
** the set well under the ~660 bytes per user of the Lua tables. */
static void test_many(void) {
  enum { N = 100000, G = 500 };
  static const char *const slots[] = {"status", "profile.login", "profile.email", "profile.displayName",
                                      "profile.firstName", "profile.lastName"};
  us_userset *s = us_userset_new(6, slots);
  CHECK(s != NULL);
  char id[32], g[32], v[64];
  for (int i = 0; i < N; i++) {
    snprintf(id, sizeof id, "00u%016d", i);
    for (int k = 0; k < 3; k++) {
      int n = snprintf(g, sizeof g, "00g%016d", (i * 7 + k * 131) % G);
      us_userset_add_member(s, id, strlen(id), g, (size_t)n);
    }
  }
  size_t text = 0;
  for (int i = 0; i < N; i++) {
    snprintf(id, sizeof id, "00u%016d", i);
    long u = us_userset_put(s, id, strlen(id), NULL);
    if (u < 0)
      break;
    us_userset_set_str(s, (size_t)u, 0, i % 10 ? "ACTIVE" : "SUSPENDED", i % 10 ? 6 : 9);
    for (size_t k = 1; k < 6; k++) {
      int n = snprintf(v, sizeof v, "%s.user%d@example.com", k == 1 ? "login" : "x", i);
      us_userset_set_str(s, (size_t)u, k, v, (size_t)n);
      text += (size_t)n + 1;
    }
    us_userset_set_profile(s, (size_t)u, 1);
    text += strlen(id) + 1;
  }
  CHECK_EQ_LONG(us_userset_finish(s), 0);
  CHECK_EQ_LONG(us_userset_count(s), N);
  CHECK_EQ_LONG(us_userset_ntexts(s), G + 2);
  int found = 0, right = 0;
  for (int i = 0; i < N; i++) {
    snprintf(id, sizeof id, "00u%016d", i);
    long u = us_userset_find(s, id, strlen(id));
    found += u == i;
    int n = snprintf(v, sizeof v, "login.user%d@example.com", i);
    right += u >= 0 && is_text(s, (size_t)u, 1, v, (size_t)n) && us_userset_ngroups(s, (size_t)u) == 3;
  }
  CHECK_EQ_LONG(found, N);
  CHECK_EQ_LONG(right, N);
  CHECK_EQ_LONG(us_userset_find(s, "00u0000000000000100000", 22), -1);
  size_t bytes = us_userset_bytes(s);
  fprintf(stderr, "# 100,000 users: %zu bytes (%zu of text)\n", bytes, text);
  CHECK(bytes < text * 2 + (size_t)N * 100);
  CHECK(bytes < (size_t)N * 300);
  us_userset_free(s);
}

int main(void) {
  test_values_and_nuls();
  test_members();
  test_many();
  printf("%d checks, %d failures\n", checks, failures);
  return failures ? 1 : 0;
}
