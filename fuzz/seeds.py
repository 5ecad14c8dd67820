#!/usr/bin/env python3
"""Writes the committed seed corpus, fuzz/corpus/TARGET/seed-*: valid requests and frames.

Run from anywhere: python3 fuzz/seeds.py. The first byte of every frame_header, utf8 and
assemble seed is the split/role byte the targets read (see fuzz/src/lib.rs).
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
}

for target, seeds in SEEDS.items():
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(data)
