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

import pytest

from support.moves import FerryBothWays
from support.story import run_story


PERMUTATIONS = list(itertools.permutations(["orders", "status", "notify"]))


@pytest.mark.parametrize("order", PERMUTATIONS, ids=["-".join(p) for p in PERMUTATIONS])
def test_move_every_app_in_any_order_with_a_rollback(tmp_path, order):
    row = run_story(FerryBothWays(tmp_path), order, rollback=True)
    assert row["orders"] > 500
    assert (row["status_duplicates"], row["status_missing"], row["notify_duplicates"], row["notify_missing"]) == (0, 0, 0, 0), row
