"""Benchmark (not a test), issue #9: how fast Ferry replicates next to what
this machine can do at all and next to MirrorMaker 2, on the same data, in
one run, so that the numbers can be compared with each other.

1. Load the source: BENCH_GB (default 2) GB of 1 KiB values, each with a
   16-byte key and three headers, into 12 partitions (librdkafka; Kafka's
   producer performance tool cannot write headers).
2. The limit: Kafka's consumer performance tool reading that topic from the
   source, and its producer performance tool writing as many records of the
   same size to the target with acks=all; no compression anywhere. The
   lower of the two is the limit.
3. Ferry: the release `ferry run --once --max-partitions-per-batch 12
   --round-seconds 300` (the Replicate handler the Lambda runs, one batch of
   12 partitions, rounds as long as the function's Timeout, its real
   DynamoDB state in moto, reached through a proxy that counts the calls).
4. MirrorMaker 2 (connect-mirror of the brokers' Kafka release, dedicated
   mode) replicating the same topic into a fresh target topic
   (IdentityReplicationPolicy; Ferry's copy is deleted first).
5. End-to-end latency: a producer writing BENCH_LATENCY_MBPS (default 5) MB/s
   for BENCH_LATENCY_SECONDS (default 60) into a new source topic while the
   replicator runs continuously (`ferry run`, default rounds of 60 s; MM2 as
   it is); a consumer on the target takes receive time minus the record's
   CreateTime.
6. CPU seconds per GB and peak memory of each replicator's process, Ferry's
   DynamoDB writes per GB, and the cost per GB from the project's own cost
   model (`ferry plan --dry-run` watching the steady producer).

Throughput is record bytes (key + value + header names and values) over
wall time from starting the replicator's process until the target's end
offsets add up to the records loaded: start-up (a JVM, for MM2) counts.

Run: bench/throughput [--parts limit,ferry,mm2,latency]. A run of BENCH_GB >= 2
writes bench/results/<date>.json, .md and .png; smaller ones (development)
write the same files under .run/bench/throughput/.

The parts live beside this file: throughput_common.py (settings, helpers,
the MirrorMaker 2 process), throughput_latency.py (5.: latency) and
throughput_report.py (the cost per GB, the table and the chart).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from confluent_kafka import Producer

from dynamo_counter import DynamoCounter
from peak_rss import PeakRss
from throughput_common import (
    COMPRESSION, CONSUMER_TUNING, FERRY, FERRY_EXTRA, FULL, GLIBC_TUNABLES, HEADERS, KAFKA_VERSION, KEY_BYTES,
    MM2, MM2_HEAP, MM2_LIBS, MM2_SETTINGS, MM2_TASKS, MOTO, PARTITIONS, PRODUCER_TUNING, RECORD_BYTES, RECORDS,
    ROOT, RUN_DIR, SOURCE, TARGET, VALUE_BYTES, admin, create_topic, delete_topics, end_offsets_sum, exited,
    ferry_args, java, mb, moto_cpu, proc_usage, say, write_config)
from throughput_latency import ferry_latency, mm2_latency
from throughput_report import chart, cost_per_gb, table


# --- 1. load -----------------------------------------------------------------

def load(topic: str) -> dict:
    create_topic(SOURCE, topic)
    say(f"loading {RECORDS:,} records of {RECORD_BYTES} B ({mb(RECORDS * RECORD_BYTES) / 1e3:.2f} GB) into {topic}")
    # Random values: incompressible, so that no codec could flatter anyone.
    values = [os.urandom(VALUE_BYTES) for _ in range(64)]
    p = Producer({"bootstrap.servers": SOURCE, "linger.ms": 20, "batch.size": 1_000_000, "acks": "all",
                  "compression.type": COMPRESSION, "queue.buffering.max.kbytes": 1_048_576,
                  "queue.buffering.max.messages": 1_000_000})
    failed = []

    def done(err, _msg):
        if err is not None:
            failed.append(err)

    t0 = time.monotonic()
    for i in range(RECORDS):
        while True:
            try:
                p.produce(topic, values[i % 64], f"{i:016d}".encode(), partition=i % PARTITIONS,
                          headers=HEADERS, on_delivery=done)
                break
            except BufferError:
                p.poll(0.05)
        if i % 10_000 == 0:
            p.poll(0)
    p.flush(600)
    secs = time.monotonic() - t0
    held = end_offsets_sum(admin(SOURCE), topic)
    if failed or held != RECORDS:
        raise RuntimeError(f"load failed: {failed[:3]}; the source holds {held} of {RECORDS} records")
    say(f"loaded in {secs:.1f} s ({mb(RECORDS * RECORD_BYTES) / secs:.1f} MB/s)")
    return {"seconds": round(secs, 1)}


# --- 2. the limit ------------------------------------------------------------

def limit(topic: str, work: Path) -> dict:
    """Kafka's own tools on this machine: reading the source, writing the target."""
    cfg = work / "consumer.properties"
    cfg.write_text("".join(f"{k}={v}\n" for k, v in CONSUMER_TUNING.items()))
    out, consume_wall = java("org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server", SOURCE,
                             "--topic", topic, "--messages", str(RECORDS), "--timeout", "120000",
                             "--consumer.config", str(cfg))
    lines = [line for line in out.splitlines() if line.strip()]
    head = [h.strip() for h in lines[-2].split(",")]
    row = dict(zip(head, (v.strip() for v in lines[-1].split(","))))
    consumed = int(row["data.consumed.in.nMsg"])
    if consumed < RECORDS:
        raise RuntimeError(f"ConsumerPerformance read {consumed} of {RECORDS} records")
    # Its rate while fetching: the group join before it is not the machine's limit.
    consume_rps = float(row["fetch.nMsg.sec"])

    perf_topic = f"limit-{uuid.uuid4().hex[:8]}"
    create_topic(TARGET, perf_topic)
    props = [f"bootstrap.servers={TARGET}"] + [f"{k}={v}" for k, v in PRODUCER_TUNING.items()]
    out, produce_wall = java("org.apache.kafka.tools.ProducerPerformance", "--topic", perf_topic,
                             "--num-records", str(RECORDS), "--record-size", str(RECORD_BYTES),
                             "--throughput", "-1", "--producer-props", *props)
    delete_topics(TARGET, [perf_topic])
    final = [line for line in out.splitlines() if "records sent" in line][-1]
    produce_rps = float(re.search(r"records sent, ([\d.]+) records/sec", final).group(1))
    res = {
        "consumer_perf_mb_per_s": round(mb(consume_rps * RECORD_BYTES), 1),
        "producer_perf_mb_per_s": round(mb(produce_rps * RECORD_BYTES), 1),
        "consumer_perf_wall_s": round(consume_wall, 1),
        "producer_perf_wall_s": round(produce_wall, 1),
        "consumer_perf_output": row,
        "producer_perf_output": final.strip(),
    }
    say(f"limit: consumer perf {res['consumer_perf_mb_per_s']} MB/s, producer perf {res['producer_perf_mb_per_s']} MB/s")
    return res


# --- 3. Ferry ------------------------------------------------------------------


def watch_until(topic: str, records: int, proc: subprocess.Popen, t0: float, timeout_s: float) -> tuple[float, float]:
    """Seconds from t0 to the first record and to the last one on the target."""
    a = admin(TARGET)
    first = None
    deadline = time.monotonic() + timeout_s
    while True:
        n = end_offsets_sum(a, topic)
        now = time.monotonic()
        if n and first is None:
            first = now - t0
        if n >= records:
            return first, now - t0
        if exited(proc.pid) and end_offsets_sum(a, topic) < records:
            raise RuntimeError(f"the replicator exited with {n} of {records} records on the target")
        if now > deadline:
            raise RuntimeError(f"{n} of {records} records on the target after {timeout_s:.0f} s")
        time.sleep(0.2)


# A round of `ferry run` stands for one Replicate invocation: give the bulk
# copy the Replicate function's Timeout in template.yaml.
BULK_ROUND_SECONDS = 300


def ferry_bulk(topic: str, work: Path, counter: DynamoCounter) -> dict:
    kc, ri = write_config(work, [topic], compression=COMPRESSION.upper())
    name = f"bench-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, AWS_ENDPOINT_URL=counter.url, GLIBC_TUNABLES=GLIBC_TUNABLES)
    log = work / "ferry-bulk.log"
    before, moto0 = counter.snapshot(), moto_cpu()
    say(f"Ferry: replicating {topic} (log {log})")
    with open(log, "wb") as out:
        t0 = time.monotonic()
        flags = ["--once", "--max-partitions-per-batch", str(PARTITIONS), "--round-seconds", str(BULK_ROUND_SECONDS)]
        proc = subprocess.Popen(ferry_args("run", kc, ri, name, *flags), stdout=out, stderr=subprocess.STDOUT, env=env)
        peak = PeakRss(proc.pid)
        first, last = watch_until(topic, RECORDS, proc, t0, timeout_s=3600)
        # wait4: this one child's CPU time (its peak RSS comes from /proc:
        # see bench/peak_rss.py).
        while not exited(proc.pid):
            time.sleep(0.05)
        peak_rss_mb = peak.result()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        process_s = time.monotonic() - t0
    writes, moto1 = DynamoCounter.between(before, counter.snapshot()), moto_cpu()
    if proc.returncode != 0:
        raise RuntimeError(f"ferry exited {proc.returncode}:\n{log.read_text()[-3000:]}")
    rounds = [line for line in log.read_text().splitlines() if "records this round" in line]
    gb = RECORDS * RECORD_BYTES / 1e9
    res = {
        "name": name,
        "flags": " ".join(["ferry run", *flags]),
        "seconds_to_last_record": round(last, 2),
        "seconds_to_first_record": round(first, 2),
        "process_seconds": round(process_s, 2),
        "mb_per_s": round(mb(RECORDS * RECORD_BYTES) / last, 1),
        "mb_per_s_after_first_record": round(mb(RECORDS * RECORD_BYTES) / max(last - first, 0.2), 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "cpu_s_per_gb": round((usage.ru_utime + usage.ru_stime) / gb, 2),
        "peak_rss_mb": peak_rss_mb,
        "rounds": len(rounds),
        "round_lines": rounds,
        "moto_cpu_s": round(moto1 - moto0, 2) if moto0 is not None and moto1 is not None else None,
        "dynamodb": writes,
        "state_writes_per_gb": round(writes["write_requests"] / gb, 1),
        "state_write_items_per_gb": round(sum(v for k, v in writes["items"].items() if k != "condition_check") / gb, 1),
        "state_write_units_per_gb": round(writes["write_units"] / gb, 1),
        "kc": str(kc), "ri": str(ri),
    }
    say(f"Ferry: {res['mb_per_s']} MB/s, {res['cpu_s_per_gb']} CPU s/GB, {res['peak_rss_mb']} MB peak RSS, "
        f"{writes['write_requests']} DynamoDB write requests in {len(rounds)} round(s), a write outstanding "
        f"{writes['seconds_with_a_write_outstanding']} of {writes['seconds']} s, moto {res['moto_cpu_s']} CPU s")
    return res



def mm2_bulk(topic: str, work: Path) -> dict:
    mm2 = MM2(work, [topic])
    say(f"MirrorMaker 2: replicating {topic}, tasks.max={MM2_TASKS} (log {mm2.log})")
    t0 = mm2.start()
    try:
        first, last = watch_until(topic, RECORDS, mm2.proc, t0, timeout_s=3600)
        cpu, hwm = proc_usage(mm2.proc.pid)
    finally:
        mm2.stop()
    gb = RECORDS * RECORD_BYTES / 1e9
    res = {
        "seconds_to_last_record": round(last, 2),
        "seconds_to_first_record": round(first, 2),
        "mb_per_s": round(mb(RECORDS * RECORD_BYTES) / last, 1),
        "mb_per_s_after_first_record": round(mb(RECORDS * RECORD_BYTES) / max(last - first, 0.2), 1),
        "cpu_s": round(cpu, 2),
        "cpu_s_per_gb": round(cpu / gb, 2),
        "peak_rss_mb": round(hwm, 1),
        "tasks_max": MM2_TASKS,
    }
    say(f"MirrorMaker 2: {res['mb_per_s']} MB/s ({res['mb_per_s_after_first_record']} after its first record at "
        f"{first:.1f} s), {res['cpu_s_per_gb']} CPU s/GB, {res['peak_rss_mb']} MB peak RSS")
    return res



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="limit,ferry,mm2,latency",
                    help="comma-separated subset of limit,ferry,mm2,latency (default: all)")
    args = ap.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - {"limit", "ferry", "mm2", "latency"}:
        ap.error("--parts takes limit, ferry, mm2, latency")
    if not FERRY.exists():
        say(f"{FERRY} is missing: cargo build --release -p ferry-cli (bench/throughput does)")
        return 2
    if "mm2" in parts and not (MM2_LIBS / f"connect-mirror-{KAFKA_VERSION}.jar").exists():
        say(f"no connect-mirror-{KAFKA_VERSION}.jar in {MM2_LIBS}: run infra/local/mm2/fetch")
        return 2

    started = datetime.now(timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    work = RUN_DIR / "bench" / "throughput" / stamp
    work.mkdir(parents=True)
    moto = MOTO.removeprefix("http://").rsplit(":", 1)
    counter = DynamoCounter(moto[0], int(moto[1]))
    gb = RECORDS * RECORD_BYTES / 1e9
    r: dict = {
        "benchmark": "throughput",
        "utc": started.isoformat(timespec="seconds"),
        "date": started.date().isoformat(),
        "kafka_version": KAFKA_VERSION,
        "cores": os.cpu_count(),
        "records": RECORDS,
        "record_bytes": RECORD_BYTES,
        "record_shape": f"{KEY_BYTES} B key, {VALUE_BYTES} B random value, {len(HEADERS)} headers",
        "partitions": PARTITIONS,
        "payload_gb": round(gb, 3),
        "compression": COMPRESSION,
        "ferry_extra_args": FERRY_EXTRA,
        "ferry_glibc_tunables": GLIBC_TUNABLES,
        "parts": sorted(parts),
        "work_dir": str(work),
        # Anything else running on the machine shows here.
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    say(f"Kafka {KAFKA_VERSION}, {os.cpu_count()} cores; work files under {work}")
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        if parts & {"limit", "ferry", "mm2"}:
            r["load"] = load(topic)
        if "limit" in parts:
            r["limit"] = limit(topic, work)
            r["limit_mb_per_s"] = min(r["limit"]["consumer_perf_mb_per_s"], r["limit"]["producer_perf_mb_per_s"])
        if "ferry" in parts:
            f = r["ferry"] = ferry_bulk(topic, work, counter)
            r.update({"ferry_mb_per_s": f["mb_per_s"], "ferry_first_record_s": f["seconds_to_first_record"],
                      "ferry_cpu_s_per_gb": f["cpu_s_per_gb"], "ferry_peak_rss_mb": f["peak_rss_mb"],
                      "ferry_state_writes_per_gb": f["state_writes_per_gb"],
                      "ferry_state_write_items_per_gb": f["state_write_items_per_gb"],
                      "ferry_state_write_units_per_gb": f["state_write_units_per_gb"]})
        if "mm2" in parts:
            delete_topics(TARGET, [topic])
            m = r["mirrormaker2"] = mm2_bulk(topic, work)
            r["mirrormaker2_settings"] = {**MM2_SETTINGS, "heap": MM2_HEAP}
            r.update({"mirrormaker2_mb_per_s": m["mb_per_s"], "mirrormaker2_first_record_s": m["seconds_to_first_record"],
                      "mirrormaker2_cpu_s_per_gb": m["cpu_s_per_gb"], "mirrormaker2_peak_rss_mb": m["peak_rss_mb"]})
        for who in ("ferry", "mirrormaker2"):
            if r.get("limit_mb_per_s") and r.get(f"{who}_mb_per_s"):
                r[f"{who}_share_of_limit"] = round(r[f"{who}_mb_per_s"] / r["limit_mb_per_s"], 3)
        delete_topics(SOURCE, [topic])
        delete_topics(TARGET, [topic])
        if "latency" in parts:
            bulk_rps = RECORDS / r["ferry"]["seconds_to_last_record"] if "ferry" in r else None
            fl, dry = ferry_latency(work, counter, bulk_rps)
            r["ferry_latency"] = fl
            r.update({"ferry_latency_p50_ms": fl["p50_ms"], "ferry_latency_p99_ms": fl["p99_ms"],
                      "ferry_steady_cpu_s_per_gb": fl["cpu_s_per_gb"],
                      "ferry_steady_state_writes_per_gb": fl["state_writes_per_gb"],
                      "ferry_steady_state_write_items_per_gb": fl["state_write_items_per_gb"]})
            if dry:
                r["ferry_cost"] = cost_per_gb(dry, fl)
                r["ferry_cost_usd_per_gb"] = r["ferry_cost"].get("usd_per_gb")
            ml = r["mirrormaker2_latency"] = mm2_latency(work)
            r.update({"mirrormaker2_latency_p50_ms": ml["p50_ms"], "mirrormaker2_latency_p99_ms": ml["p99_ms"],
                      "mirrormaker2_steady_cpu_s_per_gb": ml["cpu_s_per_gb"]})
    finally:
        counter.close()
        delete_topics(SOURCE, [topic])
        delete_topics(TARGET, [topic])
    r["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    r["notes"] = [
        "MB = 10^6 bytes of records (key + value + header names and values); "
        + ("no compression anywhere" if COMPRESSION == "none" else f"{COMPRESSION} everywhere (load, perf tools, both replicators)"),
        "limit: Kafka's own perf tools, their reported rates (JVM start-up excluded); the lower of the two",
        "Ferry and MirrorMaker 2: wall time from starting the process until the target holds every record "
        "(start-up included: a JVM and its Connect herder for MirrorMaker 2; plan, leases and reconcile for Ferry)",
        "Ferry's DynamoDB is moto on this machine, not DynamoDB; its calls were counted by a proxy",
        f"everything (two brokers, moto, the replicator, the load and the measuring clients) on one {os.cpu_count()}-core machine",
        "cost: the project's model (ferry plan --dry-run) at the steady rate: Lambda, Step Functions and DynamoDB "
        "writes at on-demand US East list prices; reads, logs, metrics and data transfer not included; "
        "MirrorMaker 2's hosting is not modelled",
    ]

    out_dir = ROOT / "bench" / "results" if FULL else work
    base = out_dir / ((r["date"] if FULL else "throughput") + ("" if COMPRESSION == "none" else f"-{COMPRESSION}"))
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = base.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(r, indent=2, ensure_ascii=False) + "\n")
    tmp.rename(base.with_suffix(".json"))
    md = table(r)
    base.with_suffix(".md").write_text(
        f"# Throughput benchmark, {r['date']}\n\n`bench/throughput`: {r['payload_gb']} GB ({RECORDS:,} records of "
        f"{RECORD_BYTES} B), {PARTITIONS} partitions, Kafka {KAFKA_VERSION}, {os.cpu_count()} cores, "
        f"{'no compression' if COMPRESSION == 'none' else 'compression ' + COMPRESSION}.\n\n{md}\n\n" + "".join(f"* {n}\n" for n in r["notes"]))
    try:
        chart(r, base.with_suffix(".png"))
    except ImportError as e:
        say(f"no chart: {e} (bench/throughput installs bench/requirements.txt)")
    print()
    print(md)
    say(f"wrote {base.with_suffix('.json')} and its .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
