"""The worker under faults: duplicate requests, aborts, timeouts, a killed worker, a stopped
worker, a restarted Redis. Each test checks what a user would: the job's final state, the
containers, and that no ansible or compose process of the job is left behind."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed import TestBed, containers
from testbed.faults import lock_path, run_playbook
from testbed.stack import CommandError
from tests.integration.conftest import (
    Deployment,
    run_worker_burst,
    wait_for_step,
    worker_process,
)
from tests.summary_schema import assert_valid_summary
from worker.host.main import create_worker
from worker.host.recovery import ansible_processes_of
from worker.shared.client import UpdateClient
from worker.shared.keys import inflight_key


def compose_processes(project: str) -> list[str]:
    """`docker compose` processes working on `project` (none may outlive a job)."""
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "compose" in line and project in line]


async def wait_for_state(client: UpdateClient, job_id: str, state: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (await client.status(job_id))["state"] != state:
        assert time.monotonic() < deadline, f"job {job_id} never reached {state}"
        await asyncio.sleep(0.2)


async def wait_until_polling(client: UpdateClient, queue_name: str, timeout: float = 60) -> None:
    """Until the worker has started and polls the queue: ARQ writes its health-check key in
    its first poll (worker/host/main.py sets the key's interval)."""
    deadline = time.monotonic() + timeout
    while not await client.redis.exists(f"{queue_name}:health-check"):
        assert time.monotonic() < deadline, "the worker never started polling"
        await asyncio.sleep(0.1)


def assert_nothing_left(deployment: Deployment, job_id: str) -> None:
    left = ansible_processes_of(job_id)
    if left:
        ps = ["ps", "ww", "-o", "pid,ppid,pgid,sid,stat,etime,args", "-p", ",".join(map(str, left))]
        print(subprocess.run(ps, capture_output=True, text=True, check=False).stdout)
    assert left == []
    assert compose_processes(deployment.project) == []


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
    deployment.settings = deployment.settings.model_copy(update=dict(migration_command="sleep 120"))
    new_app = deployment.publish(deployment.app_repo, "2")
    job_id = await client.enqueue_update(services=["api"])
    return job_id, new_app


def lock_files(deployment: Deployment) -> list[Path]:
    """The project's lock and rollback point, when present (none may outlive an update)."""
    lock = lock_path(deployment.stack, deployment.settings.lock_dir, deployment.project)
    point = lock.with_name(lock.name.removesuffix(".lock") + ".rollback.json")
    return [path for path in (lock, point) if path.exists()]


def hold_the_health_wait(deployment: Deployment) -> str:
    """Make the next update of api stop in its Recreate step: the new version never becomes
    healthy, and a long start_period keeps compose waiting (health "starting") instead of
    failing at once. Return the new image's ID."""
    text = deployment.compose_file.read_text()
    deployment.compose_file.write_text(
        text.replace("      retries: 3\n", "      retries: 3\n      start_period: 300s\n")
    )
    return deployment.publish(deployment.app_repo, "2", "unhealthy")


async def wait_for_recreate(deployment: Deployment, new_image: str, timeout: float = 90) -> None:
    """Until api's container runs `new_image`: the update is in its Recreate step."""
    deadline = time.monotonic() + timeout
    while True:
        # A container may go away between docker's list and inspect while compose recreates.
        with contextlib.suppress(CommandError):
            if deployment.image_ids().get("api") == new_image:
                return
        assert time.monotonic() < deadline, "the update never reached its recreate"
        await asyncio.sleep(0.2)


def assert_rolled_back_to(deployment: Deployment, summary: dict[str, Any], old_app: str) -> None:
    """The site is back on the version before the update, healthy, and the summary says so."""
    assert summary["rolled_back"] is True, summary
    assert summary["rollback_error"] is None
    assert summary["rollback"]["api"]["image_id"] == old_app
    assert summary["rollback"]["api"]["action"] == "restored"
    assert summary["steps"][-1]["name"] == "rollback"
    assert "Rolled back: api restored" in summary["error"]["message"]
    assert deployment.image_ids()["api"] == old_app
    assert containers(deployment.stack, deployment.project)["api"].health == "healthy"
    assert lock_files(deployment) == []


async def test_an_abort_mid_recreate_is_canceled_and_rolled_back(
    deployment: Deployment, client: UpdateClient
) -> None:
    old_app = deployment.image_ids()["api"]
    new_app = hold_the_health_wait(deployment)
    job_id = await client.enqueue_update(services=["api"], run_migrations=False)
    worker = create_worker(deployment.settings, poll_delay=0.1, handle_signals=False)
    worker_task = asyncio.create_task(worker.main())
    try:
        await wait_for_recreate(deployment, new_app)
        await wait_for_step(client, job_id, "recreate")  # compose waits for health now

        # An operator's ansible-playbook meanwhile is refused at once, naming the worker's job.
        manual = run_playbook(deployment.worker_env(), timeout=120)
        assert manual.returncode != 0
        assert manual.failures[0][0] == "Lock | Take the update lock of the compose project"
        assert f"update-executor job {job_id}" in manual.failures[0][1], manual.explain()
        assert manual.report["lock"]["acquired"] is False
        assert deployment.image_ids()["api"] == new_app  # the manual run changed nothing

        started = time.monotonic()
        assert await client.abort(job_id, timeout=120) is True
        print(f"abort to canceled summary (with the rollback): {time.monotonic() - started:.1f}s")
    finally:
        worker_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker_task
        await worker.close()

    summary = assert_valid_summary((await client.status(job_id))["summary"])
    assert summary["status"] == "canceled"
    assert summary["error"]["step"] == "recreate"
    assert_rolled_back_to(deployment, summary, old_app)
    assert_nothing_left(deployment, job_id)
    assert await client.redis.get(inflight_key(deployment.settings.queue_name)) is None


async def test_a_job_longer_than_job_timeout_ends_as_timeout_and_rolled_back(
    deployment: Deployment, client: UpdateClient
) -> None:
    # The runner stops ansible at JOB_TIMEOUT - 30 s = 45 s, while compose waits for health.
    deployment.settings = deployment.settings.model_copy(update=dict(job_timeout=75))
    old_app = deployment.image_ids()["api"]
    hold_the_health_wait(deployment)
    job_id = await client.enqueue_update(services=["api"], run_migrations=False)
    started = time.monotonic()
    await run_worker_burst(deployment.settings)
    took = time.monotonic() - started
    print(f"timeout job with its rollback: {took:.1f}s")

    summary = assert_valid_summary((await client.status(job_id))["summary"])
    assert summary["status"] == "timeout"
    assert summary["error"]["step"] == "recreate"
    assert took < 75 + 60, took  # stopped at 45 s, then the rollback
    assert_rolled_back_to(deployment, summary, old_app)
    assert_nothing_left(deployment, job_id)


async def test_a_killed_worker_reports_the_job_interrupted_and_serves_the_next(
    deployment: Deployment, client: UpdateClient
) -> None:
    deployment.settings = deployment.settings.model_copy(update=dict(job_timeout=300))
    old_app = deployment.image_ids()["api"]
    job_id, new_app = await slow_update(deployment, client)
    with worker_process(deployment) as first:
        await wait_for_state(client, job_id, "running", 60)
        await wait_for_step(client, job_id, "migrations")  # `sleep 120` runs now
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    assert ansible_processes_of(job_id), "ansible outlives a SIGKILLed worker (own session)"
    assert deployment.image_ids()["api"] == new_app  # killed in the migration step
    assert len(lock_files(deployment)) == 2  # the dead run's lock and its rollback point

    with worker_process(deployment) as second:  # as systemd's Restart=always would
        # At start it ends the orphaned ansible, rolls back, then reports the job.
        await wait_for_state(client, job_id, "finished", 120)
        summary = assert_valid_summary((await client.status(job_id))["summary"])
        assert summary["status"] == "failed"
        assert "interrupted" in summary["error"]["message"]
        assert_rolled_back_to(deployment, summary, old_app)
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
        await wait_for_step(client, job_id, timeout=60)  # the playbook runs
        worker.send_signal(signal.SIGTERM)  # systemctl stop
        assert worker.wait(timeout=120) == 0
    summary = assert_valid_summary((await client.status(job_id))["summary"])
    assert summary["status"] == "successful", summary["error"]
    assert deployment.image_ids()["api"] == new_app
    assert_nothing_left(deployment, job_id)


async def wait_until_serving(client: UpdateClient, deployment: Deployment, timeout: float) -> None:
    """Until the worker's first poll: its health check key is written after its start-up
    (recovery included)."""
    key = f"{deployment.settings.queue_name}:health-check"
    deadline = time.monotonic() + timeout
    while not await client.redis.exists(key):
        assert time.monotonic() < deadline, "the worker never started serving"
        await asyncio.sleep(0.2)


async def test_sigterm_past_the_grace_period_stores_the_canceled_summary(
    deployment: Deployment, client: UpdateClient
) -> None:
    """systemctl stop with an update that outlasts STOP_GRACE_PERIOD: the update is canceled
    and rolled back, and its `canceled` summary is the job's result (not re-queued, not
    reported "interrupted" by the next start)."""
    deployment.settings = deployment.settings.model_copy(update=dict(job_timeout=300))
    old_app = deployment.image_ids()["api"]
    job_id, new_app = await slow_update(deployment, client)
    queue = deployment.settings.queue_name
    with worker_process(deployment, STOP_GRACE_PERIOD="2") as worker:
        await wait_for_step(client, job_id, "migrations", timeout=120)
        assert deployment.image_ids()["api"] == new_app  # recreated: there is something to undo
        worker.send_signal(signal.SIGTERM)  # systemctl stop
        assert worker.wait(timeout=180) == 0

    status = await client.status(job_id)
    assert status["state"] == "finished", status
    summary = assert_valid_summary(status["summary"])
    assert summary["status"] == "canceled", summary
    assert summary["error"]["step"] == "migrations"
    assert_rolled_back_to(deployment, summary, old_app)
    assert_nothing_left(deployment, job_id)
    # Nothing left for a next start: not queued, not in progress, the slot released.
    assert await client.redis.zcard(queue) == 0
    assert not await client.redis.exists(f"arq:in-progress:{job_id}", f"arq:job:{job_id}")
    assert await client.redis.get(inflight_key(queue)) is None

    with worker_process(deployment) as second:
        await wait_until_serving(client, deployment, timeout=60)
        second.send_signal(signal.SIGTERM)
        output = second.communicate(timeout=60)[0]
    assert job_id not in output, output  # neither recovered nor run again
    assert (await client.status(job_id))["summary"] == status["summary"]
    assert deployment.image_ids()["api"] == old_app


async def test_redis_restarts_do_not_lose_the_worker_or_the_result(
    deployment: Deployment, client: UpdateClient, bed: TestBed
) -> None:
    with worker_process(deployment) as worker:
        await wait_until_polling(client, deployment.settings.queue_name)
        bed.restart_redis()  # while idle (the test bed's Redis keeps no data)
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
