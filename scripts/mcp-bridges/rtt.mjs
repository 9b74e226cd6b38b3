// MCP round trips per second through one Streamable HTTP endpoint, with the
// official TypeScript SDK client (tests/mcp's pinned @modelcontextprotocol/sdk):
//   node rtt.mjs NAME URL [SESSIONS=10] [SECONDS=10] [WARMUP_SECONDS=2]
// SESSIONS sessions (each its own client and transport) call `echo` in a closed
// loop; every answer is checked (text === "Echo: " + the message sent). Calls
// finished during the warm-up are not counted. Prints one JSON line.
import os from "node:os";
import { fileURLToPath } from "node:url";

const SDK = fileURLToPath(new URL("../../tests/mcp/node_modules/@modelcontextprotocol/sdk/dist/esm", import.meta.url));
const { Client } = await import(`${SDK}/client/index.js`);
const { StreamableHTTPClientTransport } = await import(`${SDK}/client/streamableHttp.js`);

const [name, url, sessionsArg = "10", secondsArg = "10", warmupArg = "2"] = process.argv.slice(2);
const sessions = Number(sessionsArg);
const seconds = Number(secondsArg);
const warmup = Number(warmupArg);

const errors = {};
let phase = "setup";
const countError = (kind) => { const k = `${phase} ${kind}`; errors[k] = (errors[k] ?? 0) + 1; };

const clients = [];
for (let i = 0; i < sessions; i++) {
  const client = new Client({ name: `rtt-${i}`, version: "1" }, { capabilities: {} });
  const transport = new StreamableHTTPClientTransport(new URL(url));
  client.onerror = (e) => countError(`transport: ${String(e?.message ?? e).slice(0, 80)}`);
  await client.connect(transport);
  clients.push({ client, transport });
}
const sessionIds = new Set(clients.map((c) => c.transport.sessionId));

phase = "run";
const load0 = os.loadavg();
const t0 = performance.now();
const measureFrom = t0 + warmup * 1000;
const end = measureFrom + seconds * 1000;
let calls = 0;
let wrong = 0;
const lat = [];

async function loop(i, client) {
  for (let n = 0; ; n++) {
    const start = performance.now();
    if (start >= end) return;
    const message = `s${i}-${n}`;
    try {
      const r = await client.callTool({ name: "echo", arguments: { message } }, undefined, { timeout: 10000 });
      const done = performance.now();
      if (r?.content?.[0]?.text !== `Echo: ${message}`) wrong++;
      if (start >= measureFrom && done <= end) { calls++; lat.push(done - start); }
    } catch (e) {
      countError(`call: ${String(e?.message ?? e).slice(0, 80)}`);
    }
  }
}
await Promise.all(clients.map(({ client }, i) => loop(i, client)));
const load1 = os.loadavg();
phase = "teardown";

for (const { transport } of clients) {
  try { await transport.terminateSession(); } catch (e) { countError(`delete: ${String(e?.message ?? e).slice(0, 80)}`); }
  await transport.close();
}

lat.sort((a, b) => a - b);
const pct = (p) => (lat.length ? +lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))].toFixed(2) : null);
console.log(JSON.stringify({
  name, url, sessions, distinct_session_ids: sessionIds.size, seconds,
  calls, calls_per_s: +(calls / seconds).toFixed(1), wrong_answers: wrong,
  // Errors while calls ran (setup + run); teardown (DELETE, close) apart.
  errors: Object.entries(errors).filter(([k]) => !k.startsWith("teardown")).reduce((a, [, b]) => a + b, 0),
  error_kinds: errors,
  p50_ms: pct(50), p99_ms: pct(99),
  loadavg_1m_before: +load0[0].toFixed(2), loadavg_1m_after: +load1[0].toFixed(2),
}));
