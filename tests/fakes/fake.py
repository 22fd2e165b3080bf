#!/usr/bin/env python3
"""Simulator launcher and test helpers (tests/fakes).

Command line:
    python3 tests/fakes/fake.py PRODUCT [--port N] [--state FILE] [--latency-ms N]
PRODUCT is okta, jira, confluence, bitbucket, crowd, scim (any sim/<name>.py; scim also takes
--flavour atlassian: sim/scim.py's FLAVOURS); it is served by tests/fakes/sim/PRODUCT.py,
which defines `PRODUCT = <subclass of sim.common.Product>` (or exactly one such subclass).

As a module, for Python tests (import it after putting tests/fakes on sys.path):
    Fake(product, state=None, latency_ms=None)  start the simulator as a subprocess on a free
                                                port; context manager; .url, .request(), .get(),
                                                .put_state(), .state(), .requests(), .faults()
    Runner()                                    tiny test runner: .test(fn) or .run(name, fn),
                                                .finish() prints "N passed, N failed" last and
                                                returns the exit status
"""

import http.client
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

# Every sim/<product>.py is a product (a new simulator is its file, nothing here changes);
# common.py and atlassian.py are shared machinery.
PRODUCTS = tuple(sorted(f[:-3] for f in os.listdir(os.path.join(HERE, "sim"))
                        if f.endswith(".py") and f[:-3] not in ("__init__", "common", "atlassian")))


def product_class(product):
    """The Product subclass that serves `product` (imports sim/<product>.py)."""
    from sim.common import Product
    mod = importlib.import_module("sim." + product)
    cls = getattr(mod, "PRODUCT", None)
    if cls is None:
        found = [v for v in vars(mod).values()
                 if isinstance(v, type) and issubclass(v, Product) and v is not Product
                 and v.__module__ == mod.__name__]
        if len(found) != 1:
            raise SystemExit("sim/%s.py must define PRODUCT = <Product subclass>" % product)
        cls = found[0]
    return cls


def main(argv):
    if len(argv) < 1 or argv[0] not in PRODUCTS:
        sys.stderr.write("usage: fake.py {%s} [--port N] [--state FILE] [--latency-ms N]\n"
                         % "|".join(PRODUCTS))
        return 2
    from sim.common import serve
    rest = list(argv[1:])
    cls = product_class(argv[0])
    if "--flavour" in rest:  # scim: --flavour atlassian (sim/scim.py FLAVOURS)
        i = rest.index("--flavour")
        flavours = getattr(importlib.import_module("sim." + argv[0]), "FLAVOURS", {})
        if i + 1 >= len(rest) or rest[i + 1] not in flavours:
            sys.stderr.write("fake.py %s: --flavour must be one of: %s\n"
                             % (argv[0], " ".join(sorted(flavours)) or "(none)"))
            return 2
        cls = flavours[rest[i + 1]]
        del rest[i:i + 2]
    return serve(cls, rest)


# ------------------------------------------------------------------------------------------
# Test helpers


class HTTPResult:
    """status:int, headers: list of (name, value) as received (repeats kept), body: bytes."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return None

    def header_all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<HTTPResult %d %r>" % (self.status, self.body[:200])


class Fake:
    """A simulator subprocess on 127.0.0.1 with a free port. Use as a context manager; it is
    always killed (SIGTERM, then SIGKILL) on exit. Start-up is bounded by `timeout` seconds."""

    def __init__(self, product, state=None, latency_ms=None, timeout=60, extra_args=(),
                 state_file=None):
        self.product = product
        args = [sys.executable, os.path.join(HERE, "fake.py"), product, "--port", "0"]
        self._tmp = None
        if state is not None:
            fd, self._tmp = tempfile.mkstemp(suffix=".json", prefix="fake-state-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(json.dumps(state, ensure_ascii=False).encode("utf-8"))
            args += ["--state", self._tmp]
        elif state_file is not None:
            args += ["--state", state_file]
        if latency_ms is not None:
            args += ["--latency-ms", str(latency_ms)]
        args += list(extra_args)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=None)
        deadline = time.time() + timeout
        line = b""
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            left = deadline - time.time()
            if left <= 0 or not sel.select(left):
                self.stop()
                raise RuntimeError("%s simulator did not start in %ss" % (product, timeout))
            ch = self.proc.stdout.read1(1) if hasattr(self.proc.stdout, "read1") else \
                self.proc.stdout.read(1)
            if not ch:
                self.stop()
                raise RuntimeError("%s simulator exited before listening" % product)
            line += ch
        sel.close()
        text = line.decode().strip()
        if not text.startswith("listening on http://127.0.0.1:"):
            self.stop()
            raise RuntimeError("unexpected first line %r" % text)
        self.url = text[len("listening on "):]
        self.port = int(self.url.rsplit(":", 1)[1])
        self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()
        if self._tmp:
            try:
                os.unlink(self._tmp)
            except OSError:
                pass
            self._tmp = None
        return self.proc.returncode

    def connection(self, timeout=30):
        """A new keep-alive http.client connection to the simulator."""
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, conn=None):
        """Send one request (path may be a full URL of this simulator); returns HTTPResult.
        `body` may be bytes, str or a JSON-serialisable object. Reuses one keep-alive
        connection unless `conn` is given; reconnects once if the server closed it."""
        if path.startswith(self.url):
            path = path[len(self.url):]
        hs = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            hs.setdefault("Content-Type", "application/json")
        if isinstance(body, str):
            body = body.encode("utf-8")
        own = conn is None
        for attempt in (0, 1):
            c = conn
            if own:
                if self._conn is None:
                    self._conn = self.connection()
                c = self._conn
            try:
                c.request(method, path, body=body, headers=hs)
                r = c.getresponse()
                data = r.read()
                res = HTTPResult(r.status, r.getheaders(), data)
                if own and r.will_close:
                    self._conn.close()
                    self._conn = None
                return res
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if own:
                    self._conn.close()
                    self._conn = None
                if attempt or not own:
                    raise

    def get(self, path, headers=None):
        return self.request("GET", path, headers=headers)

    def state(self):
        return self.get("/__fake/state").json()

    def put_state(self, state):
        r = self.request("PUT", "/__fake/state", body=state)
        if r.status != 200:
            raise RuntimeError("PUT state failed: %r" % r)
        return r

    def requests(self):
        return self.get("/__fake/requests").json()

    def clear_requests(self):
        return self.request("DELETE", "/__fake/requests")

    def faults(self, **faults):
        r = self.request("PUT", "/__fake/faults", body=faults)
        if r.status != 200:
            raise RuntimeError("PUT faults failed: %r" % r)
        return r.json()


class Runner:
    """Minimal test runner. run(name, fn) calls fn() and counts an exception or a failed
    assert as a failure (with traceback on stderr). finish() prints the summary as the last
    stdout line and returns the process exit status (non-zero when anything failed)."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def run(self, name, fn, *args):
        try:
            fn(*args)
        except Exception:
            self.failed += 1
            print("FAIL %s" % name, flush=True)
            traceback.print_exc()
            sys.stdout.flush()
        else:
            self.passed += 1
            print("ok   %s" % name, flush=True)

    def test(self, fn):
        """Decorator form: registers and runs later via run_all()."""
        self.__dict__.setdefault("_tests", []).append(fn)
        return fn

    def run_all(self, *args):
        for fn in self.__dict__.get("_tests", []):
            self.run(fn.__name__, fn, *args)
        return self.finish()

    def finish(self):
        print("%d passed, %d failed" % (self.passed, self.failed), flush=True)
        return 1 if self.failed or not self.passed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
