"""A STAND-IN for kiln's model server, baked into throwaway images by the local rollout tests.

It is not kiln's server: a few lines of the standard library that answer the routes a
rollout checks (/health, /ready, /metadata, /predict) the way kiln's server does, so the
tests can exercise the container engine side of a rollout (start, wait, smoke-test, switch,
roll back) with images that build in a second. Like kiln's server, it refuses to start when
the model's sha256 does not match MODEL_SHA256.
"""

import hashlib
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

with open("/models/model.bin", "rb") as fh:
    MODEL = fh.read()
if hashlib.sha256(MODEL).hexdigest() != os.environ["MODEL_SHA256"]:
    print("model.bin does not match MODEL_SHA256: refusing to start", file=sys.stderr, flush=True)
    sys.exit(3)
VERSION = os.environ["MODEL_VERSION"]
PREDICT_STATUS = int(os.environ.get("PREDICT_STATUS", "200"))


class Handler(BaseHTTPRequestHandler):
    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path in ("/health", "/ready"):
            self._send(200, {"ok": True})
        elif self.path == "/metadata":
            self._send(200, {"version": VERSION})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        rows = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["data"]
        if self.path != "/predict" or PREDICT_STATUS != 200:
            self._send(PREDICT_STATUS, {"error": "stand-in failure"})
        else:
            self._send(200, {"prediction": [[1.0, 0.0] for _ in rows], "version": VERSION})

    def log_message(self, *args):
        pass


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
HTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
