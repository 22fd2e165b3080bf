/*
** linkset.c: the compact links and owned memberships of
** include/usersync/linkset.h.
**
** Strings live in one arena addressed by 32-bit offsets (0: none; the
** arena starts with one unused byte). Three open-addressing hash tables map
** to index + 1 (0: empty): links by Okta id, links by case-folded account
** name, owned group names by exact text. Owned memberships are 32-bit codes
** (group index << 2 | why) in runs per link, codes[start[i] .. start[i+1]);
** those recorded since the last lookup wait as (link, code) pairs and are
** sorted in (a counting sort by link, stable: a later record of the same
** group comes after, and lookups scan a run from its end) before the next,
** and the arena's spare room is given back then (loading is done).
** Uses: libc only.
*/
#include "usersync/linkset.h"
#include "strkey.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct link {
  uint32_t okta_id, name, account_id; /* arena offsets, 0: absent */
};

enum { BY_ID, BY_NAME, BY_GROUP }; /* what a table's keys are */

struct hindex {
  uint32_t *slot; /* index + 1; 0: empty */
  size_t cap;     /* a power of two, or 0 */
  size_t n;
  int kind;
};

struct us_linkset {
  char *arena;
  size_t used, cap;
  struct link *l;
  size_t n, lcap;
  struct hindex by_id, by_name, by_group;
  uint32_t *groups; /* interned group names: arena offsets */
  size_t ngroups, gcap;
  uint32_t *start;  /* sealed links + 1 run starts, or NULL */
  size_t sealed;    /* links when last sorted in */
  uint32_t *codes;  /* the runs */
  size_t ncodes;
  uint64_t *pending; /* link << 32 | code, recorded since */
  size_t npending, pcap;
};

static const char *str(const us_linkset *s, uint32_t off) { return off ? s->arena + off : NULL; }

/* Copies p into the arena: its offset, or 0 when out of memory. */
static uint32_t intern_text(us_linkset *s, const char *p) {
  return sk_arena_text(&s->arena, &s->used, &s->cap, p);
}

/* ---------- hash tables ---------- */

static const char *key_of(const us_linkset *s, int kind, uint32_t v) {
  if (kind == BY_GROUP)
    return str(s, s->groups[v - 1]);
  const struct link *l = &s->l[v - 1];
  return str(s, kind == BY_ID ? l->okta_id : l->name);
}

/* The slot of key[0..len) in h: holding it, or the empty one it would take. */
static uint32_t *slot_of(const us_linkset *s, const struct hindex *h, const char *key, size_t len) {
  int ci = h->kind == BY_NAME;
  size_t mask = h->cap - 1;
  for (size_t i = (size_t)sk_hash(key, len, ci) & mask;; i = (i + 1) & mask) {
    uint32_t v = h->slot[i];
    if (!v)
      return &h->slot[i];
    const char *k = key_of(s, h->kind, v);
    if (ci ? sk_same_ci(key, k, len) : sk_same(key, k, len))
      return &h->slot[i];
  }
}

static long lookup(const us_linkset *s, const struct hindex *h, const char *key, size_t len) {
  if (!h->cap)
    return -1;
  uint32_t v = *slot_of(s, h, key, len);
  return v ? (long)v - 1 : -1;
}

/* Makes room for one more entry in h (load at most 1/2). 0, or -1. */
static int reserve(us_linkset *s, struct hindex *h) {
  if ((h->n + 1) * 2 <= h->cap)
    return 0;
  size_t cap = h->cap ? h->cap * 2 : 64;
  struct hindex g = {calloc(cap, sizeof(uint32_t)), cap, h->n, h->kind};
  if (!g.slot)
    return -1;
  for (size_t i = 0; i < h->cap; i++) {
    uint32_t v = h->slot[i];
    if (v) {
      const char *k = key_of(s, h->kind, v);
      *slot_of(s, &g, k, strlen(k)) = v;
    }
  }
  free(h->slot);
  *h = g;
  return 0;
}

/* ---------- the set ---------- */

us_linkset *us_linkset_new(void) {
  us_linkset *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  s->arena = malloc(4096);
  if (!s->arena) {
    free(s);
    return NULL;
  }
  s->cap = 4096;
  s->arena[0] = '\0';
  s->used = 1; /* offset 0 means "none" */
  s->by_id.kind = BY_ID;
  s->by_name.kind = BY_NAME;
  s->by_group.kind = BY_GROUP;
  return s;
}

void us_linkset_free(us_linkset *s) {
  if (!s)
    return;
  free(s->arena);
  free(s->l);
  free(s->by_id.slot);
  free(s->by_name.slot);
  free(s->by_group.slot);
  free(s->groups);
  free(s->start);
  free(s->codes);
  free(s->pending);
  free(s);
}

size_t us_linkset_count(const us_linkset *s) { return s->n; }

long us_linkset_find(const us_linkset *s, const char *id, size_t len) {
  return lookup(s, &s->by_id, id, len);
}

long us_linkset_find_name(const us_linkset *s, const char *name, size_t len) {
  return lookup(s, &s->by_name, name, len);
}

long us_linkset_add(us_linkset *s, const char *okta_id, const char *name, const char *account_id) {
  size_t idlen = strlen(okta_id), namelen = strlen(name);
  if (lookup(s, &s->by_id, okta_id, idlen) >= 0 || lookup(s, &s->by_name, name, namelen) >= 0)
    return -2;
  if (s->n >= UINT32_MAX - 1 || reserve(s, &s->by_id) || reserve(s, &s->by_name))
    return -1;
  if (s->n == s->lcap) {
    size_t cap = s->lcap ? s->lcap * 2 : 256;
    struct link *l = realloc(s->l, cap * sizeof *l);
    if (!l)
      return -1;
    s->l = l;
    s->lcap = cap;
  }
  struct link *l = &s->l[s->n];
  l->okta_id = intern_text(s, okta_id);
  l->name = l->okta_id ? intern_text(s, name) : 0;
  l->account_id = account_id && l->name ? intern_text(s, account_id) : 0;
  if (!l->okta_id || !l->name || (account_id && !l->account_id))
    return -1; /* the arena keeps what it took: freed with the set */
  size_t i = s->n++;
  *slot_of(s, &s->by_id, okta_id, idlen) = (uint32_t)i + 1; /* after the link: keys are read from it */
  s->by_id.n++;
  *slot_of(s, &s->by_name, name, namelen) = (uint32_t)i + 1;
  s->by_name.n++;
  return (long)i;
}

void us_linkset_get(const us_linkset *s, size_t i, const char **okta_id, const char **name,
                    const char **account_id) {
  const struct link *l = &s->l[i];
  *okta_id = str(s, l->okta_id);
  *name = str(s, l->name);
  *account_id = str(s, l->account_id);
}

/* The interned index of group g: found, or added. -1 when out of memory. */
static long intern_group(us_linkset *s, const char *g) {
  size_t len = strlen(g);
  long k = lookup(s, &s->by_group, g, len);
  if (k >= 0)
    return k;
  if (s->ngroups >= (1u << 30) - 1 || reserve(s, &s->by_group))
    return -1;
  if (s->ngroups == s->gcap) {
    size_t cap = s->gcap ? s->gcap * 2 : 64;
    uint32_t *v = realloc(s->groups, cap * sizeof *v);
    if (!v)
      return -1;
    s->groups = v;
    s->gcap = cap;
  }
  uint32_t off = intern_text(s, g);
  if (!off)
    return -1;
  s->groups[s->ngroups] = off;
  *slot_of(s, &s->by_group, g, len) = (uint32_t)++s->ngroups;
  s->by_group.n++;
  return (long)s->ngroups - 1;
}

int us_linkset_own(us_linkset *s, size_t i, const char *group, int why) {
  long g = intern_group(s, group);
  if (g < 0)
    return -1;
  if (s->npending == s->pcap) {
    size_t cap = s->pcap ? s->pcap * 2 : 256;
    uint64_t *p = realloc(s->pending, cap * sizeof *p);
    if (!p)
      return -1;
    s->pending = p;
    s->pcap = cap;
  }
  s->pending[s->npending++] = (uint64_t)i << 32 | (uint32_t)g << 2 | (uint32_t)(why & 3);
  return 0;
}

/* Sorts the pending memberships into the runs. 0, or -1. */
static int seal(us_linkset *s) {
  if (!s->npending && s->sealed == s->n)
    return 0;
  size_t n = s->n, total = s->ncodes + s->npending;
  if (total > UINT32_MAX)
    return -1;
  uint32_t *start = calloc(n + 1, sizeof *start);
  uint32_t *codes = malloc((total ? total : 1) * sizeof *codes);
  if (!start || !codes) {
    free(start);
    free(codes);
    return -1;
  }
  /* run lengths in start[i + 1], then their sums: the runs' starts */
  for (size_t i = 0; i < s->sealed; i++)
    start[i + 1] = s->start[i + 1] - s->start[i];
  for (size_t k = 0; k < s->npending; k++)
    start[(s->pending[k] >> 32) + 1]++;
  for (size_t i = 0; i < n; i++)
    start[i + 1] += start[i];
  /* each run: its sealed codes, then the pending ones in the order recorded;
  ** start[i] is run i's cursor meanwhile, moved back after */
  for (size_t i = 0; i < s->sealed; i++) {
    uint32_t len = s->start[i + 1] - s->start[i];
    memcpy(codes + start[i], s->codes + s->start[i], len * sizeof *codes);
    start[i] += len;
  }
  for (size_t k = 0; k < s->npending; k++) {
    size_t i = (size_t)(s->pending[k] >> 32);
    codes[start[i]++] = (uint32_t)s->pending[k];
  }
  for (size_t i = n; i > 0; i--)
    start[i] = start[i - 1];
  start[0] = 0;
  free(s->start);
  free(s->codes);
  free(s->pending);
  if (s->cap > s->used + s->used / 8) { /* loaded: the arena's room to grow given back */
    char *arena = realloc(s->arena, s->used);
    if (arena) {
      s->arena = arena;
      s->cap = s->used;
    }
  }
  s->start = start;
  s->codes = codes;
  s->ncodes = total;
  s->sealed = n;
  s->pending = NULL;
  s->npending = s->pcap = 0;
  return 0;
}

int us_linkset_owned(us_linkset *s, size_t i, const char *group, size_t len) {
  if (seal(s))
    return -2;
  long g = lookup(s, &s->by_group, group, len);
  if (g < 0 || !s->start)
    return -1;
  for (uint32_t k = s->start[i + 1]; k > s->start[i]; k--)
    if (s->codes[k - 1] >> 2 == (uint32_t)g)
      return (int)(s->codes[k - 1] & 3);
  return -1;
}

size_t us_linkset_ngroups(const us_linkset *s) { return s->ngroups; }

const char *us_linkset_group(const us_linkset *s, size_t k) { return str(s, s->groups[k]); }

size_t us_linkset_bytes(const us_linkset *s) {
  return sizeof *s + s->cap + s->lcap * sizeof *s->l +
         (s->by_id.cap + s->by_name.cap + s->by_group.cap + s->gcap) * sizeof(uint32_t) +
         (s->start ? (s->sealed + 1) * sizeof *s->start : 0) + s->ncodes * sizeof *s->codes +
         s->pcap * sizeof *s->pending;
}
