"""Security, end to end (issue 4): bad jobs change nothing and the worker keeps serving; the
registry token and the job secret leak nowhere; Redis with a password, an ACL user and TLS;
the cool-down; the start-up refusal without a secret; the hardened systemd unit.

Real components only: the test bed's dockerd, registry and Redis, redis-servers started
here for the password/ACL/TLS cases, and the real ARQ worker. The tests that need a deployment
share one of this module, each on a queue of its own (the `deployment` fixture below).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from arq.connections import ArqRedis, create_pool
from arq.constants import job_key_prefix
from arq.jobs import serialize_job

from testbed import Stack
from testbed.procs import free_port, wait_until
from testbed.redis_server import RedisServer
from testbed.registry import bcrypt_htpasswd_line
from tests.integration.conftest import Deployment, cli_worker, run_worker_burst
from tests.summary_schema import assert_valid_summary
from worker.host.cooldown import cooldown_key
from worker.host.settings import Settings
from worker.shared.client import UpdateClient
from worker.shared.connection import redis_settings
from worker.shared.serialization import serialize
from worker.shared.settings import Secret
from worker.shared.signing import JobCodec, client_codec

REPO_ROOT = Path(__file__).resolve().parents[2]
UNIT = REPO_ROOT / "deploy" / "systemd" / "update-executor.service"
CLI = str(Path(sys.executable).parent / "update-executor")
MARKER = "PAYLOADMARKER"  # in bad payloads: no result may quote it


def now_ms() -> int:
    return int(time.time() * 1000)


async def put_raw_job(redis: ArqRedis, queue: str, raw: bytes, score: int) -> str:
    """Write a job the way arq's enqueue_job does, bytes chosen by the attacker."""
    job_id = uuid.uuid4().hex
    await redis.psetex(job_key_prefix + job_id, 600_000, raw)
    await redis.zadd(queue, {job_id: score})
    return job_id


def signed(codec: JobCodec, function: str = "process_system_update", **kwargs: Any) -> bytes:
    return serialize_job(function, (), kwargs, None, now_ms(), serializer=codec.serialize)


def one_byte_changed(raw: bytes) -> bytes:
    """Flip `false` to `falsE` inside the signed payload: run_migrations=False → garbage."""
    assert raw.count(b"false") == 1
    return raw.replace(b"false", b"falsE")


@pytest.fixture
def deployment(shared_deployment: Deployment) -> Deployment:
    """The module's deployment on a fresh queue: the Redis state each test makes (nonces,
    results, cool-down) is its own, the compose project is up once for all."""
    return shared_deployment.with_fresh_queue()


# ------------------------------------------------------------------------------ bad input
async def test_bad_jobs_are_refused_change_nothing_and_the_worker_keeps_serving(
    deployment: Deployment, client: UpdateClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # a refusal after the first of a burst is logged at debug level (issue 21)
    caplog.set_level(logging.DEBUG, logger="update_executor.security")
    settings = deployment.settings
    queue = settings.queue_name
    codec = client_codec(settings)
    expired_codec = JobCodec(codec.key, clock=lambda: time.time() - 1200)
    # A new version waits in the registry: a pull would move the local tag, a recreate the IDs.
    deployment.publish(deployment.app_repo, deployment.next_version())
    ref = f"{deployment.stack.registry}/{deployment.app_repo}:latest"
    local_tag_before = deployment.stack.docker("image", "inspect", "-f", "{{.Id}}", ref).stdout
    containers_before = deployment.container_ids()

    bad: dict[str, tuple[bytes, str]] = {
        "unsigned JSON": (
            serialize_job("process_system_update", (), {}, None, now_ms(), serializer=serialize),
            "the payload is not signed",
        ),
        "wrong secret": (
            signed(JobCodec(b"x" * 64), dry_run=False),
            "the signature does not verify",
        ),
        "one byte changed": (
            one_byte_changed(signed(codec, run_migrations=False)),
            "the signature does not verify",
        ),
        "expired": (
            serialize_job(
                "process_system_update",
                (),
                {},
                None,
                now_ms() - 1_200_000,
                serializer=expired_codec.serialize,
            ),
            "the job expired: it was enqueued 120",  # 1200 s and the time the queue took
        ),
        "unknown function": (signed(codec, "os.system"), "unknown function"),
        "service not in the allow-list": (
            signed(codec, services=["api", "db"]),
            "services not allowed for update: db",
        ),
        "shell metacharacters": (
            signed(codec, services=[f"api;{MARKER}"]),
            "invalid service name at services[0]",
        ),
        "a path": (
            signed(codec, services=[f"../../{MARKER}"]),
            "invalid service name at services[0]",
        ),
        "wrong type": (
            signed(codec, run_migrations="yes"),
            "run_migrations must be true or false, got str",
        ),
        "extra argument": (
            signed(codec, compose_file=f"/tmp/{MARKER}.yml"),
            "unexpected argument compose_file",
        ),
        "over-long string": (
            signed(codec, requested_by=MARKER * 20),
            "requested_by must be a string of at most 200 chars",
        ),
        "oversized payload": (
            signed(codec, requested_by=MARKER * 10_000),
            "bytes, over the 65536-byte limit",
        ),
        "garbage bytes": (b"\x00\xff\xfe" + MARKER.encode() + b"\x01{", "the payload is not JSON"),
    }
    ids: dict[str, str] = {}
    base = now_ms() - 10_000
    for n, (raw, _) in enumerate(bad.values()):
        ids[list(bad)[n]] = await put_raw_job(client.redis, queue, raw, base + n)
    # ARQ's own enqueue with its default serializer: a pickle.
    pickle_pool = await create_pool(redis_settings(settings), default_queue_name=queue)
    try:
        pickled = await pickle_pool.enqueue_job("process_system_update", dry_run=False)
        assert pickled is not None
        ids["pickle (ARQ's default serializer)"] = pickled.job_id
    finally:
        await pickle_pool.aclose()
    bad["pickle (ARQ's default serializer)"] = (b"", "the payload is a pickle")
    assert (await client.redis.get(job_key_prefix + pickled.job_id))[:1] == b"\x80"

    # Then a valid job, and a replay of its exact bytes under another id, after it.
    valid_id = await client.enqueue_update(dry_run=True, requested_by="admin")
    valid_raw = await client.redis.get(job_key_prefix + valid_id)
    replay_id = await put_raw_job(client.redis, queue, valid_raw, now_ms() + 1)

    started = time.monotonic()
    await run_worker_burst(settings)  # one worker serves all of them, in order
    elapsed = time.monotonic() - started

    results: dict[str, str] = {}
    for name, (_, reason) in bad.items():
        state = await client.status(ids[name])
        assert state["state"] == "finished", name
        summary = assert_valid_summary(state["summary"])
        assert summary["status"] == "failed", name
        assert summary["steps"] == [], name  # the playbook never ran
        message = summary["error"]["message"]
        results[name] = message
        assert reason in message, (name, message)
        assert MARKER not in json.dumps(summary), name
    valid = assert_valid_summary((await client.status(valid_id))["summary"])
    assert valid["status"] == "successful", valid["error"]
    assert valid["request"]["dry_run"] is True
    replay = assert_valid_summary((await client.status(replay_id))["summary"])
    assert "already accepted once: a replay" in replay["error"]["message"]
    results["replay of a valid job"] = replay["error"]["message"]

    # nothing pulled, nothing recreated
    assert deployment.container_ids() == containers_before
    assert deployment.stack.docker("image", "inspect", "-f", "{{.Id}}", ref).stdout == (
        local_tag_before
    )
    # one security log line per job refused before it reached the update function
    security = [r.getMessage() for r in caplog.records if r.name == "update_executor.security"]
    for name, job_id in [*ids.items(), ("replay", replay_id)]:
        if name != "service not in the allow-list":  # that one is refused by the job itself
            assert any(line.startswith(f"job {job_id} refused") for line in security), name
    assert not any(MARKER in line for line in security)
    report = "\n".join(f"  {name}: {message}" for name, message in results.items())
    print(f"\nbad jobs and their results ({elapsed:.1f} s for the whole queue):\n{report}")


# ------------------------------------------------------------------------------ leaks
@dataclass
class LeakWatch:
    """Samples, every 100 ms while an update runs: `ps` output, the environment of every
    process except `exempt_pids`, and every file under the ue-job-* dirs (the per-job work dirs,
    holding ansible-runner's private data dir and the per-run DOCKER_CONFIG)."""

    needles: dict[str, bytes]
    exempt_pids: set[int]
    exempt_files: set[str] = field(default_factory=set)
    found: list[str] = field(default_factory=list)
    samples: int = 0
    saw_ansible: bool = False
    files_seen: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)

    def check(self, where: str, data: bytes) -> None:
        for name, needle in self.needles.items():
            if needle in data:
                self.found.append(f"{name} in {where}")

    def sample(self) -> None:
        ps = subprocess.run(["ps", "-eww", "-o", "pid=,args="], capture_output=True, check=False)
        self.samples += 1
        self.saw_ansible = self.saw_ansible or b"ansible-playbook" in ps.stdout
        self.check("ps output", ps.stdout)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in self.exempt_pids:
                continue
            try:
                self.check(f"the environment of pid {entry.name}", (entry / "environ").read_bytes())
            except OSError:
                continue
        for top in job_dirs():
            for path in walk_files(top):
                if path.name in self.exempt_files:
                    continue
                self.files_seen.add(str(path.relative_to(top)))
                try:
                    self.check(str(path), path.read_bytes())
                except OSError:
                    continue

    def run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.1)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join(timeout=30)


def job_dirs() -> list[Path]:
    """The workers' per-job dirs: ue-job-* in /tmp and in the temp dir the workers of this
    session get (conftest sets a private TMPDIR, which the worker processes inherit)."""
    tops = {Path("/tmp"), Path(tempfile.gettempdir())}
    return [path for top in sorted(tops) for path in top.glob("ue-job-*")]


def walk_files(top: Path) -> Iterator[Path]:
    """Regular files under `top` (no symlinks followed, nothing over 20 MB)."""
    for root, _dirs, files in os.walk(top):
        for name in files:
            path = Path(root) / name
            try:
                info = path.lstat()
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode) and info.st_size < 20_000_000:
                yield path


async def redis_dump(stack: Stack) -> bytes:
    """Every key and value of the test bed's Redis, as one blob."""
    # Any: redis-py types its commands Awaitable[T] | T.
    client: Any = aioredis.Redis(host=stack.redis_host, port=stack.redis_port)
    parts: list[bytes] = []
    try:
        async for key in client.scan_iter(count=1000):
            parts.append(key)
            kind = (await client.type(key)).decode()
            if kind == "string":
                parts.append(await client.get(key) or b"")
            elif kind == "zset":
                parts += [m for m, _ in await client.zrange(key, 0, -1, withscores=True)]
            elif kind == "list":
                parts += await client.lrange(key, 0, -1)
            elif kind == "hash":
                for k, v in (await client.hgetall(key)).items():
                    parts += [k, v]
            elif kind == "set":
                parts += list(await client.smembers(key))
    finally:
        await client.aclose()
    return b"\n".join(parts)


def add_registry_user(stack: Stack, username: str, password: str) -> None:
    """A second htpasswd user; distribution re-reads the file when it changes."""
    htpasswd = stack.base_dir / "registry" / "htpasswd"
    with htpasswd.open("a") as handle:
        handle.write(bcrypt_htpasswd_line(username, password) + "\n")

    def accepted() -> bool:
        import http.client

        conn = http.client.HTTPConnection(stack.registry, timeout=2)
        auth = base64.b64encode(f"{username}:{password}".encode()).decode()
        try:
            conn.request("GET", "/v2/", headers={"Authorization": f"Basic {auth}"})
            return conn.getresponse().status == 200
        finally:
            conn.close()

    wait_until(accepted, what="registry login of the new user", timeout=10)


async def update_and_wait(settings: Settings) -> dict[str, Any]:
    async with await UpdateClient.connect(settings) as client:
        job_id = await client.enqueue_update(requested_by="leak-check")
        return await client.result(job_id, timeout=200)


@pytest.mark.parametrize("source", ["files", "environment"])
def test_the_token_and_the_job_secret_leak_nowhere(
    deployment: Deployment, stack: Stack, tmp_path: Path, source: str
) -> None:
    suffix = uuid.uuid4().hex
    token = f"ghp_LEAKCANARYTOKEN{suffix}"
    job_secret = f"LEAKCANARYJOBSECRET{suffix}"
    username = f"leakcheck{suffix[:8]}"
    add_registry_user(stack, username, token)
    new_app = deployment.publish(deployment.app_repo, deployment.next_version())

    log_file = tmp_path / "worker.log"
    env = deployment.worker_env()
    env.update(REGISTRY_USERNAME=username, LOG_FILE=str(log_file))
    for name in (
        "GITHUB_TOKEN_FILE",
        "GITHUB_TOKEN",
        "UPDATE_JOB_SECRET_FILE",
        "UPDATE_JOB_SECRET",
    ):
        env.pop(name, None)
    if source == "files":
        for name, value in (("GITHUB_TOKEN_FILE", token), ("UPDATE_JOB_SECRET_FILE", job_secret)):
            path = tmp_path / name.lower()
            path.write_text(value + "\n")
            path.chmod(0o600)
            env[name] = str(path)
    else:
        env.update(GITHUB_TOKEN=token, UPDATE_JOB_SECRET=job_secret)
    settings = deployment.settings.model_copy(
        update=dict(
            registry_username=username,
            registry_token_file=None,
            job_secret=Secret(job_secret),
        )
    )
    needles = {"the token": token.encode(), "the job secret": job_secret.encode()}
    started_at = time.time()

    worker_log = tmp_path / "worker-output.log"
    with cli_worker(env, log=worker_log) as worker:
        # The worker's own environment holds what it was started with (that is the point of
        # the file variant); every process it starts must not.
        watch = LeakWatch(
            needles,
            exempt_pids={worker.pid},
            # the token handed to the playbook as a 0600 file when it only came from GITHUB_TOKEN
            exempt_files={"registry-token"} if source == "environment" else set(),
        )
        with watch.running():
            summary = asyncio.run(update_and_wait(settings))
    output = worker_log.read_bytes()
    assert_valid_summary(summary)
    assert summary["status"] == "successful", (summary["error"], output[-3000:])
    assert {s["name"]: s["status"] for s in summary["steps"]}["login"] == "changed"
    assert deployment.image_ids()["api"] == new_app

    # The sampler saw the run: ansible running, and the file of ansible-runner's private data
    # dir that holds the whole environment of the ansible process.
    assert watch.saw_ansible and watch.samples > 20
    command_file = f"/artifacts/{summary['job_id']}/command"
    assert any(name.endswith(command_file) for name in watch.files_seen), sorted(watch.files_seen)
    assert watch.found == []

    places: dict[str, bytes] = {
        "the job result": json.dumps(summary).encode(),
        "Redis": asyncio.run(redis_dump(stack)),
        "the log file": log_file.read_bytes(),
        "the worker's output": output,
    }
    assert b"step login" in places["the log file"]
    auth = base64.b64encode(f"{username}:{token}".encode())
    leftovers = [
        *job_dirs(),
        Path.home() / ".ansible",
        Path.home() / ".docker",
        stack.anonymous_docker_config,
    ]
    for top in leftovers:
        for path in walk_files(top):
            with contextlib.suppress(OSError):  # another test's job dir may go away meanwhile
                if path.stat().st_mtime >= started_at - 1:
                    places[str(path)] = path.read_bytes()
    leaks = [
        f"{what} in {where}"
        for where, data in places.items()
        for what, needle in {**needles, "the docker auth of the token": auth}.items()
        if needle in data
    ]
    assert leaks == []


# ------------------------------------------------------------------------------ Redis
@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start redis-servers with extra arguments; all are stopped at the end."""
    started: list[RedisServer] = []

    def start(*args: str, tls: bool = False, ready: Callable[[int], bool]) -> RedisServer:
        port = free_port()
        directory = tmp_path / f"redis-{port}"
        log = directory / "redis.log"
        server = RedisServer(
            directory, port, log, extra_args=args, tls=tls, ready=lambda: ready(port)
        )
        started.append(server)
        server.start()
        server.wait()
        return server

    yield start
    for server in started:
        server.stop()


def answers(**kwargs: Any) -> Callable[[int], bool]:
    """A readiness check: PING with these redis-py connection arguments."""

    def ready(port: int) -> bool:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, **kwargs)
        try:
            return bool(client.ping())
        except (OSError, redis.RedisError):
            return False
        finally:
            client.close()

    return ready


def redis_refuses(port: int, expected: type[Exception], **kwargs: Any) -> str:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, **kwargs)
    try:
        with pytest.raises(expected) as info:
            client.ping()
    finally:
        client.close()
    return str(info.value)


def queue_settings(port: int, **changes: Any) -> Settings:
    """A worker that needs no Docker for this: the job names a service outside the allow-list,
    so the round trip (sign, enqueue, verify, run, sign the result, read it) stops before any
    compose call."""
    return Settings.from_env({"LOG_FILE": ""}).model_copy(
        update=dict(
            redis_host="127.0.0.1",
            redis_port=port,
            queue_name=f"update-executor:redis-{port}",
            update_services=("api",),
            job_secret=Secret(uuid.uuid4().hex * 2),
            min_interval=0,
            **changes,
        )
    )


async def round_trip(settings: Settings) -> dict[str, Any]:
    async with await UpdateClient.connect(settings) as client:
        job_id = await client.enqueue_update(services=["frontend"])
        await run_worker_burst(settings)
        status = await client.status(job_id)
    assert status["state"] == "finished"
    summary = assert_valid_summary(status["summary"])
    assert summary["error"]["message"].startswith("services not allowed for update: frontend")
    return summary


# What the worker and the API need, and nothing else: their keys (our queue, ARQ's job,
# result, in-progress, retry and abort keys), data commands, MULTI/WATCH, the Lua release
# script of the in-flight slot, INFO (ARQ logs it at start); nothing @dangerous (FLUSHALL,
# KEYS, CONFIG, ...). docs/security.md shows the same rule.
ACL_RULE = (
    "on >{password} resetkeys ~update-executor:* ~arq:* resetchannels "
    "-@all +@read +@write +@keyspace +@transaction +@scripting +@connection -@dangerous +info"
)


def acl_args(password: str) -> list[str]:
    """redis-server arguments: the default user off, the user `updater` with ACL_RULE."""
    return [
        "--user",
        "default",
        "off",
        "--user",
        "updater",
        *ACL_RULE.format(password=password).split(),
    ]


async def test_redis_with_a_password(redis_server: Callable[..., RedisServer]) -> None:
    password = uuid.uuid4().hex
    server = redis_server("--requirepass", password, ready=answers(password=password))
    assert "Authentication required" in redis_refuses(server.port, aioredis.AuthenticationError)
    settings = queue_settings(server.port, redis_password=Secret(password))
    await round_trip(settings)
    env = {"REDIS_QUEUE_PORT": str(server.port), "REDIS_QUEUE_PASSWORD": password}
    assert redis_settings(Settings.from_env(env)).password == password


async def test_redis_with_an_acl_user(
    redis_server: Callable[..., RedisServer], tmp_path: Path
) -> None:
    password = uuid.uuid4().hex
    server = redis_server(
        *acl_args(password),
        ready=answers(username="updater", password=password),
    )
    password_file = tmp_path / "redis-password"
    password_file.write_text(password + "\n")
    env = {
        "REDIS_QUEUE_HOST": "127.0.0.1",
        "REDIS_QUEUE_PORT": str(server.port),
        "REDIS_QUEUE_USERNAME": "updater",
        "REDIS_QUEUE_PASSWORD_FILE": str(password_file),
        "UPDATE_QUEUE_NAME": f"update-executor:acl-{server.port}",
        "UPDATE_SERVICES": "api",
        "UPDATE_JOB_SECRET": uuid.uuid4().hex * 2,
        "UPDATE_MIN_INTERVAL": "0",
        "LOG_FILE": "",
    }
    await round_trip(Settings.from_env(env))
    # The ACL is narrow: no other keys, no admin commands; the default user is off.
    acl_client = aioredis.Redis(
        host="127.0.0.1", port=server.port, username="updater", password=password
    )
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            await acl_client.set("app:session:1", "x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            await acl_client.flushall()
        with pytest.raises(redis.exceptions.NoPermissionError):
            await acl_client.config_get("dir")
    finally:
        await acl_client.aclose()
    redis_refuses(server.port, aioredis.AuthenticationError)


def make_test_ca(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (openssl)."""
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=update-executor test CA")  # fmt: skip
    for name, extensions in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        (directory / f"{name}.ext").write_text(extensions)
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN=update-executor test {name}")  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-out", f"{name}.crt",
                "-extfile", f"{name}.ext")  # fmt: skip
    return {name: directory / name for name in os.listdir(directory)}


async def test_redis_over_tls_with_a_client_certificate_and_an_acl_user(
    redis_server: Callable[..., RedisServer], tmp_path: Path
) -> None:
    pki = make_test_ca(tmp_path / "pki")
    other = make_test_ca(tmp_path / "other-ca")
    password = uuid.uuid4().hex
    tls_client = {
        "ssl": True,
        "ssl_ca_certs": str(pki["ca.crt"]),
        "ssl_certfile": str(pki["client.crt"]),
        "ssl_keyfile": str(pki["client.key"]),
        "username": "updater",
        "password": password,
    }
    server = redis_server(
        "--tls-cert-file", str(pki["server.crt"]),
        "--tls-key-file", str(pki["server.key"]),
        "--tls-ca-cert-file", str(pki["ca.crt"]),
        "--tls-auth-clients", "yes",
        *acl_args(password),
        tls=True,
        ready=answers(**tls_client),
    )  # fmt: skip
    env = {
        "REDIS_QUEUE_HOST": "127.0.0.1",
        "REDIS_QUEUE_PORT": str(server.port),
        "REDIS_QUEUE_USERNAME": "updater",
        "REDIS_QUEUE_PASSWORD": password,
        "REDIS_QUEUE_SSL": "true",
        "REDIS_QUEUE_SSL_CA_FILE": str(pki["ca.crt"]),
        "REDIS_QUEUE_SSL_CERT_FILE": str(pki["client.crt"]),
        "REDIS_QUEUE_SSL_KEY_FILE": str(pki["client.key"]),
        "UPDATE_QUEUE_NAME": f"update-executor:tls-{server.port}",
        "UPDATE_SERVICES": "api",
        "UPDATE_JOB_SECRET": uuid.uuid4().hex * 2,
        "UPDATE_MIN_INTERVAL": "0",
        "LOG_FILE": "",
    }
    await round_trip(Settings.from_env(env))
    # The server is verified: a CA that did not sign its certificate is refused ...
    message = redis_refuses(
        server.port,
        aioredis.ConnectionError,
        **{**tls_client, "ssl_ca_certs": str(other["ca.crt"])},
    )
    assert "certificate verify failed" in message
    # Plain TCP to the TLS port gets nowhere; without a client certificate neither.
    redis_refuses(server.port, aioredis.ConnectionError)
    no_cert = {k: v for k, v in tls_client.items() if k not in ("ssl_certfile", "ssl_keyfile")}
    redis_refuses(server.port, aioredis.ConnectionError, **no_cert)


# ------------------------------------------------------------------------------ cool-down
async def test_an_update_inside_the_cooldown_is_refused(
    own_deployment: Deployment, own_client: UpdateClient
) -> None:
    # its own: the cool-down is per compose project
    deployment, client = own_deployment, own_client
    settings = deployment.settings.model_copy(update=dict(min_interval=60))
    first = await client.enqueue_update(run_migrations=False, services=["api"])
    await run_worker_burst(settings)
    summary = assert_valid_summary((await client.status(first))["summary"])
    assert summary["status"] == "successful", summary["error"]
    ttl = await client.redis.ttl(cooldown_key(settings))
    assert 0 < ttl <= 60

    deployment.publish(deployment.app_repo, deployment.next_version())
    before = deployment.container_ids()
    second = await client.enqueue_update(run_migrations=False, services=["api"])
    await run_worker_burst(settings)
    refused = assert_valid_summary((await client.status(second))["summary"])
    assert refused["status"] == "failed"
    assert re.search(
        r"too soon: the last update finished \d+ s ago and updates must be at least 60 s apart "
        r"\(UPDATE_MIN_INTERVAL\); try again in \d+ s",
        refused["error"]["message"],
    ), refused["error"]
    assert refused["steps"] == []
    assert deployment.container_ids() == before


# ------------------------------------------------------------------------------ start-up
def test_the_worker_refuses_to_start_without_a_secret(stack: Stack) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UPDATE_JOB_SECRET", "CRED"))}
    env.update(
        REDIS_QUEUE_HOST=stack.redis_host,
        REDIS_QUEUE_PORT=str(stack.redis_port),
        UPDATE_QUEUE_NAME=f"update-executor:startup-{uuid.uuid4().hex[:8]}",
        LOG_FILE="",
    )
    refused = subprocess.run(
        [CLI, "worker", "--burst"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 3, refused.stderr
    assert "cannot start: no job secret: set UPDATE_JOB_SECRET_FILE" in refused.stderr
    insecure = subprocess.run(
        [CLI, "worker", "--burst", "--insecure-unsigned-jobs"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert insecure.returncode == 0, insecure.stderr
    assert "WARNING update_executor.security: INSECURE: started with --insecure-unsigned-jobs" in (
        insecure.stderr
    )


# ------------------------------------------------------------------------------ systemd
def test_the_systemd_unit_is_hardened_and_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    text = UNIT.read_text()
    directives = [line.strip() for line in text.splitlines() if "=" in line and line[0] != "#"]
    for expected in (
        "User=update-executor",
        "SupplementaryGroups=docker",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "UMask=0077",
        "LoadCredential=github_token:/etc/update-executor/github_token",
        "LoadCredential=job_secret:/etc/update-executor/job_secret",
    ):
        assert expected in directives, expected
    assert any(d.startswith("ReadWritePaths=") for d in directives)
    # no secret in the unit's environment
    assert not [d for d in directives if d.startswith("Environment=") and "TOKEN" in d.upper()]
    assert not [d for d in directives if d.startswith("Environment=") and "SECRET" in d.upper()]

    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: scripts/bootstrap.sh installs the systemd package"
    # verify checks that ExecStart's binary exists; /opt/update-executor is the documented
    # install path, which this checkout is not: a copy of the unit points at our own venv.
    executable = "/opt/update-executor/.venv/bin/update-executor"
    assert f"ExecStart={executable} worker" in directives
    unit = tmp_path / "update-executor.service"
    unit.write_text(text.replace(executable, CLI))
    verify = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "update-executor" not in verify.stdout + verify.stderr


def test_the_sysusers_file_makes_a_docker_group_member(tmp_path: Path) -> None:
    sysusers = shutil.which("systemd-sysusers")
    assert sysusers, "systemd-sysusers is missing: scripts/bootstrap.sh installs systemd"
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\ndocker:x:998:\n")
    for name in ("shadow", "gshadow"):
        (etc / name).write_text("")
    conf = REPO_ROOT / "deploy" / "sysusers.d" / "update-executor.conf"
    subprocess.run(
        [sysusers, f"--root={tmp_path}", str(conf)], check=True, capture_output=True, timeout=60
    )
    passwd = (etc / "passwd").read_text()
    assert re.search(
        r"^update-executor:x:\d+:\d+:[^:]*:/var/lib/update-executor:/usr/sbin/nologin$",
        passwd,
        re.MULTILINE,
    ), passwd
    assert re.search(r"^docker:x:998:update-executor$", (etc / "group").read_text(), re.M)
