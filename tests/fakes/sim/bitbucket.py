"""Bitbucket Data Center simulator: REST admin user and group resources.

Behaviour follows the vendor documentation and the Bitbucket DC 9.5
OpenAPI (tests/data/specs/bitbucket-dc-9.5.openapi.json). The API is served under both
/rest/api/1.0 and /rest/api/latest.

State:
  {"users":   [{"name", "slug", "id", "displayName", "emailAddress"}],
   "groups":  ["name"],
   "members": {"<group>": ["<user name>"]},
   "license": {"seats": N, "groups": ["stash-users"]},     optional, see below
   "permissions": {"<user name>": "<global permission>"}}   optional, see below
  "slug" and "id" may be omitted in PUT /__fake/state; they are derived (slug: lower case,
  characters outside [a-z0-9._-] become "_") and numbered after the highest id. Bitbucket has
  no deactivation (reference 1.5): every user is "active": true.

Licence (spec: 403 "would exceed the server's license limit" on create with the default group,
add-users and add-groups): "license" is optional ({"seats": null}: unlimited, the default).
A licensed user is a user in at least one licence-granting group: license.groups, default
["stash-users"] (the default group, which real instances give LICENSED_USER; the simulator
has no global permission model, so the list stands for "groups granting LICENSED_USER" and
is a decision). Users outside those groups (e.g. the fresh user of a create with
addToDefaultGroup=false) take no seat. A state with more licensed users than seats is refused.
A write that would make more users licensed than seats is refused as a whole with 403 and
exceptionName com.atlassian.bitbucket.license.LicenseLimitExceededException (name: decision):
  create with addToDefaultGroup  "Adding the user to the default group would exceed the
                                  server's license limit."  (the user is not created)
  add-users, add-groups, add-user, add-group
                                  "The action was disallowed as it would exceed the server's
                                  licensing limit."  (no membership changes)

Global permissions granted to users directly ("permissions"; default: admin has SYS_ADMIN,
what Bitbucket's setup gives the account it creates) are only read back by
GET admin/permissions/users; a permission is one of the spec's enum (RestPermittedUser), the
highest one granted. Group grants (LICENSED_USER of stash-users) are not modelled there, and no
other endpoint checks permissions: only admin can log in.

Media types: every JSON success is application/json;charset=UTF-8, the spec's media type for
each of them; errors are application/json, as the spec gives them. The 200s of the membership
writes (add-users, add-groups, remove-group and the deprecated single forms) have no body and
so no Content-Type: the spec gives them application/json;charset=UTF-8 without a schema, but an
empty body is not JSON (a validator parsing it fails), and a JAX-RS answer without an entity
carries no media type.

Endpoints (authentication, XSRF and rate limiting in sim/atlassian.py):
  GET    admin/users?filter&start&limit(25, max 1000)        page of RestDetailedUser
  POST   admin/users?name&displayName&emailAddress&password&addToDefaultGroup(true)&notify
         QUERY PARAMETERS ONLY (a JSON body is ignored): 204; 400 missing field or no password
         without notify; 409 exists. addToDefaultGroup adds to "stash-users" when it exists.
  PUT    admin/users {name, displayName, email}               200 RestDetailedUser; 404
  POST   admin/users/rename {name, newName}                   200 RestDetailedUser; 404; 409
  DELETE admin/users?name=                                    200 the deleted user; 409 self
  GET    admin/users/more-members?context=<user>              page of the user's groups
  GET    admin/users/more-non-members?context=<user>          page of the other groups
  POST   admin/users/add-groups {"user", "groups": [...]}     200
  POST   admin/users/add-group {"context": user, "itemName": group}     (deprecated) 200
  POST   admin/users/remove-group {"context": user, "itemName": group}  200
  GET    admin/groups?filter&start&limit                      page of {name, deletable}
  POST   admin/groups?name=                                   200 group; 409 exists
  DELETE admin/groups?name=                                   200 the deleted group; 404
  GET    admin/groups/more-members?context=<group>            page of RestDetailedUser
  GET    admin/groups/more-non-members?context=<group>        page of RestDetailedUser
  POST   admin/groups/add-users {"group", "users": [...]}     200
  POST   admin/groups/add-user {"context": group, "itemName": user}     (deprecated) 200
  POST   admin/groups/remove-user {"context": group, "itemName": user}  (deprecated) 200
  GET    admin/permissions/users?filter&start&limit             page of {"user", "permission"}
         for users with a direct grant, by name; filter: name contains (any case). 401 when
         the caller has neither ADMIN nor SYS_ADMIN (spec: "not an administrator").
  GET    application-properties (anonymous too)
Bulk adds are all-or-nothing: an unknown user or group is a 404 and nothing changes. Adding an
existing member is a no-op (200).

Paging: {"size", "limit", "isLastPage", "start", "values", "nextPageStart" (absent on the last
page)}. Errors: {"errors": [{"context", "message", "exceptionName"}]}.

Decisions on UNCONFIRMED items:
  #14 admin/users/more-members returns groups ({name, deletable}); the spec's description and
      schema for it are copied from another operation and are wrong.
  #3  rate limiting sends the Jira header family (X-RateLimit-*, retry-after).
  A rename onto an existing name is a 409 (the spec lists only 400/404; Bitbucket answers
  conflicts with 409 elsewhere). Removing a non-member is a no-op (200).
"""

import re
import urllib.parse

from sim.atlassian import (ADMIN, ApiError, AtlassianProduct, bool_arg, check_groups_members,
                           check_state_list, fold, int_arg)
from sim.common import empty_response, json_response

VERSION = "9.5.0"
DEFAULT_GROUP = "stash-users"
JSON_UTF8 = "application/json;charset=UTF-8"
PERMISSIONS = ("LICENSED_USER", "PROJECT_CREATE", "ADMIN", "SYS_ADMIN")  # global, ascending
EXC = "com.atlassian.bitbucket."
LIMIT_CREATE = "Adding the user to the default group would exceed the server's license limit."
LIMIT_ADD = "The action was disallowed as it would exceed the server's licensing limit."


def slugify(name):
    return re.sub(r"[^a-z0-9._-]", "_", name.lower())


def ok(obj):
    """A JSON success in the spec's media type."""
    return json_response(200, obj, [("Content-Type", JSON_UTF8)])


class Bitbucket(AtlassianProduct):
    name = "bitbucket"
    prefixes = ("/rest/api/1.0", "/rest/api/latest")
    anonymous = frozenset({"application_properties"})
    ratelimit_headers = True
    routes = [
        ("GET", r"/admin/users", "list_users"),
        ("POST", r"/admin/users", "create_user"),
        ("PUT", r"/admin/users", "update_user"),
        ("DELETE", r"/admin/users", "delete_user"),
        ("POST", r"/admin/users/rename", "rename_user"),
        ("GET", r"/admin/users/more-members", "user_groups"),
        ("GET", r"/admin/users/more-non-members", "user_non_groups"),
        ("POST", r"/admin/users/add-groups", "add_groups"),
        ("POST", r"/admin/users/add-group", "add_group_legacy"),
        ("POST", r"/admin/users/remove-group", "remove_group"),
        ("GET", r"/admin/groups", "list_groups"),
        ("POST", r"/admin/groups", "create_group"),
        ("DELETE", r"/admin/groups", "delete_group"),
        ("GET", r"/admin/groups/more-members", "group_members"),
        ("GET", r"/admin/groups/more-non-members", "group_non_members"),
        ("POST", r"/admin/groups/add-users", "add_users"),
        ("POST", r"/admin/groups/add-user", "add_user_legacy"),
        ("POST", r"/admin/groups/remove-user", "remove_user_legacy"),
        ("GET", r"/admin/permissions/users", "user_permissions"),
        ("GET", r"/application-properties", "application_properties"),
    ]

    # -- state -----------------------------------------------------------------------------
    def default_state(self):
        return {
            "users": [{"name": ADMIN, "slug": ADMIN, "id": 1, "displayName": "Administrator",
                       "emailAddress": "admin@example.com"}],
            "groups": [DEFAULT_GROUP],
            "members": {DEFAULT_GROUP: [ADMIN]},
        }

    @staticmethod
    def _license(state):
        """(seats or None, [licence-granting group names]) from state["license"]."""
        lic = state.get("license", {})
        if not isinstance(lic, dict) or set(lic) - {"seats", "groups"}:
            raise ValueError('license must be {"seats": N or null, "groups": [names]?}')
        seats = lic.get("seats")
        if seats is not None and (not isinstance(seats, int) or isinstance(seats, bool)
                                  or seats < 0):
            raise ValueError("license.seats must be an integer >= 0 or null")
        lg = lic.get("groups", [DEFAULT_GROUP])
        if not isinstance(lg, list) or not all(isinstance(g, str) and g for g in lg):
            raise ValueError("license.groups must be a list of group names")
        return seats, lg

    def load_state(self, state):
        users = check_state_list(state, "users", ("name", "displayName", "emailAddress"),
                                 {"name": str, "slug": str, "id": int, "displayName": str,
                                  "emailAddress": str})
        byname, byid, order = {}, {}, []
        next_id = max([u["id"] for u in users if isinstance(u.get("id"), int)] + [0]) + 1
        slugs = set()
        for u in users:
            if not u["name"]:
                raise ValueError("user name must not be empty")
            if fold(u["name"]) in byname:
                raise ValueError("duplicate user %r" % u["name"])
            uid = u.get("id")
            if uid is None:
                uid = next_id
                next_id += 1
            if uid in byid:
                raise ValueError("duplicate user id %r" % uid)
            slug = u.get("slug") or slugify(u["name"])
            if slug in slugs:
                raise ValueError("duplicate user slug %r" % slug)
            slugs.add(slug)
            rec = {"name": u["name"], "slug": slug, "id": uid, "displayName": u["displayName"],
                   "emailAddress": u["emailAddress"]}
            byname[fold(rec["name"])] = rec
            byid[uid] = rec
            order.append(rec)
        groups, members = check_groups_members(state, {n: r["name"] for n, r in byname.items()})
        seats, lgroups = self._license(state)
        perms = state.get("permissions")
        if perms is not None and (not isinstance(perms, dict) or not all(
                fold(n) in byname and p in PERMISSIONS for n, p in perms.items())):
            raise ValueError('permissions must be {"<user name>": "%s"}' % '" | "'.join(PERMISSIONS))
        self.perms_given = perms is not None
        if perms is None:
            perms = {ADMIN: "SYS_ADMIN"} if fold(ADMIN) in byname else {}
        self.perms = {byname[fold(n)]["id"]: p for n, p in perms.items()}
        licensed = {fold(n) for g, ms in members.items() if fold(g) in {fold(x) for x in lgroups}
                    for n in ms}
        if seats is not None and len(licensed) > seats:
            raise ValueError("license.seats is %d but %d users are in licence-granting groups"
                             % (seats, len(licensed)))
        self.seats = seats
        self.license_groups = list(lgroups)
        self.users = byname
        self.byid = byid
        self.order = order
        self.next_id = next_id
        self.groups = {fold(g): g for g in groups}
        self.members = {fold(g): {byname[fold(n)]["id"] for n in ms}
                        for g, ms in members.items()}
        self.slugs = slugs  # every user's slug, kept as users come, go and are renamed
        self.changed()

    def dump_state(self):
        st = {
            "users": [dict(u) for u in self.order],
            "groups": list(self.groups.values()),
            "members": {g: sorted((self.byid[i]["name"] for i in self.members[fold(g)]),
                                  key=fold) for g in self.groups.values()},
        }
        if self.perms_given:
            st["permissions"] = {self.byid[i]["name"]: p for i, p in self.perms.items()
                                 if i in self.byid}
        if self.seats is not None or self.license_groups != [DEFAULT_GROUP]:
            st["license"] = {"seats": self.seats, "groups": list(self.license_groups)}
        return st

    # -- licence -----------------------------------------------------------------------------
    def grants(self, g):
        return fold(g) in {fold(x) for x in self.license_groups}

    def licensed_ids(self):
        ids = set()
        for fg, ms in self.members.items():
            if self.grants(fg):
                ids |= ms
        return ids

    def check_seats(self, adds, message):
        """adds: [(group name, user id)] about to be added. 403 when they would make more
        users licensed than seats (nothing is changed by the caller then)."""
        if self.seats is None:
            return
        lic = self.licensed_ids()
        new = {uid for g, uid in adds if self.grants(g) and uid not in lic}
        if len(lic) + len(new) > self.seats:
            raise ApiError(403, message, exception=EXC + "license.LicenseLimitExceededException")

    def finish(self, req, resp):
        """Bitbucket names the account it signed in on every authenticated answer (X-AUSERNAME,
        X-AUSERID): there is no "myself" resource, clients learn who a token is from these."""
        resp = super().finish(req, resp)
        me = self.users.get(fold(ADMIN)) if self.authenticate(req) == ADMIN else None
        if me is not None:
            resp.headers = list(resp.headers or []) + [("X-AUSERID", str(me["id"])),
                                                       ("X-AUSERNAME", me["name"])]
        return resp

    # -- bodies ------------------------------------------------------------------------------
    @staticmethod
    def errors(status, message, context=None, exception=None, headers=None):
        return json_response(status, {"errors": [{"context": context, "message": message,
                                                  "exceptionName": exception}]}, headers)

    def error_response(self, err):
        return self.errors(err.status, err.message, err.field, err.exception)

    def too_many_response(self, req, retry):
        return self.errors(429, "You have been rate limited. Retry after %d seconds." % retry,
                           exception=EXC + "throttle.ThrottledException")

    def unauthorized_response(self, req, bad_credentials):
        hs = [("WWW-Authenticate", 'Basic realm="Bitbucket"')]
        if bad_credentials:
            return self.errors(401, "Authentication failed. Please check your credentials and "
                                    "try again.", exception=EXC + "auth."
                               "IncorrectPasswordAuthenticationException", headers=hs)
        return self.errors(401, "You are not permitted to access this resource",
                           exception=EXC + "AuthorisationException", headers=hs)

    def not_found_response(self, req):
        return self.errors(404, "No resource is served at %s" % req.raw_path)

    def user_json(self, req, u):
        """RestDetailedUser; built once per user between changes (a page holds up to 1,000;
        shared: callers copy before they change it)."""
        # (its links name the address the request came to)
        return self.memo(("user_json", u["id"], req.base_url), lambda: self._user_json(req, u))

    def _user_json(self, req, u):
        return {"name": u["name"], "emailAddress": u["emailAddress"], "active": True,
                "displayName": u["displayName"], "id": u["id"], "slug": u["slug"],
                "type": "NORMAL", "directoryName": "Bitbucket Internal Directory",
                "deletable": True, "mutableDetails": True, "mutableGroups": True,
                "links": {"self": [{"href": "%s/users/%s" % (req.base_url,
                                                             urllib.parse.quote(u["slug"]))}]}}

    def application_user(self, req, u):
        """RestApplicationUser: the user without the directory details."""
        return {k: v for k, v in self.user_json(req, u).items()
                if k not in ("directoryName", "deletable", "mutableDetails", "mutableGroups")}

    @staticmethod
    def group_json(g):
        return {"name": g, "deletable": True}

    def page(self, req, items, render):
        start = int_arg(req, "start", 0)
        limit = int_arg(req, "limit", 25, minimum=0, maximum=1000) or 25
        limit, end, last = self.page_window(start, limit, len(items))
        chunk = items[start:end]
        body = {"size": len(chunk), "limit": limit, "isLastPage": last, "start": start,
                "values": [render(x) for x in chunk]}
        if self.server.faults.get("page_no_flags"):
            del body["isLastPage"]
        if not last:
            body["nextPageStart"] = end
        return ok(body)

    # -- lookups -----------------------------------------------------------------------------
    def need(self, value, field):
        if not isinstance(value, str) or not value.strip():
            raise ApiError(400, "The %s parameter is required." % field, field=field,
                           exception=EXC + "validation.ArgumentValidationException")
        return value

    def user(self, name):
        u = self.users.get(fold(name))
        if u is None:
            raise ApiError(404, "No user exists with the name '%s'." % name,
                           exception=EXC + "user.NoSuchUserException")
        return u

    def group(self, name):
        g = self.groups.get(fold(name))
        if g is None:
            raise ApiError(404, "The group '%s' does not exist." % name,
                           exception=EXC + "user.NoSuchGroupException")
        return g

    def sorted_users(self, filt):
        f = fold(filt or "")

        def make():
            us = [u for u in self.order
                  if not f or f in fold(u["name"]) or f in fold(u["displayName"])
                  or f in fold(u["emailAddress"])]
            return sorted(us, key=lambda u: fold(u["name"]))
        return self.memo(("users", f), make)

    def groups_of(self, u):
        return sorted((g for fg, g in self.groups.items() if u["id"] in self.members[fg]),
                      key=fold)

    # -- users -------------------------------------------------------------------------------
    def list_users(self, req):
        return self.page(req, self.sorted_users(req.arg("filter")),
                         lambda u: self.user_json(req, u))

    def create_user(self, req):
        # Query parameters only: Bitbucket ignores a request body here.
        name = self.need(req.arg("name"), "name")
        dn = self.need(req.arg("displayName"), "displayName")
        em = self.need(req.arg("emailAddress"), "emailAddress")
        if "@" not in em:
            raise ApiError(400, "'%s' is not a valid e-mail address." % em,
                           field="emailAddress",
                           exception=EXC + "validation.ArgumentValidationException")
        pw = req.arg("password")
        notify = bool_arg(req, "notify", False)
        if not pw and not notify:
            raise ApiError(400, "A password must be provided unless notify is set.",
                           field="password",
                           exception=EXC + "validation.ArgumentValidationException")
        if fold(name) in self.users:
            raise ApiError(409, "A user with the name '%s' already exists." % name,
                           exception=EXC + "user.DuplicateUserException")
        to_default = bool_arg(req, "addToDefaultGroup", True) and \
            fold(DEFAULT_GROUP) in self.groups
        if to_default:
            self.check_seats([(DEFAULT_GROUP, self.next_id)], LIMIT_CREATE)
        slug = slugify(name)
        taken = self.slugs
        base, n = slug, 1
        while slug in taken:
            n += 1
            slug = "%s_%d" % (base, n)
        u = {"name": name, "slug": slug, "id": self.next_id, "displayName": dn,
             "emailAddress": em}
        self.next_id += 1
        self.slugs.add(slug)
        self.users[fold(name)] = u
        self.byid[u["id"]] = u
        self.order.append(u)
        if to_default:
            self.members[fold(DEFAULT_GROUP)].add(u["id"])
        return empty_response(204)

    def update_user(self, req):
        b = self.body_object(req)
        u = self.user(self.need(b.get("name"), "name"))
        dn, em = b.get("displayName"), b.get("email")
        if dn is not None and (not isinstance(dn, str) or not dn.strip()):
            raise ApiError(400, "displayName must not be blank.", field="displayName",
                           exception=EXC + "validation.ArgumentValidationException")
        if em is not None and (not isinstance(em, str) or "@" not in em):
            raise ApiError(400, "'%s' is not a valid e-mail address." % em, field="email",
                           exception=EXC + "validation.ArgumentValidationException")
        if dn is not None:
            u["displayName"] = dn
        if em is not None:
            u["emailAddress"] = em
        return ok(self.user_json(req, u))

    def rename_user(self, req):
        b = self.body_object(req)
        u = self.user(self.need(b.get("name"), "name"))
        new = self.need(b.get("newName"), "newName")
        other = self.users.get(fold(new))
        if other is not None and other is not u:
            raise ApiError(409, "A user with the name '%s' already exists." % new,
                           exception=EXC + "user.DuplicateUserException")
        del self.users[fold(u["name"])]
        u["name"] = new
        self.users[fold(new)] = u
        taken = {x["slug"] for x in self.order if x is not u}
        slug = base = slugify(new)
        n = 1
        while slug in taken:
            n += 1
            slug = "%s_%d" % (base, n)
        self.slugs.discard(u["slug"])
        self.slugs.add(slug)
        u["slug"] = slug
        return ok(self.user_json(req, u))

    def delete_user(self, req):
        u = self.user(self.need(req.arg("name"), "name"))
        if fold(u["name"]) == fold(ADMIN):
            raise ApiError(409, "You cannot delete yourself.",
                           exception=EXC + "IllegalUserStateException")
        body = self.user_json(req, u)
        del self.users[fold(u["name"])]
        del self.byid[u["id"]]
        self.slugs.discard(u["slug"])
        self.order.remove(u)
        for ms in self.members.values():
            ms.discard(u["id"])
        return ok(body)

    def user_groups(self, req):
        u = self.user(self.need(req.arg("context"), "context"))
        f = fold(req.arg("filter") or "")
        gs = [g for g in self.groups_of(u) if f in fold(g)]
        return self.page(req, gs, self.group_json)

    def user_non_groups(self, req):
        u = self.user(self.need(req.arg("context"), "context"))
        f = fold(req.arg("filter") or "")
        mine = {fold(g) for g in self.groups_of(u)}
        gs = sorted((g for fg, g in self.groups.items() if fg not in mine and f in fg),
                    key=fold)
        return self.page(req, gs, self.group_json)

    # -- groups ------------------------------------------------------------------------------
    def list_groups(self, req):
        f = fold(req.arg("filter") or "")
        gs = sorted((g for fg, g in self.groups.items() if f in fg), key=fold)
        return self.page(req, gs, self.group_json)

    def create_group(self, req):
        name = self.need(req.arg("name"), "name")
        if fold(name) in self.groups:
            raise ApiError(409, "The group '%s' already exists." % name,
                           exception=EXC + "user.DuplicateGroupException")
        self.groups[fold(name)] = name
        self.members[fold(name)] = set()
        return ok(self.group_json(name))

    def delete_group(self, req):
        g = self.group(self.need(req.arg("name"), "name"))
        del self.groups[fold(g)]
        del self.members[fold(g)]
        return ok(self.group_json(g))

    def group_members(self, req):
        g = self.group(self.need(req.arg("context"), "context"))
        ids = self.members[fold(g)]
        f = fold(req.arg("filter") or "")

        def make():  # the group's members (not every user) matching the filter, by name
            us = [self.byid[i] for i in ids]
            if f:
                us = [u for u in us if f in fold(u["name"]) or f in fold(u["displayName"])
                      or f in fold(u["emailAddress"])]
            return sorted(us, key=lambda u: fold(u["name"]))
        us = self.memo(("more-members", fold(g), f), make)
        return self.page(req, us, lambda u: self.user_json(req, u))

    def group_non_members(self, req):
        g = self.group(self.need(req.arg("context"), "context"))
        ids = self.members[fold(g)]
        us = self.memo(("more-non-members", fold(g), fold(req.arg("filter") or "")),
                       lambda: [u for u in self.sorted_users(req.arg("filter"))
                                if u["id"] not in ids])
        return self.page(req, us, lambda u: self.user_json(req, u))

    # -- membership --------------------------------------------------------------------------
    def _names(self, b, key):
        v = b.get(key)
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            raise ApiError(400, "'%s' must be a non-empty list of names." % key, field=key,
                           exception=EXC + "validation.ArgumentValidationException")
        return v

    def add_users(self, req):
        b = self.body_object(req)
        g = self.group(self.need(b.get("group"), "group"))
        us = [self.user(n) for n in self._names(b, "users")]
        self.check_seats([(g, u["id"]) for u in us], LIMIT_ADD)
        for u in us:
            self.members[fold(g)].add(u["id"])
        return empty_response(200)

    def add_groups(self, req):
        b = self.body_object(req)
        u = self.user(self.need(b.get("user"), "user"))
        gs = [self.group(n) for n in self._names(b, "groups")]
        self.check_seats([(g, u["id"]) for g in gs], LIMIT_ADD)
        for g in gs:
            self.members[fold(g)].add(u["id"])
        return empty_response(200)

    def _context_pair(self, req):
        b = self.body_object(req)
        return self.need(b.get("context"), "context"), self.need(b.get("itemName"), "itemName")

    def add_group_legacy(self, req):
        user, group = self._context_pair(req)          # context = user, itemName = group
        u, g = self.user(user), self.group(group)
        self.check_seats([(g, u["id"])], LIMIT_ADD)
        self.members[fold(g)].add(u["id"])
        return empty_response(200)

    def remove_group(self, req):
        user, group = self._context_pair(req)          # context = user, itemName = group
        u, g = self.user(user), self.group(group)
        self.members[fold(g)].discard(u["id"])
        return empty_response(200)

    def add_user_legacy(self, req):
        group, user = self._context_pair(req)          # context = group, itemName = user
        g, u = self.group(group), self.user(user)
        self.check_seats([(g, u["id"])], LIMIT_ADD)
        self.members[fold(g)].add(u["id"])
        return empty_response(200)

    def remove_user_legacy(self, req):
        group, user = self._context_pair(req)          # context = group, itemName = user
        g, u = self.group(group), self.user(user)
        self.members[fold(g)].discard(u["id"])
        return empty_response(200)

    # -- global permissions --------------------------------------------------------------------
    def user_permissions(self, req):
        me = self.users.get(fold(ADMIN))
        if me is None or self.perms.get(me["id"]) not in ("ADMIN", "SYS_ADMIN"):
            return self.unauthorized_response(req, False)
        f = fold(req.arg("filter") or "")
        us = sorted((self.byid[i] for i in self.perms if i in self.byid
                     and f in fold(self.byid[i]["name"])), key=lambda u: fold(u["name"]))
        return self.page(req, us, lambda u: {"user": self.application_user(req, u),
                                             "permission": self.perms[u["id"]]})

    def application_properties(self, req):
        return ok({"version": VERSION, "buildNumber": "9005000",
                                   "buildDate": "1735689600000",
                                   "displayName": "Bitbucket"})


PRODUCT = Bitbucket
Simulator = Bitbucket
