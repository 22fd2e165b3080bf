#!/usr/bin/env python3
"""Half-open connections against a server, for the serve tests.

    halfopen.py PORT COUNT SOURCE_ADDRESS STATUS_FILE

Opens COUNT connections to 127.0.0.1:PORT from SOURCE_ADDRESS (any
127.x.y.z: the whole block is loopback), sends each a part of a request
line or of the headers (no credentials) and then nothing more. Writes
"opened N" to STATUS_FILE, then waits for the server to close them and
writes "closed N of M after S s (K within 1 s)" when all are closed or 240 s
have passed.
"""
import os
import select
import socket
import sys
import time

PARTS = [b"POST /hooks/okta HTT", b"GET /heal",
         b"POST /hooks/okta HTTP/1.1\r\nHost: x\r\nContent-Le"]


def write_status(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def main():
    port, count, source, status = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    socks = []
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(PARTS[i % len(PARTS)])
        socks.append(s)
    start = time.monotonic()
    write_status(status, "opened %d" % len(socks))
    open_socks = set(socks)
    early = 0
    while open_socks and time.monotonic() - start < 240:
        ready, _, _ = select.select(list(open_socks), [], [], 0.2)
        for s in ready:
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                open_socks.discard(s)
                s.close()
                if time.monotonic() - start < 1:
                    early += 1
    write_status(status, "closed %d of %d after %.1f s (%d within 1 s)" % (
        len(socks) - len(open_socks), len(socks), time.monotonic() - start, early))
    for s in open_socks:
        s.close()


if __name__ == "__main__":
    main()
