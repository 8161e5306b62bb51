"""One benchmark deployment: a compose project on the bed, its registry images, and the
untimed chores between measured runs (publish a new version, roll back to the old one)."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.project import MIGRATION_COMMAND, MIGRATION_SERVICE, StackShape, write_stack
from testbed import build_app_image, registry_image_id, running_image_ids
from testbed.stack import Stack

logger = logging.getLogger("bench.deployment")

ROLLBACK_TIMEOUT_S = 120.0


class StateError(RuntimeError):
    """The deployment is not in the state a measured run must start from."""


@dataclass
class Deployment:
    stack: Stack
    project: str  # also the registry namespace of its images
    shape: StackShape
    directory: Path
    compose_file: Path = field(init=False)
    token_file: Path = field(init=False)
    job_secret_file: Path = field(init=False)
    published: int = 0  # versions published so far (1 = the deployed one)

    def __post_init__(self) -> None:
        self.compose_file = self.directory / "docker-compose.prod.yml"
        self.token_file = self.directory / "registry-token"
        self.job_secret_file = self.directory / "job-secret"

    # ------------------------------------------------------------------ names
    @property
    def targets(self) -> list[str]:
        return self.shape.target_names(self.project)

    @property
    def repos(self) -> list[str]:
        return self.shape.repos(self.project)

    @property
    def migration_service(self) -> str:
        return MIGRATION_SERVICE

    @property
    def migration_command(self) -> str:
        return MIGRATION_COMMAND

    def ref(self, repo: str) -> str:
        return f"{self.stack.registry}/{repo}:latest"

    def service_repos(self) -> dict[str, str]:
        return {s.name: s.repo for s in self.shape.services(self.project) if s.repo is not None}

    def env(self) -> dict[str, str]:
        """Environment of the bed (DOCKER_HOST, anonymous DOCKER_CONFIG)."""
        return self.stack.env()

    # ------------------------------------------------------------------ lifecycle
    def deploy(self) -> None:
        """Build and push version 1 of every registry image, write the stack, `up --wait`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(self.stack.registry_password)
        self.token_file.chmod(0o600)
        # The API and the worker share it (jobs are signed); the client reads the same file.
        self.job_secret_file.write_text(secrets.token_hex(32))
        self.job_secret_file.chmod(0o600)
        for repo in self.repos:
            build_app_image(self.stack, repo, self._version(repo, 1))
        self.published = 1
        write_stack(self.stack, self.directory, self.project, self.shape)
        self.compose("up", "-d", "--wait", timeout=300)
        logger.info(
            "deployed %s: %d services, targets %s",
            self.project,
            self.shape.total,
            ",".join(self.targets),
        )

    def down(self) -> None:
        self.compose("down", "--volumes", "--timeout", "1", check=False)

    def compose(
        self, *args: str, check: bool = True, timeout: float = 600.0
    ) -> subprocess.CompletedProcess[str]:
        return self.stack.compose(
            self.compose_file, self.project, *args, check=check, timeout=timeout
        )

    # ------------------------------------------------------------------ state
    def running(self) -> dict[str, str]:
        """Service -> image ID of its container."""
        return running_image_ids(self.stack, self.project)

    def image_ids(self) -> set[str]:
        out = self.stack.docker("images", "-aq", "--no-trunc").stdout.split()
        return set(out)

    def _version(self, repo: str, number: int) -> str:
        # Distinct per repository, so no two images share their top layers.
        return f"{number}.{repo.rsplit('/', 1)[-1]}"

    def publish(self) -> None:
        """Push a new version of every registry image to the registry only (as CI would)."""
        self.published += 1
        for repo in self.repos:
            build_app_image(
                self.stack, repo, self._version(repo, self.published), registry_only=True
            )

    def registry_is_current(self) -> bool:
        """True when a pull would bring nothing new: the registry serves the running images."""
        running = self.running()
        return all(
            registry_image_id(self.stack, repo) == running[service]
            for service, repo in self.service_repos().items()
        )

    def push_running(self) -> None:
        """Make the registry serve exactly what runs (for the case with nothing new)."""
        for service, repo in self.service_repos().items():
            image_id = self.running()[service]
            self.stack.docker("tag", image_id, self.ref(repo))
            self.stack.docker("push", self.ref(repo), logged_in=True, timeout=300)

    def roll_back(self, baseline: dict[str, str], images_before: set[str]) -> None:
        """Run `baseline` again and delete what the measured run pulled, so the next way starts
        from the same state and has to download the new version again."""
        for service, repo in self.service_repos().items():
            self.stack.docker("tag", baseline[service], self.ref(repo))
        self.compose("up", "-d", "--wait", "--no-deps", *self.targets, timeout=ROLLBACK_TIMEOUT_S)
        pulled = sorted(self.image_ids() - images_before)
        if pulled:
            self.stack.docker("image", "rm", "--force", *pulled, check=False)
        self.expect_running(baseline)

    def expect_running(self, baseline: dict[str, str]) -> None:
        now = self.running()
        wrong = [s for s in self.targets if now.get(s) != baseline.get(s)]
        if wrong:
            raise StateError(f"{self.project}: {', '.join(wrong)} do not run the baseline image")

    def expect_updated(self, baseline: dict[str, str], *, changed: bool) -> None:
        """After a measured run: every target runs a new image (or, with nothing new, the
        same one)."""
        now = self.running()
        if changed:
            stale = [s for s in self.targets if now.get(s) == baseline.get(s)]
            if stale:
                raise StateError(f"{self.project}: {', '.join(stale)} were not updated")
        else:
            self.expect_running(baseline)

    def temp_docker_config(self, name: str) -> Path:
        """A fresh, empty DOCKER_CONFIG directory (A and B log in into it)."""
        path = self.directory / f"docker-config-{name}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(mode=0o700)
        return path

    def worker_env(self, queue: str) -> dict[str, str]:
        """The worker's configuration, as an operator would write its EnvironmentFile."""
        return {
            "REDIS_QUEUE_HOST": self.stack.redis_host,
            "REDIS_QUEUE_PORT": str(self.stack.redis_port),
            "UPDATE_QUEUE_NAME": queue,
            "COMPOSE_FILE_PATH": str(self.compose_file),
            "COMPOSE_PROJECT_NAME": self.project,
            "REGISTRY_URL": self.stack.registry,
            "REGISTRY_USERNAME": self.stack.registry_username,
            "GITHUB_TOKEN_FILE": str(self.token_file),
            "UPDATE_JOB_SECRET_FILE": str(self.job_secret_file),
            "MIGRATION_SERVICE": self.migration_service,
            "MIGRATION_COMMAND": self.migration_command,
            "HEALTH_TIMEOUT": "60",
            "JOB_TIMEOUT": "600",
            "LOG_FILE": "",
            # The product refuses updates less than 60 s apart by default; the rounds are not.
            "UPDATE_MIN_INTERVAL": "0",
        }


def bench_path_env() -> dict[str, str]:
    """PATH with this interpreter's bin directory first (ansible-playbook, update-executor)."""
    bin_dir = str(Path(sys.executable).parent)
    return {"PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}
