"""The router's parts alone (issue 22): the routes of worker/api/routes.py called as plain
functions over a stub client, the dependencies of worker/api/dependencies.py, the SSE helpers
of worker/api/sse.py, and what `build_router` puts around the routes. No Redis, no Docker."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, cast

import pytest
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from tests.unit.stub_client import FINISHED, QUEUED, RUNNING, StubClient, call, job
from worker.api import routes
from worker.api.dependencies import (
    RouterOptions,
    check_wait,
    requester,
    require_json,
    router_options,
    same_site,
)
from worker.api.errors import QUEUE_DOWN
from worker.api.router import build_router
from worker.api.sse import Cursor, event_name, event_stream, sse_message
from worker.shared.client import UpdateClient
from worker.shared.progress import ProgressPage
from worker.shared.request import UpdateRequest


def http_request(headers: dict[str, str] | None = None) -> Request:
    """A bare Starlette request with these headers (what a dependency reads)."""
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw})


def body_of(response: JSONResponse) -> dict[str, Any]:
    return cast("dict[str, Any]", json.loads(bytes(response.body)))


def options_for(stub: StubClient, **overrides: Any) -> RouterOptions:
    return RouterOptions(stub.factory, **overrides)


# ---------------------------------------------------------------- routes, called directly


async def test_trigger_queues_the_body_s_request_by_who_asks() -> None:
    stub = StubClient()
    body = routes.TriggerBody(services=["api"], dry_run=True)
    response = await routes.trigger(client=stub.factory(), who="admin", body=body)
    assert response.status_code == 202
    assert body_of(response)["job_id"] == "dddd3333new"
    assert body_of(response)["status"] == "updating"  # the application's UI shape
    assert stub.submitted == [UpdateRequest(services=("api",), dry_run=True, requested_by="admin")]


async def test_trigger_without_a_body_asks_for_the_defaults() -> None:
    stub = StubClient()
    await routes.trigger(client=stub.factory(), who=None, body=None)
    assert stub.submitted == [UpdateRequest()]  # every allowed service, with migrations


@pytest.mark.parametrize(
    ("body", "who", "says"),
    [
        (routes.TriggerBody(services=["api; id"]), None, "invalid service name at services[0]"),
        (routes.TriggerBody(), "x" * 201, "requested_by must be a string"),
        (routes.TriggerBody(), "ops\nINJECTED", "control characters"),
    ],
)
async def test_trigger_refuses_what_the_worker_would_refuse_queuing_nothing(
    body: routes.TriggerBody, who: str | None, says: str
) -> None:
    stub = StubClient()
    with pytest.raises(RequestValidationError) as refused:
        await routes.trigger(client=stub.factory(), who=who, body=body)
    assert says in str(refused.value.errors())
    assert stub.submitted == []


@pytest.mark.parametrize(
    ("job_id", "code", "canceled"),
    [
        (QUEUED, 202, [QUEUED]),
        (RUNNING, 202, [RUNNING]),
        (FINISHED, 409, []),
        ("eeee4444unknown", 404, []),
        (None, 202, [RUNNING]),  # the latest update
    ],
)
async def test_cancel(job_id: str | None, code: int, canceled: list[str]) -> None:
    stub = StubClient()
    response = await routes.cancel(client=stub.factory(), who="admin", job_id=job_id)
    assert response.status_code == code
    assert stub.canceled == canceled
    if code == 409:
        assert body_of(response)["status"] == "completed"  # the UI's shape of that job


async def test_cancel_with_no_update_at_all_is_a_404() -> None:
    stub = StubClient(latest=None)
    response = await routes.cancel(client=stub.factory(), who=None, job_id=None)
    assert response.status_code == 404 and "nothing to cancel" in body_of(response)["detail"]


async def test_status_answers() -> None:
    stub = StubClient(latest=None)
    assert (await routes.status(client=stub.factory(), job_id=None))["status"] == "idle"
    running = await routes.status(client=stub.factory(), job_id=RUNNING)
    assert running["state"] == "running" and running["status"] == "updating"
    finished = await routes.status(client=stub.factory(), job_id=FINISHED)
    assert finished["summary"]["status"] == "successful" and finished["status"] == "completed"
    unknown = await routes.status(client=stub.factory(), job_id="eeee4444unknown")
    assert isinstance(unknown, JSONResponse) and unknown.status_code == 404


class RedisDown(StubClient):
    async def latest_update(self) -> dict[str, Any] | None:
        raise ConnectionError("Redis is down")

    async def history(self, limit: int = 50) -> list[dict[str, Any]]:
        raise ConnectionError("Redis is down")


async def test_an_unreachable_queue_is_a_503() -> None:
    stub = RedisDown()
    for answer in (
        routes.status(client=stub.factory(), job_id=None),
        routes.history(client=stub.factory(), limit=5),
        routes.cancel(client=stub.factory(), who=None, job_id=None),
    ):
        with pytest.raises(HTTPException) as down:
            await answer
        assert down.value.status_code == 503 and down.value.detail == QUEUE_DOWN


async def test_check_reads_the_last_check_with_the_application_s_fields() -> None:
    stub = StubClient()
    answer = await routes.check(
        client=stub.factory(),
        options=options_for(stub),
        request=http_request(),
        wait=0,
        refresh=False,
    )
    assert answer["cached"] is True and answer["pending"] is False
    assert answer["has_updates"] is False and "No check has finished yet" in answer["message"]
    assert stub.checks_started == 0  # refresh=false only reads


async def test_a_get_check_from_another_site_starts_no_check() -> None:
    stub = StubClient()
    cross_site = http_request({"Sec-Fetch-Site": "cross-site"})
    await routes.check(client=stub.factory(), options=options_for(stub), request=cross_site, wait=0)
    assert stub.checks_started == 0
    await routes.check(
        client=stub.factory(), options=options_for(stub), request=http_request(), wait=0
    )
    assert stub.checks_started == 1


def test_the_routes_in_order_and_which_change_something() -> None:
    assert [(r.method, r.path, r.changes) for r in routes.ROUTES] == [
        ("GET", "/check", False),
        ("POST", "/check", True),
        ("POST", "/trigger", True),
        ("POST", "/cancel", True),
        ("GET", "/status", False),
        ("GET", "/events", False),
        ("GET", "/history", False),
    ]


# ---------------------------------------------------------------- dependencies


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"Content-Type": "application/json"}, True),
        ({"Content-Type": "Application/JSON; charset=utf-8"}, True),
        ({"X-Requested-With": "fetch"}, True),
        ({"Content-Type": "text/plain"}, False),
        ({"Content-Type": "application/x-www-form-urlencoded"}, False),
        ({}, False),
    ],
)
async def test_the_csrf_guard(headers: dict[str, str], allowed: bool) -> None:
    if allowed:
        await require_json(http_request(headers))
    else:
        with pytest.raises(HTTPException) as refused:
            await require_json(http_request(headers))
        assert refused.value.status_code == 415


@pytest.mark.parametrize(
    ("site", "same"),
    [
        (None, True),
        ("same-origin", True),
        ("none", True),
        ("same-site", False),
        ("cross-site", False),
    ],
)
def test_same_site(site: str | None, same: bool) -> None:
    assert same_site(http_request({} if site is None else {"Sec-Fetch-Site": site})) is same


def test_the_check_wait_is_bounded_by_the_router_s_option() -> None:
    options = options_for(StubClient(), max_check_wait_s=2)
    assert check_wait(options, 2.0) == 2.0
    with pytest.raises(RequestValidationError, match="at most 2 s"):
        check_wait(options, 2.5)


def test_a_route_without_build_router_s_options_refuses_to_run() -> None:
    with pytest.raises(RuntimeError, match="build_router"):
        router_options(http_request())
    request = http_request()
    options = options_for(StubClient())
    options(request)  # what build_router's dependency does
    assert router_options(request) is options
    assert requester(request) is None  # no requested_by recorded


def test_options_hash_by_identity_whatever_the_factory() -> None:
    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self) -> UpdateClient:
            raise AssertionError

    options = RouterOptions(Unhashable())
    assert {options: 1}[options] == 1  # FastAPI caches dependencies in a dict


def superuser(x_token: Annotated[str | None, Header()] = None) -> None:
    if x_token != "admin":
        raise HTTPException(status_code=401, detail="not authenticated")


async def test_requested_by_runs_only_on_the_routes_that_change_something() -> None:
    asked: list[str] = []

    def who(x_user: Annotated[str, Header()] = "nobody") -> str:
        asked.append(x_user)
        return x_user

    stub = StubClient()
    app = FastAPI()
    app.include_router(build_router(stub.factory, superuser, requested_by=who))
    headers = {"X-Token": "admin", "X-User": "ops@example.org"}
    assert (await call(app, "GET", "/system/update/status", headers=headers)).status_code == 200
    assert asked == []
    response = await call(app, "POST", "/system/update/trigger", json={}, headers=headers)
    assert response.status_code == 202
    assert asked == ["ops@example.org"]
    assert stub.submitted == [UpdateRequest(requested_by="ops@example.org")]


async def test_two_routers_in_one_app_keep_their_own_options() -> None:
    first, second = StubClient(latest=QUEUED), StubClient(latest=FINISHED)
    app = FastAPI()
    app.include_router(build_router(first.factory, superuser, prefix="/a"))
    app.include_router(build_router(second.factory, superuser, prefix="/b"))
    a = (await call(app, "GET", "/a/status", headers={"X-Token": "admin"})).json()
    b = (await call(app, "GET", "/b/status", headers={"X-Token": "admin"})).json()
    assert (a["job_id"], b["job_id"]) == (QUEUED, FINISHED)


# ---------------------------------------------------------------- SSE


def test_an_sse_message_is_one_event() -> None:
    message = sse_message({"a": "x\ny"}, event="step_started", event_id="j/1-0")
    assert message == 'id: j/1-0\nevent: step_started\ndata: {"a":"x\\ny"}\n\n'
    assert event_name({"kind": "job_ended"}) == "job_ended"
    assert event_name({"kind": "a\nevent: forged"}) == "a_event__forged"
    assert event_name({}) == "progress"


def test_a_cursor_names_a_job_s_entry() -> None:
    assert Cursor.parse(None) == Cursor(None, None)
    assert Cursor.parse("abc/1-0") == Cursor("abc", "1-0")
    assert Cursor.parse("1-0") == Cursor(None, "1-0")
    with pytest.raises(RequestValidationError):
        Cursor.parse("../x/1-0")


class Streaming(StubClient):
    """A running job whose progress stream holds two entries, then ends."""

    def __init__(self) -> None:
        super().__init__()
        self.pages = [
            ProgressPage([{"id": "1-0", "kind": "step_started", "step": "pull"}], "1-0"),
            ProgressPage([{"id": "2-0", "kind": "job_ended"}], "2-0"),
        ]

    async def progress_page(self, job_id: str, since: str | None = None) -> ProgressPage:
        return self.pages.pop(0) if self.pages else ProgressPage([], None)

    async def state(self, job_id: str) -> str:
        return "finished" if not self.pages else "running"

    async def status(self, job_id: str) -> dict[str, Any]:
        return job(job_id, "finished", "successful")


async def test_the_event_stream_forwards_entries_then_the_final_status() -> None:
    stream: AsyncIterator[str] = event_stream(
        cast(UpdateClient, Streaming()), RUNNING, None, poll_s=0, keepalive_s=60
    )
    messages = [message async for message in stream]
    assert messages[0] == "retry: 3000\n\n"
    names = [line for m in messages for line in m.split("\n") if line.startswith("event:")]
    assert names == ["event: step_started", "event: job_ended", "event: status"]
    assert messages[1].startswith(f"id: {RUNNING}/1-0\n")
    assert '"status":"successful"' in messages[-1]
