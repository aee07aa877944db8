"""Exact at the edges (#19, item 1): both clusters receive new records of a
partition while a group lives on one of them, so the two logs hold the same
records in different orders. A group moved A→B→A must resume, each time, at
the first record it has not read: records it read may come again (counted,
and the translation is then not exact), but none is ever skipped."""

from conftest import SOURCE, TARGET, Ferry, committed, create_topic, produce_keys, read_partition, unique, write_config
from support.groups import commit_at


def keys_from(bootstrap: str, topic: str, offset: int) -> list[bytes]:
    return [r["key"] for r in read_partition(bootstrap, topic, 0) if r["offset"] >= offset]


def keys_before(bootstrap: str, topic: str, offset: int) -> list[bytes]:
    return [r["key"] for r in read_partition(bootstrap, topic, 0) if r["offset"] < offset]


def test_a_group_moved_there_and_back_while_both_clusters_take_records_skips_nothing(tmp_path):
    topic = unique("interleaved")
    for b in (SOURCE, TARGET):
        create_topic(b, topic, 1)
    group = unique("moving-app")
    kc, ri = write_config(tmp_path, [topic], both_ways=True, groups=[group], group_mode="ENHANCED")
    ferry = Ferry(kc, ri)

    def run() -> None:
        res = ferry.run("--once")
        assert res.returncode == 0, res.stdout + res.stderr

    def row(flow: str) -> dict:
        [r] = [g for g in ferry.groups() if g["flow"] == flow and g["group"] == group]
        return r

    a = [f"a-{i:03d}" for i in range(300)]
    b = [f"b-{i:03d}" for i in range(200)]
    produce_keys(SOURCE, topic, a[:100])
    run()
    # Both clusters take records before either flow copies them:
    # A = a0..a199 b0..b99, B = a0..a99 b0..b99 a100..a199.
    produce_keys(SOURCE, topic, a[100:200])
    produce_keys(TARGET, topic, b[:100])
    run()
    assert keys_from(SOURCE, topic, 0) == [k.encode() for k in a[:200] + b[:100]]
    assert keys_from(TARGET, topic, 0) == [k.encode() for k in a[:100] + b[:100] + a[100:200]]

    # The application read a0..a149 on A, stopped, and moves to B.
    commit_at(SOURCE, group, {(topic, 0): (150, "on-a")})
    run()
    read_on_a = set(keys_before(SOURCE, topic, 150))
    d, meta = committed(TARGET, group)[(topic, 0)]
    unread_on_b = [k for k in keys_before(TARGET, topic, d) if k not in read_on_a]
    assert unread_on_b == [], f"resuming at {d} on B skips {len(unread_on_b)} records the group never read"
    assert (d, meta) == (100, "on-a"), "the first record not read on B is b-000, at offset 100"
    r = row("source>target")
    assert r["exact"] is False and r["redelivered"] == 50, r  # a100..a149 come again
    assert "delivered again" in r["detail"], r

    # On B it reads on to b-119 (offset 320) while both clusters take more:
    # A += a200..a249 b100..b149, B += b100..b149 a200..a249.
    produce_keys(SOURCE, topic, a[200:250])
    produce_keys(TARGET, topic, b[100:150])
    run()
    assert keys_from(TARGET, topic, 300) == [k.encode() for k in b[100:150] + a[200:250]]
    commit_at(TARGET, group, {(topic, 0): (320, "on-b")})
    run()
    read_on_b = set(keys_before(TARGET, topic, 320))
    back, meta = committed(SOURCE, group)[(topic, 0)]
    skipped = [k for k in keys_before(SOURCE, topic, back) if k not in read_on_b]
    assert skipped == [], f"moving back to A at {back} skips {len(skipped)} records the group never read"
    assert (back, meta) == (300, "on-b"), "the first record not read on A is a-200, at offset 300"
    r = row("target>source")
    assert r["exact"] is False and r["redelivered"] == 20, r  # b100..b119 come again

    # Quiet again, it reads B to the end and moves back: exact, nothing again.
    end_b = len(read_partition(TARGET, topic, 0))
    commit_at(TARGET, group, {(topic, 0): (end_b, "end")})
    run()
    end_a = len(read_partition(SOURCE, topic, 0))
    assert committed(SOURCE, group)[(topic, 0)] == (end_a, "end")
    r = row("target>source")
    assert r["exact"] is True and r["redelivered"] == 0, r
