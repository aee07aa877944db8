"""Consumer-group offset sync (invariants 5 and 6): a committed offset on the
source becomes, on the target, the offset of the same record, exactly, with
its metadata; a group with members on the target is never written; a group
is never moved backwards."""

import json
import signal
import subprocess
import time

from confluent_kafka import Consumer, TopicPartition

from conftest import SOURCE, TARGET, Ferry, committed, create_topic, dynamo, produce_keys, producer, read_partition, unique, write_config
from support.groups import commit_at, first_key_from


def fill_with_gaps(topic: str, partitions: int) -> None:
    """Plain records, committed and aborted transactions: the source log has
    offsets (markers, aborted records) that are never replicated."""
    plain = producer(SOURCE)
    tx = producer(SOURCE, **{"transactional.id": unique("tx"), "enable.idempotence": True})
    tx.init_transactions(30)
    for round_ in range(6):
        for p in range(partitions):
            for i in range(5):
                plain.produce(topic, partition=p, key=f"plain-{round_}-{p}-{i}".encode(), value=b"v")
        assert plain.flush(30) == 0
        tx.begin_transaction()
        for p in range(partitions):
            for i in range(3):
                tx.produce(topic, partition=p, key=f"tx-{round_}-{p}-{i}".encode(), value=b"v")
        if round_ % 2:
            tx.abort_transaction(30)
        else:
            tx.commit_transaction(30)


def test_committed_offsets_translate_to_the_same_record(tmp_path):
    topic = unique("grp-exact")
    create_topic(SOURCE, topic, 2)
    create_topic(TARGET, topic, 2)
    # Records already on the target shift every target offset.
    p = producer(TARGET)
    for part in range(2):
        for i in range(7 + part):
            p.produce(topic, partition=part, key=f"target-native-{i}".encode(), value=b"t")
    assert p.flush(30) == 0
    fill_with_gaps(topic, 2)
    group = unique("orders-app")
    source_rows = {part: read_partition(SOURCE, topic, part) for part in range(2)}
    # Commit at a plain record, at a transactional one, and at the end.
    picks = {0: source_rows[0][13]["offset"], 1: source_rows[1][-1]["offset"] + 1}
    # An offset that points at a gap (a marker or an aborted record) maps to
    # the next replicated record.
    all_offsets = {r["offset"] for r in source_rows[0]}
    gap = next(o for o in range(source_rows[0][0]["offset"], source_rows[0][-1]["offset"]) if o not in all_offsets)
    commit_at(SOURCE, group, {(topic, 0): (picks[0], "meta-p0"), (topic, 1): (picks[1], "meta-p1")})

    kc, ri = write_config(tmp_path, [topic], groups=[group])
    ferry = Ferry(kc, ri)
    res = ferry.run("--once")
    assert res.returncode == 0, res.stdout + res.stderr
    on_target = committed(TARGET, group)
    # Partition 0: the same record, found by its key on the target.
    key_at_pick = next(r["key"] for r in source_rows[0] if r["offset"] == picks[0])
    t_off, meta = on_target[(topic, 0)]
    assert meta == "meta-p0"
    assert first_key_from(TARGET, topic, 0, t_off) == key_at_pick
    # Partition 1: the source end maps to the target end.
    t_end = read_partition(TARGET, topic, 1)[-1]["offset"] + 1
    assert on_target[(topic, 1)] == (t_end, "meta-p1")
    rows = {(g["topic"], g["partition"]): g for g in ferry.groups() if g["group"] == group}
    assert rows[(topic, 0)]["status"] == "synced" and rows[(topic, 0)]["exact"] is True
    assert rows[(topic, 0)]["translated_offset"] == t_off

    # A second group committed at a gap (a marker or an aborted record):
    # it maps to the next replicated record.
    group2 = unique("at-gap")
    commit_at(SOURCE, group2, {(topic, 0): (gap, "meta-gap")})
    # Moving the first group back on the source never moves it back on the target.
    commit_at(SOURCE, group, {(topic, 0): (source_rows[0][2]["offset"], "meta-back")})
    kc, ri = write_config(tmp_path, [topic], groups=[group, group2])
    ferry2 = Ferry(kc, ri, name=ferry.name, prefix=ferry.prefix)
    assert ferry2.run("--once").returncode == 0
    next_key = next(r["key"] for r in source_rows[0] if r["offset"] > gap)
    t_off, meta = committed(TARGET, group2)[(topic, 0)]
    assert (first_key_from(TARGET, topic, 0, t_off), meta) == (next_key, "meta-gap")
    assert committed(TARGET, group)[(topic, 0)] == on_target[(topic, 0)]
    statuses = {g["group"]: g["status"] for g in ferry2.groups() if g["partition"] == 0}
    assert statuses == {group: "target-ahead", group2: "synced"}


def one_partition_topic(prefix: str, records: int) -> str:
    """A new source topic of one partition holding `records` records."""
    topic = unique(prefix)
    create_topic(SOURCE, topic, 1)
    p = producer(SOURCE)
    for i in range(records):
        p.produce(topic, partition=0, key=f"k{i}".encode(), value=b"v")
    assert p.flush(30) == 0
    return topic


def a_group_synced_at(tmp_path, name: str, at: int, *args: str, env: dict | None = None):
    """A new topic of 100 records (`grp-<name>`), a group of it at `at` on
    the source, and a Ferry of the two that ran `--once` with `args` and
    `env`: the topic, the group, the Ferry and that run."""
    topic = one_partition_topic(f"grp-{name}", 100)
    group = unique(f"{name}-app")
    commit_at(SOURCE, group, {(topic, 0): (at, "src")})
    ferry = Ferry(*write_config(tmp_path, [topic], groups=[group]))
    return topic, group, ferry, ferry.run("--once", *args, env=env)


def test_a_group_with_members_on_the_target_is_never_written(tmp_path):
    topic = one_partition_topic("grp-active", 100)
    group = unique("busy")
    commit_at(SOURCE, group, {(topic, 0): (60, "src")})
    kc, ri = write_config(tmp_path, [topic], groups=[group])
    ferry = Ferry(kc, ri)
    assert ferry.run("--once").returncode == 0  # creates the target topic, syncs 60
    assert committed(TARGET, group)[(topic, 0)] == (60, "src")

    # A member joins on the target and commits 10 there.
    member = Consumer({"bootstrap.servers": TARGET, "group.id": group, "enable.auto.commit": False,
                       "auto.offset.reset": "earliest", "session.timeout.ms": 30000})
    member.subscribe([topic])
    deadline = time.time() + 30
    while not member.assignment() and time.time() < deadline:
        member.poll(0.5)
    assert member.assignment(), "the member never joined"
    member.commit(offsets=[TopicPartition(topic, 0, 10, metadata="member")], asynchronous=False)
    try:
        commit_at(SOURCE, group, {(topic, 0): (90, "src-later")})
        assert ferry.run("--once").returncode == 0
        assert committed(TARGET, group)[(topic, 0)] == (10, "member")
        [row] = [g for g in ferry.groups() if g["group"] == group]
        assert row["status"] == "active-on-target", row
    finally:
        member.close()
    # Once the member is gone, its commit is still not Ferry's: it stays.
    assert ferry.run("--once").returncode == 0
    assert committed(TARGET, group)[(topic, 0)] == (10, "member")
    [row] = [g for g in ferry.groups() if g["group"] == group]
    assert row["status"] == "foreign-commit", row


def test_detect_new_groups_off_keeps_the_groups_of_the_first_sync(tmp_path):
    """DetectAndCopyNewConsumerGroups false: the groups present at the first
    sync are synced from then on; a group that appears later, though it
    matches the filter, is not."""
    topic = one_partition_topic("grp-fixed", 50)
    stem = unique("fixed-app")
    early, late = f"{stem}-early", f"{stem}-late"
    commit_at(SOURCE, early, {(topic, 0): (10, "e")})
    kc, ri = write_config(tmp_path, [topic], groups=[f"{stem}-.*"], group_replication={"DetectAndCopyNewConsumerGroups": False})
    ferry = Ferry(kc, ri)
    res = ferry.run("--once")
    assert res.returncode == 0, res.stdout + res.stderr
    assert committed(TARGET, early)[(topic, 0)] == (10, "e")
    commit_at(SOURCE, late, {(topic, 0): (20, "l")})
    commit_at(SOURCE, early, {(topic, 0): (30, "e2")})
    res = ferry.run("--once")
    assert res.returncode == 0, res.stdout + res.stderr
    assert committed(TARGET, early)[(topic, 0)] == (30, "e2"), "a known group keeps being synced"
    assert committed(TARGET, late) == {}, "a group that appeared after the first sync is not"


def test_offset_sync_off_writes_no_group_on_the_target(tmp_path):
    """SynchroniseConsumerGroupOffsets false: records replicate, no group
    offset is committed on the target."""
    topic = one_partition_topic("grp-nosync", 20)
    group = unique("nosync-app")
    commit_at(SOURCE, group, {(topic, 0): (15, "")})
    kc, ri = write_config(tmp_path, [topic], groups=[group], group_replication={"SynchroniseConsumerGroupOffsets": False})
    ferry = Ferry(kc, ri)
    res = ferry.run("--once")
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(read_partition(TARGET, topic, 0)) == 20
    assert committed(TARGET, group) == {}
    # Groups Ferry does not sync are not readiness criteria.
    ready = subprocess.run(ferry.args("readiness", "--json"), capture_output=True, text=True, timeout=120)
    assert ready.returncode == 0, ready.stdout + ready.stderr
    metrics = {c["metric"] for c in json.loads(ready.stdout)["criteria"]}
    assert "MessageLag" in metrics and not metrics & {"ConsumerGroupCount", "SumOffsetLag"}, metrics


def test_a_translation_through_the_opposite_flows_records_is_exact_only_once_they_are_mapped(tmp_path):
    """ENHANCED, both ways: a group that read, on the source, records the
    target→source flow wrote is translated through that flow's offset map.
    The map holds them only once that flow checkpoints, a while after it
    wrote them: until then no translation may claim to be exact, and then
    the group lands exactly on the same record."""
    topic = unique("grp-reverse")
    for b in (SOURCE, TARGET):
        create_topic(b, topic, 1)
    group = unique("reverse-app")
    kc, ri = write_config(tmp_path, [topic], both_ways=True, groups=[group], group_mode="ENHANCED")
    ferry = Ferry(kc, ri)

    def synced_rows() -> list[dict]:
        return [g for g in ferry.groups() if g["flow"] == "source>target" and g["group"] == group]

    def produce_on_target(prefix: str) -> None:
        p = producer(TARGET, **{"enable.idempotence": True})
        for i in range(50):
            p.produce(topic, partition=0, key=f"{prefix}-{i}".encode(), value=b"v")
        assert p.flush(30) == 0

    produce_on_target("first")
    res = ferry.run("--once")  # target→source copies and checkpoints them
    assert res.returncode == 0, res.stdout + res.stderr

    # Checkpoints 20 s apart (and rounds and leases longer than the test):
    # the next records target→source writes stay out of its map that long.
    proc = ferry.spawn("--checkpoint-seconds", "20", "--group-sync-seconds", "1", "--round-seconds", "120",
                       "--lease-ms", "120000", log=tmp_path / "ferry.log")
    try:
        produce_on_target("second")
        deadline = time.time() + 60
        while len(read_partition(SOURCE, topic, 0)) < 100:
            assert time.time() < deadline, "target→source did not copy the second records"
            time.sleep(0.5)
        # The application read all 100 on the source (the last 50 are in no map yet).
        commit_at(SOURCE, group, {(topic, 0): (100, "app")})
        claims = []
        for _ in range(12):
            rows = synced_rows()
            claims += [r["translated_offset"] for r in rows if r["exact"]]
            time.sleep(0.5)
        assert all(c == 100 for c in claims), f"claimed exact at another record than offset 100: {claims}"

        deadline = time.time() + 90
        while True:
            rows = synced_rows()
            if rows and rows[0]["exact"] and committed(TARGET, group).get((topic, 0), (None,))[0] == 100:
                break
            assert time.time() < deadline, f"never synced exactly: {rows} {committed(TARGET, group)}"
            time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(30)
    assert rows[0]["translated_offset"] == 100 and committed(TARGET, group)[(topic, 0)] == (100, "app")


def test_a_target_commit_ferry_did_not_write_is_never_overwritten(tmp_path):
    """Invariant 6: an operator resets the group on the target (or a consumer
    that commits without joining, such as one using assign(), commits
    there). Ferry did not write that commit, so it never overwrites it,
    even when the source's translation is ahead of it, and `ferry status`
    says why. Once the operator deletes the group's offsets on the target,
    Ferry syncs it again."""
    topic, group, ferry, first = a_group_synced_at(tmp_path, "reset", 60)
    assert first.returncode == 0, first.stdout + first.stderr
    assert committed(TARGET, group)[(topic, 0)] == (60, "src")

    # The operator's reset on the target, from outside the group.
    commit_at(TARGET, group, {(topic, 0): (10, "operator")})
    commit_at(SOURCE, group, {(topic, 0): (90, "src-later")})
    res = ferry.run("--once")
    assert res.returncode == 0, res.stdout + res.stderr
    assert committed(TARGET, group)[(topic, 0)] == (10, "operator"), "Ferry overwrote a commit it did not write"
    [row] = [g for g in ferry.groups() if g["group"] == group]
    assert row["status"] == "foreign-commit", row
    assert "10" in row["detail"] and "--delete-offsets" in row["detail"], row

    # A group whose first commit on the target was never Ferry's is left alone too.
    group2 = unique("preexisting")
    commit_at(TARGET, group2, {(topic, 0): (5, "theirs")})
    commit_at(SOURCE, group2, {(topic, 0): (50, "src")})
    kc, ri = write_config(tmp_path, [topic], groups=[group, group2])
    ferry = Ferry(kc, ri, name=ferry.name, prefix=ferry.prefix)
    assert ferry.run("--once").returncode == 0
    assert committed(TARGET, group2)[(topic, 0)] == (5, "theirs")

    # The operator deletes the group's offsets on the target, as the detail says: Ferry syncs again.
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": TARGET})
    for g in (group, group2):
        admin.delete_consumer_groups([g])[g].result(timeout=30)
    assert ferry.run("--once").returncode == 0
    assert committed(TARGET, group)[(topic, 0)] == (90, "src-later")
    assert committed(TARGET, group2)[(topic, 0)] == (50, "src")


# A sync that dies leaves its lease on the group for this long (two minutes
# by default): these tests shorten it and wait it out.
LEASE_S = 2.5
LEASE = ("--group-sync-lease-ms", "2000")


def a_sync_died_after_committing_40(tmp_path, name: str, lease: tuple[str, ...] = LEASE) -> tuple[str, str, Ferry]:
    """A new topic of 100 records, a group at 40 on the source, and a sync
    (with `lease`) that died after committing it on the target, before it
    recorded the sync: the topic, the group and the Ferry."""
    topic, group, ferry, died = a_group_synced_at(tmp_path, name, 40, *lease,
                                                  env={"FERRY_FAILPOINT": "crash-after-group-commit"})
    assert died.returncode != 0 and "crash-after-group-commit reached" in died.stderr, died.stdout + died.stderr
    return topic, group, ferry


def test_a_sync_that_dies_after_its_commit_is_still_ferrys_next_time(tmp_path):
    """SyncGroups commits a group's translation on the target, then dies
    before it records the sync (the function timed out, or crashed): the
    next sync must know that commit as Ferry's own and go on syncing the
    group, not take it for an operator's reset and leave the group behind
    for good (`foreign-commit`)."""
    topic, group, ferry = a_sync_died_after_committing_40(tmp_path, "diesync")
    time.sleep(LEASE_S)  # the dead sync's lease on the group ends
    assert committed(TARGET, group)[(topic, 0)] == (40, "src")
    commit_at(SOURCE, group, {(topic, 0): (70, "src-later")})
    res = ferry.run("--once", *LEASE)
    assert res.returncode == 0, res.stdout + res.stderr
    [row] = [g for g in ferry.groups() if g["group"] == group]
    assert committed(TARGET, group)[(topic, 0)] == (70, "src-later"), row
    assert row["status"] == "synced", row


def test_a_run_once_after_a_sync_that_died_syncs_the_group_it_held(tmp_path):
    """A sync dies holding a group's lease (a `ferry run` killed); the
    group then commits further on the source, and `ferry run --once` runs
    at once. Its last sync found the group held and exited 0 without
    syncing it: the target kept the old translation (on 80d99b4). It now
    tries the group again until the holder lets go (here its lease, longer
    than the run's own, ends), and exits 0 with the group synced; a group
    still held after --stall-seconds fails the run, naming it."""
    topic, group, ferry = a_sync_died_after_committing_40(tmp_path, "heldsync", lease=("--group-sync-lease-ms", "30000"))
    commit_at(SOURCE, group, {(topic, 0): (70, "src-later")})
    short = ferry.run("--once", *LEASE, "--stall-seconds", "1", env={"RUST_LOG": "warn,ferry_engine=info"})
    assert short.returncode == 1 and "groups were held by another sync" in short.stderr, short.stdout + short.stderr
    assert f"this run: {group} (its lease ends in" in short.stderr, short.stderr
    assert committed(TARGET, group)[(topic, 0)] == (40, "src")
    started = time.time()
    res = ferry.run("--once", *LEASE, env={"RUST_LOG": "warn,ferry_engine=info"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert committed(TARGET, group)[(topic, 0)] == (70, "src-later"), res.stderr
    assert "syncing them again until it lets go" in res.stderr, res.stderr
    assert time.time() - started < 60


def test_a_sync_that_dies_after_its_commit_stays_ferrys_after_the_group_goes_on(tmp_path):
    """The same crash, then the group runs on the target before the next
    sync and commits past Ferry's unrecorded commit (a cutover), and moves
    back: that commit is the group going on from Ferry's, as for a recorded
    one, so the group is synced again once it commits further on the
    source, not left as `foreign-commit` for good."""
    topic, group, ferry = a_sync_died_after_committing_40(tmp_path, "diesync2")
    time.sleep(LEASE_S)  # the dead sync's lease on the group ends
    [row] = [g for g in ferry.groups() if g["group"] == group]
    assert row["status"] == "failed" and "stopped while committing 40" in row["detail"], row
    commit_at(TARGET, group, {(topic, 0): (55, "consumed-on-target")})
    res = ferry.run("--once", *LEASE)
    assert res.returncode == 0, res.stdout + res.stderr
    assert committed(TARGET, group)[(topic, 0)] == (55, "consumed-on-target"), "the translation is behind: never moved back"
    commit_at(SOURCE, group, {(topic, 0): (90, "back-on-source")})
    res = ferry.run("--once", *LEASE)
    assert res.returncode == 0, res.stdout + res.stderr
    [row] = [g for g in ferry.groups() if g["group"] == group]
    assert committed(TARGET, group)[(topic, 0)] == (90, "back-on-source"), row
    assert row["status"] == "synced", row


def test_a_translation_the_target_no_longer_holds_moves_to_its_log_start_and_is_not_exact(tmp_path):
    """The target deleted records a synced group had not read yet (its
    retention shorter than the group's lag, or DeleteRecords there). The
    group's commit moves up to the target's log start, never left below it
    (a consumer there would get "offset out of range", and
    auto.offset.reset=latest skip to the end), and the sync is not called
    exact, since records the group never read are not on the target. From
    an adversarial review: on 289db4a an unchanged source commit kept its
    earlier exact translation (50, below the log start 80, "up-to-date",
    exact), and a changed one was moved to 80 but still called exact."""
    from confluent_kafka.admin import AdminClient

    topic = unique("grp-logstart")
    create_topic(SOURCE, topic, 1)
    produce_keys(SOURCE, topic, [f"k{i:03d}" for i in range(100)])
    group = unique("grp-logstart-app")
    commit_at(SOURCE, group, {(topic, 0): (50, "m")})
    ferry = Ferry(*write_config(tmp_path, [topic], groups=[group]))
    for _ in range(2):  # the second sync finds it exact and unchanged
        res = ferry.run("--once")
        assert res.returncode == 0, res.stdout + res.stderr
    assert committed(TARGET, group)[(topic, 0)] == (50, "m")
    [row] = [g for g in ferry.groups() if g["group"] == group]
    assert row["exact"] is True, row

    admin = AdminClient({"bootstrap.servers": TARGET})
    for f in admin.delete_records([TopicPartition(topic, 0, 80)]).values():
        f.result(timeout=30)
    for source_commit in (50, 51):  # unchanged on the source, then moved on
        commit_at(SOURCE, group, {(topic, 0): (source_commit, "m")})
        res = ferry.run("--once")
        assert res.returncode == 0, res.stdout + res.stderr
        assert committed(TARGET, group)[(topic, 0)] == (80, "m"), source_commit
        [row] = [g for g in ferry.groups() if g["group"] == group]
        assert row["exact"] is False and row["translated_offset"] == 80, row
        assert "no longer holds offsets 50..79" in row["detail"] or "no longer holds offsets 51..79" in row["detail"], row
    # The first record the group reads there is the target's first.
    assert first_key_from(TARGET, topic, 0, 80) == b"k080"


def sync_lease_until(ferry: Ferry, group: str) -> int | None:
    """When the lease on syncing `group` ends (ms since the epoch), if a
    sync holds one: the item Ferry keeps while it syncs the group."""
    items = dynamo().scan(TableName=f"{ferry.prefix}-groups",
                          FilterExpression="partition_group = :sk",
                          ExpressionAttributeValues={":sk": {"S": f"#sync-lease#{group}"}})["Items"]
    return max((int(i["lease_until_ms"]["N"]) for i in items), default=None)


def a_run_syncing_a_group(tmp_path, name: str, stall_ms: int):
    """A group at 40, synced; then at 60 on the source, and a `ferry run`
    whose sync of it stalls `stall_ms` between reading the target and
    committing, returned once that sync holds the group's lease: the
    topic, the group, the Ferry, and the run (its log in ferry.log)."""
    topic, group, ferry, first = a_group_synced_at(tmp_path, name, 40)
    assert first.returncode == 0, first.stdout + first.stderr
    assert committed(TARGET, group)[(topic, 0)] == (40, "src")
    commit_at(SOURCE, group, {(topic, 0): (60, "src-later")})
    runner = ferry.spawn("--round-seconds", "5", "--group-sync-seconds", "1", log=tmp_path / "ferry.log",
                         env={"FERRY_FAILPOINT": f"slow-group-commit:{stall_ms}"})
    deadline = time.time() + 60
    while sync_lease_until(ferry, group) is None:
        if time.time() > deadline:
            runner.kill()
            raise AssertionError((tmp_path / "ferry.log").read_text()[-3000:])
        time.sleep(0.2)
    return topic, group, ferry, runner


def test_ctrl_c_during_a_group_sync_gives_its_lease_back(tmp_path):
    """Ctrl-C on `ferry run` while a group's sync is under way (it has
    read the target and is about to commit): the run cut the sync off as it
    ended, and the group's lease stayed for its whole length (two minutes
    by default), every other sync leaving the group alone meanwhile; a
    `ferry run --once` then waited for it, or exited 1 (found by breaker
    helper-77 on f01333f, switching Ferry versions with Ctrl-C). The sync
    under way now ends, commits and gives its lease back before the run
    exits."""
    topic, group, ferry, runner = a_run_syncing_a_group(tmp_path, "ctrlc", 4000)
    try:
        runner.send_signal(signal.SIGINT)
        rc = runner.wait(60)
    finally:
        if runner.poll() is None:
            runner.kill()
    log = (tmp_path / "ferry.log").read_text()
    assert rc == 130, log[-3000:]
    assert sync_lease_until(ferry, group) is None, log[-3000:]
    assert committed(TARGET, group)[(topic, 0)] == (60, "src-later"), log[-3000:]
    commit_at(SOURCE, group, {(topic, 0): (70, "src-last")})
    res = ferry.run("--once", "--stall-seconds", "5")
    assert res.returncode == 0, res.stdout + res.stderr
    assert committed(TARGET, group)[(topic, 0)] == (70, "src-last")


def test_a_second_ctrl_c_stops_at_once_saying_what_is_left(tmp_path):
    """The group sync under way is stalled (a slow cluster): the first
    Ctrl-C waits for it, saying so, and a second stops the run at once,
    saying that the leases it holds stay until they end (breaker
    helper-78: a second Ctrl-C did nothing)."""
    _, group, ferry, runner = a_run_syncing_a_group(tmp_path, "ctrlc2", 60_000)
    try:
        runner.send_signal(signal.SIGINT)
        time.sleep(4)
        assert runner.poll() is None, (tmp_path / "ferry.log").read_text()[-3000:]
        runner.send_signal(signal.SIGINT)
        started = time.time()
        rc = runner.wait(30)
        took = time.time() - started
    finally:
        if runner.poll() is None:
            runner.kill()
    log = (tmp_path / "ferry.log").read_text()
    assert rc == 130 and took < 5, (took, log[-3000:])
    assert "finishing the group sync under way" in log and "interrupted again; stopping now" in log, log[-3000:]
    assert sync_lease_until(ferry, group) is not None
