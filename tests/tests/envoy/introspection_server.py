"""A TEST-ONLY OAuth 2.0 token introspection endpoint (RFC 7662), Python standard library only.

  introspection_server.py PORT CLIENT_ID CLIENT_SECRET STATE_FILE RECORD_FILE

Listens on 127.0.0.1:PORT. POST /introspect must carry HTTP Basic credentials equal to
CLIENT_ID and CLIENT_SECRET once each is form-urlencoded (RFC 6749 2.3.1; wrong ones: 401
invalid_client), content type application/x-www-form-urlencoded, and a body of exactly
`token` and `token_type_hint=access_token` (otherwise: 400 invalid_request).

STATE_FILE (JSON, read on every request) maps tokens to what to answer:
  {"answer": {...}}                      200 with that JSON object
  {"status": 503, "body": "..."}         that status, text/plain
  {"raw": "...", "content_type": "..."}  200 with exactly that body
  {"sleep": 3, "answer": {...}}          the answer after that many seconds
Tokens not in it are answered {"active": false}.

Each request is appended to RECORD_FILE as a JSON line: the token, whether the credentials
and the form were right, the content type.
"""
import base64
import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, CLIENT_ID, CLIENT_SECRET, STATE_FILE, RECORD_FILE = sys.argv[1:6]
LOCK = threading.Lock()


def form(value):
    # The WHATWG serializer: what RFC 6749 Appendix B means.
    return urllib.parse.quote_plus(value, safe="*-._")


EXPECTED_BASIC = base64.b64encode(
    f"{form(CLIENT_ID)}:{form(CLIENT_SECRET)}".encode()
).decode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, content_type="application/json"):
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        ctype = self.headers.get("content-type", "")
        basic_ok = self.headers.get("authorization", "") == f"Basic {EXPECTED_BASIC}"
        try:
            fields = urllib.parse.parse_qs(body, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            fields = {}
        form_ok = (
            self.path == "/introspect"
            and ctype == "application/x-www-form-urlencoded"
            and sorted(fields) == ["token", "token_type_hint"]
            and all(len(v) == 1 for v in fields.values())
            and fields["token_type_hint"] == ["access_token"]
        )
        token = fields.get("token", [""])[0]
        with LOCK, open(RECORD_FILE, "a") as f:
            f.write(json.dumps({
                "token": token, "basic_ok": basic_ok, "form_ok": form_ok,
                "content_type": ctype, "host": self.headers.get("host"),
            }) + "\n")
        if not basic_ok:
            return self.reply(401, json.dumps({"error": "invalid_client"}))
        if not form_ok:
            return self.reply(400, json.dumps({"error": "invalid_request"}))
        with open(STATE_FILE) as f:
            state = json.load(f).get(token)
        if state is None:
            return self.reply(200, json.dumps({"active": False}))
        time.sleep(state.get("sleep", 0))
        if "status" in state:
            return self.reply(state["status"], state.get("body", ""), "text/plain")
        if "raw" in state:
            return self.reply(200, state["raw"], state.get("content_type", "application/json"))
        return self.reply(200, json.dumps(state["answer"]))


ThreadingHTTPServer.daemon_threads = True
server = ThreadingHTTPServer(("127.0.0.1", int(PORT)), Handler)
print("ready", flush=True)
server.serve_forever()
