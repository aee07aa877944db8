"""Bad configuration is rejected before anything is written: a non-zero
exit, a message naming the file, the field and the fix, no target topic and
no state table."""

import json
import re
import subprocess

import pytest

from conftest import SOURCE, TARGET, Ferry, create_topic, dynamo, list_topics, producer, read_partition, unique, write_config


OTHER_TESTS_TOPIC = re.compile(r".+-[0-9a-f]{10}")


def mutate(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


CASES = [
    ("bad compression", "ri", lambda d: d[0].update(TargetCompressionType="BROTLI"), ["replication-info.json", "TargetCompressionType", "BROTLI", "Fix:"]),
    ("bad regex", "ri", lambda d: d[0]["TopicReplication"].update(TopicsToExclude=["orders(["]), ["TopicsToExclude[0]", "not a valid regular expression"]),
    ("bad starting position", "ri", lambda d: d[0]["TopicReplication"].update(StartingPosition={"Type": "BEGINNING"}), ["StartingPosition.Type", "EARLIEST or LATEST"]),
    ("unknown field", "ri", lambda d: d[0].update(TopicReplicaton={}), ["unknown field `TopicReplicaton`"]),
    ("missing cluster", "ri", lambda d: d[0].update(TargetKafkaClusterId="nowhere"), ["TargetKafkaClusterId", "not defined"]),
    ("bad naming", "ri", lambda d: d[0]["TopicReplication"].update(TopicNameConfiguration={"Type": "RENAMED"}), ["TopicNameConfiguration.Type", "RENAMED"]),
    ("bad bootstrap", "kc", lambda d: d[0]["ApacheKafkaCluster"].update(BootstrapBrokerString="localhost"), ["kafka-clusters.json", "BootstrapBrokerString", "no port"]),
    ("bad encryption", "kc", lambda d: d[1]["EncryptionInTransit"].update(EncryptionType="SSL"), ["EncryptionType", "TLS"]),
    ("topic named like a copy", "ri",
     lambda d: d[0]["TopicReplication"].update(TopicsToReplicate=d[0]["TopicReplication"]["TopicsToReplicate"] + ["source\\.orders"],
                                               TopicNameConfiguration={"Type": "PREFIXED_WITH_SOURCE_CLUSTER_ALIAS"}),
     ["TopicsToReplicate", "names the topic source.orders", "never copies it", "IDENTICAL"]),
    ("not json", "kc", None, ["kafka-clusters.json", "not valid JSON"]),
    ("empty flows", "ri", "[]", ["replication-info.json", "empty"]),
]


@pytest.mark.parametrize("label,which,change,words", CASES, ids=[c[0] for c in CASES])
def test_bad_configuration_is_rejected_and_nothing_written(tmp_path, label, which, change, words):
    topic = unique("untouched")
    create_topic(SOURCE, topic, 1)
    kc, ri = write_config(tmp_path, [topic])
    path = kc if which == "kc" else ri
    if change is None:
        path.write_text("[{ not json")
    elif isinstance(change, str):
        path.write_text(change)
    else:
        mutate(path, change)
    ferry = Ferry(kc, ri)
    before = list_topics(TARGET)
    res = ferry.run("--once", timeout=60)
    assert res.returncode != 0
    for w in words:
        assert w in res.stderr, f"{label}: {w!r} not in {res.stderr!r}"
    after = list_topics(TARGET)
    assert topic not in after
    # Nothing else either. Other test files running beside this one create
    # topics meanwhile, all named by unique(), and their first transaction
    # or group creates Kafka's own internal topics.
    made = [t for t in after - before if not (OTHER_TESTS_TOPIC.fullmatch(t) or t.startswith("__"))]
    assert not made, made
    tables = dynamo().list_tables()["TableNames"]
    assert not any(t.startswith(ferry.prefix) for t in tables), tables


def test_a_round_too_short_to_copy_is_refused_and_nothing_written(tmp_path):
    """A round keeps 2 s in hand to checkpoint and release: `--round-seconds
    2` copied nothing, round after round, and said nothing (helper-71)."""
    topic = unique("short-round")
    create_topic(SOURCE, topic, 1)
    ferry = Ferry(*write_config(tmp_path, [topic]))
    for short in ("2", "0"):
        res = ferry.run("--once", "--round-seconds", short, timeout=60)
        assert res.returncode == 2, res.stdout + res.stderr
        assert f"a round of {short} s copies nothing" in res.stderr and "at least 3" in res.stderr, res.stderr
    assert topic not in list_topics(TARGET)
    tables = dynamo().list_tables()["TableNames"]
    assert not any(t.startswith(ferry.prefix) for t in tables), tables


def test_target_partition_mismatch_refuses_that_topic_alone(tmp_path):
    """A target topic with more partitions than its source is refused, and
    nothing written to it; the other topic is created and copied."""
    topic = unique("mismatch")
    create_topic(SOURCE, topic, 3)
    create_topic(TARGET, topic, 4)
    other = unique("fine")
    create_topic(SOURCE, other, 1)
    p = producer(SOURCE)
    for t in (topic, other):
        p.produce(t, partition=0, key=b"k", value=b"v")
    assert p.flush(30) == 0
    kc, ri = write_config(tmp_path, [topic, other])
    res = Ferry(kc, ri).run("--once", timeout=120)
    assert res.returncode == 1, res.stderr
    assert "has 4 partitions" in res.stderr and "has only 3" in res.stderr, res.stderr
    assert [r["key"] for r in read_partition(TARGET, other, 0)] == [b"k"]
    assert sum(len(read_partition(TARGET, topic, p, timeout_s=3)) for p in range(4)) == 0


def test_unreachable_cluster_gives_up_with_the_cause(tmp_path):
    kc, ri = write_config(tmp_path, [unique("nowhere")], source="127.0.0.1:1")
    res = Ferry(kc, ri).run("--once", "--give-up-seconds", "3", timeout=60)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "giving up after 3 s" in res.stderr
    assert "no broker of cluster source answered" in res.stderr, res.stderr


def test_a_cluster_answering_with_another_cluster_id_is_refused_and_nothing_written(tmp_path):
    """The flow's state records its clusters' ids. When an alias later leads
    to another cluster (re-created under the same address, or a
    kafka-clusters.json pointing elsewhere), the stored cursors describe a
    log that is not there: the run stops, naming the cluster, both ids and
    the fix, and writes nothing. Here the two aliases swap brokers."""
    topic = unique("replaced")
    create_topic(SOURCE, topic, 1)
    p = producer(SOURCE)
    for i in range(10):
        p.produce(topic, partition=0, key=f"k{i}".encode(), value=b"v")
    assert p.flush(30) == 0
    kc, ri = write_config(tmp_path, [topic])
    first = Ferry(kc, ri)
    assert first.run("--once").returncode == 0
    cursor = first.status()[0]["cursor"]
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    kc2, _ = write_config(swapped, [topic], source=TARGET, target=SOURCE)
    moved = Ferry(kc2, ri, name=first.name, prefix=first.prefix)
    res = moved.run("--once", timeout=120)
    assert res.returncode != 0, res.stdout + res.stderr
    for words in (f"flow {first.name}/source>target: its state was written for source cluster source with cluster id",
                  f"but {TARGET} now answers as cluster id", "Nothing was written", "Fix:",
                  "ferry forget-flow --flow 'source>target' --yes"):
        assert words in res.stderr, res.stderr
    # The dry run says the same before a deployment would.
    dry = subprocess.run(moved.args("plan", "--dry-run", "--observe-seconds", "0"), capture_output=True, text=True, timeout=180)
    assert dry.returncode != 0 and "its state was written for source cluster source" in dry.stderr, dry.stdout + dry.stderr
    assert len(read_partition(SOURCE, topic, 0)) == 10, "nothing copied back into the real source"
    assert first.status()[0]["cursor"] == cursor
    # As the message says: forget the flow's state (asked first, then done),
    # and the next run starts it afresh on the clusters it now names.
    ask = subprocess.run(moved.args("forget-flow", "--flow", "source>target"), capture_output=True, text=True, timeout=120)
    assert ask.returncode == 2 and "Nothing was deleted: add --yes" in ask.stdout, ask.stdout + ask.stderr
    assert first.status()[0]["cursor"] == cursor
    done = subprocess.run(moved.args("forget-flow", "--flow", "source>target", "--yes"), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "forgot flow" in done.stdout, done.stdout + done.stderr
    assert moved.status() == []
    p = producer(TARGET)
    for i in range(5):
        p.produce(topic, partition=0, key=f"new-k{i}".encode(), value=b"v")
    assert p.flush(30) == 0
    again = moved.run("--once", timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    # From EARLIEST on the cluster "source" now names: the 10 records Ferry
    # wrote there are recognised as coming from the other side (no loop), the
    # 5 new ones are copied.
    keys = [r["key"] for r in read_partition(SOURCE, topic, 0)]
    assert keys == [f"k{i}".encode() for i in range(10)] + [f"new-k{i}".encode() for i in range(5)], keys
    assert moved.status()[0]["cursor"] == 15
