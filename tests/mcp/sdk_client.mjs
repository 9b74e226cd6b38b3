// The official TypeScript SDK as a client of `ssechan serve --mcp`, for
// tests/mcp_serve.rs. One JSON object per stdout line; the Rust test
// checks what it says.
//
//   node sdk_client.mjs sessions URL N
//     N concurrent sessions, each calling `echo` and `get-sum`; prints
//     {"sessions":[{session,echo,sum},...]}, waits for a line on stdin,
//     deletes every session (DELETE), closes the transports, and once every
//     GET stream has ended or failed prints {"deleted":N,"get_streams":
//     {"ended":E,"aborted":A},"errors":[...]}: a GET stream still open
//     when its transport closed is aborted (the SDK reports an AbortError);
//     errors are what the transports reported.
//   node sdk_client.mjs long URL
//     one `trigger-long-running-operation` (6 steps over 3 s) whose POST
//     stream this script cuts after two progress events; the SDK resumes
//     it with Last-Event-ID. Prints {"progress":[...],"result":...,
//     "resumes":[{lastEventId,status}],"cut":bool}.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { createInterface } from 'node:readline';

const [mode, url, arg] = process.argv.slice(2);
const print = (v) => process.stdout.write(JSON.stringify(v) + '\n');

async function connect(fetchFn, errors) {
  const transport = new StreamableHTTPClientTransport(new URL(url), fetchFn ? { fetch: fetchFn } : {});
  // Set before connect: the client chains its own handler after it.
  if (errors) transport.onerror = (e) => errors.push(String(e?.message ?? e));
  const client = new Client({ name: 'ssechan-test', version: '1.0.0' });
  await client.connect(transport);
  return { client, transport };
}

// A fetch that follows each GET stream's body: `settled` holds a promise
// per stream, resolved with 'ended' or 'aborted' (any error).
function followingGets(settled) {
  return async (input, init = {}) => {
    const res = await fetch(input, init);
    if ((init.method ?? 'GET').toUpperCase() !== 'GET' || !res.ok || !res.body) return res;
    const reader = res.body.getReader();
    let settle;
    settled.push(new Promise((resolve) => (settle = resolve)));
    const body = new ReadableStream({
      async pull(controller) {
        try {
          const { value, done } = await reader.read();
          if (done) {
            settle('ended');
            controller.close();
          } else {
            controller.enqueue(value);
          }
        } catch (e) {
          settle('aborted');
          controller.error(e);
        }
      },
      cancel(reason) {
        settle('aborted');
        return reader.cancel(reason);
      },
    });
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

async function sessions(n) {
  const errors = [];
  const settled = [];
  const all = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const { client, transport } = await connect(followingGets(settled), errors);
      const echo = await client.callTool({ name: 'echo', arguments: { message: `hello ${i}` } });
      const sum = await client.callTool({ name: 'get-sum', arguments: { a: i, b: 1000 } });
      return { i, client, transport, echo: echo.content[0].text, sum: sum.content[0].text };
    }),
  );
  print({
    sessions: all.map(({ i, transport, echo, sum }) => ({ i, session: transport.sessionId, echo, sum })),
  });
  const lines = createInterface({ input: process.stdin });
  for await (const _ of lines) break;
  await Promise.all(all.map(({ transport }) => transport.terminateSession()));
  await Promise.all(all.map(({ client }) => client.close()));
  const ends = await Promise.all(settled);
  const count = (what) => ends.filter((e) => e === what).length;
  // The SDK reports an aborted stream after the abort reached it.
  await new Promise((resolve) => setImmediate(resolve));
  print({ deleted: all.length, get_streams: { ended: count('ended'), aborted: count('aborted') }, errors });
}

// Passes whole events through until the n-th progress event, then cuts the
// connection (the error comes at the next read, after what was passed on).
function cutAfterProgress(body, n, onCut) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  let buffer = '';
  let seen = 0;
  let cut = false;
  return new ReadableStream({
    async pull(controller) {
      if (cut) {
        await reader.cancel();
        onCut();
        controller.error(new Error(`cut by the test after ${n} progress events`));
        return;
      }
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          controller.close();
          return;
        }
        buffer += decoder.decode(value, { stream: true });
        let end;
        let passed = false;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const event = buffer.slice(0, end + 2);
          buffer = buffer.slice(end + 2);
          controller.enqueue(encoder.encode(event));
          passed = true;
          if (event.includes('"notifications/progress"') && ++seen === n) {
            cut = true;
            return;
          }
        }
        if (passed) return;
      }
    },
  });
}

async function long() {
  let cut = false;
  let armed = true;
  const resumes = [];
  const fetchFn = async (input, init = {}) => {
    const res = await fetch(input, init);
    const headers = new Headers(init.headers);
    const method = (init.method ?? 'GET').toUpperCase();
    if (method === 'GET' && headers.get('last-event-id')) {
      resumes.push({ lastEventId: headers.get('last-event-id'), status: res.status });
    }
    let body;
    try {
      body = method === 'POST' && typeof init.body === 'string' ? JSON.parse(init.body) : undefined;
    } catch {
      body = undefined;
    }
    if (armed && body?.method === 'tools/call' && res.body) {
      armed = false;
      const stream = cutAfterProgress(res.body, 2, () => (cut = true));
      return new Response(stream, { status: res.status, statusText: res.statusText, headers: res.headers });
    }
    return res;
  };
  const { client, transport } = await connect(fetchFn);
  const progress = [];
  const result = await client.callTool(
    { name: 'trigger-long-running-operation', arguments: { duration: 3, steps: 6 } },
    undefined,
    { onprogress: (p) => progress.push(p.progress), timeout: 30000 },
  );
  print({ progress, result: result.content[0].text, resumes, cut, session: transport.sessionId });
  await transport.terminateSession();
  await client.close();
}

const modes = { sessions: () => sessions(Number(arg)), long };
if (!modes[mode]) {
  console.error(`usage: sdk_client.mjs (sessions URL N | long URL)`);
  process.exit(2);
}
modes[mode]().then(
  () => process.exit(0),
  (e) => {
    console.error(`sdk_client ${mode}: ${e?.stack ?? e}`);
    process.exit(1);
  },
);
