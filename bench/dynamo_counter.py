"""A TCP proxy in front of moto that counts the DynamoDB calls passing
through it, so a benchmark can report the state writes Ferry really makes
(not what a model says it makes). It reads each HTTP request's
`X-Amz-Target` header and JSON body on the way in and passes every byte on
unchanged; responses are not read.

It also times each call (request sent to response complete, HTTP/1.1
without pipelining, so responses come back in order per connection): that
is where a replicator waiting on its state store spends its time. And it
keeps the most calls it saw under way at once: each is counted before its
request is passed on and done before its response is, so the count never
exceeds what the caller had under way.

Write units are estimated as DynamoDB bills them for items of at most 1 KB
(Ferry's are, but for the producer items: about 4 KB with 64 partitions,
5 units an update or delete; see bench/prune.py): 1 per item written
outside a transaction, 2 per item of a TransactWriteItems, its
ConditionChecks included.
"""

import json
import socket
import threading
import time
from collections import Counter, deque

WRITE_OPS = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")
READ_OPS = ("GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems")


class DynamoCounter:
    def __init__(self, upstream_host: str, upstream_port: int, delay_s: float = 0.0):
        self.upstream = (upstream_host, upstream_port)
        # Held before each response is passed on: the service's latency,
        # which moto on the same machine does not have (DynamoDB's is a few
        # milliseconds a call from Lambda in the same region).
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.requests: Counter = Counter()  # operation -> requests
        self.items: Counter = Counter()  # "put"/"update"/"delete"/"condition_check" -> items
        self.table_items: Counter = Counter()  # table -> items written
        self.key_units: Counter = Counter()  # "<table> <partition key>" -> write units
        self.write_units = 0
        self.unparsed = 0
        self.seconds: Counter = Counter()  # operation -> seconds waited for responses
        self.slowest: dict[str, float] = {}  # operation -> the longest one call waited
        self.calls: list[tuple[float, float]] = []  # (sent, answered) of every write call
        # "<operation> <table>" -> requests, response body bytes, and for a
        # Query or Scan the items it returned (its "Count").
        self.table_requests: Counter = Counter()
        self.response_bytes: Counter = Counter()
        self.read_items: Counter = Counter()
        self.table_seconds: Counter = Counter()
        # Calls sent and not yet answered, over every connection, and the
        # most there were at once since the counter started.
        self.outstanding = 0
        self.most_outstanding = 0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1024)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def snapshot(self) -> dict:
        """Counts so far; subtract two snapshots for one phase."""
        with self.lock:
            return {
                "requests": dict(self.requests),
                "items": dict(self.items),
                "table_items": dict(self.table_items),
                "key_units": dict(self.key_units),
                "write_units": self.write_units,
                "unparsed": self.unparsed,
                "seconds": dict(self.seconds),
                "slowest": dict(self.slowest),
                "at": time.monotonic(),
                "calls": len(self.calls),
                "calls_list": list(self.calls),
                "most_outstanding": self.most_outstanding,
                "table_requests": dict(self.table_requests),
                "response_bytes": dict(self.response_bytes),
                "read_items": dict(self.read_items),
                "table_seconds": dict(self.table_seconds),
            }

    @staticmethod
    def between(before: dict, after: dict) -> dict:
        def sub(a: dict, b: dict) -> dict:
            return {k: v - b.get(k, 0) for k, v in a.items() if v - b.get(k, 0)}

        requests = sub(after["requests"], before["requests"])
        seconds = sub(after["seconds"], before["seconds"])
        return {
            "write_requests": sum(requests.get(op, 0) for op in WRITE_OPS),
            "read_requests": sum(requests.get(op, 0) for op in READ_OPS),
            "requests": requests,
            "items": sub(after["items"], before["items"]),
            "table_items": sub(after["table_items"], before["table_items"]),
            "key_units": sub(after["key_units"], before["key_units"]),
            "write_units": after["write_units"] - before["write_units"],
            "unparsed": after["unparsed"] - before["unparsed"],
            "mean_ms": {op: round(1000 * seconds[op] / n, 1) for op, n in requests.items() if op in seconds},
            "seconds_waited": {op: round(v, 2) for op, v in seconds.items()},
            # The longest call of each operation since the counter started
            # (not only in the phase: a maximum does not subtract).
            "max_ms": {op: round(1000 * v) for op, v in after.get("slowest", {}).items()},
            "seconds": round(after["at"] - before["at"], 2),
            # Wall time with at least one write outstanding: the share of a
            # run spent waiting for the state store, however many calls overlap.
            "seconds_with_a_write_outstanding": round(_union(after["calls_list"][before["calls"]:]), 2),
            # The most calls under way at once since the counter started.
            "most_outstanding": after["most_outstanding"],
            "table_requests": sub(after.get("table_requests", {}), before.get("table_requests", {})),
            "response_bytes": sub(after.get("response_bytes", {}), before.get("response_bytes", {})),
            "read_items": sub(after.get("read_items", {}), before.get("read_items", {})),
            "table_seconds": {k: round(v, 2) for k, v in sub(after.get("table_seconds", {}),
                                                             before.get("table_seconds", {})).items()},
        }

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
            # (operation, sent at) of requests not yet answered; None once
            # the connection is closed (nothing more is under way on it).
            waiting: deque = deque()
            threading.Thread(target=self._requests, args=(client, up, waiting), daemon=True).start()
            threading.Thread(target=self._responses, args=(up, client, waiting), daemon=True).start()

    def _responses(self, a: socket.socket, b: socket.socket, waiting: deque) -> None:
        buf = b""
        try:
            while data := a.recv(65536):
                if self.delay_s and not buf:
                    time.sleep(self.delay_s)
                # Counted before passed on: a call is over here before the
                # caller can send its next one.
                buf += data
                while (n := _message_length(buf)) is not None:
                    message, buf = buf[:n], buf[n:]
                    with self.lock:
                        call = waiting.popleft() if waiting else None
                    if call:
                        op, sent, table = call
                        self._answered(op, table, message, time.monotonic() - sent)
                        now = time.monotonic()
                        with self.lock:
                            self.outstanding -= 1
                            self.seconds[op] += now - sent
                            self.slowest[op] = max(self.slowest.get(op, 0.0), now - sent)
                            if op in WRITE_OPS:
                                self.calls.append((sent, now))
                b.sendall(data)
        except OSError:
            pass
        finally:
            with self.lock:
                # Calls the connection closed on are no longer under way
                # (a caller that gave up on one closed it), nor will any be.
                self.outstanding -= len(waiting)
                waiting.clear()
                waiting.append(None)
            _close(a, b)

    def _requests(self, client: socket.socket, up: socket.socket, waiting: deque) -> None:
        """Client to moto: cut the buffered stream into requests (keep-alive
        connections carry many, one after the other), then forward."""
        buf = b""
        try:
            while data := client.recv(65536):
                # Counted before passed on: under way here before moto can
                # answer it.
                buf += data
                buf = self._take(buf, waiting)
                up.sendall(data)
        except OSError:
            pass
        finally:
            # Shut down, not only closed: that wakes the responses' thread,
            # which then stops counting this connection's calls.
            _close(client, up)

    def _take(self, buf: bytes, waiting: deque) -> bytes:
        while (end := buf.find(b"\r\n\r\n")) >= 0:
            headers = {}
            for line in buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            if b"content-length" not in headers:
                # Chunked or bodiless: count the call, skip the body parse.
                self._record(headers.get(b"x-amz-target", b"").decode(), None)
                with self.lock:
                    self.unparsed += 1
                return b"" if b"transfer-encoding" in headers else buf[end + 4:]
            length = int(headers[b"content-length"])
            if len(buf) < end + 4 + length:
                return buf
            body = buf[end + 4: end + 4 + length]
            target = headers.get(b"x-amz-target", b"").decode()
            with self.lock:
                if not (waiting and waiting[-1] is None):
                    waiting.append((target.rpartition(".")[2] or "(none)", time.monotonic(), _table(body)))
                    self.outstanding += 1
                    self.most_outstanding = max(self.most_outstanding, self.outstanding)
            self._record(target, body)
            buf = buf[end + 4 + length:]
        return buf

    def _answered(self, op: str, table: str, message: bytes, seconds: float) -> None:
        """Count a response: its body's bytes, and the items a Query or
        Scan returned (an uncompressed JSON body only)."""
        head, _, body = message.partition(b"\r\n\r\n")
        key = f"{op} {table}"
        items = 0
        if op in ("Query", "Scan") and b"content-encoding" not in head.lower():
            try:
                items = int(json.loads(body).get("Count", 0))
            except (ValueError, AttributeError):
                pass
        with self.lock:
            self.table_requests[key] += 1
            self.response_bytes[key] += len(body)
            self.read_items[key] += items
            self.table_seconds[key] += seconds

    def _record(self, target: str, body: bytes | None) -> None:
        op = target.rpartition(".")[2] or "(none)"
        items: Counter = Counter()
        tables: Counter = Counter()
        keys: Counter = Counter()
        units = 0

        def wrote(kind: str, table: str, key: dict | None, n: int) -> None:
            nonlocal units
            items[kind] += 1
            tables[table] += 1
            keys[f"{table} {_partition_key(key or {})}"] += n
            units += n

        if body is not None and op in WRITE_OPS:
            try:
                req = json.loads(body)
            except ValueError:
                req = None
            if req is None:
                pass
            elif op in ("PutItem", "UpdateItem", "DeleteItem"):
                wrote(op.removesuffix("Item").lower(), req.get("TableName", "?"), req.get("Item") or req.get("Key"), 1)
            elif op == "BatchWriteItem":
                for table, writes in req.get("RequestItems", {}).items():
                    for w in writes:
                        put = "PutRequest" in w
                        key = w["PutRequest"].get("Item") if put else w.get("DeleteRequest", {}).get("Key")
                        wrote("put" if put else "delete", table, key, 1)
            else:
                for t in req.get("TransactItems", []):
                    for kind, name in (("Put", "put"), ("Update", "update"), ("Delete", "delete"),
                                       ("ConditionCheck", "condition_check")):
                        if kind in t:
                            wrote(name, t[kind].get("TableName", "?"), t[kind].get("Item") or t[kind].get("Key"), 2)
        with self.lock:
            self.requests[op] += 1
            self.items.update(items)
            self.table_items.update(tables)
            self.key_units.update(keys)
            self.write_units += units


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


# The partition-key attribute of each of Ferry's state tables.
PARTITION_KEYS = ("flow", "flow_partition", "cluster")


def _table(body: bytes) -> str:
    """The TableName of a request body, "?" when it names none (or many)."""
    try:
        return str(json.loads(body).get("TableName", "?"))
    except (ValueError, AttributeError):
        return "?"


def _partition_key(item: dict) -> str:
    """The partition-key value of an item or key in DynamoDB's JSON."""
    for name in PARTITION_KEYS:
        if name in item:
            return next(iter(item[name].values()), "?")
    return "?"


def _message_length(buf: bytes) -> int | None:
    """Length of the first complete HTTP message with a Content-Length in buf."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    length = 0
    for line in buf[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return end + 4 + length if len(buf) >= end + 4 + length else None


def _union(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by the intervals."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total
