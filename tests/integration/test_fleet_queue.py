"""A fleet from one queue, the worker's side (issue 24): the worker's inventory
(UPDATE_INVENTORY) has two hosts, both this machine, each with its own private dockerd
(`compose_update_docker_host` in host_vars) running its own copy of the deployment. A job's
`hosts` picks among them through the queue; a name the inventory lacks, or a pattern, is
refused and nothing runs. One site for the module: the bed's daemon (`bed`, the shared
deployment) and a second daemon (`second`)."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from arq.constants import job_key_prefix
from arq.jobs import serialize_job

from testbed import Stack
from testbed.containers import container_ids, running_image_ids
from testbed.dockerd import another_dockerd
from testbed.project import local_image
from tests.integration.conftest import Deployment, run_worker_burst
from tests.summary_schema import assert_valid_summary
from worker.host.settings import Settings
from worker.shared.client import UpdateClient
from worker.shared.request import InvalidRequest, UpdateRequest
from worker.shared.signing import client_codec

VALID_NAMES = "all, bed, second, ungrouped, update_hosts"


@dataclass
class Fleet:
    deployment: Deployment  # the bed's daemon: inventory host `bed`
    second: Stack  # the bed with DOCKER_HOST on the second daemon: inventory host `second`
    settings: Settings  # the deployment's, with UPDATE_INVENTORY the fleet's

    def images(self) -> dict[str, dict[str, str]]:
        return {
            "bed": running_image_ids(self.deployment.stack, self.deployment.project),
            "second": running_image_ids(self.second, self.deployment.project),
        }

    def containers(self) -> dict[str, dict[str, str]]:
        return {
            "bed": container_ids(self.deployment.stack, self.deployment.project),
            "second": container_ids(self.second, self.deployment.project),
        }

    def on_fresh_queue(self) -> Settings:
        return self.settings.model_copy(
            update=dict(queue_name=f"{self.settings.queue_name}:{uuid.uuid4().hex[:8]}")
        )


def write_inventory(directory: Path, daemons: dict[str, str]) -> Path:
    """hosts (group update_hosts: bed, second), group_vars (both local), host_vars (each its
    daemon): what an operator writes for a fleet."""
    (directory / "group_vars").mkdir(parents=True)
    (directory / "host_vars").mkdir()
    (directory / "hosts").write_text("[update_hosts]\n" + "".join(f"{h}\n" for h in daemons))
    group_vars = {
        "ansible_connection": "local",
        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
    }
    (directory / "group_vars" / "update_hosts.yml").write_text(json.dumps(group_vars))
    for host, address in daemons.items():
        (directory / "host_vars" / f"{host}.yml").write_text(
            json.dumps({"compose_update_docker_host": address})
        )
    return directory


@contextlib.contextmanager
def fleet_site(deployment: Deployment, inventory: Path) -> Iterator[Fleet]:
    """The deployment (version 1, on the bed's daemon: host `bed`) copied to a second private
    dockerd (host `second`), and a fleet inventory of both written at `inventory`; the second
    copy goes at the end. test_fleet_batches_queue.py builds its site with it too."""
    stack = deployment.stack
    with another_dockerd("ue-fl-") as other:
        second = replace(stack, docker_host=other)
        # The same deployment, version 1, on the second daemon: the local images built there,
        # the registry's pulled.
        local_image(second, "db")
        local_image(second, "cache")
        for repo in (deployment.app_repo, deployment.frontend_repo):
            second.docker("pull", f"{stack.registry}/{repo}:latest", logged_in=True)
        second.compose(deployment.compose_file, deployment.project, "up", "-d", "--wait")
        write_inventory(inventory, {"bed": stack.docker_host, "second": other})
        settings = deployment.settings.model_copy(update=dict(inventory=inventory))
        try:
            yield Fleet(deployment, second, settings)
        finally:
            second.compose(
                deployment.compose_file,
                deployment.project,
                "down",
                "--volumes",
                "--timeout",
                "1",
                check=False,
            )


@pytest.fixture(scope="module")
def fleet(
    shared_deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    with fleet_site(shared_deployment, tmp_path_factory.mktemp("fleet") / "inventory") as made:
        yield made


async def run_job(settings: Settings, job_id: str) -> dict[str, Any]:
    """Run the real worker until the queue is empty; the job's valid summary."""
    async with await UpdateClient.connect(settings) as client:
        assert (await client.status(job_id))["state"] == "queued"
        await run_worker_burst(settings)
        status = await client.status(job_id)
    assert status["state"] == "finished", status
    return assert_valid_summary(status["summary"])


async def test_a_job_naming_one_host_updates_that_host_only(fleet: Fleet) -> None:
    settings = fleet.on_fresh_queue()
    newest = fleet.deployment.publish(fleet.deployment.app_repo, fleet.deployment.next_version())
    before_images, before_containers = fleet.images(), fleet.containers()

    started = time.monotonic()
    async with await UpdateClient.connect(settings) as client:
        job_id = (await client.submit_update(hosts=["second"])).job_id
    summary = await run_job(settings, job_id)
    print(f"\none host of two updated through the queue in {time.monotonic() - started:.1f} s")

    assert summary["status"] == "successful", summary["error"]
    assert summary["request"]["hosts"] == ["second"]
    after = fleet.images()
    assert {after["second"][s] for s in ("api", "worker")} == {newest}
    assert after["second"]["api"] != before_images["second"]["api"]
    # The other host was not touched: the same containers, the same images.
    assert fleet.containers()["bed"] == before_containers["bed"]
    assert after["bed"] == before_images["bed"]


# A name the inventory lacks (the client cannot know: the worker refuses it), then patterns
# (the client refuses them before anything is queued, and so does the worker).
REFUSED = {
    "nope": f"hosts not in the inventory: nope (valid host and group names: {VALID_NAMES})",
    "second,web1": f"hosts not in the inventory: web1 (valid host and group names: {VALID_NAMES})",
    "Bed": f"hosts not in the inventory: Bed (valid host and group names: {VALID_NAMES})",
    "web*": "job refused: invalid host name at hosts[0]",
    "all:!web1": "job refused: invalid host name at hosts[0]",
    "bed&second": "job refused: invalid host name at hosts[0]",
    "~b.*": "job refused: invalid host name at hosts[0]",
    "{{ 'bed' }}": "job refused: invalid host name at hosts[0]",
}


async def test_a_job_naming_an_unknown_host_or_a_pattern_is_refused_and_nothing_runs(
    fleet: Fleet,
) -> None:
    settings = fleet.on_fresh_queue()
    before = fleet.containers()
    codec = client_codec(settings)
    jobs = {}
    async with await UpdateClient.connect(settings) as client:
        for case, expected in REFUSED.items():
            hosts = case.split(",")
            if "invalid host name" in expected:
                with pytest.raises(InvalidRequest, match="invalid host name"):
                    await client.submit_update(hosts=hosts)
            else:
                UpdateRequest.parse({"hosts": hosts})  # a valid request: only the worker knows
            # The job, signed, straight into the queue (as a writer holding the secret could):
            # all of them, then one worker run.
            job_id = uuid.uuid4().hex
            now_ms = int(time.time() * 1000)
            raw = serialize_job(
                "process_system_update",
                (),
                {"hosts": hosts},
                None,
                now_ms,
                serializer=codec.serialize,
            )
            await client.redis.psetex(job_key_prefix + job_id, 600_000, raw)
            await client.redis.zadd(settings.queue_name, {job_id: now_ms - 1000})
            jobs[case] = job_id
        await run_worker_burst(settings)
        refused = {}
        for case, job_id in jobs.items():
            status = await client.status(job_id)
            assert status["state"] == "finished", status
            summary = assert_valid_summary(status["summary"])
            assert summary["status"] == "failed" and summary["steps"] == [], summary  # not run
            refused[case] = summary["error"]["message"]
    for case, message in refused.items():
        print(f"{case!r:16} -> {message}")
    assert {case: message[: len(REFUSED[case])] for case, message in refused.items()} == REFUSED
    assert fleet.containers() == before
