#!/usr/bin/env python3
"""Mints demo tokens with the DEMO-ONLY issuer key, using PyJWT (an independent JWT library).

Run with the project's venv (scripts/setup.sh installs PyJWT and cryptography there):

    .venv/bin/python envoy-example/mint_demo_token.py                      # orders:read, valid
    .venv/bin/python envoy-example/mint_demo_token.py --scope "profile"    # lacks orders:read
    .venv/bin/python envoy-example/mint_demo_token.py --expired
    .venv/bin/python envoy-example/mint_demo_token.py --audience other-api

Tests also use it with --key/--kid/--alg/--issuer to sign with their own keys.
"""

import argparse
import os
import sys
import time
import uuid

import jwt  # PyJWT

HERE = os.path.dirname(os.path.abspath(__file__))
DEMO_KEY = os.path.join(HERE, "demo-keys", "demo-issuer-es256.DEMO-ONLY.pem")


def main():
    ap = argparse.ArgumentParser(description="Mint a demo bearer token (DEMO keys only).")
    ap.add_argument("--scope", default="orders:read profile", help="space-separated scopes")
    ap.add_argument("--expired", action="store_true", help="exp one hour in the past")
    ap.add_argument("--audience", default="demo-api", help="aud (the demo policy accepts demo-api)")
    ap.add_argument("--issuer", default="https://idp.demo.local")
    ap.add_argument("--subject", default="alice")
    ap.add_argument("--client", default="demo-web-app", help="azp (the caller)")
    ap.add_argument("--acr", default="urn:demo:mfa")
    ap.add_argument("--ttl", type=int, default=600, help="lifetime in seconds")
    ap.add_argument("--now", type=int, help="issue time (Unix seconds); default: now")
    ap.add_argument("--jti", help="token id; default: random")
    ap.add_argument("--key", default=DEMO_KEY, help="PEM private key file")
    ap.add_argument("--kid", default="demo-issuer-1")
    ap.add_argument("--alg", default="ES256")
    args = ap.parse_args()

    now = args.now if args.now is not None else int(time.time())
    if args.expired:
        iat, exp = now - 7200, now - 3600
    else:
        iat, exp = now, now + args.ttl
    claims = {
        "iss": args.issuer,
        "sub": args.subject,
        "aud": args.audience,
        "azp": args.client,
        "iat": iat,
        "nbf": iat,
        "exp": exp,
        "jti": args.jti or str(uuid.uuid4()),
        "scope": args.scope,
        "acr": args.acr,
        "tenant": "acme",
        "email": "alice@example.com",
    }
    with open(args.key, "rb") as f:
        key = f.read()
    token = jwt.encode(claims, key, algorithm=args.alg, headers={"kid": args.kid, "typ": "JWT"})
    sys.stdout.write(token + "\n")


if __name__ == "__main__":
    main()
