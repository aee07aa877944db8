"""Adversarial scenarios against the KIP-320 truncation detection (1def0d3).

They run on the "pair" cluster with a third broker (node 3, broker only,
added by this branch to infra/local/pair: `infra/local/pair 3 start`), so
that the controller (node 1) stays up while brokers 2 and 3 go down and
come back: every election below is the controller's own, as on a real
cluster. Topics are placed on brokers 2 and 3 only.

Each test asserts what Ferry promises (DESIGN invariants 2 and 10; README
"Guarantees at the edges": never silently); on 1def0d3 they fail.
"""

import os
import subprocess
import time

import pytest
from confluent_kafka import ElectionType, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import ROOT, TARGET, Ferry, read_partition, unique, write_config

PORT = int(os.environ.get("FERRY_PAIR_PORT", "14092"))
NODE1, NODE2, NODE3 = f"127.0.0.1:{PORT}", f"127.0.0.1:{PORT + 2}", f"127.0.0.1:{PORT + 3}"
ALL = f"{NODE1},{NODE2},{NODE3}"
CONFIG = {"unclean.leader.election.enable": "true", "min.insync.replicas": "1"}


def pair(*args: str, grace: int | None = None) -> None:
    env = dict(os.environ, **({"FERRY_STOP_GRACE": str(grace)} if grace else {}))
    res = subprocess.run([str(ROOT / "infra" / "local" / "pair"), *args], capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.fixture(scope="module")
def trio():
    pair("up")
    pair("3", "start")
    yield
    pair("up")
    pair("3", "start")


def partition0(bootstrap: str, topic: str) -> tuple[int, list[int]]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    p = md.topics[topic].partitions[0]
    return p.leader, sorted(p.isrs)


def wait_for(topic: str, want, what: str, timeout_s: float = 60) -> tuple[int, list[int]]:
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
        wait_for(topic, lambda m: m[0] == broker, f"broker {broker} elected", timeout_s=20)
    except AssertionError:
        AdminClient({"bootstrap.servers": NODE1}).elect_leaders(ElectionType.UNCLEAN, [TopicPartition(topic, 0)]).result()
        wait_for(topic, lambda m: m[0] == broker, f"broker {broker} elected uncleanly")


def produce(topic: str, keys: list[str], acks: str) -> None:
    p = Producer({"bootstrap.servers": ALL, "acks": acks, "enable.idempotence": False, "linger.ms": 5})
    for k in keys:
        p.produce(topic, partition=0, key=k.encode(), value=b"v-" + k.encode())
    assert p.flush(60) == 0


def keys(bootstrap: str, topic: str) -> list[str]:
    return [r["key"].decode() for r in read_partition(bootstrap, topic, 0)]


def create(topic: str, replicas: list[int]) -> None:
    admin = AdminClient({"bootstrap.servers": ALL})
    for f in admin.create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[replicas], config=CONFIG)]).values():
        f.result(timeout=30)
    wait_for(topic, lambda m: m == (replicas[0], sorted(replicas)), "leader and both in sync")


def test_a_takeover_reconcile_forgets_the_epoch_and_a_later_truncation_is_copied_silently(tmp_path, trio):
    """Defeats: "a truncation is never followed silently". A worker crashes
    after producing and before its checkpoint (a Lambda timeout); the next
    holder's reconcile checkpoints the cursor with leader_epoch None ("the
    next checkpoint of the loop stores one again") but the partition is
    idle, so no later checkpoint does. Then an unclean election truncates
    the source below the cursor. With no epoch stored, validate_epochs skips
    the partition, and epoch_changes_at needs a last epoch: the new
    history's records past the cursor are copied, those below it never."""
    topic = unique("adv-reconcile-epoch")
    old = [f"a{i:03d}" for i in range(100)]
    lost = [f"b{i:03d}" for i in range(50)]
    new = [f"c{i:03d}" for i in range(80)]
    create(topic, [2, 3])
    produce(topic, old, acks="all")
    pair("3", "stop")
    wait_for(topic, lambda m: m == (2, [2]), "broker 2 alone in the ISR")
    produce(topic, lost, acks="1")

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
    pair("2", "stop", grace=3)
    pair("3", "start")
    elect_unclean(topic, 3)
    produce(topic, new, acks="1")
    pair("2", "start")
    wait_for(topic, lambda m: m[1] == [2, 3], "broker 2 back in sync", timeout_s=90)
    assert keys(ALL, topic) == old + new

    res = ferry.run("--once")
    out = res.stdout + res.stderr
    on_target = keys(TARGET, topic)
    skipped = [k for k in new if k not in on_target]
    assert res.returncode == 1 and "truncated" in out and not skipped, (
        f"exit {res.returncode}; leader_epoch stored after reconcile: {epoch_after_reconcile!r}; "
        f"{len(skipped)} of the new history's records skipped ({skipped[:1]}..{skipped[-1:]}); "
        f"target now {len(on_target)} records\n{out[-1500:]}"
    )


def test_two_unclean_elections_the_leader_never_had_the_epoch_read(tmp_path, trio):
    """Defeats: "the cursor moves back to where the histories part" (judge
    takes the leader's end offset for the epoch asked, ignoring that the
    leader answered with an OLDER epoch: it never had the one Ferry read).

    Broker 3 leads (epoch A) and has a000..a079 with broker 2, then alone
    x080..x099. Broker 2 is elected uncleanly (epoch B) with 0..79 and
    writes y080..y129; Ferry copies 0..129, last epoch B. Broker 3 comes back
    while 2 is down and is elected uncleanly (epoch C): its log is
    a000..a079, x080..x099 (epoch A), then z100..z179 (C). Asked where B
    ends, it answers (A, 100): Ferry takes 100 for the divergence. It is 80:
    Ferry's y080..y099 are not the source's x080..x099, which are never
    copied, while the offset map keeps mapping 80..99 to y records. (A
    follower does not trust that answer: it truncates to the smaller of the
    leader's end for epoch A and its own, the largest common epoch.)"""
    topic = unique("adv-double-unclean")
    a = [f"a{i:03d}" for i in range(80)]
    x = [f"x{i:03d}" for i in range(80, 100)]
    y = [f"y{i:03d}" for i in range(80, 130)]
    z = [f"z{i:03d}" for i in range(100, 180)]
    create(topic, [3, 2])
    produce(topic, a, acks="all")
    pair("2", "stop")
    wait_for(topic, lambda m: m == (3, [3]), "broker 3 alone in the ISR")
    produce(topic, x, acks="1")
    pair("3", "stop", grace=3)
    pair("2", "start")
    elect_unclean(topic, 2)
    produce(topic, y, acks="1")
    assert keys(NODE2, topic) == a + y

    ferry = Ferry(*write_config(tmp_path, [topic], source=ALL, target=TARGET))
    first = ferry.run("--once")
    assert first.returncode == 0, first.stdout + first.stderr
    assert keys(TARGET, topic) == a + y
    [st] = ferry.status()
    assert st["cursor"] == 130, st

    pair("2", "stop", grace=3)
    pair("3", "start")
    elect_unclean(topic, 3)
    produce(topic, z, acks="1")
    pair("2", "start")
    wait_for(topic, lambda m: m[1] == [2, 3], "broker 2 back in sync", timeout_s=90)
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
    produce(topic, old, acks="all")
    ferry = Ferry(*write_config(tmp_path, [topic], source=ALL, target=TARGET))
    assert ferry.run("--once").returncode == 0
    [st] = ferry.status()
    assert st["cursor"] == 100 and st.get("leader_epoch") is not None, st
    pair("3", "stop")
    wait_for(topic, lambda m: m == (2, [2]), "broker 2 alone in the ISR")
    produce(topic, lost, acks="1")
    crashed = ferry.run("--once", env={"FERRY_FAILPOINT": "crash-after-produce:1"})
    assert crashed.returncode != 0
    assert keys(TARGET, topic) == old + lost
    pair("2", "stop", grace=3)
    pair("3", "start")
    elect_unclean(topic, 3)
    if new_before_takeover:
        produce(topic, new, acks="1")
    pair("2", "start")
    wait_for(topic, lambda m: m[1] == [2, 3], "broker 2 back in sync", timeout_s=90)
    return topic, ferry, old, lost, new


def test_a_takeover_after_a_truncation_gives_the_compaction_fix_and_resume_cannot_follow(tmp_path, trio):
    """Defeats: "stop the partition with an error that says what to run".
    The README admits the takeover stops "on the reconcile's own mismatch";
    this checks what that tells the operator, and whether the fix named for
    a truncation (--resume-after-data-loss) gets the partition going."""
    topic, ferry, old, lost, new = _crash_then_truncate(tmp_path, "adv-takeover-trunc", new_before_takeover=True)
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


def test_a_takeover_before_the_new_leader_has_new_records_stops_the_same_way(tmp_path, trio):
    """As above, but the new leader has no records past 100 yet when the
    next holder takes over (the replaced records are simply gone from the
    source). Seen on 1def0d3: the same reconcile mismatch and compaction
    fix, and the new records that follow are never copied."""
    topic, ferry, old, lost, new = _crash_then_truncate(tmp_path, "adv-takeover-quiet", new_before_takeover=False)
    res = ferry.run("--once")
    out = res.stdout + res.stderr
    [st] = ferry.status()
    after_takeover = dict(cursor=st["cursor"], leader_epoch=st.get("leader_epoch"), last_error=st.get("last_error"))
    produce(topic, new, acks="1")
    res2 = ferry.run("--once")
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
        c.commit(offsets=[tp], asynchronous=False)
    finally:
        c.close()


def test_a_group_committed_in_the_replaced_range_skips_new_records_marked_exact(tmp_path, trio):
    """Defeats: exact translation after following a new history. A source
    group read a000..a099 and b000..b039 (the history an unclean election
    then replaces) and commits 140 with that history's leader epoch, as
    Kafka's clients do since KIP-320; Ferry's group sync has not run since.
    Ferry follows the new history (--resume-after-data-loss): source 140 now
    maps to the NEW record at 140 (c040), so the group resumes on the target
    past c000..c039, which it never read, and `ferry groups` calls the
    translation exact. Ferry reads the commit's leader epoch (OffsetFetch)
    and knows 100..149 were replaced, yet translates through the new map.
    (Kafka's own consumer, given that epoch, finds the truncation and
    resumes at 100. Had group sync translated 140 before the election, the
    cached translation 140 stays: a re-delivery, not a skip.)"""
    topic = unique("adv-group-replaced")
    group = unique("adv-app")
    old = [f"a{i:03d}" for i in range(100)]
    lost = [f"b{i:03d}" for i in range(50)]
    new = [f"c{i:03d}" for i in range(80)]
    create(topic, [2, 3])
    produce(topic, old, acks="all")
    pair("3", "stop")
    wait_for(topic, lambda m: m == (2, [2]), "broker 2 alone in the ISR")
    produce(topic, lost, acks="1")
    ferry = Ferry(*write_config(tmp_path, [topic], source=ALL, target=TARGET, groups=[group]))
    assert ferry.run("--once").returncode == 0
    [st] = ferry.status()
    # The group read a000..b039 of this history and commits 140 with the
    # leader epoch of what it read (as Kafka's clients do since KIP-320).
    # Ferry's group sync has not run since (it runs every few seconds to
    # minutes; the election comes first).
    commit_at(ALL, group, topic, 140, st["leader_epoch"])
    pair("2", "stop", grace=3)
    pair("3", "start")
    elect_unclean(topic, 3)
    produce(topic, new, acks="1")
    pair("2", "start")
    wait_for(topic, lambda m: m[1] == [2, 3], "broker 2 back in sync", timeout_s=90)
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
    assert not skipped, (
        f"target commit {t}: the group resumes at {target[t]['key'] if t < len(target) else 'end'}; "
        f"{len(skipped)} new records it never read are behind its commit ({skipped[:1]}..{skipped[-1:]}); group rows: {rows}"
    )



def trickle(topic: str, keys_: list[str], seconds: float) -> None:
    """Produce acks=1 in small flushed steps over about `seconds`."""
    p = Producer({"bootstrap.servers": ALL, "acks": "1", "enable.idempotence": False, "linger.ms": 0})
    step = 10
    for i in range(0, len(keys_), step):
        for k in keys_[i:i + step]:
            p.produce(topic, partition=0, key=k.encode(), value=b"v-" + k.encode())
        assert p.flush(60) == 0
        time.sleep(seconds * step / len(keys_))


def test_an_election_while_ferry_copies_the_tail(tmp_path, trio):
    """The common case: Ferry runs (`ferry run`, rounds of 5 s, like the
    scheduled Lambda) and copies near the tail when the unclean election
    happens. Whatever it did then, the operator's two documented steps
    (a run that stops with the truncation, then one run with
    --resume-after-data-loss) must leave every record of the source's new
    history on the target exactly once."""
    topic = unique("adv-live-election")
    old = [f"a{i:03d}" for i in range(100)]
    lost = [f"b{i:03d}" for i in range(200)]
    new = [f"c{i:03d}" for i in range(300)]
    create(topic, [2, 3])
    produce(topic, old, acks="all")
    pair("3", "stop")
    wait_for(topic, lambda m: m == (2, [2]), "broker 2 alone in the ISR")
    ferry = Ferry(*write_config(tmp_path, [topic], source=ALL, target=TARGET))
    log = tmp_path / "live.log"
    proc = ferry.spawn("--round-seconds", "5", "--checkpoint-seconds", "1", log=log)
    try:
        trickle(topic, lost, 4)
        time.sleep(2)
        pair("2", "stop", grace=3)
        pair("3", "start")
        elect_unclean(topic, 3)
        trickle(topic, new, 5)
        pair("2", "start")
        wait_for(topic, lambda m: m[1] == [2, 3], "broker 2 back in sync", timeout_s=90)
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


def test_two_unclean_elections_with_the_older_history_longer_pass_without_a_word(tmp_path, trio):
    """Defeats: "never silently", with no stop at all. As in
    test_two_unclean_elections_the_leader_never_had_the_epoch_read, but the
    replica elected last holds MORE records of the old epoch (x080..x199)
    than Ferry read of the replaced one (y080..y129). Asked where Ferry's
    epoch B ends, the leader answers (A, 200): not below the position (130),
    so validate_epochs and check_history both say Same; the fetch at 130
    brings epoch A, older than B, which epoch_changes_at ignores. Ferry goes
    on copying x130..x199: the target's 80..129 are y records the source
    never had, x080..x129 are never copied, and nothing is logged."""
    topic = unique("adv-double-unclean-quiet")
    a = [f"a{i:03d}" for i in range(80)]
    x = [f"x{i:03d}" for i in range(80, 200)]
    y = [f"y{i:03d}" for i in range(80, 130)]
    z = [f"z{i:03d}" for i in range(200, 230)]
    create(topic, [3, 2])
    produce(topic, a, acks="all")
    pair("2", "stop")
    wait_for(topic, lambda m: m == (3, [3]), "broker 3 alone in the ISR")
    produce(topic, x, acks="1")
    pair("3", "stop", grace=3)
    pair("2", "start")
    elect_unclean(topic, 2)
    produce(topic, y, acks="1")
    ferry = Ferry(*write_config(tmp_path, [topic], source=ALL, target=TARGET))
    assert ferry.run("--once").returncode == 0
    assert keys(TARGET, topic) == a + y

    pair("2", "stop", grace=3)
    pair("3", "start")
    elect_unclean(topic, 3)
    produce(topic, z, acks="1")
    pair("2", "start")
    wait_for(topic, lambda m: m[1] == [2, 3], "broker 2 back in sync", timeout_s=90)
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
    """False-alarm probe (holds on 1def0d3): a compacted topic with
    committed and aborted transactions and plain records, its leader moved
    cleanly six times (controlled shutdown, then preferred election) while
    `ferry run` copies it. No truncation may be reported and every
    committed source record must be on the target once."""
    topic = unique("adv-healthy-moves")
    admin = AdminClient({"bootstrap.servers": ALL})
    cfg = {"cleanup.policy": "compact", "segment.ms": "2000", "min.cleanable.dirty.ratio": "0.01",
           "min.insync.replicas": "1"}
    for f in admin.create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[[2, 3]], config=cfg)]).values():
        f.result(timeout=30)
    wait_for(topic, lambda m: m == (2, [2, 3]), "leader 2, both in sync")
    ferry = Ferry(*write_config(tmp_path, [topic], source=ALL, target=TARGET))
    log = tmp_path / "healthy.log"
    proc = ferry.spawn("--round-seconds", "5", "--checkpoint-seconds", "1", log=log)
    tx = Producer({"bootstrap.servers": ALL, "transactional.id": unique("adv-tx"), "acks": "all"})
    tx.init_transactions(60)
    plain = Producer({"bootstrap.servers": ALL, "acks": "all"})
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
            wait_for(topic, lambda m: m[0] == other, f"broker {other} leads")
            for i in range(10):
                plain.produce(topic, partition=0, key=f"k{i}".encode(), value=f"q{rnd}-{i}".encode())
            assert plain.flush(60) == 0
            pair(str(leader), "start")
            wait_for(topic, lambda m: m[1] == [2, 3], "both in sync", timeout_s=120)
        time.sleep(6)
    finally:
        proc.terminate()
        proc.wait(60)
    last = ferry.run("--once")
    live = log.read_text(errors="replace") + last.stdout + last.stderr
    alarms = [line[:300] for line in live.splitlines() if "truncat" in line.lower() or "partition stopped" in line]
    src = [(r["key"], r["value"]) for r in read_partition(ALL, topic, 0)]
    dst = [(r["key"], r["value"]) for r in read_partition(TARGET, topic, 0)]
    missing = [kv for kv in src if kv not in dst]
    twice = {kv for kv in dst if dst.count(kv) > 1}
    epochs = ferry.status()[0].get("leader_epoch")
    print(f"\nhealthy moves: source {len(src)}, target {len(dst)}, stored epoch {epochs}, alarms {len(alarms)}")
    assert last.returncode == 0 and not alarms and not missing and not twice, (alarms[:3], missing[:3], sorted(twice)[:3])
