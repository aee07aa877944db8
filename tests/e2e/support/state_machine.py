"""What the tests of the state machine run locally (local_sfn.py) share:
records produced round-robin over a topic's partitions (produce), the
environment template.yaml gives every function (function_env), and the
embedded-metric-format documents among a function's log lines
(emf_documents)."""

import json

from conftest import SOURCE, producer, unique


def produce(topic: str, n: int, parts: int) -> None:
    p = producer(SOURCE)
    for i in range(n):
        p.produce(topic, partition=i % parts, key=f"{topic}-{i}".encode(), value=b"v")
    assert p.flush(30) == 0


def emf_documents(log: str) -> list[dict]:
    """The embedded-metric-format documents among a function's log lines."""
    docs = (json.loads(line) for line in log.splitlines() if line.startswith("{"))
    return [d for d in docs if "_aws" in d]


def function_env(kc, ri) -> dict[str, str]:
    """What template.yaml gives every function: the replicator definition."""
    return {
        "FERRY_REPLICATOR_NAME": unique("sfn"),
        "FERRY_KAFKA_CLUSTERS": kc.read_text(),
        "FERRY_REPLICATION_INFO": ri.read_text(),
        "FERRY_TABLE_PREFIX": unique("ferry-sfn"),
    }
