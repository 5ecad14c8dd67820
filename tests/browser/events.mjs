// The relay's Server-Sent Events route (/events) with the browser's own EventSource in
// headless Chromium, against the real relay binary.
// Usage: node tests/browser/events.mjs path/to/emberws
//
// Each check starts the relays it stops or kills itself, so one failure does not hide the
// others. The resume check needs message ids, history and --state in the relay.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WAIT, Counter, Peer, checks, launchChromium, sleep, startRelay, stopRelay } from './lib.mjs';

const binary = process.argv[2] ?? 'target/release/emberws';
const { check, finish } = checks('events');

// The test page: `listen(name, url)` opens an EventSource and logs into `streams[name]` every
// message event (its data read as JSON, with the event's lastEventId), the relay's answers
// (ack, error: data-only events), and each open and error.
const PAGE = `<!doctype html><meta charset="utf-8"><title>events test</title>
<script>
window.streams = {};
window.listen = (name, url) => {
  const es = new EventSource(url);
  const log = es.log = { messages: [], answers: [], opens: 0, errors: 0, states: [] };
  es.onopen = () => { log.opens += 1; };
  es.onerror = () => { log.errors += 1; log.states.push(es.readyState); };
  es.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.type === 'message') log.messages.push({ ...m, lastEventId: e.lastEventId });
    else log.answers.push(m);
  };
  streams[name] = es;
};
window.datas = (name) => streams[name].log.messages.map((m) => m.data);
</script>`;

const browser = await launchChromium();
const others = new Set(); // relays a check started, killed at the end if a check failed
const started = async (listen, extra) => {
  const r = await startRelay(binary, listen, extra);
  others.add(r);
  return r;
};

// A page with the relay's origin (a document it served), so that /events is same-origin
// and Chromium lets the page reach a local address.
async function pageOn(addr) {
  const page = await browser.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  await page.goto(`http://${addr}/healthz`);
  await page.setContent(PAGE);
  page.until = (fn, arg, timeout = WAIT) => page.waitForFunction(fn, arg, { timeout });
  return page;
}

try {
  await check('an EventSource on /events gets the published messages in order, lastEventId = the message id', async () => {
    const relay = await started('127.0.0.1:0', []);
    const page = await pageOn(relay.addr);
    try {
      const pub = await Peer.connect(relay.addr);
      await pub.request({ type: 'publish', topic: 'ev/r', data: 'kept', retain: true, id: 'r' });
      // `+` unencoded, as a page writes it: MQTT's wildcard; `#` must be %23 in a URL.
      await page.evaluate(() => listen('a', '/events?topic=ev/+&topic=other/%23'));
      await page.until(() => streams.a.log.answers.length === 2);
      const answers = await page.evaluate(() => streams.a.log.answers);
      if (JSON.stringify(answers) !== '[{"type":"ack","id":"ev/+"},{"type":"ack","id":"other/#"}]') {
        throw new Error(`answers ${JSON.stringify(answers)}`);
      }
      const ids = [];
      for (let n = 1; n <= 30; n++) {
        const topic = n % 2 ? 'ev/odd' : 'other/x/even';
        await pub.request({ type: 'publish', topic, data: n, id: n });
      }
      await page.until(() => streams.a.log.messages.length >= 31);
      const got = await page.evaluate(() => streams.a.log.messages);
      if (got[0].data !== 'kept') throw new Error(`first ${JSON.stringify(got[0])}: the retained value`);
      const numbers = got.slice(1).map((m) => m.data);
      const want = Array.from({ length: 30 }, (_, i) => i + 1);
      if (numbers.join() !== want.join()) throw new Error(`got ${numbers}`);
      for (const m of got) {
        if (!/^[0-9a-f]{8}-[1-9][0-9]*$/.test(m.id)) throw new Error(`id ${m.id}`);
        if (m.lastEventId !== m.id) throw new Error(`lastEventId ${m.lastEventId} for ${m.id}`);
        ids.push(m.id);
      }
      const seqs = ids.map((id) => Number(id.split('-')[1]));
      if (seqs.some((s, i) => i > 0 && s <= seqs[i - 1])) throw new Error(`ids not increasing: ${ids}`);
      const state = await page.evaluate(() => streams.a.readyState);
      if (state !== 1) throw new Error(`readyState ${state}`);
      await page.evaluate(() => streams.a.close());
      pub.close();
      if (page.errors.length) throw new Error(page.errors.join('; '));
    } finally {
      await page.close();
      await stopRelay(relay);
      others.delete(relay);
    }
  });

  await check('resume: the relay stopped (SIGTERM) and restarted on its port with --state and history while a publisher counts; EventSource reconnects by itself and has every number once, in order', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'emberws-events-'));
    const flags = ['--state', join(dir, 'state'), '--history-messages', '1000'];
    const TOTAL = 300;
    let h = await started('127.0.0.1:0', flags);
    const hAddr = h.addr;
    const page = await pageOn(hAddr);
    const counter = new Counter(hAddr, TOTAL);
    try {
      await page.evaluate(() => listen('h', '/events?topic=count/%23'));
      await page.until(() => streams.h.log.answers.length === 1);
      counter.start();
      await page.until(() => datas('h').length >= 60);
      await stopRelay(h, 'SIGTERM');
      others.delete(h);
      // The stream ended: EventSource waits `retry:` (2 s) and tries again, on its own. The
      // page stays offline until the restarted relay has taken 50 more numbers, so those
      // reach it only through the history kept in the state file.
      await page.until(() => streams.h.log.errors >= 1);
      await page.context().setOffline(true);
      const had = (await page.evaluate(() => datas('h'))).length;
      h = await started(hAddr, flags);
      while (counter.published < had + 50 && !counter.done) await sleep(20);
      const away = (await page.evaluate(() => datas('h'))).length;
      await page.context().setOffline(false);
      if (away !== had) throw new Error(`the page got messages while offline (${had} → ${away})`);
      await page.until((total) => datas('h').includes(total), TOTAL, 120_000);
      const log = await page.evaluate(() => streams.h.log);
      const got = log.messages.map((m) => m.data);
      const want = Array.from({ length: TOTAL }, (_, i) => i + 1);
      if (got.join() !== want.join()) {
        const missing = want.filter((x) => !got.includes(x));
        const twice = got.filter((x, i) => got.indexOf(x) !== i);
        throw new Error(`${got.length} numbers; missing [${missing.slice(0, 10)}], twice [${twice.slice(0, 10)}]`);
      }
      if (log.opens < 2) throw new Error(`${log.opens} opens: it never reconnected`);
      if (log.states.includes(2)) throw new Error('the EventSource gave up (readyState CLOSED)');
      const resumed = log.answers.filter((a) => 'gap' in a);
      if (!resumed.length || resumed.some((a) => a.gap !== false)) {
        throw new Error(`answers ${JSON.stringify(log.answers)}: a resume with gap false expected`);
      }
      if (log.messages.some((m) => m.lastEventId !== m.id)) throw new Error('lastEventId differs from an id');
      if (page.errors.length) throw new Error(page.errors.join('; '));
    } finally {
      await counter.stop();
      await page.context().setOffline(false);
      await page.evaluate(() => streams.h?.close()).catch(() => {});
      await page.close();
      await stopRelay(h);
      others.delete(h);
      rmSync(dir, { recursive: true, force: true });
    }
  });
} finally {
  await browser.close();
  for (const r of others) r.kill('SIGKILL');
}
process.exit(finish() ? 1 : 0);
