"""`ferry move` on compacted topics (issue 23): the log cleaner removes
records on each cluster on its own schedule, so a group's commit can
name an offset no record holds any more, on the cluster it leaves and on
the one it goes to, and the copies are renumbered where the source had
gaps when they were copied. A move there and back must still resume each
way at the first record the group had not read, every record read once.
"""

import json
import subprocess
import time

from conftest import SOURCE, TARGET, Ferry, committed, create_topic, producer, read_partition, unique, write_config
from support.groups import commit_at
from support.moves import consume

COMPACT = {"cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.001",
           "min.compaction.lag.ms": "0", "delete.retention.ms": "100"}


def fill_and_compact(bootstrap: str, topic: str, prefix: str, n: int) -> list[dict]:
    """`n` records on partition 0, every other one under a key written over
    and over (the others unique, `prefix-i`), then wait until the cleaner has
    removed some of the overwritten ones among them. The partition's records."""
    start = max([r["offset"] for r in read_partition(bootstrap, topic, 0)], default=-1) + 1
    p = producer(bootstrap)
    for i in range(n):
        key = f"{prefix}-{i}" if i % 2 == 0 else "overwritten"
        p.produce(topic, partition=0, key=key.encode(), value=f"{prefix}{i}".encode() * 20)
    assert p.flush(30) == 0
    deadline = time.time() + 120
    while True:
        rows = read_partition(bootstrap, topic, 0)
        mine = [r["offset"] for r in rows if r["offset"] >= start]
        if mine and len(mine) < mine[-1] - mine[0] + 1 and mine[-1] - mine[0] + 1 >= n:
            return rows
        assert time.time() < deadline, f"the cleaner opened no gap in {topic} on {bootstrap}"
        # A roll record closes the active segment, which the cleaner never touches.
        p.produce(topic, partition=0, key=b"roll", value=b"r")
        p.flush(10)
        time.sleep(2)


def gap_before_a_kept_record(rows: list[dict], prefix: str) -> tuple[int, str]:
    """An offset the cleaner removed whose next offset holds a `prefix-` record
    (never removed: its key is unique), about half-way through those: the
    commit, and the key the group must read first."""
    held = {r["offset"]: r["key"].decode() for r in rows}
    kept = [o for o, k in held.items() if k.startswith(f"{prefix}-") and o - 1 not in held and o - 2 in held]
    assert kept, "no removed offset between two kept records"
    o = kept[len(kept) // 2]
    return o - 1, held[o]


def keys_from(rows: list[dict], prefix: str, at: int) -> list[str]:
    return [r["key"].decode() for r in rows if r["key"].decode().startswith(f"{prefix}-") and r["offset"] >= at]


def move_from_a_removed_offset(ferry: Ferry, topic: str, group: str, rows: list[dict], prefix: str,
                               frm: str, to: str) -> tuple[int, str]:
    """The group stops at an offset the cleaner removed on `frm` (before its
    next kept `prefix-` record); the flows run; `ferry move` to `to` is GO,
    exact, and names that record first. The commit and that record's key."""
    at, first = gap_before_a_kept_record(rows, prefix)
    commit_at(frm, group, {(topic, 0): (at, "")})
    assert ferry.run("--once").returncode == 0
    p = ferry.move("--group", group, "--to", to, "--wait", "120", "--json")
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    rep = json.loads(p.stdout)
    assert rep["verdict"] == "GO" and rep["recorded"], rep
    [r] = rep["resume"]
    assert (r["source_offset"], r["exact"], r["redelivered"]) == (at, True, 0), r
    assert (r["next_record"] or {}).get("key") == first, (r, first)
    assert committed(SOURCE if to == "source" else TARGET, group)[(topic, 0)][0] == r["offset"]
    return at, first


def test_a_move_there_and_back_resumes_after_a_commit_the_cleaner_removed_on_each_cluster(tmp_path):
    topic, group = unique("move-compacted"), unique("ledger")
    for b in (SOURCE, TARGET):
        create_topic(b, topic, 1, config=COMPACT)
    kc, ri = write_config(tmp_path, [topic], both_ways=True, groups=[group])
    ferry = Ferry(kc, ri)

    # On the source: the group stopped at an offset the cleaner removed
    # before the flow copied it (the copies are renumbered there).
    src = fill_and_compact(SOURCE, topic, "s", 3000)
    g, first = move_from_a_removed_offset(ferry, topic, group, src, "s", SOURCE, "target")

    on_target = consume(TARGET, topic, group)
    assert on_target[0] == first, on_target[:3]
    got = [k for k in on_target if k.startswith("s-")]
    assert got == keys_from(src, "s", g), "every kept source record after the commit, once, in order; none before it"

    # On the target: records of its own, the cleaner removes some, and the
    # group stops at one of those removed offsets.
    tgt = fill_and_compact(TARGET, topic, "t", 3000)
    c, first_back = move_from_a_removed_offset(ferry, topic, group, tgt, "t", TARGET, "source")

    on_source = consume(SOURCE, topic, group)
    assert on_source[0] == first_back, on_source[:3]
    assert [k for k in on_source if k.startswith("t-")] == keys_from(tgt, "t", c), \
        "every kept target record after the commit, once, in order; none before it"
    assert not [k for k in on_source if k.startswith("s-")], "source records the group read before the first move came again"


def test_a_group_far_behind_on_a_compacted_topic_moves_once_the_flow_back_has_read_the_copies(tmp_path):
    """More than 20,000 runs (a run per record the cleaner kept) after the
    group's commit, and the flow back not yet past Ferry's copies. On
    028e643 (a review's scenario): a NO-GO, "records it has not read are
    not on target, and it would skip them", which no flag lifted and no
    wait cleared, though the commit Ferry wrote was exact: the lookups read
    every run to the partition's end and stopped at their bound. Now the
    move waits for the flow back, then GO, exact."""
    topic, group = unique("move-compacted-far"), unique("far")
    for b in (SOURCE, TARGET):
        create_topic(b, topic, 1, config=COMPACT)
    kc, ri = write_config(tmp_path, [topic], both_ways=True, groups=[group])
    ferry = Ferry(kc, ri)
    p = producer(SOURCE)
    for i in range(43_000):
        p.produce(topic, partition=0, key=(f"s-{i}" if i % 2 == 0 else "overwritten").encode(), value=b"v" * 20)
        if i % 10_000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    deadline = time.time() + 300
    while sum(r["key"] == b"overwritten" for r in read_partition(SOURCE, topic, 0, timeout_s=120)) > 2:
        assert time.time() < deadline, "the cleaner did not compact the source"
        p.produce(topic, partition=0, key=b"roll", value=b"r")
        p.flush(10)
        time.sleep(3)
    # The group read s-0 only; it resumes at s-2, source offset 2.
    commit_at(SOURCE, group, {(topic, 0): (2, "")})
    src = read_partition(SOURCE, topic, 0, timeout_s=120)
    assert len(src) > 21_000
    # One round of each flow: the flow back ran while the target was empty.
    assert ferry.run("--once").returncode == 0
    assert len(read_partition(TARGET, topic, 0, timeout_s=120)) == len(src)

    mv = subprocess.Popen(ferry.args("move", "--group", group, "--to", "target", "--wait", "120", "--json"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(10)
        assert ferry.run("--once").returncode == 0  # the flow back reads the copies
        out, err = mv.communicate(timeout=200)
    finally:
        if mv.poll() is None:
            mv.kill()
    assert mv.returncode == 0, (out, err)
    assert "waiting for the flow back to read target" in err, err
    [r] = json.loads(out)["resume"]
    assert (r["source_offset"], r["offset"], r["exact"], r["redelivered"]) == (2, 1, True, 0), r
    assert (r["next_record"] or {}).get("key") == "s-2", r
