"""HTTP/1.1 server and control interface shared by every simulator (tests/fakes).

Provides:
  Request, Response, json_response(), empty_response(), BadJson  -- what a product sees and returns
  Product                                                          -- base class of sim/<product>.py
  Server, serve(product_cls, argv)                                 -- the server fake.py runs

Contract (tests/fakes/README.md):
  * The first stdout line is "listening on http://127.0.0.1:PORT" (flushed); SIGTERM ends the
    process with exit status 0.
  * Control interface (never logged, never faulted, never throttled):
      GET/PUT    /__fake/state     whole state as JSON; PUT replaces it (400 on a bad shape)
      GET/DELETE /__fake/requests  [{"method","path","query","status"}] of API requests
      GET        /__fake/inflight  {"now": n, "max": n}: API requests being served at once, now
                                   and at most since the log was last cleared
      GET/PUT    /__fake/faults    fault injection settings (PUT replaces them; unset keys get
                                   their defaults; unknown keys are a 400)
      GET/PUT    /__fake/clock     extension: {"now": epoch seconds, "offset": seconds};
                                   PUT {"advance": S} moves the simulated clock forward by S,
                                   PUT {"now": null} returns to the real clock
  * Every other request is an API request:
      0. hold_path (a regex or null): a request whose decoded path matches waits, before
         anything else, until the faults are replaced by a PUT without that hold_path (at
         most 120 s), then goes on under the faults of that PUT: a test can keep one read
         of a client in flight while it looks at what the client does meanwhile, then let it
         end well or fail. GET /__fake/inflight counts the held requests ("now").
      1. latency_ms sleep (outside the lock)
      2. when fail_path is empty or matches the decoded path: reset_rate (connection dropped
         with a TCP RST, no response; logged with status 0), fail_rate (fail_status with the
         product's error body from Product.fault_response; with fail_after the request is
         served first and only its answer replaced: a change made, its answer lost)
      3. Product.throttle() then Product.handle(), both under one lock
      4. garbage_rate (same fail_path scope): the body is replaced by a truncated, malformed
         copy with the normal status and Content-Type (and a Content-Length that matches the
         bytes sent, so clients do not hang)
  * Keep-alive for HTTP/1.1 (unless "Connection: close"), TCP_NODELAY on accepted sockets,
    Content-Length and chunked request bodies, "Expect: 100-continue", 400 on malformed
    requests (then the connection is closed).

Threading: one daemon thread per connection. Product methods are only ever called with
Server.lock held, so products need no locking of their own.
"""

import argparse
import json
import os
import random
import re
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse
from email.utils import formatdate

__all__ = ["Request", "Response", "json_response", "empty_response", "BadJson", "Product",
           "Server", "serve", "DEFAULT_FAULTS", "http_date"]

MAX_LINE = 65536
MAX_HEADERS = 200
MAX_BODY = 1024 * 1024 * 1024

REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
    301: "Moved Permanently", 302: "Found", 304: "Not Modified", 400: "Bad Request",
    401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 411: "Length Required",
    412: "Precondition Failed", 413: "Payload Too Large", 415: "Unsupported Media Type",
    429: "Too Many Requests", 500: "Internal Server Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}


class BadJson(ValueError):
    """Raised by Request.json() when the body is not valid JSON (or not UTF-8)."""


class Headers(dict):
    """Case-insensitive header mapping: keys are stored lower-cased; repeated headers are
    joined with ", " (as RFC 9110 allows for list-valued fields)."""

    def __getitem__(self, key):
        return dict.__getitem__(self, key.lower())

    def get(self, key, default=None):
        return dict.get(self, key.lower(), default)

    def __contains__(self, key):
        return dict.__contains__(self, key.lower())

    def add(self, key, value):
        k = key.lower()
        if dict.__contains__(self, k):
            dict.__setitem__(self, k, dict.__getitem__(self, k) + ", " + value)
        else:
            dict.__setitem__(self, k, value)


class Request:
    """One HTTP request as a product sees it.

    method   "GET", "PUT", ...
    path     path without the query, percent-decoded (UTF-8)
    raw_path path without the query, as sent
    query    dict name -> [values] (urllib.parse.parse_qs with keep_blank_values)
    raw_query the query string as sent ("" when none)
    headers  case-insensitive mapping (Headers)
    body     bytes
    base_url "http://127.0.0.1:PORT"
    ctx      dict for the product's own per-request notes (e.g. throttle() -> finish())
    """

    __slots__ = ("method", "path", "raw_path", "query", "raw_query", "headers", "body",
                 "base_url", "ctx", "_json")

    def __init__(self, method, target, headers, body, base_url):
        self.method = method
        raw_path, _, raw_query = target.partition("?")
        self.raw_path = raw_path
        self.raw_query = raw_query
        self.path = urllib.parse.unquote(raw_path, errors="strict")
        self.query = urllib.parse.parse_qs(raw_query, keep_blank_values=True,
                                           errors="strict") if raw_query else {}
        self.headers = headers
        self.body = body
        self.base_url = base_url
        self.ctx = {}
        self._json = None

    def arg(self, name, default=None):
        """First value of query parameter `name`, or `default` when absent."""
        v = self.query.get(name)
        return v[0] if v else default

    def json(self):
        """The body parsed as JSON (cached). Raises BadJson when it is not valid UTF-8 JSON."""
        if self._json is None:
            try:
                self._json = (json.loads(self.body.decode("utf-8")),)
            except (UnicodeDecodeError, ValueError) as e:
                raise BadJson(str(e)) from None
        return self._json[0]


class Response:
    """status:int, headers: list of (name, value) (names may repeat, e.g. several 'link'),
    body: bytes. The server adds Content-Length, Date (unless present) and Connection."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status, headers=None, body=b""):
        self.status = status
        self.headers = list(headers or [])
        self.body = body

    def header(self, name):
        """First value of header `name` (case-insensitive) or None."""
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return None


def _dumps(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_response(status, obj, headers=None):
    """A JSON response; Content-Type application/json unless `headers` sets one."""
    hs = list(headers or [])
    if not any(k.lower() == "content-type" for k, _ in hs):
        hs.append(("Content-Type", "application/json"))
    return Response(status, hs, _dumps(obj))


def empty_response(status, headers=None):
    """A response without a body (e.g. 204)."""
    return Response(status, headers, b"")


def http_date(t):
    """RFC 7231 date for epoch seconds `t`."""
    return formatdate(t, usegmt=True)


DEFAULT_FAULTS = {
    "latency_ms": 0,
    "rate_limit_per_min": None,
    "fail_rate": 0.0,
    "fail_status": 503,
    "fail_path": None,
    "fail_after": False,
    "hold_path": None,
    "reset_rate": 0.0,
    "garbage_rate": 0.0,
    "seed": None,
}


class Product:
    """Base class of a simulated product (one instance per process).

    Subclasses set `name`, may declare `extra_faults` (fault key -> default value; validated by
    validate_fault()), and implement the state and request methods. The server calls
    load_state/dump_state/throttle/handle/fault_response/faults_changed with Server.lock held.
    """

    name = "base"
    extra_faults = {}

    def __init__(self, server):
        self.server = server  # server.faults (dict), server.now() (epoch seconds, overridable)

    def default_state(self):
        """The state at start-up when no --state file is given."""
        return {}

    def load_state(self, state):
        """Replace the state. Raise ValueError (message shown in the 400) on a bad shape."""
        raise NotImplementedError

    def dump_state(self):
        """The whole state as a JSON-serialisable object."""
        raise NotImplementedError

    def handle(self, req):
        """Serve one API request; return a Response."""
        raise NotImplementedError

    def throttle(self, req):
        """Rate limiting before handle(): a Response (e.g. 429) to stop, or None to go on."""
        return None

    def fault_response(self, req, status):
        """The response sent for an injected failure (fail_rate). Products override this to
        produce their own error body."""
        return json_response(status, {"error": "injected fault", "status": status})

    def finish(self, req, resp):
        """Called after handle()/throttle()/fault_response() for every API response that is
        sent (not for resets): add headers every response carries. Default: nothing."""
        return resp

    def validate_fault(self, key, value):
        """Check an extra fault value; raise ValueError when it is wrong. Default: accept."""
        return value

    def faults_changed(self):
        """Called after PUT /__fake/faults."""


class _Drop(Exception):
    """Internal: close the connection with a TCP reset and send nothing."""


class _Handler(socketserver.BaseRequestHandler):
    def setup(self):
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = sock.makefile("rb", buffering=65536)

    def finish(self):
        try:
            self.rfile.close()
        except OSError:
            pass

    def handle(self):
        srv = self.server.owner
        sock = self.request
        try:
            while True:
                keep = self._one(srv, sock)
                if not keep:
                    break
        except _Drop:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        except (ConnectionError, socket.timeout, OSError):
            pass

    def _bad(self, sock, msg):
        body = _dumps({"error": "bad request", "message": msg})
        head = ("HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)).encode("ascii")
        try:
            sock.sendall(head + body)
        except OSError:
            pass
        return False

    def _one(self, srv, sock):
        """Read and serve one request. Returns True to keep the connection open."""
        rfile = self.rfile
        line = rfile.readline(MAX_LINE + 1)
        while line in (b"\r\n", b"\n"):  # tolerate stray CRLF between requests (RFC 9112 2.2)
            line = rfile.readline(MAX_LINE + 1)
        if not line:
            return False
        if len(line) > MAX_LINE or not line.endswith(b"\n"):
            return self._bad(sock, "request line too long or truncated")
        try:
            parts = line.decode("ascii").rstrip("\r\n").split(" ")
        except UnicodeDecodeError:
            return self._bad(sock, "request line is not ASCII")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/") \
                or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
            return self._bad(sock, "malformed request line")
        method, target, version = parts
        headers = Headers()
        for _ in range(MAX_HEADERS + 1):
            h = rfile.readline(MAX_LINE + 1)
            if h in (b"\r\n", b"\n"):
                break
            if not h:
                return False
            if len(h) > MAX_LINE or not h.endswith(b"\n"):
                return self._bad(sock, "header line too long or truncated")
            try:
                hs = h.decode("latin-1").rstrip("\r\n")
            except UnicodeDecodeError:
                return self._bad(sock, "bad header")
            name, sep, value = hs.partition(":")
            if not sep or not name or name != name.strip() or " " in name:
                return self._bad(sock, "malformed header line")
            headers.add(name, value.strip())
        else:
            return self._bad(sock, "too many headers")

        conn_hdr = (headers.get("connection") or "").lower()
        if version == "HTTP/1.1":
            keep = "close" not in conn_hdr
        else:
            keep = "keep-alive" in conn_hdr

        if (headers.get("expect") or "").lower() == "100-continue":
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

        te = (headers.get("transfer-encoding") or "").lower()
        cl = headers.get("content-length")
        if te:
            if te != "chunked" or cl is not None:
                return self._bad(sock, "unsupported transfer-encoding")
            body = self._read_chunked(rfile)
            if body is None:
                return self._bad(sock, "malformed chunked body")
        elif cl is not None:
            if not cl.isdigit() or int(cl) > MAX_BODY:
                return self._bad(sock, "bad content-length")
            n = int(cl)
            body = rfile.read(n) if n else b""
            if len(body) != n:
                return False
        else:
            body = b""
        try:
            req = Request(method, target, headers, body, srv.base_url)
        except (UnicodeDecodeError, ValueError):
            return self._bad(sock, "bad percent-encoding in the request target")

        resp = srv.dispatch(req)  # may raise _Drop
        self._send(sock, req, resp, keep, srv.now())
        return keep

    @staticmethod
    def _read_chunked(rfile):
        out = []
        total = 0
        while True:
            line = rfile.readline(MAX_LINE + 1)
            if not line.endswith(b"\n"):
                return None
            size_s = line.split(b";", 1)[0].strip()
            try:
                size = int(size_s, 16)
            except ValueError:
                return None
            if size == 0:
                while True:  # trailers
                    t = rfile.readline(MAX_LINE + 1)
                    if t in (b"\r\n", b"\n"):
                        return b"".join(out)
                    if not t:
                        return None
            total += size
            if total > MAX_BODY:
                return None
            data = rfile.read(size)
            if len(data) != size or rfile.readline(3) not in (b"\r\n", b"\n"):
                return None
            out.append(data)

    @staticmethod
    def _send(sock, req, resp, keep, now):
        reason = REASONS.get(resp.status, "Status")
        lines = ["HTTP/1.1 %d %s" % (resp.status, reason)]
        has_date = False
        for k, v in resp.headers:
            lk = k.lower()
            if lk in ("content-length", "connection", "transfer-encoding"):
                continue
            if lk == "date":
                has_date = True
            lines.append("%s: %s" % (k, v))
        if not has_date:
            lines.append("Date: " + http_date(now))
        body = resp.body if req.method != "HEAD" else b""
        lines.append("Content-Length: %d" % len(resp.body))
        if not keep:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", errors="replace")
        sock.sendall(head + body)


class _TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    block_on_close = False


class Server:
    """Owns the socket, the product, the request log, the faults and the clock."""

    def __init__(self, product_cls, port=0, state=None, latency_ms=0):
        self.lock = threading.RLock()
        self.faults = self._default_faults(product_cls)
        self.faults["latency_ms"] = latency_ms or 0
        self.requests = []
        self.inflight = 0  # API requests being served now (incl. latency sleep and lock wait)
        self.max_inflight = 0  # the most at once since the request log was cleared
        self._inflight_lock = threading.Lock()
        self._clock_now = None  # fixed epoch seconds when set
        self._clock_set_at = 0.0
        self._clock_offset = 0.0
        self.rng = random.Random()
        self._held = threading.Condition()  # hold_path: notified when the faults change
        self.tcp = _TCPServer(("127.0.0.1", port), _Handler)
        self.tcp.owner = self
        self.port = self.tcp.server_address[1]
        self.base_url = "http://127.0.0.1:%d" % self.port
        self.product = product_cls(self)
        with self.lock:
            self.product.load_state(state if state is not None else self.product.default_state())

    @staticmethod
    def _default_faults(product_cls):
        f = dict(DEFAULT_FAULTS)
        for k, v in product_cls.extra_faults.items():
            f[k] = json.loads(json.dumps(v))
        return f

    # -- clock -------------------------------------------------------------------------------
    def now(self):
        """Simulated time in epoch seconds (float): real time plus an offset, unless pinned.
        A pinned clock (PUT /__fake/clock {"now": T}) still runs forward from T."""
        if self._clock_now is not None:
            return self._clock_now + (time.time() - self._clock_set_at)
        return time.time() + self._clock_offset

    # -- dispatch ----------------------------------------------------------------------------
    def dispatch(self, req):
        if req.path.startswith("/__fake/"):
            try:
                return self._control(req)
            except BadJson as e:
                return json_response(400, {"error": "bad JSON: %s" % e})
            except ValueError as e:
                return json_response(400, {"error": str(e)})
        return self._api(req)

    def _api(self, req):
        with self._inflight_lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            return self._api_inner(req)
        finally:
            with self._inflight_lock:
                self.inflight -= 1

    def _hold(self, req):
        """hold_path: waits while the faults that hold req are in force (120 s at most)."""
        f = self.faults
        if not f.get("hold_path") or re.search(f["hold_path"], req.path) is None:
            return
        deadline = time.time() + 120
        with self._held:
            while self.faults is f and time.time() < deadline:
                self._held.wait(deadline - time.time())

    def _api_inner(self, req):
        self._hold(req)
        f = self.faults
        lat = f.get("latency_ms") or 0
        if lat > 0:
            time.sleep(lat / 1000.0)
        scoped = True
        if f.get("fail_path"):
            scoped = re.search(f["fail_path"], req.path) is not None
        rng = self.rng
        with self.lock:
            if scoped and f["reset_rate"] and rng.random() < f["reset_rate"]:
                self._log(req, 0)
                raise _Drop()
            resp = None
            fail_after = False
            if scoped and f["fail_rate"] and rng.random() < f["fail_rate"]:
                if f.get("fail_after"):
                    fail_after = True  # the request is served, its answer replaced below
                else:
                    resp = self.product.fault_response(req, int(f["fail_status"]))
            if resp is None:
                resp = self.product.throttle(req)
            if resp is None:
                try:
                    resp = self.product.handle(req)
                except Exception as e:  # a simulator bug must not kill the connection silently
                    import traceback
                    traceback.print_exc(file=sys.stderr)
                    resp = json_response(500, {"error": "simulator bug: %r" % (e,)})
            if fail_after:
                resp = self.product.fault_response(req, int(f["fail_status"]))
            resp = self.product.finish(req, resp)
            garbage = scoped and f["garbage_rate"] and resp.body and \
                rng.random() < f["garbage_rate"]  # never a body on a 204/304
            self._log(req, resp.status)
        if garbage:
            b = resp.body
            resp = Response(resp.status, resp.headers, b[: len(b) // 2] + b'\x00{"garbage')
        return resp

    def _log(self, req, status):
        # at: when it was served (the real clock, not the fake one), so tests can
        # order the requests of several servers
        self.requests.append({"method": req.method, "path": req.path,
                              "query": req.raw_query, "status": status, "at": time.time()})

    # -- control interface -------------------------------------------------------------------
    def _control(self, req):
        p, m = req.path, req.method
        with self.lock:
            if p == "/__fake/state":
                if m == "GET":
                    return json_response(200, self.product.dump_state())
                if m == "PUT":
                    st = req.json()
                    if not isinstance(st, dict):
                        raise ValueError("state must be a JSON object")
                    self.product.load_state(st)
                    return json_response(200, {"ok": True})
            elif p == "/__fake/requests":
                if m == "GET":
                    return json_response(200, self.requests)
                if m == "DELETE":
                    self.requests = []
                    with self._inflight_lock:
                        self.max_inflight = self.inflight
                    return empty_response(204)
            elif p == "/__fake/inflight":
                if m == "GET":
                    with self._inflight_lock:
                        return json_response(200, {"now": self.inflight, "max": self.max_inflight})
            elif p == "/__fake/faults":
                if m == "GET":
                    return json_response(200, self.faults)
                if m == "PUT":
                    self.faults = self._parse_faults(req.json())
                    if self.faults.get("seed") is not None:
                        self.rng = random.Random(self.faults["seed"])
                    self.product.faults_changed()
                    with self._held:
                        self._held.notify_all()
                    return json_response(200, self.faults)
            elif p == "/__fake/clock":
                if m == "GET":
                    return json_response(200, {"now": self.now(), "offset": self._clock_offset,
                                               "pinned": self._clock_now is not None})
                if m == "PUT":
                    body = req.json()
                    if not isinstance(body, dict):
                        raise ValueError("clock body must be an object")
                    if "now" in body:
                        v = body["now"]
                        if v is None:
                            self._clock_now = None
                        elif isinstance(v, (int, float)) and not isinstance(v, bool):
                            self._clock_now = float(v)
                            self._clock_set_at = time.time()
                        else:
                            raise ValueError("now must be a number or null")
                    if "advance" in body:
                        v = body["advance"]
                        if not isinstance(v, (int, float)) or isinstance(v, bool):
                            raise ValueError("advance must be a number")
                        if self._clock_now is not None:
                            self._clock_now += v
                        else:
                            self._clock_offset += v
                    return json_response(200, {"now": self.now()})
            else:
                return json_response(404, {"error": "unknown control path %s" % p})
        return json_response(405, {"error": "method %s not allowed on %s" % (m, p)})

    def _parse_faults(self, body):
        if not isinstance(body, dict):
            raise ValueError("faults must be a JSON object")
        f = self._default_faults(type(self.product))
        num = (int, float)
        for k, v in body.items():
            if k not in f:
                raise ValueError("unknown fault %r (known: %s)" % (k, ", ".join(sorted(f))))
            if k in ("fail_rate", "reset_rate", "garbage_rate"):
                if not isinstance(v, num) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
                    raise ValueError("%s must be a number from 0 to 1" % k)
            elif k == "latency_ms":
                if not isinstance(v, num) or isinstance(v, bool) or v < 0:
                    raise ValueError("latency_ms must be a number >= 0")
            elif k == "rate_limit_per_min":
                if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                    raise ValueError("rate_limit_per_min must be an integer >= 0 or null")
            elif k == "fail_status":
                if not isinstance(v, int) or isinstance(v, bool) or not 100 <= v <= 599:
                    raise ValueError("fail_status must be an HTTP status code")
            elif k == "fail_path":
                if v is not None:
                    if not isinstance(v, str):
                        raise ValueError("fail_path must be a regex string or null")
                    try:
                        re.compile(v)
                    except re.error as e:
                        raise ValueError("fail_path is not a valid regex: %s" % e) from None
            elif k == "hold_path":
                if v is not None:
                    if not isinstance(v, str):
                        raise ValueError("hold_path must be a regex string or null")
                    try:
                        re.compile(v)
                    except re.error as e:
                        raise ValueError("hold_path is not a valid regex: %s" % e) from None
            elif k == "fail_after":
                if not isinstance(v, bool):
                    raise ValueError("fail_after must be true or false")
            elif k == "seed":
                if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                    raise ValueError("seed must be an integer or null")
            else:
                v = self.product.validate_fault(k, v)
            f[k] = v
        return f

    # -- lifecycle ---------------------------------------------------------------------------
    def serve_forever(self):
        self.tcp.serve_forever(poll_interval=0.5)

    def close(self):
        self.tcp.server_close()


def _sigterm(signum, frame):
    raise SystemExit(0)


def serve(product_cls, argv=None):
    """Command line entry: parse --port/--state/--latency-ms, print the listening line, serve
    until SIGTERM/SIGINT (exit status 0)."""
    ap = argparse.ArgumentParser(prog="fake.py " + product_cls.name)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--state", help="initial state (JSON file)")
    ap.add_argument("--latency-ms", type=float, default=0)
    a = ap.parse_args(argv)
    state = None
    if a.state:
        with open(a.state, "rb") as fh:
            state = json.loads(fh.read().decode("utf-8"))
    try:
        srv = Server(product_cls, port=a.port, state=state, latency_ms=a.latency_ms)
    except ValueError as e:
        print("fake.py: bad initial state: %s" % e, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, _sigterm)
    sys.stdout.write("listening on %s\n" % srv.base_url)
    sys.stdout.flush()
    try:
        srv.serve_forever()
    except SystemExit:
        pass
    finally:
        srv.close()
    sys.stdout.flush()
    os._exit(0)  # do not wait for connection threads
