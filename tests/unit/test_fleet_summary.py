"""The summary of a fleet (issue 24): per-host results merged from one run's events, the batches
in order, the top-level status the worst host's. Table-driven over synthetic events shaped like
playbooks/update.yml's (the fleet facts, each host's Report, failed and unreachable results)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.summary_schema import assert_valid_summary
from worker.host.summary import (
    FLEET_BATCH_TASK,
    FLEET_ROLLBACK_REPORT_TASK,
    UPDATE_REPORT_TASK,
    RunOutcome,
    build_summary,
    fleet_batches,
)
from worker.shared.request import UpdateRequest
from worker.shared.result import UpdateStatus, worst_status

T0 = datetime(2026, 1, 15, 8, 0, tzinfo=UTC)
HOSTS = ["web1", "web2", "web3"]


def event(kind: str, host: str, task: str, **res: Any) -> dict[str, Any]:
    return {"event": kind, "event_data": {"host": host, "task": task, "res": res}}


def batch(hosts: list[str], play_hosts: list[str] = HOSTS) -> list[dict[str, Any]]:
    fleet = {"batch": hosts, "play_hosts": play_hosts, "failed": False, "changed": False}
    return [
        event("runner_on_ok", h, FLEET_BATCH_TASK, ansible_facts={"_update_fleet": fleet})
        for h in hosts
    ]


def report(host: str, rolled_back: bool = False) -> dict[str, Any]:
    data = {
        "compose_project": f"app-{host}",
        "targets": ["api"],
        "services": {
            "api": {
                "image": "ghcr.io/acme/app:latest",
                "before": {"container_id": "c1", "image_id": "sha256:old", "digest": None},
                "after": {"container_id": "c2", "image_id": "sha256:new", "digest": None},
                "health": "healthy",
            }
        },
        "migrations": {"ran": True, "rc": 0, "output_tail": ""},
        "rolled_back": rolled_back,
        "rollback": {"api": None},
    }
    return event(
        "runner_on_ok", host, UPDATE_REPORT_TASK, ansible_stats={"data": {"update_executor": data}}
    )


def failed(host: str, task: str = "Recreate | Recreate the targets", msg: str = "unhealthy") -> Any:
    return event("runner_on_failed", host, task, msg=msg)


def summarize(events: list[dict[str, Any]], status: UpdateStatus) -> dict[str, Any]:
    outcome = RunOutcome(status=status, events=events, rc=0 if status == "successful" else 2)
    summary = build_summary(
        job_id="j1",
        request=UpdateRequest(services=("api",)),
        outcome=outcome,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=30),
    ).as_dict()
    return assert_valid_summary(summary)


@pytest.mark.parametrize(
    ("run", "hosts", "worst"),
    [
        ("successful", ["successful", "successful"], "successful"),
        ("successful", ["successful", "not_started"], "successful"),
        ("successful", ["successful", "failed", "not_started"], "failed"),
        ("failed", ["successful"], "failed"),
        ("canceled", ["successful", "canceled"], "canceled"),
        ("canceled", ["failed", "canceled"], "failed"),
        ("timeout", ["canceled"], "timeout"),
        ("successful", [], "successful"),
    ],
)
def test_the_worst_status_wins(run: str, hosts: list[str], worst: str) -> None:
    assert worst_status(UpdateStatus(run), hosts) is UpdateStatus(worst)


CANARY_FIRST_ALL_WELL = [
    *batch(["web1"]),
    report("web1"),
    *batch(["web2", "web3"]),
    report("web2"),
    report("web3"),
]
CANARY_FAILED = [
    *batch(["web1"]),
    failed("web1"),
    report("web1", rolled_back=True),
    failed("web1", "Fleet | Fail this host, its update failed", "see its report"),
]
SECOND_BATCH_FAILED = [
    *batch(["web1"]),
    report("web1"),
    *batch(["web2", "web3"]),
    failed("web2", "Migrations | Run the migration command", "exit status 3"),
    report("web2", rolled_back=True),
    report("web3"),
    event(
        "runner_on_ok",
        "web3",
        FLEET_ROLLBACK_REPORT_TASK,
        ansible_stats={
            "data": {
                "update_executor_rollback": {
                    "rolled_back": True,
                    "rollback": {"api": {"image_id": "sha256:old"}},
                    "rollback_error": None,
                }
            }
        },
    ),
    failed("web2", "Fleet | Fail this host, its update failed", "see its report"),
]
UNREACHABLE_IN_BATCH = [
    *batch(["web1", "web2"]),
    report("web1"),
    event("runner_on_unreachable", "web2", "Preflight | Check Docker", msg="ssh: timed out"),
]


@pytest.mark.parametrize(
    ("events", "run", "status", "batches", "hosts", "error"),
    [
        (
            CANARY_FIRST_ALL_WELL,
            "successful",
            "successful",
            [["web1"], ["web2", "web3"]],
            {"web1": "successful", "web2": "successful", "web3": "successful"},
            None,
        ),
        (
            CANARY_FAILED,
            "failed",
            "failed",
            [["web1"]],
            {"web1": "failed", "web2": "not_started", "web3": "not_started"},
            ("recreate", "web1: unhealthy"),
        ),
        (
            SECOND_BATCH_FAILED,
            "failed",
            "failed",
            [["web1"], ["web2", "web3"]],
            {"web1": "successful", "web2": "failed", "web3": "successful"},
            ("migrations", "web2: exit status 3"),
        ),
        (
            UNREACHABLE_IN_BATCH,
            "failed",
            "failed",
            [["web1", "web2"]],
            {"web1": "successful", "web2": "failed", "web3": "not_started"},
            ("preflight", "web2: ssh: timed out"),
        ),
        (  # the run says successful, a host failed: the worst wins
            [*batch(["web1", "web2"]), report("web1"), failed("web2"), report("web2")],
            "successful",
            "failed",
            [["web1", "web2"]],
            {"web1": "successful", "web2": "failed", "web3": "not_started"},
            ("recreate", "web2: unhealthy"),
        ),
    ],
)
def test_per_host_results_merge(
    events: list[dict[str, Any]],
    run: str,
    *,
    status: str,
    batches: list[list[str]],
    hosts: dict[str, str],
    error: tuple[str, str] | None,
) -> None:
    summary = summarize(events, UpdateStatus(run))
    assert summary["status"] == status
    assert summary["batches"] == batches
    assert {name: entry["status"] for name, entry in summary["hosts"].items()} == hosts
    if error is None:
        assert summary["error"] is None
    else:
        assert summary["error"]["step"] == error[0]
        assert summary["error"]["message"].startswith(error[1])
    for name, entry in summary["hosts"].items():
        assert (entry["error"] is None) == (entry["status"] in ("successful", "not_started"))
        if entry["status"] == "successful":
            assert entry["compose_project"] == f"app-{name}"


def test_a_reverted_host_says_so() -> None:
    summary = summarize(SECOND_BATCH_FAILED, UpdateStatus.failed)
    assert summary["hosts"]["web3"]["reverted"] == {
        "rolled_back": True,
        "rollback": {"api": {"image_id": "sha256:old"}},
        "rollback_error": None,
    }
    assert summary["hosts"]["web1"]["reverted"] is None
    assert summary["hosts"]["web2"]["rolled_back"] is True


def test_one_host_keeps_its_top_level_fields() -> None:
    """A one-host run: the top level is that host's, as before; `hosts` has it too."""
    events = [*batch(["web1"], ["web1"]), failed("web1"), report("web1", rolled_back=True)]
    summary = summarize(events, UpdateStatus.failed)
    assert summary["error"] == {"step": "recreate", "message": "unhealthy"}  # no host prefix
    assert summary["compose_project"] == "app-web1"
    assert summary["rolled_back"] is True
    assert summary["batches"] == [["web1"]]
    assert summary["hosts"]["web1"]["status"] == "failed"


def test_batches_come_from_the_fleet_facts_in_order() -> None:
    events = [*batch(["b"]), *batch(["a", "c"]), *batch(["a", "c"])]
    assert fleet_batches(events) == ([["b"], ["a", "c"]], [*HOSTS, "b", "a", "c"])


def test_a_plain_run_of_several_hosts_is_one_batch_in_name_order() -> None:
    """No fleet play (no update_serial, no update_fleet_rollback): no fleet facts. The hosts
    come from their reports and results, whatever order the forks gave them; one that was
    unreachable, without a report, is there too."""
    events = [
        report("web3"),
        event("runner_on_unreachable", "web2", "Preflight | Check Docker", msg="ssh: timed out"),
        failed("web1"),
        report("web1", rolled_back=True),
    ]
    summary = summarize(events, UpdateStatus.failed)
    assert summary["batches"] == [["web1", "web2", "web3"]]
    assert list(summary["hosts"]) == ["web1", "web2", "web3"]
    assert {name: entry["status"] for name, entry in summary["hosts"].items()} == {
        "web1": "failed",
        "web2": "failed",
        "web3": "successful",
    }
    assert summary["hosts"]["web2"]["error"] == {"step": "preflight", "message": "ssh: timed out"}
    assert summary["hosts"]["web2"]["batch"] == 0
    assert summary["error"] == {"step": "recreate", "message": "web1: unhealthy"}


def test_a_plain_one_host_run_keeps_its_top_level_fields() -> None:
    """The default run (the worker's settings without batches): the failed step's own task
    is the last failure, no `Fleet | …` task; the top level is the host's, as before."""
    events = [failed("localhost"), report("localhost", rolled_back=True)]
    summary = summarize(events, UpdateStatus.failed)
    assert summary["error"] == {"step": "recreate", "message": "unhealthy"}
    assert summary["batches"] == [["localhost"]]
    assert summary["hosts"]["localhost"]["status"] == "failed"
    assert summary["hosts"]["localhost"]["batch"] == 0
