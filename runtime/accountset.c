/*
** accountset.c: the compact account set of include/usersync/accountset.h.
**
** Strings live in one arena and are addressed by 32-bit offsets (0: none;
** the arena starts with one unused byte). A field merged with the text it
** already has keeps its offset, so a snapshot that meets an account twice
** (a member listing's record, then the account listing's) stores it once.
** Group names are interned: an account's groups are indices into the
** interned list, the first two inline, more in a vector of their own.
** Three open-addressing hash tables map to index + 1 (0: empty): accounts
** by case-folded name, accounts by id, group names by exact text.
** Uses: libc only.
*/
#include "usersync/accountset.h"
#include "strkey.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct acct {
  uint32_t name, key, id, display_name, email; /* arena offsets, 0: absent */
  uint32_t ng;                                 /* groups */
  int8_t active;                               /* 1, 0, -1 unknown */
  union {
    uint32_t in[2]; /* ng <= 2 */
    uint32_t *v;    /* ng > 2: capacity the power of two >= ng */
  } g;
};

enum { BY_NAME, BY_ID, BY_GROUP }; /* what a table's keys are */

struct hindex {
  uint32_t *slot; /* index + 1; 0: empty */
  size_t cap;     /* a power of two, or 0 */
  size_t n;
  int kind;
};

struct us_accountset {
  char *arena;
  size_t used, cap;
  struct acct *a;
  size_t n, acap;
  struct hindex by_name, by_id, by_group;
  uint32_t *groups; /* interned group names: arena offsets */
  size_t ngroups, gcap;
  size_t group_vec_bytes;
  int has_ids;
  int refs;
};

static const char *str(const us_accountset *s, uint32_t off) { return off ? s->arena + off : NULL; }

/* Copies p into the arena: its offset, or 0 when out of memory. */
static uint32_t intern_text(us_accountset *s, const char *p) {
  return sk_arena_text(&s->arena, &s->used, &s->cap, p);
}

/* ---------- hash tables ---------- */

/* The key of entry v (index + 1) of a table of kind. */
static const char *key_of(const us_accountset *s, int kind, uint32_t v) {
  if (kind == BY_GROUP)
    return str(s, s->groups[v - 1]);
  const struct acct *a = &s->a[v - 1];
  return str(s, kind == BY_ID ? a->id : a->name);
}

/* The slot of key[0..len) in h: holding it, or the empty one it would take. */
static uint32_t *slot_of(const us_accountset *s, const struct hindex *h, const char *key, size_t len) {
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

static long lookup(const us_accountset *s, const struct hindex *h, const char *key, size_t len) {
  if (!h->cap)
    return -1;
  uint32_t v = *slot_of(s, h, key, len);
  return v ? (long)v - 1 : -1;
}

/* Makes room for one more entry in h (load at most 1/2). 0, or -1. */
static int reserve(us_accountset *s, struct hindex *h) {
  if ((h->n + 1) * 2 <= h->cap)
    return 0;
  size_t cap = h->cap ? h->cap * 2 : 64;
  struct hindex g = {calloc(cap, sizeof(uint32_t)), cap, 0, h->kind};
  if (!g.slot)
    return -1;
  for (size_t i = 0; i < h->cap; i++) {
    uint32_t v = h->slot[i];
    if (v) {
      const char *k = key_of(s, h->kind, v);
      uint32_t *to = slot_of(s, &g, k, strlen(k));
      if (!*to) { /* a stale slot (an id since replaced) whose key is taken again: dropped */
        *to = v;
        g.n++;
      }
    }
  }
  free(h->slot);
  *h = g;
  return 0;
}

/* ---------- the set ---------- */

us_accountset *us_accountset_new(void) {
  us_accountset *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  s->arena = malloc(4096);
  if (!s->arena) {
    free(s);
    return NULL;
  }
  s->cap = 4096;
  s->refs = 1;
  s->arena[0] = '\0';
  s->by_name.kind = BY_NAME;
  s->by_id.kind = BY_ID;
  s->by_group.kind = BY_GROUP;
  s->used = 1; /* offset 0 means "none" */
  return s;
}

us_accountset *us_accountset_retain(us_accountset *s) {
  s->refs++;
  return s;
}

void us_accountset_free(us_accountset *s) {
  if (!s || --s->refs > 0)
    return;
  for (size_t i = 0; i < s->n; i++)
    if (s->a[i].ng > 2)
      free(s->a[i].g.v);
  free(s->a);
  free(s->arena);
  free(s->by_name.slot);
  free(s->by_id.slot);
  free(s->by_group.slot);
  free(s->groups);
  free(s);
}

size_t us_accountset_count(const us_accountset *s) { return s->n; }

int us_accountset_has_ids(const us_accountset *s) { return s->has_ids; }

long us_accountset_find(const us_accountset *s, const char *name, size_t len) {
  return lookup(s, &s->by_name, name, len);
}

long us_accountset_find_id(const us_accountset *s, const char *id, size_t len) {
  return lookup(s, &s->by_id, id, len);
}

/* Sets *field to text v (kept when it is the same text). 0, or -1. */
static int set_field(us_accountset *s, uint32_t *field, const char *v) {
  if (!v || (*field && strcmp(s->arena + *field, v) == 0))
    return 0;
  uint32_t off = intern_text(s, v);
  if (!off)
    return -1;
  *field = off;
  return 0;
}

/* Indexes account i by its id (replacing another's claim to it). */
static int index_id(us_accountset *s, size_t i) {
  const char *id = str(s, s->a[i].id);
  if (!id)
    return 0;
  if (reserve(s, &s->by_id))
    return -1;
  uint32_t *slot = slot_of(s, &s->by_id, id, strlen(id));
  if (!*slot)
    s->by_id.n++;
  *slot = (uint32_t)i + 1;
  s->has_ids = 1;
  return 0;
}

long us_accountset_put(us_accountset *s, const struct us_account_fields *f, int *added) {
  if (added)
    *added = 0;
  if (!f->name)
    return -1;
  size_t len = strlen(f->name);
  if (reserve(s, &s->by_name))
    return -1;
  uint32_t *slot = slot_of(s, &s->by_name, f->name, len);
  size_t i;
  if (*slot) {
    i = *slot - 1;
  } else {
    if (s->n >= UINT32_MAX - 1)
      return -1;
    if (s->n == s->acap) {
      size_t cap = s->acap ? s->acap * 2 : 256;
      struct acct *a = realloc(s->a, cap * sizeof *a);
      if (!a)
        return -1;
      s->a = a;
      s->acap = cap;
    }
    i = s->n;
    memset(&s->a[i], 0, sizeof s->a[i]);
    s->a[i].active = -1;
    if (set_field(s, &s->a[i].name, f->name))
      return -1;
    s->n++;
    *slot = (uint32_t)i + 1; /* after the name: the slot's key is read from it */
    s->by_name.n++;
    if (added)
      *added = 1;
  }

  struct acct *a = &s->a[i];
  uint32_t old_id = a->id;
  if (set_field(s, &a->name, f->name) || set_field(s, &a->display_name, f->display_name) ||
      set_field(s, &a->email, f->email) || set_field(s, &a->id, f->id))
    return -1;
  /* a key equal to the name shares its text */
  if (f->key && !a->key && strcmp(f->key, s->arena + a->name) == 0)
    a->key = a->name;
  else if (set_field(s, &a->key, f->key))
    return -1;
  if (f->active >= 0)
    a->active = (int8_t)(f->active ? 1 : 0);
  if (a->id != old_id && index_id(s, i))
    return -1;
  return (long)i;
}

void us_accountset_get(const us_accountset *s, size_t i, struct us_account_fields *out) {
  const struct acct *a = &s->a[i];
  out->name = str(s, a->name);
  out->key = str(s, a->key);
  out->id = str(s, a->id);
  out->display_name = str(s, a->display_name);
  out->email = str(s, a->email);
  out->active = a->active;
}

static const uint32_t *groups_of(const struct acct *a) { return a->ng > 2 ? a->g.v : a->g.in; }

size_t us_accountset_ngroups(const us_accountset *s, size_t i) { return s->a[i].ng; }

const char *us_accountset_group(const us_accountset *s, size_t i, size_t k) {
  return str(s, s->groups[groups_of(&s->a[i])[k]]);
}

/* The interned index of group g: found, or added. -1 when out of memory. */
static long intern_group(us_accountset *s, const char *g) {
  size_t len = strlen(g);
  long k = lookup(s, &s->by_group, g, len);
  if (k >= 0)
    return k;
  if (reserve(s, &s->by_group))
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

int us_accountset_add_group(us_accountset *s, size_t i, const char *group, int dedupe) {
  struct acct *a = &s->a[i];
  if (dedupe) {
    size_t len = strlen(group);
    const uint32_t *v = groups_of(a);
    for (uint32_t k = 0; k < a->ng; k++)
      if (sk_same_ci(group, s->arena + s->groups[v[k]], len))
        return 0;
  }
  long g = intern_group(s, group);
  if (g < 0)
    return -1;
  uint32_t n = a->ng;
  if (n < 2) {
    a->g.in[n] = (uint32_t)g;
  } else if (n == 2 || (n & (n - 1)) == 0) { /* full: inline 2, or a power of two */
    uint32_t *v = malloc((size_t)n * 2 * sizeof *v);
    if (!v)
      return -1;
    memcpy(v, groups_of(a), n * sizeof *v);
    if (n > 2) {
      free(a->g.v);
      s->group_vec_bytes -= (size_t)n * sizeof *v;
    }
    a->g.v = v;
    a->g.v[n] = (uint32_t)g;
    s->group_vec_bytes += (size_t)n * 2 * sizeof *v;
  } else {
    a->g.v[n] = (uint32_t)g;
  }
  a->ng = n + 1;
  return 1;
}

size_t us_accountset_ngroup_names(const us_accountset *s) { return s->ngroups; }

const char *us_accountset_group_name(const us_accountset *s, size_t k) { return str(s, s->groups[k]); }

void us_accountset_shrink(us_accountset *s) {
  if (s->used < s->cap) {
    char *a = realloc(s->arena, s->used);
    if (a) {
      s->arena = a;
      s->cap = s->used;
    }
  }
  if (s->n && s->n < s->acap) {
    struct acct *a = realloc(s->a, s->n * sizeof *a);
    if (a) {
      s->a = a;
      s->acap = s->n;
    }
  }
}

size_t us_accountset_bytes(const us_accountset *s) {
  return sizeof *s + s->cap + s->acap * sizeof *s->a + s->gcap * sizeof *s->groups +
         (s->by_name.cap + s->by_id.cap + s->by_group.cap) * sizeof(uint32_t) + s->group_vec_bytes;
}
