#!/usr/bin/env python3
"""Okta simulator behaviour and contract tests (tests/fakes/sim/okta.py).

Starts `fake.py okta` on a free port and checks what an Okta client relies on: the subset
spec's response schemas, the recorded fixtures' field and header forms, paging, link headers,
DEPROVISIONED visibility, filter/search/q, auth, rate limits, request ids and the System Log
events written when the state changes. Prints "N passed, N failed" last; exits non-zero on
failure.
"""

import os
import re
import sys
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import contract  # noqa: E402
import fake  # noqa: E402

DATA = os.environ.get("DATA_DIR") or os.path.join(HERE, "..", "data")
SPEC = os.path.join(DATA, "specs", "okta-management-sync-subset.yaml")
FIXTURES = os.path.join(DATA, "fixtures", "okta")
AUTH = {"Authorization": "SSWS test-token", "Accept": "application/json"}
APP = "0oa1testapp000000001"


def uid(n):
    return "00u%017d" % n


def gid(n):
    return "00g%017d" % n


def user(n, status="ACTIVE", first=None, last=None, login=None):
    first = first or "First%d" % n
    last = last or "Last%d" % n
    login = login or "user%d@example.com" % n
    return {"id": uid(n), "status": status, "created": "2024-01-01T00:00:00.000Z",
            "activated": None if status == "STAGED" else "2024-01-01T00:00:00.000Z",
            "statusChanged": None if status == "STAGED" else "2024-01-02T00:00:00.000Z",
            "lastLogin": None, "lastUpdated": "2024-01-02T00:00:00.000Z",
            "passwordChanged": None, "type": {"id": "oty00000000000000001"},
            "profile": {"firstName": first, "lastName": last, "mobilePhone": None,
                        "secondEmail": None, "login": login, "email": login},
            "credentials": {"provider": {"type": "OKTA", "name": "OKTA"}}}


def group(n, name, gtype="OKTA_GROUP"):
    return {"id": gid(n), "created": "2024-01-01T00:00:00.000Z",
            "lastUpdated": "2024-01-01T00:00:00.000Z",
            "lastMembershipUpdated": "2024-01-01T00:00:00.000Z",
            "objectClass": ["okta:user_group"], "type": gtype,
            "profile": {"name": name, "description": ""}}


def base_state():
    """5 users (one DEPROVISIONED, one STAGED, one SUSPENDED), 4 groups, one app."""
    users = [user(1, first="Ann", last="Ängström", login="Ann.A+ops@Example.com"),
             user(2, first="Bob", last="Brown"),
             user(3, "DEPROVISIONED", first="Cid", last="Clark"),
             user(4, "STAGED", first="Dee", last="Dunn"),
             user(5, "SUSPENDED", first="Eve", last="Evans")]
    groups = [group(1, "Everyone", "BUILT_IN"), group(2, "Engineering"),
              group(3, "eng-platform"), group(4, "AD Staff", "APP_GROUP")]
    groups[0]["profile"]["description"] = "All users in your organization"
    return {"users": users, "groups": groups,
            "group_members": {gid(1): [uid(i) for i in range(1, 6)],
                              gid(2): [uid(1), uid(2), uid(3)],
                              gid(3): [uid(2)], gid(4): []},
            "apps": {APP: {"users": [uid(1)], "groups": [gid(2)]}},
            "logs": []}


def big_state(n_users, group_size=0):
    st = {"users": [user(i) for i in range(1, n_users + 1)],
          "groups": [group(1, "big")],
          "group_members": {gid(1): [uid(i) for i in range(1, group_size + 1)]},
          "apps": {APP: {"users": [uid(i) for i in range(1, n_users + 1)], "groups": []}},
          "logs": []}
    return st


def links(r):
    """{rel: url} from the link header lines; asserts one relation per line."""
    out = {}
    for v in r.header_all("link"):
        m = re.fullmatch(r'<(http://127\.0\.0\.1:\d+/[^>]*)>; rel="(self|next)"', v)
        assert m, "bad link line %r" % v
        assert m.group(2) not in out, "relation %s twice" % m.group(2)
        out[m.group(2)] = m.group(1)
    return out


def follow(f, path, headers=AUTH, max_pages=1000):
    """All items over every page; returns (items, pages)."""
    items, pages, url = [], 0, path
    while url:
        r = f.get(url, headers)
        assert r.status == 200, r
        items += r.json()
        pages += 1
        url = links(r).get("next")
        assert pages <= max_pages
    return items, pages


def err(r, status, code):
    assert r.status == status, "want %d got %r" % (status, r)
    b = r.json()
    assert b["errorCode"] == code, b
    assert b["errorLink"] == code and b["errorId"] and isinstance(b["errorCauses"], list), b
    assert r.header("Content-Type").startswith("application/json")
    return b


def q(s):
    return urllib.parse.quote(s, safe="")


# ------------------------------------------------------------------------------------------

def t_contract_schemas(f):
    """Every endpoint's response validates against the subset spec (leniently)."""
    spec = contract.load_spec(SPEC)
    f.put_state(dict(base_state(), _baseline=True))
    cases = [
        ("/api/v1/users", 200), ("/api/v1/users?search=" + q('status eq "ACTIVE"'), 200),
        ("/api/v1/users/" + uid(1), 200), ("/api/v1/users/nobody", 404),
        ("/api/v1/users/%s/groups" % uid(1), 200),
        ("/api/v1/groups", 200), ("/api/v1/groups?expand=stats", 200),
        ("/api/v1/groups/" + gid(2), 200), ("/api/v1/groups/00gnope", 404),
        ("/api/v1/groups/%s/users" % gid(2), 200),
        ("/api/v1/apps/%s/users" % APP, 200), ("/api/v1/apps/%s/users?expand=user" % APP, 200),
        ("/api/v1/apps/%s/users/%s" % (APP, uid(2)), 200),
        ("/api/v1/apps/%s/groups" % APP, 200), ("/api/v1/apps/%s/groups/%s" % (APP, gid(2)), 200),
        ("/api/v1/apps/0oanope/users", 404),
        ("/api/v1/apps/" + APP, 200), ("/api/v1/apps/0oanope", 404),
    ]
    # make some events so /logs has content
    st = f.state()
    st["users"][1]["profile"]["title"] = "Boss"
    st["group_members"][gid(3)].append(uid(1))
    f.put_state(st)
    cases.append(("/api/v1/logs", 200))
    cases.append(("/api/v1/logs?filter=" + q("published gt 1"), 400))
    for path, status in cases:
        r = f.get(path, AUTH)
        assert r.status == status, (path, r)
        body = r.json()
        errs = contract.validate(spec, "GET", path.split("?")[0], status, body)
        assert not errs, (path, errs)
        if status == 200 and isinstance(body, list):
            assert body, "%s returned nothing to validate" % path
    # the checker itself fails on a wrong shape
    assert contract.validate(spec, "GET", "/api/v1/users", 200, [{"id": 1}])


def t_get_application_strict(f):
    """GET /api/v1/apps/{appId} answers an OpenIdConnectApplication that validates strictly
    (required name, settings and credentials; no leniency), and 404 E0000007 for an unknown app."""
    import jsonschema
    import yaml
    with open(SPEC) as fh:
        spec = yaml.safe_load(fh)
    op = spec["paths"]["/api/v1/apps/{appId}"]["get"]
    assert op["operationId"] == "getApplication"
    f.put_state(dict(base_state(), _baseline=True))
    r = f.get("/api/v1/apps/" + APP, AUTH)
    assert r.status == 200, r
    body = r.json()
    mapping = op["responses"]["200"]["content"]["application/json"]["schema"]["discriminator"]["mapping"]
    root = dict(spec, **{"$ref": mapping[body["signOnMode"]]})
    errs = ["%s: %s" % ("/".join(map(str, e.absolute_path)), e.message)
            for e in jsonschema.Draft7Validator(root).iter_errors(body)]
    assert not errs, errs
    assert (body["id"], body["name"], body["status"]) == (APP, "oidc_client", "ACTIVE"), body
    err(f.get("/api/v1/apps/0oanope", AUTH), 404, "E0000007")


def t_log_event_geo_and_legacy(f):
    """System Log events carry the client's location as the recorded admin event does (client
    and every ipChain entry), and legacyEventType: the legacy name, or null for a type without."""
    f.put_state(dict(base_state(), _baseline=True))
    st = f.state()
    st["users"][1]["profile"]["title"] = "Boss"
    st["group_members"][gid(3)].append(uid(1))
    f.put_state(st)
    evs = f.get("/api/v1/logs", AUTH).json()
    assert evs
    rec = contract.load_fixture(os.path.join(DATA, "fixtures", "okta",
                                             "demisto_syslog_group_membership_remove.json"))
    rec = rec[0][1]["body"][0]
    for ev in evs:
        c = ev["client"]
        geo = c["geographicalContext"]
        assert all(isinstance(geo[k], str) and geo[k] for k in ("city", "country", "postalCode",
                                                                "state")), geo
        assert isinstance(geo["geolocation"]["lat"], float), geo
        assert (c["ipAddress"], geo) == (rec["client"]["ipAddress"],
                                         rec["client"]["geographicalContext"]), c
        assert ev["request"]["ipChain"] == [{"geographicalContext": geo, "ip": c["ipAddress"],
                                             "source": None, "version": "V4"}], ev["request"]
    by = {ev["eventType"]: ev["legacyEventType"] for ev in evs}
    assert by.get("group.user_membership.add") == "core.user_group_member.user_add", by
    assert "user.account.update_profile" in by, by
    assert all(v is None or (isinstance(v, str) and v.startswith(("core.", "app."))) for v in by.values()), by


def t_contract_genorg(f):
    """A generated org (custom profile attributes, AD groups, every status) stays valid."""
    import genorg
    st = genorg.generate(300, 12, seed=4, app_id=APP)
    f.put_state(dict(st, _baseline=True))
    spec = contract.load_spec(SPEC)
    g_ad = [g["id"] for g in st["groups"] if g["type"] == "APP_GROUP"][0]
    lists = ["/api/v1/users?limit=200", "/api/v1/users?search=" + q('status eq "DEPROVISIONED"'),
             "/api/v1/groups?expand=stats",
             "/api/v1/groups/%s/users?limit=200" % st["groups"][0]["id"],
             "/api/v1/apps/%s/users?expand=user&limit=500" % APP,
             "/api/v1/apps/%s/groups" % APP]
    for path in lists:
        items, _ = follow(f, path)
        assert items, path
        errs = contract.validate(spec, "GET", path.split("?")[0], 200, items)
        assert not errs, (path, errs)
    for path in ("/api/v1/users/" + st["users"][0]["id"], "/api/v1/groups/" + g_ad):
        errs = contract.validate(spec, "GET", path, 200, f.get(path, AUTH).json())
        assert not errs, (path, errs)


def t_contract_fixtures(f):
    """Field names and header forms match recorded real responses."""
    st = base_state()
    st["users"].append(user(8, "PROVISIONED"))  # the recorded single user is PROVISIONED
    f.put_state(dict(st, _baseline=True))
    pairs = [
        ("tf_get_user.json", "/api/v1/users/" + uid(8), ()),
        ("tf_list_users_search.json", "/api/v1/users?limit=200&search=" + q('profile.email sw "user"'), ()),
        ("py_list_users_pagination_link_next.json", "/api/v1/users?limit=1", ("[].credentials.password", "[].credentials.emails")),
        ("py_get_user_404_E0000007.json", "/api/v1/users/00usfgmn9xhwtA6f74x6", ()),
        ("py_list_group_users.json", "/api/v1/groups/%s/users" % gid(2), ("[].credentials.password", "[].credentials.emails")),
        ("tf_get_group.json", "/api/v1/groups/" + gid(2), ()),
        ("tf_list_groups_builtin.json", "/api/v1/groups?filter=" + q('type eq "BUILT_IN"') + "&limit=200", ()),
        ("tf_list_groups_q.json", "/api/v1/groups?limit=200&q=eng", ()),
        ("tf_list_user_groups.json", "/api/v1/users/%s/groups" % uid(1), ()),
        ("tf_list_app_users.json", "/api/v1/apps/%s/users" % APP, ()),
        ("tf_get_app_user.json", "/api/v1/apps/%s/users/%s" % (APP, uid(1)), ()),
        ("tf_list_app_groups.json", "/api/v1/apps/%s/groups?limit=200" % APP, ()),
    ]
    for fx, path, ignore in pairs:
        for _req, resp in contract.load_fixture(os.path.join(FIXTURES, fx))[:1]:
            r = f.get(path, AUTH)
            assert r.status == resp["status"], (fx, r)
            probs = contract.compare_to_fixture(r.headers, r.json(), resp, ignore=ignore)
            assert not probs, (fx, probs)
            # link presence follows the recording: q on groups has none at all
            if not any(k.lower() == "link" for k, _ in resp["headers"]):
                if fx == "tf_list_groups_q.json":
                    assert not r.header_all("link"), r.headers
    # System Log events have the shape of the recorded membership event
    st = f.state()
    st["group_members"][gid(3)].append(uid(1))
    f.put_state(st)
    r = f.get("/api/v1/logs?filter=" + q('eventType eq "group.user_membership.add"'), AUTH)
    fx = contract.load_fixture(os.path.join(FIXTURES, "demisto_syslog_group_membership_remove.json"))[0][1]
    probs = contract.compare_to_fixture(r.headers, r.json(), fx, headers=())
    assert not probs, probs
    # 429 form
    f.faults(okta_buckets={"/api/v1/users": 0})
    r = f.get("/api/v1/users", AUTH)
    fx = contract.load_fixture(os.path.join(FIXTURES, "py_429_rate_limited_then_retry.json"))[0][1]
    probs = contract.compare_to_fixture(r.headers, r.json(), fx)
    assert not probs, probs
    f.faults()


def t_paging_users(f):
    """Exactly a page size gives no next link; one over gives one more page of one item."""
    f.put_state(dict(big_state(200), _baseline=True))
    r = f.get("/api/v1/users", AUTH)
    assert len(r.json()) == 200 and "next" not in links(r), links(r)
    assert links(r)["self"].endswith("/api/v1/users?limit=200"), links(r)
    f.put_state(dict(big_state(201), _baseline=True))
    r = f.get("/api/v1/users", AUTH)
    ls = links(r)
    assert len(r.json()) == 200 and "next" in ls
    assert re.search(r"[?&]after=[^&]+", ls["next"]) and "limit=200" in ls["next"], ls
    r2 = f.get(ls["next"], AUTH)
    assert [u["id"] for u in r2.json()] == [uid(201)] and "next" not in links(r2)
    # limit over the maximum is clamped to 200
    r = f.get("/api/v1/users?limit=500", AUTH)
    assert len(r.json()) == 200
    # small pages cover everything exactly once, in a stable order
    items, pages = follow(f, "/api/v1/users?limit=7")
    assert [u["id"] for u in items] == [uid(i) for i in range(1, 202)] and pages == 29
    # cursor stays valid when users are added and removed between pages
    r = f.get("/api/v1/users?limit=50", AUTH)
    nxt = links(r)["next"]
    st = f.state()
    st["users"] = [u for u in st["users"] if u["id"] != uid(10) and u["id"] != uid(60)]
    st["apps"][APP]["users"] = [x for x in st["apps"][APP]["users"] if x not in (uid(10), uid(60))]
    st["group_members"] = {}
    st["users"].append(user(999))
    f.put_state(st)
    rest, _ = follow(f, nxt)
    ids = [u["id"] for u in rest]
    assert ids[0] == uid(51) and uid(60) not in ids and uid(999) in ids and len(ids) == len(set(ids))


def t_paging_members_and_apps(f):
    f.put_state(dict(big_state(1001, group_size=1000), _baseline=True))
    r = f.get("/api/v1/groups/%s/users" % gid(1), AUTH)
    assert len(r.json()) == 1000 and "next" not in links(r)
    assert links(r)["self"].endswith("/users?limit=1000"), links(r)  # default 1000
    st = f.state()
    st["group_members"][gid(1)].append(uid(1001))
    f.put_state(st)
    r = f.get("/api/v1/groups/%s/users" % gid(1), AUTH)
    assert len(r.json()) == 1000 and "next" in links(r)
    r2 = f.get(links(r)["next"], AUTH)
    assert [u["id"] for u in r2.json()] == [uid(1001)]
    # app users: default 50, max 500, min 1
    r = f.get("/api/v1/apps/%s/users" % APP, AUTH)
    assert len(r.json()) == 50 and "limit=50" in links(r)["self"] and "next" in links(r)
    assert len(f.get("/api/v1/apps/%s/users?limit=900" % APP, AUTH).json()) == 500
    assert len(f.get("/api/v1/apps/%s/users?limit=0" % APP, AUTH).json()) == 1
    items, pages = follow(f, "/api/v1/apps/%s/users?limit=500" % APP)
    assert len(items) == 1001 and pages == 3
    r = f.get("/api/v1/users?limit=abc", AUTH)
    err(r, 400, "E0000001")


def t_app_assignments(f):
    f.put_state(dict(base_state(), _baseline=True))
    r = f.get("/api/v1/apps/%s/users" % APP, AUTH)
    scope = {a["id"]: a["scope"] for a in r.json()}
    # direct and via Engineering: Ann keeps GROUP; Bob via Engineering
    # (GROUP); Cid is DEPROVISIONED
    assert scope == {uid(1): "GROUP", uid(2): "GROUP"}, scope
    a = r.json()[0]
    assert a["externalId"] is None and a["credentials"]["userName"] == "Ann.A+ops@Example.com"
    assert a["status"] == "ACTIVE" and a["syncState"] == "DISABLED"
    # only direct: USER
    st = base_state()
    st["apps"][APP] = {"users": [uid(1), uid(5)], "groups": [gid(3)],
                       "app_users": {uid(5): {"status": "PROVISIONED", "syncState": "SYNCHRONIZED",
                                              "externalId": "ext-5"}}}
    f.put_state(dict(st, _baseline=True))
    got = {a["id"]: (a["scope"], a["status"], a["syncState"], a["externalId"])
           for a in f.get("/api/v1/apps/%s/users" % APP, AUTH).json()}
    assert got == {uid(1): ("USER", "ACTIVE", "DISABLED", None),
                   uid(2): ("GROUP", "ACTIVE", "DISABLED", None),
                   uid(5): ("USER", "PROVISIONED", "SYNCHRONIZED", "ext-5")}, got
    one = f.get("/api/v1/apps/%s/users/%s" % (APP, uid(5)), AUTH).json()
    assert one["status"] == "PROVISIONED" and one["externalId"] == "ext-5"
    assert f.state()["apps"][APP]["app_users"] == st["apps"][APP]["app_users"]
    for bad in ({"nobody": {}}, {uid(5): {"status": "WEIRD"}}, {uid(5): {"syncState": "X"}},
                {uid(5): {"scope": "USER"}}, {uid(5): {"externalId": 5}}):
        st["apps"][APP]["app_users"] = bad
        r = f.request("PUT", "/__fake/state", body=dict(st, _baseline=True))
        assert r.status == 400, bad
    f.put_state(dict(base_state(), _baseline=True))
    r = f.get("/api/v1/apps/%s/users" % APP, AUTH)
    r = f.get("/api/v1/apps/%s/users?expand=user" % APP, AUTH)
    assert r.json()[1]["_embedded"]["user"]["id"] == uid(2)
    err(f.get("/api/v1/apps/%s/users/%s" % (APP, uid(4)), AUTH), 404, "E0000007")
    # app groups: min 20 (limit=1 still returns both), ApplicationGroupAssignment shape
    st = f.state()
    st["apps"][APP]["groups"].append(gid(3))
    f.put_state(st)
    r = f.get("/api/v1/apps/%s/groups?limit=1" % APP, AUTH)
    body = r.json()
    assert [g["id"] for g in body] == [gid(2), gid(3)] and "limit=20" in links(r)["self"], body
    assert body[0]["priority"] == 0 and body[0]["profile"] == {}
    assert body[0]["_links"]["group"]["href"].endswith("/api/v1/groups/" + gid(2))
    assert len(f.get("/api/v1/apps/%s/groups?limit=999" % APP, AUTH).json()) == 2
    err(f.get("/api/v1/apps/0oanope/groups", AUTH), 404, "E0000007")


def t_deprovisioned_visibility(f):
    f.put_state(dict(base_state(), _baseline=True))
    ids = [u["id"] for u in f.get("/api/v1/users", AUTH).json()]
    assert uid(3) not in ids and len(ids) == 4, ids
    r = f.get("/api/v1/users?filter=" + q('status eq "DEPROVISIONED"'), AUTH)
    assert [u["id"] for u in r.json()] == [uid(3)]
    r = f.get("/api/v1/users?search=" + q('status eq "DEPROVISIONED"'), AUTH)
    assert [u["id"] for u in r.json()] == [uid(3)]
    r = f.get("/api/v1/users?filter=" + q('lastUpdated gt "2000-01-01T00:00:00.000Z"'), AUTH)
    assert len(r.json()) == 5
    r = f.get("/api/v1/users?q=Cid", AUTH)
    assert r.json() == []
    assert f.get("/api/v1/users/" + uid(3), AUTH).json()["status"] == "DEPROVISIONED"
    # group members keep deprovisioned users
    assert uid(3) in [u["id"] for u in f.get("/api/v1/groups/%s/users" % gid(2), AUTH).json()]


def t_filters(f):
    f.put_state(dict(base_state(), _baseline=True))

    def ids(expr, param="filter"):
        r = f.get("/api/v1/users?%s=%s" % (param, q(expr)), AUTH)
        assert r.status == 200, (expr, r)
        return sorted(u["id"] for u in r.json())

    assert ids('status eq "ACTIVE"') == [uid(1), uid(2)]
    assert ids('status EQ "ACTIVE" AND profile.firstName eq "Bob"') == [uid(2)]
    assert ids('profile.login eq "user4@example.com" or id eq "%s"' % uid(5)) == [uid(4), uid(5)]
    assert ids('status eq "active"') == []  # values are case-sensitive
    assert ids('profile.login eq "Ann.A+ops@Example.com"') == [uid(1)]
    assert ids('(status eq "STAGED" or status eq "SUSPENDED") and profile.lastName eq "Dunn"') == [uid(4)]
    assert ids('lastUpdated ge "2024-01-02T00:00:00.000Z"') == [uid(i) for i in range(1, 6)]
    assert ids('lastUpdated lt "2024-01-02T00:00:00.000Z"') == []
    for bad in ('not status eq "ACTIVE"', 'Status eq "ACTIVE"', 'status sw "A"',
                'status eq ACTIVE', 'profile.title eq "x"', 'status eq "A" and', 'created gt "2020-01-01T00:00:00.000Z"',
                'lastUpdated gt "yesterday"'):
        err(f.get("/api/v1/users?filter=" + q(bad), AUTH), 400, "E0000031")
    # search: sw/co/gt, any profile attribute, parentheses
    assert ids('profile.lastName sw "B"', "search") == [uid(2)]
    assert ids('profile.email co "user2"', "search") == [uid(2)]
    assert ids('(status lt "STAGED" or status gt "STAGED") and profile.firstName sw "D"', "search") == []
    assert ids('profile.lastName eq "Ängström"', "search") == [uid(1)]
    assert ids('type.id eq "oty00000000000000001" and status eq "DEPROVISIONED"', "search") == [uid(3)]
    for bad in ('status co "ACT"', 'status ne "ACTIVE"', 'foo eq "x"', '(status eq "ACTIVE"'):
        err(f.get("/api/v1/users?search=" + q(bad), AUTH), 400, "E0000031")
    # q: startsWith on first/last name and email, default 10, no next link
    r = f.get("/api/v1/users?q=ev", AUTH)
    assert [u["id"] for u in r.json()] == [uid(5)] and "next" not in links(r)
    f.put_state(dict(big_state(30), _baseline=True))
    r = f.get("/api/v1/users?q=first", AUTH)
    assert len(r.json()) == 10 and "next" not in links(r)


def t_groups(f):
    f.put_state(dict(base_state(), _baseline=True))
    r = f.get("/api/v1/groups?filter=" + q('type eq "OKTA_GROUP"'), AUTH)
    assert [g["id"] for g in r.json()] == [gid(2), gid(3)]
    r = f.get("/api/v1/groups?filter=" + q('type eq "BUILT_IN"'), AUTH)
    assert [g["profile"]["name"] for g in r.json()] == ["Everyone"]
    r = f.get("/api/v1/groups?expand=stats&filter=" + q('id eq "%s"' % gid(2)), AUTH)
    st = r.json()[0]["_embedded"]["stats"]
    assert st["usersCount"] == 3 and st["appsCount"] == 1 and st["hasAdminPrivlege"] is False
    err(f.get("/api/v1/groups?filter=" + q('profile.name eq "x"'), AUTH), 400, "E0000031")
    r = f.get("/api/v1/groups?search=" + q('profile.name sw "eng"'), AUTH)
    assert sorted(g["id"] for g in r.json()) == [gid(2), gid(3)]
    # q: name startsWith, no Link header at all, capped at 300
    r = f.get("/api/v1/groups?q=Eng", AUTH)
    assert sorted(g["id"] for g in r.json()) == [gid(2), gid(3)] and not r.header_all("link")
    many = {"users": [], "groups": [group(i, "team-%04d" % i) for i in range(1, 351)],
            "group_members": {}, "apps": {}, "logs": [], "_baseline": True}
    f.put_state(many)
    r = f.get("/api/v1/groups?q=team&limit=1000", AUTH)
    assert len(r.json()) == 300 and not r.header_all("link")
    r = f.get("/api/v1/groups?limit=200", AUTH)
    assert len(r.json()) == 200 and "next" in links(r)
    assert len(f.get(links(r)["next"], AUTH).json()) == 150
    # lastMembershipUpdated moves on membership change only; lastUpdated on profile change only
    f.put_state(dict(base_state(), _baseline=True))
    st = f.state()
    st["group_members"][gid(3)].append(uid(1))
    st["groups"][2]["profile"]["description"] = "changed"
    f.put_state(st)
    g2 = f.get("/api/v1/groups/" + gid(2), AUTH).json()
    g3 = f.get("/api/v1/groups/" + gid(3), AUTH).json()
    assert g2["lastMembershipUpdated"] == "2024-01-01T00:00:00.000Z"
    assert g3["lastMembershipUpdated"] > "2025" and g3["lastUpdated"] > "2025"
    r = f.get("/api/v1/groups?filter=" + q('lastMembershipUpdated gt "2024-06-01T00:00:00.000Z"'), AUTH)
    assert [g["id"] for g in r.json()] == [gid(3)]
    r = f.get("/api/v1/users/%s/groups" % uid(1), AUTH)
    assert [g["id"] for g in r.json()] == [gid(1), gid(2), gid(3)]
    assert links(r)["self"].endswith("/groups?limit=200")


def t_group_description_never_null(f):
    """Recorded groups (tf_get_group.json, tf_list_groups_q.json, ...) carry a string or "" as
    profile.description, never null: the simulator and genorg follow them."""
    import genorg
    st = base_state()
    del st["groups"][1]["profile"]["description"]
    st["groups"][2]["profile"]["description"] = None
    f.put_state(dict(st, _baseline=True))
    items, _ = follow(f, "/api/v1/groups?limit=200")
    got = [g["profile"]["description"] for g in items]
    assert got == ["All users in your organization", "", "", ""], got
    assert f.get("/api/v1/groups/" + gid(4), AUTH).json()["profile"]["description"] == ""
    gen = genorg.generate(200, 40, seed=4, app_id=APP)
    types = set()
    for g in gen["groups"]:
        assert isinstance(g["profile"]["description"], str), g
        types.add(g["type"])
    assert types == {"BUILT_IN", "OKTA_GROUP", "APP_GROUP"}, types
    f.put_state(dict(gen, _baseline=True))
    items, _ = follow(f, "/api/v1/groups?limit=200")
    assert len(items) == 40 and all(isinstance(g["profile"]["description"], str) for g in items)


def t_raw_records_and_fail_first(f):
    """okta_raw_records serves malformed records exactly as given; okta_fail_first fails the
    first N matching requests, then none."""
    f.put_state(dict(base_state(), _baseline=True))
    path = "/api/v1/groups/%s/users" % gid(2)
    bad = [None, "x", {}, {"id": None}, {"id": 7}, {"id": "0" * 70000}]
    f.faults(okta_raw_records=[{"path": "^/api/v1/groups/[^/]+/users$", "records": bad}])
    got = f.get(path + "?limit=2", AUTH)
    assert got.status == 200
    assert [u["id"] for u in got.json()[:2]] == [uid(1), uid(2)] and got.json()[2:] == bad
    nxt = f.get(links(got)["next"], AUTH).json()  # later pages as they are
    assert [u["id"] for u in nxt] == [uid(3)], nxt
    f.faults(okta_raw_records=[{"path": "^/api/v1/groups/[^/]+/users$", "records": [None],
                                "replace": True}])
    assert f.get(path, AUTH).json() == [None]
    f.faults(okta_raw_records=[{"path": "^/api/v1/users/[^/]+$", "records": [{"id": None}]}])
    assert f.get("/api/v1/users/" + uid(1), AUTH).json() == {"id": None}
    assert f.get("/api/v1/groups/" + gid(2), AUTH).json()["id"] == gid(2)  # not matched
    assert f.request("PUT", "/__fake/faults",
                     body={"okta_raw_records": [{"path": "(", "records": []}]}).status == 400
    # okta_fail_first: 2 failures on the matching path, then success; others untouched
    f.clear_requests()
    f.faults(okta_fail_first=2, fail_status=500, fail_path="^/api/v1/groups$")
    assert f.get("/api/v1/users?limit=1", AUTH).status == 200
    r = f.get("/api/v1/groups", AUTH)
    assert r.status == 500 and r.json()["errorCode"] == "E0000009", r
    assert f.get("/api/v1/groups", AUTH).status == 500
    assert f.get("/api/v1/groups", AUTH).status == 200
    assert f.get("/api/v1/groups", AUTH).status == 200
    assert [(x["path"], x["status"]) for x in f.requests()] == \
        [("/api/v1/users", 200)] + [("/api/v1/groups", s) for s in (500, 500, 200, 200)]
    f.faults(okta_fail_first=1, fail_status=503)  # setting the faults again starts over
    assert f.get("/api/v1/groups", AUTH).status == 503
    assert f.get("/api/v1/groups", AUTH).status == 200


def t_get_user(f):
    f.put_state(dict(base_state(), _baseline=True))
    r = f.get("/api/v1/users/" + uid(1), AUTH)
    assert r.status == 200 and r.json()["id"] == uid(1) and r.header("ETag")
    lk = r.json()["_links"]
    assert lk["self"]["href"] == f.url + "/api/v1/users/" + uid(1) and "suspend" in lk
    assert f.get("/api/v1/users/" + q("ann.a+ops@example.com"), AUTH).json()["id"] == uid(1)
    assert f.get("/api/v1/users/user2", AUTH).json()["id"] == uid(2)  # login shortname
    b = err(f.get("/api/v1/users/00unknown", AUTH), 404, "E0000007")
    assert b["errorSummary"] == "Not found: Resource not found: 00unknown (User)"
    err(f.get("/api/v1/nothing", AUTH), 404, "E0000008")
    err(f.request("DELETE", "/api/v1/users/" + uid(1), headers=AUTH), 405, "E0000022")
    # omitCredentials trimming only with all three options
    ct = "application/json; okta-response=omitCredentials,omitCredentialsLinks,omitTransitioningToStatus"
    assert "credentials" not in f.get("/api/v1/users/" + uid(1), dict(AUTH, **{"Content-Type": ct})).json()
    ct = "application/json; okta-response=omitCredentials"
    assert "credentials" in f.get("/api/v1/users/" + uid(1), dict(AUTH, **{"Content-Type": ct})).json()


def t_auth(f):
    f.put_state(dict(base_state(), access_tokens=["tok-abc"], _baseline=True))
    for h in ({}, {"Authorization": "SSWS wrong"}, {"Authorization": "Bearer test-token"},
              {"Authorization": "ssws"}, {"Authorization": "Basic YWRtaW46YWRtaW4="}):
        b = err(f.get("/api/v1/users", h), 401, "E0000011")
        assert b["errorSummary"] == "Invalid token provided"
    assert f.get("/api/v1/users", {"Authorization": "Bearer tok-abc"}).status == 200
    # an unbound token is a Bearer token: the DPoP scheme is refused
    err(f.get("/api/v1/users", {"Authorization": "DPoP tok-abc"}), 401, "E0000011")
    assert f.get("/api/v1/users", {"Authorization": "Bearer tok-abd"}).status == 401


def t_rate_limits(f):
    f.put_state(dict(base_state(), _baseline=True))
    f.faults(okta_buckets={"/api/v1/users": 3}, okta_token_share=1)
    seen = []
    for i in range(3):
        r = f.get("/api/v1/users", AUTH)
        assert r.status == 200
        seen.append(int(r.header("X-Rate-Limit-Remaining")))
        assert r.header("X-Rate-Limit-Limit") == "3"
    assert seen == [2, 1, 0], seen
    r = f.get("/api/v1/users", AUTH)
    err(r, 429, "E0000047")
    assert r.header("X-Rate-Limit-Remaining") == "0" and r.header("X-Rate-Limit-Limit") == "3"
    from email.utils import parsedate_to_datetime
    wait = int(r.header("X-Rate-Limit-Reset")) - parsedate_to_datetime(r.header("Date")).timestamp()
    assert 0 < wait <= 61, wait
    # other buckets are independent: GET /users/{id}, /groups, /logs
    assert f.get("/api/v1/users/" + uid(1), AUTH).status == 200
    assert f.get("/api/v1/groups", AUTH).status == 200
    # the window resets 60 s after its first use
    f.request("PUT", "/__fake/clock", body={"advance": 61})
    r = f.get("/api/v1/users", AUTH)
    assert r.status == 200 and r.header("X-Rate-Limit-Remaining") == "2"
    # rate_limit_per_min applies to every bucket; okta_buckets names win
    f.faults(rate_limit_per_min=1, okta_buckets={"/api/v1/groups": 2}, okta_token_share=1)
    assert f.get("/api/v1/logs", AUTH).status == 200
    err(f.get("/api/v1/logs", AUTH), 429, "E0000047")
    assert f.get("/api/v1/groups", AUTH).status == 200 and f.get("/api/v1/groups", AUTH).status == 200
    assert f.get("/api/v1/groups", AUTH).status == 429
    # apps bucket covers /apps/{id}/users and /apps/{id}/groups together
    f.faults(okta_buckets={"/api/v1/apps": 1}, okta_token_share=1)
    assert f.get("/api/v1/apps/%s/users" % APP, AUTH).status == 200
    assert f.get("/api/v1/apps/%s/groups" % APP, AUTH).status == 429
    r = f.request("PUT", "/__fake/faults", body={"okta_buckets": {"/api/v1/nope": 1}})
    assert r.status == 400
    f.faults(okta_buckets="workforce")
    r = f.get("/api/v1/users/" + uid(1), AUTH)
    assert r.header("X-Rate-Limit-Limit") == "2000"
    assert f.get("/api/v1/users", AUTH).header("X-Rate-Limit-Limit") == "600"
    assert f.get("/api/v1/groups/%s/users" % gid(2), AUTH).header("X-Rate-Limit-Limit") == "500"
    assert f.get("/api/v1/logs", AUTH).header("X-Rate-Limit-Limit") == "120"
    f.faults()
    f.request("PUT", "/__fake/clock", body={"advance": -61})


def t_concurrency_limit(f):
    import threading
    f.put_state(dict(base_state(), _baseline=True))
    f.faults(okta_concurrency=1, latency_ms=300)
    res = []

    def one():
        c = f.connection()
        c.request("GET", "/api/v1/groups", headers=AUTH)
        r = c.getresponse()
        res.append((r.status, r.getheader("X-Rate-Limit-Limit"), r.getheader("X-Rate-Limit-Remaining")))
        r.read()
        c.close()

    ts = [threading.Thread(target=one) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    f.faults()
    statuses = sorted(s for s, _, _ in res)
    assert 200 in statuses and 429 in statuses, res
    assert all(lim == "0" and rem == "0" for s, lim, rem in res if s == 429), res


def t_headers(f):
    f.put_state(dict(base_state(), _baseline=True))
    ids = set()
    for path in ("/api/v1/users", "/api/v1/users/none", "/api/v1/groups"):
        r = f.get(path, AUTH)
        for h in ("X-Rate-Limit-Limit", "X-Rate-Limit-Remaining", "X-Rate-Limit-Reset", "Date",
                  "X-Okta-Request-Id", "Content-Type"):
            assert r.header(h), (path, h, r.headers)
        ids.add(r.header("X-Okta-Request-Id"))
    r = f.get("/api/v1/users")  # 401 too
    ids.add(r.header("X-Okta-Request-Id"))
    assert r.header("X-Rate-Limit-Limit") and len(ids) == 4


def t_request_log(f):
    f.put_state(dict(base_state(), _baseline=True))
    f.clear_requests()
    f.get("/api/v1/users?limit=2&filter=" + q('status eq "ACTIVE"'), AUTH)
    f.get("/api/v1/users/none", AUTH)
    f.state()
    log = f.requests()
    assert all(isinstance(r.pop("at"), float) for r in log), log
    assert log == [{"method": "GET", "path": "/api/v1/users",
                    "query": "limit=2&filter=" + q('status eq "ACTIVE"'), "status": 200},
                   {"method": "GET", "path": "/api/v1/users/none", "query": "", "status": 404}], log


def t_events(f):
    f.put_state(dict(base_state(), _baseline=True))
    r = f.get("/api/v1/logs", AUTH)
    assert r.json() == [] and "next" in links(r)  # empty poll still has next
    cursor = links(r)["next"]
    st = f.state()
    by = {u["id"]: u for u in st["users"]}
    by[uid(2)]["status"] = "SUSPENDED"
    by[uid(5)]["status"] = "ACTIVE"
    by[uid(4)]["status"] = "ACTIVE"
    by[uid(1)]["profile"]["lastName"] = "Angstrom"
    st["users"] = [u for u in st["users"] if u["id"] != uid(3)]
    for m in st["group_members"].values():
        if uid(3) in m:
            m.remove(uid(3))
    st["users"].append(user(6, first="Fay"))
    st["group_members"][gid(3)].append(uid(6))
    st["group_members"][gid(2)].remove(uid(2))
    st["apps"][APP]["users"].append(uid(4))
    st["groups"].append(group(7, "new-group"))
    st["groups"][1]["profile"]["description"] = "Eng"
    f.put_state(st)
    r = f.get(cursor, AUTH)
    evs = r.json()
    # target[] order varies: compare as sorted lists (select by type, never by index)
    got = [(e["eventType"], sorted((t["type"], t["id"]) for t in e["target"])) for e in evs]
    want = [
        ("user.lifecycle.activate", [("User", uid(4))]),
        ("user.lifecycle.create", [("User", uid(6))]),
        ("user.lifecycle.suspend", [("User", uid(2))]),
        ("user.lifecycle.unsuspend", [("User", uid(5))]),
        ("user.account.update_profile", [("User", uid(1))]),
        ("user.lifecycle.delete.initiated", [("User", uid(3))]),
        ("user.lifecycle.delete.completed", [("User", uid(3))]),
        ("group.lifecycle.create", [("UserGroup", gid(7))]),
        ("group.profile.update", [("UserGroup", gid(2))]),
        ("group.user_membership.add", [("User", uid(6)), ("UserGroup", gid(3))]),
        ("group.user_membership.remove", [("User", uid(2)), ("UserGroup", gid(2))]),
        ("application.user_membership.add", sorted([("AppUser", "0ua" + uid(4)[3:]), ("AppInstance", APP), ("User", uid(4))])),
        ("application.user_membership.remove", sorted([("AppUser", "0ua" + uid(2)[3:]), ("AppInstance", APP), ("User", uid(2))])),
    ]
    for w in want:
        assert w in got, (w, got)
    assert ("user.lifecycle.activate", [("User", uid(6))]) in got  # created ACTIVE
    # uid(3) was DEPROVISIONED before its deletion: no second deactivate
    assert [x for x in got if x[1] == [("User", uid(3))]] == [
        ("user.lifecycle.delete.initiated", [("User", uid(3))]),
        ("user.lifecycle.delete.completed", [("User", uid(3))])], got
    for e in evs:
        assert e["uuid"] and e["published"].endswith("Z") and e["actor"]["type"] == "User"
        assert e["outcome"] == {"reason": None, "result": "SUCCESS"} and e["severity"] == "INFO"
    assert len({e["uuid"] for e in evs}) == len(evs)
    # timestamps moved
    u1 = f.get("/api/v1/users/" + uid(1), AUTH).json()
    assert u1["lastUpdated"] > "2025", u1["lastUpdated"]
    u2 = f.get("/api/v1/users/" + uid(2), AUTH).json()
    assert u2["statusChanged"] > "2025" and u2["lastUpdated"] > "2025"
    assert f.get("/api/v1/users/" + uid(3), AUTH).status == 404  # deleted
    r = f.get("/api/v1/users?filter=" + q('lastUpdated gt "2025-01-01T00:00:00.000Z"'), AUTH)
    assert sorted(u["id"] for u in r.json()) == [uid(1), uid(2), uid(4), uid(5), uid(6)]
    # next poll from the returned cursor: nothing new, but next is still there
    r2 = f.get(links(r := f.get(cursor, AUTH))["next"], AUTH)
    assert r2.json() == [] and "next" in links(r2)
    # an unchanged PUT adds nothing
    before = len(f.state()["logs"])
    f.put_state(f.state())
    assert len(f.state()["logs"]) == before
    # deprovisioning drops direct app assignments and emits deactivate + app remove
    st = f.state()
    for u in st["users"]:
        if u["id"] == uid(4):
            u["status"] = "DEPROVISIONED"
    f.put_state(st)
    assert uid(4) not in f.state()["apps"][APP]["users"]
    evs = f.get(links(r2)["next"], AUTH).json()
    assert [e["eventType"] for e in evs] == ["user.lifecycle.deactivate",
                                             "application.user_membership.remove"], evs
    # events PUT directly are kept as given
    st = f.state()
    ev = {"uuid": "manual-1", "published": "2025-01-01T00:00:00.000Z",
          "eventType": "user.session.start", "displayMessage": "User login to Okta",
          "target": None, "actor": None}
    st["logs"].append(ev)
    f.put_state(st)
    assert ev in f.state()["logs"]


def t_logs_query(f):
    evs = []
    for i in range(5):
        evs.append({"uuid": "e%d" % i, "published": "2026-01-0%dT00:00:00.000Z" % (5 - i),
                    "eventType": "user.lifecycle.create" if i % 2 else "group.user_membership.add",
                    "severity": "INFO", "target": [{"id": uid(i), "type": "User"}]})
    st = dict(base_state(), logs=evs, _baseline=True)
    f.put_state(st)
    f.request("PUT", "/__fake/clock", body={"now": 1767225600 + 8 * 86400})  # 2026-01-09
    try:
        # polling: persistence order (not published order), next always present
        r = f.get("/api/v1/logs?since=2026-01-01T00:00:00.000Z&limit=2", AUTH)
        assert [e["uuid"] for e in r.json()] == ["e0", "e1"] and "next" in links(r)
        assert "since" not in links(r)["next"]
        r = f.get(links(r)["next"], AUTH)
        assert [e["uuid"] for e in r.json()] == ["e2", "e3"]
        r = f.get(links(r)["next"], AUTH)
        assert [e["uuid"] for e in r.json()] == ["e4"] and "next" in links(r)
        r = f.get(links(r)["next"], AUTH)
        assert r.json() == [] and "next" in links(r)
        # bounded: published order, finite
        r = f.get("/api/v1/logs?since=2026-01-01T00:00:00.000Z&until=2026-01-06T00:00:00.000Z&limit=3", AUTH)
        assert [e["uuid"] for e in r.json()] == ["e4", "e3", "e2"] and "next" in links(r)
        r = f.get(links(r)["next"], AUTH)
        assert [e["uuid"] for e in r.json()] == ["e1", "e0"] and "next" not in links(r)
        # filter on eventType, and on a target field
        r = f.get("/api/v1/logs?since=2026-01-01T00:00:00.000Z&filter=" + q('eventType eq "user.lifecycle.create"'), AUTH)
        assert [e["uuid"] for e in r.json()] == ["e1", "e3"]
        r = f.get("/api/v1/logs?since=2026-01-01T00:00:00.000Z&filter=" + q('target.id eq "%s"' % uid(2)), AUTH)
        assert [e["uuid"] for e in r.json()] == ["e2"]
        # since + after, bad dates, bad filters
        err(f.get("/api/v1/logs?since=2026-01-01T00:00:00.000Z&after=1_1", AUTH), 400, "E0000001")
        err(f.get("/api/v1/logs?since=yesterday", AUTH), 400, "E0000001")
        err(f.get("/api/v1/logs?filter=" + q('published gt "2026-01-01T00:00:00.000Z"'), AUTH), 400, "E0000053")
        err(f.get("/api/v1/logs?filter=" + q('debugContext.debugData.url co "x"'), AUTH), 400, "E0000031")
        err(f.get("/api/v1/logs?filter=" + q('eventType eq'), AUTH), 400, "E0000053")
        # default window is the 7 days before now (Jan 2 to Jan 9): e4 (Jan 1) is outside
        r = f.get("/api/v1/logs", AUTH)
        assert "e4" not in [e["uuid"] for e in r.json()] and "e0" in [e["uuid"] for e in r.json()]
        # limit is 0..1000 (spec); outside is refused rather than clamped (simulator decision)
        err(f.get("/api/v1/logs?since=2026-01-01T00:00:00.000Z&limit=5000", AUTH), 400, "E0000001")
        err(f.get("/api/v1/logs?limit=-1", AUTH), 400, "E0000001")
        r = f.get("/api/v1/logs?since=2026-01-01T00:00:00.000Z&limit=1000", AUTH)
        assert len(r.json()) == 5 and "limit=1000" in links(r)["self"]
    finally:
        f.request("PUT", "/__fake/clock", body={"now": None})


def t_state_validation(f):
    for bad in ({"users": {}}, {"users": [{"id": "x", "status": "ACTIVE"}]},
                {"users": [{"id": "x", "status": "WEIRD", "profile": {"login": "a"}}]},
                {"group_members": {"nope": []}},
                {"apps": {"a": {"users": ["ghost"]}}}, {"bogus": 1}, [1, 2]):
        r = f.request("PUT", "/__fake/state", body=bad)
        assert r.status == 400, (bad, r)
    # minimal objects are completed with the fields Okta always sends
    f.put_state({"users": [{"id": "00umin", "status": "STAGED", "profile": {"login": "m@x.io"}}],
                 "groups": [{"id": "00gmin", "profile": {"name": "g"}}], "_baseline": True})
    u = f.get("/api/v1/users/00umin", AUTH).json()
    assert u["activated"] is None and u["created"] and u["credentials"]["provider"]["type"] == "OKTA"
    g = f.get("/api/v1/groups/00gmin", AUTH).json()
    assert g["type"] == "OKTA_GROUP" and g["objectClass"] == ["okta:user_group"]



def t_token_share(f):
    """One token gets 50 % of a bucket whenever limits are set;
    okta_token_share changes it; the headers stay org-wide, the 429 shows Remaining 0."""
    f.put_state(dict(base_state(), access_tokens=["other"], _baseline=True))
    f.faults(okta_buckets={"/api/v1/logs": 6})
    rem = []
    for _ in range(3):
        r = f.get("/api/v1/logs", AUTH)
        assert r.status == 200 and r.header("X-Rate-Limit-Limit") == "6"
        rem.append(r.header("X-Rate-Limit-Remaining"))
    assert rem == ["5", "4", "3"], rem
    r = f.get("/api/v1/logs", AUTH)
    err(r, 429, "E0000047")
    assert r.header("X-Rate-Limit-Remaining") == "0" and r.header("X-Rate-Limit-Limit") == "6"
    from email.utils import parsedate_to_datetime
    assert int(r.header("X-Rate-Limit-Reset")) > parsedate_to_datetime(r.header("Date")).timestamp()
    # another token has its own half of the same window
    other = {"Authorization": "Bearer other"}
    assert [f.get("/api/v1/logs", other).status for _ in range(4)] == [200, 200, 200, 429]
    f.request("PUT", "/__fake/clock", body={"advance": 61})
    f.faults(okta_buckets={"/api/v1/logs": 6}, okta_token_share=0.8)
    assert [f.get("/api/v1/logs", AUTH).status for _ in range(5)] == [200, 200, 200, 200, 429]
    # workforce limits: /api/v1/apps* 100/min leaves one token 50
    f.faults(okta_buckets="workforce")
    st = [f.get("/api/v1/apps/%s/users" % APP, AUTH).status for _ in range(51)]
    assert st == [200] * 50 + [429], st
    # the generous default has no share
    f.faults()
    assert all(f.get("/api/v1/logs", AUTH).status == 200 for _ in range(10))
    r = f.request("PUT", "/__fake/faults", body={"okta_token_share": 0})
    assert r.status == 400
    f.request("PUT", "/__fake/clock", body={"advance": -61})


def t_injected_429_headers(f):
    """An injected 429 looks like the recorded one: Remaining 0, Reset in the future."""
    f.put_state(dict(base_state(), _baseline=True))
    f.faults(fail_rate=1.0, fail_status=429)
    r = f.get("/api/v1/users", AUTH)
    f.faults()
    err(r, 429, "E0000047")
    from email.utils import parsedate_to_datetime
    assert r.header("X-Rate-Limit-Remaining") == "0", r.headers
    assert int(r.header("X-Rate-Limit-Limit")) > 0
    assert int(r.header("X-Rate-Limit-Reset")) > parsedate_to_datetime(r.header("Date")).timestamp()


def t_link_joined_and_charset(f):
    """okta_link_joined sends self and next in one comma-joined link header (RFC 8288);
    Content-Type carries ;charset=UTF-8 as recorded, unless okta_charset is false."""
    f.put_state(dict(base_state(), _baseline=True))
    r = f.get("/api/v1/users?limit=1", AUTH)
    assert r.header("Content-Type") == "application/json;charset=UTF-8", r.headers
    assert len(r.header_all("link")) == 2
    f.faults(okta_link_joined=True)
    r = f.get("/api/v1/users?limit=1", AUTH)
    ls = r.header_all("link")
    assert len(ls) == 1, ls
    m = re.fullmatch(r'<([^>]+)>; rel="self", <([^>]+)>; rel="next"', ls[0])
    assert m and "after=" in m.group(2), ls
    # last page: only self, nothing to join
    assert len(f.get("/api/v1/users?limit=200", AUTH).header_all("link")) == 1
    b = err(f.get("/api/v1/users/nobody", AUTH), 404, "E0000007")
    assert b
    f.faults(okta_charset=False)
    assert f.get("/api/v1/users", AUTH).header("Content-Type") == "application/json"
    f.faults()


def t_users_me(f):
    """GET /users/me is the caller: the admin behind the SSWS token."""
    f.put_state(dict(base_state(), access_tokens=["tok"], _baseline=True))
    r = f.get("/api/v1/users/me", AUTH)
    assert r.status == 200, r
    me = r.json()
    assert me["id"] == "00u1simadmin0000x001" and me["profile"]["login"] == "admin@example.com"
    assert me["status"] == "ACTIVE" and me["_links"]["self"]["href"].endswith("/" + me["id"])
    # a client-credentials token has no user behind it
    err(f.get("/api/v1/users/me", {"Authorization": "Bearer tok"}), 404, "E0000007")
    # a state user with the admin's id is the one returned
    st = base_state()
    st["users"].append(dict(user(9, first="Ada", login="admin@example.com"), id="00u1simadmin0000x001"))
    f.put_state(dict(st, _baseline=True))
    assert f.get("/api/v1/users/me", AUTH).json()["profile"]["firstName"] == "Ada"


def t_search_lag(f):
    """okta_search_lag_s = N: search sees the org as it was at least N s ago (search is
    eventually consistent); filter and reads by id see the change at once."""
    st = base_state()
    f.put_state(dict(st, _baseline=True))
    f.faults(okta_search_lag_s=30)
    f.request("PUT", "/__fake/clock", body={"advance": 31})
    st["users"][1]["profile"]["lastName"] = "Renamed"
    st["users"].append(user(6, first="Fay", last="Fox"))
    st["groups"].append(group(5, "New group"))
    f.put_state(st)
    srch = lambda e: [u["id"] for u in f.get("/api/v1/users?search=" + q(e), AUTH).json()]
    flt = lambda e: [u["id"] for u in f.get("/api/v1/users?filter=" + q(e), AUTH).json()]
    assert srch('profile.lastName eq "Renamed"') == [], "search lags"
    assert srch('profile.lastName eq "Brown"') == [uid(2)]
    assert srch('id eq "%s"' % uid(6)) == []
    assert flt('profile.lastName eq "Renamed"') == [uid(2)], "filter is current"
    assert flt('id eq "%s"' % uid(6)) == [uid(6)]
    assert f.get("/api/v1/users/" + uid(6), AUTH).status == 200
    assert f.get("/api/v1/users/" + uid(2), AUTH).json()["profile"]["lastName"] == "Renamed"
    gs = lambda e: [g["id"] for g in f.get("/api/v1/groups?search=" + q(e), AUTH).json()]
    assert gs('profile.name eq "New group"') == []
    assert [g["id"] for g in f.get("/api/v1/groups?q=New", AUTH).json()] == [gid(5)]
    # sorted search reads the same snapshot
    r = f.get("/api/v1/users?search=" + q('status eq "ACTIVE"') + "&sortBy=profile.lastName", AUTH)
    assert [u["profile"]["lastName"] for u in r.json()] == ["Brown", "Ängström"], r.json()
    f.request("PUT", "/__fake/clock", body={"advance": 30})
    assert srch('profile.lastName eq "Renamed"') == [uid(2)], "caught up after the lag"
    assert srch('id eq "%s"' % uid(6)) == [uid(6)]
    assert gs('profile.name eq "New group"') == [gid(5)]
    # a lag longer than the org's life: search sees nothing yet
    f.faults(okta_search_lag_s=10 ** 9)
    assert srch('status eq "ACTIVE"') == []
    f.faults()
    assert srch('profile.lastName eq "Renamed"') == [uid(2)]
    f.request("PUT", "/__fake/clock", body={"advance": -61})


def t_search_grammar(f):
    """User search has no lastLogin/passwordChanged; group search has
    only sw/eq/co; a profile attribute outside the org's schema is 400 E0000031."""
    st = base_state()
    st["users"][0]["profile"]["costCenter"] = "CC-1"
    st["users"][1]["profile"]["badgeColour"] = "red"  # a custom attribute
    f.put_state(dict(st, _baseline=True))
    ok = lambda p: [x["id"] for x in f.get(p, AUTH).json()]
    assert ok("/api/v1/users?search=" + q('profile.badgeColour eq "red"')) == [uid(2)]
    assert ok("/api/v1/users?search=" + q('profile.costCenter sw "CC"')) == [uid(1)]
    assert ok("/api/v1/users?search=" + q('profile.division eq "x"')) == []  # base schema, unset
    for bad in ('lastLogin gt "2020-01-01T00:00:00.000Z"',
                'passwordChanged gt "2020-01-01T00:00:00.000Z"',
                'profile.noSuchAttribute eq "x"', 'profile.title co "x"'):
        err(f.get("/api/v1/users?search=" + q(bad), AUTH), 400, "E0000031")
    assert ok("/api/v1/groups?search=" + q('profile.name sw "Eng"')) == [gid(2), gid(3)]
    assert ok("/api/v1/groups?search=" + q('type eq "APP_GROUP"')) == [gid(4)]
    for bad in ('lastUpdated gt "2020-01-01T00:00:00.000Z"',
                'lastMembershipUpdated ge "2020-01-01T00:00:00.000Z"', 'profile.colour eq "x"',
                'type co "APP"'):
        err(f.get("/api/v1/groups?search=" + q(bad), AUTH), 400, "E0000031")
    # filter keeps its own ranges on the timestamps
    r = f.get("/api/v1/groups?filter=" + q('lastUpdated gt "2020-01-01T00:00:00.000Z"'), AUTH)
    assert r.status == 200 and len(r.json()) == 4


def t_event_sequences(f):
    """A user that appears DEPROVISIONED gets create + deactivate (no
    activate); deleting a user that is not DEPROVISIONED deactivates it first; target[] order
    varies between events but is reproducible under the seed fault."""
    f.put_state(dict(base_state(), _baseline=True))
    cursor = links(f.get("/api/v1/logs", AUTH))["next"]
    st = f.state()
    st["users"].append(user(7, "DEPROVISIONED", first="Gus"))
    st["users"].append(user(8, "STAGED", first="Hal"))
    st["users"] = [u for u in st["users"] if u["id"] != uid(2)]  # ACTIVE
    for m in st["group_members"].values():
        if uid(2) in m:
            m.remove(uid(2))
    f.put_state(st)
    r = f.get(cursor, AUTH)
    seq = lambda u: [e["eventType"] for e in r.json() if any(t["id"] == u for t in e["target"])
                     and e["eventType"].startswith("user.")]
    assert seq(uid(7)) == ["user.lifecycle.create", "user.lifecycle.deactivate"], seq(uid(7))
    assert seq(uid(8)) == ["user.lifecycle.create"], seq(uid(8))
    assert seq(uid(2)) == ["user.lifecycle.deactivate", "user.lifecycle.delete.initiated",
                           "user.lifecycle.delete.completed"], seq(uid(2))

    def orders(seed):
        f.faults(seed=seed)
        st = base_state()
        f.put_state(dict(st, _baseline=True))
        cur = links(f.get("/api/v1/logs", AUTH))["next"]
        for i in range(1, 6):
            if uid(i) not in st["group_members"][gid(3)]:
                st["group_members"][gid(3)].append(uid(i))
        f.put_state(st)
        evs = f.get(cur, AUTH).json()
        return [tuple(t["type"] for t in e["target"]) for e in evs
                if e["eventType"] == "group.user_membership.add"]
    a, b = orders(11), orders(11)
    assert a == b and len(a) == 4, (a, b)
    seen = set(a)
    for sd in range(12, 20):
        seen |= set(orders(sd))
    assert seen == {("User", "UserGroup"), ("UserGroup", "User")}, seen
    f.faults()


def t_logs_cursor_and_q(f):
    """The polling cursor's time part is the last event's persistence time;
    an old cursor stays valid (no since-age check on after); events persisted after the
    cursor are returned even when published before the original since. q matches values,
    not property names; `published` is refused only as a filter attribute."""
    T = 1767225600  # 2026-01-01
    f.request("PUT", "/__fake/clock", body={"now": T})
    try:
        ev = lambda u, pub, et="user.lifecycle.create", msg="Create Okta user": {
            "uuid": u, "published": pub, "eventType": et, "displayMessage": msg,
            "target": [{"id": uid(1), "type": "User", "displayName": "Ann"}]}
        st = dict(base_state(), logs=[ev("a1", "2025-12-31T23:00:00.000Z")], _baseline=True)
        f.put_state(st)
        r = f.get("/api/v1/logs?since=2025-12-31T12:00:00.000Z", AUTH)
        assert [e["uuid"] for e in r.json()] == ["a1"]
        nxt = links(r)["next"]
        after = urllib.parse.parse_qs(urllib.parse.urlsplit(nxt).query)["after"][0]
        # persisted at T (the pinned clock runs on from T: allow the seconds the test takes)
        assert 0 <= int(after.split("_")[0]) - T * 1000 < 10000, after
        # 200 days later, one event persisted late with an old published time
        f.request("PUT", "/__fake/clock", body={"now": T + 200 * 86400})
        st = f.state()
        st["logs"].append(ev("late", "2025-06-01T00:00:00.000Z"))
        f.put_state(st)
        r = f.get(nxt, AUTH)
        assert r.status == 200, r
        assert [e["uuid"] for e in r.json()] == ["late"], r.json()
        after2 = urllib.parse.parse_qs(urllib.parse.urlsplit(links(r)["next"]).query)["after"][0]
        assert 0 <= int(after2.split("_")[0]) - (T + 200 * 86400) * 1000 < 10000, after2
        # an empty page keeps the cursor's time part
        r3 = f.get(links(r)["next"], AUTH)
        assert r3.json() == [] and links(r3)["next"] == links(r)["next"]
        # since itself is still age-checked
        err(f.get("/api/v1/logs?since=2025-06-01T00:00:00.000Z", AUTH), 400, "E0000053")
        # q: values only; `published` as a value in a filter is fine
        st = f.state()
        st["logs"].append(ev("p1", "2026-07-20T00:00:00.000Z", msg="published report"))
        f.put_state(st)
        since = "since=2026-07-19T00:00:00.000Z"
        got = lambda extra: [e["uuid"] for e in f.get("/api/v1/logs?%s&%s" % (since, extra), AUTH).json()]
        assert got("q=published") == ["p1"]      # a value, not the property name
        assert got("q=eventType") == []          # property names do not match
        assert got("q=ANN+create") == ["p1"]     # keywords: all of them, any case
        assert got("filter=" + q('displayMessage co "published"')) == ["p1"]
        err(f.get("/api/v1/logs?filter=" + q('published gt "2026-01-01T00:00:00.000Z"'), AUTH),
            400, "E0000053")
    finally:
        f.request("PUT", "/__fake/clock", body={"now": None})

def main():
    run = fake.Runner()
    with fake.Fake("okta") as f:
        for name, fn in sorted(globals().items()):
            if name.startswith("t_") and callable(fn):
                f.faults()
                run.run(name[2:], fn, f)
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
