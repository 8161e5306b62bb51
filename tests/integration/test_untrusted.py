"""Security, round 2 (issue 11): no job string is ever code; replays are refused across
restarts; the worker outlives bad Redis state; only a signed cancel request aborts a job;
results are bound to their job; a non-UTF-8 progress entry breaks nothing.

Real components only: the test bed's dockerd, registry and Redis, the real playbooks through
the real ansible-runner, the real ARQ worker (UpdateWorker). Each hostile string is put where
Ansible would template it if the worker let it through: a command in it would `touch` a marker
file, which must stay absent. The tests share one deployment of this module, each on a queue
of its own (the `deployment` fixture below).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from fastapi import FastAPI

from testbed.faults import operator_run, rollback_point_path
from tests.integration.conftest import Deployment, eventually, run_worker_burst
from tests.summary_schema import assert_valid_summary
from worker.api import build_router
from worker.host.arq_worker import UpdateWorker
from worker.host.cooldown import cooldown_key
from worker.host.main import create_worker
from worker.host.settings import Settings
from worker.shared.cancel import seal_cancel
from worker.shared.client import UpdateClient
from worker.shared.keys import cancel_key, inflight_key, latest_update_key, nonce_key, progress_key
from worker.shared.signing import JobCodec, client_codec

REPO_ROOT = Path(__file__).resolve().parents[2]


def now_ms() -> int:
    return int(time.time() * 1000)


def hostile_strings(marker: Path) -> dict[str, str]:
    """Every shape of template, and what else a job field should never carry."""
    touch = f"lookup('ansible.builtin.pipe', 'touch {marker}')"
    return {
        "{{ }}": "{{ " + touch + " }}",
        "{% %}": "{% set x = " + touch + " %}{{ x }}",
        "{# #}": "{# c #}{{ " + touch + " }}{# c #}",
        "lookup(": touch,
        "newline": "admin\n{{ " + touch + " }}",
        "NUL": "admin\x00{{ " + touch + " }}",
        "../": "../../../../" + marker.name,
        "10 kB": "{{ " + touch + " }}" + "A" * 10_240,
    }


def signed(codec: JobCodec, function: str = "process_system_update", **kwargs: Any) -> bytes:
    return serialize_job(function, (), kwargs, None, now_ms(), serializer=codec.serialize)


async def put_job(
    redis: ArqRedis, queue: str, raw: bytes, job_id: str | None = None, ahead_s: float = 1
) -> str:
    """Write a job the way arq's enqueue_job does, under an id of the test's choosing, due
    `ahead_s` seconds ago (the queue runs the most overdue first)."""
    job_id = job_id or uuid.uuid4().hex
    await redis.psetex(job_key_prefix + job_id, 600_000, raw)
    await redis.zadd(queue, {job_id: now_ms() - int(ahead_s * 1000)})
    return job_id


class Written:
    """What appeared, between two looks, under the places a path traversal would reach,
    whose name carries the test's token (other tests of the machine write there too)."""

    def __init__(self, token: str, *roots: Path) -> None:
        self.token = token
        self.roots = [r for r in roots if r.is_dir()]
        self.before = self._names()

    def _names(self) -> set[Path]:
        # Three levels: where `../` from a job dir, a run dir or an artifacts dir would land
        # (a full walk of /tmp would cross other tests' Docker data roots).
        patterns = [f"*{self.token}*", f"*/*{self.token}*", f"*/*/*{self.token}*"]
        return {path for root in self.roots for pattern in patterns for path in root.glob(pattern)}

    def new(self) -> set[Path]:
        return self._names() - self.before


@pytest.fixture
def deployment(shared_deployment: Deployment) -> Deployment:
    """The module's deployment on a fresh queue: the Redis state each test makes (nonces,
    in-flight claims, cool-down) is its own, the compose project is up once for all."""
    return shared_deployment.with_fresh_queue()


@pytest.fixture
def marked(deployment: Deployment, tmp_path: Path) -> Iterator[tuple[Settings, Path]]:
    """Settings with a private lock dir, and the marker a command from a template would make."""
    token = f"UEMARK{uuid.uuid4().hex[:8]}"
    marker = Path(tempfile.gettempdir()) / token
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir(mode=0o700)
    settings = deployment.settings.model_copy(update=dict(lock_dir=lock_dir))
    yield settings, marker
    marker.unlink(missing_ok=True)


def summary_of(status: dict[str, Any]) -> dict[str, Any]:
    assert status["state"] == "finished", status
    return assert_valid_summary(status["summary"])


# ------------------------------------------------------------------ no job string is code
async def test_hostile_strings_in_every_job_field_and_key_are_never_templated(
    deployment: Deployment,
    client: UpdateClient,
    marked: tuple[Settings, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    settings, marker = marked
    queue = settings.queue_name
    codec = client_codec(settings)
    hostile = hostile_strings(marker)
    written = Written(marker.name, Path(tempfile.gettempdir()), settings.lock_dir, REPO_ROOT)
    containers_before = deployment.container_ids()

    # A rollback point left by a cut-off update, its job id hostile: the worker's start runs
    # playbooks/rollback.yml with it (read from the file: data, never a template).
    point = rollback_point_path(deployment.stack, settings.lock_dir, deployment.project)
    point.write_text(
        json.dumps(
            {
                "job_id": hostile["{{ }}"],
                "started_at": hostile["{% %}"],
                "project_dir": str(deployment.compose_file.parent),
                "compose_files": [deployment.compose_file.name],
                "targets": [],
                "service_image": {},
                "service_restart": {},
                "health_timeout": 30,
                "before": {},
            }
        )
    )
    # The in-flight key holding a hostile "job id" that is marked in progress: start-up
    # recovery reads it back (it would reach the rollback playbook and /proc matching).
    await client.redis.set(inflight_key(queue), hostile["{{ }}"].encode())
    await client.redis.set(in_progress_key_prefix + hostile["{{ }}"], b"1")

    jobs: dict[str, str] = {}  # row -> job id
    for name, text in hostile.items():
        for field, value in (
            ("requested_by", text),
            ("services", [text]),
            ("run_migrations", text),
            ("dry_run", text),
            ("create_backup", text),
        ):
            kwargs: dict[str, Any] = {"dry_run": True, field: value}
            jobs[f"{field} = {name}"] = await put_job(client.redis, queue, signed(codec, **kwargs))
    # The job id itself: a valid signed job's bytes under a hostile id (no signature covers it).
    crafted: dict[str, str] = {}
    for name, text in hostile.items():
        job_id = "x" + text  # the shape: a letter first, the template after
        await put_job(client.redis, queue, signed(codec, dry_run=True), job_id)
        crafted[name] = job_id
    # And after all of it, an ordinary job: the same worker must serve it.
    last = await put_job(client.redis, queue, signed(codec, dry_run=True, requested_by="admin"))
    await client.redis.zadd(queue, {last: now_ms()})

    started = time.monotonic()
    await run_worker_burst(settings)
    elapsed = time.monotonic() - started

    assert not marker.exists(), "a job string ran as a template"
    assert written.new() == set(), written.new()
    assert deployment.container_ids() == containers_before

    got: dict[str, str] = {}
    for row, job_id in jobs.items():
        summary = summary_of(await client.status(job_id))
        if summary["status"] == "successful":
            assert summary["request"]["requested_by"] == hostile[row.split(" = ")[1]], row
            got[row] = "accepted as data (dry run successful, nothing templated)"
        else:
            assert summary["steps"] == [], row
            got[row] = f"refused: {summary['error']['message'][:110]}"
    for name in ("{{ }}", "{% %}", "{# #}", "lookup(", "../"):
        assert got[f"requested_by = {name}"].startswith("accepted as data"), got
    for name in ("newline", "NUL"):
        assert "control characters" in got[f"requested_by = {name}"], got
    assert "at most 200 chars" in got["requested_by = 10 kB"]
    for row, text in got.items():
        if not row.startswith("requested_by"):
            assert text.startswith("refused"), (row, text)

    security = [r.getMessage() for r in caplog.records if r.name.startswith("update_executor")]
    for name, job_id in crafted.items():
        # Never run, no result, off the queue, and logged escaped on one line.
        assert await client.redis.exists(result_key_prefix + job_id) == 0, name
        assert await client.redis.zscore(queue, job_id) is None, name
        got[f"job id = {name}"] = "queue entry removed, never run, no result (logged escaped)"
    assert all("\n" not in line and len(line) < 2000 for line in security)
    assert any("removed: not a job id" in line for line in security)
    assert any(
        f"ignoring {inflight_key(queue)}: it holds an invalid job id" in line for line in security
    )
    got["in-flight key = {{ }}"] = "ignored at start-up recovery (logged escaped)"

    # The rollback point was rolled back (nothing to do) and removed, its job id only data.
    assert not point.exists()
    got["rollback point job_id = {{ }}, started_at = {% %}"] = (
        "read as data; rollback ran; point removed"
    )

    assert summary_of(await client.status(last))["status"] == "successful"
    report = "\n".join(f"  {row!r:40} -> {text}" for row, text in got.items())
    print(f"\nhostile inputs and what they got ({elapsed:.1f} s for the queue):\n{report}")


def test_the_manual_playbook_still_takes_requested_by_as_a_plain_extra_var(
    deployment: Deployment, marked: tuple[Settings, Path]
) -> None:
    """The operator's `ansible-playbook -e compose_update_requested_by=...` path keeps working."""
    settings, _ = marked
    inventory, env = operator_run(
        {**deployment.worker_env(), "UPDATE_LOCK_DIR": str(settings.lock_dir)}
    )
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(inventory),
            "playbooks/update.yml",
            "--check",
            "-e",
            "compose_update_requested_by=operator compose_update_job_id=manual-1",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


# ------------------------------------------------------------------ replay across restarts
async def test_a_replay_after_a_worker_restart_is_refused_and_migrations_do_not_run_again(
    deployment: Deployment, client: UpdateClient
) -> None:
    settings = deployment.settings
    queue = settings.queue_name
    deployment.publish(deployment.app_repo, deployment.next_version())
    job_id = await client.enqueue_update(services=["api"], run_migrations=True)
    captured = await client.redis.get(job_key_prefix + job_id)
    await run_worker_burst(settings)  # the first worker
    first = summary_of(await client.status(job_id))
    assert first["status"] == "successful", first["error"]
    migrations = deployment.migrations_log()
    assert migrations.strip(), "the migration ran once"

    # A new worker process would start with an empty memory: a new worker here does too.
    replay_id = await put_job(client.redis, queue, captured)
    await run_worker_burst(settings)
    replay = summary_of(await client.status(replay_id))
    assert replay["status"] == "failed"
    assert "already accepted once: a replay" in replay["error"]["message"]
    assert replay["steps"] == []
    assert deployment.migrations_log() == migrations  # not run again
    nonces = [k async for k in client.redis.scan_iter(match=nonce_key(queue, "*"))]
    assert len(nonces) == 1 and 0 < await client.redis.pttl(nonces[0]) <= 900_000
    print(f"\nreplay after a restart: {replay['error']['message']}")


async def test_a_job_enqueued_in_the_future_is_refused(
    deployment: Deployment, client: UpdateClient
) -> None:
    codec = client_codec(deployment.settings)
    future = JobCodec(codec.key, clock=lambda: time.time() + 3600)
    raw = serialize_job(
        "process_system_update",
        (),
        {"dry_run": True},
        None,
        now_ms() + 3_600_000,
        serializer=future.serialize,
    )
    job_id = await put_job(client.redis, deployment.settings.queue_name, raw)
    await run_worker_burst(deployment.settings)
    summary = summary_of(await client.status(job_id))
    assert "in the future" in summary["error"]["message"], summary["error"]
    print(f"\nfuture job: {summary['error']['message']}")


# ------------------------------------------------------------------ bad Redis state
@contextlib.asynccontextmanager
async def serving_worker(settings: Settings) -> AsyncIterator[UpdateWorker]:
    """A worker that polls until the test ends, as systemd runs it (not burst)."""
    worker = create_worker(settings, poll_delay=0.05, handle_signals=False)
    task = asyncio.create_task(worker.main())
    try:
        yield worker
    finally:
        assert not task.done() or task.cancelled(), f"the worker stopped: {task.exception()}"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()


async def served(client: UpdateClient, job_id: str, timeout: float = 120) -> dict[str, Any]:
    return summary_of({"state": "finished", "summary": await client.result(job_id, timeout)})


async def test_the_worker_outlives_bad_redis_state(
    own_deployment: Deployment, own_client: UpdateClient, caplog: pytest.LogCaptureFixture
) -> None:
    # its own: the cool-down it sets up is per compose project
    deployment, client = own_deployment, own_client
    caplog.set_level(logging.INFO)
    settings = deployment.settings.model_copy(update=dict(min_interval=60))
    queue = settings.queue_name
    codec = client_codec(settings)
    r: Any = client.redis  # redis-py types its commands Awaitable[T] | T
    outcomes: dict[str, str] = {}

    async def dry_job(**extra: Any) -> str:
        return await put_job(r, queue, signed(codec, dry_run=True, **extra))

    # Before the start: an in-flight key of another type, garbage in the cool-down key.
    await r.hset(inflight_key(queue), "x", "y")
    await r.hset(cooldown_key(settings), "x", "y")
    async with serving_worker(settings) as worker:
        # the queue key as a string: logged, skipped, the worker polls on
        await r.delete(queue)
        await r.set(queue, "x")
        polls = worker.jobs_complete

        async def logged() -> bool:
            return any("cannot read the queue" in m.getMessage() for m in caplog.records)

        await eventually(logged)
        await r.delete(queue)
        outcomes["queue key is a string"] = (await served(client, await dry_job()))["status"]
        assert worker.jobs_complete == polls + 1

        # garbage bytes as a job: refused like any bad job
        garbage = await put_job(r, queue, b"\xff\xfe garbage")
        outcomes["job key holds garbage"] = (await served(client, garbage))["error"]["message"]

        # Three bad states ahead of one valid job, which each would make ARQ's loop raise:
        # a job key that is a hash, a retry counter that is not a number (both due before the
        # valid job: skipped, off the queue), and the abort set as a string (ARQ's finish
        # would ZREM it). One run of the valid job serves all three (issue 22: fewer runs).
        bad = uuid.uuid4().hex
        await r.hset(job_key_prefix + bad, "x", "y")
        await r.zadd(queue, {bad: now_ms() - 5000})
        retried = uuid.uuid4().hex
        await r.set(f"arq:retry:{retried}", "x")
        await put_job(r, queue, signed(codec, dry_run=True), retried, ahead_s=5)
        await r.set(abort_jobs_ss, "x")
        status = (await served(client, await dry_job()))["status"]
        outcomes["job key is a hash"] = outcomes["retry key is not a number"] = status
        outcomes["arq:abort is a string"] = status
        assert await r.zscore(queue, bad) is None
        assert await r.zscore(queue, retried) is None
        assert await r.exists(result_key_prefix + retried) == 0
        await r.delete(abort_jobs_ss)

        # the progress stream of the next job as a string, and the latest-update key garbage
        job_id = uuid.uuid4().hex
        await r.set(progress_key(queue, job_id), "x")
        await put_job(r, queue, signed(codec, dry_run=True), job_id)
        outcomes["progress key is a string"] = (await served(client, job_id))["status"]
        await r.set(latest_update_key(queue), b"\xff{{ x }}")
        assert await client.latest_update() is None

        # the cool-down key of another type, for a real (not dry run) update
        real = await put_job(r, queue, signed(codec, services=["api"], run_migrations=False))
        summary = await served(client, real)
        outcomes["cool-down key is a hash"] = summary["status"]
        assert summary["status"] == "successful", summary["error"]
    assert outcomes["queue key is a string"] == "successful"
    assert outcomes["job key is a hash"] == "successful"
    assert "not JSON" in outcomes["job key holds garbage"]
    assert outcomes["arq:abort is a string"] == "successful"
    assert outcomes["progress key is a string"] == "successful"
    assert outcomes["retry key is not a number"] == "successful"
    messages = [m.getMessage() for m in caplog.records]
    assert any(m.startswith(f"ignoring {inflight_key(queue)}: WRONGTYPE") for m in messages)
    assert any("cannot release the in-flight slot: " in m for m in messages)
    assert any(m == f"ignoring {cooldown_key(settings)}: not a time" for m in messages)
    outcomes["in-flight key is a hash (start-up, release)"] = "ignored, logged"
    report = "\n".join(f"  {k}: {v}" for k, v in outcomes.items())
    print(f"\nbad Redis state and the worker:\n{report}")


# ------------------------------------------------------------------ abort only from the API
async def test_a_plain_zadd_to_arq_abort_does_nothing_and_a_signed_cancel_works(
    deployment: Deployment, client: UpdateClient
) -> None:
    settings = deployment.settings
    queue = settings.queue_name
    codec = client_codec(settings)
    async with serving_worker(settings):
        # Queued, then a Redis writer "aborts" it: it runs all the same.
        job_id = await put_job(client.redis, queue, signed(codec, dry_run=True))
        await client.redis.zadd(abort_jobs_ss, {job_id: now_ms()})
        assert (await served(client, job_id))["status"] == "successful"

        # A cancel request that does not verify (signed with another secret): ignored.
        other = JobCodec(b"z" * 64)
        job_id = uuid.uuid4().hex
        await client.redis.set(cancel_key(queue, job_id), seal_cancel(other, queue, job_id, 600))
        await put_job(client.redis, queue, signed(codec, dry_run=True), job_id)
        assert (await served(client, job_id))["status"] == "successful"

    # The API's cancel of a queued job: signed, it ends canceled without running.
    job_id = await client.enqueue_update(dry_run=True)
    aborted = asyncio.create_task(client.abort(job_id, timeout=120))
    await eventually(lambda: client.redis.exists(cancel_key(queue, job_id)))
    await run_worker_burst(settings)
    assert await aborted is True
    summary = summary_of(await client.status(job_id))
    assert summary["status"] == "canceled" and summary["steps"] == []


# ------------------------------------------------------------------ results bound to the job
@contextlib.asynccontextmanager
async def api(client: UpdateClient) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(build_router(lambda: client, lambda: None))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        yield http


async def test_a_success_copied_over_a_failure_is_reported_invalid(
    deployment: Deployment, client: UpdateClient
) -> None:
    settings = deployment.settings
    ok = await client.enqueue_update(dry_run=True)
    await run_worker_burst(settings)
    failed = await put_job(
        client.redis, settings.queue_name, signed(client_codec(settings), services=["db"])
    )
    await run_worker_burst(settings)
    assert summary_of(await client.status(ok))["status"] == "successful"
    assert summary_of(await client.status(failed))["status"] == "failed"

    await client.redis.set(
        result_key_prefix + failed, await client.redis.get(result_key_prefix + ok)
    )
    async with api(client) as http:
        answer = (await http.get("/system/update/status", params={"job_id": failed})).json()
    summary = assert_valid_summary(answer["summary"])
    assert summary["status"] == "failed"
    assert "invalid result" in summary["error"]["message"]
    assert "another job" in summary["error"]["message"]

    # A signed job envelope (typ "job") where a result belongs: not a result.
    await client.redis.set(result_key_prefix + failed, signed(client_codec(settings)))
    summary = summary_of(await client.status(failed))
    assert summary["status"] == "failed" and "not a result" in summary["error"]["message"]
    print(f"\nsuccess copied over a failure: {answer['summary']['error']['message']}")


# ------------------------------------------------------------------ non-UTF-8 progress
async def test_a_non_utf8_progress_entry_breaks_neither_status_nor_the_event_stream(
    deployment: Deployment, client: UpdateClient
) -> None:
    settings = deployment.settings
    job_id = await client.enqueue_update(dry_run=True)
    await client.redis.xadd(
        progress_key(settings.queue_name, job_id), {b"p": b"\xff\xfe", b"s": b"\xc3"}
    )
    await run_worker_burst(settings)
    async with api(client) as http:
        status = await http.get("/system/update/status", params={"job_id": job_id})
        assert status.status_code == 200, status.text
        assert status.json()["summary"]["status"] == "successful"
        async with http.stream(
            "GET", "/system/update/events", params={"job_id": job_id}, timeout=60
        ) as response:
            assert response.status_code == 200
            text = "".join([chunk async for chunk in response.aiter_text()])
    assert "event: status" in text and '"successful"' in text


async def test_a_hostile_in_flight_claim_is_released_by_the_next_request(
    deployment: Deployment, client: UpdateClient
) -> None:
    """The API must not hand a Redis writer's string to the UI as "the update in flight"."""
    settings = deployment.settings
    hostile = b"\xff{{ lookup('ansible.builtin.pipe', 'id') }}\n"
    await client.redis.set(inflight_key(settings.queue_name), hostile, ex=600)
    enqueued = await client.submit_update(dry_run=True)
    assert not enqueued.existing and enqueued.job_id != hostile.decode("utf-8", "replace")
    await run_worker_burst(settings)
    assert summary_of(await client.status(enqueued.job_id))["status"] == "successful"
    assert await client.redis.get(inflight_key(settings.queue_name)) is None
