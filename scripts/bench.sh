#!/usr/bin/env bash
# The benchmark: Envoy 1.40 (--concurrency 1) passthrough, Envoy's jwt_authn without and with
# its JWT cache, and the filter (warm: 8 tokens repeated; cold: 20,000 distinct pre-minted
# tokens), for RS256, ES256 and EdDSA issuers with EdDSA minting, plus the policy-scale case,
# each driven by wrk -t1 -c32 against a small Rust upstream on 127.0.0.1, interleaved over
# rounds; then the native micro-benchmark. Prints Markdown tables (median req/s, p50/p99
# latency, ratios to passthrough and to jwt_authn) ready to paste; details: bench/README.md.
#
#   bash scripts/bench.sh                    3 rounds of 10 s per case (about 12 minutes)
#   bash scripts/bench.sh --quick            1 round of 5 s per case
#   bash scripts/bench.sh --smoke            CI: a few cases, 2 s each, few tokens (checks it runs)
#   options: --rounds N --duration S --tokens N --connections N
#            --cases "passthrough filter-rs256-cold ..." (see --list) --no-micro --no-envoy
#            --no-pin (do not pin Envoy and wrk to separate cores with taskset)
#            --wasm FILE (benchmark this filter module instead of building one, e.g. an older
#            build to compare with)
#            --compare FILE (a second filter module, e.g. main's build, on its own listener
#            with the same policy: cases compare-ALG-warm/cold, interleaved with the others)
#   cases: --list; noop is a Wasm filter that does nothing (the ceiling for any Wasm filter);
#            noop-exports and probe-* (not in the default run) price each host call of a cache
#            hit (bench/README.md, "The warm path")
#   BENCH_WASM_LOG=warn bash scripts/bench.sh ...   Envoy's wasm log level (default info). At
#            warn the audit lines are dropped: not a valid configuration, only a way to measure
#            what writing them costs.
# Files (configs, logs, tokens, results) go to .work/bench/; results.md holds the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

ROUNDS=3
DURATION=10
TOKENS=20000
CONNECTIONS=32
MICRO=1
ENVOY=1
PIN=1
PROFILE=release
MICRO_ARGS=()
ALGS=(rs256 es256 eddsa)
ALL_CASES=(passthrough)
for a in "${ALGS[@]}"; do
    ALL_CASES+=("authn-$a-warm" "authn-cache-$a-warm" "authn-$a-cold" "filter-$a-warm" "filter-$a-cold")
done
ALL_CASES+=(filter-scale-warm filter-scale-cold noop)
CASES=("${ALL_CASES[@]}")
# The host-cost probe (bench/host-probe): noop exports only what a request needs; the others
# export every stream callback the filter exports and make one kind of a cache hit's host
# calls each (probe-hit: all of them). Run them with --cases; not in the default run.
PROBES=(noop-exports probe-headers probe-time probe-replace probe-log probe-counters probe-hit)
ALL_CASES+=("${PROBES[@]}")
for a in "${ALGS[@]}"; do ALL_CASES+=("compare-$a-warm" "compare-$a-cold"); done
WASM=""
COMPARE=""
usage() { awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) ROUNDS=1; DURATION=5 ;;
        --smoke)
            ROUNDS=1; DURATION=2; TOKENS=300; PROFILE=dev; MICRO_ARGS=(--quick)
            CASES=(passthrough authn-rs256-cold authn-cache-rs256-warm filter-rs256-warm
                   filter-rs256-cold filter-es256-cold filter-eddsa-cold filter-scale-warm noop
                   probe-hit) ;;
        --rounds) ROUNDS=${2:?}; shift ;;
        --duration) DURATION=${2:?}; shift ;;
        --tokens) TOKENS=${2:?}; shift ;;
        --connections) CONNECTIONS=${2:?}; shift ;;
        --cases) read -r -a CASES <<<"${2:?}"; shift ;;
        --no-micro) MICRO=0 ;;
        --no-envoy) ENVOY=0 ;;
        --no-pin) PIN=0 ;;
        --wasm) WASM=$(realpath "${2:?}"); shift ;;
        --compare) COMPARE=$(realpath "${2:?}"); shift ;;
        --list) printf '%s\n' "${ALL_CASES[@]}"; exit 0 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done
for c in "${CASES[@]}"; do
    [[ " ${ALL_CASES[*]} " == *" $c "* ]] || { echo "bench: unknown case $c (see --list)" >&2; exit 2; }
    [[ $c != compare-* || -n $COMPARE ]] || { echo "bench: case $c needs --compare FILE" >&2; exit 2; }
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $DURATION =~ ^[1-9][0-9]*$ && $TOKENS =~ ^[1-9][0-9]*$ ]] ||
    { echo "bench: --rounds, --duration and --tokens take positive integers" >&2; exit 2; }

say() { printf '==> [bench] %s\n' "$*" >&2; }
die() { printf 'bench: ERROR: %s\n' "$*" >&2; exit 1; }

STATE=$ROOT/.work/bench
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools and builds ---------------------------------------------------------------------
if [[ $ENVOY == 1 ]] && ! command -v wrk >/dev/null; then
    say "installing wrk (apt-get)"
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk >/dev/null
    command -v wrk >/dev/null || die "could not install wrk"
fi
bash scripts/setup.sh
PY=$ROOT/.venv/bin/python
if [[ $PROFILE == release ]]; then
    say "building the bench helpers (release)"
    cargo build --quiet --release -p token-exchange-bench
    BENCH=$ROOT/target/release/bench
else
    cargo build --quiet -p token-exchange-bench
    BENCH=$ROOT/target/debug/bench
fi
# CARGO_TARGET_DIR may move the binaries.
[[ -x $BENCH ]] || BENCH=$(cargo metadata --format-version 1 --no-deps |
    "$PY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/${PROFILE/dev/debug}/bench
[[ -x $BENCH ]] || die "no bench binary"

rm -rf "$STATE"
mkdir -p "$STATE"
# Envoy on core 0; wrk, the upstream and the micro-benchmark on core 1, when there are two.
PIN_ENVOY=(); PIN_LOAD=()
if [[ $PIN == 1 && $(nproc) -ge 2 ]] && command -v taskset >/dev/null; then
    PIN_ENVOY=(taskset -c 0); PIN_LOAD=(taskset -c 1)
fi
RESULTS=$STATE/results.md
{
    echo "Machine: $(nproc) cores, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
} >"$RESULTS"

if [[ $ENVOY == 1 ]]; then
    if [[ -z $WASM ]]; then
        say "building the filter (scripts/build-wasm.sh)"
        WASM=$(bash scripts/build-wasm.sh)
    fi
    [[ -f $WASM ]] || die "no $WASM"
    say "building the host-cost probe (bench/host-probe, the filter's release profile)"
    for variant in min all; do
        features=(); [[ $variant == all ]] && features=(--features all-exports)
        env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS CARGO_TARGET_DIR="$ROOT/target/host-probe" \
            cargo build --quiet --release --target wasm32-wasip1 \
            --manifest-path bench/host-probe/Cargo.toml "${features[@]}"
        cp "$ROOT/target/host-probe/wasm32-wasip1/release/host_probe.wasm" "$STATE/probe-$variant.wasm"
    done
    [[ -z $COMPARE ]] || echo "Compared with (compare-* cases): $COMPARE, $(stat -c %s "$COMPARE") bytes" >>"$RESULTS"
    echo "Filter: $(basename "$WASM"), $(stat -c %s "$WASM") bytes; wasm log level ${BENCH_WASM_LOG:-info}; Envoy $("$ROOT/.venv/bin/envoy" --version | grep -o '[0-9]*\.[0-9]*\.[0-9]*/[A-Za-z]*' | head -1); wrk -t1 -c$CONNECTIONS; $ROUNDS round(s) of ${DURATION}s per case, interleaved" >>"$RESULTS"

    say "pre-minting tokens ($TOKENS cold + 8 warm per issuer) into $STATE"
    VALID=$(( 600 + ROUNDS * ${#CASES[@]} * (DURATION + 3) ))
    "$BENCH" gen --out "$STATE" --cold "$TOKENS" --warm 8 --valid-for "$VALID"
    "$BENCH" gen-scale --out "$STATE" --rules 1000 --issuers 100 --cold "$TOKENS" --warm 8 --valid-for "$VALID"

    "${PIN_LOAD[@]}" "$BENCH" upstream --port-file "$STATE/upstream.port" >"$STATE/upstream.log" 2>&1 </dev/null &
    PIDS+=($!)
    for _ in $(seq 100); do [[ -f $STATE/upstream.port ]] && break; sleep 0.1; done
    [[ -f $STATE/upstream.port ]] || die "the upstream did not start"
    UPSTREAM_PORT=$(cat "$STATE/upstream.port")

    read -r P_PASS P_AUTHN P_CACHE P_FILTER P_SCALE P_ADMIN < <("$PY" -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')
    "$PY" - "$STATE" "$WASM" "$UPSTREAM_PORT" "$P_PASS" "$P_AUTHN" "$P_CACHE" "$P_FILTER" "$P_SCALE" "$P_ADMIN" "${PROBES[*]}" "$COMPARE" <<'PYEOF'
import json, sys
import socket
state, wasm, up, p_pass, p_authn, p_cache, p_filter, p_scale, p_admin, probes, compare = sys.argv[1:]
algs = ["rs256", "es256", "eddsa"]
router = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}

def listener(name, port, filters):
    return {"name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": int(port)}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": name,
                    "normalize_path": True, "merge_slashes": True,
                    "path_with_escaped_slashes_action": "REJECT_REQUEST",
                    "route_config": {"name": name, "virtual_hosts": [{
                        "name": name, "domains": ["*"],
                        "routes": [{"name": "all", "match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}]},
                    "http_filters": filters + [router]}}]}]}

def authn(cache):
    providers = {}
    for a in algs:
        p = {"issuer": open(f"{state}/issuer-{a}.txt").read(), "audiences": ["api"],
             "local_jwks": {"inline_string": open(f"{state}/jwks-{a}.json").read()},
             "forward": True}
        if cache:
            p["jwt_cache_config"] = {"jwt_cache_size": 1000}
        providers[a] = p
    return {"name": "envoy.filters.http.jwt_authn",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                             "providers": providers,
                             "rules": [{"match": {"prefix": f"/{a}/"}, "requires": {"provider_name": a}} for a in algs]}}

def wasm_filter(name, policy_file=None, module=wasm, configuration=None):
    if configuration is None:
        configuration = open(f"{state}/{policy_file}").read()
    return {"name": "envoy.filters.http.wasm",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                             "config": {"name": name, "root_id": "token_exchange", "failure_policy": "FAIL_CLOSED",
                                        "vm_config": {"vm_id": name, "runtime": "envoy.wasm.runtime.v8",
                                                      "code": {"local": {"filename": module}}},
                                        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                                          "value": configuration}}}}

# The probe cases: one listener each, on ports picked here (listed in probe-ports.txt).
STEPS = {"noop": "noop", "noop-exports": "noop", "probe-headers": "headers", "probe-time": "time",
         "probe-replace": "replace", "probe-log": "log", "probe-counters": "counters",
         "probe-hit": "headers,time,replace,log,counters", "calibrate": "calibrate"}

probe_ports = {}
for case in ["noop"] + probes.split() + ["calibrate"]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    probe_ports[case] = s.getsockname()[1]
    s.close()
extra = []
if compare:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    probe_ports["compare"] = s.getsockname()[1]
    s.close()
    extra.append(listener("compare", probe_ports["compare"],
                          [wasm_filter("bench_compare", "policy.json", module=compare)]))
with open(f"{state}/probe-ports.txt", "w") as f:
    f.writelines(f"{case} {port}\n" for case, port in probe_ports.items())

config = {
    "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": int(p_admin)}}},
    "static_resources": {
        "listeners": [
            listener("passthrough", p_pass, []),
            listener("authn", p_authn, [authn(False)]),
            listener("authn_cache", p_cache, [authn(True)]),
            listener("filter", p_filter, [wasm_filter("bench", "policy.json")]),
            listener("filter_scale", p_scale, [wasm_filter("bench_scale", "scale-policy.json")]),
        ] + [listener(case.replace("-", "_"), port,
                      [wasm_filter(case, module=f"{state}/probe-{'min' if case == 'noop' else 'all'}.wasm",
                                   configuration=STEPS[case])])
             for case, port in probe_ports.items() if case != "compare"] + extra,
        "clusters": [{"name": "upstream", "type": "STATIC", "connect_timeout": "1s",
                      "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [
                          {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": int(up)}}}}]}]}}]}}
json.dump(config, open(f"{state}/envoy.json", "w"), indent=1)
PYEOF

    say "starting Envoy (--concurrency 1${PIN_ENVOY:+, pinned to core 0})"
    # The filter's audit line (wasm, info) is part of its work and stays on; the rest at warn.
    "${PIN_ENVOY[@]}" "$ROOT/.venv/bin/envoy" -c "$STATE/envoy.json" --concurrency 1 \
        --disable-hot-restart -l warn --component-log-level "wasm:${BENCH_WASM_LOG:-info}" \
        >"$STATE/envoy.log" 2>&1 </dev/null &
    ENVOY_PID=$!
    PIDS+=($ENVOY_PID)
    for _ in $(seq 300); do
        kill -0 "$ENVOY_PID" 2>/dev/null || { tail -n 30 "$STATE/envoy.log" >&2; die "Envoy exited"; }
        [[ $(curl -sf --max-time 2 "http://127.0.0.1:$P_ADMIN/ready" 2>/dev/null) == LIVE ]] && break
        sleep 0.2
    done
    [[ $(curl -sf --max-time 2 "http://127.0.0.1:$P_ADMIN/ready" 2>/dev/null) == LIVE ]] ||
        die "Envoy not ready after 60 s; see $STATE/envoy.log"

    SCALE_PATH=$(cat "$STATE/scale-path.txt")
    target() { # case -> "url tokens"
        case $1 in
            passthrough) echo "http://127.0.0.1:$P_PASS/orders/1 none" ;;
            authn-cache-*-warm) a=${1#authn-cache-}; a=${a%-warm}
                echo "http://127.0.0.1:$P_CACHE/$a/orders/1 $STATE/tokens-$a-warm.txt" ;;
            authn-*) a=${1#authn-}; k=${a##*-}; a=${a%-*}
                echo "http://127.0.0.1:$P_AUTHN/$a/orders/1 $STATE/tokens-$a-$k.txt" ;;
            filter-scale-*) echo "http://127.0.0.1:$P_SCALE$SCALE_PATH $STATE/tokens-scale-${1##*-}.txt" ;;
            filter-*) a=${1#filter-}; k=${a##*-}; a=${a%-*}
                echo "http://127.0.0.1:$P_FILTER/orders/1 $STATE/tokens-$a-$k.txt" ;;
            # The probes get the warm RS256 tokens: the same header sizes as the filter's hit.
            compare-*) a=${1#compare-}; k=${a##*-}; a=${a%-*}
                echo "http://127.0.0.1:$(awk '$1 == "compare" {print $2}' "$STATE/probe-ports.txt")/orders/1 $STATE/tokens-$a-$k.txt" ;;
            noop*|probe-*|calibrate) echo "http://127.0.0.1:$(awk -v c="$1" '$1 == c {print $2}' "$STATE/probe-ports.txt")/orders/1 $STATE/tokens-rs256-warm.txt" ;;
        esac
    }
    # Every case must answer 200 before it is timed: a benchmark of refusals measures nothing.
    for c in "${CASES[@]}"; do
        read -r url tokens < <(target "$c")
        tok=""; [[ $tokens == none ]] || tok=$(head -n1 "$tokens")
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 ${tok:+-H "Authorization: Bearer $tok"} "$url")
        [[ $code == 200 ]] || die "case $c answers $code, not 200 ($url); see $STATE/envoy.log"
    done
    envoy_cpu_ns() { # CPU time of all of Envoy's threads so far (schedstat: ns on the CPU)
        cat /proc/"$ENVOY_PID"/task/*/schedstat 2>/dev/null | awk '{ns += $1} END {printf "%.0f", ns}'
    }
    run_wrk() { # case seconds result
        local url tokens cpu0
        read -r url tokens < <(target "$1")
        cpu0=$(envoy_cpu_ns)
        BENCH_RESULT=$3 "${PIN_LOAD[@]}" wrk -t1 -c"$CONNECTIONS" -d"${2}s" --timeout 10s \
            -s bench/bench.lua "$url" -- "$tokens" >"$3.txt" 2>&1 || { cat "$3.txt" >&2; die "wrk failed for $1"; }
        # Envoy's CPU time per request: steadier than req/s when other work shares the core.
        echo $(( $(envoy_cpu_ns) - cpu0 )) >"$3.cpu"
    }
    say "warm-up: 1 s per case"
    for c in "${CASES[@]}"; do run_wrk "$c" 1 "$STATE/warmup-$c.json"; done
    for r in $(seq "$ROUNDS"); do
        say "round $r of $ROUNDS: ${#CASES[@]} cases, ${DURATION}s each"
        for c in "${CASES[@]}"; do
            run_wrk "$c" "$DURATION" "$STATE/round$r-$c.json"
            printf '    %-24s %s\n' "$c" "$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(round(d["requests"]*1e6/d["duration_us"]), "req/s")' "$STATE/round$r-$c.json")" >&2
        done
    done
    kill -0 "$ENVOY_PID" 2>/dev/null || die "Envoy died during the benchmark; see $STATE/envoy.log"
    if [[ " ${CASES[*]} " == *" probe-"* ]]; then
        # Each host call of a hit timed inside V8 with the host clock (the probe's calibrate
        # mode: 200 calls in a row per kind, per request; 11 requests, medians).
        read -r url tokens < <(target calibrate)
        for _ in $(seq 11); do
            curl -s -o /dev/null --max-time 10 -H "Authorization: Bearer $(head -n1 "$tokens")" "$url"
        done
        sleep 0.5
        grep -o 'host-probe calibrate.*' "$STATE/envoy.log" >"$STATE/calibrate.txt" || true
    fi
    # Keep the log small: its start (load messages) and its end.
    { head -n 100 "$STATE/envoy.log"; echo "[...]"; tail -n 100 "$STATE/envoy.log"; } >"$STATE/envoy.log.short"
    mv "$STATE/envoy.log.short" "$STATE/envoy.log"
    "$PY" bench/table.py "$STATE" "$ROUNDS" "${CASES[@]}" >>"$RESULTS"
    if [[ -s $STATE/calibrate.txt ]]; then
        "$PY" - "$STATE/calibrate.txt" >>"$RESULTS" <<'PYEOF'
import statistics, sys
runs = [line.split(":", 1)[1].split() for line in open(sys.argv[1])]
names = runs[0][0::2]
print(f"\nHost calls timed inside V8 (bench/host-probe calibrate: {len(runs)} requests, 200 calls each, median µs per call):\n")
print("| call | µs |")
print("|---|---:|")
for i, name in enumerate(names):
    print(f"| {name} | {statistics.median(float(r[2 * i + 1]) for r in runs):.3f} |")
PYEOF
    fi
fi

if [[ $MICRO == 1 ]]; then
    say "native micro-benchmark (bench micro ${MICRO_ARGS[*]})"
    echo >>"$RESULTS"
    "${PIN_LOAD[@]}" "$BENCH" micro "${MICRO_ARGS[@]}" >>"$RESULTS"
fi
echo >&2
cat "$RESULTS"
