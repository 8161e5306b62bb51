"""A rollback puts the database back too (issue 23), through the queue: the client an API uses
enqueues a signed job in the bed's Redis, the real worker (`update-executor worker`, as systemd
runs it) takes it and runs the playbook through ansible-runner, on Debian's PostgreSQL 15 and
the Alembic app of testbed/dbimages.py.

One site for the module ({db, api}, v1's schema and two rows); its api carries a post-update
hook that always fails, so an update whose migration succeeds is rolled back after it. The two
tests follow each other, each starting from v1 (the first leaves it there):

- v1 -> v2, hook fails: the summary says rolled back with the database downgraded from v2 to
  v1's revision, the old container's `alembic current` is v1's, v2's column is gone, the rows
  are intact, healthy; `/status`'s error and the notification say the database was put back.
- The worker is SIGKILLed after the migration to v2 (the run cut off): the next worker's
  start-up rollback downgrades the database with the new image, then puts v1 back.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
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
