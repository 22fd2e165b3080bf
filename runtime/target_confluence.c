/*
** target_confluence.c: Confluence Data Center (/rest/api) behind the target
** interface (target_impl.h).
**
** Quirks kept here:
**   - Confluence usually runs under a context path (/confluence): the
**     configured url must include it ("https://host/confluence").
**     `_links.next` and a long task's statusPath are relative to
**     `_links.base` (= that url); forms that repeat the context or are
**     absolute URLs are accepted too (t_rel_path).
**   - paging by `_links.next`; accounts: user/list?expand=status (disabled users
**     included, "status": "Active" | "Deactivated"); Person objects carry
**     no e-mail, so accounts have email = nil.
**   - user names are lower case: create lower-cases the name it sends (the
**     account is then found under that name); other calls pass names as
**     given (Confluence compares them case-insensitively).
**   - create needs a password or notifyViaEmail: without either a random
**     password is sent (users sign in through SSO or reset it).
**   - 402 on create: no licence seat left (ESEATS); 409 on create user or
**     group: success, "already exists"; group create answers 200, user
**     update / disable / enable / membership 204 (membership calls are
**     idempotent, so an existing membership is plain success).
**   - delete is asynchronous: 202 with a long task, polled at
**     GET longtask/{id} with a backoff of 0.2 s doubling to 2 s, for at most
**     task_wait_ms (default 120 s; then ETIMEOUT_TASK: a stalled task). The
**     result is success only when the task finished successfully; a task
**     that finished unsuccessfully is ETASK_FAILED with the task's message.
**   - 402 on enable (reactivate): no seat left, ESEATS like create.
**   - rename is not possible over REST: EUNSUPPORTED, no request.
**
** Request costs (A accounts, G groups):
**   snapshot: ceil(A/100) user/list (+ up to 3 read-ahead pages past the
**             end when A > 100: the listing keeps 4 pages in flight by
**             offset, since it is the snapshot's longest chain)
**             + ceil(G/200) group
**             + sum over groups of max(1, ceil(members/200)) group/{g}/member
**   get: 1 user + ceil(groups/200) memberof; delete: 1 + polls (3 typical);
**   other writes 1.
*/
#define _GNU_SOURCE
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "target_impl.h"
#include "usersync/crypto.h"

#define API "/rest/api"

static const struct tquirk q_exists[] = {{409, NULL, "already exists", NULL},
                                         {-1, NULL, NULL, NULL}};

static int conf_account(const struct us_jval *item, struct us_target_account *a) {
  memset(a, 0, sizeof *a);
  a->name = t_jstr(item, "username");
  if (!a->name)
    return -1;
  a->key = t_jstr(item, "userKey");
  a->display_name = t_jstr(item, "displayName");
  a->email = t_jstr(item, "email"); /* absent on DC; kept if a version sends it */
  char *st = t_jstr(item, "status");
  a->active = st ? !t_streq_ci(st, "Deactivated") : -1;
  free(st);
  return 0;
}

static struct tlister *conf_list(struct tjob *j, enum us_tev ev, const char *group, tsink_fn sink) {
  char *path = NULL;
  struct tlister *l = NULL;
  if (ev == US_TEV_ACCOUNTS) {
    path = t_fmt(API "/user/list?limit=%ld&expand=status", t_page_size(j->t, 100));
  } else if (ev == US_TEV_GROUPS) {
    path = t_fmt(API "/group?limit=%ld", t_page_size(j->t, 200));
  } else {
    char *g = t_enc(group);
    path =
        g ? t_fmt(API "/group/%s/member?limit=%ld&expand=status", g, t_page_size(j->t, 200)) : NULL;
    free(g);
  }
  if (path)
    l = tlist_start_ahead(j, PG_NEXTLINK, ev, path, "results", ev == US_TEV_GROUPS,
                          ev == US_TEV_MEMBERS ? group : NULL, sink,
                          ev == US_TEV_ACCOUNTS ? PREFETCH_ACCOUNTS : 0);
  else
    tjob_fail(j, US_HTTP_ENOMEM, 0, "list: out of memory");
  free(path);
  return l;
}

static void on_item(struct tcall *c, const struct us_http_response *r) {
  t_item_done(c->j, (size_t)c->n, c->what, r, NULL);
}

/* "/rest/api/admin/user/<enc name><suffix>" */
static char *admin_user(const char *name, const char *suffix) {
  char *n = t_enc(name), *p = n ? t_fmt(API "/admin/user/%s%s", n, suffix) : NULL;
  free(n);
  return p;
}

/* ---- get ---- */

static void on_get(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root;
  if (!t_json_ok(j, c->what, r, &root))
    return;
  if (conf_account(&root, &j->acc)) {
    tjob_fail(j, "ERESPONSE", r->status, "%s: the answer has no username", c->what);
    return;
  }
  j->have_acc = 1;
  j->raw = malloc(r->body_len + 1);
  if (j->raw) {
    memcpy(j->raw, r->body, r->body_len + 1);
    j->raw_len = r->body_len;
  }
}

static void memberof_sink(struct tlister *l, struct us_target_account *a, size_t na, char **names,
                          size_t nn) {
  (void)a, (void)na;
  for (size_t i = 0; i < nn; i++) {
    tjob_add_name(l->j, names[i]);
    free(names[i]);
  }
  free(names);
}

/* ---- delete: long task ---- */

static void poll_task(struct tjob *j, const char *path, double delay);

static void on_task(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root, msgs, e;
  if (!t_json_ok(j, c->what, r, &root))
    return;
  if (!t_jbool(&root, "finished", 0)) {
    double waited = us_time_monotonic() - j->t0, delay = (double)c->n / 1000.0;
    if (waited * 1000.0 > (double)t_config(j->t)->task_wait_ms) {
      long long pct = -1;
      struct us_jval pv;
      if (us_json_get(&root, "percentageComplete", &pv))
        us_json_int(&pv, &pct);
      char pcts[48] = "";
      if (pct >= 0)
        snprintf(pcts, sizeof pcts, " (still at %lld %%)", pct);
      tjob_fail(j, "ETIMEOUT_TASK", r->status,
                "%s: the long task did not finish within %.1f s%s; it may still complete", c->what,
                (double)t_config(j->t)->task_wait_ms / 1000.0, pcts);
      return;
    }
    poll_task(j, c->url + strlen(t_base(j->t)), delay * 2 > 2 ? 2 : delay * 2);
    return;
  }
  if (t_jbool(&root, "successful", 0)) {
    j->status = 204;
    return;
  }
  char *m = NULL;
  size_t pos = 0;
  if (us_json_get(&root, "messages", &msgs))
    while (!m && us_json_next_elem(&msgs, &pos, &e))
      m = t_jstr(&e, "translation");
  tjob_fail(j, "ETASK_FAILED", r->status, "%s: the long task failed: %s", c->what,
            m ? m : "(no message)");
  free(m);
}

static void poll_task(struct tjob *j, const char *path, double delay) {
  char what[300];
  snprintf(what, sizeof what, "delete user %s (long task)", j->name);
  tcall_start_at(j, "GET", path, NULL, on_task, NULL, (long long)(delay * 1000), what,
                 us_time_monotonic() + delay);
}

static void on_delete(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root;
  if (!r->code && r->status == 204) /* finished at once */
    return;
  if (!t_json_ok(j, c->what, r, &root))
    return;
  char *sp = t_jstr(&root, "statusPath"), *path = sp ? t_rel_path(j->t, sp) : NULL, *id = NULL;
  free(sp);
  if (!path && (id = t_jstr(&root, "id"))) {
    char *e = t_enc(id);
    path = e ? t_fmt(API "/longtask/%s", e) : NULL;
    free(e);
  }
  free(id);
  if (!path || path[0] != '/') {
    tjob_fail(j, "ERESPONSE", r->status, "%s: HTTP %ld without a long task to follow", c->what,
              r->status);
  } else {
    j->t0 = us_time_monotonic();
    poll_task(j, path, 0.2);
  }
  free(path);
}

/* ---- check ---- */

static void on_info(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root;
  if (!t_json_ok(j, c->what, r, &root))
    return;
  j->reachable = 1;
  j->product = strdup("Confluence");
  j->version = t_jstr(&root, "version");
}

static void admin_sink(struct tlister *l, struct us_target_account *a, size_t na, char **names,
                       size_t nn) {
  (void)a, (void)na;
  struct tjob *j = l->j;
  for (size_t i = 0; i < nn; i++) {
    if (t_streq_ci(names[i], "confluence-administrators")) {
      j->admin = 1;
      free(j->detail);
      j->detail = strdup("member of confluence-administrators");
    }
    free(names[i]);
  }
  free(names);
}

static void admin_end(struct tlister *l) {
  struct tjob *j = l->j;
  if (j->admin != 1) {
    j->admin = 0;
    free(j->detail);
    j->detail = strdup("not a member of confluence-administrators");
  }
}

static void on_current(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root;
  if (!t_json_ok(j, c->what, r, &root))
    return;
  j->whoami = t_jstr(&root, "username");
  char *u = j->whoami ? t_enc(j->whoami) : NULL;
  char *p = u ? t_fmt(API "/user/memberof?username=%s&limit=200", u) : NULL;
  if (p) {
    struct tlister *l =
        tlist_start(j, PG_NEXTLINK, US_TEV_GROUPS, p, "results", 1, NULL, admin_sink);
    if (l)
      l->on_end = admin_end;
  }
  free(u);
  free(p);
}

/* Starts an account operation (get, create, update, rename, deactivate,
** reactivate, delete); 0 when j is of another kind. */
static int conf_start_account(struct tjob *j) {
  const char *name = j->name ? j->name : "";
  char what[600];
  switch (j->kind) {
  case US_TOP_GET_ACCOUNT: {
    char *n = t_enc(name);
    char *p = n ? t_fmt(API "/user?username=%s&expand=status", n) : NULL;
    char *m =
        n ? t_fmt(API "/user/memberof?username=%s&limit=%ld", n, t_page_size(j->t, 200)) : NULL;
    snprintf(what, sizeof what, "get user %s", name);
    if (p && m) {
      tcall_start(j, "GET", p, NULL, on_get, NULL, 0, what);
      tlist_start(j, PG_NEXTLINK, US_TEV_GROUPS, m, "results", 1, NULL, memberof_sink);
    } else {
      tjob_fail(j, US_HTTP_ENOMEM, 0, "out of memory");
    }
    free(n);
    free(p);
    free(m);
    break;
  }
  case US_TOP_CREATE_USER: {
    char *lower = strdup(name), *pw = NULL, *body;
    for (char *p = lower; p && *p; p++)
      *p = (char)tolower((unsigned char)*p);
    if (!j->password && !j->notify)
      pw = us_random_hex(16);
    body =
        t_jobj("userName", lower, "fullName", j->display_name, "email", j->email, "password",
               j->password ? j->password : pw, "notifyViaEmail", j->notify ? TJ_TRUE : NULL, NULL);
    snprintf(what, sizeof what, "create user %s", lower ? lower : name);
    t_write_json(j, "POST", strdup(API "/admin/user"), body, q_exists, what); /* wipes body */
    if (pw)
      memset(pw, 0, strlen(pw));
    free(pw);
    free(lower);
    break;
  }
  case US_TOP_UPDATE_USER: {
    snprintf(what, sizeof what, "update user %s", name);
    if (!j->display_name && !j->email) {
      j->note = "nothing to change";
      break;
    }
    t_write_json(j, "PUT", admin_user(name, ""),
                 t_jobj("fullName", j->display_name, "email", j->email, NULL), NULL, what);
    break;
  }
  case US_TOP_DEACTIVATE_USER:
    snprintf(what, sizeof what, "deactivate user %s", name);
    t_write(j, "PUT", admin_user(name, "/disable"), NULL, NULL, what);
    break;
  case US_TOP_REACTIVATE_USER:
    snprintf(what, sizeof what, "reactivate user %s", name);
    t_write(j, "PUT", admin_user(name, "/enable"), NULL, NULL, what);
    break;
  case US_TOP_DELETE_USER: {
    char *p = admin_user(name, "");
    snprintf(what, sizeof what, "delete user %s", name);
    if (p)
      tcall_start(j, "DELETE", p, NULL, on_delete, NULL, 0, what);
    else
      tjob_fail(j, US_HTTP_ENOMEM, 0, "out of memory");
    free(p);
    break;
  }
  default:
    return 0;
  }
  return 1;
}

/* Starts job j: accounts above, groups, memberships and the rest here. */
static void conf_start(struct tjob *j) {
  if (conf_start_account(j))
    return;
  const char *name = j->name ? j->name : "", *group = j->group ? j->group : "";
  char what[600];
  switch (j->kind) {
  case US_TOP_CREATE_GROUP: {
    snprintf(what, sizeof what, "create group %s", group);
    t_write_json(j, "POST", strdup(API "/admin/group"), t_jobj("name", group, NULL), q_exists,
                 what);
    break;
  }
  case US_TOP_DELETE_GROUP: {
    char *g = t_enc(group);
    snprintf(what, sizeof what, "delete group %s", group);
    t_write(j, "DELETE", g ? t_fmt(API "/admin/group/%s", g) : NULL, NULL, NULL, what);
    free(g);
    break;
  }
  case US_TOP_ADD_MEMBERS:
  case US_TOP_ADD_TO_GROUPS:
  case US_TOP_REMOVE_MEMBER: {
    int rm = j->kind == US_TOP_REMOVE_MEMBER;
    size_t n = rm ? 1 : j->nlist;
    for (size_t i = 0; i < n; i++) {
      const char *u = j->kind == US_TOP_ADD_MEMBERS ? j->list[i] : name;
      const char *g = j->kind == US_TOP_ADD_TO_GROUPS ? j->list[i] : group;
      char *eu = t_enc(u), *eg = t_enc(g);
      char *p = eu && eg ? t_fmt(API "/user/%s/group/%s", eu, eg) : NULL;
      snprintf(what, sizeof what, "%s %s %s %s", rm ? "remove" : "add", u, rm ? "from" : "to", g);
      if (rm)
        t_write(j, "DELETE", p, NULL, NULL, what); /* frees p */
      else if (p)
        tcall_start(j, "PUT", p, NULL, on_item, NULL, (long long)i, what);
      else
        tjob_item_done(j, i, 0, NULL, 0, US_HTTP_ENOMEM, "out of memory");
      if (!rm)
        free(p);
      free(eu);
      free(eg);
    }
    break;
  }
  case US_TOP_CHECK:
    tcall_start(j, "GET", API "/server-information", NULL, on_info, NULL, 0, "server information");
    tcall_start(j, "GET", API "/user/current", NULL, on_current, NULL, 0, "who am I");
    break;
  default: /* (what caps lacks was refused before: target.c) */
    tjob_fail(j, "EUNSUPPORTED", 0, "operation %d is not supported", (int)j->kind);
  }
}

const struct us_target_vt us_target_confluence_vt = {
    .type = "confluence",
    .caps = {.deactivate = 1, .reactivate = 1, .rename = 0, .leads = 0, .bulk_add = 0},
    .start = conf_start,
    .list = conf_list,
    .parse_account = conf_account,
};
