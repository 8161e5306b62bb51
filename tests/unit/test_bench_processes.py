"""The bench's count of module processes per update (issue 20): from the timing callback's task
records to the per-task listing and the targets on docs/performance.md."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bench.report import process_listing, ratio
from bench.targets import evaluate
from bench.timing import PLUGIN_DIR, PlaybookTimes, module_processes


def _callback() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_timing", PLUGIN_DIR / "bench_timing.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"changed": True}, [1]),
        ({"attempts": 3, "changed": False}, [3]),  # until: retried twice
        ({"results": [{"item": "a"}, {"item": "b", "attempts": 2}]}, [1, 2]),
        ({"results": [{"item": "a", "skipped": True}, {"item": "b"}]}, [1]),
        ({"results": []}, []),
    ],
)
def test_callback_records_runs_per_item_and_attempt(
    result: dict[str, Any], expected: list[int]
) -> None:
    assert _callback()._attempts(result) == expected


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"action": "community.docker.docker_login", "status": "ok", "attempts": [1]}, 1),
        ({"action": "community.docker.docker_container_info", "attempts": [1, 4]}, 5),
        ({"action": "community.docker.docker_compose_v2", "status": "skipped"}, 0),
        ({"action": "ansible.builtin.set_fact", "status": "ok", "attempts": [1]}, 0),
        ({"action": "ansible.builtin.validate_argument_spec", "attempts": [1]}, 0),
        ({"action": "include_tasks", "status": "ok"}, 0),
        ({"action": "meta", "status": "ok", "attempts": [1]}, 0),  # e.g. end_play on a no-op
        ({"action": "ansible.builtin.include_vars", "status": "ok", "attempts": [1]}, 0),
        ({"action": "update_lock", "status": "failed", "attempts": [1]}, 1),
        ({"action": "compose_snapshot", "status": "ok"}, 1),  # before issue 20: no attempts
        ({"action": "community.docker.docker_compose_v2_run", "status": "ok", "attempts": []}, 0),
    ],
)
def test_module_processes_of_a_task_record(record: dict[str, Any], expected: int) -> None:
    assert module_processes(record) == expected


def test_playbook_times_list_the_tasks_that_started_processes() -> None:
    records: list[dict[str, Any]] = [
        {"kind": "process", "t": 1.0},
        {"kind": "task", "name": "Check", "action": "validate_argument_spec", "start": 2.0},
        {"kind": "task", "name": "Lock", "action": "update_lock", "start": 2.1, "end": 2.5},
        {"kind": "task", "name": "Facts", "action": "set_fact", "start": 2.5, "end": 2.6},
        {"kind": "task", "name": "Wait", "action": "c.d.info", "attempts": [2, 1], "end": 3.0},
        {"kind": "task", "name": "Run", "action": "c.d.run", "status": "skipped", "end": 3.1},
    ]
    for record in records:
        record.setdefault("status", "ok")
        record.setdefault("attempts", [1])
    times = PlaybookTimes.from_records(records)
    assert times.process_tasks() == [("Lock", "update_lock", 1), ("Wait", "c.d.info", 3)]
    assert times.task_summary()["module_processes"] == 4


@pytest.mark.parametrize(
    ("runs", "expected_total"),
    [
        ([[("a", "x", 1), ("b", "y", 1)]], 2),
        ([[("a", "x", 5)], [("a", "x", 1), ("b", "y", 1)], [("a", "x", 1)]], 2),
        ([[("a", "x", 3)], [("a", "x", 1)]], 1),  # even: the lower middle run
    ],
)
def test_process_listing_is_the_median_run(
    runs: list[list[tuple[str, str, int]]], expected_total: int
) -> None:
    listing = process_listing(runs)
    assert sum(row["processes"] for row in listing) == expected_total
    assert all(set(row) == {"task", "action", "processes"} for row in listing)


def test_process_listing_of_no_runs() -> None:
    assert process_listing([]) == []


@pytest.mark.parametrize(
    ("value", "reference", "expected"),
    [(9.0, 8.0, 1.125), (1.0, None, None), (None, 2.0, None), (3.0, 0.0, None)],
)
def test_ratio(value: float | None, reference: float | None, expected: float | None) -> None:
    assert ratio(value, reference) == expected


def _summary(d1: dict[str, Any], d2: dict[str, Any]) -> dict[str, Any]:
    return {"cases": {"1": {"D": d1}, "2": {"D": d2}}, "soak": None, "slope": {}}


def _checks(summary: dict[str, Any]) -> dict[str, tuple[str, bool | None]]:
    return {c.name: (c.shown, c.passed) for c in evaluate(summary)}


def test_targets_of_issue_20() -> None:
    d1 = {"ratio_to_peer": 1.08, "cpu_s": {"median": 4.4}, "module_processes": {"median": 6.0}}
    d2 = {"ratio_to_peer": 0.85, "cpu_s": {"median": 1.0}, "module_processes": {"median": 4.0}}
    checks = _checks(_summary(d1, d2))
    assert checks["case 1: D / peer"] == ("1.08", True)
    assert checks["case 2: D / peer"] == ("0.85", False)
    assert checks["case 4: D / peer"] == ("not measured", None)
    assert checks["case 1: CPU s of D per update"] == ("4.40 s", False)
    assert checks["case 1: module processes of D per update"] == ("6", True)
    assert checks["case 2: module processes of D per update"] == ("4", True)
    # D / A has no budget any more.
    assert not [name for name in checks if "D / A" in name]


def test_targets_of_a_run_without_the_peer() -> None:
    """An older latest.json (no P, no process counts) still renders: not measured."""
    checks = _checks(_summary({"ratio_to_a": 3.2, "cpu_s": {"median": 7.0}}, {}))
    assert checks["case 1: D / peer"] == ("not measured", None)
    assert checks["case 1: module processes of D per update"] == ("not measured", None)
    assert checks["case 1: CPU s of D per update"] == ("7.00 s", False)


def test_peer_variables_name_the_token_file_not_the_token(tmp_path: Path) -> None:
    from bench.deployment import Deployment
    from bench.project import StackShape
    from bench.ways import peer_vars
    from testbed.stack import Stack

    stack = Stack(
        base_dir=tmp_path,
        docker_host="unix:///nowhere.sock",
        registry="127.0.0.1:5000",
        registry_username="bench",
        registry_password="s3cret-token-value",
        redis_host="127.0.0.1",
        redis_port=6379,
        docker_config=tmp_path / "cfg",
        anonymous_docker_config=tmp_path / "anon",
    )
    dep = Deployment(stack, "b4", StackShape(6, 3, real=True), tmp_path / "b4")
    peer = peer_vars(dep, tmp_path / "docker-config-p")
    assert "s3cret-token-value" not in repr(peer)
    assert peer["app_registry_token_file"] == str(dep.token_file)
    # The real shape's one-shot init goes into the same `up --wait` as api and worker.
    assert peer["app_services"] == ["api", "worker", "init"]
    assert peer["app_oneshot_services"] == []
    alone = peer_vars(dep, tmp_path / "docker-config-p", ("init",))
    assert (alone["app_services"], alone["app_oneshot_services"]) == (["api", "worker"], ["init"])
