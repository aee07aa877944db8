"""An HTTP/1.1 proxy in front of moto's DynamoDB that passes requests on at
once but can hold back the answer to one of them: the request is applied,
and its caller, waiting past its attempt timeout, sends it again, as a
caller whose answer a network lost does. A test arms it with what the
request to hold says; the first request that matches after that is held.

Or it can answer a matching request itself, as DynamoDB would refuse it,
without passing it on: a refusal moto cannot produce (DynamoDB's
TransactionConflict, which needs two writes overlapping in time; moto
answers one call at a time).

It can also give the request sent again a new ClientRequestToken: what DynamoDB makes of a token it no longer knows (one sent
more than ten minutes after its first use), so that the test shows what
the caller does when nothing below it recognises the copy.

Requests are framed by Content-Length (the AWS SDKs send one); each is
passed on whole, so one can be changed before it goes (moto checks no
signature)."""

import json
import os
import socket
import threading
import time
import uuid
from collections import deque
from contextlib import contextmanager
from urllib.parse import urlparse


class HeldAnswerProxy:
    def __init__(self, upstream_host: str, upstream_port: int, hold_s: float):
        self.upstream = (upstream_host, upstream_port)
        self.hold_s = hold_s
        self.lock = threading.Lock()
        self.armed: tuple[str, str] | None = None  # (operation, text the body holds)
        self.new_token_on_resend = False
        # (HTTP status, JSON body) to answer matching requests with, and how
        # many more to answer so.
        self.answer: tuple[int, dict] | None = None
        self.answers_left = 0
        self.answered = 0
        self.held: dict | None = None  # the held request's body, once held
        # Every request of the held operation seen: (ClientRequestToken as
        # sent on, body without the token).
        self.seen: list[tuple[str | None, str]] = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, operation: str, body_contains: str, new_token_on_resend: bool = False) -> None:
        """Hold the answer to the next `operation` request whose body holds
        `body_contains`."""
        with self.lock:
            self.armed = (operation, body_contains)
            self.new_token_on_resend = new_token_on_resend

    def refuse(self, operation: str, body_contains: str, status: int, error: dict, times: int) -> None:
        """Answer the next `times` `operation` requests whose body holds
        `body_contains` with `error` (DynamoDB's JSON error body) and
        `status`, passing none of them on."""
        with self.lock:
            self.armed = (operation, body_contains)
            self.answer, self.answers_left = (status, error), times

    def copies_of_held(self) -> list[str | None]:
        """The tokens of every request sent on with the held one's body."""
        with self.lock:
            if self.held is None:
                return []
            body = _without_token(self.held)
            return [token for token, b in self.seen if b == body]

    def close(self) -> None:
        self.closed = True
        self.listener.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                if self.closed:
                    return
                continue
            try:
                up = socket.create_connection(self.upstream, timeout=5)
                up.settimeout(None)
            except OSError:
                client.close()
                continue
            holds: deque = deque()  # per request on this connection: hold its answer?
            threading.Thread(target=self._requests, args=(client, up, holds), daemon=True).start()
            threading.Thread(target=self._answers, args=(up, client, holds), daemon=True).start()

    def _requests(self, client: socket.socket, up: socket.socket, holds: deque) -> None:
        try:
            for head, body in _messages(client):
                head, body, hold = self._look(head, body)
                if isinstance(hold, bytes):
                    # Answered here: the caller waits for this answer
                    # before it sends anything else on the connection.
                    client.sendall(hold)
                    continue
                holds.append(hold)
                up.sendall(head + body)
        except OSError:
            pass
        finally:
            _close(client, up)

    def _look(self, head: bytes, body: bytes) -> tuple[bytes, bytes, bool | bytes]:
        op = _header(head, b"x-amz-target").decode().rpartition(".")[2]
        with self.lock:
            if self.armed is None or op != self.armed[0]:
                return head, body, False
            try:
                req = json.loads(body)
            except ValueError:
                return head, body, False
            hold = False
            if self.answer is not None and self.answers_left > 0 and self.armed[1] in body.decode():
                self.answers_left -= 1
                self.answered += 1
                status, error = self.answer
                payload = json.dumps(error).encode()
                return head, body, (
                    b"HTTP/1.1 %d Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\n"
                    b"x-amzn-RequestId: ferry-test\r\nContent-Length: %d\r\n\r\n" % (status, len(payload))
                ) + payload
            if self.answer is None and self.held is None and self.armed[1] in body.decode():
                self.held, hold = req, True
            elif (self.held is not None and self.new_token_on_resend and req.get("ClientRequestToken")
                  and _without_token(req) == _without_token(self.held)):
                req["ClientRequestToken"] = str(uuid.uuid4())
                body = json.dumps(req, separators=(",", ":")).encode()
                head = _with_length(head, len(body))
            self.seen.append((req.get("ClientRequestToken"), _without_token(req)))
            return head, body, hold

    def _answers(self, up: socket.socket, client: socket.socket, holds: deque) -> None:
        try:
            for head, body in _messages(up):
                if holds and holds.popleft():
                    # Past the caller's attempt timeout: it gives up on
                    # this connection and sends the request again.
                    time.sleep(self.hold_s)
                client.sendall(head + body)
        except OSError:
            pass
        finally:
            _close(client, up)


def _without_token(req: dict) -> str:
    return json.dumps({k: v for k, v in req.items() if k != "ClientRequestToken"}, sort_keys=True)


def _header(head: bytes, name: bytes) -> bytes:
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name:
            return v.strip()
    return b""


def _with_length(head: bytes, length: int) -> bytes:
    lines = [b"Content-Length: %d" % length if line.partition(b":")[0].strip().lower() == b"content-length" else line
             for line in head[:-4].split(b"\r\n")]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _messages(sock: socket.socket):
    """The whole HTTP messages `sock` carries, as (head with its blank line,
    body), until it closes."""
    buf = b""
    while data := sock.recv(65536):
        buf += data
        while (end := buf.find(b"\r\n\r\n")) >= 0:
            length = int(_header(buf[:end], b"content-length") or b"0")
            if len(buf) < end + 4 + length:
                break
            yield buf[: end + 4], buf[end + 4: end + 4 + length]
            buf = buf[end + 4 + length:]


def _close(*socks: socket.socket) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            s.close()
        except OSError:
            pass


@contextmanager
def state_store_behind_a_proxy(monkeypatch, hold_s: float = 12.0):
    """A HeldAnswerProxy (holding an armed answer `hold_s`) in front of the
    local state store, which Ferry's processes started inside reach
    instead of it; those started after reach the store again."""
    url = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    store = urlparse(url)
    proxy = HeldAnswerProxy(store.hostname, store.port, hold_s)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    try:
        yield proxy
    finally:
        proxy.close()
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
