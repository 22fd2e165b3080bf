/*
** http.h: the HTTP engine. One libcurl multi handle drives every request of
** an engine; requests run concurrently, with a per-host concurrency limit,
** retries with exponential backoff and jitter, Retry-After and Okta's
** X-Rate-Limit-Reset honoured, a response-size cap and stable error codes.
**
** Threading: an engine and its requests belong to one thread.
**
** Life of a request:
**   us_http_submit() copies the request (the caller may free its strings at
**   once) and returns a handle. Nothing happens until the caller drives the
**   engine with us_http_run_once(), us_http_wait() or us_http_run(). Each
**   request completes exactly once; its `done` callback (optional) runs from
**   inside those driving functions only, never from submit or cancel. After
**   completion the handle keeps its response until us_http_release(), which
**   may be called from the callback. Releasing an unfinished request cancels
**   it silently (no callback). Callbacks may submit, cancel and release
**   (but not release a handle someone is us_http_wait()ing on), and must not
**   free the engine.
**
** Completion outcomes (struct us_http_response):
**   - a response arrived: code == NULL, status is the HTTP status. 4xx/5xx
**     are not errors at this layer. When retries on 429/500/502/503/504 ran out
**     (or the wait cap was reached) the last response is returned with
**     gave_up = 1 and retries = how many retries were made.
**   - no usable response: status == 0 (or the partial status), code is one
**     of the stable strings below, message is readable and never contains
**     header values or URL query strings/credentials.
**
** Stable error codes (US_HTTP_E*):
**   ECONNREFUSED  connection refused / host unreachable (nothing was sent)
**   ECONNRESET    connection dropped: reset, closed without a response, or
**                 the body ended before its announced length
**   ETIMEDOUT     connect or whole-transfer timeout
**   ETLS          TLS handshake or certificate verification failed, bad CA file
**   EDNS          host name could not be resolved
**   EPROXY        proxy could not be resolved or refused the tunnel
**   ETOOBIG       response body larger than max_size (transfer aborted)
**   EPROTO        malformed response (not HTTP, bad encoding, bad chunking)
**   EREDIRECT     too many redirects (only with follow_redirects)
**   EURL          malformed URL or a scheme other than http/https
**   ECANCELED     cancelled by us_http_cancel() / engine closed
**   ENOMEM        out of memory
**   EIO           any other transport failure (message says which)
**
** Retry policy (per request, defaults from the engine):
**   retried: ECONNREFUSED and status 429 always (the request was turned
**   away before it was processed); ECONNRESET, ETIMEDOUT and statuses 500,
**   502, 503, 504 only for idempotent methods (GET HEAD OPTIONS PUT DELETE
**   TRACE) or with retry_unsafe: a POST or PATCH may have been applied before
**   a gateway answered 5xx or the connection broke, so it is never repeated
**   blindly. Other statuses are answers, not retried.
**   wait: Retry-After (delta seconds, or an HTTP date measured against the
**   response's Date, else the local clock); else, on 429, Okta's
**   X-Rate-Limit-Reset (smallest, epoch seconds) - Date + 1; else
**   exponential backoff base * 2^n capped at backoff_max, with full or
**   decorrelated jitter. A server-asked wait of 0 (Retry-After: 0, a reset
**   already past) falls back to backoff; a server-asked wait is not
**   shortened to backoff_max. The sum of waits of one request is capped by
**   max_wait_ms: when the next wait would pass it the request gives up.
**   On every retry the governor is asked again, Okta's X-Okta-Retry-For /
**   X-Okta-Retry-Count are added with retry_headers = OKTA, then on_retry
**   runs (it may add headers with us_http_req_set_header()).
**   Waits are timers on the loop: other transfers keep running.
*/
#ifndef USERSYNC_HTTP_H
#define USERSYNC_HTTP_H
#include <stddef.h>
#include <time.h>

#define US_HTTP_ECONNREFUSED "ECONNREFUSED"
#define US_HTTP_ECONNRESET "ECONNRESET"
#define US_HTTP_ETIMEDOUT "ETIMEDOUT"
#define US_HTTP_ETLS "ETLS"
#define US_HTTP_EDNS "EDNS"
#define US_HTTP_EPROXY "EPROXY"
#define US_HTTP_ETOOBIG "ETOOBIG"
#define US_HTTP_EPROTO "EPROTO"
#define US_HTTP_EREDIRECT "EREDIRECT"
#define US_HTTP_EURL "EURL"
#define US_HTTP_ECANCELED "ECANCELED"
#define US_HTTP_ENOMEM "ENOMEM"
#define US_HTTP_EIO "EIO"

typedef struct us_http us_http;         /* engine: one multi handle */
typedef struct us_http_req us_http_req; /* one submitted request */

struct us_http_header {
  const char *name; /* responses: lowercase; requests: as given */
  const char *value;
};

/* What a completed request (or one attempt of it) returned. Every pointer is
** owned by the handle and valid until us_http_release(). */
struct us_http_response {
  long status;                          /* HTTP status; 0 if none arrived */
  const struct us_http_header *headers; /* in arrival order, repeats kept */
  size_t nheaders;
  const char *body; /* NUL-terminated for convenience; body_len excludes it */
  size_t body_len;
  double time;         /* seconds from submit to completion, waits included */
  int retries;         /* retries made (attempts - 1) */
  int gave_up;         /* 1: retryable outcome but retries/wait cap exhausted */
  const char *code;    /* NULL when a response arrived, else a US_HTTP_E* */
  const char *message; /* "" on success; what failed, or "gave up after N retries" */
  const char *url;     /* effective URL (after redirects) */
};

enum us_http_jitter { US_HTTP_JITTER_FULL = 0, US_HTTP_JITTER_DECORRELATED = 1 };
enum us_http_retry_headers { US_HTTP_RETRY_HEADERS_NONE = 0, US_HTTP_RETRY_HEADERS_OKTA = 1 };

/* Governor hook: asked before a request to `host` ("scheme://host:port") is
** started (first attempt and every retry); returns how many milliseconds to
** hold it back (0: start now). It is asked again when the delay ends, and the
** request goes back to the end of its host's queue. A request's own governor
** replaces the engine's. */
typedef long (*us_http_governor_fn)(void *ud, const char *host, const char *method,
                                    const char *url);
/* Observer: sees every attempt that got a response (including ones that are
** then retried), e.g. to read rate-limit headers. */
typedef void (*us_http_observe_fn)(void *ud, const char *host, const char *method,
                                   const struct us_http_response *r);
/* Completion callback. `r` lives until us_http_release(h). */
typedef void (*us_http_done_fn)(us_http_req *h, const struct us_http_response *r, void *ud);
/* Retry hook: runs before retry number `retry` (1-based) is scheduled, with
** the attempt that failed; may call us_http_req_set_header(h, ...). */
typedef void (*us_http_retry_fn)(us_http_req *h, const struct us_http_response *last, int retry,
                                 void *ud);

struct us_http_options {
  const char *ca_file;     /* NULL: system trust store */
  int verify;              /* 1 (default): verify peer and host name */
  long timeout_ms;         /* whole-transfer timeout per attempt; 30000 */
  long connect_timeout_ms; /* 10000 */
  size_t max_size;         /* response body cap in bytes; 32 MiB */
  int max_retries;         /* 3 */
  int per_host;            /* concurrent transfers per host; 8 */
  long backoff_base_ms;    /* 500 */
  long backoff_max_ms;     /* one wait at most; 30000 */
  long max_wait_ms;        /* all waits of one request at most; 120000 */
  int jitter;              /* enum us_http_jitter; full */
  const char *user_agent;  /* NULL: "usersync/<version>" */
  us_http_governor_fn governor;
  void *governor_ud;
  us_http_observe_fn observe;
  void *observe_ud;
  unsigned long seed; /* jitter PRNG seed; 0: from the clock */
};

struct us_http_request {
  const char *method; /* NULL: "GET"; an HTTP token */
  const char *url;    /* http:// or https:// */
  const struct us_http_header *headers;
  size_t nheaders;
  const char *body; /* may be NULL; binary safe with body_len */
  size_t body_len;
  /* HTTP Basic credentials (both or neither): libcurl builds the
  ** Authorization header (CURLOPT_USERNAME / CURLOPT_PASSWORD) and sends it
  ** to the request's own host only. Copied at submit, wiped when freed. */
  const char *user, *password;
  long timeout_ms;      /* 0: engine default */
  size_t max_size;      /* 0: engine default */
  int max_retries;      /* <0: engine default; 0: no retries */
  long max_wait_ms;     /* <0 or 0: engine default */
  int follow_redirects; /* 0 (default): 3xx come back as responses */
  int retry_unsafe;     /* 1: retry non-idempotent methods like idempotent ones */
  int retry_headers;    /* enum us_http_retry_headers */
  us_http_retry_fn on_retry;
  us_http_done_fn done;
  void *ud;                     /* passed to done and on_retry */
  us_http_governor_fn governor; /* NULL: the engine's */
  void *governor_ud;
};

/* Per-host counters; host is "scheme://host:port". */
struct us_http_status_count {
  long status; /* 0: no response (transport error) */
  unsigned long count;
};
struct us_http_host_stats {
  const char *host;
  unsigned long requests; /* submitted */
  unsigned long attempts; /* transfers started */
  unsigned long retries;
  unsigned long errors;                         /* completed with a code */
  unsigned long gave_up;                        /* completed with gave_up */
  unsigned long governed;                       /* times the governor delayed a start */
  int active;                                   /* transfers running now */
  int queued;                                   /* waiting for a slot */
  const struct us_http_status_count *by_status; /* one entry per attempt outcome */
  size_t nstatus;
};

/* Fills `o` with the defaults above. */
void us_http_options_init(struct us_http_options *o);

/* Creates an engine (o NULL: defaults); options are copied. NULL when out of
** memory or libcurl fails to initialise; *err (if given) says why. */
us_http *us_http_new(const struct us_http_options *o, const char **err);

/* Cancels every unfinished request without callbacks, detaches remaining
** handles (they read as ECANCELED and must still be released), frees the
** engine. NULL is fine. */
void us_http_free(us_http *e);

/* Submits a request. Returns its handle, or NULL with *err set (static
** string) for misuse: missing URL, bad method, header name/value with CR/LF,
** engine closed, or out of memory. */
us_http_req *us_http_submit(us_http *e, const struct us_http_request *r, const char **err);

/* Adds or replaces (case-insensitive name) a request header for the next
** attempts. For on_retry hooks and before the first run. 0 ok, -1 no memory
** or bad header. */
int us_http_req_set_header(us_http_req *h, const char *name, const char *value);

/* Cancels an unfinished request: it completes with ECANCELED (callback from
** the next driving call). No effect on a finished one. */
void us_http_cancel(us_http_req *h);

/* Frees a handle; cancels silently if unfinished. NULL is fine. */
void us_http_release(us_http_req *h);

/* 1 if the request has completed (callback run or pending dispatch). */
int us_http_done(const us_http_req *h);
/* The response once done (callbacks dispatched), else NULL. */
const struct us_http_response *us_http_result(const us_http_req *h);

/* Drives the engine once: starts what may start, waits up to timeout_ms
** (0: don't wait) for activity or a timer, collects finished transfers and
** runs callbacks. Returns the number of unfinished requests. */
int us_http_run_once(us_http *e, long timeout_ms);
/* Drives until every handle in hs[0..n) is done (callbacks run), or
** timeout_ms passes (<0: no limit). Returns how many are still unfinished. */
size_t us_http_wait(us_http *e, us_http_req *const *hs, size_t n, long timeout_ms);
/* Drives until nothing is unfinished. */
void us_http_run(us_http *e);

/* Counters. Pointers valid until the next driving call or submit. */
size_t us_http_host_count(const us_http *e);
const struct us_http_host_stats *us_http_host_stats(const us_http *e, size_t i);
/* Totals over all hosts (host = NULL, by_status = NULL). */
struct us_http_host_stats us_http_totals(const us_http *e);

/* --- pure helpers (no engine) --- */

/* Last value of header `name` (case-insensitive), or NULL. */
const char *us_http_header(const struct us_http_response *r, const char *name);
/* Index of the next header called `name` at or after `from`, or nheaders. */
size_t us_http_header_next(const struct us_http_response *r, const char *name, size_t from);

/* Delay in ms a Retry-After value asks for: delta seconds, or an HTTP date
** minus `date` (the response's Date, or the local clock when date is
** (time_t)-1). -1 when unparsable; 0 for a date in the past. */
long us_http_parse_retry_after(const char *value, time_t date);
/* The wait a response asks for, in ms: Retry-After, else on 429 the
** smallest X-Rate-Limit-Reset - Date + 1 s. -1 when it asks nothing. */
long us_http_server_delay(const struct us_http_response *r);
/* Backoff for retry n (1-based): base*2^(n-1) capped; full jitter picks in
** [0, that], decorrelated in [base, 3*prev] capped. `prev` is the previous
** wait (0 at first); `rnd` a uniform value in [0,1). */
long us_http_backoff(int jitter, long base_ms, long max_ms, int n, long prev_ms, double rnd);
/* URL of the first link with rel `rel` in every `link` header of r (separate
** lines and comma-joined values). Returns a malloc'd string or NULL. */
char *us_http_link(const struct us_http_response *r, const char *rel);
/* Same without allocating: points into the header value, length in *len. */
const char *us_http_link_find(const struct us_http_response *r, const char *rel, size_t *len);

#endif
