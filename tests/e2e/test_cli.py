"""The ferry command: Ctrl-C ends the current round cleanly and gives the
leases back; status --json carries every field."""

import signal
import time

from conftest import SOURCE, TARGET, Ferry, create_topic, list_topics, producer, read_partition, unique, write_config


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
        assert set(r) >= {"flow", "topic", "partition", "target_topic", "source_end_offset", "cursor", "lag"}
