#!/usr/bin/env python3
"""Contract test (issue 13): every operation the usersync clients make, checked against the
vendors' OpenAPI documents by a validating proxy someone else wrote.

    usersync --> front (proxy.py: records) --> prism proxy <vendor spec> --> simulator

Prism (npm @stoplight/prism-cli, pinned, installed on first use into $CONTRACT_CACHE, by
default build/contract) validates each request (method, path, query and header parameters,
body) and each response (status, headers, body) against the vendor document in
tests/data/specs and reports violations in an `sl-violations` header, which the front ties
to the request. The run drives the real binary through check, plan, apply, sync (creates, updates,
renames, group creates, membership adds and removes, deactivation, delete, Jira lead
hand-over, Confluence asynchronous delete), sync --user, a re-sync, and a script calling every
read of the Okta client (scope reads, user groups, System Log polls).

Each violation must be listed in tests/contract/deviations.json with the evidence that makes
it deliberate (a spec defect, or a recorded real response); any other violation fails the
test. The last lines print the count per product:
    contract: okta 0 violations, jira 2 violations (2 documented), ...

Spec copies: the documents are written for a server URL with a base path (Jira and Bitbucket
`{baseurl}/rest`, Confluence `{baseurl}/confluence`) that Prism does not strip, so a copy
made at test time prefixes the paths with it; Bitbucket's `/api/latest/` becomes `/api/1.0/`
(Bitbucket serves the same resources under both; usersync uses 1.0). Nothing else changes.

Environment: USERSYNC (the binary), PYTHON3, SOURCE_DIR, DATA_DIR (set by tests/tests.cmake);
CONTRACT_CACHE (where Prism is installed), CONTRACT_KEEP=1 keeps the work folder.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
DATA_DIR = os.environ.get("DATA_DIR") or os.path.join(SOURCE_DIR, "tests", "data")
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "fakes"))

import fake  # noqa: E402
import proxy  # noqa: E402

PRODUCTS = ("okta", "jira", "confluence", "bitbucket")
SPECS = {
    "okta": "okta-management-sync-subset.yaml",
    "jira": "jira-dc-10.3.openapi.json",
    "confluence": "confluence-dc-10.0.3.openapi.json",
    "bitbucket": "bitbucket-dc-9.5.openapi.json",
}
APP = "0oaContractApp"
CONFLUENCE_CONTEXT = "/confluence"
T0 = "2025-01-01T00:00:00.000Z"


def log(msg):
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------
# Spec copies

def prepare_spec(product, out_dir):
    src = os.path.join(DATA_DIR, "specs", SPECS[product])
    if product == "okta":
        return src  # paths are /api/v1/... at the server root, as usersync sends them
    with open(src) as fh:
        spec = json.load(fh)
    prefix = {"jira": "/rest", "bitbucket": "/rest", "confluence": CONFLUENCE_CONTEXT}[product]
    paths = {}
    for p, item in spec["paths"].items():
        q = prefix + p
        if product == "bitbucket":
            q = q.replace("/api/latest/", "/api/1.0/")
        paths[q] = item
    spec["paths"] = paths
    spec["servers"] = [{"url": "/"}]
    dst = os.path.join(out_dir, product + ".openapi.json")
    with open(dst, "w") as fh:
        json.dump(spec, fh)
    return dst


# ------------------------------------------------------------------------------------------
# The world: an Okta org and three Atlassian servers

def okta_user(uid, login, status="ACTIVE", **profile):
    first, last = re.match(r"^([a-z]+)\.([a-z]+)", login).groups()
    p = {"login": login, "email": login, "firstName": first, "lastName": last}
    p.update(profile)
    return {"id": uid, "status": status, "created": T0, "lastUpdated": T0, "profile": p}


def okta_group(gid, name):
    return {"id": gid, "type": "OKTA_GROUP", "created": T0, "lastUpdated": T0,
            "lastMembershipUpdated": T0, "profile": {"name": name, "description": name}}


class Org:
    """The Okta org as the test changes it between runs."""

    def __init__(self):
        self.users = [
            okta_user("00u1contract000ann1", "ann.lee@example.com"),
            okta_user("00u1contract000bob1", "bob.stone@example.com"),
            okta_user("00u1contract00carol", "carol.king@example.com"),
            okta_user("00u1contract000dave", "dave.ray@example.com"),
            okta_user("00u1contract000erin", "erin.cho@example.com"),
            okta_user("00u1contract0000fay", "fay.moss@example.com"),
        ]
        self.groups = [okta_group("00g1contract0000eng", "Engineering"),
                       okta_group("00g1contract0000ops", "Ops"),
                       okta_group("00g1contract0contra", "Contractors"),
                       okta_group("00g1contract00desgn", "Design")]
        self.members = {"00g1contract0000eng": ["00u1contract000ann1", "00u1contract000bob1"],
                        "00g1contract0000ops": ["00u1contract00carol", "00u1contract000dave"],
                        "00g1contract0contra": ["00u1contract000erin"],
                        "00g1contract00desgn": []}
        # direct assignments, plus Contractors assigned as a group (erin comes through it)
        self.app_users = ["00u1contract000ann1", "00u1contract000bob1", "00u1contract00carol",
                          "00u1contract000dave", "00u1contract0000fay"]
        self.app_groups = ["00g1contract0contra"]

    def user(self, uid):
        return next(u for u in self.users if u["id"] == uid)

    def state(self):
        return {"users": self.users, "groups": self.groups, "group_members": self.members,
                "apps": {APP: {"users": self.app_users, "groups": self.app_groups}}}


MAP = {"Engineering": ["developers"], "Ops": ["operations"], "Contractors": ["contractors"],
       "Design": ["designers"]}

POLICY = """-- contract test: dave's account is deleted when he leaves scope, the others deactivated
return {
  deprovision = function(account, reason, ctx)
    if account.name:find("^dave") then return "delete" end
    return "deactivate"
  end,
}
"""


def lua(v):
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "{ " + ", ".join(lua(x) for x in v) + " }"
    return "{ " + ", ".join("[%s] = %s" % (json.dumps(k), lua(x)) for k, x in sorted(v.items())) + " }"


def write_config(work, fronts, pat=False):
    policy = os.path.join(work, "policy.lua")
    with open(policy, "w") as fh:
        fh.write(POLICY)
    okta = fronts["okta"].url
    text = """return {
  state = %s,
  sources = {
    okta = { type = "okta", url = %s, token = env "US_CONTRACT_OKTA_TOKEN", app_id = %s },
    okta_all = { type = "okta", url = %s, token = env "US_CONTRACT_OKTA_TOKEN",
                 filter = 'status eq "ACTIVE"' },
  },
  targets = {
    jira = { type = "jira", url = %s, user = "admin", password = env "US_CONTRACT_ATL_PASSWORD" },
    confluence = { type = "confluence", url = %s, user = "admin", password = env "US_CONTRACT_ATL_PASSWORD",
                   task_wait = "60s" },
    bitbucket = { type = "bitbucket", url = %s, user = "admin", password = env "US_CONTRACT_ATL_PASSWORD" },
  },
  sync = {
    { name = "main", source = "okta", targets = { "jira", "confluence", "bitbucket" },
      users = { delete = true, project_lead = "svc-admin", component_lead = "svc-admin" },
      groups = { mode = "manual", map = %s },
      defaults = { new_users = { "new-hires" }, all_users = { "okta-synced" } },
      policy = %s,
      limits = { max_deprovision = 100 } },
  },
}
""" % (lua(os.path.join(work, "usersync.db")), lua(okta), lua(APP), lua(okta),
       lua(fronts["jira"].url), lua(fronts["confluence"].url + CONFLUENCE_CONTEXT),
       lua(fronts["bitbucket"].url), lua(MAP), lua(policy))
    if pat:
        text = text.replace('user = "admin", password = env "US_CONTRACT_ATL_PASSWORD"',
                            'token = env "US_CONTRACT_ATL_TOKEN"')
    path = os.path.join(work, "usersync-pat.conf.lua" if pat else "usersync.conf.lua")
    with open(path, "w") as fh:
        fh.write(text)
    return path


def usersync(config, *args, ok=(0,)):
    exe = os.environ.get("USERSYNC") or os.path.join(SOURCE_DIR, "build", "usersync")
    env = dict(os.environ, US_CONTRACT_OKTA_TOKEN="test-token", US_CONTRACT_ATL_PASSWORD="admin",
               US_CONTRACT_ATL_TOKEN="test-token",
               USERSYNC_LOG_LEVEL="warn", NO_COLOR="1")
    r = subprocess.run([exe, args[0], "-c", config] + list(args[1:]), env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=300)
    out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    if r.returncode not in ok:
        raise AssertionError("usersync %s exited %d\nstdout:\n%s\nstderr:\n%s"
                             % (" ".join(args), r.returncode, out, err))
    tail = [l for l in out.strip().splitlines() if l.strip()][-3:]
    for line in tail:
        log("  | " + line)
    return r.returncode, out, err


# ------------------------------------------------------------------------------------------
# Operations and violations

class Operations:
    """Names a request by the spec's path template: `GET /rest/api/2/user` for
    `GET /rest/api/2/user?username=ann`, `GET /api/v1/users/{id}` for `GET /api/v1/users/00u1`."""

    def __init__(self, spec_path):
        if spec_path.endswith(".yaml"):
            import yaml
            with open(spec_path) as fh:
                spec = yaml.safe_load(fh)
        else:
            with open(spec_path) as fh:
                spec = json.load(fh)
        self.spec = spec
        self.templates = []
        for p, item in spec["paths"].items():
            rx = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(p)) + "$")
            methods = {m.upper() for m in item if m in ("get", "put", "post", "delete", "patch")}
            # literal segments win over templated ones (users/me before users/{id})
            self.templates.append((p.count("{"), p, rx, methods))
        self.templates.sort(key=lambda t: t[0])

    def name(self, method, target):
        path = target.split("?", 1)[0]
        for _, p, rx, methods in self.templates:
            if method in methods and rx.match(path):
                return "%s %s" % (method, p)
        return "%s %s (not in the spec)" % (method, path)


def fold(text):
    """Item indices in a violation (`response.body.3.id`, `property 3.id`) become N."""
    return re.sub(r"(?:(?<=\.)|(?<=property ))\d+(?=\.|\s)", "N", text)


CUT = "sl-violations cut by Prism"


def from_log(log_path):
    """Violations Prism wrote to its log, as `location message` texts."""
    out = []
    with open(log_path, errors="replace") as fh:
        for line in fh:
            m = re.search(r"\[VALIDATOR\].*?Violation: (.*)$", line.rstrip("\n"))
            if m:
                out.append(m.group(1))
    return out


def vtext(v):
    return "%s %s" % (".".join(str(x) for x in v.get("location", [])), v.get("message", ""))


def _walk(doc, path):
    """Values at a dotted path in a JSON document; `*` is every item of a list or object."""
    nodes = [doc]
    for part in path.split("."):
        nxt = []
        for n in nodes:
            if part == "*":
                nxt.extend(n.values() if isinstance(n, dict) else n if isinstance(n, list) else [])
            elif isinstance(n, dict) and part in n:
                nxt.append(n[part])
            elif isinstance(n, list) and part.isdigit() and int(part) < len(n):
                nxt.append(n[int(part)])
        nodes = nxt
    return nodes


def check_evidence(d, ops):
    """Each deviation's machine-checkable evidence must hold, or the entry is wrong."""
    for ev in d.get("checks", []):
        if "fixture" in ev:
            with open(os.path.join(DATA_DIR, "fixtures", ev["fixture"])) as fh:
                doc = json.load(fh)
            vals = _walk(doc, ev["path"])
            if not vals or any(v != ev["equals"] for v in vals):
                raise AssertionError("deviation %s: fixture %s has %r at %s, not %r"
                                     % (d["id"], ev["fixture"], vals, ev["path"], ev["equals"]))
        elif "spec" in ev:
            node = ops[ev["spec"]].spec
            for k in ev["pointer"]:
                node = node[k]
            if node != ev["equals"]:
                raise AssertionError("deviation %s: spec %s has %r at %s, not %r"
                                     % (d["id"], ev["spec"], node, ev["pointer"], ev["equals"]))
        else:
            raise AssertionError("deviation %s: unknown check %r" % (d["id"], ev))


KINDS = ("spec-defect", "recorded", "spec-gap", "open")


def load_deviations():
    with open(os.path.join(HERE, "deviations.json")) as fh:
        doc = json.load(fh)
    out = []
    for d in doc["deviations"]:
        for k in ("id", "kind", "products", "operation", "message", "why", "evidence"):
            if not d.get(k):
                raise AssertionError("deviations.json: entry without %s: %r" % (k, d))
        if d["kind"] not in KINDS:
            raise AssertionError("deviations.json: %s: kind must be one of %s" % (d["id"], KINDS))
        out.append(dict(d, _op=re.compile(d["operation"]), _msg=re.compile(d["message"]), used=0))
    return out


def classify(product, op, v, deviations):
    text = vtext(v)
    for d in deviations:
        if product in d["products"] and d["_op"].search(op) and d["_msg"].search(text):
            return d
    return None


# ------------------------------------------------------------------------------------------
# The scenario

def scenario(sims, fronts, work, org):
    config = write_config(work, fronts)
    okta = sims["okta"]

    def step(name):
        for f in fronts.values():
            f.set_step(name)
        log("step: " + name)

    step("check")
    usersync(config, "check")
    planfile = os.path.join(work, "first.plan")
    step("plan --out (first)")
    usersync(config, "plan", "--out", planfile)
    step("apply (first: creates, group creates, memberships)")
    usersync(config, "apply", planfile)

    # Jira: bob leads a project and a component, so his deactivation hands them over first
    st = sims["jira"].state()
    st["projects"] = [{"key": "ABC", "name": "Alpha", "lead": "bob.stone@example.com"}]
    st["components"] = [{"id": "10001", "project": "ABC", "name": "Core",
                         "lead": "bob.stone@example.com"}]
    sims["jira"].put_state(st)

    # Okta changes
    ann = org.user("00u1contract000ann1")
    ann["profile"].update(login="ann.smith@example.com", email="ann.smith@example.com",
                          lastName="smith")                                   # rename
    org.user("00u1contract0000fay")["profile"]["lastName"] = "moss-brown"     # update (--user)
    org.app_users.remove("00u1contract000bob1")                               # deactivate, hand-over
    org.app_users.remove("00u1contract000dave")                               # delete (policy)
    org.members["00g1contract0000ops"].remove("00u1contract000dave")
    org.members["00g1contract0000ops"].remove("00u1contract00carol")          # remove member
    org.members["00g1contract0000eng"].append("00u1contract00carol")          # add member
    org.members["00g1contract00desgn"].append("00u1contract0000fay")          # group create
    okta.put_state(org.state())

    step("plan (changes)")
    usersync(config, "plan", "--json")
    step("sync --user")
    usersync(config, "sync", "--user", "fay.moss@example.com")
    step("sync (rename, update, deactivate, hand-over, delete, memberships)")
    usersync(config, "sync")
    step("re-sync")
    usersync(config, "sync")
    jira = sims["jira"].state()
    assert jira["projects"][0]["lead"] == "svc-admin", jira["projects"]
    names = {u["name"].lower(): u for u in jira["users"]}
    assert "ann.smith@example.com" in names and "ann.lee@example.com" not in names, names.keys()
    assert names["bob.stone@example.com"]["active"] is False
    assert "dave.ray@example.com" not in names, "dave deleted"
    conf = {u["username"].lower(): u for u in sims["confluence"].state()["users"]}
    assert "dave.ray@example.com" not in conf, "confluence delete (long task) went through"
    assert conf["bob.stone@example.com"].get("disabled") is True

    step("sync --user (a user the app no longer assigns: the app is read)")
    usersync(config, "sync", "--user", "bob.stone@example.com")
    org.app_users.append("00u1contract000bob1")                               # reactivate
    okta.put_state(dict(org.state(), logs=okta.state()["logs"]))  # keep the earlier events
    step("sync (reactivation)")
    usersync(config, "sync")
    assert {u["name"].lower(): u for u in sims["jira"].state()["users"]}[
        "bob.stone@example.com"]["active"] is True

    step("target client operations (every method, on a throwaway account and groups)")
    usersync(config, "run", os.path.join(HERE, "target_ops.lua"))

    step("check with personal access tokens (Bearer)")
    usersync(write_config(work, fronts, pat=True), "check")

    step("okta client reads (scope, user groups, System Log)")
    r = usersync(config, "run", os.path.join(HERE, "okta_client.lua"), APP, "00u1contract000ann1",
                 "00g1contract0000eng",
                 time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 86400)))
    log("  " + r[1].strip().replace("\n", "\n  "))


SELF_CHECKS = {
    # one request per product that the spec forbids: the run fails unless Prism reports it,
    # so a proxy that stopped validating (or a front that lost the header) cannot pass
    "okta": ("GET", "/api/v1/users?limit=not-a-number", None),
    "jira": ("POST", "/rest/api/2/group", {"name": 5}),
    "confluence": ("POST", CONFLUENCE_CONTEXT + "/rest/api/admin/user", {"userName": 5}),
    "bitbucket": ("POST", "/rest/api/1.0/admin/users/add-groups", {"user": 5, "groups": "x"}),
}


def self_check(fronts):
    import http.client
    for p, (method, path, body) in SELF_CHECKS.items():
        fronts[p].set_step("self-check")
        host, port = fronts[p].url[len("http://"):].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        headers = {"Authorization": "SSWS test-token" if p == "okta" else "Basic YWRtaW46YWRtaW4=",
                   "X-Atlassian-Token": "no-check", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, data, headers)
        conn.getresponse().read()
        conn.close()
        recs = [r for r in fronts[p].records if r["step"] == "self-check"]
        if not recs or not any(v.get("location", [""])[0] == "request" for v in recs[-1]["violations"]):
            raise AssertionError("self-check %s: Prism reported no request violation for %s %s "
                                 "(violations: %r)" % (p, method, path, recs[-1:]))


def main():
    cache = os.environ.get("CONTRACT_CACHE") or os.path.join(SOURCE_DIR, "build", "contract")
    started = time.time()
    exe = proxy.ensure_prism(cache, log)
    work = tempfile.mkdtemp(prefix="usersync-contract-")
    deviations = load_deviations()
    sims, prisms, fronts, ops = {}, {}, {}, {}
    failed = []
    try:
        org = Org()
        for p in PRODUCTS:
            sims[p] = fake.Fake(p, state=org.state() if p == "okta" else None)
        # the Atlassian servers start from their defaults (admin, the admin groups)
        st = sims["jira"].state()
        st["users"].append({"name": "svc-admin", "key": "K0", "displayName": "Service",
                            "emailAddress": "svc@example.com", "active": True})
        sims["jira"].put_state(st)
        st = sims["confluence"].state()
        st["context"] = CONFLUENCE_CONTEXT
        sims["confluence"].put_state(st)
        for p in PRODUCTS:  # the four start together: loading a spec takes seconds
            spec = prepare_spec(p, work)
            ops[p] = Operations(spec)
            prisms[p] = proxy.Prism(exe, spec, sims[p].url, os.path.join(work, "prism-%s.log" % p))
        for p in PRODUCTS:
            fronts[p] = proxy.Front(prisms[p].wait(), sims[p].url)
        log("contract: prism %s ready in %.1fs" % (proxy.PRISM_VERSION, time.time() - started))
        for d in deviations:
            try:
                check_evidence(d, ops)
            except (AssertionError, OSError, KeyError, IndexError, ValueError) as e:
                failed.append(str(e))
        try:
            scenario(sims, fronts, work, org)
            self_check(fronts)
        except Exception as e:  # the report below still shows what was seen
            failed.append("scenario: %s" % ((str(e) or repr(e)).splitlines() or [""])[0])
            import traceback
            traceback.print_exc()
        failed += report(fronts, ops, deviations)
        log("contract: %.0fs" % (time.time() - started))
    finally:
        for f in fronts.values():
            f.stop()
        for pr in prisms.values():
            pr.stop()
        for s in sims.values():
            s.stop()
        if os.environ.get("CONTRACT_KEEP"):
            with open(os.path.join(work, "records.json"), "w") as fh:
                json.dump({p: [dict(r, request_body=(r["request_body"] or b"").decode(errors="replace"),
                                    response_body=r["response_body"].decode(errors="replace"))
                               for r in f.records] for p, f in fronts.items()}, fh, indent=1)
            log("contract: work folder kept: " + work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    for f in failed:
        log("FAIL " + f)
    print("%d passed, %d failed" % (0 if failed else 1, 1 if failed else 0), flush=True)
    return 1 if failed else 0


def report(fronts, ops, deviations):
    """Prints every distinct violation with its operation; returns the failures."""
    failed, summary = [], []
    for p in PRODUCTS:
        recs = [r for r in fronts[p].records if r["step"] != "self-check"]
        names = sorted({ops[p].name(r["method"], r["target"]) for r in recs})
        log("\n%s: %d requests, %d operations:" % (p, len(recs), len(names)))
        for n in names:
            log("    " + n)
        groups = {}  # (operation, violation with item indices folded) -> [count, example, dev]
        for r in recs:
            op = ops[p].name(r["method"], r["target"])
            for v in r["violations"]:
                key = (op, fold(vtext(v)))
                g = groups.get(key)
                if not g:
                    g = groups[key] = [0, r, v, classify(p, op, v, deviations)]
                g[0] += 1
        # Prism cuts the header at 8 KiB: the violations it left out are in its log, by text
        # only; they are added to the operations whose header was cut (by then usually one)
        cut_ops = sorted({op for (op, text) in groups if CUT in text})
        if cut_ops:
            seen = {fold(vtext(v)) for r in fronts[p].records for v in r["violations"]}
            extra = {}
            for text in from_log(fronts[p].prism.log_path):
                ft = fold(text)
                if ft not in seen:
                    extra.setdefault(ft, [0, text])[0] += 1
            op = " or ".join(cut_ops)
            example = next(r for r in recs if any(CUT in v.get("message", "") for v in r["violations"]))
            for ft, (n, text) in extra.items():
                loc, _, msg = text.partition(" ")
                v = {"location": loc.split("."), "severity": "Error (from the log)", "message": msg}
                groups[(op, ft)] = [n, example, v, classify(p, cut_ops[0], v, deviations)]
            for key in [k for k in groups if CUT in k[1]]:
                del groups[key]
            log("  (Prism cut the violations header of %s; the rest were read from its log)" % op)
        total, kinds, new = 0, {}, 0
        for (op, text), (count, r, v, d) in sorted(groups.items()):
            total += count
            if d:
                d["used"] += count
                kinds[d["kind"]] = kinds.get(d["kind"], 0) + count
                mark = "%s: %s" % (d["kind"], d["id"])
            else:
                new += 1
                mark = "NOT DOCUMENTED"
            log("  VIOLATION %s  [%s] x%d" % (op, v.get("severity"), count))
            log("      %s" % text)
            log("      e.g. %s %s -> %d (step: %s)" % (r["method"], r["target"][:160], r["status"],
                                                      r["step"]))
            log("      %s" % mark)
        if new:
            failed.append("%s: %d undocumented violations" % (p, new))
        if not recs:
            failed.append("%s: no request went through the proxy" % p)
        detail = ", ".join("%d %s" % (n, k) for k, n in sorted(kinds.items()))
        if new:
            detail = ("%d NOT DOCUMENTED, " % sum(g[0] for g in groups.values() if not g[3])) + detail
        summary.append("%s %d violations%s" % (p, total, " (%s)" % detail if detail else ""))
    unused = [d["id"] for d in deviations if not d["used"]]
    if unused:
        log("\ndocumented deviations not seen in this run (fixed? then remove them from "
            "tests/contract/deviations.json): " + ", ".join(unused))
    opened = [d["id"] for d in deviations if d["used"] and d["kind"] == "open"]
    if opened:
        log("open defects still seen (reported, to be fixed): " + ", ".join(opened))
    log("\ncontract: " + ", ".join(summary))
    return failed


if __name__ == "__main__":
    sys.exit(main())
