"""Group commits across handovers: a topic handed between replicators on
the same state tables (one writer per target topic), back and forth, with
flows forgotten and syncs dying on the way. The commits any of its
writers made on the target are Ferry's, and the group is synced on from
them; a commit below Ferry's latest is someone else's (an operator's
reset), never overwritten (breaker helper-93 wrote most of these cases)."""

import time

import pytest

from conftest import SOURCE, TARGET, Ferry, committed, create_topic, produce_keys, read_partition, unique, write_config
from support.groups import commit_at, first_key_from
from support.shared_tables import FOLDERS, on_shared_tables
from support.topics import delete_topic

# The next sync may take a group its sync died holding 2 s later.
LEASE = ("--group-sync-lease-ms", "2000")


def key(i: int) -> str:
    return f"k{i:03d}"


class Handed:
    """One topic (one partition, 100 records) and one group, three
    replicators `first`, `second`, `third` on shared tables, of which
    `holder` copies the topic: `hand` gives it to another by rewriting
    both definitions, with 10 records more each time."""

    def __init__(self, tmp_path, holder: str = "first"):
        self.tmp = tmp_path
        self.topic, self.group, self.nothing = unique("handed"), unique("handed-app"), unique("handed-nothing")
        create_topic(SOURCE, self.topic, 1)
        produce_keys(SOURCE, self.topic, [key(i) for i in range(100)])
        self.n = 100
        lists = [[self.topic] if name == holder else [self.nothing] for name in FOLDERS]
        self.f: dict[str, Ferry] = dict(zip(FOLDERS, on_shared_tables(tmp_path, *lists, groups=[self.group])))
        self.holder = holder
        self.run(holder)

    def run(self, name: str, env: dict | None = None) -> None:
        ran = self.f[name].run("--once", *LEASE, env=env)
        assert ran.returncode == 0, ran.stdout + ran.stderr

    def define(self, name: str, topic: str) -> None:
        write_config(self.tmp / name, [topic], groups=[self.group])

    def hand(self, to: str) -> None:
        self.define(self.holder, self.nothing)
        self.run(self.holder)
        self.take(to)

    def take(self, to: str) -> None:
        """`to` copies the topic (its holder handed it over, or was
        forgotten), from where the holder stopped; 10 records more."""
        self.define(to, self.topic)
        produce_keys(SOURCE, self.topic, [key(i) for i in range(self.n, self.n + 10)])
        self.n += 10
        self.holder = to
        self.run(to)
        assert [r["key"] for r in read_partition(TARGET, self.topic, 0)] == [key(i).encode() for i in range(self.n)]

    def sync(self, offset: int) -> None:
        """The group commits `offset` on the source; the holder syncs it."""
        commit_at(SOURCE, self.group, {(self.topic, 0): (offset, "m")})
        self.run(self.holder)

    def sync_dies(self, offset: int) -> None:
        """As `sync`, but the sync dies after its commit, before recording it."""
        commit_at(SOURCE, self.group, {(self.topic, 0): (offset, "m")})
        died = self.f[self.holder].run("--once", *LEASE, env={"FERRY_FAILPOINT": "crash-after-group-commit"})
        assert died.returncode != 0 and "crash-after-group-commit reached" in died.stderr, died.stdout + died.stderr
        time.sleep(2.5)

    def forget(self, name: str) -> None:
        forgot = self.f[name].forget_flow("source>target")
        assert forgot.returncode == 0, forgot.stdout + forgot.stderr

    def on_target(self) -> tuple[int, str]:
        return committed(TARGET, self.group)[(self.topic, 0)]

    def row(self) -> dict:
        [row] = [g for g in self.f[self.holder].groups() if g["group"] == self.group]
        return row

    def synced_on(self) -> None:
        """The group reads past the last handover: the holder moves its
        commit on the target there, exactly, and `ferry move` is GO."""
        self.sync(self.n - 5)
        offset, _ = self.on_target()
        assert first_key_from(TARGET, self.topic, 0, offset) == key(self.n - 5).encode(), self.row()
        moved = self.f[self.holder].move("--group", self.group, "--to", "target", "--wait", "30", "--json")
        assert moved.returncode == 0, moved.stdout + moved.stderr

    def reset_kept(self, reset: int) -> None:
        """An operator resets the group on the target; the group reads past
        the last handover: the reset stays, a foreign commit."""
        commit_at(TARGET, self.group, {(self.topic, 0): (reset, "reset")})
        self.sync(self.n - 5)
        assert self.on_target() == (reset, "reset"), self.row()
        assert self.row()["status"] == "foreign-commit", self.row()


def test_a_group_idle_through_two_handovers_is_synced_by_the_last_taker(tmp_path):
    """The first writer's commit, two handovers back, is Ferry's (the third
    flow looked one flow back, at the second's syncs, which had written
    nothing: breaker helper-92)."""
    h = Handed(tmp_path)
    h.sync(50)
    h.hand("second")
    h.hand("third")
    h.synced_on()


def test_an_operators_reset_below_a_commit_two_handovers_back_is_left_to_the_operator(tmp_path):
    h = Handed(tmp_path)
    h.sync(50)
    h.hand("second")
    h.hand("third")
    h.reset_kept(20)


def test_a_topic_handed_back_to_a_flow_that_held_it_before_counts_the_first_writers_commit(tmp_path):
    """first → second → third → second, the group idle: the second's
    cursor now names the third as the flow it took the topic from, and the
    third names the second; the first's commit is reached still."""
    h = Handed(tmp_path)
    h.sync(50)
    for to in ("second", "third", "second"):
        h.hand(to)
    h.synced_on()


def test_a_reset_below_a_commit_made_before_the_topic_came_back_is_kept(tmp_path):
    """The second syncs 20, the first 105; then first → second → third →
    second, the group idle. A reset to 60 is below Ferry's latest, 105
    (the second's own 20 counted, and 60 was overwritten)."""
    h = Handed(tmp_path, holder="second")
    h.sync(20)
    h.hand("first")
    h.sync(105)
    for to in ("second", "third", "second"):
        h.hand(to)
    h.reset_kept(60)


@pytest.mark.parametrize("reset", [None, 20], ids=["synced-on", "reset-kept"])
def test_a_group_a_forgotten_writer_synced_is_synced_on_by_the_taker(tmp_path, reset):
    """`ferry forget-flow` of the writer (as after renaming a cluster's
    alias) deleted its record of the group commits it made: the taker took
    them for an operator's and never moved them (breaker helper-91)."""
    h = Handed(tmp_path)
    h.sync(50)
    h.forget("first")
    h.take("second")
    if reset is None:
        h.synced_on()
    else:
        h.reset_kept(reset)


def test_a_forgotten_flow_in_the_middle_still_leads_back_to_the_first_writer(tmp_path):
    h = Handed(tmp_path)
    h.sync(50)
    h.hand("second")
    h.forget("second")
    h.take("third")
    h.synced_on()


def test_a_forgotten_flow_keeps_the_commits_of_the_flows_it_took_the_topic_from(tmp_path):
    """first syncs 20, second 105, back to first (the group idle), first
    forgotten, third takes: 105 is reached through the forgotten first."""
    h = Handed(tmp_path)
    h.sync(20)
    h.hand("second")
    h.sync(105)
    h.hand("first")
    h.forget("first")
    h.take("third")
    h.reset_kept(60)


def test_a_sync_that_died_after_its_commit_counts_for_the_taker(tmp_path):
    """The writer's first sync of the group commits 4 and dies before
    recording it (pending): the taker counts that commit as Ferry's."""
    h = Handed(tmp_path)
    h.sync_dies(4)
    assert h.on_target()[0] == 4
    h.hand("second")
    h.synced_on()


def test_a_sync_that_died_before_a_later_commit_counts_for_nothing(tmp_path):
    """first syncs 2, its sync of 4 dies after the commit; second syncs
    105; the topic comes back to first. A reset to 60, below Ferry's latest
    (105) but past the died sync's 4, is kept."""
    h = Handed(tmp_path)
    h.sync(2)
    h.sync_dies(4)
    h.hand("second")
    h.sync(105)
    h.hand("first")
    h.reset_kept(60)


def test_a_flow_that_handed_the_topic_over_and_copies_it_under_another_name_since_describes_that_name(tmp_path):
    """first syncs 50 and hands the topic to second, then copies it again
    under PREFIXED names (`source.<topic>`, another target topic) and syncs
    the group there at 30. Its sync items describe that topic now: an
    operator's reset to 40 on the topic second writes, below Ferry's 50
    there, is kept (30 counted, and 40 was overwritten)."""
    h = Handed(tmp_path)
    h.sync(50)
    h.hand("second")
    write_config(tmp_path / "first", [h.topic], groups=[h.group], naming="PREFIXED_WITH_SOURCE_CLUSTER_ALIAS")
    commit_at(SOURCE, h.group, {(h.topic, 0): (30, "m")})
    h.run("first")
    assert committed(TARGET, h.group)[(f"source.{h.topic}", 0)][0] == 30
    h.reset_kept(40)


@pytest.mark.parametrize("how", ["handed", "forgotten", "created-again"])
def test_a_target_topic_deleted_before_the_take_is_copied_whole_and_synced_from_its_own_commits(tmp_path, how):
    """first syncs 50 and hands the topic over (or is forgotten); an
    operator deletes the target topic, its group offsets with it (and
    creates it again, empty), before second takes it. second copies every
    record (it went on where first had stopped, and the records below were
    never on the target again), and syncs the group on from its own commits
    (first's 50, in a log that is gone, made each of them someone else's:
    breaker helper-94)."""
    h = Handed(tmp_path)
    h.sync(50)
    if how == "forgotten":
        h.forget("first")
    else:
        h.define("first", h.nothing)
        h.run("first")
    delete_topic(TARGET, h.topic)
    if how == "created-again":
        create_topic(TARGET, h.topic, 1)
    h.take("second")
    h.sync(h.n - 7)
    h.synced_on()


def test_a_flow_forgotten_and_handed_the_topic_back_counts_its_own_commit_from_before(tmp_path):
    """first syncs 50 and is forgotten; second takes the topic, the group
    idle, and hands it back to first, run again under the same key: the
    commit of first's earlier life is Ferry's (breaker helper-94: the walk
    skipped first's own kept record)."""
    h = Handed(tmp_path)
    h.sync(50)
    h.forget("first")
    h.take("second")
    h.hand("first")
    h.synced_on()
