"""The README's first command, `infra/local/demo`, with a small workload:
the copy verified byte for byte, then the migration told with `ferry move`
(three applications moved, one back and forth again), whose proof that
every record was consumed exactly once by each group must hold. Run twice
on the same stack (the README's command, then this test) it must hold
again: the second run starts where the first left its groups."""

import os
import re
import subprocess

from conftest import ROOT


def test_the_demo_moves_every_application_and_each_group_consumes_every_record_once():
    p = subprocess.run([str(ROOT / "infra" / "local" / "demo")], capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, DEMO_ORDERS="300"), cwd=ROOT)
    out = p.stdout
    assert p.returncode == 0, out[-6000:] + p.stderr[-3000:]
    assert "verify: every record identical on both clusters" in out, out[-3000:]
    assert "ferry readiness: exit 0: ferry: GO" in out, out[-3000:]
    moves = re.findall(r"^migration: \[.*?\] ferry move (.*?) --to (source|target): GO", out, re.M)
    assert [(m[0].split()[1], m[1]) for m in moves] == [
        ("orders", "target"), ("order-status", "target"), ("notification", "target"),
        ("order-status", "source"), ("order-status", "target")], moves
    proof = {m[0]: tuple(map(int, m[1:])) for m in re.findall(r"^(order-status|notification) +\S+ +(\d+) +(\d+) +(\d+) +(\d+)$", out, re.M)}
    assert set(proof) == {"order-status", "notification"}, out[-3000:]
    for group, (records, once, twice, never) in proof.items():
        assert records > 0 and records == once and twice == 0 and never == 0, (group, proof)
    homes = re.findall(r"^(order-status|notification) +(\w+) +(\w+) ", out.split("demo: where each group lives now")[-1], re.M)
    assert sorted((g, lives) for g, lives, _ in homes) == [("notification", "target"), ("order-status", "target")], homes
