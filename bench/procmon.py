"""Memory of process trees, read from /proc: RSS (and PSS) summed over a root and its
descendants, sampled by a background thread every 50 ms while a way runs."""

from __future__ import annotations

import contextlib
import os
import resource
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_INTERVAL_S = 0.05
MB = 1024 * 1024


def children(pid: int) -> list[int]:
    """Direct children of `pid`, over all its threads (ansible-runner spawns from a thread)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        with contextlib.suppress(OSError, ValueError):
            found.extend(int(p) for p in (task / "children").read_text().split())
    return found


def tree(root: int) -> Iterator[int]:
    """`root` and all its descendants that exist right now."""
    stack = [root]
    seen: set[int] = set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        yield pid
        stack.extend(children(pid))


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * PAGE_SIZE


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages divided among the processes sharing them."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """CPU seconds of a process and of its children it has waited for (utime+stime+cutime+
    cstime); 0.0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / CLOCK_TICKS


def children_cpu_s() -> float:
    """CPU seconds of this process's children that have been waited for (A, B, C's commands
    and everything they waited for: the compose plugin, ansible's forks and modules)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load1() -> float:
    return os.getloadavg()[0]


@dataclass(frozen=True)
class TreeMemory:
    processes: int
    rss: int
    pss: int


def tree_memory(root: int, *, include_root: bool = True) -> TreeMemory:
    pids = [p for p in tree(root) if include_root or p != root]
    return TreeMemory(
        processes=len(pids),
        rss=sum(rss_bytes(p) for p in pids),
        pss=sum(pss_bytes(p) for p in pids),
    )


class PeakSampler:
    """Sample the summed RSS/PSS of the tracked process trees every 50 ms; keep the peak.

    `track(pid)` adds a root (a command a way started, or the worker); a root is counted with
    its descendants while it exists. Use as a context manager around one measured run.
    """

    def __init__(self, interval: float = SAMPLE_INTERVAL_S) -> None:
        self.interval = interval
        self._roots: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_processes = 0
        self.samples = 0

    def track(self, pid: int) -> None:
        with self._lock:
            self._roots.add(pid)

    def _sample(self) -> None:
        with self._lock:
            roots = list(self._roots)
        pids = {pid for root in roots for pid in tree(root)}
        rss = sum(rss_bytes(p) for p in pids)
        if rss > self.peak_rss:
            # PSS costs a page-table walk per process: only read it for a new RSS peak.
            self.peak_rss = rss
            self.peak_pss = max(self.peak_pss, sum(pss_bytes(p) for p in pids))
        self.peak_processes = max(self.peak_processes, len(pids))
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def as_dict(self) -> dict[str, float | int]:
        return {
            "peak_rss_mb": round(self.peak_rss / MB, 1),
            "peak_pss_mb": round(self.peak_pss / MB, 1),
            "peak_processes": self.peak_processes,
            "samples": self.samples,
        }
