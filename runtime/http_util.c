/*
** http_util.c: the pure helpers of the HTTP engine (include/usersync/http.h):
** header lookup, Retry-After and Okta rate-limit waits, backoff with jitter,
** RFC 8288 Link parsing. No engine, no I/O; unit-tested directly.
** Uses: us_time_parse_http_date (timeutil.c), the one HTTP-date parser.
*/
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "usersync/http.h"
#include "usersync/timeutil.h"

/* An HTTP date (IMF-fixdate, RFC 850 or asctime) as time_t; -1 when it is not one. */
static time_t http_date(const char *s) {
  double t;
  return s && us_time_parse_http_date(s, SIZE_MAX, &t) == 0 ? (time_t)t : (time_t)-1;
}

const char *us_http_header(const struct us_http_response *r, const char *name) {
  for (size_t i = r->nheaders; i > 0; i--)
    if (strcasecmp(r->headers[i - 1].name, name) == 0)
      return r->headers[i - 1].value;
  return NULL;
}

size_t us_http_header_next(const struct us_http_response *r, const char *name, size_t from) {
  for (size_t i = from; i < r->nheaders; i++)
    if (strcasecmp(r->headers[i].name, name) == 0)
      return i;
  return r->nheaders;
}

/* Non-negative decimal integer spanning the whole (trimmed) string, or -1. */
static long long parse_uint(const char *s) {
  while (*s == ' ' || *s == '\t')
    s++;
  if (!isdigit((unsigned char)*s))
    return -1;
  long long v = 0;
  for (; isdigit((unsigned char)*s); s++) {
    if (v > 1000000000000LL)
      return -1;
    v = v * 10 + (*s - '0');
  }
  while (*s == ' ' || *s == '\t')
    s++;
  return *s ? -1 : v;
}

long us_http_parse_retry_after(const char *value, time_t date) {
  if (!value)
    return -1;
  long long secs = parse_uint(value);
  if (secs >= 0)
    return secs > 86400 * 7 ? 86400L * 7 * 1000 : (long)(secs * 1000);
  time_t at = http_date(value);
  if (at == (time_t)-1)
    return -1;
  time_t ref = date != (time_t)-1 ? date : time(NULL);
  if (at <= ref)
    return 0;
  double d = difftime(at, ref);
  return d > 86400.0 * 7 ? 86400L * 7 * 1000 : (long)(d * 1000);
}

long us_http_server_delay(const struct us_http_response *r) {
  const char *dh = us_http_header(r, "date");
  time_t date = http_date(dh);
  const char *ra = us_http_header(r, "retry-after");
  if (ra) {
    long d = us_http_parse_retry_after(ra, date);
    if (d >= 0)
      return d;
  }
  if (r->status != 429)
    return -1;
  long long reset = -1;
  for (size_t i = us_http_header_next(r, "x-rate-limit-reset", 0); i < r->nheaders;
       i = us_http_header_next(r, "x-rate-limit-reset", i + 1)) {
    long long v = parse_uint(r->headers[i].value);
    if (v >= 0 && (reset < 0 || v < reset))
      reset = v;
  }
  if (reset < 0)
    return -1;
  long long now = date != (time_t)-1 ? (long long)date : (long long)time(NULL);
  long long secs = reset - now + 1;
  if (secs < 0)
    secs = 0;
  if (secs > 86400)
    secs = 86400;
  return (long)(secs * 1000);
}

long us_http_backoff(int jitter, long base_ms, long max_ms, int n, long prev_ms, double rnd) {
  if (base_ms < 1)
    base_ms = 1;
  if (max_ms < base_ms)
    max_ms = base_ms;
  if (rnd < 0 || rnd >= 1)
    rnd = 0;
  long d;
  if (jitter == US_HTTP_JITTER_DECORRELATED) {
    long prev = prev_ms > base_ms ? prev_ms : base_ms;
    long hi = prev > max_ms / 3 ? max_ms : prev * 3;
    d = base_ms + (long)(rnd * (double)(hi - base_ms));
  } else {
    long cap = base_ms;
    for (int i = 1; i < n && cap < max_ms; i++)
      cap = cap > max_ms / 2 ? max_ms : cap * 2;
    if (cap > max_ms)
      cap = max_ms;
    d = (long)(rnd * (double)cap);
  }
  if (d > max_ms)
    d = max_ms;
  return d < 1 ? 1 : d;
}

static const char *skip_ws(const char *p) {
  while (*p == ' ' || *p == '\t')
    p++;
  return p;
}

/* Whether the space-separated relation list v[0..n) contains `rel`. */
static int rel_matches(const char *v, size_t n, const char *rel) {
  size_t rl = strlen(rel), i = 0;
  while (i < n) {
    while (i < n && v[i] == ' ')
      i++;
    size_t j = i;
    while (j < n && v[j] != ' ')
      j++;
    if (j - i == rl && strncasecmp(v + i, rel, rl) == 0)
      return 1;
    i = j;
  }
  return 0;
}

/* Parses one Link field value; returns the start of the URL of the first
** link whose rel contains `rel` (length in *len), else NULL. */
static const char *link_in_value(const char *p, const char *rel, size_t *len) {
  for (;;) {
    p = skip_ws(p);
    while (*p == ',' || *p == ' ' || *p == '\t')
      p++;
    if (*p != '<')
      return NULL;
    const char *u = p + 1, *ue = strchr(u, '>');
    if (!ue)
      return NULL;
    p = ue + 1;
    int hit = 0;
    for (;;) { /* parameters: ; name [= token | "quoted"] */
      p = skip_ws(p);
      if (*p != ';')
        break;
      p = skip_ws(p + 1);
      const char *n = p;
      while (*p && *p != '=' && *p != ';' && *p != ',' && *p != ' ')
        p++;
      size_t nl = (size_t)(p - n);
      p = skip_ws(p);
      const char *v = p;
      size_t vl = 0;
      if (*p == '=') {
        p = skip_ws(p + 1);
        if (*p == '"') {
          v = ++p;
          while (*p && *p != '"') {
            if (*p == '\\' && p[1])
              p++;
            p++;
          }
          vl = (size_t)(p - v);
          if (*p == '"')
            p++;
        } else {
          v = p;
          while (*p && *p != ';' && *p != ',' && *p != ' ')
            p++;
          vl = (size_t)(p - v);
        }
      }
      if (nl == 3 && strncasecmp(n, "rel", 3) == 0 && rel_matches(v, vl, rel))
        hit = 1;
    }
    if (hit) {
      *len = (size_t)(ue - u);
      return u;
    }
    p = skip_ws(p);
    if (*p != ',')
      return NULL;
  }
}

const char *us_http_link_find(const struct us_http_response *r, const char *rel, size_t *len) {
  for (size_t i = us_http_header_next(r, "link", 0); i < r->nheaders;
       i = us_http_header_next(r, "link", i + 1)) {
    const char *u = link_in_value(r->headers[i].value, rel, len);
    if (u)
      return u;
  }
  return NULL;
}

char *us_http_link(const struct us_http_response *r, const char *rel) {
  size_t n = 0;
  const char *u = us_http_link_find(r, rel, &n);
  char *out = u ? malloc(n + 1) : NULL;
  if (out) {
    memcpy(out, u, n);
    out[n] = '\0';
  }
  return out;
}
