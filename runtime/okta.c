/*
** okta.c: the Okta client core (include/usersync/okta.h).
**
** Provides: us_okta_* (client, listings, OAuth/DPoP, rate-limit buckets).
** Uses: the HTTP engine (http.h) for every request, jsonscan.h to read
** paging and error fields, crypto.h for private_key_jwt and DPoP proofs,
** timeutil.h for clocks and the response Date.
**
** Requests: every request is a `struct oreq` owned by this file. Its engine
** hooks do the accounting only (never call out to the caller):
**   governor  holds a request back while its bucket is at our share;
**             a start it allows counts as in flight against the bucket
**   on_retry  reads the rate-limit headers of the failed attempt, releases
**             its bucket slot and signs a fresh DPoP proof for the retry
**   done      reads the headers of the final attempt and releases the slots
** Page callbacks run from us_okta_list's own loop, outside engine dispatch,
** so a callback may use the engine (or this client) again.
*/
#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "usersync/crypto.h"
#include "usersync/jsonscan.h"
#include "usersync/okta.h"
#include "usersync/queue.h"
#include "usersync/timeutil.h"
#include "usersync/strbuf.h"
#include "usersync/timeutil.h"

#define DEFAULT_SCOPES "okta.users.read okta.groups.read okta.apps.read okta.logs.read"
#define RENEW_BEFORE_S 300.0
#define MAX_GOVERNOR_WAIT_S 65.0

enum {
  B_USERS,
  B_USER,
  B_USERS_ANY,
  B_GROUP,
  B_GROUPS_ANY,
  B_APP,
  B_APPS_ANY,
  B_LOGS,
  B_API,
  B_TOKEN,
  B_OTHER
};
static const char *const bucket_names[US_OKTA_NBUCKETS] = {
    "/api/v1/users",   "/api/v1/users/{id}", "/api/v1/users*", "/api/v1/groups/{id}",
    "/api/v1/groups*", "/api/v1/apps/{id}",  "/api/v1/apps*",  "/api/v1/logs",
    "/api/v1",         "/oauth2/v1/token",   "other"};

struct bucket {
  int known;
  long limit, remaining;
  long long reset;
  double reset_at; /* monotonic seconds when the window is over (+1 s) */
  int inflight;
  unsigned long requests, throttled, waits, rate_limited;
};

struct us_okta {
  us_http *e;
  char *base;   /* "https://org.okta.com" without a trailing slash */
  char *origin; /* scheme://host[:port] of base, for next-link checks */
  char *ssws;   /* "SSWS <token>" or NULL */
  /* OAuth */
  char *client_id, *key_id, *scopes, *token_url;
  struct us_key *key;      /* client authentication (private_key_jwt) */
  struct us_key *dpop_key; /* signs DPoP proofs: key, or a P-256 key made for this process */
  char *jwk;               /* public JWK JSON of dpop_key */
  int dpop;
  int meta_done;        /* the authorization server metadata was asked for */
  unsigned token_gen;   /* bumped at every new access token */
  char *access_token; /* NULL until obtained */
  char *token_type;   /* "DPoP" or "Bearer" */
  char *granted_scope;
  char *ath;          /* b64url(sha256(access_token)) */
  double token_until; /* monotonic */
  /* DPoP nonces belong to the server that issued them (RFC 9449 9) */
  char *as_nonce; /* the token endpoint's (400 use_dpop_nonce, or any token response) */
  char *rs_nonce; /* the API's (401 use_dpop_nonce, or any API response) */
  /* limits */
  double share;
  int concurrency;
  long timeout_ms, max_wait_ms;
  int max_retries;
  int inflight; /* submitted and not yet completed */
  unsigned long requests;
  struct bucket b[US_OKTA_NBUCKETS];
  us_okta_batch *batches; /* open batches (freed with the client) */
};

struct oreq {
  us_okta *c;
  us_http_req *h;
  int bucket;
  int granted;  /* holds a slot of its bucket */
  int finished; /* done callback ran */
  int api;      /* 1: API call (DPoP proof with ath) */
  unsigned token_gen; /* the access token it carries (c->token_gen then) */
  char *method, *url;
};

/* ---------------------------------------------------------------- utilities */

static char *dup0(const char *s) {
  if (!s)
    return NULL;
  size_t n = strlen(s);
  char *p = malloc(n + 1);
  if (p)
    memcpy(p, s, n + 1);
  return p;
}

static char *dupn(const char *s, size_t n) {
  char *p = malloc(n + 1);
  if (p) {
    memcpy(p, s, n);
    p[n] = '\0';
  }
  return p;
}

/* printf into a fresh malloc'd string. */
static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  int n = vsnprintf(NULL, 0, f, ap);
  va_end(ap);
  if (n < 0)
    return NULL;
  char *p = malloc((size_t)n + 1);
  if (!p)
    return NULL;
  va_start(ap, f);
  vsnprintf(p, (size_t)n + 1, f, ap);
  va_end(ap);
  return p;
}

static void vset_err(struct us_okta_error *err, const char *code, long status, const char *f,
                     va_list ap) {
  if (!err)
    return;
  memset(err, 0, sizeof *err);
  snprintf(err->code, sizeof err->code, "%s", code);
  err->status = status;
  vsnprintf(err->message, sizeof err->message, f, ap);
}

static void set_err(struct us_okta_error *err, const char *code, long status, const char *f, ...)
    __attribute__((format(printf, 4, 5)));
static void set_err(struct us_okta_error *err, const char *code, long status, const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  vset_err(err, code, status, f, ap);
  va_end(ap);
}

/* set_err for a failure with no answer from Okta: code is one of http.h's. */
static void set_net_err(struct us_okta_error *err, const char *code, long status, const char *f,
                        ...) __attribute__((format(printf, 4, 5)));
static void set_net_err(struct us_okta_error *err, const char *code, long status, const char *f,
                        ...) {
  va_list ap;
  va_start(ap, f);
  vset_err(err, code, status, f, ap);
  va_end(ap);
  if (err)
    err->transport = 1;
}

char *us_okta_urlencode(const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  size_t n = strlen(s);
  char *out = malloc(n * 3 + 1), *o = out;
  if (!out)
    return NULL;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (isalnum(*p) || strchr("-._~", *p)) {
      *o++ = (char)*p;
    } else {
      *o++ = '%';
      *o++ = hex[*p >> 4];
      *o++ = hex[*p & 15];
    }
  }
  *o = '\0';
  return out;
}

/* Start of the path in an absolute URL (or the string itself). */
static const char *url_path(const char *url) {
  const char *p = strstr(url, "://");
  if (!p)
    return url;
  p = strchr(p + 3, '/');
  return p ? p : "/";
}

/* Length of the path of url without query or fragment. */
static size_t path_len(const char *path) { return strcspn(path, "?#"); }

/* "scheme://host[:port]" of url, malloc'd. */
static char *origin_of(const char *url) {
  const char *p = strstr(url, "://");
  if (!p)
    return NULL;
  const char *end = p + 3 + strcspn(p + 3, "/?#");
  char *o = dupn(url, (size_t)(end - url));
  for (char *q = o; q && *q; q++)
    *q = (char)tolower((unsigned char)*q);
  return o;
}

/* ---------------------------------------------------------------- buckets */

/* Which rate-limit bucket a request counts against (Okta documents one bucket per endpoint family). */
static int bucket_of(const char *method, const char *url) {
  const char *p = url_path(url);
  size_t n = path_len(p);
  int get = strcmp(method, "GET") == 0;
#define IS(lit) (n == sizeof(lit) - 1 && strncmp(p, lit, n) == 0)
#define UNDER(lit) (n > sizeof(lit) - 1 && strncmp(p, lit, sizeof(lit) - 1) == 0)
  if (IS("/oauth2/v1/token"))
    return B_TOKEN;
  if (IS("/api/v1/users"))
    return B_USERS;
  if (UNDER("/api/v1/users/")) {
    const char *rest = p + sizeof("/api/v1/users/") - 1;
    size_t rn = n - (size_t)(rest - p);
    return get && !memchr(rest, '/', rn) ? B_USER : B_USERS_ANY;
  }
  if (IS("/api/v1/groups"))
    return B_GROUPS_ANY;
  if (UNDER("/api/v1/groups/")) {
    const char *rest = p + sizeof("/api/v1/groups/") - 1;
    return memchr(rest, '/', n - (size_t)(rest - p)) ? B_GROUPS_ANY : B_GROUP;
  }
  if (IS("/api/v1/apps"))
    return B_APPS_ANY;
  if (UNDER("/api/v1/apps/")) {
    const char *rest = p + sizeof("/api/v1/apps/") - 1;
    return memchr(rest, '/', n - (size_t)(rest - p)) ? B_APPS_ANY : B_APP;
  }
  if (IS("/api/v1/logs") || UNDER("/api/v1/logs/"))
    return B_LOGS;
  if (IS("/api/v1") || UNDER("/api/v1/"))
    return B_API;
  return B_OTHER;
#undef IS
#undef UNDER
}

static int header_long(const struct us_http_response *r, const char *name, long long *out) {
  const char *v = us_http_header(r, name);
  if (!v)
    return 0;
  char *end;
  long long x = strtoll(v, &end, 10);
  if (end == v)
    return 0;
  *out = x;
  return 1;
}

/* Reads X-Rate-Limit-* of one attempt into its bucket. The reset is measured
** against the response's Date (never the local clock): windows are not
** minute-aligned and clocks drift. */
static void observe(us_okta *c, int bi, const struct us_http_response *r) {
  c->requests++;
  if (r->code)
    return;
  struct bucket *b = &c->b[bi];
  b->requests++;
  if (r->status == 429)
    b->rate_limited++;
  long long lim, rem, reset;
  if (!header_long(r, "x-rate-limit-limit", &lim) ||
      !header_long(r, "x-rate-limit-remaining", &rem) ||
      !header_long(r, "x-rate-limit-reset", &reset))
    return;
  if (lim == 0 && rem == 0)
    return; /* the concurrency limit, not the bucket */
  /* several reset headers: the smallest one counts */
  for (size_t i = us_http_header_next(r, "x-rate-limit-reset", 0); i < r->nheaders;
       i = us_http_header_next(r, "x-rate-limit-reset", i + 1)) {
    long long x = strtoll(r->headers[i].value, NULL, 10);
    if (x > 0 && x < reset)
      reset = x;
  }
  double date = us_time_now();
  const char *d = us_http_header(r, "date");
  if (d)
    us_time_parse_http_date(d, (size_t)-1, &date);
  double in = (double)reset - date + 1.0;
  if (in < 0)
    in = 0;
  if (in > MAX_GOVERNOR_WAIT_S)
    in = MAX_GOVERNOR_WAIT_S;
  if (!b->known || reset > b->reset) {
    b->known = 1;
    b->limit = (long)lim;
    b->remaining = (long)rem;
    b->reset = reset;
    b->reset_at = us_time_monotonic() + in;
  } else if (reset == b->reset) { /* the same window */
    if (rem < b->remaining) {
      b->remaining = (long)rem; /* a later answer */
      b->limit = (long)lim;
    }
    double at = us_time_monotonic() + in;
    if (at < b->reset_at)
      b->reset_at = at; /* every Date measures the same reset: keep the nearest */
  }
}

/* Engine governor: 0 to start now, else ms to hold the request back. Keeps
** (1 - share) of every bucket free for the org's other integrations. */
static long governor(void *ud, const char *host, const char *method, const char *url) {
  struct oreq *q = ud;
  us_okta *c = q->c;
  struct bucket *b = &c->b[q->bucket];
  double now = us_time_monotonic();
  if (b->known && now < b->reset_at) {
    long ours = (long)((double)b->limit * c->share);
    if (ours < 1)
      ours = 1;
    long reserve = b->limit - ours;
    if (b->remaining - b->inflight <= reserve) {
      b->waits++;
      /* at most 1 s at a time: a later response may bring the reset closer */
      long ms = (long)((b->reset_at - now) * 1000.0) + 1;
      return ms < 1000 ? ms : 1000;
    }
  }
  if (!q->granted) {
    q->granted = 1;
    b->inflight++;
  }
  return 0;
}

static void ungrant(struct oreq *q) {
  if (q->granted) {
    q->granted = 0;
    q->c->b[q->bucket].inflight--;
  }
}

/* ---------------------------------------------------------------- DPoP */

/* A DPoP proof (RFC 9449) for method and url, signed with the DPoP key; an
** API call (with_ath: the access token's hash) carries the API's nonce, a
** token request the token endpoint's. malloc'd or NULL. */
static char *dpop_proof(us_okta *c, const char *method, const char *url, int with_ath) {
  const char *n = with_ath ? c->rs_nonce : c->as_nonce;
  char *htu_s = dupn(url, (size_t)(url_path(url) - url) + path_len(url_path(url)));
  char *jti = us_random_hex(16);
  char *htu = htu_s ? us_json_quote(htu_s) : NULL;
  char *nonce = n ? us_json_quote(n) : NULL;
  char *hdr =
      fmt("{\"typ\":\"dpop+jwt\",\"alg\":\"%s\",\"jwk\":%s}", us_key_alg(c->dpop_key), c->jwk);
  char *claims = NULL, *out = NULL;
  if (htu_s && jti && htu && hdr && (!n || nonce))
    claims = fmt("{\"htm\":\"%s\",\"htu\":%s,\"iat\":%lld,\"jti\":\"%s\"%s%s%s%s%s}", method, htu,
                 (long long)us_time_now(), jti, with_ath && c->ath ? ",\"ath\":\"" : "",
                 with_ath && c->ath ? c->ath : "", with_ath && c->ath ? "\"" : "",
                 nonce ? ",\"nonce\":" : "", nonce ? nonce : "");
  char ebuf[128];
  if (claims)
    out = us_jwt_sign(c->dpop_key, hdr, claims, ebuf, sizeof ebuf);
  free(htu_s);
  free(jti);
  free(htu);
  free(nonce);
  free(hdr);
  free(claims);
  return out;
}

/* ---------------------------------------------------------------- requests */

/* An API answer's DPoP-Nonce is the API's next nonce (RFC 9449 9). */
static void keep_rs_nonce(struct oreq *q, const struct us_http_response *r) {
  const char *n = r->code ? NULL : us_http_header(r, "dpop-nonce");
  if (!q->api || !n || !*n || !q->c->key)
    return;
  char *d = dup0(n);
  if (d) {
    free(q->c->rs_nonce);
    q->c->rs_nonce = d;
  }
}

static void oreq_done(us_http_req *h, const struct us_http_response *r, void *ud) {
  struct oreq *q = ud;
  observe(q->c, q->bucket, r);
  keep_rs_nonce(q, r);
  ungrant(q);
  q->finished = 1;
  q->c->inflight--;
}

static void oreq_retry(us_http_req *h, const struct us_http_response *last, int n, void *ud) {
  struct oreq *q = ud;
  observe(q->c, q->bucket, last);
  keep_rs_nonce(q, last);
  ungrant(q);
  if (q->api && q->c->key && q->c->dpop) {
    char *proof = dpop_proof(q->c, q->method, q->url, 1);
    if (proof)
      us_http_req_set_header(h, "DPoP", proof);
    free(proof);
  }
}

static void oreq_free(struct oreq *q) {
  if (!q)
    return;
  if (!q->finished) {
    ungrant(q);
    q->c->inflight--;
  }
  us_http_release(q->h);
  free(q->method);
  free(q->url);
  free(q);
}

/* Submits method url (absolute) with the given headers plus the engine
** settings of the client. NULL with err on failure. */
static struct oreq *submit_raw(us_okta *c, const char *method, const char *url,
                               const struct us_http_header *hs, size_t nh, const char *body,
                               size_t body_len, int max_retries, struct us_okta_error *err) {
  if (!c->e) {
    set_net_err(err, US_HTTP_ECANCELED, 0, "okta: the HTTP client is closed");
    return NULL;
  }
  struct oreq *q = calloc(1, sizeof *q);
  if (!q || !(q->method = dup0(method)) || !(q->url = dup0(url))) {
    if (q)
      free(q->method);
    free(q);
    set_net_err(err, US_HTTP_ENOMEM, 0, "okta: out of memory");
    return NULL;
  }
  q->c = c;
  q->bucket = bucket_of(method, url);
  q->finished = 1; /* until submitted */
  struct us_http_request r;
  memset(&r, 0, sizeof r);
  r.method = method;
  r.url = url;
  r.headers = hs;
  r.nheaders = nh;
  r.body = body;
  r.body_len = body_len;
  r.timeout_ms = c->timeout_ms;
  r.max_retries = max_retries;
  r.max_wait_ms = c->max_wait_ms;
  r.retry_headers = US_HTTP_RETRY_HEADERS_OKTA;
  r.on_retry = oreq_retry;
  r.done = oreq_done;
  r.ud = q;
  r.governor = governor;
  r.governor_ud = q;
  const char *e = NULL;
  q->h = us_http_submit(c->e, &r, &e);
  if (!q->h) {
    char path[200];
    snprintf(path, sizeof path, "%.*s", (int)path_len(url_path(url)), url_path(url));
    set_net_err(err, US_HTTP_EURL, 0, "okta: %s %s: %s", method, path, e ? e : "cannot submit");
    free(q->method);
    free(q->url);
    free(q);
    return NULL;
  }
  q->finished = 0;
  c->inflight++;
  return q;
}

/* Submits an authenticated API GET of url. */
static struct oreq *submit_api(us_okta *c, const char *url, struct us_okta_error *err) {
  if (us_okta_authenticate(c, err) != 0)
    return NULL;
  struct us_http_header hs[4];
  size_t nh = 0;
  hs[nh++] = (struct us_http_header){"Accept", "application/json"};
  /* Payload trimming: only with all three options. */
  hs[nh++] = (struct us_http_header){
      "Content-Type", "application/json; okta-response=omitCredentials,omitCredentialsLinks,"
                      "omitTransitioningToStatus"};
  char *auth = NULL, *proof = NULL;
  if (c->ssws) {
    hs[nh++] = (struct us_http_header){"Authorization", c->ssws};
  } else {
    auth = fmt("%s %s", c->token_type, c->access_token);
    if (c->dpop && !strcasecmp(c->token_type, "DPoP"))
      proof = dpop_proof(c, "GET", url, 1);
    if (!auth || (c->dpop && !strcasecmp(c->token_type, "DPoP") && !proof)) {
      free(auth);
      free(proof);
      set_net_err(err, US_HTTP_ENOMEM, 0, "okta: cannot sign the DPoP proof");
      return NULL;
    }
    hs[nh++] = (struct us_http_header){"Authorization", auth};
    if (proof)
      hs[nh++] = (struct us_http_header){"DPoP", proof};
  }
  struct oreq *q = submit_raw(c, "GET", url, hs, nh, NULL, 0, c->max_retries, err);
  if (q) {
    q->api = 1;
    q->token_gen = c->token_gen;
  }
  free(auth);
  free(proof);
  return q;
}

/* ---------------------------------------------------------------- errors */

static void copy_json_str(const struct us_jval *root, const char *path, char *out, size_t n) {
  struct us_jval v;
  if (!us_json_get(root, path, &v))
    return;
  char *s = us_json_strdup(&v, NULL);
  if (s) {
    snprintf(out, n, "%s", s);
    for (char *p = out; *p; p++)
      if ((unsigned char)*p < 0x20)
        *p = ' ';
  }
  free(s);
}

static int looks_html(const struct us_http_response *r) {
  const char *ct = us_http_header(r, "content-type");
  if (ct && (strstr(ct, "html") || strstr(ct, "HTML")))
    return 1;
  const char *p = r->body;
  while (p && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
    p++;
  return p && *p == '<';
}

/* Checks a completed request: 0 and *root (the parsed body) when it is a 2xx
** with valid JSON of the wanted type (US_J_ARRAY, US_J_OBJECT, or
** US_J_INVALID for any); -1 with err otherwise. */
static int check_response(const struct oreq *q, const struct us_http_response *r,
                          enum us_jtype want, struct us_jval *root, struct us_okta_error *err) {
  char path[160];
  const char *p = url_path(q->url);
  snprintf(path, sizeof path, "%.*s", (int)path_len(p), p);
  if (r->code) {
    set_net_err(err, r->code, r->status, "okta: %s %s: %s", q->method, path, r->message);
    return -1;
  }
  const char *rid = us_http_header(r, "x-okta-request-id");
  int ok_json = us_json_parse(r->body, r->body_len, root);
  if (r->status >= 200 && r->status < 300) {
    if (!ok_json) {
      if (looks_html(r))
        set_err(err, "ERESPONSE", r->status,
                "okta: %s %s: HTTP %ld with an HTML body instead of JSON (a proxy or sign-in "
                "page?)",
                q->method, path, r->status);
      else
        set_err(err, "ERESPONSE", r->status,
                "okta: %s %s: HTTP %ld with a truncated or malformed JSON body (%zu bytes)",
                q->method, path, r->status, r->body_len);
    } else if (want != US_J_INVALID && root->type != want) {
      set_err(err, "ERESPONSE", r->status, "okta: %s %s: expected a JSON %s, got another type",
              q->method, path, want == US_J_ARRAY ? "array" : "object");
    } else {
      return 0;
    }
    if (rid)
      snprintf(err->request_id, sizeof err->request_id, "%s", rid);
    return -1;
  }
  /* an error status */
  const char *code = "EHTTP";
  if (r->status == 401)
    code = "EAUTH";
  else if (r->status == 403)
    code = "EFORBIDDEN";
  else if (r->status == 404)
    code = "ENOTFOUND";
  else if (r->status == 429)
    code = "ERATELIMIT";
  else if (r->status == 400)
    code = "EINVALID";
  else if (r->status >= 500)
    code = "EHTTP";
  char ecode[24] = "", summary[256] = "", cause[200] = "";
  if (ok_json && root->type == US_J_OBJECT) {
    copy_json_str(root, "errorCode", ecode, sizeof ecode);
    copy_json_str(root, "errorSummary", summary, sizeof summary);
    copy_json_str(root, "errorCauses[0].errorSummary", cause, sizeof cause);
    if (!ecode[0]) { /* OAuth error shape */
      copy_json_str(root, "error", ecode, sizeof ecode);
      copy_json_str(root, "error_description", summary, sizeof summary);
    }
  } else if (looks_html(r)) {
    code = "ERESPONSE";
    snprintf(summary, sizeof summary, "HTML body instead of an Okta error");
  } else {
    snprintf(summary, sizeof summary, "body is not an Okta error (%zu bytes)", r->body_len);
  }
  char retried[64] = "";
  if (r->gave_up)
    snprintf(retried, sizeof retried, "; gave up after %d retr%s", r->retries,
             r->retries == 1 ? "y" : "ies");
  set_err(err, code, r->status, "okta: %s %s: HTTP %ld%s%s %s%s%s%s%s%s%s", q->method, path,
          r->status, ecode[0] ? " " : "", ecode, summary, cause[0] ? " (" : "", cause,
          cause[0] ? ")" : "", rid ? " [request id " : "", rid ? rid : "", rid ? "]" : "");
  size_t ml = strlen(err->message);
  if (retried[0] && ml + strlen(retried) < sizeof err->message)
    memcpy(err->message + ml, retried, strlen(retried) + 1);
  snprintf(err->error_code, sizeof err->error_code, "%s", ecode);
  snprintf(err->summary, sizeof err->summary, "%s", summary);
  if (rid)
    snprintf(err->request_id, sizeof err->request_id, "%s", rid);
  return -1;
}

/* ---------------------------------------------------------------- OAuth */

static void forget_token(us_okta *c) {
  if (c->access_token)
    memset(c->access_token, 0, strlen(c->access_token));
  free(c->access_token);
  free(c->token_type);
  free(c->granted_scope);
  free(c->ath);
  c->access_token = c->token_type = c->granted_scope = c->ath = NULL;
}

/* The client assertion (private_key_jwt): iss = sub = client_id, aud = the
** token URL, exp 5 minutes ahead, a fresh jti. */
static char *client_assertion(us_okta *c) {
  long long now = (long long)us_time_now();
  char *jti = us_random_hex(16);
  char *cid = us_json_quote(c->client_id), *aud = us_json_quote(c->token_url);
  char *kid = c->key_id ? us_json_quote(c->key_id) : NULL;
  char *hdr =
      fmt("{\"alg\":\"%s\"%s%s}", us_key_alg(c->key), kid ? ",\"kid\":" : "", kid ? kid : "");
  char *claims = NULL, *out = NULL;
  if (jti && cid && aud)
    claims = fmt("{\"iss\":%s,\"sub\":%s,\"aud\":%s,\"iat\":%lld,\"exp\":%lld,\"jti\":\"%s\"}", cid,
                 cid, aud, now, now + 300, jti);
  char ebuf[128];
  if (hdr && claims)
    out = us_jwt_sign(c->key, hdr, claims, ebuf, sizeof ebuf);
  free(jti);
  free(cid);
  free(aud);
  free(kid);
  free(hdr);
  free(claims);
  return out;
}

/* One token request; 0 ok, 1 to repeat with a new nonce, -1 error. */
static int token_attempt(us_okta *c, struct us_okta_error *err) {
  char *assertion = client_assertion(c);
  char *scope = us_okta_urlencode(c->scopes);
  char *proof = c->dpop ? dpop_proof(c, "POST", c->token_url, 0) : NULL;
  char *body = NULL;
  if (assertion && scope)
    body = fmt("grant_type=client_credentials&scope=%s&client_assertion_type=urn%%3Aietf%%3Aparams"
               "%%3Aoauth%%3Aclient-assertion-type%%3Ajwt-bearer&client_assertion=%s",
               scope, assertion);
  free(assertion);
  free(scope);
  if (!body || (c->dpop && !proof)) {
    free(body);
    free(proof);
    set_err(err, "EAUTH", 0, "okta: cannot sign the client assertion");
    return -1;
  }
  struct us_http_header hs[3] = {{"Accept", "application/json"},
                                 {"Content-Type", "application/x-www-form-urlencoded"},
                                 {"DPoP", proof}};
  struct oreq *q =
      submit_raw(c, "POST", c->token_url, hs, proof ? 3 : 2, body, strlen(body), 0, err);
  free(body);
  free(proof);
  if (!q)
    return -1;
  us_http_wait(c->e, &q->h, 1, -1);
  const struct us_http_response *r = us_http_result(q->h);
  struct us_jval root, v;
  int rc = -1;
  if (!r) {
    set_net_err(err, US_HTTP_ECANCELED, 0, "okta: token request did not finish");
  } else if (r->status == 400 && !r->code && us_json_parse(r->body, r->body_len, &root) &&
             us_json_get(&root, "error", &v) && us_json_streq(&v, "use_dpop_nonce") &&
             us_http_header(r, "dpop-nonce")) {
    free(c->as_nonce);
    c->as_nonce = dup0(us_http_header(r, "dpop-nonce"));
    rc = 1;
  } else if (check_response(q, r, US_J_OBJECT, &root, err) == 0) {
    /* RFC 9449 8.2: a nonce on a successful answer is the one to use next */
    const char *nn = us_http_header(r, "dpop-nonce");
    if (c->dpop && nn && *nn) {
      free(c->as_nonce);
      c->as_nonce = dup0(nn);
    }
    struct us_jval at, tt, ex, sc;
    long long secs = 3600;
    if (!us_json_get(&root, "access_token", &at) || at.type != US_J_STRING) {
      set_err(err, "EAUTH", r->status, "okta: token response without access_token");
    } else {
      forget_token(c);
      c->access_token = us_json_strdup(&at, NULL);
      c->token_type =
          us_json_get(&root, "token_type", &tt) ? us_json_strdup(&tt, NULL) : dup0("Bearer");
      c->granted_scope =
          us_json_get(&root, "scope", &sc) ? us_json_strdup(&sc, NULL) : dup0(c->scopes);
      if (us_json_get(&root, "expires_in", &ex))
        us_json_int(&ex, &secs);
      unsigned char h[32];
      if (c->access_token)
        us_sha256(c->access_token, strlen(c->access_token), h);
      c->ath = us_b64url_encode(h, 32);
      if (!c->access_token || !c->token_type || !c->ath || !c->granted_scope) {
        forget_token(c);
        set_net_err(err, US_HTTP_ENOMEM, 0, "okta: out of memory");
      } else {
        double renew = RENEW_BEFORE_S < (double)secs / 2 ? RENEW_BEFORE_S : (double)secs / 2;
        c->token_until = us_time_monotonic() + (double)secs - renew;
        c->token_gen++;
        rc = 0;
      }
    }
  } else if (err->status == 400 || err->status == 401) {
    /* the token endpoint speaks OAuth: invalid_client, invalid_dpop_proof, ... */
    snprintf(err->code, sizeof err->code, "EAUTH");
    if (!strcmp(err->error_code, "invalid_dpop_proof")) {
      size_t ml = strlen(err->message);
      snprintf(err->message + ml, sizeof err->message - ml,
               " (DPoP proofs are signed %s%s)", us_key_alg(c->dpop_key),
               c->dpop_key == c->key ? " with the client key" : " with a key made for this run");
    }
  }
  oreq_free(q);
  return rc;
}

/* Reads the org authorization server's metadata (RFC 8414) once, for the
** DPoP proof algorithms it accepts (RFC 9449 5.1): when the client key's
** algorithm is not among them but ES256 is, proofs are signed with an EC
** P-256 key made for this process (the client still authenticates with its
** own key). No metadata, or no list in it: the client key signs. 0, or -1
** with err when no algorithm we can sign is accepted. */
static int read_metadata(us_okta *c, struct us_okta_error *err) {
  if (c->meta_done || !c->dpop)
    return 0;
  c->meta_done = 1;
  char *url = fmt("%s/.well-known/oauth-authorization-server", c->base);
  struct us_http_header hs[1] = {{"Accept", "application/json"}};
  struct us_okta_error scratch;
  struct oreq *q = url ? submit_raw(c, "GET", url, hs, 1, NULL, 0, c->max_retries, &scratch) : NULL;
  free(url);
  if (!q)
    return 0;
  us_http_wait(c->e, &q->h, 1, -1);
  const struct us_http_response *r = us_http_result(q->h);
  struct us_jval root, algs, a;
  int rc = 0;
  if (r && !r->code && r->status == 200 && us_json_parse(r->body, r->body_len, &root) &&
      us_json_get(&root, "dpop_signing_alg_values_supported", &algs) &&
      algs.type == US_J_ARRAY) {
    int mine = 0, es256 = 0;
    char list[128] = "";
    size_t pos = 0;
    while (us_json_next_elem(&algs, &pos, &a)) {
      mine |= us_json_streq(&a, us_key_alg(c->key));
      es256 |= us_json_streq(&a, "ES256");
      if (a.type == US_J_STRING && strlen(list) + a.len + 2 < sizeof list)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%.*s", list[0] ? ", " : "",
                 (int)a.len - 2, a.start + 1);
    }
    char kerr[128];
    struct us_key *k = NULL;
    char *jwk = NULL;
    if (mine) {
      /* the client key will do */
    } else if (es256 && (k = us_key_generate_p256(kerr, sizeof kerr)) &&
               (jwk = us_key_public_jwk(k))) {
      if (c->dpop_key != c->key)
        us_key_free(c->dpop_key);
      free(c->jwk);
      c->dpop_key = k;
      c->jwk = jwk;
    } else {
      us_key_free(k);
      set_err(err, "EAUTH", 0,
              "okta: the authorization server accepts DPoP proofs signed with %s only; usersync "
              "signs with RS256 (an RSA client key) or ES256",
              list[0] ? list : "no algorithm");
      rc = -1;
    }
  }
  oreq_free(q);
  return rc;
}

int us_okta_authenticate(us_okta *c, struct us_okta_error *err) {
  if (!c->key)
    return 0;
  if (c->access_token && us_time_monotonic() < c->token_until)
    return 0;
  if (read_metadata(c, err) != 0)
    return -1;
  for (int i = 0; i < 3; i++) {
    int rc = token_attempt(c, err);
    if (rc <= 0)
      return rc;
  }
  set_err(err, "EAUTH", 400, "okta: POST /oauth2/v1/token: the DPoP nonce was refused");
  return -1;
}

int us_okta_is_oauth(const us_okta *c) { return c->key != NULL; }
const char *us_okta_token_scope(const us_okta *c) {
  return c->granted_scope ? c->granted_scope : "";
}

/* ---------------------------------------------------------------- client */

void us_okta_options_init(struct us_okta_options *o) {
  memset(o, 0, sizeof *o);
  o->dpop = 1;
  o->budget_share = 0.5;
  o->concurrency = 8;
  o->max_retries = -1;
}

us_okta *us_okta_new(us_http *e, const struct us_okta_options *o, struct us_okta_error *err) {
  if (!o->url || (strncmp(o->url, "https://", 8) != 0 && strncmp(o->url, "http://", 7) != 0)) {
    set_err(err, "ECONFIG", 0, "okta: url must be an https:// URL");
    return NULL;
  }
  if (!o->token == !o->client_id) {
    set_err(err, "ECONFIG", 0, "okta: give either an API token or an OAuth client_id");
    return NULL;
  }
  if (o->client_id && !o->private_key) {
    set_err(err, "ECONFIG", 0, "okta: OAuth needs a private_key");
    return NULL;
  }
  if (!(o->budget_share > 0 && o->budget_share <= 1) || o->concurrency < 1) {
    set_err(err, "ECONFIG", 0, "okta: budget_share must be in (0, 1], concurrency >= 1");
    return NULL;
  }
  us_okta *c = calloc(1, sizeof *c);
  if (!c)
    goto nomem;
  c->e = e;
  size_t n = strlen(o->url);
  while (n > 0 && o->url[n - 1] == '/')
    n--;
  c->base = dupn(o->url, n);
  c->origin = c->base ? origin_of(c->base) : NULL;
  c->token_url = c->base ? fmt("%s/oauth2/v1/token", c->base) : NULL;
  if (!c->base || !c->origin || !c->token_url)
    goto nomem;
  c->share = o->budget_share;
  c->concurrency = o->concurrency;
  c->timeout_ms = o->timeout_ms;
  c->max_retries = o->max_retries;
  c->max_wait_ms = o->max_wait_ms;
  c->dpop = o->dpop;
  if (o->token) {
    if (!(c->ssws = fmt("SSWS %s", o->token)))
      goto nomem;
  } else {
    char kerr[200] = "";
    c->key = us_key_load_pem(o->private_key, o->private_key_len, kerr, sizeof kerr);
    if (!c->key) {
      set_err(err, "ECONFIG", 0, "okta: oauth.private_key: %s", kerr);
      us_okta_free(c);
      return NULL;
    }
    c->client_id = dup0(o->client_id);
    c->key_id = dup0(o->key_id);
    c->scopes = dup0(o->scopes ? o->scopes : DEFAULT_SCOPES);
    c->dpop_key = c->key;
    c->jwk = us_key_public_jwk(c->key);
    if (!c->client_id || (o->key_id && !c->key_id) || !c->scopes || !c->jwk)
      goto nomem;
  }
  return c;
nomem:
  us_okta_free(c);
  set_net_err(err, US_HTTP_ENOMEM, 0, "okta: out of memory");
  return NULL;
}

void us_okta_free(us_okta *c) {
  if (!c)
    return;
  while (c->batches)
    us_okta_batch_free(c->batches);
  forget_token(c);
  free(c->base);
  free(c->origin);
  if (c->ssws) {
    memset(c->ssws, 0, strlen(c->ssws));
    free(c->ssws);
  }
  free(c->client_id);
  free(c->key_id);
  free(c->scopes);
  free(c->token_url);
  free(c->jwk);
  free(c->as_nonce);
  free(c->rs_nonce);
  if (c->dpop_key != c->key)
    us_key_free(c->dpop_key);
  us_key_free(c->key);
  free(c);
}

void us_okta_set_engine(us_okta *c, us_http *e) { c->e = e; }

void us_okta_bucket(const us_okta *c, size_t i, struct us_okta_bucket *out) {
  memset(out, 0, sizeof *out);
  if (i >= US_OKTA_NBUCKETS)
    return;
  const struct bucket *b = &c->b[i];
  out->name = bucket_names[i];
  out->known = b->known;
  out->limit = b->limit;
  out->remaining = b->remaining;
  out->reset = b->reset;
  double in = b->known ? b->reset_at - us_time_monotonic() : 0;
  out->reset_in = in > 0 ? in : 0;
  out->inflight = b->inflight;
  out->requests = b->requests;
  out->throttled = b->waits;
  out->waits = b->waits;
  out->rate_limited = b->rate_limited;
}

unsigned long us_okta_requests(const us_okta *c) { return c->requests; }

/* ---------------------------------------------------------------- records */

/* What the records of a path are (each read is checked record by record:
** a member list with a null entry must fail, not shrink the group). */
enum rec { REC_OBJECT, REC_USER, REC_GROUP, REC_APPUSER, REC_APPGROUP, REC_APP, REC_LOG };
static const char *const rec_names[] = {"object", "User", "Group", "AppUser",
                                        "ApplicationGroupAssignment", "Application", "LogEvent"};

/* Number of '/'-separated segments of path p (length n) after prefix. */
static int segs_after(const char *p, size_t n, const char *prefix, const char **rest) {
  size_t pl = strlen(prefix);
  if (n < pl || strncmp(p, prefix, pl) != 0)
    return -1;
  if (n == pl)
    return 0;
  if (p[pl] != '/')
    return -1;
  *rest = p + pl + 1;
  int k = 1;
  for (size_t i = pl + 1; i < n; i++)
    k += p[i] == '/';
  return k;
}

static enum rec record_of(const char *url) {
  const char *p = url_path(url), *rest = NULL;
  size_t n = path_len(p);
  int k;
  if ((k = segs_after(p, n, "/api/v1/users", &rest)) >= 0)
    return k <= 1 ? REC_USER : k == 2 && !strncmp(rest + strcspn(rest, "/"), "/groups", 7)
                                   ? REC_GROUP
                                   : REC_OBJECT;
  if ((k = segs_after(p, n, "/api/v1/groups", &rest)) >= 0)
    return k <= 1 ? REC_GROUP : k == 2 && !strncmp(rest + strcspn(rest, "/"), "/users", 6)
                                    ? REC_USER
                                    : REC_OBJECT;
  if ((k = segs_after(p, n, "/api/v1/apps", &rest)) >= 1) {
    if (k == 1)
      return REC_APP;
    const char *sub = rest + strcspn(rest, "/");
    if (k <= 3 && !strncmp(sub, "/users", 6) && (sub[6] == '/' || sub + 6 == p + n))
      return REC_APPUSER;
    if (k <= 3 && !strncmp(sub, "/groups", 7) && (sub[7] == '/' || sub + 7 == p + n))
      return REC_APPGROUP;
    return REC_OBJECT;
  }
  if (segs_after(p, n, "/api/v1/logs", &rest) == 0)
    return REC_LOG;
  return REC_OBJECT;
}

/* What value v is, for a message: "null", "a number", "a string of 71680
** bytes", "\"a b\"" (short strings quoted, control bytes shown as '?'). */
static void describe(const struct us_jval *v, char *out, size_t n) {
  static const char *const kinds[] = {"invalid JSON", "null",     "a boolean", "a number",
                                      "a string",     "an array", "an object"};
  if (v->type != US_J_STRING || v->len > 42) {
    if (v->type == US_J_STRING)
      snprintf(out, n, "a string of %zu bytes", v->len - 2);
    else
      snprintf(out, n, "%s", kinds[v->type]);
    return;
  }
  snprintf(out, n, "%.*s", (int)v->len, v->start);
  for (char *q = out; *q; q++)
    if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f)
      *q = '?';
}

/* 1 when v is an Okta id: a short alphanumeric string (00u1a2b3c4D5e6F7g8h9). */
static int is_okta_id(const struct us_jval *v) {
  if (v->type != US_J_STRING || v->len < 3 || v->len > US_OKTA_ID_MAX + 2)
    return 0;
  for (size_t i = 1; i + 1 < v->len; i++)
    if (!isalnum((unsigned char)v->start[i]))
      return 0;
  return 1;
}

/* Checks field `path` of obj: kind 'i' an Okta id, 's' a non-empty string,
** 'S' a string (may be empty), 'o' an object, 'a' an array or null. 0 ok,
** -1 with why filled. */
static int need(const struct us_jval *obj, const char *path, char kind, char *why, size_t n) {
  struct us_jval v;
  char d[64];
  if (!us_json_get(obj, path, &v)) {
    snprintf(why, n, "%s is missing", path);
    return -1;
  }
  int ok = kind == 'i'   ? is_okta_id(&v)
           : kind == 's' ? v.type == US_J_STRING && v.len > 2
           : kind == 'S' ? v.type == US_J_STRING
           : kind == 'o' ? v.type == US_J_OBJECT
                         : v.type == US_J_ARRAY || v.type == US_J_NULL;
  if (ok)
    return 0;
  describe(&v, d, sizeof d);
  snprintf(why, n, "%s is %s%s", path, d,
           kind == 'i'   ? ", not an Okta id"
           : kind == 's' ? ", not a non-empty string"
           : kind == 'S' ? ", not a string"
           : kind == 'o' ? ", not an object"
                         : ", not an array");
  return -1;
}

static int check_user(const struct us_jval *u, char *why, size_t n) {
  return need(u, "id", 'i', why, n) || need(u, "status", 's', why, n) ||
                 need(u, "profile", 'o', why, n) || need(u, "profile.login", 's', why, n)
             ? -1
             : 0;
}

/* 0 when record r is a valid `kind`, else -1 with why filled. */
static int check_record(enum rec kind, const struct us_jval *r, char *why, size_t n) {
  char d[64];
  if (r->type != US_J_OBJECT) {
    describe(r, d, sizeof d);
    snprintf(why, n, "the record is %s, not an object", d);
    return -1;
  }
  struct us_jval v;
  switch (kind) {
  case REC_USER:
    return check_user(r, why, n);
  case REC_GROUP:
    return need(r, "id", 'i', why, n) || need(r, "type", 's', why, n) ||
                   need(r, "profile", 'o', why, n) || need(r, "profile.name", 's', why, n)
               ? -1
               : 0;
  case REC_APPUSER:
    if (need(r, "id", 'i', why, n) || need(r, "scope", 's', why, n) ||
        need(r, "status", 's', why, n))
      return -1;
    if (us_json_get(r, "_embedded.user", &v)) { /* expand=user */
      char inner[200];
      struct us_jval id, uid;
      if (check_record(REC_USER, &v, inner, sizeof inner)) {
        snprintf(why, n, "_embedded.user: %.160s", inner);
        return -1;
      }
      us_json_get(r, "id", &id);
      us_json_get(&v, "id", &uid);
      if (id.len != uid.len || memcmp(id.start, uid.start, id.len) != 0) {
        snprintf(why, n, "_embedded.user.id differs from the AppUser id");
        return -1;
      }
    }
    return 0;
  case REC_APPGROUP:
  case REC_APP:
    return need(r, "id", 'i', why, n);
  case REC_LOG: {
    if (need(r, "uuid", 's', why, n) || need(r, "published", 's', why, n) ||
        need(r, "eventType", 's', why, n))
      return -1;
    if (!us_json_get(r, "target", &v) || v.type == US_J_NULL)
      return 0;
    if (v.type != US_J_ARRAY)
      return need(r, "target", 'a', why, n);
    struct us_jval t, ty;
    size_t pos = 0;
    for (int i = 0; us_json_next_elem(&v, &pos, &t); i++) {
      if (t.type != US_J_OBJECT) {
        describe(&t, d, sizeof d);
        snprintf(why, n, "target[%d] is %s, not an object", i, d);
        return -1;
      }
      /* the ids a changes read re-reads must be ids */
      if (us_json_get(&t, "type", &ty) &&
          (us_json_streq(&ty, "User") || us_json_streq(&ty, "UserGroup")) &&
          need(&t, "id", 'i', why, n)) {
        char inner[200];
        snprintf(inner, sizeof inner, "%s", why);
        snprintf(why, n, "target[%d].%.160s", i, inner);
        return -1;
      }
    }
    return 0;
  }
  default:
    return 0;
  }
}

/* Checks every record of a page (or the object of a get): 0, or -1 with
** err (ERESPONSE) naming the read, the page and the record. */
static int check_records(const struct oreq *q, const struct us_http_response *r,
                         const struct us_jval *root, int single, size_t page,
                         struct us_okta_error *err) {
  enum rec kind = record_of(q->url);
  char why[200];
  size_t bad = 0;
  if (single) {
    if (check_record(kind, root, why, sizeof why) == 0)
      return 0;
  } else {
    struct us_jval el;
    size_t pos = 0;
    for (;;) {
      if (!us_json_next_elem(root, &pos, &el))
        return 0;
      bad++;
      if (check_record(kind, &el, why, sizeof why) != 0)
        break;
    }
  }
  char path[160], where[64] = " the answer";
  const char *p = url_path(q->url);
  snprintf(path, sizeof path, "%.*s", (int)path_len(p), p);
  if (!single)
    snprintf(where, sizeof where, " record %zu of page %zu", bad, page);
  const char *rid = us_http_header(r, "x-okta-request-id");
  set_err(err, "ERESPONSE", r->status, "okta: %s %s:%s is not a valid %s: %s%s%s%s",
          q->method, path, where, rec_names[kind], why, rid ? " [request id " : "",
          rid ? rid : "", rid ? "]" : "");
  snprintf(err->summary, sizeof err->summary, "%s", why);
  if (rid)
    snprintf(err->request_id, sizeof err->request_id, "%s", rid);
  return -1;
}

/* ---------------------------------------------------------------- endpoints */

static char *absolute(us_okta *c, const char *u);
static int same_origin(us_okta *c, const char *url);

const char *const us_okta_ep_names[] = {"users",     "user",          "user_groups", "groups",
                                        "group",     "group_members", "app",         "app_user",
                                        "app_users", "app_groups",    "logs",        NULL};

/* Appends "/<encoded id>" (nothing and bad when id is NULL). */
static void sb_id(struct us_sb *b, const char *id) {
  char *enc = id ? us_okta_urlencode(id) : NULL;
  if (!enc) {
    b->bad = 1;
    return;
  }
  us_sb_str(b, "/");
  us_sb_str(b, enc);
  free(enc);
}

/* Appends "<sep>name=<encoded value>" when value is set. */
static void sb_param(struct us_sb *b, const char *name, const char *value) {
  if (!value)
    return;
  char *enc = us_okta_urlencode(value);
  if (!enc) {
    b->bad = 1;
    return;
  }
  us_sb_str(b, strchr(b->s ? b->s : "", '?') ? "&" : "?");
  us_sb_str(b, name);
  us_sb_str(b, "=");
  us_sb_str(b, enc);
  free(enc);
}

static void sb_limit(struct us_sb *b, int limit, int max) {
  char n[32];
  snprintf(n, sizeof n, "?limit=%d", limit > 0 ? limit : max);
  us_sb_str(b, n);
}

/* The path and query of op, malloc'd; NULL when an id is missing or no memory. */
static char *op_url(const struct us_okta_op *op) {
  struct us_sb b = {0};
  switch (op->ep) {
  case US_OKTA_USERS:
  case US_OKTA_GROUPS:
    us_sb_str(&b, op->ep == US_OKTA_USERS ? "/api/v1/users" : "/api/v1/groups");
    sb_limit(&b, op->limit, 200);
    sb_param(&b, "filter", op->filter);
    sb_param(&b, "search", op->search);
    break;
  case US_OKTA_USER:
  case US_OKTA_USER_GROUPS:
    us_sb_str(&b, "/api/v1/users");
    sb_id(&b, op->id);
    if (op->ep == US_OKTA_USER_GROUPS) {
      us_sb_str(&b, "/groups");
      sb_limit(&b, op->limit, 200);
    }
    break;
  case US_OKTA_GROUP:
  case US_OKTA_GROUP_MEMBERS:
    us_sb_str(&b, "/api/v1/groups");
    sb_id(&b, op->id);
    if (op->ep == US_OKTA_GROUP_MEMBERS) {
      us_sb_str(&b, "/users");
      sb_limit(&b, op->limit, 200);
    }
    break;
  case US_OKTA_APP:
  case US_OKTA_APP_USER:
  case US_OKTA_APP_USERS:
  case US_OKTA_APP_GROUPS:
    us_sb_str(&b, "/api/v1/apps");
    sb_id(&b, op->id);
    if (op->ep == US_OKTA_APP_USER) {
      us_sb_str(&b, "/users");
      sb_id(&b, op->user);
    } else if (op->ep != US_OKTA_APP) {
      us_sb_str(&b, op->ep == US_OKTA_APP_USERS ? "/users" : "/groups");
      sb_limit(&b, op->limit, op->ep == US_OKTA_APP_USERS ? 500 : 200);
    }
    if (op->expand_user && (op->ep == US_OKTA_APP_USER || op->ep == US_OKTA_APP_USERS))
      sb_param(&b, "expand", "user");
    break;
  case US_OKTA_LOGS:
    if (op->cursor) {
      us_sb_str(&b, op->cursor);
      break;
    }
    us_sb_str(&b, "/api/v1/logs");
    sb_limit(&b, op->limit, 1000);
    sb_param(&b, "since", op->since);
    sb_param(&b, "filter", op->filter);
    break;
  default:
    b.bad = 1;
  }
  if (b.bad)
    free(b.s);
  return b.bad ? NULL : b.s;
}

static int ep_single(enum us_okta_ep ep) {
  return ep == US_OKTA_USER || ep == US_OKTA_GROUP || ep == US_OKTA_APP || ep == US_OKTA_APP_USER;
}

/* ---------------------------------------------------------------- page shapes */

/* 1 when key is one of the NULL-terminated names. */
static int key_in(const struct us_jval *key, const char *const *names) {
  for (; *names; names++)
    if (us_json_streq(key, *names))
      return 1;
  return 0;
}

/* Appends the members of object obj except those named in drop, each
** preceded by a comma unless it is the first one written (*first). */
static void sb_members(struct us_sb *b, const struct us_jval *obj, const char *const *drop,
                       int *first) {
  struct us_jval k, v;
  size_t pos = 0;
  while (us_json_next_member(obj, &pos, &k, &v)) {
    if (key_in(&k, drop))
      continue;
    if (!*first)
      us_sb_put(b, ",", 1);
    *first = 0;
    us_sb_put(b, k.start, (size_t)(v.start + v.len - k.start));
  }
}

static const char *const user_drop[] = {"_links", "credentials", "type", NULL};
static const char *const appuser_drop[] = {"_embedded", "_links", NULL};

/* One record of a US_OKTA_SLIM page into b; -1 when an AppUser lacks its User. */
static int slim_record(struct us_sb *b, enum rec kind, const struct us_jval *r) {
  int first = 1;
  struct us_jval u;
  if (kind == REC_APPUSER) {
    if (!us_json_get(r, "_embedded.user", &u) || u.type != US_J_OBJECT)
      return -1;
    us_sb_put(b, "{", 1);
    sb_members(b, &u, user_drop, &first);
    us_sb_str(b, first ? "\"app_assignment\":{" : ",\"app_assignment\":{");
    first = 1;
    sb_members(b, r, appuser_drop, &first);
    us_sb_put(b, "}}", 2);
  } else if (kind == REC_USER) {
    us_sb_put(b, "{", 1);
    sb_members(b, r, user_drop, &first);
    us_sb_put(b, "}", 1);
  } else {
    us_sb_put(b, r->start, r->len);
  }
  return 0;
}

/* The page `root` (or a get's object) of request q, slimmed: malloc'd text
** in *out. 0, or -1 with err. */
static int slim_page(const struct oreq *q, const struct us_jval *root, int single, char **out,
                     size_t *len, struct us_okta_error *err) {
  enum rec kind = record_of(q->url);
  struct us_sb b = {0};
  int bad = 0;
  if (single) {
    bad = slim_record(&b, kind, root);
  } else {
    struct us_jval el;
    size_t pos = 0;
    us_sb_put(&b, "[", 1);
    for (int i = 0; !bad && us_json_next_elem(root, &pos, &el); i++) {
      if (i)
        us_sb_put(&b, ",", 1);
      bad = slim_record(&b, kind, &el);
    }
    us_sb_put(&b, "]", 1);
  }
  if (bad || b.bad) {
    free(b.s);
    char path[160];
    snprintf(path, sizeof path, "%.*s", (int)path_len(url_path(q->url)), url_path(q->url));
    if (bad)
      set_err(err, "ERESPONSE", 200,
              "okta: GET %s: app user without _embedded.user (expand=user not honoured)", path);
    else
      set_net_err(err, US_HTTP_ENOMEM, 0, "okta: out of memory");
    return -1;
  }
  *out = b.s;
  *len = b.n;
  return 0;
}

/* The ids of the records of a page, malloc'd. 0, or -1 (no memory). */
static int page_ids(const struct us_jval *root, size_t count, char ***ids, size_t *n) {
  *n = 0;
  *ids = calloc(count ? count : 1, sizeof **ids);
  if (!*ids)
    return -1;
  struct us_jval el, id;
  size_t pos = 0;
  while (*n < count && us_json_next_elem(root, &pos, &el)) {
    if (!us_json_get(&el, "id", &id) || id.type != US_J_STRING)
      continue;
    if (!((*ids)[*n] = us_json_strdup(&id, NULL)))
      return -1;
    (*n)++;
  }
  return 0;
}

/* ---------------------------------------------------------------- jobs */

struct ojob {
  size_t index;
  void *tag;
  enum us_okta_shape shape;
  int single, stop_on_empty;
  size_t max_pages;
  char *url; /* next URL to request, NULL when none */
  struct oreq *cur;
  int nonce_retried, auth_retried; /* the current page was asked again for that */
  size_t pages, items;
  char *cursor; /* LOGS: where the next poll starts */
  int ended;    /* DONE emitted */
  struct us_qlink ql; /* in the batch's ready queue (queued) */
  int queued;
};

struct evnode {
  struct us_okta_event *ev;
  struct evnode *next;
};

/* Pages a batch may hold parsed and not taken by its caller while it
** requests more (us_okta_batch_next's prefetch). */
#define PREFETCH 8
/* While its caller takes pages already here, a batch still gives the
** engine a turn at least this often (seconds): the other clients sharing
** it (the targets' reads that run with the Okta read) keep their requests
** going instead of waiting for the caller to run out of pages. */
#define TURN_EVERY 0.002

struct us_okta_batch {
  us_okta *c;
  struct ojob **jobs;
  size_t n, cap;
  size_t first; /* jobs before it have ended */
  struct evnode *head, *tail;
  size_t npages;         /* PAGE events queued, not taken yet */
  double turned;         /* us_time_monotonic() of our last engine turn */
  struct us_queue ready; /* jobs with a page to request, waiting for a slot */
  us_okta_batch *next;   /* the client's open batches */
};

/* Queues j for a slot when it has a page to request and none in flight. A
** listing's next page goes before the jobs that have not started: a
** cursor-paged listing is a chain of requests one after the other (the
** users of a large org: tens of pages), which would otherwise wait for a
** slot behind every member list submitted with it; the jobs waiting behind
** it fill the other slots. */
static void job_ready(us_okta_batch *b, struct ojob *j) {
  if (j->queued || j->cur || !j->url || j->ended)
    return;
  if (j->pages > 0)
    us_queue_push_front(&b->ready, &j->ql);
  else
    us_queue_push(&b->ready, &j->ql);
  j->queued = 1;
}

void us_okta_event_free(struct us_okta_event *ev) {
  if (!ev)
    return;
  free(ev->body);
  for (size_t i = 0; i < ev->nids; i++)
    free(ev->ids[i]);
  free(ev->ids);
  free(ev->cursor);
  free(ev);
}

/* Appends ev to the batch's queue (takes it; frees it when out of memory). */
static void emit(us_okta_batch *b, struct ojob *j, struct us_okta_event *ev) {
  struct evnode *n = malloc(sizeof *n);
  if (!n) {
    us_okta_event_free(ev);
    return;
  }
  ev->tag = j->tag;
  ev->job = j->index;
  b->npages += ev->type == US_OKTA_PAGE;
  n->ev = ev;
  n->next = NULL;
  if (b->tail)
    b->tail->next = n;
  else
    b->head = n;
  b->tail = n;
}

/* Ends job j with its DONE: ok, or failed with err. */
static void job_end(us_okta_batch *b, struct ojob *j, const struct us_okta_error *err) {
  if (j->queued)
    us_queue_remove(&b->ready, &j->ql);
  j->queued = 0;
  oreq_free(j->cur);
  j->cur = NULL;
  free(j->url);
  j->url = NULL;
  j->ended = 1;
  struct us_okta_event *ev = calloc(1, sizeof *ev);
  if (!ev)
    return;
  ev->type = US_OKTA_DONE;
  ev->ok = err == NULL;
  if (err)
    ev->error = *err;
  ev->cursor = j->cursor;
  j->cursor = NULL;
  ev->pages = j->pages;
  ev->items = j->items;
  emit(b, j, ev);
}

static void job_free(struct ojob *j) {
  oreq_free(j->cur);
  free(j->url);
  free(j->cursor);
  free(j);
}

us_okta_batch *us_okta_batch_new(us_okta *c) {
  us_okta_batch *b = calloc(1, sizeof *b);
  if (!b)
    return NULL;
  b->c = c;
  b->next = c->batches;
  c->batches = b;
  return b;
}

int us_okta_submit(us_okta_batch *b, const struct us_okta_op *op, struct us_okta_error *err) {
  us_okta *c = b->c;
  char *path = op_url(op);
  if (!path) {
    if (op->ep < US_OKTA_USERS || op->ep > US_OKTA_LOGS)
      set_err(err, "ECONFIG", 0, "okta: unknown endpoint %d", (int)op->ep);
    else
      set_err(err, "ECONFIG", 0, "okta: %s needs an id", us_okta_ep_names[op->ep - 1]);
    return -1;
  }
  if (b->n == b->cap) {
    size_t cap = b->cap ? 2 * b->cap : 8;
    struct ojob **v = realloc(b->jobs, cap * sizeof *v);
    if (!v) {
      free(path);
      set_net_err(err, US_HTTP_ENOMEM, 0, "okta: out of memory");
      return -1;
    }
    b->jobs = v;
    b->cap = cap;
  }
  struct ojob *j = calloc(1, sizeof *j);
  if (!j || !(j->url = absolute(c, path))) {
    free(j);
    free(path);
    set_net_err(err, US_HTTP_ENOMEM, 0, "okta: out of memory");
    return -1;
  }
  free(path);
  j->index = b->n;
  j->tag = op->tag;
  j->shape = op->shape;
  j->single = ep_single(op->ep);
  j->stop_on_empty = op->ep == US_OKTA_LOGS;
  j->max_pages = op->max_pages;
  b->jobs[b->n++] = j;
  if (!same_origin(c, j->url)) { /* e.g. a stored cursor of another org */
    struct us_okta_error e;
    set_err(&e, "EBADLINK", 0, "okta: %.*s is not on %s; not requested",
            (int)path_len(url_path(j->url)), url_path(j->url), c->origin);
    job_end(b, j, &e);
  }
  job_ready(b, j);
  return 0;
}

void us_okta_batch_free(us_okta_batch *b) {
  if (!b)
    return;
  for (us_okta_batch **pp = &b->c->batches; *pp; pp = &(*pp)->next)
    if (*pp == b) {
      *pp = b->next;
      break;
    }
  for (size_t i = 0; i < b->n; i++)
    job_free(b->jobs[i]);
  free(b->jobs);
  while (b->head) {
    struct evnode *n = b->head;
    b->head = n->next;
    us_okta_event_free(n->ev);
    free(n);
  }
  free(b);
}

/* What to do about a 401 to an OAuth API call (RFC 9449 9, RFC 6750 3.1):
** 1 ask again with the API's new nonce (kept by the done hook), 2 ask
** again with a new access token, 0 give up. Each at most once per page. */
static int on_unauthorized(us_okta *c, struct ojob *s) {
  const struct us_http_response *r = us_http_result(s->cur->h);
  if (!c->key || !r || r->code || r->status != 401)
    return 0;
  const char *wa = us_http_header(r, "www-authenticate");
  if (wa && strstr(wa, "error=\"use_dpop_nonce\"") && us_http_header(r, "dpop-nonce")) {
    if (s->nonce_retried)
      return 0;
    s->nonce_retried = 1;
    return 1;
  }
  /* the token was refused (revoked, expired early, lost by a restarted
  ** server, bound to a key we no longer hold): drop it unless a newer one
  ** was obtained meanwhile, and try once with a fresh one */
  if (s->auth_retried)
    return 0;
  s->auth_retried = 1;
  if (s->cur->token_gen == c->token_gen)
    forget_token(c);
  return 2;
}

/* Absolute URL for a listing's url (a path is joined to the base). */
static char *absolute(us_okta *c, const char *u) {
  if (strstr(u, "://"))
    return dup0(u);
  return fmt("%s%s%s", c->base, u[0] == '/' ? "" : "/", u);
}

/* 1 when url has our origin (scheme, host and port). */
static int same_origin(us_okta *c, const char *url) {
  char *o = origin_of(url);
  int ok = o && strcmp(o, c->origin) == 0;
  free(o);
  return ok;
}

/* The next job state after a page of job j whose next link is `next`
** (taken). */
static void job_advance(struct ojob *j, const char *url, char *next, size_t count) {
  free(j->url);
  j->url = NULL;
  if (!j->single && j->stop_on_empty && j->max_pages && j->pages >= j->max_pages) {
    /* a capped poll: the next one goes on after this page */
    free(j->cursor);
    j->cursor = next ? next : dup0(url);
  } else if (j->single || (j->max_pages && j->pages >= j->max_pages)) {
    free(next);
  } else if (j->stop_on_empty && count == 0) {
    free(j->cursor);
    j->cursor = next ? next : dup0(url);
  } else if (next) {
    j->url = next;
    if (j->stop_on_empty) {
      free(j->cursor);
      j->cursor = dup0(next);
    }
  } else if (j->stop_on_empty) {
    free(j->cursor);
    j->cursor = dup0(url);
  }
}

/* The page event of the answer root of q, in the job's shape. NULL with err. */
static struct us_okta_event *page_event(const struct ojob *j, const struct oreq *q,
                                        const struct us_http_response *r,
                                        const struct us_jval *root, size_t count,
                                        struct us_okta_error *err) {
  struct us_okta_event *ev = calloc(1, sizeof *ev);
  int rc = ev ? 0 : -1;
  if (ev && j->shape == US_OKTA_IDS && !j->single) {
    rc = page_ids(root, count, &ev->ids, &ev->nids);
  } else if (ev && j->shape == US_OKTA_SLIM) {
    if (slim_page(q, root, j->single, &ev->body, &ev->len, err) != 0) {
      us_okta_event_free(ev);
      return NULL;
    }
  } else if (ev) {
    ev->body = dupn(r->body, r->body_len);
    ev->len = r->body_len;
    rc = ev->body ? 0 : -1;
  }
  if (rc != 0) {
    us_okta_event_free(ev);
    set_net_err(err, US_HTTP_ENOMEM, 0, "okta: out of memory");
    return NULL;
  }
  ev->type = US_OKTA_PAGE;
  ev->count = count;
  return ev;
}

/* Handles the completed request of job j: its page event, then what comes
** next. 0 ok, -1 with err (the job fails). */
static int on_page(us_okta_batch *b, struct ojob *j, struct us_okta_error *err) {
  struct oreq *q = j->cur;
  const struct us_http_response *r = us_http_result(q->h);
  struct us_jval root;
  if (!r) {
    set_net_err(err, US_HTTP_ECANCELED, 0, "okta: request cancelled");
    return -1;
  }
  if (check_response(q, r, j->single ? US_J_OBJECT : US_J_ARRAY, &root, err) != 0 ||
      check_records(q, r, &root, j->single, j->pages + 1, err) != 0)
    return -1;
  size_t count = 0;
  if (!j->single) {
    struct us_jval el;
    size_t pos = 0;
    while (us_json_next_elem(&root, &pos, &el))
      count++;
  }
  char *next = j->single ? NULL : us_http_link(r, "next");
  if (next && !same_origin(b->c, next)) {
    char path[160];
    snprintf(path, sizeof path, "%.*s", (int)path_len(url_path(q->url)), url_path(q->url));
    set_err(err, "EBADLINK", r->status,
            "okta: GET %s: the next link points to another origin; not followed", path);
    free(next);
    return -1;
  }
  struct us_okta_event *ev = page_event(j, q, r, &root, count, err);
  if (!ev) {
    free(next);
    return -1;
  }
  j->pages++;
  j->items += count;
  ev->page = j->pages;
  job_advance(j, q->url, next, count);
  ev->last = j->url == NULL;
  emit(b, j, ev);
  return 0;
}

/* Submits the next page of the ready jobs, in the order they became
** ready, while the client has free slots and fewer than `room` pages wait
** to be taken. A job that cannot submit fails, and no other is tried this
** round (an authentication failure would repeat for each). Returns how
** many went out. */
static size_t submit_pages(us_okta_batch *b, size_t room) {
  us_okta *c = b->c;
  struct us_qlink *l;
  size_t n = 0;
  while (b->npages < room && (l = us_queue_pop_below(&b->ready, c->inflight, c->concurrency))) {
    struct ojob *j = US_QUEUE_ENTRY(l, struct ojob, ql);
    j->queued = 0;
    struct us_okta_error err;
    if (!(j->cur = submit_api(c, j->url, &err))) {
      job_end(b, j, &err);
      break;
    }
    n++;
  }
  return n;
}

/* Handles every finished request: a 401 worth another try asks again,
** anything else becomes the job's page (and DONE when it was the last). */
static void harvest(us_okta_batch *b) {
  for (size_t i = b->first; i < b->n; i++) {
    struct ojob *j = b->jobs[i];
    if (!j->cur || !j->cur->finished)
      continue;
    if (on_unauthorized(b->c, j)) { /* j->url is still this page's: asked again */
      oreq_free(j->cur);
      j->cur = NULL;
      job_ready(b, j);
      continue;
    }
    j->nonce_retried = j->auth_retried = 0;
    struct us_okta_error err;
    if (on_page(b, j, &err) != 0) {
      job_end(b, j, &err);
      continue;
    }
    oreq_free(j->cur);
    j->cur = NULL;
    if (!j->url)
      job_end(b, j, NULL);
    job_ready(b, j);
  }
}

/* Pops the first queued event, or NULL. */
static struct us_okta_event *pop(us_okta_batch *b) {
  struct evnode *n = b->head;
  if (!n)
    return NULL;
  b->head = n->next;
  if (!b->head)
    b->tail = NULL;
  struct us_okta_event *ev = n->ev;
  b->npages -= ev->type == US_OKTA_PAGE;
  free(n);
  return ev;
}

/* Requests the pages that can go now, while fewer than PREFETCH wait to
** be taken, and puts them on the wire. */
static void prefetch(us_okta_batch *b) {
  if (b->npages > 0 && submit_pages(b, PREFETCH) > 0 && b->c->e)
    us_http_run_once(b->c->e, 0);
}

struct us_okta_event *us_okta_batch_next(us_okta_batch *b) {
  if (b->head && b->c->e) { /* pages here: an engine turn if the last is a while ago */
    double now = us_time_monotonic();
    if (now - b->turned >= TURN_EVERY) {
      b->turned = now;
      us_http_run_once(b->c->e, 0);
      harvest(b);
      prefetch(b);
    }
  }
  for (;;) {
    struct us_okta_event *ev = pop(b);
    if (ev)
      return ev;
    while (b->first < b->n && b->jobs[b->first]->ended)
      b->first++;
    if (b->first == b->n)
      return NULL;
    if (!b->c->e) {
      struct us_okta_error err;
      set_net_err(&err, US_HTTP_ECANCELED, 0,
                  "okta: the HTTP client was closed during the listing");
      job_end(b, b->jobs[b->first], &err);
      continue;
    }
    /* what finished since (while a prefetch went out, or another caller
    ** drove the engine) first: a listing's next page goes before the
    ** jobs waiting for a slot */
    harvest(b);
    if (!b->head) {
      submit_pages(b, SIZE_MAX);
      if (b->head)
        continue; /* a job failed to start */
      /* (nothing of ours in flight: every slot is held by another batch's
      ** requests; driving the engine frees them) */
      us_http_run_once(b->c->e, 200);
      b->turned = us_time_monotonic();
      harvest(b);
    }
    /* Prefetch: the pages that can go now (a listing's next page, the
    ** jobs waiting for a slot) go out before the caller takes what came,
    ** so a chain of pages is not one caller's turn longer per page; at
    ** most PREFETCH pages wait here. A prefetched page that fails ends
    ** its job after the pages before it, as any failed page does. */
    prefetch(b);
  }
}
