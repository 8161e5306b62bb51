"""`update-executor unlock`: remove an update lock whose holder is gone, and only such a one.

An update holds `<UPDATE_LOCK_DIR>/<project>.<daemon>.lock` while it runs. The next update
breaks a stale lock by itself; this command shows who holds a lock (job id, requested_by,
host, pid, since) and removes it when it is stale by the rule of the role's lock module
(playbooks/roles/compose_update/library/update_lock.py, loaded from the installed role: one
rule, not a copy): its holder's process is gone (or it was taken before a reboot), or, for a
holder that cannot be checked, it is older than its max age (JOB_TIMEOUT, as the worker passes
it). A live lock is refused. A rollback point is never touched: a cut-off update is rolled
back (`update-executor rollback`), not unlocked.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache, partial
from pathlib import Path
from types import ModuleType
from typing import Any

from ..shared.untrusted import escaped
from .settings import ANSIBLE_CONTENT, Settings

logger = logging.getLogger("update_executor.unlock")

ROLE = ANSIBLE_CONTENT / "playbooks" / "roles" / "compose_update"
LOCK_SUFFIX = ".lock"
POINT_SUFFIX = ".rollback.json"
# The holder fields shown (the token never is).
SHOWN = ("id", "job_id", "requested_by", "user", "host", "pid", "started_at", "project")


class Verdict(StrEnum):
    removed = "removed"  # stale, and removed now
    live = "live"  # its holder may still run: refused
    cut_off = "cut_off"  # a rollback point is next to it: roll back, do not unlock
    gone = "gone"  # it went away meanwhile (its run ended)


@dataclass
class LockState:
    """One lock file and what unlock decided about it."""

    path: Path
    verdict: Verdict
    holder: dict[str, Any] = field(default_factory=dict)  # SHOWN keys
    age_s: float | None = None
    reason: str | None = None  # why it is stale
    rollback_point: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "verdict": self.verdict.value,
            "removed": self.verdict is Verdict.removed,
            "holder": self.holder,
            "age_s": None if self.age_s is None else round(self.age_s),
            "stale_reason": self.reason,
            "rollback_point": None if self.rollback_point is None else str(self.rollback_point),
        }

    def text(self) -> str:
        """What an operator reads: the holder, then what was done and why."""
        if self.verdict is Verdict.gone:
            return f"lock {self.path}: it went away meanwhile (its run ended), nothing to remove"
        h = {
            key: escaped(value) if isinstance(value, str) else value
            for key, value in self.holder.items()
        }
        age = "" if self.age_s is None else f" ({self.age_s:.0f} s ago)"
        lines = [
            f"lock {self.path}",
            f"  held by:      {h.get('id') or 'an unknown holder'}",
            f"  job id:       {h.get('job_id') or '- (a manual ansible-playbook run)'}",
            f"  requested by: {h.get('requested_by') or '-'}",
            f"  host, pid:    {h.get('host') or '?'}, {h.get('pid') if h.get('pid') else '?'}",
            f"  since:        {h.get('started_at') or '?'}{age}",
        ]
        if self.verdict is Verdict.removed:
            lines.append(f"removed: it was stale ({self.reason})")
        elif self.verdict is Verdict.cut_off:
            lines.append(
                f"NOT removed: it is stale ({self.reason}), but the update that held it was cut "
                f"off and left its rollback point "
                f"{self.rollback_point}. Roll it back with `update-executor rollback` (which also "
                "breaks this stale lock); unlock never removes a rollback point."
            )
        else:
            lines.append(
                "NOT removed: its holder may still be running (its process is alive on this "
                "host, or it cannot be checked and is younger than JOB_TIMEOUT). Wait for it to "
                "end, or stop it (`update-executor cancel` for a worker job); once its holder is "
                "gone, `update-executor unlock` removes it (the next update breaks it too)."
            )
        return "\n".join(lines)


@cache
def lock_module(role: Path = ROLE) -> ModuleType:
    """The role's update_lock module, with the role's module_utils registered as ansible
    ships them to a module (ansible.module_utils.<name>)."""
    for util in sorted((role / "module_utils").glob("*.py")):
        name = f"ansible.module_utils.{util.stem}"
        if name not in sys.modules:
            sys.modules[name] = _load(name, util)
    return _load("update_executor_update_lock", role / "library" / "update_lock.py")


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lock_files(lock_dir: Path, project: str) -> list[Path]:
    """The update locks in `lock_dir` that may be this deployment's: of `project` when set
    (one per Docker daemon), else any."""
    prefix = f"{project}." if project else ""
    try:
        return sorted(lock_dir.glob(f"{prefix}*{LOCK_SUFFIX}"))
    except OSError:
        return []


def point_of(lock: Path) -> Path:
    """The rollback point next to a lock (`<project>.<daemon>.rollback.json`)."""
    return lock.with_name(lock.name.removesuffix(LOCK_SUFFIX) + POINT_SUFFIX)


def shown(holder: dict[str, Any]) -> dict[str, Any]:
    """The holder's public fields; requested_by from its id for a lock written before the
    record had it (`update-executor job <id> for <who>`)."""
    fields = {key: holder.get(key) for key in SHOWN}
    text, job = str(holder.get("id") or ""), holder.get("job_id")
    if not fields["requested_by"] and job and text.startswith(f"update-executor job {job} for "):
        fields["requested_by"] = text.removeprefix(f"update-executor job {job} for ")
    return fields


def decide(
    holder: dict[str, Any],
    *,
    now: float,
    max_age: int,
    hostname: str,
    has_rollback_point: bool,
    stale_reason: Any,
) -> tuple[Verdict, str | None]:
    """Remove only a stale lock with no rollback point next to it. `stale_reason` is the role's
    (holder, now, max_age, hostname) -> why it is stale, or None while its holder may run.

    A live holder keeps its lock (and the rollback point a running update has). A stale lock
    beside a rollback point is a cut-off update's: it stays for `update-executor rollback`,
    which breaks it when it puts the previous version back."""
    reason = stale_reason(holder, now, max_age, hostname)
    if reason is None:
        return Verdict.live, None
    if has_rollback_point:
        return Verdict.cut_off, str(reason)
    return Verdict.removed, str(reason)


def unlock(
    lock: Path,
    *,
    max_age: int,
    now: float | None = None,
    hostname: str | None = None,
    proc_root: str = "/proc",
) -> LockState:
    """Judge one lock file and remove it when stale, under the directory flock the lock module
    takes to break a lock: an update cannot take it between the judgement and the removal."""
    module = lock_module()
    now = time.time() if now is None else now
    hostname = socket.gethostname() if hostname is None else hostname
    directory = lock.parent
    module.check_directory(str(directory))  # a directory others could plant files in: refused
    point = point_of(lock)
    with module.guard(str(directory)):
        current = module.read_lock(str(lock))
        if current is None:
            return LockState(lock, Verdict.gone)
        holder = current[0]
        started = holder.get("started_epoch")
        age = now - started if isinstance(started, int | float) else None
        verdict, reason = decide(
            holder,
            now=now,
            max_age=max_age,
            hostname=hostname,
            has_rollback_point=point.exists(),
            stale_reason=partial(module.stale_reason, proc_root=proc_root),
        )
        if verdict is Verdict.removed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
            logger.info(
                "removed the stale update lock %s held by %s: %s", lock, holder.get("id"), reason
            )
    return LockState(lock, verdict, shown(holder), age, reason, point if point.exists() else None)


def unlock_all(settings: Settings) -> list[LockState]:
    """`update-executor unlock` for the configured deployment: each of its lock files."""
    return [
        unlock(path, max_age=settings.job_timeout)
        for path in lock_files(settings.lock_dir, settings.compose_project_name)
    ]
