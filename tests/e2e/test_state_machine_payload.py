"""The state machine's payload at scale: the real replicator.asl.json on
moto's Step Functions, with the functions answered by stand-ins that
return the JSON shapes Ferry's functions return, at test_scale's shape and
past it, healthy and on a bad day. (From an adversarial review of issue 20.)"""

import json
import os
import re
import subprocess
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import ROOT, unique
from support.local_sfn import executing_client, free_port

REGION = os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
VENV_BIN = Path(os.environ.get("FERRY_VENV", ROOT / ".cache" / "venv")) / "bin"
INVOKE = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations")
LIMIT = 256 * 1024


# ---------------------------------------------------------------------------
# 1. The Map state's output: plan + results, against 256 KiB
# ---------------------------------------------------------------------------

class CannedLambdas:
    """moto's Step Functions executing the real replicator.asl.json, whose
    Lambda tasks are answered by Python stand-ins producing exactly the
    JSON shapes Ferry's functions return (PlanOutput with compact_work
    batches; ReplicateResult with its summary as domain.rs builds it)."""

    def __init__(self, handlers: dict, log: Path):
        self.handlers = handlers
        handlers_ = handlers

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                m = INVOKE.match(self.path)
                assert m, self.path
                name = urllib.parse.unquote(m.group(1)).split(":function:")[-1].split(":")[0]
                data = json.dumps(handlers_[name](json.loads(body or b"{}")), separators=(",", ":")).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.moto_port = free_port()
        env = dict(os.environ, MOTO_PORT=str(self.server.server_address[1]))
        self.proc = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.moto_port)],
                                     env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        self.client = executing_client(self.moto_port)

    def run(self, max_concurrency: int = 40) -> tuple[dict, list[dict]]:
        definition = (ROOT / "infra" / "statemachine" / "replicator.asl.json").read_text()
        for k in ("Plan", "Replicate", "SyncGroups", "Report"):
            name = {"SyncGroups": "ferry-sync-groups"}.get(k, f"ferry-{k.lower()}")
            definition = definition.replace("${" + k + "FunctionArn}", f"arn:aws:lambda:{REGION}:123456789012:function:{name}")
        definition = definition.replace("${MaxConcurrency}", str(max_concurrency))
        arn = self.client.create_state_machine(name=unique("payload"), definition=definition,
                                               roleArn="arn:aws:iam::123456789012:role/payload")["stateMachineArn"]
        ex = self.client.start_execution(stateMachineArn=arn, input="{}")["executionArn"]
        deadline = time.time() + 600
        while True:
            d = self.client.describe_execution(executionArn=ex)
            if d["status"] != "RUNNING" or time.time() > deadline:
                break
            time.sleep(1)
        events, token = [], None
        while True:
            kw = {"nextToken": token} if token else {}
            page = self.client.get_execution_history(executionArn=ex, maxResults=1000, **kw)
            events += page["events"]
            token = page.get("nextToken")
            if not token:
                break
        return d, events

    def close(self):
        self.proc.terminate()
        self.proc.wait(15)
        self.server.shutdown()


def plan_output(topics: int, partitions: int, end: int, per_batch: int = 16) -> tuple[dict, list[dict]]:
    """PlanOutput as the Plan function hands it to Step Functions
    (functions/engine/src/plan.rs, store_batches): a reference per batch
    to the batch it kept in the state tables; and those batches, as Ferry
    serializes them (compact_work). test_scale's shape: topics
    `scale-<10 hex>-NNN`, batches of 16 mixing topics after balancing,
    every partition at end offset `end` with no lag."""
    stem = unique("scale")
    plan_id = uuid.uuid4().hex
    work = [(f"{stem}-{t:03d}", p, end, 0) for p in range(partitions) for t in range(topics)]
    batches, refs = [], []
    for i in range(0, len(work), per_batch):
        grouped = []
        for topic, p, end, lag in work[i:i + per_batch]:
            if grouped and grouped[-1]["topic"] == topic:
                grouped[-1]["partitions"].append([p, end, lag])
            else:
                grouped.append({"topic": topic, "partitions": [[p, end, lag]]})
        batches.append({"flow": "source>target", "partitions": grouped, "stop_at_plan_end": False})
        refs.append({"flow": "source>target", "stored": {"plan": plan_id, "batch": len(refs), "partitions": len(work[i:i + per_batch])},
                     "stop_at_plan_end": False})
    return {"replicator": "r", "created_topics": [], "copied_acls": [], "batches": refs}, batches


# A real Ferry message (engine/src/replicate.rs, FerryError::PartitionStopped,
# "{tp} on cluster {cluster}: {what}. Fix: {fix}"): what every partition
# reports after the replicator was down longer than the source's retention,
# the classic bad day.
def data_loss_error(topic: str, p: int) -> str:
    return (f"{topic}-{p} on cluster source: source offsets 12345678..12400000 were deleted (retention or DeleteRecords) "
            f"before Ferry replicated them; 54322 records would be lost. Fix: raise the source topic's retention and "
            f"replicate faster, or accept the loss with --resume-after-data-loss (a deployed stack: its ResumeAfterDataLoss parameter, for one "
            f"execution)")


DATA_LOSS = "data-loss"


def replicate_result(batch: dict, error: str | None) -> dict:
    """ReplicateResult (partitions flattened, then summary), as
    `From<ReplicateOutput>` builds it."""
    progress = []
    for t in batch["partitions"]:
        for p, end, _ in t["partitions"]:
            progress.append({"source": {"topic": t["topic"], "partition": p}, "cursor": end, "source_end": end,
                             "records": 0, "bytes": 0, "stopped": "error" if error else "caught-up",
                             "error": data_loss_error(t["topic"], p) if error else None,
                             "reconciled": 0, "filtered_records": 0, "filtered_bytes": 0, "lost_records": 0,
                             "checkpoints": 0})
    # As domain.rs keeps them: the first SUMMARY_ERRORS (2), each cut to
    # SUMMARY_ERROR_CHARS (240).
    errors = [f"{p['source']['topic']}-{p['source']['partition']}: {p['error'][:240]}" for p in progress if p["error"]][:2]
    summary = {"partitions": len(progress), "records": 0, "bytes": 0, "reconciled": 0, "filtered_records": 0,
               "lost_records": 0, "stopped": {("error" if error else "caught-up"): len(progress)}, "errors": errors}
    return {"partitions": progress, "summary": summary}


@pytest.mark.parametrize("topics,partitions,end,error", [
    # test_scale's plan, as small as test_scale's (offsets in the hundreds;
    # docs/src/operations/cli.md: "100 KB with the partitions"), on a bad day: every partition stopped because
    # the source deleted records before they were copied (PartitionStopped). Ferry means this to fail the execution through the
    # Verdict (Ferry.StepFailed) after SyncGroups and Report ran.
    (500, 4, 200, DATA_LOSS),
    # 3,500 partitions at offsets in the tens of millions, a healthy run.
    (875, 4, 12_345_678, None),
    # 10,000 of them: the plan's partitions are in the state tables.
    (2500, 4, 12_345_678, None),
])
def test_the_map_output_is_the_plan_plus_every_result(tmp_path, topics, partitions, end, error):
    """The Map state's output against 256 KiB (moto checks it, as AWS
    does). It used to be the plan (every batch) plus every batch's summary
    with five errors of 400 characters: found by an adversarial review,
    both cases below failed the execution at the Map with
    States.DataLimitExceeded, so SyncGroups, Report (ReplicatorFailure) and
    the Verdict never ran. Now each result replaces its batch and keeps two
    errors of 240 characters. The functions are stand-ins returning
    exactly the JSON Ferry's do (PlanOutput with compact batches,
    ReplicateResult with its summary as domain.rs builds it); the state
    machine is the real definition. The plan holds a reference per batch,
    its partitions are in the state tables (it held them, 235 KB at 3,500
    partitions, which was the ceiling)."""
    plan, stored = plan_output(topics, partitions, end)
    plan_bytes = len(json.dumps(plan, separators=(",", ":")).encode())
    sfn = CannedLambdas({
        "ferry-plan": lambda _: plan,
        "ferry-replicate": lambda ref: replicate_result(stored[ref["stored"]["batch"]], error),
        "ferry-sync-groups": lambda _: {"flows": [], "failures": 0},
        "ferry-report": lambda _: {"readiness": {"go": error is None, "criteria": []}},
    }, tmp_path / "moto-sfn.log")
    try:
        d, events = sfn.run()
    finally:
        sfn.close()
    entered = [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]
    # Not moto's spacing (see the next test): the Map's output as compact
    # JSON, what Ferry and Step Functions' history write, is over the limit too.
    results = [{"summary": replicate_result(b, error)["summary"], "batch_failed": False} for b in stored]
    map_bytes = len(json.dumps(dict(plan, batches=results), separators=(",", ":")).encode())
    print(f"\nthe Map's output, compact: {map_bytes} bytes (limit {LIMIT})")
    print(f"\n{topics * partitions} partitions, {len(plan['batches'])} batches: plan {plan_bytes} bytes; "
          f"execution {d['status']} {d.get('error')}: {d.get('cause', '')[:160]}; Report ran: {'Report' in entered}")
    # A reference per batch, whatever the batch holds.
    assert plan_bytes < 160 * len(plan["batches"]), plan_bytes
    assert "Report" in entered and "Verdict" in entered, (
        f"the execution ended at the Map with {d.get('error')} ({d.get('cause')}): "
        f"neither SyncGroups nor Report nor the Verdict ran")
    # Stopped partitions do not fail the execution (Report's
    # ReplicatorFailure and its alarm say so); the execution completes.
    assert d["status"] == "SUCCEEDED", d
    assert map_bytes < LIMIT
