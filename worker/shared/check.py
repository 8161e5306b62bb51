"""Check for updates, the parts both sides share: the result's shape, the cached last check
(sealed like job results), and queuing a check and waiting for it (the client's side).

The check itself runs in the worker (worker/host/check.py): it compares the image each
service runs with what the registry serves now; the API needs no registry token for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from arq.jobs import Job, JobStatus, SerializationError
from redis.exceptions import ResponseError

from .bounded import MAX_ID_BYTES, OversizedValue, bounded_get, read_result
from .keys import CHECK_TIMEOUT_S, LAST_CHECK_TTL_S, check_started_key, pending_check_key
from .request import check_check_fields
from .settings import ClientSettings
from .signing import CHECK_FUNCTION, JobCodec, JobRejected, secret_key
from .untrusted import InvalidJobId, job_id_from

logger = logging.getLogger("update_executor.check")
security_log = logging.getLogger("update_executor.security")

LAST_CHECK_TYPE = "last-check"
# A pending-check marker younger than this names a check even before ARQ lists its job.
PENDING_GRACE_S = 30


def seal_last_check(settings: ClientSettings, data: Mapping[str, Any]) -> str:
    """The text stored at `last_check_key`: signed like results when there is a job secret,
    so a Redis writer cannot plant a fake "up to date" (plain JSON without a secret)."""
    # Bound to its queue, with an expiry: a copy from another queue or an old one is refused.
    expires = int((time.time() + LAST_CHECK_TTL_S) * 1000)
    payload = {"typ": LAST_CHECK_TYPE, **data, "q": settings.queue_name, "exp": expires}
    key = secret_key(settings)
    if key is None:
        return json.dumps(payload)
    return JobCodec(key).seal(payload).decode()


def open_last_check(settings: ClientSettings, raw: bytes | str | None) -> dict[str, Any] | None:
    """The cached check from `seal_last_check`'s text; None when absent or not verifying."""
    if raw is None:
        return None
    try:
        payload = JobCodec(secret_key(settings)).open(raw.encode() if isinstance(raw, str) else raw)
    except JobRejected as exc:
        logger.warning("ignoring the cached update check in Redis: %s", exc.reason)
        return None
    if payload.pop("typ", None) != LAST_CHECK_TYPE:
        logger.warning("ignoring the cached update check in Redis: not a check result")
        return None
    queue, expires = payload.pop("q", None), payload.pop("exp", None)
    if queue != settings.queue_name or not isinstance(expires, int):
        logger.warning("ignoring the cached update check in Redis: not one of this queue")
        return None
    if expires < time.time() * 1000:
        logger.warning("ignoring the cached update check in Redis: it expired")
        return None
    return payload


def failed_check(job_id: str, message: str) -> dict[str, Any]:
    """A check result for a check that did not run (refused, timed out, worker failure)."""
    return CheckResult(job_id=job_id, checked_at=datetime.now(UTC), error=message).as_dict()


def check_outcome(job_id: str, success: bool, result: object) -> dict[str, Any]:
    """The check result of a finished ARQ job, whatever ended it (client side)."""
    if success and isinstance(result, dict) and "services" in result:
        return result
    if isinstance(result, dict) and isinstance(result.get("error"), dict):
        # The worker refused the job (worker/shared/signing.py): a summary that says why.
        return failed_check(job_id, str(result["error"].get("message") or "job refused"))
    if isinstance(result, TimeoutError):
        return failed_check(job_id, f"the check exceeded its time limit ({CHECK_TIMEOUT_S} s)")
    if isinstance(result, asyncio.CancelledError):
        return failed_check(job_id, "the check job was aborted")
    return failed_check(job_id, f"the worker failed: {result}")


@dataclass
class ServiceCheck:
    """One service's answer. `error` set means `update_available` is false (unknown)."""

    image: str | None
    local_digest: str | None = None
    remote_digest: str | None = None
    update_available: bool = False
    error: str | None = None


def status_text(check: ServiceCheck | Mapping[str, Any]) -> str:
    """`up to date`, `update available` or `error: <message>` (the CLI's status column)."""
    data = asdict(check) if isinstance(check, ServiceCheck) else check
    if data.get("error"):
        return f"error: {data['error']}"
    return "update available" if data.get("update_available") else "up to date"


@dataclass
class CheckResult:
    job_id: str
    checked_at: datetime
    services: dict[str, ServiceCheck] = field(default_factory=dict)
    # Set when the check could not run at all (bad request, compose file unreadable).
    error: str | None = None

    @property
    def update_available(self) -> bool:
        return any(s.update_available for s in self.services.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "services": {name: asdict(check) for name, check in self.services.items()},
            "update_available": self.update_available,
            "checked_at": self.checked_at.isoformat(),
            "job_id": self.job_id,
            "error": self.error,
        }


async def pending_check(
    redis: Any, settings: ClientSettings, services: list[str] | None
) -> str | None:
    """The id of the check of these services queued or running now, or None. What the
    pending key holds is a Redis writer's to choose: an id that is not a job id, or a key of
    another type, counts as no check (logged escaped)."""
    key = pending_check_key(settings.queue_name, services)
    try:
        holder = await bounded_get(redis, key, MAX_ID_BYTES)
        if holder is None:
            return None
        holder_id = job_id_from(holder)
    except (InvalidJobId, OversizedValue) as exc:  # never the client's: a Redis writer's
        security_log.warning("ignoring and releasing %s: %s", key, exc)
        await redis.delete(key)
        return None
    except ResponseError as exc:  # a key of another type: a Redis writer's; released
        security_log.warning("ignoring and releasing %s: %s", key, exc)
        await redis.delete(key)
        return None
    status = await Job(holder_id, redis, _queue_name=settings.queue_name).status()
    fresh = int(await redis.ttl(key)) > _pending_ttl(settings) - PENDING_GRACE_S
    if status in (JobStatus.queued, JobStatus.deferred, JobStatus.in_progress) or (
        status is JobStatus.not_found and fresh
    ):
        return holder_id
    return None


def _pending_ttl(settings: ClientSettings) -> int:
    return settings.job_max_age + CHECK_TIMEOUT_S


async def queue_check(
    redis: Any, settings: ClientSettings, services: list[str] | None, min_interval_s: float = 0
) -> str | None:
    """Queue a check job and return its id; while a check of the same services is queued or
    running, return that one's id instead (many clicks while an update holds the worker's
    single slot give one check, not a pile). With `min_interval_s`, a new check starts at
    most once per that many seconds per queue (so per compose project), whatever the
    services: None when one started more recently (the API then answers the last check)."""
    check_check_fields({"services": services})  # the worker's own checks, before queuing
    holder = await pending_check(redis, settings, services)
    if holder is not None:
        logger.info("update check %s already pending; not queuing another", holder)
        return holder
    job_id = uuid.uuid4().hex
    if min_interval_s > 0 and not await redis.set(
        check_started_key(settings.queue_name), job_id, nx=True, px=int(min_interval_s * 1000)
    ):
        logger.info(
            "an update check started less than %.0f s ago; not queuing another", min_interval_s
        )
        return None
    key = pending_check_key(settings.queue_name, services)
    if not await redis.set(key, job_id, nx=True, ex=_pending_ttl(settings)):
        holder = await pending_check(redis, settings, services)  # claimed since we looked
        if holder is not None:
            return holder
        await redis.set(key, job_id, ex=_pending_ttl(settings))  # stale, or a Redis writer's
    job = await redis.enqueue_job(
        CHECK_FUNCTION, _job_id=job_id, _queue_name=settings.queue_name, services=services
    )
    if job is None:  # ARQ returns None only for a job id already in use
        raise RuntimeError("the check job could not be queued")
    logger.info("queued update check %s", job_id)
    return job_id


async def wait_check(
    redis: Any, job_id: str, timeout: float | None, queue_name: str
) -> dict[str, Any]:
    """The result of a check job once it finished; TimeoutError after `timeout` seconds (the
    check goes on, and its result is cached), LookupError for an unknown job."""
    job = Job(job_id, redis, _queue_name=queue_name, _deserializer=redis.job_deserializer)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        status = await job.status()
        if status is JobStatus.complete:
            try:
                info = await read_result(redis, job_id, redis.job_deserializer)
            except SerializationError:  # does not verify, not a result, or expired
                return failed_check(job.job_id, "invalid result: it does not verify")
            except OversizedValue as exc:  # only a Redis writer makes it that big
                logger.warning("the result of check %s is invalid: %s", job.job_id, exc)
                return failed_check(job.job_id, f"invalid result: {exc.size} bytes, over the limit")
            except ResponseError:  # a key of another type: only a Redis writer does that
                return failed_check(job.job_id, "invalid result: it is not a string")
            if info is None:
                raise LookupError(f"no result for check job {job.job_id}")
            if info.job_id != job.job_id or info.queue_name != queue_name:
                return failed_check(job.job_id, "invalid result: it was signed for another job")
            return check_outcome(job.job_id, info.success, info.result)
        if status is JobStatus.not_found:
            raise LookupError(f"no check job {job.job_id} (unknown, or its result expired)")
        if deadline is not None and loop.time() > deadline:
            raise TimeoutError(f"check job {job.job_id} did not finish in {timeout} s")
        await asyncio.sleep(0.1)
