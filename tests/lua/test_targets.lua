-- The target registry (usersync.targets): one table per fact about targets,
-- and every reader agrees with it: the C product list, each target's own
-- capabilities, config validation's type list, the planner's order and
-- capabilities, and the order target:apply sends ops in.
local test = require "tap"
local targets = require "usersync.targets"
local target = require "usersync.target"
local http = require "usersync.http"
local plan = require "usersync.plan"
local config = require "usersync.config"

test("the products and their capabilities come from the C list", function(t)
  t:same(targets.TYPES, { "jira", "confluence", "bitbucket", "crowd", "scim" })
  local hc <close> = http.client{}
  for _, p in ipairs(target.products()) do
    local tg <close> = target.new(hc, { type = p.type, url = "http://127.0.0.1:9", token = "x" })
    t:same(targets.CAPS[p.type], tg:capabilities(), p.type)
    t:same(p.caps, tg:capabilities(), p.type)
  end
  t:same(targets.CAPS.bitbucket.deactivate, false)
  t:same(targets.CAPS.confluence.rename, false)
  t:same(targets.CAPS.jira.leads, true)
  -- a flavour's capabilities (SCIM's Atlassian Cloud cannot rename) come from the C list too
  local tg <close> = target.new(hc, { type = "scim", flavour = "atlassian", url = "http://127.0.0.1:9",
                                      token = "x" })
  t:same(targets.FLAVOURS.scim.atlassian, tg:capabilities())
  t:same(targets.caps("scim", "atlassian").rename, false)
  t:same(targets.caps("scim").rename, true)
  t:same(targets.FLAVOURS.jira, {})
  t:raises(function() target.new(hc, { type = "jira", flavour = "atlassian", url = "http://x", token = "x" }) end,
    "unknown flavour")
end)

test("the planner and config read the registry", function(t)
  t:eq(plan.ORDER, targets.ORDER)
  t:eq(plan.RANK, targets.RANK)
  t:eq(plan.CAPS, targets.CAPS)
  for i, k in ipairs(targets.ORDER) do t:eq(targets.RANK[k], i, k) end
  local function check_type(ty)
    local _, errors = config.validate({
      sources = { okta = { type = "okta", url = "https://x.okta.com", token = "t0ken-value" } },
      targets = { t1 = ty == "crowd" and { type = ty, url = "https://t1", application = "usersync", password = "pw-value" }
                    or { type = ty, url = "https://t1", token = "pat-value" } },
      sync = { { name = "main", source = "okta", targets = { "t1" } } },
    })
    return errors
  end
  for _, ty in ipairs(targets.TYPES) do t:same(check_type(ty), {}, ty) end
  local errors = check_type("gitlab")
  t:eq(#errors, 1)
  t:contains(errors[1], "targets.t1.type")
  t:raises(function() target.new(http.client{}, { type = "gitlab", url = "http://h", token = "x" }) end,
           "unknown type")
end)

test("apply reads its kinds from the registry: links need no request, unknown kinds raise", function(t)
  -- ops that need no server: links report "no request needed" in plan order
  local hc <close> = http.client{}
  local tg <close> = target.new(hc, { type = "jira", url = "http://127.0.0.1:9", token = "x" })
  local seen = {}
  local r = tg:apply({ { kind = "link", name = "b" }, { kind = "link", name = "a" } },
                     function(op, ok, note) seen[#seen + 1] = { op.name, ok, note } end)
  t:same(seen, { { "b", true, "no request needed" }, { "a", true, "no request needed" } })
  t:eq(r.ok, 2)
  t:raises(function() tg:apply({ { kind = "explode" } }) end, "unknown kind 'explode'")
  t:raises(function() tg:apply({ { kind = "RANK" } }) end, "unknown kind")
end)

test("a target's failures name their source: err table, apply results and callbacks", function(t)
  local hc <close> = http.client{ retries = 0 }
  local tg <close> = target.new(hc, { type = "confluence", url = "http://127.0.0.1:9", token = "x" })
  local ok, msg, code, err = tg:delete_group("g")
  t:eq(ok, nil)
  t:eq(code, "ECONNREFUSED")
  t:same(err, { source = "confluence", code = code, status = 0, message = msg })
  local r = tg:apply({ { kind = "create_group", group = "g" } })
  t:eq(r.failed, 1)
  t:eq(r.results[1].source, "confluence")
  t:eq(r.results[1].code, "ECONNREFUSED")
  local got
  tg:apply({ { kind = "create_group", group = "g" } }, function(_, _, _, _, e) got = e end)
  t:eq(got.source, "confluence")
  t:eq(got.code, "ECONNREFUSED")
end)

test("a callback's error comes back with its traceback (the one message handler)", function(t)
  local hc <close> = http.client{}
  local tg <close> = target.new(hc, { type = "jira", url = "http://127.0.0.1:9", token = "x" })
  local ok, msg, code = tg:apply({ { kind = "link", name = "a" } }, function() error("boom") end)
  t:eq(ok, nil); t:eq(code, "ECALLBACK")
  t:contains(msg, "apply callback failed: ")
  t:contains(msg, "boom")
  t:contains(msg, "stack traceback:")
  ok, msg, code = tg:apply({ { kind = "link", name = "a" } }, function() error({ why = 1 }) end)
  t:eq(code, "ECALLBACK")
  t:contains(msg, "(error object is a table value)")
end)

test("what a product lacks (its caps) ends EUNSUPPORTED without a request", function(t)
  local hc <close> = http.client{ retries = 0 }
  local calls = {
    deactivate = function(tg) return tg:deactivate_user("bob") end,
    reactivate = function(tg) return tg:reactivate_user("bob") end,
    rename = function(tg) return tg:rename_user("bob", "rob") end,
  }
  local refused = 0
  local kinds = {}
  for _, ty in ipairs(targets.TYPES) do kinds[#kinds + 1] = { ty } end
  kinds[#kinds + 1] = { "scim", "atlassian" }
  for _, k in ipairs(kinds) do
    local ty, caps = k[1], targets.caps(k[1], k[2])
    local tg <close> = target.new(hc, { type = ty, flavour = k[2], url = "http://127.0.0.1:9", token = "x" })
    for cap, call in pairs(calls) do
      local ok, msg, code = call(tg)
      if caps[cap] then
        t:eq(code, "ECONNREFUSED", ty .. " " .. cap .. " is sent")
      else
        refused = refused + 1
        t:eq(ok, nil); t:eq(code, "EUNSUPPORTED", ty .. " " .. cap); t:contains(msg, ty .. ": ")
      end
    end
    local sent = 0
    for cap in pairs(calls) do if caps[cap] then sent = sent + 1 end end
    -- SCIM: the account's id (a lookup by userName) and the provider's PATCH support
    -- (ServiceProviderConfig) are read at once, neither known yet here
    if ty == "scim" then sent = sent * 2 end
    t:eq(tg:requests(), sent, ty .. ": the requests of the supported calls, none for the others")
  end
  t:eq(refused, 4, "bitbucket: deactivate, reactivate; confluence: rename; scim (atlassian): rename")
end)

return test.done()
