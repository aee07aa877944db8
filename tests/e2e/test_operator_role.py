"""The CLI as an operator runs it against a deployed stack, under IAM: a role
with nothing but the template's OperatorPolicy and ClusterCredentialsPolicy
(its outputs say to attach those two) runs `ferry status`, `readiness`,
`move` and `backfill` through the rehearsal's enforcing proxy and the MSK
IAM target, with nothing denied; the same role without one of those grants
is refused with AWS's own message, and the move writes nothing. The role
may write no record, topic or transactional id on the clusters."""

import json
import os
import subprocess

from confluent_kafka import Consumer, TopicPartition

from conftest import FERRY, SOURCE, TARGET, committed, read_partition, unique
from support.iam_policy import evaluate
from support.iam_rehearsal import ACCOUNT, REGION, REHEARSAL_SECRET, without
from support.local_sfn import LocalStepFunctions
from support.migration import IAM_TARGET_ARN, migration_topic

OPERATOR = "OperatorRole"


def operator_env(sfn: LocalStepFunctions) -> dict[str, str]:
    """The operator's shell: its role's credentials, every AWS call through
    the enforcing proxy (as to AWS's endpoints)."""
    name = sfn.rehearsal.stack["roles"][OPERATOR]["name"]
    return dict(os.environ, AWS_ENDPOINT_URL=sfn.rehearsal.url, AWS_ACCESS_KEY_ID=name,
                AWS_SECRET_ACCESS_KEY=REHEARSAL_SECRET, AWS_SESSION_TOKEN=REHEARSAL_SECRET, AWS_REGION=REGION,
                AWS_DEFAULT_REGION=REGION, RUST_LOG="warn")


def test_an_operator_role_of_the_templates_policies_runs_the_cli_and_nothing_more(tmp_path):
    topic, group, kc, ri = migration_topic(tmp_path, "operator", 60)
    env = {"FERRY_REPLICATOR_NAME": unique("operator"), "FERRY_KAFKA_CLUSTERS": kc.read_text(),
           "FERRY_REPLICATION_INFO": ri.read_text(), "FERRY_TABLE_PREFIX": unique("ferry-op")}
    with LocalStepFunctions(env, tmp_path / "logs") as sfn:
        rh = sfn.rehearsal
        # The stack's outputs name what to attach; the role is made of those alone.
        outputs = rh.stack["outputs"]
        policies = rh.stack["managed_policies"]
        assert outputs["OperatorPolicyArn"].endswith("-OperatorPolicy"), outputs
        assert outputs["ClusterCredentialsPolicyArn"].endswith("-ClusterCredentialsPolicy"), outputs
        statements = policies["OperatorPolicy"] + policies["ClusterCredentialsPolicy"]
        full = dict(rh.stack, roles=dict(rh.stack["roles"], **{OPERATOR: {
            "name": f"{rh.stack_name}-operator", "arn": f"arn:aws:iam::{ACCOUNT}:role/{rh.stack_name}-operator",
            "statements": statements}}))
        # Unlike the functions' KafkaAccessPolicy, nothing that writes to a
        # cluster or takes over Ferry's producers.
        cluster = IAM_TARGET_ARN.split(":cluster/")
        on = {"topic": f"{cluster[0]}:topic/{cluster[1]}/{topic}", "cluster": IAM_TARGET_ARN,
              "transactional-id": f"{cluster[0]}:transactional-id/{cluster[1]}/ferry-{env['FERRY_REPLICATOR_NAME']}-x"}
        for action, resource in [("WriteData", "topic"), ("WriteDataIdempotently", "cluster"), ("CreateTopic", "topic"),
                                 ("DeleteTopic", "topic"), ("AlterTopicDynamicConfiguration", "topic"),
                                 ("AlterTransactionalId", "transactional-id"), ("AlterCluster", "cluster")]:
            assert not evaluate(statements, f"kafka-cluster:{action}", on[resource]).allowed, action
        assert evaluate(policies["KafkaAccessPolicy"], "kafka-cluster:WriteData", on["topic"]).allowed
        rh.set_stack(full)
        rh.register_on_msk_iam()  # the operator's tokens, as MSK knows an assumed role

        name = full["roles"][OPERATOR]["name"]
        arn = sfn.create_state_machine(max_concurrency=2, name=rh.stack_name)
        first = sfn.execute(arn, {"stop_at_plan_end": True})
        assert first["status"] == "SUCCEEDED", f"{first}\n{sfn.logs()}"
        assert len(read_partition(TARGET, topic, 0)) == 60
        # The application read 40 records on the source and stopped.
        c = Consumer({"bootstrap.servers": SOURCE, "group.id": group, "enable.auto.commit": False})
        c.commit(offsets=[TopicPartition(topic, 0, 40, metadata="operator")], asynchronous=False)
        c.close()
        key_at_40 = read_partition(SOURCE, topic, 0)[40]["key"]

        state = ["--kafka-clusters", str(kc), "--replication-info", str(ri), "--name", env["FERRY_REPLICATOR_NAME"],
                 "--table-prefix", env["FERRY_TABLE_PREFIX"]]

        used: set[tuple[str, str]] = set()

        def ferry(*args: str, stack: dict = full, timeout: float = 180) -> subprocess.CompletedProcess:
            rh.set_stack(stack)
            rh.clear()
            p = subprocess.run([str(FERRY), *args], capture_output=True, text=True, timeout=timeout,
                               env=operator_env(sfn))
            used.update((d["action"], d["resource"]) for d in rh.decisions if d["allowed"] and d["principal"] == name)
            return p

        # Without a grant the move needs, it is refused with AWS's message,
        # and the group's commit on the target is not written.
        denied = ferry("move", *state, "--group", group, "--to", IAM_TARGET_ARN, "--wait", "60", "--json",
                       stack=without(full, OPERATOR, action="dynamodb:Query"))
        assert denied.returncode != 0, denied.stdout + denied.stderr
        assert "not authorized to perform: dynamodb:Query" in denied.stdout + denied.stderr, denied.stdout + denied.stderr
        assert {d["principal"] for d in rh.denials()} == {full["roles"][OPERATOR]["name"]}, rh.denial_report()
        assert (topic, 0) not in committed(TARGET, group)
        no_alter = ferry("move", *state, "--group", group, "--to", IAM_TARGET_ARN, "--wait", "60", "--json",
                         stack=without(full, OPERATOR, action="kafka-cluster:AlterGroup"))
        assert no_alter.returncode != 0, no_alter.stdout + no_alter.stderr
        assert any(d["action"] == "kafka-cluster:AlterGroup" for d in rh.denials()), rh.denial_report()
        assert (topic, 0) not in committed(TARGET, group)

        # With both policies: each command as an operator runs it, nothing denied.
        st = ferry("status", *state, "--json")
        assert st.returncode == 0, st.stdout + st.stderr
        assert max(p["cursor"] for p in json.loads(st.stdout)["partitions"]) == 60, st.stdout
        assert not rh.denials(), rh.denial_report()
        ready = ferry("readiness", *state, "--json")
        assert ready.returncode in (0, 3), ready.stdout + ready.stderr
        json.loads(ready.stdout)
        assert not rh.denials(), rh.denial_report()
        mv = ferry("move", *state, "--group", group, "--to", IAM_TARGET_ARN, "--wait", "60", "--json")
        assert mv.returncode == 0, mv.stdout + mv.stderr
        moved = json.loads(mv.stdout)
        assert moved["verdict"] == "GO" and moved["recorded"], moved
        assert not rh.denials(), rh.denial_report()
        t_off, meta = committed(TARGET, group)[(topic, 0)]
        assert [r["key"] for r in read_partition(TARGET, topic, 0) if r["offset"] >= t_off][0] == key_at_40
        back = ferry("backfill", "--kafka-clusters", str(kc), "--replication-info", str(ri), "--state-machine-arn", arn,
                     "--topics", topic)
        assert back.returncode == 0 and "started backfill execution" in back.stdout, back.stdout + back.stderr
        assert not rh.denials(), rh.denial_report()
        # And without states:StartExecution, the backfill is refused.
        no_start = ferry("backfill", "--kafka-clusters", str(kc), "--replication-info", str(ri),
                         "--state-machine-arn", arn, "--topics", topic,
                         stack=without(full, OPERATOR, action="states:StartExecution"))
        assert no_start.returncode != 0, no_start.stdout + no_start.stderr
        assert "not authorized to perform: states:StartExecution" in no_start.stdout + no_start.stderr, \
            no_start.stdout + no_start.stderr
        rh.set_stack(full)
        # Of the state tables, it wrote only group-sync state and the move.
        writes = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}
        written = {r.rsplit("-", 1)[-1] for a, r in used if a in writes}
        assert written == {"groups"}, sorted(used)
