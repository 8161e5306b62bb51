"""What a job may ask for, and the checks that run before anything is executed.

A job chooses only among options the operator allowed: which of the configured update
services, whether to migrate, whether to dry-run. Paths, commands and the registry are the
worker's configuration, never the job's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from dataclasses import fields as dataclass_fields
from typing import Any, cast

from .untrusted import has_control_chars

# The scheme of a URL (RFC 3986), which the role takes off REGISTRY_URL too.
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# A host or group of the worker's inventory, as a job names it (issue 24): a name, never an
# Ansible pattern (no `:`, `!`, `&`, `*`, `,`, `~` regex or `{{`); the worker checks each
# against its parsed inventory (worker/host/inventory.py).
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
MAX_REQUESTED_BY = 200
MAX_SERVICES = 100
MAX_HOSTS = 64


class InvalidRequest(ValueError):
    """The job asked for something it may not; nothing was run."""


@dataclass(frozen=True)
class UpdateRequest:
    """What an update job asks for: the one carrier of its fields, on both sides.

    The API side (the router, the CLI, `UpdateClient.submit_update`) parses what it is given
    once with `parse` and sends `job_kwargs()`; the worker, for which Redis is untrusted,
    parses the job's keyword arguments again and `resolve`s them against its allow-list. The
    resolved request is the one the summary shows (`as_dict`).

    `services` empty: the default, every service the worker allows (its UPDATE_SERVICES, or
    every service whose image comes from its registry: `registry_services`); only `resolve`
    knows which. A job never names an empty list (`check_request_fields` refuses it), so the
    empty tuple cannot be asked for by mistake.
    """

    services: tuple[str, ...] = ()
    run_migrations: bool = True
    create_backup: bool = False
    dry_run: bool = False
    requested_by: str | None = None
    # `update-executor revert`: put back the images from before the last update that succeeded
    # (rollback.yml with compose_update_revert), with no pull, migration, backup or dry run.
    revert: bool = False
    # Hosts or groups of the worker's inventory (issue 24); empty: its UPDATE_HOSTS_GROUP.
    # Only the worker knows the inventory: it checks the names (worker/host/inventory.py).
    hosts: tuple[str, ...] = ()

    @classmethod
    def parse(cls, fields: Mapping[str, object]) -> UpdateRequest:
        """The request `fields` (a job's keyword arguments, a body) ask for; InvalidRequest
        when they fail `check_request_fields`. Missing fields take their defaults."""
        check_request_fields(fields)
        values = dict(fields)  # checked above: known names, the right types
        services = cast("list[str] | tuple[str, ...] | None", values.pop("services", None))
        hosts = cast("list[str] | tuple[str, ...] | None", values.pop("hosts", None))
        return cls(
            services=tuple(services or ()),
            hosts=tuple(hosts or ()),
            **cast("dict[str, Any]", values),
        )

    def resolve(self, allowed_services: Iterable[str]) -> UpdateRequest:
        """The request with its services checked against the worker's allow-list, the default
        (none named) replaced by the whole list; InvalidRequest when one is not allowed."""
        return replace(self, services=choose_services(allowed_services, self.services or None))

    def job_kwargs(self) -> dict[str, Any]:
        """The ARQ job's keyword arguments (those of process_system_update): `services` null
        for the default; `revert` and `hosts` only when set, so an update's job is as before
        they existed."""
        kwargs = asdict(self)
        kwargs["services"] = list(self.services) or None
        if not self.revert:
            del kwargs["revert"]
        if self.hosts:
            kwargs["hosts"] = list(self.hosts)
        else:
            del kwargs["hosts"]
        return kwargs

    def as_dict(self) -> dict[str, Any]:
        """The request as the summary shows it (resolved: the services that were updated)."""
        data = asdict(self)
        data["services"] = list(self.services)
        if not self.revert:
            del data["revert"]  # an update's request as before revert existed
        if self.hosts:
            data["hosts"] = list(self.hosts)  # the names the job gave, as it gave them
        else:
            del data["hosts"]  # the default group: as before hosts existed
        return data


def registry_host(registry_url: str) -> str:
    """REGISTRY_URL without its scheme or trailing slashes, as the role reads it
    (`_compose_update_registry_host`): `https://ghcr.io/` -> `ghcr.io`."""
    return URL_SCHEME.sub("", registry_url, count=1).rstrip("/")


def registry_services(compose_config: Mapping[str, Any], registry_url: str) -> list[str]:
    """Services whose image comes from `registry_url` (the default update set).

    A database or the Redis that carries the queue comes from elsewhere, so an update never
    recreates them unless the operator lists them in UPDATE_SERVICES. The role's preflight
    decides the same for a run without services (tests/unit/test_default_targets_agree.py).
    """
    prefix = registry_host(registry_url) + "/"
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
REQUEST_FIELDS = tuple(field.name for field in dataclass_fields(UpdateRequest))
# What a revert may not ask for: it puts back what the last update's record says, nothing else.
REVERT_EXCLUDES = "a revert takes no services, migrations, backup or dry run"
_ARGUMENT_NAME = re.compile(r"[a-z_][a-z0-9_]{0,39}")


def check_request_fields(fields: Mapping[str, object]) -> None:
    """The checks that need no configuration: known argument names, types and lengths.

    `UpdateRequest.parse` runs them; the worker also runs them on every job it reads from
    Redis, before accepting it (worker/shared/signing.py). Messages never quote a rejected
    value.
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
    check_host_names(fields.get("hosts"))
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


def check_host_names(hosts: object) -> None:
    """A job's `hosts`: null, or 1 to MAX_HOSTS distinct names of the HOST_NAME grammar (no
    pattern). Whether each is in the inventory only the worker can tell."""
    if hosts is None:
        return
    if not isinstance(hosts, (list, tuple)) or not hosts:
        raise InvalidRequest("hosts must be a non-empty list of inventory host or group names")
    if len(hosts) > MAX_HOSTS:
        raise InvalidRequest(f"hosts lists more than {MAX_HOSTS} names")
    for index, name in enumerate(hosts):
        if not isinstance(name, str) or not HOST_NAME.fullmatch(name):
            raise InvalidRequest(
                f"invalid host name at hosts[{index}]: a name of the inventory is 1 to 63 "
                "letters, digits, '.', '_' or '-', starting with a letter or digit (no pattern)"
            )
    if len(set(hosts)) != len(hosts):
        raise InvalidRequest("hosts names a host or group twice")


def choose_services(allowed_services: Iterable[str], services: object) -> tuple[str, ...]:
    """`services` (already checked: None or a list of names) against the allow-list: all of
    it for None, else the names in order without repeats; InvalidRequest for one not allowed."""
    allowed = list(allowed_services)
    if not allowed:
        raise InvalidRequest("no update services: none is configured and none has a registry image")
    if services is None:
        return tuple(allowed)
    names = [str(name) for name in cast("list[object]", services)]
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise InvalidRequest(
            f"services not allowed for update: {', '.join(unknown)} (allowed: {', '.join(allowed)})"
        )
    return tuple(dict.fromkeys(names))  # keep order, drop repeats


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
    return choose_services(allowed_services, services)
