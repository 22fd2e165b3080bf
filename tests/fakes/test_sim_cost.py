#!/usr/bin/env python3
"""The target simulators' work per request does not grow with the org (sim/jira.py,
confluence.py, bitbucket.py), so they are never what bounds a benchmark.

In one process, without sockets: each product serves an org of N users (all in one group),
and the test counts the Python lines the simulator executes (sys.settrace "line" events in
tests/fakes/sim/*.py; a count, not a time, so it holds on a loaded machine) for a page of
the user list, a page of the group's members and an account creation, at N = 400 and at
N = 1600. A page or a creation that sorted or scanned every user (as they did: a sort of the
whole member list on every page, a licence count or a slug set over every user on every
creation) costs about 4 times as much at the larger size; the bound allows 1.5 times.
It also checks that what the listings show follows every kind of change (the views behind
them are built once between changes): a new member, a rename, a deactivation, a deletion
finished by a long task on a GET, a state upload.
"""

import base64
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fake import Runner, product_class  # noqa: E402
from sim.common import Headers, Request, Server  # noqa: E402

SIM_DIR = os.path.join(HERE, "sim") + os.sep
BASIC = "Basic " + base64.b64encode(b"admin:admin").decode()


def eq(a, b, msg=""):
    if a != b:
        raise AssertionError("%r != %r %s" % (a, b, msg))


class Sim:
    """A product's Server driven in process."""

    def __init__(self, product, state):
        self.srv = Server(product_class(product), port=0, state=state)
        self.srv.tcp.server_close()

    def call(self, method, target, body=None):
        h = Headers()
        h.add("Authorization", BASIC)
        if method != "GET":
            h.add("X-Atlassian-Token", "no-check")
        raw = b""
        if body is not None:
            h.add("Content-Type", "application/json")
            raw = json.dumps(body).encode()
        resp = self.srv.dispatch(Request(method, target, h, raw, self.srv.base_url))
        if resp.status >= 400:
            raise AssertionError("%s %s -> %d %s" % (method, target, resp.status, resp.body))
        return json.loads(resp.body) if resp.body else None

    def cost(self, method, target, body=None):
        """Lines of simulator code executed to serve one request."""
        n = [0]

        def tracer(frame, event, arg):
            if not frame.f_code.co_filename.startswith(SIM_DIR):
                return None

            def local(frame, event, arg):
                if event == "line":
                    n[0] += 1
                return local
            return local
        sys.settrace(tracer)
        try:
            self.call(method, target, body)
        finally:
            sys.settrace(None)
        return n[0]


def names(n):
    return ["user%05d" % i for i in range(n)]


def jira_state(n):
    us = names(n)
    return {"users": [{"name": "admin", "key": "admin", "displayName": "Administrator",
                       "emailAddress": "admin@example.com", "active": True}]
            + [{"name": u, "displayName": u, "emailAddress": u + "@example.com", "active": True}
               for u in us],
            "groups": ["all"], "members": {"all": us}, "projects": [], "components": []}


def confluence_state(n):
    us = names(n)
    return {"users": [{"username": "admin", "displayName": "Administrator",
                       "email": "admin@example.com", "disabled": False}]
            + [{"username": u, "displayName": u, "email": u + "@example.com", "disabled": False}
               for u in us],
            "groups": ["all"], "members": {"all": us}, "license": {"seats": 10 * n}}


def bitbucket_state(n):
    us = names(n)
    return {"users": [{"name": "admin", "slug": "admin", "id": 1, "displayName": "Administrator",
                       "emailAddress": "admin@example.com"}]
            + [{"name": u, "slug": u, "id": i + 2, "displayName": u,
                "emailAddress": u + "@example.com"} for i, u in enumerate(us)],
            "groups": ["all", "stash-users", "few"],
            "members": {"all": us, "stash-users": us, "few": us[:10]},
            "license": {"seats": 10 * n, "groups": ["stash-users"]}}


# Per product: the state builder and the requests whose cost must not grow. A page is read
# twice (the first may build the view; the second is what every further page costs) and a
# creation is counted after a listing, as in a sync (reads, then writes).
CASES = {
    "jira": (jira_state, [
        ("user list page", "GET", "/rest/api/2/user/list?maxResults=50", None),
        ("group member page", "GET",
         "/rest/api/2/group/member?groupname=all&startAt=100&maxResults=50", None),
        ("create", "POST", "/rest/api/2/user",
         lambda i: {"name": "new%d" % i, "displayName": "New", "emailAddress": "n@example.com"}),
        ("add member", "POST", "/rest/api/2/group/user?groupname=all",
         lambda i: {"name": "admin"}),
    ]),
    "confluence": (confluence_state, [
        ("user list page", "GET", "/rest/api/user/list?start=100&limit=50", None),
        ("group member page", "GET", "/rest/api/group/all/member?start=100&limit=50", None),
        ("create", "POST", "/rest/api/admin/user",
         lambda i: {"userName": "new%d" % i, "fullName": "New", "email": "n@example.com",
                    "notifyViaEmail": True}),
    ]),
    "bitbucket": (bitbucket_state, [
        ("user list page", "GET", "/rest/api/1.0/admin/users?start=100&limit=50", None),
        ("group member page", "GET",
         "/rest/api/1.0/admin/groups/more-members?context=all&start=100&limit=50", None),
        ("small group, first read", "GET",
         "/rest/api/1.0/admin/groups/more-members?context=few&limit=50", None),
        ("create", "POST", "/rest/api/1.0/admin/users?name=new{i}&displayName=New"
                           "&emailAddress=n@example.com&password=pw", None),
    ]),
}


def costs(product, n):
    build, reqs = CASES[product]
    sim = Sim(product, build(n))
    out = {}
    for i, (label, method, target, body) in enumerate(reqs):
        if method == "GET" and "first read" in label:
            out[label] = sim.cost(method, target)  # builds the group's view: its members only
        elif method == "GET":
            sim.call(method, target)
            out[label] = sim.cost(method, target)
        else:
            # after a listing, as in a sync; the first write may rebuild nothing
            sim.call("GET", reqs[0][2])
            t = target.replace("{i}", str(i))
            out[label] = sim.cost(method, t, body(i) if body else None)
    return out


def flat_cost(product):
    small, large = costs(product, 400), costs(product, 1600)
    for label in small:
        s, l_ = small[label], large[label]
        print("     %-10s %-18s %6d lines at 400 users, %6d at 1600" % (product, label, s, l_))
        if l_ > 1.5 * s + 50:
            raise AssertionError("%s %s: %d lines at 1600 users against %d at 400: the work "
                                 "grows with the org" % (product, label, l_, s))


def jira_views_follow_changes():
    sim = Sim("jira", jira_state(120))
    page = "/rest/api/2/group/member?groupname=all&startAt=0&maxResults=50"

    def first_names():
        return [u["name"] for u in sim.call("GET", page)["values"]]
    eq(first_names()[:2], ["user00000", "user00001"])
    sim.call("POST", "/rest/api/2/user", {"name": "aaa", "displayName": "A",
                                          "emailAddress": "a@example.com"})
    sim.call("POST", "/rest/api/2/group/user?groupname=all", {"name": "aaa"})
    eq(first_names()[:2], ["aaa", "user00000"], "a new member shows")
    sim.call("PUT", "/rest/api/2/user?username=user00000", {"active": False})
    eq(first_names()[:2], ["aaa", "user00001"], "a deactivated member leaves the active list")
    sim.call("PUT", "/rest/api/2/user?username=aaa", {"name": "zzz"})
    eq(first_names()[0], "user00001", "a renamed member moves")
    eq(sim.call("GET", "/rest/api/2/user/list?maxResults=2000")["values"][-1]["name"], "zzz")
    users = sim.call("GET", "/rest/api/2/user/list?maxResults=2000")["values"]
    eq({u["name"]: u["groups"]["size"] for u in users}["user00005"], 1)
    sim.call("DELETE", "/rest/api/2/group/user?groupname=all&username=user00005")
    users = sim.call("GET", "/rest/api/2/user/list?maxResults=2000")["values"]
    eq({u["name"]: u["groups"]["size"] for u in users}["user00005"], 0, "group counts follow")
    sim.srv.product.load_state(jira_state(3))
    eq(len(sim.call("GET", page)["values"]), 3, "a state upload replaces the views")


def confluence_views_follow_changes():
    sim = Sim("confluence", confluence_state(30))
    members = "/rest/api/group/all/member?limit=200"
    eq(len(sim.call("GET", members)["results"]), 30)
    eq(len(sim.call("GET", "/rest/api/user/list?limit=100")["results"]), 31)
    task = sim.call("DELETE", "/rest/api/admin/user/user00003")
    for _ in range(50):  # the deletion finishes on a GET: the long task's polls
        if sim.call("GET", task["statusPath"])["finished"]:
            break
    names_ = [r["username"] for r in sim.call("GET", members)["results"]]
    eq(len(names_), 29, "a deletion finished by a long task leaves the member list")
    eq("user00003" in names_, False)
    eq(len(sim.call("GET", "/rest/api/user/list?limit=100")["results"]), 30)
    sim.call("POST", "/rest/api/admin/group", {"name": "aaa"})
    eq(sim.call("GET", "/rest/api/group?limit=200")["results"][0]["name"], "aaa")


def confluence_seats_follow_changes():
    st = confluence_state(3)
    st["license"] = {"seats": 5}  # admin + 3 take 4
    sim = Sim("confluence", st)
    new = {"userName": "n1", "fullName": "N", "email": "n@example.com", "notifyViaEmail": True}
    sim.call("POST", "/rest/api/admin/user", new)
    try:
        sim.call("POST", "/rest/api/admin/user", dict(new, userName="n2"))
        raise AssertionError("a sixth seat was given")
    except AssertionError as e:
        if "-> 402" not in str(e):
            raise
    sim.call("PUT", "/rest/api/admin/user/n1/disable")
    sim.call("PUT", "/rest/api/admin/user/n1/disable")  # idempotent: one seat freed, not two
    sim.call("POST", "/rest/api/admin/user", dict(new, userName="n2"))
    try:
        sim.call("PUT", "/rest/api/admin/user/n1/enable")
        raise AssertionError("enabled past the licence")
    except AssertionError as e:
        if "-> 402" not in str(e):
            raise


def bitbucket_views_follow_changes():
    sim = Sim("bitbucket", bitbucket_state(30))
    members = "/rest/api/1.0/admin/groups/more-members?context=all&limit=1000"
    eq(len(sim.call("GET", members)["values"]), 30)
    sim.call("POST", "/rest/api/1.0/admin/users?name=aaa&displayName=A"
                     "&emailAddress=a@example.com&password=pw")
    sim.call("POST", "/rest/api/1.0/admin/groups/add-users", {"group": "all", "users": ["aaa"]})
    eq(sim.call("GET", members)["values"][0]["name"], "aaa", "a new member shows")
    sim.call("POST", "/rest/api/1.0/admin/users/rename", {"name": "aaa", "newName": "user00001x"})
    eq([u["slug"] for u in sim.call("GET", members)["values"][:3]],
       ["user00000", "user00001", "user00001x"], "a renamed member moves, with its new slug")
    sim.call("DELETE", "/rest/api/1.0/admin/users?name=user00001x")
    sim.call("POST", "/rest/api/1.0/admin/users?name=User00001X&displayName=A"
                     "&emailAddress=a@example.com&password=pw")
    users = sim.call("GET", "/rest/api/1.0/admin/users?filter=user00001x")["values"]
    eq([u["slug"] for u in users], ["user00001x"], "a deleted user's slug is free again")
    eq(len(sim.call("GET", members)["values"]), 30)
    # a write's own answer is built after the write, not taken from a listing before it
    eq(sim.call("PUT", "/rest/api/1.0/admin/users", {"name": "user00002",
                                                     "displayName": "Renamed Two"})
       ["displayName"], "Renamed Two", "an update answers with the new details")
    eq(sim.call("POST", "/rest/api/1.0/admin/users/rename",
                {"name": "user00002", "newName": "two"})["slug"], "two",
       "a rename answers with the new slug")


def main():
    t = Runner()
    for p in ("jira", "confluence", "bitbucket"):
        t.run("%s_cost_per_request_is_flat" % p, flat_cost, p)
    t.run("jira_views_follow_changes", jira_views_follow_changes)
    t.run("confluence_views_follow_changes", confluence_views_follow_changes)
    t.run("confluence_seats_follow_changes", confluence_seats_follow_changes)
    t.run("bitbucket_views_follow_changes", bitbucket_views_follow_changes)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
