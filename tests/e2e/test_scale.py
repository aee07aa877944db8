"""One plan handles 500 topics with 2,000 partitions within a Lambda's
limits (900 s, the function's 512 MB), creating every target topic and
cursor, and balances its batches by lag."""

import json
import re
import subprocess
import time

from confluent_kafka.admin import AdminClient, NewTopic

from conftest import SOURCE, TARGET, Ferry, list_topics, producer, unique, write_config

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
        check_plan(ferry, names)
    finally:
        # 4,000 partitions left behind would slow every later test.
        for bootstrap in (SOURCE, TARGET):
            a = AdminClient({"bootstrap.servers": bootstrap})
            for f in a.delete_topics([n for n in names if n in list_topics(bootstrap)], operation_timeout=60).values():
                f.result(timeout=120)


def check_plan(ferry: Ferry, names: list[str]) -> None:
    t0 = time.monotonic()
    res = subprocess.run(["/usr/bin/time", "-f", "peak_kb=%M", *ferry.args("plan", "--json")], capture_output=True, text=True, timeout=900)
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, res.stderr[-3000:]
    peak_mb = int(re.search(r"peak_kb=(\d+)", res.stderr).group(1)) / 1024
    plan = json.loads(res.stdout)
    print(f"\nplan of {TOPICS} topics / {TOPICS * PARTITIONS} partitions: {elapsed:.1f} s, peak RSS {peak_mb:.0f} MB, "
          f"{len(plan['batches'])} batches")
    assert elapsed < 900, "beyond the Lambda limit"
    assert peak_mb < 512, "beyond the function's memory"
    # What the Plan function hands Step Functions (compact JSON) must fit
    # in one state: 256 KiB, or the execution fails with DataLimitExceeded.
    size = len(json.dumps(plan, separators=(",", ":")).encode())
    print(f"plan output: {size} bytes")
    assert size < 256 * 1024, f"the plan's output is {size} bytes, past Step Functions' 256 KiB"
    # Each batch lists its partitions grouped by topic: [partition, end offset, lag].
    batches = [[(t["topic"], *w) for t in b["partitions"] for w in t["partitions"]] for b in plan["batches"]]
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
