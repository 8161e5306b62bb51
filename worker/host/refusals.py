"""Jobs refused for their signature or format, reported in bulk (issue 21).

Whoever can write to the queue's Redis can queue any number of unsigned or malformed jobs.
Each is refused before anything runs (worker/shared/signing.py); reported one by one, a flood
sent one notification per job, wrote one history record per job (500 of them push every real
update out of the Redis stream) and held the single job slot for up to NOTIFY_TIMEOUT per job.
So these refusals are:

- counted per job (metrics: `update_executor_refused_jobs` by reason) and each job still gets
  its refused result (`notification` `batched`);
- logged once per burst: the first refusal of an interval as a warning, the others at debug
  level (`-v`), and one warning line per report with the count and reasons;
- reported at most once per REFUSAL_REPORT_INTERVAL (600 s) as ONE notification and ONE history
  record ("N jobs refused in the last 10 minutes; first at ..., reasons ..."): the first
  refusal after a quiet interval at once, the ones after it once the interval has passed (the
  worker's poll loop looks) or when the worker stops. Reports are sent in the background: the
  job slot is free again at once.

A signed job refused for what it asks (a service that is not allowed, the cool-down) is not
one of these: it is an update job that failed validation, reported on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..shared.outcome import Outcome
from ..shared.untrusted import has_control_chars, is_job_id, loggable
from . import history
from .notify import Message, NotificationStatus, send_message, wanted
from .settings import Settings

logger = logging.getLogger("update_executor.refusals")
security_log = logging.getLogger("update_executor.security")

REFUSALS_KEY = "update_executor_refusals"
# What a report lists: the first job ids, the most frequent reasons.
MAX_JOB_IDS = 5
MAX_REASONS = 10
MAX_REASON_CHARS = 200


def reason_kind(reason: str) -> str:
    """A refusal's reason as counted: numbers (sizes, ages) as N, so that a flood of oversized
    jobs is one kind; one line, cut."""
    text = re.sub(r"\d+", "N", reason)
    if has_control_chars(text):
        text = "".join(c if not has_control_chars(c) else " " for c in text)
    return text[:MAX_REASON_CHARS]


@dataclass
class Batch:
    """Refusals not reported yet."""

    count: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None
    reasons: Counter[str] = field(default_factory=Counter)
    job_ids: list[str] = field(default_factory=list)

    def add(self, job_id: str, reason: str, at: datetime) -> None:
        self.count += 1
        self.first_at = self.first_at or at
        self.last_at = at
        kind = reason_kind(reason)
        if kind in self.reasons or len(self.reasons) < MAX_REASONS:
            self.reasons[kind] += 1
        else:
            self.reasons["(other reasons)"] += 1
        if len(self.job_ids) < MAX_JOB_IDS:
            self.job_ids.append(job_id if is_job_id(job_id) else "invalid")


@dataclass
class Refusals:
    """The worker's refusals since the last report, and when that was (monotonic s)."""

    interval_s: float
    clock: Callable[[], float] = time.monotonic
    pending: Batch = field(default_factory=Batch)
    last_report: float | None = None
    last_logged: float | None = None
    reporting: asyncio.Task[None] | None = None

    def add(self, job_id: str, reason: str, at: datetime) -> bool:
        """Count one refusal; True when it opens a burst (none logged within the interval):
        log it in full."""
        self.pending.add(job_id, reason, at)
        now = self.clock()
        if self.last_logged is not None and now - self.last_logged < self.interval_s:
            return False
        self.last_logged = now
        return True

    def due(self) -> bool:
        """Whether a report may be sent now (at most one per interval)."""
        return self.last_report is None or self.clock() - self.last_report >= self.interval_s

    def take(self, *, force: bool = False) -> Batch | None:
        """The pending batch, when there is one and a report is due (or `force`: at stop);
        the next batch starts empty."""
        if not self.pending.count or not (force or self.due()):
            return None
        if self.reporting is not None and not self.reporting.done():
            return None  # the previous report is still being sent
        batch, self.pending = self.pending, Batch()
        if self.due():
            self.last_report = self.clock()
        return batch


# ------------------------------------------------------------------ the report (pure)


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ") if at else "?"


def _minutes(interval_s: float) -> str:
    minutes = interval_s / 60
    return f"{minutes:g} minutes" if minutes >= 1 else f"{interval_s:g} seconds"


def headline(batch: Batch, interval_s: float) -> str:
    jobs = "job" if batch.count == 1 else "jobs"
    reasons = "; ".join(f"{n} x {kind}" for kind, n in batch.reasons.most_common())
    return (
        f"{batch.count} {jobs} refused in the last {_minutes(interval_s)}; first at "
        f"{_when(batch.first_at)}, last at {_when(batch.last_at)}; reasons: {reasons}"
    )


def refusal_message(batch: Batch, project: str, interval_s: float) -> Message:
    """One notification for a batch of refused jobs."""
    lines = [
        headline(batch, interval_s),
        f"Project: {project}",
        "Jobs: " + ", ".join(batch.job_ids) + (", ..." if batch.count > len(batch.job_ids) else ""),
        "Nothing was run for any of them. A stream of refused jobs means someone who does not "
        "hold the job secret writes to the queue (docs/security.md).",
    ]
    return Message(f"Jobs refused ({batch.count}): {project}", "\n".join(lines))


def refusal_record(
    batch: Batch, project: str, interval_s: float, notification: str
) -> dict[str, Any]:
    """One history record for a batch of refused jobs (kind `refused`; `job_id` is the first
    of them, `job_ids` the first few, `count` all)."""
    return {
        "kind": history.RecordKind.refused.value,
        "job_id": batch.job_ids[0] if batch.job_ids else "invalid",
        "requested_by": None,
        "request": None,
        "status": "failed",
        "outcome": "refused",
        "started_at": _when(batch.first_at),
        "finished_at": _when(batch.last_at),
        "duration_s": None,
        "compose_project": project,
        "services": {},
        "error": {"step": "validation", "message": headline(batch, interval_s)},
        "rolled_back": False,
        "notification": notification,
        "count": batch.count,
        "job_ids": list(batch.job_ids),
        "reasons": dict(batch.reasons),
    }


# ------------------------------------------------------------------ in the worker


def refusals_of(ctx: dict[str, Any]) -> Refusals:
    settings: Settings = ctx["settings"]
    refusals = ctx.get(REFUSALS_KEY)
    if not isinstance(refusals, Refusals):
        refusals = ctx[REFUSALS_KEY] = Refusals(float(settings.refusal_report_interval))
    return refusals


def note_refusal(ctx: dict[str, Any], job_id: str, reason: str) -> None:
    """Count a job refused for its signature or format; log it when it opens a batch."""
    refusals = refusals_of(ctx)
    if refusals.add(job_id, reason, datetime.now(UTC)):
        security_log.warning(
            "job %s refused, nothing was run: %s (further refusals are counted and reported "
            "together, at most once every %s)",
            loggable(job_id),
            reason[:500],
            _minutes(refusals.interval_s),
        )
    else:  # counted in the next report; shown with -v
        security_log.debug("job %s refused, nothing was run: %s", loggable(job_id), reason[:500])


def report_refusals(ctx: dict[str, Any]) -> None:
    """Start sending the pending batch's report in the background when one is due (called
    after each refusal and at each poll of the queue)."""
    refusals = ctx.get(REFUSALS_KEY)
    if not isinstance(refusals, Refusals):
        return
    batch = refusals.take()
    if batch is not None:
        refusals.reporting = asyncio.create_task(_report(ctx, batch, refusals.interval_s, True))


async def flush_refusals(ctx: dict[str, Any]) -> None:
    """At stop: wait for a report being sent, then record what is pending (notified only if
    a report is due: at most one per interval also across a restart)."""
    refusals = ctx.get(REFUSALS_KEY)
    if not isinstance(refusals, Refusals):
        return
    if refusals.reporting is not None:
        with contextlib.suppress(Exception):
            await refusals.reporting
    notify_too = refusals.due()
    batch = refusals.take(force=True)
    if batch is not None:
        await _report(ctx, batch, refusals.interval_s, notify_too)


async def _report(ctx: dict[str, Any], batch: Batch, interval_s: float, notify_too: bool) -> None:
    settings: Settings = ctx["settings"]
    project = settings.compose_project_name or settings.compose_file.parent.name
    try:
        status = NotificationStatus.off
        if notify_too and wanted(settings, Outcome.refused):
            message = refusal_message(batch, project, interval_s)
            status = await send_message(settings, message, "refused jobs")
        security_log.warning("%s", headline(batch, interval_s))
        record = refusal_record(batch, project, interval_s, status.value)
        await history.record(ctx.get("redis"), settings, record)
    except Exception:  # a report must never take the worker down
        logger.exception("the report of %d refused jobs failed", batch.count)
