-- test_json.lua: usersync.json: integer-preserving strict decoding, array and
-- object marks, the encoder's rules and every failure path.
local test = require "tap"
local json = require "usersync.json"

local function fails(t, ok, msg, code, want_msg)
  t:eq(ok, nil, "returns nil")
  t:eq(code, "EJSON", "code")
  if want_msg then t:eq(msg, want_msg) end
end

test("header example of bind_json.c", function(t)
  local v = assert(json.decode('{"id":"00u1","n":10,"f":1e3,"groups":[],"mgr":null}'))
  t:eq(math.type(v.n), "integer"); t:eq(math.type(v.f), "float")
  t:eq(v.mgr, json.null); t:eq(json.is_array(v.groups), true)
  v.tags = json.array {}
  t:eq(json.encode({ ok = true, tags = v.tags }, { sort_keys = true }), '{"ok":true,"tags":[]}')
  local ok, msg, code = json.decode('{"a":1,}')
  fails(t, ok, msg, code, "json: unexpected character '}' at offset 7")
end)

test("pick: only the values at the given paths, after validating the whole document", function(t)
  local doc = '{"eventType":"user.session.start","outcome":{"result":"SUCCESS"},"actor":{"id":"00u1","type":"User"},' ..
              '"target":[{"id":"a","type":"X"},{"id":"00u2","type":"User"}],"n":12,"big":[1,2,3]}'
  local etype, result, actor, target, missing, n, second =
    json.pick(doc, "eventType", "outcome.result", "actor", "target", "client.zone", "n", "target[1].id")
  t:eq(etype, "user.session.start")
  t:eq(result, "SUCCESS")
  t:same(actor, { id = "00u1", type = "User" })
  t:eq(#target, 2)
  t:eq(target[2].id, "00u2")
  t:ok(json.is_array(target))
  t:eq(missing, nil)
  t:eq(math.type(n), "integer")
  t:eq(second, "00u2")
  t:eq(select("#", json.pick(doc, "a", "b", "c")), 3, "one value per path")
  local v, msg, code = json.pick('{"a":1,}', "a")
  t:eq(v, nil); t:eq(code, "EJSON"); t:ok(msg)
  t:eq(json.pick('{"a":null}', "a"), json.null)
  t:raises(function() json.pick(doc, 1, {}) end, "string expected")
end)

test("null is a light userdata NULL", function(t)
  t:eq(type(json.null), "userdata")
  t:eq(json.decode("null"), json.null)
  t:eq(json.encode({ a = json.null }), '{"a":null}')
  t:eq(json.encode(json.decode('[null]')), "[null]")
  t:eq(json.encode(nil), "null")
end)

test("integers stay integers, floats stay floats", function(t)
  local v = json.decode("[9007199254740993, 10, -0, 1e3, 1.0, -7, 9223372036854775807, -9223372036854775808, 9223372036854775808, 0.1, 12345678901234567890]")
  t:eq(v[1], 9007199254740993); t:eq(math.type(v[1]), "integer")
  t:eq(v[1] - 9007199254740992, 1, "2^53+1 is exact")
  t:eq(math.type(v[2]), "integer")
  t:eq(math.type(v[3]), "float"); t:eq(1 / v[3], -math.huge, "-0 keeps its sign")
  t:eq(v[4], 1000.0); t:eq(math.type(v[4]), "float")
  t:eq(math.type(v[5]), "float")
  t:eq(v[6], -7)
  t:eq(v[7], math.maxinteger); t:eq(v[8], math.mininteger)
  t:eq(math.type(v[9]), "float", "2^63 does not fit")
  t:eq(v[10], 0.1)
  t:eq(math.type(v[11]), "float")
  t:eq(json.encode(v), "[9007199254740993,10,-0.0,1000.0,1.0,-7,9223372036854775807,-9223372036854775808,9.223372036854776e+18,0.1,1.2345678901234567e+19]")
end)

test("floats round-trip exactly", function(t)
  for _, x in ipairs { 0.1, 1 / 3, 2 ^ -1074, 1.7976931348623157e308, -2.5, 123456.789, 5e-324, 1e21, 2 ^ 53 } do
    local back = json.decode(json.encode(x))
    t:eq(back, x, tostring(x)); t:eq(math.type(back), "float")
  end
  t:eq(json.encode(0.5), "0.5"); t:eq(json.encode(100.0), "100.0"); t:eq(json.encode(3), "3")
end)

test("[] and {} survive a round trip", function(t)
  local v = json.decode('{"a":[],"o":{},"n":[[],{}]}')
  t:eq(json.is_array(v.a), true); t:eq(json.is_object(v.o), true)
  t:eq(json.encode(v.a), "[]"); t:eq(json.encode(v.o), "{}")
  t:eq(json.encode(v, { sort_keys = true }), '{"a":[],"n":[[],{}],"o":{}}')
  t:eq(json.encode({}), "{}", "unmarked empty table is an object")
  t:eq(json.encode(json.array()), "[]")
  t:eq(json.encode(json.object()), "{}")
  t:eq(json.encode(json.array { 1, 2 }), "[1,2]")
  t:eq(json.encode(json.object { 1, 2 }), '{"1":1,"2":2}')
  local a = json.array { "x" }
  t:eq(json.array(a), a, "marking twice is fine")
  t:eq(json.is_array({}), false); t:eq(json.is_array("x"), false)
  t:raises(function() json.array(setmetatable({}, {})) end, "already has a metatable")
  t:raises(function() json.object(1) end, "table expected")
end)

test("encoder: tables, keys, escapes", function(t)
  t:eq(json.encode({ 1, 2, 3 }), "[1,2,3]")
  t:eq(json.encode({ [1] = 1, [3] = 3 }), "[1,null,3]")
  fails(t, json.encode({ [1] = 1, [10] = 3 }))
  t:eq(json.encode({ [2.5] = "x" }), '{"2.5":"x"}')
  t:eq(json.encode({ [10] = "x", y = 1 }, { sort_keys = true }), '{"10":"x","y":1}')
  t:eq(json.encode('q"\\/\n\r\t\b\f\0\x1f é'), '"q\\"\\\\/\\n\\r\\t\\b\\f\\u0000\\u001f é"')
  t:eq(json.encode({ b = 1, a = { c = true, b = false } }, { sort_keys = true, indent = 2 }),
    '{\n  "a": {\n    "b": false,\n    "c": true\n  },\n  "b": 1\n}')
  t:eq(json.encode({ 1 }, { indent = true }), "[\n  1\n]")
  t:raises(function() json.encode(1, "x") end, "table expected")
  t:raises(function() json.encode(1, { indent = 99 }) end, "indent")
  t:raises(function() json.encode() end, "bad argument")
end)

test("encoder failures name the place", function(t)
  local ok, msg, code = json.encode({ a = { b = { 1, 2, { c = 0 / 0 } } } })
  fails(t, ok, msg, code, "json: cannot encode NaN at $.a.b[3].c")
  ok, msg, code = json.encode({ x = math.huge })
  fails(t, ok, msg, code, "json: cannot encode an infinite number at $.x")
  local cyc = {}; cyc.self = { again = cyc }
  ok, msg, code = json.encode(cyc)
  fails(t, ok, msg, code, "json: cycle at $.self.again")
  ok, msg, code = json.encode({ users = { { name = "a", f = print } } })
  fails(t, ok, msg, code, "json: cannot encode a function at $.users[1].f")
  ok, msg, code = json.encode({ ["odd key"] = "\xff" }, { sort_keys = true })
  fails(t, ok, msg, code, 'json: invalid UTF-8 in string at $["odd key"]')
  ok, msg, code = json.encode({ [true] = 1 })
  fails(t, ok, msg, code, "json: cannot encode a table key of type boolean")
  ok, msg, code = json.encode({ a = { [true] = 1 } })
  fails(t, ok, msg, code, "json: cannot encode a table key of type boolean at $.a")
  ok, msg, code = json.encode({ list = { [5] = { v = 0 / 0 } } }, { sort_keys = true })
  fails(t, ok, msg, code, 'json: excessively sparse array (mark it with json.object to encode an object) at $.list')
  ok, msg, code = json.encode(json.object { [5] = { v = 0 / 0 } })
  fails(t, ok, msg, code, 'json: cannot encode NaN at $["5"].v')
  fails(t, json.encode(coroutine.create(print)))
  local shared = { 1 }
  t:eq(json.encode({ shared, shared }), "[[1],[1]]", "a shared table is not a cycle")
end)

test("an encode inside a finalizer run during an encode leaves both intact", function(t)
  -- The encoder's state is kept per Lua state and reused; a collection
  -- step during an encode (its output grows) may run finalizers, and one
  -- that encodes must not write into the state of the encode under way.
  local inner = {}
  local big = {}
  for i = 1, 3000 do big[i] = { id = ("00u%06d"):format(i), groups = { "a", "b" } } end
  local want = json.encode(big)
  local saved = collectgarbage("incremental", 10, 400)
  for _ = 1, 50 do
    for _ = 1, 200 do
      setmetatable({}, { __gc = function() inner[#inner + 1] = json.encode({ k = { 1, 2, 3 } }) end })
    end
    local got, err = json.encode(big)
    if got ~= want then t:eq(got and #got or err, #want, "the outer encode"); break end
  end
  collectgarbage("collect")
  collectgarbage(saved == "generational" and "generational" or "incremental")
  t:ok(#inner > 0, "finalizers ran")
  for _, s in ipairs(inner) do
    if s ~= '{"k":[1,2,3]}' then t:eq(s, '{"k":[1,2,3]}'); break end
  end
end)

test("nesting limit", function(t)
  local deep = string.rep("[", 1000) .. string.rep("]", 1000)
  t:eq(json.encode(assert(json.decode(deep))), deep)
  local ok, msg, code = json.decode("[" .. deep .. "]")
  fails(t, ok, msg, code, "json: nesting deeper than 1000 at offset 1000")
  ok, msg, code = json.decode(string.rep('{"a":', 5000) .. "1" .. string.rep("}", 5000))
  fails(t, ok, msg, code)
  local v = {}
  for _ = 1, 1001 do v = { v } end
  ok, msg, code = json.encode(v)
  fails(t, ok, msg, code); t:contains(msg, "nesting deeper than 1000")
end)

test("invalid JSON returns nil, message with offset, EJSON", function(t)
  local cases = {
    { "", "json: unexpected end of input at offset 0" },
    { "   ", "json: unexpected end of input at offset 3" },
    { "[1, 2", "json: unexpected end of input at offset 5" },
    { "[1 2]", "json: unexpected character '2' at offset 3" },
    { "[1,]", "json: unexpected character ']' at offset 3" },
    { "01", "json: unexpected character '1' at offset 1" },
    { "1.", "json: unexpected end of input at offset 2" },
    { "-", "json: unexpected end of input at offset 1" },
    { ".5", "json: unexpected character '.' at offset 0" },
    { "1e", "json: unexpected end of input at offset 2" },
    { "NaN", "json: unexpected character 'N' at offset 0" },
    { "tru", "json: unexpected character 't' at offset 0" },
    { "{'a':1}", "json: unexpected character ''' at offset 1" },
    { '{"a" 1}', "json: unexpected character '1' at offset 5" },
    { '{"a":1} x', "json: unexpected character 'x' at offset 8" },
    { '{1:2}', "json: unexpected character '1' at offset 1" },
    { '"abc', "json: unterminated string at offset 4" },
    { '"a\tb"', "json: control character in string at offset 2" },
    { '"\\x"', "json: invalid escape at offset 1" },
    { '"\\u12g4"', "json: invalid \\u escape at offset 1" },
    { '"\\ud800"', "json: lone high surrogate at offset 1" },
    { '"\\ud800\\u0041"', "json: lone high surrogate at offset 1" },
    { '"\\udc00"', "json: lone low surrogate at offset 1" },
    { '"caf\xe9"', "json: invalid UTF-8 in string at offset 4" },
    { '"\xed\xa0\x80"', "json: invalid UTF-8 in string at offset 1" },
    { "\xef\xbb\xbf{}", "json: unexpected byte 0xEF at offset 0" },
    { "[1] // c", "json: unexpected character '/' at offset 4" },
  }
  for _, c in ipairs(cases) do
    local ok, msg, code = json.decode(c[1])
    t:eq(ok, nil, c[1]); t:eq(msg, c[2], c[1]); t:eq(code, "EJSON", c[1])
  end
  t:raises(function() json.decode(nil) end, "bad argument")
end)

test("strings: escapes, unicode, duplicates", function(t)
  t:eq(json.decode('"\\u00e9\\ud83d\\ude00\\n\\/\\u0000x"'), "é😀\n/\0x")
  t:eq(json.decode('"plain ünïcode"'), "plain ünïcode")
  t:eq(json.decode('{"a":1,"a":2}').a, 2)
  t:eq(json.decode(' \n\t{ "k" : [ true , false ] } \r\n').k[2], false)
  local s = string.rep("x\\\"", 1000)
  t:eq(#json.decode('"' .. s .. '"'), 2000)
end)

test("round trip of an Okta-like user list", function(t)
  local src = [=[[{"id":"00u1","status":"ACTIVE","created":"2025-03-13T23:26:50.000Z","profile":{"login":"a@example.com","employeeNumber":42,"costCenter":12.5,"nick":null},"groupIds":[]}]]=]
  local v = assert(json.decode(src))
  t:eq(v[1].profile.employeeNumber, 42); t:eq(math.type(v[1].profile.employeeNumber), "integer")
  t:eq(json.encode(v, { sort_keys = true }),
    [=[[{"created":"2025-03-13T23:26:50.000Z","groupIds":[],"id":"00u1","profile":{"costCenter":12.5,"employeeNumber":42,"login":"a@example.com","nick":null},"status":"ACTIVE"}]]=])
end)

return test.done()
