"""The worker's configuration: one typed object read from the environment.

The compose file, the registry and the allowed services come from here only, never from a job.
Secrets are wrapped in :class:`Secret` so that no repr, log line or summary can show them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_QUEUE_NAME = "update-executor:queue"
# ARQ's default queue, used by the application's own in-container workers: never ours.
ARQ_DEFAULT_QUEUE_NAME = "arq:queue"
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
JOB_SECRET_CREDENTIAL = "job_secret"  # noqa: S105 (a file name, not a secret)
REDIS_PASSWORD_CREDENTIAL = "redis_password"  # noqa: S105
NOTIFY_URLS_CREDENTIAL = "notify_urls"
# The host's copy of the update history, when HISTORY_FILE is not set and this directory
# exists (the systemd unit's StateDirectory=); elsewhere the history is kept in Redis only.
DEFAULT_STATE_DIR = Path("/var/lib/update-executor")
NOTIFY_ON_CHOICES = ("failure", "always")
# Shortest job secret accepted: `openssl rand -hex 32` gives 64 characters.
MIN_JOB_SECRET_LENGTH = 32
# The worker's secrets: never handed to compose, even when named in COMPOSE_ENV_PASSTHROUGH.
NEVER_PASSED_TO_COMPOSE = ("GITHUB_TOKEN", "REDIS_QUEUE_PASSWORD", "UPDATE_JOB_SECRET")


class ConfigError(ValueError):
    """The environment does not describe a usable configuration."""


class Secret:
    """A string that never shows itself in repr, str or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    """Everything the worker and the client need, with the defaults documented in README."""

    redis_host: str = "localhost"
    redis_port: int = 6379
    redis_db: int = 0
    redis_password: Secret = field(default_factory=lambda: Secret(""))
    # Redis ACL user (AUTH username password); empty: the default user.
    redis_username: str = ""
    redis_ssl: bool = False
    redis_ssl_ca_file: Path | None = None  # CA bundle that signed the server's certificate
    redis_ssl_cert_file: Path | None = None  # client certificate, when Redis asks for one
    redis_ssl_key_file: Path | None = None
    queue_name: str = DEFAULT_QUEUE_NAME
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
    # HMAC-SHA256 key that jobs and results are signed with (see worker/signing.py).
    job_secret: Secret = field(default_factory=lambda: Secret(""))
    # A job is refused when it starts more than this many seconds after it was enqueued.
    job_max_age: int = 900
    # Seconds between the end of an update and the start of the next (worker/cooldown.py).
    min_interval: int = 60
    # create_backup=true runs this (no shell) in backup_service; stdout goes to backup_dir.
    backup_command: str = ""
    backup_service: str = "db"
    backup_dir: Path = Path("/var/lib/update-executor/backups")
    rollback_on_migration_failure: bool = True
    # Where the per-project update lock lives (shared with manual ansible-playbook runs).
    lock_dir: Path = Path("/run/update-executor")
    # Set by `update-executor worker --insecure-unsigned-jobs` only, never from the environment.
    insecure_unsigned_jobs: bool = False
    playbook: Path = ANSIBLE_CONTENT / "playbooks" / "update.yml"
    inventory: Path = ANSIBLE_CONTENT / "inventory" / "localhost"
    # Notifications (worker/notify.py): Apprise URLs, which carry tokens, so a Secret.
    notify_urls: Secret = field(default_factory=lambda: Secret(""))
    notify_on: str = "failure"
    notify_timeout: float = 15.0
    # Update history (worker/history.py): the host's JSON Lines copy (None: Redis only).
    history_file: Path | None = None
    history_max_bytes: int = 10 * 1024 * 1024
    # Metrics (worker/metrics.py): a loopback HTTP endpoint and/or a node-exporter textfile.
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
        problems: list[str] = []

        def text(name: str, default: str) -> str:
            return env.get(name, "").strip() or default

        def integer(name: str, default: int, minimum: int = 0, maximum: int = 2**31) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                problems.append(f"{name} must be an integer, got {raw!r}")
                return default
            if not minimum <= value <= maximum:
                problems.append(f"{name} must be between {minimum} and {maximum}, got {value}")
            return value

        def decimal(name: str, default: float, minimum: float, maximum: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                problems.append(f"{name} must be a number of seconds, got {raw!r}")
                return default
            if not minimum <= value <= maximum:  # also refuses nan and inf
                problems.append(f"{name} must be between {minimum} and {maximum}, got {raw}")
                return default
            return value

        def boolean(name: str, default: bool) -> bool:
            raw = env.get(name, "").strip().lower()
            if not raw:
                return default
            if raw in ("1", "true", "yes", "on"):
                return True
            if raw in ("0", "false", "no", "off"):
                return False
            problems.append(f"{name} must be true or false, got {raw!r}")
            return default

        def readable_file(name: str) -> Path | None:
            raw = env.get(name, "").strip()
            if not raw:
                return None
            path = Path(raw).absolute()
            if not os.access(path, os.R_OK):
                problems.append(f"{name} {path} cannot be read")
            return path

        redis_ssl = boolean("REDIS_QUEUE_SSL", False)
        redis_ssl_files = {
            name: readable_file(name)
            for name in (
                "REDIS_QUEUE_SSL_CA_FILE",
                "REDIS_QUEUE_SSL_CERT_FILE",
                "REDIS_QUEUE_SSL_KEY_FILE",
            )
        }
        if not redis_ssl and any(redis_ssl_files.values()):
            problems.append("REDIS_QUEUE_SSL_*_FILE is set but REDIS_QUEUE_SSL is not true")
        if bool(redis_ssl_files["REDIS_QUEUE_SSL_CERT_FILE"]) != bool(
            redis_ssl_files["REDIS_QUEUE_SSL_KEY_FILE"]
        ):
            problems.append("REDIS_QUEUE_SSL_CERT_FILE and REDIS_QUEUE_SSL_KEY_FILE go together")
        redis_password = _secret(
            env, problems, "REDIS_QUEUE_PASSWORD", REDIS_PASSWORD_CREDENTIAL, strip=False
        )
        job_secret = _secret(env, problems, "UPDATE_JOB_SECRET", JOB_SECRET_CREDENTIAL)
        if job_secret and len(job_secret.reveal()) < MIN_JOB_SECRET_LENGTH:
            problems.append(
                f"UPDATE_JOB_SECRET must be at least {MIN_JOB_SECRET_LENGTH} characters "
                "(generate one with `openssl rand -hex 32`)"
            )

        queue_name = text("UPDATE_QUEUE_NAME", DEFAULT_QUEUE_NAME)
        if queue_name == ARQ_DEFAULT_QUEUE_NAME:
            problems.append(
                f"UPDATE_QUEUE_NAME must not be ARQ's default {ARQ_DEFAULT_QUEUE_NAME!r}: the "
                "application's own workers take jobs from it and would fail the update job"
            )

        services = tuple(s.strip() for s in env.get("UPDATE_SERVICES", "").split(",") if s.strip())
        passthrough = tuple(
            s.strip() for s in env.get("COMPOSE_ENV_PASSTHROUGH", "").split(",") if s.strip()
        )
        for name in passthrough:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                problems.append(f"COMPOSE_ENV_PASSTHROUGH: {name!r} is not a variable name")
            elif name in NEVER_PASSED_TO_COMPOSE:
                problems.append(
                    f"COMPOSE_ENV_PASSTHROUGH: {name} is a secret of the worker's and is never "
                    "passed to compose; put what the containers need in the project's .env"
                )
        token_file, token = _registry_token(env, problems)
        health_timeout = integer("HEALTH_TIMEOUT", 300, 1, 86400)
        job_timeout = integer("JOB_TIMEOUT", 1800, 60, 86400)
        if job_timeout <= health_timeout:
            problems.append(
                f"JOB_TIMEOUT ({job_timeout}) must be longer than HEALTH_TIMEOUT ({health_timeout})"
            )

        notify_on = text("NOTIFY_ON", "failure").lower()
        if notify_on not in NOTIFY_ON_CHOICES:
            problems.append(f"NOTIFY_ON must be failure or always, got {notify_on!r}")
        metrics_textfile = env.get("METRICS_TEXTFILE", "").strip()

        settings = cls(
            redis_host=text("REDIS_QUEUE_HOST", "localhost"),
            redis_port=integer("REDIS_QUEUE_PORT", 6379, 1, 65535),
            redis_db=integer("REDIS_QUEUE_DB", 0, 0, 1024),
            redis_password=redis_password,
            redis_username=text("REDIS_QUEUE_USERNAME", ""),
            redis_ssl=redis_ssl,
            redis_ssl_ca_file=redis_ssl_files["REDIS_QUEUE_SSL_CA_FILE"],
            redis_ssl_cert_file=redis_ssl_files["REDIS_QUEUE_SSL_CERT_FILE"],
            redis_ssl_key_file=redis_ssl_files["REDIS_QUEUE_SSL_KEY_FILE"],
            queue_name=queue_name,
            compose_file=Path(text("COMPOSE_FILE_PATH", "./docker-compose.prod.yml")).absolute(),
            compose_project_name=text("COMPOSE_PROJECT_NAME", ""),
            compose_env_passthrough=passthrough,
            registry_url=text("REGISTRY_URL", "ghcr.io").rstrip("/"),
            registry_username=text("REGISTRY_USERNAME", ""),
            registry_token_file=token_file,
            registry_token=token,
            update_services=services,
            migration_service=text("MIGRATION_SERVICE", "api"),
            migration_command=text("MIGRATION_COMMAND", "alembic upgrade head"),
            health_timeout=health_timeout,
            hook_timeout=integer("HOOK_TIMEOUT", 300, 1, 86400),
            job_timeout=job_timeout,
            stop_grace_period=integer("STOP_GRACE_PERIOD", 110, 0, 86400),
            poll_delay=decimal("WORKER_POLL_DELAY", 0.05, 0.005, 5.0),
            log_file=_log_file(env.get("LOG_FILE")),
            job_secret=job_secret,
            job_max_age=integer("UPDATE_JOB_MAX_AGE", 900, 10, 86400),
            min_interval=integer("UPDATE_MIN_INTERVAL", 60, 0, 86400),
            backup_command=text("BACKUP_COMMAND", ""),
            backup_service=text("BACKUP_SERVICE", "db"),
            backup_dir=Path(text("BACKUP_DIR", str(cls.backup_dir))).absolute(),
            rollback_on_migration_failure=text("ROLLBACK_ON_MIGRATION_FAILURE", "true").lower()
            not in ("false", "0", "no", "off"),
            lock_dir=Path(text("UPDATE_LOCK_DIR", "/run/update-executor")).absolute(),
            playbook=Path(text("UPDATE_PLAYBOOK", str(cls.playbook))).absolute(),
            inventory=Path(text("UPDATE_INVENTORY", str(cls.inventory))).absolute(),
            notify_urls=_secret(env, problems, "NOTIFY_URLS", NOTIFY_URLS_CREDENTIAL),
            notify_on=notify_on,
            notify_timeout=decimal("NOTIFY_TIMEOUT", 15.0, 1.0, 300.0),
            history_file=_history_file(env),
            history_max_bytes=integer("HISTORY_MAX_BYTES", 10 * 1024 * 1024, 4096, 2**40),
            metrics_port=integer("METRICS_PORT", 0, 0, 65535) or None,
            metrics_host=text("METRICS_HOST", "127.0.0.1"),
            metrics_textfile=Path(metrics_textfile).absolute() if metrics_textfile else None,
        )
        if settings.has_registry_token and not settings.registry_username:
            problems.append("REGISTRY_USERNAME is required when a registry token is configured")
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))
        return settings


def _registry_token(env: Mapping[str, str], problems: list[str]) -> tuple[Path | None, Secret]:
    """Where the token comes from, in order of preference: a file, systemd, the variable.

    A file is preferred because the worker then hands only its path to the playbook.
    """
    path = env.get("GITHUB_TOKEN_FILE", "").strip()
    if not path and env.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME
        if candidate.is_file():
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


def _secret(
    env: Mapping[str, str], problems: list[str], name: str, credential: str, *, strip: bool = True
) -> Secret:
    """A secret from, in order of preference: the file `<name>_FILE`, systemd's credentials
    directory (`LoadCredential=<credential>:...`), the variable `<name>` itself."""
    path = env.get(f"{name}_FILE", "").strip()
    if not path and env.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(env["CREDENTIALS_DIRECTORY"]) / credential
        if candidate.is_file():
            path = str(candidate)
    if path:
        try:
            value = Path(path).read_text()
        except OSError as exc:
            problems.append(f"{name}_FILE {Path(path).absolute()} cannot be read: {exc.strerror}")
            return Secret("")
        value = value.strip() if strip else value.rstrip("\r\n")
        if not value:
            problems.append(f"{name}_FILE {Path(path).absolute()} is empty")
        return Secret(value)
    value = env.get(name, "")
    return Secret(value.strip() if strip else value)


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
