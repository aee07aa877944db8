"""The source's SASL_SSL listener as the security tests reach it (the
listener, users and secrets come from infra/local/up): SCRAM credentials and
the private CA chain in Secrets Manager (moto), a source definition naming
them (scram_source), a replicator reading from it (configure), SCRAM users
and their ACLs on the source (set_password, grant), and records to copy
(fill)."""

import json
import os
from pathlib import Path

import boto3
from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient, ResourcePatternType,
                                   ResourceType, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion)

from conftest import SOURCE, create_topic, producer, unique, write_config

SASL_SSL = os.environ["SOURCE_SASL_SSL_BOOTSTRAP"]
CA_CHAIN = Path(os.environ["SOURCE_CA_FILE"]).read_text()
SECRETS = {
    "SHA256": os.environ["SOURCE_SCRAM256_SECRET_ARN"],
    "SHA512": os.environ["SOURCE_SCRAM512_SECRET_ARN"],
}


def secrets_manager():
    return boto3.client("secretsmanager", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])


def new_secret(value: dict) -> str:
    return secrets_manager().create_secret(Name=unique("ferry-test/secret"), SecretString=json.dumps(value))["ARN"]


def scram_source(secret_arn: str, mechanism: str = "SHA512", bootstrap: str = SASL_SSL, ca_secret: str | None = None) -> dict:
    tls = {"EncryptionType": "TLS"}
    if ca_secret:
        tls["RootCaCertificate"] = ca_secret
    return {"ApacheKafkaCluster": {"ApacheKafkaClusterId": "source", "BootstrapBrokerString": bootstrap},
            "ClientAuthentication": {"SaslScram": {"Mechanism": mechanism, "SecretArn": secret_arn}},
            "EncryptionInTransit": tls}


def configure(tmp: Path, topics: list[str], source: dict) -> tuple[Path, Path]:
    kc, ri = write_config(tmp, topics)
    clusters = json.loads(kc.read_text())
    clusters[0] = source
    kc.write_text(json.dumps(clusters, indent=2))
    return kc, ri


def fill(topic: str, partitions: int, per_partition: int, tag: str = "") -> None:
    create_topic(SOURCE, topic, partitions)
    p = producer(SOURCE)
    for part in range(partitions):
        for i in range(per_partition):
            p.produce(topic, partition=part, key=f"{tag}k{i}".encode(), value=f"{tag}v{part}-{i}".encode(), headers=[("h", b"x")])
    assert p.flush(30) == 0


def admin() -> AdminClient:
    return AdminClient({"bootstrap.servers": SOURCE})


def set_password(user: str, password: str) -> None:
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
    client = admin()  # held until the futures resolve
    for f in client.alter_user_scram_credentials([UserScramCredentialUpsertion(user, info, password.encode())]).values():
        f.result(timeout=30)


def grant(user: str, topic_prefix: str, transactional_ids: bool = True) -> None:
    """Everything on the topics with this prefix and, unless told not to,
    WRITE and DESCRIBE on Ferry's transactional ids (it writes with the
    producer of one, which a successor fences)."""
    acls = [
        AclBinding(ResourceType.TOPIC, topic_prefix, ResourcePatternType.PREFIXED, f"User:{user}", "*",
                   AclOperation.ALL, AclPermissionType.ALLOW),
    ]
    if transactional_ids:
        acls += [AclBinding(ResourceType.TRANSACTIONAL_ID, "ferry-", ResourcePatternType.PREFIXED, f"User:{user}", "*", op,
                            AclPermissionType.ALLOW) for op in (AclOperation.WRITE, AclOperation.DESCRIBE)]
    client = admin()  # held until the futures resolve
    for f in client.create_acls(acls).values():
        f.result(timeout=30)
