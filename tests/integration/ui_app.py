"""The application's own layout for the router (issue 12): mounted under `/api/v1`, so the
routes are the old ones (`/api/v1/system/update/check`, `/trigger`, `/status`), behind a
superuser check on the `Authorization: Bearer` token the application's UI sends.

Run with `uvicorn tests.integration.ui_app:app`; the token is API_TEST_ADMIN_TOKEN.
"""

from __future__ import annotations

import hmac
import logging
import os
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException

from worker.api import SharedClient, build_router

ADMIN_TOKEN_ENV = "API_TEST_ADMIN_TOKEN"

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def get_current_superuser(authorization: Annotated[str | None, Header()] = None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(status_code=401, detail="Not authenticated")
    if not hmac.compare_digest(token, os.environ[ADMIN_TOKEN_ENV]):
        raise HTTPException(status_code=403, detail="The user doesn't have enough privileges")
    return "admin"


def current_user(user: Annotated[str, Depends(get_current_superuser)]) -> str:
    return user


updates = SharedClient()
app = FastAPI(lifespan=updates.lifespan)
app.include_router(
    build_router(updates, get_current_superuser, requested_by=current_user), prefix="/api/v1"
)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
