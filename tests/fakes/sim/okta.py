"""Okta simulator: the Management API read subset a sync uses (specs subset).

Served by tests/fakes/fake.py okta. What is simulated and which quirks are deliberate is listed
in tests/fakes/README.md. Summary:
  * auth: "Authorization: SSWS test-token", or Bearer/DPoP tokens listed in state.access_tokens;
    anything else 401 E0000011
  * GET /api/v1/users, /users/{idOrLogin}, /users/{id}/groups, /groups, /groups/{id},
    /groups/{id}/users, /apps/{id}/users[/{uid}], /apps/{id}/groups[/{gid}], /logs
  * paging with opaque `after` cursors given only in `link` headers (one relation per line);
    cursors are the last id in id order, so they stay valid while the state changes
  * per-bucket rate limits with X-Rate-Limit-* on every response, 429 E0000047
  * PUT /__fake/state is diffed against the previous state: timestamps move and System Log
    events are appended (see Okta._diff)

State: {"users":[User], "groups":[Group], "group_members":{gid:[uid]},
"apps":{appId:{"users":[uid],"groups":[gid]}}, "logs":[LogEvent]} plus optional
"access_tokens":[str]. A state load with "_baseline": true (or the first load, or a load into an
empty org) is not diffed.

Filter expressions (SCIM style) are compiled by compile_filter() below; FilterRules say which
attributes and operators an endpoint accepts, whether `not` is allowed and whether string
comparisons ignore case. Operators and and/or/not are case-insensitive; attribute names are
case-sensitive.
"""

import base64
import copy
import bisect
import hashlib
import json
import math
import random
import re
import time
import urllib.parse
import uuid
from datetime import datetime, timezone
from urllib.parse import urlencode

from .common import Product, Response, json_response, http_date

class FilterError(ValueError):
    pass


_TOKEN = re.compile(r'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|([^\s()"]+))')

OPS = ("eq", "ne", "sw", "co", "ew", "pr", "gt", "ge", "lt", "le")


class FilterRules:
    """attr_kind(attr) -> "str" | "date" | "any" | None (None = attribute not allowed);
    op_allowed(attr, op) -> bool; allow_not; ignore_case (string values)."""

    def __init__(self, attr_kind, op_allowed, allow_not=False, ignore_case=False):
        self.attr_kind = attr_kind
        self.op_allowed = op_allowed
        self.allow_not = allow_not
        self.ignore_case = ignore_case


def parse_time(s):
    """Epoch seconds (float) of an ISO 8601 timestamp such as 2013-06-01T00:00:00.000Z."""
    if not isinstance(s, str):
        raise FilterError("not a timestamp: %r" % (s,))
    t = s.strip()
    if t.endswith("Z") or t.endswith("z"):
        t = t[:-1] + "+00:00"
    try:
        d = datetime.fromisoformat(t)
    except ValueError:
        raise FilterError("not a timestamp: %r" % (s,)) from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d.timestamp()


def _tokens(text):
    pos = 0
    out = []
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FilterError("cannot parse filter near %r" % text[pos:pos + 20])
        pos = m.end()
        if m.group(1):
            out.append(("(", None))
        elif m.group(2):
            out.append((")", None))
        elif m.group(3) is not None:
            out.append(("str", re.sub(r"\\(.)", r"\1", m.group(3))))
        else:
            out.append(("word", m.group(4)))
    return out


def _get(obj, path):
    cur = [obj]
    for part in path.split("."):
        nxt = []
        for c in cur:
            if isinstance(c, list):
                for x in c:
                    if isinstance(x, dict) and part in x:
                        nxt.append(x[part])
            elif isinstance(c, dict) and part in c:
                nxt.append(c[part])
        cur = nxt
    out = []
    for c in cur:
        if isinstance(c, list):
            out.extend(c)
        else:
            out.append(c)
    return out


def _cmp(op, a, b, kind, ignore_case):
    """Compare the object's value a with the literal b."""
    if op == "pr":
        return a is not None
    if a is None:
        return op == "eq" and b is None
    if kind == "date":
        try:
            a = parse_time(a)
        except FilterError:
            return False
    elif isinstance(a, str) and isinstance(b, str) and ignore_case:
        a = a.lower()
        b = b.lower()
    if op in ("sw", "co", "ew"):
        if not isinstance(a, str):
            return False
        return a.startswith(b) if op == "sw" else (b in a if op == "co" else a.endswith(b))
    if op == "eq":
        return a == b
    if op == "ne":
        return a != b
    if type(a) is bool or type(b) is bool or (isinstance(a, str) != isinstance(b, str)):
        return False
    try:
        if op == "gt":
            return a > b
        if op == "ge":
            return a >= b
        if op == "lt":
            return a < b
        if op == "le":
            return a <= b
    except TypeError:
        return False
    return False


class _Parser:
    def __init__(self, toks, rules):
        self.t = toks
        self.i = 0
        self.r = rules

    def peek(self):
        return self.t[self.i] if self.i < len(self.t) else (None, None)

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def word_is(self, tok, w):
        return tok[0] == "word" and tok[1].lower() == w

    def expr(self):
        left = self.term()
        while self.word_is(self.peek(), "or"):
            self.take()
            right = self.term()
            left = (lambda l, r: lambda o: l(o) or r(o))(left, right)
        return left

    def term(self):
        left = self.factor()
        while self.word_is(self.peek(), "and"):
            self.take()
            right = self.factor()
            left = (lambda l, r: lambda o: l(o) and r(o))(left, right)
        return left

    def factor(self):
        tok = self.peek()
        if self.word_is(tok, "not"):
            if not self.r.allow_not:
                raise FilterError("'not' is not supported")
            self.take()
            inner = self.factor()
            return lambda o: not inner(o)
        if tok[0] == "(":
            self.take()
            e = self.expr()
            if self.take()[0] != ")":
                raise FilterError("missing ')'")
            return e
        if tok[0] != "word":
            raise FilterError("expected an attribute name")
        attr = self.take()[1]
        kind = self.r.attr_kind(attr)
        if kind is None:
            raise FilterError("attribute %r cannot be used in this filter" % attr)
        optok = self.take()
        if optok[0] != "word" or optok[1].lower() not in OPS:
            raise FilterError("unknown operator after %r" % attr)
        op = optok[1].lower()
        if not self.r.op_allowed(attr, op):
            raise FilterError("operator %r is not supported on %r" % (op, attr))
        if op == "pr":
            return lambda o: any(v is not None for v in _get(o, attr))
        vt = self.take()
        if vt[0] == "str":
            val = vt[1]
        elif vt[0] == "word":
            w = vt[1]
            if w in ("true", "false"):
                val = w == "true"
            elif w == "null":
                val = None
            elif re.fullmatch(r"-?\d+(\.\d+)?", w):
                val = float(w) if "." in w else int(w)
            else:
                raise FilterError("value for %r must be quoted" % attr)
        else:
            raise FilterError("missing value for %r" % attr)
        if kind == "date":
            val = parse_time(val)
        ic = self.r.ignore_case
        if ic and isinstance(val, str):
            val = val.lower()
        return lambda o: any(_cmp(op, v, val, kind, ic) for v in (_get(o, attr) or [None]))


def compile_filter(text, rules):
    """Predicate for a filter expression; raises FilterError on any syntax or rule error."""
    if not text or not text.strip():
        raise FilterError("empty filter")
    toks = _tokens(text)
    p = _Parser(toks, rules)
    pred = p.expr()
    if p.i != len(toks):
        raise FilterError("unexpected %r" % (toks[p.i][1] or toks[p.i][0]))
    return pred


# ==========================================================================================
# Okta product

ISO_FMT = "%Y-%m-%dT%H:%M:%S"
USER_STATUSES = ("STAGED", "PROVISIONED", "ACTIVE", "RECOVERY", "PASSWORD_EXPIRED",
                 "LOCKED_OUT", "SUSPENDED", "DEPROVISIONED")
GROUP_TYPES = ("OKTA_GROUP", "APP_GROUP", "BUILT_IN")
API_TOKEN = "test-token"
ADMIN = {"id": "00u1simadmin0000x001", "type": "User", "alternateId": "admin@example.com",
         "displayName": "Sim Admin", "detailEntry": None}
LOGO = "https://ok14static.oktacdn.com/assets/img/logos/groups/odyssey/okta-%s.png"
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def iso(t, ms=False):
    """Okta timestamp: YYYY-MM-DDTHH:mm:ss.SSSZ (whole seconds unless ms=True)."""
    s = time.strftime(ISO_FMT, time.gmtime(t))
    return s + (".%03dZ" % int((t % 1) * 1000) if ms else ".000Z")


def okta_error(status, code, summary, causes=(), headers=None):
    """An Okta error response: errorCode, errorSummary, errorLink, errorId, errorCauses."""
    eid = "oae" + "".join(random.choice(B62) for _ in range(22))
    return json_response(status, {"errorCode": code, "errorSummary": summary, "errorLink": code,
                                  "errorId": eid,
                                  "errorCauses": [{"errorSummary": c} for c in causes]},
                         headers)


def not_found(what, kind):
    return okta_error(404, "E0000007", "Not found: Resource not found: %s (%s)" % (what, kind))


def bad_search(msg):
    return okta_error(400, "E0000031", "Invalid search criteria.", [msg])


# Rate-limit buckets: (name, methods or None, exact regex or None,
# prefix or None). An exact match beats a prefix; the longest prefix wins; the method counts.
BUCKETS = [
    ("/api/v1/users", ("GET", "POST"), r"^/api/v1/users$", None, 600),
    ("/api/v1/users/{id}", ("GET",), r"^/api/v1/users/[^/]+$", None, 2000),
    ("/api/v1/users/{id}:write", ("POST", "PUT", "DELETE"), r"^/api/v1/users/[^/]+$", None, 600),
    ("/api/v1/users*", None, None, "/api/v1/users", 600),
    ("/api/v1/groups/{id}", None, r"^/api/v1/groups/[^/]+$", None, 1000),
    ("/api/v1/groups*", None, None, "/api/v1/groups", 500),
    ("/api/v1/apps/{id}", None, r"^/api/v1/apps/[^/]+$", None, 500),
    ("/api/v1/apps*", None, None, "/api/v1/apps", 100),
    ("/api/v1/logs", None, None, "/api/v1/logs", 120),
    ("/api/v1", None, None, "/api/v1", 1200),
]
BUCKET_NAMES = [b[0] for b in BUCKETS]
BUCKET_ALIASES = {"/api/v1/groups": "/api/v1/groups*", "/api/v1/apps": "/api/v1/apps*",
                  "/api/v1/logs*": "/api/v1/logs", "/api/v1*": "/api/v1"}
WORKFORCE = {b[0]: b[4] for b in BUCKETS}
GENEROUS = 100000
_BUCKET_RX = [(b[0], b[1], re.compile(b[2]) if b[2] else None, b[3]) for b in BUCKETS]


def bucket_of(method, path):
    """Name of the rate-limit bucket a request counts against (None outside /api/v1)."""
    best = None
    for name, methods, rx, prefix in _BUCKET_RX:
        if methods is not None and method not in methods:
            continue
        if rx is not None and rx.match(path):
            return name
        if prefix is not None and (path == prefix or path.startswith(prefix + "/")):
            if best is None or len(prefix) > best[0]:
                best = (len(prefix), name)
    return best[1] if best else None


USER_FILTER_ATTRS = {"status": "str", "lastUpdated": "date", "id": "str",
                     "profile.login": "str", "profile.email": "str",
                     "profile.firstName": "str", "profile.lastName": "str"}
USER_FILTER = FilterRules(
    lambda a: USER_FILTER_ATTRS.get(a),
    lambda a, op: op == "eq" or (a == "lastUpdated" and op in ("gt", "ge", "lt", "le")))

USER_SEARCH_TOP = {"id": "str", "status": "str", "created": "date", "activated": "date",
                   "statusChanged": "date", "lastUpdated": "date", "type.id": "str"}
USER_SEARCH_CO = ("profile.firstName", "profile.lastName", "profile.email", "profile.login")


# The base user profile; custom attributes are those any user carries.
USER_BASE_PROFILE = frozenset((
    "login", "email", "secondEmail", "firstName", "lastName", "displayName", "middleName",
    "nickName", "honorificPrefix", "honorificSuffix", "mobilePhone", "primaryPhone",
    "department", "title", "division", "organization", "costCenter", "employeeNumber",
    "userType", "manager", "managerId", "locale", "preferredLanguage", "timezone", "city",
    "state", "zipCode", "countryCode", "streetAddress", "postalAddress", "profileUrl"))
GROUP_BASE_PROFILE = frozenset(("name", "description", "dn", "externalId", "samAccountName",
                                "windowsDomainQualifiedName"))


def _search_kind(top, known):
    """attr_kind for `search`: the listed top-level properties, and profile attributes of the
    org's profile schema (base + custom); anything else is E0000031."""
    def kind(a):
        if a in top:
            return top[a]
        if a.startswith("profile.") and a[8:] in known:
            return "any"
        return None
    return kind


def user_search_rules(known):
    return FilterRules(
        _search_kind(USER_SEARCH_TOP, known),
        lambda a, op: op in ("eq", "sw", "gt", "ge", "lt", "le") or (op == "co" and a in USER_SEARCH_CO),
        ignore_case=True)

GROUP_FILTER_ATTRS = {"id": "str", "type": "str", "lastUpdated": "date",
                      "lastMembershipUpdated": "date"}
GROUP_FILTER = FilterRules(
    lambda a: GROUP_FILTER_ATTRS.get(a),
    lambda a, op: op == "eq" or (GROUP_FILTER_ATTRS.get(a) == "date" and op in ("gt", "ge", "lt", "le")))

GROUP_SEARCH_TOP = {"id": "str", "created": "date", "lastUpdated": "date",
                    "lastMembershipUpdated": "date", "type": "str", "source.id": "str"}


def group_search_rules(known):
    """Group search: operators sw, eq, and co on profile.name/description only;
    no range operators, not even on the timestamps."""
    return FilterRules(
        _search_kind(GROUP_SEARCH_TOP, known),
        lambda a, op: op in ("eq", "sw") or (op == "co" and a in ("profile.name", "profile.description")),
        ignore_case=True)


def _log_kind(a):
    if a == "published":
        return None  # "published not allowed"
    return "any" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", a) else None


LOG_FILTER = FilterRules(
    _log_kind,
    lambda a, op: op != "ne" and not (op == "co" and a in ("debugContext.debugData.url",
                                                           "debugContext.debugData.requestUri")),
    allow_not=True)

# Where the admin's API calls come from: the address and location of the recorded admin event
# (tests/data/fixtures/okta/demisto_syslog_group_membership_remove.json). Okta fills
# geographicalContext for a public address, in client and in each request.ipChain entry.
CLIENT_IP = "8.8.8.8"
CLIENT_GEO = {"city": "Boardman", "country": "United States", "geolocation": {"lat": 1.2, "lon": 3.4},
              "postalCode": "123", "state": "Oregon"}

# displayMessage and legacyEventType of the events the simulator writes. An event type without
# a legacy name carries legacyEventType null, as Okta's documented events of such types do
# (tests/data/fixtures/okta/docs_syslog_rate_limit_violation.json).
EVENT_INFO = {
    "user.lifecycle.create": ("Create Okta user", "core.user.config.user_creation.success"),
    "user.lifecycle.activate": ("Activate Okta user", "core.user.config.user_activated"),
    "user.lifecycle.deactivate": ("Deactivate Okta user", "core.user.config.user_deactivated"),
    "user.lifecycle.reactivate": ("Reactivate Okta user", "core.user.config.user_reactivated"),
    "user.lifecycle.suspend": ("Suspend Okta user", "core.user.config.user_status.suspended"),
    "user.lifecycle.unsuspend": ("Unsuspend Okta user", "core.user.config.user_status.unsuspended"),
    "user.lifecycle.delete.initiated": ("Delete Okta user", None),
    "user.lifecycle.delete.completed": ("Delete Okta user completed", None),
    "user.account.update_profile": ("Update user profile for Okta",
                                    "core.user.config.profile_update.success"),
    "user.account.lock": ("Max sign in attempts exceeded", "core.user_auth.account_locked"),
    "user.account.unlock_by_admin": ("Unlock user account by admin", None),
    "group.user_membership.add": ("Add user to group membership",
                                  "core.user_group_member.user_add"),
    "group.user_membership.remove": ("Remove user from group membership",
                                     "core.user_group_member.user_remove"),
    "application.user_membership.add": ("Add user to application membership",
                                        "app.generic.provision.assign_user_to_app"),
    "application.user_membership.remove": ("Remove user from application membership", None),
    "group.lifecycle.create": ("Create okta user group", "core.user_group.created"),
    "group.lifecycle.delete": ("Delete Okta group", "core.user_group.deleted"),
    "system.import.group.create": ("Add imported group to Okta", None),
    "system.import.group.delete": ("Remove imported group from Okta", None),
    "group.profile.update": ("Update group profile", None),
    "group.application_assignment.add": ("Add assigned application to group", None),
    "group.application_assignment.remove": ("Remove assigned application from group", None),
}


def _rand_id(prefix, rng, n=17):
    return prefix + "".join(rng.choice(B62) for _ in range(n))


class Okta(Product):
    """Okta Management API read subset; see tests/fakes/README.md for what is simulated."""

    name = "okta"
    extra_faults = {"okta_buckets": {}, "okta_concurrency": None, "okta_html": False,
                    "okta_token_share": None, "okta_search_lag_s": 0, "okta_link_joined": False,
                    "okta_charset": True, "okta_raw_records": [], "okta_fail_first": 0,
                    "okta_nonce_rotate": False, "okta_rs_nonce": False,
                    "okta_revoke_tokens": False, "okta_dpop_algs": ["RS256", "ES256"]}

    def __init__(self, server):
        super().__init__(server)
        self.rng = random.Random()
        self.windows = {}  # bucket name -> [window start, used]
        self.req_seq = 0
        self.failed_first = 0
        self.loaded = False
        self.state = None
        self._empty()

    def _empty(self):
        self.users = []
        self.by_id = {}
        self.by_login = {}
        self.ids = []
        self.groups = []
        self.gby_id = {}
        self.gids = []
        self.members = {}
        self.member_ids = {}
        self.user_groups = {}
        self.apps = {}
        self.app_meta = {}
        self.logs = []
        self.log_seq = []
        self.next_seq = 1
        self.seq_time = {}  # log sequence number -> persistence time (epoch ms)
        self.access_tokens = {}  # token -> {"scopes": set, "jkt": thumbprint or None}
        self.oauth_clients = {}
        self.issued = {}  # access token -> {"client", "scopes", "exp", "jkt"}
        self.seen_jti = set()  # client assertion and DPoP proof ids already used
        self.dpop_nonce = "".join(random.choice(B62) for _ in range(32))  # the token endpoint's
        self.rs_nonce = "".join(random.choice(B62) for _ in range(32))  # the API's own (RFC 9449 9)
        self.extra = {}
        self.history = []  # [(load time, users by id, sorted ids, groups by id, sorted gids)]

    # ---------------------------------------------------------------- state
    def default_state(self):
        return {"users": [], "groups": [], "group_members": {}, "apps": {}, "logs": []}

    def dump_state(self):
        out = {"users": self.users, "groups": self.groups,
               "group_members": {g: list(m) for g, m in self.members.items()},
               "apps": {a: dict({"users": list(v["users"]), "groups": list(v["groups"])},
                                **({"app_users": v["app_users"]} if v.get("app_users") else {}))
                        for a, v in self.apps.items()},
               "logs": self.logs}
        if self.access_tokens:
            out["access_tokens"] = [{"token": t, "scopes": sorted(i["scopes"]),
                                     "dpop_jkt": i["jkt"]}
                                    for t, i in sorted(self.access_tokens.items())]
        if self.oauth_clients:
            out["oauth_clients"] = self.oauth_clients
        return out

    def load_state(self, st):
        now = self.server.now()
        if not isinstance(st, dict):
            raise ValueError("state must be an object")
        known = {"users", "groups", "group_members", "apps", "logs", "access_tokens",
                 "oauth_clients", "_baseline"}
        unknown = set(st) - known
        if unknown:
            raise ValueError("unknown state keys: %s" % ", ".join(sorted(unknown)))
        users = st.get("users", [])
        groups = st.get("groups", [])
        gm = st.get("group_members", {})
        apps = st.get("apps", {})
        logs = st.get("logs", [])
        toks = st.get("access_tokens", [])
        if not isinstance(users, list) or not isinstance(groups, list) or \
                not isinstance(gm, dict) or not isinstance(apps, dict) or \
                not isinstance(logs, list) or not isinstance(toks, list):
            raise ValueError("state shape: users, groups, logs, access_tokens are lists; "
                             "group_members and apps are objects")
        by_id, by_login = {}, {}
        for i, u in enumerate(users):
            if not isinstance(u, dict) or not isinstance(u.get("id"), str) or not u["id"]:
                raise ValueError("users[%d]: needs a string id" % i)
            if u["id"] in by_id:
                raise ValueError("users[%d]: duplicate id %s" % (i, u["id"]))
            if u.get("status") not in USER_STATUSES:
                raise ValueError("users[%d]: status must be one of %s" % (i, ", ".join(USER_STATUSES)))
            p = u.get("profile")
            if not isinstance(p, dict) or not isinstance(p.get("login"), str):
                raise ValueError("users[%d]: profile.login (string) is required" % i)
            lk = p["login"].lower()
            if lk in by_login:
                raise ValueError("users[%d]: duplicate login %s" % (i, p["login"]))
            by_id[u["id"]] = u
            by_login[lk] = u
        gby_id = {}
        for i, g in enumerate(groups):
            if not isinstance(g, dict) or not isinstance(g.get("id"), str) or not g["id"]:
                raise ValueError("groups[%d]: needs a string id" % i)
            if g["id"] in gby_id:
                raise ValueError("groups[%d]: duplicate id %s" % (i, g["id"]))
            if g.get("type", "OKTA_GROUP") not in GROUP_TYPES:
                raise ValueError("groups[%d]: type must be one of %s" % (i, ", ".join(GROUP_TYPES)))
            if not isinstance(g.get("profile"), dict) or not isinstance(g["profile"].get("name"), str):
                raise ValueError("groups[%d]: profile.name (string) is required" % i)
            gby_id[g["id"]] = g
        members = {}
        for gid, uids in gm.items():
            if gid not in gby_id:
                raise ValueError("group_members: unknown group %s" % gid)
            if not isinstance(uids, list):
                raise ValueError("group_members[%s] must be a list of user ids" % gid)
            seen = set()
            for uid in uids:
                if uid not in by_id:
                    raise ValueError("group_members[%s]: unknown user %s" % (gid, uid))
                if uid in seen:
                    raise ValueError("group_members[%s]: user %s listed twice" % (gid, uid))
                seen.add(uid)
            members[gid] = list(uids)
        napps = {}
        for aid, a in apps.items():
            if not isinstance(a, dict) or not isinstance(a.get("users", []), list) or \
                    not isinstance(a.get("groups", []), list):
                raise ValueError("apps[%s] must be {\"users\":[ids], \"groups\":[ids]}" % aid)
            for uid in a.get("users", []):
                if uid not in by_id:
                    raise ValueError("apps[%s].users: unknown user %s" % (aid, uid))
            for gid in a.get("groups", []):
                if gid not in gby_id:
                    raise ValueError("apps[%s].groups: unknown group %s" % (aid, gid))
            unknown = set(a) - {"users", "groups", "app_users"}
            if unknown:
                raise ValueError("apps[%s]: unknown keys %s" % (aid, ", ".join(sorted(unknown))))
            napps[aid] = {"users": list(dict.fromkeys(a.get("users", []))),
                          "groups": list(dict.fromkeys(a.get("groups", []))),
                          "app_users": validate_app_users(aid, a.get("app_users", {}), by_id)}
        for i, e in enumerate(logs):
            if not isinstance(e, dict) or not isinstance(e.get("uuid"), str) or \
                    not isinstance(e.get("published"), str) or not isinstance(e.get("eventType"), str):
                raise ValueError("logs[%d]: a LogEvent needs uuid, published and eventType" % i)
            try:
                parse_time(e["published"])
            except FilterError:
                raise ValueError("logs[%d]: published is not a timestamp" % i) from None
        static = validate_access_tokens(toks)
        clients = validate_oauth_clients(st.get("oauth_clients", {}))

        # Fill in what real Okta always sends, so minimal test states are valid objects.
        ts = iso(now)
        for u in users:
            self._complete_user(u, ts)
        for g in groups:
            self._complete_group(g, ts)

        baseline = (not self.loaded) or bool(st.get("_baseline")) or \
            (not self.users and not self.groups)
        old = None if baseline else self._snapshot()
        # log persistence order: known events keep their sequence numbers
        old_seq = {e["uuid"]: s for e, s in zip(self.logs, self.log_seq)}
        seqs = []
        for e in logs:
            s = old_seq.get(e["uuid"])
            if s is None:
                s = self.next_seq
                self.next_seq += 1
                self.seq_time[s] = int(now * 1000)
            seqs.append(s)

        self.users = users
        self.by_id = by_id
        self.by_login = by_login
        self.groups = groups
        self.gby_id = gby_id
        self.members = members
        self.apps = napps
        self.logs = logs
        self.log_seq = seqs
        self.access_tokens = static
        self.oauth_clients = clients
        self._index()
        if old is not None:
            self._diff(old, now)
        self._assignment_times(old, now)
        self.loaded = True
        # what `search` sees under okta_search_lag_s (eventually consistent).
        # The dicts of a load are never mutated by a later load, so no copy is needed.
        # Without a lag only the current state is kept (large orgs, many loads); with one, the
        # last 50 loads.
        self.history.append((now, self.by_id, self.ids, self.gby_id, self.gids))
        keep = 50 if self.server.faults.get("okta_search_lag_s") else 1
        del self.history[:-keep]

    def _profile_keys(self, kind):
        """Profile attribute names `search` accepts: base schema plus every attribute some
        user (or group) of the org carries (its custom attributes). Cached per load."""
        c = getattr(self, "_pk_cache", None)
        if c is None or c[0] is not self.users or c[1] is not self.groups:
            uk, gk = set(USER_BASE_PROFILE), set(GROUP_BASE_PROFILE)
            for u in self.users:
                uk.update(u["profile"])
            for g in self.groups:
                gk.update(g["profile"])
            c = (self.users, self.groups, uk, gk)
            self._pk_cache = c
        return c[2] if kind == "user" else c[3]

    def _search_view(self):
        """(users by id, sorted ids, groups by id, sorted gids) that `search` reads: the current
        org, or under okta_search_lag_s = N the newest state loaded at least N s ago (an empty
        org if none is that old). filter, q and reads by id always see the current org."""
        lag = self.server.faults.get("okta_search_lag_s") or 0
        if lag <= 0:
            return self.by_id, self.ids, self.gby_id, self.gids
        cut = self.server.now() - lag
        for t, by_id, ids, gby_id, gids in reversed(self.history):
            if t <= cut:
                return by_id, ids, gby_id, gids
        return {}, [], {}, []

    def _complete_user(self, u, ts):
        u.setdefault("status", "ACTIVE")
        created = u.setdefault("created", ts)
        active = u["status"] not in ("STAGED",)
        u.setdefault("activated", created if active else None)
        u.setdefault("statusChanged", created if u["status"] != "STAGED" else None)
        u.setdefault("lastLogin", None)
        u.setdefault("lastUpdated", created)
        u.setdefault("passwordChanged", None)
        u.setdefault("type", {"id": "oty1simdefault0000x1"})
        p = u["profile"]
        for k in ("firstName", "lastName", "email"):
            p.setdefault(k, None)
        p.setdefault("mobilePhone", None)
        p.setdefault("secondEmail", None)
        u.setdefault("credentials", {"provider": {"type": "OKTA", "name": "OKTA"}})

    def _complete_group(self, g, ts):
        g.setdefault("type", "OKTA_GROUP")
        created = g.setdefault("created", ts)
        g.setdefault("lastUpdated", created)
        g.setdefault("lastMembershipUpdated", created)
        g.setdefault("objectClass", ["okta:windows_security_principal"]
                     if g["type"] == "APP_GROUP" and "dn" in g["profile"] else ["okta:user_group"])
        # recorded groups (BUILT_IN, OKTA_GROUP) carry a string or "", never null
        if g["profile"].get("description") is None:
            g["profile"]["description"] = ""

    def _index(self):
        self.ids = sorted(self.by_id)
        self.gids = sorted(self.gby_id)
        self.member_ids = {g: sorted(m) for g, m in self.members.items()}
        ug = {}
        for g in self.gids:
            for uid in self.members.get(g, ()):
                ug.setdefault(uid, []).append(g)
        self.user_groups = ug
        self.effective = {}
        for aid, a in self.apps.items():
            eff = {}
            for uid in a["users"]:
                eff[uid] = "USER"
            # a user assigned through a group keeps scope GROUP even with a direct
            # assignment
            for gid in a["groups"]:
                for uid in self.members.get(gid, ()):
                    eff[uid] = "GROUP"
            # DEPROVISIONED users lose every app assignment
            self.effective[aid] = {u: s for u, s in eff.items()
                                   if self.by_id[u]["status"] != "DEPROVISIONED"}
            self.effective_ids = None
        self.eff_sorted = {aid: sorted(e) for aid, e in self.effective.items()}

    def _snapshot(self):
        return {"by_id": self.by_id, "gby_id": self.gby_id,
                "members": {g: set(m) for g, m in self.members.items()},
                "apps": {a: {"users": set(v["users"]), "groups": set(v["groups"])}
                         for a, v in self.apps.items()},
                "effective": {a: dict(e) for a, e in self.effective.items()},
                "app_meta": self.app_meta}

    def _assignment_times(self, old, now):
        """Keep created/lastUpdated of app assignments across state loads."""
        ts = iso(now)
        prev = self.app_meta
        meta = {}
        for aid, eff in self.effective.items():
            pu = prev.get(aid, {}).get("users", {})
            pg = prev.get(aid, {}).get("groups", {})
            mu = {}
            for uid in eff:
                mu[uid] = pu.get(uid) or (ts if old is not None else self.by_id[uid]["created"])
            mg = {}
            for gid in self.apps[aid]["groups"]:
                mg[gid] = pg.get(gid) or (ts if old is not None else self.gby_id[gid]["created"])
            meta[aid] = {"users": mu, "groups": mg}
        self.app_meta = meta

    # ---------------------------------------------------------------- diff -> events
    def _diff(self, old, now):
        ts = iso(now)
        events = []
        ob, nb = old["by_id"], self.by_id
        for uid, u in nb.items():
            o = ob.get(uid)
            if o is None:
                u["lastUpdated"] = ts
                events.append(("user.lifecycle.create", [self._t_user(u)]))
                if u["status"] == "DEPROVISIONED":
                    # appears already deactivated: create then deactivate, no activate
                    events.append(("user.lifecycle.deactivate", [self._t_user(u)]))
                elif u["status"] != "STAGED":
                    if u.get("activated") is None:
                        u["activated"] = ts
                    events.append(("user.lifecycle.activate", [self._t_user(u)]))
                continue
            changed = False
            if o.get("status") != u["status"]:
                changed = True
                u["statusChanged"] = ts
                for et in self._status_events(o["status"], u["status"]):
                    events.append((et, [self._t_user(u)]))
                if u["status"] in ("ACTIVE", "PROVISIONED") and \
                        o["status"] in ("STAGED", "DEPROVISIONED"):
                    u["activated"] = ts
            if o.get("profile") != u.get("profile"):
                changed = True
                tgt = self._t_user(u)
                tgt["changeDetails"] = {
                    "from": {k: v for k, v in (o.get("profile") or {}).items()
                             if (u.get("profile") or {}).get(k) != v},
                    "to": {k: v for k, v in (u.get("profile") or {}).items()
                           if (o.get("profile") or {}).get(k) != v}}
                events.append(("user.account.update_profile", [tgt]))
            if changed or o.get("lastUpdated") == u.get("lastUpdated") and o != u:
                u["lastUpdated"] = ts
        for uid, o in ob.items():
            if uid not in nb:
                if o.get("status") != "DEPROVISIONED":
                    # Okta deletes only deactivated users: deactivation comes first
                    events.append(("user.lifecycle.deactivate", [self._t_user(o)]))
                events.append(("user.lifecycle.delete.initiated", [self._t_user(o)]))
                events.append(("user.lifecycle.delete.completed", [self._t_user(o)]))
        og, ng = old["gby_id"], self.gby_id
        for gid, g in ng.items():
            o = og.get(gid)
            if o is None:
                g["lastUpdated"] = ts
                g["lastMembershipUpdated"] = ts
                et = "system.import.group.create" if g["type"] == "APP_GROUP" else "group.lifecycle.create"
                events.append((et, [self._t_group(g)]))
            elif o.get("profile") != g.get("profile"):
                g["lastUpdated"] = ts
                events.append(("group.profile.update", [self._t_group(g)]))
        for gid, o in og.items():
            if gid not in ng:
                et = "system.import.group.delete" if o.get("type") == "APP_GROUP" else "group.lifecycle.delete"
                events.append((et, [self._t_group(o)]))
        for gid, g in ng.items():
            before = old["members"].get(gid, set()) if gid in og else set()
            after = set(self.members.get(gid, ()))
            if before == after:
                continue
            added = sorted(after - before)
            removed = sorted(x for x in before - after if x in nb)
            if added or removed or (gid in og and before != after):
                g["lastMembershipUpdated"] = ts
            for uid in added:
                events.append(("group.user_membership.add", [self._t_user(nb[uid]), self._t_group(g)]))
            for uid in removed:
                events.append(("group.user_membership.remove",
                               [self._t_user(nb[uid]), self._t_group(g)]))
        # DEPROVISIONED removes every direct app assignment
        dropped = False
        for aid, a in self.apps.items():
            keep = [uid for uid in a["users"] if nb[uid]["status"] != "DEPROVISIONED"
                    or (uid in ob and ob[uid]["status"] == "DEPROVISIONED")]
            if len(keep) != len(a["users"]):
                a["users"] = keep
                dropped = True
        if dropped:
            self._index()
        # app assignments: group assignments, then effective user assignments
        for aid in sorted(set(old["apps"]) | set(self.apps)):
            oa = old["apps"].get(aid, {"users": set(), "groups": set()})
            na = self.apps.get(aid, {"users": [], "groups": []})
            for gid in sorted(set(na["groups"]) - oa["groups"]):
                events.append(("group.application_assignment.add",
                               [self._t_app(aid), self._t_group(ng[gid])]))
            for gid in sorted(oa["groups"] - set(na["groups"])):
                if gid in ng:
                    events.append(("group.application_assignment.remove",
                                   [self._t_app(aid), self._t_group(ng[gid])]))
            oe = old["effective"].get(aid, {})
            ne = self.effective.get(aid, {})
            for uid in sorted(set(ne) - set(oe)):
                events.append(("application.user_membership.add",
                               [self._t_appuser(nb[uid]), self._t_app(aid), self._t_user(nb[uid])]))
            for uid in sorted(set(oe) - set(ne)):
                u = nb.get(uid) or ob[uid]
                events.append(("application.user_membership.remove",
                               [self._t_appuser(u), self._t_app(aid), self._t_user(u)]))
        t = now
        for et, targets in events:
            # target[] order is not part of the contract: select by type, never by index
            # (as Okta documents); the order varies, reproducibly under the `seed` fault
            self.rng.shuffle(targets)
            self._append_event(et, targets, t)

    @staticmethod
    def _status_events(old, new):
        if old == new:
            return []
        if new == "DEPROVISIONED":
            return ["user.lifecycle.deactivate"]
        if old == "DEPROVISIONED":
            return ["user.lifecycle.reactivate"] if new != "ACTIVE" else \
                ["user.lifecycle.reactivate", "user.lifecycle.activate"]
        if new == "SUSPENDED":
            return ["user.lifecycle.suspend"]
        if old == "SUSPENDED":
            return ["user.lifecycle.unsuspend"]
        if new == "LOCKED_OUT":
            return ["user.account.lock"]
        if old == "LOCKED_OUT":
            return ["user.account.unlock_by_admin"]
        if old == "STAGED" and new in ("ACTIVE", "PROVISIONED"):
            return ["user.lifecycle.activate"]
        return []

    @staticmethod
    def _t_user(u):
        p = u.get("profile") or {}
        name = " ".join(x for x in (p.get("firstName"), p.get("lastName")) if x) or p.get("login")
        return {"id": u["id"], "type": "User", "alternateId": p.get("login"),
                "displayName": name, "detailEntry": None}

    @staticmethod
    def _t_group(g):
        return {"id": g["id"], "type": "UserGroup", "alternateId": "unknown",
                "displayName": g["profile"].get("name"), "detailEntry": None}

    @staticmethod
    def _t_app(aid):
        return {"id": aid, "type": "AppInstance", "alternateId": "usersync test app",
                "displayName": "usersync test app", "detailEntry": None}

    @staticmethod
    def _t_appuser(u):
        p = u.get("profile") or {}
        return {"id": "0ua" + u["id"][3:], "type": "AppUser", "alternateId": p.get("login"),
                "displayName": " ".join(x for x in (p.get("firstName"), p.get("lastName")) if x)
                or p.get("login"), "detailEntry": None}

    def _append_event(self, et, targets, t):
        msg, legacy = EVENT_INFO.get(et, (et, None))
        rng = self.rng
        req_id = "".join(rng.choice(B62) for _ in range(27))
        uri = "/api/v1/" + {"group": "groups", "application": "apps"}.get(et.split(".")[0], "users")
        ev = {
            "actor": dict(ADMIN),
            "authenticationContext": {"authenticationProvider": None, "authenticationStep": 0,
                                      "credentialProvider": None, "credentialType": None,
                                      "externalSessionId": "trs" + "".join(rng.choice(B62) for _ in range(22)),
                                      "interface": None, "issuer": None},
            "client": {"device": "Unknown",
                       "geographicalContext": copy.deepcopy(CLIENT_GEO),
                       "id": None, "ipAddress": CLIENT_IP,
                       "userAgent": {"browser": "UNKNOWN", "os": "Unknown",
                                     "rawUserAgent": "usersync-simulator"},
                       "zone": "null"},
            "debugContext": {"debugData": {"requestId": req_id, "requestUri": uri,
                                           "url": uri + "?"}},
            "device": None,
            "displayMessage": msg,
            "eventType": et,
            "legacyEventType": legacy,
            "outcome": {"reason": None, "result": "SUCCESS"},
            "published": iso(t, ms=True),
            "request": {"ipChain": [{"geographicalContext": copy.deepcopy(CLIENT_GEO), "ip": CLIENT_IP,
                                     "source": None, "version": "V4"}]},
            "securityContext": {"asNumber": None, "asOrg": None, "domain": None,
                                "isProxy": None, "isp": None},
            "severity": "INFO",
            "target": targets,
            "transaction": {"detail": {}, "id": req_id, "type": "WEB"},
            "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=1)),
            "version": "0",
        }
        self.logs.append(ev)
        self.log_seq.append(self.next_seq)
        self.seq_time[self.next_seq] = int(t * 1000)
        self.next_seq += 1

    # ---------------------------------------------------------------- faults / rate limits
    def validate_fault(self, key, value):
        if key == "okta_buckets":
            if value == "workforce":
                return dict(WORKFORCE)
            if not isinstance(value, dict):
                raise ValueError('okta_buckets must be an object {"<bucket>": limit} or "workforce"')
            out = {}
            for k, v in value.items():
                name = BUCKET_ALIASES.get(k, k)
                if name not in BUCKET_NAMES:
                    raise ValueError("unknown Okta bucket %r (known: %s)" % (k, ", ".join(BUCKET_NAMES)))
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    raise ValueError("bucket limit for %s must be an integer >= 0" % k)
                out[name] = v
            return out
        if key == "okta_html":
            if not isinstance(value, bool):
                raise ValueError("okta_html must be a boolean")
            return value
        if key == "okta_token_share":
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                      or not 0 < value <= 1):
                raise ValueError("okta_token_share must be a number in (0, 1] or null")
            return value
        if key == "okta_search_lag_s":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError("okta_search_lag_s must be a number >= 0")
            return value
        if key in ("okta_link_joined", "okta_charset"):
            if not isinstance(value, bool):
                raise ValueError("%s must be a boolean" % key)
            return value
        if key == "okta_raw_records":
            if not isinstance(value, list) or not all(
                    isinstance(e, dict) and isinstance(e.get("path"), str)
                    and isinstance(e.get("records"), list)
                    and isinstance(e.get("replace", False), bool)
                    and set(e) <= {"path", "records", "replace"}
                    for e in value):
                raise ValueError('okta_raw_records must be a list of {"path": regex, '
                                 '"records": [any JSON], "replace": bool}')
            for e in value:
                try:
                    re.compile(e["path"])
                except re.error as x:
                    raise ValueError("okta_raw_records path is not a valid regex: %s" % x) from None
            return value
        if key in ("okta_nonce_rotate", "okta_rs_nonce", "okta_revoke_tokens"):
            if not isinstance(value, bool):
                raise ValueError("%s must be a boolean" % key)
            return value
        if key == "okta_dpop_algs":
            if not isinstance(value, list) or not value or \
                    not all(a in ("RS256", "ES256") for a in value):
                raise ValueError('okta_dpop_algs must be a non-empty list of "RS256", "ES256"')
            return list(dict.fromkeys(value))
        if key == "okta_fail_first":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError("okta_fail_first must be an integer >= 0")
            return value
        if key == "okta_concurrency":
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError("okta_concurrency must be an integer >= 1 or null")
            return value
        raise ValueError("unknown fault %s" % key)

    def faults_changed(self):
        self.windows = {}
        self.failed_first = 0  # requests failed so far under okta_fail_first
        if self.server.faults.get("okta_revoke_tokens"):
            # every access token issued so far is revoked (or lost by a restarted server)
            self.issued = {}
        seed = self.server.faults.get("seed")
        if seed is not None:
            self.rng = random.Random(seed)

    def _share(self):
        """The fraction of a bucket one token or app may use: the fault
        okta_token_share, else 0.5 whenever limits are set (okta_buckets or rate_limit_per_min),
        else 1 (the generous default limits are not shared)."""
        f = self.server.faults
        if f.get("okta_token_share") is not None:
            return f["okta_token_share"]
        if f.get("okta_buckets") or f.get("rate_limit_per_min") is not None:
            return 0.5
        return 1.0

    @staticmethod
    def _principal(req, issued):
        """Who a request counts against for the per-token share: the SSWS token, the OAuth app
        behind an issued access token, or the static access token itself."""
        a = req.headers.get("authorization") or ""
        scheme, _, tok = a.partition(" ")
        if scheme.lower() == "ssws":
            return "ssws:" + tok
        info = issued.get(tok)
        if info is not None:
            return "app:" + info["client"]
        return "token:" + tok

    def _limit(self, bucket):
        f = self.server.faults
        lim = (f.get("okta_buckets") or {}).get(bucket)
        if lim is None:
            lim = f.get("rate_limit_per_min")
        return GENEROUS if lim is None else lim

    def _window(self, bucket, now):
        """[window start, org-wide used, {principal: used}] of a bucket."""
        w = self.windows.get(bucket)
        if w is None or now >= w[0] + 60:
            w = [now, 0, {}]
            self.windows[bucket] = w
        return w

    def throttle(self, req):
        f = self.server.faults
        if f.get("okta_fail_first") and self.failed_first < f["okta_fail_first"] \
                and (not f.get("fail_path") or re.search(f["fail_path"], req.path)):
            # the first N matching requests since the faults were set fail, then all succeed
            self.failed_first += 1
            return self.fault_response(req, int(f["fail_status"]))
        now = self.server.now()
        conc = self.server.faults.get("okta_concurrency")
        if conc is not None and self.server.inflight > conc:
            req.ctx["rl"] = (0, 0, int(now) + 1)
            return okta_error(429, "E0000047", "API call exceeded rate limit due to too many requests.")
        bucket = bucket_of(req.method, req.path)
        if bucket is None:
            return None
        lim = self._limit(bucket)
        w = self._window(bucket, now)
        reset = int(math.ceil(w[0] + 60))
        who = self._principal(req, self.issued)
        mine = w[2].get(who, 0)
        # the token's ceiling: share x limit, at least 1 unless the bucket is closed
        cap = lim if lim == GENEROUS else (0 if lim == 0 else max(1, int(lim * self._share())))
        if w[1] >= lim or mine >= cap:
            # the headers stay org-wide (ceiling of the bucket); a 429 shows Remaining 0
            req.ctx["rl"] = (lim, 0, reset)
            return okta_error(429, "E0000047", "API call exceeded rate limit due to too many requests.")
        w[1] += 1
        w[2][who] = mine + 1
        req.ctx["rl"] = (lim, lim - w[1], reset)
        return None

    def finish(self, req, resp):
        f = self.server.faults
        if f.get("okta_html") and (not f.get("fail_path") or re.search(f["fail_path"], req.path)):
            # what a proxy, a captive portal or a wrong base URL answers: a 200 HTML page
            resp = Response(200, [("Content-Type", "text/html; charset=utf-8")],
                            b"<!DOCTYPE html><html><head><title>Sign In</title></head>"
                            b"<body>Please sign in</body></html>")
        if f.get("okta_raw_records") and resp.status == 200 and req.arg("after") is None:
            resp = self._inject_records(req, resp, f["okta_raw_records"])
        rl = req.ctx.get("rl")
        if rl is None:
            bucket = bucket_of(req.method, req.path)
            if bucket is not None:
                now = self.server.now()
                lim = self._limit(bucket)
                w = self._window(bucket, now)
                rl = (lim, max(0, lim - w[1]), int(math.ceil(w[0] + 60)))
        h = resp.headers
        if f.get("okta_charset", True):
            # recorded responses say application/json;charset=UTF-8 (fixtures)
            h[:] = [(k, "application/json;charset=UTF-8" if k.lower() == "content-type"
                     and v == "application/json" else v) for k, v in h]
        if f.get("okta_link_joined"):
            # RFC 8288 allows one header with comma-separated links
            ls = [v for k, v in h if k.lower() == "link"]
            if len(ls) > 1:
                h[:] = [(k, v) for k, v in h if k.lower() != "link"] + [("link", ", ".join(ls))]
        if rl is not None:
            h.append(("X-Rate-Limit-Limit", str(rl[0])))
            h.append(("X-Rate-Limit-Remaining", str(rl[1])))
            h.append(("X-Rate-Limit-Reset", str(rl[2])))
        self.req_seq += 1
        h.append(("X-Okta-Request-Id", "%s%06d" % ("".join(self.rng.choice(B62) for _ in range(21)),
                                                   self.req_seq % 1000000)))
        h.append(("Date", http_date(self.server.now())))
        return resp

    @staticmethod
    def _inject_records(req, resp, entries):
        """okta_raw_records: what a broken proxy, a partial outage or a bug upstream may serve.
        The records of every entry whose path matches are appended to the first page of a
        listing (an array body; with "replace": true they are the whole page), or replace the
        object of a get (records[0])."""
        match = [e for e in entries if re.search(e["path"], req.path)]
        recs = [r for e in match for r in e["records"]]
        if not match:
            return resp
        try:
            body = json.loads(resp.body)
        except ValueError:
            return resp
        if isinstance(body, list):
            body = recs if any(e.get("replace") for e in match) else body + recs
        elif not recs:
            return resp
        else:
            body = recs[0]
        return Response(resp.status, resp.headers,
                        json.dumps(body, separators=(",", ":")).encode())

    def fault_response(self, req, status):
        codes = {400: ("E0000001", "Api validation failed"),
                 401: ("E0000011", "Invalid token provided"),
                 403: ("E0000006", "You do not have permission to perform the requested action"),
                 404: ("E0000007", "Not found: Resource not found: %s (n/a)" % req.path),
                 429: ("E0000047", "API call exceeded rate limit due to too many requests."),
                 503: ("E0000010", "Service is in read only mode")}
        code, summary = codes.get(status, ("E0000009", "Internal Server Error"))
        if status == 429:
            # an injected 429 looks like a real one: Remaining 0, Reset in the future (fixture)
            bucket = bucket_of(req.method, req.path)
            now = self.server.now()
            if bucket is not None:
                w = self._window(bucket, now)
                req.ctx["rl"] = (self._limit(bucket), 0, int(math.ceil(w[0] + 60)))
            else:
                req.ctx["rl"] = (0, 0, int(now) + 60)
        return okta_error(status, code, summary)

    # ---------------------------------------------------------------- request handling
    def _auth(self, req):
        """None when the request may proceed, else the error response."""
        a = req.headers.get("authorization")
        invalid = okta_error(401, "E0000011", "Invalid token provided")
        if not a:
            return invalid
        scheme, _, tok = a.partition(" ")
        s = scheme.lower()
        if s == "ssws":
            return None if tok == API_TOKEN else invalid
        if s not in ("bearer", "dpop"):
            return invalid
        info = self.access_tokens.get(tok)  # static tokens from the state never expire
        if info is None:
            info = self.issued.get(tok)
            if info is None or self.server.now() >= info["exp"]:
                # unknown, expired or revoked (RFC 6750 3.1: the client may get a new token)
                return okta_error(401, "E0000011", "Invalid token provided",
                                  headers=[("WWW-Authenticate",
                                            '%s error="invalid_token", error_description='
                                            '"The access token is invalid."'
                                            % ("DPoP" if s == "dpop" else "Bearer"))])
        if info["jkt"] is not None:
            # DPoP-bound: scheme DPoP and a valid proof with ath
            if s != "dpop":
                return invalid
            try:
                jkt = self._check_proof(req, req.headers.get("dpop"), ath_for=tok)
            except _ProofError as e:
                return okta_error(401, "E0000011", "Invalid token provided",
                                  headers=[("WWW-Authenticate",
                                            'DPoP error="invalid_dpop_proof", '
                                            'error_description="%s"' % e)])
            if jkt != info["jkt"]:
                return okta_error(401, "E0000011", "Invalid token provided",
                                  headers=[("WWW-Authenticate",
                                            'DPoP error="invalid_dpop_proof", '
                                            'error_description="key does not match the token"')])
            if self.server.faults.get("okta_rs_nonce"):
                # the resource server's own nonce (RFC 9449 9), never the token endpoint's
                _, pclaims, _, _ = jwt_parts(req.headers.get("dpop"))
                if pclaims.get("nonce") != self.rs_nonce:
                    return okta_error(401, "E0000011", "Invalid token provided",
                                      headers=[("WWW-Authenticate",
                                                'DPoP error="use_dpop_nonce", error_description='
                                                '"Resource server requires nonce in DPoP proof"'),
                                               ("DPoP-Nonce", self.rs_nonce)])
        elif s != "bearer":
            return invalid
        need = scope_for(req.path)
        if need and need not in info["scopes"] and need.replace(".read", ".manage") not in info["scopes"]:
            return okta_error(403, "E0000006",
                              "You do not have permission to perform the requested action",
                              headers=[("WWW-Authenticate",
                                        'Bearer error="insufficient_scope", '
                                        'error_description="The access token provided does not '
                                        'contain the required scopes.", scope="%s"' % need)])
        return None

    # -- OAuth 2.0: POST /oauth2/v1/token
    def _check_proof(self, req, proof, ath_for=None):
        """Validates a DPoP proof for this request; returns the JWK thumbprint of its key."""
        if not proof:
            raise _ProofError("The DPoP proof JWT header is missing.")
        try:
            hdr, claims, signed, sig = jwt_parts(proof)
        except ValueError:
            raise _ProofError("The DPoP proof JWT is malformed.") from None
        if hdr.get("typ") != "dpop+jwt":
            raise _ProofError("The DPoP proof JWT typ is not dpop+jwt.")
        jwk = hdr.get("jwk")
        algs = self.server.faults.get("okta_dpop_algs") or ["RS256", "ES256"]
        if hdr.get("alg") not in algs:
            raise _ProofError("The DPoP proof JWT alg is not supported (supported: %s)."
                              % ", ".join(algs))
        kty = {"RS256": "RSA", "ES256": "EC"}[hdr["alg"]]
        if not isinstance(jwk, dict) or "d" in jwk or jwk.get("kty") != kty:
            raise _ProofError("The DPoP proof JWT has no usable public jwk (%s)." % hdr["alg"])
        ok = rs256_verify(jwk, signed, sig) if kty == "RSA" else es256_verify(jwk, signed, sig)
        if not ok:
            raise _ProofError("The DPoP proof JWT signature is invalid.")
        if claims.get("htm") != req.method:
            raise _ProofError("The DPoP proof htm does not match the request method.")
        want = req.base_url + req.raw_path
        htu = claims.get("htu")
        if not isinstance(htu, str) or htu.split("?")[0].split("#")[0] != want:
            raise _ProofError("The DPoP proof htu does not match the request URL.")
        iat = claims.get("iat")
        if not isinstance(iat, (int, float)) or abs(self.server.now() - iat) > 300:
            raise _ProofError("The DPoP proof iat is too far from now.")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or ("dpop", jti) in self.seen_jti:
            raise _ProofError("The DPoP proof jti is missing or was already used.")
        if ath_for is not None:
            ath = b64url(hashlib.sha256(ath_for.encode()).digest())
            if claims.get("ath") != ath:
                raise _ProofError("The DPoP proof ath does not match the access token.")
        self.seen_jti.add(("dpop", jti))
        return jwk_thumbprint(jwk)

    def token(self, req):
        def oauth_err(status, err, desc, headers=None):
            return json_response(status, {"error": err, "error_description": desc}, headers)
        if req.method != "POST":
            return okta_error(405, "E0000022", "The endpoint does not support the provided HTTP method",
                              headers=[("Allow", "POST")])
        try:
            form = urllib.parse.parse_qs(req.body.decode("utf-8"), keep_blank_values=True,
                                         errors="strict")
        except (UnicodeDecodeError, ValueError):
            return oauth_err(400, "invalid_request", "The request body is not a valid form.")
        f = {k: v[0] for k, v in form.items()}
        if f.get("grant_type") != "client_credentials":
            return oauth_err(400, "unsupported_grant_type",
                             "The authorization grant type is not supported by the authorization server.")
        if f.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" \
                or not f.get("client_assertion"):
            return oauth_err(401, "invalid_client",
                             "Client authentication failed: private_key_jwt is required.")
        now = self.server.now()
        try:
            hdr, claims, signed, sig = jwt_parts(f["client_assertion"])
        except ValueError:
            return oauth_err(401, "invalid_client", "The client_assertion is not a valid JWT.")
        cid = claims.get("iss")
        client = self.oauth_clients.get(cid) if isinstance(cid, str) else None
        if client is None or claims.get("sub") != cid:
            return oauth_err(401, "invalid_client",
                             "The client_assertion iss and sub must be the client_id of a known client.")
        if hdr.get("alg") != "RS256":
            return oauth_err(401, "invalid_client", "The client_assertion alg is not supported.")
        keys = [k for k in client["jwks"] if not hdr.get("kid") or k.get("kid") in (None, hdr["kid"])]
        if not any(rs256_verify(k, signed, sig) for k in keys):
            return oauth_err(401, "invalid_client", "The client_assertion signature is invalid.")
        if claims.get("aud") != req.base_url + "/oauth2/v1/token":
            return oauth_err(401, "invalid_client", "The audience [aud] claim is not valid.")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp <= now:
            return oauth_err(401, "invalid_client", "The client_assertion token is expired.")
        if exp > now + 3600 + 60:
            return oauth_err(401, "invalid_client",
                             "The client_assertion token has an expiration too far in the future.")
        jti = claims.get("jti")
        if jti is not None:
            if ("assertion", jti) in self.seen_jti:
                return oauth_err(401, "invalid_client",
                                 "The client_assertion token has already been used.")
        jkt = None
        if client.get("dpop", True):
            proof = req.headers.get("dpop")
            if not proof:
                return oauth_err(400, "invalid_dpop_proof", "The DPoP proof JWT header is missing.")
            try:
                jkt = self._check_proof(req, proof)
            except _ProofError as e:
                return oauth_err(400, "invalid_dpop_proof", str(e))
            _, pclaims, _, _ = jwt_parts(proof)
            if pclaims.get("nonce") != self.dpop_nonce:
                return oauth_err(400, "use_dpop_nonce",
                                 "Authorization server requires nonce in DPoP proof.",
                                 [("dpop-nonce", self.dpop_nonce)])
        if jti is not None:
            self.seen_jti.add(("assertion", jti))
        want = (f.get("scope") or "").split()
        granted = client.get("scopes", [])
        bad = [x for x in want if x not in granted]
        if not want or bad:
            return oauth_err(400, "invalid_scope",
                             "The following scopes are not allowed: %s" % " ".join(bad or ["(none)"]))
        tok = "".join(self.rng.choice(B62) for _ in range(48))
        life = client["token_lifetime"]
        self.issued[tok] = {"client": cid, "scopes": set(want), "exp": now + life, "jkt": jkt}
        hs = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]
        if jkt and self.server.faults.get("okta_nonce_rotate"):
            # RFC 9449 8.2: a new nonce on a successful response; the client MUST use it next
            self.dpop_nonce = "".join(self.rng.choice(B62) for _ in range(32))
            hs.append(("DPoP-Nonce", self.dpop_nonce))
        return json_response(200, {"token_type": "DPoP" if jkt else "Bearer", "expires_in": life,
                                   "access_token": tok, "scope": " ".join(want)}, hs)

    def metadata(self, req):
        """GET /.well-known/oauth-authorization-server (RFC 8414) of the org authorization
        server: what a client may use, including the DPoP proof algorithms (RFC 9449 5.1)."""
        if req.method not in ("GET", "HEAD"):
            return okta_error(405, "E0000022", "The endpoint does not support the provided HTTP method",
                              headers=[("Allow", "GET")])
        b = req.base_url
        return json_response(200, {
            "issuer": b, "authorization_endpoint": b + "/oauth2/v1/authorize",
            "token_endpoint": b + "/oauth2/v1/token", "jwks_uri": b + "/oauth2/v1/keys",
            "response_types_supported": ["code", "token", "id_token"],
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post",
                                                      "client_secret_jwt", "private_key_jwt",
                                                      "none"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
            "revocation_endpoint": b + "/oauth2/v1/revoke",
            "dpop_signing_alg_values_supported": list(
                self.server.faults.get("okta_dpop_algs") or ["RS256", "ES256"])},
            [("Cache-Control", "max-age=86400, must-revalidate")])

    ROUTES = [
        (re.compile(r"^/api/v1/users$"), "list_users"),
        (re.compile(r"^/api/v1/users/([^/]+)$"), "get_user"),
        (re.compile(r"^/api/v1/users/([^/]+)/groups$"), "list_user_groups"),
        (re.compile(r"^/api/v1/groups$"), "list_groups"),
        (re.compile(r"^/api/v1/groups/([^/]+)$"), "get_group"),
        (re.compile(r"^/api/v1/groups/([^/]+)/users$"), "group_users"),
        (re.compile(r"^/api/v1/apps/([^/]+)$"), "get_app"),
        (re.compile(r"^/api/v1/apps/([^/]+)/users$"), "app_users"),
        (re.compile(r"^/api/v1/apps/([^/]+)/users/([^/]+)$"), "app_user"),
        (re.compile(r"^/api/v1/apps/([^/]+)/groups$"), "app_groups"),
        (re.compile(r"^/api/v1/apps/([^/]+)/groups/([^/]+)$"), "app_group"),
        (re.compile(r"^/api/v1/logs$"), "list_logs"),
    ]

    def handle(self, req):
        if req.path == "/oauth2/v1/token":
            return self.token(req)
        if req.path == "/.well-known/oauth-authorization-server":
            return self.metadata(req)
        denied = self._auth(req)
        if denied is not None:
            return denied
        for rx, name in self.ROUTES:
            m = rx.match(req.path)
            if m:
                if req.method not in ("GET", "HEAD"):
                    return okta_error(405, "E0000022",
                                      "The endpoint does not support the provided HTTP method",
                                      headers=[("Allow", "GET")])
                try:
                    return getattr(self, name)(req, *m.groups())
                except _ApiError as e:
                    return e.resp
        return okta_error(404, "E0000008",
                          "The requested path was not found")

    # -- helpers
    def _limit_arg(self, req, default, maximum, minimum=1, name="limit"):
        v = req.arg(name)
        if v is None or v == "":
            return default
        try:
            n = int(v)
        except ValueError:
            raise _ApiError(okta_error(400, "E0000001", "Api validation failed: limit",
                                       ["limit: The field must be a number"]))
        if n < 0:
            raise _ApiError(okta_error(400, "E0000001", "Api validation failed: limit",
                                       ["limit: must be greater than or equal to 0"]))
        return max(minimum, min(n, maximum))

    def _links(self, req, params, nxt=None, drop=()):
        """Link header lines: self (params as given, defaults filled in) and next (without
        the parameters in `drop`, which the cursor carries instead)."""
        base = req.base_url + req.path
        out = [("link", '<%s>; rel="self"' % (base + ("?" + urlencode(params) if params else "")))]
        if nxt is not None:
            p = [(k, v) for k, v in params if k != "after" and k not in drop]
            p.insert(0, ("after", nxt))
            out.append(("link", '<%s?%s>; rel="next"' % (base, urlencode(p))))
        return out

    @staticmethod
    def _params(req, order, **set_):
        """Query parameters in `order` (those present, or forced via set_), as (name, value)."""
        out = []
        for k in order:
            if k in set_:
                if set_[k] is not None:
                    out.append((k, str(set_[k])))
            elif req.arg(k) is not None:
                out.append((k, req.arg(k)))
        return out

    def _omit_credentials(self, req):
        ct = req.headers.get("content-type") or ""
        m = re.search(r"okta-response=([^;]+)", ct)
        if not m:
            return False
        opts = {o.strip() for o in m.group(1).split(",")}
        return {"omitCredentials", "omitCredentialsLinks", "omitTransitioningToStatus"} <= opts

    USER_KEYS = ("id", "status", "created", "activated", "statusChanged", "lastLogin",
                 "lastUpdated", "passwordChanged", "type", "profile", "credentials")

    def render_user(self, req, u, full=False, omit=False):
        d = {k: u[k] for k in self.USER_KEYS if k in u}
        if len(d) != len(u):
            d.update(u)
        if omit:
            d.pop("credentials", None)
        base = req.base_url + "/api/v1/users/" + u["id"]
        links = {"self": {"href": base}}
        if full:
            st = u["status"]
            ops = {"STAGED": ["activate", "deactivate"],
                   "PROVISIONED": ["suspend", "resetPassword", "reactivate", "deactivate"],
                   "ACTIVE": ["suspend", "resetPassword", "expirePassword", "deactivate"],
                   "RECOVERY": ["resetPassword", "deactivate", "suspend"],
                   "PASSWORD_EXPIRED": ["resetPassword", "deactivate", "suspend"],
                   "LOCKED_OUT": ["unlock", "resetPassword", "deactivate", "suspend"],
                   "SUSPENDED": ["unsuspend", "deactivate"],
                   "DEPROVISIONED": ["activate", "delete"]}.get(st, [])
            paths = {"resetPassword": "reset_password", "expirePassword": "expire_password"}
            for op in ops:
                if op == "delete":
                    links[op] = {"href": base, "method": "DELETE"}
                else:
                    links[op] = {"href": base + "/lifecycle/" + paths.get(op, op), "method": "POST"}
            tid = (u.get("type") or {}).get("id", "oty1simdefault0000x1")
            links["schema"] = {"href": req.base_url + "/api/v1/meta/schemas/user/osc" + tid[3:]}
            links["type"] = {"href": req.base_url + "/api/v1/meta/types/user/" + tid}
        d["_links"] = links
        return d

    GROUP_KEYS = ("id", "created", "lastUpdated", "lastMembershipUpdated", "objectClass",
                  "type", "profile")

    def render_group(self, req, g, stats=False):
        d = {k: g[k] for k in self.GROUP_KEYS if k in g}
        if len(d) != len(g):
            d.update(g)
        base = req.base_url + "/api/v1/groups/" + g["id"]
        links = {"logo": [{"name": "medium", "href": LOGO % "medium", "type": "image/png"},
                          {"name": "large", "href": LOGO % "large", "type": "image/png"}],
                 "users": {"href": base + "/users"}, "apps": {"href": base + "/apps"}}
        if g.get("type") == "APP_GROUP" and isinstance(g.get("source"), dict) and g["source"].get("id"):
            links["source"] = {"href": req.base_url + "/api/v1/apps/" + g["source"]["id"]}
        d["_links"] = links
        if stats:
            emb = dict(d.get("_embedded") or {})
            emb["stats"] = {"usersCount": len(self.members.get(g["id"], ())),
                            "appsCount": sum(1 for a in self.apps.values() if g["id"] in a["groups"]),
                            "groupPushMappingsCount": 0, "hasAdminPrivlege": False}
            d["_embedded"] = emb
        return d

    def _page_sorted(self, ids, after, limit):
        """Slice of a sorted id list after cursor `after` ("0"+id, as recorded)."""
        start = 0
        if after:
            key = after[1:] if after.startswith("0") else after
            start = bisect.bisect_right(ids, key)
        page = ids[start:start + limit]
        more = start + limit < len(ids)
        return page, ("0" + page[-1] if more and page else None)

    def _ok(self, body, links=(), headers=()):
        return json_response(200, body, list(links) + list(headers))

    # -- /api/v1/users
    def list_users(self, req):
        omit = self._omit_credentials(req)
        q = req.arg("q")
        flt = req.arg("filter")
        srch = req.arg("search")
        if q is not None and flt is None and srch is None:
            limit = self._limit_arg(req, 10, 200)
            ql = q.lower()
            out = []
            for uid in self.ids:
                u = self.by_id[uid]
                if u["status"] == "DEPROVISIONED":
                    continue
                p = u["profile"]
                if any(isinstance(p.get(k), str) and p[k].lower().startswith(ql)
                       for k in ("firstName", "lastName", "email")):
                    out.append(self.render_user(req, u, omit=omit))
                    if len(out) >= limit:
                        break
            return self._ok(out, self._links(req, self._params(req, ("q", "limit"), limit=limit)))
        limit = self._limit_arg(req, 200, 200)
        after = req.arg("after")
        if flt is None and srch is None:
            ids = self._visible_ids()
            page, nxt = self._page_sorted(ids, after, limit)
            body = [self.render_user(req, self.by_id[i], omit=omit) for i in page]
            return self._ok(body, self._links(req, self._params(req, ("limit", "after"), limit=limit), nxt))
        try:
            if srch is not None:
                pred = compile_filter(srch, user_search_rules(self._profile_keys("user")))
            else:
                pred = compile_filter(flt, USER_FILTER)
        except FilterError as e:
            return bad_search(str(e))
        by_id, ids = self.by_id, self.ids
        if srch is not None:
            by_id, ids, _, _ = self._search_view()
        sort_by = req.arg("sortBy") if srch is not None else None
        if sort_by:
            desc = (req.arg("sortOrder") or "asc").lower() in ("desc", "descending")
            matches = [by_id[i] for i in ids if pred(by_id[i])]
            keyf = lambda u: (str(_first(_get(u, sort_by)) or ""), u["id"])
            matches.sort(key=keyf, reverse=desc)
            start = 0
            if after:
                try:
                    start = int(base64.urlsafe_b64decode(after.encode()).decode().split(":")[0])
                except (ValueError, UnicodeDecodeError):
                    return okta_error(400, "E0000001", "Api validation failed: after")
            page = matches[start:start + limit]
            nxt = None
            if start + limit < len(matches):
                nxt = base64.urlsafe_b64encode(("%d:%s" % (start + limit, page[-1]["id"])).encode()).decode()
            body = [self.render_user(req, u, omit=omit) for u in page]
            params = self._params(req, ("limit", "search", "sortBy", "sortOrder", "after"), limit=limit)
            return self._ok(body, self._links(req, params, nxt))
        start = 0
        if after:
            key = after[1:] if after.startswith("0") else after
            start = bisect.bisect_right(ids, key)
        body = []
        nxt = None
        for k in range(start, len(ids)):
            u = by_id[ids[k]]
            if pred(u):
                if len(body) == limit:
                    nxt = "0" + body[-1]["id"]
                    break
                body.append(self.render_user(req, u, omit=omit))
        order = ("limit", "filter", "after") if flt is not None and srch is None else ("limit", "search", "after")
        return self._ok(body, self._links(req, self._params(req, order, limit=limit), nxt))

    def _visible_ids(self):
        v = getattr(self, "_visible_cache", None)
        if v is None or v[0] is not self.ids:
            v = (self.ids, [i for i in self.ids if self.by_id[i]["status"] != "DEPROVISIONED"])
            self._visible_cache = v
        return v[1]

    def _find_user(self, key):
        u = self.by_id.get(key)
        if u is None:
            u = self.by_login.get(key.lower())
        if u is None and "@" not in key:
            cands = [x for lk, x in self.by_login.items() if lk.split("@", 1)[0] == key.lower()]
            if len(cands) == 1:
                u = cands[0]
        return u

    def _me(self, req):
        """The caller of /users/me: an SSWS token acts as the admin who made
        it (the state's user with ADMIN's id, else a synthesised one); a client-credentials
        token has no user behind it, so None (404)."""
        scheme = (req.headers.get("authorization") or "").partition(" ")[0].lower()
        if scheme != "ssws":
            return None
        u = self.by_id.get(ADMIN["id"])
        if u is None:
            u = {"id": ADMIN["id"], "status": "ACTIVE", "profile": {
                "login": ADMIN["alternateId"], "email": ADMIN["alternateId"],
                "firstName": "Sim", "lastName": "Admin"}}
            self._complete_user(u, "2024-01-01T00:00:00.000Z")
        return u

    def get_user(self, req, key):
        u = self._me(req) if key == "me" else self._find_user(key)
        if u is None:
            return not_found(key, "User")
        body = self.render_user(req, u, full=True, omit=self._omit_credentials(req))
        etag = 'W/"%s"' % hashlib.sha256(json.dumps(u, sort_keys=True).encode()).hexdigest()
        return self._ok(body, headers=[("ETag", etag)])

    def list_user_groups(self, req, key):
        u = self._find_user(key)
        if u is None:
            return not_found(key, "User")
        limit = self._limit_arg(req, 200, 10000)
        gids = self.user_groups.get(u["id"], [])
        page, nxt = self._page_sorted(gids, req.arg("after"), limit)
        body = [self.render_group(req, self.gby_id[g]) for g in page]
        return self._ok(body, self._links(req, self._params(req, ("limit", "after"), limit=limit), nxt))

    # -- /api/v1/groups
    def list_groups(self, req):
        stats = "stats" in (req.arg("expand") or "").split(",")
        q = req.arg("q")
        flt = req.arg("filter")
        srch = req.arg("search")
        if q is not None and flt is None and srch is None:
            # cannot be paged: up to 300 results and no Link header at all
            limit = self._limit_arg(req, 300, 300)
            ql = q.lower()
            out = []
            for gid in self.gids:
                g = self.gby_id[gid]
                if g["profile"]["name"].lower().startswith(ql):
                    out.append(self.render_group(req, g, stats))
                    if len(out) >= limit:
                        break
            return self._ok(out)
        limit = self._limit_arg(req, 10000, 10000)
        pred = None
        try:
            if srch is not None:
                pred = compile_filter(srch, group_search_rules(self._profile_keys("group")))
            elif flt is not None:
                pred = compile_filter(flt, GROUP_FILTER)
        except FilterError as e:
            return bad_search(str(e))
        gby_id, gids = self.gby_id, self.gids
        if srch is not None:
            _, _, gby_id, gids = self._search_view()
        after = req.arg("after")
        start = 0
        if after:
            key = after[1:] if after.startswith("0") else after
            start = bisect.bisect_right(gids, key)
        body, nxt = [], None
        for k in range(start, len(gids)):
            g = gby_id[gids[k]]
            if pred is None or pred(g):
                if len(body) == limit:
                    nxt = "0" + body[-1]["id"]
                    break
                body.append(self.render_group(req, g, stats))
        params = self._params(req, ("limit", "filter", "search", "expand", "after"), limit=limit)
        return self._ok(body, self._links(req, params, nxt))

    def get_group(self, req, gid):
        g = self.gby_id.get(gid)
        if g is None:
            return not_found(gid, "UserGroup")
        return self._ok(self.render_group(req, g, "stats" in (req.arg("expand") or "")))

    def group_users(self, req, gid):
        if gid not in self.gby_id:
            return not_found(gid, "UserGroup")
        limit = self._limit_arg(req, 1000, 10000)  # default 1000
        page, nxt = self._page_sorted(self.member_ids.get(gid, []), req.arg("after"), limit)
        omit = self._omit_credentials(req)
        body = [self.render_user(req, self.by_id[u], omit=omit) for u in page]
        return self._ok(body, self._links(req, self._params(req, ("limit", "after"), limit=limit), nxt))

    # -- /api/v1/apps
    def render_app_user(self, req, aid, uid, expand_user=False):
        u = self.by_id[uid]
        p = u["profile"]
        ts = self.app_meta.get(aid, {}).get("users", {}).get(uid) or u["created"]
        first, last = p.get("firstName"), p.get("lastName")
        ov = self.apps[aid].get("app_users", {}).get(uid, {})
        d = {"id": uid, "externalId": ov.get("externalId"), "created": ts, "lastUpdated": ts,
             "scope": self.effective[aid][uid], "status": ov.get("status", "ACTIVE"),
             "statusChanged": ts, "passwordChanged": None,
             "syncState": ov.get("syncState", "DISABLED"),
             "credentials": {"userName": p.get("login")},
             "profile": {"street_address": None, "country": None, "website": None,
                         "zoneinfo": p.get("timezone") or "America/Los_Angeles", "birthdate": None,
                         "gender": None, "formatted": None, "profile": None, "locality": None,
                         "given_name": first, "middle_name": None,
                         "locale": p.get("locale") or "en_US", "picture": None,
                         "name": " ".join(x for x in (first, last) if x) or None,
                         "nickname": None, "phone_number": None, "region": None,
                         "postal_code": None, "family_name": last, "email": p.get("email")},
             "_links": {"app": {"href": req.base_url + "/api/v1/apps/" + aid},
                        "user": {"href": req.base_url + "/api/v1/users/" + uid}}}
        if expand_user:
            d["_embedded"] = {"user": self.render_user(req, u)}
        return d

    def get_app(self, req, aid):
        # GET /api/v1/apps/{appId} (getApplication): the simulator keeps no app settings;
        # every app is an OpenID Connect web app (OpenIdConnectApplication: name, settings
        # and credentials are required), with a fixed client setup.
        if aid not in self.apps:
            return not_found(aid, "AppInstance")
        return self._ok({"id": aid, "name": "oidc_client", "label": aid, "status": "ACTIVE",
                         "created": "2020-01-01T00:00:00.000Z", "lastUpdated": "2020-01-01T00:00:00.000Z",
                         "signOnMode": "OPENID_CONNECT", "features": [], "visibility": {"hide": {}},
                         "credentials": {
                             "userNameTemplate": {"template": "${source.login}", "type": "BUILT_IN"},
                             "oauthClient": {"autoKeyRotation": True, "client_id": aid,
                                             "token_endpoint_auth_method": "client_secret_basic"}},
                         "settings": {
                             "app": {},
                             "notifications": {"vpn": {"network": {"connection": "DISABLED"}}},
                             "oauthClient": {"application_type": "web", "consent_method": "REQUIRED",
                                             "grant_types": ["authorization_code"],
                                             "issuer_mode": "DYNAMIC",
                                             "redirect_uris": [req.base_url + "/callback"],
                                             "response_types": ["code"]}},
                         "_links": {"users": {"href": req.base_url + "/api/v1/apps/%s/users" % aid},
                                    "groups": {"href": req.base_url + "/api/v1/apps/%s/groups" % aid}}})

    def app_users(self, req, aid):
        if aid not in self.apps:
            return not_found(aid, "AppInstance")
        limit = self._limit_arg(req, 50, 500, 1)  # default 50, max 500
        ids = self.eff_sorted[aid]
        q = req.arg("q")
        exp = req.arg("expand") == "user"
        after = req.arg("after")
        start = 0
        if after:
            key = after[1:] if after.startswith("0") else after
            start = bisect.bisect_right(ids, key)
        body, nxt = [], None
        ql = q.lower() if q else None
        for k in range(start, len(ids)):
            uid = ids[k]
            if ql is not None:
                p = self.by_id[uid]["profile"]
                if not any(isinstance(p.get(f), str) and p[f].lower().startswith(ql)
                           for f in ("login", "firstName", "lastName", "email")):
                    continue
            if len(body) == limit:
                nxt = "0" + body[-1]["id"]
                break
            body.append(self.render_app_user(req, aid, uid, exp))
        params = self._params(req, ("limit", "q", "expand", "after"), limit=limit)
        return self._ok(body, self._links(req, params, nxt))

    def app_user(self, req, aid, uid):
        if aid not in self.apps:
            return not_found(aid, "AppInstance")
        if uid not in self.effective[aid]:
            return not_found(uid, "AppUser")
        return self._ok(self.render_app_user(req, aid, uid, req.arg("expand") == "user"))

    def render_app_group(self, req, aid, gid, prio):
        ts = self.app_meta.get(aid, {}).get("groups", {}).get(gid) or self.gby_id[gid]["created"]
        return {"id": gid, "lastUpdated": ts, "priority": prio, "profile": {},
                "_links": {"app": {"href": req.base_url + "/api/v1/apps/" + aid},
                           "self": {"href": req.base_url + "/api/v1/apps/%s/groups/%s" % (aid, gid)},
                           "group": {"href": req.base_url + "/api/v1/groups/" + gid}}}

    def app_groups(self, req, aid):
        if aid not in self.apps:
            return not_found(aid, "AppInstance")
        limit = self._limit_arg(req, 20, 200, 20)  # min 20, max 200, default 20
        gl = self.apps[aid]["groups"]
        prio = {g: i for i, g in enumerate(gl)}
        ids = sorted(gl)
        q = req.arg("q")
        ql = q.lower() if q else None
        after = req.arg("after")
        start = 0
        if after:
            key = after[1:] if after.startswith("0") else after
            start = bisect.bisect_right(ids, key)
        body, nxt = [], None
        for k in range(start, len(ids)):
            gid = ids[k]
            if ql is not None and not self.gby_id[gid]["profile"]["name"].lower().startswith(ql):
                continue
            if len(body) == limit:
                nxt = "0" + body[-1]["id"]
                break
            body.append(self.render_app_group(req, aid, gid, prio[gid]))
        params = self._params(req, ("limit", "q", "expand", "after"), limit=limit)
        return self._ok(body, self._links(req, params, nxt))

    def app_group(self, req, aid, gid):
        if aid not in self.apps:
            return not_found(aid, "AppInstance")
        gl = self.apps[aid]["groups"]
        if gid not in gl:
            return not_found(gid, "ApplicationGroupAssignment")
        return self._ok(self.render_app_group(req, aid, gid, gl.index(gid)))

    # -- /api/v1/logs
    def list_logs(self, req):
        now = self.server.now()
        limit_s = req.arg("limit")
        limit = 100
        if limit_s is not None:
            try:
                limit = int(limit_s)
            except ValueError:
                return okta_error(400, "E0000001", "Api validation failed: limit",
                                  ["limit: The field must be a number"])
            if limit < 0 or limit > 1000:
                # spec: "Integer between 0 and 1000" (decision: outside is refused, not clamped)
                return okta_error(400, "E0000001", "Api validation failed: limit",
                                  ["limit: must be between 0 and 1000"])
        since_s, until_s, after = req.arg("since"), req.arg("until"), req.arg("after")
        if since_s is not None and after is not None:
            return okta_error(400, "E0000001", "Api validation failed: since",
                              ["since: The 'since' and 'after' parameters cannot be combined"])
        order = (req.arg("sortOrder") or "ASCENDING").upper()
        if order not in ("ASCENDING", "DESCENDING"):
            return okta_error(400, "E0000001", "Api validation failed: sortOrder",
                              ["sortOrder: must be ASCENDING or DESCENDING"])
        try:
            until = parse_time(until_s) if until_s is not None else None
            since = parse_time(since_s) if since_s is not None else None
        except FilterError:
            return okta_error(400, "E0000001", "Api validation failed: since/until",
                              ["Invalid date format; use ISO 8601"])
        pred = None
        if req.arg("filter") is not None:
            f = req.arg("filter")
            try:
                pred = compile_filter(f, LOG_FILTER)
            except FilterError as e:
                if " co " in " %s " % f.lower() and "debugData" in f:
                    return bad_search(str(e))
                return okta_error(400, "E0000053", "Invalid filter: %s" % e)
        words = []
        if req.arg("q"):
            words = [w.lower() for w in req.arg("q").split()]
            if len(words) > 10 or any(len(w) > 40 for w in words):
                return okta_error(400, "E0000001", "Api validation failed: q",
                                  ["q: at most 10 keywords of at most 40 characters"])
        polling = until is None and order == "ASCENDING"
        # cursor: polling "<persistence ms of the last event read>_<seq>" (only the sequence
        # decides what comes next, so late-published events are not lost); bounded
        # "<since_ms>_<pub_ms>_<seq>". No age check on a cursor (only on `since`).
        cur = None
        if after is not None:
            try:
                cur = [int(x) for x in after.split("_")]
                if len(cur) not in (2, 3):
                    raise ValueError
            except ValueError:
                return okta_error(400, "E0000001", "Api validation failed: after",
                                  ["after: invalid cursor"])
            since = cur[0] / 1000.0
        if since is None:
            since = (until if until is not None else now) - 7 * 86400
        if after is None and since < now - 180 * 86400:
            return okta_error(400, "E0000053", "Invalid since: over 180 days prior to the current day")
        since_ms = int(round(since * 1000))

        def match(e, pub):
            if polling and cur is not None:
                pass  # a polling cursor returns every event persisted after it
            elif pub < since or (until is not None and pub >= until):
                return False
            if pred is not None and not pred(e):
                return False
            if words:
                # keywords match the event's values, not its property names or JSON syntax
                text = "\n".join(_strings(e)).lower()
                return all(w in text for w in words)
            return True

        body = []
        nxt = None
        if polling:
            last_seq = cur[1] if cur else 0
            scanned = last_seq
            for e, s in zip(self.logs, self.log_seq):
                if s <= last_seq:
                    continue
                if len(body) == limit:
                    break
                scanned = s
                pub = _pub(e)
                if match(e, pub):
                    body.append(e)
            if len(body) < limit or limit == 0:
                scanned = max([scanned] + [s for s in self.log_seq])
                if limit == 0:
                    scanned = last_seq
            if scanned == last_seq:
                t_ms = cur[0] if cur else since_ms
            else:
                t_ms = self.seq_time.get(scanned, since_ms)
            nxt = "%d_%d" % (t_ms, scanned)
        else:
            items = sorted(((int(round(_pub(e) * 1000)), s, e) for e, s in zip(self.logs, self.log_seq)),
                           key=lambda x: (x[0], x[1]), reverse=(order == "DESCENDING"))
            pos = (cur[1], cur[2]) if cur and len(cur) == 3 else None
            last = None
            for pub_ms, s, e in items:
                if pos is not None:
                    k = (pub_ms, s)
                    if (order == "ASCENDING" and k <= pos) or (order == "DESCENDING" and k >= pos):
                        continue
                if not match(e, pub_ms / 1000.0):
                    continue
                if len(body) == limit:
                    if last is not None:
                        nxt = "%d_%d_%d" % (since_ms, last[0], last[1])
                    break
                body.append(e)
                last = (pub_ms, s)
        params = self._params(req, ("since", "until", "filter", "q", "limit", "sortOrder", "after"))
        return self._ok(body, self._links(req, params, nxt, drop=("since",)))


class _ProofError(ValueError):
    pass


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_parts(token):
    """(header, claims, signed bytes, signature bytes) of a compact JWS; ValueError if malformed."""
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        raise ValueError("not a compact JWS")
    hdr = json.loads(b64url_decode(parts[0]))
    claims = json.loads(b64url_decode(parts[1]))
    if not isinstance(hdr, dict) or not isinstance(claims, dict):
        raise ValueError("header and claims must be objects")
    return hdr, claims, (parts[0] + "." + parts[1]).encode(), b64url_decode(parts[2])


_SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")


def rs256_verify(jwk, signed, sig):
    """RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 8.2.2): s^e mod n must be the padded digest."""
    try:
        if jwk.get("kty") != "RSA":
            return False
        n = int.from_bytes(b64url_decode(jwk["n"]), "big")
        e = int.from_bytes(b64url_decode(jwk["e"]), "big")
    except (KeyError, ValueError, TypeError):
        return False
    k = (n.bit_length() + 7) // 8
    if len(sig) != k or k < 256:
        return False
    s_int = int.from_bytes(sig, "big")
    if s_int >= n:
        return False
    em = pow(s_int, e, n).to_bytes(k, "big")
    t = _SHA256_PREFIX + hashlib.sha256(signed).digest()
    return em == b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t


# NIST P-256 (FIPS 186-4 D.1.2.3)
_P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffff
_B = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b
_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551
_G = (0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296,
      0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5)


def _ec_add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0] and (a[1] + b[1]) % _P == 0:
        return None
    if a == b:
        m = (3 * a[0] * a[0] - 3) * pow(2 * a[1], -1, _P) % _P
    else:
        m = (b[1] - a[1]) * pow(b[0] - a[0], -1, _P) % _P
    x = (m * m - a[0] - b[0]) % _P
    return x, (m * (a[0] - x) - a[1]) % _P


def _ec_mul(k, pt):
    out = None
    while k:
        if k & 1:
            out = _ec_add(out, pt)
        pt = _ec_add(pt, pt)
        k >>= 1
    return out


def es256_verify(jwk, signed, sig):
    """ECDSA P-256 with SHA-256 (FIPS 186-4 6.4), the JOSE r||s signature form (RFC 7518 3.4)."""
    try:
        if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            return False
        x = int.from_bytes(b64url_decode(jwk["x"]), "big")
        y = int.from_bytes(b64url_decode(jwk["y"]), "big")
    except (KeyError, ValueError, TypeError):
        return False
    if not (0 <= x < _P and 0 <= y < _P) or (y * y - x * x * x + 3 * x - _B) % _P != 0:
        return False
    if len(sig) != 64:
        return False
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    if not (1 <= r < _N and 1 <= s < _N):
        return False
    e = int.from_bytes(hashlib.sha256(signed).digest(), "big")
    w = pow(s, -1, _N)
    pt = _ec_add(_ec_mul(e * w % _N, _G), _ec_mul(r * w % _N, (x, y)))
    return pt is not None and pt[0] % _N == r


def jwk_thumbprint(jwk):
    """RFC 7638 thumbprint of an RSA or EC public JWK."""
    if jwk.get("kty") == "EC":
        members = {"crv": jwk.get("crv"), "kty": "EC", "x": jwk.get("x"), "y": jwk.get("y")}
    else:
        members = {"e": jwk.get("e"), "kty": "RSA", "n": jwk.get("n")}
    canon = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canon.encode()).digest())


SCOPES = (("/api/v1/users", "okta.users.read"), ("/api/v1/groups", "okta.groups.read"),
          ("/api/v1/apps", "okta.apps.read"), ("/api/v1/logs", "okta.logs.read"))


def scope_for(path):
    """The OAuth scope a read of `path` needs, or None."""
    for prefix, scope in SCOPES:
        if path == prefix or path.startswith(prefix + "/"):
            return scope
    return None


READ_SCOPES = tuple(sc for _, sc in SCOPES)


def validate_access_tokens(toks):
    """state.access_tokens: [{"token": str, "scopes": [str], "dpop_jkt": str or null}] ->
    {token: {"scopes": set, "jkt": ...}}. A plain string is a Bearer token with the four
    read scopes. A token with dpop_jkt is DPoP-bound: it must be sent as
    "Authorization: DPoP" with a proof signed by the key of that RFC 7638 thumbprint."""
    out = {}
    for i, t in enumerate(toks):
        if isinstance(t, str):
            t = {"token": t, "scopes": list(READ_SCOPES), "dpop_jkt": None}
        if not isinstance(t, dict) or not isinstance(t.get("token"), str) or not t["token"]:
            raise ValueError("access_tokens[%d]: a string or {token, scopes, dpop_jkt}" % i)
        unknown = set(t) - {"token", "scopes", "dpop_jkt"}
        if unknown:
            raise ValueError("access_tokens[%d]: unknown keys %s" % (i, ", ".join(sorted(unknown))))
        sc = t.get("scopes", list(READ_SCOPES))
        if not isinstance(sc, list) or not all(isinstance(x, str) for x in sc):
            raise ValueError("access_tokens[%d].scopes must be a list of strings" % i)
        jkt = t.get("dpop_jkt")
        if jkt is not None and (not isinstance(jkt, str) or not jkt):
            raise ValueError("access_tokens[%d].dpop_jkt must be a JWK thumbprint or null" % i)
        out[t["token"]] = {"scopes": set(sc), "jkt": jkt}
    return out


def validate_oauth_clients(clients):
    """{"<client_id>": {"jwks": [RSA public JWK], "scopes": [granted], "dpop": true,
    "token_lifetime": 3600}} (token_lifetime is a test knob: real tokens last 1 h)."""
    if not isinstance(clients, dict):
        raise ValueError("oauth_clients must be an object {client_id: {jwks, scopes, dpop}}")
    out = {}
    for cid, c in clients.items():
        if not isinstance(c, dict) or not isinstance(c.get("jwks"), list) or not c["jwks"]:
            raise ValueError("oauth_clients[%s].jwks must be a non-empty list of JWKs" % cid)
        for k in c["jwks"]:
            if not isinstance(k, dict) or k.get("kty") != "RSA" or "n" not in k or "e" not in k:
                raise ValueError("oauth_clients[%s].jwks: RSA public keys only" % cid)
            if "d" in k:
                raise ValueError("oauth_clients[%s].jwks: a private key was given" % cid)
        sc = c.get("scopes", [])
        if not isinstance(sc, list) or not all(isinstance(x, str) for x in sc):
            raise ValueError("oauth_clients[%s].scopes must be a list of strings" % cid)
        if not isinstance(c.get("dpop", True), bool):
            raise ValueError("oauth_clients[%s].dpop must be a boolean" % cid)
        life = c.get("token_lifetime", 3600)
        if not isinstance(life, int) or isinstance(life, bool) or not 1 <= life <= 3600:
            raise ValueError("oauth_clients[%s].token_lifetime must be 1..3600 seconds" % cid)
        out[cid] = {"jwks": c["jwks"], "scopes": list(sc), "dpop": c.get("dpop", True),
                    "token_lifetime": life}
    return out


APPUSER_STATUSES = ("ACTIVE", "APPROVED", "DEPROVISIONED", "IMPLICIT", "IMPORTED", "INACTIVE",
                    "MATCHED", "PENDING", "PROVISIONED", "REVOKED", "STAGED", "SUSPENDED",
                    "UNASSIGNED")
SYNC_STATES = ("DISABLED", "ERROR", "OUT_OF_SYNC", "SYNCHRONIZED", "SYNCING")


def validate_app_users(aid, ov, by_id):
    """apps[aid].app_users: {uid: {"status", "syncState", "externalId"}} overrides of the
    AppUser defaults (ACTIVE, DISABLED, null: an SSO-only assignment).
    An override only shows while the user is an effective assignee."""
    if not isinstance(ov, dict):
        raise ValueError("apps[%s].app_users must be an object {user id: {...}}" % aid)
    out = {}
    for uid, o in ov.items():
        if uid not in by_id:
            raise ValueError("apps[%s].app_users: unknown user %s" % (aid, uid))
        if not isinstance(o, dict) or set(o) - {"status", "syncState", "externalId"}:
            raise ValueError("apps[%s].app_users[%s]: only status, syncState, externalId" % (aid, uid))
        if "status" in o and o["status"] not in APPUSER_STATUSES:
            raise ValueError("apps[%s].app_users[%s].status must be one of %s"
                             % (aid, uid, ", ".join(APPUSER_STATUSES)))
        if "syncState" in o and o["syncState"] not in SYNC_STATES:
            raise ValueError("apps[%s].app_users[%s].syncState must be one of %s"
                             % (aid, uid, ", ".join(SYNC_STATES)))
        if o.get("externalId") is not None and not isinstance(o["externalId"], str):
            raise ValueError("apps[%s].app_users[%s].externalId must be a string or null" % (aid, uid))
        out[uid] = dict(o)
    return out


class _ApiError(Exception):
    def __init__(self, resp):
        self.resp = resp


def _pub(e):
    try:
        return parse_time(e["published"])
    except FilterError:
        return 0.0


def _strings(v):
    """Every string and number value inside a JSON value (for the System Log `q`)."""
    if isinstance(v, dict):
        for x in v.values():
            yield from _strings(x)
    elif isinstance(v, list):
        for x in v:
            yield from _strings(x)
    elif isinstance(v, str):
        yield v
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        yield str(v)


def _first(vals):
    return vals[0] if vals else None


PRODUCT = Okta
