"""Helpers for fault tests of the playbook: run `ansible-playbook` and read its report, and forge
update locks (held by a live process, or left by a dead one).

A manual run is configured as operators configure it: an inventory whose group_vars hold the
role's variables (`operator_inventory`), not settings in the shell's environment.

The lock file format is the one of `playbooks/roles/compose_update/library/update_lock.py`
(docs/internals.md):
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
import tempfile
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


# The worker's settings (its environment file) and the role variable each one becomes.
SETTING_VARIABLES = {
    "COMPOSE_FILE_PATH": "compose_update_compose_files",
    "COMPOSE_PROJECT_NAME": "compose_update_project_name",
    "UPDATE_SERVICES": "compose_update_services",
    "REGISTRY_URL": "compose_update_registry_url",
    "REGISTRY_USERNAME": "compose_update_registry_username",
    "GITHUB_TOKEN_FILE": "compose_update_registry_token_file",
    "GITHUB_TOKEN": "compose_update_registry_token",
    "MIGRATION_SERVICE": "compose_update_migration_service",
    "MIGRATION_COMMAND": "compose_update_migration_command",
    "MIGRATION_REVISION_COMMAND": "compose_update_migration_revision_command",
    "MIGRATION_DOWNGRADE_COMMAND": "compose_update_migration_downgrade_command",
    "DB_ROLLBACK": "compose_update_db_rollback",
    "RESTORE_COMMAND": "compose_update_restore_command",
    "HEALTH_TIMEOUT": "compose_update_health_timeout",
    "HOOK_TIMEOUT": "compose_update_hook_timeout",
    "JOB_TIMEOUT": "compose_update_lock_max_age",
    "UPDATE_LOCK_DIR": "compose_update_lock_dir",
    "BACKUP_COMMAND": "compose_update_backup_command",
    "BACKUP_SERVICE": "compose_update_backup_service",
    "BACKUP_DIR": "compose_update_backup_dir",
    "ROLLBACK_ON_MIGRATION_FAILURE": "compose_update_rollback_on_migration_failure",
}
# Settings of the worker's environment file that are no variable of the role.
WORKER_ONLY = (
    "REDIS_QUEUE_HOST", "REDIS_QUEUE_PORT", "REDIS_QUEUE_PASSWORD", "UPDATE_QUEUE_NAME",
    "UPDATE_JOB_SECRET", "UPDATE_JOB_SECRET_FILE", "LOG_FILE",
)  # fmt: skip
INTEGER_VARIABLES = (
    "compose_update_health_timeout",
    "compose_update_hook_timeout",
    "compose_update_lock_max_age",
)


def operator_inventory(settings: dict[str, str], directory: Path | None = None) -> Path:
    """An inventory as an operator writes it for the role: localhost, and group_vars/all.yml
    with the role's variables for the given worker settings (names of its environment file)."""
    base = Path(tempfile.mkdtemp(prefix="ue-inventory-", dir=directory))
    (base / "hosts").write_text(
        "[local]\nlocalhost ansible_connection=local "
        'ansible_python_interpreter="{{ ansible_playbook_python }}"\n'
    )
    variables: dict[str, Any] = {}
    for name, variable in SETTING_VARIABLES.items():
        value = settings.get(name)
        if value is None:
            continue
        if variable == "compose_update_compose_files":
            variables[variable] = [value]
        elif variable == "compose_update_services":
            variables[variable] = [part.strip() for part in value.split(",") if part.strip()]
        elif variable in INTEGER_VARIABLES:
            variables[variable] = int(value)
        elif variable == "compose_update_rollback_on_migration_failure":
            variables[variable] = value.strip().lower() in ("1", "true", "yes", "on")
        else:
            variables[variable] = value
    (base / "group_vars").mkdir()
    (base / "group_vars" / "all.yml").write_text("---\n" + json.dumps(variables, indent=1) + "\n")
    return base


def operator_run(env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """(inventory, environment) of a manual run for what used to be a sourced environment file:
    the settings go into the inventory's group_vars, the shell keeps none of them."""
    inventory = operator_inventory(env)
    shell = {k: v for k, v in env.items() if k not in SETTING_VARIABLES and k not in WORKER_ONLY}
    return inventory, shell


def run_playbook(
    env: dict[str, str],
    *args: str,
    timeout: float = 240,
    cwd: Path = REPO_ROOT,
    playbook: str = "playbooks/update.yml",
    report_key: str = "update_executor",
) -> PlaybookRun:
    """Run a playbook by hand (as an operator would) with the worker settings in `env` as the
    inventory's group_vars (operator_run); `report_key` is the set_stats key of its report
    (update_executor_rollback for rollback.yml)."""
    inventory, shell = operator_run(env)
    run_env = {
        **shell,
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_SHOW_CUSTOM_STATS": "true",
        "ANSIBLE_JSON_INDENT": "0",
    }
    started = time.monotonic()
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(inventory),
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
            # The JSON callback names a role's task "<role> : <name>"; the step is in <name>.
            name = str(task.get("task", {}).get("name", "")).split(" : ", 1)[-1]
            for host_result in task.get("hosts", {}).values():
                for result in _results(host_result):
                    warnings.extend(str(w) for w in result.get("warnings", []) or [])
                if host_result.get("failed"):
                    failures.append((name, str(host_result.get("msg", ""))))
    # Published per host (set_stats per_host: true): the one host's copy; global before issue 20.
    report: dict[str, Any] = output.get("global_custom_stats", {}).get(report_key) or next(
        (
            stats[report_key]
            for host, stats in (output.get("custom_stats") or {}).items()
            if host != "_run" and isinstance(stats, dict) and report_key in stats
        ),
        {},
    )
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
