#!/usr/bin/env python3
"""Behaviour tests of the Bitbucket DC simulator (sim/bitbucket.py).

Starts `fake.py bitbucket` on a free port (bounded, killed at the end). Covers auth, XSRF,
create through query parameters (a JSON body does not count), 409s, rename, delete-self 409,
bulk membership, the swapped context/itemName of remove-group and remove-user, and
start/limit/isLastPage/nextPageStart paging at exactly a page size and one over, the spec's
media types, and the global permissions of users (admin/permissions/users).
Last line "N passed, N failed"; non-zero exit on failure.
"""

import base64
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake import Fake, Runner  # noqa: E402

API = "/rest/api/1.0"
BASIC = "Basic " + base64.b64encode(b"admin:admin").decode()
AUTH = {"Authorization": BASIC}
WRITE = {"Authorization": BASIC, "X-Atlassian-Token": "no-check"}


def user(name):
    return {"name": name, "displayName": name.title(), "emailAddress": name + "@example.com"}


def state(users=(), groups=(), members=None):
    return {"users": [{"name": "admin", "slug": "admin", "id": 1, "displayName": "Admin",
                       "emailAddress": "admin@example.com"}] + list(users),
            "groups": list(groups), "members": members or {}}


def check(cond, msg=""):
    if not cond:
        raise AssertionError(msg)


def eq(a, b, msg=""):
    if a != b:
        raise AssertionError("%r != %r %s" % (a, b, msg))


def is_error(r, status):
    eq(r.status, status, r.body)
    e = r.json()["errors"]
    check(isinstance(e, list) and e, e)
    for item in e:
        check(set(item) == {"context", "message", "exceptionName"}, item)
        check(isinstance(item["message"], str) and item["message"], item)


def main():
    t = Runner()
    with Fake("bitbucket") as f:
        def get(path, headers=AUTH, api=API):
            return f.request("GET", api + path, headers=headers)

        def send(method, path, body=None, headers=WRITE):
            return f.request(method, API + path, body=body, headers=headers)

        def create(**q):
            return send("POST", "/admin/users?" + urllib.parse.urlencode(q))

        def collect(path, limit):
            out, pages, start = [], 0, 0
            while True:
                sep = "&" if "?" in path else "?"
                b = get("%s%sstart=%d&limit=%d" % (path, sep, start, limit)).json()
                pages += 1
                out += b["values"]
                eq(b["size"], len(b["values"]))
                if b["isLastPage"]:
                    check("nextPageStart" not in b, b)
                    return out, pages
                start = b["nextPageStart"]

        def auth():
            r = get("/admin/users", headers={})
            is_error(r, 401)
            r = get("/admin/users", headers={"Authorization": "Basic " + base64.b64encode(
                b"admin:no").decode()})
            is_error(r, 401)
            r = get("/admin/users", headers={"Authorization": "Bearer test-token"})
            eq(r.status, 200)
            # every authenticated answer names the account (a token's owner included)
            eq((r.header("X-AUSERNAME"), r.header("X-AUSERID")), ("admin", "1"))
            eq(get("/application-properties", headers={}).header("X-AUSERNAME"), None)
            eq(get("/admin/users", api="/rest/api/latest").status, 200, "latest alias")
            eq(get("/application-properties", headers={}).json()["version"], "9.5.0")
            r = send("POST", "/admin/groups?name=g", headers=AUTH)
            eq(r.status, 403)
            eq(r.body, b"XSRF check failed")
        t.run("auth_and_xsrf", auth)

        def create_query_params():
            f.put_state(state([user("alice")], ["stash-users"], {}))
            r = send("POST", "/admin/users", {"name": "bob", "displayName": "Bob",
                                              "emailAddress": "bob@example.com",
                                              "password": "pw"})
            is_error(r, 400)  # JSON body is not read: the parameters are missing
            r = create(name="bob", displayName="Bob", emailAddress="bob@example.com",
                       password="pw")
            eq(r.status, 204)
            eq(r.body, b"")
            r = create(name="carl", displayName="Carl", emailAddress="c@example.com")
            is_error(r, 400)  # no password and no notify
            eq(r.json()["errors"][0]["context"], "password")
            r = create(name="carl", displayName="Carl", emailAddress="c@example.com",
                       notify="true", addToDefaultGroup="false")
            eq(r.status, 204)
            is_error(create(name="ALICE", displayName="A", emailAddress="a@example.com",
                            password="x"), 409)
            st = f.state()
            eq([u["name"] for u in st["users"]], ["admin", "alice", "bob", "carl"])
            eq(st["members"]["stash-users"], ["bob"], "default group only when asked")
            b = get("/admin/users?filter=bob").json()
            eq([u["name"] for u in b["values"]], ["bob"])
            u = b["values"][0]
            eq((u["slug"], u["active"], u["type"]), ("bob", True, "NORMAL"))
            check(isinstance(u["id"], int))
        t.run("create_with_query_parameters", create_query_params)

        def update_rename_delete():
            f.put_state(state([user("alice"), user("bob")], ["devs"], {"devs": ["alice"]}))
            r = send("PUT", "/admin/users", {"name": "alice", "displayName": "Alice A",
                                             "email": "aa@example.com"})
            eq(r.status, 200)
            eq((r.json()["displayName"], r.json()["emailAddress"]),
               ("Alice A", "aa@example.com"))
            is_error(send("PUT", "/admin/users", {"name": "ghost", "displayName": "G"}), 404)
            r = send("POST", "/admin/users/rename", {"name": "alice", "newName": "Alice.New"})
            eq(r.status, 200)
            eq((r.json()["name"], r.json()["slug"]), ("Alice.New", "alice.new"))
            eq(f.state()["members"]["devs"], ["Alice.New"])
            is_error(send("POST", "/admin/users/rename", {"name": "bob",
                                                          "newName": "alice.new"}), 409)
            r = send("DELETE", "/admin/users?name=bob")
            eq(r.status, 200)
            eq(r.json()["name"], "bob", "delete returns the deleted user")
            is_error(send("DELETE", "/admin/users?name=bob"), 404)
            is_error(send("DELETE", "/admin/users?name=admin"), 409)
        t.run("update_rename_delete", update_rename_delete)

        def groups():
            f.put_state(state([user("alice")]))
            r = send("POST", "/admin/groups?name=devs")
            eq(r.status, 200)
            eq(r.json(), {"name": "devs", "deletable": True})
            is_error(send("POST", "/admin/groups?name=DEVS"), 409)
            is_error(send("POST", "/admin/groups", {"name": "x"}), 400)
            r = send("DELETE", "/admin/groups?name=devs")
            eq(r.status, 200)
            eq(r.json()["name"], "devs")
            is_error(send("DELETE", "/admin/groups?name=devs"), 404)
        t.run("group_create_delete", groups)

        def membership():
            f.put_state(state([user("alice"), user("bob")], ["devs", "ops"]))
            eq(send("POST", "/admin/groups/add-users",
                    {"group": "devs", "users": ["alice", "bob"]}).status, 200)
            eq(send("POST", "/admin/users/add-groups",
                    {"user": "alice", "groups": ["ops", "devs"]}).status, 200)
            is_error(send("POST", "/admin/groups/add-users",
                          {"group": "devs", "users": ["bob", "ghost"]}), 404)
            eq(f.state()["members"], {"devs": ["alice", "bob"], "ops": ["alice"]})
            b = get("/admin/users/more-members?context=alice").json()
            eq([g["name"] for g in b["values"]], ["devs", "ops"])
            b = get("/admin/groups/more-members?context=devs").json()
            eq([u["name"] for u in b["values"]], ["alice", "bob"])
            b = get("/admin/groups/more-non-members?context=ops").json()
            eq([u["name"] for u in b["values"]], ["admin", "bob"])
            # remove-group: context = user, itemName = group. The swapped form fails.
            is_error(send("POST", "/admin/users/remove-group",
                          {"context": "devs", "itemName": "alice"}), 404)
            eq(send("POST", "/admin/users/remove-group",
                    {"context": "alice", "itemName": "devs"}).status, 200)
            # deprecated remove-user: context = group, itemName = user.
            is_error(send("POST", "/admin/groups/remove-user",
                          {"context": "bob", "itemName": "devs"}), 404)
            eq(send("POST", "/admin/groups/remove-user",
                    {"context": "devs", "itemName": "bob"}).status, 200)
            eq(f.state()["members"], {"devs": [], "ops": ["alice"]})
            is_error(get("/admin/groups/more-members?context=nope"), 404)
        t.run("membership_swapped_context", membership)

        def paging():
            us = [user("u%02d" % i) for i in range(24)]     # + admin = 25 = one default page
            f.put_state(state(us))
            b = get("/admin/users").json()
            eq((b["size"], b["limit"], b["isLastPage"], b["start"]), (25, 25, True, 0))
            check("nextPageStart" not in b)
            f.put_state(state(us + [user("zz")]))
            b = get("/admin/users").json()
            eq((b["size"], b["isLastPage"], b["nextPageStart"]), (25, False, 25))
            allu, pages = collect("/admin/users", 25)
            eq((len(allu), pages), (26, 2))
            eq(len({u["name"] for u in allu}), 26)
            allu, pages = collect("/admin/users", 5)
            eq((len(allu), pages), (26, 6))
            gs = ["g%02d" % i for i in range(26)]
            f.put_state(state(us, gs, {"g00": [u["name"] for u in us]}))
            allg, pages = collect("/admin/groups", 25)
            eq((len(allg), pages), (26, 2))
            allm, pages = collect("/admin/groups/more-members?context=g00", 24)
            eq((len(allm), pages), (24, 1))
            allm, pages = collect("/admin/groups/more-members?context=g00", 23)
            eq((len(allm), pages), (24, 2))
            eq(get("/admin/users?limit=5000").json()["limit"], 1000, "limit capped")
            is_error(get("/admin/users?start=abc"), 400)
        t.run("start_limit_paging", paging)

        def rate_limited():
            f.put_state(state())
            f.faults(rate_limit_per_min=60, rate_limit_burst=1)
            try:
                r = get("/admin/users")
                eq((r.status, r.header("X-RateLimit-Remaining")), (200, "0"))
                r = get("/admin/users")
                is_error(r, 429)
                eq(r.header("retry-after"), "1")
            finally:
                f.faults()
        t.run("rate_limit", rate_limited)

        def licence_seats():
            st = state([user("ann"), user("ben"), user("cal")], ["stash-users", "devs"],
                       {"stash-users": ["admin", "ann"], "devs": ["ben"]})
            st["license"] = {"seats": 3}
            f.put_state(st)
            eq(f.state()["license"], {"seats": 3, "groups": ["stash-users"]})
            # create with the default group: admin + ann + new = 3 fits, the next does not
            eq(create(name="dan", displayName="Dan", emailAddress="d@example.com",
                      password="pw").status, 204)
            f.clear_requests()
            r = create(name="eve", displayName="Eve", emailAddress="e@example.com",
                       password="pw")
            is_error(r, 403)
            eq(r.json()["errors"][0]["message"], "Adding the user to the default group would "
               "exceed the server's license limit.")
            eq(r.json()["errors"][0]["exceptionName"],
               "com.atlassian.bitbucket.license.LicenseLimitExceededException")
            check("eve" not in [u["name"] for u in f.state()["users"]], "not created")
            eq([x["status"] for x in f.requests()], [403])
            # without the default group the user takes no seat
            eq(create(name="eve", displayName="Eve", emailAddress="e@example.com",
                      password="pw", addToDefaultGroup="false").status, 204)
            # add-users / add-groups past the limit: 403, nothing changes
            lim = "The action was disallowed as it would exceed the server's licensing limit."
            r = send("POST", "/admin/groups/add-users", {"group": "stash-users",
                                                         "users": ["ben", "cal"]})
            is_error(r, 403)
            eq(r.json()["errors"][0]["message"], lim)
            r = send("POST", "/admin/users/add-groups", {"user": "ben",
                                                         "groups": ["devs", "stash-users"]})
            is_error(r, 403)
            r = send("POST", "/admin/groups/add-user", {"context": "stash-users",
                                                        "itemName": "ben"})
            is_error(r, 403)
            eq(f.state()["members"]["stash-users"], ["admin", "ann", "dan"])
            eq(f.state()["members"]["devs"], ["ben"])
            # non-granting groups and already-licensed users are free
            eq(send("POST", "/admin/groups/add-users", {"group": "devs",
                                                        "users": ["cal", "ann"]}).status, 200)
            eq(send("POST", "/admin/groups/add-users", {"group": "stash-users",
                                                        "users": ["ann"]}).status, 200)
            # removing a licensed user frees the seat
            eq(send("POST", "/admin/users/remove-group", {"context": "dan",
                                                          "itemName": "stash-users"}).status, 200)
            eq(send("POST", "/admin/users/add-groups", {"user": "ben",
                                                        "groups": ["stash-users"]}).status, 200)
            # a state over the limit is refused and changes nothing
            before = f.state()
            st["license"] = {"seats": 1}
            eq(f.request("PUT", "/__fake/state", body=st).status, 400)
            st["license"] = {"seats": 1, "groups": "stash-users"}
            eq(f.request("PUT", "/__fake/state", body=st).status, 400)
            eq(f.state(), before)
        t.run("licence_seats_403", licence_seats)

        def injected_429():
            f.faults(fail_rate=1.0, fail_status=429, fail_retry_after=2)
            try:
                r = get("/admin/users")
                is_error(r, 429)
                eq((r.header("retry-after"), r.header("X-RateLimit-Remaining")), ("2", "0"))
            finally:
                f.faults()
        t.run("injected_429_retry_after", injected_429)

        def media_types():
            # The spec's media type of every JSON success is application/json;charset=UTF-8;
            # errors are application/json; the membership writes' 200s have no body and no
            # media type (an empty body is not JSON).
            f.put_state(state([user("alice")], ["devs"]))
            utf8 = "application/json;charset=UTF-8"
            for r in (get("/admin/users"), get("/admin/groups"),
                      get("/admin/users/more-members?context=alice"),
                      get("/admin/groups/more-non-members?context=devs"),
                      get("/admin/permissions/users"), get("/application-properties"),
                      send("PUT", "/admin/users", {"name": "alice", "displayName": "A"}),
                      send("POST", "/admin/groups?name=ops"),
                      send("DELETE", "/admin/groups?name=ops")):
                eq((r.status, r.header("Content-Type")), (200, utf8), r.body)
            for path, body in (("/admin/groups/add-users", {"group": "devs", "users": ["alice"]}),
                               ("/admin/users/add-groups", {"user": "alice", "groups": ["devs"]}),
                               ("/admin/users/remove-group", {"context": "alice",
                                                              "itemName": "devs"}),
                               ("/admin/groups/add-user", {"context": "devs",
                                                           "itemName": "alice"}),
                               ("/admin/groups/remove-user", {"context": "devs",
                                                              "itemName": "alice"})):
                r = send("POST", path, body)
                eq((r.status, r.header("Content-Type"), r.body), (200, None, b""), path)
            r = send("POST", "/admin/groups/add-users", {"group": "nope", "users": ["alice"]})
            is_error(r, 404)
            eq(r.header("Content-Type"), "application/json")
        t.run("success_media_type_charset_utf8", media_types)

        def permissions_users():
            # GET admin/permissions/users: a page of {user, permission} for users with a
            # direct global grant; filter = name contains; 401 unless the caller is an admin.
            us = [user("ann"), user("annette"), user("bob"), user("cal")]
            f.put_state(state(us))
            b = get("/admin/permissions/users").json()
            eq([(v["user"]["name"], v["permission"]) for v in b["values"]],
               [("admin", "SYS_ADMIN")], "default: the admin's SYS_ADMIN")
            eq((b["size"], b["isLastPage"], b["start"]), (1, True, 0))
            u = b["values"][0]["user"]
            eq((u["slug"], u["id"], u["active"], u["type"]), ("admin", 1, True, "NORMAL"))
            st = state(us)
            st["permissions"] = {"admin": "ADMIN", "ann": "PROJECT_CREATE",
                                 "annette": "LICENSED_USER", "cal": "SYS_ADMIN"}
            f.put_state(st)
            eq(f.state()["permissions"], st["permissions"])
            b = get("/admin/permissions/users?filter=ANN").json()
            eq([(v["user"]["name"], v["permission"]) for v in b["values"]],
               [("ann", "PROJECT_CREATE"), ("annette", "LICENSED_USER")])
            b = get("/admin/permissions/users?filter=admin&limit=1000").json()
            eq([(v["user"]["name"], v["permission"]) for v in b["values"]], [("admin", "ADMIN")])
            allp, pages = collect("/admin/permissions/users", 3)
            eq(([v["user"]["name"] for v in allp], pages), (["admin", "ann", "annette", "cal"], 2))
            eq(send("DELETE", "/admin/users?name=cal").status, 200)
            eq([v["user"]["name"] for v in get("/admin/permissions/users").json()["values"]],
               ["admin", "ann", "annette"], "a deleted user's grant goes with it")
            st["permissions"] = {"admin": "PROJECT_CREATE"}
            f.put_state(st)
            r = get("/admin/permissions/users")
            is_error(r, 401)
            eq(r.json()["errors"][0]["message"], "You are not permitted to access this resource")
            st["permissions"] = {"admin": "REPO_GOD"}
            eq(f.request("PUT", "/__fake/state", body=st).status, 400)
            st["permissions"] = {"ghost": "ADMIN"}
            eq(f.request("PUT", "/__fake/state", body=st).status, 400)
        t.run("admin_permissions_users", permissions_users)

    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
