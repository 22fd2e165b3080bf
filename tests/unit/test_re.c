/*
** test_re.c: unit tests of the regex core (runtime/re.c): compile errors with
** offsets, captures and named groups, invalid UTF-8, the backtracking limit,
** template expansion and gsub with empty matches.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "usersync/re.h"

static int failures;
#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c)) {                                                                                    \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);                       \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)
#define CHECK_STR(got, want)                                                                       \
  do {                                                                                             \
    if (strcmp((got), (want)) != 0) {                                                              \
      fprintf(stderr, "%s:%d: got \"%s\", want \"%s\"\n", __FILE__, __LINE__, (got), (want));     \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

/* A growing string for us_re_emit. */
struct sbuf {
  char *p;
  size_t n, cap;
};
static int emit(void *ud, const char *p, size_t n) {
  struct sbuf *b = ud;
  if (b->n + n + 1 > b->cap) {
    size_t cap = (b->n + n + 1) * 2;
    char *q = realloc(b->p, cap);
    if (q == NULL)
      return 1;
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->n, p, n);
  b->n += n;
  b->p[b->n] = '\0';
  return 0;
}

/* gsub helper: returns the count, result in out (caller frees out->p). */
static long gsub(const char *pat, const char *s, const char *tmpl, long max, struct sbuf *out, char *err) {
  us_re *re = us_re_compile(pat, SIZE_MAX, 0, err, US_RE_ERRLEN);
  if (re == NULL)
    return -100;
  memset(out, 0, sizeof *out);
  emit(out, "", 0);
  long n = us_re_gsub(re, s, strlen(s), tmpl, strlen(tmpl), max, emit, out, err, US_RE_ERRLEN);
  us_re_free(re);
  return n;
}

static void test_header_example(void) {
  char err[US_RE_ERRLEN];
  const char *s = "to: ada@example";
  us_re *re = us_re_compile("(?<user>\\w+)@(\\w+)", SIZE_MAX, US_RE_CASELESS, err, sizeof err);
  CHECK(re != NULL);
  CHECK(us_re_exec(re, s, strlen(s), 0, 0, err, sizeof err) == US_RE_MATCH);
  const size_t *ov = us_re_ovector(re);
  CHECK(ov[0] == 4 && ov[1] == 15);
  CHECK(ov[2] == 4 && ov[3] == 7);
  CHECK(ov[4] == 8 && ov[5] == 15);
  CHECK(us_re_group_index(re, "user") == 1);
  CHECK(us_re_group_index(re, "nope") == -1);
  CHECK(us_re_ncaptures(re) == 2);
  CHECK(us_re_name_count(re) == 1);
  int g = 0;
  CHECK_STR(us_re_name_at(re, 0, &g), "user");
  CHECK(g == 1);
  us_re_free(re);
}

static void test_compile_errors(void) {
  char err[US_RE_ERRLEN];
  CHECK(us_re_compile("(abc", SIZE_MAX, 0, err, sizeof err) == NULL);
  CHECK_STR(err, "missing closing parenthesis at offset 4 in \"(abc\"");
  CHECK(us_re_compile("a{2,1}", SIZE_MAX, 0, err, sizeof err) == NULL);
  CHECK(strstr(err, "at offset 5") != NULL);
  CHECK(us_re_compile("ab\xff", SIZE_MAX, 0, err, sizeof err) == NULL); /* pattern must be UTF-8 */
  CHECK(strstr(err, "UTF-8") != NULL);
  unsigned f = 99;
  CHECK(us_re_parse_flags("imsxu", &f) == 0);
  CHECK(f == (US_RE_CASELESS | US_RE_MULTILINE | US_RE_DOTALL | US_RE_EXTENDED));
  CHECK(us_re_parse_flags("iq", &f) == 'q');
  us_re_free(NULL);
}

static void test_flags_and_utf(void) {
  char err[US_RE_ERRLEN];
  us_re *re = us_re_compile("^straße$", SIZE_MAX, US_RE_CASELESS | US_RE_MULTILINE, err, sizeof err);
  const char *s = "x\nSTRASSE\nStraße\n";
  CHECK(us_re_exec(re, s, strlen(s), 0, 0, err, sizeof err) == US_RE_MATCH);
  CHECK(us_re_ovector(re)[0] == 10);
  us_re_free(re);
  re = us_re_compile("\\w+", SIZE_MAX, 0, err, sizeof err); /* UCP: \w is Unicode */
  s = "ÄÖü!";
  CHECK(us_re_exec(re, s, strlen(s), 0, 0, err, sizeof err) == US_RE_MATCH);
  CHECK(us_re_ovector(re)[1] == 6);
  s = "ab\xc3(";
  CHECK(us_re_exec(re, s, strlen(s), 0, 0, err, sizeof err) == US_RE_EUTF8);
  CHECK(strstr(err, "offset 2") != NULL);
  s = "é";
  CHECK(us_re_exec(re, s, strlen(s), 1, 0, err, sizeof err) == US_RE_EUTF8); /* mid-character */
  CHECK(us_re_exec(re, s, strlen(s), 5, 0, err, sizeof err) == US_RE_NOMATCH);
  us_re_free(re);
}

static void test_limit(void) {
  char err[US_RE_ERRLEN];
  us_re *re = us_re_compile("^(\\w+\\s?)*$", SIZE_MAX, 0, err, sizeof err);
  char s[64];
  memset(s, 'a', 40);
  strcpy(s + 40, "!");
  CHECK(us_re_exec(re, s, strlen(s), 0, 0, err, sizeof err) == US_RE_ELIMIT);
  CHECK(strstr(err, "limit") != NULL);
  us_re_free(re);
}

static void test_gsub(void) {
  char err[US_RE_ERRLEN];
  struct sbuf b;
  CHECK(gsub("(\\w+)@(?<d>\\w+)", "a@b, c@d", "$2:${1}:${d}$$", -1, &b, err) == 2);
  CHECK_STR(b.p, "b:a:b$, d:c:d$");
  free(b.p);
  CHECK(gsub("x*", "abc", "-", -1, &b, err) == 4);
  CHECK_STR(b.p, "-a-b-c-");
  free(b.p);
  CHECK(gsub("b*", "abc", "-", -1, &b, err) == 4);
  CHECK_STR(b.p, "-a--c-");
  free(b.p);
  CHECK(gsub("o", "foo boo", "0", 2, &b, err) == 2);
  CHECK_STR(b.p, "f00 boo");
  free(b.p);
  CHECK(gsub("(a)|b", "ab", "[$1]", -1, &b, err) == 2); /* unset group -> empty */
  CHECK_STR(b.p, "[a][]");
  free(b.p);
  CHECK(gsub("(a)", "a", "$2", -1, &b, err) == US_RE_ETEMPLATE);
  CHECK(strstr(err, "group 2") != NULL);
  free(b.p);
  CHECK(gsub("(a)", "a", "${nope}", -1, &b, err) == US_RE_ETEMPLATE);
  CHECK(strstr(err, "nope") != NULL);
  free(b.p);
  CHECK(gsub("(a)", "a", "cost: $", -1, &b, err) == US_RE_ETEMPLATE);
  free(b.p);
  CHECK(gsub("é", "café é", "e", -1, &b, err) == 2);
  CHECK_STR(b.p, "cafe e");
  free(b.p);
}

int main(void) {
  test_header_example();
  test_compile_errors();
  test_flags_and_utf();
  test_limit();
  test_gsub();
  if (failures) {
    fprintf(stderr, "%d failure(s)\n", failures);
    return 1;
  }
  printf("test_re: all passed\n");
  return 0;
}
