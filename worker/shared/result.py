"""The job's result as both sides see it: statuses, steps, and the summary's shape.

The worker builds a summary from what the playbook did (worker/host/summary.py); the API side
reads it back and builds the summaries of jobs that never ran the playbook (refused, cut off,
failed at the ARQ level). The shape is documented in `docs/result.schema.json`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from .request import UpdateRequest

NOT_REACHED = "not run: an earlier step failed"


class UpdateStatus(StrEnum):
    successful = "successful"
    failed = "failed"
    canceled = "canceled"
    timeout = "timeout"


class HostStatus(StrEnum):
    """How the update of one inventory host ended (the summary's `hosts`, issue 24)."""

    successful = "successful"
    failed = "failed"
    canceled = "canceled"
    timeout = "timeout"
    not_started = "not_started"  # its batch never started: an earlier batch failed


# The top-level status of a fleet is the worst of its hosts' (a host not started changes nothing).
STATUS_SEVERITY = {
    UpdateStatus.successful: 0,
    UpdateStatus.canceled: 1,
    UpdateStatus.timeout: 2,
    UpdateStatus.failed: 3,
}


def worst_status(status: UpdateStatus, hosts: Iterable[str]) -> UpdateStatus:
    """`status` (the run's) or the worst of the hosts' statuses, whichever is worse."""
    worst = status
    for value in hosts:
        if value == HostStatus.not_started:
            continue
        candidate = UpdateStatus(value)
        if STATUS_SEVERITY[candidate] > STATUS_SEVERITY[worst]:
            worst = candidate
    return worst


class StepStatus(StrEnum):
    ok = "ok"
    changed = "changed"
    failed = "failed"
    skipped = "skipped"


class Step(StrEnum):
    """The playbook's steps, in order. Task names start with the capitalised value and ' | '."""

    preflight = "preflight"
    lock = "lock"
    login = "login"
    snapshot = "snapshot"
    backup = "backup"
    pull = "pull"
    pre_update = "pre-update"  # lifecycle hooks: shown only when a hook ran
    recreate = "recreate"
    migrations = "migrations"
    post_update = "post-update"
    rollback = "rollback"
    report = "report"


@dataclass
class StepResult:
    name: str
    status: StepStatus = StepStatus.skipped
    duration_s: float = 0.0
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "duration_s": round(self.duration_s, 3),
            "message": self.message,
        }


@dataclass
class Summary:
    job_id: str
    status: UpdateStatus
    started_at: datetime
    finished_at: datetime
    request: UpdateRequest | None
    steps: list[StepResult]
    services: dict[str, Any]
    migrations: dict[str, Any]
    stats: dict[str, int]
    error: dict[str, str] | None
    compose_project: str | None = None
    rolled_back: bool = False
    # per service: {image_id, health, action: restored|stopped} after the rollback, or None
    rollback: dict[str, Any] = field(default_factory=dict)
    rollback_error: str | None = None
    backup: dict[str, Any] | None = None
    # The database (issue 23): {mode, revision_before, revision_after, action, message}.
    database: dict[str, Any] | None = None
    # Whether the operators were told (worker/host/notify.py): sent, failed, or off.
    notification: str = "off"
    # Lifecycle hooks that ran (labels update-executor.pre-update / post-update).
    hooks: dict[str, Any] = field(default_factory=dict)
    # Per inventory host (issue 24): {name: {status, compose_project, services, migrations, error,
    # rolled_back, rollback, rollback_error, database, batch, reverted}}; the batches in order.
    # A one-host run has its one host here too; the top-level fields stay that host's.
    hosts: dict[str, Any] = field(default_factory=dict)
    batches: list[list[str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            status=self.status.value,
            started_at=self.started_at.isoformat(),
            finished_at=self.finished_at.isoformat(),
            duration_s=round((self.finished_at - self.started_at).total_seconds(), 3),
            request=self.request.as_dict() if self.request else None,
            steps=[step.as_dict() for step in self.steps],
        )
        return data


def rejected_summary(
    *,
    job_id: str,
    message: str,
    started_at: datetime,
    finished_at: datetime,
    request: UpdateRequest | None = None,
    step: str = "validation",
) -> Summary:
    """A failed summary for a job that was refused before the playbook ran."""
    return Summary(
        job_id=job_id,
        status=UpdateStatus.failed,
        started_at=started_at,
        finished_at=finished_at,
        request=request,
        steps=[],
        services={},
        migrations={"ran": False, "rc": None, "output_tail": ""},
        stats={},
        error={"step": step, "message": message},
    )
