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
"""

import argparse
import json
import math
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # noqa: E402

from conftest import SOURCE, TARGET, write_config  # noqa: E402
from dynamo_counter import DynamoCounter  # noqa: E402
from mm2_local import SINGLE_BROKER  # noqa: E402
from peak_rss import PeakRss  # noqa: E402

GB = float(os.environ.get("BENCH_GB", "2"))
VALUE_BYTES = 1024
KEY_BYTES = 16
HEADERS = [("trace-id", b"0123456789abcdef"), ("source", b"bench"), ("schema", b"v1")]
RECORD_BYTES = KEY_BYTES + VALUE_BYTES + sum(len(k) + len(v) for k, v in HEADERS)
RECORDS = math.ceil(GB * 1e9 / VALUE_BYTES)
PARTITIONS = 12
LATENCY_MBPS = float(os.environ.get("BENCH_LATENCY_MBPS", "5"))
LATENCY_SECONDS = float(os.environ.get("BENCH_LATENCY_SECONDS", "60"))
FULL = GB >= 2
KAFKA_LIBS = os.environ["KAFKA_LIBS"]
KAFKA_VERSION = os.environ.get("KAFKA_VERSION", "")
MM2_LIBS = Path(os.environ.get("MM2_LIBS") or ROOT / ".cache" / f"mm2-{KAFKA_VERSION}" / "libs")
MM2_LOG4J = ROOT / "infra" / "local" / "mm2" / "log4j2.xml"
MM2_MAIN = "org.apache.kafka.connect.mirror.MirrorMaker"
MM2_HEAP = "-Xmx1g"
MM2_TASKS = int(os.environ.get("BENCH_MM2_TASKS", str(os.cpu_count() or 2)))
FERRY = Path(os.environ.get("FERRY_BIN", ROOT / "target" / "release" / "ferry"))
MOTO = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
RUN_DIR = Path(os.environ.get("FERRY_RUN_DIR") or ROOT / ".run")
# The codec of the load, of the limit's producer tool, of MirrorMaker 2's
# producer and of Ferry's flow (TargetCompressionType): none by default.
COMPRESSION = os.environ.get("BENCH_COMPRESSION", "none").lower()
# Extra flags for every `ferry run` (comparisons: BENCH_FERRY_ARGS=
# "--pass-through-min-bytes 99999999" turns batch pass-through off).
FERRY_EXTRA = os.environ.get("BENCH_FERRY_ARGS", "").split()
# Ferry's process gets the environment template.yaml gives the Lambda
# functions' malloc (BENCH_GLIBC_TUNABLES= leaves glibc's defaults).
GLIBC_TUNABLES = os.environ.get("BENCH_GLIBC_TUNABLES", re.search(
    r"GLIBC_TUNABLES: (\S+)", (ROOT / "template.yaml").read_text()).group(1))
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Producer settings of everything that writes in bulk here: Kafka's perf tool
# (the limit) and MirrorMaker 2's producer. Ferry produces batches of up to
# 900 KiB with acks=all; these are the nearest Java-producer equivalents.
PRODUCER_TUNING = {"acks": "all", "batch.size": "524288", "linger.ms": "10", "compression.type": COMPRESSION}
# Consumer settings for the perf tool and MM2: Ferry fetches 4 MiB per
# partition, read_committed.
CONSUMER_TUNING = {"max.partition.fetch.bytes": "4194304", "isolation.level": "read_committed"}

# MirrorMaker 2 for throughput: one way, names kept, no group work (Ferry's
# bulk run syncs no groups either), no topic configs or ACLs (nor does Ferry's
# configuration here). Offset syncs stay on: they are MM2's offset map.
MM2_SETTINGS = {
    "clusters": "source, target",
    "source->target.enabled": "true",
    "target->source.enabled": "false",
    "replication.policy.class": "org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
    "tasks.max": str(MM2_TASKS),
    "emit.heartbeats.enabled": "false",
    "emit.checkpoints.enabled": "false",
    "sync.group.offsets.enabled": "false",
    "sync.topic.configs.enabled": "false",
    "sync.topic.acls.enabled": "false",
    **SINGLE_BROKER,
    **{f"target.producer.{k}": v for k, v in PRODUCER_TUNING.items()},
    **{f"source.consumer.{k}": v for k, v in CONSUMER_TUNING.items()},
    "source.consumer.max.poll.records": "2000",
}


def say(msg: str) -> None:
    print(f"[throughput] {msg}", flush=True)


def mb(n_bytes: float) -> float:
    return n_bytes / 1e6


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(bootstrap: str, topic: str) -> None:
    a = admin(bootstrap)  # kept alive until every future is done
    for f in a.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        f.result(timeout=30)


def delete_topics(bootstrap: str, topics: list[str]) -> None:
    """Deletes and waits until the names are gone, so a replicator can
    create them anew."""
    a = admin(bootstrap)
    existing = set(a.list_topics(timeout=30).topics)
    todo = [t for t in topics if t in existing]
    if not todo:
        return
    for f in a.delete_topics(todo).values():
        try:
            f.result(timeout=60)
        except KafkaException as e:
            say(f"could not delete a topic on {bootstrap}: {e}")
    deadline = time.monotonic() + 60
    while set(todo) & set(a.list_topics(timeout=30).topics) and time.monotonic() < deadline:
        time.sleep(0.5)


def end_offsets_sum(a: AdminClient, topic: str) -> int:
    """Sum of the topic's end offsets; 0 while it does not exist yet."""
    try:
        res = a.list_offsets({TopicPartition(topic, p): OffsetSpec.latest() for p in range(PARTITIONS)},
                             request_timeout=10)
        return sum(f.result().offset for f in res.values())
    except KafkaException:
        return 0


def wait_for_topic(bootstrap: str, topic: str, timeout_s: float = 120) -> None:
    a = admin(bootstrap)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        meta = a.list_topics(timeout=10).topics.get(topic)
        if meta is not None and meta.error is None and len(meta.partitions) == PARTITIONS:
            return
        time.sleep(0.25)
    raise RuntimeError(f"{topic} did not appear on {bootstrap} with {PARTITIONS} partitions in {timeout_s:.0f} s")


def exited(pid: int) -> bool:
    """Whether a child has exited, without reaping it (wait4 must see it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def proc_usage(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system, all threads) and peak RSS in MB of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    hwm = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return cpu, int(hwm.group(1)) / 1024 if hwm else 0.0


def moto_cpu() -> float | None:
    """CPU seconds moto has used so far: on this machine it competes with
    the brokers for the same cores, and DynamoDB would not."""
    try:
        return proc_usage(int((RUN_DIR / "moto" / "moto.pid").read_text().split()[0]))[0]
    except (OSError, ValueError):
        return None


def java(main: str, *args: str, classpath: str = f"{KAFKA_LIBS}/*") -> tuple[str, float]:
    t0 = time.monotonic()
    p = subprocess.run(["java", "-Xmx1g", "-cp", classpath, main, *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{main} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p.stdout, time.monotonic() - t0


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

def ferry_args(cmd: str, kc: Path, ri: Path, name: str, *extra: str) -> list[str]:
    extra = (*extra, *FERRY_EXTRA) if cmd == "run" else extra
    return [str(FERRY), cmd, "--kafka-clusters", str(kc), "--replication-info", str(ri), "--name", name,
            "--table-prefix", name, *extra]


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


# --- 4. MirrorMaker 2 ----------------------------------------------------------

class MM2:
    """A dedicated MirrorMaker 2 process replicating the named topics source->target."""

    def __init__(self, work: Path, topics: list[str]):
        self.work = work
        self.run_id = uuid.uuid4().hex[:10]
        props = {"source.bootstrap.servers": SOURCE, "target.bootstrap.servers": TARGET,
                 "source->target.topics": ", ".join(re.escape(t) for t in topics), **MM2_SETTINGS,
                 "target.group.id": f"mm2-{self.run_id}",
                 "config.storage.topic": f"mm2-{self.run_id}-configs",
                 "offset.storage.topic": f"mm2-{self.run_id}-offsets",
                 "status.storage.topic": f"mm2-{self.run_id}-status"}
        self.storage_topics = [props[k] for k in ("config.storage.topic", "offset.storage.topic", "status.storage.topic")]
        self.conf = work / f"mm2-{self.run_id}.properties"
        self.conf.write_text("# Written by bench/throughput.py.\n" + "".join(f"{k} = {v}\n" for k, v in props.items()))
        self.log = work / f"mm2-{self.run_id}.log"
        self.partitions = len(topics) * PARTITIONS
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        out = open(self.work / f"mm2-{self.run_id}.stdout.log", "ab")
        self.proc = subprocess.Popen(
            ["java", MM2_HEAP, "-XX:+UseG1GC", "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={MM2_LOG4J}",
             f"-Dferry.mm2.log={self.log}", "-cp", f"{MM2_LIBS}/*", MM2_MAIN, str(self.conf), "--clusters", "target"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        return time.monotonic()

    def wait_replicating(self, timeout_s: float = 180) -> None:
        """Until MirrorSourceTask has logged that its tasks replicate every partition."""
        line = re.compile(r"replicating (\d+) topic-partitions source->target")
        deadline = time.monotonic() + timeout_s
        while sum(int(n) for n in line.findall(self.log.read_text(errors="replace") if self.log.exists() else "")) < self.partitions:
            if self.proc.poll() is not None:
                raise RuntimeError(f"MirrorMaker 2 exited {self.proc.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"MirrorMaker 2 not replicating after {timeout_s:.0f} s; see {self.log}")
            time.sleep(0.25)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        delete_topics(TARGET, self.storage_topics)


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


# --- 5. latency ------------------------------------------------------------------

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


# --- 6. cost -----------------------------------------------------------------------

def cost_per_gb(dry: dict, ferry_steady: dict | None) -> dict:
    """Turns the model's month at the observed rate into dollars per GB."""
    out = dry["output"]
    rps = sum(f["observed_records_per_second"] for f in out["flows"])
    if rps <= 0:
        return {}
    month = out["monthly_cost"]
    gb_month = rps * RECORD_BYTES * 730 * 3600 / 1e9
    res = {
        "model": "ferry plan --dry-run (functions/core/src/cost.rs)",
        "command": " ".join(dry["args"]),
        "observed_records_per_second": round(rps, 1),
        "observed_mb_per_s": round(mb(rps * RECORD_BYTES), 2),
        "gb_per_month": round(gb_month, 1),
        "monthly_usd": round(month["total_usd"], 2),
        "usd_per_gb": round(month["total_usd"] / gb_month, 5),
        "lambda_usd_per_gb": round(month["lambda_usd"] / gb_month, 5),
        "step_functions_usd_per_gb": round(month["step_functions_usd"] / gb_month, 5),
        "dynamodb_usd_per_gb": round(month["dynamodb_usd"] / gb_month, 5),
        "model_write_units_per_second": round(month["dynamodb_write_units"] / (730 * 3600), 1),
        "assumptions": month["assumptions"],
    }
    # DynamoDB again from the writes counted in the same steady run, at the
    # model's own price.
    price = re.search(r"DynamoDB \$([\d.]+)/million write units", " ".join(month["assumptions"]))
    if price and ferry_steady:
        wus = ferry_steady["write_units_per_second"]
        res["measured_write_units_per_second"] = wus
        res["dynamodb_usd_per_gb_from_measured_writes"] = round(
            wus * 730 * 3600 * float(price.group(1)) / 1e6 / gb_month, 5)
    return res


# --- output ------------------------------------------------------------------------

def table(r: dict) -> str:
    def v(x, fmt="{:,.1f}"):
        return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)

    rows = [
        ("Throughput, MB/s (limit: lower of the two perf tools)", v(r.get("limit_mb_per_s")),
         v(r.get("ferry_mb_per_s")), v(r.get("mirrormaker2_mb_per_s"))),
        ("Share of the limit", "100%", v(r.get("ferry_share_of_limit"), "{:.0%}"),
         v(r.get("mirrormaker2_share_of_limit"), "{:.0%}")),
        ("Seconds to the first record on the target", "", v(r.get("ferry_first_record_s")),
         v(r.get("mirrormaker2_first_record_s"))),
        (f"Latency p50 at {LATENCY_MBPS:g} MB/s, ms", "", v(r.get("ferry_latency_p50_ms"), "{:,.0f}"),
         v(r.get("mirrormaker2_latency_p50_ms"), "{:,.0f}")),
        (f"Latency p99 at {LATENCY_MBPS:g} MB/s, ms", "", v(r.get("ferry_latency_p99_ms"), "{:,.0f}"),
         v(r.get("mirrormaker2_latency_p99_ms"), "{:,.0f}")),
        ("CPU seconds per GB (bulk copy)", "", v(r.get("ferry_cpu_s_per_gb"), "{:,.2f}"),
         v(r.get("mirrormaker2_cpu_s_per_gb"), "{:,.2f}")),
        (f"CPU seconds per GB at {LATENCY_MBPS:g} MB/s", "", v(r.get("ferry_steady_cpu_s_per_gb"), "{:,.2f}"),
         v(r.get("mirrormaker2_steady_cpu_s_per_gb"), "{:,.2f}")),
        ("Peak RSS, MB (bulk copy)", "", v(r.get("ferry_peak_rss_mb")), v(r.get("mirrormaker2_peak_rss_mb"))),
        ("DynamoDB write requests per GB (bulk copy)", "", v(r.get("ferry_state_writes_per_gb")), ""),
        (f"DynamoDB write requests per GB at {LATENCY_MBPS:g} MB/s", "", v(r.get("ferry_steady_state_writes_per_gb")), ""),
        ("DynamoDB items written per GB (bulk copy)", "", v(r.get("ferry_state_write_items_per_gb")), ""),
        (f"DynamoDB items written per GB at {LATENCY_MBPS:g} MB/s", "",
         v(r.get("ferry_steady_state_write_items_per_gb")), ""),
        (f"Estimated AWS cost per GB at {LATENCY_MBPS:g} MB/s, USD", "", v(r.get("ferry_cost_usd_per_gb"), "{:.4f}"), ""),
    ]
    out = ["| | Limit (Kafka perf tools) | Ferry | MirrorMaker 2 |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(out)


def chart(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = ["Kafka consumer\nperf (source)", "Kafka producer\nperf (target)", "Ferry", "MirrorMaker 2"]
    vals = [r.get("limit", {}).get("consumer_perf_mb_per_s"), r.get("limit", {}).get("producer_perf_mb_per_s"),
            r.get("ferry_mb_per_s"), r.get("mirrormaker2_mb_per_s")]
    colors = ["#999999", "#bbbbbb", "#1f77b4", "#ff7f0e"]
    ax1.bar(names, [x or 0 for x in vals], color=colors)
    ax1.tick_params(axis="x", labelsize=9)
    for i, x in enumerate(vals):
        if x:
            ax1.text(i, x, f"{x:.1f}" if x < 10 else f"{x:.0f}", ha="center", va="bottom")
    ax1.set_ylabel("MB/s")
    ax1.set_title(f"Bulk copy, {r['payload_gb']:.2f} GB, 12 partitions")
    lat = [("p50", "ferry_latency_p50_ms", "mirrormaker2_latency_p50_ms"),
           ("p99", "ferry_latency_p99_ms", "mirrormaker2_latency_p99_ms")]
    xs = range(len(lat))
    for off, who, col in ((-0.2, 1, "#1f77b4"), (0.2, 2, "#ff7f0e")):
        ys = [r.get(t[who]) or 0 for t in lat]
        ax2.bar([x + off for x in xs], ys, width=0.4, color=col, label=["", "Ferry", "MirrorMaker 2"][who])
        for x, y in zip(xs, ys):
            ax2.text(x + off, y, f"{y:.0f}", ha="center", va="bottom")
    ax2.set_xticks(list(xs), [t[0] for t in lat])
    ax2.set_ylabel("ms")
    ax2.set_title(f"End-to-end latency at {LATENCY_MBPS:g} MB/s")
    ax2.legend()
    fig.suptitle(f"Ferry vs MirrorMaker 2 (Kafka {KAFKA_VERSION}), {r['date']}, {os.cpu_count()} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
