"""Topics deleted on a cluster, waiting until the cluster no longer lists
them (delete_topic)."""

import time

from confluent_kafka.admin import AdminClient

from conftest import list_topics


def delete_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([topic])[topic].result(timeout=30)
    deadline = time.time() + 60
    while topic in list_topics(bootstrap):
        assert time.time() < deadline, f"{topic} still listed on {bootstrap}"
        time.sleep(0.5)
