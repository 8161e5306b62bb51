"""`update-executor revert`'s record (issue 25): the role's lock module keeps a successful
update's rollback point as the last-update record with its images referenced as
update-executor-last/..., replaces it at the next such update, and removes it once a revert
used it; the revert's step message. Docker is replaced by recorders of its commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from worker.host.summary import Step, step_messages
from worker.shared.request import UpdateRequest

from .playbook_code import load

lock = load("library/update_lock")


@pytest.fixture
def docker(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(lock, "tag", lambda source, target: calls.append(("tag", source, target)))
    monkeypatch.setattr(lock, "untag", lambda refs: calls.append(("rm", *refs)) if refs else None)
    return calls


def point(path: Path, job_id: str, services: list[str]) -> Path:
    kept = [f"update-executor-rollback/app:{s}" for s in services]
    path.write_text(json.dumps({"job_id": job_id, "before": {}, "kept_images": kept}))
    return path


def test_a_successful_update_s_point_becomes_the_last_update_record(
    tmp_path: Path, docker: list[tuple[str, ...]]
) -> None:
    last = tmp_path / "app.k.last.json"
    lock.keep_as_last_update(str(point(tmp_path / "p1", "j1", ["api", "web"])), str(last), print)
    assert json.loads(last.read_text())["kept_images"] == [
        "update-executor-last/app:api",
        "update-executor-last/app:web",
    ]
    assert docker == [
        ("tag", "update-executor-rollback/app:api", "update-executor-last/app:api"),
        ("tag", "update-executor-rollback/app:web", "update-executor-last/app:web"),
    ]
    assert oct(last.stat().st_mode & 0o777) == "0o600"

    docker.clear()  # the next update, of api only, replaces it: web's reference goes
    lock.keep_as_last_update(str(point(tmp_path / "p2", "j2", ["api"])), str(last), print)
    record = json.loads(last.read_text())
    assert (record["job_id"], record["kept_images"]) == ("j2", ["update-executor-last/app:api"])
    assert docker[-1] == ("rm", "update-executor-last/app:web")


def test_a_revert_removes_the_record_and_its_references(
    tmp_path: Path, docker: list[tuple[str, ...]]
) -> None:
    last = tmp_path / "app.k.last.json"
    last.write_text(
        json.dumps({"kept_images": ["update-executor-last/app:api", "/etc/passwd", "x:y"]})
    )
    lock.remove_last_update(str(last), print)
    assert not last.exists()
    assert docker == [("rm", "update-executor-last/app:api")]  # only references of the role


def test_the_release_keeps_the_point_only_when_asked(
    tmp_path: Path, docker: list[tuple[str, ...]]
) -> None:
    path = tmp_path / "app.k.lock"
    holder = lock.make_holder("app", "j1", "", None, 1.0, user="root", host="h")
    assert lock.write_new(str(path), holder)
    rollback_point = point(tmp_path / "app.k.rollback.json", "j1", ["api"])
    last = tmp_path / "app.k.last.json"
    params: dict[str, Any] = {
        **{name: spec.get("default") for name, spec in lock.ARGUMENT_SPEC.items()},
        "path": str(path),
        "state": "absent",
        "token": holder["token"],
        "rollback_point": str(rollback_point),
        "remove_rollback_point": True,
        "last_update": str(last),
        "keep_as_last_update": True,
    }
    result = lock.run_task(params, 1, print)
    assert result["released"] is True
    assert not rollback_point.exists()
    assert json.loads(last.read_text())["job_id"] == "j1"
    assert ("rm", "update-executor-rollback/app:api") in docker


@pytest.mark.parametrize(
    ("rollback", "message"),
    [
        (
            {"api": {"action": "restored"}, "web": None},
            "reverted to the images from before job j1: api",
        ),
        (
            {"api": None},
            "nothing to put back: the services already run the images from before job j1",
        ),
    ],
)
def test_the_revert_step_says_what_it_put_back(rollback: dict[str, Any], message: str) -> None:
    request = UpdateRequest(services=("api", "web"), run_migrations=False, revert=True)
    report = {"targets": ["api", "web"], "rollback": rollback, "revert_of": "j1"}
    assert step_messages(request, report, {})[Step.rollback] == message
