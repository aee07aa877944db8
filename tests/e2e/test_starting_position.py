"""StartingPosition LATEST replicates only what arrives after the start;
EARLIEST replicates everything."""

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
