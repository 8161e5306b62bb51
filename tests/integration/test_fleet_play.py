"""A fleet from one playbook run (issue 24, the play's side): three inventory hosts, each with its
own compose project, updated in batches by playbooks/update.yml through ansible-runner (the
worker's runner, not the queue: that is the worker's side). The hosts are this machine
(`ansible_connection=local`); web1 and web3 use the bed's dockerd (projects fleet1 and fleet3),
web2 a second private dockerd of its own. The scenarios run in order on one module-scoped site,
each from where the previous one left the hosts."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ansible_runner
import pytest

from testbed import Stack, build_app_image, registry_image_id
from testbed.dockerd import another_dockerd
from tests.integration.test_role import BASE_FILE
from tests.summary_schema import assert_valid_summary
from worker.host.summary import RunOutcome, UpdateStatus, build_summary
from worker.shared.request import UpdateRequest

REPO_ROOT = Path(__file__).resolve().parents[2]
HOSTS = ("web1", "web2", "web3")
REPO = "fleet/app"


@dataclass
class Fleet:
    stack: Stack
    base: Path
    project_dir: Path
    inventory: Path
    daemons: dict[str, str]  # host -> DOCKER_HOST

    def docker(self, host: str, *args: str) -> str:
        env = {**self.stack.env(), "DOCKER_HOST": self.daemons[host]}
        done = subprocess.run(
            ["docker", *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr[-2000:]}"
        return done.stdout

    def compose(self, host: str, *args: str) -> str:
        return self.docker(
            host, "compose", "--project-directory", str(self.project_dir),
            "-f", str(self.project_dir / "base.yml"), "-p", f"fleet{host[-1]}", *args,
        )  # fmt: skip

    def api(self, host: str) -> dict[str, Any]:
        """The api container of the host's project: ID, image ID, health, start time."""
        (container,) = self.compose(host, "ps", "--all", "-q", "api").split()
        state = json.loads(self.docker(host, "inspect", container))[0]
        return {
            "id": state["Id"],
            "image": state["Image"],
            "health": state["State"].get("Health", {}).get("Status"),
            "started": state["State"]["StartedAt"],
        }

    def migrations(self, host: str) -> str:
        return self.compose(
            host, "exec", "-T", "api", "sh", "-c", "cat /data/migrations.log 2>/dev/null || true"
        )

    def run(self, **extravars: Any) -> dict[str, Any]:
        """playbooks/update.yml over the fleet through ansible-runner; the summary the worker
        would build from its events (validated against the schema)."""
        data = Path(tempfile.mkdtemp(prefix="ue-fleet-run-", dir=self.base))
        started = datetime.now(UTC)
        runner = ansible_runner.run(
            private_data_dir=str(data),
            playbook=str(REPO_ROOT / "playbooks" / "update.yml"),
            inventory=str(self.inventory),
            # The fleet group, as the worker passes it (update_hosts defaults to localhost).
            extravars={
                "compose_update_show_summary": False,
                "update_hosts": "update_hosts",
                **extravars,
            },
            envvars={
                **self.stack.env(),
                "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
                "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            },
            quiet=True,
        )
        events = list(runner.events)
        assert events, (data / "artifacts").glob("*/stdout")
        shutil.rmtree(data, ignore_errors=True)
        outcome = RunOutcome(status=UpdateStatus(runner.status), events=events, rc=runner.rc)
        summary = build_summary(
            job_id="fleet",
            request=UpdateRequest(services=("api", "worker")),
            outcome=outcome,
            started_at=started,
            finished_at=datetime.now(UTC),
        )
        return assert_valid_summary(summary.as_dict())


@pytest.fixture(scope="module")
def fleet(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    base = tmp_path_factory.mktemp("fleet")
    build_app_image(stack, REPO, "1")
    app = f"{stack.registry}/{REPO}:latest"
    project_dir = base / "app"
    project_dir.mkdir()
    (project_dir / "base.yml").write_text(BASE_FILE.replace("@APP@", app))
    token = base / "registry-token"
    token.write_text(stack.registry_password)
    token.chmod(0o600)
    (base / "work").mkdir()
    with another_dockerd("ue-fp-") as other:
        inventory = base / "inventory"
        (inventory / "group_vars").mkdir(parents=True)
        (inventory / "host_vars").mkdir()
        (inventory / "hosts").write_text("[update_hosts]\n" + "\n".join(HOSTS) + "\n")
        group_vars = {
            "ansible_connection": "local",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "compose_update_project_src": str(project_dir),
            "compose_update_compose_files": ["base.yml"],
            "compose_update_registry_url": stack.registry,
            "compose_update_registry_username": stack.registry_username,
            "compose_update_registry_token_file": str(token),
            "compose_update_migration_command": "/app/migrate",
            "compose_update_health_timeout": 30,
            "compose_update_lock_dir": str(base / "locks"),
            "compose_update_work_dir": str(base / "work"),
        }
        (inventory / "group_vars" / "update_hosts.yml").write_text(json.dumps(group_vars))
        daemons = {"web1": stack.docker_host, "web2": other, "web3": stack.docker_host}
        for host, address in daemons.items():
            (inventory / "host_vars" / f"{host}.yml").write_text(
                json.dumps(
                    {
                        "compose_update_docker_host": address,
                        "compose_update_project_name": f"fleet{host[-1]}",
                    }
                )
            )
        made = Fleet(stack, base, project_dir, inventory, daemons)
        made.docker("web2", "--config", str(stack.docker_config), "pull", app)
        for host in HOSTS:
            made.compose(host, "up", "--detach", "--wait")
        try:
            yield made
        finally:
            for host in HOSTS:
                with contextlib.suppress(AssertionError):
                    made.compose(host, "down", "--volumes", "--timeout", "1")


def test_migrations_once_needs_the_first_host_alone_in_its_batch(fleet: Fleet) -> None:
    before = {host: fleet.api(host)["id"] for host in HOSTS}
    summary = fleet.run(compose_update_migrations_once=True)  # a plain run: every host in one batch
    assert summary["status"] == "failed"
    assert summary["batches"] == [list(HOSTS)]
    for host in HOSTS:
        assert summary["hosts"][host]["status"] == "failed"
        assert summary["hosts"][host]["error"]["step"] == "preflight"
        assert "must be alone in the first batch" in summary["hosts"][host]["error"]["message"]
    assert {host: fleet.api(host)["id"] for host in HOSTS} == before  # nothing changed


def test_the_canary_first_then_the_others_migrated_once(fleet: Fleet) -> None:
    build_app_image(fleet.stack, REPO, "2", registry_only=True)
    new = registry_image_id(fleet.stack, REPO)
    summary = fleet.run(
        update_serial=[1, 2], update_batch_pause=2, compose_update_migrations_once=True
    )
    assert summary["status"] == "successful", summary["hosts"]
    assert summary["batches"] == [["web1"], ["web2", "web3"]]
    apis = {host: fleet.api(host) for host in HOSTS}
    for host in HOSTS:
        entry = summary["hosts"][host]
        assert entry["status"] == "successful"
        assert entry["services"]["api"]["updated"] is True
        assert apis[host]["image"] == new and apis[host]["health"] == "healthy"
    # The canary was recreated alone first, the others after it and the pause.
    canary = datetime.fromisoformat(apis["web1"]["started"])
    for host in ("web2", "web3"):
        assert (datetime.fromisoformat(apis[host]["started"]) - canary).total_seconds() >= 2
    # Migrations once: on the first host only (the others share its database).
    assert "migrated 2" in fleet.migrations("web1")
    assert summary["hosts"]["web1"]["migrations"]["ran"] is True
    for host in ("web2", "web3"):
        assert "migrated 2" not in fleet.migrations(host)
        assert summary["hosts"][host]["migrations"]["ran"] is False


def test_migrations_on_every_host_without_migrations_once(fleet: Fleet) -> None:
    build_app_image(fleet.stack, REPO, "3", registry_only=True)
    summary = fleet.run(update_serial=[1, 2])
    assert summary["status"] == "successful", summary["hosts"]
    for host in HOSTS:
        assert "migrated 3" in fleet.migrations(host)
        assert summary["hosts"][host]["migrations"]["ran"] is True


def test_an_unhealthy_canary_is_rolled_back_and_the_others_are_untouched(fleet: Fleet) -> None:
    before = {host: fleet.api(host) for host in HOSTS}
    build_app_image(fleet.stack, REPO, "4", "unhealthy", registry_only=True)
    summary = fleet.run(update_serial=[1, 2])
    assert summary["status"] == "failed"
    assert summary["batches"] == [["web1"]]
    canary = summary["hosts"]["web1"]
    assert canary["status"] == "failed" and canary["rolled_back"] is True
    assert canary["error"]["step"] == "recreate"
    assert summary["error"]["message"].startswith("web1: ")
    assert fleet.api("web1")["image"] == before["web1"]["image"]
    assert fleet.api("web1")["health"] == "healthy"
    for host in ("web2", "web3"):
        assert summary["hosts"][host]["status"] == "not_started"
        assert fleet.api(host)["id"] == before[host]["id"]  # not recreated


def test_a_failed_second_batch_with_fleet_rollback_leaves_every_host_on_the_old_version(
    fleet: Fleet,
) -> None:
    before = {host: fleet.api(host)["image"] for host in HOSTS}
    build_app_image(fleet.stack, REPO, "5", registry_only=True)
    new = registry_image_id(fleet.stack, REPO)
    web2_vars = fleet.inventory / "host_vars" / "web2.yml"
    saved = web2_vars.read_text()
    # web2's migration fails: it rolls itself back; web1 (batch 1) and web3 (batch 2) succeeded.
    web2_vars.write_text(
        json.dumps({**json.loads(saved), "compose_update_migration_command": "sh -c 'exit 3'"})
    )
    try:
        summary = fleet.run(update_serial=[1, 2], update_fleet_rollback=True)
    finally:
        web2_vars.write_text(saved)
    assert summary["status"] == "failed"
    assert summary["batches"] == [["web1"], ["web2", "web3"]]
    web2 = summary["hosts"]["web2"]
    assert web2["status"] == "failed" and web2["rolled_back"] is True
    assert web2["error"]["step"] == "migrations"
    for host in ("web1", "web3"):
        entry = summary["hosts"][host]
        assert entry["status"] == "successful"
        assert entry["services"]["api"]["after"]["image_id"] == new  # it was updated, then
        assert entry["reverted"] is not None and entry["reverted"]["rolled_back"] is True
    assert {host: fleet.api(host)["image"] for host in HOSTS} == before
    assert all(fleet.api(host)["health"] == "healthy" for host in HOSTS)
    leftovers = [p.name for p in (fleet.base / "locks").glob("*") if p.suffix == ".lock"]
    assert leftovers == []
