"""A backfill while replication runs: the deployed schedule (here a
running `ferry run`) keeps every partition leased nearly all the time, and
a backfill moves a cursor only where no worker holds it. It is recorded on
the cursor instead, and the partition's next holder starts it there,
unless the partition replicated records first (then older records would
land after newer ones on the target: the request is dropped, and said)."""

import json
import signal
import subprocess
import time

from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient

from conftest import SOURCE, TARGET, Ferry, create_topic, dynamo, producer, read_partition, unique, write_config


def produce(topic: str, prefix: str, partitions: int, n: int) -> None:
    p = producer(SOURCE)
    for part in range(partitions):
        for i in range(n):
            p.produce(topic, partition=part, key=f"{prefix}-{part}-{i}".encode(), value=b"v")
    assert p.flush(30) == 0


def cursors(ferry: Ferry, topic: str) -> list[dict]:
    db = dynamo()
    try:
        items = db.scan(TableName=f"{ferry.prefix}-cursors", ConsistentRead=True)["Items"]
    except db.exceptions.ResourceNotFoundException:
        return []  # the run has not made its tables yet
    return [i for i in items if i.get("topic", {}).get("S") == topic]


def wait_until_leased(ferry: Ferry, topic: str, partitions: int) -> None:
    deadline = time.time() + 90
    while time.time() < deadline:
        now = time.time() * 1000
        held = [c for c in cursors(ferry, topic)
                if "lease_owner" in c and int(c.get("lease_expires_ms", {"N": "0"})["N"]) > now + 3000]
        if len(held) == partitions:
            return
        time.sleep(0.5)
    raise AssertionError(f"the running worker never held every partition: {cursors(ferry, topic)}")


def keys(topic: str, part: int) -> list[str]:
    return [r["key"].decode() for r in read_partition(TARGET, topic, part, timeout_s=20)]


def wait_for_keys(topic: str, part: int, n: int, timeout_s: float = 90) -> list[str]:
    deadline = time.time() + timeout_s
    while (got := keys(topic, part)) and len(got) < n or not got:
        assert time.time() < deadline, f"partition {part}: {got}"
        time.sleep(1)
    return got


def live_backfill(tmp_path, name: str, partitions: int = 2):
    """A LATEST flow of a topic holding history, replicating in a running
    `ferry run` that holds every partition, and a backfill of the topic
    from EARLIEST while it does."""
    topic = unique(name)
    create_topic(SOURCE, topic, partitions)
    produce(topic, "before", partitions, 10)
    kc, ri = write_config(tmp_path, [topic], starting="LATEST")
    ferry = Ferry(kc, ri)
    log = tmp_path / "run.log"
    proc = ferry.spawn("--round-seconds", "10", log=log)
    try:
        wait_until_leased(ferry, topic, partitions)
        res = subprocess.run(ferry.args("backfill", "--topics", topic), capture_output=True, text=True, timeout=120)
    except BaseException:
        proc.kill()  # not left running past the test
        raise
    return topic, ferry, proc, log, res


def test_a_backfill_of_partitions_a_worker_holds_is_started_by_their_next_holder(tmp_path):
    topic, ferry, proc, log, res = live_backfill(tmp_path, "backfill-live")
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        assert "leased by a running worker" in res.stdout, res.stdout
        # The requests wait on the cursors: `ferry status` shows them. The
        # worker is paused so that what the state holds stands still.
        proc.send_signal(signal.SIGSTOP)
        try:
            held = {int(c["partition_index"]["N"]): int(c["backfill_from"]["N"]) for c in cursors(ferry, topic) if "backfill_from" in c}
            st = subprocess.run(ferry.args("status", "--json"), capture_output=True, text=True, timeout=60)
            table = subprocess.run(ferry.args("status"), capture_output=True, text=True, timeout=60)
        finally:
            proc.send_signal(signal.SIGCONT)
        assert st.returncode == 0 and table.returncode == 0, st.stderr + table.stderr
        shown = {r["partition"]: r["backfill_from"] for r in json.loads(st.stdout)["partitions"]
                 if r["topic"] == topic and "backfill_from" in r}
        assert held and shown == held == {p: 0 for p in held}, (held, st.stdout)
        assert "Backfills waiting for the partition's next holder" in table.stdout, table.stdout
        assert f"{topic}-{min(held)} from offset 0" in table.stdout, table.stdout
        for part in range(2):
            assert wait_for_keys(topic, part, 10) == [f"before-{part}-{i}" for i in range(10)]
        # Replication goes on from the end, with nothing twice.
        produce(topic, "after", 2, 5)
        for part in range(2):
            want = [f"before-{part}-{i}" for i in range(10)] + [f"after-{part}-{i}" for i in range(5)]
            assert wait_for_keys(topic, part, 15) == want
        assert all("backfill_from" not in c for c in cursors(ferry, topic))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert "backfill: partition starts here" in log.read_text()


def test_a_backfill_asked_of_a_held_partition_that_then_replicates_is_dropped_and_said(tmp_path):
    topic, ferry, proc, log, res = live_backfill(tmp_path, "backfill-live-dropped")
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        # Records arrive before the hand-off: the holder copies them, and a
        # backfill would now put older records after them.
        produce(topic, "after", 2, 5)
        deadline = time.time() + 90
        while any("backfill_from" in c for c in cursors(ferry, topic)):
            assert time.time() < deadline, cursors(ferry, topic)
            time.sleep(1)
        produce(topic, "later", 2, 2)
        for part in range(2):
            want = [f"after-{part}-{i}" for i in range(5)] + [f"later-{part}-{i}" for i in range(2)]
            assert wait_for_keys(topic, part, 7) == want
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert "backfill not started: the partition replicated records" in log.read_text()


def test_a_backfill_from_a_time_past_the_cursor_moves_nothing_forward(tmp_path):
    """A LATEST flow's cursor is at 5, and 10 records produced since are not
    copied yet (the stack paused, or behind). A backfill from a time after
    the first five of them used to move the cursor forward past them: lost,
    exit 0. A backfill only goes back."""
    topic = unique("backfill-forward")
    create_topic(SOURCE, topic, 1)
    now = int(time.time() * 1000)
    p = producer(SOURCE)
    for i in range(5):
        p.produce(topic, partition=0, key=f"before-{i}".encode(), value=b"v", timestamp=now - 3_600_000)
    assert p.flush(30) == 0
    kc, ri = write_config(tmp_path, [topic], starting="LATEST")
    ferry = Ferry(kc, ri)
    planned = subprocess.run(ferry.args("plan"), capture_output=True, text=True, timeout=120)
    assert planned.returncode == 0, planned.stderr
    for prefix, age_ms in (("mid", 1_800_000), ("late", 600_000)):
        for i in range(5):
            p.produce(topic, partition=0, key=f"{prefix}-{i}".encode(), value=b"v", timestamp=now - age_ms)
    assert p.flush(30) == 0
    res = subprocess.run(ferry.args("backfill", "--topics", topic, "--from", str(now - 1_200_000)),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert [int(c["next_source_offset"]["N"]) for c in cursors(ferry, topic)] == [5]
    assert ferry.run("--once").returncode == 0
    assert keys(topic, 0) == [f"mid-{i}" for i in range(5)] + [f"late-{i}" for i in range(5)]


def test_a_backfill_asked_before_retention_passed_its_start_starts_at_the_log_start(tmp_path):
    """A backfill from EARLIEST asked of a held partition records offset 0;
    retention (here DeleteRecords) moves the source's log start to 5 before
    the next holder starts it. That is history no longer there, not data
    the flow lost: the holder starts at the log start, and the partition
    copies on instead of stopping with a data-loss error every round."""
    topic, ferry, proc, log, res = live_backfill(tmp_path, "backfill-retention", partitions=1)
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        admin = AdminClient({"bootstrap.servers": SOURCE})
        for f in admin.delete_records([KafkaTopicPartition(topic, 0, 5)]).values():
            f.result(timeout=30)
        assert wait_for_keys(topic, 0, 5) == [f"before-0-{i}" for i in range(5, 10)]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert "before Ferry replicated them" not in log.read_text()
