/*
** linkset.h: the store's links of one sync entry and target, and the
** memberships usersync added for them, compactly (what a whole-target plan
** looks up per account: a 100,000-user target has 100,000 links and some
** 500,000 owned memberships, which took ~20 MB as Lua tables).
**
** One string arena; a hash index by the Okta id (exact) and one by the
** account name (ASCII case-insensitively, as SQLite's lower() and Lua's
** string.lower in the C locale compare). Owned group names are interned;
** a link's owned memberships are a run of (group, why) codes in one array.
**
**   us_linkset *s = us_linkset_new();
**   long i = us_linkset_add(s, "00u1", "Alice", NULL);     -- its index, -1, -2
**   us_linkset_own(s, i, "jira-users", US_WHY_MAPPING);
**   us_linkset_find_name(s, "ALICE", 5);                   -- == i
**   us_linkset_owned(s, i, "jira-users", 10);              -- US_WHY_MAPPING
**   us_linkset_free(s);
**
** Strings handed out point into the set's arena: valid until the next
** add, own or owned (owned may first compact the memberships added since
** the last lookup, which can move the arena). Text given to add or own
** must not point into the set itself. Uses: libc only.
*/
#ifndef USERSYNC_LINKSET_H
#define USERSYNC_LINKSET_H

#include <stddef.h>

typedef struct us_linkset us_linkset;

/* Why usersync added a membership: a row from before usersync kept why
** (US_WHY_ANY), a group rule, an all-users default, a new-user default. */
enum { US_WHY_ANY = 0, US_WHY_MAPPING = 1, US_WHY_DEFAULT = 2, US_WHY_NEW_USER = 3 };

/* A new empty set, or NULL when out of memory. */
us_linkset *us_linkset_new(void);
void us_linkset_free(us_linkset *s); /* NULL fine */

/* Links Okta user okta_id to account `name` (account_id: the service's id
** of it, or NULL). Returns the link's index (0-based), -1 when out of
** memory, -2 when the Okta id or the name (case-insensitively) is linked
** already (the store keeps both unique per sync entry and target). */
long us_linkset_add(us_linkset *s, const char *okta_id, const char *name, const char *account_id);

size_t us_linkset_count(const us_linkset *s);

/* The index of the link of Okta id id[0..len) (exactly), or -1. */
long us_linkset_find(const us_linkset *s, const char *id, size_t len);
/* The index of the link of account name[0..len) (case-insensitively), or -1. */
long us_linkset_find_name(const us_linkset *s, const char *name, size_t len);

/* Link i's fields (i < count); *account_id NULL when it has none. */
void us_linkset_get(const us_linkset *s, size_t i, const char **okta_id, const char **name,
                    const char **account_id);

/* Records that usersync added link i's account to `group` (as the store
** names it: compared exactly), why one of US_WHY_*. The same group again
** replaces its why. 0, or -1 when out of memory. */
int us_linkset_own(us_linkset *s, size_t i, const char *group, int why);

/* Why usersync added link i's account to group[0..len) (exactly), or -1
** when it did not. Not const: memberships recorded since the last lookup
** are sorted in first. -2 when out of memory doing so. */
int us_linkset_owned(us_linkset *s, size_t i, const char *group, size_t len);

/* The distinct groups of owned memberships: how many, and the k-th in the
** order first seen. */
size_t us_linkset_ngroups(const us_linkset *s);
const char *us_linkset_group(const us_linkset *s, size_t k);

/* Bytes the set holds (its allocations, approximately). */
size_t us_linkset_bytes(const us_linkset *s);

#endif
