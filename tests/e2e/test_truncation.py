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

from support.truncation_support import *  # noqa: F403 (the pair, its fixtures and helpers)


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
