"""Security, round 3 (issue 21), the worker's side: whoever can write to the queue's Redis can
neither crash the worker, nor starve it, nor make it fetch a huge value, nor flood the
operators with refusals.

Real components only: the test bed's dockerd, registry and Redis, the real playbook through
ansible-runner, the real ARQ worker (UpdateWorker) polling as systemd runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.jobs import serialize_job

from tests.integration.conftest import Deployment
from tests.summary_schema import assert_valid_summary
from worker.host.arq_worker import UpdateWorker
from worker.host.main import create_worker
from worker.host.settings import Settings
from worker.shared.client import UpdateClient
from worker.shared.signing import JobCodec, client_codec


def now_ms() -> int:
    return int(time.time() * 1000)


def signed(codec: JobCodec, function: str = "process_system_update", **kwargs: Any) -> bytes:
    return serialize_job(function, (), kwargs, None, now_ms(), serializer=codec.serialize)


async def put_job(redis: Any, queue: str, raw: bytes, job_id: str | None = None) -> str:
    """Write a job the way arq's enqueue_job does, under an id of the test's choosing."""
    job_id = job_id or uuid.uuid4().hex
    await redis.psetex(job_key_prefix + job_id, 600_000, raw)
    await redis.zadd(queue, {job_id: now_ms() - 1000})
    return job_id


async def eventually(condition: Callable[[], Awaitable[Any]], timeout: float = 10) -> None:
    """Wait until `condition()` is true (polled), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition never met"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def serving_worker(settings: Settings) -> AsyncIterator[tuple[UpdateWorker, Any]]:
    """A worker that polls until the test ends, as systemd runs it (not burst); the test
    checks `task` (still running = the worker did not exit)."""
    worker = create_worker(settings, poll_delay=0.05, handle_signals=False)
    task = asyncio.create_task(worker.main())
    try:
        yield worker, task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await worker.close()


async def served(
    client: UpdateClient, job_id: str, task: Any, timeout: float = 120
) -> dict[str, Any]:
    """The job's summary once the worker stored it; fails at once if the worker exited."""
    deadline = time.monotonic() + timeout
    while (status := await client.status(job_id))["state"] != "finished":
        assert not task.done(), f"the worker exited: {task.exception()!r}"
        assert time.monotonic() < deadline, f"job {job_id} not served: {status['state']}"
        await asyncio.sleep(0.1)
    return assert_valid_summary(status["summary"])


# ------------------------------------------------------------------ crash, starve
async def test_a_score_of_minus_infinity_does_not_crash_the_worker(
    deployment: Deployment, client: UpdateClient, caplog: pytest.LogCaptureFixture
) -> None:
    """ARQ's poll called int(-inf): OverflowError, and the worker exited (under systemd: a
    restart, with the in-memory nonces and cool-down gone)."""
    caplog.set_level(logging.INFO)
    settings = deployment.settings
    queue = settings.queue_name
    r: Any = client.redis
    await r.zadd(queue, {"x1": float("-inf"), "x2": float("-inf"), "negative": -5})
    async with serving_worker(settings) as (_, task):
        job_id = await put_job(r, queue, signed(client_codec(settings), dry_run=True))
        summary = await served(client, job_id, task)
        assert summary["status"] == "successful", summary["error"]
        assert not task.done()
    assert await r.zcard(queue) == 0
    removed = [m.getMessage() for m in caplog.records if "queue entr" in m.getMessage()]
    assert removed == [
        "3 queue entries removed: the score is not a time in ms (first: x1, score -inf)"
    ]


async def test_entries_that_are_skipped_for_ever_do_not_starve_real_jobs(
    deployment: Deployment, client: UpdateClient
) -> None:
    """Score 0: skipped by ARQ and never removed; an in-progress key planted for an entry:
    skipped for ever too. ARQ reads the 100 most overdue entries: 150 + 120 of them hid every
    real job behind them for good."""
    settings = deployment.settings
    queue = settings.queue_name
    r: Any = client.redis
    planted = {f"held{i}": 1 for i in range(120)}
    for job_id in planted:
        await r.set(in_progress_key_prefix + job_id, b"1")
    await r.zadd(queue, {f"zero{i}": 0 for i in range(150)})
    await r.zadd(queue, planted)
    async with serving_worker(settings) as (_, task):
        job_id = await put_job(r, queue, b'{"not": "signed"}')
        started = time.monotonic()
        summary = await served(client, job_id, task, timeout=30)
        took = time.monotonic() - started
    assert "not signed" in summary["error"]["message"]
    left = {m.decode() for m in await r.zrange(queue, 0, -1)}
    assert left == set(planted), "score 0 removed; the planted entries left alone"
    print(f"\n150 entries of score 0, 120 held ones: the next job served in {took:.1f} s")


async def test_a_huge_job_value_is_refused_without_being_fetched(
    deployment: Deployment, client: UpdateClient
) -> None:
    settings = deployment.settings
    queue = settings.queue_name
    r: Any = client.redis
    size = 32 * 1024 * 1024
    job_id = uuid.uuid4().hex
    await r.set(job_key_prefix + job_id, b"x" * size)
    await r.zadd(queue, {job_id: now_ms() - 1000})

    async def sent() -> int:
        return int((await r.info("stats"))["total_net_output_bytes"])

    async with serving_worker(settings) as (_, task):
        before = await sent()
        summary = await served(client, job_id, task)
        after = await sent()
    assert summary["error"]["message"] == (
        f"job refused: the job is {size} bytes, over the 65536-byte limit"
    )
    # Redis sent the worker (and this test's polls) far less than the value: it was not read
    assert after - before < 2 * 1024 * 1024, after - before
    print(f"\n{size} B job value: Redis sent {after - before} B while it was refused")
