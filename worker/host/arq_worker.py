"""ARQ's Worker, hardened against whoever can write to the queue's Redis.

ARQ trusts Redis: a job id goes unchecked into keys, log lines, the job's context (and from
there into the playbook and ansible-runner's `ident`, a path); a key of the wrong type (`SET
arq:abort x`, the queue as a string, a job as a hash) raises out of its poll loop and the
worker exits, over and over under `Restart=always`; any id in `arq:abort` cancels that job.
This subclass:

- refuses queue entries that are not job ids (JOB_ID, worker/shared/untrusted.py), logged escaped;
- logs and skips Redis errors about one job or key (ResponseError: wrong type, not an
  integer) instead of dying, and keeps its heart beat;
- removes queue entries whose score is not a time in ms (`ZADD <queue> -inf x`: ARQ's
  int(score) raised and the worker exited; a score 0 was skipped for ever), logs any error
  about one entry or job and goes on, and reads further into the queue when a full window of
  entries cannot be started (planted in-progress keys), so junk cannot starve real jobs;
- reads a job's value once, its length first (STRLEN, GETRANGE up to the size limit, in one
  transaction), and hands those bytes to ARQ: a value of any size is never fetched, and the
  bytes ARQ deserializes are the bytes whose nonce was recorded;
- records each signed job's nonce in Redis (SET NX, until the job's expiry) before the job is
  deserialized, and the codec accepts it only if this SET NX created the key, so a replay is
  refused after a restart too (worker/shared/signing.py);
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
import math
import time
from collections.abc import Iterator
from signal import Signals
from typing import Any

from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.jobs import serialize_result
from arq.utils import timestamp_ms
from arq.worker import Worker
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..shared.cancel import cancel_key, verify_cancel
from ..shared.inflight import release
from ..shared.keys import nonce_key
from ..shared.signing import (
    MAX_JOB_BYTES,
    REJECTED_FUNCTION,
    REPLAY_REASON,
    WorkerJobCodec,
    now_ms,
)
from ..shared.untrusted import InvalidJobId, job_id_from, loggable
from .refusals import report_refusals

logger = logging.getLogger("update_executor.worker")
security_log = logging.getLogger("update_executor.security")

arq_logger = logging.getLogger("arq.worker")

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
        self.jobs_started_total = 0  # start_jobs that started a task (the read window moves on)
        self._started_task: asyncio.Task[Any] | None = None  # by the last start_jobs
        codec.require_granted_nonce = True  # only nonces this worker's SET NX created
        if not any(isinstance(f, _QuietRefusals) for f in arq_logger.filters):
            arq_logger.addFilter(_QuietRefusals())

    def _log_once(self, topic: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_logged.get(topic, -REPEAT_LOG_S) >= REPEAT_LOG_S:
            self._last_logged[topic] = now
            security_log.warning(message, *args)

    # ------------------------------------------------------------------ poll loop
    async def _poll_iteration(self) -> None:
        """ARQ's poll iteration, with a queue that cannot be read logged and skipped, entries
        whose score is not a time removed, and no error about one job ending the loop.

        ARQ starts at most max_jobs (1) job per poll, then sleeps poll_delay: a flood of 1,000
        junk jobs, each refused in milliseconds, would hold a real job back for 1,000 polls.
        So a job that is over within that poll_delay lets the next one start at once."""
        for _ in range(self.queue_read_limit):
            started = await self._start_due_jobs()
            if started is None:
                break
            done, _ = await asyncio.wait({started}, timeout=self.poll_delay_s)
            if not done:
                break  # a real job: it runs on; the loop polls as usual
        await self._cancel_requested_jobs()
        report_refusals(self.ctx)  # refused jobs' bulk report, once its interval has passed
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                try:
                    task.result()  # ARQ re-raises an unexpected error in run_job: it exits
                except Exception:  # one job's failure never ends the loop
                    logger.exception("job %s: unexpected error, going on", loggable(job_id))
        await self.heart_beat()

    async def _start_due_jobs(self) -> asyncio.Task[Any] | None:
        """Read the queue and start what is due, as ARQ's poll does; the task started."""
        count = self.queue_read_limit
        if self.burst and self.max_burst_jobs >= 0:
            remaining = self.max_burst_jobs - self._jobs_started()
            if remaining < 1:
                return None
            count = min(remaining, count)
        if not self.allow_pick_jobs or self.job_counter >= self.max_jobs:
            return None
        try:
            entries = await self.pool.zrangebyscore(
                self.queue_name,
                min=float("-inf"),
                start=self._queue_read_offset,
                num=count,
                max=timestamp_ms(),
                withscores=True,
            )
        except ResponseError as exc:
            self._log_once("queue", "cannot read the queue %s: %s", self.queue_name, exc)
            return None
        started = self.jobs_started_total
        self._started_task = None
        due = await self._due_job_ids(entries)
        await self.start_jobs(due)
        # ARQ reads the `count` most overdue entries, and skips for ever those it cannot start
        # (an in-progress key planted for them): a window full of such entries would hide
        # every real job behind it. Look further next time.
        stuck = self.jobs_started_total == started and len(due) >= count
        self._queue_read_offset = self._queue_read_offset + count if stuck else 0
        return self._started_task

    async def _due_job_ids(self, entries: list[tuple[bytes, float]]) -> list[bytes]:
        """The ids of `entries` (id, score); an entry whose score is not a time in ms (ARQ
        would call int(-inf) and exit, or skip a score 0 for ever) is removed, logged once."""
        due, bad = [], []
        for raw, score in entries:
            if math.isfinite(score) and score > 0:
                due.append(raw)
            else:
                bad.append((raw, score))
        if bad:
            with contextlib.suppress(ResponseError):
                await self.pool.zrem(self.queue_name, *(raw for raw, _ in bad))
            security_log.warning(
                "%d queue entr%s removed: the score is not a time in ms (first: %s, score %s)",
                len(bad),
                "y" if len(bad) == 1 else "ies",
                loggable(bad[0][0]),
                bad[0][1],
            )
        return due

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
            except (RedisConnectionError, RedisTimeoutError):
                raise  # Redis is away: ARQ's own loop waits for it
            except Exception as exc:  # a key changed type, a score changed to -inf, ...
                self._log_once("queue", "cannot start job %s: %s", loggable(raw), loggable(exc))
                if self.job_counter > counted:  # ARQ counted it and took the semaphore
                    self.job_counter = counted
                    self.sem.release()
                if not isinstance(exc, ResponseError):
                    with contextlib.suppress(RedisError):
                        await self.pool.zrem(self.queue_name, raw)
            else:
                if self.job_counter > counted:  # a task was created (it has not run yet)
                    self.jobs_started_total += 1
                    self._started_task = self.tasks.get(raw.decode())

    async def run_job(self, job_id: str, score: int) -> None:
        try:
            if await self._canceled_before_start(job_id):
                return
            raw = await self._read_job(job_id)
            await self._record_nonce(job_id, raw)
            with self._handed_over(job_id, raw):
                await super().run_job(job_id, score)  # ARQ reads the job from `raw`
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

    # ------------------------------------------------------------------ reading a job
    async def _read_job(self, job_id: str) -> bytes:
        """The job's value, read once: its length first (STRLEN, in the same transaction as a
        GETRANGE of at most MAX_JOB_BYTES + 1 bytes), so that a value of hundreds of MB put
        there by a Redis writer is never fetched. b"" when there is none (ARQ: "expired")."""
        key = job_key_prefix + job_id
        async with self.pool.pipeline(transaction=True) as pipe:
            pipe.strlen(key)
            pipe.getrange(key, 0, MAX_JOB_BYTES)
            size, raw = await pipe.execute()
        raw = bytes(raw or b"")
        if size > len(raw):  # over the limit: the codec refuses it, saying its real size
            self.codec.note_size(raw, size)
        return raw

    @contextlib.contextmanager
    def _handed_over(self, job_id: str, raw: bytes) -> Iterator[None]:
        """ARQ's run_job, called inside, gets `raw` as its job's value instead of a GET of its
        own: the value is read once (a second read could fetch what a Redis writer put there
        in between, of any size). ARQ's first call is `self.pool.pipeline(...)`, made before
        run_job first awaits, so this one-shot override is seen by that call only."""
        pool = self.pool
        real = pool.pipeline
        key = job_key_prefix + job_id

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            vars(pool).pop("pipeline", None)
            return _PrefetchedPipeline(real(*args, **kwargs), key, raw)

        pool.pipeline = pipeline  # type: ignore[method-assign]
        try:
            yield
        finally:
            vars(pool).pop("pipeline", None)

    # ------------------------------------------------------------------ replay
    async def _record_nonce(self, job_id: str, raw: bytes) -> None:
        """Record a verified job's nonce in Redis before ARQ deserializes it. The codec accepts
        the job only when this `SET NX` created the key (`grant_nonce`): a nonce already
        there (the job ran before, maybe before a restart) makes it a replay."""
        if not raw:
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
        if first:
            self.codec.grant_nonce(nonce, deadline)
        else:
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


class _PrefetchedPipeline:
    """A pipeline whose GET of `key` (ARQ's first command in run_job) is answered with
    `value` instead of being sent; every other command goes to Redis as usual."""

    def __init__(self, pipe: Any, key: str, value: bytes) -> None:
        self._pipe = pipe
        self._key = key
        self._value = value
        self._at: int | None = None

    async def __aenter__(self) -> _PrefetchedPipeline:
        await self._pipe.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._pipe.__aexit__(*exc)

    def get(self, key: str) -> _PrefetchedPipeline:
        if key == self._key and self._at is None:
            self._at = len(self._pipe.command_stack)
        else:
            self._pipe.get(key)
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    async def execute(self) -> list[Any]:
        results = list(await self._pipe.execute())
        if self._at is not None:
            results.insert(self._at, self._value)
        return results


class _QuietRefusals(logging.Filter):
    """Drop ARQ's two INFO lines per job ("→ id:rejected_job(...)", "← ... ●") for refused
    jobs: those are logged once per burst and counted (worker/host/refusals.py); a flood
    must not write two lines per junk job."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or not isinstance(record.args, tuple):
            return True
        return not any(
            isinstance(arg, str) and arg.endswith(f":{REJECTED_FUNCTION}") for arg in record.args
        )
