/*
** target_bitbucket.c: Bitbucket Data Center (/rest/api/1.0) behind the
** target interface (target_impl.h).
**
** Quirks kept here:
**   - paging: isLastPage / nextPageStart, limit up to 1000.
**   - create user and create group take query parameters, no JSON body;
**     create user answers 204, create group 200, delete user 200 with the
**     deleted user; 409 on create is success, "already exists". Without a
**     password and without notify a random password is sent.
**     addToDefaultGroup follows the config (Bitbucket's default: true).
**   - licence limit: 403 "... would exceed the server's license limit" on
**     create (default group) and 403 "... licensing limit" on membership
**     adds become ESEATS with Bitbucket's message (like Confluence's 402),
**     not EFORBIDDEN: the fix is a licence or a seat, not a permission.
**   - membership: adds use the bulk endpoints (admin/groups/add-users for
**     one group and many users, admin/users/add-groups for one user and
**     many groups), all-or-nothing on the server; when a bulk add fails the
**     items are retried one by one so each gets its own outcome. Adding an
**     existing member is a plain 200. Removal uses admin/users/remove-group
**     whose body is {"context": <user>, "itemName": <group>} (the deprecated
**     groups/remove-user swaps the two).
**   - no deactivation exists (caps): deactivate/reactivate are EUNSUPPORTED
**     without a request (the planner removes the account from its groups
**     instead).
**   - get: the user is found with admin/users?filter= (a substring match,
**     so the exact name is picked out) and its groups with
**     admin/users/more-members?context=<user>.
**
** Request costs (A accounts, G groups):
**   snapshot: ceil(A/1000) admin/users + ceil(G/1000) admin/groups
**             + sum over groups of max(1, ceil(members/1000)) more-members
**   get: 1 + 1 (more pages when the filter or the groups exceed 1000);
**   add_members(group, n users): 1 (n + 1 when the bulk call fails);
**   other writes 1.
*/
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "target_impl.h"
#include "usersync/crypto.h"

#define API "/rest/api/1.0"

static const struct tquirk q_exists[] = {
    {409, NULL, "already exists", NULL}, {403, "licens", NULL, "ESEATS"}, {-1, NULL, NULL, NULL}};
static const struct tquirk q_seats[] = {{403, "licens", NULL, "ESEATS"}, {-1, NULL, NULL, NULL}};

static int bb_account(const struct us_jval *item, struct us_target_account *a) {
  memset(a, 0, sizeof *a);
  a->name = t_jstr(item, "name");
  if (!a->name)
    return -1;
  a->key = t_jstr(item, "slug");
  a->display_name = t_jstr(item, "displayName");
  a->email = t_jstr(item, "emailAddress");
  a->active = t_jbool(item, "active", -1);
  return 0;
}

static struct tlister *bb_list(struct tjob *j, enum us_tev ev, const char *group, tsink_fn sink) {
  long n = t_page_size(j->t, 1000);
  char *path = NULL, *g = NULL;
  struct tlister *l = NULL;
  if (ev == US_TEV_ACCOUNTS)
    path = t_fmt(API "/admin/users?limit=%ld", n);
  else if (ev == US_TEV_GROUPS)
    path = t_fmt(API "/admin/groups?limit=%ld", n);
  else if ((g = t_enc(group)))
    path = t_fmt(API "/admin/groups/more-members?context=%s&limit=%ld", g, n);
  free(g);
  if (path)
    l = tlist_start(j, PG_BB, ev, path, "values", ev == US_TEV_GROUPS,
                    ev == US_TEV_MEMBERS ? group : NULL, sink);
  else
    tjob_fail(j, US_HTTP_ENOMEM, 0, "list: out of memory");
  free(path);
  return l;
}

/* ---- get ---- */

static void find_sink(struct tlister *l, struct us_target_account *a, size_t na, char **names,
                      size_t nn) {
  (void)names, (void)nn;
  struct tjob *j = l->j;
  for (size_t i = 0; i < na; i++) {
    if (!j->have_acc && t_streq_ci(a[i].name, j->name)) {
      j->acc = a[i];
      j->have_acc = 1;
    } else {
      t_account_free(&a[i]);
    }
  }
  free(a);
}

static void find_end(struct tlister *l) {
  struct tjob *j = l->j;
  if (!j->have_acc)
    tjob_fail(j, "ENOTFOUND", 404, "get user %s: no such user", j->name);
}

static void groups_sink(struct tlister *l, struct us_target_account *a, size_t na, char **names,
                        size_t nn) {
  (void)a, (void)na;
  for (size_t i = 0; i < nn; i++) {
    tjob_add_name(l->j, names[i]);
    free(names[i]);
  }
  free(names);
}

/* ---- bulk membership ---- */

static void on_single(struct tcall *c, const struct us_http_response *r) {
  t_item_done(c->j, (size_t)c->n, c->what, r, q_seats);
}

/* Adds item i alone (after a bulk failure) or every item (i = -1). */
static void add_call(struct tjob *j, long long i);

static void on_bulk(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  if (!r->code && r->status >= 200 && r->status < 300) {
    for (size_t i = 0; i < j->nlist; i++)
      tjob_item_done(j, i, 1, NULL, r->status, NULL, NULL);
    return;
  }
  if (j->nlist == 1 || r->code) { /* nothing to tell apart, or the transport failed */
    for (size_t i = 0; i < j->nlist; i++)
      t_item_done(j, i, c->what, r, q_seats);
    return;
  }
  for (size_t i = 0; i < j->nlist; i++) /* find out which items the server refused */
    add_call(j, (long long)i);
}

static void add_call(struct tjob *j, long long i) {
  int to_group = j->kind == US_TOP_ADD_MEMBERS; /* one group, many users */
  char *const *items = i < 0 ? j->list : &j->list[i];
  size_t n = i < 0 ? j->nlist : 1;
  char *arr = t_jarr(items, n), *what;
  const char *one = j->group ? j->group : "", *user = j->name ? j->name : "";
  char *q = t_jquote(to_group ? one : user), *full = NULL;
  if (arr && q)
    full = to_group ? t_fmt("{\"group\":%s,\"users\":%s}", q, arr)
                    : t_fmt("{\"user\":%s,\"groups\":%s}", q, arr);
  if (i < 0)
    what = to_group ? t_fmt("add %zu user(s) to %s", n, one)
                    : t_fmt("add %s to %zu group(s)", user, n);
  else
    what =
        to_group ? t_fmt("add %s to %s", j->list[i], one) : t_fmt("add %s to %s", user, j->list[i]);
  if (full && what)
    tcall_start(j, "POST", to_group ? API "/admin/groups/add-users" : API "/admin/users/add-groups",
                full, i < 0 ? on_bulk : on_single, NULL, i < 0 ? 0 : i, what);
  else if (i < 0)
    tjob_fail(j, US_HTTP_ENOMEM, 0, "out of memory");
  else
    tjob_item_done(j, (size_t)i, 0, NULL, 0, US_HTTP_ENOMEM, "out of memory");
  free(arr);
  free(q);
  free(full);
  free(what);
}

/* ---- check ---- */

static void on_props(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root;
  if (!t_json_ok(j, c->what, r, &root))
    return;
  j->reachable = 1;
  j->product = t_jstr(&root, "displayName");
  if (!j->product)
    j->product = strdup("Bitbucket");
  j->version = t_jstr(&root, "version");
}

static void on_admin_probe(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root, vals, e;
  const char *who = us_http_header(r, "x-ausername");
  if (who && !j->whoami)
    j->whoami = strdup(who);
  if (!j->whoami && t_config(j->t)->user)
    j->whoami = strdup(t_config(j->t)->user);
  if (!r->code && r->status == 404) {
    j->detail = strdup("admin/permissions/users is not available: admin rights unknown");
    return;
  }
  if (!r->code && r->status == 403) {
    j->admin = 0;
    j->detail = strdup("needs ADMIN or SYS_ADMIN global permission");
    return;
  }
  /* Bitbucket answers an account it signed in but that is not an administrator with 401
     AuthorisationException ("You are not permitted to access this resource"); refused
     credentials are IncorrectPasswordAuthenticationException and stay an EAUTH failure. */
  if (!r->code && r->status == 401 && us_json_parse(r->body, r->body_len, &root)) {
    char *exc = t_jstr(&root, "errors[0].exceptionName");
    int denied = exc && !strcmp(exc, "com.atlassian.bitbucket.AuthorisationException");
    free(exc);
    if (denied) {
      j->admin = 0;
      j->detail = strdup("needs ADMIN or SYS_ADMIN global permission");
      return;
    }
  }
  if (!t_json_ok(j, c->what, r, &root))
    return;
  j->admin = 0;
  size_t pos = 0;
  if (us_json_get(&root, "values", &vals))
    while (us_json_next_elem(&vals, &pos, &e)) {
      char *name = t_jstr(&e, "user.name"), *perm = t_jstr(&e, "permission");
      if (name && perm && j->whoami && t_streq_ci(name, j->whoami) &&
          (!strcmp(perm, "ADMIN") || !strcmp(perm, "SYS_ADMIN"))) {
        j->admin = 1;
        free(j->detail);
        j->detail = t_fmt("global permission %s", perm);
      }
      free(name);
      free(perm);
    }
  if (!j->admin && !j->detail)
    j->detail = strdup("no ADMIN or SYS_ADMIN global permission");
}

/* Starts an account operation (get, create, update, rename, deactivate,
** reactivate, delete); 0 when j is of another kind. */
static int bb_start_account(struct tjob *j) {
  const char *name = j->name ? j->name : "";
  char what[600];
  switch (j->kind) {
  case US_TOP_GET_ACCOUNT: {
    char *n = t_enc(name);
    long ps = t_page_size(j->t, 1000);
    char *p = n ? t_fmt(API "/admin/users?filter=%s&limit=%ld", n, ps) : NULL;
    char *m = n ? t_fmt(API "/admin/users/more-members?context=%s&limit=%ld", n, ps) : NULL;
    if (p && m) {
      struct tlister *l = tlist_start(j, PG_BB, US_TEV_ACCOUNTS, p, "values", 0, NULL, find_sink);
      if (l)
        l->on_end = find_end;
      tlist_start(j, PG_BB, US_TEV_GROUPS, m, "values", 1, NULL, groups_sink);
    } else {
      tjob_fail(j, US_HTTP_ENOMEM, 0, "out of memory");
    }
    free(n);
    free(p);
    free(m);
    break;
  }
  case US_TOP_CREATE_USER: {
    char *n = t_enc(name), *dn = t_enc(j->display_name ? j->display_name : "");
    char *em = t_enc(j->email ? j->email : ""), *rnd = NULL, *pw = NULL;
    if (!j->password && !j->notify)
      rnd = us_random_hex(16);
    pw = t_enc(j->password ? j->password : rnd ? rnd : "");
    char *p = n && dn && em && pw
                  ? t_fmt(API "/admin/users?name=%s&displayName=%s&emailAddress=%s%s%s"
                              "&addToDefaultGroup=%s&notify=%s",
                          n, dn, em, pw[0] ? "&password=" : "", pw,
                          t_config(j->t)->add_to_default_group ? "true" : "false",
                          j->notify ? "true" : "false")
                  : NULL;
    snprintf(what, sizeof what, "create user %s", name);
    t_write(j, "POST", p, NULL, q_exists, what); /* frees p */
    if (rnd)
      memset(rnd, 0, strlen(rnd));
    if (pw)
      memset(pw, 0, strlen(pw));
    free(n);
    free(dn);
    free(em);
    free(rnd);
    free(pw);
    break;
  }
  case US_TOP_UPDATE_USER: {
    snprintf(what, sizeof what, "update user %s", name);
    if (!j->display_name && !j->email) {
      j->note = "nothing to change";
      break;
    }
    t_write_json(j, "PUT", strdup(API "/admin/users"),
                 t_jobj("name", name, "displayName", j->display_name, "email", j->email, NULL),
                 NULL, what);
    break;
  }
  case US_TOP_RENAME_USER: {
    snprintf(what, sizeof what, "rename user %s to %s", name, j->to ? j->to : "");
    t_write_json(j, "POST", strdup(API "/admin/users/rename"),
                 t_jobj("name", name, "newName", j->to ? j->to : "", NULL), NULL, what);
    break;
  }
  case US_TOP_DELETE_USER: {
    char *n = t_enc(name);
    snprintf(what, sizeof what, "delete user %s", name);
    t_write(j, "DELETE", n ? t_fmt(API "/admin/users?name=%s", n) : NULL, NULL, NULL, what);
    free(n);
    break;
  }
  default:
    return 0;
  }
  return 1;
}

/* Starts job j: accounts above, groups, memberships and the rest here. */
static void bb_start(struct tjob *j) {
  if (bb_start_account(j))
    return;
  const char *name = j->name ? j->name : "", *group = j->group ? j->group : "";
  char what[600];
  switch (j->kind) {
  case US_TOP_CREATE_GROUP: {
    char *g = t_enc(group);
    snprintf(what, sizeof what, "create group %s", group);
    t_write(j, "POST", g ? t_fmt(API "/admin/groups?name=%s", g) : NULL, NULL, q_exists, what);
    free(g);
    break;
  }
  case US_TOP_DELETE_GROUP: {
    char *g = t_enc(group);
    snprintf(what, sizeof what, "delete group %s", group);
    t_write(j, "DELETE", g ? t_fmt(API "/admin/groups?name=%s", g) : NULL, NULL, NULL, what);
    free(g);
    break;
  }
  case US_TOP_ADD_MEMBERS:
  case US_TOP_ADD_TO_GROUPS:
    if (j->nlist)
      add_call(j, -1);
    break;
  case US_TOP_REMOVE_MEMBER: {
    /* remove-group: context = the user, itemName = the group */
    snprintf(what, sizeof what, "remove %s from %s", name, group);
    t_write_json(j, "POST", strdup(API "/admin/users/remove-group"),
                 t_jobj("context", name, "itemName", group, NULL), NULL, what);
    break;
  }
  case US_TOP_CHECK: {
    const char *u = t_config(j->t)->user;
    char *e = u ? t_enc(u) : NULL;
    char *p = t_fmt(API "/admin/permissions/users?limit=1000%s%s", e ? "&filter=" : "", e ? e : "");
    tcall_start(j, "GET", API "/application-properties", NULL, on_props, NULL, 0,
                "application properties");
    if (p)
      tcall_start(j, "GET", p, NULL, on_admin_probe, NULL, 0, "global permissions");
    free(e);
    free(p);
    break;
  }
  default: /* (what caps lacks was refused before: target.c) */
    tjob_fail(j, "EUNSUPPORTED", 0, "operation %d is not supported", (int)j->kind);
  }
}

const struct us_target_vt us_target_bitbucket_vt = {
    .type = "bitbucket",
    .caps = {.deactivate = 0, .reactivate = 0, .rename = 1, .leads = 0, .bulk_add = 1},
    .start = bb_start,
    .list = bb_list,
    .parse_account = bb_account,
};
