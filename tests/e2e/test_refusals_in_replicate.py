"""Refusals met anywhere in a deployed Replicate invocation (issue 21),
found by an adversarial review after 7623993: at its start (the leader
epoch check on the source, the reconcile on the target), at the producer's
set-up, and in a warm environment that met one before. Each ends the
invocation at once as Ferry.AuthError with the AuthError metric, and gives
the leases back for the next invocation.

The Replicate function is the real `ferry-replicate` binary, driven through
a minimal Lambda Runtime API served here (`WarmFunction`): one process, one
invocation after another, as a warm Lambda execution environment runs them.
Its stdout carries the embedded-metric-format lines (AuthError).
"""

import json
import subprocess
from pathlib import Path

from conftest import SOURCE, TARGET, Ferry, create_topic, producer, read_partition, unique, write_config
from support.security import CA_CHAIN, grant, new_secret, scram_source, set_password
from support.warm_function import WarmFunction

ROOT = Path(__file__).resolve().parents[2]
REPLICATE = ROOT / "target" / "debug" / "ferry-replicate"


def fill_source(topic: str, start: int, n: int, partitions: int = 1) -> None:
    p = producer(SOURCE)
    for i in range(start, start + n):
        p.produce(topic, partition=i % partitions, key=f"k{i}".encode(), value=b"v" * 50)
    assert p.flush(30) == 0


def plan_batches(ferry: Ferry, max_seconds: int = 30) -> list[dict]:
    res = subprocess.run(ferry.args("plan", "--json"), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, (res.stdout + res.stderr)[-2000:]
    out = json.loads(res.stdout)
    batches = out["batches"]
    for b in batches:
        b["max_seconds"] = max_seconds
        b["stop_at_plan_end"] = True
    return batches


def configure(tmp: Path, topics: list[str], source: dict, naming: str = "PREFIXED_WITH_SOURCE_CLUSTER_ALIAS") -> tuple[Path, Path]:
    """The SCRAM source into the stack's PLAINTEXT target, with `naming`
    (PREFIXED_WITH_SOURCE_CLUSTER_ALIAS, MSK Replicator's default, unless told)."""
    kc, ri = write_config(tmp, topics, naming=naming)
    clusters = json.loads(kc.read_text())
    clusters[0] = source
    kc.write_text(json.dumps(clusters, indent=2))
    return kc, ri


def scram_replicator(tmp_path, prefix: str, partitions: int = 1):
    user, pw = unique(f"{prefix}-user"), unique("pw")
    topic = unique(prefix)
    set_password(user, pw)
    grant(user, topic)
    create_topic(SOURCE, topic, partitions)
    secret = new_secret({"username": user, "password": pw, "certificate": CA_CHAIN})
    ferry = Ferry(*configure(tmp_path, [topic], scram_source(secret)))
    return user, pw, topic, ferry


def test_a_source_refusal_at_the_start_of_a_replicate_invocation_is_an_auth_error(tmp_path):
    """Claim: SASL authentication failures stop the flow at once with the
    cause and the AuthError metric (Ferry.AuthError from Replicate, which
    the state machine catches as a failed batch).

    Scenario: a replicator already running (its partition has a cursor and
    a recorded leader epoch). Plan runs; then the user's password is changed
    in Kafka and not in the secret (revoked, or a rotation gone wrong between
    Plan and the Map, which may start minutes later for the later waves of
    batches). The Replicate invocation's first source request is the
    leader-epoch check (OffsetForLeaderEpoch) in `validate_epochs`, which
    `fail`s the partition as "retry" on any retryable error, and a refusal
    is retryable.

    Expected: the invocation ends with Ferry.AuthError naming the cause,
    and prints an AuthError metric for the source cluster."""
    user, pw, topic, ferry = scram_replicator(tmp_path, "adv-epoch")
    fill_source(topic, 0, 200)
    first = ferry.run("--once", timeout=180)
    assert first.returncode == 0, (first.stdout + first.stderr)[-2000:]
    fill_source(topic, 200, 200)
    batches = plan_batches(ferry)
    assert batches and batches[0]["partitions"], batches
    set_password(user, unique("revoked"))
    fn = WarmFunction(REPLICATE, ferry, tmp_path / "replicate.log")
    try:
        kind, payload, took = fn.invoke(batches[0], timeout_s=60)
        text = fn.text()
        metrics = fn.auth_error_metrics()
    finally:
        fn.close()
    print(f"kind={kind} took={took:.1f}s payload={json.dumps(payload)[:1500]}")
    assert kind == "error", f"the invocation succeeded after the source refused Ferry ({took:.1f} s): {payload}\n{text[-2500:]}"
    assert payload["errorType"] == "Ferry.AuthError", payload
    assert metrics, f"no AuthError metric printed: {text[-2000:]}"


def scram_target_replicator(tmp_path, prefix: str):
    """The stack's PLAINTEXT cluster (alias "plain") into the SASL_SSL
    listener (alias "secure") as a user of this test's own, topic names
    prefixed with the source alias (MSK Replicator's default)."""
    user, pw = unique(f"{prefix}-user"), unique("pw")
    topic = unique(prefix)
    set_password(user, pw)
    grant(user, topic)
    grant(user, f"plain.{topic}")
    create_topic(TARGET, topic, 1)
    secret = new_secret({"username": user, "password": pw, "certificate": CA_CHAIN})
    kc, ri = write_config(tmp_path, [topic], naming="PREFIXED_WITH_SOURCE_CLUSTER_ALIAS")
    plain = {"ApacheKafkaCluster": {"ApacheKafkaClusterId": "plain", "BootstrapBrokerString": TARGET},
             "EncryptionInTransit": {"EncryptionType": "PLAINTEXT"}}
    secure = scram_source(secret)
    secure["ApacheKafkaCluster"]["ApacheKafkaClusterId"] = "secure"
    kc.write_text(json.dumps([plain, secure], indent=2))
    flows = json.loads(ri.read_text())
    flows[0]["SourceKafkaClusterId"], flows[0]["TargetKafkaClusterId"] = "plain", "secure"
    ri.write_text(json.dumps(flows, indent=2))
    return user, pw, topic, Ferry(kc, ri)


def fill_plain(topic: str, start: int, n: int) -> None:
    p = producer(TARGET)
    for i in range(start, start + n):
        p.produce(topic, partition=0, key=f"k{i}".encode(), value=b"v" * 50)
    assert p.flush(30) == 0


def test_a_target_refusal_at_the_start_of_a_replicate_invocation_is_an_auth_error(tmp_path):
    """Claim: as above, for the target (SASL authentication failures stop
    the flow at once with the cause and the AuthError metric).

    Scenario: a replicator already running into a SCRAM target: its
    partition's cursor records the producer that wrote it, so every
    invocation starts by reading the target's end offset to reconcile
    (`reconcile_all`, ListOffsets). The target's password is changed after
    Plan. `reconcile_all` `fail`s the partition as "retry" on the refusal,
    nothing is left to replicate, and the invocation returns.

    Expected: Ferry.AuthError naming the target, and an AuthError metric."""
    user, pw, topic, ferry = scram_target_replicator(tmp_path, "adv-recon")
    fill_plain(topic, 0, 200)
    first = ferry.run("--once", timeout=180)
    assert first.returncode == 0, (first.stdout + first.stderr)[-2000:]
    fill_plain(topic, 200, 200)
    batches = plan_batches(ferry)
    set_password(user, unique("revoked"))
    fn = WarmFunction(REPLICATE, ferry, tmp_path / "replicate.log")
    try:
        kind, payload, took = fn.invoke(batches[0], timeout_s=60)
        text = fn.text()
        metrics = fn.auth_error_metrics()
    finally:
        fn.close()
    print(f"kind={kind} took={took:.1f}s payload={json.dumps(payload)[:1500]}")
    assert kind == "error", f"the invocation succeeded after the target refused Ferry ({took:.1f} s): {payload}\n{text[-2000:]}"
    assert payload["errorType"] == "Ferry.AuthError", payload
    assert metrics, f"no AuthError metric printed: {text[-2000:]}"


def test_a_target_refusal_at_start_gives_the_leases_back(tmp_path):
    """Claim: a refusal ends the invocation with Ferry.AuthError after the
    leases go back (7623993: "what the target acknowledged is
    checkpointed, leases go back"), so that once the credentials are fixed
    the next invocation replicates.

    Scenario: a new flow into a SCRAM target (Plan has run: the target
    topic and the cursor exist, nothing replicated yet). The target's
    password is changed; the Replicate invocation leases the partition, and
    its first target request, InitProducerId, is refused and returned with
    `?` from `replicate`, past the release of the leases. The password is
    put back (the operator's fix) and the next invocation runs at once, as
    the state machine's next execution or a retry would.

    Expected: the first invocation ends with Ferry.AuthError; the second
    copies the records (no partition "lease-held" by the refused one)."""
    user, pw, topic, ferry = scram_target_replicator(tmp_path, "adv-lease")
    fill_plain(topic, 0, 200)
    batches = plan_batches(ferry)
    set_password(user, unique("revoked"))
    fn = WarmFunction(REPLICATE, ferry, tmp_path / "replicate.log")
    try:
        kind, payload, _ = fn.invoke(batches[0], timeout_s=60)
        assert kind == "error" and payload["errorType"] == "Ferry.AuthError", payload
    finally:
        fn.close()
    set_password(user, pw)
    fn = WarmFunction(REPLICATE, ferry, tmp_path / "replicate2.log")
    try:
        kind, payload, took = fn.invoke(batches[0], timeout_s=60)
        text = fn.text()
    finally:
        fn.close()
    print(f"kind={kind} took={took:.1f}s payload={json.dumps(payload)[:1500]}")
    assert kind == "response", f"{payload}\n{text[-2000:]}"
    stopped = payload["summary"]["stopped"]
    assert "lease-held" not in stopped and payload["summary"]["records"] == 200, \
        f"the refused invocation kept its lease: the fixed one copied nothing: {payload['summary']}"


def test_each_batch_on_a_warm_replicate_environment_is_refused_at_once(tmp_path):
    """Claim: a wrong SCRAM password fails in under 5 s with the cause, the
    AuthError metric and Ferry.AuthError.

    Scenario: one Map of an execution with more batches than
    MaxConcurrency: Lambda runs several batches one after the other in the
    same warm execution environment, whose KafkaCluster keeps its
    AuthBackoff between invocations. The source's password is wrong (changed
    after Plan). The first batch is refused; each next one meets the wait
    left by the previous refusal (AuthBackoff, which is not a refusal: it is
    retried round after round) until the wait ends, then is refused and
    doubles it (1, 2, 4, ... 60 s).

    Expected: every invocation ends with Ferry.AuthError in under 5 s and
    prints an AuthError metric."""
    user, pw, topic, ferry = scram_replicator(tmp_path, "adv-warm")
    fill_source(topic, 0, 100)
    batches = plan_batches(ferry, max_seconds=20)
    set_password(user, unique("revoked"))
    fn = WarmFunction(REPLICATE, ferry, tmp_path / "replicate.log")
    seen = []
    try:
        for n in range(1, 8):
            before = len(fn.auth_error_metrics())
            kind, payload, took = fn.invoke(batches[0], timeout_s=60)
            metric = len(fn.auth_error_metrics()) - before
            error_type = payload.get("errorType") if kind == "error" else f"success {payload['summary']['stopped']}"
            seen.append((n, error_type, round(took, 1), metric))
            print(f"invocation {n}: {error_type} in {took:.1f} s, AuthError metrics {metric}")
            if error_type != "Ferry.AuthError" or not metric:
                break
    finally:
        text = fn.text()
        fn.close()
    assert all(e == "Ferry.AuthError" and t < 5 and m for _, e, t, m in seen), \
        f"(invocation, outcome, seconds, AuthError metrics): {seen}\n{text[-1500:]}"
