"""A small host application for the API tests: the router mounted as a real API mounts it.

Run with `uvicorn tests.integration.api_app:app`. Settings come from the environment, as in
the API container (Redis, queue name, job secret: no registry token, no compose file). Its
"superuser check" is a token header: `X-Admin-Token` missing -> 401, wrong -> 403; the
token is API_TEST_ADMIN_TOKEN.
"""

from __future__ import annotations

import hmac
import logging
import os
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException

from worker.api import SharedClient, build_router

ADMIN_TOKEN_ENV = "API_TEST_ADMIN_TOKEN"
ADMIN_NAME = "admin@example.org"

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def require_superuser(
    x_admin_token: Annotated[str | None, Header()] = None,
) -> str:
    if not x_admin_token:
        raise HTTPException(status_code=401, detail="not authenticated")
    if not hmac.compare_digest(x_admin_token, os.environ[ADMIN_TOKEN_ENV]):
        raise HTTPException(status_code=403, detail="superusers only")
    return ADMIN_NAME


def current_user(user: Annotated[str, Depends(require_superuser)]) -> str:
    return user


updates = SharedClient()  # settings from the environment, connected on first use
app = FastAPI(lifespan=updates.lifespan)
app.include_router(build_router(updates, require_superuser, requested_by=current_user))


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
