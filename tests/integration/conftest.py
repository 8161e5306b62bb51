"""The real stack for integration tests: a private dockerd, a registry with htpasswd auth and a
Redis, started once per session by `testbed` and stopped at the end, also on failure.

There is no skip here on purpose: when a component cannot start, every test that needs it
errors, in CI and everywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from testbed import (
    Stack,
    TestBed,
    build_app_image,
    container_ids,
    registry_image_id,
    running_image_ids,
    write_sample_project,
)
from testbed.wheelhouse import build_wheelhouse
from tests.summary_schema import assert_valid_summary
from worker.host.main import create_worker
from worker.host.settings import Settings
from worker.shared.client import UpdateClient
from worker.shared.settings import Secret

APP_REPO = "acme/app"
FRONTEND_REPO = "acme/frontend"
_counter = itertools.count(1)
# Compose project names (and so queue names and registry repositories) carry this session's
# tag: two sessions on one machine (another checkout's `make test`) never share a name.
SESSION_TAG = secrets.token_hex(3)


@pytest.fixture(scope="session")
def lock_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This session's UPDATE_LOCK_DIR (the update lock and rollback points), instead of the
    host-wide default /var/lib/update-executor/locks that other sessions would share."""
    path = tmp_path_factory.mktemp("locks")
    path.chmod(0o700)
    return path


@pytest.fixture(scope="session")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestBed]:
    started = TestBed()
    # A temp dir per session for the workers' job dirs: a worker removes every ue-job-* dir
    # of its temp dir at start (one worker per host in production), which must not reach the
    # jobs of another test session running on the same machine.
    job_tmp = tmp_path_factory.mktemp("worker-tmp")
    with started as stack:
        saved = {name: os.environ.get(name) for name in ("DOCKER_HOST", "TMPDIR")}
        # ansible-runner, the docker CLI and compose all take the daemon from the environment.
        os.environ["DOCKER_HOST"] = stack.docker_host
        os.environ["TMPDIR"] = str(job_tmp)
        tempfile.tempdir = None  # gettempdir() reads TMPDIR again
        try:
            yield started
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            tempfile.tempdir = None


@pytest.fixture(scope="session")
def stack(bed: TestBed) -> Stack:
    return bed.stack


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """update-executor's wheel and its dependencies' (testbed/wheelhouse.py), once a session."""
    wheels = tmp_path_factory.mktemp("wheelhouse")
    build_wheelhouse(wheels)
    return wheels


@dataclass
class Deployment:
    """One compose project at version 1, with its own registry repositories and queue."""

    stack: Stack
    project: str
    compose_file: Path
    app_repo: str
    frontend_repo: str
    settings: Settings

    def image_ids(self) -> dict[str, str]:
        return running_image_ids(self.stack, self.project)

    def container_ids(self) -> dict[str, str]:
        return container_ids(self.stack, self.project)

    def publish(self, repo: str, version: str, behaviour: str = "healthy") -> str:
        """Push a new version to the registry only: the local tag keeps pointing at the image
        the containers run, as on a real host where the new version was built elsewhere."""
        build_app_image(self.stack, repo, version, behaviour, registry_only=True)
        return registry_image_id(self.stack, repo)

    def compose(self, *args: str, check: bool = True) -> str:
        return self.stack.compose(self.compose_file, self.project, *args, check=check).stdout

    def worker_env(self) -> dict[str, str]:
        """The environment a worker process (or ansible-playbook) gets, as from systemd."""
        settings = self.settings
        return {
            **os.environ,
            "REDIS_QUEUE_HOST": settings.redis_host,
            "REDIS_QUEUE_PORT": str(settings.redis_port),
            "UPDATE_QUEUE_NAME": settings.queue_name,
            "COMPOSE_FILE_PATH": str(settings.compose_file),
            "COMPOSE_PROJECT_NAME": self.project,
            "UPDATE_LOCK_DIR": str(settings.lock_dir),
            "REGISTRY_URL": settings.registry_url,
            "REGISTRY_USERNAME": settings.registry_username,
            "GITHUB_TOKEN_FILE": str(settings.registry_token_file),
            "MIGRATION_COMMAND": settings.migration_command,
            "HEALTH_TIMEOUT": str(settings.health_timeout),
            "JOB_TIMEOUT": str(settings.job_timeout),
            "LOG_FILE": "",
        }

    def migrations_log(self) -> str:
        return self.compose("exec", "-T", "api", "cat", "/data/migrations.log", check=False)


@pytest.fixture
def deployment(
    stack: Stack, tmp_path: Path, lock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    n = next(_counter)
    project = f"ue{SESSION_TAG}n{n}"
    app_repo, frontend_repo = f"t{SESSION_TAG}n{n}/app", f"t{SESSION_TAG}n{n}/frontend"
    build_app_image(stack, app_repo, "1")
    build_app_image(stack, frontend_repo, "1")
    compose_file = write_sample_project(
        stack, tmp_path / project, project, app_repo=app_repo, frontend_repo=frontend_repo
    )
    stack.compose(compose_file, project, "up", "-d", "--wait")
    token_file = tmp_path / "registry-token"
    token_file.write_text(stack.registry_password)
    token_file.chmod(0o600)
    # The job secret the client signs with and the worker verifies with (worker/shared/signing.py);
    # worker processes started from os.environ (worker_env) find it through the file. Tests
    # run updates back to back: no cool-down (test_security.py tests it).
    job_secret_file = tmp_path / "job-secret"
    job_secret_file.write_text(secrets.token_hex(32))
    job_secret_file.chmod(0o600)
    monkeypatch.setenv("UPDATE_JOB_SECRET_FILE", str(job_secret_file))
    monkeypatch.setenv("UPDATE_MIN_INTERVAL", "0")
    settings = replace(
        Settings.from_env({"LOG_FILE": ""}),
        redis_host=stack.redis_host,
        redis_port=stack.redis_port,
        queue_name=f"update-executor:test:{project}",
        compose_file=compose_file,
        compose_project_name=project,
        registry_url=stack.registry,
        registry_username=stack.registry_username,
        registry_token_file=token_file,
        migration_service="api",
        migration_command="/app/migrate",
        health_timeout=60,
        job_timeout=240,
        job_secret=Secret(job_secret_file.read_text()),
        min_interval=0,
        lock_dir=lock_dir,
    )
    yield Deployment(stack, project, compose_file, app_repo, frontend_repo, settings)
    stack.compose(compose_file, project, "down", "--volumes", "--timeout", "1", check=False)


@pytest.fixture
async def client(deployment: Deployment) -> AsyncIterator[UpdateClient]:
    async with await UpdateClient.connect(deployment.settings) as connected:
        yield connected


async def run_worker_burst(settings: Settings) -> None:
    """Run the real ARQ worker until the queue is empty, as arq's own tests do."""
    worker = create_worker(settings, burst=True, poll_delay=0, handle_signals=False)
    try:
        await worker.main()
    finally:
        await worker.close()


async def update(client: UpdateClient, deployment: Deployment, **kwargs: Any) -> dict[str, Any]:
    """Queue an update, run the worker until the queue is empty, return the valid summary."""
    job_id = await client.enqueue_update(**kwargs)
    assert (await client.status(job_id))["state"] == "queued"
    await run_worker_burst(deployment.settings)
    status = await client.status(job_id)
    assert status["state"] == "finished"
    summary = assert_valid_summary(status["summary"])
    assert summary["job_id"] == job_id
    return summary


CLI = str(Path(sys.executable).parent / "update-executor")


@contextlib.contextmanager
def worker_process(deployment: Deployment, **env: str) -> Iterator[subprocess.Popen[str]]:
    """The real worker as systemd runs it (`update-executor worker`), with `env` added. A test
    may kill or stop it; otherwise it is stopped with SIGTERM at the end (SIGKILL after 60 s).
    Its output is printed, so that pytest shows it when the test fails."""
    with cli_worker({**deployment.worker_env(), **env}) as process:
        yield process


@contextlib.contextmanager
def cli_worker(env: dict[str, str], tail: int = 4000) -> Iterator[subprocess.Popen[str]]:
    """`update-executor worker` with exactly `env`; stopped with SIGTERM at the end (SIGKILL
    after 60 s) unless the test ended it, and the last `tail` characters of its output printed."""
    process = subprocess.Popen(
        [CLI, "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            output = process.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            output = process.communicate(timeout=30)[0]
        print(f"--- worker output ---\n{output[-tail:]}")


async def wait_for_step(
    client: UpdateClient, job_id: str, step: str | None = None, timeout: float = 180
) -> None:
    """Poll the job's progress (as a UI does) until `step` is the one running (any step when
    None): a condition the worker reports, not a guess at how long the steps before it take."""
    deadline = time.monotonic() + timeout
    while True:
        status = await client.status(job_id)
        current = status["current_step"]
        if current is not None and step in (None, current):
            return
        assert status["state"] != "finished", f"job ended before {step}: {status['summary']}"
        assert time.monotonic() < deadline, f"job {job_id} never reached {step}: {status}"
        await asyncio.sleep(0.1)
