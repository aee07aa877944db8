"""One plan handles 500 topics with 2,000 partitions within a Lambda's
limits (900 s, the function's 512 MB), creating every target topic and
cursor, balances its batches by lag, and keeps them in the state tables:
the state machine carries a reference per batch."""

import json
import time

from confluent_kafka.admin import AdminClient, NewTopic

from conftest import ROOT, SOURCE, TARGET, Ferry, create_topic, list_topics, produce_keys, producer, unique, write_config
from support.local_sfn import cursors_table, plan_batch_key
from support.warm_function import WarmFunction

PLAN = ROOT / "target" / "debug" / "ferry-plan"
REPLICATE = ROOT / "target" / "debug" / "ferry-replicate"

TOPICS, PARTITIONS = 500, 4


def test_plan_of_500_topics_and_2000_partitions(tmp_path):
    stem = unique("scale")
    names = [f"{stem}-{i:03d}" for i in range(TOPICS)]
    admin = AdminClient({"bootstrap.servers": SOURCE})
    for f in admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names], operation_timeout=120).values():
        f.result(timeout=180)
    # Lag in a few partitions, so balancing has something to balance.
    p = producer(SOURCE)
    for i in range(40):
        for _ in range(50 * (i + 1)):
            p.produce(names[i], partition=0, value=b"x")
    assert p.flush(60) == 0

    kc, ri = write_config(tmp_path, [f"{stem}-[0-9]+"])
    ferry = Ferry(kc, ri)
    try:
        check_plan(ferry, names, tmp_path)
    finally:
        # 4,000 partitions left behind would slow every later test.
        for bootstrap in (SOURCE, TARGET):
            a = AdminClient({"bootstrap.servers": bootstrap})
            for f in a.delete_topics([n for n in names if n in list_topics(bootstrap)], operation_timeout=60).values():
                f.result(timeout=120)


def check_plan(ferry: Ferry, names: list[str], tmp_path) -> None:
    """The real Plan function (one warm environment), as the state machine
    invokes it: what it hands Step Functions holds a reference per batch,
    and the batches themselves are in the cursors table."""
    fn = WarmFunction(PLAN, ferry, tmp_path / "plan.log")
    try:
        kind, plan, elapsed = fn.invoke({}, timeout_s=900)
        peak_mb = fn.peak_mb()
        assert kind == "response", (plan, fn.text()[-3000:])
    finally:
        fn.close()
    print(f"\nplan of {TOPICS} topics / {TOPICS * PARTITIONS} partitions: {elapsed:.1f} s, peak RSS {peak_mb:.0f} MB, "
          f"{len(plan['batches'])} batches")
    assert elapsed < 900, "beyond the Lambda limit"
    assert peak_mb < 512, "beyond the function's memory"
    # What the Plan function hands Step Functions (compact JSON): a
    # reference per batch, far under one state's 256 KiB (it was 100 KB
    # here with the partitions in it, and grew with them).
    size = len(json.dumps(plan, separators=(",", ":")).encode())
    print(f"plan output: {size} bytes")
    assert size < 24 * 1024, f"the plan's output is {size} bytes"
    # 500 topics created: ten named, the rest counted.
    assert len(plan["created_topics"]) == 11 and plan["created_topics"][-1].startswith("and 490 more"), plan["created_topics"]
    assert all(b.get("partitions") is None for b in plan["batches"]), plan["batches"][0]
    table = cursors_table(ferry.prefix)
    batches = []
    for i, b in enumerate(plan["batches"]):
        ref = b["stored"]
        assert ref["batch"] == i, ref
        item = table.get_item(Key=plan_batch_key(ferry.name, ref), ConsistentRead=True)["Item"]
        assert int(item["expires_at"]) > time.time() + 3600, item["expires_at"]
        stored = json.loads(item["batch"])
        assert stored["flow"] == b["flow"]
        # Each batch lists its partitions grouped by topic: [partition, end offset, lag].
        batches.append([(t["topic"], *w) for t in stored["partitions"] for w in t["partitions"]])
        assert len(batches[-1]) == ref["partitions"]
    assert sum(len(b) for b in batches) == TOPICS * PARTITIONS
    assert len({(w[0], w[1]) for b in batches for w in b}) == TOPICS * PARTITIONS
    assert len(batches) == TOPICS * PARTITIONS // 16 and all(len(b) <= 16 for b in batches)
    assert set(names) <= list_topics(TARGET)
    lags = sorted(sum(w[3] for w in b) for b in batches)
    total = sum(lags)
    assert total == sum(50 * (i + 1) for i in range(40))
    # Balanced: the 40 lagging partitions are spread, one per batch, so no
    # batch carries more than the largest single lag.
    assert lags[-1] == 50 * 40
    assert sum(1 for lag in lags if lag > 0) == 40


def test_replicate_reads_its_batch_back_and_refuses_one_no_longer_kept(tmp_path):
    """The real Plan and Replicate functions: Replicate copies the
    partitions of the batch the plan kept for it; once the table's time to
    live has removed that batch, the invocation fails at once as
    Ferry.InputError saying so (the state machine's Catch), writing
    nothing."""
    topic = unique("scale-kept")
    create_topic(SOURCE, topic, 2)
    for part in (0, 1):
        produce_keys(SOURCE, topic, [str(i) for i in range(part, 20, 2)], part)
    ferry = Ferry(*write_config(tmp_path, [topic]))
    plan_fn = WarmFunction(PLAN, ferry, tmp_path / "plan.log")
    try:
        kind, plan, _ = plan_fn.invoke({"stop_at_plan_end": True}, timeout_s=120)
        assert kind == "response", (plan, plan_fn.text()[-3000:])
    finally:
        plan_fn.close()
    [ref] = plan["batches"]
    assert "partitions" not in ref and ref["stored"]["partitions"] == 2, ref
    replicate = WarmFunction(REPLICATE, ferry, tmp_path / "replicate.log")
    try:
        kind, out, _ = replicate.invoke(dict(ref, max_seconds=30), timeout_s=60)
        assert kind == "response", (out, replicate.text()[-3000:])
        assert out["summary"]["partitions"] == 2 and out["summary"]["records"] == 20, out["summary"]
        cursors_table(ferry.prefix).delete_item(Key=plan_batch_key(ferry.name, ref["stored"]))
        kind, out, took = replicate.invoke(dict(ref, max_seconds=30), timeout_s=60)
    finally:
        replicate.close()
    assert kind == "error" and out["errorType"] == "Ferry.InputError", out
    assert f"batch 0 of plan {ref['stored']['plan']} is not in the state tables" in out["errorMessage"], out
    assert "start a new execution" in out["errorMessage"] and took < 20, (took, out)
