"""The state after the recreate from docker_compose_v2's own result (filter
compose_update_state_after, issue 20): the same {snapshot, states} compose_snapshot would record,
or None when compose's result does not say everything (then compose_snapshot runs)."""

from __future__ import annotations

from typing import Any

import pytest

from .playbook_code import load

plan = load("filter_plugins/compose_update_plan")
snapshot = load("library/compose_snapshot")

NEW = "sha256:" + "b" * 64
OLD = "sha256:" + "a" * 64
DB = "sha256:" + "d" * 64
SERVICE_IMAGE = {"api": "reg:5000/shop/app:2", "init": "reg:5000/shop/app:2", "db": "postgres:16"}


def container(
    service: str, state: str = "running", health: str = "", **extra: Any
) -> dict[str, Any]:
    name = f"shop-{service}-1"
    return {"ID": "c-" + service, "Name": name, "Service": service, "State": state,
            "Health": health, "ExitCode": 0, "Image": SERVICE_IMAGE[service], **extra}  # fmt: skip


def used(service: str, image_id: str) -> dict[str, Any]:
    return {"ContainerName": f"shop-{service}-1", "ID": image_id, "Repository": "x", "Tag": "y"}


IMAGE_INFO = [
    {"Id": NEW, "RepoDigests": ["reg:5000/shop/app@sha256:" + "1" * 64]},
    {"Id": DB, "RepoDigests": ["postgres@sha256:" + "2" * 64]},
]
RECREATE = {
    "changed": True,
    "containers": [
        container("api", health="healthy"),
        container("init", state="exited"),
        container("db"),
        {**container("api"), "Name": "shop-api-2", "ID": "c-api-2"},  # a replica: the first counts
    ],
    "images": [used("api", NEW), used("init", NEW), used("db", DB), used("api-2", NEW)],
}


def test_the_state_after_is_read_from_compose_and_the_image_info() -> None:
    after = plan.state_after(RECREATE, ["api", "init", "db", "worker"], SERVICE_IMAGE, IMAGE_INFO)
    assert after["snapshot"] == {
        "api": {"container_id": "c-api", "image_id": NEW, "digest": "sha256:" + "1" * 64,
                "state": "running"},
        "init": {"container_id": "c-init", "image_id": NEW, "digest": "sha256:" + "1" * 64,
                 "state": "exited"},
        "db": {"container_id": "c-db", "image_id": DB, "digest": "sha256:" + "2" * 64,
               "state": "running"},
        "worker": None,  # no container
    }  # fmt: skip
    assert after["states"]["api"] == {
        "status": "running", "running": True, "exit_code": 0, "health": "healthy"
    }  # fmt: skip
    assert after["states"]["init"]["running"] is False and "worker" not in after["states"]


@pytest.mark.parametrize(
    ("recreate", "images"),
    [
        ({"changed": False, "skipped": True}, IMAGE_INFO),  # compose did not run: nothing reported
        ({**RECREATE, "images": [used("api", NEW)]}, IMAGE_INFO),  # no image for init
        (RECREATE, IMAGE_INFO[:1]),  # the image info does not know db's image: no digest
        (None, IMAGE_INFO),
    ],
)
def test_compose_snapshot_asks_docker_when_compose_did_not_say_everything(
    recreate: dict[str, Any] | None, images: list[dict[str, Any]]
) -> None:
    assert plan.state_after(recreate, ["api", "init", "db"], SERVICE_IMAGE, images) is None


@pytest.mark.parametrize(
    ("reference", "repo_digests"),
    [
        ("reg:5000/shop/app:2", ["reg:5000/shop/app@sha256:1"]),
        ("postgres:16", ["postgres@sha256:2"]),
        ("docker.io/library/postgres:16", ["postgres@sha256:2"]),
        ("redis", ["redis@sha256:3", "other/redis@sha256:4"]),
        ("reg/app@sha256:9", ["reg/app@sha256:9"]),
        ("reg/app:1", ["reg/other@sha256:5"]),
        ("reg/app:1", []),
    ],
)
def test_the_digest_rule_is_compose_snapshots(reference: str, repo_digests: list[str]) -> None:
    assert plan._digest_of(reference, repo_digests) == snapshot.digest_of(reference, repo_digests)
