"""Routing concerns of the router (worker/api/router.py, routes.py) that need no Redis: auth
comes first, bad input is a 422 before anything touches the queue, cursors parse. The flows
are in tests/integration/test_api.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from arq.connections import ArqRedis
from fastapi import FastAPI, Header, HTTPException
from fastapi.exceptions import RequestValidationError

from worker.api.router import Cursor, build_router
from worker.host.settings import Settings
from worker.shared.client import UpdateClient

TOKEN = {"X-Admin-Token": "s3cret"}


def superuser(x_admin_token: Annotated[str | None, Header()] = None) -> None:
    if x_admin_token != "s3cret":
        raise HTTPException(status_code=401, detail="not authenticated")


class Factory:
    """Counts its calls; its client's Redis points at a port nothing listens on."""

    def __init__(self) -> None:
        self.calls = 0
        self.client = UpdateClient(Settings(), ArqRedis(host="127.0.0.1", port=9))

    def __call__(self) -> UpdateClient:
        self.calls += 1
        return self.client


@pytest.fixture
def factory() -> Factory:
    return Factory()


@pytest.fixture
async def http(factory: Factory) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(build_router(factory, superuser))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        yield client
    await factory.client.close()


def test_the_router_refuses_to_exist_without_an_auth_dependency(factory: Factory) -> None:
    with pytest.raises(TypeError, match="auth dependency"):
        build_router(factory, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/system/update/check"),
        ("POST", "/system/update/trigger"),
        ("POST", "/system/update/cancel"),
        ("GET", "/system/update/status"),
        ("GET", "/system/update/events"),
        ("GET", "/system/update/history"),
    ],
)
async def test_every_route_runs_the_hosts_auth_first(
    http: httpx.AsyncClient, factory: Factory, method: str, path: str
) -> None:
    response = await http.request(method, path, json={})
    assert response.status_code == 401
    assert factory.calls == 0  # refused before the client was even asked for


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"run_migrations": "yes"}, "valid boolean"),
        ({"services": "api"}, "valid list"),
        ({"services": []}, "non-empty list"),
        ({"services": ["api; rm -rf /"]}, "invalid service name at services[0]"),
        ({"services": [1]}, "valid string"),
        ({"compose_file": "/etc/x.yml"}, "Extra inputs are not permitted"),
        ({"requested_by": "someone else"}, "Extra inputs are not permitted"),
    ],
)
async def test_an_invalid_trigger_body_is_a_422_with_a_clear_message(
    http: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    response = await http.post("/system/update/trigger", json=body, headers=TOKEN)
    assert response.status_code == 422
    assert message in response.text
    assert "rm -rf" not in str(response.json()["detail"][0].get("msg"))  # never echoed in msg


async def test_a_valid_body_or_none_reaches_the_queue(http: httpx.AsyncClient) -> None:
    # the queue's Redis is unreachable here: a 503 means the request passed validation
    for body in ({}, {"services": ["api"], "run_migrations": False, "dry_run": True}):
        response = await http.post("/system/update/trigger", json=body, headers=TOKEN)
        assert response.status_code == 503, (body, response.text)
    # No body: the defaults, when it says it is JSON or carries X-Requested-With (issue 12:
    # a body-less POST without either, as a no-cors fetch from another site sends it, is a 415).
    for headers in ({"Content-Type": "application/json"}, {"X-Requested-With": "fetch"}):
        response = await http.post("/system/update/trigger", headers={**TOKEN, **headers})
        assert response.status_code == 503, (headers, response.text)


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        pytest.param(
            b"run_migrations=true", {"Content-Type": "application/x-www-form-urlencoded"}, id="form"
        ),
        pytest.param(b'{"run_migrations": true}', {"Content-Type": "text/plain"}, id="text/plain"),
        pytest.param(b"", {"Content-Type": "text/plain"}, id="empty text/plain"),
        pytest.param(
            b"--b--\r\n", {"Content-Type": "multipart/form-data; boundary=b"}, id="multipart"
        ),
        pytest.param(b"", {}, id="no body, no content type"),
    ],
)
async def test_a_trigger_a_browser_may_send_cross_site_is_refused(
    http: httpx.AsyncClient, factory: Factory, content: bytes, headers: dict[str, str]
) -> None:
    """CSRF (issue 11): what an HTML form or a no-cors fetch can send is refused before the
    client is asked for, so nothing can be queued."""
    response = await http.post(
        "/system/update/trigger", content=content, headers={**TOKEN, **headers}
    )
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["detail"]
    assert factory.calls == 0


async def test_the_openapi_schema_lists_the_routes(http: httpx.AsyncClient) -> None:
    schema = (await http.get("/openapi.json")).json()
    assert set(schema["paths"]) == {
        f"/system/update/{name}"
        for name in ("check", "trigger", "cancel", "status", "events", "history")
    }
    body = schema["components"]["schemas"]["TriggerBody"]
    assert set(body["properties"]) == {
        "run_migrations",
        "create_backup",
        "services",
        "dry_run",
        "hosts",
    }


async def test_bad_query_values_are_422(http: httpx.AsyncClient) -> None:
    for path in (
        "/system/update/status?job_id=a%20b",
        "/system/update/events?job_id=../x",
        "/system/update/events?since=abc",
        "/system/update/check?wait=3600",
        "/system/update/check?services=a%20b",
        "/system/update/history?limit=0",
        "/system/update/history?limit=501",
    ):
        assert (await http.get(path, headers=TOKEN)).status_code == 422, path
    bad_header = {**TOKEN, "Last-Event-ID": "not-an-id"}
    assert (await http.get("/system/update/events", headers=bad_header)).status_code == 422


async def test_an_unreachable_redis_is_a_503_that_says_so(http: httpx.AsyncClient) -> None:
    response = await http.get("/system/update/status?job_id=abc", headers=TOKEN)
    assert response.status_code == 503
    assert "Redis" in response.json()["detail"]
    response = await http.post("/system/update/cancel?job_id=abc", json={}, headers=TOKEN)
    assert response.status_code == 503
    assert "Redis" in response.json()["detail"]


async def test_check_answers_200_with_the_reason_when_redis_is_unreachable(
    http: httpx.AsyncClient,
) -> None:
    """As the application's original endpoint: its page shows `message`, never a 5xx."""
    response = await http.get("/system/update/check", headers=TOKEN)
    assert response.status_code == 200
    body = response.json()
    assert body["has_updates"] is False
    assert body["backend_update_available"] is body["frontend_update_available"] is False
    assert "Redis" in body["error"] and "Redis" in body["message"]


def test_cursors() -> None:
    assert Cursor.parse(None) == Cursor(None, None)
    assert Cursor.parse("1700000000000-3") == Cursor(None, "1700000000000-3")
    assert Cursor.parse("abc123/1700000000000-3") == Cursor("abc123", "1700000000000-3")
    for bad in ("x", "abc/", "a b/1-0", "1-0-0"):
        with pytest.raises(RequestValidationError):
            Cursor.parse(bad)
