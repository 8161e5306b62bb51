"""The worker's configuration: one typed object read from the environment.

`Settings` extends the API side's `ClientSettings` (worker/shared/settings.py: Redis, the
queue, the job secret), read by the same `EnvReader`. The compose file, the registry and the
allowed services come from here only, never from a job.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..shared.keys import MAX_JOB_TIMEOUT_S
from ..shared.settings import (
    DEFAULT_QUEUE_NAME,
    ClientSettings,
    ConfigError,
    EnvReader,
    Secret,
    client_values,
)

__all__ = ["DEFAULT_QUEUE_NAME", "ConfigError", "Secret", "Settings"]

DEFAULT_LOG_FILE = "/var/log/update-executor.log"
# The checkout this module sits in, when it runs from one (editable install, tests).
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


def _ansible_content_root() -> Path:
    """Where ansible.cfg, playbooks/ and inventory/ are: inside the package when it was
    installed from a wheel (pyproject.toml maps them to worker/ansible_content/), else at the
    root of the checkout."""
    packaged = Path(__file__).resolve().parent.parent / "ansible_content"
    return packaged if (packaged / "playbooks").is_dir() else PROJECT_ROOT


ANSIBLE_CONTENT = _ansible_content_root()
ANSIBLE_CONFIG = ANSIBLE_CONTENT / "ansible.cfg"

# systemd's LoadCredential= puts credentials in $CREDENTIALS_DIRECTORY/<name>.
CREDENTIAL_NAME = "github_token"
NOTIFY_URLS_CREDENTIAL = "notify_urls"
# The host's copy of the update history, when HISTORY_FILE is not set and this directory
# exists (the systemd unit's StateDirectory=); elsewhere the history is kept in Redis only.
DEFAULT_STATE_DIR = Path("/var/lib/update-executor")
NOTIFY_ON_CHOICES = ("failure", "always")
DB_ROLLBACK_CHOICES = ("", "downgrade", "downgrade-then-restore", "off")
# The worker's secrets: never handed to compose, even when named in COMPOSE_ENV_PASSTHROUGH.
NEVER_PASSED_TO_COMPOSE = ("GITHUB_TOKEN", "REDIS_QUEUE_PASSWORD", "UPDATE_JOB_SECRET")


@dataclass(frozen=True)
class Settings(ClientSettings):
    """Everything the worker needs, with the defaults documented in README; the fields of
    ClientSettings (Redis, queue, job secret) come first."""

    compose_file: Path = Path("./docker-compose.prod.yml")
    compose_project_name: str = ""
    # Variables of the worker's environment docker compose gets besides an operator shell's
    # base (COMPOSE_ENV_PASSTHROUGH; read by the role's module_utils/update_executor_env.py).
    compose_env_passthrough: tuple[str, ...] = ()
    registry_url: str = "ghcr.io"
    registry_username: str = ""
    # Path of the file holding the registry token, when the token comes from a file.
    registry_token_file: Path | None = None
    # The token itself when it only came from GITHUB_TOKEN (a fallback).
    registry_token: Secret = field(default_factory=lambda: Secret(""))
    # Empty: every service whose image comes from registry_url (resolved per job).
    update_services: tuple[str, ...] = ()
    migration_service: str = "api"
    migration_command: str = "alembic upgrade head"
    # The database's rollback (issue 23; docs/operations.md): "" DB_ROLLBACK = downgrade when
    # the revision command answers; RESTORE_COMMAND is fed the backup (downgrade-then-restore).
    migration_revision_command: str = "alembic current"
    migration_downgrade_command: str = "alembic downgrade"
    db_rollback: str = ""
    restore_command: str = ""
    health_timeout: int = 300
    # Seconds a lifecycle hook may run when its service has no update-executor.timeout label.
    hook_timeout: int = 300
    job_timeout: int = 1800
    # On SIGTERM a running update may finish for this long before it is canceled; keep it
    # below the systemd unit's TimeoutStopSec.
    stop_grace_period: int = 110
    # Seconds between two looks of the idle worker at the queue (ARQ's poll_delay): the
    # enqueue -> job start latency is about half of it, each look is one Redis command.
    poll_delay: float = 0.05
    log_file: Path | None = None
    # Seconds between the end of an update and the start of the next (worker/host/cooldown.py).
    min_interval: int = 60
    # create_backup=true runs this (no shell) in backup_service; stdout goes to backup_dir.
    backup_command: str = ""
    backup_service: str = "db"
    backup_dir: Path = Path("/var/lib/update-executor/backups")
    rollback_on_migration_failure: bool = True
    # Where the per-project update lock and the rollback point of a running update live
    # (shared with manual ansible-playbook runs). On disk, not in /run: a rollback point must
    # survive a reboot in the middle of an update; a lock from before a reboot is stale.
    lock_dir: Path = Path("/var/lib/update-executor/locks")
    # Set by `update-executor worker --insecure-unsigned-jobs` only, never from the environment.
    insecure_unsigned_jobs: bool = False
    playbook: Path = ANSIBLE_CONTENT / "playbooks" / "update.yml"
    inventory: Path = ANSIBLE_CONTENT / "inventory" / "localhost"
    # Notifications (worker/host/notify.py): Apprise URLs, which carry tokens, so a Secret.
    notify_urls: Secret = field(default_factory=lambda: Secret(""))
    notify_on: str = "failure"
    notify_timeout: float = 15.0
    # Jobs refused for their signature or format are reported together, at most once per
    # this many seconds (worker/host/refusals.py).
    refusal_report_interval: int = 600
    # Update history (worker/host/history.py): the host's JSON Lines copy (None: Redis only).
    history_file: Path | None = None
    history_max_bytes: int = 10 * 1024 * 1024
    # Metrics (worker/host/metrics.py): a loopback HTTP endpoint and/or a node-exporter textfile.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_textfile: Path | None = None

    @property
    def rollback_playbook(self) -> Path:
        return self.playbook.parent / "rollback.yml"

    def missing_ansible_content(self) -> list[str]:
        """The playbooks, inventory and ansible.cfg the worker runs, when one is not there."""
        wanted = {
            "playbook (UPDATE_PLAYBOOK)": self.playbook,
            "rollback playbook (next to UPDATE_PLAYBOOK)": self.rollback_playbook,
            "inventory (UPDATE_INVENTORY)": self.inventory,
            "ansible.cfg": ANSIBLE_CONFIG,
        }
        return [
            f"the {what} {path} does not exist: reinstall update-executor (the wheel carries "
            "them in worker/ansible_content/) or run it from a checkout"
            for what, path in wanted.items()
            if not path.is_file()
        ]

    @property
    def has_registry_token(self) -> bool:
        return self.registry_token_file is not None or bool(self.registry_token)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from the environment; raise ConfigError with every problem found."""
        env = os.environ if environ is None else environ
        reader = EnvReader(env)
        client = client_values(reader)
        problems = reader.problems
        text, integer, decimal = reader.text, reader.integer, reader.decimal

        passthrough = reader.names("COMPOSE_ENV_PASSTHROUGH")
        for name in passthrough:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                problems.append(f"COMPOSE_ENV_PASSTHROUGH: {name!r} is not a variable name")
            elif name in NEVER_PASSED_TO_COMPOSE:
                problems.append(
                    f"COMPOSE_ENV_PASSTHROUGH: {name} is a secret of the worker's and is never "
                    "passed to compose; put what the containers need in the project's .env"
                )
        token_file, token = _registry_token(env, problems)
        health_timeout = integer("HEALTH_TIMEOUT", 300, 1, 86400)
        job_timeout = integer("JOB_TIMEOUT", 1800, 60, MAX_JOB_TIMEOUT_S)
        if job_timeout <= health_timeout:
            problems.append(
                f"JOB_TIMEOUT ({job_timeout}) must be longer than HEALTH_TIMEOUT ({health_timeout})"
            )

        notify_on = text("NOTIFY_ON", "failure").lower()
        if notify_on not in NOTIFY_ON_CHOICES:
            problems.append(f"NOTIFY_ON must be failure or always, got {notify_on!r}")
        metrics_textfile = env.get("METRICS_TEXTFILE", "").strip()
        db_rollback = text("DB_ROLLBACK", "").lower()
        if db_rollback not in DB_ROLLBACK_CHOICES:
            problems.append(
                f"DB_ROLLBACK must be one of {DB_ROLLBACK_CHOICES}, got {db_rollback!r}"
            )

        settings = cls(
            **client,
            compose_file=reader.path("COMPOSE_FILE_PATH", "./docker-compose.prod.yml"),
            compose_project_name=text("COMPOSE_PROJECT_NAME", ""),
            compose_env_passthrough=passthrough,
            registry_url=text("REGISTRY_URL", "ghcr.io").rstrip("/"),
            registry_username=text("REGISTRY_USERNAME", ""),
            registry_token_file=token_file,
            registry_token=token,
            update_services=reader.names("UPDATE_SERVICES"),
            migration_service=text("MIGRATION_SERVICE", "api"),
            migration_command=text("MIGRATION_COMMAND", "alembic upgrade head"),
            migration_revision_command=text("MIGRATION_REVISION_COMMAND", "alembic current"),
            migration_downgrade_command=text("MIGRATION_DOWNGRADE_COMMAND", "alembic downgrade"),
            db_rollback=db_rollback,
            restore_command=text("RESTORE_COMMAND", ""),
            health_timeout=health_timeout,
            hook_timeout=integer("HOOK_TIMEOUT", 300, 1, 86400),
            job_timeout=job_timeout,
            stop_grace_period=integer("STOP_GRACE_PERIOD", 110, 0, 86400),
            poll_delay=decimal("WORKER_POLL_DELAY", 0.05, 0.005, 5.0),
            log_file=_log_file(env.get("LOG_FILE")),
            min_interval=integer("UPDATE_MIN_INTERVAL", 60, 0, 86400),
            backup_command=text("BACKUP_COMMAND", ""),
            backup_service=text("BACKUP_SERVICE", "db"),
            backup_dir=reader.path("BACKUP_DIR", cls.backup_dir),
            rollback_on_migration_failure=reader.boolean("ROLLBACK_ON_MIGRATION_FAILURE", True),
            lock_dir=reader.path("UPDATE_LOCK_DIR", cls.lock_dir),
            playbook=reader.path("UPDATE_PLAYBOOK", cls.playbook),
            inventory=reader.path("UPDATE_INVENTORY", cls.inventory),
            notify_urls=reader.secret("NOTIFY_URLS", NOTIFY_URLS_CREDENTIAL),
            notify_on=notify_on,
            notify_timeout=decimal("NOTIFY_TIMEOUT", 15.0, 1.0, 300.0),
            refusal_report_interval=integer("REFUSAL_REPORT_INTERVAL", 600, 1, 86400),
            history_file=_history_file(env),
            history_max_bytes=integer("HISTORY_MAX_BYTES", 10 * 1024 * 1024, 4096, 2**40),
            metrics_port=integer("METRICS_PORT", 0, 0, 65535) or None,
            metrics_host=text("METRICS_HOST", "127.0.0.1"),
            metrics_textfile=Path(metrics_textfile).absolute() if metrics_textfile else None,
        )
        if settings.has_registry_token and not settings.registry_username:
            problems.append("REGISTRY_USERNAME is required when a registry token is configured")
        reader.check()
        return settings


def _registry_token(env: Mapping[str, str], problems: list[str]) -> tuple[Path | None, Secret]:
    """Where the token comes from, in order of preference: a file, systemd, the variable.

    A file is preferred because the worker then hands only its path to the playbook. A blank
    systemd credential is no token: the unit's `SetCredential=github_token:\\n` stands in for
    a token file that does not exist (a registry that needs none), and an empty file says the
    same. A blank GITHUB_TOKEN_FILE is refused: naming a file says a token is expected.
    """
    path = env.get("GITHUB_TOKEN_FILE", "").strip()
    if not path and env.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME
        if candidate.is_file() and not _blank(candidate):
            path = str(candidate)
    if path:
        token_path = Path(path).absolute()
        try:
            readable = bool(token_path.read_text().strip())
        except OSError as exc:
            problems.append(f"GITHUB_TOKEN_FILE {token_path} cannot be read: {exc.strerror}")
        else:
            if not readable:
                problems.append(f"GITHUB_TOKEN_FILE {token_path} is empty")
        return token_path, Secret("")
    return None, Secret(env.get("GITHUB_TOKEN", "").strip())


def _blank(path: Path) -> bool:
    """True for a file holding only whitespace (an unreadable one is reported by the caller)."""
    try:
        return not path.read_text().strip()
    except OSError:
        return False


def _history_file(env: Mapping[str, str]) -> Path | None:
    """HISTORY_FILE when set ("" or "-": no file), else history.jsonl in systemd's
    STATE_DIRECTORY or the default state directory when it exists."""
    if "HISTORY_FILE" in env:
        configured = env["HISTORY_FILE"].strip()
        return None if configured in ("", "-") else Path(configured).absolute()
    state = env.get("STATE_DIRECTORY", "").split(":")[0].strip()
    directory = Path(state) if state else DEFAULT_STATE_DIR
    return directory / "history.jsonl" if directory.is_dir() else None


def _log_file(configured: str | None) -> Path | None:
    """LOG_FILE when set ("" or "-" means stdout only), else the default when writable."""
    if configured is not None:
        configured = configured.strip()
        return None if configured in ("", "-") else Path(configured)
    default = Path(DEFAULT_LOG_FILE)
    target = default if default.exists() else default.parent
    writable = os.access(target, os.W_OK)
    return default if writable else None
