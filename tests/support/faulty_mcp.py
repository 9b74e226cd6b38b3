#!/usr/bin/env python3
"""A Streamable HTTP MCP server (session era) whose `echo` tool is wrong on
purpose, for `bench --mcp`'s counters (tests/mcp_bench.rs).

    faulty_mcp.py CORRUPT DUPLICATE

Call ids that are multiples of CORRUPT are answered with another text than
the message sent; ids that are multiples of DUPLICATE are answered twice:
once as they should be, and again on the stream that answers the next call,
before that call's own answer (a client stops reading a POST's stream at
its answer, as the server should close it there). 0 turns a fault off.
One session at a time.
Listens on 127.0.0.1 on a free port and prints `listening on PORT`.
Standard library only.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CORRUPT = int(sys.argv[1])
DUPLICATE = int(sys.argv[2])
SESSION = "faulty-session-1"
# The answer to send again on the next call's stream.
again = []
lock = threading.Lock()


def hits(every, n):
    return every > 0 and isinstance(n, int) and n % every == 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", kind="application/json", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        # No server-initiated stream: the specification's 405.
        self.answer(405, b"", "text/plain")

    def do_DELETE(self):
        self.answer(200, b"", "text/plain")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        try:
            msg = json.loads(self.rfile.read(length))
        except ValueError:
            self.answer(400, b'{"error": "not JSON"}')
            return
        method, rid = msg.get("method"), msg.get("id")
        if rid is None:
            self.answer(202)  # a notification
            return
        if method == "initialize":
            result = {
                "protocolVersion": msg["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "faulty", "version": "1"},
            }
            body = json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}).encode()
            self.answer(200, body, headers=[("Mcp-Session-Id", SESSION)])
            return
        if method != "tools/call":
            # server/discover among them: a session-era server.
            error = {"code": -32601, "message": f"no method {method}"}
            body = json.dumps({"jsonrpc": "2.0", "id": rid, "error": error}).encode()
            self.answer(400 if method == "server/discover" else 200, body)
            return
        text = str(msg["params"]["arguments"].get("message", ""))
        if hits(CORRUPT, rid):
            text = "not-" + text[::-1]
        reply = json.dumps(
            {"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": text}]}}
        )
        with lock:
            before = again[:]
            again.clear()
            if hits(DUPLICATE, rid):
                again.append(reply)
        if before:
            events = "".join(f"event: message\ndata: {m}\n\n" for m in before + [reply])
            self.answer(200, events.encode(), "text/event-stream")
        else:
            self.answer(200, reply.encode())


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()
