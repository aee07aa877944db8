"""Invariants 2 and 3 under SIGKILL: `ferry run` killed at random points of a
100,000-record replication and restarted loses nothing, and (thanks to the
reconcile on lease takeover) writes nothing twice."""

import random
import subprocess
import signal
import time

from conftest import SOURCE, TARGET, Ferry, create_topic, producer, read_partition, stored_batches, unique, write_config

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
    # Small batches, each checkpointed, so there are many produce/checkpoint
    # steps to land in and the copy lasts long enough to be killed often
    # (test_fault_injection kills workers that checkpoint every 2 s).
    args = ("--once", "--lease-ms", "1500", "--produce-batch-max-bytes", "2000", "--checkpoint-seconds", "0")
    for _ in range(8):
        proc = ferry.spawn(*args, log=log)
        time.sleep(rnd.uniform(0.3, 2.5))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        # Let the dead worker's leases expire, so that the next one takes
        # them over (and reconciles) instead of waiting for them.
        time.sleep(1.6)
    # The last worker takes over from the last one killed (and reconciles
    # its writes), then copies the rest in batches of the usual size: the
    # kills above are what this test is about, and the rest at 2 KB a
    # batch with a checkpoint each took most of its time.
    final = ferry.run("--once", "--lease-ms", "1500", env={"RUST_LOG": "warn,ferry_engine=info"})
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
    reconciled = (log.read_text() + final.stdout + final.stderr).count("reconciled records the previous holder wrote")
    print(f"\nkills={kills} records={RECORDS} target={total} missing={missing} duplicates={duplicates} reconcile-rounds={reconciled}")
    assert kills >= 3, "the replication finished before it could be killed enough times; raise RECORDS"
    assert missing == 0
    assert duplicates == 0
    assert total == RECORDS


def test_reconcile_ignores_other_producers_on_the_target(tmp_path):
    """Crashes exactly between produce and checkpoint (a failpoint) while
    another producer writes to the same target partitions: the takeover
    counts only Ferry's own records (by producer id), so every source record
    arrives once, in order, and the offset map points each source offset at
    its own record."""
    import threading

    from conftest import offset_runs

    rnd = random.Random()
    topic = unique("shared-target")
    parts = 2
    create_topic(SOURCE, topic, parts)
    create_topic(TARGET, topic, parts)
    p = producer(SOURCE)
    for i in range(8_000):
        p.produce(topic, partition=i % parts, key=f"src-{i:06d}".encode(), value=b"s" * rnd.randint(0, 100))
    assert p.flush(60) == 0
    stop = threading.Event()

    def foreign() -> None:
        fp = producer(TARGET, **{"linger.ms": 0})
        n = 0
        while not stop.is_set():
            fp.produce(topic, partition=n % parts, key=f"foreign-{n}".encode(), value=b"f")
            fp.poll(0)
            n += 1
            time.sleep(0.002)
        fp.flush(30)

    t = threading.Thread(target=foreign, daemon=True)
    t.start()
    kc, ri = write_config(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    log = tmp_path / "ferry.log"
    args = ("--once", "--lease-ms", "1000", "--produce-batch-max-bytes", "3000")
    crashes = 0
    for _ in range(6):
        proc = ferry.spawn(*args, log=log, env={"FERRY_FAILPOINT": f"crash-after-produce:{rnd.randint(3, 30)}"})
        if proc.wait(timeout=120) != 0:
            crashes += 1
        time.sleep(1.1)  # the dead worker's leases expire
    final = ferry.run(*args)
    stop.set()
    t.join(30)
    assert final.returncode == 0, final.stdout + final.stderr
    text = log.read_text() + final.stdout + final.stderr
    reconciles = text.count("reconciled records")
    for part in range(parts):
        src = read_partition(SOURCE, topic, part)
        dst = read_partition(TARGET, topic, part)
        ours = [r for r in dst if r["key"].startswith(b"src-")]
        assert [r["key"] for r in ours] == [r["key"] for r in src], f"partition {part}: missing or doubled records"
        assert len(dst) > len(ours), "the other producer's records must be interleaved for this test to mean anything"
        runs = offset_runs(ferry, topic, part)
        target_key = {r["offset"]: r["key"] for r in dst}
        for r in src:
            [t_off] = [tt + (r["offset"] - s) for s, tt, n in runs if s <= r["offset"] < s + n]
            assert target_key[t_off] == r["key"], f"source {r['offset']} maps to target {t_off}, which holds another record"
    print(f"\ncrashes between produce and checkpoint={crashes} reconciles={reconciles}")
    assert crashes >= 3
    assert reconciles >= crashes, "every crash after a produce must be reconciled by the next holder"


def test_a_stalled_writer_is_fenced_by_the_worker_that_takes_over(tmp_path):
    """A worker checks its lease, builds a batch, and then stalls (a
    failpoint: as a paused VM or a long GC would) for longer than its lease.
    A second worker takes the partition over: it fences the first one's
    producer on the target, reconciles, copies everything and stops. Then
    the first worker wakes and sends its batch. The target refuses it (its
    producer epoch is fenced), so every record is there exactly once; the
    target holds the fence's abort marker and no batch of the first
    worker's producer."""
    topic = unique("stalled")
    create_topic(SOURCE, topic, 1)
    p = producer(SOURCE)
    for i in range(500):
        p.produce(topic, partition=0, key=f"k{i}".encode(), value=b"v" * 100)
    assert p.flush(30) == 0
    kc, ri = write_config(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    args = ("--once", "--lease-ms", "3000")
    log = tmp_path / "stalled.log"
    stalled = ferry.spawn(*args, log=log, env={"FERRY_FAILPOINT": "stall-before-produce:25"})
    deadline = time.time() + 120
    while "stall-before-produce:25 reached" not in log.read_text():
        assert stalled.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.2)
    time.sleep(4)  # its lease lapses
    successor = ferry.run(*args, env={"RUST_LOG": "warn,ferry_engine=info"})
    out = successor.stdout + successor.stderr
    assert successor.returncode == 0, out
    assert "fenced the previous holder on the partitions taken from it" in out, out
    assert stalled.wait(timeout=120) is not None
    text = log.read_text()
    assert "stall-before-produce:25 over" in text, text
    assert "target refused this producer" in text and "InvalidProducerEpoch" in text, text
    keys = [r["key"] for r in read_partition(TARGET, topic, 0)]
    assert keys == [f"k{i}".encode() for i in range(500)], f"{len(keys)} records on the target"
    # A worker that gave its lease back settled is not fenced by the next one.
    again = ferry.run(*args, env={"RUST_LOG": "warn,ferry_engine=info"})
    assert again.returncode == 0 and "fenced the previous holder" not in again.stdout + again.stderr, again.stderr
    batches = stored_batches("target", topic, 0)
    markers = [b for b in batches if b.get("isControl") == "true"]
    assert len(markers) == 1, batches
    fenced_pid = markers[0]["producerId"]
    assert not [b for b in batches if b["producerId"] == fenced_pid and b.get("isControl") != "true"], batches


def test_a_foreign_open_transaction_on_the_target_does_not_hide_the_crashed_workers_records(tmp_path):
    """Another producer holds a transaction open on the target partition (an
    application already cut over, or a hanging transaction) while Ferry
    crashes between produce and checkpoint. The open transaction pins the
    partition's last stable offset below the crashed worker's records, so a
    takeover that reads the target read_committed sees none of them and
    writes them all again. The takeover must count them anyway: every source
    record is on the target exactly once once the transaction ends."""
    topic = unique("foreign-txn")
    create_topic(SOURCE, topic, 1)
    create_topic(TARGET, topic, 1)
    p = producer(SOURCE)
    for i in range(3_000):
        p.produce(topic, partition=0, key=f"src-{i:05d}".encode(), value=b"s" * 50)
    assert p.flush(60) == 0
    # The application's transaction: opened, one record written, left open.
    tx = producer(TARGET, **{"transactional.id": unique("app-txn"), "transaction.timeout.ms": 600_000, "linger.ms": 0})
    tx.init_transactions(30)
    tx.begin_transaction()
    tx.produce(topic, partition=0, key=b"app-0", value=b"open")
    assert tx.flush(30) == 0
    try:
        kc, ri = write_config(tmp_path, [topic])
        ferry = Ferry(kc, ri)
        args = ("--once", "--lease-ms", "1000", "--produce-batch-max-bytes", "3000")
        crashed = ferry.run(*args, env={"FERRY_FAILPOINT": "crash-after-produce:5"})
        assert crashed.returncode != 0, "the failpoint must crash the worker after its 5th produce"
        time.sleep(1.2)  # its lease expires
        final = ferry.run(*args, env={"RUST_LOG": "warn,ferry_engine=info"})
        out = final.stdout + final.stderr
        assert final.returncode == 0, out
        assert "reconciled records the previous holder wrote" in out, out
    finally:
        tx.commit_transaction(30)
    src = [r["key"] for r in read_partition(SOURCE, topic, 0)]
    dst = [r["key"] for r in read_partition(TARGET, topic, 0)]
    ours = [k for k in dst if k.startswith(b"src-")]
    assert len(ours) == len(set(ours)), f"{len(ours) - len(set(ours))} source records written twice"
    assert ours == src
    assert b"app-0" in dst


def _crash_between_produce_and_checkpoint(ferry: Ferry, args: tuple, produces: int = 5) -> None:
    """One run that aborts right after its `produces`-th acknowledged produce
    round, before any checkpoint, then the wait for its leases to lapse."""
    crashed = ferry.run(*args, env={"FERRY_FAILPOINT": f"crash-after-produce:{produces}"})
    assert crashed.returncode != 0, f"the failpoint must crash the worker: {crashed.stdout}{crashed.stderr}"
    time.sleep(1.2)


def _translate(runs: list[tuple[int, int, int]], source_offset: int) -> int | None:
    hits = [t + (source_offset - s) for s, t, n in runs if s <= source_offset < s + n]
    assert len(hits) <= 1, f"source offset {source_offset} is in more than one run: {runs}"
    return hits[0] if hits else None


def _wait_for_cleaner(bootstrap: str, topic: str, gone: set[int], nudge, timeout_s: float = 150) -> None:
    """Until the log cleaner has removed every offset in `gone` (checked by
    reading the partition: the offsets are missing), nudging the log to roll
    its active segment meanwhile."""
    deadline = time.time() + timeout_s
    while True:
        present = {r["offset"] for r in read_partition(bootstrap, topic, 0)}
        if not present & gone:
            return
        assert time.time() < deadline, f"the cleaner left {len(present & gone)} of {len(gone)} superseded records"
        nudge()
        time.sleep(2)


def test_takeover_after_source_compaction_matches_what_was_written_by_content(tmp_path):
    """Issue "Exact at the edges", item 3 (source side). A worker crashes
    between produce and checkpoint; before the takeover, the source's log
    cleaner removes some of the records it had copied (their keys were
    written again later). The takeover must not match the target's records
    to the first N source records after the cursor by count: that skips as
    many source records as were removed, and maps source offsets to other
    records. Every surviving source record must be on the target exactly
    once, in order, and the offset map must point each at its own copy."""
    from conftest import offset_runs

    topic = unique("src-compacted-crash")
    create_topic(SOURCE, topic, 1, config={
        "cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
        "min.compaction.lag.ms": "0", "delete.retention.ms": "100"})
    # The target is compacted too (as the source), but its cleaner leaves
    # this test's records alone: a segment rolls after the default 7 days.
    create_topic(TARGET, topic, 1, config={"cleanup.policy": "compact"})
    p = producer(SOURCE)
    originals = [(f"k-{i:05d}".encode(), f"v-{i}-".encode() + b"x" * 50) for i in range(2000)]
    for k, v in originals:
        p.produce(topic, partition=0, key=k, value=v)
    assert p.flush(60) == 0
    kc, ri = write_config(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    args = ("--once", "--lease-ms", "1000", "--produce-batch-max-bytes", "3000")
    _crash_between_produce_and_checkpoint(ferry, args)
    written = [(r["key"], r["value"]) for r in read_partition(TARGET, topic, 0)]
    w = len(written)
    assert 0 < w < 1500 and written == originals[:w], f"the crashed worker wrote {w} records"
    # Every third record, in and after what was written, gets a newer copy
    # of its key: the cleaner removes the old ones from the source.
    superseded = set(range(0, w + 300, 3))
    for i in sorted(superseded):
        p.produce(topic, partition=0, key=originals[i][0], value=f"new-{i}".encode())
    assert p.flush(30) == 0

    rolls = iter(range(1_000_000))

    def nudge() -> None:
        p.produce(topic, partition=0, key=b"roll", value=f"r-{next(rolls)}".encode())
        p.flush(10)

    _wait_for_cleaner(SOURCE, topic, superseded, nudge)
    final = ferry.run(*args, env={"RUST_LOG": "warn,ferry_engine=info"})
    out = final.stdout + final.stderr
    assert final.returncode == 0, out
    assert "reconciled records the previous holder wrote" in out, out
    src = read_partition(SOURCE, topic, 0)
    dst = read_partition(TARGET, topic, 0)
    dst_pairs = [(r["key"], r["value"]) for r in dst]
    already = set(written)
    expected = written + [(r["key"], r["value"]) for r in src if (r["key"], r["value"]) not in already]
    assert len(dst_pairs) == len(set(dst_pairs)), f"{len(dst_pairs) - len(set(dst_pairs))} records written twice"
    missing = [pair for pair in expected if pair not in set(dst_pairs)]
    assert not missing, f"{len(missing)} source records never reached the target, first {missing[:3]}"
    assert dst_pairs == expected, "the target's order is not the source's"
    runs = offset_runs(ferry, topic, 0)
    by_offset = {r["offset"]: (r["key"], r["value"]) for r in dst}
    for r in src:
        t = _translate(runs, r["offset"])
        assert t is not None, f"source offset {r['offset']} is not mapped"
        assert by_offset.get(t) == (r["key"], r["value"]), f"source {r['offset']} maps to target {t}, which holds {by_offset.get(t)}"


def test_takeover_after_target_compaction_writes_nothing_twice(tmp_path):
    """Issue "Exact at the edges", item 3 (target side). A worker crashes
    between produce and checkpoint; before the takeover, an application
    writes newer values of some of the copied keys to the target and the
    target's log cleaner removes Ferry's older copies (a run of whole
    batches among them). The takeover must see that those records were
    written (a gap in the previous holder's sequence numbers), not count
    fewer records and write the rest again."""
    from conftest import offset_runs

    topic = unique("dst-compacted-crash")
    create_topic(SOURCE, topic, 1, config={"cleanup.policy": "compact"})
    create_topic(TARGET, topic, 1, config={
        "cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
        "min.compaction.lag.ms": "0", "delete.retention.ms": "100"})
    p = producer(SOURCE)
    originals = [(f"k-{i:05d}".encode(), f"v-{i}-".encode() + b"x" * 50) for i in range(2000)]
    for k, v in originals:
        p.produce(topic, partition=0, key=k, value=v)
    assert p.flush(60) == 0
    kc, ri = write_config(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    args = ("--once", "--lease-ms", "1000", "--produce-batch-max-bytes", "3000")
    _crash_between_produce_and_checkpoint(ferry, args)
    written = [(r["offset"], r["key"], r["value"]) for r in read_partition(TARGET, topic, 0)]
    w = len(written)
    assert 100 < w < 1500 and [(k, v) for _, k, v in written] == originals[:w], f"the crashed worker wrote {w} records"
    # Every third record, a run of 60 (whole batches), and the last one:
    # the application's newer copies supersede Ferry's on the target.
    superseded = set(range(0, w - 1, 3)) | set(range(30, 90)) | {w - 1}
    app = producer(TARGET)
    for i in sorted(superseded):
        app.produce(topic, partition=0, key=originals[i][0], value=f"app-{i}".encode())
    assert app.flush(30) == 0

    def nudge() -> None:
        app.produce(topic, partition=0, key=b"roll", value=b"r")
        app.flush(10)

    _wait_for_cleaner(TARGET, topic, {written[i][0] for i in superseded}, nudge)
    final = ferry.run(*args, env={"RUST_LOG": "warn,ferry_engine=info"})
    out = final.stdout + final.stderr
    assert final.returncode == 0, out
    assert "reconciled records the previous holder wrote" in out, out
    src = read_partition(SOURCE, topic, 0)
    dst = read_partition(TARGET, topic, 0)
    ours = [(r["key"], r["value"]) for r in dst if r["value"].startswith(b"v-")]
    assert len(ours) == len(set(ours)), f"{len(ours) - len(set(ours))} source records written twice"
    expected = [(r["key"], r["value"]) for r in src if not (r["offset"] < w and r["offset"] in superseded)]
    assert ours == expected, f"{len(set(expected) - set(ours))} missing, {len(set(ours) - set(expected))} unexpected"
    runs = offset_runs(ferry, topic, 0)
    by_offset = {r["offset"]: (r["key"], r["value"]) for r in dst}
    for r in src:
        t = _translate(runs, r["offset"])
        if r["offset"] < w and r["offset"] in superseded:
            # Its copy was removed on the target: mapped (if at all) to no record.
            assert t is None or t not in by_offset, f"source {r['offset']} maps to target {t}, which holds {by_offset[t]}"
            continue
        assert t is not None, f"source offset {r['offset']} is not mapped"
        assert by_offset.get(t) == (r["key"], r["value"]), f"source {r['offset']} maps to target {t}, which holds {by_offset.get(t)}"


def test_takeover_after_the_source_deleted_what_was_being_copied(tmp_path):
    """Issue "Exact at the edges", item 8. A worker crashes between produce
    and checkpoint; before the takeover, DeleteRecords (as retention would)
    removes the source records it was copying: on partition 0 past what it
    wrote, on partition 1 only part of what it wrote. The takeover must not
    fail with OffsetOutOfRange on every run: partition 1 loses nothing (its
    deleted records are on the target) and goes on; partition 0 stops with
    the lost range, and with --resume-after-data-loss logs a DataLoss line
    and resumes at the earliest offset. Nothing is written twice."""
    from confluent_kafka import TopicPartition as KTP
    from confluent_kafka.admin import AdminClient

    from conftest import offset_runs

    topic = unique("deleted-crash")
    create_topic(SOURCE, topic, 2)
    p = producer(SOURCE)
    for part in range(2):
        for i in range(3000):
            p.produce(topic, partition=part, key=f"k-{part}-{i:05d}".encode(), value=b"v" * 60)
    assert p.flush(60) == 0
    kc, ri = write_config(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    args = ("--once", "--lease-ms", "1000", "--produce-batch-max-bytes", "3000")
    _crash_between_produce_and_checkpoint(ferry, args)
    w = [len(read_partition(TARGET, topic, part)) for part in range(2)]
    assert all(50 < n < 1000 for n in w), w
    delete_to = [1000, w[1] // 2]
    admin = AdminClient({"bootstrap.servers": SOURCE})
    for f in admin.delete_records([KTP(topic, 0, delete_to[0]), KTP(topic, 1, delete_to[1])]).values():
        f.result(timeout=30)

    stopped = ferry.run(*args, env={"RUST_LOG": "warn,ferry_engine=info"})
    out = stopped.stdout + stopped.stderr
    assert "OffsetOutOfRange" not in out, out
    assert f"{delete_to[0]} were deleted" in out and "--resume-after-data-loss" in out, out
    keys = [[r["key"] for r in read_partition(TARGET, topic, part)] for part in range(2)]
    assert len(keys[0]) == w[0], "partition 0 must stop on the loss, writing nothing"
    assert keys[1] == [f"k-1-{i:05d}".encode() for i in range(3000)], "partition 1 lost nothing and must go on, writing nothing twice"

    resumed = ferry.run(*args, "--resume-after-data-loss", env={"RUST_LOG": "warn,ferry_engine=info"})
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out
    assert "DataLoss" in out, out
    keys0 = [r["key"] for r in read_partition(TARGET, topic, 0)]
    assert keys0 == [f"k-0-{i:05d}".encode() for i in list(range(w[0])) + list(range(delete_to[0], 3000))]
    for part in range(2):
        runs = offset_runs(ferry, topic, part)
        by_offset = {r["offset"]: r["key"] for r in read_partition(TARGET, topic, part)}
        for r in read_partition(SOURCE, topic, part):
            t = _translate(runs, r["offset"])
            assert t is not None and by_offset.get(t) == r["key"], f"partition {part}: source {r['offset']} maps to target {t}"


def test_a_backfill_waits_until_a_crashed_workers_copies_are_reconciled(tmp_path):
    """A flow started at LATEST; a worker copies the first new records and
    crashes before its checkpoint, so the cursor still says nothing was
    replicated. A backfill then would move the cursor back and put the
    topic's older records on the target after the copies already there
    (and the next holder would match the copies against the wrong source
    records). It must be refused, saying why, until a run has reconciled
    the copies; then it is refused for good (records were replicated), and
    the target holds the new records once, in order."""
    topic = unique("backfill-crash")
    create_topic(SOURCE, topic, 1)
    p = producer(SOURCE)
    for i in range(20):
        p.produce(topic, partition=0, key=f"old-{i}".encode(), value=b"v")
    assert p.flush(30) == 0
    kc, ri = write_config(tmp_path, [topic], starting="LATEST")
    ferry = Ferry(kc, ri)
    args = ("--once", "--lease-ms", "1000")
    first = ferry.run(*args)
    assert first.returncode == 0, first.stderr
    for i in range(10):
        p.produce(topic, partition=0, key=f"new-{i}".encode(), value=b"v")
    assert p.flush(30) == 0
    _crash_between_produce_and_checkpoint(ferry, args, produces=1)
    assert [r["key"] for r in read_partition(TARGET, topic, 0)] == [f"new-{i}".encode() for i in range(10)]

    def backfill() -> subprocess.CompletedProcess:
        return subprocess.run(ferry.args("backfill", "--topics", topic, "--from", "EARLIEST"), capture_output=True,
                              text=True, timeout=120)

    refused = backfill()
    assert refused.returncode != 0, "a backfill over uncheckpointed copies must be refused: " + refused.stdout
    assert "without its writes checkpointed" in refused.stderr and f"{topic}-0" in refused.stderr, refused.stderr
    final = ferry.run(*args, env={"RUST_LOG": "warn,ferry_engine=info"})
    assert final.returncode == 0, final.stderr
    assert "reconciled records the previous holder wrote" in final.stdout + final.stderr
    again = backfill()
    assert again.returncode != 0 and "already replicated" in again.stderr, again.stdout + again.stderr
    assert [r["key"] for r in read_partition(TARGET, topic, 0)] == [f"new-{i}".encode() for i in range(10)]
