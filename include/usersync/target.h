/*
** target.h: the target clients (Jira, Confluence, Bitbucket Data Center,
** Crowd, SCIM 2.0 services) behind one interface. Plain C, no Lua: runtime/bind_target.c is
** the Lua face.
**
** A target (`us_target`) talks to one product instance through a shared
** HTTP engine (`us_http`, not owned). Each product is a vtable (struct
** us_target_vt, runtime/target_<product>.c); the shared machinery
** (runtime/target.c) owns auth headers, the per-target concurrency limit,
** rate-limit headers, paging loops, error classification and the event
** queue. Product quirks (paging schemes, query-parameter creates, odd
** success statuses, "already a member", Confluence's long-task delete,
** Bitbucket's swapped context/itemName, Jira's hidden inactive users) stay
** in the product files.
**
** Model: work is started as jobs inside a batch; jobs run while the caller
** drives the engine (us_http_run_once, or us_target_drive); as they make
** progress they append events (pages of records, a final DONE) to their
** batch's queue, which the caller drains with us_target_batch_next(). Events
** are produced from inside the engine's callbacks but only copied into the
** queue there, so the caller handles them outside any libcurl callback
** (safe for Lua). Every job ends with exactly one DONE event.
**
** Stable error codes (us_target_event.code when ok == 0):
**   EAUTH        401: credentials refused (JSON or an HTML login/error page:
**                Jira and Confluence answer bad credentials with HTML)
**                also 403 with X-Authentication-Denied-Reason (Seraph's
**                CAPTCHA challenge after failed logins)
**   EFORBIDDEN   403: no permission (also "XSRF check failed")
**   ENOTFOUND    404: no such user, group, project, component or resource
**   ECONFLICT    409: conflict the product refused (e.g. Bitbucket: deleting yourself)
**   ESEATS       no licence seat left: Confluence 402 (create, enable);
**                Bitbucket 403 "would exceed the server's license limit"
**                (create with the default group, membership adds)
**   EINHERITED   Jira, Crowd: remove member refused because the membership comes
**                from a nested group (remove it from that group instead)
**   ELEAD        Jira: user leads a project or component (delete/deactivate refused)
**   EINVALID     400: the product rejected the request's values (message says which)
**   ERATELIMIT   429 after the engine's retries ran out
**   EUNSUPPORTED the product cannot do this (Bitbucket deactivate/reactivate,
**                Confluence rename, leads outside Jira); no request is made
**   ERESPONSE    a body that should be JSON is not (HTML error page, garbage),
**                or is JSON of an unexpected shape
**   ETRUNCATED   a listing the product cut short (Jira's groups/picker answers
**                fewer groups than its total): what came was delivered, the rest
**                must be looked up by name
**   ETIMEOUT_TASK Confluence long task not finished within its polling budget
**   ETASK_FAILED Confluence long task finished unsuccessfully (its message)
**   EHTTP        any other HTTP status (5xx, 405, ...)
**   and the transport codes of http.h (ECONNREFUSED, ETIMEDOUT, ETLS, ...).
** Messages read "<type>: <what>: HTTP <status>: <product messages>" and
** never contain credentials, Authorization values or query strings.
*/
#ifndef USERSYNC_TARGET_H
#define USERSYNC_TARGET_H
#include <stddef.h>

#include "usersync/http.h"

typedef struct us_target us_target;
typedef struct us_target_batch us_target_batch;

struct us_target_config {
  const char *type;         /* a product's type: us_target_product() lists them */
  const char *url;          /* base URL incl. context path, e.g. https://h/jira */
  const char *user;         /* with password: HTTP Basic */
  const char *password;     /* */
  const char *token;        /* without password: Authorization: Bearer <token> (PAT) */
  int concurrency;          /* requests of this target in flight at once; <=0: 8 */
  long timeout_ms;          /* per attempt; 0: engine default */
  long page_size;           /* 0: each listing's product maximum; else min(page_size, max) */
  int add_to_default_group; /* Bitbucket create: addToDefaultGroup (default 1) */
  long task_wait_ms;        /* Confluence long-task polling budget; 0: 120000 */
  const char *flavour;      /* a variant of the product (SCIM: "atlassian"); NULL: none */
};

/* What a product can do (its vtable's, the one statement of it): an
** operation it lacks ends EUNSUPPORTED without a request (runtime/target.c),
** and Lua's usersync.targets.CAPS is read from here. */
struct us_target_caps {
  int deactivate, reactivate, rename, leads, bulk_add;
};

/* A named variant of a product (SCIM's "atlassian") with its own capabilities. */
struct us_target_flavour {
  const char *name;
  struct us_target_caps caps;
};

/* Operations (the planner's kinds plus listings, lookups and check). */
enum us_top {
  US_TOP_LIST_ACCOUNTS = 1, /* events: ACCOUNTS pages */
  US_TOP_LIST_GROUPS,       /* events: GROUPS pages */
  US_TOP_LIST_MEMBERS,      /* group; events: MEMBERS pages */
  US_TOP_GET_ACCOUNT,       /* name (SCIM: id, when known, reads by it instead); DONE
                             ** carries accounts[0] and names = its groups */
  US_TOP_CREATE_USER,       /* name, display_name, email, password?, notify */
  US_TOP_UPDATE_USER,       /* name, display_name?, email? (NULL: unchanged) */
  US_TOP_RENAME_USER,       /* name -> to */
  US_TOP_DEACTIVATE_USER,   /* name */
  US_TOP_REACTIVATE_USER,   /* name */
  US_TOP_DELETE_USER,       /* name */
  US_TOP_CREATE_GROUP,      /* group */
  US_TOP_DELETE_GROUP,      /* group */
  US_TOP_ADD_MEMBERS,       /* group + list of user names: one DONE per name (tags[i]) */
  US_TOP_ADD_TO_GROUPS,     /* name + list of groups: one DONE per group (tags[i]) */
  US_TOP_REMOVE_MEMBER,     /* group, name */
  US_TOP_LEADS,             /* list of user names; events: LEAD; Jira only */
  US_TOP_HANDOVER_LEAD,     /* name, list = project keys, list2 = component ids,
                               to = project lead, to2 = component lead; Jira only */
  US_TOP_SNAPSHOT,          /* events: ACCOUNTS, GROUPS, MEMBERS pages; when the product
                               cut its groups listing short (Jira's groups/picker under
                               a server limit) DONE has partial = 1, the GROUPS pages hold
                               only the groups it gave and no MEMBERS pages come */
  US_TOP_CHECK,             /* DONE carries the check fields */
  US_TOP_FIND_GROUP         /* group; DONE ok, note "no such group" when it does not exist;
                               Jira only (1 request: group/member?maxResults=1) */
};

struct us_target_op {
  enum us_top kind;
  const char *name, *to, *to2, *group, *display_name, *email, *password;
  int notify;
  const char *const *list; /* names, groups or project keys */
  size_t nlist;
  const char *const *list2; /* component ids; ADD_MEMBERS: the members' service ids (SCIM),
                             ** one per list item, "" unknown (then looked up by name) */
  size_t nlist2;
  const char *id;    /* the account's id in the service (SCIM), when known; NULL: by name */
  const char *external_id; /* CREATE_USER: the source's id of the user (SCIM externalId) */
  void *tag;         /* returned in every event of the job */
  void *const *tags; /* ADD_MEMBERS / ADD_TO_GROUPS: one per list item (NULL: tag) */
};

struct us_target_account {
  char *name, *key, *display_name, *email; /* email NULL when the product hides it */
  char *id; /* the id the service assigned (SCIM); NULL where accounts are known by name */
  int active;                              /* 1, 0, or -1 unknown */
};

enum us_tev { US_TEV_ACCOUNTS = 1, US_TEV_GROUPS, US_TEV_MEMBERS, US_TEV_LEAD, US_TEV_DONE };

/* One event; owned by the caller after us_target_batch_next(), freed with
** us_target_event_free(). Strings are malloc'd unless marked static. */
struct us_target_event {
  enum us_tev type;
  void *tag;
  enum us_top kind;
  char *group;                        /* MEMBERS: the group; LEAD: the lead's name */
  struct us_target_account *accounts; /* ACCOUNTS, MEMBERS, DONE of GET_ACCOUNT; NULL
                                       ** when the batch's sink took the page's records
                                       ** (naccounts still counts them) */
  size_t naccounts;
  char **names; /* GROUPS: group names; DONE of GET_ACCOUNT: its groups */
  size_t nnames;
  int partial; /* DONE of GET_ACCOUNT: 1 when the product did not tell the account's
               ** groups (names is then empty: unknown, not none); DONE of SNAPSHOT:
               ** 1 when the groups listing was cut short (see US_TOP_SNAPSHOT) */
  char *item;       /* ADD_MEMBERS/ADD_TO_GROUPS DONE: the name or group; LEAD: key or id */
  int is_component; /* LEAD: 1 component (item = id), 0 project (item = key) */
  char *raw;        /* DONE of GET_ACCOUNT: the account's JSON body */
  size_t raw_len;
  /* DONE */
  int ok;
  const char *note;       /* static: "already a member", "already exists", ... or NULL */
  long status;            /* last HTTP status (0: none) */
  const char *code;       /* static; NULL when ok */
  char *message;          /* NULL when ok */
  unsigned long requests; /* requests this job made */
  /* DONE of CHECK */
  int reachable, admin; /* admin: 1, 0, -1 unknown */
  char *product, *version, *whoami, *detail;
};

/* The i-th product (0-based) this build knows: its type ("jira", ...), and
** its capabilities in *caps (when not NULL); NULL past the last one. The
** one list of products: Lua's usersync.targets reads it. */
const char *us_target_product(size_t i, struct us_target_caps *caps);
/* The k-th flavour (0-based) of the i-th product: its name, its
** capabilities in *caps (when not NULL); NULL past the last one. */
const char *us_target_product_flavour(size_t i, size_t k, struct us_target_caps *caps);

/* Creates a target. NULL with *err (static) on a bad config or no memory. */
us_target *us_target_new(us_http *http, const struct us_target_config *c, const char **err);
/* Cancels and frees everything of the target, batches included. NULL fine. */
void us_target_free(us_target *t);
const char *us_target_type(const us_target *t);
const char *us_target_flavour(const us_target *t); /* NULL: none */
struct us_target_caps us_target_caps(const us_target *t);
/* Requests this target has made (every HTTP request submitted). */
unsigned long us_target_requests(const us_target *t);

us_target_batch *us_target_batch_new(us_target *t);
/* Starts a job; 0 ok, -1 misuse/no memory (*err static). An unsupported
** operation still starts: its DONE says EUNSUPPORTED without a request. */
int us_target_submit(us_target_batch *b, const struct us_target_op *op, const char **err);
/* Next event or NULL when none is ready. */
struct us_target_event *us_target_batch_next(us_target_batch *b);
/* Jobs of the batch not yet finished, plus events not yet taken. */
size_t us_target_batch_pending(const us_target_batch *b);
/* Jobs of the batch not yet finished (their DONE not emitted). */
size_t us_target_batch_running(const us_target_batch *b);
/* Cancels the batch's unfinished jobs (no more events) and frees it. */
void us_target_batch_free(us_target_batch *b);
/* A sink for the records of the batch's ACCOUNTS and MEMBERS pages: fn(ud,
** ev) runs as each such page arrives (inside the http engine's callbacks,
** whoever drives it), before the event is queued; the records are freed
** right after, and the queued event carries their count (accounts NULL).
** So a page waiting to be taken holds no records. fn also sees each DONE
** event (no records) as it is queued: the sink's records are all in. NULL fn: none. */
void us_target_batch_sink(us_target_batch *b, void (*fn)(void *ud, const struct us_target_event *ev),
                          void *ud);
void us_target_event_free(struct us_target_event *ev);

/* Drives the shared engine once (us_http_run_once). */
int us_target_drive(us_target *t, long timeout_ms);

/* Runs a batch until nothing is pending, calling fn for each event (which
** takes ownership of it). For C callers and tests. */
void us_target_run(us_target_batch *b, void (*fn)(void *ud, struct us_target_event *ev), void *ud);

#endif
