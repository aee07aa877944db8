"""Exact at the edges (#19, item 5): a source log truncated by an unclean
leader election is another history under the same offsets. Ferry copied
offsets 0..149 from broker 2; broker 1, which had only 0..99, is elected
uncleanly and writes 80 new records at 100..179. Trusting the cursor (150)
would leave the target with the old records 100..149 that the source no
longer has and copy only new records 150..179: 50 new records skipped,
silently. Ferry keeps the leader epoch of the last copied batch with the
cursor and asks the leader where that epoch ends (OffsetForLeaderEpoch,
KIP-320): it ends at 100, below the cursor. Ferry stops the partition
with the range and what to run; run so, it follows the new history.

The election is a real one on the two-broker "pair" cluster (node 1 is
broker and the only controller, node 2 a broker): node 1 is stopped
cleanly, which leaves broker 2 alone in the ISR; broker 2 takes 50 more
records; broker 2 is killed and node 1 started: the controller, finding no
live replica in the ISR or ELR (Kafka 4.1 keeps the last ISR member in the
ELR, KIP-966), elects broker 1 uncleanly because the topic allows it. When
broker 2 comes back it truncates its log to 100 and follows."""

import os
import subprocess
import time

import pytest
from confluent_kafka import ElectionType, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import ROOT, TARGET, Ferry, read_partition, unique, write_config

PORT = int(os.environ.get("FERRY_PAIR_PORT", "14092"))
NODE1, NODE2 = f"127.0.0.1:{PORT}", f"127.0.0.1:{PORT + 2}"
BOTH = f"{NODE1},{NODE2}"


def pair(*args: str, grace: int | None = None) -> None:
    env = dict(os.environ, **({"FERRY_STOP_GRACE": str(grace)} if grace else {}))
    res = subprocess.run([str(ROOT / "infra" / "local" / "pair"), *args], capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.fixture(scope="module")
def pair_cluster():
    pair("up")
    yield
    # Both brokers back (whatever step failed), then stopped, as
    # test_leadership leaves the pair.
    pair("up")
    pair("down")


def partition0(bootstrap: str, topic: str) -> tuple[int, list[int]]:
    """Leader and ISR of partition 0, as `bootstrap` sees them."""
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    p = md.topics[topic].partitions[0]
    return p.leader, sorted(p.isrs)


def wait_for(bootstrap: str, topic: str, want, what: str, timeout_s: float = 60) -> tuple[int, list[int]]:
    deadline = time.time() + timeout_s
    now = None
    while time.time() < deadline:
        try:
            now = partition0(bootstrap, topic)
            if want(now):
                return now
        except Exception as e:  # a broker on its way up or down
            now = e
        time.sleep(0.5)
    raise AssertionError(f"{what}: leader and ISR are {now}")


def produce(bootstrap: str, topic: str, keys: list[str], acks: str) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "enable.idempotence": False, "linger.ms": 5})
    for k in keys:
        p.produce(topic, partition=0, key=k.encode(), value=b"v-" + k.encode())
    assert p.flush(60) == 0


def keys(bootstrap: str, topic: str) -> list[str]:
    return [r["key"].decode() for r in read_partition(bootstrap, topic, 0)]


def test_a_log_truncated_by_an_unclean_election_stops_the_partition_then_is_followed(tmp_path, pair_cluster):
    topic = unique("truncated")
    old = [f"a{i:03d}" for i in range(100)]  # on both brokers
    lost = [f"b{i:03d}" for i in range(50)]  # on broker 2 only, copied, then lost
    new = [f"c{i:03d}" for i in range(80)]  # broker 1's new history from 100
    admin = AdminClient({"bootstrap.servers": BOTH})
    config = {"unclean.leader.election.enable": "true", "min.insync.replicas": "1"}
    for f in admin.create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[[2, 1]], config=config)]).values():
        f.result(timeout=30)
    wait_for(BOTH, topic, lambda m: m == (2, [1, 2]), "broker 2 leading, both in sync")
    produce(BOTH, topic, old, acks="all")

    # Node 1 stops cleanly: the controller takes it out of the ISR first.
    pair("1", "stop")
    wait_for(NODE2, topic, lambda m: m == (2, [2]), "broker 2 alone in the ISR")
    produce(NODE2, topic, lost, acks="1")

    ferry = Ferry(*write_config(tmp_path, [topic], source=BOTH, target=TARGET))
    first = ferry.run("--once")
    assert first.returncode == 0, first.stdout + first.stderr
    assert keys(TARGET, topic) == old + lost
    [st] = ferry.status()
    assert st["cursor"] == 150, st
    copied_epoch = st.get("leader_epoch")

    # The unclean election: broker 2 goes (killed: with no controller its
    # clean shutdown cannot finish), node 1 comes back with 0..99 only.
    pair("2", "stop", grace=3)
    pair("1", "start")
    try:
        leader = wait_for(NODE1, topic, lambda m: m[0] == 1, "broker 1 elected", timeout_s=30)
    except AssertionError:
        # Not elected by itself: ask for it, as an operator would.
        AdminClient({"bootstrap.servers": NODE1}).elect_leaders(ElectionType.UNCLEAN, [TopicPartition(topic, 0)]).result()
        leader = wait_for(NODE1, topic, lambda m: m[0] == 1, "broker 1 elected uncleanly")
    assert leader == (1, [1]), leader
    produce(NODE1, topic, new, acks="1")
    pair("2", "start")
    wait_for(BOTH, topic, lambda m: m[1] == [1, 2], "broker 2 back in sync (its log truncated to 100)", timeout_s=90)
    assert keys(BOTH, topic) == old + new, "the source's history now"

    # Ferry finds the truncation before it reads or writes anything.
    res = ferry.run("--once")
    out = res.stdout + res.stderr
    on_target = keys(TARGET, topic)
    skipped = [k for k in new if k not in on_target]
    assert res.returncode == 1, (
        f"exit {res.returncode}: the target holds {len(on_target)} records, {len(skipped)} of the source's new ones "
        f"skipped ({skipped[:1]}..{skipped[-1:]}) and the {len(lost)} it lost still there\n{out[-2000:]}"
    )
    assert copied_epoch is not None, "the cursor keeps the leader epoch of its last batch"
    assert "truncated" in out and "100..149" in out and f"leader epoch {copied_epoch}" in out, out
    assert "unclean leader election" in out and "--resume-after-data-loss" in out, out
    [st] = ferry.status()
    assert st["cursor"] == 150 and "truncated" in (st["last_error"] or ""), st
    assert keys(TARGET, topic) == old + lost, "nothing written past the divergence"

    # Told to, it follows the new history: the cursor back to 100, every
    # new record copied after the old ones, which stay on the target.
    res = ferry.run("--once", "--resume-after-data-loss")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "DataLoss" in out and "cursor moves back to 100" in out, out
    assert keys(TARGET, topic) == old + lost + new
    [st] = ferry.status()
    assert st["cursor"] == 180 and st["last_error"] is None, st

    # And stays there: nothing diverges now, nothing is copied twice.
    res = ferry.run("--once")
    assert res.returncode == 0, res.stdout + res.stderr
    assert keys(TARGET, topic) == old + lost + new
