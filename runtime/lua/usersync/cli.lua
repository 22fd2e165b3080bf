-- usersync.cli: the command line. host.c calls M.main(argv) in protected
-- mode and exits with the integer it returns:
--   0 done, 1 some operations failed, 2 usage or config error,
--   3 stopped by a safety limit.
local core = require "usersync.core"
local secrets = require "usersync.secrets"

local M = {}

local EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

local function eprint(...)
  local parts = table.pack(...)
  for i = 1, parts.n do parts[i] = secrets.mask(tostring(parts[i])) end
  io.stderr:write(table.concat(parts, " "), "\n")
end
M.eprint = eprint

local USAGE = [[
usage: usersync [--version] [--help] COMMAND [options]

commands:
  check            validate the config (-c FILE, default ./usersync.conf.lua)
  run SCRIPT.lua   run an ad-hoc Lua script with the full runtime API
  history          list past runs with their counts
  show RUN         list every operation of one run

Every command takes -c FILE, --json where it prints data, and --help.
Exit codes: 0 done, 1 some operations failed, 2 usage or config error,
3 stopped by a safety limit.
]]

local HELP = {
  history = [[
usage: usersync history [-c FILE] [--json] [--sync NAME] [--limit N]

Lists past runs, newest first: when, which sync, trigger, duration, counts
by operation, failures and outcome. Reads the store named by the config's
`state`.
]],
  show = [[
usage: usersync show [-c FILE] [--json] RUN

Lists every operation of run RUN (see usersync history) with its target,
subject, result and error.
]],
  check = [[
usage: usersync check [-c FILE] [--json]

Loads the config (a Lua file returning a table, evaluated in the sandbox) and
validates it against the schema. Every error names the file and the key path;
all errors are reported together. Exit 0 when valid, 2 otherwise.
]],
  run = [[
usage: usersync run [-c FILE] SCRIPT.lua [args...]

Runs SCRIPT.lua with the full runtime API (require "usersync.http", ".json",
".re", ".store", ".log", ".time", "cjson"). `arg` holds the arguments
(arg[0] is the script). The script's directory is on package.path; the
current directory is not. An uncaught error prints a traceback and exits 1;
a script that returns an integer exits with it.
]],
}

-- Splits argv into options and positional arguments. Options the command
-- does not know are usage errors. Stops at the first positional for `run`.
local function parse(args, start, spec, stop_at_positional)
  local opts, pos = {}, {}
  local i = start
  while i <= #args do
    local a = args[i]
    if (a == "-c" or a == "--config") then
      if not args[i + 1] then return nil, a .. " needs a file" end
      opts.config = args[i + 1]
      i = i + 2
    elseif a == "--" then
      for j = i + 1, #args do pos[#pos + 1] = args[j] end
      break
    elseif a:sub(1, 2) == "--" and spec[a:sub(3)] ~= nil then
      local name = a:sub(3)
      if spec[name] == "value" then
        if not args[i + 1] then return nil, a .. " needs a value" end
        opts[name] = args[i + 1]
        i = i + 2
      else
        opts[name] = true
        i = i + 1
      end
    elseif a == "-h" then
      opts.help = true
      i = i + 1
    elseif a:sub(1, 1) == "-" and #a > 1 then
      return nil, "unknown option " .. a
    else
      pos[#pos + 1] = a
      i = i + 1
      if stop_at_positional then
        for j = i, #args do pos[#pos + 1] = args[j] end
        break
      end
    end
  end
  return opts, pos
end

local commands = {}

function commands.check(args)
  local opts, pos = parse(args, 2, { help = "flag", json = "flag" })
  if not opts then eprint("usersync check: " .. pos); return EXIT_USAGE end
  if opts.help then io.write(HELP.check); return EXIT_OK end
  if #pos > 0 then eprint("usersync check: unexpected argument " .. pos[1]); return EXIT_USAGE end
  local path = opts.config or "usersync.conf.lua"
  local cfg, errors = require("usersync.config").load(path)
  if opts.json then
    local json = require "usersync.json"
    local out = { config = path, valid = cfg ~= nil, errors = json.array(errors) }
    io.write(secrets.mask(assert(json.encode(out))), "\n")
    return cfg and EXIT_OK or EXIT_USAGE
  end
  if not cfg then
    eprint(("usersync: config %s has %d error%s"):format(path, #errors, #errors == 1 and "" or "s"))
    for _, e in ipairs(errors) do eprint("  " .. e) end
    return EXIT_USAGE
  end
  local n = function(t) local c = 0; for _ in pairs(t) do c = c + 1 end; return c end
  io.write(("config %s: ok (%d source%s, %d target%s, %d sync entr%s)\n"):format(path,
    n(cfg.sources), n(cfg.sources) == 1 and "" or "s",
    n(cfg.targets), n(cfg.targets) == 1 and "" or "s",
    #cfg.sync, #cfg.sync == 1 and "y" or "ies"))
  return EXIT_OK
end

-- Loads the config for a command; prints its errors. Returns cfg | nil.
local function load_config(opts, cmd)
  local path = opts.config or "usersync.conf.lua"
  local cfg, errors = require("usersync.config").load(path)
  if not cfg then
    eprint(("usersync %s: config %s has %d error%s"):format(cmd, path, #errors, #errors == 1 and "" or "s"))
    for _, e in ipairs(errors) do eprint("  " .. e) end
  end
  return cfg
end
M.load_config = load_config

local function open_store(cfg, cmd)
  local db, err = require("usersync.state").open(cfg.state)
  if not db then eprint(("usersync %s: cannot open the store %s: %s"):format(cmd, cfg.state, err)) end
  return db
end

function commands.history(args)
  local opts, pos = parse(args, 2, { help = "flag", json = "flag", sync = "value", limit = "value" })
  if not opts then eprint("usersync history: " .. pos); return EXIT_USAGE end
  if opts.help then io.write(HELP.history); return EXIT_OK end
  if #pos > 0 then eprint("usersync history: unexpected argument " .. pos[1]); return EXIT_USAGE end
  local limit = opts.limit and math.tointeger(tonumber(opts.limit))
  if opts.limit and (not limit or limit < 1) then eprint("usersync history: --limit needs a positive number"); return EXIT_USAGE end
  local cfg = load_config(opts, "history")
  if not cfg then return EXIT_USAGE end
  local db = open_store(cfg, "history")
  if not db then return EXIT_FAILED end
  local history = require "usersync.history"
  local runs = history.runs(db, { sync = opts.sync, limit = limit })
  db:close()
  if opts.json then
    local json = require "usersync.json"
    io.write(assert(json.encode(json.array(runs), { sort_keys = true })), "\n")
  else
    io.write(history.runs_text(runs))
  end
  return EXIT_OK
end

function commands.show(args)
  local opts, pos = parse(args, 2, { help = "flag", json = "flag" })
  if not opts then eprint("usersync show: " .. pos); return EXIT_USAGE end
  if opts.help then io.write(HELP.show); return EXIT_OK end
  local id = pos[1] and math.tointeger(tonumber(pos[1]))
  if not id then eprint("usersync show: which run? (usersync show RUN, see usersync history)"); return EXIT_USAGE end
  local cfg = load_config(opts, "show")
  if not cfg then return EXIT_USAGE end
  local db = open_store(cfg, "show")
  if not db then return EXIT_FAILED end
  local history = require "usersync.history"
  local run, ops = history.show(db, id)
  db:close()
  if not run then eprint("usersync show: " .. ops); return EXIT_USAGE end
  if opts.json then
    local json = require "usersync.json"
    run.operations = json.array(ops)
    io.write(assert(json.encode(run, { sort_keys = true })), "\n")
  else
    io.write(history.show_text(run, ops))
  end
  return EXIT_OK
end

local function script_dir(path)
  return path:match("^(.*)/[^/]*$") or "."
end

function commands.run(args)
  local opts, pos = parse(args, 2, { help = "flag", ["dry-run"] = "flag" }, true)
  if not opts then eprint("usersync run: " .. pos); return EXIT_USAGE end
  if opts.help then io.write(HELP.run); return EXIT_OK end
  local script = pos[1]
  if not script then eprint("usersync run: which script? (usersync run SCRIPT.lua [args...])"); return EXIT_USAGE end
  local fn, err = loadfile(script, "t")
  if not fn then eprint("usersync run: " .. err); return EXIT_USAGE end
  local dir = script_dir(script)
  package.path = dir .. "/?.lua;" .. dir .. "/?/init.lua;" .. package.path
  arg = { [0] = script }
  for i = 2, #pos do arg[i - 1] = pos[i] end
  local ok, result = xpcall(fn, function(e)
    if type(e) ~= "string" then
      local mt = getmetatable(e)
      e = (mt and mt.__tostring) and tostring(e) or ("(error object is a " .. type(e) .. " value)")
    end
    return debug.traceback(e, 2)
  end, table.unpack(arg, 1, #pos - 1))
  io.stdout:flush()
  if not ok then
    eprint(result)
    return EXIT_FAILED
  end
  if math.type(result) == "integer" then return result end
  return EXIT_OK
end

local function version()
  local v = core.versions()
  local cjson = require "cjson"
  io.write(("usersync %s\n"):format(v.usersync))
  io.write(("  %s\n"):format(v.lua))
  io.write(("  libcurl %s (TLS: %s)\n"):format(v.curl, v.tls))
  io.write(("  PCRE2 %s\n"):format(v.pcre2))
  io.write(("  SQLite %s\n"):format(v.sqlite))
  io.write(("  lua-cjson %s\n"):format(cjson._VERSION or "?"))
  io.write(("  %s\n"):format(v.openssl))
  return EXIT_OK
end

function M.main(args)
  local cmd = args[1]
  if cmd == nil or cmd == "--help" or cmd == "-h" or cmd == "help" then
    local topic = cmd == "help" and args[2]
    if topic and HELP[topic] then io.write(HELP[topic]) else io.write(USAGE) end
    return cmd == nil and EXIT_USAGE or EXIT_OK
  end
  if cmd == "--version" or cmd == "version" then return version() end
  local f = commands[cmd]
  if not f then
    eprint("usersync: unknown command '" .. cmd .. "' (see usersync --help)")
    return EXIT_USAGE
  end
  return f(args)
end

return M
