-- usersync.secrets: the `env "NAME"` and `file "PATH"` helpers of the config
--, and the registry of secret values that every log line and
-- error message is masked against.
--
--   local secrets = require "usersync.secrets"
--   local token = secrets.env("OKTA_API_TOKEN")   -- string, or a Missing value
--   secrets.mask("Authorization: SSWS " .. token) --> "Authorization: SSWS ********"
--
-- A secret that cannot be read does not raise: it yields a Missing value
-- whose `.reason` the config validator reports at the key that used it, so
-- every problem of a config is reported at once.
local M = {}

local known = {}     -- value -> true
local ordered = {}   -- longest first, so a secret containing another masks whole
local MIN_LEN = 4    -- shorter values would mask ordinary words

local Missing = {}
Missing.__index = Missing
Missing.__tostring = function(m) return "<missing secret: " .. m.reason .. ">" end
M.Missing = Missing

function M.is_missing(v) return getmetatable(v) == Missing end

-- Adds a value to the mask list. Returns the value.
function M.register(value)
  if type(value) == "string" and #value >= MIN_LEN and not known[value] then
    known[value] = true
    ordered[#ordered + 1] = value
    table.sort(ordered, function(a, b) return #a > #b end)
  end
  return value
end

-- Replaces every registered secret in s with ********. Linear in the
-- length of s for each secret (a plan's text can be many megabytes).
function M.mask(s)
  if type(s) ~= "string" or #ordered == 0 then return s end
  for _, v in ipairs(ordered) do
    if s:find(v, 1, true) then
      local parts, i = {}, 1
      while true do
        local a, b = s:find(v, i, true)
        if not a then break end
        parts[#parts + 1] = s:sub(i, a - 1)
        parts[#parts + 1] = "********"
        i = b + 1
      end
      parts[#parts + 1] = s:sub(i)
      s = table.concat(parts)
    end
  end
  return s
end

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

-- file "PATH": the file's content without its trailing newline, registered.
function M.file(path)
  if type(path) ~= "string" or path == "" then
    error("file: expected a path", 2)
  end
  local f, err = io.open(path, "rb")
  if not f then return missing("cannot read secret file " .. (err or path)) end
  local v = f:read("a") or ""
  f:close()
  v = v:gsub("\r?\n$", "")
  if v == "" then return missing("secret file " .. path .. " is empty") end
  return M.register(v)
end

return M
