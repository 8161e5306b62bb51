"""ARQ's Worker, hardened against whoever can write to the queue's Redis.

ARQ trusts Redis: a job id goes unchecked into keys, log lines, the job's context (and from
there into the playbook and ansible-runner's `ident`, a path); a key of the wrong type (`SET
arq:abort x`, the queue as a string, a job as a hash) raises out of its poll loop and the
worker exits, over and over under `Restart=always`; any id in `arq:abort` cancels that job.
This subclass:

- refuses queue entries that are not job ids (JOB_ID, worker/shared/untrusted.py), logged escaped;
- logs and skips Redis errors about one job or key (ResponseError: wrong type, not an
  integer) instead of dying, and keeps its heart beat;
- records each signed job's nonce in Redis (SET NX, until the job's expiry) before the job is
  deserialized, so a replay is refused after a restart too (worker/shared/signing.py);
- runs with ARQ's abort turned off and cancels a job only on a signed cancel request
  (worker/shared/cancel.py);
- on SIGTERM, cancels a job still running after the grace period the way a cancel request
  does, so its `canceled` summary is stored as its result (ARQ's own stop cancels the
  run_job task instead: the job's returned summary is dropped and the job re-queued).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from signal import Signals
from typing import Any

from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.jobs import serialize_result
from arq.utils import timestamp_ms
from arq.worker import Worker
from redis.exceptions import RedisError, ResponseError

from ..shared.cancel import cancel_key, verify_cancel
from ..shared.inflight import release
from ..shared.keys import nonce_key
from ..shared.signing import REPLAY_REASON, WorkerJobCodec, now_ms
from ..shared.untrusted import InvalidJobId, job_id_from, loggable

logger = logging.getLogger("update_executor.worker")
security_log = logging.getLogger("update_executor.security")

# The same complaint (a bad key read at every poll) is logged at most this often (s).
REPEAT_LOG_S = 60.0
CTX_MARK = "update_worker"


class UpdateWorker(Worker):
    """arq.worker.Worker with the checks above; `codec` is the worker's job codec."""

    def __init__(self, *args: Any, codec: WorkerJobCodec, **kwargs: Any) -> None:
        kwargs["allow_abort_jobs"] = False  # abort only through a signed cancel request
        super().__init__(*args, **kwargs)
        self.codec = codec
        self.ctx[CTX_MARK] = True  # startup() refuses to serve without these checks
        self._last_logged: dict[str, float] = {}

    def _log_once(self, topic: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_logged.get(topic, -REPEAT_LOG_S) >= REPEAT_LOG_S:
            self._last_logged[topic] = now
            security_log.warning(message, *args)

    # ------------------------------------------------------------------ poll loop
    async def _poll_iteration(self) -> None:
        """ARQ's poll iteration, with a queue that cannot be read logged and skipped."""
        count = self.queue_read_limit
        if self.burst and self.max_burst_jobs >= 0:
            remaining = self.max_burst_jobs - self._jobs_started()
            if remaining < 1:
                return
            count = min(remaining, count)
        if self.allow_pick_jobs and self.job_counter < self.max_jobs:
            try:
                job_ids = await self.pool.zrangebyscore(
                    self.queue_name,
                    min=float("-inf"),
                    start=self._queue_read_offset,
                    num=count,
                    max=timestamp_ms(),
                )
            except ResponseError as exc:
                self._log_once("queue", "cannot read the queue %s: %s", self.queue_name, exc)
            else:
                await self.start_jobs(job_ids)
        await self._cancel_requested_jobs()
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                task.result()  # as ARQ: an unexpected error in run_job is not swallowed
        await self.heart_beat()

    async def record_health(self) -> None:
        try:
            await super().record_health()  # it counts the queue (ZCARD)
        except ResponseError as exc:
            self._log_once("health", "health check: cannot count the queue: %s", exc)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        valid = []
        for raw in job_ids:
            try:
                job_id_from(raw)
            except InvalidJobId as exc:
                security_log.warning("queue entry %s removed: not a job id", exc.shown)
                with contextlib.suppress(ResponseError):
                    await self.pool.zrem(self.queue_name, raw)
                continue
            valid.append(raw)
        for raw in valid:
            counted = self.job_counter
            try:
                await super().start_jobs([raw])
            except ResponseError as exc:  # the queue changed type between two reads
                self._log_once("queue", "cannot start job %s: %s", loggable(raw), exc)
                if self.job_counter > counted:  # ARQ counted it and took the semaphore
                    self.job_counter = counted
                    self.sem.release()

    async def run_job(self, job_id: str, score: int) -> None:
        try:
            if await self._canceled_before_start(job_id):
                return
            await self._record_nonce(job_id)
            await super().run_job(job_id, score)
        except ResponseError as exc:
            # A key of this job of the wrong type (or a retry count that is not a number):
            # only a Redis writer does that. Drop the job from the queue and go on.
            security_log.warning("job %s skipped, nothing was run: %s", job_id, loggable(exc))
            with contextlib.suppress(ResponseError):
                await self.pool.zrem(self.queue_name, job_id)
            with contextlib.suppress(ResponseError):
                await self.pool.delete(in_progress_key_prefix + job_id)
        finally:
            # ARQ forgets the mark only when the job raised; a job that caught its cancel
            # and returned a summary would keep it.
            self.aborting_tasks.discard(job_id)

    async def finish_job(self, job_id: str, *args: Any) -> None:
        # ARQ's transaction also ZREMs `arq:abort`; with a key of another type there, EXEC
        # reports an error for that command after running all the others.
        try:
            await super().finish_job(job_id, *args)
        except ResponseError as exc:
            self._log_once("finish", "finishing job %s: %s", job_id, loggable(exc))

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        try:
            await super().finish_failed_job(job_id, result_data)
        except ResponseError as exc:
            self._log_once("finish", "finishing job %s: %s", job_id, loggable(exc))

    # ------------------------------------------------------------------ stop
    async def _wait_for_tasks_to_complete(self, signum: Signals) -> None:
        """SIGTERM with a grace period (job_completion_wait): as ARQ, wait for the running
        job up to the grace period, then stop as handle_sig does (ours, below)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._sleep_until_tasks_complete(), self._job_completion_wait)
        self.handle_sig(signum)

    def handle_sig(self, signum: Signals) -> None:
        """ARQ's stop (also without a grace period, and from close()), with the running jobs
        canceled by _cancel_at_stop."""
        sig = Signals(signum)
        running = sum(not task.done() for task in self.tasks.values())
        logger.info("shutdown on %s: %d running job(s) to cancel", sig.name, running)
        self._cancel_at_stop()
        if self.main_task is not None:
            self.main_task.cancel()  # close() then waits for the jobs (and their rollback)
        if self.on_stop is not None:
            self.on_stop(sig)

    def _cancel_at_stop(self) -> None:
        """Cancel each running job's own task, marked as aborting, as a cancel request does.

        ARQ cancels the run_job task instead: asyncio.wait_for then raises CancelledError even
        though the job caught it and returned its `canceled` summary (rollback included), and
        ARQ puts the job back in the queue (retry_jobs) to fail it as interrupted at the next
        start. Canceled this way, run_job stores what the job returns, or an abort if the job
        did not catch the cancel; either way the job leaves the queue."""
        for job_id, run_task in list(self.tasks.items()):
            if run_task.done():
                continue
            job_task = self.job_tasks.get(job_id)
            if job_task is None:
                # Not inside the job function (reading Redis before it, or storing its
                # result after it): ARQ's way, which ends the wait for Redis.
                run_task.cancel()
                continue
            if job_task.done() or job_id in self.aborting_tasks:
                continue  # its result is being stored, or a cancel request is at work
            logger.warning("job %s: still running after the stop grace period: canceled", job_id)
            self.aborting_tasks.add(job_id)
            job_task.cancel()

    # ------------------------------------------------------------------ replay
    async def _record_nonce(self, job_id: str) -> None:
        """Record a verified job's nonce in Redis before ARQ deserializes it: a nonce already
        there (the job ran before, maybe before a restart) makes the codec refuse the job."""
        raw = await self.pool.get(job_key_prefix + job_id)
        if not isinstance(raw, bytes):
            return
        verified = self.codec.verified_nonce(raw)
        if verified is None:
            return  # refused anyway (or unsigned): the codec says why when ARQ reads it
        nonce, deadline = verified
        ttl_ms = deadline - now_ms(self.codec.clock)
        if ttl_ms <= 0:
            return
        try:
            first = await self.pool.set(
                nonce_key(self.queue_name, nonce), job_id, nx=True, px=ttl_ms
            )
        except RedisError as exc:
            logger.error("job %s: cannot record its nonce: %s", job_id, loggable(exc))
            self.codec.refuse_nonce(nonce, deadline, "the worker could not record the job's nonce")
            return
        if not first:
            self.codec.refuse_nonce(nonce, deadline, REPLAY_REASON)

    # ------------------------------------------------------------------ cancel
    async def _cancel_request(self, job_id: str) -> bool:
        try:
            raw = await self.pool.get(cancel_key(self.queue_name, job_id))
        except ResponseError as exc:
            self._log_once("cancel", "cannot read the cancel request of %s: %s", job_id, exc)
            return False
        if raw is None:
            return False
        valid = verify_cancel(self.codec, raw, self.queue_name, job_id)
        with contextlib.suppress(ResponseError):
            await self.pool.delete(cancel_key(self.queue_name, job_id))
        return valid

    async def _cancel_requested_jobs(self) -> None:
        """Cancel running jobs that have a verified cancel request (one GET per running job)."""
        for job_id, task in list(self.job_tasks.items()):
            if job_id in self.aborting_tasks or task.done():
                continue
            if await self._cancel_request(job_id):
                logger.warning("job %s: cancel requested, canceling it", job_id)
                # ARQ then stores the job's outcome as an abort, as with its own abort.
                self.aborting_tasks.add(job_id)
                task.cancel()

    async def _canceled_before_start(self, job_id: str) -> bool:
        """A job canceled while queued ends without running, as ARQ's "aborted before start"."""
        if not await self._cancel_request(job_id):
            return False
        logger.warning("job %s: canceled before it started", job_id)
        now = timestamp_ms()
        result = serialize_result(
            "<canceled>",
            (),
            {},
            1,
            now,
            False,
            asyncio.CancelledError(),
            now,
            now,
            f"{job_id}:canceled",
            self.queue_name,
            job_id=job_id,
            serializer=self.job_serializer,
        )
        await self.finish_failed_job(job_id, result)
        await release(self.pool, self.queue_name, job_id)
        return True
