"""The real state machine, executed locally: moto's Step Functions runs
infra/statemachine/replicator.asl.json for real, and its Lambda tasks invoke
the real function binaries (target/debug/ferry-plan, ferry-replicate,
ferry-sync-groups, ferry-report) through a local Lambda Runtime API served by cargo-lambda
(`cargo lambda watch --only-lambda-apis`).

By default each function also runs as deployed, under IAM (iam_rehearsal.py):
the environment template.yaml gives it, its own role's credentials, and every
AWS call it makes checked against that role; the state machine's role is
checked on every Lambda invocation. And each function instance runs with
Lambda's resources (lambda_sandbox.py): its MemorySize as a memory cap, the
CPU share that memory buys as a CPU quota, and its Timeout: the Runtime API
reaches each instance through the router, which hands it the deadline
Lambda would (now + Timeout, as an instant), and kills the instance at that
deadline, answering the invocation with `Sandbox.Timedout` as Lambda does;
an instance that dies while invoked (out of memory, a crash) is answered
with `Runtime.OutOfMemory` or `Runtime.ExitError`, and replaced, as Lambda
replaces an execution environment.

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
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3

from conftest import ROOT
from support.iam_rehearsal import Rehearsal
from support.lambda_sandbox import Sandbox, available
from support.http_reply import reply

VENV_BIN = Path(os.environ.get("FERRY_VENV", ROOT / ".cache" / "venv")) / "bin"
ACCOUNT = "123456789012"
REGION = os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
INVOKE = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations")
# An instance's own Runtime API path: /.inst/<function>/<n>/2018-06-01/runtime/...
INSTANCE = re.compile(r"^/\.inst/([^/]+)/(\d+)(/2018-06-01/runtime/.*)$")
RUNTIME_TIMEOUT = 900  # Lambda's longest; each function's own Timeout is enforced here


def cursors_table(prefix: str):
    """The state's cursors table on moto (boto3 resource)."""
    return boto3.resource("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                          region_name=os.environ.get("AWS_REGION", "us-east-1")).Table(f"{prefix}-cursors")


def plan_batch_key(replicator: str, ref: dict) -> dict:
    """The cursors-table key of the batch a plan's reference `ref`
    (`{"plan", "batch", ...}`) names."""
    return {"flow": f"{replicator}/plan/{ref['plan']}", "partition": f"batch/{ref['batch']:06}"}


def stored_batch(env: dict[str, str], payload: bytes) -> dict | None:
    """The batch a Replicate invocation's payload refers to, as the Plan
    function kept it in the state tables (None for a payload that carries
    its partitions itself)."""
    ref = json.loads(payload or b"{}").get("stored")
    if not ref:
        return None
    key = plan_batch_key(env["FERRY_REPLICATOR_NAME"], ref)
    item = cursors_table(env["FERRY_TABLE_PREFIX"]).get_item(Key=key, ConsistentRead=True).get("Item")
    return json.loads(item["batch"]) if item else None


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


class Instance:
    """One execution environment of a function: its process, its sandbox,
    and the invocation it is running (from the Runtime API's `next` until
    it posts the response or the error)."""

    def __init__(self, name: str, n: int, timeout: int, memory: int | None):
        self.name, self.n, self.timeout, self.memory = name, n, timeout, memory
        self.proc: subprocess.Popen | None = None
        self.sandbox: Sandbox | None = None
        self.request: str | None = None
        self.deadline = 0.0
        self.started = 0.0
        self.launched = 0.0
        self.generation = 0
        self.upstream: set[http.client.HTTPConnection] = set()
        # Called with a request id handed to an environment already ended.
        self.orphaned = lambda request: None
        self.lock = threading.Lock()

    def end(self) -> None:
        """The environment is gone: so are the Runtime API calls it was
        waiting on (an invocation must not be handed to a dead process)."""
        with self.lock:
            self.generation += 1
            self.request = None
            upstream, self.upstream = list(self.upstream), set()
        for conn in upstream:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except (OSError, AttributeError):
                pass

    def took(self, request: str) -> float:
        """The instance took `request`: its deadline, as Lambda sets it."""
        with self.lock:
            self.request, self.started = request, time.time()
            self.deadline = self.started + self.timeout
            return self.deadline

    def done(self, request: str) -> None:
        with self.lock:
            if self.request == request:
                self.request = None


def executing_client(moto_port: int):
    """A boto3 Step Functions client of the moto server on `moto_port`, once
    it listens, told to execute state machines (it only records them by
    default) with Lambda over HTTP rather than Docker."""
    wait_port(moto_port)
    conn = http.client.HTTPConnection("127.0.0.1", moto_port, timeout=30)
    conn.request("POST", "/moto-api/config", body=json.dumps(
        {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}),
        headers={"Content-Type": "application/json"})
    assert conn.getresponse().status in (200, 201)
    return boto3.client("stepfunctions", endpoint_url=f"http://127.0.0.1:{moto_port}", region_name=REGION)


def make_router(lambda_port: int, moto_port: int, rehearsal: Rehearsal | None = None, crash=None,
                instance=None, invoking=None) -> ThreadingHTTPServer:
    """`crash(name, payload)`, when given and true for an invocation, answers
    it as Lambda does for a function whose process died (an unhandled
    `Runtime.ExitError`) instead of running it. `instance(name, n)` gives
    the Instance whose Runtime API calls come in under /.inst/<name>/<n>.
    `invoking(name, +1 or -1)` is told when an invocation starts and ends."""

    class Router(BaseHTTPRequestHandler):
        def _send(self, status: int, headers: dict[str, str], data: bytes) -> None:
            reply(self, status, headers, data)

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            rt = INSTANCE.match(self.path)
            if rt:
                self._runtime(instance(urllib.parse.unquote(rt.group(1)), int(rt.group(2))), rt.group(3), body)
                return
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
                port, path, timeout = lambda_port, f"/2015-03-31/functions/{name}/invocations", RUNTIME_TIMEOUT + 60
            else:
                port, path, timeout = moto_port, self.path, 60
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            if m and invoking:
                invoking(name, 1)
            try:
                conn.request(self.command, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            finally:
                if m and invoking:
                    invoking(name, -1)
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

        def _runtime(self, inst: Instance, rest: str, body: bytes) -> None:
            """An instance's Runtime API call, passed to cargo-lambda's API
            for its function; `next` hands out Lambda's deadline."""
            if self.command == "POST" and rest.endswith("/response") and inst.request and time.time() >= inst.deadline:
                # Too late: Lambda has ended the environment at its deadline
                # and answered Sandbox.Timedout; the watcher does so here.
                self._send(410, {"Content-Type": "application/json"}, b'{"errorType":"Sandbox.Timedout"}')
                return
            conn = http.client.HTTPConnection("127.0.0.1", lambda_port, timeout=None)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            generation = inst.generation
            conn.request(self.command, f"/.rt/{inst.name}{rest}", body=body, headers=headers)
            with inst.lock:
                inst.upstream.add(conn)
            try:
                resp = conn.getresponse()
                data = resp.read()
            except OSError:
                return  # the environment was ended: its long poll with it
            finally:
                with inst.lock:
                    inst.upstream.discard(conn)
            if rest.endswith("/invocation/next") and resp.status == 200 and generation != inst.generation:
                # Handed to an environment that has just ended: Lambda would
                # have failed the invocation, not lost it.
                inst.orphaned(resp.getheader("Lambda-Runtime-Aws-Request-Id"))
                return
            out = {k: v for k, v in resp.getheaders()
                   if k.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server")}
            if rest.endswith("/invocation/next") and resp.status == 200:
                request = resp.getheader("Lambda-Runtime-Aws-Request-Id")
                for k in [k for k in out if k.lower() == "lambda-runtime-deadline-ms"]:
                    del out[k]
                out["Lambda-Runtime-Deadline-Ms"] = str(int(inst.took(request) * 1000))
            elif self.command == "POST" and "/invocation/" in rest:
                inst.done(rest.split("/invocation/")[1].split("/")[0])
            self._send(resp.status, out, data)

        do_GET = do_POST = do_PUT = do_DELETE = _forward

        def log_message(self, *args) -> None:  # quiet
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Router)


class LocalStepFunctions:
    """Context manager: cargo-lambda, the function binaries with `env`, a
    Step Functions moto behind the router. `client` is its boto3 client."""

    def __init__(self, env: dict[str, str], log_dir: Path, replicate_instances: int = 2, rehearse: bool = True, crash=None,
                 stack_edit=None, deployment: dict | None = None, max_concurrency: int = 2):
        """`stack_edit(stack)`, when given, changes the rehearsed stack (as
        parsed from the transformed template) before anything runs: a test
        that lowers a function's Timeout or MemorySize, as a user might.
        `deployment`: the Rehearsal's arguments, when not the defaults
        (`stack_name`, `deploy_args`, `exports`: see Rehearsal).
        `max_concurrency`: the stack's MaxConcurrency, which the template
        gives both the Map and the Plan function (see create_state_machine)."""
        self.env, self.log_dir, self.rehearse, self.crash, self.stack_edit = env, log_dir, rehearse, crash, stack_edit
        self.max_concurrency = max_concurrency
        self.deployment = deployment or {}
        self.rehearsal: Rehearsal | None = None
        log_dir.mkdir(parents=True, exist_ok=True)
        self.instances = {"ferry-plan": 1, "ferry-replicate": replicate_instances, "ferry-sync-groups": 1, "ferry-report": 1}
        self.procs: list[subprocess.Popen] = []
        self.running: dict[tuple[str, int], Instance] = {}
        # What Lambda would have reported: each instance's peak memory, CPU,
        # and every environment it had to end (timeout, out of memory, exit).
        self.history: list[dict] = []
        self.events: list[dict] = []
        self.stopping = False
        self.generation = 0
        self.inflight: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.concurrency_lock = threading.Lock()

    def __enter__(self) -> "LocalStepFunctions":
        try:
            return self._start()
        except BaseException:
            self.__exit__()
            raise

    def _start(self) -> "LocalStepFunctions":
        self.router = None
        if self.rehearse:
            why = available()
            assert why is None, f"the rehearsal enforces Lambda's memory and CPU with cgroups, and cannot here: {why}"
            self.rehearsal = Rehearsal(self.env, self.log_dir, **self.deployment)
            if self.stack_edit:
                self.stack_edit(self.rehearsal.stack)
        self._plan_env()["FERRY_MAX_CONCURRENCY"] = str(self.max_concurrency)
        cargo_lambda = shutil.which("cargo-lambda", path=str(VENV_BIN)) or shutil.which("cargo-lambda")
        assert cargo_lambda, "cargo-lambda is missing: infra/local/up installs it into the venv"
        self.lambda_port, self.moto_port = free_port(), free_port()
        # Read per request: a test may set or clear `crash` between executions.
        self.router = make_router(self.lambda_port, self.moto_port, self.rehearsal,
                                  lambda name, body: bool(self.crash and self.crash(name, body)),
                                  lambda name, n: self.running[(name, n)], self._invoking)
        self.router_port = self.router.server_address[1]
        threading.Thread(target=self.router.serve_forever, daemon=True).start()

        self._spawn("cargo-lambda", [cargo_lambda, "lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1",
                                     "-P", str(self.lambda_port), "--timeout", str(RUNTIME_TIMEOUT)], cwd=ROOT)
        wait_port(self.lambda_port)
        self._start_functions()
        threading.Thread(target=self._watch, daemon=True).start()
        moto_env = dict(os.environ, MOTO_PORT=str(self.router_port))
        self._spawn("moto-sfn", [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.moto_port)], env=moto_env)
        self.client = executing_client(self.moto_port)
        if self.rehearsal:
            self.rehearsal.upstreams["states"] = f"http://127.0.0.1:{self.moto_port}"
        return self

    def _start_functions(self) -> None:
        for name, n in self.instances.items():
            binary = ROOT / "target" / "debug" / name
            assert binary.exists(), f"{binary} is missing: cargo build --workspace"
            deployed = self.rehearsal.stack["functions"][name] if self.rehearsal else None
            for i in range(n):
                inst = Instance(name, i, deployed["timeout"] if deployed else RUNTIME_TIMEOUT,
                                deployed["memory"] if deployed else None)
                self.running[(name, i)] = inst
                self._launch(inst)

    def _invoking(self, name: str, delta: int) -> None:
        """Lambda runs each concurrent invocation in an environment of its
        own, starting a new one when none is idle: so does the rehearsal
        (more environments than the function's count at start, when
        needed). And it keeps the highest concurrency each function saw,
        which Step Functions' MaxConcurrency bounds."""
        with self.concurrency_lock:
            self.inflight[name] = self.inflight.get(name, 0) + delta
            self.peak[name] = max(self.peak.get(name, 0), self.inflight[name])
            have = sum(1 for (f, _) in self.running if f == name)
            if delta > 0 and self.inflight[name] > have and not self.stopping:
                deployed = self.rehearsal.stack["functions"][name] if self.rehearsal else None
                inst = Instance(name, have, deployed["timeout"] if deployed else RUNTIME_TIMEOUT,
                                deployed["memory"] if deployed else None)
                self.running[(name, have)] = inst
                self._launch(inst)

    def _launch(self, inst: Instance) -> None:
        """A new execution environment for `inst`: a fresh process in fresh
        cgroups, as Lambda starts one (cold)."""
        name = inst.name
        binary = ROOT / "target" / "debug" / name
        deployed = self.rehearsal.function_env(name) if self.rehearsal else {}
        # Deployed, a function sees only what Lambda gives it and the
        # template's variables, not the test runner's environment (and so
        # only the proxy's endpoint, never one that would bypass it).
        base = ({k: os.environ[k] for k in ("PATH", "LANG", "TZ") if k in os.environ} if deployed
                else dict(os.environ))
        # Deployed, the definition comes from the template's layer only.
        given = {k: v for k, v in self.env.items()
                 if not (deployed and k in ("FERRY_KAFKA_CLUSTERS", "FERRY_REPLICATION_INFO"))}
        env = {**base, **given, **deployed,
               "AWS_LAMBDA_RUNTIME_API": f"http://127.0.0.1:{self.router_port}/.inst/{name}/{inst.n}",
               "AWS_LAMBDA_FUNCTION_NAME": name, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(inst.memory or 512),
               "AWS_LAMBDA_FUNCTION_VERSION": "1", "RUST_LOG": "info"}
        self.generation += 1
        inst.sandbox = Sandbox(f"{os.getpid()}-{id(self)}-{name}-{inst.n}-{self.generation}", inst.memory) \
            if inst.memory else None
        inst.request, inst.launched = None, time.time()
        inst.orphaned = lambda request: self._runtime_error(inst, request, "Runtime.ExitError",
                                                            "Runtime exited before completing the request")
        inst.proc = self._spawn(f"{name}-{inst.n}", [str(binary)], env=env,
                                preexec_fn=inst.sandbox.join if inst.sandbox else None)

    def _retire(self, inst: Instance, ended: str | None = None) -> None:
        """End the environment's Runtime API calls; keep what its sandbox
        measured, then remove it."""
        inst.end()
        if inst.sandbox:
            self.history.append({"function": inst.name, "memory_mb": inst.memory, "peak_bytes": inst.sandbox.peak_bytes(),
                                 "cpu_seconds": inst.sandbox.cpu_seconds(), "throttled": inst.sandbox.throttled(),
                                 "oom_kills": inst.sandbox.oom_kills(), "ended": ended})
            inst.sandbox.remove()
            inst.sandbox = None

    def _runtime_error(self, inst: Instance, request: str, error_type: str, message: str) -> None:
        """Answer the invocation `request` as Lambda does when it ends the
        environment running it."""
        body = json.dumps({"errorType": error_type, "errorMessage": f"RequestId: {request} Error: {message}"}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.lambda_port, timeout=30)
        conn.request("POST", f"/.rt/{inst.name}/2018-06-01/runtime/invocation/{request}/error", body=body,
                     headers={"Content-Type": "application/json", "Lambda-Runtime-Function-Error-Type": error_type})
        conn.getresponse().read()
        self.events.append({"function": inst.name, "instance": inst.n, "request": request, "errorType": error_type,
                            "at": time.time()})

    def _watch(self) -> None:
        """Lambda's side of each environment: the timeout, and a process
        that died (out of memory, or exited) while it held an invocation."""
        while not self.stopping:
            with self.concurrency_lock:
                instances = list(self.running.values())
            for inst in instances:
                with inst.lock:
                    request, deadline, proc = inst.request, inst.deadline, inst.proc
                if self.stopping or proc is None:
                    continue
                ended = None
                if proc.poll() is not None:
                    if not request and time.time() - inst.launched < 1.0:
                        continue  # one that dies at start is started again at most once a second
                    oom = bool(inst.sandbox and inst.sandbox.oom_kills())
                    ended = "out of memory" if oom else f"exited ({proc.returncode})"
                    if request:
                        self._runtime_error(inst, request, "Runtime.OutOfMemory" if oom else "Runtime.ExitError",
                                            f"Runtime exited with error: {'signal: killed' if proc.returncode < 0 else f'exit status {proc.returncode}'}")
                elif request and time.time() >= deadline:
                    # The whole environment ends: every process in it.
                    for pid in (inst.sandbox.pids() if inst.sandbox else []):
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(15)
                    ended = "timed out"
                    self._runtime_error(inst, request, "Sandbox.Timedout", f"Task timed out after {inst.timeout:.2f} seconds")
                if ended and not self.stopping:
                    self.procs.remove(proc)
                    self._retire(inst, ended)
                    self._launch(inst)
            time.sleep(0.1)

    def cold_start(self) -> None:
        """New instances of every function, as after a deployment: nothing a
        function cached (secrets, clients) survives."""
        self.stopping = True
        time.sleep(0.3)  # the watcher's round ends
        with self.concurrency_lock:
            old, self.running = list(self.running.values()), {}
            self._start_functions()
        for inst in old:
            inst.proc.terminate()
        for inst in old:
            inst.proc.wait(15)
            self.procs.remove(inst.proc)
            self._retire(inst)
        self.stopping = False
        threading.Thread(target=self._watch, daemon=True).start()

    def resources(self) -> dict[str, dict]:
        """Per function, what its environments used of what Lambda gives:
        the memory cap, the highest peak, CPU seconds, throttled periods,
        and how many environments ended by timeout or out of memory."""
        rows = list(self.history)
        with self.concurrency_lock:
            instances = list(self.running.values())
        for inst in instances:
            if inst.sandbox:
                rows.append({"function": inst.name, "memory_mb": inst.memory, "peak_bytes": inst.sandbox.peak_bytes(),
                             "cpu_seconds": inst.sandbox.cpu_seconds(), "throttled": inst.sandbox.throttled(),
                             "oom_kills": inst.sandbox.oom_kills(), "ended": None})
        out: dict[str, dict] = {}
        for r in rows:
            f = out.setdefault(r["function"], {"memory_mb": r["memory_mb"], "peak_mb": 0.0, "cpu_seconds": 0.0,
                                               "throttled": 0, "environments": 0, "ended": []})
            f["peak_mb"] = max(f["peak_mb"], r["peak_bytes"] / 2**20)
            f["cpu_seconds"] += r["cpu_seconds"]
            f["throttled"] += r["throttled"]
            f["environments"] += 1
            if r["ended"]:
                f["ended"].append(r["ended"])
        return out

    def _spawn(self, name: str, cmd: list[str], **kw) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **kw))
        return self.procs[-1]

    def __exit__(self, *exc) -> None:
        self.stopping = True
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        for inst in self.running.values():
            self._retire(inst)
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

    def _plan_env(self) -> dict[str, str]:
        return self.rehearsal.stack["functions"]["ferry-plan"]["environment"] if self.rehearsal else self.env

    def create_state_machine(self, max_concurrency: int | None = None, name: str | None = None) -> str:
        """`name`: the state machine's (the ARN a stack's policies name it by)."""
        # The template gives the Map's MaxConcurrency to the Plan function
        # too (one parameter; the plan makes no more batches than run at
        # once): the Plan was started with this stack's (the constructor's
        # max_concurrency), and a state machine made with another value is
        # the stack deployed again with it: the functions start again.
        max_concurrency = max_concurrency or self.max_concurrency
        if self._plan_env().get("FERRY_MAX_CONCURRENCY") != str(max_concurrency):
            self._plan_env()["FERRY_MAX_CONCURRENCY"] = str(max_concurrency)
            self.cold_start()
        definition = (ROOT / "infra" / "statemachine" / "replicator.asl.json").read_text()
        subs = {"PlanFunctionArn": function_arn("ferry-plan"), "ReplicateFunctionArn": function_arn("ferry-replicate"),
                "SyncGroupsFunctionArn": function_arn("ferry-sync-groups"), "ReportFunctionArn": function_arn("ferry-report"),
                "MaxConcurrency": str(max_concurrency)}
        for k, v in subs.items():
            definition = definition.replace("${" + k + "}", v)
        json.loads(definition)  # every substitution made
        return self.client.create_state_machine(
            name=name or f"ferry-{int(time.time() * 1000)}", definition=definition,
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
