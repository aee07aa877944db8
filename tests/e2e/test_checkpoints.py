"""One checkpoint (a DynamoDB transaction of cursor and offset map) covers
several produced batches: state writes follow the bytes replicated, not the
produce round trips, and the offset map still holds every record exactly."""

import os
import re
import threading
import time

from conftest import SOURCE, TARGET, Ferry, create_topic, offset_runs, producer, read_partition, unique, write_config
from support.warm_function import REPLICATE, WarmFunction, planned

RECORDS = 20_000
VALUE = 1000


def test_one_checkpoint_covers_many_produced_batches(tmp_path):
    topic = unique("ckpt")
    create_topic(SOURCE, topic, 1)
    p = producer(SOURCE)
    for i in range(RECORDS):
        p.produce(topic, partition=0, key=str(i).encode(), value=os.urandom(VALUE))
        if i % 5000 == 0:
            p.flush(30)
    assert p.flush(30) == 0
    kc, ri = write_config(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    batch = 200_000
    # A long interval: only the byte threshold (4 MB here) makes checkpoints
    # due, so the count does not depend on the machine's speed.
    res = ferry.run("--once", "--produce-batch-max-bytes", str(batch), "--checkpoint-seconds", "600",
                    "--checkpoint-max-bytes", str(4 * 1024 * 1024), env={"RUST_LOG": "warn,ferry_engine=info"})
    assert res.returncode == 0, res.stdout + res.stderr
    checkpoints = sum(int(n) for n in re.findall(r"checkpoints=(\d+)", res.stdout + res.stderr))
    produced_batches = RECORDS * VALUE // batch  # at least this many
    assert produced_batches >= 100
    # 20 MB at 4 MB per checkpoint: about 5, plus the last one.
    assert 1 <= checkpoints <= 8, f"{checkpoints} checkpoints for about {produced_batches} produced batches"

    src = read_partition(SOURCE, topic, 0)
    dst = read_partition(TARGET, topic, 0)
    assert [(r["key"], r["value"]) for r in dst] == [(r["key"], r["value"]) for r in src]
    # Every source offset maps to its own target offset: one run, 0 -> 0.
    assert offset_runs(ferry, topic, 0) == [(0, 0, RECORDS)]
    assert ferry.status()[0]["cursor"] == RECORDS


def cursor_moves_while_copying(tmp_path, ferry, ref: dict, topic: str, checkpoint_seconds: str) -> tuple[int, int, int]:
    """The real Replicate function, with FERRY_CHECKPOINT_SECONDS as the
    template sets it, copying `ref`'s batch for 16 s while records arrive
    on `topic` (ten a second): how often its cursor moved in its first
    13 s (read every half second; its last checkpoint, as it stops, and a
    lease renewal 15 s in come later), the records produced by then, and
    those on the target then."""
    fn = WarmFunction(REPLICATE, ferry, tmp_path / f"replicate-{checkpoint_seconds}.log",
                      {"FERRY_CHECKPOINT_SECONDS": checkpoint_seconds})
    stop, sent = threading.Event(), [0]

    def produce():
        p = producer(SOURCE, **{"linger.ms": 0})
        while not stop.is_set():
            p.produce(topic, partition=0, value=b"x" * 100)
            sent[0] += 1
            p.poll(0)
            time.sleep(0.1)
        assert p.flush(30) == 0

    out = {}
    loader = threading.Thread(target=produce, daemon=True)
    copier = threading.Thread(target=lambda: out.update(r=fn.invoke(dict(ref, max_seconds=16), timeout_s=60)), daemon=True)
    try:
        loader.start()
        started = time.time()
        copier.start()
        seen = []
        while time.time() < started + 13:
            seen.append(ferry.status()[0]["cursor"])
            time.sleep(0.5)
        stop.set()
        loader.join(30)
        produced = sent[0]
        on_target = len(read_partition(TARGET, topic, 0))
        copier.join(60)
    finally:
        stop.set()
        fn.close()
    assert out["r"][0] == "response", (out["r"], fn.text()[-3000:])
    return sum(1 for a, b in zip(seen, seen[1:]) if a != b), produced, on_target


def test_a_deployed_replicate_checkpoints_as_often_as_checkpoint_seconds_says(tmp_path):
    """The template's CheckpointSeconds (FERRY_CHECKPOINT_SECONDS on the
    Replicate function) sets how long copied records wait for their
    checkpoint, most of the DynamoDB bill (`ferry cost`): at 15, a
    partition taking records all the time is checkpointed when its lease
    is half spent, not every 4 s, and its records reach the target as
    soon. Before the variable, the deployed stack checkpointed every 4 s
    whatever was wanted (on 5da2c53 the cursor moved as often at 15)."""
    topic = unique("ckpt-every")
    create_topic(SOURCE, topic, 1)
    ferry, plan = planned(tmp_path, topic)
    [ref] = plan["batches"]
    every_4, _, _ = cursor_moves_while_copying(tmp_path, ferry, ref, topic, "4")
    assert every_4 >= 2, every_4
    every_15, sent, on_target = cursor_moves_while_copying(tmp_path, ferry, ref, topic, "15")
    print(f"\ncursor moves in 13 s of copying: {every_4} at 4 s, {every_15} at 15 s")
    assert every_15 == 0, every_15
    # Copying did not wait for the checkpoints: the target kept up.
    assert on_target >= sent - 50, (on_target, sent)
