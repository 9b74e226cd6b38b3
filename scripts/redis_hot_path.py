#!/usr/bin/env python3
"""redis-server's own CPU per round trip of the Redis store's hot path, on a
fixed workload, for one or more versions of src/server/redis/channels.lua
side by side (docs/performance.md, "Several instances").

Usage: scripts/redis_hot_path.py [--rounds N] [--runs R] LUA_FILE...
(e.g. `git show 7c0905d:src/server/redis/channels.lua > /tmp/old.lua`).

Each run starts a fresh redis-server on a free port in a temp dir, loads
the library, opens 50 channels, then pipes ROUNDS rounds of what 50
clients' echo round trips cost the store when batched: one script call of
50 POSTs, one of 50 sends, one report of 50 stream cursors and takes
(more reports than a real instance makes). The files are run in turn, R
times each; the figure is the least CPU (utime + stime of redis-server)
per round trip over the runs, the one least disturbed by other work on the
machine. Each run checks the state it leaves.

With --callgrind, redis-server runs under valgrind's callgrind and the
figure is instructions per round trip of the workload alone (counters
zeroed before it, dumped after): the same on a quiet or a busy machine,
so one run of 100 rounds tells two versions apart by less than 1%
(e.g. `--callgrind --runs 1 --rounds 100 OLD.lua NEW.lua`).
"""
import argparse
import glob
import os
import socket
import subprocess
import tempfile
import time

BOUNDS = "4096,16777216,4096,16777216,16384,262144,128,65536,16777216,268435456,67108864,19744"
N = 50
ME = "inst1"
MSG = "b0000060000000001520000002dfda4c93e6998abcdefghijklmnopqrstuvwxy"


def resp(*args):
    args = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def workload(rounds):
    head = ["FCALL", "lib", 0, "ssechan:"]
    cids = [f"bench-5b277eec9c33-{i}" for i in range(N)]
    setup = [resp("HSET", "ssechan:inst", ME, "99999999999999"), resp("SADD", "ssechan:pk", ME)]
    for i, c in enumerate(cids):
        setup.append(resp(*head, "batch", ME, 10**10, 0, BOUNDS, "attach", c, f"tok{i}", -1, 30000, 1))
    event = f'id: 1\ndata: "{MSG}"\n\n'
    out = []
    for r in range(rounds):
        a = [*head, "batch", ME, 10**10, 0, BOUNDS]
        for c in cids:
            a += ["post", c, r, f'"{MSG}"']
        out.append(resp(*a))
        a = [*head, "ops", ME, 10**10, 0, BOUNDS]
        for i, c in enumerate(cids):
            a += ["S", c, i + 1, r + 1, event]
        out.append(resp(*a))
        a = [*head, "report", ME, 10**10, 0, BOUNDS, "", N]
        for i, c in enumerate(cids):
            a += [c, i + 1, r + 1, (r + 1) * len(event)]
        a.append(N)
        for i, c in enumerate(cids):
            a += [c, i + 1, 1, len(MSG) + 2]
        out.append(resp(*a))
        if r % 100 == 99:
            out.append(resp("DEL", f"ssechan:i:{ME}"))
    return b"".join(setup), b"".join(out), cids[0]


def run(lua, setup, load, first, rounds, callgrind):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        grind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.%p"]
        server = subprocess.Popen(
            [*(grind if callgrind else []), "redis-server", "--port", str(port), "--bind",
             "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", d],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            cli = ["redis-cli", "-p", str(port)]
            for _ in range(400 if callgrind else 100):
                if subprocess.run([*cli, "ping"], capture_output=True).returncode == 0:
                    break
                time.sleep(0.05)
            code = open(lua).read()
            for k, v in {"__LIBRARY__": "lib", "__ENTRY_OVERHEAD__": "64",
                         "__REPLAY_OVERHEAD__": "48", "__CLOSED_OVERHEAD__": "128"}.items():
                code = code.replace(k, v)
            subprocess.run([*cli, "-x", "function", "load", "replace"], input=code.encode(),
                           check=True, stdout=subprocess.DEVNULL)
            subprocess.run([*cli, "--pipe"], input=setup, check=True, stdout=subprocess.DEVNULL)
            ticks = lambda: sum(int(x) for x in open(f"/proc/{server.pid}/stat").read().split()[13:15])
            control = lambda flag: subprocess.run(["callgrind_control", flag, str(server.pid)],
                                                  check=True, capture_output=True)
            if callgrind:
                control("-z")
            t0 = ticks()
            piped = subprocess.run([*cli, "--pipe"], input=load, capture_output=True)
            t1 = ticks()
            if callgrind:
                control("-d")
                dumps = sorted(glob.glob(f"{d}/cg.*"), key=os.path.getmtime)
                totals = [l for l in open(dumps[-1]) if l.startswith(("summary:", "totals:"))]
                instructions = int(totals[0].split()[1])
            state = subprocess.run([*cli, "hmget", f"ssechan:m:{first}", "ni", "ne", "sent"],
                                   capture_output=True, text=True).stdout.split()
        finally:
            server.terminate()
            server.wait()
    want = [str(rounds), str(rounds + 1), str(rounds)]
    said = piped.stdout.decode(errors="replace").strip()
    if "errors: 0" not in said or state != want:
        raise SystemExit(f"{lua}: the workload went wrong: {said} {state} (want {want})")
    if callgrind:
        return instructions / (rounds * N) / 1000
    return (t1 - t0) / os.sysconf("SC_CLK_TCK") / (rounds * N) * 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=1000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--callgrind", action="store_true",
                   help="count redis-server's instructions (valgrind) instead of its CPU time")
    p.add_argument("lua", nargs="+")
    a = p.parse_args()
    setup, load, first = workload(a.rounds)
    figures = {f: [] for f in a.lua}
    for _ in range(a.runs):
        for f in a.lua:
            figures[f].append(run(f, setup, load, first, a.rounds, a.callgrind))
    unit = "k instructions" if a.callgrind else "µs"
    for f, xs in figures.items():
        print(f"{f}: {min(xs):.1f} {unit} per round trip (runs: {', '.join(f'{x:.1f}' for x in xs)})")


if __name__ == "__main__":
    main()
