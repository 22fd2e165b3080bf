/*
** bind_time.c: `require "usersync.time"`, clocks, timestamps and durations
** for scripts. Uses the C core in runtime/timeutil.c (include/usersync/timeutil.h);
** nothing here depends on the local time zone.
**
**   local time = require "usersync.time"
**   local t = assert(time.parse("2025-03-13T23:26:50.000Z"))   --> 1741908410.0
**   print(time.format(t + 0.25))                  --> 2025-03-13T23:26:50.250Z
**   print(time.parse("2025-03-14T01:26:50+02:00") == t)         --> true
**   print(time.format_http_date(784111777))       --> Sun, 06 Nov 1994 08:49:37 GMT
**   print(time.parse_duration("1h30m"))           --> 5400
**   print(time.parse("2025-02-29T00:00:00Z"))     --> nil  invalid timestamp ...  ETIME
**
** API (t: seconds since the Unix epoch, a float; UTC throughout):
**   time.now() -> t                 wall clock, millisecond precision
**   time.monotonic() -> seconds     monotonic clock (for measuring intervals)
**   time.parse(s) -> t | nil, msg, "ETIME"
**       RFC 3339 / ISO-8601: "2025-03-13T23:26:50.000Z", offsets "+02:00",
**       "+0200", "-05", fractions of any length, "T" or " ", a date alone
**       ("2025-03-13" = midnight UTC). A date-time without a zone is an error.
**   time.format([t]) -> "YYYY-MM-DDTHH:MM:SS.sssZ"   (t defaults to now; rounded
**       to the millisecond) | nil, msg, "ETIME" outside years 0000..9999
**   time.parse_http_date(s) -> t | nil, msg, "ETIME"
**       IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT" (also RFC 850 and asctime)
**   time.format_http_date([t]) -> "Sun, 06 Nov 1994 08:49:37 GMT" | nil, msg, "ETIME"
**   time.sleep(seconds)             blocks the whole process; 0 returns at once
**   time.parse_duration(s) -> seconds | nil, msg, "ETIME"
**       "30s", "5m", "1h30m", "7d", "1.5h", "250ms", or a bare number of
**       seconds; an integer when the result is whole, else a float.
** Misuse (a non-string to parse, a non-number to format, a negative or NaN
** sleep) raises.
*/
#include <math.h>

#include <lauxlib.h>
#include <lua.h>

#include "usersync/modules.h"
#include "usersync/timeutil.h"

static int time_fail(lua_State *L, const char *msg) {
  luaL_pushfail(L);
  lua_pushstring(L, msg);
  lua_pushliteral(L, "ETIME");
  return 3;
}

static int time_now(lua_State *L) {
  lua_pushnumber(L, floor(us_time_now() * 1000.0) / 1000.0);
  return 1;
}

static int time_monotonic(lua_State *L) {
  lua_pushnumber(L, us_time_monotonic());
  return 1;
}

static int time_parse(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char err[US_TIME_ERRLEN];
  double t;
  if (us_time_parse_iso8601(s, len, &t, err, sizeof err))
    return time_fail(L, err);
  lua_pushnumber(L, t);
  return 1;
}

/* Argument 1 as a finite time, or now when absent. */
static double opt_time(lua_State *L) {
  if (lua_isnoneornil(L, 1))
    return us_time_now();
  double t = luaL_checknumber(L, 1);
  luaL_argcheck(L, isfinite(t), 1, "time must be finite");
  return t;
}

static int time_format(lua_State *L) {
  double t = opt_time(L);
  char buf[US_TIME_BUFLEN];
  int n = us_time_format_iso8601(t, buf, sizeof buf);
  if (n < 0)
    return time_fail(L, lua_pushfstring(L, "time %f is outside years 0000..9999", t));
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

static int time_parse_http_date(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  double t;
  if (us_time_parse_http_date(s, len, &t))
    return time_fail(L, lua_pushfstring(L, "invalid HTTP date \"%s\" (expected e.g. \"Sun, 06 Nov 1994 08:49:37 GMT\")",
                                        len > 60 ? "(too long to show)" : s));
  lua_pushnumber(L, t);
  return 1;
}

static int time_format_http_date(lua_State *L) {
  double t = opt_time(L);
  char buf[US_TIME_BUFLEN];
  int n = us_time_format_http_date(t, buf, sizeof buf);
  if (n < 0)
    return time_fail(L, lua_pushfstring(L, "time %f is outside years 0000..9999", t));
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

static int time_sleep(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  luaL_argcheck(L, s >= 0 && s < 1e9, 1, "seconds must be between 0 and 1e9");
  us_time_sleep(s);
  return 0;
}

static int time_parse_duration(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char err[US_TIME_ERRLEN];
  double v;
  if (us_time_parse_duration(s, len, &v, err, sizeof err))
    return time_fail(L, err);
  if (v == floor(v) && v < 9e15)
    lua_pushinteger(L, (lua_Integer)v);
  else
    lua_pushnumber(L, v);
  return 1;
}

static const luaL_Reg time_funcs[] = {
    {"now", time_now},
    {"monotonic", time_monotonic},
    {"parse", time_parse},
    {"format", time_format},
    {"parse_http_date", time_parse_http_date},
    {"format_http_date", time_format_http_date},
    {"sleep", time_sleep},
    {"parse_duration", time_parse_duration},
    {NULL, NULL},
};

int luaopen_usersync_time(lua_State *L) {
  luaL_newlib(L, time_funcs);
  return 1;
}
