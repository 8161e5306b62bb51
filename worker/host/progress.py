"""Live progress of an update: each step's start and end, appended to a Redis stream per job
so that a UI can show progress before the job finishes.

The stream is `<queue>:progress:<job id>` (XADD, MAXLEN ~ 500, EXPIRE refreshed on every
write so it lives as long as the job's result). Each entry has two fields: `p`, the entry as
compact JSON (`ProgressEntry.as_dict` plus `job`), and `s`, its HMAC-SHA256 with the job
secret (empty without one), so a Redis writer cannot make a UI show progress the worker never
reported. `<queue>:latest-update` holds the id of the last update queued or started.

Steps are derived from ansible-runner's events by `StepTracker` (worker/host/steps.py), a pure
state machine: a step starts at its first task's start and ends when the next step starts or
the playbook ends. The reporter's tracker is the one the summary reads its steps from
(worker/host/summary.py), so both say the same. Nothing here may stop an update: every error
is logged and the update goes on without its progress.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ..shared.keys import RESULT_TTL_S, STREAM_MAXLEN, latest_update_key, progress_key
from ..shared.progress import EntryKind, entry_mac
from ..shared.request import UpdateRequest
from ..shared.result import Step
from ..shared.signing import secret_key
from .settings import Settings
from .steps import ProgressEntry, StepTracker, iso, step_entries

# The pure part lives in worker/host/steps.py; these names are also read from here.
__all__ = [
    "ProgressEntry",
    "ProgressReporter",
    "StepTracker",
    "encode_entry",
    "job_ended_entry",
    "job_started_entry",
    "planned_steps",
    "step_entries",
]

logger = logging.getLogger("update_executor.progress")
security_log = logging.getLogger("update_executor.security")

# finish() waits at most this long (s) for pending entries to reach Redis.
FLUSH_TIMEOUT_S = 10.0

Clock = Callable[[], datetime]


def now() -> datetime:
    return datetime.now(UTC)


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


def job_started_entry(request: UpdateRequest | None, at: datetime) -> ProgressEntry:
    planned = planned_steps(request) if request is not None else ()
    return ProgressEntry(EntryKind.job_started, iso(at), planned=planned)


def job_ended_entry(summary: Mapping[str, Any], at: datetime) -> ProgressEntry:
    error = summary.get("error")
    duration = summary.get("duration_s")
    return ProgressEntry(
        EntryKind.job_ended,
        iso(at),
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
        # Fed every event, with or without Redis: the summary reads its steps from it.
        self.steps = StepTracker()
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
        try:
            with self._lock:
                entries = self.steps.feed(event, self._clock())
            if self._loop is None or self._queue is None:
                return
            for entry in entries:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, entry)
        except Exception:  # e.g. the loop is closed: the update must go on
            logger.warning("job %s: progress event dropped", self.job_id, exc_info=True)

    async def step(self, name: str, status: str, message: str = "") -> None:
        """A step the worker runs itself (e.g. the rollback after a cancel): status `running`
        or `started` starts it, a step status (ok, changed, failed, skipped) ends it."""
        try:
            with self._lock:
                entries = self.steps.manual(name, status, message, self._clock())
            for entry in entries:
                self._put(entry)
        except Exception:
            logger.warning("job %s: progress of step %s dropped", self.job_id, name, exc_info=True)

    async def finish(self, summary: Mapping[str, Any]) -> None:
        """The job ended with this summary (built from `self.steps`): the last step entries,
        then the final one; flush them."""
        if self.redis is None:
            return
        try:
            at = self._clock()
            with self._lock:  # the running step ends; the summary's verdicts (build_summary)
                entries = self.steps.finish(at)
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
