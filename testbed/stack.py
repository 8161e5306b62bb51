"""`Stack`: what a started test bed offers to tests (addresses, credentials, CLI helpers)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from testbed.procs import tail

# Variables that would point the docker CLI or compose somewhere else than the bed, or make
# compose read another file/project than the one a test names.
_STRIPPED_ENV = (
    "DOCKER_CONTEXT",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS",
    "COMPOSE_FILE",
    "COMPOSE_PROJECT_NAME",
    "COMPOSE_PROFILES",
    "COMPOSE_ENV_FILES",
)

LOG_NAMES = ("dockerd", "registry", "redis")


class CommandError(subprocess.CalledProcessError):
    """A docker/compose command failed; unlike its base class, str() shows the output."""

    def __str__(self) -> str:
        def last(text: str | bytes | None) -> str:
            if isinstance(text, bytes):
                text = text.decode("utf-8", "replace")
            return "\n".join((text or "").strip().splitlines()[-25:])

        cmd = " ".join(self.cmd) if isinstance(self.cmd, list) else str(self.cmd)
        return (
            f"command failed with exit status {self.returncode}: {cmd}\n"
            f"--- stderr (tail) ---\n{last(self.stderr)}\n"
            f"--- stdout (tail) ---\n{last(self.output)}"
        )


def docker_binary() -> str:
    """The docker CLI on PATH (Docker 28 in /usr/local/bin or Debian's 20.10 in /usr/bin)."""
    found = shutil.which("docker")
    if found is None:
        raise FileNotFoundError("docker CLI not found on PATH; run scripts/bootstrap.sh")
    return found


@dataclass(frozen=True)
class Stack:
    """A running test bed: a private dockerd, an htpasswd-protected registry and a Redis.

    `docker_config` is a DOCKER_CONFIG directory logged in to the registry (used for the bed's
    own pushes and for tests that deploy "as the operator"); `anonymous_docker_config` is an
    empty one without credentials. Neither is ever /root/.docker.
    """

    base_dir: Path
    docker_host: str  # unix:///tmp/ue-xxxxxxxx/docker.sock
    registry: str  # 127.0.0.1:PORT (loopback registries are plain HTTP for Docker)
    registry_username: str
    registry_password: str = field(repr=False)  # random per bed; kept out of reprs and logs
    redis_host: str  # 127.0.0.1
    redis_port: int
    docker_config: Path  # logged in to the registry
    anonymous_docker_config: Path  # no credentials at all

    @property
    def redis_url(self) -> str:
        """redis://127.0.0.1:PORT/0"""
        return f"redis://{self.redis_host}:{self.redis_port}/0"

    @property
    def logs_dir(self) -> Path:
        """Directory of the daemons' logs: dockerd.log, registry.log, redis.log."""
        return self.base_dir / "logs"

    def env(self, *, logged_in: bool = False) -> dict[str, str]:
        """Environment for processes that should use this bed's Docker.

        A copy of os.environ with DOCKER_HOST set to the bed's daemon and DOCKER_CONFIG set to
        the *anonymous* config (no credentials), so a process under test has to log in by
        itself, as the real worker must, and never reads /root/.docker. `logged_in=True`
        gives the bed's logged-in config instead. DOCKER_CONTEXT/TLS and COMPOSE_FILE/
        PROJECT_NAME/PROFILES/ENV_FILES are removed so they cannot redirect commands.
        """
        env = {k: v for k, v in os.environ.items() if k not in _STRIPPED_ENV}
        env["DOCKER_HOST"] = self.docker_host
        config = self.docker_config if logged_in else self.anonymous_docker_config
        env["DOCKER_CONFIG"] = str(config)
        return env

    def docker(
        self,
        *args: str,
        check: bool = True,
        logged_in: bool = False,
        input: str | None = None,  # same name as subprocess.run's
        timeout: float = 300.0,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `docker ARGS` against the bed, capture text output.

        `check=True` raises CommandError (output included in its message). `env` adds to or
        overrides `self.env(logged_in=...)`.
        """
        full_env = self.env(logged_in=logged_in)
        if env:
            full_env.update(env)
        cmd = [docker_binary(), *args]
        done = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            cwd=cwd,
            check=False,
        )
        if check and done.returncode != 0:
            raise CommandError(done.returncode, cmd, done.stdout, done.stderr)
        return done

    def compose(
        self,
        compose_file: Path,
        project: str,
        *args: str,
        check: bool = True,
        logged_in: bool = False,
        timeout: float = 600.0,
        env: Mapping[str, str] | None = None,
        input: str | None = None,  # same name as subprocess.run's
    ) -> subprocess.CompletedProcess[str]:
        """Run `docker compose -f FILE -p PROJECT ARGS` (cwd = the file's directory)."""
        return self.docker(
            "compose",
            "-f",
            str(compose_file),
            "-p",
            project,
            *args,
            check=check,
            logged_in=logged_in,
            timeout=timeout,
            env=env,
            cwd=compose_file.parent,
            input=input,
        )

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of each daemon's log, for a failing test's report."""
        parts = []
        for name in LOG_NAMES:
            path = self.logs_dir / f"{name}.log"
            parts.append(f"===== {path} =====\n{tail(path, lines)}")
        return "\n".join(parts)
