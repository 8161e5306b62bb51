"""The ARQ job: validate the request, run the playbook, return the summary.

Read top to bottom, this is the whole update flow on the worker's side; the steps themselves
live in `playbooks/update.yml`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Coroutine, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..shared.cutoff import rollback_step_status
from ..shared.inflight import release
from ..shared.request import InvalidRequest, UpdateRequest, registry_services
from ..shared.untrusted import ansible_unsafe, escaped, is_job_id, loggable
from .aftermath import after_job
from .compose import ComposeError, compose_config
from .cooldown import check_cooldown, record_update
from .inventory import InventoryError, job_target
from .progress import ProgressReporter
from .recovery import JOB_DIR_PREFIX
from .rollback import (
    CutOffRollback,
    roll_back_cut_off_update,
    rollback_vars,
)
from .runner import PlaybookCanceled, PlaybookRun, run_playbook_async
from .settings import Settings
from .summary import Step, Summary, UpdateStatus, build_summary, rejected_summary

logger = logging.getLogger("update_executor.jobs")

# Seconds of JOB_TIMEOUT kept for building and storing the summary after ansible is stopped,
# so a slow update ends as a `timeout` summary rather than an ARQ-level TimeoutError.
SUMMARY_MARGIN_S = 30


def now() -> datetime:
    return datetime.now(UTC)


async def allowed_services(settings: Settings) -> list[str]:
    """The services a job may choose from: UPDATE_SERVICES, or every registry-image service."""
    if settings.update_services:
        return list(settings.update_services)
    return registry_services(await compose_config(settings), settings.registry_url)


@contextlib.contextmanager
def job_work_dir(settings: Settings) -> Iterator[tuple[Path, Path | None]]:
    """A private directory for one job: the playbook's DOCKER_CONFIG goes here, and the token
    file when the token only came from GITHUB_TOKEN. Removed when the job ends."""
    with tempfile.TemporaryDirectory(prefix=JOB_DIR_PREFIX) as name:
        work_dir = Path(name)
        os.chmod(work_dir, 0o700)
        token_file = settings.registry_token_file
        if token_file is None and settings.registry_token:
            token_file = work_dir / "registry-token"
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(settings.registry_token.reveal())
        yield work_dir, token_file


def playbook_vars(
    settings: Settings, request: UpdateRequest, job_id: str, work_dir: Path, token_file: Path | None
) -> dict[str, Any]:
    """Every variable of the role compose_update, explicitly (see docs/internals.md). Never the
    token itself: the role reads the token file on the controller (this host)."""
    return {
        "compose_update_project_src": "",
        "compose_update_compose_files": [str(settings.compose_file)],
        "compose_update_project_name": settings.compose_project_name,
        "compose_update_services": list(request.services),
        "compose_update_registry_url": settings.registry_url,
        "compose_update_registry_username": settings.registry_username,
        "compose_update_registry_token_file": str(token_file) if token_file else "",
        "compose_update_registry_token": "",
        "compose_update_run_migrations": request.run_migrations,
        "compose_update_migration_service": settings.migration_service,
        "compose_update_migration_command": settings.migration_command,
        "compose_update_migration_revision_command": settings.migration_revision_command,
        "compose_update_migration_downgrade_command": settings.migration_downgrade_command,
        "compose_update_db_rollback": settings.db_rollback,
        "compose_update_restore_command": settings.restore_command,
        "compose_update_health_timeout": settings.health_timeout,
        "compose_update_job_id": job_id,
        # Free text from a user: marked unsafe, Ansible never templates it
        # (worker/shared/untrusted.py).
        "compose_update_requested_by": ansible_unsafe(request.requested_by or ""),
        "compose_update_work_dir": str(work_dir),
        # Without a BACKUP_COMMAND a backup cannot be made: the update runs without one and
        # says so (the application's UI always asks for one; see backup_not_configured).
        "compose_update_create_backup": request.create_backup and bool(settings.backup_command),
        "compose_update_backup_command": settings.backup_command,
        "compose_update_backup_service": settings.backup_service,
        "compose_update_backup_dir": str(settings.backup_dir),
        "compose_update_rollback_on_migration_failure": settings.rollback_on_migration_failure,
        "compose_update_lock_dir": str(settings.lock_dir),
        "compose_update_lock_max_age": settings.job_timeout,
        "compose_update_hook_timeout": settings.hook_timeout,
        # The worker reads the summary from set_stats; the printed copy is for people.
        "compose_update_show_summary": False,
    }


def fleet_vars(settings: Settings, update_hosts: str) -> dict[str, Any]:
    """The play's fleet variables (issue 24): the hosts (checked names joined by ',', see
    worker/host/inventory.py) and how they are updated in batches."""
    return {
        "update_hosts": update_hosts,
        "update_serial": settings.serial_batches,
        "update_max_fail_percentage": settings.max_fail_percentage,
        "update_batch_pause": settings.batch_pause,
        "update_fleet_rollback": settings.fleet_rollback,
    }


def revert_vars(settings: Settings, request: UpdateRequest, job_id: str) -> dict[str, Any]:
    """The rollback entry point's variables for a revert (no registry, no token: nothing is
    pulled; the images come from the last update's record)."""
    return {
        **rollback_vars(settings, job_id, request.requested_by or ""),
        "compose_update_revert": True,
    }


async def process_system_update(ctx: dict[str, Any], **fields: object) -> dict[str, Any]:
    """Update the configured compose deployment (or, with `revert`, put back the images from
    before the last update that succeeded); return the summary (never raise for a failed
    update: the summary's `status` says so). `fields`: the job's keyword arguments, an
    UpdateRequest's (`UpdateRequest.job_kwargs`), parsed here again: Redis is untrusted."""
    settings: Settings = ctx["settings"]
    job_id: str = ctx.get("job_id") or "local"
    redis = ctx.get("redis")
    if not is_job_id(job_id):
        # UpdateWorker refuses such ids before they get here (worker/host/arq_worker.py); the id
        # would become a playbook variable and a path, so check again.
        logger.warning("job %s refused: invalid job id", loggable(job_id))
        return rejected_summary(
            job_id="invalid",
            message="job refused: invalid job id",
            started_at=now(),
            finished_at=now(),
        ).as_dict()
    try:
        # Cool-down (UPDATE_MIN_INTERVAL, worker/host/cooldown.py); a dry run restarts nothing,
        # and a revert is the way back from a bad release: it does not wait.
        refusal = (
            None
            if redis is None or fields.get("dry_run") is True or fields.get("revert") is True
            else await check_cooldown(redis, settings)
        )
        if refusal is not None:
            logger.warning("job %s refused: %s", job_id, refusal)
            refused = rejected_summary(
                job_id=job_id, message=refusal, started_at=now(), finished_at=now(), step="cooldown"
            ).as_dict()
            return await after_job(ctx, refused)  # notification, history, metrics
        summary = await _update(settings, job_id, redis, fields)
        if redis is not None and fields.get("dry_run") is not True and summary["steps"]:
            await record_update(redis, settings)  # the playbook ran: services may have restarted
        return await after_job(ctx, summary)  # notification, history, metrics (aftermath.py)
    finally:
        # Free the in-flight slot (see inflight.py) whatever happened, also on cancellation.
        if ctx.get("redis") is not None:
            await release(ctx["redis"], settings.queue_name, job_id)


async def _update(
    settings: Settings, job_id: str, redis: Any | None, fields: Mapping[str, object]
) -> dict[str, Any]:
    started_at = now()
    try:
        request = UpdateRequest.parse(fields)
        # The hosts against the inventory as it is now (operators edit it): before anything
        # else looks at the deployment.
        update_hosts = await job_target(settings, request.hosts)
        request = request.resolve(await allowed_services(settings))
    except (InvalidRequest, ComposeError, InventoryError) as exc:
        logger.warning("job %s rejected: %s", job_id, exc)
        step = "validation" if isinstance(exc, InvalidRequest) else "preflight"
        rejected = rejected_summary(
            job_id=job_id, message=str(exc), started_at=started_at, finished_at=now(), step=step
        ).as_dict()
        await ProgressReporter(redis, settings, job_id, None).finish(rejected)
        return rejected

    logger.info(
        "job %s: %s of %s started%s%s",
        job_id,
        "revert" if request.revert else "update",
        ",".join(request.services),
        " (dry run)" if request.dry_run else "",
        f" by {request.requested_by}" if request.requested_by else "",
    )
    progress = ProgressReporter(redis, settings, job_id, request)
    await progress.start()
    rollback: CutOffRollback | None = None
    with job_work_dir(settings) as (work_dir, token_file):
        try:
            outcome = await run_playbook_async(
                PlaybookRun(
                    playbook=settings.rollback_playbook if request.revert else settings.playbook,
                    inventory=settings.inventory,
                    extravars={
                        **(
                            revert_vars(settings, request, job_id)
                            if request.revert
                            else playbook_vars(settings, request, job_id, work_dir, token_file)
                        ),
                        **fleet_vars(settings, update_hosts),
                    },
                    ident=job_id,
                    check_mode=request.dry_run,
                    timeout_s=max(settings.job_timeout - SUMMARY_MARGIN_S, 1),
                ),
                on_event=progress.on_event,
                work_root=work_dir,
            )
        except PlaybookCanceled as canceled:
            # An ARQ abort (or the worker's stop after its grace period): ansible is stopped.
            # The job ends with a `canceled` summary instead of a bare CancelledError.
            uncancel_current_task()
            outcome = canceled.outcome
        # Cut off mid-way, the playbook could not roll back by itself (its rescue never ran):
        # put back the state it recorded before changing anything (worker/host/rollback.py).
        if outcome.status in CUT_OFF and not request.dry_run:
            await progress.step("rollback", "started")
            rollback = await shielded(
                roll_back_cut_off_update(
                    settings, job_id, work_root=work_dir, update_hosts=update_hosts
                )
            )
            status = rollback_step_status(rollback)
            await progress.step("rollback", status.value, rollback.message())
    summary = build_summary(
        job_id=job_id,
        request=request,
        outcome=outcome,
        started_at=started_at,
        finished_at=now(),
        steps=progress.steps,  # fed each event: the progress and the summary read one state
        cut_off=rollback,
        notes=backup_not_configured(settings, request, job_id),
    )
    log_summary(summary)
    result = summary.as_dict()
    await progress.finish(result)
    return result


CUT_OFF = (UpdateStatus.canceled, UpdateStatus.timeout)
# The backup step's message when a backup was asked for and none is configured.
NO_BACKUP_CONFIGURED = "not configured (no BACKUP_COMMAND): the update ran without a backup"


def backup_not_configured(
    settings: Settings, request: UpdateRequest, job_id: str
) -> dict[Step, str]:
    """A backup asked for with no BACKUP_COMMAND configured: the backup step's message says so
    (`backup.ran` is false) and the log warns."""
    if not request.create_backup or settings.backup_command:
        return {}
    logger.warning("job %s: a backup was asked for, but no BACKUP_COMMAND is configured", job_id)
    return {Step.backup: NO_BACKUP_CONFIGURED}


def uncancel_current_task() -> None:
    """Undo the cancel request we are handling, so later awaits (the rollback) run normally."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


async def shielded(coro: Coroutine[Any, Any, CutOffRollback]) -> CutOffRollback:
    """Run `coro` to its end even if this task is canceled meanwhile: a rollback cut off in its
    turn would leave the site as bad as before (its rollback point stays, for the next start)."""
    task = asyncio.ensure_future(coro)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            uncancel_current_task()
            logger.warning("cancel requested during the rollback: the rollback goes on")


def log_summary(summary: Summary) -> None:
    """One line per step, then one line for the job. No secrets: messages come from ansible's
    results, and the login task's are censored (no_log). Step messages carry container output
    (a migration's, a hook's: newlines, ANSI escapes): escaped, one line each; the raw tail
    stays in the result only."""
    for step in summary.steps:
        logger.info(
            "job %s: step %-10s %-7s %6.1fs %s",
            summary.job_id,
            step.name,
            step.status.value,
            step.duration_s,
            escaped(step.message or ""),
        )
    level = logging.INFO if summary.status is UpdateStatus.successful else logging.ERROR
    updated = [name for name, svc in summary.services.items() if svc["updated"]]
    logger.log(
        level,
        "job %s: %s in %.1fs; updated: %s%s",
        summary.job_id,
        summary.status.value,
        (summary.finished_at - summary.started_at).total_seconds(),
        ", ".join(updated) or "none",
        f"; error in {summary.error['step']}: {escaped(summary.error['message'])}"
        if summary.error
        else "",
    )
