/*
** test_http.c: the HTTP engine's C API (include/usersync/http.h).
** Pure helpers directly; the engine against tests/lua/support/httpd.py
** (started with $PYTHON3 from $SOURCE_DIR, killed at the end).
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <time.h>

#include <curl/curl.h>

#include "usersync/http.h"

#include "check.h"

static struct us_http_response resp_of(struct us_http_header *h, size_t n, long status) {
  struct us_http_response r;
  memset(&r, 0, sizeof r);
  r.headers = h;
  r.nheaders = n;
  r.status = status;
  return r;
}

static void test_retry_after(void) {
  CHECK_EQ_LONG(us_http_parse_retry_after("120", (time_t)-1), 120000);
  CHECK_EQ_LONG(us_http_parse_retry_after(" 5 ", (time_t)-1), 5000);
  CHECK_EQ_LONG(us_http_parse_retry_after("0", (time_t)-1), 0);
  CHECK_EQ_LONG(us_http_parse_retry_after("soon", (time_t)-1), -1);
  CHECK_EQ_LONG(us_http_parse_retry_after("-3", (time_t)-1), -1);
  CHECK_EQ_LONG(us_http_parse_retry_after("", (time_t)-1), -1);
  time_t date = curl_getdate("Sun, 06 Nov 1994 08:49:37 GMT", NULL);
  CHECK(date != (time_t)-1);
  CHECK_EQ_LONG(us_http_parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", date), 30000);
  CHECK_EQ_LONG(us_http_parse_retry_after("Sunday, 06-Nov-94 08:49:47 GMT", date), 10000);
  CHECK_EQ_LONG(us_http_parse_retry_after("Sun Nov  6 08:49:39 1994", date), 2000);
  /* the one HTTP-date grammar (timeutil's, as usersync.time.parse_http_date):
  ** a zone other than GMT is not an HTTP date */
  CHECK_EQ_LONG(us_http_parse_retry_after("Sun, 06 Nov 1994 08:50:07 CET", date), -1);
  CHECK_EQ_LONG(us_http_parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", date), 0);
  /* against the local clock when there is no Date */
  CHECK_EQ_LONG(us_http_parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", (time_t)-1), 0);
}

static void test_server_delay(void) {
  struct us_http_header okta[] = {
      {"date", "Sun, 06 Nov 1994 08:49:37 GMT"},
      {"x-rate-limit-reset", "784111800"}, /* 08:50:00 */
      {"x-rate-limit-reset", "784111790"}, /* 08:49:50: the smallest wins */
  };
  struct us_http_response r = resp_of(okta, 3, 429);
  CHECK_EQ_LONG(us_http_server_delay(&r), (784111790 - 784111777 + 1) * 1000L);
  r.status = 503; /* reset only counts on 429 */
  CHECK_EQ_LONG(us_http_server_delay(&r), -1);

  struct us_http_header ra[] = {
      {"date", "Sun, 06 Nov 1994 08:49:37 GMT"},
      {"x-rate-limit-reset", "784111800"},
      {"retry-after", "7"},
  };
  r = resp_of(ra, 3, 429);
  CHECK_EQ_LONG(us_http_server_delay(&r), 7000); /* Retry-After wins */
  r = resp_of(ra, 2, 429);
  CHECK_EQ_LONG(us_http_server_delay(&r), (784111800 - 784111777 + 1) * 1000L);
  r = resp_of(ra, 1, 429);
  CHECK_EQ_LONG(us_http_server_delay(&r), -1);
}

static void test_backoff(void) {
  /* full jitter: uniform in [0, base * 2^(n-1)], capped */
  CHECK(us_http_backoff(US_HTTP_JITTER_FULL, 100, 10000, 1, 0, 0.999) <= 100);
  CHECK(us_http_backoff(US_HTTP_JITTER_FULL, 100, 10000, 4, 0, 0.999) > 700);
  CHECK(us_http_backoff(US_HTTP_JITTER_FULL, 100, 10000, 4, 0, 0.999) <= 800);
  CHECK_EQ_LONG(us_http_backoff(US_HTTP_JITTER_FULL, 100, 10000, 4, 0, 0.5), 400);
  CHECK(us_http_backoff(US_HTTP_JITTER_FULL, 100, 1000, 30, 0, 0.999) <= 1000);
  CHECK(us_http_backoff(US_HTTP_JITTER_FULL, 100, 1000, 1, 0, 0.0) >= 1);
  /* decorrelated: [base, 3 * prev], capped */
  long d = us_http_backoff(US_HTTP_JITTER_DECORRELATED, 100, 10000, 2, 400, 0.999);
  CHECK(d >= 100 && d <= 1200 && d > 1100);
  CHECK_EQ_LONG(us_http_backoff(US_HTTP_JITTER_DECORRELATED, 100, 10000, 2, 400, 0.0), 100);
  CHECK(us_http_backoff(US_HTTP_JITTER_DECORRELATED, 100, 500, 9, 5000, 0.999) <= 500);
}

static void test_headers_and_links(void) {
  struct us_http_header h[] = {
      {"link", "<https://o.example/api/v1/users?limit=2>; rel=\"self\""},
      {"content-type", "application/json"},
      {"link", "<https://o.example/api/v1/users?after=00u1&limit=2>; rel=\"next\""},
      {"Content-Type", "text/plain"},
  };
  struct us_http_response r = resp_of(h, 4, 200);
  CHECK_STR(us_http_header(&r, "CONTENT-TYPE"), "text/plain");
  CHECK(us_http_header(&r, "x-none") == NULL);
  size_t i = us_http_header_next(&r, "link", 0);
  CHECK_EQ_LONG(i, 0);
  i = us_http_header_next(&r, "link", i + 1);
  CHECK_EQ_LONG(i, 2);
  CHECK_EQ_LONG(us_http_header_next(&r, "link", i + 1), 4);
  char *u = us_http_link(&r, "next");
  CHECK_STR(u, "https://o.example/api/v1/users?after=00u1&limit=2");
  free(u);
  u = us_http_link(&r, "self");
  CHECK_STR(u, "https://o.example/api/v1/users?limit=2");
  free(u);
  CHECK(us_http_link(&r, "prev") == NULL);

  struct us_http_header joined[] = {
      {"link", "<a?x=1,2>; title=\"a, b; c\"; rel=\"self\", <b>; rel=\"prev NEXT\"; x=y"},
  };
  r = resp_of(joined, 1, 200);
  u = us_http_link(&r, "next");
  CHECK_STR(u, "b");
  free(u);
  u = us_http_link(&r, "self");
  CHECK_STR(u, "a?x=1,2");
  free(u);
  struct us_http_header bad[] = {{"link", "no brackets; rel=next"}, {"link", "<c>; rel=next"}};
  r = resp_of(bad, 2, 200);
  u = us_http_link(&r, "next");
  CHECK_STR(u, "c");
  free(u);
}

/* ---------- engine against the test server ---------- */

struct server {
  FILE *proc;
  pid_t pid;
  char url[128];
};

static int server_start(struct server *s) {
  const char *py = getenv("PYTHON3"), *src = getenv("SOURCE_DIR");
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "exec '%s' '%s/tests/lua/support/httpd.py' --lifetime 120",
           py ? py : "python3", src ? src : ".");
  s->proc = popen(cmd, "r");
  char line[256] = "";
  int pid = 0;
  if (!s->proc || !fgets(line, sizeof line, s->proc) ||
      sscanf(line, "listening on %127s pid %d", s->url, &pid) != 2) {
    fprintf(stderr, "test server did not start: %s\n", line);
    if (s->proc)
      pclose(s->proc);
    return -1;
  }
  s->pid = (pid_t)pid;
  return 0;
}

static void server_stop(struct server *s) {
  kill(s->pid, SIGTERM);
  pclose(s->proc);
}

struct tally {
  int done, governor_calls, observed, retry_hooks;
  long statuses[16];
  const char *codes[16];
};

static void on_done(us_http_req *h, const struct us_http_response *r, void *ud) {
  struct tally *t = ud;
  if (t->done < 16) {
    t->statuses[t->done] = r->status;
    t->codes[t->done] = r->code;
  }
  t->done++;
  (void)h;
}

static void on_done_release(us_http_req *h, const struct us_http_response *r, void *ud) {
  on_done(h, r, ud);
  us_http_release(h); /* allowed from the callback */
}

static long governor(void *ud, const char *host, const char *method, const char *url) {
  struct tally *t = ud;
  (void)host, (void)method, (void)url;
  return t->governor_calls++ == 0 ? 300 : 0; /* hold the very first start back */
}

static void observe(void *ud, const char *host, const char *method,
                    const struct us_http_response *r) {
  struct tally *t = ud;
  (void)host;
  CHECK_STR(method, "GET");
  if (r->status > 0)
    t->observed++;
}

static void on_retry(us_http_req *h, const struct us_http_response *last, int n, void *ud) {
  struct tally *t = ud;
  char v[32];
  t->retry_hooks++;
  snprintf(v, sizeof v, "retry-%d-after-%ld", n, last->status);
  CHECK(us_http_req_set_header(h, "X-Retry-Note", v) == 0);
}

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_engine(const struct server *s) {
  struct tally t;
  memset(&t, 0, sizeof t);
  struct us_http_options o;
  us_http_options_init(&o);
  o.per_host = 3;
  o.backoff_base_ms = 10;
  o.governor = governor;
  o.governor_ud = &t;
  o.observe = observe;
  o.observe_ud = &t;
  const char *err = NULL;
  us_http *e = us_http_new(&o, &err);
  CHECK(e != NULL);
  if (!e)
    return;
  char url[256];

  /* concurrency with callbacks; the governor delays one start by 300 ms */
  us_http_req *hs[6];
  double t0 = mono();
  for (int i = 0; i < 6; i++) {
    snprintf(url, sizeof url, "%s/delay?ms=300", s->url);
    struct us_http_request r = {.url = url, .max_retries = -1, .done = on_done, .ud = &t};
    hs[i] = us_http_submit(e, &r, &err);
    CHECK(hs[i] != NULL);
  }
  CHECK_EQ_LONG(t.done, 0); /* nothing runs before the engine is driven */
  CHECK_EQ_LONG(us_http_wait(e, hs, 6, 20000), 0);
  double took = mono() - t0;
  CHECK_EQ_LONG(t.done, 6);
  for (int i = 0; i < 6; i++) {
    CHECK_EQ_LONG(t.statuses[i], 200);
    CHECK(t.codes[i] == NULL);
  }
  CHECK(took >= 0.55); /* 3 per host: two waves at least */
  CHECK(t.governor_calls >= 7);      /* asked again after its delay */
  CHECK_EQ_LONG(t.observed, 6);
  const struct us_http_host_stats *st = us_http_host_stats(e, 0);
  CHECK(st != NULL);
  if (st) {
    CHECK_STR(st->host, s->url);
    CHECK_EQ_LONG(st->requests, 6);
    CHECK_EQ_LONG(st->governed, 1);
    CHECK_EQ_LONG(st->active, 0);
    CHECK_EQ_LONG(st->nstatus, 1);
    CHECK_EQ_LONG(st->by_status[0].status, 200);
    CHECK_EQ_LONG(st->by_status[0].count, 6);
  }
  const struct us_http_response *res = us_http_result(hs[0]);
  CHECK(res && res->status == 200 && strcmp(res->body, "slept") == 0 && res->body_len == 5);
  for (int i = 0; i < 6; i++)
    us_http_release(hs[i]);

  /* retry hook adds a header; Okta headers too */
  memset(&t, 0, sizeof t);
  t.governor_calls = 1;
  snprintf(url, sizeof url, "%s/ratelimit?key=c1&fails=1", s->url);
  struct us_http_request rr = {.url = url,
                               .max_retries = -1,
                               .retry_headers = US_HTTP_RETRY_HEADERS_OKTA,
                               .on_retry = on_retry,
                               .ud = &t};
  us_http_req *h = us_http_submit(e, &rr, &err);
  CHECK_EQ_LONG(us_http_wait(e, &h, 1, 20000), 0);
  res = us_http_result(h);
  CHECK(res && res->status == 200 && res->retries == 1 && !res->gave_up);
  CHECK(res && res->time >= 1.9);
  CHECK_EQ_LONG(t.retry_hooks, 1);
  CHECK_STR(us_http_header(res, "x-okta-request-id"), "req-c1-2");
  us_http_release(h);
  snprintf(url, sizeof url, "%s/__stats?key=c1", s->url);
  struct us_http_request sr = {.url = url, .max_retries = 0};
  h = us_http_submit(e, &sr, &err);
  us_http_wait(e, &h, 1, 20000);
  res = us_http_result(h);
  CHECK(res && strstr(res->body, "\"x-retry-note\": \"retry-1-after-429\"") != NULL);
  CHECK(res && strstr(res->body, "\"x-okta-retry-for\": \"req-c1-1\"") != NULL);
  us_http_release(h);

  /* a request's own governor replaces the engine's */
  memset(&t, 0, sizeof t);
  t.governor_calls = 1; /* the engine governor would not delay */
  struct tally own;
  memset(&own, 0, sizeof own);
  snprintf(url, sizeof url, "%s/status/204", s->url);
  struct us_http_request gr = {
      .url = url, .max_retries = -1, .governor = governor, .governor_ud = &own};
  h = us_http_submit(e, &gr, &err);
  CHECK_EQ_LONG(us_http_wait(e, &h, 1, 20000), 0);
  res = us_http_result(h);
  CHECK(res && res->status == 204 && res->time >= 0.29);
  CHECK_EQ_LONG(own.governor_calls, 2);
  CHECK_EQ_LONG(t.governor_calls, 1);
  us_http_release(h);

  /* misuse is refused at submit */
  struct us_http_request bad = {.url = url, .method = "GE T"};
  CHECK(us_http_submit(e, &bad, &err) == NULL && strstr(err, "method"));
  struct us_http_header crlf[] = {{"Authorization", "SSWS x\r\nEvil: 1"}};
  struct us_http_request bad2 = {.url = url, .headers = crlf, .nheaders = 1};
  CHECK(us_http_submit(e, &bad2, &err) == NULL && !strstr(err, "SSWS"));
  struct us_http_request bad3 = {.url = NULL};
  CHECK(us_http_submit(e, &bad3, &err) == NULL);

  /* a bad URL completes (in the loop) with EURL */
  memset(&t, 0, sizeof t);
  t.governor_calls = 1;
  struct us_http_request bu = {.url = "gopher://x/", .done = on_done_release, .ud = &t};
  CHECK(us_http_submit(e, &bu, &err) != NULL);
  CHECK_EQ_LONG(t.done, 0);
  us_http_run_once(e, 0);
  CHECK_EQ_LONG(t.done, 1);
  CHECK_STR(t.codes[0], US_HTTP_EURL);

  /* cancel: queued and running requests end with ECANCELED */
  memset(&t, 0, sizeof t);
  t.governor_calls = 1;
  snprintf(url, sizeof url, "%s/delay?ms=3000", s->url);
  us_http_req *c[4];
  for (int i = 0; i < 4; i++) { /* 3 run, 1 queued */
    struct us_http_request cr = {.url = url, .max_retries = -1, .done = on_done, .ud = &t};
    c[i] = us_http_submit(e, &cr, &err);
  }
  us_http_run_once(e, 100);
  st = us_http_host_stats(e, 0);
  CHECK(st && st->active == 3 && st->queued == 1);
  us_http_cancel(c[0]); /* running */
  us_http_cancel(c[3]); /* queued */
  us_http_cancel(c[3]); /* twice is harmless */
  CHECK_EQ_LONG(us_http_wait(e, (us_http_req *[]){c[0], c[3]}, 2, 5000), 0);
  CHECK_STR(us_http_result(c[0])->code, US_HTTP_ECANCELED);
  CHECK_STR(us_http_result(c[3])->code, US_HTTP_ECANCELED);
  CHECK_EQ_LONG(t.done, 2);
  us_http_release(c[1]); /* release cancels silently */
  CHECK_EQ_LONG(t.done, 2);
  /* freeing the engine detaches what is left */
  us_http_free(e);
  CHECK_EQ_LONG(t.done, 2);
  CHECK(us_http_done(c[2]));
  CHECK_STR(us_http_result(c[2])->code, US_HTTP_ECANCELED);
  us_http_release(c[0]);
  us_http_release(c[2]);
  us_http_release(c[3]);
}

/* Timeouts, size cap and refused connections through the C API. */
static void test_engine_errors(const struct server *s) {
  struct us_http_options o;
  us_http_options_init(&o);
  o.max_retries = 0;
  o.max_size = 500;
  us_http *e = us_http_new(&o, NULL);
  char u1[256], u2[256];
  snprintf(u1, sizeof u1, "%s/delay?ms=2000", s->url);
  snprintf(u2, sizeof u2, "%s/big?bytes=501", s->url);
  struct us_http_request r1 = {.url = u1, .timeout_ms = 200};
  struct us_http_request r2 = {.url = u2};
  struct us_http_request r3 = {.url = "http://127.0.0.1:1/", .max_retries = 2};
  us_http_req *h[3] = {us_http_submit(e, &r1, NULL), us_http_submit(e, &r2, NULL),
                       us_http_submit(e, &r3, NULL)};
  us_http_run(e);
  CHECK_STR(us_http_result(h[0])->code, US_HTTP_ETIMEDOUT);
  CHECK_STR(us_http_result(h[1])->code, US_HTTP_ETOOBIG);
  CHECK_STR(us_http_result(h[2])->code, US_HTTP_ECONNREFUSED);
  CHECK_EQ_LONG(us_http_result(h[2])->retries, 2);
  CHECK_EQ_LONG(us_http_result(h[2])->gave_up, 1);
  struct us_http_host_stats tot = us_http_totals(e);
  CHECK_EQ_LONG(tot.requests, 3);
  CHECK_EQ_LONG(tot.errors, 3);
  CHECK_EQ_LONG(tot.retries, 2);
  for (int i = 0; i < 3; i++)
    us_http_release(h[i]);
  us_http_free(e);
}

/* Attempts reuse the easy handles of finished ones (reset in between): no
** option of one request reaches the next (credentials, headers, method,
** body, redirects). SIGPIPE is ignored only while the engine is in curl:
** the process's own disposition is back when a callback runs and after. */
static int pipes_seen;

/* Whether hay holds needle (lowercase), ignoring the case of hay. */
static int has_ci(const char *hay, const char *needle) {
  size_t n = strlen(needle);
  for (; *hay; hay++)
    if (strncasecmp(hay, needle, n) == 0)
      return 1;
  return 0;
}
static void on_pipe(int sig) {
  (void)sig;
  pipes_seen++;
}

static void pipe_is_ours(us_http_req *h, const struct us_http_response *r, void *ud) {
  struct sigaction now;
  (void)h, (void)r;
  CHECK(sigaction(SIGPIPE, NULL, &now) == 0 && now.sa_handler == on_pipe);
  (*(int *)ud)++;
}

/* Runs one request to its end on engine e; returns its response (the
** handle is released by the caller with us_http_release). */
static us_http_req *run_one(us_http *e, const struct us_http_request *r, int *calls) {
  struct us_http_request c = *r;
  c.done = pipe_is_ours;
  c.ud = calls;
  const char *err = NULL;
  us_http_req *h = us_http_submit(e, &c, &err);
  CHECK(h != NULL);
  if (h)
    CHECK_EQ_LONG(us_http_wait(e, &h, 1, 20000), 0);
  return h;
}

static void test_reused_handles(const struct server *s) {
  struct sigaction mine, saved;
  memset(&mine, 0, sizeof mine);
  mine.sa_handler = on_pipe;
  sigemptyset(&mine.sa_mask);
  CHECK(sigaction(SIGPIPE, &mine, &saved) == 0);

  struct us_http_options o;
  us_http_options_init(&o);
  o.per_host = 1;
  o.max_retries = 0;
  us_http *e = us_http_new(&o, NULL);
  CHECK(e != NULL);
  if (!e)
    return;
  char echo[256], redirect[256];
  snprintf(echo, sizeof echo, "%s/echo", s->url);
  snprintf(redirect, sizeof redirect, "%s/redirect", s->url);
  int calls = 0;

  struct us_http_header hx[] = {{"X-One", "1"}, {"Content-Type", "text/plain"}};
  struct us_http_request r1 = {.method = "POST", .url = echo, .headers = hx, .nheaders = 2,
                               .body = "abc", .body_len = 3, .user = "u", .password = "pw-secret"};
  struct us_http_request r2 = {.url = redirect, .follow_redirects = 1};
  struct us_http_request r3 = {.url = echo};
  struct us_http_request r4 = {.url = redirect};
  us_http_req *h1 = run_one(e, &r1, &calls), *h2 = run_one(e, &r2, &calls);
  us_http_req *h3 = run_one(e, &r3, &calls), *h4 = run_one(e, &r4, &calls);
  const struct us_http_response *a = us_http_result(h1), *b = us_http_result(h2),
                                *c = us_http_result(h3), *d = us_http_result(h4);
  CHECK(a && a->status == 200 && strstr(a->body, "\"method\": \"POST\"") && strstr(a->body, "abc") &&
        has_ci(a->body, "\"authorization\"") && has_ci(a->body, "\"x-one\""));
  CHECK(b && b->status == 200 && strstr(b->body, "\"method\": \"GET\"")); /* followed */
  /* the third: a plain GET, nothing of the first */
  CHECK(c && c->status == 200 && strstr(c->body, "\"method\": \"GET\"") && strstr(c->body, "\"body\": \"\"") &&
        !has_ci(c->body, "authorization") && !has_ci(c->body, "x-one") &&
        !has_ci(c->body, "text/plain"));
  CHECK(d && d->status == 302); /* not followed: the second's option is gone */
  CHECK_EQ_LONG(calls, 4);
  const struct us_http_host_stats *st = us_http_host_stats(e, 0);
  CHECK(st && st->requests == 4 && st->errors == 0);
  us_http_release(h1);
  us_http_release(h2);
  us_http_release(h3);
  us_http_release(h4);
  us_http_free(e);

  struct sigaction now;
  CHECK(sigaction(SIGPIPE, NULL, &now) == 0 && now.sa_handler == on_pipe);
  CHECK_EQ_LONG(pipes_seen, 0);
  sigaction(SIGPIPE, &saved, NULL);
}

/* A request's host: a URL whose scheme and authority are those of an
** earlier one is that host without a parse (http.c host_of), yet every
** URL is still checked as curl's parser checks it, and a host spelled
** another way is still the same host. */
static void test_host_prefix(const struct server *s) {
  us_http *e = us_http_new(NULL, NULL);
  CHECK(e != NULL);
  if (!e)
    return;
  const char *err = NULL;
  char good[256], upper[256], space[256], ctrl[256];
  snprintf(good, sizeof good, "%s/echo?a=1", s->url);
  const char *auth = strstr(s->url, "://") + 3;
  snprintf(upper, sizeof upper, "HTTP://%s/echo", auth); /* the same host, another prefix */
  snprintf(space, sizeof space, "%s/echo?a=b c", s->url);
  snprintf(ctrl, sizeof ctrl, "%s/ech\x01o", s->url);
  const char *urls[] = {good, space, upper, ctrl, good, "http://[::1/x", "gopher://x/"};
  const long want[] = {200, 0, 200, 0, 200, 0, 0};
  for (size_t i = 0; i < sizeof urls / sizeof *urls; i++) {
    struct us_http_request r = {.url = urls[i], .max_retries = 0};
    us_http_req *h = us_http_submit(e, &r, &err);
    CHECK(h != NULL);
    if (!h)
      continue;
    CHECK_EQ_LONG(us_http_wait(e, &h, 1, 20000), 0);
    const struct us_http_response *res = us_http_result(h);
    CHECK(res != NULL);
    if (res && want[i]) {
      CHECK_EQ_LONG(res->status, want[i]);
    } else if (res) {
      CHECK_STR(res->code, US_HTTP_EURL);
    }
    us_http_release(h);
  }
  CHECK_EQ_LONG(us_http_host_count(e), 1); /* the rejected URLs have no host */
  const struct us_http_host_stats *st = us_http_host_stats(e, 0);
  CHECK(st && st->requests == 3);
  us_http_free(e);
}

int main(void) {
  test_retry_after();
  test_server_delay();
  test_backoff();
  test_headers_and_links();
  struct server s;
  if (server_start(&s) == 0) {
    test_engine(&s);
    test_engine_errors(&s);
    test_reused_handles(&s);
    test_host_prefix(&s);
    server_stop(&s);
  } else {
    failures++;
  }
  printf("%d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
