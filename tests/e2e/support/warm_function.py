"""One warm Lambda execution environment of a Ferry function: the real
binary, started once, polling a minimal Lambda Runtime API served here
that hands it one event after another, as Lambda runs a warm environment."""

import json
import os
import queue
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from conftest import ROOT, Ferry, write_config

PLAN = ROOT / "target" / "debug" / "ferry-plan"
REPLICATE = ROOT / "target" / "debug" / "ferry-replicate"


class WarmFunction:
    """One execution environment of a Ferry function: the binary, started
    once, polling a Runtime API that hands it the events given to `invoke`."""

    def __init__(self, binary: Path, ferry: Ferry, log: Path, extra_env: dict | None = None):
        self.name = binary.name
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
                                 f"arn:aws:lambda:us-east-1:123456789012:function:{fn.name}")
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

    def peak_mb(self) -> float:
        """The process's peak resident memory so far (VmHWM)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.server.shutdown()
        self.out.close()


def planned(tmp_path, topic: str) -> tuple[Ferry, dict]:
    """A replicator of `topic` and the real Plan function's output for it
    (target topic and cursors created)."""
    ferry = Ferry(*write_config(tmp_path, [topic], starting="EARLIEST"))
    plan_fn = WarmFunction(PLAN, ferry, tmp_path / "plan.log")
    try:
        kind, plan, _ = plan_fn.invoke({}, timeout_s=120)
        assert kind == "response", (plan, plan_fn.text()[-3000:])
    finally:
        plan_fn.close()
    return ferry, plan
