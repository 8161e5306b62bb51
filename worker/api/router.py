"""A drop-in FastAPI router for the API side of an update: check, trigger, cancel, status,
history, live events.

    from worker.api import SharedClient, build_router

    updates = SharedClient()  # one Redis pool for the whole app, settings from the environment
    app = FastAPI(lifespan=updates.lifespan)  # closes it at shutdown
    app.include_router(build_router(updates, require_superuser), prefix="/api")
    # or: staff may look, only superusers may trigger or cancel
    build_router(updates, require_staff, change_dependency=require_superuser)

Only the router's modules import FastAPI (the optional extra `update-executor[api]`); the
worker and the CLI do not need it. Everything the routes show lives in Redis, keyed by job id,
so an API process that restarts in the middle of an update finds it again (`latest_update()`).
See docs/api.md.

The router's parts: worker/api/routes.py (the routes, module-level functions), dependencies.py
(the client, the options, who asks, the CSRF guard), legacy.py (the fields the application's
UI reads), sse.py (GET /events), errors.py (422, 503, 404).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.params import Depends as DependsParam

from .dependencies import (
    CSRF_HEADER,
    JOB_ID,
    ClientFactory,
    RouterOptions,
    SharedClient,
    as_depends,
    recording_requester,
    require_json,
    same_site,
)
from .legacy import image_repository, legacy_check_fields, legacy_status_fields, service_group
from .routes import ROUTES, HistoryAnswer, TriggerBody
from .sse import END_GRACE_S, Cursor

# What `from worker.api.router import ...` gave before the router was split (issue 22).
__all__ = [
    "CSRF_HEADER",
    "END_GRACE_S",
    "JOB_ID",
    "ClientFactory",
    "Cursor",
    "HistoryAnswer",
    "SharedClient",
    "TriggerBody",
    "build_router",
    "image_repository",
    "legacy_check_fields",
    "legacy_status_fields",
    "require_json",
    "same_site",
    "service_group",
]


def build_router(
    client_factory: ClientFactory,
    auth_dependency: Callable[..., Any] | DependsParam,
    *,
    change_dependency: Callable[..., Any] | DependsParam | None = None,
    requested_by: Callable[..., str | None] | None = None,
    prefix: str = "/system/update",
    max_check_wait_s: float = 30.0,
    poll_interval_s: float = 0.5,
    keepalive_s: float = 15.0,
    frontend_images: Iterable[str] | None = None,
    check_interval_s: float = 10.0,
) -> APIRouter:
    """The update routes: GET and POST {prefix}/check, POST {prefix}/trigger, POST
    {prefix}/cancel, GET {prefix}/status, GET {prefix}/history and GET {prefix}/events
    (Server-Sent Events).

    The router has NO authentication or authorisation of its own. `auth_dependency` is the
    host application's check (typically "is a superuser"; a callable or a `Depends(...)`); it
    is applied to every route and must raise (401/403) to refuse a request. Updating the
    deployment is an administrator's action: pass your strictest check.

    `change_dependency`: optional, a second check run after `auth_dependency` on the routes
    that change something (POST /trigger, POST /check, POST /cancel), so that an application
    can let some users view (GET /check, /status, /history, /events: `auth_dependency`) and
    only others order or cancel an update (both must pass). Without it, `auth_dependency`
    alone guards every route.

    `client_factory`: a zero-argument callable returning the UpdateClient to use (or an
    awaitable of one), called on every request. The router never closes that client: return a
    shared one, e.g. a `SharedClient` closed in the application's lifespan, never a new
    connection per call.

    `requested_by`: optional dependency giving the name of the user (recorded in the job's
    summary and the worker's log), e.g. `lambda user=Depends(current_user): user.email`.

    `frontend_images`: the image repositories of the "frontend" group of the legacy /check
    fields (e.g. `["ghcr.io/org/app-frontend"]`); every other service is the "backend". By
    default an image whose name ends in `frontend`, `web` or `ui` is the frontend.

    Answers are a superset of the shapes the application's original endpoints had (`status`,
    `message`, `error`, `has_updates`, ...), so its UI works unchanged; see docs/api.md.
    """
    if auth_dependency is None:
        raise TypeError(
            "build_router needs the host application's auth dependency (its superuser "
            "check): the update routes have no authentication of their own"
        )
    options = RouterOptions(
        client_factory,
        max_check_wait_s=max_check_wait_s,
        poll_interval_s=poll_interval_s,
        keepalive_s=keepalive_s,
        frontend_images=None if frontend_images is None else tuple(frontend_images),
        check_interval_s=check_interval_s,
    )
    # The host's auth first, on every route; then this router's options, for the routes.
    router = APIRouter(
        prefix=prefix,
        tags=["system update"],
        dependencies=[as_depends(auth_dependency), Depends(options)],
    )
    # The routes that change something: the host's second check (if any), the CSRF guard,
    # then who asks (the host's `requested_by`, run only there).
    changes = [
        *([] if change_dependency is None else [as_depends(change_dependency)]),
        Depends(require_json),
        recording_requester(requested_by),
    ]
    for route in ROUTES:
        router.add_api_route(
            route.path,
            route.endpoint,
            methods=[route.method],
            dependencies=changes if route.changes else None,
            **route.options,
        )
    return router
