-- test_re.lua: usersync.re from scripts: compile/match/find/gsub/split,
-- named groups, flags, the pattern cache and every failure path.
local test = require "tap"
local re = require "usersync.re"

test("header example of bind_re.c", function(t)
  local rx = assert(re.compile([[(?<user>[\w.]+)@(?<domain>[\w.]+)]], "i"))
  local m = rx:match("Mail: Ada.Lovelace@Example.com")
  t:eq(m[0], "Ada.Lovelace@Example.com")
  t:eq(m[1], "Ada.Lovelace"); t:eq(m.user, "Ada.Lovelace")
  t:eq(m[2], "Example.com"); t:eq(m.domain, "Example.com")
  local s, n = rx:gsub("a@b.org, c@d.net", "${user} at $2")
  t:eq(s, "a at b.org, c at d.net"); t:eq(n, 2)
  t:eq(re.split("a, b,c", ",\\s*")[2], "b")
  local ok, msg, code = re.compile("(abc")
  t:eq(ok, nil); t:eq(msg, 'missing closing parenthesis at offset 4 in "(abc"'); t:eq(code, "EREGEX")
end)

test("match: positions, init, unset groups", function(t)
  local rx = re.compile("(a)|(b)")
  local m = rx:match("xxb")
  t:eq(m[0], "b"); t:eq(m[1], false); t:eq(m[2], "b")
  t:eq(m.start, 3); t:eq(m["end"], 3)
  t:eq(rx:match("ab", 2)[0], "b")
  t:eq(rx:match("ab", -1)[0], "b")
  t:eq(rx:match("zzz"), nil)
  t:eq(rx:match("ab", 10), nil)
  t:eq(#rx:match("a"), 2, "length covers every group")
end)

test("find and test", function(t)
  local s, e = re.find("hello wörld", "w\\w+")
  t:eq(s, 7); t:eq(e, 12)            -- byte offsets, "ö" is two bytes
  t:eq(("hello wörld"):sub(s, e), "wörld")
  t:eq(re.find("abc", "z"), nil)
  t:eq(re.test("ABC", "abc"), false)
  t:eq(re.test("ABC", "abc", "i"), true)
end)

test("flags m, s, x and unicode classes", function(t)
  t:eq(re.match("a\nb", "^b$"), nil)
  t:eq(re.match("a\nb", "^b$", "m")[0], "b")
  t:eq(re.match("a\nb", "a.b"), nil)
  t:eq(re.match("a\nb", "a.b", "s")[0], "a\nb")
  t:eq(re.match("abc", " a b  # comment\n c", "x")[0], "abc")
  t:eq(re.match("Ünïcödé!", "\\w+")[0], "Ünïcödé")
  t:eq(re.match("STRASSE", "straße", "i"), nil, "no multi-char folding")
  t:eq(re.match("ÉCOLE", "école", "i")[0], "ÉCOLE")
  t:raises(function() re.compile("a", "q") end, "unknown regex flag 'q'")
end)

test("find_all and gmatch", function(t)
  local rx = re.compile("(?<k>\\w+)=(?<v>\\w*)")
  local all = rx:find_all("a=1 b= c=3")
  t:eq(#all, 3)
  t:eq(all[2].k, "b"); t:eq(all[2].v, ""); t:eq(all[3][2], "3")
  t:eq(#rx:find_all("a=1 b= c=3", 2), 2)
  local keys = {}
  for m in rx:gmatch("x=1,y=2") do keys[#keys + 1] = m.k end
  t:same(keys, { "x", "y" })
  local n = 0
  for _ in re.compile("x*"):gmatch("ab") do n = n + 1 end
  t:eq(n, 3, "empty matches at 0, 1, 2")
  t:eq(#re.find_all("", "x"), 0)
end)

test("gsub: templates, max, functions", function(t)
  t:eq(re.gsub("2025-03-13", "(\\d+)-(\\d+)-(\\d+)", "$3.$2.$1"), "13.03.2025")
  t:eq(re.gsub("a.b", "\\.", "$$"), "a$b")
  local s, n = re.compile("o"):gsub("foo boo", "0", 3)
  t:eq(s, "f00 b0o"); t:eq(n, 3)
  s, n = re.gsub("abc", "x*", "-")
  t:eq(s, "-a-b-c-"); t:eq(n, 4)
  s = re.gsub("Ada Lovelace", "(?<w>\\w+)", function(m) return m.w:upper() end)
  t:eq(s, "ADA LOVELACE")
  s, n = re.gsub("a1b2", "\\d", function(m) if m[0] == "1" then return 9 end end)
  t:eq(s, "a9b2"); t:eq(n, 2)
  local ok, msg, code = re.gsub("a", "(a)", "$2")
  t:eq(ok, nil); t:contains(msg, "group 2"); t:eq(code, "EREGEX")
  ok, msg, code = re.gsub("a", "(a)", "${who}")
  t:eq(ok, nil); t:contains(msg, '"who"'); t:eq(code, "EREGEX")
  t:raises(function() re.gsub("a", "a", function() return {} end) end, "invalid replacement")
  -- the callback may use the module (and its cache) freely
  s = re.gsub("a b", "\\w", function(m) return re.gsub(m[0], "(.)", "<$1>") end)
  t:eq(s, "<a> <b>")
end)

test("split", function(t)
  t:same(re.split("a, b,c", ",\\s*"), { "a", "b", "c" })
  t:same(re.split("abc", ""), { "a", "b", "c" })
  t:same(re.split(",a,", ","), { "", "a", "" })
  t:same(re.split("", ","), { "" })
  t:same(re.compile(","):split("a,b,c,d", 2), { "a", "b,c,d" })
end)

test("bad patterns return nil, msg with offset, EREGEX", function(t)
  local ok, msg, code = re.compile("a{2,1}")
  t:eq(ok, nil); t:contains(msg, "at offset 5"); t:eq(code, "EREGEX")
  ok, msg, code = re.match("x", "[a-")
  t:eq(ok, nil); t:contains(msg, "offset"); t:eq(code, "EREGEX")
  ok, msg, code = re.test("x", "(?<n>a)(?<n>b)")
  t:eq(ok, nil); t:contains(msg, "offset"); t:eq(code, "EREGEX")
end)

test("invalid UTF-8 subject is EUTF8, not a crash", function(t)
  local rx = re.compile("e")
  for _, call in ipairs {
    function() return rx:match("caf\xe9") end,
    function() return rx:find("\xff") end,
    function() return rx:gsub("\xc3(", "x") end,
    function() return rx:split("a\x80") end,
    function() return rx:find_all("\xed\xa0\x80") end, -- encoded surrogate
    function() return rx:match("é", 2) end,           -- init inside a character
  } do
    local ok, msg, code = call()
    t:eq(ok, nil); t:eq(code, "EUTF8"); t:contains(msg, "UTF-8")
  end
  t:raises(function() for _ in rx:gmatch("\xff") do end end, "UTF%-8")
end)

-- The match limit is what ends the search: the error code says it was hit (an
-- exponential search would never return). How long it takes is for benchmarks:
-- under valgrind these two calls take over 10 s of CPU.
test("catastrophic backtracking ends with EREGEX_LIMIT", function(t)
  local ok, msg, code = re.test(string.rep("a", 5000) .. "!", "^(\\w+\\s?)*$")
  t:eq(ok, nil); t:contains(msg, "limit"); t:eq(code, "EREGEX_LIMIT")
  ok, msg, code = re.gsub(string.rep("a", 40) .. "!", "(a+)+$", "x")
  t:eq(ok, nil); t:eq(code, "EREGEX_LIMIT")
end)

test("long subjects with backtracking groups still match", function(t)
  local s = string.rep("ab", 50000)
  t:eq(re.test(s, "^(?:a|b)*$"), true)
  t:eq(re.test(s, "^((a)|b)+$"), true)
  t:eq(#re.split(s, "(?<=a)"), 50001)
  t:eq(select(2, re.gsub(s, "(a)(b)", "$2$1")), 50000)
end)

test("userdata: close, __close, tostring, fields, misuse", function(t)
  local rx = re.compile("a+", "i")
  t:eq(rx.pattern, "a+"); t:eq(rx.flags, "i")
  t:match(tostring(rx), "^usersync%.re%.Regex /a%+/")
  rx:close(); rx:close()
  t:match(tostring(rx), "closed")
  t:raises(function() rx:match("a") end, "closed regex")
  do local r2 <close> = re.compile("b"); t:eq(r2:find("ab"), 2) end
  t:raises(function() re.compile(nil) end, "bad argument")
  t:raises(function() re.compile("a"):match(nil) end, "bad argument")
  t:raises(function() re.compile("a").match({}, "a") end, "usersync.re.Regex expected")
  local g = re.compile("a"):gsub("aa", "b")
  t:eq(g, "bb")
end)

test("cache: many patterns, still correct", function(t)
  for i = 1, re.cache_size * 3 do
    t:eq(re.match("n" .. i, "n(" .. i .. ")")[1], tostring(i))
  end
  t:eq(re.match("A", "a", "i")[0], "A")
  t:eq(re.match("A", "a"), nil, "flags are part of the key")
end)

return test.done()
