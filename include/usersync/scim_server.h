/*
** scim_server.h: the HTTP side of the SCIM 2.0 endpoints of `usersync serve`
** (runtime/scim_server.c): /scim/v2/<source>/... on the server's listener.
**
** The server's request threads authenticate, read and queue a request and
** suspend its connection; one worker thread (its own Lua state, started by
** runtime/bind_scim.c, running usersync.scim_worker with its own store
** connection) takes requests one at a time and answers them, which resumes
** the connection. So SCIM requests are answered while a sync run is going
** on in the main thread, and nothing of the SCIM logic blocks a request
** thread. After a write the worker pokes the main thread (us_server_wait
** returns US_SERVER_SCIM) so serve schedules a run for what it touched.
**
** Decided on the request threads, in this order, before anything is read
** from the store (an unauthenticated caller learns nothing and waits no
** differently whether a source or a user exists):
**   1. Authorization must be "Bearer <the source's token>": the SHA-256 of the
**      presented token is compared in constant time (CRYPTO_memcmp) with the
**      source's; an unknown source is compared against a random digest, so it
**      costs the same. Otherwise 401, SCIM error body, WWW-Authenticate.
**   2. Content-Length above max_body -> 413 (a chunked body that grows past
**      it too, at its end).
**   3. More than queue_max requests waiting -> 503 with Retry-After.
*/
#ifndef USERSYNC_SCIM_SERVER_H
#define USERSYNC_SCIM_SERVER_H
#include <microhttpd.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "usersync/queue.h"
#include "usersync/strbuf.h"

#define US_SCIM_PREFIX "/scim/v2/"
#define US_SCIM_MAX_BODY ((size_t)1 << 20) /* bytes of one request body */
#define US_SCIM_QUEUE_MAX 2048             /* requests waiting for the worker */
#define US_SCIM_NAME_MAX 128

typedef struct us_scim us_scim;

struct us_scim_source_config {
  const char *name;
  const char *token; /* the Bearer token (not kept: only its SHA-256) */
  size_t token_len;
};

/* One request, from its headers to its answer. The worker reads the request
** fields between us_scim_take and us_scim_answer; nothing else touches them. */
struct us_scim_arg {
  char *key, *value;
};

struct us_scim_request {
  struct us_qlink ql;   /* in the worker's queue while waiting */
  struct us_qlink live; /* in the list of every request not yet completed */
  struct MHD_Connection *conn;
  char source[US_SCIM_NAME_MAX + 1];
  char *method, *path, *if_match, *if_none_match, *host;
  struct us_scim_arg *args;
  size_t nargs;
  struct us_sb body; /* the body read so far (body.s NULL when none) */
  int too_large;
  size_t discarded;
  int state; /* 0 reading, 1 queued/suspended, 2 answered */
  unsigned status;
  char *resp, *etag, *location;
  size_t resp_len;
};

struct us_scim_stats {
  uint64_t requests, unauthorized, too_large, busy, answered, writes;
};

/* A new SCIM side for n sources; poke(arg) is called (from the worker) after
** each write. NULL on out of memory. */
us_scim *us_scim_new(const struct us_scim_source_config *src, size_t n, int tls,
                     void (*poke)(void *), void *poke_arg);

/* 1 when url is under /scim/v2/. */
int us_scim_is_path(const char *url);

/* libmicrohttpd's access handler for a URL under /scim/v2/ (all its calls). */
enum MHD_Result us_scim_request(us_scim *sc, struct MHD_Connection *c, const char *url,
                                const char *method, const char *data, size_t *size,
                                void **con_cls);

/* Frees p when it is one of sc's requests (the completion callback); 1 then. */
int us_scim_release(us_scim *sc, void *p);

/* Starts the worker thread fn(arg). 0 on success. */
int us_scim_start_worker(us_scim *sc, void *(*fn)(void *), void *arg);

/* The worker: the next request (waits up to timeout_ms, < 0 without limit);
** NULL when stopping or on time-out (*stopping tells which). */
struct us_scim_request *us_scim_take(us_scim *sc, long timeout_ms, int *stopping);

/* The worker: answers r (copies everything) and resumes its connection. */
void us_scim_answer(us_scim *sc, struct us_scim_request *r, unsigned status, const char *body,
                    size_t len, const char *etag, const char *location);

/* The worker: a write happened (wakes the main thread). */
void us_scim_poke(us_scim *sc);

/* The worker failed: every request from now on is answered 503. */
void us_scim_broken(us_scim *sc);

void us_scim_stats(us_scim *sc, struct us_scim_stats *out);

/* Stops the worker (joins it), answers what is still queued with 503 and
** resumes those connections. Call before stopping the daemon. */
void us_scim_stop(us_scim *sc);

/* Frees sc (after us_scim_stop and the daemon's stop). NULL is a no-op. */
void us_scim_free(us_scim *sc);

#endif
