// What the browser tests share: the real relay binary started and stopped by PID, WebSocket
// peers in node, a scripted stand-in relay, and checks that each report their own result.
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { chromium } from 'playwright-core';
import WebSocket, { WebSocketServer } from 'ws';

export const WAIT = 30_000;
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Starts `binary --listen ADDR ...` and resolves once it logs its listening address.
export function startRelay(binary, listen, extra = []) {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, ['--listen', listen, ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`relay did not start: ${seen}`)), WAIT);
    child.stderr.on('data', (chunk) => {
      seen += chunk;
      child.log = seen;
      const m = /listening on ws:\/\/(\S+)/.exec(seen);
      const tls = /listening on wss:\/\/(\S+)/.exec(seen);
      if (m && !child.addr && (!extra.includes('--tls-listen') || tls)) {
        child.addr = m[1];
        child.tlsAddr = tls?.[1];
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`relay exited with ${code ?? signal}: ${seen.trim()}`));
    });
  });
}

// Sends `signal` to the relay and resolves when it has exited.
export function stopRelay(child, signal = 'SIGTERM') {
  return new Promise((resolve) => {
    child.removeAllListeners('exit');
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.on('exit', resolve);
    child.kill(signal);
  });
}

// A list of received JSON messages that a test can wait on.
class Inbox {
  constructor() {
    this.items = [];
    this.waiters = [];
    this.closed = false;
  }

  push(item) {
    this.items.push(item);
    this.wake();
  }

  wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  // The first message (taken out of the inbox) for which `pred` holds.
  async next(pred = () => true, timeout = WAIT, what = 'a message') {
    const deadline = Date.now() + timeout;
    for (;;) {
      const i = this.items.findIndex(pred);
      if (i >= 0) return this.items.splice(i, 1)[0];
      if (this.closed) throw new Error(`connection closed while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${timeout} ms`);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
  }
}

// A WebSocket client in node (the ws package) speaking the relay protocol.
export class Peer {
  static connect(addr, token) {
    return new Promise((resolve, reject) => {
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      const ws = new WebSocket(`ws://${addr}/`, { headers });
      const peer = new Peer(ws);
      ws.on('open', () => resolve(peer));
      ws.on('error', reject);
    });
  }

  constructor(ws) {
    this.ws = ws;
    this.inbox = new Inbox();
    ws.on('message', (data) => {
      try { this.inbox.push(JSON.parse(data)); } catch { /* not JSON */ }
    });
    ws.on('close', () => { this.inbox.closed = true; this.inbox.wake(); });
    ws.on('error', () => {});
  }

  send(obj) {
    this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  }

  next(pred, timeout, what) {
    return this.inbox.next(pred, timeout, what);
  }

  // Sends a request with this id and waits for its ack (an error answer throws).
  async request(obj, timeout = WAIT) {
    this.send(obj);
    const m = await this.next((x) => (x.type === 'ack' || x.type === 'error') && x.id === obj.id, timeout, `the answer to ${obj.id}`);
    if (m.type === 'error') throw new Error(`refused: ${m.reason}`);
    return m;
  }

  close() {
    this.ws.terminate();
  }
}

// A stand-in relay for what a test must script exactly (ids, replays, gaps): an HTTP server
// with fixed files (path → body) and a WebSocket endpoint whose connections the test drives.
// It answers pings itself.
export async function fakeRelay(files) {
  const http = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    const body = files[path];
    if (body === undefined) {
      res.writeHead(404);
      res.end();
      return;
    }
    res.writeHead(200, { 'content-type': path.endsWith('.js') ? 'text/javascript' : 'text/html' });
    res.end(body);
  });
  const wss = new WebSocketServer({ server: http });
  const conns = new Inbox();
  wss.on('connection', (ws, req) => {
    const conn = new Peer(ws);
    conn.url = req.url;
    ws.on('message', (data) => {
      if (/"type":"ping"/.test(String(data))) ws.send('{"type":"pong"}');
    });
    conns.push(conn);
  });
  await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve));
  return {
    addr: `127.0.0.1:${http.address().port}`,
    nextConnection: (timeout = WAIT) => conns.next(() => true, timeout, 'a connection'),
    close: () => {
      for (const c of wss.clients) c.terminate();
      wss.close();
      http.close();
    },
  };
}

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

// Runs named checks one after the other; a failing check is reported and the next one runs.
export function checks(label) {
  let passed = 0;
  let failed = 0;
  return {
    async check(name, fn) {
      try {
        await fn();
        passed += 1;
        console.log(`ok   ${name}`);
      } catch (e) {
        failed += 1;
        console.log(`FAIL ${name}: ${e.message}`);
      }
    },
    finish() {
      console.log(`${label}: ${passed} passed, ${failed} failed`);
      return failed;
    },
  };
}

// A publisher that counts 1..total on `topic` through restarts of the relay at `addr`:
// stop-and-wait, so a number is published again only if its ack never came, and it connects
// again when the relay goes away. `published`: the last number acknowledged.
export class Counter {
  constructor(addr, total, topic = 'count/n') {
    Object.assign(this, { addr, total, topic, published: 0, done: false, running: null });
  }

  start() {
    this.running = this.#run();
    return this;
  }

  async stop() {
    this.done = true;
    await this.running;
  }

  async #run() {
    let n = 1;
    while (n <= this.total && !this.done) {
      let p;
      try { p = await Peer.connect(this.addr); } catch { await sleep(50); continue; }
      try {
        for (; n <= this.total && !this.done; n++) {
          await p.request({ type: 'publish', topic: this.topic, data: n, id: n }, 10_000);
          this.published = n;
          await sleep(10);
        }
      } catch { /* the relay went away: n again on the next connection */ }
      p.close();
    }
  }
}
