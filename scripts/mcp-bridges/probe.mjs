// Probes one Streamable HTTP endpoint with raw HTTP (node:http, so Host and
// Origin are ours to set) and prints one JSON object per question:
//   node probe.mjs NAME URL BRIDGE_PID
// (a) processes: stdio children (server-everything ... stdio) under BRIDGE_PID
//     with 0, then 3 open sessions, then 2 s after each was DELETEd;
// (b) origin/host: status of an `initialize` POST with Origin: http://evil.example,
//     and with Host: evil.example;
// (c) cut: tools/call trigger-long-running-operation (duration 3, steps 6,
//     progressToken) cut after 2 progress events, then GET with Last-Event-ID:
//     which progress events and result arrive after the resume, any repeated.
import http from "node:http";
import { execFileSync } from "node:child_process";

const [name, url, bridgePidArg] = process.argv.slice(2);
const bridgePid = Number(bridgePidArg);
const u = new URL(url);
const PV = "2025-11-25";

function request({ method, headers = {}, body, onEvent, cutWhen, timeoutMs = 10000 }) {
  return new Promise((resolve) => {
    const out = { status: 0, headers: {}, events: [], cut: false, error: null };
    const req = http.request(
      { host: u.hostname, port: u.port, path: u.pathname, method, headers, timeout: timeoutMs },
      (res) => {
        out.status = res.statusCode;
        out.headers = res.headers;
        let buf = "";
        let ev = { id: undefined, data: [] };
        res.setEncoding("utf8");
        res.on("data", (chunk) => {
          buf += chunk;
          let i;
          while ((i = buf.search(/\r?\n/)) >= 0) {
            const line = buf.slice(0, i);
            buf = buf.slice(i + (buf[i] === "\r" ? 2 : 1));
            if (line === "") {
              if (ev.data.length || ev.id !== undefined) {
                const e = { id: ev.id, data: ev.data.join("\n") };
                try { e.msg = e.data ? JSON.parse(e.data) : null; } catch { e.msg = null; }
                out.events.push(e);
                onEvent?.(e);
                if (cutWhen?.(out.events)) {
                  out.cut = true;
                  req.destroy();
                  resolve(out);
                  return;
                }
              }
              ev = { id: undefined, data: [] };
            } else if (line.startsWith("id:")) ev.id = line.slice(3).trimStart();
            else if (line.startsWith("data:")) ev.data.push(line.slice(5).replace(/^ /, ""));
          }
          // An application/json answer: one body, no events.
        });
        res.on("end", () => {
          if (!String(res.headers["content-type"] ?? "").includes("event-stream") && buf) {
            try { out.json = JSON.parse(buf); } catch { out.body = buf.slice(0, 300); }
          }
          resolve(out);
        });
        res.on("error", (e) => { out.error = String(e); resolve(out); });
      },
    );
    req.on("timeout", () => { out.error = "timeout"; req.destroy(); resolve(out); });
    req.on("error", (e) => { if (!out.cut) { out.error = out.error ?? String(e.code ?? e); resolve(out); } });
    if (body !== undefined) req.write(typeof body === "string" ? body : JSON.stringify(body));
    req.end();
  });
}

const base = {
  "content-type": "application/json",
  accept: "application/json, text/event-stream",
};
const initBody = (id = 1) => ({
  jsonrpc: "2.0", id, method: "initialize",
  params: { protocolVersion: PV, capabilities: {}, clientInfo: { name: "probe", version: "1" } },
});

async function openSession() {
  const r = await request({ method: "POST", headers: base, body: initBody() });
  const sid = r.headers["mcp-session-id"];
  if (!sid) throw new Error(`${name}: initialize gave ${r.status} without a session id`);
  const h = { ...base, "mcp-session-id": sid, "mcp-protocol-version": PV };
  const n = await request({ method: "POST", headers: h, body: { jsonrpc: "2.0", method: "notifications/initialized" } });
  return { sid, h, initializedStatus: n.status };
}

/** Processes below bridgePid whose command line runs server-everything stdio. */
function stdioChildren() {
  const rows = execFileSync("ps", ["-e", "-o", "pid=,ppid=,args="], { encoding: "utf8" })
    .split("\n").filter(Boolean).map((l) => {
      const m = l.trim().match(/^(\d+)\s+(\d+)\s+(.*)$/);
      return { pid: +m[1], ppid: +m[2], args: m[3] };
    });
  const kids = new Map();
  for (const r of rows) { if (!kids.has(r.ppid)) kids.set(r.ppid, []); kids.get(r.ppid).push(r); }
  const below = [];
  const walk = (p) => { for (const c of kids.get(p) ?? []) { below.push(c); walk(c.pid); } };
  walk(bridgePid);
  // Counted: the node processes running server-everything stdio. Not counted but
  // reported: ssechan's per-session guard (`ssechan __ssechan-exec-guard ...`,
  // the process-group keeper) and supergateway's `sh -c` wrapper.
  const stdio = below.filter((r) => /server-everything\/dist\/index\.js stdio$/.test(r.args));
  const server = stdio.filter((r) => !/__ssechan-exec-guard|^(\/bin\/)?sh /.test(r.args)).length;
  return { server, other: below.length - server };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function processes() {
  const before = stdioChildren();
  const sessions = [];
  for (let i = 0; i < 3; i++) sessions.push(await openSession());
  const open = stdioChildren();
  const del = [];
  for (const s of sessions) del.push((await request({ method: "DELETE", headers: s.h })).status);
  await sleep(2000);
  const after = stdioChildren();
  return { stdio_children: { before, with_3_sessions: open, two_s_after_delete: after }, delete_status: del };
}

async function originHost() {
  const evilOrigin = await request({ method: "POST", headers: { ...base, origin: "http://evil.example" }, body: initBody() });
  const evilHost = await request({ method: "POST", headers: { ...base, host: "evil.example" }, body: initBody() });
  const evilHostPort = await request({ method: "POST", headers: { ...base, host: `evil.example:${u.port}` }, body: initBody() });
  const goodOrigin = await request({ method: "POST", headers: { ...base, origin: `http://${u.host}` }, body: initBody() });
  // What a browser asks before a cross-origin JSON POST: without an allowing
  // answer the page cannot send it at all (DNS rebinding needs no preflight).
  const preflight = await request({ method: "OPTIONS", headers: {
    origin: "http://evil.example", "access-control-request-method": "POST",
    "access-control-request-headers": "content-type,mcp-protocol-version,mcp-session-id" } });
  const s = (r) => ({ status: r.status, session: Boolean(r.headers["mcp-session-id"]), acao: r.headers["access-control-allow-origin"] ?? null, expose: r.headers["access-control-expose-headers"] ?? null, reason: r.json?.error?.message ?? r.body ?? null });
  for (const r of [evilOrigin, evilHost, evilHostPort, goodOrigin]) {
    const sid = r.headers["mcp-session-id"];
    if (sid) await request({ method: "DELETE", headers: { ...base, "mcp-session-id": sid, "mcp-protocol-version": PV } });
  }
  return { preflight_evil: { status: preflight.status, acao: preflight.headers["access-control-allow-origin"] ?? null, allow_headers: preflight.headers["access-control-allow-headers"] ?? null }, origin_evil: s(evilOrigin), host_evil: s(evilHost), host_evil_with_port: s(evilHostPort), origin_own: s(goodOrigin) };
}

const isProgress = (e) => e.msg?.method === "notifications/progress";
const isResult = (e, id) => e.msg && e.msg.id === id && ("result" in e.msg || "error" in e.msg);

async function uncut() {
  const s = await openSession();
  const r = await request({ method: "POST", headers: s.h, body: longCall(7, 6), cutWhen: (evs) => evs.some((e) => isResult(e, 7)) });
  await request({ method: "DELETE", headers: s.h });
  return { progress: r.events.filter(isProgress).map((e) => e.msg.params.progress), result: r.events.some((e) => isResult(e, 7)) };
}

const longCall = (id, steps) => ({
  jsonrpc: "2.0", id, method: "tools/call",
  params: { name: "trigger-long-running-operation", arguments: { duration: 3, steps }, _meta: { progressToken: "p1" } },
});

/** lateMs: resume at once (0) or that long after the cut (the call has ended);
 * busyCalls: that many `echo` calls in the same session before resuming. */
async function cut(steps = 6, lateMs = 0, busyCalls = 0) {
  const s = await openSession();
  const callId = 7;
  const call = longCall(callId, steps);
  const first = await request({
    method: "POST", headers: s.h, body: call,
    cutWhen: (evs) => evs.filter(isProgress).length >= 2,
  });
  const before = first.events.filter(isProgress).map((e) => e.msg.params.progress);
  const withId = first.events.filter((e) => e.id !== undefined);
  const lastId = withId.length ? withId[withId.length - 1].id : undefined;
  if (lateMs) await sleep(lateMs);
  let busyOk = 0;
  for (let i = 0; i < busyCalls; i++) {
    const r = await request({ method: "POST", headers: s.h, body: { jsonrpc: "2.0", id: 1000 + i, method: "tools/call", params: { name: "echo", arguments: { message: `b${i}` } } } });
    if (r.events.some((e) => isResult(e, 1000 + i)) || r.json?.id === 1000 + i) busyOk++;
  }
  const res = { steps, resume_after_ms: lateMs, ...(busyCalls ? { echo_calls_before_resume: busyCalls, echo_ok: busyOk } : {}), post_status: first.status, cut_after_progress: before, event_ids_seen: withId.length, last_event_id: lastId ?? null };
  if (lastId === undefined) {
    res.resume = "no event ids: nothing to resume from";
    // Does the answer show up anywhere? Open the GET stream and wait for it.
    const g = await request({ method: "GET", headers: { ...s.h, accept: "text/event-stream" }, timeoutMs: 6000, cutWhen: (evs) => evs.some((e) => isResult(e, callId)) });
    res.get_without_id = { status: g.status, progress: g.events.filter(isProgress).map((e) => e.msg.params.progress), result: g.events.some((e) => isResult(e, callId)), error: g.error };
  } else {
    const g = await request({
      method: "GET", headers: { ...s.h, accept: "text/event-stream", "last-event-id": lastId }, timeoutMs: 8000,
      cutWhen: (evs) => evs.some((e) => isResult(e, callId)),
    });
    const after = g.events.filter(isProgress).map((e) => e.msg.params.progress);
    const all = [...before, ...after];
    res.get_status = g.status;
    res.get_events = g.events.length; // every event the resume carried, any stream's
    res.resumed_progress = steps <= 6 ? after : { count: after.length, first: after[0] ?? null, last: after[after.length - 1] ?? null };
    res.result_after_resume = g.events.some((e) => isResult(e, callId));
    const seen = new Set(all);
    const lost = [];
    for (let p = 1; p <= steps; p++) if (!seen.has(p)) lost.push(p);
    res.lost = steps <= 6 ? lost : { count: lost.length, first: lost[0] ?? null, last: lost[lost.length - 1] ?? null };
    res.duplicated = all.filter((p, i) => all.indexOf(p) !== i);
    res.in_order = all.every((p, i) => i === 0 || p > all[i - 1]);
    res.get_error = g.error;
    if (g.status !== 200) res.get_body = g.json?.error?.message ?? g.body ?? null;
  }
  await request({ method: "DELETE", headers: s.h });
  return res;
}

const out = { name, url };
// PROBE_ONLY=overflow: only the last experiment (used against ssechan run with
// small --replay-bytes/--max-queue-bytes, to see what its bound does).
if (process.env.PROBE_ONLY === "overflow") {
  out.cut_overflow = await cut(3000, 8000);
  console.log(JSON.stringify(out, null, 1));
  process.exit(0);
}
// PROBE_ONLY=busy: the 6-step cut, but the session makes 520 `echo` calls
// (their streams' events) before it resumes the cut one.
if (process.env.PROBE_ONLY === "busy") {
  out.cut_busy = await cut(6, 0, 520);
  console.log(JSON.stringify(out, null, 1));
  process.exit(0);
}
out.processes = await processes();
out.origin_host = await originHost();
out.uncut = [];
for (let i = 0; i < 3; i++) out.uncut.push(await uncut());
out.cut = [];
for (let i = 0; i < 3; i++) out.cut.push(await cut());
// The call has ended when the client comes back: replay only.
out.cut_late = await cut(6, 4500);
// 3000 progress events (~170 bytes each, ~0.5 MB) on one stream, resumed after
// the call ended: past the replay bound of each.
out.cut_overflow = await cut(3000, 8000);
console.log(JSON.stringify(out, null, 1));
