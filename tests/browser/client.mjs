// The browser client (/emberws.js) in headless Chromium against the real relay binary, and
// against a scripted stand-in relay where the test must choose ids, replays and gaps.
// Usage: node tests/browser/client.mjs path/to/emberws
//
// Each check starts the relays it stops or kills itself, so one failure does not hide the
// others. The resume check needs message ids, history and --state in the relay.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WAIT, Counter, Peer, checks, fakeRelay, launchChromium, sleep, startRelay, stopRelay } from './lib.mjs';

const binary = process.argv[2] ?? 'target/release/emberws';
const { check, finish } = checks('client');

// The test page: the client from the relay, and `make(name, url, options)` that creates a
// client and logs everything it reports into `clients[name].log`.
const PAGE = `<!doctype html><meta charset="utf-8"><title>client test</title>
<script src="/emberws.js"></script>
<script>
window.clients = {};
window.make = (name, url, options) => {
  const c = new Emberws(url, options);
  const log = c.log = { messages: [], states: [], closes: [], acks: [], errors: [], gaps: [], drops: [], pongs: [] };
  c.on('message', (m) => log.messages.push(m));
  c.on('state', (s) => log.states.push(s));
  c.on('close', (e) => log.closes.push(e));
  c.on('ack', (m, req) => log.acks.push({ m, req }));
  c.on('error', (m, req) => log.errors.push({ m, req }));
  c.on('gap', (g) => log.gaps.push(g));
  c.on('drop', (o) => log.drops.push(o));
  c.on('pong', (m) => log.pongs.push(m));
  clients[name] = c;
  return c.url;
};
// Resolves once client name has an ack for a subscribe (or unsubscribe) of pattern.
window.acked = (name, type, pattern) => clients[name].log.acks.some((a) => a.req && a.req.type === type && a.req.topic === pattern);
window.datas = (name, prefix) => clients[name].log.messages.filter((m) => m.topic.startsWith(prefix)).map((m) => m.data);
</script>`;

const relay = await startRelay(binary, '127.0.0.1:0');
const addr = relay.addr;
const others = new Set(); // relays a check started, stopped at the end if a check failed
const browser = await launchChromium();
const started = async (listen, extra) => {
  const r = await startRelay(binary, listen, extra);
  others.add(r);
  return r;
};

try {
  const page = await browser.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  const until = (fn, arg, timeout = WAIT) => page.waitForFunction(fn, arg, { timeout });

  await check('GET /emberws.js is JavaScript with a cache header and defines Emberws', async () => {
    const res = await fetch(`http://${addr}/emberws.js`);
    if (res.status !== 200) throw new Error(`status ${res.status}`);
    const type = res.headers.get('content-type');
    if (type !== 'text/javascript; charset=utf-8') throw new Error(`content-type ${type}`);
    const cache = res.headers.get('cache-control') ?? '';
    if (!/max-age=\d+/.test(cache)) throw new Error(`cache-control "${cache}"`);
    const body = await res.text();
    if (body.length > 16 * 1024) throw new Error(`${body.length} bytes: the client should stay small`);
    // The test page, written into a document the relay served (so it has the relay's origin,
    // and Chromium treats it as a local page allowed to reach local addresses).
    await page.goto(`http://${addr}/healthz`);
    await page.setContent(PAGE);
    if ((await page.evaluate(() => typeof Emberws)) !== 'function') throw new Error('no Emberws on the page');
  });

  await check('without a URL the client connects to ws://this host/ and reports connecting, then open', async () => {
    const url = await page.evaluate(() => make('a'));
    if (url !== `ws://${addr}/`) throw new Error(`url ${url}`);
    await until(() => clients.a.state === 'open');
    const states = await page.evaluate(() => clients.a.log.states);
    if (states.join() !== 'open') throw new Error(`state events ${states}`);
  });

  const pub = await Peer.connect(addr);
  await check('subscribe, publish and message round-trip between the page and other clients', async () => {
    await page.evaluate(() => clients.a.subscribe('rt/#'));
    await until(() => acked('a', 'subscribe', 'rt/#'));
    const watcher = await Peer.connect(addr);
    await watcher.request({ type: 'subscribe', topic: 'rt/#', id: 1 });
    const sent = await page.evaluate(() => clients.a.publish('rt/page', { v: 1.5, s: 'é ✓' }));
    if (sent !== 'sent') throw new Error(`publish returned ${sent}`);
    const got = await watcher.next((m) => m.type === 'message' && m.topic === 'rt/page');
    if (JSON.stringify(got.data) !== '{"v":1.5,"s":"é ✓"}') throw new Error(`other client got ${JSON.stringify(got)}`);
    await until(() => datas('a', 'rt/page').length === 1);
    pub.send({ type: 'publish', topic: 'rt/node', data: [1, null, 'x'] });
    await until(() => datas('a', 'rt/node').length === 1);
    const back = await page.evaluate(() => clients.a.log.messages.find((m) => m.topic === 'rt/node'));
    if (back.type !== 'message' || JSON.stringify(back.data) !== '[1,null,"x"]') throw new Error(`page got ${JSON.stringify(back)}`);
    watcher.close();
  });

  await check('send() takes any typed object; on() and off() add and remove listeners', async () => {
    const r = await page.evaluate(() => {
      window.heard = 0;
      window.counter = () => { window.heard += 1; };
      clients.a.on('pong', counter);
      return clients.a.send({ type: 'ping', id: 7 });
    });
    if (r !== 'sent') throw new Error(`send returned ${r}`);
    await until(() => clients.a.log.pongs.some((m) => m.id === 7) && heard === 1);
    await page.evaluate(() => { clients.a.off('pong', counter); clients.a.send({ type: 'ping', id: 8 }); });
    await until(() => clients.a.log.pongs.some((m) => m.id === 8));
    if ((await page.evaluate(() => heard)) !== 1) throw new Error('a removed listener was called');
  });

  await check('publish with retain: a client that subscribes later gets the value', async () => {
    await page.evaluate(() => clients.a.publish('rt/kept', 42, { retain: true, id: 'k' }));
    await until(() => clients.a.log.acks.some((a) => a.m.id === 'k'));
    await page.evaluate(() => { make('b'); clients.b.subscribe('rt/kept'); });
    await until(() => datas('b', 'rt/kept').join() === '42');
    // Unsubscribed and subscribed again: the retained value comes (and shows) again.
    await page.evaluate(() => { clients.b.unsubscribe('rt/kept'); clients.b.subscribe('rt/kept'); });
    await until(() => datas('b', 'rt/kept').join() === '42,42');
    await page.evaluate(() => clients.b.close());
  });

  await check('unsubscribe stops delivery', async () => {
    await page.evaluate(() => { clients.a.unsubscribe('rt/#'); clients.a.subscribe('mark/#'); });
    await until(() => acked('a', 'unsubscribe', 'rt/#') && acked('a', 'subscribe', 'mark/#'));
    pub.send({ type: 'publish', topic: 'rt/after', data: 1 });
    pub.send({ type: 'publish', topic: 'mark/1', data: 1 });
    await until(() => datas('a', 'mark/1').length === 1);
    // rt/after was published first, on the same connection: it would be here by now.
    if ((await page.evaluate(() => datas('a', 'rt/after').length)) !== 0) throw new Error('delivered after unsubscribe');
  });

  await check('a refused request comes back as an error event with the request it answers', async () => {
    await page.evaluate(() => clients.a.subscribe('bad/#/x'));
    await until(() => clients.a.log.errors.some((e) => e.req && e.req.topic === 'bad/#/x'));
    const e = await page.evaluate(() => clients.a.log.errors.find((x) => x.req && x.req.topic === 'bad/#/x'));
    if (e.m.type !== 'error' || !e.m.reason || e.req.type !== 'subscribe') throw new Error(JSON.stringify(e));
    await page.evaluate(() => clients.a.unsubscribe('bad/#/x'));
  });

  await check('send while offline is queued, bounded by count and bytes (oldest dropped, reported), flushed in order', async () => {
    const q = await started('127.0.0.1:0');
    const url = `ws://${q.addr}/`;
    await page.evaluate((u) => {
      make('q', u, { queueMessages: 5, minDelay: 100, maxDelay: 400 });
      make('qb', u, { queueBytes: 600, minDelay: 100, maxDelay: 400 });
      clients.q.subscribe('q/#');
      clients.qb.subscribe('qb/#');
    }, url);
    await until(() => acked('q', 'subscribe', 'q/#') && acked('qb', 'subscribe', 'qb/#'));
    await stopRelay(q, 'SIGKILL');
    await until(() => clients.q.state !== 'open' && clients.qb.state !== 'open');
    const r = await page.evaluate(() => {
      const out = { q: [], qb: [] };
      for (let i = 1; i <= 8; i++) out.q.push(clients.q.publish('q/n', i));
      // About 200 bytes each: three fit in 600.
      for (let i = 1; i <= 5; i++) out.qb.push(clients.qb.publish('qb/n', i + ' ' + 'x'.repeat(150)));
      out.big = clients.qb.publish('qb/n', 'y'.repeat(700));
      out.drops = clients.q.log.drops.map((o) => o.data);
      out.dropsB = clients.qb.log.drops.map((o) => String(o.data).slice(0, 2));
      return out;
    });
    if (r.q.some((x) => x !== 'queued') || r.qb.some((x) => x !== 'queued')) throw new Error(`send results ${JSON.stringify(r)}`);
    if (r.big !== 'dropped') throw new Error(`a message larger than the byte bound was ${r.big}`);
    if (r.drops.join() !== '1,2,3') throw new Error(`count bound dropped ${r.drops}`);
    if (r.dropsB.join() !== '1 ,2 ,yy') throw new Error(`byte bound dropped ${r.dropsB}`);
    others.delete(q);
    const back = await started(q.addr);
    await until(() => datas('q', 'q/').length >= 5 && datas('qb', 'qb/').length >= 3);
    const got = await page.evaluate(() => ({ q: datas('q', 'q/'), qb: datas('qb', 'qb/').map((d) => d.slice(0, 2)) }));
    if (got.q.join() !== '4,5,6,7,8') throw new Error(`flushed ${got.q}`);
    if (got.qb.join() !== '3 ,4 ,5 ') throw new Error(`flushed ${got.qb}`);
    if ((await page.evaluate(() => clients.q.dropped)) !== 3) throw new Error('dropped count');
    await page.evaluate(() => { clients.q.close(); clients.qb.close(); });
    await stopRelay(back);
    others.delete(back);
  });

  await check('after the relay is killed (SIGKILL) and restarted on its port, the page reconnects with capped exponential backoff and full jitter', async () => {
    const k = await started('127.0.0.1:0');
    await page.evaluate((u) => {
      make('k', u, { minDelay: 200, maxDelay: 1600, stableAfter: 1000 });
      clients.k.subscribe('k/#');
    }, `ws://${k.addr}/`);
    await until(() => acked('k', 'subscribe', 'k/#'));
    await stopRelay(k, 'SIGKILL');
    others.delete(k);
    await until(() => clients.k.log.closes.length >= 6);
    const closes = await page.evaluate(() => clients.k.log.closes);
    closes.forEach((c, i) => {
      const cap = Math.min(1600, 200 * 2 ** i);
      if (c.attempt !== i + 1) throw new Error(`close ${i} says attempt ${c.attempt}`);
      if (!(c.delay >= 0 && c.delay <= cap)) throw new Error(`delay ${c.delay} after attempt ${i + 1} is outside [0, ${cap}]`);
    });
    if (!closes[0].wasOpen || closes.slice(1).some((c) => c.wasOpen)) throw new Error('wasOpen');
    const back = await started(k.addr);
    await until(() => clients.k.state === 'open', null, 60_000);
    // Its subscription was made again: a publish on the new relay reaches it.
    const p = await Peer.connect(back.addr);
    for (let i = 0; ; i++) {
      p.send({ type: 'publish', topic: 'k/x', data: i });
      const ok = await page.waitForFunction(() => datas('k', 'k/x').length > 0, null, { timeout: 500 }).then(() => true, () => false);
      if (ok) break;
      if (i > 60) throw new Error('no message after reconnecting');
    }
    p.close();
    // The connection stays open past stableAfter: the count starts over, so the next loss
    // is retried within minDelay.
    await until(() => clients.k.attempt === 0);
    await stopRelay(back, 'SIGKILL');
    others.delete(back);
    await until((n) => clients.k.log.closes.length > n, closes.length);
    const first = await page.evaluate((n) => clients.k.log.closes[n], closes.length);
    if (first.attempt !== 1 || first.delay > 200) throw new Error(`after a stable connection: ${JSON.stringify(first)}`);
    await page.evaluate(() => clients.k.close());
  });

  await check('a stopped relay (SIGSTOP) is given up after the missed pong; the page reconnects after SIGCONT', async () => {
    const s = await started('127.0.0.1:0');
    await page.evaluate((u) => {
      make('s', u, { pingInterval: 500, pongTimeout: 1000, connectTimeout: 1500, minDelay: 100, maxDelay: 400 });
      clients.s.subscribe('s/#');
    }, `ws://${s.addr}/`);
    await until(() => acked('s', 'subscribe', 's/#'));
    await until(() => clients.s.log.pongs.length >= 2); // pings are answered while it runs
    process.kill(s.pid, 'SIGSTOP');
    try {
      await until(() => clients.s.state !== 'open');
      const c = await page.evaluate(() => clients.s.log.closes[0]);
      if (c.reason !== 'pong timeout' || !c.wasOpen) throw new Error(`closed with ${JSON.stringify(c)}`);
      // Attempts to a stopped relay are given up too, instead of hanging in connecting.
      await until(() => clients.s.log.closes.some((x) => x.reason === 'connect timeout'));
    } finally {
      process.kill(s.pid, 'SIGCONT');
    }
    await until(() => clients.s.state === 'open');
    const p = await Peer.connect(s.addr);
    await p.request({ type: 'publish', topic: 's/x', data: 'back', id: 1 });
    p.close();
    await until(() => datas('s', 's/x').join() === 'back');
    await page.evaluate(() => clients.s.close());
    await stopRelay(s);
    others.delete(s);
  });

  await check('close() stops the client: state closed, no retry, sends dropped', async () => {
    await page.evaluate(() => make('c'));
    await until(() => clients.c.state === 'open');
    const r = await page.evaluate(() => {
      clients.c.close();
      return { state: clients.c.state, close: clients.c.log.closes.at(-1), send: clients.c.publish('x', 1) };
    });
    if (r.state !== 'closed' || r.close.delay !== -1 || r.send !== 'dropped') throw new Error(JSON.stringify(r));
  });

  // A stand-in relay: the page's origin for the next two checks.
  const fake = await fakeRelay({
    '/page': PAGE,
    '/emberws.js': await (await fetch(`http://${addr}/emberws.js`)).text(),
  });
  const fpage = await browser.newPage();
  fpage.on('pageerror', (e) => pageErrors.push(e.message));
  const funtil = (fn, arg, timeout = WAIT) => fpage.waitForFunction(fn, arg, { timeout });

  await check('the token from the page\'s #token= goes on the WebSocket URL and leaves the address bar', async () => {
    await fpage.goto(`http://${fake.addr}/page#token=abc-_1`);
    await fpage.evaluate(() => make('t', undefined, { pingInterval: 0 }));
    const conn = await fake.nextConnection();
    if (conn.url !== '/?token=abc-_1') throw new Error(`upgrade asked for ${conn.url}`);
    const r = await fpage.evaluate(() => ({ hash: location.hash, has: clients.t.hasToken, url: clients.t.url }));
    if (r.hash !== '' || !r.has || r.url.includes('abc')) throw new Error(JSON.stringify(r));
    await fpage.evaluate(() => { clients.t.close(); make('t2', undefined, { token: 'given', pingInterval: 0 }); });
    const conn2 = await fake.nextConnection();
    if (conn2.url !== '/?token=given') throw new Error(`with the token option: ${conn2.url}`);
    await fpage.evaluate(() => clients.t2.close());
  });

  await check('after a reconnect each subscription resumes with since = its newest id; duplicates are dropped, gaps reported, a new epoch delivered', async () => {
    await fpage.evaluate(() => {
      make('f', undefined, { minDelay: 20, maxDelay: 100, pingInterval: 0 });
      clients.f.subscribe('a/#');
      clients.f.subscribe('b/#');
    });
    const c1 = await fake.nextConnection();
    const sa = await c1.next((m) => m.type === 'subscribe' && m.topic === 'a/#');
    const sb = await c1.next((m) => m.type === 'subscribe' && m.topic === 'b/#');
    if ('since' in sa || 'since' in sb) throw new Error('a first subscribe has no since');
    const msg = (topic, data, id) => ({ type: 'message', topic, data, ...(id ? { id } : {}) });
    c1.send({ type: 'ack', id: sa.id });
    c1.send({ type: 'ack', id: sb.id });
    c1.send(msg('a/1', 1, 'e1-1'));
    c1.send(msg('b/1', 2, 'e1-2'));
    c1.send(msg('a/2', 3, 'e1-3'));
    c1.send(msg('a/3', 4, 'e1-4'));
    c1.send(msg('a/x', 'no id'));
    c1.send('not json');
    await funtil(() => clients.f.log.messages.length === 5);
    c1.ws.terminate();

    const c2 = await fake.nextConnection();
    const ra = await c2.next((m) => m.type === 'subscribe' && m.topic === 'a/#');
    const rb = await c2.next((m) => m.type === 'subscribe' && m.topic === 'b/#');
    if (ra.since !== 'e1-4' || rb.since !== 'e1-2') throw new Error(`resubscribed with since ${ra.since} and ${rb.since}`);
    c2.send({ type: 'ack', id: ra.id, gap: false });
    c2.send(msg('a/2', 3, 'e1-3')); // already delivered
    c2.send(msg('a/3', 4, 'e1-4')); // already delivered
    c2.send(msg('a/4', 5, 'e1-5'));
    c2.send({ type: 'ack', id: rb.id, gap: true });
    c2.send(msg('b/2', 6, 'e1-7'));
    c2.send(msg('a/5', 7, 'e1-6')); // older than b's newest, newer than a's: delivered
    c2.send(msg('a/4', 5, 'e1-5')); // live copy of a replayed one
    c2.send(msg('a/6', 8, 'f0-1')); // another epoch
    await funtil(() => clients.f.log.messages.some((m) => m.topic === 'a/6'));
    const r = await fpage.evaluate(() => ({
      data: clients.f.log.messages.map((m) => m.data),
      gaps: clients.f.log.gaps,
      dups: clients.f.duplicates,
    }));
    if (r.data.join() !== '1,2,3,4,no id,5,6,7,8') throw new Error(`delivered ${r.data}`);
    if (JSON.stringify(r.gaps) !== '[{"pattern":"b/#","since":"e1-2"}]') throw new Error(`gaps ${JSON.stringify(r.gaps)}`);
    if (r.dups !== 3) throw new Error(`${r.dups} duplicates counted`);
    await fpage.evaluate(() => clients.f.close());
  });

  await check('retained values interleaved with newer live ones are delivered; a since the relay refuses is dropped: the pattern is subscribed afresh and a gap reported', async () => {
    await fpage.evaluate(() => {
      make('g', undefined, { minDelay: 20, maxDelay: 100, pingInterval: 0 });
      clients.g.subscribe('a/#');
    });
    const c1 = await fake.nextConnection();
    const s1 = await c1.next((m) => m.type === 'subscribe');
    c1.send({ type: 'ack', id: s1.id });
    // A paced retained replay: a live message of one topic, then the older retained value
    // of another.
    c1.send({ type: 'message', topic: 'a/live', data: 'live', id: 'x1-9' });
    c1.send({ type: 'message', topic: 'a/1', data: 1, id: 'x1-5' });
    await funtil(() => clients.g.log.messages.length === 2);
    c1.ws.terminate();
    const c2 = await fake.nextConnection();
    const s2 = await c2.next((m) => m.type === 'subscribe');
    if (s2.since !== 'x1-9') throw new Error(`since ${s2.since}`);
    c2.send({ type: 'error', reason: 'invalid since', id: s2.id });
    const s3 = await c2.next((m) => m.type === 'subscribe');
    if (s3.topic !== 'a/#' || 'since' in s3) throw new Error(`then ${JSON.stringify(s3)}`);
    c2.send({ type: 'ack', id: s3.id });
    c2.send({ type: 'message', topic: 'a/1', data: 1, id: 'x1-5' }); // the same retained value: once
    c2.send({ type: 'message', topic: 'a/1', data: 2, id: 'x1-10' });
    await funtil(() => clients.g.log.messages.length === 3);
    const r = await fpage.evaluate(() => ({ data: clients.g.log.messages.map((m) => m.data), gaps: clients.g.log.gaps, dups: clients.g.duplicates }));
    if (r.data.join() !== 'live,1,2' || r.dups !== 1) throw new Error(`delivered ${r.data}, ${r.dups} duplicates`);
    if (JSON.stringify(r.gaps) !== '[{"pattern":"a/#","since":"x1-9"}]') throw new Error(`gaps ${JSON.stringify(r.gaps)}`);
    await fpage.evaluate(() => clients.g.close());
  });
  fake.close();

  await check('resume: the relay stopped (SIGTERM) and restarted with --state and history while a publisher counts; the page has every number once, in order', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'emberws-client-'));
    const flags = ['--state', join(dir, 'state'), '--history-messages', '1000'];
    const TOTAL = 300;
    let h = await started('127.0.0.1:0', flags);
    const hAddr = h.addr;
    const counter = new Counter(hAddr, TOTAL);
    try {
      await page.evaluate((u) => {
        make('h', u, { minDelay: 100, maxDelay: 1000 });
        clients.h.subscribe('count/#');
      }, `ws://${hAddr}/`);
      await until(() => acked('h', 'subscribe', 'count/#'));
      counter.start();
      await until(() => datas('h', 'count/').length >= 60);
      await stopRelay(h, 'SIGTERM');
      others.delete(h);
      // The page stays away (offline) until the restarted relay has taken 50 more numbers:
      // those reach it only through the history, kept across the restart in the state file.
      await until(() => clients.h.state !== 'open');
      await page.context().setOffline(true);
      const had = (await page.evaluate(() => datas('h', 'count/'))).length;
      h = await started(hAddr, flags);
      while (counter.published < had + 50 && !counter.done) await sleep(20);
      const away = (await page.evaluate(() => datas('h', 'count/'))).length;
      await page.context().setOffline(false);
      if (away !== had) throw new Error(`the page got messages while offline (${had} → ${away})`);
      await until((total) => datas('h', 'count/').includes(total), TOTAL, 120_000);
      const got = await page.evaluate(() => datas('h', 'count/'));
      const want = Array.from({ length: TOTAL }, (_, i) => i + 1);
      if (got.join() !== want.join()) {
        const missing = want.filter((x) => !got.includes(x));
        const twice = got.filter((x, i) => got.indexOf(x) !== i);
        throw new Error(`${got.length} numbers; missing [${missing.slice(0, 10)}], twice [${twice.slice(0, 10)}]`);
      }
      const gaps = await page.evaluate(() => clients.h.log.gaps);
      if (gaps.length) throw new Error(`gap reported: ${JSON.stringify(gaps)}`);
    } finally {
      await counter.stop();
      await page.context().setOffline(false);
      await page.evaluate(() => clients.h?.close());
      await stopRelay(h);
      others.delete(h);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  pub.close();
  await check('no script errors on the pages', async () => {
    if (pageErrors.length) throw new Error(pageErrors.join('; '));
  });
} finally {
  await browser.close();
  for (const r of others) r.kill('SIGKILL');
  relay.kill('SIGKILL');
}
process.exit(finish() ? 1 : 0);
