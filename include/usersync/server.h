/*
** server.h: the HTTP side of `usersync serve` on libmicrohttpd: health,
** readiness and Prometheus endpoints, the Okta event hook (verification,
** authenticated deliveries, de-duplication, a bounded queue) and the
** process's SIGTERM/SIGINT/SIGHUP, all delivered to one consumer thread
** through us_server_wait().
**
** Threads: libmicrohttpd answers requests on its own threads; a signal thread
** sigwait()s. The consumer (the thread that called us_server_start, which
** must also be the one calling wait/stopping/close) only takes what they
** recorded, under one mutex + condition variable. Requests are answered
** without ever waiting for the consumer.
**
** Endpoints (the health listener, when configured, answers the first three
** only; the main listener answers all):
**   GET|HEAD /healthz  200 "ok\n"
**   GET|HEAD /readyz   200 "ready\n" | 503 "not ready: <reason>\n"
**   GET|HEAD /metrics  200 us_metrics_render(), text/plain; version=0.0.4
**   <hook path>        GET with x-okta-verification-challenge: V and the
**                      Authorization secret -> 200 {"verification":"V"};
**                      POST deliveries (see server.c for the decisions)
**   anything else      404; a known path with another method 405 + Allow
**
** With a page handler (serve.status), "/" and "/status/..." also answer:
** HTTP Basic auth first (401 + WWW-Authenticate otherwise), then the
** handler renders the page on the request's thread (see us_server_page_fn).
**
** Only one server may run per process (signals are process-wide).
*/
#ifndef USERSYNC_SERVER_H
#define USERSYNC_SERVER_H
#include <stddef.h>
#include <stdint.h>

typedef struct us_server us_server;
struct us_scim_source_config;
typedef struct us_scim us_scim;

/* A status page request, handed to the page handler after authentication. */
struct us_server_page_request {
  const char *method, *path;    /* path without the query */
  const char *const *args;      /* query arguments: name, value, ..., NULL (decoded) */
  const char *body;             /* POST body (form), may be NULL */
  size_t body_len;
  const char *host, *origin, *referer, *cookie; /* request headers, NULL when absent */
  int tls;
};

/* What the handler answers. body is malloc'd (the server frees it); the
** strings are copied by the server. status 0 means 500. */
struct us_server_page {
  unsigned status;
  char *body;
  size_t len;
  char ctype[64];
  char location[256];    /* 3xx: Location */
  char set_cookie[256];  /* Set-Cookie, or "" */
  int cacheable;         /* 1: Cache-Control max-age (static assets); 0: no-store */
};

/* Called on libmicrohttpd's threads, possibly two at once: the handler
** serialises what needs it. s is the server (for us_server_post_action). */
typedef void (*us_server_page_fn)(void *ud, us_server *s, const struct us_server_page_request *req,
                                  struct us_server_page *out);

struct us_server_config {
  const char *listen;            /* "host:port", "[v6]:port"; port 0 = any free port */
  const char *tls_cert, *tls_key; /* PEM text; both or neither */
  size_t tls_cert_len, tls_key_len;
  const char *hook_path;   /* NULL: no hook endpoint */
  const char *hook_secret; /* the exact Authorization value; required with hook_path */
  size_t hook_secret_len;
  size_t hook_max_body;   /* bytes; 0 = 1 MiB */
  size_t queue_max;       /* queued events; 0 = 10,000 */
  size_t queue_max_bytes; /* bytes of queued event text; 0 = 64 MiB */
  size_t dedupe_max;      /* event uuids remembered (FIFO); 0 = 100,000 */
  unsigned threads;       /* request threads; 0 = 2 */
  const char *health_listen; /* NULL, or "host:port" of a second, plain-HTTP listener
                             ** that answers /healthz, /readyz and /metrics only */
  unsigned max_connections;  /* main listener, open connections in all; 0 = 512 */
  unsigned max_per_ip;       /* main listener, from one address; 0 = 32 */
  unsigned timeout_s;        /* request deadline and idle timeout (s); 0 = 5 */
  us_server_page_fn page;    /* NULL: no status page (404 at "/") */
  void *page_ud;
  const char *page_user, *page_password; /* HTTP Basic credentials; required with page */
  const struct us_scim_source_config *scim; /* SCIM endpoints (scim_server.h), scim_n of them */
  size_t scim_n;
};

/* Connection limits. A request (line, headers, body) must have arrived
** within timeout_s of the connection's start (or of the previous answer on
** a kept-alive connection), however it trickles in, and a connection
** silent for timeout_s is closed; beyond max_per_ip connections from one address (and
** max_connections in all) new connections are closed at once. The health
** listener has limits of its own, so a flood on the main one (Okta's
** deliveries, reachable from outside) never keeps probes from answering. */
#define US_SERVER_MAX_CONNECTIONS 512
#define US_SERVER_MAX_PER_IP 32
#define US_SERVER_TIMEOUT_S 5
#define US_SERVER_HEALTH_CONNECTIONS 64
#define US_SERVER_HEALTH_PER_IP 16

/* Error codes of us_server_start (stable strings). */
#define US_SERVER_EINVAL "EINVAL"         /* a bad config value */
#define US_SERVER_EBUSY "EBUSY"           /* a server is already running in this process */
#define US_SERVER_EADDRINUSE "EADDRINUSE" /* the address is taken */
#define US_SERVER_EACCES "EACCES"         /* e.g. a privileged port */
#define US_SERVER_ETLS "ETLS"             /* TLS unsupported, or bad cert/key */
#define US_SERVER_ESTART "ESTART"         /* anything else (socket, threads, daemon) */

/* Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (so every thread
** started later inherits the block), binds, starts the signal thread and the
** daemon. Returns the server, or NULL with *code set to one of the codes
** above and a message (never containing the secret or key) in err. On
** failure the signal mask is as it was. */
us_server *us_server_start(const struct us_server_config *cfg, char *err, size_t errlen,
                           const char **code);

/* The bound port. */
int us_server_port(const us_server *s);

/* The SCIM endpoints (NULL without scim sources). */
us_scim *us_server_scim(us_server *s);

/* The health listener's bound port; 0 without one. */
int us_server_health_port(const us_server *s);

/* What /readyz answers; reason (may be NULL) is copied, up to 200 bytes. */
void us_server_set_ready(us_server *s, int ok, const char *reason);

/* A queued event: one data.events[] item reduced to the fields serve acts
** on (uuid, eventType, published, outcome, actor, target; each value byte
** for byte as received) as a JSON object text. */
struct us_server_event {
  struct us_server_event *next;
  size_t len;
  char text[]; /* NUL-terminated */
};

/* US_SERVER_ACTIONS: the status page queued an action ("sync now");
** US_SERVER_SCIM: a SCIM push was stored since the last wait (scim_server.h). */
enum us_server_wake { US_SERVER_TIMEOUT, US_SERVER_EVENTS, US_SERVER_SIGNAL, US_SERVER_ACTIONS, US_SERVER_SCIM };

/* Blocks up to timeout_ms (< 0: no limit) until a signal or events arrive.
** US_SERVER_SIGNAL: *signo is SIGTERM, SIGINT or SIGHUP (one per call,
** signals before actions before events). US_SERVER_ACTIONS: *events is the
** queued actions (us_server_post_action), same ownership. US_SERVER_EVENTS: *events is every queued event
** in arrival order (at least one), owned by the server and valid until the
** next us_server_wait or us_server_close. Call only from the starting thread. */
enum us_server_wake us_server_wait(us_server *s, long timeout_ms, int *signo,
                                   const struct us_server_event **events);

/* Queues an action (text, e.g. JSON) for the consumer: what the status
** page asks for ("sync now"). Any thread. 0 when the queue (64) is full. */
int us_server_post_action(us_server *s, const char *text, size_t len);

/* The last hook deliveries, newest first: up to max into out; returns n. */
struct us_server_delivery {
  double at;          /* Unix time */
  char result[16];    /* accepted, unauthorized, too_large, malformed, queue_full */
  unsigned events, duplicates;
};
#define US_SERVER_DELIVERIES 20
size_t us_server_deliveries(us_server *s, struct us_server_delivery *out, size_t max);

/* 1 once SIGTERM or SIGINT has arrived. */
int us_server_stopping(us_server *s);

struct us_server_stats {
  uint64_t deliveries;       /* POSTs to the hook path, any outcome */
  uint64_t accepted;         /* answered 200 */
  uint64_t unauthorized;     /* 401 (deliveries and verifications) */
  uint64_t too_large;        /* 413 */
  uint64_t malformed;        /* 400 */
  uint64_t queue_full;       /* 503 */
  uint64_t events;           /* events queued, in total */
  uint64_t duplicates;       /* events dropped as already seen */
  uint64_t malformed_events; /* data.events[] items without a string uuid */
  uint64_t verifications;    /* verification challenges answered 200 */
  uint64_t queued;           /* events waiting for us_server_wait now */
};
void us_server_stats(us_server *s, struct us_server_stats *out);

/* Stops the daemon and the signal thread, restores the signal mask, frees
** everything (events handed out by wait included). NULL is a no-op. */
void us_server_close(us_server *s);

#endif
