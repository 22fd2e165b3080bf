-- usersync.cli: the command line. host.c calls M.main(argv) in protected
-- mode and exits with the integer it returns:
--   0 done, 1 some operations failed, 2 usage or config error,
--   3 stopped by a safety limit.
local core = require "usersync.core"
local secrets = require "usersync.secrets"

local M = {}

local EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

-- Output state of this process (set by setup_output): the progress reporter
-- every stderr line goes through (so a bar is never cut by a line), and
-- whether stderr / stdout may be coloured.
local out = { reporter = nil, color_err = false, color_out = false, quiet = false, verbose = false,
              global = {} }

local function stderr_line(line)
  if out.reporter then out.reporter:above(line) else io.stderr:write(line, "\n") end
end

-- Writes an error or notice to stderr, masked. Errors follow one shape: the
-- first line says what failed ("usersync sync: reading jira failed: ..."),
-- in red on a colour terminal; every further line of the message is detail,
-- indented below it. Lines that are already indented are detail as given.
local function eprint(...)
  local parts = table.pack(...)
  for i = 1, parts.n do parts[i] = tostring(parts[i]) end
  local text = secrets.mask(table.concat(parts, " "))
  local first = true
  for line in (text .. "\n"):gmatch("(.-)\n") do
    if first then
      local headline = line:sub(1, 1) ~= " "
      stderr_line(headline and require("usersync.progress").paint(out.color_err, "red", line) or line)
      first = false
    else
      stderr_line(line:sub(1, 1) == " " and line or ("  " .. line))
    end
  end
end
M.eprint = eprint

local USAGE = [[
usage: usersync [--version] [--help] [-c FILE] [-q] [-v] COMMAND [options]

commands:
  check            validate the config, reach every server, report versions and rights
  plan             read Okta and the targets, print what would change; writes nothing
  apply FILE       apply exactly a plan saved with `plan --out FILE`
  sync             plan and apply in one step
  run SCRIPT.lua   run an ad-hoc Lua script with the full runtime API
  history          list past runs with their counts
  show RUN         list every operation of one run
  serve            run as a daemon: schedules, Okta event hooks, SCIM endpoints, health and metrics
  accounts         every account of a target: managed or not, linked to whom, why
  explain USER     one Okta user's way through the policy, with the rules that decided
  test FILE...     run policy tests (hand-written or recorded Okta users)
  init             write a commented starter config, then check it

Every command takes -c FILE, --json where it prints data, and --help;
-q/--quiet (only errors and the result) and -v/--verbose (a line per
operation, request counts). These global options go before or after the
command (usersync -q sync, usersync sync -c FILE); long options take
--name VALUE or --name=VALUE. Progress goes to stderr: bars on a terminal,
timestamped lines otherwise; colour only on a terminal without NO_COLOR
(TERM=dumb: none).
Exit codes, the same on every command: 0 done; 1 a failure (a read that
failed outright, a failed operation, a policy error or conflict, a lock
held, a store that cannot be written); 2 usage or config error, also a
--sync, --user or --target that names nothing; 3 a safety limit or an incomplete
read withheld the destructive changes; 4 plan --detailed-exitcode: changes
pending; 130 interrupted (SIGINT). 1 wins over 3.
]]

local HELP = {
  plan = [[
usage: usersync plan [-c FILE] [--json] [--out FILE] [--user LOGIN] [--sync NAME] [--target NAME[,NAME]...] [--detailed-exitcode]

Reads Okta and every target and prints what a sync would change, grouped by
target, each change with its reason, then a summary. Nothing is written to
any server; the store only learns that earlier runs whose process died were
interrupted, and the outcome of their changes whose answer was lost (read
from the targets). --json prints the machine form; --out FILE saves
it for `usersync apply FILE`. --user limits the plan to one Okta user (login
or id); --sync to one sync entry; --target (repeated, or a comma list) to
those targets of the entries (the others are not read; entries without any
of them are not planned; apply of the saved plan keeps to them). Exit 0
planned without errors; 1 a read failed outright, a target could not be
read, or a policy error or conflict; 2 a --sync, --user or --target that
names nothing; 3 a safety limit or an incomplete
read would withhold the destructive part (sync --force, or apply --force
on the saved plan, applies it after review). --detailed-exitcode: 4 instead
of 0 when the plan has changes (0: nothing to do). SIGINT: exit 130.
]],
  apply = [[
usage: usersync apply [-c FILE] [--force] [--json] [--target NAME[,NAME]...] PLAN.json

Applies exactly the plan saved by `usersync plan --out PLAN.json`. It reads
Okta and the targets again first and refuses the plan (exit 2) when a
destructive change in it is no longer planned (the base changed); changes
planned since are not applied (run plan again). Changes usersync itself
applied since the plan was made do not count as a changed base. --force
applies past the safety limits: the part of a reviewed plan a safety stop
withheld. --target applies only the part of the plan for those targets
(the rest is left for later); a plan made with plan --target is applied to
its targets only, and --target must then name some of them (else exit 2). Exit 0 done, 1 a failure (a read, an operation, the lock,
the store), 3 stopped by a safety limit (nothing destructive applied), 130
interrupted (SIGINT, as for sync).
]],
  sync = [[
usage: usersync sync [-c FILE] [--user LOGIN] [--sync NAME] [--target NAME[,NAME]...] [--force] [--json]

Plans and applies in one step (what the scheduler runs). --user syncs one
Okta user now (login or id). --target (repeated, or a comma list) syncs
only those targets of the entries, reading no other; the run is recorded
as limited to them (history: "full on jira") and is not a full run. Safety: an incomplete or suspicious Okta read,
more deprovisions than limits.max_deprovision or more membership removals
than limits.max_membership_removals applies nothing destructive and exits
3; --force overrides after review (never a failed read). A read that fails
outright (credentials refused, app not found, server unreachable), a failed
operation, a policy error or conflict: exit 1. Another run of the same sync
holding the lock, or a store that cannot be written: fails at once (exit 1),
reading nothing. A --sync, --user or --target that names nothing: exit 2
("no target 'x' in sync entry 'main' (known: ...)", with a suggestion). SIGINT
(Ctrl-C) stops between operations (those in flight finish), records the run
as interrupted with what was done, and exits 130; a second SIGINT ends it
at once.
]],
  history = [[
usage: usersync history [-c FILE] [--json | --csv] [--sync NAME] [--limit N]

Lists past runs, newest first: when, which sync, trigger, what the run
covered (full, user LOGIN, users A,B,..., event, incremental; "on jira"
when --target limited it), duration,
the changes it applied (counted from its journal, so an interrupted run
shows what it did), failures, what it could not do and outcome. Reads the
store named by the config's `state`. --csv writes RFC 4180 CSV with a
header row (columns in the README; a field starting with = + - @, tab or
CR gets a leading ' so a spreadsheet does not run it as a formula); --json
the shape usersync.history/1.
]],
  show = [[
usage: usersync show [-c FILE] [--json | --csv] RUN

Lists every operation of run RUN (see usersync history) with its target,
subject, result and error, then what the run could not do: policy errors
(with the hook's message), username conflicts, targets that could not be
read, destructive changes a safety stop withheld (with the reason), and
deprovisions held back because a hand-over of Jira leads failed (with its
error). --csv writes RFC 4180 CSV with a header row (columns in the README; a
field starting with = + - @, tab or CR gets a leading ', as in history);
--json the shape usersync.show/1.
]],
  check = [[
usage: usersync check [-c FILE] [--json] [--config-only]

Loads the config (a Lua file returning a table, evaluated in the sandbox) and
validates it against the schema. Every error names the file and the key path;
all errors are reported together; a secret too short to be masked safely is
a warning. Every file the config names must exist (policies, ca_file,
serve.tls, job scripts), and every policy and job script must compile: a
policy is loaded in the sandbox as sync loads it, so a policy error is a
config error here too, with its file and line. Relative paths in the config are taken from its directory. It
reports the store: its path, how many accounts it links and its last run, or
that it does not exist yet (the first sync creates it; check creates no
file). Then it reaches every server: for each
Okta source whether it is reachable, the token or OAuth app valid, the app
found, and whether it can read users, groups, apps and logs; for each target
the product and version, who usersync is authenticated as, and whether that
account has the admin rights a sync needs. --config-only skips the servers.
Exit 0 when all is well, 1 when a server is not ready or the store cannot be
read, 2 for a config error.
]],
  serve = [[
usage: usersync serve [-c FILE] [-q] [-v]

Runs until SIGTERM: every sync entry with `every` on that interval (with a
small jitter; missed runs are not stacked). Every run takes the locks sync
takes (the entry's and those of entries sharing a target with it), so it
never overlaps a run of them, also one started by hand or by another serve:
a run kept out is skipped, logged and tried again 30 s later; with serve.poll_logs, a
System Log poll that syncs just the users whose profile, status, app
assignment or group membership changed (a lastUpdated watermark when the
token may not read logs); the Okta event hook at serve.okta_hook.path, which
syncs the user who signs in (user.session.start) and the users that
lifecycle, profile, membership and app events name; a SCIM 2.0 endpoint
per `scim` source at /scim/v2/<source>/ (Bearer token of the source) whose
pushes are stored and sync the users they touched, batched after a quiet
period of 2 s; serve.jobs scripts on their intervals. HTTP on
serve.listen (TLS with serve.tls): GET /healthz,
GET /readyz (503 until the config and store are open, or while the last
full run of an entry had failures), GET /metrics (Prometheus text,
usersync_ prefix); with serve.status = { user, password }, the status page
at / (HTTP Basic auth; read-only but for "sync now" buttons);
serve.health_listen: a second plain-HTTP listener with just these three. A request must arrive within serve.request_timeout
(5s), and serve.max_connections_per_ip (32) / max_connections (512) cap
connections. Users named by events wait in the store until their run
went through; group-level events bring the full run forward. SIGHUP reloads
the config (a bad config is reported and the old one kept); SIGTERM stops
between operations, marks the run interrupted and exits 0. Logs are JSON
lines when stderr is not a terminal.
]],
  run = [[
usage: usersync run [-c FILE] [--dry-run] SCRIPT.lua [args...]

Runs SCRIPT.lua with the full runtime API (require "usersync.http", ".json",
".re", ".store", ".log", ".time") and the global `usersync`: the
configured clients by name (usersync.source "okta", usersync.target "jira"),
usersync.store(), usersync.config(). With --dry-run every target write is
printed instead of sent. `arg` holds the arguments (arg[0] is the script).
The script's directory is on package.path; the current directory is not.
What it prints (print, io.write, io.stdout, io.stderr) has its secrets masked
like a log line; files it writes are its own. An uncaught error prints a
traceback and exits 1; a script that returns an integer exits with it.
]],
  accounts = [[
usage: usersync accounts [-c FILE] [--target NAME] [--unmanaged] [--json | --csv]

Lists every account of a target (each target in turn without --target),
read live from the server, with whether usersync manages it (a link in
the store), the Okta user it is linked to (login and id), when it was
linked and whether usersync created or adopted it. For an account usersync
leaves alone it says why: no Okta user in scope maps to it, a conflict
(two Okta users map to its name, or its name is linked to another user),
the Okta user it would belong to is left out by the policy (a status such
as STAGED, or the user hook said nil), or not linked yet (the next sync
adopts it). Reads Okta and the target as plan does; writes nothing.
--unmanaged lists only the accounts usersync leaves alone. --csv writes
RFC 4180 CSV with a header row; --json the shape usersync.accounts/1.
Exit 0 listed; 1 Okta or the target could not be read; 2 a --target that
names nothing.
]],
  explain = [[
usage: usersync explain [-c FILE] [--target NAME] [--json] USER

Shows one Okta user's way through the policy (USER: login or Okta id):
the Okta record (status and the profile fields the mapping reads), per
sync entry whether the user is in scope and how (app assignment, filter),
and per target: what the status maps to, the account linked to the user
(since when), the user hook's account (each field with the attribute
mapping or default it came from), each Okta group with the include or
exclude rule that let it count or not, the target groups with the group
map entry, rename rule or default that put them there, and what a plan of
this user would change, with the reasons, conflicts and notes (as
usersync plan --user USER). Works before the first sync: without a store
it plans as a first sync and creates no file. Writes nothing to a server.
--json: the shape usersync.explain/1. Exit 0 explained; 1 a read failed,
or the plan of this user has a policy error or a conflict; 2 no such Okta
user, or a --target that names nothing.
]],
  test = [[
usage: usersync test [-c FILE] [--record FIXTURE.json] [--sync NAME] FILE... | USER...

Runs policy test files: each is Lua run in the sandbox with
usersync.policy(PATH [, settings]) (the policy at PATH, relative to the
test file, the default hooks filled in, for a sync entry with these
settings; its hooks take a sync's arguments, ctx optional),
usersync.user{...} and usersync.group(NAME) to write Okta users and
groups by hand, usersync.fixture(PATH) for recorded ones, test(NAME, fn)
and the assertions expect(v).to_be(w), expect(t).to_equal(u) (deep) and
expect(fn).to_fail([PATTERN]). Output is TAP: one "ok N - ..." or
"not ok N - ..." line per test (or per assertion outside a test), then
1..N and a summary. Exit 0 when every assertion passed; 1 when one failed
or a file could not run; 2 no file given. --record FIXTURE.json USER...
reads the named Okta users (login or id) and their groups through the config's source (of
--sync NAME, else the first entry) and writes them to FIXTURE.json, for
usersync.fixture: credentials, links and anything shaped like a secret
are left out. No config is needed to run tests.
]],
  init = [[
usage: usersync init [-c FILE] [--okta-url URL] [--token-env NAME | --token-file PATH]
                     [--app-id ID] [--jira URL] [--confluence URL] [--bitbucket URL]
                     [--config-only]

Writes a commented starter config to FILE (default ./usersync.conf.lua)
and then runs usersync check on it. On a terminal it asks for what the
flags do not give: the Okta org URL, where the API token comes from (an
environment variable or a file; never the token itself), the Okta app id
and the targets' URLs; without a terminal the flags must give the Okta URL
and at least one target. Each target's token is read from the environment
variable named after it (JIRA_TOKEN, CONFLUENCE_TOKEN, BITBUCKET_TOKEN).
It never overwrites a file (exit 2). --config-only: check without reaching
the servers. Exit: check's (0 all is well; 1 a server is not ready; 2 a
config error, such as a token variable that is not set yet).
]],
}

-- The options of each command (name -> "flag" | "value"), besides the
-- global ones (GLOBAL), which every command takes, before or after its name.
local SPECS = {
  check = { json = "flag", ["config-only"] = "flag" },
  plan = { json = "flag", out = "value", user = "value", sync = "value", target = "list",
           ["detailed-exitcode"] = "flag" },
  apply = { json = "flag", force = "flag", target = "list" },
  sync = { json = "flag", user = "value", sync = "value", target = "list", force = "flag" },
  run = { ["dry-run"] = "flag" },
  history = { json = "flag", csv = "flag", sync = "value", limit = "value" },
  show = { json = "flag", csv = "flag" },
  serve = {},
  accounts = { target = "value", unmanaged = "flag", json = "flag", csv = "flag" },
  explain = { target = "value", json = "flag" },
  test = { record = "value", sync = "value" },
  init = { ["okta-url"] = "value", ["token-env"] = "value", ["token-file"] = "value", ["app-id"] = "value",
           jira = "value", confluence = "value", bitbucket = "value", ["config-only"] = "flag" },
}
local GLOBAL = { config = "value", quiet = "flag", verbose = "flag", help = "flag" }
local SHORT = { c = "config", q = "quiet", v = "verbose", h = "help" }

-- Edit distance of two short words, a swap of two neighbours counting
-- as one edit (for "did you mean").
local function distance(a, b)
  local d = {}
  for i = 0, #a do d[i] = { [0] = i } end
  for j = 0, #b do d[0][j] = j end
  for i = 1, #a do
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      d[i][j] = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:sub(i, i) == b:sub(j - 1, j - 1) and a:sub(i - 1, i - 1) == b:sub(j, j) then
        d[i][j] = math.min(d[i][j], d[i - 2][j - 2] + 1)
      end
    end
  end
  return d[#a][#b]
end

-- The candidate nearest to word, when near enough to be a typo; nil else.
local function nearest(word, candidates)
  local best, best_d
  for _, c in ipairs(candidates) do
    local d = distance(word, c)
    if c:sub(1, #word) == word and #word >= 2 then d = math.min(d, 1) end
    if (not best_d or d < best_d or (d == best_d and c < best)) then best, best_d = c, d end
  end
  if best and best_d <= math.max(1, math.min(2, #word // 3)) then return best end
  return nil
end
M.nearest = nearest

local function unknown_option(opt, spec)
  local names = {}
  for name in pairs(spec) do names[#names + 1] = "--" .. name end
  for name in pairs(GLOBAL) do names[#names + 1] = "--" .. name end
  table.sort(names)
  local near = opt:sub(1, 2) == "--" and nearest(opt, names)
  return "unknown option " .. opt .. (near and (" (did you mean " .. near .. "?)") or "")
end

-- Splits argv (from index start) into options and positional arguments,
-- as GNU getopt_long does: --name VALUE or --name=VALUE, -c FILE or -cFILE,
-- short flags bundled (-qv), "--" ends the options. spec: the command's
-- options; the global ones are taken too, and those given before the
-- command (out.global) are the defaults. Unknown options are usage errors.
-- stop_at_positional (run): everything from the first positional on is
-- positional (the script's own arguments).
local function parse(args, start, spec, stop_at_positional)
  local opts, pos = {}, {}
  for k, v in pairs(out.global) do opts[k] = v end
  local i = start
  while i <= #args do
    local a = args[i]
    if a == "--" then
      for j = i + 1, #args do pos[#pos + 1] = args[j] end
      break
    elseif a:sub(1, 2) == "--" then
      local name, value = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:sub(3)
      local kind = spec[name] or GLOBAL[name]
      if not kind then return nil, unknown_option(a:match("^[^=]*"), spec) end
      if kind == "value" or kind == "list" then
        if not value then
          value = args[i + 1]
          if value == nil then return nil, "--" .. name .. " needs a value" end
          i = i + 1
        end
        if kind == "list" then
          -- repeatable, and each value a comma list: --target a,b --target c
          local list = opts[name] or {}
          for item in value:gmatch("[^,]*") do
            item = item:match("^%s*(.-)%s*$")
            if item == "" then return nil, "--" .. name .. " needs a name (--" .. name .. " A,B or repeated)" end
            list[#list + 1] = item
          end
          opts[name] = list
        else
          opts[name] = value
        end
      else
        if value then return nil, "--" .. name .. " takes no value" end
        opts[name] = true
      end
      i = i + 1
    elseif a:sub(1, 1) == "-" and #a > 1 then
      local j = 2
      while j <= #a do
        local ch = a:sub(j, j)
        local name = SHORT[ch]
        if not name then return nil, unknown_option(#a == 2 and a or ("-" .. ch), spec) end
        if GLOBAL[name] == "value" then
          local value = a:sub(j + 1)
          if value == "" then
            value = args[i + 1]
            if value == nil then return nil, "-" .. ch .. " needs a value" end
            i = i + 1
          end
          opts[name] = value
          break
        end
        opts[name] = true
        j = j + 1
      end
      i = i + 1
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

-- The exit statuses, one meaning each on every command (the man page's
-- EXIT STATUS; the README has the same table).
M.EXIT_STATUS = {
  { "0", "Done; for plan: planned without errors." },
  { "1", "A failure: a read failed outright (credentials refused, the Okta app or user not found, a server unreachable), a target could not be read, an operation failed, a policy error or username conflict, another run holding the lock, a store that cannot be written; usersync show RUN lists what failed. For check: a server is not ready. For run: the script raised an error." },
  { "2", "Usage or config error, including a selector that names nothing (--sync NAME not in the config, --user naming no Okta user and no linked account, --target naming no target of the sync entries); apply refusing a plan whose base changed." },
  { "3", "A safety limit, or an incomplete or invalid read (a page that failed past its retries, an invalid record), withheld the destructive changes: nothing destructive was applied. Review the plan, then use --force (sync, or apply on a saved plan). When a failure happened too, the status is 1." },
  { "4", "plan --detailed-exitcode only: the plan has changes (without changes: 0)." },
  { "130", "Interrupted by SIGINT: plan, sync and apply stop between operations, record the run as interrupted and print what was done." },
}

-- The options every command takes, before or after its name (man page).
M.GLOBAL_OPTIONS = { ["-c"] = true, ["-q"] = true, ["-v"] = true, ["--help"] = true }

-- The help texts, for the man page generator (cmake/, issue 7).
M.USAGE, M.HELP = USAGE, HELP

-- Commands whose log lines are "auto" (JSON off a terminal) unless
-- USERSYNC_LOG_FORMAT says otherwise; the others write text lines off a
-- terminal too (USERSYNC_LOG_FORMAT=auto or json: JSON lines).
local AUTO_LOG_FORMAT = { run = true }

-- Sets up stderr for a command after its options are parsed: the log level
-- (--quiet: warnings and errors only; --verbose: debug), the log format
-- (text, unless USERSYNC_LOG_FORMAT asks for json), colour, and the
-- progress reporter every stderr line goes through. Progress is shown when
-- the log level lets info lines through (USERSYNC_LOG_LEVEL=warn hides it).
local function setup_output(opts, cmd)
  local log = require "usersync.log"
  local progress = require "usersync.progress"
  local quiet = (opts.quiet or out.global.quiet) and true or false
  local verbose = (opts.verbose or out.global.verbose) and not quiet
  local level = quiet and "warn" or (verbose and "debug" or log.level())
  local env_format = os.getenv("USERSYNC_LOG_FORMAT")
  if env_format ~= "json" and env_format ~= "text" and env_format ~= "auto" then env_format = nil end
  if env_format == "auto" or (not env_format and AUTO_LOG_FORMAT[cmd]) then
    env_format = core.isatty(2) and "text" or "json"
  end
  local format = env_format or "text"
  out.quiet, out.verbose = quiet, verbose
  out.color_err = progress.color_allowed(core.isatty(2))
  out.color_out = progress.color_allowed(core.isatty(1))
  local shown = level == "debug" or level == "info"
  out.reporter = progress.new{ stream = io.stderr, quiet = not shown or opts.json, verbose = verbose,
    emit = format == "json" and function(lvl, text) log.event(lvl:lower(), text) end or nil }
  log.configure{ level = level, format = format, stream = function(line) out.reporter:above(line) end }
end
M.setup_output = setup_output

local commands = {}

-- Reaches every source and target of a valid config and asks each for its
-- report. Returns { sources = {name = report}, targets = {name = report} }, all_ok.
local function check_servers(cfg)
  local engine = require("usersync.engine")
  local e = assert(engine.open(cfg, { no_store = true }))
  local found, all_ok = { sources = {}, targets = {} }, true
  local names = {}
  for name in pairs(cfg.sources) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local ok, r = pcall(function() return e:source(name):check() end)
    if not ok then r = { ok = false, reachable = false, error = tostring(r) } end
    found.sources[name] = r
    all_ok = all_ok and r.ok == true
  end
  names = {}
  for name in pairs(cfg.targets) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local ok, r = pcall(function() return e:target(name):check() end)
    if not ok then r = { reachable = false, detail = tostring(r) } end
    r.ok = r.reachable == true and r.admin ~= false and r.code == nil
    found.targets[name] = r
    all_ok = all_ok and r.ok
  end
  e:close()
  return found, all_ok
end

local function status_word(st)
  if type(st) ~= "table" then return tostring(st) end
  return st.status .. ((st.message and st.status ~= "ok") and (" (" .. secrets.mask(st.message) .. ")") or "")
end

-- Masks the free-text members (error, detail, message) of a report, in
-- place, at any depth; names, URLs, versions and every key stay as they are.
local FREE_TEXT = { error = true, detail = true, message = true }
local function mask_free_text(t)
  for k, v in pairs(t) do
    if type(v) == "string" and FREE_TEXT[k] then t[k] = secrets.mask(v)
    elseif type(v) == "table" then mask_free_text(v) end
  end
  return t
end

-- The human form of check_servers' reports; only_problems: just the
-- servers that are not ready (--quiet).
local function checks_text(cfg, checks, only_problems)
  local buf = {}
  local function w(...) for _, v in ipairs({ ... }) do buf[#buf + 1] = tostring(v) end end
  local names = {}
  for name in pairs(checks.sources) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local r = checks.sources[name]
    if only_problems and r.ok then goto next_source end
    local sc = cfg.sources[name]
    w(("source %s (%s, %s): %s\n"):format(name, sc.type, sc.url or ("pushed to /scim/v2/" .. name .. "/"),
      r.ok and "ok" or "PROBLEM"))
    if r.stored then w("  stored: ", r.stored, "\n") end
    if r.error then w("  error: ", secrets.mask(r.error), "\n") end
    w(("  reachable: %s\n"):format(r.reachable and "yes" or "no"))
    if r.auth then w("  credentials: ", status_word(r.auth), "\n") end
    if r.auth and r.auth.status == "denied" then
      w(("  what to do: check sources.%s.%s\n"):format(name, cfg.sources[name].oauth
        and "oauth (the service app's client_id, key and granted okta.* scopes)"
        or "token (an SSWS API token of an admin; Okta expires tokens unused for 30 days)"))
    end
    if r.app then w("  app ", tostring(cfg.sources[name].app_id), ": ", status_word(r.app), "\n") end
    for _, what in ipairs({ "users", "groups", "apps", "logs" }) do
      if r[what] then w(("  read %s: %s\n"):format(what, status_word(r[what]))) end
    end
    ::next_source::
  end
  names = {}
  for name in pairs(checks.targets) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local r = checks.targets[name]
    if only_problems and r.ok then goto next_target end
    w(("target %s (%s, %s): %s\n"):format(name, cfg.targets[name].type, cfg.targets[name].url, r.ok and "ok" or "PROBLEM"))
    w(("  reachable: %s\n"):format(r.reachable and "yes" or "no"))
    if r.code == "EAUTH" then
      local t = cfg.targets[name]
      w(("  credentials: refused (HTTP 401): check targets.%s.%s\n"):format(name,
        t.token ~= nil and "token (a personal access token of an admin)"
          or t.application ~= nil and "application/password (the Crowd application's name and password)"
          or "user/password"))
    elseif r.user then
      w("  credentials: ok\n")
    end
    if r.product then w(("  product: %s %s\n"):format(r.product, tostring(r.version or "?"))) end
    if r.user then w(("  authenticated as: %s\n"):format(r.user)) end
    w(("  admin rights: %s\n"):format(r.admin == true and "yes" or (r.admin == false and "NO" or "unknown")))
    if r.detail then w("  detail: ", secrets.mask(r.detail), (r.code and (" [" .. r.code .. "]") or ""), "\n") end
    ::next_target::
  end
  return table.concat(buf)
end

-- What check says about the store, without creating it: { path, exists,
-- links (accounts linked), last_run = { id, sync, command, started, ended,
-- outcome } | nil, error }. An existing store is opened to read it.
local function check_store(cfg)
  local r = { path = cfg.state, exists = false }
  local f = io.open(cfg.state, "rb")
  if not f then return r end
  f:close()
  r.exists = true
  local db, err = require("usersync.state").open(cfg.state)
  if not db then r.error = secrets.mask(tostring(err)); return r end
  local ok, why = pcall(function()
    r.links = db:first("SELECT count(*) AS n FROM links").n
    local rerr
    r.last_run, rerr = db:first("SELECT id, sync, command, started, ended, outcome FROM runs ORDER BY id DESC LIMIT 1")
    if rerr then error(rerr, 0) end
  end)
  db:close()
  if not ok then r.error = secrets.mask(tostring(why)) end
  return r
end

local function store_text(st)
  if not st.exists then
    return ("store %s: does not exist yet (the first sync or apply creates it)\n"):format(st.path)
  end
  if st.error then return ("store %s: cannot be read: %s\n"):format(st.path, st.error) end
  local run = st.last_run
  return ("store %s: %d account%s linked, %s\n"):format(st.path, st.links, st.links == 1 and "" or "s",
    run and ("last run %d (sync %s, %s, %s)"):format(run.id, run.sync, run.started, run.outcome) or "no runs yet")
end

-- What a run would need beyond the schema: every file the config names
-- exists (sources' ca_file, policies, serve.tls, job scripts) and every
-- policy and job script compiles; each policy is loaded through
-- usersync.policy in the sandbox, as sync loads it. Returns a list of
-- errors "FILE: key.path: message" (empty when all is well).
local function check_files(cfg)
  local errs, file = {}, cfg._path
  local function exists(p)
    local f = io.open(p, "rb")
    if f then f:close(); return true end
    return false
  end
  local function need(key, p)
    if p == nil then return false end
    if exists(p) then return true end
    errs[#errs + 1] = ("%s: %s: %s: no such file (the path is taken from the config's directory)"):format(file, key, p)
    return false
  end
  local names = {}
  for name in pairs(cfg.sources) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do need(("sources.%s.ca_file"):format(name), cfg.sources[name].ca_file) end
  names = {}
  for name in pairs(cfg.targets) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do need(("targets.%s.ca_file"):format(name), cfg.targets[name].ca_file) end
  local policy = require "usersync.policy"
  for i, s in ipairs(cfg.sync) do
    local key = ("sync[%d].policy"):format(i)
    if need(key, s.policy) then
      local p, err = policy.load(s.policy, { run_instructions = s.limits and s.limits.policy_instructions })
      if not p then errs[#errs + 1] = ("%s: %s: %s"):format(file, key, secrets.mask(tostring(err))) end
    end
  end
  local serve = cfg.serve or {}
  if serve.tls then
    need("serve.tls.cert", serve.tls.cert)
    need("serve.tls.key", serve.tls.key)
  end
  for i, job in ipairs(serve.jobs or {}) do
    local key = ("serve.jobs[%d].script"):format(i)
    if need(key, job.script) then
      local fn, err = loadfile(job.script, "t", {})  -- compiled, not run
      if not fn then errs[#errs + 1] = ("%s: %s: %s"):format(file, key, secrets.mask(tostring(err))) end
    end
  end
  return errs
end

function commands.check(args)
  local opts, pos = parse(args, 2, SPECS.check)
  if not opts then eprint("usersync check: " .. pos); return EXIT_USAGE end
  setup_output(opts, "check")
  if opts.help then io.write(HELP.check); return EXIT_OK end
  if #pos > 0 then eprint("usersync check: unexpected argument " .. pos[1]); return EXIT_USAGE end
  local path = opts.config or "usersync.conf.lua"
  local cfg, errors = require("usersync.config").load(path)
  if cfg then
    local ferrs = check_files(cfg)
    if #ferrs > 0 then cfg, errors = nil, ferrs end
  end
  local checks, all_ok, store
  if cfg then store = check_store(cfg) end
  if cfg and not opts["config-only"] then checks, all_ok = check_servers(cfg) end
  if opts.json then
    local json = require "usersync.json"
    for i, e in ipairs(errors) do errors[i] = secrets.mask(e) end
    local doc = { config = path, valid = cfg ~= nil, errors = json.array(errors),
                  warnings = json.array(cfg and cfg._warnings or {}), store = store,
                  servers = checks and mask_free_text(checks) }
    io.write(assert(json.encode(doc, { sort_keys = true })), "\n")
    if not cfg then return EXIT_USAGE end
    if store and store.error then return EXIT_FAILED end
    return (checks and not all_ok) and EXIT_FAILED or EXIT_OK
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
  for _, w in ipairs(cfg._warnings) do io.write("  warning: ", w, "\n") end
  io.write(store_text(store))
  local code = EXIT_OK
  if checks then
    io.write(checks_text(cfg, checks, out.quiet))
    if not all_ok then
      eprint("usersync check: some servers are not ready (see above)")
      code = EXIT_FAILED
    end
  end
  if store.error then
    eprint("usersync check: the store cannot be read (see above)")
    code = EXIT_FAILED
  end
  return code
end

-- Exit 2 when a selector names nothing: --sync NAME not in the config.
local function check_sync_name(cfg, name, cmd, known_runs)
  if not name then return true end
  local names = {}
  for _, s in ipairs(cfg.sync) do
    if s.name == name then return true end
    names[#names + 1] = s.name
  end
  if known_runs and known_runs(name) then return true end
  local near = nearest(name, names)
  eprint(("usersync %s: no sync entry '%s' (known: %s)%s"):format(cmd, name, table.concat(names, ", "),
    near and (("; did you mean %s?"):format(near)) or ""))
  return false
end

-- Exit 2 when --target names a target that no sync entry selected (the
-- one --sync names, else every entry) syncs. Returns the list without
-- repeats, or nil after printing the error.
local function check_targets(cfg, sync_name, targets, cmd)
  if not targets then return true end
  local entries, known, seen = {}, {}, {}
  for _, s in ipairs(cfg.sync) do
    if not sync_name or s.name == sync_name then
      entries[#entries + 1] = "'" .. s.name .. "'"
      for _, t in ipairs(s.targets) do
        if not seen[t] then seen[t] = true; known[#known + 1] = t end
      end
    end
  end
  local list, dup = {}, {}
  for _, t in ipairs(targets) do
    if not seen[t] then
      local near = nearest(t, known)
      eprint(("usersync %s: no target '%s' in sync entr%s %s (known: %s)%s"):format(cmd, t,
        #entries == 1 and "y" or "ies", table.concat(entries, ", "), table.concat(known, ", "),
        near and (("; did you mean %s?"):format(near)) or ""))
      return nil
    end
    if not dup[t] then dup[t] = true; list[#list + 1] = t end
  end
  return list
end

-- Loads the config for a command; prints its errors. Returns cfg | nil.
-- What to do when the store cannot be opened (sync, plan, history...).
local STORE_TODO = "  what to do: check that the store's directory exists and this user can write it and the file "
  .. "(`state` in the config names it)"

local function load_config(opts, cmd)
  local path = opts.config or "usersync.conf.lua"
  local cfg, errors = require("usersync.config").load(path, { serve = cmd == "serve" })
  if not cfg then
    eprint(("usersync %s: config %s has %d error%s"):format(cmd, path, #errors, #errors == 1 and "" or "s"))
    for _, e in ipairs(errors) do eprint("  " .. e) end
    return nil
  end
  for _, w in ipairs(cfg._warnings) do require("usersync.log").warn("%s", w) end
  return cfg
end
M.load_config = load_config

local function open_store(cfg, cmd)
  local db, err = require("usersync.state").open(cfg.state)
  if not db then
    eprint(("usersync %s: cannot open the store %s: %s"):format(cmd, cfg.state, err))
    eprint(STORE_TODO)
  end
  return db
end

function commands.history(args)
  local opts, pos = parse(args, 2, SPECS.history)
  if not opts then eprint("usersync history: " .. pos); return EXIT_USAGE end
  setup_output(opts, "history")
  if opts.help then io.write(HELP.history); return EXIT_OK end
  if #pos > 0 then eprint("usersync history: unexpected argument " .. pos[1]); return EXIT_USAGE end
  local limit = opts.limit and math.tointeger(tonumber(opts.limit))
  if opts.limit and (not limit or limit < 1) then eprint("usersync history: --limit needs a positive number"); return EXIT_USAGE end
  local cfg = load_config(opts, "history")
  if not cfg then return EXIT_USAGE end
  local db = open_store(cfg, "history")
  if not db then return EXIT_FAILED end
  -- a sync entry since removed from the config still has its runs
  if not check_sync_name(cfg, opts.sync, "history", function(name)
    return db:first("SELECT 1 AS x FROM runs WHERE sync = ? LIMIT 1", name) ~= nil
  end) then db:close(); return EXIT_USAGE end
  local history = require "usersync.history"
  local runs = history.runs(db, { sync = opts.sync, limit = limit })
  db:close()
  -- errors are free text (scrubbed when written; again for older stores)
  for _, r in ipairs(runs) do r.error = r.error and secrets.mask(r.error) end
  if opts.json and opts.csv then eprint("usersync history: --json and --csv exclude each other"); return EXIT_USAGE end
  if opts.json then
    io.write(history.runs_json(runs), "\n")
  elseif opts.csv then
    io.write(history.runs_csv(runs))
  else
    io.write(history.runs_text(runs))
  end
  return EXIT_OK
end

function commands.show(args)
  local opts, pos = parse(args, 2, SPECS.show)
  if not opts then eprint("usersync show: " .. pos); return EXIT_USAGE end
  setup_output(opts, "show")
  if opts.help then io.write(HELP.show); return EXIT_OK end
  local id = pos[1] and math.tointeger(tonumber(pos[1]))
  if not id then eprint("usersync show: which run? (usersync show RUN, see usersync history)"); return EXIT_USAGE end
  local cfg = load_config(opts, "show")
  if not cfg then return EXIT_USAGE end
  local db = open_store(cfg, "show")
  if not db then return EXIT_FAILED end
  local history = require "usersync.history"
  if opts.json and opts.csv then eprint("usersync show: --json and --csv exclude each other"); db:close(); return EXIT_USAGE end
  local run, ops, findings = history.show(db, id)
  db:close()
  if not run then eprint("usersync show: " .. ops); return EXIT_USAGE end
  run.error = run.error and secrets.mask(run.error)
  for _, o in ipairs(ops) do o.error = o.error and secrets.mask(o.error) end
  for _, f in ipairs(findings) do f.message = secrets.mask(f.message) end
  if opts.json then
    io.write(history.show_json(run, ops, findings), "\n")
  elseif opts.csv then
    io.write(history.show_csv(run, ops, findings))
  else
    io.write(history.show_text(run, ops, findings))
  end
  return EXIT_OK
end

local function print_plan(run_plan, opts, cfg)
  local report = require "usersync.report"
  local planfile = require "usersync.planfile"
  local time = require "usersync.time"
  local meta = { config = opts.config or "usersync.conf.lua", created = time.format(time.now()) }
  if opts.out then
    local f, err = io.open(opts.out, "w")
    if not f then eprint("usersync plan: cannot write " .. opts.out .. ": " .. err); return false end
    -- streamed: a 100,000-user plan is never one string in memory. The
    -- plan is data: never masked (planfile.write scrubs its free texts).
    planfile.write(run_plan, meta, function(piece) f:write(piece) end)
    f:write("\n")
    f:close()
  end
  if opts.json then
    planfile.write(run_plan, meta, io.write)
    io.write("\n")
  else
    report.write_plan_text(planfile.scrub(run_plan), io.write, { color = out.color_out })
    if opts.out then io.write("plan saved to ", opts.out, "; apply it with: usersync apply ", opts.out, "\n") end
  end
  return true
end

local function start_engine(opts, cmd, trigger)
  local cfg = load_config(opts, cmd)
  if not cfg then return nil, EXIT_USAGE end
  local engine = require "usersync.engine"
  out.failures = {}
  -- SIGINT: the first stops between operations (exit 130), a second ends
  -- the process at once.
  core.catch_interrupts()
  local e, err = engine.open(cfg, { trigger = trigger or "manual", should_stop = core.interrupted, progress = function(ev)
    -- Showing progress must never fail a read or an apply.
    local shown, why = pcall(out.reporter.event, out.reporter, ev)
    if not shown then require("usersync.log").debug("progress: %s", tostring(why)) end
    if ev.state == "failed" then out.failures[#out.failures + 1] = ev end
    if ev.state == "done" and ev.requests and out.verbose then
      require("usersync.log").debug("reading %s: %d requests", tostring(ev.name), ev.requests)
    end
  end })
  if not e then
    eprint(("usersync %s: %s"):format(cmd, err))
    if tostring(err):find("^cannot open the store") then eprint(STORE_TODO) end
    return nil, EXIT_FAILED
  end
  return e, cfg
end

-- --verbose: what each HTTP client did (requests, retries, rate-limit waits).
local function log_http_stats(e)
  if not out.verbose then return end
  local log = require "usersync.log"
  for key, c in pairs(e.http or {}) do
    local ok, st = pcall(c.stats, c)
    if ok and st and st.totals then
      local tt = st.totals
      log.debug("http%s: %d requests, %d attempts, %d retries, %d errors, %d gave up, %d rate-limit waits",
        key ~= "|" and (" (" .. key .. ")") or "", tt.requests or 0, tt.attempts or 0, tt.retries or 0,
        tt.errors or 0, tt.gave_up or 0, tt.governed or 0)
    end
  end
end

-- Closes the engine and prints what failed while reading: one line first
-- ("usersync sync: reading jira failed: 401 Unauthorized (EAUTH)"), then
-- what that meant for the run, indented.
local function finish_engine(e, cmd)
  out.reported = {}
  log_http_stats(e)
  e:close()
  for _, ev in ipairs(out.failures or {}) do
    local what = ev.phase == "apply" and ("applying to " .. tostring(ev.name)) or ("reading " .. tostring(ev.name))
    local msg = tostring(ev.error or "failed")
    -- The headline keeps the HTTP status when there is one; the whole
    -- message (without the client's own "name: " prefix) is the detail.
    local plain = msg:gsub("^" .. tostring(ev.name):gsub("%p", "%%%0") .. ": ", "")
    local status, why = plain:match("HTTP (%d%d%d)([^:%[\n]*)")
    local first
    if status then
      why = why:match("^%s*(.-)%s*$"):gsub("^%((.*)%)$", "%1")
      first = "HTTP " .. status .. (why ~= "" and (": " .. why) or "")
    else
      first = plain:match("^[^\n]*")
    end
    if ev.phase == "okta" then out.reported[tostring(ev.name)] = true end
    local code = ev.code and not first:find(ev.code, 1, true) and (" (" .. ev.code .. ")") or ""
    local detail = {}
    if plain ~= first then detail[#detail + 1] = plain end
    if ev.phase == "target" then
      detail[#detail + 1] = ("nothing was %s for %s; the other targets were not affected")
        :format(cmd == "plan" and "planned" or "planned or applied", tostring(ev.name))
    elseif ev.phase == "okta" then
      detail[#detail + 1] = "the Okta read failed: nothing is planned or applied for the sync entries it feeds"
    else
      detail[#detail + 1] = "the changes not yet applied are retried by the next run"
    end
    eprint(("usersync %s: %s failed: %s%s\n%s"):format(cmd, what, first, code, table.concat(detail, "\n")))
  end
  out.failures = {}
end

-- What stopped the destructive part of a plan, on stderr: first each
-- source read that failed outright (a failure, exit 1; its headline is
-- printed here unless finish_engine printed it), then the safety stops of
-- the other entries (exit 3).
local function print_stop(run_plan, cmd, force)
  local report = require "usersync.report"
  local failed = {}
  for _, s in ipairs(report.failed_reads(run_plan)) do
    failed[s] = true
    if not out.reported[s.source] then
      eprint(("usersync %s: reading %s failed: %s\nnothing was planned or applied for sync %q")
        :format(cmd, tostring(s.source), tostring(s.read.problems and s.read.problems[1] or s.read.code), s.name))
      out.reported[s.source] = true
    end
  end
  local rest = {}
  for _, s in ipairs(run_plan.syncs) do if not failed[s] then rest[#rest + 1] = s end end
  local stop, hard = report.safety({ syncs = rest }, { force = force })
  if not stop then return end
  eprint(("usersync %s: stopped by a safety limit; nothing destructive was applied:"):format(cmd))
  for _, r in ipairs(stop) do eprint("  " .. r) end
  if hard then
    eprint("  fix the failed read (see above) and run again; --force does not apply to a failed read")
  elseif cmd == "plan" then
    eprint("  review the plan; usersync sync --force (or apply --force on a plan saved with --out) applies it anyway")
  else
    eprint("  review the plan, then run again with --force to apply it anyway")
  end
end

-- Exit 2 when --user names nobody: Okta has no such user and no account
-- is linked to that login or id, in any entry planned.
local function check_user(run_plan, login, cmd)
  if not login or #run_plan.syncs == 0 then return true end
  for _, s in ipairs(run_plan.syncs) do
    local unknown = false
    for _, u in ipairs(s.unknown_users or {}) do unknown = unknown or u == login end
    if not unknown then return true end
  end
  eprint(("usersync %s: no Okta user '%s' (by login or id), and no account linked to it"):format(cmd, login))
  return false
end

-- The exit status of an interrupted command, and its message.
local EXIT_INTERRUPTED = 130
local function interrupted(cmd, what)
  eprint(("usersync %s: interrupted (SIGINT); %s"):format(cmd, what))
  return EXIT_INTERRUPTED
end

function commands.plan(args)
  local opts, pos = parse(args, 2, SPECS.plan)
  if not opts then eprint("usersync plan: " .. pos); return EXIT_USAGE end
  setup_output(opts, "plan")
  if opts.help then io.write(HELP.plan); return EXIT_OK end
  if #pos > 0 then eprint("usersync plan: unexpected argument " .. pos[1]); return EXIT_USAGE end
  local e, cfg = start_engine(opts, "plan")
  if not e then return cfg end
  if not check_sync_name(cfg, opts.sync, "plan") then e:close(); return EXIT_USAGE end
  local targets = check_targets(cfg, opts.sync, opts.target, "plan")
  if not targets then e:close(); return EXIT_USAGE end
  -- Each target's plan is written to temporary files as soon as it is
  -- planned (usersync.spool): a whole-org plan never holds every target's ops.
  local sp <close> = not opts.user and require("usersync.spool").new{
    text = not opts.json, json = opts.json or opts.out, color = out.color_out } or nil
  local run_plan, err, ecode = e:plan{ user = opts.user, sync = opts.sync, targets = opts.target and targets,
    on_target = sp and function(tp) sp:take(tp) end, sink = sp and function() return sp:sink() end }
  finish_engine(e, "plan")
  if not run_plan and core.interrupted() then return interrupted("plan", "nothing was planned") end
  if not run_plan then eprint("usersync plan: " .. err); return ecode or EXIT_FAILED end
  if not check_user(run_plan, opts.user, "plan") then return EXIT_USAGE end
  if not print_plan(run_plan, opts) then return EXIT_FAILED end
  local report = require "usersync.report"
  local stop = report.safety(run_plan)
  print_stop(run_plan, "plan", false)
  local code = report.exit_code(run_plan, stop)
  if code == EXIT_OK and opts["detailed-exitcode"] and report.has_changes(run_plan) then code = 4 end
  return code
end

-- ", 1 source not read (okta), 2 targets not read (jira, wiki)": what a
-- run could not read, so nothing was planned for it (a failure, exit 1).
local function not_read_text(nr)
  local parts = {}
  for _, what in ipairs({ "source", "target" }) do
    local list = nr and nr[what .. "s"] or {}
    if #list > 0 then
      parts[#parts + 1] = (", %d %s%s not read (%s)"):format(#list, what, #list == 1 and "" or "s",
        table.concat(list, ", "))
    end
  end
  return table.concat(parts)
end

local function print_summary(summary, opts, cmd, run_plan)
  local nr = summary.not_read or { sources = {}, targets = {} }
  if opts.json then
    local json = require "usersync.json"
    io.write(assert(json.encode({ schema = "usersync.summary/1", exit = summary.exit, runs = json.array(summary.runs), ok = summary.ok,
      failed = summary.failed, withheld = summary.withheld, stop = summary.stop and json.array(summary.stop) or nil,
      problems = summary.problems or 0, withheld_leads = summary.withheld_leads or 0,
      not_read = { sources = json.array(nr.sources), targets = json.array(nr.targets) },
      interrupted = summary.interrupted },
      { sort_keys = true })), "\n")
  else
    io.write(("applied %d change%s, %d failed%s%s%s; %s\n"):format(
      summary.ok, summary.ok == 1 and "" or "s", summary.failed, not_read_text(nr),
      (summary.problems or 0) > 0 and (", " .. summary.problems .. " user(s) not synced (conflicts or policy errors, see above)") or "",
      (summary.withheld > 0 and (", " .. summary.withheld .. " withheld by the safety limit") or "")
        .. ((summary.withheld_leads or 0) > 0 and (", " .. summary.withheld_leads .. " deprovision(s) withheld (a hand-over of leads failed)") or ""),
      #summary.runs > 0 and ("run %s (usersync show RUN for details)"):format(table.concat(summary.runs, ", "))
        or "no run recorded"))
  end
  if summary.error then eprint(("usersync %s: %s"):format(cmd, summary.error)) end
  if summary.stop then print_stop(run_plan, cmd, opts.force) end
end

-- The exit status of an apply: summary.exit, or 130 after a SIGINT.
local function apply_exit(summary, cmd)
  if summary.interrupted then
    return interrupted(cmd, ("stopped between operations: %d applied, %d failed; run %s is recorded as interrupted, the next run plans the rest")
      :format(summary.ok, summary.failed, table.concat(summary.runs, ", ")))
  end
  return summary.exit
end

function commands.sync(args)
  local opts, pos = parse(args, 2, SPECS.sync)
  if not opts then eprint("usersync sync: " .. pos); return EXIT_USAGE end
  setup_output(opts, "sync")
  if opts.help then io.write(HELP.sync); return EXIT_OK end
  if #pos > 0 then eprint("usersync sync: unexpected argument " .. pos[1]); return EXIT_USAGE end
  local e, cfg = start_engine(opts, "sync")
  if not e then return cfg end
  if not check_sync_name(cfg, opts.sync, "sync") then e:close(); return EXIT_USAGE end
  local targets = check_targets(cfg, opts.sync, opts.target, "sync")
  if not targets then e:close(); return EXIT_USAGE end
  local run_plan, err, ecode = e:plan{ user = opts.user, sync = opts.sync, lock = true,
                                       targets = opts.target and targets }
  if not run_plan then
    finish_engine(e, "sync")
    if core.interrupted() then return interrupted("sync", "nothing was applied") end
    eprint("usersync sync: " .. err)
    return ecode or EXIT_FAILED
  end
  if not check_user(run_plan, opts.user, "sync") then e:unlock_entries(); finish_engine(e, "sync"); return EXIT_USAGE end
  if not opts.json and not out.quiet then
    require("usersync.report").write_plan_text(require("usersync.planfile").scrub(run_plan), io.write,
      { color = out.color_out })
  end
  local summary = e:apply(run_plan, { force = opts.force, command = "sync" })
  finish_engine(e, "sync")
  print_summary(summary, opts, "sync", run_plan)
  return apply_exit(summary, "sync")
end

-- The predicate planfile.compare asks: did a run of usersync apply this
-- operation of a saved plan since the plan was made (its journal says
-- done)? Then its absence from a fresh plan is usersync's own doing.
local function applied_since(db, created)
  if type(created) ~= "string" then return nil end
  return function(sync, op)
    local row = db:first([[SELECT 1 AS x FROM operations o JOIN runs r ON r.id = o.run_id
        WHERE r.sync = ? AND o.target = ? AND o.kind = ? AND lower(o.subject) = lower(?) AND o.status = 'done'
          AND r.started >= ? AND (?6 IS NULL OR lower(json_extract(o.detail, '$.group')) = lower(?6)) LIMIT 1]],
      sync, op.target, op.kind, op.subject, created, op.group)
    return row ~= nil
  end
end

function commands.apply(args)
  local opts, pos = parse(args, 2, SPECS.apply)
  if not opts then eprint("usersync apply: " .. pos); return EXIT_USAGE end
  setup_output(opts, "apply")
  if opts.help then io.write(HELP.apply); return EXIT_OK end
  local file = pos[1]
  if not file then eprint("usersync apply: which plan? (usersync apply PLAN.json)"); return EXIT_USAGE end
  local f, ferr = io.open(file, "r")
  if not f then eprint("usersync apply: " .. ferr); return EXIT_USAGE end
  local text = f:read("a")
  f:close()
  local planfile = require "usersync.planfile"
  local saved, perr = planfile.decode(text)
  if not saved then eprint("usersync apply: " .. file .. ": " .. perr); return EXIT_USAGE end
  local e, code = start_engine(opts, "apply")
  if not e then return code end
  -- The targets applied: those the plan was made for (plan --target), or
  -- fewer with apply --target.
  local targets = type(saved.targets) == "table" and saved.targets or nil
  if opts.target then
    local planned = {}
    for _, t in ipairs(targets or {}) do planned[t] = true end
    for _, t in ipairs(opts.target) do
      if targets and not planned[t] then
        local near = nearest(t, targets)
        eprint(("usersync apply: no target '%s' in the plan %s (it covers: %s)%s"):format(t, file,
          table.concat(targets, ", "), near and (("; did you mean %s?"):format(near)) or ""))
        e:close()
        return EXIT_USAGE
      end
    end
    targets = check_targets(e.cfg, nil, opts.target, "apply")
    if not targets then e:close(); return EXIT_USAGE end
    -- the rest of the saved plan is left for later: not compared, not applied
    local only = {}
    for _, t in ipairs(targets) do only[t] = true end
    for _, s in ipairs(saved.syncs or {}) do
      local keep = {}
      for _, tp in ipairs(s.targets or {}) do
        if only[tp.target] then keep[#keep + 1] = tp end
      end
      s.targets = keep
    end
  end
  local fresh, err, ecode = e:plan{ user = saved.scope, lock = true, targets = targets }
  if not fresh then
    finish_engine(e, "apply")
    if core.interrupted() then return interrupted("apply", "nothing was applied") end
    eprint("usersync apply: " .. err)
    return ecode or EXIT_FAILED
  end
  local verdict = planfile.compare(saved, fresh, applied_since(e.db, saved.created))
  if #verdict.unsafe > 0 then
    finish_engine(e, "apply")
    eprint(("usersync apply: refusing %s: the base changed since it was made:"):format(file))
    for _, r in ipairs(verdict.unsafe) do eprint("  " .. r) end
    eprint("  run usersync plan again and review the new plan")
    return EXIT_USAGE
  end
  -- Apply exactly the saved operations that are still planned, per sync and target.
  local keep = {}
  for _, v in ipairs(verdict.apply) do keep[planfile.key(v.sync, v.op)] = true end
  for _, entry in ipairs(fresh.syncs) do
    for _, p in ipairs(entry.targets) do
      local ops = {}
      for _, o in ipairs(p.ops) do
        if keep[planfile.key(entry.name, o)] then ops[#ops + 1] = o end
      end
      p.ops = ops
    end
  end
  if #verdict.done > 0 and not out.quiet then
    io.write(("%d change%s of the plan already applied by usersync since it was made\n"):format(#verdict.done, #verdict.done == 1 and "" or "s"))
  end
  if #verdict.obsolete > 0 and not out.quiet then
    io.write(("%d change%s of the plan no longer needed (already done or superseded)\n"):format(#verdict.obsolete, #verdict.obsolete == 1 and "" or "s"))
  end
  if #verdict.new > 0 and not out.quiet then
    io.write(("%d change%s planned since the plan was made are not applied (run usersync plan again)\n"):format(#verdict.new, #verdict.new == 1 and "" or "s"))
  end
  local summary = e:apply(fresh, { force = opts.force, command = "apply" })
  finish_engine(e, "apply")
  print_summary(summary, opts, "apply", fresh)
  return apply_exit(summary, "apply")
end

function commands.serve(args)
  local opts, pos = parse(args, 2, SPECS.serve)
  if not opts then eprint("usersync serve: " .. pos); return EXIT_USAGE end
  if opts.help then io.write(HELP.serve); return EXIT_OK end
  if #pos > 0 then eprint("usersync serve: unexpected argument " .. pos[1]); return EXIT_USAGE end
  local cfg = load_config(opts, "serve")
  if not cfg then return EXIT_USAGE end
  -- The daemon logs lines, not bars: JSON off a terminal (serve.lua).
  local quiet = (opts.quiet or out.global.quiet) and true or false
  local verbose = (opts.verbose or out.global.verbose) and not quiet
  return require("usersync.serve").run(cfg, { eprint = eprint,
    level = quiet and "warn" or (verbose and "debug" or nil) })
end

local function script_dir(path)
  return path:match("^(.*)/[^/]*$") or "."
end

function commands.run(args)
  local opts, pos = parse(args, 2, SPECS.run, true)
  if not opts then eprint("usersync run: " .. pos); return EXIT_USAGE end
  setup_output(opts, "run")
  if opts.help then io.write(HELP.run); return EXIT_OK end
  local script = pos[1]
  if not script then eprint("usersync run: which script? (usersync run SCRIPT.lua [args...])"); return EXIT_USAGE end
  local fn, err = loadfile(script, "t")
  if not fn then eprint("usersync run: " .. err); return EXIT_USAGE end
  local dir = script_dir(script)
  package.path = dir .. "/?.lua;" .. dir .. "/?/init.lua;" .. package.path
  arg = { [0] = script }
  for i = 2, #pos do arg[i - 1] = pos[i] end
  local script_mod = require "usersync.script"
  local api = script_mod.new{ config = opts.config, dry_run = opts["dry-run"] }
  usersync = api
  -- print, io.write and io.stdout/io.stderr mask secrets like log lines
  local masked, saved = script_mod.masked_globals(), { print = print, io = io }
  print, io = masked.print, masked.io
  local ok, result = xpcall(fn, function(e)
    if type(e) ~= "string" then
      local mt = getmetatable(e)
      e = (mt and mt.__tostring) and tostring(e) or ("(error object is a " .. type(e) .. " value)")
    end
    return debug.traceback(e, 2)
  end, table.unpack(arg, 1, #pos - 1))
  print, io = saved.print, saved.io
  io.stdout:flush()
  pcall(api.close)
  if not ok then
    eprint(result)
    return EXIT_FAILED
  end
  if math.type(result) == "integer" then return result end
  return EXIT_OK
end

-- The admin's questions (issue 19): accounts, explain, test, init. Each
-- lives in its own module; here only options, help and exit codes.
local function admin_command(name, module)
  commands[name] = function(args)
    local opts, pos = parse(args, 2, SPECS[name])
    if not opts then eprint(("usersync %s: %s"):format(name, pos)); return EXIT_USAGE end
    setup_output(opts, name)
    if opts.help then io.write(HELP[name]); return EXIT_OK end
    return require(module).main(opts, pos, { eprint = eprint, load_config = load_config, out = out,
                                            check = commands.check })
  end
end
admin_command("accounts", "usersync.accounts")
admin_command("explain", "usersync.explain")
admin_command("test", "usersync.policytest")
admin_command("init", "usersync.init")

local function version()
  local v = core.versions()
  io.write(("usersync %s\n"):format(v.usersync))
  io.write(("  %s\n"):format(v.lua))
  io.write(("  libcurl %s (TLS: %s)\n"):format(v.curl, v.tls))
  io.write(("  PCRE2 %s\n"):format(v.pcre2))
  io.write(("  SQLite %s\n"):format(v.sqlite))
  io.write(("  %s\n"):format(v.openssl))
  return EXIT_OK
end

-- Where an option given before the command belongs (for its message).
local function owner_of(name)
  local names = {}
  for cmd, spec in pairs(SPECS) do if spec[name] then names[#names + 1] = cmd end end
  table.sort(names)
  return names
end

function M.main(args)
  -- Global options before the command: usersync -q sync, usersync -c FILE plan.
  out.global = {}
  out.color_err = require("usersync.progress").color_allowed(core.isatty(2))
  local pre, rest = parse(args, 1, { version = "flag" }, true)
  if not pre then
    local name = rest:match("^unknown option %-%-([%w-]+)")
    local owners = name and owner_of(name) or {}
    if #owners > 0 then
      rest = ("option --%s goes after the command (usersync %s --%s)"):format(name, #owners == 1 and owners[1] or "COMMAND", name)
    end
    eprint("usersync: " .. rest .. " (see usersync --help)")
    return EXIT_USAGE
  end
  if pre.version then return version() end
  out.global = { config = pre.config, quiet = pre.quiet, verbose = pre.verbose, help = pre.help }
  local cmd = rest[1]
  if cmd == "version" then return version() end
  if cmd == nil or cmd == "help" then
    local topic = cmd == "help" and rest[2]
    if topic and HELP[topic] then io.write(HELP[topic]) else io.write(USAGE) end
    return (cmd == nil and not pre.help) and EXIT_USAGE or EXIT_OK
  end
  local f = commands[cmd]
  if not f then
    local names = { "help", "version" }
    for name in pairs(commands) do names[#names + 1] = name end
    local near = nearest(cmd, names)
    eprint("usersync: unknown command '" .. cmd .. "'" .. (near and (" (did you mean " .. near .. "?)") or "")
      .. " (see usersync --help)")
    return EXIT_USAGE
  end
  -- An unfinished bar is removed however the command ends.
  local _ <close> = setmetatable({}, { __close = function()
    if out.reporter then out.reporter:close() end
  end })
  local ok, code = xpcall(f, function(e)
    return { message = e, trace = debug.traceback(nil, 2) }
  end, rest)
  if ok then return code end
  return M.report_error(cmd, code.message, code.trace)
end

-- An error that escaped a command: a headline, the detail and what to do,
-- never a Lua traceback unless USERSYNC_DEBUG is set or -v was given.
-- Exit 1.
function M.report_error(cmd, e, trace)
  if type(e) ~= "string" then
    local mt = getmetatable(e)
    e = (mt and mt.__tostring) and tostring(e) or ("(error object is a " .. type(e) .. " value)")
  end
  local detail = e
  repeat local n; detail, n = detail:gsub("^[%w_/%.%-]+%.lua:%d+: ", "") until n == 0
  local debug_on = (os.getenv("USERSYNC_DEBUG") or "") ~= "" or out.verbose or out.global.verbose
  local headline, todo
  -- where it happened: the error's position, else the first Lua frame
  local where = e:match("^usersync/([%w_]+)%.lua:%d+:") or (trace or ""):match("\n%s*usersync/([%w_]+)%.lua:%d+:")
  if detail:find("^store: ") or where == "state" or where == "history" then
    headline = "the store cannot be used"
    todo = "check that the store file (`state` in the config) and its directory are writable and the disk is not "
      .. "full, and that the file is a usersync store; restore a damaged one from a backup"
  else
    headline = "stopped by an unexpected error"
    todo = "run the command again with USERSYNC_DEBUG=1 to see where it happened, and report it with that output"
  end
  eprint(("usersync %s: %s"):format(cmd, headline))
  eprint("  detail: " .. detail)
  eprint("  what to do: " .. todo)
  if debug_on then eprint(e .. "\n" .. (trace or "")) end
  return EXIT_FAILED
end

return M
