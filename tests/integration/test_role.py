"""The role compose_update as Ansible users run it (issue 13): `ansible-playbook` directly, an
inventory whose group_vars and host_vars configure it, on the real test bed. In the order of
community.docker's own integration tests: check mode, real run, idempotent re-run, then a
rollback; `--tags pull` only pulls; a second Docker daemon addressed as an inventory host with
its own `compose_update_docker_host`; several compose files and a profile."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed import Stack, build_app_image, registry_image_id
from testbed.containers import APP_PORT
from testbed.dockerd import Dockerd
from testbed.host import delete_bridges_in, reserve_bridge

REPO_ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
PROJECT = "roleapp"

BASE_FILE = f"""\
services:
  api:
    image: @APP@
    init: true
    volumes:
      - app-data:/data
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:{APP_PORT}/health"]
      interval: 1s
      timeout: 2s
      retries: 3
  worker:
    image: @APP@
    command: ["/app/work"]
    init: true
volumes:
  app-data: {{}}
"""
# A second file with a service of the profile `admin`: enabled through the inventory.
ADMIN_FILE = """\
services:
  admin:
    image: @APP@
    command: ["/app/work"]
    init: true
    profiles: [admin]
"""


@dataclass
class Site:
    stack: Stack
    base: Path
    project_dir: Path
    repo: str
    inventory: Path
    daemons: dict[str, str]  # inventory host -> DOCKER_HOST

    @property
    def app_ref(self) -> str:
        return f"{self.stack.registry}/{self.repo}:latest"

    def docker(self, host: str, *args: str) -> str:
        env = {**self.stack.env(), "DOCKER_HOST": self.daemons[host]}
        done = subprocess.run(
            ["docker", *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {done.stderr[-2000:]}")
        return done.stdout

    def compose(self, host: str, *args: str) -> str:
        return self.docker(
            host, "compose", "--project-directory", str(self.project_dir),
            "-f", str(self.project_dir / "base.yml"), "-f", str(self.project_dir / "admin.yml"),
            "--profile", "admin", "-p", PROJECT, *args,
        )  # fmt: skip

    def images(self, host: str) -> dict[str, str]:
        """{service: image ID} of the project's containers on the host's daemon."""
        found = {}
        for line in self.compose(host, "ps", "--all", "--format", "json").splitlines():
            entry = json.loads(line)
            image = self.docker(host, "inspect", "--format", "{{.Image}}", entry["ID"]).strip()
            found[entry["Service"]] = image
        return found

    def containers(self, host: str) -> dict[str, str]:
        return {
            json.loads(line)["Service"]: json.loads(line)["ID"]
            for line in self.compose(host, "ps", "--all", "--format", "json").splitlines()
        }

    def playbook(
        self, *args: str, playbook: str = "playbooks/update.yml", env: dict[str, str] | None = None
    ) -> Run:
        done = subprocess.run(
            [PLAYBOOK, "-i", str(self.inventory), playbook, *args],
            cwd=REPO_ROOT,
            env={
                **self.stack.env(),
                "ANSIBLE_STDOUT_CALLBACK": "default",
                "ANSIBLE_NOCOLOR": "1",
                **(env or {}),
            },
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
        return Run(done.returncode, done.stdout, done.stderr)

    def leftovers(self) -> list[str]:
        """Files a run may not leave behind: locks, rollback points, private Docker configs
        (not the last-update record a successful update keeps for `update-executor revert`)."""
        locks = (self.base / "locks").glob("*")
        found = [str(p) for p in locks if p.is_file() and not p.name.endswith(".last.json")]
        return found + [str(p) for p in (self.base / "work").iterdir()]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    def recap(self, host: str) -> dict[str, int]:
        match = re.search(rf"^{host}\s*:\s*(.*)$", self.stdout, re.MULTILINE)
        assert match, self.stdout[-3000:]
        return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}

    def changed_tasks(self) -> list[str]:
        """Names of the tasks that reported changed (default callback: TASK [...] then changed:)."""
        names, current = [], ""
        for line in self.stdout.splitlines():
            task = re.match(r"^TASK \[(?:compose_update : )?(.*)\] \**$", line)
            if task:
                current = task.group(1)
            elif line.startswith("changed:"):
                names.append(current)
        return names

    def explain(self) -> str:
        return f"rc={self.returncode}\n{self.stdout[-6000:]}\n{self.stderr[-2000:]}"


@contextlib.contextmanager
def second_daemon() -> Iterator[str]:
    """Another private dockerd on this machine (its own data root, socket and bridge)."""
    base = Path(tempfile.mkdtemp(prefix="ue-2d-", dir="/tmp"))
    lease = reserve_bridge()
    daemon = Dockerd(base, lease, base / "dockerd.log")
    daemon.start()
    try:
        daemon.wait()
        yield daemon.host
    finally:
        with contextlib.suppress(Exception):
            env = {"DOCKER_HOST": daemon.host, "PATH": "/usr/local/bin:/usr/bin:/bin"}
            ids = subprocess.run(
                ["docker", "ps", "-aq"], env=env, capture_output=True, text=True, check=False
            ).stdout.split()
            if ids:
                subprocess.run(["docker", "rm", "-f", *ids], env=env, check=False, timeout=120)
        daemon.stop()
        delete_bridges_in(lease.pool)
        subprocess.run(["rm", "-rf", str(base)], check=False)


@pytest.fixture(scope="module")
def site(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("role")
    repo = "role/app"
    build_app_image(stack, repo, "1")
    project_dir = base / "app"
    project_dir.mkdir()
    app = f"{stack.registry}/{repo}:latest"
    (project_dir / "base.yml").write_text(BASE_FILE.replace("@APP@", app))
    (project_dir / "admin.yml").write_text(ADMIN_FILE.replace("@APP@", app))
    token = base / "registry-token"
    token.write_text(stack.registry_password)
    token.chmod(0o600)
    (base / "work").mkdir()
    with second_daemon() as other:
        inventory = base / "inventory"
        (inventory / "group_vars").mkdir(parents=True)
        (inventory / "host_vars").mkdir()
        (inventory / "hosts").write_text("[docker_hosts]\nbed\nsecond\n")
        group_vars = {
            # Both "hosts" are this machine; each has its own Docker daemon (host_vars).
            "ansible_connection": "local",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "compose_update_project_src": str(project_dir),
            "compose_update_compose_files": ["base.yml", "admin.yml"],
            "compose_update_profiles": ["admin"],
            "compose_update_project_name": PROJECT,
            "compose_update_registry_url": stack.registry,
            "compose_update_registry_username": stack.registry_username,
            "compose_update_registry_token_file": str(token),
            "compose_update_migration_command": "/app/migrate",
            "compose_update_health_timeout": 60,
            "compose_update_lock_dir": str(base / "locks"),
            "compose_update_work_dir": str(base / "work"),
        }
        (inventory / "group_vars" / "docker_hosts.yml").write_text(json.dumps(group_vars))
        daemons = {"bed": stack.docker_host, "second": other}
        for host, address in daemons.items():
            (inventory / "host_vars" / f"{host}.yml").write_text(
                json.dumps({"compose_update_docker_host": address})
            )
        made = Site(stack, base, project_dir, repo, inventory, daemons)
        # Version 1 on both daemons (the second one pulls it from the registry).
        made.docker("second", "--config", str(stack.docker_config), "pull", app)
        for host in daemons:
            made.compose(host, "up", "--detach", "--wait")
        try:
            yield made
        finally:
            for host in daemons:
                with contextlib.suppress(AssertionError):
                    made.compose(host, "down", "--volumes", "--timeout", "1")


def test_check_run_again_and_rollback_on_one_host(site: Site) -> None:
    before_images, before_containers = site.images("bed"), site.containers("bed")
    assert set(before_images) == {"api", "worker", "admin"}  # the profile's service is there
    build_app_image(site.stack, site.repo, "2", registry_only=True)
    new = registry_image_id(site.stack, site.repo)

    # Check mode with --diff: the plan, and nothing changed on the daemon or on disk.
    check = site.playbook("--check", "--diff", "-e", "update_hosts=bed")
    assert check.returncode == 0, check.explain()
    assert site.images("bed") == before_images
    assert site.containers("bed") == before_containers
    assert site.leftovers() == []
    for service in ("api", "worker", "admin"):
        assert f"{service}: {before_images[service]}" in check.stdout  # --diff: what runs now

    # The real run: every target on the new image, migrated.
    run = site.playbook("-e", "update_hosts=bed")
    assert run.returncode == 0, run.explain()
    assert set(site.images("bed").values()) == {new}
    assert site.leftovers() == []
    assert "Recreate | Recreate the long-running target services" in " ".join(run.changed_tasks())
    migrated = site.compose("bed", "exec", "-T", "api", "cat", "/data/migrations.log")
    assert "migrated 2" in migrated

    # Again: nothing to do, and nothing reported as changed (the lock and the login's private
    # credentials are the run's bookkeeping, gone at its end).
    again = site.playbook("-e", "update_hosts=bed")
    assert again.returncode == 0, again.explain()
    assert again.changed_tasks() == []
    assert again.recap("bed")["changed"] == 0
    assert set(site.images("bed").values()) == {new}

    # A broken version: the update fails and the role rolls back to the version before.
    build_app_image(site.stack, site.repo, "3", "crash", registry_only=True)
    running = site.containers("bed")
    broken = site.playbook("-e", "update_hosts=bed")
    assert broken.returncode != 0
    assert "Recreate failed" in broken.stdout
    assert "Rolled back: " in broken.stdout, broken.explain()
    after = site.images("bed")
    assert after["api"] == after["worker"] == new
    assert site.leftovers() == []
    assert running.keys() == site.containers("bed").keys()

    # The broken version stays in the registry: put the good one back for the next tests.
    site.docker("bed", "tag", new, site.app_ref)
    build_app_image(site.stack, site.repo, "2b")


def test_tags_pull_only_pulls(site: Site) -> None:
    build_app_image(site.stack, site.repo, "4", registry_only=True)
    newest = registry_image_id(site.stack, site.repo)
    before_images, before_containers = site.images("bed"), site.containers("bed")
    pulled = site.playbook("--tags", "pull", "-e", "update_hosts=bed")
    assert pulled.returncode == 0, pulled.explain()
    assert site.containers("bed") == before_containers
    assert site.images("bed") == before_images
    # Pulled: the reference now names the new image, the containers still run the old one.
    local = site.docker("bed", "image", "inspect", "--format", "{{.Id}}", site.app_ref).strip()
    assert local == newest
    assert not [t for t in pulled.changed_tasks() if t.startswith(("Recreate", "Migrations"))]
    assert site.leftovers() == []


@dataclass
class UserCompose:
    """Compose installed in a user's docker config (`cli-plugins/docker-compose`, the manual
    install): a wrapper that records its calls and runs the system's Compose."""

    config: Path
    calls: Path
    wrapper: Path


@dataclass
class BothDaemons:
    """A new version on the second daemon alone, then on both in one run (the bed catches up)
    with the user's Compose of `UserCompose`: what the two tests below read."""

    newest: str
    bed_before: dict[str, str]  # the bed's containers before the run on the second daemon
    second_before: dict[str, str]
    second_run: Run
    bed_after_second_run: dict[str, str]
    second_after_second_run: dict[str, str]
    both: Run
    user_compose: UserCompose


@pytest.fixture(scope="module")
def both_daemons(site: Site, tmp_path_factory: pytest.TempPathFactory) -> BothDaemons:
    """One update of the second daemon and one of both, shared by the second daemon's test and
    the per-user Compose test (each needs a real run with a new image on the bed; one run
    serves both, issue 22)."""
    base = tmp_path_factory.mktemp("user-compose")
    config = base / "docker-config"
    plugins = config / "cli-plugins"
    plugins.mkdir(parents=True)
    calls = base / "calls.log"
    system_compose = "/usr/local/lib/docker/cli-plugins/docker-compose"
    wrapper = plugins / "docker-compose"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >>{calls}\nexec {system_compose} "$@"\n')
    wrapper.chmod(0o755)

    build_app_image(site.stack, site.repo, "5", registry_only=True)
    newest = registry_image_id(site.stack, site.repo)
    bed_before = site.containers("bed")
    second_before = site.images("second")
    second_run = site.playbook("-e", "update_hosts=second")
    bed_after_second_run = site.containers("bed")
    second_after_second_run = site.images("second")
    both = site.playbook("-e", "update_hosts=docker_hosts", env={"DOCKER_CONFIG": str(config)})
    return BothDaemons(
        newest,
        bed_before,
        second_before,
        second_run,
        bed_after_second_run,
        second_after_second_run,
        both,
        UserCompose(config, calls, wrapper),
    )


def test_a_second_daemon_is_an_inventory_host_of_its_own(
    site: Site, both_daemons: BothDaemons
) -> None:
    newest, run = both_daemons.newest, both_daemons.second_run
    assert run.returncode == 0, run.explain()
    assert (
        set(both_daemons.second_after_second_run.values())
        == {newest}
        != set(both_daemons.second_before.values())
    )
    # the other daemon was not touched
    assert both_daemons.bed_after_second_run == both_daemons.bed_before
    # Both daemons in one run: the bed catches up, the second one has nothing to do.
    both = both_daemons.both
    assert both.returncode == 0, both.explain()
    assert set(site.images("bed").values()) == {newest}
    assert both.recap("second")["changed"] == 0
    assert site.leftovers() == []


def test_a_compose_installed_per_user_is_the_one_the_pull_runs(
    site: Site, both_daemons: BothDaemons
) -> None:
    """Compose installed in the user's docker config (`cli-plugins/docker-compose`, the manual
    install) is found by every step, the pull included, although the pull runs with the run's
    private DOCKER_CONFIG (the login's credentials): the login links the directory into it. The
    per-user plugin here is a wrapper that records its calls and runs the system's Compose; the
    run is `both_daemons`' run on both daemons, which pulls the new version for the bed."""
    user = both_daemons.user_compose
    run = both_daemons.both
    assert run.returncode == 0, run.explain()
    assert set(site.images("bed").values()) == {both_daemons.newest}
    pulls = [line for line in user.calls.read_text().splitlines() if " pull " in f" {line} "]
    assert pulls, user.calls.read_text()  # the pull ran the user's Compose, not the system's
    assert site.leftovers() == []  # the private config (and the link in it) is gone
    assert user.wrapper.exists()  # the link was removed, not what it points to
