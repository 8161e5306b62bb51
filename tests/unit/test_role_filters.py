# ruff: noqa: E501 (tables of facts and commands read better unwrapped)
"""The role's decisions that do not belong in YAML (filter_plugins/compose_update_plan.py): which
image a reference points at, which one-shot jobs run and how, the rollback plan (issue 13)."""

from __future__ import annotations

from typing import Any

import pytest

from .playbook_code import load

plan = load("filter_plugins/compose_update_plan")

IMAGES = [
    {"Id": "sha256:new", "RepoTags": ["reg/app:latest"], "RepoDigests": ["reg/app@sha256:d1"]},
    {"Id": "sha256:web", "RepoTags": ["reg/web:2"], "RepoDigests": []},
]


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("reg/app:latest", "sha256:new"),
        ("reg/app", "sha256:new"),  # no tag means :latest
        ("reg/app@sha256:d1", "sha256:new"),
        ("reg/web:2", "sha256:web"),
        ("reg/web", ""),  # :latest of web is not there
        ("reg:5000/other", ""),
    ],
)
def test_image_ids_by_tag_or_digest(reference: str, expected: str) -> None:
    assert plan.image_ids(IMAGES, [reference]) == {reference: expected}


def entry(image_id: str, state: str = "running", container: str = "c") -> dict[str, Any]:
    return {"container_id": container, "image_id": image_id, "digest": None, "state": state}


SERVICE_IMAGE = {"api": "reg/app", "worker": "reg/app", "init": "reg/app", "seed": "reg/app"}
RESTART = {"api": "", "worker": "", "init": "no", "seed": "no"}


@pytest.mark.parametrize(
    ("before", "states", "current", "expected"),
    [
        # A new image: init is due and runs in api's `up --wait` (api waits for it); seed after api.
        (
            {"api": entry("old"), "worker": entry("old"), "init": entry("old", "exited"),
             "seed": entry("old", "exited")},
            {"init": {"status": "exited", "exit_code": 0}, "seed": {"status": "exited", "exit_code": 0}},
            {"reg/app": "new"},
            {"long": ["api", "worker"], "with_up": ["init"], "before": [], "after": ["seed"]},
        ),
        # Nothing new and the jobs succeeded last time: left alone (`up` would run them again).
        (
            {"api": entry("new"), "worker": entry("new"), "init": entry("new", "exited"),
             "seed": entry("new", "exited")},
            {"init": {"status": "exited", "exit_code": 0}, "seed": {"status": "exited", "exit_code": 0}},
            {"reg/app": "new"},
            {"long": ["api", "worker"], "with_up": [], "before": [], "after": []},
        ),
        # A failed last run is due again; no container yet is due.
        (
            {"api": entry("new"), "worker": entry("new"), "init": entry("new", "exited"), "seed": None},
            {"init": {"status": "exited", "exit_code": 1}},
            {"reg/app": "new"},
            {"long": ["api", "worker"], "with_up": ["init"], "before": [], "after": ["seed"]},
        ),
    ],
)  # fmt: skip
def test_the_oneshot_plan(
    before: dict[str, Any],
    states: dict[str, Any],
    current: dict[str, str],
    expected: dict[str, Any],
) -> None:
    waits = {"api": ["init"], "worker": ["init"]}
    deps = {"api": ["init"], "worker": ["init"], "init": [], "seed": ["api"]}
    targets = ["api", "worker", "init", "seed"]
    made = plan.oneshot_plan(targets, SERVICE_IMAGE, RESTART, waits, before, states, current)
    assert plan.oneshot_groups(made, deps) == expected


def test_a_oneshot_nobody_waits_for_runs_before_the_services() -> None:
    made = plan.oneshot_plan(["api", "init"], SERVICE_IMAGE, RESTART, {}, {"api": None}, {}, {})
    assert plan.oneshot_groups(made, {"init": []}) == {
        "long": ["api"], "with_up": [], "before": ["init"], "after": [],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        # api got a new image, worker is untouched, seed is new: restore api, stop seed.
        (
            {"api": entry("v1"), "worker": entry("v1"), "init": entry("v1", "exited"), "seed": None},
            {"api": entry("v2"), "worker": entry("v1"), "init": entry("v1", "exited"),
             "seed": entry("v2")},
            {"services": ["api"], "new": ["seed"], "tags": {"reg/app": "v1"}, "long": ["api"],
             "oneshots": []},
        ),
        # A recreate cut off between stop and start: worker has the old image but stopped.
        (
            {"api": entry("v1"), "worker": entry("v1")},
            {"api": entry("v2"), "worker": entry("v1", "exited")},
            {"services": ["api", "worker"], "new": [], "tags": {"reg/app": "v1"},
             "long": ["api", "worker"], "oneshots": []},
        ),
        # A one-shot job with a new image is recreated without running.
        (
            {"init": entry("v1", "exited")},
            {"init": entry("v2", "exited")},
            {"services": ["init"], "new": [], "tags": {"reg/app": "v1"}, "long": [],
             "oneshots": ["init"]},
        ),
        # Nothing changed: nothing to do.
        ({"api": entry("v1")}, {"api": entry("v1")},
         {"services": [], "new": [], "tags": {"reg/app": "v1"}, "long": [], "oneshots": []}),
    ],
)  # fmt: skip
def test_the_rollback_plan(
    before: dict[str, Any], after: dict[str, Any], expected: dict[str, Any]
) -> None:
    targets = list(before)
    assert plan.rollback_plan(targets, before, after, SERVICE_IMAGE, RESTART) == expected


def test_a_reference_pinned_by_digest_is_never_retagged() -> None:
    images = {"api": "reg/app@sha256:d1"}
    made = plan.rollback_plan(["api"], {"api": entry("v1")}, {"api": entry("v2")}, images, {})
    assert made["tags"] == {}


def test_the_manual_commands_reach_the_same_daemon() -> None:
    made = {"tags": {"reg/app": "v1"}, "long": ["api"], "oneshots": ["init"], "new": ["seed"]}
    commands = plan.rollback_manual(
        made, "/srv/app", ["/srv/app/a.yml", "b.yml"], "app", "unix:///d"
    )
    cli = "docker compose --project-directory /srv/app --file /srv/app/a.yml --file b.yml --project-name app"
    assert commands == [
        "export DOCKER_HOST=unix:///d",
        "docker image tag v1 reg/app",
        cli + " up -d --no-deps --pull never --no-build --wait api",
        cli + " up --no-start --no-deps --pull never --no-build init",
        cli + " stop seed",
    ]


def test_the_rollback_report_and_check() -> None:
    made = {"services": ["api", "init"], "new": ["seed"]}
    snapshot = {"api": entry("v1"), "init": entry("v1", "created"), "seed": entry("v2", "exited")}
    states = {"api": {"status": "running", "health": "healthy"}, "init": {"status": "created"},
              "seed": {"status": "exited"}}  # fmt: skip
    report = plan.rollback_report(["api", "worker", "init", "seed"], made, snapshot, states)
    assert report == {
        "api": {"image_id": "v1", "health": "healthy", "action": "restored"},
        "worker": None,
        "init": {"image_id": "v1", "health": "exited", "action": "restored"},
        "seed": {"image_id": "v2", "health": "exited", "action": "stopped"},
    }
    assert plan.rollback_check(made, report, {"api": entry("v1"), "init": entry("v1")}) == []
    assert plan.rollback_check(made, report, {"api": entry("v0"), "init": entry("v1")}) == ["api"]


def test_the_image_changes_for_diff() -> None:
    changes = plan.image_changes(
        ["api", "web"], {"api": "reg/app", "web": "reg/web"}, {"api": entry("v1"), "web": None},
        {"reg/app": "v2"},
    )  # fmt: skip
    assert changes == {
        "before": "api: v1\nweb: (no container)\n",
        "after": "api: v2\nweb: (not pulled)\n",
    }
