/*
** okta.h: the Okta Management API client: auth
** (SSWS token, or OAuth 2.0 service app with private_key_jwt and DPoP),
** listings that follow `next` links exactly as given, several listings at
** once under a concurrency limit, a rate-limit governor that keeps a share
** of every bucket for other integrations, and Okta error bodies turned into
** stable error codes. Plain C on a shared us_http engine; no Lua.
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
**   ECALLBACK    the page callback stopped the listing (its message)
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

/* One page (or the one object of a get) handed to the callback. */
struct us_okta_page {
  size_t list;      /* index of the listing in the call */
  const char *body; /* JSON text, validated; an array for listings */
  size_t len;
  size_t count;     /* elements (listings) */
  size_t page;      /* 1-based page number within the listing */
  const char *next; /* next link or NULL (not NUL-owned by the caller) */
  const struct us_http_response *resp;
};
/* Returns 0 to go on; nonzero stops the call, which then fails with
** OKTA_CALLBACK and the message the callback wrote into err (or a
** generic one). */
typedef int (*us_okta_page_fn)(void *ud, const struct us_okta_page *p, struct us_okta_error *err);

struct us_okta_listing {
  const char *url;             /* "/api/v1/..." (joined to the base) or an absolute URL */
  int single;                  /* 1: a get of one object (no paging) */
  int stop_on_empty;           /* 1: System Log polling: an empty page ends it */
  size_t max_pages;            /* > 0: stop after that many pages (probes) */
  struct us_okta_error *error; /* non-NULL: a failure of this listing is
                                ** stored here and the others go on (checks,
                                ** reads where 404 means "deleted") */
  /* out */
  char *cursor; /* stop_on_empty: the next URL to poll from (malloc'd) */
  size_t pages, items;
  int done;   /* 1: completed */
  int failed; /* 1: failed into *error */
};

/* Runs the n listings concurrently (each page after the previous one of the
** same listing; at most `concurrency` requests in flight), calling fn for
** every page as it arrives. Returns 0 when every listing completed, -1 with
** err filled at the first failure (the others are cancelled: a failed page
** fails the whole call). Free the cursors with us_okta_listing_clear. */
int us_okta_list(us_okta *c, struct us_okta_listing *ls, size_t n, us_okta_page_fn fn, void *ud,
                 struct us_okta_error *err);
void us_okta_listing_clear(struct us_okta_listing *ls, size_t n);

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
