"""A checkpoint whose answer is lost: DynamoDB applied the transaction, the
SDK's attempt timed out (ferry_adapters::aws::ATTEMPT_TIMEOUT, 10 s), and
the SDK sent it again. The copy must not read as another worker having
taken the partition over, nor as anyone moving its cursor: nothing else
wrote. Each record is copied once.

The proxy in front of the state store applies the checkpoint at once and
holds its answer past the attempt timeout. Two ways the copy can arrive:
- with the token the SDK gave the first (ClientRequestToken, the SDK fills
  it in): DynamoDB, and the local stack since it keeps tokens
  (infra/local/moto/ferry_moto.py), answers it as done without applying it
  again;
- with a token DynamoDB does not know (it forgets one after ten minutes):
  the copy is applied, fails its own cursor condition, and Ferry must tell
  its own checkpoint, already stored, from a lease another worker took."""

import os
import subprocess
import time

import pytest

from conftest import SOURCE, TARGET, Ferry, create_topic, producer, read_partition, unique, write_config
from support.held_answer_proxy import state_store_behind_a_proxy as behind_a_proxy

RECORDS = 3_000
# Past the SDK's attempt timeout (10 s), inside its operation timeout (30 s).
HOLD_S = 12.0


def keys(n: int) -> list[bytes]:
    return [f"{i:06d}".encode() for i in range(n)]


def loaded(name: str, n: int, value_bytes: int = 100) -> str:
    """A new one-partition source topic holding `n` records keyed `keys(n)`."""
    topic = unique(name)
    create_topic(SOURCE, topic, 1)
    p = producer(SOURCE)
    for k in keys(n):
        p.produce(topic, partition=0, key=k, value=os.urandom(value_bytes))
    assert p.flush(60) == 0
    return topic


def copied_once(topic: str, n: int) -> None:
    dst = [r["key"] for r in read_partition(TARGET, topic, 0)]
    assert dst == keys(n), f"{len(dst)} of {n} on target, {len(dst) - len(set(dst))} twice"


def state_store_behind_a_proxy(monkeypatch):
    return behind_a_proxy(monkeypatch, HOLD_S)


@pytest.mark.parametrize("token", ["same", "forgotten"])
def test_a_checkpoint_sent_again_is_not_a_takeover(tmp_path, monkeypatch, token):
    topic = loaded(f"resent-{token}", RECORDS)
    with state_store_behind_a_proxy(monkeypatch) as proxy:
        # A checkpoint's cursor update says where the cursor goes: the first
        # one of the run is held.
        proxy.arm("TransactWriteItems", "next_source_offset = :to", new_token_on_resend=token == "forgotten")
        kc, ri = write_config(tmp_path, [topic])
        res = Ferry(kc, ri).run("--once", "--produce-batch-max-bytes", "20000", "--checkpoint-seconds", "0", timeout=300)
        log = res.stdout + res.stderr
        assert res.returncode == 0, log[-4000:]
        copies = proxy.copies_of_held()
        assert len(copies) >= 2, f"the held checkpoint was not sent again ({copies}): the scenario did not happen"
        if token == "same":
            assert len(set(copies)) == 1, f"the SDK sent the copy with another token: {copies}"
        else:
            assert len(set(copies)) == len(copies), f"the proxy did not change the copy's token: {copies}"
        # Neither a lost lease nor a cursor moved by someone else: the copy
        # was this checkpoint's (a pause for a DynamoDB call that timed
        # out under load would be a fair one, so pauses are not counted).
        assert "taken over" not in log, log[-4000:]
        assert "something else moved it" not in log, log[-4000:]
        copied_once(topic, RECORDS)


def test_a_flow_whose_first_marker_write_is_sent_again_still_starts(tmp_path, monkeypatch):
    """The first plan of a flow writes its marker on condition that there
    is none: DynamoDB keeps no token for a single write, so the SDK's copy
    of it, after a lost answer, is refused by the marker the first copy
    wrote. That is still this plan's own start, not a flow started before:
    a flow that does not detect new topics copies only the topics of its
    first plan, and read as started before, it had none and copied nothing,
    then and at every plan after, with exit 0."""
    topic = loaded("marker-sent-again", 100, value_bytes=1)
    with state_store_behind_a_proxy(monkeypatch) as proxy:
        proxy.arm("PutItem", '"#flow"')
        kc, ri = write_config(tmp_path, [topic], topic_replication={"DetectAndCopyNewTopics": False})
        res = Ferry(kc, ri).run("--once", timeout=300)
        log = res.stdout + res.stderr
        assert res.returncode == 0, log[-4000:]
        assert len(proxy.copies_of_held()) >= 2, f"the marker's write was not sent again: {proxy.copies_of_held()}"
        copied_once(topic, 100)
        # And the next run (a later plan) goes on copying the same topic.
        p = producer(SOURCE)
        p.produce(topic, partition=0, key=b"later", value=b"v")
        assert p.flush(30) == 0
        res = Ferry(kc, ri).run("--once", timeout=300)
        assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
        assert [r["key"] for r in read_partition(TARGET, topic, 0)][-1] == b"later"


# DynamoDB's answer to a transaction that met another write of one of its
# items in flight (the documented shape of TransactionCanceledException).
CONFLICT = {
    "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
    "Message": "Transaction cancelled, please refer cancellation reasons for specific reasons [TransactionConflict, None]",
    "CancellationReasons": [
        {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"},
        {"Code": "None"},
    ],
}


@pytest.mark.parametrize("conflicts", [2, 4])
def test_a_checkpoint_cancelled_for_a_conflict_is_sent_again(tmp_path, monkeypatch, conflicts):
    """DynamoDB cancels a transaction that meets another write of one of its
    items in flight (a plan recording a cursor's topic ids, a successor
    claiming its hand-off, as the holder checkpoints): TransactionConflict,
    nothing written. moto answers one call at a time and never does; the
    proxy answers so for the first checkpoint, twice: the holder sends it
    again rather than pause the partition until the next invocation. Four
    times, one more than it sends it again: the partition pauses, saying
    why and on which table, and the next round goes on, each record once."""
    topic = loaded("conflict", RECORDS)
    with state_store_behind_a_proxy(monkeypatch) as proxy:
        proxy.refuse("TransactWriteItems", "next_source_offset = :to", 400, CONFLICT, times=conflicts)
        kc, ri = write_config(tmp_path, [topic])
        res = Ferry(kc, ri).run("--once", "--produce-batch-max-bytes", "20000", "--checkpoint-seconds", "0", timeout=300)
        log = res.stdout + res.stderr
        assert res.returncode == 0, log[-4000:]
        assert proxy.answered == conflicts, f"the proxy refused {proxy.answered} checkpoints: the scenario did not happen"
        if conflicts <= 3:
            assert "TransactionConflict" not in log, log[-4000:]
        else:
            assert "partition paused" in log and "TransactionConflict" in log, log[-4000:]
            assert "-cursors failed" in log, "the error names the cursors table, whose item was refused"
        copied_once(topic, RECORDS)


def test_a_single_write_refused_for_a_transaction_conflict_is_sent_again(tmp_path, monkeypatch):
    """DynamoDB refuses a single write to an item a transaction is writing
    at that moment with TransactionConflictException (a successor claiming
    a hand-off, or taking a lease, as the holder checkpoints): nothing was
    written. The SDK does not retry it of itself; Ferry's DynamoDB client
    does (ferry_adapters::state::dynamodb_client). The proxy refuses the
    first lease taken so."""
    topic = loaded("single-conflict", 100, value_bytes=1)
    with state_store_behind_a_proxy(monkeypatch) as proxy:
        conflict = {"__type": "com.amazonaws.dynamodb.v20120810#TransactionConflictException",
                    "message": "Transaction is ongoing for the item"}
        proxy.refuse("UpdateItem", "lease_epoch = lease_epoch + :one", 400, conflict, times=1)
        kc, ri = write_config(tmp_path, [topic])
        res = Ferry(kc, ri).run("--once", timeout=300)
        log = res.stdout + res.stderr
        assert res.returncode == 0, log[-4000:]
        assert proxy.answered == 1, f"the proxy refused {proxy.answered} leases: the scenario did not happen"
        assert "TransactionConflict" not in log, log[-4000:]
        assert "partition paused" not in log, log[-4000:]
        copied_once(topic, 100)


def test_a_backfill_waits_for_copies_whose_checkpoints_were_refused(tmp_path, monkeypatch):
    """A flow started at LATEST copies its first new records, and DynamoDB
    refuses every transaction for a while: every checkpoint of them, the
    stopped partition's last one too, and the next holders' reconciles.
    The first worker gives its lease back with the copies on the target and
    the cursor saying nothing was replicated. A backfill must not move that
    cursor back under them (older records would follow newer ones, and the
    next holder would match the copies to the wrong source records): it is
    refused until a run has reconciled them, and the target holds each
    record once, in order."""
    topic = loaded("refused-checkpoints", 0)
    kc, ri = write_config(tmp_path, [topic], starting="LATEST")
    ferry = Ferry(kc, ri)
    assert ferry.run("--once").returncode == 0
    p = producer(SOURCE)
    for k in keys(10):
        p.produce(topic, partition=0, key=k, value=b"v")
    assert p.flush(30) == 0
    with state_store_behind_a_proxy(monkeypatch) as proxy:
        proxy.refuse("TransactWriteItems", "TransactItems", 400, CONFLICT, times=1_000_000)
        # `run --once` pauses the partition round after round (its plans
        # succeed, so it does not give up): stopped once the second holder
        # has been refused its reconcile, after the first gave its lease back.
        log_path = tmp_path / "refused.log"
        run = ferry.spawn("--once", "--lease-ms", "1000", "--round-seconds", "5", log=log_path)
        try:
            deadline = time.time() + 120
            while log_path.read_text(errors="replace").count("partition paused") < 2 or \
                    "could not checkpoint a stopped partition" not in log_path.read_text(errors="replace"):
                assert run.poll() is None and time.time() < deadline, log_path.read_text(errors="replace")[-4000:]
                time.sleep(0.2)
        finally:
            run.kill()
            run.wait()
        time.sleep(1.2)  # the second holder's lease lapses
        proxy.refuse("TransactWriteItems", "TransactItems", 400, CONFLICT, times=0)
        backfill = ferry.args("backfill", "--topics", topic, "--from", "EARLIEST")
        refused = subprocess.run(backfill, capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0, "a backfill over copies no checkpoint holds must be refused: " + refused.stdout
        assert "without its writes checkpointed" in refused.stderr, refused.stderr
        final = ferry.run("--once", "--lease-ms", "1000", env={"RUST_LOG": "warn,ferry_engine=info"})
        assert final.returncode == 0, final.stderr[-4000:]
        assert "reconciled records the previous holder wrote" in final.stdout + final.stderr
    copied_once(topic, 10)
