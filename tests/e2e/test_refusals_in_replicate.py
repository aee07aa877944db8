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
import os
import queue
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from conftest import SOURCE, TARGET, Ferry, create_topic, producer, read_partition, unique, write_config
from test_security import CA_CHAIN, grant, new_secret, scram_source, set_password

ROOT = Path(__file__).resolve().parents[2]
REPLICATE = ROOT / "target" / "debug" / "ferry-replicate"


class WarmFunction:
    """One execution environment of a Ferry function: the binary, started
    once, polling a Runtime API that hands it the events given to `invoke`."""

    def __init__(self, binary: Path, ferry: Ferry, log: Path, extra_env: dict | None = None):
        self.events: queue.Queue = queue.Queue()
        self.results: dict[str, queue.Queue] = {}
        fn = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if not self.path.endswith("/runtime/invocation/next"):
                    self.send_response(404)
                    self.end_headers()
                    return
                rid, event, deadline_ms = fn.events.get()
                body = json.dumps(event).encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", rid)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(deadline_ms))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn",
                                 "arn:aws:lambda:us-east-1:123456789012:function:ferry-replicate")
                self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode() if n else ""
                parts = self.path.split("/")
                if "invocation" in parts:
                    rid, kind = parts[-2], parts[-1]
                    fn.results[rid].put((kind, json.loads(body) if body else None))
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        env = dict(os.environ, **(extra_env or {}))
        env.update({
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{self.server.server_address[1]}",
            "AWS_LAMBDA_FUNCTION_NAME": binary.name, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
            "AWS_LAMBDA_FUNCTION_VERSION": "1",
            "FERRY_REPLICATOR_NAME": ferry.name, "FERRY_TABLE_PREFIX": ferry.prefix,
            "FERRY_KAFKA_CLUSTERS": ferry.kc.read_text(), "FERRY_REPLICATION_INFO": ferry.ri.read_text(),
            "RUST_LOG": env.get("RUST_LOG", "info"),
        })
        self.log = log
        self.out = open(log, "ab")
        self.proc = subprocess.Popen([str(binary)], env=env, stdout=self.out, stderr=subprocess.STDOUT)

    def invoke(self, event: dict, timeout_s: float = 60) -> tuple[str, dict | None, float]:
        """("response" | "error", payload, seconds taken)."""
        rid = str(uuid.uuid4())
        self.results[rid] = queue.Queue()
        started = time.monotonic()
        self.events.put((rid, event, int((time.time() + timeout_s) * 1000)))
        kind, payload = self.results[rid].get(timeout=timeout_s + 30)
        return kind, payload, time.monotonic() - started

    def text(self) -> str:
        self.out.flush()
        return self.log.read_text(errors="replace")

    def auth_error_metrics(self) -> list[dict]:
        """The AuthError data points the function printed (EMF)."""
        found = []
        for line in self.text().splitlines():
            if line.startswith("{") and '"_aws"' in line and '"AuthError"' in line:
                doc = json.loads(line)
                found.append(doc)
        return found

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.server.shutdown()
        self.out.close()


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
