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

-- opts: { config = path or nil, dry_run = bool, out = function(line) }
function M.new(opts)
  opts = opts or {}
  local out = opts.out or function(line) io.write(line, "\n") end
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
