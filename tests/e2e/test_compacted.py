"""A compacted source topic (offset gaps) replicates, and the offset map in
DynamoDB maps every surviving source offset to exactly the target offset it
landed at."""

import time

from conftest import SOURCE, TARGET, Ferry, create_topic, offset_runs, producer, read_partition, unique, write_config


def source_offsets(topic: str) -> list[int]:
    return [r["offset"] for r in read_partition(SOURCE, topic, 0)]


def test_compacted_topic_with_offset_gaps_maps_exactly(tmp_path):
    topic = unique("compacted")
    create_topic(SOURCE, topic, 1, config={
        "cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.001",
        "min.compaction.lag.ms": "0", "delete.retention.ms": "100"})
    p = producer(SOURCE)
    # Unique keys interleaved with one key written over and over: compaction
    # keeps the unique ones and removes the old copies between them, so the
    # surviving offsets have gaps in the middle, not just a missing prefix.
    for i in range(3000):
        key = f"keep-{i}" if i % 2 == 0 else "overwritten"
        p.produce(topic, partition=0, key=key.encode(), value=f"v{i}".encode() * 20)
    assert p.flush(30) == 0
    # Wait for the log cleaner to open gaps (it runs every few seconds).
    deadline = time.time() + 90
    offsets = source_offsets(topic)
    def has_gaps(offs: list[int]) -> bool:
        return len(offs) < offs[-1] - offs[0] + 1

    while not has_gaps(offsets) and time.time() < deadline:
        time.sleep(2)
        p.produce(topic, partition=0, key=b"roll", value=b"r")
        p.flush(10)
        offsets = source_offsets(topic)
    assert has_gaps(offsets), "the source must have offset gaps for this test to mean anything"
    kc, ri = write_config(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    # Every batch may pass through: the cleaned batches, whose offsets have
    # gaps, must not (their records are renumbered); the others do.
    res = ferry.run("--once", "--pass-through-min-bytes", "0")
    assert res.returncode == 0, res.stdout + res.stderr
    dst = read_partition(TARGET, topic, 0)
    src = read_partition(SOURCE, topic, 0)  # after replication: compaction may have gone on
    runs = offset_runs(ferry, topic, 0)
    assert len(runs) > 1, "gaps must show as separate runs"
    assert sum(r[2] for r in runs) == len(dst), "one mapping per replicated record"

    def translate(s: int) -> int | None:
        for start, target, length in runs:
            if start <= s < start + length:
                return target + (s - start)
        return None

    target_by_offset = {r["offset"]: (r["key"], r["value"], r["timestamp"]) for r in dst}
    checked = 0
    for r in src:
        t = translate(r["offset"])
        assert t is not None, f"source offset {r['offset']} was not replicated"
        assert target_by_offset[t] == (r["key"], r["value"], r["timestamp"]), f"source {r['offset']} -> target {t} holds another record"
        checked += 1
    assert checked == len(src)


def test_offset_map_runs_below_the_source_log_start_are_pruned(tmp_path):
    """State stays bounded: once the source deletes records (retention,
    DeleteRecords), the runs that mapped only them are removed by the next
    plan; the newest run is always kept."""
    from confluent_kafka import TopicPartition as KTP
    from confluent_kafka.admin import AdminClient

    topic = unique("prune")
    create_topic(SOURCE, topic, 1)
    create_topic(TARGET, topic, 1)
    kc, ri = write_config(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    p = producer(SOURCE)
    other = producer(TARGET)
    for round_ in range(3):
        for i in range(10):
            p.produce(topic, partition=0, key=f"{round_}-{i}".encode(), value=b"v")
        assert p.flush(30) == 0
        assert ferry.run("--once").returncode == 0
        # Another producer's record on the target breaks the run.
        other.produce(topic, partition=0, key=b"foreign", value=b"f")
        assert other.flush(30) == 0
    assert len(offset_runs(ferry, topic, 0)) == 3
    admin = AdminClient({"bootstrap.servers": SOURCE})
    for f in admin.delete_records([KTP(topic, 0, 20)]).values():
        f.result(timeout=30)
    assert ferry.run("--once").returncode == 0
    assert offset_runs(ferry, topic, 0) == [(20, 22, 10)], "the two runs below offset 20 are gone, the newest is kept"
