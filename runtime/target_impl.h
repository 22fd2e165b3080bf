/*
** target_impl.h: what runtime/target.c shares with the product files
** (target_jira.c, target_confluence.c, target_bitbucket.c, target_crowd.c). Not a public
** header: only the target sources include it.
**
** A job (struct tjob) is one started operation. It is finished when it has
** no call in flight and none queued; then its DONE event is emitted (for
** ADD_MEMBERS / ADD_TO_GROUPS the product emits one DONE per item instead).
** A call (struct tcall) is one HTTP request of a job; its handler runs from
** the engine's completion callback unless the job has already failed or
** been cancelled. Handlers may start more calls of the same job.
*/
#ifndef USERSYNC_TARGET_IMPL_H
#define USERSYNC_TARGET_IMPL_H
#include <stdarg.h>

#include "usersync/http.h"
#include "usersync/jsonscan.h"
#include "usersync/queue.h"
#include "usersync/target.h"
#include "usersync/timeutil.h"

struct tjob;
struct tcall;
typedef void (*tcall_fn)(struct tcall *c, const struct us_http_response *r);

struct tcall {
  us_target *t;
  struct tjob *j;
  us_http_req *h; /* NULL while queued */
  char *method, *url, *body;
  tcall_fn fn;
  void *p;                   /* handler data (a lister, ...) not owned */
  long long n;               /* handler data (an offset, an index) */
  char *what;                /* for messages: "list accounts", "add alice to g" */
  double not_before;         /* monotonic seconds: hold the request until then */
  long long lim;             /* listing page: its segment ends at this offset (0: none) */
  int gap;                   /* listing page: fills the rest of a short page's segment */
  struct tcall *prev, *next; /* every call of the target */
  struct us_qlink ql;        /* in the target's queue of calls waiting for a slot */
};

enum tpage {
  PG_CURSOR,   /* Jira user/list: isLast + nextCursor */
  PG_STARTAT,  /* Jira offset pages: startAt/maxResults/total/isLast (fanned out) */
  PG_NEXTLINK, /* Confluence: _links.next relative to the base URL */
  PG_BB,       /* Bitbucket: isLastPage + nextPageStart */
  PG_ONE,      /* a single response holding everything (Jira groups/picker) */
  PG_SHORT     /* Crowd: start-index/max-results without an end marker: a page holding
                  fewer items than the page size asked (the lister's step) is the last */
};

struct tlister;
/* Receives a page's records; takes ownership of both arrays. */
typedef void (*tsink_fn)(struct tlister *l, struct us_target_account *a, size_t na, char **names,
                         size_t nn);

struct tlister {
  struct tjob *j;
  enum tpage style;
  enum us_tev ev;    /* ACCOUNTS, GROUPS or MEMBERS */
  char *path;        /* first page path+query (page size included) */
  const char *items; /* path of the item array: "values", "results", "groups" */
  int groups;        /* 1: items are groups (their "name"), 0: accounts */
  char *group;       /* MEMBERS: which group */
  tsink_fn sink;     /* NULL: emit events to the batch */
  long long fanned;  /* prefetch: highest start requested so far */
  int prefetch;      /* PG_NEXTLINK: pages kept in flight ahead (0: one at a time) */
  long long step;    /* prefetch: the page size the server applies */
  int ended;         /* prefetch: a page without a next one was seen */
  int truncated;     /* PG_ONE: the answer holds fewer items than its total */
  void (*on_end)(struct tlister *l); /* optional: the listing read its last page */
  int inflight;      /* pages requested and not handled yet (0 after the last: on_end) */
  long long n;       /* for the sink's owner (an item index, ...) */
  struct tlister *next;
};

struct tjob {
  us_target *t;
  us_target_batch *b;
  enum us_top kind;
  char *name, *to, *to2, *group, *display_name, *email, *password;
  char *id;          /* the op's account id (us_target_op.id), NULL when not given */
  char *external_id; /* us_target_op.external_id */
  int notify;
  char **list, **list2;
  size_t nlist, nlist2;
  void *tag;
  void **tags;
  int pending; /* calls in flight or queued */
  int failed, canceled, finished;
  long status;
  const char *code, *note;
  char *message;
  unsigned long requests;
  /* GET_ACCOUNT / CHECK results */
  struct us_target_account acc;
  int have_acc;
  char **names;
  size_t nnames, capnames;
  char *raw;
  size_t raw_len;
  int reachable, admin;
  char *product, *version, *whoami, *detail;
  int partial; /* see us_target_event.partial */
  /* product scratch */
  long long n1, n2;
  double t0;
  unsigned char *item_done; /* per-item DONE already emitted */
  char **item_msg;          /* per-item scratch message (NULL or nlist entries) */
  struct tlister *listers;
  void *ps;                 /* product scratch, freed with ps_free when the job is freed */
  void (*ps_free)(void *ps);
  struct tjob *next; /* in the batch */
};

struct us_target_vt {
  const char *type;
  struct us_target_caps caps;
  /* Starts the job's first calls, or fails it (tjob_fail). */
  void (*start)(struct tjob *j);
  /* Starts the listing of accounts (ev ACCOUNTS), groups (GROUPS) or a
  ** group's members (MEMBERS, group given), delivering pages to sink (NULL:
  ** events). Accounts and members include inactive accounts. */
  struct tlister *(*list)(struct tjob *j, enum us_tev ev, const char *group, tsink_fn sink);
  /* Fills *a from one account item of a listing; 0 ok, -1 unusable item. */
  int (*parse_account)(const struct us_jval *item, struct us_target_account *a);
  /* Optional: named variants (ends with a NULL name); a config's flavour must be one. */
  const struct us_target_flavour *flavours;
  /* Optional: the product's own snapshot (else: accounts, groups, members per group). */
  void (*snapshot)(struct tjob *j);
  /* Optional: frees the target's product data (t_priv) when the target is freed. */
  void (*free_priv)(void *priv);
};

extern const struct us_target_vt us_target_jira_vt, us_target_confluence_vt, us_target_bitbucket_vt;
extern const struct us_target_vt us_target_crowd_vt;
extern const struct us_target_vt us_target_scim_vt;

/* ---- target accessors ---- */
const char *t_base(const us_target *t);
/* A path from a response (Confluence _links.next, statusPath) made relative
** to the base URL, malloc'd (NULL: out of memory). Accepts a path relative
** to the base ("/rest/api/x?start=2"), the same path with the base URL's
** own path (the context, "/confluence/rest/api/...") in front, an absolute
** URL under the base, or an absolute URL of another host (its path is
** kept: a proxy may rewrite hosts). */
char *t_rel_path(const us_target *t, const char *path);
long t_page_size(const us_target *t, long product_max);
const struct us_target_config *t_config(const us_target *t);
/* The product's own data of the target (NULL until the product sets it;
** freed by vt->free_priv). */
void **t_priv(us_target *t);
/* The target's capabilities (its flavour's when it has one). */
const struct us_target_caps *t_caps(const us_target *t);

/* ---- calls ---- */
/* Starts (or queues) a request of job j: method, a path relative to the
** base URL ("/rest/api/2/user?username=x"), an optional JSON body.
** `what` names the request in messages. Returns the call, NULL (job failed
** with ENOMEM) when out of memory; a NULL path (its building ran out of
** memory) fails the job the same way, so callers need not check it. */
struct tcall *tcall_start(struct tjob *j, const char *method, const char *path, const char *body,
                          tcall_fn fn, void *p, long long n, const char *what);
/* Same, held back until not_before (monotonic seconds). */
struct tcall *tcall_start_at(struct tjob *j, const char *method, const char *path, const char *body,
                             tcall_fn fn, void *p, long long n, const char *what,
                             double not_before);

/* ---- results ---- */
/* Fails the job (the first failure wins; later ones are ignored). */
void tjob_fail(struct tjob *j, const char *code, long status, const char *fmt, ...);
/* Fails the job from an HTTP outcome: transport code, or status -> code
** with the product's message(s). `code` NULL: classify by status. */
void tjob_fail_http(struct tjob *j, const char *what, const struct us_http_response *r,
                    const char *code);
/* The message (malloc'd) and code of a failed HTTP outcome; *code may be
** preset (kept) or NULL (classified by status). */
char *t_http_error(const us_target *t, const char *what, const struct us_http_response *r,
                   const char **code);
/* Classifies a non-2xx status into a stable code. */
const char *t_status_code(long status);
/* The product's error text of a response (errorMessages, errors, message,
** Bitbucket errors[].message; plain text; an HTML title), malloc'd; never NULL. */
char *t_error_text(const struct us_http_response *r);
/* 1 when r is 2xx with a JSON body parsed into *root; else fails the job
** (ERESPONSE for a non-JSON 2xx body) and returns 0. */
int t_json_ok(struct tjob *j, const char *what, const struct us_http_response *r,
              struct us_jval *root);
/* 1 when r is a 2xx response; else fails the job and returns 0. */
int t_ok(struct tjob *j, const char *what, const struct us_http_response *r);
/* A product rule for a non-2xx answer: when the status matches (0: any)
** and the product's error text contains `contains` (NULL: anything,
** case-insensitive), the outcome is success with `note` (when note is
** set) or a failure with `code`. Arrays end with status -1. */
struct tquirk {
  long status;
  const char *contains, *note, *code;
};
/* Outcome of a write: 1 success (*note set or NULL), 0 failure (*code and
** *msg (malloc'd) set). */
int t_outcome(const us_target *t, const char *what, const struct us_http_response *r,
              const struct tquirk *q, const char **note, const char **code, char **msg);
/* t_outcome for the whole job: success sets j->note, failure fails j. */
int t_write_done(struct tjob *j, const char *what, const struct us_http_response *r,
                 const struct tquirk *q);
/* Starts a write of job j whose outcome is t_write_done with quirks q:
** method, path (malloc'd; NULL: out of memory), body (malloc'd JSON, or
** NULL for none). Takes both and frees them, the body wiped first (it may
** hold a password). */
void t_write(struct tjob *j, const char *method, char *path, char *body, const struct tquirk *q,
             const char *what);
/* t_write for a write that has a body: a NULL body is out of memory. */
void t_write_json(struct tjob *j, const char *method, char *path, char *body,
                  const struct tquirk *q, const char *what);
/* t_outcome for item i of an ADD_MEMBERS / ADD_TO_GROUPS job. */
void t_item_done(struct tjob *j, size_t i, const char *what, const struct us_http_response *r,
                 const struct tquirk *q);
/* Emits the DONE of item i of an ADD_MEMBERS / ADD_TO_GROUPS job. */
void tjob_item_done(struct tjob *j, size_t i, int ok, const char *note, long status,
                    const char *code, const char *msg);
/* Emits a LEAD event. */
void tjob_lead(struct tjob *j, const char *lead, const char *item, int is_component);
void tjob_add_name(struct tjob *j, const char *name);
/* Emits a page event (ACCOUNTS, GROUPS or MEMBERS of group) of job j; takes
** ownership of both arrays. */
void tjob_emit_page(struct tjob *j, enum us_tev ev, const char *group,
                    struct us_target_account *a, size_t na, char **names, size_t nn);

/* ---- listings ---- */
struct tlister *tlist_start(struct tjob *j, enum tpage style, enum us_tev ev, const char *path,
                            const char *items, int groups, const char *group, tsink_fn sink);

/* Same, reading `prefetch` pages ahead by offset (PG_NEXTLINK; other styles ignore it). */
struct tlister *tlist_start_ahead(struct tjob *j, enum tpage style, enum us_tev ev,
                                  const char *path, const char *items, int groups,
                                  const char *group, tsink_fn sink, int prefetch);
/* Pages Confluence's account listing keeps in flight (100 accounts a page
** make it the longest chain of a snapshot). */
#define PREFETCH_ACCOUNTS 4

/* ---- strings ---- */
char *t_fmt(const char *fmt, ...);
char *t_vfmt(const char *fmt, va_list ap);
char *t_enc(const char *s);    /* percent-encodes everything but unreserved */
char *t_strdup(const char *s); /* NULL -> NULL */
char *t_jstr(const struct us_jval *obj, const char *path); /* string value or NULL */
int t_jbool(const struct us_jval *obj, const char *path, int def);
int t_streq_ci(const char *a, const char *b);
/* JSON object builder: pairs of key, value; value TJ_TRUE/TJ_FALSE for
** booleans, NULL to skip the pair; ends with a NULL key. */
extern const char TJ_TRUE[], TJ_FALSE[];
char *t_jobj(const char *k, ...);
/* ["a","b"] */
char *t_jarr(char *const *list, size_t n);
char *t_jquote(const char *s);
void t_account_free(struct us_target_account *a);

#endif
