#!/usr/bin/env python3
# A real browser against `ssechan serve`: headless Chromium opens an
# EventSource (cross-origin, with credentials) to a page served from another
# port, POSTs three messages with fetch, is dropped and resumes, then gets
# a control close. Needs `apt-get install chromium`, `npm install
# playwright-core` in this folder, and `cargo build --release`. Not in CI:
# it needs a browser; run it by hand: python3 scripts/browser/check.py
import subprocess, json, sys, threading, time, os
HERE = os.path.dirname(os.path.abspath(__file__))
B = os.path.join(HERE, "..", "..", "target", "release", "ssechan")
srv = subprocess.Popen([B, "serve", "--listen", "127.0.0.1:18400", "--format", "json", "--keep-alive", "10s", "--allow-origin", "http://127.0.0.1:18401", "-v"],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
web = subprocess.Popen(["python3", "-m", "http.server", "18401", "--bind", "127.0.0.1"], cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(0.5)
pw = subprocess.Popen(["node", "run.mjs", "http://127.0.0.1:18401/page.html?sse=http://127.0.0.1:18400/sse"], cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
def send(o):
    srv.stdin.write(json.dumps(o) + "\n"); srv.stdin.flush()
events = []
def expect(kind, n=1):
    got = 0
    while got < n:
        line = srv.stdout.readline()
        if not line: raise SystemExit("serve ended")
        ev = json.loads(line); events.append(ev); print("serve:", line.strip())
        if ev["event"] == kind: got += 1
expect("listening"); expect("connect")
send({"data": "hello browser"})
expect("message", 3)
send({"client": "browser", "drop": True})
expect("suspend"); expect("resume")
send({"data": "after resume"})
time.sleep(0.5)
send({"client": "browser", "close": True})
expect("close")
out = pw.communicate(timeout=30)[0]
print(out)
srv.terminate(); web.terminate()
final = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
want = {"messages": ["hello browser", "after resume"], "ids": ["1", "2"], "posts": [200, 200, 200], "control": "close"}
bad = {k: final.get(k) for k, v in want.items() if final.get(k) != v}
if bad or final.get("opens") != 2:
    sys.exit(f"browser check FAILED: {bad or final}")
print("browser check passed: messages both ways, resume after a drop, control close")
