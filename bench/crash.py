"""Crash campaign: Ferry killed at least CRASH_POINTS times while it copies,
with another producer's transaction held open on the target partitions and
the log cleaner compacting both clusters' copies of a compacted topic.
Afterwards it counts what a crash could have cost: records lost and records
written twice. Both must be 0.

Kills land two ways, alternating: SIGKILL at a random moment (any await
between fetch, produce, checkpoint and lease release), and the
`crash-after-produce:N` failpoint (exactly between an acknowledged produce
and its checkpoint, the window a takeover must reconcile). Between kills the
dead worker's leases expire, so the next worker takes its partitions over.

Run: bench/crash [--crash-points N]   (default 200)
Writes bench/results/crash-<UTC date>.json. Not a test.
"""

import argparse
import json
import random
import signal
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from conftest import SOURCE, TARGET, Ferry, create_topic, producer, read_partition, write_config  # noqa: E402

PLAIN_PARTITIONS = 4
COMPACT_PARTITIONS = 2
# Small segments and an eager cleaner: compaction runs while Ferry copies.
COMPACT = {
    "cleanup.policy": "compact",
    "segment.bytes": "1048576",
    "segment.ms": "500",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "100",
}


def load(topic: str, partitions: int, records: int, key_of, rnd: random.Random) -> None:
    p = producer(SOURCE, **{"compression.type": rnd.choice(["lz4", "zstd", "none"]), "enable.idempotence": True})
    for i in range(records):
        p.produce(topic, partition=i % partitions, key=key_of(i).encode(), value=f"{i}-".encode() + b"v" * rnd.randint(10, 200))
        if i % 10_000 == 0:
            p.poll(0)
    assert p.flush(120) == 0


class ForeignTransactions(threading.Thread):
    """Another producer on the target: opens a transaction on every target
    partition, writes one record to each, holds it open for a while, commits,
    and again: a takeover meets a last stable offset below the crashed
    worker's records."""

    def __init__(self, topics: list[tuple[str, int]]):
        super().__init__(daemon=True)
        self.topics, self.stop, self.transactions = topics, threading.Event(), 0

    def run(self) -> None:
        tx = producer(TARGET, **{"transactional.id": f"crash-foreign-{uuid.uuid4().hex[:8]}", "transaction.timeout.ms": 120_000,
                                 "linger.ms": 0})
        tx.init_transactions(30)
        while not self.stop.is_set():
            tx.begin_transaction()
            for topic, parts in self.topics:
                for part in range(parts):
                    tx.produce(topic, partition=part, key=b"foreign", value=b"open")
            tx.flush(30)
            self.stop.wait(4.0)
            tx.commit_transaction(30)
            self.transactions += 1


class SteadyLoad(threading.Thread):
    """Records keep arriving on the source while Ferry is killed, so every
    kill lands in a copy under way (unique keys on the plain topic, the
    compacted topic's small key space again)."""

    def __init__(self, plain: str, compacted: str, keys: int, rnd: random.Random):
        super().__init__(daemon=True)
        self.plain, self.compacted, self.keys, self.rnd = plain, compacted, keys, rnd
        self.stop, self.sent = threading.Event(), 0

    def run(self) -> None:
        p = producer(SOURCE, **{"enable.idempotence": True, "linger.ms": 20})
        n = 0
        while not self.stop.is_set():
            for _ in range(100):
                p.produce(self.plain, partition=n % PLAIN_PARTITIONS, key=f"s{n:09d}".encode(),
                          value=f"{n}-".encode() + b"v" * self.rnd.randint(10, 200))
                p.produce(self.compacted, partition=n % COMPACT_PARTITIONS, key=f"c{n % self.keys:07d}".encode(),
                          value=f"{1_000_000_000 + n}-".encode() + b"w" * self.rnd.randint(10, 200))
                n += 1
            p.poll(0)
            self.stop.wait(0.5)
        assert p.flush(60) == 0
        self.sent = n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crash-points", type=int, default=200)
    ap.add_argument("--records", type=int, default=60_000)
    args = ap.parse_args()
    rnd = random.Random()
    run = uuid.uuid4().hex[:8]
    plain, compacted = f"crash-plain-{run}", f"crash-compact-{run}"
    create_topic(SOURCE, plain, PLAIN_PARTITIONS)
    create_topic(SOURCE, compacted, COMPACT_PARTITIONS, COMPACT)
    create_topic(TARGET, plain, PLAIN_PARTITIONS)
    create_topic(TARGET, compacted, COMPACT_PARTITIONS, COMPACT)
    load(plain, PLAIN_PARTITIONS, args.records, lambda i: f"p{i:08d}", rnd)
    # A key space a tenth of the records: the cleaner has plenty to remove.
    compact_records = args.records // 4
    load(compacted, COMPACT_PARTITIONS, compact_records, lambda i: f"c{i % (compact_records // 10):07d}", rnd)

    work = Path(ROOT / "bench" / "results" / f"crash-{run}.tmp")
    work.mkdir(parents=True, exist_ok=True)
    kc, ri = write_config(work, [plain, compacted], topic_replication={"CopyTopicConfigurations": True})
    ferry = Ferry(kc, ri)
    foreign = ForeignTransactions([(plain, PLAIN_PARTITIONS), (compacted, COMPACT_PARTITIONS)])
    foreign.start()
    steady = SteadyLoad(plain, compacted, compact_records // 10, rnd)
    steady.start()
    log = work / "ferry.log"
    copy = ("--once", "--lease-ms", "1000", "--produce-batch-max-bytes", "4000")
    base = (*copy, "--checkpoint-seconds", "0")
    kills = failpoints = 0
    started = time.time()
    while kills + failpoints < args.crash_points:
        if (kills + failpoints) % 2:
            proc = ferry.spawn(*base, log=log, env={"FERRY_FAILPOINT": f"crash-after-produce:{rnd.randint(1, 20)}"})
            if proc.wait(timeout=300) != 0:
                failpoints += 1
        else:
            proc = ferry.spawn(*base, log=log)
            time.sleep(rnd.uniform(0.2, 2.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
        time.sleep(1.1)  # the dead worker's leases expire
    steady.stop.set()
    steady.join(120)
    foreign.stop.set()
    foreign.join(60)
    final = ferry.run(*copy, timeout=1800)
    if final.returncode != 0:
        print(final.stdout + final.stderr, file=sys.stderr)
        return 1

    lost = duplicated = records = 0
    for part in range(PLAIN_PARTITIONS):
        src = [r["key"] for r in read_partition(SOURCE, plain, part)]
        dst = [r["key"] for r in read_partition(TARGET, plain, part) if r["key"] != b"foreign"]
        records += len(src)
        lost += len(set(src) - set(dst))
        duplicated += len(dst) - len(set(dst))
    # The compacted topic: both cleaners remove records, so compare what
    # compaction promises: the latest value of every key, and no value of a
    # key written after a later one (a duplicate of an old record would be).
    compact_lost = compact_duplicated = 0
    for part in range(COMPACT_PARTITIONS):
        src = [(r["key"], r["value"]) for r in read_partition(SOURCE, compacted, part)]
        dst = [(r["key"], r["value"]) for r in read_partition(TARGET, compacted, part) if r["key"] != b"foreign"]
        records += len(src)
        latest_src = dict(src)
        latest_dst = dict(dst)
        compact_lost += sum(1 for k, v in latest_src.items() if latest_dst.get(k) != v)
        seen: dict[bytes, int] = {}
        for k, v in dst:
            n = int(v.split(b"-")[0])
            if k in seen and seen[k] >= n:
                compact_duplicated += 1
            seen[k] = n
    text = log.read_text(errors="replace") + final.stdout + final.stderr
    result = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "crash_points": kills + failpoints,
        "sigkills": kills,
        "failpoint_crashes": failpoints,
        "records": records,
        "records_lost": lost + compact_lost,
        "records_duplicated": duplicated + compact_duplicated,
        "compacted_topic_keys_lost": compact_lost,
        "compacted_topic_stale_or_repeated": compact_duplicated,
        "foreign_transactions": foreign.transactions,
        "records_produced_during_crashes": steady.sent,
        "reconciles": text.count("reconciled records the previous holder wrote"),
        "fences": text.count("fenced the previous holder"),
        "seconds": round(time.time() - started),
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / f"crash-{result['date']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if result["records_lost"] == 0 and result["records_duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
