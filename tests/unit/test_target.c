/*
** test_target.c: the target core without a server: config validation,
** capabilities, unsupported operations answered without a request, a
** refused connection, batch cancellation, and the product error texts
** (Jira errorMessages/errors, Confluence message, Bitbucket errors[],
** HTML title, plain text) that go into messages, the 401 wording, and
** t_rel_path (Confluence _links.next / statusPath under a context path).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../runtime/target_impl.h"
#include "usersync/http.h"
#include "usersync/target.h"

static int failures;
#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c)) {                                                                                    \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);                        \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

static struct us_http_response resp(long status, const char *ctype, const char *body) {
  static struct us_http_header h;
  struct us_http_response r = {0};
  r.status = status;
  h.name = "content-type";
  h.value = ctype;
  r.headers = &h;
  r.nheaders = 1;
  r.body = body;
  r.body_len = strlen(body);
  return r;
}

static void error_texts(void) {
  struct us_http_response r =
      resp(400, "application/json",
           "{\"errorMessages\":[\"first\",\"second\"],\"errors\":{\"email\":\"bad\"}}");
  char *s = t_error_text(&r);
  CHECK(!strcmp(s, "first; second; bad"));
  free(s);
  r = resp(402, "application/json",
           "{\"statusCode\":402,\"message\":\"no seats\",\"reason\":\"x\"}");
  s = t_error_text(&r);
  CHECK(!strcmp(s, "no seats"));
  free(s);
  r = resp(409, "application/json",
           "{\"errors\":[{\"context\":null,\"message\":\"exists\",\"exceptionName\":null},"
           "{\"message\":\"again\"}]}");
  s = t_error_text(&r);
  CHECK(!strcmp(s, "exists; again"));
  free(s);
  r = resp(401, "text/html", "<html><head><TITLE>Log in</TITLE></head></html>");
  s = t_error_text(&r);
  CHECK(!strcmp(s, "HTML page instead of JSON: Log in"));
  free(s);
  r = resp(403, "text/plain", "XSRF check failed\nmore");
  s = t_error_text(&r);
  CHECK(!strcmp(s, "non-JSON body: XSRF check failed"));
  free(s);
  CHECK(!strcmp(t_status_code(401), "EAUTH"));
  CHECK(!strcmp(t_status_code(402), "ESEATS"));
  CHECK(!strcmp(t_status_code(403), "EFORBIDDEN"));
  CHECK(!strcmp(t_status_code(404), "ENOTFOUND"));
  CHECK(!strcmp(t_status_code(409), "ECONFLICT"));
  CHECK(!strcmp(t_status_code(429), "ERATELIMIT"));
  CHECK(!strcmp(t_status_code(500), "EHTTP"));
}

/* Paths from responses made relative to a base URL with a context path. */
static void rel_paths(us_http *e) {
  const char *err = NULL;
  struct us_target_config c = {
      .type = "confluence", .url = "https://wiki.example/confluence/", .token = "t"};
  us_target *t = us_target_new(e, &c, &err);
  CHECK(t != NULL);
  if (!t)
    return;
  static const char *const cases[][2] = {
      {"/rest/api/group?limit=2&start=2", "/rest/api/group?limit=2&start=2"},
      {"rest/api/group?start=2", "/rest/api/group?start=2"},
      {"/confluence/rest/api/group?start=2", "/rest/api/group?start=2"},
      {"https://wiki.example/confluence/rest/api/longtask/1", "/rest/api/longtask/1"},
      {"http://internal:8090/confluence/rest/api/x", "/rest/api/x"},
      {"/confluencex/rest/api/x", "/confluencex/rest/api/x"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *r = t_rel_path(t, cases[i][0]);
    CHECK(r && !strcmp(r, cases[i][1]));
    if (r && strcmp(r, cases[i][1]))
      fprintf(stderr, "  t_rel_path(%s) = %s\n", cases[i][0], r);
    free(r);
  }
  /* 401: the message says what it means, whatever the body */
  struct us_http_response r = resp(401, "text/html", "<html><title>Unauthorized (401)</title>");
  const char *code = NULL;
  char *m = t_http_error(t, "list accounts", &r, &code);
  CHECK(!strcmp(code, "EAUTH"));
  CHECK(m && !strcmp(m, "confluence: list accounts: HTTP 401 (credentials refused): HTML page "
                        "instead of JSON: Unauthorized (401)"));
  free(m);
  us_target_free(t);
}

static void builders(void) {
  char *s = t_jobj("name", "a\"b", "skip", NULL, "active", TJ_FALSE, NULL);
  CHECK(!strcmp(s, "{\"name\":\"a\\\"b\",\"active\":false}"));
  free(s);
  char *list[] = {"x", "y\n"};
  s = t_jarr(list, 2);
  CHECK(!strcmp(s, "[\"x\",\"y\\n\"]")); /* us_json_escape's short form */
  free(s);
  s = t_enc("a b/ç+");
  CHECK(!strcmp(s, "a%20b%2F%C3%A7%2B"));
  free(s);
}

struct seen {
  int done, ok;
  char code[32];
  unsigned long requests;
};

static void on_event(void *ud, struct us_target_event *ev) {
  struct seen *s = ud;
  if (ev->type == US_TEV_DONE) {
    s->done++;
    s->ok = ev->ok;
    snprintf(s->code, sizeof s->code, "%s", ev->code ? ev->code : "");
    s->requests = ev->requests;
  }
  us_target_event_free(ev);
}

static void with_engine(void) {
  struct us_http_options o;
  us_http_options_init(&o);
  o.max_retries = 0;
  us_http *e = us_http_new(&o, NULL);
  const char *err = NULL;
  struct us_target_config c = {.type = "svn", .url = "http://127.0.0.1:1", .token = "t"};
  CHECK(!us_target_new(e, &c, &err) && strstr(err, "type"));
  c.type = "bitbucket";
  c.url = "ftp://x";
  CHECK(!us_target_new(e, &c, &err) && strstr(err, "url"));
  c.url = "http://127.0.0.1:1/";
  c.token = NULL;
  CHECK(!us_target_new(e, &c, &err) && strstr(err, "credentials"));
  c.user = "u";
  c.password = "p";
  us_target *t = us_target_new(e, &c, &err);
  CHECK(t && !strcmp(us_target_type(t), "bitbucket"));
  struct us_target_caps caps = us_target_caps(t);
  CHECK(!caps.deactivate && caps.rename && caps.bulk_add && !caps.leads);

  /* unsupported: answered at once, no request */
  us_target_batch *b = us_target_batch_new(t);
  struct us_target_op op = {.kind = US_TOP_DEACTIVATE_USER, .name = "alice"};
  struct seen s = {0};
  CHECK(us_target_submit(b, &op, &err) == 0);
  us_target_run(b, on_event, &s);
  CHECK(s.done == 1 && !s.ok && !strcmp(s.code, "EUNSUPPORTED") && s.requests == 0);
  CHECK(us_target_requests(t) == 0);

  /* refused connection: the transport code */
  memset(&s, 0, sizeof s);
  op.kind = US_TOP_DELETE_USER;
  CHECK(us_target_submit(b, &op, &err) == 0);
  us_target_run(b, on_event, &s);
  CHECK(s.done == 1 && !s.ok && !strcmp(s.code, "ECONNREFUSED") && s.requests == 1);

  /* a batch freed with work in flight cancels it without events */
  op.kind = US_TOP_LIST_ACCOUNTS;
  CHECK(us_target_submit(b, &op, &err) == 0);
  CHECK(us_target_batch_pending(b) == 1);
  us_target_batch_free(b);
  /* a target freed with a live batch frees it too */
  b = us_target_batch_new(t);
  CHECK(us_target_submit(b, &op, &err) == 0);
  us_target_free(t);
  rel_paths(e);
  us_http_free(e);
}

int main(void) {
  error_texts();
  builders();
  with_engine();
  if (failures)
    fprintf(stderr, "%d failure(s)\n", failures);
  else
    printf("test_target: all passed\n");
  return failures != 0;
}
