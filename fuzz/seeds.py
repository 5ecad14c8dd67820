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
