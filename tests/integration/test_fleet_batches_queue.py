"""A fleet in batches through the queue (issue 24): the worker's settings UPDATE_SERIAL=1,2,
UPDATE_BATCH_PAUSE and UPDATE_FLEET_ROLLBACK reach playbooks/update.yml, whose fleet plays
update the canary `bed` alone first, then `second`; a failed batch stops the next one, and a
fleet rollback puts the earlier batches back. The site is test_fleet_queue.py's: the shared
deployment on the bed's daemon (host `bed`) and a copy on a second private dockerd (host
`second`), one inventory of both (`fleet_site`). A job without `hosts` updates the group.

The scenarios each take their own before state and publish their own version; the first run
(canary first, migrations once) is read by two tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import pytest

from testbed import Stack
from tests.integration.conftest import Deployment
from tests.integration.test_fleet_queue import Fleet, fleet_site, run_job
from worker.host.settings import Settings
from worker.shared.client import UpdateClient

HOSTS = ("bed", "second")
PAUSE_S = 2
# The migration command of the failed-batch scenario: a script on each host's /data volume
# (it outlives the recreate), which succeeds on one host and fails on the other.
PER_HOST_MIGRATION = "/data/fleet-migrate"


@pytest.fixture(scope="module")
def batches(
    shared_deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """The two-host site, its worker updating in batches of 1 then 2 (the canary, then the
    rest), with a pause between them."""
    inventory = tmp_path_factory.mktemp("batches") / "inventory"
    with fleet_site(shared_deployment, inventory) as made:
        yield replace(
            made, settings=made.settings.model_copy(update=dict(serial="1,2", batch_pause=PAUSE_S))
        )


def stacks(fleet: Fleet) -> dict[str, Stack]:
    return {"bed": fleet.deployment.stack, "second": fleet.second}


def api_started(fleet: Fleet) -> dict[str, datetime]:
    """When each host's api container started (the recreate's moment)."""
    name = f"{fleet.deployment.project}-api"
    return {
        host: datetime.fromisoformat(
            stack.docker("inspect", "-f", "{{.State.StartedAt}}", name).stdout.strip()
        )
        for host, stack in stacks(fleet).items()
    }


def health(fleet: Fleet) -> dict[str, str]:
    name = f"{fleet.deployment.project}-api"
    return {
        host: stack.docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()
        for host, stack in stacks(fleet).items()
    }


def migrations_log(fleet: Fleet, host: str) -> str:
    return (
        stacks(fleet)[host]
        .docker(
            "exec", f"{fleet.deployment.project}-api", "cat", "/data/migrations.log", check=False
        )
        .stdout
    )


@contextlib.contextmanager
def group_vars(fleet: Fleet, **variables: Any) -> Iterator[None]:
    """The fleet group's variables (in the inventory's group_vars, written by
    test_fleet_queue.write_inventory) with `variables` added while the block runs: what an
    operator writes (the worker reads the inventory again for each job)."""
    path = fleet.settings.inventory / "group_vars" / "update_hosts.yml"
    saved = path.read_text()
    path.write_text(json.dumps({**json.loads(saved), **variables}))
    try:
        yield
    finally:
        path.write_text(saved)


def held_locks(fleet: Fleet) -> list[str]:
    """The update locks of this deployment's project left in UPDATE_LOCK_DIR (one per daemon
    while an update runs; none after it)."""
    return sorted(
        p.name for p in fleet.settings.lock_dir.glob(f"{fleet.deployment.project}.*.lock")
    )


async def update_fleet(settings: Settings) -> dict[str, Any]:
    """A job without `hosts` (the UI's): the default group, both hosts."""
    async with await UpdateClient.connect(settings) as client:
        job_id = (await client.submit_update(services=["api", "worker"])).job_id
    return await run_job(settings, job_id)


@dataclass
class CanaryRun:
    fleet: Fleet
    summary: dict[str, Any]
    new: str
    before_images: dict[str, dict[str, str]]
    started: dict[str, datetime]
    health: dict[str, str]
    logs: dict[str, str]
    version: str


@pytest.fixture(scope="module")
def canary_first(batches: Fleet) -> CanaryRun:
    """One update of both hosts in batches [bed], [second], with the migrations once
    (`compose_update_migrations_once: true` in the group's variables: hosts sharing one
    database). Recorded for the tests that read it."""
    deployment = batches.deployment
    version = deployment.next_version()
    new = deployment.publish(deployment.app_repo, version)
    before = batches.images()
    settings = batches.on_fresh_queue()
    started = time.monotonic()
    with group_vars(batches, compose_update_migrations_once=True):
        summary = asyncio.run(update_fleet(settings))
    print(f"\ntwo hosts in batches 1,2 (pause {PAUSE_S} s) in {time.monotonic() - started:.1f} s")
    return CanaryRun(
        fleet=batches,
        summary=summary,
        new=new,
        before_images=before,
        started=api_started(batches),
        health=health(batches),
        logs={host: migrations_log(batches, host) for host in HOSTS},
        version=version,
    )


def test_the_canary_is_updated_alone_first_then_the_others(canary_first: CanaryRun) -> None:
    summary = canary_first.summary
    assert summary["status"] == "successful", summary["hosts"]
    assert summary["batches"] == [["bed"], ["second"]]
    assert list(summary["hosts"]) == list(HOSTS)
    after = canary_first.fleet.images()
    for host in HOSTS:
        entry = summary["hosts"][host]
        assert entry["status"] == "successful" and entry["error"] is None
        assert entry["batch"] == HOSTS.index(host)
        assert entry["services"]["api"]["updated"] is True
        assert entry["services"]["api"]["after"]["image_id"] == canary_first.new
        assert {after[host]["api"], after[host]["worker"]} == {canary_first.new}
        assert after[host]["api"] != canary_first.before_images[host]["api"]
    assert canary_first.health == {"bed": "healthy", "second": "healthy"}
    # The second batch was recreated after the canary's update and the pause.
    gap = (canary_first.started["second"] - canary_first.started["bed"]).total_seconds()
    assert gap >= PAUSE_S, canary_first.started


def test_the_migrations_run_once_on_the_canary(canary_first: CanaryRun) -> None:
    migrated = f"migrated {canary_first.version}"
    hosts = canary_first.summary["hosts"]
    assert hosts["bed"]["migrations"]["ran"] is True
    assert migrated in canary_first.logs["bed"]
    assert hosts["second"]["migrations"]["ran"] is False
    assert migrated not in canary_first.logs["second"]


async def test_an_unhealthy_canary_is_rolled_back_and_the_other_host_is_untouched(
    batches: Fleet,
) -> None:
    deployment = batches.deployment
    before_images, before_containers = batches.images(), batches.containers()
    deployment.publish(deployment.app_repo, deployment.next_version(), "unhealthy")

    summary = await update_fleet(batches.on_fresh_queue())

    assert summary["status"] == "failed"
    assert summary["batches"] == [["bed"]]  # the second batch never started
    canary = summary["hosts"]["bed"]
    assert canary["status"] == "failed" and canary["rolled_back"] is True
    assert canary["error"]["step"] == "recreate"
    assert summary["error"]["step"] == "recreate"
    assert summary["error"]["message"].startswith("bed: ")
    assert summary["hosts"]["second"]["status"] == "not_started"
    assert summary["hosts"]["second"]["batch"] is None
    after_images, after_containers = batches.images(), batches.containers()
    assert after_images["bed"] == before_images["bed"]  # back on the images it ran
    assert health(batches)["bed"] == "healthy"
    assert after_containers["second"] == before_containers["second"]  # never recreated
    assert after_images["second"] == before_images["second"]
    assert held_locks(batches) == []


async def test_a_failed_second_batch_with_fleet_rollback_leaves_every_host_on_the_old_version(
    batches: Fleet,
) -> None:
    deployment = batches.deployment
    # The migration succeeds on bed (the canary) and fails on second (the second batch).
    scripts = {"bed": "#!/bin/sh\nexec /app/migrate\n", "second": "#!/bin/sh\nexit 3\n"}
    for host, script in scripts.items():
        stacks(batches)[host].docker(
            "exec", "-i", f"{deployment.project}-api", "sh", "-c",
            f"cat >{PER_HOST_MIGRATION} && chmod 0755 {PER_HOST_MIGRATION}",
            input=script,
        )  # fmt: skip
    before = batches.images()
    new = deployment.publish(deployment.app_repo, deployment.next_version())
    settings = batches.on_fresh_queue().model_copy(
        update=dict(fleet_rollback=True, migration_command=PER_HOST_MIGRATION)
    )

    summary = await update_fleet(settings)

    assert summary["status"] == "failed"
    assert summary["batches"] == [["bed"], ["second"]]
    second = summary["hosts"]["second"]
    assert second["status"] == "failed" and second["rolled_back"] is True
    assert second["error"]["step"] == "migrations"
    assert summary["error"]["message"].startswith("second: ")
    bed = summary["hosts"]["bed"]
    assert bed["status"] == "successful"
    assert bed["services"]["api"]["after"]["image_id"] == new  # it was updated, then reverted
    assert bed["reverted"] is not None and bed["reverted"]["rolled_back"] is True
    assert batches.images() == before
    assert health(batches) == {"bed": "healthy", "second": "healthy"}
    assert held_locks(batches) == []
