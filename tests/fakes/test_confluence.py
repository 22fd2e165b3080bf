#!/usr/bin/env python3
"""Behaviour tests of the Confluence DC simulator (sim/confluence.py).

Starts `fake.py confluence` on a free port (bounded, killed at the end). Covers auth, XSRF,
the lower-case user name rule, 409 on duplicates, 402 when licence seats run out, idempotent
disable/enable and membership calls, the long-task delete, and `_links.next` paging at exactly
a page size and one over, all under the /confluence context path (reference section 0); also
the root context, the HTML 401 for bad credentials, the seat-checked enable, the failed and
stalled long tasks and injected 429s. Last line "N passed, N failed"; non-zero exit on failure.
"""

import base64
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake import Fake, Runner  # noqa: E402

CTX = "/confluence"
API = CTX + "/rest/api"
BASIC = "Basic " + base64.b64encode(b"admin:admin").decode()
AUTH = {"Authorization": BASIC}
WRITE = {"Authorization": BASIC, "X-Atlassian-Token": "no-check"}


def user(name, disabled=False):
    return {"username": name, "displayName": name.title(), "email": name + "@example.com",
            "disabled": disabled}


def state(users=(), groups=(), members=None, seats=None, context=CTX):
    return {"users": [user("admin")] + list(users), "groups": list(groups),
            "members": members or {}, "license": {"seats": seats}, "context": context}


def check(cond, msg=""):
    if not cond:
        raise AssertionError(msg)


def eq(a, b, msg=""):
    if a != b:
        raise AssertionError("%r != %r %s" % (a, b, msg))


def is_rest_error(r, status):
    b = r.json()
    eq(b["statusCode"], status)
    check(isinstance(b["message"], str) and b["message"], b)
    check(isinstance(b["reason"], str), b)
    check(isinstance(b["data"], dict) and b["data"]["successful"] is False, b)


def main():
    t = Runner()
    with Fake("confluence", state=state()) as f:
        def get(path, headers=AUTH):
            return f.request("GET", API + path, headers=headers)

        def send(method, path, body=None, headers=WRITE):
            return f.request(method, API + path, body=body, headers=headers)

        def create(name, **kw):
            body = {"userName": name, "fullName": kw.get("full", name.title()),
                    "email": kw.get("email", name + "@example.com")}
            if kw.get("password", "pw"):
                body["password"] = kw.get("password", "pw")
            return send("POST", "/admin/user", body)

        def follow(r):
            """All results of a paged listing, following _links.next (relative to base)."""
            out, pages = [], 0
            while True:
                b = r.json()
                pages += 1
                out += b["results"]
                nxt = b["_links"].get("next")
                if not nxt:
                    return out, pages
                check(nxt.startswith("/rest/api/"), nxt)
                r = f.request("GET", b["_links"]["base"] + nxt, headers=AUTH)

        def auth():
            r = get("/user/list", headers={})
            eq(r.status, 401)
            is_rest_error(r, 401)
            eq(r.header("WWW-Authenticate"), 'OAuth realm="%s"' % (
                (f.url + CTX).replace(":", "%3A").replace("/", "%2F")))
            for h in ("Basic " + base64.b64encode(b"admin:x").decode(), "Bearer nope"):
                r = get("/user/list", headers={"Authorization": h})
                eq(r.status, 401)
                check(r.header("Content-Type").startswith("text/html"), r.headers)
                check(b"<title>Unauthorized (401)</title>" in r.body, r.body)
                eq(r.header("X-Seraph-LoginReason"), "AUTHENTICATED_FAILED")
            f.faults(html_auth_errors=False)
            try:
                r = get("/user/list", headers={"Authorization": "Bearer nope"})
                is_rest_error(r, 401)
            finally:
                f.faults()
            eq(get("/user/list", headers={"Authorization": "Bearer test-token"}).status, 200)
            r = send("POST", "/admin/group", {"name": "g"}, headers=AUTH)
            eq(r.status, 403)
            eq(r.body, b"XSRF check failed")
            eq(get("/server-information").json()["version"], "10.0.3")
        t.run("auth_and_xsrf", auth)

        def create_rules():
            f.put_state(state([user("alice")]))
            r = create("Bob")
            eq(r.status, 400, "upper case user names are refused")
            is_rest_error(r, 400)
            for bad in ("bo b", "bo+b", "bo,b", "b<b", "anonymous", "o'neil"):
                eq(create(bad).status, 400, bad)
            eq(create("carol", password=None).status, 400, "password or notifyViaEmail")
            r = send("POST", "/admin/user", {"userName": "dave", "fullName": "Dave",
                                             "email": "d@example.com", "notifyViaEmail": True})
            eq(r.status, 201)
            check(len(r.json()["userKey"]) == 32, r.json())
            r = create("alice")
            eq(r.status, 409)
            is_rest_error(r, 409)
            r = get("/user?username=dave&expand=status")
            eq(r.json()["status"], "Active")
            eq(r.json()["type"], "known")
            check("email" not in r.json(), "DC Person carries no e-mail")
            eq(get("/user?key=" + r.json()["userKey"]).json()["username"], "dave")
            eq(get("/user?username=ghost").status, 404)
        t.run("create_lowercase_409", create_rules)

        def seats():
            f.put_state(state([user("a"), user("b", disabled=True)], seats=3))
            eq(create("c").status, 201, "admin + a + c = 3 seats, b is disabled")
            r = create("d")
            eq(r.status, 402)
            is_rest_error(r, 402)
            eq(send("PUT", "/admin/user/a/disable").status, 204)
            eq(create("d").status, 201, "disabling frees a seat")
            names = sorted(u["username"] for u in f.state()["users"])
            eq(names, ["a", "admin", "b", "c", "d"])
            eq(f.state()["license"], {"seats": 3})
            # M5: enable past the limit is 402 too; enabling an enabled user takes no seat
            r = send("PUT", "/admin/user/b/enable")
            eq(r.status, 402)
            is_rest_error(r, 402)
            check("licence user limit (3)" in r.json()["message"], r.body)
            eq([u["disabled"] for u in f.state()["users"] if u["username"] == "b"], [True])
            eq(send("PUT", "/admin/user/c/enable").status, 204)
            eq(send("PUT", "/admin/user/c/disable").status, 204)
            eq(send("PUT", "/admin/user/b/enable").status, 204, "a freed seat")
            # load_state refuses more enabled users than seats, and changes nothing
            before = f.state()
            r = f.request("PUT", "/__fake/state", body=state([user("a"), user("b")], seats=2))
            eq(r.status, 400)
            check("seats" in r.json()["error"], r.body)
            eq(f.state(), before)
        t.run("licence_seats_402", seats)

        def update_disable():
            f.put_state(state([user("alice")]))
            eq(send("PUT", "/admin/user/alice", {"fullName": "Alice A",
                                                 "email": "aa@example.com"}).status, 204)
            u = f.state()["users"][1]
            eq((u["displayName"], u["email"]), ("Alice A", "aa@example.com"))
            for _ in range(2):
                eq(send("PUT", "/admin/user/alice/disable").status, 204)
            eq(get("/user?username=alice&expand=status").json()["status"], "Deactivated")
            for _ in range(2):
                eq(send("PUT", "/admin/user/alice/enable").status, 204)
            eq(f.state()["users"][1]["disabled"], False)
            eq(send("PUT", "/admin/user/ghost/disable").status, 404)
        t.run("update_disable_enable_idempotent", update_disable)

        def long_task_delete():
            f.put_state(state([user("alice")], ["devs"], {"devs": ["alice"]}))
            r = send("DELETE", "/admin/user/alice")
            eq(r.status, 202)
            sub = r.json()
            check(sub["id"] and sub["links"]["status"], sub)
            eq(get("/user?username=alice").status, 200, "still there while the task runs")
            status_url = sub["links"]["status"]
            seen = []
            for _ in range(10):
                s = f.request("GET", status_url, headers=AUTH).json()
                seen.append((s["percentageComplete"], s["finished"], s["successful"]))
                if s["finished"]:
                    break
            check(len(seen) >= 2 and not seen[0][1], "reports progress first: %r" % seen)
            eq(seen[-1], (100, True, True))
            check(seen[0][0] < 100, seen)
            eq(get("/user?username=alice").status, 404)
            eq(f.state()["members"]["devs"], [])
            eq(send("DELETE", "/admin/user/alice").status, 404)
            eq(get("/longtask/nope").status, 404)
        t.run("long_task_delete", long_task_delete)

        def long_task_by_time():
            f.put_state(state([user("bob")]))
            eq(send("DELETE", "/admin/user/bob").status, 202)
            f.request("PUT", "/__fake/clock", body={"advance": 5})
            eq(get("/user?username=bob").status, 404, "the task finishes without polling")
        t.run("long_task_finishes_in_time", long_task_by_time)

        def long_task_fail_and_stall():
            f.put_state(state([user("carl"), user("dina")]))
            f.faults(confluence_longtask="fail")
            try:
                sub = send("DELETE", "/admin/user/carl").json()
                for _ in range(5):
                    st = f.request("GET", sub["links"]["status"], headers=AUTH).json()
                    if st["finished"]:
                        break
                eq((st["finished"], st["successful"], st["percentageComplete"]),
                   (True, False, 100))
                eq(st["messages"][0]["translation"], "Failed to delete user carl: the user "
                   "could not be removed from the user directory.")
                eq(get("/user?username=carl").status, 200, "a failed delete keeps the user")
                f.faults(confluence_longtask="stall")
                sub = send("DELETE", "/admin/user/dina").json()
                for _ in range(6):
                    st = f.request("GET", sub["links"]["status"], headers=AUTH).json()
                f.request("PUT", "/__fake/clock", body={"advance": 30})
                st = f.request("GET", sub["links"]["status"], headers=AUTH).json()
                eq((st["finished"], st["successful"], st["percentageComplete"]),
                   (False, False, 50))
                eq(get("/user?username=dina").status, 200)
                eq(f.request("PUT", "/__fake/faults",
                             body={"confluence_longtask": "maybe"}).status, 400)
            finally:
                f.faults()
        t.run("long_task_failed_and_stalled", long_task_fail_and_stall)

        def context_path():
            f.put_state(state([user("ann")]))
            b = get("/user?username=ann").json()
            eq((b["_links"]["base"], b["_links"]["context"]), (f.url + CTX, CTX))
            eq(get("/server-information").json()["baseUrl"], f.url + CTX)
            sub = send("DELETE", "/admin/user/ann").json()
            eq(sub["statusPath"], "/rest/api/longtask/" + sub["id"], "relative to base")
            check(sub["links"]["status"].startswith(f.url + CTX + "/rest/api/longtask/"))
            r = f.request("GET", "/rest/api/user/list", headers=AUTH)  # outside the context
            eq(r.status, 404)
            check(r.header("Content-Type").startswith("text/html"), r.headers)
            f.put_state(state([user("ann")], context=""))  # the root context still works
            b = f.request("GET", "/rest/api/user?username=ann", headers=AUTH).json()
            eq((b["_links"]["base"], b["_links"]["context"]), (f.url, ""))
            check("context" not in f.state(), "root context is not shown in the state")
            for bad in ("confluence", "/confluence/", 5):
                eq(f.request("PUT", "/__fake/state", body=state(context=bad)).status, 400, bad)
            f.put_state(state())
        t.run("context_path", context_path)

        def groups():
            f.put_state(state([user("alice")]))
            r = send("POST", "/admin/group", {"name": "Devs"})
            eq(r.status, 200, "group create is 200, not 201")
            eq(r.json()["name"], "devs")
            eq(r.json()["type"], "group")
            r = send("POST", "/admin/group", {"name": "devs"})
            eq(r.status, 409)
            eq(send("POST", "/admin/group", {}).status, 400)
            for _ in range(2):
                eq(send("PUT", "/user/alice/group/devs").status, 204)
            eq(f.state()["members"]["devs"], ["alice"])
            b = get("/user/memberof?username=alice").json()
            eq([g["name"] for g in b["results"]], ["devs"])
            b = get("/group/devs/member").json()
            eq([u["username"] for u in b["results"]], ["alice"])
            for _ in range(2):
                eq(send("DELETE", "/user/alice/group/devs").status, 204)
            eq(f.state()["members"]["devs"], [])
            eq(send("PUT", "/user/ghost/group/devs").status, 404)
            eq(send("PUT", "/user/alice/group/nope").status, 404)
            eq(send("DELETE", "/admin/group/devs").status, 204)
            eq(send("DELETE", "/admin/group/devs").status, 404)
        t.run("groups_and_idempotent_membership", groups)

        def paging():
            # user/list: default 100. admin + 99 = exactly 100, then 101.
            us = [user("u%03d" % i, disabled=(i == 5)) for i in range(99)]
            f.put_state(state(us))
            b = get("/user/list").json()
            eq((b["size"], b["limit"], b["start"]), (100, 100, 0))
            check("next" not in b["_links"], "exactly a page: no next")
            eq(b["_links"]["base"], f.url + CTX)
            eq(b["_links"]["context"], CTX)
            check(b["_links"]["self"].startswith(f.url + API + "/user/list"))
            f.put_state(state(us + [user("zzz")]))
            r = get("/user/list?expand=status")
            b = r.json()
            check(b["_links"]["next"].startswith("/rest/api/user/list?"), b["_links"])
            check("expand=status" in b["_links"]["next"], "next keeps the other parameters")
            allu, pages = follow(r)
            eq((len(allu), pages), (101, 2))
            eq(len({u["username"] for u in allu}), 101)
            check(any(u.get("status") == "Deactivated" for u in allu), "disabled listed")
            b = get("/user/list?limit=1000").json()
            eq(b["limit"], 100, "limit capped")
            # group list and members: default 200
            gs = ["g%03d" % i for i in range(200)]
            f.put_state(state(us, gs, {"g000": [u["username"] for u in us] + ["admin"]}))
            b = get("/group").json()
            eq((b["size"], "next" in b["_links"]), (200, False))
            f.put_state(state(us, gs + ["zz"]))
            allg, pages = follow(get("/group"))
            eq((len(allg), pages), (201, 2))
            allg, pages = follow(get("/group?limit=50"))
            eq((len(allg), pages), (201, 5))
            f.put_state(state(us, ["g"], {"g": [u["username"] for u in us] + ["admin"]}))
            allm, pages = follow(get("/group/g/member?limit=10"))
            eq((len(allm), pages), (100, 10))
            allm, pages = follow(get("/group/g/member?limit=99"))
            eq((len(allm), pages), (100, 2))
            eq(get("/group/g/member?start=-1").status, 400)
        t.run("links_next_paging", paging)

        def unknown():
            eq(get("/nothing").status, 404)
            is_rest_error(get("/nothing"), 404)
        t.run("unknown_path_404", unknown)

        def rate_limited():
            f.put_state(state())
            f.faults(rate_limit_per_min=60, rate_limit_burst=1)
            try:
                eq(get("/user/current").status, 200)
                r = get("/user/current")
                eq(r.status, 429)
                eq(r.header("Retry-After"), "1")
                is_rest_error(r, 429)
                f.faults(fail_rate=1.0, fail_status=429, fail_retry_after=3)
                r = get("/user/current")
                eq((r.status, r.header("Retry-After")), (429, "3"), "M6: injected 429")
                eq(r.header("X-RateLimit-Remaining"), None, "Confluence sends no such headers")
                is_rest_error(r, 429)
            finally:
                f.faults()
        t.run("rate_limit_retry_after", rate_limited)

    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
