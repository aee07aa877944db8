"""Consumer groups as the tests handle them from outside: offsets committed
for a group without joining it (commit_at), and the record a committed
offset points at (first_key_from)."""

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from conftest import read_partition


COORDINATOR_MOVING = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}


def commit_at(bootstrap: str, group: str, offsets: dict[tuple[str, int], tuple[int, str]]) -> None:
    """Commit offsets (with metadata) for a group from outside it."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        for attempt in range(20):
            try:
                c.commit(offsets=[TopicPartition(t, p, o, metadata=m) for (t, p), (o, m) in offsets.items()], asynchronous=False)
                return
            except KafkaException as e:
                # A new cluster's group coordinator is still loading (a
                # synchronous commit gives NOT_COORDINATOR as not retriable).
                loading = e.args[0].code() in COORDINATOR_MOVING
                if not (e.args[0].retriable() or loading) or attempt == 19:
                    raise
                time.sleep(0.5)
    finally:
        c.close()


def first_key_from(bootstrap: str, topic: str, partition: int, offset: int) -> bytes | None:
    rows = [r for r in read_partition(bootstrap, topic, partition) if r["offset"] >= offset]
    return rows[0]["key"] if rows else None
