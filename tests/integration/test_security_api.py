"""The API side against a Redis writer without the job secret (issue 21, docs/security.md, "The
API and the CLI read Redis defensively"): a flood of unsigned progress entries, oversized and
non-UTF-8 values, hostile pending-check ids; GET /check changes nothing of its own choosing;
`enqueue --wait` that joined an update which then never runs queues anew.

Everything runs against the real Redis of the test stack; the last test also against a real
worker and deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import subprocess
import time
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import pytest
from arq.constants import result_key_prefix
from fastapi import FastAPI

from testbed import Stack
from tests.integration.conftest import CLI, Deployment, worker_process
from worker.api import build_router
from worker.api.sse import event_stream
from worker.host.progress import ProgressEntry, encode_entry
from worker.shared.bounded import MAX_CHECK_BYTES, MAX_RECOVERY_BYTES, MAX_RESULT_BYTES
from worker.shared.client import CLAIM_GRACE_S, CLAIM_TTL_S, UpdateClient
from worker.shared.cutoff import read_recovery
from worker.shared.keys import (
    history_key,
    inflight_key,
    last_check_key,
    latest_update_key,
    pending_check_key,
    progress_key,
    recovery_key,
)
from worker.shared.progress import PROGRESS_PAGE, EntryKind
from worker.shared.settings import ClientSettings, Secret
from worker.shared.signing import secret_key
from worker.shared.untrusted import is_job_id

BASE = "/system/update"
SECURITY = "update_executor.security"
# A million in the issue; this many keep the test quick and are still 20 reads' worth.
FLOOD = 20 * PROGRESS_PAGE


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[UpdateClient]:
    """A client of a queue of its own on the stack's Redis, with a job secret (no worker)."""
    settings = ClientSettings(
        redis_host=stack.redis_host,
        redis_port=stack.redis_port,
        queue_name=f"update-executor:test:sec{secrets.token_hex(4)}",
        job_secret=Secret(secrets.token_hex(32)),
    )
    async with await UpdateClient.connect(settings) as connected:
        yield connected
        keys = [k async for k in connected.redis.scan_iter(match=settings.queue_name + "*")]
        if keys:
            await connected.redis.delete(*keys)


@contextlib.asynccontextmanager
async def api(client: UpdateClient, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(build_router(lambda: client, lambda: None, **options))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        yield http


def security_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == SECURITY]


class CountingHandler(logging.Handler):
    """Sets `event` once `count` records were logged."""

    def __init__(self, count: int, event: asyncio.Event) -> None:
        super().__init__()
        self.left, self.event = count, event

    def emit(self, record: logging.LogRecord) -> None:
        self.left -= 1
        if self.left <= 0:
            self.event.set()


async def flood(client: UpdateClient, key: str, count: int, fields: dict[str, str]) -> None:
    for start in range(0, count, 5000):
        async with client.redis.pipeline(transaction=False) as pipe:
            for _ in range(min(5000, count - start)):
                pipe.xadd(key, fields)  # type: ignore[arg-type]
            await pipe.execute()


# ------------------------------------------------------------------ progress flood
async def test_a_flood_of_unsigned_progress_entries_is_read_in_pages_and_logged_once(
    client: UpdateClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=SECURITY)
    job_id = await client.enqueue_update(dry_run=True)  # queued: no worker here
    stream = progress_key(client.settings.queue_name, job_id)
    await flood(client, stream, FLOOD, {"p": json.dumps({"kind": "job_ended"}), "s": "0" * 64})

    async with api(client) as http:
        started = time.monotonic()
        status = await http.get(f"{BASE}/status", params={"job_id": job_id})
        took = time.monotonic() - started
    assert status.status_code == 200, status.text
    assert status.json()["state"] == "queued" and status.json()["progress"]["steps"] == []
    lines = security_lines(caplog)
    # One bounded read (XRANGE ... COUNT), one line with the count: not 20,000 lines.
    assert lines == [
        f"progress of job {job_id}: {PROGRESS_PAGE} entries ignored "
        f"(first {lines[0].split('(first ')[1].split(':')[0]}: its signature does not verify)"
    ], lines[:3]
    print(f"\n/status over {FLOOD} unsigned entries: {took:.2f} s, {len(lines)} log line")

    # The event stream moves its cursor past the bad entries: each is read and logged once,
    # and a real entry written after them still arrives.
    caplog.clear()
    real = ProgressEntry(EntryKind.step_started, datetime.now(UTC).isoformat(), name="preflight")
    events: list[str] = []
    stream_of_events = cast(AsyncGenerator[str, None], event_stream(client, job_id, None, 0.01, 60))

    flood_read = asyncio.Event()
    counter = CountingHandler(FLOOD // PROGRESS_PAGE, flood_read)
    logging.getLogger(SECURITY).addHandler(counter)

    async def add_a_real_entry_once_the_flood_was_read() -> None:
        await flood_read.wait()
        await asyncio.sleep(0.5)  # about 50 idle polls: none may read a bad entry again
        fields = encode_entry(real, job_id, secret_key(client.settings))
        await client.redis.xadd(stream, fields)  # type: ignore[arg-type]

    adding = asyncio.create_task(add_a_real_entry_once_the_flood_was_read())
    async with asyncio.timeout(60):
        async for message in stream_of_events:
            events.append(message)
            if "event: step_started" in message:
                break
    await adding
    logging.getLogger(SECURITY).removeHandler(counter)
    await stream_of_events.aclose()
    lines = security_lines(caplog)
    assert len(lines) == FLOOD // PROGRESS_PAGE, lines[:3]  # one per page, never again
    assert sum(int(line.split(": ")[1].split(" ")[0]) for line in lines) == FLOOD
    assert f"id: {job_id}/" in events[-1] and '"name":"preflight"' in events[-1]


# ------------------------------------------------------------------ oversized values
async def test_oversized_results_checks_and_recovery_records_are_never_parsed(
    client: UpdateClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    queue = client.settings.queue_name
    job_id = await client.enqueue_update(dry_run=True)
    # A "result" of valid JSON just over the limit, where the job's result belongs: the job
    # then counts as finished, with a failed summary that says why, nothing parsed.
    giant = json.dumps({"pad": "x" * MAX_RESULT_BYTES}).encode()
    await client.redis.zrem(queue, job_id)
    await client.redis.set(result_key_prefix + job_id, giant, ex=600)
    async with api(client) as http:
        answer = (await http.get(f"{BASE}/status", params={"job_id": job_id})).json()
        assert answer["state"] == "finished" and answer["status"] == "failed", answer
        error = answer["summary"]["error"]
        assert error["step"] == "result" and "over the limit" in error["message"], error
        # A result key of another type: the same, not a 503.
        await client.redis.delete(result_key_prefix + job_id)
        await client.redis.hset(result_key_prefix + job_id, "x", "y")  # type: ignore[misc]
        answer = (await http.get(f"{BASE}/status", params={"job_id": job_id})).json()
        assert "not a string" in answer["summary"]["error"]["message"], answer

        await client.redis.set(last_check_key(queue), b"{" * (MAX_CHECK_BYTES + 1))
        check = await http.get(f"{BASE}/check", params={"refresh": "false"})
        assert check.status_code == 200 and check.json()["checked_at"] is None, check.text
    assert any(
        "last-check" in r.getMessage() and "over the" in r.getMessage() for r in caplog.records
    ), [r.getMessage() for r in caplog.records]

    caplog.clear()
    await client.redis.set(recovery_key(queue, job_id), b"[" * (MAX_RECOVERY_BYTES + 1))
    assert await read_recovery(client.redis, queue, job_id, client.redis.job_deserializer) is None
    assert any("over the" in r.getMessage() for r in caplog.records), caplog.records


# ------------------------------------------------------------------ non-UTF-8, hostile ids
async def test_non_utf8_and_hostile_values_never_make_the_api_answer_500(
    client: UpdateClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    queue = client.settings.queue_name
    await client.redis.xadd(history_key(queue), {b"p": b"\xff", b"s": b"\xfe"})
    pending = pending_check_key(queue, None)
    async with api(client, check_interval_s=0) as http:  # no rate limit here
        history = await http.get(f"{BASE}/history")
        assert history.status_code == 200, history.text
        assert history.json() == {"records": []}

        await client.redis.set(pending, b"\xff\xfe", ex=600)
        check = await http.get(f"{BASE}/check", params={"wait": 0})
        assert check.status_code == 200, check.text
        assert is_job_id(check.json()["pending_job_id"]), check.json()

        html = "<img src=x onerror=alert(1)>"
        await client.redis.set(pending, html, ex=600)
        check = await http.get(f"{BASE}/check", params={"wait": 0})
        assert check.status_code == 200, check.text
        assert check.json()["pending_job_id"] != html and html not in check.text
        assert is_job_id(check.json()["pending_job_id"]), check.json()

        # Too long to be an id: not even read whole. Nor is a giant "latest update".
        await client.redis.set(pending, "x" * 100_000, ex=600)
        check = await http.get(f"{BASE}/check", params={"wait": 0})
        assert is_job_id(check.json()["pending_job_id"]), check.text[:300]
        await client.redis.set(latest_update_key(queue), "x" * 100_000, ex=600)
        idle = await http.get(f"{BASE}/status")
        assert idle.status_code == 200 and idle.json()["status"] == "idle", idle.text[:300]
    # Logged escaped, and the key now names a real check.
    assert await client.redis.get(pending) == check.json()["pending_job_id"].encode()
    ignored = [r.getMessage() for r in caplog.records if "check-pending" in r.getMessage()]
    assert len(ignored) == 3, ignored
    assert not any("\xff" in line or "\n" in line for line in ignored), ignored


# ------------------------------------------------------------------ GET /check
async def test_a_get_never_starts_a_check_of_its_own_choosing_and_checks_are_rate_limited(
    client: UpdateClient,
) -> None:
    queue = client.settings.queue_name

    async def queued() -> int:
        return int(await client.redis.zcard(queue))

    async with api(client, check_interval_s=3600) as http:
        # A GET with services= only reads or joins: no pending key, no check job per set.
        for services in (["api"], ["api", "worker"], ["worker"]):
            answer = await http.get(f"{BASE}/check", params={"wait": 0, "services": services})
            assert answer.status_code == 200 and answer.json()["pending"] is False, answer.text
        # A browser's cross-site GET (a link, an image on another site) starts nothing either.
        cross = await http.get(
            f"{BASE}/check", params={"wait": 0}, headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert cross.status_code == 200 and cross.json()["cached"] is True
        assert await queued() == 0
        assert not [k async for k in client.redis.scan_iter(match=f"{queue}:check-pending:*")]

        # POST is guarded like /trigger ...
        form = await http.post(f"{BASE}/check", content=b"", headers={"Content-Type": "text/plain"})
        assert form.status_code == 415 and await queued() == 0
        # ... and starts one check; more within the interval start nothing, whatever services.
        first = (await http.post(f"{BASE}/check", params={"wait": 0}, json={})).json()
        assert first["pending"] is True and is_job_id(first["pending_job_id"])
        other = (
            await http.post(f"{BASE}/check", params={"wait": 0, "services": ["api"]}, json={})
        ).json()
        assert other["pending"] is False and other["cached"] is True, other
        assert await queued() == 1
        # The original page's GET joins the pending check (same-origin: it may start one,
        # but one is pending).
        joined = await http.get(
            f"{BASE}/check", params={"wait": 0}, headers={"Sec-Fetch-Site": "same-origin"}
        )
        assert joined.json()["pending_job_id"] == first["pending_job_id"]
        assert await queued() == 1


# ------------------------------------------------------------------ enqueue --wait
def test_enqueue_wait_that_joined_an_update_which_never_runs_queues_anew(
    deployment: Deployment,
) -> None:
    """Another caller's update holds the in-flight slot, but its job was removed from the
    queue (a Redis writer; or Redis lost it): `enqueue --wait` joins it, waits out the claim's
    grace, then queues a new update and follows that one to its end."""
    env = deployment.worker_env()
    queue = deployment.settings.queue_name
    lost = subprocess.run(
        [CLI, "enqueue", "--dry-run"], env=env, capture_output=True, text=True, check=True
    )
    lost_id = json.loads(lost.stdout)["job_id"]

    async def remove_it() -> None:
        async with await UpdateClient.connect(deployment.settings) as client:
            assert await client.redis.zrem(queue, lost_id) == 1
            # Claimed CLAIM_GRACE_S - 5 s ago: 5 s of grace are left.
            await client.redis.expire(inflight_key(queue), CLAIM_TTL_S - CLAIM_GRACE_S + 5)

    asyncio.run(remove_it())
    with worker_process(deployment):
        started = time.monotonic()
        waited = subprocess.run(
            [CLI, "enqueue", "--dry-run", "--wait", "--timeout", "240"],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    print(f"--- enqueue --wait ---\n{waited.stderr[-3000:]}")
    assert waited.returncode == 0, waited.stderr
    assert f"joined the update in flight job {lost_id}" in waited.stderr
    assert f"update job {lost_id} never ran; following" in waited.stderr
    summary = json.loads(waited.stdout)
    assert summary["status"] == "successful" and summary["job_id"] != lost_id
    print(f"joined a lost job, requeued and finished in {time.monotonic() - started:.1f} s")
