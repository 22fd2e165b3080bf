/*
** test_accountset.c: the compact account set (include/usersync/accountset.h):
** case-insensitive lookup, merging a name met twice, ids, interned groups,
** and 100,000 accounts in a few MB.
*/
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "usersync/accountset.h"

static struct us_account_fields acct(const char *name, const char *email, int active) {
  struct us_account_fields f = {0};
  f.name = name;
  f.email = email;
  f.active = active;
  return f;
}

static void test_lookup_and_merge(void) {
  us_accountset *s = us_accountset_new();
  CHECK(s != NULL);
  int added = 0;
  struct us_account_fields a = acct("Alice", "alice@example.com", 1);
  a.display_name = "Alice A";
  a.key = "Alice";
  CHECK_EQ_LONG(us_accountset_put(s, &a, &added), 0);
  CHECK_EQ_LONG(added, 1);
  struct us_account_fields b = acct("bob", NULL, -1);
  CHECK_EQ_LONG(us_accountset_put(s, &b, &added), 1);
  CHECK_EQ_LONG(us_accountset_count(s), 2);

  /* any case finds it; a prefix or a longer name does not */
  CHECK_EQ_LONG(us_accountset_find(s, "alice", 5), 0);
  CHECK_EQ_LONG(us_accountset_find(s, "ALICE", 5), 0);
  CHECK_EQ_LONG(us_accountset_find(s, "alic", 4), -1);
  CHECK_EQ_LONG(us_accountset_find(s, "alicex", 6), -1);
  CHECK_EQ_LONG(us_accountset_find(s, "BoB", 3), 1);
  CHECK_EQ_LONG(us_accountset_find(s, "carol", 5), -1);

  struct us_account_fields out;
  us_accountset_get(s, 1, &out);
  CHECK_STR(out.name, "bob");
  CHECK(out.email == NULL && out.key == NULL && out.id == NULL && out.display_name == NULL);
  CHECK_EQ_LONG(out.active, -1);

  /* the same name again (other case): merged, its given fields win, the
  ** others and its groups stay */
  CHECK_EQ_LONG(us_accountset_add_group(s, 0, "devs", 0), 1);
  struct us_account_fields again = acct("ALICE", NULL, 0);
  again.display_name = "Alice B";
  CHECK_EQ_LONG(us_accountset_put(s, &again, &added), 0);
  CHECK_EQ_LONG(added, 0);
  CHECK_EQ_LONG(us_accountset_count(s), 2);
  us_accountset_get(s, 0, &out);
  CHECK_STR(out.name, "ALICE");
  CHECK_STR(out.display_name, "Alice B");
  CHECK_STR(out.email, "alice@example.com");
  CHECK_STR(out.key, "Alice");
  CHECK_EQ_LONG(out.active, 0);
  CHECK_EQ_LONG(us_accountset_ngroups(s, 0), 1);
  CHECK_STR(us_accountset_group(s, 0, 0), "devs");

  /* a record met twice with the same text stores nothing more */
  size_t before = us_accountset_bytes(s);
  CHECK_EQ_LONG(us_accountset_put(s, &again, NULL), 0);
  CHECK_EQ_LONG(us_accountset_bytes(s), before);
  CHECK(!us_accountset_has_ids(s));
  us_accountset_free(s);
}

static void test_ids(void) {
  us_accountset *s = us_accountset_new();
  struct us_account_fields a = acct("alice", NULL, 1);
  a.id = "2819c223";
  struct us_account_fields b = acct("bob", NULL, 1);
  b.id = "9a1b";
  us_accountset_put(s, &a, NULL);
  us_accountset_put(s, &b, NULL);
  CHECK(us_accountset_has_ids(s));
  CHECK_EQ_LONG(us_accountset_find_id(s, "2819c223", 8), 0);
  CHECK_EQ_LONG(us_accountset_find_id(s, "9a1b", 4), 1);
  CHECK_EQ_LONG(us_accountset_find_id(s, "9A1B", 4), -1); /* ids compare exactly */
  CHECK_EQ_LONG(us_accountset_find_id(s, "nosuch", 6), -1);
  /* alice's id changes: found by the new one, not the old */
  a.id = "77";
  CHECK_EQ_LONG(us_accountset_put(s, &a, NULL), 0);
  CHECK_EQ_LONG(us_accountset_find_id(s, "77", 2), 0);
  CHECK_EQ_LONG(us_accountset_find_id(s, "2819c223", 8), -1);
  us_accountset_free(s);
}

static void test_groups(void) {
  us_accountset *s = us_accountset_new();
  struct us_account_fields a = acct("alice", NULL, 1);
  us_accountset_put(s, &a, NULL);
  const char *gs[] = {"g0", "g1", "g2", "g3", "g4", "g5", "g6", "g7", "g8", "g9"};
  for (int k = 0; k < 10; k++)
    CHECK_EQ_LONG(us_accountset_add_group(s, 0, gs[k], 0), 1);
  CHECK_EQ_LONG(us_accountset_ngroups(s, 0), 10);
  for (int k = 0; k < 10; k++)
    CHECK_STR(us_accountset_group(s, 0, (size_t)k), gs[k]);
  /* dedupe: a group of that name in any case is already there */
  CHECK_EQ_LONG(us_accountset_add_group(s, 0, "G3", 1), 0);
  CHECK_EQ_LONG(us_accountset_ngroups(s, 0), 10);
  /* without dedupe a listing's entry is appended as it came */
  CHECK_EQ_LONG(us_accountset_add_group(s, 0, "g3", 0), 1);
  CHECK_EQ_LONG(us_accountset_ngroups(s, 0), 11);
  /* interned: 10 distinct names, in the order first seen */
  CHECK_EQ_LONG(us_accountset_ngroup_names(s), 10);
  CHECK_STR(us_accountset_group_name(s, 0), "g0");
  CHECK_STR(us_accountset_group_name(s, 9), "g9");
  CHECK(us_accountset_group(s, 0, 3) == us_accountset_group(s, 0, 10)); /* one copy */
  us_accountset_free(s);
}

/* 100,000 accounts in 20 groups (3 each): every one found by name in
** another case and by id, and the whole set well under 100 bytes of
** overhead per account beyond its text. */
static void test_many(void) {
  enum { N = 100000 };
  us_accountset *s = us_accountset_new();
  char name[64], email[64], id[32], upper[64], g[16];
  size_t text = 0;
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof name, "user%06d", i);
    snprintf(email, sizeof email, "user%06d@example.com", i);
    snprintf(id, sizeof id, "id-%d", i);
    struct us_account_fields a = acct(name, email, i % 7 != 0);
    a.key = name;
    a.display_name = email;
    a.id = id;
    long k = us_accountset_put(s, &a, NULL);
    if (k != i) {
      CHECK_EQ_LONG(k, i);
      break;
    }
    text += strlen(name) + strlen(email) * 2 + strlen(id) + 4;
    for (int j = 0; j < 3; j++) {
      snprintf(g, sizeof g, "group-%02d", (i + j * 7) % 20);
      us_accountset_add_group(s, (size_t)k, g, 0);
    }
  }
  CHECK_EQ_LONG(us_accountset_count(s), N);
  CHECK_EQ_LONG(us_accountset_ngroup_names(s), 20);
  int bad = 0;
  for (int i = 0; i < N; i++) {
    snprintf(upper, sizeof upper, "USER%06d", i);
    snprintf(id, sizeof id, "id-%d", i);
    long k = us_accountset_find(s, upper, strlen(upper));
    bad += k != i || us_accountset_find_id(s, id, strlen(id)) != i || us_accountset_ngroups(s, (size_t)i) != 3;
  }
  CHECK_EQ_LONG(bad, 0);
  size_t bytes = us_accountset_bytes(s);
  fprintf(stderr, "# 100,000 accounts: %zu bytes (%zu of text)\n", bytes, text);
  CHECK(bytes < text * 2 + (size_t)N * 100);

  /* shrunk once read: the arena and the account array at their size (the
  ** doubling left room for up to as much again), the accounts the same */
  us_accountset_shrink(s);
  size_t shrunk = us_accountset_bytes(s);
  fprintf(stderr, "# shrunk: %zu bytes\n", shrunk);
  CHECK(shrunk + (131072 - N) * 32 <= bytes); /* the array's 31,072 spare slots at least */
  bad = 0;
  for (int i = 0; i < N; i++) {
    snprintf(upper, sizeof upper, "USER%06d", i);
    snprintf(email, sizeof email, "user%06d@example.com", i);
    struct us_account_fields f;
    us_accountset_get(s, (size_t)i, &f);
    bad += us_accountset_find(s, upper, strlen(upper)) != i || !f.email || strcmp(f.email, email) != 0;
  }
  CHECK_EQ_LONG(bad, 0);
  /* and it still grows */
  struct us_account_fields more = acct("late-comer", "late@example.com", 1);
  CHECK_EQ_LONG(us_accountset_put(s, &more, NULL), N);
  CHECK_EQ_LONG(us_accountset_add_group(s, N, "group-late", 0), 1);
  CHECK_EQ_LONG(us_accountset_find(s, "LATE-COMER", 10), N);
  us_accountset_free(s);
}

int main(void) {
  test_lookup_and_merge();
  test_ids();
  test_groups();
  test_many();
  printf("%d checks, %d failures\n", checks, failures);
  return failures > 0;
}
