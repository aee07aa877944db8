"""The producers table's prune at scale (a benchmark, not a test).

Every Replicate invocation of a flow with IDENTICAL topic names adds one
item to the producers table: its producer id, and the offset past its last
record in each of the (up to 64) target partitions of its batch. The Plan
prunes them (functions/engine/src/plan/producers.rs): up to 64 pages of
500 items (a page stops at 1 MB) within 15 s a flow, noting items whose
every partition's log start has passed their end, deleting the noted ones
a grace (15 minutes) later. This measures how many items one plan gets
through and what that costs.

TOPICS topics of PARTITIONS partitions are created on the local target
cluster (none on the source: the plan's own topic work stays out of the
measure) and take RECORDS records each. The flow's partitions are cut into
batches of 64, as the plan cuts them, and ITEMS producer items are written
straight into the flow's producers table, each exactly as a Replicate
leaves it (`register_producer`, then `record_producer_ends`), taking the
batches in turn: the n-th item of a batch ends where 1/n of the records
are. DeleteRecords then moves every partition's log start past the ends of
the oldest PASSED share of the items; the oldest NOTED share were noted
as passed an hour ago, so their grace is over (the state a plan finds a
steady table in: noted, passed but not yet noted, live).

Then `ferry plan` (the Plan handler, with no deadline: the 15 s budget
bounds the prune) runs PLANS times, its DynamoDB calls through
bench/dynamo_counter.py. Per plan: the items the prune's Query read, its
pages, the items noted and deleted (the plan's log line), its seconds, the
producers table's response bytes and read units. Kafka's calls are not
counted on the wire: per page the prune makes one Metadata and one
ListOffsets request a target broker (two when items without ends are
found), which is what the code does.

Writes bench/results/prune-<date>.json and prints it, with the model at
MODEL_PARTITIONS partitions (see `model`).
"""

import json
import math
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

from confluent_kafka import Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from dynamo_counter import DynamoCounter  # noqa: E402

from conftest import SOURCE, TARGET, dynamo, unique, write_config  # noqa: E402

TOPICS = int(os.environ.get("TOPICS", "100"))
PARTITIONS = int(os.environ.get("PARTITIONS", "20"))
RECORDS = int(os.environ.get("RECORDS", "100"))  # a partition
ITEMS = int(os.environ.get("ITEMS", "20000"))
PASSED = float(os.environ.get("PASSED", "0.2"))  # share of items whose records are all gone
NOTED = float(os.environ.get("NOTED", "0.1"))  # share of items noted an hour ago (deleted on sight)
PLANS = int(os.environ.get("PLANS", "6"))
BATCH = 64  # the plan's cap on partitions a Replicate batch
# The model: partitions in one flow, minutes between executions, days the
# target keeps records, and DynamoDB's on-demand price of a million read
# request units (US East (N. Virginia), from 1 November 2024).
MODEL_PARTITIONS = int(os.environ.get("MODEL_PARTITIONS", "10000"))
MODEL_SCHEDULE_MINUTES = float(os.environ.get("MODEL_SCHEDULE_MINUTES", "1"))
MODEL_RETENTION_DAYS = float(os.environ.get("MODEL_RETENTION_DAYS", "7"))
RRU_USD_PER_MILLION = float(os.environ.get("RRU_USD_PER_MILLION", "0.125"))
WRU_USD_PER_MILLION = float(os.environ.get("WRU_USD_PER_MILLION", "0.625"))
STORAGE_USD_PER_GB_MONTH = float(os.environ.get("STORAGE_USD_PER_GB_MONTH", "0.25"))
# A 1 MB Query page's latency in DynamoDB (an assumption, not measured here).
DYNAMODB_PAGE_SECONDS = float(os.environ.get("DYNAMODB_PAGE_SECONDS", "0.15"))

FERRY = Path(os.environ.get("FERRY_BIN", ROOT / "target" / "debug" / "ferry"))


def ddb_size(value: dict) -> int:
    """An attribute value's size as DynamoDB counts it: strings by their
    UTF-8 bytes, numbers about one byte for two digits plus one, a list or
    map 3 bytes plus 1 an element and its elements (and a map's keys)."""
    (kind, v), = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        return math.ceil(len(v.lstrip("-").replace(".", "")) / 2) + 1
    if kind == "L":
        return 3 + sum(1 + ddb_size(e) for e in v)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + ddb_size(e) for k, e in v.items())
    raise ValueError(kind)


def item_size(item: dict) -> int:
    return sum(len(k.encode()) + ddb_size(v) for k, v in item.items())


def cluster_id(bootstrap: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return admin.describe_cluster().result(timeout=30).cluster_id


def items_for(stem_flow: str, target_id: str, source_id: str, batches: list[list[tuple[str, int]]]) -> list[dict]:
    """ITEMS producer items as a Replicate leaves them, oldest (lowest
    producer id) first, the batches in turn; each with its rank in its batch."""
    now = int(time.time() * 1000)
    per_batch = math.ceil(ITEMS / len(batches))
    out = []
    for i in range(ITEMS):
        tps, rank = batches[i % len(batches)], i // len(batches)
        end = math.ceil((rank + 1) * RECORDS / per_batch)
        registered = now - (ITEMS - i) * 60_000 // 157  # spread as a 1-minute schedule's would be
        item = {
            "cluster": {"S": target_id},
            "producer_id": {"N": str(1_000_000 + i)},
            "flow": {"S": stem_flow},
            "origin_cluster": {"S": source_id},
            "registered_ms": {"N": str(registered)},
            "partitions": {"L": [{"S": f"{t}/{p}"} for t, p in tps]},
            "writes_until_ms": {"N": str(registered + 300_000)},
            "ends": {"M": {f"{t}/{p}": {"N": str(end)} for t, p in tps}},
            "released_ms": {"N": str(registered + 290_000)},
        }
        out.append(item)
    return out


def write_items(table: str, items: list[dict]) -> None:
    db = dynamo()
    for i in range(0, len(items), 25):
        pending = [{"PutRequest": {"Item": it}} for it in items[i:i + 25]]
        while pending:
            left = db.batch_write_item(RequestItems={table: pending}).get("UnprocessedItems", {})
            pending = left.get(table, [])


def present(table: str) -> list[int]:
    """The producer ids in the table, in key order."""
    db, out, start = dynamo(), [], None
    while True:
        page = db.scan(TableName=table, ProjectionExpression="producer_id",
                       **({"ExclusiveStartKey": start} if start else {}))
        out += [int(i["producer_id"]["N"]) for i in page["Items"]]
        start = page.get("LastEvaluatedKey")
        if not start:
            return sorted(out)


def read_units(order: list[int], sizes: dict[int, int], after: int | None, n: int) -> float:
    """The read units of a Query's pages (eventually consistent: half a
    unit per 4 KB of a page's items, summed and rounded up) that read the
    first n of `order` past `after`, in pages of up to 500 items and 1 MB."""
    read = [pid for pid in order if after is None or pid > after][:n]
    units, page, size = 0.0, 0, 0
    for pid in read:
        if page == 500 or size + sizes[pid] > 1_000_000:
            units += math.ceil(size / 4096) / 2
            page, size = 0, 0
        page, size = page + 1, size + sizes[pid]
    return units + math.ceil(size / 4096) / 2


def pruned_after(prefix: str, flow: str) -> int | None:
    item = dynamo().get_item(TableName=f"{prefix}-cursors", ConsistentRead=True,
                             Key={"flow": {"S": flow}, "partition": {"S": "#flow"}}).get("Item", {})
    return int(item["producers_pruned_after"]["N"]) if "producers_pruned_after" in item else None


PRUNED_LINE = re.compile(r"ended=(\d+) passed=(\d+) deleted=(\d+)")


def plan(args: list[str], env: dict) -> tuple[float, dict, str]:
    t = time.monotonic()
    p = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    took = time.monotonic() - t
    assert p.returncode == 0, p.stderr[-3000:]
    found = PRUNED_LINE.search(p.stderr + p.stdout)
    counts = dict(zip(("ended", "noted", "deleted"), map(int, found.groups()))) if found else {"ended": 0, "noted": 0, "deleted": 0}
    counts["stopped_by_time"] = "this plan's time for them is up" in p.stderr + p.stdout
    return took, counts, p.stderr


def model(per_plan: list[dict], mean_item_bytes: float, partitions: int) -> dict:
    """The prune at MODEL_PARTITIONS partitions on a MODEL_SCHEDULE_MINUTES
    schedule with MODEL_RETENTION_DAYS of retention, from the measured
    plans: items a plan looks at, against twice the items a schedule
    period adds (each item needs two looks: noted, then deleted); a full
    pass over the live items; the prune's read units a month. Twice: at
    the speed measured here (moto answers a 1 MB page far slower than
    DynamoDB), and with DYNAMODB_PAGE_SECONDS a page for the Query plus
    the Kafka and Ferry time measured here, scaled to the partitions a
    page names at MODEL_PARTITIONS."""
    full = [p for p in per_plan if p["items_read"]]
    pages = sum(p["pages"] for p in full)
    items_per_page = sum(p["items_read"] for p in full) / pages
    rru_per_page = sum(p["read_units"] for p in full) / pages
    added = math.ceil(MODEL_PARTITIONS / BATCH)
    periods_per_day = 24 * 60 / MODEL_SCHEDULE_MINUTES
    live = added * periods_per_day * MODEL_RETENTION_DAYS
    plans_per_month = periods_per_day * 30.4
    # A page names the partitions of its items' batches: all of them here,
    # up to items_per_page batches of 64 at MODEL_PARTITIONS.
    page_partitions_here = min(partitions, items_per_page * BATCH)
    page_partitions_there = min(MODEL_PARTITIONS, items_per_page * BATCH)
    other = sum(p["other_seconds_per_page"] * p["pages"] for p in full) / pages

    def at(seconds_per_page: float) -> dict:
        pages_per_plan = min(64, 15 / seconds_per_page)
        looks = pages_per_plan * items_per_page
        pass_minutes = min(live, MODEL_RETENTION_DAYS * 1e9) / looks * MODEL_SCHEDULE_MINUTES
        rru = plans_per_month * pages_per_plan * rru_per_page
        return {
            "seconds_per_page": round(seconds_per_page, 3),
            "pages_per_plan": round(pages_per_plan, 1),
            "items_looked_at_per_plan": round(looks),
            "keeps_up": looks > 2 * added,
            "full_pass_minutes": round(pass_minutes),
            "read_units_per_month": round(rru),
            "read_usd_per_month": round(rru * RRU_USD_PER_MILLION / 1e6, 2),
            "kafka_partition_offsets_asked_per_minute": round(pages_per_plan * page_partitions_there / MODEL_SCHEDULE_MINUTES),
        }

    measured = sum(p["prune_seconds_est"] for p in full) / pages
    dynamo_speed = DYNAMODB_PAGE_SECONDS + other * page_partitions_there / page_partitions_here
    # Write units: items of mean_item_bytes, a unit a KB of the larger of
    # the item before and after: Replicate's put (no ends yet: about half
    # the item) and its update (ends), the prune's note and its delete.
    item_kb = math.ceil(mean_item_bytes / 1024)
    wru_per_item = math.ceil(mean_item_bytes / 2 / 1024) + 3 * item_kb
    items_month = added * plans_per_month
    return {
        "partitions": MODEL_PARTITIONS,
        "schedule_minutes": MODEL_SCHEDULE_MINUTES,
        "retention_days": MODEL_RETENTION_DAYS,
        "items_added_per_plan": added,
        "looks_needed_per_plan": 2 * added,
        "live_items": round(live),
        "live_items_gb": round(live * mean_item_bytes / 1e9, 2),
        "items_per_page": round(items_per_page, 1),
        "read_units_per_page": round(rru_per_page, 1),
        "at_the_speed_measured_here": at(measured),
        "at_dynamodb_speed": {"assumed_query_seconds_per_page": DYNAMODB_PAGE_SECONDS, **at(dynamo_speed)},
        "needed_only": {
            "pages_per_plan": round(2 * added / items_per_page, 2),
            "read_usd_per_month": round(plans_per_month * 2 * added / items_per_page * rru_per_page
                                        * RRU_USD_PER_MILLION / 1e6, 2),
        },
        "write_units_per_item": wru_per_item,
        "write_usd_per_month": round(items_month * wru_per_item * WRU_USD_PER_MILLION / 1e6, 2),
        "storage_usd_per_month": round(live * mean_item_bytes / 1e9 * STORAGE_USD_PER_GB_MONTH, 2),
        "price": f"${RRU_USD_PER_MILLION} per million read request units, ${WRU_USD_PER_MILLION} per million write "
                 f"request units, ${STORAGE_USD_PER_GB_MONTH} per GB-month: DynamoDB on-demand, Standard table class, "
                 "US East (N. Virginia), from 1 November 2024 (aws.amazon.com/dynamodb/pricing/on-demand); "
                 "eventually consistent reads, half a unit per 4 KB",
    }


def main() -> None:
    stem = unique("prune")
    name, prefix = stem, stem
    flow = f"{name}/source>target"
    topics = [f"{stem}-orders-{i:03d}" for i in range(TOPICS)]
    admin = AdminClient({"bootstrap.servers": TARGET})
    work = ROOT / ".cache" / "bench-prune" / stem
    work.mkdir(parents=True, exist_ok=True)
    # The flow copies topics that do not exist on the source: the plan's
    # topic work is nothing, its prune is all there is to time.
    kc, ri = write_config(work, [f"{stem}-absent"])
    moto = urlparse(os.environ["AWS_ENDPOINT_URL"])
    counter = DynamoCounter(moto.hostname, moto.port)
    args = [str(FERRY), "plan", "--kafka-clusters", str(kc), "--replication-info", str(ri), "--name", name,
            "--table-prefix", prefix]
    env = dict(os.environ, AWS_ENDPOINT_URL=counter.url, RUST_LOG="warn,ferry_engine=info")
    table = f"{prefix}-producers"
    try:
        for f in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics], operation_timeout=120).values():
            f.result(timeout=180)
        p = Producer({"bootstrap.servers": TARGET, "linger.ms": 20, "queue.buffering.max.messages": 1_000_000})
        for t in topics:
            for part in range(PARTITIONS):
                for _ in range(RECORDS):
                    p.produce(t, value=b"v", partition=part)
            p.poll(0)
        assert p.flush(120) == 0
        tps = [(t, part) for t in topics for part in range(PARTITIONS)]
        batches = [tps[i:i + BATCH] for i in range(0, len(tps), BATCH)]
        # The tables and the flow's marker; then a plan with no items: what
        # a plan takes besides the prune (the process, the clusters).
        plan(args, env)
        baseline = min(plan(args, env)[0] for _ in range(2))
        target_id, source_id = cluster_id(TARGET), cluster_id(SOURCE)
        items = items_for(flow, target_id, source_id, batches)
        start = math.floor(PASSED * RECORDS)
        passed = [it for it in items if all(int(e["N"]) <= start for e in it["ends"]["M"].values())]
        noted_n = min(len(passed), round(NOTED * ITEMS))
        hour_ago = str(int(time.time() * 1000) - 3_600_000)
        for it in passed[:noted_n]:
            it["passed_ms"] = {"N": hour_ago}
        t = time.monotonic()
        write_items(table, items)
        populate_s = time.monotonic() - t
        sizes = [item_size(it) for it in items]
        by_pid = {int(it["producer_id"]["N"]): size for it, size in zip(items, sizes)}
        res = admin.delete_records([TopicPartition(tp, part, start) for tp, part in tps], request_timeout=120)
        for f in (res.values() if isinstance(res, dict) else [res]):
            f.result(timeout=120)
        print(f"{len(tps)} partitions, {len(batches)} batches, {ITEMS} items ({len(passed)} passed, {noted_n} noted) "
              f"written in {populate_s:.0f} s; log start {start} of {RECORDS}", flush=True)

        per_plan = []
        for n in range(PLANS):
            cursor_before = pruned_after(prefix, flow)
            order = present(table)
            before = counter.snapshot()
            took, counts, log = plan(args, env)
            phase = DynamoCounter.between(before, counter.snapshot())
            key = f"Query {table}"
            pages = phase["table_requests"].get(key, 0)
            q_seconds = phase["table_seconds"].get(key, 0.0)
            row = {
                "plan": n + 1,
                "starts_after": cursor_before,
                "ends_after": pruned_after(prefix, flow),
                "items_before": len(order),
                "items_read": phase["read_items"].get(key, 0),
                "pages": pages,
                **counts,
                "seconds": round(took, 2),
                # Less what a plan of an empty table takes.
                "prune_seconds_est": round(max(0.0, took - baseline), 2),
                # The producers table's Query: moto's time, not DynamoDB's.
                "query_seconds": round(q_seconds, 2),
                "query_mean_ms": round(1000 * q_seconds / pages) if pages else None,
                # Wall time with a write under way (the notes and deletes, 16
                # at once, and the plan's own few writes).
                "write_seconds": phase["seconds_with_a_write_outstanding"],
                # The rest of the prune: Kafka's Metadata and ListOffsets,
                # Ferry's own work.
                "other_seconds_per_page": round(max(0.0, took - baseline - q_seconds
                                                    - phase["seconds_with_a_write_outstanding"]) / pages, 3)
                if pages else None,
                "producers_response_bytes": phase["response_bytes"].get(key, 0),
                "read_units": read_units(order, by_pid, cursor_before, phase["read_items"].get(key, 0)),
                "dynamodb_requests": phase["requests"],
                "dynamodb_write_units": phase["write_units"],
            }
            per_plan.append(row)
            print(json.dumps(row), flush=True)
        mean_bytes = sum(sizes) / len(sizes)
        result = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True).stdout.strip(),
            "machine": f"{os.cpu_count()} cores, shared with other tests; DynamoDB: moto {version('moto')}",
            "plan_seconds_without_items": round(baseline, 2),
            "ferry_build": "release" if "release" in FERRY.parts else "debug",
            "partitions": len(tps),
            "topics": TOPICS,
            "batches": len(batches),
            "items": ITEMS,
            "items_passed": len(passed),
            "items_noted_an_hour_ago": noted_n,
            "item_bytes_mean": round(mean_bytes),
            "item_bytes_max": max(sizes),
            "items_per_1mb_page": int(1_000_000 // mean_bytes),
            "populate_seconds": round(populate_s),
            "plans": per_plan,
            "items_left": len(present(table)),
            "model": model(per_plan, mean_bytes, len(tps)),
        }
        out = ROOT / "bench" / "results" / f"prune-{datetime.now(timezone.utc):%Y-%m-%d}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: v for k, v in result.items()}, indent=2))
        print(f"written to {out.relative_to(ROOT)}")
    finally:
        counter.close()
        for f in admin.delete_topics(topics, operation_timeout=120).values():
            try:
                f.result(timeout=180)
            except Exception as e:  # noqa: BLE001 — a topic never made
                print(f"delete {e}", file=sys.stderr)
        db = dynamo()
        for page in db.get_paginator("list_tables").paginate():
            for t in page["TableNames"]:
                if t.startswith(prefix + "-"):
                    db.delete_table(TableName=t)


if __name__ == "__main__":
    main()
