"""SCIM 2.0 service provider simulator (RFC 7643 resources, RFC 7644 protocol).

Run: `fake.py scim [--flavour atlassian] ...` (fake.py picks the class from FLAVOURS).

Generic mode (ScimProduct), base path /scim/v2:
  GET  /ServiceProviderConfig, /ResourceTypes, /Schemas
  GET  /Users, /Groups: filter, startIndex (1-based; < 1 counts as 1), count (negative counts
       as 0; above the maximum the maximum: fault "max_count", default 100; fault "page_short": pages before the last hold one item
       fewer than that), attributes,
       excludedAttributes -> ListResponse {schemas, totalResults, itemsPerPage, startIndex,
       Resources}. Filters (RFC 7644 3.4.2.2): attrPath op value with eq ne co sw ew gt ge lt
       le pr, joined by and / or, not(...), parentheses; userName, displayName compare
       case-insensitively (caseExact false), id and externalId exactly. An unknown operator,
       attribute or a malformed filter is 400 scimType invalidFilter.
  POST /Users, /Groups -> 201 + Location; userName / displayName unique (case-insensitive):
       409 scimType uniqueness. Bodies must name the resource's core schema (400 invalidSyntax).
  GET|PUT|PATCH|DELETE /Users/{id}, /Groups/{id}. PUT replaces every writable attribute (what
       the body leaves out is cleared; id, meta and groups are read-only). PATCH takes a
       PatchOp (add / replace / remove, with or without a path; paths: attribute, sub-attribute
       "name.givenName", and "members[value eq \"id\"]" for removal); 200 with the resource.
       attributes / excludedAttributes shape every answer that holds a resource (RFC 7644 3.9).
       With the fault "patch_supported": false, ServiceProviderConfig says so and PATCH is 501.
       DELETE -> 204 and the user leaves every group.
  Errors: {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "404",
  "scimType"?: ..., "detail": ...} (status a string, RFC 7644 3.12), Content-Type
  application/scim+json on every JSON answer. Request bodies: application/scim+json or
  application/json (415 otherwise).
  Auth: Authorization: Bearer test-token; anything else 401 (SCIM error body).
  rate_limit_per_min: a token bucket; over it 429 with Retry-After (seconds).

Atlassian flavour (AtlassianScimProduct), base path /scim/directory/{directoryId} (the
directory "test-directory"; any other id is 404), as Atlassian Cloud user provisioning:
  - filters: a single `attr eq "value"` only (userName or externalId on Users, displayName or
    externalId on Groups); anything else (and, or, other operators, other attributes, sortBy)
    is 400 invalidFilter.
  - userName cannot change (PUT or PATCH with another userName: 400 mutability).
  - a group cannot be renamed (PUT or PATCH changing displayName: 400 mutability).
  - DELETE /Users/{id} removes the SCIM record and deactivates the managed account behind it;
    nothing in the API brings it back. POST /Users whose e-mail belongs to an existing managed
    account links to that account (state "accounts": [{"account_id", "email", "active",
    "scim_id"}]); a new e-mail makes a new managed account.

State: {"users": [User resource], "groups": [Group resource]} (+ "accounts" in the Atlassian
flavour). Group members are [{"value": user id, "display"?, "type"?: "User"}]; a User's
"groups" is computed (read-only) and not stored.
"""

import re
import uuid

from sim.atlassian import TokenBucket
from sim.common import Product, json_response, empty_response, BadJson

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCHOP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
SPC = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
TOKEN = "Bearer test-token"
CT = "application/scim+json"

# attributes whose values compare case-insensitively (RFC 7643: caseExact false)
CASE_INSENSITIVE = {"username", "displayname", "emails.value", "name.givenname",
                    "name.familyname", "name.formatted", "title", "nickname"}
READ_ONLY = {"id", "meta", "groups"}


class ScimError(Exception):
    def __init__(self, status, detail, scim_type=None):
        Exception.__init__(self, detail)
        self.status, self.detail, self.scim_type = status, detail, scim_type


def error_response(status, detail, scim_type=None, headers=None):
    body = {"schemas": [ERROR], "status": str(status), "detail": detail}
    if scim_type:
        body["scimType"] = scim_type
    hs = [("Content-Type", CT)] + list(headers or [])
    return json_response(status, body, hs)


def scim_response(status, obj, headers=None):
    return json_response(status, obj, [("Content-Type", CT)] + list(headers or []))


# ------------------------------------------------------------------ filters

TOKEN_RE = re.compile(r'\s*(?:(\()|(\))|("(?:[^"\\]|\\.)*")|([A-Za-z0-9_.:$\-\[\]]+))')


def tokenize(s):
    out, pos = [], 0
    s = s.strip()
    while pos < len(s):
        m = TOKEN_RE.match(s, pos)
        if not m or m.end() == pos:
            raise ScimError(400, "cannot parse the filter at %r" % s[pos:pos + 20], "invalidFilter")
        if m.group(1):
            out.append(("(", None))
        elif m.group(2):
            out.append((")", None))
        elif m.group(3):
            import json
            try:
                out.append(("str", json.loads(m.group(3))))
            except ValueError:
                raise ScimError(400, "bad string in the filter", "invalidFilter")
        else:
            out.append(("word", m.group(4)))
        pos = m.end()
    return out


OPS = {"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"}


class Parser:
    def __init__(self, toks):
        self.t, self.i = toks, 0

    def peek(self):
        return self.t[self.i] if self.i < len(self.t) else (None, None)

    def take(self):
        v = self.peek()
        self.i += 1
        return v

    def parse(self):
        e = self.expr_or()
        if self.i != len(self.t):
            raise ScimError(400, "unexpected text after the filter", "invalidFilter")
        return e

    def expr_or(self):
        left = self.expr_and()
        while self.peek() == ("word", "or") or (self.peek()[0] == "word" and
                                                 str(self.peek()[1]).lower() == "or"):
            self.take()
            left = ("or", left, self.expr_and())
        return left

    def expr_and(self):
        left = self.unary()
        while self.peek()[0] == "word" and str(self.peek()[1]).lower() == "and":
            self.take()
            left = ("and", left, self.unary())
        return left

    def unary(self):
        k, v = self.peek()
        if k == "word" and v.lower() == "not":
            self.take()
            if self.take()[0] != "(":
                raise ScimError(400, "not must be followed by (", "invalidFilter")
            e = self.expr_or()
            if self.take()[0] != ")":
                raise ScimError(400, "missing )", "invalidFilter")
            return ("not", e)
        if k == "(":
            self.take()
            e = self.expr_or()
            if self.take()[0] != ")":
                raise ScimError(400, "missing )", "invalidFilter")
            return e
        if k != "word":
            raise ScimError(400, "expected an attribute name", "invalidFilter")
        self.take()
        attr = v
        ok, op = self.take()
        if ok != "word":
            raise ScimError(400, "expected an operator after %s" % attr, "invalidFilter")
        op = op.lower()
        if op == "pr":
            return ("pr", attr, None)
        if op not in OPS:
            raise ScimError(400, "unknown operator %r" % op, "invalidFilter")
        vk, val = self.take()
        if vk == "str":
            pass
        elif vk == "word" and val in ("true", "false"):
            val = val == "true"
        elif vk == "word" and val == "null":
            val = None
        elif vk == "word" and re.match(r"^-?\d+(\.\d+)?$", val):
            val = float(val)
        else:
            raise ScimError(400, "expected a value after %s %s" % (attr, op), "invalidFilter")
        return (op, attr, val)


def parse_filter(s):
    return Parser(tokenize(s)).parse()


def attr_values(res, attr):
    """The values of attribute path `attr` ("userName", "emails.value", "name.givenName") in
    resource res, as a list (multi-valued attributes flattened)."""
    parts = attr.split(".")
    cur = [res]
    for p in parts:
        nxt = []
        for c in cur:
            if isinstance(c, dict):
                for k, v in c.items():
                    if k.lower() == p.lower():
                        if isinstance(v, list):
                            nxt.extend(v)
                        else:
                            nxt.append(v)
        cur = nxt
    # a multi-valued complex attribute compared as a whole: its "value" sub-attribute
    return [c.get("value") if isinstance(c, dict) else c for c in cur]


def compare(op, have, want, ci):
    if have is None:
        return False
    if isinstance(have, str) and isinstance(want, str) and ci:
        have, want = have.lower(), want.lower()
    try:
        if op == "eq":
            return have == want
        if op == "ne":
            return have != want
        if op == "co":
            return isinstance(have, str) and want in have
        if op == "sw":
            return isinstance(have, str) and have.startswith(want)
        if op == "ew":
            return isinstance(have, str) and have.endswith(want)
        if op == "gt":
            return have > want
        if op == "ge":
            return have >= want
        if op == "lt":
            return have < want
        if op == "le":
            return have <= want
    except TypeError:
        return False
    return False


def matches(res, e, known):
    kind = e[0]
    if kind == "and":
        return matches(res, e[1], known) and matches(res, e[2], known)
    if kind == "or":
        return matches(res, e[1], known) or matches(res, e[2], known)
    if kind == "not":
        return not matches(res, e[1], known)
    attr = e[1]
    base = attr
    for urn in (CORE_USER + ":", CORE_GROUP + ":"):
        if base.startswith(urn):
            base = base[len(urn):]
    if base.split(".")[0].lower() not in known:
        raise ScimError(400, "unknown attribute %r in the filter" % attr, "invalidFilter")
    vals = attr_values(res, base)
    if kind == "pr":
        return any(v not in (None, "", [], {}) for v in vals)
    ci = base.lower() in CASE_INSENSITIVE
    if kind == "ne":
        return not any(compare("eq", v, e[2], ci) for v in vals)
    return any(compare(kind, v, e[2], ci) for v in vals)


USER_ATTRS = {"id", "externalid", "username", "name", "displayname", "nickname", "title",
              "emails", "active", "groups", "meta", "locale", "timezone", "preferredlanguage",
              "usertype", "phonenumbers", "addresses", "profileurl"}
GROUP_ATTRS = {"id", "externalid", "displayname", "members", "meta"}


# ------------------------------------------------------------------ the product

class ScimProduct(Product):
    name = "scim"
    flavour = None
    extra_faults = {"max_count": 100, "patch_supported": True, "page_short": False}
    base_re = re.compile(r"^/scim/v2(/.*)?$")

    def __init__(self, server):
        Product.__init__(self, server)
        self.bucket = TokenBucket()
        self._counted = None
        self.users, self.groups, self.accounts = [], [], []
        self._u = self._g = self._m = None  # indexes, built when needed (see invalidate)

    def validate_fault(self, key, value):
        if key == "max_count" and (not isinstance(value, int) or isinstance(value, bool)
                                   or value < 1):
            raise ValueError("max_count: expected an integer >= 1")
        if key in ("patch_supported", "page_short") and not isinstance(value, bool):
            raise ValueError("%s: expected true or false" % key)
        return value

    # -- state --------------------------------------------------------------------------------
    def default_state(self):
        return {"users": [], "groups": []}

    def load_state(self, state):
        if not isinstance(state, dict):
            raise ValueError("state: expected an object")
        users, groups = state.get("users", []), state.get("groups", [])
        if not isinstance(users, list) or not isinstance(groups, list):
            raise ValueError("state: users and groups must be lists")
        seen = set()
        for u in users:
            if not isinstance(u, dict) or not isinstance(u.get("userName"), str) or \
                    not u.get("id"):
                raise ValueError("state: every user needs an id and a userName")
            if u["userName"].lower() in seen:
                raise ValueError("state: userName %r twice" % u["userName"])
            seen.add(u["userName"].lower())
        gseen = set()
        for g in groups:
            if not isinstance(g, dict) or not isinstance(g.get("displayName"), str) or \
                    not g.get("id"):
                raise ValueError("state: every group needs an id and a displayName")
            if g["displayName"].lower() in gseen:
                raise ValueError("state: group %r twice" % g["displayName"])
            gseen.add(g["displayName"].lower())
        accounts = state.get("accounts", [])
        if not isinstance(accounts, list):
            raise ValueError("state: accounts must be a list")
        now = self.stamp()
        self.users = []
        for u in users:
            u = dict(u)
            u.pop("groups", None)
            u.setdefault("schemas", [CORE_USER])
            u.setdefault("active", True)
            u.setdefault("meta", {"resourceType": "User", "created": now, "lastModified": now})
            self.users.append(u)
        self.groups = []
        for g in groups:
            g = dict(g)
            g.setdefault("schemas", [CORE_GROUP])
            g["members"] = [dict(m) for m in g.get("members", [])]
            g.setdefault("meta", {"resourceType": "Group", "created": now, "lastModified": now})
            self.groups.append(g)
        self.accounts = [dict(a) for a in accounts]
        self._u = self._g = self._m = None

    def dump_state(self):
        st = {"users": [self.render_user(u) for u in self.users],
              "groups": [self.render_group(g) for g in self.groups]}
        if self.flavour:
            st["accounts"] = self.accounts
        return st

    def stamp(self):
        import time
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.server.now()))

    # -- rendering ----------------------------------------------------------------------------
    def location(self, req, kind, rid):
        return "%s%s/%s/%s" % (req.base_url if req else "", req.ctx.get("base", "") if req else "",
                               kind, rid)

    # -- indexes (a 10,000-user service must not be quadratic) ---------------------------------
    def uix(self):
        if self._u is None:
            self._u = ({u["id"]: u for u in self.users},
                       {u["userName"].lower(): u for u in self.users})
        return self._u

    def gix(self):
        if self._g is None:
            self._g = ({g["id"]: g for g in self.groups},
                       {g["displayName"].lower(): g for g in self.groups})
        return self._g

    def mix(self):
        """user id -> the groups it is a direct member of."""
        if self._m is None:
            m = {}
            for g in self.groups:
                for x in g.get("members", []):
                    m.setdefault(x.get("value"), []).append(g)
            self._m = m
        return self._m

    def render_user(self, u, req=None):
        r = dict(u)
        r["groups"] = [{"value": g["id"], "display": g["displayName"], "type": "direct"}
                       for g in self.mix().get(u["id"], [])]
        meta = dict(r.get("meta") or {})
        meta["resourceType"] = "User"
        if req is not None:
            meta["location"] = self.location(req, "Users", u["id"])
        r["meta"] = meta
        return r

    def render_group(self, g, req=None):
        r = dict(g)
        r["members"] = []
        for m in g.get("members", []):
            u = self.user_by_id(m.get("value"))
            mm = {"value": m.get("value"), "type": m.get("type", "User")}
            if u is not None:
                mm["display"] = u.get("displayName") or u["userName"]
                if req is not None:
                    mm["$ref"] = self.location(req, "Users", u["id"])
            r["members"].append(mm)
        meta = dict(r.get("meta") or {})
        meta["resourceType"] = "Group"
        if req is not None:
            meta["location"] = self.location(req, "Groups", g["id"])
        r["meta"] = meta
        return r

    def project(self, res, req):
        """attributes / excludedAttributes (RFC 7644 3.4.2.5): id and schemas always stay."""
        attrs = req.arg("attributes")
        excl = req.arg("excludedAttributes")
        if attrs:
            keep = {a.strip().split(".")[0].lower() for a in attrs.split(",")}
            keep |= {"id", "schemas"}
            res = {k: v for k, v in res.items() if k.lower() in keep}
        elif excl:
            drop = {a.strip().split(".")[0].lower() for a in excl.split(",")}
            drop -= {"id", "schemas"}
            res = {k: v for k, v in res.items() if k.lower() not in drop}
        return res

    # -- lookups ------------------------------------------------------------------------------
    def user_by_id(self, rid):
        return self.uix()[0].get(rid)

    def group_by_id(self, rid):
        return self.gix()[0].get(rid)

    def user_by_name(self, name, but=None):
        u = self.uix()[1].get(name.lower())
        return u if u is not but else None

    def group_by_name(self, name, but=None):
        g = self.gix()[1].get(name.lower())
        return g if g is not but else None

    # -- pipeline -----------------------------------------------------------------------------
    def authenticate(self, req):
        return req.headers.get("authorization") == TOKEN

    def throttle(self, req):
        self._counted = None
        per_min = self.server.faults.get("rate_limit_per_min")
        if per_min is None or not self.authenticate(req):
            return None
        now = self.server.now()
        self.bucket.configure(per_min, None, now)
        ok, retry = self.bucket.take(now)
        if ok:
            return None
        return error_response(429, "Too many requests", None, [("Retry-After", str(retry))])

    def fault_response(self, req, status):
        hs = [("Retry-After", "1")] if status in (429, 503) else []
        return error_response(status, "Service unavailable (injected)", None, hs)

    def route_base(self, req):
        """The resource path under the service's base, or raises 404."""
        m = self.base_re.match(req.path)
        if not m:
            raise ScimError(404, "no SCIM service at %s" % req.path)
        req.ctx["base"] = req.path[:len(req.path) - len(m.group(1) or "")]
        return m.group(1) or "/"

    def handle(self, req):
        try:
            sub = self.route_base(req)
            if not self.authenticate(req):
                return error_response(401, "Authorization failure: a valid Bearer token is "
                                           "required")
            if req.body:
                ct = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
                if ct not in ("application/scim+json", "application/json"):
                    return error_response(415, "Content-Type must be application/scim+json "
                                               "or application/json")
            try:
                return self.dispatch_resource(req, sub)
            finally:
                self.invalidate(req)
        except ScimError as e:
            return error_response(e.status, e.detail, e.scim_type)
        except BadJson as e:
            return error_response(400, "the body is not valid JSON: %s" % e, "invalidSyntax")

    def invalidate(self, req):
        """Drops the indexes a write may have changed (a created user is added by
        create_user itself: creates are the bulk of a first sync)."""
        if req.method == "GET":
            return
        if "/Users" in req.path:
            if not req.ctx.get("indexed"):
                self._u = None
            if req.method == "DELETE":
                self._m = None
        else:
            self._g = self._m = None

    def dispatch_resource(self, req, sub):
        m = req.method
        parts = [p for p in sub.split("/") if p]
        if not parts:
            raise ScimError(404, "no resource at the base path")
        kind = parts[0]
        if kind == "ServiceProviderConfig" and len(parts) == 1 and m == "GET":
            return scim_response(200, self.service_provider_config(req))
        if kind == "ResourceTypes" and len(parts) == 1 and m == "GET":
            return scim_response(200, self.resource_types(req))
        if kind == "Schemas" and len(parts) == 1 and m == "GET":
            return scim_response(200, {"schemas": [LIST], "totalResults": 0, "itemsPerPage": 0,
                                       "startIndex": 1, "Resources": []})
        if kind not in ("Users", "Groups") or len(parts) > 2:
            raise ScimError(404, "no such resource: %s" % sub)
        users = kind == "Users"
        if len(parts) == 1:
            if m == "GET":
                return self.list_resources(req, users)
            if m == "POST":
                return self.create_user(req) if users else self.create_group(req)
            raise ScimError(405, "method %s not allowed on %s" % (m, kind))
        rid = parts[1]
        res = self.user_by_id(rid) if users else self.group_by_id(rid)
        if res is None:
            raise ScimError(404, "Resource %s not found" % rid)
        if m == "GET":
            r = self.render_user(res, req) if users else self.render_group(res, req)
            return scim_response(200, self.project(r, req))
        if m == "PUT":
            return self.put_user(req, res) if users else self.put_group(req, res)
        if m == "PATCH":
            if not self.server.faults.get("patch_supported", True):
                raise ScimError(501, "PATCH is not supported by this service provider")
            return self.patch(req, res, users)
        if m == "DELETE":
            return self.delete_user(req, res) if users else self.delete_group(req, res)
        raise ScimError(405, "method %s not allowed" % m)

    def service_provider_config(self, req):
        return {"schemas": [SPC],
                "patch": {"supported": bool(self.server.faults.get("patch_supported", True))},
                "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
                "filter": {"supported": True,
                           "maxResults": self.server.faults.get("max_count") or 100},
                "changePassword": {"supported": False},
                "sort": {"supported": False},
                "etag": {"supported": False},
                "authenticationSchemes": [{"type": "oauthbearertoken", "name": "OAuth Bearer Token",
                                           "description": "Authentication with a bearer token",
                                           "primary": True}],
                "meta": {"resourceType": "ServiceProviderConfig",
                         "location": self.location(req, "ServiceProviderConfig", "").rstrip("/")}}

    def resource_types(self, req):
        rts = [{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"], "id": "User",
                "name": "User", "endpoint": "/Users", "schema": CORE_USER,
                "meta": {"resourceType": "ResourceType"}},
               {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"], "id": "Group",
                "name": "Group", "endpoint": "/Groups", "schema": CORE_GROUP,
                "meta": {"resourceType": "ResourceType"}}]
        return {"schemas": [LIST], "totalResults": 2, "itemsPerPage": 2, "startIndex": 1,
                "Resources": rts}

    # -- listing ------------------------------------------------------------------------------
    def check_filter(self, expr, users):
        """Flavour hook: raise ScimError for filters the provider refuses."""

    def list_resources(self, req, users):
        if req.arg("sortBy") is not None:
            self.check_sort(req)
        pool = self.users if users else self.groups
        f = req.arg("filter")
        if f is not None:
            expr = parse_filter(f)
            self.check_filter(expr, users)
            key = "username" if users else "displayname"
            if expr[0] == "eq" and expr[1].lower() == key and isinstance(expr[2], str):
                x = self.user_by_name(expr[2]) if users else self.group_by_name(expr[2])
                pool = [x] if x is not None else []  # the one it can be (unique, any case)
            rendered = [self.render_user(u, req) if users else self.render_group(g, req)
                        for u in pool for g in [u]]
            known = USER_ATTRS if users else GROUP_ATTRS
            hits = [r for r in rendered if matches(r, expr, known)]
        else:
            hits = None
        try:
            start = int(req.arg("startIndex", "1"))
            count = int(req.arg("count", str(self.server.faults.get("max_count") or 100)))
        except ValueError:
            raise ScimError(400, "startIndex and count must be integers", "invalidValue")
        start = max(1, start)
        count = max(0, min(count, self.server.faults.get("max_count") or 100))
        total = len(hits) if hits is not None else len(pool)
        if self.server.faults.get("page_short") and count > 1 and start - 1 + count < total:
            count -= 1  # a page that is not the last one with fewer items than the page size
        if hits is None:
            window = pool[start - 1:start - 1 + count]
            page = [self.render_user(x, req) if users else self.render_group(x, req)
                    for x in window]
        else:
            page = hits[start - 1:start - 1 + count]
        page = [self.project(r, req) for r in page]
        return scim_response(200, {"schemas": [LIST], "totalResults": total,
                                   "itemsPerPage": len(page), "startIndex": start,
                                   "Resources": page})

    def check_sort(self, req):
        """Generic: sorting is not supported (ServiceProviderConfig says so): ignored."""

    # -- users --------------------------------------------------------------------------------
    def need_schema(self, body, core):
        if not isinstance(body, dict):
            raise ScimError(400, "the body must be a JSON object", "invalidSyntax")
        sch = body.get("schemas")
        if not isinstance(sch, list) or core not in sch:
            raise ScimError(400, "schemas must list %s" % core, "invalidSyntax")

    def clean_user(self, body):
        """The writable attributes of a user body (read-only ones dropped, as RFC 7643 says
        a service provider ignores them), checked."""
        u = {k: v for k, v in body.items() if k not in READ_ONLY}
        if not isinstance(u.get("userName"), str) or not u["userName"].strip():
            raise ScimError(400, "userName is required", "invalidValue")
        if "active" in u and not isinstance(u["active"], bool):
            raise ScimError(400, "active must be a boolean", "invalidValue")
        if "emails" in u:
            if not isinstance(u["emails"], list) or \
                    any(not isinstance(e, dict) or not isinstance(e.get("value"), str)
                        for e in u["emails"]):
                raise ScimError(400, "emails must be a list of {value}", "invalidValue")
        if "displayName" in u and not isinstance(u["displayName"], (str, type(None))):
            raise ScimError(400, "displayName must be a string", "invalidValue")
        return u

    def create_user(self, req):
        body = req.json()
        self.need_schema(body, CORE_USER)
        u = self.clean_user(body)
        if self.user_by_name(u["userName"]):
            raise ScimError(409, "userName %s is already taken" % u["userName"], "uniqueness")
        u["id"] = str(uuid.uuid4())
        u.setdefault("active", True)
        now = self.stamp()
        u["meta"] = {"resourceType": "User", "created": now, "lastModified": now}
        self.on_create_user(u)
        self.users.append(u)
        if self._u is not None:
            self._u[0][u["id"]] = u
            self._u[1][u["userName"].lower()] = u
        req.ctx["indexed"] = True
        r = self.render_user(u, req)
        return scim_response(201, r, [("Location", r["meta"]["location"])])

    def on_create_user(self, u):
        """Flavour hook."""

    def put_user(self, req, u):
        body = req.json()
        self.need_schema(body, CORE_USER)
        new = self.clean_user(body)
        if "id" in body and body["id"] != u["id"]:
            raise ScimError(400, "id is immutable", "mutability")
        self.check_user_change(u, new)
        if self.user_by_name(new["userName"], but=u):
            raise ScimError(409, "userName %s is already taken" % new["userName"], "uniqueness")
        keep = {"id": u["id"], "meta": dict(u["meta"])}
        u.clear()
        u.update(new)
        u.update(keep)
        u.setdefault("active", True)
        u["meta"]["lastModified"] = self.stamp()
        return scim_response(200, self.project(self.render_user(u, req), req))

    def check_user_change(self, old, new):
        """Flavour hook: raise for a change the provider refuses."""

    def delete_user(self, req, u):
        self.users.remove(u)
        for g in self.groups:
            g["members"] = [m for m in g.get("members", []) if m.get("value") != u["id"]]
        self.on_delete_user(u)
        return empty_response(204)

    def on_delete_user(self, u):
        """Flavour hook."""

    # -- groups -------------------------------------------------------------------------------
    def clean_members(self, members):
        if not isinstance(members, list):
            raise ScimError(400, "members must be a list", "invalidValue")
        out = []
        for m in members:
            if not isinstance(m, dict) or not isinstance(m.get("value"), str):
                raise ScimError(400, "a member needs a value (the user's id)", "invalidValue")
            if self.user_by_id(m["value"]) is None:
                raise ScimError(400, "no user with id %s" % m["value"], "invalidValue")
            out.append({"value": m["value"], "type": "User"})
        return out

    def create_group(self, req):
        body = req.json()
        self.need_schema(body, CORE_GROUP)
        name = body.get("displayName")
        if not isinstance(name, str) or not name.strip():
            raise ScimError(400, "displayName is required", "invalidValue")
        if self.group_by_name(name):
            raise ScimError(409, "group %s already exists" % name, "uniqueness")
        now = self.stamp()
        g = {"schemas": [CORE_GROUP], "id": str(uuid.uuid4()), "displayName": name,
             "members": self.clean_members(body.get("members", [])),
             "meta": {"resourceType": "Group", "created": now, "lastModified": now}}
        if isinstance(body.get("externalId"), str):
            g["externalId"] = body["externalId"]
        self.groups.append(g)
        r = self.render_group(g, req)
        return scim_response(201, r, [("Location", r["meta"]["location"])])

    def check_group_rename(self, g, name):
        """Flavour hook."""

    def put_group(self, req, g):
        body = req.json()
        self.need_schema(body, CORE_GROUP)
        name = body.get("displayName")
        if not isinstance(name, str) or not name.strip():
            raise ScimError(400, "displayName is required", "invalidValue")
        if name != g["displayName"]:
            self.check_group_rename(g, name)
            if self.group_by_name(name, but=g):
                raise ScimError(409, "group %s already exists" % name, "uniqueness")
        g["displayName"] = name
        g["members"] = self.clean_members(body.get("members", []))
        g["meta"]["lastModified"] = self.stamp()
        return scim_response(200, self.project(self.render_group(g, req), req))

    def delete_group(self, req, g):
        self.groups.remove(g)
        return empty_response(204)

    # -- PATCH --------------------------------------------------------------------------------
    def patch(self, req, res, users):
        body = req.json()
        if not isinstance(body, dict) or body.get("schemas") != [PATCHOP]:
            raise ScimError(400, "schemas must be [%s]" % PATCHOP, "invalidSyntax")
        ops = body.get("Operations")
        if not isinstance(ops, list) or not ops:
            raise ScimError(400, "Operations must be a non-empty list", "invalidSyntax")
        work = {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
                for k, v in res.items()}
        if not users:
            work["members"] = [dict(m) for m in res.get("members", [])]
        for op in ops:
            if not isinstance(op, dict):
                raise ScimError(400, "an operation must be an object", "invalidSyntax")
            kind = op.get("op")
            kind = kind.lower() if isinstance(kind, str) else kind
            if kind not in ("add", "replace", "remove"):
                raise ScimError(400, "op must be add, replace or remove", "invalidSyntax")
            path = op.get("path")
            if path is not None and not isinstance(path, str):
                raise ScimError(400, "path must be a string", "invalidPath")
            if kind == "remove" and not path:
                raise ScimError(400, "remove needs a path", "noTarget")
            if kind != "remove" and "value" not in op:
                raise ScimError(400, "%s needs a value" % kind, "invalidValue")
            if users:
                self.patch_user_op(work, kind, path, op.get("value"))
            else:
                self.patch_group_op(work, kind, path, op.get("value"))
        if users:
            new = self.clean_user(work)
            self.check_user_change(res, new)
            if self.user_by_name(new["userName"], but=res):
                raise ScimError(409, "userName %s is already taken" % new["userName"],
                                "uniqueness")
            keep = {"id": res["id"], "meta": dict(res["meta"])}
            res.clear()
            res.update(new)
            res.update(keep)
            res["meta"]["lastModified"] = self.stamp()
            return scim_response(200, self.project(self.render_user(res, req), req))
        name = work.get("displayName")
        if not isinstance(name, str) or not name.strip():
            raise ScimError(400, "displayName is required", "invalidValue")
        if name != res["displayName"]:
            self.check_group_rename(res, name)
            if self.group_by_name(name, but=res):
                raise ScimError(409, "group %s already exists" % name, "uniqueness")
        res["displayName"] = name
        res["members"] = work["members"]
        res["meta"]["lastModified"] = self.stamp()
        return scim_response(200, self.project(self.render_group(res, req), req))

    def patch_user_op(self, u, kind, path, value):
        if path is None:
            if not isinstance(value, dict):
                raise ScimError(400, "a value without a path must be an object", "invalidValue")
            for k, v in value.items():
                self.patch_user_op(u, kind, k, v)
            return
        p = path
        if p.startswith(CORE_USER + ":"):
            p = p[len(CORE_USER) + 1:]
        if "[" in p:
            raise ScimError(400, "value filters in paths are not supported here", "invalidPath")
        parts = p.split(".")
        top = parts[0]
        if top.lower() not in USER_ATTRS or top.lower() in ("id", "meta", "groups"):
            raise ScimError(400, "cannot patch %s" % path, "invalidPath" if top.lower() not in
                            USER_ATTRS else "mutability")
        key = next((k for k in u if k.lower() == top.lower()), top)
        if len(parts) == 2:
            sub = u.get(key) if isinstance(u.get(key), dict) else {}
            sub = dict(sub)
            if kind == "remove":
                sub.pop(parts[1], None)
            else:
                sub[parts[1]] = value
            u[key] = sub
            return
        if len(parts) > 2:
            raise ScimError(400, "bad path %s" % path, "invalidPath")
        if kind == "remove":
            u.pop(key, None)
        elif kind == "add" and isinstance(u.get(key), list) and isinstance(value, list):
            u[key] = u[key] + value
        else:
            u[key] = value

    MEMBER_FILTER = re.compile(r'^members\[\s*value\s+eq\s+"([^"]*)"\s*\]$', re.I)

    def patch_group_op(self, g, kind, path, value):
        if path is None:
            if not isinstance(value, dict):
                raise ScimError(400, "a value without a path must be an object", "invalidValue")
            for k, v in value.items():
                self.patch_group_op(g, kind, k, v)
            return
        m = self.MEMBER_FILTER.match(path.strip())
        if m and kind == "remove":
            g["members"] = [x for x in g["members"] if x.get("value") != m.group(1)]
            return
        p = path.strip().lower()
        if p == "members":
            if kind == "remove":
                if value is None:
                    g["members"] = []
                    return
                ids = {x.get("value") for x in (value if isinstance(value, list) else [])
                       if isinstance(x, dict)}
                if not ids:
                    raise ScimError(400, "remove members: value must list {value}",
                                    "invalidValue")
                g["members"] = [x for x in g["members"] if x.get("value") not in ids]
                return
            new = self.clean_members(value)
            if kind == "replace":
                g["members"] = new
                return
            have = {x.get("value") for x in g["members"]}
            for x in new:
                if x["value"] not in have:  # adding a member twice is no change
                    g["members"].append(x)
                    have.add(x["value"])
            return
        if p == "displayname":
            if kind == "remove":
                raise ScimError(400, "displayName is required", "mutability")
            g["displayName"] = value
            return
        if p == "externalid":
            if kind == "remove":
                g.pop("externalId", None)
            else:
                g["externalId"] = value
            return
        raise ScimError(400, "cannot patch %s" % path, "invalidPath")


class AtlassianScimProduct(ScimProduct):
    """Atlassian Cloud user provisioning: /scim/directory/{directoryId} (see the module doc)."""
    flavour = "atlassian"
    directory = "test-directory"
    base_re = re.compile(r"^/scim/directory/([^/]+)(/.*)?$")

    def route_base(self, req):
        m = self.base_re.match(req.path)
        if not m:
            raise ScimError(404, "no SCIM service at %s" % req.path)
        if m.group(1) != self.directory:
            raise ScimError(404, "directory %s not found" % m.group(1))
        sub = m.group(2) or "/"
        req.ctx["base"] = req.path[:len(req.path) - len(m.group(2) or "")]
        return sub

    def check_filter(self, expr, users):
        allowed = ("username", "externalid") if users else ("displayname", "externalid")
        if expr[0] != "eq" or expr[1].lower() not in allowed:
            raise ScimError(400, "only a single 'eq' filter on %s is supported"
                            % " or ".join(allowed), "invalidFilter")

    def check_sort(self, req):
        raise ScimError(400, "sorting is not supported", "invalidFilter")

    def check_user_change(self, old, new):
        if new["userName"] != old["userName"]:
            raise ScimError(400, "userName cannot be changed", "mutability")

    def check_group_rename(self, g, name):
        raise ScimError(400, "Renaming a synced group is not supported", "mutability")

    @staticmethod
    def primary_email(u):
        emails = u.get("emails") or []
        for e in emails:
            if e.get("primary"):
                return e.get("value")
        return emails[0].get("value") if emails else None

    def on_create_user(self, u):
        email = self.primary_email(u)
        if not email:
            raise ScimError(400, "a primary e-mail is required", "invalidValue")
        by_email = getattr(self, "_by_email", None)
        if by_email is None or by_email[0] is not self.accounts:
            by_email = (self.accounts, {a.get("email", "").lower(): a for a in self.accounts})
            self._by_email = by_email
        a = by_email[1].get(email.lower())
        if a is not None:
            a["scim_id"] = u["id"]  # linked to the existing managed account
            return
        a = {"account_id": uuid.uuid4().hex[:24], "email": email, "active": True,
             "scim_id": u["id"]}
        self.accounts.append(a)
        by_email[1][email.lower()] = a

    def on_delete_user(self, u):
        for a in self.accounts:
            if a.get("scim_id") == u["id"]:
                a["active"] = False  # only the admin UI brings it back
                a["scim_id"] = None


PRODUCT = ScimProduct
FLAVOURS = {"atlassian": AtlassianScimProduct}
