/*
** re.c: the C core of `usersync.re` (contract in include/usersync/re.h).
**
** Uses PCRE2 (8-bit code units). A us_re owns its compiled code, one match
** data block sized for the pattern and one match context carrying the match
** and depth limits; all are freed by us_re_free. Nothing here allocates per
** match, and nothing here knows about Lua.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pcre2.h>

#include "usersync/re.h"

/* Valgrind cannot follow JIT-generated code (it reports uninitialised reads
** inside it), so under valgrind patterns run on the interpreter. */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define US_UNDER_VALGRIND() RUNNING_ON_VALGRIND
#endif
#endif
#ifndef US_UNDER_VALGRIND
#define US_UNDER_VALGRIND() 0
#endif

struct us_re {
  pcre2_code *code;
  pcre2_match_data *md;
  pcre2_match_context *mctx;
  pcre2_jit_stack *jit_stack; /* NULL until a match overflows the default 32 KiB */
  int ncap;
  int nnames;
  int name_size;               /* bytes per name-table entry */
  const unsigned char *names;  /* PCRE2's name table (2-byte group, then name) */
};

int us_re_parse_flags(const char *s, unsigned *flags) {
  unsigned f = 0;
  for (; s && *s; s++) {
    switch (*s) {
    case 'i': f |= US_RE_CASELESS; break;
    case 'm': f |= US_RE_MULTILINE; break;
    case 's': f |= US_RE_DOTALL; break;
    case 'x': f |= US_RE_EXTENDED; break;
    case 'u': break; /* UTF + UCP are always on */
    default: return (unsigned char)*s;
    }
  }
  *flags = f;
  return 0;
}

/* Writes PCRE2's text for error code rc into err. */
static void pcre_message(int rc, char *err, size_t errlen) {
  PCRE2_UCHAR buf[160];
  if (pcre2_get_error_message(rc, buf, sizeof buf) < 0)
    snprintf((char *)buf, sizeof buf, "PCRE2 error %d", rc);
  snprintf(err, errlen, "%s", (const char *)buf);
}

/* Shows a pattern in an error message: quoted, cut at 60 bytes. */
static void compile_message(int rc, size_t off, const char *pat, size_t len, char *err, size_t errlen) {
  char text[160];
  pcre_message(rc, text, sizeof text);
  int shown = len > 60 ? 60 : (int)len;
  snprintf(err, errlen, "%s at offset %zu in \"%.*s%s\"", text, off, shown, pat, len > 60 ? "..." : "");
}

us_re *us_re_compile(const char *pattern, size_t len, unsigned flags, char *err, size_t errlen) {
  if (len == SIZE_MAX)
    len = strlen(pattern);
  uint32_t opts = PCRE2_UTF | PCRE2_UCP;
  if (flags & US_RE_CASELESS) opts |= PCRE2_CASELESS;
  if (flags & US_RE_MULTILINE) opts |= PCRE2_MULTILINE;
  if (flags & US_RE_DOTALL) opts |= PCRE2_DOTALL;
  if (flags & US_RE_EXTENDED) opts |= PCRE2_EXTENDED;

  int rc;
  PCRE2_SIZE off;
  pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, len, opts, &rc, &off, NULL);
  if (code == NULL) {
    compile_message(rc, off, pattern, len, err, errlen);
    return NULL;
  }
  us_re *re = calloc(1, sizeof *re);
  if (re == NULL) {
    pcre2_code_free(code);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  re->code = code;
  if (!US_UNDER_VALGRIND())
    (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* interpreter if JIT is unavailable */
  re->md = pcre2_match_data_create_from_pattern(code, NULL);
  re->mctx = pcre2_match_context_create(NULL);
  if (re->md == NULL || re->mctx == NULL) {
    us_re_free(re);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  pcre2_set_match_limit(re->mctx, US_RE_MATCH_LIMIT);
  pcre2_set_depth_limit(re->mctx, US_RE_DEPTH_LIMIT);
  pcre2_set_heap_limit(re->mctx, US_RE_HEAP_LIMIT_KIB);
  uint32_t v = 0;
  pcre2_pattern_info(code, PCRE2_INFO_CAPTURECOUNT, &v);
  re->ncap = (int)v;
  pcre2_pattern_info(code, PCRE2_INFO_NAMECOUNT, &v);
  re->nnames = (int)v;
  pcre2_pattern_info(code, PCRE2_INFO_NAMEENTRYSIZE, &v);
  re->name_size = (int)v;
  PCRE2_SPTR table = NULL;
  pcre2_pattern_info(code, PCRE2_INFO_NAMETABLE, &table);
  re->names = table;
  return re;
}

void us_re_free(us_re *re) {
  if (re == NULL)
    return;
  pcre2_jit_stack_free(re->jit_stack);
  pcre2_match_context_free(re->mctx);
  pcre2_match_data_free(re->md);
  pcre2_code_free(re->code);
  free(re);
}

int us_re_ncaptures(const us_re *re) { return re->ncap; }
int us_re_name_count(const us_re *re) { return re->nnames; }

const char *us_re_name_at(const us_re *re, int i, int *group) {
  const unsigned char *e = re->names + (size_t)i * (size_t)re->name_size;
  *group = (e[0] << 8) | e[1];
  return (const char *)e + 2;
}

int us_re_group_index(const us_re *re, const char *name) {
  int n = pcre2_substring_number_from_name(re->code, (PCRE2_SPTR)name);
  return n > 0 ? n : -1;
}

int us_re_exec(us_re *re, const char *subject, size_t len, size_t start, unsigned opts, char *err,
               size_t errlen) {
  uint32_t o = 0;
  if (opts & US_RE_NO_UTF_CHECK) o |= PCRE2_NO_UTF_CHECK;
  if (opts & US_RE_NOTEMPTY_ATSTART) o |= PCRE2_NOTEMPTY_ATSTART;
  if (start > len)
    return US_RE_NOMATCH;
  int rc = pcre2_match(re->code, (PCRE2_SPTR)subject, len, start, o, re->md, re->mctx);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT && re->jit_stack == NULL) {
    /* Legitimate patterns over long subjects need more than the default JIT
    ** stack: give this pattern its own (grown on demand) and retry once. */
    re->jit_stack = pcre2_jit_stack_create(64 * 1024, US_RE_JIT_STACK_MAX, NULL);
    if (re->jit_stack) {
      pcre2_jit_stack_assign(re->mctx, NULL, re->jit_stack);
      rc = pcre2_match(re->code, (PCRE2_SPTR)subject, len, start, o, re->md, re->mctx);
    }
  }
  if (rc >= 0)
    return US_RE_MATCH; /* rc 0 cannot happen: md is sized from the pattern */
  if (rc == PCRE2_ERROR_NOMATCH)
    return US_RE_NOMATCH;
  char text[160];
  pcre_message(rc, text, sizeof text);
  if (rc == PCRE2_ERROR_BADUTFOFFSET || (rc <= PCRE2_ERROR_UTF8_ERR1 && rc >= PCRE2_ERROR_UTF8_ERR21)) {
    size_t at = rc == PCRE2_ERROR_BADUTFOFFSET ? start : pcre2_get_startchar(re->md);
    snprintf(err, errlen, "invalid UTF-8 subject: %s at offset %zu", text, at);
    return US_RE_EUTF8;
  }
  if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT ||
      rc == PCRE2_ERROR_JIT_STACKLIMIT) {
    snprintf(err, errlen, "regex backtracking limit reached (%s)", text);
    return US_RE_ELIMIT;
  }
  snprintf(err, errlen, "regex match failed: %s", text);
  return US_RE_EOTHER;
}

const size_t *us_re_ovector(const us_re *re) { return pcre2_get_ovector_pointer(re->md); }

size_t us_re_next(size_t s, size_t e, unsigned *opts) {
  *opts = (s == e) ? US_RE_NOTEMPTY_ATSTART : 0;
  return e;
}

/* Parses one `$` reference at tmpl[i] (tmpl[i] == '$'). On success stores the
** group (-1 for a literal "$") and returns the length consumed; returns 0 for
** a malformed reference, with a message in err. */
static size_t parse_ref(const us_re *re, const char *t, size_t tlen, size_t i, int *group, char *err,
                        size_t errlen) {
  size_t j = i + 1;
  if (j < tlen && t[j] == '$') {
    *group = -1;
    return 2;
  }
  if (j < tlen && t[j] >= '0' && t[j] <= '9') {
    long n = 0;
    while (j < tlen && t[j] >= '0' && t[j] <= '9' && n <= 100000)
      n = n * 10 + (t[j++] - '0');
    if (n > re->ncap) {
      snprintf(err, errlen, "replacement refers to group %ld, pattern has %d", n, re->ncap);
      return 0;
    }
    *group = (int)n;
    return j - i;
  }
  if (j < tlen && t[j] == '{') {
    const char *close = memchr(t + j, '}', tlen - j);
    size_t n = close ? (size_t)(close - (t + j + 1)) : 0;
    char name[64];
    if (close == NULL || n == 0 || n >= sizeof name) {
      snprintf(err, errlen, "bad ${...} reference at offset %zu of the replacement", i);
      return 0;
    }
    memcpy(name, t + j + 1, n);
    name[n] = '\0';
    char *end;
    long g = strtol(name, &end, 10);
    if (*end != '\0' || name[0] < '0' || name[0] > '9')
      g = us_re_group_index(re, name);
    if (g < 0 || g > re->ncap) {
      snprintf(err, errlen, "replacement refers to unknown group \"%s\"", name);
      return 0;
    }
    *group = (int)g;
    return n + 3;
  }
  snprintf(err, errlen, "lone '$' at offset %zu of the replacement (use $$ for a dollar sign)", i);
  return 0;
}

int us_re_check_template(const us_re *re, const char *tmpl, size_t tlen, char *err, size_t errlen) {
  for (size_t i = 0; i < tlen; i++) {
    if (tmpl[i] != '$')
      continue;
    int g;
    size_t n = parse_ref(re, tmpl, tlen, i, &g, err, errlen);
    if (n == 0)
      return US_RE_ETEMPLATE;
    i += n - 1;
  }
  return 0;
}

int us_re_expand(const us_re *re, const char *subject, const char *tmpl, size_t tlen, us_re_emit emit,
                 void *ud) {
  const size_t *ov = us_re_ovector(re);
  char dummy[US_RE_ERRLEN];
  size_t lit = 0; /* start of the pending literal run */
  for (size_t i = 0; i < tlen; i++) {
    if (tmpl[i] != '$')
      continue;
    int g;
    size_t n = parse_ref(re, tmpl, tlen, i, &g, dummy, sizeof dummy);
    if (n == 0)
      return US_RE_ETEMPLATE; /* not checked first: caller's bug */
    if (i > lit && emit(ud, tmpl + lit, i - lit))
      return US_RE_EEMIT;
    if (g < 0) {
      if (emit(ud, "$", 1))
        return US_RE_EEMIT;
    } else if (ov[2 * g] != US_RE_UNSET && emit(ud, subject + ov[2 * g], ov[2 * g + 1] - ov[2 * g])) {
      return US_RE_EEMIT;
    }
    i += n - 1;
    lit = i + 1;
  }
  if (tlen > lit && emit(ud, tmpl + lit, tlen - lit))
    return US_RE_EEMIT;
  return 0;
}

long us_re_gsub(us_re *re, const char *subject, size_t len, const char *tmpl, size_t tlen, long max,
                us_re_emit emit, void *ud, char *err, size_t errlen) {
  if (us_re_check_template(re, tmpl, tlen, err, errlen))
    return US_RE_ETEMPLATE;
  long count = 0;
  size_t pos = 0, copied = 0;
  unsigned opts = 0;
  while (max < 0 || count < max) {
    int rc = us_re_exec(re, subject, len, pos, opts, err, errlen);
    if (rc < 0)
      return rc;
    if (rc == US_RE_NOMATCH)
      break;
    const size_t *ov = us_re_ovector(re);
    size_t s = ov[0], e = ov[1];
    if (s > copied && emit(ud, subject + copied, s - copied))
      goto emitfail;
    int x = us_re_expand(re, subject, tmpl, tlen, emit, ud);
    if (x)
      goto emitfail;
    copied = e;
    count++;
    pos = us_re_next(s, e, &opts);
    opts |= US_RE_NO_UTF_CHECK;
    if (pos > len)
      break;
  }
  if (len > copied && emit(ud, subject + copied, len - copied))
    goto emitfail;
  return count;
emitfail:
  snprintf(err, errlen, "out of memory");
  return US_RE_EEMIT;
}
