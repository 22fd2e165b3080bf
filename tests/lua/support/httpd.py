#!/usr/bin/env python3
"""httpd.py: a small threaded HTTP/1.1 test server for the usersync HTTP engine
tests (standard library only).

    python3 httpd.py [--port N] [--tls CERT KEY] [--lifetime SECONDS]

The first stdout line is "listening on http[s]://127.0.0.1:PORT pid PID".
It exits on SIGTERM, after --lifetime seconds (default 300), or as soon as
its parent process goes away, so a crashed test never leaves it running.

Endpoints (query parameters in brackets):
  /echo                         200, JSON {method, path, query, headers:[[n,v]..], body}
  /status/N                     status N, body "status N"
  /delay [ms]                   sleeps, then 200 "slept"
  /big [bytes, chunked=1]       a body of that many "x" (chunked: no Content-Length)
  /links                        two separate `Link:` header lines (self, next)
  /redirect [to]                302 to `to` (default /echo)
  /retry [key, fails, status=429, after=1, mode=seconds|date]
                                the first `fails` attempts of `key` get `status` with
                                Retry-After (delta seconds or an HTTP date), then 200
  /ratelimit [key, fails]       Okta-style 429: X-Rate-Limit-Reset = now+1, a Date
                                header, X-Okta-Request-Id; then 200
  /flaky [key, fails, status=503]  `status` without Retry-After, then 200
  /reset                        drops the connection (TCP RST) without a response
  /garbage                      answers bytes that are not HTTP, then closes
  /truncated                    announces 100 bytes, sends 10, closes
  /slow [chunks, ms]            chunked body, one chunk every `ms`
  /__stats [key]                JSON {active, max_active, attempts, requests:[{headers}],
                                times:[epoch seconds each attempt arrived]}
  /__reset                      clears the counters
Counters: `active`/`max_active` count API requests being served at once
(control paths excluded); per key, every attempt's request headers and the
server's clock when it arrived (for assertions on when a retry came).
"""
import argparse
import json
import os
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()
STATE = {"active": 0, "max_active": 0, "keys": {}, "times": {}}


def reset_state():
    with LOCK:
        STATE["max_active"] = STATE["active"]
        STATE["keys"] = {}
        STATE["times"] = {}


def record(key, headers, at=None):
    """Counts an attempt for key, arrived at `at` (default: now); returns the attempt
    number (1-based)."""
    with LOCK:
        reqs = STATE["keys"].setdefault(key, [])
        reqs.append({k.lower(): v for k, v in headers.items()})
        STATE["times"].setdefault(key, []).append(at if at is not None else time.time())
        return len(reqs)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "usersync-test-httpd"

    def log_message(self, *args):
        pass

    def date_time_string(self, timestamp=None):
        """The Date header; handlers that compute times from `self.now` pin it
        to that instant so reset - Date is exact."""
        if timestamp is None:
            timestamp = getattr(self, "now", None) or time.time()
        return formatdate(timestamp, usegmt=True)

    def q(self, name, default=None):
        v = self.query.get(name)
        return v[0] if v else default

    def reply(self, status, body=b"", headers=(), ctype="text/plain"):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def dispatch(self):
        self.now = None  # one handler serves every request of a keep-alive connection
        parts = urlsplit(self.path)
        self.query = parse_qs(parts.query)
        n = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(n) if n else b""
        path = parts.path
        if path.startswith("/__"):
            return self.control(path)
        with LOCK:
            STATE["active"] += 1
            STATE["max_active"] = max(STATE["max_active"], STATE["active"])
        try:
            route = ROUTES.get(path.split("/")[1] if "/" in path else path)
            if route is None:
                return self.reply(404, "no such endpoint")
            return route(self, path)
        finally:
            with LOCK:
                STATE["active"] -= 1

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = dispatch

    def control(self, path):
        if path == "/__reset":
            reset_state()
            return self.reply(200, "ok")
        if path == "/__stats":
            key = self.q("key")
            with LOCK:
                out = {"active": STATE["active"], "max_active": STATE["max_active"]}
                if key is not None:
                    reqs = STATE["keys"].get(key, [])
                    out["attempts"] = len(reqs)
                    out["requests"] = reqs
                    out["times"] = STATE["times"].get(key, [])
            return self.reply(200, json.dumps(out), ctype="application/json")
        return self.reply(404, "no such control endpoint")

    # --- API endpoints ---
    def echo(self, path):
        out = {
            "method": self.command,
            "path": urlsplit(self.path).path,
            "query": urlsplit(self.path).query,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": self.body.decode("utf-8", "replace"),
        }
        key = self.q("key")
        if key:
            record(key, self.headers)
        self.reply(200, json.dumps(out), ctype="application/json")

    def status(self, path):
        code = int(path.split("/")[2])
        self.reply(code, b"" if code in (204, 304) or code < 200 else "status %d" % code)

    def delay(self, path):
        time.sleep(int(self.q("ms", "100")) / 1000.0)
        self.reply(200, "slept")

    def big(self, path):
        n = int(self.q("bytes", "1000"))
        if self.q("chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"x" * 65536
            left = n
            try:
                while left > 0:
                    c = chunk[: min(left, len(chunk))]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c))
                    left -= len(c)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                self.close_connection = True
            return
        self.reply(200, b"x" * n)

    def links(self, path):
        base = "http://%s" % self.headers.get("Host", "127.0.0.1")
        self.reply(200, "[]", ctype="application/json", headers=[
            ("Link", '<%s/links?limit=2>; rel="self"' % base),
            ("Link", '<%s/links?limit=2&after=abc>; rel="next"' % base),
        ])

    def redirect(self, path):
        self.reply(302, "moved", headers=[("Location", self.q("to", "/echo"))])

    def retry(self, path):
        key, fails = self.q("key", "retry"), int(self.q("fails", "1"))
        n = record(key, self.headers)
        if n <= fails:
            after = int(self.q("after", "1"))
            if self.q("mode", "seconds") == "date":
                self.now = time.time()
                value = formatdate(self.now + after + 1, usegmt=True)
            else:
                value = str(after)
            return self.reply(int(self.q("status", "429")), "slow down",
                              headers=[("Retry-After", value)])
        self.reply(200, json.dumps({"attempts": n}), ctype="application/json")

    def ratelimit(self, path):
        key, fails = self.q("key", "rl"), int(self.q("fails", "1"))
        self.now = time.time()
        n = record(key, self.headers, self.now)
        now = int(self.now)
        hdrs = [("X-Rate-Limit-Limit", "10"), ("X-Okta-Request-Id", "req-%s-%d" % (key, n))]
        if n <= fails:
            hdrs += [("X-Rate-Limit-Remaining", "0"), ("X-Rate-Limit-Reset", str(now + 1))]
            return self.reply(429, json.dumps({"errorCode": "E0000047"}),
                              ctype="application/json", headers=hdrs)
        hdrs += [("X-Rate-Limit-Remaining", "9"), ("X-Rate-Limit-Reset", str(now + 60))]
        self.reply(200, json.dumps({"attempts": n}), ctype="application/json", headers=hdrs)

    def flaky(self, path):
        key, fails = self.q("key", "flaky"), int(self.q("fails", "1"))
        n = record(key, self.headers)
        if n <= fails:
            return self.reply(int(self.q("status", "503")), "unavailable")
        self.reply(200, json.dumps({"attempts": n}), ctype="application/json")

    def drop(self, path):
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def garbage(self, path):
        self.close_connection = True
        self.wfile.write(b"THIS IS NOT HTTP AT ALL\r\n\r\n")

    def truncated(self, path):
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        self.wfile.write(b"0123456789")

    def slow(self, path):
        chunks, ms = int(self.q("chunks", "5")), int(self.q("ms", "100"))
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for i in range(chunks):
                self.wfile.write(b"2\r\n%02d\r\n" % (i % 100))
                self.wfile.flush()
                time.sleep(ms / 1000.0)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True


ROUTES = {
    "echo": Handler.echo, "status": Handler.status, "delay": Handler.delay, "big": Handler.big,
    "links": Handler.links, "redirect": Handler.redirect, "retry": Handler.retry,
    "ratelimit": Handler.ratelimit, "flaky": Handler.flaky, "reset": Handler.drop,
    "garbage": Handler.garbage, "truncated": Handler.truncated, "slow": Handler.slow,
}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    tls = None

    def finish_request(self, request, client_address):
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return  # the client refused our certificate: expected in tests
        try:
            Handler(request, client_address, self)
        except (ConnectionError, ssl.SSLError, BrokenPipeError):
            pass

    def handle_error(self, request, client_address):
        pass


def watch_parent(parent, lifetime):
    deadline = time.time() + lifetime
    while time.time() < deadline:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(0.2)
    os._exit(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    ap.add_argument("--lifetime", type=float, default=300)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    srv = Server(("127.0.0.1", args.port), Handler)
    scheme = "http"
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls[0], args.tls[1])
        srv.tls = ctx
        scheme = "https"
    threading.Thread(target=watch_parent, args=(os.getppid(), args.lifetime), daemon=True).start()
    print("listening on %s://127.0.0.1:%d pid %d" % (scheme, srv.server_address[1], os.getpid()),
          flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
