"""The package's layout (issue 14): worker/shared/ (both sides), worker/host/ (the worker on
the host) and worker/api/ (the router and the CLI), imports in one direction only, no
cycles, and an API side that loads neither Ansible nor the worker's other dependencies.

The import graph comes from the source (every `import` statement, also those inside
functions), so a lazy import cannot hide a wrong direction or a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "worker"
SIDES = ("shared", "host", "api")
# What each part may import of the package. `worker` (the package root: __version__) and
# worker.command (the `update-executor` entry point, which starts the host side only for
# `update-executor worker`) sit above the parts.
ALLOWED = {
    "shared": {"worker", "shared"},
    "api": {"worker", "shared", "api"},
    "host": {"worker", "shared", "host"},
}
# Third-party modules only the worker installs ([worker] extra), never on the API side.
HOST_ONLY_THIRD_PARTY = ("ansible", "ansible_runner", "ptyprocess", "requests", "apprise")
HOST_ONLY_THIRD_PARTY_MODULES = ("prometheus_client", "arq.worker")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if "ansible_content" not in path.parts
    }


def imports_of(name: str, path: Path) -> Iterator[str]:
    """Every module `path` imports (absolute names; `from x import y` gives x and x.y)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names)


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {target for target in imports_of(name, path) if target in known and target != name}
        for name, path in known.items()
    }


def side_of(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in SIDES else parts[-1]


def test_every_module_sits_in_one_part() -> None:
    top_level = {name for name in modules() if side_of(name) not in SIDES}
    assert top_level == {"worker", "worker.command", "worker.__main__"}


@pytest.mark.parametrize("side", SIDES)
def test_imports_go_one_way(side: str) -> None:
    """shared imports nothing of host or api; api nothing of host; host nothing of api."""
    wrong = {
        f"{name} imports {target}"
        for name, targets in graph().items()
        if side_of(name) == side
        for target in targets
        if side_of(target) not in ALLOWED[side] and target != "worker"
    }
    assert not wrong


@pytest.mark.parametrize("side", ["shared", "api"])
def test_the_api_side_imports_no_worker_dependency(side: str) -> None:
    found = {
        f"{name} imports {target}"
        for name, path in modules().items()
        if side_of(name) == side
        for target in imports_of(name, path)
        if target.split(".")[0] in HOST_ONLY_THIRD_PARTY
        or any(target == m or target.startswith(m + ".") for m in HOST_ONLY_THIRD_PARTY_MODULES)
    }
    assert not found


def test_no_import_cycles() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    # The package root's `__init__` is imported by every module on the way in: not a cycle.
    cycles = [cycle for cycle in cycles if "worker" not in cycle]
    assert not cycles


def test_the_graph_sees_relative_and_lazy_imports() -> None:
    """The checks above are only as good as the graph: it resolves `..shared.x` and
    imports inside functions (worker.command's lazy start of the host side)."""
    edges = graph()
    assert "worker.shared.client" in edges["worker.api.cli"]
    assert "worker.host.cli" in edges["worker.command"]
    assert "worker.shared.settings" in edges["worker.host.settings"]


def test_importing_the_api_side_loads_no_ansible() -> None:
    """`import worker.api` (the router), the CLI and every shared module, in a fresh
    interpreter: no Ansible, ansible-runner, requests, Apprise, prometheus-client, no host
    module, and ptyprocess left unpatched (worker/host/runner.py patches it on import).

    arq.worker is loaded, by arq's own package __init__ (it re-exports Worker), whatever
    submodule of arq is imported; none of our API-side modules imports it (test above)."""
    code = """
import importlib, pkgutil, sys
import worker.api, worker.api.router, worker.api.cli, worker.command
from worker.api import build_router
import worker.shared
for info in pkgutil.iter_modules(worker.shared.__path__):
    importlib.import_module("worker.shared." + info.name)
loaded = sorted(
    name for name in sys.modules
    if name.split(".")[0] in ("ansible", "ansible_runner", "ptyprocess", "requests",
                              "apprise", "prometheus_client")
    or name.startswith("worker.host")
)
print(",".join(loaded))
"""
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert found == ""


HOST_ONLY_CODE = """
import sys
from worker.command import build_parser
args = build_parser().parse_args({argv!r})
loaded = sorted(
    name for name in sys.modules
    if name.split(".")[0] in ("ansible", "ansible_runner", "ptyprocess", "requests",
                              "apprise", "prometheus_client")
    or name in ("worker.host.main", "worker.host.runner", "worker.host.rollback")
)
print(",".join(loaded))
"""


@pytest.mark.parametrize("argv", [["status"], ["check", "--json"], ["worker", "--burst"]])
def test_the_command_line_loads_the_worker_only_to_run_a_host_command(argv: list[str]) -> None:
    """worker/command.py builds the whole command line (both sides' commands, for --help and
    parsing) without the worker's dependencies: worker/host/cli.py imports them only when a
    host command runs, so the API side's commands work where only the base package is
    installed, and start without loading Ansible on the host."""
    found = subprocess.run(
        [sys.executable, "-c", HOST_ONLY_CODE.format(argv=argv)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert found == ""
