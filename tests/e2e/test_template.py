"""The deployment artefacts stay consistent with the code: the SAM template
passes cfn-lint, the state machine is valid JSON once substituted, and every
`Ferry.*` error its Retry and Catch match is a name the code produces (in
functions/engine/src/error.rs, the one place that names errors)."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT


def test_template_passes_cfn_lint():
    lint = Path(sys.executable).parent / "cfn-lint"
    res = subprocess.run([str(lint), str(ROOT / "template.yaml")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def test_state_machine_matches_the_error_types_the_code_produces():
    text = (ROOT / "infra" / "statemachine" / "replicator.asl.json").read_text()
    definition = json.loads(text.replace("${MaxConcurrency}", "10"))
    produced = set(re.findall(r'"(Ferry\.[A-Za-z]+)"', (ROOT / "functions" / "engine" / "src" / "error.rs").read_text()))
    assert {"Ferry.Retryable", "Ferry.Fatal", "Ferry.ConfigError", "Ferry.InputError"} <= produced

    matched = set()

    def walk(states):
        for state in states.values():
            for rule in state.get("Retry", []) + state.get("Catch", []):
                matched.update(e for e in rule["ErrorEquals"] if e.startswith("Ferry."))
            if "ItemProcessor" in state:
                walk(state["ItemProcessor"]["States"])

    walk(definition["States"])
    assert matched, "the state machine must match Ferry's error types"
    assert matched <= produced, f"matched but never produced: {matched - produced}"
    assert "Ferry.Retryable" in matched


def test_state_machine_passes_asl_validator():
    """The definition, substituted as the template does, passes the
    asl-validator package (schema and JSONPath checks)."""
    validator = Path(os.environ.get("FERRY_TOOLS_NODE", ROOT / ".cache" / "node")) / "node_modules" / ".bin" / "asl-validator"
    assert validator.exists(), f"{validator} is missing: infra/local/up installs it"
    text = (ROOT / "infra" / "statemachine" / "replicator.asl.json").read_text()
    for key in ("PlanFunctionArn", "ReplicateFunctionArn", "SyncGroupsFunctionArn", "ReportFunctionArn"):
        text = text.replace("${" + key + "}", f"arn:aws:lambda:us-east-1:123456789012:function:{key}")
    text = text.replace("${MaxConcurrency}", "10")
    assert "${" not in text, "a substitution the template does not make"
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write(text)
    res = subprocess.run([str(validator), "--json-path", f.name], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_template_passes_sam_validate_lint():
    sam = Path(os.environ.get("FERRY_SAM_VENV", ROOT / ".cache" / "sam-venv")) / "bin" / "sam"
    assert sam.exists(), f"{sam} is missing: infra/local/up installs it"
    env = dict(os.environ, SAM_CLI_TELEMETRY="0")
    res = subprocess.run([str(sam), "validate", "--lint", "--template-file", str(ROOT / "template.yaml"), "--region", "us-east-1"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


def test_template_wires_every_substitution_and_function():
    """Each ${...} in the definition is a DefinitionSubstitution, and each
    Lambda binary in the workspace is a function in the template."""
    template = (ROOT / "template.yaml").read_text()
    definition = (ROOT / "infra" / "statemachine" / "replicator.asl.json").read_text()
    for key in set(re.findall(r"\$\{([A-Za-z]+)\}", definition)):
        assert re.search(rf"^\s+{key}: ", template, re.M), f"${{{key}}} is not substituted by template.yaml"
    binaries = {p.stem for p in (ROOT / "functions" / "lambda" / "src" / "bin").glob("*.rs")}
    assert binaries == {"ferry-plan", "ferry-replicate", "ferry-sync-groups", "ferry-report"}, binaries
    for b in binaries:
        assert f"Binary: {b}" in template, f"functions/lambda/src/bin/{b}.rs is not deployed by template.yaml"


def test_dashboard_body_is_json_naming_metrics_the_code_publishes():
    """The dashboard's body, substituted, is valid JSON, and every Ferry
    metric it or an alarm names is one the code publishes."""
    template = (ROOT / "template.yaml").read_text()
    body = re.search(r"DashboardBody: !Sub \|\n((?:        .*\n)+)", template).group(1)
    body = re.sub(r"\$\{[A-Za-z:]+\}", "x", body)
    widgets = json.loads(body)["widgets"]
    assert len(widgets) >= 5
    published = set(re.findall(r'pub const [A-Z_]+: &str = "([A-Za-z]+)";',
                               (ROOT / "functions" / "core" / "src" / "metrics.rs").read_text()))
    named = set(re.findall(r'MetricName=\\"([A-Za-z]+)\\"', body)) | set(re.findall(r'\["Ferry", "([A-Za-z]+)"', body))
    named |= set(re.findall(r"Namespace: Ferry\n\s+MetricName: ([A-Za-z]+)", template))
    assert {"MessageLag", "ReplicatorFailure", "KafkaClusterPingSuccessCount", "SumOffsetLag"} <= named
    assert named <= published, f"named but never published: {named - published}"


def test_sam_build_and_package_carry_every_function_and_the_definition(tmp_path):
    """`sam build` (BuildMethod rust-cargolambda; cargo-lambda and zig from
    the tools venv) builds every function of the template into a
    `bootstrap` executable, and `sam package` (what `sam deploy` runs
    first; here against moto's S3) uploads ferry-definition/, as
    `ferry deploy-parameters` wrote it beside the template, as the
    definition layer: a zip whose root holds the two files byte for byte,
    which Lambda mounts at /opt. The template is used from a copy in a
    folder of its own, as a user's checkout, with `CodeUri: .` pointed at
    this workspace (and the state machine's DefinitionUri at its file). The test builds in debug mode (SAM_BUILD_MODE=debug) to
    keep the test command short; the release build that `sam deploy` ships
    is what bench/functions builds and measures."""
    import zipfile

    import boto3
    from conftest import FERRY

    sam = Path(os.environ.get("FERRY_SAM_VENV", ROOT / ".cache" / "sam-venv")) / "bin" / "sam"
    assert sam.exists(), f"{sam} is missing: infra/local/test-tools installs it"
    src = tmp_path / "checkout"
    src.mkdir()
    text, n = re.subn(r"^      CodeUri: \.$", f"      CodeUri: {ROOT}", (ROOT / "template.yaml").read_text(), flags=re.M)
    assert n == 4, n
    text, n = re.subn(r"^      DefinitionUri: (\S+)$", lambda m: f"      DefinitionUri: {ROOT / m.group(1)}", text, flags=re.M)
    assert n == 1, n
    (src / "template.yaml").write_text(text)
    kc, ri = tmp_path / "kc.json", tmp_path / "ri.json"
    kc.write_text(json.dumps([{"ApacheKafkaCluster": {"ApacheKafkaClusterId": "a", "BootstrapBrokerString": "a:9092"}},
                              {"ApacheKafkaCluster": {"ApacheKafkaClusterId": "b", "BootstrapBrokerString": "b:9092"}}],
                             indent=2))
    ri.write_text(json.dumps([{"SourceKafkaClusterId": "a", "TargetKafkaClusterId": "b", "TargetCompressionType": "NONE",
                               "TopicReplication": {"TopicsToReplicate": [f"t-{i:04}" for i in range(750)]}}]))
    dp = subprocess.run([str(FERRY), "deploy-parameters", "--kafka-clusters", str(kc), "--replication-info", str(ri),
                         "--out", "ferry-parameters.yaml"], capture_output=True, text=True, timeout=60, cwd=src)
    assert dp.returncode == 0, dp.stderr
    # What it tells to run: guided the first time (a plain `sam deploy`
    # without samconfig.toml stops at the missing stack name), and with the
    # file every time after (samconfig.toml keeps the first DefinitionSha256).
    # The file by its absolute path: `sam deploy` reads file:// from its own folder.
    told, written = " ".join(dp.stderr.split()), os.path.realpath(src / "ferry-parameters.yaml")
    assert f"`sam deploy --guided --parameter-overrides file://{written}`" in told, dp.stderr
    assert f"`sam deploy --parameter-overrides file://{written}`" in told, dp.stderr
    env = dict(os.environ, SAM_CLI_TELEMETRY="0", SAM_BUILD_MODE="debug", PATH=f"{sam.parent}:{os.environ['PATH']}")
    try:
        res = subprocess.run([str(sam), "build", "--template-file", str(src / "template.yaml"),
                              "--build-dir", str(tmp_path / "build"), "--cache-dir", str(tmp_path / "cache")],
                             capture_output=True, text=True, timeout=2400, env=env, cwd=src)
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
        functions = re.findall(r"^  (\w+Function):\n    Type: AWS::Serverless::Function",
                               (ROOT / "template.yaml").read_text(), re.M)
        assert sorted(functions) == ["PlanFunction", "ReplicateFunction", "ReportFunction", "SyncGroupsFunction"]
        for fn in functions:
            bootstrap = tmp_path / "build" / fn / "bootstrap"
            assert bootstrap.exists(), f"{fn}: no bootstrap in {sorted(p.name for p in (tmp_path / 'build').iterdir())}"
            assert os.access(bootstrap, os.X_OK) and bootstrap.read_bytes()[:4] == b"\x7fELF", fn
        built = (tmp_path / "build" / "template.yaml").read_text()
        assert all(f"CodeUri: {fn}" in built for fn in functions), built

        bucket = f"ferry-package-{os.getpid()}"
        s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
        s3.create_bucket(Bucket=bucket)
        packaged = tmp_path / "packaged.yaml"
        res = subprocess.run([str(sam), "package", "--template-file", str(tmp_path / "build" / "template.yaml"),
                              "--s3-bucket", bucket, "--output-template-file", str(packaged), "--region", "us-east-1"],
                             capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path / "build")
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
        layer = re.search(r"^  DefinitionLayer:\n(?:    .*\n)*?      ContentUri: s3://([^/\s]+)/(\S+)$",
                          packaged.read_text(), re.M)
        assert layer and layer.group(1) == bucket, packaged.read_text()[:3000]
        body = s3.get_object(Bucket=bucket, Key=layer.group(2))["Body"].read()
        with zipfile.ZipFile(__import__("io").BytesIO(body)) as z:
            assert sorted(z.namelist()) == ["kafka-clusters.json", "replication-info.json"], z.namelist()
            assert z.read("kafka-clusters.json") == kc.read_bytes()
            assert z.read("replication-info.json") == ri.read_bytes()
    finally:
        # The copies of the binaries: pass or fail, the disk space goes back
        # for the tests after this one.
        shutil.rmtree(tmp_path / "build", ignore_errors=True)


def test_deploy_parameters_match_the_template_and_honour_log_delivery(tmp_path):
    """`ferry deploy-parameters` checks the definition and log-delivery.json
    and names only parameters the template has: the MSK cluster on IAM for
    the kafka-cluster policy, the SCRAM and CA secrets, the log group and the
    Firehose stream. The definition itself goes into ferry-definition/ (the
    stack's definition layer) byte for byte, not into a parameter. An S3
    destination is refused with the fix, and nothing is printed on stdout
    or written then."""
    from conftest import FERRY

    msk = "arn:aws:kafka:us-east-1:123456789012:cluster/prod/abc-1"
    scram = "arn:aws:secretsmanager:us-east-1:123456789012:secret:onprem-scram"
    ca = "arn:aws:secretsmanager:us-east-1:123456789012:secret:onprem-ca"
    kc = tmp_path / "kafka-clusters.json"
    kc.write_text(json.dumps([
        {"ApacheKafkaCluster": {"ApacheKafkaClusterId": "onprem", "BootstrapBrokerString": "k1:9096"},
         "ClientAuthentication": {"SaslScram": {"Mechanism": "SHA512", "SecretArn": scram}},
         "EncryptionInTransit": {"EncryptionType": "TLS", "RootCaCertificate": ca}},
        {"AmazonMskCluster": {"MskClusterArn": msk, "BootstrapBrokerString": "b-1:9098"}},
    ]))
    ri = tmp_path / "replication-info.json"
    # Backslashes, quotes and apostrophes: what SAM CLI's parser unescapes.
    ri.write_text(json.dumps([{"SourceKafkaClusterId": "onprem", "TargetKafkaClusterArn": msk, "TargetCompressionType": "ZSTD",
                               "TopicReplication": {"TopicsToReplicate": ["orders\\..*", ".*"],
                                                    "TopicsToExclude": ["it's", "say \"hi\"", "back\\ slash"]}}]))
    ld = tmp_path / "log-delivery.json"
    ld.write_text(json.dumps({"CloudWatchLogs": {"Enabled": True, "LogGroup": "/ferry/prod"},
                              "Firehose": {"Enabled": True, "DeliveryStream": "ferry-logs"}, "S3": {"Enabled": False}}))
    base = [str(FERRY), "deploy-parameters", "--kafka-clusters", str(kc), "--replication-info", str(ri), "--name", "prod-move"]
    work = tmp_path / "deploy"
    work.mkdir()
    layer = work / "ferry-definition"
    res = subprocess.run(base + ["--log-delivery", str(ld), "--json"], capture_output=True, text=True, timeout=60, cwd=work)
    assert res.returncode == 0, res.stderr
    params = json.loads(res.stdout)
    assert params["SourceMskClusterArn"] == "" and params["TargetMskClusterArn"] == msk
    assert sorted(params["SecretArns"].split(",")) == sorted([scram, ca])
    assert (params["LogGroupName"], params["LogFirehoseStreamName"]) == ("/ferry/prod", "ferry-logs")
    assert (layer / "kafka-clusters.json").read_bytes() == kc.read_bytes()
    assert (layer / "replication-info.json").read_bytes() == ri.read_bytes()
    assert sorted(p.name for p in layer.iterdir()) == ["kafka-clusters.json", "replication-info.json"]
    template = (ROOT / "template.yaml").read_text()
    declared = set(re.findall(r"^  (\w+):\n    Type: ", template.split("\nConditions:")[0], re.M))
    assert set(params) <= declared, set(params) - declared

    # The parameters file, read by SAM CLI's own parser as `sam deploy
    # --parameter-overrides file://...` reads it, gives every value back.
    out = tmp_path / "ferry-parameters.yaml"
    wrote = subprocess.run(base + ["--log-delivery", str(ld), "--out", str(out)], capture_output=True, text=True, timeout=60,
                           cwd=work)
    assert wrote.returncode == 0 and f"--parameter-overrides file://{out}" in wrote.stderr, wrote.stderr
    parsed = sam_parameter_overrides(f"file://{out}")
    assert set(parsed) == set(params)
    for k, v in params.items():
        assert parsed[k] == v, k
    # What a Key='<json>' value became after the shell and that parser (how
    # the definition travelled before it was a layer): cut at its first
    # double quote, deployed without an error.
    as_json = json.dumps(json.loads(kc.read_text()), separators=(",", ":"))
    assert sam_parameter_overrides(f"KafkaClustersJson={as_json}")["KafkaClustersJson"] != as_json

    # The layer carries the whole folder: a stray file is refused, not shipped.
    (layer / "notes.txt").write_text("mine")
    stray = subprocess.run(base + ["--log-delivery", str(ld), "--json"], capture_output=True, text=True, timeout=60, cwd=work)
    assert stray.returncode == 2 and "holds notes.txt besides the definition" in stray.stderr, stray.stderr
    assert (layer / "notes.txt").read_text() == "mine"

    ld.write_text(json.dumps({"S3": {"Enabled": True, "Bucket": "logs-bucket", "Prefix": "ferry/"}}))
    fresh = tmp_path / "refused"
    fresh.mkdir()
    bad = subprocess.run(base + ["--log-delivery", str(ld)], capture_output=True, text=True, timeout=60, cwd=fresh)
    assert bad.returncode == 2 and bad.stdout == "", bad.stdout
    assert "S3" in bad.stderr and "Firehose" in bad.stderr and "logs-bucket" in bad.stderr, bad.stderr
    assert list(fresh.iterdir()) == [], "a refused definition wrote something"


def test_deploy_parameters_take_the_network_from_vpc_config(tmp_path):
    """The subnets and security groups come from the clusters' VpcConfig,
    as create-replicator takes them; what only the user can settle is
    warned about; an id that is not an EC2 id is refused, naming where it
    is, and nothing is written."""
    from conftest import FERRY

    def clusters(vpc_a, vpc_b):
        out = []
        for cid, vpc in (("a", vpc_a), ("b", vpc_b)):
            c = {"ApacheKafkaCluster": {"ApacheKafkaClusterId": cid, "BootstrapBrokerString": f"{cid}:9092"}}
            if vpc is not None:
                c["VpcConfig"] = vpc
            out.append(c)
        return json.dumps(out)

    ri = tmp_path / "ri.json"
    ri.write_text(json.dumps([{"SourceKafkaClusterId": "a", "TargetKafkaClusterId": "b", "TargetCompressionType": "NONE",
                               "TopicReplication": {"TopicsToReplicate": ["orders"]}}]))
    kc = tmp_path / "kc.json"

    def run(text: str, where: str):
        kc.write_text(text)
        work = tmp_path / where
        work.mkdir()
        res = subprocess.run([str(FERRY), "deploy-parameters", "--kafka-clusters", str(kc), "--replication-info", str(ri),
                              "--json"], capture_output=True, text=True, timeout=60, cwd=work)
        return res, work

    sa, sb, sg = "subnet-0123456789abcdef0", "subnet-0fedcba9876543210", "sg-0a1b2c3d"
    # The same network given on both clusters (in another order): taken, no warning.
    res, _ = run(clusters({"SubnetIds": [sa, sb], "SecurityGroupIds": [sg]}, {"SubnetIds": [sb, sa], "SecurityGroupIds": [sg]}),
                 "same")
    assert res.returncode == 0, res.stderr
    params = json.loads(res.stdout)
    assert (params["SubnetIds"], params["SecurityGroupIds"]) == (f"{sa},{sb}", sg)
    assert "warning" not in res.stderr.replace("no random suffix", ""), res.stderr
    # Different subnets (another VPC, perhaps another region): a function has
    # one VpcConfig, so the choice is the user's.
    res, _ = run(clusters({"SubnetIds": [sa], "SecurityGroupIds": [sg]}, {"SubnetIds": [sb], "SecurityGroupIds": [sg]}),
                 "both")
    assert res.returncode == 0, res.stderr
    params = json.loads(res.stdout)
    assert "SubnetIds" not in params and params["SecurityGroupIds"] == sg, params
    assert f"different SubnetIds (a: {sa}; b: {sb})" in res.stderr and "one VPC" in res.stderr, res.stderr
    # Over Lambda's limit of five security groups.
    many = [f"sg-0000000{i}" for i in range(6)]
    res, _ = run(clusters({"SubnetIds": [sa], "SecurityGroupIds": many}, None), "many")
    assert res.returncode == 0 and "SecurityGroupIds" not in json.loads(res.stdout), res.stdout
    assert "give 6 security groups; Lambda takes at most 5" in res.stderr, res.stderr

    res, _ = run(clusters({"SubnetIds": [sa]}, None), "one")
    assert res.returncode == 0, res.stderr
    params = json.loads(res.stdout)
    assert params["SubnetIds"] == sa and "SecurityGroupIds" not in params
    assert "gives SecurityGroupIds: `sam deploy --guided` asks for it" in res.stderr, res.stderr
    assert "gives SubnetIds" not in res.stderr and "different" not in res.stderr, res.stderr

    res, _ = run(clusters(None, None), "none")
    assert res.returncode == 0 and "SubnetIds" not in json.loads(res.stdout), res.stdout
    assert "gives SubnetIds" in res.stderr and "gives SecurityGroupIds" in res.stderr, res.stderr

    res, work = run(clusters(None, {"SubnetIds": [sb], "SecurityGroupIds": ["kafka-clients"]}), "bad")
    assert res.returncode == 2 and res.stdout == "", res.stdout
    assert "[1].VpcConfig.SecurityGroupIds[0]" in res.stderr and "is not a security group id" in res.stderr, res.stderr
    assert list(work.iterdir()) == [], "a refused definition wrote something"


def sam_parameter_overrides(value: str) -> dict:
    """What SAM CLI 1.170's own `--parameter-overrides` parser makes of one
    value (a `file://` reference or `Key=Value` words)."""
    python = Path(os.environ.get("FERRY_SAM_VENV", ROOT / ".cache" / "sam-venv")) / "bin" / "python"
    code = ("import json, sys; from samcli.cli.types import CfnParameterOverridesType; "
            "print(json.dumps(CfnParameterOverridesType().convert((sys.argv[1],), None, None)))")
    res = subprocess.run([str(python), "-c", code, value], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


# Actions that take no resource ARN, so AWS requires Resource "*": the ENI
# actions a VPC-attached Lambda function's role needs.
AWS_REQUIRES_STAR = {"ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface",
                     "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"}


def iam_grants(template: Path) -> dict:
    python = Path(os.environ.get("FERRY_SAM_VENV", ROOT / ".cache" / "sam-venv")) / "bin" / "python"
    env = dict(os.environ, AWS_DEFAULT_REGION="us-east-1")
    res = subprocess.run([str(python), str(ROOT / "tests" / "e2e" / "support" / "iam_grants.py"), str(template)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def test_iam_grants_star_only_where_aws_requires_it(tmp_path):
    """After the SAM transform (as `sam deploy` runs it), no IAM statement
    of the stack has Resource "*" but for actions that take no resource,
    and no AWS-managed policy (with its own "*" grants) is attached."""
    grants = iam_grants(ROOT / "template.yaml")
    assert grants["statements"] >= 10, grants
    for g in grants["star"]:
        assert set(g["actions"]) <= AWS_REQUIRES_STAR, f"{g['resource']} grants {g['actions']} on every resource"
    assert not [m for m in grants["managed"] if "arn:aws:iam::aws:policy" in m], grants["managed"]
    # The check can fail: the same template with the secrets grant widened.
    wide = tmp_path / "template.yaml"
    # (The grant is each ARN and each ARN with "-??????": a Split of a Join.)
    text, n = re.subn(r'Resource: !Split\n\s+- ","\n\s+- !Join \[.*SecretArns.*\]\n', 'Resource: "*"\n',
                      (ROOT / "template.yaml").read_text())
    assert n == 1, "the secrets grant is not where this test widens it"
    wide.write_text(text)
    flagged = [g for g in iam_grants(wide)["star"] if not set(g["actions"]) <= AWS_REQUIRES_STAR]
    assert [g["actions"] for g in flagged] == [["secretsmanager:GetSecretValue"]], flagged


def test_deploy_parameters_take_msk_clusters_by_arn_alone(tmp_path):
    """A definition as `aws kafka create-replicator` takes it, each MSK
    cluster by its ARN alone (a SCRAM source, an IAM target), is accepted:
    both ARNs go to MskBootstrapLookupArns, with a note saying which
    listener is looked up, and the secret warning still comes. The stack,
    transformed as `sam deploy` does, grants kafka:GetBootstrapBrokers on
    those two ARNs, to each of the four functions (all connect to the
    clusters), and on nothing else; with the brokers given, nobody gets it."""
    from conftest import FERRY
    from support.iam_policy import evaluate
    from support.iam_rehearsal import FUNCTIONS, NETWORK, sam_stack

    source = "arn:aws:kafka:us-east-1:123456789012:cluster/old/0a1b2c3d-1"
    target = "arn:aws:kafka:us-east-1:123456789012:cluster/new/4e5f6a7b-2"
    other = "arn:aws:kafka:us-east-1:123456789012:cluster/elsewhere/9c8d7e6f-3"
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:AmazonMSK_old"
    clusters = [
        {"AmazonMskCluster": {"MskClusterArn": source},
         "ClientAuthentication": {"SaslScram": {"Mechanism": "SHA512", "SecretArn": secret}}},
        {"AmazonMskCluster": {"MskClusterArn": target}},
    ]
    info = [{"SourceKafkaClusterArn": source, "TargetKafkaClusterArn": target, "TargetCompressionType": "NONE",
             "TopicReplication": {"TopicsToReplicate": ["orders"]}}]

    def deploy(work: Path, clusters: list) -> tuple[dict, str]:
        work.mkdir()
        (work / "kc.json").write_text(json.dumps(clusters))
        (work / "ri.json").write_text(json.dumps(info))
        shutil.copy(ROOT / "template.yaml", work / "template.yaml")
        res = subprocess.run([str(FERRY), "deploy-parameters", "--kafka-clusters", "kc.json", "--replication-info", "ri.json",
                              "--name", "arn-alone", "--json"], capture_output=True, text=True, timeout=60, cwd=work)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout), res.stderr

    params, warned = deploy(tmp_path / "alone", clusters)
    assert sorted(params["MskBootstrapLookupArns"].split(",")) == sorted([source, target])
    assert (params["SourceMskClusterArn"], params["TargetMskClusterArn"]) == ("", target)
    assert f"MSK cluster {source} has no BootstrapBrokerString" in warned and "BootstrapBrokerStringSaslScram" in warned, warned
    assert f"MSK cluster {target} has no BootstrapBrokerString" in warned and "BootstrapBrokerStringSaslIam" in warned, warned
    assert f"secret ARN {secret} has no random suffix" in warned, warned
    template = (ROOT / "template.yaml").read_text()
    declared = set(re.findall(r"^  (\w+):\n    Type: ", template.split("\nConditions:")[0], re.M))
    assert set(params) <= declared, set(params) - declared

    stack = sam_stack(dict(params, **NETWORK), "arn-alone", tmp_path / "alone" / "template.yaml")
    for function in FUNCTIONS.values():
        statements = stack["roles"][stack["functions"][function]["role"]]["statements"]
        for arn in (source, target):
            d = evaluate(statements, "kafka:GetBootstrapBrokers", arn, {})
            assert d.allowed, f"{function}: {d.reason}"
        assert not evaluate(statements, "kafka:GetBootstrapBrokers", other, {}).allowed, function

    given = [dict(c, AmazonMskCluster=dict(c["AmazonMskCluster"], BootstrapBrokerString="b-1:9096")) for c in clusters]
    params, warned = deploy(tmp_path / "given", given)
    assert params["MskBootstrapLookupArns"] == "" and "has no BootstrapBrokerString" not in warned, warned
    stack = sam_stack(dict(params, **NETWORK), "arn-alone", tmp_path / "given" / "template.yaml")
    for role in stack["roles"].values():
        assert not evaluate(role["statements"], "kafka:GetBootstrapBrokers", source, {}).allowed, role["name"]


def test_state_tables_from_another_stack(tmp_path):
    """StateTablesFrom (`ferry deploy-parameters --state-tables-from A`):
    stack B creates no table, its functions' FERRY_TABLE_PREFIX is A's
    (imported from A's StateTablesPrefix export), and every grant that
    names a table names A's: each role of B may do on A's tables exactly
    what the same role of A may, and nothing on tables of its own name.
    CloudFormation refuses B before A exists (no export to import), and
    refuses a value that is not a stack name with the template's words."""
    from conftest import write_config
    from support.iam_policy import evaluate
    from support.iam_rehearsal import NETWORK, DeployRefused, deploy_parameters, sam_stack

    kc, ri = write_config(tmp_path, ["orders"])
    env = {"FERRY_REPLICATOR_NAME": "a", "FERRY_KAFKA_CLUSTERS": kc.read_text(), "FERRY_REPLICATION_INFO": ri.read_text()}
    params_a, _, template = deploy_parameters(env, tmp_path / "a")
    assert params_a["StateTablesFrom"] == ""
    a = sam_stack(params_a, "ferry-a", template)
    kinds = ("cursors", "offset-map", "producers", "groups")
    assert sorted(t["TableName"] for t in a["tables"]) == sorted(f"ferry-a-{k}" for k in kinds)
    assert a["exports"] == {"ferry-a-StateTablesPrefix": "ferry-a"}

    params_b, said, template_b = deploy_parameters(dict(env, FERRY_REPLICATOR_NAME="b"), tmp_path / "b",
                                                   ("--state-tables-from", "ferry-a"))
    assert params_b["StateTablesFrom"] == "ferry-a"
    assert "StateTablesFrom=ferry-a: this stack creates no state tables" in said and "Deploy ferry-a first" in said, said
    b = sam_stack(params_b, "ferry-b", template_b, a["exports"])
    assert b["tables"] == [] and b["exports"] == {}
    assert {f["environment"]["FERRY_TABLE_PREFIX"] for f in b["functions"].values()} == {"ferry-a"}
    assert {k: v for k, v in b["outputs"].items() if k.endswith("TableName")} == \
        {k: v for k, v in a["outputs"].items() if k.endswith("TableName")} == \
        {"CursorsTableName": "ferry-a-cursors", "OffsetMapTableName": "ferry-a-offset-map",
         "ProducersTableName": "ferry-a-producers", "GroupsTableName": "ferry-a-groups"}
    named = [r for role in b["roles"].values() for st in role["statements"]
             for r in (st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]) if ":dynamodb:" in r]
    assert named and all(":table/ferry-a-" in r for r in named), named

    def table(prefix: str, kind: str) -> str:
        return f"arn:aws:dynamodb:us-east-1:123456789012:table/{prefix}-{kind}"

    actions = ["GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "BatchWriteItem", "ConditionCheckItem",
               "DescribeTable", "CreateTable", "DeleteTable", "Scan"]
    resources = [table("ferry-a", k) for k in kinds] + [table("ferry-a", "offset-map") + "/index/by_target"]
    granted = 0
    for logical, role in a["roles"].items():
        for action in actions:
            for resource in resources:
                in_a = evaluate(role["statements"], f"dynamodb:{action}", resource, {}).allowed
                in_b = evaluate(b["roles"][logical]["statements"], f"dynamodb:{action}", resource, {}).allowed
                assert in_a == in_b, (logical, action, resource)
                granted += in_a
            for other in ("ferry-b", "ferry-c", "ferry"):
                for kind in kinds:
                    assert not evaluate(b["roles"][logical]["statements"], f"dynamodb:{action}", table(other, kind),
                                        {}).allowed, (logical, action, other, kind)
    assert granted > 20, granted

    # A parameters file written for B keeps B on A's tables: rewriting it
    # without the flag is refused (deployed, B would move to tables of its
    # own and copy back what A wrote).
    from conftest import FERRY
    out = tmp_path / "b" / "b.yaml"

    def write_b(*flag: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(FERRY), "deploy-parameters", "--kafka-clusters", "deploy-kafka-clusters.json",
                               "--replication-info", "deploy-replication-info.json", "--name", "b", "--out", str(out),
                               *flag], capture_output=True, text=True, timeout=60, cwd=tmp_path / "b")
    assert write_b("--state-tables-from", "ferry-a").returncode == 0
    assert "StateTablesFrom: 'ferry-a'\n" in out.read_text()
    refused = write_b()
    assert refused.returncode != 0 and "was written with --state-tables-from ferry-a" in refused.stderr, refused.stderr
    assert "StateTablesFrom: 'ferry-a'\n" in out.read_text()

    # Before stack A exists: nothing exports its prefix.
    with pytest.raises(DeployRefused, match="No export named ferry-a-StateTablesPrefix found"):
        sam_stack(params_b, "ferry-b", template_b)
    # Not a stack name: refused by ferry, and by CloudFormation with the template's description.
    for bad in ("ferry-a-cursors ", "arn:aws:cloudformation:us-east-1:123456789012:stack/ferry-a/1"):
        with pytest.raises(AssertionError, match="is not a CloudFormation stack name"):
            deploy_parameters(env, tmp_path / "bad", ("--state-tables-from", bad))
        with pytest.raises(DeployRefused, match="StateTablesFrom: .* failed to satisfy constraint: must be empty"):
            sam_stack(dict(params_b, StateTablesFrom=bad), "ferry-b", template_b, a["exports"])


def test_resume_after_data_loss_is_a_stack_parameter_off_by_default(tmp_path):
    """The fix a data-loss or truncation stop names for a deployed stack
    (functions/engine/src/replicate.rs, `resume_once`): the template's
    ResumeAfterDataLoss parameter sets FERRY_RESUME_AFTER_DATA_LOSS, the
    variable the functions read (functions/engine/src/context.rs), on every
    function; "false" unless given, and CloudFormation takes nothing but
    "true" or "false"."""
    source = "arn:aws:kafka:us-east-1:123456789012:cluster/old/0a1b2c3d-1"
    target = "arn:aws:kafka:us-east-1:123456789012:cluster/new/4e5f6a7b-2"
    clusters = [{"AmazonMskCluster": {"MskClusterArn": arn, "BootstrapBrokerString": "b-1:9098"}} for arn in (source, target)]
    info = [{"SourceKafkaClusterArn": source, "TargetKafkaClusterArn": target, "TargetCompressionType": "NONE",
             "TopicReplication": {"TopicsToReplicate": ["orders"]}}]
    context = (ROOT / "functions" / "engine" / "src" / "context.rs").read_text()
    assert 'RESUME_AFTER_DATA_LOSS: &str = "FERRY_RESUME_AFTER_DATA_LOSS"' in context
    assert 'env::RESUME_AFTER_DATA_LOSS).is_ok_and(|v| v == "true")' in context
    template = (ROOT / "template.yaml").read_text()
    assert re.search(r'^  ResumeAfterDataLoss:\n    Type: String\n    AllowedValues: \["true", "false"\]\n    Default: "false"', template, re.M)
    check_a_true_false_parameter(tmp_path, clusters, info, "resume", "ResumeAfterDataLoss", "FERRY_RESUME_AFTER_DATA_LOSS")


def check_a_true_false_parameter(tmp_path, clusters: list, info: list, stack_name: str, parameter: str, variable: str,
                                 refused: bool = False) -> None:
    """`parameter`, which `ferry deploy-parameters` leaves to the operator,
    sets `variable` on every function: "false" unless given, else as given;
    with `refused`, CloudFormation refuses any other value."""
    from conftest import FERRY
    from support.iam_rehearsal import FUNCTIONS, NETWORK, DeployRefused, sam_stack

    (tmp_path / "kc.json").write_text(json.dumps(clusters))
    (tmp_path / "ri.json").write_text(json.dumps(info))
    shutil.copy(ROOT / "template.yaml", tmp_path / "template.yaml")
    res = subprocess.run([str(FERRY), "deploy-parameters", "--kafka-clusters", "kc.json", "--replication-info", "ri.json",
                          "--name", stack_name, "--json"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    params = dict(json.loads(res.stdout), **NETWORK)
    assert parameter not in params, "deploy-parameters leaves it to the operator"
    for given, want in ((None, "false"), ("true", "true"), ("false", "false")):
        p = params if given is None else dict(params, **{parameter: given})
        stack = sam_stack(p, stack_name, tmp_path / "template.yaml")
        for function in FUNCTIONS.values():
            assert stack["functions"][function]["environment"][variable] == want, (function, given)
    if refused:
        with pytest.raises(DeployRefused, match=f"{parameter}: 'yes' failed to satisfy constraint"):
            sam_stack(dict(params, **{parameter: "yes"}), stack_name, tmp_path / "template.yaml")


@pytest.mark.parametrize("parameter,variable,constant", [
    ("TopicMetrics", "FERRY_TOPIC_METRICS", "TOPIC_METRICS_ENV"),
    ("GroupMetrics", "FERRY_GROUP_METRICS", "GROUP_METRICS_ENV"),
])
def test_metrics_per_topic_and_per_group_are_stack_parameters_off_by_default(tmp_path, parameter, variable, constant):
    """Metrics per topic or per consumer group cost in proportion to the
    topics or groups (CloudWatch bills each metric by the month), so they
    are asked for: the TopicMetrics and GroupMetrics parameters set
    FERRY_TOPIC_METRICS and FERRY_GROUP_METRICS, the variables the
    functions read (functions/core/src/metrics.rs), on every function;
    "false" unless given, and CloudFormation takes nothing but "true" or
    "false"."""
    clusters = [{"ApacheKafkaCluster": {"ApacheKafkaClusterId": c, "BootstrapBrokerString": f"{c}:9092"}} for c in ("a", "b")]
    info = [{"SourceKafkaClusterId": "a", "TargetKafkaClusterId": "b", "TargetCompressionType": "NONE",
             "TopicReplication": {"TopicsToReplicate": ["orders"]}}]
    metrics = (ROOT / "functions" / "core" / "src" / "metrics.rs").read_text()
    assert f'{constant}: &str = "{variable}"' in metrics
    check_a_true_false_parameter(tmp_path, clusters, info, "metrics", parameter, variable, refused=True)


def test_the_plan_is_given_the_maps_max_concurrency(tmp_path):
    """The plan makes no more batches than the state machine's Map runs at
    once (larger batches, not a second wave): the Plan function is given
    FERRY_MAX_CONCURRENCY (functions/engine/src/context.rs) from the same
    MaxConcurrency parameter the Map's definition is given, as deployed."""
    from conftest import FERRY
    from support.iam_rehearsal import NETWORK, sam_stack

    clusters = [{"ApacheKafkaCluster": {"ApacheKafkaClusterId": c, "BootstrapBrokerString": f"{c}:9092"}} for c in ("a", "b")]
    info = [{"SourceKafkaClusterId": "a", "TargetKafkaClusterId": "b", "TargetCompressionType": "NONE",
             "TopicReplication": {"TopicsToReplicate": ["orders"]}}]
    context = (ROOT / "functions" / "engine" / "src" / "context.rs").read_text()
    assert 'MAX_CONCURRENCY: &str = "FERRY_MAX_CONCURRENCY"' in context
    (tmp_path / "kc.json").write_text(json.dumps(clusters))
    (tmp_path / "ri.json").write_text(json.dumps(info))
    shutil.copy(ROOT / "template.yaml", tmp_path / "template.yaml")
    res = subprocess.run([str(FERRY), "deploy-parameters", "--kafka-clusters", "kc.json", "--replication-info", "ri.json",
                          "--name", "conc", "--json"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    params = dict(json.loads(res.stdout), **NETWORK)
    for given in (None, "3"):
        p = params if given is None else dict(params, MaxConcurrency=given)
        stack = sam_stack(p, "conc", tmp_path / "template.yaml")
        want = str(stack["state_machine"]["max_concurrency"])
        assert want == (given or "10"), stack["state_machine"]
        assert stack["functions"]["ferry-plan"]["environment"]["FERRY_MAX_CONCURRENCY"] == want, stack["functions"]["ferry-plan"]
