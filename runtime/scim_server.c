/*
** scim_server.c: the SCIM endpoints' HTTP side (include/usersync/scim_server.h).
**
** Provides: us_scim_* . Uses: libmicrohttpd (suspend/resume), OpenSSL
** (SHA-256, RAND_bytes), crypto.c (us_sha256_eq), pthreads, metrics.c.
**
** Locking: sc->mu guards the queue, the live list, the stats and the
** stopping/broken flags; sc->cv wakes the worker. A request's fields are
** written by its request thread until it is queued, then only by the worker
** until it is answered, then read by the request thread that sends the
** answer: each hand-over is under sc->mu or through libmicrohttpd's
** suspend/resume, never concurrent.
*/
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>
#include <openssl/sha.h>

#include "usersync/crypto.h"
#include "usersync/metrics.h"
#include "usersync/scim_server.h"
#include "usersync/timeutil.h"

struct src {
  char name[US_SCIM_NAME_MAX + 1];
  unsigned char sha[SHA256_DIGEST_LENGTH];
};

struct us_scim {
  struct src *src;
  size_t nsrc;
  unsigned char dummy[SHA256_DIGEST_LENGTH];
  int tls;
  void (*poke)(void *);
  void *poke_arg;

  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct us_queue q; /* requests waiting for the worker */
  size_t qlen;
  struct us_queue live; /* every request not yet completed */
  int stopping, broken;
  struct us_scim_stats st;
  pthread_t worker;
  int worker_started;
};

static const char ERROR_SCHEMA[] = "urn:ietf:params:scim:api:messages:2.0:Error";
static const char CTYPE[] = "application/scim+json";

static void count(const char *result) {
  const char *kv[] = {"result", result, NULL};
  us_metrics_add("usersync_scim_requests_total", kv, 1);
}

us_scim *us_scim_new(const struct us_scim_source_config *src, size_t n, int tls,
                     void (*poke)(void *), void *poke_arg) {
  us_scim *sc = calloc(1, sizeof *sc);
  if (!sc)
    return NULL;
  sc->src = calloc(n ? n : 1, sizeof *sc->src);
  if (!sc->src) {
    free(sc);
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    snprintf(sc->src[i].name, sizeof sc->src[i].name, "%s", src[i].name);
    SHA256((const unsigned char *)src[i].token, src[i].token_len, sc->src[i].sha);
  }
  sc->nsrc = n;
  if (RAND_bytes(sc->dummy, sizeof sc->dummy) != 1)
    memset(sc->dummy, 0xA5, sizeof sc->dummy);
  sc->tls = tls;
  sc->poke = poke;
  sc->poke_arg = poke_arg;
  pthread_mutex_init(&sc->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&sc->cv, &ca);
  pthread_condattr_destroy(&ca);
  us_metrics_describe("usersync_scim_requests_total", US_METRIC_COUNTER,
                      "SCIM requests by result (answered, unauthorized, too_large, busy)");
  return sc;
}

int us_scim_is_path(const char *url) {
  return url && strncmp(url, US_SCIM_PREFIX, strlen(US_SCIM_PREFIX)) == 0;
}

/* ---------- answers sent by the request threads ---------- */

static enum MHD_Result send_answer(struct MHD_Connection *c, unsigned status, const char *body,
                                   size_t len, const char *etag, const char *location,
                                   int unauthorized) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (!r)
    return MHD_NO;
  if (len)
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, CTYPE);
  if (etag)
    MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, etag);
  if (location)
    MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, location);
  if (unauthorized)
    MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"usersync\"");
  if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
    MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "5");
  enum MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *detail) {
  char body[512];
  int n = snprintf(body, sizeof body, "{\"schemas\":[\"%s\"],\"status\":\"%u\",\"detail\":\"%s\"}",
                   ERROR_SCHEMA, status, detail);
  return send_answer(c, status, body, (size_t)n, NULL, NULL, status == MHD_HTTP_UNAUTHORIZED);
}

/* ---------- authentication ---------- */

/* 1 when the request carries "Authorization: Bearer <token of source>".
** Same work whatever fails: every source's name is compared, a digest is
** always computed and compared (against a random one for an unknown source). */
static int authorized(us_scim *sc, struct MHD_Connection *c, const char *name) {
  const unsigned char *want = sc->dummy;
  int known = 0;
  for (size_t i = 0; i < sc->nsrc; i++) {
    int eq = strcmp(sc->src[i].name, name) == 0;
    if (eq) {
      want = sc->src[i].sha;
      known = 1;
    }
  }
  const char *v = NULL;
  size_t vlen = 0;
  int ok = 1;
  if (MHD_lookup_connection_value_n(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION,
                                    strlen(MHD_HTTP_HEADER_AUTHORIZATION), &v, &vlen) != MHD_YES ||
      !v)
    v = "", vlen = 0, ok = 0;
  if (vlen < 7 || strncasecmp(v, "Bearer ", 7) != 0)
    ok = 0;
  const char *tok = vlen >= 7 ? v + 7 : "";
  size_t tlen = vlen >= 7 ? vlen - 7 : 0;
  while (tlen && *tok == ' ')
    tok++, tlen--;
  int same = us_sha256_eq(tok, tlen, want);
  return ok & known & same;
}

/* ---------- requests ---------- */

static void request_free(struct us_scim_request *r) {
  if (!r)
    return;
  for (size_t i = 0; i < r->nargs; i++) {
    free(r->args[i].key);
    free(r->args[i].value);
  }
  free(r->args);
  free(r->method);
  free(r->path);
  free(r->if_match);
  free(r->if_none_match);
  free(r->host);
  us_sb_free(&r->body);
  free(r->resp);
  free(r->etag);
  free(r->location);
  free(r);
}

static char *dup_header(struct MHD_Connection *c, const char *name) {
  const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
  return v ? strdup(v) : NULL;
}

static enum MHD_Result add_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *value) {
  struct us_scim_request *r = cls;
  (void)kind;
  if (r->nargs >= 32 || !key)
    return MHD_YES;
  struct us_scim_arg *a = realloc(r->args, (r->nargs + 1) * sizeof *a);
  if (!a)
    return MHD_NO;
  r->args = a;
  a[r->nargs].key = strdup(key);
  a[r->nargs].value = strdup(value ? value : "");
  if (!a[r->nargs].key || !a[r->nargs].value) {
    free(a[r->nargs].key);
    free(a[r->nargs].value);
    return MHD_NO;
  }
  r->nargs++;
  return MHD_YES;
}

static int too_long(struct MHD_Connection *c) {
  const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
  if (!cl)
    return 0;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(cl, &end, 10);
  return errno || end == cl || v > US_SCIM_MAX_BODY;
}

static void stat_add(us_scim *sc, uint64_t *field) {
  pthread_mutex_lock(&sc->mu);
  (*field)++;
  pthread_mutex_unlock(&sc->mu);
}

/* First call: authenticate, check the size, set up the request. */
static enum MHD_Result start(us_scim *sc, struct MHD_Connection *c, const char *url,
                             const char *method, void **con_cls) {
  const char *name = url + strlen(US_SCIM_PREFIX);
  size_t nlen = strcspn(name, "/");
  char src[US_SCIM_NAME_MAX + 1];
  if (nlen > US_SCIM_NAME_MAX)
    nlen = US_SCIM_NAME_MAX;
  memcpy(src, name, nlen);
  src[nlen] = 0;
  stat_add(sc, &sc->st.requests);
  if (!authorized(sc, c, src)) {
    stat_add(sc, &sc->st.unauthorized);
    count("unauthorized");
    return send_error(c, MHD_HTTP_UNAUTHORIZED, "a valid Bearer token for this endpoint is required");
  }
  if (too_long(c)) {
    stat_add(sc, &sc->st.too_large);
    count("too_large");
    return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "the request body is too large");
  }
  struct us_scim_request *r = calloc(1, sizeof *r);
  if (!r)
    return MHD_NO;
  memcpy(r->source, src, nlen + 1);
  r->conn = c;
  r->method = strdup(method);
  r->path = strdup(name + nlen);
  r->if_match = dup_header(c, MHD_HTTP_HEADER_IF_MATCH);
  r->if_none_match = dup_header(c, MHD_HTTP_HEADER_IF_NONE_MATCH);
  r->host = dup_header(c, MHD_HTTP_HEADER_HOST);
  if (!r->method || !r->path ||
      MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, add_arg, r) < 0) {
    request_free(r);
    return MHD_NO;
  }
  pthread_mutex_lock(&sc->mu);
  us_queue_push_front(&sc->live, &r->live);
  pthread_mutex_unlock(&sc->mu);
  *con_cls = r;
  return MHD_YES;
}

/* Body bytes. */
static enum MHD_Result take_body(struct us_scim_request *r, const char *data, size_t *size) {
  size_t n = *size;
  *size = 0;
  if (r->too_large) {
    r->discarded += n;
    return r->discarded <= 4 * US_SCIM_MAX_BODY ? MHD_YES : MHD_NO;
  }
  if (r->body.n + n > US_SCIM_MAX_BODY) {
    r->too_large = 1;
    us_sb_free(&r->body);
    return MHD_YES;
  }
  us_sb_put(&r->body, data, n);
  return r->body.bad ? MHD_NO : MHD_YES;
}

/* The whole request is here: queue it for the worker and suspend. */
static enum MHD_Result queue(us_scim *sc, struct MHD_Connection *c, struct us_scim_request *r) {
  if (r->too_large) {
    stat_add(sc, &sc->st.too_large);
    count("too_large");
    r->state = 2;
    return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "the request body is too large");
  }
  pthread_mutex_lock(&sc->mu);
  if (sc->stopping || sc->broken || sc->qlen >= US_SCIM_QUEUE_MAX || !sc->worker_started) {
    int stopping = sc->stopping;
    sc->st.busy++;
    pthread_mutex_unlock(&sc->mu);
    count("busy");
    r->state = 2;
    return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                      stopping ? "usersync is stopping" : "too many requests waiting; try again");
  }
  /* Suspended before the worker can see it: its answer's resume always
  ** finds a suspended connection. */
  MHD_suspend_connection(c);
  r->state = 1;
  us_queue_push(&sc->q, &r->ql);
  sc->qlen++;
  pthread_cond_signal(&sc->cv);
  pthread_mutex_unlock(&sc->mu);
  return MHD_YES;
}

enum MHD_Result us_scim_request(us_scim *sc, struct MHD_Connection *c, const char *url,
                                const char *method, const char *data, size_t *size,
                                void **con_cls) {
  struct us_scim_request *r = *con_cls;
  if (!r)
    return start(sc, c, url, method, con_cls);
  if (*size)
    return take_body(r, data, size);
  if (r->state == 0)
    return queue(sc, c, r);
  if (r->state == 2 && r->resp) {
    /* resumed: the worker's answer */
    enum MHD_Result ret =
        send_answer(c, r->status, r->resp, r->resp_len, r->etag, r->location, 0);
    free(r->resp);
    r->resp = NULL;
    return ret;
  }
  return MHD_YES;
}

int us_scim_release(us_scim *sc, void *p) {
  if (!sc || !p)
    return 0;
  pthread_mutex_lock(&sc->mu);
  struct us_scim_request *r = NULL;
  for (struct us_qlink *l = sc->live.head; l && !r; l = l->next)
    if (US_QUEUE_ENTRY(l, struct us_scim_request, live) == p)
      r = p;
  if (r)
    us_queue_remove(&sc->live, &r->live);
  pthread_mutex_unlock(&sc->mu);
  if (!r)
    return 0;
  request_free(r);
  return 1;
}

/* ---------- the worker's side ---------- */

int us_scim_start_worker(us_scim *sc, void *(*fn)(void *), void *arg) {
  pthread_mutex_lock(&sc->mu);
  if (sc->worker_started) {
    pthread_mutex_unlock(&sc->mu);
    return -1;
  }
  int rc = pthread_create(&sc->worker, NULL, fn, arg);
  if (rc == 0)
    sc->worker_started = 1;
  pthread_mutex_unlock(&sc->mu);
  return rc;
}

struct us_scim_request *us_scim_take(us_scim *sc, long timeout_ms, int *stopping) {
  struct timespec deadline;
  if (timeout_ms > 0)
    us_time_monotonic_after(&deadline, timeout_ms);
  struct us_scim_request *r = NULL;
  pthread_mutex_lock(&sc->mu);
  for (;;) {
    if (sc->stopping)
      break;
    if (sc->q.head) {
      r = US_QUEUE_ENTRY(sc->q.head, struct us_scim_request, ql);
      us_queue_remove(&sc->q, &r->ql);
      sc->qlen--;
      break;
    }
    if (timeout_ms == 0)
      break;
    if (timeout_ms < 0)
      pthread_cond_wait(&sc->cv, &sc->mu);
    else if (pthread_cond_timedwait(&sc->cv, &sc->mu, &deadline) == ETIMEDOUT)
      timeout_ms = 0;
  }
  *stopping = sc->stopping;
  pthread_mutex_unlock(&sc->mu);
  return r;
}

static char *dup_opt(const char *s) { return s ? strdup(s) : NULL; }

void us_scim_answer(us_scim *sc, struct us_scim_request *r, unsigned status, const char *body,
                    size_t len, const char *etag, const char *location) {
  r->resp = malloc(len + 1);
  if (r->resp) {
    memcpy(r->resp, body, len);
    r->resp[len] = 0;
    r->resp_len = len;
    r->status = status;
    r->etag = dup_opt(etag);
    r->location = dup_opt(location);
  } else {
    static const char oom[] = "{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:Error\"],"
                              "\"status\":\"503\",\"detail\":\"out of memory\"}";
    r->resp = strdup(oom);
    r->resp_len = r->resp ? strlen(oom) : 0;
    r->status = MHD_HTTP_SERVICE_UNAVAILABLE;
  }
  pthread_mutex_lock(&sc->mu);
  r->state = 2;
  sc->st.answered++;
  pthread_mutex_unlock(&sc->mu);
  count("answered");
  MHD_resume_connection(r->conn); /* r belongs to the request thread from here on */
}

void us_scim_poke(us_scim *sc) {
  pthread_mutex_lock(&sc->mu);
  sc->st.writes++;
  pthread_mutex_unlock(&sc->mu);
  if (sc->poke)
    sc->poke(sc->poke_arg);
}

/* Answers every queued request with 503 (mutex held by the caller). */
static void refuse_queued(us_scim *sc, const char *detail) {
  char body[256];
  int n = snprintf(body, sizeof body, "{\"schemas\":[\"%s\"],\"status\":\"503\",\"detail\":\"%s\"}",
                   ERROR_SCHEMA, detail);
  while (sc->q.head) {
    struct us_scim_request *r = US_QUEUE_ENTRY(sc->q.head, struct us_scim_request, ql);
    us_queue_remove(&sc->q, &r->ql);
    sc->qlen--;
    r->resp = malloc((size_t)n + 1);
    if (r->resp) {
      memcpy(r->resp, body, (size_t)n + 1);
      r->resp_len = (size_t)n;
    }
    r->status = MHD_HTTP_SERVICE_UNAVAILABLE;
    r->state = 2;
    MHD_resume_connection(r->conn);
  }
}

void us_scim_broken(us_scim *sc) {
  pthread_mutex_lock(&sc->mu);
  sc->broken = 1;
  refuse_queued(sc, "the SCIM service failed; see the usersync log");
  pthread_mutex_unlock(&sc->mu);
}

void us_scim_stats(us_scim *sc, struct us_scim_stats *out) {
  pthread_mutex_lock(&sc->mu);
  *out = sc->st;
  pthread_mutex_unlock(&sc->mu);
}

void us_scim_stop(us_scim *sc) {
  if (!sc)
    return;
  pthread_mutex_lock(&sc->mu);
  sc->stopping = 1;
  pthread_cond_broadcast(&sc->cv);
  int started = sc->worker_started;
  pthread_mutex_unlock(&sc->mu);
  if (started)
    pthread_join(sc->worker, NULL);
  pthread_mutex_lock(&sc->mu);
  sc->worker_started = 0;
  refuse_queued(sc, "usersync is stopping");
  pthread_mutex_unlock(&sc->mu);
}

void us_scim_free(us_scim *sc) {
  if (!sc)
    return;
  while (sc->live.head) {
    struct us_scim_request *r = US_QUEUE_ENTRY(sc->live.head, struct us_scim_request, live);
    us_queue_remove(&sc->live, &r->live);
    request_free(r);
  }
  pthread_cond_destroy(&sc->cv);
  pthread_mutex_destroy(&sc->mu);
  free(sc->src);
  free(sc);
}
