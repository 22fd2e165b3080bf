#!/usr/bin/env python3
"""Generate a realistic Okta org as simulator state.

    python3 tests/fakes/genorg.py --users N --groups M [--seed S] [--app-id ID] [--out FILE]

Prints {"users","groups","group_members","apps","logs"} for `fake.py okta --state FILE`.
The same arguments always give byte-identical output (all timestamps are derived from the
seed, never from the clock). What it contains:
  * users with mixed statuses (mostly ACTIVE; STAGED, PROVISIONED, SUSPENDED, DEPROVISIONED,
    LOCKED_OUT, PASSWORD_EXPIRED, RECOVERY), non-ASCII names (Latin accents, Greek, Cyrillic,
    CJK; never 4-byte UTF-8, which Okta rejects), logins with "+" tags and mixed case,
    unique case-insensitively
  * groups: BUILT_IN "Everyone" (every user) and "Okta Administrators", a few APP_GROUPs
    (some imported from Active Directory), the rest OKTA_GROUPs; sizes are skewed (a few
    large groups, a long tail of small and empty ones)
  * one app (--app-id) assigned partly directly to users and partly through groups
  * no System Log events (the simulator writes them when the state changes)
User objects carry no _links: the simulator renders links for its own address.
"""

import argparse
import functools
import json
import random
import sys
import time
import unicodedata

B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

FIRST = ["Anna", "Ben", "Chloé", "Dmitri", "Élodie", "Fatima", "Günter", "Hana", "Ines",
         "Jürgen", "Kateřina", "Liam", "María", "Noël", "Øystein", "Paweł", "Quentin",
         "Renée", "Søren", "Tomás", "Ulrike", "Vincent", "Wojciech", "Xiomara", "Yusuf",
         "Zoë", "Björn", "Çağla", "José", "François", "Łukasz", "Ngọc", "Александр",
         "Ελένη", "太郎", "美咲", "Siobhán", "Ana-María", "Jean-Luc", "Mia", "Noah", "Olivia",
         "Lucas", "Emma", "Elias", "Sofia", "Leon", "Amélie", "Matteo", "Aoife"]
LAST = ["Smith", "Müller", "García", "Nguyễn", "O'Brien", "Øster", "Dvořák", "Kowalski",
        "Lefèvre", "Johansson", "Núñez", "Petrović", "Çelik", "Schäfer", "Ivanova",
        "Παπαδόπουλος", "Иванов", "山田", "佐藤", "Brown", "Wilson", "Taylor", "Anderson",
        "Thomas", "Martin", "Jackson", "Lee", "Walker", "Hall", "Young", "King", "Wright",
        "López", "Hill", "Scott", "Green", "Adams", "Baker", "Nelson", "Carter", "Mitchell",
        "Pérez", "Roberts", "Turner", "Phillips", "Campbell", "Parker", "Evans", "Edwards",
        "van der Berg", "de la Cruz", "Ødegård"]
DOMAINS = ["example.com", "Example.com", "corp.example.org", "EXAMPLE.COM", "sub.example.net"]
DEPTS = ["Engineering", "Sales", "Marketing", "Finance", "Support", "Legal", "HR", "Design",
         "Operations", "Research", "Ventes", "Entwicklung", "Produkt", "Données"]
TEAMS = ["platform", "mobile", "web", "data", "infra", "security", "qa", "emea", "apac",
         "amer", "contractors", "leads", "oncall", "interns", "alumni"]
TITLES = ["Engineer", "Senior Engineer", "Manager", "Director", "Analyst", "Designer",
          "Account Executive", "Support Specialist", None]
STATUSES = [("ACTIVE", 780), ("PROVISIONED", 50), ("STAGED", 30), ("SUSPENDED", 30),
            ("DEPROVISIONED", 70), ("LOCKED_OUT", 15), ("PASSWORD_EXPIRED", 15),
            ("RECOVERY", 10)]
BASE_T = 1546300800  # 2019-01-01T00:00:00Z
SPAN = 6 * 365 * 86400


def iso(t):
    """Okta timestamp with whole seconds, as real responses carry them."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))


TRANSLIT = str.maketrans({"ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "ß": "ss", "æ": "ae",
                          "Æ": "AE", "đ": "d", "Đ": "D", "ı": "i"})


@functools.lru_cache(maxsize=None)
def ascii_slug(s):
    n = unicodedata.normalize("NFKD", s.translate(TRANSLIT))
    out = "".join(c for c in n if c.isascii() and (c.isalnum() or c in "-'"))
    return out.replace("'", "")


class Gen:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.used_ids = set()

    def okta_id(self, prefix):
        r = self.rng
        while True:
            x = r.getrandbits(102)
            cs = []
            for _ in range(17):
                x, d = divmod(x, 62)
                cs.append(B62[d])
            i = prefix + "".join(cs)
            if i not in self.used_ids:
                self.used_ids.add(i)
                return i

    def ts(self, lo, hi):
        return lo + self.rng.randrange(max(1, hi - lo))


def pick_status(r):
    x = r.randrange(1000)
    for s, w in STATUSES:
        if x < w:
            return s
        x -= w
    return "ACTIVE"


def make_users(g, n):
    r = g.rng
    users = []
    logins = set()
    type_id = "oty" + "".join(r.choice(B62) for _ in range(17))
    for k in range(n):
        first = r.choice(FIRST)
        last = r.choice(LAST)
        fa, la = ascii_slug(first), ascii_slug(last).replace(" ", "")
        local = ("%s.%s" % (fa, la)) if fa and la else "user%d" % k
        if r.random() < 0.3:
            local = local.lower()
        if r.random() < 0.08:
            local += "+" + r.choice(["ops", "test", "sso", "admin", "ext"])
        dom = r.choice(DOMAINS)
        login = "%s@%s" % (local, dom)
        n2 = 1
        while login.lower() in logins:
            n2 += 1
            login = "%s%d@%s" % (local, n2, dom)
        logins.add(login.lower())
        email = login if r.random() < 0.9 else "%s@mail.%s" % (local.lower(), dom.lower())
        status = pick_status(r)
        created = g.ts(BASE_T, BASE_T + SPAN)
        changed = g.ts(created, BASE_T + SPAN + 86400)
        updated = max(changed, g.ts(created, BASE_T + SPAN + 86400))
        activated = None if status == "STAGED" else iso(created + r.randrange(3600))
        u = {
            "id": g.okta_id("00u"),
            "status": status,
            "created": iso(created),
            "activated": activated,
            "statusChanged": None if status == "STAGED" else iso(changed),
            "lastLogin": iso(g.ts(changed, BASE_T + SPAN + 86400))
            if status in ("ACTIVE", "LOCKED_OUT", "PASSWORD_EXPIRED", "RECOVERY") and r.random() < 0.9
            else None,
            "lastUpdated": iso(updated),
            "passwordChanged": iso(created + 60) if status not in ("STAGED", "PROVISIONED") else None,
            "type": {"id": type_id},
            "profile": {
                "firstName": first,
                "lastName": last,
                "mobilePhone": None if r.random() < 0.7 else "+1 555 %04d" % r.randrange(10000),
                "secondEmail": None,
                "login": login,
                "email": email,
                "displayName": "%s %s" % (first, last),
                "department": r.choice(DEPTS),
                "title": r.choice(TITLES),
                "employeeNumber": "%06d" % (k + 1),
            },
            "credentials": {
                "password": {},
                "emails": [{"value": email, "status": "VERIFIED", "type": "PRIMARY"}],
                "provider": {"type": "OKTA", "name": "OKTA"}
                if r.random() < 0.85 else {"type": "ACTIVE_DIRECTORY", "name": "corp.example.org"},
            },
        }
        if status in ("STAGED", "PROVISIONED", "DEPROVISIONED"):
            # no credential yet, or deleted by deactivation
            del u["credentials"]["password"]
        users.append(u)
    return users


def make_groups(g, m, users):
    r = g.rng
    groups = []
    members = {}
    n = len(users)
    uids = [u["id"] for u in users]

    def group(gtype, name, desc, created):
        gr = {"id": g.okta_id("00g"), "created": iso(created), "lastUpdated": iso(created),
              "lastMembershipUpdated": iso(g.ts(created, BASE_T + SPAN + 86400)),
              "objectClass": ["okta:user_group"], "type": gtype,
              "profile": {"name": name, "description": desc}}
        groups.append(gr)
        return gr

    if m >= 1:
        ev = group("BUILT_IN", "Everyone", "All users in your organization", BASE_T)
        members[ev["id"]] = list(uids)
    if m >= 2:
        adm = group("BUILT_IN", "Okta Administrators",
                    "Okta manages this group, which contains all administrators in your "
                    "organization.", BASE_T)
        members[adm["id"]] = r.sample(uids, min(n, 3))
    rest = max(0, m - len(groups))
    n_app = min(rest, max(1, rest // 10)) if rest >= 3 else 0
    names = set(x["profile"]["name"].lower() for x in groups)
    for k in range(rest):
        if k < n_app:
            gtype = "APP_GROUP"
        else:
            gtype = "OKTA_GROUP"
        while True:
            name = "%s-%s" % (r.choice(DEPTS), r.choice(TEAMS))
            if r.random() < 0.3:
                name = name.lower()
            if name.lower() in names:
                name = "%s %d" % (name, k)
            if name.lower() not in names:
                break
        names.add(name.lower())
        gr = group(gtype, name, r.choice(["", "Team %s" % name, None]) if gtype == "OKTA_GROUP"
                   else None, g.ts(BASE_T, BASE_T + SPAN))
        if gr["profile"]["description"] is None:  # real groups say "", never null
            gr["profile"]["description"] = ""
        if gtype == "APP_GROUP":
            if k % 2 == 0:  # imported from Active Directory
                gr["objectClass"] = ["okta:windows_security_principal"]
                sam = ascii_slug(name).replace("-", "_")[:20] or "grp%d" % k
                gr["profile"].update({
                    "dn": "CN=%s,OU=Groups,DC=corp,DC=example,DC=org" % sam,
                    "externalId": "".join(r.choice("0123456789abcdef") for _ in range(24)),
                    "samAccountName": sam,
                    "windowsDomainQualifiedName": "CORP\\%s" % sam})
            gr["source"] = {"id": "0oa" + "".join(r.choice(B62) for _ in range(17))}
        # skewed sizes: Zipf-like with a long tail of small and empty groups
        size = int(n * 0.4 / (k + 1) ** 0.9)
        if r.random() < 0.1:
            size = 0
        size = min(n, size + (r.randrange(3) if n else 0))
        members[gr["id"]] = r.sample(uids, size) if size else []
    return groups, members


def make_apps(g, app_id, users, groups, members):
    r = g.rng
    uids = [u["id"] for u in users if u["status"] != "DEPROVISIONED"]
    direct = r.sample(uids, len(uids) // 10) if uids else []
    cand = [x["id"] for x in groups if x["type"] != "BUILT_IN"]
    # small/medium groups make realistic app groups; include at most 4
    cand.sort(key=lambda gid: (len(members.get(gid, [])), gid))
    mid = cand[len(cand) // 3:]
    gsel = r.sample(mid, min(4, len(mid))) if mid else []
    # a few AppUser variants beside the SSO-only default (ACTIVE, syncState DISABLED, no
    # externalId): provisioned, out of sync, failed, suspended
    variants = [{"status": "PROVISIONED", "syncState": "SYNCHRONIZED"},
                {"status": "PROVISIONED", "syncState": "OUT_OF_SYNC"},
                {"status": "PROVISIONED", "syncState": "ERROR"},
                {"status": "SUSPENDED", "syncState": "SYNCHRONIZED"}]
    over = {}
    for k, uid in enumerate(sorted(direct)[: max(len(variants), len(direct) // 20)]):
        v = dict(variants[k % len(variants)])
        v["externalId"] = "ext-%06d" % r.randrange(1000000)
        over[uid] = v
    app = {"users": sorted(direct), "groups": gsel}
    if over:
        app["app_users"] = over
    return {app_id: app}


def generate(n_users, n_groups, seed=1, app_id="0oa1usersyncapp00001"):
    g = Gen(seed)
    users = make_users(g, n_users)
    groups, members = make_groups(g, n_groups, users)
    apps = make_apps(g, app_id, users, groups, members)
    return {"users": users, "groups": groups, "group_members": members, "apps": apps,
            "logs": []}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, required=True)
    ap.add_argument("--groups", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--app-id", default="0oa1usersyncapp00001")
    ap.add_argument("--out", help="write to this file instead of stdout")
    a = ap.parse_args(argv)
    if a.users < 0 or a.groups < 0:
        ap.error("--users and --groups must be >= 0")
    st = generate(a.users, a.groups, a.seed, a.app_id)
    data = json.dumps(st, ensure_ascii=False, separators=(",", ":"))
    if a.out:
        with open(a.out, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.write("\n")
    else:
        sys.stdout.write(data)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
