"""A stand-in for UpdateClient in the router's unit tests: jobs are a dict, nothing is queued,
and every state-changing call is recorded so a test can assert that a refused request changed
nothing. The flows against a real Redis and worker are in tests/integration/."""

from __future__ import annotations

from typing import Any, cast

import httpx
from fastapi import FastAPI

from worker.shared.client import Enqueued, UpdateClient
from worker.shared.request import UpdateRequest

QUEUED = "aaaa0000queued"
RUNNING = "bbbb1111running"
FINISHED = "cccc2222finished"


def job(job_id: str, state: str, summary_status: str | None = None) -> dict[str, Any]:
    summary: dict[str, Any] | None = None
    if summary_status is not None:
        summary = {"job_id": job_id, "status": summary_status, "error": None, "services": {}}
    return {
        "job_id": job_id,
        "state": state,
        "current_step": None,
        "progress": {"done": 0, "planned": 0, "steps": []},
        "summary": summary,
    }


class StubClient:
    """The UpdateClient methods the router calls, over an in-memory dict of jobs."""

    def __init__(self, latest: str | None = RUNNING) -> None:
        self.jobs = {
            QUEUED: job(QUEUED, "queued"),
            RUNNING: job(RUNNING, "running"),
            FINISHED: job(FINISHED, "finished", "successful"),
        }
        self.latest = latest
        self.canceled: list[str] = []
        self.submitted: list[UpdateRequest] = []
        self.checks_started = 0

    async def status(self, job_id: str) -> dict[str, Any]:
        return self.jobs.get(job_id) or job(job_id, "not_found")

    async def latest_update(self) -> dict[str, Any] | None:
        return None if self.latest is None else await self.status(self.latest)

    async def request_cancel(self, job_id: str) -> None:
        self.canceled.append(job_id)

    async def submit_update(self, request: UpdateRequest) -> Enqueued:
        self.submitted.append(request)
        return Enqueued("dddd3333new")

    async def history(self, limit: int = 50) -> list[dict[str, Any]]:
        return []

    async def last_check(self) -> dict[str, Any] | None:
        return None

    async def pending_check(self, services: list[str] | None = None) -> str | None:
        return None

    async def start_check(
        self, services: list[str] | None = None, min_interval_s: float = 0
    ) -> str | None:
        self.checks_started += 1
        return None  # rate-limited: the answer is the last check

    def factory(self) -> UpdateClient:
        return cast(UpdateClient, self)


async def call(app: FastAPI, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request to `app` in-process (httpx's ASGI transport: Starlette's TestClient warns
    about its httpx, and warnings are errors here)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        return await http.request(method, path, **kwargs)
