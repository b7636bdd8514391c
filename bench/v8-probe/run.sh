#!/usr/bin/env bash
# Times the probe's candidates inside Envoy 1.40's V8 (and natively): builds the probe
# (without and with p256's precomputed tables), starts Envoy with the probe as a singleton
# Wasm service (one VM, main thread, --concurrency 1) once per module, alternating
# PROCESSES times, and prints the median of the per-process medians per candidate.
#
#   bash bench/v8-probe/run.sh [ROUNDS] [BATCH] [PROCESSES]     (default 21 200 2)
set -euo pipefail
cd "$(dirname "$0")"
PROBE=$(pwd)
ROOT=$(cd ../.. && pwd)
ROUNDS=${1:-21}
BATCH=${2:-200}
PROCESSES=${3:-2}
bash "$ROOT/scripts/setup.sh"
export CARGO_TARGET_DIR=$PROBE/target
cargo build --quiet --release --target wasm32-wasip1 --lib
cp target/wasm32-wasip1/release/v8_probe.wasm target/probe-plain.wasm
cargo build --quiet --release --target wasm32-wasip1 --lib --features tables
cp target/wasm32-wasip1/release/v8_probe.wasm target/probe-tables.wasm
cargo build --quiet --release --bin native-probe

OUT=$PROBE/target/results.tsv
: >"$OUT"
run_envoy() { # wasm
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
          value: "$ROUNDS $BATCH"
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
    grep -o 'probe-result.*' "$log" | cut -f2- >>"$OUT"
    rm -rf "$dir"
}
for p in $(seq "$PROCESSES"); do
    echo "==> Envoy process pair $p of $PROCESSES" >&2
    run_envoy "$PROBE/target/probe-plain.wasm"
    run_envoy "$PROBE/target/probe-tables.wasm"
done
./target/release/native-probe "$ROUNDS" "$((BATCH / 2))" >>"$OUT"
ls -l target/probe-plain.wasm target/probe-tables.wasm >&2
# Median of the per-process medians, per (runtime, candidate).
awk -F'\t' '{ k = $1 "\t" $2; v[k] = v[k] " " $3; if (!(k in seen)) { seen[k] = 1; order[++n] = k } }
    END { for (i = 1; i <= n; i++) { k = order[i]; m = split(v[k], a, " ");
          for (x = 1; x <= m; x++) for (y = x + 1; y <= m; y++) if (a[y] < a[x]) { t = a[x]; a[x] = a[y]; a[y] = t }
          med = (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2;
          printf "%s\t%.0f\t(%d runs)\n", k, med, m } }' "$OUT"
