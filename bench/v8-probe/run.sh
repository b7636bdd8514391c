#!/usr/bin/env bash
# Times the probe's candidates inside Envoy 1.40's V8 (and natively). Builds the probe five
# ways: opt-level 3, "s" and "z" everywhere ("o3", "os", "oz"), the filter's release profile
# (opt-level "z" except the crypto crates at 3: "mixed"), and "mixed" after `wasm-opt -Oz`
# ("mixed+wasm-opt"); all with
# p256's precomputed tables (the shipped filter has none: see PROBE_SHIPPED). Starts Envoy with the
# probe as a singleton Wasm service (one VM, main thread, --concurrency 1) once per module,
# alternating PROCESSES times, and prints the median of the per-process medians per candidate.
#
#   bash bench/v8-probe/run.sh [ROUNDS] [BATCH] [PROCESSES]     (default 21 200 2)
#
# Environment: PROBE_BUILDS, a subset of "o3 os oz mixed mixed+wasm-opt" (default all five;
# "mixed+wasm-opt" is how the filter ships); PROBE_CASES, comma-separated words, only the
# candidates whose name contains one run (default all), e.g. PROBE_CASES=RS256-2048.
# PROBE_SHIPPED=1 is PROBE_BUILDS="before shipped": both after `wasm-opt -Oz`, "before" the
# release profile as it was with jwt-simple (crypto crates at 3, p256 tables on) and "shipped"
# today's (crypto-bigint at "z", no p256 tables), for the speed side of the module-size
# choices (bench/README.md, "Module size").
set -euo pipefail
cd "$(dirname "$0")"
PROBE=$(pwd)
ROOT=$(cd ../.. && pwd)
ROUNDS=${1:-21}
BATCH=${2:-200}
PROCESSES=${3:-2}
BUILDS=${PROBE_BUILDS:-o3 os oz mixed mixed+wasm-opt}
if [[ ${PROBE_SHIPPED:-0} == 1 ]]; then BUILDS="before shipped"; fi
CASES=${PROBE_CASES:-}
wants() { [[ " $BUILDS " == *" $1 "* ]]; }
bash "$ROOT/scripts/setup.sh"
export CARGO_TARGET_DIR=$PROBE/target
MIXED=(--config 'profile.release.opt-level="z"')
for p in crypto-bigint primefield primeorder elliptic-curve p256 p384 curve25519-dalek \
         ed25519-dalek ed25519-compact sha2 rsa-montgomery; do
    MIXED+=(--config "profile.release.package.$p.opt-level=3")
done
if wants o3; then
    cargo build --quiet --release --target wasm32-wasip1 --lib --features tables
    cp target/wasm32-wasip1/release/v8_probe.wasm target/probe-o3.wasm
fi
for o in s z; do
    wants "o$o" || continue
    cargo build --quiet --release --target wasm32-wasip1 --lib --features tables \
        --config "profile.release.opt-level=\"$o\""
    cp target/wasm32-wasip1/release/v8_probe.wasm "target/probe-o$o.wasm"
done
if wants mixed || wants mixed+wasm-opt; then
    cargo build --quiet --release --target wasm32-wasip1 --lib --features tables "${MIXED[@]}"
    cp target/wasm32-wasip1/release/v8_probe.wasm target/probe-mixed.wasm
    wasm-opt -Oz --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
        --enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types \
        target/probe-mixed.wasm -o target/probe-mixed-wasmopt.wasm
fi
wasm_opt() { # in out
    wasm-opt -Oz --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
        --enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types "$1" -o "$2"
}
if wants before; then
    cargo build --quiet --release --target wasm32-wasip1 --lib --features tables "${MIXED[@]}"
    wasm_opt target/wasm32-wasip1/release/v8_probe.wasm target/probe-before.wasm
fi
if wants shipped; then
    cargo build --quiet --release --target wasm32-wasip1 --lib "${MIXED[@]}" \
        --config 'profile.release.package.crypto-bigint.opt-level="z"'
    wasm_opt target/wasm32-wasip1/release/v8_probe.wasm target/probe-shipped.wasm
fi
cargo build --quiet --release --bin native-probe

OUT=$PROBE/target/results.tsv
: >"$OUT"
run_envoy() { # wasm label
    local dir log
    dir=$(mktemp -d)
    log=$dir/envoy.log
    cat >"$dir/envoy.yaml" <<YAML
bootstrap_extensions:
  - name: envoy.bootstrap.wasm
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
      singleton: true
      config:
        name: probe
        root_id: probe
        vm_config:
          vm_id: probe
          runtime: envoy.wasm.runtime.v8
          code: { local: { filename: "$1" } }
        configuration:
          "@type": type.googleapis.com/google.protobuf.StringValue
          value: "$ROUNDS $BATCH $CASES"
YAML
    "$ROOT/.venv/bin/envoy" -c "$dir/envoy.yaml" --concurrency 1 --disable-hot-restart \
        --base-id $((RANDOM + 1000)) -l info >"$log" 2>&1 </dev/null &
    local pid=$!
    for _ in $(seq 1800); do
        grep -q 'probe-done' "$log" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    grep -q 'probe-done' "$log" || { tail -n 20 "$log" >&2; echo "probe: Envoy run failed" >&2; exit 1; }
    grep -o 'probe-result.*' "$log" | cut -f2- | sed "s/^v8/v8 $2/" >>"$OUT"
    rm -rf "$dir"
}
for p in $(seq "$PROCESSES"); do
    echo "==> Envoy process pair $p of $PROCESSES" >&2
    if wants o3; then run_envoy "$PROBE/target/probe-o3.wasm" o3; fi
    if wants os; then run_envoy "$PROBE/target/probe-os.wasm" os; fi
    if wants oz; then run_envoy "$PROBE/target/probe-oz.wasm" oz; fi
    if wants mixed; then run_envoy "$PROBE/target/probe-mixed.wasm" mixed; fi
    if wants mixed+wasm-opt; then run_envoy "$PROBE/target/probe-mixed-wasmopt.wasm" mixed+wasm-opt; fi
    if wants before; then run_envoy "$PROBE/target/probe-before.wasm" before; fi
    if wants shipped; then run_envoy "$PROBE/target/probe-shipped.wasm" shipped; fi
done
PROBE_CASES=$CASES ./target/release/native-probe "$ROUNDS" "$((BATCH / 2))" >>"$OUT"
ls -l target/probe-*.wasm >&2
# Median of the per-process medians, per (runtime, candidate).
awk -F'\t' '{ k = $1 "\t" $2; v[k] = v[k] " " $3; if (!(k in seen)) { seen[k] = 1; order[++n] = k } }
    END { for (i = 1; i <= n; i++) { k = order[i]; m = split(v[k], a, " ");
          for (x = 1; x <= m; x++) for (y = x + 1; y <= m; y++) if (a[y] < a[x]) { t = a[x]; a[x] = a[y]; a[y] = t }
          med = (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2;
          printf "%s\t%.0f\t(%d runs)\n", k, med, m } }' "$OUT"
