"""Invariant 7: the source is read with read_committed semantics. Records of
aborted transactions and control markers never reach the target; committed
transactional records do, in order. The aborted records are on the source's
log (checked there, from the transaction markers), so that their absence on
the target means something: a producer's abort drops the records it has not
sent yet, and without a flush before it few would reach the log."""

from collections import Counter

import pytest

from conftest import SOURCE, TARGET, Ferry, create_topic, producer, read_partition, stored_batches, unique, write_config


def fates(batches: list[dict]) -> list[tuple[dict, str]]:
    """Each transactional data batch of a log (DumpLogSegments with its
    records) with the marker that ended its transaction: COMMIT or ABORT."""
    open_: dict[str, list[dict]] = {}
    out = []
    for b in batches:
        if b["isTransactional"] != "true":
            continue
        if b["isControl"] == "true":
            [marker] = {r["endTxnMarker"] for r in b["records"]}
            out += [(d, marker) for d in open_.pop(b["producerId"], [])]
        else:
            open_.setdefault(b["producerId"], []).append(b)
    assert not open_, f"transactions never ended: {open_}"
    return out


@pytest.mark.parametrize("pass_through", [False, True], ids=["rebuilt", "passed-through"])
def test_aborted_transactions_and_markers_are_not_replicated(tmp_path, pass_through):
    """With `pass_through`, the transactional producer compresses with ZSTD,
    the flow's codec, and every batch may pass through: committed batches
    then reach the target as they are, less their transactional flag."""
    topic = unique("txn")
    create_topic(SOURCE, topic, 2)
    codec = {"compression.type": "zstd"} if pass_through else {}
    tp = producer(SOURCE, **{"transactional.id": unique("txn-producer"), **codec})
    tp.init_transactions(30)
    plain = producer(SOURCE)
    expected: dict[int, list[bytes]] = {0: [], 1: []}
    aborted: dict[int, set[str]] = {0: set(), 1: set()}
    for round_ in range(12):
        tp.begin_transaction()
        commit = round_ % 3 != 1
        for i in range(25):
            part = i % 2
            key = f"txn-{round_}-{i}"
            tp.produce(topic, partition=part, key=key.encode(), value=b"t")
            if commit:
                expected[part].append(key.encode())
            else:
                aborted[part].add(key)
        # Sent before the transaction ends: an abort would drop records
        # still waiting in the producer, and they would never be on the log.
        assert tp.flush(30) == 0
        if commit:
            tp.commit_transaction(30)
        else:
            tp.abort_transaction(30)
        # Non-transactional records in between.
        key = f"plain-{round_}".encode()
        plain.produce(topic, partition=round_ % 2, key=key, value=b"p")
        assert plain.flush(30) == 0
        expected[round_ % 2].append(key)

    logs = {part: fates(stored_batches("source", topic, part, records=True)) for part in (0, 1)}
    for part, batches in logs.items():
        ended = {fate: {r["key"] for b, f in batches if f == fate for r in b["records"]} for fate in ("ABORT", "COMMIT")}
        assert ended["ABORT"] == aborted[part], "every aborted record is on the source's log"
        assert ended["COMMIT"] == {k.decode() for k in expected[part] if k.startswith(b"txn-")}

    kc, ri = write_config(tmp_path, [topic], compression="ZSTD")
    res = Ferry(kc, ri).run("--once", *(["--pass-through-min-bytes", "0"] if pass_through else []))
    assert res.returncode == 0, res.stdout + res.stderr
    for part in (0, 1):
        src = [r["key"] for r in read_partition(SOURCE, topic, part)]
        dst = read_partition(TARGET, topic, part)
        assert [r["key"] for r in dst] == src, "the target holds exactly the source's committed records, in order"
        # Order between transactional and plain records depends on commit
        # timing, so compare as a set against what was committed.
        assert sorted(src) == sorted(expected[part])
        # No control markers or aborted records on the target: its offsets are dense.
        assert [r["offset"] for r in dst] == list(range(len(dst)))
        if pass_through:
            # Committed ZSTD batches kept their bytes: one target batch of the
            # same record count and size each; none of an aborted one.
            kept = [(b["count"], b["size"]) for b, fate in logs[part] if fate == "COMMIT" and b["compresscodec"] == "zstd"]
            dropped = [(b["count"], b["size"]) for b, fate in logs[part] if fate == "ABORT"]
            on_target = [(b["count"], b["size"]) for b in stored_batches("target", topic, part)
                         if b["compresscodec"] == "zstd"]
            assert len(kept) >= 8 and not Counter(kept) - Counter(on_target), (kept, on_target)
            assert len(dropped) >= 4, dropped
            assert all(b["isTransactional"] == "false" for b in stored_batches("target", topic, part))
