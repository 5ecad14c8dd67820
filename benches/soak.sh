#!/usr/bin/env bash
# A soak of the relay: `emberws` (the relay) pinned to core 0, `load soak` pinned to core 1 for
# MINUTES minutes, as in benches/compare.sh. Leaves target/soak.csv (one row a second: server
# RSS, connections, CPU, the second's counts) and target/soak.svg (RSS and open connections over
# time), and prints the summary; exits with the generator's status (1: something lost,
# duplicated or reordered, an error, or RSS at the end > 5% over RSS after the warm-up).
# Not run in CI.
#
#   benches/soak.sh            # 30 minutes
#   benches/soak.sh 1          # one minute
#   CONNECTIONS=2000 CHURN=10 RATE=2000 benches/soak.sh 10
#
# Environment: CONNECTIONS [1000], CHURN [5] (% of the connections replaced a second),
# TOPICS [100], RATE [1000] (publishes a second), PORT_BASE [19400] (first port tried),
# SKIP_BUILD [0] (1: use the release binaries already built), PROBE [unset] (a CSV path:
# benches/soak-probe.py records where the relay's memory is and its descriptors' peak, once a
# second), PREPEAK [0] (open this many connections at once with `load connect` and close them
# before the soak starts, so that the peak concurrency is reached before the warm-up mark).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

MINUTES=${1:-30}
CONNECTIONS=${CONNECTIONS:-1000}
CHURN=${CHURN:-5}
TOPICS=${TOPICS:-100}
RATE=${RATE:-1000}
PORT_BASE=${PORT_BASE:-19400}
SKIP_BUILD=${SKIP_BUILD:-0}
PROBE=${PROBE:-}
PREPEAK=${PREPEAK:-0}

SERVER_CORE=0
LOAD_CORE=1
HOST=127.0.0.1
EMBERWS="$ROOT/target/release/emberws"
LOAD="$ROOT/target/release/examples/load"
LOG="$ROOT/target/soak-server.log"

say() { printf 'soak: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

SERVER_PID=""
PROBE_PID=""
cleanup() {
    if [ -n "$PROBE_PID" ]; then kill "$PROBE_PID" 2>/dev/null || true; fi
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

for tool in taskset ss cargo; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done
[ "$(nproc)" -ge 2 ] || die "two cores are needed (server on core $SERVER_CORE, generator on core $LOAD_CORE)"
ulimit -n "$(ulimit -Hn)"

if [ "$SKIP_BUILD" != 1 ]; then
    say "building emberws and the load generator (release)"
    cargo build --release --bin emberws --example load >&2
fi
for f in "$EMBERWS" "$LOAD"; do
    [ -x "$f" ] || die "$f is missing (build it, or run without SKIP_BUILD=1)"
done
mkdir -p "$ROOT/target"

PORT=$PORT_BASE
while ss -Hltn "sport = :$PORT" | grep -q .; do PORT=$((PORT + 1)); done
taskset -c "$SERVER_CORE" "$EMBERWS" --listen "$HOST:$PORT" --max-connections 20000 >"$LOG" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 200); do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$LOG" >&2; die "emberws exited while starting"; }
    ss -Hltn "sport = :$PORT" | grep -q . && break
    sleep 0.05
done
ss -Hltn "sport = :$PORT" | grep -q . || die "emberws did not listen on $HOST:$PORT within 10 s"
say "emberws (pid $SERVER_PID) on $HOST:$PORT, core $SERVER_CORE; load soak on core $LOAD_CORE for $MINUTES min"
if [ -n "$PROBE" ]; then
    taskset -c "$LOAD_CORE" python3 "$ROOT/benches/soak-probe.py" "$SERVER_PID" "$PROBE" &
    PROBE_PID=$!
    say "probe (pid $PROBE_PID) writing $PROBE"
fi
if [ "$PREPEAK" -gt 0 ]; then
    say "pre-peak: $PREPEAK connections at once, then closed"
    taskset -c "$LOAD_CORE" "$LOAD" connect --url "ws://$HOST:$PORT/" --connections "$PREPEAK" \
        --hold 1 >/dev/null || die "load connect failed"
fi

rc=0
taskset -c "$LOAD_CORE" "$LOAD" soak --url "ws://$HOST:$PORT/" --server-pid "$SERVER_PID" \
    --minutes "$MINUTES" --connections "$CONNECTIONS" --churn "$CHURN" --topics "$TOPICS" \
    --rate "$RATE" --csv "$ROOT/target/soak.csv" --svg "$ROOT/target/soak.svg" || rc=$?
kill -0 "$SERVER_PID" 2>/dev/null || { say "emberws died during the soak (log: $LOG)"; rc=1; }
say "target/soak.csv, target/soak.svg; exit $rc"
exit "$rc"
