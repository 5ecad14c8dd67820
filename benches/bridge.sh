#!/usr/bin/env bash
# Cross-instance publish → delivery latency through the Redis bridge, beside one relay alone.
#
# One redis-server (no persistence) and three relays, all pinned to core 0: S alone, A and B
# bridged through Redis. The load generator (examples/load, pinned to core 1) runs `fanout`
# three ways, interleaved, RUNS times each:
#   single  subscribers and publisher on S (no bridge)
#   local   subscribers and publisher on A (bridged: every publish also goes to Redis, and
#           comes back on A's subscriber link, where A skips its own)
#   cross   subscribers on B, publisher on A (--publish-url): A → Redis → B
#   split   every second subscriber on B, the others and the publisher on A (--split-url):
#           one fan-out served by two relays (CPU: A's)
# and prints, per way, the medians of the runs: delivery latency p50 and p99, the measured
# relay's CPU per delivery (S, A, B), and the run queue waits (trust a run only when they are
# low: the machine is shared).
#
#   benches/bridge.sh                       # RUNS=5, SUBS=1, RATE=1000, DURATION=5
#   SUBS=100 benches/bridge.sh              # fan-out to 100 subscribers
#   SUBS=10000 RATE=2 DURATION=10 WAYS="single split" benches/bridge.sh   # 10,000, split
#
# Needs redis-server, taskset, python3 and release builds of emberws and the load generator
# (`cargo build --release --bin emberws --example load`; done here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
SUBS=${SUBS:-1}
RATE=${RATE:-1000}
DURATION=${DURATION:-5}
WAYS=${WAYS:-single local cross}
ulimit -n 65536 2>/dev/null || true
BIN=target/release/emberws
LOAD=target/release/examples/load
OUT=target/bridge
mkdir -p "$OUT"

[ -x "$BIN" ] && [ -x "$LOAD" ] || cargo build --release --bin emberws --example load

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RP=$(free_port); PS=$(free_port); PA=$(free_port); PB=$(free_port)

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

taskset -c 0 redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize no >"$OUT/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/"$RP") 2>/dev/null && break
    sleep 0.1
done
start() { # port [args...]
    local port=$1; shift
    RUST_LOG=warn taskset -c 0 "$BIN" --listen "127.0.0.1:$port" --max-connections 20000 "$@" \
        2>>"$OUT/relay-$port.log" &
    pids+=($!)
}
start "$PS"; S=${pids[-1]}
start "$PA" --redis "redis://127.0.0.1:$RP"; A=${pids[-1]}
start "$PB" --redis "redis://127.0.0.1:$RP"; B=${pids[-1]}
for port in "$PS" "$PA" "$PB"; do
    for _ in $(seq 50); do
        (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
        sleep 0.1
    done
done
sleep 1 # the bridged relays connect to Redis and subscribe

runs="$OUT/runs.txt"
: >"$runs"
for run in $(seq "$RUNS"); do
    for way in $WAYS; do
        case $way in
            single) args=(--url "ws://127.0.0.1:$PS/" --server-pid "$S") ;;
            local) args=(--url "ws://127.0.0.1:$PA/" --server-pid "$A") ;;
            cross) args=(--url "ws://127.0.0.1:$PB/" --publish-url "ws://127.0.0.1:$PA/" --server-pid "$B") ;;
            split) args=(--url "ws://127.0.0.1:$PA/" --split-url "ws://127.0.0.1:$PB/" --server-pid "$A") ;;
        esac
        line=$(taskset -c 1 "$LOAD" fanout --subscribers "$SUBS" --rate "$RATE" \
            --duration "$DURATION" --topic "bench/$way/$run" --source-count 4 "${args[@]}" \
            2>>"$OUT/load.log")
        echo "$way $line" >>"$runs"
        echo "$way run $run done" >&2
    done
done

python3 - "$runs" "$SUBS" "$RATE" <<'EOF'
import json, statistics as st, sys
rows = {}
for line in open(sys.argv[1]):
    way, _, j = line.partition(" ")
    rows.setdefault(way, []).append(json.loads(j))
print(f"fan-out to {sys.argv[2]} subscriber(s) at {sys.argv[3]}/s, medians of {len(next(iter(rows.values())))} runs")
print("| way | delivery p50 µs | p99 µs | relay CPU µs/delivery | run queue wait relay / load | delivered |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for way, ds in rows.items():
    m = lambda f: st.median(f(d) for d in ds)
    got, want = sum(d["delivered"] for d in ds), sum(d["expected"] for d in ds)
    print(f"| {way} | {m(lambda d: d['delivery_us']['p50']):,.0f} | {m(lambda d: d['delivery_us']['p99']):,.0f} "
          f"| {m(lambda d: d['server_cpu_us_per_delivery']):.2f} "
          f"| {m(lambda d: d['server_runq_wait_pct']):.1f}% / {m(lambda d: d['client_runq_wait_pct']):.1f}% "
          f"| {got:,} of {want:,} |")
EOF
