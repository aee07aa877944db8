"""End-to-end latency, part 5 of bench/throughput.py: a steady producer
into a new source topic while the replicator runs continuously, a consumer
on the target taking receive time minus the record's CreateTime; Ferry's
run also shows the cost model its traffic (`ferry plan --dry-run`).
"""

import json
import math
import multiprocessing
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import OffsetSpec

from dynamo_counter import DynamoCounter
from throughput_common import (
    COMPRESSION, GLIBC_TUNABLES, HEADERS, LATENCY_MBPS, LATENCY_SECONDS, MM2, PARTITIONS, RECORD_BYTES, SOURCE,
    TARGET, VALUE_BYTES, admin, create_topic, delete_topics, end_offsets_sum, ferry_args, mb, proc_usage, say,
    wait_for_topic, write_config)


def steady_producer(topic: str, mbps: float, seconds: float, result: str) -> None:
    """Writes records at a steady rate (CreateTime = when produce() is called)."""
    rate = mbps * 1e6 / RECORD_BYTES
    values = [os.urandom(VALUE_BYTES) for _ in range(64)]
    p = Producer({"bootstrap.servers": SOURCE, "linger.ms": 5, "acks": "all", "compression.type": COMPRESSION})
    sent = 0
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            p.produce(topic, values[sent % 64], f"{sent:016d}".encode(), partition=sent % PARTITIONS, headers=HEADERS)
            sent += 1
        p.poll(0)
        time.sleep(0.005)
    p.flush(60)
    Path(result).write_text(json.dumps({"records": sent, "seconds": time.monotonic() - t0}))


def latency_consumer(topic: str, start: list[int], ready, stop, result: str) -> None:
    """Reads the target copy from `start`; latency = receive time - CreateTime."""
    c = Consumer({"bootstrap.servers": TARGET, "group.id": f"latency-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(topic, p, o) for p, o in enumerate(start)])
    ready.set()
    lat: list[tuple[int, int]] = []  # (CreateTime, latency) in ms
    quiet_since = None
    while True:
        msgs = c.consume(1000, 0.2)
        now_ms = time.time() * 1000
        for m in msgs:
            if m.error() is None:
                lat.append((m.timestamp()[1], int(now_ms - m.timestamp()[1])))
        if msgs:
            quiet_since = None
        elif stop.is_set():
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 2:
                break
    c.close()
    Path(result).write_text(json.dumps(lat))


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return float(sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))])


def warm_up(topic: str, label: str, timeout_s: float = 180) -> list[int]:
    """One record per partition, waited for on the target: the measurement
    starts once the replicator really replicates (start-up is measured by
    the bulk copy), and from the target offsets this returns."""
    p = Producer({"bootstrap.servers": SOURCE})
    for i in range(PARTITIONS):
        p.produce(topic, b"warm-up", partition=i)
    p.flush(30)
    a = admin(TARGET)
    t0 = time.monotonic()
    while end_offsets_sum(a, topic) < PARTITIONS:
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"{label}: warm-up records not on the target after {timeout_s:.0f} s")
        time.sleep(0.1)
    say(f"{label}: replicating {topic} ({time.monotonic() - t0:.1f} s for the warm-up records)")
    res = a.list_offsets({TopicPartition(topic, i): OffsetSpec.latest() for i in range(PARTITIONS)}, request_timeout=10)
    return [res[TopicPartition(topic, i)].result().offset for i in range(PARTITIONS)]


def measure_latency(topic: str, pid: int, work: Path, label: str, during=None,
                    counter: DynamoCounter | None = None) -> tuple[dict, dict | None]:
    """Steady producer and a target consumer, each in its own process (the
    GIL would otherwise add to the latency); `during` runs meanwhile."""
    start = warm_up(topic, label)
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    pres, cres = work / f"{label}-producer.json", work / f"{label}-latencies.json"
    consumer = ctx.Process(target=latency_consumer, args=(topic, start, ready, stop, str(cres)))
    consumer.start()
    ready.wait(60)
    time.sleep(2)
    cpu0, _ = proc_usage(pid)
    writes0, t0 = counter.snapshot() if counter else None, time.monotonic()
    producer = ctx.Process(target=steady_producer, args=(topic, LATENCY_MBPS, LATENCY_SECONDS, str(pres)))
    say(f"{label}: producing {LATENCY_MBPS} MB/s into {topic} for {LATENCY_SECONDS:.0f} s")
    producer.start()
    extra = during() if during else None
    producer.join()
    produced = json.loads(pres.read_text())
    # Records still on their way: wait until the target has them all.
    a = admin(TARGET)
    deadline = time.monotonic() + 120
    while end_offsets_sum(a, topic) < produced["records"] + sum(start) and time.monotonic() < deadline:
        time.sleep(0.2)
    cpu1, hwm = proc_usage(pid)
    window_s = time.monotonic() - t0
    writes = DynamoCounter.between(writes0, counter.snapshot()) if counter else None
    stop.set()
    consumer.join(180)
    pairs = json.loads(cres.read_text())
    lat = sorted(x for _, x in pairs)
    # The worst latency of each 10 s of produce time: shows stalls (a Ferry
    # round boundary, a rebalance) that a percentile hides.
    first = min((t for t, _ in pairs), default=0)
    worst: dict[int, int] = {}
    for t, x in pairs:
        k = int((t - first) // 10_000)
        worst[k] = max(worst.get(k, 0), x)
    gb = produced["records"] * RECORD_BYTES / 1e9
    res = {
        "records_produced": produced["records"],
        "records_received": len(lat),
        "produce_mb_per_s": round(mb(produced["records"] * RECORD_BYTES) / produced["seconds"], 2),
        "p50_ms": percentile(lat, 0.50),
        "p90_ms": percentile(lat, 0.90),
        "p99_ms": percentile(lat, 0.99),
        "max_ms": float(lat[-1]) if lat else float("nan"),
        "max_ms_per_10_s": [worst[k] for k in sorted(worst)],
        "cpu_s": round(cpu1 - cpu0, 2),
        "cpu_s_per_gb": round((cpu1 - cpu0) / gb, 2),
        "peak_rss_mb": round(hwm, 1),
        "window_s": round(window_s, 1),
    }
    if writes:
        res.update({"dynamodb": writes, "state_writes_per_gb": round(writes["write_requests"] / gb, 1),
                    "state_write_items_per_gb": round(
                        sum(v for k, v in writes["items"].items() if k != "condition_check") / gb, 1),
                    "write_units_per_second": round(writes["write_units"] / window_s, 1)})
    say(f"{label}: p50 {res['p50_ms']:.0f} ms, p99 {res['p99_ms']:.0f} ms, max {res['max_ms']:.0f} ms "
        f"({len(lat)} of {produced['records']} records)")
    return res, extra


def ferry_latency(work: Path, counter: DynamoCounter, bulk_records_per_s: float | None) -> tuple[dict, dict]:
    topic = f"lat-ferry-{uuid.uuid4().hex[:8]}"
    create_topic(SOURCE, topic)
    sub = work / "ferry-latency"
    sub.mkdir()
    kc, ri = write_config(sub, [topic], compression=COMPRESSION.upper())
    name = f"bench-{uuid.uuid4().hex[:8]}"
    log = sub / "ferry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(ferry_args("run", kc, ri, name, "--max-partitions-per-batch", str(PARTITIONS)),
                                stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, AWS_ENDPOINT_URL=counter.url,
                                                                             GLIBC_TUNABLES=GLIBC_TUNABLES))
    try:
        wait_for_topic(TARGET, topic)

        def dry_run() -> dict:
            # The project's cost model, watching the steady producer's traffic.
            time.sleep(min(10, LATENCY_SECONDS / 4))
            observe = max(5, int(LATENCY_SECONDS / 3))
            args = ferry_args("plan", kc, ri, name, "--dry-run", "--json", "--observe-seconds", str(observe),
                              "--max-partitions-per-batch", str(PARTITIONS))
            if bulk_records_per_s:
                args += ["--replicate-records-per-second", str(round(bulk_records_per_s))]
            p = subprocess.run(args, capture_output=True, text=True, timeout=300)
            if p.returncode != 0:
                say(f"ferry plan --dry-run failed: {p.stderr[-1000:]}")
                return {}
            return {"args": args[1:], "output": json.loads(p.stdout)}

        res, dry = measure_latency(topic, proc.pid, sub, "Ferry", during=dry_run, counter=counter)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    rounds = [line for line in log.read_text().splitlines() if "records this round" in line]
    res.update({"exit_code": code, "name": name, "rounds": len(rounds), "round_lines": rounds,
                "flags": "ferry run --max-partitions-per-batch 12 (default --round-seconds 60)",
                "topic": topic})
    delete_topics(SOURCE, [topic])
    delete_topics(TARGET, [topic])
    return res, dry


def mm2_latency(work: Path) -> dict:
    topic = f"lat-mm2-{uuid.uuid4().hex[:8]}"
    create_topic(SOURCE, topic)
    mm2 = MM2(work, [topic])
    mm2.start()
    try:
        mm2.wait_replicating()
        wait_for_topic(TARGET, topic)
        res, _ = measure_latency(topic, mm2.proc.pid, work, "MirrorMaker 2")
    finally:
        mm2.stop()
    delete_topics(SOURCE, [topic])
    delete_topics(TARGET, [topic])
    res["topic"] = topic
    return res
