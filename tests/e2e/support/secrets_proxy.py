"""Secrets Manager with a fault: an HTTP proxy in front of moto that
answers the first `throttle` GetSecretValue calls for one version label
with ThrottlingException, as Secrets Manager does past its request rate,
and passes every other call through. Counts the calls for that label."""

import http.client
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse
from support.http_reply import reply

HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "server", "date"}


class ThrottlingSecrets:
    def __init__(self, label: str, throttle: int):
        self.label, self.throttle, self.calls = label.encode(), throttle, 0
        self._lock = threading.Lock()
        upstream = urlparse(os.environ["AWS_ENDPOINT_URL"])
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_):
                pass

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("X-Amz-Target") == "secretsmanager.GetSecretValue" and proxy.label in body:
                    with proxy._lock:
                        proxy.calls += 1
                        refuse = proxy.calls <= proxy.throttle
                    if refuse:
                        self._answer(400, {"Content-Type": "application/x-amz-json-1.1"},
                                     json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode())
                        return
                conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
                conn.request("POST", self.path, body, {k: v for k, v in self.headers.items() if k.lower() != "host"})
                r = conn.getresponse()
                self._answer(r.status, {k: v for k, v in r.getheaders() if k.lower() not in HOP_BY_HOP}, r.read())

            def _answer(self, status: int, headers: dict, data: bytes):
                reply(self, status, headers, data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
