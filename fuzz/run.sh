#!/usr/bin/env bash
# Bounded fuzz run: builds every target, then runs each for FUZZ_SECONDS (default 60) on the
# stable toolchain without a sanitizer (the library forbids `unsafe`; the build keeps debug
# assertions and overflow checks). Fails on a crash, and loudly on a target that did not run.
#
#   fuzz/run.sh                    every target, 60 s each
#   FUZZ_SECONDS=20 fuzz/run.sh utf8 handshake
#   FUZZ_SECONDS=3600 FUZZ_SEED=0 fuzz/run.sh conn   # a long run with a random seed
#
# Each target fuzzes a scratch copy of corpus/TARGET/ (the committed seeds), so the committed
# directories never grow. A crash leaves its input in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-60}
# The same mutation sequence on every run (1), so that a CI failure can be replayed and a
# run that passed passes again on the same code; 0 lets libFuzzer pick one, for longer
# runs that look for new inputs.
seed=${FUZZ_SEED:-1}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "=== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
if [ ${#targets[@]} -eq 0 ]; then
    echo "fuzz: no targets found" >&2
    exit 1
fi

known=$(cargo fuzz list)
for t in "${targets[@]}"; do
    if ! grep -qx "$t" <<<"$known"; then
        echo "fuzz: no target named '$t' (targets: $(echo $known))" >&2
        exit 1
    fi
done

echo "=== building ${targets[*]}"
cargo fuzz build -s none

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

passed=0
failed=()
for t in "${targets[@]}"; do
    corpus="$scratch/corpus/$t"
    mkdir -p "$corpus"
    if [ -d "corpus/$t" ]; then
        cp corpus/"$t"/seed-* "$corpus"/ 2>/dev/null || true
    fi
    seeds=$(find "$corpus" -type f | wc -l)
    log="$scratch/$t.log"
    echo "=== $t: ${seconds}s from $seeds seeds"
    status=0
    cargo fuzz run -s none "$t" "$corpus" -- -max_total_time="$seconds" -seed="$seed" \
        >"$log" 2>&1 || status=$?
    # libFuzzer's last words on a clean run: "Done 123456 runs in 60 second(s)".
    done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 || true)
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$log" >&2
        echo "FAIL $t: exit status $status (a crash's input is in fuzz/artifacts/$t/)" >&2
        failed+=("$t")
        continue
    fi
    runs=$(sed -E 's/^Done ([0-9]+) runs.*/\1/' <<<"$done_line")
    if [ -z "$done_line" ] || [ "$runs" -eq 0 ]; then
        tail -n 60 "$log" >&2
        echo "FAIL $t: libFuzzer printed no 'Done N runs' line with N > 0: the target did not run" >&2
        failed+=("$t")
        continue
    fi
    secs=$(sed -E 's/.* in ([0-9]+) second.*/\1/' <<<"$done_line")
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 || true)
    echo "ok   $t: $runs runs in ${secs}s ($((runs / (secs > 0 ? secs : 1))) runs/s), ${cov:-cov: ?}, corpus $seeds -> $(find "$corpus" -type f | wc -l)"
    passed=$((passed + 1))
done

echo "fuzz: $passed passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: failing targets: ${failed[*]}" >&2
    exit 1
fi
