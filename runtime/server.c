/*
** server.c: the HTTP server of `usersync serve` (include/usersync/server.h).
**
** Provides: us_server_* . Uses: libmicrohttpd (its own polling threads),
** pthreads and sigwait(), OpenSSL (SHA-256 of the secrets, PEM checks
** of the TLS pair), crypto.c (us_sha256_eq), jsonscan.c (deliveries),
** metrics.c.
**
** Hook deliveries (POST <hook path>), decided in this order:
**   1. from the headers alone, before any body byte is read:
**      Authorization missing or not the secret       -> 401
**      Content-Length larger than max_body            -> 413
**   2. while reading (chunked bodies too): more than max_body bytes -> 413
**   3. the body is not JSON or has no data.events array -> 400 "<reason>"
**   4. items without a string "uuid" (of at most 128 bytes) are skipped
**      (malformed_events), which bounds the dedupe set's memory; a uuid
**      seen before (the last dedupe_max accepted ones) is a duplicate; if the
**      rest does not fit the queue (queue_max events, queue_max_bytes)
**      -> 503 and nothing of the delivery is kept (Okta retries once);
**      otherwise the new events are queued          -> 200, empty body.
** Every outcome is counted in the stats and in usersync_hook_deliveries_total
** {result=...} / usersync_hook_events_total{result=...}.
**
** The status page ("/", "/status/...", when a page handler is configured):
** HTTP Basic auth compared as SHA-256 digests in constant time (401 with
** WWW-Authenticate otherwise, a POST refused before its body is read), then
** the handler renders on the request's thread; a POST's form body is read
** up to PAGE_MAX_BODY. Answers carry a strict Content-Security-Policy.
**
** Locking: s->mu guards the queue, the dedupe set, the signal ring, ready
** state and stats; s->cv is signalled when events or signals arrive. The
** consumer's batch (s->batch) is only touched by the consumer thread.
** s->conn_mu guards the tracked connections of the request deadlines (the
** sweeper thread and libmicrohttpd's connection callbacks).
*/
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "usersync/crypto.h"
#include "usersync/jsonscan.h"
#include "usersync/metrics.h"
#include "usersync/scim_server.h"
#include "usersync/server.h"
#include "usersync/timeutil.h"

#define SIGQ_MAX 64
#define READY_REASON_MAX 200
#define UUID_MAX 128 /* longer "uuid" values are malformed (Okta's have 36 characters) */

/* ---------- de-duplication: a FIFO-bounded hash set of uuids ---------- */

struct seen {
  struct seen *chain, *fifo;
  uint64_t hash;
  char uuid[];
};

struct dedupe {
  struct seen **tab;
  size_t mask, n, max;
  struct seen *head, *tail; /* oldest first */
};

static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
  return h;
}

static int dedupe_init(struct dedupe *d, size_t max) {
  size_t size = 16;
  while (size < max && size < ((size_t)1 << 30))
    size <<= 1;
  d->tab = calloc(size, sizeof *d->tab);
  d->mask = size - 1;
  d->n = 0;
  d->max = max;
  d->head = d->tail = NULL;
  return d->tab != NULL;
}

static int dedupe_has(const struct dedupe *d, const char *uuid, uint64_t h) {
  for (const struct seen *e = d->tab[h & d->mask]; e; e = e->chain)
    if (e->hash == h && strcmp(e->uuid, uuid) == 0)
      return 1;
  return 0;
}

static void dedupe_evict_oldest(struct dedupe *d) {
  struct seen *old = d->head;
  struct seen **pp = &d->tab[old->hash & d->mask];
  while (*pp != old)
    pp = &(*pp)->chain;
  *pp = old->chain;
  d->head = old->fifo;
  if (!d->head)
    d->tail = NULL;
  d->n--;
  free(old);
}

/* Remembers uuid (not already present); 0 when out of memory. */
static int dedupe_add(struct dedupe *d, const char *uuid, uint64_t h) {
  size_t l = strlen(uuid);
  struct seen *e = malloc(sizeof *e + l + 1);
  if (!e)
    return 0;
  if (d->n >= d->max)
    dedupe_evict_oldest(d);
  memcpy(e->uuid, uuid, l + 1);
  e->hash = h;
  e->chain = d->tab[h & d->mask];
  d->tab[h & d->mask] = e;
  e->fifo = NULL;
  if (d->tail)
    d->tail->fifo = e;
  else
    d->head = e;
  d->tail = e;
  d->n++;
  return 1;
}

static void dedupe_free(struct dedupe *d) {
  for (struct seen *e = d->head, *next; e; e = next) {
    next = e->fifo;
    free(e);
  }
  free(d->tab);
}

/* ---------- the server ---------- */

struct us_server {
  struct MHD_Daemon *daemon;
  struct MHD_Daemon *health; /* the health listener's daemon, or NULL */
  int port, health_port;
  char *hook_path;
  unsigned char secret_sha[SHA256_DIGEST_LENGTH];
  size_t max_body, queue_max, queue_max_bytes;
  char *tls_cert, *tls_key; /* kept for the daemon's lifetime */

  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct us_server_event *qhead, *qtail; /* queued events */
  size_t qlen, qbytes;
  struct dedupe seen;
  int sigq[SIGQ_MAX];
  size_t sig_first, sig_n;
  int stopping, sig_stop;
  int ready;
  char ready_reason[READY_REASON_MAX + 1];
  struct us_server_stats st;
  char mhd_err[256]; /* last message libmicrohttpd logged */

  sigset_t sigs, oldmask;
  pthread_t sig_thread;
  int sig_thread_started;

  struct us_server_event *batch; /* handed to the consumer by the last wait */

  /* Request deadlines on the main listener (see "deadlines" below). */
  pthread_mutex_t conn_mu;
  pthread_cond_t conn_cv;
  struct tracked *conns; /* open connections */
  unsigned timeout_s;
  int sweeper_started, sweeper_stop;
  pthread_t sweeper;
  uint64_t deadline_closed; /* connections shut for missing their deadline */

  /* The status page (under mu: the actions and the deliveries ring). */
  us_server_page_fn page;
  void *page_ud;
  unsigned char page_auth_sha[SHA256_DIGEST_LENGTH]; /* of base64(user:password) */
  struct us_server_event *ahead, *atail; /* queued actions */
  size_t alen;
  struct us_server_delivery ring[US_SERVER_DELIVERIES];
  size_t ring_next, ring_n;
  us_scim *scim;  /* the SCIM endpoints (scim_server.c), or NULL */
  int scim_poked; /* a SCIM write since the consumer's last wait (under mu) */
};

/* One server per process: signals are process-wide. */
static pthread_mutex_t running_mu = PTHREAD_MUTEX_INITIALIZER;
static int running;

static void count(const char *family, const char *result) {
  const char *kv[] = {"result", result, NULL};
  us_metrics_add(family, kv, 1);
}

static void events_free(struct us_server_event *e) {
  while (e) {
    struct us_server_event *next = e->next;
    free(e);
    e = next;
  }
}

/* Records a signal; mutex held. */
static void record_signal(us_server *s, int sig) {
  if (sig == SIGTERM || sig == SIGINT)
    s->stopping = 1;
  if (s->sig_n < SIGQ_MAX) {
    s->sigq[(s->sig_first + s->sig_n) % SIGQ_MAX] = sig;
    s->sig_n++;
  }
  pthread_cond_broadcast(&s->cv);
}

static void *sig_main(void *arg) {
  us_server *s = arg;
  for (;;) {
    int sig = 0;
    if (sigwait(&s->sigs, &sig) != 0)
      continue;
    pthread_mutex_lock(&s->mu);
    int stop = s->sig_stop;
    if (!stop)
      record_signal(s, sig);
    pthread_mutex_unlock(&s->mu);
    if (stop)
      return NULL;
  }
}

/* Takes signals pending on the calling (consumer) thread itself, e.g. from
** raise(), which the signal thread cannot see. */
static void take_own_signals(us_server *s) {
  sigset_t pending;
  if (sigpending(&pending) != 0)
    return;
  for (;;) {
    int any = sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1 ||
              sigismember(&pending, SIGHUP) == 1;
    if (!any)
      return;
    struct timespec zero = {0, 0};
    int sig = sigtimedwait(&s->sigs, NULL, &zero);
    if (sig <= 0)
      return;
    pthread_mutex_lock(&s->mu);
    record_signal(s, sig);
    pthread_mutex_unlock(&s->mu);
    if (sigpending(&pending) != 0)
      return;
  }
}

/* ---------- deadlines ----------
**
** libmicrohttpd's CONNECTION_TIMEOUT closes a connection that is silent for
** timeout_s; a client that sends its request a byte at a time stays under
** it. So every connection of the main listener is tracked from
** NOTIFY_STARTED to NOTIFY_CLOSED with a deadline: its request (line,
** headers and body) must have arrived within timeout_s of the connection's
** start, or of the end of the previous request on a kept-alive connection.
** A sweeper thread shuts the socket down (shutdown(), never close(): the
** descriptor stays libmicrohttpd's) of a connection past its deadline;
** libmicrohttpd then sees the end of the stream and closes it. The
** tracker is removed under conn_mu by NOTIFY_CLOSED, which libmicrohttpd
** calls before it closes the descriptor, so the sweeper never touches a
** descriptor that was closed and reused. */

struct tracked {
  struct tracked *prev, *next;
  int fd;
  int armed;         /* a request is on its way (0: answered, waiting for the response) */
  int shut;          /* already shut down by the sweeper */
  struct timespec deadline;
};

static int past(const struct timespec *now, const struct timespec *t) {
  return now->tv_sec > t->tv_sec || (now->tv_sec == t->tv_sec && now->tv_nsec >= t->tv_nsec);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
  us_server *s = cls;
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct tracked *t = calloc(1, sizeof *t);
    *socket_context = t;
    if (!t || !ci) {
      free(t);
      *socket_context = NULL;
      return;
    }
    t->fd = ci->connect_fd;
    t->armed = 1;
    us_time_monotonic_after(&t->deadline, (long)s->timeout_s * 1000);
    pthread_mutex_lock(&s->conn_mu);
    t->next = s->conns;
    if (s->conns)
      s->conns->prev = t;
    s->conns = t;
    pthread_mutex_unlock(&s->conn_mu);
  } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
    struct tracked *t = *socket_context;
    if (!t)
      return;
    pthread_mutex_lock(&s->conn_mu);
    if (t->prev)
      t->prev->next = t->next;
    else
      s->conns = t->next;
    if (t->next)
      t->next->prev = t->prev;
    pthread_mutex_unlock(&s->conn_mu);
    free(t);
    *socket_context = NULL;
  }
}

/* The connection's request has fully arrived (disarm) or ended (arm a new
** deadline for the next one on a kept-alive connection). */
static void request_phase(us_server *s, struct MHD_Connection *c, int armed) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  struct tracked *t = ci ? ci->socket_context : NULL;
  if (!t)
    return;
  pthread_mutex_lock(&s->conn_mu);
  t->armed = armed;
  if (armed)
    us_time_monotonic_after(&t->deadline, (long)s->timeout_s * 1000);
  pthread_mutex_unlock(&s->conn_mu);
}

static void *sweeper_main(void *arg) {
  us_server *s = arg;
  pthread_mutex_lock(&s->conn_mu);
  while (!s->sweeper_stop) {
    struct timespec now, wake;
    us_time_monotonic_after(&now, 0);
    for (struct tracked *t = s->conns; t; t = t->next) {
      if (t->armed && !t->shut && past(&now, &t->deadline)) {
        shutdown(t->fd, SHUT_RDWR);
        t->shut = 1;
        s->deadline_closed++;
      }
    }
    us_time_monotonic_after(&wake, 250);
    pthread_cond_timedwait(&s->conn_cv, &s->conn_mu, &wake);
  }
  pthread_mutex_unlock(&s->conn_mu);
  return NULL;
}

static void stop_sweeper(us_server *s) {
  if (!s->sweeper_started)
    return;
  pthread_mutex_lock(&s->conn_mu);
  s->sweeper_stop = 1;
  pthread_cond_broadcast(&s->conn_cv);
  pthread_mutex_unlock(&s->conn_mu);
  pthread_join(s->sweeper, NULL);
  s->sweeper_started = 0;
}

/* ---------- responses ---------- */

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *ctype,
                             const char *body, size_t len, const char *allow) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (!r)
    return MHD_NO;
  if (ctype)
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
  if (allow)
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
  enum MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *text) {
  return reply(c, status, "text/plain; charset=utf-8", text, strlen(text), NULL);
}

static enum MHD_Result reply_metrics(us_server *s, struct MHD_Connection *c) {
  pthread_mutex_lock(&s->mu);
  double q = (double)s->qlen;
  pthread_mutex_unlock(&s->mu);
  us_metrics_set("usersync_hook_queue_events", NULL, q);
  size_t len = 0;
  char *text = us_metrics_render(&len);
  if (!text)
    return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
  struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
  if (!r) {
    free(text);
    return MHD_NO;
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                          "text/plain; version=0.0.4; charset=utf-8");
  enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result reply_ready(us_server *s, struct MHD_Connection *c) {
  char body[READY_REASON_MAX + 32];
  pthread_mutex_lock(&s->mu);
  int ok = s->ready;
  if (!ok)
    snprintf(body, sizeof body, "not ready: %s\n", s->ready_reason);
  pthread_mutex_unlock(&s->mu);
  if (ok)
    return reply_text(c, MHD_HTTP_OK, "ready\n");
  return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, body);
}

/* ---------- the hook ---------- */

/* 1 when the request's Authorization header equals the secret. Both sides
** are hashed first, so the comparison time says nothing about the length. */
static int authorized(us_server *s, struct MHD_Connection *c) {
  const char *v = NULL;
  size_t vlen = 0;
  if (MHD_lookup_connection_value_n(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION,
                                    strlen(MHD_HTTP_HEADER_AUTHORIZATION), &v, &vlen) != MHD_YES ||
      !v)
    return 0;
  return us_sha256_eq(v, vlen, s->secret_sha);
}

/* Answers the one-time verification: {"verification":"<challenge>"}. */
static enum MHD_Result reply_verification(us_server *s, struct MHD_Connection *c) {
  if (!authorized(s, c)) {
    pthread_mutex_lock(&s->mu);
    s->st.unauthorized++;
    pthread_mutex_unlock(&s->mu);
    count("usersync_hook_verifications_total", "unauthorized");
    return reply_text(c, MHD_HTTP_UNAUTHORIZED, "unauthorized\n");
  }
  const char *v =
      MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-okta-verification-challenge");
  if (!v)
    return reply_text(c, MHD_HTTP_BAD_REQUEST, "missing x-okta-verification-challenge\n");
  char *q = us_json_quote(v), *out = q ? malloc(strlen(q) + 20) : NULL;
  if (!out) {
    free(q);
    return MHD_NO;
  }
  size_t n = (size_t)sprintf(out, "{\"verification\":%s}", q);
  free(q);
  pthread_mutex_lock(&s->mu);
  s->st.verifications++;
  pthread_mutex_unlock(&s->mu);
  count("usersync_hook_verifications_total", "ok");
  enum MHD_Result ret = reply(c, MHD_HTTP_OK, "application/json", out, n, NULL);
  free(out);
  return ret;
}

/* A delivery being read (the connection's con_cls); also a status page
** POST's form body (page = 1). */
struct delivery {
  int page;
  char *body;
  size_t len, cap;
  int too_large;
  size_t discarded;
};

static void delivery_free(struct delivery *d) {
  if (d) {
    free(d->body);
    free(d);
  }
}

/* Counts a finished delivery under result (the stats field too) and keeps
** it in the ring of recent deliveries the status page shows. */
static void count_delivery_n(us_server *s, uint64_t *field, const char *result, size_t events,
                             size_t dups) {
  pthread_mutex_lock(&s->mu);
  s->st.deliveries++;
  (*field)++;
  struct us_server_delivery *d = &s->ring[s->ring_next];
  d->at = us_time_now();
  snprintf(d->result, sizeof d->result, "%s", result);
  d->events = (unsigned)events;
  d->duplicates = (unsigned)dups;
  s->ring_next = (s->ring_next + 1) % US_SERVER_DELIVERIES;
  if (s->ring_n < US_SERVER_DELIVERIES)
    s->ring_n++;
  pthread_mutex_unlock(&s->mu);
  count("usersync_hook_deliveries_total", result);
}

static void count_delivery(us_server *s, uint64_t *field, const char *result) {
  count_delivery_n(s, field, result, 0, 0);
}

/* One data.events[] item accepted for the queue check. */
struct cand {
  struct us_server_event *ev; /* NULL once queued (ownership moved) */
  char *uuid;
  uint64_t hash;
};

/* Queues what is new of cands under the mutex. Returns 1 (accepted) or 0
** (queue full; nothing kept). *dups gets the number of duplicates. */
static int enqueue(us_server *s, struct cand *cands, size_t n, size_t *dups) {
  size_t fresh = 0, bytes = 0;
  *dups = 0;
  pthread_mutex_lock(&s->mu);
  /* Upper bound of what is new (a uuid repeated inside this delivery counts twice). */
  for (size_t i = 0; i < n; i++)
    if (!dedupe_has(&s->seen, cands[i].uuid, cands[i].hash)) {
      fresh++;
      bytes += cands[i].ev->len;
    }
  if (fresh > 0 && (s->qlen + fresh > s->queue_max || s->qbytes + bytes > s->queue_max_bytes)) {
    pthread_mutex_unlock(&s->mu);
    return 0;
  }
  size_t queued = 0;
  for (size_t i = 0; i < n; i++) {
    if (dedupe_has(&s->seen, cands[i].uuid, cands[i].hash) ||
        !dedupe_add(&s->seen, cands[i].uuid, cands[i].hash)) {
      (*dups)++;
      continue;
    }
    struct us_server_event *e = cands[i].ev;
    cands[i].ev = NULL;
    e->next = NULL;
    if (s->qtail)
      s->qtail->next = e;
    else
      s->qhead = e;
    s->qtail = e;
    s->qlen++;
    s->qbytes += e->len;
    queued++;
  }
  s->st.events += queued;
  s->st.duplicates += *dups;
  if (queued)
    pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  if (queued)
    us_metrics_add("usersync_hook_events_total", (const char *const[]){"result", "queued", NULL},
                   (double)queued);
  if (*dups)
    us_metrics_add("usersync_hook_events_total",
                   (const char *const[]){"result", "duplicate", NULL}, (double)*dups);
  return 1;
}

/* The part of a LogEvent that `usersync serve` acts on, as a JSON object
** text: uuid, eventType, published, outcome, actor and target, copied
** byte for byte from the item (absent ones left out). Okta's events carry
** a lot more (client, request, geographic context: ~2 KB); queueing only
** these keeps the queue ~10x smaller and the consumer cheap.
** Returns a malloc'd event, NULL on out of memory. */
static struct us_server_event *compact_event(const struct us_jval *item) {
  static const char *const keys[] = {"uuid", "eventType", "published", "outcome", "actor", "target"};
  struct us_jval v[sizeof keys / sizeof *keys];
  int have[sizeof keys / sizeof *keys];
  size_t len = 2;
  for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
    have[k] = us_json_get(item, keys[k], &v[k]);
    if (have[k])
      len += strlen(keys[k]) + 4 + v[k].len; /* "key": value, */
  }
  struct us_server_event *e = malloc(sizeof *e + len + 1);
  if (!e)
    return NULL;
  char *p = e->text;
  *p++ = '{';
  int first = 1;
  for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
    if (!have[k])
      continue;
    if (!first)
      *p++ = ',';
    first = 0;
    *p++ = '"';
    memcpy(p, keys[k], strlen(keys[k]));
    p += strlen(keys[k]);
    *p++ = '"';
    *p++ = ':';
    memcpy(p, v[k].start, v[k].len);
    p += v[k].len;
  }
  *p++ = '}';
  *p = 0;
  e->next = NULL;
  e->len = (size_t)(p - e->text);
  return e;
}

/* Splits a parsed delivery into candidates (malloc'd array, *n entries).
** NULL with *n == 0 is also a valid "no events". *skipped counts items
** without a string uuid. Returns -1 on out of memory. */
static int collect(const struct us_jval *events, struct cand **out, size_t *n, size_t *skipped) {
  size_t pos = 0, cap = 0;
  struct us_jval item, uuid;
  *out = NULL;
  *n = *skipped = 0;
  while (us_json_next_elem(events, &pos, &item)) {
    char *u = NULL;
    if (item.type != US_J_OBJECT || !us_json_get(&item, "uuid", &uuid) ||
        uuid.type != US_J_STRING || uuid.len > UUID_MAX + 2 ||
        !(u = us_json_strdup(&uuid, NULL)) || !*u) {
      free(u);
      (*skipped)++;
      continue;
    }
    if (*n == cap) {
      size_t ncap = cap ? cap * 2 : 8;
      struct cand *v = realloc(*out, ncap * sizeof *v);
      if (!v) {
        free(u);
        return -1;
      }
      *out = v;
      cap = ncap;
    }
    struct us_server_event *e = compact_event(&item);
    if (!e) {
      free(u);
      return -1;
    }
    (*out)[*n].ev = e;
    (*out)[*n].uuid = u;
    (*out)[*n].hash = hash_bytes(u, strlen(u));
    (*n)++;
  }
  return 0;
}

static void cands_free(struct cand *c, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(c[i].ev);
    free(c[i].uuid);
  }
  free(c);
}

/* The whole body has arrived: parse, de-duplicate, queue, answer. */
static enum MHD_Result finish_delivery(us_server *s, struct MHD_Connection *c, struct delivery *d) {
  struct us_jval root, events;
  const char *why = NULL;
  if (!us_json_parse(d->body ? d->body : "", d->len, &root))
    why = "malformed: body is not JSON\n";
  else if (root.type != US_J_OBJECT)
    why = "malformed: body is not a JSON object\n";
  else if (!us_json_get(&root, "data.events", &events) || events.type != US_J_ARRAY)
    why = "malformed: no data.events array\n";
  if (why) {
    count_delivery(s, &s->st.malformed, "malformed");
    return reply_text(c, MHD_HTTP_BAD_REQUEST, why);
  }
  struct cand *cands;
  size_t n, skipped, dups;
  if (collect(&events, &cands, &n, &skipped) != 0) {
    cands_free(cands, n);
    return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
  }
  int ok = enqueue(s, cands, n, &dups);
  cands_free(cands, n);
  if (skipped) {
    pthread_mutex_lock(&s->mu);
    s->st.malformed_events += skipped;
    pthread_mutex_unlock(&s->mu);
    us_metrics_add("usersync_hook_events_total",
                   (const char *const[]){"result", "malformed", NULL}, (double)skipped);
  }
  if (!ok) {
    count_delivery(s, &s->st.queue_full, "queue_full");
    return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "queue full\n");
  }
  count_delivery_n(s, &s->st.accepted, "accepted", n - dups, dups);
  return reply(c, MHD_HTTP_OK, NULL, "", 0, NULL);
}

static enum MHD_Result reply_too_large(us_server *s, struct MHD_Connection *c) {
  char msg[96];
  snprintf(msg, sizeof msg, "body larger than %zu bytes\n", s->max_body);
  count_delivery(s, &s->st.too_large, "too_large");
  return reply_text(c, MHD_HTTP_CONTENT_TOO_LARGE, msg);
}

/* First call of a POST: decide from the headers. Returns MHD_YES with
** *con_cls set when the body is to be read. */
static enum MHD_Result start_delivery(us_server *s, struct MHD_Connection *c, void **con_cls) {
  if (!authorized(s, c)) {
    count_delivery(s, &s->st.unauthorized, "unauthorized");
    return reply_text(c, MHD_HTTP_UNAUTHORIZED, "unauthorized\n");
  }
  const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
  if (cl) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(cl, &end, 10);
    if (errno || end == cl || v > s->max_body)
      return reply_too_large(s, c);
  }
  struct delivery *d = calloc(1, sizeof *d);
  if (!d)
    return MHD_NO;
  *con_cls = d;
  return MHD_YES;
}

/* Later calls of a POST: body bytes, then (size 0) the end. */
static enum MHD_Result continue_delivery(us_server *s, struct MHD_Connection *c,
                                         struct delivery *d, const char *data, size_t *size) {
  if (*size == 0)
    return d->too_large ? reply_too_large(s, c) : finish_delivery(s, c, d);
  size_t n = *size;
  *size = 0;
  if (d->too_large) {
    /* libmicrohttpd cannot answer in the middle of a body: read on and drop
    ** it, answering 413 at its end, but close the connection of a client
    ** that sends without end. */
    d->discarded += n;
    if (d->discarded <= 4 * s->max_body + ((size_t)1 << 20))
      return MHD_YES;
    count_delivery(s, &s->st.too_large, "too_large");
    d->too_large = 2; /* counted */
    return MHD_NO;
  }
  if (d->len + n > s->max_body) {
    d->too_large = 1;
    d->discarded = d->len + n;
    free(d->body);
    d->body = NULL;
    d->len = d->cap = 0;
    return MHD_YES;
  }
  if (d->len + n + 1 > d->cap) {
    size_t cap = d->cap ? d->cap : 4096;
    while (cap < d->len + n + 1)
      cap *= 2;
    char *p = realloc(d->body, cap);
    if (!p)
      return MHD_NO;
    d->body = p;
    d->cap = cap;
  }
  memcpy(d->body + d->len, data, n);
  d->len += n;
  return MHD_YES;
}

/* ---------- request dispatch ---------- */

static int is_get(const char *m) { return !strcmp(m, "GET") || !strcmp(m, "HEAD"); }

/* ---------- the status page ---------- */

#define PAGE_MAX_BODY 8192 /* a "sync now" form is a few hundred bytes */
#define PAGE_MAX_ARGS 16
#define ACTIONS_MAX 64

static int is_page_path(const us_server *s, const char *url) {
  return s->page && (!strcmp(url, "/") || !strncmp(url, "/status/", 8));
}

/* 1 when Authorization is "Basic <base64(user:password)>" (the scheme in
** any case). Both sides are hashed first, so the comparison's time says
** nothing about how much of the credentials matched, nor their length. */
static int page_authorized(us_server *s, struct MHD_Connection *c) {
  const char *v = NULL;
  size_t vlen = 0;
  if (MHD_lookup_connection_value_n(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION,
                                    strlen(MHD_HTTP_HEADER_AUTHORIZATION), &v, &vlen) != MHD_YES ||
      !v || vlen < 6 || strncasecmp(v, "Basic ", 6) != 0)
    return 0;
  v += 6;
  vlen -= 6;
  while (vlen && *v == ' ')
    v++, vlen--;
  while (vlen && v[vlen - 1] == ' ')
    vlen--;
  return us_sha256_eq(v, vlen, s->page_auth_sha);
}

static enum MHD_Result reply_unauthorized(struct MHD_Connection *c) {
  static const char msg[] = "authentication required\n";
  count("usersync_status_requests_total", "unauthorized");
  struct MHD_Response *r =
      MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
  if (!r)
    return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
  MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                          "Basic realm=\"usersync\", charset=\"UTF-8\"");
  enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_UNAUTHORIZED, r);
  MHD_destroy_response(r);
  return ret;
}

struct page_args {
  const char *v[PAGE_MAX_ARGS * 2 + 1];
  size_t n;
};

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value) {
  struct page_args *a = cls;
  (void)kind;
  if (key && a->n + 2 < sizeof a->v / sizeof *a->v) {
    a->v[a->n++] = key;
    a->v[a->n++] = value ? value : "";
  }
  return MHD_YES;
}

static const char *header(struct MHD_Connection *c, const char *name) {
  return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

/* Authenticates, then lets the page handler answer (body: a POST's form). */
static enum MHD_Result reply_page(us_server *s, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *body, size_t len) {
  if (!page_authorized(s, c))
    return reply_unauthorized(c);
  if (!is_get(method) && strcmp(method, "POST") != 0)
    return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8",
                 "method not allowed\n", 19, "GET, HEAD, POST");
  struct page_args a;
  memset(&a, 0, sizeof a);
  MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_arg, &a);
  struct us_server_page_request rq = {
      method,         url,          a.v,
      body,           len,          header(c, MHD_HTTP_HEADER_HOST),
      header(c, "Origin"), header(c, MHD_HTTP_HEADER_REFERER), header(c, MHD_HTTP_HEADER_COOKIE),
      s->tls_cert != NULL};
  struct us_server_page out;
  memset(&out, 0, sizeof out);
  s->page(s->page_ud, s, &rq, &out);
  count("usersync_status_requests_total", out.status >= 200 && out.status < 400 ? "ok" : "refused");
  if (!out.status) {
    free(out.body);
    return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error\n");
  }
  struct MHD_Response *r =
      out.body ? MHD_create_response_from_buffer(out.len, out.body, MHD_RESPMEM_MUST_FREE)
               : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
  if (!r) {
    free(out.body);
    return MHD_NO;
  }
  out.ctype[sizeof out.ctype - 1] = out.location[sizeof out.location - 1] = 0;
  out.set_cookie[sizeof out.set_cookie - 1] = 0;
  if (out.ctype[0])
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, out.ctype);
  if (out.location[0])
    MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, out.location);
  if (out.set_cookie[0])
    MHD_add_response_header(r, MHD_HTTP_HEADER_SET_COOKIE, out.set_cookie);
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL,
                          out.cacheable ? "private, max-age=3600" : "no-store");
  MHD_add_response_header(r, "Content-Security-Policy",
                          "default-src 'none'; style-src 'self'; img-src 'self'; "
                          "form-action 'self'; frame-ancestors 'none'; base-uri 'none'");
  MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
  MHD_add_response_header(r, "X-Frame-Options", "DENY");
  MHD_add_response_header(r, "Referrer-Policy", "same-origin");
  enum MHD_Result ret = MHD_queue_response(c, out.status, r);
  MHD_destroy_response(r);
  return ret;
}

/* A status page POST's body: read up to PAGE_MAX_BODY, then answer. */
static enum MHD_Result continue_page(us_server *s, struct MHD_Connection *c, const char *url,
                                     const char *method, struct delivery *d, const char *data,
                                     size_t *size) {
  if (*size == 0) {
    if (d->too_large)
      return reply_text(c, MHD_HTTP_CONTENT_TOO_LARGE, "form too large\n");
    return reply_page(s, c, url, method, d->body, d->len);
  }
  size_t n = *size;
  *size = 0;
  if (d->too_large || d->len + n > PAGE_MAX_BODY) {
    d->too_large = 1;
    d->discarded += n;
    return d->discarded <= 4 * PAGE_MAX_BODY ? MHD_YES : MHD_NO;
  }
  if (!d->body && !(d->body = malloc(PAGE_MAX_BODY + 1)))
    return MHD_NO;
  memcpy(d->body + d->len, data, n);
  d->len += n;
  d->body[d->len] = 0;
  return MHD_YES;
}

int us_server_post_action(us_server *s, const char *text, size_t len) {
  struct us_server_event *e = malloc(sizeof *e + len + 1);
  if (!e)
    return 0;
  memcpy(e->text, text, len);
  e->text[len] = 0;
  e->len = len;
  e->next = NULL;
  pthread_mutex_lock(&s->mu);
  if (s->alen >= ACTIONS_MAX) {
    pthread_mutex_unlock(&s->mu);
    free(e);
    return 0;
  }
  if (s->atail)
    s->atail->next = e;
  else
    s->ahead = e;
  s->atail = e;
  s->alen++;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  return 1;
}

size_t us_server_deliveries(us_server *s, struct us_server_delivery *out, size_t max) {
  pthread_mutex_lock(&s->mu);
  size_t n = s->ring_n < max ? s->ring_n : max;
  for (size_t i = 0; i < n; i++)
    out[i] = s->ring[(s->ring_next + US_SERVER_DELIVERIES - 1 - i) % US_SERVER_DELIVERIES];
  pthread_mutex_unlock(&s->mu);
  return n;
}

/* Answers a request that is not a hook delivery. */
static enum MHD_Result route(us_server *s, struct MHD_Connection *c, const char *url,
                             const char *method, int with_hook) {
  if (with_hook && is_page_path(s, url))
    return reply_page(s, c, url, method, NULL, 0);
  if (with_hook && s->hook_path && strcmp(url, s->hook_path) == 0) {
    if (is_get(method))
      return reply_verification(s, c);
    return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8",
                 "method not allowed\n", 19, "GET, POST");
  }
  int known = !strcmp(url, "/healthz") || !strcmp(url, "/readyz") || !strcmp(url, "/metrics");
  if (!known)
    return reply_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
  if (!is_get(method))
    return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8",
                 "method not allowed\n", 19, "GET, HEAD");
  if (!strcmp(url, "/healthz"))
    return reply_text(c, MHD_HTTP_OK, "ok\n");
  if (!strcmp(url, "/readyz"))
    return reply_ready(s, c);
  return reply_metrics(s, c);
}

/* Whether the request announces a body (Content-Length > 0 or chunked). */
static int has_body(struct MHD_Connection *c) {
  const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
  if (cl && strcmp(cl, "0") != 0)
    return 1;
  return MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
}

/* con_cls of a body-less request between its first and second call. */
static char plain_request;

/* libmicrohttpd calls this first with the headers (*con_cls NULL), then with
** body pieces, then with *size 0 at the end. A response queued at the first
** call is "early": the body is never read and the connection closes, which
** is what a refused delivery needs. Everything else is answered at the
** second call, so keep-alive connections stay open. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *size, void **con_cls) {
  us_server *s = cls;
  if (s->scim && us_scim_is_path(url)) {
    if (*con_cls && *size == 0)
      request_phase(s, c, 0); /* the whole body is here */
    return us_scim_request(s->scim, c, url, method, data, size, con_cls);
  }
  if (*con_cls == &plain_request)
    return route(s, c, url, method, 1);
  if (*con_cls) {
    if (*size == 0)
      request_phase(s, c, 0); /* the whole body is here */
    struct delivery *d = *con_cls;
    if (d->page)
      return continue_page(s, c, url, method, d, data, size);
    return continue_delivery(s, c, d, data, size);
  }
  if (is_page_path(s, url) && !strcmp(method, "POST") && has_body(c)) {
    if (!page_authorized(s, c)) {
      request_phase(s, c, 0);
      return reply_unauthorized(c); /* early: the body is not read */
    }
    struct delivery *d = calloc(1, sizeof *d);
    if (!d)
      return MHD_NO;
    d->page = 1;
    *con_cls = d;
    return MHD_YES;
  }
  if (s->hook_path && strcmp(url, s->hook_path) == 0 && !strcmp(method, "POST"))
    return start_delivery(s, c, con_cls);
  request_phase(s, c, 0); /* answered without reading a body */
  if (has_body(c))
    return route(s, c, url, method, 1); /* early: an unexpected body is not read */
  *con_cls = &plain_request;
  return MHD_YES;
}

/* The health listener: /healthz, /readyz and /metrics only (no hook). */
static enum MHD_Result on_health_request(void *cls, struct MHD_Connection *c, const char *url,
                                         const char *method, const char *version,
                                         const char *data, size_t *size, void **con_cls) {
  us_server *s = cls;
  if (*con_cls == &plain_request || has_body(c))
    return route(s, c, url, method, 0);
  *con_cls = &plain_request;
  return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  request_phase(cls, c, 1); /* the next request on this connection, if any */
  if (us_scim_release(((us_server *)cls)->scim, *con_cls)) {
    *con_cls = NULL;
    return;
  }
  if (*con_cls != &plain_request)
    delivery_free(*con_cls);
  *con_cls = NULL;
}

static void on_log(void *cls, const char *fmt, va_list ap) {
  us_server *s = cls;
  char msg[sizeof s->mhd_err];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t l = strlen(msg);
  while (l > 0 && (msg[l - 1] == '\n' || msg[l - 1] == '\r'))
    msg[--l] = 0;
  pthread_mutex_lock(&s->mu);
  memcpy(s->mhd_err, msg, l + 1);
  pthread_mutex_unlock(&s->mu);
}

/* ---------- start ---------- */

static const char *fail(char *err, size_t errlen, const char *code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return code;
}

/* Parses "host:port" / "[v6]:port" into a socket address. NULL or a code. */
static const char *parse_listen(const char *addr, struct sockaddr_storage *ss, socklen_t *sslen,
                                char *err, size_t errlen) {
  char host[256];
  const char *colon, *hs, *he;
  if (!addr || !*addr)
    return fail(err, errlen, US_SERVER_EINVAL, "listen: empty address");
  if (addr[0] == '[') {
    he = strchr(addr, ']');
    if (!he || he[1] != ':')
      return fail(err, errlen, US_SERVER_EINVAL, "listen %s: expected [v6]:port", addr);
    hs = addr + 1;
    colon = he + 1;
  } else {
    colon = strrchr(addr, ':');
    if (!colon || colon == addr || memchr(addr, ':', (size_t)(colon - addr)))
      return fail(err, errlen, US_SERVER_EINVAL, "listen %s: expected host:port", addr);
    hs = addr;
    he = colon;
  }
  char *end;
  errno = 0;
  long port = strtol(colon + 1, &end, 10);
  if (!colon[1] || *end || errno || port < 0 || port > 65535)
    return fail(err, errlen, US_SERVER_EINVAL, "listen %s: bad port", addr);
  if ((size_t)(he - hs) >= sizeof host || he == hs)
    return fail(err, errlen, US_SERVER_EINVAL, "listen %s: bad host", addr);
  memcpy(host, hs, (size_t)(he - hs));
  host[he - hs] = 0;
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  char ps[8];
  snprintf(ps, sizeof ps, "%ld", port);
  int rc = getaddrinfo(host, ps, &hints, &res);
  if (rc != 0 || !res)
    return fail(err, errlen, US_SERVER_EINVAL, "listen %s: %s", addr, gai_strerror(rc));
  memcpy(ss, res->ai_addr, res->ai_addrlen);
  *sslen = res->ai_addrlen;
  freeaddrinfo(res);
  return NULL;
}

/* Binds and listens. Returns the socket, or -1 with *code/err set. */
static int open_listener(const char *addr, int *port, const char **code, char *err,
                         size_t errlen) {
  struct sockaddr_storage ss;
  socklen_t sslen = 0;
  if ((*code = parse_listen(addr, &ss, &sslen, err, errlen)))
    return -1;
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *code = fail(err, errlen, US_SERVER_ESTART, "listen %s: socket: %s", addr, strerror(errno));
    return -1;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&ss, sslen) != 0 || listen(fd, 512) != 0) {
    int e = errno;
    close(fd);
    *code = e == EADDRINUSE ? US_SERVER_EADDRINUSE
            : e == EACCES   ? US_SERVER_EACCES
                            : (e == EADDRNOTAVAIL ? US_SERVER_EINVAL : US_SERVER_ESTART);
    fail(err, errlen, *code, "listen %s: %s", addr, strerror(e));
    return -1;
  }
  struct sockaddr_storage got;
  socklen_t gl = sizeof got;
  getsockname(fd, (struct sockaddr *)&got, &gl);
  *port = got.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&got)->sin6_port)
                                    : ntohs(((struct sockaddr_in *)&got)->sin_port);
  return fd;
}

/* Refuses PEM text that is not a certificate and a matching unencrypted
** private key, with a message that quotes neither. NULL or ETLS. */
static int no_password(char *buf, int size, int rwflag, void *u) { return 0; }

static const char *check_tls(const struct us_server_config *cfg, char *err, size_t errlen) {
  if (!MHD_is_feature_supported(MHD_FEATURE_TLS))
    return fail(err, errlen, US_SERVER_ETLS, "tls: this libmicrohttpd was built without TLS");
  const char *code = NULL;
  BIO *cb = BIO_new_mem_buf(cfg->tls_cert, (int)cfg->tls_cert_len);
  BIO *kb = BIO_new_mem_buf(cfg->tls_key, (int)cfg->tls_key_len);
  X509 *x = cb ? PEM_read_bio_X509(cb, NULL, no_password, NULL) : NULL;
  EVP_PKEY *k = kb ? PEM_read_bio_PrivateKey(kb, NULL, no_password, NULL) : NULL;
  if (!x)
    code = fail(err, errlen, US_SERVER_ETLS, "tls: cert is not a PEM certificate");
  else if (!k)
    code = fail(err, errlen, US_SERVER_ETLS,
                "tls: key is not an unencrypted PEM private key");
  else if (X509_check_private_key(x, k) != 1)
    code = fail(err, errlen, US_SERVER_ETLS, "tls: key does not match the certificate");
  X509_free(x);
  EVP_PKEY_free(k);
  BIO_free(cb);
  BIO_free(kb);
  return code;
}

static const char *check_config(const struct us_server_config *cfg, char *err, size_t errlen) {
  if (!cfg->tls_cert != !cfg->tls_key)
    return fail(err, errlen, US_SERVER_EINVAL, "tls: needs both cert and key");
  if (cfg->hook_path) {
    const char *p = cfg->hook_path;
    if (p[0] != '/' || !strcmp(p, "/healthz") || !strcmp(p, "/readyz") || !strcmp(p, "/metrics"))
      return fail(err, errlen, US_SERVER_EINVAL,
                  "hook path must start with / and differ from /healthz, /readyz, /metrics");
    if (!cfg->hook_secret || cfg->hook_secret_len == 0)
      return fail(err, errlen, US_SERVER_EINVAL, "hook: a non-empty secret is required");
    if (cfg->page && (!strcmp(p, "/") || !strncmp(p, "/status/", 8)))
      return fail(err, errlen, US_SERVER_EINVAL,
                  "hook path must differ from the status page's / and /status/");
  }
  if (cfg->page && (!cfg->page_user || !*cfg->page_user || strchr(cfg->page_user, ':') ||
                    !cfg->page_password || !*cfg->page_password))
    return fail(err, errlen, US_SERVER_EINVAL,
                "status: needs a user (without ':') and a non-empty password");
  return cfg->tls_cert ? check_tls(cfg, err, errlen) : NULL;
}

static void describe_metrics(void) {
  us_metrics_describe("usersync_hook_deliveries_total", US_METRIC_COUNTER,
                      "Okta event hook deliveries by result");
  us_metrics_describe("usersync_hook_events_total", US_METRIC_COUNTER,
                      "Okta event hook events by result");
  us_metrics_describe("usersync_hook_verifications_total", US_METRIC_COUNTER,
                      "Okta event hook verification challenges by result");
  us_metrics_describe("usersync_hook_queue_events", US_METRIC_GAUGE,
                      "Hook events waiting to be processed");
  us_metrics_describe("usersync_status_requests_total", US_METRIC_COUNTER,
                      "Status page requests by result (ok, refused, unauthorized)");
  us_metrics_describe("usersync_http_requests_total", US_METRIC_COUNTER,
                      "Outgoing HTTP attempts by host and status (or transport error code)");
  us_metrics_describe("usersync_http_retries_total", US_METRIC_COUNTER,
                      "Outgoing HTTP retries by host and the status that caused them");
}

/* Frees s (daemon and signal thread already stopped). */
static void server_free(us_server *s) {
  us_scim_free(s->scim);
  events_free(s->qhead);
  events_free(s->ahead);
  events_free(s->batch);
  dedupe_free(&s->seen);
  free(s->hook_path);
  free(s->tls_cert);
  free(s->tls_key);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->conn_cv);
  pthread_mutex_destroy(&s->conn_mu);
  free(s);
}

/* The status page's expected credentials: SHA-256 of base64(user:password),
** what page_authorized compares with. The clear text is wiped. */
static int page_credentials(us_server *s, const struct us_server_config *cfg) {
  size_t ul = strlen(cfg->page_user), pl = strlen(cfg->page_password), n = ul + 1 + pl;
  unsigned char *plain = malloc(n), *b64 = malloc(4 * ((n + 2) / 3) + 1);
  if (!plain || !b64) {
    free(plain);
    free(b64);
    return 0;
  }
  memcpy(plain, cfg->page_user, ul);
  plain[ul] = ':';
  memcpy(plain + ul + 1, cfg->page_password, pl);
  int len = EVP_EncodeBlock(b64, plain, (int)n);
  SHA256(b64, (size_t)len, s->page_auth_sha);
  OPENSSL_cleanse(plain, n);
  OPENSSL_cleanse(b64, (size_t)len);
  free(plain);
  free(b64);
  s->page = cfg->page;
  s->page_ud = cfg->page_ud;
  return 1;
}

/* A SCIM write happened (the SCIM worker's thread): wake the consumer. */
static void scim_poke(void *arg) {
  us_server *s = arg;
  pthread_mutex_lock(&s->mu);
  s->scim_poked = 1;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static int server_alloc(us_server **out, const struct us_server_config *cfg) {
  us_server *s = calloc(1, sizeof *s);
  if (!s)
    return 0;
  pthread_mutex_init(&s->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->cv, &ca);
  pthread_mutex_init(&s->conn_mu, NULL);
  pthread_cond_init(&s->conn_cv, &ca);
  pthread_condattr_destroy(&ca);
  *out = s;
  s->max_body = cfg->hook_max_body ? cfg->hook_max_body : 1048576;
  s->queue_max = cfg->queue_max ? cfg->queue_max : 100000;
  s->queue_max_bytes = cfg->queue_max_bytes ? cfg->queue_max_bytes : (size_t)64 << 20;
  snprintf(s->ready_reason, sizeof s->ready_reason, "starting");
  if (!dedupe_init(&s->seen, cfg->dedupe_max ? cfg->dedupe_max : 100000))
    return 0;
  if (cfg->hook_path) {
    if (!(s->hook_path = strdup(cfg->hook_path)))
      return 0;
    SHA256((const unsigned char *)cfg->hook_secret, cfg->hook_secret_len, s->secret_sha);
  }
  if (cfg->page && !page_credentials(s, cfg))
    return 0;
  if (cfg->scim_n && !(s->scim = us_scim_new(cfg->scim, cfg->scim_n, cfg->tls_cert != NULL,
                                              scim_poke, s)))
    return 0;
  if (cfg->tls_cert) {
    if (!(s->tls_cert = strndup(cfg->tls_cert, cfg->tls_cert_len)) ||
        !(s->tls_key = strndup(cfg->tls_key, cfg->tls_key_len)))
      return 0;
  }
  return 1;
}

/* Connection limits (server.h): a client that opens connections and sends
** nothing, or headers and bodies byte by byte, holds one of at most
** per_ip slots of its address for at most `timeout` seconds of silence. */
struct limits {
  unsigned total, per_ip, timeout;
};

static struct limits main_limits(const struct us_server_config *cfg) {
  struct limits l = {cfg->max_connections ? cfg->max_connections : US_SERVER_MAX_CONNECTIONS,
                     cfg->max_per_ip ? cfg->max_per_ip : US_SERVER_MAX_PER_IP,
                     cfg->timeout_s ? cfg->timeout_s : US_SERVER_TIMEOUT_S};
  return l;
}

static struct MHD_Daemon *start_daemon(us_server *s, int fd, unsigned threads, struct limits l) {
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
  if (s->scim)
    flags |= MHD_ALLOW_SUSPEND_RESUME; /* SCIM requests wait for their worker suspended */
  if (s->tls_cert)
    flags |= MHD_USE_TLS;
  struct MHD_OptionItem tls[] = {
      {s->tls_cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, s->tls_cert},
      {MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_key},
      {MHD_OPTION_END, 0, NULL},
  };
  return MHD_start_daemon(
      flags, 0, NULL, NULL, on_request, s, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
      MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(threads ? threads : 2),
      MHD_OPTION_CONNECTION_LIMIT, l.total, MHD_OPTION_PER_IP_CONNECTION_LIMIT, l.per_ip,
      MHD_OPTION_CONNECTION_TIMEOUT, l.timeout, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
      MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_EXTERNAL_LOGGER, on_log, s,
      MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
}

/* The health listener: plain HTTP, one thread, its own (smaller) limits,
** so a flood of connections to the main listener never reaches it. */
static struct MHD_Daemon *start_health(us_server *s, int fd, struct limits l) {
  return MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL,
      on_health_request, s, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
      MHD_OPTION_CONNECTION_LIMIT, (unsigned)US_SERVER_HEALTH_CONNECTIONS,
      MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)US_SERVER_HEALTH_PER_IP,
      MHD_OPTION_CONNECTION_TIMEOUT, l.timeout, MHD_OPTION_EXTERNAL_LOGGER, on_log, s,
      MHD_OPTION_END);
}

/* Ends the signal thread (it wakes on a SIGHUP aimed at it and sees sig_stop). */
static void stop_sig_thread(us_server *s) {
  if (!s->sig_thread_started)
    return;
  pthread_mutex_lock(&s->mu);
  s->sig_stop = 1;
  pthread_mutex_unlock(&s->mu);
  pthread_kill(s->sig_thread, SIGHUP);
  pthread_join(s->sig_thread, NULL);
  s->sig_thread_started = 0;
}

us_server *us_server_start(const struct us_server_config *cfg, char *err, size_t errlen,
                           const char **code) {
  us_server *s = NULL;
  int fd = -1, hfd = -1;
  if ((*code = check_config(cfg, err, errlen)))
    return NULL;
  pthread_mutex_lock(&running_mu);
  if (running) {
    pthread_mutex_unlock(&running_mu);
    *code = fail(err, errlen, US_SERVER_EBUSY, "a server is already running in this process");
    return NULL;
  }
  running = 1;
  pthread_mutex_unlock(&running_mu);
  if (!server_alloc(&s, cfg)) {
    *code = fail(err, errlen, US_SERVER_ESTART, "out of memory");
    goto failed;
  }
  if ((fd = open_listener(cfg->listen, &s->port, code, err, errlen)) < 0)
    goto failed;
  if (cfg->health_listen &&
      (hfd = open_listener(cfg->health_listen, &s->health_port, code, err, errlen)) < 0)
    goto failed;
  sigemptyset(&s->sigs);
  sigaddset(&s->sigs, SIGTERM);
  sigaddset(&s->sigs, SIGINT);
  sigaddset(&s->sigs, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &s->sigs, &s->oldmask);
  if (pthread_create(&s->sig_thread, NULL, sig_main, s) != 0) {
    pthread_sigmask(SIG_SETMASK, &s->oldmask, NULL);
    *code = fail(err, errlen, US_SERVER_ESTART, "cannot start the signal thread");
    goto failed;
  }
  s->sig_thread_started = 1;
  describe_metrics();
  struct limits l = main_limits(cfg);
  s->timeout_s = l.timeout;
  s->daemon = start_daemon(s, fd, cfg->threads, l);
  if (s->daemon)
    fd = -1; /* the daemon's now: it closes it */
  const char *what = NULL;
  if (!s->daemon)
    what = "daemon";
  else if (hfd >= 0 && !(s->health = start_health(s, hfd, l)))
    what = "health listener";
  else if (pthread_create(&s->sweeper, NULL, sweeper_main, s) != 0)
    what = "deadline thread";
  if (s->health)
    hfd = -1;
  if (what) {
    if (s->health)
      MHD_stop_daemon(s->health);
    s->health = NULL;
    if (s->daemon)
      MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
    stop_sig_thread(s);
    pthread_sigmask(SIG_SETMASK, &s->oldmask, NULL);
    if (s->tls_cert && !strcmp(what, "daemon"))
      *code = fail(err, errlen, US_SERVER_ETLS, "tls: cannot start the HTTPS daemon%s%s",
                   s->mhd_err[0] ? ": " : "", s->mhd_err);
    else
      *code = fail(err, errlen, US_SERVER_ESTART, "cannot start the HTTP %s%s%s", what,
                   s->mhd_err[0] ? ": " : "", s->mhd_err);
    goto failed;
  }
  s->sweeper_started = 1;
  return s;
failed:
  /* libmicrohttpd may or may not have closed the socket it was given. */
  if (fd >= 0 && fcntl(fd, F_GETFD) != -1)
    close(fd);
  if (hfd >= 0 && fcntl(hfd, F_GETFD) != -1)
    close(hfd);
  if (s)
    server_free(s);
  pthread_mutex_lock(&running_mu);
  running = 0;
  pthread_mutex_unlock(&running_mu);
  return NULL;
}

int us_server_port(const us_server *s) { return s->port; }

us_scim *us_server_scim(us_server *s) { return s->scim; }

int us_server_health_port(const us_server *s) { return s->health ? s->health_port : 0; }

void us_server_set_ready(us_server *s, int ok, const char *reason) {
  pthread_mutex_lock(&s->mu);
  s->ready = ok;
  snprintf(s->ready_reason, sizeof s->ready_reason, "%s", reason ? reason : "");
  /* one line: /readyz answers "not ready: <reason>\n" */
  for (char *p = s->ready_reason; *p; p++)
    if (*p == '\n' || *p == '\r')
      *p = ' ';
  pthread_mutex_unlock(&s->mu);
}


enum us_server_wake us_server_wait(us_server *s, long timeout_ms, int *signo,
                                   const struct us_server_event **events) {
  struct timespec deadline;
  enum us_server_wake wake = US_SERVER_TIMEOUT;
  events_free(s->batch);
  s->batch = NULL;
  *events = NULL;
  *signo = 0;
  take_own_signals(s);
  if (timeout_ms > 0)
    us_time_monotonic_after(&deadline, timeout_ms);
  pthread_mutex_lock(&s->mu);
  for (;;) {
    if (s->sig_n) {
      *signo = s->sigq[s->sig_first];
      s->sig_first = (s->sig_first + 1) % SIGQ_MAX;
      s->sig_n--;
      wake = US_SERVER_SIGNAL;
      break;
    }
    if (s->ahead) {
      s->batch = s->ahead;
      s->ahead = s->atail = NULL;
      s->alen = 0;
      *events = s->batch;
      wake = US_SERVER_ACTIONS;
      break;
    }
    if (s->scim_poked) {
      s->scim_poked = 0;
      wake = US_SERVER_SCIM;
      break;
    }
    if (s->qhead) {
      s->batch = s->qhead;
      s->qhead = s->qtail = NULL;
      s->qlen = s->qbytes = 0;
      *events = s->batch;
      wake = US_SERVER_EVENTS;
      break;
    }
    if (timeout_ms == 0)
      break;
    if (timeout_ms < 0)
      pthread_cond_wait(&s->cv, &s->mu);
    else if (pthread_cond_timedwait(&s->cv, &s->mu, &deadline) == ETIMEDOUT)
      timeout_ms = 0; /* one last look, then time out */
  }
  pthread_mutex_unlock(&s->mu);
  return wake;
}

int us_server_stopping(us_server *s) {
  take_own_signals(s);
  pthread_mutex_lock(&s->mu);
  int stop = s->stopping;
  pthread_mutex_unlock(&s->mu);
  return stop;
}

void us_server_stats(us_server *s, struct us_server_stats *out) {
  pthread_mutex_lock(&s->mu);
  *out = s->st;
  out->queued = s->qlen;
  pthread_mutex_unlock(&s->mu);
}

void us_server_close(us_server *s) {
  if (!s)
    return;
  stop_sweeper(s);
  us_scim_stop(s->scim); /* the worker ends; what still waits is answered 503 */
  if (s->health)
    MHD_stop_daemon(s->health);
  MHD_stop_daemon(s->daemon);
  stop_sig_thread(s);
  pthread_sigmask(SIG_SETMASK, &s->oldmask, NULL);
  server_free(s);
  pthread_mutex_lock(&running_mu);
  running = 0;
  pthread_mutex_unlock(&running_mu);
}
