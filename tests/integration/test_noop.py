"""A no-op update through the queue and the real worker (issue 20): found after the pull by
comparing image IDs, it recreates nothing and runs no migration, unless an earlier update left
its migration pending (the marker next to the lock). A tag that moved to an image already on
the host is still an update. One deployment for the module (`shared_deployment`), each test
publishing its own version; the no-op is the session's `updated_again` (conftest.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from testbed.faults import lock_path
from testbed.images import image_id_of, registry_digest
from tests.integration.conftest import Deployment, Outcome, record_update

NOOP_REASON = "skipped: no container was recreated and no earlier migration is pending"


def steps(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["name"]: step for step in summary["steps"]}


def marker_path(deployment: Deployment) -> Path:
    """The marker of a pending migration: next to the project's lock."""
    lock = lock_path(deployment.stack, deployment.settings.lock_dir, deployment.project)
    return lock.with_name(lock.name.removesuffix(".lock") + ".migration-pending")


def assert_released(deployment: Deployment) -> None:
    lock = lock_path(deployment.stack, deployment.settings.lock_dir, deployment.project)
    assert not lock.exists()
    assert not lock.with_name(lock.name.removesuffix(".lock") + ".rollback.json").exists()


def test_nothing_new_recreates_nothing_and_runs_no_migration(
    updated_once: Outcome, updated_again: Outcome
) -> None:
    # The session's no-op update (conftest.py): the same update again, right after
    # `updated_once`, with migrations (the default); test_update.py reads it too.
    site, outcome = updated_again.deployment, updated_again
    before_log = updated_once.migrations_log  # the log right before this run
    summary = outcome.summary
    assert summary["status"] == "successful", summary["error"]
    assert outcome.after_containers == outcome.before_containers
    assert outcome.after_images == outcome.before_images
    assert not any(service["updated"] for service in summary["services"].values())
    assert summary["services"]["api"]["health"] == "healthy"
    listed = steps(summary)
    assert listed["recreate"]["status"] == "ok"
    assert listed["recreate"]["message"] == "no image changed"
    # No `docker compose exec` of the migration: skipped, saying why, and the log unchanged.
    assert listed["migrations"]["status"] == "skipped"
    assert listed["migrations"]["message"] == NOOP_REASON
    assert summary["migrations"] == {"ran": False, "rc": None, "output_tail": ""}
    assert outcome.migrations_log == before_log
    # Nor of the revision command: the database's revision is read only when a migration will run
    # (one module process less in a no-op; the stand-in's `alembic current` would say it failed).
    assert summary["database"]["mode"] == "off"
    assert summary["database"]["message"] == "nothing new to migrate"
    # The progress stream's last word on the step says the same.
    ended = [e for e in outcome.progress if e["kind"] == "step_ended" and e["name"] == "migrations"]
    assert (ended[-1]["status"], ended[-1]["message"]) == ("skipped", NOOP_REASON)
    assert outcome.progress[-1]["kind"] == "job_ended"
    assert outcome.progress[-1]["status"] == "successful"
    assert_released(site)
    assert not marker_path(site).exists()


async def test_a_tag_moved_to_an_image_already_on_the_host_is_an_update(
    shared_deployment: Deployment,
) -> None:
    site, version = shared_deployment, shared_deployment.next_version()
    ref = f"{site.stack.registry}/{site.app_repo}:latest"
    site.publish(site.app_repo, version)  # in the registry only: the tag points at the old image
    old = image_id_of(site.stack, ref)
    digest = registry_digest(site.stack, site.app_repo, "latest")
    assert digest is not None
    # The new image comes to the host by its digest: the update's pull then downloads no layer,
    # it only moves the tag.
    site.stack.docker("pull", f"{site.stack.registry}/{site.app_repo}@{digest}", logged_in=True)
    new = image_id_of(site.stack, f"{site.stack.registry}/{site.app_repo}@{digest}")
    assert new is not None and new != old and image_id_of(site.stack, ref) == old
    outcome = await record_update(site, {site.app_repo: new}, version, services=["api", "worker"])
    summary = outcome.summary
    assert summary["status"] == "successful", summary["error"]
    assert outcome.after_images["api"] == outcome.after_images["worker"] == new
    assert outcome.after_containers["api"] != outcome.before_containers["api"]
    assert summary["services"]["api"]["updated"] is True
    assert steps(summary)["recreate"]["status"] == "changed"
    assert summary["migrations"]["ran"] is True and summary["migrations"]["rc"] == 0
    assert f"migrated {version}" in outcome.migrations_log
    assert_released(site)
    assert not marker_path(site).exists()


async def test_a_failed_migration_stays_pending_until_a_run_with_nothing_new_runs_it(
    shared_deployment: Deployment,
) -> None:
    site, version = shared_deployment, shared_deployment.next_version()
    new_id = site.publish(site.app_repo, version)
    failing = replace(
        site,
        settings=site.settings.model_copy(
            update=dict(migration_command="false", rollback_on_migration_failure=False)
        ),
    )
    failed = await record_update(
        failing, {site.app_repo: new_id}, version, services=["api", "worker"]
    )
    assert failed.summary["status"] == "failed"
    assert failed.summary["error"]["step"] == "migrations", failed.summary["error"]
    assert failed.summary["rolled_back"] is False  # rollback_on_migration_failure is false
    assert (
        failed.after_images["api"] == failed.after_images["worker"] != failed.before_images["api"]
    )
    assert failed.after_images["api"] == new_id
    assert f"migrated {version}" not in failed.migrations_log
    assert_released(site)
    assert marker_path(site).is_file()

    # Nothing new since, and the migration command works again: the pending migration runs.
    again = await record_update(site, {}, services=["api", "worker"])
    summary = again.summary
    assert summary["status"] == "successful", summary["error"]
    assert again.after_containers == again.before_containers  # nothing recreated
    assert summary["migrations"]["ran"] is True and summary["migrations"]["rc"] == 0
    assert steps(summary)["migrations"]["status"] == "changed"
    assert f"migrated {version}" in again.migrations_log
    assert_released(site)
    assert not marker_path(site).exists()
