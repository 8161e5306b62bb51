"""Helpers for fault tests of the playbook: run `ansible-playbook` and read its report, and forge
update locks (held by a live process, or left by a dead one).

The lock file format is the one of `playbooks/library/update_lock.py` (docs/internals.md):
`<lock_dir>/<project>.<daemon key>.lock`, a JSON holder with `pid`, `pid_start`, `host`,
`started_epoch` and a `token`.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.procs import process_start_time
from testbed.stack import Stack

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class PlaybookRun:
    """One `ansible-playbook playbooks/update.yml` run, read through the JSON stdout callback."""

    returncode: int
    report: dict[str, Any]  # the set_stats key `update_executor`
    failures: list[tuple[str, str]]  # (task name, message) of every failed task, in order
    warnings: list[str] = field(default_factory=list)
    stderr: str = ""
    duration_s: float = 0.0

    @property
    def failure_text(self) -> str:
        return "\n".join(f"{task}: {message}" for task, message in self.failures)

    def explain(self) -> str:
        """What to show when an assertion about this run fails."""
        return (
            f"rc={self.returncode}\nfailures:\n{self.failure_text}\nwarnings: {self.warnings}\n"
            f"report: {json.dumps(self.report, indent=1)[:6000]}\nstderr: {self.stderr[-2000:]}"
        )


def _results(host_result: dict[str, Any]) -> list[dict[str, Any]]:
    items = host_result.get("results")
    if isinstance(items, list):
        return [host_result, *[item for item in items if isinstance(item, dict)]]
    return [host_result]


def run_playbook(
    env: dict[str, str],
    *args: str,
    timeout: float = 240,
    cwd: Path = REPO_ROOT,
    playbook: str = "playbooks/update.yml",
    report_key: str = "update_executor",
) -> PlaybookRun:
    """Run a playbook by hand (as an operator would) with `env` as its environment; `report_key`
    is the set_stats key of its report (update_executor_rollback for rollback.yml)."""
    run_env = {
        **env,
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_SHOW_CUSTOM_STATS": "true",
        "ANSIBLE_JSON_INDENT": "0",
    }
    started = time.monotonic()
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            "inventory/localhost",
            playbook,
            *args,
        ],
        cwd=cwd,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    duration = time.monotonic() - started
    try:
        output = json.loads(done.stdout)
    except ValueError as err:
        raise AssertionError(
            f"ansible-playbook printed no JSON (rc {done.returncode}): {done.stdout[-3000:]}"
            f"\n{done.stderr[-3000:]}"
        ) from err
    failures: list[tuple[str, str]] = []
    warnings: list[str] = []
    for play in output.get("plays", []):
        for task in play.get("tasks", []):
            name = str(task.get("task", {}).get("name", ""))
            for host_result in task.get("hosts", {}).values():
                for result in _results(host_result):
                    warnings.extend(str(w) for w in result.get("warnings", []) or [])
                if host_result.get("failed"):
                    failures.append((name, str(host_result.get("msg", ""))))
    report = output.get("global_custom_stats", {}).get(report_key, {})
    return PlaybookRun(done.returncode, report, failures, warnings, done.stderr, duration)


def lock_path(stack: Stack, lock_dir: Path, project: str) -> Path:
    """Where the playbook keeps the lock of `project` on the bed's daemon."""
    info = stack.docker("info", "--format", "{{.ID}} {{.DockerRootDir}}").stdout.strip()
    key = hashlib.sha1(info.encode()).hexdigest()[:12]  # noqa: S324 - a name, not security
    return lock_dir / f"{project}.{key}.lock"


def rollback_point_path(stack: Stack, lock_dir: Path, project: str) -> Path:
    """Where an update of `project` keeps its rollback point while it runs."""
    lock = lock_path(stack, lock_dir, project)
    return lock.with_name(lock.name.removesuffix(".lock") + ".rollback.json")


def write_lock(
    path: Path,
    *,
    project: str,
    pid: int,
    holder_id: str,
    job_id: str | None = None,
    started_epoch: float | None = None,
) -> dict[str, Any]:
    """Forge the lock a run holding `pid` on this host would have written; return the holder."""
    started = time.time() if started_epoch is None else started_epoch
    holder = {
        "version": 1,
        "project": project,
        "id": holder_id,
        "job_id": job_id,
        "user": "root",
        "host": socket.gethostname(),
        "pid": pid,
        "pid_start": process_start_time(pid),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "started_epoch": started,
        "token": os.urandom(16).hex(),
    }
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(json.dumps(holder))
    return holder


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped) on this host."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
