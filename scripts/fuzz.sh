#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 60) with cargo fuzz (libFuzzer,
# nightly), as many at once as there are cores. A crash fails the run; its
# input is left in fuzz/artifacts/ and belongs in fuzz/regressions/TARGET/
# once fixed, where tests/fuzz_regressions.rs replays it on every test run.
#   scripts/fuzz.sh            every target, 60 s each (as CI does)
#   scripts/fuzz.sh 3600 syscalls
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(specs manifest archive syscalls session dylink)

# libFuzzer needs nightly's -Z flags (sanitizers, coverage). Without a
# nightly toolchain (none can be downloaded on some machines), the stable
# one takes them with RUSTC_BOOTSTRAP=1: it ships the same sanitizer
# runtimes. Fuzzing never skips itself: a fuzzer that cannot be built or
# run fails this script, in CI and out.
toolchain=(+nightly)
if ! cargo +nightly --version >/dev/null 2>&1; then
    toolchain=()
    export RUSTC_BOOTSTRAP=1
    echo "no nightly toolchain: fuzzing with $(rustc --version) and RUSTC_BOOTSTRAP=1"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (once, from crates.io)"
    cargo install --locked cargo-fuzz
fi
# Memory is part of what is fuzzed: an input that makes the host process
# grow past this (AddressSanitizer's own overhead included), or ask for one
# allocation past the second figure, is a failure like a crash.
rss_mb=${PYNBOX_FUZZ_RSS_MB:-512}
malloc_mb=${PYNBOX_FUZZ_MALLOC_MB:-128}
# The fuzz build (nightly, sanitizers) is kept outside the checkout.
export CARGO_TARGET_DIR=${PYNBOX_FUZZ_TARGET_DIR:-$HOME/.cache/pynbox/fuzz-target}
fuzz_one() {
    local t=$1 corpus=$HOME/.cache/pynbox/fuzz-corpus/$1 log
    mkdir -p "$corpus"
    log=$(mktemp)
    if ! cargo "${toolchain[@]}" fuzz run --fuzz-dir fuzz "$t" "$corpus" "fuzz/regressions/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 \
        -rss_limit_mb="$rss_mb" -malloc_limit_mb="$malloc_mb" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz target $t failed: the input is in fuzz/artifacts/$t/" >&2
        rm -f "$log"
        return 1
    fi
    echo "== fuzz $t: $(grep -E '^Done' "$log" || tail -n 1 "$log")"
    rm -f "$log"
}
# Each fuzzer is one process on one core: build them all first, then run
# as many at once as there are cores (at most PYNBOX_FUZZ_JOBS).
cargo "${toolchain[@]}" fuzz build --fuzz-dir fuzz
jobs=${PYNBOX_FUZZ_JOBS:-$(nproc)}
echo "== fuzz ${targets[*]} for ${seconds}s each, $jobs at a time"
failed=0
running=0
for t in "${targets[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || failed=1
        running=$((running - 1))
    fi
    fuzz_one "$t" &
    running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
    wait -n || failed=1
    running=$((running - 1))
done
[ "$failed" = 0 ] || { echo "fuzzing found a failure (above)" >&2; exit 1; }
