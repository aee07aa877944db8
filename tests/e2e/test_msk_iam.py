"""Ferry writing to a target that speaks MSK IAM as Amazon MSK does: SASL
OAUTHBEARER over TLS, the token a SigV4-presigned `kafka-cluster:Connect`
URL signed with Ferry's own AWS credentials, checked on the broker by
infra/local/msk-iam/FerryMskIamValidator.java (built and started by
infra/local/up). The validator knows the stack's access key (testing /
testing, whose principal is a super user) and a reader's (no grant); it
refuses a wrong signature, an unknown key, another region, another action
and an expired token, and tells the client why.

What this proves and what it cannot: that Ferry's token, its OAUTHBEARER
exchange, its TLS to a private CA and its KIP-368 re-authentication work
against a broker that checks the signature as SigV4 defines it, and that
each refusal stops Ferry at once with the cause. It cannot prove what only
AWS knows: the IAM policy evaluation behind kafka-cluster:Connect and the
other kafka-cluster actions, temporary credentials from a Lambda role, and
MSK's own choice of session lifetime.
"""

import base64
import datetime
import json
import os
import re
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import SOURCE, TARGET, create_topic, list_topics, producer, read_partition, unique
from support.msk import IAM, IAM_SHORT, REGION, TEMPORARY, into_msk, log_since, log_size, msk_target
from support.msk_iam_tokens import sign_token
from support.security import fill

SHORT_TOKEN_S = int(os.environ["TARGET_IAM_SHORT_TOKEN_S"])
PRINCIPAL = os.environ["TARGET_IAM_PRINCIPAL"]
CA_FILE = os.environ["SOURCE_CA_FILE"]
KEY, SECRET = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]


def iam_client(bootstrap: str, token_fn) -> dict:
    """librdkafka settings for OAUTHBEARER over TLS with tokens from token_fn."""
    def oauth_cb(_config):
        return token_fn(), time.time() + 60
    return {"bootstrap.servers": bootstrap, "security.protocol": "SASL_SSL", "sasl.mechanisms": "OAUTHBEARER",
            "ssl.ca.location": CA_FILE, "oauth_cb": oauth_cb}


def assert_no_token(text: str) -> None:
    """A token is a credential while it is valid: never in Ferry's output."""
    assert "X-Amz-Signature" not in text and "auth=Bearer" not in text, "an MSK IAM token appears in Ferry's output"
    assert not re.search(r"aHR0cHM6Ly9rYWZrYS[A-Za-z0-9_-]{40,}", text), "an MSK IAM token appears in Ferry's output"


@pytest.mark.parametrize("credentials", ["long-term key", "temporary credentials"])
def test_replicates_into_the_msk_iam_target(tmp_path, credentials):
    """Every record copied exactly into the IAM listener, which accepted
    Ferry's own token (signed for the ARN's region) as the broker log says,
    with the IAM identity of the key as the principal. With temporary
    credentials, as a Lambda role has them, the session token travels in
    the signed URL (characters '/', '+' and '=' included) and must be the
    one the key was issued with."""
    env, key, principal = {}, KEY, PRINCIPAL
    if credentials == "temporary credentials":
        env, key, principal = TEMPORARY, TEMPORARY["AWS_ACCESS_KEY_ID"], os.environ["TARGET_IAM_TEMP_PRINCIPAL"]
    topic = unique("iam-copy")
    fill(topic, 3, 100)
    start = log_size()
    ferry = into_msk(tmp_path, [topic], msk_target())
    res = ferry.run("--once", timeout=300, env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    for part in range(3):
        got = [(m["key"], m["value"], m["headers"]) for m in read_partition(TARGET, topic, part)]
        assert got == [(f"k{i}".encode(), f"v{part}-{i}".encode(), [("h", b"x")]) for i in range(100)], part
    log = log_since(start)
    assert f"MSK IAM token accepted: principal {principal} (access key {key})" in log, log[-3000:]
    assert "MSK IAM token refused" not in log, log[-3000:]
    assert_no_token(out)


def refused_run(tmp_path, target: dict, env: dict | None = None) -> tuple[str, str]:
    """`ferry run --once` into an IAM target that refuses the token: fails
    in under 5 s with an AuthError, writes nothing. Ferry's output and
    the broker log of the attempt."""
    topic = unique("iam-refused")
    fill(topic, 1, 5)
    start = log_size()
    ferry = into_msk(tmp_path, [topic], target)
    began = time.monotonic()
    res = ferry.run("--once", timeout=120, env=env)
    took = time.monotonic() - began
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert took < 5, f"{took:.1f} s: {out[-3000:]}"
    assert topic not in list_topics(TARGET), "nothing may be written to the target"
    assert "Ferry.AuthError" in out and "giving up" not in out, out[-3000:]
    alias = target["AmazonMskCluster"]["MskClusterArn"].split("/")[1]
    assert f"authentication to cluster {alias}" in out and "SaslAuthenticationFailed" in out, out[-3000:]
    # The fix.
    assert "region in the cluster's MskClusterArn" in out and "its own role's credentials" in out, out[-3000:]
    assert_no_token(out)
    log = log_since(start)
    # The AuthError metric: the Report step's ping of that cluster is refused.
    rep = subprocess.run(ferry.args("report", "--json"), capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, **(env or {})))
    clusters = {c["alias"]: c for c in json.loads(rep.stdout)["clusters"]}
    assert clusters[alias]["auth_error"] and not clusters[alias]["ping_ok"], clusters
    assert not clusters["source"]["auth_error"] and clusters["source"]["ping_ok"], clusters
    return out, log


@pytest.mark.parametrize("case", ["another secret key", "an unknown access key id", "another session token"])
def test_a_token_signed_with_credentials_the_cluster_does_not_know_is_refused(tmp_path, case):
    """The broker recomputes the SigV4 signature with the secret key it
    holds for the token's access key id: a token signed with another
    secret key for the same id fails the comparison, an id it does not
    know fails the lookup, a temporary key with a session token not its
    own is refused. Each time Ferry stops at once with the cause."""
    if case == "another secret key":
        env, words = {"AWS_SECRET_ACCESS_KEY": "not-the-secret-key"}, "SignatureDoesNotMatch"
    elif case == "an unknown access key id":
        env, words = {"AWS_ACCESS_KEY_ID": "AKIDNOTKNOWNHERE0000"}, "InvalidClientTokenId"
    else:
        env, words = dict(TEMPORARY, AWS_SESSION_TOKEN="IQoJnot/its+own=="), "session token is missing or not its own"
    out, log = refused_run(tmp_path, msk_target(), env)
    assert words in out, out[-3000:]
    assert f"MSK IAM token refused: " in log and words in log, log[-3000:]
    assert "not-the-secret-key" not in out


def test_a_token_for_another_region_is_refused(tmp_path):
    """The region comes from the cluster ARN: an ARN in another region
    makes Ferry sign for that region's host and credential scope, which
    the listener (in its own region) refuses, and says so."""
    other = "eu-west-1" if REGION != "eu-west-1" else "us-west-2"
    out, log = refused_run(tmp_path, msk_target(region=other))
    assert f"signed for region '{other}', but this cluster is in {REGION}" in out, out[-3000:]
    assert "MSK IAM token refused" in log, log[-3000:]


def librdkafka_login(bootstrap: str, token: str) -> tuple[bool, str]:
    """Whether the listener lets a client that presents `token` in (it
    lists the topics), and what the broker logged meanwhile (librdkafka
    only prints the reason it was given). librdkafka presents the token as
    it is: this is how a token Ferry would never make (signed long ago, in
    the future) reaches the broker."""
    start = log_size()
    admin = AdminClient(iam_client(bootstrap, lambda: token))
    try:
        admin.list_topics(timeout=4)
        ok = True
    except KafkaException:
        ok = False
    return ok, log_since(start)


def test_expired_and_future_tokens_are_refused_by_the_broker(tmp_path):
    """Proves the broker, not the client, enforces a token's time: tokens
    made by botocore's SigV4 signer (not Ferry's) with a chosen signing
    time, presented by librdkafka. Signed 16 minutes ago with
    X-Amz-Expires=900: refused as expired. Signed 10 minutes ahead of the
    broker's clock: refused. Signed 30 s ago: accepted where tokens are
    honoured until they expire (IAM), refused where they are honoured for
    20 s (IAM_SHORT, the listener the re-authentication test uses). The
    same signer's token made now is accepted, so the refusals are the time
    and nothing else."""
    now = datetime.datetime.now(datetime.timezone.utc)
    token = lambda **kw: sign_token(REGION, KEY, SECRET, **kw)  # noqa: E731
    refused = "MSK IAM token refused: "
    ok, log = librdkafka_login(IAM, token())
    assert ok and refused not in log, log[-3000:]
    ok, log = librdkafka_login(IAM, token(signed_at=now - datetime.timedelta(minutes=16)))
    assert not ok and f"{refused}the token has expired" in log and "X-Amz-Expires=900 s" in log, log[-3000:]
    ok, log = librdkafka_login(IAM, token(signed_at=now + datetime.timedelta(minutes=10)))
    assert not ok and f"{refused}the token was signed at" in log and "after the broker's clock" in log, log[-3000:]
    thirty_s_ago = now - datetime.timedelta(seconds=30)
    ok, log = librdkafka_login(IAM, token(signed_at=thirty_s_ago))
    assert ok and refused not in log, log[-3000:]
    ok, log = librdkafka_login(IAM_SHORT, token(signed_at=thirty_s_ago))
    assert not ok and f"{refused}the token has expired" in log, log[-3000:]
    assert f"this listener honours tokens for {SHORT_TOKEN_S} s" in log, log[-3000:]
    # What the client was told: the broker's reason, in the SASL error.
    assert "Failed authentication with" in log and '{"status":"invalid_token: the token has expired' in log, log[-3000:]


def test_the_action_must_be_connect(tmp_path):
    """A validly signed URL for another action is not a login."""
    ok, log = librdkafka_login(IAM, sign_token(REGION, KEY, SECRET, action="kafka-cluster:DescribeCluster"))
    assert not ok and "MSK IAM token refused: the signed action is 'kafka-cluster:DescribeCluster'" in log, log[-3000:]


def test_the_principal_is_the_iam_identity_and_acls_apply_to_it(tmp_path):
    """The reader's key logs in as its IAM ARN, which has no grant: it sees
    no topic until an ACL names that principal."""
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    topic = unique("iam-acl")
    create_topic(TARGET, topic, 1)
    reader = lambda: sign_token(REGION, os.environ["TARGET_IAM_READER_KEY"], os.environ["TARGET_IAM_READER_SECRET"])  # noqa: E731
    conf = iam_client(IAM, reader)
    assert topic not in AdminClient(conf).list_topics(timeout=10).topics
    principal = f"User:{os.environ['TARGET_IAM_READER_PRINCIPAL']}"
    admin = AdminClient({"bootstrap.servers": TARGET})
    for f in admin.create_acls([AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, principal, "*",
                                           AclOperation.DESCRIBE, AclPermissionType.ALLOW)]).values():
        f.result(timeout=30)
    deadline = time.monotonic() + 15
    while topic not in AdminClient(conf).list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, f"{principal} was granted DESCRIBE on {topic} but does not see it"
        time.sleep(0.5)


def test_replication_runs_on_past_the_token_lifetime_with_fresh_tokens(tmp_path):
    """One `ferry run` round of 75 s into IAM_SHORT, whose broker honours a
    token for 20 s after signing and ends the session then (KIP-368: the
    session lifetime is the token's). Records are produced over ~50 s.
    Ferry re-authenticates in band before each session ends, signing a
    fresh token each time: the broker log shows re-authentications, and
    tokens accepted with ever later signing times (a reused token would be
    refused as older than 20 s). Nothing is lost or duplicated, and Ferry
    logs no failure."""
    topic = unique("iam-long")
    create_topic(SOURCE, topic, 2)
    start = log_size()
    ferry = into_msk(tmp_path, [topic], msk_target(IAM_SHORT))
    log = tmp_path / "ferry.log"
    proc = ferry.spawn("--round-seconds", "75", log=log)
    p = producer(SOURCE)
    sent = 0
    try:
        # A produce request every 2.5 s: Ferry's re-authentication is due at
        # 85 % of a session, and happens at its next request.
        for batch in range(20):
            for part in range(2):
                for i in range(10):
                    p.produce(topic, partition=part, key=f"b{batch}-k{i}".encode(), value=f"v{part}".encode())
            assert p.flush(30) == 0
            sent += 10
            time.sleep(2.5)
        deadline = time.monotonic() + 30
        while True:
            ends = [Consumer({"bootstrap.servers": TARGET, "group.id": unique("probe")}).get_watermark_offsets(
                TopicPartition(topic, part), timeout=10)[1] if topic in list_topics(TARGET) else 0 for part in range(2)]
            if ends == [sent, sent]:
                break
            assert time.monotonic() < deadline, f"target ends {ends}, {sent} records per partition sent"
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    text = log.read_text()
    for part in range(2):
        keys = [m["key"] for m in read_partition(TARGET, topic, part)]
        assert keys == [f"b{b}-k{i}".encode() for b in range(20) for i in range(10)], part
    assert "failed" not in text.lower() and "ERROR" not in text, text[-3000:]
    assert_no_token(text)
    broker = log_since(start)
    signed = re.findall(rf"MSK IAM token accepted: principal {re.escape(PRINCIPAL)} \(access key {KEY}\), signed at (\S+),"
                        rf" honoured until (\S+)", broker)
    short_sessions = [int(ms) for ms in re.findall(r"Authentication complete; session max lifetime from broker config=0 ms,"
                                                   r" credential expiration=\S+ \((\d+) ms\)", broker)]
    reauths = broker.count("Beginning re-authentication")
    assert reauths >= 2, f"{reauths} re-authentications in the broker log"
    assert len({s for s, _ in signed}) >= 3, signed
    assert short_sessions and max(short_sessions) <= SHORT_TOKEN_S * 1000, short_sessions
    assert "MSK IAM token refused" not in broker, broker[-3000:]


def test_a_topic_ferrys_user_may_not_create_on_the_target_is_refused_alone(tmp_path):
    """Ferry's IAM identity may create one of a flow's new topics and not
    the other (grants scoped by topic name, as MSK IAM policies and Kafka
    ACLs usually are). The refusal was left to the creation, which failed
    the flow's whole plan: the other topic was created and nothing copied,
    plan after plan. Now the topic Ferry may not create is refused alone,
    saying which grant is missing, and copied once it is granted."""
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    from support.acls import create as create_acls

    prefix = unique("iam-create")
    ok, denied = f"{prefix}-ok", f"{prefix}-denied"
    for t in (ok, denied):
        fill(t, 2, 20)
    principal = f"User:{os.environ['TARGET_IAM_READER_PRINCIPAL']}"

    def grant(resource, name, pattern, op):
        return AclBinding(resource, name, pattern, principal, "*", op, AclPermissionType.ALLOW)

    ops = (AclOperation.DESCRIBE, AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE_CONFIGS,
           AclOperation.ALTER_CONFIGS)
    create_acls(TARGET, [grant(ResourceType.TOPIC, prefix, ResourcePatternType.PREFIXED, op) for op in ops]
                + [grant(ResourceType.TOPIC, ok, ResourcePatternType.LITERAL, AclOperation.CREATE),
                   grant(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, AclOperation.IDEMPOTENT_WRITE),
                   grant(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, AclOperation.DESCRIBE)])
    ferry = into_msk(tmp_path, [ok, denied], msk_target())
    create_acls(TARGET, [grant(ResourceType.TRANSACTIONAL_ID, f"ferry-{ferry.name}-", ResourcePatternType.PREFIXED, op)
                         for op in (AclOperation.WRITE, AclOperation.DESCRIBE)])
    reader = {"AWS_ACCESS_KEY_ID": os.environ["TARGET_IAM_READER_KEY"],
              "AWS_SECRET_ACCESS_KEY": os.environ["TARGET_IAM_READER_SECRET"]}
    res = ferry.run("--once", timeout=300, env=reader)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and f"topic {denied} not copied" in res.stderr, out[-3000:]
    assert "TopicAuthorizationFailed" in out and "kafka-cluster:CreateTopic" in out, out[-3000:]
    for part in range(2):
        assert len(read_partition(TARGET, ok, part)) == 20, "the topic Ferry may create is copied whole"
    assert denied not in list_topics(TARGET)
    [why] = {p.get("last_error") for p in ferry.status() if p["topic"] == denied}
    assert why and "CREATE" in why, ferry.status()

    create_acls(TARGET, [grant(ResourceType.TOPIC, denied, ResourcePatternType.LITERAL, AclOperation.CREATE)])
    time.sleep(2)
    res = ferry.run("--once", timeout=300, env=reader)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    for part in range(2):
        assert len(read_partition(TARGET, denied, part)) == 20
    assert not any(p.get("last_error") for p in ferry.status()), ferry.status()
