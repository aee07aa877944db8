"""Topic metadata: configurations copied and kept in sync, partition
increases followed, conflicts reported before anything is written, and the
prefixed naming mode. Compared through the Admin API of both clusters."""

import json
import subprocess
import time

from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions

from conftest import SOURCE, TARGET, Ferry, create_topic, list_topics, produce_keys, producer, read_partition, unique, write_config
from support.topics import delete_topic


def overrides(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([res])[res].result(timeout=30)
    return {k: e.value for k, e in entries.items() if e.source == 1}  # DYNAMIC_TOPIC_CONFIG


def copy_configs(tmp_path, topics, naming="IDENTICAL"):
    kc, ri = write_config(tmp_path, topics)
    info = json.loads(ri.read_text())
    info[0]["TopicReplication"]["CopyTopicConfigurations"] = True
    info[0]["TopicReplication"]["TopicNameConfiguration"] = {"Type": naming}
    ri.write_text(json.dumps(info))
    return kc, ri


def test_configurations_are_copied_and_follow_later_changes(tmp_path):
    topic = unique("configs")
    create_topic(SOURCE, topic, 2, config={"retention.ms": "3600000", "max.message.bytes": "2000000", "cleanup.policy": "delete"})
    kc, ri = copy_configs(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    assert ferry.run("--once").returncode == 0
    assert overrides(TARGET, topic) == overrides(SOURCE, topic)
    # Change one, drop one on the source: the next plan follows.
    admin = AdminClient({"bootstrap.servers": SOURCE})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    res.add_incremental_config(ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET))
    res.add_incremental_config(ConfigEntry("max.message.bytes", None, incremental_operation=AlterConfigOpType.DELETE))
    admin.incremental_alter_configs([res])[res].result(timeout=30)
    assert ferry.run("--once").returncode == 0
    target = overrides(TARGET, topic)
    # The largest record size is only ever raised: a record the source took
    # under its earlier limit may not be copied yet.
    assert target == {**overrides(SOURCE, topic), "max.message.bytes": "2000000"}
    assert target["retention.ms"] == "7200000"


def test_settings_that_would_change_or_refuse_the_copies_stay_the_targets(tmp_path):
    """A source topic with LogAppendTime and a timestamp window, whose
    largest record size is lowered while a large record waits: the target
    keeps CreateTime (the source's timestamps, byte for byte), no window
    (history copied late is not refused), and the larger size."""
    topic = unique("configs-kept")
    create_topic(SOURCE, topic, 1, config={"message.timestamp.type": "LogAppendTime",
                                           "message.timestamp.before.max.ms": "60000", "max.message.bytes": "600000"})
    kc, ri = copy_configs(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    first = ferry.run("--once")
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    p = producer(SOURCE)
    p.produce(topic, partition=0, key=b"big", value=b"x" * 500_000)
    p.produce(topic, partition=0, key=b"small", value=b"y")
    assert p.flush(30) == 0
    admin = AdminClient({"bootstrap.servers": SOURCE})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    res.add_incremental_config(ConfigEntry("max.message.bytes", "100000", incremental_operation=AlterConfigOpType.SET))
    admin.incremental_alter_configs([res])[res].result(timeout=30)
    time.sleep(2)  # copied later than written: a target appending its own time would differ
    second = ferry.run("--once")
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    target = overrides(TARGET, topic)
    assert "message.timestamp.type" not in target and "message.timestamp.before.max.ms" not in target, target
    assert "max.message.bytes" not in target, "Kafka's default (1 MB) kept, never lowered to the source's 100000"
    src, tgt = read_partition(SOURCE, topic, 0), read_partition(TARGET, topic, 0)
    assert len(src) == 2
    assert [(m["key"], m["value"], m["timestamp"]) for m in tgt] == [(m["key"], m["value"], m["timestamp"]) for m in src]


def test_what_an_earlier_ferry_copied_is_undone_and_a_new_target_takes_the_large_records_waiting(tmp_path):
    """A target that an earlier Ferry made with the source's LogAppendTime
    (both have it) loses that override, so copies keep the source's
    timestamps (it stayed for ever; helper-67, reproduced on 22fe247). And
    a target created after the source lowered max.message.bytes below a
    record it holds is not created with the lower limit (the partition
    stopped at once, MessageTooLarge)."""
    copied, lowered = unique("configs-undone"), unique("configs-lowered")
    for bootstrap in (SOURCE, TARGET):
        create_topic(bootstrap, copied, 1, config={"message.timestamp.type": "LogAppendTime"})
    create_topic(SOURCE, lowered, 1, config={"max.message.bytes": "600000"})
    p = producer(SOURCE)
    p.produce(copied, partition=0, key=b"k", value=b"v")
    p.produce(lowered, partition=0, key=b"big", value=b"x" * 500_000)
    assert p.flush(30) == 0
    admin = AdminClient({"bootstrap.servers": SOURCE})
    res = ConfigResource(ConfigResource.Type.TOPIC, lowered)
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    res.add_incremental_config(ConfigEntry("max.message.bytes", "100000", incremental_operation=AlterConfigOpType.SET))
    admin.incremental_alter_configs([res])[res].result(timeout=30)
    time.sleep(2)
    kc, ri = copy_configs(tmp_path, [copied, lowered])
    run = Ferry(kc, ri).run("--once")
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "message.timestamp.type" not in overrides(TARGET, copied)
    for topic in (copied, lowered):
        src, tgt = read_partition(SOURCE, topic, 0), read_partition(TARGET, topic, 0)
        assert [(m["key"], m["timestamp"]) for m in tgt] == [(m["key"], m["timestamp"]) for m in src] and src, topic


def test_a_target_below_the_sources_largest_record_size_is_raised_to_it(tmp_path):
    """A target topic made with a smaller max.message.bytes than the
    source's own (here the source's is Kafka's default, no override) is
    raised to the source's, so a record the source takes goes through
    (it was not, once values at or below the default were left out of the
    comparison; helper-68, read on 171a25e)."""
    topic = unique("configs-raised")
    create_topic(SOURCE, topic, 1)
    create_topic(TARGET, topic, 1, config={"max.message.bytes": "200000"})
    p = producer(SOURCE)
    p.produce(topic, partition=0, key=b"big", value=b"x" * 500_000)
    assert p.flush(30) == 0
    kc, ri = copy_configs(tmp_path, [topic])
    run = Ferry(kc, ri).run("--once")
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert overrides(TARGET, topic)["max.message.bytes"] == "1048588"
    assert [m["key"] for m in read_partition(TARGET, topic, 0)] == [b"big"]


def test_partition_increase_reaches_the_target_and_new_partitions_replicate(tmp_path):
    topic = unique("grow")
    create_topic(SOURCE, topic, 2)
    kc, ri = write_config(tmp_path, [topic], starting="LATEST")
    ferry = Ferry(kc, ri)
    assert ferry.run("--once").returncode == 0
    admin = AdminClient({"bootstrap.servers": SOURCE})
    admin.create_partitions([NewPartitions(topic, 4)])[topic].result(timeout=30)
    p = producer(SOURCE)
    for part in range(4):
        p.produce(topic, partition=part, key=f"p{part}".encode(), value=b"v")
    assert p.flush(30) == 0
    assert ferry.run("--once").returncode == 0
    meta = AdminClient({"bootstrap.servers": TARGET}).list_topics(topic, timeout=30).topics[topic]
    assert len(meta.partitions) == 4
    for part in range(4):
        assert [r["key"] for r in read_partition(TARGET, topic, part)] == [f"p{part}".encode()]


def test_a_topic_whose_target_conflicts_is_refused_alone_until_mended_or_excluded(tmp_path):
    """Two topics whose target topics, made by someone else, conflict with
    them (another cleanup.policy; more partitions) are refused; the third
    is copied whole, where one refusal stopped every topic of the
    replicator (a new topic on a busy source was enough). Each refused
    partition shows the refusal in `ferry status`, nothing is written to
    its target, and the run says so and fails. The operator mends one:
    copied from the flow's start, the refusal gone; excludes the other:
    its refusal gone, and the run passes."""
    policy, parts, fine = unique("policy"), unique("parts"), unique("fine")
    create_topic(SOURCE, policy, 1, config={"cleanup.policy": "compact"})
    create_topic(TARGET, policy, 1, config={"cleanup.policy": "delete"})
    create_topic(SOURCE, parts, 2)
    create_topic(TARGET, parts, 3)
    create_topic(SOURCE, fine, 1)
    for topic in (policy, fine):
        produce_keys(SOURCE, topic, [f"k{i}" for i in range(20)])
    produce_keys(SOURCE, parts, [f"k{i}" for i in range(6)])
    kc, ri = write_config(tmp_path, [policy, parts, fine])
    ferry = Ferry(kc, ri)
    res = ferry.run("--once", timeout=180)
    assert res.returncode == 1, res.stdout + res.stderr[-3000:]
    assert f"topic {policy} not copied" in res.stderr and "cleanup.policy=delete" in res.stderr, res.stderr[-3000:]
    assert f"topic {parts} not copied" in res.stderr and "has 3 partitions" in res.stderr, res.stderr[-3000:]
    assert [m["key"] for m in read_partition(TARGET, fine, 0)] == [f"k{i}".encode() for i in range(20)]
    assert read_partition(TARGET, policy, 0, timeout_s=3) == []
    assert sum(len(read_partition(TARGET, parts, p, timeout_s=3)) for p in range(3)) == 0
    assert overrides(TARGET, policy).get("cleanup.policy") == "delete", "a refused target's configuration was changed"
    errors = {(r["topic"], r["partition"]): r.get("last_error") for r in ferry.status()}
    assert "cleanup.policy=delete" in (errors[(policy, 0)] or ""), errors
    assert all("has 3 partitions" in (errors[(parts, p)] or "") for p in range(2)), errors
    assert errors[(fine, 0)] is None, errors
    # The Report step counts them: ReplicatorFailure, and its alarm.
    rep = subprocess.run(ferry.args("report", "--json"), capture_output=True, text=True, timeout=120)
    failed = {t["topic"]: t["failed_partitions"] for t in json.loads(rep.stdout)["topics"]}
    assert failed == {policy: 1, parts: 2, fine: 0}, failed

    admin = AdminClient({"bootstrap.servers": TARGET})
    res_ = ConfigResource(ConfigResource.Type.TOPIC, policy)
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    res_.add_incremental_config(ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET))
    admin.incremental_alter_configs([res_])[res_].result(timeout=30)
    deadline = time.time() + 30
    while overrides(TARGET, policy).get("cleanup.policy") != "compact":  # the broker applies it a moment later
        assert time.time() < deadline
        time.sleep(0.1)
    again = ferry.run("--once", timeout=180)
    assert again.returncode == 1 and f"topic {parts} not copied" in again.stderr, again.stderr[-3000:]
    assert f"topic {policy} not copied" not in again.stderr, again.stderr[-3000:]
    assert [m["key"] for m in read_partition(TARGET, policy, 0)] == [f"k{i}".encode() for i in range(20)]
    errors = {(r["topic"], r["partition"]): r.get("last_error") for r in ferry.status()}
    assert errors[(policy, 0)] is None, errors

    info = json.loads(ri.read_text())
    info[0]["TopicReplication"]["TopicsToExclude"] = [parts]
    ri.write_text(json.dumps(info))
    last = ferry.run("--once", timeout=180)
    assert last.returncode == 0, last.stderr[-3000:]
    assert not [r for r in ferry.status() if r.get("last_error")], ferry.status()
    assert sum(len(read_partition(TARGET, parts, p, timeout_s=3)) for p in range(3)) == 0


def test_a_topic_the_target_refuses_to_create_is_refused_alone_before_anything_is_created(tmp_path):
    """A source topic whose name collides on the target with another topic
    (Kafka refuses `a.b` beside `a_b`: their metrics would share a name)
    is refused with the target's words, asked before anything is created
    (CreateTopics, validate only); the other topic is created and copied.
    The dry run says the same. One refused creation failed the plan as
    Ferry.Fatal, and no topic of the replicator was created or copied."""
    base = unique("collide")
    dotted, fine = f"{base}.v1", unique("fine")
    create_topic(SOURCE, dotted, 1)
    create_topic(TARGET, f"{base}_v1", 1)
    create_topic(SOURCE, fine, 1)
    for topic in (dotted, fine):
        produce_keys(SOURCE, topic, ["k0", "k1"])
    kc, ri = write_config(tmp_path, [dotted, fine])
    ferry = Ferry(kc, ri)
    dry = subprocess.run(ferry.args("plan", "--dry-run", "--json", "--observe-seconds", "0"), capture_output=True, text=True, timeout=120)
    assert dry.returncode == 1, dry.stderr[-2000:]
    [flow] = json.loads(dry.stdout)["flows"]
    assert [(r["topic"], "collides" in r["why"]) for r in flow["topics_refused"]] == [(dotted, True)], flow
    assert [t["topic"] for t in flow["topics_to_create"]] == [fine], flow
    res = ferry.run("--once", timeout=180)
    assert res.returncode == 1, res.stderr[-3000:]
    assert f"refuses to create topic {dotted}" in res.stderr and "collides" in res.stderr, res.stderr[-3000:]
    assert [m["key"] for m in read_partition(TARGET, fine, 0)] == [b"k0", b"k1"]
    assert dotted not in list_topics(TARGET)
    assert "collides" in next(r for r in ferry.status() if r["topic"] == dotted)["last_error"]


def test_a_cleanup_policy_is_compared_as_a_set_and_followed_when_configs_are_copied(tmp_path):
    """The same policy written in another order is the same policy (it was
    refused, and with it every topic of the replicator; reproduced on
    f1fa759). With CopyTopicConfigurations, a source that changes its policy
    mid-run is followed (it stopped the whole plan)."""
    ordered, changed = unique("policy-order"), unique("policy-changed")
    create_topic(SOURCE, ordered, 1, config={"cleanup.policy": "compact,delete"})
    create_topic(TARGET, ordered, 1, config={"cleanup.policy": "delete,compact"})
    produce_keys(SOURCE, ordered, ["k0", "k1"])
    kc, ri = write_config(tmp_path, [ordered])
    res = Ferry(kc, ri).run("--once", timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [m["key"] for m in read_partition(TARGET, ordered, 0)] == [b"k0", b"k1"]

    create_topic(SOURCE, changed, 1, config={"cleanup.policy": "delete"})
    produce_keys(SOURCE, changed, ["a"])
    kc, ri = copy_configs(tmp_path, [changed])
    ferry = Ferry(kc, ri)
    assert ferry.run("--once").returncode == 0
    admin = AdminClient({"bootstrap.servers": SOURCE})
    res = ConfigResource(ConfigResource.Type.TOPIC, changed)
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    res.add_incremental_config(ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET))
    admin.incremental_alter_configs([res])[res].result(timeout=30)
    produce_keys(SOURCE, changed, ["b"])
    again = ferry.run("--once", timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert overrides(TARGET, changed)["cleanup.policy"] == "compact"
    assert [m["key"] for m in read_partition(TARGET, changed, 0)] == [b"a", b"b"]


def test_prefixed_naming_and_no_re_replication_of_replicas(tmp_path):
    topic = unique("named")
    create_topic(SOURCE, topic, 1)
    # A topic that is itself a replica made by prefixed naming must not be copied again.
    replica = f"target.{unique('copy')}"
    create_topic(SOURCE, replica, 1)
    p = producer(SOURCE)
    p.produce(topic, partition=0, key=b"k", value=b"v")
    p.produce(replica, partition=0, key=b"k", value=b"v")
    assert p.flush(30) == 0
    kc, ri = copy_configs(tmp_path, [topic], naming="PREFIXED_WITH_SOURCE_CLUSTER_ALIAS")
    # Selected by a pattern (named, it is refused: see test_bad_config).
    info = json.loads(ri.read_text())
    info[0]["TopicReplication"]["TopicsToReplicate"].append(f"{replica}.*")
    ri.write_text(json.dumps(info))
    assert Ferry(kc, ri).run("--once").returncode == 0
    topics = list_topics(TARGET)
    assert f"source.{topic}" in topics
    assert [r["key"] for r in read_partition(TARGET, f"source.{topic}", 0)] == [b"k"]
    assert f"source.{replica}" not in topics


def test_target_replication_factor_is_used(tmp_path):
    """TargetReplicationFactor (a Ferry extension) reaches CreateTopics: 1
    works on the one-broker target; 2 is refused by the broker with a message
    naming the setting's effect, and nothing is created."""
    ok, too_many = unique("rf-one"), unique("rf-two")
    create_topic(SOURCE, ok, 1)
    create_topic(SOURCE, too_many, 1)
    kc, ri = write_config(tmp_path, [ok], topic_replication={"TargetReplicationFactor": 1})
    assert Ferry(kc, ri).run("--once").returncode == 0
    assert ok in list_topics(TARGET)
    kc, ri = write_config(tmp_path, [too_many], topic_replication={"TargetReplicationFactor": 2})
    res = Ferry(kc, ri).run("--once", "--give-up-seconds", "5")
    assert res.returncode != 0
    assert "InvalidReplicationFactor" in res.stdout + res.stderr, res.stdout + res.stderr
    assert too_many not in list_topics(TARGET)


def test_source_topic_deletion_propagates_only_when_configured(tmp_path):
    kept, dropped = unique("del-kept"), unique("del-propagated")
    admin = AdminClient({"bootstrap.servers": SOURCE})
    for t in (kept, dropped):
        create_topic(SOURCE, t, 2)
        produce(t, 10)
    runs = {}
    for t, propagate in ((kept, False), (dropped, True)):
        (tmp_path / t).mkdir()
        kc, ri = write_config(tmp_path / t, [t], topic_replication={"PropagateTopicDeletions": propagate})
        runs[t] = Ferry(kc, ri)
        assert runs[t].run("--once").returncode == 0
        assert t in list_topics(TARGET)
    for f in admin.delete_topics([kept, dropped], operation_timeout=30).values():
        f.result(timeout=60)
    wait_gone(SOURCE, [kept, dropped])
    for t in (kept, dropped):
        res = runs[t].run("--once")
        assert res.returncode == 0, res.stdout + res.stderr
    assert kept in list_topics(TARGET)
    wait_gone(TARGET, [dropped])
    assert runs[dropped].status() == []  # Ferry's state for it is gone too
    # Recreated on the source, it is replicated again from its first record.
    create_topic(SOURCE, dropped, 2)
    produce(dropped, 7)
    assert runs[dropped].run("--once").returncode == 0
    assert sum(len(read_partition(TARGET, dropped, p)) for p in range(2)) == 7


def wait_gone(bootstrap: str, topics: list[str], timeout: float = 30) -> None:
    import time

    deadline = time.time() + timeout
    while set(topics) & list_topics(bootstrap):
        assert time.time() < deadline, f"{topics} still on {bootstrap}"
        time.sleep(0.5)


def produce(topic: str, n: int) -> None:
    p = producer(SOURCE)
    for i in range(n):
        p.produce(topic, partition=i % 2, key=f"k{i}".encode(), value=b"v")
    assert p.flush(30) == 0


def test_a_target_name_past_kafkas_limit_is_refused_saying_so(tmp_path):
    """PREFIXED naming adds the source alias: a source topic name near
    Kafka's 249 characters has no legal target name. The plan refuses that
    topic, saying which and what to do (it failed with the broker's
    InvalidTopicException as Ferry.Fatal, and every other topic with it),
    and copies the others."""
    long = (unique("long") + "-").ljust(245, "x")  # legal on the source; "source." makes it 252
    other = unique("short")
    create_topic(SOURCE, long, 1)
    create_topic(SOURCE, other, 1)
    produce_keys(SOURCE, other, ["k0", "k1"])
    kc, ri = copy_configs(tmp_path, [long, other], naming="PREFIXED_WITH_SOURCE_CLUSTER_ALIAS")
    ferry = Ferry(kc, ri)
    res = ferry.run("--once", timeout=120)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "past Kafka's 249" in res.stderr and "TopicsToExclude" in res.stderr, res.stderr[-2000:]
    assert not [t for t in list_topics(TARGET) if t.endswith(long)]
    assert [m["key"] for m in read_partition(TARGET, f"source.{other}", 0)] == [b"k0", b"k1"]
    assert "past Kafka's 249" in next(r for r in ferry.status() if r["topic"] == long)["last_error"]


def test_a_target_topic_ferry_did_not_create_keeps_its_settings_when_configs_are_copied(tmp_path):
    """CopyTopicConfigurations on, and the target already holds an
    application's topics of the same names (breaker helper-71, on
    5a32617): one kept for ever (retention.ms=-1) while the source has no
    override, whose override the first plan deleted (the broker's 7-day
    default then deletes the application's history); one with
    cleanup.policy=delete while the source's is compact, which the plan
    switched to compact (the cleaner then took the application's keyless
    records). Now such a topic's settings stay its owner's: the policy
    conflict is refused, as with copying off; only max.message.bytes is
    raised, which removes nothing. A topic Ferry creates still follows."""
    kept, policy, made = unique("foreign-retention"), unique("foreign-policy"), unique("made")
    create_topic(SOURCE, kept, 1, config={"max.message.bytes": "2000000"})
    create_topic(TARGET, kept, 1, config={"retention.ms": "-1", "retention.bytes": "-1", "max.message.bytes": "500000"})
    create_topic(SOURCE, policy, 1, config={"cleanup.policy": "compact"})
    create_topic(TARGET, policy, 1, config={"cleanup.policy": "delete"})
    create_topic(SOURCE, made, 1, config={"retention.ms": "3600000"})
    for topic in (kept, policy, made):
        produce_keys(SOURCE, topic, ["k0"])
    kc, ri = copy_configs(tmp_path, [kept, policy, made])
    ferry = Ferry(kc, ri)
    res = ferry.run("--once", timeout=180, env={"RUST_LOG": "warn"})
    assert res.returncode == 1, res.stderr[-3000:]
    assert f"topic {policy} not copied" in res.stderr and "Ferry did not create it" in res.stderr, res.stderr[-3000:]
    assert "its configuration is left as it is" in res.stderr, res.stderr[-3000:]
    assert overrides(TARGET, kept) == {"retention.ms": "-1", "retention.bytes": "-1", "max.message.bytes": "2000000"}
    assert overrides(TARGET, policy).get("cleanup.policy") == "delete"
    assert [m["key"] for m in read_partition(TARGET, kept, 0)] == [b"k0"]
    # Later plans leave it too; a change on the source reaches the topic Ferry made.
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    admin = AdminClient({"bootstrap.servers": SOURCE})
    res_ = ConfigResource(ConfigResource.Type.TOPIC, made)
    res_.add_incremental_config(ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET))
    admin.incremental_alter_configs([res_])[res_].result(timeout=30)
    deadline = time.time() + 30
    while overrides(SOURCE, made).get("retention.ms") != "7200000":
        assert time.time() < deadline
        time.sleep(0.1)
    assert ferry.run("--once", timeout=180).returncode == 1  # the policy conflict stands
    assert overrides(TARGET, made).get("retention.ms") == "7200000"
    assert overrides(TARGET, kept) == {"retention.ms": "-1", "retention.bytes": "-1", "max.message.bytes": "2000000"}


def test_a_changed_topic_name_is_copied_into_anew_and_an_old_name_never_twice(tmp_path):
    """TopicNameConfiguration changed after copying: the new name gets the
    topic from its first record (the old one keeps its copies); changed
    back onto the old name, which holds the flow's copies, it is refused,
    not copied there again (breaker helper-91: every record there twice,
    exit 0, and a 'deleted and created again' error about a topic nobody
    deleted); changed back again, the new name goes on where it stopped."""
    topic = unique("renamed")
    create_topic(SOURCE, topic, 1)
    keys = [f"k{i:02d}".encode() for i in range(35)]
    produce_keys(SOURCE, topic, [k.decode() for k in keys[:20]])
    kc, ri = write_config(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    assert ferry.run("--once").returncode == 0
    copy = f"source.{topic}"

    produce_keys(SOURCE, topic, [k.decode() for k in keys[20:30]])
    write_config(tmp_path, [topic], naming="PREFIXED_WITH_SOURCE_CLUSTER_ALIAS")
    ran = ferry.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "TopicRenamed" in ran.stderr and "TopicRecreated" not in ran.stderr, ran.stderr
    assert [r["key"] for r in read_partition(TARGET, copy, 0)] == keys[:30]
    assert [r["key"] for r in read_partition(TARGET, topic, 0)] == keys[:20]

    produce_keys(SOURCE, topic, [k.decode() for k in keys[30:]])
    write_config(tmp_path, [topic])
    ran = ferry.run("--once")
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "already holds the flow's copies" in ran.stdout + ran.stderr, ran.stdout + ran.stderr
    assert [r["key"] for r in read_partition(TARGET, topic, 0)] == keys[:20], "not copied there twice"

    write_config(tmp_path, [topic], naming="PREFIXED_WITH_SOURCE_CLUSTER_ALIAS")
    ran = ferry.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert [r["key"] for r in read_partition(TARGET, copy, 0)] == keys
    assert [r["key"] for r in read_partition(TARGET, topic, 0)] == keys[:20]

    # The refusal's other fix: the old copies deleted, the old name gets
    # the topic again from its first record.
    delete_topic(TARGET, topic)
    write_config(tmp_path, [topic])
    ran = ferry.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert [r["key"] for r in read_partition(TARGET, topic, 0)] == keys


def test_a_changed_topic_name_never_mixes_two_source_topics_in_one_target(tmp_path):
    """An IDENTICAL flow copies `x` and `source.x` (its regex takes both);
    made PREFIXED, `x` would be copied into `source.x`, which holds the
    other topic's copies: refused (breaker helper-92: both topics' records
    in one, exit 0)."""
    base = unique("renamed-two")
    other = f"source.{base}"
    create_topic(SOURCE, base, 1)
    create_topic(SOURCE, other, 1)
    produce_keys(SOURCE, base, ["x0", "x1"])
    produce_keys(SOURCE, other, ["s0", "s1"])
    kc, ri = write_config(tmp_path, [base], topic_replication={"TopicsToReplicate": [f"(source\\.)?{base}"]})
    ferry = Ferry(kc, ri)
    assert ferry.run("--once").returncode == 0
    info = json.loads(ri.read_text())
    info[0]["TopicReplication"]["TopicNameConfiguration"] = {"Type": "PREFIXED_WITH_SOURCE_CLUSTER_ALIAS"}
    ri.write_text(json.dumps(info))
    for _ in range(2):
        ran = ferry.run("--once")
        assert ran.returncode == 1 and "two topics' records" in ran.stdout + ran.stderr, ran.stdout + ran.stderr
    assert [r["key"] for r in read_partition(TARGET, other, 0)] == [b"s0", b"s1"]
