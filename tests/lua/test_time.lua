-- test_time.lua: usersync.time from scripts: RFC 3339 and HTTP dates in and
-- out, durations, clocks, and every failure path. Independent of TZ.
local test = require "tap"
local time = require "usersync.time"

test("header example of bind_time.c", function(t)
  local ts = assert(time.parse("2025-03-13T23:26:50.000Z"))
  t:eq(ts, 1741908410.0)
  t:eq(time.format(ts + 0.25), "2025-03-13T23:26:50.250Z")
  t:eq(time.parse("2025-03-14T01:26:50+02:00") == ts, true)
  t:eq(time.format_http_date(784111777), "Sun, 06 Nov 1994 08:49:37 GMT")
  t:eq(time.parse_duration("1h30m"), 5400)
  local ok, msg, code = time.parse("2025-02-29T00:00:00Z")
  t:eq(ok, nil); t:contains(msg, "invalid timestamp"); t:eq(code, "ETIME")
end)

test("offsets and fractions", function(t)
  local base = time.parse("2025-03-13T23:26:50Z")
  t:eq(time.parse("2025-03-13T18:26:50-05:00"), base)
  t:eq(time.parse("2025-03-14T05:56:50+0630"), base)
  t:eq(time.parse("2025-03-13T23:26:50.5Z"), base + 0.5)
  t:eq(time.format(time.parse("2025-03-13T23:26:50.123+01:00")), "2025-03-13T22:26:50.123Z")
  t:eq(time.format(time.parse("2025-03-13T23:26:50.9999Z")), "2025-03-13T23:26:51.000Z")
  t:eq(time.parse("2025-03-13"), time.parse("2025-03-13T00:00:00Z"))
  t:eq(time.format(time.parse("2025-12-31T23:30:00-01:00")), "2026-01-01T00:30:00.000Z")
end)

test("leap years", function(t)
  t:eq(time.format(time.parse("2024-02-28T12:00:00Z") + 86400), "2024-02-29T12:00:00.000Z")
  t:eq(time.format(time.parse("2025-02-28T12:00:00Z") + 86400), "2025-03-01T12:00:00.000Z")
  t:eq(time.parse("2000-02-29T00:00:00Z"), 951782400.0)
  t:eq(time.parse("1900-02-29T00:00:00Z"), nil)
  t:eq(time.parse("2100-02-29"), nil)
  t:eq(time.parse("2400-02-29") ~= nil, true)
end)

test("bad dates return nil, msg, ETIME", function(t)
  for _, s in ipairs {
    "", "yesterday", "2025-13-01T00:00:00Z", "2025-04-31T00:00:00Z", "2025-03-13T24:00:00Z",
    "2025-03-13T23:26:50", "2025-03-13T23:26:50+25:00", "2025-03-13T23:26:50Z ", "2025/03/13",
    "Thu, 13 Mar 2025 23:26:50 GMT",
  } do
    local ok, msg, code = time.parse(s)
    t:eq(ok, nil, s); t:eq(code, "ETIME", s); t:contains(msg, "invalid timestamp", s)
  end
  local _, msg = time.parse("2025-03-13T23:26:50")
  t:contains(msg, "missing time zone")
  t:raises(function() time.parse({}) end, "bad argument")
end)

test("format: defaults, range, misuse", function(t)
  t:match(time.format(), "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$")
  t:eq(time.format(0), "1970-01-01T00:00:00.000Z")
  t:eq(time.format(-1.5), "1969-12-31T23:59:58.500Z")
  local ok, msg, code = time.format(1e12)
  t:eq(ok, nil); t:contains(msg, "outside years"); t:eq(code, "ETIME")
  t:raises(function() time.format(0 / 0) end, "finite")
  t:raises(function() time.format("soon") end, "number expected")
end)

test("HTTP dates", function(t)
  t:eq(time.parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), 784111777)
  t:eq(time.parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), 784111777)
  t:eq(time.parse_http_date("Sun Nov  6 08:49:37 1994"), 784111777)
  local now = time.now()
  t:eq(time.parse_http_date(time.format_http_date(now)), math.floor(now))
  t:match(time.format_http_date(), "^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$")
  local ok, msg, code = time.parse_http_date("120")
  t:eq(ok, nil); t:contains(msg, "invalid HTTP date"); t:eq(code, "ETIME")
  ok, _, code = time.parse_http_date("Sun, 06 Nov 1994 08:49:37 CET")
  t:eq(ok, nil); t:eq(code, "ETIME")
end)

test("durations", function(t)
  t:eq(time.parse_duration("30m"), 1800); t:eq(math.type(time.parse_duration("30m")), "integer")
  t:eq(time.parse_duration("7d"), 604800)
  t:eq(time.parse_duration("1m"), 60)
  t:eq(time.parse_duration("90s"), 90)
  t:eq(time.parse_duration("1.5h"), 5400)
  t:eq(time.parse_duration("250ms"), 0.25)
  t:eq(time.parse_duration("10"), 10)
  for _, s in ipairs { "", "soon", "1w", "1h30", "-1s", "1 h" } do
    local ok, msg, code = time.parse_duration(s)
    t:eq(ok, nil, s); t:eq(code, "ETIME", s); t:contains(msg, "invalid duration", s)
  end
end)

test("clocks and sleep", function(t)
  local w = time.now()
  t:ok(w > 1.7e9, "wall clock is the epoch")
  t:ok(math.abs(w * 1000 - math.floor(w * 1000 + 0.5)) < 1e-3, "millisecond precision")
  local m0 = time.monotonic()
  time.sleep(0.05)
  local dt = time.monotonic() - m0
  t:ok(dt >= 0.049 and dt < 5, "slept about 50 ms: " .. dt)
  time.sleep(0)
  t:raises(function() time.sleep(-1) end, "seconds must be")
  t:raises(function() time.sleep("x") end, "number expected")
  t:ok(math.abs(time.parse(time.format(w)) - w) < 0.001, "now survives format/parse")
end)

return test.done()
