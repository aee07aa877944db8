"""The real state machine, executed locally: moto's Step Functions runs
infra/statemachine/replicator.asl.json for real, and its Lambda tasks invoke
the real function binaries (target/debug/ferry-plan, ferry-replicate,
ferry-sync-groups, ferry-report) through a local Lambda Runtime API served by cargo-lambda
(`cargo lambda watch --only-lambda-apis`).

By default each function also runs as deployed, under IAM (iam_rehearsal.py):
the environment template.yaml gives it, its own role's credentials, and every
AWS call it makes checked against that role; the state machine's role is
checked on every Lambda invocation.

moto's Step Functions calls Lambda at http://localhost:$MOTO_PORT, so this
harness starts a second moto server (for Step Functions only) with MOTO_PORT
pointing at a small router: Lambda invocations go to cargo-lambda, by
function name, and everything else back to that moto. The functions
themselves use the stack's moto (DynamoDB) and Kafka clusters.
"""

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3

from conftest import ROOT
from iam_rehearsal import Rehearsal

VENV_BIN = Path(os.environ.get("FERRY_VENV", ROOT / ".cache" / "venv")) / "bin"
ACCOUNT = "123456789012"
REGION = os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
INVOKE = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {port}")


def make_router(lambda_port: int, moto_port: int, rehearsal: Rehearsal | None = None, crash=None) -> ThreadingHTTPServer:
    """`crash(name, payload)`, when given and true for an invocation, answers
    it as Lambda does for a function whose process died (an unhandled
    `Runtime.ExitError`) instead of running it."""

    class Router(BaseHTTPRequestHandler):
        def _send(self, status: int, headers: dict[str, str], data: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            m = INVOKE.match(self.path)
            if m:
                name = urllib.parse.unquote(m.group(1)).split(":function:")[-1].split(":")[0]
                if crash and crash(name, body):
                    data = json.dumps({"errorType": "Runtime.ExitError",
                                       "errorMessage": "RequestId: local Error: Runtime exited with error: signal: killed"}).encode()
                    self._send(200, {"X-Amz-Function-Error": "Unhandled", "Content-Type": "application/json"}, data)
                    return
                decision = rehearsal.authorize_invoke(name) if rehearsal else None
                if decision is not None and not decision.allowed:
                    data = json.dumps({"Type": "User", "message": f"not authorized to perform: lambda:InvokeFunction "
                                       f"on resource: {function_arn(name)} because {decision.reason}"}).encode()
                    self._send(403, {"x-amzn-ErrorType": "AccessDeniedException", "Content-Type": "application/json"}, data)
                    return
                port, path, timeout = lambda_port, f"/2015-03-31/functions/{name}/invocations", 900
            else:
                port, path, timeout = moto_port, self.path, 60
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            conn.request(self.command, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if m and resp.status == 408:
                # cargo-lambda's timeout (see `--timeout` below) is an HTTP
                # 408; Lambda's is a function error, which Catch can take.
                data = json.dumps({"errorType": "Sandbox.Timedout",
                                   "errorMessage": "RequestId: local Error: Task timed out"}).encode()
            if m and (resp.status == 408 or (resp.status >= 500 and b'"errorType"' in data)):
                # cargo-lambda answers a function's error with HTTP 500;
                # Lambda answers 200 with X-Amz-Function-Error, which is what
                # lets Step Functions match the errorType in Retry and Catch
                # (a 500 fails the execution with States.Runtime, which no
                # Catch takes).
                self._send(200, {"X-Amz-Function-Error": "Unhandled", "Content-Type": "application/json"}, data)
                return
            skip = ("content-length", "transfer-encoding", "connection", "date", "server")
            self._send(resp.status, {k: v for k, v in resp.getheaders() if k.lower() not in skip}, data)

        do_GET = do_POST = do_PUT = do_DELETE = _forward

        def log_message(self, *args) -> None:  # quiet
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Router)


class LocalStepFunctions:
    """Context manager: cargo-lambda, the function binaries with `env`, a
    Step Functions moto behind the router. `client` is its boto3 client."""

    def __init__(self, env: dict[str, str], log_dir: Path, replicate_instances: int = 2, rehearse: bool = True, crash=None):
        self.env, self.log_dir, self.rehearse, self.crash = env, log_dir, rehearse, crash
        self.rehearsal: Rehearsal | None = None
        log_dir.mkdir(parents=True, exist_ok=True)
        self.instances = {"ferry-plan": 1, "ferry-replicate": replicate_instances, "ferry-sync-groups": 1, "ferry-report": 1}
        self.procs: list[subprocess.Popen] = []
        self.functions: list[subprocess.Popen] = []

    def __enter__(self) -> "LocalStepFunctions":
        try:
            return self._start()
        except BaseException:
            self.__exit__()
            raise

    def _start(self) -> "LocalStepFunctions":
        self.router = None
        if self.rehearse:
            self.rehearsal = Rehearsal(self.env, self.log_dir)
        cargo_lambda = shutil.which("cargo-lambda", path=str(VENV_BIN)) or shutil.which("cargo-lambda")
        assert cargo_lambda, "cargo-lambda is missing: infra/local/up installs it into the venv"
        self.lambda_port, self.moto_port = free_port(), free_port()
        # Read per request: a test may set or clear `crash` between executions.
        self.router = make_router(self.lambda_port, self.moto_port, self.rehearsal,
                                  lambda name, body: bool(self.crash and self.crash(name, body)))
        self.router_port = self.router.server_address[1]
        threading.Thread(target=self.router.serve_forever, daemon=True).start()

        self._spawn("cargo-lambda", [cargo_lambda, "lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1",
                                     "-P", str(self.lambda_port), "--timeout", "30"], cwd=ROOT)
        wait_port(self.lambda_port)
        self._start_functions()
        moto_env = dict(os.environ, MOTO_PORT=str(self.router_port))
        self._spawn("moto-sfn", [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.moto_port)], env=moto_env)
        wait_port(self.moto_port)
        conn = http.client.HTTPConnection("127.0.0.1", self.moto_port, timeout=30)
        conn.request("POST", "/moto-api/config", body=json.dumps(
            {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}),
            headers={"Content-Type": "application/json"})
        assert conn.getresponse().status in (200, 201)
        self.client = boto3.client("stepfunctions", endpoint_url=f"http://127.0.0.1:{self.moto_port}", region_name=REGION)
        return self

    def _start_functions(self) -> None:
        for name, n in self.instances.items():
            binary = ROOT / "target" / "debug" / name
            assert binary.exists(), f"{binary} is missing: cargo build --workspace"
            deployed = self.rehearsal.function_env(name) if self.rehearsal else {}
            # Only the proxy's endpoint, never a service-specific one that would bypass it.
            base = {k: v for k, v in os.environ.items() if not (deployed and k.startswith("AWS_ENDPOINT_URL"))}
            for i in range(n):
                memory = self.rehearsal.stack["functions"][name]["memory"] if self.rehearsal else 512
                # Deployed, the definition comes from the template's layer only.
                given = {k: v for k, v in self.env.items()
                         if not (deployed and k in ("FERRY_KAFKA_CLUSTERS", "FERRY_REPLICATION_INFO"))}
                env = {**base, **given, **deployed,
                       "AWS_LAMBDA_RUNTIME_API": f"http://127.0.0.1:{self.lambda_port}/.rt/{name}",
                       "AWS_LAMBDA_FUNCTION_NAME": name, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
                       "AWS_LAMBDA_FUNCTION_VERSION": "1", "RUST_LOG": "info"}
                self.functions.append(self._spawn(f"{name}-{i}", [str(binary)], env=env))

    def cold_start(self) -> None:
        """New instances of every function, as after a deployment: nothing a
        function cached (secrets, clients) survives."""
        for p in self.functions:
            p.terminate()
        for p in self.functions:
            p.wait(15)
        self.procs = [p for p in self.procs if p not in self.functions]
        self.functions = []
        self._start_functions()

    def _spawn(self, name: str, cmd: list[str], **kw) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **kw))
        return self.procs[-1]

    def __exit__(self, *exc) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.router:
            self.router.shutdown()
        if self.rehearsal:
            self.rehearsal.close()

    def assert_rehearsed(self) -> None:
        """Nothing any function or the state machine did was refused by IAM."""
        if self.rehearsal:
            assert not self.rehearsal.denials(), f"IAM denied:\n{self.rehearsal.denial_report()}"

    def function_log(self, name: str) -> str:
        """Everything the instances of one function wrote."""
        return "".join(f.read_text(errors="replace") for f in sorted(self.log_dir.glob(f"{name}-*.log")))

    def logs(self) -> str:
        return "\n".join(f"== {f.name}\n{f.read_text(errors='replace')[-2500:]}" for f in sorted(self.log_dir.glob("*.log")))

    def create_state_machine(self, max_concurrency: int = 2) -> str:
        definition = (ROOT / "infra" / "statemachine" / "replicator.asl.json").read_text()
        subs = {"PlanFunctionArn": function_arn("ferry-plan"), "ReplicateFunctionArn": function_arn("ferry-replicate"),
                "SyncGroupsFunctionArn": function_arn("ferry-sync-groups"), "ReportFunctionArn": function_arn("ferry-report"),
                "MaxConcurrency": str(max_concurrency)}
        for k, v in subs.items():
            definition = definition.replace("${" + k + "}", v)
        json.loads(definition)  # every substitution made
        return self.client.create_state_machine(
            name=f"ferry-{int(time.time() * 1000)}", definition=definition,
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/ferry-state-machine")["stateMachineArn"]

    def execute(self, arn: str, payload: dict, timeout: float = 300) -> dict:
        ex = self.client.start_execution(stateMachineArn=arn, name=f"run-{time.time_ns()}", input=json.dumps(payload))["executionArn"]
        deadline = time.time() + timeout
        while True:
            d = self.client.describe_execution(executionArn=ex)
            if d["status"] != "RUNNING":
                return d
            if time.time() > deadline:
                raise TimeoutError(f"execution still RUNNING after {timeout} s\n{self.logs()}")
            time.sleep(1)
