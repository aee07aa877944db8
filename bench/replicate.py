"""Benchmark: replicate at least 1 GB between the local clusters with the
release `ferry` binary and report MB/s, records/s, CPU seconds per GB and
peak memory, next to a baseline measured in the same run on the same machine
(Kafka's own consumer performance tool reading the same data), so the ratio
means something on a noisy 2-core machine.

Run: bench/replicate  (starts the stack, builds, loads, measures, cleans up)
Writes bench/results/replicate-<UTC timestamp>.json. Not a test.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from conftest import SOURCE, TARGET, write_config  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from peak_rss import PeakRss  # noqa: E402

RECORDS = int(os.environ.get("BENCH_RECORDS", "1100000"))
RECORD_BYTES = int(os.environ.get("BENCH_RECORD_BYTES", "1024"))
PARTITIONS = 12
LIBS = os.environ["KAFKA_LIBS"]


def java_tool(main: str, *args: str) -> str:
    cmd = ["java", "-Xmx512m", "-cp", f"{LIBS}/*", main, *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def main() -> int:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": SOURCE})
    for f in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        f.result(timeout=30)
    print(f"bench: loading {RECORDS} records of {RECORD_BYTES} B into {topic} ({RECORDS * RECORD_BYTES / 1e9:.2f} GB)", flush=True)
    t0 = time.time()
    java_tool("org.apache.kafka.tools.ProducerPerformance", "--topic", topic, "--num-records", str(RECORDS),
              "--record-size", str(RECORD_BYTES), "--throughput", "-1", "--producer-props", f"bootstrap.servers={SOURCE}",
              "acks=1", "linger.ms=20", "batch.size=262144", "compression.type=none")
    load_s = time.time() - t0

    # Baseline: Kafka's own consumer reading everything, same run, same machine.
    t0 = time.time()
    java_tool("org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server", SOURCE, "--topic", topic,
              "--messages", str(RECORDS), "--timeout", "60000")
    consume_s = time.time() - t0

    with tempfile.TemporaryDirectory() as tmp:
        kc, ri = write_config(Path(tmp), [topic], compression="NONE")
        t0 = time.time()
        ferry = ROOT / "target" / "release" / "ferry"
        log = Path(tmp) / "ferry.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(ferry), "run", "--kafka-clusters", str(kc), "--replication-info", str(ri),
                                     "--name", f"bench-{topic}", "--table-prefix", "ferry-bench", "--once",
                                     "--max-partitions-per-batch", str(PARTITIONS)], stdout=out, stderr=subprocess.STDOUT)
            peak = PeakRss(proc.pid)
            # wait4 gives this one child's CPU time; its peak RSS comes from
            # /proc (see bench/peak_rss.py).
            while peak.thread.is_alive():
                time.sleep(0.05)
            peak_rss_mb = peak.result()
            _, status, usage = os.wait4(proc.pid, 0)
        ferry_s = time.time() - t0
        cpu_s = usage.ru_utime + usage.ru_stime
        if os.waitstatus_to_exitcode(status) != 0:
            print(log.read_text(), file=sys.stderr)
            return 1
    gb = RECORDS * RECORD_BYTES / 1e9
    result = {
        "benchmark": "replicate",
        "utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "records": RECORDS,
        "record_bytes": RECORD_BYTES,
        "partitions": PARTITIONS,
        "payload_gb": round(gb, 3),
        "ferry_seconds": round(ferry_s, 2),
        "ferry_mb_per_s": round(gb * 1000 / ferry_s, 1),
        "ferry_records_per_s": round(RECORDS / ferry_s),
        "ferry_cpu_s_per_gb": round(cpu_s / gb, 2),
        "ferry_peak_rss_mb": peak_rss_mb,
        "baseline_kafka_consumer_perf_mb_per_s": round(gb * 1000 / consume_s, 1),
        "baseline_kafka_producer_perf_mb_per_s": round(gb * 1000 / load_s, 1),
        "ratio_ferry_to_consumer_perf": round(consume_s / ferry_s, 3),
        "note": "baselines are Kafka's own perf tools on the same data in the same run and include JVM start-up",
    }
    for a in (AdminClient({"bootstrap.servers": SOURCE}), AdminClient({"bootstrap.servers": TARGET})):
        for f in a.delete_topics([topic]).values():
            try:
                f.result(timeout=30)
            except Exception as e:  # noqa: BLE001 - clean-up only
                print(f"bench: could not delete {topic}: {e}", file=sys.stderr)
    out = ROOT / "bench" / "results" / f"replicate-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"bench: wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
