"""StartingPosition LATEST replicates only what arrives after the start;
EARLIEST replicates everything."""

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from conftest import SOURCE, TARGET, Ferry, create_topic, producer, read_partition, unique, write_config


def produce(topic: str, keys: list[str]) -> None:
    p = producer(SOURCE)
    for k in keys:
        p.produce(topic, partition=0, key=k.encode(), value=b"v")
    assert p.flush(30) == 0


def test_latest_replicates_only_new_records(tmp_path):
    topic = unique("latest")
    create_topic(SOURCE, topic, 1)
    produce(topic, [f"before-{i}" for i in range(50)])
    kc, ri = write_config(tmp_path, [topic], starting="LATEST")
    ferry = Ferry(kc, ri)
    first = ferry.run("--once")
    assert first.returncode == 0, first.stderr
    assert read_partition(TARGET, topic, 0) == []
    produce(topic, [f"after-{i}" for i in range(30)])
    second = ferry.run("--once")
    assert second.returncode == 0, second.stderr
    keys = [r["key"].decode() for r in read_partition(TARGET, topic, 0)]
    assert keys == [f"after-{i}" for i in range(30)]


def test_earliest_replicates_everything(tmp_path):
    topic = unique("earliest")
    create_topic(SOURCE, topic, 1)
    produce(topic, [f"before-{i}" for i in range(50)])
    kc, ri = write_config(tmp_path, [topic], starting="EARLIEST")
    assert Ferry(kc, ri).run("--once").returncode == 0
    assert len(read_partition(TARGET, topic, 0)) == 50


@pytest.mark.parametrize("detect", [False, True], ids=["listed-topics-only", "detecting-new-topics"])
def test_a_first_plan_refused_leaves_the_next_one_first(tmp_path, detect):
    """A first plan that stops before it finishes (here: the target topic,
    made by someone else, is compacted and the source's is not) has started
    nothing. After the operator mends the target, the next plan is the
    first: it starts at StartingPosition, and with DetectAndCopyNewTopics
    off it still copies the listed topic."""
    topic = unique("refused-first")
    create_topic(SOURCE, topic, 1)
    create_topic(TARGET, topic, 1, config={"cleanup.policy": "compact"})
    produce(topic, [f"before-{i}" for i in range(50)])
    kc, ri = write_config(tmp_path, [topic], starting="LATEST", topic_replication={"DetectAndCopyNewTopics": detect})
    ferry = Ferry(kc, ri)
    refused = ferry.run("--once", timeout=120)
    assert refused.returncode != 0
    assert "cleanup.policy=compact" in refused.stderr, refused.stderr
    # The operator does what the error says.
    admin = AdminClient({"bootstrap.servers": TARGET})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    res.add_incremental_config(ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SET))
    admin.incremental_alter_configs([res])[res].result(timeout=30)
    mended = ferry.run("--once")
    assert mended.returncode == 0, mended.stderr
    produce(topic, [f"after-{i}" for i in range(30)])
    assert ferry.run("--once").returncode == 0
    keys = [r["key"].decode() for r in read_partition(TARGET, topic, 0, timeout_s=20)]
    assert keys == [f"after-{i}" for i in range(30)]
