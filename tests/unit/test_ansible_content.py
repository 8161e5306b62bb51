"""The Ansible content the worker runs: found in the checkout or the installed package, every
file of it shipped in the wheel, and a missing piece named at start-up (issue 14)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from worker.host.settings import ANSIBLE_CONFIG, ANSIBLE_CONTENT, PROJECT_ROOT, Settings

CONTENT_DIRS = ("playbooks", "inventory", "collections")


def test_from_a_checkout_the_content_is_the_checkouts_own() -> None:
    assert ANSIBLE_CONTENT == PROJECT_ROOT
    assert ANSIBLE_CONFIG == PROJECT_ROOT / "ansible.cfg"
    settings = Settings.from_env({"LOG_FILE": ""})
    assert settings.playbook == PROJECT_ROOT / "playbooks" / "update.yml"
    assert settings.missing_ansible_content() == []


def test_a_missing_playbook_is_named(tmp_path: Path) -> None:
    settings = Settings.from_env({"LOG_FILE": "", "UPDATE_PLAYBOOK": str(tmp_path / "update.yml")})
    problems = settings.missing_ansible_content()
    assert len(problems) == 2
    assert problems[0].startswith(f"the playbook (UPDATE_PLAYBOOK) {tmp_path}/update.yml does not")
    assert f"{tmp_path}/rollback.yml" in problems[1]


def test_the_wheel_ships_every_file_of_the_ansible_content() -> None:
    """pyproject.toml's package-data globs match each content file (a new task file or module
    would otherwise be missing from the wheel only, which a checkout never shows)."""
    config = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"]["worker.ansible_content"] == "."
    patterns = config["package-data"]["worker.ansible_content"]
    shipped = {path for pattern in patterns for path in PROJECT_ROOT.glob(pattern)}
    content = {
        path
        for name in CONTENT_DIRS
        for path in (PROJECT_ROOT / name).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert content - shipped == set()
    assert PROJECT_ROOT / "ansible.cfg" in shipped
