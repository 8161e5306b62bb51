"""Lifecycle hooks (issue 16), the pure parts: the labels preflight keeps, which containers run
a hook (playbooks/roles/compose_update/filter_plugins/update_hooks.py), and the summary's hook
steps and `hooks`.
The hooks themselves run on the test bed in tests/integration/test_hooks.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.summary_schema import assert_valid_summary
from worker.host.progress import planned_steps
from worker.host.summary import RunOutcome, build_summary
from worker.shared.request import UpdateRequest
from worker.shared.result import UpdateStatus

from .playbook_code import load

preflight = load("library/update_preflight")
hooks = load("filter_plugins/update_hooks")

T0 = datetime(2026, 11, 30, 3, 0, 0, tzinfo=UTC)


def test_preflight_keeps_only_the_hook_labels() -> None:
    config = {
        "services": {
            "api": {
                "labels": {
                    "update-executor.pre-update": "sh -c 'echo $$HOSTNAME >> /data/log'",
                    "update-executor.post-update": " /app/warm ",
                    "update-executor.timeout": "45",
                    "com.example.secret": "do-not-keep",
                }
            },
            "worker": {"labels": ["update-executor.post-update=/app/reload", "other=x"]},
            "db": {"labels": {"com.example": "x"}},
            "web": {
                "labels": {"update-executor.pre-update": "drain", "update-executor.timeout": "x"}
            },
            "bare": None,
        }
    }
    assert preflight.service_hooks(config) == {
        "api": {"pre": "sh -c 'echo $HOSTNAME >> /data/log'", "post": "/app/warm", "timeout": 45},
        "worker": {"pre": "", "post": "/app/reload", "timeout": None},
        "web": {"pre": "drain", "post": "", "timeout": None},
    }


RUNNING = "running"


def state(container: str, image: str, status: str = RUNNING) -> dict[str, Any]:
    return {"container_id": container, "image_id": image, "digest": None, "state": status}


@pytest.mark.parametrize(
    ("before", "ids", "targets"),
    [
        # a new image for api only: only its old container runs the hook
        ({"api": state("c1", "i1"), "web": state("c2", "i2")}, ["i9", "i2"], ["api"]),
        # no old container, or one that does not run: nothing to run the hook in
        ({"web": state("c2", "i2", "exited")}, ["i9", "i9"], []),
        # the image ID could not be read: run it (the recreate may replace the container)
        ({"api": state("c1", "i1"), "web": state("c2", "i2")}, [], ["api", "web"]),
        ({"api": state("c1", "i1"), "web": state("c2", "i2")}, ["i1", " i2 "], []),
    ],
)
def test_pre_hook_targets(before: dict[str, Any], ids: list[str], targets: list[str]) -> None:
    assert hooks.pre_hook_targets(["api", "web"], before, ids) == targets


@pytest.mark.parametrize(
    ("after", "targets"),
    [
        ({"api": state("c9", "i9"), "web": state("c2", "i2")}, ["api"]),  # web not replaced
        ({"api": state("c9", "i9", "exited")}, []),  # not running: no hook
        ({}, []),
        ({"api": state("c9", "i9"), "new": state("c5", "i5")}, ["api", "new"]),  # new service
    ],
)
def test_post_hook_targets(after: dict[str, Any], targets: list[str]) -> None:
    before = {"api": state("c1", "i1"), "web": state("c2", "i2")}
    assert hooks.post_hook_targets(["api", "web", "new"], before, after) == targets


def test_hook_report_keeps_the_output_tail() -> None:
    result = {"rc": 3, "stdout": "\n".join(f"line {n}" for n in range(30)), "stderr": "boom"}
    report = hooks.hook_report({}, "api", "pre-update", result, "/app/drain")
    report = hooks.hook_report(report, "api", "post-update", {"rc": 0}, "/app/warm")
    assert report["api"]["pre-update"]["rc"] == 3
    tail = report["api"]["pre-update"]["output_tail"].splitlines()
    assert tail[0] == "line 11" and tail[-1] == "boom" and len(tail) == 20
    assert report["api"]["post-update"] == {"command": "/app/warm", "rc": 0, "output_tail": ""}


def event(task: str, kind: str = "runner_on_ok", **res: Any) -> dict[str, Any]:
    return {
        "event": kind,
        "event_data": {
            "task": task,
            "start": T0.isoformat(),
            "end": T0.isoformat(),
            "duration": 1.0,
            "res": {"changed": True, **res},
        },
    }


def stats(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "event": "playbook_on_stats",
        "event_data": {"artifact_data": {"update_executor": report}},
    }


def summarize(events: list[dict[str, Any]], status: UpdateStatus) -> dict[str, Any]:
    return build_summary(
        job_id="j",
        request=UpdateRequest(services=("api",)),
        outcome=RunOutcome(status=status, events=events),
        started_at=T0,
        finished_at=T0,
    ).as_dict()


def test_hook_steps_show_only_when_a_hook_ran() -> None:
    without = summarize(
        [event("Pull | Pull"), stats({"targets": ["api"]})], UpdateStatus.successful
    )
    assert "pre-update" not in [s["name"] for s in without["steps"]]
    assert without["hooks"] == {}
    assert_valid_summary(without)

    ran = {"command": "/app/drain", "rc": 0, "output_tail": "drained"}
    report = {"targets": ["api"], "hooks": {"api": {"pre-update": ran, "bogus": {}}}}
    events = [
        event("Pull | Pull"),
        event("Pre-update | Run the pre-update hook in the container about to be replaced"),
        event("Recreate | Recreate"),
        event(
            "Post-update | Fail the update when the post-update hook failed", "runner_on_skipped"
        ),
        stats(report),
    ]
    summary = summarize(events, UpdateStatus.successful)
    names = [s["name"] for s in summary["steps"]]
    assert names.index("pull") < names.index("pre-update") < names.index("recreate")
    assert "post-update" not in names  # only skipped tasks
    step = next(s for s in summary["steps"] if s["name"] == "pre-update")
    assert (step["status"], step["message"]) == ("changed", "api: exit 0")
    assert summary["hooks"] == {"api": {"pre-update": ran}}
    assert_valid_summary(summary)


def test_a_failed_pre_hook_is_the_error_step() -> None:
    message = "the pre-update hook of service api exited with status 3 (nothing was changed): x"
    events = [
        event("Pre-update | Run the pre-update hook in the container about to be replaced"),
        event(
            "Pre-update | Stop the update when the pre-update hook failed",
            "runner_on_failed",
            msg=message,
        ),
        stats({"targets": ["api"]}),
    ]
    summary = summarize(events, UpdateStatus.failed)
    assert summary["error"] == {"step": "pre-update", "message": message}
    assert_valid_summary(summary)


def test_hook_steps_are_never_planned() -> None:
    assert "pre-update" not in planned_steps(UpdateRequest(services=("api",)))
    assert "post-update" not in planned_steps(UpdateRequest(services=("api",)))
