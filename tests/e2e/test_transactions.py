"""Invariant 7: the source is read with read_committed semantics. Records of
aborted transactions and control markers never reach the target; committed
transactional records do, in order."""

from collections import Counter

import pytest

from conftest import SOURCE, TARGET, Ferry, create_topic, producer, read_partition, stored_batches, unique, write_config


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
    expected = {0: [], 1: []}
    for round_ in range(12):
        tp.begin_transaction()
        commit = round_ % 3 != 1
        for i in range(25):
            part = i % 2
            key = f"txn-{round_}-{i}".encode()
            tp.produce(topic, partition=part, key=key, value=b"t")
            if commit:
                expected[part].append(key)
        if commit:
            tp.commit_transaction(30)
        else:
            tp.abort_transaction(30)
        # Non-transactional records in between.
        key = f"plain-{round_}".encode()
        plain.produce(topic, partition=round_ % 2, key=key, value=b"p")
        assert plain.flush(30) == 0
        expected[round_ % 2].append(key)
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
            # same record count and size each (the transactional producer
            # writes one batch per partition per transaction).
            committed = [(b["count"], b["size"]) for b in stored_batches("source", topic, part)
                         if b["isTransactional"] == "true" and b["isControl"] == "false" and b["compresscodec"] == "zstd"]
            on_target = [(b["count"], b["size"]) for b in stored_batches("target", topic, part)
                         if b["compresscodec"] == "zstd"]
            assert len(committed) >= 8 and not Counter(committed) - Counter(on_target), (committed, on_target)
            assert all(b["isTransactional"] == "false" for b in stored_batches("target", topic, part))
