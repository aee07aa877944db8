"""`ferry plan --dry-run` writes nothing: no target topic, no ACL, no state
table; and it says what a plan would do (the topic to create and its
partitions to start, with the records to copy), which ACLs it would copy
and which not and why, a source that allows larger records than the
target would, a group that has members on the target, and the source's
throughput. After a real plan, a dry run finds nothing left to create."""

import json
import subprocess
import threading
import time

from confluent_kafka import Consumer
from confluent_kafka.admin import AclOperation, ResourcePatternType

from conftest import SOURCE, TARGET, Ferry, create_topic, dynamo, list_topics, producer, unique, write_config
from test_acls import binding, create, topic_acls


def dry_run(ferry: Ferry, observe: int = 1) -> dict:
    res = subprocess.run(ferry.args("plan", "--dry-run", "--json", "--observe-seconds", str(observe)),
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    [flow] = json.loads(res.stdout)["flows"]
    return flow


def tables(prefix: str) -> list[str]:
    return [t for t in dynamo().list_tables()["TableNames"] if t.startswith(prefix)]


def test_dry_run_writes_nothing_and_says_what_a_plan_would_do(tmp_path):
    topic = unique("dry")
    create_topic(SOURCE, topic, 3, {"max.message.bytes": "2000000", "retention.ms": "86400000"})
    p = producer(SOURCE)
    for i in range(100):
        p.produce(topic, partition=i % 3, key=f"k{i}".encode(), value=b"v")
    assert p.flush(30) == 0
    nobody = f"User:{unique('nobody')}"
    read = binding(topic, ResourcePatternType.LITERAL, "User:alice", AclOperation.READ)
    create(SOURCE, [read, binding("*", ResourcePatternType.LITERAL, nobody, AclOperation.DESCRIBE)])

    # A group with a live member on the target.
    group = unique("dry-app")
    elsewhere = unique("dry-target-only")
    create_topic(TARGET, elsewhere, 1)
    member = Consumer({"bootstrap.servers": TARGET, "group.id": group, "session.timeout.ms": 45000})
    member.subscribe([elsewhere])
    deadline = time.time() + 30
    while not member.assignment():
        assert time.time() < deadline, "the target consumer never joined its group"
        member.poll(0.5)

    kc, ri = write_config(tmp_path, [topic], copy_acls=True, groups=[group])
    ferry = Ferry(kc, ri)
    acls_before = topic_acls(TARGET)
    try:
        flow = dry_run(ferry)
    finally:
        member.close()

    # Nothing written anywhere.
    assert topic not in list_topics(TARGET)
    assert topic_acls(TARGET) == acls_before
    assert tables(ferry.prefix) == []

    # What a plan would do.
    assert flow["first_plan"] is True
    [create_it] = flow["topics_to_create"]
    assert (create_it["topic"], create_it["partitions"], create_it["replication_factor"]) == (topic, 3, None)
    starts = flow["partitions_to_start"]
    assert sorted((s["partition"], s["from_offset"]) for s in starts) == [(0, 0), (1, 0), (2, 0)]
    assert sum(s["records"] for s in starts) == 100 == flow["records_behind"]
    assert (flow["partitions"], flow["batches"]) == (3, 1)
    assert any("User:alice" in a and "READ" in a for a in flow["acls_to_copy"]), flow["acls_to_copy"]
    [star] = [a for a in flow["acls_not_copied"] if nobody in a["acl"]]
    assert "LITERAL *" in star["why"]
    [risk] = flow["record_size_risks"]
    assert (risk["topic"], risk["source_max_message_bytes"], risk["target_max_message_bytes"]) == (topic, 2000000, 1048588)
    assert flow["groups_active_on_target"] == [group]

    # Throughput: records arriving while the dry run watches.
    stop = threading.Event()

    def produce_steadily():
        q = producer(SOURCE)
        while not stop.is_set():
            for i in range(50):
                q.produce(topic, partition=i % 3, value=b"more")
            q.flush(10)
            time.sleep(0.1)

    t = threading.Thread(target=produce_steadily)
    t.start()
    try:
        busy = dry_run(ferry, observe=3)
    finally:
        stop.set()
        t.join()
    assert busy["observed_records_per_second"] > 10, busy["observed_records_per_second"]
    assert tables(ferry.prefix) == []

    # A real plan does it; a dry run afterwards finds nothing left to create.
    res = subprocess.run(ferry.args("plan"), capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    assert topic in list_topics(TARGET)
    after = dry_run(ferry)
    assert (after["first_plan"], after["topics_to_create"], after["partitions_to_start"]) == (False, [], [])
    deadline = time.time() + 15  # the brokers apply created ACLs a moment later
    while after["acls_to_copy"] and time.time() < deadline:
        time.sleep(0.5)
        after = dry_run(ferry, observe=0)
    assert after["acls_to_copy"] == []
    # The human form says so too.
    text = subprocess.run(ferry.args("plan", "--dry-run", "--observe-seconds", "0"), capture_output=True, text=True, timeout=180)
    assert text.returncode == 0 and "nothing was written" in text.stdout, text.stdout + text.stderr
