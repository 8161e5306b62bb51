"""Issue 22: "the default targets are every service whose image comes from the registry" is
decided on both sides: the worker (worker/shared/request.py, which services a job may update)
and the role's preflight (library/update_preflight.py, what a run without services updates,
e.g. a manual `ansible-playbook` run). Both must give the same services for the same compose
project; the role also names the build-only ones it skips."""

from __future__ import annotations

import re
from typing import Any

import jinja2
import pytest
import yaml

from worker.shared.request import registry_services

from .playbook_code import PLAYBOOKS, load

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


def role_registry_host(registry_url: str) -> str:
    """`_compose_update_registry_host` (the role's vars/main.yml), rendered as ansible does
    (its `regex_replace` is `re.sub`): what the preflight's `registry_host` gets."""
    variables = yaml.safe_load((PLAYBOOKS / "vars" / "main.yml").read_text())
    environment = jinja2.Environment(autoescape=False)  # noqa: S701 (not HTML)
    environment.filters["regex_replace"] = lambda value, pattern, replacement: re.sub(
        pattern, replacement, value
    )
    template = environment.from_string(variables["_compose_update_registry_host"])
    return template.render(compose_update_registry_url=registry_url)


@pytest.mark.parametrize(
    "registry_url",
    [
        REGISTRY,
        f"{REGISTRY}/",
        f"https://{REGISTRY}",
        f"https://{REGISTRY}//",
        f"http://{REGISTRY}",
    ],
)
def test_both_sides_read_registry_url_the_same_way(registry_url: str) -> None:
    """REGISTRY_URL reaches the role as compose_update_registry_url (worker/host/jobs.py),
    which takes the host out of it; the worker's allow-list must read it the same way, or a
    URL with a scheme gives the role targets and the worker none ("no update services")."""
    services = PROJECTS[0][1]
    image = {name: service.get("image", "") for name, service in services.items()}
    role_side, _ = preflight.work_out_targets(
        [], list(services), image, role_registry_host(registry_url)
    )
    worker_side = registry_services({"services": services}, registry_url)
    assert worker_side == sorted(role_side) == PROJECTS[0][2]
