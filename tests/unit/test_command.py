"""The `update-executor` command line (worker/command.py): each command runs on the side that
owns it, and the host's commands say so when the worker is not installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from worker.api import cli as api_cli
from worker.command import build_parser, main
from worker.host import cli as host_cli


@pytest.mark.parametrize(
    ("argv", "run"),
    [
        (["worker"], host_cli.run_host_command),
        (["rollback"], host_cli.run_host_command),
        (["unlock", "--json"], host_cli.run_host_command),
        (["enqueue", "--wait"], api_cli.run_client),
        (["revert"], api_cli.run_client),
        (["status", "abc"], api_cli.run_client),
        (["cancel"], api_cli.run_client),
        (["check"], api_cli.run_client),
        (["history", "--limit", "3"], api_cli.run_client),
    ],
)
def test_each_command_runs_on_its_side(argv: list[str], run: object) -> None:
    assert build_parser().parse_args(argv).run is run


def test_worker_refuses_an_env_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--env-file", "/nonexistent.env", "worker"]) == 2
    assert "--env-file is for the client commands" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["worker", "rollback", "unlock"])
def test_a_host_command_without_the_worker_installed(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What an app image (the base package or `[api]`, no Ansible) answers."""
    monkeypatch.setitem(sys.modules, "worker.host.rollback", None)  # import raises ImportError
    monkeypatch.delattr("worker.host.rollback", raising=False)
    assert main(["--unit", str(Path("/nonexistent.service")), command]) == 2
    assert "the worker is not installed here" in capsys.readouterr().err
