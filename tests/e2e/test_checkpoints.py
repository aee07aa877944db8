"""One checkpoint (a DynamoDB transaction of cursor and offset map) covers
several produced batches: state writes follow the bytes replicated, not the
produce round trips, and the offset map still holds every record exactly."""

import os
import re

from conftest import SOURCE, TARGET, Ferry, create_topic, offset_runs, producer, read_partition, unique, write_config

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
