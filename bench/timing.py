"""Timestamps from inside ansible-playbook, written by bench/ansible_plugins/callback.

The callback appends JSON lines to ANSIBLE_BENCH_TIMING_FILE; `TimingFile.read_new()` returns the
records appended since the last call (runs are sequential, so those belong to the last run).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PLUGIN_DIR = Path(__file__).resolve().parent / "ansible_plugins" / "callback"

# Tasks that run inside the ansible-playbook process (no module process).
CONTROLLER_ACTIONS = frozenset(
    {
        "ansible.builtin.set_fact",
        "ansible.builtin.assert",
        "ansible.builtin.fail",
        "ansible.builtin.debug",
        "ansible.builtin.set_stats",
        "ansible.builtin.include_tasks",
        "ansible.builtin.meta",
        # The role's argument_specs check: an action plugin that starts no module.
        "ansible.builtin.validate_argument_spec",
        "validate_argument_spec",
        "set_fact",
        "assert",
        "fail",
        "debug",
        "set_stats",
        "include_tasks",
        "meta",
        # Other action plugins that run in ansible-playbook and start no module.
        "ansible.builtin.include_vars",
        "ansible.builtin.include_role",
        "ansible.builtin.add_host",
        "ansible.builtin.group_by",
        "include_vars",
        "include_role",
        "add_host",
        "group_by",
    }
)

# Tasks that do the update itself (what A's commands do); the other tasks that are not
# CONTROLLER_ACTIONS are bookkeeping (preflight, lock, snapshots). `docker_command` and
# `registry_login` were issue 6's action plugins (no module process); since issue 13 the
# role uses the community.docker modules again.
WORK_ACTIONS = frozenset(
    {
        "docker_command",
        "registry_login",
        "community.docker.docker_login",
        "community.docker.docker_compose_v2_pull",
        "community.docker.docker_compose_v2",
        "community.docker.docker_compose_v2_exec",
    }
)


def module_processes(task: dict[str, Any]) -> int:
    """Module processes one task record of the callback started: none for a controller-side
    action or a skipped task, else one per item and `until` attempt (records without
    `attempts` count as one). An action plugin that runs several modules (`template`, `copy`)
    counts as one."""
    if task.get("action") in CONTROLLER_ACTIONS or task.get("status") == "skipped":
        return 0
    attempts = task.get("attempts")
    if not isinstance(attempts, list):
        return 1
    return sum(int(n) for n in attempts)


def callback_env(path: Path) -> dict[str, str]:
    """Environment that enables the timing callback (ansible-runner keeps it: it appends its
    own callback directory to ANSIBLE_CALLBACK_PLUGINS). The file's variable has the ANSIBLE_
    prefix because the worker starts ansible-playbook with an allow-list environment
    (worker/host/ansible_exec.py) that keeps ANSIBLE_* names and drops the rest."""
    return {
        "ANSIBLE_BENCH_TIMING_FILE": str(path),
        "ANSIBLE_CALLBACK_PLUGINS": str(PLUGIN_DIR),
        "ANSIBLE_CALLBACKS_ENABLED": "bench_timing",
    }


@dataclass
class PlaybookTimes:
    """What one ansible-playbook run spent, from its own timestamps (time.time() seconds)."""

    process_start: float | None = None
    playbook_start: float | None = None
    first_task_start: float | None = None
    stats: float | None = None
    tasks: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_records(cls, records: list[dict[str, Any]]) -> PlaybookTimes:
        times = cls()
        for record in records:
            kind = record.get("kind")
            if kind == "process" and times.process_start is None:
                times.process_start = record.get("t")
            elif kind == "playbook_start" and times.playbook_start is None:
                times.playbook_start = record.get("t")
            elif kind == "task":
                times.tasks.append(record)
            elif kind == "stats":
                times.stats = record.get("t")
        starts = [t["start"] for t in times.tasks if t.get("start")]
        times.first_task_start = min(starts) if starts else None
        return times

    def task_summary(self) -> dict[str, float | int]:
        """Task counts and time: controller-side tasks vs tasks that start a module process."""
        controller = [t for t in self.tasks if t.get("action") in CONTROLLER_ACTIONS]
        modules = [t for t in self.tasks if t.get("action") not in CONTROLLER_ACTIONS]

        def total(items: list[dict[str, Any]]) -> float:
            return float(
                sum((t["end"] - t["start"]) for t in items if t.get("start") and t.get("end"))
            )

        executed = [t for t in modules if t.get("status") != "skipped"]
        work = [t for t in executed if t.get("action") in WORK_ACTIONS]
        return {
            "tasks": len(self.tasks),
            "module_processes": sum(module_processes(t) for t in self.tasks),
            "controller_tasks": len(controller),
            "controller_s": round(total(controller), 3),
            "module_tasks": len(executed),
            "module_s": round(total(executed), 3),
            "skipped_module_tasks": len(modules) - len(executed),
            "work_tasks": len(work),
            "work_s": round(total(work), 3),
        }

    def process_tasks(self) -> list[tuple[str, str, int]]:
        """(task name, action, module processes) of every task that started one, in order."""
        out = []
        for task in self.tasks:
            count = module_processes(task)
            if count:
                out.append((str(task.get("name")), str(task.get("action")), count))
        return out

    def task_durations(self) -> list[tuple[str, str, float]]:
        return [
            (str(t.get("name")), str(t.get("action")), float(t["end"] - t["start"]))
            for t in self.tasks
            if t.get("start") and t.get("end")
        ]


class TimingFile:
    """The callback's output file, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        path.write_text("")

    def read_new(self) -> PlaybookTimes:
        with self.path.open(encoding="utf-8") as handle:
            handle.seek(self._offset)
            text = handle.read()
            self._offset = handle.tell()
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        return PlaybookTimes.from_records(records)


def rel(value: float | None, origin: float) -> float | None:
    return None if value is None else round(value - origin, 4)
