#!/usr/bin/env python3
"""GET user/list and group/member pages of the Jira simulator are the exact bytes of the dicts.

sim/jira.py writes user/list pages bean by bean as text (a page of 2,000 dicts built and
encoded held the simulator's lock for 80-100 ms). This test serves pages in process (no
sockets) for users whose names, keys, e-mails and display names need escaping in JSON or in
URLs (quotes, backslashes, control characters, spaces, '+', '&', '/', '%', non-ASCII, astral
characters), inactive users, direct and nested group counts, every page of a cursor walk, and
the page_no_flags and jira_ignore_expand faults, and compares each body byte for byte with
the page built as a dict of user_bean() (what GET user serves) and encoded by json_response.
The same for every page of group/member (written as text too, each member's UserJsonBean
encoded once per state) of direct and nested groups, with and without inactive users.
Last stdout line: "N passed, N failed".
"""

import base64
import json
import os
import sys
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fake import Runner, product_class  # noqa: E402
from sim.common import Headers, Request, Server, json_response  # noqa: E402
from sim.atlassian import fold  # noqa: E402
from sim import jira  # noqa: E402

API = "/rest/api/2"
BASIC = "Basic " + base64.b64encode(b"admin:admin").decode()

ODD = ["plain", "dot.ted_under-tilde~", "With Space", 'quo"te', "back\\slash", "tab\there",
       "ctl\x01\x1f", "plus+amp&eq=", "sl/ash%25", "caf\u00e9", "\u65e5\u672c", "smile\U0001F600",
       "line\u2028sep", "del\x7f"]


def state():
    users = [{"name": "admin", "key": "admin", "displayName": "Administrator",
              "emailAddress": "admin@example.com", "active": True}]
    for i, s in enumerate(ODD):
        users.append({"name": "u%02d %s" % (i, s), "displayName": "D " + s,
                      "emailAddress": s + "@ex.com", "active": i % 3 != 0})
        users.append({"name": "k%02d" % i, "key": "key " + s, "displayName": s,
                      "emailAddress": "", "active": True})
    names = [u["name"] for u in users]
    return {"users": users, "groups": ["g1", "g2", "parent"],
            "members": {"g1": names[::2], "g2": names[::3], "parent": names[:4]},
            "nested": {"parent": ["g1"]}, "projects": [], "components": []}


def expected(srv, req, target):
    """The page as the dict-building code wrote it: user_bean() per user, json_response."""
    p = srv.product
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
    n = int(q.get("maxResults", ["2000"])[0])
    users = p.sorted_users()
    start = 0
    cursor = q.get("cursor", [None])[0]
    if cursor:
        last = base64.urlsafe_b64decode(cursor.encode("ascii") + b"==").decode("utf-8")[2:]
        start = sum(1 for u in users if fold(u["name"]) <= last)
    n, end, last_page = p.page_window(start, n, len(users))
    page = users[start:end]
    counts = p.group_counts()
    selfq = {"maxResults": n}
    if cursor:
        selfq["cursor"] = cursor
    body = {"self": "%s%s/user/list?%s" % (req.base_url, API, urllib.parse.urlencode(selfq)),
            "maxResults": n, "values": [p.user_bean(req, u, counts=counts) for u in page],
            "isLast": last_page}
    if srv.faults.get("page_no_flags"):
        del body["isLast"]
    if not last_page and page:
        nc = base64.urlsafe_b64encode(("u:" + fold(page[-1]["name"])).encode("utf-8")) \
            .decode("ascii").rstrip("=")
        body["nextCursor"] = nc
        body["nextPage"] = "%s%s/user/list?%s" % (
            req.base_url, API, urllib.parse.urlencode({"maxResults": n, "cursor": nc}))
    return json_response(200, body)


def walk(srv, size):
    """Every page of a cursor walk: (served, expected) pairs."""
    out = []
    target = API + "/user/list?maxResults=%d" % size
    while target:
        h = Headers()
        h.add("Authorization", BASIC)
        req = Request("GET", target, h, b"", srv.base_url)
        resp = srv.dispatch(req)
        out.append((resp, expected(srv, req, target)))
        b = json.loads(resp.body)
        target = API + "/user/list?maxResults=%d&cursor=%s" % (size, b["nextCursor"]) \
            if "nextCursor" in b else None
    return out


def members_expected(srv, req, group, start, n, inactive):
    """A group/member page as the dict-building code wrote it: user_json() per member."""
    p = srv.product
    g = p.find_group(group)
    us = sorted((p.bykey[k] for k in p.effective_members(fold(g))), key=lambda u: fold(u["name"]))
    if not inactive:
        us = [u for u in us if u["active"]]
    n, end, is_last = p.page_window(start, n, len(us))

    def link(s):
        return "%s%s/group/member?%s" % (req.base_url, API, urllib.parse.urlencode({
            "includeInactiveUsers": "true" if inactive else "false", "maxResults": n,
            "groupname": g, "startAt": s}))
    body = {"self": link(start), "maxResults": n, "startAt": start, "total": len(us),
            "isLast": is_last, "values": [p.user_json(req, u) for u in us[start:end]]}
    if srv.faults.get("page_no_flags"):
        del body["isLast"]
    if not is_last:
        body["nextPage"] = link(end)
    return json_response(200, body)


def members_walk(srv, group, size, inactive):
    """Every page of a group's member listing: (served, expected) pairs."""
    out, start = [], 0
    while start is not None:
        target = API + "/group/member?" + urllib.parse.urlencode({
            "groupname": group, "maxResults": size, "startAt": start,
            "includeInactiveUsers": "true" if inactive else "false"})
        h = Headers()
        h.add("Authorization", BASIC)
        req = Request("GET", target, h, b"", srv.base_url)
        resp = srv.dispatch(req)
        out.append((resp, members_expected(srv, req, group, start, size, inactive)))
        b = json.loads(resp.body)
        start = start + len(b["values"]) if "nextPage" in b else None
    return out


def main():
    t = Runner()
    srv = Server(product_class("jira"), port=0, state=state())
    srv.tcp.server_close()

    defaults = Server._default_faults(product_class("jira"))

    def same(faults, size):
        srv.faults.update(faults)
        try:
            pages = walk(srv, size)
            if len(pages) < 2:
                raise AssertionError("one page only")
            for i, (got, want) in enumerate(pages):
                if got.status != 200 or got.body != want.body:
                    raise AssertionError("page %d differs:\n%r\n%r" % (i, got.body, want.body))
                if got.headers != want.headers:
                    raise AssertionError("headers %r != %r" % (got.headers, want.headers))
        finally:
            for k in faults:
                srv.faults[k] = defaults[k]

    def quoting():  # the beans' URLs (the reference above uses the same _q)
        for x in ODD + ["", "A-Z_a.z~09", "a b", "caf\u00e9"]:
            for v in (x, "key " + x, "u00 " + x):
                if jira._q(v) != urllib.parse.quote(v, safe=""):
                    raise AssertionError("_q(%r) = %r" % (v, jira._q(v)))

    t.run("url_quoting_is_quote", quoting)
    t.run("pages_of_7", same, {}, 7)
    t.run("full_last_page_then_an_empty_one", same, {"page_lazy_last": True},
          len(ODD) * 2 + 1)
    t.run("page_no_flags", same, {"page_no_flags": True}, 5)
    t.run("jira_ignore_expand", same, {"jira_ignore_expand": True}, 9)
    t.run("page_cap_4", same, {"page_cap": 4}, 10)

    def same_members(faults, size):
        srv.faults.update(faults)
        try:
            for group in ("g1", "g2", "parent"):  # parent: its members and g1's (nested)
                for inactive in (False, True):
                    pages = members_walk(srv, group, size, inactive)
                    if len(pages) < 2:
                        raise AssertionError("%s: one page only" % group)
                    for i, (got, want) in enumerate(pages):
                        if got.status != 200 or got.body != want.body:
                            raise AssertionError("%s page %d differs:\n%r\n%r"
                                                 % (group, i, got.body, want.body))
                        if got.headers != want.headers:
                            raise AssertionError("headers %r != %r" % (got.headers, want.headers))
        finally:
            for k in faults:
                srv.faults[k] = defaults[k]

    t.run("group_member_pages_of_3", same_members, {}, 3)
    t.run("group_member_page_no_flags", same_members, {"page_no_flags": True}, 4)
    t.run("group_member_full_last_page", same_members, {"page_lazy_last": True}, 5)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
