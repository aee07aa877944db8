"""Transient faults: the state store unavailable for a while, and invocations
that reach their deadline in the middle of a batch. Both resume; nothing is
lost and nothing is written twice."""

import os
import random
import time
from contextlib import contextmanager
from urllib.parse import urlparse

from conftest import SOURCE, TARGET, Ferry, create_topic, producer, read_partition, unique, write_config
from support.tcp_pause_proxy import PausableProxy

PARTITIONS = 4


def load(topic: str, n: int) -> None:
    create_topic(SOURCE, topic, PARTITIONS)
    p = producer(SOURCE)
    for i in range(n):
        p.produce(topic, partition=i % PARTITIONS, key=f"{i:06d}".encode(), value=os.urandom(random.randint(10, 200)))
    assert p.flush(60) == 0


def assert_identical(topic: str) -> int:
    total = 0
    for part in range(PARTITIONS):
        src = [r["key"] for r in read_partition(SOURCE, topic, part)]
        dst = [r["key"] for r in read_partition(TARGET, topic, part)]
        assert dst == src, f"partition {part}: {len(dst)} on target, {len(src)} on source, {len(dst) - len(set(dst))} twice"
        total += len(dst)
    return total


@contextmanager
def copying_with_dynamodb_behind_a_proxy(tmp_path, monkeypatch, topic: str):
    """`ferry run --once` copying `topic`, two seconds in, with DynamoDB (moto)
    reached through a PausableProxy: yields the proxy, the process and its log."""
    moto = urlparse(os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"))
    proxy = PausableProxy(moto.hostname, moto.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")
    proc = None
    try:
        kc, ri = write_config(tmp_path, [topic])
        log = tmp_path / "run.log"
        # A checkpoint after every produced batch keeps DynamoDB in every round.
        proc = Ferry(kc, ri).spawn("--once", "--lease-ms", "4000", "--produce-batch-max-bytes", "4000", "--checkpoint-seconds", "0", log=log)
        time.sleep(2.0)
        yield proxy, proc, log
    finally:
        if proc and proc.poll() is None:
            proc.kill()
        proxy.close()


def test_dynamodb_unavailable_for_a_while(tmp_path, monkeypatch):
    topic = unique("ddb-outage")
    load(topic, 25_000)
    with copying_with_dynamodb_behind_a_proxy(tmp_path, monkeypatch, topic) as (proxy, proc, log):
        outages = 0
        for _ in range(3):
            if proc.poll() is not None:
                break
            proxy.pause()
            time.sleep(3.0)
            proxy.resume()
            outages += 1
            time.sleep(1.5)
        assert proc.wait(timeout=300) == 0, log.read_text()
        assert outages >= 2, "replication finished before the outages; load more records"
        assert "DynamoDB" in log.read_text(), "the outage must have been seen and survived"
        assert assert_identical(topic) == 25_000


def test_dynamodb_answering_nothing_for_a_while(tmp_path, monkeypatch):
    """DynamoDB's endpoint keeps accepting connections but answers nothing
    (a black-holed route): calls time out, are retried, and the run goes on
    once it answers again, instead of waiting for ever on a silent socket."""
    topic = unique("ddb-blackhole")
    load(topic, 25_000)
    with copying_with_dynamodb_behind_a_proxy(tmp_path, monkeypatch, topic) as (proxy, proc, log):
        assert proc.poll() is None, "replication finished before the black hole; load more records"
        # Longer than one call's whole budget (ferry_adapters::aws::OPERATION_TIMEOUT,
        # 30 s), so that calls fail and Ferry's own retries take over.
        proxy.black_hole()
        time.sleep(40.0)
        proxy.resume()
        assert proc.wait(timeout=300) == 0, log.read_text()
        assert "timed out" in log.read_text(), "the silent endpoint must have been seen as a timeout"
        # And said what to check in a VPC (#20 item 7).
        assert "VPC endpoint (com.amazonaws.<region>.dynamodb)" in log.read_text(), log.read_text()[-2000:]
        assert assert_identical(topic) == 25_000


def test_deadline_reached_mid_batch_resumes_without_loss_or_duplicates(tmp_path):
    topic = unique("deadline")
    load(topic, 6_000)
    kc, ri = write_config(tmp_path, [topic], compression="SNAPPY")
    ferry = Ferry(kc, ri)
    # Three-second "invocations" with small batches: most end on their deadline.
    res = ferry.run("--once", "--round-seconds", "3", "--produce-batch-max-bytes", "2000", "--checkpoint-seconds", "0", timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    rounds = res.stdout.count("records this round")
    assert rounds >= 2, f"the run must span several deadline-bounded rounds, saw {rounds}"
    assert assert_identical(topic) == 6_000


def test_target_refuses_out_of_bounds_timestamps_with_the_setting_to_change(tmp_path):
    topic = unique("old-ts")
    create_topic(SOURCE, topic, 1)
    create_topic(TARGET, topic, 1, config={"message.timestamp.before.max.ms": "3600000"})
    p = producer(SOURCE)
    p.produce(topic, partition=0, key=b"recent", value=b"v", timestamp=int(time.time() * 1000))
    p.produce(topic, partition=0, key=b"ancient", value=b"v", timestamp=978_307_200_000)
    assert p.flush(30) == 0
    kc, ri = write_config(tmp_path, [topic])
    res = Ferry(kc, ri).run("--once", "--produce-batch-max-bytes", "10")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "refused source offsets 1..=1" in res.stderr and "message.timestamp.before.max.ms" in res.stderr, res.stderr
    assert [r["key"] for r in read_partition(TARGET, topic, 0)] == [b"recent"]
