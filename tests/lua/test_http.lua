-- test_http.lua: usersync.http against the local test server (support/httpd.py).
-- Timing assertions use generous bounds; concurrency is asserted through the
-- server's own count of simultaneous requests.
local test = require "tap"
local http = require "usersync.http"
local httpd = require "support.httpd"
local json = require "usersync.json"

local srv <close> = httpd.start()
local U = srv.url

test("GET returns status, lowercase headers, body, time and url", function(t)
  local c <close> = http.client{}
  local r, err, code = c:request{ url = U .. "/echo?x=1", headers = { ["X-Test"] = "yes" } }
  t:ok(r, err)
  t:eq(r.status, 200)
  t:eq(r.headers["content-type"], "application/json")
  t:eq(r.retries, 0)
  t:eq(r.gave_up, false)
  t:eq(r.url, U .. "/echo?x=1")
  t:ok(r.time >= 0 and r.time < 10, "time in seconds")
  local e = json.decode(r.body)
  t:eq(e.method, "GET")
  t:eq(e.query, "x=1")
  local seen = {}
  for _, h in ipairs(e.headers) do seen[h[1]:lower()] = h[2] end
  t:eq(seen["x-test"], "yes")
  t:match(seen["user-agent"], "^usersync/%d")
  t:eq(code, nil)
end)

test("methods and bodies are sent as given", function(t)
  local c <close> = http.client{}
  for _, m in ipairs{ "POST", "PUT", "PATCH", "DELETE" } do
    local r = assert(c:request{ method = m, url = U .. "/echo", body = '{"a":1}',
                                headers = { ["Content-Type"] = "application/json" } })
    local e = json.decode(r.body)
    t:eq(e.method, m)
    t:eq(e.body, '{"a":1}')
  end
  local e = json.decode(assert(c:request{ method = "post", url = U .. "/echo" }).body)
  t:eq(e.method, "POST", "method is upper-cased")
  local r = assert(c:request{ method = "HEAD", url = U .. "/echo" })
  t:eq(r.status, 200)
  t:eq(r.body, "")
  -- a body without Content-Type gets none (curl would add a form type)
  e = json.decode(assert(c:request{ method = "POST", url = U .. "/echo", body = "raw\0bytes" }).body)
  t:eq(e.body, "raw\0bytes", "binary-safe body")
  for _, h in ipairs(e.headers) do t:ok(h[1]:lower() ~= "content-type", "no content-type invented") end
end)

test("client default headers, overridden per request", function(t)
  local c <close> = http.client{ headers = { Accept = "application/json", ["X-A"] = "client" },
                                 user_agent = "custom-agent/1" }
  local e = json.decode(assert(c:request{ url = U .. "/echo", headers = { ["x-a"] = "request" } }).body)
  local seen = {}
  for _, h in ipairs(e.headers) do seen[h[1]:lower()] = (seen[h[1]:lower()] or 0) + 1; seen[h[1]:lower() .. "="] = h[2] end
  t:eq(seen["accept="], "application/json")
  t:eq(seen["x-a="], "request")
  t:eq(seen["x-a"], 1, "sent once")
  t:eq(seen["user-agent="], "custom-agent/1")
end)

test("HTTP error statuses are responses, not failures; a 4xx is not retried", function(t)
  local c <close> = http.client{ backoff = 0.01 }
  local r = assert(c:request{ url = U .. "/status/404" })
  t:eq(r.status, 404)
  t:eq(r.body, "status 404")
  t:eq(r.retries, 0)
  r = assert(c:request{ url = U .. "/status/400" })
  t:eq(r.status, 400)
  t:eq(r.retries, 0)
end)

test("a GET is retried on 500, 502, 503 and 504 with backoff, then succeeds", function(t)
  local c <close> = http.client{ backoff = 0.01, backoff_max = 0.05 }
  for _, st in ipairs{ 500, 502, 503, 504 } do
    for _, m in ipairs{ "GET", "PUT", "DELETE" } do
      local key = ("g%d%s"):format(st, m)
      local r = assert(c:request{ method = m, url = U .. "/flaky?key=" .. key .. "&fails=2&status=" .. st })
      t:eq(r.status, 200, key)
      t:eq(r.retries, 2, key)
      t:eq(json.decode(r.body).attempts, 3, key .. ": the server saw 3 attempts")
    end
  end
  -- a 500 that does not go away: the last answer after the retries, gave_up set
  local r = assert(c:request{ url = U .. "/status/500", retries = 2 })
  t:eq(r.status, 500)
  t:eq(r.retries, 2)
  t:eq(r.gave_up, true)
end)

test("repeated headers are all kept, in order", function(t)
  local r = assert(http.request{ url = U .. "/links" })
  local links = http.header_values(r, "Link")
  t:eq(#links, 2)
  t:match(links[1], 'rel="self"')
  t:match(links[2], 'rel="next"')
  t:eq(r.headers.link, links[2], "headers[name] is the last one")
  local n = 0
  for _, h in ipairs(r.header_list) do if h[1] == "link" then n = n + 1 end end
  t:eq(n, 2)
  t:eq(http.link(r, "next"), U .. "/links?limit=2&after=abc")
  t:eq(http.link(r, "self"), U .. "/links?limit=2")
  t:eq(http.link(r, "prev"), nil)
  -- comma-joined form
  t:eq(http.link({ header_list = { { "link", '<a>; rel="self", <b>; rel="next"' } } }, "next"), "b")
end)

test("many requests run concurrently (request_many)", function(t)
  srv:reset()
  local c <close> = http.client{ per_host = 8 }
  local reqs = {}
  for i = 1, 6 do reqs[i] = { url = U .. "/delay?ms=700" } end
  local res = c:request_many(reqs)
  t:eq(#res, 6)
  local slowest = 0
  for i = 1, 6 do
    t:eq(res[i].status, 200, "result " .. i)
    slowest = math.max(slowest, res[i].time)
  end
  t:eq(srv:stats().max_active, 6, "server saw 6 at once")
  t:ok(slowest >= 0.69, "each waited its delay: " .. slowest)
end)

test("per-host concurrency limit queues the rest", function(t)
  srv:reset()
  local c <close> = http.client{ per_host = 2 }
  local reqs = {}
  for i = 1, 6 do reqs[i] = { url = U .. "/delay?ms=300" } end
  local res = c:request_many(reqs)
  local slowest = 0
  for i = 1, 6 do
    t:eq(res[i].status, 200)
    slowest = math.max(slowest, res[i].time)
  end
  t:eq(srv:stats().max_active, 2, "never more than 2 at once")
  t:ok(slowest >= 0.85, "three waves of 0.3 s: " .. slowest)
  local s = c:stats().hosts[U]
  t:eq(s.requests, 6)
  t:eq(s.status[200], 6)
end)

test("a few hundred requests in one batch all complete", function(t)
  local c <close> = http.client{ per_host = 16 }
  local reqs = {}
  for i = 1, 300 do reqs[i] = { url = U .. "/echo?i=" .. i } end
  local res = c:request_many(reqs)
  local ok = 0
  for i = 1, 300 do
    if res[i].status == 200 and json.decode(res[i].body).query == "i=" .. i then ok = ok + 1 end
  end
  t:eq(ok, 300)
  local s = c:stats()
  t:eq(s.totals.requests, 300)
  t:eq(s.totals.active, 0)
  t:eq(s.totals.queued, 0)
end)

test("request_many keeps order and reports failures in place", function(t)
  local c <close> = http.client{ retries = 0 }
  local res = c:request_many{ { url = U .. "/status/201" }, { url = "http://127.0.0.1:1/" },
                              { url = U .. "/status/202" } }
  t:eq(res[1].status, 201)
  t:eq(res[2][1], nil)
  t:eq(res[2][3], "ECONNREFUSED")
  t:eq(res[2].code, "ECONNREFUSED")
  t:match(res[2].error, "127.0.0.1")
  t:eq(res[3].status, 202)
  t:same(c:request_many{}, {})
end)

test("start / run / done / result drive requests step by step", function(t)
  local c <close> = http.client{}
  local hs = {}
  for i = 1, 3 do hs[i] = c:start{ url = U .. "/delay?ms=" .. (100 * i) } end
  t:eq(hs[1]:done(), false)
  t:raises(function() hs[1]:result() end, "still running")
  local spins = 0
  while not (hs[1]:done() and hs[2]:done() and hs[3]:done()) do
    c:run(0.05)
    spins = spins + 1
    assert(spins < 1000, "never finished")
  end
  t:eq(c:run(0), 0)
  for i = 1, 3 do t:eq(hs[i]:result().status, 200) end
  local r = c:wait(hs[1])
  t:eq(r.status, 200, "wait on a finished handle")
  hs[1]:close()
  hs[1]:close() -- idempotent
  t:raises(function() hs[1]:done() end, "closed")
  -- a coroutine scheduler: each coroutine yields until its handle is done
  local results, cos = {}, {}
  for i = 1, 3 do
    cos[i] = coroutine.wrap(function()
      local h = c:start{ url = U .. "/echo?n=" .. i }
      while not h:done() do coroutine.yield() end
      results[i] = json.decode(h:result().body).query
    end)
  end
  local live = 3
  while live > 0 do
    c:run(0.05)
    live = 0
    for i = 1, 3 do if not results[i] then cos[i](); live = live + (results[i] and 0 or 1) end end
  end
  t:same(results, { "n=1", "n=2", "n=3" })
end)

test("429 with Retry-After in seconds is retried after that wait", function(t)
  local c <close> = http.client{ backoff = 0.01 }
  local r = assert(c:request{ url = U .. "/retry?key=ra1&fails=2&after=1" })
  t:eq(r.status, 200)
  t:eq(r.retries, 2)
  t:eq(r.gave_up, false)
  t:ok(r.time >= 1.9, "waited 2 x 1 s: " .. r.time)
  t:eq(srv:stats("ra1").attempts, 3)
  local s = c:stats()
  t:eq(s.totals.retries, 2)
  t:eq(s.hosts[U].status[429], 2)
end)

test("Retry-After as an HTTP date", function(t)
  local c <close> = http.client{ backoff = 0.01 }
  local r = assert(c:request{ url = U .. "/retry?key=ra2&fails=1&after=1&mode=date&status=503" })
  t:eq(r.status, 200)
  t:eq(r.retries, 1)
  t:ok(r.time >= 0.9, "waited until the date: " .. r.time)
end)

test("Okta X-Rate-Limit-Reset against Date, with X-Okta-Retry headers", function(t)
  local c <close> = http.client{ backoff = 0.01 }
  local r = assert(c:request{ url = U .. "/ratelimit?key=rl1&fails=1", retry_headers = "okta" })
  t:eq(r.status, 200)
  t:eq(r.retries, 1)
  t:ok(r.time >= 1.9, "reset - Date + 1 = 2 s: " .. r.time)
  local st = srv:stats("rl1")
  t:eq(st.attempts, 2)
  t:eq(st.requests[1]["x-okta-retry-count"], nil)
  t:eq(st.requests[2]["x-okta-retry-for"], "req-rl1-1")
  t:eq(st.requests[2]["x-okta-retry-count"], "1")
end)

test("503 without Retry-After backs off and succeeds", function(t)
  local c <close> = http.client{ backoff = 0.05, jitter = "decorrelated" }
  local r = assert(c:request{ url = U .. "/flaky?key=f1&fails=2" })
  t:eq(r.status, 200)
  t:eq(r.retries, 2)
  t:eq(c:stats().totals.retries, 2)
  t:eq(json.decode(r.body).attempts, 3)
end)

test("gives up after max retries and returns the last response", function(t)
  local c <close> = http.client{ backoff = 0.01 }
  local r, err = c:request{ url = U .. "/flaky?key=f2&fails=10&status=504", retries = 2 }
  t:ok(r, err)
  t:eq(r.status, 504)
  t:eq(r.retries, 2)
  t:eq(r.gave_up, true)
  t:eq(srv:stats("f2").attempts, 3)
  t:eq(c:stats().totals.gave_up, 1)
end)

test("the wait cap gives up instead of waiting too long", function(t)
  local c <close> = http.client{ backoff = 0.01, max_wait = 1 }
  local r = assert(c:request{ url = U .. "/retry?key=ra3&fails=1&after=5" })
  t:eq(r.status, 429)
  t:eq(r.gave_up, true)
  t:eq(r.retries, 0)
  t:ok(r.time < 2, "did not wait 5 s: " .. r.time)
end)

test("POST and PATCH are never repeated on 5xx (the write may have been applied); 429 and retry_unsafe are", function(t)
  local c <close> = http.client{ backoff = 0.01 }
  for _, m in ipairs{ "POST", "PATCH" } do
    for _, st in ipairs{ 500, 502, 503, 504 } do
      local key = ("p%d%s"):format(st, m)
      local r = assert(c:request{ method = m, url = U .. "/flaky?key=" .. key .. "&fails=1&status=" .. st, body = "x" })
      t:eq(r.status, st, key)
      t:eq(r.retries, 0, key)
      t:eq(r.gave_up, false, key)
      -- the server saw one attempt: the next request with that key is its second
      t:eq(json.decode(assert(c:request{ url = U .. "/flaky?key=" .. key .. "&fails=1" }).body).attempts, 2, key)
    end
  end
  local r = assert(c:request{ method = "POST", url = U .. "/flaky?key=p429&fails=1&status=429", body = "x" })
  t:eq(r.status, 200)
  t:eq(r.retries, 1, "a 429 was turned away before processing: repeated")
  r = assert(c:request{ method = "POST", url = U .. "/flaky?key=p3&fails=1&status=502", body = "x",
                        retry_unsafe = true })
  t:eq(r.status, 200)
  t:eq(r.retries, 1)
end)

test("backoff waits do not block other transfers", function(t)
  srv:reset()
  local c <close> = http.client{ backoff = 0.01 }
  local res = c:request_many{ { url = U .. "/retry?key=nb1&fails=1&after=2" },
                              { url = U .. "/delay?ms=200" }, { url = U .. "/delay?ms=200" } }
  t:eq(res[1].status, 200)
  t:ok(res[2].time < 1.5, "fast request finished during the 2 s wait: " .. res[2].time)
  t:ok(res[1].time >= 1.9)
end)

test("unreachable host: ECONNREFUSED, retried, no secrets in the message", function(t)
  local c <close> = http.client{ backoff = 0.01 }
  local r, err, code = c:request{ url = "http://user:pw123456@127.0.0.1:1/x?token=qs-secret",
                                  headers = { Authorization = "Bearer SECRET-TOKEN-1234" } }
  t:eq(r, nil)
  t:eq(code, "ECONNREFUSED")
  t:match(err, "127%.0%.0%.1")
  t:ok(not err:find("SECRET", 1, true), "no header value in " .. err)
  t:ok(not err:find("qs-secret", 1, true), "no query in " .. err)
  t:ok(not err:find("pw123456", 1, true), "no password in " .. err)
  t:eq(c:stats().hosts["http://127.0.0.1:1"].attempts, 4, "1 + 3 retries")
end)

test("unknown host name: EDNS", function(t)
  local _, err, code = http.request{ url = "http://no-such-host.invalid/", retries = 0, timeout = 5 }
  t:eq(code, "EDNS", err)
end)

test("timeout: ETIMEDOUT", function(t)
  local c <close> = http.client{ retries = 0 }
  local r, err, code = c:request{ url = U .. "/delay?ms=3000", timeout = 0.3 }
  t:eq(r, nil)
  t:eq(code, "ETIMEDOUT", err)
end)

test("oversized body: ETOOBIG, with and without Content-Length", function(t)
  local c <close> = http.client{ retries = 0, max_size = 1000 }
  local r, err, code = c:request{ url = U .. "/big?bytes=100000" }
  t:eq(code, "ETOOBIG", err)
  t:match(err, "larger than 1000 bytes")
  r, err, code = c:request{ url = U .. "/big?bytes=300000&chunked=1" }
  t:eq(code, "ETOOBIG", err)
  r = assert(c:request{ url = U .. "/big?bytes=1000" })
  t:eq(#r.body, 1000, "exactly the cap fits")
  r, err, code = c:request{ url = U .. "/big?bytes=2000", max_size = 1999 }
  t:eq(code, "ETOOBIG", "per-request cap")
  r = assert(c:request{ url = U .. "/big?bytes=200000&chunked=1", max_size = 200000 })
  t:eq(#r.body, 200000)
end)

test("malformed responses: EPROTO; dropped connections: ECONNRESET", function(t)
  local c <close> = http.client{ retries = 0 }
  local _, err, code = c:request{ url = U .. "/garbage" }
  t:eq(code, "EPROTO", err)
  _, err, code = c:request{ url = U .. "/truncated" }
  t:eq(code, "ECONNRESET", err)
  _, err, code = c:request{ url = U .. "/reset" }
  t:eq(code, "ECONNRESET", err)
  _, err, code = c:request{ url = "ftp://127.0.0.1/x" }
  t:eq(code, "EURL", err)
end)

test("slow body arrives whole", function(t)
  local r = assert(http.request{ url = U .. "/slow?chunks=5&ms=50" })
  t:eq(r.body, "0001020304")
end)

test("redirects are not followed unless asked", function(t)
  local c <close> = http.client{}
  local r = assert(c:request{ url = U .. "/redirect?to=/echo" })
  t:eq(r.status, 302)
  t:eq(r.headers.location, "/echo")
  r = assert(c:request{ url = U .. "/redirect?to=/echo", follow_redirects = true })
  t:eq(r.status, 200)
  t:eq(r.url, U .. "/echo")
  t:eq(json.decode(r.body).path, "/echo")
end)

test("cancel ends a running request with ECANCELED", function(t)
  local c <close> = http.client{}
  local h = c:start{ url = U .. "/delay?ms=3000" }
  c:run(0.1)
  h:cancel()
  local r, err, code = c:wait(h)
  t:eq(r, nil)
  t:eq(code, "ECANCELED", err)
  -- closing the client ends what still runs
  local c2 = http.client{}
  local h2 = c2:start{ url = U .. "/delay?ms=3000" }
  c2:run(0.1)
  c2:close()
  c2:close() -- idempotent
  t:raises(function() c2:request{ url = U } end, "closed HTTP client")
  local r2, _, code2 = h2:result()
  t:eq(r2, nil)
  t:eq(code2, "ECANCELED")
end)

test("TLS: verification on by default, ca_file makes it pass", function(t)
  local tls <close> = httpd.start{ tls = true }
  t:match(tls.url, "^https://")
  local c <close> = http.client{ retries = 0 }
  local r, err, code = c:request{ url = tls.url .. "/echo" }
  t:eq(r, nil)
  t:eq(code, "ETLS", err)
  local c2 <close> = http.client{ retries = 0, ca_file = tls.ca_file }
  r, err = c2:request{ url = tls.url .. "/echo" }
  t:ok(r, err)
  t:eq(r and r.status, 200)
  local c3 <close> = http.client{ retries = 0, verify = false }
  r, err = c3:request{ url = tls.url .. "/echo" }
  t:eq(r and r.status, 200, err)
  local c4 <close> = http.client{ retries = 0, ca_file = "/nonexistent/ca.pem" }
  _, err, code = c4:request{ url = tls.url .. "/echo" }
  t:eq(code, "ETLS", err)
end)

test("proxy comes from the environment (http_proxy)", function(t)
  local bin = os.getenv("USERSYNC")
  if not bin then t:ok(false, "USERSYNC not set"); return end
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write([[
    local http = require "usersync.http"
    local r, err = http.request{ url = "http://proxied.invalid/echo?key=px1", retries = 0 }
    io.write(r and r.status or err)
    -- the test server does not implement CONNECT: the tunnel is refused
    local _, _, code = http.request{ url = "https://proxied.invalid/", retries = 0 }
    io.write(" ", tostring(code))
  ]])
  f:close()
  local p = assert(io.popen(("env http_proxy=%s https_proxy=%s no_proxy= NO_PROXY= %s run %s 2>&1")
    :format(U, U, bin, script)))
  local out = p:read("a")
  p:close()
  os.remove(script)
  t:eq(out, "200 EPROXY")
  local st = srv:stats("px1")
  t:eq(st.attempts, 1, "the request went through the test server as a proxy")
  t:eq(st.requests[1] and st.requests[1].host, "proxied.invalid")
end)

test("misuse raises", function(t)
  local c <close> = http.client{}
  t:raises(function() http.request() end, "table expected")
  t:raises(function() c:request{} end, "'url' is required")
  t:raises(function() c:request{ url = U, timout = 1 } end, "unknown field 'timout'")
  t:raises(function() c:request{ url = U, method = "GE T" } end, "bad method")
  t:raises(function() c:request{ url = U, timeout = -1 } end, "seconds")
  t:raises(function() c:request{ url = U, retries = "x" } end, "integer")
  t:raises(function() c:request{ url = U, body = {} } end, "'body'")
  t:raises(function() c:request{ url = U, retry_headers = "aws" } end, "okta")
  t:raises(function() http.client{ per_host = 0 } end, "per_host")
  t:raises(function() http.client{ jitter = "none" } end, "jitter")
  t:raises(function() http.client{ colour = 1 } end, "unknown field 'colour'")
  t:raises(function() c:request_many{ { url = U }, "nope" } end, "item 2")
  local ok, err = pcall(c.request, c, { url = U, headers = { Authorization = "Bearer S3CRET\r\nX: y" } })
  t:ok(not ok)
  t:match(err, "Authorization")
  t:ok(not tostring(err):find("S3CRET", 1, true), "the value is not in the error")
  t:raises(function() c:request{ url = U, headers = { X = { "a", {} } } } end, "header 'X'")
  t:raises(function() http.header_values({}, "x") end, "response")
  local other <close> = http.client{}
  local h = other:start{ url = U .. "/status/200" }
  t:raises(function() c:wait(h) end, "another client")
  t:eq(other:wait(h).status, 200)
  t:eq(tostring(c):match("^usersync.http.Client"), "usersync.http.Client")
  -- after all those errors the client still works
  t:eq(assert(c:request{ url = U .. "/status/204" }).status, 204)
end)

test("the example in bind_http.c runs as documented", function(t)
  local src = assert(os.getenv("SOURCE_DIR"), "SOURCE_DIR not set")
  local f = assert(io.open(src .. "/runtime/bind_http.c"))
  local text = f:read("a")
  f:close()
  local block = text:match("%*%* Example[^\n]*\n(.-)\n%*%*\n")
  t:ok(block, "example block found")
  local code = block:gsub("%*%*   ", ""):gsub("\n%*%*", "\n")
  local out = {}
  local env = setmetatable({ base = U, print = function(...)
    out[#out + 1] = table.concat(table.pack(...), " ", 1, select("#", ...)) end }, { __index = _ENV })
  local fn = assert(load(code, "=example", "t", env))
  fn()
  t:same(out, { "1 200", "2 404", "3 ECONNREFUSED", "200" })
end)

test("codes list is documented", function(t)
  local set = {}
  for _, c in ipairs(http.codes) do set[c] = true end
  for _, c in ipairs{ "ECONNREFUSED", "ETIMEDOUT", "ECONNRESET", "ETLS", "EDNS", "ETOOBIG",
                      "EPROTO", "ECANCELED" } do
    t:ok(set[c], c)
  end
end)

collectgarbage()
return test.done()
