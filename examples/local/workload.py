"""The sample workload of the MSK migration story, on the local stack.

  produce  "Orders" writes to orders; "Order status" reads orders and writes
           order_status; "Customer notification" reads order_status and writes
           notifications. All on the source cluster.
  verify   compares every topic record by record on both clusters (with
           --run-id, the records of that run) and prints a table; exits
           non-zero on any difference.
"""

import argparse
import json
import os
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

SOURCE = os.environ.get("SOURCE_BOOTSTRAP", "127.0.0.1:19092")
TARGET = os.environ.get("TARGET_BOOTSTRAP", "127.0.0.1:29092")
TOPICS = {"orders": 6, "order_status": 3, "notifications": 3}


def ensure_topics() -> None:
    admin = AdminClient({"bootstrap.servers": SOURCE})
    existing = admin.list_topics(timeout=30).topics
    new = [NewTopic(t, n, 1) for t, n in TOPICS.items() if t not in existing]
    for f in admin.create_topics(new).values() if new else []:
        f.result(timeout=30)


def produce(orders: int, run: str) -> None:
    ensure_topics()
    p = Producer({"bootstrap.servers": SOURCE, "enable.idempotence": True, "linger.ms": 10, "compression.type": "zstd"})
    for i in range(orders):
        order_id = f"{run}-{i:06d}"
        order = {"order_id": order_id, "customer": f"c{i % 97}", "amount_cents": 100 + (i * 37) % 9_900}
        p.produce("orders", key=order_id.encode(), value=json.dumps(order).encode(),
                  headers=[("source", b"orders-app"), ("trace", uuid.uuid4().bytes), ("trace", None)])
        status = {"order_id": order_id, "status": "ACCEPTED"}
        p.produce("order_status", key=order_id.encode(), value=json.dumps(status).encode(), headers=[("source", b"order-status-app")])
        p.produce("notifications", key=order["customer"].encode(), value=f"Order {order_id} accepted".encode())
        if i % 5_000 == 0:
            p.poll(0)
    assert p.flush(120) == 0
    print(f"workload: produced {orders} orders, {orders} statuses, {orders} notifications to the source cluster ({SOURCE})")


def read_all(bootstrap: str, topic: str, partition: int) -> list[tuple]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"verify-{uuid.uuid4().hex}", "enable.auto.commit": False,
                  "fetch.message.max.bytes": 2_000_000})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
        out = []
        if high <= low:
            return out
        c.assign([TopicPartition(topic, partition, low)])
        deadline = time.time() + 120
        while len(out) < high - low and time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                # Past the last record: the log may end in transaction
                # markers, which take offsets but are never returned.
                if c.position([TopicPartition(topic, partition)])[0].offset >= high:
                    break
                continue
            if m.error():
                raise RuntimeError(m.error())
            out.append((m.key(), m.value(), m.headers(), m.timestamp()))
            if m.offset() >= high - 1:
                break
        return out
    finally:
        c.close()


def verify(run: str | None) -> int:
    """Every record (of run `run`: its id in the key or the value, when
    given) identical on both clusters, partition by partition, in order."""
    bad = 0
    print(f"{'topic':<16}{'partition':>10}{'source':>10}{'target':>10}  identical")
    for topic, n in TOPICS.items():
        for part in range(n):
            src = [r for r in read_all(SOURCE, topic, part) if mine(r, run)]
            dst = [r for r in read_all(TARGET, topic, part) if mine(r, run)]
            same = src == dst
            bad += 0 if same else 1
            print(f"{topic:<16}{part:>10}{len(src):>10}{len(dst):>10}  {'yes' if same else 'NO'}")
    print("verify: every record identical on both clusters (key, value, headers, timestamp, order)" if bad == 0
          else f"verify: {bad} partitions differ")
    return 1 if bad else 0


def mine(record: tuple, run: str | None) -> bool:
    key, value = record[0] or b"", record[1] or b""
    return run is None or run.encode() in key or run.encode() in value


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("produce")
    pr.add_argument("--orders", type=int, default=20_000)
    pr.add_argument("--run-id", default=uuid.uuid4().hex[:8], help="in every order id")
    ve = sub.add_parser("verify")
    ve.add_argument("--run-id", help="compare only the records of this run (the other records may be interleaved "
                                     "differently: applications produced on both clusters)")
    args = ap.parse_args()
    if args.cmd == "produce":
        produce(args.orders, args.run_id)
        return 0
    return verify(args.run_id)


if __name__ == "__main__":
    sys.exit(main())
