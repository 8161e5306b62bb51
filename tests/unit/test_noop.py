"""A no-op update is found after the pull by image ID (issue 20): then nothing is recreated and
the migration runs only when an earlier one is pending (the marker next to the lock, written
and read by update_lock). Table-driven over the role's filters, the lock module's marker and the
worker's summary of such a run."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.summary_schema import assert_valid_summary
from tests.unit.playbook_code import load
from worker.host.progress import StepTracker
from worker.host.summary import RunOutcome, build_summary
from worker.shared.progress import EntryKind
from worker.shared.request import UpdateRequest
from worker.shared.result import UpdateStatus

plan = load("filter_plugins/compose_update_plan")
lock = load("library/update_lock")

REF = "reg/app:latest"
IMAGES = {"api": REF, "init": REF}
RESTART = {"api": "always", "init": "no"}
OLD, NEW = "sha256:old", "sha256:new"
NOOP_REASON = "skipped: no container was recreated and no earlier migration is pending"


def entry(image_id: str) -> dict[str, Any]:
    return {"container_id": "c", "image_id": image_id, "digest": None, "state": "running"}


RUNNING = {"status": "running", "running": True, "health": "healthy", "exit_code": 0}
DONE = {"status": "exited", "running": False, "health": "", "exit_code": 0}
BOTH = {"api": entry(OLD), "init": entry(OLD)}
BOTH_OK = {"api": RUNNING, "init": DONE}


@pytest.mark.parametrize(
    ("before", "states", "current", "expected"),
    [
        pytest.param(BOTH, BOTH_OK, {REF: OLD}, True, id="every-target-runs-its-image"),
        # The pull read "unchanged" (no layer downloaded), but the tag moved: not a no-op.
        pytest.param(BOTH, BOTH_OK, {REF: NEW}, False, id="tag-moved-to-an-image-on-the-host"),
        pytest.param(
            {"api": None, "init": entry(OLD)},
            {"init": DONE},
            {REF: OLD},
            False,
            id="no-container-yet",
        ),
        pytest.param(
            {"init": entry(OLD)}, {"init": DONE}, {REF: OLD}, False, id="target-missing-in-snapshot"
        ),
        pytest.param(
            BOTH,
            {"api": {**RUNNING, "status": "exited"}, "init": DONE},
            {REF: OLD},
            False,
            id="stopped",
        ),
        pytest.param(
            BOTH,
            {"api": {**RUNNING, "status": "restarting"}, "init": DONE},
            {REF: OLD},
            False,
            id="restarting",
        ),
        pytest.param(
            BOTH,
            {"api": {**RUNNING, "health": "unhealthy"}, "init": DONE},
            {REF: OLD},
            False,
            id="unhealthy",
        ),
        pytest.param(
            BOTH,
            {"api": {**RUNNING, "health": "starting"}, "init": DONE},
            {REF: OLD},
            False,
            id="starting",
        ),
        pytest.param(
            BOTH,
            {"api": {**RUNNING, "health": ""}, "init": DONE},
            {REF: OLD},
            True,
            id="no-healthcheck",
        ),
        pytest.param(
            BOTH,
            {"api": RUNNING, "init": {**DONE, "exit_code": 1}},
            {REF: OLD},
            False,
            id="one-shot-failed",
        ),
        pytest.param(
            BOTH, {"api": RUNNING, "init": RUNNING}, {REF: OLD}, False, id="one-shot-still-running"
        ),
        pytest.param(BOTH, {"api": RUNNING}, {REF: OLD}, False, id="one-shot-state-unknown"),
        pytest.param(BOTH, BOTH_OK, {}, False, id="reference-not-looked-at"),
        pytest.param(BOTH, BOTH_OK, {REF: ""}, False, id="reference-not-on-the-host"),
    ],
)
def test_noop(
    before: dict[str, Any], states: dict[str, Any], current: dict[str, str], expected: bool
) -> None:
    assert plan.noop(["api", "init"], IMAGES, RESTART, before, states, current) is expected


def test_no_targets_is_not_a_noop() -> None:
    assert plan.noop([], {}, {}, {}, {}, {}) is False
    assert plan.noop(None, None, None, None, None, None) is False


@pytest.mark.parametrize(
    ("was_pending", "recreated", "migrated", "rolled_back", "expected"),
    [
        pytest.param(False, False, False, False, False, id="noop-nothing-pending"),
        pytest.param(True, False, False, False, True, id="noop-pending-migration-not-run"),
        pytest.param(True, False, True, False, False, id="noop-ran-the-pending-migration"),
        pytest.param(False, True, True, False, False, id="update-migrated"),
        pytest.param(False, True, False, False, True, id="update-without-migration-or-failed-kept"),
        pytest.param(False, True, False, True, False, id="rolled-back-nothing-was-pending"),
        pytest.param(True, True, False, True, True, id="rolled-back-still-pending"),
        pytest.param(
            True, True, True, True, True, id="migrated-then-rolled-back-keeps-the-state-before"
        ),
    ],
)
def test_migration_pending(
    was_pending: bool, recreated: bool, migrated: bool, rolled_back: bool, expected: bool
) -> None:
    assert plan.migration_pending(was_pending, recreated, migrated, rolled_back) is expected


@pytest.mark.parametrize(
    ("noop", "was_pending", "run_migrations", "check_mode", "expected"),
    [
        pytest.param(True, False, True, False, NOOP_REASON, id="noop"),
        pytest.param(True, True, True, False, None, id="noop-with-a-pending-migration-runs-it"),
        pytest.param(False, False, True, False, None, id="an-update-runs-it"),
        pytest.param(True, False, False, False, "not requested", id="not-requested"),
        pytest.param(False, True, True, True, "dry run: not run", id="dry-run"),
    ],
)
def test_migration_skip_reason(
    noop: bool, was_pending: bool, run_migrations: bool, check_mode: bool, expected: str | None
) -> None:
    assert plan.migration_skip_reason(noop, was_pending, run_migrations, check_mode) == expected


def params(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    base = {name: spec.get("default") for name, spec in lock.ARGUMENT_SPEC.items()}
    base.update(path=str(tmp_path / "app.lock"), project="app", job_id="1")
    base.update(extra)
    return base


def take(tmp_path: Path, marker: Path) -> dict[str, Any]:
    taken: dict[str, Any] = lock.run_task(params(tmp_path, migration_marker=str(marker)), 1, print)
    assert taken["acquired"] is True, taken
    return taken


def release(
    tmp_path: Path, token: str, marker: Path, pending: bool | None, **extra: Any
) -> dict[str, Any]:
    released: dict[str, Any] = lock.run_task(
        params(
            tmp_path,
            state="absent",
            token=token,
            migration_marker=str(marker),
            migration_pending=pending,
        ),
        1,
        print,
        **extra,
    )
    return released


def test_the_migration_marker_is_read_at_the_lock_and_written_at_its_release(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "app.migration-pending"
    taken = take(tmp_path, marker)
    assert taken["migration_pending"] is False
    released = release(tmp_path, taken["token"], marker, True)
    assert released["released"] is True and released["migration_pending"] is True
    assert marker.is_file() and marker.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [marker.name]  # no partial file left
    taken = take(tmp_path, marker)
    assert taken["migration_pending"] is True
    assert release(tmp_path, taken["token"], marker, True)["migration_pending"] is True  # stays
    taken = take(tmp_path, marker)
    assert release(tmp_path, taken["token"], marker, False)["migration_pending"] is False
    assert list(tmp_path.iterdir()) == []


def test_without_migration_pending_the_marker_is_left_alone(tmp_path: Path) -> None:
    """The rollback playbook releases the lock without saying: the marker stays as it was."""
    marker = tmp_path / "app.migration-pending"
    marker.touch(mode=0o600)
    taken = take(tmp_path, marker)
    released = release(tmp_path, taken["token"], marker, None)
    assert released["released"] is True and "migration_pending" not in released
    assert marker.exists()


def test_only_the_holder_of_the_lock_writes_the_marker(tmp_path: Path) -> None:
    marker = tmp_path / "app.migration-pending"
    taken = take(tmp_path, marker)
    other = release(tmp_path, "not-the-token", marker, True)
    assert other["released"] is False and not marker.exists()
    release(tmp_path, taken["token"], marker, False)
    assert not (tmp_path / "app.lock").exists()
    late = release(tmp_path, taken["token"], marker, True)  # released already
    assert late["released"] is False and not marker.exists()


def test_check_mode_writes_no_marker(tmp_path: Path) -> None:
    marker = tmp_path / "app.migration-pending"
    taken = take(tmp_path, marker)
    released = release(tmp_path, taken["token"], marker, True, check_mode=True)
    assert not marker.exists() and "migration_pending" not in released
    checked = lock.run_task(
        params(tmp_path, migration_marker=str(marker)), 1, print, check_mode=True
    )
    assert checked["acquired"] is False and not marker.exists()


def test_a_planted_symlink_is_neither_followed_nor_read_as_a_marker(tmp_path: Path) -> None:
    victim = tmp_path / "elsewhere"
    victim.mkdir()
    target = victim / "file"
    target.write_text("keep")
    marker = tmp_path / "app.migration-pending"
    marker.symlink_to(target)
    taken = take(tmp_path, marker)
    assert taken["migration_pending"] is False  # a symlink is not a marker
    release(tmp_path, taken["token"], marker, True)
    assert target.read_text() == "keep"
    assert marker.is_file() and not marker.is_symlink()  # replaced, not followed
    taken = take(tmp_path, marker)
    marker.unlink()
    marker.symlink_to(target)
    release(tmp_path, taken["token"], marker, False)
    assert not marker.is_symlink() and target.read_text() == "keep"


def test_a_marker_elsewhere_than_next_to_the_lock_is_refused_and_the_lock_still_released(
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "other"
    elsewhere.mkdir(mode=0o700)
    marker = elsewhere / "app.migration-pending"
    taken = take(tmp_path, marker)
    released = release(tmp_path, taken["token"], marker, True)
    assert released["failed"] is True and "next to the lock" in released["msg"]
    assert released["released"] is True and not (tmp_path / "app.lock").exists()
    assert not marker.exists()


def test_a_lock_directory_others_may_write_to_gets_no_marker(tmp_path: Path) -> None:
    marker = tmp_path / "app.migration-pending"
    taken = take(tmp_path, marker)
    os.chmod(tmp_path, 0o770)  # noqa: S103 - the unsafe directory under test
    try:
        released = release(tmp_path, taken["token"], marker, True)
    finally:
        os.chmod(tmp_path, 0o700)
    assert released["failed"] is True and "writable by its group or others" in released["msg"]
    assert released["released"] is True and not marker.exists()


T0 = datetime(2026, 11, 28, 1, 0, 0, tzinfo=UTC)
SNAPSHOT = {"container_id": "c1", "image_id": OLD, "digest": "sha256:d1"}


def event(task: str, kind: str = "runner_on_ok", **res: Any) -> dict[str, Any]:
    return {
        "event": kind,
        "event_data": {
            "task": task,
            "start": T0.isoformat(),
            "end": (T0 + timedelta(seconds=1)).isoformat(),
            "duration": 1.0,
            "res": {"changed": False, **res},
        },
    }


def test_the_summary_of_a_noop_says_why_the_migration_was_skipped() -> None:
    report = {
        "compose_project": "app",
        "targets": ["api"],
        "skipped": {},
        "services": {
            "api": {"image": REF, "before": SNAPSHOT, "after": SNAPSHOT, "health": "healthy"}
        },
        "migrations": {"ran": False, "rc": None, "output_tail": "", "skip_reason": NOOP_REASON},
    }
    events = [
        event("Preflight | Check"),
        event("Lock | Take", acquired=True),
        event("Snapshot | Record"),
        event("Pull | Pull"),
        event("Pull | Read which image each target's reference points at now"),
        event("Recreate | Keep the state before as the state after when compose changed nothing"),
        event("Migrations | Run", "runner_on_skipped", skip_reason="Conditional result was False"),
        event("Report | Release", released=True),
        {
            "event": "playbook_on_stats",
            "event_data": {"ok": {"h": 7}, "artifact_data": {"update_executor": report}},
        },
    ]
    summary = build_summary(
        job_id="j1",
        request=UpdateRequest(services=("api",)),
        outcome=RunOutcome(status=UpdateStatus.successful, events=events, rc=0),
        started_at=T0,
        finished_at=T0 + timedelta(seconds=3),
    ).as_dict()
    assert_valid_summary(summary)
    assert summary["status"] == "successful"
    steps = {step["name"]: step for step in summary["steps"]}
    assert (
        steps["recreate"]["status"] == "ok" and steps["recreate"]["message"] == "no image changed"
    )
    assert steps["migrations"]["status"] == "skipped"
    assert steps["migrations"]["message"] == NOOP_REASON
    assert summary["migrations"] == {"ran": False, "rc": None, "output_tail": ""}
    assert summary["services"]["api"]["updated"] is False


def test_the_progress_stream_says_why_a_noops_migration_was_skipped() -> None:
    """The stream ends the migration step skipped with no message (ansible only says its
    condition was false); once the summary is built from the same tracker, a last
    `step_ended` gives its reason."""
    report = {"targets": ["api"], "migrations": {"ran": False, "skip_reason": NOOP_REASON}}
    events = [
        {"event": "playbook_on_task_start", "event_data": {"task": "Migrations | Run"}},
        event("Migrations | Run", "runner_on_skipped", skip_reason="Conditional result was False"),
        event("Report | Release", released=True),
        {
            "event": "playbook_on_stats",
            "event_data": {"artifact_data": {"update_executor": report}},
        },
    ]
    tracker = StepTracker()
    for at, each in enumerate(events):
        tracker.feed(each, T0 + timedelta(seconds=at))
    summary = build_summary(
        job_id="j1",
        request=UpdateRequest(services=("api",)),
        outcome=RunOutcome(status=UpdateStatus.successful, events=events, rc=0),
        started_at=T0,
        finished_at=T0 + timedelta(seconds=3),
        steps=tracker,
    )
    assert {s.name: s.message for s in summary.steps}["migrations"] == NOOP_REASON
    entries = tracker.finish(T0 + timedelta(seconds=4))
    assert [(e.kind, e.name, e.status, e.message) for e in entries] == [
        (EntryKind.step_ended, "migrations", "skipped", NOOP_REASON)
    ]
    assert tracker.finish(T0 + timedelta(seconds=5)) == []  # said once
