/*
** metrics.c: the process-wide Prometheus registry (include/usersync/metrics.h).
**
** Provides: us_metrics_* . Uses: pthreads only.
**
** One mutex guards everything. Families live in an array (searched linearly:
** there are a few dozen); each family keeps its series in a chained hash
** table keyed by the rendered, sorted label set (`a="x",b="y"`), which is
** also the sort key at render time. Nothing is freed before
** us_metrics_reset(): a series, once created, lives for the process.
*/
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "usersync/metrics.h"
#include "usersync/strbuf.h"

#define DEFAULT_SERIES_LIMIT 10000
#define FAMILY_LIMIT 1000
#define MAX_LABELS 32
#define MAX_KEY 4096
#define DROPPED_NAME "usersync_metrics_dropped_total"

static const double bucket_bounds[] = {0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600};
#define NBUCKETS (sizeof bucket_bounds / sizeof bucket_bounds[0])

struct series {
  struct series *next; /* hash chain */
  uint64_t hash;
  double value;               /* counter, gauge */
  double sum;                 /* histogram */
  uint64_t count;             /* histogram */
  uint64_t buckets[NBUCKETS]; /* histogram, per bucket (made cumulative when rendered) */
  char key[];                 /* rendered label set, "" for none */
};

struct family {
  char *name, *help;
  enum us_metric_type type;
  struct series **tab;
  size_t tabsize, n;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct family **fams;
static size_t nfams, capfams;
static size_t series_limit = DEFAULT_SERIES_LIMIT;

/* ---------- names and labels ---------- */

static int valid_name(const char *s) {
  if (!s || strncmp(s, "usersync_", 9) != 0 || !s[9])
    return 0;
  for (s += 9; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
      return 0;
  return 1;
}

static int valid_label(const char *s) {
  if (!s || !*s || (s[0] == '_' && s[1] == '_'))
    return 0;
  for (const char *p = s; *p; p++) {
    int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_';
    if (!alpha && !(p > s && *p >= '0' && *p <= '9'))
      return 0;
  }
  return 1;
}

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h;
}

/* Appends the escaped label value to out[*n..cap); 0 when it does not fit. */
static int put_escaped(char *out, size_t *n, size_t cap, const char *v) {
  for (; *v; v++) {
    const char *rep = NULL;
    char one[2] = {*v, 0};
    if (*v == '\\')
      rep = "\\\\";
    else if (*v == '"')
      rep = "\\\"";
    else if (*v == '\n')
      rep = "\\n";
    else
      rep = one;
    size_t l = strlen(rep);
    if (*n + l >= cap)
      return 0;
    memcpy(out + *n, rep, l);
    *n += l;
  }
  return 1;
}

/* Renders kv (sorted by key) into out as `k="v",...`. Returns US_METRICS_OK,
** US_METRICS_EINVAL (bad or repeated label name, odd list) or
** US_METRICS_DROPPED (longer than cap). */
static int build_key(const char *const *kv, enum us_metric_type type, char *out, size_t cap) {
  size_t idx[MAX_LABELS], np = 0, n = 0;
  out[0] = 0;
  for (size_t i = 0; kv && kv[i]; i += 2) {
    if (!kv[i + 1] || np == MAX_LABELS || !valid_label(kv[i]))
      return US_METRICS_EINVAL;
    if (type == US_METRIC_HISTOGRAM && strcmp(kv[i], "le") == 0)
      return US_METRICS_EINVAL;
    size_t j = np++;
    while (j > 0 && strcmp(kv[idx[j - 1]], kv[i]) > 0) {
      idx[j] = idx[j - 1];
      j--;
    }
    idx[j] = i;
  }
  for (size_t j = 0; j < np; j++) {
    const char *k = kv[idx[j]];
    if (j > 0 && strcmp(kv[idx[j - 1]], k) == 0)
      return US_METRICS_EINVAL;
    size_t kl = strlen(k);
    if (n + kl + 4 >= cap)
      return US_METRICS_DROPPED;
    if (j > 0)
      out[n++] = ',';
    memcpy(out + n, k, kl);
    n += kl;
    out[n++] = '=';
    out[n++] = '"';
    if (!put_escaped(out, &n, cap, kv[idx[j] + 1]) || n + 2 >= cap)
      return US_METRICS_DROPPED;
    out[n++] = '"';
  }
  out[n] = 0;
  return US_METRICS_OK;
}

/* ---------- families and series (mutex held) ---------- */

static struct family *family_find(const char *name) {
  for (size_t i = 0; i < nfams; i++)
    if (strcmp(fams[i]->name, name) == 0)
      return fams[i];
  return NULL;
}

/* Finds or declares a family. *rc gets the reason when NULL is returned. */
static struct family *family_get(const char *name, enum us_metric_type type, int *rc) {
  struct family *f = family_find(name);
  if (f) {
    if (f->type != type)
      *rc = US_METRICS_ETYPE;
    return f->type == type ? f : NULL;
  }
  if (nfams == FAMILY_LIMIT) {
    *rc = US_METRICS_DROPPED;
    return NULL;
  }
  if (nfams == capfams) {
    size_t cap = capfams ? capfams * 2 : 16;
    struct family **v = realloc(fams, cap * sizeof *v);
    if (!v)
      goto nomem;
    fams = v;
    capfams = cap;
  }
  f = calloc(1, sizeof *f);
  if (!f || !(f->name = strdup(name)) || !(f->help = strdup(""))) {
    if (f)
      free(f->name);
    free(f);
    goto nomem;
  }
  f->type = type;
  fams[nfams++] = f;
  return f;
nomem:
  *rc = US_METRICS_ENOMEM;
  return NULL;
}

static int table_grow(struct family *f) {
  size_t size = f->tabsize ? f->tabsize * 2 : 16;
  struct series **t = calloc(size, sizeof *t);
  if (!t)
    return 0;
  for (size_t i = 0; i < f->tabsize; i++)
    for (struct series *s = f->tab[i], *next; s; s = next) {
      next = s->next;
      s->next = t[s->hash & (size - 1)];
      t[s->hash & (size - 1)] = s;
    }
  free(f->tab);
  f->tab = t;
  f->tabsize = size;
  return 1;
}

static void count_dropped(const char *family);

/* The series of f with label set key, created when absent. */
static struct series *series_get(struct family *f, const char *key, int *rc) {
  uint64_t h = hash_str(key);
  if (f->tabsize)
    for (struct series *s = f->tab[h & (f->tabsize - 1)]; s; s = s->next)
      if (s->hash == h && strcmp(s->key, key) == 0)
        return s;
  if (f->n >= series_limit) {
    *rc = US_METRICS_DROPPED;
    count_dropped(f->name);
    return NULL;
  }
  if (f->n >= f->tabsize && !table_grow(f)) {
    *rc = US_METRICS_ENOMEM;
    return NULL;
  }
  size_t kl = strlen(key);
  struct series *s = calloc(1, sizeof *s + kl + 1);
  if (!s) {
    *rc = US_METRICS_ENOMEM;
    return NULL;
  }
  memcpy(s->key, key, kl + 1);
  s->hash = h;
  s->next = f->tab[h & (f->tabsize - 1)];
  f->tab[h & (f->tabsize - 1)] = s;
  f->n++;
  return s;
}

/* usersync_metrics_dropped_total{family=...} += 1. Its own series cannot be
** dropped for long: there are at most FAMILY_LIMIT + 1 values of `family`. */
static void count_dropped(const char *family) {
  int rc = 0;
  struct family *f = family_get(DROPPED_NAME, US_METRIC_COUNTER, &rc);
  char key[MAX_KEY];
  const char *kv[] = {"family", family, NULL};
  if (!f || f->n >= series_limit || build_key(kv, US_METRIC_COUNTER, key, sizeof key) != 0)
    return;
  struct series *s = series_get(f, key, &rc);
  if (s)
    s->value += 1;
}

/* Looks up (creating) the series for a call; mutex held. */
static struct series *lookup(const char *name, enum us_metric_type type, const char *const *kv,
                             int *rc) {
  char key[MAX_KEY];
  *rc = US_METRICS_OK;
  if (!valid_name(name)) {
    *rc = US_METRICS_EINVAL;
    return NULL;
  }
  int k = build_key(kv, type, key, sizeof key);
  if (k == US_METRICS_EINVAL) {
    *rc = k;
    return NULL;
  }
  struct family *f = family_get(name, type, rc);
  if (!f) {
    if (*rc == US_METRICS_DROPPED)
      count_dropped("*");
    return NULL;
  }
  if (k == US_METRICS_DROPPED) {
    *rc = k;
    count_dropped(name);
    return NULL;
  }
  return series_get(f, key, rc);
}

/* ---------- public API ---------- */

int us_metrics_describe(const char *name, enum us_metric_type type, const char *help) {
  if (!valid_name(name) || type < US_METRIC_COUNTER || type > US_METRIC_HISTOGRAM)
    return US_METRICS_EINVAL;
  char *h = strdup(help ? help : "");
  if (!h)
    return US_METRICS_ENOMEM;
  int rc = US_METRICS_OK;
  pthread_mutex_lock(&mu);
  struct family *f = family_get(name, type, &rc);
  if (f) {
    free(f->help);
    f->help = h;
    h = NULL;
  }
  pthread_mutex_unlock(&mu);
  free(h);
  return rc;
}

int us_metrics_add(const char *name, const char *const *kv, double n) {
  if (!(n >= 0) || isinf(n))
    return US_METRICS_EINVAL;
  int rc;
  pthread_mutex_lock(&mu);
  struct series *s = lookup(name, US_METRIC_COUNTER, kv, &rc);
  if (s)
    s->value += n;
  pthread_mutex_unlock(&mu);
  return rc;
}

int us_metrics_set(const char *name, const char *const *kv, double v) {
  int rc;
  pthread_mutex_lock(&mu);
  struct series *s = lookup(name, US_METRIC_GAUGE, kv, &rc);
  if (s)
    s->value = v;
  pthread_mutex_unlock(&mu);
  return rc;
}

int us_metrics_observe(const char *name, const char *const *kv, double v) {
  if (isnan(v))
    return US_METRICS_EINVAL;
  int rc;
  pthread_mutex_lock(&mu);
  struct series *s = lookup(name, US_METRIC_HISTOGRAM, kv, &rc);
  if (s) {
    for (size_t i = 0; i < NBUCKETS; i++)
      if (v <= bucket_bounds[i]) {
        s->buckets[i]++;
        break;
      }
    s->count++;
    s->sum += v;
  }
  pthread_mutex_unlock(&mu);
  return rc;
}

const char *us_metrics_strerror(int rc) {
  switch (rc) {
  case US_METRICS_OK:
    return "ok";
  case US_METRICS_DROPPED:
    return "series limit reached";
  case US_METRICS_EINVAL:
    return "invalid metric name, label or value (names: ^usersync_[a-z0-9_]+$)";
  case US_METRICS_ETYPE:
    return "metric already declared with another type";
  case US_METRICS_ENOMEM:
    return "out of memory";
  default:
    return "unknown error";
  }
}

static void family_free(struct family *f) {
  for (size_t i = 0; i < f->tabsize; i++)
    for (struct series *s = f->tab[i], *next; s; s = next) {
      next = s->next;
      free(s);
    }
  free(f->tab);
  free(f->name);
  free(f->help);
  free(f);
}

void us_metrics_reset(void) {
  pthread_mutex_lock(&mu);
  for (size_t i = 0; i < nfams; i++)
    family_free(fams[i]);
  free(fams);
  fams = NULL;
  nfams = capfams = 0;
  series_limit = DEFAULT_SERIES_LIMIT;
  pthread_mutex_unlock(&mu);
}

size_t us_metrics_series_limit(size_t limit) {
  pthread_mutex_lock(&mu);
  size_t old = series_limit;
  series_limit = limit;
  pthread_mutex_unlock(&mu);
  return old;
}

/* ---------- rendering ---------- */

/* A sample value: integers exactly, others in the shortest form that reads back. */
static void fmt_num(double v, char *out, size_t cap) {
  if (isnan(v))
    snprintf(out, cap, "NaN");
  else if (isinf(v))
    snprintf(out, cap, v > 0 ? "+Inf" : "-Inf");
  else {
    snprintf(out, cap, "%.15g", v);
    if (strtod(out, NULL) != v)
      snprintf(out, cap, "%.17g", v);
  }
}

/* name{key[,extra]} value\n ; extra is e.g. le="0.5" (may be NULL). */
static void sb_sample(struct us_sb *b, const char *name, const char *suffix, const char *key,
                      const char *extra, double v) {
  char num[64];
  us_sb_str(b, name);
  us_sb_str(b, suffix);
  if (*key || extra) {
    us_sb_str(b, "{");
    us_sb_str(b, key);
    if (*key && extra)
      us_sb_str(b, ",");
    if (extra)
      us_sb_str(b, extra);
    us_sb_str(b, "}");
  }
  fmt_num(v, num, sizeof num);
  us_sb_str(b, " ");
  us_sb_str(b, num);
  us_sb_str(b, "\n");
}

/* HELP text escaping: backslash and newline. */
static void sb_help(struct us_sb *b, const char *s) {
  for (; *s; s++) {
    if (*s == '\\')
      us_sb_str(b, "\\\\");
    else if (*s == '\n')
      us_sb_str(b, "\\n");
    else
      us_sb_put(b, s, 1);
  }
}

static int cmp_family(const void *a, const void *b) {
  return strcmp((*(struct family *const *)a)->name, (*(struct family *const *)b)->name);
}
static int cmp_series(const void *a, const void *b) {
  return strcmp((*(struct series *const *)a)->key, (*(struct series *const *)b)->key);
}

static void render_series(struct us_sb *b, const struct family *f, const struct series *s) {
  if (f->type != US_METRIC_HISTOGRAM) {
    sb_sample(b, f->name, "", s->key, NULL, s->value);
    return;
  }
  uint64_t cum = 0;
  char le[64], num[48];
  for (size_t i = 0; i < NBUCKETS; i++) {
    cum += s->buckets[i];
    fmt_num(bucket_bounds[i], num, sizeof num);
    snprintf(le, sizeof le, "le=\"%s\"", num);
    sb_sample(b, f->name, "_bucket", s->key, le, (double)cum);
  }
  sb_sample(b, f->name, "_bucket", s->key, "le=\"+Inf\"", (double)s->count);
  sb_sample(b, f->name, "_sum", s->key, NULL, s->sum);
  sb_sample(b, f->name, "_count", s->key, NULL, (double)s->count);
}

static void render_family(struct us_sb *b, const struct family *f) {
  static const char *const tname[] = {"", "counter", "gauge", "histogram"};
  struct series **v = f->n ? malloc(f->n * sizeof *v) : NULL;
  if (f->n && !v) {
    b->bad = 1;
    return;
  }
  size_t n = 0;
  for (size_t i = 0; i < f->tabsize; i++)
    for (struct series *s = f->tab[i]; s; s = s->next)
      v[n++] = s;
  if (n > 1)
    qsort(v, n, sizeof *v, cmp_series);
  if (*f->help) {
    us_sb_str(b, "# HELP ");
    us_sb_str(b, f->name);
    us_sb_str(b, " ");
    sb_help(b, f->help);
    us_sb_str(b, "\n");
  }
  us_sb_str(b, "# TYPE ");
  us_sb_str(b, f->name);
  us_sb_str(b, " ");
  us_sb_str(b, tname[f->type]);
  us_sb_str(b, "\n");
  for (size_t i = 0; i < n; i++)
    render_series(b, f, v[i]);
  free(v);
}

char *us_metrics_render(size_t *len) {
  struct us_sb b = {0};
  us_sb_put(&b, "", 0); /* an empty registry renders as "" */
  pthread_mutex_lock(&mu);
  struct family **v = nfams ? malloc(nfams * sizeof *v) : NULL;
  if (nfams && !v)
    b.bad = 1;
  else if (nfams) {
    memcpy(v, fams, nfams * sizeof *v);
    qsort(v, nfams, sizeof *v, cmp_family);
    for (size_t i = 0; i < nfams; i++)
      render_family(&b, v[i]);
  }
  pthread_mutex_unlock(&mu);
  free(v);
  if (b.bad) {
    free(b.s);
    return NULL;
  }
  if (len)
    *len = b.n;
  return b.s;
}
