#!/usr/bin/env bash
# Side-by-side comparison of emberws with two peers (benches/peers/): a tokio-tungstenite server on
# a current-thread runtime and Node's `ws`. The same load-generator workloads (examples/load/) run
# against each; the server is pinned to core 0 and the generator to core 1; every measurement
# starts a fresh server process; the median of RUNS runs is reported.
#
#   benches/compare.sh                      # RUNS=3, ~10–15 minutes
#   RUNS=1 DURATION=3 benches/compare.sh    # a quick look
#   BASE_BIN=/tmp/old/emberws benches/compare.sh   # also an older emberws build, side by side
#   WORKLOADS="tls-echo64 tls-echo16k tls-idle10k" benches/compare.sh   # wss://: emberws and the
#                                           # tokio-tungstenite + tokio-rustls peer
#
# Output: a Markdown table on stdout, also written to target/compare.md; the raw JSON line of
# every run (with the server's RSS samples and exit status) in target/compare/runs.jsonl, and each
# server's and generator's stderr in target/compare/logs/.
#
# Environment (defaults in brackets):
#   RUNS [3]              runs per workload and server; the median is reported
#   WARMUP [2]            echo warm-up seconds
#   DURATION [5]          echo measuring seconds
#   FANOUT_DURATION [10]  fan-out publishing seconds
#   FANOUT_RATE_1K [20]   publishes per second to 1,000 subscribers (20,000 deliveries/s)
#   FANOUT_RATE_10K [2]   publishes per second to 10,000 subscribers (20,000 deliveries/s)
#   GRACE [2]             seconds to wait for late echoes / deliveries
#   HOLD [3]              seconds the idle connections are held
#   FAIR_BASELINE [3]     fairness: seconds the bystander runs alone
#   FAIR_DURATION [DURATION]  fairness: seconds it runs beside the flooders
#   CLOSE_TIMEOUT [2]     seconds the generator waits for close handshakes at the end of a run
#   SERVERS               subset of "emberws tokio-tungstenite node-ws tokio-tungstenite-tls"; each
#                         runs the workloads it serves: the TLS peer only the tls-* ones, the
#                         plain peers none of them, emberws all (a server that runs none of the
#                         chosen workloads is neither built nor checked for)
#   BASE_BIN              an emberws binary (path without spaces) to compare with: it runs as
#                         server `emberws-base` after `emberws` in every run (its echo and relay;
#                         fan-out: relay only), and the table gains its column and "emberws ÷ base"
#   WORKLOADS             subset of "echo64 echo16k fanout1k fanout10k idle1k idle10k", and
#                         `fairness` (not by default): emberws and emberws-base only, the relay
#                         with a timed bystander, alone and then beside 1 publish flooder
#                         (`fairness-publish`) or 20 ping flooders that never read (`fairness-ping`);
#                         either half can also be named alone; and, not by default, over
#                         wss:// (emberws `echo --tls-listen` and tokio-tungstenite-tls only):
#                         `tls-echo64`, `tls-echo16k` (as echo64, echo16k) and `tls-idle10k`
#                         (as idle10k: server RSS per idle TLS connection, TLS handshakes/s).
#                         One throwaway ECDSA P-256 certificate (examples/tlscert, rcgen) is made
#                         per compare run; the generator connects with --insecure (no chain
#                         check, handshake signatures still checked) and never resumes a session,
#                         so every handshake is a full one
#   SKIP_BUILD [0]        1: use the binaries already built
#   PORT_BASE [19300]     first port tried; each server start takes the next free one
#   LOAD_TIMEOUT [300]    seconds after which one generator run is stopped (it should never be)
#
# Only 127.0.0.1 is targeted. Every process the script starts is stopped on exit (trap).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RUNS=${RUNS:-3}
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-5}
FANOUT_DURATION=${FANOUT_DURATION:-10}
FANOUT_RATE_1K=${FANOUT_RATE_1K:-20}
FANOUT_RATE_10K=${FANOUT_RATE_10K:-2}
GRACE=${GRACE:-2}
HOLD=${HOLD:-3}
FAIR_BASELINE=${FAIR_BASELINE:-3}
FAIR_DURATION=${FAIR_DURATION:-$DURATION}
CLOSE_TIMEOUT=${CLOSE_TIMEOUT:-2}
SERVERS=${SERVERS:-"emberws tokio-tungstenite node-ws tokio-tungstenite-tls"}
WORKLOADS=${WORKLOADS:-"echo64 echo16k fanout1k fanout10k idle1k idle10k"}
SKIP_BUILD=${SKIP_BUILD:-0}
PORT_BASE=${PORT_BASE:-19300}
LOAD_TIMEOUT=${LOAD_TIMEOUT:-300}
BASE_BIN=${BASE_BIN:-}

SERVER_CORE=0
LOAD_CORE=1
HOST=127.0.0.1

OUT="$ROOT/target/compare"
LOGS="$OUT/logs"
RESULTS="$OUT/runs.jsonl"
TABLE="$ROOT/target/compare.md"

EMBERWS="$ROOT/target/release/emberws"
BROADCAST="$ROOT/target/release/examples/broadcast"
LOAD="$ROOT/target/release/examples/load"
TT_DIR="$ROOT/benches/peers/tokio-tungstenite"
TT="$TT_DIR/target/release/peer-tokio-tungstenite"
TTT_DIR="$ROOT/benches/peers/tokio-tungstenite-tls"
TTT="$TTT_DIR/target/release/peer-tokio-tungstenite-tls"
TLSCERT="$ROOT/target/release/examples/tlscert"
NODE_DIR="$ROOT/benches/peers/node-ws"

say() { printf 'compare: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# --- cleanup: every process started here is stopped, whatever happens -------------------------

SERVER_PID=""
LOAD_PID=""
cleanup() {
    local pid
    for pid in $LOAD_PID $SERVER_PID; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    sleep 0.2
    for pid in $LOAD_PID $SERVER_PID; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# --- checks and builds ---------------------------------------------------------------------------

# `fairness` stands for its two halves.
WORKLOADS=$(for w in $WORKLOADS; do
    if [ "$w" = fairness ]; then echo fairness-publish fairness-ping; else echo "$w"; fi
done | tr '\n' ' ')
for w in $WORKLOADS; do
    case $w in echo64 | echo16k | fanout1k | fanout10k | idle1k | idle10k | fairness-publish | fairness-ping) ;;
        tls-echo64 | tls-echo16k | tls-idle10k) ;;
        *) die "unknown workload $w" ;;
    esac
done
for s in $SERVERS; do
    case $s in emberws | tokio-tungstenite | node-ws | tokio-tungstenite-tls) ;; *) die "unknown server $s" ;; esac
done
# emberws-base runs right after emberws (first when emberws is not measured).
if [ -n "$BASE_BIN" ]; then
    [ -x "$BASE_BIN" ] || die "BASE_BIN=$BASE_BIN is not an executable file"
    case " $SERVERS " in
        *" emberws "*) SERVERS=$(echo " $SERVERS " | sed 's/ emberws / emberws emberws-base /') ;;
        *) SERVERS="emberws-base $SERVERS" ;;
    esac
fi
SERVERS=$(echo $SERVERS) # one space between names
has_server() { case " $SERVERS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# The (server, mode, protocol) rows of a workload, as "NAME:KIND:PROTOCOL" words.
workload_servers() {
    local w=$1 s
    for s in $SERVERS; do
        case $w in
            tls-*)
                # wss://: emberws (and emberws-base: a build older than its TLS flags fails
                # these runs, and says so in the errors row) and the TLS peer.
                case $s in emberws | emberws-base | tokio-tungstenite-tls) echo "$s:tls-echo:-" ;; esac
                continue
                ;;
        esac
        # The TLS peer serves wss:// only.
        if [ "$s" = tokio-tungstenite-tls ]; then continue; fi
        case $w in
            echo* | idle*) echo "$s:echo:-" ;;
            fanout*)
                # emberws-base is the emberws binary alone: no broadcast example to go with it.
                if [ "$s" != emberws-base ]; then echo "$s:broadcast:broadcast"; fi
                case $s in emberws | emberws-base) echo "$s-relay:relay:relay" ;; esac
                ;;
            fairness*)
                case $s in emberws | emberws-base) echo "$s:relay:-" ;; esac
                ;;
        esac
    done
}

# server_used NAME: some chosen workload runs on server NAME.
server_used() {
    local w e
    for w in $WORKLOADS; do
        for e in $(workload_servers "$w"); do
            if [ "${e%%:*}" = "$1" ]; then return 0; fi
        done
    done
    return 1
}
has_tls() { case " $WORKLOADS " in *" tls-"*) return 0 ;; *) return 1 ;; esac; }

tools="taskset timeout ss python3 cargo"
server_used node-ws && tools="$tools node npm"
for tool in $tools; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done
[ "$(nproc)" -ge 2 ] || die "two cores are needed (server on core $SERVER_CORE, generator on core $LOAD_CORE)"

# 10,000 connections need 10,000 descriptors on each side: raise the soft limit to the hard one.
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt 10100 ]; then
    say "warning: the hard open-file limit is $hard; the 10,000-connection workloads will fail"
fi
ulimit -n "$hard"

if [ "$SKIP_BUILD" != 1 ]; then
    say "building emberws, the load generator and the broadcast example"
    extra=""
    has_tls && extra="--example tlscert"
    # shellcheck disable=SC2086
    cargo build --release --bin emberws --example load --example broadcast $extra >&2
    if server_used tokio-tungstenite; then
        say "building the tokio-tungstenite peer"
        cargo build --release --manifest-path "$TT_DIR/Cargo.toml" >&2
    fi
    if server_used tokio-tungstenite-tls; then
        say "building the tokio-tungstenite + tokio-rustls peer"
        cargo build --release --manifest-path "$TTT_DIR/Cargo.toml" >&2
    fi
    if server_used node-ws; then
        say "installing the node peer's packages (npm ci)"
        (cd "$NODE_DIR" && npm ci --no-audit --no-fund >&2)
    fi
fi
needed="$EMBERWS $BROADCAST $LOAD"
server_used tokio-tungstenite && needed="$needed $TT"
server_used tokio-tungstenite-tls && needed="$needed $TTT"
server_used node-ws && needed="$needed $NODE_DIR/node_modules/ws/package.json"
has_tls && needed="$needed $TLSCERT"
for f in $needed; do
    [ -e "$f" ] || die "$f is missing (build it, or run without SKIP_BUILD=1)"
done

rm -rf "$OUT"
mkdir -p "$LOGS"
: >"$RESULTS"

# One certificate and key for every TLS server of this run (self-signed ECDSA P-256 for
# localhost, 127.0.0.1 and ::1).
TLS_CERT="$OUT/tls/cert.pem"
TLS_KEY="$OUT/tls/key.pem"
if has_tls; then
    "$TLSCERT" "$OUT/tls" 2>>"$LOGS/tlscert.log" || die "examples/tlscert failed (see $LOGS/tlscert.log)"
fi

# --- servers -------------------------------------------------------------------------------------

NEXT_PORT=$PORT_BASE
port_in_use() { ss -Hltn "sport = :$1" | grep -q .; }

# server_cmd NAME KIND PORT: the command line of server NAME in mode KIND
# (echo|broadcast|relay|tls-echo).
server_cmd() {
    local name=$1 kind=$2 addr="$HOST:$3"
    case "$name/$kind" in
        emberws/echo) echo "$EMBERWS echo --listen $addr --max-connections 20000" ;;
        emberws/broadcast) echo "$BROADCAST --listen $addr" ;;
        emberws/relay) echo "$EMBERWS --listen $addr --max-connections 20000" ;;
        emberws-base/echo) echo "$BASE_BIN echo --listen $addr --max-connections 20000" ;;
        emberws-base/relay) echo "$BASE_BIN --listen $addr --max-connections 20000" ;;
        emberws/tls-echo) echo "$EMBERWS echo --tls-listen $addr --tls-cert $TLS_CERT --tls-key $TLS_KEY --max-connections 20000" ;;
        emberws-base/tls-echo) echo "$BASE_BIN echo --tls-listen $addr --tls-cert $TLS_CERT --tls-key $TLS_KEY --max-connections 20000" ;;
        tokio-tungstenite/echo | tokio-tungstenite/broadcast) echo "$TT $kind --listen $addr" ;;
        tokio-tungstenite-tls/tls-echo) echo "$TTT echo --listen $addr --cert $TLS_CERT --key $TLS_KEY" ;;
        node-ws/echo | node-ws/broadcast) echo "node $NODE_DIR/server.mjs $kind --listen $addr" ;;
        *) die "no $kind mode for $name" ;;
    esac
}

# start_server NAME KIND LOG: starts it on core 0 and waits until its port listens.
# Sets SERVER_PID and PORT.
start_server() {
    local name=$1 kind=$2 log=$3 cmd i
    while port_in_use "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
    PORT=$NEXT_PORT
    NEXT_PORT=$((NEXT_PORT + 1))
    cmd=$(server_cmd "$name" "$kind" "$PORT")
    # shellcheck disable=SC2086 # the command line is split on purpose
    taskset -c "$SERVER_CORE" $cmd >"$log" 2>&1 &
    SERVER_PID=$!
    for i in $(seq 1 200); do
        if ! is_alive "$SERVER_PID"; then
            cat "$log" >&2
            die "$name ($kind) exited while starting"
        fi
        if port_in_use "$PORT"; then
            return 0
        fi
        sleep 0.05
    done
    die "$name ($kind) did not listen on $HOST:$PORT within 10 s"
}

# is_alive PID: running (a zombie, i.e. a child that exited and is not yet reaped, is not).
is_alive() {
    local state
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || true
    [ -n "$state" ] && [ "$state" != Z ]
}

# stop_server: SIGTERM, then SIGKILL after 5 s. Sets STOP_ALIVE: was it still running when asked.
stop_server() {
    local i
    STOP_ALIVE=true
    STOP_KILLED=false
    if ! is_alive "$SERVER_PID"; then
        STOP_ALIVE=false
    else
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for i in $(seq 1 100); do
            is_alive "$SERVER_PID" || break
            sleep 0.05
        done
        if is_alive "$SERVER_PID"; then
            say "warning: the server did not stop within 5 s of SIGTERM; killing it"
            STOP_KILLED=true
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }

# --- workloads -----------------------------------------------------------------------------------

# The generator's flags for each workload; `--url` and `--server-pid` are added per run.
load_args() {
    local ct="--close-timeout $CLOSE_TIMEOUT"
    case $1 in
        echo64) echo "echo --connections 100 --depth 1 --size 64 --warmup $WARMUP --duration $DURATION --grace $GRACE $ct" ;;
        echo16k) echo "echo --connections 10 --depth 1 --size 16384 --binary --warmup $WARMUP --duration $DURATION --grace $GRACE $ct" ;;
        fanout1k) echo "fanout --subscribers 1000 --rate $FANOUT_RATE_1K --duration $FANOUT_DURATION --grace $GRACE $ct" ;;
        fanout10k) echo "fanout --subscribers 10000 --rate $FANOUT_RATE_10K --duration $FANOUT_DURATION --grace $GRACE $ct" ;;
        idle1k) echo "connect --connections 1000 --hold $HOLD $ct" ;;
        idle10k | tls-idle10k) echo "connect --connections 10000 --hold $HOLD $ct" ;;
        tls-echo64 | tls-echo16k) load_args "${1#tls-}" ;;
        fairness-*)
            local fair="fairness --relay --baseline $FAIR_BASELINE --duration $FAIR_DURATION $ct"
            case $1 in
                fairness-publish) echo "$fair --flood publish --flooders 1" ;;
                fairness-ping) echo "$fair --flood ping --flooders 20" ;;
            esac
            ;;
    esac
}

# run_one WORKLOAD RUN NAME KIND PROTOCOL: one measurement on a fresh server; appends a record.
run_one() {
    local w=$1 r=$2 label=$3 kind=$4 proto=$5
    local name=${label%-relay}
    local tag="$w.$label.$r"
    local slog="$LOGS/$tag.server.log" llog="$LOGS/$tag.load.log" lout="$LOGS/$tag.load.json"
    local args rc=0 rss_before rss_hold="" alive line i url
    start_server "$name" "$kind" "$slog"
    args=$(load_args "$w")
    [ "$proto" != - ] && args="$args --protocol $proto"
    url="ws://$HOST:$PORT/"
    if [[ $w == tls-* ]]; then
        url="wss://$HOST:$PORT/"
        args="$args --insecure"
    fi
    rss_before=$(rss_kib "$SERVER_PID")
    say "$w run $r/$RUNS: $label ($kind) on :$PORT"
    # shellcheck disable=SC2086
    timeout "$LOAD_TIMEOUT" taskset -c "$LOAD_CORE" "$LOAD" $args --url "$url" --server-pid "$SERVER_PID" \
        >"$lout" 2>"$llog" &
    LOAD_PID=$!
    if [[ $w == idle* || $w == tls-idle* ]]; then
        # Sample the server's RSS one second into the hold (all connections open by then).
        for i in $(seq 1 1200); do
            if grep -q 'load: holding' "$llog" 2>/dev/null; then
                sleep 1
                rss_hold=$(rss_kib "$SERVER_PID")
                break
            fi
            is_alive "$LOAD_PID" || break
            sleep 0.05
        done
    fi
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    stop_server
    alive=$STOP_ALIVE
    line=$(grep '^{' "$lout" | tail -n 1 || true)
    python3 - "$w" "$r" "$label" "$kind" "$proto" "$rc" "$alive" "$STOP_KILLED" "$rss_before" \
        "$rss_hold" "$line" "$slog" "$llog" >>"$RESULTS" <<'PY'
import json, sys
w, r, label, kind, proto, rc, alive, killed, before, hold, line, slog, llog = sys.argv[1:]
try:
    load = json.loads(line) if line else None
except ValueError:
    load = None
rec = {
    "workload": w, "run": int(r), "server": label, "kind": kind, "protocol": proto,
    "exit": int(rc), "alive_at_end": alive == "true", "killed": killed == "true",
    "rss_before_kib": int(before) if before else None,
    "rss_hold_kib": int(hold) if hold else None,
    "load": load, "raw": None if load else line,
    "server_log": slog, "load_log": llog,
}
print(json.dumps(rec))
PY
    if [ "$alive" != true ]; then
        say "ANOMALY: $label exited during $w run $r (see $slog)"
    fi
    if [ "$rc" -ne 0 ]; then
        say "$w run $r: $label: the generator counted errors (exit $rc); see $llog"
    fi
}

psi_total() { awk '/^some/ {for (i = 1; i <= NF; i++) if ($i ~ /^total=/) print substr($i, 7)}' /proc/pressure/cpu 2>/dev/null || true; }

START_S=$(date +%s)
PSI_BEFORE=$(psi_total)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

for w in $WORKLOADS; do
    for r in $(seq 1 "$RUNS"); do
        # Servers interleaved within each run, so drift on a shared machine hits all alike,
        # and in reverse order on even runs, so that no server always goes first.
        entries=$(workload_servers "$w")
        if [ $((r % 2)) -eq 0 ]; then entries=$(printf '%s\n' $entries | tac); fi
        for entry in $entries; do
            IFS=: read -r label kind proto <<<"$entry"
            run_one "$w" "$r" "$label" "$kind" "$proto"
        done
    done
done

END_S=$(date +%s)
PSI_AFTER=$(psi_total)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the table -----------------------------------------------------------------------------------

export LOAD_TIMEOUT RUNS WARMUP DURATION FANOUT_DURATION FANOUT_RATE_1K FANOUT_RATE_10K GRACE HOLD CLOSE_TIMEOUT
export FAIR_BASELINE FAIR_DURATION BASE_BIN
export START_S END_S PSI_BEFORE PSI_AFTER LOAD_BEFORE LOAD_AFTER SERVERS
python3 - "$RESULTS" "$TABLE" "$TT_DIR/Cargo.lock" "$NODE_DIR/node_modules/ws/package.json" "$TTT_DIR/Cargo.lock" <<'PY'
import hashlib, json, os, platform, statistics, subprocess, sys, time

results, table_path, tt_lock, ws_pkg, ttt_lock = sys.argv[1:]
recs = [json.loads(l) for l in open(results) if l.strip()]
env = os.environ

def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return "?"

def lock_version(path, name):
    try:
        text = open(path).read().split("[[package]]")
        for block in text:
            if f'name = "{name}"\n' in block:
                return block.split('version = "')[1].split('"')[0]
    except OSError:
        pass
    return "?"

def get(d, path):
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d

# Metric extractors: record -> number or None.
def load(path):
    return lambda rec: get(rec["load"], path) if rec["load"] else None

def idle_bytes(rec):
    n = get(rec["load"], "opened") if rec["load"] else None
    if not n or rec["rss_before_kib"] is None or rec["rss_hold_kib"] is None:
        return None
    return (rec["rss_hold_kib"] - rec["rss_before_kib"]) * 1024 / n

ECHO = [
    ("msgs/s", load("msgs_per_s"), "{:,.0f}", "higher"),
    ("server CPU µs/msg", load("server_cpu_us_per_msg"), "{:.2f}", "lower"),
    ("RTT p50 µs", load("rtt_us.p50"), "{:,.1f}", "lower"),
    ("RTT p99 µs", load("rtt_us.p99"), "{:,.1f}", "lower"),
    ("RTT p99.9 µs", load("rtt_us.p999"), "{:,.1f}", "lower"),
]
FANOUT = [
    ("publish→last delivery p50 µs", load("last_delivery_us.p50"), "{:,.1f}", "lower"),
    ("publish→last delivery p99 µs", load("last_delivery_us.p99"), "{:,.1f}", "lower"),
    ("per-delivery p99 µs", load("delivery_us.p99"), "{:,.1f}", "lower"),
    ("server CPU µs/delivery", load("server_cpu_us_per_delivery"), "{:.3f}", "lower"),
]
IDLE = [
    ("server RSS bytes/conn (hold − before)/N", idle_bytes, "{:,.0f}", "lower"),
    ("handshakes/s", load("handshakes_per_s"), "{:,.0f}", "higher"),
]
# Over TLS the handshake is most of the work, on both sides: the generator's share says whether
# it, not the server, set the handshake rate.
IDLE_TLS = IDLE + [
    ("server CPU µs/handshake", load("server_cpu_us_per_handshake"), "{:,.0f}", "lower"),
    ("generator CPU µs/handshake", load("client_cpu_us_per_handshake"), "{:,.0f}", "—"),
    ("generator CPU % while opening", load("client_cpu_pct"), "{:.0f}", "—"),
]
FAIRNESS = [
    ("bystander RTT p99 alone µs", load("bystander_baseline_us.p99"), "{:,.1f}", "lower"),
    ("bystander RTT p99 under flood µs", load("bystander_flood_us.p99"), "{:,.1f}", "lower"),
    ("p99 increase µs", load("p99_increase_us"), "{:,.1f}", "lower"),
    ("bystander RTT p50 under flood µs", load("bystander_flood_us.p50"), "{:,.1f}", "lower"),
    ("bystander round trips under flood", load("bystander_flood_us.count"), "{:,.0f}", "higher"),
    ("flooder msgs/s", load("flood_msgs_per_s"), "{:,.0f}", "—"),
    ("server RSS KiB after the flood", load("server_rss_kib"), "{:,.0f}", "lower"),
]
TITLES = {
    "echo64": "echo 64 B, 100 conns, depth 1",
    "echo16k": "echo 16 KiB binary, 10 conns, depth 1",
    "fanout1k": f"fan-out 1,000 subs @ {env['FANOUT_RATE_1K']}/s",
    "fanout10k": f"fan-out 10,000 subs @ {env['FANOUT_RATE_10K']}/s",
    "idle1k": "idle 1,000 conns",
    "idle10k": "idle 10,000 conns",
    "fairness-publish": "fairness: relay bystander + 1 publish flooder",
    "fairness-ping": "fairness: relay bystander + 20 ping flooders (never read)",
    "tls-echo64": "wss:// echo 64 B, 100 conns, depth 1",
    "tls-echo16k": "wss:// echo 16 KiB binary, 10 conns, depth 1",
    "tls-idle10k": "wss:// idle 10,000 conns (full TLS handshakes)",
}
PEERS = ["tokio-tungstenite", "node-ws", "tokio-tungstenite-tls"]
servers = env["SERVERS"].split()
measured = {r["server"] for r in recs}
base = ["emberws-base"] if "emberws-base" in servers else []
# A peer gets a column when it ran something (the TLS peer runs only the tls-* workloads).
columns = ["emberws"] + base + [p for p in PEERS if p in servers and p in measured]

def src_of(c, ember_label):
    """The record label behind column `c` in a section whose emberws runs are `ember_label`."""
    if c == "emberws":
        return ember_label
    if c == "emberws-base":
        return ember_label.replace("emberws", "emberws-base", 1)
    return c

def runs(w, server):
    return [r for r in recs if r["workload"] == w and r["server"] == server]

def median(w, server, f):
    vals = [v for v in (f(r) for r in runs(w, server)) if isinstance(v, (int, float))]
    return (statistics.median(vals), len(vals)) if vals else (None, 0)

def cell(v, fmt, n, total):
    if v is None:
        return "—"
    s = fmt.format(v)
    return s if n == total else f"{s} ({n}/{total} runs)"

def errors_of(rec):
    """Generator-counted errors, by kind (close timeouts apart), plus server exits."""
    e = get(rec["load"], "errors") if rec["load"] else None
    out = {}
    if rec["load"] is None:
        out["no JSON line"] = 1
    elif "error" in rec["load"]:
        out["run failed: " + rec["load"]["error"]] = 1
    if isinstance(e, dict):
        for k, v in e.items():
            if k == "total":
                continue
            if isinstance(v, dict):
                for code, n in v.items():
                    if n:
                        out[f"{k} {code}"] = out.get(f"{k} {code}", 0) + n
            elif v:
                out[k] = out.get(k, 0) + v
    if not rec["alive_at_end"]:
        out["server exited"] = 1
    if rec.get("killed"):
        out["server ignored SIGTERM for 5 s (killed)"] = 1
    if rec["exit"] == 124:
        out[f"generator timed out ({env['LOAD_TIMEOUT']} s)"] = 1
    return out

def sum_errors(rs):
    tot = {}
    for r in rs:
        for k, v in errors_of(r).items():
            tot[k] = tot.get(k, 0) + v
    return tot

def err_cell(rs):
    if not rs:
        return "—"
    e = sum_errors(rs)
    real = sum(v for k, v in e.items() if k != "close_timeout")
    ct = e.get("close_timeout", 0)
    s = f"{real:,}"
    if ct:
        s += f" (+{ct:,} close timeouts)"
    return s

def ratio(a, b):
    if a is None or b in (None, 0):
        return "—"
    x = a / b
    return f"{x:.2f}×" if x >= 0.1 else f"{x:.2g}×"

lines = []
ratio_hdr = [("emberws ÷ base" if p == "emberws-base" else f"emberws / {p}") for p in columns[1:]]
lines.append("| workload | metric | " + " | ".join(columns) + " | " + " | ".join(ratio_hdr) + " |")
lines.append("| --- | --- |" + " ---: |" * (len(columns) + len(ratio_hdr)))

def add_rows(w, title, metrics, ember_label="emberws"):
    total = int(env["RUNS"])
    for i, (name, f, fmt, _) in enumerate(metrics):
        vals = {}
        cells = []
        for c in columns:
            v, n = median(w, src_of(c, ember_label), f)
            vals[c] = v
            cells.append(cell(v, fmt, n, total))
        ratios = []
        for p in columns[1:]:
            a, b = vals["emberws"], vals[p]
            ratios.append(ratio(a, b))
        lines.append(f"| {title if i == 0 else ''} | {name} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")

def add_fanout_extra(w, ember_label):
    cells = []
    for c in columns:
        rs = runs(w, src_of(c, ember_label))
        d = sum(get(r["load"], "delivered") or 0 for r in rs if r["load"])
        x = sum(get(r["load"], "expected") or 0 for r in rs if r["load"])
        cells.append(f"{d:,}/{x:,} ({100 * d / x:.2f}%)" if x else "—")
    lines.append("| | delivered/expected (all runs) | " + " | ".join(cells) + " |" + " — |" * (len(columns) - 1))

def add_error_row(w, ember_label="emberws"):
    cells = [err_cell(runs(w, src_of(c, ember_label))) for c in columns]
    lines.append("| | errors, all runs | " + " | ".join(cells) + " |" + " — |" * (len(columns) - 1))

workloads = []
for r in recs:
    if r["workload"] not in workloads:
        workloads.append(r["workload"])
for w in workloads:
    if w.startswith("tls-echo"):
        add_rows(w, TITLES[w], ECHO)
        add_error_row(w)
    elif w.startswith("tls-idle"):
        add_rows(w, TITLES[w], IDLE_TLS)
        add_error_row(w)
    elif w.startswith("echo"):
        add_rows(w, TITLES[w], ECHO)
        add_error_row(w)
    elif w.startswith("fanout"):
        add_rows(w, TITLES[w] + " (broadcast server)", FANOUT)
        add_fanout_extra(w, "emberws")
        add_error_row(w)
        if runs(w, "emberws-relay") or runs(w, "emberws-base-relay"):
            add_rows(w, TITLES[w] + ": emberws **relay** protocol (peers: broadcast, as above)", FANOUT, "emberws-relay")
            add_fanout_extra(w, "emberws-relay")
            add_error_row(w, "emberws-relay")
    elif w.startswith("fairness"):
        add_rows(w, TITLES[w], FAIRNESS)
        add_error_row(w)
    else:
        add_rows(w, TITLES[w], IDLE)
        add_error_row(w)

# Anomalies: every run with errors (close timeouts listed too), every server that exited.
anomalies = []
for r in recs:
    e = errors_of(r)
    if e or r["exit"] != 0:
        detail = ", ".join(f"{k}: {v:,}" for k, v in sorted(e.items())) or "no error counts"
        anomalies.append(f"- {r['workload']} run {r['run']}, {r['server']}: generator exit {r['exit']}; {detail}")
    try:
        log = [l.rstrip() for l in open(r["server_log"], errors="replace")]
    except OSError:
        log = []
    bad = [l for l in log if any(k in l.lower() for k in ("error", "warn", "panic", "connection:", "handshake:", "accept:"))]
    if bad:
        anomalies.append(f"- {r['workload']} run {r['run']}, {r['server']}: server log has {len(bad)} error/warning line(s), first: `{bad[0][:160]}`")

elapsed = int(env["END_S"]) - int(env["START_S"])
psi = ""
if env.get("PSI_BEFORE") and env.get("PSI_AFTER") and elapsed > 0:
    stall = (int(env["PSI_AFTER"]) - int(env["PSI_BEFORE"])) / 1e6 / elapsed * 100
    psi = f"; CPU pressure (PSI `some`) over the run: {stall:.1f}% of the time a task waited for a CPU"
cpu = "?"
try:
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
except (OSError, StopIteration):
    pass
ws_version = "?"
try:
    ws_version = json.load(open(ws_pkg))["version"]
except (OSError, ValueError):
    pass
commit = sh("git", "rev-parse", "--short", "HEAD")
base_note = ""
if base:
    try:
        digest = hashlib.sha256(open(env["BASE_BIN"], "rb").read()).hexdigest()[:12]
    except OSError:
        digest = "?"
    base_note = (f" emberws-base: `{env['BASE_BIN']}` (sha256 {digest}…), the same modes and flags; "
                 f"\"emberws ÷ base\" is emberws ÷ emberws-base.")
tls_note = ""
if any(w.startswith("tls-") for w in workloads):
    tls_note = (f" wss:// (tls-*): emberws `echo --tls-listen`, and tokio-tungstenite-tls "
                f"(tokio-rustls {lock_version(ttt_lock, 'tokio-rustls')}, rustls "
                f"{lock_version(ttt_lock, 'rustls')}, ring); one self-signed ECDSA P-256 "
                f"certificate per compare run (examples/tlscert); the generator (rustls, ring) "
                f"connects with --insecure (handshake signatures checked, no chain check) and "
                f"without session resumption: every handshake is a full one.")
fair_note = ""
if any(w.startswith("fairness") for w in workloads):
    fair_note = (f" Fairness: one relay client keeps one publish to its own topic in flight and times "
                 f"its delivery, {env['FAIR_BASELINE']} s alone, then {env['FAIR_DURATION']} s beside "
                 f"the flooders (emberws servers only).")
dirty = " (+ uncommitted changes)" if sh("git", "status", "--porcelain", "--untracked-files=no") not in ("", "?") else ""

head = [
    "# emberws vs tokio-tungstenite vs Node ws",
    "",
    f"{time.strftime('%Y-%m-%d %H:%M %Z')}; emberws {commit}{dirty}; {os.cpu_count()} × {cpu}; "
    f"Linux {platform.release()}; {sh('rustc', '--version')}; tokio-tungstenite "
    f"{lock_version(tt_lock, 'tokio-tungstenite')} (tokio {lock_version(tt_lock, 'tokio')}, current-thread); "
    f"Node {sh('node', '--version')}, ws {ws_version}.",
    "",
    f"Server on core 0, generator (`examples/load`) on core 1, a fresh server process per run, servers "
    f"interleaved within each run (in reverse order on even runs); median of {env['RUNS']} run(s). Echo: {env['WARMUP']} s warm-up + "
    f"{env['DURATION']} s; fan-out: {env['FANOUT_DURATION']} s of publishing (16-byte binary messages; "
    f"relay: JSON), {env['GRACE']} s grace; idle: hold {env['HOLD']} s, server VmRSS read before "
    f"connecting and 1 s into the hold. Server CPU = utime + stime from /proc/PID/stat over the "
    f"measuring window. Ratios are emberws ÷ peer (below 1× is better for emberws except msgs/s "
    f"and handshakes/s). emberws servers: `emberws echo`, `examples/broadcast`, and the relay "
    f"(`emberws`).{base_note}{fair_note}{tls_note} Load average {env['LOAD_BEFORE']} → {env['LOAD_AFTER']}{psi}; wall time {elapsed} s.",
    "",
]
out = "\n".join(head + lines)
out += "\n\n## Anomalies\n\n" + ("\n".join(anomalies) if anomalies else "None: no errors, no lost messages, no server exits.") + "\n"
out += "\n`close timeouts`: connections whose close handshake had not completed when the generator's close timeout ran out, counted apart from the other errors.\n"
with open(table_path, "w") as f:
    f.write(out)
print(out)
PY
say "table written to $TABLE; raw runs in $RESULTS"
