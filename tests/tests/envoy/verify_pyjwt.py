"""Verifies gateway-minted tokens with PyJWT, an implementation independent of the filter.

Reads a JSON array on stdin, one object per token:
  {"token": ..., "jwk": {...}, "alg": ..., "audience": ..., "issuer": ...}
and prints a JSON array of results: {"ok": true, "typ": <header typ>} or
{"ok": false, "error": "..."}. Every registered claim the gateway sets is required.
"""
import json
import sys

import jwt


def verify(case):
    key = jwt.PyJWK(case["jwk"], algorithm=case["alg"]).key
    jwt.decode(
        case["token"],
        key=key,
        algorithms=[case["alg"]],
        audience=case["audience"],
        issuer=case["issuer"],
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
        leeway=5,
    )
    return {"ok": True, "typ": jwt.get_unverified_header(case["token"]).get("typ")}


def main():
    results = []
    for case in json.load(sys.stdin):
        try:
            results.append(verify(case))
        except Exception as e:  # report every failure, keep going
            results.append({"ok": False, "error": f"{type(e).__name__}: {e}"})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
