/*
** strbuf.h: a growable NUL-terminated string for C code that builds text
** (request URLs and bodies, Prometheus exposition). One allocation failure
** makes the buffer "bad": later appends do nothing, and the caller gets NULL
** where it asks for the result, never a truncated text.
**
**   struct us_sb b = {0};
**   us_sb_str(&b, "/api/v1/users");
**   us_sb_put(&b, "?limit=200", 10);
**   char *url = us_sb_done(&b);   -- the text (caller frees), NULL after a failure
**
** Uses: libc only. Owns b->s until us_sb_done or us_sb_free hands it over
** or frees it.
*/
#ifndef USERSYNC_STRBUF_H
#define USERSYNC_STRBUF_H

#include <stddef.h>

struct us_sb {
  char *s;      /* the text so far, NUL-terminated (NULL before the first append) */
  size_t n;     /* its length */
  size_t cap;   /* bytes allocated */
  int bad;      /* an allocation failed */
};

/* Appends k bytes at p (they need not be NUL-terminated). */
void us_sb_put(struct us_sb *b, const char *p, size_t k);

/* Appends the NUL-terminated string s. */
void us_sb_str(struct us_sb *b, const char *s);

/* Hands over the text ("" when nothing was appended) and leaves b empty;
** NULL, with the memory freed, when an allocation failed. */
char *us_sb_done(struct us_sb *b);

/* Frees the text and leaves b empty. */
void us_sb_free(struct us_sb *b);

#endif
