/*
** strbuf.c: the growable string of include/usersync/strbuf.h.
** Uses: libc only.
*/
#include "usersync/strbuf.h"

#include <stdlib.h>
#include <string.h>

void us_sb_put(struct us_sb *b, const char *p, size_t k) {
  if (b->bad)
    return;
  if (b->n + k + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 64;
    while (cap < b->n + k + 1)
      cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
      b->bad = 1;
      return;
    }
    b->s = s;
    b->cap = cap;
  }
  memcpy(b->s + b->n, p, k);
  b->n += k;
  b->s[b->n] = '\0';
}

void us_sb_str(struct us_sb *b, const char *s) { us_sb_put(b, s, strlen(s)); }

char *us_sb_done(struct us_sb *b) {
  char *s = b->s;
  int bad = b->bad;
  *b = (struct us_sb){0};
  if (bad) {
    free(s);
    return NULL;
  }
  return s ? s : strdup("");
}

void us_sb_free(struct us_sb *b) {
  free(b->s);
  *b = (struct us_sb){0};
}
