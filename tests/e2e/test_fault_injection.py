"""Exactly-once under faults: 200,000 records over 8 partitions replicated
while two workers compete for the same partitions, workers are SIGKILLed at
50 random points, and each cluster's broker is restarted once. Afterwards
every target partition holds exactly the source's records, in order: none
missing, none twice."""

import random
import re
import signal
import subprocess
import time
from pathlib import Path

from conftest import ROOT, SOURCE, TARGET, Ferry, create_topic, producer, read_partition, unique, write_config

RECORDS = 200_000
PARTITIONS = 8
KILLS = 50


def restart_broker(cluster: str) -> None:
    subprocess.run([str(ROOT / "infra" / "local" / "broker"), cluster, "restart"], check=True, capture_output=True, timeout=180)


def test_kills_takeovers_and_broker_restarts_lose_nothing_and_duplicate_nothing(tmp_path):
    rnd = random.Random()
    topic = unique("faults")
    create_topic(SOURCE, topic, PARTITIONS)
    p = producer(SOURCE, **{"compression.type": "lz4", "enable.idempotence": True})
    for i in range(RECORDS):
        p.produce(topic, partition=i % PARTITIONS, key=f"{i:07d}".encode(), value=b"v" * rnd.randint(10, 120))
        if i % 20_000 == 0:
            p.poll(0)
    assert p.flush(120) == 0
    del p  # its background thread would only complain during the broker restarts

    kc, ri = write_config(tmp_path, [topic], compression="NONE")
    ferry = Ferry(kc, ri)
    # Small batches and short leases: many steps to crash in, quick takeovers.
    args = ("--once", "--lease-ms", "1500", "--produce-batch-max-bytes", "8000", "--max-partitions-per-batch", "4")
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    workers = [ferry.spawn(*args, log=logs[0]), ferry.spawn(*args, log=logs[1])]
    # The kills begin once the flow's first plan is done (the plan that
    # created the target topic returned): a worker killed in it leaves the
    # first plan to a successor that watched its hold go silent for 45 s
    # (test_starting_position covers that), and workers killed every
    # second never watch that long, so the whole copy would fall to the
    # last worker, with nothing to fence.
    planned = time.time() + 120
    while not any("ferry: created target topics" in l.read_text(errors="replace") for l in logs if l.exists()):
        assert time.time() < planned, "no worker planned in 120 s: " + "".join(l.read_text(errors="replace") for l in logs)
        time.sleep(0.1)
    kills = 0
    restarted = []
    deadline = time.time() + 600
    while kills < KILLS and time.time() < deadline:
        time.sleep(rnd.uniform(0.2, 1.0))
        w = rnd.randrange(2)
        if workers[w].poll() is None:
            workers[w].send_signal(signal.SIGKILL)
            workers[w].wait()
            kills += 1
        workers[w] = ferry.spawn(*args, log=logs[w])
        if kills == 15 and "source" not in restarted:
            restart_broker("source")
            restarted.append("source")
        if kills == 30 and "target" not in restarted:
            restart_broker("target")
            restarted.append("target")
    for w in workers:
        w.wait(timeout=600)
    final = ferry.run(*args)
    assert final.returncode == 0, final.stdout + final.stderr
    text = "".join(l.read_text(errors="replace") for l in logs) + final.stdout + final.stderr
    reconciled = [int(n) for n in re.findall(r"reconciled=(\d+)", text)]
    # Takeovers from a worker that did not hand its partitions back cleanly
    # fence it first (one line per previous holder).
    fences = text.count("fenced the previous holder on the partitions taken from it")

    missing = duplicates = total = 0
    rows = []
    for part in range(PARTITIONS):
        src = [r["key"] for r in read_partition(SOURCE, topic, part)]
        dst = [r["key"] for r in read_partition(TARGET, topic, part)]
        m = len(set(src) - set(dst))
        d = len(dst) - len(set(dst))
        rows.append((part, len(src), len(dst), m, d, dst == src))
        missing += m
        duplicates += d
        total += len(dst)
    print("\npartition  source  target  missing  duplicates  identical")
    for r in rows:
        print(f"{r[0]:>9} {r[1]:>7} {r[2]:>7} {r[3]:>8} {r[4]:>11}  {'yes' if r[5] else 'NO'}")
    print(f"crash points={kills} takeovers-with-reconcile={len(reconciled)} reconciled-records={sum(reconciled)} "
          f"fences={fences} broker-restarts={restarted} duplicates={duplicates} missing={missing}")
    assert kills >= KILLS
    assert fences >= 1, "a SIGKILLed worker's successor must have fenced it"
    # Random kills land between a produce and its checkpoint only now and
    # then (from none to a fifth of them in our runs), so the reconcile count
    # is reported, not required; test_crash.py's failpoint test puts every
    # crash in that window and requires each to be reconciled.
    assert restarted == ["source", "target"]
    assert missing == 0
    assert duplicates == 0
    assert all(r[5] for r in rows), "every target partition equals its source partition, in order"
    assert total == RECORDS
