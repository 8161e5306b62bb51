"""The ARQ worker assembled: its functions, settings and start-up checks.

`update-executor worker` (worker/host/cli.py, what systemd runs) starts it as UpdateWorker
(worker/host/arq_worker.py); arq's own command line would build arq's Worker without those
checks, and startup() refuses to serve then.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from arq.worker import func

from ..shared.connection import redis_settings
from ..shared.keys import CHECK_RESULT_TTL_S, CHECK_TIMEOUT_S, RESULT_TTL_S
from ..shared.signing import CHECK_FUNCTION, REJECTED_FUNCTION, WorkerJobCodec, secret_key
from .aftermath import recorded_rejected_job, start_reporting, stop_reporting
from .arq_worker import CTX_MARK, UpdateWorker
from .check import recorded_check
from .compose import check_host
from .inventory import inventory_problems, job_target
from .jobs import process_system_update
from .recovery import recover_interrupted_job, remove_stale_job_dirs
from .rollback import record_recovery, roll_back_cut_off_update, rollback_points, rollback_timeout
from .runner import SECRET_ENV_VARS
from .settings import Settings

logger = logging.getLogger("update_executor.worker")

__all__ = ["create_worker", "worker_codec", "worker_kwargs"]


class StartupError(RuntimeError):
    """The host lacks something the playbook needs."""


def worker_codec(settings: Settings) -> WorkerJobCodec:
    """For the ARQ worker: verifies jobs (refused ones become `rejected_job`), signs results."""
    return WorkerJobCodec(
        secret_key(settings),
        max_age_s=settings.job_max_age,
        insecure=settings.insecure_unsigned_jobs,
        result_ttl_s=RESULT_TTL_S,
    )


def check_job_signing(settings: Settings) -> None:
    """No secret, no worker: unless started with --insecure-unsigned-jobs (warned every time)."""
    if settings.job_secret:
        return
    if not settings.insecure_unsigned_jobs:
        raise StartupError(
            "no job secret: set UPDATE_JOB_SECRET_FILE (or UPDATE_JOB_SECRET, or the systemd "
            "credential job_secret) to the secret the API signs jobs with; "
            "`update-executor worker --insecure-unsigned-jobs` runs unsigned jobs instead"
        )
    logging.getLogger("update_executor.security").warning(
        "INSECURE: started with --insecure-unsigned-jobs and no UPDATE_JOB_SECRET: any client "
        "that can write to Redis can order an update; set a job secret"
    )


def scrub_secret_environ() -> None:
    """Drop secrets from our own environment once the settings hold them, so that no child
    process (ansible, docker) inherits them and ansible-runner cannot copy them to disk."""
    for name in SECRET_ENV_VARS:
        os.environ.pop(name, None)


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    check_job_signing(settings)
    if not ctx.get(CTX_MARK):
        # arq's own Worker (built from worker_kwargs by other code) lacks the checks of
        # worker/host/arq_worker.py: job ids, replay across restarts, signed cancel requests.
        raise StartupError("run the worker with `update-executor worker` (UpdateWorker)")
    problems = settings.missing_ansible_content()
    # The inventory parses, and has the group a job without hosts updates
    # (worker/host/inventory.py); parsed again for each job.
    problems += [] if problems else await asyncio.to_thread(inventory_problems, settings)
    problems += await check_host()
    if problems:
        for problem in problems:
            logger.error("start-up check failed: %s", problem)
        raise StartupError("; ".join(problems))
    interrupted = await recover_interrupted_job(ctx["redis"], settings.queue_name)
    if interrupted is not None or rollback_points(settings):
        # An update cut off with the previous worker (or a manual run): put back the state it
        # recorded before changing anything, before serving jobs (worker/host/rollback.py).
        # On the default hosts: the interrupted job's own `hosts` are not known any more.
        rollback = await roll_back_cut_off_update(
            settings, interrupted or "worker-start", update_hosts=await job_target(settings, ())
        )
        if interrupted is not None:
            await record_recovery(
                ctx["redis"],
                settings,
                interrupted,
                rollback,
                seal=worker_codec(settings).serialize,
                ttl_s=RESULT_TTL_S,
            )
    remove_stale_job_dirs()
    await start_reporting(ctx)  # metrics endpoint/textfile (worker/host/aftermath.py)
    logger.info(
        "worker ready: queue %s, compose file %s, registry %s (%s), services %s",
        settings.queue_name,
        settings.compose_file,
        settings.registry_url,
        f"login as {settings.registry_username}"
        if settings.has_registry_token
        else "no token: anonymous pulls",
        ",".join(settings.update_services) or f"(every {settings.registry_url} image)",
    )


def worker_kwargs(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for arq's Worker: one update at a time, no retries, JSON only."""
    codec: WorkerJobCodec = worker_codec(settings)
    kwargs: dict[str, Any] = {
        "functions": [
            func(
                process_system_update,
                name="process_system_update",
                max_tries=1,  # an interrupted update is reported, never re-run blindly
                # The playbook stops at JOB_TIMEOUT; then the rollback of what it changed runs.
                timeout=settings.job_timeout + rollback_timeout(settings),
                keep_result=RESULT_TTL_S,
            ),
            # Stand-in for a job the deserializer refused (worker/shared/signing.py).
            func(
                recorded_rejected_job, name=REJECTED_FUNCTION, max_tries=1, keep_result=RESULT_TTL_S
            ),
            # Read-only registry check (worker/host/check.py); its result is also cached in Redis.
            func(
                recorded_check,  # check_for_updates, then its history record and metrics
                name=CHECK_FUNCTION,
                max_tries=1,
                timeout=CHECK_TIMEOUT_S,
                keep_result=CHECK_RESULT_TTL_S,
            ),
        ],
        "queue_name": settings.queue_name,
        "redis_settings": redis_settings(settings),
        "max_jobs": 1,
        "job_timeout": settings.job_timeout + rollback_timeout(settings),
        "max_tries": 1,
        "keep_result": RESULT_TTL_S,
        # ARQ's abort is an unauthenticated sorted set: off; a job is canceled only on a
        # signed cancel request (worker/shared/cancel.py, worker/host/arq_worker.py).
        "allow_abort_jobs": False,
        # SIGTERM (systemctl stop) lets a running update finish instead of cutting compose
        # off mid-recreate; it is canceled only after this grace period.
        "job_completion_wait": settings.stop_grace_period,
        # How often the idle worker looks at the queue (WORKER_POLL_DELAY, docs/operations.md).
        "poll_delay": settings.poll_delay,
        "health_check_interval": 30,
        # Signed JSON both ways (worker/shared/signing.py); never pickle.
        "job_serializer": codec.serialize,
        "job_deserializer": codec.deserialize,
        "on_startup": startup,
        "on_shutdown": stop_reporting,
        "ctx": {"settings": settings},
        "codec": codec,
    }
    kwargs.update(overrides)
    return kwargs


def create_worker(settings: Settings | None = None, **overrides: Any) -> UpdateWorker:
    settings = settings or Settings.from_env()
    scrub_secret_environ()
    kwargs = worker_kwargs(settings, **overrides)
    codec = kwargs.pop("codec")
    return UpdateWorker(codec=codec, **kwargs)
