#!/usr/bin/env bash
# Runs the token-exchange-filter demo: builds the filter, starts the demo upstream and a real
# Envoy with envoy-example/envoy.yaml in the background, and prints curl commands to try.
#
#   bash scripts/demo.sh          start (restarts a running demo)
#   bash scripts/demo.sh stop     stop it
#
# Ports (127.0.0.1 only): DEMO_PORT (10000, the gateway), DEMO_UPSTREAM_PORT (10001),
# DEMO_JWKS_PORT (10002, the demo issuer's key set), DEMO_ADMIN_PORT (9901). Files (config,
# logs, pids) go to .work/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STATE=$ROOT/.work/demo
PORT=${DEMO_PORT:-10000}
UPSTREAM_PORT=${DEMO_UPSTREAM_PORT:-10001}
JWKS_PORT=${DEMO_JWKS_PORT:-10002}
ADMIN_PORT=${DEMO_ADMIN_PORT:-9901}

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'demo: ERROR: %s\n' "$*" >&2; exit 1; }

stop() {
    local name pid
    for name in envoy upstream jwks; do
        if [[ -f $STATE/$name.pid ]]; then
            pid=$(cat "$STATE/$name.pid")
            if kill -0 "$pid" 2>/dev/null; then
                say "stopping $name (pid $pid)"
                kill "$pid" 2>/dev/null || true
                for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
                kill -9 "$pid" 2>/dev/null || true
            fi
            rm -f "$STATE/$name.pid"
        fi
    done
}

if [[ ${1:-} == stop ]]; then
    stop
    exit 0
fi
[[ $# -eq 0 ]] || die "usage: bash scripts/demo.sh [stop]"

bash scripts/setup.sh
say "building the filter (scripts/build-wasm.sh)"
WASM=$(bash scripts/build-wasm.sh)
[[ -f $WASM ]] || die "build produced no $WASM"

stop
mkdir -p "$STATE"
say "rendering $STATE/envoy.yaml"
.venv/bin/python - "$WASM" "$PORT" "$UPSTREAM_PORT" "$ADMIN_PORT" "$JWKS_PORT" "$STATE/envoy.yaml" <<'PY'
import json, sys
wasm, port, upstream, admin, jwks, out = sys.argv[1:]
template = open("envoy-example/envoy.yaml", encoding="utf-8").read()
policy = json.load(open("envoy-example/demo-policy.json", encoding="utf-8"))
values = {
    "WASM_PATH": wasm,
    # A JSON string literal is a valid YAML double-quoted scalar.
    "POLICY_JSON": json.dumps(json.dumps(policy, separators=(",", ":"))),
    "LISTENER_PORT": port,
    "UPSTREAM_PORT": upstream,
    "ADMIN_PORT": admin,
    "JWKS_PORT": jwks,
}
for k, v in values.items():
    template = template.replace("{{" + k + "}}", v)
assert "{{" not in template, "unrendered placeholder"
open(out, "w", encoding="utf-8").write(template)
PY

say "starting the demo upstream on 127.0.0.1:$UPSTREAM_PORT"
nohup .venv/bin/python envoy-example/upstream.py --port "$UPSTREAM_PORT" \
    >"$STATE/upstream.log" 2>&1 </dev/null &
echo $! >"$STATE/upstream.pid"

say "starting the demo issuer's key set endpoint on 127.0.0.1:$JWKS_PORT"
nohup .venv/bin/python envoy-example/jwks_server.py --port "$JWKS_PORT" \
    >"$STATE/jwks.log" 2>&1 </dev/null &
echo $! >"$STATE/jwks.pid"

say "starting Envoy on 127.0.0.1:$PORT (admin 127.0.0.1:$ADMIN_PORT)"
# Envoy logs to stderr (unbuffered); --log-path would hold lines back in a buffer.
nohup .venv/bin/envoy -c "$STATE/envoy.yaml" --concurrency 2 --disable-hot-restart \
    >"$STATE/envoy.log" 2>&1 </dev/null &
echo $! >"$STATE/envoy.pid"

# Ready when Envoy's admin says LIVE and the upstream answers.
ready() {
    .venv/bin/python - "$ADMIN_PORT" "$UPSTREAM_PORT" "$JWKS_PORT" <<'PY'
import sys, urllib.request
admin, upstream, jwks = sys.argv[1:]
try:
    live = urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1).read()
    urllib.request.urlopen(f"http://127.0.0.1:{upstream}/ready", timeout=1).read()
    urllib.request.urlopen(f"http://127.0.0.1:{jwks}/ready", timeout=1).read()
except Exception:
    sys.exit(1)
sys.exit(0 if live.strip() == b"LIVE" else 1)
PY
}
for _ in $(seq 100); do
    kill -0 "$(cat "$STATE/envoy.pid")" 2>/dev/null ||
        { tail -n 20 "$STATE/envoy.log" >&2; die "Envoy exited; see $STATE/envoy.log"; }
    kill -0 "$(cat "$STATE/upstream.pid")" 2>/dev/null ||
        { cat "$STATE/upstream.log" >&2; die "the upstream exited; see $STATE/upstream.log"; }
    kill -0 "$(cat "$STATE/jwks.pid")" 2>/dev/null ||
        { cat "$STATE/jwks.log" >&2; die "the key set endpoint exited; see $STATE/jwks.log"; }
    if ready; then break; fi
    sleep 0.2
done
ready || die "not ready after 20s; see $STATE/envoy.log"

MINT=".venv/bin/python envoy-example/mint_demo_token.py"
cat <<TXT

The demo is running: Envoy on http://127.0.0.1:$PORT with the token-exchange filter
(policy: envoy-example/demo-policy.json), the echo upstream on 127.0.0.1:$UPSTREAM_PORT, and
the demo issuer's key set on 127.0.0.1:$JWKS_PORT (the filter fetches it through Envoy).
Run these from $ROOT:

# 1. Allowed: a valid ES256 token from the demo issuer (PyJWT) is exchanged. The upstream
#    echoes what it received: Authorization now holds a token minted by the gateway
#    (iss https://gateway.demo.local, aud orders-service, scope orders:read, typ at+jwt),
#    and x-forwarded-user (a strip_headers entry) is gone.
curl -s -H "Authorization: Bearer \$($MINT)" -H "x-forwarded-user: mallory" http://127.0.0.1:$PORT/orders/42

# 2. Denied, no token: 401 with WWW-Authenticate: Bearer realm="demo-gateway" (no error).
curl -si http://127.0.0.1:$PORT/orders/42

# 3. Denied, token lacks orders:read: 403, error="insufficient_scope", scope="orders:read".
curl -si -H "Authorization: Bearer \$($MINT --scope profile)" http://127.0.0.1:$PORT/orders/42

# More: an expired token (401 invalid_token), a wrong audience, an unmatched route (403):
curl -si -H "Authorization: Bearer \$($MINT --expired)" http://127.0.0.1:$PORT/orders/42
curl -si -H "Authorization: Bearer \$($MINT --audience other-api)" http://127.0.0.1:$PORT/orders/42
curl -si -H "Authorization: Bearer \$($MINT)" http://127.0.0.1:$PORT/admin

# The gateway's own public keys and OpenID configuration, served by the filter itself:
curl -s http://127.0.0.1:$PORT/.well-known/jwks.json
curl -s http://127.0.0.1:$PORT/.well-known/openid-configuration

# The issuer's keys are fetched (and refreshed every 60 s): stop the key set endpoint, and
# the gateway keeps its last keys and logs the failure once; start it again and it recovers.
kill \$(cat $STATE/jwks.pid)
grep 'keys of issuer' $STATE/envoy.log
nohup .venv/bin/python envoy-example/jwks_server.py --port $JWKS_PORT >$STATE/jwks.log 2>&1 & echo \$! >$STATE/jwks.pid

# The audit log (one JSON line per decision):
grep -o '{"event":"token_exchange".*' $STATE/envoy.log

# Stop the demo:
bash scripts/demo.sh stop
TXT
