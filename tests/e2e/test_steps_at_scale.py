"""The steps that run every execution do not make their state calls one
partition after another.

Every scheduled execution starts with a plan and ends with a group sync,
each under its function's 120 s timeout. A plan that looked at each
partition's offset-map runs, one Query after another, made as many Queries
as the flow has partitions: at 2,000 partitions on the local stack every
plan timed out (bench/scale, 2026-12-05). A group sync that translated a
group's partitions one after another took two Queries a partition in turn:
at 10,000 partitions and DynamoDB's few milliseconds a call, one group
that consumed outlived the function. Nor does one process have
more than a bounded number of state calls under way at once, however many
partitions it sets up. Here the real binaries run against moto through a
proxy that counts their calls on the wire and, for the sync, holds each
one as long as a call to the real service takes.
"""

import importlib.util
import os
import queue
import subprocess
from urllib.parse import urlparse

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import ROOT, SOURCE, TARGET, Ferry, committed, create_topic, producer, unique, write_config
from support.warm_function import WarmFunction

_spec = importlib.util.spec_from_file_location("dynamo_counter", ROOT / "bench" / "dynamo_counter.py")
dynamo_counter = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dynamo_counter)

SYNC_GROUPS = ROOT / "target" / "debug" / "ferry-sync-groups"
TOPICS = 30
PARTITIONS_EACH = 20
PARTITIONS = TOPICS * PARTITIONS_EACH
# ferry_core::plan::PRUNE_PARTITIONS_PER_PLAN
PRUNE_PARTITIONS_PER_PLAN = 256
# ferry_adapters::state::CALLS_IN_FLIGHT
CALLS_IN_FLIGHT = 32
# The deployed SyncGroups: 120 s for a group on 10,000 partitions at about
# 8 ms a DynamoDB call. Here 600 partitions at 80 ms a call: the same
# product of partitions and latency over time, so a 72 s timeout. moto adds
# its own 10 ms or so to every call, one call at a time (20 to 30 s over
# this sync, more on a loaded machine): at 40 ms and 36 s that was most of
# the budget. The ratio is the claim; one after another, the lookups alone
# take 1,200 x 80 ms, past it.
CALL_DELAY_S = 0.080
SYNC_TIMEOUT_S = 120 * (PARTITIONS * CALL_DELAY_S) / (10_000 * 0.008)


def moto_counter(delay_s: float = 0.0):
    moto = urlparse(os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"))
    return dynamo_counter.DynamoCounter(moto.hostname, moto.port, delay_s)


@pytest.fixture(scope="module")
def topics():
    prefix = unique("atscale")
    names = [f"{prefix}-{i:02d}" for i in range(TOPICS)]
    for t in names:
        create_topic(SOURCE, t, PARTITIONS_EACH)
    yield names
    for bootstrap in (SOURCE, TARGET):
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for f in admin.delete_topics(names, operation_timeout=30).values():
            try:
                f.result(timeout=60)
            except Exception:  # noqa: BLE001 — a topic a test did not create on the target
                pass


def plan(ferry: Ferry, endpoint: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **({"AWS_ENDPOINT_URL": endpoint} if endpoint else {}))
    return subprocess.run(ferry.args("plan"), capture_output=True, text=True, timeout=300, env=env)


def test_a_plan_of_600_partitions_does_not_query_each_partition(tmp_path, topics):
    ferry = Ferry(*write_config(tmp_path, topics))
    # The first plan creates the target topics and the 600 cursors.
    first = plan(ferry)
    assert first.returncode == 0, first.stderr[-3000:]
    counter = moto_counter()
    try:
        before = counter.snapshot()
        second = plan(ferry, counter.url)
        assert second.returncode == 0, second.stderr[-3000:]
        calls = dynamo_counter.DynamoCounter.between(before, counter.snapshot())
    finally:
        counter.close()
    queries = calls["requests"].get("Query", 0)
    assert calls["unparsed"] == 0, calls
    # The listing of the flow's cursors (16 keys, a page each) and the
    # prune checks of this plan's share of the partitions, not more.
    assert 0 < queries <= PRUNE_PARTITIONS_PER_PLAN + 32, \
        f"one plan of {PARTITIONS} partitions made {queries} Queries: {calls['requests']}"
    gets = calls["requests"].get("GetItem", 0)
    assert gets < PARTITIONS // 4, f"one plan of {PARTITIONS} partitions made {gets} GetItems: {calls['requests']}"


def test_a_group_on_600_partitions_syncs_within_the_functions_timeout_at_dynamodbs_latency(tmp_path, topics):
    group = unique("wide-group")
    ferry = Ferry(*write_config(tmp_path, topics, groups=[group]))
    p = producer(SOURCE)
    for t in topics:
        for part in range(PARTITIONS_EACH):
            p.produce(t, partition=part, key=b"k", value=b"v")
    assert p.flush(60) == 0
    # Plan, Replicate and a first sync: every record copied, the group
    # has no commit yet. The Replicates set up their 600 partitions at once
    # in this one process, each with its lease, producer record and look at
    # the offset map: unbounded, that was one connection a partition and
    # hundreds of calls waiting on the store at once (moto, one at a time,
    # left the last past the SDK's timeout, and the run retried round after
    # round, 400 s instead of 30).
    counter = moto_counter()
    try:
        done = ferry.run("--once", env={"AWS_ENDPOINT_URL": counter.url})
        most = counter.snapshot()["most_outstanding"]
    finally:
        counter.close()
    assert done.returncode == 0, done.stderr[-3000:]
    assert 0 < most <= CALLS_IN_FLIGHT, f"{most} DynamoDB calls were under way at once, more than {CALLS_IN_FLIGHT}"
    # The group consumed everything: each partition's commit moved since
    # the last sync, so each needs its translation looked up.
    c = Consumer({"bootstrap.servers": SOURCE, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(t, part, 1) for t in topics for part in range(PARTITIONS_EACH)], asynchronous=False)
    finally:
        c.close()

    counter = moto_counter(CALL_DELAY_S)
    fn = WarmFunction(SYNC_GROUPS, ferry, tmp_path / "sync.log", {"AWS_ENDPOINT_URL": counter.url})
    try:
        before = counter.snapshot()
        try:
            kind, out, seconds = fn.invoke({}, timeout_s=SYNC_TIMEOUT_S)
        except queue.Empty:
            pytest.fail(f"SyncGroups gave no answer within {SYNC_TIMEOUT_S + 30:.0f} s, its {SYNC_TIMEOUT_S:.0f} s timeout "
                        f"long past, at {CALL_DELAY_S * 1000:.0f} ms a DynamoDB call: {fn.text()[-2000:]}")
        calls = dynamo_counter.DynamoCounter.between(before, counter.snapshot())
    finally:
        fn.close()
        counter.close()
    print(f"SyncGroups of {PARTITIONS} partitions: {seconds:.1f} s at {CALL_DELAY_S * 1000:.0f} ms a call, {calls['requests']}")
    assert kind == "response", (out, fn.text()[-3000:])
    # Lambda stops the function at its timeout: a sync that takes longer
    # never records what it did.
    assert seconds <= SYNC_TIMEOUT_S, \
        f"the sync took {seconds:.1f} s, past the {SYNC_TIMEOUT_S:.0f} s timeout, at {CALL_DELAY_S * 1000:.0f} ms a call: {calls['requests']}"
    flow = out["flows"][0]
    assert (flow["committed"], flow["deferred"], flow["failures"]) == (PARTITIONS, 0, []), flow
    on_target = committed(TARGET, group)
    assert len(on_target) == PARTITIONS and {o for o, _ in on_target.values()} == {1}, on_target
    # The translations were looked up (the proxy saw them), not skipped.
    assert calls["requests"].get("Query", 0) >= PARTITIONS, calls["requests"]
