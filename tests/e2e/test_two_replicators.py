"""Exact at the edges (#19, item 4): both directions as two replicators on
the same state tables, as MSK Replicator runs a rollback (one replicator
each way). Each flow finds the other's offset map by the clusters they copy
between, so a group that read records the other replicator copied resumes
at the first record it has not read. A LEGACY sync named in such a
definition cannot translate exactly: its group sync is refused with a
message that names the other flow, while it still replicates."""

import json
import subprocess
import time

from conftest import (SOURCE, TARGET, Ferry, committed, create_topic, list_topics, produce_keys, read_partition, unique,
                      write_config)
from support.groups import commit_at
from support.topics import delete_topic


def one_way(tmp_path, name: str, topic: str | list[str], group: str, reverse: bool, mode: str | None = None,
            topic_replication: dict | None = None):
    """One direction of IDENTICAL flows both ways over `topic` (or topics)."""
    folder = tmp_path / name
    folder.mkdir()
    topics = [topic] if isinstance(topic, str) else topic
    kc, ri = write_config(folder, topics, both_ways=True, groups=[group], group_mode=mode,
                          topic_replication=topic_replication)
    flows = json.loads(ri.read_text())
    ri.write_text(json.dumps([flows[1] if reverse else flows[0]], indent=2))
    return kc, ri


def one_each_way(tmp_path, topic: str, group: str, topic_replication: dict | None = None,
                 on_target: bool = True) -> tuple[Ferry, Ferry]:
    """`topic` on both clusters (or on A alone, without `on_target`), and
    two replicators on the same state tables: A→B and B→A, each syncing
    `group` (the sync mode left out, as in MSK Replicator's own
    examples)."""
    for b in (SOURCE, TARGET) if on_target else (SOURCE,):
        create_topic(b, topic, 1)
    prefix = unique("ferry-shared")
    forward = Ferry(*one_way(tmp_path, "forward", topic, group, reverse=False, topic_replication=topic_replication),
                    name=unique("a-to-b"), prefix=prefix)
    back = Ferry(*one_way(tmp_path, "back", topic, group, reverse=True, topic_replication=topic_replication),
                 name=unique("b-to-a"), prefix=prefix)
    return forward, back


def test_two_replicators_one_each_way_translate_through_each_other(tmp_path):
    topic = unique("two-replicators")
    group = unique("rollback-app")
    forward, back = one_each_way(tmp_path, topic, group)
    prefix = forward.prefix

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


def test_a_flow_waits_for_an_opposite_replicator_that_died_after_writing_and_says_how_to_end_the_wait(tmp_path):
    """Guards the stated limit "a flow waits for the opposite flow's
    checkpoint". The replicator copying B→A dies after writing b0..b4 into
    A and before its checkpoint (a Lambda timed out, and nothing runs it
    again). The A→B replicator must not move its cursor over those records
    (a translation among them could not tell which the group read), so it
    waits, with the records after them; after 30 s it says so at warning
    level, naming the other flow and the ways out. One run of the other
    replicator reconciles what it wrote, and the wait ends: every record
    once on each cluster, none sent back."""
    topic = unique("two-replicators-died")
    forward, back = one_each_way(tmp_path, topic, unique("died-app"))
    a = [f"a-{i:02d}" for i in range(10)]
    b = [f"b-{i:02d}" for i in range(5)]
    produce_keys(SOURCE, topic, a[:5])
    assert forward.run("--once").returncode == 0
    assert back.run("--once").returncode == 0
    produce_keys(TARGET, topic, b)
    died = back.run("--once", env={"FERRY_FAILPOINT": "crash-after-produce:1"})
    assert died.returncode != 0, died.stdout + died.stderr
    assert [r["key"] for r in read_partition(SOURCE, topic, 0)] == [k.encode() for k in a[:5] + b]
    produce_keys(SOURCE, topic, a[5:])

    log = tmp_path / "forward.log"
    proc = forward.spawn("--round-seconds", "45", "--checkpoint-seconds", "1", log=log)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and "waiting for" not in log.read_text(errors="replace"):
            time.sleep(1)
        said = [line for line in log.read_text(errors="replace").splitlines() if "waiting for" in line]
        assert said, log.read_text(errors="replace")[-2000:]
        assert back.name in said[0] and "forget-flow" in said[0] and "--once" in said[0], said[0]
        assert [r["key"] for r in read_partition(TARGET, topic, 0)] == [k.encode() for k in a[:5] + b], \
            "a5..a9 wait behind the records the other replicator has not checkpointed"
        # The other replicator runs once: it reconciles what it wrote.
        assert back.run("--once").returncode == 0
        deadline = time.time() + 120
        while time.time() < deadline and len(read_partition(TARGET, topic, 0)) < 10:
            time.sleep(1)
    finally:
        proc.terminate()
        proc.wait(60)
    assert forward.run("--once").returncode == 0
    assert [r["key"] for r in read_partition(TARGET, topic, 0)] == [k.encode() for k in a[:5] + b + a[5:]]
    assert [r["key"] for r in read_partition(SOURCE, topic, 0)] == [k.encode() for k in a[:5] + b + a[5:]]


def written_on_each(forward: Ferry, back: Ferry, topic: str) -> None:
    """a0..a4 produced on A and b0..b2 on B, each copied to the other."""
    produce_keys(SOURCE, topic, [f"a{i}" for i in range(5)])
    for f in (forward, back):
        assert f.run("--once").returncode == 0
    produce_keys(TARGET, topic, [f"b{i}" for i in range(3)])
    for f in (back, forward):
        assert f.run("--once").returncode == 0


def test_a_topic_deleted_on_either_cluster_is_deleted_on_both_by_two_replicators_propagating_deletions(tmp_path):
    """MSK Replicator's rollback layout with PropagateTopicDeletions: one
    replicator each way. A topic deleted on one cluster is the target topic
    of the replicator copying into that cluster; planned before the other
    replicator propagated the deletion, it took the topic for its own
    target topic deleted under it and made it again, copying everything
    back (the deletion undone; within one replicator the flow back was
    already left to propagate it). Both orders of the replicators' plans,
    and a deletion on either cluster."""
    deletions = {"PropagateTopicDeletions": True}
    for deleted_on in (TARGET, SOURCE):
        topic = unique("two-replicators-deleted")
        folder = tmp_path / ("on-target" if deleted_on == TARGET else "on-source")
        folder.mkdir()
        forward, back = one_each_way(folder, topic, unique("deleted-app"), topic_replication=deletions, on_target=False)
        # The replicator whose target topic is deleted plans first.
        first, second = (forward, back) if deleted_on == TARGET else (back, forward)
        written_on_each(forward, back, topic)
        assert len(read_partition(SOURCE, topic, 0)) == 8 and len(read_partition(TARGET, topic, 0)) == 8

        delete_topic(deleted_on, topic)
        for f in (first, second, first, second):
            res = f.run("--once", env={"RUST_LOG": "warn"})
            assert res.returncode == 0, res.stdout + res.stderr[-3000:]
        deadline = time.time() + 30
        while topic in list_topics(SOURCE) | list_topics(TARGET):
            assert time.time() < deadline, (deleted_on, topic in list_topics(SOURCE), topic in list_topics(TARGET))
            time.sleep(0.5)
        assert forward.status() == [] and back.status() == [], "the deleted topic's state is forgotten"


def stop_planning(ferry: Ferry, minutes: int) -> None:
    """As if `ferry`'s replicator last planned `minutes` ago (stopped, or its
    flow taken out of the definition): its flows' registrations as copying
    between the two clusters are that old."""
    from support.local_sfn import cursors_table

    table = cursors_table(ferry.prefix)
    old = int(time.time() * 1000) - minutes * 60_000
    items = table.scan()["Items"]
    mine = [i for i in items if "registered_ms" in i and i["partition"].startswith(f"{ferry.name}/")]
    assert mine, "the replicator registered its flow"
    for i in mine:
        table.update_item(Key={"flow": i["flow"], "partition": i["partition"]},
                          UpdateExpression="SET registered_ms = :old", ExpressionAttributeValues={":old": old})


def test_a_deletion_is_not_left_to_a_flow_back_that_stopped_planning(tmp_path):
    """The rollback layout after the migration: the forward replicator
    X→Y stopped, its state left (as `ferry forget-flow` advises while the
    flow back reads it); the applications write on Y, and Y→X runs on. The
    topic is deleted on X. The flow back waited for the stopped forward
    flow to propagate the deletion, for ever: the topic neither copied nor
    deleted, the group's last sync shown as current; and when the forward
    replicator ran again, months later, it deleted the topic the
    applications use on Y (breaker helper-72, on 7c3fe71). Now a flow back
    that has not planned for 15 minutes is not waited for: the topic is
    copied to X again, and the forward flow then finds its source topic
    made again, not deleted. Meanwhile the group's partition says the
    topic is missing."""
    from support.groups import commit_at

    topic, group = unique("two-replicators-stopped"), unique("stopped-app")
    forward, back = one_each_way(tmp_path, topic, group, topic_replication={"PropagateTopicDeletions": True},
                                 on_target=False)
    written_on_each(forward, back, topic)
    commit_at(TARGET, group, {(topic, 0): (8, "on-y")})
    assert back.run("--once").returncode == 0
    [row] = [g for g in back.groups() if g["group"] == group]
    assert row["status"] in ("synced", "up-to-date"), row

    delete_topic(SOURCE, topic)
    produce_keys(TARGET, topic, [f"c{i}" for i in range(4)])
    res = back.run("--once", env={"RUST_LOG": "warn"})
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert "left to that flow" in res.stderr and forward.name in res.stderr, res.stderr[-3000:]
    assert topic not in list_topics(SOURCE), "a forward flow that plans is waited for"
    [row] = [g for g in back.groups() if g["group"] == group]
    assert row["status"] == "topic-missing" and f"topic {topic} partition 0 is not on cluster source" in row["detail"], row

    stop_planning(forward, 16)
    res = back.run("--once", env={"RUST_LOG": "warn"})
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert topic in list_topics(SOURCE)
    # What began on Y; what began on X is the forward flow's to copy, and
    # its source topic went with those records.
    assert [r["key"] for r in read_partition(SOURCE, topic, 0)] == [k.encode() for k in ["b0", "b1", "b2", "c0", "c1", "c2", "c3"]]

    res = forward.run("--once", env={"RUST_LOG": "warn"})
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert [r["key"] for r in read_partition(TARGET, topic, 0)] == [k.encode() for k in
                                                                     [f"a{i}" for i in range(5)] + ["b0", "b1", "b2"] +
                                                                     [f"c{i}" for i in range(4)]], \
        "the applications' topic on Y is kept whole, nothing copied into it twice"


def test_a_flow_back_on_a_slow_schedule_is_still_waited_for(tmp_path):
    """The forward replicator plans every 30 minutes (its `ScheduleRate`,
    here `ferry run`'s round). A topic deleted on X 16 minutes after its
    last plan was copied back by the flow back, which took 15 minutes
    without a plan for a replicator stopped, and the deletion was undone
    (status, on 533afd6). The forward flow's registration says how often it
    plans, and it is waited for three of its periods: the deletion is left
    to it; past those, the topic is copied again as before."""
    topic, group = unique("two-replicators-slow"), unique("slow-app")
    forward, back = one_each_way(tmp_path, topic, group, topic_replication={"PropagateTopicDeletions": True},
                                 on_target=False)
    written_on_each(forward, back, topic)
    # Its last plan, on a 30-minute schedule (started by cron); then one by
    # hand, which does not know the schedule and keeps the period.
    assert forward.run("--once", "--plans-every-seconds", "1800").returncode == 0
    by_hand = subprocess.run(forward.args("plan"), capture_output=True, text=True, timeout=120)
    assert by_hand.returncode == 0, by_hand.stderr
    stop_planning(forward, 16)
    delete_topic(SOURCE, topic)
    res = back.run("--once", env={"RUST_LOG": "warn"})
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert "left to that flow" in res.stderr and forward.name in res.stderr, res.stderr[-3000:]
    assert topic not in list_topics(SOURCE), "a forward flow on a 30-minute schedule is waited for after 16 minutes"

    stop_planning(forward, 91)
    res = back.run("--once", env={"RUST_LOG": "warn"})
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert topic in list_topics(SOURCE), "past three of its periods, it counts as stopped"


def test_all_of_a_flows_topics_deleted_on_one_cluster_are_deleted_on_both(tmp_path):
    """Both of a flow's two topics deleted on the target at once: the plan
    took an answer knowing none of the flow's topics for a broker just back
    from a restart and did not believe it, yet created both topics again
    and copied everything back; the flow back then found its source topics
    made again and propagated nothing (breaker helper-73, on a8778f9). The
    target lists other topics, so the answer is believed, and the
    deletions are propagated as one topic's is."""
    topics, group = [unique("all-deleted-a"), unique("all-deleted-b")], unique("all-deleted-app")
    for t in topics:
        create_topic(SOURCE, t, 1)
        produce_keys(SOURCE, t, ["k0", "k1", "k2"])
    prefix = unique("ferry-shared")
    deletions = {"PropagateTopicDeletions": True}
    forward, back = (Ferry(*one_way(tmp_path, name, topics, group, reverse, topic_replication=deletions),
                           name=unique(name), prefix=prefix)
                     for name, reverse in (("a-to-b", False), ("b-to-a", True)))
    for f in (forward, back, forward, back):
        assert f.run("--once").returncode == 0
    for t in topics:
        delete_topic(TARGET, t)
    for f in (forward, back, forward, back):
        res = f.run("--once", env={"RUST_LOG": "warn"})
        assert res.returncode == 0, res.stdout + res.stderr[-3000:]
        assert "not believed" not in res.stderr, res.stderr[-3000:]
    deadline = time.time() + 30
    while set(topics) & (list_topics(SOURCE) | list_topics(TARGET)):
        assert time.time() < deadline, {t: (t in list_topics(SOURCE), t in list_topics(TARGET)) for t in topics}
        time.sleep(0.5)

