"""What a worker does at start when its previous life was killed mid-update (SIGKILL, OOM,
power loss): end the orphaned ansible run, and let ARQ report the job as interrupted now
instead of when its in-progress marker expires (up to JOB_TIMEOUT later).

This relies on one worker per queue (documented): a job marked in progress on our queue
while we start cannot belong to a live worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from arq.constants import in_progress_key_prefix
from redis.exceptions import ResponseError

from ..shared.inflight import inflight_key
from ..shared.untrusted import InvalidJobId, job_id_from

logger = logging.getLogger("update_executor.recovery")

TERM_GRACE_S = 10.0


def ansible_processes_of(job_id: str) -> list[int]:
    """PIDs of ansible-playbook processes started for `job_id` (its id is in their -e vars)."""
    marker = f'"compose_update_job_id":"{job_id}"'.encode()
    marker_spaced = f'"compose_update_job_id": "{job_id}"'.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"ansible-playbook" in cmdline and (marker in cmdline or marker_spaced in cmdline):
            found.append(int(entry.name))
    return found


def end_process_groups(pids: list[int], grace_s: float = TERM_GRACE_S) -> None:
    """SIGTERM each process's group (ansible, its module processes, docker compose), then
    SIGKILL what is left after `grace_s`."""
    groups = set()
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    for group in groups:
        logger.warning("ending orphaned ansible process group %d", group)
        _signal_group(group, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while groups and time.monotonic() < deadline:
        groups = {g for g in groups if _group_alive(g)}
        time.sleep(0.2)
    for group in groups:
        _signal_group(group, signal.SIGKILL)


def _signal_group(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, sig)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


JOB_DIR_PREFIX = "ue-job-"


def remove_stale_job_dirs(parent: Path | None = None) -> list[Path]:
    """Remove per-job directories a killed worker left behind: they may hold the run's Docker
    config with the registry login. Called at start, before any job runs (one worker per
    host; under systemd PrivateTmp gives the service a /tmp of its own anyway)."""
    parent = Path(tempfile.gettempdir()) if parent is None else parent
    removed = []
    for path in parent.glob(f"{JOB_DIR_PREFIX}*"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            logger.warning("removed %s, left by an interrupted job", path)
            removed.append(path)
    return removed


async def recover_interrupted_job(redis: Any, queue_name: str) -> str | None:
    """If the in-flight update was running when the previous worker died, end what is left of
    it and return its job id (ARQ then reports it failed: max_tries=1, never re-run)."""
    key = inflight_key(queue_name)
    try:
        holder = await redis.get(key)
    except ResponseError as exc:  # a key of another type: only a Redis writer puts it there
        logger.warning("ignoring %s: %s", key, exc)
        return None
    if holder is None:
        return None
    try:
        job_id = job_id_from(holder)
    except InvalidJobId as exc:
        # Never a job of ours; it would reach the rollback playbook and /proc matching.
        logger.warning("ignoring %s: it holds an %s", key, exc)
        return None
    if not await redis.exists(in_progress_key_prefix + job_id):
        return None  # only queued: the update never started, it runs normally
    logger.error(
        "job %s was running when the previous worker stopped; it is reported as interrupted "
        "and not re-run",
        job_id,
    )
    # off the event loop: ending a process group may take up to TERM_GRACE_S
    await asyncio.to_thread(end_process_groups, ansible_processes_of(job_id))
    await redis.delete(in_progress_key_prefix + job_id)
    return job_id
