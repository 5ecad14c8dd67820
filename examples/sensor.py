#!/usr/bin/env python3
"""A sensor for the emberws relay: publishes a reading every second, retained, so that a
dashboard opened later shows the latest value at once.

    python3 examples/sensor.py --topic greenhouse/1/temperature
    python3 examples/sensor.py --url wss://board:9443/ --token TOKEN --topic devices/greenhouse-1/temp \\
        --file /sys/class/thermal/thermal_zone0/temp --scale 0.001

Each reading is published as {"t": UNIX_TIME, "value": NUMBER} with "retain": true and an
"id", and counts once the relay acknowledges it. Without --file the value is simulated (a
slow wave with noise). When the relay is away, at start or later, the sensor reconnects with
exponential backoff (full jitter, capped); a refused token (401, 403) or a topic the token
may not publish to ends it with exit status 1. --count N stops after N acknowledged readings.

Needs the `websockets` package (Debian: python3-websockets; PyPI: websockets), version 10
or later.
"""

import argparse
import asyncio
import inspect
import json
import math
import random
import sys
import time

import websockets

# Reconnect backoff: the first wait is at most BACKOFF_FIRST seconds, each failure doubles
# the cap up to BACKOFF_MAX, and the wait is uniform in [0, cap] (full jitter), so that many
# sensors restarted together do not reconnect in step.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
# How long the relay may take to acknowledge a reading before the link counts as dead.
ACK_TIMEOUT = 10.0


class Refused(Exception):
    """Retrying cannot help: the relay refused the token or the topic."""


def parse_args(argv):
    p = argparse.ArgumentParser(description="Publish a reading every interval to an emberws relay.")
    p.add_argument("--url", default="ws://127.0.0.1:9001/", help="the relay [ws://127.0.0.1:9001/]")
    p.add_argument("--topic", required=True, help="the topic to publish to, e.g. greenhouse/1/temperature")
    p.add_argument("--token", help="a client token (`emberws token NAME`), sent as Authorization: Bearer")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between readings [1]")
    p.add_argument("--count", type=int, default=0, help="stop after this many acknowledged readings; 0 = never [0]")
    p.add_argument("--file", help="read the value from this file (a number), e.g. a thermal zone")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the file's number by this [1]")
    args = p.parse_args(argv)
    if args.interval <= 0:
        p.error("--interval must be more than 0")
    if args.count < 0:
        p.error("--count must be 0 or more")
    return args


def log(msg):
    print(f"sensor: {msg}", file=sys.stderr, flush=True)


def read_value(args, start):
    """The current reading: from --file, or simulated."""
    if args.file:
        with open(args.file) as f:
            return float(f.read().strip()) * args.scale
    t = time.monotonic() - start
    return round(21.0 + 2.0 * math.sin(t / 60.0) + random.gauss(0.0, 0.05), 3)


def connect(args):
    """websockets.connect with the token's header; the keyword changed in websockets 14."""
    kwargs = {"open_timeout": 10}
    if args.token:
        headers = {"Authorization": f"Bearer {args.token}"}
        params = inspect.signature(websockets.connect).parameters
        name = "additional_headers" if "additional_headers" in params else "extra_headers"
        kwargs[name] = headers
    return websockets.connect(args.url, **kwargs)


def refused_status(error):
    """The HTTP status of a refused upgrade, whichever websockets version raised it."""
    status = getattr(error, "status_code", None)
    if status is None:
        response = getattr(error, "response", None)
        status = getattr(response, "status_code", None)
    return status


async def publish_readings(ws, args, state):
    """Publishes one reading per interval on an open connection until --count is reached."""
    while args.count == 0 or state["acked"] < args.count:
        state["id"] += 1
        reading = {"t": round(time.time(), 3), "value": read_value(args, state["start"])}
        request = {"type": "publish", "topic": args.topic, "data": reading,
                   "retain": True, "id": state["id"]}
        await ws.send(json.dumps(request))
        answer = json.loads(await asyncio.wait_for(ws.recv(), ACK_TIMEOUT))
        if answer.get("type") == "ack" and answer.get("id") == state["id"]:
            state["acked"] += 1
            print(json.dumps({"topic": args.topic, "data": reading,
                              "delivered": answer.get("delivered")}), flush=True)
        elif answer.get("type") == "error":
            reason = answer.get("reason", "")
            if reason == "not allowed":
                raise Refused(f"the relay does not let this client publish to {args.topic}")
            log(f"the relay refused a reading: {reason}")  # e.g. a rate limit: try the next
        # Readings keep their pace: the next is due one interval after this one was due.
        state["due"] += args.interval
        await asyncio.sleep(max(0.0, state["due"] - time.monotonic()))


async def run(args):
    state = {"start": time.monotonic(), "due": time.monotonic(), "id": 0, "acked": 0}
    cap = BACKOFF_FIRST
    while True:
        try:
            async with connect(args) as ws:
                log(f"connected to {args.url}")
                cap = BACKOFF_FIRST
                state["due"] = time.monotonic()
                await publish_readings(ws, args, state)
                return 0
        except Refused as e:
            log(str(e))
            return 1
        except websockets.exceptions.InvalidHandshake as e:
            status = refused_status(e)
            if status in (401, 403):
                log(f"the relay refused the connection ({status}): check --token")
                return 1
            reason = f"upgrade failed: {e}"
        except (OSError, asyncio.TimeoutError, websockets.exceptions.ConnectionClosed) as e:
            reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        wait = random.uniform(0.0, cap)
        log(f"{reason}; reconnecting in {wait:.1f} s")
        await asyncio.sleep(wait)
        cap = min(cap * 2.0, BACKOFF_MAX)


def main(argv=None):
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
