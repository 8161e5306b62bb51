"""The update routes, each a module-level function: GET and POST /check, POST /trigger, POST
/cancel, GET /status, GET /events and GET /history.

`@route` lists them in ROUTES, which `build_router` (worker/api/router.py) adds to each router
it makes: the host's auth before every route, the host's second check, the CSRF guard and
`requested_by` before those that change something, and the router's options (`RouterOptions`)
where `Options` and `Client` find them. Mounted any other way a route has no auth, so it
refuses to run (`router_options`).
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at runtime.
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Body, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict
from redis.exceptions import RedisError

from ..shared.client import JobState, UpdateClient
from ..shared.request import InvalidRequest, UpdateRequest, check_check_fields
from .dependencies import (
    CheckWait,
    Client,
    JobIdQuery,
    Options,
    RequestedBy,
    RouterOptions,
    same_site,
)
from .errors import QUEUE_DOWN, invalid, not_found, queue_down
from .legacy import idle_answer, legacy_check_fields, legacy_status_fields
from .sse import Cursor, event_stream
from .tables import host_status_fields

logger = logging.getLogger("update_executor.api")

# The answer of /check before any check has finished.
NO_CHECK: dict[str, Any] = {
    "services": {},
    "update_available": None,
    "checked_at": None,
    "job_id": None,
    "error": None,
}
CheckServices = Annotated[list[str] | None, Query()]


@dataclass(frozen=True)
class Route:
    """A route as `build_router` adds it (`APIRouter.add_api_route`)."""

    method: str
    path: str
    endpoint: Callable[..., Awaitable[Any]]
    # POST /check, /trigger, /cancel: the host's change_dependency, CSRF guard, requested_by.
    changes: bool
    options: Mapping[str, Any]


ROUTES: list[Route] = []
Endpoint = TypeVar("Endpoint", bound=Callable[..., Awaitable[Any]])


def route(
    method: str, path: str, *, changes: bool = False, **options: Any
) -> Callable[[Endpoint], Endpoint]:
    """Register the function below as a route (`options`: add_api_route's, e.g. status_code)."""

    def register(endpoint: Endpoint) -> Endpoint:
        ROUTES.append(Route(method, path, endpoint, changes, options))
        return endpoint

    return register


class TriggerBody(BaseModel):
    """The body of POST /trigger. Types are strict: `"yes"` is not a boolean."""

    model_config = ConfigDict(extra="forbid", strict=True)

    run_migrations: bool = True
    create_backup: bool = False
    services: list[str] | None = None
    dry_run: bool = False
    # Hosts or groups of the worker's inventory (issue 24); null: its default group.
    hosts: list[str] | None = None

    def request(self, requested_by: str | None) -> UpdateRequest:
        """The update this body asks for, by `requested_by`, parsed once (names, lengths:
        InvalidRequest); the worker parses it again, and checks it against its allow-list,
        which only the host knows."""
        fields = {**self.model_dump(), "requested_by": requested_by}
        if fields["hosts"] is None:
            del fields["hosts"]  # the request as before hosts existed
        return UpdateRequest.parse(fields)


class HistoryAnswer(BaseModel):
    """GET /history: records as worker/host/history.py writes them (kind, job_id, requested_by,
    request, status, outcome, started_at, finished_at, services, error, rolled_back, ...)."""

    records: list[dict[str, Any]]


async def answer_check(
    client: UpdateClient,
    options: RouterOptions,
    wait: float,
    find: Callable[[], Awaitable[str | None]],
) -> dict[str, Any]:
    """The check `find` joins or starts, waited for up to `wait` s; else the last one, with
    the application's fields (`has_updates`, ...). Always 200, as the original endpoint: a
    problem is in `error` and `message` (the application's page shows `message`; it gives up
    on its own after 10 s)."""

    def with_legacy(check: dict[str, Any]) -> dict[str, Any]:
        return {**check, **legacy_check_fields(check, options.frontend_images)}

    try:
        check_id = await find()
        if check_id is None:  # none pending, and none may start now: the last check
            known = await client.last_check() or NO_CHECK
            return with_legacy({**known, "cached": True, "pending": False})
        if wait > 0:
            try:
                fresh = await client.check_result(check_id, timeout=wait)
            except TimeoutError:
                logger.info("update check %s still running after %.1f s", check_id, wait)
            else:
                return with_legacy({**fresh, "cached": False, "pending": False})
        last = await client.last_check()
    except InvalidRequest as exc:
        raise invalid(("query", "services"), str(exc)) from None
    except LookupError as exc:  # the check job vanished (Redis restarted, result expired)
        logger.warning("update check lost: %s", exc)
        return with_legacy({**NO_CHECK, "error": "the check was lost; try again"})
    except (RedisError, OSError) as exc:
        logger.warning("update queue unreachable: %s", exc)
        return with_legacy({**NO_CHECK, "error": QUEUE_DOWN})
    except RuntimeError as exc:  # the check job could not be queued
        logger.warning("update check not queued: %s", exc)
        return with_legacy({**NO_CHECK, "error": str(exc)})
    return with_legacy(
        {**(last or NO_CHECK), "cached": True, "pending": True, "pending_job_id": check_id}
    )


@route("GET", "/check")
async def check(
    *,
    client: Client,
    options: Options,
    request: Request,
    wait: CheckWait,
    refresh: Annotated[bool, Query(description="false: only the last check")] = True,
    services: CheckServices = None,
) -> dict[str, Any]:
    """The latest check of the registry for new images (run by the worker, which holds the
    registry token), joining the one pending and waiting up to `wait` seconds for it.

    A GET starts no check of its own choosing: with `services=` it only reads or joins,
    and without, it starts a check of every service only as POST /check would (at most
    one per `check_interval_s` per queue) and only when the request is not a browser's
    cross-site one (`Sec-Fetch-Site`): the original page's "check" button keeps working,
    a link or an image on another site cannot make the worker check. After `wait`, or
    with `wait=0`, the last finished check, `cached: true`, `pending: true` and
    `pending_job_id` while a new one runs. `refresh=false` only reads the last check.
    """

    async def find() -> str | None:
        check_check_fields({"services": services})  # InvalidRequest: a 422
        if not refresh:
            return None
        pending = await client.pending_check(services)
        if pending is not None or services is not None or not same_site(request):
            return pending
        return await client.start_check(None, options.check_interval_s)

    return await answer_check(client, options, wait, find)


@route("POST", "/check", changes=True)
async def start_check(
    client: Client, options: Options, wait: CheckWait, services: CheckServices = None
) -> dict[str, Any]:
    """Start a check (of `services`, default all) or join the one pending, and wait up to
    `wait` seconds for it, as GET /check. Guarded like /trigger (JSON or X-Requested-With)
    and rate-limited: a new check starts at most once per `check_interval_s` per queue;
    sooner, the answer is the last check (`cached: true`, `pending: false`)."""
    return await answer_check(
        client, options, wait, lambda: client.start_check(services, options.check_interval_s)
    )


@route(
    "POST",
    "/trigger",
    changes=True,
    status_code=202,
    responses={
        409: {"description": "an update is already queued or running (its id)"},
        415: {"description": "not sent as application/json (CSRF guard)"},
    },
)
async def trigger(
    client: Client, who: RequestedBy, body: Annotated[TriggerBody | None, Body()] = None
) -> JSONResponse:
    """Queue an update: 202 with its job id, or 409 with the id of the one in flight.
    Without a body: the defaults (every allowed service, with migrations)."""
    try:
        request = (body or TriggerBody()).request(who)
        enqueued = await client.submit_update(request)
        if enqueued.existing:
            state = (await client.status(enqueued.job_id))["state"]
            if state == JobState.not_found:
                # A claim within its grace (its job about to be queued): or a job that
                # will never run, which the next request replaces once the grace ended.
                state = JobState.queued.value
    except InvalidRequest as exc:
        raise invalid(("body",), str(exc)) from None
    except (RedisError, OSError) as exc:
        raise queue_down(exc) from None
    except RuntimeError as exc:  # the in-flight slot could not be claimed
        logger.warning("update not queued: %s", exc)
        raise HTTPException(status_code=503, detail=str(exc)) from None
    if enqueued.existing:
        return JSONResponse(
            status_code=409,
            content={
                "detail": "an update is already queued or running",
                "job_id": enqueued.job_id,
                "state": state,
                "status": "updating",
            },
        )
    logger.info("update job %s queued through the API by %s", enqueued.job_id, who or "-")
    return JSONResponse(
        status_code=202,
        content={
            "job_id": enqueued.job_id,
            "state": JobState.queued.value,
            # The original endpoint's shape, which the application's UI reads.
            "status": "updating",
            "message": "Update queued; the worker will start it shortly.",
            "progress": None,
            "error": None,
        },
    )


@route(
    "POST",
    "/cancel",
    changes=True,
    status_code=202,
    responses={
        404: {"description": "no such job (or no update yet)"},
        409: {"description": "the job already ended: nothing to cancel"},
        415: {"description": "not sent as application/json (CSRF guard)"},
    },
)
async def cancel(client: Client, who: RequestedBy, job_id: JobIdQuery = None) -> JSONResponse:
    """Cancel an update (default: the latest) that is queued or running: 202 once the
    signed cancel request is stored (worker/shared/cancel.py). The worker ends a queued job
    `canceled` without running it, or cuts a running one off and puts back what it had
    changed; follow it with /status or /events. 404: no such job; 409: it already ended."""
    try:
        answer = await (client.status(job_id) if job_id else client.latest_update())
        active = answer is not None and answer["state"] in (JobState.queued, JobState.running)
        if answer is not None and active:
            await client.request_cancel(str(answer["job_id"]))
    except LookupError:  # finished, but its result expired between two reads
        return not_found(job_id)
    except (RedisError, OSError) as exc:
        raise queue_down(exc) from None
    if answer is None or answer["state"] == JobState.not_found:
        if job_id is None:
            return not_found(None, "no update has been queued yet: nothing to cancel")
        return not_found(job_id)
    if not active:
        ended = (answer.get("summary") or {}).get("status") or "finished"
        return JSONResponse(
            status_code=409,
            content={
                **legacy_status_fields(answer),
                "detail": f"the update already ended ({ended}): nothing to cancel",
                "job_id": answer["job_id"],
                "state": answer["state"],
            },
        )
    logger.info(
        "cancel of update job %s requested through the API by %s", answer["job_id"], who or "-"
    )
    return JSONResponse(
        status_code=202,
        content={
            "job_id": answer["job_id"],
            "state": answer["state"],
            "status": "updating",
            "message": "Cancel requested: the worker stops the update and puts back what "
            "it had changed.",
            "error": None,
        },
    )


@route("GET", "/status", responses={404: {"description": "no such job"}})
async def status(client: Client, job_id: JobIdQuery = None) -> Any:
    """The state of an update (default: the latest): queued, running (with the current
    step and progress) or finished (with the summary); plus `status` (idle | updating |
    completed | failed), `message` and `error`, the original endpoint's fields. With no
    update at all (or the latest expired): 200 `idle`."""
    try:
        answer = await (client.status(job_id) if job_id else client.latest_update())
    except LookupError:  # finished, but its result expired between two reads
        if job_id is None:
            return idle_answer()
        return not_found(job_id)
    except (RedisError, OSError) as exc:
        raise queue_down(exc) from None
    if answer is None or (job_id is None and answer["state"] == JobState.not_found):
        return idle_answer()
    if answer["state"] == JobState.not_found:
        return not_found(answer["job_id"])
    return {**answer, **legacy_status_fields(answer), **host_status_fields(answer)}


@route("GET", "/events", responses={404: {"description": "no such job (or none yet)"}})
async def events(
    client: Client,
    options: Options,
    job_id: JobIdQuery = None,
    since: Annotated[str | None, Query(max_length=200)] = None,
    last_event_id: Annotated[str | None, Header(max_length=200)] = None,
) -> Any:
    """Server-Sent Events of an update's progress (default: the latest update), from the
    start or after `Last-Event-ID` / `since`; ends with an `event: status` message holding
    the final status."""
    cursor = Cursor.parse(last_event_id or since)  # a reconnecting EventSource sends both
    target = job_id or cursor.job_id
    try:
        if target is None:
            latest = await client.latest_update()
            if latest is None:
                return not_found(None, "no update has been queued yet")
            target = str(latest["job_id"])
        if cursor.job_id not in (None, target):
            cursor = Cursor(None, None)  # an id of another job's stream: from the start
        state = (await client.status(target))["state"]
    except LookupError:  # finished, but its result expired between two reads
        return not_found(target)
    except (RedisError, OSError) as exc:
        raise queue_down(exc) from None
    if state == JobState.not_found:
        return not_found(target)
    return StreamingResponse(
        event_stream(client, target, cursor.entry_id, options.poll_interval_s, options.keepalive_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@route("GET", "/history", response_model=HistoryAnswer)
async def history(
    client: Client,
    limit: Annotated[int, Query(ge=1, le=500, description="how many records")] = 50,
) -> HistoryAnswer:
    """The last updates, checks and refused jobs, oldest first (worker/host/history.py)."""
    try:
        return HistoryAnswer(records=await client.history(limit))
    except (RedisError, OSError) as exc:
        raise queue_down(exc) from None
