#!/usr/bin/env bash
# THE test command: setup, formatting, lints (host and wasm32-wasip1), the release wasm
# build, every test in the workspace (unit, harness, CLI, and end to end under a real Envoy),
# and the example policies' case files through the policy CLI.
# Fails fast on the first failing step and says which one.
set -euo pipefail
cd "$(dirname "$0")/.."

START=$(date +%s)
STEP=""
TEST_LOG=$(mktemp "${TMPDIR:-/tmp}/token-exchange-test.XXXXXX")
trap 'rc=$?; rm -f "$TEST_LOG"; if [[ $rc -ne 0 ]]; then printf "\ntest.sh: FAILED at step: %s (exit %d, after %ds)\n" "$STEP" "$rc" "$(( $(date +%s) - START ))" >&2; fi' EXIT

step() {
    STEP=$1
    printf '\n==> [%3ds] %s\n' "$(( $(date +%s) - START ))" "$STEP" >&2
}

step "setup (scripts/setup.sh)"
bash scripts/setup.sh

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --quiet --workspace --all-targets -- -D warnings

step "cargo clippy -p token-exchange-filter --target wasm32-wasip1 --all-targets -- -D warnings"
cargo clippy --quiet -p token-exchange-filter --target wasm32-wasip1 --all-targets -- -D warnings

step "wasm build (cargo build --release --target wasm32-wasip1 -p token-exchange-filter)"
cargo build --quiet --release --target wasm32-wasip1 -p token-exchange-filter
ls -l target/wasm32-wasip1/release/token_exchange_filter.wasm >&2
step "optimised wasm (bash scripts/build-wasm.sh: wasm-opt -Oz, what every suite, the demo and the bench run)"
ls -l "$(bash scripts/build-wasm.sh)" >&2

step "cargo test --workspace --no-fail-fast"
# CI=1 makes the Envoy end-to-end tests fail (not skip) if Envoy is missing; setup installed it.
export CI=${CI:-1}
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$TEST_LOG"
rc=${PIPESTATUS[0]}
set -e
printf '\n==> cargo test summary\n' >&2
grep -E '^\s+(Running|Doc-tests) |^test result:|^failures:|^    [a-zA-Z0-9_:]+$' "$TEST_LOG" >&2 || true
TOTALS=$(awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "%d passed, %d failed, %d skipped", p, f, i }' "$TEST_LOG")
printf '==> cargo test total: %s\n' "$TOTALS" >&2
if [[ $rc -ne 0 ]]; then
    exit "$rc"
fi

step "example policy tests through the CLI (cargo run -p token-exchange-cli -- test filter-config/tests)"
cargo run --quiet -p token-exchange-cli -- test filter-config/tests

# Short forms of the long-running checks (run them longer by hand: see fuzz/README.md and
# soak/README.md).
step "fuzz, 15 s per target (bash scripts/fuzz.sh 15)"
bash scripts/fuzz.sh 15

step "short soak through a real Envoy (bash scripts/soak.sh --short)"
bash scripts/soak.sh --short

step "benchmark smoke: it runs and prints its tables, no timing asserted (bash scripts/bench.sh --smoke)"
bash scripts/bench.sh --smoke

STEP=""
printf '\n==> all checks passed in %ds\n' "$(( $(date +%s) - START ))" >&2
# The plain closing line CI reads: the cargo test totals (fuzz and soak passed above).
echo "tests: $TOTALS"
