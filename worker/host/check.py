"""The ARQ job `check_for_updates`: is a newer image in the registry than the one each update
service runs? Nothing is pulled, nothing changes; the API needs no registry token for it.

Per service, the digest of the image its container runs (the repo digest Docker recorded for
the service image's repository when it pulled or pushed it) is compared with the digest the
registry serves now for the same tag (worker/host/registry.py). A missing tag, wrong credentials
or an unreachable registry is that service's `error`, never an exception out of the job.
The last result is kept in Redis at `<queue>:last-check` for a day, for an API to show
(sealed and read back by worker/shared/check.py).
See docs/check.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..shared.check import CheckResult, ServiceCheck, failed_check, seal_last_check, status_text
from ..shared.keys import LAST_CHECK_TTL_S, last_check_key
from ..shared.request import InvalidRequest, validate_check_services
from . import history
from .aftermath import METRICS_KEY
from .compose import ComposeError, compose_config, run_command
from .jobs import allowed_services
from .metrics import Metrics
from .references import ImageReference, RegistryError, parse_reference, registry_host
from .registry import Credentials, RegistryClient, redact
from .settings import Secret, Settings

logger = logging.getLogger("update_executor.check")

DOCKER_TIMEOUT_S = 30


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
            last_check_key(settings.queue_name),
            seal_last_check(settings, data),
            ex=LAST_CHECK_TTL_S,
        )
    return data


async def recorded_check(
    ctx: dict[str, Any], *, services: list[str] | None = None
) -> dict[str, Any]:
    """`check_for_updates`, then its history record and metrics (the ARQ job of a check)."""
    result = await check_for_updates(ctx, services=services)
    try:
        metrics: Metrics | None = ctx.get(METRICS_KEY)
        if metrics is not None:
            metrics.observe_check(result)
            metrics.write_textfile(ctx["settings"])
        await history.record(ctx.get("redis"), ctx["settings"], history.check_record(result))
    except Exception:
        logger.exception("check %s: history or metrics failed", result.get("job_id"))
    return result
