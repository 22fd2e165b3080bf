/*
** okta.h: the Okta Management API client: auth
** (SSWS token, or OAuth 2.0 service app with private_key_jwt and DPoP),
** the endpoints, listings that follow `next` links exactly as given, run as
** jobs of a batch whose pages come back as events (the target clients'
** model, target.h), several at once under a concurrency limit, a rate-limit
** governor that keeps a share of every bucket for other integrations, and
** Okta error bodies turned into stable error codes. Plain C on a shared
** us_http engine; no Lua. What a read means (the scope snapshot, changes,
** check) is built on these primitives in runtime/lua/usersync/okta.lua.
**
** Threading: one thread, the engine's.
**
** Error codes (struct us_okta_error.code): the vocabulary of the target
** clients (target.h), so callers test one set of codes whichever side failed:
**   EAUTH        401: token invalid/expired (E0000011, E0000004, ...);
**                with OAuth only after one more try with the API's new
**                DPoP nonce (401 use_dpop_nonce) or a new access token
**                (any other 401: RFC 6750 3.1); also the token endpoint
**                refusing (invalid_client, a bad key, an expired assertion,
**                invalid_dpop_proof, invalid_scope: error_code and the
**                message say which)
**   EFORBIDDEN   403: the credentials lack the permission (E0000006)
**   ENOTFOUND    404: no such user/group/app or path (E0000007/E0000008)
**   EINVALID     400: bad filter/search/parameter (E0000001, E0000031, E0000053)
**   ERATELIMIT   429 retried until the retries or the wait cap ran out
**   EHTTP        5xx (after retries for 500/502/503/504: every Okta read is
**                a GET, so it is repeated like a 429), any other status
**   ERESPONSE    a body that is HTML/not JSON (a proxy or login page), a
**                truncated or malformed JSON body, a page that is not an
**                array, or a record that is not what the read lists (an
**                entry that is null, a string, {}, or lacks a required
**                field or has one of the wrong type; an id that is not an
**                Okta id): the whole read fails like a failed page
**                (User: id, status, profile.login; Group: id, type,
**                profile.name; AppUser: id, scope, status and a valid
**                _embedded.user; LogEvent: uuid, published,
**                eventType, ids of User/UserGroup targets)
**   EBADLINK     a `next` link or cursor on another origin (never
**                requested: it would send our credentials elsewhere)
**   ECALLBACK    a Lua callback of the listing raised (usersync.okta)
**   ECONFIG      bad options (no url, no credentials, unreadable key)
**   and the transport codes of http.h (ECONNREFUSED, ECONNRESET, ETIMEDOUT,
**   ETLS, EDNS, ...) when no response arrived (`transport` is then 1).
** Messages name the method, path (no query), status, errorCode, errorSummary
** and X-Okta-Request-Id; they never contain tokens, assertions, proofs or keys.
*/
#ifndef USERSYNC_OKTA_H
#define USERSYNC_OKTA_H
#include <stddef.h>

#include "usersync/http.h"

typedef struct us_okta us_okta;

/* An Okta id is 1 to US_OKTA_ID_MAX letters and digits (00u1a2b3c4D5e6F7g8h9). */
#define US_OKTA_ID_MAX 40

struct us_okta_options {
  const char *url;   /* https://org.okta.com (required) */
  const char *token; /* SSWS API token, or NULL with client_id */
  /* OAuth 2.0 service app (client credentials, private_key_jwt) */
  const char *client_id;
  const char *private_key; /* PEM, RSA >= 2048 or EC P-256 */
  size_t private_key_len;
  const char *key_id;  /* "kid" of the assertion; optional */
  const char *scopes;  /* space separated; NULL: users, groups, apps, logs read */
  int dpop;            /* 1 (default): DPoP-bound tokens; proofs signed with the
                       ** client key, or with a P-256 key made at the first
                       ** token request when the server's metadata
                       ** (dpop_signing_alg_values_supported) lists ES256 but
                       ** not the client key's algorithm */
  double budget_share; /* share of each bucket we may use, (0,1]; 0.5 */
  int concurrency;     /* requests in flight at most; 8 */
  long timeout_ms;     /* per attempt; 0: engine default */
  int max_retries;     /* on 429/5xx/network; <0: engine default */
  long max_wait_ms;    /* all retry waits of one request; 0: engine default */
};

struct us_okta_error {
  char code[24];       /* stable code above, "" when no error */
  int transport;       /* 1: no answer from Okta (code is one of http.h's) */
  long status;         /* HTTP status or 0 */
  char error_code[24]; /* Okta errorCode (E0000011) or OAuth `error` */
  char summary[256];   /* errorSummary / error_description */
  char request_id[64]; /* X-Okta-Request-Id */
  char message[768];   /* the whole readable message */
};

/* Rate-limit state of one bucket, as last seen. */
struct us_okta_bucket {
  const char *name; /* "/api/v1/users", "/api/v1/apps*", ... */
  int known;        /* 1 once a response carried X-Rate-Limit-* */
  long limit, remaining;
  long long reset; /* epoch seconds (server clock) */
  double reset_in; /* seconds until the window resets (local), >= 0 */
  int inflight;    /* our requests in flight against it */
  unsigned long requests, throttled, waits, rate_limited;
  /* requests: responses counted; waits: times the governor held a request
  ** back; rate_limited: 429 responses seen */
};
#define US_OKTA_NBUCKETS 11

void us_okta_options_init(struct us_okta_options *o);

/* A client on engine e (borrowed: it must outlive the client, or be
** replaced with us_okta_set_engine). Options are copied; the key is parsed
** now. NULL and err filled (code OKTA_CONFIG) on failure. */
us_okta *us_okta_new(us_http *e, const struct us_okta_options *o, struct us_okta_error *err);
void us_okta_free(us_okta *c);
/* Swaps the engine (NULL: none; every call then fails with ECANCELED). */
void us_okta_set_engine(us_okta *c, us_http *e);

/* ---------------------------------------------------------------- endpoints
** Every URL the client requests is built here from an operation: ids are
** percent-encoded, page sizes are each listing's maximum unless `limit`. */
enum us_okta_ep {
  US_OKTA_USERS = 1,     /* /api/v1/users?limit=200[&filter=][&search=] */
  US_OKTA_USER,          /* /api/v1/users/{id}: by id or login (a get) */
  US_OKTA_USER_GROUPS,   /* /api/v1/users/{id}/groups?limit=200 */
  US_OKTA_GROUPS,        /* /api/v1/groups?limit=200[&filter=][&search=] */
  US_OKTA_GROUP,         /* /api/v1/groups/{id} (a get) */
  US_OKTA_GROUP_MEMBERS, /* /api/v1/groups/{id}/users?limit=200 (not the default 1000) */
  US_OKTA_APP,           /* /api/v1/apps/{id} (a get) */
  US_OKTA_APP_USER,      /* /api/v1/apps/{id}/users/{user}[?expand=user] (a get) */
  US_OKTA_APP_USERS,     /* /api/v1/apps/{id}/users?limit=500[&expand=user] */
  US_OKTA_APP_GROUPS,    /* /api/v1/apps/{id}/groups?limit=200 */
  US_OKTA_LOGS           /* /api/v1/logs?limit=1000[&since=][&filter=], or `cursor`:
                         ** a System Log poll, which ends at an empty page */
};
/* The names of the endpoints, index ep - 1, NULL-terminated ("users", "user",
** "user_groups", "groups", "group", "group_members", "app", "app_user",
** "app_users", "app_groups", "logs"). */
extern const char *const us_okta_ep_names[];

/* What a page event carries: the memory of a 100,000-user read. */
enum us_okta_shape {
  US_OKTA_RECORDS = 0, /* the page as Okta sent it (validated) */
  US_OKTA_SLIM,        /* Users without _links, credentials and type (no policy hook
                       ** reads them; they were half of each User); APP_USERS with
                       ** expand=user: each record is its _embedded.user, slimmed, with
                       ** the AppUser (without _embedded and _links) as app_assignment.
                       ** Other records as sent. */
  US_OKTA_IDS          /* only the records' ids (ids[]); the page is not kept */
};

struct us_okta_op {
  enum us_okta_ep ep;
  const char *id;     /* the user, group or app (USER: an id or a login) */
  const char *user;   /* APP_USER: the user id */
  const char *filter; /* USERS, GROUPS, LOGS */
  const char *search; /* USERS, GROUPS */
  const char *since;  /* LOGS: ISO 8601 */
  const char *cursor; /* LOGS: the URL to poll from, instead of since/filter */
  int limit;          /* page size; 0: the endpoint's maximum */
  int expand_user;    /* APP_USER, APP_USERS: expand=user */
  size_t max_pages;   /* > 0: stop after that many pages (probes, capped polls;
                      ** LOGS: the cursor then points after the last page read) */
  enum us_okta_shape shape;
  void *tag; /* returned in every event of the job */
};

/* ---------------------------------------------------------------- jobs
** Operations run as jobs of a batch, concurrently (each page after the
** previous one of the same job; at most `concurrency` requests in flight
** for the client). us_okta_batch_next drives the engine until an event is
** ready: a PAGE per page as it arrives, then exactly one DONE per job. A
** job's failure is its own (its DONE); the caller decides whether the
** others go on. A failed page ends its job: never a silently short list. */
typedef struct us_okta_batch us_okta_batch;

enum us_okta_ev { US_OKTA_PAGE = 1, US_OKTA_DONE };

/* One event; the caller owns it after us_okta_batch_next (us_okta_event_free). */
struct us_okta_event {
  enum us_okta_ev type;
  void *tag;
  size_t job; /* 0-based, in submit order */
  /* PAGE */
  char *body; /* JSON text: the page (an array) or a get's object; NULL with IDS */
  size_t len;
  char **ids; /* US_OKTA_IDS: the records' ids */
  size_t nids;
  size_t count; /* records of the page */
  size_t page;  /* 1-based */
  int last;     /* 1: the job asks for no more pages */
  /* DONE */
  int ok;
  struct us_okta_error error; /* when !ok */
  char *cursor;               /* LOGS: the URL to poll from next */
  size_t pages, items;
};

us_okta_batch *us_okta_batch_new(us_okta *c);
/* Starts a job (its requests go out at the next us_okta_batch_next).
** 0 ok; -1 on misuse (an id missing) or no memory, err filled. A job that
** cannot start (a cursor on another origin) still starts and ends with a
** failed DONE, without a request. */
int us_okta_submit(us_okta_batch *b, const struct us_okta_op *op, struct us_okta_error *err);
/* The next event, driving the engine while none is ready; NULL when every
** job has ended and its events were taken. When pages came, the next pages
** that can go out (a listing's next one, jobs waiting for a slot) are sent
** before the first is returned, while fewer than 8 pages wait to be taken:
** the caller's work on a page overlaps the next one's request. */
struct us_okta_event *us_okta_batch_next(us_okta_batch *b);
/* Cancels the batch's unfinished jobs and frees it (us_okta_free frees the
** batches still open). NULL fine. */
void us_okta_batch_free(us_okta_batch *b);
void us_okta_event_free(struct us_okta_event *ev);

/* Obtains (or renews, when fewer than 5 minutes remain) the OAuth access
** token. 0 ok (also for SSWS: nothing to do), -1 with err. */
int us_okta_authenticate(us_okta *c, struct us_okta_error *err);
/* 1 when the client uses OAuth. */
int us_okta_is_oauth(const us_okta *c);
/* The granted scope string of the current token ("" for SSWS / none yet). */
const char *us_okta_token_scope(const us_okta *c);

/* Rate-limit state: bucket i in [0, US_OKTA_NBUCKETS). */
void us_okta_bucket(const us_okta *c, size_t i, struct us_okta_bucket *out);
/* Requests made (responses and transport failures) by this client. */
unsigned long us_okta_requests(const us_okta *c);

/* Percent-encodes s for a query value (caller frees). */
char *us_okta_urlencode(const char *s);

#endif
