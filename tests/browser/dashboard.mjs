// The dashboard page in headless Chromium against the real relay binary.
// Usage: node tests/browser/dashboard.mjs path/to/emberws
// Checks what a person would see: the connection state, live values per topic, the chart,
// a typed subscription pattern, and reconnection after the server goes away and comes back.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { WAIT, checks, fakeRelay, launchChromium, startRelay as startBinary, stopRelay } from './lib.mjs';

const binary = process.argv[2] ?? 'target/release/emberws';
const { check, finish } = checks('dashboard');
const startRelay = (listen, extra = []) => startBinary(binary, listen, extra);

// `emberws token NAME`: the token (first line) and its clients-file entry with these rules.
function makeClient(name, publish, subscribe) {
  const out = execFileSync(binary, ['token', name], { encoding: 'utf8' });
  const token = out.split('\n')[0];
  const hash = /token_sha256 = "([0-9a-f]{64})"/.exec(out)[1];
  const list = (v) => v.map((p) => JSON.stringify(p)).join(', ');
  return { token, entry: `[${name}]\ntoken_sha256 = "${hash}"\npublish = [${list(publish)}]\nsubscribe = [${list(subscribe)}]\n` };
}

function publisher(addr, token) {
  return new Promise((resolve, reject) => {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const ws = new WebSocket(`ws://${addr}/`, { headers });
    ws.on('open', () => resolve(ws));
    ws.on('error', reject);
  });
}

function publish(ws, topic, data) {
  ws.send(JSON.stringify({ type: 'publish', topic, data }));
}

const relay = await startRelay('127.0.0.1:0');
const addr = relay.addr;
let restarted = null;
const browser = await launchChromium();
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(`http://${addr}/`);

  // Nothing has published yet: the relay's own figures ($SYS, retained) make the page alive.
  await check('$SYS figures show on a fresh relay with no publisher, and not among the topics', async () => {
    const shown = (name) => `#sys:not([hidden]) [data-sys="${name}"]:not([hidden]) dd`;
    const version = await page.locator(shown('version')).textContent({ timeout: WAIT });
    if (!/^\d+\.\d+\.\d+/.test(version)) throw new Error(`version "${version}"`);
    const uptime = await page.locator(shown('uptime')).textContent({ timeout: WAIT });
    if (!/^\d+ (s|min)$/.test(uptime)) throw new Error(`uptime "${uptime}"`);
    const conns = await page.locator(shown('connections')).textContent({ timeout: WAIT });
    if (!/^\d+$/.test(conns)) throw new Error(`connections "${conns}"`);
    const rss = await page.locator(shown('rss')).textContent({ timeout: WAIT });
    if (!/^[\d.]+ (KiB|MiB)$/.test(rss)) throw new Error(`rss "${rss}"`);
    if (await page.locator('#topics tr').count()) throw new Error('$SYS topics in the topics table');
    // The figures are live: the next sample (sys_interval, 10 s by default) counts this page.
    await page.waitForFunction(() => Number(document.querySelector('[data-sys="connections"] dd').textContent) >= 1, null, { timeout: WAIT });
  });

  const pub = await publisher(addr);

  await check('the page connects and says so', async () => {
    await page.waitForFunction(() => /open/i.test(document.querySelector('#state')?.textContent ?? ''), null, { timeout: WAIT });
  });

  await check('a published number shows as the topic\'s latest value', async () => {
    // The page subscribes to # on open; publish until its subscription is in place.
    const deadline = Date.now() + WAIT;
    let value = 20;
    for (;;) {
      value += 0.5;
      publish(pub, 'sensors/temp', value);
      const shown = await page.locator('#topics [data-topic="sensors/temp"] .value').textContent({ timeout: 1000 }).catch(() => null);
      if (shown && shown.includes(String(value))) break;
      if (Date.now() > deadline) throw new Error(`value ${value} never shown (saw ${shown})`);
    }
  });

  await check('objects show and numeric fields are charted', async () => {
    for (let i = 0; i < 20; i++) publish(pub, 'sensors/env', { celsius: 20 + i, humidity: 40 + (i % 5) });
    await page.waitForFunction(() => /humidity/.test(document.querySelector('#topics [data-topic="sensors/env"] .value')?.textContent ?? ''), null, { timeout: WAIT });
    await page.waitForFunction(() => {
      const c = document.querySelector('#chart');
      if (!c || !c.width || !c.height) return false;
      const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      for (let i = 3; i < px.length; i += 4) if (px[i] !== 0) return true;
      return false;
    }, null, { timeout: WAIT });
  });

  await check('a typed pattern replaces the subscription', async () => {
    await page.fill('#pattern', 'other/+');
    await page.click('#subscribe');
    const deadline = Date.now() + WAIT;
    for (;;) {
      publish(pub, 'other/x', 'hello');
      const shown = await page.locator('#topics [data-topic="other/x"] .value').textContent({ timeout: 1000 }).catch(() => null);
      if (shown && shown.includes('hello')) break;
      if (Date.now() > deadline) throw new Error('other/x never shown');
    }
    const before = await page.locator('#topics [data-topic="sensors/temp"] .value').textContent().catch(() => null);
    publish(pub, 'sensors/temp', 99.25);
    publish(pub, 'other/x', 'after');
    await page.waitForFunction(() => /after/.test(document.querySelector('#topics [data-topic="other/x"] .value')?.textContent ?? ''), null, { timeout: WAIT });
    const after = await page.locator('#topics [data-topic="sensors/temp"] .value').textContent().catch(() => null);
    if (after && after.includes('99.25')) throw new Error(`unsubscribed topic still updated (${before} -> ${after})`);
  });

  pub.close();
  await check('the page notices the server going away', async () => {
    await stopRelay(relay);
    await page.waitForFunction(() => !/^\s*open/i.test(document.querySelector('#state')?.textContent ?? ''), null, { timeout: WAIT });
  });

  await check('and reconnects when it is back', async () => {
    restarted = await startRelay(addr);
    await page.waitForFunction(() => /^\s*open/i.test(document.querySelector('#state')?.textContent ?? ''), null, { timeout: 60_000 });
    const pub2 = await publisher(addr);
    const deadline = Date.now() + WAIT;
    for (;;) {
      publish(pub2, 'other/y', 'again');
      const shown = await page.locator('#topics [data-topic="other/y"] .value').textContent({ timeout: 1000 }).catch(() => null);
      if (shown && shown.includes('again')) break;
      if (Date.now() > deadline) throw new Error('no message after reconnecting');
    }
    pub2.close();
  });

  // The same page over https from the TLS listener (a certificate made for this test; the
  // browser context trusts it by ignoring certificate errors, for this check only).
  await check('over https the page connects with wss:// and shows published values', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'emberws-dash-'));
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
      '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
    const secure = await startRelay('127.0.0.1:0', ['--tls-listen', '127.0.0.1:0', '--tls-cert', cert, '--tls-key', key]);
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    try {
      const tlsPage = await context.newPage();
      const wsUrls = [];
      tlsPage.on('websocket', (ws) => wsUrls.push(ws.url()));
      await tlsPage.goto(`https://${secure.tlsAddr}/`);
      await tlsPage.waitForFunction(() => /open/i.test(document.querySelector('#state')?.textContent ?? ''), null, { timeout: WAIT });
      if (!wsUrls.some((u) => u.startsWith('wss://'))) throw new Error(`no wss:// connection: ${wsUrls}`);
      const pubTls = await publisher(secure.addr);
      const deadline = Date.now() + WAIT;
      let value = 1;
      for (;;) {
        value += 1;
        publish(pubTls, 'secure/value', value);
        const shown = await tlsPage.locator('#topics [data-topic="secure/value"] .value').textContent({ timeout: 1000 }).catch(() => null);
        if (shown && shown.includes(String(value))) break;
        if (Date.now() > deadline) throw new Error(`value never shown over https (saw ${shown})`);
      }
      pubTls.close();
    } finally {
      await context.close();
      await stopRelay(secure);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // A relay with a clients file on a public listener (loopback listeners need no token):
  // the page takes its token from the URL fragment and shows only what the token's rules
  // let it read.
  await check('with #token= the page connects and shows allowed topics only', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'emberws-dash-'));
    const dash = makeClient('dash', [], ['public/#']);
    const sensor = makeClient('sensor', ['#'], []);
    const clients = join(dir, 'clients.toml');
    writeFileSync(clients, dash.entry + sensor.entry);
    const guarded = await startRelay('0.0.0.0:0', ['--clients', clients]);
    guarded.addr = guarded.addr.replace('0.0.0.0', '127.0.0.1');
    const context = await browser.newContext();
    try {
      const refused = await context.newPage();
      await refused.goto(`http://${guarded.addr}/`);
      await refused.waitForFunction(() => /needs a token/.test(document.querySelector('#state')?.textContent ?? ''), null, { timeout: WAIT });
      await refused.close();
      const tokPage = await context.newPage();
      const wsUrls = [];
      tokPage.on('websocket', (ws) => wsUrls.push(ws.url()));
      await tokPage.goto(`http://${guarded.addr}/#token=${dash.token}`);
      await tokPage.waitForFunction(() => /^\s*open/i.test(document.querySelector('#state')?.textContent ?? ''), null, { timeout: WAIT });
      if (!wsUrls.some((u) => u.includes(`token=${dash.token}`))) throw new Error(`the WebSocket did not carry the token: ${wsUrls}`);
      if ((await tokPage.evaluate(() => location.hash)) !== '') throw new Error('the token stayed in the address bar');
      const pubSensor = await publisher(guarded.addr, sensor.token);
      const deadline = Date.now() + WAIT;
      let value = 1;
      for (;;) {
        value += 1;
        publish(pubSensor, 'private/secret', value);
        publish(pubSensor, 'public/temp', value);
        const shown = await tokPage.locator('#topics [data-topic="public/temp"] .value').textContent({ timeout: 1000 }).catch(() => null);
        if (shown && shown.includes(String(value))) break;
        if (Date.now() > deadline) throw new Error(`allowed value never shown (saw ${shown})`);
      }
      // private/secret was published before every public/temp that showed: had it been
      // delivered, it would be on the page by now.
      const leaked = await tokPage.locator('#topics [data-topic="private/secret"]').count();
      if (leaked !== 0) throw new Error('a topic outside the rules reached the page');
      pubSensor.close();
    } finally {
      await context.close();
      await stopRelay(guarded);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // A stand-in relay that sends chosen figures: each is formatted, an absent one is not shown.
  await check('the relay panel formats each $SYS figure and hides absent ones', async () => {
    const fake = await fakeRelay({
      '/': await (await fetch(`http://${addr}/`)).text(),
      '/emberws.js': await (await fetch(`http://${addr}/emberws.js`)).text(),
    });
    const context = await browser.newContext();
    try {
      const sysPage = await context.newPage();
      sysPage.on('pageerror', (e) => pageErrors.push(e.message));
      await sysPage.goto(`http://${fake.addr}/`);
      const conn = await fake.nextConnection();
      const sub = await conn.next((m) => m.type === 'subscribe' && m.topic === '$SYS/#');
      conn.send({ type: 'ack', id: sub.id });
      const figures = {
        version: '1.2.3', uptime: 3725, connections: 3, 'messages/in': 12.5, 'messages/out': 30,
        'bytes/in': 2048, 'bytes/out': 3154.1, dropped: 0, rss: 4218880, load: [0.52, 0.58, 0.59],
      };
      let seq = 0;
      for (const [name, data] of Object.entries(figures)) {
        conn.send({ type: 'message', topic: `$SYS/${name}`, data, id: `0a0b0c0d-${++seq}` });
      }
      const want = {
        version: '1.2.3', uptime: '1 h 2 min', connections: '3', 'messages/in': '12.5/s', 'messages/out': '30/s',
        'bytes/in': '2 KiB/s', 'bytes/out': '3.08 KiB/s', dropped: '0/s', rss: '4.02 MiB', load: '0.52 · 0.58 · 0.59',
      };
      await sysPage.waitForFunction(() => !document.querySelector('[data-sys="load"]').hidden, null, { timeout: WAIT });
      const got = await sysPage.evaluate(() => Object.fromEntries([...document.querySelectorAll('[data-sys]')]
        .map((el) => [el.dataset.sys, el.hidden ? null : el.querySelector('dd').textContent])));
      for (const [name, text] of Object.entries(want)) {
        if (got[name] !== text) throw new Error(`${name}: "${got[name]}", not "${text}"`);
      }
      if (got['memory/available'] !== null || got.temperature !== null) throw new Error(`absent figures shown: ${JSON.stringify(got)}`);
      conn.send({ type: 'message', topic: '$SYS/temperature', data: 45.3, id: `0a0b0c0d-${++seq}` });
      await sysPage.waitForFunction(() => document.querySelector('[data-sys="temperature"] dd').textContent === '45.3 °C', null, { timeout: WAIT });
    } finally {
      await context.close();
      fake.close();
    }
  });

  await check('no script errors on the page', async () => {
    if (pageErrors.length) throw new Error(pageErrors.join('; '));
  });
  await page.screenshot({ path: 'target/dashboard.png' }).catch(() => {});
} finally {
  await browser.close();
  if (restarted) await stopRelay(restarted);
  relay.kill('SIGKILL');
}
process.exit(finish() ? 1 : 0);
