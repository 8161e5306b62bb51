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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from testbed import (
    Stack,
    TestBed,
    build_app_image,
    container_ids,
    registry_image_id,
    running_image_ids,
    write_sample_project,
)
from testbed.siteenv import site_environment
from testbed.wheelhouse import build_wheelhouse
from tests.summary_schema import assert_valid_summary
from worker.host.main import create_worker
from worker.host.settings import Settings
from worker.shared.client import UpdateClient
from worker.shared.keys import latest_update_key, progress_key
from worker.shared.settings import Secret

APP_REPO = "acme/app"
# What the API container does not get: the registry credentials and the deployment's files.
HOST_ONLY = ("REGISTRY_USERNAME", "GITHUB_TOKEN_FILE", "GITHUB_TOKEN", "COMPOSE_FILE_PATH")
FRONTEND_REPO = "acme/frontend"
_counter = itertools.count(1)
MIGRATION_GATE = "/data/release-migration"
GATED_MIGRATION_PATH = "/data/gated-migrate"
GATED_MIGRATION = f"""#!/bin/sh
# The test's migration: waits until the test opens the gate, then migrates.
until [ -e {MIGRATION_GATE} ]; do sleep 0.1; done
exec /app/migrate
"""
# Compose project names (and so queue names and registry repositories) carry this session's
# tag: two sessions on one machine (another checkout's `make test`) never share a name.
SESSION_TAG = secrets.token_hex(3)


async def eventually(condition: Callable[[], Awaitable[Any]], timeout: float = 10) -> None:
    """Wait until `condition()` is true (polled), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition never met"
        await asyncio.sleep(0.02)


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
    job_secret_file: Path | None = None  # UPDATE_JOB_SECRET_FILE of its worker processes
    versions: Iterator[int] = field(default_factory=lambda: itertools.count(2))

    def image_ids(self) -> dict[str, str]:
        return running_image_ids(self.stack, self.project)

    def container_ids(self) -> dict[str, str]:
        return container_ids(self.stack, self.project)

    def publish(self, repo: str, version: str, behaviour: str = "healthy") -> str:
        """Push a new version to the registry only: the local tag keeps pointing at the image
        the containers run, as on a real host where the new version was built elsewhere."""
        build_app_image(self.stack, repo, version, behaviour, registry_only=True)
        return registry_image_id(self.stack, repo)

    def next_version(self) -> str:
        """A version this deployment has not seen yet (2, 3, ...): tests sharing a deployment
        (`shared_deployment`) each publish their own."""
        return str(next(self.versions))

    def compose(self, *args: str, check: bool = True) -> str:
        return self.stack.compose(self.compose_file, self.project, *args, check=check).stdout

    def worker_env(self) -> dict[str, str]:
        """The environment a worker process (or ansible-playbook) gets, as from systemd."""
        settings = self.settings
        return {
            **os.environ,
            **site_environment(
                self.stack,
                queue=settings.queue_name,
                compose_file=settings.compose_file,
                project=self.project,
                token_file=settings.registry_token_file,
                job_secret_file=self.job_secret_file,
                lock_dir=settings.lock_dir,
                migration_command=settings.migration_command,
                health_timeout=settings.health_timeout,
                job_timeout=settings.job_timeout,
                min_interval=settings.min_interval,
            ),
        }

    def api_env(self) -> dict[str, str]:
        """The API container's environment: the worker's without what only the host has."""
        return {k: v for k, v in self.worker_env().items() if k not in HOST_ONLY}

    def migrations_log(self) -> str:
        return self.compose("exec", "-T", "api", "cat", "/data/migrations.log", check=False)

    def with_fresh_queue(self) -> Deployment:
        """A copy on a queue no job ever used (the same compose project)."""
        queue = f"update-executor:test:{self.project}q{next(_counter)}"
        return replace(self, settings=self.settings.model_copy(update=dict(queue_name=queue)))

    def with_gated_migration(self) -> Deployment:
        """A copy whose migration waits until `gate(open=True)` (the app's /data volume
        outlives the recreate): a test holds an update in its migration step, acts, then
        lets it finish, instead of guessing with a long sleep. The gate starts closed."""
        self.stack.docker(
            "exec",
            "-i",
            f"{self.project}-api",
            "sh",
            "-c",
            f"cat >{GATED_MIGRATION_PATH} && chmod 0755 {GATED_MIGRATION_PATH}",
            input=GATED_MIGRATION,
        )
        self.gate(open=False)
        return replace(
            self,
            settings=self.settings.model_copy(update=dict(migration_command=GATED_MIGRATION_PATH)),
        )

    def gate(self, *, open: bool) -> None:
        command = f"touch {MIGRATION_GATE}" if open else f"rm -f {MIGRATION_GATE}"
        self.compose("exec", "-T", "api", "sh", "-c", command)


_v1_images: dict[str, str] = {}  # registry -> the reference of its version 1 app image


def _push_v1(stack: Stack, repo: str) -> None:
    """Version 1 of the app image under `repo`: built once per bed, then only tagged and
    pushed (the registry mounts the layers it already has)."""
    if stack.registry not in _v1_images:
        _v1_images[stack.registry] = build_app_image(stack, f"t{SESSION_TAG}base/app", "1")
    ref = f"{stack.registry}/{repo}:latest"
    stack.docker("tag", _v1_images[stack.registry], ref)
    stack.docker("push", ref, logged_in=True, timeout=300)


def new_deployment(
    stack: Stack, directory: Path, lock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Deployment:
    """A compose project at version 1 (`compose up --wait`) in `directory`, with its own
    registry repositories, queue and job secret; `monkeypatch` sets the secret's environment."""
    n = next(_counter)
    project = f"ue{SESSION_TAG}n{n}"
    app_repo, frontend_repo = f"t{SESSION_TAG}n{n}/app", f"t{SESSION_TAG}n{n}/frontend"
    _push_v1(stack, app_repo)
    _push_v1(stack, frontend_repo)
    directory.mkdir(parents=True, exist_ok=True)
    compose_file = write_sample_project(
        stack, directory / project, project, app_repo=app_repo, frontend_repo=frontend_repo
    )
    stack.compose(compose_file, project, "up", "-d", "--wait")
    token_file = directory / "registry-token"
    token_file.write_text(stack.registry_password)
    token_file.chmod(0o600)
    # The job secret the client signs with and the worker verifies with (worker/shared/signing.py);
    # worker processes started from os.environ (worker_env) find it through the file. Tests
    # run updates back to back: no cool-down (test_security.py tests it).
    job_secret_file = directory / "job-secret"
    job_secret_file.write_text(secrets.token_hex(32))
    job_secret_file.chmod(0o600)
    monkeypatch.setenv("UPDATE_JOB_SECRET_FILE", str(job_secret_file))
    monkeypatch.setenv("UPDATE_MIN_INTERVAL", "0")
    settings = Settings.from_env({"LOG_FILE": ""}).model_copy(
        update=dict(
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
    )
    return Deployment(
        stack, project, compose_file, app_repo, frontend_repo, settings, job_secret_file
    )


def remove_deployment(deployment: Deployment) -> None:
    deployment.compose("down", "--volumes", "--timeout", "1", check=False)


@pytest.fixture
def deployment(
    stack: Stack, tmp_path: Path, lock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    """A deployment of this test's own: for tests that leave it in a state no other test could
    start from (a held lock, a killed worker, changed settings). Modules whose tests can share
    one override it with `shared_deployment`."""
    created = new_deployment(stack, tmp_path, lock_dir, monkeypatch)
    yield created
    remove_deployment(created)


@pytest.fixture
def own_deployment(
    stack: Stack, tmp_path: Path, lock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    """`deployment` as conftest.py defines it, in a module that overrides `deployment`: for
    the one test there that needs its own (e.g. a cool-down: it is per compose project)."""
    created = new_deployment(stack, tmp_path, lock_dir, monkeypatch)
    yield created
    remove_deployment(created)


@pytest.fixture
async def own_client(own_deployment: Deployment) -> AsyncIterator[UpdateClient]:
    async with await UpdateClient.connect(own_deployment.settings) as connected:
        yield connected


@pytest.fixture(scope="module")
def shared_deployment(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory, lock_dir: Path
) -> Iterator[Deployment]:
    """One deployment for the tests of a module that each take their own before/after images
    and publish their own version (`Deployment.next_version`): no build, up and down each."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        created = new_deployment(stack, tmp_path_factory.mktemp("shared"), lock_dir, monkeypatch)
        yield created
        remove_deployment(created)


@pytest.fixture
async def shared_client(shared_deployment: Deployment) -> AsyncIterator[UpdateClient]:
    async with await UpdateClient.connect(shared_deployment.settings) as connected:
        yield connected


@dataclass
class Outcome:
    """One update through the queue and the real worker, recorded for the tests that only
    read it: the summary, the progress stream and status right after, images and containers
    before and after, the migrations log, and what a fresh API found as the latest update."""

    deployment: Deployment
    summary: dict[str, Any]
    progress: list[dict[str, Any]]
    status: dict[str, Any]
    latest: dict[str, Any] | None
    before_images: dict[str, str]
    before_containers: dict[str, str]
    after_images: dict[str, str]
    after_containers: dict[str, str]
    published: dict[str, str]
    migrations_log: str
    ttls: dict[str, int]
    version: str = ""  # the version it published, if any

    @property
    def job_id(self) -> str:
        return str(self.summary["job_id"])


async def record_update(
    deployment: Deployment, published: dict[str, str], version: str = "", **kwargs: Any
) -> Outcome:
    """Run one update (`update`) on `deployment` and record what the tests read of it."""
    before_images, before_containers = deployment.image_ids(), deployment.container_ids()
    async with await UpdateClient.connect(deployment.settings) as client:
        summary = await update(client, deployment, **kwargs)
        job_id = summary["job_id"]
        progress = await client.progress(job_id)
        status = await client.status(job_id)
        queue = deployment.settings.queue_name
        ttls = {
            "progress": await client.redis.ttl(progress_key(queue, job_id)),
            "progress_len": await client.redis.xlen(progress_key(queue, job_id)),
            "latest": await client.redis.ttl(latest_update_key(queue)),
        }
    async with await UpdateClient.connect(deployment.settings) as fresh:  # an API started later
        latest = await fresh.latest_update()
    return Outcome(
        deployment=deployment,
        summary=summary,
        progress=progress,
        status=status,
        latest=latest,
        before_images=before_images,
        before_containers=before_containers,
        after_images=deployment.image_ids(),
        after_containers=deployment.container_ids(),
        published=published,
        migrations_log=deployment.migrations_log(),
        ttls=ttls,
        version=version,
    )


@pytest.fixture(scope="session")
def outcome_site(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory, lock_dir: Path
) -> Iterator[Deployment]:
    """The deployment `updated_once`, `rolled_back_once` and `cli_updated_once` run on, one
    after the other. The environment is left as it was: its workers get the job secret from
    the settings (in-process) or from `worker_env()`, not from this session's os.environ."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        created = new_deployment(stack, tmp_path_factory.mktemp("outcomes"), lock_dir, monkeypatch)
    yield created
    remove_deployment(created)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def updated_once(outcome_site: Deployment) -> Outcome:
    """The happy path once a session: v1 -> v2 of every registry service through the queue,
    with migrations, requested by admin@example.org."""
    site, version = outcome_site, outcome_site.next_version()  # "2": the first on the site
    published = {
        site.app_repo: site.publish(site.app_repo, version),
        site.frontend_repo: site.publish(site.frontend_repo, version),
    }
    return await record_update(site, published, version, requested_by="admin@example.org")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def updated_again(updated_once: Outcome) -> Outcome:
    """Right after `updated_once`, the same update again (migrations asked for, the
    default): nothing new, so nothing is recreated and no migration runs (test_noop.py)."""
    return await record_update(updated_once.deployment, {})


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def rolled_back_once(updated_again: Outcome) -> Outcome:
    """Unhealthy -> rollback once a session: an unhealthy version of the app for api and
    worker, after `updated_once` (and `updated_again`) on the same site."""
    site, version = updated_again.deployment, updated_again.deployment.next_version()
    published = {site.app_repo: site.publish(site.app_repo, version, behaviour="unhealthy")}
    return await record_update(site, published, version, services=["api", "worker"])


async def watch_latest(client: UpdateClient, timeout: float) -> list[dict[str, Any]]:
    """What an API started mid-update sees: it finds the update with latest_update() and
    polls status() until the update finished."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        latest = await client.latest_update()
        if latest is not None:
            seen.append(latest)
            if latest["state"] == "finished":
                return seen
        await asyncio.sleep(0.1)
    raise AssertionError(f"the update did not finish in {timeout} s: last seen {seen[-1:]}")


@dataclass
class CliOutcome:
    """`update-executor enqueue --services api,worker --wait` served by a worker process, as
    an operator runs it: the CLI's exit status and output, the worker's output, what an API
    polling latest_update() saw meanwhile, and `update-executor status JOB_ID` after."""

    deployment: Deployment
    new_app: str
    returncode: int
    stdout: str
    stderr: str
    worker_output: str
    seen: list[dict[str, Any]]
    status_returncode: int
    status_stdout: str
    status_stderr: str
    after_images: dict[str, str]


async def _run(env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 240)
    return process.returncode or 0, out.decode(), err.decode()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def cli_updated_once(
    updated_again: Outcome, tmp_path_factory: pytest.TempPathFactory
) -> CliOutcome:
    """The CLI's update once a session, on the outcome site with a queue of its own (so the
    latest update an API finds there is this one), after `updated_once`."""
    site = updated_again.deployment.with_fresh_queue()
    new_app = site.publish(site.app_repo, site.next_version())
    env = site.worker_env()
    log = tmp_path_factory.mktemp("cli-update") / "worker.log"
    enqueue = [CLI, "enqueue", "--services", "api,worker", "--wait", "--timeout", "200"]
    with cli_worker(env, log=log):
        # stderr is a pipe: plain step lines, no bar
        cli = asyncio.create_task(_run(env, *enqueue))
        try:
            async with await UpdateClient.connect(site.settings) as api:
                seen = await watch_latest(api, timeout=220)
        finally:
            returncode, stdout, stderr = await asyncio.wait_for(cli, 60)
    job_id = str(seen[-1]["job_id"])
    status_rc, status_out, status_err = await _run(env, CLI, "status", job_id)
    return CliOutcome(
        deployment=site,
        new_app=new_app,
        returncode=returncode,
        stdout=stdout,
        stderr=stderr,
        worker_output=log.read_text(errors="replace"),
        seen=seen,
        status_returncode=status_rc,
        status_stdout=status_out,
        status_stderr=status_err,
        after_images=site.image_ids(),
    )


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
def cli_worker(
    env: dict[str, str],
    tail: int = 4000,
    *,
    log: Path | None = None,
    cli: str = CLI,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """`update-executor worker` (`cli`, this venv's by default) with exactly `env`: the one way
    the tests start a worker process. It is stopped with SIGTERM at the end (SIGKILL after
    60 s) unless the test ended it, and the last `tail` characters of its output printed.

    Its output goes to `log` when given (a file never fills up as a pipe would; the test
    reads it after the block), else to a pipe the test may read (`process.communicate()`)."""
    with contextlib.ExitStack() as files:
        out = files.enter_context(log.open("ab")) if log is not None else subprocess.PIPE
        process = subprocess.Popen(
            [cli, "worker"], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True
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
        if log is not None:
            output = log.read_text(errors="replace")
        print(f"--- worker output ---\n{(output or '')[-tail:]}")


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
