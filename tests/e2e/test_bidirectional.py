"""Invariant 4: with IDENTICAL names in both directions, a record is never
sent back to the cluster it came from. Records the opposite flow wrote are
recognised by their producer id and filtered, and counted."""

import re
import threading
import time
from collections import Counter

from conftest import SOURCE, TARGET, Ferry, create_topic, producer, read_partition, unique, write_config

PARTS = 3


def produce(bootstrap: str, topic: str, prefix: str, n: int, idempotent: bool) -> None:
    p = producer(bootstrap, **({"enable.idempotence": True} if idempotent else {}))
    for i in range(n):
        p.produce(topic, partition=i % PARTS, key=f"{prefix}-{i}".encode(), value=prefix.encode())
    assert p.flush(30) == 0


def keys(bootstrap: str, topic: str) -> dict[int, Counter]:
    return {part: Counter(r["key"].decode() for r in read_partition(bootstrap, topic, part)) for part in range(PARTS)}


def test_records_never_return_where_they_came_from(tmp_path):
    topic = unique("both-ways")
    for b in (SOURCE, TARGET):
        create_topic(b, topic, PARTS)
    # Idempotent producers (producer ids in every batch) and plain ones (none).
    produce(SOURCE, topic, "src-idem", 300, True)
    produce(SOURCE, topic, "src-plain", 100, False)
    produce(TARGET, topic, "tgt-idem", 200, True)
    produce(TARGET, topic, "tgt-plain", 50, False)
    kc, ri = write_config(tmp_path, [topic], both_ways=True)
    ferry = Ferry(kc, ri)
    filtered = 0
    for _ in range(3):
        res = ferry.run("--once")
        assert res.returncode == 0, res.stdout + res.stderr
        filtered += sum(int(m) for m in re.findall(r"; (\d+) records \(\d+ bytes\) written by the opposite flow filtered", res.stdout))
    src, tgt = keys(SOURCE, topic), keys(TARGET, topic)
    for part in range(PARTS):
        assert src[part] == tgt[part], f"partition {part} differs"
        dup = [k for k, n in src[part].items() if n > 1]
        assert not dup, f"sent back: {dup[:5]}"
    assert sum(sum(c.values()) for c in src.values()) == 650
    # Each replica was seen once by the flow reading its cluster and filtered.
    assert filtered == 650


def test_both_clusters_written_at_once_converge_without_duplicates(tmp_path):
    topic = unique("both-live")
    for b in (SOURCE, TARGET):
        create_topic(b, topic, PARTS)
    kc, ri = write_config(tmp_path, [topic], both_ways=True)
    ferry = Ferry(kc, ri)
    proc = ferry.spawn("--round-seconds", "5", log=tmp_path / "ferry.log")
    try:
        writers = [
            threading.Thread(target=produce, args=(SOURCE, topic, "live-src", 3000, True)),
            threading.Thread(target=produce, args=(TARGET, topic, "live-tgt", 3000, True)),
            threading.Thread(target=produce, args=(TARGET, topic, "live-tgt-plain", 500, False)),
        ]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        deadline = time.time() + 90
        while True:
            src, tgt = keys(SOURCE, topic), keys(TARGET, topic)
            if all(sum(src[p].values()) == sum(tgt[p].values()) == len(set(src[p]) | set(tgt[p])) for p in range(PARTS)) and \
                    sum(len(c) for c in src.values()) == 6500:
                break
            assert time.time() < deadline, (tmp_path / "ferry.log").read_text()[-3000:]
            time.sleep(1)
        time.sleep(3)  # another round: nothing may come back late
        src, tgt = keys(SOURCE, topic), keys(TARGET, topic)
        for part in range(PARTS):
            assert src[part] == tgt[part]
            assert max(src[part].values()) == 1, "a record was sent back"
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_flow_that_only_passes_over_the_other_flows_copies_is_dated_by_them(tmp_path):
    """The flow back (target→source) last replicated a record ten minutes
    old; since then it has only passed over the copies the flow forward
    wrote. Its cursor is as fresh as those copies: ReplicationLatency and
    `ferry status` must not count it ten minutes behind (with both ways
    live, `ferry readiness` would say NO-GO whenever it had a moment's lag)."""
    topic = unique("bidi-dated")
    for b in (SOURCE, TARGET):
        create_topic(b, topic, 1)
    old = int(time.time() * 1000) - 600_000
    p = producer(TARGET)
    p.produce(topic, key=b"on-target", value=b"old", timestamp=old)
    assert p.flush(30) == 0
    kc, ri = write_config(tmp_path, [topic], both_ways=True)
    ferry = Ferry(kc, ri)
    assert ferry.run("--once").returncode == 0
    back = [r for r in ferry.status() if r["flow"] == "target>source"]
    assert [r["last_record_timestamp_ms"] for r in back] == [old], back

    p = producer(SOURCE)
    for i in range(50):
        p.produce(topic, key=f"k-{i}".encode(), value=b"new")
    assert p.flush(30) == 0
    newest = max(r["timestamp"] for r in read_partition(SOURCE, topic, 0))
    deadline = time.time() + 60
    while True:
        assert ferry.run("--once").returncode == 0
        back = [r for r in ferry.status() if r["flow"] == "target>source"]
        if back[0]["cursor"] == back[0]["source_end_offset"] or time.time() > deadline:
            break
    assert back[0]["lag"] == 0, back
    assert back[0]["last_record_timestamp_ms"] >= newest, (back, newest)
