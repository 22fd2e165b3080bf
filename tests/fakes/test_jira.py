#!/usr/bin/env python3
"""Behaviour tests of the Jira DC simulator (sim/jira.py): what a sync client relies on.

Starts `fake.py jira` on a free port (bounded start, killed at the end) and checks auth, the
XSRF rule, user/group/membership semantics, every paging scheme at exactly a page size and one
over, lead-blocked deletion and the token-bucket rate limit. Last stdout line: "N passed, N
failed"; exit status non-zero on any failure.
"""

import base64
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake import Fake, Runner  # noqa: E402

API = "/rest/api/2"
BASIC = "Basic " + base64.b64encode(b"admin:admin").decode()
AUTH = {"Authorization": BASIC}
WRITE = {"Authorization": BASIC, "X-Atlassian-Token": "no-check"}


def user(name, active=True, **kw):
    u = {"name": name, "displayName": kw.get("dn", name.title()),
         "emailAddress": kw.get("email", name + "@example.com"), "active": active}
    if "key" in kw:
        u["key"] = kw["key"]
    return u


def base_state(users=(), groups=(), members=None, projects=(), components=()):
    return {"users": [user("admin", key="admin")] + list(users), "groups": list(groups),
            "members": members or {}, "projects": list(projects),
            "components": list(components)}


def check(cond, msg=""):
    if not cond:
        raise AssertionError(msg)


def eq(a, b, msg=""):
    if a != b:
        raise AssertionError("%r != %r %s" % (a, b, msg))


def main():
    t = Runner()
    with Fake("jira") as f:
        def get(path, headers=AUTH):
            return f.request("GET", API + path, headers=headers)

        def send(method, path, body=None, headers=WRITE):
            return f.request(method, API + path, body=body, headers=headers)

        # -- authentication ---------------------------------------------------------------
        def auth_failures():
            r = get("/myself", headers={})
            eq(r.status, 401)
            check(r.header("WWW-Authenticate"), "401 carries WWW-Authenticate")
            check(r.json()["errorMessages"] and r.json()["errors"] == {}, r.body)
            r = get("/myself", headers={"Authorization": "Basic " +
                                        base64.b64encode(b"admin:wrong").decode()})
            eq(r.status, 401)
            eq(r.header("X-Seraph-LoginReason"), "AUTHENTICATED_FAILED")
            eq(get("/myself", headers={"Authorization": "Bearer nope"}).status, 401)
            eq(get("/myself", headers={"Authorization": "SSWS test-token"}).status, 401)
            eq(get("/myself", headers={"Authorization": "Bearer test-token"}).status, 200)
            r = get("/myself")
            eq(r.status, 200)
            eq(r.json()["name"], "admin")
            eq(get("/serverInfo", headers={}).status, 200)  # Jira serves it anonymously
        t.run("auth_failures", auth_failures)

        def xsrf():
            f.put_state(base_state())
            for m, p, b in (("POST", "/user", {"name": "x", "displayName": "X",
                                               "emailAddress": "x@e.com"}),
                            ("POST", "/group", {"name": "g"}),
                            ("DELETE", "/group?groupname=jira-administrators", None)):
                r = send(m, p, b, headers=AUTH)
                eq(r.status, 403, m + p)
                eq(r.body, b"XSRF check failed")
                r = send(m, p, b, headers=dict(AUTH, **{"X-Atlassian-Token": "nocheck"}))
                eq(r.status, 403, "wrong token value")
            eq(len(f.state()["users"]), 1, "nothing was written")
            # bad credentials are a 401 even without the token
            eq(send("POST", "/group", {"name": "g"}, headers={}).status, 401)
        t.run("xsrf_403", xsrf)

        # -- users ------------------------------------------------------------------------
        def user_get():
            f.put_state(base_state([user("alice")], ["devs", "ops"],
                                   {"devs": ["alice"], "ops": ["alice"]}))
            r = get("/user?username=ALICE&expand=groups")
            eq(r.status, 200)
            b = r.json()
            eq(b["name"], "alice")
            eq(b["groups"]["size"], 2)
            eq([g["name"] for g in b["groups"]["items"]], ["devs", "ops"])
            check(b["groups"]["items"][0]["self"].endswith("/group?groupname=devs"))
            r2 = get("/user?key=" + b["key"])
            eq(r2.json()["name"], "alice")
            r = get("/user?username=nobody")
            eq(r.status, 404)
            eq(r.json()["errorMessages"], ["The user named 'nobody' does not exist"])
        t.run("user_get_expand_groups", user_get)

        def user_create():
            f.put_state(base_state([user("alice")]))
            r = send("POST", "/user", {"name": "bob", "displayName": "Bob B",
                                       "emailAddress": "bob@example.com", "password": "pw"})
            eq(r.status, 201)
            check(r.json()["key"].startswith("JIRAUSER"), r.json()["key"])
            r = send("POST", "/user", {"name": "Alice", "displayName": "A",
                                       "emailAddress": "a@example.com"})
            eq(r.status, 400)
            eq(r.json()["errors"], {"username": "A user with that username already exists."})
            r = send("POST", "/user", {"name": "carl", "displayName": "C"})
            eq(r.status, 400)
            check("email" in r.json()["errors"], r.body)
            r = send("POST", "/user", b"not json")
            eq(r.status, 400)
            names = [u["name"] for u in f.state()["users"]]
            eq(names, ["admin", "alice", "bob"])
        t.run("user_create_and_duplicate_400", user_create)

        def user_update():
            f.put_state(base_state([user("alice")], ["devs"], {"devs": ["alice"]}))
            key = get("/user?username=alice").json()["key"]
            r = send("PUT", "/user?username=alice", {"name": "alice2", "displayName": "Al",
                                                     "emailAddress": "al@example.com"})
            eq(r.status, 200)
            eq(r.json()["name"], "alice2")
            eq(r.json()["key"], key, "rename keeps the key")
            eq(get("/user?username=alice").status, 404)
            eq(f.state()["members"]["devs"], ["alice2"])
            r = send("PUT", "/user?username=alice2", {"active": False})
            eq(r.status, 200)
            eq(r.json()["active"], False)
            eq(send("PUT", "/user?username=ghost", {"displayName": "G"}).status, 404)
            r = send("PUT", "/user?username=alice2", {"name": "admin"})
            eq(r.status, 400)
            check("username" in r.json()["errors"])
        t.run("user_update_rename_active", user_update)

        def user_search():
            users = [user("sam%02d" % i, active=(i % 5 != 0)) for i in range(70)]
            users.append(user("zed", dn="Zed Samuels", email="zz@example.com"))
            f.put_state(base_state(users))
            r = get("/user/search?username=sam")
            eq(r.status, 200)
            b = r.json()
            check(isinstance(b, list))
            eq(len(b), 50, "default maxResults 50")
            check(all(u["active"] for u in b), "inactive hidden by default")
            r = get("/user/search?username=sam&startAt=40&maxResults=50")
            # 56 active sam* + zed (display name word "Samuels") = 57 matches
            eq(len(r.json()), 17)
            r = get("/user/search?username=sam&includeInactive=true&maxResults=1000")
            eq(len(r.json()), 71)
            r = get("/user/search?username=sam&includeActive=false&includeInactive=true"
                    "&maxResults=1000")
            eq(len(r.json()), 14)
            check(not any(u["active"] for u in r.json()))
            r = get("/user/search?username=zz@")
            eq([u["name"] for u in r.json()], ["zed"])
            eq(get("/user/search").status, 400)
        t.run("user_search_paging_inactive", user_search)

        def user_list_paging():
            # admin + 4 others = 5 users; pages of exactly 5 and of 4 (one over).
            users = [user("u%d" % i, active=(i != 2)) for i in range(4)]
            f.put_state(base_state(users))
            r = get("/user/list?maxResults=5")
            b = r.json()
            eq(len(b["values"]), 5)
            eq(b["isLast"], True, "exactly a page: last")
            check("nextCursor" not in b and "nextPage" not in b, b)
            check(any(not u["active"] for u in b["values"]), "inactive users listed")
            b = get("/user/list?maxResults=4").json()
            eq((len(b["values"]), b["isLast"]), (4, False))
            check(b["nextPage"].startswith(f.url + API + "/user/list?"))
            b2 = f.request("GET", b["nextPage"], headers=AUTH).json()
            eq((len(b2["values"]), b2["isLast"]), (1, True))
            seen = [u["name"] for u in b["values"] + b2["values"]]
            eq(sorted(seen), sorted(["admin", "u0", "u1", "u2", "u3"]))
            b3 = get("/user/list?maxResults=4&cursor=" + b["nextCursor"]).json()
            eq(b3["values"], b2["values"])
            check("total" not in b, "stream pages have no total")
            r = get("/user/list?cursor=%25%25bad")  # L3: no error in the spec for it
            eq((r.status, r.json()["values"], r.json()["isLast"]), (200, [], True))
            eq(get("/user/list?maxResults=0").json()["maxResults"], 2000, "below 1: default")
            eq(get("/user/list").json()["maxResults"], 2000)
        t.run("user_list_cursor_paging", user_list_paging)

        def user_delete_blocked_by_lead():
            st = base_state([user("lead"), user("other")],
                            ["devs"], {"devs": ["lead"]},
                            projects=[{"key": "ABC", "name": "Abc", "lead": "lead"}],
                            components=[{"id": "10100", "project": "ABC", "name": "Core",
                                         "lead": "lead"}])
            f.put_state(st)
            r = send("DELETE", "/user?username=lead")
            eq(r.status, 400)
            msgs = r.json()["errorMessages"]
            eq(len(msgs), 2, msgs)
            check("ABC" in msgs[0], msgs)
            r = send("PUT", "/user?username=lead", {"active": False})
            eq(r.status, 400, "deactivating a project lead is refused")
            r = send("PUT", "/project/ABC", {"lead": "other"})
            eq(r.status, 200)
            eq(r.json()["lead"]["name"], "other")
            r = send("DELETE", "/user?username=lead")
            eq(r.status, 400, "still a component lead")
            r = send("PUT", "/component/10100", {"leadUserName": "other"})
            eq(r.status, 200)
            eq(r.json()["leadUserName"], "other")
            r = send("DELETE", "/user?username=lead")
            eq(r.status, 204)
            eq(r.body, b"")
            eq(f.state()["members"]["devs"], [])
            eq(send("DELETE", "/user?username=lead").status, 404)
            eq(send("DELETE", "/user?username=admin").status, 400, "cannot delete yourself")
        t.run("user_delete_blocked_by_lead", user_delete_blocked_by_lead)

        # -- groups -------------------------------------------------------------------------
        def picker():
            f.put_state(base_state(groups=["grp-%02d" % i for i in range(25)] + ["Other<x>"]))
            b = get("/groups/picker?query=").json()
            eq(b["total"], 26)
            eq(len(b["groups"]), 20, "default maxResults 20")
            eq(b["header"], "Showing 20 of 26 matching groups")
            b = get("/groups/picker?query=GRP-1&maxResults=100").json()
            eq([g["name"] for g in b["groups"]], ["grp-%02d" % i for i in range(10, 20)])
            eq(b["groups"][0]["html"], "<b>grp-1</b>0")
            b = get("/groups/picker?query=x&maxResults=100").json()
            eq(b["groups"][0]["html"], "Other&lt;<b>x</b>&gt;")
            eq(b["groups"][0]["labels"], [])
        t.run("groups_picker", picker)

        def group_crud():
            f.put_state(base_state([user("alice")]))
            r = send("POST", "/group", {"name": "devs"})
            eq(r.status, 201)
            eq(r.json()["name"], "devs")
            r = send("POST", "/group", {"name": "DEVS"})
            eq(r.status, 400)
            check(r.json()["errorMessages"], r.body)
            eq(send("POST", "/group", {"name": ""}).status, 400)
            eq(send("DELETE", "/group?groupname=devs").status, 200)
            eq(send("DELETE", "/group?groupname=devs").status, 404)
            eq(f.state()["groups"], [])
        t.run("group_create_delete", group_crud)

        def membership():
            f.put_state(base_state([user("alice"), user("bob")], ["devs"], {"devs": ["bob"]}))
            r = send("POST", "/group/user?groupname=devs", {"name": "alice"})
            eq(r.status, 201)
            eq(r.json()["name"], "devs")
            r = send("POST", "/group/user?groupname=devs", {"name": "alice"})
            eq(r.status, 400, "already a member is a 400 in Jira DC")
            check("already a member" in r.json()["errorMessages"][0], r.body)
            eq(send("POST", "/group/user?groupname=nope", {"name": "alice"}).status, 404)
            eq(send("POST", "/group/user?groupname=devs", {"name": "ghost"}).status, 404)
            eq(sorted(f.state()["members"]["devs"]), ["alice", "bob"])
            eq(send("DELETE", "/group/user?groupname=devs&username=alice").status, 200)
            r = send("DELETE", "/group/user?groupname=devs&username=alice")
            eq(r.status, 404, "L3: a non-member is the spec's 404")
            eq(r.json()["errorMessages"], ["Cannot remove user 'alice' from group 'devs': the "
                                           "user is not a member of the group."])
            eq(f.state()["members"]["devs"], ["bob"])
        t.run("membership_add_duplicate_400_remove", membership)

        def group_member_paging():
            us = [user("m%02d" % i) for i in range(50)] + [user("off", active=False)]
            f.put_state(base_state(us, ["big"], {"big": [u["name"] for u in us]}))
            b = get("/group/member?groupname=big").json()
            eq((b["total"], len(b["values"]), b["isLast"], b["maxResults"]),
               (50, 50, True, 50), "exactly one page of 50 active members")
            check("nextPage" not in b)
            check(all(u["active"] for u in b["values"]))
            b = get("/group/member?groupname=big&includeInactiveUsers=true").json()
            eq((b["total"], len(b["values"]), b["isLast"]), (51, 50, False))
            b2 = f.request("GET", b["nextPage"], headers=AUTH).json()
            eq((b2["startAt"], len(b2["values"]), b2["isLast"]), (50, 1, True))
            eq(b2["values"][0]["name"], "off")
            b = get("/group/member?groupname=big&maxResults=500").json()
            eq(b["maxResults"], 50, "maxResults capped at 50")
            eq(get("/group/member?groupname=none").status, 404)
            eq(get("/group/member?groupname=big&startAt=x").status, 400)
        t.run("group_member_paging_inactive", group_member_paging)

        # -- projects and components ---------------------------------------------------------
        def projects():
            f.put_state(base_state([user("lead")],
                                   projects=[{"key": "ABC", "name": "Abc", "lead": "lead"}],
                                   components=[{"id": 10100, "project": "ABC", "name": "Core",
                                                "lead": None}]))
            lst = get("/project").json()
            eq([p["key"] for p in lst], ["ABC"])
            check("lead" not in lst[0], "plain list has no lead")
            eq(get("/project?expand=lead").json()[0]["lead"]["name"], "lead")
            p = get("/project/ABC").json()
            eq(p["lead"]["name"], "lead")
            eq(get("/project/" + p["id"]).json()["key"], "ABC")
            eq(get("/project/NOPE").status, 404)
            r = send("PUT", "/project/ABC", {"lead": "ghost"})
            eq(r.status, 400)
            check("projectLead" in r.json()["errors"])
            cs = get("/project/ABC/components").json()
            eq(len(cs), 1)
            check("lead" not in cs[0] and "leadUserName" not in cs[0])
            r = send("PUT", "/component/10100", {"leadUserName": "lead"})
            eq(r.json()["lead"]["name"], "lead")
            eq(get("/component/10100").json()["leadUserName"], "lead")
            eq(send("PUT", "/component/10100", {"leadUserName": "ghost"}).status, 400)
            eq(get("/component/999").status, 404)
            eq(f.state()["components"][0]["lead"], "lead")
        t.run("project_and_component_leads", projects)

        def unknown_paths():
            eq(get("/nothing/here").status, 404)
            eq(f.request("PATCH", API + "/user", headers=WRITE).status, 405)
        t.run("unknown_path_404_wrong_method_405", unknown_paths)

        # -- rate limiting ---------------------------------------------------------------------
        def rate_limit():
            f.put_state(base_state())
            f.faults(rate_limit_per_min=60, rate_limit_burst=3)
            try:
                rem = []
                for _ in range(3):
                    r = get("/myself")
                    eq(r.status, 200)
                    eq(r.header("retry-after"), "0")
                    eq(r.header("X-RateLimit-Limit"), "3")
                    eq(r.header("X-RateLimit-FillRate"), "60")
                    eq(r.header("X-RateLimit-Interval-Seconds"), "60")
                    rem.append(int(r.header("X-RateLimit-Remaining")))
                eq(rem, [2, 1, 0])
                r = get("/myself")
                eq(r.status, 429)
                eq(r.header("retry-after"), "1")
                eq(r.header("X-RateLimit-Remaining"), "0")
                check(r.json()["errorMessages"], r.body)
                # unauthenticated requests take no token and get the 401
                eq(get("/myself", headers={}).status, 401)
                f.request("PUT", "/__fake/clock", body={"advance": 1.0})
                r = get("/myself")
                eq(r.status, 200, "a token came back after retry-after")
                eq(get("/myself").status, 429)
            finally:
                f.faults()
            r = get("/myself")
            eq(r.status, 200)
            eq(r.header("X-RateLimit-Limit"), None, "no headers when limiting is off")
        t.run("rate_limit_429_retry_after", rate_limit)

        def html_401():
            bad = {"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()}
            for h in (bad, {"Authorization": "Bearer nope"}):
                r = get("/user/list", headers=h)
                eq(r.status, 401)
                check(r.header("Content-Type").startswith("text/html"), r.header("Content-Type"))
                check(b"<title>Unauthorized (401)</title>" in r.body, r.body)
                eq(r.header("X-Seraph-LoginReason"), "AUTHENTICATED_FAILED")
                check(r.header("WWW-Authenticate").startswith("OAuth realm="))
            f.faults(html_auth_errors=False)
            try:
                r = get("/user/list", headers=bad)
                eq(r.status, 401)
                check(r.json()["errorMessages"], r.body)
            finally:
                f.faults()
            r = get("/user/list", headers={})  # no credentials: the REST layer's JSON
            check(r.json()["errorMessages"], r.body)
        t.run("bad_credentials_html_401", html_401)

        def captcha_403():
            f.faults(jira_captcha=True)
            try:
                r = get("/myself")
                eq(r.status, 403)
                eq(r.header("X-Authentication-Denied-Reason"),
                   "CAPTCHA_CHALLENGE; login-url=%s/login.jsp" % f.url)
                check(r.header("Content-Type").startswith("text/html"))
                eq(get("/myself", headers={"Authorization": "Bearer test-token"}).status, 200,
                   "tokens are not affected")
            finally:
                f.faults()
            eq(get("/myself").status, 200)
        t.run("captcha_html_403", captcha_403)

        def nested_groups():
            f.put_state(dict(base_state([user("ann"), user("ben"), user("cy", active=False),
                                         user("dee")],
                                        ["eng", "dev", "ops", "lone"],
                                        {"eng": ["ann"], "dev": ["ben", "cy"],
                                         "ops": ["dee", "ann"]}),
                             nested={"eng": ["dev"], "dev": ["ops"]}))
            eq(f.state()["nested"], {"eng": ["dev"], "dev": ["ops"]})
            b = get("/group/member?groupname=eng&includeInactiveUsers=true").json()
            eq(sorted(u["name"] for u in b["values"]), ["ann", "ben", "cy", "dee"],
               "transitive closure, each user once")
            eq(b["total"], 4)
            b = get("/group/member?groupname=eng").json()
            eq(sorted(u["name"] for u in b["values"]), ["ann", "ben", "dee"], "inactive hidden")
            gs = get("/user?username=dee&expand=groups").json()["groups"]
            eq([g["name"] for g in gs["items"]], ["dev", "eng", "ops"])
            # an inherited member is already a member
            r = send("POST", "/group/user?groupname=eng", {"name": "dee"})
            eq(r.status, 400)
            check("already a member" in r.body.decode(), r.body)
            # removing an inherited-only membership: 404, nothing changes
            f.clear_requests()
            r = send("DELETE", "/group/user?groupname=eng&username=dee")
            eq(r.status, 404)
            eq(r.json()["errorMessages"], ["Cannot remove user 'dee' from group 'eng': the user "
                                           "is not a direct member of the group; the membership "
                                           "comes from the nested group(s) ops."])
            eq([x["status"] for x in f.requests()], [404])
            st = f.state()
            eq((st["members"]["eng"], st["members"]["ops"]), (["ann"], ["ann", "dee"]))
            # ann is direct in eng (and in ops): the direct membership goes, ops keeps her in
            eq(send("DELETE", "/group/user?groupname=eng&username=ann").status, 200)
            b = get("/group/member?groupname=eng").json()
            eq(sorted(u["name"] for u in b["values"]), ["ann", "ben", "dee"])
            # deleting a nested group drops the nesting
            eq(send("DELETE", "/group?groupname=dev").status, 200)
            eq(f.state().get("nested"), None)
            eq(get("/group/member?groupname=eng").json()["total"], 0)
            # bad shapes
            for bad in ({"eng": ["nope"]}, {"nope": ["eng"]}, {"eng": ["eng"]},
                        {"eng": ["dev"], "dev": ["eng"]}, {"eng": "dev"}, ["eng"]):
                r = f.request("PUT", "/__fake/state",
                              body=dict(base_state(groups=["eng", "dev"]), nested=bad))
                eq(r.status, 400, repr(bad))
        t.run("nested_groups_closure_and_removal", nested_groups)

        def injected_429_and_eap_prefix():
            f.put_state(base_state())
            f.faults(fail_rate=1.0, fail_status=429, fail_retry_after=7)
            try:
                r = get("/myself")
                eq(r.status, 429)
                eq(r.header("retry-after"), "7")
                eq(r.header("X-RateLimit-Remaining"), "0")
                eq(r.header("X-RateLimit-Limit"), "100")
                check(r.json()["errorMessages"], r.body)
                f.faults(fail_rate=1.0, fail_status=429)
                eq(get("/myself").header("retry-after"), "1", "default 1 s")
                f.faults(rate_limit_per_min=60, ratelimit_header_prefix="X-RateLimiting")
                r = get("/myself")
                eq(r.status, 200)
                eq(r.header("X-RateLimiting-Limit"), "60")
                eq(r.header("X-RateLimiting-Remaining"), "59")
                eq(r.header("X-RateLimit-Limit"), None)
                eq(r.header("retry-after"), "0")
                r = f.request("PUT", "/__fake/faults", body={"ratelimit_header_prefix": "X"})
                eq(r.status, 400)
            finally:
                f.faults()
        t.run("injected_429_retry_after_and_eap_prefix", injected_429_and_eap_prefix)

        def request_log():
            f.clear_requests()
            get("/user?username=admin")
            log = f.requests()
            eq(log[-1]["path"], API + "/user")
            eq(log[-1]["status"], 200)
        t.run("request_log", request_log)

        def case_sensitive_names():
            saved = f.state()
            try:
                st = dict(saved)
                st["users"] = saved["users"] + [{"name": "frank.lillo", "displayName": "Frank",
                                                 "emailAddress": "f@example.com", "active": True}]
                st["groups"] = saved["groups"] + ["devs"]
                st["case_sensitive_names"] = True
                f.put_state(st)
                eq(f.state().get("case_sensitive_names"), True)
                eq(get("/user?username=Frank.Lillo").status, 404)
                eq(get("/user?username=frank.lillo").status, 200)
                eq(send("POST", "/group/user?groupname=devs", {"name": "Frank.Lillo"}).status, 404)
                eq(send("POST", "/group/user?groupname=devs", {"name": "frank.lillo"}).status, 201)
                st["case_sensitive_names"] = False
                f.put_state(st)
                eq(get("/user?username=Frank.Lillo").status, 200)
                check("case_sensitive_names" not in f.state(), "absent when false")
            finally:
                f.put_state(saved)
        t.run("case_sensitive_names", case_sensitive_names)

    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
