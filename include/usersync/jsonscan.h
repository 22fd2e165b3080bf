/*
** jsonscan.h: reading a few values out of a JSON document in C without
** building a tree. The C clients use it for paging fields (`isLast`,
** `nextPageStart`, `_links.next`) and error bodies (`errorCode`,
** `errorMessages[0]`); whole pages go to Lua as text and are decoded there.
**
** Values are spans into the caller's buffer (no copies); the buffer must
** outlive them. Every function validates what it walks over and fails on
** malformed JSON rather than guessing.
**
** Writing: us_json_escape / us_json_quote are the one JSON string escaper
** of the C code (usersync.json's encoder, the target clients' request
** bodies, serve's verification answer, the Okta client's bodies).
*/
#ifndef USERSYNC_JSONSCAN_H
#define USERSYNC_JSONSCAN_H
#include <stddef.h>

enum us_jtype { US_J_INVALID = 0, US_J_NULL, US_J_BOOL, US_J_NUMBER, US_J_STRING, US_J_ARRAY, US_J_OBJECT };

struct us_jval {
  enum us_jtype type;
  const char *start; /* first byte of the value ('"' for strings) */
  size_t len;        /* bytes of the value, quotes included */
};

/* Parses a whole document: fills *out with the top-level value. Returns 1
** when doc is exactly one valid JSON value (surrounding whitespace allowed),
** 0 otherwise. */
int us_json_parse(const char *doc, size_t len, struct us_jval *out);

/* Looks up a path below `root`: object keys separated by '.', array
** indexes as [N]: "_links.next", "errors[0].message", "[2]". Returns 1 and
** fills *out when found, 0 when absent or when the JSON is malformed. */
int us_json_get(const struct us_jval *root, const char *path, struct us_jval *out);

/* Iterates an array: *pos starts at 0. Returns 1 with the next element, 0 at the end. */
int us_json_next_elem(const struct us_jval *arr, size_t *pos, struct us_jval *elem);

/* Iterates an object: *pos starts at 0. Returns 1 with the next key (a
** string value) and its value, 0 at the end. */
int us_json_next_member(const struct us_jval *obj, size_t *pos, struct us_jval *key, struct us_jval *val);

/* A string value unescaped to UTF-8, malloc'd (caller frees). NULL when v is
** not a string or on bad escapes. *outlen (may be NULL) gets the length. */
char *us_json_strdup(const struct us_jval *v, size_t *outlen);

/* Compares a string value with a C string (after unescaping). */
int us_json_streq(const struct us_jval *v, const char *s);

/* true/false -> 1 with *out set; anything else 0. */
int us_json_bool(const struct us_jval *v, int *out);

/* An integer number (no fraction or exponent, fits in long long) -> 1. */
int us_json_int(const struct us_jval *v, long long *out);

/* Escapes len bytes of s as the inside of a JSON string (no quotes): '"'
** and '\\' and the short forms \b \f \n \r \t, other bytes below 0x20 as
** \u00XX, every other byte as it is (UTF-8 is not checked). Writes into
** out (room for 6 * len bytes is always enough) unless out is NULL;
** returns the bytes written (or needed). */
size_t us_json_escape(char *out, const char *s, size_t len);

/* A JSON string literal of the C string s, quotes included, malloc'd
** (NULL: out of memory). */
char *us_json_quote(const char *s);

#endif
