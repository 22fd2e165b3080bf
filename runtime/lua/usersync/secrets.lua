-- usersync.secrets: the `env "NAME"` and `file "PATH"` helpers of the
-- config, the registry of secret values, and mask(), which takes secrets and
-- credentials out of a free-text line (a log line, an error message, the
-- error column of the store, a plan's error and note texts).
--
--   local secrets = require "usersync.secrets"
--   local token = secrets.env("OKTA_API_TOKEN")   -- string, or a Missing value
--   secrets.mask("token " .. token .. " refused")  --> "token ******** refused"
--   secrets.mask("Authorization: Basic YWRtaW46YWRtaW4=")  --> "Authorization: Basic ********"
--   secrets.too_short(value)                      --> true below MIN_SAFE characters
--
-- mask() is for free text only, never for data: a plan file, a JSON
-- document's keys and values, the store's data columns are never masked,
-- so an account or group name that contains a secret's characters is never
-- rewritten. Within a line a registered secret is masked only where it
-- stands as a whole value: not where it is part of a longer word or token
-- ("admin" is masked in "password admin refused", not in "site-admins" or
-- "site-admin"). Word characters are letters, digits, '_', '-', bytes of
-- UTF-8 sequences, and '.' between two of them; an escape just before the
-- value (\n, \t, %3D, \u0022) is a delimiter, not part of the word.
--
-- Whatever secrets are registered, mask() also hides credentials by their
-- shape, so a token that is no longer configured (rotated) or was never a
-- config value (the base64 of user:password) is hidden too: the value of
-- an Authorization, Proxy-Authorization, Cookie, Set-Cookie or X-Api-Key
-- header; a "Basic", "Bearer", "SSWS" or "DPoP" credential; a
-- password=, token=, client_secret=... parameter or JSON member; a
-- JWT-shaped string.
--
-- A secret cannot be masked safely when it is short: it may be an ordinary
-- word. Below MIN_SAFE characters the config warns (config.lua); below
-- MIN_LEN it is not masked at all.
--
-- A secret that cannot be read does not raise: it yields a Missing value
-- whose `.reason` the config validator reports at the key that used it, so
-- every problem of a config is reported at once.
local M = {}

M.MIN_LEN = 4    -- shorter values are not masked (they would hide ordinary words)
M.MIN_SAFE = 8   -- shorter values get a warning (config.lua, usersync check)
M.MASK = "********"

local known = {}     -- value -> true
local ordered = {}   -- longest first, so a secret containing another masks whole

local Missing = {}
Missing.__index = Missing
Missing.__tostring = function(m) return "<missing secret: " .. m.reason .. ">" end
M.Missing = Missing

function M.is_missing(v) return getmetatable(v) == Missing end

-- Adds a value to the mask list. Returns the value.
function M.register(value)
  if type(value) == "string" and #value >= M.MIN_LEN and not known[value] then
    known[value] = true
    ordered[#ordered + 1] = value
    table.sort(ordered, function(a, b) return #a > #b end)
  end
  return value
end

-- Is a secret too short to be masked reliably?
function M.too_short(value)
  return type(value) == "string" and #value < M.MIN_SAFE
end

---------------------------------------------------------------- whole values

local function wordy(c)
  return c ~= "" and (c:find("^[%w_%-]") ~= nil or c:byte() >= 0x80)
end

-- Is the character before position a part of the same word?
local function joined_before(s, a)
  if a == 1 then return false end
  local c = s:sub(a - 1, a - 1)
  if c == "." then return wordy(s:sub(a - 2, a - 2)) end
  if not wordy(c) then return false end
  -- an escape ends right before the value: \n \t \r, %3D, \u0022
  if s:sub(a - 2, a - 2) == "\\" and c:find("^[nrt]") then return false end
  if s:sub(a - 3, a - 1):find("^%%%x%x$") then return false end
  if s:sub(a - 6, a - 1):find("^\\u%x%x%x%x$") then return false end
  return true
end

-- Is the character after position b a part of the same word?
local function joined_after(s, b)
  local c = s:sub(b + 1, b + 1)
  if c == "." then return wordy(s:sub(b + 2, b + 2)) end
  return wordy(c)
end

-- s with every whole occurrence of v replaced by the mask.
local function mask_value(s, v)
  if not s:find(v, 1, true) then return s end
  local parts, i, from = {}, 1, 1
  while true do
    local a, b = s:find(v, from, true)
    if not a then break end
    if joined_before(s, a) or joined_after(s, b) then
      from = a + 1
    else
      parts[#parts + 1] = s:sub(i, a - 1)
      parts[#parts + 1] = M.MASK
      i, from = b + 1, b + 1
    end
  end
  parts[#parts + 1] = s:sub(i)
  return table.concat(parts)
end

---------------------------------------------------------------- credential shapes

-- A case-insensitive Lua pattern for a literal name ("Set-Cookie").
local function nocase(name)
  return (name:gsub("%a", function(c) return "[" .. c:upper() .. c:lower() .. "]" end):gsub("%-", "%%-"))
end

-- Headers whose whole value is a credential.
local HEADERS = { "Proxy-Authorization", "Authorization", "Set-Cookie", "Cookie", "X-Api-Key" }
-- Parameters and JSON members whose value is a credential.
local PARAMS = { "password", "passwd", "client_secret", "client_assertion", "access_token",
                 "refresh_token", "id_token", "api_token", "api_key", "apikey", "private_key",
                 "secret", "token" }
-- Authorization schemes whose credential follows them.
local SCHEMES = { "Basic", "Bearer", "SSWS", "DPoP", "Token" }

local HEADER_PATS, PARAM_PATS, SCHEME_PATS = {}, {}, {}
for i, h in ipairs(HEADERS) do
  -- Name: value | "Name": "value" | 'Name': 'value' | Name=value; the value
  -- runs to the end of the line, or to its closing quote.
  HEADER_PATS[i] = "(" .. nocase(h) .. "([\"']?)%s*[:=]%s*)([\"']?)"
end
for i, p in ipairs(PARAMS) do
  PARAM_PATS[i] = "(" .. nocase(p) .. "([\"']?)%s*([:=])%s*)([\"']?)"
end
for i, s in ipairs(SCHEMES) do SCHEME_PATS[i] = "(" .. nocase(s) .. ")(%s+)([%w%-._~+/]+=*)" end

-- Does v look like a credential rather than a word of prose?
local function credential_like(v)
  if #v < 8 then return false end
  if v:find("%d") or v:find("[%-._~+/=]") then return true end
  return #v >= 20 and v:find("%u") ~= nil and v:find("%l") ~= nil
end

-- The position before the first of the patterns found from i (or #s).
local function first_stop(s, i, pats)
  local e = #s + 1
  for _, p in ipairs(pats) do
    local x = s:find(p, i)
    if x and x < e then e = x end
  end
  return e - 1
end

-- The end of a quoted value that starts at i: before its closing quote.
local function quoted_end(s, i, quote)
  local j = i
  while true do
    local q = s:find(quote, j, true)
    if not q then return #s end
    if s:sub(q - 1, q - 1) ~= "\\" then return q - 1 end
    j = q + 1
  end
end

local LINE_END = { "[\r\n\"'<>]", "\\[nr\"]" }
local TOKEN_END = { "[%s,;\"'<>)%]}]", "\\[nr\"]" }

-- The credential of a header value at i (unquoted): a cookie header's
-- whole line; else the scheme word and its credential ("Basic xyz").
-- Returns the kept prefix ("Basic ") and the end of the value.
local function header_value(s, i, cookie)
  if cookie then return "", first_stop(s, i, LINE_END) end
  local scheme = s:match("^%a[%w%-]* +", i)
  if scheme and not s:find("^[%s,;\"'<>)%]}]", i + #scheme) then
    return scheme, first_stop(s, i + #scheme, TOKEN_END)
  end
  return "", first_stop(s, i, TOKEN_END)
end

local MASKED = "^" .. M.MASK:gsub("%*", "%%*") .. "$"

-- Masks the value of every header `Name: value` (or quoted, or Name=value).
local function mask_header(s, pat, cookie)
  local out, i = {}, 1
  while true do
    local a, b, _, _, vq = s:find(pat, i)
    if not a then break end
    local keep, vend
    if vq ~= "" then
      keep, vend = "", quoted_end(s, b + 1, vq)
      local scheme = s:sub(b + 1, vend):match("^%a[%w%-]* +")
      if scheme and not cookie then keep = scheme end
    else
      keep, vend = header_value(s, b + 1, cookie)
    end
    local value = s:sub(b + 1 + #keep, vend)
    if value == "" or value:find(MASKED) then
      out[#out + 1] = s:sub(i, vend)
    else
      out[#out + 1] = s:sub(i, b) .. keep .. M.MASK
    end
    i = vend + 1
  end
  out[#out + 1] = s:sub(i)
  return table.concat(out)
end

-- Masks the value of every parameter `name=value` or member `"name": "value"`.
local function mask_param(s, pat)
  local out, i = {}, 1
  while true do
    local a, b, _, kq, sep, vq = s:find(pat, i)
    if not a then break end
    -- not the tail of a longer name ("my_token="), not prose ("the token: expired")
    local is_param = (a == 1 or not s:sub(a - 1, a - 1):find("[%w_]")) and (sep == "=" or kq ~= "")
    local vend = b
    if is_param then
      vend = vq ~= "" and quoted_end(s, b + 1, vq) or first_stop(s, b + 1, { "[%s&,;\"'<>)%]}]", "\\[nr\"]" })
    end
    local value = s:sub(b + 1, vend)
    if not is_param or value == "" or value:find(MASKED) then
      out[#out + 1] = s:sub(i, vend)
    else
      out[#out + 1] = s:sub(i, b) .. M.MASK
    end
    i = vend + 1
  end
  out[#out + 1] = s:sub(i)
  return table.concat(out)
end

local function mask_shapes(s)
  for i, pat in ipairs(HEADER_PATS) do
    if s:find(pat) then s = mask_header(s, pat, HEADERS[i]:find("Cookie") ~= nil) end
  end
  for _, pat in ipairs(PARAM_PATS) do
    if s:find(pat) then s = mask_param(s, pat) end
  end
  for _, pat in ipairs(SCHEME_PATS) do
    s = s:gsub(pat, function(scheme, space, v)
      if credential_like(v) then return scheme .. space .. M.MASK end
    end)
  end
  -- JWT: header.payload.signature, the header a base64url JSON object
  s = s:gsub("eyJ[%w_%-]+%.[%w_%-]+%.[%w_%-]*", function(jwt)
    if #jwt >= 20 then return M.MASK end
  end)
  return s
end

-- Replaces secrets and credentials in a line of free text. See the header.
function M.mask(s)
  if type(s) ~= "string" or s == "" then return s end
  for _, v in ipairs(ordered) do s = mask_value(s, v) end
  return mask_shapes(s)
end

---------------------------------------------------------------- env / file

local function missing(reason)
  return setmetatable({ reason = reason }, Missing)
end

-- env "NAME": the variable's value, registered as a secret.
function M.env(name)
  if type(name) ~= "string" or name == "" then
    error("env: expected a variable name", 2)
  end
  local v = os.getenv(name)
  if v == nil then return missing("environment variable " .. name .. " is not set") end
  if v == "" then return missing("environment variable " .. name .. " is empty") end
  return M.register(v)
end

-- Joins a relative path to a directory ("." or nil: unchanged).
function M.resolve(path, dir)
  if type(path) ~= "string" or path:sub(1, 1) == "/" or not dir or dir == "." or dir == "" then
    return path
  end
  return (dir:gsub("/+$", "")) .. "/" .. path
end

-- A `file` helper whose relative paths are taken from dir (the config
-- file's directory). file "PATH": the file's content without its trailing
-- newline, registered.
function M.file_in(dir)
  return function(path)
    if type(path) ~= "string" or path == "" then
      error("file: expected a path", 2)
    end
    local full = M.resolve(path, dir)
    local f, err = io.open(full, "rb")
    if not f then return missing("cannot read secret file " .. (err or full)) end
    local v = f:read("a") or ""
    f:close()
    v = v:gsub("\r?\n$", "")
    if v == "" then return missing("secret file " .. full .. " is empty") end
    return M.register(v)
  end
end

-- file "PATH" relative to the current directory.
M.file = M.file_in(nil)

return M
