"""Each step's status, computed once: one StepTracker is fed ansible-runner's events as they come
(and the steps the worker runs itself); the live progress entries (worker/host/progress.py
publishes them) and the summary's steps (worker/host/summary.py reads them) come from the same
state. Pure: no I/O, times come from the events or the caller.

A step's status is `StepState.status`, and only there: the worker's own verdict (a rollback it
ran, a step a cancel or timeout cut off, the pull's status from the images it brought) over
what its tasks add up to (`accumulated_status`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ..shared.progress import RUNNING, EntryKind
from ..shared.result import NOT_REACHED, Step, StepResult, StepStatus
from .failures import describe

MAX_MESSAGE = 1000
TASK_START = "playbook_on_task_start"
PLAYBOOK_END = "playbook_on_stats"
STARTED = "started"  # accepted for RUNNING by StepTracker.manual

# The step of a task, by the prefix of its name (`Pull | Pull the new images`), case-insensitive:
# the one table to change when the role reports a step under another name.
TASK_PREFIXES: Mapping[str, Step] = {step.value: step for step in Step}

# Steps that only appear in a summary when one of their tasks ran (lifecycle hooks).
HOOK_STEPS = frozenset({Step.pre_update, Step.post_update})

RUNNER_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "failed",
}


def step_of_task(task_name: str) -> Step | None:
    """'Pull | Pull the new images' -> Step.pull; names without a known prefix -> None."""
    prefix, sep, _ = task_name.partition("|")
    return TASK_PREFIXES.get(prefix.strip().lower()) if sep else None


# ------------------------------------------------------------------ one step's tasks


@dataclass
class StepAccumulator:
    """What the events of one step's tasks add up to."""

    tasks: int = 0
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    first_start: datetime | None = None
    last_end: datetime | None = None
    duration_s: float = 0.0
    failure: str = ""
    skip_reasons: list[str] = field(default_factory=list)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def failure_message(result: Mapping[str, Any], task: str = "") -> str:
    """The most useful text of a failed task's result: one sentence for compose's failures and a
    failed command (failures.describe), else its msg, plus stderr when it adds to it."""
    if result.get("censored"):
        # no_log tasks (login): ansible hides the result, so we say what we know.
        return "the task's output is hidden (no_log); see the worker log for the cause"
    sentence = describe(task, result)
    if sentence is not None:
        return clip(sentence)
    message = str(result.get("msg") or "").strip()
    stderr = str(result.get("stderr") or result.get("module_stderr") or "").strip()
    if stderr and stderr not in message:
        message = f"{message}: {stderr}" if message else stderr
    return clip(message or "failed")


def task_result(event: Mapping[str, Any]) -> tuple[Step, str, Mapping[str, Any]] | None:
    """A task's result event as (step, "ok"|"failed"|"skipped", event_data); None for any
    other event and for tasks without a known step prefix."""
    kind = RUNNER_EVENTS.get(str(event.get("event")))
    if kind is None:
        return None
    data: Mapping[str, Any] = event.get("event_data") or {}
    step = step_of_task(str(data.get("task", "")))
    return None if step is None else (step, kind, data)


def did_bookkeeping(result: Mapping[str, Any]) -> bool:
    """The run's own bookkeeping, which the role reports as no change of the host (so that a
    no-op update reports changed=0, issue 13) but the summary shows as its step's work, as
    before: the lock taken (`acquired`) or released (`released`), the registry login
    (community.docker's `login_result`)."""
    return (
        result.get("acquired") is True
        or result.get("released") is True
        or bool(result.get("login_result"))
    )


def add_task_result(acc: StepAccumulator, kind: str, data: Mapping[str, Any]) -> None:
    """Count one task result (see `task_result`) into its step's accumulator."""
    acc.tasks += 1
    result = data.get("res") or {}
    if kind == "failed" and data.get("ignore_errors"):
        kind = "ok"
    if kind == "failed":
        acc.failed += 1
        if not acc.failure:
            acc.failure = failure_message(result, str(data.get("task") or ""))
    elif kind == "skipped":
        acc.skipped += 1
        reason = str(result.get("skip_reason") or "")
        if reason:
            acc.skip_reasons.append(reason)
    elif result.get("changed") or did_bookkeeping(result):
        acc.changed += 1
    else:
        acc.ok += 1
    start, end = _parse_time(data.get("start")), _parse_time(data.get("end"))
    if start and (acc.first_start is None or start < acc.first_start):
        acc.first_start = start
    if end and (acc.last_end is None or end > acc.last_end):
        acc.last_end = end
    acc.duration_s += float(data.get("duration") or 0.0)


def accumulated_status(acc: StepAccumulator | None) -> StepStatus:
    """A step's status from its tasks: failed if one failed (not ignored), else changed if
    one changed, else ok; skipped when no task of it ran."""
    if acc is None or acc.tasks == acc.skipped:
        return StepStatus.skipped
    if acc.failed:
        return StepStatus.failed
    return StepStatus.changed if acc.changed else StepStatus.ok


# ------------------------------------------------------------------ progress entries


@dataclass(frozen=True)
class ProgressEntry:
    """One entry of the progress stream. Step entries have `name`; `step_ended` also `status`,
    `duration_s`, `message`; `job_started` has `planned`; `job_ended` `status` (the summary's),
    `duration_s` and `error` ({step, message} or None)."""

    kind: EntryKind
    at: str  # ISO 8601, UTC
    name: str | None = None
    status: str | None = None
    duration_s: float | None = None
    message: str = ""
    planned: tuple[str, ...] | None = None
    error: Mapping[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind.value, "at": self.at}
        if self.name is not None:
            data["name"] = self.name
        if self.status is not None:
            data["status"] = self.status
        if self.duration_s is not None:
            data["duration_s"] = self.duration_s
        if self.kind is EntryKind.step_ended or self.message:
            data["message"] = self.message
        if self.planned is not None:
            data["planned"] = list(self.planned)
        if self.kind is EntryKind.job_ended:
            data["error"] = dict(self.error) if self.error else None
        return data


def event_time(event: Mapping[str, Any], fallback: datetime) -> datetime:
    """When ansible-runner emitted the event (`created`, UTC; naive in some versions)."""
    created = event.get("created")
    if isinstance(created, str):
        try:
            moment = datetime.fromisoformat(created)
        except ValueError:
            return fallback
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return fallback


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


# ------------------------------------------------------------------ the tracker


class Verdict(StrEnum):
    """Who settled a step's status, when its tasks alone do not."""

    worker = "worker"  # a step the worker ran itself (the rollback after a cancel)
    cut_off = "cut_off"  # the run was cut off in it (a cancel or a timeout): failed
    images = "images"  # the pull's status from the images it brought (ok or changed)


@dataclass
class StepState:
    step: Step
    started: datetime
    acc: StepAccumulator = field(default_factory=StepAccumulator)
    ended: datetime | None = None
    verdict: Verdict | None = None
    settled: StepStatus | None = None  # with `verdict`
    message: str = ""  # the worker's, or why a started step was skipped
    published: tuple[str, str] | None = None  # (status, message) of its last step_ended

    @property
    def status(self) -> StepStatus:
        """The step's status: the one place it is computed (progress and summary read it)."""
        return self.settled if self.settled is not None else accumulated_status(self.acc)

    @property
    def stream_message(self) -> str:
        return self.message or (self.acc.failure if self.status is StepStatus.failed else "")


class StepTracker:
    """Step starts and ends from ansible-runner's events, one event at a time; every method
    returns the progress entries it causes.

    A task of a step that already ended (the rescue's `<Step> | Fail the update after rolling
    back …`) neither reopens it nor ends the current one; should it change that step's status,
    a new `step_ended` for it says so (the last `step_ended` of a step is the one that counts).
    """

    def __init__(self) -> None:
        self.current: StepState | None = None
        self.steps: dict[Step, StepState] = {}
        self.closed = False
        self.last_task_step: Step | None = None  # of the last task that started

    @classmethod
    def over(cls, events: Iterable[Mapping[str, Any]], at: datetime) -> StepTracker:
        """A tracker fed a whole run's events (when no reporter fed one as they came)."""
        tracker = cls()
        for event in events:
            tracker.feed(event, at)
        return tracker

    def feed(self, event: Mapping[str, Any], at: datetime) -> list[ProgressEntry]:
        if self.closed:
            return []
        kind = event.get("event")
        at = event_time(event, at)
        if kind == PLAYBOOK_END:
            return self.close(at)
        if kind == TASK_START:
            step = step_of_task(str((event.get("event_data") or {}).get("task", "")))
            if step is None:
                return []
            self.last_task_step = step
            return self._enter(step, at)
        parsed = task_result(event)
        if parsed is None:
            return []
        step, result, data = parsed
        entries = self._enter(step, at)  # a result whose task start we missed
        state = self.steps[step]
        add_task_result(state.acc, result, data)
        return entries + self.corrections()

    def _enter(self, step: Step, at: datetime) -> list[ProgressEntry]:
        if step in self.steps:
            return []  # the current step, or a late task of an ended one
        entries = self._end_current(at)
        self.current = self.steps[step] = StepState(step, at)
        entries.append(ProgressEntry(EntryKind.step_started, iso(at), name=step.value))
        return entries

    def _end_current(self, at: datetime) -> list[ProgressEntry]:
        state, self.current = self.current, None
        if state is None:
            return []
        state.ended = max(at, state.started)
        return [self._end_entry(state)]

    def _end_entry(self, state: StepState) -> ProgressEntry:
        assert state.ended is not None
        state.published = (state.status.value, state.stream_message)
        return ProgressEntry(
            EntryKind.step_ended,
            iso(state.ended),
            name=state.step.value,
            status=state.status.value,
            duration_s=round((state.ended - state.started).total_seconds(), 3),
            message=state.stream_message,
        )

    def corrections(self) -> list[ProgressEntry]:
        """A new `step_ended` for each ended step whose status or message changed since its
        last one (a late task, the worker's verdict)."""
        return [
            self._end_entry(state)
            for state in self.steps.values()
            if state.ended is not None
            and state.published != (state.status.value, state.stream_message)
        ]

    def close(self, at: datetime) -> list[ProgressEntry]:
        """The playbook (or the job) ended: end the step that was running."""
        if self.closed:
            return []
        self.closed = True
        return self._end_current(at)

    def finish(self, at: datetime) -> list[ProgressEntry]:
        """The job ended: the running step ends, and each step the summary's verdicts changed
        gets its last `step_ended`."""
        return self.close(at) + self.corrections()

    def first_failed(self) -> StepState | None:
        """The first step in playbook order whose tasks failed (the job's error names it; a
        step the worker ran itself is not the playbook's)."""
        return next(
            (
                state
                for step in Step
                if (state := self.steps.get(step)) is not None
                and state.status is StepStatus.failed
                and state.verdict is not Verdict.worker
            ),
            None,
        )

    def step_named(self, name: str) -> StepState | None:
        try:
            return self.steps.get(Step(name))
        except ValueError:  # "worker", "validation", "playbook": not a playbook step
            return None

    def cut_off(self, name: str, message: str) -> None:
        """The run was cut off (a cancel, a timeout) while step `name` ran: unless it failed by
        itself, it fails with the job's error message."""
        state = self.step_named(name)
        if state is not None and state.status is not StepStatus.failed:
            state.verdict, state.settled, state.message = (
                Verdict.cut_off,
                StepStatus.failed,
                message,
            )

    def settle_pull(self, brought_images: bool) -> None:
        """The pull step's status from what it brought, not from community.docker's `changed`
        flag, which compose's output does not always set: `changed` when a target now runs an
        image it did not run before, `ok` when none does (a pull that failed stays failed)."""
        state = self.steps.get(Step.pull)
        if state is not None and state.status in (StepStatus.ok, StepStatus.changed):
            state.verdict = Verdict.images
            state.settled = StepStatus.changed if brought_images else StepStatus.ok

    def manual(self, name: str, status: str, message: str, at: datetime) -> list[ProgressEntry]:
        """A step the worker runs itself: status `running` (or `started`) starts it, a step
        status (ok, changed, failed, skipped) ends it."""
        step = Step(name)
        entries: list[ProgressEntry] = []
        if self.current is None or self.current.step is not step:
            entries += self._end_current(at)
            self.current = self.steps[step] = StepState(step, at)
            entries.append(ProgressEntry(EntryKind.step_started, iso(at), name=step.value))
        if status not in (RUNNING, STARTED):
            self.current.verdict, self.current.settled = Verdict.worker, StepStatus(status)
            self.current.message = message
            entries += self._end_current(at)
        return entries

    def results(self, messages: Mapping[Step, str]) -> list[StepResult]:
        """The summary's steps, in playbook order, from the same states: a step with no task
        result is skipped (not reached, after a failure); `messages` say how the others went.
        A step that started and was skipped takes its message (why) for the stream too."""
        results: list[StepResult] = []
        failed_before = False
        for step in Step:
            state = self.steps.get(step)
            status = state.status if state is not None else StepStatus.skipped
            if step in HOOK_STEPS and status is StepStatus.skipped:
                continue  # no hook configured or reached: no such step in the summary
            result = StepResult(name=step.value, status=status)
            if status is StepStatus.skipped:
                result.message = NOT_REACHED if failed_before and step is not Step.report else ""
            elif status is StepStatus.failed and state is not None:
                result.message = state.stream_message
            if state is not None and state.acc.tasks:
                acc = state.acc
                if acc.first_start and acc.last_end:
                    result.duration_s = (acc.last_end - acc.first_start).total_seconds()
                else:
                    result.duration_s = acc.duration_s
            if not result.message:
                result.message = messages.get(step, "")
            if (
                state is not None
                and status is StepStatus.skipped
                and not state.message
                and state.verdict is None
            ):
                state.message = result.message  # e.g. a no-op update's migration: why
            failed_before = failed_before or status is StepStatus.failed
            results.append(result)
        return results


def step_entries(
    events: Iterable[Mapping[str, Any]],
    at: datetime,
    *,
    interrupted_by: Mapping[str, str] | None = None,
) -> list[ProgressEntry]:
    """Every step entry a whole run produces (what the reporter writes as the events come);
    `interrupted_by`: the job's error, when the run was cut off in its step."""
    tracker = StepTracker()
    entries: list[ProgressEntry] = []
    for event in events:
        entries += tracker.feed(event, at)
    if interrupted_by is not None:
        tracker.cut_off(
            str(interrupted_by.get("step", "")), str(interrupted_by.get("message") or "")
        )
    return entries + tracker.finish(at)
