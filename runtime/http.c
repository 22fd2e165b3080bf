/*
** http.c: the HTTP engine (include/usersync/http.h) on one libcurl multi
** handle.
**
** Provides: us_http_* (engine, requests, driving loop, counters).
** Uses: libcurl (multi interface, URL API), http_util.c's pure helpers.
**
** A request moves through these states:
**   READY   in its host's FIFO, waiting for a per-host slot (and the governor)
**   SLEEP   in the engine's timer list (retry backoff or governor delay)
**   ACTIVE  an easy handle in the multi handle
**   DONEQ   completed, in the engine's done queue until its callback runs
**   DONE    callback run (or none); the response stays until release
**   DETACHED the engine was freed first; only us_http_release() remains
** Waits never sleep: they are timers the loop honours through the timeout it
** gives curl_multi_poll(), so other transfers keep running.
*/
#include <ctype.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "usersync/http.h"
#include "usersync/metrics.h"
#include "usersync/queue.h"
#include "usersync/timeutil.h"

#ifndef USERSYNC_VERSION
#define USERSYNC_VERSION "0"
#endif

enum req_state { ST_READY, ST_SLEEP, ST_ACTIVE, ST_DONEQ, ST_DONE, ST_DETACHED };

/* How many idle easy handles an engine keeps for reuse. */
#define IDLE_EASY 64

/* A growable list of owned name/value pairs. */
struct hlist {
  struct us_http_header *v;
  size_t n, cap;
};

struct host {
  struct host *next;
  char *key;
  /* the last URL prefix ("scheme://authority", verbatim) found to be this
  ** host: a URL starting with it needs no parse (host_of) */
  char *prefix;
  size_t prefix_len;
  struct us_queue ready; /* READY requests, FIFO */
  struct us_http_host_stats st;
  struct us_http_status_count *counts;
  size_t ncounts, capcounts;
};

struct us_http_req {
  us_http *e;
  struct host *host; /* NULL when the URL was rejected */
  enum req_state state;
  struct us_qlink ql; /* host FIFO, sleep list or done queue */
  us_http_req *aprev, *anext; /* every live handle of the engine */

  /* the request, copied at submit */
  char *method, *url;
  struct hlist req_headers;
  char *body;
  size_t body_len;
  char *user, *password; /* Basic credentials or NULL; wiped when freed */
  long timeout_ms, max_wait_ms;
  size_t max_size;
  int max_retries, follow, retry_unsafe, retry_headers;
  us_http_retry_fn on_retry;
  us_http_done_fn done;
  void *ud;
  us_http_governor_fn governor;
  void *governor_ud;

  /* progress */
  CURL *easy;
  struct curl_slist *slist;
  int64_t t_submit, wake;
  long waited_ms, prev_wait_ms;
  int attempts, too_big;
  char errbuf[CURL_ERROR_SIZE];

  /* current attempt's response */
  long status;
  struct hlist resp_headers;
  char *rbody;
  size_t rbody_n, rbody_cap;
  char *eff_url;
  char message[1024];
  struct us_http_response resp; /* published view */
};

struct us_http {
  CURLM *multi;
  struct us_http_options o;
  char *ca_file, *user_agent;
  struct host *hosts;
  size_t nhosts;
  struct us_queue sleeping; /* SLEEP, unordered */
  struct us_queue done;     /* DONEQ, FIFO */
  us_http_req *all;                   /* every handle not yet released */
  int pending;                        /* READY + SLEEP + ACTIVE */
  uint64_t rng;
  /* easy handles of finished attempts, reset, for the next attempts: a
  ** fresh handle per attempt cost its allocations (receive buffer
  ** included) every time */
  CURL *idle[IDLE_EASY];
  int nidle;
  /* SIGPIPE ignored while curl runs (pipe_hold): nesting depth, the
  ** disposition to restore, whether it was changed */
  int pipe_depth, pipe_changed;
  struct sigaction pipe_old;
};

/* ---------- small utilities ---------- */

/* SIGPIPE. A write to a connection the server closed must not end the
** process: curl's own socket writes use MSG_NOSIGNAL where the system has
** it, but a TLS library's may not. Left to itself (CURLOPT_NOSIGNAL 0) curl
** ignores SIGPIPE around each transfer on every call into it (three
** sigaction calls per transfer in flight per curl_multi_perform); instead
** the handles say NOSIGNAL and the engine ignores SIGPIPE once around each
** stretch of curl calls (a step of the loop, a transfer stopped, the
** engine freed) and restores it after, so a write to a closed stdout
** outside them ends the process as before. pipe_hold nests. */
static void pipe_hold(us_http *e) {
  if (e->pipe_depth++ > 0)
    return;
  struct sigaction ign;
  memset(&ign, 0, sizeof ign);
  ign.sa_handler = SIG_IGN;
  sigemptyset(&ign.sa_mask);
  e->pipe_changed = sigaction(SIGPIPE, &ign, &e->pipe_old) == 0 && e->pipe_old.sa_handler != SIG_IGN;
}

static void pipe_release(us_http *e) {
  if (--e->pipe_depth > 0)
    return;
  if (e->pipe_changed)
    sigaction(SIGPIPE, &e->pipe_old, NULL);
  e->pipe_changed = 0;
}

/* Whether curl resolves names in a thread (no alarm() for DNS timeouts),
** so that its handles may say CURLOPT_NOSIGNAL. */
static int async_dns(void) {
  static int v = -1;
  if (v < 0) {
    const curl_version_info_data *d = curl_version_info(CURLVERSION_NOW);
    v = d && (d->features & CURL_VERSION_ASYNCHDNS) ? 1 : 0;
  }
  return v;
}

static int64_t now_ms(void) { return (int64_t)(us_time_monotonic() * 1000); }

/* xorshift64*: uniform double in [0,1). */
static double rnd01(us_http *e) {
  e->rng ^= e->rng >> 12;
  e->rng ^= e->rng << 25;
  e->rng ^= e->rng >> 27;
  return (double)((e->rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static char *dupn(const char *s, size_t n) {
  char *p = malloc(n + 1);
  if (p) {
    if (n)
      memcpy(p, s, n);
    p[n] = '\0';
  }
  return p;
}

static char *dup0(const char *s) { return dupn(s, strlen(s)); }

static void hlist_clear(struct hlist *l) {
  for (size_t i = 0; i < l->n; i++) {
    free((char *)l->v[i].name);
    free((char *)l->v[i].value);
  }
  l->n = 0;
}

static void hlist_free(struct hlist *l) {
  hlist_clear(l);
  free(l->v);
  l->v = NULL;
  l->cap = 0;
}

/* Appends a copy of name[0..nn) / value[0..vn). 0 ok, -1 no memory. */
static int hlist_add(struct hlist *l, const char *name, size_t nn, const char *value, size_t vn) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 16;
    struct us_http_header *v = realloc(l->v, cap * sizeof *v);
    if (!v)
      return -1;
    l->v = v;
    l->cap = cap;
  }
  char *n = dupn(name, nn), *val = dupn(value, vn);
  if (!n || !val) {
    free(n);
    free(val);
    return -1;
  }
  l->v[l->n].name = n;
  l->v[l->n].value = val;
  l->n++;
  return 0;
}

static int is_tchar(int c) { return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c) != NULL); }

static int is_token(const char *s) {
  if (!s || !*s)
    return 0;
  for (; *s; s++)
    if (!is_tchar((unsigned char)*s))
      return 0;
  return 1;
}

static int is_field_value(const char *s) {
  for (; *s; s++)
    if (*s == '\r' || *s == '\n')
      return 0;
  return 1;
}

/* ---------- hosts and counters ---------- */

static struct host *host_get(us_http *e, const char *key) {
  for (struct host *h = e->hosts; h; h = h->next)
    if (strcmp(h->key, key) == 0)
      return h;
  struct host *h = calloc(1, sizeof *h);
  if (!h || !(h->key = dup0(key))) {
    free(h);
    return NULL;
  }
  h->next = e->hosts;
  e->hosts = h;
  e->nhosts++;
  return h;
}

static void host_count_status(struct host *h, long status) {
  for (size_t i = 0; i < h->ncounts; i++)
    if (h->counts[i].status == status) {
      h->counts[i].count++;
      return;
    }
  if (h->ncounts == h->capcounts) {
    size_t cap = h->capcounts ? h->capcounts * 2 : 8;
    struct us_http_status_count *c = realloc(h->counts, cap * sizeof *c);
    if (!c)
      return; /* counters are best effort */
    h->counts = c;
    h->capcounts = cap;
  }
  h->counts[h->ncounts].status = status;
  h->counts[h->ncounts].count = 1;
  h->ncounts++;
}

/* "scheme://host:port" of an http(s) URL, or NULL (bad URL or scheme). */
static char *host_key(const char *url) {
  CURLU *u = curl_url();
  char *scheme = NULL, *host = NULL, *port = NULL, *key = NULL;
  if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
      (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0)) {
    size_t n = strlen(scheme) + strlen(host) + strlen(port) + 5;
    key = malloc(n);
    if (key)
      snprintf(key, n, "%s://%s:%s", scheme, host, port);
  }
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(u);
  return key;
}

/* Length of url's "scheme://authority" (up to the path, query or
** fragment), or 0 when it has no "://". */
static size_t url_prefix_len(const char *url) {
  const char *p = strstr(url, "://");
  if (!p)
    return 0;
  return (size_t)(p + 3 - url) + strcspn(p + 3, "/?#");
}

/* The host of url, or NULL (a bad URL or scheme; *oom set when out of
** memory). A URL whose scheme and authority are byte for byte those of
** a host's last one is that host: the path, query and fragment do not
** change the scheme, host or port, so only a new prefix is parsed
** (host_key, curl's URL parser: a share of each request's CPU). */
static struct host *host_of(us_http *e, const char *url, int *oom) {
  *oom = 0;
  size_t n = url_prefix_len(url);
  /* the rest must be what curl's parser takes without a look: printable
  ** ASCII (it refuses control bytes and spaces), not huge (it refuses
  ** over 8 MB); anything else is parsed in full */
  const char *rest = url + n;
  size_t i = 0;
  while (rest[i] > 0x20 && rest[i] < 0x7f && i < 65536)
    i++;
  if (rest[i])
    n = 0; /* parsed in full below (and not remembered) */
  if (n > 0)
    for (struct host *h = e->hosts; h; h = h->next)
      if (h->prefix_len == n && memcmp(h->prefix, url, n) == 0)
        return h;
  char *key = host_key(url);
  if (!key)
    return NULL;
  struct host *h = host_get(e, key);
  free(key);
  if (!h) {
    *oom = 1;
    return NULL;
  }
  char *p = n > 0 ? malloc(n + 1) : NULL;
  if (p) { /* (no copy: the next URL is parsed again) */
    memcpy(p, url, n);
    p[n] = '\0';
    free(h->prefix);
    h->prefix = p;
    h->prefix_len = n;
  }
  return h;
}

/* The URL as it may appear in messages: no credentials, no query. */
static void safe_url(const char *url, char *out, size_t outsz) {
  CURLU *u = curl_url();
  char *s = NULL;
  if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
      curl_url_set(u, CURLUPART_USER, NULL, 0) == CURLUE_OK &&
      curl_url_set(u, CURLUPART_PASSWORD, NULL, 0) == CURLUE_OK &&
      curl_url_set(u, CURLUPART_QUERY, NULL, 0) == CURLUE_OK &&
      curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_URL, &s, 0) == CURLUE_OK)
    snprintf(out, outsz, "%s", s);
  else
    snprintf(out, outsz, "(invalid URL)");
  curl_free(s);
  curl_url_cleanup(u);
}

/* ---------- queues ---------- */

#define REQ_OF(l) US_QUEUE_ENTRY(l, us_http_req, ql)

static void ready_push(us_http_req *h) {
  h->state = ST_READY;
  us_queue_push(&h->host->ready, &h->ql);
  h->host->st.queued++;
}

static void sleep_push(us_http_req *h, long delay_ms) {
  us_http *e = h->e;
  h->state = ST_SLEEP;
  h->wake = now_ms() + (delay_ms > 0 ? delay_ms : 0);
  us_queue_push_front(&e->sleeping, &h->ql);
}

/* Unlinks h from whatever queue its state puts it in (not the multi). */
static void unqueue(us_http_req *h) {
  us_http *e = h->e;
  if (h->state == ST_READY) {
    us_queue_remove(&h->host->ready, &h->ql);
    h->host->st.queued--;
  } else if (h->state == ST_SLEEP) {
    us_queue_remove(&e->sleeping, &h->ql);
  } else if (h->state == ST_DONEQ) {
    us_queue_remove(&e->done, &h->ql);
  }
}

/* ---------- responses ---------- */

static void resp_reset(us_http_req *h) {
  h->status = 0;
  hlist_clear(&h->resp_headers);
  h->rbody_n = 0;
  h->too_big = 0;
  h->errbuf[0] = '\0';
  h->message[0] = '\0';
}

/* Refreshes the published view from the attempt's buffers. */
static void resp_publish(us_http_req *h, const char *code) {
  struct us_http_response *r = &h->resp;
  r->status = h->status;
  r->headers = h->resp_headers.v;
  r->nheaders = h->resp_headers.n;
  if (h->rbody)
    h->rbody[h->rbody_n] = '\0';
  r->body = h->rbody ? h->rbody : "";
  r->body_len = h->rbody_n;
  r->time = (double)(now_ms() - h->t_submit) / 1000.0;
  r->retries = h->attempts > 0 ? h->attempts - 1 : 0;
  r->code = code;
  r->message = h->message;
  r->url = h->eff_url ? h->eff_url : h->url;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud) {
  us_http_req *h = ud;
  size_t n = size * nmemb;
  if (h->rbody_n + n > h->max_size) {
    h->too_big = 1;
    return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
  }
  if (h->rbody_n + n + 1 > h->rbody_cap) {
    size_t cap = h->rbody_cap ? h->rbody_cap : 4096;
    while (cap < h->rbody_n + n + 1)
      cap *= 2;
    char *b = realloc(h->rbody, cap);
    if (!b)
      return 0;
    h->rbody = b;
    h->rbody_cap = cap;
  }
  memcpy(h->rbody + h->rbody_n, data, n);
  h->rbody_n += n;
  return n;
}

/* One header line (CRLF included, not NUL-terminated). A status line starts a
** new header set (redirects, 100 Continue, proxy CONNECT); folded lines join
** the previous value. Names are lowercased, values trimmed. */
static size_t on_header(char *data, size_t size, size_t nmemb, void *ud) {
  us_http_req *h = ud;
  size_t n = size * nmemb, len = n;
  while (len > 0 && (data[len - 1] == '\r' || data[len - 1] == '\n'))
    len--;
  if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
    hlist_clear(&h->resp_headers);
    return n;
  }
  if (len == 0)
    return n;
  struct hlist *l = &h->resp_headers;
  if ((data[0] == ' ' || data[0] == '\t') && l->n > 0) {
    size_t a = 0;
    while (a < len && (data[a] == ' ' || data[a] == '\t'))
      a++;
    const char *old = l->v[l->n - 1].value;
    size_t on = strlen(old);
    char *joined = malloc(on + 1 + (len - a) + 1);
    if (!joined)
      return 0;
    memcpy(joined, old, on);
    joined[on] = ' ';
    memcpy(joined + on + 1, data + a, len - a);
    joined[on + 1 + len - a] = '\0';
    free((char *)old);
    l->v[l->n - 1].value = joined;
    return n;
  }
  const char *colon = memchr(data, ':', len);
  if (!colon || colon == data)
    return n; /* not a field line: ignore */
  size_t nn = (size_t)(colon - data), a = nn + 1, b = len;
  while (a < b && (data[a] == ' ' || data[a] == '\t'))
    a++;
  while (b > a && (data[b - 1] == ' ' || data[b - 1] == '\t'))
    b--;
  if (hlist_add(l, data, nn, data + a, b - a) != 0)
    return 0;
  char *name = (char *)l->v[l->n - 1].name;
  for (char *p = name; *p; p++)
    *p = (char)tolower((unsigned char)*p);
  return n;
}

/* ---------- errors and retry policy ---------- */

static const char *map_error(CURLcode rc, int too_big) {
  if (too_big)
    return US_HTTP_ETOOBIG;
  switch (rc) {
  case CURLE_OK:
    return NULL;
  case CURLE_COULDNT_CONNECT:
    return US_HTTP_ECONNREFUSED;
  case CURLE_OPERATION_TIMEDOUT:
    return US_HTTP_ETIMEDOUT;
  case CURLE_RECV_ERROR:
  case CURLE_SEND_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
    return US_HTTP_ECONNRESET;
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_USE_SSL_FAILED:
    return US_HTTP_ETLS;
  case CURLE_COULDNT_RESOLVE_HOST:
    return US_HTTP_EDNS;
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_PROXY:
    return US_HTTP_EPROXY;
  case CURLE_FILESIZE_EXCEEDED:
    return US_HTTP_ETOOBIG;
  case CURLE_WEIRD_SERVER_REPLY:
  case CURLE_BAD_CONTENT_ENCODING:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_UNSUPPORTED_PROTOCOL: /* HTTP/0.9 reply, or redirect to another scheme */
    return US_HTTP_EPROTO;
  case CURLE_TOO_MANY_REDIRECTS:
    return US_HTTP_EREDIRECT;
  case CURLE_URL_MALFORMAT:
    return US_HTTP_EURL;
  case CURLE_OUT_OF_MEMORY:
    return US_HTTP_ENOMEM;
  default:
    return US_HTTP_EIO;
  }
}

static int idempotent(const char *m) {
  return !strcmp(m, "GET") || !strcmp(m, "HEAD") || !strcmp(m, "OPTIONS") || !strcmp(m, "PUT") ||
         !strcmp(m, "DELETE") || !strcmp(m, "TRACE");
}

/* Whether this attempt's outcome is worth another try (limits aside).
** Only what cannot have acted is repeated for a POST or PATCH: a refused
** connection and a 429 (the rate limiter turns a request away before it is
** processed). A 5xx or a lost answer may follow a write that was applied (a
** gateway's 502/503/504 after the backend wrote), so those are repeated for
** idempotent methods only, where doing it twice is the same as once. */
static int retryable(const us_http_req *h, const char *code) {
  int safe = h->retry_unsafe || idempotent(h->method);
  if (code)
    return !strcmp(code, US_HTTP_ECONNREFUSED) ||
           (safe && (!strcmp(code, US_HTTP_ECONNRESET) || !strcmp(code, US_HTTP_ETIMEDOUT)));
  switch (h->status) {
  case 429:
    return 1;
  case 500:
  case 502:
  case 503:
  case 504:
    return safe;
  default:
    return 0;
  }
}

/* ---------- attempts ---------- */

static struct curl_slist *build_headers(us_http_req *h) {
  struct curl_slist *sl = NULL, *t;
  int has_ctype = 0;
  for (size_t i = 0; i < h->req_headers.n; i++) {
    const char *n = h->req_headers.v[i].name, *v = h->req_headers.v[i].value;
    if (strcasecmp(n, "content-type") == 0)
      has_ctype = 1;
    size_t len = strlen(n) + strlen(v) + 3;
    char *line = malloc(len);
    if (!line)
      goto fail;
    if (*v)
      snprintf(line, len, "%s: %s", n, v);
    else
      snprintf(line, len, "%s;", n); /* curl's syntax for an empty value */
    t = curl_slist_append(sl, line);
    free(line);
    if (!t)
      goto fail;
    sl = t;
  }
  if (!(t = curl_slist_append(sl, "Expect:")))
    goto fail;
  sl = t;
  if (!has_ctype) { /* send no Content-Type the caller did not ask for (curl's
                    ** form type on a body-less POST/PUT included) */
    if (!(t = curl_slist_append(sl, "Content-Type:")))
      goto fail;
    sl = t;
  }
  return sl;
fail:
  curl_slist_free_all(sl);
  return NULL;
}

static void set_method(us_http_req *h, CURL *c) {
  const char *m = h->method;
  if (!strcmp(m, "HEAD")) {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    return;
  }
  if (!strcmp(m, "GET") && !h->body) {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    return;
  }
  int sends_body = h->body || !strcmp(m, "POST") || !strcmp(m, "PUT") || !strcmp(m, "PATCH");
  if (sends_body) { /* an empty body still sends Content-Length: 0 */
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)h->body_len);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, h->body ? h->body : "");
  }
  if (strcmp(m, "POST") != 0)
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, m);
}

/* Starts one attempt. 0 ok; -1 when curl refused (h untouched otherwise). */
static int start_attempt(us_http_req *h) {
  us_http *e = h->e;
  resp_reset(h);
  CURL *c = e->nidle > 0 ? e->idle[--e->nidle] : curl_easy_init(); /* an idle one is reset */
  struct curl_slist *sl = build_headers(h);
  if (!c || !sl) {
    curl_easy_cleanup(c);
    curl_slist_free_all(sl);
    return -1;
  }
  curl_easy_setopt(c, CURLOPT_URL, h->url);
  if (h->user && h->password) {
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    curl_easy_setopt(c, CURLOPT_USERNAME, h->user);
    curl_easy_setopt(c, CURLOPT_PASSWORD, h->password);
  }
  curl_easy_setopt(c, CURLOPT_PRIVATE, h);
  /* The engine ignores SIGPIPE around its curl calls (pipe_hold); with a
  ** resolver that is not threaded curl needs signals (alarm() for DNS
  ** timeouts) and ignores SIGPIPE itself. */
  if (async_dns())
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, h->follow ? 1L : 0L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, h->timeout_ms);
  long ct = e->o.connect_timeout_ms;
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, ct < h->timeout_ms ? ct : h->timeout_ms);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, e->o.verify ? 1L : 0L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, e->o.verify ? 2L : 0L);
  if (e->ca_file)
    curl_easy_setopt(c, CURLOPT_CAINFO, e->ca_file);
  curl_easy_setopt(c, CURLOPT_USERAGENT, e->user_agent);
  curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
  curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)h->max_size);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, sl);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, h);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, h);
  set_method(h, c);
  if (curl_multi_add_handle(e->multi, c) != CURLM_OK) {
    curl_easy_cleanup(c);
    curl_slist_free_all(sl);
    return -1;
  }
  h->easy = c;
  h->slist = sl;
  h->state = ST_ACTIVE;
  h->attempts++;
  h->host->st.active++;
  h->host->st.attempts++;
  return 0;
}

/* Takes the easy handle out of the multi and keeps it, reset, for the next
** attempt (or frees it when enough are kept). */
static void stop_transfer(us_http_req *h) {
  if (!h->easy)
    return;
  us_http *e = h->e;
  pipe_hold(e);
  curl_multi_remove_handle(e->multi, h->easy);
  if (e->nidle < IDLE_EASY) {
    curl_easy_reset(h->easy);
    e->idle[e->nidle++] = h->easy;
  } else {
    curl_easy_cleanup(h->easy);
  }
  pipe_release(e);
  curl_slist_free_all(h->slist);
  h->easy = NULL;
  h->slist = NULL;
  if (h->host)
    h->host->st.active--;
}

/* Completes h with `code` (NULL: the response as it stands). */
static void complete(us_http_req *h, const char *code, int gave_up) {
  us_http *e = h->e;
  resp_publish(h, code);
  h->resp.gave_up = gave_up;
  if (h->host) {
    if (code)
      h->host->st.errors++;
    if (gave_up)
      h->host->st.gave_up++;
  }
  if (h->state == ST_READY || h->state == ST_SLEEP || h->state == ST_ACTIVE)
    e->pending--;
  h->state = ST_DONEQ;
  us_queue_push(&e->done, &h->ql);
}

static void fail(us_http_req *h, const char *code, const char *what) {
  char u[256];
  safe_url(h->url, u, sizeof u);
  snprintf(h->message, sizeof h->message, "%.32s %s: %s", h->method, u, what);
  complete(h, code, 0);
}

/* Adds Okta's retry headers for retry n. */
static void okta_retry_headers(us_http_req *h, int n) {
  char num[24];
  snprintf(num, sizeof num, "%d", n);
  us_http_req_set_header(h, "X-Okta-Retry-Count", num);
  const char *id = us_http_header(&h->resp, "x-okta-request-id");
  if (id && *id && is_field_value(id))
    us_http_req_set_header(h, "X-Okta-Retry-For", id);
}

/* The wait before the next retry, or -1 to give up. */
static long next_wait(us_http_req *h, const char *code) {
  us_http *e = h->e;
  int n = h->attempts; /* retry number about to be made */
  long d = code ? -1 : us_http_server_delay(&h->resp);
  if (d <= 0)
    d = us_http_backoff(e->o.jitter, e->o.backoff_base_ms, e->o.backoff_max_ms, n, h->prev_wait_ms,
                        rnd01(e));
  if (h->waited_ms + d > h->max_wait_ms)
    return -1;
  return d;
}

/* Counts an attempt in family (usersync_http_requests_total or
** usersync_http_retries_total) by host ("host:port") and status (the HTTP
** status, or the transport error code such as "ECONNREFUSED"). */
static void metrics_count(const char *family, const us_http_req *h, const char *code) {
  char status[16];
  const char *host = h->host->key, *sep = strstr(host, "://");
  if (sep)
    host = sep + 3;
  if (!code)
    snprintf(status, sizeof status, "%ld", h->status);
  const char *kv[] = {"host", host, "status", code ? code : status, NULL};
  us_metrics_add(family, kv, 1);
}

/* A transfer finished: publish, count, then retry or complete. */
static void finish_attempt(us_http_req *h, CURLcode rc) {
  us_http *e = h->e;
  long status = 0;
  char *eff = NULL;
  curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(h->easy, CURLINFO_EFFECTIVE_URL, &eff);
  if (eff && (!h->eff_url || strcmp(eff, h->eff_url) != 0)) {
    free(h->eff_url);
    h->eff_url = dup0(eff);
  }
  h->status = status;
  const char *code = map_error(rc, h->too_big);
  long connect_status = 0;
  curl_easy_getinfo(h->easy, CURLINFO_HTTP_CONNECTCODE, &connect_status);
  if (code && connect_status >= 300)
    code = US_HTTP_EPROXY; /* the proxy refused the CONNECT tunnel */
  if (code) {
    char u[256];
    safe_url(h->url, u, sizeof u);
    if (!strcmp(code, US_HTTP_ETOOBIG))
      snprintf(h->message, sizeof h->message, "%.32s %s: response body larger than %zu bytes",
               h->method, u, h->max_size);
    else
      snprintf(h->message, sizeof h->message, "%.32s %s: %s", h->method, u,
               h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc));
  }
  stop_transfer(h);
  host_count_status(h->host, code ? 0 : status);
  metrics_count("usersync_http_requests_total", h, code);
  resp_publish(h, code);
  if (!code && e->o.observe)
    e->o.observe(e->o.observe_ud, h->host->key, h->method, &h->resp);

  if (!retryable(h, code)) {
    complete(h, code, 0);
    return;
  }
  long wait = h->attempts <= h->max_retries ? next_wait(h, code) : -1;
  if (wait < 0) {
    if (!code)
      snprintf(h->message, sizeof h->message, "gave up after %d retr%s (status %ld)",
               h->attempts - 1, h->attempts == 2 ? "y" : "ies", h->status);
    complete(h, code, 1);
    return;
  }
  int n = h->attempts;
  if (h->retry_headers == US_HTTP_RETRY_HEADERS_OKTA)
    okta_retry_headers(h, n);
  if (h->on_retry)
    h->on_retry(h, &h->resp, n, h->ud);
  h->waited_ms += wait;
  h->prev_wait_ms = wait;
  h->host->st.retries++;
  metrics_count("usersync_http_retries_total", h, code);
  sleep_push(h, wait);
}

/* ---------- the loop ---------- */

static void wake_due(us_http *e) {
  int64_t t = now_ms();
  for (struct us_qlink *l = e->sleeping.head, *next; l; l = next) {
    next = l->next;
    us_http_req *h = REQ_OF(l);
    if (h->wake <= t) {
      us_queue_remove(&e->sleeping, l);
      ready_push(h);
    }
  }
}

/* Starts queued requests while their host has a free slot. */
static void start_ready(us_http *e) {
  for (struct host *ho = e->hosts; ho; ho = ho->next) {
    struct us_qlink *l;
    while ((l = us_queue_pop_below(&ho->ready, ho->st.active, e->o.per_host))) {
      us_http_req *h = REQ_OF(l);
      ho->st.queued--;
      us_http_governor_fn gov = h->governor ? h->governor : e->o.governor;
      void *gud = h->governor ? h->governor_ud : e->o.governor_ud;
      if (gov) {
        long d = gov(gud, ho->key, h->method, h->url);
        if (d > 0) {
          ho->st.governed++;
          sleep_push(h, d);
          continue;
        }
      }
      h->state = ST_SLEEP; /* neither queued nor active while starting */
      if (start_attempt(h) != 0)
        fail(h, US_HTTP_ENOMEM, "cannot start the transfer");
    }
  }
}

static int collect(us_http *e) {
  int n = 0, left;
  CURLMsg *m;
  while ((m = curl_multi_info_read(e->multi, &left))) {
    if (m->msg != CURLMSG_DONE)
      continue;
    us_http_req *h = NULL;
    CURLcode rc = m->data.result;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&h);
    finish_attempt(h, rc);
    n++;
  }
  return n;
}

/* Runs callbacks of completed requests. A callback may submit, cancel or
** release (its own handle too); h is not touched after its callback. */
static int dispatch(us_http *e) {
  int n = 0;
  while (e->done.head) {
    us_http_req *h = REQ_OF(e->done.head);
    us_queue_remove(&e->done, &h->ql);
    h->state = ST_DONE;
    n++;
    if (h->done)
      h->done(h, &h->resp, h->ud);
  }
  return n;
}

/* One turn of the loop: starts what may start, lets curl work, collects
** the finished transfers and runs their callbacks. When something finished,
** what its callbacks submitted (a target's next page or operation in the
** freed slot) and what waited for a slot start in the same turn, so they
** are on the wire before the caller works on the results (one
** curl_multi_perform more per turn with completions, as before the
** callbacks, not after them: each perform checks every transfer). */
static int step(us_http *e) {
  int running;
  pipe_hold(e);
  wake_due(e);
  start_ready(e);
  curl_multi_perform(e->multi, &running);
  int finished = collect(e);
  pipe_release(e);
  int n = dispatch(e);
  if (finished > 0) {
    pipe_hold(e);
    wake_due(e);
    start_ready(e);
    curl_multi_perform(e->multi, &running);
    pipe_release(e);
  }
  return n;
}

/* Milliseconds until the next timer, or -1 if none. */
static long next_timer(us_http *e) {
  int64_t t = now_ms(), best = -1;
  for (struct us_qlink *l = e->sleeping.head; l; l = l->next)
    if (best < 0 || REQ_OF(l)->wake < best)
      best = REQ_OF(l)->wake;
  if (best < 0)
    return -1;
  return best <= t ? 0 : (long)(best - t);
}

int us_http_run_once(us_http *e, long timeout_ms) {
  if (step(e) > 0 || e->pending == 0 || timeout_ms <= 0)
    return e->pending;
  long t = timeout_ms, nt = next_timer(e);
  if (nt >= 0 && nt < t)
    t = nt;
  if (t > 0)
    curl_multi_poll(e->multi, NULL, 0, (int)t, NULL);
  step(e);
  return e->pending;
}

static int finished(const us_http_req *h) {
  return !h || h->state == ST_DONE || h->state == ST_DETACHED;
}

size_t us_http_wait(us_http *e, us_http_req *const *hs, size_t n, long timeout_ms) {
  int64_t deadline = timeout_ms >= 0 ? now_ms() + timeout_ms : -1;
  size_t first = 0; /* hs[0..first) are finished; a finished handle stays so */
  for (;;) {
    while (first < n && finished(hs[first]))
      first++;
    if (first == n)
      return 0;
    long slice = 1000;
    if (deadline >= 0) {
      int64_t left = deadline - now_ms();
      if (left <= 0)
        break;
      if (left < slice)
        slice = (long)left;
    }
    if (e->pending == 0 && !e->done.head)
      break; /* nothing can make progress (a foreign handle) */
    us_http_run_once(e, slice);
  }
  size_t k = 0;
  for (size_t i = first; i < n; i++)
    k += !finished(hs[i]);
  return k;
}

void us_http_run(us_http *e) {
  while (e->pending > 0 || e->done.head)
    us_http_run_once(e, 1000);
}

/* ---------- engine ---------- */

void us_http_options_init(struct us_http_options *o) {
  memset(o, 0, sizeof *o);
  o->verify = 1;
  o->timeout_ms = 30000;
  o->connect_timeout_ms = 10000;
  o->max_size = (size_t)32 << 20;
  o->max_retries = 3;
  o->per_host = 8;
  o->backoff_base_ms = 500;
  o->backoff_max_ms = 30000;
  o->max_wait_ms = 120000;
  o->jitter = US_HTTP_JITTER_FULL;
}

us_http *us_http_new(const struct us_http_options *o, const char **err) {
  static int global_ok = -1;
  const char *dummy;
  if (!err)
    err = &dummy;
  if (global_ok < 0) /* once per process; libcurl's global state is not ours to free */
    global_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  if (!global_ok) {
    *err = "libcurl failed to initialise";
    return NULL;
  }
  us_http *e = calloc(1, sizeof *e);
  if (!e) {
    *err = "out of memory";
    return NULL;
  }
  if (o)
    e->o = *o;
  else
    us_http_options_init(&e->o);
  if (e->o.per_host < 1)
    e->o.per_host = 1;
  if (e->o.timeout_ms <= 0)
    e->o.timeout_ms = 30000;
  if (e->o.connect_timeout_ms <= 0)
    e->o.connect_timeout_ms = 10000;
  if (e->o.max_size == 0)
    e->o.max_size = (size_t)32 << 20;
  if (e->o.max_retries < 0)
    e->o.max_retries = 0;
  if (e->o.backoff_base_ms < 1)
    e->o.backoff_base_ms = 1;
  if (e->o.backoff_max_ms < e->o.backoff_base_ms)
    e->o.backoff_max_ms = e->o.backoff_base_ms;
  if (e->o.max_wait_ms < 0)
    e->o.max_wait_ms = 0;
  e->ca_file = e->o.ca_file ? dup0(e->o.ca_file) : NULL;
  e->user_agent = dup0(e->o.user_agent ? e->o.user_agent : "usersync/" USERSYNC_VERSION);
  e->o.ca_file = e->ca_file;
  e->o.user_agent = e->user_agent;
  e->rng = e->o.seed ? e->o.seed : ((uint64_t)time(NULL) << 20) ^ (uint64_t)(uintptr_t)e;
  if (e->rng == 0)
    e->rng = 88172645463325252ULL;
  e->multi = curl_multi_init();
  if (!e->multi || !e->user_agent || (o && o->ca_file && !e->ca_file)) {
    *err = e->multi ? "out of memory" : "curl_multi_init failed";
    us_http_free(e);
    return NULL;
  }
  return e;
}

/* Frees a string that may hold a secret, zeroed first. */
static void free_secret(char *s) {
  if (s) {
    memset(s, 0, strlen(s));
    free(s);
  }
}

static void req_free(us_http_req *h) {
  free_secret(h->user);
  free_secret(h->password);
  free(h->method);
  free(h->url);
  hlist_free(&h->req_headers);
  free(h->body);
  hlist_free(&h->resp_headers);
  free(h->rbody);
  free(h->eff_url);
  free(h);
}

void us_http_free(us_http *e) {
  if (!e)
    return;
  pipe_hold(e);
  for (us_http_req *h = e->all; h; h = h->anext) {
    if (h->state == ST_ACTIVE)
      stop_transfer(h);
    if (h->state != ST_DONE && h->state != ST_DONEQ) {
      snprintf(h->message, sizeof h->message, "the HTTP engine was closed");
      resp_publish(h, US_HTTP_ECANCELED);
    }
    h->state = ST_DETACHED;
    h->e = NULL;
    h->host = NULL;
    h->aprev = NULL; /* the list itself goes away with e */
  }
  for (us_http_req *h = e->all, *next; h; h = next) {
    next = h->anext;
    h->anext = NULL;
  }
  while (e->hosts) {
    struct host *ho = e->hosts;
    e->hosts = ho->next;
    free(ho->key);
    free(ho->prefix);
    free(ho->counts);
    free(ho);
  }
  while (e->nidle > 0)
    curl_easy_cleanup(e->idle[--e->nidle]);
  if (e->multi)
    curl_multi_cleanup(e->multi);
  pipe_release(e);
  free(e->ca_file);
  free(e->user_agent);
  free(e);
}

static int copy_request(us_http_req *h, const struct us_http_request *r, const char **err) {
  const char *m = r->method ? r->method : "GET";
  if (!is_token(m)) {
    *err = "bad method (expected an HTTP token such as GET)";
    return -1;
  }
  if (!r->url || !*r->url) {
    *err = "missing URL";
    return -1;
  }
  for (size_t i = 0; i < r->nheaders; i++) {
    if (!is_token(r->headers[i].name)) {
      *err = "bad header name";
      return -1;
    }
    if (!r->headers[i].value || !is_field_value(r->headers[i].value)) {
      *err = "bad header value (CR or LF)"; /* never echo the value: it may be a secret */
      return -1;
    }
  }
  *err = "out of memory";
  if (!(h->method = dup0(m)) || !(h->url = dup0(r->url)))
    return -1;
  for (char *p = h->method; *p; p++)
    *p = (char)toupper((unsigned char)*p);
  for (size_t i = 0; i < r->nheaders; i++)
    if (us_http_req_set_header(h, r->headers[i].name, r->headers[i].value) != 0)
      return -1;
  if (r->body && !(h->body = dupn(r->body, r->body_len)))
    return -1;
  if (r->user && r->password && (!(h->user = dup0(r->user)) || !(h->password = dup0(r->password))))
    return -1;
  h->body_len = r->body ? r->body_len : 0;
  return 0;
}

us_http_req *us_http_submit(us_http *e, const struct us_http_request *r, const char **err) {
  const char *dummy;
  if (!err)
    err = &dummy;
  if (!e) {
    *err = "the HTTP engine is closed";
    return NULL;
  }
  us_http_req *h = calloc(1, sizeof *h);
  if (!h) {
    *err = "out of memory";
    return NULL;
  }
  h->e = e;
  if (copy_request(h, r, err) != 0) {
    req_free(h);
    return NULL;
  }
  h->timeout_ms = r->timeout_ms > 0 ? r->timeout_ms : e->o.timeout_ms;
  h->max_size = r->max_size > 0 ? r->max_size : e->o.max_size;
  h->max_retries = r->max_retries >= 0 ? r->max_retries : e->o.max_retries;
  h->max_wait_ms = r->max_wait_ms > 0 ? r->max_wait_ms : e->o.max_wait_ms;
  h->follow = r->follow_redirects;
  h->retry_unsafe = r->retry_unsafe;
  h->retry_headers = r->retry_headers;
  h->on_retry = r->on_retry;
  h->done = r->done;
  h->ud = r->ud;
  h->governor = r->governor;
  h->governor_ud = r->governor_ud;
  h->t_submit = now_ms();

  int oom;
  h->host = host_of(e, h->url, &oom);
  if (oom) {
    *err = "out of memory";
    req_free(h);
    return NULL;
  }
  h->anext = e->all;
  if (e->all)
    e->all->aprev = h;
  e->all = h;
  if (!h->host) {
    h->state = ST_DONE; /* not pending: complete() must not count it */
    fail(h, US_HTTP_EURL, "malformed URL or a scheme other than http/https");
    return h;
  }
  h->host->st.requests++;
  e->pending++;
  ready_push(h);
  return h;
}

int us_http_req_set_header(us_http_req *h, const char *name, const char *value) {
  if (!is_token(name) || !value || !is_field_value(value))
    return -1;
  struct hlist *l = &h->req_headers;
  for (size_t i = 0; i < l->n; i++)
    if (strcasecmp(l->v[i].name, name) == 0) {
      char *v = dup0(value);
      if (!v)
        return -1;
      free((char *)l->v[i].value);
      l->v[i].value = v;
      return 0;
    }
  return hlist_add(l, name, strlen(name), value, strlen(value));
}

void us_http_cancel(us_http_req *h) {
  if (!h || !h->e || h->state == ST_DONE || h->state == ST_DONEQ)
    return;
  if (h->state == ST_ACTIVE)
    stop_transfer(h);
  else
    unqueue(h);
  resp_reset(h);
  fail(h, US_HTTP_ECANCELED, "cancelled");
}

void us_http_release(us_http_req *h) {
  if (!h)
    return;
  us_http *e = h->e;
  if (e) {
    if (h->state == ST_ACTIVE) {
      stop_transfer(h);
      e->pending--;
    } else if (h->state == ST_READY || h->state == ST_SLEEP) {
      unqueue(h);
      e->pending--;
    } else if (h->state == ST_DONEQ) {
      unqueue(h);
    }
    if (h->aprev)
      h->aprev->anext = h->anext;
    else
      e->all = h->anext;
    if (h->anext)
      h->anext->aprev = h->aprev;
  }
  req_free(h);
}

int us_http_done(const us_http_req *h) {
  return h->state == ST_DONE || h->state == ST_DONEQ || h->state == ST_DETACHED;
}

const struct us_http_response *us_http_result(const us_http_req *h) {
  return (h->state == ST_DONE || h->state == ST_DETACHED) ? &h->resp : NULL;
}

/* ---------- counters ---------- */

size_t us_http_host_count(const us_http *e) { return e->nhosts; }

const struct us_http_host_stats *us_http_host_stats(const us_http *e, size_t i) {
  /* hosts are prepended: index 0 is the first host seen */
  size_t k = e->nhosts;
  for (struct host *h = e->hosts; h; h = h->next) {
    if (--k == i) {
      h->st.host = h->key;
      h->st.by_status = h->counts;
      h->st.nstatus = h->ncounts;
      return &h->st;
    }
  }
  return NULL;
}

struct us_http_host_stats us_http_totals(const us_http *e) {
  struct us_http_host_stats t;
  memset(&t, 0, sizeof t);
  for (struct host *h = e->hosts; h; h = h->next) {
    t.requests += h->st.requests;
    t.attempts += h->st.attempts;
    t.retries += h->st.retries;
    t.errors += h->st.errors;
    t.gave_up += h->st.gave_up;
    t.governed += h->st.governed;
    t.active += h->st.active;
    t.queued += h->st.queued;
  }
  return t;
}
