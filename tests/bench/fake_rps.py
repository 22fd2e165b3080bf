#!/usr/bin/env python3
"""Requests per second one keep-alive client gets from a simulator (tests/fakes/fake.py).

    python3 tests/bench/fake_rps.py [--product okta] [--count 20000] [--seconds 5]
                                    [--path /api/v1/groups/00gbench0000000001]

Starts the simulator on a free port with a tiny state, sends small GET requests over ONE
HTTP/1.1 keep-alive connection (stdlib http.client) until --count requests or --seconds
have passed, checks every status is 200, and prints "requests per second: N".
The client runs in this process; the server in its own, as in real use.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "fakes"))
import fake  # noqa: E402

OKTA_STATE = {
    "users": [{"id": "00ubench000000000001", "status": "ACTIVE",
               "profile": {"login": "bench@example.com", "firstName": "Ben", "lastName": "Ch",
                           "email": "bench@example.com"}}],
    "groups": [{"id": "00gbench0000000001", "type": "OKTA_GROUP",
                "profile": {"name": "bench", "description": ""}}],
    "group_members": {"00gbench0000000001": ["00ubench000000000001"]},
    "apps": {}, "logs": [],
}
DEFAULTS = {"okta": ("/api/v1/groups/00gbench0000000001",
                     {"Authorization": "SSWS test-token", "Accept": "application/json"},
                     OKTA_STATE)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--product", default="okta")
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--path")
    ap.add_argument("--header", action="append", default=[], help="Name: value")
    a = ap.parse_args()
    path, headers, state = DEFAULTS.get(a.product, ("/", {}, None))
    path = a.path or path
    for h in a.header:
        k, _, v = h.partition(":")
        headers[k.strip()] = v.strip()
    with fake.Fake(a.product, state=state) as f:
        conn = f.connection()
        n = 0
        bad = 0
        t0 = time.perf_counter()
        end = t0 + a.seconds
        while n < a.count and time.perf_counter() < end:
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                bad += 1
            n += 1
        dt = time.perf_counter() - t0
        conn.close()
    print("%s %s: %d requests in %.2f s over one keep-alive connection, %d not 200"
          % (a.product, path, n, dt, bad))
    print("requests per second: %.0f" % (n / dt))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
