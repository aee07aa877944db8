"""Leadership moves on a cluster of two brokers ("pair", started by
infra/local/pair for this file and stopped after it) while Ferry replicates
into it or out of it and a producer keeps writing. Each move shuts broker 2
down cleanly (the controller first moves its partitions' leadership to
broker 1), starts it again, and waits until the cluster has handed the
leadership of the partitions that prefer broker 2 back to it, with both
brokers up. Ferry meets NotLeaderOrFollower on its produces (or fetches)
and stale metadata twice per move. Every record arrives once, in order."""

import os
import subprocess
import threading
import time

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import ROOT, SOURCE, TARGET, Ferry, create_topic, producer, read_partition, unique, write_config

PAIR = f"127.0.0.1:{os.environ.get('FERRY_PAIR_PORT', '14092')}"
PARTITIONS = 4
MOVES = 2


def pair(*args: str) -> None:
    res = subprocess.run([str(ROOT / "infra" / "local" / "pair"), *args], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.fixture(scope="module")
def pair_cluster():
    pair("up")
    yield PAIR
    pair("down")


def leaders(topic: str) -> dict[int, int]:
    md = AdminClient({"bootstrap.servers": PAIR}).list_topics(topic, timeout=30)
    return {p: m.leader for p, m in md.topics[topic].partitions.items()}


def wait_for_leaders(topic: str, want, what: str, timeout_s: float = 120) -> dict[int, int]:
    deadline = time.time() + timeout_s
    while True:
        try:
            now = leaders(topic)
        except Exception:  # a broker going away: ask again
            now = {}
        if now and want(now):
            return now
        assert time.time() < deadline, f"{what}: leaders are {now}"
        time.sleep(0.5)


@pytest.mark.parametrize("side", ["target", "source"])
def test_leaders_moving_lose_nothing_and_double_nothing(tmp_path, pair_cluster, side):
    topic = unique(f"leaders-{side}")
    if side == "target":
        src, dst = SOURCE, PAIR
        create_topic(SOURCE, topic, PARTITIONS)  # Ferry creates it on the pair: 2 replicas by default
    else:
        src, dst = PAIR, TARGET
        admin = AdminClient({"bootstrap.servers": PAIR})  # held until the futures resolve
        for f in admin.create_topics([NewTopic(topic, PARTITIONS, 2)]).values():
            f.result(timeout=30)
    stop = threading.Event()
    produced = [0]
    # What the source acknowledged: a broker stopped under the writer can
    # fail a delivery, which is then on neither cluster.
    delivered = [0]

    def acked(err, _msg) -> None:
        if err is None:
            delivered[0] += 1

    def write() -> None:
        p = producer(src, **{"linger.ms": 5, "enable.idempotence": True})
        while not stop.is_set():
            i = produced[0]
            p.produce(topic, partition=i % PARTITIONS, key=f"k{i:07d}".encode(), value=b"v" * 200, on_delivery=acked)
            produced[0] += 1
            p.poll(0)
            time.sleep(0.001)
        assert p.flush(60) == 0

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    ferry = Ferry(*write_config(tmp_path, [topic], source=src, target=dst))
    log = tmp_path / "ferry.log"
    proc = ferry.spawn("--round-seconds", "10", "--lease-ms", "5000", log=log)
    moves = 0
    try:
        wait_for_leaders(topic, lambda ls: len(ls) == PARTITIONS, "the topic on the pair")
        for _ in range(MOVES):
            before = wait_for_leaders(topic, lambda ls: 2 in ls.values(), "broker 2 leading a partition")
            pair("2", "stop")
            during = wait_for_leaders(topic, lambda ls: set(ls.values()) == {1}, "every leader on broker 1")
            time.sleep(3)
            pair("2", "start")
            after = wait_for_leaders(topic, lambda ls: 2 in ls.values(), "leadership handed back to broker 2")
            moves += sum(before[p] != during[p] for p in before) + sum(during[p] != after[p] for p in during)
            time.sleep(3)
    finally:
        stop.set()
        writer.join(90)
    try:
        total = delivered[0]
        # Everything produced reaches the other cluster.
        deadline = time.time() + 180
        while True:
            got = {p: read_partition(dst, topic, p) for p in range(PARTITIONS)}
            if sum(len(v) for v in got.values()) >= total or time.time() > deadline:
                break
            time.sleep(2)
    finally:
        proc.terminate()
        proc.wait(60)
    text = log.read_text()
    missing = duplicates = 0
    for p in range(PARTITIONS):
        src_keys = [r["key"] for r in read_partition(src, topic, p)]
        dst_keys = [r["key"] for r in got[p]]
        missing += len(set(src_keys) - set(dst_keys))
        duplicates += len(dst_keys) - len(set(dst_keys))
        assert dst_keys == src_keys, f"partition {p}: {len(dst_keys)} records on {dst}, {len(src_keys)} on {src}"
    print(f"\n{side}: leadership moves={moves} records={total} missing={missing} duplicates={duplicates}")
    assert moves >= 2 * MOVES, "leadership must have moved away from broker 2 and back, twice"
    # Every acknowledged record arrived (a delivery reported failed may
    # still have been written: the source's own log, compared above, is
    # the measure of the rest).
    assert sum(len(v) for v in got.values()) >= total
    assert "partition stopped" not in text, text[-3000:]
