"""A no-op update is found after the pull by image ID (issue 20): then nothing is recreated and
the migration runs only when an earlier one is pending (the marker next to the lock)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.playbook_code import load

plan = load("filter_plugins/compose_update_plan")
lock = load("library/update_lock")

REF = "reg/app:latest"
IMAGES = {"api": REF, "init": REF}
RESTART = {"api": "always", "init": "no"}
OLD, NEW = "sha256:old", "sha256:new"


def entry(image_id: str) -> dict[str, Any]:
    return {
        "container_id": "c",
        "image_id": image_id,
        "digest": None,
        "state": "running",
    }


RUNNING = {"status": "running", "running": True, "health": "healthy", "exit_code": 0}
DONE = {"status": "exited", "running": False, "health": "", "exit_code": 0}


@pytest.mark.parametrize(
    ("before", "states", "current", "expected"),
    [
        (
            {"api": entry(OLD), "init": entry(OLD)},
            {"api": RUNNING, "init": DONE},
            {REF: OLD},
            True,
        ),
        # A tag that moved to an image already on the host: the pull changed nothing, IDs differ.
        (
            {"api": entry(OLD), "init": entry(OLD)},
            {"api": RUNNING, "init": DONE},
            {REF: NEW},
            False,
        ),
        (
            {"api": None, "init": entry(OLD)},
            {"init": DONE},
            {REF: OLD},
            False,
        ),  # no container yet
        (
            {"api": entry(OLD), "init": entry(OLD)},
            {"api": {**RUNNING, "status": "exited"}, "init": DONE},
            {REF: OLD},
            False,
        ),
        (
            {"api": entry(OLD), "init": entry(OLD)},
            {"api": {**RUNNING, "health": "unhealthy"}, "init": DONE},
            {REF: OLD},
            False,
        ),
        (
            {"api": entry(OLD), "init": entry(OLD)},
            {"api": RUNNING, "init": {**DONE, "exit_code": 1}},
            {REF: OLD},
            False,
        ),
        (
            {"api": entry(OLD), "init": entry(OLD)},
            {"api": RUNNING, "init": DONE},
            {},
            False,
        ),  # not pulled
        (
            {"api": entry(OLD), "init": entry(OLD)},
            {"api": RUNNING, "init": DONE},
            {REF: ""},
            False,
        ),
    ],
)
def test_noop(
    before: dict[str, Any],
    states: dict[str, Any],
    current: dict[str, str],
    expected: bool,
) -> None:
    assert plan.noop(["api", "init"], IMAGES, RESTART, before, states, current) is expected


def test_no_targets_is_not_a_noop() -> None:
    assert plan.noop([], {}, {}, {}, {}, {}) is False


def params(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    base = {name: spec.get("default") for name, spec in lock.ARGUMENT_SPEC.items()}
    base.update(path=str(tmp_path / "app.lock"), project="app", job_id="1")
    base.update(extra)
    return base


def test_the_migration_marker_is_read_at_the_lock_and_written_at_its_release(
    tmp_path: Path,
) -> None:
    marker = str(tmp_path / "app.migration-pending")
    taken = lock.run_task(params(tmp_path, migration_marker=marker), 1, print)
    assert taken["acquired"] is True and taken["migration_pending"] is False
    released = lock.run_task(
        params(
            tmp_path,
            state="absent",
            token=taken["token"],
            migration_marker=marker,
            migration_pending=True,
        ),
        1,
        print,
    )
    assert released["released"] is True and Path(marker).exists()
    taken = lock.run_task(params(tmp_path, migration_marker=marker), 1, print)
    assert taken["migration_pending"] is True
    lock.run_task(
        params(
            tmp_path,
            state="absent",
            token=taken["token"],
            migration_marker=marker,
            migration_pending=False,
        ),
        1,
        print,
    )
    assert not Path(marker).exists()
