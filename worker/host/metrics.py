"""Prometheus metrics of the worker: on a loopback HTTP port (METRICS_PORT, METRICS_HOST) and/or
as a node-exporter textfile (METRICS_TEXTFILE, rewritten atomically after every job).

The metrics live in their own registry (not prometheus-client's global one), so the textfile
holds ours only. A metrics problem (port taken, directory not writable) is logged and never
stops the worker or an update.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, write_to_textfile
from prometheus_client.exposition import start_http_server

from .. import __version__
from ..shared.outcome import Outcome, outcome_of, refusal_reason
from .settings import Settings
from .summary import UpdateStatus

logger = logging.getLogger("update_executor.metrics")

# An update takes seconds to tens of minutes (JOB_TIMEOUT is 30 min by default).
UPDATE_BUCKETS = (5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
STEP_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class Metrics:
    """The worker's metrics; `observe_update` / `observe_check` after each job."""

    def __init__(self, version: str = __version__) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.updates = Counter(
            "update_executor_updates",
            "Updates run, by the summary's status",
            ["status"],
            registry=r,
        )
        self.duration = Histogram(
            "update_executor_update_duration_seconds",
            "Wall time of an update job",
            buckets=UPDATE_BUCKETS,
            registry=r,
        )
        self.step_duration = Histogram(
            "update_executor_step_duration_seconds",
            "Wall time of a playbook step that ran",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.last_update = Gauge(
            "update_executor_last_update_timestamp_seconds",
            "When the last update with this status finished (Unix time)",
            ["status"],
            registry=r,
        )
        self.rollbacks = Counter(
            "update_executor_rollbacks",
            "Failed updates whose previous images were restored",
            registry=r,
        )
        self.refused = Counter(
            "update_executor_refused_jobs",
            "Jobs refused before anything ran, by reason",
            ["reason"],
            registry=r,
        )
        self.updates_available = Gauge(
            "update_executor_updates_available",
            "Services with a newer image in the registry, as of the last check",
            registry=r,
        )
        self.info = Gauge("update_executor_info", "The worker's version", ["version"], registry=r)
        self.info.labels(version=version).set(1)
        # Every status from the start at 0, so that rate() and increase() see the first one.
        for status in UpdateStatus:
            self.updates.labels(status=status.value)
        for reason in ("cooldown", "validation", "signature"):
            self.refused.labels(reason=reason)
        self._server: Any = None

    def observe_update(self, summary: Mapping[str, Any]) -> None:
        """Count one finished update job (a refused job counts as refused only)."""
        outcome = outcome_of(summary)
        if outcome is Outcome.refused:
            self.refused.labels(reason=refusal_reason(summary)).inc()
            return
        request = summary.get("request")
        if isinstance(request, Mapping) and request.get("dry_run"):
            return  # a dry run restarts nothing: not an update
        status = str(summary.get("status"))
        if status not in UpdateStatus.__members__:
            status = UpdateStatus.failed.value
        self.updates.labels(status=status).inc()
        duration = summary.get("duration_s")
        if isinstance(duration, int | float):
            self.duration.observe(duration)
        self.last_update.labels(status=status).set_to_current_time()
        if summary.get("rolled_back"):
            self.rollbacks.inc()
        for step in summary.get("steps") or []:
            if isinstance(step, Mapping) and step.get("status") != "skipped":
                seconds = step.get("duration_s")
                if isinstance(seconds, int | float):
                    self.step_duration.labels(step=str(step.get("name"))).observe(seconds)

    def observe_check(self, result: Mapping[str, Any]) -> None:
        if result.get("error"):
            return  # the check did not run: what we knew stays
        services = result.get("services") or {}
        self.updates_available.set(
            sum(
                1
                for entry in services.values()
                if isinstance(entry, Mapping) and entry.get("update_available")
            )
        )

    # ---------------------------------------------------------------- exposing
    def serve(self, host: str, port: int) -> None:
        try:
            self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            logger.error("metrics: cannot listen on %s:%d: %s", host, port, exc.strerror or exc)
            return
        logger.info("metrics on http://%s:%d/metrics", host, port)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def write_textfile(self, settings: Settings) -> None:
        """The node-exporter textfile: prometheus-client writes a temp file next to it and
        renames it over, so the collector never reads half a file."""
        if settings.metrics_textfile is None:
            return
        try:
            write_to_textfile(str(settings.metrics_textfile), self.registry)
        except OSError as exc:
            logger.warning(
                "metrics: cannot write %s: %s", settings.metrics_textfile, exc.strerror or exc
            )


def start_metrics(settings: Settings) -> Metrics:
    metrics = Metrics()
    if settings.metrics_port:
        metrics.serve(settings.metrics_host, settings.metrics_port)
    metrics.write_textfile(settings)
    return metrics
