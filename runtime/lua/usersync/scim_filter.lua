-- usersync.scim_filter: SCIM 2.0 filters and attribute paths (RFC 7644
-- §3.4.2.2 and §3.5.2), for the SCIM endpoint of `usersync serve`.
--
--   local sf = require "usersync.scim_filter"
--   local f, err = sf.parse('userName eq "bjensen" and (emails co "example.com" or title pr)')
--   sf.match(f, resource)            -- true when the resource (decoded JSON) passes
--   sf.hint(f)                       -- { attr = "username", value = "bjensen" } when an
--                                    -- indexed attribute must equal a value (or nil)
--   local p, err = sf.path('emails[type eq "work"].value')
--   -- p = { attr = "emails", filter = <filter>, sub = "value" }; URN-prefixed
--   -- paths ("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager")
--   -- give p.urn (lowercase) and the attribute after it.
--
-- Operators: eq ne co sw ew gt lt ge le pr, and, or, not, parentheses and
-- value filters (`members[value eq "2819c223"]`, `emails[type eq "work" and
-- value co "@example.com"]`), all case-insensitive. Attribute names are
-- case-insensitive; string comparisons too, except for the case-exact
-- attributes id, externalId and $ref and members' value (RFC 7643 §2.1).
-- A multi-valued attribute matches when one of its values does; a complex
-- one without a sub-attribute is compared on its `value`.
-- Errors: nil, message (the caller answers 400 invalidFilter / invalidPath).

local M = {}

M.MAX_LENGTH = 4096
M.MAX_DEPTH = 50

local CASE_EXACT = { id = true, externalid = true, ["$ref"] = true }

---------------------------------------------------------------- lexer

-- Tokens: { t = "word"|"string"|"number"|"(" | ")" | "[" | "]", v = text }
local function lex(s)
  local toks, i, n = {}, 1, #s
  while i <= n do
    local c = s:sub(i, i)
    if c:match("%s") then
      i = i + 1
    elseif c == "(" or c == ")" or c == "[" or c == "]" then
      toks[#toks + 1] = { t = c }
      i = i + 1
    elseif c == '"' then
      -- a JSON string
      local j, buf = i + 1, {}
      while true do
        if j > n then return nil, "unterminated string in filter" end
        local d = s:sub(j, j)
        if d == '"' then break end
        if d == "\\" then
          local e = s:sub(j + 1, j + 1)
          local map = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
          if map[e] then
            buf[#buf + 1] = map[e]
            j = j + 2
          elseif e == "u" then
            local hex = s:sub(j + 2, j + 5)
            if not hex:match("^%x%x%x%x$") then return nil, "bad \\u escape in filter" end
            buf[#buf + 1] = utf8.char(tonumber(hex, 16))
            j = j + 6
          else
            return nil, "bad escape in filter string"
          end
        else
          buf[#buf + 1] = d
          j = j + 1
        end
      end
      toks[#toks + 1] = { t = "string", v = table.concat(buf) }
      i = j + 1
    else
      local word = s:match("^[^%s%(%)%[%]\"]+", i)
      if word:match("^%-?%d+%.?%d*[eE]?[%+%-]?%d*$") and tonumber(word) then
        toks[#toks + 1] = { t = "number", v = tonumber(word) }
      else
        toks[#toks + 1] = { t = "word", v = word }
      end
      i = i + #word
    end
  end
  return toks
end

---------------------------------------------------------------- paths

-- "urn:...:User:name.givenName" -> urn (lowercase), attr, sub (lowercase);
-- nil for a malformed one.
local function split_attr(text)
  -- a bare schema URN (its last part a schema name: "...:2.0:User")
  if text:match("^urn:.*:%u[%w]*$") then return text:lower(), nil end
  local urn, rest = text:match("^(urn:.+):([^:]+)$")
  if urn then text = rest; urn = urn:lower() end
  local attr, sub = text:match("^([%a$][%w_%-$]*)%.([%a$][%w_%-$]*)$")
  if not attr then
    attr = text:match("^[%a$][%w_%-$]*$")
    if not attr then return nil end
  end
  return urn, attr:lower(), sub and sub:lower()
end

---------------------------------------------------------------- parser

local COMPARE = { eq = true, ne = true, co = true, sw = true, ew = true, gt = true, lt = true, ge = true, le = true }

local Parser = {}
Parser.__index = Parser

function Parser:peek() return self.toks[self.i] end
function Parser:next() local t = self.toks[self.i]; self.i = self.i + 1; return t end
local function kw(tok, word) return tok and tok.t == "word" and tok.v:lower() == word end

function Parser:fail(msg) error({ scim_filter = msg }, 0) end

function Parser:filter(depth)
  if depth > M.MAX_DEPTH then self:fail("filter nested too deeply") end
  local left = self:conj(depth)
  while kw(self:peek(), "or") do
    self:next()
    left = { op = "or", left, self:conj(depth) }
  end
  return left
end

function Parser:conj(depth)
  local left = self:unary(depth)
  while kw(self:peek(), "and") do
    self:next()
    left = { op = "and", left, self:unary(depth) }
  end
  return left
end

function Parser:unary(depth)
  local tok = self:peek()
  if not tok then self:fail("filter ends early") end
  if kw(tok, "not") then
    self:next()
    local open = self:next()
    if not open or open.t ~= "(" then self:fail("expected ( after not") end
    local f = self:filter(depth + 1)
    local close = self:next()
    if not close or close.t ~= ")" then self:fail("expected )") end
    return { op = "not", f }
  end
  if tok.t == "(" then
    self:next()
    local f = self:filter(depth + 1)
    local close = self:next()
    if not close or close.t ~= ")" then self:fail("expected )") end
    return f
  end
  return self:attr_expr(depth)
end

function Parser:attr_expr(depth)
  local tok = self:next()
  if tok.t ~= "word" then self:fail("expected an attribute name") end
  local urn, attr, sub = split_attr(tok.v)
  if not attr then self:fail(("bad attribute path %q"):format(tok.v)) end
  local nxt = self:peek()
  if nxt and nxt.t == "[" then
    if sub then self:fail("a value filter follows the attribute, not a sub-attribute") end
    self:next()
    local inner = self:filter(depth + 1)
    local close = self:next()
    if not close or close.t ~= "]" then self:fail("expected ]") end
    return { op = "vp", urn = urn, attr = attr, filter = inner }
  end
  local optok = self:next()
  if not optok or optok.t ~= "word" then self:fail("expected an operator after " .. tok.v) end
  local op = optok.v:lower()
  if op == "pr" then return { op = "pr", urn = urn, attr = attr, sub = sub } end
  if not COMPARE[op] then self:fail(("unknown operator %q"):format(optok.v)) end
  local vtok = self:next()
  if not vtok then self:fail("expected a value after " .. op) end
  local value
  if vtok.t == "string" or vtok.t == "number" then
    value = vtok.v
  elseif kw(vtok, "true") then
    value = true
  elseif kw(vtok, "false") then
    value = false
  elseif kw(vtok, "null") then
    value = "\0null"
  else
    self:fail(("bad comparison value %q"):format(tostring(vtok.v or vtok.t)))
  end
  return { op = op, urn = urn, attr = attr, sub = sub, value = value }
end

-- Parses a filter. -> ast | nil, message
function M.parse(text)
  if type(text) ~= "string" or text:match("^%s*$") then return nil, "empty filter" end
  if #text > M.MAX_LENGTH then return nil, "filter too long" end
  local toks, err = lex(text)
  if not toks then return nil, err end
  local p = setmetatable({ toks = toks, i = 1 }, Parser)
  local ok, ast = pcall(function()
    local f = p:filter(0)
    if p:peek() then p:fail("unexpected " .. tostring(p:peek().v or p:peek().t)) end
    return f
  end)
  if not ok then
    if type(ast) == "table" and ast.scim_filter then return nil, ast.scim_filter end
    error(ast, 0)
  end
  return ast
end

-- Parses a PATCH path: attrPath, or valuePath with an optional ".sub".
-- -> { urn, attr, sub, filter } | nil, message
function M.path(text)
  if type(text) ~= "string" or text == "" then return nil, "empty path" end
  if #text > M.MAX_LENGTH then return nil, "path too long" end
  local head, inner, tail = text:match("^([^%[]+)%[(.*)%]%.?([^%]]*)$")
  if head then
    local urn, attr, sub = split_attr(head)
    if not attr or sub then return nil, ("bad path %q"):format(text) end
    local f, err = M.parse(inner)
    if not f then return nil, err end
    if tail ~= "" and not tail:match("^[%a$][%w_%-$]*$") then return nil, ("bad path %q"):format(text) end
    return { urn = urn, attr = attr, filter = f, sub = tail ~= "" and tail:lower() or nil }
  end
  local urn, attr, sub = split_attr(text)
  if not attr then
    -- a bare schema URN names the extension itself
    if urn then return { urn = urn, attr = nil } end
    return nil, ("bad path %q"):format(text)
  end
  return { urn = urn, attr = attr, sub = sub }
end

---------------------------------------------------------------- evaluation

-- The key of t that is name matched case-insensitively (name is
-- lowercase), or nil.
local function key_ci(t, name)
  if type(t) ~= "table" then return nil end
  if t[name] ~= nil then return name end
  for k in pairs(t) do
    if type(k) == "string" and k:lower() == name then return k end
  end
  return nil
end
M.key_ci = key_ci

-- t[name] with name matched case-insensitively (name is lowercase).
local function get_ci(t, name)
  local k = key_ci(t, name)
  if k ~= nil then return t[k] end
  return nil
end
M.get_ci = get_ci

-- The container an attribute of `urn` lives in: the resource, or its
-- extension object (core schema URNs name the resource itself).
function M.container(res, urn)
  if not urn or urn:match("^urn:ietf:params:scim:schemas:core:") then return res end
  return get_ci(res, urn)
end

local function lower(v) return type(v) == "string" and v:lower() or v end

local function compare(op, have, want, exact)
  if want == "\0null" then
    if op == "eq" then return have == nil end
    if op == "ne" then return have ~= nil end
    return false
  end
  if have == nil then return op == "ne" end
  if type(want) == "boolean" or type(have) == "boolean" then
    if type(have) == "string" then have = have:lower() == "true" end
    if op == "eq" then return have == want end
    if op == "ne" then return have ~= want end
    return false
  end
  if type(want) == "number" then
    have = tonumber(have)
    if not have then return op == "ne" end
  elseif type(have) == "number" then
    want = tonumber(want)
    if not want then return op == "ne" end
  else
    have, want = tostring(have), tostring(want)
    if not exact then have, want = have:lower(), want:lower() end
  end
  if op == "eq" then return have == want end
  if op == "ne" then return have ~= want end
  if type(have) == "string" then
    if op == "co" then return have:find(want, 1, true) ~= nil end
    if op == "sw" then return have:sub(1, #want) == want end
    if op == "ew" then return want == "" or have:sub(-#want) == want end
  end
  if op == "gt" then return have > want end
  if op == "ge" then return have >= want end
  if op == "lt" then return have < want end
  if op == "le" then return have <= want end
  return false
end

local function is_list(v) return type(v) == "table" and (v[1] ~= nil or next(v) == nil) end

-- The values an attribute expression sees: a list (empty when absent).
local function values_of(res, node)
  local c = M.container(res, node.urn)
  local v = get_ci(c, node.attr)
  if v == nil then return {} end
  local list = is_list(v) and v or { v }
  if node.sub then
    local out = {}
    for _, item in ipairs(list) do
      local s = get_ci(item, node.sub)
      if s ~= nil then out[#out + 1] = s end
    end
    return out
  end
  local out = {}
  for _, item in ipairs(list) do
    -- a complex value is compared on its `value`
    if type(item) == "table" then item = get_ci(item, "value") end
    if item ~= nil then out[#out + 1] = item end
  end
  return out
end

function M.match(f, res)
  local op = f.op
  if op == "and" then return M.match(f[1], res) and M.match(f[2], res) end
  if op == "or" then return M.match(f[1], res) or M.match(f[2], res) end
  if op == "not" then return not M.match(f[1], res) end
  if op == "vp" then
    local v = get_ci(M.container(res, f.urn), f.attr)
    if type(v) ~= "table" then return false end
    for _, item in ipairs(is_list(v) and v or { v }) do
      if type(item) == "table" and M.match(f.filter, item) then return true end
    end
    return false
  end
  local vals = values_of(res, f)
  if op == "pr" then
    for _, v in ipairs(vals) do
      if v ~= "" and v ~= require("usersync.json").null then return true end
    end
    return false
  end
  local exact = CASE_EXACT[f.sub or f.attr] or (f.attr == "value" and f.exact_value)
  if #vals == 0 then return compare(op, nil, f.value, exact) end
  for _, v in ipairs(vals) do
    if compare(op, v, f.value, exact) then return true end
  end
  return false
end

-- An index the store has for `kind` ("User"/"Group"): the attribute a
-- filter must equal, { attr, value }, or nil when the filter needs a scan.
local INDEXED = {
  User = { id = true, username = true, externalid = true },
  Group = { id = true, displayname = true, externalid = true },
}
function M.hint(f, kind)
  if not f then return nil end
  if f.op == "eq" and not f.urn and not f.sub and INDEXED[kind][f.attr] and type(f.value) == "string" then
    return { attr = f.attr, value = f.value }
  end
  if f.op == "vp" and kind == "Group" and f.attr == "members" and f.filter.op == "eq"
      and f.filter.attr == "value" and not f.filter.sub and type(f.filter.value) == "string" then
    return { attr = "member", value = f.filter.value }
  end
  if f.op == "and" then return M.hint(f[1], kind) or M.hint(f[2], kind) end
  return nil
end

M.lower = lower
return M
