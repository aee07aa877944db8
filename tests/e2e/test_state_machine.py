"""The deployed shape, run locally: the Step Functions definition executed by
moto's Step Functions, whose Lambda tasks run the real function binaries
behind cargo-lambda's Runtime API (see local_sfn.py). An execution plans,
replicates in a Map of two concurrent Replicate functions, syncs consumer
groups, and SUCCEEDS with the records on the target; a backfill execution
starts a topic that StartingPosition LATEST had left at its end. Every
function runs under its own role from template.yaml, enforced
(iam_rehearsal.py): a call the role does not grant fails the test."""

import json
import os
import re
import subprocess
import time
from collections import Counter

from confluent_kafka import Consumer, TopicPartition

from conftest import FERRY, SOURCE, TARGET, committed, create_topic, read_partition, unique, write_config
from support.local_sfn import LocalStepFunctions, stored_batch
from support.state_machine import emf_documents, function_env, produce


def test_execution_replicates_and_backfills(tmp_path):
    live, old, old2 = unique("sfn-live"), unique("sfn-backfill"), unique("sfn-cli-backfill")
    create_topic(SOURCE, live, 4)
    for t in (old, old2):
        create_topic(SOURCE, t, 2)
        produce(t, 300, 2)  # before the first plan: LATEST leaves these behind
    group = unique("sfn-group")
    kc, ri = write_config(tmp_path, [live, old, old2], starting="LATEST", groups=[group])
    with LocalStepFunctions(function_env(kc, ri), tmp_path / "logs") as sfn:
        arn = sfn.create_state_machine(max_concurrency=2)
        # First execution: plans (both topics start at their end), replicates nothing yet.
        first = sfn.execute(arn, {"stop_at_plan_end": True})
        assert first["status"] == "SUCCEEDED", f"{first}\n{sfn.logs()}"

        produce(live, 2000, 4)
        c = Consumer({"bootstrap.servers": SOURCE, "group.id": group, "enable.auto.commit": False})
        c.commit(offsets=[TopicPartition(live, 0, 200, metadata="from-sfn")], asynchronous=False)
        c.close()
        second = sfn.execute(arn, {"max_partitions_per_batch": 2, "stop_at_plan_end": True})
        assert second["status"] == "SUCCEEDED", f"{second}\n{sfn.logs()}"
        out = json.loads(second["output"])
        # 8 partitions at 2 a batch would be 4 batches, two of them waiting
        # for the first two to end (a second wave, a whole invocation
        # later): the plan sized them from the Map's MaxConcurrency (the
        # template gives the Plan function the same parameter), 2 of 4.
        assert len(out["batches"]) == 2, out["batches"]
        assert sorted(b["summary"]["partitions"] for b in out["batches"]) == [4, 4], out["batches"]
        # Step Functions ran them at most MaxConcurrency at a time (each in
        # an environment of its own, as Lambda would).
        assert sfn.peak["ferry-replicate"] <= 2, sfn.peak
        assert sum(len(read_partition(TARGET, live, p)) for p in range(4)) == 2000
        assert [len(read_partition(TARGET, old, p)) for p in range(2)] == [0, 0]
        # SyncGroups ran: the group's offset landed on the same record.
        src_key = read_partition(SOURCE, live, 0)[200]["key"]
        t_off, meta = committed(TARGET, group)[(live, 0)]
        assert meta == "from-sfn"
        assert [r["key"] for r in read_partition(TARGET, live, 0) if r["offset"] >= t_off][0] == src_key
        assert out["groups"]["flows"][0]["committed"] >= 1
        # Report ran last: caught up, the group at the same place on both
        # clusters, so the verdict is GO; its metrics went to the log as EMF.
        readiness = out["readiness"]
        assert readiness["go"] is True, json.dumps(readiness, indent=1)
        lag = next(c for c in readiness["criteria"] if c["metric"] == "MessageLag")
        assert lag["measured"] == "0", lag
        emf = emf_documents(sfn.function_log("ferry-report"))
        live_lag = [d["MessageLag"] for d in emf if d.get("Topic") == live]
        assert live_lag and live_lag[-1] == 0, emf
        pings = {d["ClusterAlias"]: d["KafkaClusterPingSuccessCount"] for d in emf if "KafkaClusterPingSuccessCount" in d}
        assert pings == {"source": 1, "target": 1}, pings
        sent = [d for d in emf_documents(sfn.function_log("ferry-replicate")) if d.get("Topic") == live]
        assert sent and all(d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Ferry" for d in sent), sent
        # No TopicMetrics: points per topic are metrics of the replicator
        # alone (the topic a field of the line), whose cost does not grow
        # with topics.
        for d in sent + [d for d in emf if d.get("Topic") == live]:
            assert d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["ReplicatorName"]], d
        assert sum(d["ReplicatorThroughput"] > 0 for d in sent) >= 1, sent
        throttled = {d["ClusterAlias"] for d in emf_documents(sfn.function_log("ferry-replicate")) if "ThrottleTime" in d}
        assert throttled == {"source", "target"}, throttled
        # Logs are JSON lines carrying the replicator, the step and each line's cluster, topic and partition.
        name = sfn.env["FERRY_REPLICATOR_NAME"]
        lines = [json.loads(line) for line in sfn.function_log("ferry-replicate").splitlines() if line.startswith('{"timestamp"')]
        progress = [ln for ln in lines if ln["fields"]["message"] == "partition progress" and ln["fields"]["topic"] == live]
        assert progress and all(ln["span"]["replicator"] == name and ln["span"]["step"] == "replicate" for ln in progress), lines[:5]
        assert {ln["fields"]["partition"] for ln in progress} == {0, 1, 2, 3}
        assert {ln["fields"]["cluster"] for ln in progress} == {"source"}
        assert sum(ln["fields"]["records"] for ln in progress) == 2000

        # `ferry move` from an operator's shell, against the tables the
        # deployed functions write (the same code, through --table-prefix):
        # GO where SyncGroups left the group, recorded where `ferry status`
        # finds it; the executions below run with the move's item in the
        # groups table.
        state = ["--kafka-clusters", str(kc), "--replication-info", str(ri),
                 "--name", sfn.env["FERRY_REPLICATOR_NAME"], "--table-prefix", sfn.env["FERRY_TABLE_PREFIX"]]
        mv = subprocess.run([str(FERRY), "move", *state, "--group", group, "--to", "target", "--wait", "60", "--json"],
                            capture_output=True, text=True, timeout=120)
        assert mv.returncode == 0, mv.stdout + mv.stderr
        moved = json.loads(mv.stdout)
        assert moved["verdict"] == "GO" and moved["recorded"], moved
        assert [(r["topic"], r["partition"], r["source_offset"], r["offset"], r["exact"]) for r in moved["resume"]] == \
            [(live, 0, 200, t_off, True)], moved
        assert moved["resume"][0]["next_record"]["key"] == src_key.decode(), moved
        st = subprocess.run([str(FERRY), "status", *state, "--json"], capture_output=True, text=True, timeout=120)
        assert st.returncode == 0, st.stderr
        homes = json.loads(st.stdout)["moves"]
        assert [(h["group"], h["lives_on"], h["moves"]) for h in homes] == [(group, "target", 1)], homes

        # Backfill: the topic LATEST skipped, from its first record.
        back = sfn.execute(arn, {"backfill": {"topics": [old], "from": "EARLIEST"}, "stop_at_plan_end": True})
        assert back["status"] == "SUCCEEDED", f"{back}\n{sfn.logs()}"
        assert sorted(r["key"] for p in range(2) for r in read_partition(TARGET, old, p)) == \
            sorted(f"{old}-{i}".encode() for i in range(300))

        # The same from the CLI: `ferry backfill --state-machine-arn` starts an execution.
        env_cli = dict(os.environ, AWS_ENDPOINT_URL_SFN=f"http://127.0.0.1:{sfn.moto_port}")
        res = subprocess.run([str(FERRY), "backfill", "--kafka-clusters", str(kc), "--replication-info", str(ri),
                              "--state-machine-arn", arn, "--topics", old2, "--from", "1970-01-01T00:00:00Z"],
                             capture_output=True, text=True, timeout=60, env=env_cli)
        assert res.returncode == 0, res.stdout + res.stderr
        execution = re.search(r"started backfill execution (\S+)", res.stdout).group(1)
        deadline = time.time() + 180
        while (d := sfn.client.describe_execution(executionArn=execution))["status"] == "RUNNING":
            assert time.time() < deadline, sfn.logs()
            time.sleep(1)
        assert d["status"] == "SUCCEEDED", f"{d}\n{sfn.logs()}"
        assert sum(len(read_partition(TARGET, old2, p)) for p in range(2)) == 300

        # A backfill of a topic that already replicated is refused and writes nothing.
        again = sfn.execute(arn, {"backfill": {"topics": [live], "from": "EARLIEST"}, "stop_at_plan_end": True})
        assert again["status"] == "FAILED", again
        assert sum(len(read_partition(TARGET, live, p)) for p in range(4)) == 2000
        # Every call each function made was one its role in template.yaml grants.
        sfn.assert_rehearsed()


def test_overlapping_executions_never_write_twice(tmp_path):
    """A slow execution still running when the schedule fires again: both
    plan and replicate the same partitions at once; leases let one writer
    through per partition, and every record arrives exactly once."""
    topic = unique("sfn-overlap")
    create_topic(SOURCE, topic, 3)
    kc, ri = write_config(tmp_path, [topic], starting="EARLIEST")
    produce(topic, 3000, 3)
    with LocalStepFunctions(function_env(kc, ri), tmp_path / "logs", replicate_instances=1, max_concurrency=3) as sfn:
        arn = sfn.create_state_machine()
        payload = {"max_partitions_per_batch": 1, "replicate_max_seconds": 6}
        # The flow's first plan, which one plan at a time runs (another
        # leaves the flow to it): the executions after it overlap.
        first = sfn.execute(arn, dict(payload, replicate_max_seconds=2))
        assert first["status"] == "SUCCEEDED", f"{first}\n{sfn.logs()}"
        starts = [sfn.client.start_execution(stateMachineArn=arn, name=f"overlap-{i}", input=json.dumps(payload))["executionArn"]
                  for i in range(2)]
        produce(topic, 3000, 3)  # more arrives while both run
        done = []
        for ex in starts:
            deadline = time.time() + 240
            while (d := sfn.client.describe_execution(executionArn=ex))["status"] == "RUNNING":
                assert time.time() < deadline, sfn.logs()
                time.sleep(1)
            done.append(d)
        assert [d["status"] for d in done] == ["SUCCEEDED", "SUCCEEDED"], f"{done}\n{sfn.logs()}"
        stopped = [why for d in done for r in json.loads(d["output"])["batches"] for why in r["summary"]["stopped"]]
        assert "lease-held" in stopped, f"the executions did not overlap: {stopped}"
        # MaxConcurrency holds per execution, not across them: two
        # overlapping executions ran more Replicates at once than one may,
        # each in its own environment (Lambda starts one per concurrent
        # invocation), and never more than both together may.
        print(f"\nconcurrent Replicates: {sfn.peak['ferry-replicate']}, environments: "
              f"{sum(1 for f, _ in sfn.running if f == 'ferry-replicate')}")
        assert 3 < sfn.peak["ferry-replicate"] <= 2 * 3, sfn.peak
        # Finish whatever the two left behind, then compare.
        last = sfn.execute(arn, {"stop_at_plan_end": True})
        assert last["status"] == "SUCCEEDED", sfn.logs()
        sfn.assert_rehearsed()
    for p in range(3):
        src = [r["key"] for r in read_partition(SOURCE, topic, p)]
        assert [r["key"] for r in read_partition(TARGET, topic, p)] == src, f"partition {p}"
    print(f"\nReplicate outcomes of the two overlapping executions: {dict(Counter(stopped))}")


def test_a_failed_batch_fails_the_execution_after_the_others_ran(tmp_path):
    """#20 item 6: a Replicate batch whose function dies (Lambda answers
    `Runtime.ExitError`, as for a process killed on its memory limit) used to
    end in a Pass state and the execution SUCCEEDED: no ExecutionsFailed,
    no alarm. Now the other batches, the group sync and the report still
    run, and then the execution FAILS with Ferry.StepFailed, the error kept
    in its history."""
    doomed, fine = unique("sfn-doomed"), unique("sfn-fine")
    create_topic(SOURCE, doomed, 1)
    create_topic(SOURCE, fine, 2)
    produce(doomed, 100, 1)
    produce(fine, 400, 2)
    kc, ri = write_config(tmp_path, [doomed, fine], starting="EARLIEST")
    env = function_env(kc, ri)

    def crash(name: str, payload: bytes) -> bool:
        # The payload names the batch the plan kept; the batch names the topic.
        return name == "ferry-replicate" and doomed in json.dumps(stored_batch(env, payload))

    # One batch per partition, all at once.
    with LocalStepFunctions(env, tmp_path / "logs", crash=crash, max_concurrency=3) as sfn:
        arn = sfn.create_state_machine()
        ex = sfn.execute(arn, {"max_partitions_per_batch": 1, "stop_at_plan_end": True})
        assert ex["status"] == "FAILED", f"{ex}\n{sfn.logs()}"
        history = sfn.client.get_execution_history(executionArn=ex["executionArn"], maxResults=1000)["events"]
        failed = [e["executionFailedEventDetails"] for e in history if e["type"] == "ExecutionFailed"]
        assert failed and failed[0]["error"] == "Ferry.StepFailed", failed
        entered = [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]
        assert {"SyncGroups", "Report", "Verdict"} <= set(entered), entered
        verdict = next(json.loads(e["stateEnteredEventDetails"]["input"]) for e in history
                       if e.get("stateEnteredEventDetails", {}).get("name") == "Verdict")
        errors = [r for r in verdict["batches"] if r.get("batch_failed")]
        assert len(errors) == 1 and errors[0]["error"] == "Runtime.ExitError", errors
        # Its cause is in the task's failure event, not in the state.
        causes = [e["taskFailedEventDetails"] for e in history if e["type"] == "TaskFailed"]
        assert [c["error"] for c in causes] == ["Runtime.ExitError"] and causes[0].get("cause"), causes
        # The other batches copied everything; the doomed one nothing.
        assert sum(len(read_partition(TARGET, fine, p)) for p in range(2)) == 400
        assert len(read_partition(TARGET, doomed, 0)) == 0
        sfn.assert_rehearsed()

        # Once the function lives again, the next execution copies the rest and succeeds.
        sfn.crash = None
        ok = sfn.execute(arn, {"stop_at_plan_end": True})
        assert ok["status"] == "SUCCEEDED", f"{ok}\n{sfn.logs()}"
        assert [r["key"] for r in read_partition(TARGET, doomed, 0)] == [r["key"] for r in read_partition(SOURCE, doomed, 0)]
        sfn.assert_rehearsed()


def test_a_payload_over_256_kib_is_refused_as_aws_refuses_it(tmp_path):
    """Step Functions fails an execution with States.DataLimitExceeded once
    a state's output or a task's result passes 256 KiB. The local rehearsal
    refuses it too (moto's interpreter checks every state's output and task
    result against 256 KiB of UTF-8), so an execution of Ferry's state
    machine whose plan or Map results outgrow the limit fails here as it
    would in AWS. A state that doubles a 150 KB input is refused; 100 KB
    (200 KB out) is not."""
    kc, ri = write_config(tmp_path, [unique("sfn-unused")])
    with LocalStepFunctions(function_env(kc, ri), tmp_path / "logs", rehearse=False) as sfn:
        definition = {"StartAt": "Double", "States": {"Double": {"Type": "Pass", "Parameters": {"a.$": "$.v", "b.$": "$.v"}, "End": True}}}
        arn = sfn.client.create_state_machine(name=unique("sfn-limit"), definition=json.dumps(definition),
                                              roleArn="arn:aws:iam::123456789012:role/ferry-limit")["stateMachineArn"]
        ok = sfn.execute(arn, {"v": "x" * 100_000})
        assert ok["status"] == "SUCCEEDED", ok
        over = sfn.execute(arn, {"v": "x" * 150_000})
        assert (over["status"], over.get("error")) == ("FAILED", "States.DataLimitExceeded"), over
        assert "'Double'" in over.get("cause", ""), over
