"""The migration story (invariants 4, 5, 6), with real clients nobody here
wrote (librdkafka): "Orders" produces to `orders`; "Order status" consumes
`orders` and produces to `order_status`; "Customer notification" consumes
`order_status`. Ferry replicates both ways. While orders keep coming, the
three apps move from the source cluster to the target one at a time, in
each of the six orders, and in each run the first app to move is rolled
back to the source midway and moved forward again. Every order must be
processed exactly once and every status notified exactly once.

The procedure is the one the README gives operators: stop the app; for a
producer, wait until Ferry has replicated its topic (lag 0); for a
consumer, wait until `ferry status` shows its group synced exactly to its
last commit; start it on the other cluster.
"""

import itertools
import threading
import time
from collections import Counter

import pytest
from confluent_kafka import Consumer

from conftest import SOURCE, TARGET, Ferry, committed, create_topic, producer, unique, write_config

PARTS = 3
CLUSTERS = {"source": SOURCE, "target": TARGET}
OTHER = {"source": "target", "target": "source"}
RESULTS: list[dict] = []


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


def wait_for(what: str, check, timeout: float = 90.0) -> None:
    deadline = time.time() + timeout
    while not check():
        if time.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.3)


def caught_up(ferry: Ferry, frm: str, topic: str) -> bool:
    rows = [r for r in ferry.status() if r["flow"] == f"{frm}>{OTHER[frm]}" and r["topic"] == topic]
    return len(rows) == PARTS and all(r["lag"] == 0 for r in rows)


def group_synced(ferry: Ferry, frm: str, group: str) -> bool:
    mine = committed(CLUSTERS[frm], group)
    if not mine:
        return True
    rows = {(g["topic"], g["partition"]): g for g in ferry.groups() if g["flow"] == f"{frm}>{OTHER[frm]}" and g["group"] == group}
    theirs = committed(CLUSTERS[OTHER[frm]], group)
    for tp, (offset, _) in mine.items():
        row = rows.get(tp)
        if not row or row["source_offset"] != offset or not row["exact"] or row["status"] not in ("synced", "up-to-date"):
            return False
        if theirs.get(tp, (None,))[0] != row["translated_offset"]:
            return False
    return True


PERMUTATIONS = list(itertools.permutations(["orders", "status", "notify"]))


@pytest.mark.parametrize("order", PERMUTATIONS, ids=["-".join(p) for p in PERMUTATIONS])
def test_move_every_app_in_any_order_with_a_rollback(tmp_path, order):
    orders_t, status_t = unique("orders"), unique("order_status")
    g_status, g_notify = unique("order-status"), unique("notification")
    for b in (SOURCE, TARGET):
        create_topic(b, orders_t, PARTS)
        create_topic(b, status_t, PARTS)
    kc, ri = write_config(tmp_path, [orders_t, status_t], both_ways=True, groups=[g_status, g_notify])
    ferry = Ferry(kc, ri)
    proc = ferry.spawn("--round-seconds", "10", "--group-sync-seconds", "1", log=tmp_path / "ferry.log")

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
        if name in produces:
            wait_for(f"{produces[name]} replicated {frm}>{to}", lambda: caught_up(ferry, frm, produces[name]))
        if name in consumes:
            wait_for(f"group {consumes[name]} synced {frm}>{to}", lambda: group_synced(ferry, frm, consumes[name]))
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
        move(first, "source")  # roll back
        move(first, "target")  # and forward again
        move(third, "target")
        time.sleep(1)
        apps["orders"].stop()
        n = len(orders_sent)
        wait_for("every order processed and notified",
                 lambda: len(set(orders_seen)) >= n and len(set(statuses_seen)) >= len(set(statuses_sent)) >= n, timeout=120)
        time.sleep(2)  # anything delivered twice would show up now
        for name in ("status", "notify"):
            apps[name].stop()
    finally:
        for a in apps.values():
            a.halt.set()
        proc.terminate()
        proc.wait(30)

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
    RESULTS.append(row)
    print(f"\n{'run':<22} {'moves':<44} {'orders':>7} {'dup(status)':>11} {'miss(status)':>12} {'dup(notify)':>11} {'miss(notify)':>12}")
    print(f"{row['run']:<22} {row['moves']:<44} {row['orders']:>7} {row['status_duplicates']:>11} {row['status_missing']:>12} "
          f"{row['notify_duplicates']:>11} {row['notify_missing']:>12}")
    assert len(orders_sent) == len(set(orders_sent)) > 500
    assert (row["status_duplicates"], row["status_missing"], row["notify_duplicates"], row["notify_missing"]) == (0, 0, 0, 0), row
