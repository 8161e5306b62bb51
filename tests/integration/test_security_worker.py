"""Security, round 3 (issue 21), the worker's side: whoever can write to the queue's Redis can
neither crash the worker, nor starve it, nor make it fetch a huge value, nor flood the
operators with refusals.

Real components only: the test bed's dockerd, registry and Redis, the real playbook through
ansible-runner, the real ARQ worker (UpdateWorker) polling as systemd runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import logging
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.jobs import serialize_job

from tests.integration.conftest import Deployment, run_worker_burst
from tests.summary_schema import assert_valid_summary
from worker.host import history
from worker.host.arq_worker import UpdateWorker
from worker.host.history import stream_id_ms
from worker.host.main import create_worker
from worker.host.settings import Settings
from worker.shared.client import UpdateClient
from worker.shared.keys import history_key
from worker.shared.settings import Secret
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
        # A job's task may still be finishing when its result is seen (ARQ stores the result,
        # then cleans up): let it end before the pool closes. Cut off mid-command, its
        # pipeline would be collected later, in another test, as an unclosed session.
        running = [t for t in worker.tasks.values() if not t.done()]
        if running:
            await asyncio.wait(running, timeout=10)
            for job_task in running:
                job_task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        await worker.close()
        # Known, not yet explained (stop 27): about one full run in three, a redis-py Pipeline
        # of this in-process worker, cut off at this teardown, is collected later in another
        # test as "Unclosed client session". Collect it here, where it is this teardown's.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


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


# ------------------------------------------------------------------ a flood of refused jobs
@dataclass
class Receiver:
    """An HTTP server on loopback that keeps every JSON body POSTed to it, with the time."""

    server: ThreadingHTTPServer
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received: list[tuple[float, dict[str, Any]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received.append((time.monotonic(), json.loads(self.rfile.read(length))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(server, received)
    finally:
        server.shutdown()
        server.server_close()


FLOOD = 1000
INTERVAL_S = 10


async def test_a_flood_of_refused_jobs_is_reported_in_bulk_and_real_jobs_go_on(
    deployment: Deployment, client: UpdateClient, receiver: Receiver, tmp_path: Path
) -> None:
    """1,000 unsigned or garbage jobs: before, 1,000 notifications and 1,000 history records
    (the stream keeps 500: every real update pushed out). Now at most one notification per
    REFUSAL_REPORT_INTERVAL (10 s here) and a few aggregated records that add up to 1,000;
    the real records stay, and a valid update queued as the flood ends is served."""
    settings = deployment.settings.model_copy(
        update=dict(
            notify_urls=Secret(receiver.url),  # NOTIFY_ON=failure: a refusal is notified
            refusal_report_interval=INTERVAL_S,
            history_file=tmp_path / "history.jsonl",
        )
    )
    queue = settings.queue_name
    r: Any = client.redis
    codec = client_codec(settings)
    async with serving_worker(settings) as (_, task):
        before = await put_job(r, queue, signed(codec, dry_run=True, requested_by="before"))
        assert (await served(client, before, task))["status"] == "successful"
        flood_started = time.monotonic()
        async with r.pipeline(transaction=False) as pipe:
            for n in range(FLOOD):
                job_id = f"flood{n:04d}"
                value = b'{"not": "signed"}' if n % 2 else b"\xff garbage"
                pipe.psetex(job_key_prefix + job_id, 600_000, value)
                pipe.zadd(queue, {job_id: now_ms() - 1000})
            await pipe.execute()
        # the flood has ended: a valid update is queued behind it
        flood_ended = time.monotonic()
        after = await put_job(r, queue, signed(codec, dry_run=True, requested_by="after"))
        last = await served(client, f"flood{FLOOD - 1:04d}", task, timeout=180)
        refused_in = time.monotonic() - flood_ended
        summary = await served(client, after, task, timeout=180)
        served_in = time.monotonic() - flood_ended
        assert summary["status"] == "successful", summary["error"]
        assert last["notification"] == "batched", last
        assert "not signed" in last["error"]["message"]
        flood_s = time.monotonic() - flood_started
    # the worker stopped: what was not reported yet is recorded (notified only when due)
    times = [at for at, _ in receiver.messages]
    titles = [message["title"] for _, message in receiver.messages]
    assert all(title.startswith("Jobs refused (") for title in titles), titles
    # reports start at least INTERVAL_S apart; their delivery takes a varying time on a
    # loaded machine, hence the margin
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(times)]
    assert all(gap >= INTERVAL_S - 2 for gap in gaps), (gaps, flood_s)
    assert 1 <= len(times) <= flood_s / INTERVAL_S + 1, (len(times), flood_s)
    first = receiver.messages[0][1]["message"]
    assert "refused in the last 10 seconds; first at " in first, first
    records = await client.history(50)
    real = [rec["requested_by"] for rec in records if rec["kind"] == "update"]
    assert real == ["before", "after"], records
    bulk = [rec for rec in records if rec["kind"] == "refused"]
    assert sum(rec["count"] for rec in bulk) == FLOOD, bulk
    assert len(bulk) <= len(times) + 1, bulk
    reasons = {kind for rec in bulk for kind in rec["reasons"]}
    assert reasons == {
        "the payload is not signed (UPDATE_JOB_SECRET is required)",
        "the payload is not JSON",
    }, reasons
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert len(lines) == 2 + len(bulk)  # the host's file too: no record per refused job
    print(
        f"\n{FLOOD} refused jobs: {len(times)} notification(s) in {flood_s:.1f} s "
        f"(interval {INTERVAL_S} s), {len(bulk)} history record(s); "
        f"the last junk job refused {refused_in:.1f} s after the flood ended, the valid update "
        f"(a dry run) queued behind it served {served_in:.1f} s after"
    )
    # issue 21 asks for 30 s; measured on a quiet machine it is well under (docs/security.md),
    # this bound allows for a loaded one
    assert served_in < 90, served_in


# ------------------------------------------------------------------ history bound to its place
async def test_a_history_record_added_again_or_moved_is_left_out(
    deployment: Deployment, client: UpdateClient
) -> None:
    """Records are signed; before, a Redis writer could XADD a copy of a real record again
    (an update that "happened" twice, or last) and it verified. Now each is bound to the id
    it was written under."""
    settings = deployment.settings
    r: Any = client.redis
    stream = history_key(settings.queue_name)
    for job_id in ("first", "second"):
        await history.record(r, settings, {"kind": "update", "job_id": job_id})
    genuine = await r.xrange(stream)
    assert [e["job_id"] for e in await client.history(10)] == ["first", "second"]
    first_id, first_fields = genuine[0]
    await r.xadd(stream, first_fields)  # the first record added again, now last
    await r.xadd(stream, first_fields, id=f"{stream_id_ms(first_id) + 10**7}-1")
    assert [e["job_id"] for e in await client.history(10)] == ["first", "second"]
    # a top id put far ahead does not stop the worker from writing after it
    await r.xadd(stream, {"p": "{}", "s": ""}, id=f"{now_ms() + 10**9}-0")
    await history.record(r, settings, {"kind": "update", "job_id": "third"})
    assert [e["job_id"] for e in await client.history(10)] == ["first", "second", "third"]


# ------------------------------------------------------------------ job strings off the argv
async def test_job_strings_never_reach_a_command_line(
    deployment: Deployment, client: UpdateClient
) -> None:
    """Any user of the host can read a process's argv (`ps`, /proc/<pid>/cmdline; systemd's
    ProtectProc= does not hide it from them). The job's strings now reach ansible-playbook in
    a 0600 file of the run's private dir; only the job id (recovery's marker) is on argv."""
    token = f"argv{uuid.uuid4().hex[:12]}"
    requested_by = f"{token}@example.org"
    seen: set[str] = set()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    with contextlib.suppress(OSError):
                        seen.add((entry / "cmdline").read_bytes().decode("utf-8", "replace"))
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        job_id = await client.enqueue_update(
            services=["frontend"], dry_run=True, requested_by=requested_by
        )
        await run_worker_burst(deployment.settings)
    finally:
        stop.set()
        sampler.join(5)
    summary = assert_valid_summary((await client.status(job_id))["summary"])
    assert summary["status"] == "successful", summary["error"]
    assert set(summary["services"]) == {"frontend"}  # the playbook got its variables
    playbooks = [cmd for cmd in seen if "ansible-playbook" in cmd and job_id in cmd]
    assert playbooks, "the sampler never saw the run's ansible-playbook"
    assert not [cmd for cmd in seen if token in cmd]  # requested_by: in no process's argv
    for cmd in playbooks:  # the services, the settings: in the file, not on the command line
        assert "compose_update_services" not in cmd and "env/extravars" in cmd, cmd
