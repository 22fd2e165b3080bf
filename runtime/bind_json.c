/*
** bind_json.c: `require "usersync.json"`, strict JSON (RFC 8259) for scripts.
**
**   local json = require "usersync.json"
**   local v = assert(json.decode('{"id":"00u1","n":10,"f":1e3,"groups":[],"mgr":null}'))
**   -- math.type(v.n) == "integer", math.type(v.f) == "float", v.mgr == json.null,
**   -- json.is_array(v.groups) == true
**   v.tags = json.array {}                      -- encodes as [] even when empty
**   print(json.encode({ ok = true, tags = v.tags }, { sort_keys = true }))
**     --> {"ok":true,"tags":[]}
**   print(json.decode('{"a":1,}'))  --> nil  json: unexpected character '}' at offset 7  EJSON
**
** The decoder and encoder are our own; json.null is a light userdata NULL
** (the store binds it as SQL NULL). lua-cjson is not linked: it turns every
** number into a float and cannot tell [] from {} (README, "Scripts").
**
** json.decode(s) -> value | nil, msg, "EJSON"
**   - Numbers: a number written without '.', 'e' or 'E' that fits in a 64-bit
**     integer becomes a Lua integer (2^53+1 stays exact); every other number is
**     a float (1e3 -> 1000.0, 1.0 -> 1.0). "-0" is the float -0.0 (keeps the
**     sign an integer cannot).
**   - Arrays get the metatable json.array_mt, objects json.object_mt, so a
**     decode/encode round trip keeps [] and {} apart.
**   - null -> json.null. Duplicate object keys: the last one wins.
**   - Strict: no trailing commas, comments, single quotes, leading zeros, NaN,
**     trailing garbage; strings must be valid UTF-8 with no raw control
**     characters; \u escapes become UTF-8, surrogate pairs are combined and a
**     lone surrogate (\ud800 without its pair, or a lone \udc00) is an error.
**   - Nesting deeper than JSON_MAX_DEPTH (1000) arrays/objects is an error.
**   - Error messages give the 0-based byte offset:
**     "json: unexpected character 'x' at offset 17".
** json.encode(v [, opts]) -> string | nil, msg, "EJSON"
**   opts.indent (integer, or true for 2): pretty-print; opts.sort_keys: object
**   keys in byte order (stable output for plans and diffs).
**   - A table marked with json.array encodes as an array of t[1..#t]; one
**     marked with json.object as an object. An unmarked table with only
**     positive integer keys is an array (holes become null when at most half
**     the slots are holes, else an error); an empty unmarked table is {}; any
**     other table is an object. Object keys must be strings or numbers
**     (numbers are written as strings).
**   - Integers are written as integers, floats so that they read back as the
**     same float (shortest of %.15g/%.16g/%.17g that round-trips, with ".0"
**     added to whole numbers). NaN and infinities are errors.
**   - Errors (cycles, NaN/inf, functions, invalid UTF-8 in strings, nesting
**     beyond 1000) name the place: "json: cycle at $.users[2].manager".
** json.array([t]) -> t        marks t (or a new table) as an array
** json.object([t]) -> t       marks t (or a new table) as an object
**   Both raise if t already has another metatable.
** json.is_array(t), json.is_object(t) -> boolean (is it marked?)
** json.null, json.array_mt, json.object_mt
** json.pick(s, path, ...) -> v1, v2, ... | nil, msg, "EJSON"
**   Validates the document s once and decodes only the values at the given
**   paths (object keys separated by '.', array indexes as [N], as in
**   jsonscan.h: "outcome.result", "target[0].id"); an absent path gives nil.
**   For large documents of which a few fields matter (Okta events: `usersync
**   serve` reads eventType, outcome, actor and target of each one).
*/
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "usersync/jsonscan.h"
#include "usersync/modules.h"

#define JSON_MAX_DEPTH 1000
#define ARRAY_MT "usersync.json.array"
#define OBJECT_MT "usersync.json.object"

/* ---------------------------------------------------------------- UTF-8 */

/* Length of the valid UTF-8 sequence at p (p < end, *p >= 0x80), or 0. */
static int utf8_len(const unsigned char *p, const unsigned char *end) {
  unsigned c = p[0];
  size_t left = (size_t)(end - p);
  if (c >= 0xC2 && c <= 0xDF)
    return left >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
      return 0;
    if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F))
      return 0; /* overlong, or a UTF-16 surrogate */
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
      return 0;
    if ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] > 0x8F))
      return 0;
    return 4;
  }
  return 0;
}

/* Writes code point cp as UTF-8 into out; returns the length. */
static int utf8_put(char *out, unsigned long cp) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | (cp >> 18));
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* -------------------------------------------------------------- decoder */

/* Decoder state. Values are built on the Lua stack; amt/omt are the stack
** indices of the two mark metatables. On error err holds the message and
** every function returns -1; the caller resets the stack. */
typedef struct {
  lua_State *L;
  const char *s, *p, *end;
  int depth, amt, omt;
  char err[160];
} jdec;

static int dec_fail_at(jdec *d, const char *at, const char *what) {
  snprintf(d->err, sizeof d->err, "json: %s at offset %zu", what, (size_t)(at - d->s));
  return -1;
}

/* "unexpected character 'x'" or "unexpected end of input" at d->p. */
static int dec_unexpected(jdec *d) {
  char what[64];
  unsigned char c = d->p < d->end ? (unsigned char)*d->p : 0;
  if (d->p >= d->end)
    snprintf(what, sizeof what, "unexpected end of input");
  else if (c >= 0x20 && c < 0x7F)
    snprintf(what, sizeof what, "unexpected character '%c'", c);
  else
    snprintf(what, sizeof what, "unexpected byte 0x%02X", c);
  return dec_fail_at(d, d->p, what);
}

static void skip_ws(jdec *d) {
  const char *p = d->p;
  while (p < d->end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
    p++;
  d->p = p;
}

static int dec_value(jdec *d);

/* Reads 4 hex digits at p into *v; 0 on success. */
static int hex4(const char *p, const char *end, unsigned long *v) {
  if (end - p < 4)
    return -1;
  unsigned long x = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    x <<= 4;
    if (c >= '0' && c <= '9') x |= (unsigned long)(c - '0');
    else if (c >= 'a' && c <= 'f') x |= (unsigned long)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') x |= (unsigned long)(c - 'A' + 10);
    else return -1;
  }
  *v = x;
  return 0;
}

/* One escape sequence at d->p (d->p at the backslash) into b. */
static int dec_escape(jdec *d, luaL_Buffer *b) {
  const char *at = d->p;
  if (d->p + 1 >= d->end) {
    d->p = d->end;
    return dec_unexpected(d);
  }
  char c = d->p[1];
  d->p += 2;
  switch (c) {
  case '"': luaL_addchar(b, '"'); return 0;
  case '\\': luaL_addchar(b, '\\'); return 0;
  case '/': luaL_addchar(b, '/'); return 0;
  case 'b': luaL_addchar(b, '\b'); return 0;
  case 'f': luaL_addchar(b, '\f'); return 0;
  case 'n': luaL_addchar(b, '\n'); return 0;
  case 'r': luaL_addchar(b, '\r'); return 0;
  case 't': luaL_addchar(b, '\t'); return 0;
  case 'u': break;
  default: return dec_fail_at(d, at, "invalid escape");
  }
  unsigned long cp, lo;
  if (hex4(d->p, d->end, &cp))
    return dec_fail_at(d, at, "invalid \\u escape");
  d->p += 4;
  if (cp >= 0xDC00 && cp <= 0xDFFF)
    return dec_fail_at(d, at, "lone low surrogate");
  if (cp >= 0xD800 && cp <= 0xDBFF) {
    if (d->end - d->p < 6 || d->p[0] != '\\' || d->p[1] != 'u' || hex4(d->p + 2, d->end, &lo) ||
        lo < 0xDC00 || lo > 0xDFFF)
      return dec_fail_at(d, at, "lone high surrogate");
    d->p += 6;
    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
  }
  char u[4];
  luaL_addlstring(b, u, (size_t)utf8_put(u, cp));
  return 0;
}

/* Scans plain string bytes from p: stops at '"', '\\', a control character,
** invalid UTF-8 or the end. */
static const char *scan_plain(const char *p, const char *end) {
  const unsigned char *q = (const unsigned char *)p, *e = (const unsigned char *)end;
  while (q < e) {
    unsigned c = *q;
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      q++;
    } else if (c >= 0x80) {
      int k = utf8_len(q, e);
      if (k == 0)
        break;
      q += k;
    } else {
      break;
    }
  }
  return (const char *)q;
}

/* Why scan_plain stopped at p if not at a quote or backslash. */
static int dec_bad_string_byte(jdec *d) {
  if (d->p >= d->end)
    return dec_fail_at(d, d->p, "unterminated string");
  if ((unsigned char)*d->p < 0x20)
    return dec_fail_at(d, d->p, "control character in string");
  return dec_fail_at(d, d->p, "invalid UTF-8 in string");
}

/* String at d->p (the opening quote): [-0, +1] on success. */
static int dec_string(jdec *d) {
  const char *start = ++d->p;
  d->p = scan_plain(d->p, d->end);
  if (d->p < d->end && *d->p == '"') { /* fast path: no escapes */
    lua_pushlstring(d->L, start, (size_t)(d->p - start));
    d->p++;
    return 0;
  }
  luaL_Buffer b;
  luaL_buffinit(d->L, &b);
  luaL_addlstring(&b, start, (size_t)(d->p - start));
  for (;;) {
    if (d->p < d->end && *d->p == '"')
      break;
    if (d->p < d->end && *d->p == '\\') {
      if (dec_escape(d, &b))
        return -1;
    } else {
      return dec_bad_string_byte(d);
    }
    const char *run = d->p;
    d->p = scan_plain(d->p, d->end);
    luaL_addlstring(&b, run, (size_t)(d->p - run));
  }
  d->p++;
  luaL_pushresult(&b);
  return 0;
}

/* Number at d->p: [-0, +1]. Grammar of RFC 8259 section 6. */
static int dec_number(jdec *d) {
  const char *start = d->p, *p = d->p, *end = d->end;
  int neg = 0, isint = 1;
  if (*p == '-') {
    neg = 1;
    p++;
  }
  if (p < end && *p == '0') {
    p++;
  } else if (p < end && *p >= '1' && *p <= '9') {
    while (p < end && *p >= '0' && *p <= '9')
      p++;
  } else {
    d->p = p;
    return dec_unexpected(d);
  }
  if (p < end && *p == '.') {
    isint = 0;
    if (++p >= end || *p < '0' || *p > '9') {
      d->p = p;
      return dec_unexpected(d);
    }
    while (p < end && *p >= '0' && *p <= '9')
      p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    isint = 0;
    p++;
    if (p < end && (*p == '+' || *p == '-'))
      p++;
    if (p >= end || *p < '0' || *p > '9') {
      d->p = p;
      return dec_unexpected(d);
    }
    while (p < end && *p >= '0' && *p <= '9')
      p++;
  }
  d->p = p;
  if (isint) {
    uint64_t m = 0;
    int overflow = 0;
    for (const char *q = start + neg; q < p; q++) {
      unsigned dig = (unsigned)(*q - '0');
      if (m > (UINT64_MAX - dig) / 10) {
        overflow = 1;
        break;
      }
      m = m * 10 + dig;
    }
    if (!overflow && neg && m == 0) {
      lua_pushnumber(d->L, -0.0);
      return 0;
    }
    if (!overflow && (neg ? m <= (uint64_t)INT64_MAX + 1 : m <= (uint64_t)INT64_MAX)) {
      lua_pushinteger(d->L, neg ? (lua_Integer)(0 - m) : (lua_Integer)m);
      return 0;
    }
  }
  /* The input is a Lua string, so NUL-terminated: strtod stops at p. */
  char *e;
  double v = strtod(start, &e);
  if (e != p) { /* a locale whose decimal point is not '.' */
    char tmp[512];
    size_t n = (size_t)(p - start);
    if (n >= sizeof tmp)
      return dec_fail_at(d, start, "number too long");
    memcpy(tmp, start, n);
    tmp[n] = '\0';
    char *dot = strchr(tmp, '.');
    if (dot)
      *dot = localeconv()->decimal_point[0];
    v = strtod(tmp, NULL);
  }
  lua_pushnumber(d->L, v);
  return 0;
}

static int dec_enter(jdec *d) {
  if (++d->depth > JSON_MAX_DEPTH)
    return dec_fail_at(d, d->p, "nesting deeper than 1000");
  luaL_checkstack(d->L, 4, "json nesting");
  d->p++;
  lua_newtable(d->L);
  skip_ws(d);
  return 0;
}

/* Array at d->p ('['): [-0, +1]. */
static int dec_array(jdec *d) {
  if (dec_enter(d))
    return -1;
  lua_Integer n = 0;
  if (d->p < d->end && *d->p == ']') {
    d->p++;
  } else {
    for (;;) {
      if (dec_value(d))
        return -1;
      lua_rawseti(d->L, -2, ++n);
      skip_ws(d);
      if (d->p < d->end && *d->p == ',') {
        d->p++;
      } else if (d->p < d->end && *d->p == ']') {
        d->p++;
        break;
      } else {
        return dec_unexpected(d);
      }
    }
  }
  lua_pushvalue(d->L, d->amt);
  lua_setmetatable(d->L, -2);
  d->depth--;
  return 0;
}

/* Object at d->p ('{'): [-0, +1]. */
static int dec_object(jdec *d) {
  if (dec_enter(d))
    return -1;
  if (d->p < d->end && *d->p == '}') {
    d->p++;
  } else {
    for (;;) {
      skip_ws(d);
      if (d->p >= d->end || *d->p != '"')
        return dec_unexpected(d);
      if (dec_string(d))
        return -1;
      skip_ws(d);
      if (d->p >= d->end || *d->p != ':')
        return dec_unexpected(d);
      d->p++;
      if (dec_value(d))
        return -1;
      lua_rawset(d->L, -3);
      skip_ws(d);
      if (d->p < d->end && *d->p == ',') {
        d->p++;
      } else if (d->p < d->end && *d->p == '}') {
        d->p++;
        break;
      } else {
        return dec_unexpected(d);
      }
    }
  }
  lua_pushvalue(d->L, d->omt);
  lua_setmetatable(d->L, -2);
  d->depth--;
  return 0;
}

/* A literal word (true/false/null) at d->p. */
static int dec_word(jdec *d, const char *w, size_t n) {
  if ((size_t)(d->end - d->p) < n || memcmp(d->p, w, n) != 0)
    return dec_unexpected(d);
  d->p += n;
  return 0;
}

/* Any value after optional whitespace: [-0, +1]. */
static int dec_value(jdec *d) {
  skip_ws(d);
  if (d->p >= d->end)
    return dec_unexpected(d);
  switch (*d->p) {
  case '{': return dec_object(d);
  case '[': return dec_array(d);
  case '"': return dec_string(d);
  case 't':
    if (dec_word(d, "true", 4)) return -1;
    lua_pushboolean(d->L, 1);
    return 0;
  case 'f':
    if (dec_word(d, "false", 5)) return -1;
    lua_pushboolean(d->L, 0);
    return 0;
  case 'n':
    if (dec_word(d, "null", 4)) return -1;
    lua_pushlightuserdata(d->L, NULL);
    return 0;
  default:
    if (*d->p == '-' || (*d->p >= '0' && *d->p <= '9'))
      return dec_number(d);
    return dec_unexpected(d);
  }
}

/* json.decode(s) -> value | nil, msg, "EJSON" */
static int json_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_settop(L, 1);
  jdec d = {L, s, s, s + len, 0, 2, 3, ""};
  luaL_getmetatable(L, ARRAY_MT);
  luaL_getmetatable(L, OBJECT_MT);
  if (dec_value(&d) == 0) {
    skip_ws(&d);
    if (d.p == d.end)
      return 1;
    dec_unexpected(&d);
  }
  lua_settop(L, 1);
  luaL_pushfail(L);
  lua_pushstring(L, d.err);
  lua_pushliteral(L, "EJSON");
  return 3;
}

/* us_json_push_decoded (modules.h): the decoder for other bindings. */
int us_json_push_decoded(lua_State *L, const char *s, size_t len) {
  luaL_checkstack(L, 8, "json decode");
  int base = lua_gettop(L);
  /* the marks exist even when usersync.json was never required */
  if (luaL_newmetatable(L, ARRAY_MT)) {
    lua_pushliteral(L, "json.array");
    lua_setfield(L, -2, "__name");
  }
  if (luaL_newmetatable(L, OBJECT_MT)) {
    lua_pushliteral(L, "json.object");
    lua_setfield(L, -2, "__name");
  }
  jdec d = {L, s, s, s + len, 0, base + 1, base + 2, ""};
  if (dec_value(&d) == 0) {
    skip_ws(&d);
    if (d.p == d.end) {
      lua_replace(L, base + 1); /* value over the array mark */
      lua_settop(L, base + 1);
      return 1;
    }
    dec_unexpected(&d);
  }
  lua_settop(L, base);
  lua_pushstring(L, d.err);
  lua_setfield(L, LUA_REGISTRYINDEX, "usersync.json.error");
  return 0;
}

/* -------------------------------------------------------------- encoder */

/* Encoder state. The output lives in a full userdata at stack index slot
** (replaced by a bigger one as it grows), so a Lua error anywhere leaks
** nothing. tables[] holds the tables on the current path (cycle check). */
typedef struct {
  lua_State *L;
  char *buf;
  size_t n, cap;
  int slot, amt, omt, depth, indent, sort_keys;
  const void *tables[JSON_MAX_DEPTH + 1];
  char err[160];
  char path[200];
  size_t pathlen;
  int busy; /* an encode is using it (json_encode) */
} jenc;

static const char jenc_key = 'j'; /* registry key (its address) of a state's jenc */

static void enc_reserve(jenc *e, size_t k) {
  if (e->n + k <= e->cap)
    return;
  size_t cap = e->cap * 2;
  if (cap < e->n + k + 64)
    cap = e->n + k + 64;
  char *nb = lua_newuserdatauv(e->L, cap, 0);
  memcpy(nb, e->buf, e->n);
  lua_replace(e->L, e->slot);
  e->buf = nb;
  e->cap = cap;
}

static void put_mem(jenc *e, const char *p, size_t n) {
  enc_reserve(e, n);
  memcpy(e->buf + e->n, p, n);
  e->n += n;
}

static void put_char(jenc *e, char c) {
  enc_reserve(e, 1);
  e->buf[e->n++] = c;
}

static int enc_fail(jenc *e, const char *msg) {
  snprintf(e->err, sizeof e->err, "%s", msg);
  e->pathlen = 0;
  e->path[0] = '\0';
  return -1;
}

/* Prepends seg to the error path (built while the recursion unwinds). */
static void path_prepend(jenc *e, const char *seg) {
  size_t n = strlen(seg);
  if (e->pathlen + n >= sizeof e->path)
    return;
  memmove(e->path + n, e->path, e->pathlen + 1);
  memcpy(e->path, seg, n);
  e->pathlen += n;
}

static void path_key(jenc *e, const char *k, size_t n) {
  char seg[80];
  int ident = n > 0 && n < 60;
  for (size_t i = 0; ident && i < n; i++) {
    char c = k[i];
    ident = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
  }
  if (ident)
    snprintf(seg, sizeof seg, ".%.*s", (int)n, k);
  else
    snprintf(seg, sizeof seg, "[\"%.*s%s\"]", n > 40 ? 40 : (int)n, k, n > 40 ? "..." : "");
  path_prepend(e, seg);
}

/* A string: UTF-8 checked here, escaped by us_json_escape (jsonscan.c). */
static int enc_string(jenc *e, const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  int plain = 1; /* nothing to escape: copied as it is */
  while (p < end) {
    if (*p < 0x80) {
      plain &= *p >= 0x20 && *p != '"' && *p != '\\';
      p++;
      continue;
    }
    int k = utf8_len(p, end);
    if (k == 0)
      return enc_fail(e, "invalid UTF-8 in string");
    p += (size_t)k;
  }
  size_t n = plain ? len : us_json_escape(NULL, s, len);
  enc_reserve(e, n + 2);
  e->buf[e->n++] = '"';
  if (plain)
    memcpy(e->buf + e->n, s, len);
  else
    us_json_escape(e->buf + e->n, s, len);
  e->n += n;
  e->buf[e->n++] = '"';
  return 0;
}

/* Formats a finite double so it reads back as the same value; whole numbers
** get ".0" so they decode as floats again. Returns the length. */
static int format_double(char *out, size_t size, double v) {
  int n = 0;
  for (int prec = 15; prec <= 17; prec++) {
    n = snprintf(out, size, "%.*g", prec, v);
    if (strtod(out, NULL) == v)
      break;
  }
  int plain = 1;
  for (int i = 0; i < n; i++) {
    char c = out[i];
    if (!((c >= '0' && c <= '9') || c == '-' || c == '+' || c == 'e')) {
      out[i] = '.'; /* the locale's decimal point, whatever it is */
      plain = 0;
    } else if (c == 'e') {
      plain = 0;
    }
  }
  if (plain && (size_t)n + 2 < size) {
    memcpy(out + n, ".0", 3);
    n += 2;
  }
  return n;
}

/* Number at stack index idx into the output (as a JSON number). */
static int enc_number(jenc *e, int idx) {
  char tmp[64];
  int n;
  if (lua_isinteger(e->L, idx)) {
    n = snprintf(tmp, sizeof tmp, "%lld", (long long)lua_tointeger(e->L, idx));
  } else {
    double v = lua_tonumber(e->L, idx);
    if (!isfinite(v))
      return enc_fail(e, isnan(v) ? "cannot encode NaN" : "cannot encode an infinite number");
    n = format_double(tmp, sizeof tmp, v);
  }
  put_mem(e, tmp, (size_t)n);
  return 0;
}

static void enc_newline(jenc *e, int depth) {
  if (e->indent <= 0)
    return;
  size_t k = (size_t)e->indent * (size_t)depth;
  enc_reserve(e, k + 1);
  e->buf[e->n++] = '\n';
  memset(e->buf + e->n, ' ', k);
  e->n += k;
}

static int enc_value(jenc *e);

/* Key at stack index -2 (value at -1) of an object: `"key":`. */
static int enc_key(jenc *e) {
  lua_State *L = e->L;
  int t = lua_type(L, -2);
  if (t == LUA_TSTRING) {
    size_t n;
    const char *k = lua_tolstring(L, -2, &n);
    if (enc_string(e, k, n))
      return -1;
  } else if (t == LUA_TNUMBER) {
    put_char(e, '"');
    if (enc_number(e, -2))
      return -1;
    put_char(e, '"');
  } else {
    char msg[80];
    snprintf(msg, sizeof msg, "cannot encode a table key of type %s", lua_typename(L, t));
    return enc_fail(e, msg);
  }
  if (e->indent > 0)
    put_mem(e, ": ", 2);
  else
    put_char(e, ':');
  return 0;
}

/* Records the current object key (at -2) in the error path (a key of a bad
** type is itself the error: the path stops at its object). Callers first
** drop whatever a failed nested call left above key and value. */
static void path_of_key(jenc *e) {
  if (lua_type(e->L, -2) == LUA_TSTRING) {
    size_t n;
    const char *k = lua_tolstring(e->L, -2, &n);
    path_key(e, k, n);
  } else if (lua_type(e->L, -2) == LUA_TNUMBER) {
    char seg[80], num[64];
    if (lua_isinteger(e->L, -2))
      snprintf(num, sizeof num, "%lld", (long long)lua_tointeger(e->L, -2));
    else
      format_double(num, sizeof num, lua_tonumber(e->L, -2));
    snprintf(seg, sizeof seg, "[\"%s\"]", num);
    path_prepend(e, seg);
  }
}

/* Array t[1..len] (t at -1). */
static int enc_array(jenc *e, lua_Integer len) {
  put_char(e, '[');
  for (lua_Integer i = 1; i <= len; i++) {
    if (i > 1)
      put_char(e, ',');
    enc_newline(e, e->depth);
    lua_rawgeti(e->L, -1, i);
    if (enc_value(e)) {
      char seg[32];
      snprintf(seg, sizeof seg, "[%lld]", (long long)i);
      path_prepend(e, seg);
      return -1;
    }
    lua_pop(e->L, 1);
  }
  if (len > 0)
    enc_newline(e, e->depth - 1);
  put_char(e, ']');
  return 0;
}

/* Object (t at -1) in lua_next order. */
static int enc_object(jenc *e) {
  lua_State *L = e->L;
  int first = 1;
  put_char(e, '{');
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (!first)
      put_char(e, ',');
    first = 0;
    enc_newline(e, e->depth);
    int top = lua_gettop(L);
    if (enc_key(e) || enc_value(e)) {
      lua_settop(L, top);
      path_of_key(e);
      return -1;
    }
    lua_pop(L, 1);
  }
  if (!first)
    enc_newline(e, e->depth - 1);
  put_char(e, '}');
  return 0;
}

/* One key of a sorted object: its text and its position in the key list. */
typedef struct {
  const char *s;
  size_t len;
  lua_Integer idx;
} skey;

static int skey_cmp(const void *a, const void *b) {
  const skey *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->s, y->s, n);
  return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Object (t at -1) with keys in byte order. Keys are listed in a Lua table
** (originals) plus their text (strings stay anchored by the list), sorted in
** a userdata array. [-0, +0] */
static int enc_object_sorted(jenc *e) {
  lua_State *L = e->L;
  int t = lua_gettop(L);
  lua_newtable(L); /* t+1: original keys */
  lua_newtable(L); /* t+2: key texts */
  lua_Integer n = 0;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    int kt = lua_type(L, -1);
    if (kt == LUA_TNUMBER) {
      char tmp[64];
      if (lua_isinteger(L, -1)) {
        snprintf(tmp, sizeof tmp, "%lld", (long long)lua_tointeger(L, -1));
      } else {
        double v = lua_tonumber(L, -1);
        if (!isfinite(v))
          return enc_fail(e, "cannot encode a NaN or infinite key");
        format_double(tmp, sizeof tmp, v);
      }
      lua_pushstring(L, tmp);
    } else if (kt == LUA_TSTRING) {
      lua_pushvalue(L, -1);
    } else {
      char msg[80];
      snprintf(msg, sizeof msg, "cannot encode a table key of type %s", lua_typename(L, kt));
      return enc_fail(e, msg);
    }
    lua_rawseti(L, t + 2, ++n);
    lua_pushvalue(L, -1);
    lua_rawseti(L, t + 1, n);
  }
  skey *keys = lua_newuserdatauv(L, sizeof(skey) * (size_t)(n > 0 ? n : 1), 0); /* t+3 */
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, t + 2, i);
    keys[i - 1].s = lua_tolstring(L, -1, &keys[i - 1].len);
    keys[i - 1].idx = i;
    lua_pop(L, 1);
  }
  qsort(keys, (size_t)n, sizeof *keys, skey_cmp);
  put_char(e, '{');
  for (lua_Integer i = 0; i < n; i++) {
    if (i > 0)
      put_char(e, ',');
    enc_newline(e, e->depth);
    lua_rawgeti(L, t + 1, keys[i].idx);
    lua_pushvalue(L, -1);
    lua_rawget(L, t); /* key, value */
    int top = lua_gettop(L);
    if (enc_key(e) || enc_value(e)) {
      lua_settop(L, top);
      path_of_key(e);
      return -1;
    }
    lua_pop(L, 2);
  }
  if (n > 0)
    enc_newline(e, e->depth - 1);
  put_char(e, '}');
  lua_settop(L, t);
  return 0;
}

/* Kind of an unmarked table (at -1): 1 array (*len set), 0 object, -1 error. */
static int table_kind(jenc *e, lua_Integer *len) {
  lua_State *L = e->L;
  lua_Integer count = 0, max = 0;
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
      lua_pop(L, 1);
      return 0;
    }
    count++;
    if (lua_tointeger(L, -1) > max)
      max = lua_tointeger(L, -1);
  }
  if (count == 0)
    return 0;
  if (max > count * 2)
    return enc_fail(e, "excessively sparse array (mark it with json.object to encode an object)");
  *len = max;
  return 1;
}

/* Table at -1. */
static int enc_table(jenc *e) {
  lua_State *L = e->L;
  const void *self = lua_topointer(L, -1);
  if (e->depth >= JSON_MAX_DEPTH)
    return enc_fail(e, "nesting deeper than 1000");
  for (int i = 0; i < e->depth; i++)
    if (e->tables[i] == self)
      return enc_fail(e, "cycle");
  luaL_checkstack(L, 8, "json nesting");
  e->tables[e->depth++] = self;
  int kind = -2; /* unmarked */
  lua_Integer len = 0;
  if (lua_getmetatable(L, -1)) {
    if (lua_rawequal(L, -1, e->amt))
      kind = 1;
    else if (lua_rawequal(L, -1, e->omt))
      kind = 0;
    lua_pop(L, 1);
  }
  if (kind == 1)
    len = (lua_Integer)lua_rawlen(L, -1);
  else if (kind == -2 && (kind = table_kind(e, &len)) < 0)
    return -1;
  int rc = kind == 1 ? enc_array(e, len) : e->sort_keys ? enc_object_sorted(e) : enc_object(e);
  e->depth--;
  return rc;
}

/* Value at -1 into the output. [-0, +0] */
static int enc_value(jenc *e) {
  lua_State *L = e->L;
  switch (lua_type(L, -1)) {
  case LUA_TNIL: put_mem(e, "null", 4); return 0;
  case LUA_TBOOLEAN:
    if (lua_toboolean(L, -1)) put_mem(e, "true", 4);
    else put_mem(e, "false", 5);
    return 0;
  case LUA_TNUMBER: return enc_number(e, -1);
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    return enc_string(e, s, n);
  }
  case LUA_TTABLE: return enc_table(e);
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, -1) == NULL) {
      put_mem(e, "null", 4);
      return 0;
    }
    /* fall through */
  default: {
    char msg[80];
    snprintf(msg, sizeof msg, "cannot encode a %s", luaL_typename(L, -1));
    return enc_fail(e, msg);
  }
  }
}

/* json.encode(v [, opts]) -> string | nil, msg, "EJSON" */
static int json_encode(lua_State *L) {
  luaL_checkany(L, 1);
  int indent = 0, sort_keys = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "indent");
    if (lua_isboolean(L, -1))
      indent = lua_toboolean(L, -1) ? 2 : 0;
    else if (!lua_isnil(L, -1))
      indent = (int)luaL_checkinteger(L, -1);
    luaL_argcheck(L, indent >= 0 && indent <= 16, 2, "indent must be 0..16");
    lua_getfield(L, 2, "sort_keys");
    sort_keys = lua_toboolean(L, -1);
  }
  lua_settop(L, 1);
  /* Too big for the C stack with tables[] (8 KB): one per Lua state, kept
  ** in the registry and reused (an 8 KB allocation and clearing per call
  ** cost more than encoding a small object). An encode never calls Lua,
  ** but a collection step it triggers may run a finalizer that encodes:
  ** while one is in use (busy) such a nested call gets a fresh one. Always
  ** at index 2. */
  jenc *e = NULL;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &jenc_key) == LUA_TUSERDATA) {
    e = lua_touserdata(L, -1);
    if (e->busy)
      e = NULL;
  }
  if (!e) {
    lua_pop(L, 1);
    e = lua_newuserdatauv(L, sizeof *e, 0);
    e->busy = 0;
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &jenc_key) == LUA_TNIL) { /* the first: kept */
      lua_pushvalue(L, -2);
      lua_rawsetp(L, LUA_REGISTRYINDEX, &jenc_key);
    }
    lua_pop(L, 1);
  }
  /* busy from here: the allocations below may run finalizers (a
  ** collection step). A Lua error inside leaves it busy: the next calls
  ** get a fresh one. */
  e->busy = 1;
  /* every field but tables[] (written at a depth before it is read) */
  e->L = L;
  e->buf = NULL;
  e->n = 0;
  e->depth = 0;
  e->err[0] = '\0';
  e->path[0] = '\0';
  e->pathlen = 0;
  e->indent = indent;
  e->sort_keys = sort_keys;
  e->cap = 256;
  e->buf = lua_newuserdatauv(L, e->cap, 0); /* 3: output */
  e->slot = 3;
  luaL_getmetatable(L, ARRAY_MT);  /* 4 */
  luaL_getmetatable(L, OBJECT_MT); /* 5 */
  e->amt = 4;
  e->omt = 5;
  lua_pushvalue(L, 1);
  if (enc_value(e)) {
    luaL_pushfail(L);
    if (e->pathlen)
      lua_pushfstring(L, "json: %s at $%s", e->err, e->path);
    else
      lua_pushfstring(L, "json: %s", e->err);
    lua_pushliteral(L, "EJSON");
    e->busy = 0; /* (after the pushes: they allocate too) */
    return 3;
  }
  lua_pushlstring(L, e->buf, e->n);
  e->busy = 0;
  return 1;
}

/* ---------------------------------------------------------------- marks */

/* Sets metatable `mt` (registry name) on the table at arg 1 (a new table
** when absent). Raises if it already has a different metatable. */
static int json_mark(lua_State *L, const char *mt, const char *fname) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  luaL_getmetatable(L, mt);
  if (lua_getmetatable(L, 1)) {
    luaL_getmetatable(L, ARRAY_MT);
    luaL_getmetatable(L, OBJECT_MT);
    if (!lua_rawequal(L, -3, -2) && !lua_rawequal(L, -3, -1))
      return luaL_error(L, "json.%s: the table already has a metatable", fname);
    lua_pop(L, 3);
  }
  lua_setmetatable(L, 1);
  return 1;
}

static int json_array(lua_State *L) { return json_mark(L, ARRAY_MT, "array"); }
static int json_object(lua_State *L) { return json_mark(L, OBJECT_MT, "object"); }

static int has_mark(lua_State *L, const char *mt) {
  if (lua_type(L, 1) != LUA_TTABLE || !lua_getmetatable(L, 1))
    return 0;
  luaL_getmetatable(L, mt);
  return lua_rawequal(L, -1, -2);
}

static int json_is_array(lua_State *L) {
  lua_pushboolean(L, has_mark(L, ARRAY_MT));
  return 1;
}

static int json_is_object(lua_State *L) {
  lua_pushboolean(L, has_mark(L, OBJECT_MT));
  return 1;
}

/* json.pick(s, path, ...): see the header. */
static int json_pick(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  int n = lua_gettop(L) - 1;
  for (int i = 2; i <= n + 1; i++)
    luaL_checkstring(L, i);
  struct us_jval root, v;
  if (!us_json_parse(s, len, &root)) {
    luaL_pushfail(L);
    lua_pushliteral(L, "json: not a valid JSON document");
    lua_pushliteral(L, "EJSON");
    return 3;
  }
  luaL_checkstack(L, n, "json.pick");
  for (int i = 2; i <= n + 1; i++) {
    if (!us_json_get(&root, lua_tostring(L, i), &v)) {
      lua_pushnil(L);
    } else if (!us_json_push_decoded(L, v.start, v.len)) {
      lua_pushnil(L); /* (the scanner accepted what the decoder refused) */
    }
  }
  return n;
}

static const luaL_Reg json_funcs[] = {
    {"pick", json_pick},
    {"decode", json_decode},       {"encode", json_encode},       {"array", json_array},
    {"object", json_object},       {"is_array", json_is_array},   {"is_object", json_is_object},
    {NULL, NULL},
};

int luaopen_usersync_json(lua_State *L) {
  luaL_newlib(L, json_funcs);
  luaL_newmetatable(L, ARRAY_MT);
  lua_pushliteral(L, "json.array");
  lua_setfield(L, -2, "__name");
  lua_setfield(L, -2, "array_mt");
  luaL_newmetatable(L, OBJECT_MT);
  lua_pushliteral(L, "json.object");
  lua_setfield(L, -2, "__name");
  lua_setfield(L, -2, "object_mt");
  lua_pushlightuserdata(L, NULL); /* json.null */
  lua_setfield(L, -2, "null");
  return 1;
}
