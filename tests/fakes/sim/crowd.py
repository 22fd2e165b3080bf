"""Atlassian Crowd simulator: the application REST API rest/usermanagement/1.

Crowd's REST API is called by applications, not users: HTTP Basic carries the application's
name and password, and the caller's address must be on the application's allow-list. The
application sees the users and groups of the directories mapped to it, in the application's
directory order; new users and groups go to the first of those directories that allows it.

State (the DESIGN shape, with optional extensions; older states load unchanged):
  {"users":   [{"name", "first-name", "last-name", "display-name", "email", "active",
                "key"?, "directory"?, "attributes"?: {"<name>": ["<value>"]}}],
   "groups":  ["name"],
   "members": {"<group>": ["<user name>"]},
   "nested":  {"<group>": ["<child group>"]},                     optional, nested groups
   "group_info": {"<group>": {"description", "active", "directory"}}, optional
   "directories": [{"id", "name", "permissions": ["CREATE_USER", ...]}],   optional
   "application": {"name", "password", "remote_addresses": ["127.0.0.1"]}, optional
   "context": "/crowd",                                           optional, "" = root
   "allow_email_change": false}                                   optional, see PUT user
  Defaults: one directory {"id": 32769, "name": "Crowd Internal Directory"} with every
  permission; application "admin" / "admin" allowed from 127.0.0.1 (DESIGN section 6); the
  context path "/crowd" (Crowd's default web context; Jira serving the API as a "user server"
  has its own context: set it). A user's "key" is "<directory id>:<external id>" (generated
  when absent), its "directory" the first directory when absent. Names of users and groups
  compare case-insensitively and keep their spelling. Passwords are not part of the state.
  Permissions (per directory, for this application): CREATE_USER, UPDATE_USER, DELETE_USER,
  CREATE_GROUP, UPDATE_GROUP (memberships), DELETE_GROUP. A write the directory does not allow
  is a 403 APPLICATION_PERMISSION_DENIED and changes nothing.

Endpoints under <context>/rest/usermanagement/1 (and /latest):
  GET    config/cookie                            {"domain", "secure", "name"}: a cheap call
                                                  that needs a valid application
  GET    user?username=|key=[&expand=attributes]  200 user; 404 USER_NOT_FOUND
  POST   user                                     201 user + Location; 400 INVALID_USER
                                                  (exists, no name), 400 INVALID_CREDENTIAL
                                                  (no password.value), 403 no directory
                                                  allows CREATE_USER
  PUT    user?username=                           204; the body replaces the user: first-name,
                                                  last-name, display-name and email left out
                                                  are emptied (reference 5: "PUT replaces
                                                  omitted fields"; with no names at all the
                                                  last name becomes the user name, as Crowd
                                                  does, CWD-2634), "active" left out is kept;
                                                  400 name in body differs; 404; 403
                                                  APPLICATION_PERMISSION_DENIED "External
                                                  applications are not allowed to change user
                                                  emails" when the e-mail differs (Crowd 4.4
                                                  and later, unless its administrator turned
                                                  the check off: state allow_email_change
                                                  true, also for an older Crowd)
  DELETE user?username=                           204; 404
  POST   user/rename?username=  {"new-name"}      200 user; 400 INVALID_USER name taken; 404
  GET    user/group/direct?username=[&groupname=] {"groups": [...]}; unknown user: 200 and an
                                                  empty list (reference 5, CWD-4433); with
                                                  groupname: the group or 404
                                                  MEMBERSHIP_NOT_FOUND
  GET    user/group/nested?username=              groups through nesting too
  POST   user/group/direct?username= {"name": g}  201; 404 USER_NOT_FOUND, 400 GROUP_NOT_FOUND,
                                                  409 MEMBERSHIP_ALREADY_EXISTS
  DELETE user/group/direct?username=&groupname=   204; 404 MEMBERSHIP_NOT_FOUND (also for a
                                                  member only through a nested group)
  GET    group?groupname=                         200 group; 404 GROUP_NOT_FOUND
  POST   group {"name", "type": "GROUP", "description"?, "active"?}
                                                  201 group; 400 INVALID_GROUP exists, 400
                                                  ILLEGAL_ARGUMENT type not GROUP
  PUT    group?groupname=                         200 group (description, active); 400 names
  DELETE group?groupname=                         204; 404
  GET    group/user/direct?groupname=[&username=][&expand=user]   {"users": [...]}; 404
  GET    group/user/nested?groupname=[&username=][&expand=user]   members through nesting too
                                                  (with username: that user or 404)
  POST   group/user/direct?groupname= {"name": u} 201; 400 USER_NOT_FOUND, 404
                                                  GROUP_NOT_FOUND, 409 MEMBERSHIP_ALREADY_EXISTS
  DELETE group/user/direct?groupname=&username=   204; 404 MEMBERSHIP_NOT_FOUND
  GET    group/child-group/direct?groupname=, group/parent-group/direct?groupname=
  POST   group/child-group/direct?groupname= {"name": child}   201; 409 exists
  DELETE group/child-group/direct?groupname=&child-groupname=  204; 404
  GET    search?entity-type=user|group[&restriction=CQL][&expand=user|group]
                                                  {"users": [...]} or {"groups": [...]}
  Listings (search, the member and group lists) page with start-index (default 0) and
  max-results (default 1000; -1: everything) and carry no end marker (reference 1.4): a page
  holding fewer entries than max-results is the last. Entries are sorted by name
  (case-insensitively). Without expand an entry has only "name" and "link".
  CQL (restriction): `attr = value`, `attr != value`, `attr > value`, `attr < value` (names and
  dates compared as strings / epoch ms), a `*` at either end of a value for starts-with /
  ends-with / contains, values quoted or bare, `and` / `or` (and binds tighter), parentheses.
  Attributes: user name, email, firstName, lastName, displayName, active, createdDate,
  updatedDate; group name, active, description. Anything else is 400 ILLEGAL_ARGUMENT.

Representation: JSON when the request's Accept names application/json; otherwise XML, as Crowd
  answers a client that does not ask for JSON (Jersey's first media type). Request bodies must
  be JSON (Content-Type application/json): anything else is a 415 (the simulator does not parse
  XML bodies, which real Crowd also accepts).
Errors: {"reason": "<REASON>", "message": "..."} (reference 1.3).
  401 wrong or missing application credentials (a Bearer token included: Crowd's REST API has
      no token authentication): reason APPLICATION_ACCESS_DENIED, "Application failed to
      authenticate", WWW-Authenticate: Basic realm="Crowd REST Service".
  403 the caller's address (always 127.0.0.1 here) is not in remote_addresses: reason
      APPLICATION_ACCESS_DENIED, 'Client with address "127.0.0.1" is forbidden from making
      requests to the application, <name>.'
  403 a write no mapped directory allows: reason APPLICATION_PERMISSION_DENIED.
  Paths outside the context: the servlet container's HTML 404. Unknown resources under the API:
  404 with an empty body.
Decisions where the reference is unconfirmed (its item 15, reason wording) or silent: the
  reason names above; create derives missing names as Crowd's user utilities do (display name
  "first last" when blank; first / last from the display name, split at its last space, when
  both are blank); XSRF (X-Atlassian-Token: no-check) is required on writes as for the other
  Atlassian simulators (sim/atlassian.py); no rate-limit headers (only Retry-After on a 429).
"""

import base64
import binascii
import json
import re
import urllib.parse
import uuid
from xml.sax.saxutils import escape as xml_escape, quoteattr

from sim.atlassian import ADMIN, ApiError, AtlassianProduct, fold
from sim.common import Response, empty_response, json_response

API_VERSIONS = ("1", "latest")
PERMISSIONS = ("CREATE_USER", "UPDATE_USER", "DELETE_USER", "CREATE_GROUP", "UPDATE_GROUP",
               "DELETE_GROUP")
DEFAULT_DIRECTORY = {"id": 32769, "name": "Crowd Internal Directory",
                     "permissions": list(PERMISSIONS)}
CLIENT_ADDRESS = "127.0.0.1"
USER_STR_FIELDS = ("first-name", "last-name", "display-name", "email")


def crowd_error(status, reason, message):
    return ApiError(status, message, exception=reason)


def _q(s):
    return urllib.parse.quote(s, safe="")


def split_display(display):
    """(first, last) from a display name: split at its last space."""
    d = (display or "").strip()
    if " " in d:
        first, last = d.rsplit(" ", 1)
        return first.strip(), last
    return "", d


def populate_names(u):
    if not (u["first-name"].strip() or u["last-name"].strip() or u["display-name"].strip()):
        u["last-name"] = u["name"]  # Crowd's own fallback (CWD-2634)
    if not u["display-name"].strip():
        u["display-name"] = ("%s %s" % (u["first-name"], u["last-name"])).strip()
    if not u["first-name"].strip() and not u["last-name"].strip():
        u["first-name"], u["last-name"] = split_display(u["display-name"])


# ------------------------------------------------------------------------------------------
# CQL

_TOKEN = re.compile(r'\s*(?:(\()|(\))|(!=|=|>|<)|"((?:[^"\\]|\\.)*)"|([^\s()=!<>"]+))')


def _tokens(text):
    pos, out = 0, []
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise crowd_error(400, "ILLEGAL_ARGUMENT", "Invalid restriction: %s" % text)
        pos = m.end()
        if m.group(1):
            out.append(("(", None))
        elif m.group(2):
            out.append((")", None))
        elif m.group(3):
            out.append(("op", m.group(3)))
        elif m.group(4) is not None:
            out.append(("str", re.sub(r"\\(.)", r"\1", m.group(4))))
        else:
            w = m.group(5)
            out.append(("word", w))
    return out


USER_ATTRS = {"name": "name", "email": "email", "firstname": "first-name",
              "lastname": "last-name", "displayname": "display-name", "active": "active",
              "createddate": "created-date", "updateddate": "updated-date"}
GROUP_ATTRS = {"name": "name", "active": "active", "description": "description"}


def parse_cql(text, attrs):
    """A predicate over an entity dict for a CQL restriction (a subset, see the docstring)."""
    toks = _tokens(text)
    pos = [0]

    def peek():
        return toks[pos[0]] if pos[0] < len(toks) else (None, None)

    def take():
        t = peek()
        pos[0] += 1
        return t

    def bad():
        raise crowd_error(400, "ILLEGAL_ARGUMENT", "Invalid restriction: %s" % text)

    def term():
        kind, v = take()
        if kind == "(":
            e = expr()
            if take()[0] != ")":
                bad()
            return e
        if kind != "word":
            bad()
        field = attrs.get(v.lower())
        if field is None:
            raise crowd_error(400, "ILLEGAL_ARGUMENT", "Unknown property '%s' in restriction"
                              % v)
        okind, op = take()
        if okind != "op":
            bad()
        vkind, value = take()
        if vkind not in ("word", "str"):
            bad()
        return lambda e: compare(e.get(field), op, value)

    def conj():
        left = term()
        while peek()[0] == "word" and peek()[1].lower() == "and":
            take()
            right = term()
            left = (lambda a, b: lambda e: a(e) and b(e))(left, right)
        return left

    def expr():
        left = conj()
        while peek()[0] == "word" and peek()[1].lower() == "or":
            take()
            right = conj()
            left = (lambda a, b: lambda e: a(e) or b(e))(left, right)
        return left

    if not toks:
        return lambda e: True
    e = expr()
    if pos[0] != len(toks):
        bad()
    return e


def compare(have, op, value):
    if isinstance(have, bool):
        want = value.lower() == "true"
        return have == want if op == "=" else have != want if op == "!=" else False
    if isinstance(have, int):
        try:
            v = int(value)
        except ValueError:
            return False
        return {"=": have == v, "!=": have != v, ">": have > v, "<": have < v}[op]
    h = fold(have or "")
    v = fold(value)
    if op in ("=", "!="):
        if v.startswith("*") and v.endswith("*") and len(v) > 1:
            r = v[1:-1] in h
        elif v.endswith("*"):
            r = h.startswith(v[:-1])
        elif v.startswith("*"):
            r = h.endswith(v[1:])
        else:
            r = h == v
        return r if op == "=" else not r
    return h > v if op == ">" else h < v


# ------------------------------------------------------------------------------------------
# XML (for a client that does not ask for JSON)

def to_xml(name, obj):
    if isinstance(obj, dict):
        attrs = ""
        inner = []
        for k, v in obj.items():
            if k == "name" and isinstance(v, str):
                attrs += " name=%s" % quoteattr(v)
            elif isinstance(v, list):
                child = k[:-1] if k.endswith("s") else k
                inner.append("<%s>%s</%s>" % (k, "".join(to_xml(child, x) for x in v), k))
            else:
                inner.append(to_xml(k, v))
        return "<%s%s>%s</%s>" % (name, attrs, "".join(inner), name)
    if obj is None:
        return "<%s/>" % name
    if isinstance(obj, bool):
        obj = "true" if obj else "false"
    return "<%s>%s</%s>" % (name, xml_escape(str(obj)), name)


class Crowd(AtlassianProduct):
    name = "crowd"
    anonymous = frozenset()
    ratelimit_headers = False
    routes = [
        ("GET", r"/config/cookie", "get_cookie_config"),
        ("GET", r"/user", "get_user"),
        ("POST", r"/user", "create_user"),
        ("PUT", r"/user", "update_user"),
        ("DELETE", r"/user", "delete_user"),
        ("POST", r"/user/rename", "rename_user"),
        ("GET", r"/user/group/direct", "user_groups_direct"),
        ("GET", r"/user/group/nested", "user_groups_nested"),
        ("POST", r"/user/group/direct", "user_add_group"),
        ("DELETE", r"/user/group/direct", "remove_membership"),
        ("GET", r"/group", "get_group"),
        ("POST", r"/group", "create_group"),
        ("PUT", r"/group", "update_group"),
        ("DELETE", r"/group", "delete_group"),
        ("GET", r"/group/user/direct", "group_users_direct"),
        ("GET", r"/group/user/nested", "group_users_nested"),
        ("POST", r"/group/user/direct", "group_add_user"),
        ("DELETE", r"/group/user/direct", "remove_membership"),
        ("GET", r"/group/child-group/direct", "child_groups"),
        ("GET", r"/group/parent-group/direct", "parent_groups"),
        ("POST", r"/group/child-group/direct", "add_child_group"),
        ("DELETE", r"/group/child-group/direct", "remove_child_group"),
        ("GET", r"/search", "search"),
    ]

    def __init__(self, server):
        self.context = "/crowd"
        self.prefixes = ()
        AtlassianProduct.__init__(self, server)

    def default_state(self):
        return {"users": [], "groups": [], "members": {}}

    # -- state -------------------------------------------------------------------------------
    def load_state(self, state):
        ctx = state.get("context", "/crowd")
        if not isinstance(ctx, str) or (ctx and (not ctx.startswith("/") or ctx.endswith("/"))):
            raise ValueError('context must be "" or a path like "/crowd"')
        dirs = state.get("directories", [DEFAULT_DIRECTORY])
        if not isinstance(dirs, list) or not dirs:
            raise ValueError("directories must be a non-empty list")
        directories, ids = [], set()
        for i, d in enumerate(dirs):
            if not isinstance(d, dict) or not isinstance(d.get("id"), int) or d["id"] in ids:
                raise ValueError("directories[%d] needs a unique integer id" % i)
            perms = d.get("permissions", list(PERMISSIONS))
            if not isinstance(perms, list) or not all(p in PERMISSIONS for p in perms):
                raise ValueError("directories[%d].permissions: a list of %s"
                                 % (i, ", ".join(PERMISSIONS)))
            ids.add(d["id"])
            directories.append({"id": d["id"], "name": str(d.get("name", "Directory %d" % d["id"])),
                                "permissions": list(perms)})
        app = state.get("application", {})
        if not isinstance(app, dict):
            raise ValueError("application must be an object")
        application = {"name": app.get("name", ADMIN), "password": app.get("password", "admin"),
                       "remote_addresses": app.get("remote_addresses", [CLIENT_ADDRESS])}
        if not isinstance(application["remote_addresses"], list):
            raise ValueError("application.remote_addresses must be a list")

        users, order = {}, []
        raw = state.get("users", [])
        if not isinstance(raw, list):
            raise ValueError("users must be a list")
        seq = 0
        for i, u in enumerate(raw):
            if not isinstance(u, dict) or not isinstance(u.get("name"), str) or not u["name"]:
                raise ValueError("users[%d] needs a name" % i)
            if fold(u["name"]) in users:
                raise ValueError("duplicate user %r" % u["name"])
            d = u.get("directory", directories[0]["id"])
            if d not in ids:
                raise ValueError("users[%d].directory %r is not a directory" % (i, d))
            rec = {"name": u["name"], "active": u.get("active", True) is not False,
                   "directory": d}
            for f in USER_STR_FIELDS:
                v = u.get(f, "")
                if v is None:
                    v = ""
                if not isinstance(v, str):
                    raise ValueError("users[%d].%s must be a string" % (i, f))
                rec[f] = v
            seq += 1
            rec["key"] = u.get("key") or "%d:%s" % (d, uuid.UUID(int=seq))
            rec["created-date"] = u.get("created-date", 1700000000000 + seq)
            rec["updated-date"] = u.get("updated-date", rec["created-date"])
            attrs = u.get("attributes", {})
            if not isinstance(attrs, dict) or not all(
                    isinstance(v, list) and all(isinstance(x, str) for x in v)
                    for v in attrs.values()):
                raise ValueError("users[%d].attributes must be {name: [strings]}" % i)
            rec["attributes"] = {k: list(v) for k, v in attrs.items()}
            users[fold(u["name"])] = rec
            order.append(rec)

        groups = {}
        rawg = state.get("groups", [])
        if not isinstance(rawg, list):
            raise ValueError("groups must be a list of names")
        info = state.get("group_info", {})
        if not isinstance(info, dict):
            raise ValueError("group_info must be an object")
        for g in rawg:
            if not isinstance(g, str) or not g:
                raise ValueError("groups must be a list of non-empty names")
            if fold(g) in groups:
                raise ValueError("duplicate group %r" % g)
            gi = info.get(g, {})
            d = gi.get("directory", directories[0]["id"])
            if d not in ids:
                raise ValueError("group_info[%r].directory is not a directory" % g)
            groups[fold(g)] = {"name": g, "description": gi.get("description", ""),
                               "active": gi.get("active", True) is not False, "directory": d}
        members = {fg: [] for fg in groups}
        rawm = state.get("members", {})
        if not isinstance(rawm, dict):
            raise ValueError("members must be an object {group: [user names]}")
        for g, names in rawm.items():
            if fold(g) not in groups:
                raise ValueError("members names unknown group %r" % g)
            if not isinstance(names, list):
                raise ValueError("members[%r] must be a list" % g)
            for n in names:
                if not isinstance(n, str) or fold(n) not in users:
                    raise ValueError("members[%r] names unknown user %r" % (g, n))
                if fold(n) not in members[fold(g)]:
                    members[fold(g)].append(fold(n))
        nested = {fg: [] for fg in groups}
        rawn = state.get("nested", {})
        if not isinstance(rawn, dict):
            raise ValueError("nested must be an object {group: [child groups]}")
        for p, kids in rawn.items():
            if fold(p) not in groups or not isinstance(kids, list):
                raise ValueError("nested names unknown group %r" % p)
            for k in kids:
                if not isinstance(k, str) or fold(k) not in groups:
                    raise ValueError("nested[%r] names unknown group %r" % (p, k))
                if fold(k) not in nested[fold(p)]:
                    nested[fold(p)].append(fold(k))
        allow = state.get("allow_email_change", False)
        if not isinstance(allow, bool):
            raise ValueError("allow_email_change must be true or false")
        self.allow_email_change = allow
        self.context = ctx
        self.prefixes = tuple("%s/rest/usermanagement/%s" % (ctx, v) for v in API_VERSIONS)
        self.directories = directories
        self.application = application
        self.users, self.order = users, order
        self.groups, self.members, self.nested = groups, members, nested
        self.seq = seq
        for fg in groups:
            if fg in self._descendants(fg):
                raise ValueError("nested groups form a cycle through %r" % groups[fg]["name"])

    def dump_state(self):
        st = {"users": [{"name": u["name"], "first-name": u["first-name"],
                         "last-name": u["last-name"], "display-name": u["display-name"],
                         "email": u["email"], "active": u["active"], "key": u["key"],
                         "directory": u["directory"], "created-date": u["created-date"],
                         "updated-date": u["updated-date"], "attributes": u["attributes"]}
                        for u in self.order],
              "groups": [g["name"] for g in self.groups.values()],
              "members": {self.groups[fg]["name"]: [self.users[fu]["name"] for fu in ms]
                          for fg, ms in self.members.items()},
              "group_info": {g["name"]: {"description": g["description"], "active": g["active"],
                                         "directory": g["directory"]}
                             for g in self.groups.values()},
              "directories": self.directories, "application": self.application,
              "context": self.context, "allow_email_change": self.allow_email_change}
        nested = {self.groups[p]["name"]: [self.groups[k]["name"] for k in ks]
                  for p, ks in self.nested.items() if ks}
        if nested:
            st["nested"] = nested
        return st

    # -- pipeline ----------------------------------------------------------------------------
    def authenticate(self, req):
        h = req.headers.get("authorization")
        if h is None:
            return None
        scheme, _, value = h.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, pw = base64.b64decode(value.strip(), validate=True).decode("utf-8") \
                .partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        app = self.application
        return ADMIN if sep and user == app["name"] and pw == app["password"] else False

    def handle(self, req):
        if self.context and not (req.path == self.context
                                 or req.path.startswith(self.context + "/")):
            body = ("<!doctype html><html lang=\"en\"><head><title>HTTP Status 404 - Not "
                    "Found</title></head><body><h1>HTTP Status 404 - Not Found</h1>"
                    "</body></html>")
            return Response(404, [("Content-Type", "text/html;charset=utf-8")],
                            body.encode("utf-8"))
        who = self.authenticate(req)
        if who == ADMIN and CLIENT_ADDRESS not in self.application["remote_addresses"]:
            return self.error_response(crowd_error(
                403, "APPLICATION_ACCESS_DENIED",
                'Client with address "%s" is forbidden from making requests to the '
                'application, %s.' % (CLIENT_ADDRESS, self.application["name"])))
        if who == ADMIN and req.body and req.method in ("POST", "PUT"):
            ct = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
            if ct != "application/json":
                return self.error_response(crowd_error(
                    415, "UNSUPPORTED_OPERATION",
                    "Unsupported media type %r: send application/json" % ct))
        return AtlassianProduct.handle(self, req)

    def finish(self, req, resp):
        resp = AtlassianProduct.finish(self, req, resp)
        accept = (req.headers.get("accept") or "").lower()
        ct = (resp.header("content-type") or "").lower()
        if resp.body and ct.startswith("application/json") and "application/json" not in accept:
            obj = json.loads(resp.body.decode("utf-8"))
            root = req.ctx.get("xml_root", "error" if resp.status >= 400 else "entity")
            body = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>' + to_xml(root, obj)
            hs = [(k, v) for k, v in resp.headers if k.lower() != "content-type"]
            hs.append(("Content-Type", "application/xml"))
            resp = Response(resp.status, hs, body.encode("utf-8"))
        return resp

    def error_response(self, err):
        reason = err.exception or {400: "ILLEGAL_ARGUMENT", 401: "APPLICATION_ACCESS_DENIED",
                                   403: "APPLICATION_PERMISSION_DENIED",
                                   404: "OPERATION_FAILED"}.get(err.status, "OPERATION_FAILED")
        return json_response(err.status, {"reason": reason, "message": err.message})

    def unauthorized_response(self, req, bad_credentials):
        r = self.error_response(crowd_error(401, "APPLICATION_ACCESS_DENIED",
                                            "Application failed to authenticate"))
        r.headers.append(("WWW-Authenticate", 'Basic realm="Crowd REST Service"'))
        return r

    def not_found_response(self, req):
        return empty_response(404)

    # -- helpers -----------------------------------------------------------------------------
    def api(self, req):
        for p in self.prefixes:
            if req.path.startswith(p + "/"):
                return req.base_url + p
        return req.base_url + self.prefixes[0]

    def arg_required(self, req, name):
        v = req.arg(name)
        if v is None or v == "":
            raise crowd_error(400, "ILLEGAL_ARGUMENT", "The '%s' parameter is required" % name)
        return v

    def body(self, req):
        b = self.body_object(req)
        return b

    def body_object(self, req):
        try:
            return AtlassianProduct.body_object(self, req)
        except ApiError as e:
            raise crowd_error(400, "ILLEGAL_ARGUMENT", e.message)

    def user(self, name):
        u = self.users.get(fold(name))
        if u is None:
            raise crowd_error(404, "USER_NOT_FOUND", "User <%s> does not exist" % name)
        return u

    def group(self, name):
        g = self.groups.get(fold(name))
        if g is None:
            raise crowd_error(404, "GROUP_NOT_FOUND", "Group <%s> does not exist" % name)
        return g

    def directory(self, did):
        for d in self.directories:
            if d["id"] == did:
                return d
        return self.directories[0]

    def require(self, did, perm, what):
        d = self.directory(did)
        if perm not in d["permissions"]:
            raise crowd_error(403, "APPLICATION_PERMISSION_DENIED",
                              "Application '%s' is not allowed to %s in directory '%s'"
                              % (self.application["name"], what, d["name"]))

    def first_directory(self, perm, what):
        for d in self.directories:
            if perm in d["permissions"]:
                return d["id"]
        raise crowd_error(403, "APPLICATION_PERMISSION_DENIED",
                          "Application '%s' has no directories that allow %s"
                          % (self.application["name"], what))

    def user_json(self, req, u, full=True, attributes=False):
        link = {"href": "%s/user?username=%s" % (self.api(req), _q(u["name"])), "rel": "self"}
        if not full:
            return {"link": link, "name": u["name"]}
        o = {"expand": "attributes", "link": link, "name": u["name"],
             "password": {"link": {"href": "%s/user/password?username=%s"
                                   % (self.api(req), _q(u["name"])), "rel": "edit"}},
             "key": u["key"], "active": u["active"],
             "attributes": {"link": {"href": "%s/user/attribute?username=%s"
                                     % (self.api(req), _q(u["name"])), "rel": "self"}},
             "first-name": u["first-name"], "last-name": u["last-name"],
             "display-name": u["display-name"], "email": u["email"],
             "created-date": u["created-date"], "updated-date": u["updated-date"]}
        if attributes:
            o["attributes"]["attributes"] = [{"name": k, "values": v}
                                             for k, v in sorted(u["attributes"].items())]
        return o

    def group_json(self, req, g, full=True):
        link = {"href": "%s/group?groupname=%s" % (self.api(req), _q(g["name"])), "rel": "self"}
        if not full:
            return {"link": link, "name": g["name"]}
        return {"expand": "attributes", "link": link, "name": g["name"],
                "description": g["description"], "type": "GROUP", "active": g["active"],
                "attributes": {"link": {"href": "%s/group/attribute?groupname=%s"
                                        % (self.api(req), _q(g["name"])), "rel": "self"}}}

    def page(self, req, items):
        """Offset paging without an end marker (reference 1.4)."""
        raw_start, raw_max = req.arg("start-index"), req.arg("max-results")
        try:
            start = int(raw_start) if raw_start not in (None, "") else 0
            mx = int(raw_max) if raw_max not in (None, "") else 1000
        except ValueError:
            raise crowd_error(400, "ILLEGAL_ARGUMENT", "start-index and max-results must be "
                                                       "integers")
        if start < 0 or mx == 0 or mx < -1:
            raise crowd_error(400, "ILLEGAL_ARGUMENT", "Invalid start-index or max-results")
        return items[start:] if mx == -1 else items[start:start + mx]

    def _descendants(self, fg):
        out, todo = set(), list(self.nested.get(fg, []))
        while todo:
            k = todo.pop()
            if k in out:
                continue
            out.add(k)
            todo.extend(self.nested.get(k, []))
        return out

    def nested_members(self, fg):
        seen, out = set(), []
        for g in [fg] + sorted(self._descendants(fg)):
            for fu in self.members.get(g, []):
                if fu not in seen:
                    seen.add(fu)
                    out.append(fu)
        return out

    def direct_groups_of(self, fu):
        return [fg for fg, ms in self.members.items() if fu in ms]

    def nested_groups_of(self, fu):
        direct = set(self.direct_groups_of(fu))
        return [fg for fg in self.groups if fg in direct
                or any(k in direct for k in self._descendants(fg))]

    def sorted_users(self, folded):
        return sorted((self.users[f] for f in folded), key=lambda u: fold(u["name"]))

    def sorted_groups(self, folded):
        return sorted((self.groups[f] for f in folded), key=lambda g: fold(g["name"]))

    def touch(self, u):
        u["updated-date"] = int(self.server.now() * 1000)

    # -- routes ------------------------------------------------------------------------------
    def get_cookie_config(self, req):
        return json_response(200, {"domain": None, "secure": False, "name": "crowd.token_key"})

    def get_user(self, req):
        req.ctx["xml_root"] = "user"
        name, key = req.arg("username"), req.arg("key")
        if name:
            u = self.user(name)
        elif key:
            u = next((x for x in self.order if x["key"] == key), None)
            if u is None:
                raise crowd_error(404, "USER_NOT_FOUND", "User with key <%s> does not exist"
                                  % key)
        else:
            raise crowd_error(400, "ILLEGAL_ARGUMENT", "Either username or key must be given")
        expand = (req.arg("expand") or "").split(",")
        return json_response(200, self.user_json(req, u, attributes="attributes" in expand))

    def create_user(self, req):
        req.ctx["xml_root"] = "user"
        b = self.body(req)
        name = b.get("name")
        if not isinstance(name, str) or not name.strip():
            raise crowd_error(400, "INVALID_USER", "User name must not be empty")
        if fold(name) in self.users:
            raise crowd_error(400, "INVALID_USER", "User <%s> already exists" % name)
        pw = b.get("password")
        if not isinstance(pw, dict) or not isinstance(pw.get("value"), str) or not pw["value"]:
            raise crowd_error(400, "INVALID_CREDENTIAL", "A password is required to create "
                                                         "user <%s>" % name)
        for f in USER_STR_FIELDS:
            if b.get(f) is not None and not isinstance(b.get(f), str):
                raise crowd_error(400, "INVALID_USER", "%s must be a string" % f)
        email = b.get("email") or ""
        if email and "@" not in email:
            raise crowd_error(400, "INVALID_EMAIL", "Invalid email address <%s>" % email)
        d = self.first_directory("CREATE_USER", "adding of users")
        self.seq += 1
        now = int(self.server.now() * 1000)
        u = {"name": name, "active": b.get("active", True) is not False, "directory": d,
             "key": "%d:%s" % (d, uuid.uuid4()), "created-date": now, "updated-date": now,
             "attributes": {}}
        for f in USER_STR_FIELDS:
            u[f] = b.get(f) or ""
        populate_names(u)
        self.users[fold(name)] = u
        self.order.append(u)
        loc = "%s/user?username=%s" % (self.api(req), _q(name))
        return json_response(201, self.user_json(req, u), [("Location", loc)])

    def update_user(self, req):
        name = self.arg_required(req, "username")
        u = self.user(name)
        b = self.body(req)
        if not isinstance(b.get("name"), str) or fold(b["name"]) != fold(u["name"]):
            raise crowd_error(400, "ILLEGAL_ARGUMENT", "The user name in the body (%s) does "
                                                       "not match the URI (%s)"
                              % (b.get("name"), name))
        for f in USER_STR_FIELDS:
            if b.get(f) is not None and not isinstance(b.get(f), str):
                raise crowd_error(400, "INVALID_USER", "%s must be a string" % f)
        email = b.get("email") or ""
        if email and "@" not in email:
            raise crowd_error(400, "INVALID_EMAIL", "Invalid email address <%s>" % email)
        if "active" in b and not isinstance(b["active"], bool):
            raise crowd_error(400, "INVALID_USER", "active must be true or false")
        self.require(u["directory"], "UPDATE_USER", "update users")
        if (b.get("email") or "") != u["email"] and not self.allow_email_change:
            raise crowd_error(403, "APPLICATION_PERMISSION_DENIED",
                              "External applications are not allowed to change user emails")
        for f in USER_STR_FIELDS:  # the PUT replaces: what is left out is gone
            u[f] = b.get(f) or ""
        populate_names(u)
        if "active" in b:
            u["active"] = b["active"]
        self.touch(u)
        return empty_response(204)

    def delete_user(self, req):
        u = self.user(self.arg_required(req, "username"))
        self.require(u["directory"], "DELETE_USER", "remove users")
        fu = fold(u["name"])
        del self.users[fu]
        self.order.remove(u)
        for ms in self.members.values():
            if fu in ms:
                ms.remove(fu)
        return empty_response(204)

    def rename_user(self, req):
        req.ctx["xml_root"] = "user"
        u = self.user(self.arg_required(req, "username"))
        b = self.body(req)
        new = b.get("new-name")
        if not isinstance(new, str) or not new.strip():
            raise crowd_error(400, "INVALID_USER", "new-name must not be empty")
        self.require(u["directory"], "UPDATE_USER", "rename users")
        old, nf = fold(u["name"]), fold(new)
        if nf != old and nf in self.users:
            raise crowd_error(400, "INVALID_USER", "User <%s> already exists" % new)
        del self.users[old]
        u["name"] = new
        self.users[nf] = u
        for ms in self.members.values():
            for i, m in enumerate(ms):
                if m == old:
                    ms[i] = nf
        self.touch(u)
        return json_response(200, self.user_json(req, u))

    def user_groups_direct(self, req):
        req.ctx["xml_root"] = "groups"
        name = self.arg_required(req, "username")
        fu = fold(name)
        gname = req.arg("groupname")
        if gname is not None:
            g = self.groups.get(fold(gname))
            if fu not in self.users or g is None or fu not in self.members[fold(gname)]:
                raise crowd_error(404, "MEMBERSHIP_NOT_FOUND", "User <%s> is not a direct "
                                  "member of group <%s>" % (name, gname))
            return json_response(200, self.group_json(req, g))
        gs = self.sorted_groups(self.direct_groups_of(fu)) if fu in self.users else []
        full = req.arg("expand") == "group"
        return json_response(200, {"expand": "group", "groups": [
            self.group_json(req, g, full) for g in self.page(req, gs)]})

    def user_groups_nested(self, req):
        req.ctx["xml_root"] = "groups"
        name = self.arg_required(req, "username")
        fu = fold(name)
        gs = self.sorted_groups(self.nested_groups_of(fu)) if fu in self.users else []
        full = req.arg("expand") == "group"
        return json_response(200, {"expand": "group", "groups": [
            self.group_json(req, g, full) for g in self.page(req, gs)]})

    def _add(self, u, g):
        fu, fg = fold(u["name"]), fold(g["name"])
        self.require(g["directory"], "UPDATE_GROUP", "update group memberships")
        if fu in self.members[fg]:
            raise crowd_error(409, "MEMBERSHIP_ALREADY_EXISTS", "User <%s> is already a direct "
                              "member of group <%s>" % (u["name"], g["name"]))
        self.members[fg].append(fu)
        return empty_response(201)

    def _remove(self, uname, gname):
        u, g = self.user(uname), self.group(gname)
        fu, fg = fold(u["name"]), fold(g["name"])
        if fu not in self.members[fg]:
            raise crowd_error(404, "MEMBERSHIP_NOT_FOUND", "User <%s> is not a direct member "
                              "of group <%s>" % (u["name"], g["name"]))
        self.require(g["directory"], "UPDATE_GROUP", "update group memberships")
        self.members[fg].remove(fu)
        return empty_response(204)

    def _body_named(self, req, table, reason, what):
        """The user or group the body's "name" names; 400 `reason` when there is none (the
        one the query names is a 404: see user() and group())."""
        name = self.body(req).get("name")
        x = table.get(fold(name)) if isinstance(name, str) else None
        if x is None:
            raise crowd_error(400, reason, "%s <%s> does not exist" % (what, name))
        return x

    def user_add_group(self, req):
        u = self.user(self.arg_required(req, "username"))
        return self._add(u, self._body_named(req, self.groups, "GROUP_NOT_FOUND", "Group"))

    def remove_membership(self, req):
        """DELETE user/group/direct and group/user/direct: the same query, the same answers."""
        return self._remove(self.arg_required(req, "username"),
                            self.arg_required(req, "groupname"))

    def get_group(self, req):
        req.ctx["xml_root"] = "group"
        return json_response(200, self.group_json(req, self.group(
            self.arg_required(req, "groupname"))))

    def create_group(self, req):
        req.ctx["xml_root"] = "group"
        b = self.body(req)
        name = b.get("name")
        if not isinstance(name, str) or not name.strip():
            raise crowd_error(400, "INVALID_GROUP", "Group name must not be empty")
        if b.get("type") != "GROUP":
            raise crowd_error(400, "ILLEGAL_ARGUMENT", "Group type must be GROUP, got %r"
                              % (b.get("type"),))
        if fold(name) in self.groups:
            raise crowd_error(400, "INVALID_GROUP", "Group <%s> already exists" % name)
        d = self.first_directory("CREATE_GROUP", "adding of groups")
        desc = b.get("description")
        g = {"name": name, "description": desc if isinstance(desc, str) else "",
             "active": b.get("active", True) is not False, "directory": d}
        self.groups[fold(name)] = g
        self.members[fold(name)] = []
        self.nested[fold(name)] = []
        loc = "%s/group?groupname=%s" % (self.api(req), _q(name))
        return json_response(201, self.group_json(req, g), [("Location", loc)])

    def update_group(self, req):
        req.ctx["xml_root"] = "group"
        g = self.group(self.arg_required(req, "groupname"))
        b = self.body(req)
        if not isinstance(b.get("name"), str) or fold(b["name"]) != fold(g["name"]):
            raise crowd_error(400, "ILLEGAL_ARGUMENT", "The group name in the body does not "
                                                       "match the URI")
        self.require(g["directory"], "UPDATE_GROUP", "update groups")
        desc = b.get("description")
        g["description"] = desc if isinstance(desc, str) else ""
        if "active" in b:
            g["active"] = b["active"] is not False
        return json_response(200, self.group_json(req, g))

    def delete_group(self, req):
        g = self.group(self.arg_required(req, "groupname"))
        self.require(g["directory"], "DELETE_GROUP", "remove groups")
        fg = fold(g["name"])
        del self.groups[fg]
        del self.members[fg]
        self.nested.pop(fg, None)
        for ks in self.nested.values():
            if fg in ks:
                ks.remove(fg)
        return empty_response(204)

    def _members(self, req, folded):
        req.ctx["xml_root"] = "users"
        full = req.arg("expand") == "user"
        us = self.sorted_users(folded)
        return json_response(200, {"expand": "user", "users": [
            self.user_json(req, u, full) for u in self.page(req, us)]})

    def group_users_direct(self, req):
        g = self.group(self.arg_required(req, "groupname"))
        uname = req.arg("username")
        if uname is not None:
            fu = fold(uname)
            if fu not in self.members[fold(g["name"])]:
                raise crowd_error(404, "MEMBERSHIP_NOT_FOUND", "User <%s> is not a direct "
                                  "member of group <%s>" % (uname, g["name"]))
            req.ctx["xml_root"] = "user"
            return json_response(200, self.user_json(req, self.users[fu]))
        return self._members(req, self.members[fold(g["name"])])

    def group_users_nested(self, req):
        g = self.group(self.arg_required(req, "groupname"))
        folded = self.nested_members(fold(g["name"]))
        uname = req.arg("username")
        if uname is not None:
            if fold(uname) not in folded:
                raise crowd_error(404, "MEMBERSHIP_NOT_FOUND", "User <%s> is not a member of "
                                  "group <%s>" % (uname, g["name"]))
            req.ctx["xml_root"] = "user"
            return json_response(200, self.user_json(req, self.users[fold(uname)]))
        return self._members(req, folded)

    def group_add_user(self, req):
        g = self.group(self.arg_required(req, "groupname"))
        return self._add(self._body_named(req, self.users, "USER_NOT_FOUND", "User"), g)

    def child_groups(self, req):
        req.ctx["xml_root"] = "groups"
        g = self.group(self.arg_required(req, "groupname"))
        gs = self.sorted_groups(self.nested[fold(g["name"])])
        return json_response(200, {"expand": "group", "groups": [
            self.group_json(req, x, req.arg("expand") == "group") for x in self.page(req, gs)]})

    def parent_groups(self, req):
        req.ctx["xml_root"] = "groups"
        g = self.group(self.arg_required(req, "groupname"))
        fg = fold(g["name"])
        gs = self.sorted_groups([p for p, ks in self.nested.items() if fg in ks])
        return json_response(200, {"expand": "group", "groups": [
            self.group_json(req, x, req.arg("expand") == "group") for x in self.page(req, gs)]})

    def add_child_group(self, req):
        parent = self.group(self.arg_required(req, "groupname"))
        b = self.body(req)
        cname = b.get("name")
        child = self.groups.get(fold(cname)) if isinstance(cname, str) else None
        if child is None:
            raise crowd_error(400, "GROUP_NOT_FOUND", "Group <%s> does not exist" % cname)
        fp, fc = fold(parent["name"]), fold(child["name"])
        self.require(parent["directory"], "UPDATE_GROUP", "update group memberships")
        if fc in self.nested[fp]:
            raise crowd_error(409, "MEMBERSHIP_ALREADY_EXISTS", "Group <%s> is already a child "
                              "of group <%s>" % (child["name"], parent["name"]))
        if fc == fp or fp in self._descendants(fc):
            raise crowd_error(400, "INVALID_MEMBERSHIP", "Adding <%s> to <%s> would make a "
                              "cycle" % (child["name"], parent["name"]))
        self.nested[fp].append(fc)
        return empty_response(201)

    def remove_child_group(self, req):
        parent = self.group(self.arg_required(req, "groupname"))
        child = self.group(self.arg_required(req, "child-groupname"))
        fp, fc = fold(parent["name"]), fold(child["name"])
        if fc not in self.nested[fp]:
            raise crowd_error(404, "MEMBERSHIP_NOT_FOUND", "Group <%s> is not a child of <%s>"
                              % (child["name"], parent["name"]))
        self.require(parent["directory"], "UPDATE_GROUP", "update group memberships")
        self.nested[fp].remove(fc)
        return empty_response(204)

    def search(self, req):
        kind = req.arg("entity-type")
        restriction = req.arg("restriction") or ""
        if kind == "user":
            req.ctx["xml_root"] = "users"
            pred = parse_cql(restriction, USER_ATTRS)
            us = [u for u in self.sorted_users(self.users) if pred(u)]
            full = req.arg("expand") == "user"
            return json_response(200, {"expand": "user", "users": [
                self.user_json(req, u, full) for u in self.page(req, us)]})
        if kind == "group":
            req.ctx["xml_root"] = "groups"
            pred = parse_cql(restriction, GROUP_ATTRS)
            gs = [g for g in self.sorted_groups(self.groups) if pred(g)]
            full = req.arg("expand") == "group"
            return json_response(200, {"expand": "group", "groups": [
                self.group_json(req, g, full) for g in self.page(req, gs)]})
        raise crowd_error(400, "ILLEGAL_ARGUMENT", "entity-type must be user or group, got %r"
                          % kind)


PRODUCT = Crowd
