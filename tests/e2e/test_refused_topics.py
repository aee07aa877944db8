"""A topic the plan refuses (its target topic conflicts with it) has
cursors, and no copy: every part of Ferry that reads cursors must take it
for what it is. Found by breaker helper-69 on 4f2ef90, each test failing
there: Ferry deleted a refused target topic, `ferry move` said GO for a
topic never copied, SyncGroups committed on a refused target, the dry run
and a backfill passed in silence, and `run --once` left the other topics'
groups unsynced. The rest are the paths it tried that held."""

import json
import subprocess
import time

from confluent_kafka import TopicPartition as KafkaPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions

from conftest import SOURCE, TARGET, Ferry, committed, create_topic, list_topics, produce_keys, read_partition, unique, write_config
from support.groups import commit_at
from support.topics import delete_topic


def set_config(bootstrap: str, topic: str, key: str, value: str) -> None:
    """Set a topic configuration and wait until the broker applies it."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    res.add_incremental_config(ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET))
    admin.incremental_alter_configs([res])[res].result(timeout=30)
    deadline = time.time() + 30
    while admin.describe_configs([res])[res].result(timeout=30)[key].value != value:
        assert time.time() < deadline, f"{key} of {topic} is not {value} after 30 s"
        time.sleep(0.1)


def refused_once(ferry: Ferry, topic: str) -> None:
    res = ferry.run("--once", timeout=180)
    assert res.returncode == 1 and f"topic {topic} not copied" in res.stderr, res.stderr[-3000:]


def test_a_deleted_source_topic_never_takes_a_refused_target_topic_with_it(tmp_path):
    """PropagateTopicDeletions deletes Ferry's copies only: a target topic
    Ferry refused holds someone else's records, and stays when its source
    topic goes, as refused or after the operator excluded it."""
    refused, excluded, fine = unique("propdel"), unique("propdel-excluded"), unique("fine")
    create_topic(SOURCE, refused, 1)
    create_topic(TARGET, refused, 2)
    create_topic(SOURCE, excluded, 1, config={"cleanup.policy": "compact"})
    create_topic(TARGET, excluded, 1, config={"cleanup.policy": "delete"})
    create_topic(SOURCE, fine, 1)
    for topic in (refused, excluded):
        produce_keys(TARGET, topic, [f"foreign-{i}" for i in range(5)])
    produce_keys(SOURCE, fine, ["k0"])
    kc, ri = write_config(tmp_path, [refused, excluded, fine], topic_replication={"PropagateTopicDeletions": True})
    ferry = Ferry(kc, ri)
    refused_once(ferry, refused)
    info = json.loads(ri.read_text())
    info[0]["TopicReplication"]["TopicsToExclude"] = [excluded]
    ri.write_text(json.dumps(info))
    refused_once(ferry, refused)
    for topic in (refused, excluded, fine):
        delete_topic(SOURCE, topic)
    res = ferry.run("--once", timeout=180, env={"RUST_LOG": "warn"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "its target topic is kept: it is not Ferry's copy" in res.stderr, res.stderr[-3000:]
    deadline = time.time() + 30
    while fine in list_topics(TARGET):  # Ferry's own copy goes
        assert time.time() < deadline, "the copy of a deleted source topic was not deleted"
        time.sleep(0.5)
    for topic in (refused, excluded):
        assert topic in list_topics(TARGET), f"Ferry deleted {topic}, a target topic it never wrote"
        assert len(read_partition(TARGET, topic, 0, timeout_s=5)) == 5
    assert ferry.status() == [], "the deleted topics' state is forgotten"


def test_a_move_over_a_refused_topic_is_no_go(tmp_path):
    """StartingPosition LATEST puts the refused topic's cursor at the
    source's end, which read as copied: `ferry move` said GO, for the
    topic an application produces and for a group that consumed it, and
    recorded the group as moved."""
    topic, group = unique("move-refused"), unique("group")
    create_topic(SOURCE, topic, 1)
    create_topic(TARGET, topic, 1, config={"cleanup.policy": "compact"})
    produce_keys(SOURCE, topic, [f"k{i}" for i in range(10)])
    commit_at(SOURCE, group, {(topic, 0): (10, "")})
    kc, ri = write_config(tmp_path, [topic], starting="LATEST", groups=[group])
    ferry = Ferry(kc, ri)
    refused_once(ferry, topic)
    for what in (["--topics", topic], ["--group", group]):
        res = ferry.move(*what, "--to", "target", "--wait", "5", "--json", timeout=120)
        rep = json.loads(res.stdout)
        assert rep["verdict"] == "NO-GO", rep
        assert "refuses to copy" in rep["reason"] and "cleanup.policy=compact" in rep["reason"], rep
        assert not rep["recorded"], rep
    assert committed(TARGET, group) == {}, "the move committed the group on the target"


def test_group_offsets_are_not_synced_onto_a_refused_target_topic(tmp_path):
    """SyncGroups committed the group on a foreign target topic the flow
    refuses (at 0: nothing copied), and called it up to date."""
    topic, group = unique("sync-refused"), unique("group")
    create_topic(SOURCE, topic, 1)
    create_topic(TARGET, topic, 2)
    produce_keys(TARGET, topic, [f"foreign-{i}" for i in range(5)])
    produce_keys(SOURCE, topic, [f"k{i}" for i in range(10)])
    commit_at(SOURCE, group, {(topic, 0): (7, "")})
    kc, ri = write_config(tmp_path, [topic], groups=[group])
    ferry = Ferry(kc, ri)
    log = tmp_path / "ferry.log"
    proc = ferry.spawn("--round-seconds", "5", "--group-sync-seconds", "1", log=log)
    try:
        # An absence: given the time for a dozen syncs (one a second) and
        # rounds (0.5 s apart with nothing to copy).
        time.sleep(12)
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        proc.terminate()
        proc.wait(30)
    assert committed(TARGET, group) == {}, committed(TARGET, group)
    # Told once, not every round.
    assert log.read_text().count("TopicRefused") <= 1, log.read_text()[-3000:]


def test_a_once_run_with_a_refused_topic_still_syncs_the_other_topics_groups(tmp_path):
    bad, fine, group = unique("bad"), unique("good"), unique("group")
    create_topic(SOURCE, bad, 1, config={"cleanup.policy": "compact"})
    create_topic(TARGET, bad, 1, config={"cleanup.policy": "delete"})
    create_topic(SOURCE, fine, 1)
    produce_keys(SOURCE, fine, [f"k{i}" for i in range(10)])
    commit_at(SOURCE, group, {(fine, 0): (6, "")})
    kc, ri = write_config(tmp_path, [bad, fine], groups=[group])
    refused_once(Ferry(kc, ri), bad)
    assert committed(TARGET, group).get((fine, 0), (None,))[0] == 6, committed(TARGET, group)


def test_the_dry_run_and_a_backfill_fail_on_a_refused_topic_and_say_why(tmp_path):
    """Used as a check before deploying, the dry run exited 0 with a topic
    refused, and listed its partitions as starting; a backfill of it said
    `backfill planned`, and nothing of the refusal. The backfill still
    takes effect once the target is mended."""
    topic, fine = unique("dry-refused"), unique("fine")
    create_topic(SOURCE, topic, 1)
    create_topic(TARGET, topic, 1, config={"cleanup.policy": "compact"})
    create_topic(SOURCE, fine, 1)
    produce_keys(SOURCE, topic, [f"k{i}" for i in range(10)])
    kc, ri = write_config(tmp_path, [topic, fine], starting="LATEST")
    ferry = Ferry(kc, ri)
    dry = subprocess.run(ferry.args("plan", "--dry-run", "--observe-seconds", "0"), capture_output=True, text=True, timeout=120)
    assert dry.returncode == 1, dry.stdout + dry.stderr[-2000:]
    assert f"topic {topic} not copied" in dry.stdout and f"partitions of {topic}" not in dry.stdout, dry.stdout
    assert f"start 1 partitions of {fine}" in dry.stdout, dry.stdout
    refused_once(ferry, topic)
    bf = subprocess.run(ferry.args("backfill", "--topics", topic, "--from", "EARLIEST"), capture_output=True, text=True, timeout=120)
    assert bf.returncode == 1 and f"topic {topic} is refused" in bf.stderr, bf.stdout + bf.stderr[-2000:]
    set_config(TARGET, topic, "cleanup.policy", "delete")
    assert ferry.run("--once", timeout=180).returncode == 0
    assert [m["key"] for m in read_partition(TARGET, topic, 0)] == [f"k{i}".encode() for i in range(10)]


def test_a_topic_copied_then_refused_then_mended_has_each_record_once(tmp_path):
    """Copied; the target's policy changed under it (refused) while
    records arrive; mended: each record once, in order, no error left."""
    topic = unique("remend")
    create_topic(SOURCE, topic, 1)
    produce_keys(SOURCE, topic, [f"a{i}" for i in range(10)])
    kc, ri = write_config(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    assert ferry.run("--once", timeout=180).returncode == 0
    set_config(TARGET, topic, "cleanup.policy", "compact")
    produce_keys(SOURCE, topic, [f"b{i}" for i in range(10)])
    refused_once(ferry, topic)
    assert "cleanup.policy=compact" in ferry.status()[0]["last_error"], ferry.status()
    set_config(TARGET, topic, "cleanup.policy", "delete")
    assert ferry.run("--once", timeout=180).returncode == 0
    keys = [m["key"].decode() for m in read_partition(TARGET, topic, 0)]
    assert keys == [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)], keys
    assert not [r for r in ferry.status() if r.get("last_error")], ferry.status()


def test_a_copied_topic_whose_target_is_deleted_as_the_refusal_says_is_copied_again_once(tmp_path):
    """Copied; someone adds a partition to the target (refused); the
    operator deletes the target topic as the refusal says: Ferry creates
    it and copies every source record into it once."""
    topic = unique("grown")
    create_topic(SOURCE, topic, 1)
    produce_keys(SOURCE, topic, [f"a{i}" for i in range(10)])
    kc, ri = write_config(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    assert ferry.run("--once", timeout=180).returncode == 0
    admin = AdminClient({"bootstrap.servers": TARGET})
    admin.create_partitions([NewPartitions(topic, 2)])[topic].result(timeout=30)
    produce_keys(SOURCE, topic, [f"b{i}" for i in range(10)])
    deadline = time.time() + 30
    while True:  # the broker serves the new partition count a moment later
        res = ferry.run("--once", timeout=180)
        if "has 2 partitions" in res.stderr or time.time() > deadline:
            break
        time.sleep(1)
    assert res.returncode == 1 and "has 2 partitions" in res.stderr, res.stderr[-2000:]
    delete_topic(TARGET, topic)
    assert ferry.run("--once", timeout=180).returncode == 0
    produce_keys(SOURCE, topic, [f"c{i}" for i in range(5)])
    assert ferry.run("--once", timeout=180).returncode == 0
    keys = [m["key"].decode() for m in read_partition(TARGET, topic, 0)]
    assert keys == [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)] + [f"c{i}" for i in range(5)], keys


def test_records_deleted_on_the_source_while_refused_stop_the_mended_partition_loudly(tmp_path):
    topic = unique("gone-while-refused")
    create_topic(SOURCE, topic, 1)
    create_topic(TARGET, topic, 1, config={"cleanup.policy": "compact"})
    produce_keys(SOURCE, topic, [f"k{i}" for i in range(20)])
    kc, ri = write_config(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    refused_once(ferry, topic)
    admin = AdminClient({"bootstrap.servers": SOURCE})
    for f in admin.delete_records([KafkaPartition(topic, 0, 10)]).values():
        f.result(timeout=30)
    set_config(TARGET, topic, "cleanup.policy", "delete")
    res = ferry.run("--once", timeout=180)
    assert res.returncode != 0, res.stderr[-3000:]
    assert "deleted" in (ferry.status()[0].get("last_error") or ""), ferry.status()
    assert read_partition(TARGET, topic, 0, timeout_s=3) == []


def test_a_topic_no_longer_selected_keeps_its_target_when_its_source_goes(tmp_path):
    """Cut over: the topic was copied, then excluded, and the applications
    write to the target topic; then the old source topic is deleted. With
    PropagateTopicDeletions it took the target topic with it, and the
    applications' records (helper-70, on efb99d6; before this work too):
    only topics the flow still selects are replicated, deletions included."""
    topic, fine = unique("cutover"), unique("fine")
    create_topic(SOURCE, topic, 1)
    create_topic(SOURCE, fine, 1)
    produce_keys(SOURCE, topic, [f"k{i}" for i in range(5)])
    kc, ri = write_config(tmp_path, [topic, fine], topic_replication={"PropagateTopicDeletions": True})
    ferry = Ferry(kc, ri)
    assert ferry.run("--once", timeout=180).returncode == 0
    info = json.loads(ri.read_text())
    info[0]["TopicReplication"]["TopicsToExclude"] = [topic]
    ri.write_text(json.dumps(info))
    assert ferry.run("--once", timeout=180).returncode == 0
    produce_keys(TARGET, topic, [f"app-{i}" for i in range(5)])
    delete_topic(SOURCE, topic)
    res = ferry.run("--once", timeout=180, env={"RUST_LOG": "warn"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "no longer selected by the flow, was deleted; its target topic is kept" in res.stderr, res.stderr[-3000:]
    time.sleep(2)
    assert topic in list_topics(TARGET), "Ferry deleted a topic it no longer replicates"
    assert len(read_partition(TARGET, topic, 0)) == 10
    assert [r["topic"] for r in ferry.status()] == [fine], "the deleted topic's state is forgotten"


def test_a_replication_factor_the_target_cannot_meet_is_bad_configuration(tmp_path):
    """TargetReplicationFactor above the target's brokers is the flow's
    setting, not a topic's conflict: refused as bad configuration, naming
    the field, before anything is written (the validate-only creation made
    every topic 'refused alone' with a fix on the target; helper-70)."""
    topic = unique("rf")
    create_topic(SOURCE, topic, 1)
    produce_keys(SOURCE, topic, ["k0"])
    kc, ri = write_config(tmp_path, [topic], topic_replication={"TargetReplicationFactor": 7})
    ferry = Ferry(kc, ri)
    res = ferry.run("--once", timeout=180)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "TargetReplicationFactor" in res.stderr and "InputError" in res.stderr, res.stderr[-3000:]
    assert topic not in list_topics(TARGET)
    assert ferry.status() == []


def test_both_ways_a_topic_deleted_on_the_second_flows_source_is_deleted_on_both(tmp_path):
    """Both ways, IDENTICAL names, PropagateTopicDeletions: the topic
    deleted on the target cluster is the source topic of the flow back.
    The first flow planned took it for its own target topic deleted under
    it and made it again, copying into it (the deletion undone); listed the
    other way round, the flows propagated it (helper-70, on efb99d6)."""
    topic = unique("both-deleted")
    create_topic(SOURCE, topic, 1)
    produce_keys(SOURCE, topic, [f"k{i}" for i in range(5)])
    kc, ri = write_config(tmp_path, [topic], both_ways=True, topic_replication={"PropagateTopicDeletions": True})
    ferry = Ferry(kc, ri)
    assert ferry.run("--once", timeout=180).returncode == 0
    produce_keys(TARGET, topic, [f"t{i}" for i in range(3)])
    assert ferry.run("--once", timeout=180).returncode == 0
    delete_topic(TARGET, topic)
    for _ in range(2):
        res = ferry.run("--once", timeout=240, env={"RUST_LOG": "warn"})
        assert res.returncode == 0, res.stderr[-3000:]
    deadline = time.time() + 30
    while topic in list_topics(SOURCE) | list_topics(TARGET):
        assert time.time() < deadline, (topic in list_topics(SOURCE), topic in list_topics(TARGET))
        time.sleep(0.5)
    assert ferry.status() == [], "the deleted topic's state is forgotten"
