"""The ARQ worker: its settings, start-up checks, and the entry point systemd runs.

`arq worker.arq_app.WorkerSettings` works too; `update-executor worker` is the same worker with
friendlier start-up errors.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Worker, func

from .compose import check_host
from .jobs import process_system_update
from .runner import SECRET_ENV_VARS
from .serialization import deserialize, serialize
from .settings import Settings

logger = logging.getLogger("update_executor.worker")

# A finished update's summary stays readable in Redis this long (seconds).
RESULT_TTL_S = 7 * 24 * 3600


class StartupError(RuntimeError):
    """The host lacks something the playbook needs."""


def redis_settings(settings: Settings) -> RedisSettings:
    return RedisSettings(
        host=settings.redis_host,
        port=settings.redis_port,
        database=settings.redis_db,
        password=settings.redis_password.reveal() or None,
    )


def scrub_secret_environ() -> None:
    """Drop secrets from our own environment once the settings hold them, so that no child
    process (ansible, docker) inherits them and ansible-runner cannot copy them to disk."""
    for name in SECRET_ENV_VARS:
        os.environ.pop(name, None)


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    problems = await check_host()
    if problems:
        for problem in problems:
            logger.error("start-up check failed: %s", problem)
        raise StartupError("; ".join(problems))
    logger.info(
        "worker ready: queue %s, compose file %s, registry %s, services %s",
        settings.queue_name,
        settings.compose_file,
        settings.registry_url,
        ",".join(settings.update_services) or f"(every {settings.registry_url} image)",
    )


def worker_kwargs(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for arq's Worker: one update at a time, no retries, JSON only."""
    kwargs: dict[str, Any] = {
        "functions": [
            func(
                process_system_update,
                name="process_system_update",
                max_tries=1,  # an interrupted update is reported, never re-run blindly
                timeout=settings.job_timeout,
                keep_result=RESULT_TTL_S,
            )
        ],
        "queue_name": settings.queue_name,
        "redis_settings": redis_settings(settings),
        "max_jobs": 1,
        "job_timeout": settings.job_timeout,
        "max_tries": 1,
        "keep_result": RESULT_TTL_S,
        "allow_abort_jobs": True,
        "poll_delay": 0.1,
        "health_check_interval": 30,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "on_startup": startup,
        "ctx": {"settings": settings},
    }
    kwargs.update(overrides)
    return kwargs


def create_worker(settings: Settings | None = None, **overrides: Any) -> Worker:
    settings = settings or Settings.from_env()
    scrub_secret_environ()
    return Worker(**worker_kwargs(settings, **overrides))
