"""Live progress derived from ansible-runner's events (worker/host/progress.py): the captured
runs in tests/unit/data are real event streams of playbooks/update.yml; the small tables cover
what a real run rarely shows (late tasks, interrupted runs, tampered entries)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from testbed.procs import free_port
from worker.host.progress import (
    ProgressEntry,
    ProgressReporter,
    StepTracker,
    encode_entry,
    job_ended_entry,
    job_started_entry,
    planned_steps,
    step_entries,
)
from worker.host.settings import Settings
from worker.host.summary import RunOutcome, build_summary
from worker.shared.progress import (
    INTERRUPTED,
    EntryKind,
    check_stream_id,
    decode_entry,
    fold_progress,
)
from worker.shared.request import UpdateRequest
from worker.shared.result import NOT_REACHED, UpdateStatus

DATA = Path(__file__).resolve().parent / "data"
T0 = datetime(2026, 11, 28, 1, 0, 0, tzinfo=UTC)
KEY = b"k" * 32

# The steps each captured run goes through, in order (every one starts, then ends).
ALL_STEPS = "preflight lock login snapshot backup pull recreate migrations report"
CAPTURED_STEPS = {
    "full_update": ALL_STEPS,
    "nothing_new": ALL_STEPS,
    "login_failed": "preflight lock login report",
    "migration_failed": ALL_STEPS.replace("report", "rollback report"),
    "unknown_service": "preflight report",
}


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def request_of(captured: dict[str, Any]) -> UpdateRequest:
    fields = dict(captured["request"])
    fields["services"] = tuple(fields["services"])
    return UpdateRequest(**fields)


def as_stream(entries: list[ProgressEntry]) -> list[dict[str, Any]]:
    """Entries as the client returns them (through the Redis encoding, with stream ids)."""
    return [
        decode_entry(f"{n}-0", encode_entry(entry, "job", KEY), "job", KEY) or {}
        for n, entry in enumerate(entries, 1)
    ]


@pytest.mark.parametrize("path", sorted(DATA.glob("*.events.json")), ids=lambda p: p.name)
def test_captured_runs(path: Path) -> None:
    captured = load(path)
    entries = step_entries(captured["events"], T0, interrupted_by=None)
    scenario = path.name.removesuffix(".events.json")

    # every step starts, then ends, before the next one starts
    kinds = [(entry.kind, entry.name) for entry in entries]
    expected = CAPTURED_STEPS[scenario].split()
    assert kinds == [
        (kind, name) for name in expected for kind in (EntryKind.step_started, EntryKind.step_ended)
    ]
    # statuses are the summary's (what a human checked in `expect`)
    ended = {e.name: e.status for e in entries if e.kind is EntryKind.step_ended}
    for name, status in captured["expect"]["steps"].items():
        assert ended.get(name, "skipped") == status, name
    # and those of the summary built from the same events
    summary = build_summary(
        job_id="captured",
        request=request_of(captured),
        outcome=RunOutcome(status=UpdateStatus(captured["runner_status"] or "successful"),
                           events=captured["events"]),
        started_at=T0,
        finished_at=T0,
    ).as_dict()  # fmt: skip
    for step in summary["steps"]:
        assert ended.get(step["name"], "skipped") == step["status"], step["name"]
        if step["status"] == "failed":  # the same message as the summary's error
            failed = next(e for e in entries if e.name == step["name"] and e.status == "failed")
            assert failed.message == step["message"]
    assert all((e.duration_s or 0) >= 0 for e in entries)


def test_captured_run_through_the_reader() -> None:
    """What a UI sees after a run that failed in Migrations and rolled back."""
    captured = load(DATA / "migration_failed.events.json")
    request = request_of(captured)
    entries = [job_started_entry(request, T0)]
    entries += step_entries(captured["events"], T0, interrupted_by=None)
    error = {"step": "migrations", "message": "Migrations failed: …"}
    entries.append(job_ended_entry({"status": "failed", "error": error, "duration_s": 9.5}, T0))

    view = fold_progress(as_stream(entries))

    assert view["current_step"] is None
    progress = view["progress"]
    assert progress["planned"] == 8  # no backup, no rollback
    assert progress["done"] == 8
    steps = {step["name"]: step for step in progress["steps"]}
    assert steps["migrations"]["status"] == "failed"
    assert "rc 3" in steps["migrations"]["message"]
    assert steps["rollback"]["status"] == "changed"
    assert steps["rollback"]["planned"] is False
    assert steps["backup"]["planned"] is False and steps["backup"]["status"] == "skipped"
    assert [s["name"] for s in progress["steps"]][-3:] == ["migrations", "rollback", "report"]


def test_mid_run_view() -> None:
    """Half way: the running step is current, done counts what ended, the rest is pending."""
    captured = load(DATA / "full_update.events.json")
    events = captured["events"]
    pull_start = next(
        i for i, e in enumerate(events) if e["event_data"].get("task", "").startswith("Pull |")
    )
    tracker = StepTracker()
    entries = [job_started_entry(request_of(captured), T0)]
    for event in events[: pull_start + 1]:
        entries += tracker.feed(event, T0)

    view = fold_progress(as_stream(entries))

    assert view["current_step"] == "pull"
    assert view["progress"]["done"] == 4  # preflight, lock, login, snapshot (backup unplanned)
    assert view["progress"]["planned"] == 8
    statuses = {s["name"]: s["status"] for s in view["progress"]["steps"]}
    assert statuses["pull"] == "running"
    assert statuses["recreate"] == statuses["migrations"] == statuses["report"] == "pending"


@pytest.mark.parametrize(
    ("request_fields", "planned"),
    [
        ({}, "preflight lock login snapshot pull recreate migrations report"),
        ({"run_migrations": False}, "preflight lock login snapshot pull recreate report"),
        ({"create_backup": True}, ALL_STEPS),
        (
            {"dry_run": True, "create_backup": True},
            "preflight lock login snapshot pull recreate report",
        ),
        ({"run_migrations": False, "revert": True}, "preflight lock rollback report"),
    ],
)
def test_planned_steps(request_fields: dict[str, Any], planned: str) -> None:
    assert planned_steps(UpdateRequest(services=("api",), **request_fields)) == tuple(
        planned.split()
    )


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def task_start(task: str, secs: float) -> dict[str, Any]:
    return {"event": "playbook_on_task_start", "created": at(secs), "event_data": {"task": task}}


def task_end(task: str, secs: float, kind: str = "runner_on_ok", **res: Any) -> dict[str, Any]:
    return {"event": kind, "created": at(secs), "event_data": {"task": task, "res": res}}


def ended(entries: list[ProgressEntry]) -> list[tuple[str | None, str | None, float | None]]:
    return [(e.name, e.status, e.duration_s) for e in entries if e.kind is EntryKind.step_ended]


def test_durations_come_from_the_event_times() -> None:
    events = [
        task_start("Preflight | a", 0),
        task_end("Preflight | a", 1),
        task_start("Pull | b", 1.5),
        task_end("Pull | b", 4, changed=True),
        task_start("Report | c", 4.25),
        task_end("Report | c", 5),
        {"event": "playbook_on_stats", "created": at(5.5), "event_data": {}},
    ]
    entries = step_entries(events, T0 + timedelta(hours=1), interrupted_by=None)
    assert ended(entries) == [
        ("preflight", "ok", 1.5),
        ("pull", "changed", 2.75),
        ("report", "ok", 1.25),
    ]
    assert entries[0].at == at(0)


def test_ansible_runners_naive_created_time_is_utc() -> None:
    naive = (T0 + timedelta(seconds=2)).replace(tzinfo=None).isoformat()
    event = {
        "event": "playbook_on_task_start",
        "created": naive,
        "event_data": {"task": "Pull | a"},
    }
    assert StepTracker().feed(event, T0)[0].at == at(2)


FAILED = "runner_on_failed"
STEP_TABLE: list[tuple[str, list[dict[str, Any]], list[tuple[str, str]]]] = [
    (
        "an ignored failure does not fail the step (the login's first try)",
        [
            task_start("Login | a", 0),
            {
                "event": FAILED,
                "event_data": {"task": "Login | a", "ignore_errors": True, "res": {"msg": "x"}},
            },
        ],
        [("login", "ok")],
    ),
    (
        "a step whose tasks were all skipped is skipped",
        [task_start("Backup | a", 0), task_end("Backup | a", 1, "runner_on_skipped")],
        [("backup", "skipped")],
    ),
    (
        "tasks without a known step are ignored, also between steps",
        [
            task_start("Gathering Facts", 0),
            task_start("Pull | a", 1),
            task_end("Pull | a", 2),
            task_start("unknown | x", 2),
            task_end("unknown | x", 3, FAILED),
        ],
        [("pull", "ok")],
    ),
    (
        "the rescue's last task is named after the failed step: no new start, no new end",
        [
            task_start("Pull | a", 0),
            task_end("Pull | a", 1, FAILED, msg="boom"),
            task_start("Rollback | b", 1),
            task_end("Rollback | b", 2, changed=True),
            task_start("Pull | Fail the update", 2),
            task_end("Pull | Fail the update", 3, FAILED, msg="Pull failed"),
            task_start("Report | c", 3),
            task_end("Report | c", 4),
        ],
        [("pull", "failed"), ("rollback", "changed"), ("report", "ok")],
    ),
    (
        "a late failure of a step that had ended well corrects it (the last end counts)",
        [
            task_start("Pull | a", 0),
            task_end("Pull | a", 1),
            task_start("Recreate | b", 1),
            task_end("Recreate | b", 1.5),
            task_end("Pull | late", 2, FAILED, msg="late"),
        ],
        [("pull", "ok"), ("pull", "failed"), ("recreate", "ok")],
    ),
    (
        "a result whose task start was missed still opens its step",
        [task_end("Lock | a", 1, changed=True)],
        [("lock", "changed")],
    ),
    (
        "an unreachable host fails the step",
        [task_start("Preflight | a", 0), task_end("Preflight | a", 1, "runner_on_unreachable")],
        [("preflight", "failed")],
    ),
    (
        "a step with no result yet when the next starts is skipped, like in the summary",
        [task_start("Snapshot | a", 0), task_start("Pull | b", 1), task_end("Pull | b", 2)],
        [("snapshot", "skipped"), ("pull", "ok")],
    ),
]


@pytest.mark.parametrize(
    ("events", "expected"),
    [pytest.param(events, expected, id=name) for name, events, expected in STEP_TABLE],
)
def test_step_status_table(events: list[dict[str, Any]], expected: list[tuple[str, str]]) -> None:
    entries = step_entries(events, T0, interrupted_by=None)
    assert [(name, status) for name, status, _ in ended(entries)] == expected


def test_a_censored_failure_keeps_its_output_hidden() -> None:
    events = [
        task_start("Login | Log in", 0),
        task_end("Login | Log in", 1, "runner_on_failed", censored="the output has been hidden"),
    ]
    (entry,) = [e for e in step_entries(events, T0, interrupted_by=None) if e.status]
    assert entry.status == "failed"
    assert "hidden (no_log)" in entry.message


def test_an_interrupted_run_fails_the_running_step_with_the_error() -> None:
    events = [task_start("Migrations | run", 0)]  # killed before the task's result
    error = {"step": "migrations", "message": "the update ran out of time"}
    entries = step_entries(events, T0 + timedelta(seconds=45), interrupted_by=error)
    assert ended(entries) == [("migrations", "failed", 45.0)]
    assert entries[-1].message == "the update ran out of time"


def test_a_cut_off_run_then_the_workers_own_rollback() -> None:
    """As jobs.py does after a cancel: the rollback step, then the summary names the step that
    was cut off, which then ends failed (a later step_ended corrects it)."""
    tracker = StepTracker()
    tracker.feed(task_start("Migrations | run", 0), T0)
    entries = tracker.manual("rollback", "started", "", T0 + timedelta(seconds=3))
    entries += tracker.manual("rollback", "ok", "rolled back: api", T0 + timedelta(seconds=9))
    tracker.cut_off("migrations", "the update was canceled")
    entries += tracker.finish(T0 + timedelta(seconds=10))
    assert ended(entries) == [
        ("migrations", "skipped", 3.0),
        ("rollback", "ok", 6.0),
        ("migrations", "failed", 3.0),
    ]
    assert entries[-1].message == "the update was canceled"
    view = fold_progress(as_stream(entries))
    steps = {s["name"]: s["status"] for s in view["progress"]["steps"]}
    assert steps == {"migrations": "failed", "rollback": "ok"}


def test_the_summarys_verdict_on_a_step_is_the_streams_last_word() -> None:
    """community.docker's pull flag says ok, but a target got a new image: the pull is
    changed, in the summary and in a final step_ended for it."""
    tracker = StepTracker()
    entries = tracker.feed(task_start("Pull | images", 0), T0)
    entries += tracker.feed(task_end("Pull | images", 1), T0)
    entries += tracker.feed(task_start("Recreate | up", 2), T0)
    entries += tracker.feed(task_end("Recreate | up", 3), T0)
    tracker.settle_pull(brought_images=True)
    entries += tracker.finish(T0 + timedelta(seconds=4))
    assert [(e.name, e.status) for e in entries if e.kind is EntryKind.step_ended] == [
        ("pull", "ok"),
        ("recreate", "ok"),
        ("pull", "changed"),
    ]
    assert {s.name: s.status.value for s in tracker.results({})}["pull"] == "changed"
    assert tracker.finish(T0 + timedelta(seconds=5)) == []  # already said: nothing more


def test_a_step_cut_off_by_a_cancel_fails_with_the_cancels_message() -> None:
    tracker = StepTracker()
    tracker.feed(task_start("Migrations | run", 0), T0)
    tracker.cut_off("migrations", "the update was canceled")
    entries = tracker.finish(T0 + timedelta(seconds=3))
    assert ended(entries) == [("migrations", "failed", 3.0)]
    assert entries[-1].message == "the update was canceled"
    result = {s.name: s for s in tracker.results({})}["migrations"]
    assert (result.status.value, result.message) == ("failed", "the update was canceled")


@pytest.mark.parametrize("step", ["worker", "validation", "playbook", "pull"])
def test_an_error_of_no_running_step_changes_nothing(step: str) -> None:
    tracker = StepTracker()
    tracker.feed(task_start("Lock | a", 0), T0)
    tracker.feed(task_end("Lock | a", 1, changed=True), T0)
    tracker.cut_off(step, "x")
    entries = tracker.finish(T0)
    assert [(e.name, e.status) for e in entries] == [("lock", "changed")]


def test_steps_the_worker_runs_itself() -> None:
    tracker = StepTracker()
    tracker.feed(task_start("Migrations | run", 0), T0)
    tracker.feed(task_end("Migrations | run", 1), T0)
    entries = tracker.manual("rollback", "running", "", T0 + timedelta(seconds=3))
    entries += tracker.manual("rollback", "changed", "rolled back: api", T0 + timedelta(seconds=5))
    assert ended(entries) == [("migrations", "ok", 3.0), ("rollback", "changed", 2.0)]
    assert entries[-1].message == "rolled back: api"


def test_reader_after_a_job_that_ended_without_its_last_entry() -> None:
    """An aborted job (ARQ has the result, the stream stops mid-step)."""
    request = UpdateRequest(services=("api",))
    entries = [job_started_entry(request, T0)]
    tracker = StepTracker()
    for event in (task_start("Preflight | a", 0), task_end("Preflight | a", 1)):
        entries += tracker.feed(event, T0)
    entries += tracker.feed(task_start("Lock | a", 1), T0)

    running = fold_progress(as_stream(entries))
    assert running["current_step"] == "lock"
    final = fold_progress(as_stream(entries), job_finished=True)
    assert final["current_step"] is None
    steps = {s["name"]: s for s in final["progress"]["steps"]}
    assert steps["lock"]["status"] == "failed" and steps["lock"]["message"] == INTERRUPTED
    assert steps["pull"]["status"] == "skipped" and steps["pull"]["message"] == NOT_REACHED
    assert final["progress"]["done"] == 2  # preflight, and lock that ended by failing


def test_reader_of_an_empty_stream() -> None:
    assert fold_progress([]) == {
        "current_step": None,
        "progress": {"done": 0, "planned": 0, "steps": []},
    }


def test_entries_are_signed_and_bound_to_their_job() -> None:
    entry = job_ended_entry({"status": "successful", "error": None, "duration_s": 3}, T0)
    fields = encode_entry(entry, "job1", KEY)
    assert decode_entry("1-0", fields, "job1", KEY) == {
        "id": "1-0",
        "kind": "job_ended",
        "at": T0.isoformat(),
        "status": "successful",
        "duration_s": 3.0,
        "error": None,
    }
    # the same entry moved to another job's stream, altered, or unsigned: ignored
    assert decode_entry("1-0", fields, "job2", KEY) is None
    forged = dict(fields, p=fields["p"].replace("successful", "failed"))
    assert decode_entry("1-0", forged, "job1", KEY) is None
    assert decode_entry("1-0", encode_entry(entry, "job1", None), "job1", KEY) is None
    # without a secret (insecure mode) unsigned entries are read; bytes as redis-py gives them
    raw = {k.encode(): v.encode() for k, v in encode_entry(entry, "job1", None).items()}
    assert decode_entry(b"1-0", raw, "job1", None) == decode_entry("1-0", fields, "job1", KEY)
    assert decode_entry("1-0", {"p": "not json", "s": ""}, "job1", None) is None


@pytest.mark.parametrize("since", ["1700000000000-0", "1700000000000", "0-1"])
def test_stream_ids(since: str) -> None:
    assert check_stream_id(since) == since


@pytest.mark.parametrize("since", ["", "abc", "1-2-3", "+", "-", "(1-0", "1-0\n"])
def test_bad_stream_ids_are_refused_clearly(since: str) -> None:
    with pytest.raises(ValueError, match="not a progress entry id"):
        check_stream_id(since)


async def test_an_unreachable_redis_never_stops_the_update() -> None:
    """The reporter against a Redis that is not there: every call returns, none raises, and
    events from another thread (as from ansible-runner's) are accepted."""
    redis = aioredis.Redis(port=free_port(), socket_connect_timeout=0.5)
    settings = Settings.from_env({"LOG_FILE": ""})
    reporter = ProgressReporter(redis, settings, "job1", UpdateRequest(services=("api",)))
    started = time.monotonic()
    await reporter.start()
    events = load(DATA / "full_update.events.json")["events"]

    def feed() -> None:
        for event in events:
            reporter.on_event(event)

    thread = threading.Thread(target=feed)
    thread.start()
    await asyncio.to_thread(thread.join)
    await reporter.step("rollback", "ok")
    await reporter.finish({"status": "successful", "error": None, "duration_s": 1.0})
    assert time.monotonic() - started < 15
    await redis.aclose()


async def test_a_reporter_without_redis_does_nothing() -> None:
    reporter = ProgressReporter(None, Settings.from_env({"LOG_FILE": ""}), "job1", None)
    await reporter.start()
    reporter.on_event({"event": "playbook_on_task_start", "event_data": {"task": "Pull | a"}})
    await reporter.finish({"status": "failed", "error": {"step": "validation", "message": "x"}})
