"""A child process's own peak RSS, read from /proc while it runs.

`wait4`'s `ru_maxrss` cannot be used for this: Linux starts a child's
maximum at the RSS of the process that forked it (the high-water mark of the
parent's memory, copied at fork, survives exec). A benchmark that loaded
gigabytes through librdkafka would report its own size as the replicator's.
`VmHWM` in /proc/<pid>/status belongs to the process's current memory map
only, and never goes down, so the last value read before the process exits
is its peak (to within one sampling interval at the very end).
"""

import re
import threading
from pathlib import Path

HWM = re.compile(r"VmHWM:\s+(\d+) kB")


def hwm_mb(pid: int) -> float | None:
    """The process's peak RSS so far, in MB (None once it has exited)."""
    try:
        m = HWM.search(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None
    return int(m.group(1)) / 1024 if m else None


class PeakRss:
    """Samples a child's VmHWM every `every` seconds until it exits."""

    def __init__(self, pid: int, every: float = 0.05):
        self.pid, self.every, self.mb = pid, every, 0.0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            mb = hwm_mb(self.pid)
            if mb is None:  # exited (a zombie has no memory map)
                return
            self.mb = max(self.mb, mb)
            self.stopped.wait(self.every)

    def result(self) -> float:
        """The peak, once the process has exited (call before reaping it
        with wait4 only if it has already exited)."""
        self.stopped.set()
        self.thread.join()
        return round(self.mb, 1)
