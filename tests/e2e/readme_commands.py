#!/usr/bin/env python3
"""Every command README.md shows, run for real (issue 7); run by test_readme.sh.

    readme_commands.py [--readme README.md]        extract, check the tables, run
    readme_commands.py --list [--readme FILE]       print the extracted commands

A command is
  * a line of a ```sh / ```shell / ```bash / ```console block (comments and a
    leading "$ " dropped, backslash continuations joined);
  * a line starting with "usersync " in an unlabelled ``` block (the command
    line reference; output samples start with "usersync:" or "usersync CMD:" and
    are not commands);
  * an inline `code span` that starts with usersync, ./build/usersync, sh,
    cmake, ctest, python3, man or systemctl followed by an argument.

Each one must be in exactly one of the tables below, keyed by its text with
whitespace collapsed:
  steps()   run here against the simulators (a generated Okta org, Jira,
            Confluence and Bitbucket), in order, each with its exit status and
            a pattern its output must match; LITERAL runs the README text
            itself, in a work directory laid out like a checkout (`usersync`
            on PATH, build/ the build tree of $USERSYNC, tests/ and scripts/
            of the sources, ./usersync.conf.lua for the simulators). A command
            too slow for every run (the 10,000-user benchmark) runs scaled
            down (SCALED) unless USERSYNC_README_FULL=1;
  COVERED   run by CI or another test (named), e.g. the whole suite;
  FUTURE    announced but not a command of the binary yet: allowed only while
            `usersync NAME --help` says the command is unknown.
A README command in no table fails the test (so a new command or flag cannot
slip in untested), and so does a table entry the README no longer shows.
Inline `--flag` spans must be flags the binary's help mentions, and inline
`-DNAME=...` spans CMake options of the build.

Environment: USERSYNC (binary), SOURCE_DIR (repo root), PYTHON3.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

LITERAL = object()  # run the README text as it is

# README commands covered elsewhere: text -> where.
COVERED = {
    "sh tests/demo.sh": "tests/e2e/test_demo.sh runs tests/demo-run.sh (all of demo.sh after "
                        "install-deps and the build) and CI runs the demo itself",
    "sh tests/run.sh": "the whole suite: CI runs it (this test is part of it)",
    "sh tests/install-deps.sh": "first step of tests/run.sh and tests/demo.sh (CI)",
    "cmake -S . -B build && cmake --build build -j": "every build of the suite (tests/run.sh, CI) "
                                                     "is made this way",
}

# Announced in the README, not yet a command: text -> command name.
FUTURE = {}

# Shared by several steps.
BIN_RE = r"(?m)^usersync \d+\.\d+\.\d+"


def steps(ctx):
    """The run list: (README texts covered, command or LITERAL, exit status,
    pattern the output (stdout + stderr) must match). Run in this order."""
    login = ctx["login"]
    s = [
        (["./build/usersync --version"], LITERAL, 0, BIN_RE + r"\n  Lua 5\.4"),
        (["usersync --version"], LITERAL, 0, BIN_RE + r"\n  Lua 5\.4"),
        (["usersync --help"], LITERAL, 0, r"(?m)^usage: usersync .*COMMAND.*\n\ncommands:\n"),
    ]
    for name in ctx["commands"]:
        s.append((["usersync COMMAND --help"], f"usersync {name} --help", 0,
                  rf"(?m)^usage: usersync {name}\b"))
    s += [
        (["usersync check [--config-only]"], "usersync check --config-only", 0,
         r"config usersync\.conf\.lua: ok \(1 source, 3 targets, 1 sync entry\)"),
        (["usersync check [--config-only]", "usersync check"], "usersync check", 0,
         r"(?m)^target bitbucket \(bitbucket, http://127\.0\.0\.1:\d+\): ok$"),
        (["usersync plan [--out FILE] [--json]"], "usersync plan --json", 0, r'"syncs": ?\['),
        (["usersync plan"], LITERAL, 0, r"(?m)^summary: [1-9]\d* changes, 0 conflicts, 0 policy errors$"),
        (["usersync plan [--out FILE] [--json]"], "usersync plan --out plan.json", 0,
         r"plan saved to plan\.json; apply it with: usersync apply plan\.json"),
        (["usersync apply FILE"], "usersync apply plan.json", 0,
         r"(?m)^applied [1-9]\d* changes, 0 failed; run 1 "),
        (["usersync sync [--force]", "usersync sync"], "usersync sync", 0,
         r"(?m)^applied 0 changes, 0 failed; run 2 "),
        (["usersync sync --user LOGIN"], f"usersync sync --user {login}", 0,
         r'(?ms)sync "readme": source okta, 1 users? in scope.*^applied 0 changes, 0 failed; run 3 '),
        # The admin's questions (accounts, explain, policy tests, init), after
        # the first syncs: the user synced above is managed and explained.
        (["usersync accounts [--target T] [--unmanaged] [--json|--csv]", "usersync accounts",
          "usersync accounts --target jira"], "usersync accounts --target jira", 0,
         r"(?m)^jira \(jira, http://127\.0\.0\.1:\d+\): \d+ accounts, [1-9]\d* managed by usersync, \d+ left alone\n"
         r"  ACCOUNT +MANAGED +ACTIVE +OKTA USER +LINKED SINCE +WHY\n"),
        (["usersync accounts [--target T] [--unmanaged] [--json|--csv]"], "usersync accounts --unmanaged --csv", 0,
         r"\Atarget,account,display_name,email,active,managed,sync,okta_id,okta_login,linked_since,created_by_us,why,reason\n"),
        (["usersync explain USER [--target T]", "usersync explain",
          "usersync explain ann.lee@example.com --target jira"], f"usersync explain {login} --target jira", 0,
         r"(?m)^    linked: account \S+ since \S+ \(created by usersync\)\n(.*\n)*    plan:\n      nothing to change$"),
        (["usersync plan --user"], f"usersync plan --user {login}", 0,
         r'sync "readme": source okta, 1 users? in scope'),
        (["usersync test FILE...", "usersync test"], "usersync test scripts/examples/tests/policy-no-contractors_test.lua",
         0, r"(?m)^ok 1 - .*\n(.*\n)*1\.\.\d+\n\d+ passed, 0 failed$"),
        (["usersync test scripts/examples/tests/*_test.lua"], LITERAL, 0, r"(?m)^1\.\.(\d+)\n\1 passed, 0 failed$"),
        (["usersync test --record FIXTURE.json LOGIN...",
          "usersync test --record okta-users.json ann.lee@example.com bob.stone@example.com"],
         f"usersync test --record okta-users.json {login} && grep -c test-token okta-users.json", 1,
         r"recorded 1 user and \d+ groups? from okta into okta-users\.json.*\n0$"),
        (["usersync init", "usersync init --okta-url https://acme.okta.com --app-id 0oa1b2c3d4 --jira https://jira.acme.com"],
         "JIRA_TOKEN=test-token-jira usersync init -c init.conf.lua --okta-url https://acme.okta.com"
         " --app-id 0oa1b2c3d4 --jira https://jira.acme.com --config-only", 0,
         r"(?m)^wrote init\.conf\.lua; its secrets come from OKTA_API_TOKEN, JIRA_TOKEN\. Checking it:\n"
         r"config init\.conf\.lua: ok \(1 source, 1 target, 1 sync entry\)$"),
        # More than limits.max_deprovision leave the app: the safety stop, then --force.
        ([], ctx["leave"], 0, ""),
        (["usersync plan"], LITERAL, 3, r"stopped by a safety limit; nothing destructive was applied"),
        (["usersync plan [--out FILE] [--json]"], "usersync plan --out leave.json", 3,
         r"(?m)^  \S+ \S+: .*deactivate.*\n(.*\n)*plan saved to leave\.json"),
        (["usersync sync [--force]"], "usersync sync --force", 0,
         r"(?m)^applied [1-9]\d* changes, 0 failed; run 4 "),
        (["usersync history [--sync NAME]", "usersync history"], "usersync history", 0,
         r"(?m)^4 +\S+ +readme +manual .*\n(.*\n)*1 +\S+ +readme +manual "),
        (["usersync history [--sync NAME]"], "usersync history --sync readme", 0, r"(?m)^1 +\S+ +readme +manual "),
        (["usersync show RUN"], "usersync show 1", 0, r"create_user"),
        (["usersync run [--dry-run] SCRIPT.lua [ARGS]"], "usersync run --dry-run dry.lua", 0,
         r"(?m)^dry-run: jira create_group readme-dry-run\b"),
        (["usersync run [--dry-run] SCRIPT.lua [ARGS]", "usersync run SCRIPT.lua [args...]"],
         "usersync run hello.lua one 'two words'", 0, r"(?m)^args: one\|two words\|accounts: [1-9]"),
        (["usersync run -c usersync.conf.lua --dry-run scripts/examples/migrate-rename.lua "
          r"jira '^(.+)@example\.com$' '$1' 100"], LITERAL, 0,
         r"(?m)^dry-run: jira rename_user .*\n(.*\n)*dry run: [1-9]\d* renamed, 0 skipped, 0 failed"),
        (["usersync show RUN"], "usersync show 4", 0, r"deactivate"),
        # The deactivations leave.json holds were applied by sync --force:
        # usersync's own doing, not a changed base; nothing is left to apply.
        (["usersync apply FILE"], "usersync apply leave.json", 0,
         r"(?m)^\d+ changes? of the plan already applied by usersync since it was made\n(.*\n)*applied 0 changes, 0 failed"),
        # --quiet: the summary line and nothing else.
        (["usersync -q sync"], LITERAL, 0, r"\Aapplied 0 changes, 0 failed; run \d+ [^\n]*\n\Z"),
        # one target of the entry: the run is recorded as covering it only
        (["usersync sync --target jira"], LITERAL, 0, r"(?m)^applied 0 changes, 0 failed; run \d+ "),
        ([], "usersync history --limit 1", 0, r"(?m)^\d+ +\S+ +readme +manual +full on jira "),
        # The daemon: started as the README shows (with a serve section on a
        # free port added to the config), healthy and ready, then SIGTERM ->
        # exit 0.
        (["usersync serve", "usersync serve -c usersync.conf.lua"],
         "sed '$ s/^}$/  serve = { listen = \"127.0.0.1:0\" },\\n}/' usersync.conf.lua > serve.conf.lua"
         " && cp serve.conf.lua usersync.conf.lua"
         " && { timeout 600 usersync serve -c usersync.conf.lua 2>serve.log & pid=$!; }"
         " && for i in $(seq 1200); do grep -q '\"serving\"' serve.log && break; sleep 0.1; done"
         " && port=$(sed -n 's/.*\"port\":\\([0-9]*\\).*/\\1/p' serve.log | head -1)"
         " && curl -fsS http://127.0.0.1:$port/healthz && curl -fsS http://127.0.0.1:$port/readyz"
         "; kill -TERM $pid; wait $pid; echo \"serve exited $?\"", 0,
         r"(?m)^ok\nready\n(.*\n)*serve exited 0$"),
        # Installed for real, staged under DESTDIR (the README's command would
        # write to /usr/local); then the installed man page.
        (["cmake --install build"], "DESTDIR=$PWD/dest cmake --install build", 0,
         r"(?m)^-- Installing: \S*/dest/\S*/share/man/man1/usersync\.1$"),
        (["cmake --install build --prefix DIR"], "cmake --install build --prefix $PWD/prefix", 0,
         r"(?m)^-- Installing: \S*/prefix/share/usersync/systemd/usersync-sync\.timer$"),
        (["man usersync"], 'MANPATH=$(dirname "$(dirname "$(find dest -name usersync.1)")") man -P cat usersync',
         0, r"(?m)^NAME\n +usersync - keep Jira, Confluence and Bitbucket"),
    ]
    # The benchmarks, with the README's `export` line before each. The 10,000
    # user sync takes minutes against the simulators: it runs scaled down
    # unless USERSYNC_README_FULL=1 (the same script, the same code path).
    env = "export SOURCE_DIR=$PWD PYTHON3=/usr/bin/python3 USERSYNC=$PWD/build/usersync"
    for text, pattern in [
        ("./build/usersync run tests/bench/sync_10k.lua 10000 500 20",
         r"(?m)^   writes in the re-sync: 0 \(jira 0, confluence 0, bitbucket 0\)$"),
        # Figures vary with the machine's load: the patterns check that each
        # benchmark ran through and measured, not what it measured.
        ("./build/usersync run tests/bench/policy_time.lua",
         r"(?m)^worst: \d+\.\d+ us/user \(budget 5 us/user\)"),
        ("./build/usersync run tests/bench/okta_read.lua", r"(?m)^requests: \d+"),
        ("./build/usersync run tests/bench/target_snapshot.lua", r"(?m)^jira +accounts 10001"),
        ("python3 tests/bench/fake_rps.py", r"(?m) 0 not 200\nrequests per second: \d+$"),
        ("./build/usersync run tests/bench/incremental_100k.lua 100000 10",
         r"(?m)^requests for the 10 changes \(everything but the polls\): \d+  -> budget < 50: met$"),
        ("./build/usersync run tests/bench/serve_load.lua 30",
         r"(?m)^  non-2xx: 0   socket errors: none\n(.*\n)*serve exit status after SIGTERM: 0$"),
        ("sh tests/bench/serve_load.sh 30", r"(?m)^  non-2xx: 0   socket errors: none$"),
        ("./build/usersync run tests/bench/scim_load.lua 30 16 2000 600",
         r"(?m)^  nothing lost: yes\n(.*\n)*serve exit status after SIGTERM: 0$"),
        ("./build/usersync run tests/bench/scim_push.lua 10000 200 20",
         r"(?m)^   Jira equal to the pulled sync's: yes; "),
    ]:
        command = text if ctx["full"] else SCALED.get(text, text)
        s.append(([text, env], env + "; " + command, 0, pattern))
    return s


# README commands too slow for every test run -> the scaled-down command run
# instead (USERSYNC_README_FULL=1 runs the README's).
SCALED = {
    "./build/usersync run tests/bench/sync_10k.lua 10000 500 20":
        "./build/usersync run tests/bench/sync_10k.lua 500 25 5",
    "./build/usersync run tests/bench/incremental_100k.lua 100000 10":
        "./build/usersync run tests/bench/incremental_100k.lua 3000 10",
    "./build/usersync run tests/bench/serve_load.lua 30": "./build/usersync run tests/bench/serve_load.lua 2",
    "sh tests/bench/serve_load.sh 30": "sh tests/bench/serve_load.sh 2",
    "./build/usersync run tests/bench/scim_load.lua 30 16 2000 600":
        "./build/usersync run tests/bench/scim_load.lua 2 4 100 200",
    "./build/usersync run tests/bench/scim_push.lua 10000 200 20":
        "./build/usersync run tests/bench/scim_push.lua 300 10 5",
}


# ---------------------------------------------------------------- extraction

CODE_START = re.compile(r"^(?:\./build/usersync|build/usersync|usersync|sh|cmake|ctest|python3|man|systemctl)\s+\S")
SHELL_LANGS = {"sh", "shell", "bash", "console"}


def strip_comment(line):
    """The line without a trailing `# comment` (a # after a blank, outside quotes)."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def norm(text):
    return " ".join(text.split())


def extract(markdown):
    """[(kind, text, line number)]: kind "block" or "inline" commands,
    "flag" for inline --flags and "cmake-option" for -DNAME=VALUE spans."""
    out = []
    fence, lang, pending, pending_line = None, "", "", 0
    for n, line in enumerate(markdown.splitlines(), 1):
        m = re.match(r"^(\s*)(```+|~~~+)\s*(\S*)", line)
        if m and (fence is None or m.group(2).startswith(fence)):
            if fence is None:
                fence, lang = m.group(2), m.group(3).lower()
            else:
                fence, lang = None, ""
            continue
        if fence is not None:
            if lang in SHELL_LANGS:
                text = line.strip()
                if lang == "console" and text.startswith("$ "):
                    text = text[2:]
                if not pending and (not text or text.startswith("#")):
                    continue
                if text.endswith("\\"):
                    if not pending:
                        pending_line = n
                    pending += text[:-1] + " "
                    continue
                if pending:
                    text, pending = pending + text, ""
                else:
                    pending_line = n
                text = strip_comment(text)
                if text:
                    out.append(("block", text, pending_line))
            elif lang == "" and line.startswith("usersync ") and not re.match(r"usersync \S+:", line):
                out.append(("block", strip_comment(line), n))
            continue
        for span in re.findall(r"``?([^`]+)``?", line):
            span = span.strip()
            if CODE_START.match(span):
                out.append(("inline", span, n))
            elif re.fullmatch(r"--?[a-z][a-z0-9-]*", span):
                out.append(("flag", span, n))
            elif re.fullmatch(r"-D[A-Z_][A-Z0-9_]*=\S+", span):
                out.append(("cmake-option", span, n))
    return out


# ------------------------------------------------------------- the world


class World:
    """Simulators of Okta (a generated org), Jira, Confluence and Bitbucket,
    and a work directory laid out like a checkout with a config. close()
    stops every simulator and removes the directory."""

    def __init__(self, usersync, source_dir, python):
        self.procs = []
        self.dir = tempfile.mkdtemp(prefix="readme.")
        self.python = python
        self.source_dir = source_dir
        self.usersync = usersync
        os.makedirs(os.path.join(self.dir, "bin"))
        os.symlink(usersync, os.path.join(self.dir, "bin", "usersync"))
        # build/ is the build tree that made the binary: ./build/usersync and
        # `cmake --install build` work as in a checkout.
        os.symlink(os.path.dirname(usersync), os.path.join(self.dir, "build"))
        for d in ("tests", "scripts"):
            os.symlink(os.path.join(source_dir, d), os.path.join(self.dir, d))

    def start(self, product, state=None):
        args = [self.python, os.path.join(self.source_dir, "tests/fakes/fake.py"), product, "--port", "0"]
        if state is not None:
            path = os.path.join(self.dir, product + ".state.json")
            with open(path, "w") as f:
                json.dump(state, f)
            args += ["--state", path]
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             start_new_session=True)
        self.procs.append(p)
        line = p.stdout.readline().strip()
        if not line.startswith("listening on http://"):
            raise RuntimeError(f"the {product} simulator did not start: {line!r}")
        return line[len("listening on "):]

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def run(self, command, timeout=900):
        env = dict(os.environ)
        env["PATH"] = os.path.join(self.dir, "bin") + os.pathsep + env.get("PATH", "")
        env.update(OKTA_API_TOKEN=TOKEN, ATLASSIAN_TOKEN=TOKEN)
        env.pop("USERSYNC_LOG_LEVEL", None)
        r = subprocess.run(["sh", "-c", command], cwd=self.dir, env=env, capture_output=True,
                           text=True, timeout=timeout)
        return r.returncode, r.stdout + r.stderr


TOKEN = "test-token"  # what the simulators accept
APP = "0oaReadmeApp"


def build_world(usersync, source_dir, python):
    w = World(usersync, source_dir, python)
    org = json.loads(subprocess.run(
        [python, os.path.join(source_dir, "tests/fakes/genorg.py"), "--users", "60", "--groups", "8",
         "--seed", "11", "--app-id", APP], check=True, capture_output=True, text=True).stdout)
    okta = w.start("okta", org)
    urls = {p: w.start(p) for p in ("jira", "bitbucket")}
    urls["confluence"] = w.start("confluence", {
        "users": [{"username": "admin", "userKey": "admin", "displayName": "Administrator",
                   "email": "admin@example.com", "disabled": False}],
        "groups": ["confluence-administrators", "confluence-users"],
        "members": {"confluence-administrators": ["admin"], "confluence-users": ["admin"]},
        "license": {"seats": 1000}})
    with open(os.path.join(w.dir, "usersync.conf.lua"), "w") as f:
        f.write(f"""-- test_readme: the README's commands run against this config.
return {{
  state = "usersync.db",
  sources = {{ okta = {{ type = "okta", url = "{okta}", token = env "OKTA_API_TOKEN", app_id = "{APP}" }} }},
  targets = {{
    jira       = {{ type = "jira",       url = "{urls['jira']}",       token = env "ATLASSIAN_TOKEN" }},
    confluence = {{ type = "confluence", url = "{urls['confluence']}", token = env "ATLASSIAN_TOKEN" }},
    bitbucket  = {{ type = "bitbucket",  url = "{urls['bitbucket']}",  token = env "ATLASSIAN_TOKEN" }},
  }},
  sync = {{
    {{ name = "readme", source = "okta", targets = {{ "jira", "confluence", "bitbucket" }},
      groups = {{ mode = "on_the_fly" }},
      defaults = {{ new_users = {{ "new-hires" }} }},
      limits = {{ max_deprovision = "10%" }} }},
  }},
}}
""")
    with open(os.path.join(w.dir, "hello.lua"), "w") as f:
        f.write('local n = 0\n'
                'assert(usersync.target("jira"):accounts(function(page) n = n + #page end))\n'
                'print("args: " .. table.concat(arg, "|") .. "|accounts: " .. n)\n')
    with open(os.path.join(w.dir, "dry.lua"), "w") as f:
        f.write('assert(usersync.dry_run, "expected --dry-run")\n'
                'assert(usersync.target("jira"):create_group("readme-dry-run"))\n')
    # Every user the app assigns directly leaves it, and every group
    # assignment but one: more deprovisions than limits.max_deprovision.
    leave = os.path.join(w.dir, "leave.py")
    with open(leave, "w") as f:
        f.write(f"""import json, urllib.request
url = "{okta}/__fake/state"
st = json.load(urllib.request.urlopen(url))
app = st["apps"]["{APP}"]
app["users"] = []
app["app_users"] = {{}}
app["groups"] = app["groups"][:1]
req = urllib.request.Request(url, data=json.dumps(st).encode(), method="PUT",
                             headers={{"Content-Type": "application/json"}})
urllib.request.urlopen(req).read()
print("okta: app assignments cut")
""")
    scope = [u for u in org["users"] if u["status"] == "ACTIVE" and u["id"] in in_app(org)]
    if not scope:
        raise RuntimeError("the generated org assigns no active user to the app")
    return w, {"login": scope[0]["profile"]["login"], "leave": f"{python} leave.py"}


def in_app(org):
    app = org["apps"][APP]
    ids = set(app["users"])
    for g in app["groups"]:
        ids.update(org["group_members"].get(g, []))
    return ids


def help_commands(usersync):
    """Command names from `usersync --help`'s commands list."""
    out = subprocess.run([usersync, "--help"], capture_output=True, text=True).stdout
    block = out.split("commands:", 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in block.splitlines() if line.strip()]


# ------------------------------------------------------------------ main


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--readme", default=os.path.join(os.environ.get("SOURCE_DIR", "."), "README.md"))
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--no-run", action="store_true", help="check the tables only, run nothing")
    a = ap.parse_args()
    with open(a.readme, encoding="utf-8") as f:
        found = extract(f.read())
    if a.list:
        for kind, text, n in found:
            print(f"{n}: {kind}: {text}")
        return 0

    usersync = os.path.abspath(os.environ["USERSYNC"])
    source_dir = os.path.abspath(os.environ["SOURCE_DIR"])
    python = os.environ.get("PYTHON3", "/usr/bin/python3")
    failed, passed = [], 0

    def check(ok, what):
        nonlocal passed
        if ok:
            passed += 1
        else:
            failed.append(what)
            print("FAILED: " + what, flush=True)

    helps = subprocess.run([usersync, "--help"], capture_output=True, text=True).stdout
    commands = help_commands(usersync)
    for c in commands:
        helps += subprocess.run([usersync, "help", c], capture_output=True, text=True).stdout
    cmake_text = ""
    for p in ("CMakeLists.txt", "tests/tests.cmake"):
        with open(os.path.join(source_dir, p)) as f:
            cmake_text += f.read()

    # Every README command has exactly one place; every table entry is shown.
    full = os.environ.get("USERSYNC_README_FULL") == "1"
    plan = steps({"login": "LOGIN", "leave": "", "commands": commands, "full": full})
    run_keys = {norm(t) for texts, *_ in plan for t in texts}
    shown = set()
    for kind, text, n in found:
        key = norm(text)
        if kind == "flag":
            check(re.search(r"(?<![\w-])" + re.escape(text) + r"(?![\w-])", helps) is not None,
                  f"README.md:{n}: `{text}` is a flag no usersync help mentions")
            continue
        if kind == "cmake-option":
            name = text[2:].split("=", 1)[0]
            check(re.search(r"option\(\s*" + name + r"\b", cmake_text) is not None,
                  f"README.md:{n}: `{text}` is not an option() of CMakeLists.txt or tests/tests.cmake")
            continue
        shown.add(key)
        places = [k for k, table in (("run", run_keys), ("covered", COVERED), ("future", FUTURE))
                  if key in {norm(x) for x in table}]
        check(len(places) == 1, f"README.md:{n}: `{text}` is "
              + ("neither run by this test nor listed as covered elsewhere (add it to steps() or COVERED "
                 "in tests/e2e/readme_commands.py)" if not places else "in more than one table: " + ", ".join(places)))
    for key in sorted(run_keys | {norm(k) for k in COVERED} | {norm(k) for k in FUTURE}):
        check(key in shown, f"`{key}` is in the tables but the README no longer shows it")
    for text, name in FUTURE.items():
        if norm(text) in shown:
            r = subprocess.run([usersync, name, "--help"], capture_output=True, text=True)
            check(r.returncode == 2 and "unknown command" in r.stderr,
                  f"`{text}` is listed as not yet a command, but the binary knows `{name}` now: run it in steps()")
    print(f"{len(found)} commands and flags found in {os.path.basename(a.readme)}", flush=True)
    if a.no_run:
        print(f"{passed} passed, {len(failed)} failed")
        return 1 if failed else 0

    w, ctx = build_world(usersync, source_dir, python)
    print(f"work directory: {w.dir}", flush=True)
    print("simulator pids: " + " ".join(str(p.pid) for p in w.procs), flush=True)
    ctx["commands"] = commands
    ctx["full"] = full
    try:
        for texts, command, status, pattern in steps(ctx):
            if command is LITERAL:
                command = texts[0]
            rc, out = w.run(command)
            ok = rc == status and re.search(pattern, out) is not None
            check(ok, f"`{command}` (README: {' / '.join(texts) or 'setup'}): exit {rc}, expected {status}"
                  + ("" if re.search(pattern, out) else f"; output does not match /{pattern}/"))
            if not ok:
                print("    " + out[-3000:].replace("\n", "\n    "))
            check(TOKEN not in out, f"`{command}`: the token appears in the output")
            if ok:
                print(f"ok: {command}", flush=True)
    finally:
        w.close()
    print(f"{passed} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
