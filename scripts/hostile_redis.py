#!/usr/bin/env python3
"""A hostile peer filling a server's out-of-order and closed-id memory.

For each of IDS client ids (PARALLEL at a time): hold a stream, POST
messageId 2, 4, 6, ... with bodies of BODY bytes (each out of order: 0 never
comes) until one is refused, then DELETE the id. Prints the refusals by status and reason, and
with --redis PORT what Redis's used_memory (INFO memory) grew by, and the
budget the store keeps there (keys PREFIXheld, PREFIXclosedb).

  redis-server --port 6390 --save '' --appendonly no &
  ssechan serve --echo --redis redis://127.0.0.1:6390 \
      --max-incoming-total 32M --max-closed-ids-bytes 16M &
  scripts/hostile_redis.py http://127.0.0.1:8080/sse --redis 6390

Without --redis it runs against any server (the memory store: watch its RSS).
"""

import argparse
import collections
import http.client
import json
import socket
import sys
import threading
import urllib.parse


def redis_command(port, *args):
    """One command's reply over RESP: an int, a string, or None."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        req = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        s.sendall(req.encode())
        f = s.makefile("rb")
        line = f.readline().decode().rstrip("\r\n")
        kind, rest = line[0], line[1:]
        if kind == ":":
            return int(rest)
        if kind == "$":
            n = int(rest)
            return None if n < 0 else f.read(n + 2)[:-2].decode()
        if kind in "+-":
            return rest
        raise ValueError(f"unexpected reply {line!r}")


def used_memory(port):
    info = redis_command(port, "INFO", "memory")
    for line in info.splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":", 1)[1])
    raise ValueError("no used_memory in INFO memory")


def hold_stream(host, port, path, cid):
    """A GET of the channel left open (the response head read)."""
    s = socket.create_connection((host, port), timeout=10)
    q = urllib.parse.urlencode({"sseClientId": cid})
    s.sendall(f"GET {path}?{q} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError(f"stream of {cid} closed before its head")
        head += chunk
    status = head.split(b" ", 2)[1].decode()
    if status != "200":
        raise RuntimeError(f"GET for {cid} answered {status}: {head!r}")
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--ids", type=int, default=30)
    ap.add_argument("--parallel", type=int, default=1, help="ids at a time")
    ap.add_argument("--body", type=int, default=1 << 20, help="POST body bytes (default 1 MiB)")
    ap.add_argument("--max-posts", type=int, default=1000, help="per id, in case none is refused")
    ap.add_argument("--redis", type=int, metavar="PORT", help="report Redis's used_memory")
    ap.add_argument("--prefix", default="ssechan:")
    a = ap.parse_args()
    u = urllib.parse.urlsplit(a.url)
    host, port, path = u.hostname, u.port or 80, u.path or "/"
    body = json.dumps("x" * (a.body - 2)).encode()
    before = used_memory(a.redis) if a.redis else None
    peak = before
    refusals = collections.Counter()
    accepted = 0
    lock = threading.Lock()

    def one_id(n):
        nonlocal accepted, peak
        conn = http.client.HTTPConnection(host, port, timeout=30)

        def request(method, query, data=None):
            nonlocal conn
            for attempt in range(2):
                try:
                    headers = {"Content-Type": "text/plain;charset=UTF-8"} if data else {}
                    conn.request(method, f"{path}?{urllib.parse.urlencode(query)}", body=data, headers=headers)
                    r = conn.getresponse()
                    text = r.read().decode(errors="replace").strip()
                    if r.getheader("connection", "").lower() == "close":
                        conn.close()
                        conn = http.client.HTTPConnection(host, port, timeout=30)
                    return r.status, text
                except (ConnectionError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=30)
                    if attempt:
                        raise

        cid = f"hostile-{n}"
        stream = hold_stream(host, port, path, cid)
        for k in range(a.max_posts):
            status, text = request("POST", {"sseClientId": cid, "messageId": 2 * k + 2}, body)
            if status != 200:
                with lock:
                    refusals[(status, text)] += 1
                break
            with lock:
                accepted += 1
        if a.redis:
            m = used_memory(a.redis)
            with lock:
                peak = max(peak, m)
        status, text = request("DELETE", {"sseClientId": cid})
        if status not in (200, 204):
            with lock:
                refusals[("DELETE", status, text)] += 1
        stream.close()
        conn.close()

    def worker(first):
        for n in range(first, a.ids, a.parallel):
            one_id(n)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(a.parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{a.ids} ids, {accepted} out-of-order POSTs of {len(body)} bytes accepted")
    for what, n in sorted(refusals.items(), key=lambda kv: -kv[1]):
        print(f"  {n} refused: {what}")
    if a.redis:
        after = used_memory(a.redis)
        held = redis_command(a.redis, "GET", a.prefix + "held")
        closedb = redis_command(a.redis, "GET", a.prefix + "closedb")
        mib = 1 << 20
        print(f"redis used_memory: {before / mib:.1f} MiB before, {after / mib:.1f} MiB after "
              f"(+{(after - before) / mib:.1f} MiB; peak +{(peak - before) / mib:.1f} MiB)")
        print(f"store budget: held {held or 0} bytes, closed ids {closedb or 0} bytes")


if __name__ == "__main__":
    sys.exit(main())
