"""Which version of the SCRAM secret Ferry logs in with during a rotation.
Refused with the secret's AWSCURRENT version, Ferry reads the versions a
rotation leaves in turn: AWSCURRENT afresh, AWSPENDING (a rotation function
changes Kafka's password before it makes the new version current), and
AWSPREVIOUS (Amazon MSK picks a changed secret up within minutes and takes
the old password until then). Against the stack's SASL_SSL listener and
moto's Secrets Manager; users and secrets made by each test. The same with
connections refused together: `connections_refused_together_in_a_rotation_*`
in functions/adapters/src/kafka/client/login.rs."""

import json
from pathlib import Path
import os

from conftest import SOURCE, TARGET, Ferry, list_topics, producer, read_partition, unique
from support.secrets_proxy import ThrottlingSecrets
from support.security import CA_CHAIN, configure, fill, grant, new_secret, scram_source, secrets_manager, set_password

OTHER_CA = Path(os.environ["SOURCE_OTHER_CA_FILE"]).read_text()
LOG = {"RUST_LOG": "warn,ferry_adapters=info"}


def assert_no_secret(text: str, *passwords: str) -> None:
    for p in passwords:
        assert p not in text, "a password appears in Ferry's output"


def keys(topic: str) -> list[bytes]:
    return [m["key"] for m in read_partition(TARGET, topic, 0)]


def user_with_topic(name: str, password: str, records: int = 5) -> tuple[str, str]:
    user, topic = unique(name), unique(f"sec-{name}")
    set_password(user, password)
    grant(user, topic)
    fill(topic, 1, records)
    return user, topic


def scram_value(user: str, password: str, ca: str = CA_CHAIN) -> str:
    return json.dumps({"username": user, "password": password, "certificate": ca})


def test_a_rotation_half_done_is_read_from_the_secrets_pending_version(tmp_path):
    """A rotation function sets the new password in Kafka (its setSecret
    step) before it moves the secret's AWSCURRENT label (finishSecret); in
    between, the new password is only under AWSPENDING. Ferry, refused with
    AWSCURRENT, tries AWSPENDING and replicates; once the rotation
    finishes, the new AWSCURRENT is the same password. A half-done rotation
    whose pending password Kafka does not take fails with the current
    password's refusal, as before."""
    user, old, new = unique("halfway"), unique("old-pw"), unique("new-pw")
    topic = unique("sec-pending")
    set_password(user, old)
    grant(user, topic)
    fill(topic, 1, 50, tag="before-")
    secret = new_secret({"username": user, "password": old, "certificate": CA_CHAIN})
    sm = secrets_manager()
    pending = sm.put_secret_value(SecretId=secret, VersionStages=["AWSPENDING"],
                                  SecretString=json.dumps({"username": user, "password": new, "certificate": CA_CHAIN}))
    set_password(user, new)
    assert json.loads(sm.get_secret_value(SecretId=secret)["SecretString"])["password"] == old, "AWSCURRENT unchanged"
    ferry = Ferry(*configure(tmp_path, [topic], scram_source(secret)))
    first = ferry.run("--once", timeout=300, env={"RUST_LOG": "warn,ferry_adapters=info"})
    out = first.stdout + first.stderr
    assert first.returncode == 0, out[-3000:]
    assert "AWSPENDING" in out, f"the pending version's use is logged: {out[-2000:]}"
    assert [m["key"] for m in read_partition(TARGET, topic, 0)] == [f"before-k{i}".encode() for i in range(50)]

    # finishSecret: AWSCURRENT moves to the pending version.
    current = next(v for v, stages in sm.describe_secret(SecretId=secret)["VersionIdsToStages"].items() if "AWSCURRENT" in stages)
    sm.update_secret_version_stage(SecretId=secret, VersionStage="AWSCURRENT", MoveToVersionId=pending["VersionId"],
                                   RemoveFromVersionId=current)
    p = producer(SOURCE)
    for i in range(50):
        p.produce(topic, partition=0, key=f"after-k{i}".encode(), value=b"v")
    assert p.flush(30) == 0
    second = ferry.run("--once", timeout=300, env={"RUST_LOG": "warn,ferry_adapters=info"})
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    keys = [m["key"] for m in read_partition(TARGET, topic, 0)]
    assert keys == [f"before-k{i}".encode() for i in range(50)] + [f"after-k{i}".encode() for i in range(50)]

    # A rotation that failed half-way: AWSPENDING holds a password Kafka never took.
    stale = unique("stale-pw")
    sm.put_secret_value(SecretId=secret, VersionStages=["AWSPENDING"],
                        SecretString=json.dumps({"username": user, "password": stale, "certificate": CA_CHAIN}))
    set_password(user, unique("changed-elsewhere"))
    third = ferry.run("--once", timeout=300)
    text = third.stdout + third.stderr
    assert third.returncode != 0, text[-3000:]
    assert "SaslAuthenticationFailed" in text and "check the user name and password" in text, text[-3000:]
    assert_no_secret(out + second.stdout + second.stderr + text, old, new, stale)


def test_after_a_rotation_the_previous_version_is_used_until_the_cluster_takes_the_new_one(tmp_path):
    """Amazon MSK reads an associated secret itself and picks a change up
    within minutes: right after a rotation, AWSCURRENT holds a password the
    brokers do not take yet and AWSPREVIOUS the one they do. Ferry logs in
    with AWSPREVIOUS, says so, and goes back to AWSCURRENT once the brokers
    take it."""
    old, new = unique("old-pw"), unique("new-pw")
    user, topic = user_with_topic("lagging", old)
    secret = new_secret(json.loads(scram_value(user, old)))
    secrets_manager().put_secret_value(SecretId=secret, SecretString=scram_value(user, new))  # AWSCURRENT moves
    ferry = Ferry(*configure(tmp_path, [topic], scram_source(secret)))
    first = ferry.run("--once", timeout=300, env=LOG)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out[-3000:]
    assert "logged in with the secret's AWSPREVIOUS version" in out, out[-3000:]
    assert keys(topic) == [f"k{i}".encode() for i in range(5)]
    set_password(user, new)  # the cluster took the change
    second = ferry.run("--once", timeout=300, env=LOG)
    out2 = second.stdout + second.stderr
    assert second.returncode == 0, out2[-3000:]
    assert "AWSPREVIOUS" not in out2 and "AWSPENDING" not in out2, out2[-3000:]
    assert_no_secret(out + out2, old, new)


def test_a_rotation_that_also_changes_the_ca_is_followed(tmp_path):
    """The certificate in the SCRAM secret rotated with the password: the
    current version's CA does not verify the brokers (a TLS refusal, not a
    login refusal), and the pending version's does. Ferry gets in with the
    pending version."""
    old, new = unique("old-pw"), unique("new-pw")
    user, topic = user_with_topic("ca-rot", old)
    secret = new_secret(json.loads(scram_value(user, old, OTHER_CA)))
    secrets_manager().put_secret_value(SecretId=secret, VersionStages=["AWSPENDING"], SecretString=scram_value(user, new))
    set_password(user, new)
    res = Ferry(*configure(tmp_path, [topic], scram_source(secret))).run("--once", timeout=300, env=LOG)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "logged in with the secret's AWSPENDING version" in out, out[-3000:]
    assert keys(topic) == [f"k{i}".encode() for i in range(5)]


def test_a_throttled_read_of_the_pending_version_is_retried_not_taken_for_a_refusal(tmp_path):
    """Secrets Manager throttles the read of AWSPENDING (past the SDK's own
    retries) in a rotation's window. That is a passing fault: the run
    retries and gets in with the pending version, where it used to end at
    once with the current version's refusal (Ferry.AuthError)."""
    old, new = unique("old-pw"), unique("new-pw")
    user, topic = user_with_topic("throttled", old)
    secret = new_secret(json.loads(scram_value(user, old)))
    secrets_manager().put_secret_value(SecretId=secret, VersionStages=["AWSPENDING"], SecretString=scram_value(user, new))
    set_password(user, new)
    proxy = ThrottlingSecrets("AWSPENDING", throttle=3)
    try:
        res = Ferry(*configure(tmp_path, [topic], scram_source(secret))).run(
            "--once", timeout=300, env={**LOG, "AWS_ENDPOINT_URL_SECRETS_MANAGER": proxy.url})
    finally:
        proxy.close()
    out = res.stdout + res.stderr
    assert proxy.calls > 3, f"the pending version was read {proxy.calls} times: {out[-2000:]}"
    assert res.returncode == 0, out[-3000:]
    assert "ThrottlingException" in out and "AuthError" not in out, out[-3000:]
    assert keys(topic) == [f"k{i}".encode() for i in range(5)]


def test_a_certificate_rotated_out_is_never_trusted_again(tmp_path):
    """The CA in the secret was rotated to stop trusting the old one (its
    key leaked, say): the current version's CA does not verify the brokers,
    which is what a man in the middle holding the old CA would cause. Ferry
    stops with the TLS refusal; it never falls back to AWSPREVIOUS and its
    old CA (it did, reproduced on 53939e0)."""
    password = unique("pw")
    user, topic = user_with_topic("ca-out", password)
    secret = new_secret(json.loads(scram_value(user, password)))  # the CA the brokers use
    secrets_manager().put_secret_value(SecretId=secret, SecretString=scram_value(user, password, OTHER_CA))
    res = Ferry(*configure(tmp_path, [topic], scram_source(secret))).run("--once", timeout=300, env=LOG)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "AuthError" in out and "logged in with" not in out, out[-3000:]
    assert topic not in list_topics(TARGET), "nothing written"
