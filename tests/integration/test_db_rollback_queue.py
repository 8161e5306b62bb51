"""A rollback puts the database back too (issue 23), through the queue: the client an API uses
enqueues a signed job in the bed's Redis, the real worker (`update-executor worker`, as systemd
runs it) takes it and runs the playbook through ansible-runner, on Debian's PostgreSQL 15 and
the Alembic app of testbed/dbimages.py.

One site for the module ({db, api}, v1's schema and two rows); its api carries a post-update
hook that always fails, so an update whose migration succeeds is rolled back after it. The
tests follow each other in this order, each starting from v1 (each leaves it there):

- v1 -> v2, hook fails: the summary says rolled back with the database downgraded from v2 to
  v1's revision, the old container's `alembic current` is v1's, v2's column is gone, the rows
  are intact, healthy; `/status`'s error and the notification say the database was put back.
- The worker is SIGKILLed after the migration to v2 (the run cut off): the next worker's
  start-up rollback downgrades the database with the new image, then puts v1 back.

The next two share one worker (`restore_worker`, DB_ROLLBACK=downgrade-then-restore with a
pg_dump backup and a pg_restore restore configured; a backup is taken only when a job asks):

- v1 -> v3, whose revision fails half-way (`transaction_per_migration`: its first statement
  is committed, never recorded): downgraded (no backup asked, none needed) and rolled back;
  v3's committed column stays (no downgrade can see it), the test drops it to leave v1.
- v1 -> v4 with a backup: v4's revision has no downgrade(), so the downgrade fails and the
  dump taken before the pull is restored: the rows from before are back, v2's and v4's
  columns gone, and the summary, `/status` and the notification say which writes are lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testbed import Stack
from testbed.containers import containers
from testbed.dbimages import (
    API_SERVICE,
    REVISIONS,
    DbProject,
    add_post_update_hook,
    build_app_image,
    build_db_image,
    publish_version,
    write_db_project,
)
from testbed.images import image_id_of
from testbed.procs import wait_until
from testbed.siteenv import site_environment
from tests.integration.conftest import SESSION_TAG, cli_worker, wait_for_step
from tests.summary_schema import assert_valid_summary
from worker.api.legacy import legacy_status_fields
from worker.host.notify import build_message
from worker.host.recovery import ansible_processes_of
from worker.host.settings import Settings
from worker.shared.client import UpdateClient
from worker.shared.outcome import Outcome, outcome_of

pytestmark = pytest.mark.timeout(900)
ROWS = [["1", "apple"], ["2", "pear"]]
REPO = f"t{SESSION_TAG}/dbqueue"
DOWNGRADED = {
    "mode": "downgrade",
    "revision_before": REVISIONS[1],
    "revision_after": REVISIONS[1],
    "action": "downgraded",
    "message": None,
}
PUT_BACK = f"The database was put back at revision {REVISIONS[1]} (downgraded)."
# The worker of the last two tests: a failed downgrade may restore the pre-update backup.
RESTORE_SETTINGS = {
    "DB_ROLLBACK": "downgrade-then-restore",
    "BACKUP_COMMAND": "pg_dump -U app -Fc app",
    "BACKUP_SERVICE": "db",
    "RESTORE_COMMAND": "pg_restore -U app -d app --clean --if-exists --single-transaction",
}
# What Alembic says when a revision to undo has no downgrade() (v4's).
NO_DOWNGRADE = "has no attribute 'downgrade'"


@dataclass
class QueueSite:
    project: DbProject
    env: dict[str, str]  # the worker's environment, as systemd gives it
    v1: str
    locks: Path

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def api_image(self) -> str:
        return containers(self.project.stack, self.project.project)[API_SERVICE].image_id

    def items(self) -> list[list[str]]:
        return self.project.psql("SELECT id, name FROM items ORDER BY id")

    def rollback_points(self) -> list[Path]:
        return list(self.locks.glob("*.rollback.json"))

    def assert_at_v1(self) -> None:
        """What a user checks: v1's image, revision, schema and rows, healthy, no point left."""
        assert self.api_image() == self.v1
        assert self.project.current_revision() == REVISIONS[1]  # `alembic current` in v1
        assert self.project.columns("items") == ["id", "name"]
        assert self.items() == ROWS
        self.project.wait_health("healthy")
        wait_endpoint(self.project, (200, f"ok {REVISIONS[1]}\n"))
        assert self.rollback_points() == []


def wait_endpoint(project: DbProject, wanted: tuple[int, str], timeout: float = 60.0) -> None:
    """Wait until api's GET /health answers `wanted` (a loaded machine may time a request out)."""
    seen: list[object] = []

    def answered() -> bool:
        try:
            seen.append(project.health_endpoint())
        except OSError as exc:
            seen.append(exc)
        return seen[-1] == wanted

    try:
        wait_until(answered, what=f"/health {wanted}", timeout=timeout, interval=0.3)
    except Exception as exc:
        raise AssertionError(f"{exc}; last answers {seen[-3:]}") from exc


@pytest.fixture(scope="module")
def site(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QueueSite]:
    began = time.monotonic()
    build_db_image(stack)
    build_app_image(stack, 2, repo=REPO)
    base = tmp_path_factory.mktemp("db-queue")
    project = write_db_project(stack, base / "site", f"dbq{SESSION_TAG}", repo=REPO)
    add_post_update_hook(project, "false")  # every update fails after its migration
    project.compose("up", "-d")
    project.migrate()
    project.wait_health("healthy")
    project.psql("INSERT INTO items (name) VALUES ('apple'), ('pear')")
    token_file = base / "registry-token"
    token_file.write_text(stack.registry_password)
    token_file.chmod(0o600)
    secret_file = base / "job-secret"
    secret_file.write_text(secrets.token_hex(32))
    secret_file.chmod(0o600)
    locks = base / "locks"
    env = {
        **os.environ,
        **stack.env(),
        **site_environment(
            stack,
            queue=f"update-executor:test:{project.project}",
            compose_file=project.compose_file,
            project=project.project,
            token_file=token_file,
            job_secret_file=secret_file,
            lock_dir=locks,
            migration_command="alembic upgrade head",
            health_timeout=240,
            job_timeout=600,
            UPDATE_SERVICES=API_SERVICE,
            MIGRATION_SERVICE=API_SERVICE,
            BACKUP_DIR=str(base / "backups"),
        ),
    }
    v1 = image_id_of(stack, project.app_image)
    assert v1 is not None
    print(f"module set-up {time.monotonic() - began:.1f} s")
    yield QueueSite(project, env, v1, locks)
    project.compose("down", "--volumes", "--timeout", "2", check=False)


async def wait_finished(client: UpdateClient, job_id: str, timeout: float) -> dict[str, Any]:
    """The job's status answer once it is finished (its summary checked against the schema)."""
    deadline = time.monotonic() + timeout
    while (answer := await client.status(job_id))["state"] != "finished":
        assert time.monotonic() < deadline, f"job {job_id} never finished: {answer}"
        await asyncio.sleep(0.5)
    assert_valid_summary(answer["summary"])
    return answer


async def test_a_failed_post_update_hook_rolls_back_images_and_database(site: QueueSite) -> None:
    v2 = publish_version(site.project.stack, 2, repo=REPO)
    began = time.monotonic()
    async with await UpdateClient.connect(site.settings) as client:
        with cli_worker(site.env):
            job_id = (await client.submit_update(requested_by="test_db_rollback_queue")).job_id
            answer = await wait_finished(client, job_id, timeout=600)
    print(f"update and rollback through the queue {time.monotonic() - began:.1f} s")
    summary = answer["summary"]

    assert outcome_of(summary) is Outcome.rolled_back, json.dumps(summary, indent=1)
    assert summary["rolled_back"] is True
    assert summary["rollback_error"] is None
    assert summary["error"]["step"] == "post-update"
    assert summary["services"][API_SERVICE]["after"]["image_id"] == v2
    assert summary["migrations"]["rc"] == 0
    assert summary["database"] == DOWNGRADED
    site.assert_at_v1()

    # The UI's /status error and the notification say the database was put back.
    fields = legacy_status_fields(answer)
    assert fields["status"] == "failed"
    assert "The previous version was restored (rolled back)." in fields["error"]
    assert PUT_BACK in fields["error"]
    message = build_message(summary, site.project.project)
    assert message.title.startswith("Update FAILED and rolled back")
    assert f"Database: put back at revision {REVISIONS[1]} (downgraded)" in message.body.split("\n")


async def test_a_worker_killed_after_the_migration_is_downgraded_at_the_next_start(
    site: QueueSite,
) -> None:
    """SIGKILL in the migration step, once `alembic upgrade head` is done (the migration then
    sleeps): the next worker ends the orphaned run and its start-up rollback downgrades the
    database with the new image before v1's comes back."""
    v2 = publish_version(site.project.stack, 2, repo=REPO)
    env = {**site.env, "MIGRATION_COMMAND": "sh -c 'alembic upgrade head && exec sleep 600'"}
    began = time.monotonic()
    async with await UpdateClient.connect(site.settings) as client:
        with cli_worker(env) as first:
            job_id = (await client.submit_update(requested_by="test_db_rollback_queue")).job_id
            await wait_for_step(client, job_id, "migrations", timeout=300)
            wait_until(
                lambda: (
                    site.project.psql("SELECT version_num FROM alembic_version") == [[REVISIONS[2]]]
                ),
                what="the migration to v2",
                timeout=300,
                interval=0.3,
            )
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        assert ansible_processes_of(job_id), "ansible outlives a SIGKILLed worker (own session)"
        assert site.api_image() == v2
        assert len(site.rollback_points()) == 1

        with cli_worker(site.env):  # as systemd's Restart=always would
            answer = await wait_finished(client, job_id, timeout=600)
    print(f"cut-off update and start-up rollback {time.monotonic() - began:.1f} s")
    summary = answer["summary"]

    assert summary["status"] == "failed", json.dumps(summary, indent=1)
    assert "interrupted" in summary["error"]["message"]
    assert f"the database is at {REVISIONS[1]}" in summary["error"]["message"]
    assert summary["rolled_back"] is True
    assert summary["rollback_error"] is None
    assert summary["database"] == DOWNGRADED
    assert ansible_processes_of(job_id) == []
    site.assert_at_v1()
    fields = legacy_status_fields(answer)
    assert PUT_BACK in fields["error"]


@pytest.fixture(scope="module")
def restore_worker(
    site: QueueSite, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[str]]:
    """One `update-executor worker` for the tests below (started after the tests above end
    theirs; its output goes to a file, a pipe nobody reads could fill up across jobs)."""
    log = tmp_path_factory.mktemp("restore-worker") / "worker.log"
    with cli_worker({**site.env, **RESTORE_SETTINGS}, log=log) as process:
        yield process


async def run_update(
    site: QueueSite, worker: subprocess.Popen[str], **fields: Any
) -> dict[str, Any]:
    """Submit an update through the queue, wait for `worker` to finish it; its status answer."""
    assert worker.poll() is None, "the shared worker has exited"
    began = time.monotonic()
    async with await UpdateClient.connect(site.settings) as client:
        enqueued = await client.submit_update(requested_by="test_db_rollback_queue", **fields)
        assert not enqueued.existing
        answer = await wait_finished(client, enqueued.job_id, timeout=600)
    print(f"update {fields} through the queue {time.monotonic() - began:.1f} s")
    return answer


async def test_a_migration_that_fails_half_way_is_downgraded_and_rolled_back(
    site: QueueSite, restore_worker: subprocess.Popen[str]
) -> None:
    v3 = publish_version(site.project.stack, 3, repo=REPO)

    answer = await run_update(site, restore_worker)

    summary = answer["summary"]
    assert outcome_of(summary) is Outcome.rolled_back, json.dumps(summary, indent=1)
    assert summary["rolled_back"] is True
    assert summary["rollback_error"] is None
    assert summary["error"]["step"] == "migrations"
    assert summary["services"][API_SERVICE]["after"]["image_id"] == v3
    assert summary["migrations"]["rc"] != 0
    assert 'column "notes" does not exist' in summary["migrations"]["output_tail"]
    # A downgrade that works is all it takes: no backup was asked for, none is restored.
    assert summary["backup"] is None
    assert summary["database"] == {**DOWNGRADED, "mode": "downgrade-then-restore"}
    assert site.api_image() == site.v1
    assert site.project.current_revision() == REVISIONS[1]
    # v3's first statement was committed and never recorded: no downgrade can see it (v2's
    # column is gone, v3's stays; docs/operations.md says how to write such a revision).
    assert site.project.columns("items") == ["id", "name", "priority"]
    assert site.items() == ROWS
    site.project.wait_health("healthy")
    wait_endpoint(site.project, (200, f"ok {REVISIONS[1]}\n"))
    assert site.rollback_points() == []

    fields = legacy_status_fields(answer)
    assert fields["status"] == "failed"
    assert fields["message"] == "Update failed at migrations."
    assert "The previous version was restored (rolled back)." in fields["error"]
    assert PUT_BACK in fields["error"]
    message = build_message(summary, site.project.project)
    assert message.title.startswith("Update FAILED and rolled back")
    assert f"Database: put back at revision {REVISIONS[1]} (downgraded)" in message.body.split("\n")

    site.project.psql("ALTER TABLE items DROP COLUMN priority")  # v1 again, for the next test
    site.assert_at_v1()


async def test_a_failing_downgrade_restores_the_backup_taken_before_the_update(
    site: QueueSite, restore_worker: subprocess.Popen[str]
) -> None:
    v4 = publish_version(site.project.stack, 4, repo=REPO)

    answer = await run_update(site, restore_worker, create_backup=True)

    summary = answer["summary"]
    assert outcome_of(summary) is Outcome.rolled_back, json.dumps(summary, indent=1)
    assert summary["rolled_back"] is True
    assert summary["rollback_error"] is None
    assert summary["error"]["step"] == "post-update"
    assert summary["services"][API_SERVICE]["after"]["image_id"] == v4
    assert summary["migrations"]["rc"] == 0
    backup = summary["backup"]
    assert backup is not None and backup["ran"] is True and backup["rc"] == 0
    assert backup["path"] and await asyncio.to_thread(Path(backup["path"]).is_file)
    database = summary["database"]
    assert database["mode"] == "downgrade-then-restore"
    assert database["revision_before"] == REVISIONS[1]
    assert database["revision_after"] == REVISIONS[1]
    assert database["action"] == "restored"
    assert f"Restored from the backup {backup['path']}" in database["message"]
    assert NO_DOWNGRADE in database["message"]  # the downgrade was tried first, and failed
    assert "every write to the database after that backup" in database["message"]
    # v4's revision cannot be downgraded: only the dump puts back v1's schema (v2's and v4's
    # columns gone), its revision and the rows from before the update.
    site.assert_at_v1()

    fields = legacy_status_fields(answer)
    assert fields["status"] == "failed"
    assert "The previous version was restored (rolled back)." in fields["error"]
    restored = f"The database was put back at revision {REVISIONS[1]} (restored)."
    assert f"{restored} {database['message']}" in fields["error"]
    message = build_message(summary, site.project.project)
    assert message.title.startswith("Update FAILED and rolled back")
    line = f"Database: put back at revision {REVISIONS[1]} (restored): Restored from the backup"
    assert any(text.startswith(line) for text in message.body.split("\n")), message.body
