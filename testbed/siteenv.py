"""The worker's configuration for a site on the bed, as an operator writes its EnvironmentFile.

One builder for the tests, the demo and the real-shaped site: the bed's Redis and registry,
and what the caller gives. Settings given as None are left out (the worker's default applies);
the caller adds what else its process needs (os.environ, the bed's DOCKER_HOST).
"""

from __future__ import annotations

from pathlib import Path

from testbed.stack import Stack


def site_environment(
    stack: Stack,
    *,
    queue: str | None = None,
    compose_file: Path | None = None,
    project: str | None = None,
    token_file: Path | None = None,
    job_secret_file: Path | None = None,
    lock_dir: Path | None = None,
    migration_command: str | None = None,
    health_timeout: int | None = 60,
    job_timeout: int | None = None,
    log_file: str | None = "",
    min_interval: int | None = 0,
    **extra: str,
) -> dict[str, str]:
    """REDIS_QUEUE_*, REGISTRY_* and the given settings as environment variables; `extra`
    (e.g. GITHUB_TOKEN="...") is added as it is. A test bed updates back to back: no cool-down
    unless `min_interval` says otherwise."""
    values: dict[str, object | None] = {
        "REDIS_QUEUE_HOST": stack.redis_host,
        "REDIS_QUEUE_PORT": stack.redis_port,
        "UPDATE_QUEUE_NAME": queue,
        "COMPOSE_FILE_PATH": compose_file,
        "COMPOSE_PROJECT_NAME": project,
        "REGISTRY_URL": stack.registry,
        "REGISTRY_USERNAME": stack.registry_username,
        "GITHUB_TOKEN_FILE": token_file,
        "UPDATE_JOB_SECRET_FILE": job_secret_file,
        "UPDATE_LOCK_DIR": lock_dir,
        "MIGRATION_COMMAND": migration_command,
        "HEALTH_TIMEOUT": health_timeout,
        "JOB_TIMEOUT": job_timeout,
        "LOG_FILE": log_file,
        "UPDATE_MIN_INTERVAL": min_interval,
    }
    env = {name: str(value) for name, value in values.items() if value is not None}
    return {**env, **extra}


def playbook_environment(
    stack: Stack, *, compose_file: Path, project: str, token_file: Path, lock_dir: Path
) -> dict[str, str]:
    """The settings of a test image's site (`/app/migrate` its migration) for a playbook run
    by hand: those `testbed.faults.operator_inventory` turns into role variables, and none of
    the worker's own (log file, cool-down)."""
    return site_environment(
        stack,
        compose_file=compose_file,
        project=project,
        token_file=token_file,
        lock_dir=lock_dir,
        migration_command="/app/migrate",
        log_file=None,
        min_interval=None,
    )
