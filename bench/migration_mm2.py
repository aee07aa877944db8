"""Comparison (not a test): the migration story of tests/e2e/support/story.py run with
Ferry and with MirrorMaker 2, duplicates and missing records side by side.

For each order in which the three apps move (all six by default):
  * Ferry replicates both ways with consumer-group sync (FerryBothWays of
    tests/e2e/support/moves.py), and the story includes the rollback of the
    first app to move;
  * MirrorMaker 2 (a dedicated `MirrorMaker` process, Kafka's own jars)
    replicates source->target only, with IdentityReplicationPolicy so topic
    names are identical as in Ferry's story, and the story runs WITHOUT the
    rollback: MM2 cannot replicate both ways under identical names without
    sending every record back (loops), so a move back is impossible for it.

The story's waits are supplied by each replicator: Ferry's come from
`ferry status` (lag 0; group synced exactly). MirrorMaker 2 has no signal of
completion, so its waits are observations: a topic is caught up when every
partition's end offset on the target equals the source's; a group is synced
when the target has committed offsets for every partition the group committed
on the source and they have not changed for GROUP_STABLE_S seconds, giving up
after GROUP_SETTLE_CAP_S (the story then goes on; the row says so).

Run: bench/migration-mm2 [--orders N] [--replicators ferry,mm2]
Writes bench/results/migration-<UTC timestamp>.json.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import pytest  # noqa: E402
from confluent_kafka import Consumer, KafkaException, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402

from conftest import FERRY, SOURCE, TARGET, committed  # noqa: E402
from support.moves import FerryBothWays  # noqa: E402
from support.story import CLUSTERS, PARTS, run_story  # noqa: E402
from test_migration import PERMUTATIONS  # noqa: E402
from mm2_local import SINGLE_BROKER  # noqa: E402

KAFKA_VERSION = os.environ.get("KAFKA_VERSION", "")
MM2_LIBS = Path(os.environ.get("MM2_LIBS") or ROOT / ".cache" / f"mm2-{KAFKA_VERSION}" / "libs")
MM2_LOG4J = ROOT / "infra" / "local" / "mm2" / "log4j2.xml"
RUN_DIR = Path(os.environ.get("FERRY_RUN_DIR") or ROOT / ".run")
MM2_MAIN = "org.apache.kafka.connect.mirror.MirrorMaker"
MM2_HEAP = "-Xmx512m"
MM2_READY_TIMEOUT_S = 180.0
GROUP_STABLE_S = 3.0
GROUP_SETTLE_CAP_S = 60.0

# The MirrorMaker 2 configuration, apart from addresses, topics, groups and
# the per-run names below. Everything not listed is MirrorMaker's default;
# offset.lag.max is listed at its default because it bounds how exact MM2's
# offset translation can be.
MM2_SETTINGS = {
    "clusters": "source, target",
    "source->target.enabled": "true",
    # One way only: identical names both ways would loop.
    "target->source.enabled": "false",
    # Otherwise MM2 runs a second herder just to write heartbeats into the
    # source; with the flow off nothing of MM2's own lands on the source
    # except its offset-syncs topic.
    "target->source.emit.heartbeats.enabled": "false",
    "replication.policy.class": "org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
    "tasks.max": "3",
    "sync.group.offsets.enabled": "true",
    "emit.checkpoints.enabled": "true",
    "offset.lag.max": "100",
    # Short intervals so MM2 gets a fair chance against the story's pace.
    "emit.checkpoints.interval.seconds": "1",
    "sync.group.offsets.interval.seconds": "1",
    "refresh.groups.interval.seconds": "2",
    "refresh.topics.interval.seconds": "5",
    # The Connect worker's offset flush also publishes the offset syncs that
    # offset.lag.max held back (the last records of a partition); its default
    # is 60 s. A worker setting, so it is given for the target cluster.
    "target.offset.flush.interval.ms": "2000",
    **SINGLE_BROKER,
}
# Names MM2 picks per run so that runs never see each other's state; the
# placeholder <run> is the run's id. (Offset syncs and checkpoints go to MM2's
# fixed topics mm2-offset-syncs.target.internal on the source and
# source.checkpoints.internal on the target, keyed by topic and group, which
# are new in every run.)
MM2_PER_RUN = {
    "target.group.id": "mm2-<run>",
    "config.storage.topic": "mm2-<run>-configs",
    "offset.storage.topic": "mm2-<run>-offsets",
    "status.storage.topic": "mm2-<run>-status",
}

NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def say(msg: str) -> None:
    print(f"[migration-mm2] {msg}", flush=True)


def end_offsets(consumer: Consumer, topic: str) -> list[int]:
    return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTS)]


class MM2OneWay:
    """A dedicated MirrorMaker 2 process replicating source->target only."""

    def __init__(self, work: Path, log=say):
        self.work = work
        self.log = log
        self.run_id = uuid.uuid4().hex[:10]
        self.proc: subprocess.Popen | None = None
        self.probes: dict[str, Consumer] = {}
        self.waits: dict[str, dict] = {}
        self.settled: dict[str, dict] = {}
        self.storage_topics: list[str] = []
        self.started_in_s: float | None = None

    def settings(self, topics: list[str], groups: list[str]) -> dict[str, str]:
        for name in topics + groups:
            # Written as regex lists into a properties file: keep them literal.
            assert NAME.match(name), name
        props = {
            "source.bootstrap.servers": SOURCE,
            "target.bootstrap.servers": TARGET,
            "source->target.topics": ", ".join(topics),
            "source->target.groups": ", ".join(groups),
        }
        props.update(MM2_SETTINGS)
        props.update({k: v.replace("<run>", self.run_id) for k, v in MM2_PER_RUN.items()})
        return props

    def start(self, topics: list[str], groups: list[str]) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        props = self.settings(topics, groups)
        self.storage_topics = [props[k] for k in ("config.storage.topic", "offset.storage.topic", "status.storage.topic")]
        conf = self.work / "mm2.properties"
        conf.write_text("# Written by bench/migration_mm2.py for one run of the migration story.\n"
                        + "".join(f"{k} = {v}\n" for k, v in props.items()))
        self.mm2_log = self.work / "mm2.log"
        out = open(self.work / "mm2.stdout.log", "ab")
        cmd = ["java", MM2_HEAP, "-XX:+UseG1GC", "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={MM2_LOG4J}", f"-Dferry.mm2.log={self.mm2_log}",
               "-cp", f"{MM2_LIBS}/*", MM2_MAIN, str(conf), "--clusters", "target"]
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        for name, bootstrap in CLUSTERS.items():
            self.probes[name] = Consumer({"bootstrap.servers": bootstrap, "group.id": f"mm2-probe-{self.run_id}",
                                          "enable.auto.commit": False})
        try:
            self.wait_ready(len(topics) * PARTS)
        except BaseException:
            # run_story only stops the replicator once start() has returned.
            self.stop()
            raise
        self.started_in_s = round(time.monotonic() - t0, 1)
        self.log(f"MirrorMaker 2 replicating after {self.started_in_s}s (pid {self.proc.pid}, log {self.mm2_log})")

    def wait_ready(self, partitions: int) -> None:
        """Until the source tasks have logged that they replicate every
        partition of the story's topics (MirrorSourceTask's start-up line)."""
        line = re.compile(r"replicating (\d+) topic-partitions source->target")
        deadline = time.monotonic() + MM2_READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"MirrorMaker 2 exited with {self.proc.returncode}; see {self.work}\n{self.tail()}")
            text = self.mm2_log.read_text(errors="replace") if self.mm2_log.exists() else ""
            if sum(int(n) for n in line.findall(text)) >= partitions:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"MirrorMaker 2 not replicating after {MM2_READY_TIMEOUT_S:.0f}s; see {self.work}\n{self.tail()}")
            time.sleep(0.5)

    def tail(self, n: int = 30) -> str:
        if not self.mm2_log.exists():
            return ""
        return "\n".join(self.mm2_log.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.log("MirrorMaker 2 still running 30s after SIGTERM; killing it")
                self.proc.kill()
                self.proc.wait(30)
        for c in self.probes.values():
            c.close()
        self.probes.clear()
        # The per-run bookkeeping topics are of no use once the run is over.
        if self.storage_topics:
            admin = AdminClient({"bootstrap.servers": TARGET})  # kept alive until every future is done
            for f in admin.delete_topics(self.storage_topics).values():
                try:
                    f.result(timeout=30)
                except Exception as e:  # noqa: BLE001 - clean-up only
                    self.log(f"could not delete an MM2 storage topic: {e}")
            self.storage_topics = []

    def caught_up(self, frm: str, topic: str) -> bool:
        assert frm == "source", "MirrorMaker 2 replicates source->target only"
        return end_offsets(self.probes["target"], topic) == end_offsets(self.probes["source"], topic)

    def group_synced(self, frm: str, group: str) -> bool:
        assert frm == "source", "MirrorMaker 2 replicates source->target only"
        now = time.monotonic()
        w = self.waits.setdefault(group, {"since": now, "snapshot": None, "stable_since": now})
        mine = committed(CLUSTERS["source"], group)
        try:
            theirs = committed(CLUSTERS["target"], group)
        except KafkaException:  # no such group on the target yet
            theirs = {}
        snapshot = {tp: theirs[tp][0] for tp in mine if tp in theirs}
        complete = bool(mine) and len(snapshot) == len(mine)
        if snapshot != w["snapshot"]:
            w["snapshot"], w["stable_since"] = snapshot, now
        settled = complete and now - w["stable_since"] >= GROUP_STABLE_S
        capped = now - w["since"] >= GROUP_SETTLE_CAP_S
        if not settled and not capped:
            return False
        # Offsets are the same on both clusters up to the move (MM2 copied
        # every partition from offset 0), so the gap is records to redo.
        behind = sum(off - snapshot[tp] for tp, (off, _) in mine.items() if tp in snapshot)
        self.settled[group] = {"settled": settled, "seconds": round(now - w["since"], 1),
                               "partitions_synced": len(snapshot), "partitions_committed": len(mine),
                               "records_behind_source_commit": behind}
        del self.waits[group]
        if settled:
            self.log(f"group {group}: target offsets stable for {GROUP_STABLE_S:.0f}s after {now - w['since']:.1f}s, "
                     f"{behind} records behind its last source commit")
        else:
            self.log(f"group {group}: MirrorMaker 2 never settled within {GROUP_SETTLE_CAP_S:.0f}s "
                     f"({len(snapshot)}/{len(mine)} partitions synced); going on")
        return True


def run_one(replicator: str, order: tuple[str, str, str], base: Path) -> dict:
    label = f"{replicator}-{'-'.join(order)}"
    work = base / label
    work.mkdir(parents=True)
    rollback = replicator == "ferry"
    rep = FerryBothWays(work) if replicator == "ferry" else MM2OneWay(work)
    say(f"{label}: story {'with' if rollback else 'without'} rollback ({work})")
    t0 = time.monotonic()
    row: dict = {"replicator": replicator, "direction": "both ways" if rollback else "one way", "rollback": rollback}
    try:
        row.update(run_story(rep, order, rollback=rollback, log=lambda m: say(f"{label}: {m}")))
    except (Exception, pytest.fail.Exception) as e:  # noqa: BLE001 - a failed run is a row, not the end
        say(f"{label}: FAILED: {e}")
        row.update({"run": "-".join(order), "error": str(e)})
    row["seconds"] = round(time.monotonic() - t0, 1)
    if isinstance(rep, MM2OneWay):
        row["mm2_start_seconds"] = rep.started_in_s
        row["mm2_groups"] = rep.settled
        row["mm2_never_settled"] = sorted(g for g, s in rep.settled.items() if not s["settled"])
    row["work_dir"] = str(work)
    return row


COLS = ("status_duplicates", "status_missing", "notify_duplicates", "notify_missing")


def table(rows: list[dict]) -> str:
    head = (f"{'replicator':<10} {'rollback':<8} {'run':<22} {'moves':<50} {'orders':>7} "
            f"{'dup(status)':>11} {'miss(status)':>12} {'dup(notify)':>11} {'miss(notify)':>12}")
    out = [head, "-" * len(head)]
    for r in rows:
        name = "Ferry" if r["replicator"] == "ferry" else "MM2"
        rb = "yes" if r["rollback"] else "no"
        if "error" in r:
            out.append(f"{name:<10} {rb:<8} {r['run']:<22} FAILED: {r['error'].splitlines()[0][:100]}")
            continue
        out.append(f"{name:<10} {rb:<8} {r['run']:<22} {r['moves']:<50} {r['orders']:>7} "
                   + " ".join(f"{r[c]:>{w}}" for c, w in zip(COLS, (11, 12, 11, 12))))
    return "\n".join(out)


def totals(rows: list[dict]) -> dict:
    out = {}
    for name in dict.fromkeys(r["replicator"] for r in rows):
        mine = [r for r in rows if r["replicator"] == name and "error" not in r]
        out[name] = {
            "runs": len(mine),
            "failed_runs": sum(1 for r in rows if r["replicator"] == name and "error" in r),
            "orders": sum(r["orders"] for r in mine),
            "duplicates": sum(r["status_duplicates"] + r["notify_duplicates"] for r in mine),
            "missing": sum(r["status_missing"] + r["notify_missing"] for r in mine),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=len(PERMUTATIONS), metavar="N",
                    help=f"run only the first N of the {len(PERMUTATIONS)} orders (default: all)")
    ap.add_argument("--replicators", default="ferry,mm2", help="comma-separated subset of ferry,mm2 (default: both)")
    args = ap.parse_args()
    replicators = [r.strip() for r in args.replicators.split(",") if r.strip()]
    if not replicators or set(replicators) - {"ferry", "mm2"}:
        ap.error("--replicators takes ferry, mm2 or both")
    if not 1 <= args.orders <= len(PERMUTATIONS):
        ap.error(f"--orders takes 1 to {len(PERMUTATIONS)}")
    if "ferry" in replicators and not FERRY.exists():
        say(f"{FERRY} is missing: run `cargo build -p ferry-cli` (bench/migration-mm2 does)")
        return 2
    mm2_jar = MM2_LIBS / f"connect-mirror-{KAFKA_VERSION}.jar"
    if "mm2" in replicators and not mm2_jar.exists():
        say(f"{mm2_jar} is missing: run infra/local/mm2/fetch (bench/migration-mm2 does)")
        return 2
    if "mm2" in replicators and shutil.which("java") is None:
        say("no java on PATH")
        return 2

    started = datetime.now(timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    base = RUN_DIR / "migration-mm2" / stamp
    base.mkdir(parents=True)
    say(f"Kafka {KAFKA_VERSION}; work files under {base}")
    if "mm2" in replicators:
        say("MirrorMaker 2 runs one way (source->target) and its story has no rollback: with identical topic "
            "names it cannot replicate both ways without loops, so an app cannot move back.")

    rows: list[dict] = []
    for order in PERMUTATIONS[: args.orders]:
        for replicator in replicators:
            rows.append(run_one(replicator, order, base))

    tot = totals(rows)
    print()
    print(table(rows))
    print()
    for name, t in tot.items():
        label = "Ferry (both ways, with rollback)" if name == "ferry" else "MirrorMaker 2 (one way, no rollback)"
        print(f"{label:<38} runs {t['runs']}  orders {t['orders']:>6}  duplicates {t['duplicates']:>5}  "
              f"missing {t['missing']:>5}" + (f"  FAILED runs {t['failed_runs']}" if t["failed_runs"] else ""))
    never = [(r["run"], g) for r in rows for g in r.get("mm2_never_settled", [])]
    if never:
        print(f"MirrorMaker 2 never settled (story went on after {GROUP_SETTLE_CAP_S:.0f}s): "
              + ", ".join(f"{g} in {run}" for run, g in never))
    print()

    result = {
        "benchmark": "migration-mm2",
        "utc": started.isoformat(timespec="seconds"),
        "date": started.date().isoformat(),
        "kafka_version": KAFKA_VERSION,
        "orders_run": ["-".join(o) for o in PERMUTATIONS[: args.orders]],
        "ferry": {"binary": str(FERRY.relative_to(ROOT)) if FERRY.is_relative_to(ROOT) else str(FERRY),
                  "replicates": "both ways, consumer-group sync, IDENTICAL names",
                  "flags": "--round-seconds 10 --group-sync-seconds 1", "rollback": True,
                  "waits": "ferry status: lag 0 on the flow away; group synced exactly to its last commit"},
        "mm2": {
            "main_class": MM2_MAIN,
            "artifact": f"org.apache.kafka:connect-mirror:{KAFKA_VERSION}",
            "heap": MM2_HEAP,
            "replicates": "source->target only, IdentityReplicationPolicy",
            "rollback": False,
            "why_no_rollback": "with identical topic names MirrorMaker 2 cannot replicate both ways without loops",
            "settings": MM2_SETTINGS,
            "per_run_settings": MM2_PER_RUN,
            "per_run_from_story": ["source.bootstrap.servers", "target.bootstrap.servers",
                                   "source->target.topics", "source->target.groups"],
            "everything_else": "MirrorMaker 2 defaults",
            "waits": {"topic": "every partition's end offset on the target equals the source's",
                      "group": f"target has committed offsets for every partition the group committed on the source, "
                               f"unchanged for {GROUP_STABLE_S:.0f}s; after {GROUP_SETTLE_CAP_S:.0f}s the story goes on"},
        },
        "rows": rows,
        "totals": tot,
    }
    out = ROOT / "bench" / "results" / f"migration-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    tmp.rename(out)
    say(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
