/*
** target.c: the machinery shared by the Atlassian target clients
** (include/usersync/target.h): targets, batches, jobs, calls, the
** per-target concurrency limit, rate-limit headers, paging loops, error
** classification and the event queue. Uses the HTTP engine (http.h) and
** jsonscan.h; never Lua.
**
** Rate limits: the engine already retries 429/503 honouring Retry-After
** (any case, so Jira's lower-case `retry-after` too). On top of that each
** request of a target carries a governor that holds it back while the
** target knows its token bucket is empty: after any response (and any
** retried attempt) with X-RateLimit-Remaining: 0 (or the 8.6 EAP prefix
** X-RateLimiting-*), it waits Interval-Seconds / FillRate seconds (one
** token); a 429 or a non-zero retry-after holds every request of the
** target for that long, not only the one that was refused.
*/
#define _GNU_SOURCE
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "target_impl.h"
#include "usersync/strbuf.h"

struct us_target {
  const struct us_target_vt *vt;
  us_http *http;
  struct us_target_config cfg; /* strings owned */
  char *base;                  /* url without trailing '/' */
  char *auth;                  /* "Bearer <token>", or NULL: Basic (cfg.user, password) */
  char *password;              /* Basic: the password (wiped when freed) */
  int inflight;
  struct tcall *calls;             /* every live call */
  struct us_queue waiting;         /* calls waiting for a slot (concurrency) */
  struct us_target_batch *batches; /* live batches */
  double hold_until;               /* rate limit: hold every request until then */
  const struct us_target_flavour *flavour; /* NULL: none */
  void *priv;                              /* the product's (vt->free_priv) */
  unsigned long requests;
};

struct evnode {
  struct us_target_event *ev;
  struct evnode *next;
};

struct us_target_batch {
  us_target *t;
  struct tjob *jobs;
  size_t running;
  struct evnode *head, *tail;
  size_t nevents;
  us_target_batch *next;
  void (*sink)(void *ud, const struct us_target_event *ev); /* us_target_batch_sink */
  void *sink_ud;
};

const char TJ_TRUE[] = "true", TJ_FALSE[] = "false";

/* ------------------------------------------------------------ strings */

char *t_vfmt(const char *fmt, va_list ap) {
  va_list aq;
  va_copy(aq, ap);
  int n = vsnprintf(NULL, 0, fmt, aq);
  va_end(aq);
  if (n < 0)
    return NULL;
  char *s = malloc((size_t)n + 1);
  if (s)
    vsnprintf(s, (size_t)n + 1, fmt, ap);
  return s;
}

char *t_fmt(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = t_vfmt(fmt, ap);
  va_end(ap);
  return s;
}

char *t_strdup(const char *s) { return s ? strdup(s) : NULL; }

char *t_enc(const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  size_t n = strlen(s);
  char *o = malloc(3 * n + 1), *p = o;
  if (!o)
    return NULL;
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (isalnum(*c) || *c == '-' || *c == '_' || *c == '.' || *c == '~') {
      *p++ = (char)*c;
    } else {
      *p++ = '%';
      *p++ = hex[*c >> 4];
      *p++ = hex[*c & 15];
    }
  }
  *p = 0;
  return o;
}

int t_streq_ci(const char *a, const char *b) { return a && b && strcasecmp(a, b) == 0; }

char *t_jstr(const struct us_jval *obj, const char *path) {
  struct us_jval v;
  if (!us_json_get(obj, path, &v) || v.type != US_J_STRING)
    return NULL;
  return us_json_strdup(&v, NULL);
}

int t_jbool(const struct us_jval *obj, const char *path, int def) {
  struct us_jval v;
  int b;
  if (us_json_get(obj, path, &v) && us_json_bool(&v, &b))
    return b;
  return def;
}

static void tb_quote(struct us_sb *b, const char *s) {
  char *q = us_json_quote(s);
  if (!q)
    b->bad = 1;
  else
    us_sb_str(b, q);
  free(q);
}


char *t_jquote(const char *s) { return us_json_quote(s); }

char *t_jobj(const char *k, ...) {
  struct us_sb b = {0};
  va_list ap;
  va_start(ap, k);
  us_sb_str(&b, "{");
  int first = 1;
  for (; k; k = va_arg(ap, const char *)) {
    const char *v = va_arg(ap, const char *);
    if (!v)
      continue;
    if (!first)
      us_sb_str(&b, ",");
    first = 0;
    tb_quote(&b, k);
    us_sb_str(&b, ":");
    if (v == TJ_TRUE || v == TJ_FALSE)
      us_sb_str(&b, v);
    else
      tb_quote(&b, v);
  }
  va_end(ap);
  us_sb_str(&b, "}");
  return us_sb_done(&b);
}

char *t_jarr(char *const *list, size_t n) {
  struct us_sb b = {0};
  us_sb_str(&b, "[");
  for (size_t i = 0; i < n; i++) {
    if (i)
      us_sb_str(&b, ",");
    tb_quote(&b, list[i]);
  }
  us_sb_str(&b, "]");
  return us_sb_done(&b);
}

void t_account_free(struct us_target_account *a) {
  free(a->name);
  free(a->key);
  free(a->display_name);
  free(a->email);
  free(a->id);
  memset(a, 0, sizeof *a);
}

static void free_strv(char **v, size_t n) {
  if (!v)
    return;
  for (size_t i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

static char **dup_strv(const char *const *v, size_t n) {
  char **o = calloc(n ? n : 1, sizeof *o);
  if (!o)
    return NULL;
  for (size_t i = 0; i < n; i++)
    if (!(o[i] = strdup(v[i] ? v[i] : ""))) {
      free_strv(o, i);
      return NULL;
    }
  return o;
}

/* ------------------------------------------------------------ target */

const char *t_base(const us_target *t) { return t->base; }

char *t_rel_path(const us_target *t, const char *path) {
  size_t bl = strlen(t->base);
  if (!strncmp(path, "http://", 7) || !strncmp(path, "https://", 8)) {
    if (!strncmp(path, t->base, bl) && (path[bl] == '/' || path[bl] == '\0'))
      return t_fmt("/%s", path[bl] ? path + bl + 1 : "");
    const char *p = strchr(strstr(path, "://") + 3, '/'); /* another host: keep the path */
    path = p ? p : "/";
  }
  /* the base URL's own path (the context path, "/confluence"), "" when none */
  const char *hs = strstr(t->base, "://"), *bp = hs ? strchr(hs + 3, '/') : NULL;
  size_t cl = bp ? strlen(bp) : 0;
  if (cl && !strncmp(path, bp, cl) && !strncmp(path + cl, "/rest/", 6))
    path += cl; /* the path repeats the context: it is already relative to the host */
  return path[0] == '/' ? t_strdup(path) : t_fmt("/%s", path);
}
const struct us_target_config *t_config(const us_target *t) { return &t->cfg; }
long t_page_size(const us_target *t, long product_max) {
  return t->cfg.page_size > 0 && t->cfg.page_size < product_max ? t->cfg.page_size : product_max;
}
const char *us_target_type(const us_target *t) { return t->vt->type; }
struct us_target_caps us_target_caps(const us_target *t) { return *t_caps(t); }
const struct us_target_caps *t_caps(const us_target *t) {
  return t->flavour ? &t->flavour->caps : &t->vt->caps;
}
const char *us_target_flavour(const us_target *t) { return t->flavour ? t->flavour->name : NULL; }
void **t_priv(us_target *t) { return &t->priv; }
unsigned long us_target_requests(const us_target *t) { return t->requests; }

/* The products, one line each: a new kind is its product file and a line
** here. Lua reads this list (target.products(): types and capabilities). */
static const struct us_target_vt *const products[] = {
    &us_target_jira_vt,
    &us_target_confluence_vt,
    &us_target_bitbucket_vt,
    &us_target_crowd_vt,
    &us_target_scim_vt,
    NULL,
};

const char *us_target_product(size_t i, struct us_target_caps *caps) {
  for (size_t k = 0; products[k]; k++)
    if (k == i) {
      if (caps)
        *caps = products[k]->caps;
      return products[k]->type;
    }
  return NULL;
}

const char *us_target_product_flavour(size_t i, size_t k, struct us_target_caps *caps) {
  for (size_t x = 0; products[x]; x++)
    for (size_t y = 0; x == i && products[x]->flavours && products[x]->flavours[y].name; y++)
      if (y == k) {
        if (caps)
          *caps = products[x]->flavours[y].caps;
        return products[x]->flavours[y].name;
      }
  return NULL;
}

us_target *us_target_new(us_http *http, const struct us_target_config *c, const char **err) {
  const struct us_target_vt *vt = NULL;
  if (!http || !c || !c->type || !c->url) {
    *err = "target: type and url are required";
    return NULL;
  }
  for (size_t k = 0; products[k] && !vt; k++)
    if (!strcmp(c->type, products[k]->type))
      vt = products[k];
  if (!vt) {
    *err = "target: unknown type (us_target_product lists the types)";
    return NULL;
  }
  const struct us_target_flavour *fl = NULL;
  for (size_t k = 0; c->flavour && vt->flavours && vt->flavours[k].name && !fl; k++)
    if (!strcmp(c->flavour, vt->flavours[k].name))
      fl = &vt->flavours[k];
  if (c->flavour && !fl) {
    *err = "target: unknown flavour for this type (us_target_product_flavour lists them)";
    return NULL;
  }
  if (strncmp(c->url, "http://", 7) && strncmp(c->url, "https://", 8)) {
    *err = "target: url must start with http:// or https://";
    return NULL;
  }
  if (!(c->password && c->user) && !c->token) {
    *err = "target: credentials required: user and password, or token";
    return NULL;
  }
  us_target *t = calloc(1, sizeof *t);
  if (!t) {
    *err = "out of memory";
    return NULL;
  }
  t->vt = vt;
  t->flavour = fl;
  t->http = http;
  t->cfg = *c;
  t->cfg.type = vt->type;
  t->cfg.flavour = fl ? fl->name : NULL;
  t->cfg.url = t->cfg.password = t->cfg.token = NULL;
  t->cfg.user = t_strdup(c->user);
  t->base = strdup(c->url);
  if (t->base) {
    size_t n = strlen(t->base);
    while (n > 0 && t->base[n - 1] == '/')
      t->base[--n] = 0;
  }
  int basic = c->password && c->user;
  t->auth = basic ? NULL : t_fmt("Bearer %s", c->token);
  t->password = basic ? strdup(c->password) : NULL;
  if (t->cfg.concurrency <= 0)
    t->cfg.concurrency = 8;
  if (t->cfg.task_wait_ms <= 0)
    t->cfg.task_wait_ms = 120000;
  if (!t->base || (basic ? !t->password : !t->auth) || (c->user && !t->cfg.user)) {
    us_target_free(t);
    *err = "out of memory";
    return NULL;
  }
  return t;
}

/* Frees a string that holds a secret, zeroed first. NULL fine. */
static void wipe_free(char *s) {
  if (s) {
    memset(s, 0, strlen(s));
    free(s);
  }
}

void us_target_free(us_target *t) {
  if (!t)
    return;
  while (t->batches)
    us_target_batch_free(t->batches);
  if (t->priv && t->vt->free_priv)
    t->vt->free_priv(t->priv);
  free((char *)t->cfg.user);
  free(t->base);
  wipe_free(t->auth);
  wipe_free(t->password);
  free(t);
}

int us_target_drive(us_target *t, long timeout_ms) { return us_http_run_once(t->http, timeout_ms); }

/* ------------------------------------------------------------ rate limits */

static long header_num(const struct us_http_response *r, const char *suffix, int *found) {
  char name[64];
  const char *v;
  snprintf(name, sizeof name, "x-ratelimit-%s", suffix);
  v = us_http_header(r, name);
  if (!v) {
    snprintf(name, sizeof name, "x-ratelimiting-%s", suffix);
    v = us_http_header(r, name);
  }
  *found = v != NULL;
  return v ? strtol(v, NULL, 10) : 0;
}

/* Updates the target's hold from one response's rate-limit headers. */
static void t_observe(us_target *t, const struct us_http_response *r) {
  if (!r || r->code)
    return;
  double now = us_time_monotonic(), hold = 0;
  int has_rem, has_fill, has_int;
  long rem = header_num(r, "remaining", &has_rem);
  long fill = header_num(r, "fillrate", &has_fill);
  long interval = header_num(r, "interval-seconds", &has_int);
  if (has_rem && rem <= 0)
    hold = has_fill && fill > 0 ? (double)(has_int && interval > 0 ? interval : 60) / (double)fill
                                : 1.0;
  const char *ra = us_http_header(r, "retry-after");
  if (ra) {
    long ms = us_http_parse_retry_after(ra, (time_t)-1);
    if (ms > 0 && ms / 1000.0 > hold)
      hold = ms / 1000.0;
  }
  if (hold > 0 && now + hold > t->hold_until)
    t->hold_until = now + hold;
}

static long t_governor(void *ud, const char *host, const char *method, const char *url) {
  (void)host, (void)method, (void)url;
  struct tcall *c = ud;
  double until = c->not_before > c->t->hold_until ? c->not_before : c->t->hold_until;
  double d = until - us_time_monotonic();
  return d > 0 ? (long)(d * 1000.0) + 1 : 0;
}

static void t_on_retry(us_http_req *h, const struct us_http_response *last, int retry, void *ud) {
  (void)h, (void)retry;
  struct tcall *c = ud;
  t_observe(c->t, last);
}

/* ------------------------------------------------------------ events */

void us_target_event_free(struct us_target_event *ev) {
  if (!ev)
    return;
  free(ev->group);
  for (size_t i = 0; ev->accounts && i < ev->naccounts; i++)
    t_account_free(&ev->accounts[i]);
  free(ev->accounts);
  free_strv(ev->names, ev->nnames);
  free(ev->item);
  free(ev->raw);
  free(ev->message);
  free(ev->product);
  free(ev->version);
  free(ev->whoami);
  free(ev->detail);
  free(ev);
}

/* Appends ev to the batch queue (takes ownership; frees it on failure). */
static void emit(struct tjob *j, struct us_target_event *ev) {
  struct evnode *n = malloc(sizeof *n);
  if (!n) {
    us_target_event_free(ev);
    return;
  }
  if (!ev->tag)
    ev->tag = j->tag;
  ev->kind = j->kind;
  n->ev = ev;
  n->next = NULL;
  us_target_batch *b = j->b;
  if (b->sink && ev->accounts && (ev->type == US_TEV_ACCOUNTS || ev->type == US_TEV_MEMBERS)) {
    b->sink(b->sink_ud, ev); /* the records go there; the event keeps their count */
    for (size_t i = 0; i < ev->naccounts; i++)
      t_account_free(&ev->accounts[i]);
    free(ev->accounts);
    ev->accounts = NULL;
  }
  else if (b->sink && ev->type == US_TEV_DONE)
    b->sink(b->sink_ud, ev); /* the sink's records are all in */
  if (b->tail)
    b->tail->next = n;
  else
    b->head = n;
  b->tail = n;
  b->nevents++;
}

static struct us_target_event *new_event(enum us_tev type) {
  struct us_target_event *ev = calloc(1, sizeof *ev);
  if (ev) {
    ev->type = type;
    ev->admin = -1;
  }
  return ev;
}

void tjob_item_done(struct tjob *j, size_t i, int ok, const char *note, long status,
                    const char *code, const char *msg) {
  if (j->canceled || i >= j->nlist || j->item_done[i])
    return;
  j->item_done[i] = 1;
  struct us_target_event *ev = new_event(US_TEV_DONE);
  if (!ev)
    return;
  ev->ok = ok;
  ev->note = note;
  ev->status = status;
  ev->code = ok ? NULL : code;
  ev->message = ok ? NULL : t_strdup(msg ? msg : "failed");
  ev->item = t_strdup(j->list[i]);
  ev->requests = j->requests;
  ev->tag = j->tags ? j->tags[i] : j->tag;
  emit(j, ev);
}

void tjob_emit_page(struct tjob *j, enum us_tev type, const char *group,
                    struct us_target_account *a, size_t na, char **names, size_t nn) {
  struct us_target_event *ev = new_event(type);
  if (!ev || (group && !(ev->group = strdup(group)))) {
    for (size_t i = 0; i < na; i++)
      t_account_free(&a[i]);
    free(a);
    free_strv(names, nn);
    free(ev);
    return;
  }
  ev->accounts = a;
  ev->naccounts = na;
  ev->names = names;
  ev->nnames = nn;
  emit(j, ev);
}

void tjob_lead(struct tjob *j, const char *lead, const char *item, int is_component) {
  struct us_target_event *ev = new_event(US_TEV_LEAD);
  if (!ev)
    return;
  ev->group = t_strdup(lead);
  ev->item = t_strdup(item);
  ev->is_component = is_component;
  emit(j, ev);
}

void tjob_add_name(struct tjob *j, const char *name) {
  if (j->nnames == j->capnames) {
    size_t cap = j->capnames ? j->capnames * 2 : 16;
    char **v = realloc(j->names, cap * sizeof *v);
    if (!v)
      return;
    j->names = v;
    j->capnames = cap;
  }
  char *s = strdup(name);
  if (s)
    j->names[j->nnames++] = s;
}

static int per_item(const struct tjob *j) {
  return j->kind == US_TOP_ADD_MEMBERS || j->kind == US_TOP_ADD_TO_GROUPS;
}

/* Emits the job's DONE (once), when nothing of it is in flight. */
static void tjob_maybe_finish(struct tjob *j) {
  if (j->finished || j->pending > 0)
    return;
  j->finished = 1;
  j->b->running--;
  if (j->canceled)
    return;
  if (per_item(j)) { /* every item not reported yet gets the job's outcome */
    for (size_t i = 0; i < j->nlist; i++)
      tjob_item_done(j, i, !j->failed, j->note, j->status, j->code, j->message);
    return;
  }
  struct us_target_event *ev = new_event(US_TEV_DONE);
  if (!ev)
    return;
  ev->ok = !j->failed;
  ev->status = j->status;
  ev->requests = j->requests;
  if (j->failed) {
    ev->code = j->code;
    ev->message = j->message;
    j->message = NULL;
  } else {
    ev->note = j->note;
    ev->partial = j->partial;
    if (j->have_acc) {
      ev->accounts = malloc(sizeof *ev->accounts);
      if (ev->accounts) {
        ev->accounts[0] = j->acc;
        memset(&j->acc, 0, sizeof j->acc);
        ev->naccounts = 1;
      }
      ev->names = j->names;
      ev->nnames = j->nnames;
      j->names = NULL;
      j->nnames = 0;
      ev->raw = j->raw;
      ev->raw_len = j->raw_len;
      j->raw = NULL;
    }
  }
  ev->reachable = j->reachable;
  ev->admin = j->admin;
  ev->product = j->product;
  ev->version = j->version;
  ev->whoami = j->whoami;
  ev->detail = j->detail;
  j->product = j->version = j->whoami = j->detail = NULL;
  if (j->kind == US_TOP_CHECK && j->failed) { /* a check reports, it does not fail */
    ev->ok = 1;
    ev->detail = ev->message;
    ev->message = NULL;
  }
  emit(j, ev);
}

/* ------------------------------------------------------------ errors */

const char *t_status_code(long status) {
  switch (status) {
  case 400:
    return "EINVALID";
  case 401:
    return "EAUTH";
  case 402:
    return "ESEATS";
  case 403:
    return "EFORBIDDEN";
  case 404:
    return "ENOTFOUND";
  case 409:
    return "ECONFLICT";
  case 429:
    return "ERATELIMIT";
  default:
    return "EHTTP";
  }
}

static void join(struct us_sb *b, const char *s, size_t len) {
  if (!len)
    return;
  if (b->n)
    us_sb_str(b, "; ");
  us_sb_put(b, s, len);
}

static void join_jstr(struct us_sb *b, const struct us_jval *v) {
  size_t n;
  char *s = us_json_strdup(v, &n);
  if (s)
    join(b, s, n);
  free(s);
}

char *t_error_text(const struct us_http_response *r) {
  struct us_sb b = {0};
  struct us_jval root, v, e, k;
  const char *ct = us_http_header(r, "content-type");
  if (r->body_len && us_json_parse(r->body, r->body_len, &root)) {
    size_t pos = 0;
    if (us_json_get(&root, "errorMessages", &v) && v.type == US_J_ARRAY) /* Jira */
      while (us_json_next_elem(&v, &pos, &e))
        if (e.type == US_J_STRING)
          join_jstr(&b, &e);
    pos = 0;
    if (us_json_get(&root, "errors", &v) && v.type == US_J_OBJECT) /* Jira field errors */
      while (us_json_next_member(&v, &pos, &k, &e))
        if (e.type == US_J_STRING)
          join_jstr(&b, &e);
    pos = 0;
    if (us_json_get(&root, "errors", &v) && v.type == US_J_ARRAY) /* Bitbucket */
      while (us_json_next_elem(&v, &pos, &e)) {
        struct us_jval m;
        if (us_json_get(&e, "message", &m) && m.type == US_J_STRING)
          join_jstr(&b, &m);
      }
    if (us_json_get(&root, "message", &v) && v.type == US_J_STRING) /* Confluence, Jersey */
      join_jstr(&b, &v);
    if (us_json_get(&root, "detail", &v) && v.type == US_J_STRING) /* SCIM (RFC 7644 3.12) */
      join_jstr(&b, &v);
    if (us_json_get(&root, "scimType", &v) && v.type == US_J_STRING) {
      char *st = us_json_strdup(&v, NULL);
      if (st) {
        us_sb_str(&b, b.n ? " (scimType " : "(scimType ");
        us_sb_str(&b, st);
        us_sb_str(&b, ")");
      }
      free(st);
    }
    if (!b.n)
      us_sb_str(&b, "(no message in the JSON body)");
  } else if (!r->body_len) {
    us_sb_str(&b, "(empty body)");
  } else if (ct && strstr(ct, "html")) {
    const char *tt = strcasestr(r->body, "<title>");
    const char *te = tt ? strcasestr(tt, "</title>") : NULL;
    us_sb_str(&b, "HTML page instead of JSON");
    if (tt && te && te - tt - 7 < 200) {
      us_sb_str(&b, ": ");
      us_sb_put(&b, tt + 7, (size_t)(te - tt - 7));
    }
  } else {
    /* plain text ("XSRF check failed"): first line, printable bytes only */
    us_sb_str(&b, "non-JSON body: ");
    size_t n = 0;
    for (const char *p = r->body; *p && *p != '\n' && n < 200; p++, n++)
      us_sb_put(&b, isprint((unsigned char)*p) ? p : "?", 1);
  }
  char *s = us_sb_done(&b);
  return s ? s : strdup("");
}

void tjob_fail(struct tjob *j, const char *code, long status, const char *fmt, ...) {
  if (j->failed)
    return;
  j->failed = 1;
  j->code = code;
  j->status = status;
  va_list ap;
  va_start(ap, fmt);
  char *m = t_vfmt(fmt, ap);
  va_end(ap);
  j->message = t_fmt("%s: %s", j->t->vt->type, m ? m : "failed");
  free(m);
}

char *t_http_error(const us_target *t, const char *what, const struct us_http_response *r,
                   const char **code) {
  if (r->code) {
    *code = r->code;
    return t_fmt("%s: %s: %s", t->vt->type, what, r->message);
  }
  char *text = t_error_text(r);
  /* Seraph (Jira, Confluence) refuses Basic auth with 403 and this header
  ** after too many failed logins ("CAPTCHA_CHALLENGE; login-url=..."): an
  ** authentication problem, not a missing permission. */
  const char *denied =
      r->status == 403 ? us_http_header(r, "x-authentication-denied-reason") : NULL;
  char why[120] = "";
  if (denied) {
    size_t n = strcspn(denied, ";");
    snprintf(why, sizeof why,
             " (authentication denied: %.*s; sign in once in a browser or use a token)",
             (int)(n < 60 ? n : 60), denied);
  }
  if (!*code)
    *code = denied ? "EAUTH" : t_status_code(r->status);
  /* 401 bodies are often an HTML login page (Jira, Confluence): say what it means */
  char *m = t_fmt("%s: %s: HTTP %ld%s%s%s: %s", t->vt->type, what, r->status,
                  r->status == 401 ? " (credentials refused)" : "", why,
                  r->gave_up ? " (gave up after retries)" : "", text);
  free(text);
  return m;
}

void tjob_fail_http(struct tjob *j, const char *what, const struct us_http_response *r,
                    const char *code) {
  if (j->failed)
    return;
  char *m = t_http_error(j->t, what, r, &code);
  j->failed = 1;
  j->code = code;
  j->status = r->status;
  j->message = m ? m : strdup("out of memory");
}

int t_outcome(const us_target *t, const char *what, const struct us_http_response *r,
              const struct tquirk *q, const char **note, const char **code, char **msg) {
  *note = NULL;
  *code = NULL;
  *msg = NULL;
  if (!r->code && r->status >= 200 && r->status < 300)
    return 1;
  if (!r->code && q) {
    char *text = t_error_text(r);
    for (; q->status != -1; q++) {
      if (q->status && q->status != r->status)
        continue;
      if (q->contains && !strcasestr(text, q->contains))
        continue;
      if (q->note) {
        free(text);
        *note = q->note;
        return 1;
      }
      *code = q->code;
      break;
    }
    free(text);
  }
  *msg = t_http_error(t, what, r, code);
  if (!*msg)
    *msg = strdup("out of memory");
  return 0;
}

int t_write_done(struct tjob *j, const char *what, const struct us_http_response *r,
                 const struct tquirk *q) {
  const char *note, *code;
  char *msg;
  j->status = r->status;
  if (t_outcome(j->t, what, r, q, &note, &code, &msg)) {
    if (note && !j->note)
      j->note = note;
    return 1;
  }
  if (!j->failed) {
    j->failed = 1;
    j->code = code;
    j->message = msg;
  } else {
    free(msg);
  }
  return 0;
}

static void on_write(struct tcall *c, const struct us_http_response *r) {
  t_write_done(c->j, c->what, r, c->p);
}

static void write_start(struct tjob *j, const char *method, char *path, char *body,
                        int need_body, const struct tquirk *q, const char *what) {
  if (!path || (need_body && !body))
    tjob_fail(j, US_HTTP_ENOMEM, 0, "%s: out of memory", what);
  else
    tcall_start(j, method, path, body, on_write, (void *)q, 0, what);
  free(path);
  if (body) {
    memset(body, 0, strlen(body));
    free(body);
  }
}

void t_write(struct tjob *j, const char *method, char *path, char *body, const struct tquirk *q,
             const char *what) {
  write_start(j, method, path, body, 0, q, what);
}

void t_write_json(struct tjob *j, const char *method, char *path, char *body,
                  const struct tquirk *q, const char *what) {
  write_start(j, method, path, body, 1, q, what);
}

void t_item_done(struct tjob *j, size_t i, const char *what, const struct us_http_response *r,
                 const struct tquirk *q) {
  const char *note, *code;
  char *msg;
  int ok = t_outcome(j->t, what, r, q, &note, &code, &msg);
  tjob_item_done(j, i, ok, note, r->status, code, msg);
  free(msg);
}

int t_ok(struct tjob *j, const char *what, const struct us_http_response *r) {
  if (!r->code && r->status >= 200 && r->status < 300) {
    j->status = r->status;
    return 1;
  }
  tjob_fail_http(j, what, r, NULL);
  return 0;
}

int t_json_ok(struct tjob *j, const char *what, const struct us_http_response *r,
              struct us_jval *root) {
  if (!t_ok(j, what, r))
    return 0;
  if (!us_json_parse(r->body, r->body_len, root)) {
    char *text = t_error_text(r);
    tjob_fail(j, "ERESPONSE", r->status, "%s: HTTP %ld but the body is not JSON: %s", what,
              r->status, text);
    free(text);
    return 0;
  }
  return 1;
}

/* ------------------------------------------------------------ calls */

static void call_unlink(struct tcall *c) {
  us_target *t = c->t;
  if (c->prev)
    c->prev->next = c->next;
  else
    t->calls = c->next;
  if (c->next)
    c->next->prev = c->prev;
}

static void call_free(struct tcall *c) {
  free(c->method);
  free(c->url);
  free(c->body);
  free(c->what);
  free(c);
}

static void call_done(us_http_req *h, const struct us_http_response *r, void *ud);
static void drop_calls(struct tjob *j);

static void call_submit(struct tcall *c) {
  us_target *t = c->t;
  struct us_http_header hs[4];
  size_t nh = 0;
  if (t->auth)
    hs[nh++] = (struct us_http_header){"Authorization", t->auth};
  hs[nh++] = (struct us_http_header){"Accept", "application/json"};
  if (strcmp(c->method, "GET"))
    hs[nh++] = (struct us_http_header){"X-Atlassian-Token", "no-check"};
  /* A content type only with a body: a strict server refuses a declared
  ** type with an empty body (DELETE group/user, Bitbucket's query-parameter
  ** creates, Confluence's PUT .../disable) with 400. */
  if (c->body && c->body[0])
    hs[nh++] = (struct us_http_header){"Content-Type", "application/json"};
  struct us_http_request rq = {0};
  rq.method = c->method;
  rq.url = c->url;
  if (t->password) {
    rq.user = t->cfg.user;
    rq.password = t->password;
  }
  rq.headers = hs;
  rq.nheaders = nh;
  rq.body = c->body;
  rq.body_len = c->body ? strlen(c->body) : 0;
  rq.timeout_ms = t->cfg.timeout_ms;
  rq.max_retries = -1;
  rq.max_wait_ms = -1;
  rq.done = call_done;
  rq.on_retry = t_on_retry;
  rq.ud = c;
  rq.governor = t_governor;
  rq.governor_ud = c;
  const char *err = NULL;
  t->inflight++;
  t->requests++;
  c->j->requests++;
  c->h = us_http_submit(t->http, &rq, &err);
  if (!c->h) { /* misuse or no memory: complete as a failure at once */
    t->inflight--;
    struct us_http_response fake = {0};
    fake.code = US_HTTP_ENOMEM;
    fake.message = err ? err : "cannot submit the request";
    struct tjob *j = c->j;
    call_unlink(c);
    j->pending--;
    if (!j->failed)
      tjob_fail_http(j, c->what, &fake, NULL);
    call_free(c);
    tjob_maybe_finish(j);
  }
}

/* Starts queued calls while the target has free slots. */
static void pump(us_target *t) {
  struct us_qlink *l;
  while ((l = us_queue_pop_below(&t->waiting, t->inflight, t->cfg.concurrency)))
    call_submit(US_QUEUE_ENTRY(l, struct tcall, ql)); /* counts inflight */
}

static void call_done(us_http_req *h, const struct us_http_response *r, void *ud) {
  struct tcall *c = ud;
  us_target *t = c->t;
  struct tjob *j = c->j;
  t->inflight--;
  t_observe(t, r);
  call_unlink(c);
  if (j->kind == US_TOP_CHECK && !r->code && r->status > 0)
    j->reachable = 1; /* the server answered, whatever it said */
  if (!j->failed && !j->canceled)
    c->fn(c, r);
  us_http_release(h);
  if (j->failed && j->kind != US_TOP_CHECK)
    drop_calls(j); /* the outcome is known: stop the job's other requests */
  j->pending--;
  call_free(c);
  tjob_maybe_finish(j);
  pump(t);
}

static struct tcall *call_new(struct tjob *j, const char *method, const char *path,
                              const char *body, tcall_fn fn, void *p, long long n, const char *what,
                              double not_before, int urgent);

struct tcall *tcall_start_at(struct tjob *j, const char *method, const char *path, const char *body,
                             tcall_fn fn, void *p, long long n, const char *what,
                             double not_before) {
  return call_new(j, method, path, body, fn, p, n, what, not_before, 0);
}

/* Creates and starts (or queues: at the head when urgent) a call. */
static struct tcall *call_new(struct tjob *j, const char *method, const char *path,
                              const char *body, tcall_fn fn, void *p, long long n, const char *what,
                              double not_before, int urgent) {
  us_target *t = j->t;
  struct tcall *c = calloc(1, sizeof *c);
  if (c) {
    c->t = t;
    c->j = j;
    c->method = strdup(method);
    c->url = path ? t_fmt("%s%s", t->base, path) : NULL;
    c->body = t_strdup(body);
    c->what = strdup(what ? what : "request");
    c->fn = fn;
    c->p = p;
    c->n = n;
    c->not_before = not_before;
  }
  if (!c || !c->method || !c->url || !c->what || (body && !c->body)) {
    if (c)
      call_free(c);
    tjob_fail(j, US_HTTP_ENOMEM, 0, "%s: out of memory", what ? what : "request");
    return NULL;
  }
  c->next = t->calls;
  if (t->calls)
    t->calls->prev = c;
  t->calls = c;
  j->pending++;
  if (t->inflight < t->cfg.concurrency && !t->waiting.head)
    call_submit(c);
  else if (urgent)
    us_queue_push_front(&t->waiting, &c->ql);
  else
    us_queue_push(&t->waiting, &c->ql);
  return c;
}

struct tcall *tcall_start(struct tjob *j, const char *method, const char *path, const char *body,
                          tcall_fn fn, void *p, long long n, const char *what) {
  return tcall_start_at(j, method, path, body, fn, p, n, what, 0);
}

/* Drops every call of job j (released without callbacks). */
static void drop_calls(struct tjob *j) {
  us_target *t = j->t;
  for (struct us_qlink *l = t->waiting.head, *next; l; l = next) { /* queued ones */
    next = l->next;
    struct tcall *c = US_QUEUE_ENTRY(l, struct tcall, ql);
    if (c->j == j) {
      us_queue_remove(&t->waiting, l);
      call_unlink(c);
      call_free(c);
      j->pending--;
    }
  }
  for (struct tcall *c = t->calls, *nx; c; c = nx) {
    nx = c->next;
    if (c->j != j)
      continue;
    call_unlink(c);
    us_http_release(c->h);
    t->inflight--;
    call_free(c);
    j->pending--;
  }
  pump(t);
}

/* ------------------------------------------------------------ listings */

static void lister_page(struct tcall *c, const struct us_http_response *r);

/* Requests a page; continuations of a listing go to the head of the
** target's queue, so long listings keep moving while many short ones wait.
** lim > 0: the page belongs to the segment of offsets below lim (items past
** it belong to another request and are dropped); gap: it fills the rest of
** a segment whose page came back short. */
static void lister_next_in(struct tlister *l, const char *path, long long n, int urgent,
                           long long lim, int gap) {
  struct tcall *c = call_new(l->j, "GET", path, NULL, lister_page, l, n, "list", 0, urgent);
  if (c) {
    l->inflight++;
    if (!l->j->failed) { /* (a refused submit has freed c already) */
      c->lim = lim;
      c->gap = gap;
    }
  }
}

static void lister_next(struct tlister *l, const char *path, long long n, int urgent) {
  lister_next_in(l, path, n, urgent, 0, 0);
}

static char *page_url(struct tlister *l, const char *param, long long v) {
  return t_fmt("%s%s%s=%lld", l->path, strchr(l->path, '?') ? "&" : "?", param, v);
}

static void emit_page(struct tlister *l, struct us_target_account *a, size_t na, char **names,
                      size_t nn) {
  tjob_emit_page(l->j, l->ev, l->group, a, na, names, nn);
}

/* Reads the first `max` items of a page into records and hands them to the
** sink. *count: the items the page holds, *taken: those read. */
static int take_items(struct tlister *l, const char *what, const struct us_http_response *r,
                      const struct us_jval *root, size_t max, size_t *count, size_t *taken) {
  struct tjob *j = l->j;
  struct us_jval arr, e;
  if (!us_json_get(root, l->items, &arr) || arr.type != US_J_ARRAY) {
    tjob_fail(j, "ERESPONSE", r->status, "%s: the response has no \"%s\" array", what, l->items);
    return 0;
  }
  size_t n = 0, pos = 0;
  while (us_json_next_elem(&arr, &pos, &e))
    n++;
  *count = n;
  if (n > max)
    n = max;
  *taken = n;
  struct us_target_account *a = NULL;
  char **names = NULL;
  size_t k = 0;
  if (l->groups)
    names = calloc(n ? n : 1, sizeof *names);
  else
    a = calloc(n ? n : 1, sizeof *a);
  if (!names && !a) {
    tjob_fail(j, US_HTTP_ENOMEM, 0, "%s: out of memory", what);
    return 0;
  }
  pos = 0;
  for (size_t i = 0; i < n && us_json_next_elem(&arr, &pos, &e); i++) {
    if (l->groups) {
      char *g = t_jstr(&e, "name");
      if (g)
        names[k++] = g;
    } else if (j->t->vt->parse_account(&e, &a[k]) == 0) {
      k++;
    }
  }
  if (k != n) {
    for (size_t i = 0; a && i < k; i++)
      t_account_free(&a[i]);
    free(a);
    free_strv(names, k);
    tjob_fail(j, "ERESPONSE", r->status, "%s: %zu of %zu items lack a name", what, n - k, n);
    return 0;
  }
  if (k == 0 && (l->prefetch > 0 || l->style == PG_STARTAT)) { /* nothing to hand over */
    free(a);
    free(names);
    return 1;
  }
  if (l->sink)
    l->sink(l, a, l->groups ? 0 : k, names, l->groups ? k : 0);
  else
    emit_page(l, a, l->groups ? 0 : k, names, l->groups ? k : 0);
  return 1;
}

static void lister_end(struct tlister *l) {
  if (l->on_end)
    l->on_end(l);
}

/* The start= offset of a next link (relative or absolute); 0 when none. */
static int link_start(const char *link, long long *out) {
  const char *q = strchr(link, '?');
  for (const char *p = q; p; p = strchr(p + 1, '&')) {
    if (!strncmp(p + 1, "start=", 6)) {
      char *end;
      long long v = strtoll(p + 7, &end, 10);
      if (end != p + 7 && v >= 0) {
        *out = v;
        return 1;
      }
    }
  }
  return 0;
}

/* Confluence's account listing reads ahead: after the first page,
** `prefetch` segments of `step` offsets (step = the limit the server
** applied) are kept in flight, each page bounded to its segment, until a
** page says there is no more; pages past the end come back empty. The
** spec does not promise full pages: a page that comes back short with a
** next link inside its segment gets that link followed (within the
** segment) until the segment is read. Costs at most prefetch - 1 extra
** requests per listing (plus one per short page). c->n is the page's start. */
static void prefetch_more(struct tlister *l, struct tcall *c, const struct us_http_response *r,
                          const struct us_jval *root, size_t taken) {
  struct tjob *j = l->j;
  struct us_jval v;
  char *link = t_jstr(root, "_links.next");
  int more = link && taken > 0; /* an empty page ends the listing */
  if (!more)
    l->ended = 1;
  if (!c->gap && c->n == 0 && more) {
    if (!us_json_get(root, "limit", &v) || !us_json_int(&v, &l->step) || l->step <= 0) {
      tjob_fail(j, "ERESPONSE", r->status, "list: a page without a usable limit");
      free(link);
      return;
    }
    for (int k = 1; k <= l->prefetch; k++) {
      char *u = page_url(l, "start", k * l->step);
      if (u)
        lister_next_in(l, u, k * l->step, 1, (k + 1) * l->step, 0);
      free(u);
    }
    l->fanned = l->prefetch * l->step;
  } else if (!c->gap && more && !l->ended) {
    l->fanned += l->step;
    char *u = page_url(l, "start", l->fanned);
    if (u)
      lister_next_in(l, u, l->fanned, 1, l->fanned + l->step, 0);
    free(u);
  }
  long long seg_end = c->lim > 0 ? c->lim : l->step, ns;
  if (more && seg_end > 0 && link_start(link, &ns) && ns > c->n && ns < seg_end) {
    char *u = t_rel_path(j->t, link); /* the server's own link, within the segment */
    if (u)
      lister_next_in(l, u, ns, 1, seg_end, 1);
    else
      tjob_fail(j, US_HTTP_ENOMEM, 0, "list: out of memory");
    free(u);
  }
  free(link);
}

/* Offset pages (Jira startAt/maxResults/total/isLast). The first page
** gives the page size the server applies (maxResults, else the items it
** holds) and the total: the other pages are requested at once as segments
** of that size, the last segment unbounded (a set that grew is read on).
** The spec promises neither full pages nor the flag: a page's end is its
** start plus the items it holds; isLast, else the total, else an empty
** page says the listing is over; a short page is followed by a page at
** its end, within its segment. */
static char *startat_next(struct tlister *l, struct tcall *c, const struct us_http_response *r,
                          const struct us_jval *root, size_t count, size_t taken,
                          long long *next_n, long long *next_lim, const char *what) {
  struct tjob *j = l->j;
  struct us_jval v;
  long long start = c->n, max = 0, total = -1, lim = c->lim;
  if (us_json_get(root, "maxResults", &v))
    us_json_int(&v, &max);
  if (us_json_get(root, "total", &v))
    us_json_int(&v, &total);
  int last = t_jbool(root, "isLast", -1);
  if (last == -1)
    last = total >= 0 ? start + (long long)count >= total : count == 0;
  if (start == 0 && !c->gap && !last) {
    long long step = max > 0 ? max : (long long)count;
    if (total > 0 && step > 0 && step < total) {
      for (long long s = step; s < total; s += step) {
        char *u = page_url(l, "startAt", s);
        if (u)
          lister_next_in(l, u, s, 1, s + step < total ? s + step : 0, 0);
        free(u);
      }
      lim = step; /* this page's own segment */
    }
  }
  if (last)
    return NULL;
  if (count == 0) {
    tjob_fail(j, "ERESPONSE", r->status, "%s: isLast is false on an empty page", what);
    return NULL;
  }
  long long nx = start + (long long)taken;
  if (lim > 0 && nx >= lim)
    return NULL; /* the segment is read; the next one has its own request */
  *next_n = nx;
  *next_lim = lim;
  return page_url(l, "startAt", nx);
}

/* A page arrived: read it; the listing ends when no page of it is left in
** flight (fanned-out and read-ahead pages included). */
static void lister_page_read(struct tcall *c, const struct us_http_response *r);
static void lister_page(struct tcall *c, const struct us_http_response *r) {
  struct tlister *l = c->p;
  l->inflight--;
  lister_page_read(c, r);
  if (!l->j->failed && l->inflight == 0)
    lister_end(l);
}

static void lister_page_read(struct tcall *c, const struct us_http_response *r) {
  struct tlister *l = c->p;
  struct tjob *j = l->j;
  char what[300];
  snprintf(what, sizeof what, "%s%s%s",
           l->ev == US_TEV_ACCOUNTS ? "list accounts"
           : l->ev == US_TEV_GROUPS ? "list groups"
                                    : "list members of ",
           l->group ? l->group : "", c->n ? " (next page)" : "");
  struct us_jval root, v;
  size_t count = 0, taken = 0;
  if (!t_json_ok(j, what, r, &root))
    return;
  long long ptotal = -1, have = 0;
  if (l->style == PG_ONE && us_json_get(&root, "total", &v) && us_json_int(&v, &ptotal) &&
      us_json_get(&root, l->items, &v) && v.type == US_J_ARRAY) {
    size_t pos = 0;
    struct us_jval e;
    while (us_json_next_elem(&v, &pos, &e))
      have++;
    l->truncated = ptotal > have; /* known before the sink sees the page */
  }
  size_t max = c->lim > c->n ? (size_t)(c->lim - c->n) : (size_t)-1;
  if (!take_items(l, what, r, &root, max, &count, &taken))
    return;
  if (l->prefetch > 0 && l->style == PG_NEXTLINK) {
    prefetch_more(l, c, r, &root, taken);
    return;
  }
  char *next = NULL;
  long long nv, next_n = c->n + 1, next_lim = 0;
  switch (l->style) {
  case PG_ONE:
    /* A server may cap the answer below what was asked (and below the
    ** total): never a silently short list. A snapshot goes on without the
    ** groups' memberships (j->partial: the caller looks up the groups it
    ** needs by name); a plain listing fails with ETRUNCATED after its page. */
    if (l->truncated && j->kind != US_TOP_SNAPSHOT)
      tjob_fail(j, "ETRUNCATED", r->status,
                "%s: the server answered %zu of %lld groups (its limit); look groups up by name",
                what, count, ptotal);
    break;
  case PG_CURSOR: {
    /* isLast, else the presence of a cursor, says whether more follow */
    char *cur = t_jstr(&root, "nextCursor");
    int last = t_jbool(&root, "isLast", -1);
    if (last == -1)
      last = cur == NULL;
    char *enc = !last && cur ? t_enc(cur) : NULL;
    if (last)
      ;
    else if (!enc)
      tjob_fail(j, "ERESPONSE", r->status, "%s: isLast is false but there is no nextCursor", what);
    else
      next = t_fmt("%s%scursor=%s", l->path, strchr(l->path, '?') ? "&" : "?", enc);
    free(cur);
    free(enc);
    break;
  }
  case PG_STARTAT:
    next = startat_next(l, c, r, &root, count, taken, &next_n, &next_lim, what);
    break;
  case PG_NEXTLINK: {
    char *rel = count ? t_jstr(&root, "_links.next") : NULL; /* an empty page ends it */
    if (rel) {
      next = t_rel_path(j->t, rel);
      free(rel);
      if (!next)
        tjob_fail(j, US_HTTP_ENOMEM, 0, "%s: out of memory", what);
    }
    break;
  }
  case PG_SHORT:
    /* no marker: a page as long as the page size asked may have more behind it */
    if (l->step > 0 && (long long)count >= l->step) {
      next_n = c->n + (long long)count;
      next = page_url(l, "start-index", next_n);
    }
    break;
  case PG_BB: {
    /* isLastPage, else the presence of nextPageStart, says whether more follow */
    int has = us_json_get(&root, "nextPageStart", &v) && us_json_int(&v, &nv);
    int last = t_jbool(&root, "isLastPage", -1);
    if (last == -1)
      last = !has;
    if (last)
      break;
    if (!has || nv <= c->n) {
      tjob_fail(j, "ERESPONSE", r->status, "%s: isLastPage is false without a usable nextPageStart",
                what);
      break;
    }
    next = page_url(l, "start", nv);
    next_n = nv;
    break;
  }
  }
  if (next) {
    lister_next_in(l, next, next_n, 1, next_lim, next_lim > 0);
    free(next);
  }
}

struct tlister *tlist_start(struct tjob *j, enum tpage style, enum us_tev ev, const char *path,
                            const char *items, int groups, const char *group, tsink_fn sink) {
  return tlist_start_ahead(j, style, ev, path, items, groups, group, sink, 0);
}

struct tlister *tlist_start_ahead(struct tjob *j, enum tpage style, enum us_tev ev,
                                  const char *path, const char *items, int groups,
                                  const char *group, tsink_fn sink, int prefetch) {
  struct tlister *l = calloc(1, sizeof *l);
  if (!l || !(l->path = strdup(path)) || (group && !(l->group = strdup(group)))) {
    if (l)
      free(l->path);
    free(l);
    tjob_fail(j, US_HTTP_ENOMEM, 0, "list: out of memory");
    return NULL;
  }
  l->j = j;
  l->style = style;
  l->ev = ev;
  l->items = items;
  l->groups = groups;
  l->sink = sink;
  l->prefetch = prefetch;
  l->next = j->listers;
  j->listers = l;
  if (style == PG_STARTAT) {
    char *u = page_url(l, "startAt", 0);
    if (u)
      lister_next(l, u, 0, 0);
    free(u);
  } else {
    lister_next(l, path, 0, 0);
  }
  return l;
}

/* ------------------------------------------------------------ generic jobs */

/* Snapshot: the groups listing's pages are emitted and start one member
** listing per group; accounts are listed alongside. */
static void snapshot_groups(struct tlister *l, struct us_target_account *a, size_t na, char **names,
                            size_t nn) {
  (void)a, (void)na;
  struct tjob *j = l->j;
  if (l->truncated) /* part of the groups only: no memberships at all (US_TOP_SNAPSHOT) */
    j->partial = 1;
  for (size_t i = 0; i < nn && !j->failed && !l->truncated; i++)
    j->t->vt->list(j, US_TEV_MEMBERS, names[i], NULL);
  emit_page(l, NULL, 0, names, nn);
}

/* Fails j with EUNSUPPORTED, without a request, when its product's
** capabilities (the vtable's caps, the one statement of what a product can
** do) lack the operation. Returns 1 when it did. */
static int refuse_unsupported(struct tjob *j) {
  const struct us_target_caps *c = t_caps(j->t);
  const char *name = j->name ? j->name : "", *type = j->t->vt->type;
  switch (j->kind) {
  case US_TOP_DEACTIVATE_USER:
  case US_TOP_REACTIVATE_USER:
    if (j->kind == US_TOP_DEACTIVATE_USER ? c->deactivate : c->reactivate)
      return 0;
    tjob_fail(j, "EUNSUPPORTED", 0,
              "%s user %s: %s has no deactivation (remove the account from its groups or "
              "delete it)",
              j->kind == US_TOP_DEACTIVATE_USER ? "deactivate" : "reactivate", name, type);
    return 1;
  case US_TOP_RENAME_USER:
    if (c->rename)
      return 0;
    tjob_fail(j, "EUNSUPPORTED", 0, "rename user %s: %s cannot rename users over REST", name,
              type);
    return 1;
  case US_TOP_LEADS:
  case US_TOP_HANDOVER_LEAD:
    if (c->leads)
      return 0;
    tjob_fail(j, "EUNSUPPORTED", 0, "%s has no project or component leads", type);
    return 1;
  default:
    return 0;
  }
}

static void start_generic(struct tjob *j) {
  const struct us_target_vt *vt = j->t->vt;
  if (refuse_unsupported(j))
    return;
  switch (j->kind) {
  case US_TOP_LIST_ACCOUNTS:
    vt->list(j, US_TEV_ACCOUNTS, NULL, NULL);
    break;
  case US_TOP_LIST_GROUPS:
    vt->list(j, US_TEV_GROUPS, NULL, NULL);
    break;
  case US_TOP_LIST_MEMBERS:
    if (!j->group)
      tjob_fail(j, "EINVALID", 0, "list members: no group given");
    else
      vt->list(j, US_TEV_MEMBERS, j->group, NULL);
    break;
  case US_TOP_SNAPSHOT:
    if (vt->snapshot)
      vt->snapshot(j);
    else if (vt->list(j, US_TEV_ACCOUNTS, NULL, NULL))
      vt->list(j, US_TEV_GROUPS, NULL, snapshot_groups);
    break;
  default:
    vt->start(j);
  }
}

/* ------------------------------------------------------------ batches and jobs */

us_target_batch *us_target_batch_new(us_target *t) {
  us_target_batch *b = calloc(1, sizeof *b);
  if (!b)
    return NULL;
  b->t = t;
  b->next = t->batches;
  t->batches = b;
  return b;
}

static void job_free(struct tjob *j) {
  if (j->ps && j->ps_free)
    j->ps_free(j->ps);
  free(j->name);
  free(j->id);
  free(j->external_id);
  free(j->to);
  free(j->to2);
  free(j->group);
  free(j->display_name);
  free(j->email);
  if (j->password) {
    memset(j->password, 0, strlen(j->password));
    free(j->password);
  }
  free_strv(j->list, j->nlist);
  free_strv(j->list2, j->nlist2);
  free(j->tags);
  free(j->message);
  t_account_free(&j->acc);
  free_strv(j->names, j->nnames);
  free(j->raw);
  free(j->product);
  free(j->version);
  free(j->whoami);
  free(j->detail);
  free(j->item_done);
  free_strv(j->item_msg, j->item_msg ? j->nlist : 0);
  while (j->listers) {
    struct tlister *l = j->listers;
    j->listers = l->next;
    free(l->path);
    free(l->group);
    free(l);
  }
  free(j);
}

int us_target_submit(us_target_batch *b, const struct us_target_op *op, const char **err) {
  struct tjob *j = calloc(1, sizeof *j);
  if (!j) {
    *err = "out of memory";
    return -1;
  }
  j->t = b->t;
  j->b = b;
  j->kind = op->kind;
  j->admin = -1;
  j->name = t_strdup(op->name);
  j->id = t_strdup(op->id);
  j->external_id = t_strdup(op->external_id);
  j->to = t_strdup(op->to);
  j->to2 = t_strdup(op->to2);
  j->group = t_strdup(op->group);
  j->display_name = t_strdup(op->display_name);
  j->email = t_strdup(op->email);
  j->password = t_strdup(op->password);
  j->notify = op->notify;
  j->nlist = op->nlist;
  j->nlist2 = op->nlist2;
  j->list = dup_strv(op->list, op->nlist);
  j->list2 = dup_strv(op->list2, op->nlist2);
  j->item_done = calloc(op->nlist ? op->nlist : 1, 1);
  j->tag = op->tag;
  if (op->tags) {
    j->tags = calloc(op->nlist ? op->nlist : 1, sizeof *j->tags);
    if (j->tags)
      memcpy(j->tags, op->tags, op->nlist * sizeof *j->tags);
  }
  if (!j->list || !j->list2 || !j->item_done || (op->tags && !j->tags) || (op->name && !j->name) ||
      (op->to && !j->to) || (op->id && !j->id) || (op->external_id && !j->external_id) || (op->to2 && !j->to2) || (op->group && !j->group) ||
      (op->display_name && !j->display_name) || (op->email && !j->email) ||
      (op->password && !j->password)) {
    job_free(j);
    *err = "out of memory";
    return -1;
  }
  j->next = b->jobs;
  b->jobs = j;
  b->running++;
  j->pending++; /* held while starting so the job cannot finish half-started */
  start_generic(j);
  j->pending--;
  tjob_maybe_finish(j);
  return 0;
}

struct us_target_event *us_target_batch_next(us_target_batch *b) {
  struct evnode *n = b->head;
  if (!n)
    return NULL;
  b->head = n->next;
  if (!b->head)
    b->tail = NULL;
  b->nevents--;
  struct us_target_event *ev = n->ev;
  free(n);
  return ev;
}

size_t us_target_batch_pending(const us_target_batch *b) { return b->running + b->nevents; }

size_t us_target_batch_running(const us_target_batch *b) { return b->running; }

void us_target_batch_sink(us_target_batch *b, void (*fn)(void *ud, const struct us_target_event *ev),
                          void *ud) {
  b->sink = fn;
  b->sink_ud = ud;
}

void us_target_batch_free(us_target_batch *b) {
  if (!b)
    return;
  us_target *t = b->t;
  for (struct tjob *j = b->jobs; j; j = j->next) {
    j->canceled = 1;
    drop_calls(j);
  }
  while (b->jobs) {
    struct tjob *j = b->jobs;
    b->jobs = j->next;
    job_free(j);
  }
  struct us_target_event *ev;
  while ((ev = us_target_batch_next(b)))
    us_target_event_free(ev);
  for (us_target_batch **pp = &t->batches; *pp; pp = &(*pp)->next)
    if (*pp == b) {
      *pp = b->next;
      break;
    }
  free(b);
}

void us_target_run(us_target_batch *b, void (*fn)(void *ud, struct us_target_event *ev), void *ud) {
  for (;;) {
    struct us_target_event *ev;
    while ((ev = us_target_batch_next(b)))
      fn(ud, ev);
    if (!us_target_batch_pending(b))
      return;
    us_http_run_once(b->t->http, 100);
  }
}
