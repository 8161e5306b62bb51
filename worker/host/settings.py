"""The worker's configuration: one typed object read from the environment.

`Settings` extends the API side's `ClientSettings` (worker/shared/settings.py: Redis, the
queue, the job secret, and how the environment is read: `from_env`). Each setting is one
field: type, default, bounds, variable and description. The compose file, the registry and
the allowed services come from here only, never from a job.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from ..shared.keys import MAX_JOB_TIMEOUT_S
from ..shared.request import HOST_NAME
from ..shared.settings import (
    DEFAULT_QUEUE_NAME,
    AbsolutePath,
    ClientSettings,
    CommaList,
    ConfigError,
    Credential,
    Flag,
    Secret,
    WhenUnset,
    comma_list,
)

__all__ = ["DEFAULT_QUEUE_NAME", "ConfigError", "Secret", "Settings"]

DEFAULT_LOG_FILE = "/var/log/update-executor.log"
# The inventory group a job without `hosts` updates (UPDATE_HOSTS_GROUP's default).
DEFAULT_HOSTS_GROUP = "update_hosts"
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
# The worker's secrets: never handed to compose, even when named in COMPOSE_ENV_PASSTHROUGH.
NEVER_PASSED_TO_COMPOSE = ("GITHUB_TOKEN", "REDIS_QUEUE_PASSWORD", "UPDATE_JOB_SECRET")


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else path.absolute()


def _variable_name(name: str) -> str:
    """One name of COMPOSE_ENV_PASSTHROUGH."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"{name!r} is not a variable name")
    if name in NEVER_PASSED_TO_COMPOSE:
        raise ValueError(
            f"{name} is a secret of the worker's and is never passed to compose; put what the "
            "containers need in the project's .env"
        )
    return name


def _none_when_off(value: object) -> object:
    """An empty value or "-" means none (LOG_FILE, HISTORY_FILE)."""
    return None if isinstance(value, str) and value.strip() in ("", "-") else value


def _log_file(environ: Mapping[str, str]) -> Path | None:
    """The default when writable, else none."""
    default = Path(DEFAULT_LOG_FILE)
    target = default if default.exists() else default.parent
    return default if os.access(target, os.W_OK) else None


def _history_file(environ: Mapping[str, str]) -> Path | None:
    """history.jsonl in systemd's STATE_DIRECTORY, or in the default state directory when it
    exists."""
    state = environ.get("STATE_DIRECTORY", "").split(":")[0].strip()
    directory = Path(state) if state else DEFAULT_STATE_DIR
    return directory / "history.jsonl" if directory.is_dir() else None


# One batch of UPDATE_SERIAL: a number of hosts or a percentage of them (Ansible's `serial`).
SERIAL_ITEM = re.compile(r"(?P<count>[1-9][0-9]{0,4})(?P<percent>%?)")
MAX_SERIAL_ITEMS = 16


def parse_serial(text: str) -> list[int | str]:
    """UPDATE_SERIAL as the play's `serial` list: `1,50%` -> [1, "50%"]; empty -> [] (every
    host in one batch). Each item a number of hosts (1-99999) or a percentage (1%-100%)."""
    text = text.strip()
    if not text:
        return []
    items = [item.strip() for item in text.split(",")]
    if len(items) > MAX_SERIAL_ITEMS:
        raise ValueError(f"at most {MAX_SERIAL_ITEMS} batch sizes")
    batches: list[int | str] = []
    for item in items:
        match = SERIAL_ITEM.fullmatch(item)
        if match is None:
            raise ValueError(
                "a comma list of batch sizes, each a number of hosts (e.g. 1) or a percentage "
                "(e.g. 50%)"
            )
        count = int(match["count"])
        if match["percent"]:
            if count > 100:
                raise ValueError("a percentage is at most 100%")
            batches.append(f"{count}%")
        else:
            batches.append(count)
    return batches


def _serial(text: str) -> str:
    """UPDATE_SERIAL checked, kept in its normal form (`1, 50%` -> `1,50%`)."""
    return ",".join(str(item) for item in parse_serial(text))


def _host_name(name: str) -> str:
    if not HOST_NAME.fullmatch(name):
        raise ValueError("a group or host name of the inventory (letters, digits, '.', '_', '-')")
    return name


VariableName = Annotated[str, AfterValidator(_variable_name)]
OffOrPath = Annotated[Path | None, BeforeValidator(_none_when_off)]


class Settings(ClientSettings):
    """Everything the worker needs, with the defaults documented in docs/configuration.md;
    the fields of ClientSettings (Redis, queue, job secret) come first."""

    compose_file: AbsolutePath = Field(
        default=Path("./docker-compose.prod.yml"),
        validation_alias="COMPOSE_FILE_PATH",
        description="the deployment's compose file",
    )
    compose_project_name: str = Field(
        default="", validation_alias="COMPOSE_PROJECT_NAME", description="empty: compose's default"
    )
    compose_env_passthrough: Annotated[tuple[VariableName, ...], BeforeValidator(comma_list)] = (
        Field(
            default=(),
            validation_alias="COMPOSE_ENV_PASSTHROUGH",
            description="variables of the worker's environment compose gets besides an "
            "operator shell's base (read by the role's module_utils/update_executor_env.py)",
        )
    )
    registry_url: Annotated[str, AfterValidator(lambda url: url.rstrip("/"))] = Field(
        default="ghcr.io", validation_alias="REGISTRY_URL", description="the registry of the images"
    )
    registry_username: str = Field(
        default="", validation_alias="REGISTRY_USERNAME", description="required with a token"
    )
    registry_token_file: AbsolutePath | None = Field(
        default=None,
        validation_alias="GITHUB_TOKEN_FILE",
        description="the file holding the registry token (its path is handed to the playbook)",
    )
    registry_token: Annotated[
        Secret, Credential(CREDENTIAL_NAME, keep_path=True, blank_is_none=True)
    ] = Field(
        default=Secret(""),
        validation_alias="GITHUB_TOKEN",
        description="the token itself, when no file holds it (a fallback)",
    )
    update_services: CommaList = Field(
        default=(),
        validation_alias="UPDATE_SERVICES",
        description="services a job may update; empty: every service whose image comes from "
        "registry_url (resolved per job)",
    )
    migration_service: str = Field(
        default="api",
        validation_alias="MIGRATION_SERVICE",
        description="service the migration runs in",
    )
    migration_command: str = Field(
        default="alembic upgrade head",
        validation_alias="MIGRATION_COMMAND",
        description="the migration, run without a shell",
    )
    # The database's rollback (issue 23; docs/operations.md).
    migration_revision_command: str = Field(
        default="alembic current",
        validation_alias="MIGRATION_REVISION_COMMAND",
        description="prints the database's revision (first token) before the update; empty: "
        "the database is not put back by a rollback",
    )
    migration_downgrade_command: str = Field(
        default="alembic downgrade",
        validation_alias="MIGRATION_DOWNGRADE_COMMAND",
        description="run in the new image with the recorded revision appended as one argument",
    )
    db_rollback: Annotated[
        Literal["", "downgrade", "downgrade-then-restore", "off"], BeforeValidator(_lower)
    ] = Field(
        default="",
        validation_alias="DB_ROLLBACK",
        description="how a rollback puts the database back; empty: downgrade when a revision "
        "command is set",
    )
    restore_command: str = Field(
        default="",
        validation_alias="RESTORE_COMMAND",
        description="with downgrade-then-restore: run (no shell) in backup_service, fed the "
        "backup on stdin",
    )
    health_timeout: int = Field(
        default=300,
        ge=1,
        le=86400,
        validation_alias="HEALTH_TIMEOUT",
        description="seconds the recreated services have to become healthy",
    )
    hook_timeout: int = Field(
        default=300,
        ge=1,
        le=86400,
        validation_alias="HOOK_TIMEOUT",
        description="seconds a lifecycle hook may run without an update-executor.timeout label",
    )
    job_timeout: int = Field(
        default=1800,
        ge=60,
        le=MAX_JOB_TIMEOUT_S,
        validation_alias="JOB_TIMEOUT",
        description="seconds an update may take in all",
    )
    stop_grace_period: int = Field(
        default=110,
        ge=0,
        le=86400,
        validation_alias="STOP_GRACE_PERIOD",
        description="seconds a running update may finish after SIGTERM before it is canceled; "
        "below the unit's TimeoutStopSec",
    )
    poll_delay: float = Field(
        default=0.05,
        ge=0.005,
        le=5.0,
        validation_alias="WORKER_POLL_DELAY",
        description="seconds between two looks of the idle worker at the queue (ARQ's "
        "poll_delay): enqueue -> start is about half of it, each look one Redis command",
    )
    log_file: Annotated[OffOrPath, WhenUnset(_log_file)] = Field(
        default=None,
        validation_alias="LOG_FILE",
        description='the log file; "" or "-": stderr only',
    )
    min_interval: int = Field(
        default=60,
        ge=0,
        le=86400,
        validation_alias="UPDATE_MIN_INTERVAL",
        description="seconds between the end of an update and the start of the next "
        "(worker/host/cooldown.py)",
    )
    backup_command: str = Field(
        default="",
        validation_alias="BACKUP_COMMAND",
        description="with create_backup=true: run (no shell) in backup_service, stdout saved "
        "to backup_dir",
    )
    backup_service: str = Field(
        default="db", validation_alias="BACKUP_SERVICE", description="service backups run in"
    )
    backup_dir: AbsolutePath = Field(
        default=Path("/var/lib/update-executor/backups"),
        validation_alias="BACKUP_DIR",
        description="where backups go",
    )
    rollback_on_migration_failure: Flag = Field(
        default=True,
        validation_alias="ROLLBACK_ON_MIGRATION_FAILURE",
        description="false: a failed migration leaves the new version running",
    )
    lock_dir: AbsolutePath = Field(
        default=Path("/var/lib/update-executor/locks"),
        validation_alias="UPDATE_LOCK_DIR",
        description="the per-project update lock and the rollback point of a running update "
        "(shared with manual runs; on disk: a rollback point must survive a reboot)",
    )
    # Set by `update-executor worker --insecure-unsigned-jobs` only, never from the environment.
    insecure_unsigned_jobs: bool = False
    playbook: AbsolutePath = Field(
        default_factory=lambda: ANSIBLE_CONTENT / "playbooks" / "update.yml",
        validation_alias="UPDATE_PLAYBOOK",
        description="the update playbook (rollback.yml is found next to it)",
    )
    inventory: AbsolutePath = Field(
        default_factory=lambda: ANSIBLE_CONTENT / "inventory" / "localhost",
        validation_alias="UPDATE_INVENTORY",
        description="the Ansible inventory: a file or a directory (worker/host/inventory.py)",
    )
    # A fleet (issue 24): which hosts of the inventory an update targets, and in which batches.
    hosts_group: Annotated[str, AfterValidator(_host_name)] = Field(
        default=DEFAULT_HOSTS_GROUP,
        validation_alias="UPDATE_HOSTS_GROUP",
        description="the group (or host) of the inventory a job without `hosts` updates; when "
        "the inventory has no group of the default name: localhost",
    )
    serial: Annotated[str, AfterValidator(_serial)] = Field(
        default="",
        validation_alias="UPDATE_SERIAL",
        description="Ansible's serial: batch sizes, e.g. 1,50%; empty: every host at once",
    )
    max_fail_percentage: int = Field(
        default=0,
        ge=0,
        le=100,
        validation_alias="UPDATE_MAX_FAIL_PERCENTAGE",
        description="failed hosts (percent of a batch) above which the next batches do not start",
    )
    batch_pause: int = Field(
        default=0,
        ge=0,
        le=3600,
        validation_alias="UPDATE_BATCH_PAUSE",
        description="seconds between two batches",
    )
    fleet_rollback: Flag = Field(
        default=False,
        validation_alias="UPDATE_FLEET_ROLLBACK",
        description="when a batch fails, roll back the hosts already updated too",
    )
    notify_urls: Annotated[Secret, Credential(NOTIFY_URLS_CREDENTIAL)] = Field(
        default=Secret(""),
        validation_alias="NOTIFY_URLS",
        description="Apprise URLs (worker/host/notify.py); they carry tokens",
    )
    notify_on: Annotated[Literal["failure", "always"], BeforeValidator(_lower)] = Field(
        default="failure", validation_alias="NOTIFY_ON", description="which outcomes are notified"
    )
    notify_timeout: float = Field(
        default=15.0,
        ge=1.0,
        le=300.0,
        validation_alias="NOTIFY_TIMEOUT",
        description="seconds a notification may take",
    )
    refusal_report_interval: int = Field(
        default=600,
        ge=1,
        le=86400,
        validation_alias="REFUSAL_REPORT_INTERVAL",
        description="jobs refused for their signature or format are reported together, at most "
        "once per this many seconds (worker/host/refusals.py)",
    )
    history_file: Annotated[OffOrPath, AfterValidator(_absolute), WhenUnset(_history_file)] = Field(
        default=None,
        validation_alias="HISTORY_FILE",
        description='the host\'s JSON Lines copy of the update history; "" or "-": Redis only',
    )
    history_max_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=4096,
        le=2**40,
        validation_alias="HISTORY_MAX_BYTES",
        description="the history file is rotated past this size",
    )
    metrics_port: Annotated[int | None, AfterValidator(lambda port: port or None)] = Field(
        default=None,
        ge=0,
        le=65535,
        validation_alias="METRICS_PORT",
        description="serve Prometheus metrics on metrics_host:metrics_port; empty or 0: off",
    )
    metrics_host: str = Field(
        default="127.0.0.1", validation_alias="METRICS_HOST", description="where metrics are served"
    )
    metrics_textfile: AbsolutePath | None = Field(
        default=None,
        validation_alias="METRICS_TEXTFILE",
        description="also write the metrics to this node-exporter textfile",
    )

    @property
    def serial_batches(self) -> list[int | str]:
        """UPDATE_SERIAL as the play's `update_serial` ([] : every host at once)."""
        return parse_serial(self.serial)

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
            # The inventory may be a directory (hosts, group_vars/, host_vars/).
            if not (path.exists() if path == self.inventory else path.is_file())
        ]

    @property
    def has_registry_token(self) -> bool:
        return self.registry_token_file is not None or bool(self.registry_token)

    def inconsistencies(self) -> list[str]:
        problems = super().inconsistencies()
        if self.job_timeout <= self.health_timeout:
            problems.append(
                f"JOB_TIMEOUT ({self.job_timeout}) must be longer than HEALTH_TIMEOUT "
                f"({self.health_timeout})"
            )
        if self.has_registry_token and not self.registry_username:
            problems.append("REGISTRY_USERNAME is required when a registry token is configured")
        return problems
