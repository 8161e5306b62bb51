"""The machine a run was made on, for the report."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from testbed.stack import Stack


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError):
        pass
    return 0.0


def _output(argv: list[str], env: dict[str, str]) -> str:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=30, check=False
        )
    except OSError as exc:
        return f"unavailable ({exc.strerror})"
    return done.stdout.strip() or done.stderr.strip()[:80]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _collection_version(name: str) -> str:
    try:
        import ansible_collections  # type: ignore[import-untyped]  # noqa: PLC0415
    except ImportError:
        return "not installed"
    for base in ansible_collections.__path__:
        manifest = Path(base) / name.replace(".", "/") / "MANIFEST.json"
        if manifest.is_file():
            import json  # noqa: PLC0415

            return str(json.loads(manifest.read_text())["collection_info"]["version"])
    return "not installed"


def machine_info(stack: Stack) -> dict[str, str | int | float]:
    env = stack.env()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 0,
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": sys.version.split()[0],
        "docker_client": _output(["docker", "version", "--format", "{{.Client.Version}}"], env),
        "docker_engine": _output(["docker", "version", "--format", "{{.Server.Version}}"], env),
        "compose": _output(["docker", "compose", "version", "--short"], env),
        "ansible_core": _version("ansible-core"),
        "community_docker": _collection_version("community.docker"),
        "ansible_runner": _version("ansible-runner"),
        "arq": _version("arq"),
        "redis_py": _version("redis"),
    }


def code_fingerprint(root: Path) -> dict[str, str]:
    """What code was measured: HEAD, whether the tree is dirty, and a hash of the files that
    decide an update's cost (worker/, playbooks/, inventory/, ansible.cfg), so a run can tell
    when they changed under it (others may work in the same tree)."""
    areas = {
        "worker": list(root.glob("worker/**/*.py")),
        "playbooks": [
            *root.glob("playbooks/**/*"),
            *root.glob("inventory/*"),
            root / "ansible.cfg",
        ],
    }
    hashes = {}
    for area, files in areas.items():
        digest = hashlib.sha256()
        # Not the bytecode ansible writes next to the role's plugins while the run goes on.
        for path in sorted(p for p in files if p.is_file() and "__pycache__" not in p.parts):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
        hashes[f"{area}_sha256"] = digest.hexdigest()[:16]
    env = dict(os.environ)
    head = _output(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], env)
    status = _output(
        ["git", "-C", str(root), "status", "--porcelain", "--", "worker", "playbooks"], env
    )
    return {
        "head": head,
        "dirty": "yes" if status else "no",
        **hashes,
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()
