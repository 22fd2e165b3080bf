/*
** test_server.c: the `usersync serve` HTTP server (include/usersync/server.h)
** driven by libcurl and raw sockets on 127.0.0.1 (port 0): health, readiness
** and metrics endpoints, the Okta event hook (verification, Authorization,
** size caps before and while reading, malformed bodies, uuid de-duplication,
** FIFO order, queue_full), wait timeouts and wake-ups, signals, TLS with a
** self-signed certificate made by the `openssl` command, start errors.
** The delivery fixture is $DATA_DIR/fixtures/okta/ (tests/data)
** docs_event_hook_delivery_user_session_start.json ("body").
*/
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "usersync/jsonscan.h"
#include "usersync/metrics.h"
#include "usersync/server.h"

#include "check.h"

#define SECRET "Bearer hook-secret-1"
#define MAX_BODY 4096

/* ---------- a small client ---------- */

struct buf {
  char *p;
  size_t n;
};

static size_t on_data(char *d, size_t sz, size_t nm, void *ud) {
  struct buf *b = ud;
  char *p = realloc(b->p, b->n + sz * nm + 1);
  if (!p)
    return 0;
  memcpy(p + b->n, d, sz * nm);
  b->p = p;
  b->n += sz * nm;
  p[b->n] = 0;
  return sz * nm;
}

struct resp {
  long status;
  struct buf body, headers; /* headers: the raw header block */
  CURLcode rc;
};

static void resp_free(struct resp *r) {
  free(r->body.p);
  free(r->headers.p);
  memset(r, 0, sizeof *r);
}

/* Performs one request. hdrs: NULL-terminated header lines. body may be NULL
** (no body). cafile: verify TLS against it. */
static struct resp request(const char *method, const char *url, const char *const *hdrs,
                           const char *body, size_t body_len, const char *cafile) {
  struct resp r;
  memset(&r, 0, sizeof r);
  CURL *c = curl_easy_init();
  struct curl_slist *sl = NULL;
  for (size_t i = 0; hdrs && hdrs[i]; i++)
    sl = curl_slist_append(sl, hdrs[i]);
  sl = curl_slist_append(sl, "Expect:");
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  if (!strcmp(method, "HEAD"))
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  if (body) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, sl);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &r.headers);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L); /* what valgrind on a loaded machine may need */
  if (cafile) {
    curl_easy_setopt(c, CURLOPT_CAINFO, cafile);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
  }
  r.rc = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  curl_easy_cleanup(c);
  curl_slist_free_all(sl);
  return r;
}

/* Sends body chunked through a read callback. */
struct reader {
  const char *p;
  size_t left;
};
static size_t on_read(char *out, size_t sz, size_t nm, void *ud) {
  struct reader *rd = ud;
  size_t n = sz * nm < rd->left ? sz * nm : rd->left;
  if (n > 1000)
    n = 1000; /* many small chunks */
  memcpy(out, rd->p, n);
  rd->p += n;
  rd->left -= n;
  return n;
}

static struct resp post_chunked(const char *url, const char *auth, const char *body, size_t len) {
  struct resp r;
  memset(&r, 0, sizeof r);
  CURL *c = curl_easy_init();
  struct curl_slist *sl = curl_slist_append(NULL, auth);
  sl = curl_slist_append(sl, "Transfer-Encoding: chunked");
  sl = curl_slist_append(sl, "Content-Type: application/json");
  struct reader rd = {body, len};
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
  curl_easy_setopt(c, CURLOPT_READDATA, &rd);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, sl);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
  r.rc = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  curl_easy_cleanup(c);
  curl_slist_free_all(sl);
  return r;
}

static char base[64], hook[96];

static struct resp get(const char *path) {
  char url[160];
  snprintf(url, sizeof url, "%s%s", base, path);
  return request("GET", url, NULL, NULL, 0, NULL);
}

static struct resp post(const char *auth, const char *body) {
  const char *h[] = {auth, "Content-Type: application/json", NULL};
  return request("POST", hook, auth ? h : h + 1, body, strlen(body), NULL);
}

/* Status of a POST of body with the right secret. */
static long deliver(const char *body) {
  struct resp r = post("Authorization: " SECRET, body);
  long st = r.status;
  CHECK(r.body.n == 0); /* 200 with an empty body; error bodies are one line */
  if (st != 200 && r.body.p)
    fprintf(stderr, "  delivery answered %ld: %s", st, r.body.p);
  resp_free(&r);
  return st;
}

/* Sends raw bytes on a new connection and returns what comes back within
** timeout_ms (the server answering proves it did not wait for a body). */
static char *raw_exchange(int port, const char *bytes, int timeout_ms) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return NULL;
  }
  if (send(fd, bytes, strlen(bytes), MSG_NOSIGNAL) < 0) {
    close(fd);
    return NULL;
  }
  static char got[2048];
  size_t n = 0;
  struct pollfd p = {fd, POLLIN, 0};
  while (n < sizeof got - 1 && poll(&p, 1, timeout_ms) == 1) {
    ssize_t k = recv(fd, got + n, sizeof got - 1 - n, 0);
    if (k <= 0)
      break;
    n += (size_t)k;
  }
  got[n] = 0;
  close(fd);
  return got;
}

static us_server *start(const char *listen, size_t queue_max, char *err, const char **code) {
  struct us_server_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.listen = listen;
  cfg.hook_path = "/hooks/okta";
  cfg.hook_secret = SECRET;
  cfg.hook_secret_len = strlen(SECRET);
  cfg.hook_max_body = MAX_BODY;
  cfg.queue_max = queue_max;
  return us_server_start(&cfg, err, 512, code);
}

static us_server *start_main(size_t queue_max) {
  char err[512];
  const char *code = NULL;
  us_server *s = start("127.0.0.1:0", queue_max, err, &code);
  if (!s) {
    fprintf(stderr, "cannot start: %s (%s)\n", err, code);
    exit(2);
  }
  snprintf(base, sizeof base, "http://127.0.0.1:%d", us_server_port(s));
  snprintf(hook, sizeof hook, "%s/hooks/okta", base);
  return s;
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  struct buf b = {0};
  char chunk[8192];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
    on_data(chunk, 1, n, &b);
  fclose(f);
  if (len)
    *len = b.n;
  return b.p;
}

/* Number of events a wait returned (and the texts' total length). */
static size_t count_events(const struct us_server_event *e) {
  size_t n = 0;
  for (; e; e = e->next)
    n++;
  return n;
}

/* ---------- tests ---------- */

static void test_endpoints(us_server *s) {
  struct resp r = get("/healthz");
  CHECK_EQ_LONG(r.status, 200);
  CHECK_STR(r.body.p, "ok\n");
  resp_free(&r);

  r = get("/readyz");
  CHECK_EQ_LONG(r.status, 503);
  CHECK_STR(r.body.p, "not ready: starting\n");
  resp_free(&r);
  us_server_set_ready(s, 1, NULL);
  r = get("/readyz");
  CHECK_EQ_LONG(r.status, 200);
  CHECK_STR(r.body.p, "ready\n");
  resp_free(&r);
  us_server_set_ready(s, 0, "last run failed\nsecond line");
  r = get("/readyz");
  CHECK_EQ_LONG(r.status, 503);
  CHECK_STR(r.body.p, "not ready: last run failed second line\n");
  resp_free(&r);

  us_metrics_add("usersync_test_total", (const char *const[]){"k", "v", NULL}, 3);
  r = get("/metrics");
  CHECK_EQ_LONG(r.status, 200);
  CHECK(r.headers.p &&
        strstr(r.headers.p, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
  CHECK(r.body.p && strstr(r.body.p, "# TYPE usersync_test_total counter\n"));
  CHECK(r.body.p && strstr(r.body.p, "usersync_test_total{k=\"v\"} 3\n"));
  CHECK(r.body.p && strstr(r.body.p, "# HELP usersync_hook_deliveries_total "));
  resp_free(&r);

  r = get("/nope");
  CHECK_EQ_LONG(r.status, 404);
  resp_free(&r);
  char url[160];
  snprintf(url, sizeof url, "%s/healthz", base);
  r = request("POST", url, NULL, "x", 1, NULL);
  CHECK_EQ_LONG(r.status, 405);
  CHECK(r.headers.p && strstr(r.headers.p, "Allow: GET, HEAD\r\n"));
  resp_free(&r);
  r = request("HEAD", url, NULL, NULL, 0, NULL);
  CHECK_EQ_LONG(r.status, 200);
  resp_free(&r);
  r = request("DELETE", hook, NULL, NULL, 0, NULL);
  CHECK_EQ_LONG(r.status, 405);
  CHECK(r.headers.p && strstr(r.headers.p, "Allow: GET, POST\r\n"));
  resp_free(&r);
}

static void test_verification(us_server *s) {
  const char *ok[] = {"Authorization: " SECRET, "x-okta-verification-challenge: abc\"\\def", NULL};
  struct resp r = request("GET", hook, ok, NULL, 0, NULL);
  CHECK_EQ_LONG(r.status, 200);
  CHECK_STR(r.body.p, "{\"verification\":\"abc\\\"\\\\def\"}");
  CHECK(r.headers.p && strstr(r.headers.p, "Content-Type: application/json\r\n"));
  resp_free(&r);
  const char *noauth[] = {"x-okta-verification-challenge: abc", NULL};
  r = request("GET", hook, noauth, NULL, 0, NULL);
  CHECK_EQ_LONG(r.status, 401);
  CHECK(!r.body.p || !strstr(r.body.p, "abc"));
  resp_free(&r);
  const char *wrong[] = {"Authorization: " SECRET "x", "x-okta-verification-challenge: abc", NULL};
  r = request("GET", hook, wrong, NULL, 0, NULL);
  CHECK_EQ_LONG(r.status, 401);
  resp_free(&r);
  struct us_server_stats st;
  us_server_stats(s, &st);
  CHECK_EQ_LONG(st.verifications, 1);
  CHECK_EQ_LONG(st.unauthorized, 2);
}

static void test_refusals(us_server *s) {
  struct us_server_stats before, st;
  us_server_stats(s, &before);
  const char *body = "{\"data\":{\"events\":[{\"uuid\":\"r1\"}]}}";
  struct resp r = post(NULL, body);
  CHECK_EQ_LONG(r.status, 401);
  resp_free(&r);
  r = post("Authorization: hook-secret-1", body); /* a suffix of the secret */
  CHECK_EQ_LONG(r.status, 401);
  resp_free(&r);
  r = post("Authorization: " SECRET " ", body);
  CHECK_EQ_LONG(r.status, 401);
  resp_free(&r);

  /* Headers only, announcing 5 MB: answered at once, the body never sent. */
  int port = us_server_port(s);
  char *got = raw_exchange(port,
                           "POST /hooks/okta HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           "Content-Length: 5000000\r\n\r\n",
                           3000);
  CHECK(got && strncmp(got, "HTTP/1.1 401", 12) == 0);
  got = raw_exchange(port,
                     "POST /hooks/okta HTTP/1.1\r\nHost: x\r\nAuthorization: " SECRET "\r\n"
                     "Content-Length: 5000000\r\n\r\n",
                     3000);
  CHECK(got && strncmp(got, "HTTP/1.1 413", 12) == 0);
  /* one byte over the limit, declared */
  char *big = malloc(MAX_BODY + 2);
  memset(big, ' ', MAX_BODY + 1);
  big[MAX_BODY + 1] = 0;
  memcpy(big, "{\"data\":{\"events\":[]}}", 22);
  r = post("Authorization: " SECRET, big);
  CHECK_EQ_LONG(r.status, 413);
  resp_free(&r);
  /* the same, chunked: no Content-Length, refused while reading */
  r = post_chunked(hook, "Authorization: " SECRET, big, MAX_BODY + 1);
  CHECK_EQ_LONG(r.status, 413);
  CHECK(r.body.p && strstr(r.body.p, "larger than 4096 bytes"));
  resp_free(&r);
  /* exactly the limit, chunked: accepted */
  r = post_chunked(hook, "Authorization: " SECRET, big, MAX_BODY);
  CHECK_EQ_LONG(r.status, 200);
  resp_free(&r);
  free(big);

  r = post("Authorization: " SECRET, "{\"data\":{\"events\":[");
  CHECK_EQ_LONG(r.status, 400);
  CHECK_STR(r.body.p, "malformed: body is not JSON\n");
  resp_free(&r);
  r = post("Authorization: " SECRET, "{\"data\":{\"event\":[]}}");
  CHECK_EQ_LONG(r.status, 400);
  CHECK_STR(r.body.p, "malformed: no data.events array\n");
  resp_free(&r);
  r = post("Authorization: " SECRET, "[1,2]");
  CHECK_EQ_LONG(r.status, 400);
  resp_free(&r);

  us_server_stats(s, &st);
  CHECK_EQ_LONG(st.unauthorized - before.unauthorized, 4);
  CHECK_EQ_LONG(st.too_large - before.too_large, 3);
  CHECK_EQ_LONG(st.malformed - before.malformed, 3);
  CHECK_EQ_LONG(st.accepted - before.accepted, 1);
  CHECK_EQ_LONG(st.events - before.events, 0);
  CHECK_EQ_LONG(st.queued, 0);

  char *text = us_metrics_render(NULL);
  CHECK(text && strstr(text, "usersync_hook_deliveries_total{result=\"too_large\"} 3\n"));
  CHECK(text && strstr(text, "usersync_hook_deliveries_total{result=\"malformed\"} 3\n"));
  CHECK(text && strstr(text, "usersync_hook_deliveries_total{result=\"unauthorized\"} 4\n"));
  free(text);
}

static void test_fixture_delivery(us_server *s) {
  const char *dir = getenv("DATA_DIR");
  char path[512];
  snprintf(path, sizeof path, "%s/fixtures/okta/docs_event_hook_delivery_user_session_start.json",
           dir ? dir : "tests/data");
  size_t len;
  char *doc = read_file(path, &len);
  CHECK(doc != NULL);
  if (!doc)
    return;
  struct us_jval root, body, ev0;
  CHECK(us_json_parse(doc, len, &root));
  CHECK(us_json_get(&root, "body", &body) && body.type == US_J_OBJECT);
  CHECK(us_json_get(&body, "data.events[0]", &ev0));
  char *delivery = strndup(body.start, body.len);
  CHECK_EQ_LONG(deliver(delivery), 200);
  CHECK_EQ_LONG(deliver(delivery), 200); /* Okta's retry: a duplicate */
  int sig = 0;
  const struct us_server_event *ev = NULL;
  CHECK_EQ_LONG(us_server_wait(s, 2000, &sig, &ev), US_SERVER_EVENTS);
  CHECK_EQ_LONG(count_events(ev), 1);
  if (ev) {
    /* the fields serve acts on, each value byte for byte as received; the
    ** rest of the event (client, request, context) is not queued */
    struct us_jval q, a, b;
    CHECK(us_json_parse(ev->text, ev->len, &q));
    static const char *const keep[] = {"uuid", "eventType", "published", "outcome", "actor", "target"};
    for (size_t k = 0; k < sizeof keep / sizeof *keep; k++) {
      CHECK(us_json_get(&q, keep[k], &a) && us_json_get(&ev0, keep[k], &b));
      CHECK(a.len == b.len && memcmp(a.start, b.start, a.len) == 0);
    }
    CHECK(!us_json_get(&q, "client", &a));
    CHECK(!us_json_get(&q, "debugContext", &a));
    CHECK(ev->len < ev0.len / 2);
  }
  CHECK_EQ_LONG(us_server_wait(s, 50, &sig, &ev), US_SERVER_TIMEOUT);
  struct us_server_stats st;
  us_server_stats(s, &st);
  CHECK_EQ_LONG(st.duplicates, 1);
  free(delivery);
  free(doc);
}

static void test_dedupe_order(us_server *s) {
  CHECK_EQ_LONG(deliver("{\"data\":{\"events\":[{\"uuid\":\"a1\",\"published\":\"1\"},{\"uuid\":\"a2\",\"published\":\"2\"}]}}"),
                200);
  CHECK_EQ_LONG(deliver("{\"data\":{\"events\":[{\"uuid\":\"a2\",\"published\":\"22\"},{\"uuid\":\"a3\",\"published\":\"3\"},"
                        "{\"uuid\":\"a3\",\"published\":\"33\"}]}}"),
                200);
  /* items without a string uuid are skipped; null actor/target tolerated;
  ** "published" tells which of two deliveries of one uuid was kept */
  CHECK_EQ_LONG(deliver("{\"data\":{\"events\":[{\"uuid\":7},{\"published\":\"0\"},\"x\",{\"uuid\":\"a4\","
                        "\"actor\":null,\"target\":null,\"published\":\"4\"}]}}"),
                200);
  int sig = 0;
  const struct us_server_event *ev = NULL;
  CHECK_EQ_LONG(us_server_wait(s, 2000, &sig, &ev), US_SERVER_EVENTS);
  const char *want[] = {"{\"uuid\":\"a1\",\"published\":\"1\"}", "{\"uuid\":\"a2\",\"published\":\"2\"}",
                        "{\"uuid\":\"a3\",\"published\":\"3\"}",
                        "{\"uuid\":\"a4\",\"published\":\"4\",\"actor\":null,\"target\":null}"};
  size_t i = 0;
  for (; ev && i < 4; ev = ev->next, i++)
    CHECK_STR(ev->text, want[i]);
  CHECK_EQ_LONG(i, 4);
  CHECK(ev == NULL);
  struct us_server_stats st;
  us_server_stats(s, &st);
  CHECK_EQ_LONG(st.malformed_events, 3);
  CHECK_EQ_LONG(st.queued, 0);
}

static void *deliver_later(void *arg) {
  struct timespec ts = {0, 200 * 1000000L};
  nanosleep(&ts, NULL);
  long st = deliver("{\"data\":{\"events\":[{\"uuid\":\"late-1\"}]}}");
  return (void *)(intptr_t)st;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_wait(us_server *s) {
  int sig = 0;
  const struct us_server_event *ev = NULL;
  double t0 = now_s();
  CHECK_EQ_LONG(us_server_wait(s, 150, &sig, &ev), US_SERVER_TIMEOUT);
  double dt = now_s() - t0;
  CHECK(dt >= 0.14 && dt < 30.0); /* ends at its timeout (30 s: any machine, valgrind) */
  CHECK_EQ_LONG(us_server_wait(s, 0, &sig, &ev), US_SERVER_TIMEOUT);
  /* a blocked wait wakes when a delivery arrives */
  pthread_t th;
  pthread_create(&th, NULL, deliver_later, NULL);
  /* it wakes for the delivery (~0.2 s), long before its 60 s timeout: the
  ** 30 s bound tells the two apart on any machine, under valgrind too */
  t0 = now_s();
  CHECK_EQ_LONG(us_server_wait(s, 60000, &sig, &ev), US_SERVER_EVENTS);
  CHECK(now_s() - t0 < 30.0);
  CHECK(ev && strstr(ev->text, "late-1"));
  void *st;
  pthread_join(th, &st);
  CHECK_EQ_LONG((long)(intptr_t)st, 200);
}

static void test_signals(us_server *s) {
  int sig = 0;
  const struct us_server_event *ev = NULL;
  CHECK(!us_server_stopping(s));
  kill(getpid(), SIGHUP); /* process-directed: the signal thread takes it */
  CHECK_EQ_LONG(us_server_wait(s, 5000, &sig, &ev), US_SERVER_SIGNAL);
  CHECK_EQ_LONG(sig, SIGHUP);
  raise(SIGHUP); /* directed at this thread: wait takes it itself */
  CHECK_EQ_LONG(us_server_wait(s, 5000, &sig, &ev), US_SERVER_SIGNAL);
  CHECK_EQ_LONG(sig, SIGHUP);
  CHECK(!us_server_stopping(s));
  CHECK_EQ_LONG(us_server_wait(s, 50, &sig, &ev), US_SERVER_TIMEOUT);
  /* signals come before queued events, one per wait */
  CHECK_EQ_LONG(deliver("{\"data\":{\"events\":[{\"uuid\":\"sig-1\"}]}}"), 200);
  kill(getpid(), SIGTERM);
  /* delivery to the signal thread is asynchronous: let it arrive */
  for (int i = 0; i < 500 && !us_server_stopping(s); i++)
    nanosleep(&(struct timespec){0, 10 * 1000000L}, NULL);
  CHECK(us_server_stopping(s));
  CHECK_EQ_LONG(us_server_wait(s, 5000, &sig, &ev), US_SERVER_SIGNAL);
  CHECK_EQ_LONG(sig, SIGTERM);
  raise(SIGINT);
  CHECK_EQ_LONG(us_server_wait(s, 5000, &sig, &ev), US_SERVER_SIGNAL);
  CHECK_EQ_LONG(sig, SIGINT);
  CHECK_EQ_LONG(us_server_wait(s, 5000, &sig, &ev), US_SERVER_EVENTS);
  CHECK(ev && strstr(ev->text, "sig-1"));
}

static void test_queue_full(void) {
  us_server *s = start_main(3);
  CHECK_EQ_LONG(deliver("{\"data\":{\"events\":[{\"uuid\":\"q1\"},{\"uuid\":\"q2\"}]}}"), 200);
  struct resp r = post("Authorization: " SECRET,
                       "{\"data\":{\"events\":[{\"uuid\":\"q3\"},{\"uuid\":\"q4\"}]}}");
  CHECK_EQ_LONG(r.status, 503);
  resp_free(&r);
  /* only duplicates fit even in a full queue */
  CHECK_EQ_LONG(deliver("{\"data\":{\"events\":[{\"uuid\":\"q1\"}]}}"), 200);
  struct us_server_stats st;
  us_server_stats(s, &st);
  CHECK_EQ_LONG(st.queue_full, 1);
  CHECK_EQ_LONG(st.queued, 2);
  int sig = 0;
  const struct us_server_event *ev = NULL;
  CHECK_EQ_LONG(us_server_wait(s, 1000, &sig, &ev), US_SERVER_EVENTS);
  CHECK_EQ_LONG(count_events(ev), 2);
  /* the refused delivery was not remembered: its retry is accepted */
  CHECK_EQ_LONG(deliver("{\"data\":{\"events\":[{\"uuid\":\"q3\"},{\"uuid\":\"q4\"}]}}"), 200);
  CHECK_EQ_LONG(us_server_wait(s, 1000, &sig, &ev), US_SERVER_EVENTS);
  CHECK_EQ_LONG(count_events(ev), 2);
  char *text = us_metrics_render(NULL);
  CHECK(text && strstr(text, "usersync_hook_deliveries_total{result=\"queue_full\"} 1\n"));
  free(text);
  us_server_close(s);
}

static void test_start_errors(void) {
  char err[512];
  const char *code = NULL;
  us_server *s = start_main(0);
  /* one server per process */
  CHECK(start("127.0.0.1:0", 0, err, &code) == NULL);
  CHECK_STR(code, "EBUSY");
  us_server_close(s);

  /* a taken port */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 4) == 0);
  socklen_t al = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &al);
  char listen_at[64];
  snprintf(listen_at, sizeof listen_at, "127.0.0.1:%d", ntohs(a.sin_port));
  CHECK(start(listen_at, 0, err, &code) == NULL);
  CHECK_STR(code, "EADDRINUSE");
  CHECK(strstr(err, listen_at) != NULL);
  close(fd);

  const char *bad[] = {"127.0.0.1", "127.0.0.1:99999", "127.0.0.1:x", ":80", "[::1:80", "", "::1:80"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    code = NULL;
    CHECK(start(bad[i], 0, err, &code) == NULL);
    CHECK_STR(code, "EINVAL");
  }
  struct us_server_config cfg = {0};
  cfg.listen = "127.0.0.1:0";
  cfg.tls_cert = "x";
  cfg.tls_cert_len = 1;
  CHECK(us_server_start(&cfg, err, sizeof err, &code) == NULL);
  CHECK_STR(code, "EINVAL");
  cfg.tls_key = "-----BEGIN PRIVATE KEY-----\nsecretkeymaterial\n-----END PRIVATE KEY-----\n";
  cfg.tls_key_len = strlen(cfg.tls_key);
  CHECK(us_server_start(&cfg, err, sizeof err, &code) == NULL);
  CHECK_STR(code, "ETLS");
  CHECK(!strstr(err, "secretkeymaterial"));
  memset(&cfg, 0, sizeof cfg);
  cfg.listen = "127.0.0.1:0";
  cfg.hook_path = "/metrics";
  cfg.hook_secret = "s";
  cfg.hook_secret_len = 1;
  CHECK(us_server_start(&cfg, err, sizeof err, &code) == NULL);
  CHECK_STR(code, "EINVAL");
  cfg.hook_path = "/hook";
  cfg.hook_secret_len = 0;
  CHECK(us_server_start(&cfg, err, sizeof err, &code) == NULL);
  CHECK_STR(code, "EINVAL");

  /* every failure left the signal mask alone */
  sigset_t now;
  pthread_sigmask(SIG_BLOCK, NULL, &now);
  CHECK(!sigismember(&now, SIGHUP) && !sigismember(&now, SIGTERM));
}

static void test_ipv6(void) {
  char err[512];
  const char *code = NULL;
  us_server *s = start("[::1]:0", 0, err, &code);
  if (!s) {
    printf("# skip IPv6: %s (%s)\n", err, code);
    return;
  }
  char url[96];
  snprintf(url, sizeof url, "http://[::1]:%d/healthz", us_server_port(s));
  struct resp r = request("GET", url, NULL, NULL, 0, NULL);
  CHECK_EQ_LONG(r.status, 200);
  resp_free(&r);
  us_server_close(s);
}

static void test_tls(void) {
  char dir[] = "/tmp/us-server-tls-XXXXXX";
  if (!mkdtemp(dir)) {
    CHECK(!"mkdtemp");
    return;
  }
  char cmd[1024], certp[128], keyp[128];
  snprintf(certp, sizeof certp, "%s/cert.pem", dir);
  snprintf(keyp, sizeof keyp, "%s/key.pem", dir);
  snprintf(cmd, sizeof cmd,
           "openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s -days 2 "
           "-subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1",
           keyp, certp);
  CHECK(system(cmd) == 0);
  size_t cl = 0, kl = 0;
  char *cert = read_file(certp, &cl), *key = read_file(keyp, &kl);
  CHECK(cert && key);
  if (!cert || !key) {
    free(cert);
    free(key);
    return;
  }
  struct us_server_config cfg = {0};
  cfg.listen = "127.0.0.1:0";
  cfg.tls_cert = cert;
  cfg.tls_cert_len = cl;
  cfg.tls_key = key;
  cfg.tls_key_len = kl;
  cfg.hook_path = "/hooks/okta";
  cfg.hook_secret = SECRET;
  cfg.hook_secret_len = strlen(SECRET);
  /* a TLS handshake under valgrind on a loaded machine can outlast the
  ** default 5 s request deadline, which is not what this test is about */
  cfg.timeout_s = 60;
  char err[512];
  const char *code = NULL;
  us_server *s = us_server_start(&cfg, err, sizeof err, &code);
  CHECK(s != NULL);
  if (s) {
    char url[96];
    snprintf(url, sizeof url, "https://127.0.0.1:%d/healthz", us_server_port(s));
    struct resp r = request("GET", url, NULL, NULL, 0, certp); /* verified against the cert */
    CHECK_EQ_LONG(r.rc, CURLE_OK);
    CHECK_EQ_LONG(r.status, 200);
    CHECK_STR(r.body.p, "ok\n");
    resp_free(&r);
    snprintf(url, sizeof url, "https://127.0.0.1:%d/hooks/okta", us_server_port(s));
    const char *h[] = {"Authorization: " SECRET, NULL};
    const char *d = "{\"data\":{\"events\":[{\"uuid\":\"tls-1\"}]}}";
    r = request("POST", url, h, d, strlen(d), certp);
    CHECK_EQ_LONG(r.status, 200);
    resp_free(&r);
    int sig;
    const struct us_server_event *ev;
    CHECK_EQ_LONG(us_server_wait(s, 2000, &sig, &ev), US_SERVER_EVENTS);
    CHECK(ev && strstr(ev->text, "tls-1"));
    snprintf(url, sizeof url, "http://127.0.0.1:%d/healthz", us_server_port(s));
    r = request("GET", url, NULL, NULL, 0, NULL); /* plain HTTP is not served */
    CHECK(r.status != 200);
    resp_free(&r);
    us_server_close(s);
  }
  /* a key that does not belong to the certificate */
  snprintf(cmd, sizeof cmd, "openssl genrsa -out %s 2048 >/dev/null 2>&1", keyp);
  CHECK(system(cmd) == 0);
  free(key);
  key = read_file(keyp, &kl);
  cfg.tls_key = key;
  cfg.tls_key_len = kl;
  CHECK(us_server_start(&cfg, err, sizeof err, &code) == NULL);
  CHECK_STR(code, "ETLS");
  free(cert);
  free(key);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
}

/* ---------- half-open connections ---------- */

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A connection to 127.0.0.1:port from source address `from`, with the
** bytes sent and nothing more. -1 when the connect itself failed. */
static int half_open(const char *from, int port, const char *bytes) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in src = {0}, dst = {0};
  src.sin_family = dst.sin_family = AF_INET;
  inet_pton(AF_INET, from, &src.sin_addr);
  dst.sin_port = htons((uint16_t)port);
  dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
      connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  send(fd, bytes, strlen(bytes), MSG_NOSIGNAL);
  return fd;
}

/* 1 once the server closed fd (EOF or reset); never blocks. */
static int closed_by_server(int fd) {
  char b[256];
  struct pollfd p = {fd, POLLIN, 0};
  if (poll(&p, 1, 0) != 1)
    return 0;
  ssize_t k = recv(fd, b, sizeof b, MSG_DONTWAIT);
  return k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

/* 250 connections that send part of a request line or of the headers and
** then nothing (no credentials): the health listener still answers, a
** delivery from another address is accepted and queued, and the server
** closes every one of them (over the per-address cap at once, the others
** after the silence timeout) well before 60 s. */
static void test_half_open(void) {
  enum { N = 250 };
  struct us_server_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.listen = "127.0.0.1:0";
  cfg.health_listen = "127.0.0.1:0";
  cfg.hook_path = "/hooks/okta";
  cfg.hook_secret = SECRET;
  cfg.hook_secret_len = strlen(SECRET);
  char err[512];
  const char *code = NULL;
  us_server *s = us_server_start(&cfg, err, sizeof err, &code);
  CHECK(s != NULL);
  if (!s)
    return;
  int port = us_server_port(s), hport = us_server_health_port(s);
  CHECK(hport > 0 && hport != port);
  static const char *const partial[] = {"POST /hooks/okta HTT", "GET /heal",
                                        "POST /hooks/okta HTTP/1.1\r\nHost: x\r\nContent-Le"};
  int fds[N];
  double t0 = mono_s();
  int connected = 0;
  for (int i = 0; i < N; i++) {
    fds[i] = half_open("127.0.0.1", port, partial[i % 3]);
    connected += fds[i] >= 0;
  }
  CHECK_EQ_LONG(connected, N);

  /* health and metrics on their own listener, from the same address */
  char url[160];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/healthz", hport);
  struct resp r = request("GET", url, NULL, NULL, 0, NULL);
  CHECK_EQ_LONG(r.status, 200);
  CHECK_STR(r.body.p, "ok\n");
  resp_free(&r);
  snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", hport);
  r = request("GET", url, NULL, NULL, 0, NULL);
  CHECK_EQ_LONG(r.status, 200);
  resp_free(&r);
  snprintf(url, sizeof url, "http://127.0.0.1:%d/hooks/okta", hport);
  r = request("POST", url, (const char *const[]){"Authorization: " SECRET, NULL}, "{}", 2, NULL);
  CHECK_EQ_LONG(r.status, 404); /* no hook on the health listener */
  resp_free(&r);

  /* a delivery (and a probe) from other addresses on the main listener */
  const char *body = "{\"data\":{\"events\":[{\"uuid\":\"half-open-1\",\"eventType\":\"user.session.start\"}]}}";
  CURL *c = curl_easy_init();
  struct curl_slist *sl = curl_slist_append(NULL, "Authorization: " SECRET);
  sl = curl_slist_append(sl, "Content-Type: application/json");
  struct buf rb = {0};
  snprintf(url, sizeof url, "http://127.0.0.1:%d/hooks/okta", port);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_INTERFACE, "host!127.0.0.2");
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, sl);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &rb);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
  long status = 0;
  CHECK(curl_easy_perform(c) == CURLE_OK);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  CHECK_EQ_LONG(status, 200);
  snprintf(url, sizeof url, "http://127.0.0.1:%d/healthz", port);
  curl_easy_reset(c);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_INTERFACE, "host!127.0.0.3");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &rb);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
  CHECK(curl_easy_perform(c) == CURLE_OK);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  CHECK_EQ_LONG(status, 200);
  curl_easy_cleanup(c);
  curl_slist_free_all(sl);
  free(rb.p);
  int signo = 0;
  const struct us_server_event *ev = NULL;
  CHECK_EQ_LONG(us_server_wait(s, 5000, &signo, &ev), US_SERVER_EVENTS);
  CHECK(ev && strstr(ev->text, "half-open-1"));

  /* every half-open connection is closed by the server; at most the
  ** per-address cap of them waited for the silence timeout */
  int open = connected, at_once = 0;
  double last = 0;
  while (open > 0 && mono_s() - t0 < 60) {
    for (int i = 0; i < N; i++) {
      if (fds[i] >= 0 && closed_by_server(fds[i])) {
        double at = mono_s() - t0;
        if (at < US_SERVER_TIMEOUT_S - 1)
          at_once++;
        last = at;
        close(fds[i]);
        fds[i] = -1;
        open--;
      }
    }
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  CHECK_EQ_LONG(open, 0);
  fprintf(stderr, "half-open: %d connections, %d closed at once (over the per-address cap of %d), "
                  "the last one closed after %.1f s (timeout %d s)\n",
          connected, at_once, US_SERVER_MAX_PER_IP, last, US_SERVER_TIMEOUT_S);
  for (int i = 0; i < N; i++)
    if (fds[i] >= 0)
      close(fds[i]);
  us_server_close(s);
}

/* Sends `head` and then one byte of `drip` every 0.5 s (never silent for
** long enough for the idle timeout) until the server closes the connection
** or 30 s pass. Returns the seconds until the close, or -1. */
static double trickle(int port, const char *from, const char *head, const char *drip) {
  int fd = half_open(from, port, head);
  if (fd < 0)
    return -1;
  double t0 = mono_s();
  size_t i = 0, n = strlen(drip);
  while (mono_s() - t0 < 30) {
    if (closed_by_server(fd) || send(fd, drip + i % n, 1, MSG_NOSIGNAL) < 0) {
      close(fd);
      return mono_s() - t0;
    }
    i++;
    struct timespec ts = {0, 500 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  close(fd);
  return -1;
}

/* Headers or a body sent a byte at a time stay under the idle timeout;
** the request deadline closes them anyway, and a normal request on the
** same server still works. */
static void test_trickle(void) {
  struct us_server_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.listen = "127.0.0.1:0";
  cfg.hook_path = "/hooks/okta";
  cfg.hook_secret = SECRET;
  cfg.hook_secret_len = strlen(SECRET);
  cfg.timeout_s = 2;
  char err[512];
  const char *code = NULL;
  us_server *s = us_server_start(&cfg, err, sizeof err, &code);
  CHECK(s != NULL);
  if (!s)
    return;
  int port = us_server_port(s);
  double headers = trickle(port, "127.0.0.4", "GET /healthz HTTP/1.1\r\n", "X-Slow: aaaaaaaaaaaaaaaa\r\n");
  double body = trickle(port, "127.0.0.5",
                        "POST /hooks/okta HTTP/1.1\r\nHost: x\r\nAuthorization: " SECRET
                        "\r\nContent-Length: 100000\r\n\r\n",
                        "{\"data\":{\"events\":[]}}      ");
  CHECK(headers > 0);
  CHECK(body > 0);
  fprintf(stderr, "trickle: headers a byte per 0.5 s closed after %.1f s, a body after %.1f s "
                  "(request timeout 2 s)\n", headers, body);
  snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
  struct resp r = get("/healthz");
  CHECK_EQ_LONG(r.status, 200);
  resp_free(&r);
  us_server_close(s);
}

int main(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  us_metrics_reset();
  us_server *s = start_main(0);
  test_endpoints(s);
  test_verification(s);
  test_refusals(s);
  test_fixture_delivery(s);
  test_dedupe_order(s);
  test_wait(s);
  test_signals(s);
  us_server_close(s);
  us_server_close(NULL);
  sigset_t now;
  pthread_sigmask(SIG_BLOCK, NULL, &now);
  CHECK(!sigismember(&now, SIGHUP)); /* close restored the mask */
  test_queue_full();
  test_start_errors();
  test_ipv6();
  test_tls();
  test_half_open();
  test_trickle();
  us_metrics_reset();
  curl_global_cleanup();
  printf("%d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
