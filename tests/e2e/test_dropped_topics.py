"""A topic a flow no longer copies (its definition dropped it, or it was
handed over to another replicator) keeps its cursor where it stopped. Its
lag then grows with the source for good, and no run of this flow will
close it: counted, it raised MessageLag (and the stack's alarm on it), the
age of the oldest waiting record and a group's lag on the topic without
end, and readiness could never say GO again. The report and readiness
leave such partitions out, `ferry status` says why each is not copied, and
the topic put back resumes where it stopped."""

import json
import time
import subprocess

from conftest import SOURCE, TARGET, Ferry, create_topic, list_topics, produce_keys, read_partition, unique, write_config
from support.groups import commit_at
from support.shared_tables import two_names


def ferry_json(ferry: Ferry, cmd: str) -> tuple[int, dict]:
    res = subprocess.run(ferry.args(cmd, "--json"), capture_output=True, text=True, timeout=180)
    assert res.returncode in (0, 3), res.stdout + res.stderr
    return res.returncode, json.loads(res.stdout)


def measured(readiness: dict, metric: str) -> str:
    [c] = [c for c in readiness["criteria"] if c["metric"] == metric]
    return c["measured"]


def test_a_topic_dropped_from_the_definition_leaves_the_lag_and_resumes_where_it_stopped(tmp_path):
    kept, dropped, group = unique("dropped-kept"), unique("dropped-gone"), unique("dropped-app")
    create_topic(SOURCE, kept, 1)
    create_topic(SOURCE, dropped, 2)
    produce_keys(SOURCE, kept, [f"k{i}" for i in range(10)])
    first = {p: [f"d{p}-{i}" for i in range(20)] for p in range(2)}
    for p, keys in first.items():
        produce_keys(SOURCE, dropped, keys, partition=p)
    ferry = Ferry(*write_config(tmp_path, [kept, dropped], groups=[group]))
    ran = ferry.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr

    # The definition drops the topic; its source goes on taking records,
    # and a group goes on reading it there.
    write_config(tmp_path, [kept], groups=[group])
    later = {p: [f"d{p}-{i}" for i in range(20, 50)] for p in range(2)}
    for p, keys in later.items():
        produce_keys(SOURCE, dropped, keys, partition=p)
    produce_keys(SOURCE, kept, [f"k{i}" for i in range(10, 15)])
    commit_at(SOURCE, group, {(kept, 0): (15, ""), (dropped, 0): (5, ""), (dropped, 1): (5, "")})
    ran = ferry.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert [len(read_partition(TARGET, dropped, p)) for p in range(2)] == [20, 20], "the dropped topic is not copied"

    _, report = ferry_json(ferry, "report")
    assert [(t["topic"], t["message_lag"]) for t in report["topics"]] == [(kept, 0)], report["topics"]
    [g] = report["groups"]
    assert (g["group"], g["source_sum_offset_lag"]) == (group, 0), g
    code, readiness = ferry_json(ferry, "readiness")
    assert measured(readiness, "MessageLag") == "0", readiness
    assert code == 0 and readiness["go"], json.dumps(readiness, indent=1)
    rows = {(r["topic"], r["partition"]): r for r in ferry.status()}
    assert "not_copied" not in rows[(kept, 0)], rows
    for p in range(2):
        row = rows[(dropped, p)]
        assert (row["cursor"], row["lag"]) == (20, 30), row
        assert dropped in row["not_copied"] and "no longer selects" in row["not_copied"], row
    table = subprocess.run(ferry.args("status"), capture_output=True, text=True, timeout=120)
    line = next(line for line in table.stdout.splitlines() if dropped in line)
    assert "not copied" in line and " 30 " not in line, table.stdout

    # Put back: it resumes where it stopped, every record once.
    write_config(tmp_path, [kept, dropped], groups=[group])
    ran = ferry.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    for p in range(2):
        assert [r["key"].decode() for r in read_partition(TARGET, dropped, p)] == first[p] + later[p]
    _, report = ferry_json(ferry, "report")
    assert sorted((t["topic"], t["message_lag"]) for t in report["topics"]) == sorted([(kept, 0), (dropped, 0)])
    assert all("not_copied" not in r for r in ferry.status())


def test_the_replicator_that_handed_a_topic_over_does_not_count_its_lag(tmp_path):
    """Two replicators on the same tables: the first copies the topic, then
    its definition drops it and the second takes it over. The first's
    report leaves the topic out; the second's counts it."""
    topic, other = unique("dropped-handed"), unique("dropped-other")
    create_topic(SOURCE, topic, 1)
    create_topic(SOURCE, other, 1)
    produce_keys(SOURCE, topic, [f"k{i}" for i in range(10)])
    a, b = two_names(tmp_path, [topic, other], [topic])
    assert a.run("--once").returncode == 0
    write_config(tmp_path / "first", [other])
    assert a.run("--once").returncode == 0
    ran = b.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    produce_keys(SOURCE, topic, [f"k{i}" for i in range(10, 40)])

    _, first = ferry_json(a, "report")
    assert [t["topic"] for t in first["topics"]] == [other], first["topics"]
    [row] = [r for r in a.status() if r["topic"] == topic]
    assert row["lag"] == 30 and "not copied" in row["not_copied"], row
    _, second = ferry_json(b, "report")
    assert [(t["topic"], t["message_lag"]) for t in second["topics"]] == [(topic, 30)], second["topics"]
    ran = b.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert [r["key"].decode() for r in read_partition(TARGET, topic, 0)] == [f"k{i}" for i in range(40)]


def test_a_selected_topic_named_like_prefixed_copies_is_not_copied_and_its_lag_shows(tmp_path):
    """An IDENTICAL flow copies `source.orders-…`; a PREFIXED flow added
    beside it makes every topic carrying one of its clusters' aliases a
    possible copy, never copied again (see the next test for why). The
    definition still selects the topic: its lag counts in MessageLag and
    readiness (breaker helper-90: it was left out of the numbers). Named
    as it is, the topic is refused in the definition: a name asked for
    that no flow would copy."""
    u = unique("prefixed")
    mine, theirs = f"source.orders-{u}", f"other-{u}"
    create_topic(SOURCE, mine, 1)
    create_topic(TARGET, theirs, 1)
    produce_keys(SOURCE, mine, [f"m{i}" for i in range(20)])
    kc, ri = write_config(tmp_path, [mine])
    ferry = Ferry(kc, ri)
    assert ferry.run("--once").returncode == 0
    flows = json.loads(ri.read_text())
    back = json.loads(json.dumps(flows[0]))
    back.update(SourceKafkaClusterId="target", TargetKafkaClusterId="source")
    back["TopicReplication"]["TopicNameConfiguration"] = {"Type": "PREFIXED_WITH_SOURCE_CLUSTER_ALIAS"}
    back["TopicReplication"]["TopicsToReplicate"] = [theirs]
    ri.write_text(json.dumps(flows + [back]))
    produce_keys(SOURCE, mine, [f"m{i}" for i in range(20, 50)])
    refused = ferry.run("--once")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"[0].TopicReplication.TopicsToReplicate: names the topic {mine}" in refused.stderr, refused.stderr
    assert "IDENTICAL" in refused.stderr and f"target.{theirs}" not in list_topics(SOURCE), refused.stderr
    # A pattern may select copies, and selects this one; written for copy
    # names and selecting nothing else, it copies nothing, and the plan
    # says so (it was silent).
    escaped = mine.replace(".", "\\.")
    flows[0]["TopicReplication"]["TopicsToReplicate"] = [f"{escaped}.*"]
    ri.write_text(json.dumps(flows + [back]))
    ran = ferry.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    warned = f"TopicsToReplicate pattern `{escaped}.*` selects only topics named like copies (starting with `source.`"
    assert warned in ran.stderr and "IDENTICAL" in ran.stderr, ran.stderr
    _, report = ferry_json(ferry, "report")
    assert (mine, 30) in [(t["topic"], t["message_lag"]) for t in report["topics"]], report["topics"]
    # Nor one not written for copy names, which selects only copies today
    # (as `.*` on a target holding nothing but copies yet), its dot
    # unescaped (any character) or with another branch ...
    for pattern in (f".*orders-{u}", f"{mine}.*", f"{escaped}|orders-{u}"):
        flows[0]["TopicReplication"]["TopicsToReplicate"] = [pattern]
        ri.write_text(json.dumps(flows + [back]))
        ran = ferry.run("--once")
        assert ran.returncode == 0 and "selects only topics named like copies" not in ran.stderr, (pattern, ran.stderr)
    # ... nor one that selects a topic it copies as well.
    plain = f"plain-{u}"
    create_topic(SOURCE, plain, 1)
    flows[0]["TopicReplication"]["TopicsToReplicate"] = [f".*-{u}"]
    ri.write_text(json.dumps(flows + [back]))
    ran = ferry.run("--once")
    assert ran.returncode == 0 and "selects only topics named like copies" not in ran.stderr, ran.stderr


def test_copies_of_a_prefixed_flow_are_never_copied_again_by_another_replicators_identical_flow(tmp_path):
    """Two replicators on the same tables: PREFIXED source→target, and
    IDENTICAL target→source, which carries the copy `source.<t>` back to
    source under that name. The PREFIXED flow must not copy it again
    (`source.source.<t>`, and so on each round: breaker helper-92 on a
    version that took `source.` topics on source for applications')."""
    base = unique("loop")
    create_topic(SOURCE, base, 1)
    produce_keys(SOURCE, base, ["k0", "k1", "k2"])
    prefix = unique("ferry-loop")
    selected = {"TopicsToReplicate": [f".*{base}"]}
    replicators = []
    for name, index, naming in (("forward", 0, "PREFIXED_WITH_SOURCE_CLUSTER_ALIAS"), ("back", 1, "IDENTICAL")):
        folder = tmp_path / name
        folder.mkdir()
        kc, ri = write_config(folder, [base], both_ways=True, topic_replication=selected)
        flow = json.loads(ri.read_text())[index]
        flow["TopicReplication"]["TopicNameConfiguration"] = {"Type": naming}
        ri.write_text(json.dumps([flow]))
        replicators.append(Ferry(kc, ri, name=unique(name), prefix=prefix))
    for _ in range(3):
        for r in replicators:
            ran = r.run("--once")
            assert ran.returncode == 0, ran.stdout + ran.stderr
    named = sorted(t for t in list_topics(SOURCE) | list_topics(TARGET) if base in t)
    assert not any(t.startswith("source.source.") for t in named), named
    assert [r["key"] for r in read_partition(TARGET, f"source.{base}", 0)] == [b"k0", b"k1", b"k2"]


def test_a_failed_group_sync_on_a_dropped_topic_does_not_hold_readiness(tmp_path):
    """A sync that stopped between its commit and its record leaves the
    group's rows failed; the next heals those it visits, and never visits
    a topic the flow dropped since: that row counted in the report's sync
    failures for good (breaker helper-90)."""
    kept, dropped, group = unique("dropped-kept"), unique("dropped-gone"), unique("dropped-app")
    for t in (kept, dropped):
        create_topic(SOURCE, t, 1)
        produce_keys(SOURCE, t, [f"k{i}" for i in range(10)])
    ferry = Ferry(*write_config(tmp_path, [kept, dropped], groups=[group]))
    assert ferry.run("--once").returncode == 0
    commit_at(SOURCE, group, {(kept, 0): (5, ""), (dropped, 0): (5, "")})
    ferry.run("--once", "--group-sync-lease-ms", "3000", env={"FERRY_FAILPOINT": "crash-after-group-commit"})
    time.sleep(3)
    assert {g["status"] for g in ferry.groups() if g["group"] == group} == {"failed"}, ferry.groups()
    write_config(tmp_path, [kept], groups=[group])
    ran = ferry.run("--once")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    _, report = ferry_json(ferry, "report")
    [g] = report["groups"]
    assert g["sync_failures"] == 0, g
    code, readiness = ferry_json(ferry, "readiness")
    assert code == 0 and readiness["go"], json.dumps(readiness, indent=1)
