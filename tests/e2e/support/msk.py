"""Amazon MSK as the tests reach it. The MSK IAM target (the local target's
listeners that check tokens as MSK does, infra/local/msk-iam): a target
definition naming it (msk_target), a replicator writing into it (into_msk),
the temporary credentials the stack issued (TEMPORARY), and the broker log
where the validator says what it accepted or refused (log_size, log_since).
An MSK cluster named by its ARN alone, its brokers looked up with
GetBootstrapBrokers (moto answers it): a SCRAM definition of it (scram_msk)
and a replicator with such clusters as source or target (configure)."""

import json
import os
from pathlib import Path

from conftest import ROOT, Ferry, write_config

IAM = os.environ["TARGET_IAM_BOOTSTRAP"]
IAM_SHORT = os.environ["TARGET_IAM_SHORT_BOOTSTRAP"]
REGION = os.environ["TARGET_IAM_REGION"]
CREDENTIALS_SECRET = os.environ["SOURCE_CREDENTIALS_SECRET_ARN"]
CA_SECRET = os.environ["SOURCE_CA_SECRET_ARN"]
TARGET_LOG = Path(os.environ.get("FERRY_RUN_DIR") or ROOT / ".run") / "target" / "kafka.log"


def msk_target(bootstrap: str = IAM, region: str = REGION) -> dict:
    """The target as a create-replicator definition names an MSK cluster,
    plus Ferry's BootstrapBrokerString and the private CA's secret."""
    return {"AmazonMskCluster": {"MskClusterArn": f"arn:aws:kafka:{region}:123456789012:cluster/iam-target/0a1b2c3d-4e5f-6789-abcd-ef0123456789-1",
                                 "BootstrapBrokerString": bootstrap},
            "EncryptionInTransit": {"EncryptionType": "TLS", "RootCaCertificate": CA_SECRET}}


def into_msk(tmp: Path, topics: list[str], target: dict) -> Ferry:
    """A replicator from the plain source into the MSK IAM target."""
    kc, ri = write_config(tmp, topics)
    clusters = json.loads(kc.read_text())
    clusters[1] = target
    kc.write_text(json.dumps(clusters, indent=2))
    flows = json.loads(ri.read_text())
    flows[0]["TargetKafkaClusterId"] = target["AmazonMskCluster"]["MskClusterArn"]
    ri.write_text(json.dumps(flows, indent=2))
    return Ferry(kc, ri)


def log_since(offset: int) -> str:
    with open(TARGET_LOG, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def log_size() -> int:
    return TARGET_LOG.stat().st_size


TEMPORARY = {"AWS_ACCESS_KEY_ID": os.environ["TARGET_IAM_TEMP_KEY"],
             "AWS_SECRET_ACCESS_KEY": os.environ["TARGET_IAM_TEMP_SECRET"],
             "AWS_SESSION_TOKEN": os.environ["TARGET_IAM_TEMP_TOKEN"]}


def scram_msk(arn: str, **extra) -> dict:
    """The source as create-replicator names an MSK cluster on SASL/SCRAM:
    the ARN, the credentials' secret, here the private CA's secret too."""
    return {"AmazonMskCluster": {"MskClusterArn": arn, **extra},
            "ClientAuthentication": {"SaslScram": {"Mechanism": "SHA512", "SecretArn": CREDENTIALS_SECRET}},
            "EncryptionInTransit": {"EncryptionType": "TLS", "RootCaCertificate": CA_SECRET}}


def configure(tmp: Path, topics: list[str], source: dict | None = None, target: dict | None = None) -> Ferry:
    kc, ri = write_config(tmp, topics)
    clusters, flows = json.loads(kc.read_text()), json.loads(ri.read_text())
    for i, (cluster, side) in enumerate(((source, "Source"), (target, "Target"))):
        if cluster:
            clusters[i] = cluster
            del flows[0][f"{side}KafkaClusterId"]
            flows[0][f"{side}KafkaClusterArn"] = cluster["AmazonMskCluster"]["MskClusterArn"]
    kc.write_text(json.dumps(clusters, indent=2))
    ri.write_text(json.dumps(flows, indent=2))
    return Ferry(kc, ri)
