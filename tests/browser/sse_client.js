'use strict';
// package:sse's browser client (lib/client/sse_client.dart), in plain
// JavaScript, so that the tests run the client ssechan must interoperate
// with in a real browser:
// - one EventSource with credentials on URL?sseClientId=ID, ID a v4 UUID;
// - every message event's data is a JSON-encoded string;
// - `event: control` + `data: close` closes the client for good; any other
//   control data is an error;
// - an error starts a 5 s timer (unless one runs); an open cancels it; if
//   it fires, the client closes with that error;
// - messages are POSTed to URL?sseClientId=ID&messageId=N, N counting from
//   0, body the JSON-encoded string, credentials included, all in flight at
//   once (package:sse allows 1000).
class SseClient {
  constructor(serverUrl, clientId) {
    this.clientId = clientId || SseClient.uuid();
    this.url = `${serverUrl}?sseClientId=${encodeURIComponent(this.clientId)}`;
    this.lastMessageId = -1;
    this.errorTimer = null;
    this.closed = false;
    this.onopen = () => {};
    this.onerror = () => {};
    this.onmessage = () => {};
    this.onclose = () => {};
    this.es = new EventSource(this.url, { withCredentials: true });
    this.es.addEventListener('open', () => {
      clearTimeout(this.errorTimer);
      this.errorTimer = null;
      this.onopen();
    });
    this.es.addEventListener('message', (e) => this.onmessage(JSON.parse(e.data), e.lastEventId));
    this.es.addEventListener('control', (e) => {
      if (e.data === 'close') this.close('control close');
      else throw new Error(`[${this.clientId}] Illegal Control Message "${e.data}"`);
    });
    this.es.addEventListener('error', () => {
      this.onerror();
      if (this.errorTimer === null) {
        this.errorTimer = setTimeout(() => this.close('error'), 5000);
      }
    });
  }

  static uuid() {
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  // Resolves with the POST's status (package:sse ignores it; tests don't).
  async send(message) {
    const url = `${this.url}&messageId=${++this.lastMessageId}`;
    try {
      const r = await fetch(url, { method: 'POST', body: JSON.stringify(message), credentials: 'include' });
      return r.status;
    } catch (err) {
      return 0;
    }
  }

  close(why = 'closed by the page') {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.errorTimer);
    this.es.close();
    this.onclose(why);
  }
}
