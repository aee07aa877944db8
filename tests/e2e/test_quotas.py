"""Client quotas, as shared clusters set them: a broker over a client's
byte rate answers at once, tells the client how long to keep quiet
(`throttle_time_ms`), mutes the connection for that long, and leaves a
throttled fetch's partitions out of the answer (KIP-219). Ferry must take
that for a wait, never for "this partition does not exist", and never
time out against the muted connection. Quotas are set on Ferry's own
client id (`ferry-<cluster id>`), unique to each test, with Kafka's own
ConfigCommand."""

import json

from conftest import SOURCE, TARGET, Ferry, create_topic, producer, read_partition, unique, write_config

from support.quotas import set_client_quota


def with_cluster_ids(kc, source_id: str, target_id: str) -> None:
    """Rename the two clusters of a written configuration (and so Ferry's
    client ids on them)."""
    clusters = json.loads(kc.read_text())
    ri = kc.parent / "replication-info.json"
    info = json.loads(ri.read_text())
    names = {"source": source_id, "target": target_id}
    for c in clusters:
        c["ApacheKafkaCluster"]["ApacheKafkaClusterId"] = names[c["ApacheKafkaCluster"]["ApacheKafkaClusterId"]]
    for f in info:
        f["SourceKafkaClusterId"] = names[f["SourceKafkaClusterId"]]
        f["TargetKafkaClusterId"] = names[f["TargetKafkaClusterId"]]
    kc.write_text(json.dumps(clusters, indent=2))
    ri.write_text(json.dumps(info, indent=2))


def copied_under_quotas(tmp_path, records: int, source_quota: dict, target_quota: dict, *args: str) -> str:
    """`records` records of 1 KB over 3 partitions, copied by one `ferry
    run --once` (with `args`) under these quotas on Ferry's client ids on
    the source and the target; every record once and in order, exit 0, no
    partition in error. The run's output."""
    topic = unique("quota")
    src_id, tgt_id = unique("qsrc"), unique("qtgt")
    create_topic(SOURCE, topic, 3)
    p = producer(SOURCE, **{"enable.idempotence": True})
    for i in range(records):
        p.produce(topic, partition=i % 3, key=f"k{i:05d}".encode(), value=b"v" * 1000)
    assert p.flush(60) == 0
    kc, ri = write_config(tmp_path, [topic])
    with_cluster_ids(kc, src_id, tgt_id)
    if source_quota:
        set_client_quota(SOURCE, f"ferry-{src_id}", **source_quota)
    if target_quota:
        set_client_quota(TARGET, f"ferry-{tgt_id}", **target_quota)
    ferry = Ferry(kc, ri)
    res = ferry.run("--once", *args, env={"RUST_LOG": "warn,ferry_adapters=info,ferry_engine=info"})
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    for part in range(3):
        got = [r["key"].decode() for r in read_partition(TARGET, topic, part)]
        want = [f"k{i:05d}" for i in range(part, records, 3)]
        assert got == want, (part, len(got), len(want), sorted(set(want) - set(got))[:3])
    statuses = ferry.status()
    assert [s["last_error"] for s in statuses] == [None] * 3, statuses
    return out


def test_a_replication_under_consume_and_produce_quotas_copies_every_record_once(tmp_path):
    """Guards: a source that throttles Ferry's fetches and a target that
    throttles its produces (300 KB/s each, 6 MB to copy; Kafka measures
    a rate over 11 one-second windows, so at least 10 s). Every record is
    copied once and in order, the run ends cleanly, and no partition is
    called missing: a throttled fetch comes back without its partitions,
    which Ferry once read as "partition 0 does not exist" and stopped the
    partition on, and its next request, sent into the muted connection,
    timed out."""
    out = copied_under_quotas(tmp_path, 6000, {"consumer_byte_rate": 300_000}, {"producer_byte_rate": 300_000},
                              "--round-seconds", "60")
    assert "does not exist" not in out and "did not answer" not in out, out[-3000:]
    assert "throttled" in out, "the quota did throttle Ferry (else this test proves nothing)\n" + out[-2000:]


def test_a_produce_throttled_for_longer_than_a_request_waits_copies_every_record_once(tmp_path):
    """Guards: a produce quota far below what Ferry writes (30 KB/s,
    against 300 KB a request, 0.9 MB in all). Once the broker's window is
    full it appends each batch, then throttles the client for longer than
    a request waits (5 s) and mutes that connection. The produce after it
    is refused unsent (a passing error, the batch kept with its sequence
    and sent again), and the checkpoints' reads of the target, on a
    connection of their own, go on meanwhile. Every record once, in
    order, and the run ends cleanly."""
    # Batches of 100 KB: more than one produce per partition.
    out = copied_under_quotas(tmp_path, 900, {}, {"producer_byte_rate": 30_000},
                              "--round-seconds", "120", "--produce-batch-max-bytes", "100000")
    assert "throttles Ferry's client id" in out, "a throttle longer than a request waits (else this proves nothing)\n" + out[-3000:]
