"""The router's FastAPI dependencies: the client, the options one `build_router` call was
given, who asks (the host's `requested_by`) and the CSRF guard of the routes that change
something. Authentication and authorisation are the host application's own dependencies,
which `build_router` puts before all of these (worker/api/router.py).
"""

# No `from __future__ import annotations`: FastAPI reads the dependencies' annotations.
import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import Depends, HTTPException, Query, Request
from fastapi.params import Depends as DependsParam

from ..shared.client import UpdateClient
from ..shared.settings import ClientSettings
from .errors import invalid

# A zero-argument callable giving the client to use: an UpdateClient or an awaitable of one.
# It is called on every request and the router never closes what it returns: the client is
# the host's, shared by every request (an UpdateClient holds a Redis connection pool, safe to
# use from concurrent requests). SharedClient is such a factory.
ClientFactory = Callable[[], UpdateClient | Awaitable[UpdateClient]]

# A state-changing request must say it is JSON (or carry this header): an HTML form or a
# no-cors fetch from another site can send neither without the browser asking first (CSRF).
CSRF_HEADER = "X-Requested-With"
# For Query(pattern=): pydantic-core checks it with the Rust regex engine, whose `$` is the
# end of the text (a trailing newline is refused; tests/unit/test_grammars.py).
JOB_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
# Where a request keeps what the router's own dependencies found (`request.state`).
OPTIONS_STATE = "update_executor_options"
REQUESTED_BY_STATE = "update_executor_requested_by"


class SharedClient:
    """A client factory that connects once, on first use, and is shared by every request.

    Close it when the application stops: `FastAPI(lifespan=updates.lifespan)`, or
    `await updates.aclose()` in the application's own lifespan. Used again after that, it
    connects again.
    """

    def __init__(self, settings: ClientSettings | None = None) -> None:
        self._settings = settings
        self._client: UpdateClient | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> UpdateClient:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await UpdateClient.connect(self._settings)
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    @asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        """`FastAPI(lifespan=updates.lifespan)`: closes the client when the app stops."""
        try:
            yield
        finally:
            await self.aclose()


@dataclass(frozen=True, eq=False)  # hashed by identity: FastAPI caches dependencies by it
class RouterOptions:
    """What one `build_router` call was given, for its routes (see its docstring).

    The router runs it as a dependency of every route, after the host's auth: it keeps itself
    in `request.state`, where `router_options` finds it. The routes are module-level
    functions (worker/api/routes.py), shared by every router an application mounts."""

    client_factory: ClientFactory
    max_check_wait_s: float = 30.0
    poll_interval_s: float = 0.5
    keepalive_s: float = 15.0
    frontend_images: tuple[str, ...] | None = None
    check_interval_s: float = 10.0

    def __call__(self, request: Request) -> None:
        setattr(request.state, OPTIONS_STATE, self)


def router_options(request: Request) -> RouterOptions:
    """The options of the router serving this request."""
    options = getattr(request.state, OPTIONS_STATE, None)
    if not isinstance(options, RouterOptions):  # a route mounted without build_router
        raise RuntimeError("the update routes are mounted through build_router only")
    return options


Options = Annotated[RouterOptions, Depends(router_options)]


async def get_client(options: Options) -> UpdateClient:
    """The client of this router's factory (never closed here: it is the host's)."""
    made = options.client_factory()
    return await made if inspect.isawaitable(made) else made


Client = Annotated[UpdateClient, Depends(get_client)]


def check_wait(
    options: Options,
    wait: Annotated[float, Query(ge=0, description="seconds to wait for a fresh check")] = 5.0,
) -> float:
    """`wait` of /check, at most the router's `max_check_wait_s` (a 422 beyond)."""
    if wait > options.max_check_wait_s:
        raise invalid(("query", "wait"), f"wait must be at most {options.max_check_wait_s:g} s")
    return wait


CheckWait = Annotated[float, Depends(check_wait)]
JobIdQuery = Annotated[
    str | None, Query(pattern=JOB_ID, description="a job id (default: the latest update)")
]


async def nobody() -> None:
    return None


def recording_requester(requested_by: Callable[..., str | None] | None) -> DependsParam:
    """A dependency running the host's `requested_by` (its own dependencies with it) on the
    routes that change something; `requester` gives its answer to the route."""
    asked = as_depends(requested_by or nobody)

    def record(request: Request, who: Annotated[str | None, asked]) -> None:
        setattr(request.state, REQUESTED_BY_STATE, who)

    return cast("DependsParam", Depends(record))


def requester(request: Request) -> str | None:
    """Who asks (the host's `requested_by`), or None."""
    who: str | None = getattr(request.state, REQUESTED_BY_STATE, None)
    return who  # as the host gave it: UpdateRequest.parse refuses what is not a name


RequestedBy = Annotated[str | None, Depends(requester)]


async def require_json(request: Request) -> None:
    """CSRF guard of state-changing routes: `Content-Type: application/json` (any body, or
    none) or an `X-Requested-With` header; 415 otherwise, before anything is queued."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == "application/json" or request.headers.get(CSRF_HEADER):
        return
    raise HTTPException(
        status_code=415,
        detail=f"send the request as application/json (or with an {CSRF_HEADER} header)",
    )


def same_site(request: Request) -> bool:
    """False for a browser's request from another site: browsers send `Sec-Fetch-Site`
    (Fetch Metadata) with every request, `cross-site` or `same-site` when a page of another
    origin caused it (a link, an image, a form). Clients that are not browsers send none."""
    return request.headers.get("sec-fetch-site", "same-origin").lower() in ("same-origin", "none")


def as_depends(dependency: Callable[..., Any] | DependsParam) -> DependsParam:
    """The host's dependency as given: a callable, or already a `Depends(...)`."""
    if isinstance(dependency, DependsParam):
        return dependency
    return cast("DependsParam", Depends(dependency))
