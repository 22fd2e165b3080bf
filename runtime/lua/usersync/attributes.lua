-- usersync.attributes: the attribute mapping of a sync entry without Lua
-- (`attributes = { name = "profile.login", display_name = "{profile.firstName}
-- {profile.lastName}", email = "profile.email" }`). One grammar, read here
-- for the config check (config.lua), the default policy and `explain`.
--
--   local attributes = require "usersync.attributes"
--   local spec, why = attributes.parse("{profile.firstName} {profile.lastName}")
--   attributes.value("{profile.firstName} {profile.lastName}", okta_user)  --> "Ann Lee" | nil
--
-- A spec is either one field of the Okta user ("profile.login", "id") or a
-- template: text with fields in braces. A field's value is its string (a
-- number as written); an absent, null or empty field is empty; a list, an
-- object or a boolean raises (the user becomes a policy error). A template's
-- result has its runs of spaces made one and its ends trimmed; a spec whose
-- fields are all empty gives nil (the default policy then falls back to its
-- own value, or, for the account name, leaves the user out).
local M = {}

-- The account fields a sync entry may map, in the order shown.
M.FIELDS = { "name", "display_name", "email" }

local IDENT = "^[%a_][%w_]*$"

-- A field path ("profile.login", "id") as its list of keys, or nil, why.
local function parse_path(text)
  local keys = {}
  for key in (text .. "."):gmatch("([^.]*)%.") do
    if not key:match(IDENT) then return nil end
    keys[#keys + 1] = key
  end
  if keys[1] == "id" and #keys == 1 then return keys end
  if keys[1] == "profile" and #keys == 2 then return keys end
  return nil
end

local SHAPE = "expected an Okta user field (\"profile.login\", \"id\") or a template of them "
  .. "(\"{profile.firstName} {profile.lastName}\")"

-- Parses a spec. Returns { text, parts = { "literal" | { keys } ... },
-- fields = { "profile.x", ... }, template = bool } or nil, why.
function M.parse(text)
  if type(text) ~= "string" or text == "" then return nil, SHAPE end
  if not text:find("[{}]") then
    local keys = parse_path(text)
    if not keys then return nil, SHAPE .. ", got " .. ("%q"):format(text) end
    return { text = text, parts = { keys }, fields = { text }, template = false }
  end
  local parts, fields, pos = {}, {}, 1
  while pos <= #text do
    local open = text:find("[{}]", pos)
    if not open then parts[#parts + 1] = text:sub(pos); break end
    if text:sub(open, open) == "}" then
      return nil, ("unmatched '}' at character %d of %q"):format(open, text)
    end
    if open > pos then parts[#parts + 1] = text:sub(pos, open - 1) end
    local close = text:find("}", open + 1, true)
    if not close then return nil, ("unclosed '{' at character %d of %q"):format(open, text) end
    local inner = text:sub(open + 1, close - 1)
    local keys = parse_path(inner)
    if not keys then
      return nil, ("{%s} in %q is not an Okta user field (\"profile.login\", \"id\")"):format(inner, text)
    end
    parts[#parts + 1] = keys
    fields[#fields + 1] = inner
    pos = close + 1
  end
  return { text = text, parts = parts, fields = fields, template = true }
end

-- A field's value as text, or nil when absent, null or empty. A list, an
-- object or a boolean is not text: raises naming the field and the spec
-- (the policy then reports the user as a policy error and leaves its
-- account as it is, rather than dropping the user or the field quietly).
local function field(u, keys, text)
  local v = u
  for _, k in ipairs(keys) do
    if type(v) ~= "table" then return nil end
    v = v[k]
  end
  if type(v) == "string" then return v ~= "" and v or nil end
  if math.type(v) == "integer" then return tostring(v) end
  if type(v) == "number" and v == v then return ("%.14g"):format(v) end
  if type(v) == "table" or type(v) == "boolean" then
    local what = type(v) == "boolean" and "a boolean" or (#v > 0 or next(v) == nil) and "a list" or "an object"
    error(("attributes: %s is %s, not text or a number (in %q)"):format(table.concat(keys, "."), what, text), 0)
  end
  return nil
end

-- Compiled specs, by text (the default policy asks once per user and field).
local compiled = {}

local function evaluate(spec, u)
  if not spec.template then return field(u, spec.parts[1], spec.text) end
  local out, any = {}, false
  for i, part in ipairs(spec.parts) do
    if type(part) == "string" then
      out[i] = part
    else
      local v = field(u, part, spec.text)
      any = any or v ~= nil
      out[i] = v or ""
    end
  end
  if not any then return nil end
  local s = table.concat(out):gsub("%s%s+", " "):match("^%s*(.-)%s*$")
  return s ~= "" and s or nil
end

-- The value spec `text` gives for Okta user u: a non-empty string, or nil.
-- Raises on a spec that does not parse (the config check refuses those).
function M.value(text, u)
  local spec = compiled[text]
  if not spec then
    local why
    spec, why = M.parse(text)
    if not spec then error("attributes: " .. why, 2) end
    compiled[text] = spec
  end
  return evaluate(spec, u)
end

-- What the default policy does for a field the config leaves unmapped
-- (for `explain`).
M.DEFAULTS = {
  name = "profile.login",
  display_name = "profile.displayName, else \"{profile.firstName} {profile.lastName}\", else the name",
  email = "profile.email",
}

return M
