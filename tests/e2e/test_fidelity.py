"""Invariant 1: partition, order, key, value (null included), headers (order,
duplicate keys, null values) and CreateTime timestamps arrive byte for byte,
for every target compression codec."""

import os
import random
import time

import pytest

from conftest import SOURCE, TARGET, Ferry, create_topic, producer, read_partition, stored_batches, unique, write_config

BIG = 900_000

# The records carry CreateTimes years old. Under the default retention (7
# days, judged by a segment's newest timestamp) the broker's next retention
# check would delete them, on either cluster, before they are compared: 30 s
# after a broker start, then every 5 minutes (test_fault_injection restarts
# the target just before this file). The flows copy topic configurations,
# so the target topics Ferry creates keep them too.
KEEP = {"retention.ms": "-1"}
COPY_CONFIGS = {"CopyTopicConfigurations": True}


def special_records(rnd: random.Random, partitions: int) -> list[tuple]:
    """(partition, key, value, headers, timestamp) covering every edge case."""
    base_ts = 1_600_000_000_000
    recs = []
    for p in range(partitions):
        recs += [
            (p, None, b"null-key", [("z", b"1"), ("a", b"2")], base_ts + 1),
            (p, b"", b"empty-key", [("dup", b"first"), ("dup", b"second"), ("dup", b"")], base_ts + 2),
            (p, b"tombstone", None, [("nullv", None), ("b", b"x")], base_ts + 3),
            (p, b"big", bytes(rnd.getrandbits(8) for _ in range(16)) * (BIG // 16), [], base_ts + 4),
            (p, None, None, None, base_ts - 86_400_000),
            (p, "ключ".encode(), "значение ✓".encode(), [("h", "ü".encode()), ("Z", None), ("a", b"")], base_ts + 5),
        ]
        for i in range(200):
            hdrs = [(f"k{rnd.randint(0, 3)}", rnd.choice([None, os.urandom(rnd.randint(0, 20))])) for _ in range(rnd.randint(0, 4))]
            recs.append((p, os.urandom(rnd.randint(0, 30)), os.urandom(rnd.randint(0, 2000)), hdrs, base_ts + 100 + i))
    return recs


def produce_all(topic: str, recs: list[tuple]) -> None:
    p = producer(SOURCE, **{"compression.type": "lz4", "batch.num.messages": 50})
    for part, key, value, headers, ts in recs:
        kwargs = {"partition": part, "key": key, "value": value, "timestamp": ts}
        if headers is not None:
            kwargs["headers"] = headers
        p.produce(topic, **kwargs)
    assert p.flush(60) == 0


def comparable(r: dict) -> tuple:
    return (r["key"], r["value"], r["headers"], r["timestamp"], r["timestamp_type"])


@pytest.mark.parametrize("compression", ["NONE", "GZIP", "SNAPPY", "LZ4", "ZSTD"])
def test_three_topics_arrive_byte_for_byte(tmp_path, compression):
    rnd = random.Random(compression)
    topics = {unique("orders"): 3, unique("order_status"): 2, unique("notifications"): 4}
    for t, n in topics.items():
        create_topic(SOURCE, t, n, KEEP)
        produce_all(t, special_records(rnd, n))
    kc, ri = write_config(tmp_path, list(topics), compression=compression, topic_replication=COPY_CONFIGS)
    ferry = Ferry(kc, ri)
    res = ferry.run("--once")
    assert res.returncode == 0, res.stdout + res.stderr
    compared = 0
    for t, n in topics.items():
        for p in range(n):
            src = read_partition(SOURCE, t, p)
            dst = read_partition(TARGET, t, p)
            assert len(src) == len(special_records(random.Random(0), 1)), (t, p, len(src))
            assert [comparable(r) for r in dst] == [comparable(r) for r in src], f"{t}-{p} differs"
            compared += len(src)
    # Status agrees: every partition caught up, nothing lagging.
    rows = ferry.status()
    assert len(rows) == sum(topics.values())
    assert all(r["lag"] == 0 and r["cursor"] == r["source_end_offset"] for r in rows), rows
    print(f"{compression}: compared {compared} records record by record")


def test_null_header_value_and_duplicates_survive_explicitly(tmp_path):
    """The cases rskafka and kafka-protocol record types cannot carry, spelled out."""
    t = unique("headers")
    create_topic(SOURCE, t, 1, KEEP)
    hdrs = [("b", b"1"), ("a", None), ("b", b"2"), ("a", b"3")]
    produce_all(t, [(0, b"k", b"v", hdrs, 1_700_000_000_123)])
    kc, ri = write_config(tmp_path, [t], topic_replication=COPY_CONFIGS)
    assert Ferry(kc, ri).run("--once").returncode == 0
    [rec] = read_partition(TARGET, t, 0)
    assert rec["headers"] == hdrs
    assert rec["timestamp"] == 1_700_000_000_123


def test_a_batch_larger_than_the_fetch_size_arrives_while_other_partitions_have_more(tmp_path):
    """The broker hands a batch larger than the per-partition fetch size only
    to the first partition of a request that has data; Ferry puts a
    partition that got nothing first in its next fetch. Here the fetch size
    is 10 kB, partition 1 holds 50 kB batches, partitions 0 and 2 thousands
    of small records."""
    t = unique("oversized")
    create_topic(SOURCE, t, 3, KEEP)
    rnd = random.Random(7)
    ts = 1_700_000_000_000
    recs = [(p, f"k{i}".encode(), os.urandom(1000), [], ts + i) for i in range(1500) for p in (0, 2)]
    recs += [(1, f"big{i}".encode(), os.urandom(50_000), [("n", str(i).encode())], ts + i) for i in range(3)]
    rnd.shuffle(recs)
    produce_all(t, recs)
    kc, ri = write_config(tmp_path, [t], topic_replication=COPY_CONFIGS)
    res = Ferry(kc, ri).run("--once", "--fetch-partition-max-bytes", "10000")
    assert res.returncode == 0, res.stdout + res.stderr
    for p in range(3):
        src, dst = read_partition(SOURCE, t, p), read_partition(TARGET, t, p)
        assert len(src) == (3 if p == 1 else 1500)
        assert [comparable(r) for r in dst] == [comparable(r) for r in src], f"partition {p} differs"


def lz4_batches(cluster: str, topic: str, partition: int) -> dict[str, tuple]:
    """Base offset -> (record count, size) of a partition's LZ4 batches."""
    return {b["baseOffset"]: (b["count"], b["size"]) for b in stored_batches(cluster, topic, partition)
            if b["compresscodec"] == "lz4"}


def test_batches_already_in_the_target_codec_pass_through_with_their_bytes(tmp_path):
    """LZ4 batches from librdkafka into an LZ4 flow: with pass-through on for
    every size, each LZ4 source batch becomes a target batch restamped (same
    record count, same size: the compressed records are the source's bytes)
    by Ferry's idempotent producer, and every record compares equal. The same data replicated with pass-through
    off is re-encoded (Ferry's LZ4 is not librdkafka's), which shows the
    comparison can tell the two apart."""
    rnd = random.Random("pass-through")
    passed, rebuilt = unique("passed"), unique("rebuilt")
    # The edge cases, then records LZ4 shrinks (random bytes it would not),
    # all with recent timestamps.
    recs = special_records(rnd, 2) + [
        (p, f"k{i}".encode(), f"value {i} ".encode() * 40, [("h", b"1"), ("h", None)], 1_600_000_010_000 + i)
        for p in range(2) for i in range(400)]
    shift = int(time.time() * 1000) - 1_600_000_020_000
    recs = [(p, k, v, h, ts + shift) for p, k, v, h, ts in recs]
    for t in (passed, rebuilt):
        create_topic(SOURCE, t, 2, KEEP)
        produce_all(t, recs)
    for t, limit in ((passed, "0"), (rebuilt, str(2**62))):
        (tmp_path / t).mkdir()
        kc, ri = write_config(tmp_path / t, [t], compression="LZ4", topic_replication=COPY_CONFIGS)
        res = Ferry(kc, ri).run("--once", "--pass-through-min-bytes", limit)
        assert res.returncode == 0, res.stdout + res.stderr
    for p in range(2):
        for t in (passed, rebuilt):
            src, dst = read_partition(SOURCE, t, p), read_partition(TARGET, t, p)
            assert len(src) == len(recs) // 2
            assert [comparable(r) for r in dst] == [comparable(r) for r in src], f"{t}-{p} differs"
        # librdkafka leaves a batch uncompressed where LZ4 would not shrink it
        # (those are re-encoded); the target's offsets are the source's here.
        src_lz4, dst_lz4 = lz4_batches("source", passed, p), lz4_batches("target", passed, p)
        assert len(src_lz4) >= 2, stored_batches("source", passed, p)
        assert {o: dst_lz4.get(o) for o in src_lz4} == src_lz4, "each LZ4 source batch is a target batch of the same size"
        dst_all = stored_batches("target", passed, p)
        assert all(b["isTransactional"] == "false" and b["producerId"] != "-1" for b in dst_all)
        rebuilt_src = lz4_batches("source", rebuilt, p)
        assert {o: lz4_batches("target", rebuilt, p).get(o) for o in rebuilt_src} != rebuilt_src
