/*
** userset.c: the compact Okta user set of include/usersync/userset.h.
**
** Texts live in one arena, addressed by 32-bit offsets, each a tag byte
** ('s' text, 'i' integer, 'n' number), for a text its length (a varint)
** and its bytes and a NUL. A slot's value is one uint32: 0 nil, 1 true,
** 2 false, 3 JSON null, 4 held elsewhere (EXT), else an arena offset.
** Interned texts (group ids, the values of a "status" slot) are kept once;
** a user's groups are indices into the interned list, the first two
** inline, more in a vector of their own. Two open-addressing hash tables
** map to index + 1 (0: empty): users by id, interned texts by text.
** Uses: libc only.
*/
#include "usersync/userset.h"
#include "strkey.h"

#include <stdlib.h>
#include <string.h>

enum { V_NIL, V_TRUE, V_FALSE, V_NULL, V_EXT, V_FIRST_OFF };

struct user {
  uint32_t id; /* arena offset of its text */
  uint32_t ng;
  uint32_t seq;   /* order of the first record put, UINT32_MAX: member only */
  uint8_t profile;
  union {
    uint32_t in[2]; /* ng <= 2 */
    uint32_t *v;    /* ng > 2: capacity the power of two >= ng */
  } g;
};

struct hindex {
  uint32_t *slot; /* index + 1; 0: empty */
  size_t cap;     /* a power of two, or 0 */
  size_t n;
};

struct us_userset {
  char *arena;
  size_t used, cap;
  struct user *u;
  size_t n, ucap;
  uint32_t *vals; /* n x nslots */
  size_t nslots;
  char **slot_names;
  long status_slot; /* -1: none */
  struct hindex by_id, by_text;
  uint32_t *texts; /* interned texts: arena offsets */
  size_t ntexts, tcap;
  size_t group_vec_bytes;
  uint32_t records; /* records put (the next seq) */
};

/* The text at arena offset off (tag 's'), its length in *len. */
static const char *text_at(const us_userset *s, uint32_t off, size_t *len) {
  const unsigned char *p = (const unsigned char *)s->arena + off + 1;
  size_t n = 0;
  int shift = 0;
  for (;; p++, shift += 7) {
    n |= (size_t)(*p & 0x7f) << shift;
    if (!(*p & 0x80))
      break;
  }
  *len = n;
  return (const char *)p + 1;
}

/* Room for k more bytes in the arena. 0, or -1. */
static int arena_room(us_userset *s, size_t k) { return sk_arena_room(&s->arena, &s->used, &s->cap, k); }

/* Copies text v[0..len) into the arena: its offset, or 0 when out of memory. */
static uint32_t put_text(us_userset *s, const char *v, size_t len) {
  if (arena_room(s, len + 12))
    return 0;
  uint32_t off = (uint32_t)s->used;
  unsigned char *p = (unsigned char *)s->arena + off;
  *p++ = 's';
  size_t n = len;
  do {
    *p = (unsigned char)(n & 0x7f);
    n >>= 7;
    if (n)
      *p |= 0x80;
    p++;
  } while (n);
  memcpy(p, v, len);
  p[len] = '\0';
  s->used = (size_t)(p + len + 1 - (unsigned char *)s->arena);
  return off;
}

static uint32_t put_raw(us_userset *s, char tag, const void *v, size_t len) {
  if (arena_room(s, len + 1))
    return 0;
  uint32_t off = (uint32_t)s->used;
  s->arena[off] = tag;
  memcpy(s->arena + off + 1, v, len);
  s->used += len + 1;
  return off;
}

static int same_text(const us_userset *s, uint32_t off, const char *v, size_t len) {
  size_t n;
  const char *t = text_at(s, off, &n);
  return n == len && memcmp(t, v, len) == 0;
}

/* ---------------------------------------------------------------- hash tables */

static uint32_t key_off(const us_userset *s, const struct hindex *h, uint32_t v) {
  return h == &s->by_id ? s->u[v - 1].id : s->texts[v - 1];
}

static uint32_t *slot_of(const us_userset *s, const struct hindex *h, const char *key, size_t len) {
  size_t mask = h->cap - 1;
  for (size_t i = (size_t)sk_hash(key, len, 0) & mask;; i = (i + 1) & mask) {
    uint32_t v = h->slot[i];
    if (!v || same_text(s, key_off(s, h, v), key, len))
      return &h->slot[i];
  }
}

static long lookup(const us_userset *s, const struct hindex *h, const char *key, size_t len) {
  if (!h->cap)
    return -1;
  uint32_t v = *slot_of(s, h, key, len);
  return v ? (long)v - 1 : -1;
}

/* Empties h and indexes entries 1..n into it, at a capacity for n + 1 (load
** at most 1/2). 0, or -1 (h unchanged). */
static int rebuild(us_userset *s, struct hindex *h, size_t n) {
  size_t cap = 64;
  while ((n + 1) * 2 > cap)
    cap *= 2;
  struct hindex g = {calloc(cap, sizeof(uint32_t)), cap, 0};
  if (!g.slot)
    return -1;
  struct hindex old = *h;
  *h = g;
  for (size_t v = 1; v <= n; v++) {
    size_t len;
    const char *k = text_at(s, key_off(s, h, (uint32_t)v), &len);
    uint32_t *to = slot_of(s, h, k, len);
    if (!*to)
      h->n++;
    *to = (uint32_t)v;
  }
  free(old.slot);
  return 0;
}

/* Room for one more entry in h, whose entries are 1..n. */
static int reserve(us_userset *s, struct hindex *h, size_t n) {
  if ((h->n + 1) * 2 <= h->cap)
    return 0;
  return rebuild(s, h, n);
}

/* ---------------------------------------------------------------- the set */

us_userset *us_userset_new(size_t nslots, const char *const *slots) {
  us_userset *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  s->status_slot = -1;
  s->arena = malloc(4096);
  s->slot_names = calloc(nslots ? nslots : 1, sizeof *s->slot_names);
  if (!s->arena || !s->slot_names)
    goto fail;
  s->cap = 4096;
  s->used = V_FIRST_OFF; /* offsets below are the kinds */
  s->nslots = nslots;
  for (size_t k = 0; k < nslots; k++) {
    if (!(s->slot_names[k] = strdup(slots[k])))
      goto fail;
    if (!strcmp(slots[k], "status"))
      s->status_slot = (long)k;
  }
  return s;
fail:
  us_userset_free(s);
  return NULL;
}

void us_userset_free(us_userset *s) {
  if (!s)
    return;
  for (size_t i = 0; i < s->n; i++)
    if (s->u[i].ng > 2)
      free(s->u[i].g.v);
  if (s->slot_names)
    for (size_t k = 0; k < s->nslots; k++)
      free(s->slot_names[k]);
  free(s->slot_names);
  free(s->u);
  free(s->vals);
  free(s->arena);
  free(s->by_id.slot);
  free(s->by_text.slot);
  free(s->texts);
  free(s);
}

size_t us_userset_nslots(const us_userset *s) { return s->nslots; }
const char *us_userset_slot_name(const us_userset *s, size_t k) { return s->slot_names[k]; }
size_t us_userset_count(const us_userset *s) { return s->n; }

long us_userset_find(const us_userset *s, const char *id, size_t len) {
  return lookup(s, &s->by_id, id, len);
}

/* The interned number of text v, found or added; -1 when out of memory. */
static long intern(us_userset *s, const char *v, size_t len) {
  long k = lookup(s, &s->by_text, v, len);
  if (k >= 0)
    return k;
  if (s->ntexts >= UINT32_MAX - 1 || reserve(s, &s->by_text, s->ntexts))
    return -1;
  if (s->ntexts == s->tcap) {
    size_t cap = s->tcap ? s->tcap * 2 : 64;
    uint32_t *t = realloc(s->texts, cap * sizeof *t);
    if (!t)
      return -1;
    s->texts = t;
    s->tcap = cap;
  }
  uint32_t off = put_text(s, v, len);
  if (!off)
    return -1;
  s->texts[s->ntexts] = off;
  *slot_of(s, &s->by_text, v, len) = (uint32_t)++s->ntexts;
  s->by_text.n++;
  return (long)s->ntexts - 1;
}

/* The index of the entry of id, made (member only) when new; -1. */
static long entry_of(us_userset *s, const char *id, size_t len) {
  if (reserve(s, &s->by_id, s->n))
    return -1;
  uint32_t *slot = slot_of(s, &s->by_id, id, len);
  if (*slot)
    return (long)*slot - 1;
  if (s->n >= UINT32_MAX - 1)
    return -1;
  if (s->n == s->ucap) {
    size_t cap = s->ucap ? s->ucap * 2 : 256;
    struct user *u = realloc(s->u, cap * sizeof *u);
    if (!u)
      return -1;
    s->u = u;
    uint32_t *v = realloc(s->vals, (s->nslots ? cap * s->nslots : 1) * sizeof *v);
    if (!v)
      return -1;
    s->vals = v;
    s->ucap = cap;
  }
  uint32_t off = put_text(s, id, len);
  if (!off)
    return -1;
  size_t i = s->n;
  memset(&s->u[i], 0, sizeof s->u[i]);
  s->u[i].id = off;
  s->u[i].seq = UINT32_MAX;
  memset(s->vals + i * s->nslots, 0, s->nslots * sizeof *s->vals);
  s->n++;
  *slot = (uint32_t)i + 1; /* after the id: the slot's key is read from it */
  s->by_id.n++;
  return (long)i;
}

long us_userset_put(us_userset *s, const char *id, size_t len, int *added) {
  if (added)
    *added = 0;
  long i = entry_of(s, id, len);
  if (i < 0)
    return -1;
  struct user *u = &s->u[i];
  if (u->seq == UINT32_MAX) {
    u->seq = s->records++;
    if (added)
      *added = 1;
  }
  u->profile = 0;
  memset(s->vals + (size_t)i * s->nslots, 0, s->nslots * sizeof *s->vals);
  return i;
}

int us_userset_set_str(us_userset *s, size_t i, size_t k, const char *v, size_t len) {
  uint32_t off;
  if ((long)k == s->status_slot) {
    long t = intern(s, v, len);
    if (t < 0)
      return -1;
    off = s->texts[t];
  } else if (!(off = put_text(s, v, len))) {
    return -1;
  }
  s->vals[i * s->nslots + k] = off;
  return 0;
}

int us_userset_set_int(us_userset *s, size_t i, size_t k, int64_t v) {
  uint32_t off = put_raw(s, 'i', &v, sizeof v);
  if (!off)
    return -1;
  s->vals[i * s->nslots + k] = off;
  return 0;
}

int us_userset_set_num(us_userset *s, size_t i, size_t k, double v) {
  uint32_t off = put_raw(s, 'n', &v, sizeof v);
  if (!off)
    return -1;
  s->vals[i * s->nslots + k] = off;
  return 0;
}

void us_userset_set_kind(us_userset *s, size_t i, size_t k, enum us_uv_type type) {
  uint32_t v = type == US_UV_TRUE ? V_TRUE : type == US_UV_FALSE ? V_FALSE
             : type == US_UV_NULL ? V_NULL : type == US_UV_EXT ? V_EXT : V_NIL;
  s->vals[i * s->nslots + k] = v;
}

void us_userset_set_profile(us_userset *s, size_t i, int has) { s->u[i].profile = has ? 1 : 0; }

static uint32_t *groups_of(struct user *u) { return u->ng > 2 ? u->g.v : u->g.in; }
static const uint32_t *cgroups_of(const struct user *u) { return u->ng > 2 ? u->g.v : u->g.in; }

int us_userset_add_member(us_userset *s, const char *id, size_t len, const char *gid, size_t glen) {
  long i = entry_of(s, id, len);
  if (i < 0)
    return -1;
  long g = intern(s, gid, glen);
  if (g < 0)
    return -1;
  struct user *u = &s->u[i];
  const uint32_t *have = groups_of(u);
  for (uint32_t k = 0; k < u->ng; k++)
    if (have[k] == (uint32_t)g)
      return 0;
  uint32_t n = u->ng;
  if (n < 2) {
    u->g.in[n] = (uint32_t)g;
  } else if (n == 2 || (n & (n - 1)) == 0) { /* full: inline 2, or a power of two */
    uint32_t *v = malloc((size_t)n * 2 * sizeof *v);
    if (!v)
      return -1;
    memcpy(v, groups_of(u), n * sizeof *v);
    if (n > 2) {
      free(u->g.v);
      s->group_vec_bytes -= (size_t)n * sizeof *v;
    }
    u->g.v = v;
    s->group_vec_bytes += (size_t)n * 2 * sizeof *v;
    v[n] = (uint32_t)g;
  } else {
    u->g.v[n] = (uint32_t)g;
  }
  u->ng = n + 1;
  return 1;
}

/* ---------------------------------------------------------------- finish */

static const us_userset *sorting; /* the set whose groups are being sorted */

static int cmp_text(const us_userset *s, uint32_t a, uint32_t b) {
  size_t la, lb;
  const char *ta = text_at(s, a, &la), *tb = text_at(s, b, &lb);
  int c = memcmp(ta, tb, la < lb ? la : lb);
  return c ? c : (la > lb) - (la < lb);
}

static int by_group_text(const void *a, const void *b) {
  return cmp_text(sorting, sorting->texts[*(const uint32_t *)a], sorting->texts[*(const uint32_t *)b]);
}

int us_userset_finish(us_userset *s) {
  size_t keep = s->records;
  struct user *u = malloc((keep ? keep : 1) * sizeof *u);
  uint32_t *vals = malloc((keep && s->nslots ? keep * s->nslots : 1) * sizeof *vals);
  if (!u || !vals) {
    free(u);
    free(vals);
    return -1;
  }
  for (size_t i = 0; i < s->n; i++) {
    struct user *from = &s->u[i];
    if (from->seq == UINT32_MAX) {
      if (from->ng > 2)
        free(from->g.v);
      continue;
    }
    u[from->seq] = *from;
    memcpy(vals + (size_t)from->seq * s->nslots, s->vals + i * s->nslots, s->nslots * sizeof *vals);
  }
  free(s->u);
  free(s->vals);
  s->u = u;
  s->vals = vals;
  s->n = s->ucap = keep;
  s->group_vec_bytes = 0;
  sorting = s;
  for (size_t i = 0; i < s->n; i++) {
    if (s->u[i].ng > 1)
      qsort(groups_of(&s->u[i]), s->u[i].ng, sizeof(uint32_t), by_group_text);
    if (s->u[i].ng > 2) {
      uint32_t c = 4;
      while (c < s->u[i].ng)
        c *= 2;
      s->group_vec_bytes += c * sizeof(uint32_t);
    }
  }
  sorting = NULL;
  char *a = realloc(s->arena, s->used); /* the doubling's spare room back */
  if (a) {
    s->arena = a;
    s->cap = s->used;
  }
  free(s->by_id.slot);
  s->by_id = (struct hindex){0};
  if (s->n && rebuild(s, &s->by_id, s->n))
    return -1; /* (the index is then empty: a lookup finds nothing) */
  return 0;
}

/* ---------------------------------------------------------------- reads */

const char *us_userset_id(const us_userset *s, size_t i, size_t *len) {
  return text_at(s, s->u[i].id, len);
}

int us_userset_is_record(const us_userset *s, size_t i) { return s->u[i].seq != UINT32_MAX; }
size_t us_userset_seq(const us_userset *s, size_t i) { return s->u[i].seq; }
int us_userset_has_profile(const us_userset *s, size_t i) { return s->u[i].profile; }

struct us_uval us_userset_value(const us_userset *s, size_t i, size_t k) {
  struct us_uval out = {US_UV_NIL, NULL, 0, 0, 0};
  uint32_t v = s->vals[i * s->nslots + k];
  switch (v) {
  case V_NIL: return out;
  case V_TRUE: out.type = US_UV_TRUE; return out;
  case V_FALSE: out.type = US_UV_FALSE; return out;
  case V_NULL: out.type = US_UV_NULL; return out;
  case V_EXT: out.type = US_UV_EXT; return out;
  default: break;
  }
  char tag = s->arena[v];
  if (tag == 's') {
    out.type = US_UV_STR;
    out.s = text_at(s, v, &out.len);
  } else if (tag == 'i') {
    out.type = US_UV_INT;
    memcpy(&out.i, s->arena + v + 1, sizeof out.i);
  } else {
    out.type = US_UV_NUM;
    memcpy(&out.n, s->arena + v + 1, sizeof out.n);
  }
  return out;
}

size_t us_userset_ngroups(const us_userset *s, size_t i) { return s->u[i].ng; }

size_t us_userset_group_index(const us_userset *s, size_t i, size_t k) { return cgroups_of(&s->u[i])[k]; }

const char *us_userset_group(const us_userset *s, size_t i, size_t k, size_t *len) {
  return text_at(s, s->texts[cgroups_of(&s->u[i])[k]], len);
}

size_t us_userset_ntexts(const us_userset *s) { return s->ntexts; }

size_t us_userset_bytes(const us_userset *s) {
  return sizeof *s + s->cap + s->ucap * (sizeof *s->u + s->nslots * sizeof *s->vals) +
         s->tcap * sizeof *s->texts + (s->by_id.cap + s->by_text.cap) * sizeof(uint32_t) + s->group_vec_bytes;
}
