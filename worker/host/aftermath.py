"""What happens around a job once its result is final: the notification (worker/host/notify.py),
the history record (worker/host/history.py) and the metrics (worker/host/metrics.py).

The job flow calls `after_job` with the final summary of every update job, refused ones
included; `recorded_rejected_job` and `recorded_check` wrap the stand-in for refused jobs and
the check job. None of it raises: the summary is returned in any case.
"""

from __future__ import annotations

import logging
from typing import Any

from ..shared.outcome import Outcome
from ..shared.signing import rejected_job
from . import history
from .metrics import Metrics, start_metrics
from .notify import NotificationStatus, notify, split_urls, wanted
from .refusals import flush_refusals, note_refusal, refusals_of, report_refusals
from .settings import Settings

logger = logging.getLogger("update_executor.aftermath")

METRICS_KEY = "update_executor_metrics"


def project_name(settings: Settings, summary: dict[str, Any]) -> str:
    return str(
        summary.get("compose_project")
        or settings.compose_project_name
        or settings.compose_file.parent.name
    )


async def start_reporting(ctx: dict[str, Any]) -> None:
    """At worker start: the metrics endpoint / textfile; say what is configured."""
    settings: Settings = ctx["settings"]
    ctx[METRICS_KEY] = start_metrics(settings)
    refusals_of(ctx)  # in the worker's own ctx: each job's ctx is a copy of it
    urls = len(split_urls(settings.notify_urls.reveal()))
    if urls:
        # Loaded now, not by the first notification (seconds on a busy host): a report of
        # refused jobs goes out when it is due, not late (worker/host/refusals.py).
        import apprise  # noqa: F401, PLC0415
    logger.info(
        "notifications: %s; history file: %s",
        f"{urls} URL(s), on {settings.notify_on}" if urls else "off (no NOTIFY_URLS)",
        settings.history_file or "none (Redis only)",
    )


async def stop_reporting(ctx: dict[str, Any]) -> None:
    await flush_refusals(ctx)  # refusals not reported yet: one record (worker/host/refusals.py)
    metrics: Metrics | None = ctx.pop(METRICS_KEY, None)
    if metrics is not None:
        metrics.stop()


async def after_job(ctx: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Notify, record, count; return `summary` with its `notification` field set."""
    settings: Settings = ctx["settings"]
    try:
        summary["notification"] = (
            await notify(settings, summary, project_name(settings, summary))
        ).value
        metrics: Metrics | None = ctx.get(METRICS_KEY)
        if metrics is not None:
            metrics.observe_update(summary)
            metrics.write_textfile(settings)
        await history.record(ctx.get("redis"), settings, history.update_record(summary))
    except Exception:  # what comes after an update must never lose its result
        logger.exception("job %s: notification, history or metrics failed", summary.get("job_id"))
    return summary


async def recorded_rejected_job(ctx: dict[str, Any], *, reason: str) -> dict[str, Any]:
    """worker/shared/signing.py's `rejected_job` for a job refused for its signature or format:
    counted (metrics) and reported in bulk, at most once per REFUSAL_REPORT_INTERVAL, by
    worker/host/refusals.py; never one notification and history record per job."""
    settings: Settings = ctx["settings"]
    note_refusal(ctx, str(ctx.get("job_id") or "unknown"), str(reason))
    summary = await rejected_job(ctx, reason=reason, quiet=True)
    summary["notification"] = (
        NotificationStatus.batched if wanted(settings, Outcome.refused) else NotificationStatus.off
    ).value
    try:
        metrics: Metrics | None = ctx.get(METRICS_KEY)
        if metrics is not None:
            metrics.observe_update(summary)
            metrics.write_textfile(settings)
        report_refusals(ctx)
    except Exception:
        logger.exception("job %s: metrics or the refusals' report failed", summary.get("job_id"))
    return summary
