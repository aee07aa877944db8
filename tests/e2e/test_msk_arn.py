"""An MSK cluster given by its ARN alone, as `aws kafka create-replicator`
takes it: Ferry looks its brokers up with MSK's GetBootstrapBrokers, for
the listener of the authentication it uses, and fails fast, writing
nothing, when the cluster lacks that listener.

No MSK cluster is reachable here: the stack's moto answers
GetBootstrapBrokers (infra/local/moto/ferry_moto.py) with the local
brokers each test registers on a cluster it creates in moto. So these tests
prove the SDK call, the field Ferry takes and what it does without one, not
what AWS answers for a real cluster.
"""

import json
import os
import time

import pytest

from conftest import (SOURCE, TARGET, Ferry, create_topic, dynamo, list_topics, msk_cluster, producer, read_partition, unique,
                      write_config)
from support.msk import configure, scram_msk

SASL_SSL = os.environ["SOURCE_SASL_SSL_BOOTSTRAP"]
EXPIRED = os.environ["SOURCE_EXPIRED_BOOTSTRAP"]
LOOKED_UP = "MSK bootstrap brokers looked up"


def fill(topic: str, partitions: int, per_partition: int, tag: str) -> None:
    p = producer(SOURCE)
    for part in range(partitions):
        for i in range(per_partition):
            p.produce(topic, partition=part, key=f"{tag}-{part}-{i}".encode(), value=f"v{i}".encode() * (i % 7),
                      headers=[("h", f"{i}".encode()), ("h", None)], timestamp=1_700_000_000_000 + i)
    assert p.flush(30) == 0


def same(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] for k in ("key", "value", "headers", "timestamp"))


def test_an_msk_source_by_its_arn_alone_is_looked_up_and_replicated_exactly(tmp_path):
    """The source is an MSK cluster on SASL/SCRAM named by its ARN alone.
    GetBootstrapBrokers also answers a plaintext and a TLS listener, each
    a port where SCRAM cannot work (the PLAINTEXT port; the listener with
    an expired certificate): only the SCRAM listener's field gets the
    records across. It is looked up once for the whole run, and every
    record arrives as it was. The same state, with the brokers then given
    in BootstrapBrokerString, goes on from where the lookup left it: the
    cluster's identity is its ARN either way."""
    topic = unique("msk-arn")
    create_topic(SOURCE, topic, 3)
    fill(topic, 3, 40, "first")
    arn = msk_cluster(unique("msk-src"), {"BootstrapBrokerStringSaslScram": SASL_SSL,
                                          "BootstrapBrokerString": SOURCE, "BootstrapBrokerStringTls": EXPIRED})
    ferry = configure(tmp_path, [topic], source=scram_msk(arn))
    res = ferry.run("--once", timeout=180, env={"RUST_LOG": "warn,ferry_adapters=info"})
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert out.count(LOOKED_UP) == 1, out[-3000:]
    assert "BootstrapBrokerStringSaslScram" in out and SASL_SSL in out, out[-3000:]
    for part in range(3):
        src, tgt = read_partition(SOURCE, topic, part), read_partition(TARGET, topic, part)
        assert len(src) == 40 and len(tgt) == 40 and all(same(a, b) for a, b in zip(src, tgt)), part

    # Brokers given this time, same replicator and tables: only the new records.
    fill(topic, 3, 5, "second")
    given = configure(tmp_path, [topic], source=scram_msk(arn, BootstrapBrokerString=SASL_SSL))
    given.name, given.prefix = ferry.name, ferry.prefix
    res = given.run("--once", timeout=180, env={"RUST_LOG": "warn,ferry_adapters=info"})
    out = res.stdout + res.stderr
    assert res.returncode == 0 and LOOKED_UP not in out, out[-3000:]
    for part in range(3):
        src, tgt = read_partition(SOURCE, topic, part), read_partition(TARGET, topic, part)
        assert len(tgt) == 45 and all(same(a, b) for a, b in zip(src, tgt)), part


def test_an_msk_target_by_its_arn_alone_is_looked_up_and_written_exactly(tmp_path):
    """The other side: records from a plain cluster into an MSK target on
    SASL/SCRAM named by its ARN alone (here the stack's source cluster,
    through its SASL_SSL listener): created topic, produce and
    checkpoints all go through the brokers looked up."""
    topic = unique("msk-arn-target")
    create_topic(TARGET, topic, 2)
    p = producer(TARGET)
    for part in range(2):
        for i in range(25):
            p.produce(topic, partition=part, key=f"t-{part}-{i}".encode(), value=f"v{i}".encode(),
                      headers=[("h", b"1")], timestamp=1_700_000_000_000 + i)
    assert p.flush(30) == 0
    arn = msk_cluster(unique("msk-tgt"), {"BootstrapBrokerStringSaslScram": SASL_SSL, "BootstrapBrokerString": SOURCE})
    kc, ri = write_config(tmp_path, [topic])
    plain = {"ApacheKafkaCluster": {"ApacheKafkaClusterId": "plain", "BootstrapBrokerString": TARGET},
             "EncryptionInTransit": {"EncryptionType": "PLAINTEXT"}}
    kc.write_text(json.dumps([plain, scram_msk(arn)], indent=2))
    flows = json.loads(ri.read_text())
    del flows[0]["SourceKafkaClusterId"], flows[0]["TargetKafkaClusterId"]
    flows[0].update(SourceKafkaClusterId="plain", TargetKafkaClusterArn=arn)
    ri.write_text(json.dumps(flows, indent=2))
    res = Ferry(kc, ri).run("--once", timeout=180, env={"RUST_LOG": "warn,ferry_adapters=info"})
    out = res.stdout + res.stderr
    assert res.returncode == 0 and out.count(LOOKED_UP) == 1, out[-3000:]
    for part in range(2):
        src, tgt = read_partition(TARGET, topic, part), read_partition(SOURCE, topic, part)
        assert len(src) == 25 and len(tgt) == 25 and all(same(a, b) for a, b in zip(src, tgt)), part


@pytest.mark.parametrize("side,auth,listeners,lacks,fix", [
    # An IAM target (no ClientAuthentication) whose cluster has SCRAM only.
    ("target", "iam", {"BootstrapBrokerStringSaslScram": SASL_SSL}, "IAM listener", "turn on IAM access control"),
    # A SCRAM source whose cluster has IAM (and plaintext) only.
    ("source", "scram", {"BootstrapBrokerStringSaslIam": SASL_SSL, "BootstrapBrokerString": SOURCE},
     "SASL/SCRAM listener", "batch-associate-scram-secret"),
])
def test_an_msk_cluster_without_the_listener_of_its_authentication_fails_fast_and_writes_nothing(
        tmp_path, side, auth, listeners, lacks, fix):
    """The lookup finds no bootstrap string for the configured
    authentication: the run stops at once (not retried for a minute) with a
    configuration error naming the listener the cluster lacks and how to
    turn it on, and nothing is written: no target topic, no cursor."""
    topic = unique("msk-nolistener")
    create_topic(SOURCE, topic, 1)
    fill(topic, 1, 3, "x")
    arn = msk_cluster(unique(f"msk-{auth}"), listeners)
    cluster = scram_msk(arn) if auth == "scram" else {"AmazonMskCluster": {"MskClusterArn": arn}}
    ferry = configure(tmp_path, [topic], **{side: cluster})
    started = time.monotonic()
    res = ferry.run("--once", timeout=120)
    took = time.monotonic() - started
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert took < 5, f"{took:.1f} s: {out[-3000:]}"
    assert f"has no {lacks}" in out and fix in out and arn in out, out[-3000:]
    assert "[Ferry.ConfigError]" in out and "giving up" not in out and "retrying" not in out, out[-3000:]
    assert topic not in list_topics(TARGET)
    assert dynamo().scan(TableName=f"{ferry.prefix}-cursors")["Count"] == 0


def test_an_msk_arn_that_names_no_cluster_is_a_configuration_error(tmp_path):
    """A well-formed ARN MSK does not know (another account, region or a
    deleted cluster): MSK's NotFoundException, said as such, not retried."""
    topic = unique("msk-unknown")
    create_topic(SOURCE, topic, 1)
    arn = "arn:aws:kafka:us-east-1:123456789012:cluster/nowhere/00000000-0000-0000-0000-000000000000-1"
    ferry = configure(tmp_path, [topic], target={"AmazonMskCluster": {"MskClusterArn": arn}})
    started = time.monotonic()
    res = ferry.run("--once", timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and time.monotonic() - started < 5, out[-3000:]
    assert "NotFoundException" in out and "check the ARN" in out and "[Ferry.ConfigError]" in out, out[-3000:]
    assert topic not in list_topics(TARGET)
