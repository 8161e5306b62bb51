"""The bench's peer (issue 20, way P: bench/variants/peer.yml, the playbook an operator writes with
community.docker alone) updates a stack shaped like the real application on the test bed, with
the registry's login, as `make bench` runs it; and its one-shot step runs a one-shot service on
its own when nothing waits for it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.deployment import Deployment
from bench.project import StackShape
from bench.timing import TimingFile
from bench.ways import way_p
from testbed import registry_image_id
from testbed.stack import Stack

PEER_TASKS = [
    "Log in to the registry",
    "Pull the new images of the services",
    "Recreate the services and wait until they are healthy",
    "Run the database migration",
]


@pytest.fixture(scope="module")
def real_dep(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Bench case 4's stack: db, redis, frontend local; api, worker and the one-shot init (both
    wait for it) on the registry image."""
    dep = Deployment(
        stack,
        f"peer{secrets.token_hex(3)}",
        StackShape(6, 3, real=True),
        tmp_path_factory.mktemp("peer"),
    )
    dep.deploy()
    try:
        yield dep
    finally:
        dep.down()


def _migrations(dep: Deployment) -> list[str]:
    done = dep.compose("exec", "-T", "api", "cat", "/data/migrations.log")
    return done.stdout.splitlines()


def _new_version(dep: Deployment) -> tuple[str, str]:
    """Publish a version to the registry only; return its image ID and its migration line."""
    dep.publish()
    repo = dep.repos[0]
    return registry_image_id(dep.stack, repo), f"migrated {dep.published}.app"


def test_peer_updates_every_target_with_four_module_processes(
    real_dep: Deployment, tmp_path: Path
) -> None:
    image_id, line = _new_version(real_dep)
    result = way_p(real_dep, 4, 1, TimingFile(tmp_path / "timing.jsonl"))
    running = real_dep.running()
    assert {s: running[s] for s in real_dep.targets} == dict.fromkeys(real_dep.targets, image_id)
    # init (in the same `up --wait`) and the migration in api both ran the new version.
    assert _migrations(real_dep)[-2:] == [line, line]
    assert [name for name, _, _ in result.process_tasks] == PEER_TASKS
    assert result.tasks["module_processes"] == 4
    # The login went into the run's own Docker config, removed afterwards.
    assert not (real_dep.directory / "docker-config-p").exists()


def test_peer_runs_a_one_shot_nothing_waits_for_on_its_own(
    real_dep: Deployment, tmp_path: Path
) -> None:
    image_id, line = _new_version(real_dep)
    result = way_p(real_dep, 4, 1, TimingFile(tmp_path / "timing.jsonl"), oneshot=("init",))
    running = real_dep.running()
    assert (running["api"], running["worker"]) == (image_id, image_id)
    assert _migrations(real_dep)[-2:] == [line, line]
    names = [name for name, _, _ in result.process_tasks]
    assert names == [*PEER_TASKS[:3], "Run the one-shot services", PEER_TASKS[3]]
    assert result.tasks["module_processes"] == 5
