"""The project as users install it: its wheel and the wheels of its dependencies.

`build_wheelhouse(dest)` builds update-executor's wheel from a copy of the distribution's
files (nothing is written into the checkout) and fetches the wheels of its dependencies and
of its `worker` and `api` extras, so that `pip install --no-index --find-links DEST
'update-executor[worker]'` (or `[api]`) works where PyPI cannot be reached (the systemd
container) and does not depend on the checkout (a fresh venv).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from testbed.procs import TestBedError

REPO_ROOT = Path(__file__).resolve().parent.parent
# What the sdist of the project would hold: enough to build the wheel (pyproject.toml's
# package-dir maps the Ansible content into worker/ansible_content/).
DIST_FILES = (
    "pyproject.toml",
    "README.md",
    "ansible.cfg",
    "worker",
    "playbooks",
    "inventory",
    "collections",
)
WHEEL_GLOB = "update_executor-*.whl"
# The wheelhouse holds what both installs need: the host's `[worker]`, an app image's `[api]`.
EXTRAS = "worker,api"


def _copy_sources(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in DIST_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            # symlinks=False: a link in the Ansible content would be copied as a link; a build from
            # copies shows that the wheel carries working files, not links.
            shutil.copytree(source, dest / name, ignore=ignore)
        else:
            shutil.copy2(source, dest / name)


def _pip(*args: str, timeout: float) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()
        raise TestBedError(f"pip {args[0]} failed:\n" + "\n".join(output[-30:]))


def build_wheelhouse(dest: Path) -> Path:
    """Fill `dest` with the project's wheel and its dependencies'; return the project's wheel.

    The dependencies come from pip's cache (or PyPI, which the machine reaches) as the
    virtualenv's install did; their wheels are built where PyPI only has an sdist.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ue-src-") as tmp:
        source = Path(tmp) / "update-executor"
        source.mkdir()
        _copy_sources(source)
        _pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest), str(source), timeout=600)
        wheels = sorted(dest.glob(WHEEL_GLOB))
        if len(wheels) != 1:
            raise TestBedError(f"expected one {WHEEL_GLOB} in {dest}, found {wheels}")
        _pip(
            "wheel",
            "--quiet",
            "--wheel-dir",
            str(dest),
            "--find-links",
            str(dest),
            f"{wheels[0]}[{EXTRAS}]",
            timeout=1200,
        )
    return wheels[0]


def complete_for_python(dest: Path, python: Path = Path("/usr/bin/python3")) -> None:
    """Add the wheels another interpreter needs to install from `dest`: dependencies resolve
    differently by version (redis needs async-timeout below Python 3.11.3, e.g. Debian 12's
    3.11.2, while this venv's may be newer). pip's --python-version does not set the
    python_full_version marker, so the resolution runs with that interpreter's own pip."""
    wheels = sorted(dest.glob(WHEEL_GLOB))
    with tempfile.TemporaryDirectory(prefix="ue-pip-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([str(python), "-m", "venv", str(venv)], check=True, timeout=300)
        pip = [str(venv / "bin" / "pip"), "wheel", "--quiet", "--wheel-dir", str(dest)]
        done = subprocess.run(
            [*pip, "--find-links", str(dest), f"{wheels[-1]}[worker]"],
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()
        raise TestBedError(f"pip wheel with {python} failed:\n" + "\n".join(output[-30:]))
