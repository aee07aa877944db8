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


def test_a_cursor_a_takeover_reconciled_keeps_its_epochs_and_a_later_truncation_stops_it(tmp_path, trio):
    """Guards: "a truncation is never followed silently". A worker crashes
    after producing and before its checkpoint (a Lambda timeout); the next
    holder's reconcile moves the cursor over what it wrote, and the
    partition is idle after. Then an unclean election truncates the source
    below the cursor. The reconcile must store the epochs of the source
    batches it matched (it once stored none, and with none the next
    invocation checked nothing: the new history's records past the cursor
    were copied, those below it never, silently); the next run stops, and
    the documented resume copies every new record."""
    topic = unique("trunc-reconcile-epoch")
    old = [f"a{i:03d}" for i in range(100)]
    lost = [f"b{i:03d}" for i in range(50)]
    new = [f"c{i:03d}" for i in range(80)]
    create(topic, [2, 3])
    produce_all(topic, old, acks="all")
    pair("3", "stop")
    settle(topic, lambda m: m == (2, [2]), "broker 2 alone in the ISR")
    produce_all(topic, lost, acks="1")

    ferry = Ferry(*write_config(tmp_path, [topic], source=ALL, target=TARGET))
    crashed = ferry.run("--once", env={"FERRY_FAILPOINT": "crash-after-produce:1"})
    assert crashed.returncode != 0, crashed.stdout + crashed.stderr
    assert keys(TARGET, topic) == old + lost, "the crashed worker wrote all 150 in its one produce round"
    took_over = ferry.run("--once")
    assert took_over.returncode == 0, took_over.stdout + took_over.stderr
    [st] = ferry.status()
    assert st["cursor"] == 150, st
    epoch_after_reconcile = st.get("leader_epoch")

    # The unclean election: broker 2 goes, broker 3 (0..99) leads.
    unclean_election_to_broker_3(topic)
    produce_all(topic, new, acks="1")
    broker_2_back_in_sync(topic)
    assert keys(ALL, topic) == old + new

    res = ferry.run("--once")
    out = res.stdout + res.stderr
    # The operator's documented step after the stop: one run that follows
    # the new history.
    followed = ferry.run("--once", "--resume-after-data-loss")
    assert followed.returncode == 0, followed.stdout + followed.stderr
    on_target = keys(TARGET, topic)
    skipped = [k for k in new if k not in on_target]
    assert res.returncode == 1 and "truncated" in out and not skipped, (
        f"exit {res.returncode}; leader_epoch stored after reconcile: {epoch_after_reconcile!r}; "
        f"{len(skipped)} of the new history's records skipped ({skipped[:1]}..{skipped[-1:]}); "
        f"target now {len(on_target)} records\n{out[-1500:]}"
    )


def test_after_two_unclean_elections_the_divergence_is_found_with_ferrys_own_epochs(tmp_path, trio):
    """Guards: "the cursor moves back to where the histories part" when the
    leader answers with an OLDER epoch than asked (it never had the one
    Ferry read): its end offset for that epoch is not the divergence.

    Broker 3 leads (epoch A) and has a000..a079 with broker 2, then alone
    x080..x099. Broker 2 is elected uncleanly (epoch B) with 0..79 and
    writes y080..y129; Ferry copies 0..129, last epoch B. Broker 3 comes back
    while 2 is down and is elected uncleanly (epoch C): its log is
    a000..a079, x080..x099 (epoch A), then z100..z179 (C). Asked where B
    ends, it answers (A, 100); taken as the divergence (Kafka's consumer
    would), x080..x099 are never copied and the offset map keeps mapping
    80..99 to y records. It is 80: as a follower does, Ferry takes the
    smaller of the leader's end for epoch A and its own end of A (where it
    read B from), with the epochs it keeps with the cursor."""
    topic = unique("trunc-double-unclean")
    a = [f"a{i:03d}" for i in range(80)]
    x = [f"x{i:03d}" for i in range(80, 100)]
    y = [f"y{i:03d}" for i in range(80, 130)]
    z = [f"z{i:03d}" for i in range(100, 180)]
    create(topic, [3, 2])
    produce_all(topic, a, acks="all")
    pair("2", "stop")
    settle(topic, lambda m: m == (3, [3]), "broker 3 alone in the ISR")
    produce_all(topic, x, acks="1")
    pair("3", "stop", grace=3)
    pair("2", "start")
    elect_unclean(topic, 2)
    produce_all(topic, y, acks="1")
    assert keys(NODE2, topic) == a + y

    ferry = Ferry(*write_config(tmp_path, [topic], source=ALL, target=TARGET))
    first = ferry.run("--once")
    assert first.returncode == 0, first.stdout + first.stderr
    assert keys(TARGET, topic) == a + y
    [st] = ferry.status()
    assert st["cursor"] == 130, st

    unclean_election_to_broker_3(topic)
    produce_all(topic, z, acks="1")
    broker_2_back_in_sync(topic)
    source = keys(ALL, topic)
    assert source == a + x + z, source[75:105]

    stopped = ferry.run("--once")
    out = stopped.stdout + stopped.stderr
    assert stopped.returncode == 1 and "truncated" in out, out[-1500:]
    wrong_range = "100..129" in out and "80..129" not in out

    followed = ferry.run("--once", "--resume-after-data-loss")
    fout = followed.stdout + followed.stderr
    assert followed.returncode == 0, fout[-1500:]
    on_target = keys(TARGET, topic)
    never_copied = [k for k in source if k not in on_target]
    assert not never_copied and not wrong_range, (
        f"the stop named {'100..129 (the divergence is at 80)' if wrong_range else 'the right range'}; after "
        f"--resume-after-data-loss {len(never_copied)} source records were never copied: {never_copied[:3]}..{never_copied[-1:]}\n"
        f"{[line for line in out.splitlines() if 'truncated' in line][:1]}"
    )


def _crash_then_truncate(tmp_path, prefix: str, new_before_takeover: bool):
    """Ferry copies a000..a099 (cursor 100, an epoch stored); broker 2 alone
    takes b000..b049; a worker copies them and crashes before its
    checkpoint; broker 3 (a000..a099 only) is elected uncleanly."""
    topic = unique(prefix)
    old = [f"a{i:03d}" for i in range(100)]
    lost = [f"b{i:03d}" for i in range(50)]
    new = [f"c{i:03d}" for i in range(80)]
    create(topic, [2, 3])
    produce_all(topic, old, acks="all")
    ferry = Ferry(*write_config(tmp_path, [topic], source=ALL, target=TARGET))
    assert ferry.run("--once").returncode == 0
    [st] = ferry.status()
    assert st["cursor"] == 100 and st.get("leader_epoch") is not None, st
    pair("3", "stop")
    settle(topic, lambda m: m == (2, [2]), "broker 2 alone in the ISR")
    produce_all(topic, lost, acks="1")
    crashed = ferry.run("--once", env={"FERRY_FAILPOINT": "crash-after-produce:1"})
    assert crashed.returncode != 0
    assert keys(TARGET, topic) == old + lost
    unclean_election_to_broker_3(topic)
    if new_before_takeover:
        produce_all(topic, new, acks="1")
    broker_2_back_in_sync(topic)
    return topic, ferry, old, lost, new


def test_a_takeover_after_a_truncation_stops_as_one_and_resume_follows(tmp_path, trio):
    """Guards: "stop the partition with an error that says what to run".
    docs/src/concepts/guarantees.md admits the takeover stops "on the reconcile's own mismatch";
    this checks what that tells the operator, and whether the fix named for
    a truncation (--resume-after-data-loss) gets the partition going."""
    topic, ferry, old, lost, new = _crash_then_truncate(tmp_path, "trunc-takeover-trunc", new_before_takeover=True)
    res = ferry.run("--once")
    out = res.stdout + res.stderr
    [st] = ferry.status()
    stopped_with = st.get("last_error") or ""
    resumed = ferry.run("--once", "--resume-after-data-loss")
    rout = resumed.stdout + resumed.stderr
    on_target = keys(TARGET, topic)
    skipped = [k for k in new if k not in on_target]
    assert "truncated" in stopped_with and resumed.returncode == 0 and not skipped, (
        f"takeover: exit {res.returncode}, error: {stopped_with[:900]}\n"
        f"then --resume-after-data-loss: exit {resumed.returncode}, {len(skipped)} of {len(new)} new records not copied\n"
        f"{rout[-600:]}"
    )


def test_a_takeover_before_the_new_leader_has_records_stops_as_a_truncation_and_resume_follows(tmp_path, trio):
    """As above, but the new leader has no records past 100 yet when the
    next holder takes over (the replaced records are simply gone from the
    source). Before the fix: the same reconcile mismatch and compaction fix,
    and the new records that follow were never copied."""
    topic, ferry, old, lost, new = _crash_then_truncate(tmp_path, "trunc-takeover-quiet", new_before_takeover=False)
    res = ferry.run("--once")
    out = res.stdout + res.stderr
    [st] = ferry.status()
    after_takeover = dict(cursor=st["cursor"], leader_epoch=st.get("leader_epoch"), last_error=st.get("last_error"))
    produce_all(topic, new, acks="1")
    # The operator's documented step after the stop.
    res2 = ferry.run("--once", "--resume-after-data-loss")
    out2 = res2.stdout + res2.stderr
    on_target = keys(TARGET, topic)
    skipped = [k for k in new if k not in on_target]
    said = [w for w in ("truncated", "DataLoss", "LogTruncated") if w in out + out2]
    assert said and not skipped, (
        f"takeover exit {res.returncode} {after_takeover}; next run exit {res2.returncode}; target {len(on_target)} records "
        f"= {on_target[:1]}..{on_target[-1:]}; {len(skipped)} new records skipped; words logged: {said}\n{out[-800:]}\n{out2[-400:]}"
    )


def committed_on(bootstrap: str, group: str, topic: str) -> int:
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        [tp] = c.committed([TopicPartition(topic, 0)], timeout=30)
        return tp.offset
    finally:
        c.close()


def commit_at(bootstrap: str, group: str, topic: str, offset: int, leader_epoch: int | None = None) -> None:
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    tp = TopicPartition(topic, 0, offset) if leader_epoch is None else TopicPartition(topic, 0, offset, leader_epoch=leader_epoch)
    try:
        # A cluster just (re)started may not have its group coordinator yet.
        for attempt in range(30):
            try:
                c.commit(offsets=[tp], asynchronous=False)
                return
            except KafkaException:
                if attempt == 29:
                    raise
                time.sleep(1)
    finally:
        c.close()


def test_a_group_committed_in_a_replaced_range_resumes_at_the_new_records_not_exact(tmp_path, trio):
    """Guards: exact translation after following a new history. A source
    group read a000..a099 and b000..b039 (the history an unclean election
    then replaces) and commits 140 with that history's leader epoch, as
    Kafka's clients do since KIP-320; Ferry's group sync has not run since.
    Ferry follows the new history (--resume-after-data-loss): source 140 now
    maps to the NEW record at 140 (c040); translated through the new map the
    group would resume on the target past c000..c039, which it never read,
    called exact. The commit's leader epoch says it is in the replaced
    range: the group resumes at 100 of the new history (c000), as Kafka's
    own consumer would, and the translation is not exact. (Had group sync
    translated 140 before the election, the cached translation 140 stays: a
    re-delivery, not a skip.)"""
    topic = unique("trunc-group-replaced")
    group = unique("trunc-app")
    old = [f"a{i:03d}" for i in range(100)]
    lost = [f"b{i:03d}" for i in range(50)]
    new = [f"c{i:03d}" for i in range(80)]
    create(topic, [2, 3])
    produce_all(topic, old, acks="all")
    pair("3", "stop")
    settle(topic, lambda m: m == (2, [2]), "broker 2 alone in the ISR")
    produce_all(topic, lost, acks="1")
    ferry = Ferry(*write_config(tmp_path, [topic], source=ALL, target=TARGET, groups=[group]))
    assert ferry.run("--once").returncode == 0
    [st] = ferry.status()
    # The group read a000..b039 of this history and commits 140 with the
    # leader epoch of what it read (as Kafka's clients do since KIP-320).
    # Ferry's group sync has not run since (it runs every few seconds to
    # minutes; the election comes first).
    commit_at(ALL, group, topic, 140, st["leader_epoch"])
    unclean_election_to_broker_3(topic)
    produce_all(topic, new, acks="1")
    broker_2_back_in_sync(topic)
    assert committed_on(ALL, group, topic) == 140, "the commit from before the election survived"

    stopped = ferry.run("--once")
    assert stopped.returncode == 1
    res = ferry.run("--once", "--resume-after-data-loss")
    assert res.returncode == 0, res.stdout + res.stderr
    ferry.run("--once")  # one more group sync after the move
    target = read_partition(TARGET, topic, 0)
    t = committed_on(TARGET, group, topic)
    consumed = [r["key"].decode() for r in target if r["offset"] < t]
    never_read = [k for k in new if k not in consumed and k not in [r["key"].decode() for r in target if r["offset"] >= t]]
    skipped = [r["key"].decode() for r in target if r["offset"] < t and r["key"].decode().startswith("c")]
    rows = [g for g in ferry.groups() if g["group"] == group]
    print("\ngroup after the move:", t, rows)
    assert rows and not rows[0]["exact"], rows
    assert not skipped, (
        f"target commit {t}: the group resumes at {target[t]['key'] if t < len(target) else 'end'}; "
        f"{len(skipped)} new records it never read are behind its commit ({skipped[:1]}..{skipped[-1:]}); group rows: {rows}"
    )



def test_a_target_log_truncated_under_ferrys_copies_gets_them_again_and_its_group_follows(tmp_path, trio):
    """Guards: "no data loss" when the TARGET loses what Ferry copied (an
    adversarial review's scenario). Ferry copies a000..a099 to both target
    brokers, then b000..b049 to broker 2 alone; a group that read up to
    b019 is synced there (source 120, target 120). An unclean election
    makes broker 3 (0..99) the target's leader, and an application already
    on the target writes x000..x059 at 100..159: the target's end (160) is
    past Ferry's (150) again, so its end alone shows nothing. Ferry once
    wrote c000.. after x059 and never copied b000..b049 again, exit 0, and
    the group kept "exact" commit 120, which now points at x020. The
    leader epoch stored with the checkpoint finds it (the target's leader
    ends that epoch at 100): the lost copies are copied again, after the
    application's records, and the group's translation follows them."""
    topic = unique("trunc-target")
    group = unique("trunc-target-app")
    old = [f"a{i:03d}" for i in range(100)]
    lost = [f"b{i:03d}" for i in range(50)]
    app = [f"x{i:03d}" for i in range(60)]
    new = [f"c{i:03d}" for i in range(30)]
    ferry = copied_to_the_pair(tmp_path, topic, old, groups=[group])
    produce_keys(SOURCE, topic, lost)
    commit_at(SOURCE, group, topic, 120)
    second = ferry.run("--once")
    assert second.returncode == 0, second.stdout + second.stderr
    assert keys(ALL, topic) == old + lost
    assert committed_on(ALL, group, topic) == 120

    # The unclean election on the target: broker 2 goes, broker 3 (0..99)
    # leads, and an application writes there; broker 2 comes back and
    # truncates to 100.
    unclean_election_to_broker_3(topic)
    produce_all(topic, app, acks="1")
    broker_2_back_in_sync(topic)
    assert keys(ALL, topic) == old + app, "the target's history now"
    produce_keys(SOURCE, topic, new)

    res = ferry.run("--once")
    out = res.stdout + res.stderr
    on_target = keys(ALL, topic)
    never = [k for k in old + lost + new if k not in on_target]
    twice = sorted({k for k in on_target if on_target.count(k) > 1})
    assert res.returncode == 0 and not never and not twice, (
        f"exit {res.returncode}: target {len(on_target)} records, {len(never)} source records not there "
        f"({never[:1]}..{never[-1:]}), {len(twice)} twice\n{out[-2000:]}"
    )
    assert on_target == old + app + lost + new, on_target
    assert "TargetTruncated" in out and "source offsets 100..149" in out, out[-2000:]
    [st] = ferry.status()
    assert st["cursor"] == 180 and st["last_error"] is None, st
    # The group read up to b019: it resumes at the copy of b020.
    target = read_partition(ALL, topic, 0)
    t = committed_on(ALL, group, topic)
    assert target[t]["key"] == b"b020", (t, target[t]["key"], [g for g in ferry.groups() if g["group"] == group])

    # And it stays so: nothing is copied twice by the next run.
    again = ferry.run("--once")
    assert again.returncode == 0 and "TargetTruncated" not in again.stdout + again.stderr, again.stdout + again.stderr
    assert keys(ALL, topic) == old + app + lost + new


def test_ferrys_group_commit_into_copies_the_target_lost_moves_back_to_the_copy_again(tmp_path, trio):
    """Guards: exact group offsets across a target truncation (an
    adversarial review's scenario, failed on ae83007). An application on
    the target writes x000..x019 at 100..119 and Ferry copies b000..b049
    after them (120..169), on broker 2 alone; a group that read up to b019
    gets Ferry's commit 140 (the copy of b020), and another one, which a
    consumer on the target moved on by itself to 165, keeps its own. An
    unclean election makes broker 3 (0..99) the leader: x and b are gone,
    and Ferry copies b000..b049 again, now at 100..149. Ferry once left its
    own commit 140 in place ("target ahead: never moved back"), exit 0:
    the group, moved to the target, resumed at b040 and skipped 20 records
    it never read, while the translation said exact. Ferry's own commit
    into the lost range follows the copy of b020; the other one is not
    Ferry's to move, and the sync says why it may skip."""
    topic = unique("trunc-target-grp")
    group, other = unique("trunc-target-grp-app"), unique("trunc-target-grp-own")
    old = [f"a{i:03d}" for i in range(100)]
    app = [f"x{i:03d}" for i in range(20)]
    lost = [f"b{i:03d}" for i in range(50)]
    new = [f"c{i:03d}" for i in range(30)]
    ferry = copied_to_the_pair(tmp_path, topic, old, groups=[group, other])
    produce_all(topic, app, acks="1")
    produce_keys(SOURCE, topic, lost)
    commit_at(SOURCE, group, topic, 120)
    commit_at(SOURCE, other, topic, 110)
    second = ferry.run("--once")
    assert second.returncode == 0, second.stdout + second.stderr
    assert keys(ALL, topic) == old + app + lost
    assert committed_on(ALL, group, topic) == 140, "the copy of b020"
    assert committed_on(ALL, other, topic) == 130, "the copy of b010"
    commit_at(ALL, other, topic, 165)  # a consumer on the target read on
    third = ferry.run("--once")
    assert third.returncode == 0 and committed_on(ALL, other, topic) == 165, third.stdout + third.stderr

    unclean_election_to_broker_3(topic)
    broker_2_back_in_sync(topic)
    assert keys(ALL, topic) == old, "the target's history now"
    produce_keys(SOURCE, topic, new)

    res = ferry.run("--once")
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "TargetTruncated" in out, out[-3000:]
    target = read_partition(ALL, topic, 0)
    assert [r["key"].decode() for r in target] == old + lost + new
    syncs = {g["group"]: g for g in ferry.groups() if g["group"] in (group, other)}
    t = committed_on(ALL, group, topic)
    assert target[t]["key"] == b"b020", (t, target[t]["key"], syncs[group])
    assert syncs[group]["status"] == "synced" and "before the target's log parted from Ferry's copies at offset 100" in syncs[group]["detail"], syncs[group]
    # Not Ferry's: never overwritten, and the sync says what happened.
    assert committed_on(ALL, other, topic) == 165
    assert syncs[other]["status"] == "target-ahead" and "parted from Ferry's copies at offset 100" in syncs[other]["detail"], syncs[other]

    # Stable: the next sync keeps the new commit and the warning.
    again = ferry.run("--once")
    assert again.returncode == 0 and committed_on(ALL, group, topic) == t, again.stdout + again.stderr
    syncs = {g["group"]: g for g in ferry.groups() if g["group"] in (group, other)}
    assert syncs[group]["status"] == "up-to-date", syncs[group]
    assert "parted from Ferry's copies at offset 100" in syncs[other]["detail"], syncs[other]


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


def test_an_unclean_election_on_the_target_while_ferry_writes_skips_nothing(tmp_path, trio):
    """Guards: "no data loss" when the target loses records while Ferry is
    writing to it (`ferry run`, rounds of 5 s, checkpoints every second).
    Broker 2 alone holds the target's tail when it is killed; broker 3,
    which lacks it, is elected uncleanly while Ferry keeps copying and an
    application writes there too. Ferry's next batch lands below the end of
    what it wrote, or a checkpoint finds the target's end below what it
    covers: either way nothing may be skipped, whatever run finds it. What
    Ferry wrote after the loss and before it noticed may be there twice
    (stated in docs/src/concepts/guarantees.md), and is counted here."""
    topic = unique("trunc-target-live")
    old = [f"a{i:03d}" for i in range(100)]
    lost = [f"b{i:03d}" for i in range(200)]
    app = [f"x{i:03d}" for i in range(40)]
    new = [f"c{i:03d}" for i in range(300)]
    ferry = copied_to_the_pair(tmp_path, topic, old)
    log = tmp_path / "live.log"
    proc = ferry.spawn("--round-seconds", "5", "--checkpoint-seconds", "1", log=log)
    try:
        trickle_to(SOURCE, topic, lost, 4)
        time.sleep(2)
        unclean_election_to_broker_3(topic)
        trickle(topic, app, 1)
        trickle_to(SOURCE, topic, new, 5)
        broker_2_back_in_sync(topic)
        time.sleep(8)
    finally:
        proc.terminate()
        proc.wait(60)
    last = ferry.run("--once")
    out = log.read_text(errors="replace") + last.stdout + last.stderr
    on_target = keys(ALL, topic)
    source = old + lost + new
    missing = [k for k in source if k not in on_target]
    twice = sorted({k for k in on_target if on_target.count(k) > 1})
    said = [line[:300] for line in out.splitlines() if "TargetTruncated" in line][:2]
    print(f"\ntarget live election: target {len(on_target)}, {len(twice)} twice, said: {said}")
    assert last.returncode == 0 and not missing, (
        f"exit {last.returncode}; {len(missing)} source records missing on the target ({missing[:1]}..{missing[-1:]}); "
        f"{len(twice)} twice; said: {said}\n{out[-1500:]}"
    )
    assert said, "the loss is reported"
    assert [k for k in on_target if k.startswith("x")] == app, "the application's records stay"


def trickle(topic: str, keys_: list[str], seconds: float) -> None:
    """Produce acks=1 in small flushed steps over about `seconds`."""
    p = Producer({"bootstrap.servers": ALL, "acks": "1", "enable.idempotence": False, "linger.ms": 0})
    step = 10
    for i in range(0, len(keys_), step):
        for k in keys_[i:i + step]:
            p.produce(topic, partition=0, key=k.encode(), value=b"v-" + k.encode())
        assert p.flush(60) == 0
        time.sleep(seconds * step / len(keys_))


def test_an_unclean_election_while_ferry_copies_the_tail_leaves_every_new_record_once(tmp_path, trio):
    """The common case: Ferry runs (`ferry run`, rounds of 5 s, like the
    scheduled Lambda) and copies near the tail when the unclean election
    happens. Whatever it did then, the operator's two documented steps
    (a run that stops with the truncation, then one run with
    --resume-after-data-loss) must leave every record of the source's new
    history on the target exactly once."""
    topic = unique("trunc-live-election")
    old = [f"a{i:03d}" for i in range(100)]
    lost = [f"b{i:03d}" for i in range(200)]
    new = [f"c{i:03d}" for i in range(300)]
    create(topic, [2, 3])
    produce_all(topic, old, acks="all")
    pair("3", "stop")
    settle(topic, lambda m: m == (2, [2]), "broker 2 alone in the ISR")
    ferry = Ferry(*write_config(tmp_path, [topic], source=ALL, target=TARGET))
    log = tmp_path / "live.log"
    proc = ferry.spawn("--round-seconds", "5", "--checkpoint-seconds", "1", log=log)
    try:
        trickle(topic, lost, 4)
        time.sleep(2)
        unclean_election_to_broker_3(topic)
        trickle(topic, new, 5)
        broker_2_back_in_sync(topic)
        time.sleep(8)
    finally:
        proc.terminate()
        proc.wait(60)
    live = log.read_text(errors="replace")
    source = keys(ALL, topic)
    assert source[:100] == old and source[100:] == new[: len(source) - 100], source[95:105]
    stop = ferry.run("--once")
    sout = stop.stdout + stop.stderr
    followed = ferry.run("--once", "--resume-after-data-loss")
    fout = followed.stdout + followed.stderr
    on_target = keys(TARGET, topic)
    missing = [k for k in source if k not in on_target]
    twice = sorted({k for k in on_target if on_target.count(k) > 1})
    [st] = ferry.status()
    said = [line[:400] for line in (live + sout).splitlines() if "truncat" in line.lower() or "reconcile" in line.lower()][:3]
    print("\nlive election:", said, "| stop run exit", stop.returncode, "| target", len(on_target), "source", len(source))
    assert followed.returncode == 0 and not missing and not twice, (
        f"after the documented steps: exit {followed.returncode}; {len(missing)} source records missing "
        f"({missing[:1]}..{missing[-1:]}), {len(twice)} on the target twice ({twice[:3]}); cursor {st['cursor']}, "
        f"error: {(st.get('last_error') or '')[:500]}\nwhat it said: {said}\n{fout[-500:]}"
    )


def test_after_two_unclean_elections_a_longer_older_history_is_still_a_truncation(tmp_path, trio):
    """Guards: "never silently", with no stop at all. As in
    test_after_two_unclean_elections_the_divergence_is_found_with_ferrys_own_epochs, but the
    replica elected last holds MORE records of the old epoch (x080..x199)
    than Ferry read of the replaced one (y080..y129). Asked where Ferry's
    epoch B ends, the leader answers (A, 200): not below the position (130).
    Taken alone (as Kafka's consumer takes it) that says nothing is wrong,
    and Ferry went on copying x130..x199, the target's 80..129 y records the
    source never had, x080..x129 never copied, nothing logged. With its own
    epochs the divergence is 80, and the run stops."""
    topic = unique("trunc-double-unclean-quiet")
    a = [f"a{i:03d}" for i in range(80)]
    x = [f"x{i:03d}" for i in range(80, 200)]
    y = [f"y{i:03d}" for i in range(80, 130)]
    z = [f"z{i:03d}" for i in range(200, 230)]
    create(topic, [3, 2])
    produce_all(topic, a, acks="all")
    pair("2", "stop")
    settle(topic, lambda m: m == (3, [3]), "broker 3 alone in the ISR")
    produce_all(topic, x, acks="1")
    pair("3", "stop", grace=3)
    pair("2", "start")
    elect_unclean(topic, 2)
    produce_all(topic, y, acks="1")
    ferry = Ferry(*write_config(tmp_path, [topic], source=ALL, target=TARGET))
    assert ferry.run("--once").returncode == 0
    assert keys(TARGET, topic) == a + y

    unclean_election_to_broker_3(topic)
    produce_all(topic, z, acks="1")
    broker_2_back_in_sync(topic)
    source = keys(ALL, topic)
    assert source == a + x + z

    res = ferry.run("--once")
    out = res.stdout + res.stderr
    on_target = keys(TARGET, topic)
    never = [k for k in source if k not in on_target]
    foreign = [k for k in on_target if k not in source]
    assert res.returncode == 1 or not never, (
        f"exit {res.returncode}, nothing said ({'truncated' in out}); target {len(on_target)} records: "
        f"{len(never)} source records never copied ({never[:1]}..{never[-1:]}), {len(foreign)} on the target the source "
        f"never had ({foreign[:1]}..{foreign[-1:]})"
    )


def test_clean_leader_moves_on_a_compacted_transactional_topic_raise_no_alarm(tmp_path, trio):
    """False-alarm probe: a compacted topic with
    committed and aborted transactions and plain records, its leader moved
    cleanly six times (controlled shutdown, then preferred election) while
    `ferry run` copies it. No truncation may be reported and every
    committed source record must be on the target once. The same moves
    happen under a second replicator writing to a topic of the pair (the
    target's leader epochs move under its checkpoints): no TargetTruncated,
    every record once."""
    topic = unique("trunc-healthy-moves")
    admin = AdminClient({"bootstrap.servers": ALL})
    cfg = {"cleanup.policy": "compact", "segment.ms": "2000", "min.cleanable.dirty.ratio": "0.01",
           "min.insync.replicas": "1"}
    for f in admin.create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[[2, 3]], config=cfg)]).values():
        f.result(timeout=30)
    settle(topic, lambda m: m == (2, [2, 3]), "leader 2, both in sync")
    ferry = Ferry(*write_config(tmp_path, [topic], source=ALL, target=TARGET))
    log = tmp_path / "healthy.log"
    proc = ferry.spawn("--round-seconds", "5", "--checkpoint-seconds", "1", log=log)
    into = unique("trunc-healthy-target")
    create_topic(SOURCE, into, 1)
    for f in admin.create_topics([NewTopic(into, num_partitions=1, replica_assignment=[[2, 3]], config={"min.insync.replicas": "1"})]).values():
        f.result(timeout=30)
    (tmp_path / "into").mkdir()
    writer = Ferry(*write_config(tmp_path / "into", [into], source=SOURCE, target=ALL))
    writer_log = tmp_path / "into.log"
    writer_proc = writer.spawn("--round-seconds", "5", "--checkpoint-seconds", "1", log=writer_log)
    sent = Producer({"bootstrap.servers": SOURCE, "acks": "all"})
    tx = Producer({"bootstrap.servers": ALL, "transactional.id": unique("trunc-tx"), "acks": "all"})
    tx.init_transactions(60)
    # Idempotent: a retry under load must not put a record on the source twice.
    plain = Producer({"bootstrap.servers": ALL, "acks": "all", "enable.idempotence": True})
    try:
        for rnd in range(6):
            for i in range(30):
                plain.produce(topic, partition=0, key=f"k{i % 7}".encode(), value=f"p{rnd}-{i}".encode())
            assert plain.flush(60) == 0
            tx.begin_transaction()
            for i in range(20):
                tx.produce(topic, partition=0, key=f"t{i % 5}".encode(), value=f"t{rnd}-{i}".encode())
            (tx.abort_transaction if rnd % 2 else tx.commit_transaction)(60)
            leader = 2 if rnd % 2 == 0 else 3
            other = 5 - leader
            pair(str(leader), "stop")
            settle(topic, lambda m: m[0] == other, f"broker {other} leads")
            for i in range(10):
                plain.produce(topic, partition=0, key=f"k{i}".encode(), value=f"q{rnd}-{i}".encode())
            assert plain.flush(60) == 0
            for i in range(40):
                sent.produce(into, partition=0, key=f"r{rnd}-{i}".encode(), value=b"v")
            assert sent.flush(60) == 0
            pair(str(leader), "start")
            settle(topic, lambda m: m[1] == [2, 3], "both in sync", timeout_s=120)
        time.sleep(6)
    finally:
        proc.terminate()
        writer_proc.terminate()
        proc.wait(60)
        writer_proc.wait(60)
    last = ferry.run("--once")
    writer_last = writer.run("--once")
    writer_said = [line[:300] for line in (writer_log.read_text(errors="replace") + writer_last.stdout + writer_last.stderr).splitlines()
                   if "TargetTruncated" in line or "partition stopped" in line]
    written = [r["key"] for r in read_partition(ALL, into, 0)]
    assert writer_last.returncode == 0 and not writer_said, writer_said[:3]
    assert written == [r["key"] for r in read_partition(SOURCE, into, 0)] and len(written) == 240
    live = log.read_text(errors="replace") + last.stdout + last.stderr
    alarms = [line[:300] for line in live.splitlines() if "truncat" in line.lower() or "partition stopped" in line]
    src = [(r["key"], r["value"]) for r in read_partition(ALL, topic, 0)]
    dst = [(r["key"], r["value"]) for r in read_partition(TARGET, topic, 0)]
    missing = [kv for kv in src if kv not in dst]
    twice = {kv for kv in dst if dst.count(kv) > 1}
    epochs = ferry.status()[0].get("leader_epoch")
    print(f"\nhealthy moves: source {len(src)}, target {len(dst)}, stored epoch {epochs}, alarms {len(alarms)}")
    assert last.returncode == 0 and not alarms and not missing and not twice, (alarms[:3], missing[:3], sorted(twice)[:3])


def test_target_copies_lost_before_their_checkpoint_are_found_though_others_wrote_past(tmp_path, trio):
    """Guards: a leader change between two checkpoints is checked before
    the new epoch is stored (a second adversarial review's scenario; it
    lost b000..b049 with exit 0 on e13cc8c). Ferry has b000..b049
    acknowledged on broker 2 alone and not yet checkpointed (checkpoints
    every 120 s). An unclean election makes broker 3 (0..99) the leader and
    an application writes x000..x079 at 100..179, past Ferry's 150. The
    checkpoint finds the end (180) past what it covers; storing the new
    epoch then would hide the loss for good. The epoch changed since the
    last checkpoint, so Ferry reads back what it wrote since: its
    b000..b049 are not there, and they are copied again."""
    topic = unique("adv-midway")
    old = [f"a{i:03d}" for i in range(100)]
    lost = [f"b{i:03d}" for i in range(50)]
    app = [f"x{i:03d}" for i in range(80)]
    new = [f"c{i:03d}" for i in range(20)]
    ferry = copied_to_the_pair(tmp_path, topic, old)
    log = tmp_path / "live.log"
    proc = ferry.spawn("--round-seconds", "300", "--checkpoint-seconds", "120", "--lease-ms", "600000", log=log)
    try:
        time.sleep(5)
        produce_keys(SOURCE, topic, lost)
        deadline = time.time() + 30
        while time.time() < deadline and keys(ALL, topic) != old + lost:
            time.sleep(0.5)
        assert keys(ALL, topic) == old + lost, "Ferry copied b000..b049 to broker 2"
        unclean_election_to_broker_3(topic)
        produce_all(topic, app, acks="1")
        time.sleep(2)
    finally:
        print(f"\n{time.strftime('%T')} SIGINT to the running ferry")
        proc.send_signal(signal.SIGINT)
        proc.wait(120)
        print(f"{time.strftime('%T')} exited {proc.returncode}; status {ferry.status()}")
    broker_2_back_in_sync(topic)
    assert keys(ALL, topic) == old + app, "the target's history now"
    produce_keys(SOURCE, topic, new)
    print(f"{time.strftime('%T')} last run")
    last = ferry.run("--once")
    print(f"{time.strftime('%T')} done")
    out = log.read_text(errors="replace") + last.stdout + last.stderr
    on_target = keys(ALL, topic)
    missing = [k for k in old + lost + new if k not in on_target]
    said = [line[:400] for line in out.splitlines() if "TargetTruncated" in line][:2]
    print(f"\nexit {last.returncode}; target {on_target[:2]}..{on_target[-2:]} ({len(on_target)}); missing {len(missing)}; said {said}")
    print(ferry.status())
    assert said, "the loss is reported"
    assert last.returncode == 0 and not missing, (
        f"exit {last.returncode}; {len(missing)} source records missing ({missing[:1]}..{missing[-1:]}); said: {said}\n{out[-3000:]}")


def test_target_copies_a_takeover_reconciled_then_lost_are_copied_again(tmp_path, trio):
    """Guards: a takeover's reconcile stores the target's epoch too (it
    stored none on e13cc8c, and lost b000..b049 with exit 0). A worker
    copies b000..b049 to broker 2 alone and crashes before its checkpoint;
    the next holder's reconcile moves the cursor over them; the source then
    stays idle, so no checkpoint of records follows. An unclean election
    makes broker 3 (0..99) the target's leader and an application writes
    x000..x079 there: the end (180) is past Ferry's (150), and only the
    epoch the reconcile stored (read before it read the holder's records)
    shows the loss."""
    topic = unique("adv-reconciled")
    old = [f"a{i:03d}" for i in range(100)]
    lost = [f"b{i:03d}" for i in range(50)]
    app = [f"x{i:03d}" for i in range(80)]
    new = [f"c{i:03d}" for i in range(20)]
    ferry = copied_to_the_pair(tmp_path, topic, old)
    produce_keys(SOURCE, topic, lost)
    crashed = ferry.run("--once", env={"FERRY_FAILPOINT": "crash-after-produce:1"})
    assert crashed.returncode != 0, crashed.stdout + crashed.stderr
    assert keys(ALL, topic) == old + lost
    took_over = ferry.run("--once")
    assert took_over.returncode == 0, took_over.stdout + took_over.stderr
    [st] = ferry.status()
    assert st["cursor"] == 150, st
    unclean_election_to_broker_3(topic)
    produce_all(topic, app, acks="1")
    broker_2_back_in_sync(topic)
    assert keys(ALL, topic) == old + app, "the target's history now"
    produce_keys(SOURCE, topic, new)
    last = ferry.run("--once")
    out = took_over.stdout + took_over.stderr + last.stdout + last.stderr
    on_target = keys(ALL, topic)
    missing = [k for k in old + lost + new if k not in on_target]
    said = [line[:400] for line in out.splitlines() if "TargetTruncated" in line][:2]
    print(f"\nexit {last.returncode}; target ({len(on_target)}); missing {len(missing)}; said {said}")
    assert said, "the loss is reported"
    assert last.returncode == 0 and not missing, (
        f"exit {last.returncode}; {len(missing)} source records missing ({missing[:1]}..{missing[-1:]}); said: {said}\n{out[-3000:]}")


def test_target_loss_hidden_by_a_later_batch_past_the_applications_records_is_found(tmp_path, trio):
    """Guards: the same with default settings inside one long invocation
    (rounds of 120 s, checkpoints every 4 s; it lost b000..b049 with exit 0
    on e13cc8c). b000..b049 are checkpointed in epoch E on broker 2 alone;
    an unclean election makes broker 3 (0..99) the leader and an
    application writes x000..x079 at 100..179. Ferry's next batch lands at
    180, past the end of what it wrote, so the acknowledgement shows
    nothing; its checkpoint sees a new epoch and asks where E ends (100,
    below 150) before storing it."""
    topic = unique("adv-later")
    old = [f"a{i:03d}" for i in range(100)]
    lost = [f"b{i:03d}" for i in range(50)]
    app = [f"x{i:03d}" for i in range(80)]
    new = [f"c{i:03d}" for i in range(20)]
    more = [f"d{i:03d}" for i in range(10)]
    ferry = copied_to_the_pair(tmp_path, topic, old)
    log = tmp_path / "live.log"
    proc = ferry.spawn("--round-seconds", "120", log=log)
    try:
        time.sleep(5)
        produce_keys(SOURCE, topic, lost)
        time.sleep(10)
        assert keys(ALL, topic) == old + lost
        print(f"\nstatus before the election {ferry.status()}")
        unclean_election_to_broker_3(topic)
        produce_all(topic, app, acks="1")
        produce_keys(SOURCE, topic, new)
        time.sleep(10)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(120)
    broker_2_back_in_sync(topic)
    produce_keys(SOURCE, topic, more)
    last = ferry.run("--once")
    out = log.read_text(errors="replace") + last.stdout + last.stderr
    on_target = keys(ALL, topic)
    missing = [k for k in old + lost + new + more if k not in on_target]
    said = [line[:400] for line in out.splitlines() if "TargetTruncated" in line][:2]
    print(f"\nexit {last.returncode}; target ({len(on_target)}) {on_target[95:105]}..; missing {len(missing)}; said {said}")
    assert said, "the loss is reported"
    assert last.returncode == 0 and not missing, (
        f"exit {last.returncode}; {len(missing)} source records missing ({missing[:1]}..{missing[-1:]}); said: {said}\n{out[-3000:]}")


def test_both_ways_a_target_that_lost_only_ferrys_copies_stops_neither_flow(tmp_path, trio):
    """Guards: both ways (IDENTICAL names, A <-> the pair as B), an unclean
    election on B that loses only Ferry's copies b000..b049. A>B copies
    them again. B>A had read past them (dropping them: the opposite flow's
    copies) and now finds its source truncated below its cursor; nothing it
    copies was in the replaced range, so it follows the new history
    without stopping and without DataLoss (it stopped, asking for
    --resume-after-data-loss, before this). Every record once on each
    side."""
    topic = unique("adv-both")
    old = [f"a{i:03d}" for i in range(100)]
    lost = [f"b{i:03d}" for i in range(50)]
    ferry = copied_to_the_pair(tmp_path, topic, old, both_ways=True)
    produce_keys(SOURCE, topic, lost)
    second = ferry.run("--once")
    assert second.returncode == 0, second.stdout + second.stderr
    assert keys(ALL, topic) == old + lost
    unclean_election_to_broker_3(topic)
    broker_2_back_in_sync(topic)
    res = ferry.run("--once")
    again = ferry.run("--once")
    out = res.stdout + res.stderr + again.stdout + again.stderr
    st = ferry.status()
    print(f"\nexit {res.returncode}/{again.returncode}; B {len(keys(ALL, topic))}; A {len(keys(SOURCE, topic))}")
    for s in st:
        print(s["flow"], s["cursor"], (s["last_error"] or "")[:600])
    errors = [s for s in st if s["last_error"]]
    assert again.returncode == 0 and not errors, f"{errors}\n{out[-2500:]}"
    assert "DataLoss" not in out and "TargetTruncated" in out, out[-2500:]
    assert keys(SOURCE, topic) == old + lost and keys(ALL, topic) == old + lost


def test_compaction_on_the_target_under_a_read_back_raises_no_alarm(tmp_path, trio):
    """Guards the read-back after a leader change (or before a first stored
    epoch) against the log cleaner (a third review's scenario: on b970d70
    it reported TargetTruncated twice on a healthy compacted target and
    wrote 271 records again). Three keys written over and over, segments
    rolled every second, a checkpoint every 50 s: the cleaner removes whole
    batches of Ferry's before the checkpoint reads back what it wrote. An
    offset no batch holds is the cleaner's doing, not a truncation."""
    from confluent_kafka import Consumer
    from confluent_kafka import TopicPartition as KTP

    topic = unique("trunc-compact-readback")
    on_source = AdminClient({"bootstrap.servers": SOURCE})
    for f in on_source.create_topics(
            [NewTopic(topic, num_partitions=1, replication_factor=1, config={"cleanup.policy": "compact"})]).values():
        f.result(timeout=30)
    cfg = {"cleanup.policy": "compact", "segment.ms": "1000", "min.cleanable.dirty.ratio": "0.01",
           "min.compaction.lag.ms": "0", "min.insync.replicas": "1"}
    on_pair = AdminClient({"bootstrap.servers": ALL})
    for f in on_pair.create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[[2, 3]], config=cfg)]).values():
        f.result(timeout=30)
    settle(topic, lambda m: m == (2, [2, 3]), "leader 2, both in sync")
    ferry = Ferry(*write_config(tmp_path, [topic], source=SOURCE, target=ALL))
    log = tmp_path / "run.log"
    proc = ferry.spawn("--round-seconds", "120", "--checkpoint-seconds", "50", log=log)
    try:
        trickle_to(SOURCE, topic, [f"k{i % 3}" for i in range(200)], 35)
        time.sleep(20)  # past the first checkpoint, 50 s in
    finally:
        proc.terminate()
        proc.wait(60)
    last = ferry.run("--once")
    text = log.read_text(errors="replace") + last.stdout + last.stderr
    alarms = [line[:400] for line in text.splitlines() if "truncat" in line.lower()]

    def end(bootstrap: str) -> int:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("trunc-end")})
        try:
            return c.get_watermark_offsets(KTP(topic, 0), timeout=30)[1]
        finally:
            c.close()

    def latest(bootstrap: str) -> dict:
        return {r["key"]: r["value"] for r in read_partition(bootstrap, topic, 0)}

    src_end, dst_end = end(SOURCE), end(ALL)
    assert last.returncode == 0 and not alarms, alarms[:2]
    # The target's end may be one past the source's: the abort marker of the
    # fence the last run put on the terminated run's producer.
    assert src_end <= dst_end <= src_end + 1, (src_end, dst_end)
    assert latest(ALL) == latest(SOURCE)
