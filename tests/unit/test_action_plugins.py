"""The playbooks' own action plugins (playbooks/action_plugins/): update_lock and docker_command
run their module's logic inside ansible-playbook. The pure parts are tested directly; a tiny
playbook on localhost proves the action path (no module process, the lock held by the
ansible-playbook process, the token only on stdin). No Docker needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from .playbook_code import PLAYBOOKS, load

ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")


command = load("library/docker_command")
lock = load("library/update_lock")
# The one-task steps of update.yml (their logic: tests/unit/test_update_steps.py).
STEP_MODULES = ["update_preflight", "compose_snapshot", "registry_login"]


def run_play(tmp_path: Path, tasks: list[dict[str, Any]], *args: str) -> tuple[dict[str, Any], int]:
    """Run `tasks` on localhost with the repository's plugins: the json callback's results by
    task name, and the pid of ansible-playbook."""
    playbook = tmp_path / "play.yml"
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]
    playbook.write_text(json.dumps(play))
    env = {
        **os.environ,
        "ANSIBLE_ACTION_PLUGINS": str(PLAYBOOKS / "action_plugins"),
        "ANSIBLE_LIBRARY": str(PLAYBOOKS / "library"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
    }
    process = subprocess.Popen(
        [ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local", str(playbook), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = process.communicate(timeout=120)
    assert stdout.strip(), stderr
    output = json.loads(stdout)
    results = {
        task["task"]["name"]: task["hosts"]["localhost"]
        for entry in output["plays"]
        for task in entry["tasks"]
    }
    return results, process.pid


# ---------------------------------------------------------------- docker_command, pure parts
def test_compose_events_say_whether_compose_changed_something() -> None:
    nothing = "\n".join(
        json.dumps(e)
        for e in (
            {"id": "Container demo-api", "status": "Running"},
            {"id": "Container demo-api", "status": "Waiting"},
            {"id": "Container demo-api", "status": "Healthy"},
            {"id": "api", "text": "Pulling"},
            {"id": "api", "text": "Pulled"},
        )
    )
    assert command.read_compose_events(nothing) == (False, [])
    recreated = json.dumps({"id": "Container demo-api", "status": "Recreate"})
    assert command.read_compose_events(recreated) == (True, [])
    layer = json.dumps({"id": "0a1b2c3d", "parent_id": "api", "text": "Downloading"})
    assert command.read_compose_events(layer)[0] is True


def test_compose_errors_are_collected_in_order() -> None:
    stderr = "\n".join(
        [
            json.dumps({"id": "api", "text": "Pulling"}),
            json.dumps({"id": "api", "text": "Error", "status": "Head ...: no basic auth"}),
            json.dumps({"error": True, "message": "container demo-api is unhealthy"}),
            "plain text from compose",
        ]
    )
    _changed, errors = command.read_compose_events(stderr)
    assert errors == [
        "api: Head ...: no basic auth",
        "container demo-api is unhealthy",
        "plain text from compose",
    ]


def test_the_dry_run_flag_goes_right_after_compose() -> None:
    argv = ["docker", "compose", "--ansi", "never", "pull", "--", "api"]
    assert command.with_dry_run(argv) == [
        "docker",
        "compose",
        "--dry-run",
        "--ansi",
        "never",
        "pull",
        "--",
        "api",
    ]
    with pytest.raises(ValueError):
        command.with_dry_run(["docker", "login"])


def params(**values: Any) -> dict[str, Any]:
    defaults = {key: spec.get("default") for key, spec in command.ARGUMENT_SPEC.items()}
    return {**defaults, **values}


def test_compose_events_are_read_and_left_out_of_the_result() -> None:
    events = [
        {"id": "3f1c", "text": "Downloading", "status": "1.2MB/3MB"},
        {"id": "Container app-api-1", "status": "Recreated"},
    ]
    lines = [json.dumps(event) for event in events] + ["WARN[0000] a plain line"]
    script = f"import sys; sys.stderr.write({chr(10).join(lines)!r} + '\\n')"
    result = command.run_task(
        params(argv=[sys.executable, "-c", script], compose_events=True), False
    )
    assert result["changed"] is True
    assert result["stderr"] == "WARN[0000] a plain line"


def test_a_failed_command_names_itself_and_its_errors(tmp_path: Path) -> None:
    script = "import sys; print('out'); print('something broke', file=sys.stderr); sys.exit(3)"
    result = command.run_task(
        params(argv=[sys.executable, "-c", script], description="the thing"), False
    )
    assert result["failed"] is True
    assert result["rc"] == 3
    assert result["msg"] == "the thing failed (exit status 3): something broke"
    # check_rc: false returns the status (the migration step judges it)
    returned = command.run_task(params(argv=[sys.executable, "-c", script], check_rc=False), False)
    assert (returned["failed"], returned["rc"], returned["stdout"]) == (False, 3, "out")


def test_command_line_is_split_with_shell_rules_and_no_shell_runs() -> None:
    result = command.run_task(
        params(
            argv=[sys.executable, "-c", "import sys, json; print(json.dumps(sys.argv[1:]))"],
            command_line="upgrade 'head with space' $HOME;true",
        ),
        False,
    )
    assert json.loads(result["stdout"]) == ["upgrade", "head with space", "$HOME;true"]


def test_a_command_past_its_timeout_is_stopped() -> None:
    result = command.run_task(
        params(argv=[sys.executable, "-c", "import time; time.sleep(30)"], timeout=1), False
    )
    assert result["failed"] is True and result["rc"] is None
    assert "timed out after 1 s" in result["msg"]


def test_check_mode_skips_unless_a_dry_run_is_asked_for() -> None:
    skipped = command.run_task(params(argv=["docker", "login"]), True)
    assert skipped["skipped"] is True


# ---------------------------------------------------------------- the action path
def test_docker_command_runs_in_the_controller_with_the_token_on_stdin_only(
    tmp_path: Path,
) -> None:
    secret = "TOKEN-ON-STDIN-ONLY"
    seen = tmp_path / "seen.json"
    script = (
        "import json, os, sys; "
        "parent = open(f'/proc/{os.getppid()}/cmdline').read(); "
        f"json.dump({{'stdin': sys.stdin.read(), 'argv': sys.argv, 'env': dict(os.environ), "
        f"'parent': parent}}, open({str(seen)!r}, 'w'))"
    )
    results, _pid = run_play(
        tmp_path,
        [
            {
                "name": "Run",
                "docker_command": {
                    "argv": [sys.executable, "-c", script],
                    "stdin": secret,
                    "environment": {"MARKER_VAR": "set"},
                    "chdir": str(tmp_path),
                },
                "no_log": True,
            }
        ],
    )
    data = json.loads(seen.read_text())
    assert data["stdin"] == secret
    assert secret not in json.dumps(data["argv"]) + json.dumps(data["env"])
    assert data["env"]["MARKER_VAR"] == "set"
    # Started by ansible-playbook's own worker process, not by a module's interpreter.
    assert "ansible-playbook" in data["parent"]
    assert results["Run"].get("censored")


def test_update_lock_runs_in_the_controller_and_records_ansible_playbook(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "app.lock"
    take = {
        "name": "Take",
        "update_lock": {"path": str(path), "project": "app", "job_id": "42"},
        "register": "taken",
    }
    held = {
        "name": "Look",
        "ansible.builtin.set_fact": {"holder_file": f"{{{{ lookup('file', '{path}') }}}}"},
    }
    again = {
        "name": "Again",
        "update_lock": {"path": str(path), "project": "app"},
        "ignore_errors": True,
    }
    release = {
        "name": "Release",
        "update_lock": {"path": str(path), "state": "absent", "token": "{{ taken.token }}"},
    }
    results, playbook_pid = run_play(tmp_path, [take, held, again, release], "--check")
    taken = results["Take"]
    # A module's result carries its `invocation`; the action plugin's does not.
    assert "invocation" not in taken
    assert taken["acquired"] is True and taken["changed"] is True  # also in check mode
    assert taken["holder"]["id"] == "update-executor job 42"
    holder = json.loads(results["Look"]["ansible_facts"]["holder_file"])
    assert holder["pid"] == playbook_pid  # the ansible-playbook process, not its task worker
    assert (
        "Another update of project 'app' is running: update-executor job 42"
        in (results["Again"]["msg"])
    )
    assert results["Release"]["released"] is True
    assert not path.exists()


@pytest.mark.parametrize(
    "module",
    [command, lock, *(load(f"library/{name}") for name in STEP_MODULES)],
    ids=["docker_command", "update_lock", *STEP_MODULES],
)
def test_the_documentation_parses_and_lists_every_option(module: ModuleType) -> None:
    """ansible-doc reads DOCUMENTATION as YAML; the options must be the argument spec's."""
    documentation = yaml.safe_load(module.DOCUMENTATION)
    assert set(documentation["options"]) == set(module.ARGUMENT_SPEC)
