"""The router's error answers: a 422 shaped like FastAPI's own, the 503 of an unreachable
queue, the 404 of an unknown job."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..shared.client import JobState

logger = logging.getLogger("update_executor.api")

QUEUE_DOWN = "the update queue (Redis) is not reachable; try again later"
UNKNOWN_JOB = "no such update job (or its result expired)"


def invalid(loc: tuple[str, ...], message: str) -> RequestValidationError:
    """A 422 shaped like FastAPI's own validation errors."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": message}])


def queue_down(exc: BaseException) -> HTTPException:
    """The 503 of a Redis error (logged, never shown: the answer says what to do)."""
    logger.warning("update queue unreachable: %s", exc)
    return HTTPException(status_code=503, detail=QUEUE_DOWN)


def not_found(job_id: str | None, detail: str = UNKNOWN_JOB) -> JSONResponse:
    """404: `detail`, and for a named job its id and `state: not_found`."""
    body: dict[str, Any] = {"detail": detail}
    if job_id is not None:
        body.update(job_id=job_id, state=JobState.not_found.value)
    return JSONResponse(status_code=404, content=body)
