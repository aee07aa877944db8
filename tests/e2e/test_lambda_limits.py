"""Lambda's resources, enforced in the rehearsal (local_sfn.py and
lambda_sandbox.py): each function instance runs with its template
MemorySize as a kernel memory cap, the CPU share that memory buys (one vCPU
per 1,769 MB) as a CPU quota, and its Timeout as the deadline the Runtime
API hands it; past the deadline the environment is killed and the
invocation answered `Sandbox.Timedout`, past the memory cap
`Runtime.OutOfMemory`, as Lambda answers. These tests show both sides: the
functions work within what the template gives them, and what exceeds it is
refused as AWS refuses it."""

import json
import os
import time
from pathlib import Path

from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from conftest import SOURCE, TARGET, committed, create_topic, producer, read_partition, unique, write_config
from support.groups import commit_at
from support.lambda_sandbox import cpu_share
from support.local_sfn import LocalStepFunctions
from support.state_machine import emf_documents, function_env, produce


def set_function(stack: dict, name: str, **values) -> None:
    stack["functions"][name].update(values)


def cgroup_of(pid: int, controller: str) -> Path:
    """The cgroup (v1) or unified path (v2) `pid` is in."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") or controllers == "":
            base = Path("/sys/fs/cgroup") / (controller if controllers else "")
            return base / path.lstrip("/")
    raise AssertionError(f"{pid} is in no {controller} cgroup")


def task_failures(sfn, ex: dict) -> list[dict]:
    history = sfn.client.get_execution_history(executionArn=ex["executionArn"], maxResults=1000)["events"]
    return [e["taskFailedEventDetails"] for e in history if e["type"] == "TaskFailed"]


def test_functions_work_within_their_memory_cpu_and_deadline(tmp_path):
    """Every instance runs inside its own cgroups with the template's memory
    and Lambda's CPU share for it; the deadline each Replicate receives is
    its Timeout from now, as an instant, and the engine stops before it:
    with a 15 s Timeout and no `stop_at_plan_end`, Replicate runs until its
    deadline and ends on its own, not killed. Had the function been given
    a later deadline (cargo-lambda's own) or ignored it, it would be killed
    at 15 s and the execution fail with Sandbox.Timedout."""
    topic = unique("limits")
    create_topic(SOURCE, topic, 4)
    produce(topic, 2000, 4)
    kc, ri = write_config(tmp_path, [topic])
    with LocalStepFunctions(function_env(kc, ri), tmp_path / "logs",
                            stack_edit=lambda s: set_function(s, "ferry-replicate", timeout=15)) as sfn:
        stack = sfn.rehearsal.stack["functions"]
        for inst in sfn.running.values():
            memory = stack[inst.name]["memory"]
            assert inst.memory == memory
            mem = cgroup_of(inst.proc.pid, "memory")
            assert "ferry-rehearsal" in str(mem), mem
            limit = mem / "memory.limit_in_bytes"
            if limit.exists():  # v1
                assert int(limit.read_text()) == memory * 2**20
                quota = int((cgroup_of(inst.proc.pid, "cpu") / "cpu.cfs_quota_us").read_text())
            else:
                assert int((mem / "memory.max").read_text()) == memory * 2**20
                quota = int((mem / "cpu.max").read_text().split()[0])
            assert quota == int(100_000 * cpu_share(memory)), (inst.name, quota)
        arn = sfn.create_state_machine(max_concurrency=2)
        started = time.time()
        ex = sfn.execute(arn, {})
        took = time.time() - started
        assert ex["status"] == "SUCCEEDED", f"{ex}\n{sfn.logs()}"
        assert not task_failures(sfn, ex)
        assert not sfn.events, sfn.events  # no environment ended by timeout, memory or a crash
        assert 12 <= took, took  # Replicate used its budget: it was not told to stop early
        assert sum(len(read_partition(TARGET, topic, p)) for p in range(4)) == 2000
        used = sfn.resources()
        print("\nresources:", json.dumps(used, indent=1))
        for name, u in used.items():
            assert 0 < u["peak_mb"] < u["memory_mb"], (name, u)
        assert used["ferry-replicate"]["cpu_seconds"] > 0
        sfn.assert_rehearsed()


def test_a_function_past_its_timeout_is_ended_as_lambda_ends_it(tmp_path):
    """A Replicate whose process stalls (a failpoint sleeps the whole
    process with a batch ready, as a host pause would) past its Timeout of
    8 s is killed at 8 s; the invocation fails with `Sandbox.Timedout`, the
    execution fails (the batch failed) and its environment is replaced by a
    cold one. Nothing was written, and once the stall is gone the next
    execution copies every record exactly once. Without the enforcement the
    stalled process would wake after 40 s and the execution succeed."""
    topic = unique("timeout")
    create_topic(SOURCE, topic, 1)
    produce(topic, 300, 1)
    kc, ri = write_config(tmp_path, [topic])
    env = {**function_env(kc, ri), "FERRY_FAILPOINT": "stall-before-produce:40"}
    with LocalStepFunctions(env, tmp_path / "logs", replicate_instances=1,
                            stack_edit=lambda s: set_function(s, "ferry-replicate", timeout=8), max_concurrency=1) as sfn:
        arn = sfn.create_state_machine()
        started = time.time()
        ex = sfn.execute(arn, {"stop_at_plan_end": True})
        took = time.time() - started
        assert ex["status"] == "FAILED", f"{ex}\n{sfn.logs()}"
        failed = task_failures(sfn, ex)
        assert [f["error"] for f in failed] == ["Sandbox.Timedout"], failed
        assert "Task timed out after 8.00 seconds" in failed[0]["cause"], failed
        assert took < 35, took  # not the 40 s stall
        assert [e["errorType"] for e in sfn.events] == ["Sandbox.Timedout"]
        assert sfn.resources()["ferry-replicate"]["ended"] == ["timed out"]
        assert read_partition(TARGET, topic, 0, timeout_s=3) == []

        # The killed worker's lease (30 s) keeps others off the partition
        # until it lapses; then an execution takes over and reconciles.
        del sfn.env["FERRY_FAILPOINT"]
        sfn.cold_start()
        deadline = time.time() + 90
        while True:
            ok = sfn.execute(arn, {"stop_at_plan_end": True})
            assert ok["status"] == "SUCCEEDED", f"{ok}\n{sfn.logs()}"
            if len(read_partition(TARGET, topic, 0, timeout_s=3)) or time.time() > deadline:
                break
            time.sleep(3)
        assert "partition leased by another worker" in sfn.function_log("ferry-replicate")
        assert [r["key"] for r in read_partition(TARGET, topic, 0)] == [r["key"] for r in read_partition(SOURCE, topic, 0)]
        sfn.assert_rehearsed()


def test_a_function_past_its_memory_is_ended_as_lambda_ends_it(tmp_path):
    """The memory cap is the kernel's, not a number compared afterwards:
    Replicate given 7 MB (below Lambda's 128 MB minimum, which the rehearsal
    refuses in a template; set here on the parsed stack to show the cap
    bites) is killed by the kernel copying 60 records of 900 KB; the
    invocation fails with `Runtime.OutOfMemory` as Lambda reports it, the
    execution fails, nothing is committed twice, and with its template
    memory back a later execution copies every record exactly once."""
    topic = unique("oom")
    size = 900_000
    create_topic(SOURCE, topic, 1, {"max.message.bytes": str(2 * size)})
    create_topic(TARGET, topic, 1, {"max.message.bytes": str(2 * size)})
    p = producer(SOURCE, **{"message.max.bytes": 2 * size + 1000})
    for i in range(60):
        p.produce(topic, partition=0, key=str(i).encode(), value=os.urandom(size))
    assert p.flush(60) == 0
    kc, ri = write_config(tmp_path, [topic])
    deployed = {}

    def starve(stack):
        deployed["memory"] = stack["functions"]["ferry-replicate"]["memory"]
        set_function(stack, "ferry-replicate", memory=7)

    with LocalStepFunctions(function_env(kc, ri), tmp_path / "logs", replicate_instances=1, stack_edit=starve, max_concurrency=1) as sfn:
        arn = sfn.create_state_machine()
        ex = sfn.execute(arn, {"stop_at_plan_end": True})
        assert ex["status"] == "FAILED", f"{ex}\n{sfn.logs()}"
        failed = task_failures(sfn, ex)
        assert [f["error"] for f in failed] == ["Runtime.OutOfMemory"], failed
        used = sfn.resources()["ferry-replicate"]
        assert used["ended"] == ["out of memory"] and used["peak_mb"] <= 7, used

        set_function(sfn.rehearsal.stack, "ferry-replicate", memory=deployed["memory"])
        sfn.cold_start()
        deadline = time.time() + 90
        while True:
            ok = sfn.execute(arn, {"stop_at_plan_end": True})
            assert ok["status"] == "SUCCEEDED", f"{ok}\n{sfn.logs()}"
            if len(read_partition(TARGET, topic, 0, timeout_s=3)) == 60 or time.time() > deadline:
                break
            time.sleep(3)
        copied = read_partition(TARGET, topic, 0)
        assert [r["key"] for r in copied] == [str(i).encode() for i in range(60)]
        assert [r["value"] for r in copied] == [r["value"] for r in read_partition(SOURCE, topic, 0)]
        assert 0 < sfn.resources()["ferry-replicate"]["peak_mb"] < deployed["memory"]
        sfn.assert_rehearsed()


def test_group_sync_stops_before_its_deadline_and_takes_the_groups_in_turn(tmp_path):
    """SyncGroups has a Timeout too (here 30 s), and a replicator may have
    more groups than one invocation can sync (here each group's sync is
    made to take 3 s: failpoint `slow-group-sync`). SyncGroups starts no
    group in its last 20 s, records each group as it goes, and the next
    execution starts at the first group left: no invocation is killed at
    its deadline (`Sandbox.Timedout`, and everything it did unrecorded),
    and every group is committed within a few executions, each at its
    exact translation. Before, the invocation ran into its Timeout and was
    killed.

    The groups that sort first commit nothing this flow copies (only a
    topic it does not select), so their syncs record nothing. On 1b0d3c8
    the next sync took the groups it had no record of first, and those
    were these same idle groups every time: the groups after them were
    never synced."""
    topic = unique("limits-groups")
    other = unique("limits-other")
    create_topic(SOURCE, topic, 1)
    create_topic(SOURCE, other, 1)
    produce(topic, 100, 1)
    prefix = unique("limits-g")
    idle = [f"{prefix}-a{i}" for i in range(4)]
    groups = [f"{prefix}-x{i}" for i in range(4)]
    for g in idle:
        commit_at(SOURCE, g, {(other, 0): (0, "")})
    for i, g in enumerate(groups):
        commit_at(SOURCE, g, {(topic, 0): (10 + i, f"m{i}")})
    kc, ri = write_config(tmp_path, [topic], groups=[f"{prefix}-.*"])

    def slow_groups(stack):
        set_function(stack, "ferry-sync-groups", timeout=30)
        stack["functions"]["ferry-sync-groups"]["environment"]["FERRY_FAILPOINT"] = "slow-group-sync:3000"

    with LocalStepFunctions(function_env(kc, ri), tmp_path / "logs", stack_edit=slow_groups) as sfn:
        arn = sfn.create_state_machine()
        runs = []
        for _ in range(5):
            ex = sfn.execute(arn, {"stop_at_plan_end": True}, timeout=240)
            assert ex["status"] == "SUCCEEDED", f"{ex}\n{sfn.logs()}"
            assert task_failures(sfn, ex) == [], sfn.logs()
            [flow] = json.loads(ex["output"])["groups"]["flows"]
            runs.append((flow["committed"], flow["deferred"]))
            if all(committed(TARGET, g).get((topic, 0)) for g in groups):
                break
        assert "Sandbox.Timedout" not in [e["errorType"] for e in sfn.events]
        # Each invocation published how many groups it left (EMF on stdout).
        published = [d["ConsumerGroupsDeferred"] for d in emf_documents(sfn.function_log("ferry-sync-groups"))
                     if "ConsumerGroupsDeferred" in d]
        assert published == [float(d) for _, d in runs], (published, runs)
    # 8 groups of 3 s each do not fit in 30 - 20 s: the first invocation
    # left some, and the ones after it went on from there, so all 4 groups
    # with commits were committed, each once, within a few executions.
    assert runs[0][1] > 0, runs
    assert all(committed(TARGET, g).get((topic, 0)) for g in groups), runs
    assert sum(c for c, _ in runs) == 4, runs
    for i, g in enumerate(groups):
        assert committed(TARGET, g)[(topic, 0)] == (10 + i, f"m{i}"), g
    for g in idle:
        assert committed(TARGET, g) == {}, g


def test_group_sync_gives_each_flow_a_share_of_its_time(tmp_path):
    """Two flows, one each way, each with more groups than the time left
    allows (3 s a group, 30 - 20 s in all). Each flow has an equal share
    of the time (what one leaves goes to the next), so the flow synced
    second starts groups in the same execution instead of waiting for the
    first flow's groups to be done: without the shares, the first flow
    takes the whole 10 s and the second is deferred entirely, every time
    the first has that many groups."""
    topic = unique("limits-share")
    for b in (SOURCE, TARGET):
        create_topic(b, topic, 1)
    produce(topic, 100, 1)
    prefix = unique("limits-s")
    on = {SOURCE: [f"{prefix}-s{i}" for i in range(4)], TARGET: [f"{prefix}-t{i}" for i in range(4)]}
    for cluster, groups in on.items():
        for i, g in enumerate(groups):
            commit_at(cluster, g, {(topic, 0): (i, "")})
    kc, ri = write_config(tmp_path, [topic], groups=[f"{prefix}-.*"], both_ways=True)

    def slow_groups(stack):
        set_function(stack, "ferry-sync-groups", timeout=30)
        stack["functions"]["ferry-sync-groups"]["environment"]["FERRY_FAILPOINT"] = "slow-group-sync:3000"

    with LocalStepFunctions(function_env(kc, ri), tmp_path / "logs", stack_edit=slow_groups) as sfn:
        arn = sfn.create_state_machine()
        ex = sfn.execute(arn, {"stop_at_plan_end": True}, timeout=240)
        assert ex["status"] == "SUCCEEDED", f"{ex}\n{sfn.logs()}"
        assert "Sandbox.Timedout" not in [e["errorType"] for e in sfn.events]
    flows = {f["flow"]: f for f in json.loads(ex["output"])["groups"]["flows"]}
    assert sorted(flows) == ["source>target", "target>source"], flows
    # Each flow saw its own 4 groups (the flow synced second also those
    # the first had just committed on its source), started some and left
    # the rest.
    for f in flows.values():
        assert f["groups"] >= 4 and 0 < f["deferred"] < f["groups"], flows


def test_a_batch_of_many_partitions_all_behind_stays_within_the_functions_memory(tmp_path):
    """The plan sizes batches from the Map's MaxConcurrency: with one
    Replicate at a time, one batch holds all 48 partitions of a topic whose
    every partition is behind by about 1.2 MB. Each partition may hold a
    fetch (1 MiB) and two produce batches, so a batch that size could hold
    over 100 MB at once; Replicate is given Lambda's smallest memory, 128
    MB, as the kernel's cap (and its CPU share). What it holds is bounded
    for the invocation (a quarter of its memory) and each fetch response is
    held to a sixteenth: the execution succeeds, no environment is ended
    for memory, and every record arrives once."""
    topic = unique("wide")
    partitions, per_partition, size = 48, 12, 100_000
    create_topic(SOURCE, topic, partitions)
    p = producer(SOURCE)
    for part in range(partitions):
        for i in range(per_partition):
            p.produce(topic, partition=part, key=f"{part}-{i}".encode(), value=os.urandom(size))
    assert p.flush(60) == 0
    used = copied_in_one_batch_at_128_mb(tmp_path, topic, partitions, per_partition)
    print(f"\nReplicate with {partitions} partitions behind in one batch, 128 MB: {used}")


def copied_in_one_batch_at_128_mb(tmp_path, topic: str, partitions: int, per_partition: int) -> dict:
    """Executions of one Replicate at a time, given 128 MB, until every
    record of `topic` is on the target (each execution one batch of all
    its partitions); asserts none was ended for memory and every record
    arrived once, in order. Returns what Replicate used."""
    kc, ri = write_config(tmp_path, [topic])
    with LocalStepFunctions(function_env(kc, ri), tmp_path / "logs", replicate_instances=1,
                            stack_edit=lambda s: set_function(s, "ferry-replicate", memory=128), max_concurrency=1) as sfn:
        arn = sfn.create_state_machine()
        deadline = time.time() + 300
        while True:
            ex = sfn.execute(arn, {"stop_at_plan_end": True}, timeout=300)
            used = sfn.resources()["ferry-replicate"]
            assert ex["status"] == "SUCCEEDED", f"{ex}\n{used}\n{sfn.logs()[-5000:]}"
            out = json.loads(ex["output"])
            assert [b["summary"]["partitions"] for b in out["batches"]] == [partitions], out["batches"]
            if target_holds(topic, partitions, per_partition) or time.time() > deadline:
                break
        assert not used["ended"], used
        assert used["peak_mb"] < 128, used
        sfn.assert_rehearsed()
    for q in range(partitions):
        assert records_of(TARGET, topic, q) == records_of(SOURCE, topic, q), q
    return used


def records_of(cluster: str, topic: str, partition: int) -> list[tuple[bytes | None, bytes | None]]:
    return [(r["key"], r["value"]) for r in read_partition(cluster, topic, partition)]


def target_holds(topic: str, partitions: int, per_partition: int) -> bool:
    """Every partition of `topic` on the target holds `per_partition`
    records (read only once its end offset says it may)."""
    c = Consumer({"bootstrap.servers": TARGET, "group.id": unique("probe")})
    try:
        ends = [c.get_watermark_offsets(KafkaTopicPartition(topic, q), timeout=30)[1] for q in range(partitions)]
    finally:
        c.close()
    if min(ends) < per_partition:
        return False
    return all(len(read_partition(TARGET, topic, q, timeout_s=5)) >= per_partition for q in range(partitions))


def compressible_value(part: int, i: int) -> bytes:
    """About 40 KB of what topics carry: JSON events whose field names and
    most values repeat, which zstd compresses about twentyfold."""
    events = [
        {"event": "page_view", "user": f"user-{(part * 7919 + i * 31 + n) % 5000:05d}", "path": "/catalogue/widgets/blue",
         "referrer": "https://example.com/search?q=widgets", "agent": "Mozilla/5.0 (X11; Linux x86_64)", "n": n, "i": i}
        for n in range(200)
    ]
    return json.dumps(events).encode()


def test_a_batch_of_many_partitions_all_behind_on_compressed_records_stays_within_the_functions_memory(tmp_path):
    """As above, but the source's records are compressed (zstd, by its
    producer) and compress about twentyfold, as JSON events do: a fetch's
    bytes are compressed bytes, and what the invocation holds once it has
    decompressed them is many times more. Replicate, with 128 MB as the
    kernel's cap, must copy every record without being ended for memory."""
    topic = unique("wide-zstd")
    partitions, per_partition = 48, 120
    create_topic(SOURCE, topic, partitions)
    p = producer(SOURCE, **{"compression.type": "zstd", "batch.size": 1_000_000, "linger.ms": 50})
    raw = 0
    for part in range(partitions):
        for i in range(per_partition):
            v = compressible_value(part, i)
            raw += len(v)
            p.produce(topic, partition=part, key=f"{part}-{i}".encode(), value=v)
        p.poll(0)
    assert p.flush(120) == 0
    used = copied_in_one_batch_at_128_mb(tmp_path, topic, partitions, per_partition)
    print(f"\nReplicate with {partitions} partitions behind on {raw >> 20} MB of zstd records, 128 MB: {used}")


def test_a_batch_of_many_partitions_all_behind_on_small_records_stays_within_the_functions_memory(tmp_path):
    """As above, with 1.9 million records of 10 bytes, zstd-compressed by
    their producer: a small record takes several times its bytes once
    queued (its slot in the queue), and a queue keeps the room it grew to
    after it drains. Counted by their bytes, with each partition's queue
    keeping the most it ever held, they ended Replicate at 128 MB for
    memory (on 76a64c1)."""
    topic = unique("wide-small")
    partitions, per_partition = 48, 40_000
    create_topic(SOURCE, topic, partitions)
    p = producer(SOURCE, **{"compression.type": "zstd", "batch.size": 1_000_000, "linger.ms": 50})
    for part in range(partitions):
        for i in range(per_partition):
            p.produce(topic, partition=part, value=b"%010d" % i)
        p.poll(0)
    assert p.flush(120) == 0
    used = copied_in_one_batch_at_128_mb(tmp_path, topic, partitions, per_partition)
    print(f"\nReplicate with {partitions} partitions behind on {partitions * per_partition} small records, 128 MB: {used}")


def test_partitions_stopped_on_an_error_give_back_what_they_hold(tmp_path):
    """Partitions that stop on an error (here the target refuses their
    batches: its topic takes 20 KB messages) keep nothing for the rest of
    the invocation. Counted with the partitions still copying, what they
    had read (decompressed, a quarter of the memory) left no room, and no
    other partition of the batch was read again until the invocation
    ended (breaker helper-78 on 45ddb13): records written meanwhile to a
    healthy topic of the batch waited for the next execution."""
    stuck, healthy = unique("held-stuck"), unique("held-healthy")
    create_topic(SOURCE, stuck, 2)
    create_topic(TARGET, stuck, 2, config={"max.message.bytes": "20000"})
    create_topic(SOURCE, healthy, 1)
    p = producer(SOURCE, **{"compression.type": "zstd", "batch.size": 1_000_000, "linger.ms": 50})
    for part in range(2):
        for i in range(800):
            p.produce(stuck, partition=part, key=f"{part}-{i}".encode(), value=compressible_value(part, i))
        p.poll(0)
    assert p.flush(120) == 0
    kc, ri = write_config(tmp_path, [stuck, healthy])
    with LocalStepFunctions(function_env(kc, ri), tmp_path / "logs", replicate_instances=1,
                            stack_edit=lambda s: set_function(s, "ferry-replicate", memory=128, timeout=40),
                            max_concurrency=1) as sfn:
        arn = sfn.create_state_machine()
        ex = sfn.client.start_execution(stateMachineArn=arn, name=f"run-{time.time_ns()}", input="{}")["executionArn"]
        time.sleep(15)  # the stuck partitions have read and been refused
        produce(healthy, 100, 1)
        deadline = time.time() + 120
        while sfn.client.describe_execution(executionArn=ex)["status"] == "RUNNING":
            assert time.time() < deadline, sfn.logs()[-5000:]
            time.sleep(1)
        used = sfn.resources()["ferry-replicate"]
        logs = sfn.logs()
    # Both stuck partitions stopped on the target's refusal (Replicate's metric).
    assert any(stuck in line and '"ReplicationFailures":2.0' in line for line in logs.splitlines()), logs[-5000:]
    assert not used["ended"], used
    assert len(read_partition(TARGET, healthy, 0, timeout_s=5)) == 100, logs[-5000:]
