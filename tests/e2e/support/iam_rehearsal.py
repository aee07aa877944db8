"""The deployed stack's IAM, enforced locally: every AWS call a function
makes is checked against its own role before it reaches moto.

How:
* template.yaml is transformed by SAM's translator and resolved for this
  stack (sam_stack.py), with the parameters `ferry deploy-parameters` derives
  from the replicator definition; each function's role statements, its
  environment and the tables come from there.
* The tables are created as CloudFormation would, from the template's
  definitions, with moto's own (unchecked) credentials: the functions only
  ever see them the way a deployed stack would.
* Each function runs with AWS_ACCESS_KEY_ID set to its role's name and
  AWS_ENDPOINT_URL pointing at a proxy here. The proxy reads the access key
  from the SigV4 Authorization header, maps the request to IAM actions and
  resource ARNs (DynamoDB: X-Amz-Target plus TableName, IndexName, every
  table of a batch and every item of a transaction; Secrets Manager:
  SecretId resolved to the secret's full ARN, random suffix included, as
  IAM sees it; MSK: GetBootstrapBrokers on the cluster ARN of its path;
  Step Functions: the state machine or execution ARN;
  CloudWatch: `*` with cloudwatch:namespace), evaluates the role's
  statements (iam_policy.py) and either forwards the call to moto or
  answers as AWS does, AccessDeniedException with AWS's message, so Ferry's
  own error path runs. Every decision is written to `iam-decisions.jsonl`,
  every denial also to the proxy's log with the action and resource.
* The state machine's role is checked the same way for each Lambda
  invocation (lambda:InvokeFunction on the function's ARN), by local_sfn's
  router.

A call the proxy cannot map to an action is denied: the rehearsal never
lets through what it did not check.

FERRY_IAM_REHEARSAL=report records denials without refusing the calls, to
list every missing grant of a template in one run; the tests never set it,
and `LocalStepFunctions.assert_rehearsed` fails on a recorded denial either
way.
"""

import copy
import http.client
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3

from conftest import FERRY, ROOT
from support.iam_policy import Decision, evaluate
from support.http_reply import reply

ACCOUNT = "123456789012"
# Every role's secret key and session token in the rehearsal (the access key id is the role's name).
REHEARSAL_SECRET = "rehearsal"
REGION = os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
SAM_PYTHON = Path(os.environ.get("FERRY_SAM_VENV", ROOT / ".cache" / "sam-venv")) / "bin" / "python"
# Template logical id -> the local function name (the binary's name).
FUNCTIONS = {"PlanFunction": "ferry-plan", "ReplicateFunction": "ferry-replicate",
             "SyncGroupsFunction": "ferry-sync-groups", "ReportFunction": "ferry-report"}
# GetBootstrapBrokers: GET /v1/clusters/{clusterArn}/bootstrap-brokers.
KAFKA_BOOTSTRAP = re.compile(r"/v1/clusters/(.+)/bootstrap-brokers")
CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]+/([^/]+)/([^/]+)/aws4_request")
# Lambda's VPC settings need real subnets in AWS; here they only have to be
# present for the transform.
NETWORK = {"SubnetIds": "subnet-0rehearsal", "SecurityGroupIds": "sg-0rehearsal"}


def deploy_parameters(env: dict[str, str], work: Path, args: tuple[str, ...] = ()) -> tuple[dict[str, str], str, Path]:
    """What a user deploys, laid out as on their machine: template.yaml
    copied into `work`, and `ferry deploy-parameters` run there on the
    definition the functions are given (env's FERRY_* variables), which
    writes ferry-definition/ beside the template (the definition layer's
    content), with `args` added to its command line (e.g.
    `--state-tables-from A`). Returns the template parameters, what it
    warned about, and the template's path."""
    work.mkdir(parents=True, exist_ok=True)
    kc, ri = work / "deploy-kafka-clusters.json", work / "deploy-replication-info.json"
    kc.write_text(env["FERRY_KAFKA_CLUSTERS"])
    ri.write_text(env["FERRY_REPLICATION_INFO"])
    template = work / "template.yaml"
    shutil.copy(ROOT / "template.yaml", template)
    p = subprocess.run([str(FERRY), "deploy-parameters", "--kafka-clusters", str(kc), "--replication-info", str(ri),
                        "--name", env["FERRY_REPLICATOR_NAME"], "--json", *args], capture_output=True, text=True, timeout=60,
                       cwd=work)
    assert p.returncode == 0, p.stderr
    return dict(json.loads(p.stdout), **NETWORK), p.stderr, template


class DeployRefused(Exception):
    """CloudFormation or Lambda would refuse the stack (sam_stack.py's Refused)."""


def sam_stack(parameters: dict[str, str], stack: str, template: Path = ROOT / "template.yaml",
              exports: dict[str, str] | None = None) -> dict:
    """The transformed, resolved stack (see sam_stack.py); `exports`, what
    the region's other stacks export (another stack's `exports`)."""
    req = {"template": str(template), "stack": stack, "region": REGION, "account": ACCOUNT,
           "parameters": parameters, "function_names": FUNCTIONS, "exports": exports or {}}
    p = subprocess.run([str(SAM_PYTHON), str(Path(__file__).with_name("sam_stack.py"))], input=json.dumps(req),
                       capture_output=True, text=True, timeout=120)
    if p.returncode == 3:
        raise DeployRefused(p.stderr.strip())
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def without(stack: dict, role: str, action: str | None = None, resource: str | None = None) -> dict:
    """A copy of the stack whose `role` lacks a grant: `action` removed from
    every statement, or every resource matching the regex `resource`
    removed (statements left with no action or resource go)."""
    out = copy.deepcopy(stack)
    kept = []
    for st in out["roles"][role]["statements"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if action:
            actions = [a for a in actions if a != action]
        if resource:
            resources = [r for r in resources if not re.search(resource, r)]
        if actions and resources:
            kept.append(dict(st, Action=actions, Resource=resources))
    assert kept != out["roles"][role]["statements"], f"{role} has no such grant to remove"
    out["roles"][role]["statements"] = kept
    return out


def _list(v) -> list:
    return v if isinstance(v, list) else [v]


class Denied(Exception):
    pass


class Requests:
    """Maps one AWS request to the (action, resource, context) triples IAM
    authorizes it by."""

    def __init__(self, moto_url: str):
        self.moto_url = moto_url
        self._secrets = boto3.client("secretsmanager", endpoint_url=moto_url, region_name=REGION)
        self._secret_arns: dict[str, str] = {}

    def table(self, name: str, index: str | None = None) -> str:
        arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
        return f"{arn}/index/{index}" if index else arn

    def secret_arn(self, secret_id: str) -> str:
        """What IAM matches: the secret's full ARN, whatever the caller named
        it by (a name, a partial ARN without the random suffix, the ARN)."""
        if secret_id not in self._secret_arns:
            try:
                self._secret_arns[secret_id] = self._secrets.describe_secret(SecretId=secret_id)["ARN"]
            except self._secrets.exceptions.ResourceNotFoundException:
                # AWS authorizes against the ARN as given; the call then finds nothing.
                return secret_id if secret_id.startswith("arn:") else \
                    f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{secret_id}"
        return self._secret_arns[secret_id]

    def authorize(self, service: str, headers, body: bytes, path: str = "") -> list[tuple[str, str, dict]]:
        target = headers.get("X-Amz-Target", "")
        op = target.rsplit(".", 1)[-1]
        ctx = {"aws:RequestedRegion": REGION}
        if service == "dynamodb" and target.startswith("DynamoDB_"):
            req = json.loads(body or b"{}")
            if op in ("BatchWriteItem", "BatchGetItem"):
                return [(f"dynamodb:{op}", self.table(t), ctx) for t in req["RequestItems"]]
            if op in ("TransactWriteItems", "TransactGetItems"):
                # No IAM action of their own: each item needs its own action.
                kinds = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                         "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}
                return [(f"dynamodb:{kinds[k]}", self.table(v["TableName"]), ctx)
                        for item in req["TransactItems"] for k, v in item.items()]
            if op == "ListTables":
                return [("dynamodb:ListTables", "*", ctx)]
            if "TableName" in req:
                return [(f"dynamodb:{op}", self.table(req["TableName"], req.get("IndexName")), ctx)]
        if service == "secretsmanager" and target.startswith("secretsmanager."):
            req = json.loads(body or b"{}")
            if "SecretId" in req:
                return [(f"secretsmanager:{op}", self.secret_arn(req["SecretId"]), ctx)]
        if service == "states" and target.startswith("AWSStepFunctions."):
            req = json.loads(body or b"{}")
            arn = req.get("stateMachineArn") or req.get("executionArn")
            if arn:
                return [(f"states:{op}", arn, ctx)]
        if service == "kafka":
            # MSK's REST API: the operation is the method and the path; the
            # cluster ARN travels URL-encoded in it.
            m = KAFKA_BOOTSTRAP.fullmatch(urllib.parse.urlparse(path).path)
            if m and headers.get("X-Amz-Target") is None:
                return [("kafka:GetBootstrapBrokers", urllib.parse.unquote(m.group(1)), ctx)]
        if service == "monitoring":
            form = urllib.parse.parse_qs(body.decode(errors="replace"))
            action = form.get("Action", [op])[0]
            if action:
                ns = form.get("Namespace")
                return [(f"cloudwatch:{action}", "*", dict(ctx, **({"cloudwatch:namespace": ns[0]} if ns else {})))]
        raise Denied(f"the rehearsal cannot map this {service} request ({target or 'no X-Amz-Target'}) to an IAM action")


def access_denied(service: str, message: str) -> tuple[int, dict, bytes]:
    """AWS's answer to a request IAM refused, in the service's protocol."""
    if service == "monitoring":
        body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>{message}</Message>"
                f"</Error><RequestId>rehearsal</RequestId></ErrorResponse>").encode()
        return 403, {"Content-Type": "text/xml"}, body
    if service == "kafka":  # REST-JSON: the error's name in a header, 403 as IAM answers
        body = json.dumps({"message": message}).encode()
        return 403, {"Content-Type": "application/json", "x-amzn-ErrorType": "AccessDeniedException"}, body
    ctype = "application/x-amz-json-1.1" if service == "secretsmanager" else "application/x-amz-json-1.0"
    body = json.dumps({"__type": "com.amazon.coral.service#AccessDeniedException", "Message": message}).encode()
    return 400, {"Content-Type": ctype, "x-amzn-ErrorType": "AccessDeniedException"}, body


class Rehearsal:
    """The IAM-enforcing proxy for one local stack; `stack` may be swapped
    (set_stack) between executions, e.g. for a role without one grant."""

    def __init__(self, env: dict[str, str], log_dir: Path, moto_url: str | None = None, stack_name: str | None = None,
                 deploy_args: tuple[str, ...] = (), exports: dict[str, str] | None = None):
        """`stack_name`: the CloudFormation stack's name (its roles' and, by
        default, its tables' prefix); env's FERRY_TABLE_PREFIX when not
        given. `deploy_args`: more `ferry deploy-parameters` arguments.
        `exports`: what other stacks deployed before this one export."""
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.moto_url = moto_url or os.environ["AWS_ENDPOINT_URL"]
        self.enforce = os.environ.get("FERRY_IAM_REHEARSAL", "enforce") != "report"
        self.parameters, self.deploy_warnings, self.template = deploy_parameters(env, log_dir, deploy_args)
        self.stack_name = stack_name or env["FERRY_TABLE_PREFIX"]
        self.stack = sam_stack(self.parameters, self.stack_name, self.template, exports)
        self.requests = Requests(self.moto_url)
        # Where a service's calls go when not to `moto_url` (Step Functions
        # runs on a moto of its own: local_sfn.py).
        self.upstreams: dict[str, str] = {}
        self.decisions: list[dict] = []
        self.lock = threading.Lock()
        self._log = open(log_dir / "iam-proxy.log", "a")
        self._jsonl = open(log_dir / "iam-decisions.jsonl", "a")
        self.create_tables()
        self.server = self._serve()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.definition_clusters = env["FERRY_KAFKA_CLUSTERS"]
        self.register_on_msk_iam()

    def set_stack(self, stack: dict) -> None:
        with self.lock:
            self.stack = stack

    def create_tables(self) -> None:
        """The stack's tables, as CloudFormation creates them from the template."""
        ddb = boto3.client("dynamodb", endpoint_url=self.moto_url, region_name=REGION)
        for t in self.stack["tables"]:
            args = {k: t[k] for k in ("TableName", "AttributeDefinitions", "KeySchema", "BillingMode",
                                      "LocalSecondaryIndexes", "GlobalSecondaryIndexes") if k in t}
            try:
                ddb.create_table(**args)
                created = True
            except ddb.exceptions.ResourceInUseException:
                created = False
            ddb.get_waiter("table_exists").wait(TableName=t["TableName"])
            if created and "TimeToLiveSpecification" in t:
                ddb.update_time_to_live(TableName=t["TableName"], TimeToLiveSpecification=t["TimeToLiveSpecification"])

    def register_on_msk_iam(self) -> None:
        """Each role's credentials (below) become known to the local MSK IAM
        listeners (infra/local/up's TARGET_IAM_IDENTITIES_FILE), as an
        assumed role's are to MSK: a function signs its token with its own
        role, and the broker's principal is that role's session. And what
        that principal may do there is decided as MSK decides it: the
        broker's authorizer (FerryMskIamAuthorizer, TARGET_IAM_AUTHZ_FILE)
        maps each Kafka operation to its kafka-cluster:* action and resource
        ARN and asks this proxy, which evaluates the role's statements from
        the template (`/msk-authorize`, recorded with every other decision)."""
        identities, authorize = os.environ.get("TARGET_IAM_IDENTITIES_FILE"), os.environ.get("TARGET_IAM_AUTHZ_FILE")
        if not identities or not authorize:
            return
        clusters = [c for c in json.loads(self.definition_clusters)
                    if "AmazonMskCluster" in c and c["AmazonMskCluster"].get("BootstrapBrokerString")]
        ids, grants = [], []
        for role in self.stack["roles"].values():
            principal = f"arn:aws:sts::{ACCOUNT}:assumed-role/{role['name']}/{role['name']}"
            ids.append(f"{role['name']}|{REHEARSAL_SECRET}|{principal}|{REHEARSAL_SECRET}\n")
            for c in clusters:
                grants.append(f"{principal} {self.url}/msk-authorize {c['AmazonMskCluster']['MskClusterArn']}\n")
        for path, lines in ((identities, ids), (authorize, grants)):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.writelines(lines)

    def role_of(self, function: str) -> dict:
        return self.stack["roles"][self.stack["functions"][function]["role"]]

    def function_env(self, function: str) -> dict[str, str]:
        """The environment the template gives `function`, with its role's
        credentials and every AWS call sent through the proxy. Lambda
        mounts a function's layer at /opt; here a value naming /opt names
        the layer's folder instead (the one `sam deploy` would zip)."""
        f = self.stack["functions"][function]
        environment = dict(f["environment"])
        if f["layers"]:
            assert len(f["layers"]) == 1, "the rehearsal mounts one layer per function"
            opt = f["layers"][0]
            assert Path(opt).is_dir(), f"{function}'s layer content {opt} is missing: sam deploy would fail"
            environment = {k: opt + v[len("/opt"):] if v == "/opt" or v.startswith("/opt/") else v
                           for k, v in environment.items()}
        return dict(environment, AWS_ENDPOINT_URL=self.url, AWS_ACCESS_KEY_ID=self.role_of(function)["name"],
                    AWS_SECRET_ACCESS_KEY=REHEARSAL_SECRET, AWS_SESSION_TOKEN=REHEARSAL_SECRET, AWS_REGION=REGION,
                    AWS_DEFAULT_REGION=REGION)

    def decide(self, principal: str, action: str, resource: str, context: dict, probe: bool = False) -> Decision:
        """`probe`: a check whose denial is no error (Kafka asks, e.g.,
        whether it may create on the cluster before asking for the topic):
        recorded, but not counted as a denial."""
        with self.lock:
            roles = {r["name"]: (logical, r) for logical, r in self.stack["roles"].items()}
        if principal not in roles:
            d = Decision(False, f"{principal} is not a role of this stack")
        else:
            d = evaluate(roles[principal][1]["statements"], action, resource, context)
        rec = {"time": time.time(), "principal": principal, "action": action, "resource": resource,
               "allowed": d.allowed, "reason": d.reason, "probe": probe}
        with self.lock:
            self.decisions.append(rec)
            self._jsonl.write(json.dumps(rec) + "\n")
            self._jsonl.flush()
            if not d.allowed:
                self._log.write(f"DENIED {principal}: {action} on {resource} ({d.reason})\n")
                self._log.flush()
        return d

    def authorize_invoke(self, function: str) -> Decision:
        """The state machine's role invoking a function (local_sfn's router)."""
        role = self.stack["roles"][self.stack["state_machine"]["role"]]["name"]
        arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}"
        return self.decide(role, "lambda:InvokeFunction", arn, {"aws:RequestedRegion": REGION})

    def denials(self) -> list[dict]:
        with self.lock:
            return [d for d in self.decisions if not d["allowed"] and not d["probe"]]

    def denial_report(self) -> str:
        """Each distinct denial once, in the order they happened."""
        lines = (f"{d['principal']} was denied {d['action']} on {d['resource']} ({d['reason']})" for d in self.denials())
        return "\n".join(dict.fromkeys(lines))

    def clear(self) -> None:
        with self.lock:
            self.decisions.clear()

    def _serve(self) -> ThreadingHTTPServer:
        rehearsal = self
        upstream = urllib.parse.urlparse(self.moto_url)

        class Proxy(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/msk-authorize?"):
                    # The local MSK IAM listener's authorizer asking for a role.
                    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                    role = q["principal"].split(":assumed-role/")[-1].split("/")[0]
                    d = rehearsal.decide(role, q["action"], q["resource"], {}, probe=q.get("probe") == "1")
                    self._reply(200, {"Content-Type": "text/plain"}, b"ALLOWED" if d.allowed else b"DENIED")
                    return
                m = CREDENTIAL.search(self.headers.get("Authorization", ""))
                principal, service = (m.group(1), m.group(3)) if m else ("anonymous", "unknown")
                try:
                    checks = rehearsal.requests.authorize(service, self.headers, body, self.path)
                except Denied as e:
                    rehearsal.decide(principal, f"{service}:unmapped", str(e), {})
                    self._reply(*access_denied(service, f"Rehearsal: {e}"))
                    return
                for action, resource, ctx in checks:
                    d = rehearsal.decide(principal, action, resource, ctx)
                    if not d.allowed and rehearsal.enforce:
                        # AWS's wording, so an operator recognises it in Ferry's errors.
                        session = f"arn:aws:sts::{ACCOUNT}:assumed-role/{principal}/rehearsal"
                        msg = (f"User: {session} is not authorized to perform: {action} on resource: {resource} "
                               f"because {d.reason}")
                        self._reply(*access_denied(service, msg))
                        return
                to = urllib.parse.urlparse(rehearsal.upstreams[service]) if service in rehearsal.upstreams else upstream
                conn = http.client.HTTPConnection(to.hostname, to.port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    kept = {k: v for k, v in resp.getheaders()
                            if k.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server")}
                    self._reply(resp.status, kept, data)
                finally:
                    conn.close()

            def _reply(self, status: int, headers: dict, data: bytes) -> None:
                reply(self, status, headers, data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args) -> None:  # decisions have their own log
                pass

        class Server(ThreadingHTTPServer):
            # socketserver's default backlog is 5: dozens of functions each
            # with dozens of calls in flight (bench/scale) found connections
            # refused ("dispatch failure"), which AWS's endpoints never do.
            request_queue_size = 1024
            daemon_threads = True

        server = Server(("127.0.0.1", 0), Proxy)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._log.close()
        self._jsonl.close()
