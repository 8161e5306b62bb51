"""A fleet host reached over SSH (issue 24): the worker's inventory has `bed` (this machine,
connection local, the bed's daemon) and `remote`, reached with Ansible's ssh connection
(testbed/sshhost.py: Debian's sshd on a loopback port, key authentication, a user of its own
that becomes root with sudo, host keys checked against the host's known_hosts) and updating
its own dockerd: test_fleet_queue.py's `second` daemon and its copy of the deployment.
Through the queue: a job naming `remote` updates its stack over SSH; with its sshd stopped,
or frozen, the job fails with `remote` unreachable, `bed` is updated as in a plain run, and
the job ends within the connection timeout (inventory `ansible_ssh_timeout`), nothing hangs."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testbed import Stack
from testbed.containers import containers
from testbed.faults import lock_path, rollback_point_path
from testbed.sshhost import SshHost, ssh_host, user_exists
from tests.integration.conftest import Deployment
from tests.integration.test_fleet_queue import (
    Fleet,
    fleet,  # noqa: F401 - the fixture: its second daemon and deployment become `remote`'s
    run_job,
    write_inventory,
)
from worker.host.settings import Settings
from worker.shared.client import UpdateClient

# Seconds Ansible waits to connect (ssh ConnectTimeout, which also bounds the banner and the
# key exchange): short, so a dead host fails fast.
SSH_TIMEOUT = 5
# What a job costs besides the connection attempt to a dead host: ansible-playbook's start,
# the inventory, the summary (measured ~8-15 s on the loaded 2-CPU machine).
JOB_OVERHEAD = 45


@dataclass
class SshFleet:
    fleet: Fleet
    host: SshHost
    settings: Settings  # the deployment's, UPDATE_INVENTORY with `bed` and `remote`

    @property
    def deployment(self) -> Deployment:
        return self.fleet.deployment

    @property
    def remote(self) -> Stack:
        return self.fleet.second  # the bed's CLI on the SSH host's daemon

    def on_fresh_queue(self) -> Settings:
        return self.settings.model_copy(
            update=dict(queue_name=f"{self.settings.queue_name}:{uuid.uuid4().hex[:8]}")
        )

    def state(self) -> dict[str, dict[str, tuple[str, str, str | None]]]:
        """host -> service -> (container ID, image ID, health)."""
        stacks = {"bed": self.deployment.stack, "remote": self.remote}
        return {
            host: {
                name: (c.container_id, c.image_id, c.health)
                for name, c in containers(stack, self.deployment.project).items()
            }
            for host, stack in stacks.items()
        }

    def released(self, stack: Stack) -> bool:
        """Neither the lock nor a rollback point of the project is left for that daemon."""
        lock_dir, project = self.settings.lock_dir, self.deployment.project
        return (
            not lock_path(stack, lock_dir, project).exists()
            and not rollback_point_path(stack, lock_dir, project).exists()
        )

    def logins(self) -> int:
        """How many times the SSH host's sshd let Ansible's key in."""
        log = (self.host.base_dir / "sshd.log").read_text(errors="replace")
        return log.count(f"Accepted publickey for {self.host.user} from 127.0.0.1")


@pytest.fixture(scope="module")
def ssh_fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SshFleet]:
    base: Fleet = request.getfixturevalue("fleet")
    with ssh_host(base.second.docker_host) as host:
        inventory = write_inventory(
            tmp_path_factory.mktemp("fleet-ssh") / "inventory",
            {"bed": base.deployment.stack.docker_host, "remote": base.second.docker_host},
        )
        # host_vars win over the group's `ansible_connection: local`.
        (inventory / "host_vars" / "remote.yml").write_text(
            json.dumps(host.inventory_vars(timeout=SSH_TIMEOUT))
        )
        settings = base.deployment.settings.model_copy(update=dict(inventory=inventory))
        yield SshFleet(base, host, settings)
        user = host.user
    # Nothing of the SSH host is left: the user, its sudoers drop-in, its dir, sshd.
    assert not user_exists(user)
    assert not (Path("/etc/sudoers.d") / user).exists()
    assert not host.base_dir.exists()
    assert not host.sshd.running()


def healthy(services: dict[str, tuple[str, str, str | None]]) -> bool:
    return all(health in (None, "healthy") for _, _, health in services.values())


async def test_a_job_naming_the_ssh_host_updates_its_stack_over_ssh(ssh_fleet: SshFleet) -> None:
    settings = ssh_fleet.on_fresh_queue()
    deployment = ssh_fleet.deployment
    newest = deployment.publish(deployment.app_repo, deployment.next_version())
    before, logins_before = ssh_fleet.state(), ssh_fleet.logins()

    started = time.monotonic()
    async with await UpdateClient.connect(settings) as client:
        job_id = (await client.submit_update(hosts=["remote"])).job_id
    summary = await run_job(settings, job_id)
    print(f"\nthe SSH host updated through the queue in {time.monotonic() - started:.1f} s")

    assert summary["status"] == "successful", summary["error"]
    assert summary["request"]["hosts"] == ["remote"]
    assert summary["compose_project"] == deployment.project
    assert summary["stats"]["unreachable"] == 0 and summary["stats"]["failures"] == 0
    after = ssh_fleet.state()
    for service in ("api", "worker"):
        container_before, image_before, _ = before["remote"][service]
        container_after, image_after, _ = after["remote"][service]
        assert image_after == newest != image_before
        assert container_after != container_before
        reported = summary["services"][service]
        assert reported["updated"] is True
        assert reported["after"]["image_id"] == newest
        assert reported["before"]["image_id"] == image_before
    assert healthy(after["remote"]), after["remote"]
    # Over SSH, as its user with the key (sudo to root for the steps), and released there.
    assert ssh_fleet.logins() > logins_before
    assert ssh_fleet.released(ssh_fleet.remote)
    # The local host was not touched.
    assert after["bed"] == before["bed"]


async def test_a_job_with_the_ssh_hosts_sshd_stopped_fails_that_host_and_updates_the_other(
    ssh_fleet: SshFleet,
) -> None:
    settings = ssh_fleet.on_fresh_queue()
    deployment = ssh_fleet.deployment
    newest = deployment.publish(deployment.app_repo, deployment.next_version())
    before = ssh_fleet.state()

    ssh_fleet.host.stop_sshd()
    try:
        started = time.monotonic()
        async with await UpdateClient.connect(settings) as client:
            job_id = (await client.submit_update(hosts=["remote", "bed"])).job_id
        summary = await run_job(settings, job_id)
        took = time.monotonic() - started
    finally:
        ssh_fleet.host.start_sshd()
    print(f"\nremote down, bed updated: the job ended in {took:.1f} s")
    print(json.dumps({k: summary[k] for k in ("status", "error", "stats")}, indent=1))

    # Ansible's recap counts the host unreachable; the error is its connection error, in
    # the step it could not start; the per-host results say which host.
    assert summary["status"] == "failed"
    assert summary["stats"]["unreachable"] == 1
    assert summary["error"]["step"] == "preflight"
    port = ssh_fleet.host.port
    assert f"port {port}: Connection refused" in summary["error"]["message"]
    assert summary["hosts"]["remote"]["status"] == "failed", summary["hosts"]
    assert f"port {port}: Connection refused" in summary["hosts"]["remote"]["error"]["message"]
    assert summary["hosts"]["bed"]["status"] == "successful", summary["hosts"]
    assert summary["batches"] == [["bed", "remote"]]
    after = ssh_fleet.state()
    # The unreachable host is untouched; the local host is updated as in a plain run.
    assert after["remote"] == before["remote"]
    assert {after["bed"][s][1] for s in ("api", "worker")} == {newest}
    assert healthy(after["bed"]), after["bed"]
    assert ssh_fleet.released(deployment.stack)
    assert ssh_fleet.released(ssh_fleet.remote)


async def test_a_job_for_a_hung_ssh_host_ends_within_the_connection_timeout(
    ssh_fleet: SshFleet,
) -> None:
    """sshd frozen: the kernel accepts the connection, no banner ever comes. The host fails
    after the inventory's connection timeout, not after the job's timeout."""
    settings = ssh_fleet.on_fresh_queue()
    before = ssh_fleet.state()
    with ssh_fleet.host.sshd_hung():
        started = time.monotonic()
        async with await UpdateClient.connect(settings) as client:
            job_id = (await client.submit_update(hosts=["remote"])).job_id
        summary: dict[str, Any] = await run_job(settings, job_id)
        took = time.monotonic() - started
    print(f"\nremote hung: the job ended in {took:.1f} s (timeout {SSH_TIMEOUT} s)")
    print(json.dumps({k: summary[k] for k in ("status", "error", "stats")}, indent=1))

    assert summary["status"] == "failed"
    assert summary["stats"]["unreachable"] == 1
    assert summary["error"]["step"] == "preflight"
    assert "timed out" in summary["error"]["message"], summary["error"]
    # One connection attempt (no retries): the timeout once, plus what any job costs.
    assert SSH_TIMEOUT <= took < SSH_TIMEOUT + JOB_OVERHEAD
    assert ssh_fleet.state() == before
