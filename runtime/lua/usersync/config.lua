-- usersync.config: loads the config file (a Lua chunk run in the sandbox that
-- returns a table) and validates it against the schema below.
--
--   local config = require "usersync.config"
--   local cfg, errors = config.load("usersync.conf.lua")
--   -- cfg: the validated table with defaults filled in, or nil
--   -- errors: list of "file: key.path: expected ..., got ..." (all of them)
--
-- The schema is data: each node is { kind, ... }. Unknown keys, wrong types,
-- bad values and missing required keys are all errors naming the key path.
--
-- Every file the config names (`state`, `policy`, `ca_file`, `serve.tls`,
-- `serve.jobs[].script`, `file "..."` secrets) is a path node: a relative
-- path is taken from the config file's directory, never from the current
-- directory, so a command run from anywhere with -c DIR/usersync.conf.lua
-- uses DIR/usersync.db. cfg._warnings lists what is valid but unwise (a
-- secret too short to be masked safely).
local sandbox = require "usersync.sandbox"
local secrets = require "usersync.secrets"

local M = {}

---------------------------------------------------------------- schema nodes
local function node(kind, t) t = t or {}; t.kind = kind; return t end
local function str(t) return node("string", t) end
local function bool(t) return node("boolean", t) end
local function int(t) return node("integer", t) end
local function enum(values, t) t = t or {}; t.values = values; return node("enum", t) end
local function list(of, t) t = t or {}; t.of = of; return node("list", t) end
local function map(of, t) t = t or {}; t.of = of; return node("map", t) end
local function record(fields, t) t = t or {}; t.fields = fields; return node("record", t) end
local function secret(t) return node("secret", t) end
local function duration(t) return node("duration", t) end
local function url(t) return node("url", t) end
local function pattern(t) return node("pattern", t) end
local function path(t) return node("path", t) end
local function oneof(options, t) t = t or {}; t.options = options; return node("oneof", t) end

M.nodes = { str = str, bool = bool, int = int, enum = enum, list = list, map = map,
            record = record, secret = secret, duration = duration, url = url,
            pattern = pattern, oneof = oneof, path = path }

local okta_source = record({
  type = enum({ "okta" }, { required = true }),
  url = url { required = true },
  token = secret(),
  oauth = record({
    client_id = str { required = true },
    private_key = secret { required = true },
    key_id = str(),
    scopes = list(str()),
    dpop = bool { default = true },
  }),
  app_id = str(),
  filter = str(),
  search = str(),
  budget_share = node("fraction"),  -- share of each Okta rate-limit bucket usersync may use ("50%")
  concurrency = int { min = 1, max = 75 },
  retries = int { min = 0, max = 10 },
  max_wait = duration(),
  status_map = map(enum({ "active", "inactive", "skip" })),
  ca_file = path(), timeout = duration(),
}, { check = function(out, path, err, v)
  -- every API path is taken from the org's base URL: one with a path (an
  -- admin console page) would make every read a 404
  local base, rest
  if type(out.url) == "string" then base, rest = out.url:match("^(https?://[^/%s]+)(/.+)$") end
  if base then
    err(path .. ".url", ("the Okta URL must be the org's base URL (%s), not %s%s"):format(base, base, rest))
  end
  if v.token == nil and v.oauth == nil then
    err(path, "needs `token` (SSWS API token) or `oauth` (service app)")
  elseif v.token ~= nil and v.oauth ~= nil then
    err(path, "has both `token` and `oauth`; choose one")
  end
end })

-- A SCIM source: identity providers push to `usersync serve` at
-- /scim/v2/<name>/ with this Bearer token (needed by serve only).
local scim_source = record({
  type = enum({ "scim" }, { required = true }),
  token = secret { required = true, serve_only = true },
  status_map = map(enum({ "active", "inactive", "skip" })),
})

local source = node("bytype", { key = "type", of = { okta = okta_source, scim = scim_source } })

local target = record({
  type = enum(require("usersync.targets").TYPES, { required = true }),
  flavour = str(),                -- a variant of the type (scim: "atlassian")
  url = url { required = true },
  token = secret(),
  user = str(),
  password = secret(),
  concurrency = int { min = 1, max = 64, default = 8 },
  ca_file = path(), timeout = duration(),
  add_to_default_group = bool(),  -- Bitbucket: new users join the default group (default true)
  task_wait = duration(),         -- Confluence: how long to follow a delete task (default 120s)
  page_size = int { min = 1 },    -- listings: at most this many per page (default: product maximum)
  application = str(),            -- Crowd: the application's name (with `password`)
}, { check = function(_, path, err, v)
  local fl = require("usersync.targets").FLAVOURS[v.type]
  if type(v.flavour) == "string" and fl and not fl[v.flavour] then
    local names = {}
    for k in pairs(fl) do names[#names + 1] = ("%q"):format(k) end
    table.sort(names)
    err(path .. ".flavour", #names > 0 and ("expected one of %s for type %q, got %q"):format(
      table.concat(names, ", "), v.type, v.flavour) or ("type %q has no flavours"):format(v.type))
  end
  if v.type == "crowd" or v.application ~= nil then
    if v.type ~= "crowd" then
      err(path .. ".application", "only a crowd target authenticates as an application; use `user` or `token`")
    elseif v.token ~= nil or v.user ~= nil then
      err(path, "a crowd target signs in as a Crowd application: use `application` and `password`, not `token` or `user`")
    elseif v.application == nil or v.password == nil then
      err(path, "needs `application` and `password` (the Crowd application's name and password)")
    end
  elseif v.type == "scim" and (v.token == nil or v.user ~= nil) then
    err(path, "needs `token` (the service's bearer token; Atlassian: the directory API key) "
      .. "and no `user`")
  elseif v.token == nil and (v.user == nil or v.password == nil) then
    err(path, "needs `token` (personal access token) or `user` and `password`")
  elseif v.token ~= nil and v.user ~= nil then
    err(path, "has both `token` and `user`; choose one")
  end
end })

local group_map = map(oneof({ str(), list(str()) }))

local sync_entry = record({
  name = str { required = true },
  source = str { required = true },
  targets = list(str(), { required = true, nonempty = true }),
  every = duration(),
  users = record({
    create = bool { default = true }, update = bool { default = true },
    rename = bool { default = true },
    deactivate = bool { default = true }, reactivate = bool { default = true },
    delete = bool { default = false },
    project_lead = str(), component_lead = str(),
  }, { default = {} }),
  groups = record({
    mode = enum({ "manual", "on_the_fly" }, { default = "manual" }),
    map = group_map,
    create_missing = bool { default = true },
    keep_existing = bool { default = true },
    include = list(pattern()), exclude = list(pattern()),
    rename = list(list(str(), { len = 2 })),
  }, { default = {} }),
  defaults = record({ new_users = list(str()), all_users = list(str()) }, { default = {} }),
  policy = path(),
  attributes = record({ name = node("attribute"), display_name = node("attribute"),  -- usersync.attributes
                        email = node("attribute") }),
  deprovision = enum({ "deactivate", "delete", "remove_groups", "keep" }),
  limits = record({ max_deprovision = node("share"), max_membership_removals = node("share"),
                    policy_instructions = int { min = 1 } },  -- all policy hook calls of a run together
                  { default = {} }),
})

M.schema = record({
  state = path { default = "usersync.db" },
  log = record({ level = enum({ "debug", "info", "warn", "error" }), format = enum({ "text", "json" }) }),
  sources = map(source, { required = true, nonempty = true }),
  targets = map(target, { required = true, nonempty = true }),
  sync = list(sync_entry, { required = true, nonempty = true }),
  history = record({ keep = duration() }),
  serve = record({
    listen = str { default = "127.0.0.1:8080" },
    health_listen = str(),   -- a second, plain-HTTP listener for /healthz, /readyz, /metrics
    max_connections = int { min = 1, max = 65535 },         -- on `listen` (default 512)
    max_connections_per_ip = int { min = 1, max = 65535 },  -- on `listen` (default 32)
    request_timeout = duration(),   -- a request must arrive within this (default 5s)
    tls = record({ cert = path { required = true }, key = path { required = true } }),
    okta_hook = record({ path = str { default = "/hooks/okta" }, secret = secret { required = true },
                         max_body = int { min = 1024 } }),
    poll_logs = duration(),
    jobs = list(record({ script = path { required = true }, every = duration { required = true } })),
    status = record({ user = str { required = true }, password = secret { required = true } }),  -- the page at /
  }),
}, { check = function(v, path, err)
  for i, s in ipairs(v.sync or {}) do
    if type(s) == "table" then
      if type(s.source) == "string" and type(v.sources) == "table" and v.sources[s.source] == nil then
        err(("sync[%d].source"):format(i), ("no source named %q in `sources`"):format(s.source))
      end
      for j, t in ipairs(type(s.targets) == "table" and s.targets or {}) do
        if type(t) == "string" and type(v.targets) == "table" and v.targets[t] == nil then
          err(("sync[%d].targets[%d]"):format(i, j), ("no target named %q in `targets`"):format(t))
        end
      end
    end
  end
  local seen = {}
  for i, s in ipairs(v.sync or {}) do
    if type(s) == "table" and type(s.name) == "string" then
      if seen[s.name] then err(("sync[%d].name"):format(i), ("duplicate sync name %q"):format(s.name)) end
      seen[s.name] = true
    end
  end
end })

---------------------------------------------------------------- validation
local function describe(v)
  if secrets.is_missing(v) then return "a missing secret" end
  local t = type(v)
  if t == "string" then return ("%q"):format(#v > 40 and v:sub(1, 40) .. "..." or v) end
  if t == "table" then return (#v > 0 or next(v) == nil) and "a list" or "a table" end
  if t == "number" or t == "boolean" then return tostring(v) end
  return "a " .. t
end

local function join(path, k)
  if type(k) == "number" then return path .. "[" .. k .. "]" end
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then
    return path == "" and k or path .. "." .. k
  end
  return path .. "[" .. ("%q"):format(tostring(k)) .. "]"
end

-- The longest duration (as usersync.time's parser, US_TIME_DURATION_MAX).
M.DURATION_MAX = 3650 * 86400

-- A duration: "30m", "1h30m", "1.5h", "250ms", "90" (a string in the one
-- grammar usersync.time.parse_duration reads) or a number of seconds; more
-- than 0 and at most 3650 days. -> seconds | nil, why (why is set for a
-- value of the grammar out of that range).
function M.parse_duration(v)
  local secs
  if type(v) == "string" then
    local why
    secs, why = require("usersync.time").parse_duration(v)
    if not secs then return nil, why and why:find("longer than", 1, true) and "is longer than 3650 days" or nil end
  elseif type(v) == "number" and v == v then
    if v > M.DURATION_MAX then return nil, "is longer than 3650 days" end
    secs = v
  else
    return nil
  end
  if secs <= 0 then return nil, "is not more than 0 seconds" end
  return secs
end

-- "5%" -> {percent=5}; 10 -> {count=10}; nil if neither.
function M.parse_share(v)
  if math.type(v) == "integer" and v >= 0 then return { count = v } end
  if type(v) == "string" then
    local p = v:match("^(%d+%.?%d*)%%$")
    p = tonumber(p)
    if p and p >= 0 and p <= 100 then return { percent = p } end
  end
  return nil
end

local check -- forward

local checkers = {}

function checkers.string(n, v, path, err)
  if type(v) ~= "string" then return err(path, "expected a string, got " .. describe(v)) end
  return v
end
function checkers.boolean(n, v, path, err)
  if type(v) ~= "boolean" then return err(path, "expected true or false, got " .. describe(v)) end
  return v
end
function checkers.integer(n, v, path, err)
  if math.type(v) ~= "integer" then return err(path, "expected an integer, got " .. describe(v)) end
  if (n.min and v < n.min) or (n.max and v > n.max) then
    return err(path, ("expected an integer from %d to %d, got %d"):format(n.min or math.mininteger, n.max or math.maxinteger, v))
  end
  return v
end
function checkers.enum(n, v, path, err)
  for _, ok in ipairs(n.values) do if v == ok then return v end end
  local q = {}
  for i, ok in ipairs(n.values) do q[i] = ("%q"):format(ok) end
  local want = #q == 1 and q[1] or table.concat(q, ", ", 1, #q - 1) .. " or " .. q[#q]
  return err(path, "expected " .. want .. ", got " .. describe(v))
end
-- Secrets under serve.* are needed only by `usersync serve`: the other
-- commands load the config with them optional (M.load's opts.serve), so a
-- shell without OKTA_HOOK_SECRET can still plan and sync.
local serve_secrets_optional = false
-- The validation under way: the directory relative paths are taken from,
-- and the warnings found so far.
local current = { dir = nil, warnings = {} }
function checkers.secret(n, v, path, err)
  if secrets.is_missing(v) then
    if serve_secrets_optional and (path:match("^serve%.") or n.serve_only) then return nil end
    return err(path, v.reason)
  end
  if type(v) ~= "string" then
    return err(path, "expected a secret (env \"NAME\" or file \"PATH\"), got " .. describe(v))
  end
  if secrets.too_short(v) then
    current.warnings[#current.warnings + 1] = ("%s: the secret is %d characters long; secrets shorter than %d "
      .. "cannot be masked safely in logs and error messages (%s), use a longer one")
      :format(path, #v, secrets.MIN_SAFE, #v < secrets.MIN_LEN and "it is not masked at all"
        or "it is masked only where it stands as a whole word")
  end
  return secrets.register(v)
end
-- A file name; relative to the config file's directory.
function checkers.path(n, v, path, err)
  if type(v) ~= "string" or v == "" then return err(path, "expected a file path, got " .. describe(v)) end
  return secrets.resolve(v, current.dir)
end
function checkers.url(n, v, path, err)
  if type(v) ~= "string" then return err(path, "expected a URL, got " .. describe(v)) end
  if not v:match("^https?://[^/%s]+") then
    return err(path, "expected an http:// or https:// URL, got " .. describe(v))
  end
  return (v:gsub("/+$", ""))
end
-- A duration becomes its seconds: what the engine, serve and the clients
-- take, parsed here once.
function checkers.duration(n, v, path, err)
  local secs, why = M.parse_duration(v)
  if why then return err(path, describe(v) .. " " .. why) end
  if not secs then
    return err(path, "expected a duration like \"30s\", \"15m\", \"1h\" or \"7d\", got " .. describe(v))
  end
  return secs
end
function checkers.share(n, v, path, err)
  if not M.parse_share(v) then
    return err(path, "expected a count (10) or a percentage (\"5%\"), got " .. describe(v))
  end
  return v
end
-- "50%" or a number in (0, 1]; becomes the number.
function checkers.fraction(n, v, path, err)
  local share = type(v) == "string" and M.parse_share(v)
  if share and share.percent and share.percent > 0 then return share.percent / 100 end
  if type(v) == "number" and v > 0 and v <= 1 then
    return v
  end
  return err(path, "expected a percentage (\"50%\") or a fraction (0.5), got " .. describe(v))
end

function checkers.pattern(n, v, path, err)
  if type(v) ~= "string" then return err(path, "expected a pattern string, got " .. describe(v)) end
  local ok, re = pcall(require, "usersync.re")
  if ok and type(re) == "table" and re.compile then
    local p, msg = re.compile(v)
    if not p then return err(path, "bad pattern: " .. tostring(msg)) end
  end
  return v
end
-- An attribute mapping: an Okta user field or a template of them.
function checkers.attribute(n, v, path, err)
  local spec, why = require("usersync.attributes").parse(v)
  if not spec then return err(path, type(v) == "string" and why or (why .. ", got " .. describe(v))) end
  return v
end
function checkers.list(n, v, path, err)
  if type(v) ~= "table" then return err(path, "expected a list, got " .. describe(v)) end
  local count = 0
  for k in pairs(v) do
    count = count + 1
    if math.type(k) ~= "integer" or k < 1 then
      return err(join(path, k), "unexpected key in a list")
    end
  end
  if count ~= #v then return err(path, "expected a list without holes") end
  if n.nonempty and #v == 0 then return err(path, "expected at least one entry") end
  if n.len and #v ~= n.len then return err(path, ("expected exactly %d entries, got %d"):format(n.len, #v)) end
  local out = {}
  for i, item in ipairs(v) do out[i] = check(n.of, item, join(path, i), err) end
  return out
end
function checkers.map(n, v, path, err)
  if type(v) ~= "table" then return err(path, "expected a table of named entries, got " .. describe(v)) end
  if n.nonempty and next(v) == nil then return err(path, "expected at least one entry") end
  local out = {}
  for k, item in pairs(v) do
    if type(k) ~= "string" then
      err(join(path, k), "expected named entries (string keys)")
    else
      out[k] = check(n.of, item, join(path, k), err)
    end
  end
  return out
end
function checkers.record(n, v, path, err)
  if type(v) ~= "table" then return err(path, "expected a table, got " .. describe(v)) end
  local out = {}
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for _, k in ipairs(keys) do
    if not n.fields[k] then
      local known = {}
      for f in pairs(n.fields) do known[#known + 1] = f end
      table.sort(known)
      err(join(path, k), "unknown key (known: " .. table.concat(known, ", ") .. ")")
    end
  end
  local names = {}
  for f in pairs(n.fields) do names[#names + 1] = f end
  table.sort(names)
  for _, f in ipairs(names) do
    local sub = n.fields[f]
    local val = v[f]
    if val == nil then
      if sub.required then
        err(join(path, f), "missing (required)")
      elseif sub.default ~= nil then
        out[f] = check(sub, type(sub.default) == "table" and {} or sub.default, join(path, f), err)
      end
    else
      out[f] = check(sub, val, join(path, f), err)
    end
  end
  if n.check then n.check(out, path, err, v) end
  return out
end
-- A record chosen by the value of one key (sources: by `type`).
function checkers.bytype(n, v, path, err)
  if type(v) ~= "table" then return err(path, "expected a table, got " .. describe(v)) end
  local r = n.of[v[n.key]]
  if not r then
    local names = {}
    for k in pairs(n.of) do names[#names + 1] = k end
    table.sort(names)
    return checkers.enum({ values = names }, v[n.key], join(path, n.key), err)
  end
  return check(r, v, path, err)
end
function checkers.oneof(n, v, path, err)
  for _, opt in ipairs(n.options) do
    local failed = false
    local r = check(opt, v, path, function() failed = true end)
    if not failed then return r end
  end
  return err(path, "expected a string or a list of strings, got " .. describe(v))
end

function check(n, v, path, err)
  return checkers[n.kind](n, v, path, err)
end

-- Validates a config table. Returns the normalised table and a list of
-- errors "key.path: message" (empty when valid).
-- opts.dir: the directory relative paths are taken from (default: as given).
-- Returns cfg, errors, warnings.
function M.validate(t, opts)
  local errors = {}
  local function err(path, msg)
    errors[#errors + 1] = (path == "" and "" or path .. ": ") .. msg
    return nil
  end
  serve_secrets_optional = not (opts and opts.serve)
  current = { dir = opts and opts.dir, warnings = {} }
  local ok, cfg = pcall(check, M.schema, t, "", err)
  local warnings = current.warnings
  serve_secrets_optional = false
  current = { dir = nil, warnings = {} }
  if not ok then error(cfg, 0) end
  return cfg, errors, warnings
end

-- The directory of a file path ("." when it has none).
function M.dir_of(file)
  return file:match("^(.*[^/])/+[^/]*$") or (file:match("^/") and "/" or ".")
end

-- Runs a config chunk and validates what it returns, inside the sandbox
-- call: metamethods of the returned tables run under its budget, and what
-- comes out is plain data. Returns cfg | nil, errors, warnings.
local function evaluate(fn, path, opts)
  local t = fn()
  if type(t) ~= "table" then
    return nil, { path .. ": the config must return a table, got " .. describe(t) }
  end
  local cfg, errors, warnings = M.validate(t, opts)
  for i, e in ipairs(errors) do errors[i] = path .. ": " .. e end
  if #errors > 0 then return nil, errors end
  for i, w in ipairs(warnings) do warnings[i] = path .. ": " .. w end
  return cfg, errors, warnings
end

-- The config's sandbox limits: per call, and for everything the config's
-- code runs (its metamethods and finalizers included).
M.LIMITS = { instructions = 10 * 1000 * 1000, run_instructions = 100 * 1000 * 1000 }

-- Loads and validates a config file. Returns cfg | nil, errors (each
-- prefixed with the file name). opts.serve: the config is for `usersync
-- serve`, whose secrets (serve.*) must then be set too. Relative paths
-- resolve against the file's directory. cfg._path is the file,
-- cfg._warnings its warnings (each prefixed with the file name).
function M.load(path, opts)
  local dir = M.dir_of(path)
  local acct = sandbox.account{ name = path, instructions = M.LIMITS.instructions,
                                run_instructions = M.LIMITS.run_instructions }
  local fn, envOrErr = sandbox.loadfile(path, { env = secrets.env, file = secrets.file_in(dir) },
                                        acct)
  if not fn then
    local msg = tostring(envOrErr)
    if not msg:find(path, 1, true) then msg = path .. ": " .. msg end
    return nil, { msg }
  end
  local vopts = { dir = dir }
  for k, v in pairs(opts or {}) do vopts[k] = v end
  local ok, cfg, errors, warnings = sandbox.call(acct, evaluate, fn, path, vopts)
  fn = nil -- luacheck: ignore (the chunk's objects may be collected below)
  -- The finalizers of what the chunk left behind run now, under the
  -- config's budget, so a runaway one is an error of the config.
  collectgarbage("collect")
  sandbox.drain()
  if acct.failure then return nil, { secrets.mask(acct.failure) } end
  if not ok then return nil, { secrets.mask(cfg) } end
  if not cfg then return nil, errors end
  cfg._path = path
  cfg._warnings = warnings
  return cfg, errors
end

return M
