#!/usr/bin/env bash
# A short run of every fuzz target from the generated seed corpus: what CI runs after the
# tests. Usage: fuzz/smoke.sh [SECONDS_PER_TARGET] (default 20).
#
# cargo-fuzz needs a nightly toolchain (for -Zsanitizer): without one the run is skipped with
# a message, not failed. cargo-fuzz itself is installed from crates.io when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-20}
targets=(query response reply snapshot config)

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz smoke skipped: no nightly toolchain (rustup toolchain install nightly)" >&2
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

cargo run --locked --quiet --example fuzz_seeds -- fuzz/corpus
# Debug assertions on: integer overflow in the parsers is a finding, not a silent wrap.
(cd fuzz && cargo +nightly fuzz build --debug-assertions)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in "${targets[@]}"; do
    # -runs bounds a target that runs faster than expected. A crash, timeout or leak fails
    # the script with the end of libFuzzer's log; the input is left in fuzz/artifacts/<target>/.
    if ! (cd fuzz && cargo +nightly fuzz run --debug-assertions "$target" -- \
        -max_total_time="$seconds" -runs=2000000 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1) >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz smoke: $target failed" >&2
        exit 1
    fi
    runs=$(awk '/^stat::number_of_executed_units/ {print $2}' "$log")
    rate=$(awk '/^stat::average_exec_per_sec/ {print $2}' "$log")
    echo "fuzz smoke: $target: ${runs:-?} runs, ${rate:-?}/s, no crash"
done
