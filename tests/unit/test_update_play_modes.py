"""playbooks/update.yml's two modes (issue 24): which of its plays match the hosts, from the
extra vars, as Ansible templates each play's `hosts:` before it starts. Plain (no batches, no
fleet rollback: the worker's defaults) runs only the first play, main's one-host play; a fleet
(`update_serial` or `update_fleet_rollback`) runs only the batches, fleet rollback and fail
plays. A play whose hosts are `[]` prints "skipping: no hosts matched" and touches nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ansible.parsing.dataloader import DataLoader  # type: ignore[import-untyped]
from ansible.template import Templar, trust_as_template  # type: ignore[import-untyped]

from worker.host import jobs
from worker.host.settings import Settings

PLAYBOOK = Path(__file__).resolve().parents[2] / "playbooks" / "update.yml"
SECRET = {"UPDATE_JOB_SECRET": "s" * 40}
HOSTS = "web1,web2"
PLAIN = ["plain"]
FLEET = ["batches", "fail"]
ROLLBACK = ["batches", "fleet rollback", "fail"]  # a fleet with update_fleet_rollback
PLAYS = ["plain", "batches", "fleet rollback", "fail"]


def plays() -> list[dict[str, Any]]:
    loaded = DataLoader().load_from_file(str(PLAYBOOK))
    assert isinstance(loaded, list) and len(loaded) == len(PLAYS)
    return loaded


def matching_plays(extravars: dict[str, Any]) -> list[str]:
    """The plays (by role in PLAYS) whose `hosts:` are not empty with these extra vars; each
    one's hosts must then be `update_hosts` (or localhost without it)."""
    templar = Templar(loader=DataLoader(), variables=extravars)
    matched = []
    for name, play in zip(PLAYS, plays(), strict=True):
        hosts = templar.template(trust_as_template(play["hosts"]))
        if hosts:
            assert hosts == extravars.get("update_hosts", "localhost"), (name, hosts)
            matched.append(name)
        else:
            assert hosts == [], (name, hosts)
    return matched


@pytest.mark.parametrize(
    ("extravars", "expected"),
    [
        ({}, PLAIN),  # a manual run without fleet variables
        ({"update_hosts": HOSTS}, PLAIN),  # several hosts at once, each rolls itself back
        ({"update_serial": []}, PLAIN),  # the worker's default UPDATE_SERIAL
        ({"update_serial": 0}, PLAIN),
        ({"update_serial": "0"}, PLAIN),
        ({"update_serial": ""}, PLAIN),
        ({"update_serial": None}, PLAIN),
        ({"update_serial": [], "update_fleet_rollback": False}, PLAIN),
        ({"update_serial": [], "update_fleet_rollback": "false"}, PLAIN),
        # max-fail and pause need batches: alone, they leave a run plain
        ({"update_max_fail_percentage": 50, "update_batch_pause": 10}, PLAIN),
        ({"update_hosts": HOSTS, "update_serial": [1, 2]}, FLEET),
        ({"update_hosts": HOSTS, "update_serial": [1, "50%"]}, FLEET),
        ({"update_hosts": HOSTS, "update_serial": 1}, FLEET),
        ({"update_hosts": HOSTS, "update_serial": "1"}, FLEET),
        ({"update_hosts": HOSTS, "update_serial": "50%"}, FLEET),
        ({"update_hosts": HOSTS, "update_serial": [], "update_fleet_rollback": True}, ROLLBACK),
        ({"update_hosts": HOSTS, "update_serial": [1], "update_fleet_rollback": "true"}, ROLLBACK),
        ({"update_serial": [1, 2], "update_fleet_rollback": True}, ROLLBACK),
    ],
)  # fmt: skip
def test_the_extra_vars_choose_plain_or_fleet(
    extravars: dict[str, Any], expected: list[str]
) -> None:
    assert matching_plays(extravars) == expected


def fleet_vars(env: dict[str, str]) -> dict[str, Any]:
    return jobs.fleet_vars(Settings.from_env({**SECRET, **env}), HOSTS)


def test_the_workers_default_settings_give_a_plain_run() -> None:
    assert matching_plays(fleet_vars({})) == PLAIN
    # Only the settings that need batches: still plain.
    only_rule = fleet_vars({"UPDATE_MAX_FAIL_PERCENTAGE": "50", "UPDATE_BATCH_PAUSE": "5"})
    assert matching_plays(only_rule) == PLAIN


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"UPDATE_SERIAL": "1,2"}, FLEET),
        ({"UPDATE_SERIAL": "50%"}, FLEET),
        ({"UPDATE_FLEET_ROLLBACK": "true"}, ROLLBACK),
        ({"UPDATE_SERIAL": "1", "UPDATE_FLEET_ROLLBACK": "true"}, ROLLBACK),
    ],
)
def test_the_batch_settings_give_a_fleet_run(env: dict[str, str], expected: list[str]) -> None:
    assert matching_plays(fleet_vars(env)) == expected


def test_the_plain_play_is_the_one_host_play() -> None:
    """What a one-host run had before fleets: one task importing the role, no serial, no
    play-level rescue (a failed host ends on the failed step's own task)."""
    plain = plays()[0]
    assert plain["name"] == "Update the Docker Compose deployment"
    assert set(plain) == {"name", "hosts", "gather_facts", "tasks"}
    assert plain["tasks"] == [
        {
            "name": "Update the deployment with the role compose_update",
            "ansible.builtin.import_role": {"name": "compose_update"},
        }
    ]
