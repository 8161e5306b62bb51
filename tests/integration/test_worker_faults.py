"""The worker under faults: duplicate requests, aborts, timeouts, a killed worker, a stopped
worker, a restarted Redis. Each test checks what a user would: the job's final state, the
containers, and that no ansible or compose process of the job is left behind."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from testbed import TestBed
from tests.integration.conftest import Deployment, run_worker_burst
from tests.summary_schema import assert_valid_summary
from worker.client import UpdateClient
from worker.inflight import inflight_key
from worker.main import create_worker
from worker.recovery import ansible_processes_of

CLI = str(Path(sys.executable).parent / "update-executor")


def compose_processes(project: str) -> list[str]:
    """`docker compose` processes working on `project` (none may outlive a job)."""
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "compose" in line and project in line]


async def wait_for_state(client: UpdateClient, job_id: str, state: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (await client.status(job_id))["state"] != state:
        assert time.monotonic() < deadline, f"job {job_id} never reached {state}"
        await asyncio.sleep(0.2)


def assert_nothing_left(deployment: Deployment, job_id: str) -> None:
    left = ansible_processes_of(job_id)
    if left:
        ps = ["ps", "ww", "-o", "pid,ppid,pgid,sid,stat,etime,args", "-p", ",".join(map(str, left))]
        print(subprocess.run(ps, capture_output=True, text=True, check=False).stdout)
    assert left == []
    assert compose_processes(deployment.project) == []


@contextlib.contextmanager
def worker_process(deployment: Deployment, **env: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [CLI, "worker"],
        env={**deployment.worker_env(), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate(timeout=30)[0]
        print(f"--- worker output ---\n{output[-4000:]}")  # shown when the test fails
        Path("/tmp/worker-out.txt").write_text(output)


async def test_two_requests_at_once_make_one_job(
    deployment: Deployment, client: UpdateClient
) -> None:
    first, second = await asyncio.gather(
        client.submit_update(services=["api"], run_migrations=False),
        client.submit_update(services=["api"], run_migrations=False),
    )
    assert first.job_id == second.job_id
    assert sorted([first.existing, second.existing]) == [False, True]
    assert await client.redis.zcard(deployment.settings.queue_name) == 1

    await run_worker_burst(deployment.settings)

    summary = assert_valid_summary((await client.status(first.job_id))["summary"])
    assert summary["status"] == "successful"
    assert await client.redis.get(inflight_key(deployment.settings.queue_name)) is None
    # the slot is free again once the update finished
    third = await client.submit_update(services=["api"], run_migrations=False)
    assert third.existing is False
    assert third.job_id != first.job_id


async def slow_update(deployment: Deployment, client: UpdateClient) -> tuple[str, str]:
    """Queue an update whose migration takes two minutes; return its job id and the new
    image's ID."""
    deployment.settings = replace(deployment.settings, migration_command="sleep 120")
    new_app = deployment.publish(deployment.app_repo, "2")
    job_id = await client.enqueue_update(services=["api"])
    return job_id, new_app


async def test_an_aborted_job_is_canceled_and_leaves_no_process(
    deployment: Deployment, client: UpdateClient
) -> None:
    deployment.settings = replace(deployment.settings, job_timeout=300)
    job_id, new_app = await slow_update(deployment, client)
    worker = create_worker(deployment.settings, poll_delay=0.1, handle_signals=False)
    worker_task = asyncio.create_task(worker.main())
    try:
        await wait_for_state(client, job_id, "running", 60)
        await asyncio.sleep(10)  # into the migration
        assert ansible_processes_of(job_id), "the update should be running"
        assert await client.abort(job_id, timeout=60) is True
    finally:
        worker_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker_task
        await worker.close()

    summary = assert_valid_summary((await client.status(job_id))["summary"])
    assert summary["status"] == "canceled"
    assert_nothing_left(deployment, job_id)
    assert deployment.image_ids()["api"] == new_app  # canceled in the migration: new version up
    assert await client.redis.get(inflight_key(deployment.settings.queue_name)) is None


async def test_a_job_longer_than_job_timeout_ends_as_timeout(
    deployment: Deployment, client: UpdateClient
) -> None:
    # the runner stops ansible at JOB_TIMEOUT - 30 s = 45 s, inside the two-minute migration
    deployment.settings = replace(deployment.settings, job_timeout=75)
    job_id, new_app = await slow_update(deployment, client)
    started = time.monotonic()
    await run_worker_burst(deployment.settings)

    summary = assert_valid_summary((await client.status(job_id))["summary"])
    assert summary["status"] == "timeout"
    assert summary["error"]["step"] == "migrations"
    assert time.monotonic() - started < 75
    assert deployment.image_ids()["api"] == new_app
    assert_nothing_left(deployment, job_id)


async def test_a_killed_worker_reports_the_job_interrupted_and_serves_the_next(
    deployment: Deployment, client: UpdateClient
) -> None:
    deployment.settings = replace(deployment.settings, job_timeout=300)
    job_id, _new_app = await slow_update(deployment, client)
    with worker_process(deployment) as first:
        await wait_for_state(client, job_id, "running", 60)
        await asyncio.sleep(12)  # into the migration
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    assert ansible_processes_of(job_id), "ansible outlives a SIGKILLed worker (own session)"

    with worker_process(deployment) as second:  # as systemd's Restart=always would
        await wait_for_state(client, job_id, "finished", 60)
        summary = assert_valid_summary((await client.status(job_id))["summary"])
        assert summary["status"] == "failed"
        assert "interrupted" in summary["error"]["message"]
        assert_nothing_left(deployment, job_id)

        # the next update works: a healthy version 3
        new_app = deployment.publish(deployment.app_repo, "3")
        next_id = await client.enqueue_update(services=["api"], run_migrations=False)
        assert next_id != job_id
        result = await client.result(next_id, timeout=120)
        assert result["status"] == "successful", result["error"]
        assert deployment.image_ids()["api"] == new_app
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0


async def test_sigterm_lets_the_running_update_finish(
    deployment: Deployment, client: UpdateClient
) -> None:
    new_app = deployment.publish(deployment.app_repo, "2")
    job_id = await client.enqueue_update(services=["api", "worker"], run_migrations=False)
    with worker_process(deployment) as worker:
        await wait_for_state(client, job_id, "running", 60)
        await asyncio.sleep(2)
        worker.send_signal(signal.SIGTERM)  # systemctl stop
        assert worker.wait(timeout=120) == 0
    summary = assert_valid_summary((await client.status(job_id))["summary"])
    assert summary["status"] == "successful", summary["error"]
    assert deployment.image_ids()["api"] == new_app
    assert_nothing_left(deployment, job_id)


async def test_redis_restarts_do_not_lose_the_worker_or_the_result(
    deployment: Deployment, client: UpdateClient, bed: TestBed
) -> None:
    with worker_process(deployment) as worker:
        await asyncio.sleep(2)
        bed.restart_redis()  # while idle (the test bed's Redis keeps no data)
        await asyncio.sleep(1)
        new_app = deployment.publish(deployment.app_repo, "2")
        job_id = await client.enqueue_update(services=["api"], run_migrations=False)
        await wait_for_state(client, job_id, "running", 60)
        bed.restart_redis()  # while the update runs: its queue entry is gone with the data
        result_key = f"arq:result:{job_id}"
        deadline = time.monotonic() + 120
        while not await client.redis.exists(result_key):
            assert time.monotonic() < deadline, "the running update's result was lost"
            assert worker.poll() is None, "the worker died"
            await asyncio.sleep(0.5)
        summary = assert_valid_summary((await client.status(job_id))["summary"])
        assert summary["status"] == "successful", summary["error"]
        assert deployment.image_ids()["api"] == new_app
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0


@pytest.fixture(autouse=True)
def _no_leftover_processes(deployment: Deployment) -> Iterator[None]:
    yield
    assert compose_processes(deployment.project) == []
