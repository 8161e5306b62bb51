"""The operator's recovery commands on the host (issue 25), run as installed
(`update-executor …` as a subprocess with the worker's environment, as root on the lock
directory): `unlock` removes a stale update lock and only that, showing its holder;
`revert` puts back, through the queue and the worker, the images from before the last update
that succeeded, once.

One deployment for the module (`shared_deployment`); each test leaves no lock behind.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from testbed import image_id_of
from testbed.faults import dead_pid, lock_path
from tests.integration.conftest import CLI, Deployment, run_worker_burst, worker_process
from tests.summary_schema import assert_valid_summary
from worker.host.unlock import lock_module
from worker.shared.client import UpdateClient


def run_cli(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args],
        env=deployment.worker_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write_role_lock(path: Path, pid: int, job_id: str, requested_by: str) -> dict[str, Any]:
    """The lock file as the role's update_lock writes it for a run whose controller is `pid`
    (its own make_holder and atomic write_new)."""
    module = lock_module()
    holder: dict[str, Any] = module.make_holder(
        path.name.split(".")[0], job_id, requested_by, pid, time.time()
    )
    assert module.write_new(str(path), holder)
    return holder


@pytest.fixture
def lock(shared_deployment: Deployment) -> Iterator[Path]:
    path = lock_path(
        shared_deployment.stack, shared_deployment.settings.lock_dir, shared_deployment.project
    )
    assert not path.exists()
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture
def holder_process() -> Iterator[subprocess.Popen[bytes]]:
    """A live process standing for the ansible-playbook that holds the lock."""
    process = subprocess.Popen(["sleep", "600"])
    yield process
    process.kill()
    process.wait()


def test_unlock_without_a_lock_says_so(shared_deployment: Deployment) -> None:
    done = run_cli(shared_deployment, "unlock")

    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer == {
        "lock_dir": str(shared_deployment.settings.lock_dir),
        "locks": [],
        "rollback_points": [],
    }


def test_unlock_removes_a_stale_lock_and_shows_its_holder(
    shared_deployment: Deployment, lock: Path
) -> None:
    pid = dead_pid()  # the run was killed: its process is gone
    holder = write_role_lock(lock, pid, "job-killed", "admin@example.org")

    done = run_cli(shared_deployment, "unlock")

    assert done.returncode == 0, done.stdout + done.stderr
    (state,) = json.loads(done.stdout)["locks"]
    assert state["verdict"] == "removed"
    assert state["stale_reason"] == f"pid {pid} is not running on {holder['host']}"
    assert state["holder"] == {
        "id": "update-executor job job-killed for admin@example.org",
        "job_id": "job-killed",
        "requested_by": "admin@example.org",
        "user": "root",
        "host": holder["host"],
        "pid": pid,
        "started_at": holder["started_at"],
        "project": shared_deployment.project,
    }
    assert holder["token"] not in done.stdout + done.stderr
    assert not lock.exists()


async def update_through_the_queue(deployment: Deployment, **request: Any) -> dict[str, Any]:
    """Queue an update, run the real worker until the queue is empty; the job's summary."""
    async with await UpdateClient.connect(deployment.settings) as client:
        job_id = (await client.submit_update(**request)).job_id
        await run_worker_burst(deployment.settings)
        summary: dict[str, Any] = (await client.status(job_id))["summary"]
    return summary


def test_a_live_lock_is_refused_by_unlock_and_the_update_names_unlock(
    shared_deployment: Deployment, lock: Path, holder_process: subprocess.Popen[bytes]
) -> None:
    """A live holder: the update is refused at the lock step with a message naming `unlock`;
    `unlock` shows the holder and refuses (exit 1); once the holder is gone it removes it."""
    deployment = shared_deployment.with_fresh_queue()
    before = deployment.image_ids()
    write_role_lock(lock, holder_process.pid, "job-live", "oncall")
    written = lock.read_text()
    summary = asyncio.run(update_through_the_queue(deployment, services=["api"]))
    assert summary["status"] == "failed"
    assert summary["error"]["step"] == "lock"
    assert "update-executor job job-live for oncall" in summary["error"]["message"]
    assert "`update-executor unlock`" in summary["error"]["message"]

    refused = run_cli(deployment, "unlock")

    assert refused.returncode == 1
    (state,) = json.loads(refused.stdout)["locks"]
    assert (state["verdict"], state["holder"]["pid"]) == ("live", holder_process.pid)
    assert "may still be running" in refused.stderr
    assert lock.read_text() == written
    assert deployment.image_ids() == before

    holder_process.kill()
    holder_process.wait()
    removed = run_cli(deployment, "unlock")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["locks"][0]["verdict"] == "removed"
    assert not lock.exists()


def test_revert_puts_back_the_images_from_before_the_last_update_once(
    shared_deployment: Deployment,
) -> None:
    """v1 -> v2 through the queue succeeds; `update-executor revert --wait` runs v1's images
    again without pulling (the `:latest` reference points at v1 again), with a summary and a
    history record of its own; a second revert without a new update is refused."""
    deployment = shared_deployment.with_fresh_queue()
    v1 = deployment.image_ids()
    v2 = deployment.publish(deployment.app_repo, deployment.next_version())
    updated = asyncio.run(update_through_the_queue(deployment, services=["api", "worker"]))
    assert updated["status"] == "successful", updated["error"]
    assert deployment.image_ids() == {**v1, "api": v2, "worker": v2}
    last = lock_path(deployment.stack, deployment.settings.lock_dir, deployment.project)
    record = last.with_name(last.name.removesuffix(".lock") + ".last.json")
    assert json.loads(record.read_text())["job_id"] == updated["job_id"]
    kept = f"update-executor-last/{deployment.project}"

    with worker_process(deployment):
        reverted = run_cli(
            deployment, "revert", "--wait", "--timeout", "200", "--requested-by", "oncall"
        )
        again = run_cli(deployment, "revert", "--wait", "--timeout", "200")

    assert reverted.returncode == 0, reverted.stdout[-3000:] + reverted.stderr[-3000:]
    summary = assert_valid_summary(json.loads(reverted.stdout))
    assert deployment.image_ids() == v1
    latest = f"{deployment.stack.registry}/{deployment.app_repo}:latest"
    assert image_id_of(deployment.stack, latest) == v1["api"]  # no pull brings v2 back
    assert summary["status"] == "successful"
    assert summary["request"]["revert"] is True
    assert summary["request"]["requested_by"] == "oncall"
    assert {name: s["after"]["image_id"] for name, s in summary["services"].items()} == {
        "api": v1["api"],
        "worker": v1["worker"],
    }
    assert all(s["updated"] for s in summary["services"].values())
    step = next(s for s in summary["steps"] if s["name"] == "rollback")
    assert step["message"] == (
        f"reverted to the images from before job {updated['job_id']}: api, worker"
    )
    assert not record.exists()
    assert deployment.stack.docker("image", "ls", "-q", kept).stdout.strip() == ""
    history = run_cli(deployment, "history", "--json")
    kinds = {r["job_id"]: r["kind"] for r in json.loads(history.stdout)}
    assert kinds[summary["job_id"]] == "revert"
    assert kinds[updated["job_id"]] == "update"

    assert again.returncode == 1, again.stdout[-3000:] + again.stderr[-3000:]
    refused = assert_valid_summary(json.loads(again.stdout))
    assert refused["status"] == "failed"
    assert refused["error"]["step"] == "preflight"
    assert refused["error"]["message"].startswith(
        f"Nothing to revert for project '{deployment.project}': no update has succeeded since "
        "the last revert"
    )
    assert deployment.image_ids() == v1


def test_a_failed_update_left_running_drops_the_revert_record(
    shared_deployment: Deployment,
) -> None:
    """After an update that succeeded, a failed one that leaves its new images running
    (ROLLBACK_ON_MIGRATION_FAILURE=false) makes the record describe a past state: it goes, and
    a revert is refused instead of jumping back two versions. (Last: it leaves that version.)"""
    deployment = shared_deployment.with_fresh_queue()
    deployment.publish(deployment.app_repo, deployment.next_version())
    good = asyncio.run(update_through_the_queue(deployment, services=["api", "worker"]))
    assert good["status"] == "successful", good["error"]
    last = lock_path(deployment.stack, deployment.settings.lock_dir, deployment.project)
    record = last.with_name(last.name.removesuffix(".lock") + ".last.json")
    assert record.exists()
    bad = deployment.publish(deployment.app_repo, deployment.next_version(), "migrate_fail")
    stays = replace(
        deployment,
        settings=deployment.settings.model_copy(update=dict(rollback_on_migration_failure=False)),
    )

    failed = asyncio.run(update_through_the_queue(stays, services=["api", "worker"]))

    assert (failed["status"], failed["error"]["step"]) == ("failed", "migrations")
    assert failed["rolled_back"] is False
    assert deployment.image_ids()["api"] == bad
    assert not record.exists()
    refused = asyncio.run(update_through_the_queue(deployment, run_migrations=False, revert=True))
    assert refused["error"]["step"] == "preflight"
    assert "Nothing to revert" in refused["error"]["message"]
    assert deployment.image_ids()["api"] == bad
