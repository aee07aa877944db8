"""The hand-off between overlapping executions, with the real Plan and
Replicate functions: a Replicate that finds its batch leased by one about
to stop waits and takes over as the other gives its leases back, so that
replication goes on without waiting for the next execution. Measured as a
consumer on the target sees it: the latency of every record produced
through the hand-off."""

import threading
import time

from confluent_kafka import Consumer, TopicPartition

from conftest import SOURCE, TARGET, create_topic, producer, read_partition, unique
from support.warm_function import REPLICATE, WarmFunction, planned

PARTITIONS = 2
# Seconds without a record after which the target holds all it will.
QUIET = 5


class Load:
    """A steady producer (a record every 20 ms, its send time as value) and
    a read_committed consumer on the target recording when each arrived."""

    def __init__(self, topic: str, partitions: int = PARTITIONS):
        self.topic, self.stop, self.sent, self.seen = topic, threading.Event(), 0, {}
        self.partitions = partitions
        self.threads = [threading.Thread(target=self._produce, daemon=True), threading.Thread(target=self._consume, daemon=True)]
        for t in self.threads:
            t.start()

    def _produce(self):
        p = producer(SOURCE, **{"linger.ms": 0})
        while not self.stop.is_set():
            p.produce(self.topic, key=str(self.sent).encode(), value=repr(time.time()).encode(), partition=self.sent % self.partitions)
            self.sent += 1
            p.poll(0)
            time.sleep(0.02)
        assert p.flush(30) == 0

    def _consume(self):
        c = Consumer({"bootstrap.servers": TARGET, "group.id": unique("handoff-reader"), "isolation.level": "read_committed",
                      "fetch.wait.max.ms": 50, "enable.auto.commit": False})
        c.assign([TopicPartition(self.topic, p, 0) for p in range(self.partitions)])
        # After the load ends, the Replicates have returned: what they copied
        # is committed on the target, and a read_committed fetch of 50 ms
        # has it within a second or two. Drained once nothing more came for
        # QUIET seconds (the load went on past the last Replicate, so some
        # records never arrive), or all of them did.
        last = time.time()
        try:
            while not self.stop.is_set() or len(self.seen) < self.sent:
                m = c.poll(0.1)
                if m is not None and not m.error():
                    self.seen[m.key()] = (float(m.value()), time.time(), m.partition())
                    last = time.time()
                if self.stop.is_set() and time.time() > max(last, self.stopped_at) + QUIET:
                    break
        finally:
            c.close()

    def end(self):
        self.stopped_at = time.time()
        self.stop.set()
        for t in self.threads:
            t.join(90)

    def latencies(self, since: float, until: float, partitions: tuple[int, ...] | None = None) -> list[float]:
        return sorted(arrived - sent for sent, arrived, p in self.seen.values()
                      if since <= sent <= until and (partitions is None or p in partitions))


def run_two(tmp_path, wait_seconds: str, third: bool = False):
    """Replicate A copies for 20 s; B, started 5 s later with 40 s, finds
    the batch leased by A (and, with `third`, C started 3 s after B with
    40 s). Returns A's and B's outputs, when A's budget ended, the load,
    the topic, and B's log (with `third`, C's output and log too)."""
    topic = unique("handoff")
    create_topic(SOURCE, topic, PARTITIONS)
    env = {"FERRY_HANDOFF_WAIT_SECONDS": wait_seconds}
    ferry, plan = planned(tmp_path, topic)
    [ref] = plan["batches"]
    a = WarmFunction(REPLICATE, ferry, tmp_path / "a.log", env)
    b = WarmFunction(REPLICATE, ferry, tmp_path / "b.log", env)
    c = WarmFunction(REPLICATE, ferry, tmp_path / "c.log", env) if third else None
    load, outs = Load(topic), {}

    def invoke(name, fn, seconds):
        outs[name] = fn.invoke(dict(ref, max_seconds=seconds), timeout_s=60)

    try:
        started = time.time()
        threads = [threading.Thread(target=invoke, args=("a", a, 20))]
        threads[0].start()
        time.sleep(5)
        if c:
            threads.append(threading.Thread(target=lambda: (time.sleep(3), invoke("c", c, 40))))
            threads[1].start()
        invoke("b", b, 40)
        for t in threads:
            t.join(60)
        load.end()
    finally:
        for fn in (a, b, c):
            if fn:
                fn.close()
    for name in outs:
        assert outs[name][0] == "response", (outs[name], (tmp_path / f"{name}.log").read_text()[-3000:])
    if c:
        return outs["a"][1]["summary"], outs["b"][1]["summary"], outs["c"][1]["summary"], (tmp_path / "c.log").read_text()
    return outs["a"][1]["summary"], outs["b"][1]["summary"], started + 20, load, topic, (tmp_path / "b.log").read_text()


def test_a_replicate_arriving_before_the_holder_stops_takes_over_without_a_gap(tmp_path):
    summary_a, summary_b, a_ends, load, topic, b_log = run_two(tmp_path, "75")
    assert "waiting to take them over" in b_log, b_log[-3000:]
    # B copied after A: it took every partition, none was left held.
    assert summary_b["records"] > 0 and "lease-held" not in summary_b["stopped"], summary_b
    # Every record produced across the hand-off (A's last 5 s, B's first
    # 10) reached the target within a few seconds: without the wait, those
    # produced after A stopped would wait for the next execution.
    around = load.latencies(a_ends - 5, a_ends + 10)
    assert len(around) > 300, len(around)
    print(f"\nhand-off: {len(around)} records, latency p50 {around[len(around) // 2]:.2f} s, max {around[-1]:.2f} s")
    assert around[-1] < 5, around[-20:]
    # And each exactly once, in order: the target holds the source's
    # records up to where B stopped (the load went on a little longer).
    for p in range(PARTITIONS):
        src, tgt = [r["key"] for r in read_partition(SOURCE, topic, p)], [r["key"] for r in read_partition(TARGET, topic, p)]
        assert tgt == src[:len(tgt)] and len(src) - len(tgt) < 100, (p, len(src), len(tgt))


def test_with_the_wait_turned_off_the_late_replicate_leaves_the_batch_to_the_next(tmp_path):
    """The same two with FERRY_HANDOFF_WAIT_SECONDS=0: B does not wait, and
    the records produced after A stopped stay on the source (what the test
    above would see without the hand-off)."""
    summary_a, summary_b, a_ends, load, topic, b_log = run_two(tmp_path, "0")
    assert "waiting to take them over" not in b_log
    assert summary_b["records"] == 0 and set(summary_b["stopped"]) == {"lease-held"}, summary_b
    assert not [k for k, (sent, _, _) in load.seen.items() if sent > a_ends + 1], "records arrived after A stopped"


def test_one_successor_waits_for_a_holder_and_a_third_leaves_it_the_batch(tmp_path):
    """A third Replicate arriving while B waits for A does not wait too: it
    would split A's partitions with B and hold its share to its own,
    later, deadline; it leaves the batch at once and B takes all of it."""
    _, summary_b, summary_c, c_log = run_two(tmp_path, "75", third=True)
    assert "another worker waits to take over" in c_log, c_log[-3000:]
    assert set(summary_c["stopped"]) == {"lease-held"} and summary_c["records"] == 0, summary_c
    assert "lease-held" not in summary_b["stopped"] and summary_b["records"] > 0, summary_b


def test_a_replicate_waits_for_every_holder_that_stops_with_the_first(tmp_path):
    """The batches of one execution stop together, and the next plan
    regroups partitions, so one batch of the next execution holds
    partitions of several: A1 copies partitions 0 and 1 for 20 s, A2 (1 s
    later) 2 and 3; B, on 0 and 2 from 5 s in, waits for both and takes
    both. Partition 2's records across A2's stop arrive within 5 s."""
    topic = unique("handoff-two")
    create_topic(SOURCE, topic, 4)
    ferry, plan = planned(tmp_path, topic)
    flow = plan["batches"][0]["flow"]

    def batch(parts, seconds):
        return {"flow": flow, "partitions": [{"topic": topic, "partitions": [[p, 0, 0] for p in parts]}], "max_seconds": seconds}

    env = {"FERRY_HANDOFF_WAIT_SECONDS": "75"}
    fns = {n: WarmFunction(REPLICATE, ferry, tmp_path / f"{n}.log", env) for n in ("a1", "a2", "b")}
    load, outs = Load(topic, 4), {}

    def invoke(name, event):
        outs[name] = fns[name].invoke(event, timeout_s=60)

    try:
        started = time.time()
        threads = [threading.Thread(target=invoke, args=("a1", batch([0, 1], 20)))]
        threads[0].start()
        time.sleep(1)
        threads.append(threading.Thread(target=invoke, args=("a2", batch([2, 3], 20))))
        threads[1].start()
        time.sleep(4)
        invoke("b", batch([0, 2], 40))
        for t in threads:
            t.join(60)
        load.end()
    finally:
        for fn in fns.values():
            fn.close()
    for name in outs:
        assert outs[name][0] == "response", (outs[name], (tmp_path / f"{name}.log").read_text()[-3000:])
    summary_b, b_log = outs["b"][1]["summary"], (tmp_path / "b.log").read_text()
    assert '"holders":2' in b_log.replace(" ", ""), b_log[-3000:]
    assert "lease-held" not in summary_b["stopped"] and summary_b["partitions"] == 2, summary_b
    a2_ends = started + 1 + 20
    around = load.latencies(a2_ends - 5, a2_ends + 10, (2,))
    assert len(around) > 100, len(around)
    assert around[-1] < 5, around[-20:]
