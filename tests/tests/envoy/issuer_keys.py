#!/usr/bin/env python3
"""Generates TEST-ONLY ES256 issuer keys for the end-to-end tests, with `cryptography`.

    issuer_keys.py DIR KID [KID ...]

Writes DIR/<kid>.TEST-ONLY.pem (the private key, for mint_demo_token.py --key) and prints a
JSON list of the public JWKs (with kid, alg, use) on stdout. The keys are made fresh on each
run and never committed.
"""
import base64
import json
import os
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir, kids = argv[0], argv[1:]
    jwks = []
    for kid in kids:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with open(os.path.join(out_dir, f"{kid}.TEST-ONLY.pem"), "wb") as f:
            f.write(pem)
        numbers = key.public_key().public_numbers()
        jwks.append({
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": b64(numbers.x), "y": b64(numbers.y),
        })
    print(json.dumps(jwks))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
