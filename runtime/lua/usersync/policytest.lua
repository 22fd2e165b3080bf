-- usersync.policytest: `usersync test FILE...`, policy tests, and
-- `usersync test --record FIXTURE.json USER...`, which records real Okta
-- users for them.
--
-- A test file is Lua run in the sandbox (the allow-listed, strict
-- environment policies run in) with these globals:
--   usersync.policy(PATH [, settings])  the policy at PATH (relative to the
--        test file; nil: the default policy alone) with the default hooks
--        filled in, for a sync entry with `settings` (groups, defaults,
--        users, attributes, deprovision...; validated as the config is).
--        Its hooks take a sync's arguments, ctx optional: p.user(u [, ctx]),
--        p.include_group(g [, ctx]), p.groups(u, groups [, ctx]),
--        p.default_groups(account, is_new [, ctx]), p.deprovision(account,
--        reason [, ctx]); a hook that fails raises its message (file:line).
--        p.account(u, groups [, { is_new = true, ctx }]) is the whole way:
--        the account the user hook gives with .groups, the sorted target
--        groups (groups that count, the groups hook, the default groups);
--        nil when the user is left out. ctx: a default one (target "jira"
--        of type "jira", these settings), or a table overriding its fields
--        ({ target_type = "confluence" }); usersync.context{...} builds one.
--   usersync.user{ login = ..., status = "ACTIVE", id = ..., <profile fields> }
--   usersync.group(NAME [, { id, type }])      hand-written Okta objects
--   usersync.fixture(PATH)   recorded users and groups: .users, .groups,
--        :user(login or id), :groups_of(user)
--   test(NAME, fn)           one TAP line for the assertions inside fn
--   expect(v).to_be(w)       equality (==)
--   expect(t).to_equal(u)    deep equality of plain data
--   expect(x).to_contain(y)  a list holding y, or a string holding y
--   expect(fn).to_fail([text])  fn raises (an error containing text)
-- An assertion outside test() is its own TAP line.
local sandbox = require "usersync.sandbox"
local policy = require "usersync.policy"
local plan = require "usersync.plan"
local json = require "usersync.json"
local secrets = require "usersync.secrets"

local M = {}

local EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

-- What one test file's code may spend: per call (the whole file is one
-- call) and its memory.
M.LIMITS = { instructions = 500 * 1000 * 1000, memory = 256 * 1024 * 1024 }

---------------------------------------------------------------- values

local function deep_equal(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do if not deep_equal(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

-- A short readable form of a value for a failure message.
local function show(v, depth)
  depth = depth or 0
  if type(v) == "string" then return ("%q"):format(v) end
  if type(v) ~= "table" then return tostring(v) end
  if depth > 2 then return "{...}" end
  local parts, n = {}, 0
  for i, x in ipairs(v) do parts[#parts + 1] = show(x, depth + 1); n = i end
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(x, y) return tostring(x) < tostring(y) end)
  for _, k in ipairs(keys) do
    local key = (type(k) == "string" and k:match("^[%a_][%w_]*$")) and k or ("[" .. show(k) .. "]")
    parts[#parts + 1] = key .. " = " .. show(v[k], depth + 1)
  end
  return "{ " .. table.concat(parts, ", ") .. " }"
end

local function dir_of(path) return path:match("^(.*)/[^/]*$") or "." end

local function resolve(base_dir, path)
  if path:sub(1, 1) == "/" then return path end
  return base_dir .. "/" .. path
end

---------------------------------------------------------------- the runner

-- A run over several files: TAP numbering and the counts.
local Runner = {}
Runner.__index = Runner

function M.runner(write)
  return setmetatable({ n = 0, passed = 0, failed = 0, write = write or io.write }, Runner)
end

-- A test's name on its TAP line: a line break would start a line of its
-- own ("ok 99 - ..." forged by a name) and a "#" a directive ("# TODO"
-- makes a failure count as none), so both are written escaped.
local function tap_text(name)
  return (tostring(name):gsub("\r\n", "\n"):gsub("[\r\n]", { ["\r"] = "\\r", ["\n"] = "\\n" }):gsub("#", "\\#"))
end
M.tap_text = tap_text

function Runner:line(ok, name, details)
  self.n = self.n + 1
  if ok then self.passed = self.passed + 1 else self.failed = self.failed + 1 end
  self.write(("%s %d - %s\n"):format(ok and "ok" or "not ok", self.n, tap_text(name)))
  for _, d in ipairs(details or {}) do
    self.write("#   " .. secrets.mask(tostring(d)):gsub("\n", "\n#   ") .. "\n")
  end
end

function Runner:finish()
  self.write(("1..%d\n"):format(self.n))
  self.write(("%d passed, %d failed\n"):format(self.passed, self.failed))
  return (self.failed == 0 and self.n > 0) and EXIT_OK or EXIT_FAILED
end

-- Where the test file called an assertion: "file.lua:12".
local function caller(file)
  for level = 3, 12 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    if info.source == "@" .. file then return ("%s:%d"):format(file, info.currentline) end
  end
  return file
end

-- The globals of one test file: the assertions report to `runner`.
local function file_globals(runner, file)
  local current -- the test() running: { failures = {} }, or nil

  local function report(ok, what, why)
    local where = caller(file)
    if current then
      if not ok then current.failures[#current.failures + 1] = where .. ": " .. what .. ": " .. why end
    else
      runner:line(ok, where .. ": " .. what, ok and nil or { why })
    end
    return ok
  end

  local function expect(v)
    local e = {}
    function e.to_be(w)
      return report(v == w, "to_be(" .. show(w) .. ")", "expected " .. show(w) .. ", got " .. show(v))
    end
    function e.to_equal(w)
      return report(deep_equal(v, w), "to_equal(" .. show(w) .. ")", "expected " .. show(w) .. ", got " .. show(v))
    end
    function e.to_contain(x)
      local ok = false
      if type(v) == "string" and type(x) == "string" then
        ok = v:find(x, 1, true) ~= nil
      elseif type(v) == "table" then
        for _, y in ipairs(v) do ok = ok or deep_equal(y, x) end
      end
      return report(ok, "to_contain(" .. show(x) .. ")", "expected " .. show(v) .. " to contain " .. show(x))
    end
    function e.to_fail(text)
      if type(v) ~= "function" then
        return report(false, "to_fail()", "expect(fn).to_fail() needs a function, got " .. type(v))
      end
      local ok, err = pcall(v)
      if ok then return report(false, "to_fail()", "expected an error, the function returned") end
      err = tostring(err)
      if text and not err:find(text, 1, true) then
        return report(false, "to_fail(" .. show(text) .. ")", "expected an error containing " .. show(text) .. ", got " .. show(err))
      end
      return report(true, "to_fail(" .. (text and show(text) or "") .. ")")
    end
    return e
  end

  local function test(name, fn)
    if type(name) ~= "string" or type(fn) ~= "function" then error("test(NAME, function) expected", 2) end
    if current then error("test() inside test() is not supported", 2) end
    current = { failures = {} }
    local ok, err = pcall(fn)
    local t = current
    current = nil
    if not ok then t.failures[#t.failures + 1] = "error: " .. tostring(err) end
    runner:line(#t.failures == 0, name, t.failures)
  end

  return { test = test, expect = expect }
end

---------------------------------------------------------------- the API

-- A sync entry from test settings, validated and completed as the config
-- is (the name, source and target are the test's own).
local function sync_entry(settings)
  local entry = { name = "test", source = "okta", targets = { "jira" } }
  for k, v in pairs(settings or {}) do
    if k ~= "targets" and k ~= "source" then entry[k] = v end
  end
  entry.policy = nil
  local cfg, errors = require("usersync.config").validate({
    sources = { okta = { type = "okta", url = "https://test.okta.com", token = "policy-test-token" } },
    targets = { jira = { type = "jira", url = "https://jira.test", token = "policy-test-token" } },
    sync = { entry } })
  if #errors > 0 then
    for i, e in ipairs(errors) do errors[i] = (e:gsub("^sync%[1%]%.", "settings.")) end
    error("usersync.policy: bad settings: " .. table.concat(errors, "; "), 3)
  end
  return cfg.sync[1]
end

-- A hook context: the default one for `entry` (target "jira", type
-- "jira"), with the fields of `over` in its place.
local function context(entry, over)
  if type(over) == "table" and type(over.is_active) == "function" and over.settings then return over end
  over = over or {}
  local ttype = over.target_type or "jira"
  local ctx = plan.context{ sync = entry, target = { name = over.target or ttype, type = ttype },
                            status_map = over.status_map }
  for k, v in pairs(over) do
    if k ~= "status_map" then ctx[k] = v end
  end
  if over.settings then ctx.settings = sync_entry(over.settings) end
  return ctx
end

local function raise(r, err)
  if err then error(err, 0) end
  return r
end

-- usersync.policy(PATH [, settings]) for a test file in `dir`.
local function load_policy(dir, path, settings)
  local entry = sync_entry(settings)
  local pol, err = policy.load(path and resolve(dir, path) or nil)
  if not pol then error(err, 2) end
  local p = {}
  function p.user(u, ctx) return raise(pol:user(u, context(entry, ctx))) end
  function p.include_group(g, ctx) return raise(pol:include_group(g, context(entry, ctx))) end
  function p.groups(u, groups, ctx) return raise(pol:groups(u, groups or {}, context(entry, ctx))) end
  function p.default_groups(a, is_new, ctx) return raise(pol:default_groups(a, is_new, context(entry, ctx))) end
  function p.deprovision(a, reason, ctx) return raise(pol:deprovision(a, reason, context(entry, ctx))) end
  function p.account(u, groups, opts)
    opts = opts or {}
    local ctx = context(entry, opts.ctx)
    local acct = raise(pol:user(u, ctx))
    if not acct then return nil end
    local counted = {}
    for _, g in ipairs(groups or {}) do
      if raise(pol:include_group(g, ctx)) then counted[#counted + 1] = g end
    end
    table.sort(counted, function(a, b) return tostring(a.profile and a.profile.name) < tostring(b.profile and b.profile.name) end)
    local set, list = {}, {}
    local function add(names)
      for _, gname in ipairs(names) do
        if not set[gname:lower()] then set[gname:lower()] = true; list[#list + 1] = gname end
      end
    end
    if acct.active then
      add(raise(pol:groups(u, counted, ctx)))
      add(raise(pol:default_groups(acct, opts.is_new ~= false, ctx)))
    end
    table.sort(list)
    acct.groups = list
    return acct
  end
  p.settings = plan.copy(entry)
  return p
end

local ids = 0
local function next_id(prefix)
  ids = ids + 1
  return ("%s%017d"):format(prefix, ids)
end

-- usersync.user{ login, status, id, type, groups, <profile fields> }.
local USER_KEYS = { id = true, status = true, groups = true, created = true, lastUpdated = true }
local function make_user(t)
  if type(t) ~= "table" or type(t.login) ~= "string" then error("usersync.user{ login = ... } expected", 2) end
  local u = { id = t.id or next_id("00u"), status = t.status or "ACTIVE", profile = {}, groups = {} }
  for k, v in pairs(t) do
    if USER_KEYS[k] then
      if k ~= "id" and k ~= "status" then u[k] = v end
    elseif k == "profile" then
      for pk, pv in pairs(v) do u.profile[pk] = pv end
    else
      u.profile[k] = v
    end
  end
  if u.profile.email == nil then u.profile.email = t.login end
  return u
end

-- usersync.group(NAME [, { id, type, description }]).
local function make_group(name, opts)
  if type(name) ~= "string" then error("usersync.group(NAME) expected", 2) end
  opts = opts or {}
  return { id = opts.id or next_id("00g"), type = opts.type or "OKTA_GROUP",
           profile = { name = name, description = opts.description } }
end

-- usersync.fixture(PATH): a recorded fixture (M.record).
local function load_fixture(dir, path)
  local file = resolve(dir, path)
  local f, err = io.open(file, "rb")
  if not f then error("usersync.fixture: " .. tostring(err), 2) end
  local text = f:read("a")
  f:close()
  local doc, jerr = json.decode(text)
  if type(doc) ~= "table" or type(doc.users) ~= "table" then
    error(("usersync.fixture: %s is not a fixture (%s)"):format(file, jerr or "no users"), 2)
  end
  local fx = { users = doc.users, groups = doc.groups or {}, source = doc.source, recorded = doc.recorded }
  local by_id = {}
  for _, g in ipairs(fx.groups) do by_id[g.id] = g end
  function fx:user(who)
    for _, u in ipairs(self.users) do
      if u.id == who or (u.profile and type(u.profile.login) == "string" and u.profile.login:lower() == who:lower()) then
        return u
      end
    end
    error(("usersync.fixture: no user %q in %s"):format(tostring(who), file), 2)
  end
  function fx:groups_of(u)
    local out = {}
    for _, id in ipairs(u.groups or {}) do out[#out + 1] = by_id[id] end
    return out
  end
  return fx
end

-- Runs one test file, reporting to runner.
function M.run_file(runner, file)
  local dir = dir_of(file)
  local acct = sandbox.account{ name = file, instructions = M.LIMITS.instructions, memory = M.LIMITS.memory }
  local g = file_globals(runner, file)
  local api = {
    policy = function(path, settings) return load_policy(dir, path, settings) end,
    user = make_user, group = make_group,
    fixture = function(path) return load_fixture(dir, path) end,
    context = function(over) return context(sync_entry(over and over.settings), over) end,
  }
  local fn, err = sandbox.loadfile(file, { usersync = api, test = g.test, expect = g.expect }, acct)
  if not fn then
    runner:line(false, file, { tostring(err) })
    return false
  end
  local ok, rerr = sandbox.call(acct, fn)
  if not ok then
    runner:line(false, file .. ": stopped by an error", { (tostring(rerr):match("^[^\n]*")) })
    return false
  end
  return true
end

---------------------------------------------------------------- recording

-- What a recorded user keeps: its identity, status, dates and profile.
local USER_FIELDS = { "id", "status", "created", "activated", "statusChanged", "lastLogin", "lastUpdated",
                      "passwordChanged" }
local GROUP_FIELDS = { "id", "type", "created", "lastUpdated", "lastMembershipUpdated" }

-- Profile attributes whose name says they hold a secret are left out.
local function secret_name(k)
  k = k:lower()
  return k:find("password", 1, true) or k:find("secret", 1, true) or k:find("token", 1, true)
    or k:find("credential", 1, true) or k:find("apikey", 1, true) or k:find("api_key", 1, true)
end

-- A plain copy of value v with every string masked (secrets.mask: the
-- configured secrets and anything shaped like a credential).
local function masked(v)
  if type(v) == "string" then return secrets.mask(v) end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = masked(x) end
  if getmetatable(v) == json.array_mt or (#v > 0) then json.array(out) end
  return out
end

local function pick(t, fields)
  local out = {}
  for _, k in ipairs(fields) do
    if t[k] ~= nil and t[k] ~= json.null then out[k] = masked(t[k]) end
  end
  return out
end

-- Records Okta users (logins or ids) with their groups from the source of
-- sync entry s. Returns the fixture document | nil, message, exit code.
function M.record(cfg, s, users)
  local e = require("usersync.engine").open(cfg, { no_store = true })
  local _ <close> = setmetatable({}, { __close = function() e:close() end })
  local src = e:source(s.source)
  local doc = { schema = "usersync.fixture/1", source = s.source,
                recorded = require("usersync.time").format(require("usersync.time").now()),
                users = json.array{}, groups = json.array{}, left_out = json.array{} }
  local groups_seen, left = {}, {}
  for _, who in ipairs(users) do
    local u, err, code = src:user(who)
    if not u then
      if code == "ENOTFOUND" then return nil, ("no Okta user '%s' (by login or id) in source %s"):format(who, s.source), EXIT_USAGE end
      return nil, ("reading Okta user %s failed: %s"):format(who, secrets.mask(tostring(err))), EXIT_FAILED
    end
    local groups, gerr = src:user_groups(u.id)
    if not groups then return nil, ("reading the groups of %s failed: %s"):format(who, secrets.mask(tostring(gerr))), EXIT_FAILED end
    local rec = pick(u, USER_FIELDS)
    rec.profile = {}
    for k, v in pairs(u.profile or {}) do
      if secret_name(k) then left["profile." .. k] = true
      elseif v ~= json.null then rec.profile[k] = masked(v) end
    end
    rec.groups = json.array{}
    for _, g in ipairs(groups) do
      rec.groups[#rec.groups + 1] = g.id
      if not groups_seen[g.id] then
        groups_seen[g.id] = true
        local gr = pick(g, GROUP_FIELDS)
        gr.profile = { name = g.profile and masked(g.profile.name), description = g.profile and g.profile.description ~= json.null
          and masked(g.profile.description) or nil }
        doc.groups[#doc.groups + 1] = gr
      end
    end
    doc.users[#doc.users + 1] = rec
  end
  for k in pairs(left) do doc.left_out[#doc.left_out + 1] = k end
  table.sort(doc.left_out)
  return doc
end

local function record_main(opts, pos, cli)
  if #pos == 0 then cli.eprint("usersync test: --record needs the Okta users to record (login or id)"); return EXIT_USAGE end
  local cfg = cli.load_config(opts, "test")
  if not cfg then return EXIT_USAGE end
  local s = cfg.sync[1]
  if opts.sync then
    s = nil
    for _, x in ipairs(cfg.sync) do if x.name == opts.sync then s = x end end
    if not s then cli.eprint(("usersync test: no sync entry '%s'"):format(opts.sync)); return EXIT_USAGE end
  end
  local doc, err, code = M.record(cfg, s, pos)
  if not doc then cli.eprint("usersync test: " .. err); return code end
  local f, ferr = io.open(opts.record, "wb")
  if not f then cli.eprint("usersync test: cannot write " .. opts.record .. ": " .. tostring(ferr)); return EXIT_FAILED end
  f:write(assert(json.encode(doc, { sort_keys = true, indent = true })), "\n")
  f:close()
  io.write(("recorded %d user%s and %d group%s from %s into %s%s\n"):format(#doc.users, #doc.users == 1 and "" or "s",
    #doc.groups, #doc.groups == 1 and "" or "s", s.source, opts.record,
    #doc.left_out > 0 and (" (left out: " .. table.concat(doc.left_out, ", ") .. ")") or ""))
  return EXIT_OK
end

-- `usersync test`: cli.lua parsed the options.
function M.main(opts, pos, cli)
  if opts.record then return record_main(opts, pos, cli) end
  if opts.sync then cli.eprint("usersync test: --sync goes with --record"); return EXIT_USAGE end
  if #pos == 0 then cli.eprint("usersync test: which test files? (usersync test FILE...)"); return EXIT_USAGE end
  local runner = M.runner()
  for _, file in ipairs(pos) do
    runner.write("# " .. tap_text(file) .. "\n")
    M.run_file(runner, file)
  end
  io.stdout:flush()
  return runner:finish()
end

return M
