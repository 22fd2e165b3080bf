/*
** jsonscan.c: validating skip-scanner over JSON text (RFC 8259), for the
** C clients. See include/usersync/jsonscan.h for the contract.
**
** Every walk goes through skip_value(), which checks the grammar of what it
** skips (strings, numbers, literals, nesting up to MAX_DEPTH), so a
** truncated or garbage body is reported as absent/invalid, never read past.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "usersync/jsonscan.h"

#define MAX_DEPTH 512

struct cur {
  const char *p, *end;
};

static void ws(struct cur *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
    c->p++;
}

static int hex4(const char *p, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char ch = p[i];
    v <<= 4;
    if (ch >= '0' && ch <= '9')
      v |= (unsigned)(ch - '0');
    else if (ch >= 'a' && ch <= 'f')
      v |= (unsigned)(ch - 'a' + 10);
    else if (ch >= 'A' && ch <= 'F')
      v |= (unsigned)(ch - 'A' + 10);
    else
      return 0;
  }
  *out = v;
  return 1;
}

static int skip_string(struct cur *c) {
  if (c->p >= c->end || *c->p != '"')
    return 0;
  c->p++;
  while (c->p < c->end) {
    unsigned char ch = (unsigned char)*c->p;
    if (ch == '"') {
      c->p++;
      return 1;
    }
    if (ch < 0x20)
      return 0;
    if (ch == '\\') {
      if (c->p + 1 >= c->end)
        return 0;
      char e = c->p[1];
      if (e == 'u') {
        unsigned v;
        if (c->end - c->p < 6 || !hex4(c->p + 2, &v))
          return 0;
        c->p += 6;
        continue;
      }
      if (!strchr("\"\\/bfnrt", e))
        return 0;
      c->p += 2;
      continue;
    }
    c->p++;
  }
  return 0;
}

static int skip_number(struct cur *c) {
  const char *p = c->p;
  if (p < c->end && *p == '-')
    p++;
  if (p >= c->end)
    return 0;
  if (*p == '0')
    p++;
  else if (*p >= '1' && *p <= '9')
    while (p < c->end && *p >= '0' && *p <= '9')
      p++;
  else
    return 0;
  if (p < c->end && *p == '.') {
    p++;
    if (p >= c->end || *p < '0' || *p > '9')
      return 0;
    while (p < c->end && *p >= '0' && *p <= '9')
      p++;
  }
  if (p < c->end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < c->end && (*p == '+' || *p == '-'))
      p++;
    if (p >= c->end || *p < '0' || *p > '9')
      return 0;
    while (p < c->end && *p >= '0' && *p <= '9')
      p++;
  }
  c->p = p;
  return 1;
}

static int skip_lit(struct cur *c, const char *lit) {
  size_t n = strlen(lit);
  if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0)
    return 0;
  c->p += n;
  return 1;
}

static int skip_value(struct cur *c, int depth, struct us_jval *out);

static int skip_container(struct cur *c, int depth, char open) {
  char close = open == '[' ? ']' : '}';
  if (depth > MAX_DEPTH)
    return 0;
  c->p++;
  ws(c);
  if (c->p < c->end && *c->p == close) {
    c->p++;
    return 1;
  }
  for (;;) {
    if (open == '{') {
      ws(c);
      if (!skip_string(c))
        return 0;
      ws(c);
      if (c->p >= c->end || *c->p != ':')
        return 0;
      c->p++;
    }
    ws(c);
    if (!skip_value(c, depth + 1, NULL))
      return 0;
    ws(c);
    if (c->p >= c->end)
      return 0;
    if (*c->p == ',') {
      c->p++;
      continue;
    }
    if (*c->p == close) {
      c->p++;
      return 1;
    }
    return 0;
  }
}

/* Skips one value at the cursor (no leading whitespace), validating it. */
static int skip_value(struct cur *c, int depth, struct us_jval *out) {
  const char *start = c->p;
  enum us_jtype type;
  int ok;
  if (c->p >= c->end)
    return 0;
  switch (*c->p) {
  case '"':
    type = US_J_STRING;
    ok = skip_string(c);
    break;
  case '{':
    type = US_J_OBJECT;
    ok = skip_container(c, depth, '{');
    break;
  case '[':
    type = US_J_ARRAY;
    ok = skip_container(c, depth, '[');
    break;
  case 't':
    type = US_J_BOOL;
    ok = skip_lit(c, "true");
    break;
  case 'f':
    type = US_J_BOOL;
    ok = skip_lit(c, "false");
    break;
  case 'n':
    type = US_J_NULL;
    ok = skip_lit(c, "null");
    break;
  default:
    type = US_J_NUMBER;
    ok = skip_number(c);
  }
  if (ok && out) {
    out->type = type;
    out->start = start;
    out->len = (size_t)(c->p - start);
  }
  return ok;
}

int us_json_parse(const char *doc, size_t len, struct us_jval *out) {
  struct cur c = {doc, doc + len};
  ws(&c);
  if (!skip_value(&c, 0, out))
    return 0;
  ws(&c);
  return c.p == c.end;
}

int us_json_next_elem(const struct us_jval *arr, size_t *pos, struct us_jval *elem) {
  if (arr->type != US_J_ARRAY)
    return 0;
  struct cur c = {arr->start + (*pos ? *pos : 1), arr->start + arr->len};
  ws(&c);
  if (c.p < c.end && *c.p == ',') {
    c.p++;
    ws(&c);
  }
  if (c.p >= c.end || *c.p == ']')
    return 0;
  if (!skip_value(&c, 1, elem))
    return 0;
  *pos = (size_t)(c.p - arr->start);
  return 1;
}

int us_json_next_member(const struct us_jval *obj, size_t *pos, struct us_jval *key, struct us_jval *val) {
  if (obj->type != US_J_OBJECT)
    return 0;
  struct cur c = {obj->start + (*pos ? *pos : 1), obj->start + obj->len};
  ws(&c);
  if (c.p < c.end && *c.p == ',') {
    c.p++;
    ws(&c);
  }
  if (c.p >= c.end || *c.p == '}')
    return 0;
  if (!skip_value(&c, 1, key) || key->type != US_J_STRING)
    return 0;
  ws(&c);
  if (c.p >= c.end || *c.p != ':')
    return 0;
  c.p++;
  ws(&c);
  if (!skip_value(&c, 1, val))
    return 0;
  *pos = (size_t)(c.p - obj->start);
  return 1;
}

/* Compares key (a string value) with name[0..n) after unescaping. */
static int key_is(const struct us_jval *key, const char *name, size_t n) {
  if (key->len == n + 2 && memchr(key->start, '\\', key->len) == NULL)
    return memcmp(key->start + 1, name, n) == 0;
  size_t klen;
  char *k = us_json_strdup(key, &klen);
  int eq = k && klen == n && memcmp(k, name, n) == 0;
  free(k);
  return eq;
}

int us_json_get(const struct us_jval *root, const char *path, struct us_jval *out) {
  struct us_jval cur = *root;
  const char *p = path;
  while (*p) {
    if (*p == '.') {
      p++;
      continue;
    }
    struct us_jval k, v;
    size_t pos = 0;
    int found = 0;
    if (*p == '[') {
      char *end;
      errno = 0;
      long idx = strtol(p + 1, &end, 10);
      if (end == p + 1 || *end != ']' || idx < 0 || errno)
        return 0;
      p = end + 1;
      for (long i = 0; us_json_next_elem(&cur, &pos, &v); i++)
        if (i == idx) {
          found = 1;
          break;
        }
    } else {
      size_t n = strcspn(p, ".[");
      while (us_json_next_member(&cur, &pos, &k, &v))
        if (key_is(&k, p, n)) {
          found = 1;
          break;
        }
      p += n;
    }
    if (!found)
      return 0;
    cur = v;
  }
  *out = cur;
  return 1;
}

static size_t put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xC0 | cp >> 6);
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | cp >> 12);
    o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | cp >> 18);
  o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
  o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
  o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

char *us_json_strdup(const struct us_jval *v, size_t *outlen) {
  if (v->type != US_J_STRING || v->len < 2)
    return NULL;
  const char *p = v->start + 1, *end = v->start + v->len - 1;
  char *out = malloc(v->len), *o = out;
  if (!out)
    return NULL;
  while (p < end) {
    if (*p != '\\') {
      *o++ = *p++;
      continue;
    }
    char e = p[1];
    p += 2;
    switch (e) {
    case 'b': *o++ = '\b'; break;
    case 'f': *o++ = '\f'; break;
    case 'n': *o++ = '\n'; break;
    case 'r': *o++ = '\r'; break;
    case 't': *o++ = '\t'; break;
    case 'u': {
      unsigned cp;
      if (end - p < 4 || !hex4(p, &cp))
        goto bad;
      p += 4;
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        unsigned lo;
        if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
          goto bad;
        p += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
        goto bad;
      }
      o += put_utf8(o, cp);
      break;
    }
    default: *o++ = e; /* \" \\ \/ */
    }
  }
  *o = '\0';
  if (outlen)
    *outlen = (size_t)(o - out);
  return out;
bad:
  free(out);
  return NULL;
}

int us_json_streq(const struct us_jval *v, const char *s) {
  return v->type == US_J_STRING && key_is(v, s, strlen(s));
}

int us_json_bool(const struct us_jval *v, int *out) {
  if (v->type != US_J_BOOL)
    return 0;
  *out = v->start[0] == 't';
  return 1;
}

int us_json_int(const struct us_jval *v, long long *out) {
  if (v->type != US_J_NUMBER || v->len > 20)
    return 0;
  char buf[24];
  memcpy(buf, v->start, v->len);
  buf[v->len] = '\0';
  if (strpbrk(buf, ".eE"))
    return 0;
  char *end;
  errno = 0;
  long long n = strtoll(buf, &end, 10);
  if (errno || *end)
    return 0;
  *out = n;
  return 1;
}

/* ---------------------------------------------------------------- writing */

size_t us_json_escape(char *out, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    char e = c == '"'    ? '"'
             : c == '\\' ? '\\'
             : c == '\n'  ? 'n'
             : c == '\r'  ? 'r'
             : c == '\t'  ? 't'
             : c == '\b'  ? 'b'
             : c == '\f'  ? 'f'
                          : 0;
    if (e) {
      if (out) {
        out[n] = '\\';
        out[n + 1] = e;
      }
      n += 2;
    } else if (c < 0x20) {
      if (out) {
        memcpy(out + n, "\\u00", 4);
        out[n + 4] = hex[c >> 4];
        out[n + 5] = hex[c & 15];
      }
      n += 6;
    } else {
      if (out)
        out[n] = (char)c;
      n++;
    }
  }
  return n;
}

char *us_json_quote(const char *s) {
  size_t len = strlen(s), n = us_json_escape(NULL, s, len);
  char *o = malloc(n + 3);
  if (!o)
    return NULL;
  o[0] = '"';
  us_json_escape(o + 1, s, len);
  o[n + 1] = '"';
  o[n + 2] = '\0';
  return o;
}
