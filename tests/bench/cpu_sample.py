#!/usr/bin/env python3
"""cpu_sample.py: runs a command and samples the CPU its usersync process has
used, so a benchmark can split that CPU by phase (sync_10k.lua: before the
first write reaches a simulator, and the apply after it).

    cpu_sample.py OUT [INTERVAL] -- COMMAND [ARG...]

Every INTERVAL seconds (default 0.05) it appends to OUT a line
"<epoch seconds> <CPU seconds>": the wall clock (time.time(), the clock of
the simulators' request stamps) and the utime + stime from /proc/PID/stat
of every process under COMMAND whose name is "usersync" (the command itself
or, under a wrapper such as strace or perf, its child). It exits with
COMMAND's exit status (128 + the signal when a signal ended it).
"""
import os
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def children(pid):
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return out


def cpu_of(pid):
    """(name, CPU seconds) of pid, or (None, 0) when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return None, 0.0
    name = st[st.index("(") + 1:st.rindex(")")]
    fields = st[st.rindex(")") + 2:].split()
    return name, (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def usersync_cpu(root):
    total, seen, todo = 0.0, False, [root]
    while todo:
        pid = todo.pop()
        name, cpu = cpu_of(pid)
        if name == "usersync":
            total += cpu
            seen = True
        todo.extend(children(pid))
    return total if seen else None


def main(argv):
    if "--" not in argv:
        sys.stderr.write(__doc__)
        return 2
    sep = argv.index("--")
    opts, cmd = argv[1:sep], argv[sep + 1:]
    out = opts[0]
    interval = float(opts[1]) if len(opts) > 1 else 0.05
    child = subprocess.Popen(cmd)
    with open(out, "w") as f:
        while child.poll() is None:
            cpu = usersync_cpu(child.pid)
            if cpu is not None:
                f.write("%.4f %.3f\n" % (time.time(), cpu))
                f.flush()
            time.sleep(interval)
    rc = child.wait()
    return 128 - rc if rc < 0 else rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
