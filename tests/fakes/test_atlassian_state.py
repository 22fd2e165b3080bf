#!/usr/bin/env python3
"""State and fault contract of the three Atlassian simulators (tests/fakes/README.md).

For each of jira, confluence, bitbucket: the default state has the documented shape, a state
survives PUT -> GET unchanged (member lists come back sorted case-insensitively: they are
sets), bad shapes are refused with 400 and leave the old state in place, an injected failure
carries the product's own error body, and the request log records API calls only.
(API changes showing up in GET /__fake/state are checked by test_jira/confluence/bitbucket.)
Last line "N passed, N failed"; non-zero exit on failure.
"""

import base64
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake import Fake, Runner  # noqa: E402

AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()}

STATES = {
    "jira": {
        "users": [{"name": "admin", "key": "admin", "displayName": "Admin",
                   "emailAddress": "admin@example.com", "active": True},
                  {"name": "Zoë.Ünïcode+x", "key": "JIRAUSER10007", "displayName": "Zoë Ü",
                   "emailAddress": "z@example.com", "active": False}],
        "groups": ["devs", "Ops Team"],
        "members": {"devs": ["admin", "Zoë.Ünïcode+x"], "Ops Team": []},
        "projects": [{"key": "ABC", "name": "Abc", "lead": "admin"}],
        "components": [{"id": "10100", "project": "ABC", "name": "Core", "lead": None},
                       {"id": "10101", "project": "ABC", "name": "UI", "lead": "admin"}]},
    "confluence": {
        "users": [{"username": "admin", "userKey": "8a7f808a00000000000000000000a000",
                   "displayName": "Admin", "email": "admin@example.com", "disabled": False},
                  {"username": "zoë", "userKey": "8a7f808a00000000000000000000b000",
                   "displayName": "Zoë", "email": "z@example.com", "disabled": True}],
        "groups": ["confluence-administrators", "devs"],
        "members": {"confluence-administrators": ["admin"], "devs": ["zoë"]},
        "license": {"seats": 10}},
    "bitbucket": {
        "users": [{"name": "admin", "slug": "admin", "id": 1, "displayName": "Admin",
                   "emailAddress": "admin@example.com"},
                  {"name": "Zoë", "slug": "zo_", "id": 7, "displayName": "Zoë",
                   "emailAddress": "z@example.com"}],
        "groups": ["stash-users", "devs"],
        "members": {"stash-users": ["admin", "Zoë"], "devs": []}},
}

BAD = {
    "jira": [{"users": "x"},
             {"users": [{"name": "a"}]},
             {"users": [{"name": "a", "displayName": "A", "emailAddress": "a@e"}],
              "groups": ["g"], "members": {"g": ["nobody"]}},
             {"users": [{"name": "a", "displayName": "A", "emailAddress": "a@e"},
                        {"name": "A", "displayName": "A", "emailAddress": "a@e"}]},
             {"users": [], "projects": [{"key": "P", "name": "P", "lead": "ghost"}]},
             {"users": [], "groups": ["g", "G"]}],
    "confluence": [{"users": [{"username": "a", "displayName": "A", "email": "a@e"}],
                    "license": {"seats": -1}},
                   {"users": [], "license": {"seats": 1, "extra": 2}},
                   {"users": [{"username": "a", "displayName": "A", "email": "a@e",
                               "disabled": "no"}]}],
    "bitbucket": [{"users": [{"name": "a", "displayName": "A", "emailAddress": "a@e",
                              "id": "1"}]},
                  {"users": [], "members": {"g": []}},
                  {"users": [{"name": "a", "displayName": "A", "emailAddress": "a@e",
                              "slug": "s"},
                             {"name": "b", "displayName": "B", "emailAddress": "b@e",
                              "slug": "s"}]}],
}

# The optional extensions (sim-review H5, H6, M4) round-trip too.
EXTENDED = {
    "jira": dict(STATES["jira"], nested={"devs": ["Ops Team"]}),
    "confluence": dict(STATES["confluence"], context="/confluence"),
    "bitbucket": dict(STATES["bitbucket"], license={"seats": 2, "groups": ["stash-users",
                                                                          "devs"]}),
}

# A write of each product that carries no body (its data is in the path or the query).
BODYLESS = {"jira": ("/rest/api/2/group/user?groupname=devs&username=admin", "DELETE"),
            "confluence": ("/rest/api/user/admin/group/devs", "PUT"),
            "bitbucket": ("/rest/api/1.0/admin/groups?name=newgroup", "POST")}

PROBE = {"jira": "/rest/api/2/myself", "confluence": "/rest/api/user/current",
         "bitbucket": "/rest/api/1.0/admin/users"}


def check(cond, msg=""):
    if not cond:
        raise AssertionError(msg)


def eq(a, b, msg=""):
    if a != b:
        raise AssertionError("%r != %r %s" % (a, b, msg))


def product_tests(t, product):
    with Fake(product) as f:
        def default_shape():
            st = f.state()
            keys = {"jira": {"users", "groups", "members", "projects", "components"},
                    "confluence": {"users", "groups", "members", "license"},
                    "bitbucket": {"users", "groups", "members"}}[product]
            eq(set(st), keys)
            fields = {"jira": {"name", "key", "displayName", "emailAddress", "active"},
                      "confluence": {"username", "userKey", "displayName", "email",
                                     "disabled"},
                      "bitbucket": {"name", "slug", "id", "displayName",
                                    "emailAddress"}}[product]
            for u in st["users"]:
                eq(set(u), fields)
            check(all(isinstance(g, str) for g in st["groups"]))
        t.run(product + "_default_state_shape", default_shape)

        def round_trip():
            f.put_state(STATES[product])
            eq(f.state(), STATES[product])
        t.run(product + "_state_round_trip", round_trip)

        def extended_round_trip():
            f.put_state(EXTENDED[product])
            eq(f.state(), EXTENDED[product])
            f.put_state(STATES[product])
            eq(f.state(), STATES[product], "the extension goes away with a state without it")
        t.run(product + "_extended_state_round_trip", extended_round_trip)

        def bad_shapes():
            f.put_state(STATES[product])
            for bad in BAD[product]:
                r = f.request("PUT", "/__fake/state", body=bad)
                eq(r.status, 400, "accepted %r" % (bad,))
            eq(f.state(), STATES[product], "a refused state changes nothing")
        t.run(product + "_bad_state_400", bad_shapes)

        def injected_failure():
            f.faults(fail_rate=1.0, fail_status=503)
            try:
                r = f.request("GET", PROBE[product], headers=AUTH)
                eq(r.status, 503)
                b = r.json()
                if product == "jira":
                    check(b["errorMessages"] and "errors" in b, b)
                elif product == "confluence":
                    eq(b["statusCode"], 503)
                else:
                    check(b["errors"][0]["message"], b)
            finally:
                f.faults()
            eq(f.request("GET", PROBE[product], headers=AUTH).status, 200)
        t.run(product + "_injected_failure_body", injected_failure)

        def content_type_without_body():
            # a declared media type with an empty body is refused the way strict servers
            # refuse it; the same write without the header goes through
            f.put_state(STATES[product])
            path, method = BODYLESS[product]
            hs = dict(AUTH, **{"X-Atlassian-Token": "no-check"})
            r = f.request(method, path, body=b"", headers=dict(hs, **{
                "Content-Type": "application/json"}))
            eq(r.status, 400, r.body)
            check(b"body cannot be empty when content-type is set" in r.body, r.body)
            eq(f.state(), STATES[product], "the refused request changed nothing")
            r = f.request(method, path, headers=hs)
            check(200 <= r.status < 300, "without the header: %r" % (r,))
        t.run(product + "_content_type_without_body_400", content_type_without_body)

        def request_log():
            f.clear_requests()
            f.request("GET", PROBE[product], headers=AUTH)
            f.request("GET", PROBE[product])
            f.state()
            log = f.requests()
            eq([(e["method"], e["path"], e["status"]) for e in log],
               [("GET", PROBE[product], 200), ("GET", PROBE[product], 401)])
        t.run(product + "_request_log", request_log)


def main():
    t = Runner()
    for p in ("jira", "confluence", "bitbucket"):
        product_tests(t, p)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
