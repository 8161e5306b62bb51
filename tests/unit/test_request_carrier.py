"""Issue 22, one request carrier: an update request is parsed once on the API side (the router
or the CLI make an UpdateRequest, `UpdateClient.submit_update` sends it as it is), and the
client's two ways of ordering an update are one operation."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Annotated, Any

import httpx
import pytest
from arq.connections import ArqRedis
from fastapi import FastAPI, Header, HTTPException
from redis.exceptions import RedisError

from worker.api import build_router
from worker.host.settings import Settings
from worker.shared.client import UpdateClient
from worker.shared.request import InvalidRequest, UpdateRequest

# Every module that calls (or called) the checks by name; each one's reference is counted.
CALLERS = (
    "worker.shared.request",
    "worker.shared.client",
    "worker.api.router",
    "worker.api.routes",
)


def superuser(x_admin_token: Annotated[str | None, Header()] = None) -> None:
    if x_admin_token != "s3cret":
        raise HTTPException(status_code=401, detail="not authenticated")


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[Mapping[str, object]]:
    """The fields of every check_request_fields call."""
    seen: list[Mapping[str, object]] = []
    original = importlib.import_module("worker.shared.request").check_request_fields

    def counted(fields: Mapping[str, object]) -> None:
        seen.append(dict(fields))
        original(fields)

    for name in CALLERS:
        module = importlib.import_module(name)
        if hasattr(module, "check_request_fields"):
            monkeypatch.setattr(module, "check_request_fields", counted)
    return seen


def unreachable_client() -> UpdateClient:
    """A client whose Redis is a port nothing listens on: a 503 once a request is valid."""
    return UpdateClient(Settings(), ArqRedis(host="127.0.0.1", port=9))


async def test_a_post_trigger_checks_the_request_once(
    checks: list[Mapping[str, object]],
) -> None:
    client = unreachable_client()
    app = FastAPI()
    app.include_router(build_router(lambda: client, superuser, requested_by=lambda: "admin"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        response = await http.post(
            "/system/update/trigger",
            json={"services": ["api"], "dry_run": True},
            headers={"X-Admin-Token": "s3cret"},
        )
    await client.close()
    assert response.status_code == 503, response.text  # valid: it reached the queue
    assert len(checks) == 1
    assert checks[0]["services"] == ["api"] and checks[0]["requested_by"] == "admin"


async def test_submit_update_checks_keyword_fields_before_anything_is_queued(
    checks: list[Mapping[str, object]],
) -> None:
    client = unreachable_client()
    with pytest.raises(InvalidRequest, match="invalid service name"):
        await client.submit_update(services=["api; id"])
    with pytest.raises(InvalidRequest, match="invalid service name"):
        await client.enqueue_update(services=["api; id"])  # the same operation
    with pytest.raises(TypeError, match="not both"):
        await client.submit_update(UpdateRequest(), dry_run=True)
    with pytest.raises(TypeError, match="an UpdateRequest"):
        await client.submit_update({"dry_run": True})  # type: ignore[arg-type]
    await client.close()
    assert len(checks) == 2


async def test_a_parsed_request_is_sent_without_another_check(
    checks: list[Mapping[str, object]],
) -> None:
    request = UpdateRequest.parse({"dry_run": True})
    assert len(checks) == 1
    client = unreachable_client()
    with pytest.raises(RedisError):  # Redis unreachable: it got as far as the queue
        await client.submit_update(request)
    await client.close()
    assert len(checks) == 1


def test_a_job_s_fields_reach_the_worker_as_sent() -> None:
    """What process_system_update parses is what submit_update enqueues."""
    request = UpdateRequest.parse({"services": ["api"], "requested_by": "ops", "dry_run": True})
    sent: dict[str, Any] = request.job_kwargs()
    assert UpdateRequest.parse(sent).resolve(["api", "web"]) == UpdateRequest(
        services=("api",), requested_by="ops", dry_run=True
    )
