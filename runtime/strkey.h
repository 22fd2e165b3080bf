/*
** strkey.h: what the compact sets (accountset.c, linkset.c, userset.c)
** share for their string keys: an FNV-1a hash (exact, or folding ASCII
** case as SQLite's lower() does), comparisons of a caller's key (len
** bytes, which may hold a NUL) with a NUL-terminated stored one, and the
** growth of a set's string arena (offsets stay 32-bit). Internal to the
** runtime; each set keeps its own layout and hash index.
*/
#ifndef USERSYNC_STRKEY_H
#define USERSYNC_STRKEY_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline unsigned char sk_fold(unsigned char c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static inline uint64_t sk_hash(const char *s, size_t len, int ci) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < len; i++) {
    h ^= ci ? sk_fold((unsigned char)s[i]) : (unsigned char)s[i];
    h *= 1099511628211ull;
  }
  return h;
}

/* a (len bytes, may hold a NUL) against the stored NUL-terminated b: b
** ending first is a difference, never a read past its terminator. */
static inline int sk_same_ci(const char *a, const char *b, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (b[i] == '\0' || sk_fold((unsigned char)a[i]) != sk_fold((unsigned char)b[i]))
      return 0;
  return b[len] == '\0';
}

static inline int sk_same(const char *a, const char *b, size_t len) {
  return strnlen(b, len + 1) == len && memcmp(a, b, len) == 0;
}

/* Room for k more bytes in the arena *arena (*used of *cap bytes in use),
** doubling it; offsets must fit 32 bits. 0, or -1 (nothing changed). */
static inline int sk_arena_room(char **arena, size_t *used, size_t *cap, size_t k) {
  if (*used + k > UINT32_MAX)
    return -1;
  if (*used + k <= *cap)
    return 0;
  size_t c = *cap ? *cap * 2 : 64;
  while (c < *used + k)
    c *= 2;
  char *a = realloc(*arena, c);
  if (!a)
    return -1;
  *arena = a;
  *cap = c;
  return 0;
}

/* Copies the NUL-terminated p into the arena: its offset, or 0 when out
** of memory (offset 0 is never a string: each set reserves it). */
static inline uint32_t sk_arena_text(char **arena, size_t *used, size_t *cap, const char *p) {
  size_t k = strlen(p) + 1;
  if (sk_arena_room(arena, used, cap, k))
    return 0;
  memcpy(*arena + *used, p, k);
  uint32_t off = (uint32_t)*used;
  *used += k;
  return off;
}

#endif
