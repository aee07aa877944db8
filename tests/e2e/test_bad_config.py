"""Bad configuration is rejected before anything is written: a non-zero
exit, a message naming the file, the field and the fix, no target topic and
no state table."""

import json

import pytest

from conftest import SOURCE, TARGET, Ferry, create_topic, dynamo, list_topics, unique, write_config


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
    assert topic not in list_topics(TARGET)
    assert list_topics(TARGET) == before
    tables = dynamo().list_tables()["TableNames"]
    assert not any(t.startswith(ferry.prefix) for t in tables), tables


def test_target_partition_mismatch_is_rejected_before_writing(tmp_path):
    topic = unique("mismatch")
    create_topic(SOURCE, topic, 3)
    create_topic(TARGET, topic, 4)
    other = unique("fine")
    create_topic(SOURCE, other, 1)
    kc, ri = write_config(tmp_path, [topic, other])
    res = Ferry(kc, ri).run("--once", timeout=60)
    assert res.returncode != 0
    assert "has 4 partitions" in res.stderr and "has only 3" in res.stderr, res.stderr
    assert other not in list_topics(TARGET), "nothing may be created when any topic conflicts"


def test_unreachable_cluster_gives_up_with_the_cause(tmp_path):
    kc, ri = write_config(tmp_path, [unique("nowhere")], source="127.0.0.1:1")
    res = Ferry(kc, ri).run("--once", "--give-up-seconds", "3", timeout=60)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "giving up after 3 s" in res.stderr
    assert "no broker of cluster source answered" in res.stderr, res.stderr
