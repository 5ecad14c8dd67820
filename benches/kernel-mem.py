#!/usr/bin/env python3
"""Kernel memory per connection: what the server's sockets cost outside user space.

    benches/kernel-mem.py target/release/emberws                      # 10,000 idle, 200 stalled
    benches/kernel-mem.py target/release/emberws --socket-send-buffer 16384
    IDLE=1000 STALLED=50 benches/kernel-mem.py target/release/emberws

Runs the relay on loopback (extra arguments go to it), then:
1. opens IDLE WebSocket connections that stay idle, and reads the slab caches a TCP socket
   lives in (TCP, sock_inode_cache, dentry, filp, eventpoll) and /proc/net/sockstat's TCP
   `mem` (pages of socket buffers) before and after;
2. opens STALLED subscribers that never read while one publisher sends 1 KiB messages for
   SECONDS (5), sampling sockstat's `mem` every 50 ms: its peak is the kernel memory that
   readers which stopped reading make the server hold.
Both ends of a loopback connection are in this kernel: the figures per connection count the
client's socket too (a remote client's end is on its own host; the server's end is about
half of the slab figure, and all of the send-side buffer figure). Needs root for
/proc/slabinfo. Prints a Markdown table.
"""
import os
import re
import resource
import socket
import subprocess
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")
CACHES = ("TCP", "TCPv6", "sock_inode_cache", "dentry", "filp", "eventpoll_epi", "eventpoll_pwq")
UPGRADE = (
    "GET / HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode()


def slab_bytes():
    total = 0
    with open("/proc/slabinfo") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] in CACHES:
                total += int(parts[1]) * int(parts[3])  # active objects × object size
    return total


def sockstat():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()[1:]
                values = dict(zip(fields[::2], map(int, fields[1::2])))
                return values["inuse"], values["mem"] * PAGE
    raise RuntimeError("no TCP line in /proc/net/sockstat")


def frame(text):
    """A masked text frame (mask key 0: the payload as is)."""
    data = text.encode()
    n = len(data)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 65536:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + data


def connect(port, source):
    s = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    s.sendall(UPGRADE)
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed during the upgrade")
        answer += chunk
    if not answer.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(answer.split(b"\r\n")[0].decode())
    return s


def main():
    binary = sys.argv[1]
    extra = sys.argv[2:]
    idle = int(os.environ.get("IDLE", "10000"))
    stalled = int(os.environ.get("STALLED", "200"))
    seconds = float(os.environ.get("SECONDS", "5"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--max-connections", str(idle + stalled + 16)] + extra,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = None
        for line in server.stderr:
            m = re.search(r"listening on ws://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        if port is None:
            raise RuntimeError("the server did not start")
        sources = [f"127.0.0.{i}" for i in range(1, 9)]
        slab0, (inuse0, mem0) = slab_bytes(), sockstat()
        conns = [connect(port, sources[i % len(sources)]) for i in range(idle)]
        time.sleep(1)
        slab1, (inuse1, mem1) = slab_bytes(), sockstat()
        per_idle_slab = (slab1 - slab0) / idle
        per_idle_buf = (mem1 - mem0) / idle

        subs = []
        for i in range(stalled):
            s = connect(port, sources[i % len(sources)])
            s.sendall(frame('{"type":"subscribe","topic":"t"}'))
            subs.append(s)
        publisher = connect(port, "127.0.0.1")
        publisher.settimeout(5)
        message = frame('{"type":"publish","topic":"t","data":"' + "x" * 1000 + '"}')
        time.sleep(0.5)
        _, base = sockstat()
        peak = base
        end = time.time() + seconds
        sent = 0
        while time.time() < end:
            publisher.sendall(message * 64)
            sent += 64
            _, mem = sockstat()
            peak = max(peak, mem)
            time.sleep(0.05)
        per_stalled = (peak - base) / stalled
        print(f"| server args | idle: slab per connection | idle: socket buffers per connection | stalled reader: peak socket buffers per connection |")
        print("| --- | ---: | ---: | ---: |")
        print(
            f"| `{' '.join(extra) or '(defaults)'}` | {per_idle_slab:,.0f} B | {per_idle_buf:,.0f} B | "
            f"{per_stalled:,.0f} B |"
        )
        print(
            f"\n{idle:,} idle connections (TCP sockets in use {inuse0} → {inuse1}), {stalled} stalled "
            f"subscribers, {sent} publishes of 1 KiB in {seconds:g} s.",
            file=sys.stderr,
        )
        for s in conns + subs + [publisher]:
            s.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
