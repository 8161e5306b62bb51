"""What happens around a job once its result is final: the notification (worker/host/notify.py),
the history record (worker/host/history.py) and the metrics (worker/host/metrics.py).

The job flow calls `after_job` with the final summary of every update job, refused ones
included; `recorded_rejected_job` and `recorded_check` wrap the stand-in for refused jobs and
the check job. None of it raises: the summary is returned in any case.
"""

from __future__ import annotations

import logging
from typing import Any

from ..shared.signing import rejected_job
from . import history
from .metrics import Metrics, start_metrics
from .notify import notify, split_urls
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
    urls = len(split_urls(settings.notify_urls.reveal()))
    logger.info(
        "notifications: %s; history file: %s",
        f"{urls} URL(s), on {settings.notify_on}" if urls else "off (no NOTIFY_URLS)",
        settings.history_file or "none (Redis only)",
    )


async def stop_reporting(ctx: dict[str, Any]) -> None:
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
    """worker/shared/signing.py's `rejected_job`, then `after_job` (a refused job is notified,
    recorded and counted like any other)."""
    return await after_job(ctx, await rejected_job(ctx, reason=reason))
