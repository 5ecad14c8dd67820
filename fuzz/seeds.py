#!/usr/bin/env python3
"""Writes the committed seed corpus, fuzz/corpus/TARGET/seed-*: valid requests and frames.

Run from anywhere: python3 fuzz/seeds.py. The first byte of every frame_header, utf8,
assemble and resp seed is the split/role/limits byte the targets read (see fuzz/src/lib.rs).
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])  # RFC 6455 §5.7


def frame(opcode, payload, fin=True, key=KEY, form=None):
    """A frame as a client (masked, key given) or a server (key None) sends it (§5.2)."""
    out = bytes([(0x80 if fin else 0) | opcode])
    mask = 0x80 if key else 0
    n = len(payload)
    if form is None:
        form = 0 if n <= 125 else 1 if n <= 0xFFFF else 2
    if form == 0:
        out += bytes([mask | n])
    elif form == 1:
        out += bytes([mask | 126]) + struct.pack(">H", n)
    else:
        out += bytes([mask | 127]) + struct.pack(">Q", n)
    if key:
        out += key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    else:
        out += payload
    return out


RFC_REQUEST = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
BROWSER_REQUEST = (
    b"GET /chat?room=lobby HTTP/1.1\r\n"
    b"Host: example.com:8080\r\n"
    b"Connection: Upgrade\r\n"
    b"Pragma: no-cache\r\n"
    b"Cache-Control: no-cache\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/124.0.0.0 Safari/537.36\r\n"
    b"Upgrade: websocket\r\n"
    b"Origin: https://example.com\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
)
SHORT_REQUEST = (
    b"GET / HTTP/1.1\r\nhost:x\r\nupgrade:\twebsocket\r\nconnection: keep-alive, Upgrade\r\n"
    b"sec-websocket-version: 13 \r\nsec-websocket-key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n"
    b"Sec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: b , c\r\n\r\n"
)
def command(*args):
    """A command as the bridge sends it: a RESP2 array of bulk strings."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def pmessage(pattern, channel, payload, push=False):
    """A pattern subscription's message, as Redis sends it (RESP2 array or RESP3 push)."""
    return (b">" if push else b"*") + command(b"pmessage", pattern, channel, payload)[1:]


TEXT = "Hello κόσμε 世界 🦀 ✓".encode()


def conn_seed(h, marks, stream):
    """A conn seed: the 8 control bytes (see fuzz/src/conn.rs), the marks, the stream."""
    assert len(h) == 8 and h[6] & 7 == len(marks)
    return bytes(h) + b"".join(bytes(m) for m in marks) + stream


# Control bytes: 64 KiB messages, close policy, the canned upgrade request first, 64 KiB
# queue, 8 KiB head, 32 headers, 64 subscriptions, default budgets, 30 s pings, 10 s
# handshake and pong, 5 s close, 32 spares; cuts of 1 byte against none; the marks' count
# (with a 64 KiB read buffer); a bystander reading everything.
ROOMY = [0x16, 0xFF, 0x3F, 0xEA, 0x01, 0x00, 0x08, 0x00]


def with_marks(h, n, seeds=None):
    h = list(h)
    h[6] = (h[6] & ~7) | n
    if seeds:
        h[4], h[5] = seeds
    return h


CONVERSATION = (
    frame(0x1, b"hello")
    + frame(0x1, b"s:a/#")
    + frame(0x1, b"p:a/b published")
    + frame(0x1, TEXT[:7], fin=False)
    + frame(0x9, b"ping")
    + frame(0x0, TEXT[7:])
    + frame(0x2, bytes(range(256)) * 2)
    + frame(0x1, b"u:a/#")
    + frame(0xA, b"")
    + frame(0x8, b"\x03\xe8bye")
)


def tls_feed(data, step=None):
    """tls ops feeding `data` in pieces of `step` bytes (one piece if None), reading after each."""
    out = b""
    step = step or len(data)
    for i in range(0, len(data), step):
        piece = data[i : i + step]
        while piece:
            n = min(len(piece), 255 * 4 + 3)
            out += bytes([(n % 4) << 2, n // 4]) + piece[:n]
            piece = piece[n:]
    return out


def tls_record(kind, body, version=0x0301):
    return bytes([kind]) + struct.pack(">HH", version, len(body)) + body


def ext(kind, body):
    return struct.pack(">HH", kind, len(body)) + body


def vec16(body):
    return struct.pack(">H", len(body)) + body


def client_hello(tls13=True, version=0x0303):
    """A ClientHello as a browser sends one, with fixed random, session id and X25519 key."""
    suites = [0x1301, 0x1302, 0x1303] if tls13 else []
    suites += [0xC02B, 0xC02C, 0xCCA9, 0xC02F]
    exts = ext(0, vec16(b"\x00" + vec16(b"localhost")))
    exts += ext(10, vec16(struct.pack(">HH", 0x001D, 0x0017)))
    exts += ext(11, b"\x01\x00")
    exts += ext(13, vec16(struct.pack(">HHHH", 0x0403, 0x0804, 0x0401, 0x0503)))
    exts += ext(16, vec16(b"\x08http/1.1"))
    if tls13:
        exts += ext(43, b"\x04\x03\x04\x03\x03")
        exts += ext(45, b"\x01\x01")
        exts += ext(51, vec16(struct.pack(">HH", 0x001D, 32) + bytes(range(9, 41))))
    body = struct.pack(">H", version) + bytes(range(32)) + b"\x20" + bytes(range(100, 132))
    body += vec16(b"".join(struct.pack(">H", c) for c in suites)) + b"\x01\x00" + vec16(exts)
    msg = b"\x01" + struct.pack(">I", len(body))[1:] + body
    return tls_record(22, msg)


HELLO13 = client_hello()
HELLO12 = client_hello(tls13=False)
HELLO10 = tls_record(22, client_hello(tls13=False, version=0x0301)[5:], 0x0301)
# src/transport/tls.rs: a ClientHello that claims 100 bytes, 4 of them given, then a record
# of an unknown content type: rustls fails mid-message (the empty-slice hazard).
HALF_HELLO_THEN_GARBAGE = bytes(
    [22, 3, 1, 0, 8, 1, 0, 0, 100, 3, 3, 0, 0, 0x99, 3, 3, 0, 1, 0]
)


def relay_seed(h, requests):
    """A relay seed: 2 header bytes, then (op byte, request) lines (see fuzz/src/relay_target.rs)."""
    return bytes(h) + b"".join(bytes([op]) + r + b"\n" for op, r in requests)

def op(slot, action, arg=0):
    """An events op byte: the slot (bits 0-2), the action (bits 3-5), its argument (bits 6-7)."""
    return slot | action << 3 | arg << 6


WS, STREAM, RAW, GONE, WINDOW, RELOAD, SYS, CLOCK = range(8)
NEWEST, EPOCH, RESUME, FILLER = b"\x01", b"\x02", b"\x03", b"\x04"  # FILLER: 500 x


def events_seed(h, ops):
    """An events seed: 2 header bytes, then (op byte, line) pairs (see fuzz/src/events.rs)."""
    return bytes(h) + b"".join(bytes([o]) + line + b"\n" for o, line in ops)


def publish(topic, data, retain=False):
    r = b',"retain":true' if retain else b""
    return b'{"type":"publish","topic":"%s","data":%s%s}' % (topic, data, r)


def subscribe(topic, since=None, rid=None):
    out = b'{"type":"subscribe","topic":"%s"' % topic
    if since is not None:
        out += b',"since":"%s"' % since
    if rid is not None:
        out += b',"id":%s' % rid
    return out + b"}"


def state_file(clean, epoch, seq, retained, history):
    """A state file as the relay writes it (src/bin/emberws/relay/state.rs: encode)."""
    entry = lambda e: b'\n{"seq":%d,"topic":"%s","data":%s}' % e
    return (
        b'{"version":1,"clean":%s,"epoch":"%s","seq":%d,\n"retained":['
        % (b"true" if clean else b"false", epoch, seq)
        + b",".join(entry(e) for e in retained)
        + b'],\n"history":['
        + b",".join(entry(e) for e in history)
        + b"]}\n"
    )


STATE_RETAINED = [(4, b"a/1", b"3"), (2, b"a/2", b'{"v":[1,2.50],"s":"x\\"y\\u00e9"}')]
STATE_HISTORY = [
    (1, b"a/1", b"1"),
    (2, b"a/2", b'{"v":[1,2.50],"s":"x\\"y\\u00e9"}'),
    (3, b"b", b'"plain"'),
    (4, b"a/1", b"3"),
    (5, b"c", b"null"),
]
STATE_CLEAN = state_file(True, b"3fa2c9e1", 6, STATE_RETAINED, STATE_HISTORY)

SEEDS = {
    "handshake": {
        "rfc6455": RFC_REQUEST,
        "browser": BROWSER_REQUEST,
        "short-with-frame": SHORT_REQUEST + frame(0x1, b"Hello"),
    },
    "frame_header": {
        # Byte 0: bit 0 clear = server role (masked frames), set = client role.
        "masked-text": b"\x00" + frame(0x1, b"Hello"),
        "masked-16bit": b"\x00" + frame(0x2, bytes(300))[:8],
        "masked-64bit": b"\x00" + frame(0x2, b"", form=2),
        "masked-close": b"\x00" + frame(0x8, b"\x03\xe8bye"),
        "unmasked-text": b"\x01" + frame(0x1, b"Hello", key=None),
        "unmasked-64KiB": b"\x01" + frame(0x2, bytes(65536), key=None)[:10],
    },
    "utf8": {
        # Byte 0 picks the split point.
        "mixed": bytes([7]) + TEXT,
        "greek": bytes([3]) + "κόσμε".encode(),
        "four-byte": bytes([5]) + "𝄞🦀\U0010FFFF".encode(),
    },
    "assemble": {
        # Byte 0: bits 0-2 pick the message size limit, the rest seed the split pattern.
        "fragmented-text-ping-close": bytes([0x2F])
        + frame(0x1, TEXT[:7], fin=False)
        + frame(0x9, b"ping")
        + frame(0x0, TEXT[7:], fin=True)
        + frame(0x8, b"\x03\xe8bye"),
        "binary-16bit-pong": bytes([0x55])
        + frame(0x2, bytes(range(200)))
        + frame(0xA, b"")
        + frame(0x1, b"", form=2),
        "many-small": bytes([0xC6]) + b"".join(frame(0x1, b"msg %d" % i) for i in range(8)),
    },
    "conn": {
        "conversation": conn_seed(ROOMY, [], CONVERSATION),
        # The server shuts down at the end: 1001 to both peers.
        "conversation-then-shutdown": conn_seed(
            ROOMY[:7] + [0x20], [], CONVERSATION[: -len(frame(0x8, b"\x03\xe8bye"))]
        ),
        "conversation-cut-7-and-300": conn_seed(
            with_marks(ROOMY, 2, (2, 3)), [(0x20, 0x10), (0xFF, 0xFF)], CONVERSATION
        ),
        # 125-byte messages, Drop policy, a 64-byte queue and windows: 1009, slow consumers.
        "small-limits": conn_seed(
            [0xAA, 0xF1, 0x3F, 0xEA, 0x02, 0x01, 0x01, 0x01],
            [(0x40, 0x02)],
            frame(0x1, b"s:#")
            + frame(0x1, b"p:x " + bytes(100))
            + frame(0x2, bytes(200))
            + frame(0x1, b"late"),
        ),
        # 1000-byte messages: a fragment fills the buffer, then a ping arrives byte by byte
        # (src/conn/tests.rs a_split_ping_behind_a_full_message_...: it doubled the buffer).
        "full-fragment-then-split-ping": conn_seed(
            [0x14, 0xF7] + ROOMY[2:],
            [],
            frame(0x2, bytes(1000), fin=False) + frame(0x9, b"hello") + frame(0x0, b""),
        ),
        "invalid-utf8": conn_seed(ROOMY, [], frame(0x1, b"ok") + frame(0x1, b"\xce\xba\xff")),
        "rsv-bits": conn_seed(ROOMY, [], frame(0x1, b"x") + b"\xc1\x80" + KEY),
        "unmasked": conn_seed(ROOMY, [], frame(0x1, b"unmasked", key=None)),
        # 100 ms pings, 20 ms pong timeout, 200 ms idle timeout: time passes at the marks.
        "heartbeat-idle": conn_seed(
            [0x16, 0xFF, 0xBF, 0x10, 0x01, 0x00, 0x03, 0x10],
            [(0x02, 0x0D), (0x02, 0x03), (0x40, 0x20)],
            frame(0x1, b"hi") + frame(0xA, b"") + frame(0x1, b"again"),
        ),
        # No canned request: the stream's own head (RFC 6455 §1.2, an Origin, a subprotocol).
        "rfc-head": conn_seed(
            [0x06, 0xFF, 0x3F, 0xEA, 0x03, 0x00, 0x00, 0x0C], [], RFC_REQUEST + frame(0x1, b"hi")
        ),
        "plain-get": conn_seed(
            [0x06, 0xFF, 0x3F, 0xEA, 0x01, 0x00, 0x00, 0x00], [], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        ),
        "version-8": conn_seed(
            [0x06, 0xFF, 0x3F, 0xEA, 0x01, 0x00, 0x00, 0x00],
            [],
            RFC_REQUEST.replace(b"Version: 13", b"Version: 8"),
        ),
        "post": conn_seed(
            [0x06, 0xFF, 0x3F, 0xEA, 0x01, 0x00, 0x00, 0x00], [], b"POST" + RFC_REQUEST[3:]
        ),
        "refused-path": conn_seed(
            [0x06, 0xFF, 0x3F, 0xEA, 0x01, 0x00, 0x00, 0x00],
            [],
            RFC_REQUEST.replace(b"/chat", b"/no"),
        ),
        # A 64-byte head limit and 1 header: 431 either way.
        "head-too-large": conn_seed(
            [0x06, 0x03, 0x3F, 0xEA, 0x01, 0x00, 0x00, 0x00], [], BROWSER_REQUEST
        ),
    },
    "relay": {
        "session": relay_seed(
            [0x0B, 0x07],
            [
                (0x00, b'{"type":"subscribe","topic":"devices/#","id":1}'),
                (0x01, b'{"type":"subscribe","topic":"devices/+/status","id":"b"}'),
                (0x02, b'{"type":"subscribe","topic":"#"}'),
                (0x03, b'{"type":"subscribe","topic":"public/#","id":null}'),
                (0x01, b'{"type":"publish","topic":"devices/alice/status","data":{"t":21.5},"retain":true,"id":"x"}'),
                (0x00, b'{"type":"publish","topic":"public/news","data":"hi","retain":true}'),
                (0x02, b'{"type":"publish","topic":"a/b/c/d","data":[1,[2,[3]]],"id":7}'),
                (0x02, b'{"type":"publish","topic":"x/carol.x","data":null,"retain":true}'),
                (0x03, b'{"type":"ping","id":[1,2]}'),
                (0x03, b'{"type":"publish","topic":"public/anon","data":1}'),
                (0x00, b'{"type":"unsubscribe","topic":"devices/#","id":2}'),
                (0x41, b'{"type":"publish","topic":"public/a","data":{"deep":[[[[1]]]]}}'),
                (0xC2, b'{"type":"subscribe","topic":"alerts"}'),
            ],
        ),
        "errors": relay_seed(
            [0x01, 0x02],
            [
                (0x00, b'{"type":"publish","topic":"devices/bob/x","data":1,"id":1}'),
                (0x00, b'{"type":"subscribe","topic":"a/#/b"}'),
                (0x01, b'{"type":"publish","topic":"shared/+/in","data":1}'),
                (0x01, b'{"type":"nope"}'),
                (0x01, b'{"topic":"x"}'),
                (0x02, b'not json'),
                (0x22, b'\x00\x01binary'),
                (0x02, b'{"type":"publish","topic":"t\\u00e9","data":"\\ud83e\\udd80"}'),
                # Valid JSON that serde_json::Value refuses (out of f64 range): relayed as is.
                (0x02, b'{"type":"subscribe","topic":"+/carol.x","data":1e400}'),
                (0x00, b'{"type":"publish","topic":"devices/alice/big","data":[1e400,-1e999]}'),
            ],
        ),
        # Reload to the second file (bob removed, alice and carol.x with fewer rules) and
        # back; retained values that the new rules make readable come with the reload.
        "reload": relay_seed(
            [0x09, 0x07],
            [
                (0x00, b'{"type":"subscribe","topic":"#","id":1}'),
                (0x02, b'{"type":"subscribe","topic":"#","id":2}'),
                (0x01, b'{"type":"subscribe","topic":"devices/+/status"}'),
                (0x01, b'{"type":"publish","topic":"public/p","data":"r","retain":true}'),
                (0x00, b'{"type":"publish","topic":"devices/alice/a","data":{},"retain":true}'),
                (0x42, b'{"type":"publish","topic":"alerts","data":true,"retain":true}'),
                (0x01, b'{"type":"ping"}'),
                (0xC0, b'{"type":"ping","id":"after"}'),
                (0x03, b'{"type":"subscribe","topic":"public/+"}'),
            ],
        ),
        # Anonymous access off (the fourth peer is refused with 401), a 64-byte retained cap.
        "no-anonymous-small-cap": relay_seed(
            [0x04, 0x07],
            [
                (0x02, b'{"type":"publish","topic":"a/b/c","data":"%s","retain":true}' % (b"x" * 20)),
                (0x02, b'{"type":"publish","topic":"a/b/c/d","data":"%s","retain":true}' % (b"y" * 20)),
                (0x02, b'{"type":"publish","topic":"a/b/c","data":null,"retain":true,"id":0}'),
                (0x02, b'{"type":"subscribe","topic":"a/+/c/#","id":[]}'),
                (0x03, b'{"type":"ping"}'),
            ],
        ),
        # Rates on, no strikes left: refusals, then the 1008 close for abuse.
        "rates": relay_seed(
            [0x0E, 0x00],
            [(0x02, b'{"type":"publish","topic":"x/carol.x","data":%d,"retain":true}' % i) for i in range(8)]
            + [(0x1E, b'{"type":"publish","topic":"alerts","data":"' + b"a" * 400 + b'"}')],
        ),
    },
    "events": {
        # Loopback, history and retained caps at their defaults, 64 KiB queues: a stream
        # that comes back with the last id it saw (byte 3), one from the newest id (byte 1),
        # a WebSocket catching up, $SYS values for an anonymous stream, a keep-alive, a
        # reload and back, HEAD and a header that is not UTF-8, refusals (400, 403, 401).
        "resume": events_seed(
            [0xFC, 0x3F],
            [
                (op(3, WS), publish(b"public/a", b"1", retain=True)),
                (op(1, STREAM), b"topic=public/%23"),
                (op(3, WS), publish(b"public/b", b'{"n":[2]}')),
                (op(1, GONE), b""),
                (op(3, WS), publish(b"public/c", b'"x\\ny"')),
                (op(1, STREAM), b"topic=public/%23\t" + RESUME),
                (op(2, STREAM), b"topic=public/b&lastEventID=" + NEWEST),
                (op(0, WS), subscribe(b"public/#", since=EPOCH + b"-1", rid=b"1")),
                (op(4, WS), subscribe(b"#", since=NEWEST)),
                (op(0, SYS, 1), b"12"),
                (op(5, STREAM), b"topic=$SYS/%23&topic=public/a"),
                (op(6, STREAM), b"/events?topic=%23&token=tok-carol"),
                (op(7, STREAM), b"topic=devices/%2B/status\t\tBearer tok-bob"),
                (op(2, WS), publish(b"alerts", b"true", retain=True)),
                (op(0, CLOCK, 2), b""),
                (op(0, RAW), b"HEAD /events?topic=a"),
                (op(0, RAW), b"GET /events?topic=public/%23\tLast-Event-ID: \xff\xfe"),
                (op(0, RAW), b"GET /events?topic=public/%23&token=nope"),
                (op(3, STREAM), b""),
                (op(3, STREAM), b"topic=a/%23/b"),
                (op(3, STREAM), b"topic=devices/bob/%23&token=tok-alice"),
                (op(3, STREAM), b"/healthz"),
                (op(0, RELOAD, 1), b""),
                (op(2, WS), publish(b"x/carol.x", b"[]", retain=True)),
                (op(0, RELOAD, 0), b""),
            ],
        ),
        # A public listener without anonymous access, 4 messages a topic in 4 KiB of
        # history, a 4 KiB queue: slow readers (1 and 100 bytes at a time) catching up,
        # a gap, another epoch's id, one ahead of the relay, wrong tokens until a lockout.
        "slow-public": events_seed(
            [0x9A, 0x25],
            [
                (op(1, WS), subscribe(b"devices/+/status")),
                (op(0, WS), publish(b"devices/alice/status", b'"%s"' % (b"s" * 300))),
                (op(0, WS), publish(b"devices/alice/status", b"2", retain=True)),
                (op(2, WS), publish(b"a/b/c/d", b'"%s"' % (b"d" * 900))),
                (op(2, WS), publish(b"a/b/c/d", b"[1]", retain=True)),
                (op(3, STREAM), b"topic=devices/%23&token=tok-alice\t" + EPOCH + b"-1"),
                (op(3, WINDOW, 0), b""),
                (op(4, STREAM), b"topic=a/%2B/c/%23&topic=%2B/carol.x\t" + EPOCH + b"-2\tBearer tok-carol"),
                (op(4, WINDOW, 1), b""),
                (op(6, WS), subscribe(b"#", since=EPOCH + b"-3", rid=b'"c"')),
                (op(6, WINDOW, 1), b""),
                (op(2, WS), publish(b"a/b/c/e", b'"%s"' % (b"e" * 1200))),
                (op(0, WS), publish(b"devices/alice/x", b"3")),
                (op(5, STREAM), b"topic=%23&token=tok-alice\t00000000-1"),
                (op(7, STREAM), b"topic=%23&token=tok-alice\t" + EPOCH + b"-999999"),
                (op(0, STREAM), b"topic=public/%23\tnonsense"),
                (op(0, STREAM), b"topic=public/%23&token=wrong1"),
                (op(0, STREAM), b"topic=public/%23&token=wrong2"),
                (op(0, STREAM), b"topic=public/%23&token=wrong3"),
                (op(0, STREAM), b"topic=public/%23&token=wrong4"),
                (op(0, STREAM), b"topic=public/%23&token=wrong5"),
                (op(0, STREAM), b"topic=public/%23&token=tok-alice"),
                (op(0, CLOCK, 1), b""),
                (op(3, WINDOW, 3), b""),
                (op(4, WINDOW, 3), b""),
            ],
        ),
        # History off, one subscription allowed, the Drop policy: since the newest id, an
        # invalid since, a second stream topic past the cap, unsubscribe and again.
        "no-history": events_seed(
            [0x01, 0x40],
            [
                (op(3, WS), publish(b"public/x", b"1", retain=True)),
                (op(3, WS), subscribe(b"public/#", since=NEWEST)),
                (op(3, WS), publish(b"public/x", b"2")),
                (op(0, WS), subscribe(b"public/#", since=b"3fa2c9e1-0", rid=b"[0]")),
                (op(0, WS), subscribe(b"public/+")),
                (op(0, WS), b'{"type":"unsubscribe","topic":"public/+"}'),
                (op(0, WS), subscribe(b"public/+", since=RESUME)),
                (op(1, STREAM), b"topic=public/x&topic=public/y"),
                (op(1, STREAM), b"topic=public/x\t" + NEWEST),
                (op(3, WS), publish(b"public/x", b"3")),
            ],
        ),
        # Catch-ups paced by readers of 100 bytes at a time (a WebSocket and a stream, both
        # from message 1 of 20 KB of history) while live messages are published: those come
        # through history, after the replay, once.
        "paced-catchup": events_seed(
            [0xFC, 0x32],
            [(op(3, WS), publish(b"public/k", b'"%d%s"' % (i, FILLER * 2))) for i in range(20)]
            + [
                (op(0, WINDOW, 1), b""),
                (op(1, WINDOW, 1), b""),
                (op(0, WS), subscribe(b"public/#", since=EPOCH + b"-1")),
                (op(3, WS), publish(b"public/k", b'"live1"')),
                (op(1, STREAM), b"topic=public/%23\t" + EPOCH + b"-1"),
                (op(3, WS), publish(b"public/k", b'"live2"')),
                (op(3, WS), publish(b"public/j", b'"live3"', retain=True)),
            ],
        ),
        # Found by this target: two patterns of one stream that match one retained value
        # (each got its own replay: the value came twice), and the same resuming from
        # history (each caught up on its own cursor: older ids after newer, twice).
        "overlap-retained": events_seed(
            [0xFC, 0x3F],
            [
                (op(3, WS), publish(b"public/a", b"1", retain=True)),
                (op(6, STREAM), b"/events?topic=%23&t&topic=public/a"),
            ],
        ),
        "overlap-since": events_seed(
            [0xFC, 0x3F],
            [
                (op(3, WS), publish(b"public/a", b"1")),
                (op(3, WS), publish(b"public/b", b"2")),
                (op(3, WS), publish(b"public/b", b"3")),
                (op(1, STREAM), b"topic=public/%23&topic=public/b\t" + EPOCH + b"-1"),
            ],
        ),
    },
    "state": {
        # Byte 0: the limits (see fuzz/src/state_target.rs); 0xFF: the defaults.
        "clean": b"\xff" + STATE_CLEAN,
        "not-clean": b"\xff" + STATE_CLEAN.replace(b'"clean":true', b'"clean":false'),
        "clean-tight-limits": b"\x05" + STATE_CLEAN,
        "empty": b"\xff" + state_file(True, b"00000000", 0, [], []),
        "truncated": b"\xff" + STATE_CLEAN[: len(STATE_CLEAN) // 2],
        "version-2": b"\xff" + STATE_CLEAN.replace(b'"version":1', b'"version":2'),
        # A clean file counted to u64::MAX: the next publish overflowed (now refused past
        # 2^53 - 1, the largest count a browser compares exactly); and one at that count.
        "seq-u64-max": b"\xff" + state_file(True, b"3fa2c9e1", 2**64 - 1, [(2**64 - 1, b"a", b"1")], []),
        "seq-2-53": b"\xff" + state_file(True, b"3fa2c9e1", 2**53 - 1, [(2**53 - 1, b"a", b"1")], []),
        # Found by this target: a retained value and a history message with one id that
        # differ (loaded, the relay had two messages with one id; now refused).
        "one-id-two-messages": b"\xff"
        + state_file(
            True,
            b"3fa2c9e1",
            6,
            STATE_RETAINED,
            [(2, b"a/3", STATE_RETAINED[1][2]) if e[0] == 2 else e for e in STATE_HISTORY],
        ),
    },
    "tls": {
        # Byte 0: window and read buffer (see fuzz/src/tls.rs).
        "hello13": b"\x00" + tls_feed(HELLO13) + b"\x02",
        "hello13-in-pieces": b"\x05" + tls_feed(HELLO13, 7) + b"\x02\x03",
        "hello12": b"\x04" + tls_feed(HELLO12) + b"\x01\x02",
        "hello10": b"\x00" + tls_feed(HELLO10),
        "hello13-small-window": b"\x02" + tls_feed(HELLO13) + b"\x02\x02\x02",
        "half-hello-then-garbage": b"\x00" + tls_feed(HALF_HELLO_THEN_GARBAGE),
        "half-hello-then-garbage-split": b"\x00" + tls_feed(HALF_HELLO_THEN_GARBAGE, 13),
        "half-hello-then-eof": b"\x00" + tls_feed(HALF_HELLO_THEN_GARBAGE[:13]) + b"\x03",
        "plain-http": b"\x00" + tls_feed(RFC_REQUEST),
        # A real rustls client (byte 0 bit 4; bit 5: TLS 1.2), then which flight byte to
        # flip (none here) and the application data.
        "client13": b"\x10\x00\x00\x00" + b"GET /chat HTTP/1.1\r\n\r\n" + frame(0x1, TEXT),
        "client12-small-reads": b"\x3c\x00\x00\x00" + bytes(range(256)) * 3,
        "client13-window-7": b"\x12\x00\x00\x00hello",
        "client13-flipped-finished": b"\x10\x01\x05\x40hello",
        "client12-flipped-hello": b"\x30\x00\x20\x01hello",
        "hello-then-junk-records": b"\x00"
        + tls_feed(HELLO13 + tls_record(20, b"\x01") + tls_record(23, bytes(40), 0x0303))
        + b"\x02",
    },
    "resp": {
        # Byte 0: 0xFE keeps every default limit on a RESP2 connection, 0xFF on RESP3; a
        # clear bit tightens one limit.
        "pmessage": b"\xfe" + pmessage(b"emberws:*", b"emberws:s/temp", b'{"data":21.5}'),
        "pubsub-session": b"\xfe"
        + b"*3\r\n$10\r\npsubscribe\r\n$9\r\nemberws:*\r\n:1\r\n"
        + b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:2\r\n"
        + b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
        + pmessage(b"emberws:*", b"emberws:a/b", bytes(range(256)))
        + b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
        + b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n",
        "replies": b"\xfe"
        + b"+OK\r\n+PONG\r\n:1\r\n:-9223372036854775808\r\n$-1\r\n*-1\r\n*0\r\n$0\r\n\r\n"
        + b"-ERR unknown command 'FOO', with args beginning with: \r\n"
        + command(b"s/temp", b"21.5", b"s/hum", b"40")
        + b"*2\r\n*2\r\n:1\r\n*0\r\n$3\r\na\r\n\r\n",
        "resp3": b"\xff"
        + b"%3\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n$7\r\nmodules\r\n*0\r\n"
        + pmessage(b"emberws:*", b"emberws:s/temp", b"21.5", push=True)
        + b"_\r\n#t\r\n#f\r\n,1.5\r\n,-inf\r\n(12345678901234567890\r\n"
        + b"!21\r\nSYNTAX invalid syntax\r\n=15\r\ntxt:Some string\r\n~2\r\n+a\r\n+b\r\n",
        "command": b"\xfe"
        + command(b"PUBLISH", b"emberws:s/temp", b"21.5")
        + command(b"HSET", b"emberws:retained", b"s/temp", b"a\r\nb"),
        "deep": b"\xfe" + b"*1\r\n" * 9 + b":1\r\n",
    },
}

for target, seeds in SEEDS.items():
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(data)
