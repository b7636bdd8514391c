"""Signs tokens with PyJWT, an implementation independent of the filter and of the tests'
own signers.

Reads a JSON array on stdin, one object per token:
  {"jwk": {private JWK}, "alg": ..., "headers": {...}, "claims": {...}}
and prints a JSON array of compact tokens in the same order.
"""
import json
import sys

import jwt


def main():
    tokens = []
    for case in json.load(sys.stdin):
        key = jwt.PyJWK(case["jwk"], algorithm=case["alg"]).key
        tokens.append(
            jwt.encode(case["claims"], key, algorithm=case["alg"], headers=case["headers"])
        )
    print(json.dumps(tokens))


if __name__ == "__main__":
    main()
