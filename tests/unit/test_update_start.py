"""The role's update_start module (playbooks/roles/compose_update/library/update_start.py,
issue 20): preflight, lock and snapshot in one module process, each only when the one before
succeeded, with the lock and rollback point named as before (update_preflight's lock_base, which
vars/main.yml used to work out in Jinja)."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace
from typing import Any

import pytest

from .playbook_code import load

start = load("library/update_start")
preflight = load("library/update_preflight")

INFO = '{"ID": "abc", "DockerRootDir": "/var/lib/docker"}'


@pytest.mark.parametrize(
    ("info_text", "key_source"),
    [
        (INFO, "abc /var/lib/docker"),
        ("WARNING: No swap limit support\n" + INFO, "abc /var/lib/docker"),
        ('{"ID": "abc"}', "abc "),  # Jinja's default(''): a missing field is empty
        ("Cannot connect to the Docker daemon", " "),
    ],
)
def test_the_lock_base_names_the_project_and_the_daemon(info_text: str, key_source: str) -> None:
    """The role's former Jinja: (ID ~ ' ' ~ DockerRootDir) | hash('sha1'), first 12 digits."""
    key = hashlib.sha1(key_source.encode()).hexdigest()[:12]  # noqa: S324 - a name
    assert preflight.lock_base("/locks", "shop", info_text) == f"/locks/shop.{key}"


FOUND: dict[str, Any] = {
    "changed": False,
    "preflight_error": None,
    "project": "Shop",
    "targets": ["api"],
    "service_image": {"api": "reg/app:1"},
    "service_restart": {"api": "always"},
    "health_timeout": 60,
    "lock_max_age": 1800,
    "lock_base": "/locks/Shop.k",
    "context_host": "",
}
PARAMS = {
    "job_id": "j1",
    "requested_by": "admin",
    "project_dir": "/srv/app",
    "compose_files": ["/srv/app/compose.yml"],
    "profiles": [],
    "env_files": [],
}


def run(
    monkeypatch: pytest.MonkeyPatch,
    found: dict[str, Any],
    lock_result: dict[str, Any],
    environ: dict[str, str] | None = None,
) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    calls: list[tuple[str, Any]] = []

    def fake_lock(params: dict[str, Any], *_a: Any, **_k: Any) -> dict[str, Any]:
        calls.append(("lock", params))
        return dict(lock_result)

    def fake_snapshot(params: dict[str, Any], check_mode: bool) -> dict[str, Any]:
        calls.append(("snapshot", params))
        return {"changed": False, "snapshot": {"api": None}, "states": {}}

    monkeypatch.setattr(start, "preflight", SimpleNamespace(run_task=lambda _p: dict(found)))
    monkeypatch.setattr(start, "lock", SimpleNamespace(run_task=fake_lock))
    monkeypatch.setattr(start, "snapshot", SimpleNamespace(run_task=fake_snapshot))
    result = start.run_task(PARAMS, 1, lambda _w: None, environ={} if environ is None else environ)
    return result, calls


TAKEN = {"changed": True, "acquired": True, "token": "t", "path": "/locks/Shop.k.lock"}
REFUSED = {"failed": True, "acquired": False, "msg": "Another update of project 'Shop' is running"}


@pytest.mark.parametrize(
    ("found", "lock_result", "steps", "keys"),
    [
        (FOUND, TAKEN, ["lock", "snapshot"], {"lock", "before"}),
        (FOUND, REFUSED, ["lock"], {"lock"}),  # no snapshot, no rollback point without the lock
        (dict(FOUND, preflight_error="Unknown service(s) x"), TAKEN, [], set()),
    ],
)
def test_each_step_runs_only_when_the_one_before_succeeded(
    monkeypatch: pytest.MonkeyPatch,
    found: dict[str, Any],
    lock_result: dict[str, Any],
    steps: list[str],
    keys: set[str],
) -> None:
    result, calls = run(monkeypatch, found, lock_result)
    assert [name for name, _ in calls] == steps
    assert {"lock", "before"} & set(result) == keys
    assert result.get("changed") is False


def test_the_lock_and_the_rollback_point_are_the_ones_the_role_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _result, calls = run(monkeypatch, FOUND, TAKEN)
    lock_params, snapshot_params = calls[0][1], calls[1][1]
    assert lock_params["path"] == "/locks/Shop.k.lock"
    assert (
        lock_params["rollback_point"]
        == snapshot_params["rollback_point"]
        == ("/locks/Shop.k.rollback.json")
    )
    assert lock_params["migration_marker"] == "/locks/Shop.k.migration-pending"
    assert lock_params["state"] == "present" and not lock_params["allow_rollback_point"]
    assert (lock_params["job_id"], lock_params["requested_by"]) == ("j1", "admin")
    assert snapshot_params["keep_images"] == "update-executor-rollback/shop"
    record = snapshot_params["rollback_record"]
    assert record["job_id"] == "j1" and record["targets"] == ["api"]
    assert record["health_timeout"] == 60 and record["service_restart"] == {"api": "always"}


@pytest.mark.parametrize(
    ("environ", "context_host", "expected"),
    [
        ({}, "unix:///ctx.sock", "unix:///ctx.sock"),  # the context's daemon, as later tasks get it
        ({"DOCKER_HOST": "tcp://h:2375"}, "", "tcp://h:2375"),
        ({}, "", None),
    ],
)
def test_the_lock_and_the_snapshot_reach_the_daemon_of_every_later_step(
    monkeypatch: pytest.MonkeyPatch,
    environ: dict[str, str],
    context_host: str,
    expected: str | None,
) -> None:
    run(monkeypatch, dict(FOUND, context_host=context_host), TAKEN, environ)
    assert environ.get("DOCKER_HOST") == expected
