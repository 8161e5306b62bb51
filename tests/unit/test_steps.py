"""Progress and summary read one StepTracker (worker/host/steps.py), so they agree on every
step: the captured runs of tests/unit/data, and the same runs cut off by a cancel or a
timeout (with the worker's own rollback, or without one in a dry run), go through what
jobs.py does (the tracker fed each event, the rollback step, build_summary, the reporter's
last entries); what a UI folds from the stream says what the summary says."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.summary_schema import assert_valid_summary
from worker.host.progress import job_ended_entry, job_started_entry
from worker.host.steps import ProgressEntry, StepTracker
from worker.host.summary import RunOutcome, build_summary
from worker.shared.cutoff import CutOffRollback, rollback_step_status
from worker.shared.progress import fold_progress
from worker.shared.request import UpdateRequest
from worker.shared.result import UpdateStatus

DATA = Path(__file__).resolve().parent / "data"
T0 = datetime(2026, 11, 28, 1, 0, 0, tzinfo=UTC)

ROLLED_BACK = CutOffRollback(
    ran=True, found=True, finished=True, rolled_back=True, done="api restored", duration_s=4.0
)
NOTHING_CHANGED = CutOffRollback(ran=True, found=False, duration_s=1.0)
ROLLBACK_FAILED = CutOffRollback(ran=False, error="docker is gone", duration_s=2.0)


@dataclass(frozen=True)
class Scenario:
    run: str  # a captured run (tests/unit/data/<run>.events.json)
    status: UpdateStatus | None = None  # None: the captured runner status
    cut_in: str | None = None  # the run stops when this step's first task starts
    rollback: CutOffRollback | None = None  # the worker's own rollback after the cut
    dry_run: bool = False
    # what the summary (and so the progress) says of some steps
    expect: tuple[tuple[str, str], ...] = ()


SCENARIOS = {
    "a full update": Scenario(
        "full_update", expect=(("pull", "changed"), ("migrations", "changed"))
    ),
    "no-op: nothing new": Scenario(
        "nothing_new", expect=(("pull", "ok"), ("recreate", "ok"), ("migrations", "skipped"))
    ),
    "the login failed": Scenario("login_failed", expect=(("login", "failed"), ("pull", "skipped"))),
    "the migration failed, the role rolled back": Scenario(
        "migration_failed", expect=(("migrations", "failed"), ("rollback", "changed"))
    ),
    "refused in preflight": Scenario("unknown_service", expect=(("preflight", "failed"),)),
    "canceled in the migrations, rolled back": Scenario(
        "full_update",
        UpdateStatus.canceled,
        cut_in="Migrations",
        rollback=ROLLED_BACK,
        expect=(("recreate", "changed"), ("migrations", "failed"), ("rollback", "changed")),
    ),
    "canceled in the pull: nothing to put back": Scenario(
        "full_update",
        UpdateStatus.canceled,
        cut_in="Pull",
        rollback=NOTHING_CHANGED,
        expect=(("pull", "failed"), ("recreate", "skipped"), ("rollback", "ok")),
    ),
    "timed out in the recreate, the rollback failed": Scenario(
        "full_update",
        UpdateStatus.timeout,
        cut_in="Recreate",
        rollback=ROLLBACK_FAILED,
        expect=(("recreate", "failed"), ("rollback", "failed")),
    ),
    "a dry run canceled in the pull (no rollback)": Scenario(
        "full_update",
        UpdateStatus.canceled,
        cut_in="Pull",
        dry_run=True,
        expect=(("snapshot", "ok"), ("pull", "failed"), ("rollback", "skipped")),
    ),
}


def captured(run: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{run}.events.json").read_text())
    return data


def cut(events: list[dict[str, Any]], step: str) -> list[dict[str, Any]]:
    """The events up to and with the start of `step`'s first task (then ansible is stopped)."""
    for index, event in enumerate(events):
        task = str((event.get("event_data") or {}).get("task", ""))
        if event["event"] == "playbook_on_task_start" and task.startswith(f"{step} |"):
            return events[: index + 1]
    raise AssertionError(f"no {step} task")


def run_job(scenario: Scenario) -> tuple[dict[str, Any], list[ProgressEntry]]:
    """What jobs.py does with a run's events: the summary and the progress entries."""
    data = captured(scenario.run)
    fields = dict(data["request"], services=tuple(data["request"]["services"]))
    request = UpdateRequest(**{**fields, "dry_run": scenario.dry_run or fields["dry_run"]})
    events = data["events"] if scenario.cut_in is None else cut(data["events"], scenario.cut_in)
    status = scenario.status or UpdateStatus(data["runner_status"] or "successful")
    clock = T0 + timedelta(minutes=5)

    tracker = StepTracker()  # the reporter's, fed from the runner's thread
    entries = [job_started_entry(request, T0)]
    for event in events:
        entries += tracker.feed(event, clock)
    if scenario.rollback is not None:
        entries += tracker.manual("rollback", "started", "", clock)
        verdict = rollback_step_status(scenario.rollback).value
        rollback_at = clock + timedelta(seconds=4)
        entries += tracker.manual("rollback", verdict, scenario.rollback.message(), rollback_at)
    summary = build_summary(
        job_id="job",
        request=request,
        outcome=RunOutcome(status=status, events=events),
        started_at=T0,
        finished_at=clock + timedelta(seconds=5),
        steps=tracker,
        cut_off=scenario.rollback,
    ).as_dict()
    end = clock + timedelta(seconds=6)
    entries += tracker.finish(end)
    entries.append(job_ended_entry(summary, end))
    return summary, entries


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_progress_and_summary_agree_on_every_step(scenario: Scenario) -> None:
    summary, entries = run_job(scenario)
    assert_valid_summary(summary)
    view = fold_progress([entry.as_dict() for entry in entries])
    shown = {step["name"]: step for step in view["progress"]["steps"]}
    assert view["current_step"] is None
    for step in summary["steps"]:
        seen = shown.get(step["name"])
        if seen is None:  # neither planned nor started: the summary has it skipped
            assert step["status"] == "skipped", step
            continue
        assert seen["status"] == step["status"], step["name"]
        if step["status"] == "failed":
            assert seen["message"] == step["message"], step["name"]
    statuses = {step["name"]: step["status"] for step in summary["steps"]}
    assert [(name, statuses[name]) for name, _ in scenario.expect] == list(scenario.expect)
    error = summary["error"]
    if error is not None and error["step"] in statuses:
        assert statuses[error["step"]] == "failed"  # the step the error names failed
    assert entries[-1].as_dict()["error"] == error


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_every_step_that_started_ends_once_before_the_next_starts(scenario: Scenario) -> None:
    """Later `step_ended` entries of a step only correct it (a verdict after the run)."""
    _, entries = run_job(scenario)
    order: list[tuple[str, str | None]] = []
    for entry in entries:
        pair = (entry.kind.value, entry.name)
        if entry.kind.value.startswith("step_") and pair not in order:
            order.append(pair)
    names = [name for kind, name in order if kind == "step_started"]
    assert order == [(kind, name) for name in names for kind in ("step_started", "step_ended")]


def test_a_cut_off_step_fails_in_the_summary_with_the_jobs_error() -> None:
    """Before issue 22 the summary counted finished tasks only: a step a cancel cut off was
    `skipped` there (or `ok`), `failed` in the progress stream."""
    summary, _ = run_job(SCENARIOS["canceled in the migrations, rolled back"])
    step = {s["name"]: s for s in summary["steps"]}["migrations"]
    assert step["status"] == "failed"
    assert step["message"] == summary["error"]["message"]
    assert summary["error"]["message"].startswith("the update was canceled. Rolled back:")
