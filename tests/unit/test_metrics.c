/*
** test_metrics.c: the process-wide Prometheus registry (include/usersync/metrics.h):
** exposition text (HELP/TYPE once, escaping, cumulative histogram buckets,
** sorted output), name and type checks, the series cap, concurrent updates.
*/
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "usersync/metrics.h"

#include "check.h"

/* Counts occurrences of needle in hay. */
static int occurrences(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
    n++;
  return n;
}

static void test_counter_gauge_render(void) {
  us_metrics_reset();
  CHECK_EQ_LONG(us_metrics_describe("usersync_runs_total", US_METRIC_COUNTER, "Runs by outcome"),
                US_METRICS_OK);
  const char *ok[] = {"sync", "jira", "outcome", "ok", NULL};
  const char *ok_reordered[] = {"outcome", "ok", "sync", "jira", NULL};
  const char *failed[] = {"sync", "jira", "outcome", "failed", NULL};
  CHECK_EQ_LONG(us_metrics_add("usersync_runs_total", ok, 1), US_METRICS_OK);
  CHECK_EQ_LONG(us_metrics_add("usersync_runs_total", ok_reordered, 2), US_METRICS_OK);
  CHECK_EQ_LONG(us_metrics_add("usersync_runs_total", failed, 1), US_METRICS_OK);
  CHECK_EQ_LONG(us_metrics_set("usersync_budget_remaining", NULL, 0.25), US_METRICS_OK);
  CHECK_EQ_LONG(us_metrics_set("usersync_budget_remaining", NULL, 42), US_METRICS_OK);
  char *text = us_metrics_render(NULL);
  CHECK_STR(text, "# TYPE usersync_budget_remaining gauge\n"
                  "usersync_budget_remaining 42\n"
                  "# HELP usersync_runs_total Runs by outcome\n"
                  "# TYPE usersync_runs_total counter\n"
                  "usersync_runs_total{outcome=\"failed\",sync=\"jira\"} 1\n"
                  "usersync_runs_total{outcome=\"ok\",sync=\"jira\"} 3\n");
  free(text);
}

static void test_escaping(void) {
  us_metrics_reset();
  us_metrics_describe("usersync_x_total", US_METRIC_COUNTER, "back\\slash and\nnewline");
  const char *kv[] = {"v", "a\\b\"c\nd", NULL};
  CHECK_EQ_LONG(us_metrics_add("usersync_x_total", kv, 1.5), US_METRICS_OK);
  char *text = us_metrics_render(NULL);
  CHECK_STR(text, "# HELP usersync_x_total back\\\\slash and\\nnewline\n"
                  "# TYPE usersync_x_total counter\n"
                  "usersync_x_total{v=\"a\\\\b\\\"c\\nd\"} 1.5\n");
  free(text);
}

static void test_histogram(void) {
  us_metrics_reset();
  const char *kv[] = {"sync", "jira", NULL};
  double obs[] = {0.05, 0.1, 0.7, 20, 4000};
  for (size_t i = 0; i < 5; i++)
    CHECK_EQ_LONG(us_metrics_observe("usersync_run_seconds", kv, obs[i]), US_METRICS_OK);
  char *text = us_metrics_render(NULL);
  CHECK(text && strstr(text, "# TYPE usersync_run_seconds histogram\n"));
  CHECK(text && !strstr(text, "# HELP")); /* auto-declared: no help */
  CHECK(text && strstr(text, "usersync_run_seconds_bucket{sync=\"jira\",le=\"0.1\"} 2\n"));
  CHECK(text && strstr(text, "usersync_run_seconds_bucket{sync=\"jira\",le=\"0.5\"} 2\n"));
  CHECK(text && strstr(text, "usersync_run_seconds_bucket{sync=\"jira\",le=\"1\"} 3\n"));
  CHECK(text && strstr(text, "usersync_run_seconds_bucket{sync=\"jira\",le=\"15\"} 3\n"));
  CHECK(text && strstr(text, "usersync_run_seconds_bucket{sync=\"jira\",le=\"30\"} 4\n"));
  CHECK(text && strstr(text, "usersync_run_seconds_bucket{sync=\"jira\",le=\"3600\"} 4\n"));
  CHECK(text && strstr(text, "usersync_run_seconds_bucket{sync=\"jira\",le=\"+Inf\"} 5\n"));
  CHECK(text && strstr(text, "usersync_run_seconds_sum{sync=\"jira\"} 4020.85\n"));
  CHECK(text && strstr(text, "usersync_run_seconds_count{sync=\"jira\"} 5\n"));
  CHECK_EQ_LONG(text ? occurrences(text, "_bucket{") : 0, 13);
  /* "le" belongs to the histogram */
  const char *le[] = {"le", "1", NULL};
  CHECK_EQ_LONG(us_metrics_observe("usersync_run_seconds", le, 1), US_METRICS_EINVAL);
  CHECK_EQ_LONG(us_metrics_observe("usersync_run_seconds", kv, 0.0 / 0.0), US_METRICS_EINVAL);
  free(text);
  /* a histogram without labels */
  us_metrics_observe("usersync_plain_seconds", NULL, 2);
  text = us_metrics_render(NULL);
  CHECK(text && strstr(text, "usersync_plain_seconds_bucket{le=\"5\"} 1\n"));
  CHECK(text && strstr(text, "usersync_plain_seconds_count 1\n"));
  free(text);
}

static void test_sorted(void) {
  us_metrics_reset();
  const char *names[] = {"usersync_c", "usersync_a", "usersync_b"};
  const char *vals[] = {"z", "b", "m", "a"};
  for (size_t i = 0; i < 3; i++)
    for (size_t j = 0; j < 4; j++) {
      const char *kv[] = {"k", vals[j], NULL};
      us_metrics_set(names[i], kv, (double)j);
    }
  char *text = us_metrics_render(NULL);
  const char *a = strstr(text, "# TYPE usersync_a "), *b = strstr(text, "# TYPE usersync_b "),
             *c = strstr(text, "# TYPE usersync_c ");
  CHECK(a && b && c && a < b && b < c);
  const char *va = strstr(text, "usersync_a{k=\"a\"}"), *vb = strstr(text, "usersync_a{k=\"b\"}"),
             *vm = strstr(text, "usersync_a{k=\"m\"}"), *vz = strstr(text, "usersync_a{k=\"z\"}");
  CHECK(va && vb && vm && vz && va < vb && vb < vm && vm < vz);
  CHECK_EQ_LONG(occurrences(text, "# TYPE"), 3);
  /* rendering twice gives the same text */
  char *again = us_metrics_render(NULL);
  CHECK_STR(again, text);
  free(again);
  free(text);
}

static void test_errors(void) {
  us_metrics_reset();
  CHECK_EQ_LONG(us_metrics_add("runs_total", NULL, 1), US_METRICS_EINVAL);
  CHECK_EQ_LONG(us_metrics_add("usersync_Runs", NULL, 1), US_METRICS_EINVAL);
  CHECK_EQ_LONG(us_metrics_add("usersync_", NULL, 1), US_METRICS_EINVAL);
  CHECK_EQ_LONG(us_metrics_add("usersync_a-b", NULL, 1), US_METRICS_EINVAL);
  CHECK_EQ_LONG(us_metrics_add("usersync_ok_total", NULL, -1), US_METRICS_EINVAL);
  const char *badlabel[] = {"1x", "v", NULL};
  CHECK_EQ_LONG(us_metrics_add("usersync_ok_total", badlabel, 1), US_METRICS_EINVAL);
  const char *reserved[] = {"__x", "v", NULL};
  CHECK_EQ_LONG(us_metrics_add("usersync_ok_total", reserved, 1), US_METRICS_EINVAL);
  const char *twice[] = {"a", "1", "a", "2", NULL};
  CHECK_EQ_LONG(us_metrics_add("usersync_ok_total", twice, 1), US_METRICS_EINVAL);
  /* type clash: the family exists as a counter */
  CHECK_EQ_LONG(us_metrics_add("usersync_ok_total", NULL, 1), US_METRICS_OK);
  CHECK_EQ_LONG(us_metrics_set("usersync_ok_total", NULL, 1), US_METRICS_ETYPE);
  CHECK_EQ_LONG(us_metrics_observe("usersync_ok_total", NULL, 1), US_METRICS_ETYPE);
  CHECK_EQ_LONG(us_metrics_describe("usersync_ok_total", US_METRIC_GAUGE, "x"), US_METRICS_ETYPE);
  CHECK_EQ_LONG(us_metrics_describe("usersync_ok_total", US_METRIC_COUNTER, "now described"),
                US_METRICS_OK);
  char *text = us_metrics_render(NULL);
  CHECK(text && strstr(text, "# HELP usersync_ok_total now described\n"));
  CHECK(text && strstr(text, "usersync_ok_total 1\n"));
  free(text);
}

static void test_series_cap(void) {
  us_metrics_reset();
  us_metrics_series_limit(5);
  char v[16];
  int dropped = 0;
  for (int i = 0; i < 20; i++) {
    snprintf(v, sizeof v, "u%02d", i);
    const char *kv[] = {"user", v, NULL};
    if (us_metrics_add("usersync_hostile_total", kv, 1) == US_METRICS_DROPPED)
      dropped++;
  }
  CHECK_EQ_LONG(dropped, 15);
  /* an existing series still counts */
  const char *first[] = {"user", "u00", NULL};
  CHECK_EQ_LONG(us_metrics_add("usersync_hostile_total", first, 1), US_METRICS_OK);
  char *text = us_metrics_render(NULL);
  CHECK_EQ_LONG(occurrences(text, "usersync_hostile_total{"), 5);
  CHECK(strstr(text, "usersync_hostile_total{user=\"u00\"} 2\n"));
  CHECK(strstr(text, "usersync_metrics_dropped_total{family=\"usersync_hostile_total\"} 15\n"));
  free(text);
  /* an oversized label set is dropped too */
  us_metrics_series_limit(10000);
  char *big = malloc(5000);
  memset(big, 'x', 4999);
  big[4999] = 0;
  const char *kv[] = {"v", big, NULL};
  CHECK_EQ_LONG(us_metrics_add("usersync_big_total", kv, 1), US_METRICS_DROPPED);
  free(big);
  text = us_metrics_render(NULL);
  CHECK(strstr(text, "usersync_metrics_dropped_total{family=\"usersync_big_total\"} 1\n"));
  free(text);
  us_metrics_reset();
}

#define THREADS 4
#define PER_THREAD 20000

static void *adder(void *arg) {
  const char *kv[] = {"t", (const char *)arg, NULL};
  const char *shared[] = {"t", "shared", NULL};
  for (int i = 0; i < PER_THREAD; i++) {
    us_metrics_add("usersync_conc_total", kv, 1);
    us_metrics_add("usersync_conc_total", shared, 1);
    us_metrics_observe("usersync_conc_seconds", NULL, 0.2);
    if (i % 5000 == 0)
      free(us_metrics_render(NULL)); /* scrapes race with updates */
  }
  return NULL;
}

static void test_concurrent(void) {
  us_metrics_reset();
  pthread_t th[THREADS];
  const char *ids[THREADS] = {"a", "b", "c", "d"};
  for (int i = 0; i < THREADS; i++)
    pthread_create(&th[i], NULL, adder, (void *)ids[i]);
  for (int i = 0; i < THREADS; i++)
    pthread_join(th[i], NULL);
  char *text = us_metrics_render(NULL);
  char want[128];
  snprintf(want, sizeof want, "usersync_conc_total{t=\"shared\"} %d\n", THREADS * PER_THREAD);
  CHECK(strstr(text, want));
  snprintf(want, sizeof want, "usersync_conc_total{t=\"c\"} %d\n", PER_THREAD);
  CHECK(strstr(text, want));
  snprintf(want, sizeof want, "usersync_conc_seconds_count %d\n", THREADS * PER_THREAD);
  CHECK(strstr(text, want));
  snprintf(want, sizeof want, "usersync_conc_seconds_bucket{le=\"0.5\"} %d\n",
           THREADS * PER_THREAD);
  CHECK(strstr(text, want));
  free(text);
  us_metrics_reset();
}

int main(void) {
  test_counter_gauge_render();
  test_escaping();
  test_histogram();
  test_sorted();
  test_errors();
  test_series_cap();
  test_concurrent();
  printf("%d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
