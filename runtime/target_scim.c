/*
** target_scim.c: any SCIM 2.0 service provider (RFC 7643 resources, RFC
** 7644 protocol) behind the target interface (target_impl.h), with the
** "atlassian" flavour for Atlassian Cloud user provisioning
** (https://api.atlassian.com/scim/directory/{directoryId}, Bearer
** directory API key). The config's url is the service's base URL (the
** one that ends before /Users).
**
** Identity: a SCIM account is addressed by the id the service assigned,
** not by its userName. Listings carry it (us_target_account.id); an op may
** carry it (us_target_op.id, the planner's account id; ADD_MEMBERS: list2,
** one per member; GET_ACCOUNT: then GET /Users/{id}); otherwise it comes
** from what this target has already read (a per-target cache filled by
** listings, lookups and creates) or from one lookup by
** `filter=userName eq "name"`. Groups the same way (displayName -> id).
** Lookups are single `eq` filters: the Atlassian flavour allows nothing
** else.
**
** Quirks kept here:
**   - paging: startIndex (1-based) / count; a ListResponse has
**     totalResults, itemsPerPage, startIndex, Resources. The first page
**     tells the page size the provider applies (it may give fewer than
**     asked) and the total: the other pages are requested at once, one per
**     segment of that size, the last unbounded (a set that grew is read
**     on); a page that comes back short inside its segment is followed by
**     one at its end. An empty page ends a segment.
**   - the snapshot reads users and groups (members inline) at once, plus
**     the ServiceProviderConfig; the memberships are emitted when both
**     listings are read (members are user ids: their names come from the
**     users listing; members that are not listed users, e.g. nested
**     groups, are skipped).
**   - updates, (re)activation and rename: PATCH (PatchOp "replace") when
**     the ServiceProviderConfig says patch.supported; else GET the
**     resource and PUT it back whole with the change (a PUT replaces the
**     resource: attributes an admin set are kept by copying them).
**   - deactivation is active:false; DELETE deletes (the Atlassian flavour:
**     DELETE removes the SCIM record and deactivates the managed account
**     for good as far as the API goes; the planner deletes only where
**     users.delete allows it).
**   - membership: PATCH of the group (?excludedAttributes=members: the
**     answer does not carry a large group's members back), op "add" with up
**     to 100 members a request (a failed bulk add is retried member by member so each gets
**     its own outcome; adding a member twice is no change); "remove" by
**     the RFC's path filter members[value eq "id"] (Atlassian flavour: a
**     "remove" with the members listed in value, as Atlassian documents).
**   - create sends the source's user id as externalId (as an IdP's own
**     SCIM client does) and answers 201 with the resource (its id is
**     remembered); 409
**     (scimType uniqueness) is success, "already exists". Atlassian links
**     a create to an existing managed account with the same e-mail.
**   - errors: the SCIM error body (detail, scimType) in messages; 501 (an
**     operation the provider lacks) is EUNSUPPORTED; the rest as the other
**     targets (status classes). 429/503 with Retry-After: the engine's
**     retries and the target's rate-limit hold.
**   - the Atlassian flavour cannot rename users (userName is immutable
**     there) or groups: caps.rename = 0 and no request is ever made for it.
**
** Request costs (A accounts, G groups, P = page size, default 100):
**   snapshot: 1 + ceil(A/P) + ceil(G/P) (+ a request per short page);
**   get: 1 (by id when the op has one); a write: 1, plus 1 lookup when the
**   id is not known yet, plus
**   1 ServiceProviderConfig per target (once), plus 1 GET for a PUT
**   update where PATCH is not supported; add_members(group, n users):
**   ceil(n/100) (n more when a bulk add fails).
*/
#define _GNU_SOURCE
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "target_impl.h"
#include "usersync/strbuf.h"

#define CORE_USER "urn:ietf:params:scim:schemas:core:2.0:User"
#define CORE_GROUP "urn:ietf:params:scim:schemas:core:2.0:Group"
#define PATCHOP "{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:PatchOp\"],"
#define MEMBERS_PER_PATCH 100

static const struct tquirk q_exists[] = {
    {409, NULL, "already exists", NULL}, {501, NULL, NULL, "EUNSUPPORTED"}, {-1, NULL, NULL, NULL}};
static const struct tquirk q_scim[] = {{501, NULL, NULL, "EUNSUPPORTED"}, {-1, NULL, NULL, NULL}};

/* ------------------------------------------------------------ a string map */

struct smap {
  char **k, **v; /* v NULL: removed */
  size_t cap, n;
};

static uint64_t hash_ci(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++)
    h = (h ^ (unsigned char)tolower((unsigned char)*s)) * 1099511628211ULL;
  return h;
}

static size_t smap_slot(const struct smap *m, const char *k) {
  size_t i = (size_t)hash_ci(k) & (m->cap - 1);
  while (m->k[i] && !t_streq_ci(m->k[i], k))
    i = (i + 1) & (m->cap - 1);
  return i;
}

static int smap_grow(struct smap *m) {
  size_t cap = m->cap ? m->cap * 2 : 64;
  struct smap o = {calloc(cap, sizeof(char *)), calloc(cap, sizeof(char *)), cap, 0};
  if (!o.k || !o.v) {
    free(o.k);
    free(o.v);
    return -1;
  }
  for (size_t i = 0; i < m->cap; i++)
    if (m->k[i]) {
      size_t s = smap_slot(&o, m->k[i]);
      o.k[s] = m->k[i];
      o.v[s] = m->v[i];
      o.n++;
    }
  free(m->k);
  free(m->v);
  *m = o;
  return 0;
}

/* Sets k (case-insensitive) to a copy of v (NULL: removes). */
static void smap_put(struct smap *m, const char *k, const char *v) {
  if (!k || ((m->n + 1) * 2 > m->cap && smap_grow(m)))
    return;
  size_t s = smap_slot(m, k);
  char *nv = v ? strdup(v) : NULL;
  if (v && !nv)
    return;
  if (!m->k[s]) {
    if (!v || !(m->k[s] = strdup(k))) {
      free(nv);
      return;
    }
    m->n++;
  }
  free(m->v[s]);
  m->v[s] = nv;
}

static const char *smap_get(const struct smap *m, const char *k) {
  if (!m->cap || !k)
    return NULL;
  size_t s = smap_slot(m, k);
  return m->k[s] ? m->v[s] : NULL;
}

static void smap_free(struct smap *m) {
  for (size_t i = 0; i < m->cap; i++) {
    free(m->k[i]);
    free(m->v[i]);
  }
  free(m->k);
  free(m->v);
  memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------ the target's data */

struct scim {
  int atl;     /* the Atlassian flavour */
  int spc;     /* 1: the ServiceProviderConfig was read */
  int patch;   /* its patch.supported */
  struct smap uid, uname, gid; /* lower(userName) -> id, id -> userName, lower(group) -> id */
};

static void scim_free_priv(void *p) {
  struct scim *s = p;
  smap_free(&s->uid);
  smap_free(&s->uname);
  smap_free(&s->gid);
  free(s);
}

static struct scim *S(us_target *t) {
  void **p = t_priv(t);
  if (!*p) {
    struct scim *s = calloc(1, sizeof *s);
    if (s) {
      const char *fl = t_config(t)->flavour;
      s->atl = fl && !strcmp(fl, "atlassian");
    }
    *p = s;
  }
  return *p;
}

static void remember_user(us_target *t, const char *name, const char *id) {
  struct scim *s = S(t);
  if (s && name && id) {
    smap_put(&s->uid, name, id);
    smap_put(&s->uname, id, name);
  }
}

/* ------------------------------------------------------------ job scratch */

struct slister;
typedef void (*sitems_fn)(struct slister *l, const struct us_jval *res, size_t take);

struct slister {
  struct tjob *j;
  char *path;   /* "/Users?..." without startIndex/count */
  long long count;
  sitems_fn items;
  void (*on_end)(struct slister *l);
  int inflight;
  struct slister *next;
};

struct gmembers {
  char *group;
  char **ids;
  size_t n;
};

struct sx {
  struct slister *lists;
  struct gmembers *gm; /* snapshot: the groups' member ids */
  size_t ngm, capgm;
  int open;            /* snapshot: listings not read yet */
  char **ids;          /* ADD_MEMBERS: user ids; ADD_TO_GROUPS: group ids (per item) */
  size_t nids;
};

static void sx_free(void *p) {
  struct sx *x = p;
  while (x->lists) {
    struct slister *l = x->lists;
    x->lists = l->next;
    free(l->path);
    free(l);
  }
  for (size_t i = 0; i < x->ngm; i++) {
    free(x->gm[i].group);
    for (size_t k = 0; k < x->gm[i].n; k++)
      free(x->gm[i].ids[k]);
    free(x->gm[i].ids);
  }
  free(x->gm);
  for (size_t i = 0; x->ids && i < x->nids; i++)
    free(x->ids[i]);
  free(x->ids);
  free(x);
}

static struct sx *X(struct tjob *j) {
  if (!j->ps) {
    j->ps = calloc(1, sizeof(struct sx));
    j->ps_free = sx_free;
  }
  if (!j->ps)
    tjob_fail(j, US_HTTP_ENOMEM, 0, "out of memory");
  return j->ps;
}

/* ------------------------------------------------------------ records */

static char *primary_email(const struct us_jval *item) {
  struct us_jval arr, e;
  size_t pos = 0;
  char *first = NULL;
  if (!us_json_get(item, "emails", &arr) || arr.type != US_J_ARRAY)
    return NULL;
  while (us_json_next_elem(&arr, &pos, &e)) {
    if (t_jbool(&e, "primary", 0)) {
      free(first);
      return t_jstr(&e, "value");
    }
    if (!first)
      first = t_jstr(&e, "value");
  }
  return first;
}

static int scim_account(const struct us_jval *item, struct us_target_account *a) {
  memset(a, 0, sizeof *a);
  a->name = t_jstr(item, "userName");
  a->id = t_jstr(item, "id");
  if (!a->name || !a->id) {
    t_account_free(a);
    return -1;
  }
  a->display_name = t_jstr(item, "displayName");
  if (!a->display_name)
    a->display_name = t_jstr(item, "name.formatted");
  a->email = primary_email(item);
  a->active = t_jbool(item, "active", -1);
  return 0;
}

/* ------------------------------------------------------------ paging */

static char *enc_filter(const char *attr, const char *value) {
  char *q = t_jquote(value), *f = q ? t_fmt("%s eq %s", attr, q) : NULL, *e = f ? t_enc(f) : NULL;
  free(q);
  free(f);
  return e;
}

static void page_get(struct slister *l, long long start, long long lim);

static void on_page(struct tcall *c, const struct us_http_response *r) {
  struct slister *l = c->p;
  struct tjob *j = c->j;
  struct us_jval root, res, v;
  long long total = -1, start = c->n, lim = c->lim;
  l->inflight--;
  if (!t_json_ok(j, c->what, r, &root))
    return;
  if (!us_json_get(&root, "totalResults", &v) || !us_json_int(&v, &total) || total < 0) {
    tjob_fail(j, "ERESPONSE", r->status, "%s: a ListResponse without totalResults", c->what);
    return;
  }
  size_t n = 0, pos = 0;
  struct us_jval e;
  int has = us_json_get(&root, "Resources", &res) && res.type == US_J_ARRAY;
  if (!has && total > 0 && start <= total) {
    tjob_fail(j, "ERESPONSE", r->status, "%s: a ListResponse without Resources", c->what);
    return;
  }
  while (has && us_json_next_elem(&res, &pos, &e))
    n++;
  size_t take = n;
  if (lim > 0 && start + (long long)take > lim)
    take = (size_t)(lim - start);
  if (take)
    l->items(l, &res, take);
  if (j->failed)
    return;
  if (start == 1 && n > 0 && total > (long long)n) { /* fan out: one request per segment */
    long long step = (long long)n;
    for (long long s = 1 + step; s <= total && !j->failed; s += step)
      page_get(l, s, s + step <= total ? s + step : 0);
    lim = 1 + step;
  }
  long long nx = start + (long long)take;
  if (take > 0 && nx <= total && (lim == 0 || nx < lim)) /* short page inside its segment */
    page_get(l, nx, lim);
  if (l->inflight == 0 && !j->failed && l->on_end)
    l->on_end(l);
}

static void page_get(struct slister *l, long long start, long long lim) {
  char *p = t_fmt("%s%sstartIndex=%lld&count=%lld", l->path, strchr(l->path, '?') ? "&" : "?",
                  start, l->count);
  char *what = t_fmt("list %s", !strncmp(l->path, "/Users", 6) ? "users" : "groups");
  struct tcall *c = p && what ? tcall_start(l->j, "GET", p, NULL, on_page, l, start, what) : NULL;
  if (!p || !what)
    tjob_fail(l->j, US_HTTP_ENOMEM, 0, "list: out of memory");
  if (c) {
    c->lim = lim;
    l->inflight++;
  }
  free(p);
  free(what);
}

static struct slister *slist_start(struct tjob *j, const char *path, sitems_fn items,
                                   void (*on_end)(struct slister *l)) {
  struct sx *x = X(j);
  struct slister *l = x ? calloc(1, sizeof *l) : NULL;
  if (!l || !(l->path = strdup(path))) {
    free(l);
    tjob_fail(j, US_HTTP_ENOMEM, 0, "list: out of memory");
    return NULL;
  }
  l->j = j;
  l->count = t_page_size(j->t, 100);
  l->items = items;
  l->on_end = on_end;
  l->next = x->lists;
  x->lists = l;
  page_get(l, 1, 0);
  return l;
}

/* ---- listing items ---- */

static void users_items(struct slister *l, const struct us_jval *res, size_t take) {
  struct tjob *j = l->j;
  struct us_target_account *a = calloc(take ? take : 1, sizeof *a);
  size_t pos = 0, k = 0;
  struct us_jval e;
  if (!a) {
    tjob_fail(j, US_HTTP_ENOMEM, 0, "list users: out of memory");
    return;
  }
  for (size_t i = 0; i < take && us_json_next_elem(res, &pos, &e); i++)
    if (scim_account(&e, &a[k]) == 0) {
      remember_user(j->t, a[k].name, a[k].id);
      k++;
    }
  if (k != take) {
    for (size_t i = 0; i < k; i++)
      t_account_free(&a[i]);
    free(a);
    tjob_fail(j, "ERESPONSE", 200, "list users: %zu of %zu users lack an id or a userName",
              take - k, take);
    return;
  }
  tjob_emit_page(j, US_TEV_ACCOUNTS, NULL, a, k, NULL, 0);
}

/* Reads a page of groups: their names (emitted), ids (remembered) and, in a
** snapshot, their members' ids (kept until the users are read). */
static void groups_items(struct slister *l, const struct us_jval *res, size_t take) {
  struct tjob *j = l->j;
  struct sx *x = j->ps;
  struct scim *s = S(j->t);
  char **names = calloc(take ? take : 1, sizeof *names);
  size_t pos = 0, k = 0;
  int oom = 0;
  struct us_jval e;
  if (!names || !s) {
    free(names);
    tjob_fail(j, US_HTTP_ENOMEM, 0, "list groups: out of memory");
    return;
  }
  for (size_t i = 0; i < take && us_json_next_elem(res, &pos, &e); i++) {
    char *name = t_jstr(&e, "displayName"), *id = t_jstr(&e, "id");
    if (!name || !id) {
      free(name);
      free(id);
      break;
    }
    smap_put(&s->gid, name, id);
    free(id);
    names[k++] = name;
    if (j->kind != US_TOP_SNAPSHOT)
      continue;
    if (x->ngm == x->capgm) {
      size_t cap = x->capgm ? x->capgm * 2 : 64;
      struct gmembers *g = realloc(x->gm, cap * sizeof *g);
      if (!g) {
        oom = 1;
        break;
      }
      x->gm = g;
      x->capgm = cap;
    }
    struct gmembers *g = &x->gm[x->ngm];
    memset(g, 0, sizeof *g);
    struct us_jval mem, m;
    size_t mp = 0, cnt = 0;
    if (us_json_get(&e, "members", &mem) && mem.type == US_J_ARRAY)
      while (us_json_next_elem(&mem, &mp, &m))
        cnt++;
    g->group = strdup(name);
    g->ids = calloc(cnt ? cnt : 1, sizeof *g->ids);
    if (!g->group || !g->ids) {
      free(g->group);
      free(g->ids);
      oom = 1;
      break;
    }
    x->ngm++;
    mp = 0;
    while (cnt && us_json_next_elem(&mem, &mp, &m)) {
      char *type = t_jstr(&m, "type");
      char *v = (!type || !strcmp(type, "User")) ? t_jstr(&m, "value") : NULL;
      if (v)
        g->ids[g->n++] = v;
      free(type);
    }
  }
  if (k != take || oom) {
    for (size_t i = 0; i < k; i++)
      free(names[i]);
    free(names);
    if (oom)
      tjob_fail(j, US_HTTP_ENOMEM, 0, "list groups: out of memory");
    else
      tjob_fail(j, "ERESPONSE", 200, "list groups: a group without an id or a displayName");
    return;
  }
  tjob_emit_page(j, US_TEV_GROUPS, NULL, NULL, 0, names, k);
}

/* ---- snapshot ---- */

static void snap_end(struct slister *l) {
  struct tjob *j = l->j;
  struct sx *x = j->ps;
  struct scim *s = S(j->t);
  if (--x->open > 0 || !s)
    return;
  for (size_t gi = 0; gi < x->ngm && !j->failed; gi++) {
    struct gmembers *g = &x->gm[gi];
    struct us_target_account *a = calloc(g->n ? g->n : 1, sizeof *a);
    size_t k = 0;
    if (!a) {
      tjob_fail(j, US_HTTP_ENOMEM, 0, "snapshot: out of memory");
      return;
    }
    for (size_t i = 0; i < g->n; i++) {
      const char *name = smap_get(&s->uname, g->ids[i]);
      if (!name) /* not a listed user (a nested group, or gone since) */
        continue;
      a[k].name = strdup(name);
      a[k].id = strdup(g->ids[i]);
      a[k].active = -1;
      if (a[k].name && a[k].id)
        k++;
      else
        t_account_free(&a[k]);
    }
    tjob_emit_page(j, US_TEV_MEMBERS, g->group, a, k, NULL, 0);
  }
}

/* check: a 404 says what url must be. Returns 1 when r was one (j failed). */
static int check_404(struct tjob *j, struct tcall *c, const struct us_http_response *r) {
  if (j->kind != US_TOP_CHECK || r->code || r->status != 404)
    return 0;
  char *text = t_error_text(r);
  tjob_fail(j, "ENOTFOUND", 404,
            "%s: HTTP 404: %s; is url the service's SCIM base URL (the part before /Users; "
            "Atlassian: https://api.atlassian.com/scim/directory/<directoryId>)?",
            c->what, text);
  free(text);
  return 1;
}

static void on_spc(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct scim *s = S(j->t);
  struct us_jval root;
  if (!s)
    return;
  if (j->kind == US_TOP_CHECK || j->kind == US_TOP_SNAPSHOT) {
    if (r->code || r->status < 200 || r->status >= 300 ||
        !us_json_parse(r->body, r->body_len, &root)) {
      if (!check_404(j, c, r) && j->kind == US_TOP_CHECK) {
        tjob_fail_http(j, c->what, r, NULL);
      }
      return; /* a snapshot does not need it: writes read it again */
    }
  } else if (!t_json_ok(j, c->what, r, &root)) {
    return;
  }
  s->patch = t_jbool(&root, "patch.supported", 0);
  s->spc = 1;
  if (j->kind == US_TOP_CHECK) {
    j->product = strdup(s->atl ? "Atlassian Cloud user provisioning (SCIM)" : "SCIM service provider");
    j->version = strdup("2.0");
    j->detail = t_fmt("%s", s->patch ? "PATCH supported: updates and deactivation by PATCH"
                                     : "no PATCH: updates and deactivation by GET + PUT");
  }
}

static void scim_snapshot(struct tjob *j) {
  struct sx *x = X(j);
  if (!x)
    return;
  x->open = 2;
  if (!S(j->t)->spc)
    tcall_start(j, "GET", "/ServiceProviderConfig", NULL, on_spc, NULL, 0,
                "service provider config");
  /* a user's groups come from the groups listing: not read twice */
  if (slist_start(j, "/Users?excludedAttributes=groups", users_items, snap_end))
    slist_start(j, "/Groups", groups_items, snap_end);
}

/* ------------------------------------------------------------ ids */

static void proceed(struct tjob *j);

/* A lookup's outcome; c->n: -1 the job's user, -2 the job's group, i >= 0
** item i of a bulk job (a user of ADD_MEMBERS, a group of ADD_TO_GROUPS). */
static void on_lookup(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct scim *s = S(j->t);
  struct us_jval root, v;
  int item = c->n >= 0;
  int is_group = c->n == -2 || (item && j->kind == US_TOP_ADD_TO_GROUPS);
  const char *key = c->n == -1 ? j->name : c->n == -2 ? j->group : j->list[c->n];
  char *id = NULL;
  if (item && (r->code || r->status < 200 || r->status >= 300)) {
    t_item_done(j, (size_t)c->n, c->what, r, q_scim);
  } else if (item ? !us_json_parse(r->body, r->body_len, &root)
                  : !t_json_ok(j, c->what, r, &root)) {
    if (item)
      tjob_item_done(j, (size_t)c->n, 0, NULL, r->status, "ERESPONSE",
                     "the lookup's answer is not JSON");
  } else {
    size_t pos = 0;
    struct us_jval e;
    if (us_json_get(&root, "Resources", &v) && v.type == US_J_ARRAY)
      while (!id && us_json_next_elem(&v, &pos, &e)) {
        char *n = t_jstr(&e, is_group ? "displayName" : "userName");
        if (t_streq_ci(n, key))
          id = t_jstr(&e, "id");
        free(n);
      }
    if (!id) {
      char *m = t_fmt("scim: %s: no such %s", c->what, is_group ? "group" : "user");
      if (item)
        tjob_item_done(j, (size_t)c->n, 0, NULL, 404, "ENOTFOUND", m);
      else
        tjob_fail(j, "ENOTFOUND", 404, "%s: no such %s", c->what, is_group ? "group" : "user");
      free(m);
    } else if (s) {
      if (is_group)
        smap_put(&s->gid, key, id);
      else
        remember_user(j->t, key, id);
    }
  }
  if (c->n == -1 && id && !j->id)
    j->id = strdup(id);
  else if (item && id && j->ps)
    ((struct sx *)j->ps)->ids[c->n] = strdup(id);
  else if (c->n == -2 && id) {
    free(j->to2);
    j->to2 = strdup(id); /* the group's id (to2 is Jira's component lead otherwise) */
  }
  free(id);
  if (--j->n1 == 0 && !j->failed)
    proceed(j);
}

static void lookup(struct tjob *j, int is_group, const char *key, long long n) {
  char *f = enc_filter(is_group ? "displayName" : "userName", key);
  char *p = f ? t_fmt(is_group ? "/Groups?filter=%s&excludedAttributes=members"
                               : "/Users?filter=%s&attributes=userName",
                      f)
              : NULL;
  char *what = t_fmt("find %s %s", is_group ? "group" : "user", key);
  j->n1++;
  if (p && what)
    tcall_start(j, "GET", p, NULL, on_lookup, NULL, n, what);
  else
    tjob_fail(j, US_HTTP_ENOMEM, 0, "out of memory");
  free(f);
  free(p);
  free(what);
}

static void on_spc_then(struct tcall *c, const struct us_http_response *r) {
  on_spc(c, r);
  if (--c->j->n1 == 0 && !c->j->failed)
    proceed(c->j);
}

static int needs_spc(enum us_top k) {
  return k == US_TOP_UPDATE_USER || k == US_TOP_RENAME_USER || k == US_TOP_DEACTIVATE_USER ||
         k == US_TOP_REACTIVATE_USER;
}

static int needs_user(enum us_top k) {
  return needs_spc(k) || k == US_TOP_DELETE_USER || k == US_TOP_REMOVE_MEMBER ||
         k == US_TOP_ADD_TO_GROUPS;
}

static int needs_group(enum us_top k) {
  return k == US_TOP_REMOVE_MEMBER || k == US_TOP_DELETE_GROUP || k == US_TOP_ADD_MEMBERS ||
         k == US_TOP_LIST_MEMBERS;
}

/* Finds the ids (and the provider's PATCH support) job j needs, then proceeds. */
static void resolve(struct tjob *j) {
  struct scim *s = S(j->t);
  if (!s) {
    tjob_fail(j, US_HTTP_ENOMEM, 0, "out of memory");
    return;
  }
  j->n1 = 1; /* held while the lookups start */
  if (needs_spc(j->kind) && !s->spc) {
    j->n1++;
    tcall_start(j, "GET", "/ServiceProviderConfig", NULL, on_spc_then, NULL, 0,
                "service provider config");
  }
  if (needs_user(j->kind) && !j->id) {
    const char *id = smap_get(&s->uid, j->name);
    if (id)
      j->id = strdup(id);
    else
      lookup(j, 0, j->name ? j->name : "", -1);
  }
  if (needs_group(j->kind)) {
    const char *id = smap_get(&s->gid, j->group);
    if (id)
      j->to2 = strdup(id);
    else
      lookup(j, 1, j->group ? j->group : "", -2);
  }
  if (j->kind == US_TOP_ADD_MEMBERS || j->kind == US_TOP_ADD_TO_GROUPS) {
    struct sx *x = X(j);
    if (x && !(x->ids = calloc(j->nlist ? j->nlist : 1, sizeof *x->ids)))
      tjob_fail(j, US_HTTP_ENOMEM, 0, "out of memory");
    else if (x)
      x->nids = j->nlist;
    int groups = j->kind == US_TOP_ADD_TO_GROUPS;
    /* ADD_MEMBERS: list2, parallel to list, has the ids the caller knows ("" unknown) */
    int known = !groups && j->nlist2 == j->nlist;
    for (size_t i = 0; x && x->ids && i < j->nlist && !j->failed; i++) {
      const char *id = known && j->list2[i][0] ? j->list2[i]
                                                 : smap_get(groups ? &s->gid : &s->uid, j->list[i]);
      if (id)
        x->ids[i] = strdup(id);
      else
        lookup(j, groups, j->list[i], (long long)i);
    }
  }
  if (--j->n1 == 0 && !j->failed)
    proceed(j);
}

/* ------------------------------------------------------------ writes */

static char *user_path(struct tjob *j) {
  char *e = t_enc(j->id ? j->id : "");
  char *p = e ? t_fmt("/Users/%s", e) : NULL;
  free(e);
  return p;
}

static char *group_path(struct tjob *j) {
  char *e = t_enc(j->to2 ? j->to2 : "");
  char *p = e ? t_fmt("/Groups/%s", e) : NULL;
  free(e);
  return p;
}

/* The emails value usersync sets: one primary work address. */
static char *emails_json(const char *email) {
  char *q = t_jquote(email);
  char *s = q ? t_fmt("[{\"value\":%s,\"type\":\"work\",\"primary\":true}]", q) : NULL;
  free(q);
  return s;
}

/* The changes of job j as "attribute": JSON value pairs (PATCH replace
** value object, or the members a PUT replaces). */
static char *changes_json(struct tjob *j) {
  struct us_sb b = {0};
  char *q;
  switch (j->kind) {
  case US_TOP_DEACTIVATE_USER:
  case US_TOP_REACTIVATE_USER:
    us_sb_str(&b, j->kind == US_TOP_DEACTIVATE_USER ? "\"active\":false" : "\"active\":true");
    break;
  case US_TOP_RENAME_USER:
    if ((q = t_jquote(j->to ? j->to : ""))) {
      us_sb_str(&b, "\"userName\":");
      us_sb_str(&b, q);
    } else {
      b.bad = 1;
    }
    free(q);
    break;
  default: /* update */
    if (j->display_name) {
      if ((q = t_jquote(j->display_name))) {
        us_sb_str(&b, "\"displayName\":");
        us_sb_str(&b, q);
      } else {
        b.bad = 1;
      }
      free(q);
    }
    if (j->email) {
      char *e = emails_json(j->email);
      if (e) {
        us_sb_str(&b, b.n ? ",\"emails\":" : "\"emails\":");
        us_sb_str(&b, e);
      } else {
        b.bad = 1;
      }
      free(e);
    }
  }
  return us_sb_done(&b);
}

static int changed_key(const struct us_jval *k, struct tjob *j) {
  static const char *const ro[] = {"meta", "groups", NULL};
  for (const char *const *r = ro; *r; r++)
    if (us_json_streq(k, *r))
      return 1;
  switch (j->kind) {
  case US_TOP_DEACTIVATE_USER:
  case US_TOP_REACTIVATE_USER:
    return us_json_streq(k, "active");
  case US_TOP_RENAME_USER:
    return us_json_streq(k, "userName");
  default:
    return (j->display_name && us_json_streq(k, "displayName")) ||
           (j->email && us_json_streq(k, "emails"));
  }
}

static void user_write_done(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  if (!t_write_done(j, c->what, r, q_scim))
    return;
  if (j->kind == US_TOP_RENAME_USER) {
    struct scim *s = S(j->t);
    if (s)
      smap_put(&s->uid, j->name, NULL);
    remember_user(j->t, j->to, j->id);
  }
}

/* GET answered: PUT the resource back whole with job j's change. */
static void on_put_read(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root, k, v;
  if (!t_json_ok(j, c->what, r, &root))
    return;
  if (root.type != US_J_OBJECT) {
    tjob_fail(j, "ERESPONSE", r->status, "%s: the resource is not an object", c->what);
    return;
  }
  struct us_sb b = {0};
  char *ch = changes_json(j);
  size_t pos = 0;
  us_sb_str(&b, "{");
  int first = 1;
  while (us_json_next_member(&root, &pos, &k, &v)) {
    if (changed_key(&k, j))
      continue;
    if (!first)
      us_sb_str(&b, ",");
    first = 0;
    us_sb_put(&b, k.start, k.len);
    us_sb_str(&b, ":");
    us_sb_put(&b, v.start, v.len);
  }
  if (ch && ch[0]) {
    if (!first)
      us_sb_str(&b, ",");
    us_sb_str(&b, ch);
  }
  us_sb_str(&b, "}");
  free(ch);
  char *body = us_sb_done(&b), *p = user_path(j);
  if (body && p)
    tcall_start(j, "PUT", p, body, user_write_done, NULL, 0, c->what);
  else
    tjob_fail(j, US_HTTP_ENOMEM, 0, "%s: out of memory", c->what);
  free(body);
  free(p);
}

/* update, rename, (re)activate: PATCH replace, or GET + PUT. */
static void user_change(struct tjob *j, const char *what) {
  struct scim *s = S(j->t);
  char *p = user_path(j);
  if (s && s->patch) {
    char *ch = changes_json(j);
    char *body = ch ? t_fmt(PATCHOP "\"Operations\":[{\"op\":\"replace\",\"value\":{%s}}]}", ch)
                    : NULL;
    if (body && p)
      tcall_start(j, "PATCH", p, body, user_write_done, NULL, 0, what);
    else
      tjob_fail(j, US_HTTP_ENOMEM, 0, "%s: out of memory", what);
    free(ch);
    free(body);
  } else if (p) {
    tcall_start(j, "GET", p, NULL, on_put_read, NULL, 0, what);
  } else {
    tjob_fail(j, US_HTTP_ENOMEM, 0, "%s: out of memory", what);
  }
  free(p);
}

static void on_created(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root;
  if (!t_write_done(j, c->what, r, q_exists) || j->note)
    return;
  if (us_json_parse(r->body, r->body_len, &root)) {
    char *id = t_jstr(&root, "id");
    struct scim *s = S(j->t);
    if (j->kind == US_TOP_CREATE_USER)
      remember_user(j->t, j->name, id);
    else if (s && id)
      smap_put(&s->gid, j->group, id);
    free(id);
  }
}

static void on_deleted(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct scim *s = S(j->t);
  if (!t_write_done(j, c->what, r, q_scim) || !s)
    return;
  if (j->kind == US_TOP_DELETE_USER) {
    smap_put(&s->uid, j->name, NULL);
    smap_put(&s->uname, j->id, NULL);
  } else {
    smap_put(&s->gid, j->group, NULL);
  }
}

/* ---- membership ---- */

static char *members_json(char **ids, size_t n) {
  struct us_sb b = {0};
  us_sb_str(&b, "[");
  for (size_t i = 0, k = 0; i < n; i++) {
    if (!ids[i])
      continue;
    char *q = t_jquote(ids[i]);
    if (!q) {
      b.bad = 1;
      break;
    }
    us_sb_str(&b, k++ ? ",{\"value\":" : "{\"value\":");
    us_sb_str(&b, q);
    us_sb_str(&b, "}");
    free(q);
  }
  us_sb_str(&b, "]");
  return us_sb_done(&b);
}

static void add_chunk(struct tjob *j, size_t from, size_t to);

static void on_add(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  size_t from = (size_t)c->n, to = (size_t)c->lim;
  int ok = !r->code && r->status >= 200 && r->status < 300;
  size_t live = 0;
  for (size_t i = from; i < to; i++)
    live += !j->item_done[i];
  if (ok || live <= 1 || r->code) { /* the outcome of each of them */
    for (size_t i = from; i < to; i++)
      t_item_done(j, i, c->what, r, q_scim);
    return;
  }
  for (size_t i = from; i < to; i++) /* find out which ones the provider refused */
    if (!j->item_done[i])
      add_chunk(j, i, i + 1);
}

/* PATCH adds items [from, to) of ADD_MEMBERS (users into j's group) or one
** group of ADD_TO_GROUPS (j's user into group i). */
static void add_chunk(struct tjob *j, size_t from, size_t to) {
  struct sx *x = j->ps;
  int to_group = j->kind == US_TOP_ADD_MEMBERS;
  char *members = NULL, *gp = NULL, *e = NULL;
  if (to_group) {
    members = members_json(x->ids + from, to - from);
    gp = group_path(j);
  } else {
    members = members_json(&j->id, 1);
    e = t_enc(x->ids[from] ? x->ids[from] : "");
    gp = e ? t_fmt("/Groups/%s", e) : NULL;
  }
  /* the answer without the members (RFC 7644 3.9): a large group's list is not read back */
  char *gq = gp ? t_fmt("%s?excludedAttributes=members", gp) : NULL;
  free(gp);
  gp = gq;
  char *body = members ? t_fmt(PATCHOP "\"Operations\":[{\"op\":\"add\",\"path\":\"members\","
                                       "\"value\":%s}]}",
                               members)
                       : NULL;
  char *what = to - from == 1 ? t_fmt("add %s to %s", to_group ? j->list[from] : j->name,
                                      to_group ? j->group : j->list[from])
                              : t_fmt("add %zu users to %s", to - from, j->group);
  struct tcall *c = body && gp && what
                        ? tcall_start(j, "PATCH", gp, body, on_add, NULL, (long long)from, what)
                        : NULL;
  if (c)
    c->lim = (long long)to;
  else if (!j->failed)
    for (size_t i = from; i < to; i++)
      tjob_item_done(j, i, 0, NULL, 0, US_HTTP_ENOMEM, "out of memory");
  free(members);
  free(gp);
  free(e);
  free(body);
  free(what);
}

static void add_all(struct tjob *j) {
  struct sx *x = j->ps;
  if (j->kind == US_TOP_ADD_TO_GROUPS) {
    for (size_t i = 0; i < j->nlist; i++)
      if (!j->item_done[i] && x->ids[i])
        add_chunk(j, i, i + 1);
    return;
  }
  size_t i = 0;
  while (i < j->nlist) { /* runs of up to MEMBERS_PER_PATCH resolved, unreported users */
    while (i < j->nlist && (j->item_done[i] || !x->ids[i]))
      i++;
    size_t from = i, n = 0;
    while (i < j->nlist && n < MEMBERS_PER_PATCH && !j->item_done[i] && x->ids[i]) {
      i++;
      n++;
    }
    if (n)
      add_chunk(j, from, i);
  }
}

/* ---- members of one group ---- */

/* A member this target had not read yet: its userName, emitted on its own. */
static void on_member_user(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root;
  if (!r->code && r->status == 404)
    return; /* gone since the group was read: not a member any more */
  if (!t_json_ok(j, c->what, r, &root))
    return;
  struct us_target_account *a = calloc(1, sizeof *a);
  if (!a || scim_account(&root, a)) {
    free(a);
    tjob_fail(j, a ? "ERESPONSE" : US_HTTP_ENOMEM, r->status, "%s: not a user", c->what);
    return;
  }
  a->active = -1;
  remember_user(j->t, a->name, a->id);
  tjob_emit_page(j, US_TEV_MEMBERS, j->group, a, 1, NULL, 0);
}

static void on_members(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct scim *s = S(j->t);
  struct us_jval root, mem, m;
  size_t pos = 0, n = 0, k = 0;
  if (!t_json_ok(j, c->what, r, &root) || !s)
    return;
  if (us_json_get(&root, "members", &mem) && mem.type == US_J_ARRAY)
    while (us_json_next_elem(&mem, &pos, &m))
      n++;
  struct us_target_account *a = calloc(n ? n : 1, sizeof *a);
  if (!a) {
    tjob_fail(j, US_HTTP_ENOMEM, 0, "out of memory");
    return;
  }
  pos = 0;
  while (n && us_json_next_elem(&mem, &pos, &m)) {
    char *id = t_jstr(&m, "value"), *type = t_jstr(&m, "type");
    int user = id && (!type || !strcmp(type, "User"));
    const char *name = user ? smap_get(&s->uname, id) : NULL;
    if (name && (a[k].name = strdup(name))) {
      a[k].id = id;
      a[k].active = -1;
      id = NULL;
      k++;
    } else if (user) {
      char *e = t_enc(id), *p = e ? t_fmt("/Users/%s", e) : NULL;
      tcall_start(j, "GET", p, NULL, on_member_user, NULL, 0, "read a member");
      free(e);
      free(p);
    }
    free(id);
    free(type);
  }
  tjob_emit_page(j, US_TEV_MEMBERS, j->group, a, k, NULL, 0);
}

/* ---- get ---- */

static void on_get(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root, v, e, g;
  size_t pos = 0;
  int by_id = c->n == 1; /* GET /Users/{id}: the resource itself, whatever its name */
  if (!t_json_ok(j, c->what, r, &root))
    return;
  if (by_id || (us_json_get(&root, "Resources", &v) && v.type == US_J_ARRAY))
    while (!j->have_acc && (by_id ? pos++ == 0 : us_json_next_elem(&v, &pos, &e))) {
      struct us_target_account a;
      if (by_id)
        e = root;
      if (scim_account(&e, &a))
        continue;
      if (!by_id && !t_streq_ci(a.name, j->name)) {
        t_account_free(&a);
      } else {
        j->acc = a;
        j->have_acc = 1;
        remember_user(j->t, a.name, a.id);
        j->raw = strndup(e.start, e.len);
        j->raw_len = j->raw ? e.len : 0;
        if (us_json_get(&e, "groups", &g) && g.type == US_J_ARRAY) {
          size_t gp = 0;
          struct us_jval x;
          while (!j->partial && us_json_next_elem(&g, &gp, &x)) {
            char *name = t_jstr(&x, "display");
            if (name)
              tjob_add_name(j, name);
            else
              j->partial = 1; /* a group named by id only: the names are not all known */
            free(name);
          }
        } else {
          j->partial = 1; /* the provider does not tell a user's groups */
        }
        if (j->partial) { /* unknown, not "none" (target.h) */
          for (size_t i = 0; i < j->nnames; i++)
            free(j->names[i]);
          j->nnames = 0;
        }
      }
    }
  if (!j->have_acc)
    tjob_fail(j, "ENOTFOUND", 404, "get user %s: no such user", j->name);
}

/* ---- check ---- */

static void on_probe(struct tcall *c, const struct us_http_response *r) {
  struct tjob *j = c->j;
  struct us_jval root;
  if (check_404(j, c, r) || !t_json_ok(j, c->what, r, &root))
    return;
  j->admin = 1; /* a provisioning token provisions its whole directory */
}

/* ------------------------------------------------------------ dispatch */

/* Runs job j once its ids are known (resolve). */
static void proceed(struct tjob *j) {
  const char *name = j->name ? j->name : "", *group = j->group ? j->group : "";
  char what[600];
  switch (j->kind) {
  case US_TOP_UPDATE_USER:
    snprintf(what, sizeof what, "update user %s", name);
    if (!j->display_name && !j->email)
      j->note = "nothing to change";
    else
      user_change(j, what);
    break;
  case US_TOP_RENAME_USER:
    snprintf(what, sizeof what, "rename user %s to %s", name, j->to ? j->to : "");
    user_change(j, what);
    break;
  case US_TOP_DEACTIVATE_USER:
  case US_TOP_REACTIVATE_USER:
    snprintf(what, sizeof what, "%s user %s",
             j->kind == US_TOP_DEACTIVATE_USER ? "deactivate" : "reactivate", name);
    user_change(j, what);
    break;
  case US_TOP_DELETE_USER:
  case US_TOP_DELETE_GROUP: {
    int is_group = j->kind == US_TOP_DELETE_GROUP;
    snprintf(what, sizeof what, "delete %s %s", is_group ? "group" : "user",
             is_group ? group : name);
    char *p = is_group ? group_path(j) : user_path(j);
    tcall_start(j, "DELETE", p, NULL, on_deleted, NULL, 0, what);
    free(p);
    break;
  }
  case US_TOP_REMOVE_MEMBER: {
    snprintf(what, sizeof what, "remove %s from %s", name, group);
    struct scim *s = S(j->t);
    char *q = t_jquote(j->id), *body = NULL;
    if (q && s && s->atl)
      body = t_fmt(PATCHOP "\"Operations\":[{\"op\":\"remove\",\"path\":\"members\","
                           "\"value\":[{\"value\":%s}]}]}",
                   q);
    else if (q) {
      char *flt = t_fmt("members[value eq %s]", q), *fq = flt ? t_jquote(flt) : NULL;
      body = fq ? t_fmt(PATCHOP "\"Operations\":[{\"op\":\"remove\",\"path\":%s}]}", fq) : NULL;
      free(flt);
      free(fq);
    }
    char *gp = group_path(j), *gq = gp ? t_fmt("%s?excludedAttributes=members", gp) : NULL;
    free(gp);
    t_write_json(j, "PATCH", gq, body, q_scim, what);
    free(q);
    break;
  }
  case US_TOP_ADD_MEMBERS:
  case US_TOP_ADD_TO_GROUPS:
    add_all(j);
    break;
  case US_TOP_LIST_MEMBERS: {
    char *p = group_path(j), *pp = p ? t_fmt("%s?attributes=members", p) : NULL;
    snprintf(what, sizeof what, "list members of %s", group);
    tcall_start(j, "GET", pp, NULL, on_members, NULL, 0, what);
    free(p);
    free(pp);
    break;
  }
  default:
    tjob_fail(j, "EUNSUPPORTED", 0, "operation %d is not supported", (int)j->kind);
  }
}

static struct tlister *scim_list(struct tjob *j, enum us_tev ev, const char *group,
                                 tsink_fn sink) {
  (void)group, (void)sink; /* SCIM pages are read here, not by target.c's listers */
  if (ev == US_TEV_ACCOUNTS)
    slist_start(j, "/Users?excludedAttributes=groups", users_items, NULL);
  else if (ev == US_TEV_GROUPS)
    slist_start(j, "/Groups?excludedAttributes=members", groups_items, NULL);
  else
    resolve(j); /* MEMBERS: the group's id, then its members */
  return NULL;
}

static void scim_start(struct tjob *j) {
  const char *name = j->name ? j->name : "", *group = j->group ? j->group : "";
  char what[600];
  switch (j->kind) {
  case US_TOP_GET_ACCOUNT: { /* by the id when the caller knows it (a link's), else by name */
    char *f = j->id ? NULL : enc_filter("userName", name);
    char *p = j->id ? user_path(j) : f ? t_fmt("/Users?filter=%s", f) : NULL;
    snprintf(what, sizeof what, "get user %s", name);
    tcall_start(j, "GET", p, NULL, on_get, NULL, j->id ? 1 : 0, what);
    free(f);
    free(p);
    break;
  }
  case US_TOP_CREATE_USER: {
    char *un = t_jquote(name), *dn = t_jquote(j->display_name ? j->display_name : name);
    char *em = j->email ? emails_json(j->email) : NULL;
    char *ex = j->external_id ? t_jquote(j->external_id) : NULL;
    char *body = un && dn && (em || !j->email) && (ex || !j->external_id)
                     ? t_fmt("{\"schemas\":[\"" CORE_USER "\"],\"userName\":%s,%s%s%s\"displayName\":%s,"
                             "\"name\":{\"formatted\":%s}%s%s,\"active\":true}",
                             un, ex ? "\"externalId\":" : "", ex ? ex : "", ex ? "," : "", dn, dn,
                             em ? ",\"emails\":" : "", em ? em : "")
                     : NULL;
    snprintf(what, sizeof what, "create user %s", name);
    if (body)
      tcall_start(j, "POST", "/Users", body, on_created, NULL, 0, what);
    else
      tjob_fail(j, US_HTTP_ENOMEM, 0, "out of memory");
    free(un);
    free(dn);
    free(em);
    free(ex);
    free(body);
    break;
  }
  case US_TOP_CREATE_GROUP: {
    char *g = t_jquote(group);
    char *body = g ? t_fmt("{\"schemas\":[\"" CORE_GROUP "\"],\"displayName\":%s,"
                           "\"members\":[]}",
                           g)
                   : NULL;
    snprintf(what, sizeof what, "create group %s", group);
    if (body)
      tcall_start(j, "POST", "/Groups", body, on_created, NULL, 0, what);
    else
      tjob_fail(j, US_HTTP_ENOMEM, 0, "out of memory");
    free(g);
    free(body);
    break;
  }
  case US_TOP_CHECK:
    tcall_start(j, "GET", "/ServiceProviderConfig", NULL, on_spc, NULL, 0,
                "service provider config");
    tcall_start(j, "GET", "/Users?startIndex=1&count=1", NULL, on_probe, NULL, 0, "list users");
    break;
  case US_TOP_UPDATE_USER:
  case US_TOP_RENAME_USER:
  case US_TOP_DEACTIVATE_USER:
  case US_TOP_REACTIVATE_USER:
  case US_TOP_DELETE_USER:
  case US_TOP_DELETE_GROUP:
  case US_TOP_REMOVE_MEMBER:
  case US_TOP_ADD_MEMBERS:
  case US_TOP_ADD_TO_GROUPS:
    if ((j->kind == US_TOP_ADD_MEMBERS || j->kind == US_TOP_ADD_TO_GROUPS) && !j->nlist)
      break;
    resolve(j);
    break;
  default: /* (what caps lacks was refused before: target.c) */
    tjob_fail(j, "EUNSUPPORTED", 0, "operation %d is not supported", (int)j->kind);
  }
}

static const struct us_target_flavour scim_flavours[] = {
    /* Atlassian Cloud: userName is immutable, groups cannot be renamed */
    {"atlassian", {.deactivate = 1, .reactivate = 1, .rename = 0, .leads = 0, .bulk_add = 1}},
    {NULL, {0}},
};

const struct us_target_vt us_target_scim_vt = {
    .type = "scim",
    .caps = {.deactivate = 1, .reactivate = 1, .rename = 1, .leads = 0, .bulk_add = 1},
    .start = scim_start,
    .list = scim_list,
    .parse_account = scim_account,
    .flavours = scim_flavours,
    .snapshot = scim_snapshot,
    .free_priv = scim_free_priv,
};
