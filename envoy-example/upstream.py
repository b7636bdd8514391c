#!/usr/bin/env python3
"""Demo upstream for token-exchange-filter (Python standard library only).

Listens on 127.0.0.1 and answers every request with JSON describing what it received:
the method, path, headers, body, and the *decoded but unverified* claims and header of the
bearer token in Authorization (the token the gateway minted). Never use it for anything
but demos and tests.

    python3 upstream.py --port 10001 [--record requests.jsonl] [--port-file port.txt]

--port 0 picks a free port; --port-file writes the chosen port once listening.
--record appends one JSON object per request (headers and body as received) to a file.
"""

import argparse
import base64
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def b64url_json(segment):
    try:
        padded = segment + "=" * (-len(segment) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except Exception:  # noqa: BLE001 - an echo server reports, it does not judge
        return None


def decode_bearer(authorization):
    if not authorization or not authorization.lower().startswith("bearer "):
        return None
    token = authorization.split(" ", 1)[1].strip()
    parts = token.split(".")
    if len(parts) != 3:
        return {"error": "not a compact JWS"}
    return {
        "header": b64url_json(parts[0]),
        "claims": b64url_json(parts[1]),
        "note": "decoded WITHOUT signature verification (demo upstream)",
    }


class Handler(BaseHTTPRequestHandler):
    server_version = "demo-upstream/1"
    record_path = None
    lock = threading.Lock()

    def _handle(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = [[k, v] for k, v in self.headers.items()]
        received = {
            "method": self.command,
            "path": self.path,
            "headers": headers,
            "body": body.decode("utf-8", "replace"),
        }
        if self.record_path:
            with self.lock, open(self.record_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(received) + "\n")
        reply = dict(received)
        reply["headers"] = {k: v for k, v in headers}
        reply["bearer"] = decode_bearer(self.headers.get("authorization"))
        out = (json.dumps(reply, indent=2) + "\n").encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def log_message(self, fmt, *args):
        sys.stderr.write("upstream: " + (fmt % args) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=10001)
    ap.add_argument("--record", help="append each request as one JSON line to this file")
    ap.add_argument("--port-file", help="write the listening port to this file")
    args = ap.parse_args()
    Handler.record_path = args.record
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    port = server.server_address[1]
    if args.port_file:
        with open(args.port_file + ".tmp", "w", encoding="ascii") as f:
            f.write(str(port))
        import os

        os.replace(args.port_file + ".tmp", args.port_file)
    sys.stderr.write(f"upstream: listening on 127.0.0.1:{port}\n")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
