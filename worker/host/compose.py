"""Read-only questions the worker asks Docker before it runs anything.

The playbook does the real work; these calls only tell the worker which services a job may
choose from, and whether the host has what the playbook needs.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

from .settings import ANSIBLE_CONTENT, Settings

logger = logging.getLogger("update_executor.compose")

PROBE_TIMEOUT_S = 60


class ComposeError(RuntimeError):
    """A docker or compose command failed; the message says how."""


@dataclass(frozen=True)
class CommandResult:
    rc: int
    stdout: str
    stderr: str


# The one definition of the environment docker and compose run with, shared with the role
# (the installed package's copy from a wheel: PROJECT_ROOT is site-packages there).
ENV_MODULE = (
    ANSIBLE_CONTENT
    / "playbooks"
    / "roles"
    / "compose_update"
    / "module_utils"
    / "update_executor_env.py"
)


@cache
def _environment_builder() -> Callable[..., dict[str, str]]:
    spec = importlib.util.spec_from_file_location("update_executor_env", ENV_MODULE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {ENV_MODULE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return cast(Callable[..., dict[str, str]], module.compose_environment)


def compose_environment(
    environ: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What an operator's shell gives docker compose for the project: PATH, HOME, the Docker
    connection and locale variables, the COMPOSE_ENV_PASSTHROUGH names; never the worker's own
    settings, which compose would interpolate into the deployment's configuration (see
    playbooks/roles/compose_update/module_utils/update_executor_env.py)."""
    return _environment_builder()(os.environ if environ is None else environ, extra)


async def run_command(
    *args: str, timeout: float = PROBE_TIMEOUT_S, env: Mapping[str, str] | None = None
) -> CommandResult:
    """Run a command without a shell, with `env` (default: compose_environment()); kill it
    when it overruns or we are cancelled."""
    try:
        process = await asyncio.create_subprocess_exec(
            *args,
            env=compose_environment() if env is None else dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise ComposeError(f"cannot run {args[0]}: {exc.strerror}") from exc
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError):
        process.kill()
        await process.wait()
        raise
    return CommandResult(
        process.returncode or 0, stdout.decode(errors="replace"), stderr.decode(errors="replace")
    )


def compose_args(settings: Settings) -> list[str]:
    args = ["docker", "compose", "-f", str(settings.compose_file)]
    if settings.compose_project_name:
        args += ["-p", settings.compose_project_name]
    return args


async def compose_config(settings: Settings) -> dict[str, Any]:
    """The deployment's compose file as compose resolves it (interpolation, env files)."""
    if not settings.compose_file.is_file():
        raise ComposeError(f"compose file {settings.compose_file} does not exist")
    try:
        result = await run_command(*compose_args(settings), "config", "--format", "json")
    except TimeoutError as exc:
        raise ComposeError("docker compose config did not answer in time") from exc
    if result.rc != 0:
        raise ComposeError(f"docker compose config failed: {result.stderr.strip()[-500:]}")
    config: dict[str, Any] = json.loads(result.stdout)
    return config


async def check_host() -> list[str]:
    """What is missing for the playbook to run: docker compose v2 and community.docker."""
    problems: list[str] = []
    try:
        compose = await run_command("docker", "compose", "version", "--short", timeout=30)
    except (ComposeError, TimeoutError) as exc:
        problems.append(f"docker compose v2 is not available: {exc}")
    else:
        version = compose.stdout.strip().lstrip("v")
        if compose.rc != 0 or not version.startswith("2."):
            problems.append(
                "docker compose v2 is not available (install the Compose v2 CLI plugin): "
                + (compose.stderr.strip() or version or "no version")[-300:]
            )
    try:
        galaxy = await run_command(
            venv_tool("ansible-galaxy"),
            "collection",
            "list",
            "community.docker",
            "--format",
            "json",
            timeout=60,
            env=os.environ,  # ansible's own settings (ANSIBLE_COLLECTIONS_PATH) count here
        )
    except (ComposeError, TimeoutError) as exc:
        problems.append(f"ansible-galaxy is not available: {exc}")
    else:
        versions = _collection_versions(galaxy.stdout) if galaxy.rc == 0 else []
        if not any(_major(v) >= 4 for v in versions):
            problems.append(
                "the Ansible collection community.docker >= 4.0 is not installed "
                f"(found: {', '.join(versions) or 'none'}); install the `ansible` package or "
                "`ansible-galaxy collection install -r collections/requirements.yml`"
            )
    return problems


def _collection_versions(listing: str) -> list[str]:
    try:
        data = json.loads(listing or "{}")
    except ValueError:
        return []
    return [
        str(info.get("version", ""))
        for path in data.values()
        for name, info in path.items()
        if name == "community.docker"
    ]


def _major(version: str) -> int:
    try:
        return int(version.split(".", maxsplit=1)[0])
    except ValueError:
        return 0


def venv_tool(name: str) -> str:
    """A console script of the worker's own virtualenv when there is one, else from PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name
