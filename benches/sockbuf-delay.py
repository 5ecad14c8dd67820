#!/usr/bin/env python3
"""What a cap on the relay's socket send buffer costs a subscriber far away: its throughput
over a link with a round-trip time of RTT, with and without `--socket-send-buffer`.

    benches/sockbuf-delay.py target/release/emberws                  # RTT 50 and 200 ms, 3 runs
    RTTS=50 CAPS=0,16384 RUNS=1 benches/sockbuf-delay.py target/release/emberws

Needs root, `ip` (iproute2) and Python 3 with `websockets`. Not run in CI.

The link is real to TCP: two network namespaces made for the run, joined by a delay line
of our own (this kernel has no netem) that moves IP packets between a TUN device in each,
holding every packet RTT/2 each way, so data and ACKs are both late and the relay's socket
sees the round trip. (A proxy at the application level cannot show this cost: the relay's
socket talks to the proxy over loopback, whose ACKs come at once.)

    bh-srv-PID: emberws (a listener on the link, one on lo), the publisher on lo
    bh-cli-PID: the subscriber, through the line to 10.77.0.1
    the delay line: this script's `line` mode, on the two TUN file descriptors

The publisher sends 32 KiB messages as fast as the subscriber takes them, keeping at most
WINDOW bytes (16 MiB) published and not yet received, so the link is always full and the
relay's queue (--max-backpressure 64 MiB) never trips the slow-consumer policy. The
subscriber's bytes per second are measured over MEASURE seconds (10) after WARMUP (5, for
TCP's slow start). Each row: RTT, cap, the median of RUNS runs and every run, in MB/s.
Runs are interleaved (every cap once, then again) so the machine's load spreads over all.
Everything made is removed at the end, also on Ctrl-C.
"""

import asyncio
import ctypes
import fcntl
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections import deque

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000

SERVER_IP, CLIENT_IP = "10.77.0.1", "10.77.0.2"
LINK_PORT, LOCAL_PORT = 19731, 19732
SIZE = 32 * 1024
WINDOW = 16 << 20


def env_list(name, default):
    return [int(x) for x in os.environ.get(name, default).split(",") if x]


def line(fd_a, fd_b, one_way_s):
    """The delay line: each packet read from one TUN is written to the other one_way_s later."""
    os.set_blocking(fd_a, False)
    os.set_blocking(fd_b, False)
    import select
    queues = {fd_a: deque(), fd_b: deque()}  # packets due to be written to that fd
    other = {fd_a: fd_b, fd_b: fd_a}
    while True:
        now = time.monotonic()
        for fd, q in queues.items():
            while q and q[0][0] <= now:
                try:
                    os.write(fd, q.popleft()[1])
                except OSError:
                    pass  # the device is down or its queue is full: the packet is lost
        due = min((q[0][0] for q in queues.values() if q), default=now + 0.05)
        ready, _, _ = select.select([fd_a, fd_b], [], [], max(0.0, due - time.monotonic()))
        now = time.monotonic()
        for fd in ready:
            for _ in range(256):
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                queues[other[fd]].append((now + one_way_s, packet))


def tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def ip(*args):
    subprocess.run(["ip", *args], check=True)


class Net:
    """The two namespaces and a TUN device in each (kept open by this process)."""

    def __init__(self):
        pid = os.getpid()
        self.srv, self.cli = f"bh-srv-{pid}", f"bh-cli-{pid}"
        self.made = []
        for ns in (self.srv, self.cli):
            ip("netns", "add", ns)
            self.made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        self.fds = []
        for ns, dev, me, peer in ((self.srv, f"bhs{pid}", SERVER_IP, CLIENT_IP),
                                  (self.cli, f"bhc{pid}", CLIENT_IP, SERVER_IP)):
            self.fds.append(tun(dev))
            ip("link", "set", dev, "netns", ns)
            ip("-n", ns, "addr", "add", me, "peer", peer, "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")

    def close(self):
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], check=False)
        for fd in self.fds:
            os.close(fd)


libc = ctypes.CDLL(None, use_errno=True)


def socket_in(ns, addr):
    """A TCP socket connected to addr from inside the namespace ns."""
    here = os.open("/proc/self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(there, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        s = socket.create_connection(addr, timeout=10)
        s.settimeout(None)
        return s
    finally:
        libc.setns(here, CLONE_NEWNET)
        os.close(here)
        os.close(there)


async def measure(net, warmup, seconds, relay):
    """One run against the relay already started: the subscriber's payload bytes per second."""
    import websockets
    sub_sock = socket_in(net.cli, (SERVER_IP, LINK_PORT))
    pub_sock = socket_in(net.srv, ("127.0.0.1", LOCAL_PORT))
    # No keepalive pings of the client's own: behind a full queue their pongs come late. At
    # the end the relay is killed: no close handshake to wait for behind megabytes.
    big = {"max_size": 1 << 20, "ping_interval": None, "close_timeout": 0.5}
    result = []
    try:
        await exchange(websockets, sub_sock, pub_sock, big, warmup, seconds, relay, result)
    except websockets.exceptions.ConnectionClosed:
        if not result:
            raise  # during the run, not at its end
    return result[0]


async def exchange(websockets, sub_sock, pub_sock, big, warmup, seconds, relay, result):
    async with websockets.connect(f"ws://{SERVER_IP}:{LINK_PORT}/", sock=sub_sock, **big) as sub, \
            websockets.connect(f"ws://127.0.0.1:{LOCAL_PORT}/", sock=pub_sock, **big) as pub:
        await sub.send('{"type":"subscribe","topic":"bench","id":1}')
        await sub.recv()  # the ack
        frame = '{"type":"publish","topic":"bench","data":"' + "x" * SIZE + '"}'
        state = {"sent": 0, "got": 0}
        wake = asyncio.Event()

        async def publish():
            while True:
                while state["sent"] - state["got"] >= WINDOW:
                    wake.clear()
                    await wake.wait()
                await pub.send(frame)
                state["sent"] += SIZE

        async def receive():
            while True:
                await sub.recv()
                state["got"] += SIZE
                wake.set()

        tasks = [asyncio.create_task(publish()), asyncio.create_task(receive())]
        try:
            await asyncio.sleep(warmup)
            start, got0 = time.monotonic(), state["got"]
            await asyncio.sleep(seconds)
            elapsed, got = time.monotonic() - start, state["got"] - got0
        finally:
            for t in tasks:
                t.cancel()
            stop(relay)
        result.append(got / elapsed)


def start_relay(net, emberws, cap):
    flags = ["--listen", f"{SERVER_IP}:{LINK_PORT}", "--listen", f"127.0.0.1:{LOCAL_PORT}",
             "--allow-anonymous", "--max-backpressure", str(64 << 20)]
    if cap:
        flags += ["--socket-send-buffer", str(cap)]
    relay = subprocess.Popen(["ip", "netns", "exec", net.srv, emberws, *flags],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for text in relay.stderr:
        if f"127.0.0.1:{LOCAL_PORT}" in text:
            break
    else:
        raise SystemExit(f"emberws did not start: exit {relay.wait()}")
    # Keep reading its log, so that it never blocks on a full pipe.
    threading.Thread(target=lambda: relay.stderr.read(), daemon=True).start()
    return relay


def stop(proc):
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "line":
        line(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]) / 2000.0)
        return
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    emberws = os.path.abspath(sys.argv[1])
    rtts = env_list("RTTS", "50,200")
    caps = env_list("CAPS", "0,16384,65536")
    runs = int(os.environ.get("RUNS", "3"))
    warmup = float(os.environ.get("WARMUP", "5"))
    seconds = float(os.environ.get("MEASURE", "10"))
    net = Net()
    results = {}
    try:
        for rtt in rtts:
            delay = subprocess.Popen([sys.executable, __file__, "line", str(net.fds[0]),
                                      str(net.fds[1]), str(rtt)], pass_fds=net.fds)
            try:
                for run in range(runs):
                    for cap in caps:
                        relay = start_relay(net, emberws, cap)
                        try:
                            rate = asyncio.run(measure(net, warmup, seconds, relay))
                        finally:
                            stop(relay)
                        results.setdefault((rtt, cap), []).append(rate)
                        print(f"sockbuf-delay: RTT {rtt} ms, cap {cap or 'none'}, run {run + 1}: "
                              f"{rate / 1e6:.3f} MB/s", file=sys.stderr, flush=True)
            finally:
                stop(delay)
    finally:
        net.close()
    print("| RTT | --socket-send-buffer | median MB/s | runs MB/s |")
    print("| ---: | ---: | ---: | --- |")
    for (rtt, cap), rates in results.items():
        runs_text = ", ".join(f"{r / 1e6:.3f}" for r in rates)
        print(f"| {rtt} ms | {cap or 'none (autotuning)'} | {statistics.median(rates) / 1e6:.3f} | "
              f"{runs_text} |")


if __name__ == "__main__":
    main()
