"""Ensure the local source cluster's SCRAM users and Secrets Manager secrets.

Used by infra/local/up on every run; runs from the stack's venv
(confluent-kafka, boto3). SCRAM credentials are set over PLAINTEXT (as
User:ANONYMOUS, a super user): a stack formatted before a user was added
gets it too, and a password changed by hand is reset. The secrets are
created or overwritten in moto, which keeps them in memory only. Then the
replicator's user connects over SASL_SSL with each mechanism, so `up` fails
here rather than in a test when the listener or a credential is wrong.

Prints `export NAME=value` lines (the secrets' ARNs) for stack.env.
"""

import argparse
import json
import shlex
import sys
import time

import boto3
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

MECHANISMS = {
    "SCRAM-SHA-256": ScramMechanism.SCRAM_SHA_256,
    "SCRAM-SHA-512": ScramMechanism.SCRAM_SHA_512,
}
# Kafka's minimum and kafka-configs' default.
ITERATIONS = 4096


def scram_user(spec: str) -> tuple[str, str, str]:
    """MECHANISM=NAME:PASSWORD, as StorageTool's --add-scram names them."""
    mechanism, _, rest = spec.partition("=")
    name, _, password = rest.partition(":")
    if mechanism not in MECHANISMS or not name or not password:
        raise argparse.ArgumentTypeError(f"expected SCRAM-SHA-256|512=NAME:PASSWORD, got {spec!r}")
    return mechanism, name, password


def ensure_users(bootstrap: str, users: list[tuple[str, str, str]]) -> None:
    # Warnings and errors only: not librdkafka's notes about its own shutdown.
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    pending = list(users)
    while pending:
        # Kafka refuses two alterations of one user in a request
        # (DUPLICATE_RESOURCE): a user's second mechanism goes in the next.
        batch: dict[str, tuple[str, str]] = {}
        rest = []
        for mechanism, name, password in pending:
            if name in batch:
                rest.append((mechanism, name, password))
            else:
                batch[name] = (mechanism, password)
        upserts = [
            UserScramCredentialUpsertion(name, ScramCredentialInfo(MECHANISMS[mechanism], ITERATIONS), password.encode())
            for name, (mechanism, password) in batch.items()
        ]
        for name, future in admin.alter_user_scram_credentials(upserts).items():
            try:
                future.result(timeout=30)
            except KafkaException as e:
                sys.exit(f"setting the SCRAM credentials of {name} on {bootstrap} failed: {e}")
        pending = rest


def ensure_secrets(moto_url: str, secrets: dict[str, dict]) -> dict[str, str]:
    """Creates or overwrites each secret; returns name -> ARN."""
    sm = boto3.client(
        "secretsmanager",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    arns = {}
    for name, value in secrets.items():
        body = json.dumps(value)
        try:
            arns[name] = sm.create_secret(Name=name, SecretString=body)["ARN"]
        except sm.exceptions.ResourceExistsException:
            arns[name] = sm.put_secret_value(SecretId=name, SecretString=body)["ARN"]
    return arns


def check_sasl_ssl(bootstrap: str, ca_file: str, user: str, password: str, mechanism: str, timeout: float) -> None:
    """Waits until USER gets metadata over SASL_SSL (a new SCRAM credential
    reaches the broker through the metadata log, not at once)."""
    deadline = time.monotonic() + timeout
    while True:
        admin = AdminClient(
            {
                "bootstrap.servers": bootstrap,
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": mechanism,
                "sasl.username": user,
                "sasl.password": password,
                "ssl.ca.location": ca_file,
                # Failed attempts are retried here; the last error is reported.
                "log_level": 0,
            }
        )
        try:
            if admin.list_topics(timeout=5).brokers:
                return
            error = "no broker in the metadata"
        except KafkaException as e:
            error = str(e)
        if time.monotonic() >= deadline:
            sys.exit(f"{user} cannot connect to {bootstrap} with SASL_SSL {mechanism} after {timeout:.0f}s: {error}")
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="the source's PLAINTEXT bootstrap address")
    parser.add_argument("--sasl-ssl-bootstrap", required=True, help="the source's SASL_SSL bootstrap address")
    parser.add_argument("--ca-file", required=True, help="CA chain PEM that clients trust")
    parser.add_argument("--moto-url", required=True)
    parser.add_argument("--user", required=True, help="the replicator's user, in the secrets")
    parser.add_argument("--password", required=True)
    parser.add_argument(
        "--scram", type=scram_user, action="append", default=[], metavar="MECHANISM=NAME:PASSWORD",
        help="a SCRAM credential to set (repeat)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds for the SASL_SSL check")
    args = parser.parse_args()

    ensure_users(args.bootstrap, args.scram)

    with open(args.ca_file, encoding="ascii") as f:
        chain = f.read()
    login = {"username": args.user, "password": args.password}
    # MSK Replicator's shapes: one secret with the login and the CA chain, or
    # a login secret and a CA secret.
    names = {
        "SOURCE_SCRAM512_SECRET_ARN": ("ferry/local/source-scram-sha512", {**login, "certificate": chain}),
        "SOURCE_SCRAM256_SECRET_ARN": ("ferry/local/source-scram-sha256", {**login, "certificate": chain}),
        "SOURCE_CREDENTIALS_SECRET_ARN": ("ferry/local/source-credentials", login),
        "SOURCE_CA_SECRET_ARN": ("ferry/local/source-ca", {"certificate": chain}),
    }
    arns = ensure_secrets(args.moto_url, dict(names.values()))

    for mechanism in MECHANISMS:
        check_sasl_ssl(args.sasl_ssl_bootstrap, args.ca_file, args.user, args.password, mechanism, args.timeout)

    for var, (name, _) in names.items():
        print(f"export {var}={shlex.quote(arns[name])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
