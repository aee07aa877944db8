"""Lambda's resources for a local function instance, enforced by the kernel:
the deployed MemorySize as a hard memory cap (the process is killed past it,
as Lambda kills an environment that runs out of memory) and the CPU share
Lambda gives that much memory (one vCPU per 1,769 MB) as a CPU quota. Each
instance gets cgroups of its own, as each Lambda execution environment is a
machine of its own.

Linux cgroups v1 (memory and cpu controllers) or v2 (memory.max, cpu.max),
writable as root, as on these machines. Without them the rehearsal cannot
enforce what it claims, so it refuses to start rather than run unlimited.
"""

import os
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
# Lambda allocates CPU in proportion to memory: 1,769 MB is one full vCPU.
MB_PER_VCPU = 1769
PERIOD_US = 100_000


def cpu_share(memory_mb: int) -> float:
    """The vCPUs Lambda gives a function of `memory_mb` (at most 6)."""
    return min(memory_mb / MB_PER_VCPU, 6.0)


def _v2() -> bool:
    return (ROOT / "cgroup.controllers").exists()


def available() -> str | None:
    """None when the kernel can enforce the limits here, else why not."""
    if os.geteuid() != 0:
        return "cgroups need root"
    if _v2():
        controllers = (ROOT / "cgroup.controllers").read_text().split()
        missing = {"memory", "cpu"} - set(controllers)
        return f"cgroup v2 lacks the {sorted(missing)} controller(s)" if missing else None
    for c in ("memory", "cpu", "cpuacct"):
        if not (ROOT / c / "cgroup.procs").exists():
            return f"no cgroup v1 {c} controller at {ROOT / c}"
    return None


class Sandbox:
    """The cgroups of one function instance: `join` is the child's
    preexec_fn (the process is inside before it runs a line of its own)."""

    def __init__(self, name: str, memory_mb: int):
        self.name, self.memory_mb = name, memory_mb
        self.limit = memory_mb * 1024 * 1024
        quota = max(1000, int(PERIOD_US * cpu_share(memory_mb)))  # the kernel's least
        if _v2():
            parent = ROOT / "ferry-rehearsal"
            if not parent.exists():
                parent.mkdir()
                (ROOT / "cgroup.subtree_control").write_text("+memory +cpu")
                (parent / "cgroup.subtree_control").write_text("+memory +cpu")
            self.dirs = [parent / name]
            self._fresh(self.dirs[0])
            (self.dirs[0] / "memory.max").write_text(str(self.limit))
            (self.dirs[0] / "memory.swap.max").write_text("0")
            (self.dirs[0] / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            self.dirs = [ROOT / c / "ferry-rehearsal" / name for c in ("memory", "cpu", "cpuacct")]
            for d in self.dirs:
                self._fresh(d)
            (self.dirs[0] / "memory.limit_in_bytes").write_text(str(self.limit))
            (self.dirs[1] / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.dirs[1] / "cpu.cfs_quota_us").write_text(str(quota))
        self.procs = [str(d / "cgroup.procs") for d in self.dirs]

    @staticmethod
    def _fresh(d: Path) -> None:
        """A cgroup of that name left by an earlier run is removed first
        (its counters would carry over)."""
        if d.exists():
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except OSError:  # a process of that run still in it
                    for pid in (d / "cgroup.procs").read_text().split():
                        try:
                            os.kill(int(pid), 9)
                        except ProcessLookupError:
                            pass
                    time.sleep(0.1)
        d.mkdir(parents=True)

    def join(self) -> None:
        pid = str(os.getpid())
        for p in self.procs:
            with open(p, "w") as f:
                f.write(pid)

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in Path(self.procs[0]).read_text().split()]
        except FileNotFoundError:
            return []

    def peak_bytes(self) -> int:
        """The most memory the instance held (cgroup v2 before 5.19 has no peak: 0)."""
        f = self.dirs[0] / ("memory.peak" if _v2() else "memory.max_usage_in_bytes")
        return int(f.read_text()) if f.exists() else 0

    def oom_kills(self) -> int:
        f = self.dirs[0] / ("memory.events" if _v2() else "memory.oom_control")
        for line in f.read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == "oom_kill":
                return int(v)
        return 0

    def cpu_seconds(self) -> float:
        if _v2():
            for line in (self.dirs[0] / "cpu.stat").read_text().splitlines():
                k, _, v = line.partition(" ")
                if k == "usage_usec":
                    return int(v) / 1e6
            return 0.0
        return int((self.dirs[2] / "cpuacct.usage").read_text()) / 1e9

    def throttled(self) -> int:
        """Periods in which the quota stopped the instance."""
        d = self.dirs[0] if _v2() else self.dirs[1]
        for line in (d / "cpu.stat").read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == "nr_throttled":
                return int(v)
        return 0

    def remove(self) -> None:
        """Removes the cgroups, ending whatever still runs in them (a
        function's children outlive it otherwise; Lambda ends them with
        the environment)."""
        for pid in self.pids():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        for d in self.dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)

