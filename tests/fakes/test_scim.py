#!/usr/bin/env python3
"""Behaviour and contract tests of the SCIM 2.0 simulator (sim/scim.py), generic and Atlassian.

Starts `fake.py scim` (and `--flavour atlassian`) on free ports. Every JSON answer is checked
against the RFC 7643/7644 shapes in tests/data/scim/rfc7643-7644.schema.json (User, Group,
ListResponse, Error, ServiceProviderConfig) and its media type. Covers auth, filters (and the
Atlassian single-eq rule), startIndex/count paging at a page boundary and one over, the
count cap, create/PUT/PATCH/DELETE of users and groups, uniqueness, PATCH without support
(501), group membership PATCH add/remove, the 429 with Retry-After, and the Atlassian rules
(no group rename, immutable userName, DELETE deactivates the managed account, create links by
e-mail, one directory). Last line "N passed, N failed"; non-zero exit on failure.
"""

import json
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake import Fake, Runner  # noqa: E402

import jsonschema  # noqa: E402

DATA = os.environ.get("DATA_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "data")
with open(os.path.join(DATA, "scim", "rfc7643-7644.schema.json")) as fh:
    SCHEMA = json.load(fh)

AUTH = {"Authorization": "Bearer test-token"}
CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCHOP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def check(cond, msg=""):
    if not cond:
        raise AssertionError(msg)


def eq(a, b, msg=""):
    if a != b:
        raise AssertionError("%r != %r %s" % (a, b, msg))


def valid(obj, name):
    """Validates obj against the RFC shape `name` (and its resources, for a ListResponse)."""
    sch = dict(SCHEMA)
    sch["$ref"] = "#/definitions/" + name
    jsonschema.validate(obj, sch)


def answer(r, status, shape=None):
    eq(r.status, status, r.body[:300])
    if status == 204:
        eq(r.body, b"")
        return None
    ct = r.header("Content-Type") or ""
    check(ct.startswith("application/scim+json"), ct)
    b = r.json()
    if shape:
        valid(b, shape)
    if shape == "ListResponse":
        eq(b["itemsPerPage"], len(b["Resources"]))
    return b


def scim_error(r, status, scim_type=None):
    b = answer(r, status, "Error")
    eq(b["status"], str(status))
    if scim_type:
        eq(b.get("scimType"), scim_type, b)
    return b


def user_body(name, email=None, **kw):
    b = {"schemas": [CORE_USER], "userName": name, "displayName": name.title(),
         "emails": [{"value": email or name + "@example.com", "primary": True, "type": "work"}],
         "active": True}
    b.update(kw)
    return b


def patch(*ops):
    return {"schemas": [PATCHOP], "Operations": list(ops)}


def run(t, f, base, atlassian):
    def req(method, path, body=None, headers=AUTH):
        return f.request(method, base + path, body=body, headers=headers)

    def make_user(name, **kw):
        return answer(req("POST", "/Users", user_body(name, **kw)), 201, "User")

    def make_group(name, members=()):
        return answer(req("POST", "/Groups", {"schemas": [CORE_GROUP], "displayName": name,
                                               "members": [{"value": m} for m in members]}),
                      201, "Group")

    tag = "atlassian_" if atlassian else ""

    def auth():
        f.put_state({"users": [], "groups": []})
        scim_error(req("GET", "/Users", headers={}), 401)
        scim_error(req("GET", "/Users", headers={"Authorization": "Bearer nope"}), 401)
        answer(req("GET", "/Users"), 200, "ListResponse")
        spc = answer(req("GET", "/ServiceProviderConfig"), 200, "ServiceProviderConfig")
        eq(spc["patch"]["supported"], True)
        scim_error(f.request("GET", "/scim/v3/Users", headers=AUTH), 404)
        if atlassian:
            scim_error(f.request("GET", "/scim/directory/other/Users", headers=AUTH), 404)
        r = req("POST", "/Users", json.dumps(user_body("x")),
                headers=dict(AUTH, **{"Content-Type": "text/plain"}))
        scim_error(r, 415)
    t.run(tag + "auth_and_media_types", auth)

    def create_lookup():
        f.put_state({"users": [], "groups": []})
        u = make_user("Alice", externalId="00u1")
        check(r_location_ok(u, base), u)
        scim_error(req("POST", "/Users", user_body("alice")), 409, "uniqueness")
        scim_error(req("POST", "/Users", {"userName": "bob"}), 400, "invalidSyntax")
        scim_error(req("POST", "/Users", {"schemas": [CORE_USER]}), 400, "invalidValue")
        q = urllib.parse.quote('userName eq "ALICE"')
        b = answer(req("GET", "/Users?filter=" + q), 200, "ListResponse")
        eq([x["id"] for x in b["Resources"]], [u["id"]], "userName is caseExact false")
        q = urllib.parse.quote('externalId eq "00U1"')
        eq(answer(req("GET", "/Users?filter=" + q), 200, "ListResponse")["totalResults"], 0,
           "externalId is caseExact")
        q = urllib.parse.quote('externalId eq "00u1"')
        eq(answer(req("GET", "/Users?filter=" + q), 200, "ListResponse")["totalResults"], 1)
        answer(req("GET", "/Users/" + u["id"]), 200, "User")
        scim_error(req("GET", "/Users/nope"), 404)
        scim_error(req("GET", "/Users?filter=" + urllib.parse.quote('userName xx "a"')), 400,
                   "invalidFilter")
        scim_error(req("GET", "/Users?filter=" + urllib.parse.quote('userName eq')), 400,
                   "invalidFilter")
        two = urllib.parse.quote('userName eq "alice" or userName eq "bob"')
        sw = urllib.parse.quote('userName sw "al"')
        if atlassian:
            scim_error(req("GET", "/Users?filter=" + two), 400, "invalidFilter")
            scim_error(req("GET", "/Users?filter=" + sw), 400, "invalidFilter")
            dn = urllib.parse.quote('displayName eq "Alice"')
            scim_error(req("GET", "/Users?filter=" + dn), 400, "invalidFilter")
            scim_error(req("GET", "/Users?sortBy=userName"), 400, "invalidFilter")
        else:
            eq(answer(req("GET", "/Users?filter=" + two), 200, "ListResponse")["totalResults"], 1)
            eq(answer(req("GET", "/Users?filter=" + sw), 200, "ListResponse")["totalResults"], 1)
    t.run(tag + "create_and_filters", create_lookup)

    def paging():
        users = [{"id": "u%03d" % i, "userName": "user%03d" % i,
                  "emails": [{"value": "user%03d@example.com" % i, "primary": True}]}
                 for i in range(1, 8)]
        f.put_state({"users": users, "groups": []})

        def collect(count):
            out, start, pages = [], 1, 0
            while True:
                b = answer(req("GET", "/Users?startIndex=%d&count=%d" % (start, count)), 200,
                           "ListResponse")
                pages += 1
                eq(b["startIndex"], start)
                eq(b["totalResults"], 7)
                out += [x["userName"] for x in b["Resources"]]
                start += b["itemsPerPage"]
                if start > b["totalResults"] or not b["Resources"]:
                    return out, pages
        eq(collect(7), (["user%03d" % i for i in range(1, 8)], 1), "exactly one page")
        eq(collect(6)[1], 2, "one over a page")
        eq(collect(2)[1], 4)
        f.faults(max_count=3)
        b = answer(req("GET", "/Users?startIndex=1&count=100"), 200, "ListResponse")
        eq((b["itemsPerPage"], b["totalResults"]), (3, 7), "fewer than asked")
        eq(collect(100)[0], ["user%03d" % i for i in range(1, 8)])
        f.faults(page_short=True)
        b = answer(req("GET", "/Users?startIndex=1&count=3"), 200, "ListResponse")
        eq(b["itemsPerPage"], 2, "a page before the last one item short")
        eq(collect(3)[0], ["user%03d" % i for i in range(1, 8)])
        f.faults()
        b = answer(req("GET", "/Users?startIndex=0&count=-2"), 200, "ListResponse")
        eq((b["startIndex"], b["itemsPerPage"]), (1, 0), "RFC 7644 3.4.2.4 bounds")
        b = answer(req("GET", "/Users?startIndex=8&count=5"), 200, "ListResponse")
        eq(b["Resources"], [])
        b = answer(req("GET", "/Users?attributes=userName&count=1"), 200, "ListResponse")
        eq(sorted(b["Resources"][0]), ["id", "schemas", "userName"])
    t.run(tag + "paging", paging)

    def update_user():
        f.put_state({"users": [], "groups": []})
        u = make_user("carol", title="Engineer")
        body = user_body("carol", email="c2@example.com", displayName="Carol C")
        b = answer(req("PUT", "/Users/" + u["id"], body), 200, "User")
        eq((b["displayName"], b["emails"][0]["value"], b.get("title")),
           ("Carol C", "c2@example.com", None), "PUT replaces: title is gone")
        b = answer(req("PATCH", "/Users/" + u["id"],
                       patch({"op": "replace", "path": "active", "value": False})), 200, "User")
        eq(b["active"], False)
        b = answer(req("PATCH", "/Users/" + u["id"],
                       patch({"op": "replace", "value": {"active": True,
                                                         "displayName": "C"}})), 200, "User")
        eq((b["active"], b["displayName"]), (True, "C"))
        scim_error(req("PATCH", "/Users/" + u["id"], {"Operations": []}), 400, "invalidSyntax")
        scim_error(req("PATCH", "/Users/" + u["id"], patch({"op": "remove"})), 400, "noTarget")
        scim_error(req("PATCH", "/Users/" + u["id"],
                       patch({"op": "replace", "path": "id", "value": "x"})), 400, "mutability")
        rn = patch({"op": "replace", "path": "userName", "value": "carol2"})
        if atlassian:
            scim_error(req("PATCH", "/Users/" + u["id"], rn), 400, "mutability")
            scim_error(req("PUT", "/Users/" + u["id"], user_body("carol2")), 400, "mutability")
        else:
            eq(answer(req("PATCH", "/Users/" + u["id"], rn), 200, "User")["userName"], "carol2")
        f.faults(patch_supported=False)
        eq(answer(req("GET", "/ServiceProviderConfig"), 200,
                  "ServiceProviderConfig")["patch"]["supported"], False)
        scim_error(req("PATCH", "/Users/" + u["id"],
                       patch({"op": "replace", "path": "active", "value": False})), 501)
        f.faults()
    t.run(tag + "put_and_patch_users", update_user)

    def groups():
        f.put_state({"users": [], "groups": []})
        a, b = make_user("ann"), make_user("ben")
        g = make_group("devs", [a["id"]])
        eq([m["value"] for m in g["members"]], [a["id"]])
        scim_error(req("POST", "/Groups", {"schemas": [CORE_GROUP], "displayName": "DEVS"}),
                   409, "uniqueness")
        scim_error(req("POST", "/Groups", {"schemas": [CORE_GROUP], "displayName": "x",
                                           "members": [{"value": "nope"}]}), 400, "invalidValue")
        r = answer(req("PATCH", "/Groups/" + g["id"],
                       patch({"op": "add", "path": "members",
                              "value": [{"value": b["id"]}, {"value": a["id"]}]})), 200, "Group")
        eq(sorted(m["value"] for m in r["members"]), sorted([a["id"], b["id"]]),
           "adding a member twice is no change")
        u = answer(req("GET", "/Users/" + b["id"]), 200, "User")
        eq([x["display"] for x in u["groups"]], ["devs"])
        r = answer(req("PATCH", "/Groups/" + g["id"],
                       patch({"op": "remove", "path": "members", "value": [{"value": a["id"]}]})),
                   200, "Group")
        eq([m["value"] for m in r["members"]], [b["id"]])
        r = answer(req("PATCH", "/Groups/%s?excludedAttributes=members" % g["id"],
                       patch({"op": "add", "path": "members", "value": [{"value": a["id"]}]})),
                   200, "Group")
        check("members" not in r, "RFC 7644 3.9: attributes shape a PATCH answer too")
        r = answer(req("PATCH", "/Groups/" + g["id"],
                       patch({"op": "remove", "path": "members", "value": [{"value": a["id"]}]})),
                   200, "Group")
        r = answer(req("PATCH", "/Groups/" + g["id"],
                       patch({"op": "remove", "path": 'members[value eq "%s"]' % b["id"]})),
                   200, "Group")
        eq(r["members"], [])
        q = urllib.parse.quote('displayName eq "DEVS"')
        eq(answer(req("GET", "/Groups?filter=" + q), 200, "ListResponse")["totalResults"], 1)
        b2 = answer(req("GET", "/Groups?excludedAttributes=members"), 200, "ListResponse")
        check("members" not in b2["Resources"][0], b2)
        ren = patch({"op": "replace", "path": "displayName", "value": "developers"})
        if atlassian:
            scim_error(req("PATCH", "/Groups/" + g["id"], ren), 400, "mutability")
            scim_error(req("PUT", "/Groups/" + g["id"], {"schemas": [CORE_GROUP],
                                                         "displayName": "developers"}),
                       400, "mutability")
        else:
            eq(answer(req("PATCH", "/Groups/" + g["id"], ren), 200, "Group")["displayName"],
               "developers")
        answer(req("DELETE", "/Groups/" + g["id"]), 204)
        scim_error(req("GET", "/Groups/" + g["id"]), 404)
    t.run(tag + "groups_and_members", groups)

    def delete_user():
        f.put_state({"users": [], "groups": []})
        d = make_user("dan")
        g = make_group("g", [d["id"]])
        answer(req("DELETE", "/Users/" + d["id"]), 204)
        scim_error(req("GET", "/Users/" + d["id"]), 404)
        eq(answer(req("GET", "/Groups/" + g["id"]), 200, "Group")["members"], [])
        if atlassian:
            acc = f.state()["accounts"]
            eq([(a["email"], a["active"]) for a in acc], [("dan@example.com", False)],
               "DELETE deactivated the managed account")
            d2 = make_user("dan")
            acc = f.state()["accounts"]
            eq(len(acc), 1, "a create links to the account with the same e-mail")
            eq((acc[0]["scim_id"], acc[0]["active"]), (d2["id"], False),
               "linked, still deactivated: only the admin UI reactivates it")
    t.run(tag + "delete_user", delete_user)

    def rate_limit():
        f.put_state({"users": [], "groups": []})
        f.faults(rate_limit_per_min=2)
        answer(req("GET", "/Users"), 200)
        answer(req("GET", "/Users"), 200)
        r = req("GET", "/Users")
        scim_error(r, 429)
        check(int(r.header("Retry-After")) >= 1, r.headers)
        f.faults()
        f.faults(fail_rate=1.0, fail_status=503)
        scim_error(req("GET", "/Users"), 503)
        f.faults()
    t.run(tag + "rate_limit_and_faults", rate_limit)


def r_location_ok(u, base):
    return u["meta"]["location"].endswith(base + "/Users/" + u["id"])


def main():
    t = Runner()
    with Fake("scim") as f:
        run(t, f, "/scim/v2", False)
    with Fake("scim", extra_args=("--flavour", "atlassian")) as f:
        run(t, f, "/scim/directory/test-directory", True)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
