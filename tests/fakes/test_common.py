#!/usr/bin/env python3
"""Tests of the simulator server core (tests/fakes/sim/common.py, fake.py): start-up line,
SIGTERM, keep-alive and Nagle, malformed requests, request bodies, the control interface,
the request log and fault injection. Uses the Okta product as the subject.
Prints "N passed, N failed" last; exits non-zero on failure."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fake  # noqa: E402
from sim import common as sim_common  # noqa: E402

AUTH = {"Authorization": "SSWS test-token"}
STATE = {"users": [{"id": "00u1", "status": "ACTIVE", "profile": {"login": "a@example.com"}}],
         "groups": [{"id": "00g1", "profile": {"name": "g"}}],
         "group_members": {"00g1": ["00u1"]}, "apps": {}, "logs": []}


def raw(f, data, read_until_close=True, timeout=5):
    """Send raw bytes on a new socket; return everything read until close/timeout."""
    s = socket.create_connection(("127.0.0.1", f.port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if not read_until_close and b"\r\n\r\n" in out:
                break
        return out
    finally:
        s.close()


def t_start_and_sigterm(_f):
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "fake.py"), "okta"],
                         stdout=subprocess.PIPE)
    try:
        line = p.stdout.readline().decode()
        assert line.startswith("listening on http://127.0.0.1:"), line
        port = int(line.strip().rsplit(":", 1)[1])
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/__fake/state")
        assert c.getresponse().status == 200
        c.close()
        # an open idle keep-alive connection must not delay the exit
        idle = socket.create_connection(("127.0.0.1", port))
        # (a server that waited for it would wait forever: it sets no idle
        # timeout, so the generous bound below cannot be met by a slow exit)
        p.send_signal(signal.SIGTERM)
        rc = p.wait(120)
        idle.close()
        assert rc == 0, rc
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()


def t_options(_f):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    fd, path = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(STATE, fh)
    try:
        # (a latency far above what a loaded machine adds to a local request,
        # so that "no latency" can be told apart from it)
        with fake.Fake("okta", extra_args=["--state", path, "--latency-ms", "3000"]) as f2:
            assert f2.state()["users"][0]["id"] == "00u1"
            t0 = time.time()
            assert f2.get("/api/v1/users", AUTH).status == 200
            assert time.time() - t0 >= 3.0
            t0 = time.time()
            f2.state()  # control requests get no latency
            assert time.time() - t0 < 3.0
        p = subprocess.Popen([sys.executable, os.path.join(HERE, "fake.py"), "okta", "--port",
                              str(port)], stdout=subprocess.PIPE)
        try:
            assert p.stdout.readline().decode().strip() == "listening on http://127.0.0.1:%d" % port
        finally:
            p.terminate()
            assert p.wait(10) == 0
            p.stdout.close()
        bad = subprocess.run([sys.executable, os.path.join(HERE, "fake.py"), "nope"],
                             capture_output=True, timeout=30)
        assert bad.returncode != 0
    finally:
        os.unlink(path)


def t_keepalive_and_nodelay(f):
    c = f.connection()
    c.request("GET", "/api/v1/users", headers=AUTH)
    r = c.getresponse()
    r.read()
    sock = c.sock
    for _ in range(100):
        c.request("GET", "/api/v1/users", headers=AUTH)
        r = c.getresponse()
        r.read()
        assert r.status == 200
    assert c.sock is sock, "connection was not kept alive"
    # Nagle: the server writes each response with one sendall, so no timing seen
    # from here tells whether TCP_NODELAY is set (a response of one write is never
    # held back); the option itself is checked on a socket the handler set up.
    lst = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(lst.getsockname())
    acc, _ = lst.accept()
    try:
        assert acc.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        h = sim_common._Handler.__new__(sim_common._Handler)
        h.request = acc
        h.setup()
        assert acc.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0, \
            "accepted sockets do not set TCP_NODELAY"
        h.finish()
    finally:
        for s_ in (acc, cli, lst):
            s_.close()
    c.request("GET", "/api/v1/users", headers=dict(AUTH, Connection="close"))
    r = c.getresponse()
    r.read()
    assert r.getheader("Connection") == "close" and r.will_close
    c.close()
    out = raw(f, b"GET /__fake/faults HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and b"Connection: close" in out


def t_malformed_requests(f):
    for data in (b"GARBAGE\r\n\r\n", b"GET /x\r\n\r\n", b"GET x HTTP/1.1\r\n\r\n",
                 b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
                 b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
                 b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                 b"GET /%zz%ff HTTP/1.1\r\n\r\n",
                 b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"a" * 70000 + b"\r\n\r\n"):
        out = raw(f, data)
        assert out.startswith(b"HTTP/1.1 400 "), (data[:40], out[:80])
        head, _, body = out.partition(b"\r\n\r\n")
        cl = [int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")]
        assert cl == [len(body)], (head, body)
    # the server is still fine afterwards
    assert f.get("/api/v1/users", AUTH).status == 200


def t_request_bodies(f):
    body = json.dumps(STATE).encode()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 50]), body[i:i + 50])
                       for i in range(0, len(body), 50)) + b"0\r\n\r\n"
    out = raw(f, b"PUT /__fake/state HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 b"Connection: close\r\n\r\n" + chunked)
    assert out.startswith(b"HTTP/1.1 200"), out[:200]
    # Expect: 100-continue (libcurl sends it for larger bodies)
    s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    try:
        s.sendall(b"PUT /__fake/state HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        first = s.recv(100)
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n", first
        s.sendall(body)
        resp = s.recv(65536)
        assert resp.startswith(b"HTTP/1.1 200"), resp
    finally:
        s.close()
    r = f.request("PUT", "/__fake/state", body=b"{not json")
    assert r.status == 400 and "bad JSON" in r.json()["error"]


def t_control_interface(f):
    f.put_state(STATE)
    st = f.state()
    assert [u["id"] for u in st["users"]] == ["00u1"]
    assert f.get("/__fake/nope").status == 404
    assert f.request("POST", "/__fake/state", body={}).status == 405
    got = f.faults(latency_ms=0, fail_rate=0.25, fail_status=500, fail_path="^/api/v1/users",
                   reset_rate=0.0, garbage_rate=0.0, rate_limit_per_min=100)
    assert got["fail_rate"] == 0.25 and f.get("/__fake/faults").json() == got
    for bad in ({"fail_rate": 2}, {"fail_status": 42}, {"fail_path": "("}, {"nope": 1},
                {"latency_ms": -1}, {"rate_limit_per_min": "x"}, [1]):
        assert f.request("PUT", "/__fake/faults", body=bad).status == 400, bad
    f.faults()
    assert f.get("/__fake/faults").json()["fail_rate"] == 0.0
    r = f.get("/__fake/clock").json()
    assert abs(r["now"] - time.time()) < 60  # (the simulator follows the wall clock)
    f.request("PUT", "/__fake/clock", body={"advance": 3600})
    assert abs(f.get("/__fake/clock").json()["now"] - time.time() - 3600) < 60
    f.request("PUT", "/__fake/clock", body={"advance": -3600})


def t_request_log(f):
    f.put_state(STATE)
    assert f.clear_requests().status == 204
    f.get("/api/v1/users?limit=5&q=a%20b", AUTH)
    f.request("POST", "/api/v1/users", body={}, headers=AUTH)
    f.get("/__fake/faults")
    f.get("/api/v1/users/%E2%82%AC", AUTH)
    log = f.requests()
    at = [r.pop("at") for r in log]  # when each was served: in order, on the real clock
    assert at == sorted(at) and abs(at[0] - time.time()) < 600, at
    assert log == [
        {"method": "GET", "path": "/api/v1/users", "query": "limit=5&q=a%20b", "status": 200},
        {"method": "POST", "path": "/api/v1/users", "query": "", "status": 405},
        {"method": "GET", "path": "/api/v1/users/\u20ac", "query": "", "status": 404},
    ], log
    f.clear_requests()
    assert f.requests() == []


def t_inflight_peak(f):
    """Two requests held by latency are in flight at once: the peak says 2; clearing the log
    resets it. Polls (with a deadline) instead of sleeping, so a slow machine cannot fail it."""
    f.put_state(STATE)
    f.clear_requests()
    assert f.get("/__fake/inflight").json() == {"now": 0, "max": 0}
    f.faults(latency_ms=3000)

    def until(n):
        deadline = time.time() + 60
        while f.get("/__fake/inflight").json()["now"] != n:
            assert time.time() < deadline, "never %d in flight" % n
            time.sleep(0.02)

    conns = [f.connection(), f.connection()]
    for i, c in enumerate(conns):
        c.request("GET", "/api/v1/users", headers=AUTH)
        until(i + 1)
    for c in conns:
        assert c.getresponse().status == 200
        c.close()
    f.faults()
    assert f.get("/__fake/inflight").json() == {"now": 0, "max": 2}
    f.clear_requests()
    assert f.get("/__fake/inflight").json() == {"now": 0, "max": 0}


def t_fault_fail(f):
    f.put_state(STATE)
    f.faults(fail_rate=1.0, fail_status=500, fail_path="^/api/v1/users$")
    r = f.get("/api/v1/users", AUTH)
    assert r.status == 500 and r.json()["errorCode"] == "E0000009", r
    assert r.header("X-Rate-Limit-Limit") and r.header("X-Okta-Request-Id")
    assert f.get("/api/v1/groups", AUTH).status == 200  # outside fail_path
    assert f.get("/__fake/state").status == 200  # control never faulted
    f.faults(fail_rate=1.0, fail_status=503)
    r = f.get("/api/v1/groups", AUTH)
    assert r.status == 503 and r.json()["errorCode"] == "E0000010"
    # fail_rate is a probability; with a seed the sequence repeats
    seqs = []
    for _ in range(2):
        f.faults(fail_rate=0.5, seed=42)
        seqs.append([f.get("/api/v1/groups", AUTH).status for _ in range(40)])
    assert seqs[0] == seqs[1] and 200 in seqs[0] and 503 in seqs[0], seqs
    f.faults()


def t_fault_reset(f):
    f.put_state(STATE)
    f.clear_requests()
    f.faults(reset_rate=1.0)
    c = f.connection(timeout=5)
    try:
        c.request("GET", "/api/v1/users", headers=AUTH)
        c.getresponse().read()
        raise AssertionError("expected the connection to be dropped")
    except (ConnectionResetError, http.client.RemoteDisconnected, http.client.BadStatusLine):
        pass
    finally:
        c.close()
    f.faults()
    log = f.requests()
    assert log[-1]["status"] == 0, log
    assert f.get("/api/v1/users", AUTH).status == 200


def t_fault_garbage(f):
    f.put_state(STATE)
    f.faults(garbage_rate=1.0)
    c = f.connection(timeout=5)
    c.request("GET", "/api/v1/users", headers=AUTH)
    r = c.getresponse()
    data = r.read()  # Content-Length matches, so this does not hang
    assert r.status == 200 and r.getheader("Content-Type").startswith("application/json")
    assert int(r.getheader("Content-Length")) == len(data)
    try:
        json.loads(data)
        raise AssertionError("body should be malformed: %r" % data)
    except ValueError:
        pass
    # the connection stays usable
    c.request("GET", "/__fake/state")
    assert c.getresponse().status == 200
    c.close()
    f.faults()


def t_fault_latency(f):
    f.faults(latency_ms=200)
    t0 = time.time()
    assert f.get("/api/v1/users", AUTH).status == 200
    dt = time.time() - t0
    f.faults()
    assert dt >= 0.2, dt


def t_parallel_clients(f):
    f.put_state(STATE)
    errors = []

    def worker():
        try:
            c = f.connection()
            for _ in range(50):
                c.request("GET", "/api/v1/users", headers=AUTH)
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    errors.append(r.status)
            c.close()
        except Exception as e:  # recorded and asserted below
            errors.append(repr(e))

    ts = [threading.Thread(target=worker) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors


def fail_after_write():
    """fail_after: the write is made, then its answer replaced by the failure."""
    auth = {"Authorization": "Bearer test-token", "X-Atlassian-Token": "no-check"}
    with fake.Fake("jira") as j:
        j.faults(fail_rate=1.0, fail_status=502, fail_path="^/rest/api/2/group$", fail_after=True)
        r = j.request("POST", "/rest/api/2/group", body={"name": "made-anyway"}, headers=auth)
        assert r.status == 502, r.status
        assert "made-anyway" in j.state()["groups"]
        j.faults(fail_rate=1.0, fail_status=502, fail_path="^/rest/api/2/group$")
        r = j.request("POST", "/rest/api/2/group", body={"name": "not-made"}, headers=auth)
        assert r.status == 502 and "not-made" not in j.state()["groups"]
        assert j.request("PUT", "/__fake/faults", body={"fail_after": 1}).status == 400


def hold_path():
    """hold_path: a matching request waits until the faults change, then goes on under the new ones."""
    auth = {"Authorization": "Bearer test-token"}
    with fake.Fake("jira") as j:
        j.faults(hold_path="^/rest/api/2/myself$")
        got = {}

        def held():  # (on a connection of its own: the Fake's is not shared between threads)
            u = urllib.parse.urlsplit(j.url)
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
            c.request("GET", "/rest/api/2/myself", headers=auth)
            r = c.getresponse()
            r.read()
            got["r"] = r
            c.close()

        th = threading.Thread(target=held)
        th.start()
        deadline = time.time() + 60
        while j.get("/__fake/inflight").json()["now"] < 1 and time.time() < deadline:
            time.sleep(0.01)
        assert j.get("/__fake/inflight").json()["now"] == 1  # held
        assert j.get("/rest/api/2/serverInfo", auth).status == 200  # other paths go on
        assert "r" not in got
        assert [r["path"] for r in j.requests()] == ["/rest/api/2/serverInfo"]  # (logged when served)
        j.faults(fail_rate=1.0, fail_status=503, fail_path="^/rest/api/2/myself$")  # released: fails
        th.join(60)
        assert got["r"].status == 503, got["r"].status
        assert j.request("PUT", "/__fake/faults", body={"hold_path": "("}).status == 400
        assert j.request("PUT", "/__fake/faults", body={"hold_path": 1}).status == 400


def main():
    run = fake.Runner()
    with fake.Fake("okta") as f:
        for name, fn in sorted(globals().items()):
            if name.startswith("t_") and callable(fn):
                f.faults()
                run.run(name[2:], fn, f)
    run.run("fail_after_write", fail_after_write)
    run.run("hold_path", hold_path)
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
