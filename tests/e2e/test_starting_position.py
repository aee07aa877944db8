"""StartingPosition LATEST replicates only what arrives after the start;
EARLIEST replicates everything; a first plan that does not finish leaves
the flow's start where it was, whatever Ferry wrote the marker."""

import json
import os
import subprocess
import time

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions

from conftest import SOURCE, TARGET, Ferry, create_topic, dynamo, producer, read_partition, unique, write_config
from support.held_answer_proxy import state_store_behind_a_proxy


def produce(topic: str, keys: list[str]) -> None:
    p = producer(SOURCE)
    for k in keys:
        p.produce(topic, partition=0, key=k.encode(), value=b"v")
    assert p.flush(30) == 0


def set_target_cleanup_policy(topic: str, policy: str) -> None:
    admin = AdminClient({"bootstrap.servers": TARGET})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    res.add_incremental_config(ConfigEntry("cleanup.policy", policy, incremental_operation=AlterConfigOpType.SET))
    admin.incremental_alter_configs([res])[res].result(timeout=30)
    # The broker applies the controller's record a moment later.
    deadline = time.time() + 30
    while admin.describe_configs([res])[res].result(timeout=30)["cleanup.policy"].value != policy:
        assert time.time() < deadline, f"cleanup.policy of {topic} is not {policy} after 30 s"
        time.sleep(0.1)


def refused_first_plan(tmp_path, name: str, detect: bool, before: int) -> tuple[str, Ferry, subprocess.CompletedProcess]:
    """A new topic holding `before` records, a flow of it at LATEST whose
    first plan is refused (the target topic, made by someone else, is
    compacted and the source's is not), and that refused run."""
    topic = unique(name)
    create_topic(SOURCE, topic, 1)
    create_topic(TARGET, topic, 1, config={"cleanup.policy": "compact"})
    produce(topic, [f"before-{i}" for i in range(before)])
    kc, ri = write_config(tmp_path, [topic], starting="LATEST", topic_replication={"DetectAndCopyNewTopics": detect})
    ferry = Ferry(kc, ri)
    return topic, ferry, ferry.run("--once", timeout=120)


def test_latest_replicates_only_new_records(tmp_path):
    topic = unique("latest")
    create_topic(SOURCE, topic, 1)
    produce(topic, [f"before-{i}" for i in range(50)])
    kc, ri = write_config(tmp_path, [topic], starting="LATEST")
    ferry = Ferry(kc, ri)
    first = ferry.run("--once")
    assert first.returncode == 0, first.stderr
    assert read_partition(TARGET, topic, 0) == []
    produce(topic, [f"after-{i}" for i in range(30)])
    second = ferry.run("--once")
    assert second.returncode == 0, second.stderr
    keys = [r["key"].decode() for r in read_partition(TARGET, topic, 0)]
    assert keys == [f"after-{i}" for i in range(30)]


def test_earliest_replicates_everything(tmp_path):
    topic = unique("earliest")
    create_topic(SOURCE, topic, 1)
    produce(topic, [f"before-{i}" for i in range(50)])
    kc, ri = write_config(tmp_path, [topic], starting="EARLIEST")
    assert Ferry(kc, ri).run("--once").returncode == 0
    assert len(read_partition(TARGET, topic, 0)) == 50


@pytest.mark.parametrize("detect", [False, True], ids=["listed-topics-only", "detecting-new-topics"])
def test_a_topic_refused_in_the_first_plan_starts_where_the_flow_started(tmp_path, detect):
    """The first plan refuses the flow's topic (the target topic, made by
    someone else, is compacted and the source's is not) and still starts
    the flow: the topic's cursor stands at StartingPosition as of then.
    After the operator mends the target, the records produced since the
    first plan, while the topic was refused too, are copied and those
    before it are not; with DetectAndCopyNewTopics off the listed topic is
    still copied (a refused first plan used to start nothing, and the
    next plan's LATEST skipped what came in between)."""
    topic, ferry, refused = refused_first_plan(tmp_path, "refused-first", detect, 50)
    assert refused.returncode == 1, refused.stderr[-3000:]
    assert "cleanup.policy=compact" in refused.stderr, refused.stderr
    assert read_partition(TARGET, topic, 0, timeout_s=3) == []
    produce(topic, [f"during-{i}" for i in range(10)])
    assert ferry.run("--once").returncode == 1, "still refused"
    # The operator does what the error says.
    set_target_cleanup_policy(topic, "delete")
    mended = ferry.run("--once")
    assert mended.returncode == 0, mended.stderr
    produce(topic, [f"after-{i}" for i in range(30)])
    assert ferry.run("--once").returncode == 0
    keys = [r["key"].decode() for r in read_partition(TARGET, topic, 0, timeout_s=20)]
    assert keys == [f"during-{i}" for i in range(10)] + [f"after-{i}" for i in range(30)]


def test_a_first_plan_cut_short_after_its_cursors_loses_nothing_after_the_flow_started(tmp_path, monkeypatch):
    """The first plan makes its cursors at LATEST and is cut short before it
    records that it finished (a Plan timeout there; here the state store
    refuses that write). The source topic then grows a partition, and both
    get records. The next plan is the first again, but the flow started
    with the first one: the new partition's records, all produced after
    that, are copied, however they are stamped, as are the old
    partition's."""
    topic = unique("first-cut-short")
    create_topic(SOURCE, topic, 1)
    produce(topic, [f"before-{i}" for i in range(5)])
    kc, ri = write_config(tmp_path, [topic], starting="LATEST")
    ferry = Ferry(kc, ri)
    with state_store_behind_a_proxy(monkeypatch) as proxy:
        refused = {"__type": "com.amazon.coral.validate#ValidationException", "Message": "refused by the test"}
        proxy.refuse("UpdateItem", "first_plan_done", 400, refused, times=100)
        cut = subprocess.run(ferry.args("plan"), capture_output=True, text=True, timeout=120)
        assert cut.returncode != 0, cut.stdout
        assert proxy.answered >= 1, "the plan never tried to record that it finished"
        proxy.refuse("UpdateItem", "first_plan_done", 400, refused, times=0)
        produce(topic, [f"p0-{i}" for i in range(5)])
        admin = AdminClient({"bootstrap.servers": SOURCE})
        admin.create_partitions([NewPartitions(topic, 2)])[topic].result(timeout=30)
        # Stamped an hour ago by their producer (CreateTime is the
        # producer's: a replayed or event-time stream): the record's time
        # says nothing of when it arrived.
        p = producer(SOURCE)
        for i in range(5):
            p.produce(topic, partition=1, key=f"p1-{i}".encode(), value=b"v", timestamp=int(time.time() * 1000) - 3_600_000)
        assert p.flush(30) == 0
        res = ferry.run("--once")
        assert res.returncode == 0, res.stderr
    assert [r["key"].decode() for r in read_partition(TARGET, topic, 0)] == [f"p0-{i}" for i in range(5)]
    assert [r["key"].decode() for r in read_partition(TARGET, topic, 1)] == [f"p1-{i}" for i in range(5)]


def test_a_first_plan_still_running_is_not_taken_for_one_cut_short(tmp_path):
    """A large first plan is still making cursors when the next execution's
    plan starts (a schedule of a minute, a plan of longer). That plan sees
    a first plan with some cursors and no record of its end, as one cut
    short looks, and must not start the other partitions at their first
    record: it leaves the flow to the plan running it, and the records
    produced before the flow started stay uncopied (LATEST). A `run`
    watching the hold longer than a killed plan's is taken over (45 s)
    leaves it too: the plan renews it."""
    topic = three_partitions_of_five("first-still-running", "before")
    kc, ri = write_config(tmp_path, [topic], starting="LATEST")
    ferry = Ferry(kc, ri)
    slow = plan_at_its_failpoint(ferry, 60)
    once = None
    try:
        other = subprocess.run(ferry.args("plan"), capture_output=True, text=True, timeout=120)
        assert other.returncode == 0, other.stderr
        assert "running in another plan" in other.stderr, other.stderr
        # `run --once` meanwhile is not done: the flow is not across until
        # the plan holding it has started it.
        once = subprocess.Popen(ferry.args("run", "--once"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(50)
        assert once.poll() is None, "run --once ended while the flow's first plan was still running elsewhere"
        slow.stderr.read()
        assert slow.wait(timeout=120) == 0
        assert once.wait(timeout=120) == 0
        assert "took the flow's first plan" not in once.stderr.read()
    finally:
        slow.kill()
        if once is not None:
            once.kill()
    p = producer(SOURCE)
    for part in range(3):
        for i in range(3):
            p.produce(topic, partition=part, key=f"after-{part}-{i}".encode(), value=b"v")
    assert p.flush(30) == 0
    res = ferry.run("--once")
    assert res.returncode == 0, res.stderr
    for part in range(3):
        keys = [r["key"].decode() for r in read_partition(TARGET, topic, part, timeout_s=20)]
        assert keys == [f"after-{part}-{i}" for i in range(3)], f"partition {part}"


def test_a_first_plan_killed_is_taken_over_by_a_run_that_watched_it_go_silent(tmp_path):
    """A `ferry plan` (or `ferry run`) killed in the flow's first plan
    leaves its hold on it, which it renewed every 2 s and which says it
    may run ten minutes more (against other machines' clocks). A `ferry
    run` that watches the hold stay unchanged for 45 s takes the first
    plan over and copies everything, instead of waiting the ten minutes
    (nothing copied, `--once` stalled) it used to."""
    topic = three_partitions_of_five("first-killed", "k")
    kc, ri = write_config(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    killed = plan_at_its_failpoint(ferry, 600)
    killed.kill()
    killed.wait()
    started = time.time()
    res = ferry.run("--once", "--stall-seconds", "60", env={"RUST_LOG": "warn,ferry_engine=info"})
    took = time.time() - started
    assert res.returncode == 0, res.stdout + res.stderr
    assert "took the flow's first plan from a plan outside Lambda that stopped renewing" in res.stderr, res.stderr
    assert 45 <= took < 120, f"taken over after {took:.0f} s"
    for part in range(3):
        keys = [r["key"].decode() for r in read_partition(TARGET, topic, part, timeout_s=20)]
        assert keys == [f"k-{part}-{i}" for i in range(5)], f"partition {part}"


def three_partitions_of_five(name: str, prefix: str) -> str:
    """A new source topic of 3 partitions, 5 records each keyed
    `{prefix}-{partition}-{i}`; its name."""
    topic = unique(name)
    create_topic(SOURCE, topic, 3)
    p = producer(SOURCE)
    for part in range(3):
        for i in range(5):
            p.produce(topic, partition=part, key=f"{prefix}-{part}-{i}".encode(), value=b"v")
    assert p.flush(30) == 0
    return topic


def plan_at_its_failpoint(ferry: Ferry, secs: int) -> subprocess.Popen:
    """`ferry plan` stalled `secs` seconds in the flow's first plan, with
    partition 0's cursors made (its stderr still open)."""
    plan = subprocess.Popen(ferry.args("plan"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, FERRY_FAILPOINT=f"stall-making-cursors:{secs}"))
    for line in plan.stderr:
        if "failpoint stall-making-cursors" in line:
            break
    else:
        pytest.fail(f"the plan never reached its failpoint (exit {plan.wait()})")
    time.sleep(2)  # partition 0's cursor is written
    return plan


def test_a_flow_an_earlier_ferry_left_unstarted_is_started_after_the_upgrade(tmp_path):
    """An earlier Ferry wrote the flow's marker before its first plan was
    refused, and did not record whether a first plan finished: a flow that
    detects no new topics and has no cursor was stuck, copying nothing. The
    marker is made as that Ferry left it; after the operator's fix, the
    listed topic is copied from StartingPosition as of the flow's start."""
    topic, ferry, refused = refused_first_plan(tmp_path, "legacy-marker", False, 20)
    assert refused.returncode != 0
    # What that Ferry left: the marker, no record of a first plan, and
    # (its plan refused as a whole) no cursor.
    table = f"{ferry.prefix}-cursors"
    cursors = [i for i in dynamo().scan(TableName=table, ConsistentRead=True)["Items"] if i.get("topic", {}).get("S") == topic]
    assert cursors, "this Ferry's refused first plan made the topic's cursor"
    for c in cursors:
        dynamo().delete_item(TableName=table, Key={"flow": c["flow"], "partition": c["partition"]})
    marker = {"flow": {"S": f"{ferry.name}/source>target"}, "partition": {"S": "#flow"}}
    dynamo().update_item(TableName=table, Key=marker, UpdateExpression="REMOVE first_plan_open, first_plan_done, started_by")
    set_target_cleanup_policy(topic, "delete")
    mended = ferry.run("--once", env={"RUST_LOG": "warn,ferry_engine=info"})
    assert mended.returncode == 0, mended.stderr
    assert "planned as its first plan" in mended.stdout + mended.stderr
    def first_plan_state() -> tuple:
        item = dynamo().get_item(TableName=f"{ferry.prefix}-cursors", Key=marker, ConsistentRead=True)["Item"]
        return tuple(item.get(a, {}).get("BOOL") for a in ("first_plan_open", "first_plan_done"))

    assert first_plan_state() == (None, True), "the plan that started it recorded its first plan's end"
    produce(topic, [f"after-{i}" for i in range(10)])
    assert ferry.run("--once").returncode == 0
    assert [r["key"].decode() for r in read_partition(TARGET, topic, 0)] == [f"after-{i}" for i in range(10)]
    # A started flow's marker from an earlier Ferry (cursors, no record of
    # its first plan) is recorded as started by the next plan: what its
    # cursors become later (its topics deleted) cannot make it first again.
    dynamo().update_item(TableName=f"{ferry.prefix}-cursors", Key=marker, UpdateExpression="REMOVE first_plan_done")
    assert first_plan_state() == (None, None)
    assert ferry.run("--once").returncode == 0
    assert first_plan_state() == (None, True)


def test_a_topic_listed_after_the_flow_started_is_named_when_not_copied(tmp_path):
    """With DetectAndCopyNewTopics off, a topic added to TopicsToReplicate
    after the flow started is not copied (documented: `ferry backfill`
    starts it); each plan now says so by name, where it said nothing."""
    first, added = unique("listed-first"), unique("listed-later")
    create_topic(SOURCE, first, 1)
    kc, ri = write_config(tmp_path, [first], topic_replication={"DetectAndCopyNewTopics": False})
    ferry = Ferry(kc, ri)
    assert ferry.run("--once").returncode == 0
    create_topic(SOURCE, added, 1)
    produce(added, ["k"])
    info = json.loads(ri.read_text())
    info[0]["TopicReplication"]["TopicsToReplicate"].append(added)
    ri.write_text(json.dumps(info))
    res = ferry.run("--once", timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "not copied (DetectAndCopyNewTopics is false)" in out and added in out, out[-3000:]
    assert "ferry backfill --topics" in out, out[-3000:]
