#!/usr/bin/env python3
"""Resident memory of `ssechan serve` per idle stream, over plain HTTP (the
direct path) and HTTPS (hyper over rustls: HTTP/1.1 with one connection per
stream, and h2 with the streams multiplexed on few connections).

Usage: scripts/idle_memory.py [BINARY] [STREAMS] [--redis URL | --only KIND]
(run by scripts/perf.sh tls, cluster and compare). With --redis: plain HTTP
on a `serve --redis` instance, and Redis's own memory per channel (INFO
memory). With --only: one of plain, https, h2. Each result line ends with
the bytes per stream.
"""
import asyncio
import os
import resource
import ssl
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/ssechan"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
REDIS = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--redis" else None
ONLY = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--only" else None
# A socket per stream here, and one in the server.
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
H2_STREAMS = min(N, 300)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))


def start(args):
    p = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--keep-alive", "30s", *args],
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    assert "listening on" in line, line
    return p, int(line.rsplit(":", 1)[1].split("/")[0])


async def h1_streams(port, tls):
    ctx = None
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    sem = asyncio.Semaphore(50)

    async def one(i):
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            w.write(f"GET /sse?sseClientId=idle-{i} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    "Accept: text/event-stream\r\n\r\n".encode())
            await r.readuntil(b"retry: 1000\n")
            return w

    return await asyncio.gather(*(one(i) for i in range(N)))


def redis_used_memory():
    port = REDIS.rsplit(":", 1)[1].split("/")[0]
    out = subprocess.run(["redis-cli", "-p", port, "info", "memory"], check=True,
                         capture_output=True, text=True).stdout
    return next(int(l.split(":")[1]) for l in out.splitlines() if l.startswith("used_memory:"))


def measure(name, args, open_streams, n=None):
    n = n or N
    server, port = start(args)
    time.sleep(0.5)
    before = rss_kib(server.pid)
    redis_before = redis_used_memory() if REDIS else 0
    holder = open_streams(port)
    time.sleep(2)
    after = rss_kib(server.pid)
    print(f"{name:<24} idle {before:>7} KiB, with {n} streams {after:>7} KiB: "
          f"{(after - before) / n:.1f} KiB per stream, {(after - before) * 1024 // n} B", flush=True)
    if REDIS:
        grown = redis_used_memory() - redis_before
        print(f"{'redis-server':<24} used_memory grew {grown // 1024} KiB: "
              f"{grown / n / 1024:.1f} KiB per channel", flush=True)
    holder()
    server.terminate()
    server.wait()


def with_asyncio(tls):
    def open_streams(port):
        loop = asyncio.new_event_loop()
        writers = loop.run_until_complete(h1_streams(port, tls))

        def close():
            for w in writers:
                w.close()
            loop.close()
        return close
    return open_streams


def with_curl_h2(port):
    # curl multiplexes its parallel transfers (300 at most) over h2.
    urls = [f"https://127.0.0.1:{port}/sse?sseClientId=idle-{i}" for i in range(H2_STREAMS)]
    cfg = tempfile.NamedTemporaryFile("w", suffix=".curl", delete=False)
    cfg.write("".join(f'url = "{u}"\noutput = "/dev/null"\n' for u in urls))
    cfg.close()
    p = subprocess.Popen(["curl", "-sk", "--no-progress-meter", "--http2", "-Z", "--parallel-max",
                          str(H2_STREAMS), "-K", cfg.name])
    time.sleep(5)

    def close():
        p.terminate()
        p.wait()
        os.unlink(cfg.name)
    return close


def main():
    if REDIS:
        measure("http, HTTP/1.1, --redis", ["--redis", REDIS], with_asyncio(False))
        return
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = f"{tmp}/cert.pem", f"{tmp}/key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "1", "-keyout", key, "-out", cert, "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       check=True, capture_output=True)
        tls = ["--tls-cert", cert, "--tls-key", key]
        if ONLY in (None, "plain"):
            measure("http, HTTP/1.1", [], with_asyncio(False))
        if ONLY in (None, "https"):
            measure("https, HTTP/1.1", tls, with_asyncio(True))
        if ONLY in (None, "h2"):
            measure("https, h2 (curl -Z)", tls, with_curl_h2, H2_STREAMS)


main()
