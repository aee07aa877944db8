"""Readiness and metrics on live data: `ferry readiness` says NO-GO while
replication is behind and the group is missing on the target, and GO once
both are done; `ferry report` measures the known lag and group lag and
publishes them to CloudWatch (moto), where they read back; a cluster that
does not answer is a measurement (ping 0), not a crash."""

import json
import os
import subprocess
from datetime import datetime, timedelta, timezone

import boto3
from confluent_kafka import Consumer, TopicPartition

from conftest import ROOT, SOURCE, Ferry, create_topic, producer, unique, write_config
from support.warm_function import WarmFunction

REPORT = ROOT / "target" / "debug" / "ferry-report"

NO_GO = 3


def ferry_cmd(ferry: Ferry, cmd: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(ferry.args(cmd, *extra), capture_output=True, text=True, timeout=180)


def verdict(ferry: Ferry) -> tuple[int, dict]:
    res = ferry_cmd(ferry, "readiness", "--json")
    assert res.returncode in (0, NO_GO), res.stdout + res.stderr
    return res.returncode, json.loads(res.stdout)


def criterion(v: dict, metric: str) -> dict:
    found = [c for c in v["criteria"] if c["metric"] == metric]
    assert len(found) == 1, v
    return found[0]


def report(ferry: Ferry, *extra: str) -> dict:
    res = ferry_cmd(ferry, "report", "--json", *extra)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


def cloudwatch():
    return boto3.client("cloudwatch", endpoint_url=os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
                        region_name=os.environ.get("AWS_REGION", "us-east-1"))


def stats(name: str, metric: str, dims: dict[str, str]) -> list[dict]:
    cw = cloudwatch()
    now = datetime.now(timezone.utc)
    return cw.get_metric_statistics(
        Namespace="Ferry", MetricName=metric, StartTime=now - timedelta(minutes=30), EndTime=now + timedelta(minutes=5),
        Period=86400, Statistics=["Minimum", "Maximum", "SampleCount"],
        Dimensions=[{"Name": "ReplicatorName", "Value": name}] + [{"Name": k, "Value": v} for k, v in dims.items()],
    )["Datapoints"]


def test_no_go_while_behind_go_once_caught_up_and_metrics_read_back(tmp_path):
    topic = unique("ready")
    create_topic(SOURCE, topic, 2)
    p = producer(SOURCE)
    for i in range(1500):
        p.produce(topic, partition=i % 2, key=f"k{i}".encode(), value=b"v")
    assert p.flush(30) == 0
    group = unique("ready-app")
    c = Consumer({"bootstrap.servers": SOURCE, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, 0, 100), TopicPartition(topic, 1, 300)], asynchronous=False)
    c.close()
    kc, ri = write_config(tmp_path, [topic], groups=[group])
    ferry = Ferry(kc, ri)

    # Planned from EARLIEST, nothing replicated: 1,500 behind, the group not on the target.
    res = ferry_cmd(ferry, "plan")
    assert res.returncode == 0, res.stderr
    code, v = verdict(ferry)
    assert code == NO_GO and v["go"] is False
    lag = criterion(v, "MessageLag")
    assert (lag["measured"], lag["go"]) == ("1500", False), lag
    groups = criterion(v, "ConsumerGroupCount")
    assert not groups["go"] and f"missing on target: {group}" in groups["measured"], groups
    assert all(c["go"] for c in v["criteria"] if c["metric"] in ("ReplicatorFailure", "KafkaClusterPingSuccessCount")), v
    # Never replicated: the age of the first waiting record was read from the source, seconds old.
    assert criterion(v, "ReplicationLatency")["go"], v
    behind = report(ferry, "--publish")
    assert [(t["topic"], t["partitions"], t["message_lag"]) for t in behind["topics"]] == [(topic, 2, 1500)]
    # Published by default: a group's lag is a metric of its cluster (the
    # largest group's), not of the group (a metric per group is billed).
    listed = cloudwatch().list_metrics(Namespace="Ferry", MetricName="SumOffsetLag",
                                       Dimensions=[{"Name": "ReplicatorName", "Value": ferry.name}])["Metrics"]
    assert sorted(tuple(sorted(d["Name"] for d in m["Dimensions"])) for m in listed) == \
        [("ClusterAlias", "ReplicatorName"), ("ClusterAlias", "ReplicatorName"), ("ReplicatorName",)], listed

    # Replicated and synced: GO.
    res = ferry.run("--once")
    assert res.returncode == 0, res.stdout + res.stderr
    code, v = verdict(ferry)
    assert code == 0 and v["go"] is True, json.dumps(v, indent=1)
    assert criterion(v, "MessageLag")["measured"] == "0"
    assert criterion(v, "SumOffsetLag")["measured"] == "1100 on source, 1100 on target"  # 650 + 450
    caught_up = report(ferry, "--publish", "--topic-metrics", "--group-metrics")
    [g] = caught_up["groups"]
    assert (g["group"], g["source_sum_offset_lag"], g["target_sum_offset_lag"], g["sync_failures"]) == (group, 1100, 1100, 0)
    assert {c["alias"]: c["ping_ok"] for c in caught_up["clusters"]} == {"source": True, "target": True}

    # Both reports' numbers, as CloudWatch holds them. The first was
    # published by default: MessageLag of the replicator alone (no Topic
    # dimension, a metric whose cost does not grow with topics); the
    # second with --topic-metrics and --group-metrics: per topic and group.
    listed = cloudwatch().list_metrics(Namespace="Ferry", MetricName="MessageLag",
                             Dimensions=[{"Name": "ReplicatorName", "Value": ferry.name}])["Metrics"]
    assert sorted(tuple(sorted(d["Name"] for d in m["Dimensions"])) for m in listed) == \
        [("ReplicatorName",), ("ReplicatorName", "Topic")], listed
    [lag] = stats(ferry.name, "MessageLag", {"Topic": topic})
    assert (lag["Maximum"], lag["Minimum"], lag["SampleCount"]) == (0, 0, 1)
    [lag] = stats(ferry.name, "MessageLag", {})
    assert lag["Maximum"] == 1500
    [target_lag] = stats(ferry.name, "SumOffsetLag", {"ClusterAlias": "target", "ConsumerGroup": group})
    assert target_lag["Maximum"] == 1100
    [ping] = stats(ferry.name, "KafkaClusterPingSuccessCount", {"ClusterAlias": "source"})
    assert ping["Minimum"] == 1

    # The human form agrees and names every criterion.
    table = ferry_cmd(ferry, "readiness")
    assert table.returncode == 0 and "GO: every criterion passes" in table.stdout, table.stdout
    assert table.stdout.count("\nGO ") == len(v["criteria"]), table.stdout
    emf = ferry_cmd(ferry, "report", "--emf")
    docs = [json.loads(line) for line in emf.stdout.splitlines()]
    assert any(d.get("Topic") == topic and d["MessageLag"] == 0 for d in docs), docs

    # The deployed Report function: per topic only with TopicMetrics
    # (FERRY_TOPIC_METRICS=true), per group only with GroupMetrics
    # (FERRY_GROUP_METRICS=true); the topic and group are in the line either way.
    for setting, declared, lag_declared in (
        ("false", [["ReplicatorName"]], [["ReplicatorName", "ClusterAlias"], ["ReplicatorName"]]),
        ("true", [["ReplicatorName", "Topic"], ["ReplicatorName"]],
         [["ReplicatorName", "ClusterAlias", "ConsumerGroup"], ["ReplicatorName", "ClusterAlias"], ["ReplicatorName"]]),
    ):
        fn = WarmFunction(REPORT, ferry, tmp_path / f"report-{setting}.log",
                          extra_env={"FERRY_TOPIC_METRICS": setting, "FERRY_GROUP_METRICS": setting})
        try:
            kind, out, _ = fn.invoke({}, timeout_s=60)
            assert kind == "response", (out, fn.text()[-2000:])
            lines = [json.loads(line) for line in fn.text().splitlines() if line.startswith("{") and '"_aws"' in line]
        finally:
            fn.close()
        mine = [d for d in lines if d.get("Topic") == topic]
        assert mine and all(d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == declared for d in mine), (setting, mine)
        lags = [d for d in lines if d.get("ConsumerGroup") == group and "SumOffsetLag" in d]
        assert len(lags) == 2 and all(d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == lag_declared for d in lags), \
            (setting, lags)


def test_an_unreachable_cluster_is_no_go_not_a_crash(tmp_path):
    topic = unique("ready-down")
    create_topic(SOURCE, topic, 1)
    kc, ri = write_config(tmp_path, [topic])
    ferry = Ferry(kc, ri)
    assert ferry_cmd(ferry, "plan").returncode == 0
    # The same replicator, its target now unreachable.
    down = tmp_path / "down"
    down.mkdir()
    kc2, ri2 = write_config(down, [topic], target="127.0.0.1:1")
    ferry.kc, ferry.ri = kc2, ri2
    code, v = verdict(ferry)
    assert code == NO_GO
    pings = {c["name"]: c for c in v["criteria"] if c["metric"] == "KafkaClusterPingSuccessCount"}
    assert pings["cluster target answers"]["measured"] == "0" and not pings["cluster target answers"]["go"]
    assert pings["cluster source answers"]["go"]
    r = report(ferry)
    target = next(c for c in r["clusters"] if c["alias"] == "target")
    assert target["ping_ok"] is False and "127.0.0.1:1" in target["error"], target
