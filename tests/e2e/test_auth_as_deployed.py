"""Authentication as deployed (issue 21): faults that are not refusals are
retried, refusals are told as refusals, and no credential or secret shows
in any output.

- A credentials endpoint that blips while Ferry signs an MSK IAM token is
  retried (Ferry.Retryable), not reported as the broker refusing Ferry; and
  credentials are fetched once and kept, not on every authentication.
- At RUST_LOG=trace the session token of temporary credentials never shows.
- MSK's API answering 5xx without an error code is retried, not a
  configuration error.
- A Secrets Manager answer that cannot be read is reported by its HTTP
  status, never echoed (it holds the secret).
- `ferry deploy-parameters` refuses an MSK IAM cluster the template would
  not grant kafka-cluster:* on.
- A re-authentication (KIP-368) refused in the middle of an invocation,
  SCRAM or MSK IAM, ends the invocation within seconds with the refusal,
  after one fresh read of the credentials; a rotation finished meanwhile
  (the new password in Kafka and in the secret) goes on in the same
  invocation. Nothing is lost or duplicated either way.
"""

import json
import os
import re
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import SOURCE, TARGET, Ferry, create_topic, list_topics, producer, read_partition, unique
from support.msk import IAM_SHORT, TEMPORARY, into_msk, log_since, log_size, msk_target, scram_msk
from support.msk import configure as arn_configure
from support.security import CA_CHAIN, configure, grant, new_secret, scram_source, secrets_manager, set_password
from support.security import fill as fill_plain


class CredentialsEndpoint:
    """A container credentials endpoint (what ECS and EKS Pod Identity serve,
    AWS_CONTAINER_CREDENTIALS_FULL_URI): the stack's temporary key, valid for
    an hour. After the first request it answers 503 for `blip_s` seconds,
    as the agent does while it is restarted or throttled; then it answers
    again. Counts requests."""

    def __init__(self, blip_s: float = 0.0):
        self.blip_s = blip_s
        self.requests: list[float] = []
        self.failed = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                now = time.monotonic()
                endpoint.requests.append(now)
                first = endpoint.requests[0]
                if len(endpoint.requests) > 1 and now - first < endpoint.blip_s:
                    endpoint.failed += 1
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps({
                    "AccessKeyId": os.environ["TARGET_IAM_TEMP_KEY"],
                    "SecretAccessKey": os.environ["TARGET_IAM_TEMP_SECRET"],
                    "Token": os.environ["TARGET_IAM_TEMP_TOKEN"],
                    "Expiration": (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")}
        env.update(AWS_CONTAINER_CREDENTIALS_FULL_URI=f"http://127.0.0.1:{self.server.server_port}/creds",
                   AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
                   AWS_EC2_METADATA_DISABLED="true", RUST_LOG="warn,ferry_adapters=info")
        return env

    def close(self):
        self.server.shutdown()


def test_msk_iam_credentials_are_fetched_once_and_kept(tmp_path):
    """Credentials are fetched once and kept until shortly before they
    expire, not on every MSK IAM authentication (the signer's provider,
    `SdkConfig::credentials_provider()`, is not behind the SDK's identity
    cache; Ferry caches in front of it). DynamoDB and Secrets Manager fetch credentials
    valid for an hour once; each MSK IAM authentication (every broker
    connection, every KIP-368 re-authentication) fetches them again. On EKS
    with IRSA each is an STS AssumeRoleWithWebIdentity call; on EC2 an IMDS
    call. Scenario: 45 s into IAM_SHORT (20-s sessions) with a record every
    2.5 s, at least two authentications."""
    topic = unique("auth21-creds")
    create_topic(SOURCE, topic, 1)
    endpoint = CredentialsEndpoint()
    start = log_size()
    log = tmp_path / "ferry.log"
    try:
        ferry = into_msk(tmp_path, [topic], msk_target(IAM_SHORT))
        with open(log, "w") as out:
            proc = subprocess.Popen(ferry.args("run", "--round-seconds", "60"), stdout=out, stderr=subprocess.STDOUT,
                                    env=endpoint.env())
        p = producer(SOURCE)
        try:
            for i in range(10):
                p.produce(topic, partition=0, key=f"k{i}".encode(), value=b"v")
                assert p.flush(30) == 0
                time.sleep(2.5)
                assert proc.poll() is None, log.read_text()[-3000:]
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    finally:
        endpoint.close()
    accepted = log_since(start).count(f"(access key {os.environ['TARGET_IAM_TEMP_KEY']})")
    print(f"{len(endpoint.requests)} credential fetches; {accepted} tokens accepted by the broker")
    assert accepted >= 2, log.read_text()[-3000:]
    assert len(endpoint.requests) <= 2, (f"{len(endpoint.requests)} fetches of credentials valid for an hour, "
                                         f"{accepted} MSK IAM authentications: the signer bypasses the identity cache")


def test_a_credentials_endpoint_blip_while_signing_is_retried_not_an_auth_error(tmp_path):
    """Claim: "Fail fast only on a refusal"; a transient fault is retried
    (docs/src/configuration/security.md: Secrets Manager not answering stays
    Ferry.Retryable).

    Scenario: Ferry runs with container credentials (ECS, EKS Pod Identity;
    `ferry run` on a host). The endpoint answers once (DynamoDB's client
    caches that), then 503 for 12 s. Ferry's first MSK IAM signing falls in
    that window. Expected: retried within --give-up-seconds (60), replicated.
    Before the fix: Ferry.AuthError, exit at once, nothing replicated."""
    topic = unique("auth21-blip")
    fill_plain(topic, 1, 5)
    endpoint = CredentialsEndpoint(blip_s=12)
    try:
        ferry = into_msk(tmp_path, [topic], msk_target())
        began = time.monotonic()
        res = subprocess.run(ferry.args("run", "--once"), capture_output=True, text=True, timeout=300, env=endpoint.env())
        took = time.monotonic() - began
    finally:
        endpoint.close()
    out = res.stdout + res.stderr
    print(f"exit {res.returncode} after {took:.1f} s; {len(endpoint.requests)} credential requests, {endpoint.failed} answered 503")
    assert endpoint.failed >= 1, "the blip did not overlap the signing; the test proves nothing"
    assert "Ferry.AuthError" not in out, f"a credentials endpoint blip reported as a refusal after {took:.1f} s: {out[-2000:]}"
    assert res.returncode == 0, out[-3000:]
    assert topic in list_topics(TARGET)


def test_no_session_token_in_trace_logs_with_msk_iam(tmp_path):
    """Claim (docs/src/configuration/security.md "No secret in any output",
    DESIGN invariant 9): no
    token or key in any output, at RUST_LOG=trace too. The existing trace
    test covers SCRAM only. With temporary credentials (a Lambda role's)
    the MSK IAM token is signed in the query string, and aws-sigv4 logs the
    canonical request at trace level, redacting headers but not the query,
    which holds X-Amz-Security-Token."""
    topic = unique("auth21-trace")
    fill_plain(topic, 1, 5)
    ferry = into_msk(tmp_path, [topic], msk_target())
    env = dict(os.environ, RUST_LOG="trace", **TEMPORARY)
    res = subprocess.run(ferry.args("run", "--once"), capture_output=True, text=True, timeout=300, env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    token = os.environ["TARGET_IAM_TEMP_TOKEN"]
    encoded = re.sub(r"[^A-Za-z0-9\-_.~]", lambda m: "%{:02X}".format(ord(m.group(0))), token)
    hits = [ln[:300] for ln in out.splitlines() if token in ln or encoded in ln]
    print(f"{len(hits)} lines with the session token")
    assert not hits, "the session token appears in Ferry's trace output:\n" + "\n".join(hits[:3])


def test_an_msk_api_5xx_without_an_error_code_is_retried_not_a_config_error(tmp_path):
    """Claim (msk.rs, docs/src/configuration/clusters.md): GetBootstrapBrokers
    throttled or failing on AWS's side is transient; only a definition that does not fit the
    cluster is Ferry.ConfigError. `fault_of` maps every code it does not
    know, and no code at all, to Misconfigured.

    Scenario: an ARN-only SCRAM source; MSK's API (AWS_ENDPOINT_URL_KAFKA)
    answers 502 with an HTML body and no x-amzn-ErrorType (a gateway or
    proxy on the way, as a 5xx from an interface endpoint is) for 8 s, then
    the cluster's brokers. Expected: retried within --give-up-seconds and
    replicated."""
    began = time.monotonic()
    calls: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            if time.monotonic() - began < 8:
                calls.append(502)
                body = b"<html><body>502 Bad Gateway</body></html>"
                self.send_response(502)
                self.send_header("Content-Type", "text/html")
            else:
                calls.append(200)
                body = json.dumps({"bootstrapBrokerStringSaslScram": os.environ["SOURCE_SASL_SSL_BOOTSTRAP"]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer  # noqa: N815

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    topic = unique("auth21-502")
    fill_plain(topic, 1, 5)
    arn = "arn:aws:kafka:us-east-1:123456789012:cluster/auth21-src/0a1b2c3d-4e5f-6789-abcd-ef0123456789-1"
    try:
        ferry = arn_configure(tmp_path, [topic], source=scram_msk(arn))
        env = dict(os.environ, AWS_ENDPOINT_URL_KAFKA=f"http://127.0.0.1:{server.server_port}")
        res = subprocess.run(ferry.args("run", "--once"), capture_output=True, text=True, timeout=300, env=env)
    finally:
        server.shutdown()
    out = res.stdout + res.stderr
    print(f"exit {res.returncode} after {time.monotonic() - began:.1f} s; MSK API answers {calls}: {out[-400:]}")
    assert calls and calls[0] == 502, "the fake MSK endpoint was not called"
    assert "Ferry.ConfigError" not in out, out[-2000:]
    assert res.returncode == 0, out[-2000:]


def test_an_unreadable_secrets_manager_answer_never_echoes_the_secret(tmp_path):
    """Claim (security.rs, docs/src/configuration/security.md "No secret in
    any output"): errors never
    quote a secret's value. Ferry formats Secrets Manager failures with
    `DisplayErrorContext`, which ends with the error's Debug form; for an
    answer that does not parse, that holds the raw HTTP response, body
    included.

    Scenario: Secrets Manager (AWS_ENDPOINT_URL_SECRETS_MANAGER) answers
    GetSecretValue with 200 and a body cut short (a proxy or a connection
    closed mid-body), which still holds the SecretString with the password."""
    leaked = "auth21-leaked-password"
    secret_string = json.dumps({"username": "ferry", "password": leaked})

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            full = json.dumps({"ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:auth21-AbCdEf",
                               "Name": "auth21", "SecretString": secret_string, "VersionId": "v1"}).encode()
            body = full[: full.index(leaked.encode()) + len(leaked) + 4]
            self.send_response(200)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    topic = unique("auth21-sm")
    fill_plain(topic, 1, 1)
    try:
        arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:auth21-AbCdEf"
        ferry = Ferry(*configure(tmp_path, [topic], scram_source(arn)))
        env = dict(os.environ, AWS_ENDPOINT_URL_SECRETS_MANAGER=f"http://127.0.0.1:{server.server_port}")
        res = subprocess.run(ferry.args("run", "--once", "--give-up-seconds", "3"), capture_output=True, text=True,
                             timeout=300, env=env)
    finally:
        server.shutdown()
    out = res.stdout + res.stderr
    print(f"exit {res.returncode}: {out[-600:]}")
    assert res.returncode != 0
    assert leaked not in out, "the password from Secrets Manager's answer appears in Ferry's error: " + out[-1500:]


def test_deploy_parameters_refuse_an_msk_iam_cluster_they_would_not_grant(tmp_path):
    """The template grants kafka-cluster:* on the first flow's source and
    target only. A fan-out from one self-managed source to two MSK IAM
    targets would leave the second without kafka-cluster:Connect (every
    execution of its flow refused on AWS): deploy-parameters refuses it,
    naming the cluster and the fix."""
    from conftest import FERRY

    a = "arn:aws:kafka:us-east-1:123456789012:cluster/msk-a/0a1b2c3d-4e5f-6789-abcd-ef0123456789-1"
    b = "arn:aws:kafka:us-east-1:123456789012:cluster/msk-b/1a1b2c3d-4e5f-6789-abcd-ef0123456789-1"
    onprem = {"ApacheKafkaCluster": {"ApacheKafkaClusterId": "onprem", "BootstrapBrokerString": "kafka-1.example.com:9096"},
              "ClientAuthentication": {"SaslScram": {"Mechanism": "SHA512",
                                                     "SecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:onprem-AbCdEf"}},
              "EncryptionInTransit": {"EncryptionType": "TLS"}}
    clusters = [onprem, {"AmazonMskCluster": {"MskClusterArn": a}}, {"AmazonMskCluster": {"MskClusterArn": b}}]

    def flow(target: str, topic: str) -> dict:
        return {"SourceKafkaClusterId": "onprem", "TargetKafkaClusterArn": target, "TargetCompressionType": "NONE",
                "TopicReplication": {"TopicsToReplicate": [topic], "CopyTopicConfigurations": True,
                                     "CopyAccessControlListsForTopics": False, "DetectAndCopyNewTopics": True},
                "ConsumerGroupReplication": {"ConsumerGroupsToReplicate": [".*"], "SynchroniseConsumerGroupOffsets": False,
                                             "DetectAndCopyNewConsumerGroups": False}}

    kc, ri = tmp_path / "kafka-clusters.json", tmp_path / "replication-info.json"
    kc.write_text(json.dumps(clusters))
    ri.write_text(json.dumps([flow(a, "orders"), flow(b, "payments")]))
    res = subprocess.run([str(FERRY), "deploy-parameters", "--kafka-clusters", str(kc), "--replication-info", str(ri), "--json",
                          "--definition-dir", str(tmp_path / "def")], capture_output=True, text=True, timeout=60)
    out = res.stdout + res.stderr
    assert res.returncode != 0, f"accepted, but MSK IAM cluster {b} would get no kafka-cluster grant: {out[-1500:]}"
    assert "msk-b" in out and "one stack per pair" in out, out[-1500:]


def fill_small_batches(topic: str, records: int, per_batch: int = 10) -> None:
    """`records` records in batches of `per_batch`: with a small fetch,
    replication takes many fetches, so one invocation outlives a session."""
    create_topic(SOURCE, topic, 1)
    p = producer(SOURCE, **{"linger.ms": 0})
    for i in range(records):
        p.produce(topic, partition=0, key=f"k{i}".encode(), value=b"v" * 100)
        if i % per_batch == per_batch - 1:
            assert p.flush(30) == 0
    assert p.flush(30) == 0


def run_past_a_session(ferry: Ferry, log, env: dict, meanwhile) -> tuple[int | None, float]:
    """One `ferry run --once` invocation of 60 s that copies through small
    fetches and produces; its first produce is held 21 s (failpoint), past
    the listener's 20-s session, and `meanwhile()` runs during that hold.
    The next request must authenticate again (in band, or on a new
    connection if the broker closed the expired one). Returns the exit code
    and how long the run went on after the hold ended."""
    env = dict(env, RUST_LOG="warn,ferry_adapters=info,ferry_engine=info", FERRY_FAILPOINT="stall-before-produce:21")
    with open(log, "w") as out:
        proc = subprocess.Popen(ferry.args("run", "--once", "--round-seconds", "60", "--fetch-partition-max-bytes", "2000",
                                           "--produce-batch-max-bytes", "2000"),
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while "stall-before-produce:21 reached" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        meanwhile()
        while "stall-before-produce:21 over" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline + 30, log.read_text()[-3000:]
            time.sleep(0.1)
        changed = time.monotonic()
        try:
            proc.wait(timeout=150)
        except subprocess.TimeoutExpired:
            pass
        return proc.returncode, time.monotonic() - changed
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)


def test_a_reauthentication_refused_mid_invocation_ends_it_at_once(tmp_path):
    """The source listener ends SASL sessions after 20 s. While the run's
    first produce is held, the user's password is changed in Kafka and not
    in the secret (a credential revoked, a rotation gone wrong). The next
    fetch must authenticate again and is refused; a fresh read of the secret
    cannot help. The run ends with the refusal within seconds (before this
    change it retried, backing off, until its 60-s budget ran out), and
    with the password back a run completes the copy exactly."""
    user, old = unique("revoked"), unique("old-pw")
    topic = unique("auth-reauth")
    set_password(user, old)
    grant(user, topic)
    fill_small_batches(topic, 3000)
    secret = new_secret({"username": user, "password": old, "certificate": CA_CHAIN})
    ferry = Ferry(*configure(tmp_path, [topic], scram_source(secret)))
    log = tmp_path / "ferry.log"
    rc, took = run_past_a_session(ferry, log, dict(os.environ), lambda: set_password(user, unique("new-pw")))
    text = log.read_text()
    assert rc not in (0, None), text[-3000:]
    assert "SaslAuthenticationFailed" in text and "check the user name and password" in text, text[-3000:]
    assert took < 10, f"the run went on {took:.1f} s after the password changed: {text[-2500:]}"
    set_password(user, old)
    again = ferry.run("--once", timeout=300)
    assert again.returncode == 0, (again.stdout + again.stderr)[-2000:]
    assert [m["key"] for m in read_partition(TARGET, topic, 0)] == [f"k{i}".encode() for i in range(3000)]


def test_a_rotation_finished_mid_invocation_goes_on_in_it(tmp_path):
    """The other side of the same path: the password is rotated in Kafka and
    then in the secret while the first produce is held. The refused
    re-authentication makes Ferry read the secret again and connect with the
    new password; the same invocation finishes the copy, exit 0, exact."""
    user, old, new = unique("rotating"), unique("old-pw"), unique("new-pw")
    topic = unique("auth-rotate")
    set_password(user, old)
    grant(user, topic)
    fill_small_batches(topic, 3000)
    secret = new_secret({"username": user, "password": old, "certificate": CA_CHAIN})
    ferry = Ferry(*configure(tmp_path, [topic], scram_source(secret)))

    def rotate():
        set_password(user, new)
        secrets_manager().put_secret_value(SecretId=secret,
                                           SecretString=json.dumps({"username": user, "password": new, "certificate": CA_CHAIN}))

    log = tmp_path / "ferry.log"
    rc, _ = run_past_a_session(ferry, log, dict(os.environ), rotate)
    text = log.read_text()
    assert rc == 0, text[-3000:]
    assert [m["key"] for m in read_partition(TARGET, topic, 0)] == [f"k{i}".encode() for i in range(3000)]
    assert old not in text and new not in text


def test_an_msk_iam_reauthentication_refused_mid_invocation_ends_it_at_once(tmp_path):
    """The same for the migration's target: an MSK IAM session (IAM_SHORT,
    20 s) whose re-authentication is refused mid-invocation (the access key
    withdrawn from the listener; on AWS, the key deactivated or the role's
    kafka-cluster:Connect removed) ends the run with the refusal at once."""
    key, secret = unique("AUTHWITHDRAWN").upper().replace("-", ""), unique("auth-secret")
    ids = os.environ["TARGET_IAM_IDENTITIES_FILE"]
    principal = os.environ["TARGET_IAM_TEMP_PRINCIPAL"].replace("ferry-local", "withdrawn")
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient, ResourcePatternType,
                                       ResourceType)
    admin = AdminClient({"bootstrap.servers": TARGET})
    acls = [AclBinding(rt, name, ResourcePatternType.PREFIXED if name != "kafka-cluster" else ResourcePatternType.LITERAL,
                       f"User:{principal}", "*", AclOperation.ALL, AclPermissionType.ALLOW)
            for rt, name in ((ResourceType.TOPIC, "auth-iamre"), (ResourceType.TRANSACTIONAL_ID, "ferry-"),
                             (ResourceType.BROKER, "kafka-cluster"))]
    for f in admin.create_acls(acls).values():
        f.result(timeout=30)
    with open(ids, "a") as f:
        f.write(f"\n{key}|{secret}|{principal}\n")
    time.sleep(2)
    topic = unique("auth-iamre")
    fill_small_batches(topic, 3000)
    ferry = into_msk(tmp_path, [topic], msk_target(IAM_SHORT))
    env = {k: v for k, v in os.environ.items() if k != "AWS_SESSION_TOKEN"}
    env.update(AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret)

    def withdraw():
        with open(ids) as f:
            kept = [ln for ln in f.read().splitlines() if not ln.startswith(key + "|")]
        with open(ids, "w") as f:
            f.write("\n".join(kept) + "\n")

    log = tmp_path / "ferry.log"
    rc, took = run_past_a_session(ferry, log, env, withdraw)
    text = log.read_text()
    assert rc not in (0, None), text[-3000:]
    assert "is not known to this cluster" in text, text[-3000:]
    assert took < 10, f"the run went on {took:.1f} s after the key was withdrawn: {text[-2000:]}"
