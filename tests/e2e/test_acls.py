"""CopyAccessControlListsForTopics: both local clusters enforce ACLs
(StandardAuthorizer). Topic ACLs on the source, LITERAL and PREFIXED, ALLOW
and DENY, every operation, reach the target for the replicated topics,
renamed with the topics; ACLs of other topics and LITERAL `*` do not."""

import time

from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType

from conftest import SOURCE, TARGET, Ferry, create_topic, unique, write_config
from support.acls import binding, create, topic_acls


def key(b: AclBinding, name: str | None = None) -> tuple:
    return (name or b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type)


def run_case(tmp_path, naming: str, rename) -> None:
    stem = unique("acl")
    topic, other = f"{stem}-orders", f"{stem}-payments"
    create_topic(SOURCE, topic, 1)
    create_topic(SOURCE, other, 1)
    copied = [
        binding(topic, ResourcePatternType.LITERAL, "User:alice", AclOperation.READ),
        binding(topic, ResourcePatternType.LITERAL, "User:bob", AclOperation.WRITE),
        binding(topic, ResourcePatternType.LITERAL, "User:mallory", AclOperation.ALL, AclPermissionType.DENY),
        binding(f"{stem}-ord", ResourcePatternType.PREFIXED, "User:alice", AclOperation.DESCRIBE),
    ]
    not_copied = [
        binding(other, ResourcePatternType.LITERAL, "User:alice", AclOperation.READ),
        binding(f"{stem}-pay", ResourcePatternType.PREFIXED, "User:bob", AclOperation.WRITE),
    ]
    create(SOURCE, copied + not_copied)
    kc, ri = write_config(tmp_path, [topic], copy_acls=True, naming=naming)
    ferry = Ferry(kc, ri)
    res = ferry.run("--once")
    assert res.returncode == 0, res.stdout + res.stderr
    want = {key(b, rename(b.name)) for b in copied}
    # The brokers apply created ACLs from the metadata log a moment later.
    deadline = time.time() + 15
    while (on_target := {a for a in topic_acls(TARGET) if a[0].startswith(rename(stem))}) != want and time.time() < deadline:
        time.sleep(0.3)
    assert on_target == want, res.stdout
    # A second plan finds them all there and creates nothing.
    again = ferry.run("--once")
    assert again.returncode == 0 and "copied" not in again.stdout
    assert {a for a in topic_acls(TARGET) if a[0].startswith(rename(stem))} == on_target


def test_topic_acls_are_copied_with_identical_names(tmp_path):
    run_case(tmp_path, "IDENTICAL", lambda n: n)


def test_topic_acls_follow_prefixed_names(tmp_path):
    run_case(tmp_path, "PREFIXED_WITH_SOURCE_CLUSTER_ALIAS", lambda n: f"source.{n}")
