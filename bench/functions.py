"""Size and cold-start initialisation time of each Lambda function binary.

Each binary (target/lambda/<name>/bootstrap, built by bench/functions) is
started behind cargo-lambda's local Runtime API and invoked at once (cold:
process start, configuration parsing, AWS SDK set-up, first poll) and then
again (warm). The payload is not valid for the function, so the runtime
answers with its deserialisation error without doing any work: the
difference is the initialisation. Repeated, the median is reported.
Writes bench/results/functions-<time>.json.
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from support.local_sfn import free_port, wait_port  # noqa: E402

NAMES = ["ferry-plan", "ferry-replicate", "ferry-sync-groups", "ferry-report"]
ROUNDS = int(os.environ.get("ROUNDS", "7"))


def invoke(port: int, name: str) -> float:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/2015-03-31/functions/{name}/invocations", data=b'"not-an-input"',
                                 method="POST")
    t0 = time.perf_counter()
    try:
        urllib.request.urlopen(req, timeout=60).read()
    except urllib.error.HTTPError as e:  # the function's error comes back as an HTTP error here
        e.read()
    return time.perf_counter() - t0


def main() -> None:
    kc = (ROOT / "examples" / "local" / "kafka-clusters.json").read_text()
    ri = (ROOT / "examples" / "local" / "replication-info.json").read_text()
    port = free_port()
    runtime = subprocess.Popen([str(Path(os.environ["FERRY_VENV"]) / "bin" / "cargo-lambda"), "lambda", "watch", "--only-lambda-apis",
                                "-A", "127.0.0.1", "-P", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {}
    try:
        wait_port(port)
        for name in NAMES:
            binary = ROOT / "target" / "lambda" / name / "bootstrap"
            cold, warm = [], []
            for _ in range(ROUNDS):
                env = dict(os.environ, AWS_LAMBDA_RUNTIME_API=f"http://127.0.0.1:{port}/.rt/{name}", AWS_LAMBDA_FUNCTION_NAME=name,
                           AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512", AWS_LAMBDA_FUNCTION_VERSION="1", FERRY_REPLICATOR_NAME="bench",
                           FERRY_KAFKA_CLUSTERS=kc, FERRY_REPLICATION_INFO=ri, FERRY_TABLE_PREFIX="ferry-bench", RUST_LOG="error")
                proc = subprocess.Popen([str(binary)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    cold.append(invoke(port, name))
                    warm.append(invoke(port, name))
                finally:
                    proc.terminate()
                    proc.wait(10)
            results[name] = {
                "binary_bytes": binary.stat().st_size,
                "cold_invoke_ms_median": round(statistics.median(cold) * 1000, 1),
                "warm_invoke_ms_median": round(statistics.median(warm) * 1000, 1),
                "init_ms_median": round((statistics.median(cold) - statistics.median(warm)) * 1000, 1),
                "rounds": ROUNDS,
            }
    finally:
        runtime.terminate()
        runtime.wait(10)
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host_cores": os.cpu_count(), "functions": results}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = ROOT / "bench" / "results" / f"functions-{stamp}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'function':<20} {'size MB':>8} {'cold ms':>8} {'warm ms':>8} {'init ms':>8}")
    for name, r in results.items():
        print(f"{name:<20} {r['binary_bytes'] / 1e6:>8.1f} {r['cold_invoke_ms_median']:>8} {r['warm_invoke_ms_median']:>8} {r['init_ms_median']:>8}")
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
