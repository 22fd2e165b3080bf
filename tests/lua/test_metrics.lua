-- test_metrics.lua: usersync.metrics, the process-wide Prometheus registry,
-- as scripts use it: declaring, counting, rendering, and the misuse that raises.
local test = require "tap"
local metrics = require "usersync.metrics"

-- Parses exposition text into { samples = { ["name{labels}"] = value }, help = {}, type = {} }.
local function parse(text)
  local out = { samples = {}, help = {}, type = {}, order = {} }
  for line in text:gmatch("[^\n]+") do
    local name, rest = line:match("^# HELP (%S+) ?(.*)$")
    if name then
      assert(not out.help[name], "HELP twice for " .. name)
      out.help[name] = rest
    else
      local tname, t = line:match("^# TYPE (%S+) (%S+)$")
      if tname then
        assert(not out.type[tname], "TYPE twice for " .. tname)
        out.type[tname] = t
        out.order[#out.order + 1] = tname
      else
        local series, value = line:match("^(%S+) (%S+)$")
        assert(series, "bad sample line: " .. line)
        out.samples[series] = tonumber(value) or value
      end
    end
  end
  return out
end

test("counters, gauges and histograms render as Prometheus text", function(t)
  metrics.reset()
  metrics.describe("usersync_runs_total", "counter", "Sync runs by sync and outcome")
  t:eq(metrics.add("usersync_runs_total", { sync = "jira", outcome = "ok" }), true)
  metrics.add("usersync_runs_total", { outcome = "ok", sync = "jira" }, 2)
  metrics.add("usersync_runs_total", { sync = "jira", outcome = "failed" })
  metrics.set("usersync_okta_budget_remaining", { bucket = "/api/v1/users" }, 598)
  metrics.set("usersync_okta_budget_remaining", { bucket = "/api/v1/users" }, 597)
  metrics.observe("usersync_run_duration_seconds", { sync = "jira" }, 0.3)
  metrics.observe("usersync_run_duration_seconds", { sync = "jira" }, 45)
  metrics.add("usersync_ops_total", { code = 404 }, 1) -- numbers as label values
  local m = parse(metrics.render())
  t:eq(m.help.usersync_runs_total, "Sync runs by sync and outcome")
  t:eq(m.type.usersync_runs_total, "counter")
  t:eq(m.samples['usersync_runs_total{outcome="ok",sync="jira"}'], 3)
  t:eq(m.samples['usersync_runs_total{outcome="failed",sync="jira"}'], 1)
  t:eq(m.type.usersync_okta_budget_remaining, "gauge")
  t:eq(m.samples['usersync_okta_budget_remaining{bucket="/api/v1/users"}'], 597)
  t:eq(m.type.usersync_run_duration_seconds, "histogram")
  t:eq(m.samples['usersync_run_duration_seconds_bucket{sync="jira",le="0.1"}'], 0)
  t:eq(m.samples['usersync_run_duration_seconds_bucket{sync="jira",le="0.5"}'], 1)
  t:eq(m.samples['usersync_run_duration_seconds_bucket{sync="jira",le="30"}'], 1)
  t:eq(m.samples['usersync_run_duration_seconds_bucket{sync="jira",le="60"}'], 2)
  t:eq(m.samples['usersync_run_duration_seconds_bucket{sync="jira",le="+Inf"}'], 2)
  t:eq(m.samples['usersync_run_duration_seconds_sum{sync="jira"}'], 45.3)
  t:eq(m.samples['usersync_run_duration_seconds_count{sync="jira"}'], 2)
  t:eq(m.samples['usersync_ops_total{code="404"}'], 1)
  t:eq(m.help.usersync_ops_total, nil, "auto-declared: no HELP line")
  -- families in sorted order
  local sorted = {}
  for i, n in ipairs(m.order) do sorted[i] = n end
  table.sort(sorted)
  t:same(m.order, sorted)
end)

test("label values are escaped", function(t)
  metrics.reset()
  metrics.add("usersync_x_total", { v = 'a\\b"c\nd' })
  t:contains(metrics.render(), 'usersync_x_total{v="a\\\\b\\"c\\nd"} 1\n')
end)

test("misuse raises", function(t)
  metrics.reset()
  t:raises(function() metrics.add("runs_total") end, "usersync_")
  t:raises(function() metrics.add("usersync_Bad") end, "invalid")
  t:raises(function() metrics.add("usersync_x_total", nil, -1) end, "invalid")
  t:raises(function() metrics.add("usersync_x_total", { ["bad-label"] = "v" }) end, "invalid")
  t:raises(function() metrics.add("usersync_x_total", { [1] = "v" }) end, "label names")
  t:raises(function() metrics.add("usersync_x_total", { k = {} }) end, "string or number")
  t:raises(function() metrics.describe("usersync_x_total", "summary", "") end, "invalid option")
  t:raises(function() metrics.set("usersync_x_total", nil) end, "number expected")
  metrics.add("usersync_x_total")
  t:raises(function() metrics.set("usersync_x_total", nil, 1) end, "another type")
  t:raises(function() metrics.observe("usersync_x_total", nil, 1) end, "another type")
  t:raises(function() metrics.describe("usersync_x_total", "gauge", "") end, "another type")
  t:raises(function() metrics.observe("usersync_h", { le = "1" }, 1) end, "invalid")
end)

test("series beyond the limit are dropped and counted", function(t)
  metrics.reset()
  metrics.series_limit(3)
  local kept = 0
  for i = 1, 10 do
    if metrics.add("usersync_users_total", { user = "u" .. i }) then kept = kept + 1 end
  end
  t:eq(kept, 3)
  local m = parse(metrics.render())
  t:eq(m.samples['usersync_metrics_dropped_total{family="usersync_users_total"}'], 7)
  local n = 0
  for k in pairs(m.samples) do
    if k:find("^usersync_users_total{") then n = n + 1 end
  end
  t:eq(n, 3)
  metrics.reset()
  t:eq(metrics.render(), "")
end)

return test.done()
