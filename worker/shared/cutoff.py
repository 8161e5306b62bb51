"""A cut-off update's rollback as the client sees it: the worker's start-up rollback of an
interrupted job is recorded in Redis (signed like results, worker/host/rollback.py) and
added to that job's summary when the client reads it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from .bounded import MAX_RECOVERY_BYTES, OversizedValue, bounded_get
from .keys import recovery_key
from .result import StepResult, StepStatus, Summary

logger = logging.getLogger("update_executor.rollback")


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
    # The database (issue 23): {mode, revision_before, revision_after, action, message}.
    database: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.ran and self.error is None and (self.finished or not self.found)

    def message(self) -> str:
        """One sentence for the job's error message and the log."""
        if not self.ran or (self.error is not None and not self.manual):
            return (
                f"THE ROLLBACK COULD NOT RUN: {(self.error or 'unknown error').rstrip('.')}. Once "
                "the cause is fixed, run `update-executor rollback` on the host (a manual "
                "ansible-playbook run: playbooks/rollback.yml with its inventory); the next "
                "update is refused until then."
            )
        if self.error is not None:
            manual = " ; ".join(self.manual)
            return f"THE ROLLBACK FAILED TOO: {self.error} Restore by hand: {manual}"
        if not self.found:
            return "Nothing to roll back: it was cut off before anything changed."
        if self.rolled_back:
            db = self.database or {}
            if db.get("action") in ("downgraded", "unchanged"):
                return f"Rolled back: {self.done}; the database is at {db.get('revision_after')}."
            return f"Rolled back: {self.done}."
        return "Nothing to roll back: no container had been changed yet."

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rollback_step_status(result: CutOffRollback) -> StepStatus:
    """The rollback step's status: changed when it put something back, ok when there was
    nothing to put back, failed when it failed."""
    if not result.ok:
        return StepStatus.failed
    return StepStatus.changed if result.rolled_back else StepStatus.ok


def add_rollback(summary: Summary, result: CutOffRollback) -> None:
    """The rollback's fields and step in a canceled or timed-out update's summary."""
    summary.rolled_back = result.rolled_back
    summary.rollback = {**summary.rollback, **result.rollback}
    summary.rollback_error = result.error
    if result.database and result.database.get("action") not in (None, "none"):
        summary.database = result.database
    summary.steps = [s for s in summary.steps if s.name != "rollback"] + [
        StepResult(
            name="rollback",
            status=rollback_step_status(result),
            duration_s=result.duration_s,
            message=result.message(),
        )
    ]


def with_rollback(message: str, result: CutOffRollback) -> str:
    """The job's error message, followed by what the rollback did."""
    return f"{message.rstrip('.')}. {result.message()}"


def apply_to_summary(summary: Summary, result: CutOffRollback) -> None:
    """Add the rollback of a canceled or timed-out update to its summary."""
    add_rollback(summary, result)
    if summary.error is not None:
        message = with_rollback(summary.error["message"], result)
        summary.error = {**summary.error, "message": message}


async def read_recovery(
    redis: Any, queue_name: str, job_id: str, open_: Any
) -> CutOffRollback | None:
    """The start-up rollback of an interrupted job, or None (`open_` is the codec's
    deserialize; data that does not verify is ignored)."""
    try:
        raw = await bounded_get(redis, recovery_key(queue_name, job_id), MAX_RECOVERY_BYTES)
    except (OversizedValue, ResponseError) as exc:  # only a Redis writer does that
        logger.warning("ignoring the recovery record of job %s: %s", job_id, exc)
        return None
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
