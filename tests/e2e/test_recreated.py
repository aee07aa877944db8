"""Exact at the edges (#19, item 5): a topic deleted and created again under
the same name is another log. Its cursors and offset map, trusted, would
skip the new source topic's first records or leave a new target topic
without what was copied into the old one. Ferry compares topic ids and
follows the new history, saying so (TopicRecreated)."""

from conftest import SOURCE, TARGET, Ferry, create_topic, produce_keys, read_partition, unique, write_config
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
