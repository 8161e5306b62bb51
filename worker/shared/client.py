"""The client an API uses to order an update and follow it.

It speaks to Redis only: the API needs neither the Docker socket nor the registry token.
Every failure the queue can produce (an exception in the worker, a timeout, an abort, a job
the worker could not run) comes back as a summary whose `status` is not `successful`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from arq.connections import ArqRedis, create_pool
from arq.constants import job_key_prefix
from arq.jobs import Job, JobStatus, SerializationError
from redis.exceptions import ResponseError

from .bounded import (
    MAX_CHECK_BYTES,
    MAX_ID_BYTES,
    MAX_RESULT_BYTES,
    OversizedValue,
    bounded_get,
    read_result,
)
from .cancel import seal_cancel
from .check import open_last_check, pending_check, queue_check, wait_check
from .connection import redis_settings
from .cutoff import CutOffRollback, apply_to_summary, read_recovery
from .history import read_history
from .inflight import claim, release
from .keys import (
    MAX_JOB_TIMEOUT_S,
    RESULT_TTL_S,
    cancel_key,
    inflight_key,
    last_check_key,
    latest_update_key,
    progress_key,
)
from .progress import PROGRESS_PAGE, ProgressPage, check_stream_id, decode_page, fold_progress
from .request import UpdateRequest
from .result import UpdateStatus, rejected_summary
from .serialization import RemoteJobError
from .settings import ClientSettings
from .signing import JobRejected, client_codec, secret_key
from .untrusted import InvalidJobId, check_job_id, is_job_id, job_id_from, loggable

# How often (s) `result` asks Redis whether the job finished: a few cheap commands per poll;
# half of it is, on average, added to every update's wall time as the client sees it.
RESULT_POLL_S = 0.05

logger = logging.getLogger("update_executor.client")
security_log = logging.getLogger("update_executor.security")

UPDATE_FUNCTION = "process_system_update"
# A cancel request stays valid this long after the longest JOB_TIMEOUT a worker accepts (s).
CANCEL_MARGIN_S = 600
# The in-flight claim expires this long after the longest JOB_TIMEOUT (s): a safety net, the
# worker releases it when the job ends. Both derive from MAX_JOB_TIMEOUT_S, not from a
# JOB_TIMEOUT of the API's own, which would have to match the worker's (worker/shared/keys.py).
CLAIM_TTL_S = MAX_JOB_TIMEOUT_S + 300
# A claim younger than this is in flight even if its job is not visible in the queue yet.
CLAIM_GRACE_S = 30


@dataclass(frozen=True)
class Enqueued:
    """The answer to an update request."""

    job_id: str
    # True: an update was already queued or running, and job_id is that one; nothing new queued.
    existing: bool = False


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    finished = "finished"
    not_found = "not_found"


_STATES = {
    JobStatus.deferred: JobState.queued,
    JobStatus.queued: JobState.queued,
    JobStatus.in_progress: JobState.running,
    JobStatus.complete: JobState.finished,
    JobStatus.not_found: JobState.not_found,
}


def failure_summary(
    job_id: str, error: BaseException | object, info: Any, recovery: CutOffRollback | None = None
) -> dict[str, Any]:
    """A summary for a job that ended at the ARQ level, not with our own summary. `recovery`:
    what the worker's start-up rollback did for an interrupted job (worker/host/rollback.py)."""
    if isinstance(error, asyncio.CancelledError):
        status, message = UpdateStatus.canceled, "the update job was aborted"
    elif isinstance(error, TimeoutError):
        status, message = UpdateStatus.timeout, "the update job exceeded JOB_TIMEOUT"
    elif isinstance(error, RemoteJobError) and "retries exceeded" in error.message:
        status = UpdateStatus.failed
        message = (
            "the update was interrupted (the worker stopped while it ran) and is not re-run "
            "automatically; check the deployment and enqueue a new update"
        )
    elif isinstance(error, BaseException):
        status, message = UpdateStatus.failed, f"the worker failed: {error}"
    else:
        status, message = UpdateStatus.failed, f"the worker returned no usable result: {error}"
    started = getattr(info, "start_time", None) or datetime.now(UTC)
    finished = getattr(info, "finish_time", None) or datetime.now(UTC)
    summary = rejected_summary(
        job_id=job_id, message=message, started_at=started, finished_at=finished, step="worker"
    )
    summary.status = status
    if recovery is not None:
        apply_to_summary(summary, recovery)
    return summary.as_dict()


def invalid_result_summary(job_id: str, reason: str) -> dict[str, Any]:
    """What the API shows when the result in Redis cannot be trusted: failed, never the
    result's own claim."""
    now = datetime.now(UTC)
    message = (
        f"invalid result ({reason}): what Redis holds for this job cannot be trusted; "
        "check the deployment and the worker's log"
    )
    return rejected_summary(
        job_id=job_id, message=message, started_at=now, finished_at=now, step="result"
    ).as_dict()


class UpdateClient:
    """Enqueue updates and read their state. Use `async with await UpdateClient.connect():`."""

    def __init__(self, settings: ClientSettings, redis: ArqRedis) -> None:
        self.settings = settings
        self.redis = redis

    @classmethod
    async def connect(cls, settings: ClientSettings | None = None) -> UpdateClient:
        settings = settings or ClientSettings.from_env()
        codec = client_codec(settings)  # signs jobs, verifies results (worker/shared/signing.py)
        if codec.key is None:
            logger.warning(
                "no UPDATE_JOB_SECRET: jobs are sent unsigned, a worker with one refuses them"
            )
        redis = await create_pool(
            redis_settings(settings),
            job_serializer=codec.serialize,
            job_deserializer=codec.deserialize,
            default_queue_name=settings.queue_name,
        )
        return cls(settings, redis)

    async def close(self) -> None:
        await self.redis.aclose()

    async def __aenter__(self) -> UpdateClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _job(self, job_id: str) -> Job:
        return Job(
            job_id,
            self.redis,
            _queue_name=self.settings.queue_name,
            _deserializer=self.redis.job_deserializer,
        )

    async def submit_update(
        self, request: UpdateRequest | None = None, /, **fields: Any
    ) -> Enqueued:
        """Queue an update unless one is queued or running; say which it was.

        The request: an `UpdateRequest` already parsed (the router and the CLI parse theirs),
        or its fields as keywords (`services`, `run_migrations`, `create_backup`, `dry_run`,
        `requested_by`), checked here so that a caller gets InvalidRequest before anything is
        queued; the worker checks again, and against its allow-list. With `revert` (and
        run_migrations=False, nothing else): put back the images from before the last update
        that succeeded (`update-executor revert`)."""
        if request is None:
            request = UpdateRequest.parse(fields)
        elif fields or not isinstance(request, UpdateRequest):
            raise TypeError("submit_update takes an UpdateRequest or its fields, not both")
        queue = self.settings.queue_name
        job_id = uuid.uuid4().hex
        ttl = CLAIM_TTL_S  # a safety net; finished jobs release it sooner
        for _ in range(3):
            holder = await claim(self.redis, queue, job_id, ttl)
            if holder is None:
                break
            if not is_job_id(holder):  # never a client's: a Redis writer's
                security_log.warning("releasing an in-flight claim of %s", loggable(holder))
                await release(self.redis, queue, holder)
                continue
            if not await self._is_stale(holder, ttl):
                logger.info("update job %s already in flight; not queuing another", holder)
                return Enqueued(holder, existing=True)
            logger.warning("releasing stale in-flight claim of job %s", holder)
            await release(self.redis, queue, holder)
        else:
            raise RuntimeError("could not claim the update slot; try again")
        try:
            job = await self.redis.enqueue_job(
                UPDATE_FUNCTION, _job_id=job_id, _queue_name=queue, **request.job_kwargs()
            )
        except BaseException:
            await release(self.redis, queue, job_id)
            raise
        if job is None:  # ARQ returns None only for a job id already in use
            await release(self.redis, queue, job_id)
            raise RuntimeError("the update job could not be queued")
        logger.info("queued update job %s", job_id)
        # So a freshly started API finds it (latest_update); the worker sets it again at start.
        await self.redis.set(latest_update_key(queue), job_id, ex=RESULT_TTL_S)
        return Enqueued(job_id)

    async def enqueue_update(self, **fields: Any) -> str:
        """Deprecated: `(await client.submit_update(**fields)).job_id`, the same operation
        (the id of the update queued, or of the one already in flight)."""
        return (await self.submit_update(**fields)).job_id

    async def rejoin(self, job_id: str, request: UpdateRequest) -> str:
        """The job to follow for a caller that joined `job_id` as the update in flight
        (`Enqueued.existing`) and now finds it unknown to ARQ (it was removed from the queue,
        or lost with Redis, and will never run). While the in-flight claim naming it is within
        its grace (a job being queued is not visible yet), `job_id`: wait and ask again. Then
        the claim is stale: `submit_update(request)` releases it and queues anew (or joins
        the update another caller queued meanwhile); that job's id."""
        state = _STATES.get(await self._job(job_id).status(), JobState.not_found)
        if state is not JobState.not_found:
            return job_id
        try:
            holder = await self.redis.get(inflight_key(self.settings.queue_name))
        except ResponseError:  # a key of another type: submit_update says what to do
            holder = None
        ours = holder is not None and holder in (job_id, job_id.encode())
        if ours and not await self._is_stale(job_id, CLAIM_TTL_S):
            return job_id
        logger.warning("update job %s never ran (not in the queue); queuing anew", job_id)
        return (await self.submit_update(request)).job_id

    async def queued_request(self, job_id: str) -> dict[str, Any] | None:
        """The request (run_migrations, services, dry_run, …) of a job ARQ still holds, read
        from its signed definition; None when it is gone, or does not verify."""
        check_job_id(job_id)
        try:
            raw = await bounded_get(self.redis, job_key_prefix + job_id, MAX_RESULT_BYTES)
            payload = client_codec(self.settings).open(raw) if raw is not None else None
        except (OversizedValue, JobRejected, ResponseError) as exc:
            security_log.warning("job %s: its definition cannot be read: %s", job_id, loggable(exc))
            return None
        request = payload.get("k") if payload is not None else None
        return request if isinstance(request, dict) else None

    async def _is_stale(self, job_id: str, ttl: int) -> bool:
        """A claim whose job ended (or never got queued, after a grace period) is stale."""
        state = _STATES.get(await self._job(job_id).status(), JobState.not_found)
        if state in (JobState.queued, JobState.running):
            return False
        if state is JobState.finished:
            return True
        remaining = int(await self.redis.ttl(inflight_key(self.settings.queue_name)))
        return remaining < ttl - CLAIM_GRACE_S

    async def state(self, job_id: str) -> JobState:
        """Only the job's state (queued / running / finished / not_found): no progress read."""
        return _STATES.get(await self._job(job_id).status(), JobState.not_found)

    async def status(self, job_id: str) -> dict[str, Any]:
        """`state` (queued / running / finished / not_found), `current_step` (the step running
        now, or None), `progress` ({done, planned, steps}: see shared.progress.fold_progress),
        plus `summary` once finished. Everything comes from Redis, keyed by the job id."""
        job = self._job(job_id)
        state = _STATES.get(await job.status(), JobState.not_found)
        entries = await self.progress(job_id)
        answer: dict[str, Any] = {
            "job_id": job_id,
            "state": state.value,
            **fold_progress(entries, job_finished=state is JobState.finished),
            "summary": None,
        }
        if state is JobState.finished:
            answer["summary"] = await self._summary(job)
        return answer

    async def progress(self, job_id: str, since: str | None = None) -> list[dict[str, Any]]:
        """The job's progress entries (oldest first), after the entry `since` (a stream id
        from an earlier answer) or from the start, at most PROGRESS_PAGE of them; each has its
        stream `id`. Entries that do not verify against the job secret are left out (one log
        line per read). A reader that resumes should use `progress_page` and its `last_id`."""
        return (await self.progress_page(job_id, since)).entries

    async def progress_page(
        self, job_id: str, since: str | None = None, count: int = PROGRESS_PAGE
    ) -> ProgressPage:
        """One bounded read (XRANGE ... COUNT) of the job's progress stream after `since`:
        the entries that verify and `last_id`, the last entry read, verified or not, which is
        where the next read starts (so each bad entry is read and logged once)."""
        start = "-" if since is None else "(" + check_stream_id(since)
        stream = progress_key(self.settings.queue_name, job_id)
        try:
            raw = await self.redis.xrange(stream, start, "+", count=count)
        except ResponseError as exc:  # not a stream: only a Redis writer puts that there
            security_log.warning("ignoring %s: %s", loggable(stream), exc)
            return ProgressPage([], None)
        return decode_page(raw, job_id, secret_key(self.settings))

    async def latest_update(self) -> dict[str, Any] | None:
        """The last update queued or started (by any client or worker of this queue), as
        `status()` returns it; None when there is none (or it expired)."""
        key = latest_update_key(self.settings.queue_name)
        try:
            raw = await bounded_get(self.redis, key, MAX_ID_BYTES)
            if raw is None:
                return None
            job_id = job_id_from(raw)
        except (InvalidJobId, OversizedValue, ResponseError) as exc:  # only a Redis writer
            security_log.warning("ignoring %s: %s", key, loggable(exc))
            return None
        return await self.status(job_id)

    async def result(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the job's summary (raise TimeoutError after `timeout` seconds)."""
        job = self._job(job_id)
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while True:
            state = _STATES.get(await job.status(), JobState.not_found)
            if state is JobState.finished:
                return await self._summary(job)
            if state is JobState.not_found:
                raise LookupError(f"no update job {job_id} (unknown, or its result expired)")
            if deadline is not None and asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"update job {job_id} did not finish in {timeout} s")
            await asyncio.sleep(RESULT_POLL_S)

    async def request_cancel(self, job_id: str) -> None:
        """Write a signed cancel request for the job and return at once (`abort` also waits for
        the job's end). The worker takes it before a queued job starts (which then ends
        `canceled` without running) or within a poll of a running one (cut off, rolled back)."""
        check_job_id(job_id)
        queue = self.settings.queue_name
        ttl = MAX_JOB_TIMEOUT_S + CANCEL_MARGIN_S
        request = seal_cancel(client_codec(self.settings), queue, job_id, ttl)
        await self.redis.set(cancel_key(queue, job_id), request, ex=ttl)

    async def abort(self, job_id: str, timeout: float = 60) -> bool:
        """Ask the worker to cancel the job; True once it ended canceled. The worker stops
        ansible, rolls back what the update had changed, and returns a `canceled` summary.

        The request is signed and bound to the job and queue (worker/shared/cancel.py): ARQ's own
        abort set is ignored by the worker, since anyone who can write to Redis can fill it."""
        await self.request_cancel(job_id)
        try:
            summary = await self.result(job_id, timeout=timeout)
        except (TimeoutError, LookupError):
            return False
        return bool(summary.get("status") == UpdateStatus.canceled.value)

    # Check for updates (worker/host/check.py, docs/check.md): the worker compares the running
    # images with the registry; the API needs no registry token.
    async def enqueue_check(self, services: list[str] | None = None) -> str:
        """Queue a check (or join the one of the same services already pending); its id."""
        job_id = await queue_check(self.redis, self.settings, services)
        if job_id is None:  # never without a minimum interval
            raise RuntimeError("the check job could not be queued")
        return job_id

    async def start_check(
        self, services: list[str] | None = None, min_interval_s: float = 0
    ) -> str | None:
        """Join the pending check of these services, or queue one unless a check started
        less than `min_interval_s` ago on this queue (None then)."""
        return await queue_check(self.redis, self.settings, services, min_interval_s)

    async def pending_check(self, services: list[str] | None = None) -> str | None:
        """The id of the check of these services queued or running now, or None."""
        return await pending_check(self.redis, self.settings, services)

    async def check_result(self, job_id: str, timeout: float | None = 60) -> dict[str, Any]:
        """Wait for a check's result; TimeoutError after `timeout` s (the check goes on)."""
        return await wait_check(self.redis, job_id, timeout, self.settings.queue_name)

    async def check_for_updates(
        self, services: list[str] | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        """Queue a check and wait for it: {"services": {name: {"image", "local_digest",
        "remote_digest", "update_available", "error"}}, "update_available", "checked_at",
        "job_id", "error"}. TimeoutError after `timeout` seconds."""
        return await self.check_result(await self.enqueue_check(services), timeout=timeout)

    async def last_check(self) -> dict[str, Any] | None:
        """The last finished check's result, cached in Redis for a day; None if none."""
        key = last_check_key(self.settings.queue_name)
        try:
            raw = await bounded_get(self.redis, key, MAX_CHECK_BYTES)
        except (OversizedValue, ResponseError) as exc:  # only a Redis writer does that
            security_log.warning("ignoring the cached update check: %s", exc)
            return None
        return open_last_check(self.settings, raw)

    async def history(self, limit: int = 50) -> list[dict[str, Any]]:
        """The last `limit` (1-500) update, check and refused-job records, oldest first (see
        worker/shared/history.py); records that do not verify against the job secret are
        left out."""
        return await read_history(self.redis, self.settings, limit)

    async def _summary(self, job: Job) -> dict[str, Any]:
        try:
            info = await read_result(self.redis, job.job_id, self.redis.job_deserializer)
        except SerializationError as exc:  # does not verify, not a result, expired
            reason = exc.__cause__.reason if isinstance(exc.__cause__, JobRejected) else exc
            logger.warning("the result of job %s is invalid: %s", job.job_id, reason)
            return invalid_result_summary(job.job_id, str(reason))
        except OversizedValue as exc:  # only a Redis writer makes it that big: never parsed
            security_log.warning("the result of job %s is invalid: %s", job.job_id, exc)
            return invalid_result_summary(job.job_id, f"it is {exc.size} bytes, over the limit")
        except ResponseError as exc:  # a key of another type: only a Redis writer does that
            security_log.warning("the result of job %s is invalid: %s", job.job_id, exc)
            return invalid_result_summary(job.job_id, "it is not a string")
        if info is None:
            raise LookupError(f"no result for update job {job.job_id}")
        if info.job_id != job.job_id or info.queue_name != self.settings.queue_name:
            # A valid result copied over this job's (e.g. an old success over a failure).
            security_log.warning(
                "the result stored for job %s belongs to job %s of queue %s: ignored",
                job.job_id,
                loggable(info.job_id),
                loggable(info.queue_name),
            )
            return invalid_result_summary(job.job_id, "it was signed for another job")
        if info.success and isinstance(info.result, dict) and "status" in info.result:
            summary: dict[str, Any] = info.result
            return summary
        recovery = await read_recovery(
            self.redis, self.settings.queue_name, job.job_id, self.redis.job_deserializer
        )
        return failure_summary(job.job_id, info.result, info, recovery)
