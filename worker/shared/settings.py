"""What the API side needs to talk to the worker: Redis, the queue, the job secret.

`ClientSettings` is read from the environment by the API and the CLI; the worker's
`Settings` (worker/host/settings.py) extends it, so each variable is read, and checked, in
one place. `EnvReader` is the one parser of variables: a boolean, an integer or a secret
means the same, and fails the same way, whichever side reads it.

Secrets are wrapped in :class:`Secret` so that no repr, log line or summary can show them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_QUEUE_NAME = "update-executor:queue"
# ARQ's default queue, used by the application's own in-container workers: never ours.
ARQ_DEFAULT_QUEUE_NAME = "arq:queue"
# systemd's LoadCredential= puts credentials in $CREDENTIALS_DIRECTORY/<name>.
JOB_SECRET_CREDENTIAL = "job_secret"  # noqa: S105 (a file name, not a secret)
REDIS_PASSWORD_CREDENTIAL = "redis_password"  # noqa: S105
# Shortest job secret accepted: `openssl rand -hex 32` gives 64 characters.
MIN_JOB_SECRET_LENGTH = 32
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


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


class EnvReader:
    """Reads variables from `env`, collecting every problem; `check()` raises them at once."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def check(self) -> None:
        if self.problems:
            raise ConfigError("invalid configuration: " + "; ".join(self.problems))

    def text(self, name: str, default: str) -> str:
        return self.env.get(name, "").strip() or default

    def names(self, name: str) -> tuple[str, ...]:
        """A comma-separated list."""
        return tuple(s.strip() for s in self.env.get(name, "").split(",") if s.strip())

    def integer(self, name: str, default: int, minimum: int = 0, maximum: int = 2**31) -> int:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.problems.append(f"{name} must be an integer, got {raw!r}")
            return default
        if not minimum <= value <= maximum:
            self.problems.append(f"{name} must be between {minimum} and {maximum}, got {value}")
        return value

    def decimal(self, name: str, default: float, minimum: float, maximum: float) -> float:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            self.problems.append(f"{name} must be a number of seconds, got {raw!r}")
            return default
        if not minimum <= value <= maximum:  # also refuses nan and inf
            self.problems.append(f"{name} must be between {minimum} and {maximum}, got {raw}")
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        """true/yes/on/1 or false/no/off/0 (any case); anything else is an error, never a
        guess: `flase` must not turn a safety switch on or off."""
        raw = self.env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in TRUE_WORDS:
            return True
        if raw in FALSE_WORDS:
            return False
        self.problems.append(f"{name} must be true or false, got {raw!r}")
        return default

    def path(self, name: str, default: Path | str) -> Path:
        return Path(self.text(name, str(default))).absolute()

    def readable_file(self, name: str) -> Path | None:
        raw = self.env.get(name, "").strip()
        if not raw:
            return None
        path = Path(raw).absolute()
        if not os.access(path, os.R_OK):
            self.problems.append(f"{name} {path} cannot be read")
        return path

    def secret(self, name: str, credential: str, *, strip: bool = True) -> Secret:
        """A secret from, in order of preference: the file `<name>_FILE`, systemd's
        credentials directory (`LoadCredential=<credential>:...`), the variable `<name>`."""
        path = self.env.get(f"{name}_FILE", "").strip()
        if not path and self.env.get("CREDENTIALS_DIRECTORY"):
            candidate = Path(self.env["CREDENTIALS_DIRECTORY"]) / credential
            if candidate.is_file():
                path = str(candidate)
        if path:
            try:
                value = Path(path).read_text()
            except OSError as exc:
                self.problems.append(
                    f"{name}_FILE {Path(path).absolute()} cannot be read: {exc.strerror}"
                )
                return Secret("")
            value = value.strip() if strip else value.rstrip("\r\n")
            if not value:
                self.problems.append(f"{name}_FILE {Path(path).absolute()} is empty")
            return Secret(value)
        value = self.env.get(name, "")
        return Secret(value.strip() if strip else value)


@dataclass(frozen=True)
class ClientSettings:
    """What the API and the CLI read: the queue's Redis, its name, the job secret and the
    age after which the worker refuses a job. Nothing of the deployment, the registry or
    Ansible: those are the worker's (worker/host/settings.py)."""

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
    # HMAC-SHA256 key that jobs and results are signed with (see worker/shared/signing.py).
    job_secret: Secret = field(default_factory=lambda: Secret(""))
    # A job is refused when it starts more than this many seconds after it was enqueued.
    job_max_age: int = 900

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientSettings:
        """Read the settings from the environment; raise ConfigError with every problem found."""
        reader = EnvReader(os.environ if environ is None else environ)
        values = client_values(reader)
        reader.check()
        return cls(**values)


def client_values(reader: EnvReader) -> dict[str, Any]:
    """ClientSettings' fields from the environment (the worker's Settings reads them here too)."""
    redis_ssl = reader.boolean("REDIS_QUEUE_SSL", False)
    ssl_files = {
        name: reader.readable_file(name)
        for name in (
            "REDIS_QUEUE_SSL_CA_FILE",
            "REDIS_QUEUE_SSL_CERT_FILE",
            "REDIS_QUEUE_SSL_KEY_FILE",
        )
    }
    problems = reader.problems
    if not redis_ssl and any(ssl_files.values()):
        problems.append("REDIS_QUEUE_SSL_*_FILE is set but REDIS_QUEUE_SSL is not true")
    if bool(ssl_files["REDIS_QUEUE_SSL_CERT_FILE"]) != bool(ssl_files["REDIS_QUEUE_SSL_KEY_FILE"]):
        problems.append("REDIS_QUEUE_SSL_CERT_FILE and REDIS_QUEUE_SSL_KEY_FILE go together")
    redis_password = reader.secret("REDIS_QUEUE_PASSWORD", REDIS_PASSWORD_CREDENTIAL, strip=False)
    job_secret = reader.secret("UPDATE_JOB_SECRET", JOB_SECRET_CREDENTIAL)
    if job_secret and len(job_secret.reveal()) < MIN_JOB_SECRET_LENGTH:
        problems.append(
            f"UPDATE_JOB_SECRET must be at least {MIN_JOB_SECRET_LENGTH} characters "
            "(generate one with `openssl rand -hex 32`)"
        )
    queue_name = reader.text("UPDATE_QUEUE_NAME", DEFAULT_QUEUE_NAME)
    if queue_name == ARQ_DEFAULT_QUEUE_NAME:
        problems.append(
            f"UPDATE_QUEUE_NAME must not be ARQ's default {ARQ_DEFAULT_QUEUE_NAME!r}: the "
            "application's own workers take jobs from it and would fail the update job"
        )
    return {
        "redis_host": reader.text("REDIS_QUEUE_HOST", "localhost"),
        "redis_port": reader.integer("REDIS_QUEUE_PORT", 6379, 1, 65535),
        "redis_db": reader.integer("REDIS_QUEUE_DB", 0, 0, 1024),
        "redis_password": redis_password,
        "redis_username": reader.text("REDIS_QUEUE_USERNAME", ""),
        "redis_ssl": redis_ssl,
        "redis_ssl_ca_file": ssl_files["REDIS_QUEUE_SSL_CA_FILE"],
        "redis_ssl_cert_file": ssl_files["REDIS_QUEUE_SSL_CERT_FILE"],
        "redis_ssl_key_file": ssl_files["REDIS_QUEUE_SSL_KEY_FILE"],
        "queue_name": queue_name,
        "job_secret": job_secret,
        "job_max_age": reader.integer("UPDATE_JOB_MAX_AGE", 900, 10, 86400),
    }
