"""Settings and helpers shared by bench/throughput.py and its parts
(throughput_latency.py, throughput_report.py): the load's shape, the
environment's knobs, the producer, consumer and MirrorMaker 2 settings,
small Kafka and /proc helpers, `ferry` command lines and the MirrorMaker 2
process. It imports nothing from those modules.
"""

import math
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from confluent_kafka import KafkaException, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # noqa: E402

from conftest import SOURCE, TARGET, write_config  # noqa: E402,F401 (the other modules take them from here)
from mm2_local import SINGLE_BROKER  # noqa: E402

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


def ferry_args(cmd: str, kc: Path, ri: Path, name: str, *extra: str) -> list[str]:
    extra = (*extra, *FERRY_EXTRA) if cmd == "run" else extra
    return [str(FERRY), cmd, "--kafka-clusters", str(kc), "--replication-info", str(ri), "--name", name,
            "--table-prefix", name, *extra]



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
