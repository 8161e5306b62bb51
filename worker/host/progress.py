"""Live progress of an update: each step's start and end, appended to a Redis stream per job
so that a UI can show progress before the job finishes.

The stream is `<queue>:progress:<job id>` (XADD, MAXLEN ~ 500, EXPIRE refreshed on every
write so it lives as long as the job's result). Each entry has two fields: `p`, the entry as
compact JSON (`ProgressEntry.as_dict` plus `job`), and `s`, its HMAC-SHA256 with the job
secret (empty without one), so a Redis writer cannot make a UI show progress the worker never
reported. `<queue>:latest-update` holds the id of the last update queued or started.

Steps are derived from ansible-runner's events by `StepTracker`, a pure state machine: a
step starts at its first task's start and ends when the next step starts or the playbook
ends; its status is that of its tasks, as in the summary (worker/host/summary.py). Nothing here
may stop an update: every error is logged and the update goes on without its progress.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..shared.keys import RESULT_TTL_S, STREAM_MAXLEN, latest_update_key, progress_key
from ..shared.progress import RUNNING, EntryKind, entry_mac
from ..shared.request import UpdateRequest
from ..shared.signing import secret_key
from .settings import Settings
from .summary import (
    Step,
    StepAccumulator,
    StepStatus,
    accumulated_status,
    add_task_result,
    step_of_task,
    task_result,
)

logger = logging.getLogger("update_executor.progress")
security_log = logging.getLogger("update_executor.security")

# finish() waits at most this long (s) for pending entries to reach Redis.
FLUSH_TIMEOUT_S = 10.0
TASK_START = "playbook_on_task_start"
PLAYBOOK_END = "playbook_on_stats"
STARTED = "started"  # accepted for RUNNING by ProgressReporter.step

Clock = Callable[[], datetime]


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ProgressEntry:
    """One entry of the stream. Step entries have `name`; `step_ended` also `status`,
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


# ------------------------------------------------------------------ deriving steps (pure)


def planned_steps(request: UpdateRequest) -> tuple[str, ...]:
    """The steps an update is expected to go through. Backup only with create_backup,
    migrations only with run_migrations (neither runs in a dry run); rollback is never
    planned: it appears only after a failure. A revert (rollback.yml) goes through
    preflight, lock, rollback and report."""
    if request.revert:
        return tuple(s.value for s in (Step.preflight, Step.lock, Step.rollback, Step.report))
    optional = {
        Step.backup: request.create_backup and not request.dry_run,
        Step.migrations: request.run_migrations and not request.dry_run,
        Step.rollback: False,
        # Lifecycle hooks run only for services with hook labels: they show up when they run.
        Step.pre_update: False,
        Step.post_update: False,
    }
    return tuple(step.value for step in Step if optional.get(step, True))


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


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


@dataclass
class _StepState:
    step: Step
    started: datetime
    acc: StepAccumulator = field(default_factory=StepAccumulator)
    ended: datetime | None = None
    status: StepStatus | None = None
    message: str = ""
    # The run was cut off in this step (a cancel or a timeout): it ends failed, whatever the
    # summary's status of it, which only counts finished tasks (then none: `skipped`).
    interrupted: bool = False


# Step statuses of a step that did its work; the summary may settle which of the two it is.
SUCCEEDED = frozenset({StepStatus.ok, StepStatus.changed})


class StepTracker:
    """Step starts and ends from ansible-runner's events, one event at a time (pure: no I/O,
    times come from the events or the caller).

    A task of a step that already ended (the rescue's `<Step> | Fail the update after rolling
    back …`) neither reopens it nor ends the current one; should it change that step's status,
    a new `step_ended` for it says so (the last `step_ended` of a step is the one that counts).
    """

    def __init__(self) -> None:
        self.current: _StepState | None = None
        self.steps: dict[Step, _StepState] = {}
        self.closed = False

    def feed(self, event: Mapping[str, Any], at: datetime) -> list[ProgressEntry]:
        if self.closed:
            return []
        kind = event.get("event")
        at = event_time(event, at)
        if kind == PLAYBOOK_END:
            return self.close(at)
        if kind == TASK_START:
            step = step_of_task(str((event.get("event_data") or {}).get("task", "")))
            return [] if step is None else self._enter(step, at)
        parsed = task_result(event)
        if parsed is None:
            return []
        step, result, data = parsed
        entries = self._enter(step, at)  # a result whose task start we missed
        state = self.steps[step]
        before = accumulated_status(state.acc)
        add_task_result(state.acc, result, data)
        if state.ended is not None and accumulated_status(state.acc) is not before:
            entries.append(self._end_entry(state, state.ended))
        return entries

    def _enter(self, step: Step, at: datetime) -> list[ProgressEntry]:
        if step in self.steps:
            return []  # the current step, or a late task of an ended one
        entries = self._end_current(at)
        self.current = self.steps[step] = _StepState(step, at)
        entries.append(ProgressEntry(EntryKind.step_started, _iso(at), name=step.value))
        return entries

    def _end_current(self, at: datetime) -> list[ProgressEntry]:
        state, self.current = self.current, None
        if state is None:
            return []
        state.ended = max(at, state.started)
        return [self._end_entry(state, state.ended)]

    def _end_entry(self, state: _StepState, at: datetime) -> ProgressEntry:
        status = state.status or accumulated_status(state.acc)
        message = state.message or (state.acc.failure if status is StepStatus.failed else "")
        return ProgressEntry(
            EntryKind.step_ended,
            _iso(at),
            name=state.step.value,
            status=status.value,
            duration_s=round((at - state.started).total_seconds(), 3),
            message=message,
        )

    def close(
        self, at: datetime, *, interrupted_by: Mapping[str, str] | None = None
    ) -> list[ProgressEntry]:
        """The playbook ended: end the step that was running. `interrupted_by` is the summary's
        error: when it names a step that did not fail by itself (a run stopped mid-step by a
        timeout or a cancel), that step fails with the error's message (a new `step_ended`
        when it had already ended, e.g. before the worker's own rollback step)."""
        entries: list[ProgressEntry] = []
        state = self._step_named(str((interrupted_by or {}).get("step", "")))
        if (
            state is not None
            and interrupted_by
            and accumulated_status(state.acc) is not StepStatus.failed
            and state.status is not StepStatus.failed
        ):
            state.status = StepStatus.failed
            state.interrupted = True
            state.message = str(interrupted_by.get("message") or "interrupted")
            if state.ended is not None:
                entries.append(self._end_entry(state, state.ended))
        if not self.closed:
            self.closed = True
            entries += self._end_current(at)
        return entries

    def agree_with(self, summary_steps: Iterable[Mapping[str, Any]]) -> list[ProgressEntry]:
        """After `close`: a new `step_ended` for each ended step the summary settled as `ok`
        where the stream said `changed`, or the other way round (the pull step's status comes
        from the images it brought, see `summary.pull_changed_by_images`). A step the stream
        ended failed or skipped keeps that: a step cut off by a cancel is failed here, while
        the summary, built from task results only, has no result for it. A step both ended
        skipped gets the summary's message when the stream had none (why it was skipped)."""
        entries: list[ProgressEntry] = []
        for listed in summary_steps:
            state = self._step_named(str(listed.get("name", "")))
            try:
                wanted = StepStatus(str(listed.get("status")))
            except ValueError:
                continue
            if state is None or state.ended is None or state.interrupted:
                continue
            have = state.status or accumulated_status(state.acc)
            if have is not wanted and {have, wanted} <= SUCCEEDED:
                state.status = wanted
                entries.append(self._end_entry(state, state.ended))
            elif (
                have is wanted is StepStatus.skipped and listed.get("message") and not state.message
            ):
                # Why a started step was skipped (a no-op update's migration): the summary knows.
                state.message = str(listed["message"])
                entries.append(self._end_entry(state, state.ended))
        return entries

    def _step_named(self, name: str) -> _StepState | None:
        try:
            return self.steps.get(Step(name))
        except ValueError:  # "worker", "validation", "playbook": not a playbook step
            return None

    def manual(self, name: str, status: str, message: str, at: datetime) -> list[ProgressEntry]:
        """A step the worker runs itself: status `running` (or `started`) starts it, a step
        status (ok, changed, failed, skipped) ends it."""
        step = Step(name)
        entries: list[ProgressEntry] = []
        if self.current is None or self.current.step is not step:
            entries += self._end_current(at)
            self.current = self.steps[step] = _StepState(step, at)
            entries.append(ProgressEntry(EntryKind.step_started, _iso(at), name=step.value))
        if status not in (RUNNING, STARTED):
            self.current.status = StepStatus(status)
            self.current.message = message
            entries += self._end_current(at)
        return entries


def step_entries(
    events: Iterable[Mapping[str, Any]], at: datetime, *, interrupted_by: Mapping[str, str] | None
) -> list[ProgressEntry]:
    """Every step entry a whole run produces (what the reporter writes as the events come)."""
    tracker = StepTracker()
    entries: list[ProgressEntry] = []
    for event in events:
        entries += tracker.feed(event, at)
    return entries + tracker.close(at, interrupted_by=interrupted_by)


def job_started_entry(request: UpdateRequest | None, at: datetime) -> ProgressEntry:
    planned = planned_steps(request) if request is not None else ()
    return ProgressEntry(EntryKind.job_started, _iso(at), planned=planned)


def job_ended_entry(summary: Mapping[str, Any], at: datetime) -> ProgressEntry:
    error = summary.get("error")
    duration = summary.get("duration_s")
    return ProgressEntry(
        EntryKind.job_ended,
        _iso(at),
        status=str(summary.get("status") or "failed"),
        duration_s=float(duration) if isinstance(duration, (int, float)) else None,
        error={"step": str(error.get("step")), "message": str(error.get("message"))}
        if isinstance(error, Mapping)
        else None,
    )


# ------------------------------------------------------------------ Redis encoding


def encode_entry(entry: ProgressEntry, job_id: str, key: bytes | None) -> dict[str, str]:
    """Stream fields of an entry: its JSON (with the job id, so the MAC binds it to the job)
    and the MAC."""
    payload = json.dumps({**entry.as_dict(), "job": job_id}, separators=(",", ":"))
    return {"p": payload, "s": entry_mac(key, payload) if key else ""}


# ------------------------------------------------------------------ the worker side


class ProgressReporter:
    """Progress of one job. `on_event` is called from the runner's thread; the async methods
    from the job's task. Never raises: progress is best effort, the update goes on.

    Entries from the runner's thread are handed to the event loop with
    `call_soon_threadsafe` into a queue that one task drains into Redis; `finish` waits for
    the queue (at most FLUSH_TIMEOUT_S), so the last entries are in Redis before the result.
    """

    def __init__(
        self,
        redis: Any | None,
        settings: Settings,
        job_id: str,
        request: UpdateRequest | None,
        *,
        clock: Clock = now,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.job_id = job_id
        self.request = request
        self.key = progress_key(settings.queue_name, job_id)
        self._clock = clock
        self._signing_key = secret_key(settings)
        self._tracker = StepTracker()
        self._lock = threading.Lock()  # the tracker is fed from the runner's thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[ProgressEntry] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._write_failures = 0

    async def start(self) -> None:
        """The job started: record the planned steps, and that this is the latest update."""
        if self.redis is None:
            return
        try:
            self._loop = asyncio.get_running_loop()
            self._queue = asyncio.Queue()
            self._drainer = self._loop.create_task(self._drain(), name=f"progress-{self.job_id}")
            self._queue.put_nowait(job_started_entry(self.request, self._clock()))
            await self.redis.set(
                latest_update_key(self.settings.queue_name), self.job_id, ex=RESULT_TTL_S
            )
        except Exception:
            logger.warning("job %s: progress not recorded", self.job_id, exc_info=True)

    def on_event(self, event: Mapping[str, Any]) -> None:
        """An ansible-runner event (runner thread): step starts and ends are derived from it."""
        if self._loop is None or self._queue is None:
            return
        try:
            with self._lock:
                entries = self._tracker.feed(event, self._clock())
            for entry in entries:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, entry)
        except Exception:  # e.g. the loop is closed: the update must go on
            logger.warning("job %s: progress event dropped", self.job_id, exc_info=True)

    async def step(self, name: str, status: str, message: str = "") -> None:
        """A step the worker runs itself (e.g. the rollback after a cancel): status `running`
        or `started` starts it, a step status (ok, changed, failed, skipped) ends it."""
        try:
            with self._lock:
                entries = self._tracker.manual(name, status, message, self._clock())
            for entry in entries:
                self._put(entry)
        except Exception:
            logger.warning("job %s: progress of step %s dropped", self.job_id, name, exc_info=True)

    async def finish(self, summary: Mapping[str, Any]) -> None:
        """The job ended with this summary: flush pending entries, write the final one."""
        if self.redis is None:
            return
        try:
            at = self._clock()
            error = summary.get("error")
            with self._lock:
                entries = self._tracker.close(
                    at, interrupted_by=error if isinstance(error, Mapping) else None
                )
                steps = summary.get("steps")
                if isinstance(steps, list):
                    entries += self._tracker.agree_with(s for s in steps if isinstance(s, Mapping))
            entries.append(job_ended_entry(summary, at))
            if self._queue is None:  # refused before it started: no drain task
                await asyncio.wait_for(self._write_all(entries), FLUSH_TIMEOUT_S)
                return
            for entry in entries:
                self._put(entry)
            await asyncio.wait_for(self._queue.join(), FLUSH_TIMEOUT_S)
        except Exception:
            logger.warning("job %s: final progress not recorded", self.job_id, exc_info=True)
        finally:
            await self._stop_drainer()

    async def _write_all(self, entries: Iterable[ProgressEntry]) -> None:
        for entry in entries:
            await self._write(entry)

    def _put(self, entry: ProgressEntry) -> None:
        if self._queue is not None:
            self._queue.put_nowait(entry)

    async def _stop_drainer(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)
            self._drainer = None
        if self._queue is not None and not self._queue.empty():
            logger.warning(
                "job %s: %d progress entries not written", self.job_id, self._queue.qsize()
            )

    async def _drain(self) -> None:
        assert self._queue is not None
        while True:
            entry = await self._queue.get()
            try:
                await self._write(entry)
            except Exception as exc:
                self._write_failures += 1
                if self._write_failures == 1:  # one line per job, not one per entry
                    logger.warning("job %s: cannot write progress: %s", self.job_id, exc)
            finally:
                self._queue.task_done()

    async def _write(self, entry: ProgressEntry) -> None:
        assert self.redis is not None
        fields = encode_entry(entry, self.job_id, self._signing_key)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self.key, fields, maxlen=STREAM_MAXLEN, approximate=True)
            pipe.expire(self.key, RESULT_TTL_S)
            await pipe.execute()
