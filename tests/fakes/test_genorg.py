#!/usr/bin/env python3
"""Tests of genorg.py: determinism per seed, the documented mix of statuses, names, logins,
group types and sizes, app assignment, and that the simulator accepts the output.
Prints "N passed, N failed" last; exits non-zero on failure."""

import collections
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fake  # noqa: E402

GENORG = os.path.join(HERE, "genorg.py")


def gen(*args):
    # (no bound of its own: 100,000 users take ~30 s on a loaded 2-core
    # machine, several times that on a slower one; ctest's timeout bounds it)
    p = subprocess.run([sys.executable, GENORG] + list(args), capture_output=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def t_deterministic():
    a = gen("--users", "300", "--groups", "20", "--seed", "5")
    b = gen("--users", "300", "--groups", "20", "--seed", "5")
    c = gen("--users", "300", "--groups", "20", "--seed", "6")
    assert a == b and a != c


def t_shape():
    st = json.loads(gen("--users", "2000", "--groups", "40", "--seed", "9", "--app-id", "0oaMyApp"))
    assert sorted(st) == ["apps", "group_members", "groups", "logs", "users"]
    users, groups = st["users"], st["groups"]
    assert len(users) == 2000 and len(groups) == 40 and st["logs"] == []
    statuses = collections.Counter(u["status"] for u in users)
    for s in ("ACTIVE", "STAGED", "PROVISIONED", "SUSPENDED", "DEPROVISIONED", "LOCKED_OUT"):
        assert statuses[s] > 0, statuses
    assert statuses["ACTIVE"] > 1000
    logins = [u["profile"]["login"] for u in users]
    assert len({x.lower() for x in logins}) == len(logins)
    assert any("+" in x for x in logins)
    assert any(x != x.lower() for x in logins) and any(x == x.lower() for x in logins)
    names = [u["profile"]["firstName"] + u["profile"]["lastName"] for u in users]
    assert any(not n.isascii() for n in names)
    assert all(ord(ch) < 0x10000 for n in names for ch in n)  # no 4-byte UTF-8 (Okta rejects)
    ids = [u["id"] for u in users] + [g["id"] for g in groups]
    assert len(set(ids)) == len(ids) and all(len(i) == 20 for i in ids)
    assert all(u["id"].startswith("00u") for u in users)
    for u in users:
        assert (u["activated"] is None) == (u["status"] == "STAGED")
        assert u["lastUpdated"] >= u["created"]
    types = collections.Counter(g["type"] for g in groups)
    assert types["BUILT_IN"] == 2 and types["APP_GROUP"] >= 1 and types["OKTA_GROUP"] >= 30
    everyone = [g for g in groups if g["profile"]["name"] == "Everyone"][0]
    assert sorted(st["group_members"][everyone["id"]]) == sorted(u["id"] for u in users)
    sizes = sorted((len(st["group_members"][g["id"]]) for g in groups if g["type"] != "BUILT_IN"),
                   reverse=True)
    assert sizes[0] > 10 * max(1, sizes[len(sizes) // 2]), sizes  # skewed
    assert 0 in sizes or sizes[-1] <= 3
    app = st["apps"]["0oaMyApp"]
    assert len(app["users"]) > 50 and 1 <= len(app["groups"]) <= 4
    by = {u["id"]: u for u in users}
    assert all(by[x]["status"] != "DEPROVISIONED" for x in app["users"])
    # deactivation deletes the password; no credential before activation
    for u in users:
        has_pw = "password" in u["credentials"]
        assert has_pw == (u["status"] not in ("STAGED", "PROVISIONED", "DEPROVISIONED")), u
    # a few AppUser variants beside ACTIVE / DISABLED, each on a direct assignee
    ov = app["app_users"]
    assert len(ov) >= 4 and set(ov) <= set(app["users"]), ov
    assert {(v["status"], v["syncState"]) for v in ov.values()} == {
        ("PROVISIONED", "SYNCHRONIZED"), ("PROVISIONED", "OUT_OF_SYNC"), ("PROVISIONED", "ERROR"),
        ("SUSPENDED", "SYNCHRONIZED")}
    assert all(v["externalId"].startswith("ext-") for v in ov.values())


def t_simulator_accepts():
    st = json.loads(gen("--users", "500", "--groups", "12", "--seed", "2", "--app-id", "0oaApp"))
    auth = {"Authorization": "SSWS test-token"}
    with fake.Fake("okta", state=st) as f:
        r = f.get("/api/v1/users?limit=200", auth)
        assert r.status == 200 and len(r.json()) == 200
        dep = sum(1 for u in st["users"] if u["status"] == "DEPROVISIONED")
        total = 0
        url = "/api/v1/users?limit=200"
        while url:
            r = f.get(url, auth)
            total += len(r.json())
            nxt = [v for v in r.header_all("link") if 'rel="next"' in v]
            url = nxt[0][1:nxt[0].index(">")] if nxt else None
        assert total == 500 - dep
        r = f.get("/api/v1/apps/0oaApp/users?limit=500", auth)
        scopes = collections.Counter(a["scope"] for a in r.json())
        assert scopes["USER"] > 0 and scopes["GROUP"] > 0, scopes
        states = collections.Counter((a["status"], a["syncState"]) for a in r.json())
        assert states[("ACTIVE", "DISABLED")] > 0 and states[("PROVISIONED", "SYNCHRONIZED")] > 0
        dep_user = [u for u in st["users"] if u["status"] == "DEPROVISIONED"][0]
        got = f.get("/api/v1/users/" + dep_user["id"], auth).json()
        assert "password" not in got["credentials"], got["credentials"]


def t_speed_100k():
    t0 = time.time()
    out = gen("--users", "100000", "--groups", "500", "--seed", "1")
    dt = time.time() - t0
    assert out.count(b'"id":"00u') >= 100000
    print("genorg 100000 users / 500 groups: %.1fs, %d MB" % (dt, len(out) // 1000000))


def main():
    run = fake.Runner()
    for name, fn in sorted(globals().items()):
        if name.startswith("t_") and callable(fn):
            run.run(name[2:], fn)
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
