"""One writer per target topic: two replicators on the same state tables
that copy the same topic the same way (a second stack deployed under
another name, a renamed replicator, two waves' definitions overlapping)
would each keep their own cursors and copy every record twice. The first
to plan a topic writes it; the other refuses that topic, names the flow
that writes it and says how to fix it, and copies its other topics."""

import signal
import subprocess
import time

from conftest import SOURCE, TARGET, Ferry, committed, create_topic, produce_keys, read_partition, unique, write_config
from support.groups import commit_at, first_key_from
from support.moves import no_go
from support.shared_tables import two_names

PARTITIONS = 3


def keys_of(topic: str, n: int) -> dict[int, list[bytes]]:
    """`n` records in each partition of `topic`, produced; their keys."""
    out = {}
    for p in range(PARTITIONS):
        keys = [f"{topic}-p{p}-{i:03d}" for i in range(n)]
        produce_keys(SOURCE, topic, keys, partition=p)
        out[p] = [k.encode() for k in keys]
    return out


def on_target(topic: str) -> dict[int, list[bytes]]:
    return {p: [r["key"] for r in read_partition(TARGET, topic, p)] for p in range(PARTITIONS)}


def on_target_count(topic: str) -> int:
    try:
        return sum(len(v) for v in on_target(topic).values())
    except Exception:  # the topic not there yet
        return 0


def cut_short_in_its_take(tmp_path, f: Ferry) -> None:
    """`f --once`, killed in its plan after it took the topic over, with
    partition 0's cursor made and the others not."""
    log = tmp_path / f"{f.name}-cut.log"
    cut = f.spawn("--once", log=log, env={"FERRY_FAILPOINT": "stall-making-cursors:120"})
    deadline = time.time() + 120
    while time.time() < deadline and "failpoint" not in log.read_text():
        time.sleep(0.2)
    cut.kill()
    cut.wait()
    assert "took over the target topic" in log.read_text(), log.read_text()


def test_two_replicators_copying_one_topic_the_same_way_at_once_copy_each_record_once(tmp_path):
    topic = unique("one-writer")
    create_topic(SOURCE, topic, PARTITIONS)
    produced = keys_of(topic, 150)
    a, b = two_names(tmp_path, [topic], [topic])

    runs = [f.spawn("--once", log=tmp_path / f"{f.name}.log") for f in (a, b)]
    codes = [r.wait(timeout=600) for r in runs]
    logs = [(tmp_path / f"{f.name}.log").read_text() for f in (a, b)]

    assert on_target(topic) == produced, "every record once on the target, whichever replicator wrote it"
    assert sorted(codes) == [0, 1], f"one writes the topic, the other refuses it: {codes}\n{logs[0]}\n{logs[1]}"
    winner, loser = (a, b) if codes[0] == 0 else (b, a)
    told = logs[codes.index(1)]
    assert f"{winner.name}/source>target" in told and "forget-flow" in told, told

    # The refused replicator's status says why, on each partition.
    rows = [r for r in loser.status() if r["topic"] == topic]
    assert len(rows) == PARTITIONS and all(winner.name in (r.get("last_error") or "") for r in rows), rows

    # Asked again, it still refuses, and writes nothing.
    again = loser.run("--once")
    assert again.returncode == 1 and winner.name in again.stdout + again.stderr, again.stdout + again.stderr
    assert on_target(topic) == produced

    # Once the writer's flow is forgotten, the other takes the topic over
    # where it stopped: nothing copied twice, nothing skipped.
    forgot = winner.forget_flow("source>target")
    assert forgot.returncode == 0, forgot.stdout + forgot.stderr
    more = keys_of(topic, 10)
    taken = loser.run("--once")
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert on_target(topic) == {p: produced[p] + more[p] for p in range(PARTITIONS)}


def test_a_second_replicator_for_other_topics_the_same_way_copies_them(tmp_path):
    first, second, shared = unique("wave-one"), unique("wave-two"), unique("both-waves")
    for t in (first, second, shared):
        create_topic(SOURCE, t, PARTITIONS)
    produced = {t: keys_of(t, 20) for t in (first, second, shared)}
    a, b = two_names(tmp_path, [first, shared], [second, shared])

    ran = a.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    ran = b.run("--once")
    # Its own topic copied; the one the first replicator writes refused.
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert shared in ran.stdout + ran.stderr and a.name in ran.stdout + ran.stderr, ran.stdout + ran.stderr
    for t in (first, second, shared):
        assert on_target(t) == produced[t], t

    # The first replicator's definition lets the shared topic go: the
    # second takes it over where the first stopped.
    _, ri = write_config(tmp_path / "first", [first])
    assert ri == a.ri
    ran = a.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    more = keys_of(shared, 5)
    ran = b.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert on_target(shared) == {p: produced[shared][p] + more[p] for p in range(PARTITIONS)}
    rows = [r for r in b.status() if r["topic"] == shared]
    assert rows and not any(r.get("last_error") for r in rows), rows

    # Taken back by the first: refused, the second writes it now.
    _, ri = write_config(tmp_path / "first", [first, shared])
    ran = a.run("--once")
    assert ran.returncode == 1 and b.name in ran.stdout + ran.stderr, ran.stdout + ran.stderr

    # ...until the second hands it back: the first goes on where the
    # second stopped, not from its own old cursor.
    _, ri = write_config(tmp_path / "second", [second])
    assert ri == b.ri
    ran = b.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    last = keys_of(shared, 5)
    ran = a.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert on_target(shared) == {p: produced[shared][p] + more[p] + last[p] for p in range(PARTITIONS)}


def test_a_replicator_starting_at_the_end_takes_a_topic_over_where_the_writer_stopped(tmp_path):
    """Its cursors were made at the end while refused; the handover moves
    them back to where the writer stopped, records produced meanwhile
    included."""
    topic = unique("one-writer-latest")
    create_topic(SOURCE, topic, PARTITIONS)
    first = keys_of(topic, 10)
    a, b = two_names(tmp_path, [topic], [topic])
    _, ri = write_config(tmp_path / "second", [topic], starting="LATEST")
    assert ri == b.ri
    ran = a.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    between = keys_of(topic, 10)
    ran = b.run("--once")
    assert ran.returncode == 1, ran.stdout + ran.stderr
    forgot = a.forget_flow("source>target")
    assert forgot.returncode == 0, forgot.stdout + forgot.stderr
    last = keys_of(topic, 10)
    ran = b.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert on_target(topic) == {p: first[p] + between[p] + last[p] for p in range(PARTITIONS)}


def test_a_topic_is_handed_over_only_once_no_batch_of_its_writer_copies_it(tmp_path):
    """The writer's definition drops the topic while a replicator of the
    old definition still holds its leases (a Step Functions batch of an
    earlier plan): the plan hands it over only once they are given back."""
    topic = unique("one-writer-leased")
    create_topic(SOURCE, topic, PARTITIONS)
    produced = keys_of(topic, 10)
    a, b = two_names(tmp_path, [topic], [topic])
    old = a.spawn("--round-seconds", "600", log=tmp_path / "old.log")
    try:
        deadline = time.time() + 120
        while time.time() < deadline and on_target_count(topic) < 10 * PARTITIONS:
            time.sleep(0.5)
        assert on_target_count(topic) == 10 * PARTITIONS, (tmp_path / "old.log").read_text()
        leased = [r for r in a.status() if r["topic"] == topic and r.get("lease_owner")]
        assert len(leased) == PARTITIONS, a.status()
        # The new definition, planned beside the running replicator.
        other = unique("one-writer-other")
        create_topic(SOURCE, other, 1)
        _, ri = write_config(tmp_path / "first", [other])
        planned = subprocess.run(a.args("plan"), capture_output=True, text=True, timeout=300)
        assert planned.returncode == 0, planned.stdout + planned.stderr
        ran = b.run("--once")
        assert ran.returncode == 1 and a.name in ran.stdout + ran.stderr, ran.stdout + ran.stderr
        more = keys_of(topic, 5)
        while time.time() < deadline + 60 and on_target_count(topic) < 15 * PARTITIONS:
            time.sleep(0.5)
    finally:
        old.send_signal(signal.SIGINT)
        old.wait(timeout=120)
    assert on_target(topic) == {p: produced[p] + more[p] for p in range(PARTITIONS)}
    planned = subprocess.run(a.args("plan"), capture_output=True, text=True, timeout=300)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    last = keys_of(topic, 5)
    ran = b.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert on_target(topic) == {p: produced[p] + more[p] + last[p] for p in range(PARTITIONS)}


def test_a_dry_run_of_a_second_replicator_names_the_topic_it_would_refuse(tmp_path):
    topic = unique("one-writer-dry")
    create_topic(SOURCE, topic, 1)
    a, b = two_names(tmp_path, [topic], [topic])
    ran = a.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    dry = subprocess.run(b.args("plan", "--dry-run", "--observe-seconds", "1"), capture_output=True, text=True, timeout=300)
    assert topic in dry.stdout + dry.stderr and a.name in dry.stdout + dry.stderr, dry.stdout + dry.stderr


# From breaker helper-88 (the handover's first version): the taker's group
# sync, its backfill, a plan cut short between the take and its end, and a
# writer stalled past its lease.

def test_a_group_is_not_synced_below_where_the_topic_was_taken_over(tmp_path):
    """The records below the handover are the first writer's copies, which
    the taker's offset map does not place: a group committed there is not
    synced (its commit on the target is left as it is), never moved past
    them; once it reads past, it is synced exactly."""
    topic, other, group = unique("one-writer-group"), unique("one-writer-other"), unique("one-writer-app")
    create_topic(SOURCE, topic, 1)
    create_topic(SOURCE, other, 1)
    produce_keys(SOURCE, topic, [f"k{i:03d}" for i in range(100)])
    a, b = two_names(tmp_path, [topic], [topic], groups=[group])
    assert a.run("--once").returncode == 0
    assert b.run("--once").returncode == 1
    commit_at(SOURCE, group, {(topic, 0): (50, "half")})
    write_config(tmp_path / "first", [other], groups=[group])
    assert a.run("--once").returncode == 0
    produce_keys(SOURCE, topic, [f"k{i:03d}" for i in range(100, 110)])
    ran = b.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert len(read_partition(TARGET, topic, 0)) == 110
    assert (topic, 0) not in committed(TARGET, group), "not synced below the handover"
    # `ferry move` says why, and a fix that applies (not "add the group").
    rep = no_go(b, "--group", group, "--to", "target", "--wait", "5")
    assert "took the topic over" in rep["reason"] and "offset 100" in rep["reason"], rep
    assert "read past offset 100" in rep["fix"], rep
    commit_at(SOURCE, group, {(topic, 0): (105, "past")})
    ran = b.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    offset, _ = committed(TARGET, group)[(topic, 0)]
    assert first_key_from(TARGET, topic, 0, offset) == b"k105"
    moved = b.move("--group", group, "--to", "target", "--wait", "30", "--json")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert committed(TARGET, group)[(topic, 0)][0] == offset


def synced_then_handed_over(tmp_path) -> tuple[Ferry, str, str]:
    """The first writer copies 100 records and syncs the group at 50 to the
    target, then hands the topic over; 10 more records. The taker."""
    topic, other, group = unique("one-writer-synced"), unique("one-writer-other"), unique("one-writer-app")
    create_topic(SOURCE, topic, 1)
    create_topic(SOURCE, other, 1)
    produce_keys(SOURCE, topic, [f"k{i:03d}" for i in range(100)])
    commit_at(SOURCE, group, {(topic, 0): (50, "")})
    a, b = two_names(tmp_path, [topic], [topic], groups=[group])
    assert a.run("--once").returncode == 0
    assert committed(TARGET, group)[(topic, 0)][0] == 50
    write_config(tmp_path / "first", [other], groups=[group])
    assert a.run("--once").returncode == 0
    produce_keys(SOURCE, topic, [f"k{i:03d}" for i in range(100, 110)])
    return b, topic, group


def test_a_group_the_first_writer_synced_is_synced_by_the_taker_past_the_handover(tmp_path):
    """The first writer's commit on the target is Ferry's: once the group
    reads past the handover, the taker moves it on, exactly, and `ferry
    move` is GO (breaker helper-91: it was a foreign commit for good,
    blamed on an operator's reset)."""
    b, topic, group = synced_then_handed_over(tmp_path)
    ran = b.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    commit_at(SOURCE, group, {(topic, 0): (105, "")})
    ran = b.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert [r["key"] for r in read_partition(TARGET, topic, 0)] == [f"k{i:03d}".encode() for i in range(110)]
    offset, _ = committed(TARGET, group)[(topic, 0)]
    assert first_key_from(TARGET, topic, 0, offset) == b"k105", b.groups()
    moved = b.move("--group", group, "--to", "target", "--wait", "30", "--json")
    assert moved.returncode == 0, moved.stdout + moved.stderr


def test_an_operators_reset_below_the_first_writers_commit_is_left_to_the_operator(tmp_path):
    b, topic, group = synced_then_handed_over(tmp_path)
    commit_at(TARGET, group, {(topic, 0): (20, "reset")})
    commit_at(SOURCE, group, {(topic, 0): (105, "")})
    ran = b.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert committed(TARGET, group)[(topic, 0)][0] == 20
    [row] = [g for g in b.groups() if g["group"] == group]
    assert row["status"] == "foreign-commit", row


def test_the_taker_may_not_backfill_below_where_it_took_the_topic_over(tmp_path):
    topic = unique("one-writer-backfill")
    create_topic(SOURCE, topic, PARTITIONS)
    produced = keys_of(topic, 20)
    a, b = two_names(tmp_path, [topic], [topic])
    assert a.run("--once").returncode == 0
    assert b.run("--once").returncode == 1
    assert a.forget_flow("source>target").returncode == 0
    assert b.run("--once").returncode == 0
    backfill = subprocess.run(b.args("backfill", "--topics", topic, "--from", "EARLIEST"), capture_output=True, text=True,
                              timeout=300)
    assert backfill.returncode != 0 and "took" in backfill.stdout + backfill.stderr, backfill.stdout + backfill.stderr
    assert b.run("--once").returncode == 0
    assert on_target(topic) == produced


def test_a_taker_forgotten_before_its_plan_finished_hands_the_topic_on_where_the_first_stopped(tmp_path):
    """The taker's plan stops after the take, one partition's cursor made;
    it is forgotten; a third flow takes the topic where the first one
    stopped, for every partition."""
    topic = unique("one-writer-cut")
    create_topic(SOURCE, topic, PARTITIONS)
    produced = keys_of(topic, 10)
    a, b = two_names(tmp_path, [topic], [topic])
    folder = tmp_path / "third"
    folder.mkdir()
    c = Ferry(*write_config(folder, [topic]), name=unique("third"), prefix=a.prefix)
    assert a.run("--once").returncode == 0
    assert a.forget_flow("source>target").returncode == 0
    cut_short_in_its_take(tmp_path, b)
    forgot = b.forget_flow("source>target")
    assert forgot.returncode == 0, forgot.stdout + forgot.stderr
    more = keys_of(topic, 5)
    ran = c.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert on_target(topic) == {p: produced[p] + more[p] for p in range(PARTITIONS)}


def test_a_writer_stalled_past_its_lease_keeps_the_topic_until_its_writes_are_settled(tmp_path):
    """A writer stopped (SIGSTOP) past its lease, its definition dropping
    the topic meanwhile: what it wrote since its last checkpoint is on the
    target, and only its own next holder reconciles it. The topic is not
    handed over until then; when it resumes, it finishes its work."""
    topic = unique("one-writer-stalled")
    create_topic(SOURCE, topic, PARTITIONS)
    produced = keys_of(topic, 10)
    a, b = two_names(tmp_path, [topic], [topic])
    log = tmp_path / "a.log"
    old = a.spawn("--round-seconds", "600", log=log)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and on_target_count(topic) < 10 * PARTITIONS:
            time.sleep(0.5)
        assert b.run("--once").returncode == 1
        old.send_signal(signal.SIGSTOP)
        time.sleep(35)  # past its 30 s lease
        other = unique("one-writer-other")
        create_topic(SOURCE, other, 1)
        write_config(tmp_path / "first", [other])
        planned = subprocess.run(a.args("plan"), capture_output=True, text=True, timeout=300)
        assert planned.returncode == 0, planned.stdout + planned.stderr
        ran = b.run("--once")
        assert ran.returncode == 1 and a.name in ran.stdout + ran.stderr, ran.stdout + ran.stderr
        more = keys_of(topic, 5)
        old.send_signal(signal.SIGCONT)
        while time.time() < deadline + 60 and on_target_count(topic) < 15 * PARTITIONS:
            time.sleep(0.5)
    finally:
        old.send_signal(signal.SIGCONT)
        old.send_signal(signal.SIGINT)
        old.wait(timeout=120)
    assert on_target(topic) == {p: produced[p] + more[p] for p in range(PARTITIONS)}
    assert subprocess.run(a.args("plan"), capture_output=True, text=True, timeout=300).returncode == 0
    last = keys_of(topic, 5)
    ran = b.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert on_target(topic) == {p: produced[p] + more[p] + last[p] for p in range(PARTITIONS)}


# From breaker helper-89 (the handover's second version).

def test_a_writer_that_crashed_after_writing_is_not_forgotten_until_it_settles(tmp_path):
    """Forgetting hands the topic over where the cursors stand; a crashed
    holder's copies past its checkpoint only its own successor finds. So
    the forget waits for one more run of the flow."""
    topic = unique("one-writer-crashed")
    create_topic(SOURCE, topic, PARTITIONS)
    produced = keys_of(topic, 10)
    a, b = two_names(tmp_path, [topic], [topic])
    a.run("--once", env={"FERRY_FAILPOINT": "crash-after-produce:1"})
    assert b.run("--once").returncode == 1
    time.sleep(32)  # the crashed holder's lease runs out
    refused = a.forget_flow("source>target")
    assert refused.returncode != 0 and "settled" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    assert a.run("--once").returncode == 0
    forgot = a.forget_flow("source>target")
    assert forgot.returncode == 0, forgot.stdout + forgot.stderr
    ran = b.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert on_target(topic) == produced


def test_a_taker_cut_short_whose_definition_then_drops_the_topic_hands_on_where_the_first_stopped(tmp_path):
    topic, other = unique("one-writer-cut-drop"), unique("one-writer-other")
    create_topic(SOURCE, topic, PARTITIONS)
    create_topic(SOURCE, other, 1)
    produced = keys_of(topic, 10)
    a, b = two_names(tmp_path, [topic], [topic])
    folder = tmp_path / "third"
    folder.mkdir()
    c = Ferry(*write_config(folder, [topic]), name=unique("third"), prefix=a.prefix)
    assert a.run("--once").returncode == 0
    assert a.forget_flow("source>target").returncode == 0
    cut_short_in_its_take(tmp_path, b)
    write_config(tmp_path / "second", [other])
    assert b.run("--once").returncode == 0
    more = keys_of(topic, 5)
    ran = c.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert on_target(topic) == {p: produced[p] + more[p] for p in range(PARTITIONS)}


def test_a_backfill_in_the_plan_that_takes_the_topic_over_is_refused(tmp_path):
    topic = unique("one-writer-backfill-take")
    create_topic(SOURCE, topic, PARTITIONS)
    first = keys_of(topic, 10)
    a, b = two_names(tmp_path, [topic], [topic])
    write_config(tmp_path / "second", [topic], starting="LATEST")
    assert a.run("--once").returncode == 0
    assert b.run("--once").returncode == 1
    between = keys_of(topic, 10)
    assert a.run("--once").returncode == 0
    assert a.forget_flow("source>target").returncode == 0
    backfill = subprocess.run(b.args("backfill", "--topics", topic, "--from", "EARLIEST"), capture_output=True, text=True,
                              timeout=300)
    assert backfill.returncode != 0 and "takes" in backfill.stdout + backfill.stderr, backfill.stdout + backfill.stderr
    ran = b.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert on_target(topic) == {p: first[p] + between[p] for p in range(PARTITIONS)}


def test_the_flow_back_goes_on_while_its_opposite_flow_is_refused_the_topic(tmp_path):
    """A replicator copying both ways, whose forward flow is refused the
    topic (another replicator writes it): its flow back does not wait for
    the refused flow to map records it never writes."""
    topic, group = unique("one-writer-two-way"), unique("one-writer-app")
    create_topic(SOURCE, topic, 1)
    produce_keys(SOURCE, topic, [f"s{i:03d}" for i in range(20)])
    prefix = unique("ferry-one-writer")
    folders = [tmp_path / n for n in ("first", "second")]
    for f in folders:
        f.mkdir()
    a = Ferry(*write_config(folders[0], [topic]), name=unique("first"), prefix=prefix)
    b = Ferry(*write_config(folders[1], [topic], groups=[group], both_ways=True), name=unique("second"), prefix=prefix)
    assert a.run("--once").returncode == 0
    assert b.run("--once", timeout=300).returncode == 1
    produce_keys(TARGET, topic, [f"t{i:03d}" for i in range(5)])
    ran = b.run("--once", timeout=300)
    assert ran.returncode == 1 and a.name in ran.stdout + ran.stderr, ran.stdout + ran.stderr
    keys = [r["key"] for r in read_partition(SOURCE, topic, 0)]
    assert keys == [f"s{i:03d}".encode() for i in range(20)] + [f"t{i:03d}".encode() for i in range(5)]


def test_a_taker_that_detects_no_new_topics_goes_on_with_a_topic_handed_to_it(tmp_path):
    """The second replicator's first plan ran with DetectAndCopyNewTopics
    false; a topic the first hands over, then added to its definition, was
    left out as not there when it started, and its backfill refused:
    nobody copied it (breaker helper-90)."""
    topic, other_a, other_b = unique("one-writer-nodetect"), unique("one-writer-oa"), unique("one-writer-ob")
    for t in (topic, other_a, other_b):
        create_topic(SOURCE, t, 1)
    produce_keys(SOURCE, topic, [f"k{i:03d}" for i in range(10)])
    prefix = unique("ferry-one-writer")
    folders = [tmp_path / n for n in ("first", "second")]
    for f in folders:
        f.mkdir()
    nodetect = {"DetectAndCopyNewTopics": False}
    a = Ferry(*write_config(folders[0], [topic, other_a]), name=unique("first"), prefix=prefix)
    b = Ferry(*write_config(folders[1], [other_b], topic_replication=nodetect), name=unique("second"), prefix=prefix)
    assert a.run("--once").returncode == 0 and b.run("--once").returncode == 0
    write_config(folders[0], [other_a])
    write_config(folders[1], [other_b, topic], topic_replication=nodetect)
    assert a.run("--once").returncode == 0
    produce_keys(SOURCE, topic, [f"k{i:03d}" for i in range(10, 40)])
    ran = b.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert [r["key"] for r in read_partition(TARGET, topic, 0)] == [f"k{i:03d}".encode() for i in range(40)]


def test_a_topic_handed_back_keeps_an_operators_reset_below_the_latest_commit(tmp_path):
    """The first writer syncs the group to 4, hands the topic to the
    second, which syncs it to 12, and takes it back. An operator resets the
    group on the target to 6: below Ferry's latest commit, it is theirs
    (breaker helper-92: the first writer's own older commit, 4, counted,
    and 6 was overwritten)."""
    topic, group = unique("one-writer-back"), unique("one-writer-app")
    create_topic(SOURCE, topic, 1)
    produce_keys(SOURCE, topic, [f"k{i:02d}" for i in range(10)])
    nothing = unique("one-writer-nothing")
    a, b = two_names(tmp_path, [topic], [nothing], groups=[group])
    folders = {n: tmp_path / n for n in ("first", "second")}

    def run(f: Ferry) -> None:
        ran = f.run("--once")
        assert ran.returncode == 0, ran.stdout + ran.stderr

    run(a)
    commit_at(SOURCE, group, {(topic, 0): (4, "m")})
    run(a)
    write_config(folders["first"], [nothing], groups=[group])
    run(a)
    write_config(folders["second"], [topic], groups=[group])
    produce_keys(SOURCE, topic, [f"k{i:02d}" for i in range(10, 15)])
    run(b)
    commit_at(SOURCE, group, {(topic, 0): (12, "m")})
    run(b)
    assert committed(TARGET, group)[(topic, 0)][0] == 12
    write_config(folders["second"], [nothing], groups=[group])
    run(b)
    write_config(folders["first"], [topic], groups=[group])
    produce_keys(SOURCE, topic, [f"k{i:02d}" for i in range(15, 20)])
    run(a)
    assert [r["key"] for r in read_partition(TARGET, topic, 0)] == [f"k{i:02d}".encode() for i in range(20)]
    commit_at(TARGET, group, {(topic, 0): (6, "reset")})
    commit_at(SOURCE, group, {(topic, 0): (17, "m")})
    run(a)
    assert committed(TARGET, group)[(topic, 0)] == (6, "reset")

