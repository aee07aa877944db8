"""Client quotas on Ferry's client ids (`ferry-<cluster id>`), set and
removed with Kafka's own ConfigCommand (see test_quotas.py)."""

from support.moves import kafka_tool


def set_client_quota(bootstrap: str, client_id: str, **rates: int) -> None:
    """`consumer_byte_rate=...`, `producer_byte_rate=...` for one client id."""
    add = ",".join(f"{k}={v}" for k, v in rates.items())
    out = kafka_tool("kafka.admin.ConfigCommand", "--bootstrap-server", bootstrap, "--alter",
                     "--entity-type", "clients", "--entity-name", client_id, "--add-config", add)
    assert out.returncode == 0, out.stdout + out.stderr


def remove_client_quota(bootstrap: str, client_id: str, *names: str) -> None:
    out = kafka_tool("kafka.admin.ConfigCommand", "--bootstrap-server", bootstrap, "--alter",
                     "--entity-type", "clients", "--entity-name", client_id, "--delete-config", ",".join(names))
    assert out.returncode == 0, out.stdout + out.stderr
