"""The migration's topology for the deployed-stack rehearsals: a SASL_SSL
source with its secrets in Secrets Manager and an MSK IAM target, both
directions, ENHANCED group sync."""

import json
import os

from conftest import SOURCE, TARGET, create_topic, producer, unique, write_config

SASL_SSL = os.environ["SOURCE_SASL_SSL_BOOTSTRAP"]
IAM_TARGET = os.environ["TARGET_IAM_BOOTSTRAP"]
# The two-secret layout: SCRAM-SHA-512 credentials, and the private CA apart.
SCRAM_SECRET = os.environ["SOURCE_CREDENTIALS_SECRET_ARN"]
CA_SECRET = os.environ["SOURCE_CA_SECRET_ARN"]

# The SCRAM secret named as AWS's examples write ARNs, without the random
# suffix Secrets Manager appends (the API accepts it; IAM matches the full ARN).
# (Not the stack's "...-sha512" secrets: a name ending in a hyphen and six
# letters or digits cannot be told from a suffix offline, so no warning.)
SCRAM_SECRET_PARTIAL = SCRAM_SECRET[:-7]


# The migration's target: MSK with IAM, as the local target's MSK IAM listener
# serves it (tokens verified with each role's own credentials).
IAM_TARGET_ARN = "arn:aws:kafka:us-east-1:123456789012:cluster/rehearsal-target/3f8c2a61-7e4b-4c55-9d1e-5a0b7c9e2f10-2"


def migration_config(tmp_path, topic: str, group: str):
    """The migration's topology: a SASL_SSL source (SCRAM-SHA-512, the private
    CA, both from Secrets Manager: the credentials by a partial ARN, the CA
    by its full ARN), an MSK target with IAM authentication (the local
    target's IAM listener, named by its ARN, its CA from Secrets Manager),
    both directions, ENHANCED group sync."""
    kc, ri = write_config(tmp_path, [topic], both_ways=True, groups=[group], group_mode="ENHANCED")
    clusters = json.loads(kc.read_text())
    clusters[0] = {"ApacheKafkaCluster": {"ApacheKafkaClusterId": "source", "BootstrapBrokerString": SASL_SSL},
                   "ClientAuthentication": {"SaslScram": {"Mechanism": "SHA512", "SecretArn": SCRAM_SECRET_PARTIAL}},
                   "EncryptionInTransit": {"EncryptionType": "TLS", "RootCaCertificate": CA_SECRET}}
    clusters[1] = {"AmazonMskCluster": {"MskClusterArn": IAM_TARGET_ARN, "BootstrapBrokerString": IAM_TARGET},
                   "EncryptionInTransit": {"EncryptionType": "TLS", "RootCaCertificate": CA_SECRET}}
    kc.write_text(json.dumps(clusters, indent=2))
    flows = json.loads(ri.read_text())
    for f in flows:
        for end in ("Source", "Target"):
            if f.get(f"{end}KafkaClusterId") == "target":
                del f[f"{end}KafkaClusterId"]
                f[f"{end}KafkaClusterArn"] = IAM_TARGET_ARN
    ri.write_text(json.dumps(flows, indent=2))
    return kc, ri


def produce(bootstrap: str, topic: str, prefix: str, n: int) -> None:
    p = producer(bootstrap, **{"enable.idempotence": True})
    for i in range(n):
        p.produce(topic, partition=0, key=f"{prefix}-{i}".encode(), value=b"v")
    assert p.flush(30) == 0


def migration_topic(tmp_path, prefix: str, records: int):
    """A one-partition topic on both clusters, `records` records on the
    source (keys src-0, src-1, ...), a group named after it, and the
    migration's topology for them: (topic, group, kafka-clusters file,
    replication-info file)."""
    topic, group = unique(prefix), unique(f"{prefix}-app")
    for b in (SOURCE, TARGET):
        create_topic(b, topic, 1)
    produce(SOURCE, topic, "src", records)
    kc, ri = migration_config(tmp_path, topic, group)
    return topic, group, kc, ri
