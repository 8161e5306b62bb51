"""Reading the rollback playbook's report and adding it to a cut-off update's summary
(worker/host/rollback.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from worker.host.rollback import rollback_points, rollback_result
from worker.host.settings import Settings
from worker.host.summary import RunOutcome
from worker.shared.cutoff import CutOffRollback, apply_to_summary
from worker.shared.result import StepResult, StepStatus, Summary, UpdateStatus

T0 = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)


def stats(report: dict[str, Any] | None) -> dict[str, Any]:
    data = {} if report is None else {"update_executor_rollback": report}
    return {"event": "playbook_on_stats", "event_data": {"artifact_data": data}}


def failed(msg: str) -> dict[str, Any]:
    return {"event": "runner_on_failed", "event_data": {"res": {"msg": msg}}}


RESTORED = {"image_id": "sha256:old", "health": "healthy", "action": "restored"}
REPORT = {
    "found": True,
    "finished": True,
    "rolled_back": True,
    "rollback": {"api": RESTORED, "worker": None},
    "rollback_error": None,
    "done": "api restored (sha256:old, healthy)",
    "manual": ["docker image tag sha256:old reg/app:latest"],
}


@pytest.mark.parametrize(
    ("outcome", "expected", "ok", "message"),
    [
        (
            RunOutcome(UpdateStatus.successful, [stats(REPORT)]),
            CutOffRollback(
                ran=True,
                found=True,
                finished=True,
                rolled_back=True,
                rollback={"api": RESTORED},
                done="api restored (sha256:old, healthy)",
                manual=["docker image tag sha256:old reg/app:latest"],
            ),
            True,
            "Rolled back: api restored (sha256:old, healthy).",
        ),
        (
            RunOutcome(
                UpdateStatus.successful, [stats({**REPORT, "found": False, "rollback": {}})]
            ),
            CutOffRollback(
                ran=True,
                finished=True,
                rolled_back=True,
                done="api restored (sha256:old, healthy)",
                manual=["docker image tag sha256:old reg/app:latest"],
            ),
            True,
            "Nothing to roll back: it was cut off before anything changed.",
        ),
        (
            RunOutcome(
                UpdateStatus.successful,
                [stats({**REPORT, "rolled_back": False, "rollback": {}, "done": ""})],
            ),
            CutOffRollback(
                ran=True,
                found=True,
                finished=True,
                manual=["docker image tag sha256:old reg/app:latest"],
            ),
            True,
            "Nothing to roll back: no container had been changed yet.",
        ),
        (
            RunOutcome(
                UpdateStatus.failed,
                [
                    failed("compose up failed"),
                    stats(
                        {
                            **REPORT,
                            "finished": False,
                            "rolled_back": False,
                            "rollback_error": "Rollback | Recreate: compose up failed",
                        }
                    ),
                ],
            ),
            None,
            False,
            "THE ROLLBACK FAILED TOO: Rollback | Recreate: compose up failed Restore by hand: "
            "docker image tag sha256:old reg/app:latest",
        ),
        (
            # Docker down: the play fails in preflight, its report still runs (always:).
            RunOutcome(
                UpdateStatus.failed,
                [
                    failed("Error connecting: cannot reach the daemon"),
                    stats({"found": False, "finished": False, "rollback": {}, "manual": []}),
                ],
            ),
            None,
            False,
            "THE ROLLBACK COULD NOT RUN: Error connecting: cannot reach the daemon. Once the "
            "cause is fixed, run `update-executor rollback` on the host (a manual "
            "ansible-playbook run: "
            "playbooks/rollback.yml with its inventory); the next update is refused until then.",
        ),
        (
            RunOutcome(UpdateStatus.failed, [], error="ERROR! the playbook could not be parsed"),
            CutOffRollback(ran=False, error="ERROR! the playbook could not be parsed"),
            False,
            "THE ROLLBACK COULD NOT RUN: ERROR! the playbook could not be parsed. Once the "
            "cause is fixed, run `update-executor rollback` on the host (a manual "
            "ansible-playbook run: "
            "playbooks/rollback.yml with its inventory); the next update is refused until then.",
        ),
    ],
)
def test_rollback_result(
    outcome: RunOutcome, expected: CutOffRollback | None, ok: bool, message: str
) -> None:
    result = rollback_result(outcome)
    if expected is not None:
        assert result == expected
    assert result.ok is ok
    assert result.message() == message


def canceled_summary() -> Summary:
    return Summary(
        job_id="j1",
        status=UpdateStatus.canceled,
        started_at=T0,
        finished_at=T0,
        request=None,
        steps=[StepResult("recreate", StepStatus.failed, 3.0, "not finished")],
        services={},
        migrations={"ran": False, "rc": None, "output_tail": ""},
        stats={},
        error={"step": "recreate", "message": "the update was canceled"},
        rollback={"api": None, "worker": None},
    )


def test_a_rollback_after_a_cancel_goes_into_the_summary() -> None:
    summary = canceled_summary()
    result = rollback_result(RunOutcome(UpdateStatus.successful, [stats(REPORT)]), 12.5)
    apply_to_summary(summary, result)
    assert summary.status is UpdateStatus.canceled
    assert summary.rolled_back is True
    assert summary.rollback == {"api": RESTORED, "worker": None}
    assert summary.rollback_error is None
    assert summary.steps[-1] == StepResult(
        "rollback", StepStatus.changed, 12.5, "Rolled back: api restored (sha256:old, healthy)."
    )
    assert summary.error == {
        "step": "recreate",
        "message": "the update was canceled. Rolled back: api restored (sha256:old, healthy).",
    }


def test_a_failed_rollback_after_a_cancel_is_a_failed_step() -> None:
    summary = canceled_summary()
    apply_to_summary(summary, CutOffRollback(ran=False, error="docker is down"))
    assert summary.rolled_back is False
    assert summary.rollback_error == "docker is down"
    assert summary.steps[-1].status is StepStatus.failed
    assert "THE ROLLBACK COULD NOT RUN: docker is down" in summary.error["message"]  # type: ignore[index]


def test_rollback_points_of_this_project_only(tmp_path: Path) -> None:
    for name in ("app.k1.rollback.json", "other.k1.rollback.json", "app.k1.lock"):
        (tmp_path / name).write_text("{}")
    mine = Settings(lock_dir=tmp_path, compose_project_name="app")
    assert [p.name for p in rollback_points(mine)] == ["app.k1.rollback.json"]
    anyone = Settings(lock_dir=tmp_path)
    assert len(rollback_points(anyone)) == 2
    assert rollback_points(Settings(lock_dir=tmp_path / "missing")) == []
