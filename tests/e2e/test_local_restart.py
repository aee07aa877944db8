"""infra/local/up after moto stopped (a reboot, infra/local/down) while the
Kafka clusters kept their records: moto keeps Ferry's state in memory, so
the records would belong to state that is gone. Replicating on, every flow
would copy them again, and `ferry readiness` refused the demo's groups
("target offset ... is ahead of the translation 0"), run twice with moto
restarted between. `up` starts the clusters empty too, and says so; with
moto running it restarts nothing and keeps every record.

It restarts the source and target brokers: it runs alone (tests/run)."""

import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import ROOT, SOURCE, TARGET, create_topic, list_topics, producer, unique

RUN_DIR = Path(os.environ.get("FERRY_RUN_DIR") or ROOT / ".run")


def up() -> str:
    res = subprocess.run([str(ROOT / "infra" / "local" / "up")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


def stop_moto() -> None:
    pid = int((RUN_DIR / "moto" / "moto.pid").read_text().split()[0])
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    raise AssertionError(f"moto (pid {pid}) did not stop within 30 s")


def test_up_after_moto_stopped_starts_the_clusters_empty_and_otherwise_keeps_them():
    kept = unique("kept")
    for cluster in (SOURCE, TARGET):
        create_topic(cluster, kept, 1)
    p = producer(SOURCE)
    p.produce(kept, b"a record")
    p.flush(30)

    # moto running: nothing is restarted, and every record stays.
    out = up()
    assert "everything was already running" in out, out
    assert kept in list_topics(SOURCE) and kept in list_topics(TARGET)

    # moto stopped: it comes back empty, and so do both clusters.
    stop_moto()
    out = up()
    for cluster in ("source", "target"):
        assert f"kafka {cluster}: moto starts without Ferry's state" in out, out
    assert "started: kafka source kafka target moto" in out, out
    for cluster in (SOURCE, TARGET):
        assert kept not in list_topics(cluster), cluster

    # The stack is whole again: a topic made now survives the next up.
    after = unique("after")
    create_topic(SOURCE, after, 1)
    out = up()
    assert "everything was already running" in out, out
    assert after in list_topics(SOURCE)
