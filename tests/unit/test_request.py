"""UpdateRequest (worker/shared/request.py): parsed once per side, resolved by the worker
against its allow-list, sent as the job's keyword arguments."""

from typing import Any

import pytest

from worker.shared.request import (
    HOSTS,
    MAX_HOSTS,
    MAX_SERVICES,
    REQUEST_FIELDS,
    SERVICES,
    InvalidRequest,
    NameList,
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


# The one rule for a job's lists of names (`services`, `hosts`): each case for both lists. None
# in the message column: accepted. `{field}`/`{noun}` stand for the list's own words.
NAME_LIST_CASES = [
    (None, None),
    (["api"], None),
    (("api", "db"), None),
    (["a" * 63], None),
    (["host-1.example.com", "group_a", "10.0.0.1"], None),
    ("api", "{field} must be a non-empty list of"),
    ([], "{field} must be a non-empty list of"),
    ({"api": True}, "{field} must be a non-empty list of"),
    (["api", "db;id"], "invalid {noun} name at {field}[1]: "),
    ([""], "invalid {noun} name at {field}[0]: "),
    (["a" * 64], "invalid {noun} name at {field}[0]: "),
    (["-api"], "invalid {noun} name at {field}[0]: "),
    (["api\n"], "invalid {noun} name at {field}[0]: "),
    (["web*"], "invalid {noun} name at {field}[0]: "),
    (["all:!db"], "invalid {noun} name at {field}[0]: "),
    (["{{ x }}"], "invalid {noun} name at {field}[0]: "),
    ([1], "invalid {noun} name at {field}[0]: "),
    ([None], "invalid {noun} name at {field}[0]: "),
]


@pytest.mark.parametrize("rule", [SERVICES, HOSTS], ids=lambda rule: rule.field)
@pytest.mark.parametrize(("names", "message"), NAME_LIST_CASES)
def test_one_rule_checks_every_list_of_names(
    rule: NameList, names: object, message: str | None
) -> None:
    if message is None:
        rule.check(names)
        assert UpdateRequest.parse({rule.field: names}) is not None  # the request's own check
        return
    expected = message.format(field=rule.field, noun=rule.noun)
    for check in (rule.check, lambda value: UpdateRequest.parse({rule.field: value})):
        with pytest.raises(InvalidRequest) as refused:
            check(names)
        assert str(refused.value).startswith(expected)
        assert "db;id" not in str(refused.value) and "{{" not in str(refused.value)


@pytest.mark.parametrize(("rule", "limit"), [(SERVICES, MAX_SERVICES), (HOSTS, MAX_HOSTS)])
def test_a_list_of_names_has_a_limit(rule: NameList, limit: int) -> None:
    rule.check([f"n{i}" for i in range(limit)])
    with pytest.raises(InvalidRequest, match=f"^{rule.field} lists more than {limit} names$"):
        rule.check([f"n{i}" for i in range(limit + 1)])


def test_a_repeated_name_is_dropped_from_services_and_refused_in_hosts() -> None:
    SERVICES.check(["api", "api"])
    with pytest.raises(InvalidRequest, match=r"^hosts names a host or group twice$"):
        HOSTS.check(["web1", "web1"])


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
