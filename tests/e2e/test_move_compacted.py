"""`ferry move` on compacted topics (issue 23): the log cleaner removes
records on each cluster on its own schedule, so a group's commit can
name an offset no record holds any more, on the cluster it leaves and on
the one it goes to, and the copies are renumbered where the source had
gaps when they were copied. A move there and back must still resume each
way at the first record the group had not read, every record read once.
"""

import json
import time

from conftest import SOURCE, TARGET, Ferry, committed, create_topic, producer, read_partition, unique, write_config
from test_groups import commit_at
from test_move import consume

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


def keys_from(rows: list[dict], prefix: str, at: int, below: int | None = None) -> list[str]:
    return [r["key"].decode() for r in rows
            if r["key"].decode().startswith(f"{prefix}-") and r["offset"] >= at and (below is None or r["offset"] < below)]


def move(ferry: Ferry, group: str, to: str) -> dict:
    p = ferry.move("--group", group, "--to", to, "--wait", "120", "--json")
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    rep = json.loads(p.stdout)
    assert rep["verdict"] == "GO" and rep["recorded"], rep
    return rep


def test_a_move_there_and_back_resumes_after_a_commit_the_cleaner_removed_on_each_cluster(tmp_path):
    topic, group = unique("move-compacted"), unique("ledger")
    for b in (SOURCE, TARGET):
        create_topic(b, topic, 1, config=COMPACT)
    kc, ri = write_config(tmp_path, [topic], both_ways=True, groups=[group])
    ferry = Ferry(kc, ri)

    # On the source: the group stopped at an offset the cleaner removed
    # before the flow copied it (the copies are renumbered there).
    src = fill_and_compact(SOURCE, topic, "s", 3000)
    g, first = gap_before_a_kept_record(src, "s")
    commit_at(SOURCE, group, {(topic, 0): (g, "")})
    assert ferry.run("--once").returncode == 0
    rep = move(ferry, group, "target")
    [r] = rep["resume"]
    assert (r["source_offset"], r["exact"], r["redelivered"]) == (g, True, 0), r
    assert (r["next_record"] or {}).get("key") == first, (r, first)
    assert committed(TARGET, group)[(topic, 0)][0] == r["offset"]

    on_target = consume(TARGET, topic, group)
    assert on_target[0] == first, on_target[:3]
    got = [k for k in on_target if k.startswith("s-")]
    assert got == keys_from(src, "s", g), "every kept source record after the commit, once, in order; none before it"

    # On the target: records of its own, the cleaner removes some, and the
    # group stops at one of those removed offsets.
    tgt = fill_and_compact(TARGET, topic, "t", 3000)
    c, first_back = gap_before_a_kept_record(tgt, "t")
    commit_at(TARGET, group, {(topic, 0): (c, "")})
    assert ferry.run("--once").returncode == 0
    rep = move(ferry, group, "source")
    [r] = rep["resume"]
    assert (r["source_offset"], r["exact"], r["redelivered"]) == (c, True, 0), r
    assert (r["next_record"] or {}).get("key") == first_back, (r, first_back)

    on_source = consume(SOURCE, topic, group)
    assert on_source[0] == first_back, on_source[:3]
    assert [k for k in on_source if k.startswith("t-")] == keys_from(tgt, "t", c), \
        "every kept target record after the commit, once, in order; none before it"
    assert not [k for k in on_source if k.startswith("s-")], "source records the group read before the first move came again"
