"""What a job may ask for, and the checks that run before anything is executed.

A job chooses only among options the operator allowed: which of the configured update
services, whether to migrate, whether to dry-run. Paths, commands and the registry are the
worker's configuration, never the job's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, cast

from .untrusted import has_control_chars

SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
MAX_REQUESTED_BY = 200
MAX_SERVICES = 100


class InvalidRequest(ValueError):
    """The job asked for something it may not; nothing was run."""


@dataclass(frozen=True)
class UpdateRequest:
    """A validated update request, as it appears in the summary."""

    services: tuple[str, ...]
    run_migrations: bool = True
    create_backup: bool = False
    dry_run: bool = False
    requested_by: str | None = None
    # `update-executor revert`: put back the images from before the last update that succeeded
    # (rollback.yml with compose_update_revert), with no pull, migration, backup or dry run.
    revert: bool = False

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["services"] = list(self.services)
        if not self.revert:
            del data["revert"]  # an update's request as before revert existed
        return data


def registry_services(compose_config: Mapping[str, Any], registry_url: str) -> list[str]:
    """Services whose image comes from `registry_url` (the default update set).

    A database or the Redis that carries the queue comes from elsewhere, so an update never
    recreates them unless the operator lists them in UPDATE_SERVICES.
    """
    prefix = registry_url.rstrip("/") + "/"
    services = compose_config.get("services") or {}
    return sorted(
        name
        for name, service in services.items()
        if isinstance(service, Mapping) and str(service.get("image", "")).startswith(prefix)
    )


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be true or false, got {type(value).__name__}")
    return value


# The keyword arguments of process_system_update: the whole of what a job may ask for.
REQUEST_FIELDS = (
    "services",
    "run_migrations",
    "create_backup",
    "dry_run",
    "requested_by",
    "revert",
)
# What a revert may not ask for: it puts back what the last update's record says, nothing else.
REVERT_EXCLUDES = "a revert takes no services, migrations, backup or dry run"
_ARGUMENT_NAME = re.compile(r"[a-z_][a-z0-9_]{0,39}")


def check_request_fields(fields: Mapping[str, object]) -> None:
    """The checks that need no configuration: known argument names, types and lengths.

    The worker runs them on every job before accepting it (worker/shared/signing.py), and
    `validate_request` runs them again. Messages never quote a rejected value.
    """
    unknown = sorted(str(name) for name in fields if name not in REQUEST_FIELDS)
    if unknown:
        shown = ", ".join(
            n if _ARGUMENT_NAME.fullmatch(n) else "(invalid name)" for n in unknown[:5]
        )
        raise InvalidRequest(f"unexpected argument {shown} (accepted: {', '.join(REQUEST_FIELDS)})")
    services = fields.get("services")
    if services is not None:
        if not isinstance(services, (list, tuple)) or not services:
            raise InvalidRequest("services must be a non-empty list of service names or null")
        if len(services) > MAX_SERVICES:
            raise InvalidRequest(f"services lists more than {MAX_SERVICES} names")
        for index, name in enumerate(services):
            if not isinstance(name, str) or not SERVICE_NAME.fullmatch(name):
                raise InvalidRequest(
                    f"invalid service name at services[{index}]: a name is 1 to 63 letters, "
                    "digits, '.', '_' or '-', starting with a letter or digit"
                )
    for flag in ("run_migrations", "create_backup", "dry_run", "revert"):
        if flag in fields:
            _flag(flag, fields[flag])
    if fields.get("revert") is True and (
        services is not None
        or fields.get("run_migrations") is not False
        or fields.get("create_backup") is True
        or fields.get("dry_run") is True
    ):
        raise InvalidRequest(
            f"{REVERT_EXCLUDES}: send services=null, run_migrations=false, create_backup=false, "
            "dry_run=false"
        )
    requested_by = fields.get("requested_by")
    if requested_by is not None and (
        not isinstance(requested_by, str) or len(requested_by) > MAX_REQUESTED_BY
    ):
        raise InvalidRequest(f"requested_by must be a string of at most {MAX_REQUESTED_BY} chars")
    if isinstance(requested_by, str) and has_control_chars(requested_by):
        # It ends up in the lock file, the summary and log lines: one printable line only.
        raise InvalidRequest("requested_by must not contain control characters (newlines, NUL)")


def validate_request(
    allowed_services: Iterable[str],
    *,
    services: object = None,
    run_migrations: object = True,
    create_backup: object = False,
    dry_run: object = False,
    requested_by: object = None,
    revert: object = False,
) -> UpdateRequest:
    """Check a job's arguments against the allow-list; raise InvalidRequest if they fail."""
    check_request_fields(
        {
            "services": services,
            "run_migrations": run_migrations,
            "create_backup": create_backup,
            "dry_run": dry_run,
            "requested_by": requested_by,
            "revert": revert,
        }
    )
    allowed = list(allowed_services)
    if not allowed:
        raise InvalidRequest("no update services: none is configured and none has a registry image")
    if services is None:
        chosen = tuple(allowed)
    else:
        names = [str(name) for name in cast("list[object]", services)]  # checked above
        unknown = sorted(set(names) - set(allowed))
        if unknown:
            raise InvalidRequest(
                f"services not allowed for update: {', '.join(unknown)} "
                f"(allowed: {', '.join(allowed)})"
            )
        chosen = tuple(dict.fromkeys(names))  # keep order, drop repeats
    return UpdateRequest(
        services=chosen,
        run_migrations=_flag("run_migrations", run_migrations),
        create_backup=_flag("create_backup", create_backup),
        dry_run=_flag("dry_run", dry_run),
        requested_by=requested_by if isinstance(requested_by, str) else None,
        revert=_flag("revert", revert),
    )


# The keyword arguments of check_for_updates (worker/host/check.py): only which services to check.
CHECK_FIELDS = ("services",)


def check_check_fields(fields: Mapping[str, object]) -> None:
    """`check_request_fields` for a check_for_updates job: only `services`, same rules."""
    unknown = sorted(str(name) for name in fields if name not in CHECK_FIELDS)
    if unknown:
        shown = ", ".join(
            n if _ARGUMENT_NAME.fullmatch(n) else "(invalid name)" for n in unknown[:5]
        )
        raise InvalidRequest(
            f"unexpected argument {shown} for check_for_updates (accepted: services)"
        )
    check_request_fields({"services": fields.get("services")})


def validate_check_services(allowed_services: Iterable[str], services: object) -> tuple[str, ...]:
    """The services a check looks at: all allowed ones, or the requested subset of them."""
    check_check_fields({"services": services})
    allowed = list(allowed_services)
    if not allowed:
        raise InvalidRequest("no update services: none is configured and none has a registry image")
    if services is None:
        return tuple(allowed)
    names = [str(name) for name in cast("list[object]", services)]  # checked above
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise InvalidRequest(
            f"services not allowed for update: {', '.join(unknown)} (allowed: {', '.join(allowed)})"
        )
    return tuple(dict.fromkeys(names))
