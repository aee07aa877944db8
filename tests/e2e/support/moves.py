"""Moving applications between the clusters, as the tests of `ferry move`
and of the migration story do it: Ferry replicating both ways for the story
(FerryBothWays), a topic on both clusters with one flow and a group
(one_topic), a librdkafka group consuming and committing (consume), a move
refused (no_go), and Kafka's own command-line tools (kafka_tool)."""

import json
import os
import subprocess
import time

from confluent_kafka import Consumer

from conftest import SOURCE, TARGET, Ferry, committed, create_topic, unique, write_config
from support.story import CLUSTERS, OTHER, PARTS


class FerryBothWays:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.ferry: Ferry | None = None
        self.proc: subprocess.Popen | None = None

    def start(self, topics, groups):
        kc, ri = write_config(self.tmp, topics, both_ways=True, groups=groups)
        self.ferry = Ferry(kc, ri)
        self.proc = self.ferry.spawn("--round-seconds", "10", "--group-sync-seconds", "1", log=self.tmp / "ferry.log")

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(30)

    def caught_up(self, frm, topic):
        rows = [r for r in self.ferry.status() if r["flow"] == f"{frm}>{OTHER[frm]}" and r["topic"] == topic]
        return len(rows) == PARTS and all(r["lag"] == 0 for r in rows)

    def group_synced(self, frm, group):
        mine = committed(CLUSTERS[frm], group)
        rows = {(g["topic"], g["partition"]): g for g in self.ferry.groups() if g["flow"] == f"{frm}>{OTHER[frm]}" and g["group"] == group}
        theirs = committed(CLUSTERS[OTHER[frm]], group)
        for tp, (offset, _) in mine.items():
            row = rows.get(tp)
            # What the last failed check saw, for the timeout's message.
            self.why = f"{tp}: committed {offset} on {frm}, {theirs.get(tp, (None,))[0]} on {OTHER[frm]}; ferry groups: {row}"
            if not row or row["source_offset"] != offset or not row["exact"] or row["status"] not in ("synced", "up-to-date"):
                return False
            if theirs.get(tp, (None,))[0] != row["translated_offset"]:
                return False
        return True


def consume(bootstrap: str, topic: str, group: str, limit: int | None = None, idle_s: float = 5.0) -> list[str]:
    """Keys the group consumes (up to `limit`, or until nothing comes for
    `idle_s`), committed, then the consumer closed cleanly."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    keys: list[str] = []
    try:
        c.subscribe([topic])
        last = time.time()
        while (limit is None or len(keys) < limit) and time.time() - last < idle_s:
            m = c.poll(0.2)
            if m is None or m.error():
                continue
            keys.append(m.key().decode())
            last = time.time()
        c.commit(asynchronous=False)
    finally:
        c.close()
    return keys


def one_topic(tmp_path, name: str, group_name: str, partitions: int = 1) -> tuple[Ferry, str, str]:
    """A topic on both clusters and one flow source>target copying it, with
    a group: the replicator, the topic's name and the group's."""
    topic, group = unique(name), unique(group_name)
    for b in (SOURCE, TARGET):
        create_topic(b, topic, partitions)
    kc, ri = write_config(tmp_path, [topic], groups=[group])
    return Ferry(kc, ri), topic, group


def no_go(ferry: Ferry, *args: str) -> dict:
    p = ferry.move(*args, "--json")
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    rep = json.loads(p.stdout)
    assert rep["verdict"] == "NO-GO" and not rep["recorded"], rep
    return rep


def kafka_tool(main: str, *args: str) -> subprocess.CompletedProcess:
    """One of Kafka's own command-line tools, from the stack's jars."""
    return subprocess.run(["java", "-cp", f"{os.environ['KAFKA_LIBS']}/*", main, *args],
                          capture_output=True, text=True, timeout=180)
