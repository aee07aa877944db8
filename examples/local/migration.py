"""The migration this project is for, told on the local stack in about two
minutes: three applications run on the source cluster while Ferry
replicates both ways, `ferry readiness` says GO, and each application is
moved to the target with `ferry move` and started there; one is moved back
and forth again. At the end, every record is shown consumed exactly once by
each group across the moves, and a timeline of what happened is printed.

  Orders                 produces to `orders`
  Order status           group order-status: reads `orders`, writes `order_status`
  Customer notification  group notification: reads `order_status`, writes `notifications`

Every application is a real librdkafka client; `ferry run` (both ways)
must be running beside this script. Exits 1 when a record was consumed
twice or never.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

from confluent_kafka import Consumer, Producer, TopicPartition

CLUSTERS = {"source": os.environ.get("SOURCE_BOOTSTRAP", "127.0.0.1:19092"),
            "target": os.environ.get("TARGET_BOOTSTRAP", "127.0.0.1:29092")}
OTHER = {"source": "target", "target": "source"}
T0 = time.time()
TIMELINE: list[str] = []


def say(what: str) -> None:
    line = f"[{time.time() - T0:6.1f} s] {what}"
    TIMELINE.append(line)
    print(f"migration: {line}", flush=True)


class App(threading.Thread):
    """One application instance on one cluster; stop() shuts it down cleanly
    (its last records acknowledged, its last offsets committed)."""

    def __init__(self, cluster: str):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.work()
        except BaseException as e:  # noqa: BLE001 - raised again by stop()
            self.error = e

    def stop(self) -> None:
        self.halt.set()
        self.join(60)
        if self.is_alive():
            raise RuntimeError(f"{type(self).__name__} on {self.cluster} did not stop")
        if self.error:
            raise self.error


class Orders(App):
    """Writes live-<run>-<n> orders, about fifty a second."""

    def __init__(self, cluster: str, run: str, counter, sent: list):
        super().__init__(cluster)
        self.run_id, self.counter, self.sent = run, counter, sent

    def work(self) -> None:
        p = Producer({"bootstrap.servers": CLUSTERS[self.cluster], "enable.idempotence": True, "linger.ms": 5})
        while not self.halt.is_set():
            n = next(self.counter)
            key = f"live-{self.run_id}-{n:06d}"
            value = json.dumps({"order_id": key, "customer": f"c{n % 97}", "amount_cents": 100 + n * 37 % 9_900})
            p.produce("orders", key=key.encode(), value=value.encode(),
                      on_delivery=lambda err, msg: err is None and self.sent.append(msg.key().decode()))
            p.poll(0)
            time.sleep(0.02)
        assert p.flush(30) == 0


class Processor(App):
    """Consumes a topic as a group and writes one record per input; commits
    only what it has written, and only after the writes are acknowledged."""

    def __init__(self, cluster: str, group: str, reads: str, writes: str, consumed: list, make):
        super().__init__(cluster)
        self.group, self.reads, self.writes, self.consumed, self.make = group, reads, writes, consumed, make

    def work(self) -> None:
        c = Consumer({"bootstrap.servers": CLUSTERS[self.cluster], "group.id": self.group, "enable.auto.commit": False,
                      "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
        p = Producer({"bootstrap.servers": CLUSTERS[self.cluster], "enable.idempotence": True, "linger.ms": 5})
        c.subscribe([self.reads])
        pending, last = 0, time.time()
        try:
            while not self.halt.is_set():
                m = c.poll(0.1)
                if m is not None and not m.error():
                    self.consumed.append((m.key(), m.value()))
                    key, value = self.make(m.key(), m.value())
                    p.produce(self.writes, key=key, value=value)
                    p.poll(0)
                    pending += 1
                if pending and (pending >= 500 or time.time() - last > 0.2):
                    assert p.flush(30) == 0
                    c.commit(asynchronous=False)
                    pending, last = 0, time.time()
            assert p.flush(30) == 0
            if pending:
                c.commit(asynchronous=False)
        finally:
            c.close()


def status_of(key: bytes, value: bytes) -> tuple[bytes, bytes]:
    order = json.loads(value)
    return key, json.dumps({"order_id": order["order_id"], "status": "CONFIRMED", "customer": order.get("customer")}).encode()


def notification_of(key: bytes, value: bytes) -> tuple[bytes, bytes]:
    status = json.loads(value)
    customer = status.get("customer") or "unknown"
    return customer.encode(), f"Order {status['order_id']} is {status['status'].lower()}".encode()


class Ferry:
    def __init__(self, binary: str, conf: list[str]):
        self.binary, self.conf = binary, conf

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([self.binary, args[0], *self.conf, *args[1:]], capture_output=True, text=True, timeout=timeout)


def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes, bytes]]:
    """Every committed record of a topic, as (key, value)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"proof-{uuid.uuid4().hex}", "enable.auto.commit": False,
                  "isolation.level": "read_committed"})
    out = []
    try:
        parts = c.list_topics(topic, timeout=30).topics[topic].partitions
        for p in parts:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high <= low:
                continue
            c.assign([TopicPartition(topic, p, low)])
            deadline = time.time() + 60
            while time.time() < deadline:
                m = c.poll(0.5)
                if m is None:
                    if c.position([TopicPartition(topic, p)])[0].offset >= high:
                        break
                    continue
                if not m.error():
                    out.append((m.key(), m.value()))
                if m.offset() >= high - 1:
                    break
    finally:
        c.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferry", required=True, help="the ferry binary")
    ap.add_argument("--conf", required=True, help="--kafka-clusters, --replication-info and --name, as one string")
    args = ap.parse_args()
    ferry = Ferry(args.ferry, args.conf.split())
    run = uuid.uuid4().hex[:8]
    counter = iter(range(10**9))
    sent: list[str] = []
    status_consumed: list = []
    notify_consumed: list = []
    make = {
        "Orders": lambda c: Orders(c, run, counter, sent),
        "Order status": lambda c: Processor(c, "order-status", "orders", "order_status", status_consumed, status_of),
        "Customer notification": lambda c: Processor(c, "notification", "order_status", "notifications", notify_consumed,
                                                     notification_of),
    }
    moves = {
        "Orders": ["--topics", "orders"],
        "Order status": ["--group", "order-status", "--topics", "order_status"],
        "Customer notification": ["--group", "notification", "--topics", "notifications"],
    }
    apps = {name: m("source") for name, m in make.items()}
    for name, app in apps.items():
        app.start()
        say(f"{name} started on source")

    def readiness() -> None:
        deadline = time.time() + 120
        while True:
            r = ferry("readiness")
            verdict = (r.stdout.strip().splitlines() or ["(no output)"])[-1]
            if r.returncode == 0 or time.time() > deadline:
                say(f"ferry readiness: exit {r.returncode}: {verdict}")
                if r.returncode != 0:
                    print(r.stdout, r.stderr, sep="\n")
                    raise SystemExit("migration: readiness never said GO")
                return
            time.sleep(2)

    def move(name: str, to: str) -> None:
        frm = apps[name].cluster
        apps[name].stop()
        say(f"{name} stopped on {frm}")
        started = time.time()
        r = ferry("move", *moves[name], "--to", to, "--wait", "120", "--json")
        if r.returncode != 0:
            print(r.stdout, r.stderr, sep="\n")
            raise SystemExit(f"migration: ferry move {name} to {to}: exit {r.returncode}")
        rep = json.loads(r.stdout)
        resume = ", ".join(f"{p['topic']}/{p['partition']}@{p['offset']}" for p in rep["resume"][:3])
        more = f" and {len(rep['resume']) - 3} more" if len(rep["resume"]) > 3 else ""
        say(f"ferry move {' '.join(moves[name])} --to {to}: {rep['verdict']} in {time.time() - started:.1f} s"
            + (f"; resumes at {resume}{more}" if resume else ""))
        apps[name] = make[name](to)
        apps[name].start()
        say(f"{name} started on {to}")

    time.sleep(5)
    readiness()
    for name in ("Orders", "Order status", "Customer notification"):
        move(name, "target")
        time.sleep(3)
    move("Order status", "source")
    time.sleep(3)
    move("Order status", "target")
    time.sleep(3)
    apps["Orders"].stop()
    say(f"Orders stopped after {len(sent)} live orders")

    live = {k for k in sent}
    deadline = time.time() + 120
    while time.time() < deadline:
        done_status = {k.decode() for k, _ in status_consumed if k.decode() in live}
        done_notify = {json.loads(v)["order_id"] for k, v in notify_consumed if json.loads(v)["order_id"] in live}
        if len(done_status) == len(live) and len(done_notify) == len(live):
            break
        time.sleep(0.5)
    time.sleep(2)  # anything delivered twice would show up now
    for name in ("Order status", "Customer notification"):
        apps[name].stop()
    say("every application stopped")

    # The proof: what each group consumed, against every live record of the
    # topic it reads (on the target, where everything ends).
    bad = 0
    print(f"\n{'group':<14}{'topic':<14}{'records':>9}{'consumed once':>15}{'twice or more':>15}{'never':>7}")
    for group, topic, consumed in (("order-status", "orders", status_consumed), ("notification", "order_status", notify_consumed)):
        mine = [(k, v) for k, v in read_topic(CLUSTERS["target"], topic) if json.loads(v)["order_id"] in live]
        counts = Counter((k, v) for k, v in consumed if json.loads(v)["order_id"] in live)
        once = sum(1 for r in set(mine) if counts[r] == 1)
        twice = sum(1 for c in counts.values() if c > 1)
        never = sum(1 for r in set(mine) if counts[r] == 0)
        dup_in_topic = len(mine) - len(set(mine))
        bad += twice + never + dup_in_topic + (len(set(mine)) != len(live))
        print(f"{group:<14}{topic:<14}{len(mine):>9}{once:>15}{twice:>15}{never:>7}")
    print("\ntimeline:")
    for line in TIMELINE:
        print(f"  {line}")
    if bad:
        print(f"\nmigration: NOT exactly once ({bad} problem(s) above)")
        return 1
    print(f"\nmigration: every one of {len(live)} live orders consumed exactly once by each group across "
          f"{sum(1 for t in TIMELINE if 'ferry move' in t)} moves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
