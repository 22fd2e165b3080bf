/*
** test_jsonscan.c: the C clients' JSON reader on the shapes they meet:
** paging envelopes of the three Atlassian products and Okta/Jira/Confluence/
** Bitbucket error bodies, plus malformed and truncated bodies.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "usersync/jsonscan.h"

static int checks, failures;
#define CHECK(cond)                                                                                \
  do {                                                                                             \
    checks++;                                                                                      \
    if (!(cond)) {                                                                                 \
      failures++;                                                                                  \
      fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #cond);                          \
    }                                                                                              \
  } while (0)

static int get(const char *doc, const char *path, struct us_jval *v) {
  struct us_jval root;
  return us_json_parse(doc, strlen(doc), &root) && us_json_get(&root, path, v);
}

int main(void) {
  struct us_jval v;
  long long n;
  int b;
  const char *bb = "{\"size\":2,\"limit\":25,\"isLastPage\":false,\"start\":0,\"nextPageStart\":25,"
                   "\"values\":[{\"name\":\"a\"},{\"name\":\"b\\u00e9\"}]}";
  CHECK(get(bb, "isLastPage", &v) && us_json_bool(&v, &b) && b == 0);
  CHECK(get(bb, "nextPageStart", &v) && us_json_int(&v, &n) && n == 25);
  CHECK(get(bb, "values[1].name", &v) && us_json_streq(&v, "b\xc3\xa9"));
  CHECK(!get(bb, "values[2].name", &v));
  CHECK(!get(bb, "missing", &v));
  CHECK(get(bb, "values", &v) && v.type == US_J_ARRAY);
  size_t pos = 0;
  struct us_jval e;
  int count = 0;
  while (us_json_next_elem(&v, &pos, &e))
    count++;
  CHECK(count == 2);

  const char *conf = "{\"results\":[],\"start\":0,\"limit\":100,\"size\":0,"
                     "\"_links\":{\"base\":\"http://x\",\"context\":\"\",\"next\":\"/rest/api/user/list?start=100\"}}";
  CHECK(get(conf, "_links.next", &v));
  char *s = us_json_strdup(&v, NULL);
  CHECK(s && strcmp(s, "/rest/api/user/list?start=100") == 0);
  free(s);

  const char *okta = "{\"errorCode\":\"E0000047\",\"errorSummary\":\"API call exceeded rate limit due to too many requests.\","
                     "\"errorLink\":\"E0000047\",\"errorId\":\"oae1\",\"errorCauses\":[{\"errorSummary\":\"x \\\"quoted\\\"\"}]}";
  CHECK(get(okta, "errorCode", &v) && us_json_streq(&v, "E0000047"));
  CHECK(get(okta, "errorCauses[0].errorSummary", &v));
  s = us_json_strdup(&v, NULL);
  CHECK(s && strcmp(s, "x \"quoted\"") == 0);
  free(s);

  const char *jira = "{\"errorMessages\":[\"The user named 'bob' does not exist\"],\"errors\":{}}";
  CHECK(get(jira, "errorMessages[0]", &v) && v.type == US_J_STRING);
  const char *bitb = "{\"errors\":[{\"context\":null,\"message\":\"A user with that name already exists.\",\"exceptionName\":null}]}";
  CHECK(get(bitb, "errors[0].context", &v) && v.type == US_J_NULL);

  /* surrogate pair and escapes */
  CHECK(get("{\"k\":\"\\ud83d\\ude00\\n\"}", "k", &v));
  s = us_json_strdup(&v, NULL);
  CHECK(s && strcmp(s, "\xf0\x9f\x98\x80\n") == 0);
  free(s);
  CHECK(get("{\"k\":\"\\udc00\"}", "k", &v) && us_json_strdup(&v, NULL) == NULL);

  /* escaped keys match after unescaping */
  CHECK(get("{\"a\\u0062\":1}", "ab", &v) && us_json_int(&v, &n) && n == 1);

  /* numbers */
  CHECK(get("{\"n\":1.5}", "n", &v) && !us_json_int(&v, &n));
  CHECK(get("{\"n\":-12}", "n", &v) && us_json_int(&v, &n) && n == -12);
  CHECK(get("{\"n\":99999999999999999999}", "n", &v) && !us_json_int(&v, &n));

  /* malformed or truncated documents are refused whole */
  const char *bad[] = {"", "{", "{\"a\":}", "{\"a\":1,}", "[1 2]", "{\"a\":tru}", "{\"a\":\"x}", "<html>503</html>",
                       "{\"a\":01}", "{\"a\":1} x", "{\"a\":\"\x01\"}", "{\"size\":2,\"values\":[{\"name\":\"a\"},{\"na"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    struct us_jval root;
    CHECK(!us_json_parse(bad[i], strlen(bad[i]), &root));
  }
  /* deep nesting is bounded */
  char deep[2100];
  memset(deep, '[', 1000);
  memset(deep + 1000, ']', 1000);
  deep[2000] = '\0';
  struct us_jval root;
  CHECK(!us_json_parse(deep, strlen(deep), &root));
  CHECK(us_json_parse(" [ [ ] , { } ] ", 15, &root) && root.type == US_J_ARRAY);

  /* the one escaper: quotes, backslash, short forms, \u00XX, UTF-8 as is; it
  ** reads back through the scanner as the same string */
  const char raw[] = "a\"b\\c\n\r\t\b\f\x01\x1f\x7f \xc3\xa7";
  char *q = us_json_quote(raw);
  CHECK(q && !strcmp(q, "\"a\\\"b\\\\c\\n\\r\\t\\b\\f\\u0001\\u001f\x7f \xc3\xa7\""));
  CHECK(us_json_escape(NULL, raw, strlen(raw)) == strlen(q) - 2);
  struct us_jval qv;
  CHECK(q && us_json_parse(q, strlen(q), &qv) && us_json_streq(&qv, raw));
  free(q);
  CHECK(us_json_escape(NULL, "", 0) == 0);

  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures ? 1 : 0;
}
