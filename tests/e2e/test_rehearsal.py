"""The deployed stack rehearsed under IAM (iam_rehearsal.py): the migration's
topology run through the state machine with every function under its own
role from template.yaml, enforced; and the proof that the rehearsal refuses
what AWS refuses: the same stack with one grant removed from the
transformed template fails, naming the missing permission."""

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from confluent_kafka import Consumer, TopicPartition

from conftest import SOURCE, TARGET, committed, create_topic, msk_cluster, read_partition, unique, write_config
from support.iam_policy import evaluate
from support.iam_rehearsal import DeployRefused, deploy_parameters, sam_stack, without
from support.local_sfn import LocalStepFunctions
from support.migration import CA_SECRET, SASL_SSL, SCRAM_SECRET, SCRAM_SECRET_PARTIAL, migration_config, migration_topic, produce

TARGET_LOG = Path(os.environ["FERRY_RUN_DIR"]) / "target" / "kafka.log"
TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/s-offset-map"
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ferry/src-AbCdEf"


@pytest.mark.parametrize("statement,action,resource,context,allowed", [
    ({"Effect": "Allow", "Action": "dynamodb:Query", "Resource": TABLE}, "dynamodb:Query", TABLE, {}, True),
    # An index is a resource of its own: the table's ARN does not cover it.
    ({"Effect": "Allow", "Action": "dynamodb:Query", "Resource": TABLE}, "dynamodb:Query", TABLE + "/index/by_target", {}, False),
    ({"Effect": "Allow", "Action": "dynamodb:Query", "Resource": TABLE + "/index/*"}, "dynamodb:Query", TABLE + "/index/by_target", {}, True),
    # Actions match case-insensitively, with wildcards; resources exactly.
    ({"Effect": "Allow", "Action": "DynamoDB:Get*", "Resource": TABLE}, "dynamodb:GetItem", TABLE, {}, True),
    ({"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": TABLE.upper()}, "dynamodb:GetItem", TABLE, {}, False),
    # A secret's ARN as AWS's examples write it (no random suffix) matches nothing;
    # with `-??????` it matches exactly one suffix of six characters.
    ({"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": SECRET[:-7]}, "secretsmanager:GetSecretValue", SECRET, {}, False),
    ({"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": SECRET[:-7] + "-??????"}, "secretsmanager:GetSecretValue", SECRET, {}, True),
    ({"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": SECRET[:-7] + "-??????"}, "secretsmanager:GetSecretValue", SECRET + "x", {}, False),
    ({"Effect": "Allow", "NotAction": "dynamodb:DeleteItem", "Resource": "*"}, "dynamodb:DeleteItem", TABLE, {}, False),
    # Conditions: a missing key fails a positive operator, satisfies a negated one.
    ({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*", "Condition": {"StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}}},
     "kms:Decrypt", "arn:aws:kms:us-east-1:123456789012:key/k", {}, False),
    ({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*", "Condition": {"StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}}},
     "kms:Decrypt", "arn:aws:kms:us-east-1:123456789012:key/k", {"kms:viaservice": "secretsmanager.us-east-1.amazonaws.com"}, True),
    ({"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringNotEquals": {"aws:RequestedRegion": "eu-west-1"}}},
     "dynamodb:GetItem", TABLE, {}, True),
    ({"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"NumericLessThan": {"x:y": "1"}}}, "dynamodb:GetItem", TABLE, {"x:y": "0"}, False),
])
def test_policy_evaluation_follows_iam(statement, action, resource, context, allowed):
    assert evaluate([statement], action, resource, context).allowed is allowed


def test_an_explicit_deny_wins():
    sts = [{"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"},
           {"Sid": "NoDeletes", "Effect": "Deny", "Action": "dynamodb:DeleteItem", "Resource": TABLE}]
    d = evaluate(sts, "dynamodb:DeleteItem", TABLE)
    assert not d.allowed and "NoDeletes" in d.reason
    assert evaluate(sts, "dynamodb:PutItem", TABLE).allowed


# (what is removed, the role, the action or the resource it is removed by, the denial expected)
MUTATIONS = [
    ("DescribeTable", "PlanRole", {"action": "dynamodb:DescribeTable"}, "dynamodb:DescribeTable", "-cursors"),
    ("index grant", "SyncGroupsRole", {"resource": r"/index/"}, "dynamodb:Query", "-offset-map/index/by_target"),
    ("secret grant", "PlanRole", {"action": "secretsmanager:GetSecretValue"}, "secretsmanager:GetSecretValue",
     SCRAM_SECRET),
    # Only the ARNs as given: the partial one matches no secret.
    ("suffix wildcard", "PlanRole", {"resource": r"-\?{6}$"}, "secretsmanager:GetSecretValue", SCRAM_SECRET),
]


def test_migration_under_enforced_iam_and_each_missing_grant_is_refused(tmp_path):
    topic, group, kc, ri = migration_topic(tmp_path, "rehearsal", 100)
    produce(TARGET, topic, "tgt", 50)
    env = {"FERRY_REPLICATOR_NAME": unique("rehearsal"), "FERRY_KAFKA_CLUSTERS": kc.read_text(),
           "FERRY_REPLICATION_INFO": ri.read_text(), "FERRY_TABLE_PREFIX": unique("ferry-rh")}
    with LocalStepFunctions(env, tmp_path / "logs") as sfn:
        # `ferry deploy-parameters` warned about the partial ARN, not the full one.
        warned = sfn.rehearsal.deploy_warnings
        assert f"secret ARN {SCRAM_SECRET_PARTIAL} has no random suffix" in warned, warned
        assert CA_SECRET not in warned, warned
        arn = sfn.create_state_machine(max_concurrency=2)
        first = sfn.execute(arn, {"stop_at_plan_end": True})
        assert first["status"] == "SUCCEEDED", f"{first}\n{sfn.logs()}"
        src = read_partition(SOURCE, topic, 0)
        assert sorted(r["key"] for r in src) == sorted([f"src-{i}".encode() for i in range(100)] +
                                                       [f"tgt-{i}".encode() for i in range(50)])
        assert len(read_partition(TARGET, topic, 0)) == 150  # each side's records once on the other, none back
        # The target took each function's own role, by the token it signed.
        broker_log = TARGET_LOG.read_text(errors="replace")
        for function in ("ferry-plan", "ferry-replicate"):
            role = sfn.rehearsal.role_of(function)["name"]
            assert f"MSK IAM token accepted: principal arn:aws:sts::123456789012:assumed-role/{role}/" in broker_log, role
        # An application on the source read up to a record the target→source
        # flow wrote: ENHANCED translates it through that flow's offset map, by
        # its target offset (the by_target index).
        at = next(r for r in src if r["key"] == b"tgt-20")
        c = Consumer({"bootstrap.servers": SOURCE, "group.id": group, "enable.auto.commit": False})
        c.commit(offsets=[TopicPartition(topic, 0, at["offset"], metadata="rehearsed")], asynchronous=False)
        c.close()
        second = sfn.execute(arn, {"stop_at_plan_end": True})
        assert second["status"] == "SUCCEEDED", f"{second}\n{sfn.logs()}"
        t_off, meta = committed(TARGET, group)[(topic, 0)]
        assert meta == "rehearsed"
        assert [r["key"] for r in read_partition(TARGET, topic, 0) if r["offset"] >= t_off][0] == b"tgt-20"
        sfn.assert_rehearsed()
        # What the mutations below take away was really used, and allowed.
        used = {(d["action"], d["resource"]) for d in sfn.rehearsal.decisions if d["allowed"]}
        for _, _, _, action, resource in MUTATIONS:
            assert any(a == action and r.endswith(resource) for a, r in used), (action, resource, sorted(used))

        full = sfn.rehearsal.stack
        for what, role, removed, action, resource in MUTATIONS:
            sfn.rehearsal.set_stack(without(full, role, **removed))
            # Fresh instances, as after `sam deploy`: none has the secret cached.
            sfn.cold_start()
            sfn.rehearsal.clear()
            function = {"PlanRole": "ferry-plan", "SyncGroupsRole": "ferry-sync-groups"}[role]
            before = len(sfn.function_log(function))
            run = sfn.execute(arn, {"stop_at_plan_end": True})
            denied = [d for d in sfn.rehearsal.denials() if d["action"] == action and d["resource"].endswith(resource)]
            assert denied, f"without the {what}, nothing was denied: {run}\n{sfn.rehearsal.denial_report()}"
            assert all(d["principal"].endswith(role) for d in sfn.rehearsal.denials()), sfn.rehearsal.denial_report()
            with pytest.raises(AssertionError, match=action):
                sfn.assert_rehearsed()
            # Ferry met AWS's AccessDeniedException and reported it with the
            # action it was refused, through its own error path.
            log = sfn.function_log(function)[before:]
            assert "AccessDeniedException" in log and f"not authorized to perform: {action}" in log, log[-3000:]
            # A refusal fails the execution, so the ExecutionsFailed alarm
            # fires: Plan's at once; SyncGroups' (each group's sync refused,
            # which no sync item records and no metric counted: it SUCCEEDED
            # with ConsumerGroupOffsetSyncFailure 0 before) once Report ran.
            assert run["status"] == "FAILED", f"{role}: {run}"
            assert run.get("error") == ("Ferry.PlanFailed" if role == "PlanRole" else "Ferry.StepFailed"), run
            if action.startswith("secretsmanager:"):
                # A refused secret is not a passing fault: Plan fails once,
                # as Ferry.AuthError, and the state machine does not retry it
                # (it used to, as Ferry.Retryable, for about a minute).
                events = sfn.client.get_execution_history(executionArn=run["executionArn"])["events"]
                failed = [e.get("taskFailedEventDetails", {}).get("error") for e in events if e["type"] == "TaskFailed"]
                assert failed == ["Ferry.AuthError"], failed
                # Counted at once in the cluster's AuthError metric (EMF on
                # stdout): Report, which counts it otherwise, does not run.
                assert '"AuthError":1' in log.replace(" ", "") and '"ClusterAlias":"source"' in log.replace(" ", ""), \
                    log[-3000:]
            print(f"\nwithout the {what}: {denied[0]['principal']} denied {action} on {denied[0]['resource']}")
        sfn.rehearsal.set_stack(full)


def test_an_msk_cluster_by_its_arn_alone_is_looked_up_under_iam_and_refused_without_the_grant(tmp_path):
    """The source named as create-replicator names an MSK cluster, by its
    ARN alone (SASL/SCRAM, the private CA from Secrets Manager): deployed,
    the functions look its brokers up with kafka:GetBootstrapBrokers, which
    the template grants on that ARN, and replicate. Without the grant Plan
    is refused, as AWS's AccessDeniedException naming the action, and the
    execution fails at once (Ferry.AuthError, not retried)."""
    topic = unique("rh-msk")
    create_topic(SOURCE, topic, 1)
    produce(SOURCE, topic, "msk", 30)
    arn = msk_cluster(unique("rh-msk"), {"BootstrapBrokerStringSaslScram": SASL_SSL, "BootstrapBrokerString": SOURCE})
    kc, ri = write_config(tmp_path, [topic])
    clusters, flows = json.loads(kc.read_text()), json.loads(ri.read_text())
    clusters[0] = {"AmazonMskCluster": {"MskClusterArn": arn},
                   "ClientAuthentication": {"SaslScram": {"Mechanism": "SHA512", "SecretArn": SCRAM_SECRET}},
                   "EncryptionInTransit": {"EncryptionType": "TLS", "RootCaCertificate": CA_SECRET}}
    del flows[0]["SourceKafkaClusterId"]
    flows[0]["SourceKafkaClusterArn"] = arn
    env = {"FERRY_REPLICATOR_NAME": unique("rh-msk"), "FERRY_KAFKA_CLUSTERS": json.dumps(clusters),
           "FERRY_REPLICATION_INFO": json.dumps(flows), "FERRY_TABLE_PREFIX": unique("ferry-rhmsk")}
    with LocalStepFunctions(env, tmp_path / "logs") as sfn:
        assert sfn.rehearsal.parameters["MskBootstrapLookupArns"] == arn
        machine = sfn.create_state_machine(max_concurrency=2)
        run = sfn.execute(machine, {"stop_at_plan_end": True})
        assert run["status"] == "SUCCEEDED", f"{run}\n{sfn.logs()}"
        assert sorted(r["key"] for r in read_partition(TARGET, topic, 0)) == sorted(f"msk-{i}".encode() for i in range(30))
        sfn.assert_rehearsed()
        looked_up = {d["principal"] for d in sfn.rehearsal.decisions
                     if d["allowed"] and (d["action"], d["resource"]) == ("kafka:GetBootstrapBrokers", arn)}
        assert any(p.endswith("PlanRole") for p in looked_up) and any(p.endswith("ReplicateRole") for p in looked_up), \
            looked_up

        full = sfn.rehearsal.stack
        sfn.rehearsal.set_stack(without(full, "PlanRole", action="kafka:GetBootstrapBrokers"))
        sfn.cold_start()
        sfn.rehearsal.clear()
        before = len(sfn.function_log("ferry-plan"))
        run = sfn.execute(machine, {"stop_at_plan_end": True})
        denied = [d for d in sfn.rehearsal.denials() if (d["action"], d["resource"]) == ("kafka:GetBootstrapBrokers", arn)]
        assert denied and all(d["principal"].endswith("PlanRole") for d in denied), sfn.rehearsal.denial_report()
        with pytest.raises(AssertionError, match="kafka:GetBootstrapBrokers"):
            sfn.assert_rehearsed()
        log = sfn.function_log("ferry-plan")[before:]
        assert "AccessDeniedException" in log and "not authorized to perform: kafka:GetBootstrapBrokers" in log, log[-3000:]
        assert run["status"] == "FAILED" and run.get("error") == "Ferry.PlanFailed", run
        events = sfn.client.get_execution_history(executionArn=run["executionArn"])["events"]
        failed = [e.get("taskFailedEventDetails", {}).get("error") for e in events if e["type"] == "TaskFailed"]
        assert failed == ["Ferry.AuthError"], failed
        sfn.rehearsal.set_stack(full)


def test_a_definition_of_750_topics_deploys_and_replicates(tmp_path):
    """750 topics named one by one: about 20 KB of definition, five times
    what a CloudFormation parameter or Lambda's whole environment holds. It
    travels as the stack's definition layer, and the functions, run as
    deployed, read all of it: the first, the middle and the last topic named
    are replicated."""
    stem = unique("seven-fifty")
    names = [f"{stem}-topic-{i:04}" for i in range(750)]
    present = [names[0], names[374], names[749]]
    for t in present:
        create_topic(SOURCE, t, 1)
        produce(SOURCE, t, t, 20)
    kc, ri = write_config(tmp_path, names)
    assert len(ri.read_bytes()) > 5 * 4096
    env = {"FERRY_REPLICATOR_NAME": unique("rh750"), "FERRY_KAFKA_CLUSTERS": kc.read_text(),
           "FERRY_REPLICATION_INFO": ri.read_text(), "FERRY_TABLE_PREFIX": unique("ferry-rh750")}
    with LocalStepFunctions(env, tmp_path / "logs") as sfn:
        # Every parameter fits (the rehearsal refuses one over 4,096 bytes),
        # and so does each function's environment.
        assert all(len(v.encode()) <= 4096 for v in sfn.rehearsal.parameters.values())
        assert all(f["layers"] for f in sfn.rehearsal.stack["functions"].values())
        arn = sfn.create_state_machine(max_concurrency=2)
        run = sfn.execute(arn, {"stop_at_plan_end": True})
        assert run["status"] == "SUCCEEDED", f"{run}\n{sfn.logs()}"
        for t in present:
            assert sorted(r["key"] for r in read_partition(TARGET, t, 0)) == \
                sorted(f"{t}-{i}".encode() for i in range(20)), t
        sfn.assert_rehearsed()

        # The layer and the parameters travel apart: a layer from another
        # `ferry deploy-parameters` run (here: the last topic left out) is
        # refused, never run under this stack's name.
        layer = Path(sfn.rehearsal.stack["functions"]["ferry-plan"]["layers"][0])
        other = json.loads((layer / "replication-info.json").read_text())
        other[0]["TopicReplication"]["TopicsToReplicate"].pop()
        (layer / "replication-info.json").write_text(json.dumps(other))
        sfn.cold_start()
        before = len(sfn.function_log("ferry-plan"))
        run = sfn.execute(arn, {"stop_at_plan_end": True})
        assert run["status"] == "FAILED" and run.get("error") == "Ferry.PlanFailed", run
        log = sfn.function_log("ferry-plan")[before:]
        assert "is not the one this stack's parameters were written for" in log, log[-3000:]


def test_the_rehearsal_refuses_what_cloudformation_and_lambda_refuse(tmp_path):
    """A parameter over 4,096 bytes (CloudFormation) and an environment over
    4 KB (Lambda) are refused, as `sam deploy` would fail on them: the
    definition of the test above, as a parameter or as a variable, is."""
    kc, ri = write_config(tmp_path, [f"t-{i:04}" for i in range(750)])
    env = {"FERRY_REPLICATOR_NAME": "rh-limits", "FERRY_KAFKA_CLUSTERS": kc.read_text(),
           "FERRY_REPLICATION_INFO": ri.read_text(), "FERRY_TABLE_PREFIX": "ferry-rh-limits"}
    params, _, template = deploy_parameters(env, tmp_path / "deploy")
    assert sam_stack(params, "ferry-rh-limits", template)["functions"]
    as_parameter = dict(params, SecretArns=",".join(json.loads(ri.read_text())[0]["TopicReplication"]["TopicsToReplicate"]))
    with pytest.raises(DeployRefused, match=r"CloudFormation refuses parameter SecretArns: its value is \d+ bytes"):
        sam_stack(as_parameter, "ferry-rh-limits", template)
    text = template.read_text()
    assert "        FERRY_DEFINITION_DIR: /opt\n" in text
    as_variable = tmp_path / "deploy" / "as-variable.yaml"
    as_variable.write_text(text.replace("        FERRY_DEFINITION_DIR: /opt\n",
                                        f"        FERRY_REPLICATION_INFO: '{ri.read_text()}'\n"))
    with pytest.raises(DeployRefused, match=r"Lambda refuses \w+: its environment variables total \d+ bytes"):
        sam_stack(params, "ferry-rh-limits", as_variable)
    # Lambda's ranges: MemorySize 128 to 10,240 MB, Timeout up to 900 s.
    for field, value, message in [("MemorySize", 10241, r"MemorySize 10241 is outside 128 to 10240 MB"),
                                  ("MemorySize", 64, r"MemorySize 64 is outside"),
                                  ("Timeout", 901, r"Timeout 901 is outside 1 to 900 seconds")]:
        edited = tmp_path / "deploy" / f"{field}-{value}.yaml"
        changed, n = re.subn(rf"^(      {field}: )\d+$", rf"\g<1>{value}", text, count=1, flags=re.M)
        assert n == 1, field
        edited.write_text(changed)
        with pytest.raises(DeployRefused, match=message):
            sam_stack(params, "ferry-rh-limits", edited)


def test_the_rehearsal_refuses_the_parameter_values_cloudformation_refuses(tmp_path):
    """CloudFormation refuses a Number parameter that is not a number or
    lies outside its MinValue and MaxValue, and a value outside a
    parameter's AllowedPattern or AllowedValues, before it creates
    anything; and CloudWatch Logs keeps a log group only for one of its
    retention periods, so a LogRetentionDays of 10 failed the stack as it
    created the log groups, rolling back what it had made. The rehearsal
    accepted these (on 62264b9). The whole-number parameters are patterns,
    not Numbers, which take 2.5 and 5.0 (breaker helper-80, on d24179a:
    every Replicate refused CheckpointSeconds 5.0). A value CloudFormation
    takes is still taken."""
    kc, ri = write_config(tmp_path, ["t-0000"])
    env = {"FERRY_REPLICATOR_NAME": "rh-numbers", "FERRY_KAFKA_CLUSTERS": kc.read_text(),
           "FERRY_REPLICATION_INFO": ri.read_text(), "FERRY_TABLE_PREFIX": "ferry-rh-numbers"}
    params, _, template = deploy_parameters(env, tmp_path / "deploy")
    for name, value, message in [
        ("MaxConcurrency", "0", r"MaxConcurrency: '0' failed to satisfy constraint: must be a whole number of at least 1"),
        ("MaxConcurrency", "ten", r"MaxConcurrency: 'ten' failed to satisfy constraint"),
        # CloudFormation's Number takes these, which the functions and the
        # Map refuse after the deploy (breaker helper-80): refused first.
        ("MaxConcurrency", "2.5", r"MaxConcurrency: '2.5' failed to satisfy constraint"),
        ("HandoffWaitSeconds", "-5", r"HandoffWaitSeconds: '-5' failed to satisfy constraint"),
        ("HandoffWaitSeconds", "75.5", r"HandoffWaitSeconds: '75.5' failed to satisfy constraint"),
        ("CheckpointSeconds", "0", r"CheckpointSeconds: '0' failed to satisfy constraint: must be a whole number of seconds from 1 to 15"),
        ("CheckpointSeconds", "16", r"CheckpointSeconds: '16' failed to satisfy constraint"),
        ("CheckpointSeconds", "5.0", r"CheckpointSeconds: '5.0' failed to satisfy constraint"),
        ("MessageLagAlarmThreshold", "1e3x", r"MessageLagAlarmThreshold: '1e3x' must be a number"),
        ("MessageLagAlarmThreshold", "1_000", r"MessageLagAlarmThreshold: '1_000' must be a number"),
        ("MessageLagAlarmThreshold", "-1", r"MessageLagAlarmThreshold: '-1' must be a number not less than 0"),
        ("LogRetentionDays", "10", r"LogRetentionDays: '10' failed to satisfy constraint: must be a period CloudWatch Logs keeps"),
        ("ScheduleRate", "1 minute", r"ScheduleRate: '1 minute' failed to satisfy constraint: must be an EventBridge Scheduler"),
        ("ScheduleRate", "rate(1 min)", r"ScheduleRate: 'rate\(1 min\)' failed to satisfy constraint"),
        ("ScheduleRate", "cron(0 * * * *)", r"ScheduleRate: 'cron\(0 \* \* \* \*\)' failed to satisfy constraint"),
    ]:
        with pytest.raises(DeployRefused, match=message):
            sam_stack(dict(params, **{name: value}), "ferry-rh-numbers", template)
    for name, value in [("MaxConcurrency", "3"), ("HandoffWaitSeconds", "0"), ("LogRetentionDays", "14"), ("CheckpointSeconds", "15"),
                        ("ScheduleRate", "rate(5 minutes)"), ("ScheduleRate", "cron(0/5 * * * ? *)"),
                        # What a stack deployed before these patterns may hold,
                        # checked again on its next update (breaker helper-81).
                        ("MessageLagAlarmThreshold", "0"), ("MaxConcurrency", "010"), ("MaxConcurrency", "12000"),
                        ("HandoffWaitSeconds", "10860"),
                        ("MessageLagAlarmThreshold", "2500.5")]:
        assert sam_stack(dict(params, **{name: value}), "ferry-rh-numbers", template)["functions"], (name, value)
    # CheckpointSeconds reaches the Replicate function (4 unless given).
    for given, want in ((None, "4"), ("15", "15")):
        stack = sam_stack(params if given is None else dict(params, CheckpointSeconds=given), "ferry-rh-numbers", template)
        assert stack["functions"]["ferry-replicate"]["environment"]["FERRY_CHECKPOINT_SECONDS"] == want, stack["functions"]
    # Without the parameter's constraint, the log groups themselves are refused.
    text = template.read_text()
    unconstrained = tmp_path / "deploy" / "unconstrained.yaml"
    unconstrained.write_text(re.sub(r"^(  LogRetentionDays:\n(?:    .*\n)*?)    AllowedValues: .*\n", r"\1", text, count=1,
                                    flags=re.M))
    assert unconstrained.read_text() != text
    with pytest.raises(DeployRefused, match=r"CloudWatch Logs refuses \w+LogGroup: RetentionInDays 10 is not one of the periods"):
        sam_stack(dict(params, LogRetentionDays="10"), "ferry-rh-numbers", unconstrained)


def test_vpc_endpoints_when_asked_and_refused_without_their_vpc(tmp_path):
    """CreateVpcEndpoints=true creates, in the stack as `sam deploy` would
    transform it, the DynamoDB gateway endpoint on the given route tables
    and, when there are secrets, the Secrets Manager interface endpoint in
    the functions' subnets whose security group lets the functions' first
    security group in on 443. Without VpcId or RouteTableIds the template's
    rule refuses the parameters, as CloudFormation does before creating
    anything; by default nothing is created."""
    kc, ri = write_config(tmp_path, ["orders"])
    env = {"FERRY_REPLICATOR_NAME": "rh-vpc", "FERRY_KAFKA_CLUSTERS": kc.read_text(),
           "FERRY_REPLICATION_INFO": ri.read_text(), "FERRY_TABLE_PREFIX": "ferry-rh-vpc"}
    params, _, template = deploy_parameters(env, tmp_path / "deploy")
    params = dict(params, SubnetIds="subnet-0aaaaaaa,subnet-0bbbbbbb", SecurityGroupIds="sg-0fn00001,sg-0fn00002")
    assert sam_stack(params, "ferry-rh-vpc", template)["network"] == {}

    asked = dict(params, CreateVpcEndpoints="true", VpcId="vpc-0123abcd", RouteTableIds="rtb-01111111,rtb-02222222")
    net = sam_stack(asked, "ferry-rh-vpc", template)["network"]
    assert sorted(net) == ["DynamoDbEndpoint"], net  # no secrets: no Secrets Manager endpoint
    ddb = net["DynamoDbEndpoint"]["Properties"]
    assert (ddb["ServiceName"], ddb["VpcEndpointType"], ddb["VpcId"]) == \
        ("com.amazonaws.us-east-1.dynamodb", "Gateway", "vpc-0123abcd")
    assert ddb["RouteTableIds"] == ["rtb-01111111", "rtb-02222222"]

    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:kafka-AbCdEf"
    net = sam_stack(dict(asked, SecretArns=secret), "ferry-rh-vpc", template)["network"]
    sm = net["SecretsManagerEndpoint"]["Properties"]
    assert (sm["ServiceName"], sm["VpcEndpointType"], sm["PrivateDnsEnabled"]) == \
        ("com.amazonaws.us-east-1.secretsmanager", "Interface", True)
    assert sm["SubnetIds"] == ["subnet-0aaaaaaa", "subnet-0bbbbbbb"]
    (ingress,) = net["SecretsManagerEndpointSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert (ingress["FromPort"], ingress["ToPort"], ingress["SourceSecurityGroupId"]) == (443, 443, "sg-0fn00001")
    # An interface endpoint takes one subnet per zone: its own subnets when given.
    net = sam_stack(dict(asked, SecretArns=secret, EndpointSubnetIds="subnet-0ccccccc"), "ferry-rh-vpc", template)["network"]
    assert net["SecretsManagerEndpoint"]["Properties"]["SubnetIds"] == ["subnet-0ccccccc"]

    for missing in ("VpcId", "RouteTableIds"):
        with pytest.raises(DeployRefused, match=f"rule EndpointsNeedTheirVpc: CreateVpcEndpoints needs {missing}"):
            sam_stack(dict(asked, **{missing: ""}), "ferry-rh-vpc", template)


def test_msk_iam_authorization_follows_each_roles_policy(tmp_path):
    """On the IAM target, what a function may do is what its role's policy
    grants, as MSK decides it: the broker's authorizer maps each Kafka
    operation to its kafka-cluster:* action and resource ARN and the
    rehearsal evaluates the role's statements (FerryMskIamAuthorizer). With
    the template's grants every function does its work (the migration test
    above runs under this too); without kafka-cluster:WriteData on the
    target's topics the broker refuses Replicate's produce, Ferry stops the
    partition naming the grant, writes nothing, and Report raises
    ReplicatorFailure (the alarm), while the execution itself completes, as
    a stopped partition does not stop the others."""
    topic, group, kc, ri = migration_topic(tmp_path, "rh-authz", 40)
    env = {"FERRY_REPLICATOR_NAME": unique("rh-authz"), "FERRY_KAFKA_CLUSTERS": kc.read_text(),
           "FERRY_REPLICATION_INFO": json.dumps(json.loads(ri.read_text())[:1]), "FERRY_TABLE_PREFIX": unique("ferry-rhz")}
    with LocalStepFunctions(env, tmp_path / "logs", max_concurrency=1) as sfn:
        full = sfn.rehearsal.stack
        sfn.rehearsal.set_stack(without(full, "ReplicateRole", action="kafka-cluster:WriteData"))
        arn = sfn.create_state_machine()
        ex = sfn.execute(arn, {"stop_at_plan_end": True})
        assert ex["status"] == "SUCCEEDED", f"{ex}\n{sfn.logs()}"
        denied = [d for d in sfn.rehearsal.denials() if d["action"] == "kafka-cluster:WriteData"]
        assert denied and all(d["principal"].endswith("ReplicateRole") and ":topic/rehearsal-target/" in d["resource"]
                              and d["resource"].endswith(f"/{topic}") for d in denied), sfn.rehearsal.denial_report()
        # Nothing else was refused: the other actions of every role were granted.
        assert {d["action"] for d in sfn.rehearsal.denials()} == {"kafka-cluster:WriteData"}, sfn.rehearsal.denial_report()
        assert read_partition(TARGET, topic, 0, timeout_s=3) == []
        log = sfn.function_log("ferry-replicate")
        assert "TopicAuthorizationFailed" in log or "needs WRITE" in log, log[-3000:]
        report = sfn.function_log("ferry-report").replace(" ", "")
        assert '"ReplicatorFailure":1' in report, report[-3000:]
        used = {(d["principal"].rsplit("-", 1)[-1], d["action"]) for d in sfn.rehearsal.decisions if d["allowed"]}
        for role, action in [("PlanRole", "kafka-cluster:DescribeTopic"), ("ReplicateRole", "kafka-cluster:DescribeTopic"),
                             ("ReplicateRole", "kafka-cluster:AlterTransactionalId")]:
            assert (role, action) in used, (role, action, sorted(used))


def test_topic_deletions_on_an_msk_iam_target_need_and_have_their_grant(tmp_path):
    """PropagateTopicDeletions deletes a target topic whose source topic was
    deleted; on an MSK IAM target MSK authorizes that as
    kafka-cluster:DeleteTopic, which MSK Replicator's actions lack. `ferry
    deploy-parameters` sets DeletesTopics=true for such a definition and the
    template grants it; without it the broker refuses Plan, naming the
    action and the topic's ARN. (Found by an adversarial review: Plan
    failed on every run once a source topic was deleted.)"""
    from confluent_kafka.admin import AdminClient

    from conftest import list_topics
    topic, group = unique("rh-del"), unique("rh-del-app")
    create_topic(SOURCE, topic, 1)
    produce(SOURCE, topic, "src", 10)
    kc, ri = migration_config(tmp_path, topic, group)
    flow = json.loads(ri.read_text())[0]
    flow["TopicReplication"]["PropagateTopicDeletions"] = True
    env = {"FERRY_REPLICATOR_NAME": unique("rh-del"), "FERRY_KAFKA_CLUSTERS": kc.read_text(),
           "FERRY_REPLICATION_INFO": json.dumps([flow]), "FERRY_TABLE_PREFIX": unique("ferry-rhd")}
    with LocalStepFunctions(env, tmp_path / "logs", max_concurrency=1) as sfn:
        assert sfn.rehearsal.parameters["DeletesTopics"] == "true"
        arn = sfn.create_state_machine()
        first = sfn.execute(arn, {"stop_at_plan_end": True})
        assert first["status"] == "SUCCEEDED", f"{first}\n{sfn.logs()}"
        assert topic in list_topics(TARGET) and len(read_partition(TARGET, topic, 0)) == 10
        admin = AdminClient({"bootstrap.servers": SOURCE})
        admin.delete_topics([topic])[topic].result(timeout=30)

        full = sfn.rehearsal.stack
        sfn.rehearsal.set_stack(without(full, "PlanRole", action="kafka-cluster:DeleteTopic"))
        refused = sfn.execute(arn, {"stop_at_plan_end": True})
        denied = [d for d in sfn.rehearsal.denials() if d["action"] == "kafka-cluster:DeleteTopic"]
        assert denied and denied[0]["principal"].endswith("PlanRole") and denied[0]["resource"].endswith(f"/{topic}"), \
            sfn.rehearsal.denial_report()
        assert refused["status"] == "FAILED", refused
        assert topic in list_topics(TARGET)

        sfn.rehearsal.set_stack(full)
        sfn.rehearsal.clear()
        ok = sfn.execute(arn, {"stop_at_plan_end": True})
        assert ok["status"] == "SUCCEEDED", f"{ok}\n{sfn.logs()}"
        assert topic not in list_topics(TARGET)
        sfn.assert_rehearsed()


def test_two_stacks_one_each_way_share_the_first_stacks_tables(tmp_path):
    """MSK Replicator's rollback topology as two deployed stacks: stack A
    (replicator "a", source→target) creates the state tables; stack B
    (replicator "b", target→source, IDENTICAL names) is deployed with
    StateTablesFrom=A and creates none. Both state machines run, in turns
    and at once, with records produced on both clusters: each record is
    once on the other cluster and none is copied back (B recognises A's
    producers in the shared producers table, and A B's), and a group that
    read on the source up to a record B copied there resumes on the target
    at exactly that record (A's ENHANCED sync reads B's offset map by
    target offset). Every call of both stacks' functions is allowed by its
    own role; B's roles are refused on any table but A's; and B without
    A's tables fails in Plan, naming the missing table and what to deploy."""
    topic, group = unique("rh-two"), unique("rh-two-app")
    for b in (SOURCE, TARGET):
        create_topic(b, topic, 1)
    kc, ri = write_config(tmp_path, [topic], both_ways=True, groups=[group], group_mode="ENHANCED")
    forward, back = json.loads(ri.read_text())
    stack_a, stack_b = unique("ferry-rha"), unique("ferry-rhb")
    env_a = {"FERRY_REPLICATOR_NAME": unique("a"), "FERRY_KAFKA_CLUSTERS": kc.read_text(),
             "FERRY_REPLICATION_INFO": json.dumps([forward]), "FERRY_TABLE_PREFIX": stack_a}
    # B's own stack name as the prefix it would have had: the template's
    # FERRY_TABLE_PREFIX (A's, imported) must be what its functions use.
    env_b = {"FERRY_REPLICATOR_NAME": unique("b"), "FERRY_KAFKA_CLUSTERS": kc.read_text(),
             "FERRY_REPLICATION_INFO": json.dumps([back]), "FERRY_TABLE_PREFIX": stack_b}
    # Stack A as CloudFormation knows it, before its tables exist (as if
    # they had been deleted by hand): what B imports.
    params_a, _, template_a = deploy_parameters(env_a, tmp_path / "a-offline")
    a_exports = sam_stack(params_a, stack_a, template_a)["exports"]
    assert a_exports == {f"{stack_a}-StateTablesPrefix": stack_a}

    produce(SOURCE, topic, "src", 10)
    produce(TARGET, topic, "tgt", 10)
    deployment_b = {"stack_name": stack_b, "deploy_args": ("--state-tables-from", stack_a), "exports": a_exports}
    with LocalStepFunctions(env_b, tmp_path / "b", replicate_instances=1, deployment=deployment_b, max_concurrency=1) as b:
        assert b.rehearsal.stack["tables"] == []
        assert {f["environment"]["FERRY_TABLE_PREFIX"] for f in b.rehearsal.stack["functions"].values()} == {stack_a}
        machine_b = b.create_state_machine()
        alone = b.execute(machine_b, {"stop_at_plan_end": True})
        assert alone["status"] == "FAILED" and alone.get("error") == "Ferry.PlanFailed", alone
        log = b.function_log("ferry-plan")
        assert f"table {stack_a}-cursors does not exist, and this function may not create it" in log, log[-3000:]
        assert f"Fix: deploy (or redeploy) the stack named {stack_a}" in log, log[-3000:]
        # What refused it: no role may create a table, in either stack.
        assert {d["action"] for d in b.rehearsal.denials()} == {"dynamodb:CreateTable"}, b.rehearsal.denial_report()
        assert read_partition(SOURCE, topic, 0, timeout_s=3)[10:] == []
        b.rehearsal.clear()

        with LocalStepFunctions(env_a, tmp_path / "a", replicate_instances=1,
                                deployment={"stack_name": stack_a}, max_concurrency=1) as a:
            assert sorted(t["TableName"] for t in a.rehearsal.stack["tables"]) == \
                sorted(f"{stack_a}-{k}" for k in ("cursors", "offset-map", "producers", "groups"))
            assert a.rehearsal.stack["exports"] == a_exports
            machine_a = a.create_state_machine()

            def run(sfn: LocalStepFunctions, machine: str) -> None:
                ex = sfn.execute(machine, {"stop_at_plan_end": True})
                assert ex["status"] == "SUCCEEDED", f"{ex}\n{sfn.logs()}"

            run(a, machine_a)
            run(b, machine_b)
            produce(SOURCE, topic, "src2", 10)
            run(b, machine_b)  # nothing new on the target but what A wrote: filtered
            run(a, machine_a)
            produce(TARGET, topic, "tgt2", 10)
            produce(SOURCE, topic, "src3", 5)
            with ThreadPoolExecutor(2) as pool:  # both at once
                for f in [pool.submit(run, a, machine_a), pool.submit(run, b, machine_b)]:
                    f.result()
            run(a, machine_a)
            run(b, machine_b)

            everything = sorted([f"src-{i}" for i in range(10)] + [f"src2-{i}" for i in range(10)] +
                                [f"src3-{i}" for i in range(5)] + [f"tgt-{i}" for i in range(10)] +
                                [f"tgt2-{i}" for i in range(10)])
            src, tgt = read_partition(SOURCE, topic, 0), read_partition(TARGET, topic, 0)
            # Each record once on each cluster: its own, and the other's copy; none back.
            assert sorted(r["key"].decode() for r in src) == everything
            assert sorted(r["key"].decode() for r in tgt) == everything

            # An application on the source read up to tgt2-3 (a record B
            # copied there) and moves: A's ENHANCED sync puts it on the
            # target at exactly that record, through B's offset map.
            at = next(r for r in src if r["key"] == b"tgt2-3")
            c = Consumer({"bootstrap.servers": SOURCE, "group.id": group, "enable.auto.commit": False})
            c.commit(offsets=[TopicPartition(topic, 0, at["offset"], metadata="two-stacks")], asynchronous=False)
            c.close()
            run(a, machine_a)
            t_off, meta = committed(TARGET, group)[(topic, 0)]
            assert meta == "two-stacks"
            assert [r["key"] for r in tgt if r["offset"] >= t_off][0] == b"tgt2-3"
            a.assert_rehearsed()
            b.assert_rehearsed()
            # B did its work on A's tables, by grants that name them.
            used = {d["resource"] for d in b.rehearsal.decisions if d["allowed"] and ":dynamodb:" in d["resource"]}
            assert used and all(f":table/{stack_a}-" in r for r in used), sorted(used)
            assert any(r.endswith(f"{stack_a}-producers") for r in used), sorted(used)

            # B's roles on a table outside the shared prefix (one of B's own
            # name, which B does not create, and one of another stack that
            # exists): AWS's AccessDeniedException, through B's proxy.
            ddb_admin = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
            other = unique("ferry-rhc") + "-cursors"
            ddb_admin.create_table(TableName=other, BillingMode="PAY_PER_REQUEST",
                                   AttributeDefinitions=[{"AttributeName": "flow", "AttributeType": "S"}],
                                   KeySchema=[{"AttributeName": "flow", "KeyType": "HASH"}])
            role = b.rehearsal.role_of("ferry-plan")["name"]
            as_b = boto3.client("dynamodb", endpoint_url=b.rehearsal.url, region_name="us-east-1",
                                aws_access_key_id=role, aws_secret_access_key="rehearsal", aws_session_token="rehearsal")
            as_b.describe_table(TableName=f"{stack_a}-cursors")
            for table in (f"{stack_b}-cursors", other):
                with pytest.raises(ClientError, match=f"not authorized to perform: dynamodb:DescribeTable on resource: "
                                                      f"arn:aws:dynamodb:us-east-1:123456789012:table/{table}"):
                    as_b.describe_table(TableName=table)
            b.rehearsal.clear()

            # And the shared grant is the one B's loop prevention needs:
            # without A's producers table in its Replicate role, B is refused
            # there, and writes nothing back.
            full = b.rehearsal.stack
            b.rehearsal.set_stack(without(full, "ReplicateRole", resource=rf":table/{stack_a}-producers$"))
            b.cold_start()
            before = len(read_partition(SOURCE, topic, 0))
            produce(TARGET, topic, "tgt3", 3)
            b.execute(machine_b, {"stop_at_plan_end": True})
            denied = b.rehearsal.denials()
            assert denied and all(d["principal"].endswith("ReplicateRole") and d["resource"].endswith(f"{stack_a}-producers")
                                  for d in denied), b.rehearsal.denial_report()
            assert len(read_partition(SOURCE, topic, 0, timeout_s=3)) == before
            b.rehearsal.set_stack(full)
