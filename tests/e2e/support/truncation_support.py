"""What the truncation tests share: the two-broker "pair" cluster (and its
third broker), real unclean leader elections on it, producers and group
commits on its partitions. Imported by test_truncation.py (a source log
truncated) and test_target_truncation.py (a target log truncated)."""

import os
import signal
import subprocess
import time

import pytest
from confluent_kafka import ElectionType, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import ROOT, SOURCE, TARGET, Ferry, create_topic, produce_keys, read_partition, unique, write_config


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


# --- Two unclean elections, takeovers and groups (an adversarial review's
# scenarios). They run on the pair with a third broker (node 3, broker
# only: `infra/local/pair 3 start`), so that the controller (node 1) stays
# up while brokers 2 and 3 go down and come back. Topics are placed on
# brokers 2 and 3 only. Each asserts what Ferry promises (DESIGN invariants
# 2 and 10; docs/src/concepts/guarantees.md: never silently).

NODE3 = f"127.0.0.1:{PORT + 3}"
ALL = f"{NODE1},{NODE2},{NODE3}"
CONFIG = {"unclean.leader.election.enable": "true", "min.insync.replicas": "1"}


@pytest.fixture(scope="module")
def trio(pair_cluster):
    """The pair with its third broker: node 1 (the controller) stays up
    while brokers 2 and 3 go down and come back, so every election is the
    controller's own, as on a real cluster. Restored after each use; the
    pair's own fixture stops all three at the end."""
    pair("3", "start")
    yield
    pair("up")
    pair("3", "start")


def settle(topic: str, want, what: str, timeout_s: float = 60) -> tuple[int, list[int]]:
    deadline = time.time() + timeout_s
    now = None
    while time.time() < deadline:
        try:
            now = partition0(NODE1, topic)
            if want(now):
                return now
        except Exception as e:  # noqa: BLE001
            now = e
        time.sleep(0.5)
    raise AssertionError(f"{what}: leader and ISR are {now}")


def elect_unclean(topic: str, broker: int) -> None:
    try:
        settle(topic, lambda m: m[0] == broker, f"broker {broker} elected", timeout_s=20)
    except AssertionError:
        AdminClient({"bootstrap.servers": NODE1}).elect_leaders(ElectionType.UNCLEAN, [TopicPartition(topic, 0)]).result()
        settle(topic, lambda m: m[0] == broker, f"broker {broker} elected uncleanly")


def produce_all(topic: str, keys: list[str], acks: str) -> None:
    p = Producer({"bootstrap.servers": ALL, "acks": acks, "enable.idempotence": False, "linger.ms": 5})
    for k in keys:
        p.produce(topic, partition=0, key=k.encode(), value=b"v-" + k.encode())
    assert p.flush(60) == 0


def create(topic: str, replicas: list[int]) -> None:
    admin = AdminClient({"bootstrap.servers": ALL})
    for f in admin.create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[replicas], config=CONFIG)]).values():
        f.result(timeout=30)
    settle(topic, lambda m: m == (replicas[0], sorted(replicas)), "leader and both in sync")


def unclean_election_to_broker_3(topic: str) -> None:
    """Broker 2, alone in the ISR with the tail, goes (killed); broker 3,
    which lacks the tail, comes back and is elected uncleanly."""
    pair("2", "stop", grace=3)
    pair("3", "start")
    elect_unclean(topic, 3)


def broker_2_back_in_sync(topic: str) -> None:
    """Broker 2 comes back, truncates its log to the leader's and follows."""
    pair("2", "start")
    settle(topic, lambda m: m[1] == [2, 3], "broker 2 back in sync", timeout_s=90)


def copied_to_the_pair(tmp_path, topic: str, old: list[str], **config) -> Ferry:
    """`topic` on the source and on the pair (brokers 2 and 3) as the
    target; `old` copied to both brokers; then broker 3 stopped, so that
    broker 2 alone takes what Ferry copies next. The replicator."""
    create_topic(SOURCE, topic, 1)
    create(topic, [2, 3])
    ferry = Ferry(*write_config(tmp_path, [topic], source=SOURCE, target=ALL, **config))
    produce_keys(SOURCE, topic, old)
    first = ferry.run("--once")
    assert first.returncode == 0, first.stdout + first.stderr
    pair("3", "stop")
    settle(topic, lambda m: m == (2, [2]), "broker 2 alone in the target's ISR")
    return ferry


def with_group_consumer(bootstrap: str, group: str, call):
    """`call(consumer)` on a consumer of `group` outside it, retried for up
    to 30 s: a cluster just (re)started, or after elections, may not have its
    group coordinator yet (NOT_COORDINATOR for a moment)."""
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        for attempt in range(30):
            try:
                return call(c)
            except KafkaException:
                if attempt == 29:
                    raise
                time.sleep(1)
    finally:
        c.close()


def committed_on(bootstrap: str, group: str, topic: str) -> int:
    return with_group_consumer(bootstrap, group, lambda c: c.committed([TopicPartition(topic, 0)], timeout=30)[0].offset)


def commit_at(bootstrap: str, group: str, topic: str, offset: int, leader_epoch: int | None = None) -> None:
    tp = TopicPartition(topic, 0, offset) if leader_epoch is None else TopicPartition(topic, 0, offset, leader_epoch=leader_epoch)
    with_group_consumer(bootstrap, group, lambda c: c.commit(offsets=[tp], asynchronous=False))


def trickle_to(bootstrap: str, topic: str, keys_: list[str], seconds: float) -> None:
    """Produce acks=all, idempotently, in small flushed steps over about
    `seconds` (an application on a healthy cluster)."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 0})
    step = 10
    for i in range(0, len(keys_), step):
        for k in keys_[i:i + step]:
            p.produce(topic, partition=0, key=k.encode(), value=b"v-" + k.encode())
        assert p.flush(60) == 0
        time.sleep(seconds * step / len(keys_))


def trickle(topic: str, keys_: list[str], seconds: float) -> None:
    """Produce acks=1 in small flushed steps over about `seconds`."""
    p = Producer({"bootstrap.servers": ALL, "acks": "1", "enable.idempotence": False, "linger.ms": 0})
    step = 10
    for i in range(0, len(keys_), step):
        for k in keys_[i:i + step]:
            p.produce(topic, partition=0, key=k.encode(), value=b"v-" + k.encode())
        assert p.flush(60) == 0
        time.sleep(seconds * step / len(keys_))
