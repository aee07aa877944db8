"""The migration story (invariants 4, 5, 6) with Ferry replicating both ways:
the three apps of tests/e2e/support/story.py move from the source cluster to the
target one at a time, in each of the six orders, and in each run the first
app to move is rolled back to the source midway and moved forward again.
Every order must be processed exactly once and every status notified exactly
once.

The waits are the procedure docs/src/configuration/moving-applications.md
gives operators: for a producer,
`ferry status` shows lag 0 for its topic on the flow away from the cluster it
left; for a consumer, `ferry status` shows its group synced, exactly, to its
last commit there.
"""

import itertools
import subprocess

import pytest

from conftest import Ferry, committed, write_config
from support.story import CLUSTERS, OTHER, PARTS, run_story


class FerryBothWays:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.ferry: Ferry | None = None
        self.proc: subprocess.Popen | None = None

    def start(self, topics, groups):
        kc, ri = write_config(self.tmp, topics, both_ways=True, groups=groups)
        self.ferry = Ferry(kc, ri)
        self.proc = self.ferry.spawn("--round-seconds", "10", "--group-sync-seconds", "1", log=self.tmp / "ferry.log")

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(30)

    def caught_up(self, frm, topic):
        rows = [r for r in self.ferry.status() if r["flow"] == f"{frm}>{OTHER[frm]}" and r["topic"] == topic]
        return len(rows) == PARTS and all(r["lag"] == 0 for r in rows)

    def group_synced(self, frm, group):
        mine = committed(CLUSTERS[frm], group)
        rows = {(g["topic"], g["partition"]): g for g in self.ferry.groups() if g["flow"] == f"{frm}>{OTHER[frm]}" and g["group"] == group}
        theirs = committed(CLUSTERS[OTHER[frm]], group)
        for tp, (offset, _) in mine.items():
            row = rows.get(tp)
            # What the last failed check saw, for the timeout's message.
            self.why = f"{tp}: committed {offset} on {frm}, {theirs.get(tp, (None,))[0]} on {OTHER[frm]}; ferry groups: {row}"
            if not row or row["source_offset"] != offset or not row["exact"] or row["status"] not in ("synced", "up-to-date"):
                return False
            if theirs.get(tp, (None,))[0] != row["translated_offset"]:
                return False
        return True


PERMUTATIONS = list(itertools.permutations(["orders", "status", "notify"]))


@pytest.mark.parametrize("order", PERMUTATIONS, ids=["-".join(p) for p in PERMUTATIONS])
def test_move_every_app_in_any_order_with_a_rollback(tmp_path, order):
    row = run_story(FerryBothWays(tmp_path), order, rollback=True)
    assert row["orders"] > 500
    assert (row["status_duplicates"], row["status_missing"], row["notify_duplicates"], row["notify_missing"]) == (0, 0, 0, 0), row
