"""The peer of issue 20 (bench/variants/peer.yml): one play of community.docker modules in the
order the issue names, nothing else, the token read from a file on the controller."""

from __future__ import annotations

from typing import Any

import yaml

from bench.ways import PEER_PLAYBOOK

MODULES = [
    "community.docker.docker_login",
    "community.docker.docker_compose_v2_pull",
    "community.docker.docker_compose_v2",
    "community.docker.docker_compose_v2_run",
    "community.docker.docker_compose_v2_exec",
]
TASK_KEYS = {"name", "loop", *MODULES}


def _play() -> dict[str, Any]:
    plays = yaml.safe_load(PEER_PLAYBOOK.read_text())
    assert isinstance(plays, list) and len(plays) == 1
    play: dict[str, Any] = plays[0]
    return play


def test_one_play_of_community_docker_modules_in_order() -> None:
    tasks = _play()["tasks"]
    assert [next(k for k in task if k in MODULES) for task in tasks] == MODULES
    assert all(set(task) <= TASK_KEYS for task in tasks), "no lock, snapshot, rescue or report"
    assert "pre_tasks" not in _play() and "post_tasks" not in _play()


def test_recreate_is_targets_only_without_pull_and_waits() -> None:
    up = _play()["tasks"][2]["community.docker.docker_compose_v2"]
    assert (up["dependencies"], up["pull"], up["wait"], up["state"]) == (
        False,
        "never",
        True,
        "present",
    )
    assert up["services"] == "{{ app_services }}"


def test_token_comes_from_a_file_on_the_controller() -> None:
    play = _play()
    login = play["tasks"][0]["community.docker.docker_login"]
    assert login["password"] == "{{ app_registry_token }}"
    assert (
        "lookup('ansible.builtin.file', app_registry_token_file)"
        in play["vars"]["app_registry_token"]
    )
