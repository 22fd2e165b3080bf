-- usersync.html: HTML escaping and a few builders for pages the server
-- renders (the status page). Every text that comes from the store, the
-- config or an IdP goes through esc (text and attribute values alike), so
-- a display name like `<script>…` is shown as text, never run.
--
--   local html = require "usersync.html"
--   html.esc([[<a href="x">]])            --> &lt;a href=&quot;x&quot;&gt;
--   html.text(name)                        --> esc, and <wbr> in a long run without spaces
--   html.url_encode("a b/c")              --> a%20b%2Fc   (a path segment or query value)
--   html.form_decode("a=1&b=x+y%21")      --> { a = "1", b = "x y!" }
--   local b = html.buffer(); b("<p>", html.esc(name), "</p>"); b:text()
local M = {}

local ESC = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }

-- Text (or a number) as HTML text or a quoted attribute value; nil -> "".
-- Bytes that are not valid UTF-8 are replaced by U+FFFD, as are bidi
-- override and isolate characters; control characters (C0 other than tab
-- and newline, DEL, C1) are dropped.
local function clean(v)
  local s = tostring(v)
  if not utf8.len(s) then
    local out = {}
    local i, n = 1, #s
    while i <= n do
      local ok, cp = pcall(utf8.codepoint, s, i)
      if ok then
        local ch = utf8.char(cp)
        out[#out + 1] = ch
        i = i + #ch
      else
        out[#out + 1] = "\u{FFFD}"
        i = i + 1
      end
    end
    s = table.concat(out)
  end
  s = s:gsub("[%z\1-\8\11-\31\127]", ""):gsub("\194[\128-\159]", "")
  -- bidi embeddings, overrides and isolates (U+202A-202E, U+2066-2069):
  -- a name with a right-to-left override could make the text after it on
  -- the page read backwards ("exe.txt" shown as "txt.exe"); shown as U+FFFD
  return (s:gsub("\226\128[\170-\174]", "\u{FFFD}"):gsub("\226\129[\166-\169]", "\u{FFFD}"))
end

function M.esc(v)
  if v == nil then return "" end
  return (clean(v):gsub("[&<>\"']", ESC))
end

-- Runs of more non-space characters than this get a line-break
-- opportunity (<wbr>) every WRAP characters in M.text.
M.WRAP = 30

-- Text (or a number) as HTML text in an element (never in an attribute,
-- nor in <title>): escaped as esc does, and a run of more than WRAP
-- characters without a space (a 600-character message, a long account
-- name) gets <wbr> every WRAP characters, so a table column can wrap it
-- instead of widening the page past the screen's edge.
function M.text(v)
  if v == nil then return "" end
  local s = clean(v)
  if #s > M.WRAP and s:find(("[^%s]"):rep(M.WRAP + 1)) then
    local out, run = {}, 0
    for _, cp in utf8.codes(s) do
      if cp <= 32 then run = 0 else run = run + 1 end
      if run > M.WRAP then out[#out + 1] = "\0"; run = 1 end
      out[#out + 1] = utf8.char(cp)
    end
    s = table.concat(out)
  end
  return (s:gsub("[&<>\"']", ESC):gsub("%z", "<wbr>"))
end

-- Percent-encodes everything but unreserved characters (RFC 3986).
function M.url_encode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function unescape(s)
  s = s:gsub("%+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end
M.url_decode = unescape

-- An application/x-www-form-urlencoded body -> { name = value } (the first
-- value of a repeated name wins).
function M.form_decode(body)
  local out = {}
  for pair in (body or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k = unescape(k)
    if out[k] == nil then out[k] = unescape(v) end
  end
  return out
end

-- A string builder: b(...) appends its arguments; b:text() joins them.
local Buffer = {}
Buffer.__index = Buffer
Buffer.__call = function(self, ...)
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if v ~= nil then self.n = self.n + 1; self.parts[self.n] = v end
  end
end
function Buffer:text() return table.concat(self.parts) end

function M.buffer() return setmetatable({ parts = {}, n = 0 }, Buffer) end

return M
