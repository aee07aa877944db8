"""Two `ferry move` of one group at the same time (a runbook run twice, two
operators), with one replicator holding both flows: nothing skipped or
read twice, and `ferry status` counts the moves the group made, not the
GOs. A review (on 028e643) found two moves at once counted as two."""

import json
import subprocess

from conftest import SOURCE, TARGET, Ferry, committed, create_topic, produce_keys, unique, write_config
from support.moves import consume


def fifty_records_twenty_read(tmp_path, name: str) -> tuple[Ferry, str, str]:
    topic, group = unique(name), unique("app")
    for b in (SOURCE, TARGET):
        create_topic(b, topic, 1)
    kc, ri = write_config(tmp_path, [topic], both_ways=True, groups=[group])
    ferry = Ferry(kc, ri)
    produce_keys(SOURCE, topic, [f"k-{i}" for i in range(50)])
    assert len(consume(SOURCE, topic, group, limit=20)) == 20
    assert ferry.run("--once").returncode == 0
    return ferry, topic, group


def at_once(ferry: Ferry, *moves: tuple[str, ...]) -> list[tuple[int, dict]]:
    procs = [subprocess.Popen(ferry.args("move", *m), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for m in moves]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert stdout.strip(), stderr
        out.append((p.returncode, json.loads(stdout)))
    return out


def test_the_same_move_twice_at_once_is_one_move(tmp_path):
    ferry, topic, group = fifty_records_twenty_read(tmp_path, "move-twice")
    to_target = ("--group", group, "--to", "target", "--wait", "60", "--json")
    for code, rep in at_once(ferry, to_target, to_target):
        assert code == 0 and rep["verdict"] == "GO", rep
        assert [(r["offset"], r["exact"]) for r in rep["resume"]] == [(20, True)], rep
    # And once more, later: a check, not a move.
    assert ferry.move(*to_target).returncode == 0
    homes = ferry.full_status()["moves"]
    assert [(h["group"], h["lives_on"], h["moves"]) for h in homes] == [(group, "target", 1)], homes
    assert consume(TARGET, topic, group) == [f"k-{i}" for i in range(20, 50)]
    # The move back is the second (once the flow back has passed over the copies).
    assert ferry.run("--once").returncode == 0
    assert ferry.move("--group", group, "--to", "source", "--wait", "60", "--json").returncode == 0
    homes = ferry.full_status()["moves"]
    assert [(h["group"], h["lives_on"], h["moves"]) for h in homes] == [(group, "source", 2)], homes


def test_moves_both_ways_at_once_leave_the_group_where_it_stopped_on_either_cluster(tmp_path):
    """Both directions at once: each GO is true of its own destination (the
    group, stopped, resumes at its next record on either cluster), and
    status names the one recorded last. Run one move of a group at a time
    (docs/src/configuration/moving-applications.md)."""
    ferry, topic, group = fifty_records_twenty_read(tmp_path, "move-opposite")
    assert ferry.run("--once").returncode == 0  # the group's commit synced to the target
    results = at_once(ferry, ("--group", group, "--to", "target", "--wait", "60", "--json"),
                      ("--group", group, "--to", "source", "--wait", "60", "--json"))
    assert any(code == 0 for code, _ in results), results
    assert committed(SOURCE, group)[(topic, 0)][0] == 20
    assert committed(TARGET, group)[(topic, 0)][0] == 20
    [home] = ferry.full_status()["moves"]
    assert home["lives_on"] in ("source", "target"), home
    there = SOURCE if home["lives_on"] == "source" else TARGET
    assert consume(there, topic, group) == [f"k-{i}" for i in range(20, 50)]


def one_flow(folder, topic: str, group: str, source: str, target: str, prefix: str) -> Ferry:
    """A replicator of the first flow of a both-ways definition, `source`
    named "source" and `target` "target" in its own files."""
    folder.mkdir()
    kc, ri = write_config(folder, [topic], source=source, target=target, both_ways=True, groups=[group])
    ri.write_text(json.dumps(json.loads(ri.read_text())[:1], indent=2))
    return Ferry(kc, ri, name=unique("names"), prefix=prefix)


def test_a_move_and_back_by_replicators_that_name_the_clusters_each_its_own_way_are_two_moves(tmp_path):
    """One replicator each way, each calling the cluster it copies to
    "target": the move back is a move (a review of the change found it
    taken for a move to where the group already lived, by name)."""
    topic, group = unique("move-names"), unique("app")
    for b in (SOURCE, TARGET):
        create_topic(b, topic, 1)
    prefix = unique("ferry-names")
    there = one_flow(tmp_path / "there", topic, group, SOURCE, TARGET, prefix)
    back = one_flow(tmp_path / "back", topic, group, TARGET, SOURCE, prefix)
    produce_keys(SOURCE, topic, [f"k-{i}" for i in range(50)])
    assert len(consume(SOURCE, topic, group, limit=20)) == 20
    for f in (there, back):
        assert f.run("--once").returncode == 0
    p = there.move("--group", group, "--to", "target", "--wait", "60", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    for f in (there, back):
        assert f.run("--once").returncode == 0
    p = back.move("--group", group, "--to", "target", "--wait", "60", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    assert committed(SOURCE, group)[(topic, 0)][0] == 20
    for f in (there, back):
        homes = f.full_status()["moves"]
        assert [(h["group"], h["moves"]) for h in homes] == [(group, 2)], homes
