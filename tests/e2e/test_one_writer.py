"""One writer per target topic: two replicators on the same state tables
that copy the same topic the same way (a second stack deployed under
another name, a renamed replicator, two waves' definitions overlapping)
would each keep their own cursors and copy every record twice. The first
to plan a topic writes it; the other refuses that topic, names the flow
that writes it and says how to fix it, and copies its other topics."""

import signal
import subprocess
import time

from conftest import SOURCE, TARGET, Ferry, create_topic, produce_keys, read_partition, unique, write_config

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


def two_names(tmp_path, topics_a: list[str], topics_b: list[str]) -> tuple[Ferry, Ferry]:
    """Two replicators under different names, source to target, on the
    same state tables."""
    prefix = unique("ferry-one-writer")
    out = []
    for name, topics in (("first", topics_a), ("second", topics_b)):
        folder = tmp_path / name
        folder.mkdir()
        kc, ri = write_config(folder, topics)
        out.append(Ferry(kc, ri, name=unique(name), prefix=prefix))
    return out[0], out[1]


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
