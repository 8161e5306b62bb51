"""The ARQ job `check_for_updates`: is a newer image in the registry than the one each update
service runs? Nothing is pulled, nothing changes; the API needs no registry token for it.

Per service, the digest of the image its container runs (the repo digest Docker recorded for
the service image's repository when it pulled or pushed it) is compared with the digest the
registry serves now for the same tag (worker/registry.py). A missing tag, wrong credentials
or an unreachable registry is that service's `error`, never an exception out of the job.
The last result is kept in Redis at `<queue>:last-check` for a day, for an API to show.
See docs/check.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from arq.jobs import Job, JobStatus, SerializationError

from ..shared.request import InvalidRequest, check_check_fields, validate_check_services
from ..shared.signing import CHECK_FUNCTION, JobCodec, JobRejected, secret_key
from .compose import ComposeError, compose_config, run_command
from .jobs import allowed_services
from .registry import (
    Credentials,
    ImageReference,
    RegistryClient,
    RegistryError,
    parse_reference,
    redact,
    registry_host,
)
from .settings import Secret, Settings

logger = logging.getLogger("update_executor.check")

# The cached last result stays readable this long (seconds).
LAST_CHECK_TTL_S = 24 * 3600
# ARQ timeout of one check job (worker/main.py); lookups use short timeouts, so it is ample.
CHECK_TIMEOUT_S = 120
# A check job's own result (ARQ) stays this long; the cached last check, LAST_CHECK_TTL_S.
CHECK_RESULT_TTL_S = 3600
DOCKER_TIMEOUT_S = 30
LAST_CHECK_TYPE = "last-check"
# A pending-check marker younger than this names a check even before ARQ lists its job.
PENDING_GRACE_S = 30


def last_check_key(settings: Settings) -> str:
    return f"{settings.queue_name}:last-check"


def pending_check_key(settings: Settings, services: Sequence[str] | None) -> str:
    """The key naming the queued or running check of this set of services (client side)."""
    chosen = ",".join(sorted(set(services))) if services else "*"
    return f"{settings.queue_name}:check-pending:{chosen}"


def seal_last_check(settings: Settings, data: Mapping[str, Any]) -> str:
    """The text stored at `last_check_key`: signed like results when there is a job secret,
    so a Redis writer cannot plant a fake "up to date" (plain JSON without a secret)."""
    # Bound to its queue, with an expiry: a copy from another queue or an old one is refused.
    expires = int((time.time() + LAST_CHECK_TTL_S) * 1000)
    payload = {"typ": LAST_CHECK_TYPE, **data, "q": settings.queue_name, "exp": expires}
    key = secret_key(settings)
    if key is None:
        return json.dumps(payload)
    return JobCodec(key).seal(payload).decode()


def open_last_check(settings: Settings, raw: bytes | str | None) -> dict[str, Any] | None:
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
        # The worker refused the job (worker/signing.py): a summary that says why.
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


@dataclass(frozen=True)
class RunningImage:
    """What a service's container runs: its image ID and the repo digests Docker knows."""

    container_id: str
    image_id: str
    repo_digests: tuple[str, ...]


class CheckError(RuntimeError):
    """The check could not run at all; the message says why (no secrets)."""


def credentials(settings: Settings) -> Credentials | None:
    """The registry credentials from the settings (token file read now), or None."""
    token = settings.registry_token.reveal()
    if settings.registry_token_file is not None:
        try:
            token = settings.registry_token_file.read_text().strip()
        except OSError as exc:
            raise CheckError(
                f"the registry token file {settings.registry_token_file} cannot be read: "
                f"{exc.strerror}"
            ) from None
    if not token or not settings.registry_username:
        return None
    return Credentials(
        registry_host(settings.registry_url), settings.registry_username, Secret(token)
    )


# ---------------------------------------------------------------- CLI (update-executor check)
# Exit status of `update-executor check`: 0 all up to date, 1 an error (for any service, or
# the check did not run), 10 an update is available (and no error); 2 is a bad request.
EXIT_UP_TO_DATE = 0
EXIT_ERROR = 1
EXIT_UPDATE_AVAILABLE = 10


def short_digest(digest: str | None) -> str:
    """`sha256:0123456789ab` (12 hex digits, like docker's short IDs), `-` when unknown."""
    if not digest:
        return "-"
    algorithm, _, value = digest.partition(":")
    return f"{algorithm}:{value[:12]}" if value else digest[:19]


def check_exit_status(result: Mapping[str, Any]) -> int:
    services = result.get("services") or {}
    if result.get("error") or any(s.get("error") for s in services.values()):
        return EXIT_ERROR
    return EXIT_UPDATE_AVAILABLE if result.get("update_available") else EXIT_UP_TO_DATE


def format_check_table(result: Mapping[str, Any]) -> str:
    """The check as a table: service, running digest, available digest, status."""
    if result.get("error"):
        return f"the check did not run: {result['error']}"
    rows = [("SERVICE", "RUNNING", "AVAILABLE", "STATUS")]
    for name, check in (result.get("services") or {}).items():
        rows.append(
            (
                name,
                short_digest(check.get("local_digest")),
                short_digest(check.get("remote_digest")),
                status_text(check),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    ]
    lines.append(f"checked at {result.get('checked_at')} (job {result.get('job_id')})")
    return "\n".join(lines)


# ---------------------------------------------------------------- client side (UpdateClient)
async def queue_check(redis: Any, settings: Settings, services: list[str] | None) -> str:
    """Queue a check job and return its id; while a check of the same services is queued or
    running, return that one's id instead (many clicks while an update holds the worker's
    single slot give one check, not a pile)."""
    check_check_fields({"services": services})  # the worker's own checks, before queuing
    key = pending_check_key(settings, services)
    ttl = settings.job_max_age + CHECK_TIMEOUT_S
    job_id = uuid.uuid4().hex
    if not await redis.set(key, job_id, nx=True, ex=ttl):
        holder = await redis.get(key)
        if holder is not None:
            holder_id = holder.decode() if isinstance(holder, bytes) else str(holder)
            status = await Job(holder_id, redis, _queue_name=settings.queue_name).status()
            fresh = int(await redis.ttl(key)) > ttl - PENDING_GRACE_S
            if status in (JobStatus.queued, JobStatus.deferred, JobStatus.in_progress) or (
                status is JobStatus.not_found and fresh
            ):
                logger.info("update check %s already pending; not queuing another", holder_id)
                return holder_id
        await redis.set(key, job_id, ex=ttl)
    job = await redis.enqueue_job(
        CHECK_FUNCTION, _job_id=job_id, _queue_name=settings.queue_name, services=services
    )
    if job is None:  # ARQ returns None only for a job id already in use
        raise RuntimeError("the check job could not be queued")
    logger.info("queued update check %s", job_id)
    return job_id


async def wait_check(job: Job, timeout: float | None, queue_name: str) -> dict[str, Any]:
    """The result of a check job once it finished; TimeoutError after `timeout` seconds (the
    check goes on, and its result is cached), LookupError for an unknown job."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        status = await job.status()
        if status is JobStatus.complete:
            try:
                info = await job.result_info()
            except SerializationError:  # does not verify, not a result, or expired
                return failed_check(job.job_id, "invalid result: it does not verify")
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


# ---------------------------------------------------------------- worker side
async def running_images(project: str) -> dict[str, RunningImage]:
    """Service -> the image its container runs (the newest container of the service, whatever
    its state: a one-shot job's container has exited), from the docker CLI."""
    listed = await run_command(
        "docker",
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        f"label=com.docker.compose.project={project}",
        "--filter",
        "label=com.docker.compose.oneoff=False",
        timeout=DOCKER_TIMEOUT_S,
    )
    if listed.rc != 0:
        raise CheckError(f"docker ps failed: {listed.stderr.strip()[-300:]}")
    ids = listed.stdout.split()
    if not ids:
        return {}
    inspected = await run_command(
        "docker", "container", "inspect", "--format", "{{json .}}", *ids, timeout=DOCKER_TIMEOUT_S
    )
    if inspected.rc != 0:  # e.g. a container removed in between; the next check sees
        raise CheckError(f"docker container inspect failed: {inspected.stderr.strip()[-300:]}")
    newest: dict[str, tuple[str, str, str]] = {}  # service -> (created, container, image id)
    for line in inspected.stdout.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        labels = (item.get("Config") or {}).get("Labels") or {}
        service = labels.get("com.docker.compose.service")
        if not service:
            continue
        entry = (str(item.get("Created", "")), str(item["Id"]), str(item["Image"]))
        if service not in newest or entry[0] > newest[service][0]:
            newest[service] = entry
    image_ids = sorted({image for _, _, image in newest.values()})
    digests: dict[str, tuple[str, ...]] = {}
    if image_ids:
        images = await run_command(
            "docker",
            "image",
            "inspect",
            "--format",
            "{{.Id}} {{json .RepoDigests}}",
            *image_ids,
            timeout=DOCKER_TIMEOUT_S,
        )
        # An image removed since (rare): its service then shows "no repo digest".
        for line in images.stdout.splitlines():
            image_id, _, raw = line.partition(" ")
            try:
                found = json.loads(raw) or []
            except ValueError:
                found = []
            digests[image_id] = tuple(str(d) for d in found)
    return {
        service: RunningImage(container, image, digests.get(image, ()))
        for service, (_, container, image) in newest.items()
    }


def repo_digests_for(ref: ImageReference, repo_digests: Iterable[str]) -> list[str]:
    """The digests among `repo@digest` entries that belong to `ref`'s repository.

    Docker writes Docker Hub names in their short form (`redis@sha256:…`), so each entry is
    parsed like a reference. An image can have several for one repository (pushed as one tag,
    pulled as another, e.g. a platform manifest and the index that lists it).
    """
    found = []
    for entry in repo_digests:
        try:
            parsed = parse_reference(entry)
        except ValueError:
            continue
        if parsed.name == ref.name and parsed.digest:
            found.append(parsed.digest)
    return found


def compare(
    service: ServiceCheck,
    local: Sequence[str],
    remote_digest: str,
    children: Sequence[str] = (),
) -> None:
    """Fill `service` from the local repo digests and the registry's digest."""
    service.remote_digest = remote_digest
    if remote_digest in local:
        service.local_digest = remote_digest
        return
    in_index = [d for d in local if d in children]
    if in_index:
        # The container runs the current index's manifest for its platform (pulled by digest).
        service.local_digest = in_index[0]
        return
    service.local_digest = local[0] if local else None
    service.update_available = bool(local)


def _lookup(
    client: RegistryClient, refs: Sequence[ImageReference], secrets: Sequence[str]
) -> dict[str, tuple[str, tuple[str, ...]] | str]:
    """Image reference -> (digest, index children) or an error message. Blocking."""
    answers: dict[str, tuple[str, tuple[str, ...]] | str] = {}
    unreachable: dict[str, str] = {}  # registry -> error, so a dead registry costs one timeout
    for ref in refs:
        if ref.registry in unreachable:
            answers[str(ref)] = unreachable[ref.registry]
            continue
        try:
            manifest = client.remote_manifest(ref, with_children=True)
        except RegistryError as exc:
            message = redact(str(exc), secrets)
            answers[str(ref)] = message
            if "unreachable" in message:
                unreachable[ref.registry] = message
            continue
        answers[str(ref)] = (manifest.digest, manifest.children)
    return answers


async def run_check(settings: Settings, job_id: str, services: object = None) -> CheckResult:
    """The check itself (no Redis): raise CheckError / InvalidRequest when it cannot run."""
    result = CheckResult(job_id=job_id, checked_at=datetime.now(UTC))
    try:
        chosen = validate_check_services(await allowed_services(settings), services)
        config = await compose_config(settings)
    except ComposeError as exc:
        raise CheckError(str(exc)) from None
    project = settings.compose_project_name or str(config.get("name") or "")
    if not project:
        raise CheckError("the compose project has no name (set COMPOSE_PROJECT_NAME)")
    creds = credentials(settings)
    secrets = [creds.token.reveal()] if creds else []
    try:
        running = await running_images(project)
    except (ComposeError, TimeoutError) as exc:
        reason = str(exc) or "docker did not answer in time"
        raise CheckError(f"cannot list the containers: {reason}") from None
    config_services: Mapping[str, Any] = config.get("services") or {}

    refs: dict[str, ImageReference] = {}
    for name in chosen:
        image = (config_services.get(name) or {}).get("image")
        check = result.services[name] = ServiceCheck(image=str(image) if image else None)
        if name not in config_services:
            check.error = f"service {name} is not in the compose file"
        elif not image:
            check.error = "no image: build-only service"
        else:
            try:
                refs[name] = parse_reference(str(image))
            except ValueError as exc:
                check.error = str(exc)
    lookups = sorted({str(ref): ref for ref in refs.values()}.values(), key=str)
    client = RegistryClient(creds)
    try:
        answers = await asyncio.to_thread(_lookup, client, lookups, secrets)
    finally:
        client.close()

    for name, ref in refs.items():
        check = result.services[name]
        answer = answers[str(ref)]
        container = running.get(name)
        local = repo_digests_for(ref, container.repo_digests) if container else []
        if isinstance(answer, str):
            check.error = answer
            check.local_digest = local[0] if local else None
            continue
        compare(check, local, *answer)
        if container is None:
            check.error = f"no container for service {name}: it is not deployed"
        elif not local:
            check.error = (
                f"the image service {name} runs was never pulled from (or pushed to) "
                f"{ref.name}: no repo digest to compare"
            )
    return result


async def check_for_updates(
    ctx: dict[str, Any], *, services: list[str] | None = None
) -> dict[str, Any]:
    """ARQ job: compare each update service's running image with the registry (no pull).

    Returns {"services": {name: {image, local_digest, remote_digest, update_available,
    error}}, "update_available", "checked_at", "job_id", "error"} and stores it in Redis at
    `<queue>:last-check`. `error` is set (and nothing stored) when the check could not run.
    """
    settings: Settings = ctx["settings"]
    job_id: str = ctx.get("job_id") or "local"
    redis = ctx.get("redis")
    try:
        result = await run_check(settings, job_id, services)
    except (InvalidRequest, CheckError) as exc:
        logger.warning("check %s could not run: %s", job_id, exc)
        return failed_check(job_id, str(exc))
    data = result.as_dict()
    for name, check in result.services.items():
        if check.error:
            logger.warning("check %s: %s: %s", job_id, name, check.error)
    logger.info(
        "check %s: %s",
        job_id,
        ", ".join(f"{name} {status_text(c)}" for name, c in result.services.items()),
    )
    if redis is not None:
        await redis.set(
            last_check_key(settings), seal_last_check(settings, data), ex=LAST_CHECK_TTL_S
        )
    return data
