"""Issue 22: "the default targets are every service whose image comes from the registry" is
decided on both sides: the worker (worker/shared/request.py, which services a job may update)
and the role's preflight (library/update_preflight.py, what a run without services updates,
e.g. a manual `ansible-playbook` run). Both must give the same services for the same compose
project; the role also names the build-only ones it skips."""

from __future__ import annotations

from typing import Any

import pytest

from worker.shared.request import registry_services

from .playbook_code import load

preflight = load("library/update_preflight")
REGISTRY = "registry.example:5000"

PROJECTS: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "seed-shaped",
        {
            "api": {"image": f"{REGISTRY}/shop/api:latest"},
            "worker": {"image": f"{REGISTRY}/shop/api:latest"},
            "init_db": {"image": f"{REGISTRY}/shop/api:latest", "restart": "no"},
            "frontend": {"image": f"{REGISTRY}/shop/frontend:1.2"},
            "db": {"image": "postgres:16"},
            "redis": {"image": "redis:7"},
        },
        ["api", "frontend", "init_db", "worker"],
    ),
    ("build-only", {"web": {"build": "."}, "api": {"image": f"{REGISTRY}/a:1"}}, ["api"]),
    ("built and pushed", {"web": {"build": ".", "image": f"{REGISTRY}/web:dev"}}, ["web"]),
    ("look-alike host", {"web": {"image": f"{REGISTRY}.evil/web:1"}}, []),
    ("same name, other registry", {"web": {"image": f"other.example/{REGISTRY}/web:1"}}, []),
    ("registry without a path", {"web": {"image": REGISTRY}}, []),
    ("nothing", {}, []),
]


@pytest.mark.parametrize(
    ("services", "expected"), [p[1:] for p in PROJECTS], ids=[p[0] for p in PROJECTS]
)
def test_worker_and_role_pick_the_same_default_targets(
    services: dict[str, Any], expected: list[str]
) -> None:
    worker_side = registry_services({"services": services}, REGISTRY)
    image = {name: service.get("image", "") for name, service in services.items()}
    role_side, skipped = preflight.work_out_targets([], list(services), image, REGISTRY)

    assert worker_side == expected
    assert sorted(role_side) == expected
    build_only = sorted(name for name, service in services.items() if not service.get("image"))
    assert sorted(skipped) == build_only
