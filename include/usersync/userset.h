/*
** userset.h: a compact set of Okta users, what a whole scope read holds
** (100,000 users in ~20 MB instead of a Lua table, a profile table and a
** groups array per user). Each user has an id, a fixed list of kept
** fields (the set's slots, named once when it is made: "status",
** "profile.login"...), whether it has a profile, and its group ids. One
** arena holds every text (length-prefixed: a NUL inside is kept); group
** ids and the values of "status" are interned, a user's groups are
** indices into the interned list. A hash index finds a user by id.
**
**   const char *slots[] = { "status", "profile.login" };
**   us_userset *s = us_userset_new(2, slots);
**   long i = us_userset_put(s, "00u1", 4);              -- its index, or -1
**   us_userset_set_str(s, i, 1, "ann@x", 5);
**   us_userset_add_member(s, "00u1", 4, "00g7", 4);     -- before or after put
**   us_userset_finish(s);    -- drops ids seen only as members, sorts groups
**   struct us_uval v = us_userset_value(s, i, 1);      -- v.type == US_UV_STR
**   us_userset_free(s);
**
** Texts handed out point into the arena: valid until the next change.
** Uses: libc only.
*/
#ifndef USERSYNC_USERSET_H
#define USERSYNC_USERSET_H

#include <stddef.h>
#include <stdint.h>

typedef struct us_userset us_userset;

/* A kept field's value. EXT: a value the set does not hold itself (a
** table): its holder keeps it, keyed by user and slot. */
enum us_uv_type { US_UV_NIL, US_UV_TRUE, US_UV_FALSE, US_UV_NULL, US_UV_STR, US_UV_INT, US_UV_NUM, US_UV_EXT };

struct us_uval {
  enum us_uv_type type;
  const char *s; /* US_UV_STR: the text (len bytes, then a NUL) */
  size_t len;
  int64_t i;     /* US_UV_INT */
  double n;      /* US_UV_NUM */
};

/* A new empty set whose users keep nslots fields named slots[k] (copied;
** the names are the caller's: "status" and "profile.x" by convention; a
** slot named "status" interns its texts). NULL when out of memory. */
us_userset *us_userset_new(size_t nslots, const char *const *slots);
void us_userset_free(us_userset *s); /* NULL fine */

size_t us_userset_nslots(const us_userset *s);
const char *us_userset_slot_name(const us_userset *s, size_t k);

/* The user of id[0..len) as a record of the listing: its index (0-based),
** or -1 when out of memory. A new user is appended; an id met before as
** a record keeps its place and its fields are cleared (the later record
** wins); one met only as a member becomes a record (in the order records
** are put, once finished). *added (optional): 1 when it was no record. */
long us_userset_put(us_userset *s, const char *id, size_t len, int *added);

/* Sets slot k of user i. 0, or -1 when out of memory. */
int us_userset_set_str(us_userset *s, size_t i, size_t k, const char *v, size_t len);
int us_userset_set_int(us_userset *s, size_t i, size_t k, int64_t v);
int us_userset_set_num(us_userset *s, size_t i, size_t k, double v);
/* type US_UV_NIL, TRUE, FALSE, NULL or EXT */
void us_userset_set_kind(us_userset *s, size_t i, size_t k, enum us_uv_type type);
void us_userset_set_profile(us_userset *s, size_t i, int has);

/* Adds group gid to the groups of the user of id (made a member-only
** entry when no record of it came yet). 1 added, 0 already there, -1 out
** of memory. */
int us_userset_add_member(us_userset *s, const char *id, size_t len, const char *gid, size_t glen);

/* Ends the feeding: users seen only as members are dropped, the records
** are in the order they were first put, each user's groups sorted
** (bytewise). 0, or -1 when out of memory (the set unchanged, or when
** only its new index could not be made, lookups by id finding nothing).
** Further puts and members are allowed (and need another finish). */
int us_userset_finish(us_userset *s);

/* Users (member-only entries included until finished). */
size_t us_userset_count(const us_userset *s);
/* The index of the user of id[0..len), or -1 (member-only entries too
** until finished). */
long us_userset_find(const us_userset *s, const char *id, size_t len);

const char *us_userset_id(const us_userset *s, size_t i, size_t *len);
int us_userset_is_record(const us_userset *s, size_t i);
/* The place of user i among the records (0-based, in the order they were
** first put): its index once finished. Member-only entries: UINT32_MAX. */
size_t us_userset_seq(const us_userset *s, size_t i);
int us_userset_has_profile(const us_userset *s, size_t i);
struct us_uval us_userset_value(const us_userset *s, size_t i, size_t k);

size_t us_userset_ngroups(const us_userset *s, size_t i);
/* The k-th group id of user i, and its interned number (group ids and
** statuses share the numbering: us_userset_ntexts of them). */
const char *us_userset_group(const us_userset *s, size_t i, size_t k, size_t *len);
size_t us_userset_group_index(const us_userset *s, size_t i, size_t k);
size_t us_userset_ntexts(const us_userset *s);

/* Bytes the set holds (its allocations, approximately). */
size_t us_userset_bytes(const us_userset *s);

#endif
