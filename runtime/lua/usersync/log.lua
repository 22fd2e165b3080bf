-- usersync.log: levelled logging as human lines or JSON lines, with every
-- secret known to usersync.secrets masked in every line.
--
--   local log = require "usersync.log"
--   log.configure{ level = "debug", format = "text" }
--   log.info("synced %d users to %s", 3, "jira")
--   log.warn{ msg = "rate limit near", host = "example.okta.com", remaining = 12 }
--   log.event("error", "request failed", { status = 503, attempt = 2 })
--   local runlog = log.with{ run = 17, sync = "main" }
--   runlog.debug("applying %d operations", 5)
--
-- writes to stderr:
--   2026-11-29T01:23:45.678Z INFO synced 3 users to jira
--   2026-11-29T01:23:45.678Z WARN rate limit near host=example.okta.com remaining=12
--   2026-11-29T01:23:45.678Z ERROR request failed attempt=2 status=503
--   2026-11-29T01:23:45.678Z DEBUG applying 5 operations run=17 sync=main
-- and with format = "json" one object per line, ts, level and msg first:
--   {"ts":"2026-11-29T01:23:45.678Z","level":"warn","msg":"rate limit near","host":"example.okta.com","remaining":12}
--
-- Calls:
--   log.debug / log.info / log.warn / log.error (fmt, ...)   string.format
--       semantics; a lone string is the message as is (a '%' is safe).
--   log.debug / ... { msg = "...", key = value, ... }        structured form
--   log.event(level, msg, fields)                            the general form
--   log.with(fields) -> a logger with the same functions whose lines carry
--       `fields` too (a call's own fields win on a clash)
--   log.enabled(level) -> boolean      skip costly work for filtered levels
--   log.configure{ level=, format=, stream=, clock= } -> previous settings
--       level  "debug" | "info" | "warn" | "error" | "off"; default info, or
--              $USERSYNC_LOG_LEVEL
--       format "text" | "json" | "auto" (default, or $USERSYNC_LOG_FORMAT):
--              text when the stream is a terminal, JSON lines otherwise
--       stream io.stderr (default), any file handle, a function(line, record)
--              or a table the lines are appended to (for tests and UIs);
--              `record` is { ts=, level=, msg=, fields= }, already masked
--       clock  function returning epoch seconds (a float for milliseconds)
--
-- Field values: strings, numbers, booleans, json.null, and tables (written
-- as JSON); other values are written as tostring(). In text lines a value is
-- quoted (JSON style) when it has spaces, quotes, '=' or control characters;
-- keys are sorted. Field names ts, level and msg are written as _ts, _level,
-- _msg in JSON lines.
--
-- Masking: the message, every field name and string value (nested too, and
-- the tostring() of other values) go through usersync.secrets.mask, so a
-- registered secret standing as a whole value, or a credential (an
-- Authorization header, a token parameter), never reaches the stream in
-- either format. Each string is masked on its own, before it is quoted or
-- escaped, so masking never breaks a JSON line.
local secrets = require "usersync.secrets"

local M = {}

local LEVELS = { debug = 10, info = 20, warn = 30, error = 40, off = 100 }
local ALIASES = { warning = "warn", err = "error", none = "off" }
M.LEVELS = { "debug", "info", "warn", "error" }

local function level_name(l)
  if type(l) ~= "string" then return nil end
  l = l:lower()
  l = ALIASES[l] or l
  return LEVELS[l] and l or nil
end

local null -- usersync.json's null, loaded lazily
local function is_null(v)
  if null == nil then
    local ok, json = pcall(require, "usersync.json")
    null = ok and json.null or false
  end
  return null ~= false and v == null
end

-- Epoch seconds from usersync.time.now when it gives them, else os.time.
local function default_clock()
  local ok, t = pcall(require, "usersync.time")
  if ok and type(t) == "table" and type(t.now) == "function" then
    local okc, v = pcall(t.now)
    if okc and type(v) == "number" then
      if v > 1e11 then return function() return t.now() / 1000 end end -- milliseconds
      if v > 1e8 then return t.now end
    end
  end
  return os.time
end

local settings = {
  level = level_name(os.getenv("USERSYNC_LOG_LEVEL")) or "info",
  format = os.getenv("USERSYNC_LOG_FORMAT") or "auto",
  stream = io.stderr,
  clock = nil, -- resolved on first use
}
if settings.format ~= "text" and settings.format ~= "json" then settings.format = "auto" end
local resolved_format -- format after resolving "auto" for the current stream

-- Is fd (1 or 2) a terminal? Uses usersync.core.isatty when the host has it,
-- else asks the shell (`test -t`), which inherits our descriptors.
local function isatty(fd)
  local ok, core = pcall(require, "usersync.core")
  if ok and type(core) == "table" and type(core.isatty) == "function" then
    return core.isatty(fd) and true or false
  end
  return os.execute("test -t " .. fd) == true
end

local function current_format()
  if resolved_format then return resolved_format end
  local f = settings.format
  if f == "auto" then
    if settings.stream == io.stderr then f = isatty(2) and "text" or "json"
    elseif settings.stream == io.stdout then f = isatty(1) and "text" or "json"
    else f = "json" end
  end
  resolved_format = f
  return f
end

-- ---------------------------------------------------------------- values

-- A copy of v with every string (keys too) masked; cycles and depth cut.
local function sanitize(v, depth, seen)
  local tv = type(v)
  if tv == "string" then return secrets.mask(v) end
  if tv == "number" or tv == "boolean" or is_null(v) then return v end
  if tv == "table" then
    local mt = getmetatable(v)
    if mt and mt.__tostring then return secrets.mask(tostring(v)) end
    if seen[v] then return "<cycle>" end
    if depth > 8 then return "<nested too deep>" end
    seen[v] = true
    local out = {}
    for k, x in pairs(v) do
      local key = type(k) == "number" and k or secrets.mask(tostring(k))
      out[key] = sanitize(x, depth + 1, seen)
    end
    seen[v] = nil
    return out
  end
  return secrets.mask(tostring(v))
end

local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESC[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function number_text(n)
  if math.type(n) == "integer" then return tostring(n) end
  if n ~= n or n == math.huge or n == -math.huge then return "null" end
  if n == math.floor(n) and math.abs(n) < 2 ^ 53 then return string.format("%.1f", n) end
  return string.format("%.17g", n)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) == type(b) then return a < b end
    return type(a) == "number"
  end)
  return keys
end

-- JSON text of a sanitized value; arrays when keys are exactly 1..n.
local function json(v)
  local tv = type(v)
  if tv == "string" then return quote(v) end
  if tv == "number" then return number_text(v) end
  if tv == "boolean" then return tostring(v) end
  if tv ~= "table" then return "null" end
  local n, count = #v, 0
  for _ in pairs(v) do count = count + 1 end
  local parts = {}
  if count == n and n > 0 then
    for i = 1, n do parts[i] = json(v[i]) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  for _, k in ipairs(sorted_keys(v)) do
    parts[#parts + 1] = quote(tostring(k)) .. ":" .. json(v[k])
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function text_value(v)
  if type(v) == "string" then
    if v ~= "" and not v:find('[%s%c"=\\]') then return v end
    return quote(v)
  end
  return json(v)
end

local function timestamp(t)
  local secs = math.floor(t)
  local ms = math.floor((t - secs) * 1000 + 0.5)
  if ms >= 1000 then secs, ms = secs + 1, ms - 1000 end
  return os.date("!%Y-%m-%dT%H:%M:%S", secs) .. string.format(".%03dZ", ms)
end
-- (progress.lua's plain lines use the same form)
M.timestamp = timestamp

-- ---------------------------------------------------------------- output

local RESERVED = { ts = true, level = true, msg = true }

local function render(record, format)
  local keys = sorted_keys(record.fields)
  local parts = {}
  if format == "json" then
    parts[1] = '{"ts":' .. quote(record.ts) .. ',"level":' .. quote(record.level) ..
      ',"msg":' .. quote(record.msg)
    for _, k in ipairs(keys) do
      local name = tostring(k)
      if RESERVED[name] then name = "_" .. name end
      parts[#parts + 1] = quote(name) .. ":" .. json(record.fields[k])
    end
    return table.concat(parts, ",") .. "}"
  end
  parts[1] = record.ts .. " " .. record.level:upper() .. " " .. record.msg:gsub("\n", "\n    ")
  for _, k in ipairs(keys) do
    parts[#parts + 1] = tostring(k) .. "=" .. text_value(record.fields[k])
  end
  return table.concat(parts, " ")
end

local function write(line, record)
  local s = settings.stream
  local ts = type(s)
  if ts == "function" then
    s(line, record)
  elseif ts == "table" and getmetatable(s) == nil then
    s[#s + 1] = line
  else
    s:write(line, "\n")
    if s ~= io.stderr then s:flush() end
  end
end

-- Emits one record; base = fields of a `with` logger (or nil).
local function emit(level, msg, fields, base)
  if LEVELS[level] < LEVELS[settings.level] then return end
  local merged = {}
  if base then for k, v in pairs(base) do merged[k] = v end end
  if fields then for k, v in pairs(fields) do merged[k] = v end end
  settings.clock = settings.clock or default_clock()
  local record = {
    ts = timestamp(settings.clock()),
    level = level,
    msg = secrets.mask(msg),
    fields = sanitize(merged, 1, {}),
  }
  write(render(record, current_format()), record)
end

-- Turns the arguments of log.info(...) into msg, fields.
local function message(first, ...)
  if type(first) == "table" and getmetatable(first) == nil then
    local fields = {}
    for k, v in pairs(first) do if k ~= "msg" then fields[k] = v end end
    return tostring(first.msg == nil and "" or first.msg), fields
  end
  if select("#", ...) == 0 then return tostring(first), nil end
  if type(first) ~= "string" then
    error("log: expected a format string or a table of fields, got " .. type(first), 3)
  end
  return string.format(first, ...), nil
end

local function make(base)
  local L = {}
  for _, name in ipairs(M.LEVELS) do
    L[name] = function(...)
      if LEVELS[name] < LEVELS[settings.level] then return end
      local msg, fields = message(...)
      emit(name, msg, fields, base)
    end
  end
  function L.event(level, msg, fields)
    local l = level_name(level)
    if not l or l == "off" then error("log: unknown level " .. tostring(level), 2) end
    if fields ~= nil and type(fields) ~= "table" then
      error("log: fields must be a table, got " .. type(fields), 2)
    end
    emit(l, tostring(msg), fields, base)
  end
  function L.with(fields)
    if type(fields) ~= "table" then error("log.with: expected a table of fields", 2) end
    local merged = {}
    if base then for k, v in pairs(base) do merged[k] = v end end
    for k, v in pairs(fields) do merged[k] = v end
    return make(merged)
  end
  L.enabled = function(level)
    local l = level_name(level)
    if not l then error("log: unknown level " .. tostring(level), 2) end
    return LEVELS[l] >= LEVELS[settings.level] and settings.level ~= "off"
  end
  return L
end

for k, v in pairs(make(nil)) do M[k] = v end

function M.level() return settings.level end

local CONFIG_KEYS = { level = true, format = true, stream = true, clock = true }

function M.configure(opts)
  if type(opts) ~= "table" then error("log.configure: expected a table", 2) end
  for k in pairs(opts) do
    if not CONFIG_KEYS[k] then error("log.configure: unknown setting '" .. tostring(k) .. "'", 2) end
  end
  local previous = { level = settings.level, format = settings.format,
                     stream = settings.stream, clock = settings.clock }
  if opts.level ~= nil then
    local l = level_name(opts.level)
    if not l then error("log.configure: level must be debug, info, warn, error or off", 2) end
    settings.level = l
  end
  if opts.format ~= nil then
    if opts.format ~= "text" and opts.format ~= "json" and opts.format ~= "auto" then
      error("log.configure: format must be text, json or auto", 2)
    end
    settings.format = opts.format
  end
  if opts.stream ~= nil then
    local s = opts.stream
    local ok = type(s) == "function" or (type(s) == "table" and getmetatable(s) == nil)
      or io.type(s) == "file"
    if not ok then error("log.configure: stream must be a file, a function or a table", 2) end
    settings.stream = s
  end
  if opts.clock ~= nil then
    if type(opts.clock) ~= "function" then error("log.configure: clock must be a function", 2) end
    settings.clock = opts.clock
  end
  resolved_format = nil
  return previous
end

return M
