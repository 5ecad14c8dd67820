/* emberws.js: the browser client of the emberws relay, served by the relay at /emberws.js.
 * Plain JavaScript, no dependencies, no build step. It defines one global, `Emberws`.
 *
 *   <script src="/emberws.js"></script>
 *   <script>
 *     const relay = new Emberws();            // ws(s)://this page's host/
 *     relay.on('message', m => console.log(m.topic, m.data));
 *     relay.subscribe('sensors/#');
 *     relay.publish('sensors/kitchen/temp', 21.5, { retain: true });
 *   </script>
 *
 * new Emberws(url, options)   both optional; url is ws://, wss://, http(s):// or a path, and
 *   defaults to this page's host (wss:// on an https page). Options (times in ms):
 *   token            sent as ?token= on the WebSocket URL (browsers cannot set headers on a
 *                    WebSocket). Default: the page's #token=… (kept in sessionStorage for the
 *                    tab and taken out of the address bar); null for none.
 *   minDelay 500, maxDelay 30000   reconnect delay after the n-th failed attempt in a row:
 *                    random in [0, min(maxDelay, minDelay * 2^(n-1))] (full jitter).
 *   stableAfter 10000   a connection that stayed open this long starts the count over.
 *   connectTimeout 10000   an attempt not open by then is given up.
 *   pingInterval 20000, pongTimeout 10000   while open, {"type":"ping"} every pingInterval;
 *                    when nothing at all arrives within pongTimeout of it, the connection is
 *                    given up and a new one made (0: no pings).
 *   queueMessages 100, queueBytes 65536   bounds of the queue of messages sent while offline.
 *   maxTopics 1000   topics whose newest id is remembered to drop duplicates (the least
 *                    recently heard is forgotten first).
 *
 * Methods: on(type, fn), off(type, fn), subscribe(pattern), unsubscribe(pattern),
 *   publish(topic, data, { retain, id }), send(object), close().
 *   send and publish return 'sent', 'queued' (not open: kept and sent in order on the next
 *   open) or 'dropped' (after close(), or larger than queueBytes alone).
 * Properties: state ('connecting' | 'open' | 'closed'), url, hasToken, attempt (failed attempts
 *   in a row), retryAt (Date.now() of the next attempt), dropped, duplicates.
 * Events, fn(arg, request):
 *   state (state) · open () · close ({code, reason, wasOpen, delay, attempt}; delay -1 after
 *   close()) · message ({type, topic, data, id}) · ack / error (the relay's answer, and the
 *   subscribe or unsubscribe it answers when this client sent it) · gap ({pattern, since}: the
 *   relay's history did not reach back to since, or it refused since and the pattern was
 *   subscribed afresh: messages may have been missed) · drop (an object the
 *   offline queue dropped, oldest first) · any other type the relay sends, e.g. pong.
 *
 * Subscriptions are remembered and made again on every open, with "since" = the newest
 * message id seen for that pattern, so a reconnect misses nothing the relay's history still
 * holds. Ids are "EPOCH-SEQ"; a message whose id is not newer than the last one delivered for
 * its topic (same epoch: compared by SEQ) is not delivered (counted in duplicates): it is a
 * copy, or older than what the page has. This relies on the relay's order: for each topic,
 * ids arrive in increasing order.
 */
(function (root) {
  'use strict';

  const DEFAULTS = {
    minDelay: 500, maxDelay: 30000, stableAfter: 10000, connectTimeout: 10000,
    pingInterval: 20000, pongTimeout: 10000, queueMessages: 100, queueBytes: 65536, maxTopics: 1000,
  };
  // Names of the client's own events: a relay message with one of these types is ignored.
  const OWN = new Set(['state', 'open', 'close', 'gap', 'drop']);
  const TOKEN_KEY = 'emberws.token';
  const encoder = new TextEncoder();

  // Whether an MQTT-style pattern matches a topic: + one level, # the rest; a pattern
  // starting with # or + does not match a topic starting with $ (the relay's rule).
  function matches(pattern, topic) {
    const p = pattern.split('/'), t = topic.split('/');
    if (topic[0] === '$' && (p[0] === '#' || p[0] === '+')) return false;
    for (let i = 0; i < p.length; i++) {
      if (p[i] === '#') return i === p.length - 1;
      if (i >= t.length || (p[i] !== '+' && p[i] !== t[i])) return false;
    }
    return p.length === t.length;
  }

  // "EPOCH-SEQ" → { epoch, seq, id }, or null for a missing or foreign id.
  function parseId(id) {
    const m = typeof id === 'string' && /^(.+)-(\d{1,15})$/.exec(id);
    return m ? { epoch: m[1], seq: Number(m[2]), id } : null;
  }
  const newer = (a, b) => !b || a.epoch !== b.epoch || a.seq > b.seq;

  // The token in the page's fragment (/#token=…), which the browser never sends with the
  // page request: kept for this tab and taken out of the address bar.
  function pageToken() {
    if (typeof location === 'undefined') return '';
    const t = new URLSearchParams(location.hash.slice(1)).get('token');
    try {
      if (t) {
        history.replaceState(null, '', location.pathname + location.search);
        sessionStorage.setItem(TOKEN_KEY, t);
      }
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch (e) { return t || ''; } // storage can be switched off
  }

  function wsUrl(url) {
    const u = typeof location === 'undefined' ? new URL(url) : new URL(url || '/', location.href);
    if (u.protocol === 'http:' || u.protocol === 'https:') u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new TypeError('emberws: not a ws:// or wss:// URL: ' + url);
    u.hash = '';
    return u;
  }

  class Emberws {
    constructor(url, options) {
      if (url && typeof url === 'object') { options = url; url = undefined; }
      const o = this.options = Object.assign({}, DEFAULTS, options);
      const u = wsUrl(url);
      const token = o.token === undefined ? pageToken() : o.token || '';
      this.url = u.href;
      this.hasToken = !!token;
      if (token) u.searchParams.set('token', token);
      this._connectUrl = u.href;
      this.state = 'connecting';
      this.attempt = 0;
      this.retryAt = 0;
      this.dropped = 0;
      this.duplicates = 0;
      this._on = new Map();
      this._subs = new Map(); // pattern → { last, floor }: the newest id delivered for it, and the newest seen when it was made
      this._last = null; // the newest id seen on any subscription
      this._topics = new Map(); // topic → the newest id delivered for it, at most maxTopics
      this._pending = new Map(); // id of a request this client sent → { req, sub }
      this._queue = [];
      this._queued = 0; // bytes
      this._nextId = 1;
      this._ws = null;
      this._stopped = false;
      this._timers = {};
      this._online = () => { if (!this._ws && !this._stopped) this._connect(); };
      if (typeof addEventListener === 'function') addEventListener('online', this._online);
      this._connect();
    }

    on(type, fn) {
      if (!this._on.has(type)) this._on.set(type, []);
      this._on.get(type).push(fn);
      return this;
    }

    off(type, fn) {
      const list = this._on.get(type) || [], i = list.indexOf(fn);
      if (i >= 0) list.splice(i, 1);
      return this;
    }

    send(object) {
      const text = JSON.stringify(object), ws = this._ws;
      if (ws && ws.readyState === 1) { ws.send(text); return 'sent'; }
      const bytes = encoder.encode(text).length, o = this.options;
      if (this._stopped || bytes > o.queueBytes || o.queueMessages < 1) {
        this.dropped++;
        this._emit('drop', object);
        return 'dropped';
      }
      this._queue.push({ object, text, bytes });
      this._queued += bytes;
      while (this._queue.length > o.queueMessages || this._queued > o.queueBytes) {
        const old = this._queue.shift();
        this._queued -= old.bytes;
        this.dropped++;
        this._emit('drop', old.object);
      }
      return 'queued';
    }

    publish(topic, data, options) {
      const m = { type: 'publish', topic, data };
      if (options && options.retain) m.retain = true;
      if (options && options.id !== undefined) m.id = options.id;
      return this.send(m);
    }

    subscribe(pattern) {
      if (this._subs.has(pattern)) return;
      const sub = { last: null, floor: null };
      this._subs.set(pattern, sub);
      if (this.state === 'open') this._request('subscribe', pattern, sub, false);
    }

    unsubscribe(pattern) {
      const sub = this._subs.get(pattern);
      if (!sub) return;
      this._subs.delete(pattern);
      // Its topics are forgotten, so that subscribing again brings their retained values.
      for (const t of this._topics.keys()) {
        if (matches(pattern, t) && ![...this._subs.keys()].some((p) => matches(p, t))) this._topics.delete(t);
      }
      if (this.state === 'open') this._request('unsubscribe', pattern, sub, false);
    }

    close() {
      this._stopped = true;
      clearTimeout(this._timers.retry);
      if (typeof removeEventListener === 'function') removeEventListener('online', this._online);
      this._queue = [];
      this._queued = 0;
      const ws = this._ws;
      if (ws) {
        this._detach(ws);
        try { ws.close(1000); } catch (e) { /* already closing */ }
        this._closed(ws, 1000, 'closed by the page');
      }
    }

    _connect() {
      clearTimeout(this._timers.retry);
      let ws;
      try {
        ws = new WebSocket(this._connectUrl);
      } catch (e) { // e.g. ws:// from an https page; try again later like any failure
        this._ws = {};
        this._closed(this._ws, 1006, String(e.message || e));
        return;
      }
      this._ws = ws;
      this._setState('connecting');
      this._timers.connect = setTimeout(() => this._giveUp(ws, 'connect timeout'), this.options.connectTimeout);
      ws.onopen = () => this._opened(ws);
      ws.onmessage = (e) => this._received(ws, e.data);
      ws.onclose = (e) => this._closed(ws, e.code, e.reason);
    }

    _opened(ws) {
      const o = this.options, t = this._timers;
      clearTimeout(t.connect);
      t.stable = setTimeout(() => { this.attempt = 0; }, o.stableAfter);
      if (o.pingInterval > 0) t.ping = setInterval(() => this._ping(ws), o.pingInterval);
      // Subscriptions first, so that what the queue publishes can come back to this page.
      for (const [pattern, sub] of this._subs) this._request('subscribe', pattern, sub, true);
      const queue = this._queue;
      this._queue = [];
      this._queued = 0;
      for (const q of queue) ws.send(q.text);
      this._setState('open');
      this._emit('open');
    }

    _request(type, pattern, sub, resume) {
      const req = { type, topic: pattern, id: 'ew.' + this._nextId++ };
      if (resume) {
        const since = sub.last && sub.floor && sub.last.epoch === sub.floor.epoch
          ? (sub.last.seq > sub.floor.seq ? sub.last : sub.floor) : sub.last || sub.floor;
        if (since) req.since = since.id;
      }
      this._pending.set(req.id, { req, sub });
      this._ws.send(JSON.stringify(req));
    }

    _received(ws, raw) {
      if (typeof raw !== 'string') return;
      // Anything heard shows the link is alive (a pong can wait behind a long replay).
      clearTimeout(this._timers.pong);
      this._timers.pong = 0;
      let m;
      try { m = JSON.parse(raw); } catch (e) { return; }
      if (!m || typeof m.type !== 'string' || OWN.has(m.type)) return;
      if (m.type === 'message') return this._message(m);
      const p = m.id !== undefined && this._pending.get(m.id);
      if (p) this._pending.delete(m.id);
      this._emit(m.type, m, p ? p.req : undefined);
      if (!p || p.req.type !== 'subscribe' || this._subs.get(p.req.topic) !== p.sub) return;
      const since = p.req.since, gap = { pattern: p.req.topic, since };
      if (m.type === 'ack') {
        // What is published from here on reaches this subscription live.
        if (!since && !p.sub.floor) p.sub.floor = this._last;
        if (m.gap === true) this._emit('gap', gap);
      } else if (m.type === 'error' && since && /since/.test(m.reason)) {
        // A relay that cannot resume from this id: subscribe afresh, say what may be missing.
        p.sub.last = p.sub.floor = null;
        this._request('subscribe', p.req.topic, p.sub, false);
        this._emit('gap', gap);
      }
    }

    _message(m) {
      const id = parseId(m.id);
      if (id && typeof m.topic === 'string') {
        const seen = this._topics.get(m.topic);
        if (!newer(id, seen)) { this.duplicates++; return; }
        // Oldest first in the map: a topic heard again moves to the end.
        this._topics.delete(m.topic);
        this._topics.set(m.topic, id);
        if (this._topics.size > this.options.maxTopics) this._topics.delete(this._topics.keys().next().value);
        for (const [pattern, sub] of this._subs) if (newer(id, sub.last) && matches(pattern, m.topic)) sub.last = id;
        if (newer(id, this._last)) this._last = id;
      }
      this._emit('message', m);
    }

    _ping(ws) {
      if (this._timers.pong) return;
      ws.send('{"type":"ping"}');
      this._timers.pong = setTimeout(() => this._giveUp(ws, 'pong timeout'), this.options.pongTimeout);
    }

    // A half-open connection can take minutes to report its close: stop waiting for it now.
    _giveUp(ws, why) {
      this._detach(ws);
      try { ws.close(); } catch (e) { /* not open yet */ }
      this._closed(ws, 1006, why);
    }

    _detach(ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
    }

    _closed(ws, code, reason) {
      if (ws !== this._ws) return;
      const o = this.options, t = this._timers, wasOpen = this.state === 'open';
      this._ws = null;
      clearTimeout(t.connect);
      clearTimeout(t.stable);
      clearInterval(t.ping);
      clearTimeout(t.pong);
      t.pong = 0;
      this._pending.clear();
      let delay = -1;
      if (!this._stopped) {
        const cap = Math.min(o.maxDelay, o.minDelay * 2 ** Math.min(this.attempt, 30));
        this.attempt++;
        delay = Math.random() * cap;
        this.retryAt = Date.now() + delay;
        t.retry = setTimeout(() => this._connect(), delay);
      }
      this._setState('closed');
      this._emit('close', { code, reason, wasOpen, delay, attempt: this.attempt });
    }

    _setState(state) {
      if (state === this.state) return;
      this.state = state;
      this._emit('state', state);
    }

    _emit(type, arg, request) {
      for (const fn of (this._on.get(type) || []).slice()) {
        // One failing listener must not stop the others or the client.
        try { fn.call(this, arg, request); } catch (e) { setTimeout(() => { throw e; }); }
      }
    }
  }

  Emberws.matches = matches;
  root.Emberws = Emberws;
})(typeof globalThis !== 'undefined' ? globalThis : this);
