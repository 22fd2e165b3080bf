/*
** test_okta.c: the Okta client core (include/usersync/okta.h) in C, against
** the Okta simulator (tests/fakes/fake.py okta, started with popen and
** killed at the end): configuration errors, URL encoding, paging by next
** links, concurrent listings, per-listing errors, callback stops, refused
** origins, bucket state. Exits non-zero on any failure.
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "usersync/http.h"
#include "usersync/okta.h"

static int failures = 0;
#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c)) {                                                                                    \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);                        \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

static char sim_url[128];
static long sim_pid;
static FILE *sim_proc;

/* Starts the simulator with n users (user i in group 1 when i is even). */
static int start_sim(int n) {
  char state[] = "/tmp/us-okta-state-XXXXXX";
  int fd = mkstemp(state);
  if (fd < 0)
    return -1;
  FILE *f = fdopen(fd, "w");
  fprintf(f, "{\"users\":[");
  for (int i = 1; i <= n; i++)
    fprintf(f,
            "%s{\"id\":\"00u%017d\",\"status\":\"ACTIVE\",\"profile\":{\"login\":\"u%d@x.com\"}}",
            i > 1 ? "," : "", i, i);
  fprintf(f, "],\"groups\":[{\"id\":\"00g%017d\",\"profile\":{\"name\":\"g\"}}],", 1);
  fprintf(f, "\"group_members\":{\"00g%017d\":[", 1);
  for (int i = 2, k = 0; i <= n; i += 2, k++)
    fprintf(f, "%s\"00u%017d\"", k ? "," : "", i);
  fprintf(f, "]},\"apps\":{},\"logs\":[]}");
  fclose(f);
  const char *py = getenv("PYTHON3") ? getenv("PYTHON3") : "python3";
  const char *src = getenv("SOURCE_DIR") ? getenv("SOURCE_DIR") : ".";
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "timeout 120 '%s' '%s/tests/fakes/fake.py' okta --port 0 --state '%s' & echo pid $!", py,
           src, state);
  sim_proc = popen(cmd, "r");
  if (!sim_proc)
    return -1;
  char line[256];
  for (int i = 0; i < 2 && fgets(line, sizeof line, sim_proc); i++) {
    if (!strncmp(line, "pid ", 4))
      sim_pid = strtol(line + 4, NULL, 10);
    else
      sscanf(line, "listening on %127s", sim_url);
  }
  unlink(state);
  return sim_url[0] && sim_pid ? 0 : -1;
}

static void stop_sim(void) {
  if (sim_pid)
    kill((pid_t)sim_pid, SIGTERM);
  if (sim_proc)
    pclose(sim_proc);
}

/* One control request to the simulator (method on path); returns how often
** needle occurs in its answer, or -1 when it failed. */
static long sim_control(us_http *e, const char *method, const char *path, const char *needle) {
  char url[256];
  snprintf(url, sizeof url, "%s%s", sim_url, path);
  struct us_http_request r = {.method = method, .url = url, .max_retries = 0};
  const char *err = NULL;
  us_http_req *h = us_http_submit(e, &r, &err);
  if (!h)
    return -1;
  long n = -1;
  const struct us_http_response *resp = NULL;
  if (us_http_wait(e, &h, 1, 60000) == 0)
    resp = us_http_result(h);
  if (resp && resp->status / 100 == 2) {
    n = 0;
    for (const char *p = resp->body; needle && (p = strstr(p, needle)); p += strlen(needle))
      n++;
  }
  us_http_release(h);
  return n;
}

/* Requests to exactly `path` the simulator served since its log was cleared. */
static long sim_served(us_http *e, const char *path) {
  char needle[160];
  snprintf(needle, sizeof needle, "\"path\":\"%s\"", path); /* compact JSON */
  return sim_control(e, "GET", "/__fake/requests", needle);
}

struct tally {
  size_t pages, items, per_list[4];
  int stop_at; /* stop on this page (0: never) */
};

static int count_pages(void *ud, const struct us_okta_page *p, struct us_okta_error *err) {
  struct tally *t = ud;
  t->pages++;
  t->items += p->count;
  if (p->list < 4)
    t->per_list[p->list] += p->count;
  if (t->stop_at && (int)t->pages == t->stop_at) {
    snprintf(err->code, sizeof err->code, "STOPPED");
    snprintf(err->message, sizeof err->message, "stopped by the test");
    return 1;
  }
  return 0;
}

static void test_config(void) {
  struct us_okta_options o;
  struct us_okta_error err;
  us_okta_options_init(&o);
  CHECK(o.budget_share == 0.5 && o.concurrency == 8 && o.dpop == 1);
  CHECK(us_okta_new(NULL, &o, &err) == NULL && !strcmp(err.code, "OKTA_CONFIG"));
  o.url = "https://example.okta.com";
  CHECK(us_okta_new(NULL, &o, &err) == NULL && strstr(err.message, "token"));
  o.token = "t";
  o.client_id = "c";
  CHECK(us_okta_new(NULL, &o, &err) == NULL);
  o.token = NULL;
  o.private_key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
  o.private_key_len = strlen(o.private_key);
  CHECK(us_okta_new(NULL, &o, &err) == NULL && !strcmp(err.code, "OKTA_CONFIG"));
  CHECK(strstr(err.message, "AAAA") == NULL);
  o.client_id = NULL;
  o.token = "t";
  o.budget_share = 0;
  CHECK(us_okta_new(NULL, &o, &err) == NULL);
  char *e = us_okta_urlencode("lastUpdated gt \"2024\" a+b/c");
  CHECK(e && !strcmp(e, "lastUpdated%20gt%20%222024%22%20a%2Bb%2Fc"));
  free(e);
}

static void test_lists(us_http *e) {
  struct us_okta_options o;
  struct us_okta_error err;
  us_okta_options_init(&o);
  o.url = sim_url;
  o.token = "test-token";
  o.concurrency = 2;
  us_okta *c = us_okta_new(e, &o, &err);
  CHECK(c != NULL);
  if (!c)
    return;
  CHECK(sim_control(e, "DELETE", "/__fake/requests", NULL) == 0);

  /* two listings at once: 450 users (3 pages) and 225 members (2 pages) */
  struct us_okta_listing ls[2] = {{0}, {0}};
  ls[0].url = "/api/v1/users?limit=200";
  ls[1].url = "/api/v1/groups/00g00000000000000001/users?limit=200";
  struct tally t = {0};
  CHECK(us_okta_list(c, ls, 2, count_pages, &t, &err) == 0);
  CHECK(t.pages == 5 && t.items == 675);
  CHECK(t.per_list[0] == 450 && t.per_list[1] == 225);
  CHECK(ls[0].pages == 3 && ls[1].pages == 2 && ls[0].done && ls[1].done);
  /* what the simulator served; the client's counts cover every attempt (a
  ** retried page too), so they are at least that */
  long users = sim_served(e, "/api/v1/users"),
       members = sim_served(e, "/api/v1/groups/00g00000000000000001/users");
  CHECK(users == 3 && members == 2);
  CHECK(us_okta_requests(c) >= 5);
  us_okta_listing_clear(ls, 2);

  struct us_okta_bucket b;
  us_okta_bucket(c, 0, &b);
  CHECK(!strcmp(b.name, "/api/v1/users") && b.known && b.limit == 100000 && b.remaining > 0);
  CHECK((long)b.requests >= users && b.inflight == 0);
  us_okta_bucket(c, 4, &b);
  CHECK(!strcmp(b.name, "/api/v1/groups*") && (long)b.requests >= members);

  /* a callback stop cancels the rest */
  struct tally t2 = {0};
  t2.stop_at = 2;
  CHECK(us_okta_list(c, ls, 2, count_pages, &t2, &err) == -1);
  CHECK(!strcmp(err.code, "STOPPED"));
  us_okta_listing_clear(ls, 2);

  /* per-listing errors: the missing user fails alone */
  struct us_okta_error e1 = {0};
  struct us_okta_listing one[2] = {{0}, {0}};
  one[0].url = "/api/v1/users/nobody";
  one[0].single = 1;
  one[0].error = &e1;
  one[1].url = "/api/v1/users/00u00000000000000002";
  one[1].single = 1;
  struct tally t3 = {0};
  CHECK(us_okta_list(c, one, 2, count_pages, &t3, &err) == 0);
  CHECK(one[0].failed && !one[0].done && one[1].done);
  CHECK(!strcmp(e1.code, "OKTA_NOT_FOUND") && e1.status == 404);
  CHECK(!strcmp(e1.error_code, "E0000007") && e1.request_id[0]);
  CHECK(t3.pages == 1);

  /* without per-listing error: the whole call fails */
  one[0].error = NULL;
  CHECK(us_okta_list(c, one, 2, NULL, NULL, &err) == -1 && !strcmp(err.code, "OKTA_NOT_FOUND"));

  /* another origin is never requested */
  unsigned long before = us_okta_requests(c);
  struct us_okta_listing far = {0};
  far.url = "https://elsewhere.example/api/v1/users";
  CHECK(us_okta_list(c, &far, 1, NULL, NULL, &err) == -1 && !strcmp(err.code, "OKTA_BAD_LINK"));
  CHECK(us_okta_requests(c) == before);

  /* a get expects an object, a listing an array */
  struct us_okta_listing wrong = {0};
  wrong.url = "/api/v1/users/00u00000000000000002"; /* an object, read as a page */
  CHECK(us_okta_list(c, &wrong, 1, NULL, NULL, &err) == -1 && !strcmp(err.code, "OKTA_BAD_JSON"));

  /* no engine: ECANCELED, nothing sent */
  us_okta_set_engine(c, NULL);
  CHECK(us_okta_list(c, ls, 1, NULL, NULL, &err) == -1 && !strcmp(err.code, "ECANCELED"));
  us_okta_free(c);

  /* a bad token: OKTA_AUTH, the token is not in the message */
  o.token = "s3cr3t-token";
  c = us_okta_new(e, &o, &err);
  struct us_okta_listing l = {0};
  l.url = "/api/v1/users";
  CHECK(us_okta_list(c, &l, 1, NULL, NULL, &err) == -1 && !strcmp(err.code, "OKTA_AUTH"));
  CHECK(err.status == 401 && !strcmp(err.error_code, "E0000011"));
  CHECK(strstr(err.message, "s3cr3t") == NULL && strstr(err.message, "E0000011"));
  us_okta_free(c);
}

int main(void) {
  test_config();
  if (start_sim(450) != 0) {
    fprintf(stderr, "cannot start the simulator\n");
    stop_sim();
    return 1;
  }
  us_http *e = us_http_new(NULL, NULL);
  CHECK(e != NULL);
  if (e)
    test_lists(e);
  us_http_free(e);
  stop_sim();
  if (failures)
    fprintf(stderr, "%d check(s) failed\n", failures);
  else
    printf("test_okta: all checks passed\n");
  return failures ? 1 : 0;
}
