"""The ferry command: Ctrl-C ends the current round cleanly and gives the
leases back; status --json carries every field."""

import json
import re
import subprocess
import signal
import time

from conftest import FERRY, SOURCE, TARGET, Ferry, create_topic, list_topics, producer, read_partition, unique, write_config


def test_ctrl_c_ends_cleanly_and_releases_leases(tmp_path):
    topic = unique("sigint")
    create_topic(SOURCE, topic, 2)
    p = producer(SOURCE)
    for i in range(2000):
        p.produce(topic, partition=i % 2, key=str(i).encode(), value=b"v")
    assert p.flush(30) == 0
    kc, ri = write_config(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    proc = ferry.spawn("--round-seconds", "30", log=tmp_path / "run.log")
    try:
        deadline = time.time() + 60
        while time.time() < deadline and topic not in list_topics(TARGET):
            time.sleep(0.2)
        while time.time() < deadline and len(read_partition(TARGET, topic, 0)) < 1000:
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130, (tmp_path / "run.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = ferry.status()
    assert len(rows) == 2
    for r in rows:
        assert r["lease_owner"] is None, "leases are given back on Ctrl-C"
        assert r["lag"] == 0 and r["cursor"] == 1000
        assert r["records_replicated"] == 1000
        assert r["last_record_timestamp_ms"] > 0
        assert r["last_error"] is None
        assert set(r) >= {"flow", "topic", "partition", "target_topic", "source_end_offset", "cursor", "lag",
                          "lag_seconds", "records_per_s", "bytes_per_s"}
        assert r["lag_seconds"] == 0, "caught up: nothing waits"
        # 1,000 records in a round of at most 30 s.
        assert r["records_per_s"] >= 1000 // 30 and r["bytes_per_s"] > r["records_per_s"], r
    # New records wait: lag in offsets, and in seconds since the last
    # replicated record was produced (an upper bound on their wait).
    for i in range(10):
        p.produce(topic, partition=i % 2, key=b"late", value=b"v")
    assert p.flush(30) == 0
    time.sleep(1.1)
    for r in ferry.status():
        assert r["lag"] == 5 and r["lag_seconds"] >= 1, r


def test_a_long_copy_shows_progress_with_an_eta(tmp_path):
    """Short rounds over a backlog that takes several: each round
    says how many records are left of what the plan saw and when it will
    be done, and the number left goes down."""
    topic = unique("progress")
    create_topic(SOURCE, topic, 4)
    p = producer(SOURCE)
    for i in range(40_000):
        p.produce(topic, partition=i % 4, value=b"x" * 900)
        if i % 10_000 == 0:
            p.flush(60)
    assert p.flush(60) == 0
    kc, ri = write_config(tmp_path, [topic])
    # One record per produced batch (a round trip each) keeps the copy slow
    # enough to watch over several three-second rounds.
    res = Ferry(kc, ri).run("--once", "--round-seconds", "3", "--produce-batch-max-bytes", "1", timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    left = [int(m) for m in re.findall(r"; (\d+) records to go, ETA \d+(?:h\d\dm|m\d\ds|s)", res.stdout)]
    assert len(left) >= 2, res.stdout
    assert left == sorted(left, reverse=True) and left[0] < 40_000, left


def test_status_before_any_run_names_the_missing_tables(tmp_path):
    """`ferry status` before the first run (or while it creates its tables)
    shows nothing and says why, rather than failing on a missing table."""
    topic = unique("norun")
    create_topic(SOURCE, topic, 1)
    kc, ri = write_config(tmp_path, [topic], groups=["g"])
    ferry = Ferry(kc, ri)
    p = subprocess.run(ferry.args("status", "--json"), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    assert st["partitions"] == [] and st["groups"] == []
    assert sorted(st["missing_tables"]) == sorted(f"{ferry.prefix}-{t}" for t in ("cursors", "offset-map", "producers", "groups"))
    assert "do not exist" in p.stderr and "ferry run" in p.stderr and ferry.prefix in p.stderr

    # After a run the tables exist and status shows the partition.
    r = ferry.run("--once")
    assert r.returncode == 0, r.stderr
    st = ferry.full_status()
    assert st["missing_tables"] == [] and len(st["partitions"]) == 1


def test_forget_flow_refuses_while_a_replicator_holds_a_lease(tmp_path):
    """`ferry forget-flow` deletes nothing while a partition of the flow is
    leased (a replicator is running it), and says to stop it first."""
    topic = unique("forget-busy")
    create_topic(SOURCE, topic, 1)
    kc, ri = write_config(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    proc = ferry.spawn("--round-seconds", "60", log=tmp_path / "ferry.log")
    try:
        deadline = time.time() + 120
        while not any(r.get("lease_owner") for r in ferry.full_status()["partitions"]):
            assert time.time() < deadline and proc.poll() is None, (tmp_path / "ferry.log").read_text()
            time.sleep(0.5)
        res = subprocess.run(ferry.args("forget-flow", "--flow", "source>target", "--yes"), capture_output=True, text=True,
                             timeout=120)
        assert res.returncode != 0, res.stdout + res.stderr
        assert "is leased by" in res.stderr and "nothing was deleted" in res.stderr and "stop it first" in res.stderr, res.stderr
        assert len(ferry.status()) == 1
    finally:
        proc.terminate()
        proc.wait(60)


def test_cost_sizes_the_replicates_from_the_partitions_and_the_traffic_and_refuses_nonsense():
    """`ferry cost`: batches of at most 64 partitions, more when the traffic
    needs more invocations; the hand-off wait costs Replicate time; a rate
    of 0 is refused with the fix."""
    def cost(*extra):
        p = subprocess.run([str(FERRY), "cost", "--json", *extra], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    small, big = cost("--partitions", "1000", "--mb-per-s", "1"), cost("--partitions", "10000", "--mb-per-s", "1")
    assert (small["batches"], big["batches"]) == (16, 157)
    assert cost("--partitions", "100", "--mb-per-s", "100", "--invocation-mb-per-s", "20")["batches"] == 5
    no_wait = cost("--partitions", "1000", "--mb-per-s", "1", "--handoff-wait-seconds", "0")
    assert small["monthly"]["lambda_gb_seconds"] > no_wait["monthly"]["lambda_gb_seconds"] * 1.1
    assert big["monthly"]["total_usd"] > 9 * small["monthly"]["total_usd"]
    p = subprocess.run([str(FERRY), "cost", "--partitions", "10", "--mb-per-s", "0"], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "--mb-per-s is 0" in p.stderr and "Fix:" in p.stderr, p.stderr


def test_run_once_beside_a_running_replicator_ends_saying_what_it_waits_for(tmp_path):
    """`ferry run --once` while another worker (a deployed stack, here a
    running `ferry run`) holds every partition copies nothing, round after
    round. It used to go on for ever; it ends with exit 1 once its rounds
    have copied nothing for --stall-seconds, naming the partitions and why."""
    topic = unique("once-stalled")
    create_topic(SOURCE, topic, 2)
    kc, ri = write_config(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    # Rounds of 5 minutes: no hand-off is near for the other run to wait for.
    holder = ferry.spawn("--round-seconds", "300", log=tmp_path / "holder.log")
    try:
        deadline = time.time() + 60
        while time.time() < deadline and topic not in list_topics(TARGET):
            time.sleep(0.5)
        time.sleep(3)  # its first round has leased both partitions
        p = producer(SOURCE)
        for i in range(10):
            p.produce(topic, partition=i % 2, key=str(i).encode(), value=b"v")
        assert p.flush(30) == 0
        started = time.time()
        res = ferry.run("--once", "--stall-seconds", "10", timeout=120)
        took = time.time() - started
        # A run that goes on beside it backs off between plans, each of
        # which reads every cursor (breaker helper-77: about one plan a
        # second, whatever --round-seconds).
        beside = ferry.spawn("--round-seconds", "5", log=tmp_path / "beside.log")
        time.sleep(16)
        beside.send_signal(signal.SIGINT)
        assert beside.wait(60) == 130
    finally:
        holder.terminate()
        holder.wait(60)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "nothing copied for 10 s" in res.stderr and "2 leased by another worker" in res.stderr, res.stderr
    assert 10 <= took < 60, took
    rounds = (tmp_path / "beside.log").read_text().count("this round")
    assert 3 <= rounds <= 8, (tmp_path / "beside.log").read_text()[-3000:]


def test_a_run_whose_partitions_stopped_on_a_lasting_fault_backs_off(tmp_path):
    """`ferry run` whose only partition stops on a fault an operator must
    mend (here records deleted on the source before they were copied) plans
    again and again: each plan reads every cursor, and each round takes the
    lease, writes the error and gives the lease back. Such rounds back off
    as rounds beside another holder do (breaker helper-80: 27 rounds in
    16 s with --round-seconds 5 on d24179a, 7 before it)."""
    from confluent_kafka import TopicPartition as KafkaTopicPartition
    from confluent_kafka.admin import AdminClient

    topic = unique("fault-backoff")
    create_topic(SOURCE, topic, 1)
    p = producer(SOURCE)
    for i in range(100):
        p.produce(topic, partition=0, value=b"v")
    assert p.flush(30) == 0
    ferry = Ferry(*write_config(tmp_path, [topic]))
    first = ferry.run("--once")
    assert first.returncode == 0, first.stdout + first.stderr
    for i in range(100):
        p.produce(topic, partition=0, value=b"w")
    assert p.flush(30) == 0
    admin = AdminClient({"bootstrap.servers": SOURCE})
    for f in admin.delete_records([KafkaTopicPartition(topic, 0, 150)]).values():
        f.result(timeout=30)
    run = ferry.spawn("--round-seconds", "5", log=tmp_path / "run.log")
    time.sleep(16)
    run.send_signal(signal.SIGINT)
    run.wait(60)
    log = (tmp_path / "run.log").read_text()
    assert "100..149" in log or "deleted" in log, log[-3000:]
    rounds = log.count("this round")
    assert 3 <= rounds <= 8, f"{rounds} rounds\n{log[-3000:]}"
