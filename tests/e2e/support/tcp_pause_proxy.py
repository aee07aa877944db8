"""A TCP proxy on 127.0.0.1 that a test can pause: while paused it refuses
new connections and cuts open ones, as a service that is briefly down does.
It can also black-hole: accept connections and swallow everything, new and
open ones alike, answering nothing, as a dropped route or a stuck middlebox
does. Used to make moto's DynamoDB unavailable without losing its in-memory
state."""

import socket
import threading


class PausableProxy:
    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.paused = threading.Event()
        self.swallowing = threading.Event()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                # A client that gave up before it was accepted (say, cut by a
                # pause) makes accept fail; the proxy must keep accepting, or
                # the service stays "down" for the rest of the test.
                if self.closed:
                    return
                continue
            if self.paused.is_set():
                client.close()
                continue
            try:
                up = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, up]
            threading.Thread(target=self._pipe, args=(client, up), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, client), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while not self.paused.is_set():
                data = a.recv(65536)
                if not data:
                    break
                if not self.swallowing.is_set():
                    b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def pause(self) -> None:
        self.paused.set()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                    c.close()
                except OSError:
                    pass
            self.conns.clear()

    def black_hole(self) -> None:
        """Keep accepting and keep connections open, but pass nothing on."""
        self.swallowing.set()

    def resume(self) -> None:
        self.paused.clear()
        self.swallowing.clear()

    def close(self) -> None:
        self.closed = True
        self.pause()
        self.listener.close()
