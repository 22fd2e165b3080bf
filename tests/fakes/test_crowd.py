#!/usr/bin/env python3
"""Behaviour tests of the Crowd simulator (sim/crowd.py, rest/usermanagement/1 under /crowd).

Starts `fake.py crowd` on a free port (bounded, killed at the end). Covers application Basic
auth (401 with the error entity, Bearer refused), the address allow-list (403), JSON only on
request (XML otherwise), 415 for non-JSON bodies, the error body shape, users (create with a
password, full-object PUT that empties what is left out, rename, delete), groups, direct and
nested memberships (409 already a member, 404 for an inherited-only member, the unknown-user
empty list), directory permissions (403, nothing changed), start-index/max-results paging
without an end marker, CQL restrictions, the control interface and injected faults. Last line
"N passed, N failed"; non-zero exit on failure.
"""

import base64
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake import Fake, Runner  # noqa: E402

API = "/crowd/rest/usermanagement/1"
BASIC = "Basic " + base64.b64encode(b"admin:admin").decode()
AUTH = {"Authorization": BASIC, "Accept": "application/json"}
WRITE = dict(AUTH, **{"X-Atlassian-Token": "no-check"})


def user(name, **kw):
    u = {"name": name, "first-name": name.title(), "last-name": "Tester",
         "display-name": name.title() + " Tester", "email": name + "@example.com", "active": True}
    u.update(kw)
    return u


def check(cond, msg=""):
    if not cond:
        raise AssertionError(msg)


def eq(a, b, msg=""):
    if a != b:
        raise AssertionError("%r != %r %s" % (a, b, msg))


def is_error(r, status, reason):
    eq(r.status, status, r.body)
    b = r.json()
    eq(b["reason"], reason, b)
    check(isinstance(b["message"], str) and b["message"], b)


def q(s):
    return urllib.parse.quote(s, safe="")


def main():
    t = Runner()
    with Fake("crowd") as f:
        def reset(**st):
            st.setdefault("users", [])
            st.setdefault("groups", [])
            st.setdefault("members", {})
            f.put_state(st)
            f.clear_requests()

        def get(path, headers=AUTH):
            return f.request("GET", API + path, headers=headers)

        def send(method, path, body=None, headers=WRITE):
            return f.request(method, API + path, body=body, headers=headers)

        def state_user(name):
            for u in f.state()["users"]:
                if u["name"].lower() == name.lower():
                    return u
            return None

        def auth():
            reset(users=[user("ann")])
            r = f.request("GET", API + "/user?username=ann",
                          headers={"Accept": "application/json", "Authorization": "Basic " +
                                   base64.b64encode(b"admin:wrong").decode()})
            is_error(r, 401, "APPLICATION_ACCESS_DENIED")
            eq(r.header("WWW-Authenticate"), 'Basic realm="Crowd REST Service"')
            r = f.request("GET", API + "/user?username=ann",
                          headers={"Accept": "application/json", "Authorization": "Bearer test-token"})
            is_error(r, 401, "APPLICATION_ACCESS_DENIED")
            is_error(f.request("GET", API + "/user?username=ann",
                               headers={"Accept": "application/json"}), 401,
                     "APPLICATION_ACCESS_DENIED")
            eq(get("/user?username=ann").status, 200)
            # another application name and password
            reset(users=[user("ann")], application={"name": "usersync", "password": "s3cret-pw"})
            eq(get("/user?username=ann").status, 401)
            h = {"Accept": "application/json", "Authorization": "Basic " +
                 base64.b64encode(b"usersync:s3cret-pw").decode()}
            eq(f.request("GET", API + "/user?username=ann", headers=h).status, 200)
            eq(f.requests()[-1]["path"], API + "/user")
        t.run("application_basic_auth", auth)

        def address():
            reset(users=[user("ann")], application={"remote_addresses": ["10.1.2.3"]})
            r = get("/user?username=ann")
            is_error(r, 403, "APPLICATION_ACCESS_DENIED")
            eq(r.json()["message"], 'Client with address "127.0.0.1" is forbidden from making '
                                    'requests to the application, admin.')
            # wrong credentials are still a 401 first
            r = f.request("GET", API + "/user?username=ann", headers={"Accept": "application/json"})
            eq(r.status, 401)
        t.run("address_allow_list", address)

        def media_types():
            reset(users=[user("ann")])
            r = get("/user?username=ann", headers={"Authorization": BASIC})
            eq(r.status, 200)
            eq(r.header("Content-Type"), "application/xml")
            check(r.body.startswith(b'<?xml') and b'<user name="ann">' in r.body, r.body)
            r = send("POST", "/group", '{"name": "g", "type": "GROUP"}',
                     dict(WRITE, **{"Content-Type": "text/plain"}))
            eq(r.status, 415)
            r = send("POST", "/group", {"name": "g", "type": "GROUP"},
                     {"Authorization": BASIC, "Accept": "application/json"})
            eq(r.status, 403, "writes need X-Atlassian-Token: no-check")
            eq(send("DELETE", "/group?groupname=g", headers=dict(WRITE, **{
                "Content-Type": "application/json"})).status, 400,
               "a content type without a body")
            eq(f.request("GET", "/rest/usermanagement/1/user?username=ann", headers=AUTH).status,
               404, "outside the /crowd context")
            eq(get("/nothing-here").status, 404)
        t.run("json_only_when_asked", media_types)

        def users():
            reset()
            r = send("POST", "/user", {"name": "Bob", "display-name": "Bob Mc Stone",
                                       "email": "bob@example.com", "active": True,
                                       "password": {"value": "pw-123456"}})
            eq(r.status, 201, r.body)
            eq(r.header("Location"), f.url + API + "/user?username=Bob")
            b = r.json()
            eq((b["first-name"], b["last-name"]), ("Bob Mc", "Stone"), "derived from the display")
            check(b["key"].startswith("32769:"), b)
            check("value" not in b["password"], "no password comes back")
            is_error(send("POST", "/user", {"name": "bob", "password": {"value": "x"}}), 400,
                     "INVALID_USER")
            is_error(send("POST", "/user", {"name": "cy", "email": "cy@example.com"}), 400,
                     "INVALID_CREDENTIAL")
            is_error(send("POST", "/user", {"name": "cy", "email": "nope",
                                            "password": {"value": "x"}}), 400, "INVALID_EMAIL")
            eq(get("/user?username=BOB").json()["name"], "Bob", "case-insensitive lookup")
            is_error(get("/user?username=nobody"), 404, "USER_NOT_FOUND")
            # Crowd 4.4 and later refuse an application's e-mail change (Atlassian KB "Crowd -
            # Workaround to get Crowd to allow email change through API"): 403, nothing changed
            full = get("/user?username=bob").json()
            full["email"] = "bob@new.example.com"
            full["display-name"] = "Bobby Stone"
            is_error(send("PUT", "/user?username=bob", full), 403, "APPLICATION_PERMISSION_DENIED")
            eq(send("PUT", "/user?username=bob", full).json()["message"],
               "External applications are not allowed to change user emails")
            u = state_user("bob")
            eq((u["email"], u["display-name"]), ("bob@example.com", "Bob Mc Stone"), "unchanged")
            full["email"] = "bob@example.com"
            eq(send("PUT", "/user?username=bob", full).status, 204, "the same e-mail is no change")
            eq(state_user("bob")["display-name"], "Bobby Stone")
            # with the check turned off (or an older Crowd): PUT replaces, what is left out is
            # emptied, active left out is kept
            st = f.state()
            st["allow_email_change"] = True
            f.put_state(st)
            full = get("/user?username=bob").json()
            full["email"] = "bob@new.example.com"
            eq(send("PUT", "/user?username=bob", full).status, 204)
            u = state_user("bob")
            eq((u["email"], u["first-name"], u["display-name"]),
               ("bob@new.example.com", "Bob Mc", "Bobby Stone"))
            eq(send("PUT", "/user?username=bob", {"name": "Bob", "active": False}).status, 204)
            u = state_user("bob")
            # no names at all: Crowd puts the user name in the last name (CWD-2634)
            eq((u["first-name"], u["last-name"], u["display-name"], u["email"], u["active"]),
               ("", "Bob", "Bob", "", False), "a partial PUT drops the fields it leaves out")
            is_error(send("PUT", "/user?username=bob", {"name": "other"}), 400, "ILLEGAL_ARGUMENT")
            is_error(send("PUT", "/user?username=nobody", {"name": "nobody"}), 404,
                     "USER_NOT_FOUND")
            # rename
            reset(users=[user("ann"), user("cat")], groups=["g"], members={"g": ["ann"]})
            r = send("POST", "/user/rename?username=ann", {"new-name": "anna"})
            eq(r.status, 200)
            eq(r.json()["name"], "anna")
            eq(f.state()["members"]["g"], ["anna"])
            is_error(send("POST", "/user/rename?username=anna", {"new-name": "CAT"}), 400,
                     "INVALID_USER")
            eq(send("DELETE", "/user?username=anna").status, 204)
            eq(f.state()["members"]["g"], [])
            is_error(send("DELETE", "/user?username=anna"), 404, "USER_NOT_FOUND")
        t.run("users_create_put_rename_delete", users)

        def groups_and_members():
            reset(users=[user("ann"), user("bob")])
            r = send("POST", "/group", {"name": "devs", "type": "GROUP", "active": True})
            eq(r.status, 201)
            is_error(send("POST", "/group", {"name": "DEVS", "type": "GROUP"}), 400,
                     "INVALID_GROUP")
            is_error(send("POST", "/group", {"name": "x"}), 400, "ILLEGAL_ARGUMENT")
            eq(get("/group?groupname=devs").json()["type"], "GROUP")
            eq(send("POST", "/group/user/direct?groupname=devs", {"name": "ann"}).status, 201)
            is_error(send("POST", "/group/user/direct?groupname=devs", {"name": "ann"}), 409,
                     "MEMBERSHIP_ALREADY_EXISTS")
            is_error(send("POST", "/group/user/direct?groupname=devs", {"name": "zed"}), 400,
                     "USER_NOT_FOUND")
            is_error(send("POST", "/group/user/direct?groupname=nope", {"name": "ann"}), 404,
                     "GROUP_NOT_FOUND")
            eq(send("POST", "/user/group/direct?username=bob", {"name": "devs"}).status, 201)
            is_error(send("POST", "/user/group/direct?username=bob", {"name": "nope"}), 400,
                     "GROUP_NOT_FOUND")
            eq([u["name"] for u in get("/group/user/direct?groupname=devs").json()["users"]],
               ["ann", "bob"])
            eq(set(get("/group/user/direct?groupname=devs").json()["users"][0]),
               {"link", "name"}, "names only without expand")
            check("email" in get("/group/user/direct?groupname=devs&expand=user")
                  .json()["users"][0])
            eq(get("/user/group/direct?username=ann").json()["groups"][0]["name"], "devs")
            eq(get("/user/group/direct?username=nobody").json(), {"expand": "group", "groups": []},
               "an unknown user has no groups (CWD-4433), not a 404")
            eq(get("/user/group/direct?username=ann&groupname=devs").status, 200)
            is_error(get("/group/user/direct?groupname=devs&username=zed"), 404,
                     "MEMBERSHIP_NOT_FOUND")
            eq(send("DELETE", "/group/user/direct?groupname=devs&username=ann").status, 204)
            is_error(send("DELETE", "/group/user/direct?groupname=devs&username=ann"), 404,
                     "MEMBERSHIP_NOT_FOUND")
            eq(send("DELETE", "/group?groupname=devs").status, 204)
            is_error(get("/group?groupname=devs"), 404, "GROUP_NOT_FOUND")
        t.run("groups_and_direct_memberships", groups_and_members)

        def nested():
            reset(users=[user("ann"), user("bob")], groups=["parent", "child"],
                  members={"child": ["ann"], "parent": ["bob"]}, nested={"parent": ["child"]})
            eq([u["name"] for u in get("/group/user/direct?groupname=parent").json()["users"]],
               ["bob"])
            eq([u["name"] for u in get("/group/user/nested?groupname=parent").json()["users"]],
               ["ann", "bob"])
            eq(get("/group/user/nested?groupname=parent&username=ann").status, 200)
            is_error(send("DELETE", "/group/user/direct?groupname=parent&username=ann"), 404,
                     "MEMBERSHIP_NOT_FOUND")
            eq(sorted(g["name"] for g in get("/user/group/nested?username=ann").json()["groups"]),
               ["child", "parent"])
            eq([g["name"] for g in get("/group/child-group/direct?groupname=parent")
                .json()["groups"]], ["child"])
            eq([g["name"] for g in get("/group/parent-group/direct?groupname=child")
                .json()["groups"]], ["parent"])
            is_error(send("POST", "/group/child-group/direct?groupname=child", {"name": "parent"}),
                     400, "INVALID_MEMBERSHIP")
            eq(send("DELETE", "/group/child-group/direct?groupname=parent&child-groupname=child")
               .status, 204)
            eq(f.state().get("nested"), None)
            bad = {"users": [], "groups": ["a", "b"], "members": {}, "nested": {"a": ["b"],
                                                                               "b": ["a"]}}
            eq(f.request("PUT", "/__fake/state", body=bad).status, 400, "a cycle is refused")
        t.run("nested_groups", nested)

        def permissions():
            reset(users=[user("ann", directory=5)], groups=["g"],
                  group_info={"g": {"directory": 5}},
                  directories=[{"id": 5, "name": "LDAP", "permissions": ["UPDATE_USER"]},
                               {"id": 9, "name": "Internal", "permissions": ["CREATE_USER"]}])
            r = send("POST", "/user", {"name": "new", "password": {"value": "x"}})
            eq(r.status, 201)
            check(r.json()["key"].startswith("9:"), "created in the first directory allowing it")
            is_error(send("POST", "/group", {"name": "h", "type": "GROUP"}), 403,
                     "APPLICATION_PERMISSION_DENIED")
            is_error(send("POST", "/group/user/direct?groupname=g", {"name": "ann"}), 403,
                     "APPLICATION_PERMISSION_DENIED")
            is_error(send("DELETE", "/user?username=ann"), 403, "APPLICATION_PERMISSION_DENIED")
            check(state_user("ann") is not None)
            eq(f.state()["members"]["g"], [])
        t.run("directory_permissions", permissions)

        def paging():
            reset(users=[user("u%02d" % i) for i in range(7)])
            names = []
            start = 0
            while True:
                page = get("/search?entity-type=user&max-results=3&start-index=%d" % start) \
                    .json()["users"]
                names += [u["name"] for u in page]
                start += len(page)
                if len(page) < 3:
                    break
            eq(names, ["u%02d" % i for i in range(7)])
            eq(len(get("/search?entity-type=user").json()["users"]), 7, "default 1000")
            eq(len(get("/search?entity-type=user&max-results=-1").json()["users"]), 7)
            eq(get("/search?entity-type=user&start-index=7&max-results=3").json()["users"], [])
            body = get("/search?entity-type=user&max-results=3").json()
            eq(set(body), {"expand", "users"}, "no end marker, no total")
            is_error(get("/search?entity-type=user&max-results=0"), 400, "ILLEGAL_ARGUMENT")
            is_error(get("/search?entity-type=user&max-results=x"), 400, "ILLEGAL_ARGUMENT")
            is_error(get("/search?entity-type=role"), 400, "ILLEGAL_ARGUMENT")
        t.run("paging_without_end_marker", paging)

        def cql():
            reset(users=[user("ann", active=False), user("bob", email="bob@corp.example.com"),
                         user("cat")], groups=["eng-a", "ops"])

            def names(restriction, kind="user"):
                r = get("/search?entity-type=%s&restriction=%s" % (kind, q(restriction)))
                eq(r.status, 200, r.body)
                return [x["name"] for x in r.json()[kind + "s"]]
            eq(names("active=true"), ["bob", "cat"])
            eq(names("active = false"), ["ann"])
            eq(names('email = "*@corp.example.com"'), ["bob"])
            eq(names("name = b* or name = c*"), ["bob", "cat"])
            eq(names("(name = a* or name = b*) and active = true"), ["bob"])
            eq(names("name != ann"), ["bob", "cat"])
            eq(names("name = eng*", "group"), ["eng-a"])
            is_error(get("/search?entity-type=user&restriction=%s" % q("shoe = 1")), 400,
                     "ILLEGAL_ARGUMENT")
            is_error(get("/search?entity-type=user&restriction=%s" % q("name = (")), 400,
                     "ILLEGAL_ARGUMENT")
        t.run("cql_restrictions", cql)

        def control_and_faults():
            reset(users=[user("ann")])
            f.faults(fail_rate=1.0, fail_status=503)
            is_error(get("/user?username=ann"), 503, "OPERATION_FAILED")
            f.faults(fail_rate=1.0, fail_status=429, fail_retry_after=2)
            r = get("/user?username=ann")
            eq((r.status, r.header("Retry-After")), (429, "2"))
            eq(r.header("X-RateLimit-Remaining"), None, "Crowd sends no rate-limit headers")
            f.faults()
            eq(get("/user?username=ann").status, 200)
            log = f.requests()
            eq([x["status"] for x in log], [503, 429, 200])
            eq(log[0]["query"], "username=ann")
            eq(f.request("PUT", "/__fake/state", body={"users": [{"first-name": "x"}]}).status,
               400, "a user without a name")
            eq(f.request("PUT", "/__fake/state", body={"users": [], "groups": ["g"],
                                                       "members": {"g": ["nobody"]}}).status, 400)
        t.run("control_interface_and_faults", control_and_faults)

    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
