"""Invariants 2 and 3 under SIGKILL: `ferry run` killed at random points of a
100,000-record replication and restarted loses nothing, and (thanks to the
reconcile on lease takeover) writes nothing twice."""

import random
import signal
import time

from conftest import SOURCE, TARGET, Ferry, create_topic, producer, read_partition, unique, write_config

RECORDS = 100_000
PARTITIONS = 6


def test_sigkill_at_random_points_loses_nothing(tmp_path):
    rnd = random.Random()
    topic = unique("crash")
    create_topic(SOURCE, topic, PARTITIONS)
    p = producer(SOURCE, **{"compression.type": "zstd"})
    for i in range(RECORDS):
        p.produce(topic, partition=i % PARTITIONS, key=str(i).encode(), value=(f"record-{i}-" + "x" * rnd.randint(0, 200)).encode(),
                  headers=[("seq", str(i).encode())])
        if i % 10_000 == 0:
            p.poll(0)
    assert p.flush(120) == 0
    kc, ri = write_config(tmp_path, [topic], compression="LZ4")
    ferry = Ferry(kc, ri)
    log = tmp_path / "ferry.log"
    kills = 0
    # Small batches so there are many produce/checkpoint steps to land in.
    args = ("--once", "--lease-ms", "1500", "--produce-batch-max-bytes", "20000")
    for _ in range(8):
        proc = ferry.spawn(*args, log=log)
        time.sleep(rnd.uniform(0.3, 2.5))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    time.sleep(1.6)  # let the dead worker's leases expire
    final = ferry.run(*args)
    assert final.returncode == 0, final.stdout + final.stderr + log.read_text()
    missing = duplicates = total = 0
    for part in range(PARTITIONS):
        src = [r["key"] for r in read_partition(SOURCE, topic, part)]
        dst = [r["key"] for r in read_partition(TARGET, topic, part)]
        total += len(dst)
        missing += len(set(src) - set(dst))
        duplicates += len(dst) - len(set(dst))
        # Order within the partition is the source's.
        assert [k for k in dst if k in set(src)] == src[: len(dst)] or dst == src, f"partition {part} out of order"
    reconciled = (log.read_text() + final.stdout).count("reconciled")
    print(f"\nkills={kills} records={RECORDS} target={total} missing={missing} duplicates={duplicates} reconcile-rounds={reconciled}")
    assert kills >= 3, "the replication finished before it could be killed enough times; raise RECORDS"
    assert missing == 0
    assert duplicates == 0
    assert total == RECORDS
