"""The producers table stays bounded. Every Replicate of a flow with
IDENTICAL names registers a producer id of its own, which the opposite
flow looks up for every batch it meets, so it must not go while a record
written with it can still be read; and it must go once none can, or the
table grows by an item an invocation for ever. Each invocation records
where its records end in each target partition; a plan deletes the item
once every partition's log start has passed those ends, and only a grace
after it first saw that (a reader may have fetched such a record just
before it went and look it up only now)."""

import time

from confluent_kafka import TopicPartition as KTP
from confluent_kafka.admin import AdminClient

from conftest import (SOURCE, TARGET, Ferry, create_topic, dynamo, produce_keys, read_partition, stored_batches, unique,
                      write_config)
from support.held_answer_proxy import state_store_behind_a_proxy


def items(ferry: Ferry) -> dict[int, dict]:
    """Every producer item of this replicator, by producer id."""
    out, start = {}, None
    while True:
        page = dynamo().scan(TableName=f"{ferry.prefix}-producers", ConsistentRead=True,
                             **({"ExclusiveStartKey": start} if start else {}))
        for i in page["Items"]:
            out[int(i["producer_id"]["N"])] = i
        start = page.get("LastEvaluatedKey")
        if not start:
            return out


def ends(item: dict) -> dict[str, int] | None:
    return {k: int(v["N"]) for k, v in item["ends"]["M"].items()} if "ends" in item else None


def delete_below(topic: str, offset: int) -> None:
    admin = AdminClient({"bootstrap.servers": TARGET})
    for f in admin.delete_records([KTP(topic, 0, offset)]).values():
        f.result(timeout=30)


def test_a_producer_item_goes_once_its_records_are_gone_and_not_before(tmp_path):
    topic = unique("producer-items")
    create_topic(SOURCE, topic, 1)
    create_topic(TARGET, topic, 1)
    produce_keys(SOURCE, topic, [f"a-{i}" for i in range(20)])
    kc, ri = write_config(tmp_path, [topic], both_ways=True)
    ferry = Ferry(kc, ri)
    first = ferry.run("--once")
    assert first.returncode == 0, first.stderr
    # Once more: the flow back passes over the copies (its cursor past
    # them), so deleting them on the target loses it nothing.
    assert ferry.run("--once").returncode == 0
    # The copy's producer: its records end at 20 on the target.
    wrote = {pid: i for pid, i in items(ferry).items() if ends(i) == {f"{topic}/0": 20}}
    assert len(wrote) == 1, {pid: ends(i) for pid, i in items(ferry).items()}
    [copier] = wrote
    idle_before = {pid for pid, i in items(ferry).items() if ends(i) == {}}
    assert idle_before, "invocations that wrote nothing record that too"

    # Half its records gone: kept, not even noted.
    delete_below(topic, 10)
    assert ferry.run("--once").returncode == 0
    assert copier in items(ferry) and "passed_ms" not in items(ferry)[copier]
    # All gone: noted, and kept for the grace (15 minutes by default).
    delete_below(topic, 20)
    assert ferry.run("--once").returncode == 0
    assert ferry.run("--once").returncode == 0
    assert "passed_ms" in items(ferry)[copier], "every record below the log start: noted"
    # Past a (shortened) grace: deleted, with the idle ones noted before.
    time.sleep(1.5)
    pruned = ferry.run("--once", "--producer-prune-grace-seconds", "1")
    assert pruned.returncode == 0, pruned.stderr
    left = items(ferry)
    assert copier not in left
    assert not idle_before & set(left), "items that wrote nothing go too"

    # Both ways still copy without sending anything back: the ids of the
    # records that can still be read are all kept.
    produce_keys(SOURCE, topic, [f"b-{i}" for i in range(10)])
    produce_keys(TARGET, topic, [f"t-{i}" for i in range(5)])
    assert ferry.run("--once").returncode == 0
    assert ferry.run("--once").returncode == 0
    on_source = [r["key"].decode() for r in read_partition(SOURCE, topic, 0)]
    on_target = [r["key"].decode() for r in read_partition(TARGET, topic, 0)]
    assert sorted(on_source) == sorted([f"a-{i}" for i in range(20)] + [f"b-{i}" for i in range(10)] + [f"t-{i}" for i in range(5)])
    assert sorted(on_target) == sorted([f"b-{i}" for i in range(10)] + [f"t-{i}" for i in range(5)])


def test_an_invocation_that_recorded_no_ends_is_pruned_once_it_can_write_no_more(tmp_path, monkeypatch):
    """The invocation that copies the records cannot record where they end
    (the state store refuses that write; a crash or a batch in flight at
    the end do the same). It registered the partitions it may write to and
    until when: once that is past by the grace, the plan takes the
    partitions' ends for its own, and the item goes with the records."""
    topic = unique("producer-no-ends")
    create_topic(SOURCE, topic, 1)
    create_topic(TARGET, topic, 1)
    kc, ri = write_config(tmp_path, [topic], both_ways=True)
    ferry = Ferry(kc, ri)
    assert ferry.run("--once").returncode == 0
    produce_keys(SOURCE, topic, [f"a-{i}" for i in range(20)])
    with state_store_behind_a_proxy(monkeypatch) as proxy:
        refused = {"__type": "com.amazon.coral.validate#ValidationException", "Message": "refused by the test"}
        proxy.refuse("UpdateItem", "released_ms", 400, refused, times=1_000)
        res = ferry.run("--once", "--round-seconds", "3", env={"RUST_LOG": "warn,ferry_engine=info"})
        assert res.returncode == 0, res.stderr
        assert proxy.answered >= 1, "no invocation tried to record its ends"
        proxy.refuse("UpdateItem", "released_ms", 400, refused, times=0)
    copiers = {int(b["producerId"]) for b in stored_batches("target", topic, 0) if b.get("isControl") == "false"}
    assert copiers and all("ends" not in items(ferry)[pid] for pid in copiers), copiers
    assert ferry.run("--once").returncode == 0  # the flow back passes over the copies
    delete_below(topic, 20)
    time.sleep(4)  # past its round (3 s) and the grace below
    for _ in range(3):
        assert ferry.run("--once", "--producer-prune-grace-seconds", "1").returncode == 0
        time.sleep(1.2)
    assert not copiers & set(items(ferry)), {pid: items(ferry).get(pid) for pid in copiers}


def test_an_item_whose_topic_was_deleted_goes_too(tmp_path):
    """A topic deleted from both clusters (decommissioned) holds no record
    any more: the items of the batches that wrote to it go once the rest of
    their records are gone. They were kept for ever (the partition missing
    from the target's answer kept them; reproduced on 7ca77d2)."""
    kept, dropped = unique("items-kept"), unique("items-dropped")
    for t in (kept, dropped):
        create_topic(SOURCE, t, 1)
        produce_keys(SOURCE, t, [f"{t}-{i}" for i in range(5)])
    kc, ri = write_config(tmp_path, [kept, dropped])
    ferry = Ferry(kc, ri)
    assert ferry.run("--once").returncode == 0
    wrote = [pid for pid, i in items(ferry).items() if ends(i) == {f"{kept}/0": 5, f"{dropped}/0": 5}]
    assert len(wrote) == 1, {pid: ends(i) for pid, i in items(ferry).items()}
    from support.topics import delete_topic
    for bootstrap in (SOURCE, TARGET):
        delete_topic(bootstrap, dropped)
    delete_below(kept, 5)
    for _ in range(2):
        res = ferry.run("--once")
        assert res.returncode == 0, res.stderr[-2000:]
    assert "passed_ms" in items(ferry)[wrote[0]], "noted"
    time.sleep(1.5)
    assert ferry.run("--once", "--producer-prune-grace-seconds", "1").returncode == 0
    assert wrote[0] not in items(ferry)


def test_a_note_that_records_were_gone_is_taken_back_when_a_later_look_finds_one(tmp_path):
    """A look that wrongly found an item's records gone (a topic one
    metadata answer left out; within one plan, such an answer now serves
    every page) noted it for good, and any later wrong look deleted it,
    with it the opposite flow's knowledge of those records (helper-70's
    review). A look that finds a record still there takes the note back."""
    topic = unique("items-noted")
    create_topic(SOURCE, topic, 1)
    produce_keys(SOURCE, topic, [f"k{i}" for i in range(5)])
    kc, ri = write_config(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    assert ferry.run("--once").returncode == 0
    [copier] = [pid for pid, i in items(ferry).items() if ends(i) == {f"{topic}/0": 5}]
    # What a wrong look left: the item noted as gone an hour ago.
    key = {"cluster": items(ferry)[copier]["cluster"], "producer_id": {"N": str(copier)}}
    dynamo().update_item(TableName=f"{ferry.prefix}-producers", Key=key, UpdateExpression="SET passed_ms = :p",
                         ExpressionAttributeValues={":p": {"N": str(int(time.time() * 1000) - 3_600_000)}})
    assert ferry.run("--once", "--producer-prune-grace-seconds", "1").returncode == 0
    assert copier in items(ferry), "an item deleted while its records are on the target"
    assert "passed_ms" not in items(ferry)[copier], "the wrong note stands"
