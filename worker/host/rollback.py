"""Roll back an update that was cut off before its own rescue could run: canceled (ARQ abort),
stopped by JOB_TIMEOUT, or killed with the worker (then at the next start).

update.yml writes a rollback point (the state before the update) once it has taken its
snapshot, and removes it when it ends. When the worker cuts the playbook off, it runs
playbooks/rollback.yml, which puts that state back and removes the point; until then the
next update refuses to run over a half-updated site.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..shared.cutoff import CutOffRollback, apply_to_summary, read_recovery
from ..shared.keys import recovery_key
from ..shared.untrusted import ansible_unsafe, is_job_id, loggable
from .runner import PlaybookRun, run_playbook_async
from .settings import Settings
from .summary import RunOutcome, UpdateStatus

logger = logging.getLogger("update_executor.rollback")

__all__ = ["CutOffRollback", "apply_to_summary", "read_recovery", "roll_back_cut_off_update"]

ROLLBACK_STATS_KEY = "update_executor_rollback"
# Seconds a rollback may take on top of HEALTH_TIMEOUT (ansible start, tagging, recreate).
ROLLBACK_MARGIN_S = 120


def rollback_result(outcome: RunOutcome, duration_s: float = 0.0) -> CutOffRollback:
    """Read the rollback playbook's report (its set_stats) out of a run."""
    reports = outcome.host_reports(ROLLBACK_STATS_KEY)
    report = next(iter(reports.values()), None)
    if not isinstance(report, Mapping):
        return CutOffRollback(
            ran=False,
            error=outcome.error or f"the rollback playbook ended {outcome.status.value}",
            duration_s=duration_s,
        )
    error = report.get("rollback_error") or None
    if error is None and outcome.status is not UpdateStatus.successful:
        error = _failed_task_message(outcome) or f"the rollback playbook {outcome.status.value}"
    return CutOffRollback(
        ran=True,
        found=bool(report.get("found")),
        finished=bool(report.get("finished")),
        rolled_back=bool(report.get("rolled_back")),
        rollback={k: v for k, v in dict(report.get("rollback") or {}).items() if v},
        error=str(error).strip() if error else None,
        done=str(report.get("done") or "").strip(),
        manual=[str(line) for line in report.get("manual") or []],
        duration_s=duration_s,
        database=dict(report["database"]) if isinstance(report.get("database"), Mapping) else None,
    )


def _failed_task_message(outcome: RunOutcome) -> str:
    for event in reversed(outcome.events):
        if event.get("event") == "runner_on_failed":
            data = event.get("event_data") or {}
            if data.get("ignore_errors"):
                continue
            result = data.get("res") or {}
            return str(result.get("msg") or "").strip()
    return ""


def rollback_vars(settings: Settings, job_id: str, requested_by: str = "") -> dict[str, Any]:
    """The rollback playbook's variables (the role's `rollback` entry point; a subset)."""
    return {
        "compose_update_project_src": "",
        "compose_update_compose_files": [str(settings.compose_file)],
        "compose_update_project_name": settings.compose_project_name,
        "compose_update_lock_dir": str(settings.lock_dir),
        "compose_update_lock_max_age": settings.job_timeout,
        "compose_update_job_id": job_id,
        "compose_update_requested_by": ansible_unsafe(requested_by),
        # The database's rollback: the revision is the rollback point's, the commands these.
        "compose_update_migration_service": settings.migration_service,
        "compose_update_migration_revision_command": settings.migration_revision_command,
        "compose_update_migration_downgrade_command": settings.migration_downgrade_command,
        "compose_update_db_rollback": settings.db_rollback,
    }


def rollback_timeout(settings: Settings) -> int:
    return settings.health_timeout + ROLLBACK_MARGIN_S


def rollback_points(settings: Settings) -> list[Path]:
    """Rollback points on disk (updates cut off and not rolled back yet) that may be this
    deployment's: of its project when COMPOSE_PROJECT_NAME is set, else any."""
    prefix = f"{settings.compose_project_name}." if settings.compose_project_name else ""
    try:
        return sorted(settings.lock_dir.glob(f"{prefix}*.rollback.json"))
    except OSError:
        return []


async def roll_back_cut_off_update(
    settings: Settings,
    job_id: str,
    *,
    work_root: Path | None = None,
    update_hosts: str | None = None,
) -> CutOffRollback:
    """Run playbooks/rollback.yml for the configured project on `update_hosts` (the cut-off
    job's, checked names joined by ','; None: the play's default, localhost); never raises
    for a failure."""
    started = time.monotonic()
    if not is_job_id(job_id):  # it becomes a playbook variable and ansible-runner's ident
        logger.warning("rollback for invalid job id %s: run as unknown-job", loggable(job_id))
        job_id = "unknown-job"
    logger.warning("job %s: rolling back what the cut-off update changed", job_id)
    outcome = await run_playbook_async(
        PlaybookRun(
            playbook=settings.playbook.parent / "rollback.yml",
            inventory=settings.inventory,
            extravars={
                **rollback_vars(settings, job_id),
                **({"update_hosts": update_hosts} if update_hosts else {}),
            },
            ident=job_id,
            timeout_s=rollback_timeout(settings),
        ),
        work_root=work_root,
    )
    result = rollback_result(outcome, time.monotonic() - started)
    level = logging.INFO if result.ok else logging.ERROR
    logger.log(level, "job %s: %s (%.1fs)", job_id, result.message(), result.duration_s)
    return result


async def record_recovery(
    redis: Any, settings: Settings, job_id: str, result: CutOffRollback, *, seal: Any, ttl_s: int
) -> None:
    """Keep what the start-up rollback did for an interrupted job, for its summary (signed like
    job results: `seal` is the worker codec's serialize)."""
    record = {**result.as_dict(), "id": job_id, "q": settings.queue_name}  # bound to the job
    await redis.set(recovery_key(settings.queue_name, job_id), seal(record), ex=ttl_s)
