-- usersync.script: the `usersync` global that ad-hoc scripts get from
-- `usersync run`: the configured clients by name, the store,
-- and a dry-run switch that turns every target write into a printed line.
--
--   -- usersync run [-c usersync.conf.lua] [--dry-run] migrate.lua ARGS...
--   local jira = usersync.target "jira"          -- usersync.target / usersync.source
--   for _, a in ipairs(assert(jira:snapshot()).accounts) do ... end
--   assert(jira:rename_user("old", "new"))       -- with --dry-run: prints, returns true, "dry run"
--   local db = usersync.store()                  -- the config's SQLite store
--   usersync.config()                            -- the validated config table
--   usersync.dry_run                             -- true with --dry-run
--
-- The config is loaded on first use; a script that never asks for it runs
-- without one. Clients share one HTTP engine and are closed when the script
-- ends.
--
-- What a script prints goes through usersync.secrets.mask like a log line:
-- M.masked_globals() gives the `print` and `io` the script runs with, whose
-- print, io.write and io.stdout / io.stderr writes mask every configured
-- secret and credential. Files the script opens itself are its data and are
-- written as they are.
local secrets = require "usersync.secrets"

local M = {}

-- Target methods that write; under --dry-run they print instead.
M.WRITES = { "create_user", "update_user", "rename_user", "deactivate_user", "reactivate_user",
             "delete_user", "create_group", "delete_group", "add_member", "remove_member",
             "add_members", "add_to_groups", "handover_lead" }

local function describe(v)
  if type(v) == "table" then
    local ok, json = pcall(require, "usersync.json")
    local s = ok and json.encode(v, { sort_keys = true })
    return s or tostring(v)
  end
  return tostring(v)
end

-- Wraps a target so that writes print "dry-run: NAME METHOD ARGS" and
-- succeed without a request; reads go through.
local function dry_target(name, t, out)
  local writes = {}
  for _, m in ipairs(M.WRITES) do writes[m] = true end
  local proxy = {}
  return setmetatable(proxy, { __index = function(_, k)
    if writes[k] then
      return function(_, ...)
        local parts = { "dry-run:", name, k }
        for _, a in ipairs({ ... }) do parts[#parts + 1] = describe(a) end
        out(table.concat(parts, " "))
        return true, "dry run"
      end
    elseif k == "batch" or k == "apply_start" then
      -- raw jobs and started applies would send writes around the dry run
      return function()
        error(("%s:%s is not available under --dry-run (use apply or the write methods)"):format(name, k), 2)
      end
    elseif k == "apply" then
      return function(_, ops, cb)
        for _, op in ipairs(ops) do
          out(("dry-run: %s %s %s"):format(name, op.kind, describe(op)))
          if cb then cb(op, true, "dry run") end
        end
        return { ok = #ops, failed = 0 }
      end
    end
    local v = t[k]
    if type(v) == "function" then
      return function(_, ...) return v(t, ...) end
    end
    return v
  end })
end

-- A stand-in for a standard stream (io.stdout, io.stderr) whose write
-- masks; every other method is the real file's.
local function masked_stream(real)
  local proxy = {}
  return setmetatable(proxy, {
    __index = function(_, k)
      if k == "write" then
        return function(self, ...)
          local parts = table.pack(...)
          for i = 1, parts.n do parts[i] = tostring(parts[i]) end
          local ok, err, code = real:write(secrets.mask(table.concat(parts, "", 1, parts.n)))
          if not ok then return nil, err, code end
          return self
        end
      end
      local v = real[k]
      if type(v) == "function" then
        return function(self, ...) return v(self == proxy and real or self, ...) end
      end
      return v
    end,
    __tostring = function() return tostring(real) end,
    __name = "FILE*",
  }), real
end

-- print and io for a script (see the header): returns { print = fn, io = table }.
function M.masked_globals()
  local io = io -- the real library: the script's global `io` becomes the copy
  local stdout, real_stdout = masked_stream(io.stdout)
  local stderr, real_stderr = masked_stream(io.stderr)
  local wrapped = { [real_stdout] = stdout, [real_stderr] = stderr }
  local real = { [stdout] = real_stdout, [stderr] = real_stderr }
  local mio = {}
  for k, v in pairs(io) do mio[k] = v end
  mio.stdout, mio.stderr = stdout, stderr
  -- io.write / io.output / io.type / io.lines see the stand-ins as the files
  function mio.output(f)
    if f == nil then local o = io.output(); return wrapped[o] or o end
    local o = io.output(real[f] or f)
    return wrapped[o] or o
  end
  function mio.write(...)
    local o = io.output()
    if wrapped[o] then return wrapped[o]:write(...) end
    return o:write(...)
  end
  function mio.type(f) return io.type(real[f] or f) end
  local function mprint(...)
    local parts = table.pack(...)
    for i = 1, parts.n do parts[i] = tostring(parts[i]) end
    stdout:write(table.concat(parts, "\t", 1, parts.n), "\n")
  end
  return { print = mprint, io = mio }
end

-- opts: { config = path or nil, dry_run = bool, out = function(line) }
function M.new(opts)
  opts = opts or {}
  local out = opts.out or function(line) io.stdout:write(secrets.mask(line), "\n") end
  local api = { dry_run = opts.dry_run and true or false }
  local cfg, engine
  function api.config()
    if cfg then return cfg end
    local path = opts.config or "usersync.conf.lua"
    local c, errors = require("usersync.config").load(path)
    if not c then error(("config %s has errors:\n  %s"):format(path, table.concat(errors, "\n  ")), 2) end
    cfg = c
    return cfg
  end
  local function get_engine()
    if not engine then
      local err
      engine, err = require("usersync.engine").open(api.config())
      if not engine then error(err, 3) end
    end
    return engine
  end
  local targets = {}
  function api.target(name)
    if targets[name] then return targets[name] end
    local c = api.config()
    if not c.targets[name] then error(("no target named %q in the config"):format(tostring(name)), 2) end
    local t = get_engine():target(name)
    if api.dry_run then t = dry_target(name, t, out) end
    targets[name] = t
    return t
  end
  function api.source(name)
    local c = api.config()
    if not c.sources[name] then error(("no source named %q in the config"):format(tostring(name)), 2) end
    return get_engine():source(name)
  end
  function api.store() return get_engine().db end
  function api.close()
    if engine then engine:close(); engine = nil end
  end
  return api
end

return M
