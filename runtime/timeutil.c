/*
** timeutil.c: the C core of `usersync.time` (contract in
** include/usersync/timeutil.h). Pure functions over strings and doubles plus
** the clocks; no Lua, no local time zone, no locale.
*/
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "usersync/timeutil.h"

/* Days from civil, after Howard Hinnant's public-domain algorithm
** (eras of 400 years, March-based years). */
int64_t us_time_days_from_civil(int64_t y, int m, int d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

void us_time_civil_from_days(int64_t z, int64_t *y, int *m, int *d) {
  z += 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  *d = (int)(doy - (153 * mp + 2) / 5 + 1);
  *m = (int)(mp < 10 ? mp + 3 : mp - 9);
  *y = yoe + era * 400 + (*m <= 2);
}

int us_time_is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int us_time_days_in_month(int64_t y, int m) {
  static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (m < 1 || m > 12)
    return 0;
  return m == 2 && us_time_is_leap(y) ? 29 : days[m - 1];
}

/* Cursor over the input for the parsers. */
typedef struct {
  const char *s, *p, *end;
} cursor;

/* Reads exactly n digits into *v; 0 on success. */
static int digits(cursor *c, int n, int *v) {
  if (c->end - c->p < n)
    return -1;
  int x = 0;
  for (int i = 0; i < n; i++) {
    char ch = c->p[i];
    if (ch < '0' || ch > '9')
      return -1;
    x = x * 10 + (ch - '0');
  }
  c->p += n;
  *v = x;
  return 0;
}

static int expect(cursor *c, char ch) {
  if (c->p < c->end && *c->p == ch) {
    c->p++;
    return 0;
  }
  return -1;
}

static int fail(char *err, size_t errlen, const cursor *c, const char *what) {
  snprintf(err, errlen, "invalid timestamp \"%.*s\": %s at offset %zu", (int)(c->end - c->s > 40 ? 40 : c->end - c->s),
           c->s, what, (size_t)(c->p - c->s));
  return -1;
}

/* Seconds of y-m-d h:mi:s after range checks; -1 with err on a bad field. */
static int civil_seconds(int64_t y, int mo, int d, int h, int mi, int sec, double *out) {
  if (mo < 1 || mo > 12 || d < 1 || d > us_time_days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60)
    return -1;
  *out = (double)(us_time_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec);
  return 0;
}

int us_time_parse_iso8601(const char *s, size_t len, double *out, char *err, size_t errlen) {
  if (len == SIZE_MAX)
    len = strlen(s);
  cursor c = {s, s, s + len};
  int y, mo, d, h = 0, mi = 0, sec = 0;
  if (digits(&c, 4, &y) || expect(&c, '-') || digits(&c, 2, &mo) || expect(&c, '-') || digits(&c, 2, &d))
    return fail(err, errlen, &c, "expected YYYY-MM-DD");
  if (mo < 1 || mo > 12)
    return fail(err, errlen, &c, "month out of range");
  if (d < 1 || d > us_time_days_in_month(y, mo))
    return fail(err, errlen, &c, "day out of range for the month");
  double frac = 0, offset = 0;
  if (c.p == c.end) { /* date only: midnight UTC */
    civil_seconds(y, mo, d, 0, 0, 0, out);
    return 0;
  }
  if (*c.p != 'T' && *c.p != 't' && *c.p != ' ')
    return fail(err, errlen, &c, "expected 'T' after the date");
  c.p++;
  if (digits(&c, 2, &h) || expect(&c, ':') || digits(&c, 2, &mi))
    return fail(err, errlen, &c, "expected hh:mm");
  if (c.p < c.end && *c.p == ':') {
    c.p++;
    if (digits(&c, 2, &sec))
      return fail(err, errlen, &c, "expected seconds");
    if (c.p < c.end && (*c.p == '.' || *c.p == ',')) {
      c.p++;
      double scale = 0.1;
      const char *f = c.p;
      while (c.p < c.end && *c.p >= '0' && *c.p <= '9') {
        frac += (*c.p++ - '0') * scale;
        scale /= 10;
      }
      if (c.p == f)
        return fail(err, errlen, &c, "expected digits after the decimal point");
    }
  }
  if (h > 23 || mi > 59 || sec > 60)
    return fail(err, errlen, &c, "time of day out of range");
  if (c.p == c.end)
    return fail(err, errlen, &c, "missing time zone (Z or +hh:mm)");
  if (*c.p == 'Z' || *c.p == 'z') {
    c.p++;
  } else if (*c.p == '+' || *c.p == '-') {
    int sign = *c.p++ == '-' ? -1 : 1, oh, om = 0;
    if (digits(&c, 2, &oh))
      return fail(err, errlen, &c, "expected an offset hh:mm");
    if (c.p < c.end && *c.p == ':') {
      c.p++;
      if (digits(&c, 2, &om))
        return fail(err, errlen, &c, "expected offset minutes");
    } else if (c.p < c.end && digits(&c, 2, &om)) {
      return fail(err, errlen, &c, "expected offset minutes");
    }
    if (oh > 23 || om > 59)
      return fail(err, errlen, &c, "offset out of range");
    offset = sign * (oh * 3600 + om * 60);
  } else {
    return fail(err, errlen, &c, "expected Z or an offset");
  }
  if (c.p != c.end)
    return fail(err, errlen, &c, "unexpected text after the timestamp");
  double base;
  civil_seconds(y, mo, d, h, mi, sec, &base);
  *out = base - offset + frac;
  return 0;
}

/* Splits t (rounded to unit: 1000 for ms, 1 for whole seconds, truncating
** when trunc) into civil fields; -1 outside years 0..9999. */
static int split_time(double t, int64_t unit, int trunc, int64_t *y, int *mo, int *d, int *h, int *mi,
                      int *sec, int *ms) {
  if (!isfinite(t) || t < -62167219200.0 || t >= 253402300800.0)
    return -1;
  int64_t u = (int64_t)(trunc ? floor(t * (double)unit) : floor(t * (double)unit + 0.5));
  int64_t secs = u / unit, rem = u % unit;
  if (rem < 0) {
    rem += unit;
    secs--;
  }
  int64_t days = secs / 86400, sod = secs % 86400;
  if (sod < 0) {
    sod += 86400;
    days--;
  }
  us_time_civil_from_days(days, y, mo, d);
  if (*y < 0 || *y > 9999)
    return -1;
  *h = (int)(sod / 3600);
  *mi = (int)(sod / 60 % 60);
  *sec = (int)(sod % 60);
  *ms = (int)(unit == 1000 ? rem : 0);
  return 0;
}

int us_time_format_iso8601(double t, char *buf, size_t size) {
  int64_t y;
  int mo, d, h, mi, sec, ms;
  if (split_time(t, 1000, 0, &y, &mo, &d, &h, &mi, &sec, &ms))
    return -1;
  return snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", (int)y, mo, d, h, mi, sec, ms);
}

static const char *const wday_short[7] = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"}; /* from 1970-01-01 */
static const char *const wday_long[7] = {"Thursday", "Friday",  "Saturday", "Sunday",
                                         "Monday",   "Tuesday", "Wednesday"};
static const char *const months[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

int us_time_format_http_date(double t, char *buf, size_t size) {
  int64_t y;
  int mo, d, h, mi, sec, ms;
  if (split_time(t, 1, 1, &y, &mo, &d, &h, &mi, &sec, &ms))
    return -1;
  int64_t days = us_time_days_from_civil(y, mo, d);
  int wd = (int)(((days % 7) + 7) % 7);
  return snprintf(buf, size, "%s, %02d %s %04d %02d:%02d:%02d GMT", wday_short[wd], d, months[mo - 1], (int)y,
                  h, mi, sec);
}

/* Matches one of names[0..n) at the cursor; returns its index or -1. */
static int match_name(cursor *c, const char *const *names, int n) {
  for (int i = 0; i < n; i++) {
    size_t k = strlen(names[i]);
    if ((size_t)(c->end - c->p) >= k && memcmp(c->p, names[i], k) == 0) {
      c->p += k;
      return i;
    }
  }
  return -1;
}

/* "hh:mm:ss" */
static int hms(cursor *c, int *h, int *mi, int *sec) {
  return digits(c, 2, h) || expect(c, ':') || digits(c, 2, mi) || expect(c, ':') || digits(c, 2, sec);
}

int us_time_parse_http_date(const char *s, size_t len, double *out) {
  if (len == SIZE_MAX)
    len = strlen(s);
  cursor c = {s, s, s + len};
  int y, mo, d, h, mi, sec;
  if (match_name(&c, wday_long, 7) >= 0) { /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
    int yy;
    if (expect(&c, ',') || expect(&c, ' ') || digits(&c, 2, &d) || expect(&c, '-') ||
        (mo = match_name(&c, months, 12)) < 0 || expect(&c, '-') || digits(&c, 2, &yy) || expect(&c, ' ') ||
        hms(&c, &h, &mi, &sec) || expect(&c, ' ') || match_name(&c, (const char *const[]){"GMT"}, 1) < 0)
      return -1;
    y = yy < 70 ? 2000 + yy : 1900 + yy;
  } else if (match_name(&c, wday_short, 7) >= 0) {
    if (c.p < c.end && *c.p == ',') { /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
      c.p++;
      if (expect(&c, ' ') || digits(&c, 2, &d) || expect(&c, ' ') || (mo = match_name(&c, months, 12)) < 0 ||
          expect(&c, ' ') || digits(&c, 4, &y) || expect(&c, ' ') || hms(&c, &h, &mi, &sec) ||
          expect(&c, ' ') || match_name(&c, (const char *const[]){"GMT"}, 1) < 0)
        return -1;
    } else { /* asctime: Sun Nov  6 08:49:37 1994 */
      if (expect(&c, ' ') || (mo = match_name(&c, months, 12)) < 0 || expect(&c, ' '))
        return -1;
      if (c.p < c.end && *c.p == ' ') {
        c.p++;
        if (digits(&c, 1, &d))
          return -1;
      } else if (digits(&c, 2, &d)) {
        return -1;
      }
      if (expect(&c, ' ') || hms(&c, &h, &mi, &sec) || expect(&c, ' ') || digits(&c, 4, &y))
        return -1;
    }
  } else {
    return -1;
  }
  if (c.p != c.end)
    return -1;
  return civil_seconds(y, mo + 1, d, h, mi, sec, out);
}

int us_time_parse_duration(const char *s, size_t len, double *out, char *err, size_t errlen) {
  if (len == SIZE_MAX)
    len = strlen(s);
  const char *p = s, *end = s + len;
  double total = 0;
  int parts = 0;
  while (p < end) {
    const char *num = p;
    double v = 0, scale = 1;
    int seen = 0, dot = 0;
    while (p < end && ((*p >= '0' && *p <= '9') || (*p == '.' && !dot))) {
      if (*p == '.') {
        dot = 1;
      } else {
        seen = 1;
        if (dot) {
          scale /= 10;
          v += (*p - '0') * scale;
        } else {
          v = v * 10 + (*p - '0');
        }
      }
      p++;
    }
    if (!seen) {
      snprintf(err, errlen, "invalid duration \"%.*s\": expected a number at offset %zu", (int)(len > 40 ? 40 : len),
               s, (size_t)(num - s));
      return -1;
    }
    double unit;
    if (p == end && parts == 0) {
      unit = 1; /* bare number: seconds */
    } else if (end - p >= 2 && p[0] == 'm' && p[1] == 's') {
      unit = 0.001;
      p += 2;
    } else if (p < end && (*p == 's' || *p == 'm' || *p == 'h' || *p == 'd')) {
      unit = *p == 's' ? 1 : *p == 'm' ? 60 : *p == 'h' ? 3600 : 86400;
      p++;
    } else {
      snprintf(err, errlen, "invalid duration \"%.*s\": expected a unit (ms, s, m, h, d) at offset %zu",
               (int)(len > 40 ? 40 : len), s, (size_t)(p - s));
      return -1;
    }
    total += v * unit;
    parts++;
  }
  if (parts == 0) {
    snprintf(err, errlen, "invalid duration \"\": expected e.g. 30s, 5m, 1h30m, 7d");
    return -1;
  }
  if (!(total <= US_TIME_DURATION_MAX)) {
    snprintf(err, errlen, "invalid duration \"%.*s\": longer than %d days", (int)(len > 40 ? 40 : len),
             s, US_TIME_DURATION_MAX / 86400);
    return -1;
  }
  *out = total;
  return 0;
}

static double clock_seconds(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double us_time_now(void) { return clock_seconds(CLOCK_REALTIME); }
double us_time_monotonic(void) { return clock_seconds(CLOCK_MONOTONIC); }

void us_time_monotonic_after(struct timespec *ts, long ms) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

void us_time_sleep(double seconds) {
  if (!(seconds > 0))
    return;
  struct timespec ts;
  ts.tv_sec = (time_t)seconds;
  ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
  if (ts.tv_nsec >= 1000000000L)
    ts.tv_nsec = 999999999L;
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
    ;
}
