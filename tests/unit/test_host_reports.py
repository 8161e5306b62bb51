"""The playbook publishes its report per host (set_stats per_host: true, issue 20); the worker
reads each host's copy from the set_stats task's result, and a global copy of older playbooks."""

from __future__ import annotations

from typing import Any

import pytest

from worker.host.summary import RunOutcome
from worker.shared.result import UpdateStatus


def stats_task(host: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "event": "runner_on_ok",
        "event_data": {
            "host": host,
            "task": "Report | Publish the update summary for the worker",
            "resolved_action": "ansible.builtin.set_stats",
            "res": {"changed": False, "ansible_stats": {"data": data, "per_host": True}},
        },
    }


def stats_event(artifact: dict[str, Any]) -> dict[str, Any]:
    return {"event": "playbook_on_stats", "event_data": {"artifact_data": artifact}}


A = {"compose_project": "a"}
B = {"compose_project": "b"}


@pytest.mark.parametrize(
    ("events", "key", "expected"),
    [
        (
            [stats_task("web1", {"update_executor": A}), stats_event({})],
            "update_executor",
            {"web1": A},
        ),
        (
            [
                stats_task("web1", {"update_executor": A}),
                stats_task("web2", {"update_executor": B}),
            ],
            "update_executor",
            {"web1": A, "web2": B},
        ),
        ([stats_task("web1", {"update_executor_rollback": A})], "update_executor", {}),
        (
            [stats_task("web1", {"update_executor_rollback": A})],
            "update_executor_rollback",
            {"web1": A},
        ),
        (
            [stats_event({"update_executor": B})],
            "update_executor",
            {"": B},
        ),  # global, before issue 20
        (
            [{"event": "runner_on_ok", "event_data": {"host": "x", "res": {"msg": "hi"}}}],
            "update_executor",
            {},
        ),
        ([], "update_executor", {}),
    ],
)
def test_host_reports(events: list[dict[str, Any]], key: str, expected: dict[str, Any]) -> None:
    outcome = RunOutcome(UpdateStatus.successful, events)
    assert outcome.host_reports(key) == expected
    assert outcome.host_report(key) == next(iter(expected.values()), {})
