#!/usr/bin/env bash
# Fuzzes the host-free policy core with cargo-fuzz (libFuzzer), each target for a while.
#
#   bash scripts/fuzz.sh [seconds-per-target] [target...]
#
# Default: 20 s for every target. Prints the executions per target and exits non-zero if a
# target crashes (panic, failed invariant, timeout, out of memory) or cannot be built.
#
# Only stable Rust is assumed: cargo-fuzz's nightly flags are enabled with RUSTC_BOOTSTRAP=1.
# The sanitizer defaults to none (the core is safe Rust; a panic or failed assertion is the
# finding); set FUZZ_SANITIZER=address to use ASan where its runtime is installed.
# Environment: FUZZ_SANITIZER (none), FUZZ_MAX_LEN (16384).
set -euo pipefail

seconds="${1:-20}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: $0 [seconds-per-target] [target...]" >&2
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$root/fuzz"
sanitizer="${FUZZ_SANITIZER:-none}"
max_len="${FUZZ_MAX_LEN:-16384}"
all_targets=(token_parse validate config jwks json key_fetch introspection)
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=("${all_targets[@]}")
fi

export RUSTC_BOOTSTRAP=1
export PATH="$HOME/.cargo/bin:$PATH"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz (cargo install --locked cargo-fuzz)"
    start=$(date +%s)
    cargo install --locked cargo-fuzz
    echo "==> cargo-fuzz installed in $(( $(date +%s) - start )) s"
fi

cd "$fuzz_dir"
echo "==> building fuzz targets (sanitizer: $sanitizer)"
start=$(date +%s)
# Build every target at once (they share all dependencies).
if ! cargo fuzz build -s "$sanitizer"; then
    echo "FAIL: fuzz targets do not build" >&2
    exit 1
fi
echo "==> built in $(( $(date +%s) - start )) s"

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
failed=()
summary=()
for t in "${targets[@]}"; do
    corpus="$fuzz_dir/corpus/$t"
    seeds="$fuzz_dir/seeds/$t"
    mkdir -p "$corpus" "$fuzz_dir/artifacts/$t"
    dirs=("$corpus")
    [ -d "$seeds" ] && dirs+=("$seeds")
    log="$logs/$t.log"
    echo "==> fuzzing $t for ${seconds} s"
    rc=0
    # The outer timeout is a backstop only: libFuzzer stops itself at -max_total_time.
    timeout --signal=KILL $(( seconds + 300 )) \
        cargo fuzz run -s "$sanitizer" "$t" "${dirs[@]}" -- \
        -max_total_time="$seconds" \
        -max_len="$max_len" \
        -timeout=10 \
        -rss_limit_mb=2048 \
        -print_final_stats=1 \
        >"$log" 2>&1 || rc=$?
    runs="$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1 || true)"
    if [ -z "$runs" ]; then
        runs="$(grep -Eo 'Done [0-9]+ runs' "$log" | grep -Eo '[0-9]+' | tail -1 || true)"
    fi
    runs="${runs:-0}"
    if [ "$rc" -ne 0 ]; then
        echo "FAIL: $t (exit $rc) after $runs executions; last lines of its log:" >&2
        tail -n 60 "$log" >&2
        ls -1 "$fuzz_dir/artifacts/$t" 2>/dev/null | sed "s|^|    artifact: fuzz/artifacts/$t/|" >&2 || true
        failed+=("$t")
        summary+=("$(printf '%-12s %12s executions  CRASH' "$t" "$runs")")
    else
        summary+=("$(printf '%-12s %12s executions  ok' "$t" "$runs")")
    fi
done

echo
echo "==> fuzz summary (${seconds} s per target, sanitizer: $sanitizer)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAIL: crashes in: ${failed[*]} (reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run -s $sanitizer <target> fuzz/artifacts/<target>/<file>, from fuzz/)" >&2
    exit 1
fi
