#!/usr/bin/env python3
"""What the target simulators allow: CPU per request, by kind, at a given org size.

    python3 tests/bench/sim_speed.py [users=10000] [groups=500] [products=jira,confluence,bitbucket]

In one process, without sockets (the HTTP layer costs the same at any size): each product's
Server is built with an org of `users` accounts in `groups` groups (every user in "all" and
in 4 of the others, as a synced org looks), then the requests a sync makes are dispatched
and timed: the state upload, every page of the user list and of every group's members,
account creations, membership additions and updates. Printed per kind: requests, CPU ms
per request, and requests/s that allows. A simulator serves its requests one at a time
(under one lock), so 1 / (ms per request) is the most it can serve, whatever the latency;
a benchmark's floor (concurrency / latency) is honest only well below that. Each kind's
cost should not grow with the org size (compare users=10000 with users=100000); the state
upload grows linearly.
"""

import base64
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "fakes"))

from fake import product_class  # noqa: E402
from sim.common import Headers, Request, Server  # noqa: E402

BASIC = "Basic " + base64.b64encode(b"admin:admin").decode()


def headers(write, body=False):
    h = Headers()
    h.add("Authorization", BASIC)
    if write:
        h.add("X-Atlassian-Token", "no-check")
    if body:
        h.add("Content-Type", "application/json")
    return h


def org(n_users, n_groups):
    names = ["user%06d" % i for i in range(n_users)]
    groups = ["all"] + ["group-%04d" % g for g in range(n_groups - 1)]
    members = {g: [] for g in groups}
    for i, n in enumerate(names):
        members["all"].append(n)
        for k in range(4):
            members[groups[1 + (i * 7 + k * 131) % (n_groups - 1)]].append(n)
    return names, groups, members


def state_for(product, names, groups, members):
    if product == "jira":
        users = [{"name": "admin", "key": "admin", "displayName": "Administrator",
                  "emailAddress": "admin@example.com", "active": True}]
        users += [{"name": n, "displayName": n.title(), "emailAddress": n + "@example.com",
                   "active": True} for n in names]
        return {"users": users, "groups": groups + ["jira-administrators"],
                "members": dict(members, **{"jira-administrators": ["admin"]}),
                "projects": [], "components": []}
    if product == "confluence":
        users = [{"username": "admin", "userKey": "8a7f808a00000000000000000000a000",
                  "displayName": "Administrator", "email": "admin@example.com",
                  "disabled": False}]
        users += [{"username": n, "displayName": n.title(), "email": n + "@example.com",
                   "disabled": False} for n in names]
        return {"users": users, "groups": groups + ["confluence-administrators"],
                "members": dict(members, **{"confluence-administrators": ["admin"]}),
                "license": {"seats": 4 * len(names) + 10}}
    users = [{"name": "admin", "slug": "admin", "id": 1, "displayName": "Administrator",
              "emailAddress": "admin@example.com"}]
    users += [{"name": n, "slug": n, "id": i + 2, "displayName": n.title(),
               "emailAddress": n + "@example.com"} for i, n in enumerate(names)]
    return {"users": users, "groups": groups + ["stash-users"],
            "members": dict(members, **{"stash-users": ["admin"]})}


class Timer:
    def __init__(self):
        self.rows = []

    def run(self, label, reqs, srv):
        """Dispatch every (method, target, body) of `reqs`; returns the last response."""
        n = 0
        resp = None
        t0 = time.process_time()
        for method, target, body in reqs:
            b = json.dumps(body).encode() if body is not None else b""
            req = Request(method, target, headers(method != "GET", body is not None), b,
                          srv.base_url)
            resp = srv.dispatch(req)
            if resp.status >= 400:
                raise SystemExit("%s %s -> %d %s" % (method, target, resp.status, resp.body[:300]))
            n += 1
        cpu = time.process_time() - t0
        self.rows.append((label, n, cpu))
        return resp


def paged(srv, first, next_of):
    """Yield request targets of a paged listing, following next_of(response) to the end."""
    target = first
    while target:
        req = Request("GET", target, headers(False), b"", srv.base_url)
        resp = srv.dispatch(req)
        if resp.status != 200:
            raise SystemExit("GET %s -> %d" % (target, resp.status))
        yield target
        target = next_of(json.loads(resp.body))


def bench(product, n_users, n_groups):
    names, groups, members = org(n_users, n_groups)
    cls = product_class(product)
    t = Timer()
    srv = Server(cls, port=0)
    srv.tcp.server_close()
    st = state_for(product, names, groups, members)
    t.run("PUT /__fake/state (%d users)" % n_users,
          [("PUT", "/__fake/state", st)], srv)
    t.run("GET /__fake/state", [("GET", "/__fake/state", None)], srv)

    def walk(label, first, next_of, limit=None):
        t0 = time.process_time()
        n = 0
        for target in paged(srv, first, next_of):
            n += 1
            if limit and n >= limit:
                break
        t.rows.append((label, n, time.process_time() - t0))

    if product == "jira":
        api = "/rest/api/2"
        walk("GET user/list (all pages)", api + "/user/list?maxResults=2000",
             lambda b: None if b.get("isLast") else
             api + "/user/list?maxResults=2000&cursor=" + b["nextCursor"])

        def gm(g):
            return (api + "/group/member?groupname=%s&maxResults=50&startAt=0" % g,
                    lambda b: None if b.get("isLast") else
                    api + "/group/member?groupname=%s&maxResults=50&startAt=%d"
                    % (g, b["startAt"] + len(b["values"])))
        walk("GET group/member (group 'all', first 100 pages)", *gm("all"), limit=100)
        walk("GET group/member (group-0001, all pages)", *gm("group-0001"))
        new = ["new%06d" % i for i in range(300)]
        t.run("POST user", [("POST", api + "/user", {"name": n, "displayName": n,
                                                     "emailAddress": n + "@example.com"})
                            for n in new], srv)
        t.run("POST group/user", [("POST", api + "/group/user?groupname=all", {"name": n})
                                  for n in new], srv)
        t.run("PUT user", [("PUT", api + "/user?username=" + n,
                            {"emailAddress": "x" + n + "@example.com"}) for n in names[:300]],
              srv)
    elif product == "confluence":
        api = "/rest/api"

        def nxt(b):
            n = b.get("_links", {}).get("next")
            return api + n[len("/rest/api"):] if n and n.startswith("/rest/api") else n
        walk("GET user/list (all pages)", api + "/user/list?limit=100", nxt)
        walk("GET group/{g}/member (group 'all', first 50 pages)",
             api + "/group/all/member?limit=200", nxt, limit=50)
        walk("GET group/{g}/member (group-0001, all pages)",
             api + "/group/group-0001/member?limit=200", nxt)
        new = ["new%06d" % i for i in range(300)]
        t.run("POST admin/user", [("POST", api + "/admin/user",
                                   {"userName": n, "fullName": n, "email": n + "@example.com",
                                    "notifyViaEmail": True}) for n in new], srv)
        t.run("PUT user/{u}/group/{g}", [("PUT", api + "/user/%s/group/all" % n, None)
                                         for n in new], srv)
    else:
        api = "/rest/api/1.0/admin"

        def nxt(base):
            return lambda b: None if b.get("isLastPage") else \
                base + "&start=%d" % b["nextPageStart"]
        walk("GET admin/users (all pages)", api + "/users?limit=1000",
             nxt(api + "/users?limit=1000"))
        walk("GET groups/more-members (group 'all', first 20 pages)",
             api + "/groups/more-members?context=all&limit=1000",
             nxt(api + "/groups/more-members?context=all&limit=1000"), limit=20)
        walk("GET groups/more-members (group-0001, all pages)",
             api + "/groups/more-members?context=group-0001&limit=1000",
             nxt(api + "/groups/more-members?context=group-0001&limit=1000"))
        new = ["new%06d" % i for i in range(300)]
        t.run("POST admin/users", [("POST", api + "/users?name=%s&displayName=%s&emailAddress="
                                    "%s@example.com&password=x&addToDefaultGroup=false"
                                    % (n, n, n), None) for n in new], srv)
        t.run("POST groups/add-users", [("POST", api + "/groups/add-users",
                                         {"group": "all", "users": new[i:i + 50]})
                                        for i in range(0, len(new), 50)], srv)
    return t.rows


def main(argv):
    n_users = int(argv[0]) if len(argv) > 0 else 10000
    n_groups = int(argv[1]) if len(argv) > 1 else 500
    products = (argv[2] if len(argv) > 2 else "jira,confluence,bitbucket").split(",")
    print("simulator CPU per request (in process, no sockets; %d users, %d groups, "
          "each user in 5 groups); figures taken on a loaded shared machine"
          % (n_users, n_groups))
    for p in products:
        print("\n%s" % p)
        for label, n, cpu in bench(p, n_users, n_groups):
            per = cpu / n if n else 0
            print("  %-52s %6d req  %9.3f ms/req  %s" % (
                label, n, per * 1000,
                ("%8.0f req/s" % (1 / per)) if per > 0 else "       - req/s"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
