"""Exact at the edges (#19, item 5): a topic deleted and created again under
the same name is another log. Its cursors and offset map, trusted, would
skip the new source topic's first records or leave a new target topic
without what was copied into the old one. Ferry compares topic ids and
follows the new history, saying so (TopicRecreated)."""

import time

from conftest import ROOT, SOURCE, TARGET, Ferry, create_topic, produce_keys, read_partition, unique, write_config
from support.topics import delete_topic


def keys(bootstrap: str, topic: str) -> list[bytes]:
    return [r["key"] for r in read_partition(bootstrap, topic, 0)]


def test_a_recreated_source_or_target_topic_is_followed_not_trusted(tmp_path):
    topic = unique("recreated")
    create_topic(SOURCE, topic, 1)
    old = [f"old-{i:03d}" for i in range(50)]
    new = [f"new-{i:03d}" for i in range(80)]
    produce_keys(SOURCE, topic, old)
    kc, ri = write_config(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    first = ferry.run("--once")
    assert first.returncode == 0, first.stdout + first.stderr
    assert keys(TARGET, topic) == [k.encode() for k in old]

    # The source topic is deleted and created again; the new one is longer
    # than the old cursor (50), so trusting the cursor would copy new-050..
    # and skip new-000..new-049 without a word.
    delete_topic(SOURCE, topic)
    create_topic(SOURCE, topic, 1)
    produce_keys(SOURCE, topic, new)
    res = ferry.run("--once")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "TopicRecreated" in out and "was deleted and created again" in out, out
    assert keys(TARGET, topic) == [k.encode() for k in old + new], "every record of the new source topic, after the old ones"

    # The target topic is deleted: Ferry creates it again and copies the
    # source topic again from its first record, instead of going on from a
    # cursor that says everything is there.
    delete_topic(TARGET, topic)
    res = ferry.run("--once")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "TopicRecreated" in out and "was deleted after Ferry copied into it" in out, out
    assert keys(TARGET, topic) == [k.encode() for k in new]

    # Settled: the next run changes nothing and says nothing of it.
    res = ferry.run("--once")
    assert res.returncode == 0 and "TopicRecreated" not in res.stdout + res.stderr, res.stderr
    assert keys(TARGET, topic) == [k.encode() for k in new]


def test_a_target_topic_recreated_under_a_batch_on_its_way_gets_nothing_of_it(tmp_path):
    """The operator deletes the target topic and creates it again while a
    worker holds a batch ready to send (a failpoint stalls the worker just
    before the send). Written by name, the batch went into the new topic,
    and the plan's copy from the first record then came after it: records
    twice and out of order, lag 0 (reproduced on c6bb39f). The worker now
    names the topic by the id it began writing (Produce v13), the broker
    refuses the write, and the next plan copies the new topic in order."""
    import subprocess
    import time

    topic = unique("recreated-under")
    create_topic(SOURCE, topic, 1)
    first = [f"a-{i:03d}" for i in range(20)]
    later = [f"b-{i:03d}" for i in range(20)]
    produce_keys(SOURCE, topic, first)
    kc, ri = write_config(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    assert ferry.run("--once").returncode == 0
    assert keys(TARGET, topic) == [k.encode() for k in first]
    produce_keys(SOURCE, topic, later)
    log = tmp_path / "run.log"
    proc = ferry.spawn("--round-seconds", "5", log=log, env={"FERRY_FAILPOINT": "stall-before-produce:12"})
    try:
        deadline = time.time() + 60
        while "failpoint stall-before-produce:12 reached" not in log.read_text():
            assert time.time() < deadline and proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        delete_topic(TARGET, topic)
        create_topic(TARGET, topic, 1)
        want = [k.encode() for k in first + later]
        deadline = time.time() + 120
        while keys(TARGET, topic) != want:
            got = keys(TARGET, topic)
            assert time.time() < deadline and got == want[:len(got)], (got, log.read_text()[-3000:])
            time.sleep(2)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert keys(TARGET, topic) == want


def test_a_warm_replicate_follows_a_target_topic_the_plan_created_again(tmp_path):
    """A warm Replicate environment keeps the metadata it read: after the
    plan (another process) finds the target topic deleted and creates it
    again, the partition's cursor expects the new topic's id while the warm
    cache still holds the old one. The worker reads metadata again and
    copies into the new topic. It refused every send, for as long as the
    environment lived (helper-67, reproduced on 22fe247)."""
    from support.warm_function import WarmFunction

    bins = ROOT / "target" / "debug"
    topic = unique("recreated-warm")
    create_topic(SOURCE, topic, 1)
    first = [f"a-{i:03d}" for i in range(20)]
    later = [f"b-{i:03d}" for i in range(20)]
    produce_keys(SOURCE, topic, first)
    ferry = Ferry(*write_config(tmp_path, [topic]))

    def plan(n: int) -> dict:
        fn = WarmFunction(bins / "ferry-plan", ferry, tmp_path / f"plan{n}.log")
        try:
            kind, out, _ = fn.invoke({}, timeout_s=120)
            assert kind == "response", (out, fn.text()[-3000:])
            return out
        finally:
            fn.close()

    [batch] = plan(1)["batches"]
    replicate = WarmFunction(bins / "ferry-replicate", ferry, tmp_path / "replicate.log")
    try:
        kind, res, _ = replicate.invoke(dict(batch, max_seconds=8), timeout_s=60)
        assert kind == "response", (res, replicate.text()[-3000:])
        assert keys(TARGET, topic) == [k.encode() for k in first]
        delete_topic(TARGET, topic)
        [batch] = plan(2)["batches"]
        produce_keys(SOURCE, topic, later)
        kind, res, _ = replicate.invoke(dict(batch, max_seconds=10), timeout_s=60)
        assert kind == "response", (res, replicate.text()[-3000:])
        assert keys(TARGET, topic) == [k.encode() for k in first + later], replicate.text()[-3000:]
    finally:
        replicate.close()


def test_all_source_topics_deleted_without_propagation_leave_the_group_sync_working(tmp_path):
    """PropagateTopicDeletions off (the default): both of a flow's source
    topics deleted keep their cursors (the plan keeps them to follow a
    topic made again). The group sync failed every round, taking the
    answer knowing none of the flow's topics for a broker just restarted
    (breaker helper-73, on a8778f9). The source lists other topics: the
    answer is believed, and the group's partitions say their topic is
    missing, while the sync goes on."""
    from support.groups import commit_at

    topics, group = [unique("gone-a"), unique("gone-b")], unique("gone-app")
    for t in topics:
        create_topic(SOURCE, t, 1)
        produce_keys(SOURCE, t, [f"k{i}" for i in range(5)])
    ferry = Ferry(*write_config(tmp_path, topics, groups=[group]))
    assert ferry.run("--once").returncode == 0
    commit_at(SOURCE, group, {(topics[0], 0): (3, "m"), (topics[1], 0): (4, "m")})
    assert ferry.run("--once").returncode == 0
    for t in topics:
        delete_topic(SOURCE, t)
    for _ in range(2):
        res = ferry.run("--once", env={"RUST_LOG": "warn"})
        assert res.returncode == 0, res.stdout + res.stderr[-3000:]
        assert "ConsumerGroupOffsetSyncFailure" not in res.stderr, res.stderr[-3000:]
    rows = [g for g in ferry.groups() if g["group"] == group]
    assert sorted(r["status"] for r in rows) == ["topic-missing", "topic-missing"], rows
    assert all("is not on cluster source" in r["detail"] for r in rows), rows


def test_a_topic_made_again_under_its_name_keeps_an_operators_reset_on_the_target(tmp_path):
    """A topic deleted and its state forgotten (PropagateTopicDeletions
    here) kept its groups' last syncs, Ferry's commit at 3 among them. Made
    again under the same name and copied again, an operator's reset of
    the group on the target to 5 was taken for Ferry's own commit (5 is
    past 3) and overwritten by the next translation: the group skipped
    records 5 to 14 (breaker helper-73, on a8778f9). A plan forgetting a
    partition now forgets its group syncs too, and the reset is a commit
    Ferry did not write, never overwritten, as on a topic with no past."""
    from support.groups import commit_at

    from conftest import committed, list_topics

    topic, other, group = unique("made-again"), unique("no-past"), unique("made-again-app")
    for t in (topic, other):
        create_topic(SOURCE, t, 1)
    produce_keys(SOURCE, topic, [f"a{i}" for i in range(5)])
    produce_keys(SOURCE, other, ["c0"])
    ferry = Ferry(*write_config(tmp_path, [topic, other], groups=[group],
                                topic_replication={"PropagateTopicDeletions": True}))
    assert ferry.run("--once").returncode == 0
    commit_at(SOURCE, group, {(topic, 0): (3, "m")})
    assert ferry.run("--once").returncode == 0
    assert committed(TARGET, group)[(topic, 0)][0] == 3
    delete_topic(SOURCE, topic)
    assert ferry.run("--once").returncode == 0
    deadline = time.time() + 30
    while topic in list_topics(TARGET):
        assert time.time() < deadline
        time.sleep(0.5)
    assert not [g for g in ferry.groups() if g["topic"] == topic], "the forgotten partition's group syncs go with it"

    create_topic(SOURCE, topic, 1)
    produce_keys(SOURCE, topic, [f"n{i}" for i in range(20)])
    produce_keys(SOURCE, other, [f"c{i}" for i in range(1, 20)])
    assert ferry.run("--once").returncode == 0
    assert len(read_partition(TARGET, topic, 0)) == 20 and len(read_partition(TARGET, other, 0)) == 20
    commit_at(TARGET, group, {(topic, 0): (5, "reset"), (other, 0): (5, "reset")})
    commit_at(SOURCE, group, {(topic, 0): (15, "m"), (other, 0): (15, "m")})
    assert ferry.run("--once").returncode == 0
    on_target = committed(TARGET, group)
    assert on_target[(other, 0)][0] == 5, "a reset Ferry did not write is never overwritten"
    assert on_target[(topic, 0)][0] == 5, "nor on a topic made again under a name Ferry synced before"
