"""A STAND-IN for kiln's model server, baked into throwaway images by the local rollout tests.

It is not kiln's server: a few lines of the standard library that answer the routes a
rollout checks (/health, /ready, /metadata, /predict) the way kiln's server does, so the
tests can exercise the container engine side of a rollout (start, wait, smoke-test, switch,
roll back) with images that build in a second. Like kiln's server, it refuses to start when
the model's sha256 does not match MODEL_SHA256.

It reads the settings the local target hands gunicorn, in gunicorn's own variable
GUNICORN_CMD_ARGS: `--bind HOST:PORT` (repeatable; default 0.0.0.0:8000) and
`--reuse-port` (SO_REUSEPORT, so two versions share the stable port during a switch; with
OLDEST_TAKES_ALL=1 it keeps that port's new connections for the oldest server there, with
kiln's own serving/reuseport.py, which the image carries beside it). On
SIGTERM it stops the way kiln's server does: the shared port handed over to the next server
(serving/reuseport.py), every connection queued on its sockets answered until the queues
stay empty, then the sockets closed.
"""

import argparse
import hashlib
import json
import os
import selectors
import shlex
import signal
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

with open("/models/model.bin", "rb") as fh:
    MODEL = fh.read()
if hashlib.sha256(MODEL).hexdigest() != os.environ["MODEL_SHA256"]:
    print("model.bin does not match MODEL_SHA256: refusing to start", file=sys.stderr, flush=True)
    sys.exit(3)
VERSION = os.environ["MODEL_VERSION"]
PREDICT_STATUS = int(os.environ.get("PREDICT_STATUS", "200"))
# An image built with the label io.kiln.reuseport sets this: it behaves as its label says.
OLDEST_TAKES_ALL = os.environ.get("OLDEST_TAKES_ALL") == "1"


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
            print(f"stand-in {VERSION} predicted {len(rows)} rows", flush=True)

    def log_message(self, *args):
        pass


def gunicorn_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", "-b", action="append", default=[])
    parser.add_argument("--reuse-port", action="store_true")
    args, _ = parser.parse_known_args(shlex.split(os.environ.get("GUNICORN_CMD_ARGS", "")))
    return args.bind or ["0.0.0.0:8000"], args.reuse_port


def listen(address, reuse_port):
    host, port = address.rsplit(":", 1)
    server = HTTPServer((host, int(port)), Handler, bind_and_activate=False)
    if reuse_port:
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    server.server_bind()
    server.server_activate()
    if reuse_port and OLDEST_TAKES_ALL:  # as kiln's server does (serving/reuseport.py)
        import reuseport

        if not reuseport.oldest_takes_all(server.socket):
            print("the kernel refused the reuseport program", file=sys.stderr, flush=True)
            sys.exit(4)
    return server


def drain(servers):
    """Hand the shared port over to the next server (as kiln's does), answer every
    connection queued here until the queues stay empty, then close the sockets."""
    sockets = [server.socket for server in servers]
    if OLDEST_TAKES_ALL:
        import reuseport

        sockets = [sock for sock in sockets if reuseport.hand_over(sock)]
        drained = reuseport.Drain(sockets, time.monotonic())
    for server in servers:
        server.socket.setblocking(False)
    while True:
        for server in servers:
            accept_queued(server)
        if not OLDEST_TAKES_ALL or drained.settled(time.monotonic()):
            break
        time.sleep(0.01)
    for server in servers:
        server.server_close()


def accept_queued(server):
    while True:
        try:
            conn, address = server.socket.accept()
        except BlockingIOError:
            return
        conn.setblocking(True)
        server.process_request(conn, address)


binds, reuse_port = gunicorn_args()
servers = [listen(address, reuse_port) for address in binds]
print(f"stand-in {VERSION} serving on {', '.join(binds)}", flush=True)
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
selector = selectors.DefaultSelector()
for server in servers:
    selector.register(server.socket, selectors.EVENT_READ, server)
while not stopping:
    for key, _ in selector.select(timeout=0.1):
        key.data.handle_request()
drain(servers)
