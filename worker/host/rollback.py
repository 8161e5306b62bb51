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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..shared.untrusted import ansible_unsafe, is_job_id, loggable
from .runner import PlaybookRun, run_playbook_async
from .settings import Settings
from .summary import RunOutcome, StepResult, StepStatus, Summary, UpdateStatus

logger = logging.getLogger("update_executor.rollback")

ROLLBACK_STATS_KEY = "update_executor_rollback"
# Seconds a rollback may take on top of HEALTH_TIMEOUT (ansible start, tagging, recreate).
ROLLBACK_MARGIN_S = 120


@dataclass
class CutOffRollback:
    """What the rollback of a cut-off update did."""

    ran: bool  # the rollback playbook ran to its report
    found: bool = False  # a rollback point was there (the update had got past its snapshot)
    finished: bool = False  # the rollback completed; the rollback point is gone
    rolled_back: bool = False
    # per service: {image_id, health, action: restored|stopped}, or None when left alone
    rollback: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    done: str = ""
    manual: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.ran and self.error is None and (self.finished or not self.found)

    def message(self) -> str:
        """One sentence for the job's error message and the log."""
        if not self.ran or (self.error is not None and not self.manual):
            return (
                f"THE ROLLBACK COULD NOT RUN: {(self.error or 'unknown error').rstrip('.')}. Run "
                "`ansible-playbook -i inventory/localhost playbooks/rollback.yml` once the "
                "cause is fixed (the next update is refused until then)."
            )
        if self.error is not None:
            manual = " ; ".join(self.manual)
            return f"THE ROLLBACK FAILED TOO: {self.error} Restore by hand: {manual}"
        if not self.found:
            return "Nothing to roll back: it was cut off before anything changed."
        if self.rolled_back:
            return f"Rolled back: {self.done}."
        return "Nothing to roll back: no container had been changed yet."

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rollback_result(outcome: RunOutcome, duration_s: float = 0.0) -> CutOffRollback:
    """Read the rollback playbook's report (its set_stats) out of a run."""
    artifact = outcome.stats_event.get("artifact_data") or {}
    report = artifact.get(ROLLBACK_STATS_KEY)
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


def apply_to_summary(summary: Summary, result: CutOffRollback) -> None:
    """Add the rollback of a canceled or timed-out update to its summary."""
    summary.rolled_back = result.rolled_back
    summary.rollback = {**summary.rollback, **result.rollback}
    summary.rollback_error = result.error
    status = StepStatus.failed if not result.ok else StepStatus.changed
    if result.ok and not result.rolled_back:
        status = StepStatus.ok
    summary.steps = [s for s in summary.steps if s.name != "rollback"] + [
        StepResult(
            name="rollback", status=status, duration_s=result.duration_s, message=result.message()
        )
    ]
    if summary.error is not None:
        message = f"{summary.error['message'].rstrip('.')}. {result.message()}"
        summary.error = {**summary.error, "message": message}


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
    settings: Settings, job_id: str, *, work_root: Path | None = None
) -> CutOffRollback:
    """Run playbooks/rollback.yml for the configured project; never raises for a failure."""
    started = time.monotonic()
    if not is_job_id(job_id):  # it becomes a playbook variable and ansible-runner's ident
        logger.warning("rollback for invalid job id %s: run as unknown-job", loggable(job_id))
        job_id = "unknown-job"
    logger.warning("job %s: rolling back what the cut-off update changed", job_id)
    outcome = await run_playbook_async(
        PlaybookRun(
            playbook=settings.playbook.parent / "rollback.yml",
            inventory=settings.inventory,
            extravars=rollback_vars(settings, job_id),
            ident=job_id,
            timeout_s=rollback_timeout(settings),
        ),
        work_root=work_root,
    )
    result = rollback_result(outcome, time.monotonic() - started)
    level = logging.INFO if result.ok else logging.ERROR
    logger.log(level, "job %s: %s (%.1fs)", job_id, result.message(), result.duration_s)
    return result


def recovery_key(queue_name: str, job_id: str) -> str:
    return f"{queue_name}:recovery:{job_id}"


async def record_recovery(
    redis: Any, settings: Settings, job_id: str, result: CutOffRollback, *, seal: Any, ttl_s: int
) -> None:
    """Keep what the start-up rollback did for an interrupted job, for its summary (signed like
    job results: `seal` is the worker codec's serialize)."""
    record = {**result.as_dict(), "id": job_id, "q": settings.queue_name}  # bound to the job
    await redis.set(recovery_key(settings.queue_name, job_id), seal(record), ex=ttl_s)


async def read_recovery(
    redis: Any, queue_name: str, job_id: str, open_: Any
) -> CutOffRollback | None:
    """The start-up rollback of an interrupted job, or None (`open_` is the codec's
    deserialize; data that does not verify is ignored)."""
    raw = await redis.get(recovery_key(queue_name, job_id))
    if raw is None:
        return None
    try:
        data = open_(raw)
        if data.get("id") != job_id or data.get("q") != queue_name:
            raise ValueError("a record of another job")
        return CutOffRollback(**{k: v for k, v in data.items() if k in CUT_OFF_FIELDS})
    except Exception:  # a forged or unreadable record is worth nothing
        logger.warning("ignoring an unreadable recovery record for job %s", job_id)
        return None


CUT_OFF_FIELDS = frozenset(CutOffRollback.__dataclass_fields__)
