"""Exact at the edges (#19, item 4): both directions as two replicators on
the same state tables, as MSK Replicator runs a rollback (one replicator
each way). Each flow finds the other's offset map by the clusters they copy
between, so a group that read records the other replicator copied resumes
at the first record it has not read. A LEGACY sync named in such a
definition cannot translate exactly: its group sync is refused with a
message that names the other flow, while it still replicates."""

import json

from conftest import SOURCE, TARGET, Ferry, committed, create_topic, produce_keys, read_partition, unique, write_config
from test_groups import commit_at


def one_way(tmp_path, name: str, topic: str, group: str, reverse: bool, mode: str | None = None):
    folder = tmp_path / name
    folder.mkdir()
    kc, ri = write_config(folder, [topic], both_ways=True, groups=[group], group_mode=mode)
    flows = json.loads(ri.read_text())
    ri.write_text(json.dumps([flows[1] if reverse else flows[0]], indent=2))
    return kc, ri


def test_two_replicators_one_each_way_translate_through_each_other(tmp_path):
    topic = unique("two-replicators")
    for b in (SOURCE, TARGET):
        create_topic(b, topic, 1)
    group = unique("rollback-app")
    prefix = unique("ferry-shared")
    # The sync mode is left out, as in MSK Replicator's own examples.
    forward = Ferry(*one_way(tmp_path, "forward", topic, group, reverse=False), name=unique("a-to-b"), prefix=prefix)
    back = Ferry(*one_way(tmp_path, "back", topic, group, reverse=True), name=unique("b-to-a"), prefix=prefix)

    def run(f: Ferry) -> None:
        res = f.run("--once")
        assert res.returncode == 0, res.stdout + res.stderr

    a = [f"a-{i:02d}" for i in range(20)]
    b = [f"b-{i:02d}" for i in range(10)]
    produce_keys(SOURCE, topic, a[:10])
    run(forward)
    run(back)
    produce_keys(TARGET, topic, b)
    run(back)  # b0..b9 reach A at 10..19
    run(forward)  # ...which forward recognises as the other replicator's
    produce_keys(SOURCE, topic, a[10:])
    run(forward)
    run(back)
    assert [r["key"] for r in read_partition(SOURCE, topic, 0)] == [k.encode() for k in a[:10] + b + a[10:]]
    assert [r["key"] for r in read_partition(TARGET, topic, 0)] == [k.encode() for k in a[:10] + b + a[10:]]

    # The application read a0..a9 and b0..b4 on A, and moves to B.
    commit_at(SOURCE, group, {(topic, 0): (15, "on-a")})
    run(forward)
    assert committed(TARGET, group)[(topic, 0)] == (15, "on-a"), "b-05, at 15 on B, is the first record the group has not read"
    [row] = [g for g in forward.groups() if g["group"] == group]
    assert row["exact"] is True and row["redelivered"] == 0, row

    # It reads on to the end on B and moves back: the other replicator
    # overwrites A's commit, which was the group's own and carried across.
    commit_at(TARGET, group, {(topic, 0): (30, "on-b")})
    run(back)
    assert committed(SOURCE, group)[(topic, 0)] == (30, "on-b")

    # A third replicator syncing the same topics back in LEGACY, named: its
    # group sync is refused (a failure naming the other flow), not its copy.
    legacy = Ferry(*one_way(tmp_path, "legacy", topic, group, reverse=True, mode="LEGACY"), name=unique("legacy"), prefix=prefix)
    commit_at(TARGET, group, {(topic, 0): (10, "operator")})
    res = legacy.run("--once")
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "group sync failure" in out and "LEGACY" in out and forward.name in out and "ENHANCED" in out, out
    assert committed(SOURCE, group)[(topic, 0)] == (30, "on-b"), "a refused sync writes nothing"
