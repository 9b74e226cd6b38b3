// A stdio MCP server of the per-request era (revision 2026-07-28), for
// tests/mcp_serve.rs. No published server or SDK speaks that revision yet
// (the SDKs top out at 2025-11-25), so this one follows the
// specification's stdio binding by hand: every request carries its
// revision in `_meta`, `server/discover` answers the probe, progress goes
// by `_meta.progressToken`, `subscriptions/listen` streams notifications
// tagged with its subscription id, and `notifications/cancelled` stops a
// request (said on stderr, where the test reads it).

import { createInterface } from 'node:readline';

const REVISION = '2026-07-28';
const META = 'io.modelcontextprotocol/protocolVersion';
const SUB = 'io.modelcontextprotocol/subscriptionId';
const running = new Map(); // request id (JSON) -> timer to stop

const send = (m) => process.stdout.write(JSON.stringify({ jsonrpc: '2.0', ...m }) + '\n');
const result = (id, r) => send({ id, result: { resultType: 'complete', ...r } });
const error = (id, code, message, data) => send({ id, error: { code, message, data } });

function request(m) {
  const { id, method, params = {} } = m;
  const requested = params._meta?.[META];
  if (requested !== REVISION) {
    return error(id, -32022, 'Unsupported protocol version', { supported: [REVISION], requested });
  }
  switch (method) {
    case 'server/discover':
      return result(id, {
        supportedVersions: [REVISION],
        capabilities: { tools: { listChanged: true } },
        _meta: { 'io.modelcontextprotocol/serverInfo': { name: 'modern-test', version: '1.0.0' } },
      });
    case 'tools/list':
      return result(id, { tools: [{ name: 'echo', inputSchema: { type: 'object' } }, { name: 'slow', inputSchema: { type: 'object' } }] });
    case 'tools/call': {
      const args = params.arguments ?? {};
      if (params.name === 'echo') return result(id, { content: [{ type: 'text', text: `Echo: ${args.message}` }] });
      if (params.name !== 'slow') return error(id, -32602, `no tool ${params.name}`);
      const token = params._meta?.progressToken;
      let step = 0;
      const timer = setInterval(() => {
        step += 1;
        if (token !== undefined) {
          send({ method: 'notifications/progress', params: { progressToken: token, progress: step, total: args.steps } });
        }
        if (step >= args.steps) {
          clearInterval(timer);
          running.delete(JSON.stringify(id));
          result(id, { content: [{ type: 'text', text: `done after ${step} steps` }] });
        }
      }, args.every ?? 100);
      running.set(JSON.stringify(id), () => clearInterval(timer));
      return;
    }
    case 'subscriptions/listen': {
      send({ method: 'notifications/subscriptions/acknowledged', params: { _meta: { [SUB]: id }, notifications: { toolsListChanged: true } } });
      const timer = setTimeout(() => send({ method: 'notifications/tools/list_changed', params: { _meta: { [SUB]: id } } }), 50);
      running.set(JSON.stringify(id), () => clearTimeout(timer));
      return;
    }
    default:
      return error(id, -32601, 'Method not found');
  }
}

for await (const line of createInterface({ input: process.stdin })) {
  let m;
  try {
    m = JSON.parse(line);
  } catch {
    continue;
  }
  if (m.method === 'notifications/cancelled') {
    const key = JSON.stringify(m.params?.requestId);
    running.get(key)?.();
    running.delete(key);
    console.error(`cancelled ${key}`);
  } else if (m.method !== undefined && m.id !== undefined) {
    request(m);
  }
}
