/*
** test_okta.c: the Okta client core (include/usersync/okta.h) in C, against
** the Okta simulator (tests/fakes/fake.py okta, started with popen and
** killed at the end): configuration errors, URL encoding, paging by next
** links, concurrent jobs of a batch, per-job errors, a batch freed early,
** refused origins, the System Log cursor, bucket state. Exits non-zero on
** any failure.
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "usersync/http.h"
#include "usersync/okta.h"
#include "usersync/timeutil.h"

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

/* What a batch delivered: pages and records per job, each job's DONE. */
struct tally {
  size_t pages, items, per_job[4], done;
  int ok[4];
  struct us_okta_error err[4];
  char *cursor[4];
  int stop_at; /* stop (free the batch) after this many pages (0: never) */
};

/* Runs ops[0..n) as one batch and tallies its events. */
static void run(us_okta *c, const struct us_okta_op *ops, size_t n, struct tally *t) {
  us_okta_batch *b = us_okta_batch_new(c);
  struct us_okta_error err;
  for (size_t i = 0; i < n; i++)
    CHECK(us_okta_submit(b, &ops[i], &err) == 0);
  struct us_okta_event *ev;
  while ((ev = us_okta_batch_next(b))) {
    size_t j = ev->job < 4 ? ev->job : 3;
    if (ev->type == US_OKTA_PAGE) {
      t->pages++;
      t->items += ev->count;
      t->per_job[j] += ev->count;
      CHECK(ev->body || ev->ids);
    } else {
      t->done++;
      t->ok[j] = ev->ok;
      t->err[j] = ev->error;
      t->cursor[j] = ev->cursor;
      ev->cursor = NULL;
    }
    us_okta_event_free(ev);
    if (t->stop_at && (int)t->pages == t->stop_at)
      break;
  }
  us_okta_batch_free(b);
}

static void tally_clear(struct tally *t) {
  for (int i = 0; i < 4; i++)
    free(t->cursor[i]);
  memset(t, 0, sizeof *t);
}

static void test_config(void) {
  struct us_okta_options o;
  struct us_okta_error err;
  us_okta_options_init(&o);
  CHECK(o.budget_share == 0.5 && o.concurrency == 8 && o.dpop == 1);
  CHECK(us_okta_new(NULL, &o, &err) == NULL && !strcmp(err.code, "ECONFIG"));
  o.url = "https://example.okta.com";
  CHECK(us_okta_new(NULL, &o, &err) == NULL && strstr(err.message, "token"));
  o.token = "t";
  o.client_id = "c";
  CHECK(us_okta_new(NULL, &o, &err) == NULL);
  o.token = NULL;
  o.private_key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
  o.private_key_len = strlen(o.private_key);
  CHECK(us_okta_new(NULL, &o, &err) == NULL && !strcmp(err.code, "ECONFIG"));
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

  /* two listings at once: 450 users (3 pages) and 225 members (2 pages), ids only */
  struct us_okta_op ops[2] = {{0}, {0}};
  ops[0].ep = US_OKTA_USERS;
  ops[1].ep = US_OKTA_GROUP_MEMBERS;
  ops[1].id = "00g00000000000000001";
  ops[1].shape = US_OKTA_IDS;
  struct tally t = {0};
  run(c, ops, 2, &t);
  CHECK(t.pages == 5 && t.items == 675 && t.done == 2);
  CHECK(t.per_job[0] == 450 && t.per_job[1] == 225);
  CHECK(t.ok[0] && t.ok[1]);
  /* what the simulator served; the client's counts cover every attempt (a
  ** retried page too), so they are at least that */
  long users = sim_served(e, "/api/v1/users"),
       members = sim_served(e, "/api/v1/groups/00g00000000000000001/users");
  CHECK(users == 3 && members == 2);
  CHECK(us_okta_requests(c) >= 5);
  tally_clear(&t);

  struct us_okta_bucket b;
  us_okta_bucket(c, 0, &b);
  CHECK(!strcmp(b.name, "/api/v1/users") && b.known && b.limit == 100000 && b.remaining > 0);
  CHECK((long)b.requests >= users && b.inflight == 0);
  us_okta_bucket(c, 4, &b);
  CHECK(!strcmp(b.name, "/api/v1/groups*") && (long)b.requests >= members);

  /* freeing the batch after two pages cancels the rest */
  t.stop_at = 2;
  run(c, ops, 2, &t);
  CHECK(t.pages == 2 && t.done == 0);
  tally_clear(&t);

  /* each job fails alone: the missing user, not the other */
  struct us_okta_op one[2] = {{0}, {0}};
  one[0].ep = US_OKTA_USER;
  one[0].id = "nobody";
  one[1].ep = US_OKTA_USER;
  one[1].id = "00u00000000000000002";
  one[1].shape = US_OKTA_SLIM;
  run(c, one, 2, &t);
  CHECK(t.done == 2 && !t.ok[0] && t.ok[1] && t.pages == 1);
  CHECK(!strcmp(t.err[0].code, "ENOTFOUND") && t.err[0].status == 404 && !t.err[0].transport);
  CHECK(!strcmp(t.err[0].error_code, "E0000007") && t.err[0].request_id[0]);
  tally_clear(&t);

  /* another origin is never requested */
  unsigned long before = us_okta_requests(c);
  struct us_okta_op far = {0};
  far.ep = US_OKTA_LOGS;
  far.cursor = "https://elsewhere.example/api/v1/logs";
  run(c, &far, 1, &t);
  CHECK(t.done == 1 && !t.ok[0] && !strcmp(t.err[0].code, "EBADLINK"));
  CHECK(us_okta_requests(c) == before);
  tally_clear(&t);

  /* a get without its id is misuse */
  us_okta_batch *bt = us_okta_batch_new(c);
  struct us_okta_op noid = {0};
  noid.ep = US_OKTA_USER;
  CHECK(us_okta_submit(bt, &noid, &err) == -1 && !strcmp(err.code, "ECONFIG"));
  us_okta_batch_free(bt);

  /* a System Log poll: an empty page ends it and gives the cursor */
  struct us_okta_op logs = {0};
  logs.ep = US_OKTA_LOGS;
  char since[US_TIME_BUFLEN];
  us_time_format_iso8601(us_time_now() - 60, since, sizeof since);
  logs.since = since;
  run(c, &logs, 1, &t);
  CHECK(t.ok[0] && t.cursor[0] && strstr(t.cursor[0], "/api/v1/logs?"));
  tally_clear(&t);

  /* no engine: ECANCELED, nothing sent */
  us_okta_set_engine(c, NULL);
  before = us_okta_requests(c);
  run(c, ops, 1, &t);
  CHECK(!t.ok[0] && !strcmp(t.err[0].code, "ECANCELED") && t.err[0].transport);
  CHECK(us_okta_requests(c) == before);
  tally_clear(&t);

  /* an open batch is freed with its client */
  bt = us_okta_batch_new(c);
  CHECK(us_okta_submit(bt, &ops[0], &err) == 0);
  us_okta_free(c);

  /* a bad token: EAUTH, the token is not in the message */
  o.token = "s3cr3t-token";
  c = us_okta_new(e, &o, &err);
  run(c, ops, 1, &t);
  CHECK(!t.ok[0] && !strcmp(t.err[0].code, "EAUTH"));
  CHECK(t.err[0].status == 401 && !strcmp(t.err[0].error_code, "E0000011"));
  CHECK(strstr(t.err[0].message, "s3cr3t") == NULL && strstr(t.err[0].message, "E0000011"));
  tally_clear(&t);
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
