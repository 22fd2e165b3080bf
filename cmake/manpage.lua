-- cmake/manpage.lua: writes usersync(1), a man(7) page, from the words of
-- `usersync --help` and `usersync COMMAND --help` (usersync.cli's USAGE and
-- HELP), so the page and the built-in help cannot drift apart. A build
-- helper (CMakeLists.txt runs it after linking the binary), not an admin
-- script:
--
--   usersync run cmake/manpage.lua OUT [DATADIR]
--     OUT      the file to write (build/usersync.1)
--     DATADIR  where the examples and systemd units are installed, for FILES
--              (default /usr/local/share/usersync)
--   The date in the header is $SOURCE_DATE_EPOCH's when set (reproducible
--   builds), else today's. Exit 0, or 2 for a usage error or an unwritable OUT.
--
-- Loaded with dofile() from another script (a test) it writes nothing and
-- returns its functions:
--   M.render{ usage=, help=, version=, date=, datadir= } -> roff text
--   M.commands(usage, help) -> command names in page order: the order of
--       USAGE's "commands:" list, then every other HELP entry sorted. Every
--       HELP entry and every listed command gets a section; none is dropped.
--   M.text(s) / M.code(s)  -> s escaped for a roff text line (prose: options
--       such as --json bold with \-; code: every character literal)
--
-- Escaping contract: every line this writes that comes from help text is a
-- text line, never a request: a leading '.' or ''' gets \&, a backslash is
-- \(rs, non-ASCII characters are \[uXXXX], hyphens of options are \-.
-- `spans` in the help text are set bold. An indented line in a help
-- paragraph makes that paragraph preformatted (lines kept as written).
local M = {}

-- Lines of s, without their newlines.
local function lines_of(s)
  local out = {}
  for line in (s .. "\n"):gmatch("(.-)\r?\n") do out[#out + 1] = line end
  return out
end

-- Blank-line-separated blocks of s, each a list of lines.
local function blocks_of(s)
  local out, cur = {}, nil
  for _, line in ipairs(lines_of(s)) do
    if line:match("^%s*$") then
      cur = nil
    else
      if not cur then cur = {}; out[#out + 1] = cur end
      cur[#cur + 1] = line
    end
  end
  return out
end

-- Escapes the characters roff would interpret in a text line. `literal`
-- also fixes quotes and hyphens to their ASCII forms (code, commands).
local function escape(s, literal)
  local out = {}
  for _, c in utf8.codes(s, true) do
    if c == 92 then out[#out + 1] = "\\(rs"
    elseif c > 127 then out[#out + 1] = ("\\[u%04X]"):format(c)
    elseif literal and c == 39 then out[#out + 1] = "\\(aq"
    elseif literal and c == 96 then out[#out + 1] = "\\(ga"
    elseif literal and c == 45 then out[#out + 1] = "\\-"
    else out[#out + 1] = utf8.char(c) end
  end
  return table.concat(out)
end

-- A prose segment: options (a '-' or '--' and a letter, not inside a word)
-- bold with literal hyphens, the rest escaped.
local function prose(seg)
  local out, last = {}, 1
  for pos, opt, after in seg:gmatch("()(%-%-?%a[%w%-]*)()") do
    local prev = pos > 1 and seg:sub(pos - 1, pos - 1) or ""
    if not prev:match("[%w%-]") then
      out[#out + 1] = escape(seg:sub(last, pos - 1))
      out[#out + 1] = "\\fB" .. escape(opt, true) .. "\\fR"
      last = after
    end
  end
  out[#out + 1] = escape(seg:sub(last))
  return table.concat(out)
end

-- Guards a finished text line against being read as a request.
local function guard(line)
  if line:match("^[.']") then return "\\&" .. line end
  return line
end

-- One line of prose as a roff text line; `code spans` bold.
function M.text(s)
  local out, i = {}, 1
  while true do
    local a, b = s:find("`[^`]+`", i)
    if not a then break end
    out[#out + 1] = prose(s:sub(i, a - 1))
    out[#out + 1] = "\\fB" .. escape(s:sub(a + 1, b - 1), true) .. "\\fR"
    i = b + 1
  end
  out[#out + 1] = prose(s:sub(i))
  return guard(table.concat(out))
end

-- One line set literally (preformatted blocks).
function M.code(s)
  return guard(escape(s, true))
end

-- A usage line ("usersync plan [-c FILE] [--json]") in synopsis form: the
-- leading lowercase words (program and command) and options bold,
-- metavariables italic, brackets and bars roman.
local function synopsis_words(line)
  local out, last, leading, depth = {}, 1, true, 0
  -- Separators are kept; a space inside brackets is unbreakable ("\ "), so
  -- "[--sync NAME]" never wraps between the option and its value.
  local function separator(sep)
    local buf = {}
    for c in sep:gmatch(".") do
      if c == "[" then depth = depth + 1 elseif c == "]" then depth = math.max(depth - 1, 0) end
      buf[#buf + 1] = (c == " " and depth > 0) and "\\ " or escape(c, true)
    end
    return table.concat(buf)
  end
  for pos, word, after in line:gmatch("()([^%s%[%]|{}()]+)()") do
    local sep = line:sub(last, pos - 1)
    if sep:match("[^%s]") then leading = false end
    out[#out + 1] = separator(sep)
    local opt, value = word:match("^(%-%-?[%w][%w%-]*)=(.*)$")
    if opt then
      out[#out + 1] = "\\fB" .. escape(opt, true) .. "\\fR=\\fI" .. escape(value, true) .. "\\fR"
      leading = false
    elseif word:match("^%-") then
      out[#out + 1] = "\\fB" .. escape(word, true) .. "\\fR"
      leading = false
    elseif leading and word:match("^[a-z][a-z0-9%-]*$") then
      out[#out + 1] = "\\fB" .. escape(word, true) .. "\\fR"
    else
      out[#out + 1] = "\\fI" .. escape(word, true) .. "\\fR"
      leading = false
    end
    last = after
  end
  out[#out + 1] = separator(line:sub(last))
  return guard(table.concat(out))
end

-- A synopsis block: .SY/.YS (groff an-ext, mandoc) wraps with a hanging
-- indent under the program name.
local function synopsis(line)
  local prog, rest = line:match("^(%S+)%s*(.*)$")
  local buf = { ".SY " .. escape(prog, true) }
  if rest ~= "" then buf[#buf + 1] = synopsis_words(rest) end
  buf[#buf + 1] = ".YS"
  return table.concat(buf, "\n")
end

-- Strips "usage: " and joins continuation lines of a usage block.
local function usage_line(block)
  local parts = {}
  for i, l in ipairs(block) do
    l = l:gsub("^%s+", ""):gsub("%s+$", "")
    if i == 1 then l = l:gsub("^[Uu]sage:%s*", "") end
    parts[#parts + 1] = l
  end
  return table.concat(parts, " ")
end

-- Parses USAGE: { usage = line, list = { {name=, args=, desc=} }, body = { block } }.
-- The "commands:" block is the list; other blocks (but the usage) are body.
local function parse_usage(usage)
  local r = { list = {}, body = {} }
  for _, block in ipairs(blocks_of(usage)) do
    if not r.usage and block[1]:match("^%s*[Uu]sage:") then
      r.usage = usage_line(block)
    elseif block[1]:match("^%s*[Cc]ommands:%s*$") then
      for i = 2, #block do
        local name, args, desc = block[i]:match("^%s+(%S+)(.-)%s%s+(%S.*)$")
        if name then
          r.list[#r.list + 1] = { name = name, args = args:gsub("^%s+", ""), desc = desc }
        elseif #r.list > 0 then
          local prev = r.list[#r.list]
          prev.desc = prev.desc .. " " .. block[i]:gsub("^%s+", "")
        end
      end
    else
      r.body[#r.body + 1] = block
    end
  end
  return r
end

-- Parses one HELP text: { usage = line | nil, body = { block } }.
local function parse_help(text)
  local r = { body = {} }
  for i, block in ipairs(blocks_of(text)) do
    if i == 1 and block[1]:match("^%s*[Uu]sage:") then
      -- A usage line wraps onto indented lines; an unindented line after it
      -- starts the prose.
      local u, rest = { block[1] }, {}
      for j = 2, #block do
        if #rest == 0 and block[j]:match("^%s") then u[#u + 1] = block[j] else rest[#rest + 1] = block[j] end
      end
      r.usage = usage_line(u)
      if #rest > 0 then r.body[#r.body + 1] = rest end
    else
      r.body[#r.body + 1] = block
    end
  end
  return r
end

-- A block of help prose: filled text, or preformatted when a line is indented.
local function paragraph(block)
  local pre = false
  for _, l in ipairs(block) do if l:match("^%s") then pre = true end end
  local buf = { ".PP" }
  if pre then
    buf[#buf + 1] = ".nf"
    for _, l in ipairs(block) do buf[#buf + 1] = M.code(l) end
    buf[#buf + 1] = ".fi"
  else
    for _, l in ipairs(block) do buf[#buf + 1] = M.text((l:gsub("^%s+", ""):gsub("%s+$", ""))) end
  end
  return table.concat(buf, "\n")
end

function M.commands(usage, help)
  local order, seen = {}, {}
  for _, c in ipairs(parse_usage(usage).list) do
    if not seen[c.name] then seen[c.name] = true; order[#order + 1] = c.name end
  end
  local extra = {}
  for name in pairs(help) do if not seen[name] then extra[#extra + 1] = name end end
  table.sort(extra)
  for _, name in ipairs(extra) do order[#order + 1] = name end
  return order
end

-- What each option does, for OPTIONS. An option a usage line shows that is
-- not here is still listed, with the commands that take it.
local OPTION_TEXT = {
  ["-c"] = "Read the config from FILE, a Lua file returning a table (default ./usersync.conf.lua).",
  ["--json"] = "Print the machine-readable form (JSON) instead of text.",
  ["--help"] = "Print the help of usersync, or of the command, and exit.",
  ["--version"] = "Print the version of usersync and of the libraries it is built with, and exit.",
  ["--out"] = "Also save the plan as JSON in FILE, for `usersync apply FILE`.",
  ["--user"] = "Only the Okta user with this login or id.",
  ["--sync"] = "Only the sync entry with this name in the config (history: only its runs).",
  ["--force"] = "Apply the destructive changes a safety limit held back; use after reviewing the plan.",
  ["--limit"] = "List at most N runs.",
  ["--config-only"] = "Validate the config without reaching any server.",
  ["--dry-run"] = "Print every target write instead of sending it.",
  ["-q"] = "Quiet: only errors and the result (no progress, no plan text for sync).",
  ["-v"] = "Verbose: a line per applied operation, the requests of each read and the HTTP totals.",
  ["--detailed-exitcode"] = "Exit 4 when the plan has changes, 0 when it has none (failures and safety stops keep 1 and 3).",
}
local OPTION_ALIAS = { ["-c"] = "--config", ["--help"] = "-h", ["-q"] = "--quiet", ["-v"] = "--verbose" }

-- Options of all usage lines: ordered list of { name=, value=, commands= }.
local function collect_options(global_usage, usages)
  local byname, list = {}, {}
  local function scan(line, cmd)
    for tok in line:gmatch("%[([^%]]+)%]") do
      for alt in tok:gmatch("[^|]+") do
        local name, value = alt:match("^%s*(%-%-?[%w][%w%-]*)[%s=]*(%S*)")
        if name then
          local o = byname[name]
          if not o then
            o = { name = name, value = value ~= "" and value or nil, commands = {}, global = false }
            byname[name] = o
            list[#list + 1] = o
          end
          if cmd then
            if not o.commands[cmd] then o.commands[cmd] = true; o.commands[#o.commands + 1] = cmd end
          else
            o.global = true
          end
        end
      end
    end
  end
  scan(global_usage, nil)
  for _, u in ipairs(usages) do scan(u.line, u.name) end
  return list
end

local function options_section(opts, everywhere)
  local buf = { ".SH OPTIONS" }
  for _, o in ipairs(opts) do
    local tag = "\\fB" .. escape(o.name, true) .. "\\fR"
    if o.value then tag = tag .. " \\fI" .. escape(o.value, true) .. "\\fR" end
    local alias = OPTION_ALIAS[o.name]
    if alias then
      local atag = "\\fB" .. escape(alias, true) .. "\\fR"
      if o.value then atag = atag .. " \\fI" .. escape(o.value, true) .. "\\fR" end
      tag = tag .. ", " .. atag
    end
    buf[#buf + 1] = ".TP"
    buf[#buf + 1] = guard(tag)
    local text = OPTION_TEXT[o.name]
    local takers = #o.commands > 0 and table.concat(o.commands, ", ") or nil
    if o.global then takers = "usersync itself" .. (takers and (", " .. takers) or "") end
    if everywhere and everywhere[o.name] then takers = "every command, before or after its name" end
    if text then
      buf[#buf + 1] = M.text(text)
      if takers then buf[#buf + 1] = M.text("Taken by: " .. takers .. ".") end
    else
      buf[#buf + 1] = M.text("Taken by: " .. (takers or "?") .. "; see the command under COMMANDS.")
    end
  end
  return table.concat(buf, "\n")
end

local function roff_quote(s)
  return '"' .. escape(s):gsub('"', '\\(dq') .. '"'
end

local FIXED_DESCRIPTION = {
  "usersync keeps the users and groups of Atlassian Jira, Confluence and Bitbucket Data Center in step with Okta. It reads the Okta users in scope (the users assigned to an Okta app, or a filter) and their groups, maps them to accounts and group memberships with a policy written in Lua, and creates, updates, renames, deactivates and deletes the accounts it links to Okta users. Accounts and groups it does not manage are never touched.",
  "It shows what it will change before it changes it (`usersync plan`), never deprovisions because a read failed, stops the destructive part of a run at a safety limit, and records every operation and its outcome in its store (`usersync history`, `usersync show RUN`). A second sync right after the first writes nothing.",
  "The same runtime runs ad-hoc Lua scripts with the full API (`usersync run`), for one-off migrations.",
}

local EXIT_STATUS = {
  { "0", "Done." },
  { "1", "Some operations failed, or some users could not be synced (a username conflict, a policy error); `usersync show RUN` lists them. For check: a server is not ready. For run: the script raised an error." },
  { "2", "Usage or config error; apply refusing a plan whose base changed." },
  { "3", "Stopped by a safety limit: nothing destructive was applied. Review the plan, then run again with --force." },
}

local ENVIRONMENT = {
  { "NO_COLOR", "When set to a non-empty value, usersync writes no colour, even on a terminal." },
  { "USERSYNC_LOG_LEVEL", "The lowest level of log line written to standard error: debug, info (the default), warn, error or off." },
  { "USERSYNC_LOG_FORMAT", "text (human lines), json (one JSON object per line) or auto (text on a terminal, JSON lines otherwise). Unset: auto for run and serve, text for the other commands." },
  { "https_proxy, HTTPS_PROXY, http_proxy, all_proxy, ALL_PROXY", "The proxy for requests to Okta and the targets, as libcurl reads them (http_proxy only in lower case)." },
  { "no_proxy, NO_PROXY", "Hosts reached without the proxy, comma-separated." },
  { "any NAME the config reads with env \"NAME\"", "Secrets such as OKTA_API_TOKEN. Their values are masked (********) in all output, logs and error messages." },
}

local function tp_list(title, items, tag_style)
  local buf = { ".SH " .. title }
  for _, it in ipairs(items) do
    buf[#buf + 1] = ".TP"
    buf[#buf + 1] = tag_style(it[1])
    buf[#buf + 1] = M.text(it[2])
  end
  return table.concat(buf, "\n")
end

-- Renders the page. t = { usage = USAGE text, help = HELP table,
-- version = "0.1.0", date = "2026-11-29", datadir = "/usr/local/share/usersync" }.
function M.render(t)
  assert(type(t.usage) == "string" and type(t.help) == "table", "render needs usage and help")
  local u = parse_usage(t.usage)
  local listed = {}
  for _, c in ipairs(u.list) do listed[c.name] = c end
  local order = M.commands(t.usage, t.help)
  local helps, usages = {}, {}
  for _, name in ipairs(order) do
    local text = t.help[name]
    if text ~= nil and type(text) ~= "string" then error("HELP." .. name .. " is not a string") end
    helps[name] = text and parse_help(text) or { body = {} }
    local line = helps[name].usage
    if not line then
      local c = listed[name]
      line = "usersync " .. name .. ((c and c.args ~= "") and (" " .. c.args) or "")
    end
    usages[#usages + 1] = { name = name, line = line }
  end

  local out = {}
  local function add(s) out[#out + 1] = s end
  add('.\\" usersync(1), generated by cmake/manpage.lua from usersync.cli\'s USAGE and HELP; do not edit.')
  add((".TH USERSYNC 1 %s %s %s"):format(roff_quote(t.date or ""), roff_quote("usersync " .. (t.version or "")),
    roff_quote("User Commands")))
  -- Left-aligned and unhyphenated: names such as usersync.target and
  -- --config-only must read (and copy) as written.
  -- (.YS restores hyphenation from register HY, so that is set too.)
  add(".nr HY 0")
  add(".nh")
  add(".ad l")
  add(".SH NAME")
  add("usersync \\- keep Jira, Confluence and Bitbucket Data Center users and groups in step with Okta")

  add(".SH SYNOPSIS")
  add(synopsis(u.usage or "usersync COMMAND [options]"))
  for _, us in ipairs(usages) do add(synopsis(us.line)) end

  add(".SH DESCRIPTION")
  for _, p in ipairs(FIXED_DESCRIPTION) do add(paragraph({ p })) end
  if #u.list > 0 then
    add(".PP")
    add("The commands:")
    for _, c in ipairs(u.list) do
      add(".TP")
      add(synopsis_words(c.name .. (c.args ~= "" and (" " .. c.args) or "")))
      add(M.text(c.desc))
    end
  end
  for _, block in ipairs(u.body) do add(paragraph(block)) end

  add(".SH COMMANDS")
  for i, name in ipairs(order) do
    add(".SS " .. roff_quote(name))
    add(synopsis(usages[i].line))
    local h = helps[name]
    if #h.body == 0 then
      local c = listed[name]
      add(paragraph({ c and c.desc or "(no help text)" }))
    end
    for _, block in ipairs(h.body) do add(paragraph(block)) end
  end

  add(options_section(collect_options(u.usage or "", usages), t.global_options))
  add(tp_list("EXIT STATUS", t.exit_status or EXIT_STATUS, function(s) return "\\fB" .. escape(s, true) .. "\\fR" end))
  add(tp_list("ENVIRONMENT", ENVIRONMENT, function(s)
    return guard((s:gsub("[^,]+", function(v)
      local name, rest = v:match("^(%s*)(.-)%s*$")
      if rest:match("^[%u_]+$") or rest:match("^[%l_]+_proxy$") then return name .. "\\fB" .. escape(rest, true) .. "\\fR" end
      return name .. M.text(rest)
    end)))
  end))

  local datadir = t.datadir or "/usr/local/share/usersync"
  add(tp_list("FILES", {
    { "./usersync.conf.lua", "The config read when -c is not given: a Lua file returning a table, evaluated in the sandbox. `usersync check` validates it." },
    { "usersync.db", "The store, a SQLite file named by the config's state key (relative to the current directory): the links between accounts and Okta users, the runs, every operation and its outcome, the locks that keep two runs of one sync apart." },
    { datadir .. "/examples/", "An example config and example policies and scripts to copy and adapt." },
    { datadir .. "/systemd/", "A service and a timer that run `usersync sync` on a schedule; the header of the service file has the install steps." },
  }, function(s) return "\\fI" .. escape(s, true) .. "\\fR" end))

  add(".SH SEE ALSO")
  add(".BR systemd.timer (5),")
  add(".BR systemctl (1),")
  add(".BR sqlite3 (1),")
  add(".BR curl (1)")
  add(".PP")
  add(M.text("README.md in the usersync sources: the config reference, the policy hooks, ownership, safety and troubleshooting."))
  return table.concat(out, "\n") .. "\n"
end

local function main(outpath, datadir)
  if not outpath then
    io.stderr:write("usage: usersync run cmake/manpage.lua OUT [DATADIR]\n")
    return 2
  end
  local cli = require "usersync.cli"
  local core = require "usersync.core"
  local epoch = tonumber(os.getenv("SOURCE_DATE_EPOCH") or "")
  local page = M.render{ usage = cli.USAGE, help = cli.HELP, exit_status = cli.EXIT_STATUS,
    global_options = cli.GLOBAL_OPTIONS,
    version = core.versions().usersync,
    date = os.date("!%Y-%m-%d", epoch and math.floor(epoch) or os.time()), datadir = datadir }
  -- Written to a temporary name and renamed, so an interrupted build never
  -- leaves a half page that make would consider up to date.
  local tmp = outpath .. ".tmp"
  local f, err = io.open(tmp, "w")
  if not f then io.stderr:write("manpage: ", err, "\n"); return 2 end
  f:write(page)
  f:close()
  local ok, rerr = os.rename(tmp, outpath)
  if not ok then io.stderr:write("manpage: ", rerr, "\n"); return 2 end
  return 0
end

if arg and type(arg[0]) == "string" and arg[0]:match("manpage%.lua$") then
  return main(...)
end
return M
