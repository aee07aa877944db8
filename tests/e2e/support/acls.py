"""Topic ACLs on a cluster: a binding for a topic (binding), created on a
cluster (create), and the topic ACLs a cluster holds (topic_acls)."""

from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient, ResourcePatternType,
                                   ResourceType)


def binding(name, pattern, principal, op, perm=AclPermissionType.ALLOW):
    return AclBinding(ResourceType.TOPIC, name, pattern, principal, "*", op, perm)


def topic_acls(bootstrap: str) -> set[tuple]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    flt = AclBindingFilter(ResourceType.TOPIC, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY)
    found = admin.describe_acls(flt).result(timeout=30)
    return {(a.name, a.resource_pattern_type, a.principal, a.host, a.operation, a.permission_type) for a in found}


def create(bootstrap: str, acls: list[AclBinding]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_acls(acls).values():
        f.result(timeout=30)
