/*
** accountset.h: a compact set of target accounts, what a whole-target
** snapshot holds (100,000 accounts in a few MB instead of a Lua table per
** account). One string arena; group names interned (each account's groups
** are a small vector of indices); a hash index by the account's name
** compared case-insensitively (ASCII, as Lua's string.lower in the C
** locale) and one by the service's id where accounts have ids (SCIM).
**
**   us_accountset *s = us_accountset_new();
**   struct us_account_fields a = { .name = "Alice", .email = "a@x", .active = 1 };
**   long i = us_accountset_put(s, &a, NULL);          -- its index, or -1 (out of memory)
**   us_accountset_add_group(s, i, "jira-users", 0);
**   long j = us_accountset_find(s, "ALICE", 5);        -- == i
**   us_accountset_get(s, j, &a);                       -- a's strings point into s
**   us_accountset_free(s);
**
** Strings handed out point into the set's arena: valid until the next
** put or add_group. Uses: libc only.
*/
#ifndef USERSYNC_ACCOUNTSET_H
#define USERSYNC_ACCOUNTSET_H

#include <stddef.h>

typedef struct us_accountset us_accountset;

/* An account's fields; NULL: absent (email hidden, no id). active: 1, 0,
** or -1 unknown. */
struct us_account_fields {
  const char *name, *key, *id, *display_name, *email;
  int active;
};

/* A new empty set (one reference), or NULL when out of memory. */
us_accountset *us_accountset_new(void);
/* Another reference to s (whoever feeds it and whoever reads it may end in
** either order); returns s. */
us_accountset *us_accountset_retain(us_accountset *s);
/* Drops a reference; the last one frees the set. NULL fine. */
void us_accountset_free(us_accountset *s);

/* Adds account a (a->name required), or merges it into the account of
** its name (case-insensitively): the fields a has (non-NULL, active >= 0)
** replace the known ones, name included; its groups stay. Returns the
** account's index (0-based), or -1 when out of memory; *added (optional)
** is 1 when it is new. */
long us_accountset_put(us_accountset *s, const struct us_account_fields *a, int *added);

/* The index of the account named name[0..len) (case-insensitively), or -1. */
long us_accountset_find(const us_accountset *s, const char *name, size_t len);

/* The index of the account whose id is id[0..len) (exactly), or -1. An id
** two accounts claimed is the last one's. */
long us_accountset_find_id(const us_accountset *s, const char *id, size_t len);

size_t us_accountset_count(const us_accountset *s);

/* Whether any account has an id. */
int us_accountset_has_ids(const us_accountset *s);

/* Account i's fields (i < count). */
void us_accountset_get(const us_accountset *s, size_t i, struct us_account_fields *out);

/* Account i's groups: how many, and the k-th (k < that) as interned. */
size_t us_accountset_ngroups(const us_accountset *s, size_t i);
const char *us_accountset_group(const us_accountset *s, size_t i, size_t k);

/* Appends group to account i's groups. dedupe: not when the account is in
** a group of that name already (case-insensitively). Returns 1 (added), 0
** (already a member), -1 (out of memory). */
int us_accountset_add_group(us_accountset *s, size_t i, const char *group, int dedupe);

/* The distinct group names the accounts' groups use (interned, exact
** spelling): how many, and the k-th in the order first seen. */
size_t us_accountset_ngroup_names(const us_accountset *s);
const char *us_accountset_group_name(const us_accountset *s, size_t k);

/* Bytes the set holds (its allocations, approximately). */
size_t us_accountset_bytes(const us_accountset *s);

/* Gives back the room the arena and the account array kept for growth
** (doubling leaves up to half of each unused): for a set that is read in
** whole and then held. Adding more afterwards still works (they grow
** again). Never fails: a failed realloc keeps the room. */
void us_accountset_shrink(us_accountset *s);

#endif
