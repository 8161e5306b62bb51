"""A drop-in FastAPI router for the API side of an update: check, trigger, cancel, status,
history, live events.

    from worker.api import SharedClient, build_router

    updates = SharedClient()  # one Redis pool for the whole app, settings from the environment
    app = FastAPI(lifespan=updates.lifespan)  # closes it at shutdown
    app.include_router(build_router(updates, require_superuser), prefix="/api")
    # or: staff may look, only superusers may trigger or cancel
    build_router(updates, require_staff, change_dependency=require_superuser)

Only this module imports FastAPI (the optional extra `update-executor[api]`); the worker does
not need it. Everything the routes show lives in Redis, keyed by job id, so an API process
that restarts in the middle of an update finds it again (`latest_update()`). See docs/api.md.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at runtime,
# and some name types local to build_router.
import asyncio
import inspect
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.params import Depends as DependsParam
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict
from redis.exceptions import RedisError

from ..shared.client import JobState, UpdateClient
from ..shared.progress import STREAM_ID, EntryKind
from ..shared.request import InvalidRequest, UpdateRequest, check_check_fields
from ..shared.settings import ClientSettings
from ..shared.untrusted import is_job_id

logger = logging.getLogger("update_executor.api")

# A zero-argument callable giving the client to use: an UpdateClient or an awaitable of one.
# It is called on every request and the router never closes what it returns: the client is
# the host's, shared by every request (an UpdateClient holds a Redis connection pool, safe to
# use from concurrent requests). SharedClient is such a factory.
ClientFactory = Callable[[], UpdateClient | Awaitable[UpdateClient]]

# For Query(pattern=): pydantic-core checks it with the Rust regex engine, whose `$` is the
# end of the text (a trailing newline is refused; tests/unit/test_grammars.py).
JOB_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
# Seconds the stream waits for the result after the job-end entry before it ends anyway.
END_GRACE_S = 10.0
# The answer of /check before any check has finished.
NO_CHECK: dict[str, Any] = {
    "services": {},
    "update_available": None,
    "checked_at": None,
    "job_id": None,
    "error": None,
}
QUEUE_DOWN = "the update queue (Redis) is not reachable; try again later"
# A state-changing request must say it is JSON (or carry this header): an HTML form or a
# no-cors fetch from another site can send neither without the browser asking first (CSRF).
CSRF_HEADER = "X-Requested-With"
# The application's UI names two groups of services: those of its backend image (api, worker)
# and those of its frontend image. By default a service whose image's name ends in "frontend"
# (or "-web", "-ui") is the frontend, every other one the backend.
FRONTEND_NAME = re.compile(r"(^|[/_.-])(frontend|web|ui)\Z")


def image_repository(image: str) -> str:
    """`ghcr.io/org/app-frontend:latest` -> `ghcr.io/org/app-frontend` (no tag, no digest)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def service_group(image: str | None, frontend_images: Iterable[str] | None = None) -> str:
    """ "frontend" or "backend" for a service's image: `frontend_images` (repositories, with or
    without the registry and tag) when given, else the image's name."""
    repository = image_repository(image or "")
    if frontend_images is not None:
        wanted = {image_repository(ref) for ref in frontend_images}
        return (
            "frontend"
            if any(repository == ref or repository.endswith("/" + ref) for ref in wanted)
            else "backend"
        )
    return "frontend" if FRONTEND_NAME.search(repository) else "backend"


def legacy_check_fields(
    check: Mapping[str, Any], frontend_images: Iterable[str] | None = None
) -> dict[str, Any]:
    """The fields the application's "check for updates" page reads (`has_updates`,
    `backend_update_available`, ..., `message`), from a check result."""
    services: Mapping[str, Any] = check.get("services") or {}
    frontend = None if frontend_images is None else list(frontend_images)
    fields: dict[str, Any] = {"has_updates": bool(check.get("update_available"))}
    news = []
    for group in ("backend", "frontend"):
        members = [
            info
            for _name, info in sorted(services.items())
            if isinstance(info, Mapping) and service_group(info.get("image"), frontend) == group
        ]
        available = any(bool(info.get("update_available")) for info in members)
        if available:
            news.append(group)
        fields[f"{group}_update_available"] = available
        for which in ("current", "remote"):
            key = "local_digest" if which == "current" else "remote_digest"
            digests = [str(info[key]) for info in members if info.get(key)]
            fields[f"{group}_{which}_digest"] = digests[0] if digests else None
    errors = [
        f"{name}: {info.get('error')}"
        for name, info in sorted(services.items())
        if isinstance(info, Mapping) and info.get("error")
    ]
    if check.get("error"):
        message = f"The check could not run: {check['error']}"
    elif check.get("checked_at") is None:
        message = "No check has finished yet; the worker is checking, ask again in a moment."
    elif news:
        message = "Updates available: " + " and ".join(news) + "."
    else:
        message = "The system is up to date."
    if errors and not check.get("error"):
        message += " Not checked: " + "; ".join(errors)
    if check.get("cached") and check.get("checked_at") is not None:
        message += (
            f" (last check, {check['checked_at']}; a new one is still running)"
            if check.get("pending")
            else f" (last check, {check['checked_at']})"
        )
    fields["message"] = message
    return fields


def _step_message(answer: Mapping[str, Any]) -> str:
    """`step 5/8: recreate` while an update runs, from a status answer."""
    current = answer.get("current_step")
    progress = answer.get("progress") or {}
    planned = [
        str(step.get("name"))
        for step in progress.get("steps") or []
        if isinstance(step, Mapping) and step.get("planned")
    ]
    if answer.get("state") == JobState.queued:
        return "queued: waiting for the update worker"
    if current is None:
        return "starting" if not planned or progress.get("done", 0) == 0 else "finishing"
    if current in planned:
        return f"step {planned.index(current) + 1}/{len(planned)}: {current}"
    return f"step {current}"


def legacy_status_fields(answer: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields the application's update page polls: `status` (idle | updating | completed
    | failed), `message`, `error` (a string or null), from a status answer (None: no update)."""
    if answer is None:
        return {"status": "idle", "message": "No update has been run.", "error": None}
    if answer.get("state") in (JobState.queued, JobState.running):
        return {"status": "updating", "message": _step_message(answer), "error": None}
    summary = answer.get("summary") or {}
    if summary.get("status") == "successful":
        updated = sorted(
            name
            for name, info in (summary.get("services") or {}).items()
            if isinstance(info, Mapping) and info.get("updated")
        )
        message = (
            "Update completed: " + ", ".join(updated) + " updated."
            if updated
            else "Update completed: everything was up to date."
        )
        return {"status": "completed", "message": message, "error": None}
    raw_error = summary.get("error")
    error: Mapping[str, Any] = raw_error if isinstance(raw_error, Mapping) else {}
    step = str(error.get("step") or "the queue")
    text = str(
        error.get("message") or f"The update ended {summary.get('status') or 'without a result'}."
    )
    if summary.get("rolled_back"):
        outcome = "The previous version was restored (rolled back)."
    elif summary.get("rollback_error"):
        outcome = f"THE ROLLBACK FAILED: {summary['rollback_error']}"
    else:
        outcome = "Not rolled back."
    return {
        "status": "failed",
        "message": f"Update {summary.get('status') or 'failed'} at {step}.",
        "error": f"{text} {outcome}",
    }


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


class TriggerBody(BaseModel):
    """The body of POST /trigger. Types are strict: `"yes"` is not a boolean."""

    model_config = ConfigDict(extra="forbid", strict=True)

    run_migrations: bool = True
    create_backup: bool = False
    services: list[str] | None = None
    dry_run: bool = False

    def request(self, requested_by: str | None) -> UpdateRequest:
        """The update this body asks for, by `requested_by`, parsed once (names, lengths:
        InvalidRequest); the worker parses it again, and checks it against its allow-list,
        which only the host knows."""
        return UpdateRequest.parse({**self.model_dump(), "requested_by": requested_by})


class HistoryAnswer(BaseModel):
    """GET /history: records as worker/host/history.py writes them (kind, job_id, requested_by,
    request, status, outcome, started_at, finished_at, services, error, rolled_back, ...)."""

    records: list[dict[str, Any]]


@dataclass(frozen=True)
class Cursor:
    """Where an event stream resumes: `since` or `Last-Event-ID`, `[<job id>/]<entry id>`."""

    job_id: str | None
    entry_id: str | None

    @classmethod
    def parse(cls, raw: str | None) -> "Cursor":
        if not raw:
            return cls(None, None)
        job_id, _, entry_id = raw.strip().rpartition("/")
        if not STREAM_ID.fullmatch(entry_id) or (job_id and not is_job_id(job_id)):
            raise _invalid(
                ("query", "since"),
                "since / Last-Event-ID must be an event id this endpoint sent "
                "('<job id>/<stream entry id>') or a stream entry id",
            )
        return cls(job_id or None, entry_id)


def _invalid(loc: tuple[str, ...], message: str) -> RequestValidationError:
    """A 422 shaped like FastAPI's own validation errors."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": message}])


def _queue_down(exc: BaseException) -> HTTPException:
    logger.warning("update queue unreachable: %s", exc)
    return HTTPException(status_code=503, detail=QUEUE_DOWN)


def _not_found(job_id: str | None, detail: str) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail}
    if job_id is not None:
        body.update(job_id=job_id, state=JobState.not_found.value)
    return JSONResponse(status_code=404, content=body)


def _sse(data: Any, event: str | None = None, event_id: str | None = None) -> str:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, default=str, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


def _kind(entry: dict[str, Any]) -> str:
    """The entry's kind (job_started, step_started, step_ended, job_ended) as an event name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(entry.get("kind") or "progress"))  # one line


def _as_depends(dependency: Callable[..., Any] | DependsParam) -> DependsParam:
    return dependency if isinstance(dependency, DependsParam) else Depends(dependency)


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
    router = APIRouter(
        prefix=prefix, tags=["system update"], dependencies=[_as_depends(auth_dependency)]
    )
    # The routes that change something: the host's second check (if any), then the CSRF guard.
    changes = [
        *([] if change_dependency is None else [_as_depends(change_dependency)]),
        Depends(require_json),
    ]
    frontend = None if frontend_images is None else list(frontend_images)

    def with_legacy(check: dict[str, Any]) -> dict[str, Any]:
        return {**check, **legacy_check_fields(check, frontend)}

    async def get_client() -> UpdateClient:
        made = client_factory()
        return await made if inspect.isawaitable(made) else made

    async def nobody() -> str | None:
        return None

    Client = Annotated[UpdateClient, Depends(get_client)]
    RequestedBy = Annotated[str | None, Depends(requested_by or nobody)]
    JobIdQuery = Annotated[
        str | None, Query(pattern=JOB_ID, description="a job id (default: the latest update)")
    ]

    CheckWait = Annotated[
        float, Query(ge=0, le=max_check_wait_s, description="seconds to wait for a fresh check")
    ]
    CheckServices = Annotated[list[str] | None, Query()]

    async def answer_check(
        client: UpdateClient,
        wait: float,
        find: Callable[[], Awaitable[str | None]],
    ) -> dict[str, Any]:
        """The check `find` joins or starts, waited for up to `wait` s; else the last one.
        Always 200, as the original endpoint: a problem is in `error` and `message` (the
        application's page shows `message`; it gives up on its own after 10 s)."""
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
            raise _invalid(("query", "services"), str(exc)) from None
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

    @router.get("/check")
    async def check(
        client: Client,
        request: Request,
        wait: CheckWait = 5.0,
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
            return await client.start_check(None, check_interval_s)

        return await answer_check(client, wait, find)

    @router.post("/check", dependencies=changes)
    async def start_check(
        client: Client, wait: CheckWait = 5.0, services: CheckServices = None
    ) -> dict[str, Any]:
        """Start a check (of `services`, default all) or join the one pending, and wait up to
        `wait` seconds for it, as GET /check. Guarded like /trigger (JSON or X-Requested-With)
        and rate-limited: a new check starts at most once per `check_interval_s` per queue;
        sooner, the answer is the last check (`cached: true`, `pending: false`)."""
        return await answer_check(
            client, wait, lambda: client.start_check(services, check_interval_s)
        )

    @router.post(
        "/trigger",
        status_code=202,
        dependencies=changes,
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
        body = body or TriggerBody()
        try:
            enqueued = await client.submit_update(body.request(who))
            if enqueued.existing:
                state = (await client.status(enqueued.job_id))["state"]
                if state == JobState.not_found:
                    # A claim within its grace (its job about to be queued): or a job that
                    # will never run, which the next request replaces once the grace ended.
                    state = JobState.queued.value
        except InvalidRequest as exc:
            raise _invalid(("body",), str(exc)) from None
        except (RedisError, OSError) as exc:
            raise _queue_down(exc) from None
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

    @router.post(
        "/cancel",
        status_code=202,
        dependencies=changes,
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
            return _not_found(job_id, "no such update job (or its result expired)")
        except (RedisError, OSError) as exc:
            raise _queue_down(exc) from None
        if answer is None or answer["state"] == JobState.not_found:
            if job_id is None:
                return _not_found(None, "no update has been queued yet: nothing to cancel")
            return _not_found(job_id, "no such update job (or its result expired)")
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

    @router.get("/status", responses={404: {"description": "no such job"}})
    async def status(client: Client, job_id: JobIdQuery = None) -> Any:
        """The state of an update (default: the latest): queued, running (with the current
        step and progress) or finished (with the summary); plus `status` (idle | updating |
        completed | failed), `message` and `error`, the original endpoint's fields. With no
        update at all (or the latest expired): 200 `idle`."""
        try:
            answer = await (client.status(job_id) if job_id else client.latest_update())
        except LookupError:  # finished, but its result expired between two reads
            if job_id is None:
                return idle()
            return _not_found(job_id, "no such update job (or its result expired)")
        except (RedisError, OSError) as exc:
            raise _queue_down(exc) from None
        if answer is None or (job_id is None and answer["state"] == JobState.not_found):
            return idle()
        if answer["state"] == JobState.not_found:
            return _not_found(answer["job_id"], "no such update job (or its result expired)")
        return {**answer, **legacy_status_fields(answer)}

    def idle() -> dict[str, Any]:
        return {
            "job_id": None,
            "state": None,
            "current_step": None,
            "progress": None,
            "summary": None,
            **legacy_status_fields(None),
        }

    @router.get("/events", responses={404: {"description": "no such job (or none yet)"}})
    async def events(
        client: Client,
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
                    return _not_found(None, "no update has been queued yet")
                target = str(latest["job_id"])
            if cursor.job_id not in (None, target):
                cursor = Cursor(None, None)  # an id of another job's stream: from the start
            state = (await client.status(target))["state"]
        except LookupError:  # finished, but its result expired between two reads
            return _not_found(target, "no such update job (or its result expired)")
        except (RedisError, OSError) as exc:
            raise _queue_down(exc) from None
        if state == JobState.not_found:
            return _not_found(target, "no such update job (or its result expired)")
        return StreamingResponse(
            _event_stream(client, target, cursor.entry_id, poll_interval_s, keepalive_s),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.get("/history", response_model=HistoryAnswer)
    async def history(
        client: Client,
        limit: Annotated[int, Query(ge=1, le=500, description="how many records")] = 50,
    ) -> HistoryAnswer:
        """The last updates, checks and refused jobs, oldest first (worker/host/history.py)."""
        try:
            return HistoryAnswer(records=await client.history(limit))
        except (RedisError, OSError) as exc:
            raise _queue_down(exc) from None

    return router


async def _event_stream(
    client: UpdateClient, job_id: str, since: str | None, poll_s: float, keepalive_s: float
) -> AsyncIterator[str]:
    """Forward the job's progress entries until its job-end entry, then its final status.

    A job that ends without a job-end entry (it failed at the queue level, or its stream
    expired) is noticed through its state; the final status is sent all the same.
    """
    yield "retry: 3000\n\n"
    last_write = time.monotonic()
    ended_at: float | None = None  # when the job-end entry was sent
    try:
        while True:
            # One bounded read; the cursor moves past entries that do not verify too, so a
            # Redis writer's entries are read (and logged, one line) once, not at every poll.
            page = await client.progress_page(job_id, since=since)
            for entry in page.entries:
                yield _sse(entry, event=_kind(entry), event_id=f"{job_id}/{entry['id']}")
                last_write = time.monotonic()
                if _kind(entry) == EntryKind.job_ended:
                    ended_at = last_write
            since = page.last_id or since
            if page.last_id is None:
                done = await client.state(job_id) in (JobState.finished, JobState.not_found)
                # The result is stored just after the job-end entry: wait for it, not forever.
                if done or (ended_at is not None and time.monotonic() - ended_at > END_GRACE_S):
                    final = await client.status(job_id)
                    if ended_at is None:  # entries written between our two reads come first
                        for entry in (await client.progress_page(job_id, since=since)).entries:
                            yield _sse(
                                entry, event=_kind(entry), event_id=f"{job_id}/{entry['id']}"
                            )
                    yield _sse(final, event="status")
                    return
            if time.monotonic() - last_write >= keepalive_s:
                yield ": keepalive\n\n"
                last_write = time.monotonic()
            await asyncio.sleep(poll_s)
    except LookupError:  # finished, but its result expired between two reads
        yield _sse({"job_id": job_id, "state": JobState.not_found.value}, event="status")
    except (RedisError, OSError) as exc:
        logger.warning("event stream of job %s stopped: %s", job_id, exc)
        yield _sse({"detail": QUEUE_DOWN}, event="error")
