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
from support.acls import binding, create, topic_acls


def dry_run_all(ferry: Ferry, observe: int = 1, *extra: str) -> dict:
    res = subprocess.run(ferry.args("plan", "--dry-run", "--json", "--observe-seconds", str(observe), *extra),
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


def dry_run(ferry: Ferry, observe: int = 1) -> dict:
    [flow] = dry_run_all(ferry, observe)["flows"]
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
        whole = dry_run_all(ferry)
    finally:
        member.close()
    [flow] = whole["flows"]

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
    assert (flow["batches_to_keep_up"], flow["partitions_per_batch_to_keep_up"]) == (1, 3)  # a quiet source
    # The cost model: a quiet source costs leases, their renewals and the
    # plan only in DynamoDB (3 write units per partition and 2 per batch
    # per execution, 43,800 executions a month; each partition's lease
    # renewed by a checkpoint of 2 write units every 15 s of the month's
    # 2,628,000).
    cost = whole["monthly_cost"]
    renewals = 3 * 2_628_000 / 15 * 2
    assert cost["executions"] == 43_800 and abs(cost["dynamodb_write_units"] - (43_800 * (3 * 3 + 2) + renewals)) < 1
    assert abs(cost["total_usd"] - cost["lambda_usd"] - cost["step_functions_usd"] - cost["dynamodb_usd"]) < 1e-6
    assert len(cost["assumptions"]) >= 4

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
        busy_all = dry_run_all(ferry, 3, "--replicate-records-per-second", "1")
        # A stack deployed with CheckpointSeconds 15 (breaker helper-80: the
        # dry run priced every stack at 4).
        busy_15 = dry_run_all(ferry, 3, "--replicate-records-per-second", "1", "--checkpoint-seconds", "15")
    finally:
        stop.set()
        t.join()
    [busy] = busy_all["flows"]
    assert busy["observed_records_per_second"] > 10, busy["observed_records_per_second"]
    # At one record per second per invocation, every partition needs its own batch.
    assert (busy["batches_to_keep_up"], busy["partitions_per_batch_to_keep_up"]) == (3, 1)
    # Three partitions receiving records: their checkpoints cost write units too.
    assert busy_all["monthly_cost"]["dynamodb_write_units"] > cost["dynamodb_write_units"]
    assert busy_all["monthly_cost"]["dynamodb_usd"] > cost["dynamodb_usd"]
    assert cost["dynamodb_usd"] <= busy_15["monthly_cost"]["dynamodb_usd"] < busy_all["monthly_cost"]["dynamodb_usd"], busy_15
    refused = subprocess.run(ferry.args("plan", "--dry-run", "--checkpoint-seconds", "16"), capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode != 0 and "1 to 15" in refused.stderr, refused.stdout + refused.stderr
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
    assert "estimated monthly AWS cost" in text.stdout, text.stdout
