/*
** timeutil.h: timestamps and durations without the local time zone.
**
** The C core behind `require "usersync.time"`; the HTTP client uses
** us_time_parse_http_date for `Date` and `Retry-After`. Times are seconds
** since the Unix epoch (UTC) as double; calendar arithmetic is proleptic
** Gregorian through days-from-civil, so nothing depends on TZ or the locale.
**
**   double t;
**   char err[US_TIME_ERRLEN], buf[US_TIME_BUFLEN];
**   if (us_time_parse_iso8601("2025-03-14T01:26:50.5+02:00", SIZE_MAX, &t, err, sizeof err) == 0)
**     us_time_format_iso8601(t, buf, sizeof buf);   // "2025-03-13T23:26:50.500Z"
**   us_time_parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT", SIZE_MAX, &t);  // 784111777
**
** Functions that take (s, len) accept len == SIZE_MAX for a NUL-terminated s.
*/
#ifndef USERSYNC_TIMEUTIL_H
#define USERSYNC_TIMEUTIL_H
#include <stddef.h>
#include <stdint.h>

#define US_TIME_ERRLEN 128
#define US_TIME_BUFLEN 32

/* Days since 1970-01-01 of the civil date y-m-d (m 1..12, d 1..31). */
int64_t us_time_days_from_civil(int64_t y, int m, int d);
/* Inverse of us_time_days_from_civil. */
void us_time_civil_from_days(int64_t days, int64_t *y, int *m, int *d);
/* 1 if y is a Gregorian leap year. Days in month m of year y. */
int us_time_is_leap(int64_t y);
int us_time_days_in_month(int64_t y, int m);

/* Parses an RFC 3339 / ISO-8601 timestamp:
**   YYYY-MM-DD                      (midnight UTC)
**   YYYY-MM-DD(T|t| )hh:mm[:ss[.fraction]](Z|z|+hh:mm|-hh:mm|+hhmm|+hh)
** e.g. Okta's "2025-03-13T23:26:50.000Z". A date-time without a zone is
** rejected (it would mean local time). Seconds may be 60 (a leap second, read
** as the first second of the next minute). Returns 0 and stores *out, or -1
** with a message in err naming what is wrong and where. */
int us_time_parse_iso8601(const char *s, size_t len, double *out, char *err, size_t errlen);

/* Writes t as "YYYY-MM-DDTHH:MM:SS.sssZ" (UTC, rounded to the millisecond)
** into buf (at least US_TIME_BUFLEN bytes). Returns the length, or -1 when t
** is not finite or falls outside years 0000..9999. */
int us_time_format_iso8601(double t, char *buf, size_t size);

/* Parses an HTTP date (RFC 9110 section 5.6.7): IMF-fixdate
** "Sun, 06 Nov 1994 08:49:37 GMT", and the obsolete RFC 850
** "Sunday, 06-Nov-94 08:49:37 GMT" (two-digit years: 70..99 -> 19xx,
** 00..69 -> 20xx) and asctime "Sun Nov  6 08:49:37 1994" forms. Returns 0
** and stores *out (whole seconds), or -1. */
int us_time_parse_http_date(const char *s, size_t len, double *out);

/* Writes t as an IMF-fixdate (whole seconds, truncated) into buf (at least
** US_TIME_BUFLEN bytes). Returns the length, or -1 as us_time_format_iso8601. */
int us_time_format_http_date(double t, char *buf, size_t size);

/* The longest duration us_time_parse_duration accepts: 3650 days. */
#define US_TIME_DURATION_MAX (3650 * 86400)

/* Parses a duration: one or more <number><unit> with unit ms, s, m, h or d
** ("1h30m", "90s", "1.5h", "7d", "250ms"), or a bare number of seconds, at
** most US_TIME_DURATION_MAX. The one duration grammar: config validation
** (through usersync.time) and every runtime reader use it. Returns 0 and
** stores the seconds in *out, or -1 with a message in err. */
int us_time_parse_duration(const char *s, size_t len, double *out, char *err, size_t errlen);

/* Wall clock (CLOCK_REALTIME) and monotonic clock, in seconds. The one
** place the code reads either clock. */
double us_time_now(void);
double us_time_monotonic(void);

/* *ts = the monotonic clock ms milliseconds from now (0: now), as a
** timespec: the deadline of a pthread condition variable whose clock is
** CLOCK_MONOTONIC (pthread_condattr_setclock). */
struct timespec;
void us_time_monotonic_after(struct timespec *ts, long ms);

/* Sleeps for the given seconds (<= 0: returns at once), resuming after
** signals until the whole time has passed. */
void us_time_sleep(double seconds);

#endif
