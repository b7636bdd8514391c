#!/usr/bin/env python3
"""The demo identity provider's key set endpoint (Python standard library only).

Serves GET /keys on 127.0.0.1 with a JWK Set made of the public JWKs given (by default the
DEMO-ONLY demo issuer's, demo-keys/demo-issuer-es256.public.jwk.json), as a provider's
`jwks_uri` does. The demo gateway fetches it through its Envoy cluster `demo_idp_jwks` and
refreshes it; stop this server to see the gateway keep its last keys and log the failure
once, start it again to see it recover.

    python3 jwks_server.py --port 10002 [--key public.jwk.json ...]

Reading the files on every request: edit or add a key file to rotate (the gateway refetches
when a token names a kid it does not know).
"""

import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
DEMO_KEY = os.path.join(HERE, "demo-keys", "demo-issuer-es256.public.jwk.json")


def main():
    ap = argparse.ArgumentParser(description="Serve a demo JWK Set at /keys.")
    ap.add_argument("--port", type=int, default=10002)
    ap.add_argument("--key", action="append", help="a public JWK file (repeatable)")
    args = ap.parse_args()
    files = args.key or [DEMO_KEY]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?")[0] == "/ready":
                self._send(200, "text/plain", b"ok")
                return
            if self.path.split("?")[0] != "/keys":
                self._send(404, "text/plain", b"not found")
                return
            keys = []
            for f in files:
                with open(f, encoding="utf-8") as fh:
                    keys.append(json.load(fh))
            body = json.dumps({"keys": keys}).encode()
            self._send(200, "application/json", body)

        def _send(self, status, ctype, body):
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *a):  # one line per request, to stderr
            super().log_message(fmt, *a)

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
