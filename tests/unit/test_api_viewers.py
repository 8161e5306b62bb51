"""Viewing without triggering (issue 25): `build_router(..., change_dependency=...)` lets an
application's staff see the check, the status and the history while only its superusers may
order a check, trigger or cancel an update; with one dependency (the old call), that one guards
every route. In-process requests over a stub client (tests/unit/stub_client.py)."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException

from tests.unit.stub_client import QUEUED, StubClient, call
from worker.api.router import build_router

VIEWER = {"X-Token": "viewer"}
ADMIN = {"X-Token": "admin"}
JSON = {"Content-Type": "application/json"}

VIEWS = [
    ("GET", "/system/update/check"),
    ("GET", "/system/update/status"),
    ("GET", f"/system/update/status?job_id={QUEUED}"),
    ("GET", "/system/update/history"),
]
CHANGES = [
    ("POST", "/system/update/trigger"),
    ("POST", "/system/update/check"),
    ("POST", "/system/update/cancel"),
    ("POST", f"/system/update/cancel?job_id={QUEUED}"),
]


def current_user(x_token: Annotated[str | None, Header()] = None) -> str:
    if x_token not in ("viewer", "admin"):
        raise HTTPException(status_code=401, detail="not authenticated")
    return x_token


def require_staff(user: Annotated[str, Depends(current_user)]) -> str:
    return user  # every signed-in user of this app is staff


def require_superuser(user: Annotated[str, Depends(current_user)]) -> str:
    if user != "admin":
        raise HTTPException(status_code=403, detail="superusers only")
    return user


class App:
    """The host application, built as the test says; `request` sends one request."""

    def __init__(self, stub: StubClient, *args: Any, **kwargs: Any) -> None:
        self.app = FastAPI()
        self.app.include_router(build_router(stub.factory, *args, **kwargs))

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await call(self.app, method, path, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)


def assert_nothing_changed(stub: StubClient) -> None:
    assert stub.submitted == [] and stub.canceled == [] and stub.checks_started <= 1


@pytest.mark.parametrize(("method", "path"), VIEWS)
async def test_a_viewer_may_look(method: str, path: str) -> None:
    stub = StubClient()
    http = App(stub, require_staff, change_dependency=require_superuser)

    response = await http.request(method, path, headers=VIEWER)

    assert response.status_code == 200, response.text
    assert_nothing_changed(stub)


@pytest.mark.parametrize(("method", "path"), CHANGES)
async def test_a_viewer_may_not_change_anything(method: str, path: str) -> None:
    stub = StubClient()
    http = App(stub, require_staff, change_dependency=require_superuser)

    response = await http.request(method, path, headers={**VIEWER, **JSON}, json={})

    assert response.status_code == 403, response.text
    assert response.json() == {"detail": "superusers only"}
    assert_nothing_changed(stub)
    assert stub.checks_started == 0


@pytest.mark.parametrize(("method", "path"), VIEWS + CHANGES)
async def test_nobody_signed_in_is_refused_by_the_view_dependency_first(
    method: str, path: str
) -> None:
    stub = StubClient()
    http = App(stub, require_staff, change_dependency=require_superuser)

    assert (await http.request(method, path, headers=JSON, json={})).status_code == 401
    assert_nothing_changed(stub)
    assert stub.checks_started == 0


async def test_a_superuser_may_trigger_and_cancel() -> None:
    stub = StubClient()
    http = App(stub, require_staff, change_dependency=Depends(require_superuser))

    assert (await http.post("/system/update/trigger", headers=ADMIN, json={})).status_code == 202
    canceled = await http.post(f"/system/update/cancel?job_id={QUEUED}", headers=ADMIN, json={})
    assert canceled.json()["job_id"] == QUEUED
    assert (await http.get("/system/update/status", headers=ADMIN)).status_code == 200

    assert len(stub.submitted) == 1 and stub.canceled == [QUEUED]


async def test_the_change_dependency_keeps_the_csrf_guard() -> None:
    stub = StubClient()
    http = App(stub, require_staff, change_dependency=require_superuser)

    for path in ("/system/update/trigger", "/system/update/cancel", "/system/update/check"):
        response = await http.post(
            path, headers={**ADMIN, "Content-Type": "text/plain"}, content=b""
        )
        assert response.status_code == 415, (path, response.text)
    assert_nothing_changed(stub)
    assert stub.checks_started == 0


@pytest.mark.parametrize(("method", "path"), VIEWS + CHANGES)
async def test_one_dependency_still_guards_every_route(method: str, path: str) -> None:
    """The old call, `build_router(factory, require_superuser)`: a viewer sees nothing."""
    stub = StubClient()
    http = App(stub, require_superuser)

    assert (
        await http.request(method, path, headers={**VIEWER, **JSON}, json={})
    ).status_code == 403
    assert_nothing_changed(stub)
    assert stub.checks_started == 0
    assert (await http.request(method, path, headers={**ADMIN, **JSON}, json={})).status_code < 300
