"""Scale through the real state machine (a benchmark, not a test).

TOPICS topics of PARTITIONS partitions on the local source cluster take a
steady load (RATE_MBPS of RECORD_BYTES records, each carrying its send
time); the real state machine (moto's Step Functions running
infra/statemachine/replicator.asl.json, the real function binaries behind a
local Lambda Runtime API, each under its template MemorySize as a memory
cap, the CPU share that buys, its Timeout, and IAM as deployed: see
tests/e2e/support/local_sfn.py) is started every SCHEDULE_SECONDS, as the
template's schedule starts it, for RUN_SECONDS. Each Replicate copies for
REPLICATE_SECONDS (`replicate_max_seconds`), so its batch passes to a
Replicate of a later execution several times during the run: the hand-offs.

A read_committed consumer on the target notes when each record arrives:
latency is arrival less send time, end to end, through every hand-off.
After the load stops, executions run until the target holds everything;
then every record sent is looked for: lost (never arrived) and duplicated
(arrived more than once). The DynamoDB calls the functions make are counted
on their way to moto (bench/dynamo_counter.py).

Writes bench/results/scale-<date>.json and prints it.
"""

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from dynamo_counter import DynamoCounter  # noqa: E402

from conftest import SOURCE, TARGET, unique, write_config  # noqa: E402
from support.local_sfn import LocalStepFunctions  # noqa: E402

TOPICS = int(os.environ.get("TOPICS", "200"))
PARTITIONS = int(os.environ.get("PARTITIONS", "10"))
RATE_MBPS = float(os.environ.get("RATE_MBPS", "5"))
RECORD_BYTES = int(os.environ.get("RECORD_BYTES", "1000"))
SCHEDULE_SECONDS = float(os.environ.get("SCHEDULE_SECONDS", "30"))
REPLICATE_SECONDS = int(os.environ.get("REPLICATE_SECONDS", "90"))
RUN_SECONDS = float(os.environ.get("RUN_SECONDS", "360"))
# The template's CheckpointSeconds (FERRY_CHECKPOINT_SECONDS on Replicate).
CHECKPOINT_SECONDS = int(os.environ.get("CHECKPOINT_SECONDS", "4"))
# Batches of at most 64 partitions (the plan's cap), all at once.
MAX_CONCURRENCY = int(os.environ.get("MAX_CONCURRENCY", str(math.ceil(TOPICS * PARTITIONS / 64))))


class Load:
    """The steady producer and the target's consumer."""

    def __init__(self, topics: list[str]):
        self.topics, self.stop, self.sent, self.arrived = topics, threading.Event(), 0, {}
        self.counts: Counter = Counter()
        self.done_consuming = threading.Event()
        self.producer_thread = threading.Thread(target=self._produce, daemon=True)
        self.consumer_thread = threading.Thread(target=self._consume, daemon=True)

    def start(self):
        self.consumer_thread.start()
        self.producer_thread.start()

    def _produce(self):
        p = Producer({"bootstrap.servers": SOURCE, "linger.ms": 5, "queue.buffering.max.messages": 1_000_000,
                      "compression.type": "none"})
        per_s = RATE_MBPS * 1e6 / RECORD_BYTES
        pad = b"x" * max(0, RECORD_BYTES - 40)
        start, n, slots = time.time(), 0, len(self.topics) * PARTITIONS
        while not self.stop.is_set():
            due = int((time.time() - start) * per_s)
            while n < due:
                slot = n % slots
                p.produce(self.topics[slot % len(self.topics)], key=str(n).encode(),
                          value=repr(time.time()).encode() + b" " + pad, partition=slot // len(self.topics))
                n += 1
                if n % 1000 == 0:
                    p.poll(0)
            self.sent = n
            time.sleep(0.005)
        assert p.flush(60) == 0
        self.sent = n

    def _consume(self):
        c = Consumer({"bootstrap.servers": TARGET, "group.id": unique("scale-reader"), "isolation.level": "read_committed",
                      "fetch.wait.max.ms": 100, "enable.auto.commit": False})
        c.assign([TopicPartition(t, p, 0) for t in self.topics for p in range(PARTITIONS)])
        try:
            while not self.done_consuming.is_set():
                for m in c.consume(1000, 0.2):
                    if m.error():
                        continue
                    now = time.time()
                    k = m.key()
                    self.counts[k] += 1
                    if k not in self.arrived:
                        self.arrived[k] = (float(m.value().split(b" ", 1)[0]), now)
        finally:
            c.close()


FERRY = Path(os.environ.get("FERRY_BIN", ROOT / "target" / "debug" / "ferry"))


def model(partitions: int, mb_per_s: float, checkpoint_seconds: int = 4) -> dict:
    """The project's cost model (`ferry cost`) at the deployed schedule."""
    out = subprocess.run([str(FERRY), "cost", "--json", "--partitions", str(partitions), "--mb-per-s", str(mb_per_s),
                          "--checkpoint-seconds", str(checkpoint_seconds)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def cost_table() -> dict:
    """The model at 1,000 and 10,000 partitions and 1, 10 and 100 MB/s,
    beside MSK Replicator's list price when given (MSK_REPLICATOR_HOUR_USD
    per replicator-hour, MSK_REPLICATOR_GB_USD per GB replicated): these
    machines cannot read AWS's pricing page, so the figures are not made up
    here."""
    hour, gb = os.environ.get("MSK_REPLICATOR_HOUR_USD"), os.environ.get("MSK_REPLICATOR_GB_USD")
    rows = []
    for n in (1000, 10000):
        for r in (1, 10, 100):
            m = model(n, r)
            gb_month = r * 730 * 3600 / 1000
            msk = round(float(hour) * 730 + float(gb) * gb_month) if hour and gb else None
            rows.append({"partitions": n, "mb_per_s": r, "replicates": m["batches"], "ferry_usd_month": round(m["monthly"]["total_usd"]),
                         "lambda_usd": round(m["monthly"]["lambda_usd"]), "step_functions_usd": round(m["monthly"]["step_functions_usd"]),
                         "dynamodb_usd": round(m["monthly"]["dynamodb_usd"]), "gb_month": round(gb_month),
                         "ferry_usd_per_gb": round(m["monthly"]["total_usd"] / gb_month, 4), "msk_replicator_usd_month": msk})
    return {"rows": rows, "msk_replicator_prices": {"hour_usd": hour, "gb_usd": gb} if hour and gb else
            "not given: set MSK_REPLICATOR_HOUR_USD and MSK_REPLICATOR_GB_USD from the Amazon MSK pricing page",
            "assumptions": model(1000, 1)["monthly"]["assumptions"]}


def busiest_key(phase: dict, window: float) -> dict:
    """The partition key that took the most write units in the run, and
    its rate (units a second over the run's window)."""
    if not phase["key_units"]:
        return {}
    table_key, units = max(phase["key_units"].items(), key=lambda kv: kv[1])
    table, _, key = table_key.partition(" ")
    return {"table": table, "key": key, "write_units": units, "write_units_per_second": round(units / window, 1)}


def percentile(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main() -> None:
    stem = unique("scale")
    topics = [f"{stem}-{i:03d}" for i in range(TOPICS)]
    admin = AdminClient({"bootstrap.servers": SOURCE})
    for f in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics], operation_timeout=120).values():
        f.result(timeout=180)
    work = ROOT / ".cache" / "bench-scale" / stem
    work.mkdir(parents=True, exist_ok=True)
    kc, ri = write_config(work, [f"{stem}-[0-9]+"], starting="EARLIEST")
    env = {"FERRY_REPLICATOR_NAME": stem, "FERRY_KAFKA_CLUSTERS": kc.read_text(), "FERRY_REPLICATION_INFO": ri.read_text(),
           "FERRY_TABLE_PREFIX": stem}
    moto = urlparse(os.environ["AWS_ENDPOINT_URL"])
    counter = DynamoCounter(moto.hostname, moto.port)
    load = Load(topics)
    executions: list[dict] = []
    with LocalStepFunctions(env, work / "logs", replicate_instances=MAX_CONCURRENCY, max_concurrency=MAX_CONCURRENCY,
                            deployment={"moto_url": counter.url},
                            stack_edit=lambda s: s["functions"]["ferry-replicate"]["environment"].update(
                                FERRY_CHECKPOINT_SECONDS=str(CHECKPOINT_SECONDS))) as sfn:
        arn = sfn.create_state_machine()
        started: list[str] = []

        def start(payload: dict) -> str:
            ex = sfn.client.start_execution(stateMachineArn=arn, name=f"scale-{time.time_ns()}",
                                            input=json.dumps(payload))["executionArn"]
            started.append(ex)
            return ex

        # The first execution creates the target topics and cursors.
        first = sfn.execute(arn, {"stop_at_plan_end": True}, timeout=900)
        assert first["status"] == "SUCCEEDED", f"{first}\n{sfn.logs()}"
        executions.append(first)
        print(f"first execution (topics, cursors) done; {TOPICS * PARTITIONS} partitions", flush=True)
        load.start()
        t0 = time.time()
        before = counter.snapshot()
        while time.time() < t0 + RUN_SECONDS:
            start({"replicate_max_seconds": REPLICATE_SECONDS})
            print(f"t+{time.time() - t0:.0f} s: execution {len(started)} started; sent {load.sent}, "
                  f"arrived {len(load.arrived)}", flush=True)
            time.sleep(SCHEDULE_SECONDS)
        window = time.time() - t0
        after = counter.snapshot()
        load.stop.set()
        load.producer_thread.join(120)
        # Wait out the running executions, then drain what is left.
        for ex in started:
            while (d := sfn.client.describe_execution(executionArn=ex))["status"] == "RUNNING":
                time.sleep(2)
            executions.append(d)
        for _ in range(5):
            if len(load.arrived) >= load.sent:
                break
            executions.append(sfn.execute(arn, {"stop_at_plan_end": True}, timeout=900))
            time.sleep(5)
        deadline = time.time() + 60
        while len(load.arrived) < load.sent and time.time() < deadline:
            time.sleep(1)
        load.done_consuming.set()
        load.consumer_thread.join(30)
        resources = sfn.resources()
        replicate_log = sfn.function_log("ferry-replicate")
    counter.close()

    statuses = Counter(d["status"] for d in executions)
    outputs = [d.get("output") or "" for d in executions]
    # The hand-offs: a Replicate that waited for a holder about to stop.
    handoffs = replicate_log.count("waiting to take them over")
    warm = t0 + REPLICATE_SECONDS / 3  # the first execution's Replicates have started copying
    lat = sorted(arrived - sent for sent, arrived in load.arrived.values() if warm <= sent <= t0 + window - 5)
    # Per 5 s of send time: the worst latency (where a gap shows).
    buckets: dict[int, float] = {}
    for sent, arrived in load.arrived.values():
        b = int((sent - t0) // 5) * 5
        buckets[b] = max(buckets.get(b, 0.0), arrived - sent)
    phase = DynamoCounter.between(before, after)
    partitions = TOPICS * PARTITIONS
    replicate_invocations = sum(len(json.loads(o).get("batches", [])) for o in outputs if o)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
        "machine": f"{os.cpu_count()} cores",
        "partitions": partitions,
        "topics": TOPICS,
        "rate_mb_per_s": RATE_MBPS,
        "record_bytes": RECORD_BYTES,
        "schedule_seconds": SCHEDULE_SECONDS,
        "replicate_seconds": REPLICATE_SECONDS,
        "checkpoint_seconds": CHECKPOINT_SECONDS,
        "max_concurrency": MAX_CONCURRENCY,
        "run_seconds": round(window),
        "executions": dict(statuses),
        "handoffs": handoffs,
        "handoffs_per_batch": round(handoffs / max(1, MAX_CONCURRENCY), 2),
        "max_state_payload_bytes": max((len(o.encode()) for o in outputs), default=0),
        "replicate_invocations": replicate_invocations,
        "records_sent": load.sent,
        "latency_p50_ms": round(percentile(lat, 0.5) * 1000),
        "latency_p99_ms": round(percentile(lat, 0.99) * 1000),
        "latency_max_ms": round(lat[-1] * 1000) if lat else None,
        "latency_records": len(lat),
        "latency_max_ms_by_5s_of_send_time": {b: round(v * 1000) for b, v in sorted(buckets.items())},
        "dynamodb_write_requests": phase["write_requests"],
        "dynamodb_write_units": phase.get("write_units"),
        "dynamodb_writes_per_partition_hour": round(phase["write_requests"] / partitions / (window / 3600), 1),
        "dynamodb_write_units_per_partition_hour": round(phase["write_units"] / partitions / (window / 3600), 1),
        "checkpoints_per_partition_hour": round(phase["requests"].get("TransactWriteItems", 0) / partitions / (window / 3600), 1),
        # Items written (puts, updates, deletes, a transaction's condition
        # checks): the cursors a checkpoint moves are most of them.
        "dynamodb_items_written_per_partition_hour": round(sum(phase["items"].values()) / partitions / (window / 3600), 1),
        "dynamodb_requests": phase["requests"],
        # How long the state store took to answer (moto, one Python thread,
        # behind the counter and the rehearsal's IAM proxy): a slow store
        # stalls checkpoints and lease renewals, and shows in the latency.
        "dynamodb_mean_ms": phase["mean_ms"],
        "dynamodb_max_ms": phase["max_ms"],
        "dynamodb_seconds_with_a_write_outstanding": phase["seconds_with_a_write_outstanding"],
        # The model at the deployed schedule (1 minute, 300 s Replicates):
        # checkpoints every 4 s of a busy partition, lease writes per execution.
        "model_dynamodb_write_units_per_partition_hour": round(
            model(partitions, RATE_MBPS, CHECKPOINT_SECONDS)["dynamodb_write_units_per_partition_hour"], 1),
        "model_checkpoints_per_partition_hour": round(3600 / min(CHECKPOINT_SECONDS, 15)),
        # The busiest DynamoDB partition key (one key takes 1,000 write
        # units a second): measured here, and the model's at this size and
        # at 10,000 partitions in one flow, cursors spread over 16 keys.
        "dynamodb_busiest_key": busiest_key(phase, window),
        "dynamodb_keys_written": len(phase["key_units"]),
        "model_busiest_key_write_units_per_second": round(model(partitions, RATE_MBPS)["monthly"]["busiest_key_write_units_per_second"], 1),
        "model_busiest_key_write_units_per_second_at_10000": round(model(10000, RATE_MBPS * 10000 / partitions)["monthly"]["busiest_key_write_units_per_second"], 1),
        "records_lost": sum(1 for i in range(load.sent) if str(i).encode() not in load.counts),
        "records_duplicated": sum(n - 1 for n in load.counts.values() if n > 1),
        "cost": cost_table(),
        "functions": resources,
    }
    tag = os.environ.get("RESULT_TAG", "")
    out = ROOT / "bench" / "results" / f"scale-{datetime.now(timezone.utc):%Y-%m-%d}{'-' + tag if tag else ''}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "functions"}, indent=2))
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
