"""The update path end to end: client → Redis → ARQ worker → ansible-runner → playbook → dockerd
and the registry, and the summary back. Each test starts from a fresh deployment at version 1."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from testbed.faults import operator_run
from tests.integration.conftest import Deployment, update
from tests.summary_schema import assert_valid_summary
from worker.shared.client import UpdateClient

REPO_ROOT = Path(__file__).resolve().parents[2]
UNTOUCHED = ("db", "cache")


def steps(summary: dict[str, Any]) -> dict[str, str]:
    return {step["name"]: step["status"] for step in summary["steps"]}


async def test_full_update_recreates_only_the_registry_services(
    deployment: Deployment, client: UpdateClient
) -> None:
    before_images, before_containers = deployment.image_ids(), deployment.container_ids()
    new_app = deployment.publish(deployment.app_repo, "2")
    new_frontend = deployment.publish(deployment.frontend_repo, "2")

    summary = await update(client, deployment, requested_by="admin@example.org")

    assert summary["status"] == "successful", summary["error"]
    after_images, after_containers = deployment.image_ids(), deployment.container_ids()
    assert after_images["api"] == after_images["worker"] == new_app
    assert after_images["frontend"] == new_frontend
    for name in UNTOUCHED:  # the database and the queue's Redis are never recreated
        assert after_containers[name] == before_containers[name]
    assert set(summary["request"]["services"]) >= {"api", "worker", "frontend"}
    assert not set(summary["request"]["services"]) & set(UNTOUCHED)
    for name in ("api", "worker", "frontend"):
        service = summary["services"][name]
        assert service["updated"] is True
        assert service["before"]["image_id"] == before_images[name]
        assert service["after"]["image_id"] == after_images[name]
        assert service["after"]["digest"] and service["after"]["digest"].startswith("sha256:")
        assert service["after"]["digest"] != service["before"]["digest"]
    assert summary["services"]["api"]["health"] == "healthy"
    assert summary["services"]["worker"]["health"] == "running"
    assert steps(summary) == {
        "preflight": "ok",
        "lock": "changed",  # took the project's update lock
        "login": "changed",
        "snapshot": "ok",  # writing the rollback point is not a change
        "backup": "skipped",
        "pull": "changed",
        "recreate": "changed",
        "migrations": "changed",
        "rollback": "skipped",
        "report": "changed",  # it removed the run's private DOCKER_CONFIG
    }
    assert summary["migrations"]["ran"] is True
    assert summary["migrations"]["rc"] == 0
    assert "migrated to 2" in summary["migrations"]["output_tail"]
    assert "migrated 2" in deployment.migrations_log()
    assert summary["request"]["requested_by"] == "admin@example.org"
    assert summary["compose_project"] == deployment.project


async def test_nothing_new_recreates_nothing(deployment: Deployment, client: UpdateClient) -> None:
    before = deployment.container_ids()
    summary = await update(client, deployment, run_migrations=False)
    assert summary["status"] == "successful", summary["error"]
    assert deployment.container_ids() == before
    assert not any(service["updated"] for service in summary["services"].values())
    assert steps(summary)["recreate"] == "ok"
    recreate = next(step for step in summary["steps"] if step["name"] == "recreate")
    assert recreate["message"] == "no image changed"
    assert summary["rolled_back"] is False


async def test_without_migrations(deployment: Deployment, client: UpdateClient) -> None:
    new_app = deployment.publish(deployment.app_repo, "2")
    summary = await update(client, deployment, run_migrations=False, services=["api"])
    assert summary["status"] == "successful", summary["error"]
    assert deployment.image_ids()["api"] == new_app
    assert steps(summary)["migrations"] == "skipped"
    assert summary["migrations"] == {"ran": False, "rc": None, "output_tail": ""}
    assert "migrated 2" not in deployment.migrations_log()


async def test_a_subset_of_services(deployment: Deployment, client: UpdateClient) -> None:
    before = deployment.image_ids()
    new_app = deployment.publish(deployment.app_repo, "2")
    summary = await update(client, deployment, services=["api"])
    assert summary["status"] == "successful", summary["error"]
    after = deployment.image_ids()
    assert after["api"] == new_app
    assert after["worker"] == before["worker"]  # same image, not chosen: untouched
    assert list(summary["services"]) == ["api"]


async def test_wrong_registry_password_fails_at_login_and_changes_nothing(
    deployment: Deployment, client: UpdateClient, tmp_path: Path
) -> None:
    deployment.publish(deployment.app_repo, "2")
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-password")
    deployment.settings = replace(deployment.settings, registry_token_file=wrong)
    before_images, before_containers = deployment.image_ids(), deployment.container_ids()

    summary = await update(client, deployment)

    assert summary["status"] == "failed"
    assert summary["error"]["step"] == "login"
    assert steps(summary)["pull"] == "skipped"
    assert deployment.container_ids() == before_containers
    assert deployment.image_ids() == before_images
    assert "not-the-password" not in json.dumps(summary)


async def test_unknown_service_is_rejected_before_anything_runs(
    deployment: Deployment, client: UpdateClient
) -> None:
    before = deployment.container_ids()
    summary = await update(client, deployment, services=["api", "db"])
    assert summary["status"] == "failed"
    assert summary["error"]["step"] == "validation"
    assert "db" in summary["error"]["message"]
    assert summary["steps"] == []  # the playbook never ran
    assert deployment.container_ids() == before


async def test_dry_run_changes_nothing(deployment: Deployment, client: UpdateClient) -> None:
    before_images, before_containers = deployment.image_ids(), deployment.container_ids()
    ref = f"{deployment.stack.registry}/{deployment.app_repo}:latest"
    local_before = deployment.stack.docker("image", "inspect", "-f", "{{.Id}}", ref).stdout
    deployment.publish(deployment.app_repo, "2")

    summary = await update(client, deployment, dry_run=True)

    assert summary["status"] == "successful", summary["error"]
    assert summary["request"]["dry_run"] is True
    assert deployment.container_ids() == before_containers
    assert deployment.image_ids() == before_images
    # not even pulled: the local tag still names the old image
    assert deployment.stack.docker("image", "inspect", "-f", "{{.Id}}", ref).stdout == local_before
    assert steps(summary)["migrations"] == "skipped"


def test_the_playbook_runs_by_hand_with_ansible_playbook(deployment: Deployment) -> None:
    new_app = deployment.publish(deployment.app_repo, "2")
    inventory, env = operator_run(deployment.worker_env())
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(inventory),
            "playbooks/update.yml",
            "-e",
            "compose_update_services=api,worker",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    after = deployment.image_ids()
    assert after["api"] == after["worker"] == new_app
    assert "migrated 2" in deployment.migrations_log()
    assert deployment.stack.registry_password not in result.stdout + result.stderr


def test_a_real_worker_process_and_the_cli(deployment: Deployment) -> None:
    new_app = deployment.publish(deployment.app_repo, "2")
    env = deployment.worker_env()
    cli = str(Path(sys.executable).parent / "update-executor")
    worker = subprocess.Popen(
        [cli, "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        enqueue = subprocess.run(
            [cli, "enqueue", "--services", "api,worker", "--wait", "--timeout", "200"],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    finally:
        worker.terminate()
        worker_output = worker.communicate(timeout=30)[0]
    assert enqueue.returncode == 0, enqueue.stdout[-3000:] + enqueue.stderr + worker_output
    summary = assert_valid_summary(json.loads(enqueue.stdout))
    assert summary["status"] == "successful"
    assert deployment.image_ids()["api"] == new_app
    # one log line per step, and none shows the registry password
    for step in ("preflight", "login", "pull", "recreate", "migrations"):
        assert f"step {step}" in worker_output
    assert deployment.stack.registry_password not in worker_output

    status = subprocess.run(
        [cli, "status", summary["job_id"]], env=env, capture_output=True, text=True, check=False
    )
    assert status.returncode == 0
    assert json.loads(status.stdout)["summary"]["status"] == "successful"


async def test_an_unhealthy_new_version_is_rolled_back_through_the_worker(
    deployment: Deployment, client: UpdateClient
) -> None:
    before_images = deployment.image_ids()
    deployment.publish(deployment.app_repo, "2", behaviour="unhealthy")

    summary = await update(client, deployment, services=["api", "worker"])

    assert summary["status"] == "failed"
    assert summary["error"]["step"] == "recreate"
    assert summary["rolled_back"] is True
    assert summary["rollback_error"] is None
    after = deployment.image_ids()
    assert after["api"] == before_images["api"]
    assert after["worker"] == before_images["worker"]
    assert summary["rollback"]["api"]["image_id"] == before_images["api"]
    assert summary["rollback"]["api"]["health"] == "healthy"
    assert steps(summary)["rollback"] == "changed"
    assert steps(summary)["migrations"] == "skipped"


async def test_an_unreachable_docker_daemon_fails_at_preflight(
    deployment: Deployment, client: UpdateClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    summary = await update(client, deployment)
    assert summary["status"] == "failed"
    assert summary["error"]["step"] == "preflight"
    assert "connect" in summary["error"]["message"].lower()  # says it cannot reach dockerd
    monkeypatch.undo()
    assert deployment.container_ids()  # the deployment itself is untouched and still there
