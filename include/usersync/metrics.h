/*
** metrics.h: one process-wide registry of Prometheus metrics (counters,
** gauges, histograms with labels), rendered in the text exposition format
** 0.0.4. Every function is thread-safe (one mutex): the HTTP engine counts
** from the Lua thread while the server renders /metrics from its own.
**
** Names must match ^usersync_[a-z0-9_]+$; label names ^[a-zA-Z_][a-zA-Z0-9_]*$
** (not "__*", and not "le" on a histogram). A name used before it is
** described is declared by that first use (type from the call, empty help);
** using a family as another type is an error.
**
** Labels are passed as a NULL-terminated array of key, value, key, value, ...
** (NULL itself for no labels). Order does not matter: a series is identified
** by its sorted label set.
**
** Memory is bounded: at most us_metrics_series_limit series per family (the
** default 10,000) and 1,000 families; a further series is not created, the
** call counts it in usersync_metrics_dropped_total{family="..."} and returns
** US_METRICS_DROPPED. Label sets longer than 4 KiB once rendered are dropped
** the same way.
*/
#ifndef USERSYNC_METRICS_H
#define USERSYNC_METRICS_H
#include <stddef.h>

enum us_metric_type { US_METRIC_COUNTER = 1, US_METRIC_GAUGE, US_METRIC_HISTOGRAM };

/* Results of every call below. */
#define US_METRICS_OK 0
#define US_METRICS_DROPPED 1     /* series or family limit reached; counted, not an error */
#define US_METRICS_EINVAL (-1)   /* bad name, label name, type or value */
#define US_METRICS_ETYPE (-2)    /* the family exists with another type */
#define US_METRICS_ENOMEM (-3)

/* Declares (or re-describes) a family. help may be NULL (empty). A second
** describe with the same type replaces the help. */
int us_metrics_describe(const char *name, enum us_metric_type type, const char *help);

/* counter += n; n must be >= 0 and finite. */
int us_metrics_add(const char *name, const char *const *kv, double n);
/* gauge = v */
int us_metrics_set(const char *name, const char *const *kv, double v);
/* Histogram observation (not NaN), default buckets in seconds:
** 0.1 0.5 1 5 15 30 60 120 300 600 1800 3600 +Inf. */
int us_metrics_observe(const char *name, const char *const *kv, double v);

/* The whole registry as exposition text, malloc'd (caller frees), NUL
** terminated; *len (may be NULL) gets its length. NULL when out of memory.
** Families sorted by name, series by their rendered label set; "# HELP"
** (when the help is not empty) and "# TYPE" once per family. */
char *us_metrics_render(size_t *len);

/* A readable message for a negative result of the calls above. */
const char *us_metrics_strerror(int rc);

/* Forgets every family (tests) and restores the default series limit. */
void us_metrics_reset(void);

/* Sets the per-family series limit (tests use a small one); returns the old. */
size_t us_metrics_series_limit(size_t limit);

#endif
