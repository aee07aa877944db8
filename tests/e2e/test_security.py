"""Ferry reaching the source as MSK Replicator reaches a self-managed one:
SASL/SCRAM over TLS with a private CA, credentials and CA chain in Secrets
Manager (moto). Replication with each mechanism and both secret layouts, a
password rotated under a running replicator, each failure with its message,
and no secret in any output. The listener, users and secrets come from
infra/local/up (see test_local_sasl_ssl.py for the listener itself).
"""

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

from conftest import SOURCE, TARGET, Ferry, create_topic, list_topics, producer, read_partition, unique, write_config
from support.security import (CA_CHAIN, SASL_SSL, SECRETS, admin, configure, fill, grant, new_secret, scram_source,
                              secrets_manager, set_password)

EXPIRED = os.environ["SOURCE_EXPIRED_BOOTSTRAP"]
USER = os.environ["SOURCE_SCRAM_USER"]
PASSWORD = os.environ["SOURCE_SCRAM_PASSWORD"]
OTHER_CA = Path(os.environ["SOURCE_OTHER_CA_FILE"]).read_text()
CREDENTIALS_SECRET = os.environ["SOURCE_CREDENTIALS_SECRET_ARN"]
CA_SECRET = os.environ["SOURCE_CA_SECRET_ARN"]
PKI = Path(os.environ["SOURCE_CA_FILE"]).parent


def into_sasl_ssl(tmp: Path, topics: list[str], secure: dict) -> Ferry:
    """A replicator from the PLAINTEXT cluster (the stack's target) into the
    SASL_SSL listener (the stack's source) reached as `secure` describes."""
    kc, ri = write_config(tmp, topics)
    plain = {"ApacheKafkaCluster": {"ApacheKafkaClusterId": "plain", "BootstrapBrokerString": TARGET},
             "EncryptionInTransit": {"EncryptionType": "PLAINTEXT"}}
    secure["ApacheKafkaCluster"]["ApacheKafkaClusterId"] = "secure"
    kc.write_text(json.dumps([plain, secure], indent=2))
    flows = json.loads(ri.read_text())
    flows[0]["SourceKafkaClusterId"], flows[0]["TargetKafkaClusterId"] = "plain", "secure"
    ri.write_text(json.dumps(flows, indent=2))
    return Ferry(kc, ri)


def fill_reversed(topic: str) -> None:
    """For into_sasl_ssl: `topic` with 20 records on the PLAINTEXT cluster
    (the flow's source), and empty on the SASL_SSL one (its target)."""
    create_topic(TARGET, topic, 1)
    create_topic(SOURCE, topic, 1)
    p = producer(TARGET)
    for i in range(20):
        p.produce(topic, partition=0, key=f"k{i}".encode(), value=b"v")
    assert p.flush(30) == 0


def key_material() -> list[str]:
    """Lines of every private key of the local CA and brokers."""
    lines = []
    for key in PKI.glob("*.key"):
        lines += [ln for ln in key.read_text().splitlines() if ln and not ln.startswith("-----")]
    assert lines, f"no private keys under {PKI}"
    return lines


def assert_no_secret(text: str, *passwords: str) -> None:
    for secret in (PASSWORD, *passwords):
        assert secret not in text, "a password appears in Ferry's output"
    for line in key_material():
        assert line not in text, "private key material appears in Ferry's output"


@pytest.mark.parametrize("mechanism,layout", [("SHA256", "one secret"), ("SHA512", "one secret"),
                                              ("SHA512", "credentials and CA in two secrets")])
def test_replicates_over_sasl_ssl(tmp_path, mechanism, layout):
    topic = unique(f"sec-{mechanism.lower()}")
    fill(topic, 3, 100)
    if layout == "one secret":
        source = scram_source(SECRETS[mechanism], mechanism)
    else:
        source = scram_source(CREDENTIALS_SECRET, mechanism, ca_secret=CA_SECRET)
    ferry = Ferry(*configure(tmp_path, [topic], source))
    res = ferry.run("--once")
    assert res.returncode == 0, res.stdout + res.stderr
    for part in range(3):
        got = [(m["key"], m["value"], m["headers"]) for m in read_partition(TARGET, topic, part)]
        assert got == [(f"k{i}".encode(), f"v{part}-{i}".encode(), [("h", b"x")]) for i in range(100)]
    status = subprocess.run(ferry.args("status", "--json"), capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert_no_secret(res.stdout + res.stderr + status.stdout + status.stderr)


def failing_source(case: str) -> tuple[dict, list[str]]:
    """A source definition that cannot get in, and words its error must hold."""
    if case == "wrong password":
        arn = new_secret({"username": USER, "password": "not-the-password", "certificate": CA_CHAIN})
        return scram_source(arn), ["cluster source", "SaslAuthenticationFailed", "invalid credentials", "password"]
    if case == "untrusted CA":
        arn = new_secret({"username": USER, "password": PASSWORD, "certificate": OTHER_CA})
        return scram_source(arn), ["TLS to cluster source", "UnknownIssuer", "private root CA"]
    if case == "hostname mismatch":
        ip = "127.0.0.1:" + SASL_SSL.rsplit(":", 1)[1]
        return scram_source(SECRETS["SHA512"], bootstrap=ip), ["TLS to cluster source", "not valid for name \"127.0.0.1\"", "host name"]
    if case == "expired certificate":
        return scram_source(SECRETS["SHA512"], bootstrap=EXPIRED), ["TLS to cluster source", "expired", "renew"]
    if case == "wrong mechanism":
        # alice has only a SCRAM-SHA-256 credential.
        arn = new_secret({"username": "alice", "password": "alice-secret", "certificate": CA_CHAIN})
        return scram_source(arn, "SHA512"), ["cluster source", "SaslAuthenticationFailed"]
    if case == "secret without password":
        arn = new_secret({"username": USER, "certificate": CA_CHAIN})
        return scram_source(arn), ["for cluster source", "no string field `password`"]
    if case == "plaintext listener":
        return scram_source(SECRETS["SHA512"], bootstrap=SOURCE), ["TLS to cluster source", "TLS listener"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["wrong password", "untrusted CA", "hostname mismatch", "expired certificate",
                                  "wrong mechanism", "secret without password", "plaintext listener"])
def test_each_failure_names_the_cluster_and_the_cause_and_writes_nothing(tmp_path, case):
    topic = unique("sec-fail")
    fill(topic, 1, 5)
    source, words = failing_source(case)
    ferry = Ferry(*configure(tmp_path, [topic], source))
    res = ferry.run("--once", "--give-up-seconds", "5", timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    for w in words:
        assert w in out, f"{w!r} missing from: {out[-2000:]}"
    assert topic not in list_topics(TARGET), "nothing may be written to the target"
    assert_no_secret(out, "not-the-password")
    # The AuthError metric: the Report step's ping is refused for that reason.
    rep = subprocess.run(ferry.args("report", "--json"), capture_output=True, text=True, timeout=120)
    clusters = {c["alias"]: c for c in json.loads(rep.stdout)["clusters"]}
    # TLS against a PLAINTEXT port ends like a handshake cut by the network
    # (the connection closes): retried, reported unreachable with the hint,
    # not counted as an authentication error.
    assert clusters["source"]["auth_error"] == (case != "plaintext listener"), clusters
    assert not clusters["source"]["ping_ok"], clusters
    assert not clusters["target"]["auth_error"] and clusters["target"]["ping_ok"], clusters
    assert_no_secret(rep.stdout + rep.stderr, "not-the-password")


def test_secrets_manager_out_of_reach_points_at_the_network(tmp_path):
    """#20 item 7: in a private subnet without a Secrets Manager endpoint
    or NAT the secret cannot be fetched at all; the error must say so and
    name the fix (the VPC endpoint, NAT, outbound 443), not send the user
    to check the ARN and the role. Nothing is written."""
    topic = unique("sec-noroute")
    fill(topic, 1, 5)
    with socket.socket() as s:  # a port nothing listens on: connections refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ferry = Ferry(*configure(tmp_path, [topic], scram_source(SECRETS["SHA512"])))
    res = ferry.run("--once", "--give-up-seconds", "5", timeout=120,
                    env={"AWS_ENDPOINT_URL_SECRETS_MANAGER": f"http://127.0.0.1:{port}"})
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    for w in ["cluster source", "secretsmanager did not answer", "VPC endpoint (com.amazonaws.<region>.secretsmanager)",
              "NAT gateway", "443"]:
        assert w in out, f"{w!r} missing from: {out[-2000:]}"
    assert "check the ARN" not in out, out[-2000:]
    assert topic not in list_topics(TARGET), "nothing may be written to the target"


def target_end(topic: str) -> int:
    """The target partition 0's end offset; 0 before the topic exists."""
    if topic not in list_topics(TARGET):
        return 0
    c = Consumer({"bootstrap.servers": TARGET, "group.id": unique("probe")})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        c.close()


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}")


def test_rotated_password_is_used_without_a_restart(tmp_path):
    """The broker ends SASL sessions on this listener after 20 s, so a
    running client re-authenticates in band. After the password changes in
    Kafka and then in the secret, the running replicator's next
    authentication fails, it reads the secret again, and replication goes on
    in the same process."""
    user, old, new = unique("rotator"), unique("old-pw"), unique("new-pw")
    topic = unique("sec-rot")
    set_password(user, old)
    grant(user, topic)
    fill(topic, 1, 50, tag="before-")
    secret = new_secret({"username": user, "password": old, "certificate": CA_CHAIN})
    ferry = Ferry(*configure(tmp_path, [topic], scram_source(secret)))
    log = tmp_path / "ferry.log"
    proc = ferry.spawn("--round-seconds", "5", log=log, env={"RUST_LOG": "warn,ferry_engine=info,ferry_adapters=info"})
    try:
        wait_for(lambda: target_end(topic) >= 50, 90, "the first 50 records on the target")
        set_password(user, new)
        secrets_manager().put_secret_value(SecretId=secret,
                                           SecretString=json.dumps({"username": user, "password": new, "certificate": CA_CHAIN}))
        # A session authenticated with the old password stays valid until
        # it ends: produce once the replicator had to authenticate again.
        time.sleep(25)
        p = producer(SOURCE)
        for i in range(50):
            p.produce(topic, partition=0, key=f"after-k{i}".encode(), value=b"v")
        assert p.flush(30) == 0
        wait_for(lambda: target_end(topic) >= 100, 120, "the 50 records produced after the rotation on the target")
        assert proc.poll() is None, "the replicator must not have restarted"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    text = log.read_text()
    keys = [m["key"] for m in read_partition(TARGET, topic, 0)]
    assert keys == [f"before-k{i}".encode() for i in range(50)] + [f"after-k{i}".encode() for i in range(50)]
    # Refused with the old password, then the secret read again: in band
    # (KIP-368), or on a new connection if the broker closed the old one.
    assert ("re-authentication refused; connecting again" in text
            or "authentication refused; reading the credentials again" in text), "the refused re-authentication is logged"
    assert_no_secret(text, old, new)


def test_missing_acl_names_the_topic_and_writes_nothing(tmp_path):
    """A user with no ACL on the topic: the plan says which topic it may not
    read instead of replicating nothing in silence."""
    user, password = unique("no-acl"), unique("pw")
    set_password(user, password)
    topic = unique("sec-acl")
    fill(topic, 1, 5)
    secret = new_secret({"username": user, "password": password, "certificate": CA_CHAIN})
    ferry = Ferry(*configure(tmp_path, [topic], scram_source(secret)))
    res = ferry.run("--once", "--give-up-seconds", "5", timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "cluster source" in out and "TopicAuthorizationFailed" in out and topic in out, out[-2000:]
    assert topic not in list_topics(TARGET)
    assert_no_secret(out, password)
    # AuthError, though the cluster answers its ping.
    rep = subprocess.run(ferry.args("report", "--json"), capture_output=True, text=True, timeout=120)
    source = next(c for c in json.loads(rep.stdout)["clusters"] if c["alias"] == "source")
    assert source["ping_ok"] and source["auth_error"] and "TopicAuthorizationFailed" in source["error"], source


def test_writes_to_a_target_over_sasl_ssl(tmp_path):
    """The other direction: a PLAINTEXT cluster replicated into the SASL_SSL
    listener, so topic creation, idempotent produce and the target's
    metadata all go over TLS and SCRAM."""
    topic = unique("sec-into")
    create_topic(TARGET, topic, 2)
    p = producer(TARGET)
    for part in range(2):
        for i in range(100):
            p.produce(topic, partition=part, key=f"k{i}".encode(), value=f"v{part}-{i}".encode())
    assert p.flush(30) == 0
    res = into_sasl_ssl(tmp_path, [topic], scram_source(SECRETS["SHA256"], "SHA256")).run("--once")
    assert res.returncode == 0, res.stdout + res.stderr
    for part in range(2):
        got = [(m["key"], m["value"]) for m in read_partition(SOURCE, topic, part)]
        assert got == [(f"k{i}".encode(), f"v{part}-{i}".encode()) for i in range(100)]
    assert_no_secret(res.stdout + res.stderr)


def test_no_secret_in_trace_logs(tmp_path):
    """At the most verbose log level, a succeeding and a failing run print
    neither a password nor key material."""
    topic = unique("sec-trace")
    fill(topic, 1, 10)
    ok = Ferry(*configure(tmp_path, [topic], scram_source(SECRETS["SHA512"])))
    env = dict(os.environ, RUST_LOG="trace")
    good = subprocess.run(ok.args("run", "--once"), capture_output=True, text=True, timeout=300, env=env)
    assert good.returncode == 0, good.stderr[-2000:]
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    arn = new_secret({"username": USER, "password": "trace-wrong-password", "certificate": CA_CHAIN})
    bad = Ferry(*configure(bad_dir, [topic], scram_source(arn)))
    failed = subprocess.run(bad.args("run", "--once", "--give-up-seconds", "3"), capture_output=True, text=True,
                            timeout=300, env=env)
    assert failed.returncode != 0
    assert_no_secret(good.stdout + good.stderr + failed.stdout + failed.stderr, "trace-wrong-password")


def test_target_refusing_a_topic_stops_only_that_partition(tmp_path):
    """Ferry's user on the target may write one topic and only describe the
    other: the refused partition stops with an error naming the topic, the
    partition, the source offsets and the grant to add; the other topic is
    replicated whole; nothing of the refused one is written."""
    user, password = unique("writer"), unique("pw")
    set_password(user, password)
    ok, denied = unique("sec-ok"), unique("sec-denied")
    for topic in (ok, denied):
        fill_reversed(topic)
    grant(user, ok)
    client = admin()
    limited = [AclBinding(ResourceType.TOPIC, denied, ResourcePatternType.LITERAL, f"User:{user}", "*", op,
                          AclPermissionType.ALLOW) for op in (AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS)]
    for f in client.create_acls(limited).values():
        f.result(timeout=30)
    secret = new_secret({"username": user, "password": password, "certificate": CA_CHAIN})
    ferry = into_sasl_ssl(tmp_path, [ok, denied], scram_source(secret))
    res = ferry.run("--once", "--give-up-seconds", "10", timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert [m["key"] for m in read_partition(SOURCE, ok, 0)] == [f"k{i}".encode() for i in range(20)]
    assert read_partition(SOURCE, denied, 0) == []
    rows = {r["topic"]: r for r in ferry.status()}
    assert rows[ok]["last_error"] is None and rows[ok]["lag"] == 0, rows[ok]
    error = rows[denied]["last_error"] or ""
    for words in (f"target topic {denied} partition 0 refused source offsets 0..=", "TopicAuthorizationFailed",
                  "grant Ferry's principal WRITE"):
        assert words in error, error
    assert_no_secret(out, password)


def test_a_target_refusing_transactional_ids_names_the_grant_and_writes_nothing(tmp_path):
    """Ferry's user on the target may write the topic but has no grant on
    transactional ids: the run fails before writing, and says which grant
    to add, with the prefix of the ids."""
    user, password = unique("no-txn"), unique("pw")
    set_password(user, password)
    topic = unique("sec-txn")
    fill_reversed(topic)
    grant(user, topic, transactional_ids=False)
    secret = new_secret({"username": user, "password": password, "certificate": CA_CHAIN})
    ferry = into_sasl_ssl(tmp_path, [topic], scram_source(secret))
    res = ferry.run("--once", "--give-up-seconds", "5", timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    for words in ("TransactionalIdAuthorizationFailed", "cluster secure",
                  f"grant Ferry's principal WRITE and DESCRIBE on transactional ids prefixed ferry-{ferry.name}-"):
        assert words in out, out[-3000:]
    assert read_partition(SOURCE, topic, 0) == []
    assert_no_secret(out, password)


def test_a_wrong_password_fails_at_once_with_the_cause(tmp_path):
    """A refused login is not a passing fault: `ferry run --once` (as a
    scheduled invocation) reads the secret once more, tries once more, and
    stops with the cause and the fix, in well under 5 s, where it used to
    retry for a minute (the give-up time, 60 s by default)."""
    topic = unique("sec-fast")
    fill(topic, 1, 1)
    arn = new_secret({"username": USER, "password": "fast-wrong-password", "certificate": CA_CHAIN})
    ferry = Ferry(*configure(tmp_path, [topic], scram_source(arn)))
    started = time.monotonic()
    res = ferry.run("--once", timeout=120, env={"RUST_LOG": "warn,ferry_adapters=info"})
    took = time.monotonic() - started
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-2000:]
    assert took < 5, f"{took:.1f} s: {out[-2000:]}"
    assert "SaslAuthenticationFailed" in out and "password" in out and "giving up" not in out, out[-2000:]
    # One fresh read of the secret and one more try (a rotation may just
    # have happened), then the answer.
    assert out.count("authentication refused; reading the credentials again") == 1, out[-3000:]
    assert topic not in list_topics(TARGET)
    assert_no_secret(out, "fast-wrong-password")


def test_a_running_replicator_tries_a_wrong_password_again_after_growing_waits(tmp_path):
    """Running on (not --once), Ferry waits for the fix, calm, not
    hammering: over 12 s the broker sees a handful of attempts, each after
    a wait twice the last, however short the rounds."""
    import re

    topic = unique("sec-calm")
    fill(topic, 1, 1)
    arn = new_secret({"username": USER, "password": "calm-wrong-password", "certificate": CA_CHAIN})
    ferry = Ferry(*configure(tmp_path, [topic], scram_source(arn)))
    log = tmp_path / "ferry.log"
    proc = ferry.spawn("--round-seconds", "3", log=log)
    try:
        time.sleep(12)
        assert proc.poll() is None, "a running replicator waits for the fix"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    out = log.read_text()
    waits = [int(w) for w in re.findall(r"authentication failed; waiting before connecting again .*wait_s=(\d+)", out)]
    assert 2 <= len(waits) <= 5, out[-3000:]
    assert waits == [2 ** i for i in range(len(waits))], waits
    assert "Ferry waits" in out, out[-2000:]
    assert_no_secret(out, "calm-wrong-password")
