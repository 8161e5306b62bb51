"""The FastAPI router end to end: a real app (tests/integration/api_app.py) served by a real
uvicorn process, a real worker process, the test bed's Redis, dockerd and registry, all driven
through HTTP with httpx, as a UI would: check -> trigger -> events (SSE) -> status.

The app gets the API container's environment only (Redis, queue, job secret): no registry
token, no compose file, no Docker socket. The tests share one deployment of this module
(`shared_deployment`), each publishing a version of its own; the ones that must see an empty
queue take a fresh queue on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from testbed.procs import free_port
from tests.integration.api_app import ADMIN_NAME, ADMIN_TOKEN_ENV
from tests.integration.conftest import Deployment, cli_worker
from tests.summary_schema import assert_valid_summary
from worker.shared.client import UpdateClient
from worker.shared.keys import inflight_key

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN = {"X-Admin-Token": ADMIN_TOKEN}
BASE = "/system/update"


def api_environment(deployment: Deployment) -> dict[str, str]:
    return {**deployment.api_env(), ADMIN_TOKEN_ENV: ADMIN_TOKEN}


@dataclass
class ApiServer:
    """One uvicorn process serving tests/integration/api_app.py on a free loopback port."""

    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    app: str = "tests.integration.api_app:app"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    str(BIN / "uvicorn"),
                    self.app,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, f"uvicorn exited:\n{self.output()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            assert time.monotonic() < deadline, f"uvicorn did not start:\n{self.output()}"
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: the API container recreated in the middle of an update."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def api_server(deployment: Deployment, tmp_path: Path, name: str = "api") -> Iterator[ApiServer]:
    server = ApiServer(api_environment(deployment), tmp_path / f"{name}.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        print(f"--- {name} output ---\n{server.output()[-4000:]}")  # shown when a test fails
        assert_no_secret(deployment, server.output())


@contextlib.contextmanager
def host_worker(
    deployment: Deployment, tmp_path: Path, name: str = "worker"
) -> Iterator[subprocess.Popen[str]]:
    """The worker process (conftest's `cli_worker`) with a /tmp of its own, as systemd's
    PrivateTmp gives the service; its output must show no secret."""
    log = tmp_path / f"{name}.log"
    private_tmp = tmp_path / f"{name}-tmp"
    private_tmp.mkdir()
    with cli_worker({**deployment.worker_env(), "TMPDIR": str(private_tmp)}, log=log) as process:
        yield process
    assert_no_secret(deployment, log.read_text(errors="replace"))


def assert_no_secret(deployment: Deployment, text: str) -> None:
    assert deployment.stack.registry_password not in text
    assert deployment.settings.job_secret.reveal() not in text
    assert ADMIN_TOKEN not in text


@dataclass
class Event:
    event: str
    data: Any
    id: str | None


async def read_events(
    http: httpx.AsyncClient,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    into: list[Event] | None = None,
) -> list[Event]:
    """Read an SSE stream to its end (or until the connection breaks), appending to `into`."""
    events = [] if into is None else into
    fields: dict[str, str] = {}
    async with http.stream(
        "GET", f"{BASE}/events", params=params, headers=headers, timeout=90
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith(":"):
                continue  # a keepalive comment
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
                continue
            if "data" in fields:
                events.append(
                    Event(
                        fields.get("event", "message"), json.loads(fields["data"]), fields.get("id")
                    )
                )
            fields = {}
    return events


def step_events(events: list[Event]) -> list[tuple[str, str, str]]:
    """(kind, step, status) of the step entries, in order."""
    return [
        (e.event, e.data["name"], e.data.get("status", ""))
        for e in events
        if e.event in ("step_started", "step_ended")
    ]


async def wait_for_state(http: httpx.AsyncClient, job_id: str, state: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        answer = (await http.get(f"{BASE}/status", params={"job_id": job_id})).json()
        if answer["state"] == state:
            return answer
        assert time.monotonic() < deadline, f"job {job_id} never reached {state}: {answer}"
        await asyncio.sleep(0.2)


async def poll_status(http: httpx.AsyncClient, job_id: str, into: list[dict[str, Any]]) -> None:
    while True:
        answer = (await http.get(f"{BASE}/status", params={"job_id": job_id})).json()
        into.append(answer)
        if answer["state"] == "finished":
            return
        await asyncio.sleep(0.2)


@pytest.fixture
async def http_factory() -> AsyncIterator[Any]:
    opened: list[httpx.AsyncClient] = []

    def make(server: ApiServer, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            base_url=server.url, headers=ADMIN if headers is None else headers, timeout=60
        )
        opened.append(client)
        return client

    yield make
    for client in opened:
        await client.aclose()


@pytest.fixture
async def fresh_queue(
    shared_deployment: Deployment,
) -> AsyncIterator[tuple[Deployment, UpdateClient]]:
    """The module's deployment on a queue no job ever used, and a client of that queue."""
    deployment = shared_deployment.with_fresh_queue()
    async with await UpdateClient.connect(deployment.settings) as client:
        yield deployment, client


# ---------------------------------------------------------------------------------- tests


async def test_check_trigger_events_status(
    shared_deployment: Deployment, tmp_path: Path, http_factory: Any
) -> None:
    deployment, version = shared_deployment, shared_deployment.next_version()
    before_images, before_containers = deployment.image_ids(), deployment.container_ids()
    new_app = deployment.publish(deployment.app_repo, version)
    new_frontend = deployment.publish(deployment.frontend_repo, version)

    with host_worker(deployment, tmp_path), api_server(deployment, tmp_path) as api:
        http = http_factory(api)
        response = await http.get(f"{BASE}/check", params={"wait": 30})
        assert response.status_code == 200, response.text
        first_check = response.json()
        assert first_check["cached"] is False and first_check["pending"] is False
        assert first_check["update_available"] is True, first_check
        for name in ("api", "worker", "frontend"):
            assert first_check["services"][name]["update_available"] is True, first_check
            assert first_check["services"][name]["error"] is None

        response = await http.post(f"{BASE}/trigger", json={"run_migrations": True})
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        assert response.json()["state"] == "queued"

        events = await read_events(http, params={"job_id": job_id})

        # the progress entries, then the final status; ids resume where a client left off
        assert events[0].event == "job_started"
        assert events[-2].event == "job_ended" and events[-2].data["status"] == "successful"
        assert events[-1].event == "status" and events[-1].id is None
        ids = [e.id for e in events[:-1]]
        assert all(i is not None and i.startswith(f"{job_id}/") for i in ids)
        assert len(set(ids)) == len(ids)
        started = [name for kind, name, _ in step_events(events) if kind == "step_started"]
        assert started[:3] == ["preflight", "lock", "login"]
        assert {"pull", "recreate", "migrations", "report"} <= set(started)
        ended = {name: status for kind, name, status in step_events(events) if kind == "step_ended"}
        assert ended["recreate"] == "changed" and ended["migrations"] == "changed"
        final = events[-1].data
        assert final["state"] == "finished"

        status = (await http.get(f"{BASE}/status")).json()  # the latest update
        assert status["job_id"] == job_id
        assert status["state"] == "finished"
        assert status["current_step"] is None
        assert status["progress"]["done"] == status["progress"]["planned"]
        summary = assert_valid_summary(status["summary"])
        assert summary == final["summary"]
        assert (await http.get(f"{BASE}/status", params={"job_id": job_id})).json() == status
        assert summary["status"] == "successful", summary["error"]
        assert summary["request"]["requested_by"] == ADMIN_NAME  # from the host's auth

        after_images, after_containers = deployment.image_ids(), deployment.container_ids()
        assert after_images["api"] == after_images["worker"] == new_app
        assert after_images["frontend"] == new_frontend
        for name in ("db", "cache"):
            assert after_containers[name] == before_containers[name]
        for name in ("api", "worker", "frontend"):
            assert summary["services"][name]["before"]["image_id"] == before_images[name]
            assert summary["services"][name]["after"]["image_id"] == after_images[name]

        assert_no_secret(deployment, json.dumps([e.data for e in events]) + json.dumps(status))

        # a stream resumed after its job ended gives only the final status
        again = await read_events(http, headers={**ADMIN, "Last-Event-ID": str(ids[-1])})
        assert [e.event for e in again] == ["status"]

        # without waiting: the last finished check, flagged, while a new one runs
        stale = (await http.get(f"{BASE}/check", params={"wait": 0})).json()
        assert stale["cached"] is True and stale["pending"] is True, stale
        assert stale["job_id"] in (first_check["job_id"], stale["pending_job_id"])
        # the next check finds nothing new; a cached read gives the same answer
        check = (await http.get(f"{BASE}/check", params={"wait": 30})).json()
        assert check["cached"] is False and check["update_available"] is False, check
        cached = (await http.get(f"{BASE}/check", params={"refresh": "false"})).json()
        assert cached["cached"] is True and cached["pending"] is False
        assert cached["checked_at"] == check["checked_at"]
        assert cached["services"] == check["services"]


async def test_every_route_needs_the_hosts_auth(
    fresh_queue: tuple[Deployment, UpdateClient], tmp_path: Path, http_factory: Any
) -> None:
    deployment, client = fresh_queue
    with api_server(deployment, tmp_path) as api:
        for headers, code in (({}, 401), ({"X-Admin-Token": "wrong"}, 403)):
            http = http_factory(api, headers)
            for method, path in (
                ("GET", "/check"),
                ("POST", "/trigger"),
                ("GET", "/status"),
                ("GET", "/events"),
            ):
                response = await http.request(method, BASE + path, json={})
                assert response.status_code == code, (method, path, response.text)
    assert await client.redis.zcard(deployment.settings.queue_name) == 0


async def test_invalid_requests_are_422_and_queue_nothing(
    fresh_queue: tuple[Deployment, UpdateClient], tmp_path: Path, http_factory: Any
) -> None:
    deployment, client = fresh_queue
    with api_server(deployment, tmp_path) as api:
        http = http_factory(api)
        for body, says in (
            ({"run_migrations": "yes"}, "boolean"),
            ({"services": ["api", "db; rm -rf /"]}, "invalid service name at services[1]"),
            ({"services": []}, "non-empty list"),
            ({"compose_file": "/etc/passwd"}, "Extra inputs are not permitted"),
        ):
            response = await http.post(f"{BASE}/trigger", json=body)
            assert response.status_code == 422, response.text
            assert says in response.text
        response = await http.post(
            f"{BASE}/trigger", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert response.status_code == 422
        # CSRF (issue 11): what another site's form or no-cors fetch can send is refused.
        for content, content_type in (
            (b"run_migrations=true", "application/x-www-form-urlencoded"),
            (b'{"run_migrations": true}', "text/plain"),
        ):
            response = await http.post(
                f"{BASE}/trigger", content=content, headers={"content-type": content_type}
            )
            assert response.status_code == 415, response.text
        # nothing queued, ever: `idle` (the application's UI shape; a 404 before issue 12)
        idle = await http.get(f"{BASE}/status")
        assert idle.status_code == 200 and idle.json()["status"] == "idle", idle.text
        assert (await http.get(f"{BASE}/events")).status_code == 404
        assert (await http.get(f"{BASE}/status", params={"job_id": "nope"})).status_code == 404
    assert await client.redis.zcard(deployment.settings.queue_name) == 0
    assert await client.redis.get(inflight_key(deployment.settings.queue_name)) is None


async def test_the_app_shares_one_redis_pool_and_closes_it(
    fresh_queue: tuple[Deployment, UpdateClient], tmp_path: Path, http_factory: Any
) -> None:
    deployment, client = fresh_queue

    async def connections() -> int:
        return len(await client.redis.client_list())

    alone = await connections()
    with api_server(deployment, tmp_path) as api:
        http = http_factory(api)
        for _ in range(3):
            await http.get(f"{BASE}/status", params={"job_id": "warm-up"})
        warm = await connections()
        assert warm > alone  # the app connected
        for n in range(40):
            await http.get(f"{BASE}/status", params={"job_id": f"job-{n}"})
            await http.get(f"{BASE}/check", params={"refresh": "false"})
        assert await connections() == warm  # no connection per request
        api.stop()  # SIGTERM: the lifespan closes the pool (the exit would too)
        assert await connections() == alone


async def test_the_api_restarted_mid_update_reports_the_final_state(
    shared_deployment: Deployment, tmp_path: Path, http_factory: Any
) -> None:
    # a migration held until the test opens its gate, so the API can be killed while it runs
    deployment = shared_deployment.with_gated_migration()
    new_app = deployment.publish(deployment.app_repo, deployment.next_version())
    seen: list[Event] = []
    with host_worker(deployment, tmp_path):
        with api_server(deployment, tmp_path, "api-1") as first:
            http = http_factory(first)
            response = await http.post(f"{BASE}/trigger", json={"services": ["api", "worker"]})
            assert response.status_code == 202, response.text
            job_id = response.json()["job_id"]
            running = await wait_for_state(http, job_id, "running", 60)
            assert running["summary"] is None

            again = await http.post(f"{BASE}/trigger", json={})  # another click while it runs
            assert again.status_code == 409, again.text
            assert again.json()["job_id"] == job_id
            assert again.json()["state"] == "running"

            # follow the events until the migration starts, then kill the API under the stream
            reader = asyncio.create_task(read_events(http, into=seen))
            deadline = time.monotonic() + 120
            while ("step_started", "migrations", "") not in step_events(seen):
                assert not reader.done(), seen
                assert time.monotonic() < deadline, seen
                await asyncio.sleep(0.1)
            first.kill()
            with contextlib.suppress(httpx.HTTPError):
                await asyncio.wait_for(reader, 30)
            assert not any(e.event == "job_ended" for e in seen)

        with api_server(deployment, tmp_path, "api-2") as second:  # the API container, again
            http = http_factory(second)
            status = (await http.get(f"{BASE}/status")).json()  # a fresh process finds it
            assert status["job_id"] == job_id
            assert status["state"] == "running", status
            assert status["current_step"] == "migrations"
            assert 0 < status["progress"]["done"] < status["progress"]["planned"]

            deployment.gate(open=True)  # the migration may finish now
            rest = await read_events(http, headers={**ADMIN, "Last-Event-ID": str(seen[-1].id)})
            ids = [e.id for e in seen + rest if e.id is not None]
            assert len(set(ids)) == len(ids)  # nothing twice, ...
            assert rest[0].event == "step_ended" and rest[0].data["name"] == "migrations"
            assert [e.event for e in rest[-2:]] == ["job_ended", "status"]  # ... nothing lost
            final = rest[-1].data
            assert final["state"] == "finished"
            assert final["summary"]["status"] == "successful", final["summary"]["error"]

            status = (await http.get(f"{BASE}/status", params={"job_id": job_id})).json()
            assert status["state"] == "finished"
            assert_valid_summary(status["summary"])
            assert status["summary"] == final["summary"]
    assert deployment.image_ids()["api"] == new_app


async def test_a_failed_update_and_its_rollback_as_a_ui_sees_them(
    shared_deployment: Deployment, tmp_path: Path, http_factory: Any
) -> None:
    deployment = shared_deployment
    before_images = deployment.image_ids()
    deployment.publish(deployment.app_repo, deployment.next_version(), behaviour="unhealthy")
    with host_worker(deployment, tmp_path), api_server(deployment, tmp_path) as api:
        http = http_factory(api)
        response = await http.post(f"{BASE}/trigger", json={"services": ["api", "worker"]})
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        polled: list[dict[str, Any]] = []  # what a status panel polling every 0.2 s shows
        poller = asyncio.create_task(poll_status(http, job_id, polled))
        events = await read_events(http, params={"job_id": job_id})
        await asyncio.wait_for(poller, 30)
        status = (await http.get(f"{BASE}/status")).json()

    moments = [(p["state"], p["current_step"], p["progress"]["done"]) for p in polled]
    print(json.dumps(list(dict.fromkeys(moments))))
    states = [state for state, _, _ in moments]
    assert states == sorted(states, key=["queued", "running", "finished"].index)
    assert states[-1] == "finished"
    assert {step for state, step, _ in moments if state == "running"} & {"pull", "recreate"}
    assert all(step is None for state, step, _ in moments if state == "finished")
    print(
        json.dumps([(e.event, e.data) for e in events], indent=1)
    )  # the sequence docs/api.md shows
    ended: dict[str, str] = {}
    for kind, name, step_status in step_events(events):
        if kind == "step_ended":
            ended[name] = step_status  # the last step_ended of a step counts
    assert ended["recreate"] == "failed"
    assert ended["rollback"] == "changed"
    assert "migrations" not in ended  # never started
    job_ended = next(e for e in events if e.event == "job_ended")
    assert job_ended.data["status"] == "failed"
    assert job_ended.data["error"]["step"] == "recreate"

    assert status["job_id"] == job_id
    assert status["state"] == "finished"
    steps = {step["name"]: step for step in status["progress"]["steps"]}
    assert steps["recreate"]["status"] == "failed"
    assert steps["rollback"]["status"] == "changed" and steps["rollback"]["planned"] is False
    assert steps["migrations"]["status"] == "skipped"
    summary = assert_valid_summary(status["summary"])
    assert summary == events[-1].data["summary"]
    assert summary["status"] == "failed"
    assert summary["error"]["step"] == "recreate"
    assert summary["rolled_back"] is True
    assert summary["rollback"]["api"]["image_id"] == before_images["api"]
    assert summary["rollback"]["api"]["action"] == "restored"
    assert deployment.image_ids()["api"] == before_images["api"]
    assert deployment.image_ids()["worker"] == before_images["worker"]


async def test_a_killed_worker_still_ends_the_event_stream_with_the_outcome(
    deployment: Deployment, tmp_path: Path, http_factory: Any
) -> None:
    deployment.settings = deployment.settings.model_copy(
        update=dict(migration_command="sleep 120", job_timeout=300)
    )
    deployment.publish(deployment.app_repo, "2")
    seen: list[Event] = []
    with api_server(deployment, tmp_path) as api:
        http = http_factory(api)
        with host_worker(deployment, tmp_path, "worker-1") as first:
            response = await http.post(f"{BASE}/trigger", json={"services": ["api"]})
            assert response.status_code == 202, response.text
            job_id = response.json()["job_id"]
            reader = asyncio.create_task(read_events(http, params={"job_id": job_id}, into=seen))
            deadline = time.monotonic() + 120
            while ("step_started", "migrations", "") not in step_events(seen):
                assert not reader.done(), seen
                assert time.monotonic() < deadline, seen
                await asyncio.sleep(0.1)
            first.kill()  # no job_ended entry will ever be written by this worker
            first.wait(timeout=10)
        with host_worker(deployment, tmp_path, "worker-2"):  # systemd's Restart=always
            await asyncio.wait_for(reader, 150)
    assert seen[-1].event == "status"
    final = seen[-1].data
    assert final["job_id"] == job_id and final["state"] == "finished"
    summary = assert_valid_summary(final["summary"])
    assert summary["status"] == "failed"
    assert "interrupted" in summary["error"]["message"]
