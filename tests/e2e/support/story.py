"""The migration story, shared by the test (Ferry) and the comparison with
MirrorMaker 2 (bench/migration_mm2.py): "Orders" produces to `orders`;
"Order status" consumes `orders` and produces to `order_status`; "Customer
notification" consumes `order_status`. All three start on the source
cluster and move to the target one at a time, in a given order, while
orders keep coming; optionally the first one is rolled back to the source
midway and moved forward again. Every app is a real librdkafka client.

A move is: stop the app cleanly (it commits); if it produces, wait until
the replicator has copied its topic; if it consumes, wait until the
replicator has synced its group; start it on the other cluster. The
replicator under test supplies those two waits, or a `move_app` that does
both (Ferry's `ferry move`).
"""

import itertools
import threading
import time
from collections import Counter
from typing import Callable, Protocol

import pytest
from confluent_kafka import Consumer

from conftest import SOURCE, TARGET, create_topic, producer, unique

PARTS = 3
CLUSTERS = {"source": SOURCE, "target": TARGET}
OTHER = {"source": "target", "target": "source"}


class App(threading.Thread):
    """One application instance on one cluster; stop() is a clean shutdown."""

    def __init__(self, cluster: str):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.work()
        except BaseException as e:  # noqa: BLE001 - surfaced by stop()
            self.error = e

    def stop(self) -> None:
        self.halt.set()
        self.join(60)
        assert not self.is_alive(), f"{self} did not stop"
        if self.error:
            raise self.error


class Orders(App):
    """Produces order-<n> to `orders`, about 200 a second."""

    def __init__(self, cluster: str, topic: str, counter: itertools.count, delivered: list):
        super().__init__(cluster)
        self.topic, self.counter, self.delivered = topic, counter, delivered

    def work(self) -> None:
        p = producer(CLUSTERS[self.cluster], **{"enable.idempotence": True})

        def done(err, msg):
            if err is None:
                self.delivered.append(msg.key().decode())

        while not self.halt.is_set():
            n = next(self.counter)
            p.produce(self.topic, partition=n % PARTS, key=f"order-{n}".encode(), value=b"order", on_delivery=done)
            p.poll(0)
            time.sleep(0.005)
        assert p.flush(30) == 0


class Worker(App):
    """Consumes a topic as a group; optionally produces one record per input
    (Order status), committing only after those are acknowledged."""

    def __init__(self, cluster: str, group: str, source_topic: str, processed: list, out_topic: str | None = None, delivered=None):
        super().__init__(cluster)
        self.group, self.source_topic, self.processed = group, source_topic, processed
        self.out_topic, self.delivered = out_topic, delivered

    def work(self) -> None:
        c = Consumer({"bootstrap.servers": CLUSTERS[self.cluster], "group.id": self.group, "enable.auto.commit": False,
                      "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
        p = producer(CLUSTERS[self.cluster], **{"enable.idempotence": True}) if self.out_topic else None

        def done(err, msg):
            if err is None:
                self.delivered.append(msg.key().decode())

        c.subscribe([self.source_topic])
        last_commit = time.time()
        pending = 0
        try:
            while not self.halt.is_set():
                m = c.poll(0.1)
                if m is not None and not m.error():
                    key = m.key().decode()
                    self.processed.append(key)
                    if p:
                        p.produce(self.out_topic, partition=m.partition(), key=key.replace("order-", "status-").encode(),
                                  value=b"status", on_delivery=done)
                        p.poll(0)
                    pending += 1
                if pending and (pending >= 100 or time.time() - last_commit > 0.2):
                    if p:
                        assert p.flush(30) == 0
                    c.commit(asynchronous=False)
                    pending, last_commit = 0, time.time()
            if p:
                assert p.flush(30) == 0
            if pending:
                c.commit(asynchronous=False)
        finally:
            c.close()


def wait_for(what: str, check, timeout: float = 90.0, why=lambda: "") -> None:
    deadline = time.time() + timeout
    while not check():
        if time.time() > deadline:
            pytest.fail(f"timed out waiting for {what}; last seen: {why()}")
        time.sleep(0.3)


class Replicator(Protocol):
    """What the story needs from a replicator."""

    def start(self, topics: list[str], groups: list[str]) -> None: ...

    def stop(self) -> None: ...

    def caught_up(self, frm: str, topic: str) -> bool: ...

    def group_synced(self, frm: str, group: str) -> bool: ...


def run_story(rep: Replicator, order: tuple[str, str, str], rollback: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run the story once; returns its row (moves, orders, duplicates, missing)."""
    orders_t, status_t = unique("orders"), unique("order_status")
    g_status, g_notify = unique("order-status"), unique("notification")
    for b in (SOURCE, TARGET):
        create_topic(b, orders_t, PARTS)
        create_topic(b, status_t, PARTS)
    rep.start([orders_t, status_t], [g_status, g_notify])

    counter = itertools.count()
    orders_sent: list[str] = []
    orders_seen: list[str] = []
    statuses_sent: list[str] = []
    statuses_seen: list[str] = []
    make = {
        "orders": lambda c: Orders(c, orders_t, counter, orders_sent),
        "status": lambda c: Worker(c, g_status, orders_t, orders_seen, status_t, statuses_sent),
        "notify": lambda c: Worker(c, g_notify, status_t, statuses_seen),
    }
    produces = {"orders": orders_t, "status": status_t}
    consumes = {"status": g_status, "notify": g_notify}
    apps = {name: make[name]("source") for name in make}
    moves: list[str] = []

    def move(name: str, to: str) -> None:
        app = apps[name]
        frm = app.cluster
        app.stop()
        mover = getattr(rep, "move_app", None)
        if mover:
            # The replicator's own move command does both waits, and checks.
            mover(frm, to, [consumes[name]] if name in consumes else [], [produces[name]] if name in produces else [])
        if name in produces and not mover:
            wait_for(f"{produces[name]} replicated {frm}>{to}", lambda: rep.caught_up(frm, produces[name]))
        if name in consumes and not mover:
            wait_for(f"group {consumes[name]} synced {frm}>{to}", lambda: rep.group_synced(frm, consumes[name]),
                     why=lambda: getattr(rep, "why", ""))
        apps[name] = make[name](to)
        apps[name].start()
        moves.append(f"{name}→{to[0].upper()}")
        time.sleep(1.5)

    try:
        for a in apps.values():
            a.start()
        time.sleep(2)
        first, second, third = order
        move(first, "target")
        move(second, "target")
        if rollback:
            move(first, "source")
            move(first, "target")
        move(third, "target")
        time.sleep(1)
        apps["orders"].stop()
        n = len(orders_sent)
        try:
            wait_for("every order processed and notified",
                     lambda: len(set(orders_seen)) >= n and len(set(statuses_seen)) >= len(set(statuses_sent)) >= n, timeout=120)
        except pytest.fail.Exception as e:
            log(f"incomplete: {e}")
        time.sleep(2)  # anything delivered twice would show up now
        for name in ("status", "notify"):
            apps[name].stop()
    finally:
        for a in apps.values():
            a.halt.set()
        rep.stop()

    def dups(seen):
        return sum(c - 1 for c in Counter(seen).values() if c > 1)

    expected_status = {k.replace("order-", "status-") for k in orders_sent}
    row = {
        "run": "-".join(order),
        "moves": " ".join(moves),
        "orders": len(orders_sent),
        "status_duplicates": dups(orders_seen),
        "status_missing": len(set(orders_sent) - set(orders_seen)),
        "notify_duplicates": dups(statuses_seen),
        "notify_missing": len(expected_status - set(statuses_seen)),
    }
    log(format_rows([row]))
    return row


def format_rows(rows: list[dict]) -> str:
    out = [f"{'run':<22} {'moves':<44} {'orders':>7} {'dup(status)':>11} {'miss(status)':>12} {'dup(notify)':>11} {'miss(notify)':>12}"]
    for r in rows:
        out.append(f"{r['run']:<22} {r['moves']:<44} {r['orders']:>7} {r['status_duplicates']:>11} {r['status_missing']:>12} "
                   f"{r['notify_duplicates']:>11} {r['notify_missing']:>12}")
    return "\n".join(out)
