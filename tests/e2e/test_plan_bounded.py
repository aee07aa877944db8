"""A plan's calls to DynamoDB do not grow one per partition.

Every scheduled execution starts with a plan, under the Plan function's
120 s timeout. A plan that looked at each partition's offset-map runs, one
Query after another, made as many Queries as the flow has partitions: at
2,000 partitions on the local stack every plan timed out (bench/scale,
2026-12-05), and at 10,000 on DynamoDB it would spend most of its timeout
there. Here the calls of one plan are counted on the wire, between the real
`ferry plan` and moto, for a flow of 600 partitions.
"""

import importlib.util
import os
import subprocess
from urllib.parse import urlparse

from confluent_kafka.admin import AdminClient

from conftest import ROOT, SOURCE, TARGET, Ferry, create_topic, unique, write_config

_spec = importlib.util.spec_from_file_location("dynamo_counter", ROOT / "bench" / "dynamo_counter.py")
dynamo_counter = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dynamo_counter)

TOPICS = 30
PARTITIONS_EACH = 20
# ferry_core::plan::PRUNE_PARTITIONS_PER_PLAN
PRUNE_PARTITIONS_PER_PLAN = 256


def plan(ferry: Ferry, endpoint: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **({"AWS_ENDPOINT_URL": endpoint} if endpoint else {}))
    return subprocess.run(ferry.args("plan"), capture_output=True, text=True, timeout=300, env=env)


def test_a_plan_of_600_partitions_does_not_query_each_partition(tmp_path):
    prefix = unique("planbound")
    topics = [f"{prefix}-{i:02d}" for i in range(TOPICS)]
    for t in topics:
        create_topic(SOURCE, t, PARTITIONS_EACH)
    try:
        kc, ri = write_config(tmp_path, topics)
        ferry = Ferry(kc, ri)
        # The first plan creates the target topics and the 600 cursors.
        first = plan(ferry)
        assert first.returncode == 0, first.stderr[-3000:]

        moto = urlparse(os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"))
        counter = dynamo_counter.DynamoCounter(moto.hostname, moto.port)
        try:
            before = counter.snapshot()
            second = plan(ferry, counter.url)
            assert second.returncode == 0, second.stderr[-3000:]
            calls = dynamo_counter.DynamoCounter.between(before, counter.snapshot())
        finally:
            counter.close()
        partitions = TOPICS * PARTITIONS_EACH
        queries = calls["requests"].get("Query", 0)
        assert calls["unparsed"] == 0, calls
        # The listing of the flow's cursors (16 keys, a page each) and the
        # prune checks of this plan's share of the partitions, not more.
        assert 0 < queries <= PRUNE_PARTITIONS_PER_PLAN + 32, \
            f"one plan of {partitions} partitions made {queries} Queries: {calls['requests']}"
        gets = calls["requests"].get("GetItem", 0)
        assert gets < partitions // 4, f"one plan of {partitions} partitions made {gets} GetItems: {calls['requests']}"
    finally:
        for bootstrap in (SOURCE, TARGET):
            admin = AdminClient({"bootstrap.servers": bootstrap})
            for f in admin.delete_topics(topics, operation_timeout=30).values():
                try:
                    f.result(timeout=60)
                except Exception:  # noqa: BLE001 — a topic the plan did not create on the target
                    pass
