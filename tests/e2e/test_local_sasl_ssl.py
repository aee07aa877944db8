"""The local source cluster's SASL_SSL listener, as MSK Replicator reaches a
self-managed source: SCRAM-SHA-256/512 over TLS, a broker certificate from a
private CA (root and intermediate) whose only name is DNS:localhost. These
tests check the stack itself with librdkafka, so that Ferry's own TLS and
SCRAM code is tested against a listener known to be right: what must work
does, and each failure a client must report (wrong host name, untrusted CA,
expired certificate, wrong password, no ACL) happens for the intended reason.
Python's ssl module names that reason, since librdkafka says only "certificate
verify failed". Needs infra/local/up and its stack.env; never runs Ferry.
"""

import json
import os
import socket
import ssl
import time
from pathlib import Path

import boto3
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import unique

NEEDED = [
    "SOURCE_SASL_SSL_BOOTSTRAP", "SOURCE_EXPIRED_BOOTSTRAP", "SOURCE_CA_FILE", "SOURCE_OTHER_CA_FILE", "SOURCE_SCRAM_USER", "SOURCE_SCRAM_PASSWORD",
    "SOURCE_SCRAM512_SECRET_ARN", "SOURCE_SCRAM256_SECRET_ARN", "SOURCE_CREDENTIALS_SECRET_ARN", "SOURCE_CA_SECRET_ARN",
]
MISSING = [name for name in NEEDED if not os.environ.get(name)]
if MISSING:
    # A stack without the listener is a failure, never a skip.
    raise RuntimeError(f"{', '.join(MISSING)} unset: run infra/local/up, then . infra/local/stack.env")

SASL_SSL = os.environ.get("SOURCE_SASL_SSL_BOOTSTRAP", "localhost:19094")
EXPIRED = os.environ.get("SOURCE_EXPIRED_BOOTSTRAP", "")
CA_FILE = os.environ.get("SOURCE_CA_FILE", "")
OTHER_CA_FILE = os.environ.get("SOURCE_OTHER_CA_FILE", "")
USER = os.environ.get("SOURCE_SCRAM_USER", "ferry")
PASSWORD = os.environ.get("SOURCE_SCRAM_PASSWORD", "")
MECHANISMS = ["SCRAM-SHA-256", "SCRAM-SHA-512"]


def port(bootstrap: str) -> int:
    return int(bootstrap.rsplit(":", 1)[1])


def client_conf(mechanism: str = "SCRAM-SHA-512", **extra) -> dict:
    conf = {
        "bootstrap.servers": SASL_SSL,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": mechanism,
        "sasl.username": USER,
        "sasl.password": PASSWORD,
        "ssl.ca.location": CA_FILE,
    }
    conf.update(extra)
    return conf


def first_error(conf: dict, timeout: float = 15.0) -> KafkaError:
    """The first error librdkafka reports for a client that cannot get in;
    fails the test if it got metadata instead."""
    errors: list[KafkaError] = []
    p = Producer({**conf, "error_cb": errors.append, "log_level": 0, "reconnect.backoff.ms": 1000})
    deadline = time.monotonic() + timeout
    while not errors and time.monotonic() < deadline:
        p.poll(0.1)
    assert errors, f"no error within {timeout}s connecting with {conf['bootstrap.servers']}"
    return errors[0]


def assert_refused_in_handshake(error: KafkaError) -> None:
    """librdkafka refused the broker's certificate. It names that failure
    _SSL, or _TRANSPORT when the handshake error reaches it through the
    socket first (seen once in a hundred runs); the message is the same."""
    assert error.code() in (KafkaError._SSL, KafkaError._TRANSPORT), error
    assert "certificate verify failed" in error.str(), error


def tls_verify_error(bootstrap: str, server_name: str, cafile: str) -> str:
    """OpenSSL's verification message for the listener's certificate, as a
    client asking for server_name sees it; empty when it verifies."""
    context = ssl.create_default_context(cafile=cafile)
    try:
        with socket.create_connection(("127.0.0.1", port(bootstrap)), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=server_name):
                return ""
    except ssl.SSLCertVerificationError as e:
        return e.verify_message


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_produce_and_consume(mechanism):
    """The replicator's user creates a topic (a super user: no ACLs needed),
    writes and reads it back, with each mechanism, trusting the CA chain."""
    topic = unique("sasl-ssl")
    admin = AdminClient(client_conf(mechanism))
    for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        f.result(timeout=30)
    # Brokers are advertised under the certificate's name.
    brokers = admin.list_topics(timeout=30).brokers
    assert [f"{b.host}:{b.port}" for b in brokers.values()] == [SASL_SSL]

    p = Producer(client_conf(mechanism))
    p.produce(topic, key=b"k", value=mechanism.encode(), headers=[("h", b"v")])
    assert p.flush(30) == 0

    c = Consumer(client_conf(mechanism, **{"group.id": unique("sasl-ssl"), "enable.auto.commit": False}))
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 30
        m = None
        while m is None and time.monotonic() < deadline:
            m = c.poll(1.0)
        assert m is not None, "nothing read back within 30 s"
        assert m.error() is None, m.error()
        assert (m.key(), m.value(), m.headers()) == (b"k", mechanism.encode(), [("h", b"v")])
    finally:
        c.close()


def test_root_ca_alone_is_enough():
    """The broker sends the intermediate CA with its certificate."""
    root = Path(CA_FILE).with_name("root-ca.pem")
    assert tls_verify_error(SASL_SSL, "localhost", str(root)) == ""
    assert AdminClient(client_conf(**{"ssl.ca.location": str(root)})).list_topics(timeout=30).brokers


def test_ip_address_fails_hostname_verification():
    """The certificate names localhost only: 127.0.0.1 is refused, and only
    because of the name (the same connection works without the check)."""
    ip = f"127.0.0.1:{port(SASL_SSL)}"
    assert "mismatch" in tls_verify_error(SASL_SSL, "127.0.0.1", CA_FILE)
    error = first_error(client_conf(**{"bootstrap.servers": ip}))
    assert_refused_in_handshake(error)
    unchecked = client_conf(**{"bootstrap.servers": ip, "ssl.endpoint.identification.algorithm": "none"})
    assert AdminClient(unchecked).list_topics(timeout=30).brokers


def test_other_ca_is_not_trusted():
    assert tls_verify_error(SASL_SSL, "localhost", OTHER_CA_FILE) == "unable to get local issuer certificate"
    error = first_error(client_conf(**{"ssl.ca.location": OTHER_CA_FILE}))
    assert_refused_in_handshake(error)


def test_expired_certificate_is_refused():
    """Same CA, same name, but expired: the listener starts, clients refuse it."""
    assert tls_verify_error(EXPIRED, "localhost", CA_FILE) == "certificate has expired"
    error = first_error(client_conf(**{"bootstrap.servers": EXPIRED}))
    assert_refused_in_handshake(error)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_wrong_password_fails_authentication(mechanism):
    error = first_error(client_conf(mechanism, **{"sasl.password": "not-" + PASSWORD}))
    assert error.code() == KafkaError._AUTHENTICATION, error
    assert "invalid credentials" in error.str()


def test_mechanism_without_credential_fails_authentication():
    """alice has a SCRAM-SHA-256 credential only."""
    error = first_error(client_conf("SCRAM-SHA-512", **{"sasl.username": "alice", "sasl.password": "alice-secret"}))
    assert error.code() == KafkaError._AUTHENTICATION, error


def test_user_without_acls_is_not_authorized():
    """alice gets in but, without ACLs, can neither see nor write a topic."""
    topic = unique("sasl-ssl-acl")
    admin = AdminClient(client_conf())  # kept alive until the futures resolve
    for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        f.result(timeout=30)
    alice = client_conf("SCRAM-SHA-256", **{"sasl.username": "alice", "sasl.password": "alice-secret"})
    assert topic not in AdminClient(alice).list_topics(timeout=30).topics
    reports = []
    p = Producer({**alice, "message.timeout.ms": 10000})
    p.produce(topic, value=b"x", on_delivery=lambda err, msg: reports.append(err))
    p.flush(15)
    assert len(reports) == 1 and reports[0] is not None, reports
    assert reports[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, reports[0]


def test_secrets_hold_the_login_and_ca_chain():
    """MSK Replicator's two shapes: one secret with login and CA chain per
    mechanism; or a login secret and a CA secret."""
    sm = boto3.client("secretsmanager", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),
                      region_name=os.environ.get("AWS_REGION", "us-east-1"))
    chain = Path(CA_FILE).read_text()
    assert chain.count("BEGIN CERTIFICATE") == 2

    def secret(var: str) -> tuple[str, dict]:
        got = sm.get_secret_value(SecretId=os.environ[var])
        assert got["ARN"] == os.environ[var]
        return got["Name"], json.loads(got["SecretString"])

    login = {"username": USER, "password": PASSWORD}
    assert secret("SOURCE_SCRAM512_SECRET_ARN") == ("ferry/local/source-scram-sha512", {**login, "certificate": chain})
    assert secret("SOURCE_SCRAM256_SECRET_ARN") == ("ferry/local/source-scram-sha256", {**login, "certificate": chain})
    assert secret("SOURCE_CREDENTIALS_SECRET_ARN") == ("ferry/local/source-credentials", login)
    assert secret("SOURCE_CA_SECRET_ARN") == ("ferry/local/source-ca", {"certificate": chain})
