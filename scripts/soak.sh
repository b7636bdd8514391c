#!/usr/bin/env bash
# Soak test: a real Envoy 1.40 (--concurrency 2) with the release filter wasm, driven by wrk
# with mixed valid, invalid and hostile traffic against a counting upstream, all on 127.0.0.1.
#
#   bash scripts/soak.sh                       full soak (120 s, 32 connections)
#   bash scripts/soak.sh --short               CI version (15 s)
#   bash scripts/soak.sh [--duration SECONDS] [--connections N] [--threads N]
#
# It asserts (exit 1 and a summary otherwise): zero 5xx (wrk's per-class counts and Envoy's
# downstream_rq_5xx), every response's status is the one expected for its request, zero
# requests reaching the upstream with an original token, exactly one audit line per request
# Envoy handled (== downstream_rq_total) with the expected reason, allowed == requests the
# upstream received, and Envoy's RSS flat: the median of the last third of the run at most
# 10% + 4 MiB above the median of the first third (after a warm-up). Details: soak/README.md.
# Files (config, logs, results) go to .work/soak/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=120
CONNECTIONS=32
THREADS=2
while [[ $# -gt 0 ]]; do
    case $1 in
        --short) DURATION=15; CONNECTIONS=16 ;;
        --duration) DURATION=${2:?}; shift ;;
        --connections) CONNECTIONS=${2:?}; shift ;;
        --threads) THREADS=${2:?}; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) printf 'usage: bash scripts/soak.sh [--short] [--duration S] [--connections N] [--threads N]\n' >&2; exit 2 ;;
    esac
    shift
done
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 6 && $DURATION -le 3600 ]] || { echo "soak: --duration must be 6..3600" >&2; exit 2; }
[[ $CONNECTIONS =~ ^[0-9]+$ && $CONNECTIONS -ge 1 && $CONNECTIONS -le 1000 ]] || { echo "soak: bad --connections" >&2; exit 2; }
WARMUP=$(( DURATION >= 60 ? 10 : 3 ))

say() { printf '==> [soak] %s\n' "$*" >&2; }
die() { printf 'soak: ERROR: %s\n' "$*" >&2; exit 1; }

STATE=$ROOT/.work/soak
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools and builds ---------------------------------------------------------------------
if ! command -v wrk >/dev/null || ! command -v curl >/dev/null; then
    say "installing wrk and curl (apt-get)"
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk curl >/dev/null
    command -v wrk >/dev/null || die "could not install wrk"
fi
bash scripts/setup.sh
say "building the filter (release, wasm32-wasip1) and the soak helpers (soak/, release)"
cargo build --quiet --release --target wasm32-wasip1 -p token-exchange-filter
WASM=$ROOT/target/wasm32-wasip1/release/token_exchange_filter.wasm
[[ -f $WASM ]] || die "no $WASM"
# Its own target dir, whatever CARGO_TARGET_DIR says, so the binary's path is known.
CARGO_TARGET_DIR=$ROOT/soak/target cargo build --quiet --release --manifest-path soak/Cargo.toml
SOAK=$ROOT/soak/target/release/soak
PY=$ROOT/.venv/bin/python

rm -rf "$STATE"
mkdir -p "$STATE"
say "generating the policy, tokens and requests into $STATE"
"$SOAK" gen --out "$STATE" --valid-for $(( DURATION + WARMUP + 120 ))

# --- upstream -----------------------------------------------------------------------------
"$SOAK" upstream --originals "$STATE/originals.txt" --port-file "$STATE/upstream.port" \
    --stats-port-file "$STATE/upstream-stats.port" >"$STATE/upstream.log" 2>&1 </dev/null &
PIDS+=($!)
UPSTREAM_PID=$!
for _ in $(seq 100); do [[ -f $STATE/upstream.port ]] && break; sleep 0.1; done
[[ -f $STATE/upstream.port ]] || { cat "$STATE/upstream.log" >&2; die "the upstream did not start"; }
UPSTREAM_PORT=$(cat "$STATE/upstream.port")
UPSTREAM_STATS_PORT=$(cat "$STATE/upstream-stats.port")
# Positive control for the leak detector: an original token sent straight to the upstream
# (bypassing Envoy) must be counted as a leak; then the counters are zeroed.
ORIGINAL=$(grep -m1 '^Bearer ey' "$STATE/originals.txt")
curl -sf --max-time 5 -o /dev/null -H "Authorization: $ORIGINAL" "http://127.0.0.1:$UPSTREAM_PORT/control" ||
    die "the upstream does not answer"
curl -sf --max-time 5 "http://127.0.0.1:$UPSTREAM_STATS_PORT/stats" | grep -q '"leaks":1,' ||
    die "leak detector positive control failed: a direct original token was not counted"
curl -sf --max-time 5 -o /dev/null "http://127.0.0.1:$UPSTREAM_STATS_PORT/reset"

# --- Envoy --------------------------------------------------------------------------------
free_ports() {
    "$PY" -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))'
}
read -r LISTENER_PORT ADMIN_PORT < <(free_ports)
POLICY_YAML=$("$PY" -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()))' "$STATE/policy.json")
cat >"$STATE/envoy.yaml" <<YAML
# Generated by scripts/soak.sh: the envoy-example configuration (fail closed, path
# normalisation) with the soak's policy, free ports, and x-request-id echoed in responses.
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: $ADMIN_PORT } }
static_resources:
  listeners:
    - name: gateway
      address: { socket_address: { address: 127.0.0.1, port_value: $LISTENER_PORT } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: gateway
                normalize_path: true
                merge_slashes: true
                path_with_escaped_slashes_action: REJECT_REQUEST
                always_set_request_id_in_response: true
                route_config:
                  name: soak
                  virtual_hosts:
                    - name: soak
                      domains: ["*"]
                      routes:
                        - name: orders
                          match: { prefix: "/orders" }
                          route: { cluster: soak_upstream }
                        - name: other
                          match: { prefix: "/" }
                          route: { cluster: soak_upstream }
                http_filters:
                  - name: envoy.filters.http.wasm
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        name: token_exchange
                        root_id: token_exchange
                        failure_policy: FAIL_CLOSED
                        vm_config:
                          vm_id: token_exchange
                          runtime: envoy.wasm.runtime.v8
                          code: { local: { filename: "$WASM" } }
                        configuration:
                          "@type": type.googleapis.com/google.protobuf.StringValue
                          value: $POLICY_YAML
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: soak_upstream
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: soak_upstream
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address: { socket_address: { address: 127.0.0.1, port_value: $UPSTREAM_PORT } }
YAML

say "starting Envoy (--concurrency 2) on 127.0.0.1:$LISTENER_PORT, admin 127.0.0.1:$ADMIN_PORT"
# Envoy logs to stderr (written as it goes); the audit lines are info-level wasm logs.
.venv/bin/envoy -c "$STATE/envoy.yaml" --concurrency 2 --disable-hot-restart -l info \
    >"$STATE/envoy.log" 2>&1 </dev/null &
PIDS+=($!)
ENVOY_PID=$!
admin() { curl -sf --max-time 5 "http://127.0.0.1:$ADMIN_PORT/$1"; }
for _ in $(seq 150); do
    kill -0 "$ENVOY_PID" 2>/dev/null || { tail -n 30 "$STATE/envoy.log" >&2; die "Envoy exited"; }
    [[ $(admin ready 2>/dev/null) == LIVE ]] && break
    sleep 0.2
done
[[ $(admin ready 2>/dev/null) == LIVE ]] || die "Envoy not ready after 30 s; see $STATE/envoy.log"

# --- load ---------------------------------------------------------------------------------
URL=http://127.0.0.1:$LISTENER_PORT/
run_wrk() { # seconds result-file
    SOAK_WRK_RESULT=$2 wrk -t "$THREADS" -c "$CONNECTIONS" -d "${1}s" --timeout 10s \
        -s soak/soak.lua "$URL" -- "$STATE/requests.bin" >"$2.txt" 2>&1 ||
        { cat "$2.txt" >&2; die "wrk failed"; }
}
say "warm-up: ${WARMUP}s (counted in every total, not in the memory comparison)"
run_wrk "$WARMUP" "$STATE/wrk-warmup.json"

say "soak: ${DURATION}s, $CONNECTIONS connections, $THREADS wrk threads; sampling Envoy's VmRSS every second"
(
    i=0
    while kill -0 "$ENVOY_PID" 2>/dev/null; do
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$ENVOY_PID/status" 2>/dev/null) || break
        printf '%d %s\n' "$i" "$rss"
        i=$((i + 1))
        sleep 1
    done
) >"$STATE/rss.txt" &
SAMPLER_PID=$!
PIDS+=($SAMPLER_PID)
run_wrk "$DURATION" "$STATE/wrk.json"
kill "$SAMPLER_PID" 2>/dev/null || true
cat "$STATE/wrk.json.txt" >&2

# --- settle and collect -------------------------------------------------------------------
# Wait until Envoy has no active request and the audit log stopped growing.
prev=-1
for _ in $(seq 100); do
    active=$(admin "stats?filter=^http.gateway.downstream_rq_active$" | awk '{print $2}')
    lines=$(grep -c '{"event":"token_exchange"' "$STATE/envoy.log" || true)
    [[ ${active:-1} == 0 && $lines == "$prev" ]] && break
    prev=$lines
    sleep 0.3
done
admin "stats?format=json" >"$STATE/envoy-stats.json"
curl -sf --max-time 5 "http://127.0.0.1:$UPSTREAM_STATS_PORT/stats" >"$STATE/upstream-stats.json" ||
    die "could not read the upstream's counters"
kill -0 "$ENVOY_PID" 2>/dev/null || die "Envoy died during the soak; see $STATE/envoy.log"
kill -0 "$UPSTREAM_PID" 2>/dev/null || die "the upstream died during the soak"

"$PY" soak/check.py "$STATE" --duration "$DURATION" --warmup "$WARMUP" \
    --connections "$CONNECTIONS" --threads "$THREADS"
