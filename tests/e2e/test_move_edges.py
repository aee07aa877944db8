"""`ferry move` at the translation's edges (issue 23): an empty partition,
and, both ways, a commit that must never be carried back over the one it
was copied from.

Both ways, each flow carries the group's commit from its source to its
target. A commit a flow wrote on its target is a copy: the flow back must
not carry it back, or a translation that passed over records (the
target's retention, flows begun past the group's commit) comes back over
the group's own commit, or over an operator's reset, on the cluster the
group never left. These were found by adversarial reviews of the change
(the fourth review on 69203ce, the fifth on 043ce60); each test names what
it failed on.
"""

import json
import time

import pytest

from conftest import SOURCE, TARGET, Ferry, committed, create_topic, dynamo, produce_keys, unique, write_config
from support.groups import commit_at
from support.moves import consume, kafka_tool, no_go, one_topic


def test_an_empty_partition_committed_at_zero_resumes_at_zero(tmp_path):
    """Kafka's Java consumer commits every partition it was assigned, an
    empty one at 0. On 81c9279: NO-GO "nothing replicated" for it, which
    no amount of waiting clears."""
    ferry, topic, group = one_topic(tmp_path, "move-empty", "java-commits-all", 2)
    produce_keys(SOURCE, topic, [f"a-{i}" for i in range(50)], partition=0)
    commit_at(SOURCE, group, {(topic, 0): (50, ""), (topic, 1): (0, "")})
    assert ferry.run("--once").returncode == 0
    p = ferry.move("--group", group, "--to", "target", "--wait", "30", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads(p.stdout)
    assert sorted((r["partition"], r["offset"], r["exact"]) for r in rep["resume"]) == [(0, 50, True), (1, 0, True)], rep
    # Records that arrive in it later are read from the first.
    produce_keys(SOURCE, topic, ["late-0", "late-1"], partition=1)
    assert ferry.run("--once").returncode == 0
    assert sorted(consume(TARGET, topic, group)) == ["late-0", "late-1"]


def delete_records(tmp_path, bootstrap: str, topic: str, offset: int) -> None:
    spec = tmp_path / f"delete-{offset}.json"
    spec.write_text(json.dumps({"version": 1, "partitions": [{"topic": topic, "partition": 0, "offset": offset}]}))
    p = kafka_tool("org.apache.kafka.tools.DeleteRecordsCommand", "--bootstrap-server", bootstrap, "--offset-json-file", str(spec))
    assert p.returncode == 0, p.stdout + p.stderr


def at(bootstrap: str, group: str, topic: str) -> int:
    return committed(bootstrap, group)[(topic, 0)][0]


def a_hundred_records(topic: str, group: str) -> tuple[str, str]:
    """`topic` on both clusters, with a-0..99 on the source."""
    for b in (SOURCE, TARGET):
        create_topic(b, topic, 1)
    produce_keys(SOURCE, topic, [f"a-{i}" for i in range(100)])
    return topic, group


def runs(ferry: Ferry, n: int) -> None:
    """`n` runs of `ferry run --once`, each succeeding."""
    for _ in range(n):
        r = ferry.run("--once")
        assert r.returncode == 0, r.stderr


def both_ways(tmp_path, topic: str, group: str) -> Ferry:
    kc, ri = write_config(tmp_path, [topic], groups=[group], both_ways=True, group_mode="ENHANCED")
    return Ferry(kc, ri)


def lives_on_source_past_a_skip(tmp_path, name: str, args: tuple[str, ...] = ()) -> tuple[Ferry, str, str]:
    """Both ways; the group read a-0..29 on the source and lives there,
    synced exactly (30 on the target); then the target's log start moves
    to 50, and the forward flow commits its not-exact translation there."""
    topic, group = a_hundred_records(unique(name), unique("lives-on-source"))
    ferry = both_ways(tmp_path, topic, group)
    assert ferry.run("--once", *args).returncode == 0
    assert len(consume(SOURCE, topic, group, limit=30)) == 30
    for _ in range(2):
        assert ferry.run("--once", *args).returncode == 0
    assert (at(SOURCE, group, topic), at(TARGET, group, topic)) == (30, 30)
    delete_records(tmp_path, TARGET, topic, 50)
    return ferry, topic, group


@pytest.mark.parametrize("case", ["retention-on-the-target", "flows-began-after-the-commit"])
def test_a_skipping_translation_is_never_carried_back_over_the_groups_own_commit(tmp_path, case):
    """Both ways; the group read a-0..29 on the source (commit 30) and stays
    there. Either the target's retention removed offsets 0..49, or the flows
    began (LATEST) at 100: the forward sync commits on the target past
    records the group never read (not exact). On 69203ce and on b398283 the
    flow back carried that commit over the group's own 30 (to 50, or 100),
    and the group, restarted where it lives, skipped a-30.. there; the move
    said GO, exact. On 043ce60 (which recognised the forward flow's copy
    only while the source commit was still the one it was made from) the
    same skip came back once the group read on where it lives (a-30..39):
    40 became 50 or 100."""
    topic, group = a_hundred_records(unique("move-carry"), unique("lives-on-source"))
    latest = case == "flows-began-after-the-commit"
    if latest:
        assert len(consume(SOURCE, topic, group, limit=30)) == 30
    kc, ri = write_config(tmp_path, [topic], groups=[group], both_ways=True, group_mode="ENHANCED",
                          starting="LATEST" if latest else "EARLIEST")
    ferry = Ferry(kc, ri)
    assert ferry.run("--once").returncode == 0
    if latest:
        produce_keys(SOURCE, topic, [f"b-{i}" for i in range(20)])
    else:
        assert ferry.run("--once").returncode == 0
        assert len(consume(SOURCE, topic, group, limit=30)) == 30
        delete_records(tmp_path, TARGET, topic, 50)
    runs(ferry, 3)
    assert at(SOURCE, group, topic) == 30, "the group's own commit stays where it lives"
    rep = no_go(ferry, "--group", group, "--to", "target", "--wait", "30", "--allow-redelivery")
    assert "would skip them" in rep["reason"], rep
    # It reads on where it lives; the forward translation (and so the
    # target's commit) stays where it was.
    assert consume(SOURCE, topic, group, limit=10) == [f"a-{i}" for i in range(30, 40)]
    runs(ferry, 3)
    assert at(SOURCE, group, topic) == 40, "the group's own commit stays where it lives"
    rep = no_go(ferry, "--group", group, "--to", "target", "--wait", "30", "--allow-redelivery")
    assert "would skip them" in rep["reason"], rep
    assert consume(SOURCE, topic, group, limit=1) == ["a-40"]


def test_an_operators_reset_where_the_group_lives_is_kept(tmp_path):
    """The group lives on the source at 30; the target holds the forward
    flow's not-exact 50. The operator resets the group on the source to 10
    to read again. On 043ce60 the flow back took the source's 10 for the
    commit Ferry had carried and put 50 over the reset."""
    ferry, topic, group = lives_on_source_past_a_skip(tmp_path, "move-reset")
    runs(ferry, 2)
    commit_at(SOURCE, group, {(topic, 0): (10, "operator")})
    runs(ferry, 3)
    assert at(SOURCE, group, topic) == 10
    assert consume(SOURCE, topic, group, limit=1) == ["a-10"]


def test_an_operators_reset_above_an_old_write_of_the_flow_back_is_kept(tmp_path):
    """Exact both ways. The group first read a-0..4 on the target (the flow
    back wrote 5 on the source), then lives on the source and reads to 30
    (the forward flow writes 30 on the target); the operator resets it on
    the source to 10. On b398283 and 043ce60, 10 being at or past the flow
    back's old 5, the flow back took it for its own and put 30 over it."""
    topic, group = a_hundred_records(unique("move-reset2"), unique("lived-on-target"))
    ferry = both_ways(tmp_path, topic, group)
    assert ferry.run("--once").returncode == 0
    assert consume(TARGET, topic, group, limit=5) == [f"a-{i}" for i in range(5)]
    runs(ferry, 2)
    assert at(SOURCE, group, topic) == 5
    assert consume(SOURCE, topic, group, limit=25) == [f"a-{i}" for i in range(5, 30)]
    runs(ferry, 2)
    assert at(TARGET, group, topic) == 30
    commit_at(SOURCE, group, {(topic, 0): (10, "operator")})
    runs(ferry, 3)
    assert at(SOURCE, group, topic) == 10


def test_a_sync_that_died_after_its_commit_never_has_it_carried_back(tmp_path):
    """The forward sync commits its not-exact 50 on the target and dies
    before recording it (a Lambda timing out). On 043ce60 the next sync
    adopted the commit without what it was made from, and the flow back
    carried 50 over the group's own 30."""
    lease = ("--group-sync-lease-ms", "2000")
    ferry, topic, group = lives_on_source_past_a_skip(tmp_path, "move-died", lease)
    died = ferry.run("--once", *lease, env={"FERRY_FAILPOINT": "crash-after-group-commit"})
    assert died.returncode != 0 and "crash-after-group-commit reached" in died.stderr, died.stdout + died.stderr
    assert at(TARGET, group, topic) == 50
    time.sleep(2.5)  # the dead sync's lease
    for _ in range(3):
        r = ferry.run("--once", *lease)
        assert r.returncode == 0, r.stderr
    assert at(SOURCE, group, topic) == 30
    assert consume(SOURCE, topic, group, limit=1) == ["a-30"]


def test_a_flow_back_on_another_replicator_never_carries_back_a_commit_made_during_its_sync(tmp_path):
    """MSK Replicator's rollback topology: one replicator each way on the
    same tables. The flow back's sync reads the forward flow's items when
    it starts, then takes its groups in turn (slowed here); the forward
    flow commits its not-exact 50 in between. On 043ce60 the flow back
    judged the target's 50 by the item it read before that commit and
    carried it over the group's own 30."""
    topic, group = a_hundred_records(unique("move-race"), unique("lives-on-source"))
    fwd, back = two_replicators(tmp_path, topic, group, "ferry-race")
    for f in (fwd, back):
        assert f.run("--once").returncode == 0
    assert len(consume(SOURCE, topic, group, limit=30)) == 30
    for f in (fwd, back, fwd, back):
        assert f.run("--once").returncode == 0
    assert (at(SOURCE, group, topic), at(TARGET, group, topic)) == (30, 30)
    delete_records(tmp_path, TARGET, topic, 50)
    slow = back.spawn("--once", log=tmp_path / "back.log", env={"FERRY_FAILPOINT": "slow-group-sync:20000"})
    try:
        time.sleep(7)
        assert fwd.run("--once").returncode == 0
        assert at(TARGET, group, topic) == 50
        assert slow.wait(120) == 0
    finally:
        if slow.poll() is None:
            slow.kill()
    for f in (fwd, back, fwd, back):
        assert f.run("--once").returncode == 0
    assert at(SOURCE, group, topic) == 30
    assert consume(SOURCE, topic, group, limit=1) == ["a-30"]


def test_a_flow_back_added_later_never_carries_back_a_skipping_commit(tmp_path):
    """One way first: the forward flow commits its not-exact 50 on the
    target while the group lives on the source at 30. The operator then
    adds the flow back (both ways, for the rollback), on the same
    replicator and tables: it carries nothing back over the group's 30."""
    topic, group = a_hundred_records(unique("move-added"), unique("lives-on-source"))
    one = tmp_path / "one-way"
    one.mkdir()
    kc, ri = write_config(one, [topic], groups=[group], group_mode="ENHANCED")
    first = Ferry(kc, ri)
    assert first.run("--once").returncode == 0
    assert len(consume(SOURCE, topic, group, limit=30)) == 30
    assert first.run("--once").returncode == 0
    delete_records(tmp_path, TARGET, topic, 50)
    assert first.run("--once").returncode == 0
    assert (at(SOURCE, group, topic), at(TARGET, group, topic)) == (30, 50)
    both = tmp_path / "both-ways"
    both.mkdir()
    kc, ri = write_config(both, [topic], groups=[group], both_ways=True, group_mode="ENHANCED")
    ferry = Ferry(kc, ri, name=first.name, prefix=first.prefix)
    runs(ferry, 3)
    assert at(SOURCE, group, topic) == 30
    assert consume(SOURCE, topic, group, limit=1) == ["a-30"]


def test_a_reset_back_to_an_old_write_of_the_flow_back_is_not_taken_for_a_copy(tmp_path):
    """Exact both ways. The group reads a-0..9 on the target (the flow back
    writes 10 on the source), moves to the source, reads a-10..29 (the
    forward flow writes 30 on the target); the operator resets it on the
    source to 10. On 6292d45 that 10, equal to the flow back's old write,
    was taken for its copy: the move to the target said GO, exact, at 30,
    past a-10..29. The forward flow wrote after it: the reset is the
    group's own, and the target is ahead of it."""
    topic, group = a_hundred_records(unique("move-reset3"), unique("reset-to-old"))
    ferry = both_ways(tmp_path, topic, group)
    assert ferry.run("--once").returncode == 0
    assert consume(TARGET, topic, group, limit=10) == [f"a-{i}" for i in range(10)]
    runs(ferry, 2)
    p = ferry.move("--group", group, "--to", "source", "--wait", "30", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    assert consume(SOURCE, topic, group, limit=20) == [f"a-{i}" for i in range(10, 30)]
    runs(ferry, 2)
    assert at(TARGET, group, topic) == 30
    commit_at(SOURCE, group, {(topic, 0): (10, "operator")})
    runs(ferry, 3)
    assert at(SOURCE, group, topic) == 10
    rep = no_go(ferry, "--group", group, "--to", "target", "--wait", "30")
    assert rep["resume"] == [] or all(not (r["offset"] == 30 and r["exact"]) for r in rep["resume"]), rep


def test_a_commit_that_expired_where_the_group_lives_is_not_replaced_by_the_copy(tmp_path):
    """The group lives on the source at 30; the target holds the forward
    flow's not-exact 50. The group idles past offsets.retention: its commit
    on the source expires (--delete-offsets here). On 6292d45 the flow
    back, finding no commit on the source, carried the copy back: 50, a
    skip of a-30..49 where the group lives, then called exact."""
    ferry, topic, group = lives_on_source_past_a_skip(tmp_path, "move-expired")
    runs(ferry, 2)
    assert at(TARGET, group, topic) == 50
    p = kafka_tool("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand", "--bootstrap-server", SOURCE,
                   "--group", group, "--delete-offsets", "--topic", topic)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (topic, 0) not in committed(SOURCE, group)
    runs(ferry, 3)
    assert (topic, 0) not in committed(SOURCE, group), "the copy came back where the group lives"
    no_go(ferry, "--group", group, "--to", "target", "--wait", "30", "--allow-redelivery")



def two_replicators(tmp_path, topic: str, group: str, prefix_name: str) -> tuple[Ferry, Ferry]:
    """MSK Replicator's rollback topology: one replicator each way, on the
    same state tables; returns (forward, back)."""
    prefix = unique(prefix_name)
    replicators = []
    for name, flow in (("forward", 0), ("back", 1)):
        folder = tmp_path / name
        folder.mkdir()
        kc, ri = write_config(folder, [topic], both_ways=True, groups=[group], group_mode="ENHANCED")
        ri.write_text(json.dumps([json.loads(ri.read_text())[flow]], indent=2))
        replicators.append(Ferry(kc, ri, name=unique(name), prefix=prefix))
    return replicators[0], replicators[1]


def age_registration(ferry: Ferry, flow: str, days: int) -> None:
    """Make `flow`'s registration by cluster ids look `days` old, as if its
    replicator's last plan ran then."""
    ddb, key = dynamo(), f"{ferry.name}/{flow}"
    items = ddb.scan(TableName=f"{ferry.prefix}-cursors", FilterExpression="#p = :k AND attribute_exists(registered_ms)",
                     ExpressionAttributeNames={"#p": "partition"}, ExpressionAttributeValues={":k": {"S": key}})["Items"]
    assert len(items) == 1, items
    then = int(time.time() * 1000) - days * 24 * 3600 * 1000
    ddb.update_item(TableName=f"{ferry.prefix}-cursors", Key={"flow": items[0]["flow"], "partition": items[0]["partition"]},
                    UpdateExpression="SET registered_ms = :t", ExpressionAttributeValues={":t": {"N": str(then)}})


def migrated(tmp_path, name: str) -> tuple[str, str, Ferry, Ferry]:
    """The rollback topology at the migration's end: the group read a-0..29
    on the source, moved to the target, read a-30..59 there (the forward
    flow's copies), and the application produced b-0..4 there."""
    topic, group = a_hundred_records(unique(name), unique("migrated"))
    fwd, back = two_replicators(tmp_path, topic, group, "ferry-" + name)
    for f in (fwd, back):
        runs(f, 1)
    assert len(consume(SOURCE, topic, group, limit=30)) == 30
    for f in (fwd, back, fwd, back):
        runs(f, 1)
    p = fwd.move("--group", group, "--to", "target", "--wait", "30", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    assert consume(TARGET, topic, group, limit=30) == [f"a-{i}" for i in range(30, 60)]
    produce_keys(TARGET, topic, [f"b-{i}" for i in range(5)])
    return topic, group, fwd, back


def test_a_forward_flow_retired_after_the_migration_keeps_the_rollback_exact(tmp_path):
    """The migration's end in MSK Replicator's rollback topology: the group
    moved to the target, read a-30..59 there (the forward flow's copies) and
    the application produces there (b-0..4); the forward direction is
    retired, the flow back stays for a rollback. On 51b08a9 `ferry
    forget-flow` deleted the forward flow's state, and with it the map that
    places its copies: the flow back translated the group's 60 to the copy
    of b-0 (100), and the rollback said GO, exact, and skipped a-60..99 (the
    third review). Now forget-flow refuses, and the forward replicator is
    simply no longer run: a week later (its registration aged here) the flow
    back still translates through its state, exactly. On 51b08a9 the aged
    registration alone made the rollback skip the same way."""
    topic, group, fwd, back = migrated(tmp_path, "move-retired")
    refused = fwd.forget_flow("source>target")
    assert refused.returncode != 0, refused.stdout + refused.stderr
    said = refused.stderr
    assert "Nothing was deleted" in said and back.name in said and "--break-opposite-translation" in said, said
    age_registration(fwd, "source>target", 8)
    runs(back, 3)
    rep = json.loads(back.move("--group", group, "--to", "source", "--wait", "30", "--json").stdout)
    assert rep["verdict"] == "GO" and [(r["offset"], r["exact"]) for r in rep["resume"]] == [(60, True)], rep
    assert consume(SOURCE, topic, group, limit=1) == ["a-60"]


def test_a_second_forward_replicator_stops_the_rollback_instead_of_translating_through_it(tmp_path):
    """Migration in waves: wave 1's forward replicator is retired as
    forget-flow says (no longer run, state left), and a week later a second
    forward replicator starts between the same clusters for another topic.
    On 1788ed8 the retired one, older than a week, no longer counted: the
    flow back translated wave 1's group through the new one, which never
    copied its topic, and the rollback said GO, exact, at 100, past
    a-60..99 (the fifth review). Two forward flows between the same
    clusters are now an error that names both; nothing moves back."""
    topic, group, fwd, back = migrated(tmp_path, "move-waves")
    assert fwd.forget_flow("source>target").returncode != 0
    age_registration(fwd, "source>target", 8)
    other = unique("move-wave2")
    for b in (SOURCE, TARGET):
        create_topic(b, other, 1)
    produce_keys(SOURCE, other, ["w-0"])
    folder = tmp_path / "wave2"
    folder.mkdir()
    kc, ri = write_config(folder, [other], groups=[unique("wave2-app")], group_mode="ENHANCED")
    wave2 = Ferry(kc, ri, name=unique("wave2"), prefix=fwd.prefix)
    runs(wave2, 1)
    synced = back.run("--once")
    assert synced.returncode != 0, synced.stdout + synced.stderr
    assert "opposite flows" in synced.stderr and fwd.name in synced.stderr and wave2.name in synced.stderr, synced.stderr
    p = back.move("--group", group, "--to", "source", "--wait", "10", "--json")
    assert p.returncode != 0, p.stdout + p.stderr
    assert at(SOURCE, group, topic) <= 60


def test_forget_flow_of_a_repointed_replicator_still_refuses(tmp_path):
    """The forward replicator's cluster file is repointed (here its aliases
    swap): its plan says its clusters were replaced. On 1788ed8 forget-flow
    took the new ids for a replaced cluster and deleted its state, though
    the flow back still copies between the old clusters and translates
    through it (the rollback then skipped a-60..99, the fifth review). The
    flows copying back are looked up between the clusters the flow
    recorded."""
    topic, group, fwd, back = migrated(tmp_path, "move-repointed")
    folder = tmp_path / "swapped"
    folder.mkdir()
    kc, _ = write_config(folder, [topic], source=TARGET, target=SOURCE)
    moved = Ferry(kc, fwd.ri, name=fwd.name, prefix=fwd.prefix)
    refused = moved.forget_flow("source>target")
    assert refused.returncode != 0 and back.name in refused.stderr, refused.stdout + refused.stderr
    runs(back, 2)
    rep = json.loads(back.move("--group", group, "--to", "source", "--wait", "30", "--json").stdout)
    assert rep["verdict"] == "GO" and [(r["offset"], r["exact"]) for r in rep["resume"]] == [(60, True)], rep
    assert consume(SOURCE, topic, group, limit=1) == ["a-60"]


def test_a_copy_stays_a_copy_after_the_flow_that_wrote_it_is_forgotten(tmp_path):
    """The group lives on the source at 30; the forward flow committed its
    not-exact 50 on the target (the target's log start passed 30); the flow
    back synced once and found that 50 to be the forward flow's copy. The
    forward flow is then forgotten on purpose (`--break-opposite-translation`)
    and an application produces on the target (b-0..4, copied back after
    a-99). On 51b08a9, once the group read on where it lives, the flow back
    no longer knew the 50 for a copy, translated it to the copy of b-0 and
    committed 100 over the group's 35 (the second review of 6292d45): the
    flow back keeps it for a copy while the target holds it."""
    topic, group = a_hundred_records(unique("move-forgot"), unique("lives-on-source"))
    fwd, back = two_replicators(tmp_path, topic, group, "ferry-forgot")
    for f in (fwd, back):
        runs(f, 1)
    assert len(consume(SOURCE, topic, group, limit=30)) == 30
    for f in (fwd, back, fwd, back):
        runs(f, 1)
    assert (at(SOURCE, group, topic), at(TARGET, group, topic)) == (30, 30)
    delete_records(tmp_path, TARGET, topic, 50)
    runs(fwd, 1)
    assert at(TARGET, group, topic) == 50
    runs(back, 1)
    forgotten = fwd.forget_flow("source>target", "--break-opposite-translation")
    assert forgotten.returncode == 0, forgotten.stdout + forgotten.stderr
    produce_keys(TARGET, topic, [f"b-{i}" for i in range(5)])
    runs(back, 2)
    assert at(SOURCE, group, topic) == 30
    assert consume(SOURCE, topic, group, limit=5) == [f"a-{i}" for i in range(30, 35)]
    runs(back, 3)
    assert at(SOURCE, group, topic) == 35
    assert consume(SOURCE, topic, group, limit=1) == ["a-35"]
