/*
** test_time.c: unit tests of the time core (runtime/timeutil.c): civil-date
** arithmetic against known epochs, RFC 3339 parsing with offsets and
** fractions, leap years, bad dates, formatting, HTTP dates, durations,
** clocks. Expected epochs were computed with Python's datetime.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "usersync/timeutil.h"

static int failures;
#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c)) {                                                                                    \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);                       \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

static void check_parse(const char *s, double want, int line) {
  double t = -1;
  char err[US_TIME_ERRLEN] = "";
  int rc = us_time_parse_iso8601(s, SIZE_MAX, &t, err, sizeof err);
  if (rc != 0 || fabs(t - want) > 1e-6) {
    fprintf(stderr, "test_time.c:%d: parse(\"%s\") = %d, %.6f (%s), want %.6f\n", line, s, rc, t, err, want);
    failures++;
  }
}
#define PARSE(s, want) check_parse(s, want, __LINE__)

static void check_bad(const char *s, const char *why, int line) {
  double t;
  char err[US_TIME_ERRLEN] = "";
  if (us_time_parse_iso8601(s, SIZE_MAX, &t, err, sizeof err) != -1 || strstr(err, why) == NULL) {
    fprintf(stderr, "test_time.c:%d: parse(\"%s\") should fail with \"%s\", got \"%s\"\n", line, s, why, err);
    failures++;
  }
}
#define BAD(s, why) check_bad(s, why, __LINE__)

static void check_format(double t, const char *want, int line) {
  char buf[US_TIME_BUFLEN];
  int n = us_time_format_iso8601(t, buf, sizeof buf);
  if (n < 0 || strcmp(buf, want) != 0) {
    fprintf(stderr, "test_time.c:%d: format(%.6f) = \"%s\", want \"%s\"\n", line, t, n < 0 ? "(error)" : buf, want);
    failures++;
  }
}
#define FORMAT(t, want) check_format(t, want, __LINE__)

static void test_civil(void) {
  CHECK(us_time_days_from_civil(1970, 1, 1) == 0);
  CHECK(us_time_days_from_civil(2000, 3, 1) == 11017);
  CHECK(us_time_days_from_civil(1969, 12, 31) == -1);
  CHECK(us_time_days_from_civil(1, 1, 1) == -719162);
  for (int64_t d = -800000; d < 3000000; d += 997) { /* round trip, years 0..9999 */
    int64_t y;
    int m, dd;
    us_time_civil_from_days(d, &y, &m, &dd);
    CHECK(us_time_days_from_civil(y, m, dd) == d);
  }
  CHECK(us_time_is_leap(2024) && us_time_is_leap(2000) && !us_time_is_leap(1900) && !us_time_is_leap(2025));
  CHECK(us_time_days_in_month(2024, 2) == 29 && us_time_days_in_month(2100, 2) == 28);
  CHECK(us_time_days_in_month(2025, 13) == 0);
}

static void test_header_example(void) {
  double t;
  char err[US_TIME_ERRLEN], buf[US_TIME_BUFLEN];
  CHECK(us_time_parse_iso8601("2025-03-14T01:26:50.5+02:00", SIZE_MAX, &t, err, sizeof err) == 0);
  us_time_format_iso8601(t, buf, sizeof buf);
  CHECK(strcmp(buf, "2025-03-13T23:26:50.500Z") == 0);
  CHECK(us_time_parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT", SIZE_MAX, &t) == 0 && t == 784111777);
}

static void test_parse(void) {
  PARSE("2025-03-13T23:26:50.000Z", 1741908410.0); /* Okta */
  PARSE("2025-03-13T23:26:50Z", 1741908410.0);
  PARSE("2025-03-13t23:26:50z", 1741908410.0);
  PARSE("2025-03-13 23:26:50Z", 1741908410.0);
  PARSE("2025-03-14T01:26:50+02:00", 1741908410.0);
  PARSE("2025-03-13T18:26:50-0500", 1741908410.0);
  PARSE("2025-03-14T05:26:50+06", 1741908410.0);
  PARSE("2025-03-13T23:26:50.123456789Z", 1741908410.123456789);
  PARSE("2025-03-13T23:26Z", 1741908360.0);
  PARSE("2025-03-13", 1741824000.0);
  PARSE("2024-02-29T12:00:00Z", 1709208000.0);
  PARSE("2000-02-29T00:00:00Z", 951782400.0);
  PARSE("1969-12-31T23:59:59.500Z", -0.5);
  PARSE("1900-03-01T00:00:00Z", -2203891200.0);
  PARSE("0001-01-01T00:00:00Z", -62135596800.0);
  PARSE("2016-12-31T23:59:60Z", 1483228800.0); /* leap second */
  BAD("2025-02-29T00:00:00Z", "day out of range");
  BAD("1900-02-29", "day out of range");
  BAD("2025-13-01T00:00:00Z", "month out of range");
  BAD("2025-00-10", "month out of range");
  BAD("2025-04-31", "day out of range");
  BAD("2025-03-13T24:00:00Z", "time of day out of range");
  BAD("2025-03-13T23:60:00Z", "time of day out of range");
  BAD("2025-03-13T23:26:50", "missing time zone");
  BAD("2025-03-13T23:26:50.Z", "digits after the decimal point");
  BAD("2025-03-13T23:26:50+2:00", "expected an offset");
  BAD("2025-03-13T23:26:50+02:", "offset minutes");
  BAD("2025-03-13T23:26:50+24:00", "offset out of range");
  BAD("2025-03-13T23:26:50Z junk", "unexpected text");
  BAD("2025-3-13", "expected YYYY-MM-DD");
  BAD("", "expected YYYY-MM-DD");
  BAD("13/03/2025", "expected YYYY-MM-DD");
  BAD("2025-03-13X", "expected 'T'");
}

static void test_format(void) {
  FORMAT(1741908410.0, "2025-03-13T23:26:50.000Z");
  FORMAT(1741908410.123, "2025-03-13T23:26:50.123Z");
  FORMAT(1741908410.9996, "2025-03-13T23:26:51.000Z"); /* rounds to the ms */
  FORMAT(0, "1970-01-01T00:00:00.000Z");
  FORMAT(-0.5, "1969-12-31T23:59:59.500Z");
  FORMAT(951782400.0, "2000-02-29T00:00:00.000Z");
  FORMAT(253402300799.999, "9999-12-31T23:59:59.999Z");
  FORMAT(-62167219200.0, "0000-01-01T00:00:00.000Z");
  char buf[US_TIME_BUFLEN];
  CHECK(us_time_format_iso8601(253402300800.0, buf, sizeof buf) == -1);
  CHECK(us_time_format_iso8601(NAN, buf, sizeof buf) == -1);
  CHECK(us_time_format_iso8601(INFINITY, buf, sizeof buf) == -1);
  /* parse(format(t)) == t at ms precision over a wide range */
  for (double t = -2e9; t < 4e9; t += 7777777.777) {
    double back;
    char err[US_TIME_ERRLEN];
    us_time_format_iso8601(t, buf, sizeof buf);
    CHECK(us_time_parse_iso8601(buf, SIZE_MAX, &back, err, sizeof err) == 0);
    CHECK(fabs(back - t) <= 0.0005 + 1e-6);
  }
}

static void test_http_date(void) {
  double t;
  char buf[US_TIME_BUFLEN];
  CHECK(us_time_parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", SIZE_MAX, &t) == 0 && t == 784111777);
  CHECK(us_time_parse_http_date("Sun Nov  6 08:49:37 1994", SIZE_MAX, &t) == 0 && t == 784111777);
  CHECK(us_time_parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT", SIZE_MAX, &t) == 0 && t == 1709164800);
  CHECK(us_time_parse_http_date("Thu, 13 Mar 2025 23:26:50 GMT", SIZE_MAX, &t) == 0 && t == 1741908410);
  CHECK(us_time_parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC", SIZE_MAX, &t) == -1);
  CHECK(us_time_parse_http_date("Sun, 6 Nov 1994 08:49:37 GMT", SIZE_MAX, &t) == -1);
  CHECK(us_time_parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT ", SIZE_MAX, &t) == -1);
  CHECK(us_time_parse_http_date("Fri, 29 Feb 2025 00:00:00 GMT", SIZE_MAX, &t) == -1);
  CHECK(us_time_parse_http_date("120", SIZE_MAX, &t) == -1); /* delta-seconds is the caller's */
  CHECK(us_time_parse_http_date("", SIZE_MAX, &t) == -1);
  CHECK(us_time_format_http_date(784111777.9, buf, sizeof buf) > 0);
  CHECK(strcmp(buf, "Sun, 06 Nov 1994 08:49:37 GMT") == 0);
  CHECK(us_time_format_http_date(0, buf, sizeof buf) > 0);
  CHECK(strcmp(buf, "Thu, 01 Jan 1970 00:00:00 GMT") == 0);
  CHECK(us_time_format_http_date(-86400, buf, sizeof buf) > 0);
  CHECK(strcmp(buf, "Wed, 31 Dec 1969 00:00:00 GMT") == 0);
  CHECK(us_time_format_http_date(1709164800, buf, sizeof buf) > 0);
  CHECK(strcmp(buf, "Thu, 29 Feb 2024 00:00:00 GMT") == 0);
}

static void test_duration(void) {
  double v;
  char err[US_TIME_ERRLEN];
  CHECK(us_time_parse_duration("1h30m", SIZE_MAX, &v, err, sizeof err) == 0 && v == 5400);
  CHECK(us_time_parse_duration("30m", SIZE_MAX, &v, err, sizeof err) == 0 && v == 1800);
  CHECK(us_time_parse_duration("7d", SIZE_MAX, &v, err, sizeof err) == 0 && v == 604800);
  CHECK(us_time_parse_duration("90s", SIZE_MAX, &v, err, sizeof err) == 0 && v == 90);
  CHECK(us_time_parse_duration("1.5h", SIZE_MAX, &v, err, sizeof err) == 0 && v == 5400);
  CHECK(us_time_parse_duration("250ms", SIZE_MAX, &v, err, sizeof err) == 0 && fabs(v - 0.25) < 1e-12);
  CHECK(us_time_parse_duration("1d2h3m4s", SIZE_MAX, &v, err, sizeof err) == 0 && v == 93784);
  CHECK(us_time_parse_duration("45", SIZE_MAX, &v, err, sizeof err) == 0 && v == 45);
  CHECK(us_time_parse_duration("", SIZE_MAX, &v, err, sizeof err) == -1);
  CHECK(us_time_parse_duration("1w", SIZE_MAX, &v, err, sizeof err) == -1 && strstr(err, "offset 1"));
  CHECK(us_time_parse_duration("1h30", SIZE_MAX, &v, err, sizeof err) == -1 && strstr(err, "offset 4"));
  CHECK(us_time_parse_duration("-5s", SIZE_MAX, &v, err, sizeof err) == -1);
  CHECK(us_time_parse_duration("h", SIZE_MAX, &v, err, sizeof err) == -1);
  CHECK(us_time_parse_duration("5 m", SIZE_MAX, &v, err, sizeof err) == -1);
}

static void test_clocks(void) {
  double w = us_time_now(), m0 = us_time_monotonic();
  CHECK(w > 1.7e9);
  us_time_sleep(0.05);
  us_time_sleep(-1);
  double m1 = us_time_monotonic();
  CHECK(m1 - m0 >= 0.049 && m1 - m0 < 5);
}

int main(void) {
  test_civil();
  test_header_example();
  test_parse();
  test_format();
  test_http_date();
  test_duration();
  test_clocks();
  if (failures) {
    fprintf(stderr, "%d failure(s)\n", failures);
    return 1;
  }
  printf("test_time: all passed\n");
  return 0;
}
