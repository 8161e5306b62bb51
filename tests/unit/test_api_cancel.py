"""POST /system/update/cancel (issue 25), the route behind the CLI's `update-executor cancel`
and the UI's cancel button: which job it cancels, and the clear 404 / 409 / 415 / 422 answers
that cancel nothing. In-process requests over a stub client (tests/unit/stub_client.py); the
real worker taking the request is tests/integration/test_api_cancel.py."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.unit.stub_client import FINISHED, QUEUED, RUNNING, StubClient, call
from tests.unit.test_api import TOKEN, superuser
from worker.api.router import build_router

CANCEL = "/system/update/cancel"


def app_for(stub: StubClient) -> FastAPI:
    app = FastAPI()
    app.include_router(build_router(stub.factory, superuser, requested_by=lambda: "admin"))
    return app


async def post(stub: StubClient, query: str = "") -> httpx.Response:
    return await call(app_for(stub), "POST", CANCEL + query, headers=TOKEN, json={})


@pytest.mark.parametrize(
    ("query", "latest", "canceled", "state"),
    [
        (f"?job_id={QUEUED}", RUNNING, QUEUED, "queued"),
        (f"?job_id={RUNNING}", None, RUNNING, "running"),
        ("", RUNNING, RUNNING, "running"),  # no id: the latest update
        ("", QUEUED, QUEUED, "queued"),
    ],
)
async def test_a_queued_or_running_job_gets_a_cancel_request(
    query: str, latest: str | None, canceled: str, state: str
) -> None:
    stub = StubClient(latest=latest)

    response = await post(stub, query)

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["job_id"] == canceled and body["state"] == state
    assert body["status"] == "updating" and body["error"] is None
    assert "Cancel requested" in body["message"]
    assert stub.canceled == [canceled]


@pytest.mark.parametrize(
    ("query", "latest", "code", "detail"),
    [
        (f"?job_id={FINISHED}", RUNNING, 409, "already ended (successful): nothing to cancel"),
        ("", FINISHED, 409, "already ended (successful)"),
        ("?job_id=no-such-job", RUNNING, 404, "no such update job"),
        ("", None, 404, "no update has been queued yet"),
    ],
)
async def test_an_ended_or_unknown_job_is_a_clear_refusal(
    query: str, latest: str | None, code: int, detail: str
) -> None:
    stub = StubClient(latest=latest)

    response = await post(stub, query)

    assert response.status_code == code, response.text
    assert detail in response.json()["detail"]
    assert stub.canceled == []


async def test_the_409_says_how_the_job_ended() -> None:
    body = (await post(StubClient(), f"?job_id={FINISHED}")).json()

    assert body["job_id"] == FINISHED and body["state"] == "finished"
    assert body["status"] == "completed"


async def test_the_404_of_an_unknown_id_names_it() -> None:
    body = (await post(StubClient(), "?job_id=no-such-job")).json()

    assert body["job_id"] == "no-such-job" and body["state"] == "not_found"


@pytest.mark.parametrize(
    "job_id",
    ["a%20b", "..%2Fx", "-leading-dash", "x" * 129, "abc%0A", "job%3Bid"],
)
async def test_a_job_id_outside_the_grammar_is_a_422(job_id: str) -> None:
    stub = StubClient()

    response = await post(stub, f"?job_id={job_id}")

    assert response.status_code == 422, response.text
    assert stub.canceled == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {},
    ],
)
async def test_a_cancel_a_browser_may_send_cross_site_is_refused(headers: dict[str, str]) -> None:
    stub = StubClient()
    response = await call(
        app_for(stub),
        "POST",
        f"{CANCEL}?job_id={QUEUED}",
        headers={**TOKEN, **headers},
        content=b"",
    )

    assert response.status_code == 415, response.text
    assert stub.canceled == []


async def test_a_body_less_cancel_with_x_requested_with_is_accepted() -> None:
    stub = StubClient()
    response = await call(
        app_for(stub),
        "POST",
        f"{CANCEL}?job_id={QUEUED}",
        headers={**TOKEN, "X-Requested-With": "fetch"},
    )

    assert response.status_code == 202, response.text
    assert stub.canceled == [QUEUED]
