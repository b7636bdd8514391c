#!/usr/bin/env bash
# The one release build of the filter, used by the tests (wasm-test-harness's build helper),
# the demo, the soak and the benchmark: `cargo build --release --target wasm32-wasip1`, then
# `wasm-opt -Oz` (Debian's binaryen; installed here when missing), which cuts the module by
# about 17% without slowing it in V8 (bench/README.md). Prints the optimised module's path:
#   $CARGO_TARGET_DIR (default target)/wasm32-wasip1/release/token_exchange_filter.opt.wasm
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

die() { printf 'build-wasm: ERROR: %s\n' "$*" >&2; exit 1; }

# Flags meant for a host build must not leak into the wasm build.
env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS \
    cargo build --quiet --release --target wasm32-wasip1 -p token-exchange-filter
TARGET=${CARGO_TARGET_DIR:-target}
[[ $TARGET == /* ]] || TARGET=$ROOT/$TARGET
IN=$TARGET/wasm32-wasip1/release/token_exchange_filter.wasm
OUT=$TARGET/wasm32-wasip1/release/token_exchange_filter.opt.wasm
[[ -f $IN ]] || die "$IN not found after the build"

if ! command -v wasm-opt >/dev/null; then
    printf '==> installing binaryen (wasm-opt) with apt-get\n' >&2
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq binaryen; } >&2 ||
        die "could not install binaryen (wasm-opt)"
fi
if [[ ! -f $OUT || $IN -nt $OUT ]]; then
    # The features rustc enables for wasm32-wasip1; wasm-opt must keep them.
    wasm-opt -Oz --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
        --enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types \
        "$IN" -o "$OUT.tmp" || die "wasm-opt failed"
    mv "$OUT.tmp" "$OUT"
fi
echo "$OUT"
