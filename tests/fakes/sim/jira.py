"""Jira Data Center simulator: REST v2 user, group, project-lead and component-lead resources.

Behaviour follows the vendor documentation and the Jira DC 10.3 OpenAPI
(tests/data/specs/jira-dc-10.3.openapi.json), including where the real server is awkward.

State:
  {"users":      [{"name", "key", "displayName", "emailAddress", "active"}],
   "groups":     ["name"],
   "members":    {"<group>": ["<user name>"]},
   "projects":   [{"key", "name", "lead"}],            lead = a user name
   "components": [{"id", "project", "name", "lead"}],  lead = a user name or null
   "nested":     {"<group>": ["<child group>"]}}      optional: nested group memberships
  A user's "key" may be omitted in PUT /__fake/state; new keys are "JIRAUSER<n>" as in Jira 8+.
  Names of users and groups compare case-insensitively and keep the spelling they were given.
  Projects get ids 10000, 10001, ... in list order.
  "case_sensitive_names" (optional, false when absent): user lookups by name (?username=, a
  member's "name") match the exact spelling only, as a server whose user directory compares
  names case-sensitively (an LDAP or database directory so configured) does; listings and the
  uniqueness of names stay case-insensitive.
  "nested" (optional, {} when absent, so older states load unchanged) makes each child group a
  member of the parent group, as Jira's embedded Crowd does with nested groups enabled. Both
  must be known groups; a cycle (or a group nesting itself) is a 400 on PUT /__fake/state
  (a decision: the admin UI refuses to create one). Deleting a group drops its nesting.

Endpoints under /rest/api/2 (authentication, XSRF and rate limiting in sim/atlassian.py):
  GET    user?username=|key=[&expand=groups,applicationRoles]
  GET    user/list?maxResults(2000)&cursor        stream page, inactive users included
  GET    user/search?username&startAt&maxResults(50, max 1000)&includeActive(true)
                    &includeInactive(false)
  POST   user                       201; 400 existing name (errors.username)
  PUT    user?username=|key=        200; name renames, active (de)activates; 404 unknown
  DELETE user?username=|key=        204; 400 while the user leads a project or component
  GET    groups/picker?query&maxResults(20)&exclude
  POST   group {"name"}             201; 400 existing or empty
  DELETE group?groupname=           200; 404 unknown
  GET    group/member?groupname&startAt&maxResults(50, max 50)&includeInactiveUsers(false)
                                    members of the group AND of every group nested in it
                                    (transitive closure; reference 2.2), each user once
  POST   group/user?groupname= {"name"}            201; 400 already a member (directly or
                                                   through a nested group)
  DELETE group/user?groupname=&username=           200 for a direct member; 404 otherwise
  GET    project[?expand=lead]      GET/PUT project/{idOrKey}   GET project/{idOrKey}/components
  GET/PUT component/{id}            GET serverInfo (anonymous too)   GET myself

Decisions where the vendor documentation leaves behaviour unconfirmed:
  #4  expand=groups on GET user returns {"size", "items": [{"name", "self"}]}.
  #8  DELETE user is refused (400, errorMessages) while the user is a project lead or a
      component lead, and for the calling user itself.
  #9  groups/picker maxResults defaults to 20 (jira.ajax.autocomplete.limit); the header says
      "Showing X of Y matching groups".
  #10 GET project lists leads only with expand=lead.
  Deactivating (active=false) a project lead is refused with 400 as the Jira admin UI does.
  Nested groups (reference 2.2, section 7.6): group/member and GET user?expand=groups show
      the effective (transitive) memberships; a user list's groups.size counts them too.
      Only a direct membership can be removed: DELETE group/user for a user who is in the
      group only through a nested group is a 404 with errorMessages "Cannot remove user 'u'
      from group 'g': the user is not a direct member of the group; the membership comes
      from the nested group(s) c1, c2." (the spec's 404 covers "user not found" in the group;
      the text is a decision). A user who is no member at all gets 404 "... the user is not a
      member of the group." (L3: the spec lists 400 only for an empty group name, so the old
      400 is gone).
  user/list: the spec lists no error for a bad cursor and the reference says an invalid cursor
      never gives 404: an undecodable cursor answers 200 with an empty last page (values [],
      isLast true). maxResults below 1 on user/list and group/member uses the endpoint's
      default (the spec lists no 400 for it; a decision).
  Bad credentials: an HTML 401 page by default (sim/atlassian.py, fault html_auth_errors).
  GET mypermissions[?permissions=A,B]: the caller's global permissions (PermissionsJsonBean,
      each with havePermission): ADMINISTER held through jira-administrators or
      jira-system-administrators, SYSTEM_ADMIN through jira-system-administrators,
      USER_PICKER also through jira-software-users (memberships effective, nested included).
      Unknown keys in `permissions` are a 400. The spec lists no `permissions` parameter:
      without it every global permission is returned.
  Fault "jira_ignore_expand" (default false): a server that does not implement expand (the
      spec lists no expand on GET user): GET user, myself and the user lists carry no "groups"
      and no "applicationRoles" at all.
  Fault "jira_reworded" (default false): POST group/user for a member answers its 400 in other
      words ("User 'u' belongs to group 'g'; nothing to add."): the spec's 400 covers "the user
      already belongs to the group" without fixing a text.
  Fault "jira_picker_cap" (default null): groups/picker returns at most N groups whatever
      maxResults asks (total still counts every match), as a server with a lower limit does.
  Fault "jira_captcha" (default false): Basic authentication is refused as after too many
      failed logins: 403 with an HTML page and "X-Authentication-Denied-Reason:
      CAPTCHA_CHALLENGE; login-url=<base>/login.jsp" (Seraph's header), even with the right
      password, until the fault is cleared (an admin resets it / a browser login solves the
      CAPTCHA). Bearer tokens are not affected.
"""

import base64
import bisect
import re
import urllib.parse
from json.encoder import encode_basestring as _js  # what json.dumps(ensure_ascii=False) uses

from sim.atlassian import (ADMIN, ApiError, AtlassianProduct, bool_arg, check_groups_members,
                           check_state_list, fold, int_arg)
from sim.common import Response, _dumps, empty_response, json_response

API = "/rest/api/2"
VERSION = "10.3.24"


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*\Z")  # what quote() never escapes


def _q(s):
    if _UNRESERVED.match(s):
        return s  # quote() would return it unchanged
    return urllib.parse.quote(s, safe="")


class Jira(AtlassianProduct):
    name = "jira"
    prefixes = (API,)
    anonymous = frozenset({"get_server_info"})
    ratelimit_headers = True
    html_auth = True
    extra_faults = dict(AtlassianProduct.extra_faults, jira_captcha=False,
                        jira_ignore_expand=False, jira_reworded=False, jira_picker_cap=None)
    routes = [
        ("GET", r"/user", "get_user"),
        ("POST", r"/user", "create_user"),
        ("PUT", r"/user", "update_user"),
        ("DELETE", r"/user", "delete_user"),
        ("GET", r"/user/list", "list_users"),
        ("GET", r"/user/search", "search_users"),
        ("GET", r"/groups/picker", "groups_picker"),
        ("POST", r"/group", "create_group"),
        ("DELETE", r"/group", "delete_group"),
        ("GET", r"/group/member", "group_members"),
        ("POST", r"/group/user", "add_member"),
        ("DELETE", r"/group/user", "remove_member"),
        ("GET", r"/project", "list_projects"),
        ("GET", r"/project/([^/]+)", "get_project"),
        ("PUT", r"/project/([^/]+)", "update_project"),
        ("GET", r"/project/([^/]+)/components", "project_components"),
        ("GET", r"/component/([^/]+)", "get_component"),
        ("PUT", r"/component/([^/]+)", "update_component"),
        ("GET", r"/serverInfo", "get_server_info"),
        ("GET", r"/myself", "get_myself"),
        ("GET", r"/mypermissions", "my_permissions"),
    ]

    def validate_fault(self, key, value):
        if key in ("jira_captcha", "jira_ignore_expand", "jira_reworded"):
            if not isinstance(value, bool):
                raise ValueError("%s must be true or false" % key)
            return value
        if key == "jira_picker_cap":
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
                raise ValueError("jira_picker_cap must be an integer >= 1 or null")
            return value
        return AtlassianProduct.validate_fault(self, key, value)

    def handle(self, req):
        h = (req.headers.get("authorization") or "").strip().lower()
        if self.server.faults.get("jira_captcha") and h.startswith("basic "):
            body = ("<!DOCTYPE html>\n<html lang=\"en\"><head><title>Forbidden (403)</title>"
                    "</head><body id=\"jira\"><h1>Forbidden (403)</h1><p>CAPTCHA required: "
                    "log in through the browser.</p></body></html>\n")
            return Response(403, [("X-Authentication-Denied-Reason",
                                   "CAPTCHA_CHALLENGE; login-url=%s/login.jsp" % req.base_url),
                                  ("Content-Type", "text/html;charset=UTF-8")],
                            body.encode("utf-8"))
        return AtlassianProduct.handle(self, req)

    # -- state -----------------------------------------------------------------------------
    def default_state(self):
        return {
            "users": [{"name": ADMIN, "key": ADMIN, "displayName": "Administrator",
                       "emailAddress": "admin@example.com", "active": True}],
            "groups": ["jira-administrators", "jira-software-users"],
            "members": {"jira-administrators": [ADMIN], "jira-software-users": [ADMIN]},
            "projects": [],
            "components": [],
        }

    def load_state(self, state):
        users = check_state_list(state, "users", ("name", "displayName", "emailAddress"),
                                 {"name": str, "key": str, "displayName": str,
                                  "emailAddress": str, "active": bool})
        byname, bykey = {}, {}
        seq = 10000
        for u in users:
            k = u.get("key")
            if k and k.startswith("JIRAUSER") and k[8:].isdigit():
                seq = max(seq, int(k[8:]) + 1)
        new_users = []
        for u in users:
            if not u["name"]:
                raise ValueError("user name must not be empty")
            if fold(u["name"]) in byname:
                raise ValueError("duplicate user %r" % u["name"])
            k = u.get("key")
            if not k:
                k = "JIRAUSER%d" % seq
                seq += 1
            if k in bykey:
                raise ValueError("duplicate user key %r" % k)
            rec = {"name": u["name"], "key": k, "displayName": u["displayName"],
                   "emailAddress": u["emailAddress"], "active": u.get("active", True)}
            byname[fold(rec["name"])] = rec
            bykey[k] = rec
            new_users.append(rec)
        groups, members = check_groups_members(state, {n: r["name"] for n, r in byname.items()})
        projects = check_state_list(state, "projects", ("key", "name", "lead"),
                                    {"key": str, "name": str, "lead": str})
        new_projects = []
        seen = set()
        for i, p in enumerate(projects):
            if fold(p["key"]) in seen:
                raise ValueError("duplicate project %r" % p["key"])
            seen.add(fold(p["key"]))
            if fold(p["lead"]) not in byname:
                raise ValueError("project %s lead %r is not a user" % (p["key"], p["lead"]))
            new_projects.append({"key": p["key"], "name": p["name"], "id": str(10000 + i),
                                 "lead": byname[fold(p["lead"])]["key"]})
        comps = check_state_list(state, "components", ("id", "project", "name"),
                                 {"id": (str, int), "project": str, "name": str,
                                  "lead": (str, type(None))})
        new_comps = []
        cseen = set()
        pkeys = {fold(p["key"]): p for p in new_projects}
        for c in comps:
            cid = str(c["id"])
            if cid in cseen:
                raise ValueError("duplicate component id %r" % cid)
            cseen.add(cid)
            if fold(c["project"]) not in pkeys:
                raise ValueError("component %s names unknown project %r" % (cid, c["project"]))
            lead = c.get("lead")
            if lead and fold(lead) not in byname:
                raise ValueError("component %s lead %r is not a user" % (cid, lead))
            new_comps.append({"id": cid, "project": pkeys[fold(c["project"])]["key"],
                              "name": c["name"],
                              "lead": byname[fold(lead)]["key"] if lead else None})
        nested = state.get("nested", {})
        if not isinstance(nested, dict):
            raise ValueError("nested must be an object {group: [child groups]}")
        gfold = {fold(g): g for g in groups}
        children = {}
        for parent, kids in nested.items():
            if fold(parent) not in gfold:
                raise ValueError("nested names unknown group %r" % parent)
            if not isinstance(kids, list) or not all(isinstance(k, str) for k in kids):
                raise ValueError("nested[%r] must be a list of group names" % parent)
            for k in kids:
                if fold(k) not in gfold:
                    raise ValueError("nested[%r] names unknown group %r" % (parent, k))
                children.setdefault(fold(parent), set()).add(fold(k))
        for start in children:  # refuse cycles: nothing may reach itself
            seen, todo = set(), list(children[start])
            while todo:
                g = todo.pop()
                if g == start:
                    raise ValueError("nested groups form a cycle through %r" % gfold[start])
                if g not in seen:
                    seen.add(g)
                    todo.extend(children.get(g, ()))
        case_sensitive = state.get("case_sensitive_names", False)
        if not isinstance(case_sensitive, bool):
            raise ValueError("case_sensitive_names must be true or false")
        # commit
        self.case_sensitive = case_sensitive
        self.children = children         # fold(parent) -> {fold(child)}
        self.users = byname              # fold(name) -> record
        self.bykey = bykey               # key -> record
        self.order = new_users           # insertion order, for dump_state
        self.seq = seq
        self.groups = {fold(g): g for g in groups}
        self.members = {fold(g): {byname[fold(n)]["key"] for n in ms}
                        for g, ms in members.items()}
        self.projects = new_projects
        self.components = new_comps
        self._sorted = None
        self.changed()

    def dump_state(self):
        users = [dict(u) for u in self.order]
        st = {
            "users": users,
            "groups": list(self.groups.values()),
            "members": {g: sorted((self.bykey[k]["name"] for k in self.members[fold(g)]),
                                  key=fold)
                        for g in self.groups.values()},
            "projects": [{"key": p["key"], "name": p["name"],
                          "lead": self.bykey[p["lead"]]["name"]} for p in self.projects],
            "components": [{"id": c["id"], "project": c["project"], "name": c["name"],
                            "lead": self.bykey[c["lead"]]["name"] if c["lead"] else None}
                           for c in self.components],
        }
        nested = {self.groups[p]: sorted((self.groups[k] for k in ks), key=fold)
                  for p, ks in self.children.items() if ks}
        if nested:  # shown only when set, so older states round-trip unchanged
            st["nested"] = nested
        if self.case_sensitive:
            st["case_sensitive_names"] = True
        return st

    def user_named(self, name):
        """The user record for a name in a request, or None (case_sensitive_names: exact)."""
        u = self.users.get(fold(name))
        if u is not None and self.case_sensitive and u["name"] != name:
            return None
        return u

    def sorted_users(self):
        """Users ordered by folded name (cached until a create, rename or delete)."""
        if self._sorted is None:
            self._sorted = sorted(self.order, key=lambda u: fold(u["name"]))
            self._sorted_keys = [fold(u["name"]) for u in self._sorted]
        return self._sorted

    # -- bodies ------------------------------------------------------------------------------
    def error_response(self, err):
        if err.field:
            body = {"errorMessages": [], "errors": {err.field: err.message}}
        else:
            body = {"errorMessages": [err.message], "errors": {}}
        return json_response(err.status, body)

    def auth_headers(self, req):
        return [("WWW-Authenticate", 'OAuth realm="%s"' % _q(req.base_url))]

    def unauthorized_response(self, req, bad_credentials):
        hs = self.auth_headers(req)
        if bad_credentials:
            hs.append(("X-Seraph-LoginReason", "AUTHENTICATED_FAILED"))
        return json_response(401, {"errorMessages": [
            "You are not authenticated. Authentication required to perform this operation."],
            "errors": {}}, hs)

    def not_found_response(self, req):
        # Jersey's answer for a path no resource serves.
        return json_response(404, {"message": "null for uri: %s%s" % (req.base_url,
                                                                       req.raw_path),
                                   "status-code": 404})

    def too_many_response(self, req, retry):
        return json_response(429, {"errorMessages": [
            "Rate limit exceeded. Retry after %d seconds." % retry], "errors": {}})

    def avatars(self, req, u):
        base = req.base_url + "/secure/useravatar?ownerId=" + _q(u["key"])
        return {"48x48": base, "24x24": base + "&size=small",
                "16x16": base + "&size=xsmall", "32x32": base + "&size=medium"}

    def user_self(self, req, u):
        return "%s%s/user?username=%s" % (req.base_url, API, _q(u["name"]))

    def group_self(self, req, g):
        return "%s%s/group?groupname=%s" % (req.base_url, API, _q(g))

    def descendants(self, fg):
        """Folded names of every group nested (transitively) in folded group fg."""
        if not self.children.get(fg):
            return ()
        out, todo = set(), list(self.children.get(fg, ()))
        while todo:
            g = todo.pop()
            if g not in out:
                out.add(g)
                todo.extend(self.children.get(g, ()))
        return out

    def effective_members(self, fg):
        """User keys of the group's direct members and of every nested group's members.
        Read only: without nested groups it is the group's own member set."""
        ds = self.descendants(fg)
        if not ds:
            return self.members[fg]
        ks = set(self.members[fg])
        for d in ds:
            ks |= self.members[d]
        return ks

    def inherited_from(self, fg, key):
        """Names of the nested groups (direct children or deeper) through which user `key`
        is a member of folded group fg, sorted."""
        return sorted((self.groups[d] for d in self.descendants(fg) if key in self.members[d]),
                      key=fold)

    def user_groups(self, u):
        return sorted((g for fg, g in self.groups.items()
                       if u["key"] in self.effective_members(fg)), key=fold)

    def group_counts(self):
        """{user key: number of groups (effective)} for rendering many users at once."""
        counts = {}
        for fg in self.groups:
            for k in self.effective_members(fg):
                counts[k] = counts.get(k, 0) + 1
        return counts

    def user_bean(self, req, u, expand=(), counts=None):
        """UserBean as GET user returns it; `expand` may hold "groups", "applicationRoles".
        `counts` (from group_counts()) avoids a scan of every group per user in lists.
        Fault jira_ignore_expand: no "groups" and no "applicationRoles" at all, whatever
        was asked (a server that does not implement expand; the spec does not list it)."""
        if self.server.faults.get("jira_ignore_expand"):
            return {"self": self.user_self(req, u), "key": u["key"], "name": u["name"],
                    "emailAddress": u["emailAddress"], "avatarUrls": self.avatars(req, u),
                    "displayName": u["displayName"], "active": u["active"], "deleted": False,
                    "timeZone": "UTC", "locale": "en_US"}
        b = {"self": self.user_self(req, u), "key": u["key"], "name": u["name"],
             "emailAddress": u["emailAddress"], "avatarUrls": self.avatars(req, u),
             "displayName": u["displayName"], "active": u["active"], "deleted": False,
             "timeZone": "UTC", "locale": "en_US"}
        if "groups" in expand:
            gs = self.user_groups(u)
            b["groups"] = {"size": len(gs), "items": [{"name": g, "self": self.group_self(req, g)}
                                                      for g in gs]}
        else:
            n = counts.get(u["key"], 0) if counts is not None else len(self.user_groups(u))
            b["groups"] = {"size": n, "items": []}
        if "applicationRoles" in expand:
            b["applicationRoles"] = {"size": 1, "items": [{"key": "jira-software",
                                                           "name": "Jira Software"}]}
        else:
            b["applicationRoles"] = {"size": 1, "items": []}
        b["expand"] = "groups,applicationRoles"
        return b

    def user_json(self, req, u):
        """UserJsonBean (group member lists, leads)."""
        return {"self": self.user_self(req, u), "name": u["name"], "key": u["key"],
                "emailAddress": u["emailAddress"], "avatarUrls": self.avatars(req, u),
                "displayName": u["displayName"], "active": u["active"], "timeZone": "UTC"}

    def user_json_text(self, req, u):
        """The JSON text of user_json(req, u), as _dumps writes it."""
        name, key, mail, disp, active = (u["name"], u["key"], u["emailAddress"],
                                         u["displayName"], u["active"])
        if not (type(name) is str and type(key) is str and type(mail) is str
                and type(disp) is str and type(active) is bool):
            return _dumps(self.user_json(req, u)).decode("utf-8")
        av = _js(req.base_url + "/secure/useravatar?ownerId=" + _q(key))[:-1]
        return "".join((
            '{"self":', _js("%s%s/user?username=%s" % (req.base_url, API, _q(name))),
            ',"name":', _js(name), ',"key":', _js(key), ',"emailAddress":', _js(mail),
            ',"avatarUrls":{"48x48":', av, '","24x24":', av, '&size=small","16x16":', av,
            '&size=xsmall","32x32":', av, '&size=medium"},"displayName":', _js(disp),
            ',"active":', "true" if active else "false", ',"timeZone":"UTC"}'))

    def lead_json(self, req, u):
        return {"self": self.user_self(req, u), "key": u["key"], "name": u["name"],
                "avatarUrls": self.avatars(req, u), "displayName": u["displayName"],
                "active": u["active"]}

    def group_bean(self, req, g):
        return {"name": g, "self": self.group_self(req, g),
                "users": {"size": len(self.effective_members(fold(g))), "items": [],
                          "max-results": 50, "start-index": 0, "end-index": 0},
                "expand": "users"}

    # -- lookups -----------------------------------------------------------------------------
    def find_user(self, req, required=True):
        """The user named by ?username= or ?key=; 404 when unknown."""
        name, key = req.arg("username"), req.arg("key")
        if name is not None:
            u = self.user_named(name)
            if u is None:
                raise ApiError(404, "The user named '%s' does not exist" % name)
            return u
        if key is not None:
            u = self.bykey.get(key)
            if u is None:
                raise ApiError(404, "The user with the key '%s' does not exist" % key)
            return u
        if required:
            raise ApiError(404, "The user named 'null' does not exist")
        return None

    def find_group(self, name, status=404):
        if name is None or name == "":
            raise ApiError(400, "Group name must not be empty.")
        g = self.groups.get(fold(name))
        if g is None:
            raise ApiError(status, "Specified group does not exist.")
        return g

    def find_project(self, idkey):
        for p in self.projects:
            if p["id"] == idkey or fold(p["key"]) == fold(idkey):
                return p
        raise ApiError(404, "No project could be found with key '%s'." % idkey)

    def find_component(self, cid):
        for c in self.components:
            if c["id"] == cid:
                return c
        raise ApiError(404, "The component with id %s does not exist." % cid)

    def leads_of(self, u):
        projects = [p["key"] for p in self.projects if p["lead"] == u["key"]]
        comps = [c for c in self.components if c["lead"] == u["key"]]
        return projects, comps

    # -- users -------------------------------------------------------------------------------
    def get_user(self, req):
        u = self.find_user(req)
        expand = set((req.arg("expand") or "").split(","))
        return json_response(200, self.user_bean(req, u, expand))

    def get_myself(self, req):
        u = self.users.get(fold(ADMIN))
        if u is None:  # a state without the admin account: the caller still exists
            u = {"name": ADMIN, "key": ADMIN, "displayName": "Administrator",
                 "emailAddress": "admin@example.com", "active": True}
        return json_response(200, self.user_bean(req, u, {"groups", "applicationRoles"}))

    # Global permissions (GET mypermissions): who holds them, by group. Jira grants
    # ADMINISTER to jira-administrators and SYSTEM_ADMIN to jira-system-administrators out
    # of the box; a system administrator has ADMINISTER too.
    GLOBAL_PERMISSIONS = (
        ("ADMINISTER", "Jira Administrators", ("jira-administrators",
                                                "jira-system-administrators")),
        ("SYSTEM_ADMIN", "Jira System Administrators", ("jira-system-administrators",)),
        ("USER_PICKER", "Browse users and groups", ("jira-administrators",
                                                    "jira-system-administrators",
                                                    "jira-software-users")),
    )

    def my_permissions(self, req):
        """PermissionsJsonBean of the caller (always admin): every global permission, or
        only those named in ?permissions=A,B (unknown keys are a 400, as Jira does)."""
        u = self.users.get(fold(ADMIN))
        key = u["key"] if u else None
        want = [p for p in (req.arg("permissions") or "").split(",") if p]
        known = {p[0] for p in self.GLOBAL_PERMISSIONS}
        for p in want:
            if p not in known:
                raise ApiError(400, "Permission '%s' does not exist." % p)
        out = {}
        for pkey, name, groups in self.GLOBAL_PERMISSIONS:
            if want and pkey not in want:
                continue
            have = key is not None and any(
                fold(g) in self.groups and key in self.effective_members(fold(g))
                for g in groups)
            out[pkey] = {"id": pkey, "key": pkey, "name": name, "type": "GLOBAL",
                         "description": name, "havePermission": have}
        return json_response(200, {"permissions": out})

    def list_users(self, req):
        n = int_arg(req, "maxResults", 2000, minimum=-(2 ** 31), maximum=2000)
        if n < 1:
            n = 2000
        users = self.sorted_users()
        start = 0
        cursor = req.arg("cursor")
        if cursor:
            try:
                last = base64.urlsafe_b64decode(cursor.encode("ascii") + b"==").decode("utf-8")
            except (ValueError, UnicodeError):
                last = None
            if last is None or not last.startswith("u:"):
                start = len(users)  # no such position: an empty last page (docstring)
            else:
                start = bisect.bisect_right(self._sorted_keys, last[2:])
        n, end, last_page = self.page_window(start, n, len(users))
        page = users[start:end]
        counts = self.memo("group_counts", self.group_counts)
        selfq = {"maxResults": n}
        if cursor:
            selfq["cursor"] = cursor
        # The page is serialised here, bean by bean, to the bytes json_response would send
        # for the same dict (keys in the same order, the same encoder for strings): building
        # and encoding dicts cost ~50 us a user, and a 2,000-user page held the lock (every
        # other request to the simulator) for 80-100 ms on a loaded machine.
        out = ['{"self":', _js("%s%s/user/list?%s" % (req.base_url, API,
                                                      urllib.parse.urlencode(selfq))),
               ',"maxResults":', str(n), ',"values":[',
               ",".join([self.list_bean_json(req, u, counts) for u in page]), "]"]
        if not self.server.faults.get("page_no_flags"):
            out.append(',"isLast":true' if last_page else ',"isLast":false')
        if not last_page and page:
            nc = base64.urlsafe_b64encode(("u:" + fold(page[-1]["name"])).encode("utf-8")) \
                .decode("ascii").rstrip("=")
            out += [',"nextCursor":', _js(nc), ',"nextPage":', _js("%s%s/user/list?%s" % (
                req.base_url, API, urllib.parse.urlencode({"maxResults": n, "cursor": nc})))]
        out.append("}")
        return Response(200, [("Content-Type", "application/json")],
                        "".join(out).encode("utf-8"))

    def list_bean_json(self, req, u, counts):
        """The JSON text of user_bean(req, u, counts=counts), as _dumps writes it."""
        name, key, mail, disp, active = (u["name"], u["key"], u["emailAddress"],
                                         u["displayName"], u["active"])
        if self.server.faults.get("jira_ignore_expand") or not (
                type(name) is str and type(key) is str and type(mail) is str
                and type(disp) is str and type(active) is bool):
            return _dumps(self.user_bean(req, u, counts=counts)).decode("utf-8")
        av = _js(req.base_url + "/secure/useravatar?ownerId=" + _q(key))[:-1]
        return "".join((
            '{"self":', _js("%s%s/user?username=%s" % (req.base_url, API, _q(name))),
            ',"key":', _js(key), ',"name":', _js(name), ',"emailAddress":', _js(mail),
            ',"avatarUrls":{"48x48":', av, '","24x24":', av, '&size=small","16x16":', av,
            '&size=xsmall","32x32":', av, '&size=medium"},"displayName":', _js(disp),
            ',"active":', "true" if active else "false",
            ',"deleted":false,"timeZone":"UTC","locale":"en_US","groups":{"size":',
            str(counts.get(key, 0)),
            ',"items":[]},"applicationRoles":{"size":1,"items":[]},'
            '"expand":"groups,applicationRoles"}'))

    @staticmethod
    def _matches(u, q):
        if q == "." or q == "%":
            return True
        if fold(u["name"]).startswith(q) or fold(u["emailAddress"]).startswith(q):
            return True
        dn = fold(u["displayName"])
        return dn.startswith(q) or any(w.startswith(q) for w in dn.split())

    def search_users(self, req):
        q = req.arg("username")
        if q is None or q == "":
            raise ApiError(400, "The username query parameter was not provided")
        start = int_arg(req, "startAt", 0)
        n = int_arg(req, "maxResults", 50, minimum=0, maximum=1000)
        inc_active = bool_arg(req, "includeActive", True)
        inc_inactive = bool_arg(req, "includeInactive", False)
        if not inc_active and not inc_inactive:
            raise ApiError(400, "At least one of 'includeActive' or 'includeInactive' "
                                "parameters must be true")
        fq = fold(q)
        hits = [u for u in self.sorted_users()
                if (inc_active if u["active"] else inc_inactive) and self._matches(u, fq)]
        counts = self.memo("group_counts", self.group_counts)
        return json_response(200, [self.user_bean(req, u, counts=counts)
                                   for u in hits[start:start + n]])

    def create_user(self, req):
        b = self.body_object(req)
        name = b.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "You must specify a username.", field="username")
        if fold(name) in self.users:
            raise ApiError(400, "A user with that username already exists.", field="username")
        dn = b.get("displayName")
        if not isinstance(dn, str) or not dn.strip():
            raise ApiError(400, "You must specify a full name.", field="displayName")
        em = b.get("emailAddress")
        if not isinstance(em, str) or not em.strip():
            raise ApiError(400, "You must specify an email address.", field="email")
        if "@" not in em:
            raise ApiError(400, "You must specify a valid email address.", field="email")
        key = "JIRAUSER%d" % self.seq
        self.seq += 1
        u = {"name": name, "key": key, "displayName": dn, "emailAddress": em, "active": True}
        self.users[fold(name)] = u
        self.bykey[key] = u
        self.order.append(u)
        self._sorted = None
        return json_response(201, self.user_bean(req, u),
                             [("Location", self.user_self(req, u))])

    def update_user(self, req):
        u = self.find_user(req)
        b = self.body_object(req)
        new = {}
        if "name" in b and b["name"] is not None:
            n = b["name"]
            if not isinstance(n, str) or not n.strip():
                raise ApiError(400, "You must specify a username.", field="username")
            other = self.users.get(fold(n))
            if other is not None and other is not u:
                raise ApiError(400, "A user with that username already exists.",
                               field="username")
            new["name"] = n
        if "displayName" in b and b["displayName"] is not None:
            if not isinstance(b["displayName"], str) or not b["displayName"].strip():
                raise ApiError(400, "You must specify a full name.", field="displayName")
            new["displayName"] = b["displayName"]
        if "emailAddress" in b and b["emailAddress"] is not None:
            em = b["emailAddress"]
            if not isinstance(em, str) or "@" not in em:
                raise ApiError(400, "You must specify a valid email address.", field="email")
            new["emailAddress"] = em
        if "active" in b and b["active"] is not None:
            if not isinstance(b["active"], bool):
                raise ApiError(400, "Can not deserialize 'active': expected a boolean")
            if not b["active"] and u["active"]:
                if fold(u["name"]) == fold(ADMIN):
                    raise ApiError(400, "You cannot deactivate your own account.")
                projects, _ = self.leads_of(u)
                if projects:
                    raise ApiError(400, "Cannot deactivate user '%s': the user is the lead of "
                                        "project(s): %s" % (u["name"], ", ".join(projects)))
            new["active"] = b["active"]
        if "name" in new and new["name"] != u["name"]:
            del self.users[fold(u["name"])]
            u["name"] = new["name"]
            self.users[fold(u["name"])] = u
            self._sorted = None
        for k in ("displayName", "emailAddress", "active"):
            if k in new:
                u[k] = new[k]
        return json_response(200, self.user_bean(req, u))

    def delete_user(self, req):
        u = self.find_user(req)
        if fold(u["name"]) == fold(ADMIN):
            raise ApiError(400, "You cannot delete the currently logged in user.")
        projects, comps = self.leads_of(u)
        msgs = []
        if projects:
            msgs.append("Cannot delete user '%s' because they are the lead of project(s): %s"
                        % (u["name"], ", ".join(projects)))
        if comps:
            msgs.append("Cannot delete user '%s' because they are the lead of %d component(s)."
                        % (u["name"], len(comps)))
        if msgs:
            return json_response(400, {"errorMessages": msgs, "errors": {}})
        del self.users[fold(u["name"])]
        del self.bykey[u["key"]]
        self.order.remove(u)
        for ms in self.members.values():
            ms.discard(u["key"])
        self._sorted = None
        return empty_response(204)

    # -- groups ------------------------------------------------------------------------------
    def groups_picker(self, req):
        q = fold(req.arg("query") or "")
        n = int_arg(req, "maxResults", 20)
        cap = self.server.faults.get("jira_picker_cap")
        if cap is not None:
            n = min(n, cap)  # a server capping the picker below what was asked
        excl = {fold(x) for x in req.query.get("exclude", [])}
        hits = sorted((g for fg, g in self.groups.items() if q in fg and fg not in excl),
                      key=fold)
        out = []
        for g in hits[:n]:
            if q:
                i = fold(g).find(q)
                html = _html(g[:i]) + "<b>" + _html(g[i:i + len(q)]) + "</b>" + \
                    _html(g[i + len(q):])
            else:
                html = _html(g)
            out.append({"name": g, "html": html, "labels": []})
        return json_response(200, {"header": "Showing %d of %d matching groups"
                                             % (len(out), len(hits)),
                                   "total": len(hits), "groups": out})

    def create_group(self, req):
        b = self.body_object(req)
        name = b.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "You must specify a valid group name.")
        if fold(name) in self.groups:
            raise ApiError(400, "A group with that name already exists.")
        self.groups[fold(name)] = name
        self.members[fold(name)] = set()
        return json_response(201, self.group_bean(req, name),
                             [("Location", self.group_self(req, name))])

    def delete_group(self, req):
        g = self.find_group(req.arg("groupname"))
        swap = req.arg("swapGroup")
        if swap:
            self.find_group(swap, status=400)
        del self.groups[fold(g)]
        del self.members[fold(g)]
        self.children.pop(fold(g), None)
        for ks in self.children.values():
            ks.discard(fold(g))
        return empty_response(200)

    def group_members(self, req):
        g = self.find_group(req.arg("groupname"))
        start = int_arg(req, "startAt", 0)
        n = int_arg(req, "maxResults", 50, minimum=-(2 ** 31), maximum=50)
        if n < 1:
            n = 50
        inactive = bool_arg(req, "includeInactiveUsers", False)

        def members():
            us = sorted((self.bykey[k] for k in self.effective_members(fold(g))),
                        key=lambda u: fold(u["name"]))
            return us if inactive else [u for u in us if u["active"]]
        us = self.memo(("group/member", fold(g), inactive), members)
        n, end, is_last = self.page_window(start, n, len(us))
        page = us[start:end]

        def link(s):
            return "%s%s/group/member?%s" % (req.base_url, API, urllib.parse.urlencode({
                "includeInactiveUsers": "true" if inactive else "false", "maxResults": n,
                "groupname": g, "startAt": s}))
        # Written as text, each member's bean encoded once per state and base URL (the same
        # bytes json_response writes for the dict; test_jira_list_json compares them): a
        # no-op re-sync of 10,000 users in 500 groups reads 1,084 of these pages, and
        # building and encoding 50 dicts a page was most of the simulator's CPU.
        beans = self.memo(("user_json_text", req.base_url), dict)
        vals = []
        for u in page:
            t = beans.get(u["key"])
            if t is None:
                t = beans[u["key"]] = self.user_json_text(req, u)
            vals.append(t)
        out = ['{"self":', _js(link(start)), ',"maxResults":', str(n), ',"startAt":', str(start),
               ',"total":', str(len(us))]
        if not self.server.faults.get("page_no_flags"):
            out.append(',"isLast":true' if is_last else ',"isLast":false')
        out += [',"values":[', ",".join(vals), "]"]
        if not is_last:
            out += [',"nextPage":', _js(link(end))]
        out.append("}")
        return Response(200, [("Content-Type", "application/json")], "".join(out).encode("utf-8"))

    def add_member(self, req):
        g = self.find_group(req.arg("groupname"))
        b = self.body_object(req)
        name = b.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "You must specify a user name.")
        u = self.user_named(name)
        if u is None:
            raise ApiError(404, "User '%s' does not exist." % name)
        ms = self.members[fold(g)]
        if u["key"] in self.effective_members(fold(g)):
            if self.server.faults.get("jira_reworded"):
                raise ApiError(400, "User '%s' belongs to group '%s'; nothing to add."
                               % (u["name"], g))
            raise ApiError(400, "Cannot add user. '%s' is already a member of '%s'"
                           % (u["name"], g))
        ms.add(u["key"])
        return json_response(201, self.group_bean(req, g))

    def remove_member(self, req):
        g = self.find_group(req.arg("groupname"))
        name = req.arg("username")
        if not name:
            raise ApiError(400, "You must specify a user name.")
        u = self.user_named(name)
        if u is None:
            raise ApiError(404, "User '%s' does not exist." % name)
        ms = self.members[fold(g)]
        if u["key"] not in ms:
            via = self.inherited_from(fold(g), u["key"])
            if via:
                raise ApiError(404, "Cannot remove user '%s' from group '%s': the user is not "
                                    "a direct member of the group; the membership comes from "
                                    "the nested group(s) %s." % (u["name"], g, ", ".join(via)))
            raise ApiError(404, "Cannot remove user '%s' from group '%s': the user is not a "
                                "member of the group." % (u["name"], g))
        ms.discard(u["key"])
        return empty_response(200)

    # -- projects and components ---------------------------------------------------------
    def project_bean(self, req, p, full, with_lead):
        b = {"expand": "description,lead,url,projectKeys",
             "self": "%s%s/project/%s" % (req.base_url, API, p["id"]),
             "id": p["id"], "key": p["key"], "name": p["name"],
             "avatarUrls": {"48x48": "%s/secure/projectavatar?pid=%s" % (req.base_url,
                                                                         p["id"])},
             "projectTypeKey": "software", "archived": False}
        if with_lead or full:
            b["lead"] = self.lead_json(req, self.bykey[p["lead"]])
        if full:
            b["description"] = ""
            b["components"] = [self.component_bean(req, c) for c in self.components
                               if c["project"] == p["key"]]
            b["issueTypes"] = []
            b["assigneeType"] = "UNASSIGNED"
            b["versions"] = []
            b["roles"] = {}
            b["projectKeys"] = [p["key"]]
        return b

    def component_bean(self, req, c):
        p = next(p for p in self.projects if p["key"] == c["project"])
        plead = self.bykey[p["lead"]]
        b = {"self": "%s%s/component/%s" % (req.base_url, API, c["id"]), "id": c["id"],
             "name": c["name"]}
        if c["lead"]:
            lead = self.bykey[c["lead"]]
            b["lead"] = self.lead_json(req, lead)
            b["leadUserName"] = lead["name"]
        b.update({"assigneeType": "PROJECT_DEFAULT", "assignee": self.lead_json(req, plead),
                  "realAssigneeType": "PROJECT_LEAD",
                  "realAssignee": self.lead_json(req, plead), "isAssigneeTypeValid": True,
                  "project": p["key"], "projectId": int(p["id"]), "archived": False,
                  "deleted": False})
        return b

    def list_projects(self, req):
        expand = set((req.arg("expand") or "").split(","))
        return json_response(200, [self.project_bean(req, p, False, "lead" in expand)
                                   for p in self.projects])

    def get_project(self, req, idkey):
        return json_response(200, self.project_bean(req, self.find_project(idkey), True, True))

    def update_project(self, req, idkey):
        p = self.find_project(idkey)
        b = self.body_object(req)
        lead = b.get("lead")
        if lead is not None:
            u = self.users.get(fold(lead)) if isinstance(lead, str) else None
            if u is None:
                raise ApiError(400, "The user you have specified as project lead does not "
                                    "exist.", field="projectLead")
            if not u["active"]:
                raise ApiError(400, "The user you have specified as project lead is not "
                                    "active.", field="projectLead")
        name = b.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ApiError(400, "You must specify a valid project name.", field="projectName")
        if b.get("key") is not None and fold(b["key"]) != fold(p["key"]):
            raise ApiError(400, "Changing the project key is not supported here.",
                           field="projectKey")
        if lead is not None:
            p["lead"] = u["key"]
        if name is not None:
            p["name"] = name
        return json_response(200, self.project_bean(req, p, True, True))

    def project_components(self, req, idkey):
        p = self.find_project(idkey)
        return json_response(200, [self.component_bean(req, c) for c in self.components
                                   if c["project"] == p["key"]])

    def get_component(self, req, cid):
        return json_response(200, self.component_bean(req, self.find_component(cid)))

    def update_component(self, req, cid):
        c = self.find_component(cid)
        b = self.body_object(req)
        if "leadUserName" in b:
            lead = b["leadUserName"]
            if lead is None or lead == "":
                c["lead"] = None
            else:
                u = self.users.get(fold(lead)) if isinstance(lead, str) else None
                if u is None:
                    raise ApiError(400, "The user %s does not exist." % lead,
                                   field="leadUserName")
                c["lead"] = u["key"]
        if b.get("name") is not None:
            if not isinstance(b["name"], str) or not b["name"].strip():
                raise ApiError(400, "The component name must not be empty.", field="name")
            c["name"] = b["name"]
        return json_response(200, self.component_bean(req, c))

    # -- server ------------------------------------------------------------------------------
    def get_server_info(self, req):
        import time as _t
        now = self.server.now()
        return json_response(200, {
            "baseUrl": req.base_url, "version": VERSION,
            "versionNumbers": [int(x) for x in VERSION.split(".")],
            "deploymentType": "Server", "buildNumber": 10030024,
            "buildDate": "2025-01-15T00:00:00.000+0000",
            "serverTime": _t.strftime("%Y-%m-%dT%H:%M:%S.000+0000", _t.gmtime(now)),
            "scmInfo": "0000000000000000000000000000000000000000",
            "serverTitle": "Jira (simulated)"})


def _html(s):
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


PRODUCT = Jira
Simulator = Jira
