/*
** target_crowd.c: Atlassian Crowd's application API (rest/usermanagement/1)
** behind the target interface (target_impl.h). The same API is served by
** Jira configured as a user server.
**
** The caller is an application, not a user: HTTP Basic with the Crowd
** application's name and password (the config's `application` and
** `password`), accepted only from the addresses the application allows.
** The application sees the directories mapped to it, in its directory
** order; Crowd creates users and groups in the first of them that allows it
** (the admin chooses the directory by what the application maps and
** permits; see README, "Crowd").
**
** Quirks kept here:
**   - JSON only when asked (Accept: application/json, sent on every
**     request by target.c; Crowd answers XML otherwise); errors are
**     {"reason": "USER_NOT_FOUND", "message": "..."} (the message is read by
**     target.c, the reason here where it decides).
**   - listings page by start-index/max-results without an end marker
**     (PG_SHORT: a page shorter than max-results is the last; 1000 a page):
**     accounts GET search?entity-type=user&expand=user, groups
**     search?entity-type=group, members group/user/direct (direct members
**     only, by name: the memberships usersync can change; inactive users
**     included).
**   - nested groups: reads are direct memberships. A remove that Crowd
**     answers 404 MEMBERSHIP_NOT_FOUND is looked up in the group's nested
**     members: a member through a nested group fails EINHERITED (the
**     membership belongs to the nested group; success would be a lie),
**     otherwise it is success, "not a member".
**   - add member: 409 (MEMBERSHIP_ALREADY_EXISTS) is success, "already a
**     member"; 400 means the user does not exist (ENOTFOUND).
**   - create user / group: a 400 is "already exists" when reading the name
**     afterwards finds it (Crowd says INVALID_USER / INVALID_GROUP for an
**     existing name and for bad values alike; its wording is not fixed);
**     otherwise the 400 stands (EINVALID). A create needs a password: a
**     random one is sent when none is given (users sign in through SSO or
**     reset it). first-name / last-name are derived from the display name
**     (split at its last space).
**   - updates are full-object PUTs (PUT replaces what it is not sent):
**     update, deactivate (active false) and reactivate GET the user and PUT
**     back every field it has (attributes links, key, dates, anything a
**     newer Crowd adds) with only the changed ones replaced; the password
**     link is never sent back. first-name / last-name follow a new display
**     name only when they were the old display name's split (an admin's own
**     first / last names are kept).
**   - e-mail changes: Crowd 4.4 and later refuse them from applications (403
**     APPLICATION_PERMISSION_DENIED, "External applications are not allowed
**     to change user emails") unless their administrator turned the check
**     off. The update fails EFORBIDDEN saying so; a display name changed with
**     it is PUT again without the e-mail, so it is not lost too.
**   - rename: POST user/rename {"new-name"} (200).
**   - check: GET config/cookie (reachable, the application's credentials,
**     allowed from this address), then one page of users and one group:
**     the directories users come from (a user key is "<directory id>:<id>")
**     and whether the listings can be read. Write rights are not readable
**     through the application API: admin stays unknown and the detail says
**     so.
**
** Request costs (A accounts, G groups):
**   snapshot: floor(A/1000) + 1 searches of users + floor(G/1000) + 1 of groups
**             + sum over groups of floor(members/1000) + 1 group/user/direct
**   get: 1 user + floor(groups/1000) + 1 user/group/direct;
**   update, deactivate, reactivate: 2 (GET + PUT; +1 PUT when Crowd refuses an
**   e-mail change that came with a display name); create: 1 (+1 on a 400);
**   remove member: 1 (+1 on a 404); other writes 1; check: 3.
*/
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "target_impl.h"
#include "usersync/crypto.h"
#include "usersync/strbuf.h"

#define API "/rest/usermanagement/1"
#define PAGE 1000 /* Crowd's default max-results */

static const struct tquirk q_add[] = {{409, NULL, "already a member", NULL},
                                      {400, NULL, NULL, "ENOTFOUND"},
                                      {-1, NULL, NULL, NULL}};

static int crowd_account(const struct us_jval *item, struct us_target_account *a) {
  memset(a, 0, sizeof *a);
  a->name = t_jstr(item, "name");
  if (!a->name)
    return -1;
  a->key = t_jstr(item, "key");
  a->display_name = t_jstr(item, "display-name");
  a->email = t_jstr(item, "email");
  a->active = t_jbool(item, "active", -1);
  return 0;
}

/* The "reason" of a Crowd error body, malloc'd, or NULL. */
static char *crowd_reason(const struct us_http_response *r) {
  struct us_jval root;
  if (r->code || !r->body_len || !us_json_parse(r->body, r->body_len, &root))
    return NULL;
  return t_jstr(&root, "reason");
}

static struct tlister *crowd_list_path(struct tjob *j, enum us_tev ev, const char *path,
                                       const char *items, int groups, const char *group,
                                       tsink_fn sink) {
  long page = t_page_size(j->t, PAGE);
  char *p = path ? t_fmt("%s&max-results=%ld", path, page) : NULL;
  struct tlister *l = NULL;
  if (p)
    l = tlist_start(j, PG_SHORT, ev, p, items, groups, group, sink);
  else
    tjob_fail(j, US_HTTP_ENOMEM, 0, "list: out of memory");
  if (l)
    l->step = page; /* read when a page arrives, never before this returns */
  free(p);
  return l;
}

static struct tlister *crowd_list(struct tjob *j, enum us_tev ev, const char *group,
                                  tsink_fn sink) {
  if (ev == US_TEV_ACCOUNTS)
    return crowd_list_path(j, ev, API "/search?entity-type=user&expand=user", "users", 0, NULL,
                           sink);
  if (ev == US_TEV_GROUPS)
    return crowd_list_path(j, ev, API "/search?entity-type=group", "groups", 1, NULL, sink);
  char *g = t_enc(group), *p = g ? t_fmt(API "/group/user/direct?groupname=%s", g) : NULL;
  struct tlister *l = crowd_list_path(j, ev, p, "users", 0, group, sink);
  free(g);
  free(p);
  return l;
}

static char *user_path(const char *prefix, const char *name) {
  char *n = t_enc(name), *p = n ? t_fmt(API "%s?username=%s", prefix, n) : NULL;
  free(n);
  return p;
}

static char *group_path(const char *prefix, const char *group) {
  char *g = t_enc(group), *p = g ? t_fmt(API "%s?groupname=%s", prefix, g) : NULL;
  free(g);
  return p;
}

/* ---- get ---- */

static void keep_raw(struct tjob *j, const struct us_http_response *r) {
  free(j->raw);
  j->raw = malloc(r->body_len + 1);
  if (j->raw) {
    memcpy(j->raw, r->body, r->body_len + 1);
    j->raw_len = r->body_len;
  }
}

static void on_get(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root;
  if (!t_json_ok(j, c->what, r, &root))
    return;
  if (crowd_account(&root, &j->acc)) {
    tjob_fail(j, "ERESPONSE", r->status, "%s: the answer has no user name", c->what);
    return;
  }
  j->have_acc = 1;
  keep_raw(j, r);
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

/* ---- full-object PUT (update, deactivate, reactivate) ---- */

/* first / last from a display name: split at its last space ("" first for one word). */
static void split_display(const char *d, char **first, char **last) {
  while (*d == ' ')
    d++;
  size_t n = strlen(d);
  while (n > 0 && d[n - 1] == ' ')
    n--;
  const char *sp = NULL;
  for (size_t i = 0; i < n; i++)
    if (d[i] == ' ')
      sp = d + i;
  if (!sp) {
    *first = strdup("");
    *last = strndup(d, n);
    return;
  }
  size_t fl = (size_t)(sp - d);
  while (fl > 0 && d[fl - 1] == ' ')
    fl--;
  *first = strndup(d, fl);
  *last = strndup(sp + 1, (size_t)(d + n - sp - 1));
}

/* Appends "key":value with a string value (JSON-quoted). */
static void put_member(struct us_sb *b, int *first, const char *key, const char *val) {
  char *k = t_jquote(key), *v = t_jquote(val ? val : "");
  if (!k || !v)
    b->bad = 1;
  else {
    us_sb_str(b, *first ? "" : ",");
    us_sb_str(b, k);
    us_sb_str(b, ":");
    us_sb_str(b, v);
  }
  *first = 0;
  free(k);
  free(v);
}

/* The PUT body for user object `root`: every member kept as it is but the
** password (a link; never sent back) and those given here replaced (NULL
** strings: kept; active -1: kept). Missing ones among the replaced are
** added. malloc'd; NULL when out of memory. */
static char *user_put_body(const struct us_jval *root, const char *display, const char *email,
                           const char *first_name, const char *last_name, int active) {
  struct { const char *key, *val; int done; } rep[] = {
      {"display-name", display, 0}, {"email", email, 0}, {"first-name", first_name, 0},
      {"last-name", last_name, 0}};
  struct us_sb b = {0};
  struct us_jval k, v;
  size_t pos = 0;
  int first = 1, active_done = 0;
  us_sb_str(&b, "{");
  while (us_json_next_member(root, &pos, &k, &v)) {
    if (us_json_streq(&k, "password"))
      continue;
    int replaced = 0;
    for (size_t i = 0; i < sizeof rep / sizeof rep[0]; i++)
      if (rep[i].val && us_json_streq(&k, rep[i].key)) {
        put_member(&b, &first, rep[i].key, rep[i].val);
        rep[i].done = replaced = 1;
      }
    if (!replaced && active >= 0 && us_json_streq(&k, "active")) {
      us_sb_str(&b, first ? "\"active\":" : ",\"active\":");
      us_sb_str(&b, active ? "true" : "false");
      first = 0;
      active_done = replaced = 1;
    }
    if (!replaced) {
      us_sb_str(&b, first ? "" : ",");
      us_sb_put(&b, k.start, k.len);
      us_sb_str(&b, ":");
      us_sb_put(&b, v.start, v.len);
      first = 0;
    }
  }
  for (size_t i = 0; i < sizeof rep / sizeof rep[0]; i++)
    if (rep[i].val && !rep[i].done)
      put_member(&b, &first, rep[i].key, rep[i].val);
  if (active >= 0 && !active_done) {
    us_sb_str(&b, first ? "\"active\":" : ",\"active\":");
    us_sb_str(&b, active ? "true" : "false");
  }
  us_sb_str(&b, "}");
  return us_sb_done(&b);
}

static int streq0(const char *a, const char *b) { return strcmp(a ? a : "", b ? b : "") == 0; }

/* The first / last names an update of user `root` sends (*nf, *nl malloc'd,
** NULL: kept): they follow a new display name when they were the old
** display name's split (an admin's own first / last names are kept). */
static void user_first_last(const struct tjob *j, const struct us_jval *root, char **nf,
                            char **nl) {
  *nf = *nl = NULL;
  if (!j->display_name)
    return;
  char *od = t_jstr(root, "display-name"), *of = t_jstr(root, "first-name"),
       *ol = t_jstr(root, "last-name"), *sf = NULL, *sl = NULL;
  split_display(od ? od : "", &sf, &sl);
  int derived = (!of || !*of) && (!ol || !*ol);
  derived = derived || (sf && sl && streq0(sf, of) && streq0(sl, ol));
  if (derived)
    split_display(j->display_name, nf, nl);
  free(od), free(of), free(ol), free(sf), free(sl);
}

/* The retried PUT (the update without its e-mail change) answered: the
** job still fails, for the e-mail, with the refusal kept in j->raw. */
static void on_put_again(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  if (!t_write_done(j, c->what, r, NULL))
    return;
  tjob_fail(j, "EFORBIDDEN", 403, "%s: %s; the other changes were applied without it", c->what,
            j->raw ? j->raw : "");
}

/* The PUT answered. Crowd 4.4 and later refuse an application's e-mail
** change (403 APPLICATION_PERMISSION_DENIED, "External applications are
** not allowed to change user emails") unless their administrator turned
** the check off: the job fails EFORBIDDEN saying so, and the rest of the
** update (a display name) is sent again without the e-mail so that it is
** not lost with it. */
static void on_put(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  char *reason = !r->code && r->status == 403 && j->n2 && j->raw ? crowd_reason(r) : NULL;
  char *text = reason ? t_error_text(r) : NULL;
  /* the same reason also says a directory allows no update at all: the
  ** message tells them apart (a wording Crowd changes falls back to the
  ** plain 403, which is still EFORBIDDEN with Crowd's message) */
  if (!reason || strcmp(reason, "APPLICATION_PERMISSION_DENIED") || !text ||
      !strcasestr(text, "email")) {
    free(reason);
    free(text);
    t_write_done(j, c->what, r, NULL);
    return;
  }
  free(reason);
  char *why = t_fmt("Crowd refused the e-mail change (HTTP 403: %s; Crowd 4.4 and later refuse "
                    "e-mail changes from applications unless its administrator allows them)",
                    text);
  free(text);
  struct us_jval root;
  char *body = NULL, *path = NULL, *name = NULL;
  if (j->n2 == 2 && us_json_parse(j->raw, j->raw_len, &root) && (name = t_jstr(&root, "name"))) {
    char *nf = NULL, *nl = NULL;
    user_first_last(j, &root, &nf, &nl);
    body = user_put_body(&root, j->display_name, NULL, nf, nl, -1);
    path = user_path("/user", name);
    free(nf), free(nl);
  }
  free(j->raw); /* from here the refusal, for on_put_again */
  j->raw = why;
  j->raw_len = why ? strlen(why) : 0;
  if (!why)
    tjob_fail(j, US_HTTP_ENOMEM, 0, "%s: out of memory", c->what);
  else if (!body || !path) /* nothing else to send (or out of memory): the refusal stands */
    tjob_fail(j, "EFORBIDDEN", 403, "%s: %s", c->what, why);
  else
    tcall_start(j, "PUT", path, body, on_put_again, NULL, 0, c->what);
  free(body), free(path), free(name);
}

/* GET answered: PUT the whole user back with this job's changes. */
static void on_get_for_put(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root;
  if (!t_json_ok(j, c->what, r, &root))
    return;
  char *name = t_jstr(&root, "name");
  if (!name || root.type != US_J_OBJECT) {
    tjob_fail(j, "ERESPONSE", r->status, "%s: the answer has no user name", c->what);
    free(name);
    return;
  }
  char *nf = NULL, *nl = NULL;
  int active = -1;
  if (j->kind == US_TOP_DEACTIVATE_USER || j->kind == US_TOP_REACTIVATE_USER)
    active = j->kind == US_TOP_REACTIVATE_USER;
  if (j->kind == US_TOP_UPDATE_USER)
    user_first_last(j, &root, &nf, &nl);
  char *body = user_put_body(&root, j->kind == US_TOP_UPDATE_USER ? j->display_name : NULL,
                             j->kind == US_TOP_UPDATE_USER ? j->email : NULL, nf, nl, active);
  char *path = user_path("/user", name);
  if (j->kind == US_TOP_UPDATE_USER && j->email) {
    /* an e-mail change Crowd may refuse: keep the user for a PUT without it */
    char *oe = t_jstr(&root, "email");
    if (!streq0(oe, j->email)) {
      keep_raw(j, r);
      j->n2 = j->display_name ? 2 : 1; /* 2: other changes to send again without the e-mail */
    }
    free(oe);
  }
  if (!body || !path)
    tjob_fail(j, US_HTTP_ENOMEM, 0, "%s: out of memory", c->what);
  else
    tcall_start(j, "PUT", path, body, on_put, NULL, 0, c->what);
  free(body), free(path);
  free(nf), free(nl), free(name);
}

static void get_then_put(struct tjob *j, const char *what) {
  char *p = user_path("/user", j->name ? j->name : "");
  tcall_start(j, "GET", p, NULL, on_get_for_put, NULL, 0, what);
  free(p);
}

/* ---- creates: a 400 is "already exists" when the name is there ---- */

/* The 400's message is held in j->raw (scratch: a create job hands no raw
** body on) until reading the name decides. */
static void on_exists(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  j->status = 400;
  if (!r->code && r->status == 200) {
    j->note = "already exists";
    return;
  }
  tjob_fail(j, "EINVALID", 400, "%s", "create refused"); /* the 400 stands, with its message */
  if (j->raw) {
    free(j->message);
    j->message = j->raw;
    j->raw = NULL;
  }
}

static void on_create(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  if (r->code || r->status != 400) {
    t_write_done(j, c->what, r, NULL);
    return;
  }
  const char *code = "EINVALID";
  free(j->raw);
  j->raw = t_http_error(j->t, c->what, r, &code);
  char *p = j->kind == US_TOP_CREATE_USER ? user_path("/user", j->name ? j->name : "")
                                          : group_path("/group", j->group ? j->group : "");
  char *what = t_fmt("%s (already there?)", c->what);
  if (p && what)
    tcall_start(j, "GET", p, NULL, on_exists, NULL, 0, what);
  else
    tjob_fail(j, US_HTTP_ENOMEM, 0, "%s: out of memory", c->what);
  free(p);
  free(what);
}

/* ---- remove member: 404 -> nested? ---- */

static void on_nested(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  if (!r->code && r->status == 200) {
    tjob_fail(j, "EINHERITED", 404,
              "%s: %s is a member of %s only through a nested group: remove the membership "
              "from that group (or the nesting) in Crowd",
              c->what, j->name ? j->name : "", j->group ? j->group : "");
    return;
  }
  if (!r->code && r->status == 404) {
    j->note = "not a member";
    j->status = 404;
    return;
  }
  tjob_fail_http(j, c->what, r, NULL);
}

static void on_remove(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  char *reason = !r->code && r->status == 404 ? crowd_reason(r) : NULL;
  if (!reason || strcmp(reason, "MEMBERSHIP_NOT_FOUND")) {
    t_write_done(j, c->what, r, NULL);
    free(reason);
    return;
  }
  free(reason);
  char *g = t_enc(j->group ? j->group : ""), *u = t_enc(j->name ? j->name : "");
  char *p = g && u ? t_fmt(API "/group/user/nested?groupname=%s&username=%s", g, u) : NULL;
  tcall_start(j, "GET", p, NULL, on_nested, NULL, 0, c->what);
  free(g);
  free(u);
  free(p);
}

/* ---- memberships ---- */

static void on_item(struct tcall *c, const struct us_http_response *r) {
  t_item_done(c->j, (size_t)c->n, c->what, r, q_add);
}

static void add_one(struct tjob *j, const char *group, const char *user, size_t i) {
  char *path = group_path("/group/user/direct", group);
  char *body = t_jobj("name", user, NULL), *what = t_fmt("add %s to %s", user, group);
  if (path && body && what)
    tcall_start(j, "POST", path, body, on_item, NULL, (long long)i, what);
  else
    tjob_item_done(j, i, 0, NULL, 0, US_HTTP_ENOMEM, "out of memory");
  free(path);
  free(body);
  free(what);
}

/* ---- check ---- */

/* j->n1: users read; j->names: "<directory id> <users>" for each directory
** their keys name (a check job has no other use for names). */
static void users_sink(struct tlister *l, struct us_target_account *a, size_t na, char **names,
                       size_t nn) {
  (void)names, (void)nn;
  struct tjob *j = l->j;
  for (size_t i = 0; i < na; i++) {
    const char *colon = a[i].key ? strchr(a[i].key, ':') : NULL;
    size_t idlen = colon ? (size_t)(colon - a[i].key) : 0;
    size_t k;
    for (k = 0; k < j->nnames; k++)
      if (!strncmp(j->names[k], colon ? a[i].key : "?", colon ? idlen : 1) &&
          j->names[k][colon ? idlen : 1] == ' ')
        break;
    long long n = k < j->nnames ? strtoll(strchr(j->names[k], ' ') + 1, NULL, 10) : 0;
    char *e = t_fmt("%.*s %lld", colon ? (int)idlen : 1, colon ? a[i].key : "?", n + 1);
    if (e && k < j->nnames) {
      free(j->names[k]);
      j->names[k] = e;
    } else if (e) {
      tjob_add_name(j, e);
      free(e);
    }
    j->n1++;
    t_account_free(&a[i]);
  }
  free(a);
}

static void check_detail(struct tjob *j) {
  struct us_sb b = {0};
  char tmp[160];
  us_sb_str(&b, "application ");
  us_sb_str(&b, t_config(j->t)->user ? t_config(j->t)->user : "?");
  us_sb_str(&b, " accepted from this host; ");
  if (!j->n1) {
    us_sb_str(&b, "no users visible (no directory mapped to the application, or all empty)");
  } else {
    snprintf(tmp, sizeof tmp, "%s%lld users read, in directories ",
             j->n1 >= PAGE ? "the first " : "", j->n1);
    us_sb_str(&b, tmp);
    for (size_t k = 0; k < j->nnames; k++) {
      const char *sp = strchr(j->names[k], ' ');
      snprintf(tmp, sizeof tmp, "%s%.*s (%s)", k ? ", " : "", (int)(sp - j->names[k]),
               j->names[k], sp + 1);
      us_sb_str(&b, tmp);
    }
    us_sb_str(&b, " (a user key starts with its directory id)");
  }
  us_sb_str(&b, j->n2 & 1 ? "; groups readable" : "; groups readable (none yet)");
  us_sb_str(&b, "; write rights: not readable through Crowd's application API (a write no "
                "mapped directory allows fails with 403 APPLICATION_PERMISSION_DENIED); new "
                "users and groups go to the first directory in the application's order that "
                "allows adding them");
  free(j->detail);
  j->detail = us_sb_done(&b);
}

static void users_end(struct tlister *l) {
  struct tjob *j = l->j;
  j->n2 |= 2;
  if ((j->n2 & 6) == 6)
    check_detail(j);
}

static void groups_seen(struct tlister *l, struct us_target_account *a, size_t na, char **names,
                        size_t nn) {
  (void)a, (void)na;
  if (nn)
    l->j->n2 |= 1;
  for (size_t i = 0; i < nn; i++)
    free(names[i]);
  free(names);
}

static void groups_end(struct tlister *l) {
  struct tjob *j = l->j;
  j->n2 |= 4;
  if ((j->n2 & 6) == 6)
    check_detail(j);
}

static void on_cookie(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root;
  if (!r->code && (r->status == 401 || r->status == 403)) {
    tjob_fail_http(j, c->what, r, NULL);
    char *m = j->message;
    j->message = t_fmt("%s%s", m ? m : "",
                       r->status == 401
                           ? " (check the application name and password: Crowd's application "
                             "credentials, not a user's)"
                           : " (in Crowd: the application's Remote addresses must include this "
                             "host)");
    free(m);
    return;
  }
  if (!t_json_ok(j, c->what, r, &root))
    return;
  j->product = strdup("Crowd");
  j->whoami = t_strdup(t_config(j->t)->user);
  /* one page of users (the directories behind the application), one group */
  char *p = t_fmt(API "/search?entity-type=user&expand=user&max-results=%d", PAGE);
  struct tlister *l =
      p ? tlist_start(j, PG_ONE, US_TEV_ACCOUNTS, p, "users", 0, NULL, users_sink) : NULL;
  if (l)
    l->on_end = users_end;
  free(p);
  l = tlist_start(j, PG_ONE, US_TEV_GROUPS, API "/search?entity-type=group&max-results=1",
                  "groups", 1, NULL, groups_seen);
  if (l)
    l->on_end = groups_end;
}

/* ---- dispatch ---- */

static int crowd_start_account(struct tjob *j) {
  const char *name = j->name ? j->name : "";
  char what[600];
  switch (j->kind) {
  case US_TOP_GET_ACCOUNT: {
    char *p = user_path("/user", name), *m = user_path("/user/group/direct", name);
    snprintf(what, sizeof what, "get user %s", name);
    if (p && m) {
      tcall_start(j, "GET", p, NULL, on_get, NULL, 0, what);
      crowd_list_path(j, US_TEV_GROUPS, m, "groups", 1, NULL, groups_sink);
    } else {
      tjob_fail(j, US_HTTP_ENOMEM, 0, "out of memory");
    }
    free(p);
    free(m);
    break;
  }
  case US_TOP_CREATE_USER: {
    char *pw = j->password ? NULL : us_random_hex(16), *first = NULL, *last = NULL;
    split_display(j->display_name ? j->display_name : name, &first, &last);
    char *pwobj = t_jobj("value", j->password ? j->password : pw, NULL);
    struct us_sb b = {0};
    char *head = t_jobj("name", name, "first-name", first, "last-name", last, "display-name",
                        j->display_name ? j->display_name : name, "email",
                        j->email ? j->email : "", NULL);
    if (head && pwobj) {
      us_sb_put(&b, head, strlen(head) - 1); /* without its closing brace */
      us_sb_str(&b, ",\"active\":true,\"password\":");
      us_sb_str(&b, pwobj);
      us_sb_str(&b, "}");
    } else {
      b.bad = 1;
    }
    char *body = us_sb_done(&b);
    snprintf(what, sizeof what, "create user %s", name);
    if (body)
      tcall_start(j, "POST", API "/user", body, on_create, NULL, 0, what);
    else
      tjob_fail(j, US_HTTP_ENOMEM, 0, "%s: out of memory", what);
    if (body)
      memset(body, 0, strlen(body));
    if (pwobj)
      memset(pwobj, 0, strlen(pwobj));
    if (pw)
      memset(pw, 0, strlen(pw));
    free(body), free(pwobj), free(pw), free(head), free(first), free(last);
    break;
  }
  case US_TOP_UPDATE_USER:
    snprintf(what, sizeof what, "update user %s", name);
    if (!j->display_name && !j->email)
      j->note = "nothing to change";
    else
      get_then_put(j, what);
    break;
  case US_TOP_DEACTIVATE_USER:
  case US_TOP_REACTIVATE_USER:
    snprintf(what, sizeof what, "%s user %s",
             j->kind == US_TOP_REACTIVATE_USER ? "reactivate" : "deactivate", name);
    get_then_put(j, what);
    break;
  case US_TOP_RENAME_USER:
    snprintf(what, sizeof what, "rename user %s to %s", name, j->to ? j->to : "");
    t_write_json(j, "POST", user_path("/user/rename", name), t_jobj("new-name", j->to, NULL),
                 NULL, what);
    break;
  case US_TOP_DELETE_USER:
    snprintf(what, sizeof what, "delete user %s", name);
    t_write(j, "DELETE", user_path("/user", name), NULL, NULL, what);
    break;
  default:
    return 0;
  }
  return 1;
}

static void crowd_start(struct tjob *j) {
  if (crowd_start_account(j))
    return;
  const char *name = j->name ? j->name : "", *group = j->group ? j->group : "";
  char what[600];
  switch (j->kind) {
  case US_TOP_CREATE_GROUP: {
    char *body = t_jobj("name", group, "type", "GROUP", "active", TJ_TRUE, NULL);
    snprintf(what, sizeof what, "create group %s", group);
    if (body)
      tcall_start(j, "POST", API "/group", body, on_create, NULL, 0, what);
    else
      tjob_fail(j, US_HTTP_ENOMEM, 0, "%s: out of memory", what);
    free(body);
    break;
  }
  case US_TOP_DELETE_GROUP:
    snprintf(what, sizeof what, "delete group %s", group);
    t_write(j, "DELETE", group_path("/group", group), NULL, NULL, what);
    break;
  case US_TOP_ADD_MEMBERS:
    for (size_t i = 0; i < j->nlist; i++)
      add_one(j, group, j->list[i], i);
    break;
  case US_TOP_ADD_TO_GROUPS:
    for (size_t i = 0; i < j->nlist; i++)
      add_one(j, j->list[i], name, i);
    break;
  case US_TOP_REMOVE_MEMBER: {
    char *g = t_enc(group), *u = t_enc(name);
    char *p = g && u ? t_fmt(API "/group/user/direct?groupname=%s&username=%s", g, u) : NULL;
    snprintf(what, sizeof what, "remove %s from %s", name, group);
    tcall_start(j, "DELETE", p, NULL, on_remove, NULL, 0, what);
    free(g), free(u), free(p);
    break;
  }
  case US_TOP_CHECK:
    tcall_start(j, "GET", API "/config/cookie", NULL, on_cookie, NULL, 0,
                "application credentials");
    break;
  default: /* (what caps lacks was refused before: target.c) */
    tjob_fail(j, "EUNSUPPORTED", 0, "operation %d is not supported", (int)j->kind);
  }
}

const struct us_target_vt us_target_crowd_vt = {
    .type = "crowd",
    .caps = {.deactivate = 1, .reactivate = 1, .rename = 1, .leads = 0, .bulk_add = 0},
    .start = crowd_start,
    .list = crowd_list,
    .parse_account = crowd_account,
};
