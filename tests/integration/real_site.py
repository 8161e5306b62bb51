"""A deployment shaped like the application this executor was made for (testbed/real_shape.py),
brought up "by the operator" from a clean shell, and a real worker process configured as on
that host: its settings use the names the project's `.env` uses (issue 12)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testbed import Stack, build_app_image, container_ids, registry_image_id, running_image_ids
from testbed.faults import operator_run
from testbed.real_shape import MIGRATION_COMMAND, RealShapedProject, write_real_shaped_project
from testbed.siteenv import site_environment
from testbed.stack import docker_binary
from tests.integration.conftest import CLI, cli_worker
from worker.host.settings import Settings

_counter = itertools.count(1)
# Labels that name the container a new one replaced: the only label that differs between two
# containers made from one configuration.
VOLATILE_LABELS = ("com.docker.compose.replace",)


@dataclass
class RealSite:
    stack: Stack
    shape: RealShapedProject
    backend_repo: str
    frontend_repo: str
    env: dict[str, str]  # the worker's environment (systemd's EnvironmentFile, as on the host)

    @property
    def project(self) -> str:
        return self.shape.project

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def clean_env(self) -> dict[str, str]:
        """A clean operator shell: PATH, HOME and the bed's Docker, nothing else."""
        return {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "DOCKER_HOST": self.stack.docker_host,
            "DOCKER_CONFIG": str(self.stack.anonymous_docker_config),
        }

    def clean_compose(self, *args: str) -> str:
        """`docker compose -f docker-compose.prod.yml ARGS` from a clean shell, in the project."""
        done = subprocess.run(
            [docker_binary(), "compose", "-f", self.shape.compose_file.name, *args],
            cwd=self.shape.directory,
            env=self.clean_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def container_ids(self) -> dict[str, str]:
        return container_ids(self.stack, self.project)

    def image_ids(self) -> dict[str, str]:
        return running_image_ids(self.stack, self.project)

    def inspect(self, service: str) -> dict[str, Any]:
        cid = self.container_ids()[service]
        data: dict[str, Any] = json.loads(self.stack.docker("inspect", cid).stdout)[0]
        return data

    def env_of(self, service: str) -> dict[str, str]:
        pairs = (item.split("=", 1) for item in self.inspect(service)["Config"]["Env"])
        return {name: value for name, value in pairs}

    def configuration(self, service: str) -> dict[str, Any]:
        """What an update must not change: environment, mounts, labels, ports, name, command."""
        data = self.inspect(service)
        return {
            "env": sorted(data["Config"]["Env"]),
            "mounts": sorted(
                (m["Type"], m.get("Name") or m["Source"], m["Destination"], m["RW"])
                for m in data["Mounts"]
            ),
            "labels": {
                k: v for k, v in data["Config"]["Labels"].items() if k not in VOLATILE_LABELS
            },
            "ports": data["HostConfig"]["PortBindings"],
            "name": data["Name"],
            "cmd": data["Config"]["Cmd"],
            "restart": data["HostConfig"]["RestartPolicy"],
            "networks": sorted(data["NetworkSettings"]["Networks"]),
        }

    def publish(self, repo: str, version: str, behaviour: str = "healthy") -> str:
        build_app_image(self.stack, repo, version, behaviour, registry_only=True)
        return registry_image_id(self.stack, repo)

    def assert_configuration_is_the_operators(self, services: list[str]) -> None:
        """Each service's container is configured as `docker compose up` from a clean shell
        configures one for the same images: recreate them so and compare. The other services'
        containers stay as they are."""
        before = {name: self.configuration(name) for name in services}
        others = {k: v for k, v in self.container_ids().items() if k not in services}
        self.clean_compose(
            "up", "--detach", "--no-deps", "--pull", "never", "--no-build", "--force-recreate",
            "--wait", *services,
        )  # fmt: skip
        after = {name: self.configuration(name) for name in services}
        for name in services:
            assert before[name] == after[name], name
        assert {k: v for k, v in self.container_ids().items() if k not in services} == others

    def ansible_playbook(self, *extra: str) -> subprocess.CompletedProcess[str]:
        """A manual run, as an operator configures it: the worker's settings as the role's
        variables in the inventory's group_vars, none of them in the shell's environment."""
        repo_root = Path(__file__).resolve().parents[2]
        playbook = str(Path(CLI).parent / "ansible-playbook")
        inventory, shell = operator_run(self.env)
        return subprocess.run(
            [playbook, "-i", str(inventory), "playbooks/update.yml", *extra],
            cwd=repo_root,
            env=shell,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    @contextlib.contextmanager
    def worker(self, **env: str) -> Iterator[subprocess.Popen[str]]:
        """`update-executor worker` with the host's environment; stopped at the end."""
        with cli_worker({**self.env, **env}, tail=6000) as process:
            yield process


@pytest.fixture
def real_site(stack: Stack, tmp_path: Path) -> Iterator[RealSite]:
    n = next(_counter)
    # The directory's name is the project's (no `name:` in the file, as in the real one).
    directory = tmp_path / f"fica{n}{secrets.token_hex(2)}"
    backend_repo, frontend_repo = f"fica{n}/backend", f"fica{n}/frontend"
    build_app_image(stack, backend_repo, "1")
    build_app_image(stack, frontend_repo, "1")
    shape = write_real_shaped_project(
        stack, directory, backend_repo=backend_repo, frontend_repo=frontend_repo
    )
    token_file = tmp_path / "registry-token"
    token_file.write_text(stack.registry_password)
    token_file.chmod(0o600)
    job_secret_file = tmp_path / "job-secret"
    job_secret_file.write_text(secrets.token_hex(32))
    job_secret_file.chmod(0o600)
    # The worker's settings, as on the host: the same names as the project's .env, other values.
    env = {
        **stack.env(),
        **site_environment(
            stack,
            queue=f"update-executor:test:{shape.project}",
            compose_file=shape.compose_file,
            token_file=token_file,
            job_secret_file=job_secret_file,
            lock_dir=tmp_path / "locks",
            migration_command=MIGRATION_COMMAND,
            job_timeout=300,
            # Left in the environment file next to the file setting (the file wins for the
            # login).
            GITHUB_TOKEN="token-from-the-worker-environment",
            BACKUP_DIR=str(tmp_path / "backups"),
        ),
    }
    site = RealSite(stack, shape, backend_repo, frontend_repo, env)
    site.clean_compose("up", "--detach", "--wait")
    yield site
    subprocess.run(
        [docker_binary(), "compose", "-f", shape.compose_file.name, "down", "--volumes", "-t", "1"],
        cwd=directory,
        env=site.clean_env(),
        capture_output=True,
        check=False,
        timeout=120,
    )
