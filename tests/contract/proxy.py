"""Prism in front of a simulator, and a small recording layer in front of Prism.

    usersync --> Front (this file) --> prism proxy SPEC --> simulator

Prism (npm @stoplight/prism-cli) validates every request and response against the vendor
OpenAPI document and reports what does not conform in an `sl-violations` response header
(JSON list of {location, severity, code, message}). The Front records that header with the
request that caused it, so each violation is tied to its operation even when usersync has
several requests in flight.

The Front also rewrites the simulator's own address, which the simulators put in absolute
URLs (Okta `link` headers, `_links`, Confluence `_links.base`), to its own address, so that
usersync follows next pages through the proxy and not around it. Bodies and header values are
otherwise passed through as Prism returns them. The `sl-violations` header is taken out.
"""

import http.client
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time

PRISM_PACKAGE = "@stoplight/prism-cli"
PRISM_VERSION = "5.14.2"

HERE = os.path.dirname(os.path.abspath(__file__))
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "expect",
              "proxy-connection", "te", "upgrade", "host"}


def ensure_prism(cache_dir, log=print):
    """Installs Prism into cache_dir/node_modules, exactly as tests/contract/package-lock.json
    pins it (npm ci), unless that version is there; returns the path of its command."""
    exe = os.path.join(cache_dir, "node_modules", ".bin", "prism")
    pkg = os.path.join(cache_dir, "node_modules", "@stoplight", "prism-cli", "package.json")
    try:
        with open(pkg) as fh:
            if json.load(fh).get("version") == PRISM_VERSION and os.access(exe, os.X_OK):
                return exe
    except (OSError, ValueError):
        pass
    os.makedirs(cache_dir, exist_ok=True)
    log("contract: installing %s@%s into %s" % (PRISM_PACKAGE, PRISM_VERSION, cache_dir))
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(os.path.join(HERE, name), os.path.join(cache_dir, name))
    env = dict(os.environ, npm_config_update_notifier="false", SCARF_ANALYTICS="false")
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=cache_dir,
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    if r.returncode != 0 or not os.access(exe, os.X_OK):
        raise RuntimeError("npm ci of %s@%s failed:\n%s"
                           % (PRISM_PACKAGE, PRISM_VERSION, r.stdout.decode(errors="replace")))
    return exe


def parse_violations(value):
    """sl-violations is JSON; Prism cuts it at 8 KiB ("Too many violations! [..."): then the
    complete entries are kept and the cut is reported as one more violation."""
    try:
        return json.loads(value)
    except ValueError:
        pass
    out = []
    for m in re.finditer(r'\{"location":\[[^\]]*\],"severity":"[^"]*",(?:"code":(?:"[^"]*"|\d+),)?'
                         r'"message":"(?:[^"\\]|\\.)*"\}', value):
        out.append(json.loads(m.group(0)))
    out.append({"location": ["header"], "severity": "Error",
                "message": "sl-violations cut by Prism (more violations than it reports)"})
    return out


class Prism:
    """`prism proxy SPEC UPSTREAM` on a free port (no --errors: violations are reported, the
    upstream's answer still reaches the client, so the run goes on as without the proxy)."""

    def __init__(self, exe, spec, upstream, log_path, timeout=300):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([exe, "proxy", spec, upstream, "-p", "0", "-h", "127.0.0.1"],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, SCARF_ANALYTICS="false"))
        self.spec, self.timeout, self.url = spec, timeout, None

    def wait(self):
        """Waits for the listening line (Prism loads the spec first: seconds per document)."""
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            with open(self.log_path, errors="replace") as fh:
                m = re.search(r"Prism is listening on (http://127\.0\.0\.1:\d+)", fh.read())
            if m:
                self.url = m.group(1)
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        if not self.url:
            self.stop()
            with open(self.log_path, errors="replace") as fh:
                tail = fh.read()[-3000:]
            raise RuntimeError("prism did not start for %s:\n%s" % (self.spec, tail))
        self.host, self.port = self.url[len("http://"):].rsplit(":", 1)
        self.port = int(self.port)
        return self

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Front(http.server.ThreadingHTTPServer):
    """Records (operation, status, violations) for every request it forwards to Prism."""

    daemon_threads = True

    def __init__(self, prism, sim_url):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.prism = prism
        self.url = "http://127.0.0.1:%d" % self.server_address[1]
        self.rewrites = [(sim_url.encode(), self.url.encode())]
        self.records = []
        self.lock = threading.Lock()
        self.step = "start"
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def set_step(self, step):
        with self.lock:
            self.step = step

    def stop(self):
        self.shutdown()
        self.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = self.headers.get("Content-Length")
        return self.rfile.read(int(n)) if n is not None else None

    def _forward(self):
        srv = self.server
        body = self._body()
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
        conn = http.client.HTTPConnection(srv.prism.host, srv.prism.port, timeout=120)
        try:
            conn.putrequest(self.command, self.path, skip_accept_encoding=True)
            for k, v in headers:
                conn.putheader(k, v)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            rbody = resp.read()
            rheaders = resp.getheaders()
            status, reason = resp.status, resp.reason
        finally:
            conn.close()
        violations = []
        out_headers = []
        for k, v in rheaders:
            lk = k.lower()
            if lk == "sl-violations":
                violations = parse_violations(v)
                continue
            if lk in HOP_BY_HOP:
                continue
            for a, b in srv.rewrites:
                v = v.replace(a.decode(), b.decode())
            out_headers.append((k, v))
        for a, b in srv.rewrites:
            rbody = rbody.replace(a, b)
        with srv.lock:
            srv.records.append({"step": srv.step, "method": self.command, "target": self.path,
                                "status": status, "violations": violations,
                                "request_body": body, "response_body": rbody})
        self.send_response(status, reason)
        for k, v in out_headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(rbody)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(rbody)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward
