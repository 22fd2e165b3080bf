"""Confluence Data Center simulator: REST user, group and membership administration.

Behaviour follows the vendor documentation and the Confluence DC 10.0.3
OpenAPI (tests/data/specs/confluence-dc-10.0.3.openapi.json).

Context path (reference section 0: the server URL carries /confluence): the optional state key
"context" ("/confluence", or "" for the root; absent = "" so older states load unchanged) is the
path the application is deployed under. API paths are then <context>/rest/api/...,
"_links.base" is the server URL plus the context, "_links.context" the context, and every
"_links.next" / "statusPath" is relative to "_links.base" (it does not repeat the context).
A request outside the context gets the servlet container's HTML 404 page. The tests run with
"/confluence".

State (plus the licence setting):
  {"users":   [{"username", "userKey", "displayName", "email", "disabled"}],
   "groups":  ["name"],
   "members": {"<group>": ["<username>"]},
   "license": {"seats": N},      N = licensed (not disabled) users allowed; null = unlimited.
   "context": "/confluence"}     optional, see above
  "userKey" may be omitted in PUT /__fake/state (one is generated); "license" may be omitted
  (unlimited). Every user that is not disabled takes a seat, the admin account included; a
  state with more enabled users than seats is refused (400 on PUT /__fake/state).

Endpoints under /rest/api (authentication and XSRF in sim/atlassian.py):
  GET    user/list?start&limit(100)&expand=status       paged Person, disabled users included
  GET    user?username=|key=[&expand=status]           GET user/current
  GET    user/memberof?username=|key=&start&limit(200) paged Group
  POST   admin/user {userName, fullName, email, password | notifyViaEmail: true}
                     201 {"userKey"}; 400 invalid name or fields; 409 exists; 402 no seat left
  PUT    admin/user/{username} {fullName, email}       204
  PUT    admin/user/{username}/disable | /enable       204, idempotent; enable of a disabled
                                                       user with no seat left: 402
  DELETE admin/user/{username}                         202 long task; the user is removed when
                                                       the task finishes
  GET    longtask/{id}                                 LongTaskStatus
  GET    group?start&limit(200)   GET group/{name}
  POST   admin/group {"name"}                          200 Group; 400 no name; 409 exists
  DELETE admin/group/{name}                            204; 404; 400 for the last admin group
  GET    group/{name}/member?start&limit(200)          paged Person
  PUT    user/{username}/group/{group}, DELETE same    204, idempotent
  GET    server-information

Paging: {"results", "start", "limit", "size", "_links": {"base", "context", "self", "next"?}};
"next" is a path relative to "_links.base" and is absent on the last page. A limit above the
endpoint's default is capped to it.

Long-task delete: a task finishes on its third poll of GET longtask/{id} or 2 simulated seconds
after it was submitted (checked on every request), whichever comes first; until then the user
is still there and the status shows percentageComplete < 100, finished/successful false.
Fault "confluence_longtask" (read when the task is submitted) selects the other outcomes:
  "ok"     (default) as above;
  "fail"   the task finishes the same way but unsuccessfully: finished true, successful false,
           percentageComplete 100, messages[0].translation "Failed to delete user <name>: the
           user could not be removed from the user directory." and the user is kept;
  "stall"  the task never finishes: percentageComplete stops at 50, finished false.

Decisions on UNCONFIRMED items:
  * expand=status gives "status": "Active" | "Deactivated" (as atlassian-python-api documents).
  * Person carries no e-mail address (recorded DC user objects have none); e-mail is write-only
    here and visible only in the simulator state.
  * #12 group member listings include disabled users.
  * Group names are folded to lower case on creation (Confluence's embedded Crowd stores lower
    case group names); user names must already be lower case (reference section 3).
  * RestError.data.errors is a JSON array in real responses although the spec's
    ValidationResult types it as an object; the simulator follows the real servers.
  * 429 carries only Retry-After (reference 1.2: Confluence headers unknown).
  * M5: enabling a disabled user when every seat is taken answers 402 with the RestError
    body, like create (reference section 3 documents 402 "no licence seat" for create; the
    spec lists only 204/401/403/404 for enable, so the status is a decision). Enabling an
    enabled user stays 204 (no extra seat).
  * L9: 401 answers carry WWW-Authenticate: OAuth realm="<percent-encoded base URL>" as Jira
    does (both run Atlassian's OAuth plugin, which sets it); no primary source for Confluence,
    the old 'Basic realm="Confluence"' had none either. Bad credentials get the HTML 401 page
    of sim/atlassian.py by default (fault html_auth_errors false: the JSON RestError).
"""

import urllib.parse

from sim.atlassian import (ADMIN, ApiError, AtlassianProduct, check_groups_members,
                           check_state_list, fold, int_arg)
from sim.common import REASONS, Response, empty_response, json_response

API = "/rest/api"
VERSION = "10.0.3"
LONGTASK_POLLS = 3
LONGTASK_SECONDS = 2.0
FORBIDDEN_CHARS = set("\\,+<>'\"")
ADMIN_GROUP = "confluence-administrators"


def _q(s):
    return urllib.parse.quote(s, safe="")


class Confluence(AtlassianProduct):
    name = "confluence"
    prefixes = (API,)
    ratelimit_headers = False
    html_auth = True
    extra_faults = dict(AtlassianProduct.extra_faults, confluence_longtask="ok")
    routes = [
        ("GET", r"/user/list", "list_users"),
        ("GET", r"/user", "get_user"),
        ("GET", r"/user/current", "get_current"),
        ("GET", r"/user/memberof", "member_of"),
        ("POST", r"/admin/user", "create_user"),
        ("PUT", r"/admin/user/([^/]+)", "update_user"),
        ("DELETE", r"/admin/user/([^/]+)", "delete_user"),
        ("PUT", r"/admin/user/([^/]+)/disable", "disable_user"),
        ("PUT", r"/admin/user/([^/]+)/enable", "enable_user"),
        ("GET", r"/longtask/([^/]+)", "get_longtask"),
        ("GET", r"/group", "list_groups"),
        ("GET", r"/group/([^/]+)", "get_group"),
        ("POST", r"/admin/group", "create_group"),
        ("DELETE", r"/admin/group/([^/]+)", "delete_group"),
        ("GET", r"/group/([^/]+)/member", "group_members"),
        ("PUT", r"/user/([^/]+)/group/([^/]+)", "add_member"),
        ("DELETE", r"/user/([^/]+)/group/([^/]+)", "remove_member"),
        ("GET", r"/server-information", "server_information"),
    ]

    def validate_fault(self, key, value):
        if key == "confluence_longtask":
            if value not in ("ok", "fail", "stall"):
                raise ValueError('confluence_longtask must be "ok", "fail" or "stall"')
            return value
        return AtlassianProduct.validate_fault(self, key, value)

    # -- state -----------------------------------------------------------------------------
    def default_state(self):
        return {
            "users": [{"username": ADMIN, "userKey": "8a7f808a00000000000000000000a000",
                       "displayName": "Administrator", "email": "admin@example.com",
                       "disabled": False}],
            "groups": [ADMIN_GROUP, "confluence-users"],
            "members": {ADMIN_GROUP: [ADMIN], "confluence-users": [ADMIN]},
            "license": {"seats": None},
        }

    def load_state(self, state):
        users = check_state_list(state, "users", ("username", "displayName", "email"),
                                 {"username": str, "userKey": str, "displayName": str,
                                  "email": str, "disabled": bool})
        lic = state.get("license", {"seats": None})
        if not isinstance(lic, dict) or set(lic) - {"seats"}:
            raise ValueError('license must be {"seats": N or null}')
        seats = lic.get("seats")
        if seats is not None and (not isinstance(seats, int) or isinstance(seats, bool)
                                  or seats < 0):
            raise ValueError("license.seats must be an integer >= 0 or null")
        ctx = state.get("context", "")
        if not isinstance(ctx, str) or (ctx and (not ctx.startswith("/") or ctx.endswith("/")
                                                 or any(c in ctx for c in "?#% "))):
            raise ValueError('context must be "" or a path like "/confluence" (no trailing /)')
        byname, bykey, order = {}, {}, []
        seq = 0
        for u in users:
            if not u["username"]:
                raise ValueError("username must not be empty")
            if fold(u["username"]) in byname:
                raise ValueError("duplicate user %r" % u["username"])
            k = u.get("userKey")
            while not k or k in bykey:
                seq += 1
                k = "8a7f808a%024x" % seq
            if k in bykey:
                raise ValueError("duplicate userKey %r" % k)
            rec = {"username": u["username"], "userKey": k, "displayName": u["displayName"],
                   "email": u["email"], "disabled": u.get("disabled", False)}
            byname[fold(rec["username"])] = rec
            bykey[k] = rec
            order.append(rec)
        groups, members = check_groups_members(state,
                                               {n: r["username"] for n, r in byname.items()})
        active = sum(1 for r in order if not r["disabled"])
        if seats is not None and active > seats:
            raise ValueError("license.seats is %d but %d users are enabled" % (seats, active))
        self.context = ctx
        self.prefixes = (ctx + API,)
        self.users = byname
        self.bykey = bykey
        self.order = order
        self.seq = max(seq, len(order)) + 0x1000
        self.groups = {fold(g): g for g in groups}
        self.members = {fold(g): {byname[fold(n)]["userKey"] for n in ms}
                        for g, ms in members.items()}
        self.seats = seats
        self.enabled = active  # users that take a seat (used_seats), kept as they change
        self.tasks = {}
        self.task_seq = 0
        self.changed()

    def dump_state(self):
        st = {
            "users": [dict(u) for u in self.order],
            "groups": list(self.groups.values()),
            "members": {g: sorted((self.bykey[k]["username"] for k in self.members[fold(g)]),
                                  key=fold) for g in self.groups.values()},
            "license": {"seats": self.seats},
        }
        if self.context:  # shown only when set, so older states round-trip unchanged
            st["context"] = self.context
        return st

    # -- bodies ------------------------------------------------------------------------------
    def rest_error(self, status, message):
        # data.errors: an array in real responses (spec says object; see module docstring).
        return json_response(status, {
            "statusCode": status,
            "data": {"authorized": status not in (401, 403), "valid": status != 400,
                     "allowedInReadOnlyMode": True, "errors": [], "successful": False},
            "message": message, "reason": REASONS.get(status, "Error")})

    def error_response(self, err):
        return self.rest_error(err.status, err.message)

    def too_many_response(self, req, retry):
        r = self.rest_error(429, "Rate limit exceeded. Retry after %d seconds." % retry)
        return r

    def base(self, req):
        """_links.base: the server URL plus the context path."""
        return req.base_url + self.context

    def auth_headers(self, req):
        return [("WWW-Authenticate", 'OAuth realm="%s"' % _q(self.base(req)))]

    def unauthorized_response(self, req, bad_credentials):
        r = self.rest_error(401, "Authentication failed. Please check your credentials."
                            if bad_credentials else
                            "This resource requires an authenticated user.")
        r.headers.extend(self.auth_headers(req))
        return r

    def not_found_response(self, req):
        return self.rest_error(404, "null for uri: %s%s" % (req.base_url, req.raw_path))

    def handle(self, req):
        if self.context and not (req.path == self.context
                                 or req.path.startswith(self.context + "/")):
            # Outside the web application: the servlet container's own 404 page.
            body = ("<!doctype html><html lang=\"en\"><head><title>HTTP Status 404 - Not "
                    "Found</title></head><body><h1>HTTP Status 404 - Not Found</h1>"
                    "</body></html>")
            return Response(404, [("Content-Type", "text/html;charset=utf-8")],
                            body.encode("utf-8"))
        return AtlassianProduct.handle(self, req)

    def rel(self, raw_path):
        """A request path made relative to _links.base (the context stripped)."""
        return raw_path[len(self.context):] if self.context else raw_path

    def person(self, req, u, expand=(), top=False):
        p = {"type": "known", "username": u["username"], "userKey": u["userKey"],
             "profilePicture": {"path": "/images/icons/profilepics/default.svg", "width": 48,
                                "height": 48, "isDefault": True},
             "displayName": u["displayName"]}
        links = {"self": "%s%s/user?key=%s" % (self.base(req), API, _q(u["userKey"]))}
        if top:
            links = {"base": self.base(req), "context": self.context, "self": links["self"]}
        p["_links"] = links
        if "status" in expand:
            p["status"] = "Deactivated" if u["disabled"] else "Active"
            p["_expandable"] = {}
        else:
            p["_expandable"] = {"status": ""}
        return p

    def group_json(self, req, g, top=False):
        links = {"self": "%s%s/group/%s" % (self.base(req), API, _q(g))}
        if top:
            links = {"base": self.base(req), "context": self.context, "self": links["self"]}
        return {"type": "group", "name": g, "_links": links}

    def page(self, req, items, default_limit, render):
        """The paged envelope over `items` (already filtered and sorted)."""
        start = int_arg(req, "start", 0)
        limit = int_arg(req, "limit", default_limit, minimum=0, maximum=default_limit)
        if limit > 0:
            limit, end, last = self.page_window(start, limit, len(items))
        else:
            end, last = start, True
        chunk = items[start:end]
        params = [(k, v) for k, vs in req.query.items() if k not in ("start", "limit")
                  for v in vs]
        links = {"base": self.base(req), "context": self.context,
                 "self": req.base_url + req.raw_path + ("?" + req.raw_query
                                                        if req.raw_query else "")}
        rel = self.rel(req.raw_path)
        if not last:
            links["next"] = rel + "?" + urllib.parse.urlencode(
                params + [("limit", limit), ("start", end)])
        if start > 0:
            links["prev"] = rel + "?" + urllib.parse.urlencode(
                params + [("limit", limit), ("start", max(0, start - limit))])
        return json_response(200, {"results": [render(x) for x in chunk], "start": start,
                                   "limit": limit, "size": len(chunk), "_links": links})

    # -- lookups -----------------------------------------------------------------------------
    def user_by_query(self, req):
        name, key = req.arg("username"), req.arg("key")
        if name is not None:
            u = self.users.get(fold(name))
            if u is None:
                raise ApiError(404, "No user found with username : %s" % name)
            return u
        if key is not None:
            u = self.bykey.get(key)
            if u is None:
                raise ApiError(404, "No user found with key : %s" % key)
            return u
        raise ApiError(400, "Either username or key must be provided")

    def user_by_name(self, name):
        u = self.users.get(fold(name))
        if u is None:
            raise ApiError(404, "No user found with username : %s" % name)
        return u

    def group_by_name(self, name):
        g = self.groups.get(fold(name))
        if g is None:
            raise ApiError(404, "Group not found: %s" % name)
        return g

    def sorted_users(self):
        return self.memo("users", lambda: sorted(self.order, key=lambda u: fold(u["username"])))

    def used_seats(self):
        return self.enabled

    # -- users -------------------------------------------------------------------------------
    def list_users(self, req):
        expand = set((req.arg("expand") or "").split(","))
        return self.page(req, self.sorted_users(), 100, lambda u: self.person(req, u, expand))

    def get_user(self, req):
        expand = set((req.arg("expand") or "").split(","))
        return json_response(200, self.person(req, self.user_by_query(req), expand, top=True))

    def get_current(self, req):
        u = self.users.get(fold(ADMIN)) or {
            "username": ADMIN, "userKey": "8a7f808a00000000000000000000a000",
            "displayName": "Administrator", "email": "admin@example.com", "disabled": False}
        expand = set((req.arg("expand") or "").split(","))
        return json_response(200, self.person(req, u, expand, top=True))

    def member_of(self, req):
        u = self.user_by_query(req)
        gs = sorted((g for fg, g in self.groups.items() if u["userKey"] in self.members[fg]),
                    key=fold)
        return self.page(req, gs, 200, lambda g: self.group_json(req, g))

    def create_user(self, req):
        b = self.body_object(req)
        name = b.get("userName")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "userName is required")
        if name != name.lower():
            raise ApiError(400, "Username must be in lower case: %s" % name)
        if any(c.isspace() for c in name) or FORBIDDEN_CHARS & set(name):
            raise ApiError(400, "Username contains invalid characters: %s" % name)
        if name == "anonymous":
            raise ApiError(400, "Username 'anonymous' is reserved")
        full = b.get("fullName")
        if not isinstance(full, str) or not full.strip():
            raise ApiError(400, "fullName is required")
        email = b.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise ApiError(400, "A valid email is required")
        pw = b.get("password")
        notify = b.get("notifyViaEmail")
        if not (isinstance(pw, str) and pw) and notify is not True:
            raise ApiError(400, "Either a password or notifyViaEmail=true must be provided")
        if fold(name) in self.users:
            raise ApiError(409, "A user with username '%s' already exists" % name)
        if self.seats is not None and self.used_seats() >= self.seats:
            raise ApiError(402, "Cannot create user '%s': the licence user limit (%d) has "
                                "been reached" % (name, self.seats))
        self.seq += 1
        key = "8a7f808a%024x" % self.seq
        while key in self.bykey:
            self.seq += 1
            key = "8a7f808a%024x" % self.seq
        u = {"username": name, "userKey": key, "displayName": full, "email": email,
             "disabled": False}
        self.users[fold(name)] = u
        self.bykey[key] = u
        self.order.append(u)
        self.enabled += 1
        return json_response(201, {"userKey": key})

    def update_user(self, req, name):
        u = self.user_by_name(name)
        b = self.body_object(req)
        full, email = b.get("fullName"), b.get("email")
        if full is not None and (not isinstance(full, str) or not full.strip()):
            raise ApiError(400, "fullName must not be empty")
        if email is not None and (not isinstance(email, str) or "@" not in email):
            raise ApiError(400, "A valid email is required")
        if full is not None:
            u["displayName"] = full
        if email is not None:
            u["email"] = email
        return empty_response(204)

    def disable_user(self, req, name):
        u = self.user_by_name(name)
        if not u["disabled"]:
            self.enabled -= 1
        u["disabled"] = True
        return empty_response(204)

    def enable_user(self, req, name):
        u = self.user_by_name(name)
        if u["disabled"] and self.seats is not None and self.used_seats() >= self.seats:
            raise ApiError(402, "Cannot enable user '%s': the licence user limit (%d) has been "
                                "reached" % (u["username"], self.seats))
        if u["disabled"]:
            self.enabled += 1
        u["disabled"] = False
        return empty_response(204)

    def delete_user(self, req, name):
        u = self.user_by_name(name)
        if fold(u["username"]) == fold(ADMIN):
            raise ApiError(403, "You cannot delete your own account")
        self.task_seq += 1
        tid = "5f0c0000-0000-4000-8000-%012d" % self.task_seq
        self.tasks[tid] = {"id": tid, "userKey": u["userKey"], "username": u["username"],
                           "created": self.server.now(), "polls": 0, "done": False,
                           "ok": True,
                           "mode": self.server.faults.get("confluence_longtask", "ok")}
        path = "%s/longtask/%s" % (API, tid)
        base = self.base(req)
        return json_response(202, {"id": tid,
                                   "links": {"status": base + path, "result": base + path},
                                   "statusPath": path, "resultPath": path},
                             [("Location", base + path)])

    # -- long tasks --------------------------------------------------------------------------
    def _progress(self, t, now):
        by_polls = t["polls"] * 100 // LONGTASK_POLLS
        by_time = int((now - t["created"]) * 100 / LONGTASK_SECONDS)
        if t["mode"] == "stall":
            return min(50, max(by_polls, by_time))
        return min(100, max(by_polls, by_time))

    def _complete(self, t):
        t["done"] = True
        self.changed()  # may run on a GET (a long task polled or advanced by time)
        if t["mode"] == "fail":
            t["ok"] = False
            return
        u = self.bykey.get(t["userKey"])
        if u is not None:
            del self.users[fold(u["username"])]
            del self.bykey[u["userKey"]]
            self.order.remove(u)
            if not u["disabled"]:
                self.enabled -= 1
            for ms in self.members.values():
                ms.discard(u["userKey"])

    def before_request(self, req):
        if not self.tasks:
            return
        now = self.server.now()
        for t in self.tasks.values():
            if not t["done"] and self._progress(t, now) >= 100:
                self._complete(t)

    def get_longtask(self, req, tid):
        t = self.tasks.get(tid)
        if t is None:
            raise ApiError(404, "No long running task with id %s" % tid)
        now = self.server.now()
        if not t["done"]:
            t["polls"] += 1
            if self._progress(t, now) >= 100:
                self._complete(t)
        pct = 100 if t["done"] else self._progress(t, now)
        if t["done"] and not t["ok"]:
            msg = ("Failed to delete user %s: the user could not be removed from the user "
                   "directory." % t["username"])
        else:
            msg = ("User %s deleted" if t["done"] else "Deleting user %s") % t["username"]
        return json_response(200, {
            "id": tid,
            "name": {"key": "com.atlassian.confluence.user.delete.longtask",
                     "args": [], "translation": "Delete user " + t["username"]},
            "elapsedTime": int((now - t["created"]) * 1000),
            "percentageComplete": pct, "successful": t["done"] and t["ok"],
            "finished": t["done"],
            "messages": [{"key": "", "args": [], "translation": msg}],
            "_links": {"base": self.base(req), "context": self.context,
                       "self": "%s%s/longtask/%s" % (self.base(req), API, tid)}})

    # -- groups ------------------------------------------------------------------------------
    def list_groups(self, req):
        gs = self.memo("groups", lambda: sorted(self.groups.values(), key=fold))
        return self.page(req, gs, 200, lambda g: self.group_json(req, g))

    def get_group(self, req, name):
        return json_response(200, self.group_json(req, self.group_by_name(name), top=True))

    def create_group(self, req):
        b = self.body_object(req)
        name = b.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "Group name is required")
        name = name.lower()
        if fold(name) in self.groups:
            raise ApiError(409, "Group already exists: %s" % name)
        self.groups[fold(name)] = name
        self.members[fold(name)] = set()
        return json_response(200, self.group_json(req, name, top=True))

    def delete_group(self, req, name):
        g = self.group_by_name(name)
        if fold(g) == fold(ADMIN_GROUP):
            raise ApiError(400, "Cannot delete group %s: it is the last group with "
                                "administration permission" % g)
        del self.groups[fold(g)]
        del self.members[fold(g)]
        return empty_response(204)

    def group_members(self, req, name):
        g = self.group_by_name(name)
        expand = set((req.arg("expand") or "").split(","))
        us = self.memo(("group/member", fold(g)),
                       lambda: sorted((self.bykey[k] for k in self.members[fold(g)]),
                                      key=lambda u: fold(u["username"])))
        return self.page(req, us, 200, lambda u: self.person(req, u, expand))

    def add_member(self, req, name, group):
        u = self.user_by_name(name)
        g = self.group_by_name(group)
        self.members[fold(g)].add(u["userKey"])
        return empty_response(204)

    def remove_member(self, req, name, group):
        u = self.user_by_name(name)
        g = self.group_by_name(group)
        self.members[fold(g)].discard(u["userKey"])
        return empty_response(204)

    def server_information(self, req):
        return json_response(200, {"baseUrl": self.base(req), "version": VERSION,
                                   "buildNumber": 10000300, "marketplaceBuildNumber": 10000300,
                                   "buildDate": "2025-06-01T00:00:00.000Z"})


PRODUCT = Confluence
Simulator = Confluence
