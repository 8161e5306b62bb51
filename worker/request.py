"""What a job may ask for, and the checks that run before anything is executed.

A job chooses only among options the operator allowed: which of the configured update
services, whether to migrate, whether to dry-run. Paths, commands and the registry are the
worker's configuration, never the job's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
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

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["services"] = list(self.services)
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


def validate_request(
    allowed_services: Iterable[str],
    *,
    services: object = None,
    run_migrations: object = True,
    create_backup: object = False,
    dry_run: object = False,
    requested_by: object = None,
) -> UpdateRequest:
    """Check a job's arguments against the allow-list; raise InvalidRequest if they fail."""
    allowed = list(allowed_services)
    if not allowed:
        raise InvalidRequest("no update services: none is configured and none has a registry image")
    if services is None:
        chosen = tuple(allowed)
    else:
        if not isinstance(services, (list, tuple)) or not services:
            raise InvalidRequest("services must be a non-empty list of service names or null")
        if len(services) > MAX_SERVICES:
            raise InvalidRequest(f"services lists more than {MAX_SERVICES} names")
        for name in services:
            if not isinstance(name, str) or not SERVICE_NAME.match(name):
                raise InvalidRequest(f"invalid service name {str(name)[:64]!r}")
        unknown = sorted(set(services) - set(allowed))
        if unknown:
            raise InvalidRequest(
                f"services not allowed for update: {', '.join(unknown)} "
                f"(allowed: {', '.join(allowed)})"
            )
        chosen = tuple(dict.fromkeys(services))  # keep order, drop repeats
    if requested_by is not None and (
        not isinstance(requested_by, str) or len(requested_by) > MAX_REQUESTED_BY
    ):
        raise InvalidRequest(f"requested_by must be a string of at most {MAX_REQUESTED_BY} chars")
    return UpdateRequest(
        services=chosen,
        run_migrations=_flag("run_migrations", run_migrations),
        create_backup=_flag("create_backup", create_backup),
        dry_run=_flag("dry_run", dry_run),
        requested_by=requested_by,
    )
