/*
** target_jira.c: Jira Data Center (REST v2, /rest/api/2) behind the target
** interface (target_impl.h).
**
** Quirks kept here:
**   - accounts: GET user/list (cursor pages, maxResults 2000, inactive users
**     included); groups: GET groups/picker (one answer, no paging; a total
**     above what came back, a server's cap, is never a short list: a listing
**     fails with ETRUNCATED, a snapshot comes back without memberships and
**     partial, and the caller looks the groups it needs up by name with
**     group/member, 404 = no such group); members:
**     GET group/member with includeInactiveUsers=true (Jira hides inactive
**     members otherwise), offset pages of at most 50, fanned out once the
**     first page gives the total (target.c: short pages, a capped page size
**     and a missing isLast are read as the spec allows).
**   - expand=groups (get, check) may be ignored (the spec does not list
**     it): no groups.items, or a size above the items, is "unknown", never
**     "no groups" (get: partial). check takes admin rights from
**     mypermissions?permissions=ADMINISTER,SYSTEM_ADMIN, the groups only
**     when that cannot be read. Members include nested-group members
**     (Jira answers the transitive closure), so a snapshot cannot tell a
**     direct membership from an inherited one.
**   - add member: a 400 is success ("already a member") when reading the
**     membership shows the user in the group (the user's expand=groups, or
**     the group's members when the server does not expand), whatever the
**     400 says; otherwise the 400 stands (EINVALID);
**     remove member: 404 (10.x) or 400 (older) "not a member" is success
**     ("not a member"); a 404 saying the user is "not a direct member"
**     (the membership is inherited from a nested group) is a failure,
**     EINHERITED, with Jira's message naming the nested group: the user
**     stays an effective member, so success would be a lie, and the fix
**     belongs to the nested group's membership;
**     create user/group: 400 "already exists" is success ("already exists").
**   - delete/deactivate refused while the user leads a project or component:
**     400 mentioning "lead" becomes ELEAD.
**   - leads: GET project?expand=lead (projects whose entry lacks "lead" are
**     read one by one), then GET project/{key}/components per project.
**
** Request costs (A accounts, G groups, M memberships, P projects):
**   snapshot: ceil(A/2000) user/list + 1 groups/picker
**             + sum over groups of max(1, ceil(members/50)) group/member
**   get: 1 (user?expand=groups); every write: 1 request (an add answered
**   400: +1 user?expand=groups, or the group's member pages when the server
**   does not expand); find group: 1; check: 3; handover: one per project and
**   component; leads: 1 + P (+1 per project listed without lead).
*/
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "target_impl.h"

#define API "/rest/api/2"

static const struct tquirk q_create[] = {{400, "already exists", "already exists", NULL},
                                         {-1, NULL, NULL, NULL}};
static const struct tquirk q_remove[] = {{404, "not a direct member", NULL, "EINHERITED"},
                                         {404, "not a member", "not a member", NULL},
                                         {400, "not a member", "not a member", NULL},
                                         {-1, NULL, NULL, NULL}};
static const struct tquirk q_lead[] = {{400, "lead", NULL, "ELEAD"}, {-1, NULL, NULL, NULL}};
/* group/member: 404 "if the specified group does not exist" (the spec) */
static const struct tquirk q_nogroup[] = {{404, NULL, "no such group", NULL},
                                          {-1, NULL, NULL, NULL}};

static int jira_account(const struct us_jval *item, struct us_target_account *a) {
  memset(a, 0, sizeof *a);
  a->name = t_jstr(item, "name");
  if (!a->name)
    return -1;
  a->key = t_jstr(item, "key");
  a->display_name = t_jstr(item, "displayName");
  a->email = t_jstr(item, "emailAddress");
  a->active = t_jbool(item, "active", -1);
  return 0;
}

static struct tlister *jira_list(struct tjob *j, enum us_tev ev, const char *group, tsink_fn sink) {
  char *path = NULL;
  struct tlister *l = NULL;
  if (ev == US_TEV_ACCOUNTS) {
    path = t_fmt(API "/user/list?maxResults=%ld", t_page_size(j->t, 2000));
    if (path)
      l = tlist_start(j, PG_CURSOR, ev, path, "values", 0, NULL, sink);
  } else if (ev == US_TEV_GROUPS) {
    l = tlist_start(j, PG_ONE, ev, API "/groups/picker?query=&maxResults=1000000", "groups", 1,
                    NULL, sink);
    return l;
  } else {
    char *g = t_enc(group);
    path = g ? t_fmt(API "/group/member?groupname=%s&includeInactiveUsers=true&maxResults=%ld", g,
                     t_page_size(j->t, 50))
             : NULL;
    free(g);
    if (path)
      l = tlist_start(j, PG_STARTAT, ev, path, "values", 0, group, sink);
  }
  if (!path)
    tjob_fail(j, US_HTTP_ENOMEM, 0, "list: out of memory");
  free(path);
  return l;
}

static char *user_path(const char *name) {
  char *n = t_enc(name), *p = n ? t_fmt(API "/user?username=%s", n) : NULL;
  free(n);
  return p;
}

/* The group names of a UserBean's "groups" (expand=groups) added to j's
** names. Returns 1 when they are all there, 0 when the answer does not tell:
** no "groups" or no "items" (a server may ignore expand; the spec does not
** even list it), or a "size" above the items given (not expanded: Jira then
** sends "items": [] with the real size; or cut short). Unknown is never
** "no groups". */
static int user_groups(struct tjob *j, const struct us_jval *user) {
  struct us_jval items, e, sz;
  long long size = -1, n = 0;
  if (!us_json_get(user, "groups.items", &items) || items.type != US_J_ARRAY)
    return 0;
  if (us_json_get(user, "groups.size", &sz) && !us_json_int(&sz, &size))
    size = -1;
  size_t pos = 0;
  while (us_json_next_elem(&items, &pos, &e))
    n++;
  if (size > n)
    return 0;
  pos = 0;
  while (us_json_next_elem(&items, &pos, &e)) {
    char *g = t_jstr(&e, "name");
    if (g)
      tjob_add_name(j, g);
    free(g);
  }
  return 1;
}

static void on_get(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root;
  if (!t_json_ok(j, c->what, r, &root))
    return;
  if (jira_account(&root, &j->acc)) {
    tjob_fail(j, "ERESPONSE", r->status, "%s: the answer has no user name", c->what);
    return;
  }
  j->have_acc = 1;
  if (!user_groups(j, &root))
    j->partial = 1; /* the caller reads the memberships another way */
  j->raw = malloc(r->body_len + 1);
  if (j->raw) {
    memcpy(j->raw, r->body, r->body_len + 1);
    j->raw_len = r->body_len;
  }
}

/* ---- membership (one request per item) ---- */

/* Item i of an add: the group and the user. */
static const char *add_group(const struct tjob *j, size_t i) {
  return j->kind == US_TOP_ADD_MEMBERS ? (j->group ? j->group : "") : j->list[i];
}
static const char *add_user(const struct tjob *j, size_t i) {
  return j->kind == US_TOP_ADD_MEMBERS ? j->list[i] : (j->name ? j->name : "");
}

/* "Already a member" is decided by reading the membership, never by the
** words of the 400 (the spec's 400 covers an empty group name, never sent,
** and "the user already belongs to the group" in any wording): the user's
** groups (expand=groups), or, when the server does not tell them, the
** group's members (nested ones included, as Jira's 400 counts them). A
** member: success, "already a member"; otherwise the 400 stands. */
static void add_refused(struct tjob *j, size_t i) {
  tjob_item_done(j, i, 0, NULL, 400, "EINVALID", j->item_msg ? j->item_msg[i] : NULL);
}

static void verify_sink(struct tlister *l, struct us_target_account *a, size_t na, char **names,
                        size_t nn) {
  (void)names, (void)nn;
  struct tjob *j = l->j;
  size_t i = (size_t)l->n;
  for (size_t k = 0; k < na; k++) {
    if (t_streq_ci(a[k].name, add_user(j, i)))
      tjob_item_done(j, i, 1, "already a member", 400, NULL, NULL);
    t_account_free(&a[k]);
  }
  free(a);
}

static void verify_end(struct tlister *l) { add_refused(l->j, (size_t)l->n); }

static struct tlister *jira_list(struct tjob *j, enum us_tev ev, const char *group, tsink_fn sink);
static int user_groups(struct tjob *j, const struct us_jval *user);

static void on_verify_user(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  size_t i = (size_t)c->n, before = j->nnames;
  struct us_jval root;
  if (r->code || r->status < 200 || r->status >= 300 || !us_json_parse(r->body, r->body_len, &root)) {
    add_refused(j, i);
    return;
  }
  if (user_groups(j, &root)) {
    int member = 0;
    for (size_t k = before; k < j->nnames; k++) {
      member = member || t_streq_ci(j->names[k], add_group(j, i));
      free(j->names[k]);
    }
    j->nnames = before;
    if (member)
      tjob_item_done(j, i, 1, "already a member", 400, NULL, NULL);
    else
      add_refused(j, i);
    return;
  }
  struct tlister *l = jira_list(j, US_TEV_MEMBERS, add_group(j, i), verify_sink);
  if (l) {
    l->n = (long long)i;
    l->on_end = verify_end;
  }
}

static void on_add(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  size_t i = (size_t)c->n;
  if (r->code || r->status != 400) {
    t_item_done(j, i, c->what, r, NULL);
    return;
  }
  const char *code = NULL;
  char *msg = t_http_error(j->t, c->what, r, &code);
  if (!j->item_msg)
    j->item_msg = calloc(j->nlist ? j->nlist : 1, sizeof *j->item_msg);
  char *u = t_enc(add_user(j, i));
  char *path = u ? t_fmt(API "/user?username=%s&expand=groups", u) : NULL;
  char *what = t_fmt("read the groups of %s", add_user(j, i));
  if (!j->item_msg || !msg || !path || !what) {
    tjob_item_done(j, i, 0, NULL, 400, "EINVALID", msg);
    free(msg);
  } else {
    free(j->item_msg[i]);
    j->item_msg[i] = msg;
    tcall_start(j, "GET", path, NULL, on_verify_user, NULL, (long long)i, what);
  }
  free(u);
  free(path);
  free(what);
}

static void add_one(struct tjob *j, const char *group, const char *user, size_t i) {
  char *g = t_enc(group), *path = g ? t_fmt(API "/group/user?groupname=%s", g) : NULL;
  char *body = t_jobj("name", user, NULL), *what = t_fmt("add %s to %s", user, group);
  if (path && body && what)
    tcall_start(j, "POST", path, body, on_add, NULL, (long long)i, what);
  else
    tjob_item_done(j, i, 0, NULL, 0, US_HTTP_ENOMEM, "out of memory");
  free(g);
  free(path);
  free(body);
  free(what);
}

/* ---- leads ---- */

static int wanted(struct tjob *j, const char *name) {
  for (size_t i = 0; name && i < j->nlist; i++)
    if (t_streq_ci(j->list[i], name))
      return 1;
  return 0;
}

static void on_components(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root, e;
  if (!t_json_ok(j, c->what, r, &root))
    return;
  size_t pos = 0;
  while (us_json_next_elem(&root, &pos, &e)) {
    char *lead = t_jstr(&e, "leadUserName"), *id = NULL;
    if (!lead)
      lead = t_jstr(&e, "lead.name");
    struct us_jval idv;
    if (us_json_get(&e, "id", &idv))
      id = idv.type == US_J_STRING ? us_json_strdup(&idv, NULL) : strndup(idv.start, idv.len);
    if (lead && id && wanted(j, lead))
      tjob_lead(j, lead, id, 1);
    free(lead);
    free(id);
  }
}

static void project_lead(struct tjob *j, const struct us_jval *p, const char *key) {
  char *lead = t_jstr(p, "lead.name");
  if (lead && wanted(j, lead))
    tjob_lead(j, lead, key, 0);
  free(lead);
}

static void on_project(struct tcall *c, const struct us_http_response *r) {
  struct us_jval root;
  if (!t_json_ok(c->j, c->what, r, &root))
    return;
  char *key = t_jstr(&root, "key");
  if (key)
    project_lead(c->j, &root, key);
  free(key);
}

static void on_projects(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root, e, lv;
  if (!t_json_ok(j, c->what, r, &root))
    return;
  if (root.type != US_J_ARRAY) {
    tjob_fail(j, "ERESPONSE", r->status, "%s: expected a JSON array", c->what);
    return;
  }
  size_t pos = 0;
  while (us_json_next_elem(&root, &pos, &e) && !j->failed) {
    char *key = t_jstr(&e, "key"), *k = key ? t_enc(key) : NULL;
    char *what = key ? t_fmt("read project %s", key) : NULL;
    char *path = k ? t_fmt(API "/project/%s", k) : NULL;
    char *cpath = k ? t_fmt(API "/project/%s/components", k) : NULL;
    if (!path || !cpath || !what) {
      tjob_fail(j, key ? US_HTTP_ENOMEM : "ERESPONSE", r->status, "%s: %s", c->what,
                key ? "out of memory" : "a project without key");
    } else {
      if (us_json_get(&e, "lead", &lv))
        project_lead(j, &e, key);
      else
        tcall_start(j, "GET", path, NULL, on_project, NULL, 0, what);
      tcall_start(j, "GET", cpath, NULL, on_components, NULL, 0, what);
    }
    free(key);
    free(k);
    free(what);
    free(path);
    free(cpath);
  }
}

/* ---- check ---- */

static void on_server_info(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root;
  if (!t_json_ok(j, c->what, r, &root))
    return;
  j->reachable = 1;
  char *dep = t_jstr(&root, "deploymentType");
  j->product = t_fmt("Jira%s%s", dep ? " " : "", dep ? dep : "");
  free(dep);
  j->version = t_jstr(&root, "version");
}

/* Admin rights come from two answers, whichever order they arrive in:
** j->n1 from mypermissions (the global permissions ADMINISTER and
** SYSTEM_ADMIN: what the spec offers, and what Jira checks), j->n2 from the
** groups of myself?expand=groups (a fallback: only when mypermissions could
** not tell). 0 not answered yet, 1 no, 2 yes, 3 the answer does not say. */
enum { ADM_WAIT, ADM_NO, ADM_YES, ADM_UNKNOWN };

static void admin_decide(struct tjob *j) {
  free(j->detail);
  j->detail = NULL;
  if (j->n1 == ADM_YES || j->n1 == ADM_NO) {
    j->admin = j->n1 == ADM_YES;
    j->detail = strdup(j->admin ? "global permission ADMINISTER or SYSTEM_ADMIN"
                                : "no ADMINISTER or SYSTEM_ADMIN global permission");
  } else if (j->n1 == ADM_UNKNOWN && (j->n2 == ADM_YES || j->n2 == ADM_NO)) {
    j->admin = j->n2 == ADM_YES;
    j->detail = strdup(j->admin ? "member of jira-administrators or jira-system-administrators "
                                  "(global permissions not readable)"
                                : "not a member of jira-administrators or "
                                  "jira-system-administrators (global permissions not readable)");
  } else if (j->n1 == ADM_UNKNOWN && j->n2 == ADM_UNKNOWN) {
    j->admin = -1;
    j->detail = strdup("admin rights unknown: neither the global permissions nor the groups "
                       "of the account could be read");
  }
}

static void on_myself(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root;
  if (!t_json_ok(j, c->what, r, &root))
    return;
  j->whoami = t_jstr(&root, "name");
  size_t before = j->nnames;
  if (!user_groups(j, &root)) {
    j->n2 = ADM_UNKNOWN;
  } else {
    j->n2 = ADM_NO;
    for (size_t i = before; i < j->nnames; i++)
      if (t_streq_ci(j->names[i], "jira-administrators") ||
          t_streq_ci(j->names[i], "jira-system-administrators"))
        j->n2 = ADM_YES;
  }
  admin_decide(j);
}

/* 1 yes, 0 no, -1 not in the answer (or no havePermission). */
static int have_permission(const struct us_jval *root, const char *key) {
  char path[64];
  struct us_jval v;
  int b;
  snprintf(path, sizeof path, "permissions.%s.havePermission", key);
  if (!us_json_get(root, path, &v) || !us_json_bool(&v, &b))
    return -1;
  return b;
}

static void on_mypermissions(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root;
  j->n1 = ADM_UNKNOWN; /* an error here leaves it to the groups, it fails nothing */
  if (!r->code && r->status >= 200 && r->status < 300 &&
      us_json_parse(r->body, r->body_len, &root)) {
    int a = have_permission(&root, "ADMINISTER"), s = have_permission(&root, "SYSTEM_ADMIN");
    if (a == 1 || s == 1)
      j->n1 = ADM_YES;
    else if (a == 0 || s == 0)
      j->n1 = ADM_NO;
  }
  admin_decide(j);
}

/* ---- dispatch ---- */

/* Starts an account operation (get, create, update, rename, deactivate,
** reactivate, delete); 0 when j is of another kind. */
static int jira_start_account(struct tjob *j) {
  const char *name = j->name ? j->name : "";
  char what[600];
  switch (j->kind) {
  case US_TOP_GET_ACCOUNT: {
    char *n = t_enc(name), *p = n ? t_fmt(API "/user?username=%s&expand=groups", n) : NULL;
    snprintf(what, sizeof what, "get user %s", name);
    if (p)
      tcall_start(j, "GET", p, NULL, on_get, NULL, 0, what);
    else
      tjob_fail(j, US_HTTP_ENOMEM, 0, "out of memory");
    free(n);
    free(p);
    break;
  }
  case US_TOP_CREATE_USER:
    snprintf(what, sizeof what, "create user %s", name);
    t_write_json(j, "POST", strdup(API "/user"),
                 t_jobj("name", name, "displayName", j->display_name, "emailAddress", j->email,
                        "password", j->password, "notification", j->notify ? TJ_TRUE : NULL,
                        NULL),
                 q_create, what);
    break;
  case US_TOP_UPDATE_USER:
    snprintf(what, sizeof what, "update user %s", name);
    if (!j->display_name && !j->email)
      j->note = "nothing to change";
    else
      t_write_json(j, "PUT", user_path(name),
                   t_jobj("displayName", j->display_name, "emailAddress", j->email, NULL), NULL,
                   what);
    break;
  case US_TOP_RENAME_USER:
    snprintf(what, sizeof what, "rename user %s to %s", name, j->to ? j->to : "");
    t_write_json(j, "PUT", user_path(name), t_jobj("name", j->to, NULL), NULL, what);
    break;
  case US_TOP_DEACTIVATE_USER:
  case US_TOP_REACTIVATE_USER: {
    int on = j->kind == US_TOP_REACTIVATE_USER;
    snprintf(what, sizeof what, "%s user %s", on ? "reactivate" : "deactivate", name);
    t_write_json(j, "PUT", user_path(name), t_jobj("active", on ? TJ_TRUE : TJ_FALSE, NULL),
                 q_lead, what);
    break;
  }
  case US_TOP_DELETE_USER:
    snprintf(what, sizeof what, "delete user %s", name);
    t_write(j, "DELETE", user_path(name), NULL, q_lead, what);
    break;
  default:
    return 0;
  }
  return 1;
}

/* Starts job j: accounts above, groups, memberships and the rest here. */
static void jira_start(struct tjob *j) {
  if (jira_start_account(j))
    return;
  const char *name = j->name ? j->name : "";
  char what[600];
  switch (j->kind) {
  case US_TOP_CREATE_GROUP:
    snprintf(what, sizeof what, "create group %s", j->group ? j->group : "");
    t_write_json(j, "POST", strdup(API "/group"), t_jobj("name", j->group ? j->group : "", NULL),
                 q_create, what);
    break;
  case US_TOP_DELETE_GROUP: {
    char *g = t_enc(j->group ? j->group : "");
    snprintf(what, sizeof what, "delete group %s", j->group ? j->group : "");
    t_write(j, "DELETE", g ? t_fmt(API "/group?groupname=%s", g) : NULL, NULL, NULL, what);
    free(g);
    break;
  }
  case US_TOP_ADD_MEMBERS:
    for (size_t i = 0; i < j->nlist; i++)
      add_one(j, j->group ? j->group : "", j->list[i], i);
    break;
  case US_TOP_ADD_TO_GROUPS:
    for (size_t i = 0; i < j->nlist; i++)
      add_one(j, j->list[i], name, i);
    break;
  case US_TOP_REMOVE_MEMBER: {
    char *g = t_enc(j->group ? j->group : ""), *u = t_enc(name);
    snprintf(what, sizeof what, "remove %s from %s", name, j->group ? j->group : "");
    t_write(j, "DELETE", g && u ? t_fmt(API "/group/user?groupname=%s&username=%s", g, u) : NULL,
            NULL, q_remove, what);
    free(g);
    free(u);
    break;
  }
  case US_TOP_LEADS:
    if (j->nlist)
      tcall_start(j, "GET", API "/project?expand=lead", NULL, on_projects, NULL, 0,
                  "list projects");
    break;
  case US_TOP_HANDOVER_LEAD:
    if ((j->nlist && !j->to) || (j->nlist2 && !j->to2)) {
      tjob_fail(j, "EINVALID", 0, "hand over leads of %s: no new lead given", name);
      break;
    }
    for (size_t i = 0; i < j->nlist && !j->failed; i++) {
      char *k = t_enc(j->list[i]);
      snprintf(what, sizeof what, "hand project %s from %s to %s", j->list[i], name, j->to);
      t_write_json(j, "PUT", k ? t_fmt(API "/project/%s", k) : NULL, t_jobj("lead", j->to, NULL),
                   NULL, what);
      free(k);
    }
    for (size_t i = 0; i < j->nlist2 && !j->failed; i++) {
      char *k = t_enc(j->list2[i]);
      snprintf(what, sizeof what, "hand component %s from %s to %s", j->list2[i], name, j->to2);
      t_write_json(j, "PUT", k ? t_fmt(API "/component/%s", k) : NULL,
                   t_jobj("leadUserName", j->to2, NULL), NULL, what);
      free(k);
    }
    break;
  case US_TOP_FIND_GROUP: {
    char *g = t_enc(j->group ? j->group : "");
    snprintf(what, sizeof what, "find group %s", j->group ? j->group : "");
    t_write(j, "GET", g ? t_fmt(API "/group/member?groupname=%s&maxResults=1", g) : NULL, NULL,
            q_nogroup, what);
    free(g);
    break;
  }
  case US_TOP_CHECK:
    tcall_start(j, "GET", API "/serverInfo", NULL, on_server_info, NULL, 0, "server info");
    tcall_start(j, "GET", API "/myself?expand=groups", NULL, on_myself, NULL, 0, "who am I");
    tcall_start(j, "GET", API "/mypermissions?permissions=ADMINISTER,SYSTEM_ADMIN", NULL,
                on_mypermissions, NULL, 0, "global permissions");
    break;
  default: /* (what caps lacks was refused before: target.c) */
    tjob_fail(j, "EUNSUPPORTED", 0, "operation %d is not supported", (int)j->kind);
  }
}

const struct us_target_vt us_target_jira_vt = {
    .type = "jira",
    .caps = {.deactivate = 1, .reactivate = 1, .rename = 1, .leads = 1, .bulk_add = 0},
    .start = jira_start,
    .list = jira_list,
    .parse_account = jira_account,
};
