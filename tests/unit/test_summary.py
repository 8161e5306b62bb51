"""Summary building over ansible-runner events: the captured runs in tests/unit/data are real
event streams of playbooks/update.yml (see tests/unit/data/README.md); the small tables below
cover the branches a real run rarely shows."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.summary_schema import assert_valid_summary
from worker.host.steps import StepTracker
from worker.host.summary import (
    HOOK_STEPS,
    RunOutcome,
    ansible_stats,
    build_summary,
    did_bookkeeping,
    failure_message,
    step_of_task,
)
from worker.shared.client import failure_summary
from worker.shared.request import UpdateRequest
from worker.shared.result import (
    NOT_REACHED,
    Step,
    StepStatus,
    UpdateStatus,
    rejected_summary,
)
from worker.shared.serialization import RemoteJobError

DATA = Path(__file__).resolve().parent / "data"
T0 = datetime(2026, 11, 28, 1, 0, 0, tzinfo=UTC)
REQUEST = UpdateRequest(services=("api", "worker"))


def task_event(
    task: str, kind: str = "runner_on_ok", *, changed: bool = False, secs: float = 1.0, **res: Any
) -> dict[str, Any]:
    start = T0
    return {
        "event": kind,
        "event_data": {
            "task": task,
            "start": start.isoformat(),
            "end": (start + timedelta(seconds=secs)).isoformat(),
            "duration": secs,
            "res": {"changed": changed, **res},
        },
    }


def stats_event(report: dict[str, Any] | None, failures: int = 0) -> dict[str, Any]:
    return {
        "event": "playbook_on_stats",
        "event_data": {
            "ok": {"localhost": 10},
            "changed": {"localhost": 2},
            "failures": {"localhost": failures} if failures else {},
            "dark": {},
            "skipped": {"localhost": 1},
            "artifact_data": {"update_executor": report} if report is not None else {},
        },
    }


REPORT = {
    "compose_project": "app",
    "targets": ["api", "worker"],
    "skipped": {},
    "services": {
        "api": {
            "image": "ghcr.io/acme/app:latest",
            "before": {"container_id": "c1", "image_id": "sha256:old", "digest": "sha256:d1"},
            "after": {"container_id": "c2", "image_id": "sha256:new", "digest": "sha256:d2"},
            "health": "healthy",
        },
        "worker": {
            "image": "ghcr.io/acme/app:latest",
            "before": {"container_id": "c3", "image_id": "sha256:new", "digest": "sha256:d2"},
            "after": {"container_id": "c3", "image_id": "sha256:new", "digest": "sha256:d2"},
            "health": "running",
        },
    },
    "migrations": {"ran": True, "rc": 0, "output_tail": "migrated to 2"},
}


def summarize(events: list[dict[str, Any]], status: UpdateStatus, **kw: Any) -> dict[str, Any]:
    outcome = RunOutcome(status=status, events=events, rc=0, **kw)
    summary = build_summary(
        job_id="j1",
        request=kw.pop("request", REQUEST),
        outcome=outcome,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=12.5),
    ).as_dict()
    return assert_valid_summary(summary)


@pytest.mark.parametrize(
    ("name", "step"),
    [
        ("Preflight | Check that the Docker daemon answers", Step.preflight),
        ("Pull | Pull the new images", Step.pull),
        ("migrations|run", Step.migrations),
        ("Gathering Facts", None),
        ("Unknown | something", None),
        ("", None),
    ],
)
def test_step_of_task(name: str, step: Step | None) -> None:
    assert step_of_task(name) is step


def test_a_successful_update() -> None:
    events = [
        task_event("Preflight | Check docker", secs=0.5),
        task_event("Login | Log in", changed=True),
        task_event("Snapshot | Read containers"),
        task_event("Pull | Pull images", changed=True, secs=3),
        task_event("Recreate | Up", changed=True, secs=4),
        task_event("Migrations | Run", changed=True),
        task_event("Report | Publish"),
        stats_event(REPORT),
    ]
    summary = summarize(events, UpdateStatus.successful)
    assert summary["status"] == "successful"
    assert summary["error"] is None
    assert summary["duration_s"] == 12.5
    # every step, in order; the lifecycle-hook steps only when a hook ran (none here)
    assert [s["name"] for s in summary["steps"]] == [s.value for s in Step if s not in HOOK_STEPS]
    steps = {s["name"]: s for s in summary["steps"]}
    assert steps["pull"] == {"name": "pull", "status": "changed", "duration_s": 3.0, "message": ""}
    assert steps["recreate"]["message"] == "recreated: api"
    assert steps["migrations"]["message"] == "exit code 0"
    assert summary["services"]["api"]["updated"] is True
    assert summary["services"]["worker"]["updated"] is False
    assert summary["services"]["api"]["after"]["digest"] == "sha256:d2"
    assert summary["migrations"] == {"ran": True, "rc": 0, "output_tail": "migrated to 2"}
    assert summary["stats"]["ok"] == 10
    assert summary["compose_project"] == "app"


def test_a_failed_step_names_itself_and_later_steps_are_not_reached() -> None:
    events = [
        task_event("Preflight | Check docker"),
        task_event("Login | Log in", "runner_on_failed", censored="hidden"),
        task_event("Report | Publish"),
        stats_event({"targets": ["api", "worker"], "services": {}}, failures=1),
    ]
    summary = summarize(events, UpdateStatus.failed)
    steps = {s["name"]: s for s in summary["steps"]}
    assert summary["status"] == "failed"
    assert summary["error"]["step"] == "login"
    assert "no_log" in summary["error"]["message"]
    assert steps["pull"] == {
        "name": "pull",
        "status": "skipped",
        "duration_s": 0.0,
        "message": NOT_REACHED,
    }
    assert steps["report"]["status"] == "ok"
    assert summary["services"]["api"] == {
        "image": None,
        "before": None,
        "after": None,
        "updated": False,
        "health": None,
    }


def test_an_ignored_failure_does_not_fail_the_step() -> None:
    event = task_event("Pull | Pull", "runner_on_failed", msg="nope")
    event["event_data"]["ignore_errors"] = True
    steps = StepTracker.over([event], T0).steps
    assert steps[Step.pull].acc.failed == 0
    assert steps[Step.pull].acc.ok == 1


def test_a_run_that_failed_outside_any_task_reports_the_playbook() -> None:
    summary = summarize([], UpdateStatus.failed, error="ERROR! the playbook is broken")
    assert summary["error"] == {"step": "playbook", "message": "ERROR! the playbook is broken"}
    assert all(s["status"] == "skipped" for s in summary["steps"])


def test_a_timeout_names_the_step_that_was_running() -> None:
    events = [
        task_event("Preflight | Check docker"),
        {"event": "playbook_on_task_start", "event_data": {"task": "Recreate | Up"}},
    ]
    summary = summarize(events, UpdateStatus.timeout)
    assert summary["status"] == "timeout"
    assert summary["error"] == {"step": "recreate", "message": "the update ran out of time"}


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({"msg": "pull failed"}, "pull failed"),
        ({"msg": "non-zero return code", "stderr": "boom"}, "non-zero return code: boom"),
        ({"stderr": "only stderr"}, "only stderr"),
        ({"msg": "same: boom", "stderr": "boom"}, "same: boom"),
        ({}, "failed"),
        ({"censored": "the output has been hidden"}, "hidden (no_log)"),
        ({"msg": "x" * 5000}, "…" + "x" * 999),
    ],
)
def test_failure_message(result: dict[str, Any], message: str) -> None:
    assert message in failure_message(result)
    assert len(failure_message(result)) <= 1000


def test_ansible_stats_sums_hosts_and_renames_dark() -> None:
    data = {"ok": {"a": 1, "b": 2}, "dark": {"a": 1}, "changed": {}}
    assert ansible_stats(data) == {
        "ok": 3,
        "changed": 0,
        "failures": 0,
        "unreachable": 1,
        "skipped": 0,
        "rescued": 0,
        "ignored": 0,
    }


def test_a_rejected_job_has_a_schema_valid_summary() -> None:
    summary = rejected_summary(
        job_id="j", message="services not allowed for update: db", started_at=T0, finished_at=T0
    ).as_dict()
    assert_valid_summary(summary)
    assert summary["error"]["step"] == "validation"
    assert summary["steps"] == []


@pytest.mark.parametrize(
    ("error", "status", "text"),
    [
        (asyncio.CancelledError(), "canceled", "aborted"),
        (TimeoutError(), "timeout", "JOB_TIMEOUT"),
        (RemoteJobError("JobExecutionFailed", "max 1 retries exceeded"), "failed", "interrupted"),
        (RemoteJobError("ValueError", "boom"), "failed", "the worker failed"),
        ("unable to serialize result", "failed", "no usable result"),
    ],
)
def test_queue_level_failures_are_never_success(error: object, status: str, text: str) -> None:
    summary = assert_valid_summary(failure_summary("j", error, None))
    assert summary["status"] == status
    assert text in summary["error"]["message"]


@pytest.mark.parametrize("path", sorted(DATA.glob("*.events.json")), ids=lambda p: p.name)
def test_captured_runs(path: Path) -> None:
    """Each capture holds a real event stream and what its summary must say."""
    capture = json.loads(path.read_text())
    request = UpdateRequest(
        **{**capture["request"], "services": tuple(capture["request"]["services"])}
    )
    outcome = RunOutcome(status=UpdateStatus(capture["runner_status"]), events=capture["events"])
    summary = build_summary(
        job_id="captured", request=request, outcome=outcome, started_at=T0, finished_at=T0
    ).as_dict()
    assert_valid_summary(summary)
    expected = capture["expect"]
    assert summary["status"] == expected["status"]
    assert {s["name"]: s["status"] for s in summary["steps"]} == expected["steps"]
    assert (summary["error"] or {}).get("step") == expected.get("error_step")
    assert {n: s["updated"] for n, s in summary["services"].items()} == expected["updated"]


@pytest.mark.parametrize(
    ("status", "updated", "expected"),
    [
        (StepStatus.ok, [True, False], StepStatus.changed),  # compose did not say it pulled
        (StepStatus.changed, [False, False], StepStatus.ok),  # nothing new came down
        (StepStatus.changed, [True], StepStatus.changed),
        (StepStatus.failed, [True], StepStatus.failed),
        (StepStatus.skipped, [False], StepStatus.skipped),
    ],
)
def test_the_pull_step_says_changed_when_a_target_got_a_new_image(
    status: StepStatus, updated: list[bool], expected: StepStatus
) -> None:
    kind = {StepStatus.failed: "runner_on_failed", StepStatus.skipped: "runner_on_skipped"}
    events = [
        task_event(
            "Pull | Pull", kind.get(status, "runner_on_ok"), changed=status is StepStatus.changed
        ),
        task_event("Recreate | Up"),
    ]
    tracker = StepTracker.over(events, T0)
    tracker.settle_pull(any(updated))
    steps = {s.name: s.status for s in tracker.results({})}
    assert steps["pull"] is expected
    assert steps["recreate"] is StepStatus.ok


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"changed": False, "acquired": True}, True),  # the lock taken
        ({"changed": False, "acquired": False, "released": True}, True),  # the lock released
        ({"changed": False, "login_result": {"Status": "Login Succeeded"}}, True),
        ({"changed": False, "acquired": False}, False),  # check mode: the lock only checked
        ({"changed": False}, False),
    ],
)
def test_the_runs_bookkeeping_shows_as_its_steps_work(
    result: dict[str, object], expected: bool
) -> None:
    """Issue 13: the role reports the lock and the login as no change of the host (a no-op
    update has changed=0); the summary still shows them as the step's work."""
    assert did_bookkeeping(result) is expected
