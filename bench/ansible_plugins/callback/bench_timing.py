"""Ansible callback for the benchmark: when the playbook and each task started and ended.

Enabled only by the benchmark (ANSIBLE_CALLBACK_PLUGINS + ANSIBLE_CALLBACKS_ENABLED), for
`ansible-playbook` run directly and under ansible-runner alike. It appends one JSON object per
line to the file named by ANSIBLE_BENCH_TIMING_FILE: `process` (this interpreter's start time, read
from /proc), `playbook_start`, one `task` per finished task (name, action, start, end, status)
and `stats` at the end. Times are `time.time()` seconds. It does nothing without the variable.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase  # type: ignore[import-untyped]

DOCUMENTATION = """
    name: bench_timing
    type: aggregate
    short_description: record playbook and task timestamps for the benchmark
    description: Appends JSON lines to the file named by ANSIBLE_BENCH_TIMING_FILE.
    requirements: [ANSIBLE_BENCH_TIMING_FILE in the environment]
"""


def _process_start() -> float | None:
    """Wall-clock time this process was started (kernel start time, 10 ms resolution).

    /proc/self/stat gives it in clock ticks since boot (CLOCK_BOOTTIME); /proc/stat's btime is
    rounded to the second, so the offset is taken from the clocks instead.
    """
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            fields = handle.read().rpartition(")")[2].split()
        started_since_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - started_since_boot)


def _attempts(result: dict[str, Any]) -> list[int]:
    """How often the task ran per item: a loop's `results` (skipped items left out), or the task
    itself; `until` retries show as `attempts`."""
    items = result.get("results")
    if isinstance(items, list):
        return [
            int(item.get("attempts", 1))
            for item in items
            if isinstance(item, dict) and not item.get("skipped")
        ]
    return [int(result.get("attempts", 1))]


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._path = os.environ.get("ANSIBLE_BENCH_TIMING_FILE", "")
        self._task_start: dict[str, float] = {}
        self._write({"kind": "process", "pid": os.getpid(), "t": _process_start()})

    def _write(self, record: dict[str, Any]) -> None:
        if not self._path:
            return
        with open(self._path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def v2_playbook_on_start(self, playbook: Any) -> None:
        self._write({"kind": "playbook_start", "t": time.time()})

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._task_start[task._uuid] = time.time()

    def _done(self, result: Any, status: str) -> None:
        task = result._task
        attempts = _attempts(result._result) if status != "skipped" else []
        self._write(
            {
                "kind": "task",
                "name": task.get_name(),
                "action": task.action,
                "start": self._task_start.get(task._uuid),
                "end": time.time(),
                "status": status,
                "attempts": attempts,
            }
        )

    def v2_runner_on_ok(self, result: Any) -> None:
        self._done(result, "ok")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._done(result, "failed")

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._done(result, "skipped")

    def v2_playbook_on_include(self, included_file: Any) -> None:
        self._write({"kind": "include", "t": time.time()})

    def v2_playbook_on_stats(self, stats: Any) -> None:
        self._write({"kind": "stats", "t": time.time()})
