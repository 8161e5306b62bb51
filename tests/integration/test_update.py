"""The update path end to end: client → Redis → ARQ worker → ansible-runner → playbook → dockerd
and the registry, and the summary back. The happy path and the rollback are read from the
session's shared runs (`updated_once`, `updated_again`, `rolled_back_once` in conftest.py); the
other tests share one deployment of this module, each publishing a version of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from testbed.faults import operator_run
from tests.integration.conftest import (
    CliOutcome,
    Deployment,
    Outcome,
    record_update,
    update,
)
from tests.summary_schema import assert_valid_summary
from worker.shared.client import UpdateClient

REPO_ROOT = Path(__file__).resolve().parents[2]
UNTOUCHED = ("db", "cache")


def steps(summary: dict[str, Any]) -> dict[str, str]:
    return {step["name"]: step["status"] for step in summary["steps"]}


def test_full_update_recreates_only_the_registry_services(updated_once: Outcome) -> None:
    summary, deployment = updated_once.summary, updated_once.deployment
    before_images, before_containers = updated_once.before_images, updated_once.before_containers
    new_app = updated_once.published[deployment.app_repo]
    new_frontend = updated_once.published[deployment.frontend_repo]

    assert summary["status"] == "successful", summary["error"]
    after_images, after_containers = updated_once.after_images, updated_once.after_containers
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
    assert f"migrated to {updated_once.version}" in summary["migrations"]["output_tail"]
    assert f"migrated {updated_once.version}" in updated_once.migrations_log
    assert summary["request"]["requested_by"] == "admin@example.org"
    assert summary["compose_project"] == deployment.project


def test_nothing_new_recreates_nothing(updated_again: Outcome) -> None:
    summary = updated_again.summary  # the same update again, right after `updated_once`
    assert summary["status"] == "successful", summary["error"]
    assert updated_again.after_containers == updated_again.before_containers
    assert not any(service["updated"] for service in summary["services"].values())
    assert steps(summary)["recreate"] == "ok"
    recreate = next(step for step in summary["steps"] if step["name"] == "recreate")
    assert recreate["message"] == "no image changed"
    assert summary["rolled_back"] is False


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api_only(shared_deployment: Deployment) -> Outcome:
    """A new app version for the api service alone, without migrations, once for the module."""
    deployment, version = shared_deployment, shared_deployment.next_version()
    published = {deployment.app_repo: deployment.publish(deployment.app_repo, version)}
    return await record_update(
        deployment, published, version, run_migrations=False, services=["api"]
    )


def test_without_migrations(api_only: Outcome) -> None:
    summary, deployment = api_only.summary, api_only.deployment
    new_app = api_only.published[deployment.app_repo]
    assert summary["status"] == "successful", summary["error"]
    assert api_only.after_images["api"] == new_app
    assert steps(summary)["migrations"] == "skipped"
    assert summary["migrations"] == {"ran": False, "rc": None, "output_tail": ""}
    assert f"migrated {api_only.version}" not in api_only.migrations_log


def test_a_subset_of_services(api_only: Outcome) -> None:
    summary, deployment = api_only.summary, api_only.deployment
    before, new_app = api_only.before_images, api_only.published[deployment.app_repo]
    assert summary["status"] == "successful", summary["error"]
    after = api_only.after_images
    assert after["api"] == new_app
    assert after["worker"] == before["worker"]  # same image, not chosen: untouched
    assert list(summary["services"]) == ["api"]


async def test_wrong_registry_password_fails_at_login_and_changes_nothing(
    shared_deployment: Deployment, shared_client: UpdateClient, tmp_path: Path
) -> None:
    shared_deployment.publish(shared_deployment.app_repo, shared_deployment.next_version())
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-password")
    # a copy: the other tests of the module keep the right token
    deployment = replace(
        shared_deployment,
        settings=shared_deployment.settings.model_copy(update=dict(registry_token_file=wrong)),
    )
    before_images, before_containers = deployment.image_ids(), deployment.container_ids()

    summary = await update(shared_client, deployment)

    assert summary["status"] == "failed"
    assert summary["error"]["step"] == "login"
    assert steps(summary)["pull"] == "skipped"
    assert deployment.container_ids() == before_containers
    assert deployment.image_ids() == before_images
    assert "not-the-password" not in json.dumps(summary)


async def test_unknown_service_is_rejected_before_anything_runs(
    shared_deployment: Deployment, shared_client: UpdateClient
) -> None:
    deployment = shared_deployment
    before = deployment.container_ids()
    summary = await update(shared_client, deployment, services=["api", "db"])
    assert summary["status"] == "failed"
    assert summary["error"]["step"] == "validation"
    assert "db" in summary["error"]["message"]
    assert summary["steps"] == []  # the playbook never ran
    assert deployment.container_ids() == before


async def test_dry_run_changes_nothing(
    shared_deployment: Deployment, shared_client: UpdateClient
) -> None:
    deployment = shared_deployment
    before_images, before_containers = deployment.image_ids(), deployment.container_ids()
    ref = f"{deployment.stack.registry}/{deployment.app_repo}:latest"
    local_before = deployment.stack.docker("image", "inspect", "-f", "{{.Id}}", ref).stdout
    deployment.publish(deployment.app_repo, deployment.next_version())

    summary = await update(shared_client, deployment, dry_run=True)

    assert summary["status"] == "successful", summary["error"]
    assert summary["request"]["dry_run"] is True
    assert deployment.container_ids() == before_containers
    assert deployment.image_ids() == before_images
    # not even pulled: the local tag still names the old image
    assert deployment.stack.docker("image", "inspect", "-f", "{{.Id}}", ref).stdout == local_before
    assert steps(summary)["migrations"] == "skipped"


def test_the_playbook_runs_by_hand_with_ansible_playbook(shared_deployment: Deployment) -> None:
    deployment, version = shared_deployment, shared_deployment.next_version()
    new_app = deployment.publish(deployment.app_repo, version)
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
    assert f"migrated {version}" in deployment.migrations_log()
    assert deployment.stack.registry_password not in result.stdout + result.stderr


def test_a_real_worker_process_and_the_cli(cli_updated_once: CliOutcome) -> None:
    done = cli_updated_once  # `enqueue --wait` served by `update-executor worker` (conftest.py)
    deployment, worker_output = done.deployment, done.worker_output
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr + worker_output
    summary = assert_valid_summary(json.loads(done.stdout))
    assert summary["status"] == "successful"
    assert done.after_images["api"] == done.new_app
    # one log line per step, and none shows the registry password
    for step in ("preflight", "login", "pull", "recreate", "migrations"):
        assert f"step {step}" in worker_output
    assert deployment.stack.registry_password not in worker_output

    assert done.status_returncode == 0
    assert json.loads(done.status_stdout)["summary"]["status"] == "successful"


def test_an_unhealthy_new_version_is_rolled_back_through_the_worker(
    rolled_back_once: Outcome,
) -> None:
    summary, before_images = rolled_back_once.summary, rolled_back_once.before_images

    assert summary["status"] == "failed"
    assert summary["error"]["step"] == "recreate"
    assert summary["rolled_back"] is True
    assert summary["rollback_error"] is None
    after = rolled_back_once.after_images
    assert after["api"] == before_images["api"]
    assert after["worker"] == before_images["worker"]
    assert summary["rollback"]["api"]["image_id"] == before_images["api"]
    assert summary["rollback"]["api"]["health"] == "healthy"
    assert steps(summary)["rollback"] == "changed"
    assert steps(summary)["migrations"] == "skipped"


async def test_an_unreachable_docker_daemon_fails_at_preflight(
    shared_deployment: Deployment,
    shared_client: UpdateClient,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    deployment = shared_deployment
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    summary = await update(shared_client, deployment)
    assert summary["status"] == "failed"
    assert summary["error"]["step"] == "preflight"
    assert "connect" in summary["error"]["message"].lower()  # says it cannot reach dockerd
    monkeypatch.undo()
    assert deployment.container_ids()  # the deployment itself is untouched and still there
