#!/usr/bin/env python3
"""Runs a command on a pseudo-terminal and answers its prompts, for tests of
interactive commands (usersync init).

    answer_prompts.py ANSWERS_FILE COMMAND [ARGS...]

Each line of ANSWERS_FILE is typed (with a newline) after the command prints
a prompt: output ending in ": " with no newline after it. When the answers
run out, end of input (Ctrl-D) is sent at the next prompt. Everything the
command wrote to the terminal is printed on stdout; the exit status is the
command's. The command is ended after 60 s without output (a hung prompt)."""
import os
import pty
import select
import sys


def main():
    with open(sys.argv[1]) as f:
        answers = f.read().splitlines()
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(sys.argv[2], sys.argv[2:])
    out = b""
    pending = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 60)
        if not ready:
            os.kill(pid, 9)
            break
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        out += data
        pending += data
        if pending.rstrip(b" ").endswith(b":") and pending.endswith(b": "):
            pending = b""
            if answers:
                os.write(fd, answers.pop(0).encode() + b"\n")
            else:
                os.write(fd, b"\x04")
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(out.decode("utf-8", "replace").replace("\r\n", "\n"))
    sys.stdout.flush()
    sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


if __name__ == "__main__":
    main()
