"""Check for updates (worker/host/check.py, worker/host/registry.py) against the real test bed: its
dockerd, its htpasswd registry on loopback, Redis, and the real ARQ worker; plus a second
real registry with token auth (testbed/token_auth.py) for the Bearer flow GHCR uses.

Nothing here is pulled except where a test pulls on purpose (the multi-platform index). The
tests that only read share one deployment of this module (`shared_deployment`); the ones that
publish, delete a tag or re-point it at an index have their own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import shutil
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from testbed import (
    Stack,
    TestBed,
    build_app_image,
    delete_from_registry,
    image_id_of,
    registry_digest,
)
from testbed.token_auth import SERVICE, TokenIssuer, TokenRegistry
from tests.integration.conftest import Deployment, run_worker_burst
from worker.host.check import check_for_updates
from worker.host.settings import Settings
from worker.shared.client import UpdateClient
from worker.shared.keys import LAST_CHECK_TTL_S, last_check_key
from worker.shared.settings import Secret

CLI = str(Path(sys.executable).parent / "update-executor")
APP_SERVICES = ("init_db", "api", "worker")


async def check(settings: Settings, services: list[str] | None = None) -> dict[str, Any]:
    """The job function itself, as the worker calls it (no Redis: nothing cached)."""
    return await check_for_updates(
        {"settings": settings, "job_id": "test", "redis": None}, services=services
    )


def digests(deployment: Deployment) -> dict[str, str | None]:
    stack = deployment.stack
    return {
        "app": registry_digest(stack, deployment.app_repo),
        "frontend": registry_digest(stack, deployment.frontend_repo),
    }


def repo_of(deployment: Deployment, service: str) -> str:
    return deployment.frontend_repo if service == "frontend" else deployment.app_repo


def secret_values(deployment: Deployment) -> list[str]:
    return [deployment.stack.registry_password]


# ------------------------------------------------------------------------------ basic answers
async def test_an_unchanged_deployment_is_up_to_date(shared_deployment: Deployment) -> None:
    deployment = shared_deployment  # nothing in this module publishes to it
    stack = deployment.stack
    current = digests(deployment)
    result = await check(deployment.settings)
    assert result["error"] is None
    assert result["job_id"] == "test"
    checked = datetime.fromisoformat(result["checked_at"])
    assert checked.utcoffset() is not None and checked.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert abs((datetime.now(UTC) - checked).total_seconds()) < 60
    assert sorted(result["services"]) == sorted([*APP_SERVICES, "frontend"])
    for name, service in result["services"].items():
        digest = current["frontend" if name == "frontend" else "app"]
        assert service == {
            "image": f"{stack.registry}/{repo_of(deployment, name)}:latest",
            "local_digest": digest,
            "remote_digest": digest,
            "update_available": False,
            "error": None,
        }, name
    assert result["update_available"] is False


async def test_a_new_push_shows_as_available_and_nothing_is_pulled(
    deployment: Deployment,
) -> None:
    stack = deployment.stack
    old = digests(deployment)
    ref = f"{stack.registry}/{deployment.app_repo}:latest"
    local_tag = image_id_of(stack, ref)
    containers = deployment.container_ids()
    deployment.publish(deployment.app_repo, "2")
    new = digests(deployment)
    assert new["app"] != old["app"] and new["frontend"] == old["frontend"]

    result = await check(deployment.settings)
    assert result["update_available"] is True
    for name in APP_SERVICES:
        assert result["services"][name] == {
            "image": ref,
            "local_digest": old["app"],
            "remote_digest": new["app"],
            "update_available": True,
            "error": None,
        }, name
    assert result["services"]["frontend"]["update_available"] is False
    assert result["services"]["frontend"]["error"] is None
    # a check changes nothing: no pull (the local tag did not move), no recreate
    assert image_id_of(stack, ref) == local_tag
    assert deployment.container_ids() == containers

    only = await check(deployment.settings, services=["frontend"])
    assert list(only["services"]) == ["frontend"]
    assert only["update_available"] is False


@pytest.mark.parametrize(
    ("services", "message"),
    [
        (["db"], "services not allowed for update: db (allowed: api, frontend, init_db, worker)"),
        (["api", "cache"], "services not allowed for update: cache"),
        (["api;id"], "invalid service name at services[0]"),
        ([], "services must be a non-empty list"),
    ],
)
async def test_bad_services_are_refused_with_a_clear_error(
    shared_deployment: Deployment, services: list[str], message: str
) -> None:
    result = await check(shared_deployment.settings, services=services)
    assert message in result["error"]
    assert result["services"] == {} and result["update_available"] is False


# ------------------------------------------------------------------------------ per-service errors
async def test_a_missing_tag_is_an_error_of_that_service_only(deployment: Deployment) -> None:
    stack = deployment.stack
    current = digests(deployment)
    assert delete_from_registry(stack, deployment.frontend_repo)
    result = await check(deployment.settings)
    frontend = result["services"]["frontend"]
    assert frontend["error"] == (
        f"tag 'latest' not found in {stack.registry}/{deployment.frontend_repo} "
        "(the repository or the tag does not exist)"
    )
    assert frontend["remote_digest"] is None and frontend["update_available"] is False
    assert frontend["local_digest"] == current["frontend"]  # what runs is still known
    for name in APP_SERVICES:
        assert result["services"][name]["error"] is None
        assert result["services"][name]["update_available"] is False
    assert result["error"] is None


async def test_wrong_or_missing_credentials_are_a_clear_error(
    shared_deployment: Deployment, tmp_path: Path
) -> None:
    deployment = shared_deployment
    stack = deployment.stack
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-password\n")
    result = await check(deployment.settings.model_copy(update=dict(registry_token_file=wrong)))
    for name, service in result["services"].items():
        assert service["error"] == (
            f"registry {stack.registry} refused the credentials of user 'updater' for "
            f"{repo_of(deployment, name)} (HTTP 401): wrong username or token, or no pull access"
        ), name
        assert service["update_available"] is False
    assert "not-the-password" not in json.dumps(result)

    anonymous = deployment.settings.model_copy(
        update=dict(
            registry_token_file=None,
            registry_token=Secret(""),
            job_secret=Secret(""),
        )
    )
    result = await check(anonymous)
    for service in result["services"].values():
        assert "requires authentication and no credentials are configured" in service["error"]

    token_as_variable = deployment.settings.model_copy(
        update=dict(
            registry_token_file=None,
            registry_token=Secret(stack.registry_password),
        )
    )
    result = await check(token_as_variable)
    assert all(s["error"] is None for s in result["services"].values())
    assert stack.registry_password not in json.dumps(result)


async def test_an_unreachable_registry_is_a_per_service_error(
    bed: TestBed, shared_deployment: Deployment
) -> None:
    deployment = shared_deployment
    stack = deployment.stack
    current = digests(deployment)
    bed.stop_registry()
    try:
        started = time.monotonic()
        result = await check(deployment.settings)
        elapsed = time.monotonic() - started
    finally:
        bed.start_registry()
    assert elapsed < 15
    assert result["error"] is None
    for name, service in result["services"].items():
        assert service["error"] == (
            f"registry {stack.registry} is unreachable (Connection refused)"
        ), name
        assert service["local_digest"] == current["frontend" if name == "frontend" else "app"]
        assert service["update_available"] is False
    assert result["update_available"] is False


# ------------------------------------------------------------------------------ multi-platform
async def test_a_multi_platform_index_compares_like_with_like(deployment: Deployment) -> None:
    """The tag points to an index: before the pull, its digest differs from what runs (update
    available); after `pull` + `up`, Docker recorded the index digest and the check agrees."""
    stack, repo = deployment.stack, deployment.app_repo
    native = stack.docker("version", "--format", "{{.Server.Arch}}").stdout.strip()
    other = "arm64" if native != "arm64" else "amd64"
    base = f"{stack.registry}/{repo}"
    build_app_image(stack, repo, "mp-native", tag="native", registry_only=True)
    build_app_image(stack, repo, "mp-other", tag="other", registry_only=True)
    index = f"{base}:latest"
    stack.docker(
        "manifest", "create", "--insecure", index, f"{base}:native", f"{base}:other",
        logged_in=True,
    )  # fmt: skip
    stack.docker(
        "manifest", "annotate", "--os", "linux", "--arch", other, index, f"{base}:other",
        logged_in=True,
    )  # fmt: skip
    stack.docker("manifest", "push", "--insecure", "--purge", index, logged_in=True)
    index_digest = registry_digest(stack, repo)
    native_digest = registry_digest(stack, repo, "native")
    assert index_digest not in (None, native_digest)

    before = await check(deployment.settings)
    for name in APP_SERVICES:
        service = before["services"][name]
        assert service["remote_digest"] == index_digest, name
        assert service["update_available"] is True, name

    stack.compose(
        deployment.compose_file, deployment.project, "pull", *APP_SERVICES, logged_in=True
    )
    deployment.compose("up", "-d", "--wait")
    repo_digests = stack.docker(
        "image", "inspect", "--format", "{{json .RepoDigests}}", index
    ).stdout
    assert f"{base}@{index_digest}" in json.loads(repo_digests)

    after = await check(deployment.settings)
    for name in APP_SERVICES:
        assert after["services"][name] == {
            "image": index,
            "local_digest": index_digest,
            "remote_digest": index_digest,
            "update_available": False,
            "error": None,
        }, name
    assert after["update_available"] is False


# ------------------------------------------------------------------------------ worker, CLI, cache
async def wait_until_queued(client: UpdateClient, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await client.redis.zcard(client.settings.queue_name):
        if time.monotonic() > deadline:
            raise TimeoutError("nothing was queued")
        await asyncio.sleep(0.05)


async def redis_dump(client: UpdateClient) -> str:
    """Every key and value of the bed's Redis, as text (to look for secrets)."""
    parts = []
    redis: Any = client.redis  # redis-py types its commands Awaitable[T] | T
    for key in await redis.keys("*"):
        kind = (await redis.type(key)).decode()
        if kind == "string":
            value: Any = await redis.get(key)
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = await redis.xrange(key)
        elif kind == "hash":
            value = await redis.hgetall(key)
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        else:
            value = await redis.smembers(key)
        parts.append(f"{key!r} {value!r}")
    return "\n".join(parts)


async def run_cli(deployment: Deployment, client: UpdateClient, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        CLI,
        "check",
        *args,
        env=deployment.worker_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await wait_until_queued(client)
    await run_worker_burst(deployment.settings)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, stdout.decode(), stderr.decode()


async def test_check_through_the_worker_the_cache_and_the_cli(
    deployment: Deployment, client: UpdateClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = deployment.settings
    password = deployment.stack.registry_password
    old = digests(deployment)
    deployment.publish(deployment.app_repo, "2")
    new = digests(deployment)
    assert await client.last_check() is None

    # The client: one check per set of services while it is pending.
    waiting = asyncio.create_task(client.check_for_updates(timeout=60))
    await wait_until_queued(client)
    same = await client.enqueue_check()
    other = await client.enqueue_check(["frontend"])
    assert other != same
    await run_worker_burst(settings)
    result = await waiting
    assert result["job_id"] == same
    assert result["error"] is None and result["update_available"] is True
    assert result["services"]["api"]["local_digest"] == old["app"]
    assert result["services"]["api"]["remote_digest"] == new["app"]
    assert result["services"]["frontend"]["update_available"] is False
    frontend_only = await client.check_result(other, timeout=10)
    assert list(frontend_only["services"]) == ["frontend"]

    # The last check is cached (signed) in Redis, with an expiry.
    cached = await client.last_check()
    assert cached is not None and cached["job_id"] in (same, other)
    key = last_check_key(settings.queue_name)
    assert 0 < await client.redis.ttl(key) <= LAST_CHECK_TTL_S
    await client.redis.set(key, json.dumps({"typ": "last-check", **result, "job_id": "forged"}))
    assert await client.last_check() is None  # unsigned: ignored

    # The CLI: a table, exit 10 when an update is available.
    rc, stdout, stderr = await run_cli(deployment, client)
    assert rc == 10, stderr
    lines = stdout.splitlines()
    assert lines[0].split() == ["SERVICE", "RUNNING", "AVAILABLE", "STATUS"]
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert sorted(rows) == sorted([*APP_SERVICES, "frontend"])
    short_old, short_new = f"sha256:{old['app'][7:19]}", f"sha256:{new['app'][7:19]}"  # type: ignore[index]
    assert rows["api"].split() == ["api", short_old, short_new, "update", "available"]
    assert rows["frontend"].endswith("up to date")
    assert lines[-1].startswith("checked at ")
    cached = await client.last_check()
    assert cached is not None and cached["update_available"] is True

    rc, stdout, stderr = await run_cli(deployment, client, "--services", "frontend", "--json")
    assert rc == 0, stderr
    answer = json.loads(stdout)
    assert list(answer["services"]) == ["frontend"] and answer["update_available"] is False

    rc, _, stderr = await asyncio.to_thread(_cli_bad_request, deployment)
    assert rc == 2 and "invalid service name at services[0]" in stderr

    # The registry password appears nowhere: not in results, not anywhere in Redis.
    dump = await redis_dump(client)
    assert "last-check" in dump
    assert password not in dump
    assert password not in json.dumps(result)
    assert password not in caplog.text
    assert any(r.name == "update_executor.check" for r in caplog.records)


def _cli_bad_request(deployment: Deployment) -> tuple[int, str, str]:
    import subprocess

    done = subprocess.run(
        [CLI, "check", "--services", "api;id"],
        env=deployment.worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


# ------------------------------------------------------------------------------ Bearer (GHCR-style)
@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[TokenRegistry]:
    issuer = TokenIssuer("bot", secrets.token_urlsafe(18))
    issuer.start()
    registry = TokenRegistry(tmp_path / "token-registry", issuer)
    try:
        registry.start()
        yield registry
    finally:
        registry.stop()
        issuer.stop()


def push_to(stack: Stack, source: str, target: str, docker_config: Path) -> None:
    stack.docker("tag", source, target)
    stack.docker("push", target, env={"DOCKER_CONFIG": str(docker_config)}, timeout=120)


@pytest.fixture
async def bearer_project(
    shared_deployment: Deployment, token_registry: TokenRegistry, tmp_path: Path
) -> AsyncIterator[tuple[Settings, str]]:
    """A one-service compose project whose image lives in the token-auth registry (the
    module's deployment gives the image, nothing else of it changes)."""
    deployment = shared_deployment
    stack, issuer = deployment.stack, token_registry.issuer
    docker_config = tmp_path / "docker-token"
    docker_config.mkdir(mode=0o700)
    (docker_config / "config.json").write_text("{}\n")
    stack.docker(
        "login", token_registry.address, "--username", issuer.username, "--password-stdin",
        input=issuer.password, env={"DOCKER_CONFIG": str(docker_config)}, timeout=60,
    )  # fmt: skip
    image = f"{token_registry.address}/t/app:latest"
    push_to(stack, f"{stack.registry}/{deployment.app_repo}:latest", image, docker_config)
    project = f"{deployment.project}tok"
    compose_file = tmp_path / project / "docker-compose.yml"
    compose_file.parent.mkdir()
    compose_file.write_text(
        f'name: {project}\nservices:\n  app:\n    image: {image}\n    command: ["/app/work"]\n'
        "    init: true\n"
    )
    stack.compose(compose_file, project, "up", "-d", "--wait")
    token_file = tmp_path / "ghcr-token"
    token_file.write_text(issuer.password)
    settings = deployment.settings.model_copy(
        update=dict(
            compose_file=compose_file,
            compose_project_name=project,
            registry_url=token_registry.address,
            registry_username=issuer.username,
            registry_token_file=token_file,
            update_services=(),
        )
    )
    try:
        yield settings, docker_config.as_posix()
    finally:
        stack.compose(compose_file, project, "down", "--timeout", "1", check=False)
        # no credentials left on disk: the login's config and the token file
        shutil.rmtree(docker_config, ignore_errors=True)
        token_file.unlink(missing_ok=True)


async def test_the_bearer_token_flow_against_a_token_auth_registry(
    shared_deployment: Deployment,
    token_registry: TokenRegistry,
    bearer_project: tuple[Settings, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    deployment = shared_deployment
    stack, issuer = deployment.stack, token_registry.issuer
    settings, docker_config = bearer_project
    image = f"{token_registry.address}/t/app:latest"
    pushed = json.loads(
        stack.docker("image", "inspect", "--format", "{{json .RepoDigests}}", image).stdout
    )
    local = next(d.split("@")[1] for d in pushed if d.startswith(token_registry.address))
    issuer.requests.clear()
    issued_before = len(issuer.issued)

    result = await check(settings)
    assert result["services"] == {
        "app": {
            "image": image,
            "local_digest": local,
            "remote_digest": local,
            "update_available": False,
            "error": None,
        }
    }
    # the check asked the realm for a pull token of the repository, with the credentials
    assert [(r.service, r.scopes, r.account, r.status) for r in issuer.requests] == [
        (SERVICE, ("repository:t/app:pull",), "bot", 200)
    ]
    tokens = issuer.issued[issued_before:]
    assert len(tokens) == 1
    assert tokens[0] not in json.dumps(result) and issuer.password not in json.dumps(result)

    # a new version pushed: available
    version_2 = build_app_image(stack, deployment.app_repo, "2", tag="bearer", push=False)
    push_to(stack, version_2, image, Path(docker_config))
    result = await check(settings)
    app = result["services"]["app"]
    assert app["update_available"] is True and app["error"] is None
    assert app["local_digest"] == local and app["remote_digest"] not in (None, local)

    # wrong token: the token service refuses it
    wrong = tmp_path / "wrong-ghcr-token"
    wrong.write_text("ghp_wrong")
    result = await check(settings.model_copy(update=dict(registry_token_file=wrong)))
    assert result["services"]["app"]["error"] == (
        f"the token service of registry {token_registry.address} refused the credentials of "
        "user 'bot' for t/app (HTTP 401): wrong username or token, or no pull access"
    )
    # no credentials: an anonymous token without access, refused by the registry
    result = await check(
        settings.model_copy(update=dict(registry_token_file=None, registry_token=Secret("")))
    )
    assert result["services"]["app"]["error"] == (
        f"registry {token_registry.address} requires authentication for t/app and no "
        "credentials are configured for it (REGISTRY_USERNAME and a token)"
    )
    # credentials configured for another registry are never sent to this one
    issuer.requests.clear()
    result = await check(
        settings.model_copy(update=dict(registry_url="ghcr.io", update_services=("app",)))
    )
    assert "requires authentication" in result["services"]["app"]["error"]
    assert all(r.account is None for r in issuer.requests)
    # neither the password nor any token the issuer handed out reached a log line
    assert issuer.issued
    for secret in [issuer.password, *issuer.issued]:
        assert secret not in caplog.text
