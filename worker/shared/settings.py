"""What the API side needs to talk to the worker: Redis, the queue, the job secret.

`ClientSettings` is read from the environment by the API and the CLI; the worker's
`Settings` (worker/host/settings.py) extends it, so each variable is declared, and checked,
in one place: a pydantic-settings field with its type, default, bounds, variable name
(`validation_alias`) and a one-line description. docs/configuration.md's table is checked
against these fields (tests/unit/test_docs_match_code.py).

`from_env()` reads the environment through two sources, in order of preference:

- `SecretFiles`: a secret's file, `<VARIABLE>_FILE` or systemd's
  `$CREDENTIALS_DIRECTORY/<credential>` (`LoadCredential=`), for the settings marked
  `Credential`;
- `Variables`: one variable per setting, its value stripped; a blank variable is unset.

Every problem is reported at once: `ConfigError("invalid configuration: a; b; …")`, each
problem naming its variable. `Settings(...)` with keywords reads no environment (the
defaults and the keywords only), as code and tests that derive settings want.

Secrets are :class:`Secret` (a pydantic `SecretStr`), so that no repr, log line or summary
can show them.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Self, TypeVar

import annotated_types
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic.types import SecretStr
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

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


class Secret(SecretStr):
    """A string that never shows itself in repr, str or f-strings (a pydantic `SecretStr`)."""

    def reveal(self) -> str:
        return self.get_secret_value()

    def __repr__(self) -> str:
        return "Secret('**********')" if self else "Secret('')"

    __str__ = __repr__


# ------------------------------------------------------------------ how a variable is read
@dataclass(frozen=True)
class Credential:
    """Marks a secret setting that is also read from a file, preferred to its variable X:
    the file `X_FILE`, else systemd's `$CREDENTIALS_DIRECTORY/<name>` (`LoadCredential=`).

    `strip=False`: only the line break is dropped (a password may have spaces).
    `keep_path`: the setting `X_FILE` holds the file's path (the worker hands the path on,
    never the content, which is only checked here) and the variable X is then ignored.
    `blank_is_none`: a blank credential file means no secret (the unit's `SetCredential=`
    fallback for a file that does not exist), not an empty one.
    """

    name: str
    strip: bool = True
    keep_path: bool = False
    blank_is_none: bool = False


@dataclass(frozen=True)
class WhenUnset:
    """Marks a setting whose default is found on the host when its variable is not set at
    all (a set but blank variable is then a value: none)."""

    default: Callable[[Mapping[str, str]], object]


_Marker = TypeVar("_Marker", Credential, WhenUnset)


@dataclass(frozen=True)
class Unreadable:
    """A secret file that could not be used. SecretFiles cannot raise (that would hide every
    other problem), so it hands this on as the setting's value: no field type accepts it and
    `from_env` reports the message."""

    problem: str


def marker(field: FieldInfo, kind: type[_Marker]) -> _Marker | None:
    """The field's `Annotated` marker of this kind, if it has one."""
    return next((m for m in field.metadata if isinstance(m, kind)), None)


def variable_of(field: FieldInfo) -> str | None:
    """The environment variable of a setting (None: not read from the environment)."""
    return field.validation_alias if isinstance(field.validation_alias, str) else None


class Variables(PydanticBaseSettingsSource):
    """One variable per setting, named by the field's `validation_alias`. Values are
    stripped (not a `Credential(strip=False)`'s) and a blank variable counts as unset,
    except for a `WhenUnset` setting, which gets its host default only when unset."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        variable = variable_of(field) or field_name
        raw = self.environ.get(variable)
        unset = marker(field, WhenUnset)
        if raw is None:
            return (unset.default(self.environ) if unset else None), variable, False
        credential = marker(field, Credential)
        value = raw if credential and not credential.strip else raw.strip()
        return (value if value or unset else None), variable, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            if variable_of(field) is None:
                continue
            value, variable, _ = self.get_field_value(field, name)
            if value is not None or marker(field, WhenUnset):
                values[variable] = value
        return values


class SecretFiles(PydanticBaseSettingsSource):
    """The files of the `Credential` settings: `X_FILE`, else `$CREDENTIALS_DIRECTORY/<name>`.
    Listed before `Variables`, so a file is preferred to the variable X."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.environ = environ

    def path_of(self, variable: str, credential: Credential) -> Path | None:
        named = self.environ.get(f"{variable}_FILE", "").strip()
        if named:
            return Path(named).absolute()
        directory = self.environ.get("CREDENTIALS_DIRECTORY", "")
        if not directory:
            return None
        candidate = Path(directory) / credential.name
        if not candidate.is_file():
            return None
        if credential.blank_is_none:
            with contextlib.suppress(OSError):  # unreadable: reported when it is read
                if not candidate.read_text().strip():
                    return None
        return candidate.absolute()

    def values_of(self, variable: str, credential: Credential) -> dict[str, Any]:
        """{variable: secret} from the setting's file; {} when there is none."""
        path = self.path_of(variable, credential)
        if path is None:
            return {}
        target = f"{variable}_FILE" if credential.keep_path else variable
        try:
            content = path.read_text()
        except OSError as exc:
            return {target: Unreadable(f"{variable}_FILE {path} cannot be read: {exc.strerror}")}
        content = content.strip() if credential.strip else content.rstrip("\r\n")
        if not content:
            return {target: Unreadable(f"{variable}_FILE {path} is empty")}
        if credential.keep_path:
            return {target: path, variable: ""}  # the file, not the variable
        return {variable: content}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        variable, credential = variable_of(field), marker(field, Credential)
        if variable is None or credential is None:
            return None, field_name, False
        return self.values_of(variable, credential).get(variable), variable, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field in self.settings_cls.model_fields.values():
            variable, credential = variable_of(field), marker(field, Credential)
            if variable is not None and credential is not None:
                values.update(self.values_of(variable, credential))
        return values


# ------------------------------------------------------------------ value types
def _flag(value: object) -> object:
    """true/yes/on/1 or false/no/off/0 (any case); anything else is an error, never a
    guess: `flase` must not turn a safety switch on or off."""
    if not isinstance(value, str):
        return value
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"must be true or false, got {word!r}")


def comma_list(value: object) -> object:
    """A comma-separated variable as a tuple of its non-blank items."""
    if not isinstance(value, str):
        return value
    return tuple(s.strip() for s in value.split(",") if s.strip())


def _readable(path: Path) -> Path:
    path = path.absolute()
    if not os.access(path, os.R_OK):
        raise ValueError(f"{path} cannot be read")
    return path


Flag = Annotated[bool, BeforeValidator(_flag)]
CommaList = Annotated[tuple[str, ...], BeforeValidator(comma_list)]
AbsolutePath = Annotated[Path, AfterValidator(Path.absolute)]
ReadableFile = Annotated[Path, AfterValidator(_readable)]


def _not_arq_default(name: str) -> str:
    if name == ARQ_DEFAULT_QUEUE_NAME:
        raise ValueError(
            f"must not be ARQ's default {ARQ_DEFAULT_QUEUE_NAME!r}: the application's own "
            "workers take jobs from it and would fail the update job"
        )
    return name


def _long_enough(secret: Secret) -> Secret:
    if secret and len(secret.reveal()) < MIN_JOB_SECRET_LENGTH:
        raise ValueError(
            f"must be at least {MIN_JOB_SECRET_LENGTH} characters "
            "(generate one with `openssl rand -hex 32`)"
        )
    return secret


# ------------------------------------------------------------------ the settings
_ENVIRON: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "update_executor_settings_environ", default=None
)


@contextlib.contextmanager
def _reading(environ: Mapping[str, str]) -> Iterator[None]:
    token = _ENVIRON.set(environ)
    try:
        yield
    finally:
        _ENVIRON.reset(token)


class ClientSettings(BaseSettings):
    """What the API and the CLI read: the queue's Redis, its name, the job secret and the
    age after which the worker refuses a job. Nothing of the deployment, the registry or
    Ansible: those are the worker's (worker/host/settings.py)."""

    model_config = SettingsConfigDict(
        frozen=True, validate_by_name=True, validate_by_alias=True, extra="forbid"
    )

    redis_host: str = Field(
        default="localhost",
        validation_alias="REDIS_QUEUE_HOST",
        description="Redis that carries the queue",
    )
    redis_port: int = Field(
        default=6379, ge=1, le=65535, validation_alias="REDIS_QUEUE_PORT", description="its port"
    )
    redis_db: int = Field(
        default=0, ge=0, le=1024, validation_alias="REDIS_QUEUE_DB", description="its database"
    )
    redis_password: Annotated[Secret, Credential(REDIS_PASSWORD_CREDENTIAL, strip=False)] = Field(
        default=Secret(""),
        validation_alias="REDIS_QUEUE_PASSWORD",
        description="the Redis password",
    )
    redis_username: str = Field(
        default="",
        validation_alias="REDIS_QUEUE_USERNAME",
        description="Redis ACL user; empty: default",
    )
    redis_ssl: Flag = Field(
        default=False, validation_alias="REDIS_QUEUE_SSL", description="TLS to Redis"
    )
    redis_ssl_ca_file: ReadableFile | None = Field(
        default=None,
        validation_alias="REDIS_QUEUE_SSL_CA_FILE",
        description="CA bundle that signed the server's certificate",
    )
    redis_ssl_cert_file: ReadableFile | None = Field(
        default=None,
        validation_alias="REDIS_QUEUE_SSL_CERT_FILE",
        description="client certificate, when Redis asks for one",
    )
    redis_ssl_key_file: ReadableFile | None = Field(
        default=None, validation_alias="REDIS_QUEUE_SSL_KEY_FILE", description="its key"
    )
    queue_name: Annotated[str, AfterValidator(_not_arq_default)] = Field(
        default=DEFAULT_QUEUE_NAME, validation_alias="UPDATE_QUEUE_NAME", description="our queue"
    )
    job_secret: Annotated[
        Secret, Credential(JOB_SECRET_CREDENTIAL), AfterValidator(_long_enough)
    ] = Field(
        default=Secret(""),
        validation_alias="UPDATE_JOB_SECRET",
        description="HMAC-SHA256 key jobs and results are signed with (worker/shared/signing.py)",
    )
    job_max_age: int = Field(
        default=900,
        ge=10,
        le=86400,
        validation_alias="UPDATE_JOB_MAX_AGE",
        description="seconds after enqueueing after which the worker refuses a job",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keywords first; the environment only inside `from_env` (files before variables)."""
        environ = _ENVIRON.get()
        if environ is None:
            return (init_settings,)
        return init_settings, SecretFiles(settings_cls, environ), Variables(settings_cls, environ)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Read the settings from the environment; raise ConfigError with every problem found."""
        with _reading(os.environ if environ is None else environ):
            try:
                return cls()
            except ValidationError as exc:
                problems = dict.fromkeys(describe(error, cls) for error in exc.errors())
        raise ConfigError("invalid configuration: " + "; ".join(problems))

    def inconsistencies(self) -> list[str]:
        """What is wrong with the settings together (each one alone is valid)."""
        problems = []
        ssl_files = (self.redis_ssl_ca_file, self.redis_ssl_cert_file, self.redis_ssl_key_file)
        if not self.redis_ssl and any(ssl_files):
            problems.append("REDIS_QUEUE_SSL_*_FILE is set but REDIS_QUEUE_SSL is not true")
        if bool(self.redis_ssl_cert_file) != bool(self.redis_ssl_key_file):
            problems.append("REDIS_QUEUE_SSL_CERT_FILE and REDIS_QUEUE_SSL_KEY_FILE go together")
        return problems

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = self.inconsistencies()
        if problems:
            raise ValueError("; ".join(problems))
        return self


# ------------------------------------------------------------------ the one message
def _bounds(model: type[BaseSettings], variable: str) -> tuple[object, object]:
    """The `ge` and `le` of the setting named by its variable (or its field's name)."""
    field = next(f for n, f in model.model_fields.items() if variable in (variable_of(f), n))
    low = next((m.ge for m in field.metadata if isinstance(m, annotated_types.Ge)), None)
    high = next((m.le for m in field.metadata if isinstance(m, annotated_types.Le)), None)
    return low, high


def describe(error: ErrorDetails, model: type[BaseSettings]) -> str:
    """One problem, as the operator reads it: `VARIABLE what is wrong`."""
    value = error["input"]
    if isinstance(value, Unreadable):
        return value.problem
    kind, context = error["type"], error.get("ctx", {})
    if kind == "value_error":
        text = str(context["error"])
    elif kind in ("int_parsing", "int_from_float", "int_type"):
        text = f"must be an integer, got {value!r}"
    elif kind in ("float_parsing", "float_type"):  # every float setting is a duration
        text = f"must be a number of seconds, got {value!r}"
    elif kind in ("greater_than_equal", "less_than_equal", "finite_number"):
        low, high = _bounds(model, str(error["loc"][0]))
        text = f"must be between {low} and {high}, got {value}"
    elif kind == "literal_error":
        expected = str(context["expected"]).replace("'", "")
        text = f"must be {expected}, got {value!r}"
    else:
        text = error["msg"]
    location = [str(part) for part in error["loc"]]
    if not location:
        return text  # a check across settings names its variables itself
    if len(location) > 1:
        return f"{location[0]}: {text}"  # one item of a list
    return f"{location[0]} {text}"
