"""UpdateRequest (worker/shared/request.py): parsed once per side, resolved by the worker
against its allow-list, sent as the job's keyword arguments."""

from typing import Any

import pytest

from worker.shared.request import (
    REQUEST_FIELDS,
    InvalidRequest,
    UpdateRequest,
    registry_services,
)

ALLOWED = ["api", "frontend", "worker"]

COMPOSE_CONFIG = {
    "name": "app",
    "services": {
        "api": {"image": "ghcr.io/acme/app:latest"},
        "worker": {"image": "ghcr.io/acme/app:latest"},
        "frontend": {"image": "ghcr.io/acme/frontend:1.2"},
        "db": {"image": "postgres:16"},
        "redis": {"image": "redis:7"},
        "lookalike": {"image": "ghcr.io.evil.example/acme/app:1"},
        "builder": {"build": {"context": "."}},
    },
}


def validate_request(allowed: list[str], **fields: Any) -> UpdateRequest:
    """What the worker does with a job's keyword arguments (worker/host/jobs.py)."""
    return UpdateRequest.parse(fields).resolve(allowed)


def test_default_update_set_is_the_registry_images_only() -> None:
    assert registry_services(COMPOSE_CONFIG, "ghcr.io") == ["api", "frontend", "worker"]
    assert registry_services(COMPOSE_CONFIG, "ghcr.io/") == ["api", "frontend", "worker"]
    assert registry_services({"services": {}}, "ghcr.io") == []
    assert registry_services({}, "ghcr.io") == []


def test_no_services_means_every_allowed_service() -> None:
    request = validate_request(ALLOWED)
    assert request.services == tuple(ALLOWED)
    assert request.run_migrations is True
    assert request.dry_run is False


def test_a_subset_keeps_its_order_without_repeats() -> None:
    request = validate_request(ALLOWED, services=["worker", "api", "worker"])
    assert request.services == ("worker", "api")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"services": ["db"]}, "not allowed for update: db"),
        ({"services": ["api", "redis"]}, "not allowed for update: redis"),
        ({"services": ["api; rm -rf /"]}, "invalid service name"),
        ({"services": ["../etc/passwd"]}, "invalid service name"),
        ({"services": ["$(id)"]}, "invalid service name"),
        ({"services": [""]}, "invalid service name"),
        ({"services": [1]}, "invalid service name"),
        ({"services": "api"}, "non-empty list"),
        ({"services": []}, "non-empty list"),
        ({"services": ["a"] * 101}, "more than 100"),
        ({"run_migrations": "yes"}, "run_migrations must be true or false"),
        ({"dry_run": 1}, "dry_run must be true or false"),
        ({"create_backup": None}, "create_backup must be true or false"),
        ({"requested_by": 5}, "requested_by must be a string"),
        ({"requested_by": "x" * 201}, "requested_by must be a string"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        validate_request(ALLOWED, **kwargs)


def test_nothing_to_update_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="no update services"):
        validate_request([])


def test_request_as_dict_is_json_shaped() -> None:
    request = validate_request(ALLOWED, services=["api"], requested_by="admin@example.org")
    assert request.as_dict() == {
        "services": ["api"],
        "run_migrations": True,
        "create_backup": False,
        "dry_run": False,
        "requested_by": "admin@example.org",
    }


@pytest.mark.parametrize(
    "extra",
    [
        {"services": ["api"]},
        {"run_migrations": True},
        {"create_backup": True},
        {"dry_run": True},
    ],
)
def test_a_revert_asks_for_nothing_else(extra: dict[str, object]) -> None:
    request: dict[str, object] = {"run_migrations": False, "revert": True, **extra}
    with pytest.raises(InvalidRequest, match="a revert takes no services, migrations"):
        validate_request(["api", "worker"], **request)


def test_a_revert_s_request() -> None:
    request = validate_request(["api", "worker"], run_migrations=False, revert=True)
    assert request.as_dict() == {
        "services": ["api", "worker"],
        "run_migrations": False,
        "create_backup": False,
        "dry_run": False,
        "requested_by": None,
        "revert": True,
    }
    assert "revert" not in validate_request(["api"]).as_dict()  # an update's, as before
    with pytest.raises(InvalidRequest, match="revert must be true or false"):
        validate_request(["api"], run_migrations=False, revert="yes")


def test_the_fields_are_the_dataclass_s() -> None:
    assert REQUEST_FIELDS == (
        "services",
        "run_migrations",
        "create_backup",
        "dry_run",
        "requested_by",
        "revert",
        "hosts",
    )


@pytest.mark.parametrize(
    ("fields", "job_kwargs"),
    [
        (
            {},
            {
                "services": None,
                "run_migrations": True,
                "create_backup": False,
                "dry_run": False,
                "requested_by": None,
            },
        ),
        (
            {"services": ["web", "api"], "dry_run": True, "requested_by": "ops"},
            {
                "services": ["web", "api"],
                "run_migrations": True,
                "create_backup": False,
                "dry_run": True,
                "requested_by": "ops",
            },
        ),
        (
            {"run_migrations": False, "revert": True},
            {
                "services": None,
                "run_migrations": False,
                "create_backup": False,
                "dry_run": False,
                "requested_by": None,
                "revert": True,
            },
        ),
    ],
)
def test_the_job_s_keyword_arguments_are_as_before(
    fields: dict[str, Any], job_kwargs: dict[str, Any]
) -> None:
    """What the API side sends: every field, `services` null for the default (the worker
    decides which), `revert` only when set; parsing it again gives the same request."""
    request = UpdateRequest.parse(fields)
    assert request.job_kwargs() == job_kwargs
    assert UpdateRequest.parse(request.job_kwargs()) == request


def test_parsing_refuses_an_unknown_field_without_quoting_it() -> None:
    with pytest.raises(InvalidRequest, match=r"unexpected argument \(invalid name\)"):
        UpdateRequest.parse({"compose file; rm -rf /": "x"})
    with pytest.raises(InvalidRequest, match="unexpected argument compose_file"):
        UpdateRequest.parse({"compose_file": "/etc/x.yml"})


def test_the_default_is_resolved_by_the_worker_only() -> None:
    request = UpdateRequest.parse({"dry_run": True})
    assert request.services == ()  # the API side does not know the allow-list
    assert request.resolve(["api", "web"]).services == ("api", "web")
    assert request.resolve(["api", "web"]).dry_run is True
