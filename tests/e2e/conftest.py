"""Shared fixtures for Ferry's end-to-end tests.

These tests run against the real local stack started by infra/local/up:
two Apache Kafka clusters and moto. Records are produced and read with
confluent-kafka (librdkafka), a client nobody here wrote, so Ferry's own
codec never checks itself.
"""

import json
import re
import os
import subprocess
import time
import uuid
from pathlib import Path

import boto3
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]
FERRY = Path(os.environ.get("FERRY_BIN", ROOT / "target" / "debug" / "ferry"))
SOURCE = os.environ.get("SOURCE_BOOTSTRAP", "127.0.0.1:19092")
TARGET = os.environ.get("TARGET_BOOTSTRAP", "127.0.0.1:29092")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_topic(bootstrap: str, name: str, partitions: int, config: dict | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])
    for f in futures.values():
        f.result(timeout=30)
    # The controller has the topic; the broker's metadata may not yet (a
    # Plan right after saw no topic and planned nothing): until it answers
    # with every partition led.
    deadline = time.time() + 30
    while True:
        topic = admin.list_topics(name, timeout=30).topics.get(name)
        if topic is not None and topic.error is None and len(topic.partitions) == partitions and \
                all(p.leader >= 0 for p in topic.partitions.values()):
            return
        assert time.time() < deadline, f"{name} is not in {bootstrap}'s metadata with {partitions} led partitions after 30 s"
        time.sleep(0.1)


def list_topics(bootstrap: str) -> set[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return set(admin.list_topics(timeout=30).topics)


def producer(bootstrap: str = SOURCE, **extra) -> Producer:
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 5, "message.max.bytes": 2_000_000, "queue.buffering.max.messages": 1_000_000}
    conf.update(extra)
    return Producer(conf)


def produce_keys(bootstrap: str, topic: str, keys: list[str], partition: int = 0) -> None:
    """Records with these keys (value b"v"), in order, to one partition,
    idempotently; waits until all are acknowledged."""
    p = producer(bootstrap, **{"enable.idempotence": True})
    for k in keys:
        p.produce(topic, partition=partition, key=k.encode(), value=b"v")
    assert p.flush(30) == 0


def read_partition(bootstrap: str, topic: str, partition: int, timeout_s: float = 60.0) -> list[dict]:
    """Every committed record of one partition, from the start to the end offset."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("reader"),
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "fetch.message.max.bytes": 2_000_000,
            # If the log start moves past the first fetch (retention deleted
            # records meanwhile), the broker answers "offset out of range":
            # the reader must not jump to the end and read nothing.
            "auto.offset.reset": "earliest",
        }
    )
    try:
        import time

        # A partition created a moment ago may not have its leader yet.
        deadline = time.time() + 30
        while True:
            try:
                low, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
                break
            except KafkaException:
                # librdkafka does not flag these query errors as retriable.
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        out: list[dict] = []
        if high <= low:
            return out
        c.assign([TopicPartition(topic, partition, low)])
        import time

        deadline = time.time() + timeout_s
        while time.time() < deadline:
            m = c.poll(1.0)
            if m is None:
                pos = c.position([TopicPartition(topic, partition)])[0].offset
                if pos >= high:
                    break
                continue
            if m.error():
                if m.error().code() == -191:  # _PARTITION_EOF
                    break
                raise RuntimeError(m.error())
            ts_type, ts = m.timestamp()
            out.append(
                {
                    "offset": m.offset(),
                    "key": m.key(),
                    "value": m.value(),
                    "headers": m.headers(),
                    "timestamp": ts,
                    "timestamp_type": ts_type,
                }
            )
            if m.offset() >= high - 1:
                break
        return out
    finally:
        c.close()


def write_config(tmp: Path, topics: list[str], compression: str = "NONE", starting: str = "EARLIEST",
                 source: str = SOURCE, target: str = TARGET, both_ways: bool = False,
                 groups: list[str] | None = None, group_mode: str | None = None, copy_acls: bool = False,
                 naming: str = "IDENTICAL", topic_replication: dict | None = None,
                 group_replication: dict | None = None) -> tuple[Path, Path]:
    """Both configuration files: source→target (and target→source with
    `both_ways`), IDENTICAL names, consumer groups matching `groups`."""
    clusters = [
        {"ApacheKafkaCluster": {"ApacheKafkaClusterId": "source", "BootstrapBrokerString": source},
         "EncryptionInTransit": {"EncryptionType": "PLAINTEXT"}},
        {"ApacheKafkaCluster": {"ApacheKafkaClusterId": "target", "BootstrapBrokerString": target},
         "EncryptionInTransit": {"EncryptionType": "PLAINTEXT"}},
    ]

    def flow(src: str, tgt: str) -> dict:
        f = {
            "SourceKafkaClusterId": src,
            "TargetKafkaClusterId": tgt,
            "TargetCompressionType": compression,
            "TopicReplication": {
                "TopicsToReplicate": [t.replace(".", "\\.") for t in topics],
                "CopyTopicConfigurations": False,
                "CopyAccessControlListsForTopics": copy_acls,
                "DetectAndCopyNewTopics": True,
                "StartingPosition": {"Type": starting},
                "TopicNameConfiguration": {"Type": naming},
            },
        }
        f["TopicReplication"].update(topic_replication or {})
        if groups is not None:
            f["ConsumerGroupReplication"] = {"ConsumerGroupsToReplicate": groups, "DetectAndCopyNewConsumerGroups": True,
                                             "SynchroniseConsumerGroupOffsets": True}
            if group_mode:
                f["ConsumerGroupReplication"]["ConsumerGroupOffsetSyncMode"] = group_mode
            f["ConsumerGroupReplication"].update(group_replication or {})
        return f

    info = [flow("source", "target")] + ([flow("target", "source")] if both_ways else [])
    kc = tmp / "kafka-clusters.json"
    ri = tmp / "replication-info.json"
    kc.write_text(json.dumps(clusters, indent=2))
    ri.write_text(json.dumps(info, indent=2))
    return kc, ri


def committed(bootstrap: str, group: str) -> dict[tuple[str, int], tuple[int, str]]:
    """A group's committed offsets and metadata, read with Kafka's admin API."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=30)
    return {(tp.topic, tp.partition): (tp.offset, tp.metadata or "") for tp in res.topic_partitions if tp.offset >= 0}


class Ferry:
    """Runs the real `ferry` binary with its own replicator name and tables."""

    def __init__(self, kc: Path, ri: Path, name: str | None = None, prefix: str | None = None):
        self.kc, self.ri = kc, ri
        self.name = name or unique("e2e")
        self.prefix = prefix or unique("ferry-test")

    def args(self, cmd: str, *extra: str) -> list[str]:
        return [str(FERRY), cmd, "--kafka-clusters", str(self.kc), "--replication-info", str(self.ri),
                "--name", self.name, "--table-prefix", self.prefix, *extra]

    def run(self, *extra: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.args("run", *extra), capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, **(env or {})))

    def spawn(self, *extra: str, log: Path | None = None, env: dict | None = None) -> subprocess.Popen:
        out = open(log, "ab") if log else subprocess.DEVNULL
        env = dict(os.environ, **{"RUST_LOG": "warn,ferry_engine=info", **(env or {})})
        return subprocess.Popen(self.args("run", *extra), stdout=out, stderr=subprocess.STDOUT, env=env)

    def move(self, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """`ferry move` with these arguments."""
        return subprocess.run(self.args("move", *extra), capture_output=True, text=True, timeout=timeout)

    def forget_flow(self, flow: str, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """`ferry forget-flow --flow FLOW --yes` with these arguments."""
        return subprocess.run(self.args("forget-flow", "--flow", flow, "--yes", *extra), capture_output=True, text=True,
                              timeout=timeout)

    def full_status(self) -> dict:
        p = subprocess.run(self.args("status", "--json"), capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    def status(self) -> list[dict]:
        """Per replicated partition."""
        return self.full_status()["partitions"]

    def groups(self) -> list[dict]:
        """Per synced consumer-group partition."""
        return self.full_status()["groups"]


def stored_batches(cluster: str, topic: str, partition: int, records: bool = False) -> list[dict]:
    """The record batches of a partition as its broker stored them, read from
    the log segments with Kafka's own DumpLogSegments; with `records`, each
    with its records under "records" (offset, key, a control record's
    endTxnMarker, ...)."""
    data = Path(os.environ.get("FERRY_RUN_DIR") or ROOT / ".run") / cluster / "data" / f"{topic}-{partition}"
    segments = sorted(str(f) for f in data.glob("*.log"))
    assert segments, f"no log segments in {data}"
    deep = ["--deep-iteration", "--print-data-log"] if records else []
    out = subprocess.run(["java", "-cp", f"{os.environ['KAFKA_LIBS']}/*", "kafka.tools.DumpLogSegments", *deep,
                          "--files", ",".join(segments)], capture_output=True, text=True, timeout=120, check=True).stdout
    batches: list[dict] = []
    for line in out.splitlines():
        if line.startswith("baseOffset:"):
            batches.append(dict(re.findall(r"(\w+): (\S+)", line)) | ({"records": []} if records else {}))
        elif records and line.startswith("| offset:") and batches:
            batches[-1]["records"].append(dict(re.findall(r"(\w+): (\S+)", line)))
    return batches


def msk_cluster(name: str, listeners: dict[str, str]) -> str:
    """A cluster in moto's MSK, its GetBootstrapBrokers answer registered
    (field name -> brokers), as the stack's moto stand-in reads them
    (infra/local/moto/ferry_moto.py); returns its ARN."""
    kafka = boto3.client("kafka", endpoint_url=os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
                         region_name=os.environ.get("AWS_REGION", "us-east-1"))
    arn = kafka.create_cluster(ClusterName=name, KafkaVersion="3.6.0", NumberOfBrokerNodes=1,
                               BrokerNodeGroupInfo={"InstanceType": "kafka.m5.large",
                                                    "ClientSubnets": ["subnet-0123456789abcdef0"]})["ClusterArn"]
    if listeners:
        kafka.tag_resource(ResourceArn=arn, Tags=listeners)
    answer = kafka.get_bootstrap_brokers(ClusterArn=arn)
    assert {k: v for k, v in answer.items() if k.startswith("BootstrapBrokerString")} == listeners, answer
    return arn


def dynamo():
    return boto3.client("dynamodb", endpoint_url=os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
                        region_name=os.environ.get("AWS_REGION", "us-east-1"))


def partition_key(prefix: str, flow: str, topic: str, partition: int) -> str:
    """The partition key of a partition's cursor and group-sync items, as
    docs/src/concepts/state.md lays them out: the flow key itself in a flow
    whose marker records no `key_shards` (started before Ferry spread
    them), else the flow key, '#' and FNV-1a (32 bits) of "topic/partition"
    modulo `key_shards`, in two digits."""
    marker = dynamo().get_item(TableName=f"{prefix}-cursors", ConsistentRead=True,
                               Key={"flow": {"S": flow}, "partition": {"S": "#flow"}}).get("Item", {})
    shards = int(marker.get("key_shards", {}).get("N", "1"))
    if shards <= 1:
        return flow
    h = 0x811C9DC5
    for b in f"{topic}/{partition}".encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return f"{flow}#{h % shards:02}"


def offset_runs(ferry: "Ferry", topic: str, partition: int) -> list[tuple[int, int, int]]:
    """The stored offset-map runs (source start, target start, length) of one
    partition, read as docs/src/concepts/state.md says: the newest run's
    length is the longer of its item's and the cursor's `open_run_length`."""
    flow = f"{ferry.name}/source>target"
    items = dynamo().query(
        TableName=f"{ferry.prefix}-offset-map",
        KeyConditionExpression="flow_partition = :pk",
        ExpressionAttributeValues={":pk": {"S": f"{flow}/{topic}/{partition}"}},
        ConsistentRead=True,
    )["Items"]
    runs = sorted([int(i["source_start"]["N"]), int(i["target_start"]["N"]), int(i["run_length"]["N"])] for i in items)
    cursor = dynamo().get_item(TableName=f"{ferry.prefix}-cursors", ConsistentRead=True,
                               Key={"flow": {"S": partition_key(ferry.prefix, flow, topic, partition)},
                                    "partition": {"S": f"{topic}/{partition}"}}).get("Item", {})
    if "open_run_source_start" in cursor:
        start, length = int(cursor["open_run_source_start"]["N"]), int(cursor["open_run_length"]["N"])
        for r in runs:
            if r[0] == start:
                r[2] = max(r[2], length)
    return [tuple(r) for r in runs]


# Test files that check the local stack itself and never run Ferry: run alone,
# they need no build.
STACK_ONLY = {"test_local_sasl_ssl.py"}


def pytest_configure(config):
    if not all(Path(arg.split("::")[0]).name in STACK_ONLY for arg in config.args) and not FERRY.exists():
        raise pytest.UsageError(f"{FERRY} is missing: run `cargo build -p ferry-cli` first (tests/run does)")
